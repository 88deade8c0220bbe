/*
 * catfix.c: the catalog integration tests' fixture (catfix.h).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

#include "tests/integration/catfix.h"
#include "tests/integration/itest.h"

struct sql_conn *catfix_conn(const struct sql_endpoint *ep)
{
    struct sql_conn_opts opts = {.query_timeout_ms = 20000, .multi_statements = 1};
    struct sql_conn *c = NULL;

    if (sql_conn_open(ep, &opts, &c) != 0)
        fail_msg("connecting to %s: %s", ep->name, sql_last_error());
    return c;
}

static void drop_schema(struct fixture *f)
{
    char q[256];

    snprintf(q, sizeof(q), "DROP DATABASE IF EXISTS %s", f->cat.schema);
    if (mysql_query(f->peek, q) != 0)
        fprintf(stderr, "dropping %s: %s\n", f->cat.schema, mysql_error(f->peek));
}

int catfix_setup(void **state, const char *prefix, uint32_t nshard)
{
    struct fixture *f = calloc(1, sizeof(*f));
    struct sql_executor exec;

    assert_non_null(f);
    itest_conf(&f->conf);
    snprintf(f->conf.schema_prefix, sizeof(f->conf.schema_prefix), "%s", prefix);
    f->conf.nshard = nshard;
    assert_int_equal(sql_endpoint_of(&f->conf, f->conf.global_host, NULL, 0, &f->ep),
                     0);
    f->conn = catfix_conn(&f->ep);
    sql_conn_executor(f->conn, &exec);
    catalog_init(&f->cat, &f->conf, &exec);
    f->peek = itest_mysql(&f->conf, f->conf.global_host);
    /* Left over by an interrupted run: start from nothing. */
    drop_schema(f);
    *state = f;
    return 0;
}

int catfix_teardown(void **state)
{
    struct fixture *f = *state;

    drop_schema(f);
    mysql_close(f->peek);
    catalog_deinit(&f->cat);
    sql_conn_close(f->conn);
    shardmap_conf_deinit(&f->conf);
    free(f);
    return 0;
}

uint64_t catfix_version(struct fixture *f)
{
    uint64_t v = 0;
    char q[256];

    assert_int_equal(catalog_map_version(&f->cat, &v), 0);
    /* The same as another session sees: the change was committed. */
    snprintf(q, sizeof(q), "SELECT version FROM %s.map_version WHERE id = 1",
             f->cat.schema);
    assert_int_equal(itest_scalar(f->peek, q), (int64_t)v);
    return v;
}

struct catalog_map *catfix_load(struct fixture *f)
{
    struct catalog_map *m = calloc(1, sizeof(*m));

    assert_non_null(m);
    if (catalog_map_load(&f->cat, m) != 0)
        fail_msg("catalog_map_load: %s", sql_last_error());
    return m;
}

void catfix_unload(struct catalog_map *m)
{
    catalog_map_deinit(m);
    free(m);
}

struct shardmap *catfix_placed_map(const struct shardmap_conf *conf)
{
    struct shardmap_node nodes[SHARDMAP_MAX_HOSTS];
    struct shardmap *map;

    for (uint32_t i = 0; i < conf->nhost; i++) {
        snprintf(nodes[i].name, sizeof(nodes[i].name), "%s", conf->hosts[i].name);
        nodes[i].weight = conf->hosts[i].weight;
    }
    map = shardmap_create(conf->nshard, nodes, conf->nhost, 1);
    assert_non_null(map);
    assert_int_equal(shardmap_place(map), 0);
    return map;
}
