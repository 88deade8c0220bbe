/*
 * reshard_int.h: what the move engine's own files share. Not an interface.
 */
#ifndef RESHARD_INT_H
#define RESHARD_INT_H

#include "reshard/reshard.h"
#include "sql/sql.h"

/* A move in progress (reshard_move.c; reshard_rebalance.c steers it too). */
struct reshard_move {
    const struct reshard_backend_ops *ops; /* ref in the backend */
    void *ctx;                             /* owned: the backend's move context */
    struct reshard_opts opts;
    uint32_t shard;
    struct catalog_move rec; /* the record, as last saved */
    enum reshard_phase phase;
    int resumed;        /* the record was there before this run */
    int defer_cleanup;  /* stop at verified (a rebalance's one grace period) */
    int keep_source;    /* the record's, or set when the copies differ */
    int prechecked;     /* compared in catch-up by this run */
    int cleanup_hooked; /* the cleanup hook ran in this run */
    int verify_failed;  /* the comparison at the fence found differences */
    int grace_waited;   /* this run waited out the grace period */
    int64_t pause_ms;   /* the longest write pause of this run's failed cut-overs */
    int64_t started_ms;
};

/* Sends ev to opts->on_event (if any), filling shard/move/from/to if unset. */
void reshard__emit(const struct reshard_opts *opts, const struct reshard_event *ev);
/* An ERROR event with a formatted sentence; returns status. */
int reshard__fail(const struct reshard_opts *opts, uint32_t shard, int status,
                  const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/*
 * Puts what the caller was doing in front of the message of the last error
 * (sql_last_error()), and returns rc.
 */
int reshard__context_error(int rc, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* A NOTE event with a formatted sentence. */
void reshard__note(const struct reshard_opts *opts, uint32_t shard, const char *fmt,
                   ...) __attribute__((format(printf, 3, 4)));
/* Calls opts->hook at a point, if any. */
void reshard__hook(const struct reshard_opts *opts, uint32_t shard,
                   enum reshard_point at);

/* ---- reshard_copy.c: the consistent snapshot copy of one shard schema ------- */

struct reshard__copy {
    /* in */
    const struct reshard_opts *opts; /* events, hook, copy_rate */
    uint32_t shard;
    const char *schema; /* "<prefix>_0007": checked with sql_ident_ok */
    /* out */
    struct sql_binlog_pos pos; /* the snapshot's source binlog position */
    char gtid[256];            /* the same position as a GTID list */
    uint64_t rows, total;
};
/*
 * Copies every base table of cp->schema but shard_state (each copy's own
 * fencing row) from one consistent snapshot of src (a connection of its own,
 * opened here) into dst, where the schema's tables exist and are empty.
 * Emits COPY events (at most every batch; the last one final) and calls the
 * hook at RESHARD_AT_COPY after the first batch. Keeps at or under
 * opts->copy_rate rows/s. 0 or a negative status (message in
 * sql_last_error()).
 */
int reshard__copy_shard(struct reshard__copy *cp, const struct sql_endpoint *src,
                        struct sql_conn *dst);

/* ---- reshard_compare.c: two snapshots of one shard, chunk by chunk ---------- */

/*
 * src and dst each hold a snapshot (a transaction WITH CONSISTENT SNAPSHOT)
 * of the same logical moment. Compares every table but shard_state in chunks
 * of about 2,000 rows by the first primary key column (count and XOR of
 * 64-bit row hashes); a differing chunk is listed row by row as DIFFERENCE
 * events (the first 50; all are counted). Emits VERIFY_PROGRESS events and,
 * at the end, one VERIFY event with `at`. 0 or a negative status.
 */
int reshard__compare(const struct reshard_opts *opts, uint32_t shard, const char *at,
                     struct sql_conn *src, struct sql_conn *dst, const char *schema,
                     struct reshard_compare *res);

/* Opens a connection holding a consistent snapshot (REPEATABLE READ). */
int reshard__snapshot(const struct sql_endpoint *ep, struct sql_conn **out);

/* The real backend (reshard_db.c): the cluster's config. */
struct reshard_db {
    const struct shardmap_conf *conf; /* ref */
};
/* A move's context in the real backend (reshard_db.c). */
struct reshard_db_ctx {
    struct reshard_db *be;
    const struct reshard_opts *opts; /* ref */
    uint32_t shard;
    char schema[SHARDMAP_SCHEMA_MAX];
    char chan[SHARDMAP_SCHEMA_MAX]; /* the target's replication connection */
    struct sql_conn *g;             /* the global host: lock and records */
    struct catalog cat;
    struct sql_endpoint from, to;
    struct sql_conn *src, *dst;
    struct sql_conn *snap; /* the target as of the fence, for the comparison */
    int64_t io_down_ms;    /* since when the replication's I/O thread is stopped */
};

/* The target's replication connection (reshard_db_repl.c): backend ops. */
int reshard__db_replicate(void *ctx, const struct catalog_move *mv);
int reshard__db_start_replication(void *ctx);
int reshard__db_lag(void *ctx, struct reshard_lag *lag);
int reshard__db_compare_in_flight(void *ctx, struct reshard_compare *res);

/*
 * A connection to the global host's writable server with a catalog over it,
 * the shard count checked and the catalog's tables installed (reshard_db.c).
 */
int reshard__open_global(const struct shardmap_conf *conf, struct sql_conn **g,
                         struct catalog *cat);
/* The backend's cluster operations (reshard_db_cluster.c), as its ops name them. */
int reshard__db_check_plan(void *be, const struct shardmap_plan *plan);
int reshard__db_add_host(void *be, struct shardmap_host_conf *h, int *added);
int reshard__db_remove_host(void *be, const char *name, int *removed);

#endif
