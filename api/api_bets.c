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

/*
 * The bet in columns c.. of row r (BET_COLS). An open bet's row holds
 * placeholders for its payout and settlement time (etc/schema/shard.sql):
 * both are null until it is settled.
 */
static json_t *bet_json(struct sql_rows *rows, uint32_t r, uint32_t c)
{
    int open = strcmp(sql_cell(rows, r, c + 5), "open") == 0;

    return json_pack("{s:o,s:o,s:s,s:I,s:o,s:s,s:o,s:o,s:o}", "id",
                     api_id_json(strtoull(sql_cell(rows, r, c + 0), NULL, 10)),
                     "match_id",
                     api_id_json(strtoull(sql_cell(rows, r, c + 1), NULL, 10)), "pick",
                     sql_cell(rows, r, c + 2), "stake",
                     (json_int_t)strtoll(sql_cell(rows, r, c + 3), NULL, 10), "odds",
                     api_odds_json(strtoll(sql_cell(rows, r, c + 4), NULL, 10)),
                     "status", sql_cell(rows, r, c + 5), "payout",
                     !open && sql_cell(rows, r, c + 6)
                         ? json_integer(strtoll(sql_cell(rows, r, c + 6), NULL, 10))
                         : json_null(),
                     "placed_at", api_time_json(sql_cell(rows, r, c + 7)), "settled_at",
                     api_time_json(open ? NULL : sql_cell(rows, r, c + 8)));
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
        api_reply_json(req, status, bet_json(&rows, 0, 0));
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

/* What a bet sends: checked, with the match's odds and the time it is placed. */
struct bet_in {
    uint64_t match_id;
    const char *pick, *key; /* the body's, the header's: the request's */
    int64_t stake, odds;
    char hash[33], placed[64];
};

/*
 * The bet's transaction in one round trip: the shard's place_bet procedure
 * (etc/schema/shard.sql) checks the key, the settlement and the balance and
 * writes the bet, its ledger row and the key's record, or rolls back. Its
 * answer row: outcome, a replay's request hash, then the bet (BET_COLS).
 */
#define BET_CALL "CALL %S.place_bet(%u, %N, %u, %u, %s, %d, %d, %s, %s, %s)"
#define BET_ARGS(req, b)                                                               \
    (uint64_t) SHARDMAP_ID_EPOCH_MS, (req)->auth.user_id, (b)->match_id, (b)->pick,    \
        (b)->stake, (b)->odds, (b)->placed, (b)->key,                                  \
        (b)->key != NULL ? (b)->hash : NULL

/* The request's hash, which a replay of its Idempotency-Key must match. */
static void bet_hash(uint64_t match_id, const char *pick, int64_t stake, char hash[33])
{
    unsigned char h[16];
    char hin[96];

    snprintf(hin, sizeof(hin), "%" PRIu64 "|%s|%" PRId64, match_id, pick, stake);
    crypto_generichash(h, sizeof(h), (const unsigned char *)hin, strlen(hin), NULL, 0);
    sodium_bin2hex(hash, 33, h, sizeof(h));
}

/*
 * A bet sent again with its Idempotency-Key (its answer was lost) gets the
 * bet it made, or idempotency_key_reused, whatever has changed since: the
 * odds, or betting closed at the kick-off. 1 when it answered (so, or with
 * the database's error), 0 when the request has no key or made no bet: the
 * caller refuses it. One statement on the user's shard: a worker's.
 */
static int bet_replayed(struct api_req *req, const struct bet_in *b)
{
    struct sql_rows idem = {0};
    int rc, answered = 1;

    if (b->key == NULL)
        return 0;
    rc = router_exec(req->router, router_shard_of_id(req->auth.user_id), &idem,
                     "SELECT request_hash, bet_id FROM %S.idempotency WHERE user_id = "
                     "%u AND idem_key = %s",
                     req->auth.user_id, b->key);
    if (rc < 0)
        api_db_error(req, rc);
    else if (idem.nrow == 1)
        idem_replay(req, &idem, b->hash);
    else
        answered = 0;
    sql_rows_free(&idem);
    return answered;
}

/* Betting on the match is closed: a replay apart, the bet is refused. */
static void bet_closed(struct api_req *req, const struct bet_in *b)
{
    if (!bet_replayed(req, b))
        api_error(req, 422, "betting_closed", "betting on this match is closed");
}

/*
 * The bet names other odds than the match's (expected): a replay apart (its
 * first try named the odds of then), the client is told to read them again.
 */
static void bet_odds_changed(struct api_req *req, const struct bet_in *b,
                             int64_t expected)
{
    if (bet_replayed(req, b))
        return;
    api_error(req, 409, "odds_changed",
              "the odds of %s are %" PRId64 ".%02" PRId64 " now, not %" PRId64
              ".%02" PRId64 ": read the odds again and bet at them",
              b->pick, b->odds / 100, b->odds % 100, expected / 100, expected % 100);
}

/*
 * Checks the body and the match and fills b: 0, 1 when it answered (a 4xx,
 * or a 503 of the database), or, on the event loop (near), 2 when the
 * bet names its odds, the match is not in this server's near-cache, or it
 * is closed to a bet with an Idempotency-Key (a worker reads them).
 */
static int bet_prepare(struct api_req *req, int near, struct bet_in *b)
{
    static const struct api_field spec[] = {{"match_id", API_T_ID, 1, 0},
                                            {"pick", API_T_ANY, 1, 0},
                                            {"stake", API_T_ANY, 1, 0},
                                            {"odds", API_T_ANY, 0, 0}, /* 422 below */
                                            {NULL, 0, 0, 0}};
    static const char *const picks[3] = {"home", "draw", "away"};
    struct timespec now;
    struct tm tm;
    int64_t kickoff_ms, expected = 0;
    json_t *body = req->json, *v, *m = NULL;
    int rc = 1, p;

    if (api_body_check(req, spec) < 0 || idem_key(req, &b->key) < 0)
        return 1;
    b->match_id = api_id(body, "match_id", 0);
    b->pick = api_str(body, "pick", "");
    for (p = 0; p < 3 && strcmp(b->pick, picks[p]) != 0; p++)
        ;
    if (p == 3) {
        api_error(req, 422, "invalid_pick", "pick must be home, draw or away");
        return 1;
    }
    v = json_object_get(body, "stake");
    b->stake = json_is_integer(v) ? (int64_t)json_integer_value(v) : 0;
    if (b->stake < 1 || b->stake > 1000000000000LL) {
        api_error(req, 422, "invalid_stake",
                  "stake must be a whole number of Betcoins from 1 to 1000000000000");
        return 1;
    }
    /* The odds the client bets at, if it says: another price is refused. */
    if ((v = json_object_get(body, "odds")) != NULL &&
        api_odds_parse(v, &expected) < 0) {
        api_error(req, 422, "invalid_odds",
                  "odds must be a number of at most two decimals from 1.01 to 1000");
        return 1;
    }
    /*
     * The match comes from the cache: at a kick-off peak bets load the shards.
     * This server's own copy (the near-cache) is up to a second old: a bet
     * that names its odds is checked against memcached, whose entry a change
     * deletes before it is answered, or the database (on a worker).
     */
    if (near && expected != 0)
        return 2;
    if (near) {
        if (!api_match_near(req, b->match_id, &m))
            return 2;
    } else if ((rc = api_match_cached(req, b->match_id, expected == 0, &m)) < 0) {
        if (rc == BC_ENOTFOUND)
            api_error(req, 404, "not_found", "no such match");
        else
            api_db_error(req, rc);
        return 1;
    }
    rc = 1;
    bet_hash(b->match_id, b->pick, b->stake, b->hash);
    clock_gettime(CLOCK_REALTIME, &now);
    if (strcmp(api_str(m, "status", ""), "scheduled") != 0 ||
        api_time_parse(api_str(m, "kickoff", ""), b->placed, sizeof(b->placed),
                       &kickoff_ms) < 0 ||
        (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000 >= kickoff_ms) {
        if (near && b->key != NULL)
            rc = 2;
        else
            bet_closed(req, b);
    } else if (api_odds_parse(json_object_get(json_object_get(m, "odds"), b->pick),
                              &b->odds) < 0) {
        /* Odds the server itself stored: unreadable ones are its own fault (500). */
        api_db_error(req, BC_EQUERY);
    } else if (expected != 0 && expected != b->odds) {
        /* As for a closed match: a key's lookup is a worker's (near: not yet). */
        if (near && b->key != NULL)
            rc = 2;
        else
            bet_odds_changed(req, b, expected);
    } else {
        rc = 0;
    }
    json_decref(m);
    if (rc != 0)
        return rc;
    gmtime_r(&now.tv_sec, &tm);
    snprintf(b->placed, sizeof(b->placed), "%04d-%02d-%02d %02d:%02d:%02d.%03ld",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
             tm.tm_sec, now.tv_nsec / 1000000);
    return 0;
}

/* Answers place_bet's row, or the status it ended with. */
static void bet_answer(struct api_req *req, const char *hash, int rc,
                       struct sql_rows *rows)
{
    const char *outcome;

    if (rc < 0) {
        api_db_error(req, rc);
        return;
    }
    outcome = rows->nrow == 1 && rows->ncol >= 1 ? sql_cell(rows, 0, 0) : NULL;
    if (outcome != NULL && strcmp(outcome, "closed") == 0) {
        api_error(req, 422, "betting_closed", "betting on this match is closed");
    } else if (outcome != NULL && strcmp(outcome, "balance") == 0) {
        api_error(req, 422, "insufficient_balance",
                  "the stake is more than your balance");
    } else if (outcome != NULL && strcmp(outcome, "limit") == 0) {
        api_error(req, 422, "balance_limit",
                  "your balance and what your open bets can pay would pass "
                  "1000000000000 Betcoins with this bet");
    } else if (outcome != NULL && rows->ncol == 11 && strcmp(outcome, "replay") == 0) {
        if (strcmp(sql_cell(rows, 0, 1), hash) != 0)
            api_error(req, 422, "idempotency_key_reused",
                      "this Idempotency-Key was used for another request");
        else
            api_reply_json(req, 200, bet_json(rows, 0, 2));
    } else if (outcome != NULL && rows->ncol == 11 && strcmp(outcome, "placed") == 0) {
        api_reply_json(req, 201, bet_json(rows, 0, 2));
    } else {
        api_log("bet of user %" PRIu64 ": place_bet answered %u rows of %u columns",
                req->auth.user_id, rows->nrow, rows->ncol);
        api_db_error(req, BC_EQUERY);
    }
}
/*
 * Its statement ended on the event loop (api_loop_query()). A lock wait or
 * deadlock (rolled back whole) and a key that won a race meanwhile are the
 * worker's: it retries the one and replays the other (0).
 */
static int bet_done(struct api_req *req, int rc, struct sql_rows *rows)
{
    char hash[33];
    json_t *v = json_object_get(req->json, "stake");

    if (rc == BC_ELOCKWAIT || rc == BC_EDUPKEY)
        return 0;
    bet_hash(api_id(req->json, "match_id", 0), api_str(req->json, "pick", ""),
             json_is_integer(v) ? (int64_t)json_integer_value(v) : 0, hash);
    bet_answer(req, hash, rc, rows);
    return 1;
}

/*
 * POST /v1/bets (API_READS_LOOP): on the event loop when the match is in
 * the near-cache and a connection is idle (its one statement there), else
 * on a worker.
 */
void api_h_bet_create(struct api_req *req)
{
    struct sql_rows rows = {0};
    uint32_t shard = router_shard_of_id(req->auth.user_id);
    struct bet_in b;
    int lock_retries = 0, rc;

    if (req->where == API_ON_LOOP && api_loop_self() != NULL) {
        if (bet_prepare(req, 1, &b) == 0)
            (void)api_loop_query(req, bet_done, shard, BET_CALL, BET_ARGS(req, &b));
        return; /* started, answered, or (neither) for a worker */
    }
    if (bet_prepare(req, 0, &b) != 0)
        return;
    /*
     * A moved shard is followed by router_exec (the call failed whole). A
     * deadlock with a settlement batch on the same shard rolled the
     * transaction back whole too: it runs again.
     */
    do {
        sql_rows_free(&rows);
        rc = router_exec(req->router, shard, &rows, BET_CALL, BET_ARGS(req, &b));
    } while (rc == BC_ELOCKWAIT && lock_retries++ < 3);
    if (rc == BC_EDUPKEY && b.key != NULL) {
        /* The same key won a race in another request: answer as it did. */
        if (!bet_replayed(req, &b))
            api_db_error(req, BC_EQUERY);
    } else {
        bet_answer(req, b.hash, rc, &rows);
    }
    sql_rows_free(&rows);
}

void api_h_bet_get(struct api_req *req)
{
    bet_reply(req, 200, req->param[0]);
}

void api_h_my_bets(struct api_req *req)
{
    const char *status;
    struct sql_rows rows = {0};
    uint64_t cursor;
    json_t *items;
    int limit, rc;

    if (api_query(req, "status", &status) < 0 || api_limit(req, &limit) < 0 ||
        api_cursor(req, &cursor) < 0)
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
        json_array_append_new(items, bet_json(&rows, i, 0));
    api_reply_json(req, 200,
                   json_pack("{s:o,s:o}", "items", items, "next_cursor",
                             api_cursor_json(
                                 rows.nrow > (uint32_t)limit
                                     ? strtoull(sql_cell(&rows, limit - 1, 0), NULL, 10)
                                     : 0,
                                 rows.nrow > (uint32_t)limit)));
    sql_rows_free(&rows);
}
