/*
 * shardctl_failover.c: what the guard does each round (probe, heartbeat,
 * failover, fencing, rejoin) and the planned switchover of a host.
 *
 * Failover of host H whose primary P has not answered for down_after_ms:
 *   1. each live replica applies what it received (MASTER_GTID_WAIT on its
 *      Gtid_IO_Pos, bounded); the one with the highest sequence number in
 *      H's GTID domain is promoted: STOP SLAVE, RESET SLAVE ALL, writable;
 *   2. the catalog flips (catalog_promote: hosts.addr, roles, map version
 *      + 1), so every router follows; P becomes "fenced";
 *   3. other replicas follow the new primary.
 * Semi-sync AFTER_SYNC means every write a client was told succeeded is on
 * a replica before the answer, so step 1 loses nothing acknowledged. P
 * cannot acknowledge a write after the flip: its replica no longer
 * acknowledges, and semi-sync never falls back to asynchronous by itself.
 * When P answers again it is made read-only at once, then either rejoins
 * as a replica of the new primary, or, when it holds transactions the new
 * primary lacks (written but never acknowledged), is marked for rebuild.
 */
#include <errno.h>
#include <limits.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mysqld_error.h>

#include "tools/shardctl_guard.h"

int guard_lock(struct guard *g, uint32_t wait_s)
{
    struct guard_server *p = &g->global->srv[g->global->primary];
    char got[8];
    int rc;

    if (guard_connect(g, g->global, p) < 0)
        return BC_EDOWN;
    rc = sql_value(p->c, got, sizeof(got), "SELECT GET_LOCK(%s, %u)", g->global_schema,
                   (uint64_t)wait_s);
    if (rc < 0) {
        guard_drop(p);
        return rc;
    }
    if (rc == 1 && strcmp(got, "1") == 0) {
        g->locked = p;
        return 1;
    }
    return 0;
}

void guard_unlock(struct guard *g)
{
    if (g->locked != NULL && g->locked->c != NULL)
        (void)guard_exec(g->locked, NULL, "DO RELEASE_LOCK(%s)", g->global_schema);
    g->locked = NULL;
}

/* Replicas of gr that answer, replicate from p and receive its binlog. */
static int live_replicas(struct guard_group *gr, struct guard_server *p)
{
    int n = 0;

    for (uint32_t k = 0; k < gr->nsrv; k++) {
        struct guard_server *s = &gr->srv[k];

        n += s != p && s->c != NULL && s->role == CATALOG_ROLE_REPLICA &&
             guard_replicates_from(s, p) && s->repl.io_running && s->repl.sql_running;
    }
    return n;
}

static void failover(struct guard *g, struct guard_group *gr, int64_t unanswered_ms)
{
    struct guard_server *old = &gr->srv[gr->primary], *best = NULL;
    uint64_t best_seq = 0;
    int64_t t0 = sql_now_ms();
    char note[256];
    int rc;

    for (uint32_t k = 0; k < gr->nsrv; k++) {
        struct guard_server *s = &gr->srv[k];

        if (s == old || s->role != CATALOG_ROLE_REPLICA || guard_probe(g, gr, s) < 0)
            continue;
        /* Apply what arrived before judging how far it got (bounded: 2 s). */
        if (s->replicating && s->repl.gtid_io_pos[0] != '\0')
            (void)guard_exec(s, NULL, "DO MASTER_GTID_WAIT(%s, 2)",
                             s->repl.gtid_io_pos);
        if (guard_probe(g, gr, s) < 0)
            continue;
        uint64_t seq = guard_gtid_seq(s->current_pos, gr->domain);
        if (best == NULL || seq > best_seq) {
            best = s;
            best_seq = seq;
        }
    }
    if (best == NULL) {
        if (gr->down_since_ms != -1)
            guard_log("%s: primary %s unanswered for %" PRId64
                      " ms and no replica to promote: waiting",
                      gr->host, old->name, unanswered_ms);
        gr->down_since_ms = -1; /* said once */
        return;
    }
    /*
     * Writable before replication is torn down: STOP SLAVE waits for the
     * I/O thread, which may be stuck connecting to the lost primary (a
     * partition) for up to slave_net_timeout. The applier stops first, so
     * nothing more arrives in the data; the rest comes after the flip.
     */
    rc = guard_exec(best, NULL, "STOP SLAVE SQL_THREAD; SET GLOBAL read_only = 0");
    if (rc < 0) {
        guard_log("%s: cannot promote %s: %s", gr->host, best->name, sql_last_error());
        return;
    }
    int64_t t_promoted = sql_now_ms();
    best->replicating = 0;
    best->read_only = 0;
    old->role = CATALOG_ROLE_FENCED;
    best->role = CATALOG_ROLE_PRIMARY;
    gr->primary = (uint32_t)(best - gr->srv);
    guard_drop(old);
    snprintf(note, sizeof(note), "failed over to %s: unanswered for %" PRId64 " ms",
             best->name, unanswered_ms);
    snprintf(old->note, sizeof(old->note), "%s", note);
    rc = guard_flip(g, gr, best, CATALOG_ROLE_FENCED, note);
    if (rc < 0) {
        /* The new primary is writable but unknown to routers: retried next round. */
        gr->flip_pending = 1;
        guard_log("%s: promoted %s but cannot record it in the catalog (retrying): %s",
                  gr->host, best->name, sql_last_error());
    } else {
        gr->flip_pending = 0;
    }
    int64_t t_flipped = sql_now_ms();
    if (guard_exec(best, NULL, "STOP SLAVE; RESET SLAVE ALL") < 0)
        guard_log(
            "%s: %s: cannot reset its replication (retried at the next start): %s",
            gr->host, best->name, sql_last_error());
    for (uint32_t k = 0; k < gr->nsrv; k++) {
        struct guard_server *s = &gr->srv[k];
        if (s != best && s != old && s->role == CATALOG_ROLE_REPLICA && s->c != NULL)
            (void)guard_replicate(g, gr, s, best);
    }
    best->semi_sync = -1; /* set it either way, and say so */
    guard_semi_sync(g, gr, best, live_replicas(gr, best), GUARD_SEMI_PROMOTED);
    /* With semi-sync waiting, the next round writes it once a replica receives. */
    if (!best->semi_sync)
        (void)guard_heartbeat(g, gr, best);
    old->hb_waiting = 0; /* its sessions are killed when it is fenced */
    for (uint32_t k = 0; k < gr->nsrv; k++)
        gr->srv[k].lost_ms = 0;
    gr->down_since_ms = 0;
    gr->nunanswered = 0;
    guard_log("%s: FAILOVER: %s (%s:%u) is the primary, %s fenced; primary unanswered "
              "%" PRId64 " ms, promoted in %" PRId64 " ms (writable after %" PRId64
              " ms, catalog flipped after %" PRId64 " ms), map version %" PRIu64,
              gr->host, best->name, best->addr, best->port, old->name, unanswered_ms,
              sql_now_ms() - t0, t_promoted - t0, t_flipped - t0, g->version);
}

/* Marks s for rebuild (read-only, replication stopped), with why. */
static void mark_rebuild(struct guard *g, struct guard_group *gr,
                         struct guard_server *s, const char *why)
{
    struct catalog cat;
    char note[256];

    snprintf(note, sizeof(note), "rebuild it from a backup of the primary: %.200s",
             why);
    (void)guard_exec(s, NULL, "STOP SLAVE; SET GLOBAL read_only = 1");
    guard_drop_move_connections(g, gr, s); /* nothing of its own replicates now */
    if (guard_catalog(g, &cat) == 0 &&
        catalog_server_set_role(&cat, s->name, CATALOG_ROLE_REBUILD, note) == 0) {
        s->role = CATALOG_ROLE_REBUILD;
        guard_log("%s: %s %s", gr->host, s->name, note);
    }
}

/* The sessions of s's clients (not its own, replication's or the server's). */
#define CLIENT_SESSIONS                                                                \
    "FROM information_schema.PROCESSLIST WHERE id <> CONNECTION_ID() AND command "     \
    "NOT IN ('Daemon', 'Binlog Dump', 'Binlog Dump GTID') AND user NOT IN ('system "   \
    "user', 'event_scheduler')"
#define ACK_WAIT "state LIKE 'Waiting for semi-sync ACK%%'"

static void kill_where(struct guard_server *s, const char *sql)
{
    struct sql_rows rows = {0};

    if (guard_exec(s, &rows, sql) == 0)
        for (uint32_t i = 0; i < rows.nrow; i++)
            (void)guard_exec(s, NULL, "KILL %u",
                             (uint64_t)strtoull(sql_cell(&rows, i, 0), NULL, 10));
    sql_rows_free(&rows);
}

/*
 * Kills every client session of s, in two waves. A killed commit that waits
 * for an acknowledgement commits in the engine and releases its row locks;
 * a transaction queued on those locks would then run on, and a bet's
 * (one CALL of place_bet, its client long gone) would commit a new
 * transaction after the flip. So every other session goes first, and the
 * waiters only once those are gone (up to 2 s).
 */
static void kill_clients(struct guard_server *s)
{
    struct sql_rows rows = {0};

    kill_where(s, "SELECT id " CLIENT_SESSIONS " AND NOT (" ACK_WAIT ")");
    for (int i = 0; i < 40; i++) {
        int rc = guard_exec(
            s, &rows, "SELECT COUNT(*) " CLIENT_SESSIONS " AND NOT (" ACK_WAIT ")");
        int left = rc == 0 && rows.nrow == 1 ? atoi(sql_cell(&rows, 0, 0)) : 0;

        sql_rows_free(&rows);
        if (left == 0)
            break;
        usleep(50 * 1000);
    }
    kill_where(s, "SELECT id " CLIENT_SESSIONS);
}

/*
 * An old primary that answers again: read-only at once, then a replica of
 * the primary, or marked for rebuild when it has transactions of the
 * group's domain that the primary lacks.
 */
static void fence_or_rejoin(struct guard *g, struct guard_group *gr,
                            struct guard_server *s, struct guard_server *p)
{
    struct catalog cat;
    char note[256];

    if (!s->read_only) {
        /*
         * Back from a partition, still writable. Its clients' sessions go
         * first: a commit stuck waiting for an acknowledgement that will
         * never come would hold up SET GLOBAL read_only forever. Killed, such
         * a commit stays in its binlog, never acknowledged: the check below
         * then finds it, and the server is rebuilt.
         */
        kill_clients(s);
        if (guard_exec(s, NULL, "SET GLOBAL read_only = 1") < 0)
            return;
        s->read_only = 1;
        guard_log("%s: %s answers again: its sessions killed, made read-only (fenced)",
                  gr->host, s->name);
        /* Its GTID position as it is now, with what the kills committed. */
        if (guard_probe(g, gr, s) < 0)
            return;
    }
    if (s->role == CATALOG_ROLE_REBUILD || p->c == NULL)
        return;
    uint64_t mine = guard_gtid_seq(s->binlog_pos, gr->domain);
    uint64_t theirs = guard_gtid_seq(p->current_pos, gr->domain);
    /*
     * Past the primary's sequence in the group's domain: certainly
     * diverged. Not past it may still be diverged (another GTID at the
     * same number); replication then fails with 1236 and the round marks
     * it for rebuild.
     */
    if (mine > theirs) {
        snprintf(note, sizeof(note),
                 "holds transactions %s lacks (domain %u: %" PRIu64 " > %" PRIu64 ")",
                 p->name, gr->domain, mine, theirs);
        mark_rebuild(g, gr, s, note);
        return;
    }
    guard_drop_move_connections(g, gr, s); /* before: nothing else replicates */
    if (guard_replicate(g, gr, s, p) < 0)
        return;
    if (guard_catalog(g, &cat) == 0 &&
        catalog_server_set_role(&cat, s->name, CATALOG_ROLE_REPLICA, "rejoined") == 0) {
        s->role = CATALOG_ROLE_REPLICA;
        guard_log("%s: %s rejoined as a replica of %s", gr->host, s->name, p->name);
    }
}

/* Whether no other server of the config has addr (drop_lost_dumps). */
static int addr_unique(const struct guard *g, const char *addr)
{
    int n = 0;

    for (uint32_t i = 0; i < g->ngroup; i++)
        for (uint32_t k = 0; k < g->group[i].nsrv; k++)
            n += strcmp(g->group[i].srv[k].addr, addr) == 0;
    return n == 1;
}

/*
 * A replica cut off from its primary p leaves p a binlog dump thread whose
 * TCP connection nothing closes: p's heartbeats sit in its send queue, and
 * the kernel gives up on them only after many minutes. When the replica
 * reconnects, p's new dump thread kills that one and waits, holding the
 * server's list of sessions, until p's semi-sync acknowledgement thread lets
 * go of the old socket; that thread sleeps in poll() on it until the
 * replica's kernel answers a retransmission with a reset, which the backoff
 * of retransmissions puts seconds to two minutes after the link is back.
 * All that while p accepts no new connection (nor KILL) and acknowledges no
 * write (MariaDB 10.11: kill_zombie_dump_threads, Ack_receiver::remove_slave;
 * a replica cut off for 15 to 30 s stalled its primary 11 to 23 s so).
 *
 * So while replica s does not receive p's binlog, p's dump threads from
 * s's address that began before the guard noticed are killed: a killed
 * thread's socket is shut, which wakes that poll() at once. A replica that
 * answers and is not receiving has no live dump thread on p; one that does
 * not answer may just be out of the guard's reach, so its dump threads are
 * killed only after down_after_ms, and only once (the dump thread of a
 * reconnect began after the guard noticed). Killing a dump thread releases
 * no commit: without replicas, semi-sync waits on
 * (rpl_semi_sync_master_wait_no_slave). Where several servers share an
 * address (the local stack without network namespaces, which has no
 * partitions) the guard cannot tell whose a dump thread is and kills none.
 * Statements on p's aux connection.
 */
static void drop_lost_dumps(struct guard *g, struct guard_group *gr,
                            struct guard_server *p, int64_t round)
{
    struct sql_rows rows = {0};

    for (uint32_t k = 0; k < gr->nsrv; k++) {
        struct guard_server *s = &gr->srv[k];
        int answers = s->ok_ms >= round;

        if (s == p || s->role != CATALOG_ROLE_REPLICA)
            continue;
        if (answers && guard_replicates_from(s, p) && s->repl.io_running) {
            s->lost_ms = 0;
            continue;
        }
        if (s->lost_ms == 0)
            s->lost_ms = round;
        int64_t lost_for = sql_now_ms() - s->lost_ms;
        /*
         * Never on one probe, even of a replica that answers: one read
         * while it reconnects may say its I/O thread does not run when its
         * new dump thread on p already does (a switchover's old primary
         * caught so lost that thread's acknowledgement: release_lost_ack).
         */
        if (lost_for <
                (answers ? (int64_t)g->conf->probe_ms : g->conf->down_after_ms) ||
            !addr_unique(g, s->addr))
            continue;
        /* HOST is address:port; the address is what precedes the last colon. */
        if (guard_aux_exec(
                g, gr, p, &rows,
                "SELECT id, FLOOR(time_ms) FROM information_schema.PROCESSLIST "
                "WHERE command LIKE 'Binlog Dump%%' AND time_ms >= %u AND "
                "LEFT(host, CHAR_LENGTH(host) - CHAR_LENGTH(SUBSTRING_INDEX("
                "host, ':', -1)) - 1) = %s",
                (uint64_t)lost_for, s->addr) == 0)
            for (uint32_t i = 0; i < rows.nrow; i++) {
                uint64_t id = strtoull(sql_cell(&rows, i, 0), NULL, 10);
                if (guard_aux_exec(g, gr, p, NULL, "KILL %u", id) == 0)
                    guard_log("%s: %s: killed binlog dump thread %" PRIu64
                              " (%s ms old) of %s, which receives nothing (for %" PRId64
                              " ms%s)",
                              gr->host, p->name, id, sql_cell(&rows, i, 1), s->name,
                              lost_for, answers ? "" : ", does not answer");
            }
        sql_rows_free(&rows);
    }
}

/*
 * Whether replica s has every transaction of GTID list pos (a primary's
 * gtid_binlog_pos): in each of its domains, received (Gtid_IO_Pos) or
 * applied (gtid_current_pos) up to the same sequence number or beyond.
 */
static int has_all_of(const struct guard_server *s, const char *pos)
{
    const char *q = pos;

    if (*q == '\0')
        return 0;
    while (q != NULL && *q != '\0') {
        char *end;
        uint32_t domain = (uint32_t)strtoul(q, &end, 10);
        const char *seq = *end == '-' ? strchr(end + 1, '-') : NULL;
        if (seq == NULL)
            return 0;
        uint64_t want = strtoull(seq + 1, NULL, 10);
        if (guard_gtid_seq(s->repl.gtid_io_pos, domain) < want &&
            guard_gtid_seq(s->current_pos, domain) < want)
            return 0;
        q = strchr(q, ',');
        if (q != NULL)
            q++;
    }
    return 1;
}

/*
 * A lost acknowledgement. A replica acknowledges a transaction on the
 * connection that sent it. When that connection ends between the two (its
 * dump thread killed, the link cut, the replica's I/O thread stopped), the
 * replica reconnects from the GTID after the transaction, which is never
 * sent again, so never acknowledged: MariaDB 10.11 starts a GTID dump at
 * the binlog file's first byte and takes that, not the position asked
 * for, as the replica's first acknowledgement. With AFTER_SYNC the waiting
 * commit holds back every later one, so nothing a replica could
 * acknowledge past it is written either: the primary waits for good
 * (rpl_semi_sync_master_timeout is infinite) and its writes fail (503).
 * Seen after a switchover under load, when the old primary's first dump
 * thread on the new one was killed.
 *
 * So when commits on p have waited through two probes (probe_ms) with p's
 * binlog the same all along, and a replica of p probed after p says it has
 * all of that binlog, the guard acknowledges on the replica's word:
 * semi-sync waiting off and on again, which wakes the waiting commits, and
 * only if p's binlog is still the same at that instant (one statement).
 * Every commit that waits is in that binlog (AFTER_SYNC), so on a replica,
 * which is all an acknowledgement says; releasing one whose own
 * acknowledgement was merely late costs nothing.
 */
static void release_lost_ack(struct guard *g, struct guard_group *gr,
                             struct guard_server *p, int64_t round)
{
    struct guard_server *by = NULL;
    struct sql_rows rows = {0};

    if (!p->semi_sync || p->semi_waits == 0 ||
        strcmp(p->wait_pos, p->binlog_pos) != 0 || p->wait_ms == 0) {
        p->wait_ms = p->semi_sync && p->semi_waits > 0 ? round : 0;
        memcpy(p->wait_pos, p->binlog_pos, sizeof(p->wait_pos)); /* same size */
        return;
    }
    int64_t waited = sql_now_ms() - p->wait_ms;
    if (waited < g->conf->probe_ms)
        return;
    for (uint32_t k = 0; k < gr->nsrv && by == NULL; k++) {
        struct guard_server *s = &gr->srv[k];

        if (s != p && s->ok_ms >= round && s->role == CATALOG_ROLE_REPLICA &&
            guard_replicates_from(s, p) && s->repl.io_running &&
            has_all_of(s, p->binlog_pos))
            by = s;
    }
    if (by == NULL)
        return;
    if (guard_exec(p, NULL,
                   "SET @bc_pos = @@global.gtid_binlog_pos; "
                   "SET GLOBAL rpl_semi_sync_master_enabled = (@bc_pos <> %s); "
                   "SET GLOBAL rpl_semi_sync_master_enabled = 1",
                   p->binlog_pos) < 0 ||
        guard_exec(p, &rows, "SELECT @bc_pos = %s", p->binlog_pos) < 0) {
        sql_rows_free(&rows);
        return;
    }
    if (rows.nrow == 1 && strcmp(sql_cell(&rows, 0, 0), "1") == 0) {
        guard_log("%s: %s: %u session(s) waited %" PRId64
                  " ms for the acknowledgement of "
                  "what %s has (%s): lost; released",
                  gr->host, p->name, p->semi_waits, waited, by->name, p->binlog_pos);
        p->wait_ms = 0;
    }
    sql_rows_free(&rows);
}

/* may_restore: the guard holds the lock a switchover of gr would hold. */
static void tick_group(struct guard *g, struct guard_group *gr, int may_correct,
                       int may_restore)
{
    struct guard_server *p = &gr->srv[gr->primary];
    int64_t now = sql_now_ms();

    if (guard_probe(g, gr, p) == 0) {
        gr->down_since_ms = 0;
        gr->nunanswered = 0;
    } else if (may_correct) {
        /*
         * Unanswered since this probe began, not since the last answer: time
         * the guard spent elsewhere (a round that waited, another host's
         * failover) is no time the primary failed to answer. And never on
         * one probe, which may take longer than down_after_ms (a connect and
         * two statements, each with its deadline).
         */
        if (gr->down_since_ms == 0)
            gr->down_since_ms = now;
        gr->nunanswered++;
        int64_t since = gr->down_since_ms == -1 ? 0 : gr->down_since_ms;
        int64_t unanswered = sql_now_ms() - since;
        if (gr->down_since_ms == -1 ||
            (gr->nunanswered >= 2 && unanswered >= g->conf->down_after_ms))
            failover(g, gr, gr->down_since_ms == -1 ? -1 : unanswered);
        return;
    }
    for (uint32_t k = 0; k < gr->nsrv; k++) {
        struct guard_server *s = &gr->srv[k];

        if (s == p || guard_probe(g, gr, s) < 0 || !may_correct || p->c == NULL)
            continue;
        if (s->role == CATALOG_ROLE_FENCED || s->role == CATALOG_ROLE_REBUILD) {
            fence_or_rejoin(g, gr, s, p);
            continue;
        }
        /*
         * A writable server the catalog calls a replica: a switchover under
         * way (promoted, not yet recorded), or roles read before a flip.
         * Never demote it on that word: the next round reads the catalog again.
         */
        if (!s->read_only || p->read_only)
            continue;
        if (s->role != CATALOG_ROLE_REPLICA)
            continue;
        if (!guard_replicates_from(s, p)) {
            (void)guard_replicate(g, gr, s, p);
            continue;
        }
        guard_replica_settle(s);
        /*
         * The primary's binlog lacks what the replica asks for: it holds
         * transactions the primary never had (an old primary that wrote past
         * the point its successor was promoted at). Only a rebuild helps.
         */
        if (s->repl.last_io_errno == ER_MASTER_FATAL_ERROR_READING_BINLOG) {
            mark_rebuild(g, gr, s, s->repl.last_io_error);
            continue;
        }
        if (guard_relay_log_retry(gr, s)) /* 1595: started again */
            continue;
        /* Replication errors, each said once (the operator fixes or rebuilds). */
        unsigned err =
            s->repl.last_io_errno ? s->repl.last_io_errno : s->repl.last_sql_errno;
        /* Stopped with no error (by hand): said once, not undone; its primary's
         * writes wait for an acknowledgement if it was the only replica. */
        if (err == 0 && (s->repl.io_stopped || !s->repl.sql_running))
            err = UINT_MAX; /* not an IO thread still connecting */
        if (err == UINT_MAX && err != gr->reported_errno[k])
            guard_log(
                "%s: replica %s does not replicate and shows no error (io %s, sql "
                "%s): stopped by hand? START SLAVE on it resumes it",
                gr->host, s->name, s->repl.io_stopped ? "stopped" : "running",
                s->repl.sql_running ? "running" : "stopped");
        else if (err != 0 && err != gr->reported_errno[k])
            guard_log("%s: replica %s does not replicate: %s%s", gr->host, s->name,
                      s->repl.last_io_error, s->repl.last_sql_error);
        gr->reported_errno[k] = err;
    }
    if (may_correct && p->c != NULL) {
        drop_lost_dumps(g, gr, p, now);
        release_lost_ack(g, gr, p, now);
    }
    if (may_restore)
        guard_restore_writable(g, gr);
    int live = live_replicas(gr, p);
    if (may_correct && p->c != NULL)
        guard_semi_sync(g, gr, p, live, GUARD_SEMI_ROUND);
    /*
     * The heartbeat is a write: with semi-sync waiting it commits only when a
     * replica acknowledges it, so it is written only when a replica receives
     * p's binlog, as the replica says (live) and as p says (it counts a
     * semi-sync client); there is no lag to measure otherwise anyway.
     * guard_heartbeat bounds it all the same (a replica cut off just now).
     */
    if (p->c != NULL && (!p->semi_sync || (live > 0 && p->semi_clients > 0)))
        (void)guard_heartbeat(g, gr, p);
}

void guard_tick(struct guard *g)
{
    struct catalog cat;
    uint64_t version = 0;
    int locked;

    struct guard_server *gp = &g->global->srv[g->global->primary];
    int authoritative, restore_global;

    /*
     * The roles come from the catalog on the global group's writable
     * server. Its primary as last known is gone or read-only (a switchover,
     * or a failover of it): look for the writable one first.
     */
    if (guard_probe(g, g->global, gp) < 0 || gp->read_only) {
        guard_find_global_primary(g, 0);
        gp = &g->global->srv[g->global->primary];
    }
    authoritative = gp->c != NULL && !gp->read_only;
    /* A switchover (or another tool) changed the roles: take them. */
    if (guard_catalog(g, &cat) == 0 && catalog_map_version(&cat, &version) == 0 &&
        version != g->version) {
        g->version = version;
        (void)guard_load_roles(g);
    }
    /* Roles read from a read-only copy may be stale: correct nothing with them. */
    locked = authoritative ? guard_lock(g, 0) : -1;
    /*
     * A switchover holds the lock on the global primary, read-only or not:
     * the lock there says that none of the global host is under way.
     */
    restore_global =
        locked == 1 || (locked < 0 && gp->c != NULL && guard_lock(g, 0) == 1);
    for (uint32_t i = 0; i < g->ngroup; i++) {
        struct guard_group *gr = &g->group[i];

        /*
         * The global group is corrected even without the lock when its
         * primary is the one that is gone (the lock lived there).
         */
        tick_group(g, gr, locked == 1 || (gr == g->global && locked < 0),
                   gr == g->global ? restore_global : locked == 1);
        if (gr->flip_pending && locked == 1) {
            struct guard_server *p = &gr->srv[gr->primary];
            if (guard_flip(g, gr, p, CATALOG_ROLE_FENCED, "failed over") == 0) {
                gr->flip_pending = 0;
                guard_log("%s: catalog now names %s the primary, map version %" PRIu64,
                          gr->host, p->name, g->version);
            }
        }
    }
    guard_unlock(g); /* if taken */
}

/* ---- switchover ------------------------------------------------------------------ */

/* Whether s counts a semi-sync replica (its probe's semi_clients) within ms. */
static int semi_client_of(struct guard *g, struct guard_group *gr,
                          struct guard_server *s, int64_t ms)
{
    int64_t end = sql_now_ms() + ms;

    while (guard_probe(g, gr, s) < 0 || s->semi_clients == 0) {
        if (sql_now_ms() >= end)
            return 0;
        usleep(2000);
    }
    return 1;
}

/* BC_SHARDCTL_HOLD=switchover-{readonly,promoted}: a drill's pause, as a move's. */
static void switchover_hold(const char *point)
{
    const char *want = getenv("BC_SHARDCTL_HOLD");
    sigset_t usr1;
    int sig = 0;

    if (want == NULL || strncmp(want, "switchover-", 11) != 0 ||
        strcmp(want + 11, point))
        return;
    printf("switchover: holding at %s (BC_SHARDCTL_HOLD) until SIGUSR1 or killed\n",
           want);
    fflush(stdout);
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1); /* blocked since main() */
    while (sigwait(&usr1, &sig) != 0 || sig != SIGUSR1)
        ;
}

int shardctl_switchover(const struct shardmap_conf *conf, const char *host)
{
    struct guard_server *p, *r = NULL;
    struct guard_group *gr = NULL;
    struct sql_rows rows = {0};
    struct guard g;
    int64_t t0, paused;
    char pos[512], got[32];
    int rc, code = 1, p_semi = 1;

    if (guard_init(&g, conf, 0) < 0)
        return 1;
    snprintf(g.global_schema, sizeof(g.global_schema), "%s_global",
             conf->schema_prefix);
    snprintf(g.heartbeat_schema, sizeof(g.heartbeat_schema), "%s_heartbeat",
             conf->schema_prefix);
    for (uint32_t i = 0; i < g.ngroup; i++)
        if (strcmp(g.group[i].host, host) == 0)
            gr = &g.group[i];
    if (gr == NULL) {
        fprintf(stderr, "shardctl switchover: no host '%s' in the config\n", host);
        guard_deinit(&g);
        return 2;
    }
    if (guard_load_roles(&g) < 0 || guard_lock(&g, 10) != 1) {
        fprintf(stderr, "shardctl switchover: cannot read or lock the catalog: %s\n",
                sql_last_error());
        guard_deinit(&g);
        return 3;
    }
    p = &gr->srv[gr->primary];
    if (guard_probe(&g, gr, p) < 0) {
        fprintf(stderr, "shardctl switchover: primary %s does not answer: %s\n",
                p->name, sql_last_error());
        code = 3;
        goto out;
    }
    for (uint32_t k = 0; k < gr->nsrv && r == NULL; k++) {
        struct guard_server *s = &gr->srv[k];
        if (s != p && s->role == CATALOG_ROLE_REPLICA && guard_probe(&g, gr, s) == 0 &&
            guard_replicates_from(s, p) && s->repl.io_running && s->repl.sql_running)
            r = s;
    }
    if (r == NULL) {
        fprintf(stderr,
                "shardctl switchover: %s has no replica that replicates from %s and "
                "runs\n",
                host, p->name);
        code = 5;
        goto out;
    }
    /* Writes stop here: the API's get "read-only" and wait for the new map. */
    p_semi = p->semi_sync;
    t0 = sql_now_ms();
    rc = guard_exec(p, NULL, "SET GLOBAL read_only = 1");
    if (rc == 0)
        rc = sql_value(p->c, pos, sizeof(pos), "SELECT @@global.gtid_binlog_pos");
    if (rc < 0) {
        fprintf(stderr, "shardctl switchover: %s: %s\n", p->name, sql_last_error());
        goto undo;
    }
    switchover_hold("readonly");
    rc = sql_value(r->c, got, sizeof(got), "SELECT MASTER_GTID_WAIT(%s, 2)", pos);
    if (rc != 1 || strcmp(got, "0") != 0) {
        fprintf(stderr,
                "shardctl switchover: %s did not catch up with %s (%s) in 2 s\n",
                r->name, p->name, pos);
        goto undo;
    }
    /*
     * The replica stops replicating (still read-only), the old primary
     * becomes its replica, and only then does it take writes, with semi-sync
     * waiting on: from its first write on (the flip itself, on the global
     * host) there is a replica to acknowledge, and nothing is acknowledged
     * by one server.
     */
    rc = guard_exec(r, NULL, "STOP SLAVE; RESET SLAVE ALL");
    if (rc < 0) {
        fprintf(stderr, "shardctl switchover: cannot promote %s: %s\n", r->name,
                sql_last_error());
        (void)guard_replicate(&g, gr, r, p);
        goto undo;
    }
    rc = guard_replicate(&g, gr, p, r);
    /*
     * Writes open once r counts the old primary as a semi-sync replica: its
     * connection is up and registered, so the first writes (the flip, on
     * the global host) are sent and acknowledged on it, not on one being
     * made, and the guard, free again once this is done, finds a replica
     * that receives. At most 2 s; after that, as before (the writes wait
     * for it).
     */
    if (rc == 0 && !semi_client_of(&g, gr, r, 2000))
        fprintf(stderr,
                "shardctl switchover: %s does not count %s as a semi-sync replica "
                "after 2 s; its writes wait for it\n",
                r->name, p->name);
    if (rc == 0)
        rc = guard_exec(r, NULL,
                        "SET GLOBAL rpl_semi_sync_master_enabled = 1; SET GLOBAL "
                        "read_only = 0");
    if (rc == 0) {
        switchover_hold("promoted");
        r->role = CATALOG_ROLE_PRIMARY;
        p->role = CATALOG_ROLE_REPLICA;
        gr->primary = (uint32_t)(r - gr->srv);
        rc = guard_flip(&g, gr, r, CATALOG_ROLE_REPLICA, "switched over");
    }
    paused = sql_now_ms() - t0;
    if (rc < 0) {
        fprintf(stderr, "shardctl switchover: %s\n", sql_last_error());
        /* Back as it was: nobody routed to r without the flip. */
        r->role = CATALOG_ROLE_REPLICA;
        p->role = CATALOG_ROLE_PRIMARY;
        gr->primary = (uint32_t)(p - gr->srv);
        (void)guard_exec(r, NULL,
                         "SET GLOBAL read_only = 1; SET GLOBAL "
                         "rpl_semi_sync_master_enabled = 0");
        (void)guard_exec(p, NULL, "STOP SLAVE; RESET SLAVE ALL");
        (void)guard_replicate(&g, gr, r, p);
        goto undo;
    }
    for (uint32_t k = 0; k < gr->nsrv; k++) {
        struct guard_server *s = &gr->srv[k];
        if (s != p && s != r && s->role == CATALOG_ROLE_REPLICA &&
            guard_probe(&g, gr, s) == 0)
            (void)guard_replicate(&g, gr, s, r);
    }
    printf("switchover %s: %s (%s:%u) is the primary, %s its replica; writes paused "
           "%" PRId64 " ms; map version %" PRIu64 "\n",
           host, r->name, r->addr, r->port, p->name, paused, g.version);
    code = 0;
    goto out;
undo:
    (void)guard_exec(
        p, NULL,
        "SET GLOBAL rpl_semi_sync_master_enabled = %u; SET GLOBAL read_only = 0",
        (uint64_t)(p_semi != 0));
    fprintf(stderr, "shardctl switchover: nothing changed; %s is still the primary\n",
            p->name);
out:
    sql_rows_free(&rows);
    guard_unlock(&g);
    guard_deinit(&g);
    return code;
}
