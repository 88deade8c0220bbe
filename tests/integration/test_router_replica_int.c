/*
 * test_router_replica_int.c: whether a replica could answer a stale-ok read
 * (router_replicas_possible(), which decides if a write needs its
 * read-your-writes flag) and the wait of a replica new to the map, on the
 * test stack's catalog. The stack has no replicas: the test adds a
 * server row of role replica (the address of its host's own primary) to
 * the catalog, and removes it at the end, also on failure. Its figures
 * follow router_map.c: L = map_poll_ms (1000) + 1 s, a new replica's wait
 * L + the read-your-writes window (2 s with max_lag_ms 100) + 1 s.
 */
#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "router/router.h"
#include "tests/integration/itest.h"

#define REPLICA "itest_replica"
#define MAX_LAG_MS 100
/* map_poll_ms (1000) + 1 s: how long a check of the catalog counts. */
#define CHECK_LIFE_MS 2000
/* A new replica's wait: the check's life + the window (2 s) + 1 s. */
#define REPLICA_WAIT_MS 5000

struct fixture {
    struct shardmap_conf conf;
    MYSQL *global; /* the global host, as the operator tools */
};

static void sql(MYSQL *m, const char *text)
{
    if (mysql_query(m, text) != 0)
        fail_msg("%s: %s", text, mysql_error(m));
}

static void bump_version(MYSQL *m)
{
    sql(m, "UPDATE bc_global.map_version SET version = version + 1 WHERE id = 1");
}

static void replica_remove(MYSQL *m)
{
    sql(m, "DELETE FROM bc_global.servers WHERE name = '" REPLICA "'");
    if (mysql_affected_rows(m) > 0)
        bump_version(m);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    itest_conf(&f->conf);
    f->conf.max_lag_ms = MAX_LAG_MS;
    f->global = itest_mysql(&f->conf, f->conf.global_host);
    replica_remove(f->global); /* a run before this one died half-way */
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    replica_remove(f->global);
    mysql_close(f->global);
    shardmap_conf_deinit(&f->conf);
    free(f);
    return 0;
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};

    if (ms > 0)
        nanosleep(&ts, NULL);
}

/* A host of the map that is not the global one, and a shard of it. */
static const char *other_host(struct router *r, const char *global, uint32_t *shard)
{
    const struct shardmap *map = router_map(r);

    for (uint32_t s = 0; s < map->nshard; s++) {
        const char *name = map->nodes[map->node_of[s]].name;
        if (strcmp(name, global) != 0) {
            *shard = s;
            return name;
        }
    }
    fail_msg("every shard is on the global host");
    return NULL;
}

/* Statements the replica's pool has sent (its lag probes too), or -1: no pool. */
static int64_t replica_statements(struct router *r)
{
    struct router_host_stats st[2 * SHARDMAP_MAX_HOSTS];
    uint32_t n = router_stats(r, st, 2 * SHARDMAP_MAX_HOSTS);

    for (uint32_t i = 0; i < n; i++)
        if (st[i].replica && strcmp(st[i].name, REPLICA) == 0)
            return (int64_t)st[i].queries;
    return -1;
}

/* One stale-ok read of shard: where a fresh replica exists, it may answer. */
static void stale_read(struct router *r, uint32_t shard)
{
    struct sql_rows rows = {0};

    (void)router_stale_reads(1);
    assert_int_equal(router_exec(r, shard, &rows, "SELECT 1"), 0);
    (void)router_stale_reads(0);
    assert_int_equal(rows.nrow, 1);
    sql_rows_free(&rows);
}

/* Inserts the test's replica of host, at its primary's address, and bumps the version.
 */
static void replica_add(struct fixture *f, const char *host)
{
    const struct shardmap_host_conf *hc = NULL;
    char text[512];

    for (uint32_t i = 0; i < f->conf.nhost; i++)
        if (strcmp(f->conf.hosts[i].name, host) == 0)
            hc = &f->conf.hosts[i];
    assert_non_null(hc);
    snprintf(text, sizeof(text),
             "INSERT INTO bc_global.servers (name, host, addr, port, role) "
             "VALUES ('" REPLICA "', '%s', '%s', %u, 'replica')",
             hc->name, hc->addr, (unsigned)hc->port);
    sql(f->global, text);
    bump_version(f->global);
}

/* Whether a stale-ok read of shard consulted the replica (its lag probe at least). */
static int consulted(struct router *r, uint32_t shard)
{
    int64_t before = replica_statements(r);

    stale_read(r, shard);
    return replica_statements(r) > before;
}

static struct router *new_router(struct fixture *f)
{
    struct router *r;

    assert_int_equal(router_create(&f->conf, &r), 0);
    router_set_polling(r, 0); /* the test reloads when it wants */
    return r;
}

/*
 * Polling off, so each check of the catalog is the test's router_reload_map().
 * L (a check's life) is 2 s, a new replica's wait 5 s.
 */
static void test_replicas_possible_and_a_new_replicas_wait(void **state)
{
    struct fixture *f = *state;
    struct router *r = new_router(f), *r2;
    uint32_t shard = 0;
    int64_t added_ms, removed_ms;

    assert_int_equal(router_rw_window_s(r), 2);
    /* A new router has seen no replica for less than L: flags, to be safe. */
    assert_int_equal(router_replicas_possible(r), 1);
    sleep_ms(CHECK_LIFE_MS + 200);
    /* Its check is older than L now: still flags; checked again: none needed. */
    assert_int_equal(router_replicas_possible(r), 1);
    assert_int_equal(router_reload_map(r), 0); /* the same version: a check */
    assert_int_equal(router_replicas_possible(r), 0);

    /* A replica enters the catalog (the primary's own address, so it answers). */
    const char *host = other_host(r, f->conf.global_host, &shard);
    replica_add(f, host);
    added_ms = itest_now_ms();
    assert_int_equal(router_reload_map(r), 0);
    assert_int_equal(router_replicas_possible(r), 1);
    assert_int_equal(replica_statements(r), 0); /* its pool, not used yet */
    /* During its wait, stale reads do not even probe its lag: here... */
    assert_false(consulted(r, shard));
    /* ...and in a router that starts with the replica in the catalog. */
    r2 = new_router(f);
    assert_int_equal(router_replicas_possible(r2), 1);
    assert_false(consulted(r2, shard));
    router_destroy(r2);
    /* Still waiting 0.7 s before its end (checked just before: fresh). */
    sleep_ms(added_ms + REPLICA_WAIT_MS - 700 - itest_now_ms());
    assert_int_equal(router_reload_map(r), 0);
    assert_false(consulted(r, shard));

    /* A map change that keeps the replica does not start its wait again. */
    sleep_ms(added_ms + REPLICA_WAIT_MS + 300 - itest_now_ms());
    bump_version(f->global);
    assert_int_equal(router_reload_map(r), 0);
    /*
     * Consulted now: its lag probe ran (it fails, with no heartbeat schema on
     * this stack, so the read went to the primary, as it must).
     */
    assert_true(consulted(r, shard));

    /* A router whose own check is older than L reads no replica... */
    sleep_ms(CHECK_LIFE_MS + 200);
    assert_false(consulted(r, shard));
    /* ...and does again once it checked, the map unchanged. */
    assert_int_equal(router_reload_map(r), 0);
    assert_true(consulted(r, shard));
    /* Lost track for L, then a new version: the replica waits afresh. */
    sleep_ms(CHECK_LIFE_MS + 200);
    bump_version(f->global);
    assert_int_equal(router_reload_map(r), 0);
    assert_false(consulted(r, shard));

    /*
     * Gone from the catalog: another router's last check may still have seen
     * it, so flags go on for L after this router saw it go; then none.
     */
    replica_remove(f->global);
    removed_ms = itest_now_ms();
    assert_int_equal(router_reload_map(r), 0);
    assert_int_equal(router_replicas_possible(r), 1);
    sleep_ms(removed_ms + CHECK_LIFE_MS - 500 - itest_now_ms());
    assert_int_equal(router_reload_map(r), 0);
    assert_int_equal(router_replicas_possible(r), 1);
    sleep_ms(removed_ms + CHECK_LIFE_MS + 200 - itest_now_ms());
    assert_int_equal(router_reload_map(r), 0);
    assert_int_equal(router_replicas_possible(r), 0);
    router_destroy(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_replicas_possible_and_a_new_replicas_wait,
                                        setup, teardown),
    };
    return cmocka_run_group_tests_name("router_replica_integration", tests, NULL, NULL);
}
