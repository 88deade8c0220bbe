/*
 * api_matches.c: matches and their odds (global schema), results and the
 * settlement's progress.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/api_int.h"

#define MATCH_COLS                                                                     \
    "id, home, away, stage, kickoff, status, odds_home, odds_draw, odds_away, "        \
    "odds_version, home_goals, away_goals"

json_t *api_match_row_json(struct sql_rows *rows, uint32_t r)
{
    json_t *m =
        json_pack("{s:o,s:s,s:s,s:s,s:o,s:s,s:{s:o,s:o,s:o,s:I}}", "id",
                  api_id_json(strtoull(sql_cell(rows, r, 0), NULL, 10)), "home",
                  sql_cell(rows, r, 1), "away", sql_cell(rows, r, 2), "stage",
                  sql_cell(rows, r, 3), "kickoff", api_time_json(sql_cell(rows, r, 4)),
                  "status", sql_cell(rows, r, 5), "odds", "home",
                  api_odds_json(strtoll(sql_cell(rows, r, 6), NULL, 10)), "draw",
                  api_odds_json(strtoll(sql_cell(rows, r, 7), NULL, 10)), "away",
                  api_odds_json(strtoll(sql_cell(rows, r, 8), NULL, 10)), "version",
                  (json_int_t)strtoll(sql_cell(rows, r, 9), NULL, 10));

    if (m == NULL)
        return NULL;
    if (sql_cell(rows, r, 10) != NULL)
        json_object_set_new(m, "score",
                            json_pack("{s:i,s:i}", "home", atoi(sql_cell(rows, r, 10)),
                                      "away", atoi(sql_cell(rows, r, 11))));
    else
        json_object_set_new(m, "score", json_null());
    return m;
}

static json_t *odds_json(struct sql_rows *rows, uint32_t r)
{
    return json_pack("{s:o,s:o,s:o,s:o,s:I}", "match_id",
                     api_id_json(strtoull(sql_cell(rows, r, 0), NULL, 10)), "home",
                     api_odds_json(strtoll(sql_cell(rows, r, 6), NULL, 10)), "draw",
                     api_odds_json(strtoll(sql_cell(rows, r, 7), NULL, 10)), "away",
                     api_odds_json(strtoll(sql_cell(rows, r, 8), NULL, 10)), "version",
                     (json_int_t)strtoll(sql_cell(rows, r, 9), NULL, 10));
}

/* Loads one match; 0, BC_ENOTFOUND or a router status. */
static int match_load(struct router *router, uint64_t id, struct sql_rows *rows)
{
    int rc = router_exec(router, ROUTER_GLOBAL, rows,
                         "SELECT " MATCH_COLS " FROM %S.matches WHERE id = %u", id);

    if (rc == 0 && rows->nrow == 0)
        rc = BC_ENOTFOUND;
    return rc;
}

/* Reads {home, draw, away} odds: 0, or -EINVAL after replying 400/422. */
static int odds_read(struct api_req *req, json_t *odds, int64_t out[3])
{
    static const char *const names[3] = {"home", "draw", "away"};
    const char *key;
    json_t *v;

    json_object_foreach(odds, key, v)
    {
        if (strcmp(key, "home") != 0 && strcmp(key, "draw") != 0 &&
            strcmp(key, "away") != 0) {
            api_error(req, 400, "unknown_field", "unknown odds field '%.32s'", key);
            return -EINVAL;
        }
    }
    for (int i = 0; i < 3; i++) {
        v = json_object_get(odds, names[i]);
        if (v == NULL) {
            api_error(req, 400, "invalid_field", "odds '%s' is required (a number)",
                      names[i]);
            return -EINVAL;
        }
        if (api_odds_parse(v, &out[i]) < 0) {
            api_error(req, 422, "invalid_odds",
                      "odds '%s' must be a number from 1.01 to 1000 with at most two "
                      "decimals",
                      names[i]);
            return -EINVAL;
        }
    }
    return 0;
}

static void match_reply(struct api_req *req, int status, uint64_t id)
{
    struct sql_rows rows = {0};
    int rc = match_load(req->router, id, &rows);

    if (rc == BC_ENOTFOUND)
        api_error(req, 404, "not_found", "no such match");
    else if (rc < 0)
        api_db_error(req, rc);
    else
        api_reply_json(req, status, api_match_row_json(&rows, 0));
    sql_rows_free(&rows);
}

void api_h_match_create(struct api_req *req)
{
    static const struct api_field spec[] = {
        {"home", API_T_STR, 1, 0},  {"away", API_T_STR, 1, 0},
        {"stage", API_T_STR, 1, 0}, {"kickoff", API_T_STR, 1, 0},
        {"odds", API_T_OBJ, 1, 0},  {NULL, 0, 0, 0}};
    struct sql_rows rows = {0};
    char kickoff[32];
    int64_t odds[3];
    json_t *body = req->json;
    int rc;

    if (api_body_check(req, spec) < 0)
        return;
    if (api_text_check(req, "invalid_teams", "home", api_str(body, "home", ""), 64) <
            0 ||
        api_text_check(req, "invalid_teams", "away", api_str(body, "away", ""), 64) < 0)
        return;
    if (strcmp(api_str(body, "home", ""), api_str(body, "away", "")) == 0) {
        api_error(req, 422, "invalid_teams",
                  "home and away must be two different names");
        return;
    }
    if (api_text_check(req, "invalid_name", "stage", api_str(body, "stage", ""), 64) <
        0)
        return;
    if (api_time_parse(api_str(body, "kickoff", ""), kickoff, sizeof(kickoff), NULL) <
        0) {
        api_error(req, 422, "invalid_kickoff",
                  "kickoff must be an RFC 3339 UTC time of the years 2000 to 2100");
        return;
    }
    /*
     * A kickoff is whole seconds, as it is shown and as betting closes:
     * hidden milliseconds would order matches that show the same kickoff.
     */
    if (strlen(kickoff) == 23)
        memcpy(kickoff + 20, "000", 3);
    if (odds_read(req, json_object_get(body, "odds"), odds) < 0)
        return;
    rc = router_exec(req->router, ROUTER_GLOBAL, &rows,
                     "INSERT INTO %S.matches (home, away, stage, kickoff, odds_home, "
                     "odds_draw, odds_away) VALUES (%s, %s, %s, %s, %d, %d, %d)",
                     api_str(body, "home", ""), api_str(body, "away", ""),
                     api_str(body, "stage", ""), kickoff, odds[0], odds[1], odds[2]);
    if (rc < 0) {
        api_db_error(req, rc);
    } else {
        if (req->cache != NULL)
            cache_bump(req->cache, "matches");
        match_reply(req, 201, rows.insert_id);
    }
    sql_rows_free(&rows);
}

/*
 * A list query, validated and in canonical form (it is also the cache key).
 * Its window [from, to) is always explicit and at most LIST_RANGE_DAYS long:
 * a page costs at most a scan of that many days of matches (a cursor that
 * names no match scans the whole window), and a window that comes from the
 * clock is whole days, so that the default list has one key per day, not
 * one per request.
 */
#define LIST_RANGE_DAYS 31
#define LIST_RANGE_MS ((int64_t)LIST_RANGE_DAYS * 86400 * 1000)

struct list_query {
    const char *status; /* NULL: any */
    char from[32], to[32];
    uint64_t cursor;
    int limit;
};

/* epoch ms -> "YYYY-MM-DD HH:MM:SS.mmm" (UTC), as api_time_parse() writes it. */
static void db_time(int64_t ms, char *out, size_t size)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    size_t n;

    gmtime_r(&t, &tm);
    n = strftime(out, size, "%Y-%m-%d %H:%M:%S", &tm);
    snprintf(out + n, size - n, ".%03d", (int)(ms % 1000));
}

/*
 * The window: both bounds given, to not before from (else 400
 * invalid_parameter) and at most LIST_RANGE_DAYS apart (else 400
 * range_too_long); one given, the other LIST_RANGE_DAYS away from it; none,
 * from the start of the current UTC day. 0, or -EINVAL after replying 400.
 */
static int list_window(struct api_req *req, struct list_query *q)
{
    const char *from, *to;
    int64_t from_ms = 0, to_ms = 0;

    if (api_query(req, "from", &from) < 0 || api_query(req, "to", &to) < 0)
        return -EINVAL;
    if ((from != NULL &&
         api_time_parse(from, q->from, sizeof(q->from), &from_ms) < 0) ||
        (to != NULL && api_time_parse(to, q->to, sizeof(q->to), &to_ms) < 0)) {
        api_error(req, 400, "invalid_parameter",
                  "from and to must be RFC 3339 UTC times of the years 2000 to 2100");
        return -EINVAL;
    }
    if (from != NULL && to != NULL && to_ms < from_ms) {
        api_error(req, 400, "invalid_parameter", "to is before from");
        return -EINVAL;
    }
    if (from != NULL && to != NULL && to_ms - from_ms > LIST_RANGE_MS) {
        api_error(req, 400, "range_too_long",
                  "from and to are more than %d days apart; ask for at most %d "
                  "days at a time",
                  LIST_RANGE_DAYS, LIST_RANGE_DAYS);
        return -EINVAL;
    }
    if (from == NULL && to == NULL) {
        int64_t now_s = (int64_t)time(NULL);
        from_ms = (now_s - now_s % 86400) * 1000;
    }
    if (from == NULL) {
        from_ms = to != NULL ? to_ms - LIST_RANGE_MS : from_ms;
        db_time(from_ms, q->from, sizeof(q->from));
    }
    if (to == NULL)
        db_time(from_ms + LIST_RANGE_MS, q->to, sizeof(q->to));
    return 0;
}

/* Reads and checks the list's parameters: 0, or -EINVAL after replying 400. */
static int list_query(struct api_req *req, struct list_query *q)
{
    if (api_query(req, "status", &q->status) < 0 || api_limit(req, &q->limit) < 0 ||
        api_cursor(req, &q->cursor) < 0)
        return -EINVAL;
    if (q->status != NULL && strcmp(q->status, "scheduled") != 0 &&
        strcmp(q->status, "finished") != 0 && strcmp(q->status, "cancelled") != 0) {
        api_error(req, 400, "invalid_parameter",
                  "status must be scheduled, finished or cancelled");
        return -EINVAL;
    }
    return list_window(req, q);
}

struct list_fill {
    struct api_req *req;
    const struct list_query *q; /* the one the key was made of */
};

/* A page of the list as its response body (cache_fill_fn). */
static int list_fill(void *arg, char **text, size_t *len)
{
    struct api_req *req = ((struct list_fill *)arg)->req;
    const struct list_query *q = ((struct list_fill *)arg)->q;
    struct sql_rows rows = {0};
    json_t *items, *body;
    int rc;

    rc = router_exec(
        req->router, ROUTER_GLOBAL, &rows,
        "SELECT " MATCH_COLS " FROM %S.matches m WHERE (%s IS NULL OR status = %s) "
        "AND kickoff >= %s AND kickoff < %s AND (%u = 0 OR (kickoff, id) > "
        "(SELECT kickoff, id FROM %S.matches WHERE id = %u)) ORDER BY kickoff, id "
        "LIMIT %d",
        q->status, q->status, q->from, q->to, q->cursor, q->cursor,
        (int64_t)q->limit + 1);
    if (rc < 0)
        return rc;
    items = json_array();
    for (uint32_t i = 0; i < rows.nrow && i < (uint32_t)q->limit; i++)
        json_array_append_new(items, api_match_row_json(&rows, i));
    body = json_pack(
        "{s:o,s:o}", "items", items, "next_cursor",
        api_cursor_json(rows.nrow > (uint32_t)q->limit
                            ? strtoull(sql_cell(&rows, q->limit - 1, 0), NULL, 10)
                            : 0,
                        rows.nrow > (uint32_t)q->limit));
    sql_rows_free(&rows);
    *text = body ? json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(10)) : NULL;
    json_decref(body);
    if (*text == NULL)
        return -ENOMEM;
    *len = strlen(*text);
    return 0;
}

/*
 * Match lists through the cache, keyed by the "matches" generation and the
 * canonical query, whose window is explicit and bounded (list_window()).
 */
void api_h_match_list(struct api_req *req)
{
    struct list_query q;
    struct list_fill f = {.req = req, .q = &q};
    char key[CACHE_KEY_MAX + 1], *text = NULL;
    size_t len;
    uint64_t gen;
    int rc;

    if (list_query(req, &q) < 0)
        return;
    gen = req->cache ? cache_generation(req->cache, "matches", 1) : 0;
    snprintf(key, sizeof(key),
             "bc:v1:matches:g%" PRIu64 ":%s:%.10s_%.12s:%.10s_%.12s:%" PRIx64 ":%d",
             gen, q.status ? q.status : "-", q.from, q.from + 11, q.to, q.to + 11,
             q.cursor, q.limit);
    if (req->cache != NULL) {
        /* What the cache keeps comes from the primary (router_stale_reads()). */
        int stale = router_stale_reads(0);
        rc = cache_get(req->cache, key, 0, 60, list_fill, &f, &text, &len);
        (void)router_stale_reads(stale);
    } else
        rc = list_fill(&f, &text, &len);
    if (rc < 0)
        api_db_error(req, rc);
    else
        api_reply_raw(req, 200, "application/json", text, len);
    free(text);
}

/* Replies with the cached match, or with what the read failed with. */
static json_t *match_or_reply(struct api_req *req, uint64_t id)
{
    json_t *m = NULL;
    int rc = api_match_cached(req, id, 1, &m);

    if (rc == BC_ENOTFOUND)
        api_error(req, 404, "not_found", "no such match");
    else if (rc < 0)
        api_db_error(req, rc);
    return rc < 0 ? NULL : m;
}

void api_h_match_get(struct api_req *req)
{
    json_t *m = match_or_reply(req, req->param[0]);

    if (m != NULL)
        api_reply_json(req, 200, m);
}

void api_h_odds_get(struct api_req *req)
{
    char *text = NULL;
    int rc = api_odds_cached(req, req->param[0], &text);

    if (rc == BC_ENOTFOUND)
        api_error(req, 404, "not_found", "no such match");
    else if (rc < 0)
        api_db_error(req, rc);
    else
        api_reply_raw(req, 200, "application/json", text, strlen(text));
    free(text);
}

/*
 * One transaction: the row is locked, its status checked, the odds changed
 * and read back, so the answer is this request's change and version (two
 * PUTs at once were each answered with the later one's), and an odds
 * change is never answered 409 after it was made.
 */
void api_h_odds_put(struct api_req *req)
{
    static const struct api_field spec[] = {{"home", API_T_ANY, 1, 0},
                                            {"draw", API_T_ANY, 1, 0},
                                            {"away", API_T_ANY, 1, 0},
                                            {NULL, 0, 0, 0}};
    struct router_txn *txn = NULL;
    struct sql_rows rows = {0};
    int64_t odds[3];
    int rc;

    if (api_body_check(req, spec) < 0 || odds_read(req, req->json, odds) < 0)
        return;
    if ((rc = router_txn_begin(req->router, ROUTER_GLOBAL, &txn)) < 0)
        goto dberr;
    rc = router_txn_exec(
        txn, &rows, "SELECT " MATCH_COLS " FROM %S.matches WHERE id = %u FOR UPDATE",
        req->param[0]);
    if (rc < 0)
        goto dberr;
    if (rows.nrow == 0) {
        api_error(req, 404, "not_found", "no such match");
        goto out;
    }
    if (strcmp(sql_cell(&rows, 0, 5), "scheduled") != 0) {
        api_error(req, 409, "match_not_scheduled",
                  "odds change only while the match is scheduled");
        goto out;
    }
    sql_rows_free(&rows);
    rc =
        router_txn_exec(txn, NULL,
                        "UPDATE %S.matches SET odds_home = %d, odds_draw = %d, "
                        "odds_away = %d, odds_version = odds_version + 1 WHERE id = %u",
                        odds[0], odds[1], odds[2], req->param[0]);
    if (rc == 0)
        rc = router_txn_exec(txn, &rows,
                             "SELECT " MATCH_COLS " FROM %S.matches WHERE id = %u",
                             req->param[0]);
    if (rc == 0 && rows.nrow != 1)
        rc = BC_EQUERY;
    if (rc == 0) {
        rc = router_txn_commit(txn);
        txn = NULL;
    }
    if (rc < 0)
        goto dberr;
    api_match_changed(req, req->param[0]);
    api_reply_json(req, 200, odds_json(&rows, 0));
    goto out;
dberr:
    api_db_error(req, rc);
out:
    if (txn != NULL)
        router_txn_rollback(txn);
    sql_rows_free(&rows);
}
