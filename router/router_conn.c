/*
 * router_conn.c: per-host connection pools, and the health of each host.
 *
 * Each host has two bounded pools ("lanes"): the request pool, whose
 * connections bound each statement by query_timeout_ms, and the background
 * pool, for the threads that called router_background(1), bounded by
 * batch_timeout_ms. Both connect within connect_timeout_ms, at most
 * ROUTER_CONNECTS at once (a cold pool grows under a burst a few connects
 * at a time, while the connections it has serve), and keep their idle
 * connections on a LIFO list; the SQL layer enforces the deadlines with
 * Connector/C's non-blocking API. Batch work thus never takes a connection
 * a request needs, and its long statements are not timed as requests.
 *
 * Health (docs/config.md): a host is marked down for ROUTER_DOWN_MS, its
 * idle connections dropped, when a connection to it fails (refused,
 * unreachable, no handshake within the connect deadline, lost mid-
 * statement), or when ROUTER_SLOW_TIMEOUTS request statements in a row
 * time out: one slow statement is not a dead host, a host on which every
 * short statement hangs is. A background statement that times out marks
 * nothing. Meanwhile requests for a host marked down fail at once (BC_EDOWN)
 * instead of each waiting out a timeout; the first request after that
 * window tries again, so the host heals by itself. A server's error (a bad
 * statement, a duplicate key) says the host is up: it marks nothing and
 * ends a row of timeouts.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "router/router_int.h"

/* The calling thread's mode: 0, ROUTER_BACKGROUND or ROUTER_BACKGROUND_PER_CORE. */
static _Thread_local int background_mode;

void router_background(int mode)
{
    background_mode = mode == ROUTER_BACKGROUND_PER_CORE ? mode : mode != 0;
}

int router__background(void)
{
    return background_mode;
}

const char *router_last_error(void)
{
    return sql_last_error();
}

static void lane_init(struct router_lane *lane, uint32_t max, int background)
{
    lane->max = max;
    lane->background = background;
    pthread_cond_init(&lane->freed, NULL);
}

struct router_pool *router__pool_create(const char *name, const char *addr,
                                        uint16_t port, const char *user,
                                        const char *password, uint32_t max)
{
    struct router_pool *pool = calloc(1, sizeof(*pool));

    if (pool == NULL)
        return NULL;
    snprintf(pool->name, sizeof(pool->name), "%s", name);
    snprintf(pool->host, sizeof(pool->host), "%s", name);
    snprintf(pool->ep.name, sizeof(pool->ep.name), "%s", name);
    snprintf(pool->ep.addr, sizeof(pool->ep.addr), "%s", addr);
    snprintf(pool->ep.user, sizeof(pool->ep.user), "%s", user);
    snprintf(pool->ep.password, sizeof(pool->ep.password), "%s", password);
    pool->ep.port = port;
    pthread_mutex_init(&pool->lock, NULL);
    lane_init(&pool->req, max, 0);
    lane_init(&pool->bg, max < ROUTER_BG_POOL_MAX ? max : ROUTER_BG_POOL_MAX, 1);
    return pool;
}

static void conn_close(struct router_conn *conn)
{
    if (conn->lowered)
        router__conn_unlower(conn);
    sql_conn_close(conn->sql);
    free(conn);
}

/* Closes a list of idle connections (taken off their lane before). */
static void lane_close_idle(struct router_conn *idle)
{
    struct router_conn *next;

    for (; idle != NULL; idle = next) {
        next = idle->next;
        conn_close(idle);
    }
}

void router__pool_destroy(struct router_pool *pool)
{
    if (pool == NULL)
        return;
    lane_close_idle(pool->req.idle);
    lane_close_idle(pool->bg.idle);
    pthread_mutex_destroy(&pool->lock);
    pthread_cond_destroy(&pool->req.freed);
    pthread_cond_destroy(&pool->bg.freed);
    free(pool);
}

/*
 * Takes lane's first idle connection that its server has not closed
 * meanwhile (a restart, wait_timeout); pool->lock held. Those found closed
 * go onto *dead, for lane_close_idle() once the lock is released: a
 * statement sent on one would fail, and a write is not sent again (it may
 * have run), so its request would fail with it.
 */
static struct router_conn *lane_take_idle(struct router_pool *pool,
                                          struct router_lane *lane,
                                          struct router_conn **dead)
{
    struct router_conn *conn;

    while ((conn = lane->idle) != NULL) {
        lane->idle = conn->next;
        lane->nidle--;
        if (!sql_conn_peer_closed(conn->sql)) {
            conn->reused = 1;
            return conn;
        }
        atomic_fetch_add(&pool->stale, 1);
        lane->nopen--;
        conn->next = *dead;
        *dead = conn;
        pthread_cond_signal(&lane->freed);
        if (lane == &pool->req)
            router__waiters_wake(pool); /* a worker may open one now */
    }
    return NULL;
}

/* Takes the idle list of lane and wakes its waiters; pool->lock held. */
static struct router_conn *lane_drop_idle(struct router_lane *lane)
{
    struct router_conn *idle = lane->idle;

    lane->idle = NULL;
    lane->nopen -= lane->nidle;
    lane->nidle = 0;
    pthread_cond_broadcast(&lane->freed);
    return idle;
}

/*
 * Sets the host's down mark (0: up) and why, ends a row of timeouts and
 * closes the idle connections of both lanes; takes the lock.
 */
static void pool_flush(struct router_pool *pool, int64_t down_until_ms, const char *why)
{
    struct router_conn *req, *bg;

    pthread_mutex_lock(&pool->lock);
    pool->down_until_ms = down_until_ms;
    snprintf(pool->down_why, sizeof(pool->down_why), "%s", why);
    atomic_store(&pool->nslow, 0);
    req = lane_drop_idle(&pool->req);
    bg = lane_drop_idle(&pool->bg);
    router__waiters_wake(pool); /* their next try fails at once */
    pthread_mutex_unlock(&pool->lock);
    lane_close_idle(req);
    lane_close_idle(bg);
}

/*
 * A connection taken idle from the pool was found lost: its server most
 * likely restarted, and the other idle ones died with it. Closed all, so
 * that the next requests connect anew instead of each meeting a dead one.
 */
static void pool_drop_idle(struct router_pool *pool)
{
    struct router_conn *req, *bg;

    pthread_mutex_lock(&pool->lock);
    req = lane_drop_idle(&pool->req);
    bg = lane_drop_idle(&pool->bg);
    pthread_mutex_unlock(&pool->lock);
    lane_close_idle(req);
    lane_close_idle(bg);
}

/* Marks the host down for why, drops the idle connections of both lanes. */
static void pool_mark_down(struct router_pool *pool, const char *why)
{
    pool_flush(pool, router__now_ms() + ROUTER_DOWN_MS, why);
}

/* The error of a host marked down, with what marked it; pool->lock held. */
static void set_down_error(struct router_pool *pool)
{
    router__set_error("host %s is down (retried after %d ms; %s)", pool->name,
                      ROUTER_DOWN_MS,
                      pool->down_why[0] ? pool->down_why : "no reason kept");
}

void router__pool_retarget(struct router_pool *pool, const char *addr, uint16_t port)
{
    int moved;

    pthread_mutex_lock(&pool->lock);
    moved = pool->ep.port != port || strcmp(pool->ep.addr, addr) != 0;
    if (moved) {
        snprintf(pool->ep.addr, sizeof(pool->ep.addr), "%s", addr);
        pool->ep.port = port;
        pool->epoch++; /* connections of the old address close as they come back */
    }
    pthread_mutex_unlock(&pool->lock);
    if (moved)
        pool_flush(pool, 0, "");
}

int router__any_down(struct router *r)
{
    unsigned n = atomic_load(&r->npool);
    int64_t now = router__now_ms();
    int down = 0;

    for (unsigned i = 0; i < n && !down; i++) {
        struct router_pool *p = r->pools[i];

        if (p->replica)
            continue;
        pthread_mutex_lock(&p->lock);
        down = p->down_until_ms > now;
        pthread_mutex_unlock(&p->lock);
    }
    return down;
}

/* The server answered a statement: a row of timeouts is over. */
static void pool_answered(struct router_pool *pool)
{
    /* Unlocked read first: the common case, no row, costs no lock. */
    if (atomic_load_explicit(&pool->nslow, memory_order_relaxed) == 0)
        return;
    pthread_mutex_lock(&pool->lock);
    atomic_store(&pool->nslow, 0);
    pthread_mutex_unlock(&pool->lock);
}

/*
 * A request statement timed out: the ROUTER_SLOW_TIMEOUTS-th in a row within
 * the window marks the host down. A row older than the window starts again,
 * so that rare timeouts of an idle server never add up.
 */
static void pool_timed_out(struct router *r, struct router_pool *pool)
{
    int64_t now = router__now_ms();
    int64_t window = (int64_t)r->query_timeout_ms * 4;
    unsigned n;

    if (window < ROUTER_SLOW_WINDOW_MS)
        window = ROUTER_SLOW_WINDOW_MS;
    pthread_mutex_lock(&pool->lock);
    n = atomic_load(&pool->nslow);
    if (n == 0 || now - pool->slow_since_ms > window) {
        n = 0;
        pool->slow_since_ms = now;
    }
    atomic_store(&pool->nslow, ++n);
    pthread_mutex_unlock(&pool->lock);
    if (n >= ROUTER_SLOW_TIMEOUTS) {
        char why[64];

        snprintf(why, sizeof(why), "%u request statements timed out in a row", n);
        pool_mark_down(pool, why);
    }
}

/* Waits on lane->freed until deadline; 0, or -ETIMEDOUT when it passed. */
static int lane_wait(struct router_pool *pool, struct router_lane *lane,
                     int64_t deadline)
{
    int64_t left = deadline - router__now_ms();
    struct timespec ts;

    if (left <= 0)
        return -ETIMEDOUT;
    router__deadline(&ts, left);
    pthread_cond_timedwait(&lane->freed, &pool->lock, &ts);
    return 0;
}

int router__conn_get(struct router *r, struct router_pool *pool,
                     struct router_conn **out)
{
    struct router_lane *lane = background_mode ? &pool->bg : &pool->req;
    struct sql_conn_opts opts = {
        .connect_timeout_ms = r->connect_timeout_ms,
        .query_timeout_ms =
            lane->background ? r->batch_timeout_ms : r->query_timeout_ms,
        /* The API's account: one statement a call. */
        .multi_statements = r->conf.account == SHARDMAP_ACCOUNT_OPS};
    /* Batch work is not in a hurry: it queues for a connection longer. */
    int64_t deadline = router__now_ms() +
                       (lane->background ? r->batch_timeout_ms : r->connect_timeout_ms);
    struct router_conn *conn, *dead = NULL;
    struct sql_endpoint ep;
    uint64_t epoch;
    int rc;

    pthread_mutex_lock(&pool->lock);
    for (;;) {
        if (pool->down_until_ms > router__now_ms()) {
            set_down_error(pool);
            pthread_mutex_unlock(&pool->lock);
            lane_close_idle(dead);
            return BC_EDOWN;
        }
        conn = lane_take_idle(pool, lane, &dead);
        if (conn != NULL) {
            pthread_mutex_unlock(&pool->lock);
            lane_close_idle(dead);
            *out = conn;
            return 0;
        }
        if (lane->nopen < lane->max && lane->nconnecting < ROUTER_CONNECTS)
            break;
        if (lane_wait(pool, lane, deadline) < 0) {
            pthread_mutex_unlock(&pool->lock);
            lane_close_idle(dead);
            router__set_error("host %s: all %u %s connections busy", pool->name,
                              lane->max, lane->background ? "background" : "request");
            return BC_EPOOL;
        }
    }
    lane->nopen++;
    lane->nconnecting++;
    ep = pool->ep;
    epoch = pool->epoch;
    pthread_mutex_unlock(&pool->lock);
    lane_close_idle(dead);

    conn = calloc(1, sizeof(*conn));
    if (conn == NULL) {
        rc = -ENOMEM;
        goto error;
    }
    conn->pool = pool;
    conn->lane = lane;
    conn->epoch = epoch;
    rc = sql_conn_open(&ep, &opts, &conn->sql);
    if (rc == 0) {
        /* The connect's place goes to a waiter, who may open the next one. */
        pthread_mutex_lock(&pool->lock);
        lane->nconnecting--;
        pthread_cond_signal(&lane->freed);
        pthread_mutex_unlock(&pool->lock);
    }
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
        char why[160];
        snprintf(why, sizeof(why), "connecting: %s", sql_last_error());
        pool_mark_down(pool, why);
        rc = BC_EDOWN;
        goto error;
    }
    if (lane->background)
        router__conn_lower(r, conn);
    *out = conn;
    return 0;
error:
    pthread_mutex_lock(&pool->lock);
    lane->nopen--;
    lane->nconnecting--;
    pthread_cond_signal(&lane->freed);
    pthread_mutex_unlock(&pool->lock);
    return rc;
}

void router__conn_put(struct router_conn *conn, int broken)
{
    struct router_pool *pool = conn->pool;
    struct router_lane *lane = conn->lane;

    pthread_mutex_lock(&pool->lock);
    /* A connection to the host's old primary goes with its address. */
    if (broken || conn->epoch != pool->epoch) {
        lane->nopen--;
        pthread_cond_signal(&lane->freed);
        if (lane == &pool->req)
            router__waiters_wake(pool); /* a worker may open one now */
        pthread_mutex_unlock(&pool->lock);
        conn_close(conn);
        return;
    }
    conn->next = lane->idle;
    lane->idle = conn;
    lane->nidle++;
    pthread_cond_signal(&lane->freed);
    if (lane == &pool->req)
        router__waiters_wake(pool);
    pthread_mutex_unlock(&pool->lock);
}

int router__conn_try(struct router_pool *pool, struct router_conn **out)
{
    struct router_conn *conn, *dead = NULL;

    pthread_mutex_lock(&pool->lock);
    if (pool->down_until_ms > router__now_ms()) {
        set_down_error(pool);
        pthread_mutex_unlock(&pool->lock);
        return BC_EDOWN;
    }
    conn = lane_take_idle(pool, &pool->req, &dead);
    if (conn == NULL) {
        (void)router__waiter_mark(pool);
        pthread_mutex_unlock(&pool->lock);
        lane_close_idle(dead);
        router__set_error("host %s: no idle request connection", pool->name);
        return BC_EPOOL;
    }
    pthread_mutex_unlock(&pool->lock);
    lane_close_idle(dead);
    *out = conn;
    return 0;
}

int router__conn_query(struct router *r, struct router_conn *conn, const char *sql,
                       size_t len, struct sql_rows *rows, int *broken)
{
    int rc;

    /* The statement deadline is the connection's, set when it was opened. */
    atomic_fetch_add(&conn->pool->queries, 1);
    rc = sql_query(conn->sql, sql, len, rows);
    return router__conn_done(r, conn, rc, broken);
}

int router__conn_done(struct router *r, struct router_conn *conn, int rc, int *broken)
{
    struct router_pool *pool = conn->pool;

    *broken = sql_conn_broken(conn->sql);
    if (rc == 0 || (rc != BC_ETIMEOUT && !*broken)) {
        pool_answered(pool);
        if (rc < 0)
            atomic_fetch_add(&pool->errors, 1); /* the server refused it */
        return rc;
    }
    atomic_fetch_add(&pool->errors, 1);
    if (rc == BC_ETIMEOUT) {
        atomic_fetch_add(&pool->timeouts, 1);
        /* A slow statement is not a host failure; a row of them is. */
        if (!conn->lane->background)
            pool_timed_out(r, pool);
    } else if (!conn->reused) {
        /*
         * The connection was lost. A stale idle one says little (the server
         * may have dropped it); a fresh one lost means the host failed.
         */
        char why[160];

        snprintf(why, sizeof(why), "a new connection was lost: %s", sql_last_error());
        pool_mark_down(pool, why);
    } else {
        pool_drop_idle(pool);
    }
    return rc;
}

/*
 * A server named like its host (its first primary) that is a replica now
 * has two pools of one name: the host's and its own as a replica.
 */
static struct router_pool *find(struct router *r, const char *name, int replica)
{
    unsigned n = atomic_load(&r->npool);

    for (unsigned i = 0; i < n; i++)
        if (r->pools[i]->replica == replica && strcmp(r->pools[i]->name, name) == 0)
            return r->pools[i];
    return NULL;
}

struct router_pool *router__pool_find(struct router *r, const char *name)
{
    return find(r, name, 0);
}

struct router_pool *router__replica_find(struct router *r, const char *server)
{
    return find(r, server, 1);
}

uint32_t router_stats(struct router *r, struct router_host_stats *out, uint32_t max)
{
    unsigned n = atomic_load(&r->npool);

    for (unsigned i = 0; i < n && i < max; i++) {
        struct router_pool *p = r->pools[i];
        struct router_host_stats *s = &out[i];
        snprintf(s->name, sizeof(s->name), "%s", p->name);
        snprintf(s->host, sizeof(s->host), "%s", p->host);
        s->replica = p->replica;
        s->lag_ms = p->replica ? atomic_load(&p->lag_ms) : -1;
        pthread_mutex_lock(&p->lock);
        s->up = p->down_until_ms <= router__now_ms();
        s->open = p->req.nopen;
        s->idle = p->req.nidle;
        s->bg_open = p->bg.nopen;
        s->bg_idle = p->bg.nidle;
        snprintf(s->lower_why, sizeof(s->lower_why), "%s", p->lower_why);
        snprintf(s->group_why, sizeof(s->group_why), "%s", p->group_why);
        pthread_mutex_unlock(&p->lock);
        s->bg_lowered = atomic_load(&p->bg_lowered);
        s->bg_grouped = atomic_load(&p->bg_grouped);
        s->queries = atomic_load(&p->queries);
        s->errors = atomic_load(&p->errors);
        s->timeouts = atomic_load(&p->timeouts);
        s->stale = atomic_load(&p->stale);
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
    pthread_mutex_lock(&pool->lock);
    *out = pool->ep;
    pthread_mutex_unlock(&pool->lock);
    return 0;
}
