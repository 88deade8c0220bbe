/*
 * shardctl_status.c: the servers' part of `shardctl status`: each server of
 * the catalog probed as the guard probes it (up, writable, replicating, its
 * lag from the heartbeat), with the catalog's note and the server's own
 * replication error or stop.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "catalog/catalog.h"
#include "tools/shardctl.h"
#include "tools/shardctl_guard.h"

/* One server's live state for `shardctl status`. */
struct server_state {
    int up, read_only, io, sql;
    long lag_ms; /* from the heartbeat; -1 unknown */
    char error[1100];
};

static void server_state(const struct shardmap_conf *conf,
                         const struct catalog_server *cs, struct server_state *st)
{
    struct guard_server s = {0};
    struct guard g = {.conf = conf};
    struct guard_group gr = {0};
    struct sql_rows rows = {0};

    memset(st, 0, sizeof(*st));
    st->lag_ms = -1;
    snprintf(g.heartbeat_schema, sizeof(g.heartbeat_schema), "%s_heartbeat",
             conf->schema_prefix);
    snprintf(gr.host, sizeof(gr.host), "%s", cs->host);
    snprintf(s.name, sizeof(s.name), "%s", cs->name);
    snprintf(s.addr, sizeof(s.addr), "%s", cs->addr);
    s.port = cs->port;
    if (guard_probe(&g, &gr, &s) < 0)
        return;
    st->up = 1;
    st->read_only = s.read_only;
    st->io = s.replicating && s.repl.io_running;
    st->sql = s.replicating && s.repl.sql_running;
    snprintf(st->error, sizeof(st->error), "%s%s", s.repl.last_io_error,
             s.repl.last_sql_error);
    /* A replica that does not replicate says so, with or without an error. */
    if (cs->role == CATALOG_ROLE_REPLICA && st->error[0] == '\0' &&
        (!st->io || !st->sql))
        snprintf(st->error, sizeof(st->error),
                 "not replicating (io %s, sql %s, no error)",
                 st->io ? "running" : "stopped", st->sql ? "running" : "stopped");
    /* A replica's lag as the routers measure it: now minus the last heartbeat. */
    if (cs->role == CATALOG_ROLE_REPLICA &&
        guard_exec(&s, &rows,
                   "SELECT CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED) - ts_ms "
                   "FROM %I.heartbeat WHERE id = 1",
                   g.heartbeat_schema) == 0 &&
        rows.nrow == 1 && sql_cell(&rows, 0, 0) != NULL)
        st->lag_ms = strtol(sql_cell(&rows, 0, 0), NULL, 10);
    sql_rows_free(&rows);
    guard_drop(&s);
}

int shardctl_servers_status(const struct shardmap_conf *conf, struct catalog *cat,
                            int json)
{
    struct catalog_server *srv = NULL;
    uint32_t n = 0;
    int bad = 0;

    if (catalog_servers_load(cat, &srv, &n) < 0 || n == 0) {
        free(srv);
        if (json)
            printf(",\"servers\":[]");
        return 0;
    }
    if (json)
        printf(",\"servers\":[");
    else
        printf("%-12s %-8s %-22s %-8s %-5s %-9s %8s  %s\n", "SERVER", "HOST", "ADDRESS",
               "ROLE", "STATE", "WRITABLE", "LAG(ms)", "NOTE");
    for (uint32_t i = 0; i < n; i++) {
        const struct catalog_server *cs = &srv[i];
        struct server_state st;
        char addr[300], lag[32], note[1400];

        server_state(conf, cs, &st);
        snprintf(addr, sizeof(addr), "%s:%u", cs->addr, cs->port);
        snprintf(lag, sizeof(lag), "%ld", st.lag_ms);
        snprintf(note, sizeof(note), "%s%s%s", cs->note,
                 cs->note[0] && st.error[0] ? "; " : "", st.error);
        /* A primary that does not answer, or a replica that does not replicate. */
        bad |= (cs->role == CATALOG_ROLE_PRIMARY && (!st.up || st.read_only)) ||
               (cs->role == CATALOG_ROLE_REPLICA && (!st.up || !st.io || !st.sql));
        if (json) {
            char jnote[2900];
            sc_json_str(jnote, sizeof(jnote), note);
            printf("%s{\"name\":\"%s\",\"host\":\"%s\",\"addr\":\"%s\",\"role\":\"%s\","
                   "\"up\":%s,\"writable\":%s,\"replicating\":%s,\"lag_ms\":%s,"
                   "\"note\":\"%s\"}",
                   i ? "," : "", cs->name, cs->host, addr, catalog_role_name(cs->role),
                   st.up ? "true" : "false", st.up && !st.read_only ? "true" : "false",
                   st.io && st.sql ? "true" : "false", st.lag_ms >= 0 ? lag : "null",
                   jnote);
        } else {
            printf("%-12s %-8s %-22s %-8s %-5s %-9s %8s  %s\n", cs->name, cs->host,
                   addr, catalog_role_name(cs->role), st.up ? "up" : "DOWN",
                   !st.up         ? "-"
                   : st.read_only ? "no"
                                  : "yes",
                   st.lag_ms >= 0 ? lag : "-", note);
        }
    }
    if (json)
        printf("]");
    free(srv);
    return bad;
}
