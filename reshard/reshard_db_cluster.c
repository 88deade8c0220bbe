/*
 * reshard_db_cluster.c: the real backend's changes to the cluster itself,
 * each on a short connection of its own to the global host (not a move's):
 * checking a plan against the map, adding a host, removing an empty one.
 */
#include <string.h>

#include "reshard/reshard_int.h"

typedef int (*cluster_fn)(struct catalog *cat, const void *arg, int *out);

/* Runs fn on a catalog over a short connection of its own. */
static int with_catalog(struct reshard_db *be, cluster_fn fn, const void *arg, int *out)
{
    struct sql_conn *g = NULL;
    struct catalog cat;
    int rc = reshard__open_global(be->conf, &g, &cat);

    if (rc < 0)
        return rc;
    rc = fn(&cat, arg, out);
    catalog_deinit(&cat);
    sql_conn_close(g);
    return rc;
}

static int plan_fn(struct catalog *cat, const void *arg, int *out)
{
    (void)out;
    return catalog_check_plan(cat, arg);
}

static int add_fn(struct catalog *cat, const void *arg, int *out)
{
    /* reshard__db_add_host()'s h, writable: it gets the address the map took. */
    return catalog_host_add(cat, (struct shardmap_host_conf *)arg, out);
}

static int remove_fn(struct catalog *cat, const void *arg, int *out)
{
    return catalog_host_remove_empty(cat, arg, out);
}

int reshard__db_check_plan(void *be, const struct shardmap_plan *plan)
{
    return with_catalog(be, plan_fn, plan, NULL);
}

int reshard__db_add_host(void *be, struct shardmap_host_conf *h, int *added)
{
    return with_catalog(be, add_fn, h, added);
}

int reshard__db_remove_host(void *bep, const char *name, int *removed)
{
    struct reshard_db *be = bep;

    *removed = 0;
    /* The global host holds the catalog itself: it never leaves the map. */
    if (strcmp(name, be->conf->global_host) == 0)
        return 0;
    return with_catalog(be, remove_fn, name, removed);
}
