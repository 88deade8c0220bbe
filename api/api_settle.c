/*
 * api_settle.c: posting a result, and the settlement as the API shows it.
 *
 * The result is recorded in one global transaction: the match finished or
 * cancelled, and the settlement's job row (the catalog's settlements).
 * Then the local settler is woken; it, or any server's settler, claims the
 * job and settles every shard in batches (api_settle_job.c), and a server
 * that dies meanwhile is replaced when its lease runs out. Posting the same
 * result again changes nothing: 202 with the job as it is.
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
    *out = json_pack(
        "{s:o,s:s,s:s,s:I,s:I,s:I,s:I}", "match_id", api_id_json(match), "result",
        st.result, "state", st.state, "shards_total", (json_int_t)st.shards_total,
        "shards_done", (json_int_t)st.shards_done, "bets_total",
        (json_int_t)st.bets_total, "bets_settled", (json_int_t)st.bets_settled);
    return *out == NULL ? -ENOMEM : 0;
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
        /*
         * The same result again: the job runs by itself. A match finished
         * before settlements were jobs may have none: record it now.
         */
        if ((rc = settlement_get(req->router, match, &st)) == BC_ENOTFOUND) {
            rc = catalog_settlement_create(router_catalog(req->router), match, result,
                                           router_nshard(req->router));
            if (rc == BC_EDUPKEY)
                rc = 0;
        }
        if (rc < 0)
            goto dberr;
    }
    api_settler_wake(api_server_settler(req->srv));
    settlement_reply(req, 202, match);
    goto out;
dberr:
    api_db_error(req, rc);
out:
    router_txn_rollback(txn);
    sql_rows_free(&m);
}
