-- Fencing of one logical shard's copy. `{schema}` is replaced by <prefix>_NNNN.
-- Applied by `shardctl init`, and by `shardctl move` on the target after the
-- rows are copied (so the copy itself does not pay for the triggers).
--
-- Every row written to a table of the shard first reads shard_state.fenced
-- with a share lock. `shardctl move` sets fenced = 1 on the source copy at the
-- start of the cut-over (not binlogged, so the target never sees it): the
-- update waits for every transaction that already wrote to the shard, and
-- from then on no write can commit on the source, whatever shard map the
-- writer has. The writer gets SQLSTATE 45000 "bc: shard moved"; the router
-- then follows the map to the shard's new host and retries.
-- Replicated row events do not fire triggers, so the target's catch-up is not
-- affected. A move's target copy is fenced from its creation to the cut-over
-- (no server may write into a copy that is not the shard yet); the move's own
-- copy session sets @bc_move_copy to fill it. A transaction that writes many
-- rows (a settlement batch) reads shard_state with the share lock once, first,
-- and sets @bc_fence_held until it ends (router_txn_fence(): the router clears
-- it before the commit or rollback, or closes the connection): its rows skip
-- the read, which each would repeat. Every statement is idempotent.
--
-- fence_check() is the check for a session that wants it (bcadmin); the
-- triggers carry the same check inline: a CALL from a trigger costs about
-- 1.2 us more a row (docs/benchmarks.md, "What the fencing triggers cost"),
-- which a settlement batch pays on every row it writes. A shard whose
-- triggers still call fence_check() (made before 2026-12-05) gets them
-- replaced, each one at once (CREATE OR REPLACE: never a moment without
-- it), by the tool that applies this file (reshard_shard_install()); on any
-- other shard the triggers are left as they are, as every statement here is
-- idempotent and cheap to run again.
CREATE OR REPLACE PROCEDURE `{schema}`.fence_check()
    READS SQL DATA
BEGIN
    IF @bc_move_copy IS NULL AND @bc_fence_held IS NULL THEN
        IF (SELECT fenced FROM `{schema}`.shard_state WHERE id = 1 LOCK IN SHARE MODE) <> 0 THEN
            SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'bc: shard moved';
        END IF;
    END IF;
END;

CREATE TRIGGER IF NOT EXISTS `{schema}`.users_fence_i BEFORE INSERT ON `{schema}`.users FOR EACH ROW
    IF @bc_move_copy IS NULL AND @bc_fence_held IS NULL THEN
        IF (SELECT fenced FROM `{schema}`.shard_state WHERE id = 1 LOCK IN SHARE MODE) <> 0 THEN
            SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'bc: shard moved';
        END IF;
    END IF;
CREATE TRIGGER IF NOT EXISTS `{schema}`.users_fence_u BEFORE UPDATE ON `{schema}`.users FOR EACH ROW
    IF @bc_move_copy IS NULL AND @bc_fence_held IS NULL THEN
        IF (SELECT fenced FROM `{schema}`.shard_state WHERE id = 1 LOCK IN SHARE MODE) <> 0 THEN
            SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'bc: shard moved';
        END IF;
    END IF;
CREATE TRIGGER IF NOT EXISTS `{schema}`.users_fence_d BEFORE DELETE ON `{schema}`.users FOR EACH ROW
    IF @bc_move_copy IS NULL AND @bc_fence_held IS NULL THEN
        IF (SELECT fenced FROM `{schema}`.shard_state WHERE id = 1 LOCK IN SHARE MODE) <> 0 THEN
            SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'bc: shard moved';
        END IF;
    END IF;
CREATE TRIGGER IF NOT EXISTS `{schema}`.bets_fence_i BEFORE INSERT ON `{schema}`.bets FOR EACH ROW
    IF @bc_move_copy IS NULL AND @bc_fence_held IS NULL THEN
        IF (SELECT fenced FROM `{schema}`.shard_state WHERE id = 1 LOCK IN SHARE MODE) <> 0 THEN
            SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'bc: shard moved';
        END IF;
    END IF;
CREATE TRIGGER IF NOT EXISTS `{schema}`.bets_fence_u BEFORE UPDATE ON `{schema}`.bets FOR EACH ROW
    IF @bc_move_copy IS NULL AND @bc_fence_held IS NULL THEN
        IF (SELECT fenced FROM `{schema}`.shard_state WHERE id = 1 LOCK IN SHARE MODE) <> 0 THEN
            SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'bc: shard moved';
        END IF;
    END IF;
CREATE TRIGGER IF NOT EXISTS `{schema}`.bets_fence_d BEFORE DELETE ON `{schema}`.bets FOR EACH ROW
    IF @bc_move_copy IS NULL AND @bc_fence_held IS NULL THEN
        IF (SELECT fenced FROM `{schema}`.shard_state WHERE id = 1 LOCK IN SHARE MODE) <> 0 THEN
            SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'bc: shard moved';
        END IF;
    END IF;
CREATE TRIGGER IF NOT EXISTS `{schema}`.ledger_fence_i BEFORE INSERT ON `{schema}`.ledger FOR EACH ROW
    IF @bc_move_copy IS NULL AND @bc_fence_held IS NULL THEN
        IF (SELECT fenced FROM `{schema}`.shard_state WHERE id = 1 LOCK IN SHARE MODE) <> 0 THEN
            SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'bc: shard moved';
        END IF;
    END IF;
CREATE TRIGGER IF NOT EXISTS `{schema}`.ledger_fence_u BEFORE UPDATE ON `{schema}`.ledger FOR EACH ROW
    IF @bc_move_copy IS NULL AND @bc_fence_held IS NULL THEN
        IF (SELECT fenced FROM `{schema}`.shard_state WHERE id = 1 LOCK IN SHARE MODE) <> 0 THEN
            SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'bc: shard moved';
        END IF;
    END IF;
CREATE TRIGGER IF NOT EXISTS `{schema}`.ledger_fence_d BEFORE DELETE ON `{schema}`.ledger FOR EACH ROW
    IF @bc_move_copy IS NULL AND @bc_fence_held IS NULL THEN
        IF (SELECT fenced FROM `{schema}`.shard_state WHERE id = 1 LOCK IN SHARE MODE) <> 0 THEN
            SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'bc: shard moved';
        END IF;
    END IF;
CREATE TRIGGER IF NOT EXISTS `{schema}`.avatars_fence_i BEFORE INSERT ON `{schema}`.avatars FOR EACH ROW
    IF @bc_move_copy IS NULL AND @bc_fence_held IS NULL THEN
        IF (SELECT fenced FROM `{schema}`.shard_state WHERE id = 1 LOCK IN SHARE MODE) <> 0 THEN
            SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'bc: shard moved';
        END IF;
    END IF;
CREATE TRIGGER IF NOT EXISTS `{schema}`.avatars_fence_u BEFORE UPDATE ON `{schema}`.avatars FOR EACH ROW
    IF @bc_move_copy IS NULL AND @bc_fence_held IS NULL THEN
        IF (SELECT fenced FROM `{schema}`.shard_state WHERE id = 1 LOCK IN SHARE MODE) <> 0 THEN
            SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'bc: shard moved';
        END IF;
    END IF;
CREATE TRIGGER IF NOT EXISTS `{schema}`.avatars_fence_d BEFORE DELETE ON `{schema}`.avatars FOR EACH ROW
    IF @bc_move_copy IS NULL AND @bc_fence_held IS NULL THEN
        IF (SELECT fenced FROM `{schema}`.shard_state WHERE id = 1 LOCK IN SHARE MODE) <> 0 THEN
            SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'bc: shard moved';
        END IF;
    END IF;
CREATE TRIGGER IF NOT EXISTS `{schema}`.idempotency_fence_i BEFORE INSERT ON `{schema}`.idempotency FOR EACH ROW
    IF @bc_move_copy IS NULL AND @bc_fence_held IS NULL THEN
        IF (SELECT fenced FROM `{schema}`.shard_state WHERE id = 1 LOCK IN SHARE MODE) <> 0 THEN
            SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'bc: shard moved';
        END IF;
    END IF;
CREATE TRIGGER IF NOT EXISTS `{schema}`.idempotency_fence_u BEFORE UPDATE ON `{schema}`.idempotency FOR EACH ROW
    IF @bc_move_copy IS NULL AND @bc_fence_held IS NULL THEN
        IF (SELECT fenced FROM `{schema}`.shard_state WHERE id = 1 LOCK IN SHARE MODE) <> 0 THEN
            SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'bc: shard moved';
        END IF;
    END IF;
CREATE TRIGGER IF NOT EXISTS `{schema}`.idempotency_fence_d BEFORE DELETE ON `{schema}`.idempotency FOR EACH ROW
    IF @bc_move_copy IS NULL AND @bc_fence_held IS NULL THEN
        IF (SELECT fenced FROM `{schema}`.shard_state WHERE id = 1 LOCK IN SHARE MODE) <> 0 THEN
            SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'bc: shard moved';
        END IF;
    END IF;
CREATE TRIGGER IF NOT EXISTS `{schema}`.settled_matches_fence_i BEFORE INSERT ON `{schema}`.settled_matches FOR EACH ROW
    IF @bc_move_copy IS NULL AND @bc_fence_held IS NULL THEN
        IF (SELECT fenced FROM `{schema}`.shard_state WHERE id = 1 LOCK IN SHARE MODE) <> 0 THEN
            SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'bc: shard moved';
        END IF;
    END IF;
CREATE TRIGGER IF NOT EXISTS `{schema}`.settled_matches_fence_u BEFORE UPDATE ON `{schema}`.settled_matches FOR EACH ROW
    IF @bc_move_copy IS NULL AND @bc_fence_held IS NULL THEN
        IF (SELECT fenced FROM `{schema}`.shard_state WHERE id = 1 LOCK IN SHARE MODE) <> 0 THEN
            SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'bc: shard moved';
        END IF;
    END IF;
CREATE TRIGGER IF NOT EXISTS `{schema}`.settled_matches_fence_d BEFORE DELETE ON `{schema}`.settled_matches FOR EACH ROW
    IF @bc_move_copy IS NULL AND @bc_fence_held IS NULL THEN
        IF (SELECT fenced FROM `{schema}`.shard_state WHERE id = 1 LOCK IN SHARE MODE) <> 0 THEN
            SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'bc: shard moved';
        END IF;
    END IF;
