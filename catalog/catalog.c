/*
 * catalog.c: the catalog's executor plumbing, the global schema's creation,
 * the map version and the check of a plan against it.
 *
 * Every statement is a format of sql_format() (values escaped, the schema as
 * %S) run through the executor the catalog was given. A change that touches
 * several rows is one multi-statement text "START TRANSACTION; ...; COMMIT":
 * the executor may be a pool, where two calls need not land on one
 * connection, so a transaction never spans two calls.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "catalog/catalog_int.h"

/*
 * etc/schema/global.sql, NUL-terminated, built in so that a tool applies the
 * schema of its own version wherever it runs. The label is local to this
 * object file (no .global): only catalog_install() reads the text. .incbin
 * paths are relative to the repository root, where make runs.
 */
extern const char global_sql[] __asm__("catalog_global_sql");
__asm__(".section .rodata\n"
        "catalog_global_sql:\n"
        ".incbin \"etc/schema/global.sql\"\n"
        ".byte 0\n"
        ".previous\n");

void catalog_init(struct catalog *cat, const struct shardmap_conf *conf,
                  const struct sql_executor *exec)
{
    memset(cat, 0, sizeof(*cat));
    snprintf(cat->schema, sizeof(cat->schema), "%s_global", conf->schema_prefix);
    cat->nshard = conf->nshard;
    cat->exec = *exec;
}

void catalog_deinit(struct catalog *cat)
{
    memset(cat, 0, sizeof(*cat));
}

int catalog__add(struct catalog *cat, struct sql_buf *b, const char *fmt, ...)
{
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = sql_vformat(b, cat->schema, 0, fmt, ap);
    va_end(ap);
    return rc;
}

int catalog__run(struct catalog *cat, struct sql_rows *rows, const char *fmt, ...)
{
    struct sql_buf b = {0};
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = sql_vformat(&b, cat->schema, 0, fmt, ap);
    va_end(ap);
    if (rc == 0)
        rc = cat->exec.run(cat->exec.arg, b.buf, b.len, rows);
    sql_buf_deinit(&b);
    return rc;
}

int catalog__send(struct catalog *cat, struct sql_buf *b, struct sql_rows *rows)
{
    int rc = cat->exec.run(cat->exec.arg, b->buf, b->len, rows);

    sql_buf_deinit(b);
    return rc;
}

int catalog__commit(struct catalog *cat, struct sql_buf *b, struct sql_rows *rows)
{
    static const char rollback[] = "ROLLBACK";
    char msg[1024];
    int rc;

    rc = sql_buf_add(b, "; COMMIT", 8);
    if (rc < 0) {
        sql_buf_deinit(b);
        return rc;
    }
    rc = catalog__send(cat, b, rows);
    if (rc < 0) {
        /*
         * The statements before the failed one ran inside the transaction;
         * if it stayed open on the connection, the next START TRANSACTION
         * would commit them.
         */
        snprintf(msg, sizeof(msg), "%s", sql_last_error());
        (void)cat->exec.run(cat->exec.arg, rollback, sizeof(rollback) - 1, NULL);
        sql_set_error("%s", msg);
    }
    return rc;
}

uint64_t catalog__u64(const char *cell)
{
    return cell == NULL ? 0 : strtoull(cell, NULL, 10);
}

void catalog__str(char *out, size_t size, const char *cell)
{
    snprintf(out, size, "%s", cell == NULL ? "" : cell);
}

int catalog__no_cluster(struct catalog *cat)
{
    sql_set_error("no shard map in %s (run shardctl init)", cat->schema);
    return BC_ENOTFOUND;
}

int catalog_install(struct catalog *cat)
{
    struct sql_buf b = {0};
    const char *p = global_sql, *q;
    int rc = 0;

    /* The name goes into the text as it is: it must be a plain identifier. */
    if (!sql_ident_ok(cat->schema)) {
        sql_set_error("bad global schema name '%s'", cat->schema);
        return -EINVAL;
    }
    while (rc == 0 && (q = strstr(p, "{schema}")) != NULL) {
        rc = sql_buf_add(&b, p, (size_t)(q - p));
        if (rc == 0)
            rc = sql_buf_add(&b, cat->schema, strlen(cat->schema));
        p = q + 8;
    }
    if (rc == 0)
        rc = sql_buf_add(&b, p, strlen(p));
    if (rc < 0) {
        sql_buf_deinit(&b);
        return rc;
    }
    return catalog__send(cat, &b, NULL);
}

int catalog_map_version(struct catalog *cat, uint64_t *version)
{
    struct sql_rows rows = {0};
    int rc;

    rc = catalog__run(cat, &rows, "SELECT version FROM %S.map_version WHERE id = 1");
    if (rc == BC_ENOSCHEMA || (rc == 0 && rows.nrow == 0))
        rc = catalog__no_cluster(cat);
    else if (rc == 0)
        *version = catalog__u64(sql_cell(&rows, 0, 0));
    sql_rows_free(&rows);
    return rc;
}

int catalog_map_version_ro(struct catalog *cat, uint64_t *version, int *read_only)
{
    struct sql_rows rows = {0};
    int rc;

    rc = catalog__run(cat, &rows,
                      "SELECT version, @@global.read_only FROM %S.map_version "
                      "WHERE id = 1");
    if (rc == BC_ENOSCHEMA || (rc == 0 && rows.nrow == 0)) {
        rc = catalog__no_cluster(cat);
    } else if (rc == 0) {
        *version = catalog__u64(sql_cell(&rows, 0, 0));
        *read_only = catalog__u64(sql_cell(&rows, 0, 1)) != 0;
    }
    sql_rows_free(&rows);
    return rc;
}

int catalog_cluster_shards(struct catalog *cat, uint32_t *nshard)
{
    struct sql_rows rows = {0};
    int rc;

    *nshard = 0;
    rc = catalog__run(cat, &rows,
                      "SELECT value FROM %S.cluster_meta WHERE name = 'shards'");
    if (rc == BC_ENOSCHEMA)
        rc = 0; /* not even the schema: no cluster */
    else if (rc == 0 && rows.nrow == 1)
        *nshard = (uint32_t)catalog__u64(sql_cell(&rows, 0, 0));
    sql_rows_free(&rows);
    return rc;
}

int catalog_check_shards(struct catalog *cat, const char *global_host)
{
    uint32_t nshard;
    int rc = catalog_cluster_shards(cat, &nshard);

    if (rc == 0 && nshard != 0 && nshard != cat->nshard) {
        sql_set_error("refusing: the cluster in %s on %s has %u shards, the config "
                      "says %u; the shard count is fixed at creation",
                      cat->schema, global_host, nshard, cat->nshard);
        rc = BC_EMISMATCH;
    }
    return rc;
}

/*
 * Where shard s may be while its plan is partly run: on its planned host,
 * or, when the plan moves it, still on the move's source. Anywhere else
 * means the map changed beyond the plan.
 */
static int on_path(const struct shardmap_plan *plan, uint32_t s, const char *host)
{
    const struct shardmap *t = plan->target;

    if (strcmp(host, t->nodes[t->node_of[s]].name) == 0)
        return 1;
    for (uint32_t i = 0; i < plan->nmove; i++)
        if (plan->moves[i].shard == s)
            return strcmp(host, t->nodes[plan->moves[i].from].name) == 0;
    return 0;
}

int catalog_check_plan(struct catalog *cat, const struct shardmap_plan *plan)
{
    struct catalog_map *cur;
    uint64_t version;
    int rc = catalog_map_version(cat, &version);

    if (rc < 0 || version == plan->base_version)
        return rc;
    /*
     * A newer map is still this plan's when it differs from the plan's base
     * only by the plan's own steps (its host added, some of its moves done):
     * a rebalance that stopped half-way is run again with the same plan.
     */
    if ((cur = calloc(1, sizeof(*cur))) == NULL)
        return -ENOMEM;
    if ((rc = catalog_map_load(cat, cur)) < 0) {
        free(cur);
        return rc;
    }
    if (cur->map->nshard != plan->target->nshard)
        rc = BC_EMISMATCH;
    for (uint32_t i = 0; rc == 0 && i < cur->nhost; i++)
        if (shardmap_node_index(plan->target, cur->host[i].name) < 0)
            rc = BC_EMISMATCH;
    for (uint32_t s = 0; rc == 0 && s < cur->map->nshard; s++)
        if (!on_path(plan, s, cur->map->nodes[cur->map->node_of[s]].name))
            rc = BC_EMISMATCH;
    catalog_map_deinit(cur);
    free(cur);
    if (rc == BC_EMISMATCH)
        sql_set_error("the plan was made from map version %" PRIu64
                      " but the map is now version %" PRIu64
                      " and has changed beyond the plan's own moves; make a new plan "
                      "with shardctl plan",
                      plan->base_version, version);
    return rc;
}
