/*
 * cache.h: memcached read-through cache for BetCity's hot reads.
 *
 * Rules (../shared/spec/architecture.md, Cache), all from systems that run
 * memcached at scale:
 *  - write the database, commit, then cache_delete(): never set on a write;
 *  - a miss is filled by one caller, under a lease: the filler `add`s a lease
 *    marker into the key, loads the database, and stores its value with
 *    `cas` against that marker, so an invalidation in between (which deletes
 *    the marker) makes the fill fail: a slow reader cannot put old data back;
 *  - other readers of a key under lease wait briefly, then read the database
 *    themselves without filling: a herd on one cold key costs one query;
 *  - a cache error or timeout is a miss with no fill; a server that fails is
 *    skipped for a second (circuit breaker, so a dead server costs no timeout
 *    per request), and its keys are never rehashed onto the others; when it
 *    comes back it is flushed first, since deletes missed it meanwhile;
 *  - servers are spread by ketama consistent hashing;
 *  - hot keys may also sit in a per-process near-cache for at most
 *    CACHE_NEAR_MS, which keeps "no server shows data older than 1 s after a
 *    write returned".
 *
 * Keys are namespaced and versioned by the caller ("bc:v1:odds:42").
 * Thread safety: every function may be called from any thread (one libmemcached
 * client per thread).
 */
#ifndef CACHE_H
#define CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "shardmap/shardmap.h"

#define CACHE_NEAR_MS 900
#define CACHE_KEY_MAX 200

struct cache; /* opaque */

/*
 * Loads the value of a key from the database. Returns 0 and a malloc'd
 * *value of *len bytes (the cache owns it after), or a negative status,
 * which cache_get() returns as is.
 */
typedef int (*cache_fill_fn)(void *arg, char **value, size_t *len);

/*
 * Creates a cache over conf->memcached (may be empty: every get is a fill).
 * connect/poll timeouts in ms (0: defaults 50 and 100).
 */
int cache_create(const struct shardmap_conf *conf, uint32_t timeout_ms,
                 struct cache **out);
void cache_destroy(struct cache *cache);

/*
 * Read-through get. near: also use the per-process near-cache, and keep
 * there what memcached returned or what a fill stored under its lease (not
 * a fill that lost its lease to an invalidation, nor one made without the
 * cache). ttl_s: how long memcached keeps a fill. On success *value is
 * malloc'd (caller frees).
 */
int cache_get(struct cache *cache, const char *key, int near, uint32_t ttl_s,
              cache_fill_fn fill, void *arg, char **value, size_t *len);

/*
 * Only the near-cache (never memcached, never a fill: it neither blocks nor
 * does I/O): 1 and a malloc'd *value when key is there and fresh, 0 when not.
 */
int cache_near(struct cache *cache, const char *key, char **value, size_t *len);
/* Deletes a key after the write that changed it committed (and its near copy). */
void cache_delete(struct cache *cache, const char *key);
/*
 * Flushes, now, each server whose breaker has closed and that missed
 * invalidations while it was open (otherwise its next use does it): a
 * process that stops using a server after one of its deletes failed would
 * leave that key's old value there for the other processes until its TTL.
 * Blocks up to 100 ms for each such server (its flush); nothing when
 * there is none. For a background thread, a few times a second.
 */
void cache_maintain(struct cache *cache);

/*
 * A group's generation (for group invalidation: keys embed it). Read through
 * the cache like any key; cache_bump() increments it after a group change.
 * near: also from this process's near-cache, so another server's bump shows
 * here up to CACHE_NEAR_MS late; 0: from memcached on every call (a bump
 * shows at once on every server).
 */
uint64_t cache_generation(struct cache *cache, const char *group, int near);
void cache_bump(struct cache *cache, const char *group);

struct cache_server_stats {
    char name[64]; /* host:port */
    int up;        /* breaker closed */
    uint64_t hits, misses, fills, lease_waits, lease_timeouts, fill_races, errors;
};
struct cache_stats {
    uint64_t near_hits;
    uint32_t nserver;
    struct cache_server_stats server[16];
};
void cache_stats(struct cache *cache, struct cache_stats *stats);

/*
 * Flags: short-lived keys that say something happened recently (a user
 * wrote: read-your-writes), not cached data. cache_mark sets key for ttl_s
 * seconds (memcached's clock: the flag lives ttl_s - 1 to ttl_s seconds);
 * 0, or -EIO when no server took it. cache_marked: 1 set, 0 not set, -EIO
 * when it cannot tell (no servers, a server down): callers assume set.
 */
int cache_mark(struct cache *cache, const char *key, uint32_t ttl_s);
int cache_marked(struct cache *cache, const char *key);

/*
 * The same flags, set without blocking, for an event loop: a marker is one
 * thread's (a loop's) connections to the servers, on sockets that never
 * block, in an epoll set of its own whose descriptor (cache_marker_fd())
 * the loop puts in its set. cache_mark_start() sends "set key" on the
 * key's server (pipelined behind that server's marks in flight) and
 * returns; cache_marker_run(), called when the descriptor is ready or at
 * cache_marker_due_ms(), reads the answers and calls done(arg, tag, status)
 * once for each mark that ended: 0 stored, -EIO not (an error, or no
 * answer within the cache's timeout: the connection is closed and the
 * server's breaker opens, as for cache_mark()).
 *
 * start: 0 (done will come), -EIO when no server takes the key now (no
 * servers, its breaker open, or it missed deletes and is not probed here:
 * the blocking calls do that), -ENOMEM. A marker is used by one thread;
 * destroy (accepts NULL) drops the marks in flight without calling done.
 */
struct cache_marker;
typedef void (*cache_mark_done)(void *arg, void *tag, int status);
int cache_marker_create(struct cache *cache, struct cache_marker **out);
void cache_marker_destroy(struct cache_marker *mk);
int cache_marker_fd(const struct cache_marker *mk);
int cache_mark_start(struct cache_marker *mk, const char *key, uint32_t ttl_s,
                     void *tag);
void cache_marker_run(struct cache_marker *mk, cache_mark_done done, void *arg);
/* CLOCK_MONOTONIC ms of the nearest mark's deadline; INT64_MAX when none. */
int64_t cache_marker_due_ms(const struct cache_marker *mk);

#endif
