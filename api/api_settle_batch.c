/*
 * api_settle_batch.c: one settlement batch on one shard (api_settle_job.c
 * runs them): lock the next open bets of the match in id order (after the
 * last batch's, or from the first when the caller asks), write their
 * ledger rows, credit their users' balances and points, update the standings
 * aggregates (api_standings_batch), mark the bets won, lost or void, and,
 * in the transaction that looks from the first bet and finds fewer open
 * ones than a batch, insert the shard's settled_matches guard row. All in one
 * transaction, so a bet's status, its ledger row and its credit commit together.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_int.h"

/*
 * Bets per transaction. A batch locks its bets and their users' rows until
 * it commits, and a user betting on another match waits for that: 2,000
 * bets commit in 0.1-0.2 s on the local stack (2 cores, 3 hosts), and the
 * transaction's undo, binlog event and semi-synchronous acknowledgement
 * stay small (a few hundred KB), while a million bets of one shard still
 * take only 500 transactions of five round trips each.
 */
#define SETTLE_BATCH 2000

/*
 * The batch's bets, still open: match, lo, hi. Read over match_bets, the
 * range this batch locked already: over the primary key, InnoDB would also
 * share-lock the other matches' bets with ids in [lo, hi] and wait for their
 * writers (another match's settlement). match_bets is (match_id) alone: a
 * settled bet's new status, payout and time are written in its row only,
 * with no index entry to delete and insert (and purge later), and each
 * statement reads the status from the row it visits anyway.
 */
#define BATCH                                                                          \
    "%S.bets FORCE INDEX (match_bets) WHERE match_id = %u AND status = 'open' AND "    \
    "id BETWEEN %u AND %u"
/* A bet's payout (the result twice), as docs/api.md defines it. */
#define PAYOUT                                                                         \
    "CASE WHEN %s = 'cancelled' THEN stake WHEN pick = %s THEN "                       \
    "FLOOR(stake * odds / 100) ELSE 0 END"

static int u64_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/*
 * The distinct users of the locked bets (column 1 of ids), in id order, as
 * rows of a table value constructor, "(12),(15),(40)", into b: digits the
 * program wrote itself, for %R.
 */
static int batch_users(const struct sql_rows *ids, struct sql_buf *b)
{
    uint64_t *u = malloc(ids->nrow * sizeof(*u));
    char num[24];
    int rc = 0, n;

    if (u == NULL)
        return -ENOMEM;
    for (uint32_t i = 0; i < ids->nrow; i++)
        u[i] = strtoull(sql_cell(ids, i, 1), NULL, 10);
    qsort(u, ids->nrow, sizeof(*u), u64_cmp);
    for (uint32_t i = 0; i < ids->nrow && rc == 0; i++) {
        if (i > 0 && u[i] == u[i - 1])
            continue;
        n = snprintf(num, sizeof(num), "%s(%" PRIu64 ")", b->len > 0 ? "," : "", u[i]);
        rc = sql_buf_add(b, num, (size_t)n);
    }
    free(u);
    return rc;
}

/*
 * Settles the next open bets of the match on shard with ids above *after,
 * at most SETTLE_BATCH, in one transaction. A full batch moves *after to
 * its last bet. When fewer were left above a cursor, *after goes back to 0;
 * from 0, the same transaction inserts the shard's guard row and *last is
 * set. *n: bets settled. Returns 0 or a router status (nothing of the batch
 * stays then, and *after is as it was).
 */
int api_settle_batch(struct router *r, uint64_t match, const char *res,
                     const char *reason, uint32_t shard, uint64_t *after, uint64_t *n,
                     int *last)
{
    struct sql_rows ids = {0}, rows = {0};
    struct sql_buf users = {0};
    struct router_txn *txn;
    uint64_t lo = 0, hi = 0, m = match;
    int rc;

    *n = 0;
    *last = 0;
    if ((rc = router_txn_begin(r, shard, &txn)) < 0)
        return rc;
    /*
     * The shard's fence once for the batch, not once a written row: a batch
     * writes thousands (its bets, their users and ledger rows), and each
     * row's own check cost about as much as writing it.
     */
    if ((rc = router_txn_fence(txn)) < 0) {
        router_txn_rollback(txn);
        return rc;
    }
    /*
     * The index is forced: in id order over the primary key, InnoDB would
     * lock every bet it scanned, of any match. Over match_bets it locks the
     * match's bets it scans, settled ones too, and, when it reaches the end
     * of them, the gap after: no bet of the match can be written until this
     * commits. The scan starts after the last batch's bets (settled ones
     * are skipped by the status in their rows, so without the cursor each
     * batch would read every earlier batch's bets again). A bet written
     * below the cursor meanwhile (ids follow the clocks of the servers that
     * made them) is not lost: the guard row is only written by a batch that
     * looked from the match's first bet.
     */
    rc = router_txn_exec(
        txn, &ids,
        "SELECT id, user_id FROM %S.bets FORCE INDEX (match_bets) WHERE "
        "match_id = %u AND id > %u AND status = 'open' ORDER BY id "
        "LIMIT %u FOR UPDATE",
        m, *after, (uint64_t)SETTLE_BATCH);
    if (rc == 0 && ids.nrow > 0) {
        lo = strtoull(sql_cell(&ids, 0, 0), NULL, 10);
        hi = strtoull(sql_cell(&ids, ids.nrow - 1, 0), NULL, 10);
        /*
         * The users first, in id order, as every transaction that locks
         * several does: the sorted ids drive primary-key lookups. (A join
         * with the bets would lock them in the bets' order; an IN list may
         * become a scan of the whole table, and lock every user of the
         * shard.) Then one ledger row per paying bet, one credit per user.
         */
        rc = batch_users(&ids, &users);
        /* Three statements: the API's account sends one a call. */
        if (rc == 0)
            rc = router_txn_exec(txn, NULL,
                                 "WITH v (id) AS (VALUES %R) SELECT u.id FROM v "
                                 "STRAIGHT_JOIN %S.users u ON u.id = v.id FOR UPDATE",
                                 users.buf);
        if (rc == 0)
            rc = router_txn_exec(txn, NULL,
                                 "INSERT INTO %S.ledger (user_id, delta, reason, "
                                 "bet_id) SELECT user_id, p, %s, id FROM (SELECT "
                                 "user_id, id, " PAYOUT " AS p FROM " BATCH
                                 ") t WHERE p > 0 ORDER BY id",
                                 reason, res, res, m, lo, hi);
        if (rc == 0)
            rc = router_txn_exec(
                txn, NULL,
                "UPDATE %S.users u JOIN (SELECT user_id, SUM(p) AS p, SUM(p - stake) "
                "AS pts FROM (SELECT user_id, stake, " PAYOUT " AS p FROM " BATCH
                ") t GROUP BY user_id) b ON u.id = b.user_id SET u.balance = "
                "u.balance + b.p, u.points = u.points + b.pts",
                res, res, m, lo, hi);
    }
    /* While the bets are still open with ids in [lo, hi]: its contract. */
    if (rc == 0 && ids.nrow > 0)
        rc = api_standings_batch(txn, m, res, lo, hi);
    if (rc == 0 && ids.nrow > 0) {
        rc = router_txn_exec(txn, &rows,
                             "UPDATE %S.bets FORCE INDEX (match_bets) SET status = "
                             "CASE WHEN %s = 'cancelled' THEN 'void' WHEN pick = %s "
                             "THEN 'won' ELSE 'lost' END, payout = " PAYOUT
                             ", settled_at = NOW(3) WHERE match_id = %u AND status = "
                             "'open' AND id BETWEEN %u AND %u",
                             res, res, res, res, m, lo, hi);
        if (rc == 0 && rows.affected != ids.nrow) {
            api_log("settlement %" PRIu64 ": shard %u: %" PRIu64
                    " bets changed of %u locked; rolled back",
                    m, shard, rows.affected, ids.nrow);
            rc = BC_EQUERY;
        }
    }
    if (rc == 0 && *after > 0 && ids.nrow < SETTLE_BATCH) {
        /* Fewer were left after the cursor: the next batch looks from 0. */
        rc = router_txn_commit(txn);
        if (rc == 0) {
            *n = ids.nrow;
            *after = 0;
        }
        goto out;
    }
    if (rc == 0 && ids.nrow < SETTLE_BATCH) {
        /*
         * No open bet is left, and none can be written while this holds its
         * locks. The count is a plain read: a locking one would also lock
         * the next match's first bet in the index, while this holds users.
         */
        sql_rows_free(&rows);
        rc = router_txn_exec(txn, &rows,
                             "SELECT COUNT(*) FROM %S.bets WHERE match_id = %u", m);
        if (rc == 0)
            rc = router_txn_exec(txn, NULL,
                                 "INSERT INTO %S.settled_matches (match_id, result, "
                                 "bets_settled) VALUES (%u, %s, %u)",
                                 m, res, strtoull(sql_cell(&rows, 0, 0), NULL, 10));
        if (rc == BC_EDUPKEY) {
            /* Another runner (or the old code) finished it: keep its rows. */
            if (ids.nrow > 0)
                api_log("settlement %" PRIu64 ": shard %u has a guard row and %u "
                        "open bets; left as they are",
                        m, shard, ids.nrow);
            router_txn_rollback(txn);
            *last = 1;
            rc = 0;
            goto out;
        }
        *last = 1;
    }
    if (rc < 0) {
        router_txn_rollback(txn);
        goto out;
    }
    if ((rc = router_txn_commit(txn)) == 0) {
        *n = ids.nrow;
        if (!*last)
            *after = hi;
    }
out:
    sql_rows_free(&ids);
    sql_rows_free(&rows);
    sql_buf_deinit(&users);
    if (rc < 0)
        *last = 0;
    return rc;
}
