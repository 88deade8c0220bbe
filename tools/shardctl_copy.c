/*
 * shardctl_copy.c: the first step of a move, a copy of one shard schema from
 * a consistent snapshot of its source host.
 *
 * START TRANSACTION WITH CONSISTENT SNAPSHOT makes MariaDB report the binlog
 * position that matches the snapshot exactly (binlog_snapshot_file and
 * _position): replication started on the target from there applies every
 * write the snapshot did not see, and none that it did.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tools/shardctl.h"

#define BATCH_BYTES (1u << 20) /* one INSERT statement */

struct buf {
    char *p;
    size_t len, cap;
};

static int buf_room(struct buf *b, size_t n)
{
    if (b->len + n + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (p == NULL)
        return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static int buf_add(struct buf *b, const char *s, size_t n)
{
    if (buf_room(b, n) < 0)
        return -1;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

static int is_binary(const MYSQL_FIELD *f)
{
    return f->charsetnr == 63 &&
           (f->type == MYSQL_TYPE_BLOB || f->type == MYSQL_TYPE_TINY_BLOB ||
            f->type == MYSQL_TYPE_MEDIUM_BLOB || f->type == MYSQL_TYPE_LONG_BLOB ||
            f->type == MYSQL_TYPE_STRING || f->type == MYSQL_TYPE_VAR_STRING);
}

/* Appends one value: NULL, a number as is, bytes as X'..', text quoted. */
static int add_value(struct buf *b, struct sc_conn *dst, const MYSQL_FIELD *f,
                     const char *v, unsigned long len)
{
    if (v == NULL)
        return buf_add(b, "NULL", 4);
    if (IS_NUM(f->type) && f->type != MYSQL_TYPE_TIMESTAMP)
        return buf_add(b, v, len);
    if (buf_room(b, 2 * len + 3) < 0)
        return -1;
    if (is_binary(f)) {
        b->len += (size_t)snprintf(b->p + b->len, 3, "X'");
        b->len += mysql_hex_string(b->p + b->len, v, len);
    } else {
        b->p[b->len++] = '\'';
        b->len += mysql_real_escape_string(dst->m, b->p + b->len, v, len);
    }
    b->p[b->len++] = '\'';
    b->p[b->len] = '\0';
    return 0;
}

static void report(struct sc_copy *cp, const char *table, int final)
{
    double s = (double)(sc_now_ms() - cp->ms) / 1000.0;
    double rate = s > 0 ? (double)cp->rows / s : 0;
    double eta =
        rate > 0 && cp->total > cp->rows ? (double)(cp->total - cp->rows) / rate : 0;
    int pct = cp->total ? (int)(cp->rows * 100 / cp->total) : 100;
    char bar[21];

    for (int i = 0; i < 20; i++)
        bar[i] = i < pct / 5 ? '#' : '.';
    bar[20] = '\0';
    sc_progress(cp->out, final,
                "shard %u copy  [%s] %3d%%  %" PRIu64 "/%" PRIu64
                " rows  %.0f rows/s  ETA %.0f s  (%s)",
                cp->shard, bar, pct, cp->rows, cp->total, rate, eta, table);
    sc_event(cp->out, "copy",
             "\"shard\":%u,\"table\":\"%s\",\"rows\":%" PRIu64 ",\"total\":%" PRIu64
             ",\"rate\":%.0f,\"eta_s\":%.1f",
             cp->shard, table, cp->rows, cp->total, rate, eta);
}

/* Keeps the copy at or under --copy-rate, a batch at a time. */
static void throttle(const struct sc_copy *cp)
{
    int64_t due, now;

    if (cp->max_rate == 0)
        return;
    due = cp->ms + (int64_t)(cp->rows * 1000 / cp->max_rate);
    now = sc_now_ms();
    if (due > now) {
        struct timespec ts = {(due - now) / 1000, (long)((due - now) % 1000) * 1000000};
        nanosleep(&ts, NULL);
    }
}

static int copy_table(struct sc_copy *cp, struct sc_conn *src, struct sc_conn *dst,
                      const char *table, int *first_batch, char *err, size_t errsize)
{
    struct buf head = {0}, b = {0};
    MYSQL_RES *res = NULL;
    MYSQL_FIELD *f;
    MYSQL_ROW row;
    unsigned n, nrow = 0;
    int rc = -1;
    char q[1200];

    snprintf(q, sizeof(q), "SELECT * FROM `%s`.`%s`", cp->schema, table);
    if (mysql_real_query(src->m, q, strlen(q)) != 0 ||
        (res = mysql_use_result(src->m)) == NULL) {
        snprintf(err, errsize, "reading %s.%s on %s: %s", cp->schema, table, src->name,
                 mysql_error(src->m));
        return -1;
    }
    f = mysql_fetch_fields(res);
    n = mysql_num_fields(res);
    buf_add(&head, "INSERT INTO `", 13);
    buf_add(&head, cp->schema, strlen(cp->schema));
    buf_add(&head, "`.`", 3);
    buf_add(&head, table, strlen(table));
    buf_add(&head, "` (", 3);
    for (unsigned i = 0; i < n; i++) {
        buf_add(&head, i ? ", `" : "`", i ? 3 : 1);
        buf_add(&head, f[i].name, strlen(f[i].name));
        buf_add(&head, "`", 1);
    }
    if (buf_add(&head, ") VALUES ", 9) < 0)
        goto nomem;
    while ((row = mysql_fetch_row(res)) != NULL) {
        unsigned long *len = mysql_fetch_lengths(res);
        if (b.len == 0 && buf_add(&b, head.p, head.len) < 0)
            goto nomem;
        if (nrow > 0 && buf_add(&b, ",", 1) < 0)
            goto nomem;
        if (buf_add(&b, "(", 1) < 0)
            goto nomem;
        for (unsigned i = 0; i < n; i++)
            if ((i > 0 && buf_add(&b, ",", 1) < 0) ||
                add_value(&b, dst, &f[i], row[i], len[i]) < 0)
                goto nomem;
        if (buf_add(&b, ")", 1) < 0)
            goto nomem;
        nrow++;
        /* Capped: batches of about 100 ms of rows, so the rate stays smooth. */
        if (b.len >= BATCH_BYTES ||
            (cp->max_rate > 0 &&
             nrow >= (cp->max_rate >= 1000 ? cp->max_rate / 10 : 100))) {
            if (sc_exec(dst, "%s", b.p) < 0) {
                snprintf(err, errsize, "writing %s.%s: %s", cp->schema, table,
                         dst->err);
                goto out;
            }
            cp->rows += nrow;
            b.len = 0;
            nrow = 0;
            throttle(cp);
            report(cp, table, 0);
            if (*first_batch) {
                *first_batch = 0;
                sc_hold(cp->out, cp->shard, "copy");
            }
        }
    }
    if (mysql_errno(src->m) != 0) {
        snprintf(err, errsize, "reading %s.%s on %s: %s", cp->schema, table, src->name,
                 mysql_error(src->m));
        goto out;
    }
    if (nrow > 0) {
        if (sc_exec(dst, "%s", b.p) < 0) {
            snprintf(err, errsize, "writing %s.%s: %s", cp->schema, table, dst->err);
            goto out;
        }
        cp->rows += nrow;
        throttle(cp);
        report(cp, table, 0);
        if (*first_batch) {
            *first_batch = 0;
            sc_hold(cp->out, cp->shard, "copy");
        }
    }
    rc = 0;
    goto out;
nomem:
    snprintf(err, errsize, "out of memory copying %s.%s", cp->schema, table);
out:
    mysql_free_result(res);
    free(head.p);
    free(b.p);
    return rc;
}

int sc_copy_shard(struct sc_copy *cp, const struct sc_host *srch, struct sc_conn *dst,
                  char *err, size_t errsize)
{
    struct sc_conn src = {0};
    char tables[16][65], file[256] = "", pos[32] = "", num[32];
    MYSQL_RES *res;
    MYSQL_ROW row;
    unsigned ntable = 0;
    int rc = -1, first = 1;

    if (sc_connect(&src, srch, 3600) < 0) {
        snprintf(err, errsize, "%s", src.err);
        return -1;
    }
    if (sc_exec(&src, "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ; "
                      "START TRANSACTION WITH CONSISTENT SNAPSHOT") < 0)
        goto dberr;
    res = sc_query(&src, "SHOW STATUS LIKE 'binlog_snapshot_%%'");
    if (res == NULL)
        goto dberr;
    while ((row = mysql_fetch_row(res)) != NULL) {
        if (strcasecmp(row[0], "Binlog_snapshot_file") == 0)
            snprintf(file, sizeof(file), "%s", row[1] ? row[1] : "");
        else if (strcasecmp(row[0], "Binlog_snapshot_position") == 0)
            snprintf(pos, sizeof(pos), "%s", row[1] ? row[1] : "");
    }
    mysql_free_result(res);
    if (file[0] == '\0' || pos[0] == '\0') {
        snprintf(err, errsize,
                 "%s has no binary log (log_bin is needed to move shards)", src.name);
        goto out;
    }
    snprintf(cp->binlog_file, sizeof(cp->binlog_file), "%s", file);
    cp->binlog_pos = strtoull(pos, NULL, 10);
    if (sc_value(&src, cp->gtid, sizeof(cp->gtid), "SELECT BINLOG_GTID_POS('%s', %s)",
                 file, pos) < 0)
        cp->gtid[0] = '\0';
    res = sc_query(&src,
                   "SELECT TABLE_NAME FROM information_schema.TABLES WHERE "
                   "TABLE_SCHEMA = '%s' AND TABLE_TYPE = 'BASE TABLE' AND TABLE_NAME "
                   "<> 'shard_state' ORDER BY TABLE_NAME",
                   cp->schema);
    if (res == NULL)
        goto dberr;
    while ((row = mysql_fetch_row(res)) != NULL && ntable < 16)
        snprintf(tables[ntable++], sizeof(tables[0]), "%s", row[0]);
    mysql_free_result(res);
    if (ntable == 0) {
        snprintf(err, errsize, "%s has no schema %s", src.name, cp->schema);
        goto out;
    }
    cp->total = 0;
    for (unsigned i = 0; i < ntable; i++) {
        if (sc_value(&src, num, sizeof(num), "SELECT COUNT(*) FROM `%s`.`%s`",
                     cp->schema, tables[i]) < 0)
            goto dberr;
        cp->total += strtoull(num, NULL, 10);
    }
    cp->rows = 0;
    cp->ms = sc_now_ms();
    for (unsigned i = 0; i < ntable; i++)
        if (copy_table(cp, &src, dst, tables[i], &first, err, errsize) < 0)
            goto out;
    report(cp, "all tables", 1);
    rc = 0;
    goto out;
dberr:
    snprintf(err, errsize, "%s", src.err);
out:
    sc_close(&src);
    return rc;
}
