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
 *
 * The shards are settled by a job of the server that took the result
 * (api_jobs.c): one per match and server, asked to stop between shards and
 * joined when the server is destroyed. A shard it did not reach is settled
 * when the result is posted again, on any server.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_int.h"
#include "catalog/catalog.h"

/*
 * ---- the settlement job's record ----
 * The settlements table is the catalog's (catalog/catalog.h): the job's
 * result, state and progress go through it. Each returns 0 or a status.
 */

/* Records the result to settle, in the caller's transaction on the matches. */
static int settlement_insert(struct router *r, struct router_txn *txn, uint64_t match,
                             const char *result)
{
    /* The router's catalog, its statements sent inside txn instead. */
    struct catalog cat = *router_catalog(r);

    router_txn_executor(txn, &cat.exec);
    return catalog_settlement_create(&cat, match, result, router_nshard(r));
}

/* The job of match into st; BC_ENOTFOUND without one. */
static int settlement_get(struct router *r, uint64_t match,
                          struct catalog_settlement *st)
{
    int rc = catalog_settlement_get(router_catalog(r), match, st);

    return rc == 0 ? BC_ENOTFOUND : rc < 0 ? rc : 0;
}

/* The settlement as the API shows it (caller decrefs); NULL without one. */
static int settlement_load(struct router *r, uint64_t match, json_t **out)
{
    struct catalog_settlement st;
    int rc = settlement_get(r, match, &st);

    *out = NULL;
    if (rc == BC_ENOTFOUND)
        return 0;
    if (rc < 0)
        return rc;
    *out = json_pack("{s:o,s:s,s:s,s:I,s:I,s:I}", "match_id", api_id_json(match),
                     "result", st.result, "state", st.state, "shards_total",
                     (json_int_t)st.shards_total, "shards_done",
                     (json_int_t)st.shards_done, "bets_settled",
                     (json_int_t)st.bets_settled);
    return *out == NULL ? -ENOMEM : 0;
}

/* ---- settling the shards ---- */

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
    return catalog_settlement_progress(router_catalog(r), match, (uint32_t)shards, bets,
                                       *done);
}

/*
 * A settlement job of the server (api_jobs.c): settles the shards in turn,
 * stopping between two when the server is destroyed; a shard left undone
 * waits for the result to be posted again.
 */
static void settle_main(struct api_job *job, uint64_t match, void *arg)
{
    struct api_server *srv = arg;
    struct router *r = api_server_router(srv);
    struct cache *cache = api_server_conf(srv)->cache;
    struct catalog_settlement st;
    const char *result = st.result;
    int rc, done = 0;

    if (settlement_get(r, match, &st) < 0) {
        api_log("settlement %" PRIu64 ": cannot read it: %s", match,
                router_last_error());
        return;
    }
    for (uint32_t s = 0; s < router_nshard(r) && !api_job_stopping(job); s++) {
        uint64_t n = 0;
        /* A host may be briefly down: a few tries, then leave it for a re-post. */
        for (int attempt = 0; attempt < 5; attempt++) {
            rc = settle_shard(r, s, match, result, &n);
            if (rc == 0 || api_job_stopping(job))
                break;
            api_job_sleep(job, 200u << attempt);
        }
        if (rc < 0) {
            api_log("settlement %" PRIu64
                    ": shard %u failed: %s; re-post the result to resume",
                    match, s, router_last_error());
            break;
        }
        if (n > 0 || s % 16 == 15)
            catalog_settlement_advance(router_catalog(r), match, 1, n);
    }
    if (settle_count(r, match, &done) < 0)
        api_log("settlement %" PRIu64 ": cannot count progress: %s", match,
                router_last_error());
    if (done && !api_job_stopping(job)) {
        api_log("settlement %" PRIu64 ": done; recomputing standings", match);
        /* Standings and profiles (points) change: one generation bump. */
        if (api_standings_recompute(r) == 0 && cache != NULL)
            cache_bump(cache, "standings");
    }
}

/* Runs the settlement in the background unless this server runs it already. */
static void settle_start(struct api_req *req, uint64_t match)
{
    int rc = api_jobs_start(api_server_jobs(req->srv), match, settle_main, req->srv);

    if (rc == -EAGAIN)
        api_log("settlement %" PRIu64 ": too many running; re-post later", match);
    else if (rc < 0 && rc != BC_EEXISTS)
        api_log("settlement %" PRIu64 ": cannot start: %s; re-post later", match,
                bc_strerror(rc));
}

static void settlement_reply(struct api_req *req, int status, uint64_t match)
{
    json_t *body;
    int rc = settlement_load(req->router, match, &body);

    if (rc < 0)
        api_db_error(req, rc);
    else if (body == NULL)
        api_error(req, 404, "not_found", "no result posted for this match");
    else
        api_reply_json(req, status, body);
}

void api_h_settlement_get(struct api_req *req)
{
    settlement_reply(req, 200, req->param[0]);
}

void api_h_result_post(struct api_req *req)
{
    static const struct api_field spec[] = {{"home_goals", API_T_INT, 0, 0},
                                            {"away_goals", API_T_INT, 0, 0},
                                            {"cancelled", API_T_BOOL, 0, 0},
                                            {NULL, 0, 0, 0}};
    struct sql_rows m = {0};
    struct router_txn *txn = NULL;
    uint64_t match = req->param[0];
    int64_t hg, ag;
    struct catalog_settlement st;
    int cancelled, rc;
    const char *result;
    json_t *body = req->json;

    if (api_body_check(req, spec) < 0)
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
            rc = settlement_insert(req->router, txn, match, result);
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
        /* The same result again: resume a settlement that did not finish. */
        if ((rc = settlement_get(req->router, match, &st)) < 0 && rc != BC_ENOTFOUND)
            goto dberr;
        if (rc == 0 && strcmp(st.state, "done") == 0) {
            settlement_reply(req, 202, match);
            goto out;
        }
    }
    settle_start(req, match);
    settlement_reply(req, 202, match);
    goto out;
dberr:
    api_db_error(req, rc);
out:
    router_txn_rollback(txn);
    sql_rows_free(&m);
}
