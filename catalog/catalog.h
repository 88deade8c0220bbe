/*
 * catalog.h: the cluster's metadata in <prefix>_global, behind one module.
 *
 * The catalog alone reads and writes the global schema's cluster tables:
 * cluster_meta, hosts, shard_map, map_version, moves, and the settlements
 * (background jobs). The router loads the map through it, the move engine
 * records its phases and flips the map through it, shardctl creates the
 * cluster through it, and the API keeps its settlement jobs in it. Nobody
 * else writes those tables with SQL of their own (Vitess keeps the same
 * data behind its topo package, with typed records and versions).
 *
 * The catalog runs its statements through an sql_executor: a connection of
 * its own (tools, the move engine: see catalog_lock_shard) or the router's
 * pool of the global host. Changes of the map are single transactions that
 * also bump map_version, so every reader sees a map and its version
 * together.
 *
 * Thread safety: as the executor's; struct catalog itself is immutable
 * after catalog_init().
 */
#ifndef CATALOG_H
#define CATALOG_H

#include <stdint.h>

#include "shardmap/shardmap.h"
#include "sql/sql.h"

struct catalog {
    char schema[SHARDMAP_SCHEMA_MAX]; /* read-only: "<prefix>_global" */
    uint32_t nshard;                  /* read-only: from the config */
    struct sql_executor exec;         /* read-only */
};

/* Embeds a catalog of the cluster of conf over exec (copied). */
void catalog_init(struct catalog *cat, const struct shardmap_conf *conf,
                  const struct sql_executor *exec);
void catalog_deinit(struct catalog *cat);

/*
 * Creates the global schema and its tables if missing (etc/schema/global.sql,
 * idempotent; older clusters get new tables). Needs an executor that allows
 * several statements.
 */
int catalog_install(struct catalog *cat);

/* ---- hosts and the map --------------------------------------------------------- */

struct catalog_host {
    char name[SHARDMAP_NAME_MAX];
    char addr[256];
    uint16_t port;
    uint32_t weight;
};

/* A map as stored: the hosts in order, and the map over them. */
struct catalog_map {
    uint32_t nhost;
    struct catalog_host host[SHARDMAP_MAX_HOSTS];
    struct shardmap *map; /* owned: nodes = hosts, node_of, state, version */
};
void catalog_map_deinit(struct catalog_map *m);

/* The map's version; BC_ENOTFOUND before the cluster was created. */
int catalog_map_version(struct catalog *cat, uint64_t *version);
/*
 * The same, and whether the server that answered is read-only: a catalog
 * read from a server that is not the global host's primary may be stale.
 */
int catalog_map_version_ro(struct catalog *cat, uint64_t *version, int *read_only);
/*
 * Loads the whole map (hosts, every shard's host and state, version) from
 * one snapshot. BC_ENOTFOUND before the cluster was created, BC_EMISMATCH
 * when the stored map does not fit the config (shard count) or is broken.
 */
int catalog_map_load(struct catalog *cat, struct catalog_map *out);
/*
 * Writes a new cluster in one transaction: cluster_meta (shard count,
 * prefix, name), the config's hosts in order, the placement of map, and
 * version 1. BC_EEXISTS when a map exists already. catalog_cluster_shards()
 * tells beforehand whether one exists and with how many shards.
 */
int catalog_map_create(struct catalog *cat, const struct shardmap_conf *conf,
                       const struct shardmap *map);
/* Shard count recorded at creation; 0 when there is no cluster yet. */
int catalog_cluster_shards(struct catalog *cat, uint32_t *nshard);
/*
 * 0 when the cluster has the config's shard count (or there is none yet);
 * BC_EMISMATCH, saying both counts, when it has another: the config's
 * schema names and shard numbers are not the cluster's. global_host names
 * the host in the message.
 */
int catalog_check_shards(struct catalog *cat, const char *global_host);

/* The host that holds shard now (name). BC_ESHARD, BC_ENOTFOUND. */
int catalog_shard_host(struct catalog *cat, uint32_t shard,
                       char host[SHARDMAP_NAME_MAX]);
/* Sets a shard's state (no version change: the state is for people). */
int catalog_shard_set_state(struct catalog *cat, uint32_t shard,
                            enum shardmap_state state);

/* A host of the map; BC_EHOST when the map has no such host. */
int catalog_host_get(struct catalog *cat, const char *name, struct catalog_host *out);
/*
 * Adds a host at the end of the order (a new map version). *added is 0 when
 * a host of that name was there already (nothing changed). Its address is
 * its primary's in the servers table when that has one (a failover since
 * the plan named h), else h's; h's address becomes the one in the map.
 */
int catalog_host_add(struct catalog *cat, struct shardmap_host_conf *h, int *added);
/*
 * Removes a host that holds no shard (a new map version); *removed is 0 when
 * it still holds shards or was not there. Never call it for the global host.
 */
int catalog_host_remove_empty(struct catalog *cat, const char *name, int *removed);

/*
 * A plan made from map version base_version may run while the map is still
 * that version, or differs from it only by the plan's own steps (its new
 * host added, some of its moves done: a rebalance run again after it
 * stopped half-way). BC_EMISMATCH otherwise, with a message naming both
 * versions (sql_last_error()).
 */
int catalog_check_plan(struct catalog *cat, const struct shardmap_plan *plan);

/* ---- servers: each host's primary and replicas ------------------------------- */

enum catalog_role {
    CATALOG_ROLE_PRIMARY = 0, /* the writable server of its host */
    CATALOG_ROLE_REPLICA = 1, /* replicates the primary; serves stale-ok reads */
    CATALOG_ROLE_FENCED = 2,  /* a primary that lost its role: read-only, rejoins */
    CATALOG_ROLE_REBUILD = 3, /* holds transactions the primary lacks: rebuild it */
};
const char *catalog_role_name(enum catalog_role role);

struct catalog_server {
    char name[SHARDMAP_NAME_MAX];
    char host[SHARDMAP_NAME_MAX];
    char addr[256];
    uint16_t port;
    enum catalog_role role;
    char note[256];
};

/*
 * Every server, by host then name, into a malloc'd array (*out, free()).
 * An older cluster without the table has none (0 servers, status 0).
 */
int catalog_servers_load(struct catalog *cat, struct catalog_server **out, uint32_t *n);
/*
 * Adds the config's servers the table lacks: each host's own server (named
 * as the host, at the host's config address) as its primary, each replica
 * as a replica. Rows present keep their roles. A new map version when a
 * replica was added, so that the routers learn it.
 */
int catalog_servers_sync(struct catalog *cat, const struct shardmap_conf *conf);
/*
 * Makes server the primary of host in one transaction with a new map
 * version: hosts.addr/port become the server's, the host's old primary
 * (any other server with role primary) gets old_role with note.
 * BC_ENOTFOUND when server is not a server of host.
 */
int catalog_promote(struct catalog *cat, const char *host, const char *server,
                    enum catalog_role old_role, const char *note);
/*
 * Where the global schema is written now: of the global host's servers the
 * config lists (its first primary and its replicas), the writable one whose
 * catalog has the highest map version (after a failover or a switchover the
 * config's address is a replica; an old primary back from a partition may
 * be writable for a moment with an older catalog). A host without replicas:
 * its config endpoint, unchecked. BC_EDOWN when no server qualifies. The
 * account is conf->account's.
 */
int catalog_global_endpoint(const struct shardmap_conf *conf, struct sql_endpoint *ep);
/*
 * For reading while the global host has no writable server (shardctl
 * status): of its servers the config lists that answer, writable or not,
 * the one whose catalog has the highest map version (a fenced old primary
 * keeps the catalog from before its failover; a replica's may lag the lost
 * primary's). *server names it. BC_EDOWN when none answers with a catalog.
 */
int catalog_global_newest(const struct shardmap_conf *conf, struct sql_endpoint *ep,
                          const char **server);
/* Sets one server's note only (for people; no new map version). */
int catalog_server_set_note(struct catalog *cat, const char *server, const char *note);
/* Sets one server's role and note, with a new map version. */
int catalog_server_set_role(struct catalog *cat, const char *server,
                            enum catalog_role role, const char *note);

/* ---- moves --------------------------------------------------------------------- */

/* A row of the moves table. Phases are the move engine's names. */
struct catalog_move {
    uint64_t id;
    uint32_t shard;
    char src[SHARDMAP_NAME_MAX];
    char dst[SHARDMAP_NAME_MAX];
    char phase[16];
    int keep_source;
    char binlog_file[256]; /* the snapshot's source binlog position */
    uint64_t binlog_pos;
    char snapshot_gtid[256];
    uint64_t rows_copied;
    int64_t pause_ms;     /* -1: not cut over yet */
    int64_t verify_diffs; /* -1: not compared yet */
    char started_at[32];
    char finished_at[32]; /* "" while unfinished */
};

/*
 * Records a new move (phase as given, usually "prepare") and marks the shard
 * moving; sets mv->id. BC_EEXISTS when the shard has an unfinished move (a
 * unique key in the table: two tools cannot both create one).
 */
int catalog_move_create(struct catalog *cat, struct catalog_move *mv);
/* The shard's unfinished move: 1 found (into out), 0 none, or a status. */
int catalog_move_active(struct catalog *cat, uint32_t shard, struct catalog_move *out);

/* Which fields catalog_move_save() writes besides the phase. */
enum {
    CATALOG_MOVE_COPY = 1 << 0,     /* binlog_file, binlog_pos, gtid, rows */
    CATALOG_MOVE_VERIFY = 1 << 1,   /* verify_diffs */
    CATALOG_MOVE_FINISHED = 1 << 2, /* finished_at = now */
};
/* Writes mv->phase (and the fields named) of move mv->id. */
int catalog_move_save(struct catalog *cat, const struct catalog_move *mv,
                      unsigned fields);
/*
 * The cut-over's flip, in one transaction: the shard's map row points to
 * mv->dst with state active, the map version goes up by one, and the move
 * records phase "switched" and mv->pause_ms.
 */
int catalog_move_flip(struct catalog *cat, const struct catalog_move *mv);
/* The newest moves first, at most max; *out is malloc'd (free it). */
int catalog_moves_list(struct catalog *cat, uint32_t max, struct catalog_move **out,
                       uint32_t *n);
/*
 * The source host of the shard's newest finished move that kept its source
 * copy, among those copies still there: not on the host the map names now,
 * and no later move of the shard into that host (which replaced the copy,
 * or dropped it when aborted). 1 found, 0 none, or a status.
 */
int catalog_move_kept_source(struct catalog *cat, uint32_t shard,
                             char host[SHARDMAP_NAME_MAX]);
/*
 * The unfinished move of a shard other than not_shard from host src into
 * host dst whose replication connection may exist or is still to come (its
 * phase is before "verified"): 1 found (into out), 0 none, or a status.
 */
int catalog_move_between(struct catalog *cat, const char *src, const char *dst,
                         uint32_t not_shard, struct catalog_move *out);
/*
 * Takes (take 1; BC_ELOCKWAIT after 10 s) or releases (take 0) the lock a
 * tool holds while it looks for moves between two hosts and records its own
 * (GET_LOCK "<prefix>_move_create"): two tools starting moves between the
 * same hosts at once do not both find the way free. Same executor rule as
 * catalog_lock_shard().
 */
int catalog_lock_move_create(struct catalog *cat, int take);
/*
 * Takes the shard's move lock (GET_LOCK) for the session: *got is 0 when
 * another session holds it. The server releases it when the session ends, so
 * the executor must be one connection of the caller's own.
 */
int catalog_lock_shard(struct catalog *cat, uint32_t shard, int *got);

/* ---- settlements (background jobs) --------------------------------------------- */

/*
 * A settlement is a job with a lease. Any API server may run it, one at a
 * time: a server claims a job whose lease expired or was never taken (one
 * conditional UPDATE: of servers racing for it exactly one wins), renews the
 * lease while it works, and releases it when it stops early or finishes it.
 * A server that dies stops renewing, and once the lease runs out another one
 * claims the job and goes on. Lease times are on the global host's clock
 * (UTC_TIMESTAMP(3)), so the servers' own clocks never matter.
 *
 * The counts are progress for people: the shards' own rows (bets and their
 * settled_matches guard rows) are the truth, recounted by the runner when it
 * claims a job and when it finishes it.
 */
#define CATALOG_LEASE_OWNER_MAX 128

struct catalog_settlement {
    uint64_t match_id;
    char result[16]; /* home, draw, away, cancelled */
    char state[16];  /* running, done */
    uint32_t shards_total;
    uint32_t shards_done;
    uint64_t bets_total; /* counted when a runner claims it; exact once done */
    uint64_t bets_settled;
    char lease_owner[CATALOG_LEASE_OWNER_MAX]; /* the last holder; "" none yet */
    int leased; /* 1 while a lease is held and not expired */
};
/*
 * Records a new job (state running, no lease). Run it over a transaction's
 * executor (router_txn_executor()) to record it with the match's result
 * atomically. BC_EDUPKEY when the match has one.
 */
int catalog_settlement_create(struct catalog *cat, uint64_t match_id,
                              const char *result, uint32_t shards_total);
/* 1 found (into out), 0 none, or a status. */
int catalog_settlement_get(struct catalog *cat, uint64_t match_id,
                           struct catalog_settlement *out);
/*
 * Up to max running jobs that nobody holds (lease expired or never taken),
 * oldest match first, into ids; *n how many. A job listed may be claimed by
 * another server before the caller claims it.
 */
int catalog_settlement_claimable(struct catalog *cat, uint64_t *ids, uint32_t max,
                                 uint32_t *n);
/*
 * Takes the lease of a running job for lease_ms if nobody holds it (expired
 * or never taken). One conditional UPDATE: of owners racing for a job, one
 * gets 1, the others 0. Returns 1 claimed, 0 not (held by another, done, or
 * no such job), or a status. owner names the process (name and a nonce of
 * its start): at most CATALOG_LEASE_OWNER_MAX - 1 bytes.
 */
int catalog_settlement_claim(struct catalog *cat, uint64_t match_id, const char *owner,
                             uint32_t lease_ms);
/*
 * Extends owner's lease to lease_ms from now, even if it expired meanwhile,
 * as long as nobody else claimed it. Returns 1 still held, 0 lost (another
 * owner claimed it, it was released, or it is done), or a status.
 */
int catalog_settlement_renew(struct catalog *cat, uint64_t match_id, const char *owner,
                             uint32_t lease_ms);
/* Ends owner's lease now (the job is claimable at once); not owner's: no-op. */
int catalog_settlement_release(struct catalog *cat, uint64_t match_id,
                               const char *owner);
/*
 * Adds shards and bets more done to the counts, while owner holds the job
 * (a runner that lost it must not count twice what its successor recounted).
 */
int catalog_settlement_advance(struct catalog *cat, uint64_t match_id,
                               const char *owner, uint32_t shards, uint64_t bets);
/* Sets the counts as recounted from the shards, while owner holds the job. */
int catalog_settlement_progress(struct catalog *cat, uint64_t match_id,
                                const char *owner, uint32_t shards_done,
                                uint64_t bets_settled, uint64_t bets_total);
/*
 * Every shard is settled: state done, finished_at now, the final counts
 * (bets_total = bets_settled: no bet is left open), the lease ended. Whoever
 * saw every shard's guard row may call it: being done is a fact of the
 * shards, not of the lease. A done job stays done (a second call: no-op).
 */
int catalog_settlement_finish(struct catalog *cat, uint64_t match_id,
                              uint32_t shards_done, uint64_t bets_settled);

#endif
