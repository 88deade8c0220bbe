/*
 * router_async.c: a statement that an event loop drives (router_op_*).
 *
 * The loop does not wait for a connection, a connect or an answer: it takes
 * a connection only when one is idle in the host's request pool (a worker
 * left it there), sends the statement, and goes back to its other sockets
 * until this one's answer comes (sql_op_*). Whatever would need waiting or
 * following (no idle connection, a shard that moved, a stale connection
 * lost) ends the op with a status that tells the caller to run the statement
 * the usual way, on a thread that may wait. The host's health is kept as
 * for any other statement (router__conn_done()).
 */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "router/router_int.h"

/*
 * The waiters: a slot per registered thread, its eventfd + 1 (0: free). The
 * descriptors are read under a pool's lock (router__waiters_wake()), so a
 * removal that then takes every pool's lock once knows none is being
 * written any more.
 */
static atomic_int waiter_fd[ROUTER_WAITERS];
static pthread_mutex_t waiter_lock = PTHREAD_MUTEX_INITIALIZER; /* slot changes */
static _Thread_local int my_slot = -1;
static _Thread_local int my_promised; /* the last BC_EPOOL marked my_slot */
static _Thread_local int my_self; /* this thread gave back a connection it waits for */

int router_waiter_add(struct router *r, int fd)
{
    int slot = -ENOSPC;

    (void)r;
    if (my_slot >= 0 || fd < 0)
        return -EINVAL;
    pthread_mutex_lock(&waiter_lock);
    for (int i = 0; i < ROUTER_WAITERS && slot < 0; i++)
        if (atomic_load(&waiter_fd[i]) == 0) {
            atomic_store(&waiter_fd[i], fd + 1);
            slot = i;
        }
    pthread_mutex_unlock(&waiter_lock);
    if (slot < 0)
        return slot;
    my_slot = slot;
    return 0;
}

void router_waiter_remove(struct router *r)
{
    unsigned n = atomic_load(&r->npool);

    if (my_slot < 0)
        return;
    pthread_mutex_lock(&waiter_lock);
    atomic_store(&waiter_fd[my_slot], 0);
    pthread_mutex_unlock(&waiter_lock);
    my_slot = -1;
    /* A wake that read the descriptor holds a pool's lock: it has ended. */
    for (unsigned i = 0; i < n; i++) {
        pthread_mutex_lock(&r->pools[i]->lock);
        pthread_mutex_unlock(&r->pools[i]->lock);
    }
}

int router_waiter_promised(void)
{
    return my_promised;
}

int router_waiter_self(void)
{
    int self = my_self;

    my_self = 0;
    return self;
}

int router__waiter_mark(struct router_pool *pool)
{
    const struct router_lane *lane = &pool->req;

    my_promised = my_slot >= 0 && lane->idle == NULL && lane->nopen >= lane->max;
    if (my_promised)
        pool->waiting |= UINT64_C(1) << my_slot;
    return my_promised;
}

void router__waiters_wake(struct router_pool *pool)
{
    static const uint64_t one = 1;
    uint64_t bits = pool->waiting;

    pool->waiting = 0;
    for (int i = 0; bits != 0; i++, bits >>= 1) {
        int fd;

        if (!(bits & 1))
            continue;
        if (i == my_slot) { /* the loop itself: it looks again this turn */
            my_self = 1;
            continue;
        }
        fd = atomic_load(&waiter_fd[i]) - 1;
        if (fd >= 0)
            (void)!write(fd, &one, sizeof(one));
    }
}

int router_host_busy(struct router *r, uintptr_t key)
{
    struct router_pool *pool = (struct router_pool *)key;
    int busy;

    (void)r;
    if (pool == NULL || my_slot < 0)
        return 0;
    pthread_mutex_lock(&pool->lock);
    busy = pool->down_until_ms <= router__now_ms() && router__waiter_mark(pool);
    pthread_mutex_unlock(&pool->lock);
    return busy;
}

struct router_op {
    struct router *r;
    struct router_conn *conn;
    struct sql_buf sql; /* sent as the op goes: kept to its end */
    struct sql_op op;
    int ended; /* sql_op ended: op.status is its status */
};

int router_op_start(struct router *r, uint32_t shard, struct sql_rows *rows,
                    struct router_op **out, const char *fmt, ...)
{
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = router_op_vstart(r, shard, rows, out, fmt, ap);
    va_end(ap);
    return rc;
}

int router_op_vstart(struct router *r, uint32_t shard, struct sql_rows *rows,
                     struct router_op **out, const char *fmt, va_list ap)
{
    struct router_pool *pool;
    struct router_op *o;
    int rc = 0;

    *out = NULL;
    my_promised = 0;
    if (shard == ROUTER_GLOBAL)
        return -EINVAL;
    pool = router__pool_of_shard(r, shard, &rc);
    if (pool == NULL)
        return rc;
    if ((o = calloc(1, sizeof(*o))) == NULL)
        return -ENOMEM;
    o->r = r;
    rc = router__vformat(r, shard, &o->sql, fmt, ap);
    if (rc == 0)
        rc = router__conn_try(pool, &o->conn);
    if (rc < 0) {
        sql_buf_deinit(&o->sql);
        free(o);
        return rc;
    }
    atomic_fetch_add(&pool->queries, 1);
    o->ended = sql_op_start(&o->op, o->conn->sql, o->sql.buf, o->sql.len, rows) == 0;
    *out = o;
    return 0;
}

int router_op_fd(struct router_op *o)
{
    return sql_conn_fd(o->conn->sql);
}

int router_op_wait(const struct router_op *o)
{
    return o->ended ? 0 : o->op.wait;
}

int64_t router_op_due_ms(const struct router_op *o)
{
    return sql_op_due_ms(&o->op);
}

int router_op_cont(struct router_op *o, int events)
{
    if (!o->ended)
        o->ended = sql_op_cont(&o->op, events) == 0;
    return router_op_wait(o);
}

int router_op_tick(struct router_op *o, int64_t now_ms)
{
    if (!o->ended)
        o->ended = sql_op_tick(&o->op, now_ms) == 0;
    return router_op_wait(o);
}

int router_op_end(struct router_op *o)
{
    int rc, broken;

    if (o == NULL)
        return 0;
    if (!o->ended) {
        /* Abandoned half-way (the server stops): the connection goes. */
        (void)sql_op_tick(&o->op, INT64_MAX);
        router__conn_put(o->conn, 1);
        rc = -ECANCELED;
    } else {
        rc = router__conn_done(o->r, o->conn, o->op.status, &broken);
        router__conn_put(o->conn, broken);
        /*
         * An idle connection may have died with its server since it was
         * last used: the usual way retries on a new one, which a loop does
         * not open.
         */
        if (rc == BC_EDOWN && broken)
            rc = BC_EPOOL;
        rc = router__moved(rc);
    }
    sql_buf_deinit(&o->sql);
    free(o);
    return rc;
}
