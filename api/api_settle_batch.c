/*
 * api_settle_batch.c: one settlement batch on one shard (api_settle_job.c
 * runs them): lock the next open bets of the match in id order (after the
 * last batch's, or from the first when the caller asks), write their
 * ledger rows, credit their users' balances and points, update the standings
 * aggregates (api_standings_batch), mark the bets won, lost or void, and,
 * in the transaction that looks from the first bet and finds fewer open
 * ones than a batch, insert the shard's settled_matches guard row. All in one
 * transaction, so a bet's status, its ledger row and its credit commit together.
 *
 * The locking read returns each bet's payout, computed by the server from
 * PAYOUT (the rule is written once, here, in SQL); the ledger rows, the
 * credits and the standings' sums are sent from those numbers as VALUES
 * rows, so that the batch's bets are read once and written once (reading
 * them again for each of those statements, joined with their users, cost
 * about a third of the batch's time: docs/benchmarks.md, runs 79-80).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_int.h"
#include "api/api_settle.h"

/*
 * Bets per transaction: settle_batch_bets (API_SETTLE_BATCH_BETS, 250, by
 * default). A batch locks its bets and their users' rows until it commits,
 * and a user betting on another match waits for that; its statements are
 * as long as it has bets, and where the hosts share their cores with the
 * requests (the local stack: 2 cores, 3 hosts), requests that wake behind
 * a statement wait for it now and then. At 250 the bets' p99 while a
 * 1,000,000-bet match settled was 5.7 ms against 6.9-7.7 ms at 2,000, for
 * 36 s of settlement against 28-29 s (docs/benchmarks.md, runs 93-97);
 * the transaction's undo, binlog event and semi-synchronous acknowledgement
 * stay small (tens of KB).
 */

/* A bet's payout (the result twice), as docs/api.md defines it. */
#define PAYOUT                                                                         \
    "CASE WHEN %s = 'cancelled' THEN stake WHEN pick = %s THEN "                       \
    "FLOOR(stake * odds / 100) ELSE 0 END"

/* What an open bet could pay: place_bet's v_pay (etc/schema/shard.sql). */
#define OWED "FLOOR(stake * odds / 100)"

/*
 * A locked bet: its id, user, stake, payout (PAYOUT, as the server computed
 * it) and what it could pay (OWED, what place_bet added to open_payout).
 */
struct batch_bet {
    uint64_t id, user;
    int64_t stake, paid, owed;
};

static int bet_user_cmp(const void *a, const void *b)
{
    const struct batch_bet *x = a, *y = b;

    if (x->user != y->user)
        return x->user < y->user ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static int user_id_cmp(const void *key, const void *elem)
{
    uint64_t k = *(const uint64_t *)key, id = ((const struct api_batch_user *)elem)->id;

    return k < id ? -1 : k > id;
}

/* Cell (i, col) of rows as a whole number into *v; -1 if it is not one. */
static int cell_i64(const struct sql_rows *rows, uint32_t i, uint32_t col, int64_t *v)
{
    const char *c = sql_cell(rows, i, col);
    char *end;

    if (c == NULL || *c == '\0')
        return -1;
    *v = strtoll(c, &end, 10);
    return *end == '\0' ? 0 : -1;
}

/*
 * The locked bets (ids: id, user_id, stake, payout, owed) into bets, in id
 * order, and their distinct users into users, in id order, each with the
 * sums of the payouts, of the points (payout - stake) the batch gives him
 * and of his open payouts it closes.
 * Returns 0, -ENOMEM, or BC_EQUERY for a cell that is not a number.
 */
static int batch_read(const struct sql_rows *ids, struct batch_bet **bets,
                      struct api_batch_user **users, size_t *nuser)
{
    struct batch_bet *b = calloc(ids->nrow, sizeof(*b));
    struct batch_bet *byu = calloc(ids->nrow, sizeof(*byu));
    struct api_batch_user *u = calloc(ids->nrow, sizeof(*u));
    int64_t id, user;
    size_t n = 0;
    int rc = b == NULL || byu == NULL || u == NULL ? -ENOMEM : 0;

    for (uint32_t i = 0; rc == 0 && i < ids->nrow; i++) {
        if (cell_i64(ids, i, 0, &id) < 0 || cell_i64(ids, i, 1, &user) < 0 ||
            cell_i64(ids, i, 2, &b[i].stake) < 0 ||
            cell_i64(ids, i, 3, &b[i].paid) < 0 ||
            cell_i64(ids, i, 4, &b[i].owed) < 0) {
            rc = BC_EQUERY;
            break;
        }
        b[i].id = (uint64_t)id;
        b[i].user = (uint64_t)user;
    }
    if (rc == 0) {
        memcpy(byu, b, ids->nrow * sizeof(*byu));
        qsort(byu, ids->nrow, sizeof(*byu), bet_user_cmp);
        for (uint32_t i = 0; i < ids->nrow; i++) {
            if (n == 0 || u[n - 1].id != byu[i].user)
                u[n++].id = byu[i].user;
            u[n - 1].paid += byu[i].paid;
            u[n - 1].points += byu[i].paid - byu[i].stake;
            u[n - 1].owed += byu[i].owed;
        }
    }
    free(byu);
    if (rc < 0) {
        free(b);
        free(u);
        return rc;
    }
    *bets = b;
    *users = u;
    *nuser = n;
    return 0;
}

/*
 * Locks the batch's users in id order (the sorted ids drive primary-key
 * lookups; a join with the bets would lock them in the bets' order, and an
 * IN list may become a scan of the whole table, locking every user of the
 * shard), and notes each one's company, team and role for the standings.
 */
static int batch_lock_users(struct router_txn *txn, struct api_batch_user *u, size_t n)
{
    struct sql_rows rows = {0};
    struct sql_buf b = {0};
    char num[24];
    int rc = 0, len;

    for (size_t i = 0; i < n && rc == 0; i++) {
        len = snprintf(num, sizeof(num), "%s(%" PRIu64 ")", i > 0 ? "," : "", u[i].id);
        rc = sql_buf_add(&b, num, (size_t)len);
    }
    if (rc == 0)
        rc = router_txn_exec(txn, &rows,
                             "WITH v (id) AS (VALUES %R) SELECT u.id, u.company_id, "
                             "COALESCE(u.team_id, 0), u.role = 'platform_admin' FROM v "
                             "STRAIGHT_JOIN %S.users u ON u.id = v.id FOR UPDATE",
                             b.buf);
    for (uint32_t i = 0; rc == 0 && i < rows.nrow; i++) {
        uint64_t id = strtoull(sql_cell(&rows, i, 0), NULL, 10);
        struct api_batch_user *x = bsearch(&id, u, n, sizeof(*u), user_id_cmp);

        if (x == NULL || sql_cell(&rows, i, 1) == NULL)
            continue;
        x->found = 1;
        x->company = strtoull(sql_cell(&rows, i, 1), NULL, 10);
        x->team = strtoull(sql_cell(&rows, i, 2), NULL, 10);
        x->admin = strcmp(sql_cell(&rows, i, 3), "0") != 0;
    }
    sql_rows_free(&rows);
    sql_buf_deinit(&b);
    return rc;
}

/*
 * One ledger row per paying bet, in bet id order, and one credit of balance
 * and points per user, from the payouts the locking read computed: the
 * batch's bets are not read again. The same statement takes the bets' open
 * payouts off (not below 0: bets placed before open_payout existed were
 * never added to it).
 */
static int batch_credit(struct router_txn *txn, const struct batch_bet *bets,
                        size_t nbet, const struct api_batch_user *u, size_t nuser,
                        const char *reason)
{
    struct sql_buf ledger = {0}, credit = {0}, why = {0};
    int rc = sql_buf_add_str(&why, reason, strlen(reason));

    for (size_t i = 0; i < nbet && rc == 0; i++) {
        if (bets[i].paid <= 0)
            continue;
        char row[4 * 24 + 24];
        int len = snprintf(
            row, sizeof(row), "%s(%" PRIu64 ",%" PRId64 ",%s,%" PRIu64 ")",
            ledger.len > 0 ? "," : "", bets[i].user, bets[i].paid, why.buf, bets[i].id);
        rc = len > 0 && (size_t)len < sizeof(row)
                 ? sql_buf_add(&ledger, row, (size_t)len)
                 : -EINVAL;
    }
    for (size_t i = 0; i < nuser && rc == 0; i++) {
        char row[4 * 24 + 8];
        int len = snprintf(
            row, sizeof(row), "%s(%" PRIu64 ",%" PRId64 ",%" PRId64 ",%" PRId64 ")",
            credit.len > 0 ? "," : "", u[i].id, u[i].paid, u[i].points, u[i].owed);
        rc = sql_buf_add(&credit, row, (size_t)len);
    }
    if (rc == 0 && ledger.len > 0)
        rc = router_txn_exec(txn, NULL,
                             "INSERT INTO %S.ledger (user_id, delta, reason, bet_id) "
                             "VALUES %R",
                             ledger.buf);
    if (rc == 0 && credit.len > 0)
        rc = router_txn_exec(
            txn, NULL,
            "UPDATE %S.users u JOIN (WITH v (id, p, pts, o) AS (VALUES %R) "
            "SELECT id, p, pts, o FROM v) b ON u.id = b.id SET u.balance = "
            "u.balance + b.p, u.points = u.points + b.pts, u.open_payout = "
            "GREATEST(u.open_payout - b.o, 0)",
            credit.buf);
    sql_buf_deinit(&ledger);
    sql_buf_deinit(&credit);
    sql_buf_deinit(&why);
    return rc;
}

/*
 * Settles the next open bets of the match on shard with ids above *after,
 * at most max_bets, in one transaction. A full batch moves *after to
 * its last bet. When fewer were left above a cursor, *after goes back to 0;
 * from 0, the same transaction inserts the shard's guard row and *last is
 * set, with *total the shard's bets of the match. *n: bets settled. Returns 0 or a
 * router status (nothing of the batch stays then, and *after is as it was).
 */
int api_settle_batch(struct router *r, uint64_t match, const char *res,
                     const char *reason, uint32_t shard, uint32_t max_bets,
                     uint64_t *after, uint64_t *n, int *last, uint64_t *total)
{
    struct sql_rows ids = {0}, rows = {0};
    struct batch_bet *bets = NULL;
    struct api_batch_user *users = NULL;
    size_t nuser = 0;
    struct router_txn *txn;
    uint64_t lo = 0, hi = 0, m = match, count = 0;
    int rc;

    *n = 0;
    *last = 0;
    *total = 0;
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
    rc = router_txn_exec(txn, &ids,
                         "SELECT id, user_id, stake, " PAYOUT ", " OWED
                         " FROM %S.bets FORCE INDEX "
                         "(match_bets) WHERE match_id = %u AND id > %u AND status = "
                         "'open' ORDER BY id LIMIT %u FOR UPDATE",
                         res, res, m, *after, (uint64_t)max_bets);
    if (rc == 0 && ids.nrow > 0) {
        lo = strtoull(sql_cell(&ids, 0, 0), NULL, 10);
        hi = strtoull(sql_cell(&ids, ids.nrow - 1, 0), NULL, 10);
        /*
         * The users first, in id order, as every transaction that locks
         * several does; then the ledger rows and the credits, and the
         * standings aggregates, from the payouts read with the locks.
         */
        rc = batch_read(&ids, &bets, &users, &nuser);
        if (rc == 0)
            rc = batch_lock_users(txn, users, nuser);
        if (rc == 0)
            rc = batch_credit(txn, bets, ids.nrow, users, nuser, reason);
        if (rc == 0)
            rc = api_standings_batch(txn, users, nuser);
    }
    /*
     * The bets last, over match_bets, the range this batch locked already
     * (over the primary key InnoDB would also lock the other matches' bets
     * with ids in [lo, hi] and wait for their writers). match_bets is
     * (match_id) alone: a settled bet's new status, payout and time are
     * written in its row only, with no index entry to delete and insert
     * (and purge later).
     */
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
    if (rc == 0 && *after > 0 && ids.nrow < max_bets) {
        /* Fewer were left after the cursor: the next batch looks from 0. */
        rc = router_txn_commit(txn);
        if (rc == 0) {
            *n = ids.nrow;
            *after = 0;
        }
        goto out;
    }
    if (rc == 0 && ids.nrow < max_bets) {
        /*
         * No open bet is left, and none can be written while this holds its
         * locks. The count is a plain read: a locking one would also lock
         * the next match's first bet in the index, while this holds users.
         */
        sql_rows_free(&rows);
        rc = router_txn_exec(txn, &rows,
                             "SELECT COUNT(*) FROM %S.bets WHERE match_id = %u", m);
        if (rc == 0) {
            count = strtoull(sql_cell(&rows, 0, 0), NULL, 10);
            rc = router_txn_exec(txn, NULL,
                                 "INSERT INTO %S.settled_matches (match_id, result, "
                                 "bets_settled) VALUES (%u, %s, %u)",
                                 m, res, count);
        }
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
        else
            *total = count;
    }
out:
    sql_rows_free(&ids);
    sql_rows_free(&rows);
    free(bets);
    free(users);
    if (rc < 0)
        *last = 0;
    return rc;
}
