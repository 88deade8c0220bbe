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
