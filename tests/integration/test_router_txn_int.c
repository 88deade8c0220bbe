/*
 * test_router_txn_int.c: the router's single-shard transactions against the
 * real MariaDB hosts of the test stack: commit and rollback, and the shard's
 * fence held once for a transaction (router_txn_fence()), and idle
 * connections their server closed, replaced before use.
 */
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
#include "tests/integration/rtest.h"

/* Inserts a user of the suite's company in the transaction. */
static int txn_user(struct router_txn *txn, uint64_t id, const char *email)
{
    return router_txn_exec(
        txn, NULL,
        "INSERT INTO %S.users (id, email, password_hash, display_name, "
        "company_id, balance, initial_balance) VALUES (%u, %s, 'x', "
        "'f', %u, 1000, 1000)",
        id, email, TEST_COMPANY);
}

static void test_transaction_commits_and_rolls_back(void **state)
{
    struct fixture *f = *state;
    struct router_txn *txn;
    uint64_t id1, id2;
    int64_t before = rtest_count_users(f->router, 5);

    assert_int_equal(router_txn_begin(f->router, 5, &txn), 0);
    assert_int_equal(router_next_id(f->router, txn, 5, &id1), 0);
    assert_int_equal(txn_user(txn, id1, "txn1@x"), 0);
    router_txn_rollback(txn);
    assert_int_equal(rtest_count_users(f->router, 5), before);

    assert_int_equal(router_txn_begin(f->router, 5, &txn), 0);
    assert_int_equal(router_next_id(f->router, txn, 5, &id2), 0);
    assert_int_equal(txn_user(txn, id2, "txn2@x"), 0);
    assert_int_equal(router_txn_commit(txn), 0);
    assert_int_equal(rtest_count_users(f->router, 5), before + 1);
    assert_true(id2 > id1);
}

/* CONNECTION_ID() of shard's pooled connection, and whether its fence mark is clear. */
static int64_t session_of(struct router *r, uint32_t shard, int *clear)
{
    struct sql_rows rows = {0};
    int64_t id;

    assert_int_equal(
        router_exec(r, shard, &rows, "SELECT CONNECTION_ID(), @bc_fence_held IS NULL"),
        0);
    id = strtoll(sql_cell(&rows, 0, 0), NULL, 10);
    *clear = strcmp(sql_cell(&rows, 0, 1), "1") == 0;
    sql_rows_free(&rows);
    return id;
}

/*
 * router_txn_fence(): the shard's fence taken once (a move's fence waits for
 * the transaction), the triggers' mark set for the transaction only and
 * cleared before it ends, committed or rolled back, on the same pooled
 * connection; a fenced copy answers BC_EMOVED and leaves the connection
 * clean.
 */
static void test_txn_fence_held_once_and_cleared(void **state)
{
    struct fixture *f = *state;
    struct shardmap_conf one = f->conf;
    const struct shardmap *map;
    struct router_txn *txn;
    struct sql_rows rows = {0};
    struct router *r;
    char lock[160], fence[160], sql[160];
    int64_t before = rtest_count_users(f->router, 7), cid;
    uint64_t id;
    int clear;
    MYSQL *m;

    one.pool_size = 1; /* one connection a host: every statement below reuses it */
    assert_int_equal(router_create(&one, &r), 0);
    map = router_map(r);
    m = itest_mysql(&f->conf, map->nodes[map->node_of[7]].name);
    assert_int_equal(mysql_query(m, "SET SESSION innodb_lock_wait_timeout = 1"), 0);
    snprintf(lock, sizeof(lock),
             "UPDATE `%s_0007`.shard_state SET fenced = fenced WHERE id = 1",
             f->conf.schema_prefix);
    snprintf(fence, sizeof(fence),
             "UPDATE `%s_0007`.shard_state SET fenced = %%d WHERE id = 1",
             f->conf.schema_prefix);
    cid = session_of(r, 7, &clear);
    assert_true(clear);

    /* Held: the mark is set in the transaction, and the fence's update waits. */
    assert_int_equal(router_txn_begin(r, 7, &txn), 0);
    assert_int_equal(router_txn_fence(txn), 0);
    assert_int_equal(router_txn_fence(txn), 0); /* once is enough */
    assert_int_equal(router_txn_exec(txn, &rows, "SELECT @bc_fence_held"), 0);
    assert_string_equal(sql_cell(&rows, 0, 0), "1");
    sql_rows_free(&rows);
    assert_int_equal(router_next_id(r, txn, 7, &id), 0);
    assert_int_equal(txn_user(txn, id, "fence1@x"), 0);
    assert_int_not_equal(mysql_query(m, lock), 0);
    assert_int_equal(mysql_errno(m), 1205); /* ER_LOCK_WAIT_TIMEOUT */
    assert_int_equal(router_txn_commit(txn), 0);
    assert_int_equal(session_of(r, 7, &clear), cid);
    assert_true(clear);
    assert_int_equal(rtest_count_users(f->router, 7), before + 1);
    assert_int_equal(mysql_query(m, lock), 0); /* free again */

    /* Rolled back: the same, and nothing written. */
    assert_int_equal(router_txn_begin(r, 7, &txn), 0);
    assert_int_equal(router_txn_fence(txn), 0);
    assert_int_equal(router_next_id(r, txn, 7, &id), 0);
    assert_int_equal(txn_user(txn, id, "fence2@x"), 0);
    router_txn_rollback(txn);
    assert_int_equal(session_of(r, 7, &clear), cid);
    assert_true(clear);
    assert_int_equal(rtest_count_users(f->router, 7), before + 1);

    /* A fenced copy (a move's cut-over): refused, the connection clean. */
    snprintf(sql, sizeof(sql), fence, 1);
    assert_int_equal(mysql_query(m, sql), 0);
    assert_int_equal(router_txn_begin(r, 7, &txn), 0);
    assert_int_equal(router_txn_fence(txn), BC_EMOVED);
    router_txn_rollback(txn);
    assert_int_equal(session_of(r, 7, &clear), cid);
    assert_true(clear);
    /* Without the mark each row checks, and is refused; with it, rows skip it. */
    assert_int_equal(router_txn_begin(r, 7, &txn), 0);
    assert_int_equal(router_next_id(r, txn, 7, &id), 0);
    assert_int_equal(txn_user(txn, id, "fence3@x"), BC_EMOVED);
    router_txn_rollback(txn);
    assert_int_equal(router_txn_begin(r, 7, &txn), 0);
    assert_int_equal(router_txn_exec(txn, NULL, "SET @bc_fence_held = 1"), 0);
    assert_int_equal(txn_user(txn, id, "fence3@x"), 0);
    assert_int_equal(router_txn_exec(txn, NULL, "SET @bc_fence_held = NULL"), 0);
    router_txn_rollback(txn);
    snprintf(sql, sizeof(sql), fence, 0);
    assert_int_equal(mysql_query(m, sql), 0);
    assert_int_equal(rtest_count_users(f->router, 7), before + 1);
    mysql_close(m);
    router_destroy(r);
}

/* The pool's stats of host. */
static struct router_host_stats host_stats(struct router *r, const char *host)
{
    struct router_host_stats st[2 * SHARDMAP_MAX_HOSTS];
    uint32_t n = router_stats(r, st, 2 * SHARDMAP_MAX_HOSTS);

    for (uint32_t i = 0; i < n; i++)
        if (!st[i].replica && strcmp(st[i].name, host) == 0)
            return st[i];
    fail_msg("no pool for host %s", host);
    return st[0];
}

/*
 * Opens 4 request connections to the host of a shard other than the global
 * host's (its pool is the test's alone), each first running setup (NULL:
 * nothing), and leaves them idle; their ids go to ids.
 */
static uint32_t idle_connections(struct router *r, const char *global_host,
                                 const char *setup, int64_t ids[4])
{
    const struct shardmap *map = router_map(r);
    struct router_txn *txn[4];
    struct sql_rows rows = {0};
    uint32_t shard = 0;

    assert_non_null(map);
    while (strcmp(map->nodes[map->node_of[shard]].name, global_host) == 0)
        shard++;
    for (int i = 0; i < 4; i++) {
        assert_int_equal(router_txn_begin(r, shard, &txn[i]), 0);
        if (setup != NULL)
            assert_int_equal(router_txn_exec(txn[i], NULL, setup), 0);
        assert_int_equal(router_txn_exec(txn[i], &rows, "SELECT CONNECTION_ID()"), 0);
        ids[i] = strtoll(sql_cell(&rows, 0, 0), NULL, 10);
        sql_rows_free(&rows);
    }
    for (int i = 0; i < 4; i++)
        assert_int_equal(router_txn_commit(txn[i]), 0);
    return shard;
}

/* Waits (5 s at most) until none of the 4 sessions is left on the server. */
static void wait_sessions_gone(MYSQL *m, const int64_t ids[4])
{
    char sql[256];

    snprintf(sql, sizeof(sql),
             "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
             "WHERE ID IN (%lld, %lld, %lld, %lld)",
             (long long)ids[0], (long long)ids[1], (long long)ids[2],
             (long long)ids[3]);
    for (int tries = 0; tries < 500; tries++) {
        MYSQL_RES *res;
        MYSQL_ROW row;
        long left;

        assert_int_equal(mysql_query(m, sql), 0);
        res = mysql_store_result(m);
        assert_non_null(res);
        row = mysql_fetch_row(res);
        left = row != NULL && row[0] != NULL ? strtol(row[0], NULL, 10) : -1;
        mysql_free_result(res);
        if (left == 0)
            return;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    fail_msg("the sessions are still on the server after 5 s");
}

/* Four writes on shard; how many failed. */
static int writes_failed(struct router *r, uint32_t shard)
{
    int failed = 0;

    for (int i = 0; i < 4; i++)
        failed += router_exec(r, shard, NULL,
                              "UPDATE %S.users SET balance = balance WHERE id = 0") < 0;
    return failed;
}

/*
 * Idle connections that died with their server (killed here, as a restart
 * does): each is found closed before it is used, and replaced, so no write
 * fails. A write sent on one would have failed (it is not sent again: it
 * may have run); before the check, each write met a dead connection.
 */
static void test_killed_idle_connections_fail_no_write(void **state)
{
    struct fixture *f = *state;
    struct router *r = NULL;
    int64_t ids[4];
    char sql[64];
    uint32_t shard;
    const char *host;
    MYSQL *m;

    assert_int_equal(router_create(&f->conf, &r), 0);
    shard = idle_connections(r, f->conf.global_host, NULL, ids);
    host = router_map(r)->nodes[router_map(r)->node_of[shard]].name;
    m = itest_mysql(&f->conf, host);
    for (int i = 0; i < 4; i++) {
        snprintf(sql, sizeof(sql), "KILL CONNECTION %lld", (long long)ids[i]);
        assert_int_equal(mysql_query(m, sql), 0);
    }
    wait_sessions_gone(m, ids);
    mysql_close(m);
    assert_int_equal(writes_failed(r, shard), 0);
    assert_int_equal(host_stats(r, host).stale, 4);
    router_destroy(r);
}

/*
 * The server's wait_timeout (8 h by default: a quiet night) ends idle
 * sessions; the pool finds them closed and no write fails.
 */
static void test_idle_connections_past_wait_timeout_fail_no_write(void **state)
{
    struct fixture *f = *state;
    struct router *r = NULL;
    int64_t ids[4];
    uint32_t shard;
    const char *host;
    MYSQL *m;

    assert_int_equal(router_create(&f->conf, &r), 0);
    shard =
        idle_connections(r, f->conf.global_host, "SET SESSION wait_timeout = 1", ids);
    host = router_map(r)->nodes[router_map(r)->node_of[shard]].name;
    m = itest_mysql(&f->conf, host);
    wait_sessions_gone(m, ids);
    mysql_close(m);
    assert_int_equal(writes_failed(r, shard), 0);
    assert_int_equal(host_stats(r, host).stale, 4);
    router_destroy(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_transaction_commits_and_rolls_back),
        cmocka_unit_test(test_txn_fence_held_once_and_cleared),
        cmocka_unit_test(test_killed_idle_connections_fail_no_write),
        cmocka_unit_test(test_idle_connections_past_wait_timeout_fail_no_write),
    };
    return cmocka_run_group_tests_name("router_txn_integration", tests, rtest_setup,
                                       rtest_teardown);
}
