/*
 * reshard_copy.c: the copy step of a move, one shard schema copied from a
 * consistent snapshot of its source host into the fresh schema on the target.
 *
 * START TRANSACTION WITH CONSISTENT SNAPSHOT makes MariaDB report the binlog
 * position that matches the snapshot exactly (binlog_snapshot_file and
 * _position): replication started on the target from there applies every
 * write the snapshot did not see, and none that it did.
 *
 * Rows are streamed from the source and written as multi-row INSERTs of
 * about BATCH_BYTES each; under a rate cap, batches hold about 100 ms of rows
 * and each is followed by a sleep that keeps the copy at or under the cap, so
 * the rate stays smooth. Binary columns are written as hex literals, numbers
 * bare and text escaped, every value through sql_format().
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "reshard/reshard_int.h"
#include "shardmap/shardmap_err.h"

#define BATCH_BYTES (1u << 20) /* one INSERT statement */
/* The source side may wait this long on us (the hook may hold the copy). */
#define STREAM_WAIT_S 3600

/* One copy in progress. */
struct copy_run {
    struct reshard__copy *cp; /* ref: the caller's */
    struct sql_conn *dst;     /* ref: the caller's */
    const char *table;        /* ref: the table being copied */
    struct sql_buf head;      /* "INSERT INTO `s`.`t` (`a`, `b`) VALUES " */
    struct sql_buf batch;     /* the statement being assembled */
    uint64_t nrow;            /* rows in batch */
    uint64_t cap_rows;        /* rows per batch under a rate cap, 0: none */
    int hooked;               /* the hook ran after the first batch */
    int failed;               /* the row callback set the message */
    int64_t start_ms;
};

static void buf_clear(struct sql_buf *b)
{
    b->len = 0;
    if (b->buf != NULL)
        b->buf[0] = '\0';
}

/*
 * Appends a number as it came, without quotes, when it is an integer (so a
 * BIGINT UNSIGNED keeps every digit); other numbers (DECIMAL, DOUBLE) as a
 * quoted literal, which MariaDB converts exactly as it would the bare one.
 */
static int add_number(struct sql_buf *b, const char *v, unsigned long len)
{
    char *end;

    if (len > 0 && len < 32) {
        errno = 0;
        if (v[0] == '-') {
            long long x = strtoll(v, &end, 10);
            if (errno == 0 && end == v + len)
                return sql_format(b, NULL, 0, "%d", (int64_t)x);
        } else if (v[0] >= '0' && v[0] <= '9') {
            unsigned long long x = strtoull(v, &end, 10);
            if (errno == 0 && end == v + len)
                return sql_format(b, NULL, 0, "%u", (uint64_t)x);
        }
    }
    return sql_format(b, NULL, 0, "%b", v, (size_t)len);
}

/* Appends one value: NULL, a number bare, bytes as X'..', text quoted. */
static int add_value(struct sql_buf *b, enum sql_kind kind, const char *v,
                     unsigned long len)
{
    if (v == NULL)
        return sql_format(b, NULL, 0, "NULL");
    switch (kind) {
    case SQL_KIND_NUMBER:
        return add_number(b, v, len);
    case SQL_KIND_BINARY:
        return sql_format(b, NULL, 0, "%x", v, (size_t)len);
    case SQL_KIND_TEXT:
        break;
    }
    return sql_format(b, NULL, 0, "%b", v, (size_t)len);
}

/* A COPY event: rows so far against the total, the rate and what is left. */
static void report(const struct copy_run *run, const char *table, int final)
{
    const struct reshard__copy *cp = run->cp;
    struct reshard_event ev = {.kind = RESHARD_EV_COPY, .shard = cp->shard};
    double s = (double)(sql_now_ms() - run->start_ms) / 1000.0;

    ev.final = final;
    ev.copy.table = table;
    ev.copy.rows = cp->rows;
    ev.copy.total = cp->total;
    ev.copy.rate = s > 0 ? (double)cp->rows / s : 0;
    ev.copy.eta_s = ev.copy.rate > 0 && cp->total > cp->rows
                        ? (double)(cp->total - cp->rows) / ev.copy.rate
                        : 0;
    reshard__emit(cp->opts, &ev);
}

/* Keeps the copy at or under opts->copy_rate, a batch at a time. */
static void throttle(const struct copy_run *run)
{
    uint64_t max_rate = run->cp->opts->copy_rate;
    int64_t due, now;

    if (max_rate == 0)
        return;
    due = run->start_ms + (int64_t)(run->cp->rows * 1000 / max_rate);
    now = sql_now_ms();
    if (due > now) {
        struct timespec ts = {(time_t)((due - now) / 1000),
                              (long)((due - now) % 1000) * 1000000};
        nanosleep(&ts, NULL);
    }
}

/* Writes the batch to the target, then paces, reports and calls the hook. */
static int flush(struct copy_run *run)
{
    int rc;

    if (run->nrow == 0)
        return 0;
    rc = sql_query(run->dst, run->batch.buf, run->batch.len, NULL);
    if (rc < 0)
        return reshard__context_error(rc, "writing %s.%s", run->cp->schema, run->table);
    run->cp->rows += run->nrow;
    buf_clear(&run->batch);
    run->nrow = 0;
    throttle(run);
    report(run, run->table, 0);
    if (!run->hooked) {
        run->hooked = 1;
        reshard__hook(run->cp->opts, run->cp->shard, RESHARD_AT_COPY);
    }
    return 0;
}

/* The statement head, from the names of the first row's columns. */
static int make_head(struct copy_run *run, const struct sql_stream_row *row)
{
    int rc;

    rc = sql_format(&run->head, NULL, 0, "INSERT INTO %I.%I (", run->cp->schema,
                    run->table);
    for (uint32_t i = 0; rc == 0 && i < row->ncol; i++) {
        if (!sql_ident_ok(row->name[i])) {
            sql_set_error("column %s.%s.%s: not a plain identifier", run->cp->schema,
                          run->table, row->name[i]);
            return -EINVAL;
        }
        rc = sql_format(&run->head, NULL, 0, i ? ", %I" : "%I", row->name[i]);
    }
    if (rc == 0)
        rc = sql_format(&run->head, NULL, 0, ") VALUES ");
    return rc;
}

/* sql_stream() callback: one source row into the batch. */
static int on_row(void *arg, const struct sql_stream_row *row)
{
    struct copy_run *run = arg;
    int rc = 0;

    if (run->head.len == 0)
        rc = make_head(run, row);
    if (rc == 0 && run->batch.len == 0)
        rc = sql_buf_add(&run->batch, run->head.buf, run->head.len);
    if (rc == 0)
        rc = sql_format(&run->batch, NULL, 0, run->nrow > 0 ? ",(" : "(");
    for (uint32_t i = 0; rc == 0 && i < row->ncol; i++) {
        if (i > 0)
            rc = sql_format(&run->batch, NULL, 0, ",");
        if (rc == 0)
            rc = add_value(&run->batch, row->kind[i], row->cell[i], row->len[i]);
    }
    if (rc == 0)
        rc = sql_format(&run->batch, NULL, 0, ")");
    if (rc < 0) {
        run->failed = 1;
        return reshard__context_error(rc, "copying %s.%s", run->cp->schema, run->table);
    }
    run->nrow++;
    if (run->batch.len >= BATCH_BYTES ||
        (run->cap_rows > 0 && run->nrow >= run->cap_rows)) {
        rc = flush(run);
        if (rc < 0)
            run->failed = 1;
    }
    return rc;
}

static int copy_table(struct copy_run *run, struct sql_conn *src, const char *table)
{
    int rc;

    run->table = table;
    run->nrow = 0;
    run->failed = 0;
    buf_clear(&run->head);
    buf_clear(&run->batch);
    rc = sql_stream(src, on_row, run, "SELECT * FROM %I.%I", run->cp->schema, table);
    if (rc < 0 && !run->failed)
        return reshard__context_error(rc, "reading %s.%s", run->cp->schema, table);
    if (rc < 0)
        return rc;
    return flush(run);
}

/*
 * The snapshot's binlog position and GTID. A server that writes no binlog
 * cannot be the source of a move: there is no position to replicate from.
 */
static int snapshot_pos(struct reshard__copy *cp, const struct sql_endpoint *ep,
                        struct sql_conn *src)
{
    int rc;

    rc = sql_snapshot_pos(src, &cp->pos);
    if (rc == BC_ENOTFOUND || (rc == 0 && cp->pos.file[0] == '\0')) {
        sql_set_error("%s has no binary log (log_bin is needed to move shards)",
                      ep->name);
        return BC_ENOTFOUND;
    }
    if (rc < 0)
        return rc;
    /* The GTID is a convenience for people; the file and position suffice. */
    if (sql_value(src, cp->gtid, sizeof(cp->gtid), "SELECT BINLOG_GTID_POS(%s, %u)",
                  cp->pos.file, cp->pos.pos) != 1)
        cp->gtid[0] = '\0';
    return 0;
}

/* The schema's base tables but shard_state, names checked; rows owned by out. */
static int list_tables(struct reshard__copy *cp, const struct sql_endpoint *ep,
                       struct sql_conn *src, struct sql_rows *out)
{
    int rc;

    rc = sql_exec(src, out,
                  "SELECT TABLE_NAME FROM information_schema.TABLES WHERE "
                  "TABLE_SCHEMA = %s AND TABLE_TYPE = 'BASE TABLE' AND "
                  "TABLE_NAME <> 'shard_state' ORDER BY TABLE_NAME",
                  cp->schema);
    if (rc < 0)
        return reshard__context_error(rc, "listing the tables of %s", cp->schema);
    if (out->nrow == 0) {
        sql_set_error("%s has no schema %s", ep->name, cp->schema);
        return BC_ENOSCHEMA;
    }
    for (uint32_t i = 0; i < out->nrow; i++) {
        const char *t = sql_cell(out, i, 0);
        if (t == NULL || !sql_ident_ok(t)) {
            sql_set_error("table %s.%s: not a plain identifier", cp->schema,
                          t ? t : "NULL");
            return -EINVAL;
        }
    }
    return 0;
}

int reshard__copy_shard(struct reshard__copy *cp, const struct sql_endpoint *src,
                        struct sql_conn *dst)
{
    struct copy_run run = {.cp = cp, .dst = dst};
    struct sql_rows tables = {0};
    struct sql_conn *s = NULL;
    uint64_t max_rate = cp->opts->copy_rate;
    char num[32];
    int rc;

    memset(&cp->pos, 0, sizeof(cp->pos));
    cp->gtid[0] = '\0';
    cp->rows = cp->total = 0;
    if (cp->schema == NULL || !sql_ident_ok(cp->schema)) {
        sql_set_error("shard %u: schema name %s is not a plain identifier", cp->shard,
                      cp->schema ? cp->schema : "NULL");
        return -EINVAL;
    }
    /* Capped: batches of about 100 ms of rows, so the rate stays smooth. */
    if (max_rate > 0)
        run.cap_rows = max_rate >= 1000 ? max_rate / 10 : 100;
    rc = reshard__snapshot(src, &s);
    if (rc < 0)
        goto out;
    rc = snapshot_pos(cp, src, s);
    if (rc < 0)
        goto out;
    rc = list_tables(cp, src, s, &tables);
    if (rc < 0)
        goto out;
    for (uint32_t i = 0; i < tables.nrow; i++) {
        const char *t = sql_cell(&tables, i, 0);
        rc =
            sql_value(s, num, sizeof(num), "SELECT COUNT(*) FROM %I.%I", cp->schema, t);
        if (rc < 0) {
            rc = reshard__context_error(rc, "counting %s.%s", cp->schema, t);
            goto out;
        }
        cp->total += rc == 1 ? strtoull(num, NULL, 10) : 0;
    }
    /*
     * Rows are read only as fast as the target takes them, the rate cap
     * allows and the hook lets us (it may hold the copy as long as it likes).
     * A server that waits on a streamed result longer than its
     * net_write_timeout (60 s by default) drops the connection mid-table.
     */
    rc = sql_exec(s, NULL, "SET SESSION net_write_timeout = %u",
                  (uint64_t)STREAM_WAIT_S);
    if (rc < 0)
        goto out;
    run.start_ms = sql_now_ms();
    for (uint32_t i = 0; i < tables.nrow; i++) {
        rc = copy_table(&run, s, sql_cell(&tables, i, 0));
        if (rc < 0)
            goto out;
    }
    report(&run, "all tables", 1);
    rc = 0;
out:
    sql_rows_free(&tables);
    sql_buf_deinit(&run.head);
    sql_buf_deinit(&run.batch);
    sql_conn_close(s);
    return rc;
}
