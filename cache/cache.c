/*
 * cache.c: read-through, leases, invalidation, breaker and near-cache over
 * libmemcached. See cache.h for the rules this follows.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libmemcached/memcached.h>
#include <sodium.h>

#include "cache/cache_int.h"

#define LEASE_TTL_S 2
#define LEASE_WAIT_MS 300
#define BREAKER_MS 1000
#define LEASE_PREFIX "\001LEASE:"

int64_t cache__now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A thread's client, and the epoch of each server it last connected in. */
struct tclient {
    memcached_st *m;
    uint32_t epoch[MAX_SERVERS];
};

static void client_free(void *p)
{
    struct tclient *t = p;

    memcached_free(t->m);
    free(t);
}

/*
 * This thread's client, cloned from the master on first use. When a server
 * came back (its epoch moved), the thread's old connections are dropped
 * first: they died with the server and would each fail once, and each
 * failure would open the breaker again.
 */
static memcached_st *client(struct cache *c)
{
    struct tclient *t = pthread_getspecific(c->client);
    int stale = 0;

    if (t == NULL && c->master != NULL) {
        t = calloc(1, sizeof(*t));
        if (t == NULL)
            return NULL;
        t->m = memcached_clone(NULL, c->master);
        if (t->m == NULL) {
            free(t);
            return NULL;
        }
        for (uint32_t i = 0; i < c->nserver; i++)
            t->epoch[i] = atomic_load(&c->server[i].epoch);
        pthread_setspecific(c->client, t);
    }
    if (t == NULL)
        return NULL;
    for (uint32_t i = 0; i < c->nserver; i++) {
        uint32_t e = atomic_load(&c->server[i].epoch);
        stale |= t->epoch[i] != e;
        t->epoch[i] = e;
    }
    if (stale)
        memcached_quit(t->m);
    return t->m;
}

int cache_create(const struct shardmap_conf *conf, uint32_t timeout_ms,
                 struct cache **out)
{
    struct cache *c = calloc(1, sizeof(*c));
    memcached_st *m;

    if (c == NULL)
        return -ENOMEM;
    if (sodium_init() < 0) {
        free(c);
        return -EIO;
    }
    for (int i = 0; i < NEAR_LOCKS; i++)
        pthread_mutex_init(&c->near_lock[i], NULL);
    pthread_key_create(&c->client, client_free);
    if (timeout_ms == 0)
        timeout_ms = 100;
    c->timeout_ms = timeout_ms;
    if (conf->nmemcached > 0) {
        m = memcached_create(NULL);
        if (m == NULL)
            goto nomem;
        /* ketama: consistent distribution with MD5 points, as libmemcached's tools. */
        memcached_behavior_set(m, MEMCACHED_BEHAVIOR_KETAMA, 1);
        memcached_behavior_set(m, MEMCACHED_BEHAVIOR_SUPPORT_CAS, 1);
        memcached_behavior_set(m, MEMCACHED_BEHAVIOR_TCP_NODELAY, 1);
        memcached_behavior_set(m, MEMCACHED_BEHAVIOR_NO_BLOCK, 1);
        memcached_behavior_set(m, MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT, timeout_ms / 2);
        memcached_behavior_set(m, MEMCACHED_BEHAVIOR_POLL_TIMEOUT, timeout_ms);
        memcached_behavior_set(m, MEMCACHED_BEHAVIOR_RCV_TIMEOUT, timeout_ms * 1000);
        memcached_behavior_set(m, MEMCACHED_BEHAVIOR_SND_TIMEOUT, timeout_ms * 1000);
        /* A dead server's keys must not move to the others (stale reads). */
        memcached_behavior_set(m, MEMCACHED_BEHAVIOR_REMOVE_FAILED_SERVERS, 0);
        /* The breaker below decides when a server is tried again. */
        memcached_behavior_set(m, MEMCACHED_BEHAVIOR_RETRY_TIMEOUT, 0);
        for (uint32_t i = 0; i < conf->nmemcached && i < MAX_SERVERS; i++) {
            struct server *s = &c->server[i];
            snprintf(s->addr, sizeof(s->addr), "%s", conf->memcached[i].addr);
            s->port = conf->memcached[i].port;
            snprintf(s->name, sizeof(s->name), "%.50s:%u", s->addr, s->port);
            if (memcached_server_add(m, s->addr, s->port) != MEMCACHED_SUCCESS) {
                memcached_free(m);
                goto nomem;
            }
            c->nserver++;
        }
        c->master = m;
    }
    *out = c;
    return 0;
nomem:
    pthread_key_delete(c->client);
    free(c);
    return -ENOMEM;
}

void cache_destroy(struct cache *c)
{
    struct tclient *t;

    if (c == NULL)
        return;
    t = pthread_getspecific(c->client);
    if (t != NULL)
        client_free(t);
    pthread_setspecific(c->client, NULL);
    pthread_key_delete(c->client);
    memcached_free(c->master);
    for (int i = 0; i < NEAR_SLOTS; i++) {
        free(c->near[i].key);
        free(c->near[i].value);
    }
    for (int i = 0; i < NEAR_LOCKS; i++)
        pthread_mutex_destroy(&c->near_lock[i]);
    free(c);
}

/* The server that holds key, or NULL (no servers). */
struct server *cache__server_of(struct cache *c, memcached_st *m, const char *key)
{
    memcached_return_t rc;
    const memcached_instance_st *inst;

    if (m == NULL || c->nserver == 0)
        return NULL;
    inst = memcached_server_by_key(m, key, strlen(key), &rc);
    if (inst == NULL)
        return NULL;
    for (uint32_t i = 0; i < c->nserver; i++)
        if (c->server[i].port == memcached_server_port(inst) &&
            strcmp(c->server[i].addr, memcached_server_name(inst)) == 0)
            return &c->server[i];
    return NULL;
}

/* Opens the breaker of a server after an error. */
void cache__server_failed(struct server *s)
{
    atomic_fetch_add(&s->errors, 1);
    atomic_store(&s->down_until_ms, cache__now_ms() + BREAKER_MS);
    atomic_store(&s->flush_needed, 1);
}

/* Flushes a server on its own connection; 0 when done. */
static int server_flush(struct server *s, uint32_t timeout_ms)
{
    memcached_st *m = memcached_create(NULL);
    memcached_return_t rc;

    if (m == NULL)
        return -ENOMEM;
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_NO_BLOCK, 1);
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT, timeout_ms);
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_POLL_TIMEOUT, timeout_ms);
    memcached_server_add(m, s->addr, s->port);
    rc = memcached_flush(m, 0);
    memcached_free(m);
    return rc == MEMCACHED_SUCCESS ? 0 : -EIO;
}

/*
 * Whether a server may be used now: its breaker is closed, or it is half-open
 * and answers a flush (it missed invalidations while it was away).
 */
static int server_usable(struct server *s)
{
    int64_t until = atomic_load(&s->down_until_ms);

    if (until > cache__now_ms())
        return 0;
    if (atomic_load(&s->flush_needed)) {
        /* One thread probes; the others keep skipping it meanwhile. */
        if (!atomic_compare_exchange_strong(&s->down_until_ms, &until,
                                            cache__now_ms() + BREAKER_MS))
            return 0;
        if (server_flush(s, 100) < 0) {
            cache__server_failed(s);
            return 0;
        }
        atomic_store(&s->flush_needed, 0);
        atomic_fetch_add(&s->epoch, 1);
        atomic_store(&s->down_until_ms, 0);
    }
    return 1;
}

static int is_failure(memcached_return_t rc)
{
    return rc != MEMCACHED_SUCCESS && rc != MEMCACHED_NOTFOUND &&
           rc != MEMCACHED_NOTSTORED && rc != MEMCACHED_DATA_EXISTS &&
           rc != MEMCACHED_END;
}

/* ---- near-cache ------------------------------------------------------- */

static uint32_t near_slot(const char *key)
{
    uint32_t h = 2166136261u;

    for (const char *p = key; *p; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    return h % NEAR_SLOTS;
}

/*
 * The near value of key, if any; *drops (unless NULL) gets the slot's drop
 * count, which a near_put() of what the caller then reads must present.
 */
static int near_get(struct cache *c, const char *key, char **value, size_t *len,
                    uint64_t *drops)
{
    uint32_t slot = near_slot(key);
    struct near_entry *e = &c->near[slot];
    pthread_mutex_t *lock = &c->near_lock[slot % NEAR_LOCKS];
    int found = 0;

    pthread_mutex_lock(lock);
    if (drops != NULL)
        *drops = e->drops;
    if (e->key != NULL && strcmp(e->key, key) == 0 && e->expires_ms > cache__now_ms()) {
        *value = malloc(e->len + 1);
        if (*value != NULL) {
            memcpy(*value, e->value, e->len);
            (*value)[e->len] = '\0';
            *len = e->len;
            found = 1;
        }
    }
    pthread_mutex_unlock(lock);
    return found;
}

/*
 * Keeps value near, unless the slot was dropped since near_get() gave drops:
 * then an invalidation came after the value was read, and a reader that
 * put it back would show it after its writer's own drop.
 */
static void near_put(struct cache *c, const char *key, const char *value, size_t len,
                     int64_t expires_ms, uint64_t drops)
{
    uint32_t slot = near_slot(key);
    struct near_entry *e = &c->near[slot];
    pthread_mutex_t *lock = &c->near_lock[slot % NEAR_LOCKS];
    char *k = strdup(key), *v = malloc(len + 1);

    if (k == NULL || v == NULL) {
        free(k);
        free(v);
        return;
    }
    memcpy(v, value, len);
    v[len] = '\0';
    pthread_mutex_lock(lock);
    if (e->drops != drops) {
        pthread_mutex_unlock(lock);
        free(k);
        free(v);
        return;
    }
    free(e->key);
    free(e->value);
    e->key = k;
    e->value = v;
    e->len = len;
    e->expires_ms = expires_ms;
    pthread_mutex_unlock(lock);
}

static void near_drop(struct cache *c, const char *key)
{
    uint32_t slot = near_slot(key);
    struct near_entry *e = &c->near[slot];

    pthread_mutex_lock(&c->near_lock[slot % NEAR_LOCKS]);
    e->drops++;
    if (e->key != NULL && strcmp(e->key, key) == 0)
        e->expires_ms = 0;
    pthread_mutex_unlock(&c->near_lock[slot % NEAR_LOCKS]);
}

/* ---- read-through ----------------------------------------------------- */

static int is_lease(const char *v, size_t len)
{
    return len >= sizeof(LEASE_PREFIX) - 1 &&
           memcmp(v, LEASE_PREFIX, sizeof(LEASE_PREFIX) - 1) == 0;
}

/* Fills under the lease we hold: load, then cas against our marker. */
static int fill_leased(struct cache *c, memcached_st *m, struct server *s,
                       const char *key, const char *marker, int near, uint64_t drops,
                       uint32_t ttl_s, cache_fill_fn fill, void *arg, char **value,
                       size_t *len)
{
    const char *keys[1] = {key};
    size_t klen[1] = {strlen(key)};
    memcached_return_t rc;
    memcached_result_st *res;
    uint64_t cas = 0;
    int64_t t0;
    int mine = 0, frc;

    /* The CAS id of our marker: if it is not our marker any more, we lost it. */
    rc = memcached_mget(m, keys, klen, 1);
    if (rc == MEMCACHED_SUCCESS) {
        while ((res = memcached_fetch_result(m, NULL, &rc)) != NULL) {
            if (memcached_result_length(res) == strlen(marker) &&
                memcmp(memcached_result_value(res), marker, strlen(marker)) == 0) {
                cas = memcached_result_cas(res);
                mine = 1;
            }
            memcached_result_free(res);
        }
    }
    if (is_failure(rc) && rc != MEMCACHED_END)
        cache__server_failed(s);
    t0 = cache__now_ms();
    frc = fill(arg, value, len);
    if (frc < 0 || !mine)
        return frc;
    rc = memcached_cas(m, key, strlen(key), *value, *len, (time_t)ttl_s, 0, cas);
    if (rc == MEMCACHED_SUCCESS) {
        atomic_fetch_add(&s->fills, 1);
        /*
         * Stored under our lease: no invalidation came between the read and
         * the store, so the value may be kept near as a hit's is (from the
         * read's start, not its end).
         */
        if (near)
            near_put(c, key, *value, *len, t0 + CACHE_NEAR_MS, drops);
    } else if (rc == MEMCACHED_DATA_EXISTS || rc == MEMCACHED_NOTFOUND ||
               rc == MEMCACHED_NOTSTORED)
        atomic_fetch_add(&s->fill_races, 1); /* invalidated meanwhile: not stored */
    else
        cache__server_failed(s);
    return 0;
}

int cache_near(struct cache *c, const char *key, char **value, size_t *len)
{
    if (!near_get(c, key, value, len, NULL))
        return 0;
    atomic_fetch_add(&c->near_hits, 1);
    return 1;
}

int cache_get(struct cache *c, const char *key, int near, uint32_t ttl_s,
              cache_fill_fn fill, void *arg, char **value, size_t *len)
{
    memcached_st *m = client(c);
    struct server *s = cache__server_of(c, m, key);
    int64_t wait_until = 0;
    char marker[48];
    uint64_t tok;
    int waited = 0;
    useconds_t pause_us = 1000;
    uint64_t drops = 0;

    if (near && near_get(c, key, value, len, &drops)) {
        atomic_fetch_add(&c->near_hits, 1);
        return 0;
    }
    if (s == NULL || strlen(key) > CACHE_KEY_MAX || !server_usable(s))
        return fill(arg, value, len); /* no cache: a miss with no fill */
    m = client(c);                    /* fresh connections if it just came back */
    for (;;) {
        memcached_return_t rc;
        uint32_t flags;
        char *v = memcached_get(m, key, strlen(key), len, &flags, &rc);

        if (v != NULL && !is_lease(v, *len)) {
            atomic_fetch_add(&s->hits, 1);
            if (waited)
                atomic_fetch_add(&s->lease_waits, 1);
            *value = v;
            if (near)
                near_put(c, key, v, *len, cache__now_ms() + CACHE_NEAR_MS, drops);
            return 0;
        }
        if (v == NULL && is_failure(rc)) {
            cache__server_failed(s);
            return fill(arg, value, len);
        }
        if (v != NULL) {
            /* Someone holds the lease: wait briefly for the value. */
            free(v);
            if (wait_until == 0)
                wait_until = cache__now_ms() + LEASE_WAIT_MS;
            if (cache__now_ms() >= wait_until) {
                atomic_fetch_add(&s->lease_timeouts, 1);
                return fill(arg, value, len);
            }
            /*
             * Back off (1, 2, 4, 8 ms, each plus up to as much again): a herd of
             * waiters polling every 2 ms would load the server it waits on.
             */
            waited = 1;
            usleep(pause_us + randombytes_uniform((uint32_t)pause_us));
            if (pause_us < 8000)
                pause_us *= 2;
            continue;
        }
        /* A miss: take the lease. */
        if (!waited)
            atomic_fetch_add(&s->misses, 1);
        randombytes_buf(&tok, sizeof(tok));
        snprintf(marker, sizeof(marker), LEASE_PREFIX "%016" PRIx64, tok);
        rc = memcached_add(m, key, strlen(key), marker, strlen(marker), LEASE_TTL_S, 0);
        if (rc == MEMCACHED_SUCCESS)
            return fill_leased(c, m, s, key, marker, near, drops, ttl_s, fill, arg,
                               value, len);
        if (is_failure(rc)) {
            cache__server_failed(s);
            return fill(arg, value, len);
        }
        /* Lost the race for the lease: read again (and wait). */
        if (wait_until == 0)
            wait_until = cache__now_ms() + LEASE_WAIT_MS;
        if (cache__now_ms() >= wait_until) {
            atomic_fetch_add(&s->lease_timeouts, 1);
            return fill(arg, value, len);
        }
        waited = 1;
    }
}

void cache_delete(struct cache *c, const char *key)
{
    memcached_st *m = client(c);
    struct server *s = cache__server_of(c, m, key);
    memcached_return_t rc;

    near_drop(c, key);
    if (s == NULL)
        return;
    if (!server_usable(s))
        return; /* it will be flushed before it is used again */
    m = client(c);
    rc = memcached_delete(m, key, strlen(key), 0);
    if (is_failure(rc))
        cache__server_failed(s);
    /* A read of memcached between the first drop and the delete kept the old value. */
    near_drop(c, key);
}

void cache_maintain(struct cache *c)
{
    for (uint32_t i = 0; i < c->nserver; i++) {
        struct server *s = &c->server[i];
        if (atomic_load(&s->flush_needed))
            (void)server_usable(s); /* its breaker open: nothing; closed: the flush */
    }
}

/*
 * Generations. A lost one must never come back to a value that keys were
 * stored under, or their old values would be served again. Those kept in
 * memcached are even: made from the clock in microseconds, doubled, and
 * bumped by 2. While the generation's memcached server is unusable, its
 * readers use an odd one, of the clock's second (so that keys stored then
 * serve for a second, not one request): bumps cannot reach it, so a change
 * then shows within that second, and the even one made when the server
 * is back (a microsecond of that second or later, doubled) is never one of
 * them. Before, both came from the second: a generation lost and made again
 * within the second of a change brought back keys stored before it.
 */
static uint64_t clock_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

struct gen_fill {
    uint64_t start;
};

static int gen_fill(void *arg, char **value, size_t *len)
{
    struct gen_fill *g = arg;
    char buf[32];
    int n = snprintf(buf, sizeof(buf), "%" PRIu64, g->start);

    *value = strdup(buf);
    *len = (size_t)n;
    return *value ? 0 : -ENOMEM;
}

uint64_t cache_generation(struct cache *c, const char *group, int near)
{
    char key[CACHE_KEY_MAX + 1], *v = NULL;
    uint64_t now = clock_us(), gen = 0;
    struct gen_fill g = {.start = 2 * now};
    struct server *s;
    size_t len;

    snprintf(key, sizeof(key), "bc:v1:gen:%s", group);
    /* A near hit first: the common case costs no look-up of the server. */
    if (!(near && cache_near(c, key, &v, &len))) {
        s = cache__server_of(c, client(c), key);
        if (s != NULL && !server_usable(s))
            return 2 * (now - now % 1000000) + 1; /* the odd one of this second */
        if (cache_get(c, key, near, 0, gen_fill, &g, &v, &len) < 0)
            v = NULL;
    }
    if (v != NULL)
        gen = strtoull(v, NULL, 10);
    free(v);
    return gen;
}

void cache_bump(struct cache *c, const char *group)
{
    char key[CACHE_KEY_MAX + 1];
    memcached_st *m = client(c);
    struct server *s;
    uint64_t out;
    memcached_return_t rc;

    snprintf(key, sizeof(key), "bc:v1:gen:%s", group);
    near_drop(c, key);
    s = cache__server_of(c, m, key);
    if (s == NULL || !server_usable(s))
        return;
    m = client(c);
    rc = memcached_increment(m, key, strlen(key), 2, &out); /* even stays even */
    if (is_failure(rc) && rc != MEMCACHED_NOTFOUND) /* not found: readers make one */
        cache__server_failed(s);
    near_drop(c, key); /* a read since the first drop kept the old one */
}

int cache_mark(struct cache *c, const char *key, uint32_t ttl_s)
{
    memcached_st *m = client(c);
    struct server *s = cache__server_of(c, m, key);
    memcached_return_t rc;

    if (s == NULL || !server_usable(s))
        return -EIO;
    m = client(c);
    rc = memcached_set(m, key, strlen(key), "1", 1, (time_t)ttl_s, 0);
    if (rc == MEMCACHED_SUCCESS)
        return 0;
    if (is_failure(rc))
        cache__server_failed(s);
    return -EIO;
}

int cache_marked(struct cache *c, const char *key)
{
    memcached_st *m = client(c);
    struct server *s = cache__server_of(c, m, key);
    memcached_return_t rc;
    uint32_t flags;
    size_t len;
    char *v;

    if (s == NULL || !server_usable(s))
        return -EIO;
    m = client(c);
    v = memcached_get(m, key, strlen(key), &len, &flags, &rc);
    free(v);
    if (rc == MEMCACHED_SUCCESS)
        return 1;
    if (rc == MEMCACHED_NOTFOUND)
        return 0;
    if (is_failure(rc))
        cache__server_failed(s);
    return -EIO;
}

void cache_stats(struct cache *c, struct cache_stats *st)
{
    memset(st, 0, sizeof(*st));
    st->near_hits = atomic_load(&c->near_hits);
    st->nserver = c->nserver;
    for (uint32_t i = 0; i < c->nserver; i++) {
        struct server *s = &c->server[i];
        struct cache_server_stats *o = &st->server[i];
        snprintf(o->name, sizeof(o->name), "%s", s->name);
        o->up = atomic_load(&s->down_until_ms) <= cache__now_ms() &&
                !atomic_load(&s->flush_needed);
        o->hits = atomic_load(&s->hits);
        o->misses = atomic_load(&s->misses);
        o->fills = atomic_load(&s->fills);
        o->lease_waits = atomic_load(&s->lease_waits);
        o->lease_timeouts = atomic_load(&s->lease_timeouts);
        o->fill_races = atomic_load(&s->fill_races);
        o->errors = atomic_load(&s->errors);
    }
}
