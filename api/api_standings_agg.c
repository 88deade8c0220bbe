/*
 * api_standings_agg.c: the standings aggregates of each shard, kept in the
 * transactions that change what they sum.
 *
 * Every shard holds standings_company (company_id, members, points) and
 * standings_team (team_id, company_id, members, points) over its own users,
 * platform admins excluded (etc/schema/shard.sql). Its standings_points
 * (members per company and number of points) is no longer written: the
 * large companies' cuts come from the users' index (below), which costs
 * the same however the scores spread. A recomputation of the
 * standings reads those rows instead of every user, so its cost grows with
 * companies and teams, not with users.
 *
 * Whoever changes a user's points or membership changes the aggregates in
 * the same transaction on the same shard, after locking the users' rows:
 * a settlement batch (api_standings_batch), a signup and a change of team
 * (api_standings_member). The users' rows are always locked before the
 * aggregates' rows, and aggregate rows in ascending id order, so two such
 * transactions wait for each other instead of deadlocking.
 *
 * Also here, for the recomputation (api_standings.c): the large companies'
 * cuts from their shards' best scores, the sort of ranked user rows and the
 * user items written as JSON text.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_int.h"

/* A sum of points by id (a company or a team), and the team's company. */
struct agg_sum {
    uint64_t id, company;
    int64_t points;
};

static int agg_cmp(const void *a, const void *b)
{
    const struct agg_sum *x = a, *y = b;

    return x->id < y->id ? -1 : x->id > y->id;
}

/*
 * The users' points summed by company (team 0) or by team (team 1), in id
 * order, zero sums left out, as rows of INSERT ... VALUES into b.
 */
static int agg_rows(const struct api_batch_user *u, size_t n, int team,
                    struct sql_buf *b)
{
    struct agg_sum *s = malloc((n > 0 ? n : 1) * sizeof(*s));
    size_t k = 0, m = 0;
    char row[96];
    int rc = 0, len;

    if (s == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++)
        if (u[i].found && !u[i].admin && (!team || u[i].team != 0))
            s[k++] = (struct agg_sum){team ? u[i].team : u[i].company, u[i].company,
                                      u[i].points};
    qsort(s, k, sizeof(*s), agg_cmp);
    /* Merged by id; a team's company: its members' (the lowest, were they two). */
    for (size_t i = 0; i < k; i++) {
        if (m > 0 && s[m - 1].id == s[i].id) {
            s[m - 1].points += s[i].points;
            if (s[i].company < s[m - 1].company)
                s[m - 1].company = s[i].company;
        } else {
            s[m++] = s[i];
        }
    }
    for (size_t i = 0; i < m && rc == 0; i++) {
        if (s[i].points == 0)
            continue;
        len = team ? snprintf(row, sizeof(row),
                              "%s(%" PRIu64 ",%" PRIu64 ",0,%" PRId64 ")",
                              b->len > 0 ? "," : "", s[i].id, s[i].company, s[i].points)
                   : snprintf(row, sizeof(row), "%s(%" PRIu64 ",0,%" PRId64 ")",
                              b->len > 0 ? "," : "", s[i].id, s[i].points);
        rc = sql_buf_add(b, row, (size_t)len);
    }
    free(s);
    return rc;
}

int api_standings_batch(struct router_txn *txn, const struct api_batch_user *users,
                        size_t n)
{
    struct sql_buf co = {0}, tm = {0};
    int rc;

    /*
     * The caller holds the batch's users' rows (locked in id order, before
     * this): a change of team, which locks its user before moving his
     * points, waits for this batch, or this batch for it, and the team the
     * caller read is the one the user is in. Then the aggregate rows, in id
     * order in each table. A cancelled match gives nobody points: nothing.
     */
    rc = agg_rows(users, n, 0, &co);
    if (rc == 0)
        rc = agg_rows(users, n, 1, &tm);
    if (rc == 0 && co.len > 0)
        rc = router_txn_exec(
            txn, NULL,
            "INSERT INTO %S.standings_company (company_id, members, "
            "points) VALUES %R ON DUPLICATE KEY UPDATE points = points + "
            "VALUES(points)",
            co.buf);
    if (rc == 0 && tm.len > 0)
        rc = router_txn_exec(
            txn, NULL,
            "INSERT INTO %S.standings_team (team_id, company_id, members, "
            "points) VALUES %R ON DUPLICATE KEY UPDATE points = points + "
            "VALUES(points)",
            tm.buf);
    sql_buf_deinit(&co);
    sql_buf_deinit(&tm);
    return rc;
}

int api_standings_member(struct router_txn *txn, uint64_t company, int join,
                         uint64_t from_team, uint64_t to_team, int64_t points)
{
    uint64_t lo = from_team < to_team ? from_team : to_team;
    uint64_t hi = from_team < to_team ? to_team : from_team;
    int64_t lo_sign = lo == from_team ? -1 : 1, hi_sign = -lo_sign;
    int rc = 0;

    if (join)
        rc = router_txn_exec(
            txn, NULL,
            "INSERT INTO %S.standings_company (company_id, members, points) VALUES "
            "(%u, 1, %d) ON DUPLICATE KEY UPDATE members = members + 1, points = "
            "points + VALUES(points)",
            company, points);
    /* Both teams in one statement, the lower id first (the batches' order). */
    if (rc == 0 && from_team != to_team && lo == 0)
        rc = router_txn_exec(
            txn, NULL,
            "INSERT INTO %S.standings_team (team_id, company_id, members, points) "
            "VALUES (%u, %u, %d, %d) ON DUPLICATE KEY UPDATE members = members + "
            "VALUES(members), points = points + VALUES(points)",
            hi, company, hi_sign, hi_sign * points);
    else if (rc == 0 && from_team != to_team)
        rc = router_txn_exec(
            txn, NULL,
            "INSERT INTO %S.standings_team (team_id, company_id, members, points) "
            "VALUES (%u, %u, %d, %d), (%u, %u, %d, %d) ON DUPLICATE KEY UPDATE "
            "members = members + VALUES(members), points = points + VALUES(points)",
            lo, company, lo_sign, lo_sign * points, hi, company, hi_sign,
            hi_sign * points);
    return rc;
}

static int best_cmp(const void *a, const void *b)
{
    const struct api_points_best *x = a, *y = b;

    if (x->company != y->company)
        return x->company < y->company ? -1 : 1;
    if (x->points != y->points)
        return x->points > y->points ? -1 : 1;
    return 0;
}

static struct api_points_cut *cut_find(struct api_points_cut *c, size_t n, uint64_t id)
{
    size_t lo = 0, hi = n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c[mid].company == id)
            return &c[mid];
        if (c[mid].company < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

uint32_t api_standings_cut_per_shard(uint32_t top, uint32_t nshard)
{
    uint32_t n = nshard == 0 || 2 * top <= nshard ? 1 : (2 * top + nshard - 1) / nshard;

    return n < API_CUT_PER_SHARD_MAX ? n : API_CUT_PER_SHARD_MAX;
}

void api_standings_cut_merge(struct api_points_best *b, size_t nb, uint32_t top,
                             struct api_points_cut *c, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        c[i].points = 0;
        c[i].at_or_above = 0;
        c[i].found = 0;
    }
    if (nb > 0)
        qsort(b, nb, sizeof(*b), best_cmp);
    /* Down each company's best scores to the top-th (and its ties). */
    for (size_t i = 0; i < nb; i++) {
        struct api_points_cut *cut = cut_find(c, n, b[i].company);
        if (cut == NULL || cut->found)
            continue;
        cut->points = b[i].points;
        cut->at_or_above++;
        if (cut->at_or_above >= (int64_t)top &&
            (i + 1 == nb || b[i + 1].company != b[i].company ||
             b[i + 1].points != b[i].points))
            cut->found = 1;
    }
}

/*
 * The cuts' statement for per_shard best scores a shard and company: one
 * dependent subquery per place, each a dive into company_points that reads
 * that one index entry (backwards from the company's best), driven by the
 * shard's standings_company rows of the range. A window over the same
 * entries read every one of them: 0.29-0.34 s of db1's time against
 * 0.13-0.15 s at 512 shards, the same scores (docs/benchmarks.md, run 121).
 */
static int cuts_sql(struct sql_buf *sql, uint32_t per_shard, const char *range)
{
    char term[192];
    int len, rc = sql_buf_add(sql, "SELECT c.company_id", 19);

    for (uint32_t i = 0; i < per_shard && rc == 0; i++) {
        len = snprintf(
            term, sizeof(term),
            ", (SELECT points FROM %%S.users u FORCE INDEX (company_points) "
            "WHERE u.company_id = c.company_id ORDER BY points DESC LIMIT %u, 1)",
            i);
        rc = sql_buf_add(sql, term, (size_t)len);
    }
    if (rc == 0) {
        len =
            snprintf(term, sizeof(term),
                     " FROM %%S.standings_company c WHERE c.company_id BETWEEN %s AND "
                     "c.members > 0",
                     range);
        rc = sql_buf_add(sql, term, (size_t)len);
    }
    return rc;
}

/*
 * The statement parts of a group of large companies c[0..n) (in id order):
 * cond, each shard's condition, and tail, the host's filter after ranking.
 * A shard reads at most API_GROUP_PIECES index ranges: the group's companies split
 * where their cuts differ most (runs of equal cuts first), each range from
 * its first company to its last at or above its lowest cut (the caller
 * keeps the other companies in the group's range few). The host keeps each
 * company's users at or above its own cut (a CASE, written once a host,
 * not once a shard: parsing n conditions in every shard's statement cost
 * more than reading); rows under a cut rank after those above it, so the
 * ranks kept are right. With the bench's tied scores, two ranges (the
 * companies of 50,000 cut at 5, the others at 3) instead of one at 3 took
 * the first group from 0.31-0.38 s to 0.23-0.26 s on db1 (benchmarks.md).
 */
int api_standings_group_parts(struct sql_buf *cond, struct sql_buf *tail,
                              const struct api_points_cut *c, uint32_t n)
{
    struct piece {
        uint32_t first, last;
        int64_t low; /* INT64_MIN: a company read whole, no lower bound */
    } p[API_GROUP_PIECES + 1];
    char term[128];
    uint32_t np = 0;
    int len, rc = 0;

    cond->len = tail->len = 0;
    rc = sql_buf_add(tail, ") u) t WHERE rn <= 500", 22);
    for (uint32_t j = 0; j < n; j++) {
        int64_t low = c[j].found ? c[j].points : INT64_MIN;
        if (np > 0 && p[np - 1].low == low) {
            p[np - 1].last = j;
            continue;
        }
        p[np++] = (struct piece){j, j, low};
        if (np <= API_GROUP_PIECES)
            continue;
        /* One too many: merge the neighbours whose cuts are closest. */
        uint32_t best = 0;
        uint64_t gap = UINT64_MAX;
        for (uint32_t k = 0; k + 1 < np; k++) {
            int64_t hi = p[k].low > p[k + 1].low ? p[k].low : p[k + 1].low,
                    lo = p[k].low > p[k + 1].low ? p[k + 1].low : p[k].low;
            uint64_t d = (uint64_t)hi - (uint64_t)lo;
            if (d < gap) {
                gap = d;
                best = k;
            }
        }
        p[best].last = p[best + 1].last;
        if (p[best + 1].low < p[best].low)
            p[best].low = p[best + 1].low;
        memmove(&p[best + 1], &p[best + 2], (np - best - 2) * sizeof(*p));
        np--;
    }
    for (uint32_t k = 0; k < np && rc == 0; k++) {
        len = snprintf(term, sizeof(term),
                       "%s(company_id BETWEEN %" PRIu64 " AND %" PRIu64,
                       k ? " OR " : "", c[p[k].first].company, c[p[k].last].company);
        if (p[k].low != INT64_MIN)
            len += snprintf(term + len, sizeof(term) - (size_t)len,
                            " AND points >= %" PRId64, p[k].low);
        rc = sql_buf_add(cond, term, (size_t)len);
        if (rc == 0)
            rc = sql_buf_add(cond, ")", 1);
    }
    if (rc == 0)
        rc = sql_buf_add(tail, " AND points >= CASE company_id", 30);
    for (uint32_t j = 0; j < n && rc == 0; j++) {
        if (c[j].found)
            len = snprintf(term, sizeof(term), " WHEN %" PRIu64 " THEN %" PRId64,
                           c[j].company, c[j].points);
        else
            len = snprintf(term, sizeof(term), " WHEN %" PRIu64 " THEN points",
                           c[j].company);
        rc = sql_buf_add(tail, term, (size_t)len);
    }
    return rc == 0 ? sql_buf_add(tail, " END", 4) : rc;
}

int api_standings_cuts(struct router *r, uint32_t top, struct api_points_cut *c,
                       size_t n)
{
    const struct shardmap *map = router_map(r);
    uint32_t per_shard = api_standings_cut_per_shard(top, map ? map->nshard : 0);
    struct sql_rows rows = {0};
    struct api_points_best *b = NULL;
    size_t nb = 0;
    struct sql_buf sql = {0};
    char range[64];
    int rc = 0;

    if (n == 0)
        return 0;
    snprintf(range, sizeof(range), "%" PRIu64 " AND %" PRIu64, c[0].company,
             c[n - 1].company);
    /*
     * Each shard's best scores in each company of the range (enough that
     * shards with that many members make top): index entries only, however
     * the scores spread. The role is not read: platform admins are in the
     * platform company alone, never a large one (no ranked member). A shard
     * with fewer members than places gives NULL for the places it lacks.
     */
    rc = cuts_sql(&sql, per_shard, range);
    if (rc == 0)
        rc = router_scatter(r, &rows, sql.buf);
    sql_buf_deinit(&sql);
    if (rc == 0 && rows.nrow > 0 &&
        (b = calloc((size_t)rows.nrow * per_shard, sizeof(*b))) == NULL)
        rc = -ENOMEM;
    if (rc == 0) {
        for (uint32_t i = 0; i < rows.nrow; i++) {
            uint64_t company = strtoull(sql_cell(&rows, i, 0), NULL, 10);
            for (uint32_t k = 1; k <= per_shard; k++) {
                const char *p = sql_cell(&rows, i, k);
                if (p == NULL)
                    break;
                b[nb].company = company;
                b[nb++].points = strtoll(p, NULL, 10);
            }
        }
        api_standings_cut_merge(b, nb, top, c, n);
    }
    free(b);
    sql_rows_free(&rows);
    return rc;
}

/* A user row's sort key, parsed once (not at each comparison). */
struct row_key {
    uint64_t company, id;
    int64_t points;
    uint32_t row;
};

static int row_key_cmp(const void *a, const void *b)
{
    const struct row_key *x = a, *y = b;

    if (x->company != y->company)
        return x->company < y->company ? -1 : 1;
    if (x->points != y->points)
        return x->points > y->points ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

int api_standings_sort_rows(struct sql_rows *rows)
{
    size_t n = (size_t)rows->nrow * API_USER_NCOL;
    struct row_key *k;
    unsigned long *len;
    char **cell;

    if (rows->nrow < 2)
        return 0;
    k = malloc(rows->nrow * sizeof(*k));
    cell = malloc(n * sizeof(*cell));
    len = malloc(n * sizeof(*len));
    if (k == NULL || cell == NULL || len == NULL) {
        free(k);
        free(cell);
        free(len);
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < rows->nrow; i++) {
        char **row = &rows->cell[(size_t)i * API_USER_NCOL];
        k[i] = (struct row_key){.company = strtoull(row[API_USER_COMPANY], NULL, 10),
                                .id = strtoull(row[API_USER_ID], NULL, 10),
                                .points = strtoll(row[API_USER_POINTS], NULL, 10),
                                .row = i};
    }
    qsort(k, rows->nrow, sizeof(*k), row_key_cmp);
    for (uint32_t i = 0; i < rows->nrow; i++) {
        size_t to = (size_t)i * API_USER_NCOL, from = (size_t)k[i].row * API_USER_NCOL;
        memcpy(&cell[to], &rows->cell[from], API_USER_NCOL * sizeof(*cell));
        memcpy(&len[to], &rows->len[from], API_USER_NCOL * sizeof(*len));
    }
    free(rows->cell);
    free(rows->len);
    rows->cell = cell;
    rows->len = len;
    free(k);
    return 0;
}

/* Appends s as a JSON string literal (RFC 8259 escapes; UTF-8 as it is). */
static int json_text_str(struct sql_buf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    char esc[6] = {'\\', 'u', '0', '0', 0, 0};
    const char *run = s;
    int rc = sql_buf_add(b, "\"", 1);

    for (; rc == 0 && *s != '\0'; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch >= 0x20 && ch != '"' && ch != '\\')
            continue;
        rc = sql_buf_add(b, run, (size_t)(s - run));
        if (rc == 0 && (ch == '"' || ch == '\\')) {
            esc[1] = (char)ch;
            rc = sql_buf_add(b, esc, 2);
        } else if (rc == 0) {
            esc[1] = 'u';
            esc[4] = hex[ch >> 4];
            esc[5] = hex[ch & 15];
            rc = sql_buf_add(b, esc, 6);
        }
        run = s + 1;
    }
    if (rc == 0)
        rc = sql_buf_add(b, run, (size_t)(s - run));
    return rc == 0 ? sql_buf_add(b, "\"", 1) : rc;
}

int api_standings_user_text(struct sql_buf *b, const struct api_user_item *u)
{
    char num[160];
    int len, rc;

    len = snprintf(num, sizeof(num),
                   "%s{\"rank\":%d,\"user_id\":\"%" PRIu64 "\",\"display_name\":",
                   b->len > 1 ? "," : "", u->rank, u->id);
    rc = sql_buf_add(b, num, (size_t)len);
    if (rc == 0)
        rc = json_text_str(b, u->name ? u->name : "");
    if (rc == 0) {
        len = snprintf(num, sizeof(num),
                       ",\"company_id\":\"%" PRIu64 "\",\"company_name\":", u->company);
        rc = sql_buf_add(b, num, (size_t)len);
    }
    if (rc == 0)
        rc = json_text_str(b, u->company_name ? u->company_name : "");
    if (rc == 0) {
        if (u->team != NULL && u->team[0] != '\0')
            len = snprintf(num, sizeof(num),
                           ",\"team_id\":\"%" PRIu64 "\",\"points\":%" PRId64 "}",
                           (uint64_t)strtoull(u->team, NULL, 10), u->points);
        else
            len = snprintf(num, sizeof(num),
                           ",\"team_id\":null,\"points\":%" PRId64 "}", u->points);
        rc = sql_buf_add(b, num, (size_t)len);
    }
    return rc;
}
