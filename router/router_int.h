/*
 * router_int.h: what the router's own files share. Not part of the interface.
 */
#ifndef ROUTER_INT_H
#define ROUTER_INT_H

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

#include "catalog/catalog.h"
#include "router/router.h"

/* How long a host that failed stays marked down before it is tried again. */
#define ROUTER_DOWN_MS 1000
/*
 * Request statements that time out in a row (nothing answered in between)
 * before the host is marked down, and the window they must fall in: the
 * longer of ROUTER_SLOW_WINDOW_MS and 4 query timeouts.
 * One slow statement is not a dead host; several short ones that all hang
 * are.
 */
#define ROUTER_SLOW_TIMEOUTS 3
#define ROUTER_SLOW_WINDOW_MS 5000
/*
 * Connects in flight at once per lane. A burst on a cold pool (a kick-off,
 * the API's 64 workers) would otherwise open every connection at once, and
 * on a busy server some handshakes would miss connect_timeout_ms and mark a
 * healthy host down; past this many, a caller waits (within its connect
 * deadline) for a connection to come back or a connect to end.
 */
#define ROUTER_CONNECTS 4
/*
 * The background pool of a host holds at most this many connections (and
 * never more than pool_size): batch statements are long and heavy, and a
 * few at a time per host and server is what a host can run beside its
 * requests; more batch work queues for a connection instead of loading
 * the host.
 */
#define ROUTER_BG_POOL_MAX 4
/* Pools: one per host and one per replica server the router reads from. */
#define ROUTER_MAX_POOLS (2 * SHARDMAP_MAX_HOSTS)
/* How long a replica's measured lag is trusted before it is measured again. */
#define ROUTER_LAG_TTL_MS 200
/* The map is polled this often while a host is marked down (a failover). */
#define ROUTER_DOWN_POLL_MS 100
/*
 * How late a map poll may be (a slow catalog) while the router still counts
 * its last check as current (router_replicas_possible()); and the margin of
 * a new replica's wait beyond the read-your-writes window.
 */
#define ROUTER_CHECK_SLACK_MS 1000
/*
 * The share of a machine's cores that the background statements of the
 * hosts on it take at once, by default (router_machine.c).
 */
#define ROUTER_BG_CORES_PCT 0

struct router_pool;
struct router_lane;

/* One connection; owned by its lane while idle, by a caller while checked out. */
struct router_conn {
    struct sql_conn *sql;     /* owned */
    struct router_pool *pool; /* ref: its host */
    struct router_lane *lane; /* ref: the pool of the host it belongs to */
    struct router_conn *next; /* idle list */
    uint64_t epoch;           /* the pool's epoch when it was opened */
    int reused;               /* came from the idle list */
    int lowered; /* its server thread put under SCHED_IDLE (router_lower.c) */
    int grouped; /* and into an idle cpu cgroup */
    long server_pid, server_tid; /* that thread, when lowered */
};

/*
 * One bounded set of connections to a host: the request pool or the
 * background pool. Its fields are guarded by the host's lock.
 */
struct router_lane {
    struct router_conn *idle;
    uint32_t nidle, nopen, max;
    uint32_t nconnecting; /* of nopen, connects in flight (<= ROUTER_CONNECTS) */
    int background;       /* statements bounded by batch_timeout_ms, never mark down */
    pthread_cond_t freed;
};

/*
 * A host: its endpoint, its two pools and its health. Named a pool for
 * history; the pools proper are its lanes.
 */
struct router_pool {
    char name[SHARDMAP_NAME_MAX]; /* = ep.name: a host, or a replica server */
    char host[SHARDMAP_NAME_MAX]; /* the host it serves (= name for a host's pool) */
    struct sql_endpoint ep;       /* guarded by lock: a failover changes addr/port */
    uint64_t epoch;               /* guarded by lock: + 1 per address change */
    /*
     * A replica's pool: its lag as last measured (ms; -1 unknown or
     * unusable) and when (sql_now_ms); a reader that finds it older than
     * ROUTER_LAG_TTL_MS measures again (one at a time: lag_busy).
     */
    int replica;
    atomic_int lag_ms;
    atomic_int_fast64_t lag_at_ms;
    atomic_int lag_busy;
    /*
     * A replica's pool: when it came into the router's map (router_map.c,
     * boot_ms()); it answers no stale read for replica_wait_ms() after.
     */
    atomic_int_fast64_t mapped_ms;

    pthread_mutex_t lock;
    struct router_lane req; /* guarded by lock */
    struct router_lane bg;  /* guarded by lock */
    int64_t down_until_ms;  /* guarded by lock; 0 = up */
    char down_why[160];     /* guarded by lock: what marked it down last */
    uint64_t waiting;       /* guarded by lock: waiters to tell (router_async.c) */
    int64_t slow_since_ms;  /* guarded by lock: first of the timeouts in a row */
    atomic_uint nslow;      /* written under lock: request timeouts in a row */

    atomic_uint_fast64_t queries, errors, timeouts;
    atomic_uint_fast64_t stale; /* idle connections found closed by the server */
    /*
     * Background connections whose server thread runs under SCHED_IDLE
     * (router_lower.c), and why the last one was not lowered ("" if it was;
     * guarded by lock).
     */
    atomic_uint bg_lowered;
    char lower_why[160];
    /* Of them, those also in an idle cpu cgroup, and why the last one was not. */
    atomic_uint bg_grouped;
    char group_why[160];

    /* The machine it runs on, for its present epoch (router's machine_lock). */
    int machine_known;
    int machine; /* index in the router's machines */
    uint64_t machine_epoch;
};

/*
 * A background statement that holds a machine's place longer than this
 * waits for something other than a CPU and no longer counts (router_machine.c).
 */
#define ROUTER_MACHINE_STALL_MS 1000
/* Background statements of one machine's hosts in flight, at most. */
#define ROUTER_MACHINE_HOLDERS 64
/* A share of a machine's cores that gives a place a core. */
#define ROUTER_MACHINE_PER_CORE_PCT 100

/* A machine that hosts run on (router_machine.c); guarded by machine_lock. */
struct router_machine {
    char name[128]; /* its @@hostname */
    uint32_t ncpu;  /* its @@thread_pool_size */
    /* When each statement holding a place took it; 0: a free holder. */
    int64_t held_since[ROUTER_MACHINE_HOLDERS];
    uint32_t held_pct[ROUTER_MACHINE_HOLDERS]; /* the share it was counted at */
    uint32_t peak;      /* places taken at once (stalled ones apart), at most */
    uint32_t waits;     /* times a statement waited for a place */
    uint32_t stalls;    /* statements that held a place over the stall limit */
    int64_t open_at_ms; /* below one core: the place is closed until then */
};

/* A map as the router holds it: the value plus the pool of each node. */
struct router_map {
    struct shardmap *map;            /* owned */
    struct router_pool **pool_of;    /* owned array, refs to pools */
    struct router_pool **replica_of; /* owned array: a replica of each host, or NULL */
    uint32_t nreplica;               /* the catalog's replicas of the map's hosts */
    int64_t no_replica_ms; /* nreplica 0: since when (boot_ms()) the maps had none */
    int global_node;       /* index of the global host, -1 if not in the map */
    struct router_map *retired; /* older maps, freed at destroy */
};

struct router {
    struct shardmap_conf conf; /* owned copy (hosts; no memcached), defaults filled */
    char prefix[SHARDMAP_PREFIX_MAX];
    uint32_t nshard;
    uint32_t connect_timeout_ms;
    uint32_t query_timeout_ms;
    uint32_t batch_timeout_ms;
    uint32_t map_poll_ms;
    uint32_t move_wait_ms;
    uint32_t max_lag_ms;
    char heartbeat_sql[160];  /* measures a replica's lag */
    atomic_uint bg_hosts;     /* hosts a background scatter asks at once (0: all) */
    atomic_uint bg_cores_pct; /* of a machine's cores, its hosts' background work */
    atomic_int bg_lower;      /* background server threads under SCHED_IDLE (0: off) */
    pthread_mutex_t machine_lock;
    pthread_cond_t machine_freed; /* a place was left */
    struct router_machine machines[SHARDMAP_MAX_HOSTS];
    uint32_t nmachine; /* machine_lock */

    struct router_pool *pools[ROUTER_MAX_POOLS]; /* append-only: hosts, replicas */
    atomic_uint npool;
    pthread_mutex_t pools_lock; /* serializes appends */
    struct router_pool *global; /* ref: holds <prefix>_global */
    int64_t discovered_ms;      /* map_lock: last global_discover() */

    _Atomic(struct router_map *) current;
    /*
     * When a reload last found the catalog's map version equal to the map in
     * use (boot_ms() before it asked): the map, and so whether any host has
     * a replica, was the catalog's then.
     */
    atomic_int_fast64_t checked_ms;
    pthread_mutex_t map_lock; /* serializes reloads and the retired list */
    char map_error[256];      /* map_lock: why the last reload failed ("" if not) */

    pthread_t poller;
    pthread_mutex_t poll_lock;
    pthread_cond_t poll_cond;
    pthread_cond_t poll_idle;                    /* broadcast when a reload ends */
    int poll_stop, poll_now, poll_on, poll_busy; /* guarded by poll_lock */

    struct catalog catalog; /* over the global host's pool (router_catalog()) */
};

/* ms from now on the realtime clock, for pthread_cond_timedwait(). */
static inline void router__deadline(struct timespec *ts, int64_t ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000;
    if (ts->tv_nsec >= 1000000000) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000;
    }
}

/* The SQL layer's clock and thread error message, under the router's old names. */
#define router__now_ms() sql_now_ms()
#define router__set_error(...) sql_set_error(__VA_ARGS__)

/* router_conn.c */
/* A host with no connection yet: max for its request pool (pool_size). */
struct router_pool *router__pool_create(const char *name, const char *addr,
                                        uint16_t port, const char *user,
                                        const char *password, uint32_t max);
void router__pool_destroy(struct router_pool *pool);
/*
 * Points the pool at a new address (its host's primary moved): the epoch
 * goes up, idle connections are closed, and connections in use are closed
 * when they come back. The down mark is cleared. No-op when unchanged.
 */
void router__pool_retarget(struct router_pool *pool, const char *addr, uint16_t port);
/* Whether any host is marked down now. */
int router__any_down(struct router *r);
/*
 * A connection to the host of pool, from its background pool when the
 * calling thread is in background mode (router_background()), else from
 * its request pool: an idle one, else a new one (sql_conn_open with the
 * connect deadline and the lane's statement deadline, multi-statements on)
 * when the lane is under its bound, else waits for one to be put back, up
 * to connect_timeout_ms (request) or batch_timeout_ms (background), then
 * BC_EPOOL. BC_EDOWN while the host is marked down or when the connect
 * fails (which marks it down). Takes the host's lock.
 */
int router__conn_get(struct router *r, struct router_pool *pool,
                     struct router_conn **conn);
/*
 * An idle connection of the host's request pool, without waiting or
 * connecting (an event loop's statement): BC_EDOWN while the host is
 * marked down, BC_EPOOL when none is idle.
 */
int router__conn_try(struct router_pool *pool, struct router_conn **conn);
/* Returns a connection; broken ones (after an error) are closed. */
void router__conn_put(struct router_conn *conn, int broken);
/*
 * router_async.c, pool->lock held. mark: the request lane has no idle
 * connection; when every one it may open is open (busy: one comes back),
 * marks the calling thread's waiter on pool and returns 1. wake: a request
 * connection came back, closed, or the host went down: tells the waiters
 * marked (their eventfds) and clears the marks.
 */
int router__waiter_mark(struct router_pool *pool);
void router__waiters_wake(struct router_pool *pool);
/*
 * Runs sql (possibly several statements) within the connection's statement
 * deadline; rows may be NULL, and is freed on failure. Statuses as
 * sql_query(). A lost connection that was not a stale idle one marks the
 * host down; a timeout does so only in the request pool and only as the
 * ROUTER_SLOW_TIMEOUTS-th in a row; any answer of the server ends a row.
 * On error, *broken says whether the connection is unusable.
 */
int router__conn_query(struct router *r, struct router_conn *conn, const char *sql,
                       size_t len, struct sql_rows *rows, int *broken);
/*
 * What router__conn_query() does after the statement: the host's health
 * (as described there) from its status rc, *broken set; returns rc.
 */
int router__conn_done(struct router *r, struct router_conn *conn, int rc, int *broken);
/* The pool of a host (its primary), or NULL. */
struct router_pool *router__pool_find(struct router *r, const char *name);
/* The pool of a replica server, or NULL. */
struct router_pool *router__replica_find(struct router *r, const char *server);
/* Whether the calling thread is in background mode (router_background()). */
int router__background(void);

/* router_machine.c */
void router__machines_init(struct router *r);
void router__machines_deinit(struct router *r);
/*
 * Takes a place among the background statements of the machine of pool's
 * host (router_machine_enter()), counted at least at min_pct % of its cores
 * when the limit is on; *token for router_machine_leave().
 */
int router__machine_enter(struct router *r, struct router_pool *pool, uint32_t min_pct,
                          int (*stopping)(void *), void *arg, int *token);

/* router_lower.c */
/* A background connection just opened: its server thread under SCHED_IDLE if on and
 * safe. */
void router__conn_lower(struct router *r, struct router_conn *conn);
/* A lowered connection about to close: its thread back to SCHED_OTHER if still there.
 */
void router__conn_unlower(struct router_conn *conn);
/*
 * The mount point of the cgroup v1 hierarchy with the cpu controller, from
 * /proc/self/mountinfo's lines; the cpu cgroup ("/...") of a thread, from
 * /proc/PID/task/TID/cgroup's. 0, or -ENOENT (none) or -ENAMETOOLONG.
 */
int router__cpu_mount(FILE *mountinfo, char *out, size_t size);
int router__cpu_cgroup(FILE *cgroup, char *out, size_t size);

/* router.c */
/*
 * Formats a statement for shard (ROUTER_GLOBAL: the global schema) into b:
 * %S is the shard's schema, %N its number.
 */
int router__vformat(struct router *r, uint32_t shard, struct sql_buf *b,
                    const char *fmt, va_list ap);
/*
 * Where the router answers its callers: a schema missing on the host, a
 * fenced copy, or a read-only server (the host's primary is being switched)
 * all mean the shard's place changed (BC_EMOVED), which callers follow.
 */
static inline int router__moved(int rc)
{
    return rc == BC_ENOSCHEMA || rc == BC_EFENCED || rc == BC_EREADONLY ? BC_EMOVED
                                                                        : rc;
}

/* router_map.c */
int router__map_start(struct router *r);
void router__map_stop(struct router *r);
/* Sets the error of a request that found no map: why the last reload failed. */
void router__no_map_error(struct router *r);
struct router_pool *router__pool_of_shard(struct router *r, uint32_t shard, int *err);
/*
 * A replica of the shard's host (ROUTER_GLOBAL: of the global host) whose
 * lag is within max_lag_ms, or NULL; NULL too while the replica is new to
 * the map or the router's last check of the catalog is old
 * (router_replicas_possible()). May measure the lag (one statement).
 */
struct router_pool *router__fresh_replica(struct router *r, uint32_t shard);

#endif
