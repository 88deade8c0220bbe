/*
 * shardctl_guard.c: the replication supervisor (`shardctl guard`) and the
 * planned switch of a host's primary (`shardctl switchover HOST`).
 *
 * Every host is a replication group: one primary, its replicas (GTID,
 * semi-synchronous AFTER_SYNC, never falling back to asynchronous by
 * itself). The guard:
 *   - makes the catalog's topology true: the primary writable, every other
 *     server read-only, each replica replicating from its primary;
 *   - writes a heartbeat row on each primary every probe_ms
 *     (<prefix>_heartbeat.heartbeat), from which routers measure lag;
 *   - promotes the most advanced replica of a primary that has not
 *     answered for down_after_ms, flips the catalog (map version + 1) and
 *     fences the old primary: read-only when it comes back, then rejoined
 *     as a replica of the new primary, or marked for rebuild when it holds
 *     transactions the new primary lacks;
 *   - runs a primary left without any replica with semi-sync waiting off,
 *     on purpose and said in its log and in the catalog's note, unless
 *     --require-replica (then its writes wait, and fail, until a replica is
 *     back); turns it on again when a replica has caught up;
 *   - releases commits that wait for an acknowledgement lost with its
 *     connection, once a replica has them (shardctl_failover.c).
 * One guard runs per cluster.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mysqld_error.h>

#include "catalog/catalog.h"
#include "tools/shardctl.h"
#include "tools/shardctl_guard.h"

static volatile sig_atomic_t stop_flag, hup_flag;

static void on_signal(int sig)
{
    if (sig == SIGHUP)
        hup_flag = 1;
    else
        stop_flag = 1;
}

void guard_log(const char *fmt, ...)
{
    char when[32];
    struct timespec ts;
    struct tm tm;
    va_list ap;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    printf("%s.%03ldZ guard: ", when, ts.tv_nsec / 1000000);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

/* ---- the groups as the config and the catalog describe them ------------------- */

int guard_init(struct guard *g, const struct shardmap_conf *conf, int require_replica)
{
    memset(g, 0, sizeof(*g));
    g->conf = conf;
    g->require_replica = require_replica;
    g->ngroup = conf->nhost;
    g->group = calloc(conf->nhost, sizeof(*g->group));
    if (g->group == NULL)
        return -ENOMEM;
    for (uint32_t i = 0; i < conf->nhost; i++) {
        const struct shardmap_host_conf *h = &conf->hosts[i];
        struct guard_group *gr = &g->group[i];

        snprintf(gr->host, sizeof(gr->host), "%s", h->name);
        gr->nsrv = 1 + h->nreplica;
        for (uint32_t k = 0; k < gr->nsrv; k++) {
            struct guard_server *s = &gr->srv[k];

            snprintf(s->name, sizeof(s->name), "%s",
                     k == 0 ? h->name : h->replicas[k - 1].name);
            snprintf(s->addr, sizeof(s->addr), "%s",
                     k == 0 ? h->addr : h->replicas[k - 1].addr);
            s->port = k == 0 ? h->port : h->replicas[k - 1].port;
            s->role = k == 0 ? CATALOG_ROLE_PRIMARY : CATALOG_ROLE_REPLICA;
        }
        gr->primary = 0;
        if (strcmp(h->name, conf->global_host) == 0)
            g->global = gr;
    }
    return 0;
}

void guard_deinit(struct guard *g)
{
    for (uint32_t i = 0; i < g->ngroup; i++)
        for (uint32_t k = 0; k < g->group[i].nsrv; k++)
            guard_drop(&g->group[i].srv[k]);
    free(g->group);
    memset(g, 0, sizeof(*g));
}

uint32_t guard_probe_ms(const struct guard *g)
{
    /*
     * A probe is short: a server that answers nothing (cut off, hung) is
     * known within half of down_after_ms, not after the 2 s the guard gives
     * its other statements (a replica applying, CHANGE MASTER).
     */
    uint32_t ms = g->conf->down_after_ms / 2;

    return ms < 200 ? 200 : ms > 2000 ? 2000 : ms;
}

static uint32_t connect_ms(const struct guard *g)
{
    if (g->conf->probe_ms >= 500)
        return 500;
    return g->conf->probe_ms < 100 ? 100 : g->conf->probe_ms;
}

/* An open connection to s (the operator account, several statements a call). */
int guard_connect(struct guard *g, struct guard_group *gr, struct guard_server *s)
{
    struct sql_conn_opts opts = {.connect_timeout_ms = connect_ms(g),
                                 .query_timeout_ms = 2000,
                                 .multi_statements = 1};
    struct sql_endpoint ep;
    int rc;

    if (s->c != NULL)
        return 0;
    rc = sql_endpoint_of(g->conf, gr->host, s->addr, s->port, &ep);
    if (rc < 0)
        return rc;
    snprintf(ep.name, sizeof(ep.name), "%s", s->name);
    return sql_conn_open(&ep, &opts, &s->c);
}

/*
 * s's aux connection, opened unless it is open; after a connect that
 * failed, none is tried for down_after_ms (a round must not wait for a
 * connect each time). Its statements have the probe's deadline.
 */
static int aux_connect(struct guard *g, struct guard_group *gr, struct guard_server *s)
{
    struct sql_conn_opts opts = {.connect_timeout_ms = connect_ms(g),
                                 .query_timeout_ms = guard_probe_ms(g)};
    struct sql_endpoint ep;
    int64_t now = sql_now_ms();
    char id[24];
    int rc;

    if (s->aux != NULL)
        return 0;
    if (now < s->aux_retry_ms) {
        sql_set_error("server %s: its second connection failed just now", s->name);
        return BC_EDOWN;
    }
    rc = sql_endpoint_of(g->conf, gr->host, s->addr, s->port, &ep);
    if (rc == 0) {
        snprintf(ep.name, sizeof(ep.name), "%s", s->name);
        rc = sql_conn_open(&ep, &opts, &s->aux);
    }
    if (rc == 0) {
        rc = sql_value(s->aux, id, sizeof(id), "SELECT CONNECTION_ID()");
        if (rc == 1) {
            s->aux_id = (uint32_t)strtoul(id, NULL, 10);
            return 0;
        }
        if (rc == 0)
            rc = BC_EQUERY;
    }
    sql_conn_close(s->aux);
    s->aux = NULL;
    s->aux_retry_ms = now + g->conf->down_after_ms;
    return rc;
}

void guard_drop(struct guard_server *s)
{
    sql_conn_close(s->c);
    s->c = NULL;
    sql_conn_close(s->aux);
    s->aux = NULL;
}

/* Runs a statement on *cp; a failure that broke the connection closes it. */
static int exec_on(struct sql_conn **cp, const char *name, struct sql_rows *rows,
                   const char *fmt, va_list ap)
{
    struct sql_buf b = {0};
    int rc;

    if (*cp == NULL) {
        sql_set_error("server %s: not connected", name);
        return BC_EDOWN;
    }
    rc = sql_vformat(&b, NULL, 0, fmt, ap);
    if (rc == 0)
        rc = sql_query(*cp, b.buf, b.len, rows);
    sql_buf_deinit(&b);
    if (rc < 0 && sql_conn_broken(*cp)) {
        sql_conn_close(*cp);
        *cp = NULL;
    }
    return rc;
}

/* Runs a statement on s; a failure that broke the connection drops it. */
int guard_exec(struct guard_server *s, struct sql_rows *rows, const char *fmt, ...)
{
    va_list ap;
    int rc;
    int was_open = s->c != NULL;

    va_start(ap, fmt);
    rc = exec_on(&s->c, s->name, rows, fmt, ap);
    va_end(ap);
    if (was_open && s->c == NULL)
        guard_drop(s); /* its aux too: the server is gone, or lost to us */
    return rc;
}

int guard_aux_exec(struct guard *g, struct guard_group *gr, struct guard_server *s,
                   struct sql_rows *rows, const char *fmt, ...)
{
    va_list ap;
    int rc;

    rc = aux_connect(g, gr, s);
    if (rc < 0)
        return rc;
    va_start(ap, fmt);
    rc = exec_on(&s->aux, s->name, rows, fmt, ap);
    va_end(ap);
    return rc;
}

/*
 * The sequence number of domain in a GTID list ("1-1-42,2-2-7"); 0 when
 * the list has none.
 */
uint64_t guard_gtid_seq(const char *list, uint32_t domain)
{
    const char *p = list;

    while (p != NULL && *p != '\0') {
        char *end;
        unsigned long d = strtoul(p, &end, 10);
        if (*end == '-') {
            const char *q = strchr(end + 1, '-');
            if (q != NULL && d == domain)
                return strtoull(q + 1, NULL, 10);
        }
        p = strchr(p, ',');
        if (p != NULL)
            p++;
    }
    return 0;
}

/*
 * Probes s: read_only, GTID positions, replication. Sets s->ok_ms on
 * success. Returns 0 or a status (the server did not answer).
 */
int guard_probe(struct guard *g, struct guard_group *gr, struct guard_server *s)
{
    struct sql_rows rows = {0};
    int rc;

    /*
     * Nothing here waits for a commit, an acknowledgement or a lock a
     * commit holds: a primary whose writes wait for a replica answers it.
     */
    rc = guard_connect(g, gr, s);
    if (rc == 0) {
        sql_conn_set_timeout(s->c, guard_probe_ms(g));
        rc = guard_exec(s, &rows,
                        "SELECT @@global.read_only, @@global.gtid_binlog_pos, "
                        "@@global.gtid_current_pos, @@global.gtid_domain_id, "
                        "@@global.rpl_semi_sync_master_enabled, (SELECT variable_value "
                        "FROM information_schema.GLOBAL_STATUS WHERE variable_name = "
                        "'RPL_SEMI_SYNC_MASTER_CLIENTS'), (SELECT variable_value FROM "
                        "information_schema.GLOBAL_STATUS WHERE variable_name = "
                        "'RPL_SEMI_SYNC_MASTER_WAIT_SESSIONS')");
    }
    if (rc == 0) {
        rc = sql_replica_status(s->c, "", &s->repl);
        s->replicating = rc == 0;
        if (rc == BC_ENOTFOUND)
            rc = 0; /* not a replica */
    }
    if (rc < 0) {
        sql_rows_free(&rows);
        guard_drop(s);
        return rc;
    }
    sql_conn_set_timeout(s->c, 2000);
    s->read_only = strcmp(sql_cell(&rows, 0, 0), "0") != 0;
    snprintf(s->binlog_pos, sizeof(s->binlog_pos), "%s",
             sql_cell(&rows, 0, 1) ? sql_cell(&rows, 0, 1) : "");
    snprintf(s->current_pos, sizeof(s->current_pos), "%s",
             sql_cell(&rows, 0, 2) ? sql_cell(&rows, 0, 2) : "");
    gr->domain = (uint32_t)strtoul(sql_cell(&rows, 0, 3), NULL, 10);
    s->semi_sync = strcmp(sql_cell(&rows, 0, 4), "0") != 0;
    s->semi_clients =
        sql_cell(&rows, 0, 5) ? (uint32_t)strtoul(sql_cell(&rows, 0, 5), NULL, 10) : 0;
    s->semi_waits =
        sql_cell(&rows, 0, 6) ? (uint32_t)strtoul(sql_cell(&rows, 0, 6), NULL, 10) : 0;
    sql_rows_free(&rows);
    s->ok_ms = sql_now_ms();
    return 0;
}

/* ---- roles -------------------------------------------------------------------- */

/* The server of gr named name, or NULL. */
struct guard_server *guard_server(struct guard_group *gr, const char *name)
{
    for (uint32_t k = 0; k < gr->nsrv; k++)
        if (strcmp(gr->srv[k].name, name) == 0)
            return &gr->srv[k];
    return NULL;
}

/* A catalog over the global group's primary connection. */
int guard_catalog(struct guard *g, struct catalog *cat)
{
    struct guard_server *p = &g->global->srv[g->global->primary];
    struct sql_executor exec;

    if (guard_connect(g, g->global, p) < 0)
        return BC_EDOWN;
    sql_conn_executor(p->c, &exec);
    catalog_init(cat, g->conf, &exec);
    return 0;
}

/*
 * Finds the global group's primary before the catalog can be read: the
 * writable server if there is one, else the one whose catalog has the
 * highest map version (a flip bumps it), else the config's.
 */
void guard_find_global_primary(struct guard *g, int at_start)
{
    struct guard_group *gr = g->global;
    uint64_t best = 0;

    for (uint32_t k = 0; k < gr->nsrv; k++) {
        struct guard_server *s = &gr->srv[k];
        struct sql_rows rows = {0};

        if (guard_probe(g, gr, s) < 0)
            continue;
        if (!s->read_only) {
            gr->primary = k;
            return;
        }
        /*
         * Later, no writable server means the primary is gone or being
         * switched: the catalog's word stands (a failover decides).
         */
        if (!at_start)
            continue;
        if (guard_exec(s, &rows, "SELECT version FROM %I.map_version WHERE id = 1",
                       g->global_schema) == 0 &&
            rows.nrow == 1) {
            uint64_t v = strtoull(sql_cell(&rows, 0, 0), NULL, 10);
            if (v > best) {
                best = v;
                gr->primary = k;
            }
        }
        sql_rows_free(&rows);
    }
}

int guard_load_roles(struct guard *g)
{
    struct catalog_server *srv = NULL;
    struct catalog cat;
    uint32_t n = 0;
    int rc;

    rc = guard_catalog(g, &cat);
    if (rc == 0)
        rc = catalog_map_version(&cat, &g->version);
    if (rc == BC_ENOTFOUND) {
        g->version = 0; /* no cluster yet: the config's roles */
        return 0;
    }
    if (rc == 0)
        rc = catalog_servers_load(&cat, &srv, &n);
    if (rc < 0)
        return rc;
    for (uint32_t i = 0; i < n; i++) {
        for (uint32_t j = 0; j < g->ngroup; j++) {
            struct guard_group *gr = &g->group[j];
            struct guard_server *s;

            if (strcmp(gr->host, srv[i].host) != 0 ||
                (s = guard_server(gr, srv[i].name)) == NULL)
                continue;
            s->role = srv[i].role;
            snprintf(s->note, sizeof(s->note), "%s", srv[i].note);
            if (s->role == CATALOG_ROLE_PRIMARY)
                gr->primary = (uint32_t)(s - gr->srv);
        }
    }
    free(srv);
    return 0;
}

/* Points replica s at the primary p of its group (GTID, from where s is). */
int guard_replicate(struct guard *g, struct guard_group *gr, struct guard_server *s,
                    struct guard_server *p)
{
    struct sql_endpoint ep;
    int rc;

    rc = sql_endpoint_of(g->conf, gr->host, p->addr, p->port, &ep);
    if (rc < 0)
        return rc;
    rc = guard_exec(s, NULL,
                    "STOP SLAVE; SET GLOBAL read_only = 1; "
                    "SET GLOBAL rpl_semi_sync_master_enabled = 0; "
                    /* A lost primary is noticed, and STOP SLAVE returns, within 4 s. */
                    "SET GLOBAL slave_net_timeout = 4");
    if (rc < 0)
        return rc;
    /*
     * From where its binlog ends: an old primary resumes from what it wrote
     * itself, a replica from what it applied (it logs that too). Not
     * current_pos: a move's replication connection on this server may have
     * moved its slave position in another host's domain past what the new
     * primary logged (the events it filtered out), and the primary would
     * refuse that position (error 1236). Setting it needs every
     * replication connection stopped: with a move's running, current_pos.
     */
    const char *use = "slave_pos";
    if (s->moves_dropped || /* as with them running (guard_drop_move_connections) */
        guard_exec(s, NULL, "SET GLOBAL gtid_slave_pos = @@global.gtid_binlog_pos") < 0)
        use = "current_pos";
    s->moves_dropped = 0;
    rc =
        guard_exec(s, NULL,
                   "CHANGE MASTER TO MASTER_HOST = %s, MASTER_PORT = %u, "
                   "MASTER_USER = %s, MASTER_PASSWORD = %s, MASTER_USE_GTID = %R, "
                   "MASTER_CONNECT_RETRY = 1, MASTER_HEARTBEAT_PERIOD = 1; START SLAVE",
                   p->addr, (uint64_t)p->port, ep.user, ep.password, use);
    if (rc == 0)
        guard_log("%s: %s replicates from %s (%s:%u)", gr->host, s->name, p->name,
                  p->addr, p->port);
    return rc;
}

int guard_drop_move_connections(struct guard *g, struct guard_group *gr,
                                struct guard_server *s)
{
    struct sql_rows rows = {0};
    size_t n = strlen(g->conf->schema_prefix);
    int dropped = 0;

    if (guard_exec(s, &rows, "SHOW ALL SLAVES STATUS") < 0)
        return 0;
    for (uint32_t i = 0; i < rows.nrow; i++) {
        const char *name = sql_cell(&rows, i, 0);

        if (name == NULL || strncmp(name, g->conf->schema_prefix, n) != 0 ||
            strncmp(name + n, "_move_", 6) != 0)
            continue;
        if (guard_exec(s, NULL, "STOP SLAVE %s; RESET SLAVE %s ALL", name, name) == 0 &&
            ++dropped)
            guard_log("%s: %s: the replication connection %s of a move into it, "
                      "from before its failover, removed",
                      gr->host, s->name, name);
        else
            guard_log("%s: %s: cannot remove the replication connection %s of a move "
                      "into it (%s): remove it by hand (STOP SLAVE '%s'; RESET SLAVE "
                      "'%s' ALL)",
                      gr->host, s->name, name, sql_last_error(), name, name);
    }
    sql_rows_free(&rows);
    s->moves_dropped |= dropped > 0;
    return dropped;
}

int guard_relay_log_retry(struct guard_group *gr, struct guard_server *s)
{
    if (s->repl.last_io_errno != ER_SLAVE_RELAY_LOG_WRITE_FAILURE ||
        !s->repl.io_stopped)
        return 0;
    if (guard_exec(s, NULL, "STOP SLAVE; START SLAVE") < 0)
        return 0;
    guard_log("%s: replica %s: %s: its replication started again", gr->host, s->name,
              s->repl.last_io_error);
    return 1;
}

/*
 * A replica is read-only and does not wait for acknowledgements itself (its
 * applier would wait for replicas it does not have).
 */
void guard_replica_settle(struct guard_server *s)
{
    if ((s->semi_sync || !s->read_only) &&
        guard_exec(
            s, NULL,
            "SET GLOBAL read_only = 1; SET GLOBAL rpl_semi_sync_master_enabled = 0") ==
            0) {
        s->semi_sync = 0;
        s->read_only = 1;
    }
}

/* Whether replica s is set to replicate from p. */
int guard_replicates_from(const struct guard_server *s, const struct guard_server *p)
{
    return s->replicating && s->repl.master_port == p->port &&
           strcmp(s->repl.master_host, p->addr) == 0;
}

/*
 * Semi-sync waiting on primary p. On whenever a replica replicates from it.
 * Off only when promote says so: a replica promoted with no replica left
 * (unless --require-replica), the one case where writes are acknowledged by
 * one server, on purpose and said. A primary that merely loses its replicas
 * keeps waiting: its writes fail (503) rather than exist on one server.
 */
void guard_semi_sync(struct guard *g, struct guard_group *gr, struct guard_server *p,
                     int live_replicas, enum guard_semi why)
{
    /* Off only after a promotion, or at start for a primary left that way. */
    int keep_off =
        why == GUARD_SEMI_PROMOTED ||
        (why == GUARD_SEMI_START && strncmp(p->note, "unreplicated", 12) == 0);
    int want = live_replicas > 0 || g->require_replica || !keep_off;

    /* A round: only ever turned on (a replica caught up), never off. */
    if (why == GUARD_SEMI_ROUND && live_replicas == 0)
        return;
    const char *note = want ? "" : "unreplicated: semi-sync waiting off (no replica)";
    struct catalog cat;

    if (p->c == NULL || p->semi_sync == want)
        return;
    if (guard_exec(p, NULL, "SET GLOBAL rpl_semi_sync_master_enabled = %u",
                   (uint64_t)want) < 0)
        return;
    p->semi_sync = want;
    guard_log("%s: %s: semi-sync waiting %s%s", gr->host, p->name, want ? "on" : "OFF",
              want ? ""
                   : " (no replica left: writes are acknowledged by the primary "
                     "alone until one is back)");
    /* Said where operators look: shardctl status shows the note. */
    if (g->version > 0 && strcmp(p->note, note) != 0 && guard_catalog(g, &cat) == 0 &&
        catalog_server_set_note(&cat, p->name, note) == 0)
        snprintf(p->note, sizeof(p->note), "%s", note);
}

/*
 * The heartbeat, written only while p is writable: the guard's account may
 * write to a read-only server, and a write on a primary being switched
 * over would be a transaction its successor never gets. SET GLOBAL
 * read_only waits for a statement under way, so the check and the write
 * are one.
 *
 * It is a commit, which semi-sync holds until a replica acknowledges it;
 * the round (tick_group) writes it only when one should, but a replica may
 * be cut off a moment after it was seen. So it runs on p's aux connection,
 * never the probes' (a missed deadline breaks a connection, and a primary
 * that accepts no new connection for a while, as happens when a replica
 * reconnects, must still answer its probes). One left waiting is not
 * killed: a killed wait commits without the acknowledgement (a row on one
 * server); it ends when the replica is back, or with the server's other
 * sessions if it is fenced. Until it ends, no other is written, so at most
 * one waits.
 */
int guard_heartbeat(struct guard *g, struct guard_group *gr, struct guard_server *p)
{
    struct sql_rows rows = {0};
    uint32_t id;
    int rc;

    if (p->hb_waiting != 0) {
        rc = guard_exec(
            p, &rows,
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE id = %u",
            (uint64_t)p->hb_waiting);
        int waits = rc < 0 || rows.nrow != 1 || strcmp(sql_cell(&rows, 0, 0), "0") != 0;
        sql_rows_free(&rows);
        if (waits)
            return 1;
        guard_log("%s: %s: the heartbeat that waited for an acknowledgement is done",
                  gr->host, p->name);
        p->hb_waiting = 0;
    }
    rc = aux_connect(g, gr, p);
    if (rc < 0)
        return rc;
    id = p->aux_id;
    rc = guard_aux_exec(g, gr, p, NULL,
                        "REPLACE INTO %I.heartbeat (id, ts_ms, server) "
                        "SELECT 1, CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED), %s "
                        "FROM DUAL WHERE @@global.read_only = 0",
                        g->heartbeat_schema, p->name);
    if (rc == BC_ETIMEOUT) {
        p->hb_waiting = id;
        guard_log("%s: %s: the heartbeat waits for an acknowledgement (session %u): "
                  "no other until it is done",
                  gr->host, p->name, id);
        return 1;
    }
    return rc;
}

/*
 * Makes group gr as the roles say: the primary writable with a heartbeat
 * table, the replicas read-only and replicating from it.
 */
int guard_converge(struct guard *g, struct guard_group *gr)
{
    struct guard_server *p = &gr->srv[gr->primary];
    int live = 0, rc;

    if (guard_probe(g, gr, p) < 0)
        return BC_EDOWN;
    if (p->replicating) {
        rc = guard_exec(p, NULL, "STOP SLAVE; RESET SLAVE ALL");
        if (rc < 0)
            return rc;
        p->replicating = 0;
    }
    for (uint32_t k = 0; k < gr->nsrv; k++) {
        struct guard_server *s = &gr->srv[k];

        if (k == gr->primary || s->role != CATALOG_ROLE_REPLICA)
            continue;
        if (guard_probe(g, gr, s) < 0) {
            guard_log("%s: replica %s does not answer: %s", gr->host, s->name,
                      sql_last_error());
            continue;
        }
        if (!guard_replicates_from(s, p) && guard_replicate(g, gr, s, p) < 0) {
            guard_log("%s: %s: cannot set up replication: %s", gr->host, s->name,
                      sql_last_error());
            continue;
        }
        guard_replica_settle(s);
        live++;
    }
    guard_semi_sync(g, gr, p, live, GUARD_SEMI_START);
    if (p->read_only) {
        rc = guard_exec(p, NULL, "SET GLOBAL read_only = 0");
        if (rc < 0)
            return rc;
        p->read_only = 0;
        guard_log("%s: %s (%s:%u) is the primary: writable", gr->host, p->name, p->addr,
                  p->port);
    }
    rc = guard_exec(p, NULL,
                    "CREATE DATABASE IF NOT EXISTS %I; "
                    "CREATE TABLE IF NOT EXISTS %I.heartbeat (id TINYINT UNSIGNED NOT "
                    "NULL PRIMARY KEY, ts_ms BIGINT NOT NULL, server VARCHAR(64) NOT "
                    "NULL) ENGINE=InnoDB",
                    g->heartbeat_schema, g->heartbeat_schema);
    if (rc == 0)
        rc = guard_heartbeat(g, gr, p);
    return rc < 0 ? rc : 0;
}

int guard_setup(struct guard *g)
{
    int rc, failed = 0;

    snprintf(g->global_schema, sizeof(g->global_schema), "%s_global",
             g->conf->schema_prefix);
    snprintf(g->heartbeat_schema, sizeof(g->heartbeat_schema), "%s_heartbeat",
             g->conf->schema_prefix);
    guard_find_global_primary(g, 1);
    rc = guard_load_roles(g);
    if (rc < 0) {
        guard_log("cannot read the roles from the catalog: %s", sql_last_error());
        return rc;
    }
    for (uint32_t i = 0; i < g->ngroup; i++) {
        rc = guard_converge(g, &g->group[i]);
        if (rc < 0) {
            guard_log("%s: %s", g->group[i].host, sql_last_error());
            failed = 1;
        }
    }
    if (g->version > 0) {
        struct catalog cat;
        if (guard_catalog(g, &cat) == 0 && catalog_servers_sync(&cat, g->conf) < 0)
            guard_log("cannot record the servers in the catalog: %s", sql_last_error());
    }
    return failed ? BC_EDOWN : 0;
}

/* ---- the command ----------------------------------------------------------------- */

int shardctl_guard(const struct shardmap_conf *conf, int once, int require_replica)
{
    struct sigaction sa = {0};
    struct guard g;
    int rc;

    if (guard_init(&g, conf, require_replica) < 0) {
        fprintf(stderr, "shardctl guard: out of memory\n");
        return 1;
    }
    /* Before the setup, which may wait on hosts: a stop then ends it too. */
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    rc = guard_setup(&g);
    if (once) {
        guard_deinit(&g);
        return rc < 0 ? 3 : 0;
    }
    guard_log("watching %u hosts: probe every %u ms, failover after %u ms%s", g.ngroup,
              conf->probe_ms, conf->down_after_ms,
              require_replica ? ", never without a replica" : "");
    while (!stop_flag) {
        int64_t t0 = sql_now_ms();

        if (hup_flag) {
            hup_flag = 0;
            guard_log("SIGHUP: nothing to reload (the config is read at start): "
                      "restart the guard to change it");
        }

        guard_tick(&g);
        int64_t left = (int64_t)conf->probe_ms - (sql_now_ms() - t0);
        if (left > 0) {
            struct timespec ts = {left / 1000, (long)(left % 1000) * 1000000};
            nanosleep(&ts, NULL);
        }
    }
    guard_log("stopped");
    guard_deinit(&g);
    return 0;
}
