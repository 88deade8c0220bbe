/*
 * reshard_compare.c: are two copies of a shard schema equal?
 *
 * Both connections hold snapshots of the same logical moment (the caller
 * arranges it: the target at the fence against the frozen source, or the
 * target stopped at the source snapshot's binlog position). Every table but
 * shard_state (each copy's own fencing row) is walked in chunks of about
 * CHUNK_ROWS rows by the first primary key column; a chunk's row count and
 * the XOR of 64-bit row hashes (MD5 over every column and its NULL-ness) are
 * compared; in a chunk that differs, the rows are listed by primary key.
 *
 * Statements are assembled with sql_format(): names through %I, bounds
 * through %d/%u/%b, and %R only for the hash and key expressions this file
 * built from %I-checked column names.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reshard/reshard_int.h"
#include "shardmap/shardmap_err.h"

#define CHUNK_ROWS 2000
#define MAX_LISTED 50 /* differences listed per run; all are counted */
#define SNAPSHOT_TIMEOUT_MS (3600u * 1000u)
#define SNAPSHOT_CONNECT_MS 5000u

struct table {
    const char *name;    /* ref in the table list */
    struct sql_buf hash; /* SQL expression: the row's 64-bit hash */
    struct sql_buf key;  /* SQL expression: the primary key as text */
    char k[65];          /* first primary key column: the chunking column */
    int k_numeric;       /* its values are written without quotes */
};

/* A chunk bound: a value of the chunking column as the source returned it. */
struct bound {
    char *v; /* owned, NULL: no bound */
    size_t len;
};

struct compare {
    const struct reshard_opts *opts; /* ref: the caller's */
    uint32_t shard;
    const char *at;
    struct sql_conn *src, *dst; /* ref: the caller's */
    const char *schema;
    struct reshard_compare *res;
    uint32_t ntable;
    uint32_t listed;
    int64_t start_ms;
};

int reshard__snapshot(const struct sql_endpoint *ep, struct sql_conn **out)
{
    struct sql_conn_opts o = {.connect_timeout_ms = SNAPSHOT_CONNECT_MS,
                              .query_timeout_ms = SNAPSHOT_TIMEOUT_MS,
                              .multi_statements = 1};
    struct sql_conn *c = NULL;
    int rc;

    *out = NULL;
    rc = sql_conn_open(ep, &o, &c);
    if (rc < 0)
        return rc;
    rc = sql_exec(c, NULL,
                  "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ; "
                  "START TRANSACTION WITH CONSISTENT SNAPSHOT");
    if (rc < 0) {
        sql_conn_close(c);
        return rc;
    }
    *out = c;
    return 0;
}

/* Runs the statement in q on c (rows may be NULL) and empties q. */
static int run(struct sql_conn *c, struct sql_buf *q, struct sql_rows *rows)
{
    int rc = sql_query(c, q->buf, q->len, rows);

    sql_buf_deinit(q);
    return rc;
}

/* The hash and key expressions and the chunking column of t. */
static int load_table(struct compare *v, struct table *t)
{
    struct sql_buf cols = {0}, nulls = {0};
    struct sql_rows r = {0};
    int rc;

    rc = sql_exec(v->src, &r,
                  "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE "
                  "TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
                  v->schema, t->name);
    if (rc < 0) {
        rc = reshard__context_error(rc, "reading the columns of %s.%s", v->schema,
                                    t->name);
        goto out;
    }
    for (uint32_t i = 0; i < r.nrow; i++) {
        const char *c = sql_cell(&r, i, 0);
        if (c == NULL || !sql_ident_ok(c)) {
            sql_set_error("column %s.%s.%s: not a plain identifier", v->schema, t->name,
                          c ? c : "NULL");
            rc = -EINVAL;
            goto out;
        }
        rc = sql_format(&cols, NULL, 0, i ? ", %I" : "%I", c);
        if (rc == 0)
            rc = sql_format(&nulls, NULL, 0, i ? ", ISNULL(%I)" : "ISNULL(%I)", c);
        if (rc < 0)
            goto out;
    }
    if (r.nrow == 0) {
        sql_set_error("table %s.%s has no columns on %s", v->schema, t->name,
                      sql_conn_endpoint(v->src)->name);
        rc = BC_ENOTFOUND;
        goto out;
    }
    rc = sql_format(&t->hash, NULL, 0,
                    "CAST(CONV(LEFT(MD5(CONCAT_WS('#', %R, CONCAT(%R))), 16), 16, 10) "
                    "AS UNSIGNED)",
                    cols.buf, nulls.buf);
    if (rc < 0)
        goto out;
    sql_rows_free(&r);
    rc =
        sql_exec(v->src, &r,
                 "SELECT s.COLUMN_NAME, c.DATA_TYPE FROM information_schema.STATISTICS "
                 "s JOIN information_schema.COLUMNS c ON c.TABLE_SCHEMA = "
                 "s.TABLE_SCHEMA AND c.TABLE_NAME = s.TABLE_NAME AND c.COLUMN_NAME = "
                 "s.COLUMN_NAME WHERE s.TABLE_SCHEMA = %s AND s.TABLE_NAME = %s AND "
                 "s.INDEX_NAME = 'PRIMARY' ORDER BY s.SEQ_IN_INDEX",
                 v->schema, t->name);
    if (rc < 0) {
        rc = reshard__context_error(rc, "reading the primary key of %s.%s", v->schema,
                                    t->name);
        goto out;
    }
    if (r.nrow == 0) {
        sql_set_error("table %s.%s has no primary key", v->schema, t->name);
        rc = -EINVAL;
        goto out;
    }
    rc = sql_format(&t->key, NULL, 0, "CONCAT_WS(','");
    for (uint32_t i = 0; rc == 0 && i < r.nrow; i++) {
        const char *c = sql_cell(&r, i, 0), *type = sql_cell(&r, i, 1);
        if (c == NULL || !sql_ident_ok(c)) {
            sql_set_error("column %s.%s.%s: not a plain identifier", v->schema, t->name,
                          c ? c : "NULL");
            rc = -EINVAL;
            goto out;
        }
        if (i == 0) {
            snprintf(t->k, sizeof(t->k), "%s", c);
            t->k_numeric = type != NULL && strstr(type, "int") != NULL;
        }
        rc = sql_format(&t->key, NULL, 0, ", %I", c);
    }
    if (rc == 0)
        rc = sql_format(&t->key, NULL, 0, ")");
out:
    sql_rows_free(&r);
    sql_buf_deinit(&cols);
    sql_buf_deinit(&nulls);
    return rc;
}

/*
 * Appends a value of the chunking column: an integer bare (a BIGINT compared
 * with a quoted literal would be compared as a double), anything else quoted.
 */
static int add_bound(struct sql_buf *q, const struct table *t, const struct bound *b)
{
    char *end;

    if (t->k_numeric && b->len > 0 && b->len < 32) {
        errno = 0;
        if (b->v[0] == '-') {
            long long x = strtoll(b->v, &end, 10);
            if (errno == 0 && end == b->v + b->len)
                return sql_format(q, NULL, 0, "%d", (int64_t)x);
        } else if (b->v[0] >= '0' && b->v[0] <= '9') {
            unsigned long long x = strtoull(b->v, &end, 10);
            if (errno == 0 && end == b->v + b->len)
                return sql_format(q, NULL, 0, "%u", (uint64_t)x);
        }
    }
    return sql_format(q, NULL, 0, "%b", b->v, b->len);
}

/* Appends "k > lo AND k <= hi", either bound left out when it has none. */
static int add_range(struct sql_buf *q, const struct table *t, const struct bound *lo,
                     const struct bound *hi)
{
    int rc = 0;

    if (lo->v == NULL && hi->v == NULL)
        return sql_format(q, NULL, 0, "1");
    if (lo->v != NULL) {
        rc = sql_format(q, NULL, 0, "%I > ", t->k);
        if (rc == 0)
            rc = add_bound(q, t, lo);
    }
    if (rc == 0 && hi->v != NULL) {
        rc = sql_format(q, NULL, 0, lo->v != NULL ? " AND %I <= " : "%I <= ", t->k);
        if (rc == 0)
            rc = add_bound(q, t, hi);
    }
    return rc;
}

/* One row of a differing chunk: cells of a struct sql_rows. */
struct keyed {
    const char *key;  /* ref: the primary key as text */
    const char *hash; /* ref: its 64-bit hash in decimal */
};

static int keyed_cmp(const void *a, const void *b)
{
    return strcmp(((const struct keyed *)a)->key, ((const struct keyed *)b)->key);
}

/*
 * The rows of a range on c: rows holds the cells, *out (owned by the
 * caller, free()) points into them, sorted by key.
 */
static int fetch_rows(struct compare *v, struct sql_conn *c, const struct table *t,
                      const struct bound *lo, const struct bound *hi,
                      struct sql_rows *rows, struct keyed **out)
{
    struct sql_buf q = {0};
    int rc;

    *out = NULL;
    rc = sql_format(&q, NULL, 0, "SELECT %R, %R FROM %I.%I WHERE ", t->key.buf,
                    t->hash.buf, v->schema, t->name);
    if (rc == 0)
        rc = add_range(&q, t, lo, hi);
    if (rc < 0) {
        sql_buf_deinit(&q);
        return rc;
    }
    rc = run(c, &q, rows);
    if (rc < 0)
        return reshard__context_error(rc, "listing the rows of %s.%s", v->schema,
                                      t->name);
    *out = calloc(rows->nrow ? rows->nrow : 1, sizeof(**out));
    if (*out == NULL)
        return -ENOMEM;
    for (uint32_t i = 0; i < rows->nrow; i++) {
        const char *k = sql_cell(rows, i, 0), *h = sql_cell(rows, i, 1);
        (*out)[i].key = k ? k : "";
        (*out)[i].hash = h ? h : "";
    }
    qsort(*out, rows->nrow, sizeof(**out), keyed_cmp);
    return 0;
}

static void difference(struct compare *v, const struct table *t, const char *key,
                       const char *what)
{
    struct reshard_event ev = {.kind = RESHARD_EV_DIFFERENCE, .shard = v->shard};

    v->res->diffs++;
    if (v->listed++ >= MAX_LISTED)
        return;
    ev.copy.table = t->name;
    ev.verify.at = v->at;
    ev.verify.key = key;
    ev.verify.what = what;
    reshard__emit(v->opts, &ev);
}

/* Lists the rows of one differing chunk. */
static int drill(struct compare *v, const struct table *t, const struct bound *lo,
                 const struct bound *hi)
{
    struct sql_rows ra = {0}, rb = {0};
    struct keyed *a = NULL, *b = NULL;
    uint32_t i = 0, j = 0, before = v->res->diffs;
    int rc;

    rc = fetch_rows(v, v->src, t, lo, hi, &ra, &a);
    if (rc == 0)
        rc = fetch_rows(v, v->dst, t, lo, hi, &rb, &b);
    if (rc < 0)
        goto out;
    while (i < ra.nrow || j < rb.nrow) {
        int c = i >= ra.nrow ? 1 : j >= rb.nrow ? -1 : strcmp(a[i].key, b[j].key);
        if (c < 0) {
            difference(v, t, a[i++].key, "missing on the target");
        } else if (c > 0) {
            difference(v, t, b[j++].key, "only on the target");
        } else {
            if (strcmp(a[i].hash, b[j].hash) != 0)
                difference(v, t, a[i].key, "row differs");
            i++;
            j++;
        }
    }
    if (v->res->diffs == before)
        difference(v, t, "?", "chunk checksums differ but no row does");
out:
    free(a);
    free(b);
    sql_rows_free(&ra);
    sql_rows_free(&rb);
    return rc;
}

/* "count xor" of the rows of a range into sum. */
static int chunk_sum(struct compare *v, struct sql_conn *c, const struct table *t,
                     const struct bound *lo, const struct bound *hi, char *sum,
                     size_t size)
{
    struct sql_buf q = {0};
    struct sql_rows r = {0};
    int rc;

    rc = sql_format(&q, NULL, 0,
                    "SELECT COUNT(*), COALESCE(BIT_XOR(%R), 0) FROM %I.%I WHERE ",
                    t->hash.buf, v->schema, t->name);
    if (rc == 0)
        rc = add_range(&q, t, lo, hi);
    if (rc < 0) {
        sql_buf_deinit(&q);
        return rc;
    }
    rc = run(c, &q, &r);
    if (rc < 0)
        return reshard__context_error(rc, "summing a chunk of %s.%s", v->schema,
                                      t->name);
    if (r.nrow != 1 || r.ncol != 2) {
        sql_rows_free(&r);
        sql_set_error("summing a chunk of %s.%s on %s: no row", v->schema, t->name,
                      sql_conn_endpoint(c)->name);
        return BC_EQUERY;
    }
    snprintf(sum, size, "%s %s", sql_cell(&r, 0, 0) ? sql_cell(&r, 0, 0) : "0",
             sql_cell(&r, 0, 1) ? sql_cell(&r, 0, 1) : "0");
    sql_rows_free(&r);
    return 0;
}

/*
 * The upper bound of the next chunk on the source: the largest of the next
 * CHUNK_ROWS values of k past lo. 1 and *hi set, 0 when there are none left.
 */
static int next_bound(struct compare *v, const struct table *t, const struct bound *lo,
                      struct bound *hi)
{
    static const struct bound none = {NULL, 0};
    struct sql_buf q = {0};
    struct sql_rows r = {0};
    int rc;

    rc = sql_format(&q, NULL, 0, "SELECT MAX(%I) FROM (SELECT %I FROM %I.%I WHERE ",
                    t->k, t->k, v->schema, t->name);
    if (rc == 0)
        rc = add_range(&q, t, lo, &none);
    if (rc == 0)
        rc = sql_format(&q, NULL, 0, " ORDER BY %I LIMIT %d) x", t->k,
                        (int64_t)CHUNK_ROWS);
    if (rc < 0) {
        sql_buf_deinit(&q);
        return rc;
    }
    rc = run(v->src, &q, &r);
    if (rc < 0)
        return reshard__context_error(rc, "reading the next chunk of %s.%s", v->schema,
                                      t->name);
    if (r.nrow == 0 || r.ncol == 0 || sql_cell(&r, 0, 0) == NULL) {
        sql_rows_free(&r);
        return 0;
    }
    hi->len = r.len[0];
    hi->v = malloc(hi->len + 1);
    if (hi->v == NULL) {
        sql_rows_free(&r);
        return -ENOMEM;
    }
    memcpy(hi->v, sql_cell(&r, 0, 0), hi->len + 1);
    sql_rows_free(&r);
    return 1;
}

static int compare_table(struct compare *v, const struct table *t)
{
    static const struct bound none = {NULL, 0};
    struct bound last = {NULL, 0}, hi = {NULL, 0};
    char sa[64], sb[64];
    int rc;

    for (;;) {
        rc = next_bound(v, t, &last, &hi);
        if (rc < 0)
            goto out;
        if (rc == 0) {
            /* The source is done; anything past it on the target is extra. */
            rc = chunk_sum(v, v->dst, t, &last, &none, sb, sizeof(sb));
            if (rc == 0 && strncmp(sb, "0 ", 2) != 0)
                rc = drill(v, t, &last, &none);
            if (rc < 0)
                goto out;
            v->res->chunks++;
            break;
        }
        rc = chunk_sum(v, v->src, t, &last, &hi, sa, sizeof(sa));
        if (rc == 0)
            rc = chunk_sum(v, v->dst, t, &last, &hi, sb, sizeof(sb));
        if (rc < 0)
            goto out;
        v->res->chunks++;
        v->res->rows += strtoull(sa, NULL, 10);
        if (strcmp(sa, sb) != 0) {
            rc = drill(v, t, &last, &hi);
            if (rc < 0)
                goto out;
        }
        free(last.v);
        last = hi;
        hi.v = NULL;
        hi.len = 0;
    }
    rc = 0;
out:
    free(last.v);
    free(hi.v);
    return rc;
}

/* A VERIFY_PROGRESS event (final: the last one) or the VERIFY one. */
static void progress(const struct compare *v, enum reshard_event_kind kind, int final)
{
    struct reshard_event ev = {.kind = kind, .shard = v->shard};

    ev.final = final;
    ev.verify.at = v->at;
    ev.verify.tables = v->res->tables;
    ev.verify.ntable = v->ntable;
    ev.verify.chunks = v->res->chunks;
    ev.verify.diffs = v->res->diffs;
    ev.verify.rows = v->res->rows;
    ev.verify.seconds = (double)(sql_now_ms() - v->start_ms) / 1000.0;
    reshard__emit(v->opts, &ev);
}

/*
 * Both sides hold the schema: a side without it would compare as "equal, 0
 * tables" (the tables are listed on the source). -EINVAL: nothing to compare.
 */
static int both_have_schema(struct compare *v)
{
    struct sql_conn *side[2] = {v->src, v->dst};

    for (int i = 0; i < 2; i++) {
        struct sql_rows rows = {0};
        int rc = sql_exec(side[i], &rows,
                          "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE "
                          "SCHEMA_NAME = %s",
                          v->schema);
        int have = rc == 0 && rows.nrow == 1 && strcmp(sql_cell(&rows, 0, 0), "0") != 0;

        sql_rows_free(&rows);
        if (rc < 0)
            return reshard__context_error(rc, "looking for %s", v->schema);
        if (!have) {
            /* verify --against: the source is that host, the target the live one */
            sql_set_error("no schema %s on %s: no copy there to compare", v->schema,
                          i == 0 ? "the source (or the host --against names)"
                                 : "the target (or the live host)");
            return -EINVAL;
        }
    }
    return 0;
}

/* The schema's base tables but shard_state on the source, names checked. */
static int list_tables(struct compare *v, struct sql_rows *out)
{
    int rc;

    rc = sql_exec(v->src, out,
                  "SELECT TABLE_NAME FROM information_schema.TABLES WHERE "
                  "TABLE_SCHEMA = %s AND TABLE_TYPE = 'BASE TABLE' AND "
                  "TABLE_NAME <> 'shard_state' ORDER BY TABLE_NAME",
                  v->schema);
    if (rc < 0)
        return reshard__context_error(rc, "listing the tables of %s", v->schema);
    for (uint32_t i = 0; i < out->nrow; i++) {
        const char *t = sql_cell(out, i, 0);
        if (t == NULL || !sql_ident_ok(t)) {
            sql_set_error("table %s.%s: not a plain identifier", v->schema,
                          t ? t : "NULL");
            return -EINVAL;
        }
    }
    return 0;
}

int reshard__compare(const struct reshard_opts *opts, uint32_t shard, const char *at,
                     struct sql_conn *src, struct sql_conn *dst, const char *schema,
                     struct reshard_compare *res)
{
    struct compare v = {.opts = opts,
                        .shard = shard,
                        .at = at,
                        .src = src,
                        .dst = dst,
                        .schema = schema,
                        .res = res,
                        .start_ms = sql_now_ms()};
    struct sql_rows tables = {0};
    int rc;

    memset(res, 0, sizeof(*res));
    if (schema == NULL || !sql_ident_ok(schema)) {
        sql_set_error("shard %u: schema name %s is not a plain identifier", shard,
                      schema ? schema : "NULL");
        return -EINVAL;
    }
    if ((rc = both_have_schema(&v)) < 0 || (rc = list_tables(&v, &tables)) < 0)
        goto out;
    v.ntable = tables.nrow;
    for (uint32_t i = 0; i < tables.nrow; i++) {
        struct table t = {.name = sql_cell(&tables, i, 0)};
        rc = load_table(&v, &t);
        if (rc == 0)
            rc = compare_table(&v, &t);
        sql_buf_deinit(&t.hash);
        sql_buf_deinit(&t.key);
        if (rc < 0)
            goto out;
        res->tables++;
        progress(&v, RESHARD_EV_VERIFY_PROGRESS, 0);
    }
    progress(&v, RESHARD_EV_VERIFY_PROGRESS, 1);
    progress(&v, RESHARD_EV_VERIFY, 0);
    rc = 0;
out:
    sql_rows_free(&tables);
    return rc;
}
