/*
 * shardctl_guard.h: what the guard's files share (shardctl_guard.c: the
 * topology and the loop; shardctl_failover.c: failover, fencing, rejoin and
 * switchover; shardctl_status.c: the servers' part of `shardctl status`).
 */
#ifndef SHARDCTL_GUARD_H
#define SHARDCTL_GUARD_H

#include <stdint.h>

#include "catalog/catalog.h"
#include "shardmap/shardmap.h"
#include "sql/sql.h"

/* One server of a host, as the guard last saw it. */
struct guard_server {
    char name[SHARDMAP_NAME_MAX];
    char addr[256];
    uint16_t port;
    enum catalog_role role;
    char note[256];
    struct sql_conn *c; /* NULL while not connected */
    /*
     * A primary's second connection, for what may wait on the server (the
     * heartbeat, a write, waits for an acknowledgement) or on its locks (a
     * KILL): a statement of it that misses its deadline drops it, never the
     * probes' connection c. NULL while not connected.
     */
    struct sql_conn *aux;
    uint32_t aux_id;      /* CONNECTION_ID() of aux */
    int64_t aux_retry_ms; /* no new aux before this (a connect failed) */
    uint32_t hb_waiting;  /* session of a heartbeat left waiting for its ACK, 0 none */
    int64_t ok_ms;        /* last answered probe (sql_now_ms), 0 never */
    int64_t lost_ms;      /* a replica: receives nothing from its primary since, or 0 */
    int read_only;
    int semi_sync;         /* rpl_semi_sync_master_enabled */
    uint32_t semi_clients; /* Rpl_semi_sync_master_clients: replicas it counts */
    uint32_t semi_waits;   /* Rpl_semi_sync_master_wait_sessions: commits waiting */
    /*
     * A primary: since when commits have waited for an acknowledgement with
     * its binlog at wait_pos (@@gtid_binlog_pos) all along, or 0.
     */
    int64_t wait_ms;
    char wait_pos[512];
    int replicating;   /* has a default replication connection */
    int moves_dropped; /* move connections were dropped: replicate from current_pos */
    struct sql_replica_status repl;
    char binlog_pos[512];  /* @@gtid_binlog_pos */
    char current_pos[512]; /* @@gtid_current_pos */
};

/* A host: a replication group. */
struct guard_group {
    char host[SHARDMAP_NAME_MAX];
    struct guard_server srv[1 + SHARDMAP_MAX_REPLICAS];
    uint32_t nsrv;
    uint32_t primary; /* index into srv */
    uint32_t domain;  /* gtid_domain_id of the group */
    /*
     * The first unanswered probe of the primary began then; 0 when it
     * answers, -1 when told there is no replica to promote.
     */
    int64_t down_since_ms;
    uint32_t nunanswered; /* probes of the primary unanswered in a row */
    int flip_pending;     /* promoted, but the catalog does not say so yet */
    int restore_refused;  /* guard_restore_writable() said why not; said once */
    unsigned reported_errno[1 + SHARDMAP_MAX_REPLICAS]; /* replication errors logged */
};

struct guard {
    const struct shardmap_conf *conf;
    int require_replica;
    struct guard_group *group;
    uint32_t ngroup;
    struct guard_group *global; /* holds <prefix>_global */
    uint64_t version;           /* map version last read */
    char global_schema[SHARDMAP_SCHEMA_MAX];
    char heartbeat_schema[SHARDMAP_SCHEMA_MAX];
    struct guard_server *locked; /* where guard_lock() took the lock */
};

void guard_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int guard_init(struct guard *g, const struct shardmap_conf *conf, int require_replica);
void guard_deinit(struct guard *g);
int guard_connect(struct guard *g, struct guard_group *gr, struct guard_server *s);
void guard_drop(struct guard_server *s);
int guard_exec(struct guard_server *s, struct sql_rows *rows, const char *fmt, ...);
/*
 * Removes from s, an old primary about to replicate again (or marked for
 * rebuild), the replication connections of moves into it
 * (<prefix>_move_NNNN): the new primary has none of them (a re-run says
 * so; --abort and a new move finish the shard), and one left would restart
 * with the server without its filter and apply its source's whole binlog,
 * the source's DROP of the moved shard too. Before its own replication
 * starts (removing one while another runs broke that one's relay log in
 * drills); s->moves_dropped then makes guard_replicate() take the position
 * it took with them there (current_pos). The number removed.
 */
int guard_drop_move_connections(struct guard *g, struct guard_group *gr,
                                struct guard_server *s);
/*
 * A replica whose I/O thread stopped on a relay log write failure (1595:
 * MariaDB's, seen when another replication connection of the server was
 * reset): its replication started again, which recovers it (the events are
 * fetched again from the position applied). 1 when it did so.
 */
int guard_relay_log_retry(struct guard_group *gr, struct guard_server *s);
int guard_probe(struct guard *g, struct guard_group *gr, struct guard_server *s);
/* The deadline of a probe, and of each statement on a primary's aux. */
uint32_t guard_probe_ms(const struct guard *g);
/* Runs a statement on s's aux connection (opened if need be), as guard_exec. */
int guard_aux_exec(struct guard *g, struct guard_group *gr, struct guard_server *s,
                   struct sql_rows *rows, const char *fmt, ...);
uint64_t guard_gtid_seq(const char *list, uint32_t domain);
struct guard_server *guard_server(struct guard_group *gr, const char *name);
int guard_catalog(struct guard *g, struct catalog *cat);
/*
 * Finds the global group's primary before the catalog can be read: the
 * writable server if there is one; else, at_start, the one whose catalog
 * has the highest map version, else the config's; else (a round) the one
 * it knew.
 */
void guard_find_global_primary(struct guard *g, int at_start);
int guard_load_roles(struct guard *g);
int guard_replicate(struct guard *g, struct guard_group *gr, struct guard_server *s,
                    struct guard_server *p);
void guard_replica_settle(struct guard_server *s);
int guard_replicates_from(const struct guard_server *s, const struct guard_server *p);
/* Why semi-sync waiting is looked at (guard_semi_sync()). */
enum guard_semi {
    GUARD_SEMI_START,    /* guard start: on, unless the catalog says unreplicated */
    GUARD_SEMI_ROUND,    /* each round: on when a replica replicates, never off */
    GUARD_SEMI_PROMOTED, /* a promotion: off when no replica is left */
};
void guard_semi_sync(struct guard *g, struct guard_group *gr, struct guard_server *p,
                     int live_replicas, enum guard_semi why);
/*
 * The topology lock (GET_LOCK on the global primary): the guard corrects
 * nothing while a switchover holds it. 1 taken, 0 busy, or a status.
 */
int guard_lock(struct guard *g, uint32_t wait_s);
void guard_unlock(struct guard *g);
/*
 * Writes p's heartbeat row on its aux connection within guard_probe_ms().
 * One that misses it is left to wait for its acknowledgement on the server
 * (hb_waiting), and no other is written until it is done. Returns 0
 * written, 1 not written (one waits still, or this one was left waiting),
 * or a status.
 */
int guard_heartbeat(struct guard *g, struct guard_group *gr, struct guard_server *p);
int guard_converge(struct guard *g, struct guard_group *gr);
/* Flips the catalog to gr's server s; the old primary gets old_role. */
int guard_flip(struct guard *g, struct guard_group *gr, struct guard_server *s,
               enum catalog_role old_role, const char *note);
/*
 * gr's primary answered read-only while the guard holds the topology lock
 * (no switchover under way): a switchover left unfinished is finished, else
 * the primary made writable again (guard_converge()'s way), unless a
 * replica has a transaction it lacks. Call after a round's probes of every
 * server of gr.
 */
void guard_restore_writable(struct guard *g, struct guard_group *gr);
int guard_setup(struct guard *g);

/* One round: probes, heartbeats, failovers, fencing and rejoins. */
void guard_tick(struct guard *g);

/* The commands; exit codes as shardctl.h's table. */
int shardctl_guard(const struct shardmap_conf *conf, int once, int require_replica);
int shardctl_switchover(const struct shardmap_conf *conf, const char *host);
/*
 * The servers table of `shardctl status` (text, or a ",\"servers\":[...]"
 * member of its JSON object): role, up, writable, replication, lag, note.
 * Returns 1 when a primary is down or read-only or a replica does not
 * replicate, else 0.
 */
int shardctl_servers_status(const struct shardmap_conf *conf, struct catalog *cat,
                            int json);

#endif
