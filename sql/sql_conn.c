/*
 * sql_conn.c: one MariaDB connection with millisecond deadlines.
 *
 * Connector/C's own timeouts are whole seconds, too coarse for "a hung host
 * fails a request well under a second". So every connection runs in
 * non-blocking mode (MYSQL_OPT_NONBLOCK) and each call is driven by poll()
 * against a millisecond deadline: connect_timeout_ms for the handshake,
 * query_timeout_ms for each statement and its result. A connection that
 * missed its deadline is in an unknown state and is marked broken; its
 * owner closes it.
 *
 * Every connection is utf8mb4 and runs in the session sql_mode SQL_MODE
 * (both of which the formatter's escaping relies on, so a server whose
 * global sql_mode has NO_BACKSLASH_ESCAPES or ANSI_QUOTES reads our
 * literals as we wrote them), and reports found rather than changed rows
 * (CLIENT_FOUND_ROWS): an UPDATE that matches a row counts it even when the
 * values were already there, which is what "did the row exist" checks of
 * callers ask. Only a connection opened with multi_statements accepts
 * "a; b" in one call; the server refuses it on every other.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <errmsg.h>
#include <mysqld_error.h>

#include "sql/sql_int.h"

int64_t sql_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int sql__wait_io(MYSQL *mysql, int status, int64_t deadline)
{
    struct pollfd pfd = {.fd = mysql_get_socket(mysql)};
    int64_t left = deadline - sql_now_ms();
    int timeout, n, ev = 0;

    if (left <= 0)
        return -1;
    timeout = left > 86400000 ? 86400000 : (int)left;
    if (status & MYSQL_WAIT_TIMEOUT) {
        unsigned int lib = mysql_get_timeout_value_ms(mysql);
        if (lib < (unsigned int)timeout)
            timeout = (int)lib;
    }
    if (status & MYSQL_WAIT_READ)
        pfd.events |= POLLIN;
    if (status & MYSQL_WAIT_WRITE)
        pfd.events |= POLLOUT;
    if (status & MYSQL_WAIT_EXCEPT)
        pfd.events |= POLLPRI;
    do
        n = poll(&pfd, 1, timeout);
    while (n < 0 && errno == EINTR);
    if (n == 0)
        return (status & MYSQL_WAIT_TIMEOUT) && sql_now_ms() < deadline
                   ? MYSQL_WAIT_TIMEOUT
                   : -1;
    if (n < 0)
        return -1;
    if (pfd.revents & (POLLIN | POLLERR | POLLHUP))
        ev |= MYSQL_WAIT_READ;
    if (pfd.revents & (POLLOUT | POLLERR | POLLHUP))
        ev |= MYSQL_WAIT_WRITE;
    if (pfd.revents & POLLPRI)
        ev |= MYSQL_WAIT_EXCEPT;
    return ev;
}

/* -1 when the deadline passed, -2 when the server or network refused, else 0. */
static int conn_connect(struct sql_conn *c)
{
    MYSQL *ret = NULL;
    int64_t deadline = sql_now_ms() + c->connect_timeout_ms;
    unsigned int secs = (c->connect_timeout_ms + 999) / 1000;
    unsigned long flags = CLIENT_FOUND_ROWS;
    int status;

    if (c->multi_statements)
        flags |= CLIENT_MULTI_STATEMENTS;
    mysql_options(&c->mysql, MYSQL_OPT_CONNECT_TIMEOUT, &secs);
    mysql_options(&c->mysql, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    /* Part of the handshake: no statement runs before the mode is ours. */
    mysql_options(&c->mysql, MYSQL_INIT_COMMAND,
                  "SET SESSION sql_mode = '" SQL_MODE "'");
    status = mysql_real_connect_start(&ret, &c->mysql, c->ep.addr, c->ep.user,
                                      c->ep.password, NULL, c->ep.port, NULL, flags);
    SQL_DRIVE(status, &c->mysql, deadline,
              mysql_real_connect_cont(&ret, &c->mysql, ev_));
    return ret == NULL ? -2 : 0;
}

/* Closes the MYSQL (not c itself), at once also towards a hung peer. */
static void conn_shut(struct sql_conn *c)
{
    my_socket fd = mysql_get_socket(&c->mysql);

    /*
     * mysql_close() sends COM_QUIT; shutting the socket first makes that
     * fail at once instead of writing to a hung peer.
     */
    if (fd >= 0)
        shutdown(fd, SHUT_RDWR);
    mysql_close(&c->mysql);
}

static __thread int last_denied;

int sql_last_denied(void)
{
    return last_denied;
}

int sql_conn_open(const struct sql_endpoint *ep, const struct sql_conn_opts *opts,
                  struct sql_conn **out)
{
    struct sql_conn *c;
    int rc;

    last_denied = 0;
    sql__lib_init();
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return -ENOMEM;
    c->ep = *ep;
    c->connect_timeout_ms =
        opts && opts->connect_timeout_ms ? opts->connect_timeout_ms : 500;
    c->query_timeout_ms = opts && opts->query_timeout_ms ? opts->query_timeout_ms : 800;
    c->multi_statements = opts ? opts->multi_statements : 0;
    if (mysql_init(&c->mysql) == NULL) {
        free(c);
        return -ENOMEM;
    }
    if (mysql_options(&c->mysql, MYSQL_OPT_NONBLOCK, 0) != 0) {
        mysql_close(&c->mysql);
        free(c);
        return -ENOMEM;
    }
    rc = conn_connect(c);
    if (rc < 0) {
        if (rc == -1)
            sql_set_error("host %s (%s:%u): connect timed out after %u ms", ep->name,
                          ep->addr, ep->port, c->connect_timeout_ms);
        else
            sql_set_error("host %s (%s:%u): %s", ep->name, ep->addr, ep->port,
                          mysql_error(&c->mysql));
        last_denied = rc != -1 && (mysql_errno(&c->mysql) == ER_ACCESS_DENIED_ERROR ||
                                   mysql_errno(&c->mysql) == ER_DBACCESS_DENIED_ERROR);
        conn_shut(c);
        free(c);
        return rc == -1 ? BC_ETIMEOUT : BC_EDOWN;
    }
    *out = c;
    return 0;
}

void sql_conn_close(struct sql_conn *c)
{
    if (c == NULL)
        return;
    conn_shut(c);
    free(c);
}

void sql_conn_set_timeout(struct sql_conn *c, uint32_t query_timeout_ms)
{
    c->query_timeout_ms = query_timeout_ms ? query_timeout_ms : 800;
}

const struct sql_endpoint *sql_conn_endpoint(const struct sql_conn *c)
{
    return &c->ep;
}

unsigned sql_conn_errno(const struct sql_conn *c)
{
    return c->last_errno;
}

int sql_conn_broken(const struct sql_conn *c)
{
    return c->broken;
}

int sql_conn_peer_closed(struct sql_conn *c)
{
    my_socket fd = mysql_get_socket(&c->mysql);
    char byte;
    ssize_t n;

    if (c->broken || fd < 0)
        return 1;
    /* Nothing is due on an idle connection: any byte is the server's goodbye. */
    do
        n = recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    return !(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
}

/*
 * Marks c unusable. Its socket is shut at once, so nothing done with it
 * before it is closed (freeing a half-read result) can wait on the peer.
 */
/*
 * Abandons the connection after a failure or a missed deadline: the TCP
 * connection is reset at once and what the kernel still held to send is
 * dropped (connect() to AF_UNSPEC disconnects a TCP socket; the descriptor
 * stays the MYSQL's, for mysql_close()). A shutdown() would keep
 * retransmitting it behind a partition: a statement given up here could
 * reach the server seconds later, when the link comes back, and one that
 * is a whole transaction (a bet's CALL) would then commit on a server that
 * may have lost its primary role meanwhile.
 */
static void conn_break(struct sql_conn *c)
{
    my_socket fd = mysql_get_socket(&c->mysql);
    struct sockaddr sa = {.sa_family = AF_UNSPEC};

    if (fd >= 0 && connect(fd, &sa, sizeof(sa)) != 0)
        shutdown(fd, SHUT_RDWR);
    c->broken = 1;
}

int sql__conn_timeout(struct sql_conn *c)
{
    sql_set_error("host %s (%s:%u): statement timed out after %u ms", c->ep.name,
                  c->ep.addr, c->ep.port, c->query_timeout_ms);
    c->last_errno = 0;
    conn_break(c);
    return BC_ETIMEOUT;
}

int sql__conn_error(struct sql_conn *c)
{
    unsigned int no = mysql_errno(&c->mysql);

    c->last_errno = no;
    if (no == 0) {
        sql_set_error("host %s: the connection failed without an error", c->ep.name);
        conn_break(c);
        return BC_EDOWN;
    }
    sql_set_error("host %s: %s (%u)", c->ep.name, mysql_error(&c->mysql), no);
    if (no >= CR_MIN_ERROR && no <= CR_MAX_ERROR) {
        /* Client-side: the connection is gone or confused. */
        conn_break(c);
        return BC_EDOWN;
    }
    switch (no) {
    case ER_DUP_ENTRY:
        return BC_EDUPKEY;
    /*
     * A schema-qualified statement on a host without that schema fails with
     * "unknown database", "no such table", (NEXTVAL) "unknown sequence" or
     * (CALL) "procedure does not exist".
     */
    case ER_BAD_DB_ERROR:
    case ER_NO_SUCH_TABLE:
    case ER_UNKNOWN_SEQUENCES:
    case ER_SP_DOES_NOT_EXIST:
        return BC_ENOSCHEMA;
    case ER_SIGNAL_EXCEPTION:
        /* A fenced copy (etc/schema/shard_fence.sql): a move's cut-over began. */
        return strstr(mysql_error(&c->mysql), "bc: shard moved") ? BC_EFENCED
                                                                 : BC_EQUERY;
    case ER_LOCK_WAIT_TIMEOUT:
    case ER_LOCK_DEADLOCK:
        return BC_ELOCKWAIT;
    /*
     * --read-only: a server that is not its host's primary (a replica, an
     * old primary fenced by a failover, a primary in a switchover).
     */
    case ER_OPTION_PREVENTS_STATEMENT:
        return BC_EREADONLY;
    default:
        return BC_EQUERY;
    }
}

int sql__rows_take(struct sql_rows *rows, MYSQL_RES *res)
{
    uint32_t ncol = mysql_num_fields(res), nrow = (uint32_t)mysql_num_rows(res);
    uint64_t base, total;
    char **cell;
    unsigned long *len;
    MYSQL_ROW row;

    if (rows->nrow != 0 && rows->ncol != ncol) {
        sql_set_error("results of %u and %u columns in one call", rows->ncol, ncol);
        return -EINVAL;
    }
    rows->ncol = ncol;
    base = (uint64_t)rows->nrow * ncol;
    total = base + (uint64_t)nrow * ncol;
    if (total == 0)
        return 0;
    cell = realloc(rows->cell, total * sizeof(*cell));
    if (cell == NULL)
        return -ENOMEM;
    rows->cell = cell;
    len = realloc(rows->len, total * sizeof(*len));
    if (len == NULL)
        return -ENOMEM;
    rows->len = len;
    /* A row is copied whole or not at all: nothing of it leaks on -ENOMEM. */
    while ((row = mysql_fetch_row(res)) != NULL) {
        int rc =
            sql__rows_add_row(rows, (const char *const *)row, mysql_fetch_lengths(res));
        if (rc < 0)
            return rc;
    }
    return 0;
}

/*
 * Sends sql and reads every result within the query deadline. Returns -1 on
 * a missed deadline, else 0 with a server or client error left in mysql_errno
 * and *err the status of copying the rows.
 */
static int conn_run(struct sql_conn *c, const char *sql, size_t len,
                    struct sql_rows *rows, int *err)
{
    MYSQL *m = &c->mysql;
    int64_t deadline = sql_now_ms() + c->query_timeout_ms;
    int ret = 0, status, more;
    MYSQL_RES *res = NULL;

    *err = 0;
    status = mysql_real_query_start(&ret, m, sql, (unsigned long)len);
    SQL_DRIVE(status, m, deadline, mysql_real_query_cont(&ret, m, ev_));
    for (;;) {
        if (ret != 0)
            return 0; /* server or client error: see mysql_errno */
        status = mysql_store_result_start(&res, m);
        SQL_DRIVE(status, m, deadline, mysql_store_result_cont(&res, m, ev_));
        if (res != NULL) {
            if (rows != NULL && *err == 0)
                *err = sql__rows_take(rows, res);
            mysql_free_result(res);
        } else if (mysql_field_count(m) != 0) {
            return 0; /* result expected but not read: error set */
        } else if (rows != NULL) {
            rows->affected += mysql_affected_rows(m);
            rows->insert_id = mysql_insert_id(m);
        }
        if (!mysql_more_results(m))
            return 0;
        status = mysql_next_result_start(&more, m);
        SQL_DRIVE(status, m, deadline, mysql_next_result_cont(&more, m, ev_));
        if (more > 0)
            return 0; /* error in a later statement */
    }
}

int sql_query(struct sql_conn *c, const char *sql, size_t len, struct sql_rows *rows)
{
    int rc, err;

    if (c->broken) {
        sql_set_error("host %s: the connection is broken by an earlier failure",
                      c->ep.name);
        rc = BC_EDOWN;
    } else if (conn_run(c, sql, len, rows, &err) < 0) {
        rc = sql__conn_timeout(c);
    } else if (mysql_errno(&c->mysql) != 0) {
        rc = sql__conn_error(c);
    } else {
        c->last_errno = 0;
        rc = err;
    }
    if (rc < 0 && rows != NULL)
        sql_rows_free(rows);
    return rc;
}

int sql_vexec(struct sql_conn *c, struct sql_rows *rows, const char *schema,
              uint32_t shard, const char *fmt, va_list ap)
{
    struct sql_buf b = {0};
    int rc;

    rc = sql_vformat(&b, schema, shard, fmt, ap);
    if (rc == 0)
        rc = sql_query(c, b.buf, b.len, rows);
    else if (rows != NULL)
        sql_rows_free(rows);
    sql_buf_deinit(&b);
    return rc;
}

int sql_exec(struct sql_conn *c, struct sql_rows *rows, const char *fmt, ...)
{
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = sql_vexec(c, rows, NULL, 0, fmt, ap);
    va_end(ap);
    return rc;
}

int sql_value(struct sql_conn *c, char *out, size_t size, const char *fmt, ...)
{
    struct sql_rows rows = {0};
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = sql_vexec(c, &rows, NULL, 0, fmt, ap);
    va_end(ap);
    if (rc < 0)
        return rc;
    rc = rows.nrow > 0 && rows.ncol > 0 && sql_cell(&rows, 0, 0) != NULL;
    if (rc && size > 0)
        snprintf(out, size, "%s", sql_cell(&rows, 0, 0));
    sql_rows_free(&rows);
    return rc;
}

static int executor_run(void *arg, const char *sql, size_t len, struct sql_rows *rows)
{
    return sql_query(arg, sql, len, rows);
}

void sql_conn_executor(struct sql_conn *c, struct sql_executor *out)
{
    out->run = executor_run;
    out->arg = c;
}
