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
    -- The most the user's open bets can pay (each FLOOR(stake * odds / 100)):
    -- place_bet adds a bet's, its settlement takes it off. place_bet keeps
    -- balance + open_payout within 10^12 (docs/api.md), so that no
    -- settlement's credit, and no sum of a company's points, leaves 64 bits.
    open_payout BIGINT NOT NULL DEFAULT 0,
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
    -- While the bet is open, place_bet writes payout 0 and settled_at =
    -- placed_at (the API shows both as null): the settlement then rewrites
    -- fixed-size values in place. From NULL, each row would grow, and its
    -- UPDATE would log a page's reorganization or split: about 1 KB of redo
    -- a bet instead of 150 bytes (docs/benchmarks.md, run 24). Rows written
    -- NULL by older code settle the same, only slower.
    payout BIGINT NULL,
    placed_at DATETIME(3) NOT NULL,
    settled_at DATETIME(3) NULL,
    -- A match's bets in id order (the settlement's batches). Not (match_id,
    -- status): settling a bet would then move its entry (a delete-mark, an
    -- insert and a purge) besides rewriting its row (docs/benchmarks.md,
    -- runs 77-78).
    KEY user_bets (user_id, id),
    KEY match_bets (match_id)
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
    PRIMARY KEY (user_id, idem_key),
    KEY created (created_at)
) ENGINE=InnoDB;
-- Keys are kept 24 hours (the API's purge, api/api_jobs.c): a shard made
-- before that gets the index it deletes by.
ALTER TABLE `{schema}`.idempotency ADD KEY IF NOT EXISTS created (created_at);

-- A shard made before the two columns above compared bytes (they had the
-- schema's utf8mb4_unicode_ci, which folds case and accents) is brought to
-- them; a shard that has them already is not touched (no table rebuild).
-- The same for the bets' index of a match, below.
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
    -- A shard made before 2026-12-04 has match_open (match_id, status) in
    -- its place (docs/operations.md, "Upgrading to match_bets").
    IF EXISTS (SELECT 1 FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = '{schema}'
               AND TABLE_NAME = 'bets' AND INDEX_NAME = 'match_open') THEN
        ALTER TABLE `{schema}`.bets ADD KEY IF NOT EXISTS match_bets (match_id),
            DROP KEY match_open;
    END IF;
    -- A shard made before 2026-12-07 has no open_payout: added as 0 (an
    -- instant ALTER); `bcadmin recount-open-payouts` then counts the bets
    -- already open (docs/operations.md, "Upgrading to the balance limit").
    ALTER TABLE `{schema}`.users
        ADD COLUMN IF NOT EXISTS open_payout BIGINT NOT NULL DEFAULT 0 AFTER created_at;
END;

-- POST /v1/bets in one round trip (api/api_bets.c): the Idempotency-Key's
-- earlier answer, the settled check (a share lock on settled_matches, so no
-- bet slips in after its match was settled here), the conditional debit (a
-- balance never goes below zero, nor balance + open_payout above 10^12), the
-- bet, its ledger row and the key's
-- record, in one transaction that commits before the answer row is sent.
-- The answer is one row: 'placed' or 'replay' followed by the request hash
-- (a replay's) and the bet's columns, or 'closed' / 'balance' / 'limit' alone. A
-- request whose key a concurrent one committed while it waited for the
-- user's row is that one's replay, not refused for the balance it spent. Any
-- error (a fenced copy during a move, a read-only server after a failover, a
-- deadlock, a duplicate key) rolls the transaction back and reaches the
-- caller as it is. The bet id is composed as router_next_id() does
-- (shardmap/shardmap.h: 41 bits of ms since p_epoch_ms, 13 of shard, 10 of
-- the shard's sequence). SQL SECURITY INVOKER: the statements run with the
-- API account's own rights (it needs EXECUTE on the shard schemas).
CREATE OR REPLACE PROCEDURE `{schema}`.place_bet(
    p_epoch_ms BIGINT UNSIGNED, p_shard INT UNSIGNED, p_user BIGINT, p_match BIGINT,
    p_pick VARCHAR(8), p_stake BIGINT, p_odds INT UNSIGNED, p_placed DATETIME(3),
    p_key VARBINARY(64), p_hash CHAR(32))
    MODIFIES SQL DATA
    SQL SECURITY INVOKER
proc: BEGIN
    DECLARE v_bet, v_id BIGINT UNSIGNED DEFAULT NULL;
    DECLARE v_settled INT DEFAULT 0;
    DECLARE v_hash CHAR(32) DEFAULT NULL;
    -- The bet's payout if it wins (a cancelled match pays back the stake, less).
    DECLARE v_pay BIGINT DEFAULT FLOOR(p_stake * p_odds / 100);
    DECLARE EXIT HANDLER FOR SQLEXCEPTION
    BEGIN
        ROLLBACK;
        RESIGNAL;
    END;
    START TRANSACTION;
    IF p_key IS NOT NULL THEN
        SELECT MAX(request_hash), MAX(bet_id) INTO v_hash, v_bet
            FROM `{schema}`.idempotency WHERE user_id = p_user AND idem_key = p_key;
        IF v_bet IS NOT NULL THEN
            ROLLBACK;
            SELECT 'replay', v_hash, id, match_id, pick, stake, odds, status, payout,
                   placed_at, settled_at
                FROM `{schema}`.bets WHERE id = v_bet AND user_id = p_user;
            LEAVE proc;
        END IF;
    END IF;
    SELECT COUNT(*) INTO v_settled FROM `{schema}`.settled_matches
        WHERE match_id = p_match LOCK IN SHARE MODE;
    IF v_settled <> 0 THEN
        ROLLBACK;
        SELECT 'closed';
        LEAVE proc;
    END IF;
    -- The limit's test is written so that no term leaves 64 bits, whatever
    -- a row holds: open_payout is checked against the room first.
    UPDATE `{schema}`.users
        SET balance = balance - p_stake, open_payout = open_payout + v_pay
        WHERE id = p_user AND balance >= p_stake
            AND open_payout <= 1000000000000 - v_pay
            AND balance - p_stake <= 1000000000000 - v_pay - open_payout;
    IF ROW_COUNT() = 0 THEN
        -- A request with the same key may have committed while this one
        -- waited for the user's row, and its debit be why the balance is
        -- short: then this one is its replay. A locking read sees that
        -- commit; the plain read above, from before it, could not.
        IF p_key IS NOT NULL THEN
            SELECT MAX(request_hash), MAX(bet_id) INTO v_hash, v_bet
                FROM `{schema}`.idempotency WHERE user_id = p_user AND idem_key = p_key
                LOCK IN SHARE MODE;
        END IF;
        ROLLBACK;
        IF v_bet IS NOT NULL THEN
            SELECT 'replay', v_hash, id, match_id, pick, stake, odds, status, payout,
                   placed_at, settled_at
                FROM `{schema}`.bets WHERE id = v_bet AND user_id = p_user;
        ELSE
            -- The stake above the balance, or the limit: which, for the answer.
            SELECT IF(COALESCE(MAX(balance), 0) < p_stake, 'balance', 'limit')
                FROM `{schema}`.users WHERE id = p_user;
        END IF;
        LEAVE proc;
    END IF;
    SET v_id = ((CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS UNSIGNED) - p_epoch_ms) << 23) |
               (p_shard << 10) | (NEXTVAL(`{schema}`.id_seq) & 1023);
    INSERT INTO `{schema}`.bets (id, user_id, match_id, pick, stake, odds, placed_at,
                                 payout, settled_at)
        VALUES (v_id, p_user, p_match, p_pick, p_stake, p_odds, p_placed, 0, p_placed);
    INSERT INTO `{schema}`.ledger (user_id, delta, reason, bet_id)
        VALUES (p_user, -p_stake, 'bet', v_id);
    IF p_key IS NOT NULL THEN
        INSERT INTO `{schema}`.idempotency (user_id, idem_key, request_hash, bet_id)
            VALUES (p_user, p_key, p_hash, v_id);
    END IF;
    COMMIT;
    SELECT 'placed', NULL, v_id, p_match, p_pick, p_stake, p_odds, 'open', NULL,
           p_placed, NULL;
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

-- Members of a company at each number of points: written and read up to
-- 2026-12-03, no longer (a large company's cut comes from the users'
-- company_points index: its rows grew towards one a member once scores
-- spread). Still created, empty, so that a shard moved between servers of
-- both ages finds the same tables on both sides; rows an older server wrote
-- stay and are not read.
CREATE TABLE IF NOT EXISTS `{schema}`.standings_points (
    company_id BIGINT NOT NULL,
    points BIGINT NOT NULL,
    members BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (company_id, points)
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS `{schema}`.standings_team (
    team_id BIGINT NOT NULL PRIMARY KEY,
    company_id BIGINT NOT NULL,
    members BIGINT NOT NULL DEFAULT 0,
    points BIGINT NOT NULL DEFAULT 0
) ENGINE=InnoDB;
