/*
 * shardctl_verify.c: are two copies of a shard schema equal?
 *
 * Both connections hold snapshots of the same logical moment (the caller
 * arranges it: the target at the fence against the frozen source, or the
 * target stopped at the source snapshot's binlog position). Every table but
 * shard_state (each copy's own fencing row) is walked in chunks of about
 * CHUNK_ROWS rows by the first primary key column; a chunk's row count and
 * the XOR of 64-bit row hashes (MD5 over every column and its NULL-ness) are
 * compared; in a chunk that differs, the rows are listed by primary key.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/shardctl.h"

#define CHUNK_ROWS 2000
#define MAX_LISTED 50 /* differences listed per run; all are counted */

struct table {
    char name[65];
    char *hash;    /* SQL expression: the row's 64-bit hash */
    char *key;     /* SQL expression: the primary key as text */
    char *order;   /* ORDER BY list: the primary key columns */
    char k[65];    /* first primary key column: the chunking column */
    int k_numeric; /* its values are written without quotes */
};

struct verify {
    struct sc_out *out;
    uint32_t shard;
    struct sc_conn *src, *dst;
    const char *schema;
    struct sc_verify_result *res;
    char *err;
    size_t errsize;
    uint32_t listed;
};

static int append(char **s, const char *fmt, const char *a)
{
    char *n = NULL;

    if (asprintf(&n, fmt, *s ? *s : "", a) < 0)
        return -1;
    free(*s);
    *s = n;
    return 0;
}

static int load_table(struct verify *v, struct table *t)
{
    MYSQL_RES *res;
    MYSQL_ROW row;
    char *cols = NULL, *nulls = NULL;
    int n = 0, rc = -1;

    res =
        sc_query(v->src,
                 "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE "
                 "TABLE_SCHEMA = '%s' AND TABLE_NAME = '%s' ORDER BY ORDINAL_POSITION",
                 v->schema, t->name);
    if (res == NULL)
        goto dberr;
    while ((row = mysql_fetch_row(res)) != NULL) {
        if (append(&cols, n ? "%s, `%s`" : "%s`%s`", row[0]) < 0 ||
            append(&nulls, n ? "%s, ISNULL(`%s`)" : "%sISNULL(`%s`)", row[0]) < 0)
            break;
        n++;
    }
    mysql_free_result(res);
    if (cols == NULL || nulls == NULL)
        goto out;
    if (asprintf(&t->hash,
                 "CAST(CONV(LEFT(MD5(CONCAT_WS('#', %s, CONCAT(%s))), 16), 16, 10) AS "
                 "UNSIGNED)",
                 cols, nulls) < 0) {
        t->hash = NULL;
        goto out;
    }
    res = sc_query(
        v->src,
        "SELECT s.COLUMN_NAME, c.DATA_TYPE FROM information_schema.STATISTICS "
        "s JOIN information_schema.COLUMNS c ON c.TABLE_SCHEMA = "
        "s.TABLE_SCHEMA AND c.TABLE_NAME = s.TABLE_NAME AND c.COLUMN_NAME = "
        "s.COLUMN_NAME WHERE s.TABLE_SCHEMA = '%s' AND s.TABLE_NAME = '%s' AND "
        "s.INDEX_NAME = 'PRIMARY' ORDER BY s.SEQ_IN_INDEX",
        v->schema, t->name);
    if (res == NULL)
        goto dberr;
    n = 0;
    while ((row = mysql_fetch_row(res)) != NULL) {
        if (n == 0) {
            snprintf(t->k, sizeof(t->k), "%s", row[0]);
            t->k_numeric = strstr(row[1], "int") != NULL;
        }
        append(&t->key, n ? "%s, `%s`" : "%s`%s`", row[0]);
        append(&t->order, n ? "%s, `%s`" : "%s`%s`", row[0]);
        n++;
    }
    mysql_free_result(res);
    if (n == 0) {
        snprintf(v->err, v->errsize, "table %s.%s has no primary key", v->schema,
                 t->name);
        goto out;
    }
    {
        char *key = NULL;
        if (asprintf(&key, "CONCAT_WS(',', %s)", t->key) < 0)
            goto out;
        free(t->key);
        t->key = key;
    }
    rc = 0;
    goto out;
dberr:
    snprintf(v->err, v->errsize, "%s", v->src->err);
out:
    free(cols);
    free(nulls);
    return rc;
}

/* "k > 'lo' AND k <= 'hi'", either bound left out when NULL. */
static void range(struct verify *v, const struct table *t, const char *lo,
                  const char *hi, char *out, size_t size)
{
    const char *q = t->k_numeric ? "" : "'";
    char e[600];
    size_t len = 0;

    snprintf(out, size, "1");
    if (lo != NULL) {
        mysql_real_escape_string(v->src->m, e, lo, strlen(lo));
        len += (size_t)snprintf(out + len, size - len, "`%s` > %s%s%s", t->k, q, e, q);
    }
    if (hi != NULL) {
        mysql_real_escape_string(v->src->m, e, hi, strlen(hi));
        snprintf(out + len, size - len, "%s`%s` <= %s%s%s", lo ? " AND " : "", t->k, q,
                 e, q);
    }
}

struct keyed {
    char *key;
    char *hash;
};

static int cmp_keyed(const void *a, const void *b)
{
    return strcmp(((const struct keyed *)a)->key, ((const struct keyed *)b)->key);
}

static int fetch_rows(struct verify *v, struct sc_conn *c, const struct table *t,
                      const char *where, struct keyed **out, size_t *n)
{
    MYSQL_RES *res;
    MYSQL_ROW row;
    size_t i = 0;

    res = sc_query(c, "SELECT %s, %s FROM `%s`.`%s` WHERE %s", t->key, t->hash,
                   v->schema, t->name, where);
    if (res == NULL) {
        snprintf(v->err, v->errsize, "%s", c->err);
        return -1;
    }
    *n = mysql_num_rows(res);
    *out = calloc(*n ? *n : 1, sizeof(**out));
    while (*out != NULL && (row = mysql_fetch_row(res)) != NULL) {
        (*out)[i].key = strdup(row[0] ? row[0] : "");
        (*out)[i].hash = strdup(row[1] ? row[1] : "");
        i++;
    }
    mysql_free_result(res);
    if (*out == NULL)
        return -1;
    qsort(*out, *n, sizeof(**out), cmp_keyed);
    return 0;
}

static void free_rows(struct keyed *r, size_t n)
{
    for (size_t i = 0; r && i < n; i++) {
        free(r[i].key);
        free(r[i].hash);
    }
    free(r);
}

static void difference(struct verify *v, const struct table *t, const char *key,
                       const char *what)
{
    v->res->diffs++;
    if (v->listed++ >= MAX_LISTED)
        return;
    char k[600];

    sc_json_str(k, sizeof(k), key);
    sc_event(v->out, "difference",
             "\"shard\":%u,\"table\":\"%s\",\"key\":\"%s\",\"what\":\"%s\"", v->shard,
             t->name, k, what);
    sc_say(v->out, "shard %u: DIFFERENCE %s.%s key (%s): %s", v->shard, v->schema,
           t->name, key, what);
}

/* Lists the rows of one differing chunk. */
static int drill(struct verify *v, const struct table *t, const char *where)
{
    struct keyed *a = NULL, *b = NULL;
    size_t na = 0, nb = 0, i = 0, j = 0;
    uint32_t before = v->res->diffs;
    int rc = -1;

    if (fetch_rows(v, v->src, t, where, &a, &na) < 0 ||
        fetch_rows(v, v->dst, t, where, &b, &nb) < 0)
        goto out;
    while (i < na || j < nb) {
        int c = i >= na ? 1 : j >= nb ? -1 : strcmp(a[i].key, b[j].key);
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
    rc = 0;
out:
    free_rows(a, na);
    free_rows(b, nb);
    return rc;
}

/* Count and XOR of hashes of the rows in where; -1 on error. */
static int chunk_sum(struct verify *v, struct sc_conn *c, const struct table *t,
                     const char *where, char *sum, size_t size)
{
    MYSQL_RES *res;
    MYSQL_ROW row;

    res =
        sc_query(c, "SELECT COUNT(*), COALESCE(BIT_XOR(%s), 0) FROM `%s`.`%s` WHERE %s",
                 t->hash, v->schema, t->name, where);
    if (res == NULL || (row = mysql_fetch_row(res)) == NULL) {
        snprintf(v->err, v->errsize, "%s", c->err);
        if (res != NULL)
            mysql_free_result(res);
        return -1;
    }
    snprintf(sum, size, "%s %s", row[0], row[1]);
    mysql_free_result(res);
    return 0;
}

static int verify_table(struct verify *v, struct table *t)
{
    char *last = NULL, hi[600], where[1400], sa[64], sb[64];
    int found, rc = -1;

    for (;;) {
        range(v, t, last, NULL, where, sizeof(where));
        found = sc_value(v->src, hi, sizeof(hi),
                         "SELECT MAX(`%s`) FROM (SELECT `%s` FROM `%s`.`%s` WHERE %s "
                         "ORDER BY `%s` LIMIT %d) x",
                         t->k, t->k, v->schema, t->name, where, t->k, CHUNK_ROWS);
        if (found < 0) {
            snprintf(v->err, v->errsize, "%s", v->src->err);
            goto out;
        }
        if (found == 0) {
            /* The source is done; anything past it on the target is extra. */
            if (chunk_sum(v, v->dst, t, where, sb, sizeof(sb)) < 0)
                goto out;
            if (strncmp(sb, "0 ", 2) != 0 && drill(v, t, where) < 0)
                goto out;
            v->res->chunks++;
            break;
        }
        range(v, t, last, hi, where, sizeof(where));
        if (chunk_sum(v, v->src, t, where, sa, sizeof(sa)) < 0 ||
            chunk_sum(v, v->dst, t, where, sb, sizeof(sb)) < 0)
            goto out;
        v->res->chunks++;
        v->res->rows += strtoull(sa, NULL, 10);
        if (strcmp(sa, sb) != 0 && drill(v, t, where) < 0)
            goto out;
        free(last);
        last = strdup(hi);
        if (last == NULL)
            goto out;
    }
    rc = 0;
out:
    free(last);
    return rc;
}

int sc_verify_compare(struct sc_out *out, uint32_t shard, const char *at,
                      struct sc_conn *src, struct sc_conn *dst, const char *schema,
                      struct sc_verify_result *res, char *err, size_t errsize)
{
    struct verify v = {out, shard, src, dst, schema, res, err, errsize, 0};
    struct table tables[16];
    MYSQL_RES *r;
    MYSQL_ROW row;
    unsigned ntable = 0;
    int64_t t0 = sc_now_ms();
    int rc = 0;

    memset(res, 0, sizeof(*res));
    memset(tables, 0, sizeof(tables));
    r = sc_query(
        src,
        "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = "
        "'%s' AND TABLE_TYPE = 'BASE TABLE' AND TABLE_NAME <> 'shard_state' "
        "ORDER BY TABLE_NAME",
        schema);
    if (r == NULL) {
        snprintf(err, errsize, "%s", src->err);
        return -1;
    }
    while ((row = mysql_fetch_row(r)) != NULL && ntable < 16)
        snprintf(tables[ntable++].name, sizeof(tables[0].name), "%s", row[0]);
    mysql_free_result(r);
    for (unsigned i = 0; i < ntable && rc == 0; i++) {
        rc = load_table(&v, &tables[i]);
        if (rc == 0)
            rc = verify_table(&v, &tables[i]);
        res->tables++;
        sc_progress(out, 0,
                    "shard %u verify  %u/%u tables  %" PRIu64 " rows  %u chunks", shard,
                    res->tables, ntable, res->rows, res->chunks);
    }
    for (unsigned i = 0; i < ntable; i++) {
        free(tables[i].hash);
        free(tables[i].key);
        free(tables[i].order);
    }
    if (rc < 0)
        return -1;
    sc_progress(out, 1,
                "shard %u verify  %u tables  %" PRIu64 " rows  %u chunks  %u "
                "differences  %.1f s",
                shard, res->tables, res->rows, res->chunks, res->diffs,
                (double)(sc_now_ms() - t0) / 1000.0);
    sc_event(out, "verify",
             "\"shard\":%u,\"at\":\"%s\",\"tables\":%u,\"chunks\":%u,\"rows\":%" PRIu64
             ",\"differences\":%u,\"seconds\":%.1f",
             shard, at, res->tables, res->chunks, res->rows, res->diffs,
             (double)(sc_now_ms() - t0) / 1000.0);
    return 0;
}
