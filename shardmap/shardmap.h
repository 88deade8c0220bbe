/*
 * shardmap.h: the pure core of BetCity's sharding, shared by the API server,
 * the tools and the tests. Nothing here knows about MySQL or the network.
 *
 *  - key -> logical shard: XXH3-64 (seed 0) of the key's canonical bytes, mod N;
 *  - 64-bit ids that carry their shard (41 bits ms | 13 bits shard | 10 bits seq);
 *  - the shard -> host map, a versioned, immutable-after-build value;
 *  - placement on a weighted consistent-hash ring of hosts with virtual nodes,
 *    and plans that add or remove a host;
 *  - YAML (libyaml) load and save of the cluster config, shard maps and plans.
 *
 * Status codes follow shardmap_err.h: 0 success, negative error.
 */
#ifndef SHARDMAP_H
#define SHARDMAP_H

#include <stddef.h>
#include <stdint.h>

#include "shardmap_err.h"

#define SHARDMAP_MIN_SHARDS 16u
#define SHARDMAP_MAX_SHARDS 8192u
#define SHARDMAP_MAX_HOSTS 256u
#define SHARDMAP_MAX_MEMCACHED 16u /* memcached servers a config lists */
#define SHARDMAP_NAME_MAX 64       /* host names, cluster name: [A-Za-z0-9_-]{1,63} */
#define SHARDMAP_PREFIX_MAX 32     /* schema prefix: [a-z0-9_]{1,31} */
/*
 * Size of a buffer for any name made from the prefix: "<prefix>_global",
 * "<prefix>_NNNN" (a shard, below SHARDMAP_MAX_SHARDS: four digits) and
 * "<prefix>_move_NNNN" (a move's lock and replication connection). The longest,
 * "<31 characters>_move_8191", is 41 characters: within MariaDB's 64 for an
 * identifier, a lock name and a connection name, so a longer prefix is refused
 * when the config is read rather than truncated anywhere later.
 */
#define SHARDMAP_SCHEMA_MAX 48
_Static_assert(SHARDMAP_MAX_SHARDS <= 10000u, "shard numbers are printed as %04u");
_Static_assert(SHARDMAP_PREFIX_MAX - 1 + sizeof("_move_NNNN") <= SHARDMAP_SCHEMA_MAX,
               "SHARDMAP_SCHEMA_MAX holds <prefix>_move_NNNN");
_Static_assert(SHARDMAP_SCHEMA_MAX - 1 <= 64,
               "MariaDB names are at most 64 characters");

/* ---- key -> shard ------------------------------------------------------- */

/* XXH3-64 with seed 0 of the bytes. */
uint64_t shardmap_hash(const void *key, size_t len);

/* Logical shard of a key: shardmap_hash(key) mod nshard (nshard a power of 2). */
uint32_t shardmap_shard_of_key(const void *key, size_t len, uint32_t nshard);

/*
 * Canonical e-mail: surrounding ASCII white space trimmed, ASCII lower-cased.
 * Writes at most outsz bytes including the NUL; returns the canonical length,
 * or -ENAMETOOLONG if it does not fit, -EINVAL if empty after trimming.
 */
int shardmap_canonical_email(const char *email, char *out, size_t outsz);

/* True when n is a power of two in [SHARDMAP_MIN_SHARDS, SHARDMAP_MAX_SHARDS]. */
int shardmap_valid_nshard(uint32_t n);

/* ---- ids ----------------------------------------------------------------- */

/* Milliseconds since the Unix epoch of id time 0: 2026-01-01T00:00:00Z. */
#define SHARDMAP_ID_EPOCH_MS 1767225600000ULL
#define SHARDMAP_ID_TIME_BITS 41
#define SHARDMAP_ID_SHARD_BITS 13
#define SHARDMAP_ID_SEQ_BITS 10

struct shardmap_id {
    uint64_t ms;    /* ms since SHARDMAP_ID_EPOCH_MS, < 2^41 */
    uint32_t shard; /* < 2^13 */
    uint32_t seq;   /* < 2^10 */
};

/*
 * Packs the parts; returns 0, or -ERANGE if a part does not fit its bits or
 * the id would have its top bit set (ms >= 2^40: ids stay positive BIGINTs).
 */
int shardmap_id_pack(const struct shardmap_id *parts, uint64_t *id);
/* Unpacks any 64-bit value; id 0 and ids with the top bit set are -EINVAL. */
int shardmap_id_unpack(uint64_t id, struct shardmap_id *parts);
/* Shard carried by an id (no validation). */
static inline uint32_t shardmap_id_shard(uint64_t id)
{
    return (uint32_t)((id >> SHARDMAP_ID_SEQ_BITS) &
                      ((1u << SHARDMAP_ID_SHARD_BITS) - 1));
}

/* ---- cluster configuration (cluster.yaml) -------------------------------- */

/* Replicas one host may list (each a server replicating its primary). */
#define SHARDMAP_MAX_REPLICAS 4u

/* A replica server of a host: same accounts as the host. */
struct shardmap_replica_conf {
    char name[SHARDMAP_NAME_MAX]; /* server name, unique among hosts and replicas */
    char addr[256];
    uint16_t port;
};

struct shardmap_host_conf {
    char name[SHARDMAP_NAME_MAX]; /* unique logical name, e.g. "db1" */
    char addr[256];               /* host name or IP address */
    uint16_t port;
    char user[64]; /* the API server's account: DML on the schemas only */
    char password[128];
    uint32_t weight;        /* placement weight, 1..1000, default 1 */
    char ops_user[64];      /* the operator tools' account (default: user) */
    char ops_password[128]; /* (default: password when ops_user is not given) */
    /*
     * The host is a replication group: addr/port above is its first
     * primary (a server named like the host); these replicate from it. The
     * catalog's servers table knows which server is the primary now.
     */
    struct shardmap_replica_conf replicas[SHARDMAP_MAX_REPLICAS];
    uint32_t nreplica;
};

/*
 * Which of each host's two accounts a program connects with. The file does
 * not choose it: the program does, once, after loading (the API server keeps
 * the default; shardctl, bcadmin and the fill tools set SHARDMAP_ACCOUNT_OPS).
 */
enum shardmap_account {
    SHARDMAP_ACCOUNT_API = 0, /* user/password: DML only, one statement a call */
    SHARDMAP_ACCOUNT_OPS = 1, /* ops_user/ops_password: DDL, replication, batches */
};

struct shardmap_endpoint {
    char addr[256];
    uint16_t port;
};

struct shardmap_conf {
    char name[SHARDMAP_NAME_MAX];            /* cluster name */
    char schema_prefix[SHARDMAP_PREFIX_MAX]; /* schemas <prefix>_global, _0000… */
    uint32_t nshard;
    char global_host[SHARDMAP_NAME_MAX]; /* host holding <prefix>_global */
    struct shardmap_host_conf *hosts;    /* owned */
    uint32_t nhost;
    struct shardmap_endpoint *memcached; /* owned */
    uint32_t nmemcached;
    /* router: section; defaults given in parentheses */
    uint32_t pool_size;          /* connections per host (8) */
    uint32_t connect_timeout_ms; /* (500) */
    uint32_t query_timeout_ms;   /* read/write of one statement (800) */
    uint32_t batch_timeout_ms;   /* one statement of background work (30000) */
    uint32_t map_poll_ms;        /* global map version poll, >= 1000 (1000) */
    uint32_t move_wait_ms; /* how long a write waits out a shard's cut-over (3000) */
    /* replication: section */
    uint32_t max_lag_ms; /* replicas serve stale-ok reads under this lag (1000) */
    uint32_t probe_ms;   /* guard: probe period of every server (250) */
    uint32_t
        down_after_ms; /* guard: a primary unanswered this long fails over (1000) */
    /* Set by the program, not read from the file (see enum shardmap_account). */
    enum shardmap_account account;
};

/*
 * Loads and validates a cluster config. On error returns BC_ECONFIG (or
 * -errno when the file cannot be read) and sets *err to a malloc'd text, one
 * "file:line: message" per line, listing every error found; the caller frees
 * it. conf must be released with shardmap_conf_deinit() after success only.
 */
int shardmap_conf_load(const char *path, struct shardmap_conf *conf, char **err);
int shardmap_conf_save(const char *path, const struct shardmap_conf *conf);
void shardmap_conf_deinit(struct shardmap_conf *conf);
/*
 * Gives each router: key of conf that is 0 (unset) its default, and raises
 * one under its minimum to the minimum; the one table of defaults and ranges
 * is the loader's. shardmap_conf_load() does this; so does a user of a conf
 * built in code (router_create() on its own copy).
 */
void shardmap_conf_defaults(struct shardmap_conf *conf);
/* Index of the named host in conf->hosts, or BC_EHOST. */
int shardmap_conf_host(const struct shardmap_conf *conf, const char *name);

/* ---- shard map ----------------------------------------------------------- */

enum shardmap_state {
    SHARDMAP_STATE_ACTIVE = 0, /* serving on its host */
    SHARDMAP_STATE_MOVING = 1, /* being copied; still served by its host */
    SHARDMAP_STATE_FENCED = 2, /* cut-over in progress: writes wait */
};

struct shardmap_node {
    char name[SHARDMAP_NAME_MAX];
    uint32_t weight;
};

/*
 * The shard -> host map. Built once (create, then set), then read-only and
 * safe to share between threads. Fields are read-only for callers.
 */
struct shardmap {
    uint64_t version;
    uint32_t nshard;
    uint32_t nnode;
    struct shardmap_node *nodes; /* owned, nnode entries */
    uint16_t *node_of;           /* owned, nshard entries: index into nodes */
    uint8_t *state;              /* owned, nshard entries: enum shardmap_state */
};

/* Allocates a map with every shard on node 0; NULL on bad input or ENOMEM. */
struct shardmap *shardmap_create(uint32_t nshard, const struct shardmap_node *nodes,
                                 uint32_t nnode, uint64_t version);
void shardmap_destroy(struct shardmap *map);
struct shardmap *shardmap_clone(const struct shardmap *map);
/* Index of the named node, or BC_EHOST. */
int shardmap_node_index(const struct shardmap *map, const char *name);
/* Number of shards on each node; counts has map->nnode entries. */
void shardmap_count(const struct shardmap *map, uint32_t *counts);

/* Loads a map exported by shardmap_save(); errors as shardmap_conf_load(). */
int shardmap_load(const char *path, struct shardmap **map, char **err);
int shardmap_save(const char *path, const struct shardmap *map);

/* ---- placement ----------------------------------------------------------- */

/*
 * Virtual nodes per unit of weight on the ring. Each vnode's point is
 * XXH3-64 of "<host name>#<i>".
 */
#define SHARDMAP_VNODES 160

/*
 * Initial placement: consistent hashing with bounded loads. Each shard's
 * point is XXH3-64 of "shard-<n>"; it goes to the first host clockwise whose
 * load is under its capacity ceil(nshard * weight / total weight). Pure and
 * deterministic: the same nodes give the same map. Fills map->node_of.
 * O(nshard * log(vnodes)) on average.
 */
int shardmap_place(struct shardmap *map);

struct shardmap_move {
    uint32_t shard;
    uint16_t from; /* node index in the new map */
    uint16_t to;
};

struct shardmap_plan {
    uint64_t base_version;       /* version of the map the plan was made from */
    struct shardmap *target;     /* owned: the map after every move */
    struct shardmap_move *moves; /* owned, in the order to run them */
    uint32_t nmove;
    int has_new_host;                   /* add-host plans: where it is */
    struct shardmap_host_conf new_host; /* user/password left empty */
};

/*
 * Plan adding a host: only moves onto the new host, as many as its fair
 * share round(nshard * w / W'), taken one at a time from the most loaded host
 * (by load / weight), preferring shards whose ring owner is the new host.
 */
int shardmap_plan_add(const struct shardmap *map, const struct shardmap_node *node,
                      struct shardmap_plan *plan);
/*
 * Plan removing a host: only its shards move, each to its ring successor
 * among the remaining hosts, or to the least loaded host when that one is at
 * capacity. The removed node stays in target->nodes with no shard.
 */
int shardmap_plan_remove(const struct shardmap *map, const char *name,
                         struct shardmap_plan *plan);
void shardmap_plan_deinit(struct shardmap_plan *plan);

/* Plan files: YAML, see docs/config.md. Errors as shardmap_conf_load(). */
int shardmap_plan_save(const char *path, const struct shardmap_plan *plan);
int shardmap_plan_load(const char *path, struct shardmap_plan *plan, char **err);

#endif
