/*
 * api_bets.c: placing bets and reading them back.
 *
 * A bet is one transaction on the user's shard: the balance is checked and
 * debited by one conditional UPDATE (so concurrent bets can never take it
 * below zero), and the bet, its ledger row and its idempotency record are
 * written with it. The match (global schema) is read before the
 * transaction; the shard's settled_matches row is read inside it with a
 * share lock, so a bet cannot slip in after its match was settled there.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "api/api_int.h"

#define BET_COLS                                                                       \
    "id, match_id, pick, stake, odds, status, payout, placed_at, settled_at"

static json_t *bet_json(struct sql_rows *rows, uint32_t r)
{
    return json_pack("{s:o,s:o,s:s,s:I,s:o,s:s,s:o,s:o,s:o}", "id",
                     api_id_json(strtoull(sql_cell(rows, r, 0), NULL, 10)), "match_id",
                     api_id_json(strtoull(sql_cell(rows, r, 1), NULL, 10)), "pick",
                     sql_cell(rows, r, 2), "stake",
                     (json_int_t)strtoll(sql_cell(rows, r, 3), NULL, 10), "odds",
                     api_odds_json(strtoll(sql_cell(rows, r, 4), NULL, 10)), "status",
                     sql_cell(rows, r, 5), "payout",
                     sql_cell(rows, r, 6)
                         ? json_integer(strtoll(sql_cell(rows, r, 6), NULL, 10))
                         : json_null(),
                     "placed_at", api_time_json(sql_cell(rows, r, 7)), "settled_at",
                     api_time_json(sql_cell(rows, r, 8)));
}

/* Replies with one bet of the caller (status), or 404. */
static void bet_reply(struct api_req *req, int status, uint64_t bet_id)
{
    struct sql_rows rows = {0};
    int rc =
        router_exec(req->router, router_shard_of_id(bet_id), &rows,
                    "SELECT " BET_COLS " FROM %S.bets WHERE id = %u AND user_id = %u",
                    bet_id, req->auth.user_id);

    if (rc == BC_ESHARD || (rc == 0 && rows.nrow == 0))
        api_error(req, 404, "not_found", "no such bet");
    else if (rc < 0)
        api_db_error(req, rc);
    else
        api_reply_json(req, status, bet_json(&rows, 0));
    sql_rows_free(&rows);
}

/*
 * The Idempotency-Key header into *key (NULL if absent): 0, or -EINVAL
 * after replying 422.
 */
static int idem_key(struct api_req *req, const char **key)
{
    const char *k =
        MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "Idempotency-Key");
    size_t n;

    *key = k;
    if (k == NULL)
        return 0;
    n = strlen(k);
    for (size_t i = 0; i < n; i++)
        if (k[i] < 0x20 || k[i] > 0x7e)
            n = 0;
    if (n < 1 || n > 64) {
        api_error(req, 422, "invalid_idempotency_key",
                  "Idempotency-Key must be 1 to 64 printable ASCII characters");
        return -EINVAL;
    }
    return 0;
}

/* Answers a repeated key: the same request gets its bet, another one 422. */
static void idem_replay(struct api_req *req, struct sql_rows *idem, const char *hash)
{
    if (strcmp(sql_cell(idem, 0, 0), hash) != 0) {
        api_error(req, 422, "idempotency_key_reused",
                  "this Idempotency-Key was used for another request");
        return;
    }
    bet_reply(req, 200, strtoull(sql_cell(idem, 0, 1), NULL, 10));
}

void api_h_bet_create(struct api_req *req)
{
    static const struct api_field spec[] = {{"match_id", API_T_ID, 1, 0},
                                            {"pick", API_T_ANY, 1, 0},
                                            {"stake", API_T_ANY, 1, 0},
                                            {NULL, 0, 0, 0}};
    static const char *const picks[3] = {"home", "draw", "away"};
    struct sql_rows idem = {0}, rows = {0};
    struct router_txn *txn = NULL;
    const char *key, *pick;
    uint64_t match_id, user = req->auth.user_id, bet_id;
    uint32_t shard = router_shard_of_id(user);
    unsigned char h[16];
    char hash[33], hin[96], placed[64];
    struct timespec now;
    struct tm tm;
    int64_t stake, odds = 0, kickoff_ms;
    json_t *body = req->json, *v, *m = NULL;
    int64_t move_deadline = 0;
    int lock_retries = 0;
    uint64_t seen = 0;
    int rc, p;

    if (api_body_check(req, spec) < 0 || idem_key(req, &key) < 0)
        return;
    match_id = api_id(body, "match_id", 0);
    pick = api_str(body, "pick", "");
    for (p = 0; p < 3 && strcmp(pick, picks[p]) != 0; p++)
        ;
    if (p == 3) {
        api_error(req, 422, "invalid_pick", "pick must be home, draw or away");
        goto out;
    }
    v = json_object_get(body, "stake");
    stake = json_is_integer(v) ? (int64_t)json_integer_value(v) : 0;
    if (stake < 1 || stake > 1000000000000LL) {
        api_error(req, 422, "invalid_stake",
                  "stake must be a whole number of Betcoins, at least 1");
        goto out;
    }
    /* The match comes from the cache: at a kick-off peak bets load the shards. */
    rc = api_match_cached(req, match_id, 1, &m);
    if (rc == BC_ENOTFOUND) {
        api_error(req, 404, "not_found", "no such match");
        goto out;
    }
    if (rc < 0)
        goto dberr;
    clock_gettime(CLOCK_REALTIME, &now);
    if (strcmp(api_str(m, "status", ""), "scheduled") != 0 ||
        api_time_parse(api_str(m, "kickoff", ""), placed, sizeof(placed), &kickoff_ms) <
            0 ||
        (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000 >= kickoff_ms) {
        api_error(req, 422, "betting_closed", "betting on this match is closed");
        goto out;
    }
    /* Odds the server itself stored: unreadable ones are its own fault (500). */
    if (api_odds_parse(json_object_get(json_object_get(m, "odds"), pick), &odds) < 0) {
        rc = BC_EQUERY;
        goto dberr;
    }

    snprintf(hin, sizeof(hin), "%" PRIu64 "|%s|%" PRId64, match_id, pick, stake);
    crypto_generichash(h, sizeof(h), (const unsigned char *)hin, strlen(hin), NULL, 0);
    sodium_bin2hex(hash, sizeof(hash), h, sizeof(h));
    gmtime_r(&now.tv_sec, &tm);
    snprintf(placed, sizeof(placed), "%04d-%02d-%02d %02d:%02d:%02d.%03ld",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
             tm.tm_sec, now.tv_nsec / 1000000);

again:
    seen = router_map_version(req->router);
    if ((rc = router_next_id(req->router, NULL, shard, &bet_id)) < 0)
        goto dberr;
    if ((rc = router_txn_begin(req->router, shard, &txn)) < 0)
        goto dberr;
    if (key != NULL) {
        rc = router_txn_exec(
            txn, &idem,
            "SELECT request_hash, bet_id FROM %S.idempotency WHERE user_id = "
            "%u AND idem_key = %s",
            user, key);
        if (rc < 0)
            goto dberr;
        if (idem.nrow == 1) {
            router_txn_rollback(txn);
            txn = NULL;
            idem_replay(req, &idem, hash);
            goto out;
        }
    }
    rc = router_txn_exec(txn, &rows,
                         "SELECT COUNT(*) FROM %S.settled_matches WHERE match_id = %u "
                         "LOCK IN SHARE MODE",
                         match_id);
    if (rc < 0)
        goto dberr;
    if (strcmp(sql_cell(&rows, 0, 0), "0") != 0) {
        api_error(req, 422, "betting_closed", "betting on this match is closed");
        goto out;
    }
    sql_rows_free(&rows);
    rc = router_txn_exec(txn, &rows,
                         "UPDATE %S.users SET balance = balance - %d WHERE id = %u AND "
                         "balance >= %d",
                         stake, user, stake);
    if (rc < 0)
        goto dberr;
    if (rows.affected == 0) {
        api_error(req, 422, "insufficient_balance",
                  "the stake is more than your balance");
        goto out;
    }
    /*
     * The bet, then its ledger row: two statements, as the API's account
     * sends one a call (no multi-statement text on its connections).
     */
    rc = router_txn_exec(txn, NULL,
                         "INSERT INTO %S.bets (id, user_id, match_id, pick, stake, "
                         "odds, placed_at) VALUES (%u, %u, %u, %s, %d, %d, %s)",
                         bet_id, user, match_id, pick, stake, odds, placed);
    if (rc == 0)
        rc = router_txn_exec(txn, NULL,
                             "INSERT INTO %S.ledger (user_id, delta, reason, bet_id) "
                             "VALUES (%u, %d, 'bet', %u)",
                             user, -stake, bet_id);
    if (rc == 0 && key != NULL)
        rc = router_txn_exec(
            txn, NULL,
            "INSERT INTO %S.idempotency (user_id, idem_key, request_hash, "
            "bet_id) VALUES (%u, %s, %s, %u)",
            user, key, hash, bet_id);
    if (rc == BC_EDUPKEY && key != NULL) {
        /* The same key won a race in another request: answer as it did. */
        router_txn_rollback(txn);
        txn = NULL;
        sql_rows_free(&idem);
        rc = router_exec(
            req->router, shard, &idem,
            "SELECT request_hash, bet_id FROM %S.idempotency WHERE user_id = %u "
            "AND idem_key = %s",
            user, key);
        if (rc < 0 || idem.nrow == 0)
            goto dberr;
        idem_replay(req, &idem, hash);
        goto out;
    }
    if (rc < 0)
        goto dberr;
    rc = router_txn_commit(txn);
    txn = NULL;
    if (rc < 0)
        goto dberr;
    api_reply_json(req, 201,
                   json_pack("{s:o,s:o,s:s,s:I,s:o,s:s,s:n,s:o,s:n}", "id",
                             api_id_json(bet_id), "match_id", api_id_json(match_id),
                             "pick", pick, "stake", (json_int_t)stake, "odds",
                             api_odds_json(odds), "status", "open", "payout",
                             "placed_at", api_time_json(placed), "settled_at"));
    goto out;
dberr:
    if (rc == BC_EMOVED && seen != 0 &&
        router_await_move(req->router, seen, &move_deadline) == 0) {
        /* The user's shard is being moved: the whole transaction again. */
        router_txn_rollback(txn);
        txn = NULL;
        sql_rows_free(&idem);
        sql_rows_free(&rows);
        goto again;
    }
    if (rc == BC_ELOCKWAIT && lock_retries++ < 3) {
        /*
         * A deadlock with a settlement batch on the same shard (InnoDB rolled
         * this transaction back whole): nothing was written, so run it again.
         */
        router_txn_rollback(txn);
        txn = NULL;
        sql_rows_free(&idem);
        sql_rows_free(&rows);
        goto again;
    }
    api_db_error(req, rc < 0 ? rc : BC_EQUERY);
out:
    router_txn_rollback(txn);
    json_decref(m);
    sql_rows_free(&idem);
    sql_rows_free(&rows);
}

void api_h_bet_get(struct api_req *req)
{
    bet_reply(req, 200, req->param[0]);
}

void api_h_my_bets(struct api_req *req)
{
    const char *status = api_query(req, "status");
    struct sql_rows rows = {0};
    uint64_t cursor;
    json_t *items;
    int limit, rc;

    if (api_limit(req, &limit) < 0 || api_cursor(req, &cursor) < 0)
        return;
    if (status != NULL && strcmp(status, "open") != 0 && strcmp(status, "won") != 0 &&
        strcmp(status, "lost") != 0 && strcmp(status, "void") != 0) {
        api_error(req, 400, "invalid_parameter",
                  "status must be open, won, lost or void");
        return;
    }
    rc = router_exec(
        req->router, router_shard_of_id(req->auth.user_id), &rows,
        "SELECT " BET_COLS " FROM %S.bets WHERE user_id = %u AND (%s IS NULL OR "
        "status = %s) AND (%u = 0 OR id < %u) ORDER BY id DESC LIMIT %d",
        req->auth.user_id, status, status, cursor, cursor, (int64_t)limit + 1);
    if (rc < 0) {
        api_db_error(req, rc);
        return;
    }
    items = json_array();
    for (uint32_t i = 0; i < rows.nrow && i < (uint32_t)limit; i++)
        json_array_append_new(items, bet_json(&rows, i));
    api_reply_json(req, 200,
                   json_pack("{s:o,s:o}", "items", items, "next_cursor",
                             api_cursor_json(
                                 rows.nrow > (uint32_t)limit
                                     ? strtoull(sql_cell(&rows, limit - 1, 0), NULL, 10)
                                     : 0,
                                 rows.nrow > (uint32_t)limit)));
    sql_rows_free(&rows);
}
