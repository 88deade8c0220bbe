/*
 * router_map.c: following the authoritative shard map in <prefix>_global.
 *
 * The map is a value: a reload builds a whole new one and publishes it with
 * one atomic pointer store, so readers never lock or wait. Replaced maps are
 * kept on a list until router_destroy(): a map is a few KiB and changes only
 * when an operator moves a shard, and keeping them makes every pointer a
 * reader got from router_map() valid for the router's life without
 * reference counts on the hot path.
 *
 * The map is read through the catalog (catalog_map_load()): hosts,
 * placement, states and version from one snapshot.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "router/router_int.h"

/*
 * Finds the pool of a host, or adds one at the address the catalog gave,
 * with the account of the host-account rule (sql_endpoint_of()): the
 * config's for a host it lists, else the global host's.
 */
/*
 * name is the pool's: a host's (its primary), or (replica) a replica
 * server's, which connects with the account of its host. A host's pool found at another
 * address follows it: the host's primary changed (a failover).
 */
static struct router_pool *pool_for(struct router *r, const char *name,
                                    const char *host, int replica, const char *addr,
                                    uint16_t port)
{
    struct router_pool *pool;
    struct sql_endpoint ep;
    unsigned n;

    pthread_mutex_lock(&r->pools_lock);
    pool = replica ? router__replica_find(r, name) : router__pool_find(r, name);
    n = atomic_load(&r->npool);
    if (pool == NULL && n < ROUTER_MAX_POOLS &&
        sql_endpoint_of(&r->conf, host, addr, port, &ep) == 0) {
        pool = router__pool_create(name, ep.addr, ep.port, ep.user, ep.password,
                                   r->conf.pool_size);
        if (pool != NULL) {
            pool->replica = replica;
            snprintf(pool->host, sizeof(pool->host), "%s", host);
            atomic_store(&pool->lag_ms, -1);
            r->pools[n] = pool;
            atomic_store(&r->npool, n + 1);
        }
    }
    pthread_mutex_unlock(&r->pools_lock);
    if (pool != NULL)
        router__pool_retarget(pool, addr, port);
    return pool;
}

static void map_free(struct router_map *m)
{
    shardmap_destroy(m->map);
    free(m->pool_of);
    free(m->replica_of);
    free(m);
}

/*
 * The catalog is set up by the first reload, which router_create() does
 * before any other thread can see the router; map_lock held.
 */
static void catalog_ready(struct router *r)
{
    struct sql_executor exec;

    if (r->catalog.schema[0] != '\0')
        return;
    router_global_executor(r, &exec);
    catalog_init(&r->catalog, &r->conf, &exec);
}

struct catalog *router_catalog(struct router *r)
{
    return &r->catalog;
}

/*
 * The clock of the checks of the catalog and of the replicas' waits: it
 * counts a suspended machine's sleep (CLOCK_MONOTONIC does not), so a
 * check made before a suspension is as old after it as it really is.
 */
static int64_t boot_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_BOOTTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* How long a check of the catalog counts as current (router_replicas_possible()). */
static int64_t check_life_ms(const struct router *r)
{
    return (int64_t)r->map_poll_ms + ROUTER_CHECK_SLACK_MS;
}

uint32_t router_rw_window_s(const struct router *r)
{
    /* memcached's clock counts whole seconds: a flag lives ttl - 1 to ttl s. */
    return r->max_lag_ms / 1000 + 2;
}

/*
 * A replica new to the map waits this long before it answers stale reads:
 * a server that found no replica in the catalog up to check_life_ms() ago
 * may have answered a write without its read-your-writes flag since.
 */
static int64_t replica_wait_ms(const struct router *r)
{
    return check_life_ms(r) + (int64_t)router_rw_window_s(r) * 1000 +
           ROUTER_CHECK_SLACK_MS;
}

/*
 * Skips the flag only when no replica was in this router's maps for a
 * check's life: another router whose last check still saw the cluster's
 * last replica uses it until its own check grows that old
 * (router__fresh_replica()). checked_ms first: a reload stores the map
 * before it (this pairs a check with its map or a newer one).
 */
int router_replicas_possible(struct router *r)
{
    int64_t checked = atomic_load(&r->checked_ms);
    struct router_map *m = atomic_load(&r->current);
    int64_t now = boot_ms(), life = check_life_ms(r);

    return m == NULL || m->nreplica > 0 || now - checked > life ||
           now - m->no_replica_ms < life;
}

/* Whether pool is a replica of the map m (NULL: none). */
static int replica_in(const struct router_map *m, const struct router_pool *pool)
{
    for (uint32_t i = 0; m != NULL && i < m->map->nnode; i++)
        if (m->replica_of[i] == pool)
            return 1;
    return 0;
}

/*
 * A router_map over the catalog's map: takes cm->map, adds the pools of the
 * hosts (their primaries) and of one replica of each host that has one.
 * A replica that old (the map in use, NULL when the router lost track of
 * the catalog) lacks starts its wait now.
 */
static int map_build(struct router *r, struct catalog_map *cm,
                     const struct catalog_server *srv, uint32_t nsrv,
                     const struct router_map *old, struct router_map **out)
{
    struct router_map *m = calloc(1, sizeof(*m));
    int64_t now = boot_ms();

    if (m == NULL)
        return -ENOMEM;
    m->pool_of = calloc(cm->nhost, sizeof(*m->pool_of));
    m->replica_of = calloc(cm->nhost, sizeof(*m->replica_of));
    if (m->pool_of == NULL || m->replica_of == NULL) {
        free(m->pool_of);
        free(m->replica_of);
        free(m);
        return -ENOMEM;
    }
    m->map = cm->map;
    cm->map = NULL;
    m->global_node = -1;
    for (uint32_t i = 0; i < cm->nhost; i++) {
        const struct catalog_host *h = &cm->host[i];

        if (strcmp(h->name, r->conf.global_host) == 0)
            m->global_node = (int)i;
        m->pool_of[i] = pool_for(r, h->name, h->name, 0, h->addr, h->port);
        if (m->pool_of[i] == NULL) {
            map_free(m);
            return -ENOMEM;
        }
        /* Every replica counts, one whose pool could not be made too. */
        for (uint32_t k = 0; k < nsrv; k++) {
            if (srv[k].role != CATALOG_ROLE_REPLICA ||
                strcmp(srv[k].host, h->name) != 0)
                continue;
            m->nreplica++;
            if (m->replica_of[i] == NULL)
                m->replica_of[i] =
                    pool_for(r, srv[k].name, h->name, 1, srv[k].addr, srv[k].port);
        }
        if (m->replica_of[i] != NULL && !replica_in(old, m->replica_of[i]))
            atomic_store(&m->replica_of[i]->mapped_ms, now);
    }
    if (m->nreplica == 0)
        m->no_replica_ms = old != NULL && old->nreplica == 0 ? old->no_replica_ms : now;
    *out = m;
    return 0;
}

/*
 * The global host's primary did not answer, or answered read-only: it may
 * have failed over or been switched. Asks the global host's servers the
 * config lists (its first primary and its replicas) which are writable, and
 * points the global pool at the one whose catalog has the highest map
 * version (an old primary back from a partition may still be writable for a
 * moment, with the catalog as it was before the flip). At most once per
 * ROUTER_DOWN_POLL_MS.
 */
static void global_discover(struct router *r)
{
    int64_t now = router__now_ms();
    struct sql_endpoint ep;

    if (now - r->discovered_ms < ROUTER_DOWN_POLL_MS)
        return;
    r->discovered_ms = now;
    if (catalog_global_endpoint(&r->conf, &ep) == 0)
        router__pool_retarget(r->global, ep.addr, ep.port);
}

int router_reload_map(struct router *r)
{
    struct catalog_map *cm = NULL;
    struct router_map *m = NULL, *cur;
    uint64_t version;
    int rc;

    struct catalog_server *srv = NULL;
    uint32_t nsrv = 0;
    int read_only = 0;
    int64_t asked_ms, checked_ms;

    pthread_mutex_lock(&r->map_lock);
    catalog_ready(r);
    asked_ms = boot_ms();
    checked_ms = atomic_load(&r->checked_ms);
    rc = catalog_map_version_ro(&r->catalog, &version, &read_only);
    if (rc == BC_EDOWN || rc == BC_ETIMEOUT || rc == BC_EPOOL ||
        (rc == 0 && read_only)) {
        /* Dead, or read-only (a fenced old primary or a switchover): look around. */
        global_discover(r);
        rc = catalog_map_version_ro(&r->catalog, &version, &read_only);
    }
    if (rc < 0)
        goto out;
    cur = atomic_load(&r->current);
    if (cur != NULL && cur->map->version == version) {
        /* A read-only catalog (a fenced old primary) proves nothing. */
        if (!read_only)
            atomic_store(&r->checked_ms, asked_ms);
        goto out;
    }
    /* ~80 KiB: not on the stack of a request's thread. */
    cm = calloc(1, sizeof(*cm));
    if (cm == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    rc = catalog_map_load(&r->catalog, cm);
    if (rc < 0)
        goto out;
    rc = catalog_servers_load(&r->catalog, &srv, &nsrv);
    if (rc < 0)
        goto out;
    /* Lost track (no check for a check's life): every replica starts afresh. */
    rc = map_build(r, cm, srv, nsrv,
                   asked_ms - checked_ms <= check_life_ms(r) ? cur : NULL, &m);
    if (rc < 0)
        goto out;
    m->retired = cur;
    atomic_store(&r->current, m);
    /* Read after asked_ms: a replica added before then is in it. */
    if (!read_only)
        atomic_store(&r->checked_ms, asked_ms);
out:
    /* Kept for the requests that find no map: they tell why, not only that. */
    if (rc < 0)
        snprintf(r->map_error, sizeof(r->map_error), "%s", sql_last_error());
    else
        r->map_error[0] = '\0';
    pthread_mutex_unlock(&r->map_lock);
    if (rc < 0)
        router__set_error("%s", sql_last_error());
    if (cm != NULL)
        catalog_map_deinit(cm);
    free(cm);
    free(srv);
    return rc;
}

uint64_t router_map_version(struct router *r)
{
    struct router_map *m = atomic_load(&r->current);

    return m ? m->map->version : 0;
}

int router_await_move(struct router *r, uint64_t seen, int64_t *deadline_ms)
{
    int64_t now = router__now_ms();

    if (*deadline_ms == 0)
        *deadline_ms = now + r->move_wait_ms;
    for (;;) {
        /* A cut-over takes milliseconds: look again every few of them. */
        if (router_reload_map(r) == 0 && router_map_version(r) != seen)
            return 0;
        now = router__now_ms();
        if (now >= *deadline_ms)
            break;
        struct timespec ts = {
            0, (long)(now + 5 > *deadline_ms ? *deadline_ms - now : 5) * 1000000};
        nanosleep(&ts, NULL);
    }
    router__set_error("shard moved and the map did not follow within %u ms",
                      r->move_wait_ms);
    return BC_EMOVED;
}

const struct shardmap *router_map(struct router *r)
{
    struct router_map *m = atomic_load(&r->current);

    return m ? m->map : NULL;
}

void router_map_error(struct router *r, char *buf, size_t size)
{
    buf[0] = '\0';
    /* Never waits for a reload under way (its statements hold the lock). */
    if (pthread_mutex_trylock(&r->map_lock) == 0) {
        snprintf(buf, size, "%s", r->map_error);
        pthread_mutex_unlock(&r->map_lock);
    }
}

void router__no_map_error(struct router *r)
{
    char why[sizeof(r->map_error)];

    router_map_error(r, why, sizeof(why));
    router__set_error("no shard map loaded: %s",
                      why[0] ? why : "none read yet (run shardctl init)");
}

struct router_pool *router__pool_of_shard(struct router *r, uint32_t shard, int *err)
{
    struct router_map *m;

    if (shard == ROUTER_GLOBAL)
        return r->global;
    if (shard >= r->nshard) {
        router__set_error("shard %u out of range (0..%u)", shard, r->nshard - 1);
        *err = BC_ESHARD;
        return NULL;
    }
    m = atomic_load(&r->current);
    if (m == NULL) {
        /* Not BC_ENOTFOUND: callers would take it for a missing row. */
        router__no_map_error(r);
        *err = BC_ENOMAP;
        return NULL;
    }
    return m->pool_of[m->map->node_of[shard]];
}

uintptr_t router_host_key(struct router *r, uint32_t shard)
{
    int err = 0;

    return shard == ROUTER_GLOBAL ? 0
                                  : (uintptr_t)router__pool_of_shard(r, shard, &err);
}

/* Measures a replica's lag from the guard's heartbeat row. */
static void measure_lag(struct router *r, struct router_pool *p)
{
    struct router_conn *conn;
    struct sql_rows rows = {0};
    int lag = -1, broken = 1;

    if (router__conn_get(r, p, &conn) == 0) {
        if (router__conn_query(r, conn, r->heartbeat_sql, strlen(r->heartbeat_sql),
                               &rows, &broken) == 0 &&
            rows.nrow == 1 && sql_cell(&rows, 0, 0) != NULL) {
            long v = strtol(sql_cell(&rows, 0, 0), NULL, 10);
            lag = v < 0 ? 0 : v > INT32_MAX ? INT32_MAX : (int)v;
        }
        router__conn_put(conn, broken);
    }
    sql_rows_free(&rows);
    atomic_store(&p->lag_ms, lag);
}

struct router_pool *router__fresh_replica(struct router *r, uint32_t shard)
{
    struct router_map *m = atomic_load(&r->current);
    struct router_pool *p;
    int node, busy = 0;

    if (m == NULL)
        return NULL;
    node = shard == ROUTER_GLOBAL ? m->global_node
           : shard < r->nshard    ? m->map->node_of[shard]
                                  : -1;
    if (node < 0 || (p = m->replica_of[node]) == NULL)
        return NULL;
    /*
     * New to the map, or the map unconfirmed for a check's life (this router
     * may have missed the replica's removal: other servers mark no writes).
     */
    int64_t boot = boot_ms(), now = router__now_ms();
    if (boot - atomic_load(&p->mapped_ms) < replica_wait_ms(r) ||
        boot - atomic_load(&r->checked_ms) > check_life_ms(r))
        return NULL;
    if (now - atomic_load(&p->lag_at_ms) > ROUTER_LAG_TTL_MS &&
        atomic_compare_exchange_strong(&p->lag_busy, &busy, 1)) {
        atomic_store(&p->lag_at_ms, now);
        measure_lag(r, p);
        atomic_store(&p->lag_busy, 0);
    }
    int lag = atomic_load(&p->lag_ms);
    return lag >= 0 && (uint32_t)lag <= r->max_lag_ms ? p : NULL;
}

static void *poll_main(void *arg)
{
    struct router *r = arg;

    pthread_mutex_lock(&r->poll_lock);
    while (!r->poll_stop) {
        /* A host marked down may be failing over: look for its new primary soon. */
        uint32_t ms = router__any_down(r) ? ROUTER_DOWN_POLL_MS : r->map_poll_ms;
        struct timespec ts;
        router__deadline(&ts, ms);
        while (!r->poll_stop && !r->poll_now &&
               pthread_cond_timedwait(&r->poll_cond, &r->poll_lock, &ts) == 0)
            ;
        if (r->poll_stop)
            break;
        int on = r->poll_on || r->poll_now;
        r->poll_now = 0;
        r->poll_busy = on;
        pthread_mutex_unlock(&r->poll_lock);
        if (on)
            router_reload_map(r);
        pthread_mutex_lock(&r->poll_lock);
        r->poll_busy = 0;
        pthread_cond_broadcast(&r->poll_idle);
    }
    pthread_mutex_unlock(&r->poll_lock);
    return NULL;
}

void router_map_stale(struct router *r)
{
    pthread_mutex_lock(&r->poll_lock);
    r->poll_now = 1;
    pthread_cond_signal(&r->poll_cond);
    pthread_mutex_unlock(&r->poll_lock);
}

void router_set_polling(struct router *r, int on)
{
    pthread_mutex_lock(&r->poll_lock);
    r->poll_on = on;
    /* Off: a reload under way ends first, so no poller statement follows. */
    while (!on && r->poll_busy)
        pthread_cond_wait(&r->poll_idle, &r->poll_lock);
    pthread_mutex_unlock(&r->poll_lock);
}

int router__map_start(struct router *r)
{
    r->poll_on = 1;
    return -pthread_create(&r->poller, NULL, poll_main, r);
}

void router__map_stop(struct router *r)
{
    struct router_map *m, *next;

    pthread_mutex_lock(&r->poll_lock);
    r->poll_stop = 1;
    pthread_cond_signal(&r->poll_cond);
    pthread_mutex_unlock(&r->poll_lock);
    pthread_join(r->poller, NULL);
    for (m = atomic_load(&r->current); m != NULL; m = next) {
        next = m->retired;
        map_free(m);
    }
    atomic_store(&r->current, NULL);
}
