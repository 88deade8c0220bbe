/*
 * router_map.c: following the authoritative shard map in <prefix>_global.
 *
 * The map is a value: a reload builds a whole new one and publishes it with
 * one atomic pointer store, so readers never lock or wait. Replaced maps are
 * kept on a list until router_destroy(): a map is a few KiB and changes only
 * when an operator moves a shard, and keeping them makes every pointer a
 * reader got from router_map() valid for the router's life without
 * reference counts on the hot path.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "router/router_int.h"

/* Finds the pool of a host, or adds one (credentials from the config). */
static struct router_pool *pool_for(struct router *r, const char *name,
                                    const char *addr, uint16_t port)
{
    struct router_pool *pool;
    unsigned n;

    pthread_mutex_lock(&r->pools_lock);
    pool = router__pool_find(r, name);
    n = atomic_load(&r->npool);
    if (pool == NULL && n < SHARDMAP_MAX_HOSTS) {
        pool = router__pool_create(name, addr, port, r->default_user,
                                   r->default_password, r->global->max);
        if (pool != NULL) {
            r->pools[n] = pool;
            atomic_store(&r->npool, n + 1);
        }
    }
    pthread_mutex_unlock(&r->pools_lock);
    return pool;
}

static void map_free(struct router_map *m)
{
    shardmap_destroy(m->map);
    free(m->pool_of);
    free(m);
}

/* Builds a router_map from the hosts and shard_map rows. */
static int map_build(struct router *r, struct sql_rows *hosts, struct sql_rows *shards,
                     struct router_map **out)
{
    struct shardmap_node nodes[SHARDMAP_MAX_HOSTS];
    struct router_map *m;
    uint64_t version;

    if (hosts->nrow == 0 || hosts->nrow > SHARDMAP_MAX_HOSTS ||
        shards->nrow != r->nshard) {
        router__set_error("global shard map is incomplete: %u hosts, %u of %u shards",
                          hosts->nrow, shards->nrow, r->nshard);
        return BC_EMISMATCH;
    }
    for (uint32_t i = 0; i < hosts->nrow; i++) {
        snprintf(nodes[i].name, sizeof(nodes[i].name), "%s", sql_cell(hosts, i, 0));
        nodes[i].weight = (uint32_t)strtoul(sql_cell(hosts, i, 3), NULL, 10);
    }
    version = strtoull(sql_cell(shards, 0, 3), NULL, 10);
    m = calloc(1, sizeof(*m));
    if (m == NULL)
        return -ENOMEM;
    m->map = shardmap_create(r->nshard, nodes, hosts->nrow, version);
    m->pool_of = calloc(hosts->nrow, sizeof(*m->pool_of));
    if (m->map == NULL || m->pool_of == NULL)
        goto nomem;
    for (uint32_t i = 0; i < hosts->nrow; i++) {
        m->pool_of[i] = pool_for(r, sql_cell(hosts, i, 0), sql_cell(hosts, i, 1),
                                 (uint16_t)strtoul(sql_cell(hosts, i, 2), NULL, 10));
        if (m->pool_of[i] == NULL)
            goto nomem;
    }
    for (uint32_t i = 0; i < shards->nrow; i++) {
        uint32_t shard = (uint32_t)strtoul(sql_cell(shards, i, 0), NULL, 10);
        int node = shardmap_node_index(m->map, sql_cell(shards, i, 1));
        if (shard != i || node < 0) {
            router__set_error("global shard map: bad row for shard %u (host %s)", i,
                              sql_cell(shards, i, 1));
            map_free(m);
            return BC_EMISMATCH;
        }
        m->map->node_of[i] = (uint16_t)node;
        m->map->state[i] = (uint8_t)strtoul(sql_cell(shards, i, 2), NULL, 10);
    }
    *out = m;
    return 0;
nomem:
    map_free(m);
    return -ENOMEM;
}

int router_reload_map(struct router *r)
{
    struct sql_rows hosts = {0}, shards = {0}, ver = {0};
    struct router_map *m = NULL, *cur;
    int rc;

    pthread_mutex_lock(&r->map_lock);
    rc = router_exec(r, ROUTER_GLOBAL, &ver, "SELECT version FROM %S.map_version");
    if (rc < 0)
        goto out;
    if (ver.nrow == 0) {
        rc = BC_ENOTFOUND;
        goto out;
    }
    cur = atomic_load(&r->current);
    if (cur != NULL && cur->map->version == strtoull(sql_cell(&ver, 0, 0), NULL, 10))
        goto out;
    rc = router_exec(r, ROUTER_GLOBAL, &hosts,
                     "SELECT name, addr, port, weight FROM %S.hosts ORDER BY ord");
    if (rc < 0)
        goto out;
    /* One statement, so the rows and the version come from one snapshot. */
    rc = router_exec(r, ROUTER_GLOBAL, &shards,
                     "SELECT m.shard, m.host, m.state, v.version FROM %S.shard_map m "
                     "JOIN %S.map_version v ORDER BY m.shard");
    if (rc < 0)
        goto out;
    if (shards.nrow == 0) {
        rc = BC_ENOTFOUND;
        goto out;
    }
    rc = map_build(r, &hosts, &shards, &m);
    if (rc < 0)
        goto out;
    m->retired = cur;
    atomic_store(&r->current, m);
out:
    pthread_mutex_unlock(&r->map_lock);
    sql_rows_free(&ver);
    sql_rows_free(&hosts);
    sql_rows_free(&shards);
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
        router__set_error("no shard map yet (run shardctl init)");
        *err = BC_ENOTFOUND;
        return NULL;
    }
    return m->pool_of[m->map->node_of[shard]];
}

static void *poll_main(void *arg)
{
    struct router *r = arg;

    pthread_mutex_lock(&r->poll_lock);
    while (!r->poll_stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += r->map_poll_ms / 1000;
        ts.tv_nsec += (long)(r->map_poll_ms % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        while (!r->poll_stop && !r->poll_now &&
               pthread_cond_timedwait(&r->poll_cond, &r->poll_lock, &ts) == 0)
            ;
        if (r->poll_stop)
            break;
        int on = r->poll_on || r->poll_now;
        r->poll_now = 0;
        pthread_mutex_unlock(&r->poll_lock);
        if (on)
            router_reload_map(r);
        pthread_mutex_lock(&r->poll_lock);
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
