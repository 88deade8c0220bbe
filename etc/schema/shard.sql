-- One logical shard. `{schema}` is replaced by <prefix>_NNNN.
-- Applied by `shardctl init` on the shard's host; every statement is idempotent.
-- Users, their bets and their ledger live together in the user's shard, so a
-- bet is a single-shard transaction.
CREATE DATABASE IF NOT EXISTS `{schema}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;

-- Sequence for ids made on this shard (router_next_id): it moves with the
-- shard, so ids stay unique wherever the shard lives.
CREATE SEQUENCE IF NOT EXISTS `{schema}`.id_seq START WITH 1 INCREMENT BY 1 CACHE 1000;

-- Per-shard state row, checked inside write transactions (fencing during a move).
CREATE TABLE IF NOT EXISTS `{schema}`.shard_state (
    id TINYINT UNSIGNED NOT NULL PRIMARY KEY,
    shard INT UNSIGNED NOT NULL,
    fenced TINYINT UNSIGNED NOT NULL DEFAULT 0
) ENGINE=InnoDB;

-- The e-mail is stored in its canonical form (trimmed, ASCII letters lower-
-- cased: shardmap_canonical_email) and compared byte for byte: "é" and "e",
-- "É" and "é" are different addresses, as they are on the shard's hash.
CREATE TABLE IF NOT EXISTS `{schema}`.users (
    id BIGINT NOT NULL PRIMARY KEY,
    email VARCHAR(254) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    password_hash VARCHAR(128) NOT NULL,
    display_name VARCHAR(100) NOT NULL,
    company_id BIGINT NOT NULL,
    team_id BIGINT NULL,
    role VARCHAR(16) NOT NULL DEFAULT 'member',
    balance BIGINT NOT NULL,
    initial_balance BIGINT NOT NULL,
    points BIGINT NOT NULL DEFAULT 0,
    created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    UNIQUE KEY email (email),
    KEY company_points (company_id, points)
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS `{schema}`.bets (
    id BIGINT NOT NULL PRIMARY KEY,
    user_id BIGINT NOT NULL,
    match_id BIGINT NOT NULL,
    pick ENUM('home','draw','away') NOT NULL,
    stake BIGINT NOT NULL,
    odds INT UNSIGNED NOT NULL,
    status ENUM('open','won','lost','void') NOT NULL DEFAULT 'open',
    payout BIGINT NULL,
    placed_at DATETIME(3) NOT NULL,
    settled_at DATETIME(3) NULL,
    KEY user_bets (user_id, id),
    KEY match_open (match_id, status)
) ENGINE=InnoDB;

-- Ledger ids are local to the shard (never referenced from elsewhere).
CREATE TABLE IF NOT EXISTS `{schema}`.ledger (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    user_id BIGINT NOT NULL,
    delta BIGINT NOT NULL,
    reason VARCHAR(16) NOT NULL,
    bet_id BIGINT NULL,
    created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    KEY user_ledger (user_id, id)
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS `{schema}`.avatars (
    user_id BIGINT NOT NULL PRIMARY KEY,
    content_type VARCHAR(32) NOT NULL,
    etag CHAR(16) NOT NULL,
    data MEDIUMBLOB NOT NULL
) ENGINE=InnoDB;

-- Idempotency-Key of POST /v1/bets: the request's hash and the bet it made.
-- The key is bytes: "abc", "ABC" and "abc " are three keys.
CREATE TABLE IF NOT EXISTS `{schema}`.idempotency (
    user_id BIGINT NOT NULL,
    idem_key VARBINARY(64) NOT NULL,
    request_hash CHAR(32) NOT NULL,
    bet_id BIGINT NOT NULL,
    created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    PRIMARY KEY (user_id, idem_key)
) ENGINE=InnoDB;

-- A shard made before the two columns above compared bytes (they had the
-- schema's utf8mb4_unicode_ci, which folds case and accents) is brought to
-- them; a shard that has them already is not touched (no table rebuild).
BEGIN NOT ATOMIC
    IF EXISTS (SELECT 1 FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = '{schema}'
               AND TABLE_NAME = 'users' AND COLUMN_NAME = 'email'
               AND COLLATION_NAME <> 'utf8mb4_bin') THEN
        ALTER TABLE `{schema}`.users
            MODIFY email VARCHAR(254) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL;
    END IF;
    IF EXISTS (SELECT 1 FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = '{schema}'
               AND TABLE_NAME = 'idempotency' AND COLUMN_NAME = 'idem_key'
               AND DATA_TYPE <> 'varbinary') THEN
        ALTER TABLE `{schema}`.idempotency MODIFY idem_key VARBINARY(64) NOT NULL;
    END IF;
END;

-- A match settled on this shard: inserted first in the shard's settlement
-- transaction, so it is settled exactly once, and read (with a share lock)
-- by bets, so no bet slips in after its match was settled here.
CREATE TABLE IF NOT EXISTS `{schema}`.settled_matches (
    match_id BIGINT NOT NULL PRIMARY KEY,
    result ENUM('home','draw','away','cancelled') NOT NULL,
    bets_settled INT UNSIGNED NOT NULL,
    settled_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
) ENGINE=InnoDB;

-- Standings aggregates of this shard's users (platform admins excluded):
-- members and point sums per company and per team, so a recomputation
-- reads one row per company and team instead of every user. Kept in the
-- same transaction as what changes them: a settlement batch
-- (api_standings_batch), a signup, a team change. `bcadmin
-- rebuild-standings` makes them again from users (a cluster upgraded from
-- before they existed); `bcadmin check-standings` compares them.
-- A shard move copies tables in name order: these sort after bets, whose
-- copy the move's drills (tests/reshard) expect to see first.
CREATE TABLE IF NOT EXISTS `{schema}`.standings_company (
    company_id BIGINT NOT NULL PRIMARY KEY,
    members BIGINT NOT NULL DEFAULT 0,
    points BIGINT NOT NULL DEFAULT 0
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS `{schema}`.standings_team (
    team_id BIGINT NOT NULL PRIMARY KEY,
    company_id BIGINT NOT NULL,
    members BIGINT NOT NULL DEFAULT 0,
    points BIGINT NOT NULL DEFAULT 0
) ENGINE=InnoDB;
