/*
 * reshard.h: moving logical shards between hosts while they serve.
 *
 * A move is an explicit phase machine whose phase is recorded in the
 * catalog before each step's effects, so a move killed at any point is
 * resumed (or, before the map flip, rolled back) by running it again:
 *
 *   prepare   the move is recorded (one unfinished move per shard) and the
 *             shard's map state is "moving"
 *   copy      the schema is created on the target, fenced, and filled from
 *             one consistent snapshot of the source
 *   copied    the target replicates the one schema from the snapshot's
 *             binlog position (a named multi-source connection)
 *   catchup   replication runs until the target is close behind; the copies
 *             are compared at one binlog position while clients write
 *   cutover   the source is fenced, the target applies up to the fence,
 *             replication stops, and one catalog transaction flips the map
 *   switched  the target's snapshot at the fence is compared with the frozen
 *             source, chunk by chunk
 *   verified  after a grace period the source copy is dropped (or kept)
 *   cleanup   the grace period is running
 *   done / aborted
 *
 * Everything the machine does to the world goes through a struct
 * reshard_backend: reshard_backend_db() is the real one (the catalog and
 * MariaDB); tests give a fake one. Progress and results come out as events
 * through a callback (the CLI draws progress bars or prints JSON from them);
 * tests and drills may stop a move at named points through a hook. The
 * library reads no environment variable and handles no signal.
 *
 * Thread safety: one move runs on one thread; a rebalance runs its moves on
 * threads of its own and calls the callbacks from them (serialize in them).
 */
#ifndef RESHARD_H
#define RESHARD_H

#include <stdint.h>

#include "catalog/catalog.h"
#include "sql/sql.h"
#include "shardmap/shardmap.h"

enum reshard_phase {
    RESHARD_PREPARE,
    RESHARD_COPY,
    RESHARD_COPIED,
    RESHARD_CATCHUP,
    RESHARD_CUTOVER,
    RESHARD_SWITCHED,
    RESHARD_VERIFIED,
    RESHARD_CLEANUP,
    RESHARD_DONE,
    RESHARD_ABORTED,
    RESHARD_NPHASE
};
/* The name recorded in the catalog ("catchup"); never NULL. */
const char *reshard_phase_name(enum reshard_phase phase);
/* 0 and *out, or -EINVAL for a name that is no phase. */
int reshard_phase_parse(const char *name, enum reshard_phase *out);

/* ---- events ---------------------------------------------------------------- */

enum reshard_event_kind {
    RESHARD_EV_PHASE,      /* a phase was recorded */
    RESHARD_EV_COPY,       /* copy progress */
    RESHARD_EV_CATCHUP,    /* replication lag, about twice a second */
    RESHARD_EV_CUTOVER,    /* the flip, with the pause and its parts */
    RESHARD_EV_DIFFERENCE, /* one row that differs between the copies */
    RESHARD_EV_VERIFY,     /* a comparison finished (or was skipped) */
    RESHARD_EV_VERIFY_PROGRESS,
    RESHARD_EV_DONE,      /* the move finished */
    RESHARD_EV_NOTE,      /* a sentence for people (text) */
    RESHARD_EV_ERROR,     /* the move failed (text) */
    RESHARD_EV_REBALANCE, /* a plan's move finished (counts) */
    RESHARD_EV_REBALANCE_DONE,
    RESHARD_EV_HOST_ADDED,   /* host */
    RESHARD_EV_HOST_REMOVED, /* host */
};

/* The shard of an event about the whole cluster (a rebalance's). */
#define RESHARD_NO_SHARD UINT32_MAX

struct reshard_event {
    enum reshard_event_kind kind;
    uint32_t shard;   /* RESHARD_NO_SHARD: about no one shard */
    uint64_t move;    /* the move's id, 0 when not known */
    const char *from; /* host names, may be "" */
    const char *to;
    const char *text;         /* NOTE, ERROR; HOST_*: the host */
    enum reshard_phase phase; /* PHASE */
    int final;                /* COPY, VERIFY_PROGRESS: the last report */
    struct {
        const char *table; /* COPY: being copied; DIFFERENCE: the row's */
        uint64_t rows, total;
        double rate, eta_s;
    } copy;
    struct {
        int64_t lag_bytes; /* -1: the target reads an older binlog file */
        long behind_s;
        int postponed;
    } catchup;
    struct {
        int64_t pause_ms, fence_ms, drain_ms, switch_ms, flip_ms;
        int attempt;
    } cutover;
    struct {
        const char *at;   /* "catchup", "fence", "copies" */
        const char *key;  /* DIFFERENCE: primary key */
        const char *what; /* DIFFERENCE: how it differs */
        uint32_t tables, ntable, chunks, diffs;
        uint64_t rows;
        double seconds;
        int recorded; /* the comparison recorded in catch-up, not a new one */
        int skipped;
    } verify;
    struct {
        double seconds;
        int64_t pause_ms;
        uint32_t verify_diffs;
    } done;
    struct {
        uint32_t done, total, failed;
        double seconds;
    } rebalance;
};
typedef void (*reshard_event_fn)(void *arg, const struct reshard_event *ev);

/* Points where a hook may stop a move (drills, tests of crashes). */
enum reshard_point {
    RESHARD_AT_COPY,     /* after the first batch of the copy */
    RESHARD_AT_CATCHUP,  /* entering catch-up */
    RESHARD_AT_FENCED,   /* the source just fenced: writes wait */
    RESHARD_AT_SWITCHED, /* after the flip */
    RESHARD_AT_CLEANUP,  /* before the source copy is dropped */
    RESHARD_NPOINT
};
const char *reshard_point_name(enum reshard_point at);
int reshard_point_parse(const char *name, enum reshard_point *out);
/* Called at each point; it may block as long as it likes. */
typedef void (*reshard_hook_fn)(void *arg, uint32_t shard, enum reshard_point at);

struct reshard_opts {
    int keep_source;    /* leave the fenced source copy in place */
    int no_verify;      /* skip both comparisons */
    unsigned grace_s;   /* before the source copy is dropped (5) */
    uint64_t copy_rate; /* rows/s cap of the copy, 0: none */
    unsigned parallel;  /* rebalance: moves at a time, 1..16 */
    /* While it returns 1, a caught-up move waits before its cut-over. */
    int (*postpone)(void *arg);
    void *postpone_arg;
    reshard_event_fn on_event; /* may be NULL */
    void *event_arg;
    reshard_hook_fn hook; /* may be NULL */
    void *hook_arg;
};
/* Zeroes opts and sets the defaults (grace 5 s, parallel 1). */
void reshard_opts_init(struct reshard_opts *opts);

/* ---- the backend: everything a move does to the world ------------------------- */

struct reshard_lag {
    int64_t bytes; /* -1: the target reads an older binlog file than the source's */
    long behind_s;
};

struct reshard_compare {
    uint32_t tables, chunks, diffs;
    uint64_t rows;
};

/*
 * What a move needs done. Every function returns 0 or a negative status
 * (the message in sql_last_error() or the backend's own buffer, see
 * last_error). ctx is the move's own context from begin(): its catalog
 * connection (which holds the shard's lock) and its host connections.
 */
struct reshard_backend_ops {
    /* A move's context; the lock, records and hosts below go through it. */
    int (*begin)(void *be, uint32_t shard, const struct reshard_opts *opts, void **ctx);
    void (*end)(void *ctx);
    const char *(*last_error)(void *ctx);

    /* catalog */
    int (*lock)(void *ctx, int *got);
    int (*load)(void *ctx, struct catalog_move *mv); /* 1 found, 0 none */
    int (*shard_host)(void *ctx, char host[SHARDMAP_NAME_MAX]);
    /*
     * Another shard's unfinished move from mv->src into mv->dst whose
     * replication connection may exist or is still to come (before
     * "verified"): 1 and *other, 0 none. MariaDB takes one connection per
     * source host on a target, and one started later from an older snapshot
     * could not apply what the target logged meanwhile (log_slave_updates,
     * gtid_strict_mode).
     */
    int (*pair_busy)(void *ctx, const struct catalog_move *mv,
                     struct catalog_move *other);
    /* BC_EEXISTS; -EALREADY when pair_busy() would now say 1 (a race) */
    int (*create)(void *ctx, struct catalog_move *mv);
    int (*save)(void *ctx, const struct catalog_move *mv, unsigned fields);
    int (*set_state)(void *ctx, enum shardmap_state state);
    int (*flip)(void *ctx, const struct catalog_move *mv);
    /* The host of a copy a finished move kept, still there and not the
     * live one (catalog_move_kept_source): 1, 0 none. */
    int (*kept_source)(void *ctx, char host[SHARDMAP_NAME_MAX]);

    /* hosts: connect to mv->src and mv->dst (BC_EHOST, BC_EDOWN) */
    int (*attach)(void *ctx, const struct catalog_move *mv);
    /* 1 when the target holds a copy that is not a fenced, retired one */
    int (*target_live)(void *ctx);
    /* copy: a fresh fenced schema on the target from one source snapshot;
     * fills binlog_file/pos, snapshot_gtid, rows_copied of mv */
    int (*copy)(void *ctx, struct catalog_move *mv);
    /* the target fenced, its triggers, replication from mv's position */
    int (*replicate)(void *ctx, const struct catalog_move *mv);
    int (*start_replication)(void *ctx);
    int (*lag)(void *ctx, struct reshard_lag *lag);
    /* both copies at one binlog position while clients write */
    int (*compare_in_flight)(void *ctx, struct reshard_compare *res);
    /* the source fenced; BC_ELOCKWAIT when writers held it too long */
    int (*fence)(void *ctx);
    /* the target applied up to the fence; BC_ETIMEOUT when it did not */
    int (*drain)(void *ctx);
    /* replication stopped, the id sequence moved, the target unfenced, a
     * snapshot of it taken for compare_at_fence */
    int (*switch_target)(void *ctx);
    int (*unfence_source)(void *ctx);
    /* the target's snapshot at the fence against the frozen source;
     * BC_ENOTFOUND when there is no snapshot (a resumed run) */
    int (*compare_at_fence)(void *ctx, struct reshard_compare *res);
    /* a copy on host (mv->src) against the live one (mv->dst) */
    int (*compare_copies)(void *ctx, struct reshard_compare *res);
    int (*drop_channel)(void *ctx);
    int (*drop_source)(void *ctx);
    int (*drop_target)(void *ctx);

    /* the cluster, for rebalance (no move context) */
    int (*check_plan)(void *be, const struct shardmap_plan *plan);
    /* h's address becomes the one the map took (its primary's, after a failover) */
    int (*add_host)(void *be, struct shardmap_host_conf *h, int *added);
    int (*remove_host)(void *be, const char *name, int *removed);
};

struct reshard_backend {
    const struct reshard_backend_ops *ops;
    void *be; /* the backend's own state */
};

/*
 * The real backend: the cluster of conf (borrowed; it must outlive the
 * backend). Connections are opened per move. 0 or a negative status.
 */
int reshard_backend_db_create(const struct shardmap_conf *conf,
                              struct reshard_backend *out);
void reshard_backend_db_destroy(struct reshard_backend *b);

/*
 * Creates shard's schema on the connection's host if missing (the tables of
 * etc/schema/shard.sql), its state row (fenced or not; an existing row is
 * kept) and the fencing triggers of etc/schema/shard_fence.sql. Idempotent.
 * The connection must allow several statements.
 */
int reshard_shard_install(struct sql_conn *c, const char *schema, uint32_t shard,
                          int fenced);

/* ---- moves -------------------------------------------------------------------- */

/* Outcomes of the commands below, beyond 0 and negative statuses. */
enum {
    RESHARD_OK = 0,
    RESHARD_DIFFER = 1,  /* the comparison found differences */
    RESHARD_NOTHING = 2, /* nothing to do (already there, no unfinished move) */
};
/*
 * Status codes of failures: -EBUSY another tool moves the shard right now;
 * -EALREADY another shard's move between the same two hosts is unfinished
 * (a new move starts only after it); BC_EEXISTS the shard has an unfinished
 * move to another host; BC_ESHARD no such shard; -EINVAL a usage problem (no
 * target host); BC_EDOWN a host cannot be reached. The message of every
 * failure was sent as an ERROR event before the call returned.
 */

struct reshard_move; /* opaque */

/*
 * A move of shard to host `to`, or the resumption of the shard's unfinished
 * move (to NULL, or the same host). Claims the shard: its lock, then its
 * record. Returns 0 (*out set), RESHARD_NOTHING (no move: *out NULL) or a
 * negative status. The backend is borrowed.
 */
int reshard_move_create(const struct reshard_backend *b, uint32_t shard, const char *to,
                        const struct reshard_opts *opts, struct reshard_move **out);
/*
 * Runs one step from the recorded phase; returns 1 while steps remain, 0 once
 * the move is done (or is left at verified/cleanup when cleanup is deferred),
 * or a negative status (the phase stays recorded: running again resumes).
 */
int reshard_move_step(struct reshard_move *m);
/* Steps to the end: 0, RESHARD_DIFFER or a negative status. */
int reshard_move_run(struct reshard_move *m);
/* Rolls back a move before its flip: 0, or a negative status. */
int reshard_move_abort(struct reshard_move *m);
enum reshard_phase reshard_move_phase(const struct reshard_move *m);
const struct catalog_move *reshard_move_record(const struct reshard_move *m);
/* Stop at "verified" instead of cleaning up (a rebalance's one grace). */
void reshard_move_defer_cleanup(struct reshard_move *m, int defer);
void reshard_move_destroy(struct reshard_move *m);

/* shardctl move: create + run (or abort). 0, RESHARD_DIFFER, NOTHING, <0. */
int reshard_move(const struct reshard_backend *b, uint32_t shard, const char *to,
                 int abort, const struct reshard_opts *opts);

/*
 * Runs a plan: refuses a stale plan (BC_EMISMATCH: its base version is not
 * the map's), adds its new host, runs its moves opts->parallel at a time
 * (never two between one pair of hosts), one grace period for all, then the
 * cleanups, and removes hosts the plan drained. A failed move is resumed
 * once; one that fails again unfinished before "verified" (its replication
 * perhaps in place, or to come) keeps the plan's other moves between its
 * two hosts from starting (-ECANCELED).
 * 0, RESHARD_DIFFER, or <0.
 */
int reshard_rebalance(const struct reshard_backend *b, const struct shardmap_plan *plan,
                      const struct reshard_opts *opts);

/*
 * Compares two copies of a shard: a move in catch-up at one binlog position,
 * else the live copy with `against` (default: the source a finished move
 * kept). 0 equal, RESHARD_DIFFER, or a negative status (-EINVAL: nothing to
 * compare it with).
 */
int reshard_verify(const struct reshard_backend *b, uint32_t shard, const char *against,
                   const struct reshard_opts *opts, struct reshard_compare *res);

#endif
