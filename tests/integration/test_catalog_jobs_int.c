/*
 * test_catalog_jobs_int.c: the catalog's settlement jobs (create, progress,
 * one winner of a claim, the lease's renewal, release and takeover, the
 * upgrade of an old table) and its servers table, against the real MariaDB
 * global host of the test stack, in a scratch cluster of its own (prefix
 * bcjob, 16 shards, a placed map). The tests run in order.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "catalog/catalog.h"
#include "tests/integration/catfix.h"
#include "tests/integration/itest.h"

#define PREFIX "bcjob"
#define SCHEMA PREFIX "_global"
#define NSHARD 16

/* The catalog installed and a map made: what the jobs live beside. */
static int setup(void **state)
{
    struct fixture *f;
    struct shardmap *map;

    catfix_setup(state, PREFIX, NSHARD);
    f = *state;
    assert_int_equal(catalog_install(&f->cat), 0);
    map = catfix_placed_map(&f->conf);
    assert_int_equal(catalog_map_create(&f->cat, &f->conf, map), 0);
    shardmap_destroy(map);
    return 0;
}

static void test_settlement_create_get_progress(void **state)
{
    struct fixture *f = *state;
    struct catalog_settlement st;

    assert_int_equal(catalog_settlement_get(&f->cat, 1001, &st), 0);
    assert_int_equal(catalog_settlement_create(&f->cat, 1001, "draw", NSHARD), 0);
    assert_int_equal(catalog_settlement_create(&f->cat, 1001, "home", NSHARD),
                     BC_EDUPKEY);
    assert_int_equal(catalog_settlement_get(&f->cat, 1001, &st), 1);
    assert_int_equal(st.match_id, 1001);
    assert_string_equal(st.result, "draw");
    assert_string_equal(st.state, "running");
    assert_int_equal(st.shards_total, NSHARD);
    assert_int_equal(st.shards_done, 0);
    assert_int_equal(st.bets_total, 0);
    assert_int_equal(st.bets_settled, 0);
    assert_string_equal(st.lease_owner, "");
    assert_int_equal(st.leased, 0);

    /* Counts are written by the lease's owner only. */
    assert_int_equal(catalog_settlement_claim(&f->cat, 1001, "api1/aa", 60000), 1);
    assert_int_equal(catalog_settlement_progress(&f->cat, 1001, "api2/bb", 3, 3, 3), 0);
    assert_int_equal(catalog_settlement_get(&f->cat, 1001, &st), 1);
    assert_int_equal(st.shards_done, 0);
    assert_int_equal(catalog_settlement_progress(&f->cat, 1001, "api1/aa", 8, 120, 500),
                     0);
    assert_int_equal(catalog_settlement_advance(&f->cat, 1001, "api1/aa", 1, 30), 0);
    assert_int_equal(catalog_settlement_advance(&f->cat, 1001, "api2/bb", 1, 1000), 0);
    assert_int_equal(catalog_settlement_get(&f->cat, 1001, &st), 1);
    assert_string_equal(st.state, "running");
    assert_int_equal(st.shards_done, 9);
    assert_int_equal(st.bets_settled, 150);
    assert_int_equal(st.bets_total, 500);
    assert_string_equal(st.lease_owner, "api1/aa");
    assert_int_equal(st.leased, 1);
    assert_int_equal(itest_scalar(f->peek, "SELECT finished_at IS NULL FROM " SCHEMA
                                           ".settlements WHERE match_id = 1001"),
                     1);

    /* Done: final counts, the lease ended, never claimable again. */
    assert_int_equal(catalog_settlement_finish(&f->cat, 1001, NSHARD, 510), 0);
    assert_int_equal(catalog_settlement_get(&f->cat, 1001, &st), 1);
    assert_string_equal(st.state, "done");
    assert_int_equal(st.shards_done, NSHARD);
    assert_int_equal(st.bets_settled, 510);
    assert_int_equal(st.bets_total, 510);
    assert_int_equal(st.leased, 0);
    assert_int_equal(itest_scalar(f->peek, "SELECT finished_at IS NOT NULL FROM " SCHEMA
                                           ".settlements WHERE match_id = 1001"),
                     1);
    assert_int_equal(catalog_settlement_claim(&f->cat, 1001, "api2/bb", 60000), 0);
    assert_int_equal(catalog_settlement_renew(&f->cat, 1001, "api1/aa", 60000), 0);
    assert_int_equal(catalog_settlement_finish(&f->cat, 1001, 1, 1), 0);
    assert_int_equal(catalog_settlement_get(&f->cat, 1001, &st), 1);
    assert_int_equal(st.bets_settled, 510);
}

/* A catalog of its own connection: another server. */
struct owner {
    struct sql_conn *conn;
    struct catalog cat;
    const char *name;
    uint64_t first, n; /* the jobs to claim */
    int won[64];
    int failed;
    pthread_barrier_t *start;
};

static void owner_init(struct fixture *f, struct owner *o, const char *name)
{
    struct sql_executor exec;

    memset(o, 0, sizeof(*o));
    o->conn = catfix_conn(&f->ep);
    sql_conn_executor(o->conn, &exec);
    catalog_init(&o->cat, &f->conf, &exec);
    o->name = name;
}

static void owner_deinit(struct owner *o)
{
    catalog_deinit(&o->cat);
    sql_conn_close(o->conn);
}

static void *owner_claims(void *arg)
{
    struct owner *o = arg;

    pthread_barrier_wait(o->start);
    for (uint64_t i = 0; i < o->n; i++) {
        int rc = catalog_settlement_claim(&o->cat, o->first + i, o->name, 60000);
        if (rc < 0)
            o->failed++;
        o->won[i] = rc == 1;
    }
    return NULL;
}

/* Two servers claim the same jobs at the same moment: each job has one winner. */
static void test_settlement_claim_has_one_winner(void **state)
{
    struct fixture *f = *state;
    struct owner a, b;
    struct catalog_settlement st;
    pthread_barrier_t start;
    pthread_t ta, tb;
    uint64_t ids[64];
    uint32_t n = 0;
    char sql[256];

    owner_init(f, &a, "api1/1111");
    owner_init(f, &b, "api2/2222");
    for (uint64_t i = 0; i < 40; i++)
        assert_int_equal(catalog_settlement_create(&f->cat, 2000 + i, "home", NSHARD),
                         0);
    assert_int_equal(catalog_settlement_claimable(&f->cat, ids, 64, &n), 0);
    assert_int_equal(n, 40);
    assert_int_equal(ids[0], 2000);
    assert_int_equal(ids[39], 2039);
    assert_int_equal(catalog_settlement_claimable(&f->cat, ids, 5, &n), 0);
    assert_int_equal(n, 5);

    pthread_barrier_init(&start, NULL, 2);
    a.start = b.start = &start;
    a.first = b.first = 2000;
    a.n = b.n = 40;
    assert_int_equal(pthread_create(&ta, NULL, owner_claims, &a), 0);
    assert_int_equal(pthread_create(&tb, NULL, owner_claims, &b), 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    pthread_barrier_destroy(&start);
    assert_int_equal(a.failed + b.failed, 0);
    for (uint64_t i = 0; i < 40; i++) {
        assert_int_equal(a.won[i] + b.won[i], 1);
        assert_int_equal(catalog_settlement_get(&f->cat, 2000 + i, &st), 1);
        assert_string_equal(st.lease_owner, a.won[i] ? a.name : b.name);
        assert_int_equal(st.leased, 1);
    }
    /* Held: nobody may claim them now, not even their holder. */
    assert_int_equal(catalog_settlement_claimable(&f->cat, ids, 64, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(catalog_settlement_claim(&a.cat, 2000, a.name, 60000), 0);
    assert_int_equal(catalog_settlement_claim(&b.cat, 2000, b.name, 60000), 0);
    snprintf(sql, sizeof(sql), "DELETE FROM %s.settlements WHERE match_id >= 2000",
             SCHEMA);
    if (mysql_query(f->peek, sql) != 0)
        fail_msg("%s", mysql_error(f->peek));
    owner_deinit(&a);
    owner_deinit(&b);
}

/* Only the owner renews; a release makes the job claimable at once. */
static void test_settlement_renew_and_release_by_the_owner(void **state)
{
    struct fixture *f = *state;
    struct catalog_settlement st;
    uint64_t ids[4];
    uint32_t n = 0;

    assert_int_equal(catalog_settlement_create(&f->cat, 1002, "away", NSHARD), 0);
    assert_int_equal(catalog_settlement_renew(&f->cat, 1002, "api1/aa", 60000), 0);
    assert_int_equal(catalog_settlement_claim(&f->cat, 1002, "api1/aa", 60000), 1);
    assert_int_equal(catalog_settlement_renew(&f->cat, 1002, "api2/bb", 60000), 0);
    assert_int_equal(catalog_settlement_renew(&f->cat, 1002, "api1/aa", 60000), 1);
    assert_int_equal(catalog_settlement_renew(&f->cat, 1002, "api1/aa", 60000), 1);
    /* The same name after a restart has another nonce: another owner. */
    assert_int_equal(catalog_settlement_renew(&f->cat, 1002, "api1/cc", 60000), 0);
    assert_int_equal(catalog_settlement_release(&f->cat, 1002, "api2/bb"), 0);
    assert_int_equal(catalog_settlement_get(&f->cat, 1002, &st), 1);
    assert_int_equal(st.leased, 1);
    assert_int_equal(itest_scalar(f->peek, "SELECT lease_until > UTC_TIMESTAMP(3) + "
                                           "INTERVAL 50 SECOND FROM " SCHEMA
                                           ".settlements WHERE match_id = 1002"),
                     1);

    assert_int_equal(catalog_settlement_release(&f->cat, 1002, "api1/aa"), 0);
    assert_int_equal(catalog_settlement_get(&f->cat, 1002, &st), 1);
    assert_int_equal(st.leased, 0);
    assert_string_equal(st.lease_owner, "api1/aa"); /* the last holder, for people */
    /* Released means released: no renewal takes it back. */
    assert_int_equal(catalog_settlement_renew(&f->cat, 1002, "api1/aa", 60000), 0);
    assert_int_equal(catalog_settlement_claimable(&f->cat, ids, 4, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(ids[0], 1002);
    assert_int_equal(catalog_settlement_claim(&f->cat, 1002, "api2/bb", 60000), 1);
    assert_int_equal(catalog_settlement_get(&f->cat, 1002, &st), 1);
    assert_string_equal(st.lease_owner, "api2/bb");
    assert_int_equal(catalog_settlement_finish(&f->cat, 1002, NSHARD, 0), 0);
}

/* A lease that ran out (its server died) is taken over; the old owner lost it. */
static void test_settlement_expired_lease_is_taken_over(void **state)
{
    struct fixture *f = *state;
    struct catalog_settlement st;
    uint64_t ids[4];
    uint32_t n = 0;

    assert_int_equal(catalog_settlement_create(&f->cat, 1003, "cancelled", NSHARD), 0);
    assert_int_equal(catalog_settlement_claim(&f->cat, 1003, "api1/aa", 300), 1);
    assert_int_equal(catalog_settlement_claim(&f->cat, 1003, "api2/bb", 60000), 0);
    assert_int_equal(catalog_settlement_claimable(&f->cat, ids, 4, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(catalog_settlement_progress(&f->cat, 1003, "api1/aa", 2, 20, 90),
                     0);

    usleep(500000);
    assert_int_equal(catalog_settlement_get(&f->cat, 1003, &st), 1);
    assert_int_equal(st.leased, 0);
    assert_int_equal(catalog_settlement_claimable(&f->cat, ids, 4, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(ids[0], 1003);
    assert_int_equal(catalog_settlement_claim(&f->cat, 1003, "api2/bb", 60000), 1);
    assert_int_equal(catalog_settlement_claim(&f->cat, 1003, "api1/aa", 60000), 0);

    /* The old owner wakes up: its renewal, counts and release do nothing. */
    assert_int_equal(catalog_settlement_renew(&f->cat, 1003, "api1/aa", 60000), 0);
    assert_int_equal(catalog_settlement_advance(&f->cat, 1003, "api1/aa", 5, 50), 0);
    assert_int_equal(catalog_settlement_release(&f->cat, 1003, "api1/aa"), 0);
    assert_int_equal(catalog_settlement_get(&f->cat, 1003, &st), 1);
    assert_string_equal(st.lease_owner, "api2/bb");
    assert_int_equal(st.leased, 1);
    assert_int_equal(st.shards_done, 2);
    assert_int_equal(st.bets_settled, 20);
    assert_int_equal(st.bets_total, 90);
    assert_int_equal(catalog_settlement_renew(&f->cat, 1003, "api2/bb", 60000), 1);
    assert_int_equal(catalog_settlement_advance(&f->cat, 1003, "api2/bb", 1, 5), 0);
    assert_int_equal(catalog_settlement_get(&f->cat, 1003, &st), 1);
    assert_int_equal(st.shards_done, 3);
    assert_int_equal(st.bets_settled, 25);
    assert_int_equal(catalog_settlement_finish(&f->cat, 1003, NSHARD, 90), 0);
}

/* A cluster made before the leases: install adds their columns, rows stay. */
static const struct catalog_server *find_server(const struct catalog_server *srv,
                                                uint32_t n, const char *name)
{
    for (uint32_t i = 0; i < n; i++)
        if (strcmp(srv[i].name, name) == 0)
            return &srv[i];
    fail_msg("no server %s in the catalog", name);
    return NULL;
}

/* The servers of each host, and the flips of a host's primary. */
static void test_servers_sync_promote_and_roles(void **state)
{
    struct fixture *f = *state;
    struct shardmap_host_conf *h0 = &f->conf.hosts[0];
    struct catalog_server *srv = NULL;
    struct catalog_host got;
    uint32_t n = 0;
    uint64_t v0 = catfix_version(f), v;
    int ro = -1;

    h0->nreplica = 1;
    snprintf(h0->replicas[0].name, sizeof(h0->replicas[0].name), "r1");
    snprintf(h0->replicas[0].addr, sizeof(h0->replicas[0].addr), "127.0.0.7");
    h0->replicas[0].port = 4001;
    assert_int_equal(catalog_servers_sync(&f->cat, &f->conf), 0);
    assert_int_equal(catfix_version(f), v0 + 1);
    /* Again: nothing to add, no new version. */
    assert_int_equal(catalog_servers_sync(&f->cat, &f->conf), 0);
    assert_int_equal(catfix_version(f), v0 + 1);

    assert_int_equal(catalog_servers_load(&f->cat, &srv, &n), 0);
    assert_int_equal(n, f->conf.nhost + 1);
    assert_int_equal(find_server(srv, n, h0->name)->role, CATALOG_ROLE_PRIMARY);
    assert_int_equal(find_server(srv, n, "r1")->role, CATALOG_ROLE_REPLICA);
    assert_string_equal(find_server(srv, n, "r1")->host, h0->name);
    assert_int_equal(find_server(srv, n, "r1")->port, 4001);
    free(srv);

    /* A server of another host (or none) is refused, and nothing changes. */
    assert_int_equal(
        catalog_promote(&f->cat, f->conf.hosts[1].name, "r1", CATALOG_ROLE_FENCED, "x"),
        BC_ENOTFOUND);
    assert_int_equal(catfix_version(f), v0 + 1);
    assert_int_equal(catalog_host_get(&f->cat, f->conf.hosts[1].name, &got), 0);
    assert_int_equal(got.port, f->conf.hosts[1].port);
    assert_int_equal(catalog_servers_load(&f->cat, &srv, &n), 0);
    assert_int_equal(find_server(srv, n, f->conf.hosts[1].name)->role,
                     CATALOG_ROLE_PRIMARY);
    free(srv);

    /* A failover: the host's address, both roles and the version at once. */
    assert_int_equal(
        catalog_promote(&f->cat, h0->name, "r1", CATALOG_ROLE_FENCED, "failed over"),
        0);
    assert_int_equal(catfix_version(f), v0 + 2);
    assert_int_equal(catalog_host_get(&f->cat, h0->name, &got), 0);
    assert_string_equal(got.addr, "127.0.0.7");
    assert_int_equal(got.port, 4001);
    assert_int_equal(catalog_servers_load(&f->cat, &srv, &n), 0);
    assert_int_equal(find_server(srv, n, "r1")->role, CATALOG_ROLE_PRIMARY);
    assert_int_equal(find_server(srv, n, h0->name)->role, CATALOG_ROLE_FENCED);
    assert_string_equal(find_server(srv, n, h0->name)->note, "failed over");
    free(srv);

    /* The old primary rejoins as a replica. */
    assert_int_equal(
        catalog_server_set_role(&f->cat, h0->name, CATALOG_ROLE_REPLICA, "rejoined"),
        0);
    assert_int_equal(catfix_version(f), v0 + 3);
    assert_int_equal(catalog_servers_load(&f->cat, &srv, &n), 0);
    assert_int_equal(find_server(srv, n, h0->name)->role, CATALOG_ROLE_REPLICA);
    free(srv);
    assert_string_equal(catalog_role_name(CATALOG_ROLE_REBUILD), "rebuild");

    /* The test stack's global host is writable. */
    assert_int_equal(catalog_map_version_ro(&f->cat, &v, &ro), 0);
    assert_int_equal(v, v0 + 3);
    assert_int_equal(ro, 0);
    h0->nreplica = 0;
}

/*
 * A host that failed over between the plan that adds it and the rebalance:
 * the map takes its primary's address from the servers table, not the
 * plan's (a rebalance copied shards onto the read-only old primary).
 */
static void test_host_add_takes_the_servers_primary(void **state)
{
    struct fixture *f = *state;
    struct shardmap_host_conf h = {
        .name = "db9", .addr = "127.0.0.9", .port = 3999, .weight = 1};
    struct shardmap_host_conf plain = {
        .name = "db8", .addr = "127.0.0.8", .port = 3888, .weight = 1};
    struct catalog_host got;
    int added = 0, removed = 0;

    if (mysql_query(f->peek, "INSERT INTO " SCHEMA ".servers (name, host, addr, port, "
                             "role, note) VALUES ('db9', 'db9', '127.0.0.9', 3999, "
                             "'fenced', 'failed over'), ('db9b', 'db9', '127.0.0.10', "
                             "4002, 'primary', '')") != 0)
        fail_msg("%s", mysql_error(f->peek));
    assert_int_equal(catalog_host_add(&f->cat, &h, &added), 0);
    assert_int_equal(added, 1);
    assert_string_equal(h.addr, "127.0.0.10");
    assert_int_equal(h.port, 4002);
    assert_int_equal(catalog_host_get(&f->cat, "db9", &got), 0);
    assert_string_equal(got.addr, "127.0.0.10");
    assert_int_equal(got.port, 4002);
    /* A host the servers table does not know keeps the plan's address. */
    assert_int_equal(catalog_host_add(&f->cat, &plain, &added), 0);
    assert_int_equal(added, 1);
    assert_int_equal(catalog_host_get(&f->cat, "db8", &got), 0);
    assert_string_equal(got.addr, "127.0.0.8");
    assert_int_equal(got.port, 3888);

    assert_int_equal(catalog_host_remove_empty(&f->cat, "db9", &removed), 0);
    assert_int_equal(removed, 1);
    assert_int_equal(catalog_host_remove_empty(&f->cat, "db8", &removed), 0);
    assert_int_equal(removed, 1);
    if (mysql_query(f->peek, "DELETE FROM " SCHEMA ".servers WHERE host = 'db9'") != 0)
        fail_msg("%s", mysql_error(f->peek));
}

static void test_install_upgrades_old_settlements(void **state)
{
    struct fixture *f = *state;
    struct catalog_settlement st;

    if (mysql_query(f->peek, "ALTER TABLE " SCHEMA ".settlements DROP COLUMN "
                             "bets_total, DROP COLUMN lease_owner, DROP COLUMN "
                             "lease_until") != 0 ||
        mysql_query(f->peek, "INSERT INTO " SCHEMA ".settlements (match_id, result, "
                             "shards_total, shards_done, bets_settled) VALUES "
                             "(1004, 'home', 16, 4, 44)") != 0)
        fail_msg("%s", mysql_error(f->peek));
    assert_int_equal(catalog_settlement_get(&f->cat, 1004, &st), BC_EQUERY);
    assert_int_equal(catalog_install(&f->cat), 0);
    assert_int_equal(catalog_install(&f->cat), 0);
    assert_int_equal(itest_scalar(f->peek, "SELECT COUNT(*) FROM "
                                           "information_schema.COLUMNS WHERE "
                                           "TABLE_SCHEMA = '" SCHEMA "' AND TABLE_NAME "
                                           "= 'settlements' AND COLUMN_NAME IN "
                                           "('bets_total', 'lease_owner', "
                                           "'lease_until')"),
                     3);
    assert_int_equal(catalog_settlement_get(&f->cat, 1004, &st), 1);
    assert_string_equal(st.result, "home");
    assert_int_equal(st.shards_done, 4);
    assert_int_equal(st.bets_settled, 44);
    assert_int_equal(st.bets_total, 0);
    assert_int_equal(st.leased, 0);
    /* An old job nobody runs is claimable at once. */
    assert_int_equal(catalog_settlement_claim(&f->cat, 1004, "api1/aa", 60000), 1);
    assert_int_equal(catalog_settlement_finish(&f->cat, 1004, NSHARD, 44), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_settlement_create_get_progress),
        cmocka_unit_test(test_settlement_claim_has_one_winner),
        cmocka_unit_test(test_settlement_renew_and_release_by_the_owner),
        cmocka_unit_test(test_settlement_expired_lease_is_taken_over),
        cmocka_unit_test(test_servers_sync_promote_and_roles),
        cmocka_unit_test(test_host_add_takes_the_servers_primary),
        cmocka_unit_test(test_install_upgrades_old_settlements),
    };
    return cmocka_run_group_tests_name("catalog_jobs_integration", tests, setup,
                                       catfix_teardown);
}
