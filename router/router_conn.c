/*
 * router_conn.c: per-host connection pools with hard deadlines.
 *
 * Connector/C's own timeouts are whole seconds, too coarse for "a hung host
 * fails a request well under a second". So every connection runs in
 * non-blocking mode (MYSQL_OPT_NONBLOCK) and each call is driven by poll()
 * against a millisecond deadline: connect_timeout_ms for the handshake,
 * query_timeout_ms for each statement and its result. A connection that
 * missed its deadline is in an unknown state and is closed.
 *
 * Health: a failed connect or a timeout marks the host down for
 * ROUTER_DOWN_MS and drops its idle connections; meanwhile requests for it
 * fail at once (BC_EDOWN) instead of each waiting out a timeout. The first
 * request after that window tries again, so the host heals by itself.
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

#include "router/router_int.h"

static __thread char last_error[512];

int64_t router__now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void router__set_error(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(last_error, sizeof(last_error), fmt, ap);
    va_end(ap);
}

const char *router_last_error(void)
{
    return last_error;
}

struct router_pool *router__pool_create(const char *name, const char *addr,
                                        uint16_t port, const char *user,
                                        const char *password, uint32_t max)
{
    struct router_pool *pool = calloc(1, sizeof(*pool));

    if (pool == NULL)
        return NULL;
    snprintf(pool->name, sizeof(pool->name), "%s", name);
    snprintf(pool->addr, sizeof(pool->addr), "%s", addr);
    snprintf(pool->user, sizeof(pool->user), "%s", user);
    snprintf(pool->password, sizeof(pool->password), "%s", password);
    pool->port = port;
    pool->max = max;
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->freed, NULL);
    return pool;
}

static void conn_close(struct router_conn *conn)
{
    my_socket fd = mysql_get_socket(&conn->mysql);

    /*
     * mysql_close() sends COM_QUIT; shutting the socket first makes that
     * fail at once instead of writing to a hung peer.
     */
    if (fd >= 0)
        shutdown(fd, SHUT_RDWR);
    mysql_close(&conn->mysql);
    free(conn);
}

void router__pool_destroy(struct router_pool *pool)
{
    struct router_conn *conn, *next;

    if (pool == NULL)
        return;
    for (conn = pool->idle; conn != NULL; conn = next) {
        next = conn->next;
        conn_close(conn);
    }
    pthread_mutex_destroy(&pool->lock);
    pthread_cond_destroy(&pool->freed);
    free(pool);
}

/* Marks the host down and drops its idle connections. Takes pool->lock. */
static void pool_mark_down(struct router_pool *pool)
{
    struct router_conn *idle, *next;

    pthread_mutex_lock(&pool->lock);
    pool->down_until_ms = router__now_ms() + ROUTER_DOWN_MS;
    idle = pool->idle;
    pool->idle = NULL;
    pool->nopen -= pool->nidle;
    pool->nidle = 0;
    pthread_cond_broadcast(&pool->freed);
    pthread_mutex_unlock(&pool->lock);
    for (; idle != NULL; idle = next) {
        next = idle->next;
        conn_close(idle);
    }
}

/*
 * Waits for the socket events a non-blocking call asked for. Returns the
 * MYSQL_WAIT_* bits that happened, or -1 when the deadline passed first.
 */
static int wait_io(MYSQL *mysql, int status, int64_t deadline)
{
    struct pollfd pfd = {.fd = mysql_get_socket(mysql)};
    int64_t left = deadline - router__now_ms();
    int timeout, n, ev = 0;

    if (left <= 0)
        return -1;
    timeout = (int)left;
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
        return (status & MYSQL_WAIT_TIMEOUT) && router__now_ms() < deadline
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

/* Drives a non-blocking call to its end; -1 if the deadline passed first. */
#define DRIVE(status, mysql, deadline, cont)                                           \
    while ((status) != 0) {                                                            \
        int ev_ = wait_io((mysql), (status), (deadline));                              \
        if (ev_ < 0)                                                                   \
            return -1;                                                                 \
        (status) = (cont);                                                             \
    }

static int conn_connect(struct router *r, struct router_pool *pool,
                        struct router_conn *conn)
{
    MYSQL *ret = NULL;
    int64_t deadline = router__now_ms() + r->connect_timeout_ms;
    unsigned int secs = (r->connect_timeout_ms + 999) / 1000;
    int status;

    mysql_init(&conn->mysql);
    mysql_options(&conn->mysql, MYSQL_OPT_NONBLOCK, 0);
    mysql_options(&conn->mysql, MYSQL_OPT_CONNECT_TIMEOUT, &secs);
    mysql_options(&conn->mysql, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    status = mysql_real_connect_start(&ret, &conn->mysql, pool->addr, pool->user,
                                      pool->password, NULL, pool->port, NULL,
                                      CLIENT_MULTI_STATEMENTS | CLIENT_FOUND_ROWS);
    DRIVE(status, &conn->mysql, deadline,
          mysql_real_connect_cont(&ret, &conn->mysql, ev_));
    return ret == NULL ? -2 : 0;
}

int router__conn_get(struct router *r, struct router_pool *pool,
                     struct router_conn **out)
{
    int64_t deadline = router__now_ms() + r->connect_timeout_ms;
    struct router_conn *conn;
    int rc;

    pthread_mutex_lock(&pool->lock);
    for (;;) {
        if (pool->down_until_ms > router__now_ms()) {
            pthread_mutex_unlock(&pool->lock);
            router__set_error("host %s is down (retried after %d ms)", pool->name,
                              ROUTER_DOWN_MS);
            return BC_EDOWN;
        }
        if (pool->idle != NULL) {
            conn = pool->idle;
            pool->idle = conn->next;
            pool->nidle--;
            pthread_mutex_unlock(&pool->lock);
            conn->reused = 1;
            *out = conn;
            return 0;
        }
        if (pool->nopen < pool->max)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t left = deadline - router__now_ms();
        if (left <= 0) {
            pthread_mutex_unlock(&pool->lock);
            router__set_error("host %s: all %u connections busy", pool->name,
                              pool->max);
            return BC_EPOOL;
        }
        ts.tv_sec += left / 1000;
        ts.tv_nsec += (left % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&pool->freed, &pool->lock, &ts);
    }
    pool->nopen++;
    pthread_mutex_unlock(&pool->lock);

    conn = calloc(1, sizeof(*conn));
    if (conn == NULL) {
        rc = -ENOMEM;
        goto error;
    }
    conn->pool = pool;
    rc = conn_connect(r, pool, conn);
    if (rc < 0) {
        if (rc == -1)
            router__set_error("host %s (%s:%u): connect timed out after %u ms",
                              pool->name, pool->addr, pool->port,
                              r->connect_timeout_ms);
        else
            router__set_error("host %s (%s:%u): %s", pool->name, pool->addr, pool->port,
                              mysql_error(&conn->mysql));
        atomic_fetch_add(&pool->errors, 1);
        if (rc == -1)
            atomic_fetch_add(&pool->timeouts, 1);
        conn_close(conn);
        pool_mark_down(pool);
        rc = BC_EDOWN;
        goto error;
    }
    *out = conn;
    return 0;
error:
    pthread_mutex_lock(&pool->lock);
    pool->nopen--;
    pthread_cond_signal(&pool->freed);
    pthread_mutex_unlock(&pool->lock);
    return rc;
}

void router__conn_put(struct router_conn *conn, int broken)
{
    struct router_pool *pool = conn->pool;

    if (broken) {
        conn_close(conn);
        pthread_mutex_lock(&pool->lock);
        pool->nopen--;
        pthread_cond_signal(&pool->freed);
        pthread_mutex_unlock(&pool->lock);
        return;
    }
    pthread_mutex_lock(&pool->lock);
    conn->next = pool->idle;
    pool->idle = conn;
    pool->nidle++;
    pthread_cond_signal(&pool->freed);
    pthread_mutex_unlock(&pool->lock);
}

/* Copies a MYSQL_RES into rows (appending). */
static int rows_take(struct sql_rows *rows, MYSQL_RES *res)
{
    uint32_t ncol = mysql_num_fields(res), nrow = (uint32_t)mysql_num_rows(res);
    uint64_t base, total;
    char **cell;
    unsigned long *len;
    MYSQL_ROW row;

    if (rows->nrow != 0 && rows->ncol != ncol)
        return -EINVAL;
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
    while ((row = mysql_fetch_row(res)) != NULL) {
        unsigned long *lens = mysql_fetch_lengths(res);
        for (uint32_t c = 0; c < ncol; c++, base++) {
            cell[base] = NULL;
            len[base] = lens[c];
            if (row[c] == NULL)
                continue;
            cell[base] = malloc(lens[c] + 1);
            if (cell[base] == NULL)
                return -ENOMEM;
            memcpy(cell[base], row[c], lens[c]);
            cell[base][lens[c]] = '\0';
        }
        rows->nrow++;
    }
    return 0;
}

/* Maps a server or client error of conn to a status; sets the message. */
static int query_error(struct router_conn *conn, int *broken)
{
    unsigned int no = mysql_errno(&conn->mysql);

    router__set_error("host %s: %s (%u)", conn->pool->name, mysql_error(&conn->mysql),
                      no);
    atomic_fetch_add(&conn->pool->errors, 1);
    if (no >= CR_MIN_ERROR && no <= CR_MAX_ERROR) {
        /* Client-side: the connection is gone or confused. */
        *broken = 1;
        return BC_EDOWN;
    }
    if (no == ER_DUP_ENTRY)
        return BC_EDUPKEY;
    /*
     * A schema-qualified statement on a host without that schema fails with
     * "unknown database", "no such table" or (NEXTVAL) "unknown sequence":
     * the shard is not (or no longer) here, and the caller should follow
     * the map.
     */
    if (no == ER_BAD_DB_ERROR || no == ER_NO_SUCH_TABLE || no == ER_UNKNOWN_SEQUENCES)
        return BC_EMOVED;
    /* A fenced copy (etc/schema/shard_fence.sql): a move's cut-over began. */
    if (no == ER_SIGNAL_EXCEPTION &&
        strstr(mysql_error(&conn->mysql), "bc: shard moved"))
        return BC_EMOVED;
    return BC_EQUERY;
}

static int conn_run(struct router *r, struct router_conn *conn, const char *sql,
                    size_t len, struct sql_rows *rows, int *err)
{
    MYSQL *m = &conn->mysql;
    int64_t deadline = router__now_ms() + r->query_timeout_ms;
    int ret = 0, status, more;
    MYSQL_RES *res = NULL;

    *err = 0;
    status = mysql_real_query_start(&ret, m, sql, (unsigned long)len);
    DRIVE(status, m, deadline, mysql_real_query_cont(&ret, m, ev_));
    for (;;) {
        if (ret != 0)
            return 0; /* server or client error: see mysql_errno */
        status = mysql_store_result_start(&res, m);
        DRIVE(status, m, deadline, mysql_store_result_cont(&res, m, ev_));
        if (res != NULL) {
            if (rows != NULL && *err == 0)
                *err = rows_take(rows, res);
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
        DRIVE(status, m, deadline, mysql_next_result_cont(&more, m, ev_));
        if (more > 0)
            return 0; /* error in a later statement */
    }
}

int router__conn_query(struct router *r, struct router_conn *conn, const char *sql,
                       size_t len, struct sql_rows *rows, int *broken)
{
    int err;

    *broken = 0;
    atomic_fetch_add(&conn->pool->queries, 1);
    if (conn_run(r, conn, sql, len, rows, &err) < 0) {
        router__set_error("host %s (%s:%u): statement timed out after %u ms",
                          conn->pool->name, conn->pool->addr, conn->pool->port,
                          r->query_timeout_ms);
        atomic_fetch_add(&conn->pool->errors, 1);
        atomic_fetch_add(&conn->pool->timeouts, 1);
        *broken = 1;
        pool_mark_down(conn->pool);
        return BC_ETIMEOUT;
    }
    if (mysql_errno(&conn->mysql) != 0) {
        int rc = query_error(conn, broken);
        if (*broken && !conn->reused)
            pool_mark_down(conn->pool);
        return rc;
    }
    return err;
}

struct router_pool *router__pool_find(struct router *r, const char *name)
{
    unsigned n = atomic_load(&r->npool);

    for (unsigned i = 0; i < n; i++)
        if (strcmp(r->pools[i]->name, name) == 0)
            return r->pools[i];
    return NULL;
}

uint32_t router_stats(struct router *r, struct router_host_stats *out, uint32_t max)
{
    unsigned n = atomic_load(&r->npool);

    for (unsigned i = 0; i < n && i < max; i++) {
        struct router_pool *p = r->pools[i];
        struct router_host_stats *s = &out[i];
        snprintf(s->name, sizeof(s->name), "%s", p->name);
        pthread_mutex_lock(&p->lock);
        s->up = p->down_until_ms <= router__now_ms();
        s->open = p->nopen;
        s->idle = p->nidle;
        pthread_mutex_unlock(&p->lock);
        s->queries = atomic_load(&p->queries);
        s->errors = atomic_load(&p->errors);
        s->timeouts = atomic_load(&p->timeouts);
    }
    return n;
}
