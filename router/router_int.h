/*
 * router_int.h: what the router's own files share. Not part of the interface.
 */
#ifndef ROUTER_INT_H
#define ROUTER_INT_H

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>

#include "catalog/catalog.h"
#include "router/router.h"

/* How long a host that failed stays marked down before it is tried again. */
#define ROUTER_DOWN_MS 1000

struct router_pool;

/* One connection; owned by its pool while idle, by a caller while checked out. */
struct router_conn {
    struct sql_conn *sql;     /* owned */
    struct router_pool *pool; /* ref */
    struct router_conn *next; /* idle list */
    int reused;               /* came from the idle list */
};

struct router_pool {
    char name[SHARDMAP_NAME_MAX]; /* = ep.name */
    struct sql_endpoint ep;

    pthread_mutex_t lock;
    pthread_cond_t freed;
    struct router_conn *idle; /* guarded by lock */
    uint32_t nidle, nopen, max;
    int64_t down_until_ms; /* guarded by lock; 0 = up */

    atomic_uint_fast64_t queries, errors, timeouts;
};

/* A map as the router holds it: the value plus the pool of each node. */
struct router_map {
    struct shardmap *map;         /* owned */
    struct router_pool **pool_of; /* owned array, refs to pools */
    struct router_map *retired;   /* older maps, freed at destroy */
};

struct router {
    struct shardmap_conf conf; /* owned copy (hosts; no memcached), defaults filled */
    char prefix[SHARDMAP_PREFIX_MAX];
    uint32_t nshard;
    uint32_t connect_timeout_ms;
    uint32_t query_timeout_ms;
    uint32_t map_poll_ms;
    uint32_t move_wait_ms;

    struct router_pool *pools[SHARDMAP_MAX_HOSTS]; /* append-only */
    atomic_uint npool;
    pthread_mutex_t pools_lock; /* serializes appends */
    struct router_pool *global; /* ref: holds <prefix>_global */

    _Atomic(struct router_map *) current;
    pthread_mutex_t map_lock; /* serializes reloads and the retired list */

    pthread_t poller;
    pthread_mutex_t poll_lock;
    pthread_cond_t poll_cond;
    int poll_stop, poll_now, poll_on; /* guarded by poll_lock */

    struct catalog catalog; /* over the global host's pool (router_catalog()) */
};

/* The SQL layer's clock and thread error message, under the router's old names. */
#define router__now_ms() sql_now_ms()
#define router__set_error(...) sql_set_error(__VA_ARGS__)

/* router_conn.c */
struct router_pool *router__pool_create(const char *name, const char *addr,
                                        uint16_t port, const char *user,
                                        const char *password, uint32_t max);
void router__pool_destroy(struct router_pool *pool);
/*
 * A connection of pool: an idle one, else a new one (sql_conn_open with the
 * router's timeouts, multi-statements on) when the pool is under its bound,
 * else waits up to connect_timeout_ms for one to be put back (BC_EPOOL).
 * BC_EDOWN while the host is marked down or when the connect fails.
 */
int router__conn_get(struct router *r, struct router_pool *pool,
                     struct router_conn **conn);
/* Returns a connection; broken ones (after an error) are closed. */
void router__conn_put(struct router_conn *conn, int broken);
/*
 * Runs sql (possibly several statements) within the query deadline; rows may
 * be NULL, and is freed on failure. Statuses as sql_query(): a timeout marks
 * the host down, so does a lost connection that was not a stale idle one.
 * On error, *broken says whether the connection is unusable.
 */
int router__conn_query(struct router *r, struct router_conn *conn, const char *sql,
                       size_t len, struct sql_rows *rows, int *broken);
struct router_pool *router__pool_find(struct router *r, const char *name);

/* router.c */
/*
 * Formats a statement for shard (ROUTER_GLOBAL: the global schema) into b:
 * %S is the shard's schema, %N its number.
 */
int router__vformat(struct router *r, uint32_t shard, struct sql_buf *b,
                    const char *fmt, va_list ap);
/*
 * Where the router answers its callers: a schema missing on the host or a
 * fenced copy both mean the shard moved (BC_EMOVED), which callers follow.
 */
static inline int router__moved(int rc)
{
    return rc == BC_ENOSCHEMA || rc == BC_EFENCED ? BC_EMOVED : rc;
}

/* router_map.c */
int router__map_start(struct router *r);
void router__map_stop(struct router *r);
struct router_pool *router__pool_of_shard(struct router *r, uint32_t shard, int *err);

#endif
