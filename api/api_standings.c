/*
 * api_standings.c: rankings, recomputed after each settlement and stored
 * where readers fetch them with one primary-key read.
 *
 * A recomputation is three scatter-gathers (one statement per host each):
 * member counts and point sums per (company, team); the global top 500 users
 * (top-K merge); and each company's top 500 users (a window function per
 * shard). The results are written as JSON rows of the global standings
 * table, all under one new generation, in one transaction.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_int.h"

#define TOP 500

struct group {
    uint64_t id;         /* team or company id */
    uint64_t company_id; /* for teams */
    const char *name;    /* ref in rows */
    int64_t members, points;
    int64_t avg_h; /* average in hundredths, rounded half away from zero */
};

static int64_t avg_hundredths(int64_t points, int64_t members)
{
    if (members == 0)
        return 0;
    return (int64_t)llround((double)points * 100.0 / (double)members);
}

static int group_cmp(const void *a, const void *b)
{
    const struct group *x = a, *y = b;

    if (x->avg_h != y->avg_h)
        return x->avg_h > y->avg_h ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static int by_points(const char *const *a, const char *const *b, void *arg)
{
    long long pa = strtoll(a[4], NULL, 10), pb = strtoll(b[4], NULL, 10);
    unsigned long long ia = strtoull(a[0], NULL, 10), ib = strtoull(b[0], NULL, 10);
    (void)arg;
    if (pa != pb)
        return pa > pb ? -1 : 1;
    return ia < ib ? -1 : ia > ib;
}

static int rows_by_company_points(const void *a, const void *b)
{
    const char *const *x = a, *const *y = b;
    unsigned long long ca = strtoull(x[5], NULL, 10), cb = strtoull(y[5], NULL, 10);

    if (ca != cb)
        return ca < cb ? -1 : 1;
    return by_points(x, y, NULL);
}

static const char *company_name(struct sql_rows *companies, const char *id)
{
    for (uint32_t i = 0; i < companies->nrow; i++)
        if (strcmp(sql_cell(companies, i, 0), id) == 0)
            return sql_cell(companies, i, 1);
    return NULL;
}

static json_t *user_item(struct sql_rows *companies, char **row, int rank)
{
    const char *cname = company_name(companies, row[2]);

    return json_pack("{s:i,s:o,s:s,s:o,s:s,s:o,s:I}", "rank", rank, "user_id",
                     api_id_json(strtoull(row[0], NULL, 10)), "display_name", row[1],
                     "company_id", api_id_json(strtoull(row[2], NULL, 10)),
                     "company_name", cname ? cname : "", "team_id",
                     row[3] ? api_id_json(strtoull(row[3], NULL, 10)) : json_null(),
                     "points", (json_int_t)strtoll(row[4], NULL, 10));
}

static json_t *group_items(struct group *g, size_t n, const char *idkey)
{
    json_t *items = json_array();

    qsort(g, n, sizeof(*g), group_cmp);
    for (size_t i = 0; i < n && i < TOP; i++)
        json_array_append_new(items,
                              json_pack("{s:i,s:o,s:s,s:I,s:I,s:o}", "rank", (int)i + 1,
                                        idkey, api_id_json(g[i].id), "name", g[i].name,
                                        "members", (json_int_t)g[i].members, "points",
                                        (json_int_t)g[i].points, "average",
                                        json_real((double)g[i].avg_h / 100.0)));
    return items;
}

static int store(struct router_txn *txn, const char *kind, uint64_t scope, uint64_t gen,
                 json_t *items)
{
    char *text = json_dumps(items, JSON_COMPACT | JSON_REAL_PRECISION(10));
    int rc;

    json_decref(items);
    if (text == NULL)
        return -ENOMEM;
    rc = router_txn_exec(
        txn, NULL,
        "REPLACE INTO %S.standings (kind, scope, generation, computed_at, "
        "body) VALUES (%s, %u, %u, UTC_TIMESTAMP(3), %s)",
        kind, scope, gen, text);
    free(text);
    return rc;
}

int api_standings_recompute(struct router *r)
{
    struct sql_rows companies = {0}, teams = {0}, sums = {0}, top = {0}, per = {0},
                    gen = {0};
    struct router_txn *txn = NULL;
    struct group *cg = NULL, *tg = NULL;
    uint64_t generation;
    int rc;

    rc =
        router_exec(r, ROUTER_GLOBAL, &companies,
                    "SELECT id, name FROM %S.companies WHERE platform = 0 ORDER BY id");
    if (rc == 0)
        rc = router_exec(r, ROUTER_GLOBAL, &teams,
                         "SELECT id, company_id, name FROM %S.teams ORDER BY id");
    if (rc == 0)
        rc = router_scatter(
            r, &sums,
            "SELECT company_id, COALESCE(team_id, 0), COUNT(*), SUM(points) "
            "FROM %S.users WHERE role <> 'platform_admin' GROUP BY "
            "company_id, team_id");
    if (rc == 0)
        rc = router_scatter_topk(
            r, &top, TOP, "points DESC, id ASC", by_points, NULL,
            "SELECT id, display_name, company_id, team_id, points FROM "
            "%S.users WHERE role <> 'platform_admin' ORDER BY points "
            "DESC, id ASC LIMIT 500");
    if (rc == 0)
        rc = router_scatter(
            r, &per,
            "SELECT id, display_name, company_id, team_id, points, "
            "company_id FROM (SELECT id, display_name, company_id, team_id, "
            "points, ROW_NUMBER() OVER (PARTITION BY company_id ORDER BY "
            "points DESC, id) AS rn FROM %S.users WHERE role <> "
            "'platform_admin') t WHERE rn <= 500");
    if (rc == 0)
        rc = router_exec(r, ROUTER_GLOBAL, &gen,
                         "SELECT COALESCE(MAX(generation), 0) + 1 FROM %S.standings");
    if (rc < 0)
        goto out;
    generation = strtoull(sql_cell(&gen, 0, 0), NULL, 10);

    cg = calloc(companies.nrow + 1, sizeof(*cg));
    tg = calloc(teams.nrow + 1, sizeof(*tg));
    if (cg == NULL || tg == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    for (uint32_t i = 0; i < companies.nrow; i++) {
        cg[i].id = strtoull(sql_cell(&companies, i, 0), NULL, 10);
        cg[i].name = sql_cell(&companies, i, 1);
    }
    for (uint32_t i = 0; i < teams.nrow; i++) {
        tg[i].id = strtoull(sql_cell(&teams, i, 0), NULL, 10);
        tg[i].company_id = strtoull(sql_cell(&teams, i, 1), NULL, 10);
        tg[i].name = sql_cell(&teams, i, 2);
    }
    for (uint32_t i = 0; i < sums.nrow; i++) {
        uint64_t c = strtoull(sql_cell(&sums, i, 0), NULL, 10);
        uint64_t t = strtoull(sql_cell(&sums, i, 1), NULL, 10);
        int64_t n = strtoll(sql_cell(&sums, i, 2), NULL, 10);
        int64_t p = strtoll(sql_cell(&sums, i, 3), NULL, 10);
        for (uint32_t k = 0; k < companies.nrow; k++)
            if (cg[k].id == c) {
                cg[k].members += n;
                cg[k].points += p;
            }
        for (uint32_t k = 0; t != 0 && k < teams.nrow; k++)
            if (tg[k].id == t) {
                tg[k].members += n;
                tg[k].points += p;
            }
    }
    for (uint32_t k = 0; k < companies.nrow; k++)
        cg[k].avg_h = avg_hundredths(cg[k].points, cg[k].members);
    for (uint32_t k = 0; k < teams.nrow; k++)
        tg[k].avg_h = avg_hundredths(tg[k].points, tg[k].members);

    if ((rc = router_txn_begin(r, ROUTER_GLOBAL, &txn)) < 0)
        goto out;
    {
        json_t *items = json_array();
        for (uint32_t i = 0; i < top.nrow; i++)
            json_array_append_new(
                items, user_item(&companies, &top.cell[(size_t)i * 5], (int)i + 1));
        rc = store(txn, "users", 0, generation, items);
    }
    /* Per company: sort the gathered rows by company, then rank. */
    qsort(per.cell, per.nrow, 6 * sizeof(char *), rows_by_company_points);
    for (uint32_t k = 0; k < companies.nrow && rc == 0; k++) {
        json_t *items = json_array();
        int rank = 0;
        for (uint32_t i = 0; i < per.nrow && rank < TOP; i++) {
            char **row = &per.cell[(size_t)i * 6];
            if (strtoull(row[2], NULL, 10) == cg[k].id)
                json_array_append_new(items, user_item(&companies, row, ++rank));
        }
        rc = store(txn, "users", cg[k].id, generation, items);
    }
    for (uint32_t k = 0; k < companies.nrow && rc == 0; k++) {
        struct group *g = calloc(teams.nrow + 1, sizeof(*g));
        size_t n = 0;
        if (g == NULL) {
            rc = -ENOMEM;
            break;
        }
        for (uint32_t t = 0; t < teams.nrow; t++)
            if (tg[t].company_id == cg[k].id)
                g[n++] = tg[t];
        rc = store(txn, "teams", cg[k].id, generation, group_items(g, n, "team_id"));
        free(g);
    }
    if (rc == 0)
        rc = store(txn, "companies", 0, generation,
                   group_items(cg, companies.nrow, "company_id"));
    if (rc == 0) {
        rc = router_txn_commit(txn);
        txn = NULL;
    }
out:
    if (rc < 0)
        api_log("standings: recomputation failed: %s", router_last_error());
    router_txn_rollback(txn);
    free(cg);
    free(tg);
    sql_rows_free(&companies);
    sql_rows_free(&teams);
    sql_rows_free(&sums);
    sql_rows_free(&top);
    sql_rows_free(&per);
    sql_rows_free(&gen);
    return rc;
}

/* The stored list as its response body; id = scope, kind from the key. */
static int standings_fill(struct api_req *req, const char *kind, uint64_t scope,
                          char **text)
{
    struct sql_rows rows = {0};
    json_t *body, *items;
    int rc;

    rc = router_exec(
        req->router, ROUTER_GLOBAL, &rows,
        "SELECT generation, computed_at, body FROM %S.standings WHERE kind = %s "
        "AND scope = %u",
        kind, scope);
    if (rc < 0)
        return rc;
    if (rows.nrow == 0) {
        body = json_pack("{s:[],s:i,s:n}", "items", "generation", 0, "computed_at");
    } else {
        items = json_loads(sql_cell(&rows, 0, 2), 0, NULL);
        body = json_pack("{s:o,s:I,s:o}", "items", items ? items : json_array(),
                         "generation",
                         (json_int_t)strtoll(sql_cell(&rows, 0, 0), NULL, 10),
                         "computed_at", api_time_json(sql_cell(&rows, 0, 1)));
    }
    sql_rows_free(&rows);
    *text = body ? json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(10)) : NULL;
    json_decref(body);
    return *text ? 0 : -ENOMEM;
}

static int fill_users(struct api_req *req, uint64_t scope, char **text)
{
    return standings_fill(req, "users", scope, text);
}

static int fill_teams(struct api_req *req, uint64_t scope, char **text)
{
    return standings_fill(req, "teams", scope, text);
}

static int fill_companies(struct api_req *req, uint64_t scope, char **text)
{
    return standings_fill(req, "companies", scope, text);
}

/*
 * Standings through the cache, keyed by the "standings" generation that each
 * recomputation bumps: a cold key costs one read however many readers wait.
 */
static void standings_reply(struct api_req *req, const char *kind, uint64_t scope,
                            api_fill_fn fill)
{
    char key[128], *text = NULL;
    uint64_t gen = req->cache ? cache_generation(req->cache, "standings") : 0;
    int rc;

    snprintf(key, sizeof(key), "bc:v1:standings:%s:%" PRIu64 ":g%" PRIu64, kind, scope,
             gen);
    rc = api_cached_text(req, key, 1, 3600, fill, scope, &text);
    if (rc < 0)
        api_db_error(req, rc);
    else
        api_reply_raw(req, 200, "application/json", text, strlen(text));
    free(text);
}

/*
 * ?company=ID (0 when absent and not required), checked for membership: 0,
 * or after replying -EINVAL (400), BC_ENOTFOUND (404), or what the access
 * check failed with.
 */
static int company_param(struct api_req *req, uint64_t *company, int required)
{
    const char *s = api_query(req, "company");

    *company = 0;
    if (s == NULL) {
        if (!required)
            return 0;
        api_error(req, 400, "invalid_parameter", "company=ID is required");
        return -EINVAL;
    }
    if (api_parse_id(s, company) < 0) {
        api_error(req, 404, "not_found", "no such company");
        return BC_ENOTFOUND;
    }
    return api_check_access(req, API_ACCESS_COMPANY_MEMBER, *company);
}

void api_h_standings_users(struct api_req *req)
{
    uint64_t company;

    if (company_param(req, &company, 0) < 0)
        return;
    standings_reply(req, "users", company, fill_users);
}

void api_h_standings_teams(struct api_req *req)
{
    uint64_t company;

    if (company_param(req, &company, 1) < 0)
        return;
    standings_reply(req, "teams", company, fill_teams);
}

void api_h_standings_companies(struct api_req *req)
{
    standings_reply(req, "companies", 0, fill_companies);
}
