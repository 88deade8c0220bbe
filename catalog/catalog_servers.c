/*
 * catalog_servers.c: the servers of each host (replication group) and the
 * flips of its primary.
 *
 * The shard map names hosts; a host's row in hosts carries the address of
 * its primary. A flip (the guard's failover, a switchover) changes that
 * address, the servers' roles and map_version in one transaction, so that
 * every router that sees the new version also sees the new primary, and
 * none sees one without the other.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "catalog/catalog_int.h"

static const char *const role_names[] = {"primary", "replica", "fenced", "rebuild"};

const char *catalog_role_name(enum catalog_role role)
{
    return (unsigned)role < sizeof(role_names) / sizeof(role_names[0])
               ? role_names[role]
               : "?";
}

static enum catalog_role role_of(const char *s)
{
    for (unsigned i = 0; i < sizeof(role_names) / sizeof(role_names[0]); i++) {
        if (s != NULL && strcmp(s, role_names[i]) == 0)
            return (enum catalog_role)i;
    }
    return CATALOG_ROLE_FENCED; /* unknown: never route to it */
}

int catalog_servers_load(struct catalog *cat, struct catalog_server **out, uint32_t *n)
{
    struct sql_rows rows = {0};
    int rc;

    *out = NULL;
    *n = 0;
    rc = catalog__run(cat, &rows,
                      "SELECT name, host, addr, port, role, note FROM %S.servers "
                      "ORDER BY host, name");
    if (rc == BC_ENOSCHEMA)
        return 0;
    if (rc < 0)
        return rc;
    if (rows.nrow > 0) {
        *out = calloc(rows.nrow, sizeof(**out));
        if (*out == NULL) {
            sql_rows_free(&rows);
            return -ENOMEM;
        }
    }
    for (uint32_t i = 0; i < rows.nrow; i++) {
        struct catalog_server *s = &(*out)[i];

        catalog__str(s->name, sizeof(s->name), sql_cell(&rows, i, 0));
        catalog__str(s->host, sizeof(s->host), sql_cell(&rows, i, 1));
        catalog__str(s->addr, sizeof(s->addr), sql_cell(&rows, i, 2));
        s->port = (uint16_t)catalog__u64(sql_cell(&rows, i, 3));
        s->role = role_of(sql_cell(&rows, i, 4));
        catalog__str(s->note, sizeof(s->note), sql_cell(&rows, i, 5));
    }
    *n = rows.nrow;
    sql_rows_free(&rows);
    return 0;
}

/* One server row for INSERT IGNORE: (name, host, addr, port, role). */
static int add_row(struct catalog *cat, struct sql_buf *b, int first, const char *name,
                   const char *host, const char *addr, uint16_t port,
                   enum catalog_role role)
{
    return catalog__add(cat, b, "%R(%s, %s, %s, %u, %s)", first ? "" : ", ", name, host,
                        addr, (uint64_t)port, catalog_role_name(role));
}

int catalog_servers_sync(struct catalog *cat, const struct shardmap_conf *conf)
{
    struct sql_rows rows = {0};
    struct sql_buf b = {0};
    int rc, first = 1, nrep = 0;

    /*
     * Primaries and replicas apart: only new replicas change what routers
     * do (their reads), so only they make a new map version.
     */
    rc = catalog__add(cat, &b,
                      "START TRANSACTION; "
                      "INSERT IGNORE INTO %S.servers (name, host, addr, port, "
                      "role) VALUES ");
    for (uint32_t i = 0; rc == 0 && i < conf->nhost; i++) {
        const struct shardmap_host_conf *h = &conf->hosts[i];

        rc = add_row(cat, &b, first, h->name, h->name, h->addr, h->port,
                     CATALOG_ROLE_PRIMARY);
        first = 0;
        nrep += (int)h->nreplica;
    }
    if (rc == 0 && nrep > 0) {
        first = 1;
        rc = catalog__add(cat, &b,
                          "; INSERT IGNORE INTO %S.servers (name, host, addr, "
                          "port, role) VALUES ");
        for (uint32_t i = 0; rc == 0 && i < conf->nhost; i++) {
            const struct shardmap_host_conf *h = &conf->hosts[i];

            for (uint32_t k = 0; rc == 0 && k < h->nreplica; k++) {
                rc = add_row(cat, &b, first, h->replicas[k].name, h->name,
                             h->replicas[k].addr, h->replicas[k].port,
                             CATALOG_ROLE_REPLICA);
                first = 0;
            }
        }
        if (rc == 0)
            rc = catalog__add(cat, &b,
                              "; SET @bc_added = ROW_COUNT(); "
                              "UPDATE %S.map_version SET version = version + 1 "
                              "WHERE id = 1 AND @bc_added > 0");
    }
    if (rc < 0 || conf->nhost == 0) {
        sql_buf_deinit(&b);
        return rc;
    }
    rc = catalog__commit(cat, &b, &rows);
    sql_rows_free(&rows);
    return rc;
}

int catalog_promote(struct catalog *cat, const char *host, const char *server,
                    enum catalog_role old_role, const char *note)
{
    struct sql_rows rows = {0};
    struct sql_buf b = {0};
    int rc;

    /* Nothing changes unless server is one of host's (@bc_ok). */
    rc = catalog__add(
        cat, &b,
        "START TRANSACTION; "
        "SELECT COUNT(*) INTO @bc_ok FROM %S.servers WHERE name = %s AND "
        "host = %s; "
        "UPDATE %S.hosts h JOIN %S.servers s ON s.name = %s AND s.host = "
        "h.name SET h.addr = s.addr, h.port = s.port WHERE h.name = %s; "
        "UPDATE %S.servers SET role = %s, note = %s WHERE host = %s AND "
        "role = 'primary' AND name <> %s AND @bc_ok = 1; "
        "UPDATE %S.servers SET role = 'primary', note = '' WHERE name = %s "
        "AND host = %s; "
        "UPDATE %S.map_version SET version = version + 1 WHERE id = 1 AND "
        "@bc_ok = 1; "
        "SELECT @bc_ok",
        server, host, server, host, catalog_role_name(old_role), note, host, server,
        server, host);
    if (rc < 0) {
        sql_buf_deinit(&b);
        return rc;
    }
    rc = catalog__commit(cat, &b, &rows);
    if (rc == 0 && (rows.nrow != 1 || catalog__u64(sql_cell(&rows, 0, 0)) != 1)) {
        sql_set_error("%s is not a server of host %s", server, host);
        rc = BC_ENOTFOUND;
    }
    sql_rows_free(&rows);
    return rc;
}

int catalog_server_set_role(struct catalog *cat, const char *server,
                            enum catalog_role role, const char *note)
{
    struct sql_buf b = {0};
    int rc;

    rc = catalog__add(cat, &b,
                      "START TRANSACTION; "
                      "UPDATE %S.servers SET role = %s, note = %s WHERE name = %s; "
                      "UPDATE %S.map_version SET version = version + 1 WHERE id = 1",
                      catalog_role_name(role), note, server);
    if (rc < 0) {
        sql_buf_deinit(&b);
        return rc;
    }
    return catalog__commit(cat, &b, NULL);
}

int catalog_server_set_note(struct catalog *cat, const char *server, const char *note)
{
    return catalog__run(cat, NULL, "UPDATE %S.servers SET note = %s WHERE name = %s",
                        note, server);
}

/*
 * Of the global host's servers the config lists (its first primary and its
 * replicas) that answer, the one whose catalog has the highest map version,
 * writable ones only when writable; *server names it. 0, or BC_EDOWN with
 * the last server's error in why (a refused password is no server down).
 */
static int global_newest(const struct shardmap_conf *conf,
                         const struct shardmap_host_conf *h, int writable,
                         struct sql_endpoint *ep, const char **server, char *why,
                         size_t whylen)
{
    static const struct sql_conn_opts opts = {.connect_timeout_ms = 500,
                                              .query_timeout_ms = 1000};
    uint64_t best = 0;
    int found = 0;
    char sql[160];

    /* The prefix is [a-z0-9_] (checked when the config was loaded). */
    snprintf(sql, sizeof(sql),
             "SELECT version FROM `%s_global`.map_version WHERE id = 1%s",
             conf->schema_prefix, writable ? " AND @@global.read_only = 0" : "");
    for (uint32_t k = 0; k <= h->nreplica; k++) {
        const char *addr = k == 0 ? h->addr : h->replicas[k - 1].addr;
        uint16_t port = k == 0 ? h->port : h->replicas[k - 1].port;
        struct sql_endpoint cand;
        struct sql_conn *c = NULL;
        char v[32];

        if (sql_endpoint_of(conf, h->name, addr, port, &cand) != 0 ||
            sql_conn_open(&cand, &opts, &c) != 0) {
            snprintf(why, whylen, "; last: %s", sql_last_error());
            continue;
        }
        if (sql_value(c, v, sizeof(v), "%R", sql) == 1 &&
            (!found || strtoull(v, NULL, 10) > best)) {
            best = strtoull(v, NULL, 10);
            *ep = cand;
            if (server != NULL)
                *server = k == 0 ? h->name : h->replicas[k - 1].name;
            found = 1;
        }
        sql_conn_close(c);
    }
    return found ? 0 : BC_EDOWN;
}

static const struct shardmap_host_conf *
global_host_conf(const struct shardmap_conf *conf)
{
    int i = shardmap_conf_host(conf, conf->global_host);

    if (i < 0) {
        sql_set_error("global host '%s' is not one of the hosts", conf->global_host);
        return NULL;
    }
    return &conf->hosts[i];
}

int catalog_global_endpoint(const struct shardmap_conf *conf, struct sql_endpoint *ep)
{
    const struct shardmap_host_conf *h = global_host_conf(conf);

    if (h == NULL)
        return BC_EHOST;
    if (h->nreplica == 0)
        return sql_endpoint_of(conf, h->name, NULL, 0, ep);
    char why[600] = "";

    if (global_newest(conf, h, 1, ep, NULL, why, sizeof(why)) < 0) {
        sql_set_error("no writable server of the global host %s answers (its primary "
                      "is down or being switched, see shardctl status%s)",
                      h->name, why);
        return BC_EDOWN;
    }
    return 0;
}

int catalog_global_newest(const struct shardmap_conf *conf, struct sql_endpoint *ep,
                          const char **server)
{
    const struct shardmap_host_conf *h = global_host_conf(conf);

    if (h == NULL)
        return BC_EHOST;
    char why[600] = "";

    if (global_newest(conf, h, 0, ep, server, why, sizeof(why)) < 0) {
        sql_set_error("no server of the global host %s answers with a catalog%s",
                      h->name, why);
        return BC_EDOWN;
    }
    return 0;
}
