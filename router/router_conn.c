/*
 * router_conn.c: per-host connection pools.
 *
 * Each pooled connection wraps a struct sql_conn opened with the router's
 * deadlines (connect_timeout_ms, query_timeout_ms: the SQL layer enforces
 * them with Connector/C's non-blocking API), multi-statements on. Pools are
 * bounded; idle connections are kept on a LIFO list.
 *
 * Health: a failed connect or a timeout marks the host down for
 * ROUTER_DOWN_MS and drops its idle connections; meanwhile requests for it
 * fail at once (BC_EDOWN) instead of each waiting out a timeout. The first
 * request after that window tries again, so the host heals by itself. A
 * server's error (a bad statement, a duplicate key) says the host is up and
 * marks nothing.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "router/router_int.h"

const char *router_last_error(void)
{
    return sql_last_error();
}

struct router_pool *router__pool_create(const char *name, const char *addr,
                                        uint16_t port, const char *user,
                                        const char *password, uint32_t max)
{
    struct router_pool *pool = calloc(1, sizeof(*pool));

    if (pool == NULL)
        return NULL;
    snprintf(pool->name, sizeof(pool->name), "%s", name);
    snprintf(pool->ep.name, sizeof(pool->ep.name), "%s", name);
    snprintf(pool->ep.addr, sizeof(pool->ep.addr), "%s", addr);
    snprintf(pool->ep.user, sizeof(pool->ep.user), "%s", user);
    snprintf(pool->ep.password, sizeof(pool->ep.password), "%s", password);
    pool->ep.port = port;
    pool->max = max;
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->freed, NULL);
    return pool;
}

static void conn_close(struct router_conn *conn)
{
    sql_conn_close(conn->sql);
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

int router__conn_get(struct router *r, struct router_pool *pool,
                     struct router_conn **out)
{
    struct sql_conn_opts opts = {.connect_timeout_ms = r->connect_timeout_ms,
                                 .query_timeout_ms = r->query_timeout_ms,
                                 .multi_statements = 1};
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
    rc = sql_conn_open(&pool->ep, &opts, &conn->sql);
    if (rc == -ENOMEM) {
        free(conn);
        goto error;
    }
    if (rc < 0) {
        /* Refused or no handshake in time: either way the host is down. */
        atomic_fetch_add(&pool->errors, 1);
        if (rc == BC_ETIMEOUT)
            atomic_fetch_add(&pool->timeouts, 1);
        free(conn);
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

int router__conn_query(struct router *r, struct router_conn *conn, const char *sql,
                       size_t len, struct sql_rows *rows, int *broken)
{
    struct router_pool *pool = conn->pool;
    int rc;

    (void)r; /* the deadlines are the connection's, set when it was opened */
    atomic_fetch_add(&pool->queries, 1);
    rc = sql_query(conn->sql, sql, len, rows);
    *broken = sql_conn_broken(conn->sql);
    if (rc == 0)
        return 0;
    if (rc == BC_ETIMEOUT) {
        atomic_fetch_add(&pool->errors, 1);
        atomic_fetch_add(&pool->timeouts, 1);
        pool_mark_down(pool);
    } else if (sql_conn_errno(conn->sql) != 0 || *broken) {
        /* The server refused, or the connection was lost. */
        atomic_fetch_add(&pool->errors, 1);
        /* A stale idle connection says little: the server may have dropped it. */
        if (*broken && !conn->reused)
            pool_mark_down(pool);
    }
    return rc;
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

int router_endpoint(struct router *r, const char *host, struct sql_endpoint *out)
{
    struct router_pool *pool = router__pool_find(r, host);

    if (pool == NULL) {
        router__set_error("unknown host %s (the router has no pool for it)", host);
        return BC_EHOST;
    }
    *out = pool->ep;
    return 0;
}
