/*
 * catfix.h: the fixture of the catalog's integration tests: a scratch
 * cluster of its own on the test stack's global host (a schema prefix and
 * shard count of the test's), a catalog over one connection, and a second
 * session to see what was committed.
 */
#ifndef CATFIX_H
#define CATFIX_H

#include <stdint.h>

#include <mysql.h>

#include "catalog/catalog.h"

struct fixture {
    struct shardmap_conf conf; /* the stack's, with the test's prefix and shards */
    struct sql_endpoint ep;    /* the global host */
    struct sql_conn *conn;
    struct catalog cat;
    MYSQL *peek; /* another session, to see what was committed */
};

/* cmocka group setup: *state a fixture, <prefix>_global dropped if left over. */
int catfix_setup(void **state, const char *prefix, uint32_t nshard);
/* Drops <prefix>_global and frees the fixture. */
int catfix_teardown(void **state);
/* A connection of its own to the global host (fails the test otherwise). */
struct sql_conn *catfix_conn(const struct sql_endpoint *ep);
/* The map's version, checked against what another session sees. */
uint64_t catfix_version(struct fixture *f);
struct catalog_map *catfix_load(struct fixture *f);
void catfix_unload(struct catalog_map *m);
/* A map of the fixture's hosts, its shards placed. */
struct shardmap *catfix_placed_map(const struct shardmap_conf *conf);

#endif
