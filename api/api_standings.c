/*
 * api_standings.c: rankings, recomputed after each settlement and stored
 * where readers fetch them with one primary-key read.
 *
 * A recomputation costs what the companies, the teams and the top K
 * (500) cost, not what the users do:
 *  - members and points per company and per team are one scatter-gather of
 *    the shards' aggregate rows (api_standings_agg.c), summed by each host
 *    (a row per host and group, whatever the shards) and then in memory by
 *    id (binary search in the id-sorted company and team lists);
 *  - each company's ranking: for the companies with more than K members,
 *    the score of the K-th member from the shards' points histograms
 *    (standings_points), then in groups, one scatter a group, every host
 *    ranks its users of the group's companies at or above that score (an
 *    index range: about K users a company, ties aside) and returns its best
 *    K of each; the small companies in runs of consecutive companies (by id)
 *    whose users are all returned. A group or a run is cut at ROWS rows (at most K per
 *    company and host): a scatter's cost over 1,024 shards is mostly what
 *    it costs to be one, so the fewer the better, and ROWS bounds memory;
 *  - the global ranking is merged from the company rankings (a user in the
 *    global top K is in his company's top K): no scatter of its own.
 * The results are written as JSON rows of the global standings table, all
 * under one new generation, in one transaction, one list at a time.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/api_int.h"

#define TOP 500
/* Rows one scatter of company rankings may bring (about 150 bytes each). */
#define ROWS 30000
/* Members a run of small companies reads together, by their aggregates. */
#define CHUNK (ROWS - TOP)
/* Rows a run may return: its members (at most CHUNK, with room to spare). */
#define RUN_ROWS ROWS

/* The columns of a ranked user row, as user_item() reads them. */
#define USER_ROW "SELECT id, display_name, company_id, team_id, points FROM %S.users "
enum { U_ID, U_NAME, U_COMPANY, U_TEAM, U_POINTS, U_NCOL };

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

static int team_company_cmp(const void *a, const void *b)
{
    const struct group *x = a, *y = b;

    if (x->company_id != y->company_id)
        return x->company_id < y->company_id ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* The group of id in g (sorted by id), or NULL. */
static struct group *group_find(struct group *g, size_t n, uint64_t id)
{
    size_t lo = 0, hi = n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (g[mid].id == id)
            return &g[mid];
        if (g[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static int by_points(const char *const *a, const char *const *b, void *arg)
{
    long long pa = strtoll(a[U_POINTS], NULL, 10), pb = strtoll(b[U_POINTS], NULL, 10);
    unsigned long long ia = strtoull(a[U_ID], NULL, 10),
                       ib = strtoull(b[U_ID], NULL, 10);
    (void)arg;
    if (pa != pb)
        return pa > pb ? -1 : 1;
    return ia < ib ? -1 : ia > ib;
}

static int rows_by_company_points(const void *a, const void *b)
{
    const char *const *x = a, *const *y = b;
    unsigned long long ca = strtoull(x[U_COMPANY], NULL, 10);
    unsigned long long cb = strtoull(y[U_COMPANY], NULL, 10);

    if (ca != cb)
        return ca < cb ? -1 : 1;
    return by_points(x, y, NULL);
}

/* A user of the global ranking, copied out of a company's rows. */
struct ranked {
    uint64_t id, company;
    int64_t points;
    char *name, *team; /* owned; team NULL for none */
};

/* What a recomputation holds: companies and teams, sorted by id. */
struct standings {
    struct sql_rows company_rows, team_rows; /* the names point in here */
    struct group *cg, *tg;
    uint32_t nc, nt;
    uint32_t nhost;     /* hosts of the map: rows a large company brings */
    struct ranked *top; /* the global ranking's candidates, 2 * TOP at most */
    uint32_t ntop;
    int top_failed; /* out of memory */
    int64_t scan;   /* users of large companies read, per the histograms */
    uint32_t cut;   /* large companies read from their cut */
};

static int ranked_cmp(const void *a, const void *b)
{
    const struct ranked *x = a, *y = b;

    if (x->points != y->points)
        return x->points > y->points ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static void ranked_free(struct ranked *r, uint32_t from, uint32_t to)
{
    for (uint32_t i = from; i < to; i++) {
        free(r[i].name);
        free(r[i].team);
    }
}

/* Sorts the candidates and keeps the best TOP. */
static void top_trim(struct standings *st)
{
    if (st->ntop > 1)
        qsort(st->top, st->ntop, sizeof(*st->top), ranked_cmp);
    if (st->ntop > TOP) {
        ranked_free(st->top, TOP, st->ntop);
        st->ntop = TOP;
    }
}

/* A ranked user of some company: a candidate of the global ranking. */
static void top_offer(struct standings *st, char **row)
{
    struct ranked *c;

    if (st->top_failed)
        return;
    if (st->top == NULL && (st->top = calloc(2 * TOP, sizeof(*st->top))) == NULL) {
        st->top_failed = 1;
        return;
    }
    if (st->ntop == 2 * TOP)
        top_trim(st);
    c = &st->top[st->ntop];
    c->id = strtoull(row[U_ID], NULL, 10);
    c->company = strtoull(row[U_COMPANY], NULL, 10);
    c->points = strtoll(row[U_POINTS], NULL, 10);
    c->name = strdup(row[U_NAME] ? row[U_NAME] : "");
    c->team = row[U_TEAM] ? strdup(row[U_TEAM]) : NULL;
    if (c->name == NULL || (row[U_TEAM] && c->team == NULL)) {
        free(c->name);
        free(c->team);
        st->top_failed = 1;
        return;
    }
    st->ntop++;
}

/* A user of the global ranking (a candidate kept by top_offer). */
static json_t *ranked_item(const struct standings *st, const struct ranked *u, int rank)
{
    const struct group *c = group_find(st->cg, st->nc, u->company);

    return json_pack("{s:i,s:o,s:s,s:o,s:s,s:o,s:I}", "rank", rank, "user_id",
                     api_id_json(u->id), "display_name", u->name, "company_id",
                     api_id_json(u->company), "company_name", c ? c->name : "",
                     "team_id",
                     u->team ? api_id_json(strtoull(u->team, NULL, 10)) : json_null(),
                     "points", (json_int_t)u->points);
}

static json_t *user_item(const struct standings *st, char **row, int rank)
{
    uint64_t company = strtoull(row[U_COMPANY], NULL, 10);
    const struct group *c = group_find(st->cg, st->nc, company);

    return json_pack(
        "{s:i,s:o,s:s,s:o,s:s,s:o,s:I}", "rank", rank, "user_id",
        api_id_json(strtoull(row[U_ID], NULL, 10)), "display_name", row[U_NAME],
        "company_id", api_id_json(company), "company_name", c ? c->name : "", "team_id",
        row[U_TEAM] ? api_id_json(strtoull(row[U_TEAM], NULL, 10)) : json_null(),
        "points", (json_int_t)strtoll(row[U_POINTS], NULL, 10));
}

/* Sorts g by average and returns the first TOP as JSON items. */
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

/* Writes one list (steals items) under generation gen. */
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

static void standings_deinit(struct standings *st)
{
    free(st->cg);
    free(st->tg);
    if (st->top != NULL)
        ranked_free(st->top, 0, st->ntop);
    free(st->top);
    sql_rows_free(&st->company_rows);
    sql_rows_free(&st->team_rows);
}

/*
 * Companies and teams with their members and points: the names from the
 * global schema, the sums from every shard's aggregates. 0 or a status.
 */
static int groups_load(struct router *r, struct standings *st)
{
    struct sql_rows agg = {0};
    int rc;

    rc =
        router_exec(r, ROUTER_GLOBAL, &st->company_rows,
                    "SELECT id, name FROM %S.companies WHERE platform = 0 ORDER BY id");
    if (rc == 0)
        rc = router_exec(r, ROUTER_GLOBAL, &st->team_rows,
                         "SELECT id, company_id, name FROM %S.teams ORDER BY id");
    if (rc == 0)
        /* Summed on each host: a row per host and group, not per shard. */
        rc = router_scatter_wrap(
            r, &agg, "SELECT k, id, SUM(m), SUM(p) FROM (", ") t GROUP BY k, id",
            "SELECT 0 AS k, company_id AS id, members AS m, points AS p FROM "
            "%S.standings_company WHERE members <> 0 OR points <> 0 UNION ALL "
            "SELECT 1, team_id, members, points FROM %S.standings_team WHERE "
            "members <> 0 OR points <> 0");
    if (rc < 0)
        goto out;
    st->nc = st->company_rows.nrow;
    st->nt = st->team_rows.nrow;
    st->cg = calloc(st->nc + 1, sizeof(*st->cg));
    st->tg = calloc(st->nt + 1, sizeof(*st->tg));
    if (st->cg == NULL || st->tg == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    for (uint32_t i = 0; i < st->nc; i++) {
        st->cg[i].id = strtoull(sql_cell(&st->company_rows, i, 0), NULL, 10);
        st->cg[i].name = sql_cell(&st->company_rows, i, 1);
    }
    for (uint32_t i = 0; i < st->nt; i++) {
        st->tg[i].id = strtoull(sql_cell(&st->team_rows, i, 0), NULL, 10);
        st->tg[i].company_id = strtoull(sql_cell(&st->team_rows, i, 1), NULL, 10);
        st->tg[i].name = sql_cell(&st->team_rows, i, 2);
    }
    /* One row per host and group: summed by id, a binary search each. */
    for (uint32_t i = 0; i < agg.nrow; i++) {
        int team = strcmp(sql_cell(&agg, i, 0), "1") == 0;
        struct group *g =
            team ? group_find(st->tg, st->nt, strtoull(sql_cell(&agg, i, 1), NULL, 10))
                 : group_find(st->cg, st->nc, strtoull(sql_cell(&agg, i, 1), NULL, 10));
        if (g == NULL)
            continue; /* the platform's company, or a group gone from global */
        g->members += strtoll(sql_cell(&agg, i, 2), NULL, 10);
        g->points += strtoll(sql_cell(&agg, i, 3), NULL, 10);
    }
    for (uint32_t k = 0; k < st->nc; k++)
        st->cg[k].avg_h = avg_hundredths(st->cg[k].points, st->cg[k].members);
    for (uint32_t k = 0; k < st->nt; k++)
        st->tg[k].avg_h = avg_hundredths(st->tg[k].points, st->tg[k].members);
out:
    sql_rows_free(&agg);
    return rc;
}

static int groups_have_members(const struct standings *st)
{
    for (uint32_t k = 0; k < st->nc; k++)
        if (st->cg[k].members != 0)
            return 1;
    return 0;
}

/*
 * The ranked users of the small companies cg[a..b) into rows, sorted by
 * company, then points descending, then id: every user of the run
 * (companies in id order, so one index range), at most RUN_ROWS. -E2BIG when a host had
 * more: the aggregates' member counts, which made the run, are short (a cluster filled
 * around the API and not rebuilt); the caller then reads the run's companies one by
 * one.
 */
static int company_users_load(struct router *r, const struct standings *st, uint32_t a,
                              uint32_t b, struct sql_rows *rows)
{
    char tail[48];
    int rc;

    snprintf(tail, sizeof(tail), ") t LIMIT %d", RUN_ROWS + 1);
    rc = router_scatter_wrap(r, rows, "SELECT * FROM (", tail,
                             USER_ROW "WHERE company_id BETWEEN %u AND %u AND role <> "
                                      "'platform_admin'",
                             st->cg[a].id, st->cg[b - 1].id);
    if (rc == 0 && rows->nrow > RUN_ROWS) {
        sql_rows_free(rows);
        return -E2BIG;
    }
    if (rc == 0 && rows->nrow > 1)
        qsort(rows->cell, rows->nrow, U_NCOL * sizeof(char *), rows_by_company_points);
    return rc;
}

/* The stored ranking of company cg[k], from rows (by company) at *i. */
static int store_company(struct router_txn *txn, struct standings *st, uint32_t k,
                         const struct sql_rows *rows, uint32_t *i, uint64_t gen)
{
    json_t *items = json_array();
    int rank = 0;

    /* Rows are by company: skip those of a company not listed. */
    for (; *i < rows->nrow; (*i)++) {
        char **row = &rows->cell[(size_t)*i * U_NCOL];
        uint64_t c = strtoull(row[U_COMPANY], NULL, 10);
        if (c > st->cg[k].id)
            break;
        if (c == st->cg[k].id && rank < TOP) {
            json_array_append_new(items, user_item(st, row, ++rank));
            top_offer(st, row);
        }
    }
    return store(txn, "users", st->cg[k].id, gen, items);
}

/* Company cg[k]'s ranking by a top-K scatter of its own (every member read). */
static int store_company_alone(struct router *r, struct router_txn *txn,
                               struct standings *st, uint32_t k, uint64_t gen)
{
    struct sql_rows rows = {0};
    uint32_t i = 0;
    int rc;

    rc = router_scatter_topk(r, &rows, TOP, "points DESC, id ASC", by_points, NULL,
                             USER_ROW
                             "WHERE company_id = %u AND role <> 'platform_admin' "
                             "ORDER BY points DESC, id ASC LIMIT 500",
                             st->cg[k].id);
    if (rc == 0)
        rc = store_company(txn, st, k, &rows, &i, gen);
    sql_rows_free(&rows);
    return rc;
}

/* Rows of company id in rows (sorted by company) from *i on. */
static uint32_t company_rows(const struct sql_rows *rows, uint32_t i, uint64_t id)
{
    uint32_t n = 0;

    for (; i < rows->nrow; i++) {
        uint64_t c = strtoull(rows->cell[(size_t)i * U_NCOL + U_COMPANY], NULL, 10);
        if (c > id)
            break;
        n += c == id;
    }
    return n;
}

/* The users' condition of a large company: at or above its cut, if known. */
static int cut_cond(struct sql_buf *b, const struct api_points_cut *cut, int first)
{
    char term[96];
    int len;

    if (cut->found)
        len = snprintf(term, sizeof(term),
                       "%s(company_id = %" PRIu64 " AND points >= %" PRId64 ")",
                       first ? "" : " OR ", cut->company, cut->points);
    else
        len = snprintf(term, sizeof(term), "%scompany_id = %" PRIu64,
                       first ? "" : " OR ", cut->company);
    return sql_buf_add(b, term, (size_t)len);
}

/*
 * The rankings of the large companies (more than TOP members). First each
 * one's cut, the score of its TOP-th member, from the shards' points
 * histograms (api_standings_cuts); then its users at or above the cut,
 * which an index range reads (company_points): about TOP of them, not the
 * company. As many companies a scatter as bring at most ROWS rows (each
 * host returns at most TOP of each), in which every host ranks its users of
 * those companies (a window per company) and returns its best TOP of each.
 * A statement per company would cost its parse over every shard of the
 * host: 100 of them took 10 s at 1,024 shards. A company without a cut
 * (histograms short) is read whole; one whose cut gave fewer than TOP users
 * (histograms ahead of the users) is read again, whole.
 */
static int store_large_companies(struct router *r, struct router_txn *txn,
                                 struct standings *st, uint64_t gen)
{
    int64_t most = (int64_t)TOP * (st->nhost ? st->nhost : 1), rows_in = 0;
    uint32_t *large = calloc(st->nc ? st->nc : 1, sizeof(*large)), nl = 0, g0 = 0;
    struct api_points_cut *cut = calloc(st->nc ? st->nc : 1, sizeof(*cut));
    struct sql_buf cond = {0};
    int rc = large && cut ? 0 : -ENOMEM;

    for (uint32_t k = 0; k < st->nc && rc == 0; k++)
        if (st->cg[k].members > TOP) {
            cut[nl].company = st->cg[k].id;
            large[nl++] = k;
        }
    if (rc == 0 && nl > 0)
        rc = api_standings_cuts(r, TOP, cut, nl);
    for (uint32_t g = 0; g <= nl && rc == 0; g++) {
        struct sql_rows rows = {0};
        uint32_t i = 0;

        if (g < nl) {
            int64_t n = cut[g].found ? cut[g].at_or_above : st->cg[large[g]].members;
            int64_t brings = n < most ? n : most;
            st->scan += n;
            st->cut += cut[g].found;
            /* Over the budget: the group so far goes first, g opens the next. */
            if (g == g0 || rows_in + brings <= ROWS) {
                rows_in += brings;
                continue;
            }
        } else if (g == g0) {
            break;
        }
        /* Companies [g0, g) are a full group, or the last one at the end. */
        cond.len = 0;
        for (uint32_t j = g0; j < g && rc == 0; j++)
            rc = cut_cond(&cond, &cut[j], j == g0);
        if (rc == 0)
            rc = router_scatter_wrap(
                r, &rows,
                "SELECT id, display_name, company_id, team_id, points FROM (SELECT *, "
                "ROW_NUMBER() OVER (PARTITION BY company_id ORDER BY points DESC, id "
                "ASC) AS rn FROM (",
                ") u) t WHERE rn <= 500",
                USER_ROW "WHERE (%R) AND role <> 'platform_admin'", cond.buf);
        if (rc == 0 && rows.nrow > 1)
            qsort(rows.cell, rows.nrow, U_NCOL * sizeof(char *),
                  rows_by_company_points);
        /* The group is in id order, as the rows are. */
        for (uint32_t j = g0; j < g && rc == 0; j++) {
            uint32_t k = large[j];
            if (cut[j].found && company_rows(&rows, i, st->cg[k].id) < TOP) {
                api_log("standings: company %" PRIu64 " has fewer users at or above "
                        "%" PRId64 " points than its histograms say; run bcadmin "
                        "rebuild-standings",
                        st->cg[k].id, cut[j].points);
                i += company_rows(&rows, i, st->cg[k].id);
                rc = store_company_alone(r, txn, st, k, gen);
            } else {
                rc = store_company(txn, st, k, &rows, &i, gen);
            }
        }
        sql_rows_free(&rows);
        /* g opens the next group (its rows are counted there). */
        g0 = g;
        rows_in = 0;
        if (g < nl) {
            int64_t n = cut[g].found ? cut[g].at_or_above : st->cg[large[g]].members;
            rows_in = n < most ? n : most;
        }
    }
    sql_buf_deinit(&cond);
    free(cut);
    free(large);
    return rc;
}

/* Every company's user ranking, a run of companies at a time. */
static int store_company_users(struct router *r, struct router_txn *txn,
                               struct standings *st, uint64_t gen)
{
    struct sql_rows rows = {0};
    int rc = 0;

    rc = store_large_companies(r, txn, st, gen);
    for (uint32_t a = 0, b; a < st->nc && rc == 0; a = b) {
        int64_t sum = st->cg[a].members;
        uint32_t i = 0;
        /* The next run of small companies, up to CHUNK members. */
        if (sum > TOP) {
            b = a + 1; /* large: ranked with its group above */
            continue;
        }
        for (b = a + 1; b < st->nc; b++) {
            if (st->cg[b].members > TOP || sum + st->cg[b].members > CHUNK)
                break;
            sum += st->cg[b].members;
        }
        rc = company_users_load(r, st, a, b, &rows);
        if (rc == -E2BIG) {
            /* More members than the aggregates say: a top-K read each. */
            api_log("standings: companies %" PRIu64 "..%" PRIu64 " have more members "
                    "than their aggregates say; run bcadmin rebuild-standings",
                    st->cg[a].id, st->cg[b - 1].id);
            rc = 0;
            for (uint32_t k = a; k < b && rc == 0; k++)
                rc = store_company_alone(r, txn, st, k, gen);
            continue;
        }
        for (uint32_t k = a; k < b && rc == 0; k++)
            rc = store_company(txn, st, k, &rows, &i, gen);
        sql_rows_free(&rows);
    }
    sql_rows_free(&rows);
    return rc;
}

/* Every company's team ranking, then the companies' ranking. */
static int store_groups(struct router_txn *txn, struct standings *st, uint64_t gen)
{
    struct group *t = st->tg;
    size_t nt = st->nt;
    int rc = 0;

    /* Teams by company (companies are by id): each company's teams follow. */
    qsort(t, nt, sizeof(*t), team_company_cmp);
    for (uint32_t k = 0; k < st->nc && rc == 0; k++) {
        size_t n = 0;
        while (nt > 0 && t->company_id < st->cg[k].id) {
            t++;
            nt--;
        }
        while (n < nt && t[n].company_id == st->cg[k].id)
            n++;
        rc = store(txn, "teams", st->cg[k].id, gen, group_items(t, n, "team_id"));
        t += n;
        nt -= n;
    }
    if (rc == 0)
        rc = store(txn, "companies", 0, gen, group_items(st->cg, st->nc, "company_id"));
    return rc;
}

static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int api_standings_recompute(struct router *r)
{
    const struct shardmap *map = router_map(r);
    struct standings st = {.nhost = map ? map->nnode : 1};
    struct sql_rows gen = {0};
    struct router_txn *txn = NULL;
    uint64_t generation;
    int64_t t0 = mono_ms(), t_groups = 0, t_users = 0;
    json_t *items;
    int rc;

    rc = groups_load(r, &st);
    t_groups = mono_ms();
    if (rc == 0)
        rc = router_exec(r, ROUTER_GLOBAL, &gen,
                         "SELECT COALESCE(MAX(generation), 0) + 1 FROM %S.standings");
    if (rc < 0)
        goto out;
    generation = strtoull(sql_cell(&gen, 0, 0), NULL, 10);

    if ((rc = router_txn_begin(r, ROUTER_GLOBAL, &txn)) < 0)
        goto out;
    rc = store_company_users(r, txn, &st, generation);
    /* The global ranking: the best of the companies' rankings. */
    if (rc == 0 && st.top_failed)
        rc = -ENOMEM;
    if (rc == 0) {
        top_trim(&st);
        if (st.ntop > 0 && !groups_have_members(&st))
            api_log("standings: users but no aggregates: a cluster upgraded from "
                    "before them? run bcadmin rebuild-standings");
        items = json_array();
        for (uint32_t i = 0; i < st.ntop; i++)
            json_array_append_new(items, ranked_item(&st, &st.top[i], (int)i + 1));
        rc = store(txn, "users", 0, generation, items);
    }
    t_users = mono_ms();
    /* Last: it sorts the companies by average. */
    if (rc == 0)
        rc = store_groups(txn, &st, generation);
    if (rc == 0) {
        rc = router_txn_commit(txn);
        txn = NULL;
    }
    if (rc == 0)
        api_log("standings: generation %" PRIu64 ": %u companies, %u teams in %" PRId64
                " ms (sums %" PRId64 " ms, company rankings and the top %" PRId64
                " ms, teams and companies %" PRId64 " ms); %u large companies cut "
                "by their points histograms, %" PRId64 " of their users read",
                generation, st.nc, st.nt, mono_ms() - t0, t_groups - t0,
                t_users - t_groups, mono_ms() - t_users, st.cut, st.scan);
out:
    if (rc < 0)
        api_log("standings: recomputation failed: %s", router_last_error());
    router_txn_rollback(txn);
    standings_deinit(&st);
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
