/*
 * reshard_db_repl.c: the move's replication connection on the target (the
 * real backend's, reshard_db.c): made, filtered to the moving schema,
 * watched for lag and errors, stopped at a source snapshot for the
 * comparison in catch-up.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <mysqld_error.h>

#include "reshard/reshard_int.h"

#define UNTIL_WAIT_MS 120000 /* for the applier to reach a snapshot */
#define IO_RETRY_MS 60000    /* a stopped I/O thread started again this long */

/*
 * The move's connection reads the moving schema only, without the source's
 * fence (the top of this file). Its threads must be stopped. The
 * connection's name is an identifier here (checked).
 */
static int set_filter(struct reshard_db_ctx *c)
{
    const char *chan = sql_ident_ok(c->chan) ? c->chan : "invalid name";
    char table[SHARDMAP_SCHEMA_MAX + 16];
    int rc =
        sql_exec(c->dst, NULL, "SET GLOBAL %R.replicate_do_db = %s", chan, c->schema);

    snprintf(table, sizeof(table), "%s.shard_state", c->schema);
    if (rc == 0)
        rc = sql_exec(c->dst, NULL, "SET GLOBAL %R.replicate_ignore_table = %s", chan,
                      table);
    return rc;
}

/*
 * A filter set with SET GLOBAL lives as long as the server: a target that
 * restarted starts the move's connection again by itself, unfiltered, and
 * its applier reads the source's other schemas too (it stops on the first
 * row event of one, whose tables are not there; a statement such as a
 * CREATE DATABASE IF NOT EXISTS would run). Such a connection is stopped,
 * filtered again and started: the applier goes on from the event it
 * stopped on, which the filter now skips. 1 when it was, 0 when the filter
 * was there.
 */
static int refilter(struct reshard_db_ctx *c, const struct sql_replica_status *st)
{
    int rc;

    if (strcmp(st->do_db, c->schema) == 0)
        return 0;
    reshard__note(c->opts, c->shard,
                  "shard %u: the move's replication on %s ran without its filter (%s "
                  "restarted?)%s%s; filtering it again",
                  c->shard, c->to.name, c->to.name,
                  st->last_sql_error[0] != '\0' ? ": " : "", st->last_sql_error);
    if ((rc = sql_exec(c->dst, NULL, "STOP SLAVE %s", c->chan)) < 0 ||
        (rc = set_filter(c)) < 0 ||
        (rc = sql_exec(c->dst, NULL, "START SLAVE %s", c->chan)) < 0)
        return rc;
    return 1;
}

int reshard__db_replicate(void *ctx, const struct catalog_move *mv)
{
    struct reshard_db_ctx *c = ctx;
    struct sql_replica_status st;
    int rc;

    /*
     * The target copy is fenced until the cut-over unfences it: a server
     * with a map old enough to point here (the host once held the shard)
     * must not write into a copy that is not the shard yet. Replicated row
     * events do not fire the triggers, so replication is not fenced.
     */
    if ((rc = reshard_shard_install(c->dst, c->schema, c->shard, 1)) < 0 ||
        (rc =
             sql_exec(c->dst, NULL, "UPDATE %I.shard_state SET fenced = 1 WHERE id = 1",
                      c->schema)) < 0)
        return rc;
    /* A run that died right after CHANGE MASTER left the connection: keep it. */
    rc = sql_replica_status(c->dst, c->chan, &st);
    if (rc == BC_ENOTFOUND) {
        rc = sql_exec(
            c->dst, NULL,
            "CHANGE MASTER %s TO MASTER_HOST = %s, MASTER_PORT = %u, "
            "MASTER_USER = %s, MASTER_PASSWORD = %s, MASTER_LOG_FILE = %s, "
            "MASTER_LOG_POS = %u, MASTER_USE_GTID = no, MASTER_CONNECT_RETRY = 1",
            c->chan, c->from.addr, (uint64_t)c->from.port, c->from.user,
            c->from.password, mv->binlog_file, mv->binlog_pos);
        if (rc == BC_EQUERY && sql_conn_errno(c->dst) == ER_CONNECTION_ALREADY_EXISTS) {
            char msg[512];
            snprintf(msg, sizeof(msg), "%s", sql_last_error());
            /* Refused up front since (pair_busy); a record from before that. */
            sql_set_error("%s: another move's replication from %s into %s is "
                          "there (shardctl status lists the unfinished moves), and "
                          "this move's, from an older snapshot, could not follow it: "
                          "roll this move back with shardctl move %u --abort, and "
                          "move the shard again once that move finished",
                          msg, c->from.name, c->to.name, c->shard);
        }
        if (rc == 0)
            rc = set_filter(c);
    } else if (rc == 0)
        rc = refilter(c, &st);
    if (rc < 0)
        return rc;
    return sql_exec(c->dst, NULL, "START SLAVE %s", c->chan);
}

/*
 * A replication connection stopped by an error: BC_EQUERY and its message.
 * ER_GTID_STRICT_OUT_OF_ORDER: the target already logged later transactions
 * of the source's GTID domain than the move's snapshot (another move's
 * connection applied and logged them); this one can never go on.
 */
static int replication_error(struct reshard_db_ctx *c,
                             const struct sql_replica_status *st)
{
    if (st->last_sql_errno == ER_GTID_STRICT_OUT_OF_ORDER)
        sql_set_error("replication on %s stopped: %s: %s already logged later "
                      "transactions from %s than this move's snapshot (another move "
                      "between the two hosts brought them), so this move cannot "
                      "continue; roll it back with shardctl move %u --abort, then "
                      "move it again",
                      c->to.name, st->last_sql_error, c->to.name, c->from.name,
                      c->shard);
    else
        sql_set_error("replication on %s stopped: %s", c->to.name, st->last_sql_error);
    return BC_EQUERY;
}

int reshard__db_start_replication(void *ctx)
{
    struct reshard_db_ctx *c = ctx;

    return sql_exec(c->dst, NULL, "START SLAVE %s", c->chan);
}

int reshard__db_lag(void *ctx, struct reshard_lag *lag)
{
    struct reshard_db_ctx *c = ctx;
    struct sql_replica_status st;
    struct sql_binlog_pos m;
    int rc = sql_replica_status(c->dst, c->chan, &st);

    if (rc == BC_ENOTFOUND)
        sql_set_error("the target has no replication connection for the move");
    if (rc < 0)
        return rc;
    if ((rc = refilter(c, &st)) != 0) {
        /* Measured at the next look, once the applier runs filtered. */
        lag->behind_s = -1;
        lag->bytes = -1;
        return rc < 0 ? rc : 0;
    }
    if (st.last_sql_error[0] != '\0')
        return replication_error(c, &st);
    /*
     * The source host failed over since the connection was made: it reads
     * the old primary (dead, or a replica now) at positions of that server's
     * binlog, which no other server's continue.
     */
    if (strcmp(st.master_host, c->from.addr) != 0 || st.master_port != c->from.port) {
        sql_set_error("the source host %s failed over since this move's replication "
                      "began: %s replicates from %s:%u, and the primary is now %s:%u, "
                      "whose binlog positions are its own; roll the move back with "
                      "shardctl move %u --abort, then move the shard again",
                      c->from.name, c->to.name, st.master_host,
                      (unsigned)st.master_port, c->from.addr, (unsigned)c->from.port,
                      c->shard);
        return BC_EMISMATCH;
    }
    /*
     * A stopped thread is started again (by hand, or MariaDB's I/O thread on
     * an error it does not retry, such as a damaged event): an I/O thread
     * for IO_RETRY_MS at most.
     */
    if (st.io_stopped && st.last_io_error[0] != '\0') {
        if (c->io_down_ms == 0)
            c->io_down_ms = sql_now_ms();
        if (sql_now_ms() - c->io_down_ms > IO_RETRY_MS) {
            sql_set_error("replication on %s: its I/O thread stopped and did not "
                          "start again in %d s: %s; roll the move back with shardctl "
                          "move %u --abort, then move the shard again",
                          c->to.name, IO_RETRY_MS / 1000, st.last_io_error, c->shard);
            return BC_EQUERY;
        }
    } else if (st.io_running) {
        c->io_down_ms = 0;
    }
    if (!st.sql_running || st.io_stopped)
        sql_exec(c->dst, NULL, "START SLAVE %s", c->chan);
    if (st.last_io_error[0] != '\0')
        reshard__note(c->opts, c->shard, "shard %u: replication I/O: %s (retrying)",
                      c->shard, st.last_io_error);
    if ((rc = sql_master_pos(c->src, &m)) < 0)
        return rc;
    lag->behind_s = st.behind_s;
    lag->bytes = strcmp(m.file, st.exec.file) == 0
                     ? (int64_t)(m.pos > st.exec.pos ? m.pos - st.exec.pos : 0)
                     : -1;
    return 0;
}

/*
 * The applier again, without the UNTIL condition: an applier that idles at
 * its UNTIL position still runs, and START SLAVE on a running thread would
 * leave the condition set (it would stop at the next event).
 */
static int restart_applier(struct reshard_db_ctx *c)
{
    sql_exec(c->dst, NULL, "STOP SLAVE %s SQL_THREAD", c->chan);
    return sql_exec(c->dst, NULL, "START SLAVE %s SQL_THREAD", c->chan);
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};

    nanosleep(&ts, NULL);
}

/* Waits until the stopped-at-UNTIL applier stands exactly at pos. */
static int wait_until(struct reshard_db_ctx *c, const struct sql_binlog_pos *pos)
{
    for (int64_t until = sql_now_ms() + UNTIL_WAIT_MS;; sleep_ms(20)) {
        struct sql_replica_status st;
        int rc = sql_replica_status(c->dst, c->chan, &st), r;

        if (rc < 0)
            return rc;
        /*
         * The applier checks UNTIL before each event: once it stands at the
         * position it executes nothing more, stopped or idle. It was stopped
         * before the snapshot, so it cannot be past it.
         */
        r = strcmp(st.exec.file, pos->file);
        if (r == 0 && st.exec.pos == pos->pos)
            return 0;
        if (r > 0 || (r == 0 && st.exec.pos > pos->pos)) {
            sql_set_error("the target's applier went past the source snapshot");
            return BC_EQUERY;
        }
        if (!st.sql_running && st.last_sql_error[0] != '\0')
            return replication_error(c, &st);
        if (sql_now_ms() > until) {
            sql_set_error("the target did not reach the source snapshot in %d s",
                          UNTIL_WAIT_MS / 1000);
            return BC_ETIMEOUT;
        }
    }
}

/*
 * A move in catch-up: the target's applier is stopped, the source snapshot
 * taken, the applier run UNTIL exactly the snapshot's binlog position, and
 * the target snapshot taken there; then replication goes on. Both sides then
 * show the same moment, while clients keep writing.
 */
int reshard__db_compare_in_flight(void *ctx, struct reshard_compare *res)
{
    struct reshard_db_ctx *c = ctx;
    struct sql_conn *a = NULL, *b = NULL;
    struct sql_binlog_pos pos;
    int rc;

    if ((rc = sql_exec(c->dst, NULL, "STOP SLAVE %s SQL_THREAD", c->chan)) < 0)
        return rc;
    if ((rc = reshard__snapshot(&c->from, &a)) < 0 ||
        (rc = sql_snapshot_pos(a, &pos)) < 0)
        goto out;
    rc = sql_exec(
        c->dst, NULL,
        "START SLAVE %s SQL_THREAD UNTIL MASTER_LOG_FILE = %s, MASTER_LOG_POS = %u",
        c->chan, pos.file, pos.pos);
    if (rc < 0 || (rc = wait_until(c, &pos)) < 0 ||
        (rc = reshard__snapshot(&c->to, &b)) < 0)
        goto out;
    if ((rc = restart_applier(c)) < 0)
        goto out;
    rc = reshard__compare(c->opts, c->shard, "catchup", a, b, c->schema, res);
out:
    if (rc < 0) {
        /* Keep the move's message; the applier must run again either way. */
        char msg[512];
        snprintf(msg, sizeof(msg), "%s", sql_last_error());
        restart_applier(c);
        sql_set_error("%s", msg);
    }
    sql_conn_close(a);
    sql_conn_close(b);
    return rc;
}
