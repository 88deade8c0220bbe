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
 *    a cut at or under the score of the K-th member, the K-th best of the
 *    shards' best scores (each shard's from its index entries, a dive per
 *    score, one row a shard and company out, however the scores spread),
 *    then in groups, one scatter a group, every host ranks its users of the
 *    group's companies at or above that score (index ranges: somewhat more
 *    than K users a company, ties aside) and returns its best K of each; the small
 *    companies in runs of consecutive companies (by id) whose users are all
 *    returned. A group or a run is cut at ROWS rows (at most K per company
 *    and host): a scatter's cost over 1,024 shards is mostly what it costs
 *    to be one, so the fewer the better, and ROWS bounds memory. Each
 *    shard's part of a scatter is a few index ranges, as short to parse as
 *    it can be: what one shard's statement costs, every shard of the host
 *    pays again;
 *  - the global ranking is merged from the company rankings (a user in the
 *    global top K is in his company's top K): no scatter of its own.
 * The results are JSON rows of the global standings table, all under one new
 * generation, in one transaction; the lists are written as JSON text (not
 * built in jansson) and go out in multi-row statements of about 1 MiB, sent
 * by a thread of their own while the scatters go on (api_standings_store.c).
 * The servers' table caches must hold every shard table they serve
 * (etc/mariadb: table_open_cache), or every scatter reopens tables.
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
/*
 * A scatter over large companies reads index ranges from the first to the
 * last: at most SPAN_OTHERS members of other companies in between. The
 * cuts' scatter brings a row a shard and company (its best scores): as
 * many companies as make ROWS of them (SPAN_MAX at most).
 */
#define SPAN_OTHERS ROWS
#define SPAN_MAX 256

/* The columns of a ranked user row, as user_text() reads them. */
#define USER_ROW "SELECT id, display_name, company_id, team_id, points FROM %S.users "

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
    long long pa = strtoll(a[API_USER_POINTS], NULL, 10),
              pb = strtoll(b[API_USER_POINTS], NULL, 10);
    unsigned long long ia = strtoull(a[API_USER_ID], NULL, 10),
                       ib = strtoull(b[API_USER_ID], NULL, 10);
    (void)arg;
    if (pa != pb)
        return pa > pb ? -1 : 1;
    return ia < ib ? -1 : ia > ib;
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
    uint32_t nshard;    /* shards of the map: for the cuts' scatters */
    struct ranked *top; /* the global ranking's candidates, 2 * TOP at most */
    uint32_t ntop;
    int floor_set;          /* top[TOP - 1] after a trim: a user below cannot enter */
    struct ranked floor;    /* its id and points only */
    int top_failed;         /* out of memory */
    int64_t scan;           /* users of large companies read, per their cuts */
    uint32_t cut;           /* large companies read from their cut */
    uint32_t reads;         /* scatters of user rows */
    struct router_txn *txn; /* the new generation's, on the global schema */
    uint64_t gen;
    struct api_lists *lists; /* writes the lists in txn (api_standings_store.c) */
    struct sql_buf text;     /* the user ranking being made, JSON */
    int64_t read_ms;         /* the user rankings' scatters took */
    int64_t store_ms;        /* the REPLACEs of the lists took */
    uint32_t stores;         /* REPLACE statements */
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
    if (st->ntop == TOP) {
        st->floor.id = st->top[TOP - 1].id;
        st->floor.points = st->top[TOP - 1].points;
        st->floor_set = 1;
    }
}

/* A ranked user of some company: a candidate of the global ranking. */
static void top_offer(struct standings *st, char **row)
{
    struct ranked *c;

    struct ranked me = {.id = strtoull(row[API_USER_ID], NULL, 10),
                        .points = strtoll(row[API_USER_POINTS], NULL, 10)};

    if (st->top_failed || (st->floor_set && ranked_cmp(&me, &st->floor) > 0))
        return;
    if (st->top == NULL && (st->top = calloc(2 * TOP, sizeof(*st->top))) == NULL) {
        st->top_failed = 1;
        return;
    }
    if (st->ntop == 2 * TOP)
        top_trim(st);
    c = &st->top[st->ntop];
    c->id = me.id;
    c->company = strtoull(row[API_USER_COMPANY], NULL, 10);
    c->points = me.points;
    c->name = strdup(row[API_USER_NAME] ? row[API_USER_NAME] : "");
    c->team = row[API_USER_TEAM] ? strdup(row[API_USER_TEAM]) : NULL;
    if (c->name == NULL || (row[API_USER_TEAM] && c->team == NULL)) {
        free(c->name);
        free(c->team);
        st->top_failed = 1;
        return;
    }
    st->ntop++;
}

/* Appends user row (sql_row columns) ranked rank to st->text. */
static int user_text(struct standings *st, char **row, int rank)
{
    uint64_t company = strtoull(row[API_USER_COMPANY], NULL, 10);
    const struct group *c = group_find(st->cg, st->nc, company);
    struct api_user_item u = {.rank = rank,
                              .id = strtoull(row[API_USER_ID], NULL, 10),
                              .company = company,
                              .name = row[API_USER_NAME],
                              .company_name = c ? c->name : "",
                              .team = row[API_USER_TEAM],
                              .points = strtoll(row[API_USER_POINTS], NULL, 10)};

    return api_standings_user_text(&st->text, &u);
}

/* The same for a user of the global ranking (a candidate kept by top_offer). */
static int ranked_text(struct standings *st, const struct ranked *r, int rank)
{
    const struct group *c = group_find(st->cg, st->nc, r->company);
    struct api_user_item u = {.rank = rank,
                              .id = r->id,
                              .company = r->company,
                              .name = r->name,
                              .company_name = c ? c->name : "",
                              .team = r->team,
                              .points = r->points};

    return api_standings_user_text(&st->text, &u);
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

/*
 * Writes one list (JSON text) under the new generation; lists go out
 * together, about a MiB a statement (thousands of small companies cost a few
 * statements, not a round trip each), sent while the reads go on.
 */
static int store_text(struct standings *st, const char *kind, uint64_t scope,
                      const char *text, size_t len)
{
    return api_lists_add(st->lists, kind, scope, text, len);
}

/*
 * The same for a list in jansson (stolen). Averages have two decimals and up
 * to 13 digits before them (points stay within 10^12, the balance limit):
 * 15 significant digits, all a double holds exactly (10 cut them short).
 */
static int store(struct standings *st, const char *kind, uint64_t scope, json_t *items)
{
    char *text = json_dumps(items, JSON_COMPACT | JSON_REAL_PRECISION(15));
    int rc;

    json_decref(items);
    if (text == NULL)
        return -ENOMEM;
    rc = store_text(st, kind, scope, text, strlen(text));
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
    sql_buf_deinit(&st->text);
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
        /*
         * Summed on each host: a row per host and group, not per shard. The
         * two SELECTs of a shard are two parts of the host's one UNION ALL
         * (") UNION ALL ("): a UNION inside each shard's part cost the host a
         * temporary table per shard, and the sums 50 % more time.
         */
        rc = router_scatter_wrap(
            r, &agg, "SELECT k, id, SUM(m), SUM(p) FROM (", ") t GROUP BY k, id",
            "SELECT 0 AS k, company_id AS id, members AS m, points AS p FROM "
            "%S.standings_company WHERE members <> 0 OR points <> 0) UNION ALL ("
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

    /* A limit on the host's whole UNION ALL: its rows stream, no temporary table. */
    snprintf(tail, sizeof(tail), " LIMIT %d", RUN_ROWS + 1);
    rc = router_scatter_wrap(r, rows, NULL, tail,
                             USER_ROW "WHERE company_id BETWEEN %u AND %u AND role <> "
                                      "'platform_admin'",
                             st->cg[a].id, st->cg[b - 1].id);
    if (rc == 0 && rows->nrow > RUN_ROWS) {
        sql_rows_free(rows);
        return -E2BIG;
    }
    return rc == 0 ? api_standings_sort_rows(rows) : rc;
}

/* The stored ranking of company cg[k], from rows (by company) at *i. */
static int store_company(struct standings *st, uint32_t k, const struct sql_rows *rows,
                         uint32_t *i)
{
    int rank = 0, rc;

    st->text.len = 0;
    rc = sql_buf_add(&st->text, "[", 1);
    /* Rows are by company: skip those of a company not listed. */
    for (; *i < rows->nrow && rc == 0; (*i)++) {
        char **row = &rows->cell[(size_t)*i * API_USER_NCOL];
        uint64_t c = strtoull(row[API_USER_COMPANY], NULL, 10);
        if (c > st->cg[k].id)
            break;
        if (c == st->cg[k].id && rank < TOP) {
            rc = user_text(st, row, ++rank);
            top_offer(st, row);
        }
    }
    if (rc == 0)
        rc = sql_buf_add(&st->text, "]", 1);
    return rc ? rc : store_text(st, "users", st->cg[k].id, st->text.buf, st->text.len);
}

/* Company cg[k]'s ranking by a top-K scatter of its own (every member read). */
static int store_company_alone(struct router *r, struct standings *st, uint32_t k)
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
        rc = store_company(st, k, &rows, &i);
    sql_rows_free(&rows);
    return rc;
}

/* Rows of company id in rows (sorted by company) from *i on. */
static uint32_t company_rows(const struct sql_rows *rows, uint32_t i, uint64_t id)
{
    uint32_t n = 0;

    for (; i < rows->nrow; i++) {
        uint64_t c = strtoull(rows->cell[(size_t)i * API_USER_NCOL + API_USER_COMPANY],
                              NULL, 10);
        if (c > id)
            break;
        n += c == id;
    }
    return n;
}

/*
 * The rankings of the large companies (more than TOP members). First each
 * one's cut, the TOP-th best of its shards' best scores, at or under the
 * score of its TOP-th member (api_standings_cuts); then its users at or
 * above the cut, which an index range reads (company_points): somewhat more
 * than TOP of them (a shard may hold several of the best), not the
 * company. As many companies a scatter as bring at most ROWS rows (each
 * host returns at most TOP of each), in which every host ranks its users of
 * those companies (a window per company) and returns its best TOP of each.
 * A statement per company would cost its parse over every shard of the
 * host: 100 of them took 10 s at 1,024 shards. Both the cuts and the
 * users are read by spans of companies in id order (a few index ranges a
 * shard, api_standings_group_parts()) with few members of small companies
 * between them (SPAN_OTHERS), the users through company_points (FORCE
 * INDEX: MariaDB scanned each shard's whole table for ranges that span most
 * of it; on the index, entries under the cuts are skipped before any row is
 * read, which took a recomputation from 1,509-1,924 ms to 1,291-1,468:
 * benchmarks.md, run 123). A company without a cut (members in fewer than TOP
 * shards) is read whole; one whose cut gave fewer than TOP users (points
 * moved between the reads) is read again, whole.
 */
static int store_large_companies(struct router *r, struct standings *st)
{
    int64_t most = (int64_t)TOP * (st->nhost ? st->nhost : 1), rows_in = 0, t;
    uint32_t *large = calloc(st->nc ? st->nc : 1, sizeof(*large)), nl = 0, g0 = 0;
    struct api_points_cut *cut = calloc(st->nc ? st->nc : 1, sizeof(*cut));
    /* small[k]: members of the small companies before cg[k] */
    int64_t *small = calloc(st->nc + 1, sizeof(*small));
    struct sql_buf cond = {0}, tail = {0};
    uint32_t span = ROWS / (st->nshard ? st->nshard : 1);
    int rc = large && cut && small ? 0 : -ENOMEM;

    if (span < 1)
        span = 1;
    if (span > SPAN_MAX)
        span = SPAN_MAX;
    for (uint32_t k = 0; k < st->nc && rc == 0; k++) {
        small[k + 1] = small[k] + (st->cg[k].members > TOP ? 0 : st->cg[k].members);
        if (st->cg[k].members > TOP) {
            cut[nl].company = st->cg[k].id;
            large[nl++] = k;
        }
    }
#define OTHERS(a, b) (small[large[b]] - small[large[a]])
    /* The cuts: spans of large companies with few members of others between. */
    t = sql_now_ms();
    for (uint32_t a = 0, b; a < nl && rc == 0; a = b) {
        for (b = a + 1; b < nl && b - a < span && OTHERS(a, b) <= SPAN_OTHERS; b++)
            ;
        rc = api_standings_cuts(r, TOP, cut + a, b - a);
    }
    st->read_ms += sql_now_ms() - t;
    for (uint32_t g = 0; g <= nl && rc == 0; g++) {
        struct sql_rows rows = {0};
        uint32_t i = 0;

        if (g < nl) {
            int64_t n = cut[g].found ? cut[g].at_or_above : st->cg[large[g]].members;
            int64_t brings = n < most ? n : most;
            st->scan += n;
            st->cut += cut[g].found;
            /* Over the budget: the group so far goes first, g opens the next. */
            if (g == g0 || (rows_in + brings <= ROWS && OTHERS(g0, g) <= SPAN_OTHERS)) {
                rows_in += brings;
                continue;
            }
        } else if (g == g0) {
            break;
        }
        /* Companies [g0, g) are a full group, or the last one at the end. */
        rc = api_standings_group_parts(&cond, &tail, &cut[g0], g - g0);
        t = sql_now_ms();
        st->reads++;
        if (rc == 0)
            rc = router_scatter_wrap(
                r, &rows,
                "SELECT id, display_name, company_id, team_id, points FROM (SELECT *, "
                "ROW_NUMBER() OVER (PARTITION BY company_id ORDER BY points DESC, id "
                "ASC) AS rn FROM (",
                tail.buf,
                USER_ROW "FORCE INDEX (company_points) WHERE (%R) AND role <> "
                         "'platform_admin'",
                cond.buf);
        if (rc == 0)
            rc = api_standings_sort_rows(&rows);
        st->read_ms += sql_now_ms() - t;
        /* The group is in id order, as the rows are. */
        for (uint32_t j = g0; j < g && rc == 0; j++) {
            uint32_t k = large[j];
            if (cut[j].found && company_rows(&rows, i, st->cg[k].id) < TOP) {
                api_log("standings: company %" PRIu64 " has fewer users at or above "
                        "%" PRId64 " points than a moment before (points moved); "
                        "reading all its users",
                        st->cg[k].id, cut[j].points);
                i += company_rows(&rows, i, st->cg[k].id);
                rc = store_company_alone(r, st, k);
            } else {
                rc = store_company(st, k, &rows, &i);
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
#undef OTHERS
    sql_buf_deinit(&cond);
    sql_buf_deinit(&tail);
    free(small);
    free(cut);
    free(large);
    return rc;
}

/* Every company's user ranking, a run of companies at a time. */
static int store_company_users(struct router *r, struct standings *st)
{
    struct sql_rows rows = {0};
    int rc = 0;

    rc = store_large_companies(r, st);
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
        int64_t t = sql_now_ms();
        st->reads++;
        rc = company_users_load(r, st, a, b, &rows);
        st->read_ms += sql_now_ms() - t;
        if (rc == -E2BIG) {
            /* More members than the aggregates say: a top-K read each. */
            api_log("standings: companies %" PRIu64 "..%" PRIu64 " have more members "
                    "than their aggregates say; run bcadmin rebuild-standings",
                    st->cg[a].id, st->cg[b - 1].id);
            rc = 0;
            for (uint32_t k = a; k < b && rc == 0; k++)
                rc = store_company_alone(r, st, k);
            continue;
        }
        for (uint32_t k = a; k < b && rc == 0; k++)
            rc = store_company(st, k, &rows, &i);
        sql_rows_free(&rows);
    }
    sql_rows_free(&rows);
    return rc;
}

/* Every company's team ranking, then the companies' ranking. */
static int store_groups(struct standings *st)
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
        rc = store(st, "teams", st->cg[k].id, group_items(t, n, "team_id"));
        t += n;
        nt -= n;
    }
    if (rc == 0)
        rc = store(st, "companies", 0, group_items(st->cg, st->nc, "company_id"));
    return rc;
}

int api_standings_recompute(struct router *r)
{
    const struct shardmap *map = router_map(r);
    struct standings st = {.nhost = map ? map->nnode : 1,
                           .nshard = map ? map->nshard : 0};
    struct sql_rows gen = {0};
    int64_t t0 = sql_now_ms(), t_groups = 0, t_users = 0;
    int rc;

    /*
     * One recomputation at a time. The first statement locks the table's
     * lock row until the commit, so a second one (two settlements ending
     * together, bcadmin) waits, then reads and numbers after what the first
     * stored. Without it, one that read older sums could commit last and
     * leave them served, and both could take one generation.
     */
    if ((rc = router_txn_begin(r, ROUTER_GLOBAL, &st.txn)) < 0 ||
        (rc = router_txn_exec(st.txn, NULL,
                              "INSERT INTO %S.standings (kind, scope, generation, "
                              "computed_at, body) VALUES ('recompute', 0, 0, "
                              "UTC_TIMESTAMP(3), '') ON DUPLICATE KEY UPDATE "
                              "computed_at = UTC_TIMESTAMP(3)")) < 0 ||
        (rc = router_txn_exec(st.txn, &gen,
                              "SELECT COALESCE(MAX(generation), 0) + 1 FROM "
                              "%S.standings")) < 0)
        goto out;
    st.gen = strtoull(sql_cell(&gen, 0, 0), NULL, 10);
    rc = groups_load(r, &st);
    t_groups = sql_now_ms();
    if (rc < 0 || (rc = api_lists_start(st.txn, st.gen, &st.lists)) < 0)
        goto out;
    rc = store_company_users(r, &st);
    /* The global ranking: the best of the companies' rankings. */
    if (rc == 0 && st.top_failed)
        rc = -ENOMEM;
    if (rc == 0) {
        top_trim(&st);
        if (st.ntop > 0 && !groups_have_members(&st))
            api_log("standings: users but no aggregates: a cluster upgraded from "
                    "before them? run bcadmin rebuild-standings");
        st.text.len = 0;
        rc = sql_buf_add(&st.text, "[", 1);
        for (uint32_t i = 0; i < st.ntop && rc == 0; i++)
            rc = ranked_text(&st, &st.top[i], (int)i + 1);
        if (rc == 0)
            rc = sql_buf_add(&st.text, "]", 1);
        if (rc == 0)
            rc = store_text(&st, "users", 0, st.text.buf, st.text.len);
    }
    t_users = sql_now_ms();
    /* Last: it sorts the companies by average. */
    if (rc == 0)
        rc = store_groups(&st);
    if (st.lists != NULL) {
        /* The last write, and the status of them all (whatever rc says). */
        int last = api_lists_finish(st.lists, &st.stores, &st.store_ms);
        if (rc == 0)
            rc = last;
    }
    if (rc == 0) {
        rc = router_txn_commit(st.txn);
        st.txn = NULL;
    }
    if (rc == 0)
        api_log("standings: generation %" PRIu64 ": %u companies, %u teams in %" PRId64
                " ms (sums %" PRId64 " ms, company rankings and the top %" PRId64
                " ms, of which %u scatters of users %" PRId64
                " ms, teams and companies %" PRId64
                " ms; %u writes of the lists %" PRId64
                " ms); %u large companies cut by their shards' best scores, at least "
                "%" PRId64 " of their users read",
                st.gen, st.nc, st.nt, sql_now_ms() - t0, t_groups - t0,
                t_users - t_groups, st.reads, st.read_ms, sql_now_ms() - t_users,
                st.stores, st.store_ms, st.cut, st.scan);
out:
    if (rc < 0)
        api_log("standings: recomputation failed: %s", router_last_error());
    /* The writer's thread is done with the transaction before it ends. */
    api_lists_destroy(st.lists);
    router_txn_rollback(st.txn);
    standings_deinit(&st);
    sql_rows_free(&gen);
    return rc;
}
