/*
 * api_settle.c: posting a result and settling it on every shard, exactly once.
 *
 * The result is recorded first (match finished/cancelled and a settlements
 * row, in one global transaction), then every shard settles its part in one
 * transaction of its own, which starts by inserting the shard's
 * settled_matches row. That row is the guard: a shard that committed it is
 * never settled again, so re-running after a crash (a killed server, a dead
 * host) settles each bet exactly once. Bets read the same row with a share
 * lock, so a bet racing the settlement either commits before it (and is
 * settled) or sees the row and is refused.
 *
 * Progress (shards_done, bets_settled) is counted from the shards' guard
 * rows, so it is right after any crash too. When every shard is done the
 * standings are recomputed.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "api/api_int.h"

#define MAX_RUNNING 64

static pthread_mutex_t running_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_int nrunning, stopping;
static uint64_t running[MAX_RUNNING];

struct settle_job {
    struct router *router; /* ref */
    struct cache *cache;   /* ref, may be NULL */
    uint64_t match_id;
};

/* Settles one shard; 0 done now or before, else a router status. */
static int settle_shard_once(struct router *r, uint32_t shard, uint64_t match,
                             const char *result, uint64_t *nbets)
{
    struct router_txn *txn;
    struct sql_rows rows = {0};
    int rc;

    *nbets = 0;
    if ((rc = router_txn_begin(r, shard, &txn)) < 0)
        return rc;
    rc = router_txn_exec(
        txn, NULL,
        "INSERT INTO %S.settled_matches (match_id, result, bets_settled) "
        "VALUES (%u, %s, 0)",
        match, result);
    if (rc == BC_EDUPKEY) {
        router_txn_rollback(txn);
        return 0; /* settled before */
    }
    if (rc == 0)
        rc = router_txn_exec(txn, &rows,
                             "UPDATE %S.bets SET status = CASE WHEN %s = 'cancelled' "
                             "THEN 'void' WHEN pick = %s "
                             "THEN 'won' ELSE 'lost' END, payout = CASE WHEN %s = "
                             "'cancelled' THEN stake WHEN "
                             "pick = %s THEN FLOOR(stake * odds / 100) ELSE 0 END, "
                             "settled_at = NOW(3) WHERE "
                             "match_id = %u AND status = 'open'",
                             result, result, result, result, match);
    *nbets = rows.affected;
    if (rc == 0 && *nbets > 0)
        rc = router_txn_exec(
            txn, NULL,
            "INSERT INTO %S.ledger (user_id, delta, reason, bet_id) SELECT "
            "user_id, payout, IF(status = 'void', 'refund', 'payout'), id "
            "FROM %S.bets WHERE match_id = %u AND payout > 0",
            match);
    if (rc == 0 && *nbets > 0)
        rc = router_txn_exec(
            txn, NULL,
            "UPDATE %S.users u JOIN (SELECT user_id, SUM(payout) AS p, "
            "SUM(payout - stake) AS pts FROM %S.bets WHERE match_id = %u "
            "GROUP BY user_id) b ON u.id = b.user_id SET u.balance = "
            "u.balance + b.p, u.points = u.points + b.pts",
            match);
    if (rc == 0)
        rc = router_txn_exec(
            txn, NULL,
            "UPDATE %S.settled_matches SET bets_settled = %u WHERE match_id = %u",
            *nbets, match);
    if (rc < 0) {
        router_txn_rollback(txn);
        return rc;
    }
    sql_rows_free(&rows);
    return router_txn_commit(txn);
}

/* settle_shard_once(), again on the shard's new host when a move fenced it. */
static int settle_shard(struct router *r, uint32_t shard, uint64_t match,
                        const char *result, uint64_t *nbets)
{
    int64_t deadline = 0;
    uint64_t seen;
    int rc;

    do {
        seen = router_map_version(r);
        rc = settle_shard_once(r, shard, match, result, nbets);
    } while (rc == BC_EMOVED && router_await_move(r, seen, &deadline) == 0);
    return rc;
}

/* Recounts progress from the shards' guard rows; sets *done when complete. */
static int settle_count(struct router *r, uint64_t match, int *done)
{
    struct sql_rows rows = {0};
    uint64_t shards = 0, bets = 0;
    int rc;

    rc = router_scatter(r, &rows,
                        "SELECT COUNT(*), COALESCE(SUM(bets_settled), 0) FROM "
                        "%S.settled_matches WHERE match_id = %u",
                        match);
    if (rc < 0)
        return rc;
    for (uint32_t i = 0; i < rows.nrow; i++) {
        shards += strtoull(sql_cell(&rows, i, 0), NULL, 10);
        bets += strtoull(sql_cell(&rows, i, 1), NULL, 10);
    }
    sql_rows_free(&rows);
    *done = shards == router_nshard(r);
    return router_exec(
        r, ROUTER_GLOBAL, NULL,
        "UPDATE %S.settlements SET shards_done = %u, bets_settled = %u, state = "
        "IF(%d, 'done', 'running'), finished_at = IF(%d, NOW(3), NULL) WHERE "
        "match_id = %u",
        shards, bets, (int64_t)*done, (int64_t)*done, match);
}

static void settle_run(struct router *r, struct cache *cache, uint64_t match)
{
    struct sql_rows rows = {0};
    char result[16];
    int rc, done = 0;

    rc = router_exec(r, ROUTER_GLOBAL, &rows,
                     "SELECT result FROM %S.settlements WHERE match_id = %u", match);
    if (rc < 0 || rows.nrow == 0) {
        api_log("settlement %" PRIu64 ": cannot read it: %s", match,
                router_last_error());
        sql_rows_free(&rows);
        return;
    }
    snprintf(result, sizeof(result), "%s", sql_cell(&rows, 0, 0));
    sql_rows_free(&rows);
    for (uint32_t s = 0; s < router_nshard(r) && !atomic_load(&stopping); s++) {
        uint64_t n = 0;
        /* A host may be briefly down: a few tries, then leave it for a re-post. */
        for (int attempt = 0; attempt < 5; attempt++) {
            rc = settle_shard(r, s, match, result, &n);
            if (rc == 0)
                break;
            usleep(200000u << attempt);
        }
        if (rc < 0) {
            api_log("settlement %" PRIu64
                    ": shard %u failed: %s; re-post the result to resume",
                    match, s, router_last_error());
            break;
        }
        if (n > 0 || s % 16 == 15)
            router_exec(r, ROUTER_GLOBAL, NULL,
                        "UPDATE %S.settlements SET shards_done = LEAST(shards_total, "
                        "shards_done + 1), bets_settled = bets_settled + %u WHERE "
                        "match_id = %u "
                        "AND state = 'running'",
                        n, match);
    }
    if (settle_count(r, match, &done) < 0)
        api_log("settlement %" PRIu64 ": cannot count progress: %s", match,
                router_last_error());
    if (done && !atomic_load(&stopping)) {
        api_log("settlement %" PRIu64 ": done; recomputing standings", match);
        /* Standings and profiles (points) change: one generation bump. */
        if (api_standings_recompute(r) == 0 && cache != NULL)
            cache_bump(cache, "standings");
    }
}

static void *settle_main(void *arg)
{
    struct settle_job *job = arg;

    settle_run(job->router, job->cache, job->match_id);
    atomic_fetch_sub(&nrunning, 1);
    pthread_mutex_lock(&running_lock);
    for (int i = 0; i < MAX_RUNNING; i++)
        if (running[i] == job->match_id)
            running[i] = 0;
    pthread_mutex_unlock(&running_lock);
    free(job);
    return NULL;
}

/* Runs the settlement in the background unless this server runs it already. */
static void settle_start(struct router *r, struct cache *cache, uint64_t match)
{
    struct settle_job *job;
    pthread_t t;
    int slot = -1;

    pthread_mutex_lock(&running_lock);
    for (int i = 0; i < MAX_RUNNING; i++) {
        if (running[i] == match) {
            pthread_mutex_unlock(&running_lock);
            return;
        }
        if (running[i] == 0 && slot < 0)
            slot = i;
    }
    if (slot >= 0)
        running[slot] = match;
    pthread_mutex_unlock(&running_lock);
    if (slot < 0) {
        api_log("settlement %" PRIu64 ": too many running; re-post later", match);
        return;
    }
    job = malloc(sizeof(*job));
    if (job != NULL) {
        job->router = r;
        job->cache = cache;
        job->match_id = match;
        atomic_fetch_add(&nrunning, 1);
        if (pthread_create(&t, NULL, settle_main, job) == 0) {
            pthread_detach(t);
            return;
        }
        atomic_fetch_sub(&nrunning, 1);
        free(job);
    }
    pthread_mutex_lock(&running_lock);
    running[slot] = 0;
    pthread_mutex_unlock(&running_lock);
}

static json_t *settlement_json(struct sql_rows *rows)
{
    return json_pack(
        "{s:o,s:s,s:s,s:I,s:I,s:I}", "match_id",
        api_id_json(strtoull(sql_cell(rows, 0, 0), NULL, 10)), "result",
        sql_cell(rows, 0, 1), "state", sql_cell(rows, 0, 2), "shards_total",
        (json_int_t)strtoll(sql_cell(rows, 0, 3), NULL, 10), "shards_done",
        (json_int_t)strtoll(sql_cell(rows, 0, 4), NULL, 10), "bets_settled",
        (json_int_t)strtoll(sql_cell(rows, 0, 5), NULL, 10));
}

static void settlement_reply(struct api_req *req, int status, uint64_t match)
{
    struct sql_rows rows = {0};
    int rc = router_exec(req->router, ROUTER_GLOBAL, &rows,
                         "SELECT match_id, result, state, shards_total, shards_done, "
                         "bets_settled FROM %S.settlements WHERE match_id = %u",
                         match);

    if (rc < 0)
        api_db_error(req, rc);
    else if (rows.nrow == 0)
        api_error(req, 404, "not_found", "no result posted for this match");
    else
        api_reply_json(req, status, settlement_json(&rows));
    sql_rows_free(&rows);
}

void api_h_settlement_get(struct api_req *req)
{
    if (api_check_platform_admin(req) < 0)
        return;
    settlement_reply(req, 200, req->param[0]);
}

void api_h_result_post(struct api_req *req)
{
    static const struct api_field spec[] = {{"home_goals", API_T_INT, 0, 0},
                                            {"away_goals", API_T_INT, 0, 0},
                                            {"cancelled", API_T_BOOL, 0, 0},
                                            {NULL, 0, 0, 0}};
    struct sql_rows m = {0}, s = {0};
    struct router_txn *txn = NULL;
    uint64_t match = req->param[0];
    int64_t hg, ag;
    int cancelled, rc;
    const char *result;
    json_t *body;

    if (api_check_platform_admin(req) < 0)
        return;
    if ((body = api_body(req, spec)) == NULL)
        return;
    cancelled = json_is_true(json_object_get(body, "cancelled"));
    hg = api_int(body, "home_goals", -1);
    ag = api_int(body, "away_goals", -1);
    if (cancelled ? (api_has(body, "home_goals") || api_has(body, "away_goals"))
                  : (!api_has(body, "home_goals") || !api_has(body, "away_goals"))) {
        api_error(req, 400, "invalid_field",
                  "send either home_goals and away_goals, or cancelled: true");
        goto out;
    }
    if (!cancelled && (hg < 0 || hg > 99 || ag < 0 || ag > 99)) {
        api_error(req, 422, "invalid_score", "goals must be integers from 0 to 99");
        goto out;
    }
    result = cancelled ? "cancelled" : hg > ag ? "home" : hg == ag ? "draw" : "away";
    if ((rc = router_txn_begin(req->router, ROUTER_GLOBAL, &txn)) < 0)
        goto dberr;
    rc = router_txn_exec(
        txn, &m,
        "SELECT status, home_goals, away_goals, kickoff <= UTC_TIMESTAMP(3) "
        "FROM %S.matches WHERE id = %u FOR UPDATE",
        match);
    if (rc < 0)
        goto dberr;
    if (m.nrow == 0) {
        api_error(req, 404, "not_found", "no such match");
        goto out;
    }
    if (strcmp(sql_cell(&m, 0, 0), "scheduled") == 0) {
        if (!cancelled && strcmp(sql_cell(&m, 0, 3), "1") != 0) {
            api_error(req, 422, "betting_open",
                      "a score can be posted only after kickoff");
            goto out;
        }
        rc = router_txn_exec(
            txn, NULL,
            "UPDATE %S.matches SET status = %s, home_goals = IF(%d, NULL, %d), "
            "away_goals = IF(%d, NULL, %d) WHERE id = %u",
            cancelled ? "cancelled" : "finished", (int64_t)cancelled, hg,
            (int64_t)cancelled, ag, match);
        if (rc == 0)
            rc = router_txn_exec(
                txn, NULL,
                "INSERT INTO %S.settlements (match_id, result, shards_total) "
                "VALUES (%u, %s, %u)",
                match, result, (uint64_t)router_nshard(req->router));
        if (rc < 0)
            goto dberr;
        rc = router_txn_commit(txn);
        txn = NULL;
        if (rc < 0)
            goto dberr;
        api_match_changed(req, match);
        api_log("match %" PRIu64 ": result %s posted; settling", match, result);
    } else {
        int same = cancelled ? strcmp(sql_cell(&m, 0, 0), "cancelled") == 0
                             : strcmp(sql_cell(&m, 0, 0), "finished") == 0 &&
                                   sql_cell(&m, 0, 1) != NULL &&
                                   atoi(sql_cell(&m, 0, 1)) == hg &&
                                   atoi(sql_cell(&m, 0, 2)) == ag;
        router_txn_rollback(txn);
        txn = NULL;
        if (!same) {
            api_error(req, 409, "result_conflict",
                      "another result was posted for this match");
            goto out;
        }
        rc = router_exec(req->router, ROUTER_GLOBAL, &s,
                         "SELECT state FROM %S.settlements WHERE match_id = %u", match);
        if (rc < 0)
            goto dberr;
        if (s.nrow == 1 && strcmp(sql_cell(&s, 0, 0), "done") == 0) {
            settlement_reply(req, 202, match);
            goto out;
        }
    }
    settle_start(req->router, req->cache, match);
    settlement_reply(req, 202, match);
    goto out;
dberr:
    api_db_error(req, rc);
out:
    router_txn_rollback(txn);
    sql_rows_free(&m);
    sql_rows_free(&s);
    json_decref(body);
}

void api_settle_stop(void)
{
    /* Shards not settled yet stay for a re-post; wait for the shard in hand. */
    atomic_store(&stopping, 1);
    for (int i = 0; i < 3000 && atomic_load(&nrunning) > 0; i++)
        usleep(10000);
}
