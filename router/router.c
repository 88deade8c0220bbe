/*
 * router.c: routing single-shard statements and transactions, ids, and
 * scatter-gather over every shard.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "router/router_int.h"

struct router_txn {
    struct router *router; /* ref */
    struct router_conn *conn;
    uint32_t shard;
    int broken;
    int fence_held; /* @bc_fence_held may be set on the connection */
};

/* A copy of conf the router owns: the hosts (not the memcached servers). */
static int conf_copy(struct shardmap_conf *dst, const struct shardmap_conf *src)
{
    *dst = *src;
    dst->memcached = NULL;
    dst->nmemcached = 0;
    dst->hosts = calloc(src->nhost ? src->nhost : 1, sizeof(*dst->hosts));
    if (dst->hosts == NULL)
        return -ENOMEM;
    memcpy(dst->hosts, src->hosts, src->nhost * sizeof(*dst->hosts));
    if (dst->global_host[0] == '\0' && dst->nhost > 0)
        memcpy(dst->global_host, dst->hosts[0].name, sizeof(dst->global_host));
    /* Timeouts and sizes a conf built in code left at 0. */
    shardmap_conf_defaults(dst);
    return 0;
}

int router_create(const struct shardmap_conf *conf, struct router **out)
{
    struct router *r = calloc(1, sizeof(*r));
    struct sql_endpoint ep;
    int rc;

    if (r == NULL)
        return -ENOMEM;
    if (conf_copy(&r->conf, conf) < 0) {
        free(r);
        return -ENOMEM;
    }
    conf = &r->conf;
    snprintf(r->prefix, sizeof(r->prefix), "%s", conf->schema_prefix);
    r->nshard = conf->nshard;
    r->connect_timeout_ms = conf->connect_timeout_ms;
    r->query_timeout_ms = conf->query_timeout_ms;
    r->batch_timeout_ms = conf->batch_timeout_ms;
    r->map_poll_ms = conf->map_poll_ms;
    r->move_wait_ms = conf->move_wait_ms;
    r->max_lag_ms = conf->max_lag_ms;
    /* The prefix is [a-z0-9_]: it goes into the text as it is. */
    snprintf(r->heartbeat_sql, sizeof(r->heartbeat_sql),
             "SELECT CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED) - ts_ms "
             "FROM `%s_heartbeat`.heartbeat WHERE id = 1",
             r->prefix);
    pthread_mutex_init(&r->pools_lock, NULL);
    pthread_mutex_init(&r->map_lock, NULL);
    pthread_mutex_init(&r->poll_lock, NULL);
    pthread_cond_init(&r->poll_cond, NULL);
    pthread_cond_init(&r->poll_idle, NULL);
    router__machines_init(r);
    for (uint32_t i = 0; i < conf->nhost; i++) {
        rc = sql_endpoint_of(conf, conf->hosts[i].name, NULL, 0, &ep);
        if (rc < 0)
            goto error;
        r->pools[i] = router__pool_create(ep.name, ep.addr, ep.port, ep.user,
                                          ep.password, conf->pool_size);
        if (r->pools[i] == NULL) {
            rc = -ENOMEM;
            goto error;
        }
        atomic_store(&r->npool, i + 1);
    }
    r->global = router__pool_find(r, conf->global_host);
    if (r->global == NULL) {
        router__set_error("global host '%s' is not one of the hosts",
                          conf->global_host);
        rc = BC_EHOST;
        goto error;
    }
    /* No map yet, or the global host down: the poller keeps trying. */
    (void)router_reload_map(r);
    rc = router__map_start(r);
    if (rc < 0)
        goto error;
    *out = r;
    return 0;
error:
    for (unsigned i = 0; i < atomic_load(&r->npool); i++)
        router__pool_destroy(r->pools[i]);
    pthread_mutex_destroy(&r->pools_lock);
    pthread_mutex_destroy(&r->map_lock);
    pthread_mutex_destroy(&r->poll_lock);
    pthread_cond_destroy(&r->poll_cond);
    pthread_cond_destroy(&r->poll_idle);
    router__machines_deinit(r);
    shardmap_conf_deinit(&r->conf);
    free(r);
    return rc;
}

void router_destroy(struct router *r)
{
    if (r == NULL)
        return;
    router__map_stop(r);
    for (unsigned i = 0; i < atomic_load(&r->npool); i++)
        router__pool_destroy(r->pools[i]);
    pthread_mutex_destroy(&r->pools_lock);
    pthread_mutex_destroy(&r->map_lock);
    pthread_mutex_destroy(&r->poll_lock);
    pthread_cond_destroy(&r->poll_cond);
    pthread_cond_destroy(&r->poll_idle);
    router__machines_deinit(r);
    shardmap_conf_deinit(&r->conf);
    free(r);
}

uint32_t router_nshard(struct router *r)
{
    return r->nshard;
}

uint32_t router_shard_of_key(struct router *r, const void *key, size_t len)
{
    return shardmap_shard_of_key(key, len, r->nshard);
}

int router_schema(struct router *r, uint32_t shard, char *buf, size_t size)
{
    int n;

    if (shard == ROUTER_GLOBAL)
        n = snprintf(buf, size, "%s_global", r->prefix);
    else
        n = snprintf(buf, size, "%s_%04u", r->prefix, shard);
    if (n < 0 || (size_t)n >= size) {
        if (size > 0)
            buf[0] = '\0';
        return -ENAMETOOLONG;
    }
    return 0;
}

/*
 * A single statement that changes nothing may be re-sent on a fresh
 * connection. A text of several statements never is: it may be a write
 * transaction ("START TRANSACTION; UPDATE ...; COMMIT").
 */
static int is_read_only(const char *sql)
{
    if (strchr(sql, ';') != NULL)
        return 0;
    while (isspace((unsigned char)*sql) || *sql == '(')
        sql++;
    return strncasecmp(sql, "SELECT", 6) == 0 ||
           strcasecmp(sql, "START TRANSACTION") == 0;
}

/*
 * Runs sql on pool. An idle connection may have died with its server since
 * it was last used; a read that fails that way is retried once on a new one.
 */
static int pool_query(struct router *r, struct router_pool *pool, const char *sql,
                      size_t len, struct sql_rows *rows, struct router_conn **keep)
{
    struct router_conn *conn;
    int rc, broken, reused;

    for (int attempt = 0;; attempt++) {
        rc = router__conn_get(r, pool, &conn);
        if (rc < 0)
            return rc;
        reused = conn->reused;
        rc = router__conn_query(r, conn, sql, len, rows, &broken);
        if (rc == BC_EDOWN && broken && reused && attempt == 0 && is_read_only(sql)) {
            router__conn_put(conn, 1);
            continue;
        }
        if (keep != NULL && rc == 0) {
            *keep = conn;
            return 0;
        }
        /*
         * A text of several statements that failed part-way may have left a
         * transaction open on the connection: it goes, not back to the pool.
         */
        if (rc < 0 && keep == NULL && strchr(sql, ';') != NULL)
            broken = 1;
        router__conn_put(conn, broken);
        return rc;
    }
}

int router__vformat(struct router *r, uint32_t shard, struct sql_buf *b,
                    const char *fmt, va_list ap)
{
    char schema[SHARDMAP_SCHEMA_MAX];

    int rc = router_schema(r, shard, schema, sizeof(schema));

    if (rc < 0)
        return rc;
    return sql_vformat(b, schema, shard == ROUTER_GLOBAL ? 0 : shard, fmt, ap);
}

int router_vformat(struct router *r, uint32_t shard, struct sql_buf *b, const char *fmt,
                   va_list ap)
{
    return shard == ROUTER_GLOBAL ? -EINVAL : router__vformat(r, shard, b, fmt, ap);
}

static _Thread_local int stale_mode;

int router_stale_reads(int on)
{
    int was = stale_mode;

    stale_mode = on != 0;
    return was;
}

/* One SELECT statement: what a replica may answer. */
static int is_select(const char *sql)
{
    return strchr(sql, ';') == NULL && strncasecmp(sql, "SELECT", 6) == 0 &&
           strcasestr(sql, "FOR UPDATE") == NULL;
}

static int exec_once(struct router *r, uint32_t shard, struct sql_rows *rows,
                     const char *fmt, va_list ap)
{
    struct sql_buf b = {0};
    struct router_pool *pool, *replica;
    int rc = 0;

    pool = router__pool_of_shard(r, shard, &rc);
    if (pool == NULL)
        return rc;
    rc = router__vformat(r, shard, &b, fmt, ap);
    if (rc == 0 && stale_mode && !router__background() && is_select(b.buf) &&
        (replica = router__fresh_replica(r, shard)) != NULL) {
        rc = pool_query(r, replica, b.buf, b.len, rows, NULL);
        /* A replica that fails the read: the primary answers it. */
        if (rc == BC_EDOWN || rc == BC_ETIMEOUT || rc == BC_EPOOL ||
            rc == BC_ENOSCHEMA) {
            atomic_store(&replica->lag_ms, -1);
            rc = pool_query(r, pool, b.buf, b.len, rows, NULL);
        }
    } else if (rc == 0)
        rc = pool_query(r, pool, b.buf, b.len, rows, NULL);
    sql_buf_deinit(&b);
    return router__moved(rc);
}

int router_exec(struct router *r, uint32_t shard, struct sql_rows *rows,
                const char *fmt, ...)
{
    va_list ap, again;
    int rc;

    int64_t deadline = 0;
    uint64_t seen;

    va_start(ap, fmt);
    for (;;) {
        seen = router_map_version(r);
        va_copy(again, ap);
        rc = exec_once(r, shard, rows, fmt, again);
        va_end(again);
        /*
         * The schema is gone from that host, or its copy is fenced by a move:
         * follow the map, waiting out a cut-over, and send the statement
         * again (it failed whole, so it is safe to repeat).
         */
        if (rc != BC_EMOVED || shard == ROUTER_GLOBAL ||
            router_await_move(r, seen, &deadline) < 0)
            break;
    }
    va_end(ap);
    return rc;
}

int router_host_exec(struct router *r, const char *host, struct sql_rows *rows,
                     const char *sql)
{
    struct router_pool *pool = router__pool_find(r, host);

    if (pool == NULL) {
        router__set_error("unknown host %s", host);
        return BC_EHOST;
    }
    /* No schema of a shard is implied: the SQL layer's statuses as they are. */
    return pool_query(r, pool, sql, strlen(sql), rows, NULL);
}

static int global_run(void *arg, const char *sql, size_t len, struct sql_rows *rows)
{
    struct router *r = arg;

    return pool_query(r, r->global, sql, len, rows, NULL);
}

void router_global_executor(struct router *r, struct sql_executor *out)
{
    out->run = global_run;
    out->arg = r;
}

int router_txn_begin(struct router *r, uint32_t shard, struct router_txn **out)
{
    static const char begin[] = "START TRANSACTION";
    struct router_txn *txn;
    struct router_pool *pool;
    int rc = 0;

    pool = router__pool_of_shard(r, shard, &rc);
    if (pool == NULL)
        return rc;
    txn = calloc(1, sizeof(*txn));
    if (txn == NULL)
        return -ENOMEM;
    txn->router = r;
    txn->shard = shard;
    rc = pool_query(r, pool, begin, sizeof(begin) - 1, NULL, &txn->conn);
    if (rc < 0) {
        free(txn);
        return router__moved(rc);
    }
    *out = txn;
    return 0;
}

/* Runs text in the transaction; the SQL layer's statuses. */
static int txn_run(void *arg, const char *sql, size_t len, struct sql_rows *rows)
{
    struct router_txn *txn = arg;
    int rc, broken = 0;

    if (txn->broken) {
        router__set_error("host %s: the transaction's connection is lost",
                          txn->conn->pool->name);
        if (rows != NULL)
            sql_rows_free(rows);
        return BC_EDOWN;
    }
    rc = router__conn_query(txn->router, txn->conn, sql, len, rows, &broken);
    txn->broken |= broken;
    return rc;
}

void router_txn_executor(struct router_txn *txn, struct sql_executor *out)
{
    out->run = txn_run;
    out->arg = txn;
}

int router_txn_exec(struct router_txn *txn, struct sql_rows *rows, const char *fmt, ...)
{
    struct sql_buf b = {0};
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = router__vformat(txn->router, txn->shard, &b, fmt, ap);
    va_end(ap);
    if (rc == 0)
        rc = txn_run(txn, b.buf, b.len, rows);
    else if (rows != NULL)
        sql_rows_free(rows);
    sql_buf_deinit(&b);
    return router__moved(rc);
}

int router_txn_fence(struct router_txn *txn)
{
    struct sql_rows rows = {0};
    int rc;

    if (txn->fence_held)
        return 0;
    /* First: whatever the statement does, the transaction's end clears it. */
    txn->fence_held = 1;
    rc = router_txn_exec(txn, &rows,
                         "SELECT fenced, @bc_fence_held := 1 FROM %S.shard_state WHERE "
                         "id = 1 LOCK IN SHARE MODE");
    if (rc == 0 && (rows.nrow != 1 || sql_cell(&rows, 0, 0) == NULL)) {
        router__set_error("shard %u: no shard_state row (run shardctl init)",
                          txn->shard);
        rc = BC_EQUERY;
    } else if (rc == 0 && strcmp(sql_cell(&rows, 0, 0), "0") != 0) {
        router__set_error("shard %u: bc: shard moved (its copy on %s is fenced)",
                          txn->shard, txn->conn->pool->name);
        rc = BC_EMOVED;
    }
    sql_rows_free(&rows);
    return rc;
}

/*
 * Clears the fence's mark before the transaction ends; a connection where
 * that fails is marked broken (closed, not pooled). 0 or the status.
 */
static int txn_unfence(struct router_txn *txn)
{
    static const char sql[] = "SET @bc_fence_held = NULL";
    int rc, broken = 0;

    if (!txn->fence_held || txn->broken)
        return 0;
    rc =
        router__conn_query(txn->router, txn->conn, sql, sizeof(sql) - 1, NULL, &broken);
    if (rc < 0)
        txn->broken = 1;
    else
        txn->fence_held = 0;
    return rc;
}

static void txn_end(struct router_txn *txn, const char *sql)
{
    int broken;

    (void)txn_unfence(txn);
    broken = txn->broken;
    if (!broken)
        router__conn_query(txn->router, txn->conn, sql, strlen(sql), NULL, &broken);
    router__conn_put(txn->conn, broken);
    free(txn);
}

int router_txn_commit(struct router_txn *txn)
{
    int rc, broken = 0;

    if (txn->broken) {
        txn_end(txn, "ROLLBACK");
        return BC_EDOWN;
    }
    if ((rc = txn_unfence(txn)) < 0) {
        txn_end(txn, "ROLLBACK");
        return router__moved(rc);
    }
    rc = router__conn_query(txn->router, txn->conn, "COMMIT", 6, NULL, &broken);
    txn->broken |= broken;
    if (rc < 0) {
        txn_end(txn, "ROLLBACK");
        return router__moved(rc);
    }
    router__conn_put(txn->conn, 0);
    free(txn);
    return 0;
}

void router_txn_rollback(struct router_txn *txn)
{
    if (txn != NULL)
        txn_end(txn, "ROLLBACK");
}

int router_next_id(struct router *r, struct router_txn *txn, uint32_t shard,
                   uint64_t *id)
{
    static const char sql[] =
        "SELECT NEXTVAL(%S.id_seq), CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS UNSIGNED)";
    struct sql_rows rows = {0};
    struct shardmap_id parts;
    uint64_t now_ms;
    int rc;

    rc = txn ? router_txn_exec(txn, &rows, sql) : router_exec(r, shard, &rows, sql);
    if (rc < 0)
        return rc;
    if (rows.nrow != 1 || sql_cell(&rows, 0, 0) == NULL) {
        sql_rows_free(&rows);
        return BC_EQUERY;
    }
    now_ms = strtoull(sql_cell(&rows, 0, 1), NULL, 10);
    parts.seq = (uint32_t)(strtoull(sql_cell(&rows, 0, 0), NULL, 10) &
                           ((1u << SHARDMAP_ID_SEQ_BITS) - 1));
    parts.shard = shard;
    parts.ms = now_ms > SHARDMAP_ID_EPOCH_MS ? now_ms - SHARDMAP_ID_EPOCH_MS : 0;
    sql_rows_free(&rows);
    return shardmap_id_pack(&parts, id);
}
