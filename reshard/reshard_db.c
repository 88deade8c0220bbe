/*
 * reshard_db.c: the real backend of the move engine: the catalog in
 * <prefix>_global, and the shard's source and target MariaDB servers.
 *
 * Each move has a context with three connections of its own: the global
 * host's (the shard's session lock and the move's records, through the
 * catalog), the source's and the target's (long deadlines: a copy or a
 * comparison may take minutes). Hosts with replicas (cluster.yaml
 * replicas:) log what a move writes, so that their replicas follow the
 * move: the target's copy (schema, rows, and what its replication
 * connection applies, with log_slave_updates) reaches the target's
 * replicas, semi-synchronously, before the cut-over; the source's fence and
 * unfence (its shard_state row) reach the source's, so that a replica
 * promoted in a cut-over is fenced as its primary was, and one promoted
 * after it is not; the source's DROP reaches the source's. The target's
 * replication connection ignores the source's shard_state (it would fence
 * or unfence the copy). Without replicas nothing is logged, as before.
 * See docs/operations.md.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mysqld_error.h>

#include "reshard/reshard_int.h"

#define CONNECT_MS 5000
#define GLOBAL_QUERY_MS 60000
#define HOST_QUERY_MS 3600000 /* a copy's statements, comparisons */
#define FENCE_WAIT_S 2        /* for transactions in flight on the source */
#define POS_WAIT_S 5          /* for the target to apply the last writes */

static const char *db_last_error(void *ctx)
{
    (void)ctx;
    return sql_last_error();
}

static int open_conn(const struct sql_endpoint *ep, uint32_t query_ms,
                     struct sql_conn **out)
{
    struct sql_conn_opts o = {.connect_timeout_ms = CONNECT_MS,
                              .query_timeout_ms = query_ms,
                              .multi_statements = 1};

    return sql_conn_open(ep, &o, out);
}

int reshard__open_global(const struct shardmap_conf *conf, struct sql_conn **g,
                         struct catalog *cat)
{
    struct sql_endpoint ep;
    struct sql_executor ex;
    int rc;

    /* The global host's writable server: after a failover not the config's. */
    if ((rc = catalog_global_endpoint(conf, &ep)) < 0)
        return rc;
    if ((rc = open_conn(&ep, GLOBAL_QUERY_MS, g)) < 0)
        return rc;
    sql_conn_executor(*g, &ex);
    catalog_init(cat, conf, &ex);
    /* A config of another shard count would name other schemas. */
    if ((rc = catalog_check_shards(cat, conf->global_host)) < 0 ||
        /* Clusters made before moves existed get the table here (idempotent). */
        (rc = catalog_install(cat)) < 0) {
        catalog_deinit(cat);
        sql_conn_close(*g);
        *g = NULL;
    }
    return rc;
}

static int db_begin(void *bep, uint32_t shard, const struct reshard_opts *opts,
                    void **out)
{
    struct reshard_db *be = bep;
    const struct shardmap_conf *conf = be->conf;
    struct reshard_db_ctx *c;
    int rc;

    if (shard >= conf->nshard) {
        sql_set_error("out of range: shard %u of 0..%u", shard, conf->nshard - 1);
        return BC_ESHARD;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return -ENOMEM;
    c->be = be;
    c->opts = opts;
    c->shard = shard;
    snprintf(c->schema, sizeof(c->schema), "%s_%04u", conf->schema_prefix, shard);
    snprintf(c->chan, sizeof(c->chan), "%s_move_%04u", conf->schema_prefix, shard);
    if ((rc = reshard__open_global(conf, &c->g, &c->cat)) < 0) {
        free(c);
        return rc;
    }
    *out = c;
    return 0;
}

static void db_end(void *ctx)
{
    struct reshard_db_ctx *c = ctx;

    if (c == NULL)
        return;
    sql_conn_close(c->snap);
    sql_conn_close(c->src);
    sql_conn_close(c->dst);
    catalog_deinit(&c->cat);
    sql_conn_close(c->g);
    free(c);
}

/* ---- catalog --------------------------------------------------------------------- */

static int db_lock(void *ctx, int *got)
{
    struct reshard_db_ctx *c = ctx;

    return catalog_lock_shard(&c->cat, c->shard, got);
}

static int db_load(void *ctx, struct catalog_move *mv)
{
    struct reshard_db_ctx *c = ctx;

    return catalog_move_active(&c->cat, c->shard, mv);
}

static int db_shard_host(void *ctx, char host[SHARDMAP_NAME_MAX])
{
    struct reshard_db_ctx *c = ctx;

    return catalog_shard_host(&c->cat, c->shard, host);
}

static int db_pair_busy(void *ctx, const struct catalog_move *mv,
                        struct catalog_move *other)
{
    struct reshard_db_ctx *c = ctx;

    return catalog_move_between(&c->cat, mv->src, mv->dst, mv->shard, other);
}

/* The check of pair_busy again, with the insert, under one lock for all tools. */
static int db_create(void *ctx, struct catalog_move *mv)
{
    struct reshard_db_ctx *c = ctx;
    struct catalog_move other;
    char msg[512];
    int rc;

    if ((rc = catalog_lock_move_create(&c->cat, 1)) < 0)
        return rc;
    rc = catalog_move_between(&c->cat, mv->src, mv->dst, mv->shard, &other);
    if (rc == 1) {
        sql_set_error("shard %u is moving from %s to %s", other.shard, other.src,
                      other.dst);
        rc = -EALREADY;
    } else if (rc == 0) {
        rc = catalog_move_create(&c->cat, mv);
    }
    snprintf(msg, sizeof(msg), "%s", sql_last_error());
    catalog_lock_move_create(&c->cat, 0);
    if (rc < 0)
        sql_set_error("%s", msg);
    return rc;
}

static int db_save(void *ctx, const struct catalog_move *mv, unsigned fields)
{
    struct reshard_db_ctx *c = ctx;

    return catalog_move_save(&c->cat, mv, fields);
}

static int db_set_state(void *ctx, enum shardmap_state state)
{
    struct reshard_db_ctx *c = ctx;

    return catalog_shard_set_state(&c->cat, c->shard, state);
}

static int db_flip(void *ctx, const struct catalog_move *mv)
{
    struct reshard_db_ctx *c = ctx;

    return catalog_move_flip(&c->cat, mv);
}

static int db_kept_source(void *ctx, char host[SHARDMAP_NAME_MAX])
{
    struct reshard_db_ctx *c = ctx;

    return catalog_move_kept_source(&c->cat, c->shard, host);
}

/* ---- hosts ------------------------------------------------------------------------
 */

/* Address from the catalog's hosts, the account by the config's rule. */
static int resolve(struct reshard_db_ctx *c, const char *name, struct sql_endpoint *ep)
{
    struct catalog_host h;
    int rc = catalog_host_get(&c->cat, name, &h);

    if (rc == BC_EHOST || rc == BC_ENOTFOUND) {
        sql_set_error("no host %s in the shard map (a new host enters it through "
                      "shardctl plan --add-host and rebalance)",
                      name);
        return BC_EHOST;
    }
    if (rc < 0)
        return rc;
    return sql_endpoint_of(c->be->conf, name, h.addr, h.port, ep);
}

/* Whether the config lists replicas of host name. */
static int has_replicas(const struct shardmap_conf *conf, const char *name)
{
    int i = shardmap_conf_host(conf, name);

    return i >= 0 && conf->hosts[i].nreplica > 0;
}

static int db_attach(void *ctx, const struct catalog_move *mv)
{
    struct reshard_db_ctx *c = ctx;
    int rc;

    if ((rc = resolve(c, mv->src, &c->from)) < 0 ||
        (rc = resolve(c, mv->dst, &c->to)) < 0)
        return rc;
    if ((rc = open_conn(&c->from, HOST_QUERY_MS, &c->src)) < 0 ||
        (rc = open_conn(&c->to, HOST_QUERY_MS, &c->dst)) < 0)
        return rc == BC_ETIMEOUT ? BC_EDOWN : rc;
    /* What goes to a binlog: see the top of this file. */
    if ((rc = sql_exec(c->src, NULL, "SET SESSION sql_log_bin = 0")) < 0 ||
        (rc = sql_exec(c->dst, NULL, "SET SESSION sql_log_bin = %u",
                       (uint64_t)has_replicas(c->be->conf, mv->dst))) < 0)
        return rc;
    return 0;
}

static int schema_exists(struct sql_conn *conn, const char *schema)
{
    char n[16];
    int rc = sql_value(conn, n, sizeof(n),
                       "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE "
                       "SCHEMA_NAME = %s",
                       schema);

    return rc < 0 ? rc : strcmp(n, "0") != 0;
}

static int db_target_live(void *ctx)
{
    struct reshard_db_ctx *c = ctx;
    char fenced[8];
    int rc = schema_exists(c->dst, c->schema);

    if (rc <= 0)
        return rc;
    rc = sql_value(c->dst, fenced, sizeof(fenced),
                   "SELECT fenced FROM %I.shard_state WHERE id = 1", c->schema);
    if (rc < 0 && rc != BC_ENOSCHEMA)
        return rc;
    if (rc == 1 && strcmp(fenced, "1") == 0) {
        reshard__note(c->opts, c->shard,
                      "shard %u: dropping the retired copy of %s on %s", c->shard,
                      c->schema, c->to.name);
        return 0;
    }
    return 1;
}

/*
 * The move's replication connection gone from the target, checked: one left
 * behind would apply the source's DROP of the schema (logged where the
 * source has replicas) to the live copy, and MariaDB refuses a second
 * connection to the same source, the next move's between these hosts.
 */
static int db_drop_channel(void *ctx)
{
    struct reshard_db_ctx *c = ctx;
    struct sql_replica_status st;
    int rc = sql_replica_status(c->dst, c->chan, &st);

    if (rc == BC_ENOTFOUND)
        return 0;
    if (rc == 0 && (rc = sql_exec(c->dst, NULL, "STOP SLAVE %s", c->chan)) == 0)
        rc = sql_exec(c->dst, NULL, "RESET SLAVE %s ALL", c->chan);
    if (rc == 0 && (rc = sql_replica_status(c->dst, c->chan, &st)) == 0) {
        sql_set_error("host %s: the replication connection %s is still there",
                      c->to.name, c->chan);
        rc = BC_EQUERY;
    }
    return rc == BC_ENOTFOUND ? 0 : rc;
}

/* Copies the shard's sequence position: ids made on the target stay unique. */
static int copy_sequence(struct reshard_db_ctx *c)
{
    char next[32];
    int rc = sql_value(c->src, next, sizeof(next),
                       "SELECT next_not_cached_value FROM %I.id_seq", c->schema);

    if (rc < 0)
        return rc;
    if (rc == 1)
        rc = sql_exec(c->dst, NULL, "DO SETVAL(%I.id_seq, %u)", c->schema,
                      (uint64_t)strtoull(next, NULL, 10));
    return rc < 0 ? rc : 0;
}

static int db_copy(void *ctx, struct catalog_move *mv)
{
    struct reshard_db_ctx *c = ctx;
    struct reshard__copy cp = {.opts = c->opts, .shard = c->shard, .schema = c->schema};
    int rc;

    if ((rc = db_drop_channel(c)) < 0 ||
        (rc = sql_exec(c->dst, NULL, "DROP DATABASE IF EXISTS %I", c->schema)) < 0)
        return rc;
    /* The tables, then at once the fence, up (fenced) before any row. */
    if ((rc = reshard_shard_install(c->dst, c->schema, c->shard, 1)) < 0)
        return rc;
    if ((rc = sql_exec(c->dst, NULL, "SET @bc_move_copy = 1")) < 0 ||
        (rc = reshard__copy_shard(&cp, &c->from, c->dst)) < 0 ||
        (rc = sql_exec(c->dst, NULL, "SET @bc_move_copy = NULL")) < 0)
        return rc;
    if ((rc = copy_sequence(c)) < 0)
        return rc;
    snprintf(mv->binlog_file, sizeof(mv->binlog_file), "%s", cp.pos.file);
    mv->binlog_pos = cp.pos.pos;
    snprintf(mv->snapshot_gtid, sizeof(mv->snapshot_gtid), "%s", cp.gtid);
    mv->rows_copied = cp.rows;
    return 0;
}

/* The source session's binlog on (1) where the source has replicas, or off (0). */
static int source_log(struct reshard_db_ctx *c, int on)
{
    if (!has_replicas(c->be->conf, c->from.name))
        return 0;
    return sql_exec(c->src, NULL, "SET SESSION sql_log_bin = %d", (int64_t)on);
}

/* The source's fence set (1) or lifted (0), logged (the top of this file). */
static int source_fence(struct reshard_db_ctx *c, int fenced)
{
    int rc = source_log(c, 1);

    if (rc == 0)
        rc =
            sql_exec(c->src, NULL,
                     "SET SESSION innodb_lock_wait_timeout = %d; UPDATE %I.shard_state "
                     "SET fenced = %d WHERE id = 1",
                     (int64_t)FENCE_WAIT_S, c->schema, (int64_t)fenced);
    (void)source_log(c, 0);
    return rc;
}

static int db_fence(void *ctx)
{
    struct reshard_db_ctx *c = ctx;

    /* Connected before the pause: the snapshot for the comparison. */
    if (!c->opts->no_verify && c->snap == NULL &&
        open_conn(&c->to, HOST_QUERY_MS, &c->snap) < 0)
        c->snap = NULL;
    /*
     * The fence waits for the share locks of every transaction that wrote
     * to the shard; from its commit on, no write commits on the source.
     */
    return source_fence(c, 1);
}

static int db_drain(void *ctx)
{
    struct reshard_db_ctx *c = ctx;
    struct sql_binlog_pos pos;
    char waited[32];
    int rc;

    if ((rc = sql_master_pos(c->src, &pos)) < 0)
        return rc;
    /* NULL: the applier is not running; started again (no error) once. */
    for (int tries = 0;; tries++) {
        struct reshard_lag lag;
        rc = sql_value(c->dst, waited, sizeof(waited),
                       "SELECT MASTER_POS_WAIT(%s, %u, %d, %s)", pos.file, pos.pos,
                       (int64_t)POS_WAIT_S, c->chan);
        if (rc < 0)
            return rc;
        if (rc == 1)
            break;
        if ((rc = reshard__db_lag(c, &lag)) < 0)
            return rc;
        if (tries == 1) {
            sql_set_error("replication is not running on the target");
            return BC_EQUERY;
        }
    }
    return strcmp(waited, "-1") == 0 ? BC_ETIMEOUT : 0;
}

static int db_switch_target(void *ctx)
{
    struct reshard_db_ctx *c = ctx;
    int rc;

    if ((rc = sql_exec(c->dst, NULL, "STOP SLAVE %s", c->chan)) < 0 ||
        (rc = copy_sequence(c)) < 0 ||
        (rc =
             sql_exec(c->dst, NULL, "UPDATE %I.shard_state SET fenced = 0 WHERE id = 1",
                      c->schema)) < 0)
        return rc;
    /* The target exactly as of the fence, for the comparison. */
    if (c->snap != NULL &&
        sql_exec(c->snap, NULL,
                 "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ; "
                 "START TRANSACTION WITH CONSISTENT SNAPSHOT") < 0) {
        sql_conn_close(c->snap);
        c->snap = NULL;
    }
    return 0;
}

static int db_unfence_source(void *ctx)
{
    return source_fence(ctx, 0);
}

static int db_compare_at_fence(void *ctx, struct reshard_compare *res)
{
    struct reshard_db_ctx *c = ctx;
    int rc;

    if (c->snap == NULL)
        return BC_ENOTFOUND;
    rc = reshard__compare(c->opts, c->shard, "fence", c->src, c->snap, c->schema, res);
    sql_conn_close(c->snap);
    c->snap = NULL;
    return rc;
}

static int db_compare_copies(void *ctx, struct reshard_compare *res)
{
    struct reshard_db_ctx *c = ctx;
    struct sql_conn *a = NULL, *b = NULL;
    int rc;

    if ((rc = reshard__snapshot(&c->from, &a)) == 0 &&
        (rc = reshard__snapshot(&c->to, &b)) == 0)
        rc = reshard__compare(c->opts, c->shard, "copies", a, b, c->schema, res);
    sql_conn_close(a);
    sql_conn_close(b);
    return rc;
}

static int db_drop_source(void *ctx)
{
    struct reshard_db_ctx *c = ctx;
    int rc;

    /* Logged where replicas must drop it too (the move's connection is gone). */
    if ((rc = source_log(c, 1)) == 0)
        rc = sql_exec(c->src, NULL, "DROP DATABASE IF EXISTS %I", c->schema);
    (void)source_log(c, 0);
    return rc;
}

static int db_drop_target(void *ctx)
{
    struct reshard_db_ctx *c = ctx;

    return sql_exec(c->dst, NULL, "DROP DATABASE IF EXISTS %I", c->schema);
}

static const struct reshard_backend_ops db_ops = {
    .begin = db_begin,
    .end = db_end,
    .last_error = db_last_error,
    .lock = db_lock,
    .load = db_load,
    .shard_host = db_shard_host,
    .pair_busy = db_pair_busy,
    .create = db_create,
    .save = db_save,
    .set_state = db_set_state,
    .flip = db_flip,
    .kept_source = db_kept_source,
    .attach = db_attach,
    .target_live = db_target_live,
    .copy = db_copy,
    .replicate = reshard__db_replicate,
    .start_replication = reshard__db_start_replication,
    .lag = reshard__db_lag,
    .compare_in_flight = reshard__db_compare_in_flight,
    .fence = db_fence,
    .drain = db_drain,
    .switch_target = db_switch_target,
    .unfence_source = db_unfence_source,
    .compare_at_fence = db_compare_at_fence,
    .compare_copies = db_compare_copies,
    .drop_channel = db_drop_channel,
    .drop_source = db_drop_source,
    .drop_target = db_drop_target,
    .check_plan = reshard__db_check_plan,
    .add_host = reshard__db_add_host,
    .remove_host = reshard__db_remove_host,
};

int reshard_backend_db_create(const struct shardmap_conf *conf,
                              struct reshard_backend *out)
{
    struct reshard_db *be = calloc(1, sizeof(*be));

    if (be == NULL)
        return -ENOMEM;
    be->conf = conf;
    out->ops = &db_ops;
    out->be = be;
    return 0;
}

void reshard_backend_db_destroy(struct reshard_backend *b)
{
    free(b->be);
    b->be = NULL;
}
