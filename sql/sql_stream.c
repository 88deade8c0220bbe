/*
 * sql_stream.c: a SELECT's rows handed out one at a time, for copies of
 * whole tables that must not be held in memory.
 *
 * The result is read with mysql_use_result and the non-blocking fetch API:
 * the query deadline bounds each network wait rather than the whole stream,
 * so a copy of millions of rows runs as long as it needs while a host that
 * stops answering still fails it within one deadline.
 */
#include <errno.h>
#include <stdlib.h>

#include "sql/sql_int.h"

struct stream {
    struct sql_conn *c;
    MYSQL_RES *res;
    uint32_t ncol;
    const char **name; /* refs into res's fields */
    enum sql_kind *kind;
    int eof; /* the last row was read */
};

/* The deadline of one network wait, taken when the wait begins. */
#define WAIT_DEADLINE(c) (sql_now_ms() + (c)->query_timeout_ms)

static enum sql_kind field_kind(const MYSQL_FIELD *f)
{
    if (IS_NUM(f->type) && f->type != MYSQL_TYPE_TIMESTAMP)
        return SQL_KIND_NUMBER;
    if (f->charsetnr == 63) {
        switch (f->type) {
        case MYSQL_TYPE_TINY_BLOB:
        case MYSQL_TYPE_MEDIUM_BLOB:
        case MYSQL_TYPE_LONG_BLOB:
        case MYSQL_TYPE_BLOB:
        case MYSQL_TYPE_STRING:
        case MYSQL_TYPE_VAR_STRING:
        case MYSQL_TYPE_VARCHAR:
            return SQL_KIND_BINARY;
        default:
            break;
        }
    }
    return SQL_KIND_TEXT;
}

static int stream_send(struct sql_conn *c, const char *sql, size_t len)
{
    MYSQL *m = &c->mysql;
    int ret = 0, status;

    status = mysql_real_query_start(&ret, m, sql, (unsigned long)len);
    SQL_DRIVE(status, m, WAIT_DEADLINE(c), mysql_real_query_cont(&ret, m, ev_));
    return 0;
}

static int stream_fetch(struct stream *s, MYSQL_ROW *row)
{
    int status = mysql_fetch_row_start(row, s->res);

    SQL_DRIVE(status, &s->c->mysql, WAIT_DEADLINE(s->c),
              mysql_fetch_row_cont(row, s->res, ev_));
    return 0;
}

/*
 * Reads the rows fn did not want, and any later results, so that c stays
 * usable; -1 when a wait missed its deadline.
 */
static int stream_drain(struct stream *s)
{
    MYSQL *m = &s->c->mysql;
    MYSQL_ROW row = NULL;
    int status, more;

    while (!s->eof) {
        if (stream_fetch(s, &row) < 0)
            return -1;
        s->eof = row == NULL;
    }
    mysql_free_result(s->res); /* every row read: no I/O left */
    s->res = NULL;
    while (mysql_more_results(m)) {
        MYSQL_RES *res = NULL;
        status = mysql_next_result_start(&more, m);
        SQL_DRIVE(status, m, WAIT_DEADLINE(s->c),
                  mysql_next_result_cont(&more, m, ev_));
        if (more != 0)
            return 0;
        status = mysql_store_result_start(&res, m);
        SQL_DRIVE(status, m, WAIT_DEADLINE(s->c),
                  mysql_store_result_cont(&res, m, ev_));
        mysql_free_result(res);
    }
    return 0;
}

/* Hands every row to fn; 0 at the end, fn's value, or a negative status. */
static int stream_rows(struct stream *s, sql_row_fn fn, void *arg)
{
    MYSQL_FIELD *f = mysql_fetch_fields(s->res);
    struct sql_stream_row r = {0};
    MYSQL_ROW row;
    int rc;

    s->ncol = mysql_num_fields(s->res);
    s->name = calloc(s->ncol ? s->ncol : 1, sizeof(*s->name));
    s->kind = calloc(s->ncol ? s->ncol : 1, sizeof(*s->kind));
    if (s->name == NULL || s->kind == NULL)
        return -ENOMEM;
    for (uint32_t i = 0; i < s->ncol; i++) {
        s->name[i] = f[i].name;
        s->kind[i] = field_kind(&f[i]);
    }
    r.ncol = s->ncol;
    r.name = s->name;
    r.kind = s->kind;
    for (;;) {
        if (stream_fetch(s, &row) < 0)
            return sql__conn_timeout(s->c);
        s->eof = row == NULL;
        if (row == NULL)
            return mysql_errno(&s->c->mysql) ? sql__conn_error(s->c) : 0;
        r.cell = (const char *const *)row;
        r.len = mysql_fetch_lengths(s->res);
        rc = fn(arg, &r);
        if (rc != 0)
            return rc;
    }
}

int sql_stream(struct sql_conn *c, sql_row_fn fn, void *arg, const char *fmt, ...)
{
    struct stream s = {.c = c};
    struct sql_buf b = {0};
    va_list ap;
    int rc;

    if (c->broken) {
        sql_set_error("host %s: the connection is broken by an earlier failure",
                      c->ep.name);
        return BC_EDOWN;
    }
    va_start(ap, fmt);
    rc = sql_vformat(&b, NULL, 0, fmt, ap);
    va_end(ap);
    if (rc < 0)
        goto out;
    c->last_errno = 0;
    if (stream_send(c, b.buf, b.len) < 0) {
        rc = sql__conn_timeout(c);
        goto out;
    }
    if (mysql_errno(&c->mysql) != 0) {
        rc = sql__conn_error(c);
        goto out;
    }
    s.res = mysql_use_result(&c->mysql);
    if (s.res == NULL) {
        /* No result set: an error, or a statement that returns none. */
        rc = mysql_errno(&c->mysql) ? sql__conn_error(c) : 0;
        goto out;
    }
    rc = stream_rows(&s, fn, arg);
    /*
     * After a missed deadline or a lost connection there is nothing to read
     * (and the socket is shut, so freeing the result cannot block).
     */
    if (!c->broken && stream_drain(&s) < 0) {
        int timeout = sql__conn_timeout(c);
        if (rc == 0)
            rc = timeout;
    }
out:
    if (s.res != NULL)
        mysql_free_result(s.res);
    free(s.name);
    free(s.kind);
    sql_buf_deinit(&b);
    return rc;
}
