/*
 * cache_int.h: what cache.c shares with cache_marker.c (not public).
 */
#ifndef CACHE_INT_H
#define CACHE_INT_H
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include <libmemcached/memcached.h>

#include "cache/cache.h"

#define MAX_SERVERS SHARDMAP_MAX_MEMCACHED /* the config allows no more */
#define NEAR_SLOTS 1024
#define NEAR_LOCKS 64

struct server {
    char name[64];
    char addr[256];
    uint16_t port;
    atomic_int_fast64_t down_until_ms; /* breaker open until then */
    atomic_int flush_needed;           /* it missed deletes while down */
    atomic_uint epoch;                 /* bumped when it comes back */
    atomic_uint_fast64_t hits, misses, fills, lease_waits, lease_timeouts, fill_races,
        errors;
};

struct near_entry {
    char *key;
    char *value;
    size_t len;
    int64_t expires_ms;
    uint64_t drops; /* near_drop()s of the slot: a read begun before one is not kept */
};

struct cache {
    memcached_st *master; /* configured once; cloned per thread */
    pthread_key_t client;
    uint32_t timeout_ms; /* a server's answer: libmemcached's poll timeout */
    struct server server[MAX_SERVERS];
    uint32_t nserver;
    pthread_mutex_t near_lock[NEAR_LOCKS]; /* striped: slot % NEAR_LOCKS */
    struct near_entry near[NEAR_SLOTS];
    atomic_uint_fast64_t near_hits;
};

/* CLOCK_MONOTONIC, ms. */
int64_t cache__now_ms(void);
/* The server that holds key by m's distribution, or NULL (no servers). */
struct server *cache__server_of(struct cache *c, memcached_st *m, const char *key);
/* Opens the breaker of a server after an error (every thread skips it). */
void cache__server_failed(struct server *s);

#endif
