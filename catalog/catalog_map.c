/*
 * catalog_map.c: the hosts and the shard map as stored in the global schema.
 *
 * hosts holds the hosts in the order they were written (ord), shard_map one
 * row per shard (its host, its enum shardmap_state, the version of its last
 * change), map_version the map's version. Every change of hosts or of a
 * shard's host is one transaction that also bumps map_version, and the map
 * is read in one statement, so a reader always gets a map with its version.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "catalog/catalog_int.h"

void catalog_map_deinit(struct catalog_map *m)
{
    shardmap_destroy(m->map);
    m->map = NULL;
    m->nhost = 0;
}

/*
 * Hosts (kind 0, by ord) and shards (kind 1, by number) in one statement,
 * hence one snapshot, each row with the version:
 *   kind, ord/shard, name/host, addr, port, weight/state, version
 */
static const char load_sql[] =
    "SELECT 0, h.ord, h.name, h.addr, h.port, h.weight, v.version "
    "FROM %S.hosts h JOIN %S.map_version v ON v.id = 1 "
    "UNION ALL "
    "SELECT 1, m.shard, m.host, NULL, NULL, m.state, v.version "
    "FROM %S.shard_map m JOIN %S.map_version v ON v.id = 1 "
    "ORDER BY 1, 2";

static int map_build(struct catalog *cat, const struct sql_rows *rows,
                     struct catalog_map *out)
{
    struct shardmap_node nodes[SHARDMAP_MAX_HOSTS];
    uint32_t nhost = 0, nshard;

    while (nhost < rows->nrow && strcmp(sql_cell(rows, nhost, 0), "0") == 0)
        nhost++;
    nshard = rows->nrow - nhost;
    if (nhost == 0 || nhost > SHARDMAP_MAX_HOSTS || nshard != cat->nshard) {
        sql_set_error("the shard map in %s does not fit the config: %u hosts, %u "
                      "shards, the config says %u shards",
                      cat->schema, nhost, nshard, cat->nshard);
        return BC_EMISMATCH;
    }
    for (uint32_t i = 0; i < nhost; i++) {
        struct catalog_host *h = &out->host[i];
        catalog__str(h->name, sizeof(h->name), sql_cell(rows, i, 2));
        catalog__str(h->addr, sizeof(h->addr), sql_cell(rows, i, 3));
        h->port = (uint16_t)catalog__u64(sql_cell(rows, i, 4));
        h->weight = (uint32_t)catalog__u64(sql_cell(rows, i, 5));
        memcpy(nodes[i].name, h->name, sizeof(nodes[i].name));
        nodes[i].weight = h->weight;
    }
    out->map =
        shardmap_create(cat->nshard, nodes, nhost, catalog__u64(sql_cell(rows, 0, 6)));
    if (out->map == NULL)
        return -ENOMEM;
    out->nhost = nhost;
    for (uint32_t s = 0; s < nshard; s++) {
        uint32_t row = nhost + s;
        const char *host = sql_cell(rows, row, 2);
        uint64_t shard = catalog__u64(sql_cell(rows, row, 1));
        uint64_t state = catalog__u64(sql_cell(rows, row, 5));
        int node = shardmap_node_index(out->map, host ? host : "");

        if (shard != s || node < 0 || state > SHARDMAP_STATE_FENCED) {
            sql_set_error("the shard map in %s is broken: row of shard %u (host "
                          "%s, state %u)",
                          cat->schema, s, host ? host : "NULL", (unsigned)state);
            catalog_map_deinit(out);
            return BC_EMISMATCH;
        }
        out->map->node_of[s] = (uint16_t)node;
        out->map->state[s] = (uint8_t)state;
    }
    return 0;
}

int catalog_map_load(struct catalog *cat, struct catalog_map *out)
{
    struct sql_rows rows = {0};
    int rc;

    out->nhost = 0;
    out->map = NULL;
    rc = catalog__run(cat, &rows, load_sql);
    if (rc == BC_ENOSCHEMA || (rc == 0 && rows.nrow == 0))
        rc = catalog__no_cluster(cat);
    else if (rc == 0)
        rc = map_build(cat, &rows, out);
    sql_rows_free(&rows);
    return rc;
}

int catalog_map_create(struct catalog *cat, const struct shardmap_conf *conf,
                       const struct shardmap *map)
{
    struct sql_buf b = {0};
    int rc;

    if (map->nshard != cat->nshard || conf->nhost == 0) {
        sql_set_error("a map of %u shards for a cluster of %u", map->nshard,
                      cat->nshard);
        return -EINVAL;
    }
    for (uint32_t i = 0; i < map->nnode; i++) {
        if (shardmap_conf_host(conf, map->nodes[i].name) < 0) {
            sql_set_error("the map's host %s is not in the config", map->nodes[i].name);
            return -EINVAL;
        }
    }
    /* map_version first: an existing map fails the transaction at once. */
    rc = catalog__add(cat, &b,
                      "START TRANSACTION; "
                      "INSERT INTO %S.map_version (id, version) VALUES (1, 1); "
                      "INSERT INTO %S.cluster_meta (name, value) VALUES "
                      "('shards', %u), ('prefix', %s), ('cluster', %s); "
                      "INSERT INTO %S.hosts (name, ord, addr, port, weight) VALUES ",
                      (uint64_t)conf->nshard, conf->schema_prefix, conf->name);
    for (uint32_t i = 0; i < conf->nhost && rc == 0; i++) {
        const struct shardmap_host_conf *h = &conf->hosts[i];
        rc = catalog__add(cat, &b, "%R(%s, %u, %s, %u, %u)", i ? ", " : "", h->name,
                          (uint64_t)i, h->addr, (uint64_t)h->port,
                          (uint64_t)(h->weight ? h->weight : 1));
    }
    if (rc == 0)
        rc = catalog__add(cat, &b,
                          "; INSERT INTO %S.shard_map (shard, host, state, version) "
                          "VALUES ");
    for (uint32_t s = 0; s < map->nshard && rc == 0; s++)
        rc = catalog__add(cat, &b, "%R(%u, %s, %u, 1)", s ? ", " : "", (uint64_t)s,
                          map->nodes[map->node_of[s]].name, (uint64_t)map->state[s]);
    if (rc < 0) {
        sql_buf_deinit(&b);
        return rc;
    }
    rc = catalog__commit(cat, &b, NULL);
    if (rc == BC_EDUPKEY) {
        sql_set_error("a shard map exists already in %s", cat->schema);
        rc = BC_EEXISTS;
    }
    return rc;
}

int catalog_shard_host(struct catalog *cat, uint32_t shard,
                       char host[SHARDMAP_NAME_MAX])
{
    struct sql_rows rows = {0};
    int rc;

    if (shard >= cat->nshard) {
        sql_set_error("shard %u out of range (0..%u)", shard, cat->nshard - 1);
        return BC_ESHARD;
    }
    rc = catalog__run(cat, &rows, "SELECT host FROM %S.shard_map WHERE shard = %u",
                      (uint64_t)shard);
    if (rc == BC_ENOSCHEMA || (rc == 0 && rows.nrow == 0))
        rc = catalog__no_cluster(cat);
    else if (rc == 0)
        catalog__str(host, SHARDMAP_NAME_MAX, sql_cell(&rows, 0, 0));
    sql_rows_free(&rows);
    return rc;
}

int catalog_shard_set_state(struct catalog *cat, uint32_t shard,
                            enum shardmap_state state)
{
    if (shard >= cat->nshard) {
        sql_set_error("shard %u out of range (0..%u)", shard, cat->nshard - 1);
        return BC_ESHARD;
    }
    if (state != SHARDMAP_STATE_ACTIVE && state != SHARDMAP_STATE_MOVING &&
        state != SHARDMAP_STATE_FENCED) {
        sql_set_error("bad shard state %d", (int)state);
        return -EINVAL;
    }
    return catalog__run(cat, NULL,
                        "UPDATE %S.shard_map SET state = %u WHERE shard = %u",
                        (uint64_t)state, (uint64_t)shard);
}

int catalog_host_get(struct catalog *cat, const char *name, struct catalog_host *out)
{
    struct sql_rows rows = {0};
    int rc;

    rc = catalog__run(cat, &rows,
                      "SELECT name, addr, port, weight FROM %S.hosts WHERE name = %s",
                      name);
    if (rc == 0 && rows.nrow == 0) {
        sql_set_error("no host %s in the shard map", name);
        rc = BC_EHOST;
    } else if (rc == 0) {
        catalog__str(out->name, sizeof(out->name), sql_cell(&rows, 0, 0));
        catalog__str(out->addr, sizeof(out->addr), sql_cell(&rows, 0, 1));
        out->port = (uint16_t)catalog__u64(sql_cell(&rows, 0, 2));
        out->weight = (uint32_t)catalog__u64(sql_cell(&rows, 0, 3));
    }
    sql_rows_free(&rows);
    return rc;
}

int catalog_host_add(struct catalog *cat, struct shardmap_host_conf *h, int *added)
{
    struct sql_rows rows = {0};
    struct sql_buf b = {0};
    int rc;

    *added = 0;
    /*
     * A host that failed over (or switched over) since the plan was made
     * has another primary: the servers table's, locked against a promotion
     * (catalog_promote() moves hosts.addr with it) until the row is in.
     */
    rc = catalog__add(
        cat, &b,
        "START TRANSACTION; "
        "SET @bc_addr = NULL, @bc_port = NULL; "
        "SELECT addr, port INTO @bc_addr, @bc_port FROM %S.servers WHERE host = %s "
        "AND role = 'primary' LIMIT 1 FOR UPDATE; "
        "INSERT INTO %S.hosts (name, ord, addr, port, weight) "
        "SELECT %s, COALESCE(MAX(ord), 0) + 1, COALESCE(@bc_addr, %s), "
        "COALESCE(@bc_port, %u), %u FROM %S.hosts; "
        "UPDATE %S.map_version SET version = version + 1 WHERE id = 1; "
        "SELECT addr, port FROM %S.hosts WHERE name = %s",
        h->name, h->name, h->addr, (uint64_t)h->port,
        (uint64_t)(h->weight ? h->weight : 1), h->name);
    if (rc < 0) {
        sql_buf_deinit(&b);
        return rc;
    }
    rc = catalog__commit(cat, &b, &rows);
    if (rc == 0 && rows.nrow == 1) {
        snprintf(h->addr, sizeof(h->addr), "%s", sql_cell(&rows, 0, 0));
        h->port = (uint16_t)catalog__u64(sql_cell(&rows, 0, 1));
    }
    sql_rows_free(&rows);
    /* The name is the primary key: the host was there (maybe just added). */
    if (rc == BC_EDUPKEY)
        return 0;
    *added = rc == 0;
    return rc;
}

int catalog_host_remove_empty(struct catalog *cat, const char *name, int *removed)
{
    struct sql_rows rows = {0};
    struct sql_buf b = {0};
    int rc;

    *removed = 0;
    /* The version goes up only when the row went: ROW_COUNT() of the DELETE. */
    rc = catalog__add(cat, &b,
                      "START TRANSACTION; "
                      "DELETE FROM %S.hosts WHERE name = %s AND NOT EXISTS "
                      "(SELECT 1 FROM %S.shard_map WHERE host = %s); "
                      "SET @bc_removed = ROW_COUNT(); "
                      "UPDATE %S.map_version SET version = version + 1 "
                      "WHERE id = 1 AND @bc_removed > 0; "
                      "SELECT @bc_removed",
                      name, name);
    if (rc < 0) {
        sql_buf_deinit(&b);
        return rc;
    }
    rc = catalog__commit(cat, &b, &rows);
    if (rc == 0 && rows.nrow == 1)
        *removed = catalog__u64(sql_cell(&rows, 0, 0)) > 0;
    sql_rows_free(&rows);
    return rc;
}
