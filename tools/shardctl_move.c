/*
 * shardctl_move.c: moving a logical shard to another host while it serves.
 *
 *   prepare   the move is recorded in <prefix>_global.moves (one unfinished
 *             move per shard: a unique key) and the shard's map state is
 *             "moving"
 *   copy      the schema is created on the target and filled from one
 *             consistent snapshot of the source (shardctl_copy.c)
 *   copied    the snapshot's binlog position is recorded; the target starts
 *             replicating the one schema from there over a named
 *             multi-source connection (replicate_do_db)
 *   catchup   replication runs until the target is close behind
 *   cutover   the source copy is fenced (shard_state.fenced = 1, see
 *             etc/schema/shard_fence.sql), the target applies up to the
 *             source's binlog position after the fence, replication stops,
 *             and one global transaction flips the map and records "switched"
 *   switched  the target's snapshot at the fence is compared with the frozen
 *             source, chunk by chunk (shardctl_verify.c)
 *   verified  after a grace period (stale servers follow the map) the source
 *             copy is dropped, unless it is kept
 *   done
 *
 * The phase is written before each step's effects, and every step can run
 * again from its start, so a re-run after kill -9 resumes where the move
 * stopped. Before the map flip a move can also be rolled back (--abort).
 * A session lock (GET_LOCK, released by the server when the tool dies) keeps
 * two tools off one shard.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <mysqld_error.h>

#include "tools/shardctl.h"

#define CATCHUP_BYTES (256 * 1024) /* close enough behind to cut over */
#define CUTOVER_ATTEMPTS 5
#define FENCE_WAIT_S 2 /* for transactions in flight on the source */
#define POS_WAIT_S 5   /* for the target to apply the last writes */
#define LONG_TIMEOUT_S 3600

struct move {
    const struct shardmap_conf *conf;
    struct sc_out *out;
    const struct sc_move_opts *opts;
    uint32_t shard;
    char schema[SHARDMAP_PREFIX_MAX + 16];
    char gschema[SHARDMAP_PREFIX_MAX + 16];
    char chan[64]; /* the target's replication connection */
    struct sc_host from, to;
    struct sc_conn g, src, dst, snap; /* snap: the target at the fence */
    int have_snap, keep_source, defer_cleanup;
    uint64_t id;
    char phase[16];
    char binlog_file[256];
    uint64_t binlog_pos;
    int64_t started_ms, pause_ms;
    struct sc_verify_result verify;
    int verify_failed;
    int prechecked;    /* compared in catch-up by this run */
    int64_t pre_diffs; /* the recorded comparison in catch-up; -1: none */
    char err[1024];
};

static int verify_in_flight(struct move *m, struct sc_conn *a, struct sc_conn *b);

void sc_hold(struct sc_out *o, uint32_t shard, const char *point)
{
    const char *hold = getenv("BC_SHARDCTL_HOLD");

    if (hold == NULL || strcmp(hold, point) != 0)
        return;
    sigset_t usr1;
    int sig = 0;

    /* main() blocked SIGUSR1 in every thread when the hook is set. */
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    sc_event(o, "hold", "\"shard\":%u,\"at\":\"%s\"", shard, point);
    sc_say(o, "shard %u: holding at %s (BC_SHARDCTL_HOLD) until SIGUSR1 or killed",
           shard, point);
    while (sigwait(&usr1, &sig) != 0 || sig != SIGUSR1)
        ;
    sc_event(o, "resume", "\"shard\":%u,\"at\":\"%s\"", shard, point);
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};

    nanosleep(&ts, NULL);
}

static void fail(struct move *m, const char *fmt, const char *detail)
{
    snprintf(m->err, sizeof(m->err), fmt, detail);
}

/* Address from the global hosts table, credentials from the config. */
static int resolve_host(struct move *m, const char *name, struct sc_host *h)
{
    char addr[256], port[16];
    int i, found;

    found = sc_value(&m->g, addr, sizeof(addr),
                     "SELECT addr FROM `%s`.hosts WHERE name = '%s'", m->gschema, name);
    if (found == 1)
        found =
            sc_value(&m->g, port, sizeof(port),
                     "SELECT port FROM `%s`.hosts WHERE name = '%s'", m->gschema, name);
    if (found < 0) {
        fail(m, "%s", m->g.err);
        return -1;
    }
    if (found == 0) {
        snprintf(m->err, sizeof(m->err), "no host %s in the shard map", name);
        return -1;
    }
    memset(h, 0, sizeof(*h));
    snprintf(h->name, sizeof(h->name), "%s", name);
    snprintf(h->addr, sizeof(h->addr), "%s", addr);
    h->port = (uint16_t)strtoul(port, NULL, 10);
    i = shardmap_conf_host(m->conf, name);
    if (i < 0) /* not in the config: the global host's account, as the router does */
        i = shardmap_conf_host(m->conf, m->conf->global_host);
    if (i < 0)
        i = 0;
    snprintf(h->user, sizeof(h->user), "%s", m->conf->hosts[i].user);
    snprintf(h->password, sizeof(h->password), "%s", m->conf->hosts[i].password);
    return 0;
}

static int connect_global(struct move *m)
{
    struct sc_host h = {0};
    int i = shardmap_conf_host(m->conf, m->conf->global_host);
    char *sql;
    int rc;

    if (i < 0) {
        snprintf(m->err, sizeof(m->err), "global host %s is not in the config",
                 m->conf->global_host);
        return -1;
    }
    snprintf(h.name, sizeof(h.name), "%s", m->conf->hosts[i].name);
    snprintf(h.addr, sizeof(h.addr), "%s", m->conf->hosts[i].addr);
    h.port = m->conf->hosts[i].port;
    snprintf(h.user, sizeof(h.user), "%s", m->conf->hosts[i].user);
    snprintf(h.password, sizeof(h.password), "%s", m->conf->hosts[i].password);
    if (sc_connect(&m->g, &h, 60) < 0) {
        fail(m, "%s", m->g.err);
        return -1;
    }
    /* Clusters made before moves existed get the table here (idempotent). */
    sql = shardctl_render(shardctl_global_sql, m->gschema);
    if (sql == NULL)
        return -1;
    rc = sc_exec(&m->g, "%s", sql);
    free(sql);
    if (rc < 0)
        fail(m, "%s", m->g.err);
    return rc;
}

static int set_phase(struct move *m, const char *phase, const char *extra)
{
    if (sc_exec(&m->g, "UPDATE `%s`.moves SET phase = '%s'%s WHERE id = %" PRIu64,
                m->gschema, phase, extra ? extra : "", m->id) < 0) {
        fail(m, "recording the move: %s", m->g.err);
        return -1;
    }
    snprintf(m->phase, sizeof(m->phase), "%s", phase);
    sc_event(m->out, "phase",
             "\"move\":%" PRIu64 ",\"shard\":%u,\"from\":\"%s\",\"to\":\"%s\","
             "\"phase\":\"%s\"",
             m->id, m->shard, m->from.name, m->to.name, phase);
    sc_say(m->out, "shard %u: %s (%s -> %s)", m->shard, phase, m->from.name,
           m->to.name);
    return 0;
}

static int map_host(struct move *m, char *host, size_t size)
{
    int found =
        sc_value(&m->g, host, size, "SELECT host FROM `%s`.shard_map WHERE shard = %u",
                 m->gschema, m->shard);
    if (found <= 0) {
        fail(m, "reading the shard map: %s",
             found < 0 ? m->g.err : "no row for the shard");
        return -1;
    }
    return 0;
}

static int schema_exists(struct sc_conn *c, const char *schema)
{
    char n[16];

    if (sc_value(c, n, sizeof(n),
                 "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE "
                 "SCHEMA_NAME = '%s'",
                 schema) < 0)
        return -1;
    return strcmp(n, "0") != 0;
}

/* Stops and forgets the target's replication connection of this move. */
static void drop_channel(struct move *m)
{
    if (sc_exec(&m->dst, "STOP SLAVE '%s'", m->chan) == 0)
        sc_exec(&m->dst, "RESET SLAVE '%s' ALL", m->chan);
}

/* Copies the shard's sequence position: ids made on the target stay unique. */
static int copy_sequence(struct move *m)
{
    char next[32];
    int found = sc_value(&m->src, next, sizeof(next),
                         "SELECT next_not_cached_value FROM `%s`.id_seq", m->schema);

    if (found < 0) {
        fail(m, "reading the id sequence: %s", m->src.err);
        return -1;
    }
    if (found == 1 &&
        sc_exec(&m->dst, "DO SETVAL(`%s`.id_seq, %s)", m->schema, next) < 0) {
        fail(m, "setting the id sequence: %s", m->dst.err);
        return -1;
    }
    return 0;
}

/* prepare: the target must not hold a live copy of the shard. */
static int step_prepare(struct move *m)
{
    char fenced[8];
    int e = schema_exists(&m->dst, m->schema);

    if (e < 0) {
        fail(m, "%s", m->dst.err);
        return -1;
    }
    if (e == 1) {
        int f = sc_value(&m->dst, fenced, sizeof(fenced),
                         "SELECT fenced FROM `%s`.shard_state WHERE id = 1", m->schema);
        if (f != 1 || strcmp(fenced, "1") != 0) {
            snprintf(m->err, sizeof(m->err),
                     "%s already has a schema %s that is not a fenced, retired copy; "
                     "refusing to overwrite it (drop it by hand if it is stale)",
                     m->to.name, m->schema);
            return -1;
        }
        sc_say(m->out, "shard %u: dropping the retired copy of %s on %s", m->shard,
               m->schema, m->to.name);
    }
    return set_phase(m, "copy", NULL);
}

/* copy: a fresh schema on the target, filled from one snapshot. */
static int step_copy(struct move *m)
{
    struct sc_copy cp = {.out = m->out,
                         .shard = m->shard,
                         .schema = m->schema,
                         .max_rate = m->opts->copy_rate};
    char host[SHARDMAP_NAME_MAX], extra[1400], file[520], gtid[520];
    char *sql, *fence;
    int rc;

    if (map_host(m, host, sizeof(host)) < 0)
        return -1;
    if (strcmp(host, m->to.name) == 0) {
        fail(m, "the map already points to %s: not dropping the live copy", m->to.name);
        return -1;
    }
    drop_channel(m);
    if (sc_exec(&m->dst, "DROP DATABASE IF EXISTS `%s`", m->schema) < 0) {
        fail(m, "%s", m->dst.err);
        return -1;
    }
    /* The tables, then at once the fence, up (fenced) before any row. */
    sql = shardctl_render(shardctl_shard_sql, m->schema);
    fence = shardctl_render(shardctl_fence_sql, m->schema);
    rc = sql == NULL || fence == NULL
             ? -1
             : sc_exec(&m->dst,
                       "%s\nINSERT INTO `%s`.shard_state (id, shard, fenced) VALUES "
                       "(1, %u, 1);\n%s",
                       sql, m->schema, m->shard, fence);
    free(sql);
    free(fence);
    if (rc < 0) {
        fail(m, "creating the schema: %s",
             m->dst.err[0] ? m->dst.err : "out of memory");
        return -1;
    }
    if (sc_exec(&m->dst, "SET @bc_move_copy = 1") < 0 ||
        sc_copy_shard(&cp, &m->from, &m->dst, m->err, sizeof(m->err)) < 0 ||
        sc_exec(&m->dst, "SET @bc_move_copy = NULL") < 0) {
        if (m->err[0] == '\0')
            fail(m, "%s", m->dst.err);
        return -1;
    }
    if (copy_sequence(m) < 0)
        return -1;
    snprintf(m->binlog_file, sizeof(m->binlog_file), "%s", cp.binlog_file);
    m->binlog_pos = cp.binlog_pos;
    sc_escape(&m->g, file, cp.binlog_file);
    sc_escape(&m->g, gtid, cp.gtid);
    snprintf(extra, sizeof(extra),
             ", binlog_file = '%s', binlog_pos = %" PRIu64
             ", snapshot_gtid = '%s', rows_copied = %" PRIu64,
             file, cp.binlog_pos, gtid, cp.rows);
    return set_phase(m, "copied", extra);
}

/* copied: triggers on the target, then replication from the snapshot on. */
static int step_replicate(struct move *m)
{
    char host[600], user[200], pw[300], file[520], *sql;
    MYSQL_RES *res;
    int rc;

    /*
     * The target copy is fenced until the cut-over unfences it: a server
     * with a map old enough to point here (the host once held the shard)
     * must not write into a copy that is not the shard yet. Replicated row
     * events do not fire the triggers, so replication is not fenced.
     */
    if (sc_exec(&m->dst, "UPDATE `%s`.shard_state SET fenced = 1 WHERE id = 1",
                m->schema) < 0) {
        fail(m, "fencing the target copy: %s", m->dst.err);
        return -1;
    }
    sql = shardctl_render(shardctl_fence_sql, m->schema);
    if (sql == NULL)
        return -1;
    rc = sc_exec(&m->dst, "%s", sql);
    free(sql);
    if (rc < 0) {
        fail(m, "creating the fencing triggers: %s", m->dst.err);
        return -1;
    }
    /* A run that died right after CHANGE MASTER left the connection: keep it. */
    res = sc_query(&m->dst, "SHOW SLAVE '%s' STATUS", m->chan);
    if (res != NULL) {
        mysql_free_result(res);
    } else {
        sc_escape(&m->dst, host, m->from.addr);
        sc_escape(&m->dst, user, m->from.user);
        sc_escape(&m->dst, pw, m->from.password);
        sc_escape(&m->dst, file, m->binlog_file);
        if (sc_exec(&m->dst,
                    "CHANGE MASTER '%s' TO MASTER_HOST = '%s', MASTER_PORT = %u, "
                    "MASTER_USER = '%s', MASTER_PASSWORD = '%s', MASTER_LOG_FILE = "
                    "'%s', MASTER_LOG_POS = %" PRIu64 ", MASTER_USE_GTID = no, "
                    "MASTER_CONNECT_RETRY = 1",
                    m->chan, host, m->from.port, user, pw, file, m->binlog_pos) < 0 ||
            sc_exec(&m->dst, "SET GLOBAL %s.replicate_do_db = '%s'", m->chan,
                    m->schema) < 0) {
            fail(m, "setting up replication: %s", m->dst.err);
            return -1;
        }
    }
    if (sc_exec(&m->dst, "START SLAVE '%s'", m->chan) < 0) {
        fail(m, "starting replication: %s", m->dst.err);
        return -1;
    }
    return set_phase(m, "catchup", NULL);
}

struct lag {
    int64_t
        bytes; /* -1: the target reads an older binlog file than the source writes */
    long behind_s;
};

/* How far the target's applier is behind the source's binlog. */
static int replication_lag(struct move *m, struct lag *lag)
{
    char mfile[256] = "", sfile[256] = "";
    uint64_t mpos = 0, spos = 0;
    MYSQL_RES *res;
    MYSQL_ROW row;
    const char *v;

    res = sc_query(&m->dst, "SHOW SLAVE '%s' STATUS", m->chan);
    if (res == NULL) {
        fail(m, "replication status: %s", m->dst.err);
        return -1;
    }
    row = mysql_fetch_row(res);
    if (row == NULL) {
        mysql_free_result(res);
        fail(m, "%s", "the target has no replication connection for the move");
        return -1;
    }
    v = sc_col(res, row, "Last_SQL_Error");
    if (v != NULL && *v != '\0') {
        snprintf(m->err, sizeof(m->err), "replication on %s stopped: %s", m->to.name,
                 v);
        mysql_free_result(res);
        return -1;
    }
    v = sc_col(res, row, "Slave_SQL_Running");
    if (v != NULL && strcmp(v, "Yes") != 0)
        sc_exec(&m->dst, "START SLAVE '%s'", m->chan);
    v = sc_col(res, row, "Last_IO_Error");
    if (v != NULL && *v != '\0')
        sc_say(m->out, "shard %u: replication I/O: %s (retrying)", m->shard, v);
    snprintf(sfile, sizeof(sfile), "%s",
             sc_col(res, row, "Relay_Master_Log_File")
                 ? sc_col(res, row, "Relay_Master_Log_File")
                 : "");
    v = sc_col(res, row, "Exec_Master_Log_Pos");
    spos = v ? strtoull(v, NULL, 10) : 0;
    v = sc_col(res, row, "Seconds_Behind_Master");
    lag->behind_s = v ? strtol(v, NULL, 10) : -1;
    mysql_free_result(res);
    res = sc_query(&m->src, "SHOW MASTER STATUS");
    if (res == NULL || (row = mysql_fetch_row(res)) == NULL) {
        if (res != NULL)
            mysql_free_result(res);
        fail(m, "source binlog position: %s", m->src.err);
        return -1;
    }
    snprintf(mfile, sizeof(mfile), "%s", row[0]);
    mpos = strtoull(row[1], NULL, 10);
    mysql_free_result(res);
    lag->bytes =
        strcmp(mfile, sfile) == 0 ? (int64_t)(mpos > spos ? mpos - spos : 0) : -1;
    return 0;
}

static int postponed(struct move *m)
{
    struct stat st;

    return m->opts->postpone_cutover != NULL &&
           stat(m->opts->postpone_cutover, &st) == 0;
}

/* Waits until the target is close behind and the cut-over not postponed. */
static int wait_caught_up(struct move *m)
{
    struct lag lag;
    int64_t last_event = 0;
    int said = 0;

    for (;;) {
        if (replication_lag(m, &lag) < 0)
            return -1;
        if (sc_now_ms() - last_event >= 500) {
            last_event = sc_now_ms();
            sc_event(m->out, "catchup",
                     "\"shard\":%u,\"lag_bytes\":%" PRId64 ",\"behind_s\":%ld",
                     m->shard, lag.bytes, lag.behind_s);
            sc_progress(m->out, 0, "shard %u catch-up  lag %" PRId64 " bytes, %ld s%s",
                        m->shard, lag.bytes, lag.behind_s,
                        postponed(m) ? "  (cut-over postponed)" : "");
        }
        if (lag.bytes >= 0 && lag.bytes <= CATCHUP_BYTES && lag.behind_s <= 1) {
            if (!postponed(m))
                break;
            if (!said++)
                sc_say(m->out,
                       "shard %u: caught up; cut-over postponed while %s exists",
                       m->shard, m->opts->postpone_cutover);
        }
        sleep_ms(100);
    }
    return 0;
}

/*
 * The copies compared while clients write, at one binlog position (before
 * the cut-over, so differences leave the shard where it is).
 */
static int precheck(struct move *m)
{
    struct sc_conn a = {0}, b = {0};
    struct sc_verify_result res;
    int rc = -1;

    if (verify_in_flight(m, &a, &b) == 0 &&
        sc_verify_compare(m->out, m->shard, "catchup", &a, &b, m->schema, &res, m->err,
                          sizeof(m->err)) == 0) {
        if (res.diffs > 0)
            snprintf(
                m->err, sizeof(m->err),
                "%u differences between the copies in catch-up: not cutting over; "
                "the shard stays on %s (shardctl move %u --abort, then look into it)",
                res.diffs, m->from.name, m->shard);
        else if (sc_exec(&m->g,
                         "UPDATE `%s`.moves SET verify_diffs = 0 WHERE id = %" PRIu64,
                         m->gschema, m->id) < 0)
            fail(m, "recording the move: %s", m->g.err);
        else
            rc = 0;
    }
    sc_close(&a);
    sc_close(&b);
    if (rc == 0) {
        m->prechecked = 1;
        m->pre_diffs = 0;
    }
    return rc;
}

/* catchup: wait until the target is close behind (and not postponed). */
static int step_catchup(struct move *m)
{
    sc_hold(m->out, m->shard, "catchup");
    for (;;) {
        if (wait_caught_up(m) < 0)
            return -1;
        if (m->opts->no_verify || m->prechecked)
            break;
        if (precheck(m) < 0)
            return -1;
    }
    return set_phase(m, "cutover", NULL);
}

static int unfence(struct move *m)
{
    return sc_exec(&m->src, "UPDATE `%s`.shard_state SET fenced = 0 WHERE id = 1",
                   m->schema);
}

/*
 * One cut-over attempt: 1 done, 0 try again (the source was unfenced),
 * -1 failed.
 */
static int cutover_once(struct move *m, int attempt)
{
    char file[256], pos[32], waited[32], mfile[520];
    MYSQL_RES *res;
    MYSQL_ROW row;
    int64_t t0, t_fenced, t_drained, t_switched;
    int r;

    /* Connected before the pause: the snapshot for the verification. */
    if (!m->opts->no_verify && m->snap.m == NULL &&
        sc_connect(&m->snap, &m->to, LONG_TIMEOUT_S) < 0)
        sc_close(&m->snap);
    t0 = sc_now_ms();
    /*
     * The fence waits for the share locks of every transaction that wrote
     * to the shard; from its commit on, no write commits on the source.
     */
    if (sc_exec(
            &m->src,
            "SET SESSION innodb_lock_wait_timeout = %d; UPDATE `%s`.shard_state SET "
            "fenced = 1 WHERE id = 1",
            FENCE_WAIT_S, m->schema) < 0) {
        if (mysql_errno(m->src.m) == ER_LOCK_WAIT_TIMEOUT)
            return 0;
        fail(m, "fencing the source: %s", m->src.err);
        return -1;
    }
    t_fenced = sc_now_ms();
    sc_hold(m->out, m->shard, "fenced");
    res = sc_query(&m->src, "SHOW MASTER STATUS");
    if (res == NULL || (row = mysql_fetch_row(res)) == NULL) {
        if (res != NULL)
            mysql_free_result(res);
        fail(m, "source binlog position: %s", m->src.err);
        goto unfence;
    }
    snprintf(file, sizeof(file), "%s", row[0]);
    snprintf(pos, sizeof(pos), "%s", row[1]);
    mysql_free_result(res);
    sc_escape(&m->dst, mfile, file);
    /* NULL: the applier is not running; started again (no error) once. */
    for (int tries = 0;; tries++) {
        struct lag lag;
        r = sc_value(&m->dst, waited, sizeof(waited),
                     "SELECT MASTER_POS_WAIT('%s', %s, %d, '%s')", mfile, pos,
                     POS_WAIT_S, m->chan);
        if (r < 0) {
            fail(m, "waiting for the target: %s", m->dst.err);
            goto unfence;
        }
        if (r == 1)
            break;
        if (replication_lag(m, &lag) < 0)
            goto unfence;
        if (tries == 1) {
            fail(m, "%s", "replication is not running on the target");
            goto unfence;
        }
    }
    if (strcmp(waited, "-1") == 0) {
        sc_say(m->out,
               "shard %u: cut-over attempt %d: the target did not catch up in %d s; "
               "writes resume on the source",
               m->shard, attempt, POS_WAIT_S);
        if (unfence(m) < 0) {
            fail(m, "unfencing the source: %s", m->src.err);
            return -1;
        }
        return 0;
    }
    t_drained = sc_now_ms();
    if (sc_exec(&m->dst, "STOP SLAVE '%s'", m->chan) < 0 || copy_sequence(m) < 0 ||
        sc_exec(&m->dst, "UPDATE `%s`.shard_state SET fenced = 0 WHERE id = 1",
                m->schema) < 0) {
        if (m->err[0] == '\0')
            fail(m, "stopping replication: %s", m->dst.err);
        goto unfence;
    }
    /* The target exactly as of the fence, for the verification. */
    if (m->snap.m != NULL) {
        if (sc_exec(&m->snap,
                    "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ; "
                    "START TRANSACTION WITH CONSISTENT SNAPSHOT") == 0)
            m->have_snap = 1;
        else
            sc_close(&m->snap);
    }
    t_switched = sc_now_ms();
    /* The flip: the map and the move's phase in one transaction. */
    if (sc_exec(&m->g,
                "START TRANSACTION; "
                "UPDATE `%s`.shard_map SET host = '%s', state = 0, version = "
                "(SELECT version + 1 FROM `%s`.map_version WHERE id = 1) WHERE shard = "
                "%u; "
                "UPDATE `%s`.map_version SET version = version + 1 WHERE id = 1; "
                "UPDATE `%s`.moves SET phase = 'switched', pause_ms = %" PRId64
                " WHERE id = %" PRIu64 "; COMMIT",
                m->gschema, m->to.name, m->gschema, m->shard, m->gschema, m->gschema,
                sc_now_ms() - t0, m->id) < 0) {
        sc_exec(&m->g, "ROLLBACK");
        fail(m, "flipping the map: %s", m->g.err);
        sc_exec(&m->dst, "START SLAVE '%s'", m->chan);
        goto unfence;
    }
    m->pause_ms = sc_now_ms() - t0;
    snprintf(m->phase, sizeof(m->phase), "switched");
    sc_event(m->out, "cutover",
             "\"shard\":%u,\"pause_ms\":%" PRId64
             ",\"attempt\":%d,\"fence_ms\":%" PRId64 ",\"drain_ms\":%" PRId64
             ",\"switch_ms\":%" PRId64 ",\"flip_ms\":%" PRId64,
             m->shard, m->pause_ms, attempt, t_fenced - t0, t_drained - t_fenced,
             t_switched - t_drained, m->pause_ms - (t_switched - t0));
    sc_event(m->out, "phase",
             "\"move\":%" PRIu64 ",\"shard\":%u,\"from\":\"%s\",\"to\":\"%s\","
             "\"phase\":\"switched\"",
             m->id, m->shard, m->from.name, m->to.name);
    sc_say(m->out, "shard %u: switched to %s; writes paused %" PRId64 " ms", m->shard,
           m->to.name, m->pause_ms);
    return 1;
unfence:
    /* Give the shard back to the source rather than leave writes stuck. */
    if (unfence(m) < 0)
        sc_error(m->out, "shard %u: could not unfence the source: %s", m->shard,
                 m->src.err);
    return -1;
}

/* cutover: fence, drain, flip; a slow drain gives the writes back and retries. */
static int step_cutover(struct move *m)
{
    char host[SHARDMAP_NAME_MAX];

    if (map_host(m, host, sizeof(host)) < 0)
        return -1;
    if (strcmp(host, m->from.name) != 0) {
        snprintf(
            m->err, sizeof(m->err),
            "the map says shard %u is on %s, the move is from %s: not cutting over",
            m->shard, host, m->from.name);
        return -1;
    }
    /* A resumed cut-over: replication may have been stopped before the crash. */
    sc_exec(&m->dst, "START SLAVE '%s'", m->chan);
    sc_exec(&m->g, "UPDATE `%s`.shard_map SET state = 2 WHERE shard = %u", m->gschema,
            m->shard);
    for (int attempt = 1; attempt <= CUTOVER_ATTEMPTS; attempt++) {
        int r = cutover_once(m, attempt);
        if (r != 0)
            return r < 0 ? -1 : 0;
        /* Let the target catch up again before the next attempt. */
        for (int i = 0; i < 50; i++) {
            struct lag lag;
            if (replication_lag(m, &lag) < 0)
                return -1;
            if (lag.bytes >= 0 && lag.bytes <= CATCHUP_BYTES)
                break;
            sleep_ms(100);
        }
    }
    snprintf(m->err, sizeof(m->err),
             "the target did not catch up within %d s in %d attempts; the shard keeps "
             "serving from %s; re-run to try again, or --abort",
             POS_WAIT_S, CUTOVER_ATTEMPTS, m->from.name);
    return -1;
}

/* switched: replication gone; the copies compared as of the fence. */
static int step_verify(struct move *m)
{
    char extra[64];

    drop_channel(m);
    sc_hold(m->out, m->shard, "switched");
    if (m->have_snap) {
        if (sc_verify_compare(m->out, m->shard, "fence", &m->src, &m->snap, m->schema,
                              &m->verify, m->err, sizeof(m->err)) < 0)
            return -1;
        sc_close(&m->snap);
        m->have_snap = 0;
        if (m->verify.diffs > 0) {
            m->verify_failed = 1;
            m->keep_source = 1;
            sc_error(m->out,
                     "shard %u: %u differences between %s and %s; keeping the source "
                     "copy for inspection (move it back with shardctl move %u %s)",
                     m->shard, m->verify.diffs, m->from.name, m->to.name, m->shard,
                     m->from.name);
        }
        snprintf(extra, sizeof(extra), ", verify_diffs = %u", m->verify.diffs);
        return set_phase(m, "verified", extra);
    }
    /*
     * Restarted after the flip: the snapshot at the fence died with the
     * killed run, and the target has taken writes since. What stands is the
     * comparison recorded in catch-up; the rest went through replication up
     * to the fenced source's last position (MASTER_POS_WAIT).
     */
    if (m->pre_diffs >= 0) {
        sc_event(m->out, "verify",
                 "\"shard\":%u,\"at\":\"catchup\",\"recorded\":true,"
                 "\"differences\":%" PRId64,
                 m->shard, m->pre_diffs);
        sc_say(m->out,
               "shard %u: verified in catch-up (%" PRId64
               " differences, recorded); the "
               "check at the fence was lost with the interrupted run",
               m->shard, m->pre_diffs);
    } else {
        sc_event(m->out, "verify", "\"shard\":%u,\"skipped\":true", m->shard);
        sc_say(m->out, "shard %u: not verified (--no-verify, or interrupted before)",
               m->shard);
    }
    return set_phase(m, "verified", NULL);
}

static int step_cleanup(struct move *m)
{
    char host[SHARDMAP_NAME_MAX];

    sc_hold(m->out, m->shard, "cleanup");
    if (m->keep_source) {
        sc_say(m->out, "shard %u: the fenced source copy stays on %s", m->shard,
               m->from.name);
    } else {
        if (map_host(m, host, sizeof(host)) < 0)
            return -1;
        if (strcmp(host, m->from.name) == 0) {
            fail(m, "the map points to %s: not dropping the live copy", m->from.name);
            return -1;
        }
        if (m->opts->grace_s > 0 && strcmp(m->phase, "cleanup") != 0) {
            if (set_phase(m, "cleanup", NULL) < 0)
                return -1;
            sc_say(m->out, "shard %u: dropping the source copy in %u s", m->shard,
                   m->opts->grace_s);
            sleep(m->opts->grace_s);
        }
        if (sc_exec(&m->src, "DROP DATABASE IF EXISTS `%s`", m->schema) < 0) {
            fail(m, "dropping the source copy: %s", m->src.err);
            return -1;
        }
    }
    if (set_phase(m, "done", ", finished_at = NOW(3)") < 0)
        return -1;
    sc_event(m->out, "done",
             "\"shard\":%u,\"from\":\"%s\",\"to\":\"%s\",\"seconds\":%.1f,"
             "\"pause_ms\":%" PRId64 ",\"verify_diffs\":%u",
             m->shard, m->from.name, m->to.name,
             (double)(sc_now_ms() - m->started_ms) / 1000.0, m->pause_ms,
             m->verify.diffs);
    sc_say(m->out, "shard %u: moved %s -> %s in %.1f s", m->shard, m->from.name,
           m->to.name, (double)(sc_now_ms() - m->started_ms) / 1000.0);
    return 0;
}

/* Runs the move from its recorded phase to the end (or to cleanup, deferred). */
static int run_phases(struct move *m)
{
    for (;;) {
        int rc;
        if (strcmp(m->phase, "prepare") == 0)
            rc = step_prepare(m);
        else if (strcmp(m->phase, "copy") == 0)
            rc = step_copy(m);
        else if (strcmp(m->phase, "copied") == 0)
            rc = step_replicate(m);
        else if (strcmp(m->phase, "catchup") == 0)
            rc = step_catchup(m);
        else if (strcmp(m->phase, "cutover") == 0)
            rc = step_cutover(m);
        else if (strcmp(m->phase, "switched") == 0)
            rc = step_verify(m);
        else if (strcmp(m->phase, "verified") == 0 ||
                 strcmp(m->phase, "cleanup") == 0) {
            if (m->defer_cleanup)
                return 0;
            rc = step_cleanup(m);
        } else if (strcmp(m->phase, "done") == 0)
            return 0;
        else {
            snprintf(m->err, sizeof(m->err), "unknown phase '%s' in the move record",
                     m->phase);
            return -1;
        }
        if (rc < 0)
            return -1;
    }
}

static int do_abort(struct move *m)
{
    char host[SHARDMAP_NAME_MAX];

    if (map_host(m, host, sizeof(host)) < 0)
        return -1;
    if (strcmp(host, m->from.name) != 0) {
        snprintf(
            m->err, sizeof(m->err),
            "move #%" PRIu64 " of shard %u is past the map flip (the map points to "
            "%s): finish it with shardctl move %u --resume, then move it back with "
            "shardctl move %u %s",
            m->id, m->shard, host, m->shard, m->shard, m->from.name);
        return -1;
    }
    drop_channel(m);
    if (unfence(m) < 0) {
        fail(m, "unfencing the source: %s", m->src.err);
        return -1;
    }
    if (sc_exec(&m->dst, "DROP DATABASE IF EXISTS `%s`", m->schema) < 0) {
        fail(m, "dropping the target copy: %s", m->dst.err);
        return -1;
    }
    if (sc_exec(&m->g, "UPDATE `%s`.shard_map SET state = 0 WHERE shard = %u",
                m->gschema, m->shard) < 0) {
        fail(m, "%s", m->g.err);
        return -1;
    }
    if (set_phase(m, "aborted", ", finished_at = NOW(3)") < 0)
        return -1;
    sc_say(m->out, "shard %u: move #%" PRIu64 " rolled back; the shard stays on %s",
           m->shard, m->id, m->from.name);
    return 0;
}

/* Loads the unfinished move of the shard; 1 found, 0 none, -1 error. */
static int load_move(struct move *m, char *src, char *dst, size_t size)
{
    MYSQL_RES *res;
    MYSQL_ROW row;
    int found = 0;

    res = sc_query(&m->g,
                   "SELECT id, src_host, dst_host, phase, keep_source, "
                   "COALESCE(binlog_file, ''), COALESCE(binlog_pos, 0), "
                   "COALESCE(pause_ms, 0), COALESCE(verify_diffs, -1) FROM `%s`.moves "
                   "WHERE active = %u",
                   m->gschema, m->shard);
    if (res == NULL) {
        fail(m, "%s", m->g.err);
        return -1;
    }
    if ((row = mysql_fetch_row(res)) != NULL) {
        m->id = strtoull(row[0], NULL, 10);
        snprintf(src, size, "%s", row[1]);
        snprintf(dst, size, "%s", row[2]);
        snprintf(m->phase, sizeof(m->phase), "%s", row[3]);
        m->keep_source = m->keep_source || strcmp(row[4], "1") == 0;
        snprintf(m->binlog_file, sizeof(m->binlog_file), "%s", row[5]);
        m->binlog_pos = strtoull(row[6], NULL, 10);
        m->pause_ms = strtoll(row[7], NULL, 10);
        m->pre_diffs = strtoll(row[8], NULL, 10);
        found = 1;
    }
    mysql_free_result(res);
    return found;
}

static void move_init(struct move *m, const struct shardmap_conf *conf,
                      struct sc_out *out, const struct sc_move_opts *opts,
                      uint32_t shard)
{
    memset(m, 0, sizeof(*m));
    m->conf = conf;
    m->out = out;
    m->opts = opts;
    m->shard = shard;
    m->keep_source = opts->keep_source;
    m->started_ms = sc_now_ms();
    m->pre_diffs = -1;
    snprintf(m->schema, sizeof(m->schema), "%s_%04u", conf->schema_prefix, shard);
    snprintf(m->gschema, sizeof(m->gschema), "%s_global", conf->schema_prefix);
    snprintf(m->chan, sizeof(m->chan), "%s_move_%04u", conf->schema_prefix, shard);
}

static void move_deinit(struct move *m)
{
    sc_close(&m->snap);
    sc_close(&m->src);
    sc_close(&m->dst);
    sc_close(&m->g);
}

/*
 * Claims the shard (session lock + move record) and runs or resumes its move.
 * Returns an exit code; m stays usable for a deferred cleanup.
 */
static int move_start(struct move *m, const char *to)
{
    char lock[16], src[SHARDMAP_NAME_MAX] = "", dst[SHARDMAP_NAME_MAX] = "";
    char host[SHARDMAP_NAME_MAX];
    int found;

    if (m->shard >= m->conf->nshard) {
        snprintf(m->err, sizeof(m->err), "out of range: shard %u of 0..%u", m->shard,
                 m->conf->nshard - 1);
        return SC_USAGE;
    }
    if (connect_global(m) < 0)
        return SC_ERROR;
    if (sc_value(&m->g, lock, sizeof(lock), "SELECT GET_LOCK('%s', 0)", m->chan) < 0) {
        fail(m, "%s", m->g.err);
        return SC_ERROR;
    }
    if (strcmp(lock, "1") != 0) {
        snprintf(m->err, sizeof(m->err),
                 "refused: another shardctl is moving shard %u right now", m->shard);
        return SC_REFUSED;
    }
    if ((found = load_move(m, src, dst, sizeof(src))) < 0)
        return SC_ERROR;
    if (found) {
        if (to != NULL && strcmp(to, dst) != 0) {
            snprintf(m->err, sizeof(m->err),
                     "refused: move #%" PRIu64
                     " of shard %u to %s is unfinished (phase %s); "
                     "resume it with shardctl move %u %s, or roll it back with "
                     "shardctl move %u --abort",
                     m->id, m->shard, dst, m->phase, m->shard, dst, m->shard);
            return SC_REFUSED;
        }
        if (!m->opts->abort)
            sc_say(m->out, "shard %u: resuming move #%" PRIu64 " (%s -> %s) at %s",
                   m->shard, m->id, src, dst, m->phase);
    } else {
        if (m->opts->abort || m->opts->resume) {
            sc_say(m->out, "shard %u: no unfinished move", m->shard);
            return SC_OK;
        }
        if (to == NULL) {
            fail(m, "%s", "move: give the target host");
            return SC_USAGE;
        }
        if (map_host(m, host, sizeof(host)) < 0)
            return SC_ERROR;
        if (strcmp(host, to) == 0) {
            sc_say(m->out, "shard %u is already on %s", m->shard, to);
            return SC_OK;
        }
        snprintf(src, sizeof(src), "%s", host);
        snprintf(dst, sizeof(dst), "%s", to);
    }
    if (resolve_host(m, src, &m->from) < 0 || resolve_host(m, dst, &m->to) < 0)
        return SC_ERROR;
    if (sc_connect(&m->src, &m->from, LONG_TIMEOUT_S) < 0 ||
        sc_connect(&m->dst, &m->to, LONG_TIMEOUT_S) < 0) {
        fail(m, "%s", m->src.m == NULL ? m->src.err : m->dst.err);
        return SC_DOWN;
    }
    /* Nothing a move writes goes to a binlog: see docs/operations.md. */
    if (sc_exec(&m->src, "SET SESSION sql_log_bin = 0") < 0 ||
        sc_exec(&m->dst, "SET SESSION sql_log_bin = 0") < 0) {
        fail(m, "%s", m->src.err[0] ? m->src.err : m->dst.err);
        return SC_ERROR;
    }
    if (m->opts->abort)
        return do_abort(m) < 0 ? SC_ERROR : SC_OK;
    if (!found) {
        if (sc_exec(&m->g,
                    "INSERT INTO `%s`.moves (shard, src_host, dst_host, phase, "
                    "keep_source) VALUES (%u, '%s', '%s', 'prepare', %d)",
                    m->gschema, m->shard, src, dst, m->keep_source) < 0) {
            int dup = mysql_errno(m->g.m) == ER_DUP_ENTRY;
            fail(m,
                 dup ? "refused: another move of the shard was just started (%s)"
                     : "%s",
                 m->g.err);
            return dup ? SC_REFUSED : SC_ERROR;
        }
        m->id = mysql_insert_id(m->g.m);
        snprintf(m->phase, sizeof(m->phase), "prepare");
        sc_exec(&m->g, "UPDATE `%s`.shard_map SET state = 1 WHERE shard = %u",
                m->gschema, m->shard);
        sc_event(m->out, "phase",
                 "\"move\":%" PRIu64 ",\"shard\":%u,\"from\":\"%s\",\"to\":\"%s\","
                 "\"phase\":\"prepare\"",
                 m->id, m->shard, src, dst);
        sc_say(m->out, "shard %u: move #%" PRIu64 " %s -> %s", m->shard, m->id, src,
               dst);
    }
    if (run_phases(m) < 0)
        return SC_ERROR;
    return m->verify_failed ? SC_DIFFER : SC_OK;
}

int shardctl_move(const struct shardmap_conf *conf, struct sc_out *out, uint32_t shard,
                  const char *to, const struct sc_move_opts *opts)
{
    struct move *m = malloc(sizeof(*m));
    int rc;

    if (m == NULL)
        return SC_ERROR;
    move_init(m, conf, out, opts, shard);
    rc = move_start(m, to);
    if (rc != SC_OK && m->err[0] != '\0')
        sc_error(out, "shard %u: %s", shard, m->err);
    move_deinit(m);
    free(m);
    return rc;
}

/* ---- rebalance -------------------------------------------------------------- */

struct rebalance {
    const struct shardmap_conf *conf;
    struct sc_out *out;
    struct sc_move_opts opts;
    struct shardmap_plan *plan;
    struct move **moves;
    int *rc;
    /*
     * MariaDB takes one replication connection per source host on a target:
     * moves running at once never share a (from, to) pair.
     */
    pthread_mutex_t lock;
    pthread_cond_t freed;
    uint8_t *started;   /* per move */
    uint8_t *pair_busy; /* [from * nnode + to] */
    atomic_uint done, failed;
    int64_t t0;
};

static void rebalance_report(struct rebalance *rb)
{
    unsigned done = atomic_load(&rb->done), total = rb->plan->nmove;
    unsigned pct = total ? done * 100 / total : 100;
    char bar[31];

    for (unsigned i = 0; i < 30; i++)
        bar[i] = i < pct * 30 / 100 ? '#' : '.';
    bar[30] = '\0';
    sc_event(rb->out, "rebalance", "\"done\":%u,\"total\":%u,\"failed\":%u", done,
             total, atomic_load(&rb->failed));
    sc_say(rb->out, "rebalance [%s] %u/%u moves, %u failed, %.0f s", bar, done, total,
           atomic_load(&rb->failed), (double)(sc_now_ms() - rb->t0) / 1000.0);
}

/* The next move whose host pair is free, or -1 when none is left to start. */
static int rebalance_next(struct rebalance *rb)
{
    uint32_t nnode = rb->plan->target->nnode;
    int left;

    pthread_mutex_lock(&rb->lock);
    for (;;) {
        left = 0;
        for (uint32_t i = 0; i < rb->plan->nmove; i++) {
            const struct shardmap_move *mv = &rb->plan->moves[i];
            if (rb->started[i])
                continue;
            left = 1;
            if (!rb->pair_busy[mv->from * nnode + mv->to]) {
                rb->started[i] = 1;
                rb->pair_busy[mv->from * nnode + mv->to] = 1;
                pthread_mutex_unlock(&rb->lock);
                return (int)i;
            }
        }
        if (!left)
            break;
        pthread_cond_wait(&rb->freed, &rb->lock);
    }
    pthread_mutex_unlock(&rb->lock);
    return -1;
}

static void *rebalance_main(void *arg)
{
    struct rebalance *rb = arg;
    uint32_t nnode = rb->plan->target->nnode;
    int i;

    while ((i = rebalance_next(rb)) >= 0) {
        const struct shardmap_move *mv = &rb->plan->moves[i];
        struct move *m = rb->moves[i];
        move_init(m, rb->conf, rb->out, &rb->opts, mv->shard);
        m->defer_cleanup = 1;
        rb->rc[i] = move_start(m, rb->plan->target->nodes[mv->to].name);
        if (rb->rc[i] != SC_OK) {
            if (m->err[0] != '\0')
                sc_error(rb->out, "shard %u: %s", mv->shard, m->err);
            atomic_fetch_add(&rb->failed, 1);
        }
        pthread_mutex_lock(&rb->lock);
        rb->pair_busy[mv->from * nnode + mv->to] = 0;
        pthread_cond_broadcast(&rb->freed);
        pthread_mutex_unlock(&rb->lock);
        atomic_fetch_add(&rb->done, 1);
        rebalance_report(rb);
    }
    return NULL;
}

/* Registers a plan's new host in the global hosts table (a new map version). */
static int add_plan_host(struct move *g, const struct shardmap_plan *plan)
{
    const struct shardmap_host_conf *h = &plan->new_host;
    char n[16], addr[600];

    if (!plan->has_new_host)
        return 0;
    if (sc_value(&g->g, n, sizeof(n),
                 "SELECT COUNT(*) FROM `%s`.hosts WHERE name = '%s'", g->gschema,
                 h->name) < 0) {
        fail(g, "%s", g->g.err);
        return -1;
    }
    if (strcmp(n, "0") != 0)
        return 0;
    sc_escape(&g->g, addr, h->addr);
    if (sc_exec(
            &g->g,
            "START TRANSACTION; INSERT INTO `%s`.hosts (name, ord, addr, port, weight) "
            "SELECT '%s', COALESCE(MAX(ord), 0) + 1, '%s', %u, %u FROM `%s`.hosts; "
            "UPDATE `%s`.map_version SET version = version + 1 WHERE id = 1; COMMIT",
            g->gschema, h->name, addr, h->port, h->weight ? h->weight : 1, g->gschema,
            g->gschema) < 0) {
        sc_exec(&g->g, "ROLLBACK");
        fail(g, "adding the host: %s", g->g.err);
        return -1;
    }
    sc_say(g->out, "host %s (%s:%u) added to the map", h->name, h->addr, h->port);
    return 0;
}

/*
 * After a remove-host plan: a host the plan leaves empty, and that holds no
 * shard now, leaves the map (a new version). Never the global host.
 */
static int drop_drained_hosts(struct move *g, const struct shardmap_plan *plan)
{
    uint32_t counts[SHARDMAP_MAX_HOSTS];

    shardmap_count(plan->target, counts);
    for (uint32_t i = 0; i < plan->target->nnode; i++) {
        const char *name = plan->target->nodes[i].name;
        if (counts[i] != 0 || strcmp(name, g->conf->global_host) == 0)
            continue;
        if (sc_exec(&g->g,
                    "DELETE FROM `%s`.hosts WHERE name = '%s' AND NOT EXISTS (SELECT 1 "
                    "FROM `%s`.shard_map WHERE host = '%s')",
                    g->gschema, name, g->gschema, name) < 0) {
            fail(g, "removing the drained host: %s", g->g.err);
            return -1;
        }
        if (mysql_affected_rows(g->g.m) == 0)
            continue;
        if (sc_exec(&g->g,
                    "UPDATE `%s`.map_version SET version = version + 1 WHERE id = 1",
                    g->gschema) < 0) {
            fail(g, "bumping the map version: %s", g->g.err);
            return -1;
        }
        sc_say(g->out, "host %s holds no shard any more: removed from the map", name);
        sc_event(g->out, "host_removed", "\"host\":\"%s\"", name);
    }
    return 0;
}

int shardctl_rebalance(const struct shardmap_conf *conf, struct sc_out *out,
                       const char *plan_path, const struct sc_move_opts *opts)
{
    struct shardmap_plan plan;
    struct rebalance rb = {.conf = conf, .out = out, .opts = *opts, .plan = &plan};
    struct move g;
    pthread_t threads[16];
    unsigned nthread = opts->parallel ? opts->parallel : 1, started = 0;
    char *err = NULL;
    int rc = SC_OK;

    if (shardmap_plan_load(plan_path, &plan, &err) < 0) {
        sc_error(out, "%s", err ? err : "cannot read the plan");
        free(err);
        return SC_ERROR;
    }
    move_init(&g, conf, out, opts, 0);
    if (connect_global(&g) < 0 || add_plan_host(&g, &plan) < 0) {
        sc_error(out, "%s", g.err);
        move_deinit(&g);
        shardmap_plan_deinit(&plan);
        return SC_ERROR;
    }
    move_deinit(&g);
    rb.moves = calloc(plan.nmove ? plan.nmove : 1, sizeof(*rb.moves));
    rb.rc = calloc(plan.nmove ? plan.nmove : 1, sizeof(*rb.rc));
    rb.started = calloc(plan.nmove ? plan.nmove : 1, 1);
    rb.pair_busy = calloc((size_t)plan.target->nnode * plan.target->nnode, 1);
    pthread_mutex_init(&rb.lock, NULL);
    pthread_cond_init(&rb.freed, NULL);
    for (uint32_t i = 0; rb.moves && i < plan.nmove; i++)
        if ((rb.moves[i] = calloc(1, sizeof(struct move))) == NULL)
            rc = SC_ERROR;
    if (rb.moves == NULL || rb.rc == NULL || rb.started == NULL ||
        rb.pair_busy == NULL || rc != SC_OK) {
        sc_error(out, "out of memory");
        rc = SC_ERROR;
        goto out;
    }
    if (nthread > 16)
        nthread = 16;
    sc_say(out, "rebalance: %u moves, %u at a time", plan.nmove, nthread);
    out->no_progress = 1;
    rb.t0 = sc_now_ms();
    rb.opts.abort = rb.opts.resume = 0;
    for (unsigned i = 0; i < nthread; i++)
        if (pthread_create(&threads[i], NULL, rebalance_main, &rb) == 0)
            started++;
    if (started == 0)
        rebalance_main(&rb);
    for (unsigned i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    /* One grace period for all the moves, then the sources go. */
    if (!opts->keep_source && opts->grace_s > 0 &&
        atomic_load(&rb.failed) < plan.nmove) {
        sc_say(out, "rebalance: dropping the source copies in %u s", opts->grace_s);
        sleep(opts->grace_s);
    }
    for (uint32_t i = 0; i < plan.nmove; i++) {
        struct move *m = rb.moves[i];
        if (rb.rc[i] == SC_OK || rb.rc[i] == SC_DIFFER) {
            if (rb.rc[i] == SC_OK && strcmp(m->phase, "done") != 0) {
                m->defer_cleanup = 0;
                struct sc_move_opts now = rb.opts;
                now.grace_s = 0;
                m->opts = &now;
                if (run_phases(m) < 0) {
                    sc_error(out, "shard %u: %s", m->shard, m->err);
                    rb.rc[i] = SC_ERROR;
                }
                m->opts = &rb.opts;
            }
        }
        if (rb.rc[i] != SC_OK)
            rc = rc == SC_OK || rc == SC_DIFFER ? rb.rc[i] : rc;
        move_deinit(m);
    }
    if (rc == SC_OK) {
        move_init(&g, conf, out, opts, 0);
        if (connect_global(&g) < 0 || drop_drained_hosts(&g, &plan) < 0) {
            sc_error(out, "%s", g.err);
            rc = SC_ERROR;
        }
        move_deinit(&g);
    }
    sc_event(out, "rebalance_done", "\"moves\":%u,\"failed\":%u,\"seconds\":%.1f",
             plan.nmove, atomic_load(&rb.failed),
             (double)(sc_now_ms() - rb.t0) / 1000.0);
    sc_say(out, "rebalance: %u of %u moves done in %.0f s",
           plan.nmove - atomic_load(&rb.failed), plan.nmove,
           (double)(sc_now_ms() - rb.t0) / 1000.0);
out:
    for (uint32_t i = 0; rb.moves && i < plan.nmove; i++)
        free(rb.moves[i]);
    free(rb.moves);
    free(rb.rc);
    free(rb.started);
    free(rb.pair_busy);
    pthread_mutex_destroy(&rb.lock);
    pthread_cond_destroy(&rb.freed);
    shardmap_plan_deinit(&plan);
    return rc;
}

/* ---- moves ------------------------------------------------------------------ */

int shardctl_moves(const struct shardmap_conf *conf, struct sc_out *out)
{
    struct move g;
    MYSQL_RES *res;
    MYSQL_ROW row;
    int n = 0;

    move_init(&g, conf, out, &(struct sc_move_opts){0}, 0);
    if (connect_global(&g) < 0) {
        sc_error(out, "%s", g.err);
        move_deinit(&g);
        return SC_ERROR;
    }
    res =
        sc_query(&g.g,
                 "SELECT id, shard, src_host, dst_host, phase, rows_copied, "
                 "COALESCE(pause_ms, ''), COALESCE(verify_diffs, ''), started_at, "
                 "COALESCE(finished_at, '') FROM `%s`.moves ORDER BY id DESC LIMIT 100",
                 g.gschema);
    if (res == NULL) {
        sc_error(out, "%s", g.g.err);
        move_deinit(&g);
        return SC_ERROR;
    }
    if (out->json)
        printf("[");
    else
        printf("%-6s %5s %-10s %-10s %-9s %10s %8s %6s %-23s %s\n", "MOVE", "SHARD",
               "FROM", "TO", "PHASE", "ROWS", "PAUSEms", "DIFFS", "STARTED",
               "FINISHED");
    while ((row = mysql_fetch_row(res)) != NULL) {
        if (out->json)
            printf("%s{\"move\":%s,\"shard\":%s,\"from\":\"%s\",\"to\":\"%s\","
                   "\"phase\":\"%s\",\"rows\":%s,\"pause_ms\":%s,\"verify_diffs\":%s,"
                   "\"started_at\":\"%s\",\"finished_at\":%s%s%s}",
                   n ? "," : "", row[0], row[1], row[2], row[3], row[4], row[5],
                   row[6][0] ? row[6] : "null", row[7][0] ? row[7] : "null", row[8],
                   row[9][0] ? "\"" : "", row[9][0] ? row[9] : "null",
                   row[9][0] ? "\"" : "");
        else
            printf("%-6s %5s %-10s %-10s %-9s %10s %8s %6s %-23s %s\n", row[0], row[1],
                   row[2], row[3], row[4], row[5], row[6], row[7], row[8], row[9]);
        n++;
    }
    if (out->json)
        printf("]\n");
    mysql_free_result(res);
    move_deinit(&g);
    return SC_OK;
}

/* ---- verify ----------------------------------------------------------------- */

/* A snapshot connection: START TRANSACTION WITH CONSISTENT SNAPSHOT. */
static int snapshot(struct move *m, struct sc_conn *c, const struct sc_host *h)
{
    if (sc_connect(c, h, LONG_TIMEOUT_S) < 0 ||
        sc_exec(c, "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ; "
                   "START TRANSACTION WITH CONSISTENT SNAPSHOT") < 0) {
        fail(m, "%s", c->err);
        return -1;
    }
    return 0;
}

/*
 * The applier again, without the UNTIL condition: an applier that idles at
 * its UNTIL position still runs, and START SLAVE on a running thread would
 * leave the condition set (it would stop at the next event).
 */
static int restart_applier(struct move *m)
{
    sc_exec(&m->dst, "STOP SLAVE '%s' SQL_THREAD", m->chan);
    return sc_exec(&m->dst, "START SLAVE '%s' SQL_THREAD", m->chan);
}

/*
 * A move in catch-up: the target's applier is stopped, the source snapshot
 * taken, the applier run UNTIL exactly the snapshot's binlog position, and
 * the target snapshot taken there; then replication goes on. Both sides then
 * show the same moment, while clients keep writing.
 */
static int verify_in_flight(struct move *m, struct sc_conn *a, struct sc_conn *b)
{
    char file[256] = "", pos[32] = "", efile[520], waited[512];
    MYSQL_RES *res;
    MYSQL_ROW row;
    int r;

    if (sc_exec(&m->dst, "STOP SLAVE '%s' SQL_THREAD", m->chan) < 0) {
        fail(m, "%s", m->dst.err);
        return -1;
    }
    if (snapshot(m, a, &m->from) < 0)
        goto restart;
    res = sc_query(a, "SHOW STATUS LIKE 'binlog_snapshot_%%'");
    while (res != NULL && (row = mysql_fetch_row(res)) != NULL) {
        if (strcasecmp(row[0], "Binlog_snapshot_file") == 0)
            snprintf(file, sizeof(file), "%s", row[1] ? row[1] : "");
        else if (strcasecmp(row[0], "Binlog_snapshot_position") == 0)
            snprintf(pos, sizeof(pos), "%s", row[1] ? row[1] : "");
    }
    if (res != NULL)
        mysql_free_result(res);
    if (file[0] == '\0' || pos[0] == '\0') {
        fail(m, "%s", "the source reports no snapshot binlog position");
        goto restart;
    }
    sc_escape(&m->dst, efile, file);
    if (sc_exec(&m->dst,
                "START SLAVE '%s' SQL_THREAD UNTIL MASTER_LOG_FILE = '%s', "
                "MASTER_LOG_POS = %s",
                m->chan, efile, pos) < 0) {
        fail(m, "%s", m->dst.err);
        goto restart;
    }
    /* MASTER_POS_WAIT answers NULL once UNTIL stopped the applier: poll. */
    for (int64_t until = sc_now_ms() + 120000;; sleep_ms(20)) {
        char sfile[256] = "";
        uint64_t spos;
        int running;
        res = sc_query(&m->dst, "SHOW SLAVE '%s' STATUS", m->chan);
        if (res == NULL || (row = mysql_fetch_row(res)) == NULL) {
            if (res != NULL)
                mysql_free_result(res);
            fail(m, "replication status: %s", m->dst.err);
            goto restart;
        }
        snprintf(sfile, sizeof(sfile), "%s",
                 sc_col(res, row, "Relay_Master_Log_File")
                     ? sc_col(res, row, "Relay_Master_Log_File")
                     : "");
        spos = strtoull(sc_col(res, row, "Exec_Master_Log_Pos")
                            ? sc_col(res, row, "Exec_Master_Log_Pos")
                            : "0",
                        NULL, 10);
        running = sc_col(res, row, "Slave_SQL_Running") != NULL &&
                  strcmp(sc_col(res, row, "Slave_SQL_Running"), "Yes") == 0;
        snprintf(waited, sizeof(waited), "%s",
                 sc_col(res, row, "Last_SQL_Error") ? sc_col(res, row, "Last_SQL_Error")
                                                    : "");
        mysql_free_result(res);
        /*
         * The applier checks UNTIL before each event: once it stands at the
         * position it executes nothing more, stopped or idle. It was stopped
         * before the snapshot, so it cannot be past it.
         */
        r = strcmp(sfile, file);
        if (r == 0 && spos == strtoull(pos, NULL, 10))
            break;
        if (r > 0 || (r == 0 && spos > strtoull(pos, NULL, 10))) {
            fail(m, "%s", "the target's applier went past the source snapshot");
            goto restart;
        }
        if (!running && waited[0] != '\0') {
            fail(m, "replication stopped on the target: %s", waited);
            goto restart;
        }
        if (sc_now_ms() > until) {
            fail(m, "%s", "the target did not reach the source snapshot in 120 s");
            goto restart;
        }
    }
    if (snapshot(m, b, &m->to) < 0)
        goto restart;
    if (restart_applier(m) < 0) {
        fail(m, "restarting replication: %s", m->dst.err);
        return -1;
    }
    return 0;
restart:
    restart_applier(m);
    return -1;
}

int shardctl_verify(const struct shardmap_conf *conf, struct sc_out *out,
                    uint32_t shard, const char *against)
{
    struct sc_move_opts opts = {0};
    struct sc_conn a = {0}, b = {0};
    struct sc_verify_result res;
    struct move *m = malloc(sizeof(*m));
    char lock[16], src[SHARDMAP_NAME_MAX], dst[SHARDMAP_NAME_MAX];
    int rc = SC_ERROR, found;

    if (m == NULL)
        return SC_ERROR;
    move_init(m, conf, out, &opts, shard);
    if (shard >= conf->nshard) {
        snprintf(m->err, sizeof(m->err), "out of range: shard %u of 0..%u", shard,
                 conf->nshard - 1);
        rc = SC_USAGE;
        goto out;
    }
    if (connect_global(m) < 0)
        goto out;
    if (sc_value(&m->g, lock, sizeof(lock), "SELECT GET_LOCK('%s', 0)", m->chan) < 0) {
        fail(m, "%s", m->g.err);
        goto out;
    }
    if (strcmp(lock, "1") != 0) {
        snprintf(m->err, sizeof(m->err),
                 "refused: a shardctl move of shard %u is running; verify after it "
                 "finished, or stop it (a re-run resumes it)",
                 shard);
        rc = SC_REFUSED;
        goto out;
    }
    if ((found = load_move(m, src, dst, sizeof(src))) < 0)
        goto out;
    if (found &&
        (strcmp(m->phase, "catchup") == 0 || strcmp(m->phase, "cutover") == 0)) {
        if (resolve_host(m, src, &m->from) < 0 || resolve_host(m, dst, &m->to) < 0)
            goto out;
        if (sc_connect(&m->dst, &m->to, LONG_TIMEOUT_S) < 0) {
            fail(m, "%s", m->dst.err);
            goto out;
        }
        sc_say(out,
               "shard %u: comparing %s and %s at one binlog position (move #%" PRIu64
               " in %s)",
               shard, src, dst, m->id, m->phase);
        if (verify_in_flight(m, &a, &b) < 0)
            goto out;
    } else if (found) {
        snprintf(m->err, sizeof(m->err),
                 "move #%" PRIu64
                 " of shard %u is in phase %s: nothing to compare yet; "
                 "resume it (it verifies at the cut-over) or --abort it",
                 m->id, shard, m->phase);
        goto out;
    } else {
        if (map_host(m, dst, sizeof(dst)) < 0)
            goto out;
        if (against == NULL) {
            int f =
                sc_value(&m->g, src, sizeof(src),
                         "SELECT src_host FROM `%s`.moves WHERE shard = %u AND phase "
                         "= 'done' AND keep_source = 1 ORDER BY id DESC LIMIT 1",
                         m->gschema, shard);
            if (f <= 0) {
                snprintf(m->err, sizeof(m->err),
                         "it has one copy (on %s): give --against HOST to compare it "
                         "with another copy",
                         dst);
                rc = SC_USAGE;
                goto out;
            }
        } else {
            snprintf(src, sizeof(src), "%s", against);
        }
        if (resolve_host(m, src, &m->from) < 0 || resolve_host(m, dst, &m->to) < 0)
            goto out;
        sc_say(
            out,
            "shard %u: comparing the copy on %s with the live one on %s (writes made "
            "since the cut-over show as differences)",
            shard, src, dst);
        if (snapshot(m, &a, &m->from) < 0 || snapshot(m, &b, &m->to) < 0)
            goto out;
    }
    if (sc_verify_compare(out, shard, found ? "catchup" : "copies", &a, &b, m->schema,
                          &res, m->err, sizeof(m->err)) < 0)
        goto out;
    sc_say(out, "shard %u: %s: %u tables, %" PRIu64 " rows, %u chunks, %u differences",
           shard, res.diffs ? "DIFFERENT" : "equal", res.tables, res.rows, res.chunks,
           res.diffs);
    rc = res.diffs ? SC_DIFFER : SC_OK;
out:
    if (rc != SC_OK && rc != SC_DIFFER && m->err[0] != '\0')
        sc_error(out, "shard %u: %s", shard, m->err);
    sc_close(&a);
    sc_close(&b);
    move_deinit(m);
    free(m);
    return rc;
}
