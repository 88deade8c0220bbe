-- The unsharded global schema. `{schema}` is replaced by <prefix>_global.
-- Applied by `shardctl init`; every statement is idempotent.
CREATE DATABASE IF NOT EXISTS `{schema}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;

-- Facts fixed at creation: shard count and schema prefix.
CREATE TABLE IF NOT EXISTS `{schema}`.cluster_meta (
    name VARCHAR(64) NOT NULL PRIMARY KEY,
    value VARCHAR(255) NOT NULL
) ENGINE=InnoDB;

-- Hosts that may hold shards; `ord` keeps the order shardctl wrote them in.
CREATE TABLE IF NOT EXISTS `{schema}`.hosts (
    name VARCHAR(64) NOT NULL PRIMARY KEY,
    ord INT UNSIGNED NOT NULL,
    addr VARCHAR(255) NOT NULL,
    port SMALLINT UNSIGNED NOT NULL,
    weight INT UNSIGNED NOT NULL DEFAULT 1
) ENGINE=InnoDB;

-- The servers of each host: a host is a replication group of one primary
-- and its replicas. hosts.addr/port always names the group's primary; a
-- failover or switchover changes both tables and map_version in one
-- transaction (catalog_promote). fenced: an old primary that lost its role,
-- kept read-only until it rejoins as a replica; rebuild: one that holds
-- transactions the new primary never got, to be rebuilt from a backup.
-- note: why the row is as it is (for `shardctl status`).
CREATE TABLE IF NOT EXISTS `{schema}`.servers (
    name VARCHAR(64) NOT NULL PRIMARY KEY,
    host VARCHAR(64) NOT NULL,
    addr VARCHAR(255) NOT NULL,
    port SMALLINT UNSIGNED NOT NULL,
    role ENUM('primary','replica','fenced','rebuild') NOT NULL,
    note VARCHAR(255) NOT NULL DEFAULT '',
    updated_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
        ON UPDATE CURRENT_TIMESTAMP(3),
    KEY host (host)
) ENGINE=InnoDB;

-- The authoritative shard map: one row per logical shard.
-- state: 0 active, 1 moving, 2 fenced (cut-over in progress).
CREATE TABLE IF NOT EXISTS `{schema}`.shard_map (
    shard INT UNSIGNED NOT NULL PRIMARY KEY,
    host VARCHAR(64) NOT NULL,
    state TINYINT UNSIGNED NOT NULL DEFAULT 0,
    version BIGINT UNSIGNED NOT NULL
) ENGINE=InnoDB;

-- The map's version: bumped in the same transaction as any shard_map change.
CREATE TABLE IF NOT EXISTS `{schema}`.map_version (
    id TINYINT UNSIGNED NOT NULL PRIMARY KEY,
    version BIGINT UNSIGNED NOT NULL
) ENGINE=InnoDB;

-- ---- the game's unsharded data ------------------------------------------

CREATE TABLE IF NOT EXISTS `{schema}`.companies (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name VARCHAR(100) NOT NULL,
    slug VARCHAR(64) NOT NULL,
    color_primary CHAR(7) NOT NULL DEFAULT '#1d4ed8',
    color_secondary CHAR(7) NOT NULL DEFAULT '#f59e0b',
    join_code CHAR(10) NOT NULL,
    platform TINYINT NOT NULL DEFAULT 0,
    created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    UNIQUE KEY slug (slug)
) ENGINE=InnoDB;

-- A team's name compares without case or accents, under UCA 5.2.0: the
-- schema's utf8mb4_unicode_ci (UCA 4.0.0) gives every character beyond the
-- Basic Multilingual Plane one weight, so "🦁 Lions" and "🐯 Lions" were
-- one name.
CREATE TABLE IF NOT EXISTS `{schema}`.teams (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    company_id BIGINT NOT NULL,
    name VARCHAR(100) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_520_ci NOT NULL,
    created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    KEY company (company_id, id),
    UNIQUE KEY company_name (company_id, name)
) ENGINE=InnoDB;
-- A cluster made before gets that collation (its key dropped first, and
-- made again below); one that has it is not touched.
BEGIN NOT ATOMIC
    IF EXISTS (SELECT 1 FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = '{schema}'
               AND TABLE_NAME = 'teams' AND COLUMN_NAME = 'name'
               AND COLLATION_NAME <> 'utf8mb4_unicode_520_ci') THEN
        ALTER TABLE `{schema}`.teams DROP KEY IF EXISTS company_name,
            MODIFY name VARCHAR(100) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_520_ci
                NOT NULL;
    END IF;
END;
-- A team's name is its company's only once (409 team_name_taken), compared
-- as the column's collation compares (case and accents aside). A cluster
-- made before that keeps the first team of each name as it is and has the
-- others renamed "<name> #<id>" (their ids and members stay), then gets the
-- key: both no-ops after that.
UPDATE `{schema}`.teams t
    JOIN (SELECT company_id, name, MIN(id) AS first FROM `{schema}`.teams
          GROUP BY company_id, name HAVING COUNT(*) > 1) d
      ON t.company_id = d.company_id AND t.name = d.name AND t.id <> d.first
    SET t.name = CONCAT(LEFT(t.name, 78), ' #', t.id);
ALTER TABLE `{schema}`.teams ADD UNIQUE KEY IF NOT EXISTS company_name (company_id, name);

CREATE TABLE IF NOT EXISTS `{schema}`.logos (
    company_id BIGINT NOT NULL PRIMARY KEY,
    content_type VARCHAR(32) NOT NULL,
    etag CHAR(16) NOT NULL,
    data MEDIUMBLOB NOT NULL
) ENGINE=InnoDB;

-- Odds are integer hundredths; odds_version grows by one per change.
CREATE TABLE IF NOT EXISTS `{schema}`.matches (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    home VARCHAR(64) NOT NULL,
    away VARCHAR(64) NOT NULL,
    stage VARCHAR(64) NOT NULL,
    kickoff DATETIME(3) NOT NULL,
    status ENUM('scheduled','finished','cancelled') NOT NULL DEFAULT 'scheduled',
    odds_home INT UNSIGNED NOT NULL,
    odds_draw INT UNSIGNED NOT NULL,
    odds_away INT UNSIGNED NOT NULL,
    odds_version INT UNSIGNED NOT NULL DEFAULT 1,
    home_goals TINYINT UNSIGNED NULL,
    away_goals TINYINT UNSIGNED NULL,
    KEY kickoff (kickoff, id),
    KEY status_kickoff (status, kickoff, id)
) ENGINE=InnoDB;

-- One settlement job per posted result. Any API server may run it, one at a
-- time: it claims the job when lease_until is NULL or past (one conditional
-- UPDATE), renews the lease while it works, and a server that dies stops
-- renewing, so another one takes the job over (api/api_settle_job.c). The
-- counts are progress for people; the shards' bets and settled_matches rows
-- are the truth, recounted when a job is claimed and when it finishes.
-- lease_owner: "<server name>/<nonce of its process start>", the last holder.
CREATE TABLE IF NOT EXISTS `{schema}`.settlements (
    match_id BIGINT NOT NULL PRIMARY KEY,
    result ENUM('home','draw','away','cancelled') NOT NULL,
    state ENUM('running','done') NOT NULL DEFAULT 'running',
    shards_total INT UNSIGNED NOT NULL,
    shards_done INT UNSIGNED NOT NULL DEFAULT 0,
    bets_total BIGINT UNSIGNED NOT NULL DEFAULT 0,
    bets_settled BIGINT UNSIGNED NOT NULL DEFAULT 0,
    lease_owner VARCHAR(128) NULL,
    lease_until DATETIME(3) NULL,
    started_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    finished_at DATETIME(3) NULL
) ENGINE=InnoDB;
-- Clusters made before the leases get their columns (a no-op after that).
ALTER TABLE `{schema}`.settlements
    ADD COLUMN IF NOT EXISTS bets_total BIGINT UNSIGNED NOT NULL DEFAULT 0 AFTER shards_done,
    ADD COLUMN IF NOT EXISTS lease_owner VARCHAR(128) NULL AFTER bets_settled,
    ADD COLUMN IF NOT EXISTS lease_until DATETIME(3) NULL AFTER lease_owner;

-- Standings as readers get them (JSON), recomputed after each settlement.
-- kind: users (scope 0 = global, else company id), teams (company id),
-- companies (scope 0); and recompute (scope 0, generation 0, empty): the row
-- a recomputation locks first, so that recomputations run one at a time.
-- A list is stored deflated (zlib) in body_deflate, body then empty; rows
-- from before that column keep their text in body, and are read as well.
CREATE TABLE IF NOT EXISTS `{schema}`.standings (
    kind VARCHAR(16) NOT NULL,
    scope BIGINT NOT NULL,
    generation BIGINT UNSIGNED NOT NULL,
    computed_at DATETIME(3) NOT NULL,
    body MEDIUMTEXT NOT NULL,
    body_deflate MEDIUMBLOB NULL,
    PRIMARY KEY (kind, scope)
) ENGINE=InnoDB;
-- Clusters made before the lists were stored deflated (a no-op after that).
ALTER TABLE `{schema}`.standings
    ADD COLUMN IF NOT EXISTS body_deflate MEDIUMBLOB NULL AFTER body;

-- ---- resharding ------------------------------------------------------------

-- One row per `shardctl move`: its phase is recorded before each step, so a
-- re-run after a crash knows where to resume (docs/operations.md). The
-- generated `active` column makes a second unfinished move of a shard a
-- duplicate key: two moves of one shard at once are refused by the database.
CREATE TABLE IF NOT EXISTS `{schema}`.moves (
    id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    shard INT UNSIGNED NOT NULL,
    src_host VARCHAR(64) NOT NULL,
    dst_host VARCHAR(64) NOT NULL,
    phase VARCHAR(16) NOT NULL,
    keep_source TINYINT UNSIGNED NOT NULL DEFAULT 0,
    binlog_file VARCHAR(255) NULL,  -- source binlog position of the snapshot
    binlog_pos BIGINT UNSIGNED NULL,
    snapshot_gtid VARCHAR(255) NULL, -- the same position as a GTID list (for people)
    rows_copied BIGINT UNSIGNED NOT NULL DEFAULT 0,
    pause_ms INT UNSIGNED NULL,     -- the cut-over: fence to map flip
    verify_diffs INT UNSIGNED NULL,
    started_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    updated_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
    finished_at DATETIME(3) NULL,
    note VARCHAR(255) NULL,
    active INT UNSIGNED AS (IF(phase IN ('done', 'aborted'), NULL, shard)) PERSISTENT,
    UNIQUE KEY active (active),
    KEY shard (shard, id)
) ENGINE=InnoDB;
