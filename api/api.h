/*
 * api.h: the BetCity HTTP API server (../shared/spec/api.md, docs/api.md).
 *
 * Stateless: every request is served from the router (shards and global
 * schema) and the token in its Authorization header, so any number of
 * servers can stand behind HAProxy. HTTP is libmicrohttpd (an epoll loop per
 * core; handlers that wait for the database run on a pool of workers), JSON
 * is jansson, passwords are argon2id and tokens are HMAC-SHA256 signed
 * (libsodium).
 */
#ifndef API_H
#define API_H

#include <stdint.h>
#include <stdio.h>

#include "cache/cache.h"
#include "router/router.h"

/* A token bucket's refill rate and size. */
struct api_rate {
    double per_s;
    uint32_t burst;
};

/* An IPv4 network, both in network byte order. */
struct api_net {
    uint32_t addr, mask;
};

#define API_MAX_NETS 8
struct api_nets {
    struct api_net net[API_MAX_NETS];
    int n;
};

/*
 * What the server does against abuse (docs/api.md "Limits"); each field is
 * a key of api_conf_set(), `betcity-api --set KEY=VALUE`.
 */
struct api_limits {
    struct api_rate login_addr;  /* logins per client address (20/s, 200) */
    struct api_rate signup_addr; /* signups per client address (10/s, 200) */
    struct api_rate account;     /* failed logins and signups per e-mail (0.1/s, 10) */
    struct api_rate device;    /* logins from a known device per account (0.1/s, 10) */
    uint32_t device_ttl_days;  /* a device token's life (180) */
    uint32_t table_size;       /* buckets per table, older ones evicted (16384) */
    uint32_t hash_threads;     /* password-hash threads (2) */
    uint32_t hash_queue;       /* hashes waiting or running at most (64) */
    uint32_t hash_known;       /* more places, for known devices' logins (16) */
    uint32_t hash_per_addr;    /* of them from one client address (2) */
    uint32_t hash_max_wait_ms; /* refused when the expected wait is longer (500) */
    uint32_t hash_nice;        /* nice added to the hash threads (10) */
    /* A login or sign-up's 429 or 503 is answered this late (500). */
    uint32_t auth_refusal_delay_ms;
    uint32_t auth_refusal_held; /* of them waiting at once, at most (4096) */
    uint32_t work_queue;        /* requests queued or running on the workers (1024) */
    uint32_t work_per_user;     /* of them, a signed-in user's writes (4; 0: any) */
    uint32_t work_parked_per_user; /* and more of his writes waiting (16; 0: any) */
    uint32_t loop_reads; /* GET /v1/me's read on the event loops (1; 0: workers) */
    uint32_t loop_bets;  /* POST /v1/bets's statement on the loops (1; 0: workers) */
    uint32_t loop_batch_wakes; /* wake-ups a second of a busy loop (1000) */
    uint32_t read_batch; /* a loop's reads of one host sent as one statement (16) */
    uint32_t settle_pause_pct;  /* a settlement batch's time a host then pauses (0) */
    uint32_t settle_batches;    /* settlement batches at once (0: one per host) */
    uint32_t settle_batch_bets; /* bets a settlement transaction takes at most (250) */
    uint32_t background_nice;   /* nice added to background threads (10) */
    uint32_t background_hosts;  /* hosts a background scatter asks at once (0: all) */
    uint32_t background_cores_pct; /* of a machine's cores, its hosts' background work
                                      (50; 0: no limit) */
    uint32_t background_idle;      /* background server threads under SCHED_IDLE (1) */
    uint32_t standings_per_core;   /* the recomputation's scans at a core a place (1) */
    uint32_t conn_per_addr;        /* connections per address, proxies apart (64) */
    uint32_t header_timeout_ms;    /* connect to complete headers (800) */
    uint32_t body_timeout_ms;      /* headers to complete body (10000) */
    uint32_t idle_timeout_ms;     /* a response to the next request's headers (15000) */
    uint32_t stop_drain_ms;       /* stopping: /readyz 503 this long before the listener
                                     closes (2500) */
    struct api_nets trusted;      /* proxies whose X-Forwarded-For counts (127.0.0.1) */
    struct api_nets metrics_from; /* who may GET /metrics directly (127.0.0.0/8) */
};

#define API_MAX_KEYS 8   /* token keys: the signing key and older ones */
#define API_KEY_ID_LEN 8 /* hex digits of a key id */

struct api_conf {
    char listen_addr[64]; /* "127.0.0.1" */
    uint16_t port;
    char name[64];      /* instance name in logs and metrics */
    uint8_t secret[32]; /* token signing key, same on every server */
    /* Older token keys still accepted (a rotation: docs/operations.md). */
    uint8_t old_secrets[API_MAX_KEYS - 1][32];
    uint32_t nold_secret;
    /* libmicrohttpd's event-loop threads (the online cores, at most 256) */
    uint32_t threads;
    /* Threads that run handlers off the loops, sized for database waits (64) */
    uint32_t workers;
    uint32_t token_ttl_s;     /* (86400) */
    int64_t initial_balance;  /* economy.initial_balance (1000) */
    uint32_t max_connections; /* (4096) */
    FILE *access_log;         /* ref: one line per request; NULL for none */
    struct cache *cache;      /* ref: memcached read-through for hot reads */
    struct api_limits limits; /* abuse limits: api_conf_set() keys */
    /*
     * Read-your-writes: after a user's write, that user's reads skip the
     * replicas for this long (s; 0: 2). More than the replicas' lag bound.
     */
    uint32_t rw_window_s;
};

struct api_server; /* opaque */

/*
 * The token keys of a secret file's text: one key a line, 64 hex characters;
 * blank lines and lines starting with '#' are skipped. The first key signs
 * (conf->secret), the others (at most API_MAX_KEYS in all) are accepted too
 * (conf->old_secrets). 0, or -EINVAL with a message naming path and line in err.
 */
int api_secrets_parse(struct api_conf *conf, const char *text, const char *path,
                      char *err, size_t errsize);
/* The id a token names its key by: API_KEY_ID_LEN hex digits of a hash of it. */
void api_key_id(const uint8_t key[32], char out[API_KEY_ID_LEN + 1]);

/* Fills conf with the defaults above (secret zeroed). */
void api_conf_init(struct api_conf *conf);
/*
 * Sets one key of conf->limits from its text ("login_addr_rate", "20"). 0, or
 * -EINVAL with a message that names the key and what was wrong in err.
 */
int api_conf_set(struct api_conf *conf, const char *key, const char *value, char *err,
                 size_t errsize);
/* Prints every key of api_conf_set() with its default and meaning. */
void api_conf_keys(FILE *out);

/*
 * Starts serving on conf->listen_addr:port with the given router (borrowed:
 * it must outlive the server). Returns 0 or a negative status.
 */
int api_server_create(const struct api_conf *conf, struct router *router,
                      struct api_server **out);
/*
 * Drains before a stop: /readyz answers 503 and each answer closes its
 * connection, for drain_ms (returns then), while everything else serves
 * as before, so that a proxy's health checks take the server out before
 * its port closes. Once.
 */
void api_server_drain(struct api_server *srv, uint32_t drain_ms);
/* Stops accepting, finishes requests in flight, frees everything. */
void api_server_destroy(struct api_server *srv);
/* The port it listens on (the one chosen when conf->port was 0). */
uint16_t api_server_port(const struct api_server *srv);

/* Prints every route as "METHOD /path/{param}", one per line. */
void api_print_routes(FILE *out);

/* Password hashing (argon2id), shared with bcadmin. 0 or negative status. */
int api_password_hash(const char *password, char *out, size_t size);
int api_password_verify(const char *hash, const char *password);

/* How long an Idempotency-Key answers a repeated bet (s): 24 hours. */
#define API_IDEM_KEEP_S 86400
/*
 * Deletes the Idempotency-Key records older than keep_s from every shard
 * (api_purge.c; each server does it every 10 minutes). *deleted gets the
 * rows deleted, *failed the shards that failed (the first is logged).
 * 0, or the first failed shard's status.
 */
int api_idem_purge(struct router *router, uint32_t keep_s, uint64_t *deleted,
                   uint32_t *failed);

/*
 * Recomputes every standings list from the shards' aggregates and users and
 * stores them under a new generation (api_standings.c; the settler does it
 * after each settlement, bcadmin recompute-standings on demand). 0 or a
 * negative status.
 */
int api_standings_recompute(struct router *router);

/*
 * Creates the platform admin (and its platform company) if missing: 0,
 * BC_EEXISTS (that platform admin is there already), -EPERM (another user
 * has the e-mail: nothing changed), -EINVAL (a rule broken) or a status;
 * *user_id is the admin's or that user's id.
 */
int api_create_platform_admin(struct router *router, const char *email,
                              const char *password, const char *display_name,
                              int64_t initial_balance, uint64_t *user_id);

#endif
