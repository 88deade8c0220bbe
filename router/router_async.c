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

#include "router/router_int.h"

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
