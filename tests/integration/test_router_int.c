/*
 * test_router_int.c: the router against the real MariaDB hosts of the test
 * stack: writes and reads on every shard, ids, scatter-gather (union, top-K,
 * batch), background pools and slow statements, a SIGSTOPped host,
 * following a map change made in the database, and a router that could
 * read no map.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "router/router.h"
#include "tests/integration/itest.h"
#include "tests/integration/rtest.h"

static void test_write_and_read_every_shard(void **state)
{
    struct fixture *f = *state;

    for (uint32_t s = 0; s < NSHARD; s++) {
        struct sql_rows rows = {0};
        char email[64];
        uint64_t id;

        assert_int_equal(router_next_id(f->router, NULL, s, &id), 0);
        assert_int_equal(router_shard_of_id(id), s);
        snprintf(email, sizeof(email), "shard%u-'quote\"@example.com", s);
        rtest_insert_user(f->router, id, email, (int64_t)s * 7 % 23);
        /* Read back by id: the id alone routes to the row. */
        assert_int_equal(router_exec(f->router, router_shard_of_id(id), &rows,
                                     "SELECT email, points FROM %S.users WHERE id = %u",
                                     id),
                         0);
        assert_int_equal(rows.nrow, 1);
        assert_string_equal(sql_cell(&rows, 0, 0), email);
        sql_rows_free(&rows);
    }
}

static void test_rows_land_on_the_mapped_host(void **state)
{
    struct fixture *f = *state;
    const struct shardmap *map = router_map(f->router);
    char sql[256];

    /* Ask each MariaDB host directly: its shards hold one row each. */
    for (uint32_t s = 0; s < NSHARD; s++) {
        const char *host = map->nodes[map->node_of[s]].name;
        MYSQL *m = itest_mysql(&f->conf, host);
        snprintf(sql, sizeof(sql),
                 "SELECT COUNT(*) FROM %s_%04u.users WHERE email LIKE 'shard%u-%%'",
                 f->conf.schema_prefix, s, s);
        assert_int_equal(itest_scalar(m, sql), 1);
        mysql_close(m);
    }
}

static void test_email_routes_to_one_shard(void **state)
{
    struct fixture *f = *state;
    char canon[256];
    struct sql_rows rows = {0};
    uint32_t shard;
    uint64_t id;
    int len = shardmap_canonical_email("  Carol@Example.COM ", canon, sizeof(canon));

    assert_true(len > 0);
    shard = router_shard_of_key(f->router, canon, (size_t)len);
    assert_int_equal(router_next_id(f->router, NULL, shard, &id), 0);
    rtest_insert_user(f->router, id, canon, 0);
    assert_int_equal(router_exec(f->router, shard, &rows,
                                 "SELECT id FROM %S.users WHERE email = %s", canon),
                     0);
    assert_int_equal(rows.nrow, 1);
    assert_int_equal(strtoull(sql_cell(&rows, 0, 0), NULL, 10), id);
    sql_rows_free(&rows);
    /* The duplicate e-mail is a clear status, not a generic failure. */
    assert_int_equal(router_next_id(f->router, NULL, shard, &id), 0);
    assert_int_equal(
        router_exec(f->router, shard, NULL,
                    "INSERT INTO %S.users (id, email, password_hash, "
                    "display_name, company_id, balance, initial_balance) VALUES "
                    "(%u, %s, 'x', 'c', 999999, 1000, 1000)",
                    id, canon),
        BC_EDUPKEY);
}

struct id_worker {
    struct router *router;
    uint64_t ids[300];
};

static void *id_main(void *arg)
{
    struct id_worker *w = arg;

    for (int i = 0; i < 300; i++)
        if (router_next_id(w->router, NULL, 9, &w->ids[i]) != 0)
            w->ids[i] = 0;
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void test_ids_unique_across_routers(void **state)
{
    struct fixture *f = *state;
    struct router *second;
    struct id_worker w[4];
    pthread_t t[4];
    uint64_t all[1200];

    /* Two routers stand for two API servers sharing nothing but the database. */
    assert_int_equal(router_create(&f->conf, &second), 0);
    for (int i = 0; i < 4; i++) {
        w[i].router = i % 2 ? second : f->router;
        assert_int_equal(pthread_create(&t[i], NULL, id_main, &w[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        memcpy(all + i * 300, w[i].ids, sizeof(w[i].ids));
    }
    qsort(all, 1200, sizeof(all[0]), cmp_u64);
    assert_true(all[0] != 0);
    for (int i = 1; i < 1200; i++) {
        if (all[i] == all[i - 1])
            fail_msg("duplicate id %" PRIu64, all[i]);
        assert_int_equal(router_shard_of_id(all[i]), 9);
    }
    router_destroy(second);
}

static void test_scatter_returns_the_union(void **state)
{
    struct fixture *f = *state;
    struct sql_rows rows = {0};
    struct router_host_stats before[8], after[8];
    int64_t total = 0, direct = 0;
    uint32_t nh;
    uint8_t seen[NSHARD] = {0};

    for (uint32_t s = 0; s < NSHARD; s++)
        direct += rtest_count_users(f->router, s);
    /* The map poller's statements go to the global host: none while counting. */
    router_set_polling(f->router, 0);
    nh = router_stats(f->router, before, 8);
    assert_int_equal(router_scatter(f->router, &rows,
                                    "SELECT %N AS shard, COUNT(*) FROM %S.users "
                                    "WHERE company_id = %u",
                                    TEST_COMPANY),
                     0);
    router_stats(f->router, after, 8);
    router_set_polling(f->router, 1);
    assert_int_equal(rows.nrow, NSHARD);
    for (uint32_t i = 0; i < rows.nrow; i++) {
        uint32_t s = (uint32_t)strtoul(sql_cell(&rows, i, 0), NULL, 10);
        assert_true(s < NSHARD);
        assert_int_equal(seen[s], 0);
        seen[s] = 1;
        total += strtoll(sql_cell(&rows, i, 1), NULL, 10);
    }
    assert_int_equal(total, direct);
    /* One round trip per host, not per shard. */
    for (uint32_t i = 0; i < nh; i++)
        assert_int_equal(after[i].queries - before[i].queries, 1);
    sql_rows_free(&rows);
}

/* A wrapped scatter: each host sums its shards' rows and sends one per group. */
static void test_scatter_wrap_reduces_on_each_host(void **state)
{
    struct fixture *f = *state;
    struct sql_rows rows = {0}, all = {0};
    int64_t want[2] = {0, 0}, got[2] = {0, 0};
    uint32_t nh = router_stats(f->router, NULL, 0);

    assert_int_equal(router_scatter(f->router, &all,
                                    "SELECT points MOD 2, points FROM %S.users "
                                    "WHERE company_id = %u",
                                    TEST_COMPANY),
                     0);
    assert_true(all.nrow > 2 * nh);
    for (uint32_t i = 0; i < all.nrow; i++)
        want[strtol(sql_cell(&all, i, 0), NULL, 10) != 0] +=
            strtoll(sql_cell(&all, i, 1), NULL, 10);
    assert_int_equal(router_scatter_wrap(f->router, &rows, "SELECT k, SUM(p) FROM (",
                                         ") t GROUP BY k",
                                         "SELECT points MOD 2 AS k, points AS p FROM "
                                         "%S.users WHERE company_id = %u",
                                         TEST_COMPANY),
                     0);
    /* At most one row per host and group, not one per shard or user. */
    assert_true(rows.nrow <= 2 * nh);
    for (uint32_t i = 0; i < rows.nrow; i++)
        got[strtol(sql_cell(&rows, i, 0), NULL, 10) != 0] +=
            strtoll(sql_cell(&rows, i, 1), NULL, 10);
    assert_int_equal(got[0], want[0]);
    assert_int_equal(got[1], want[1]);
    sql_rows_free(&rows);
    sql_rows_free(&all);
}

/*
 * A shape of two SELECTs joined by ") UNION ALL (" reads both, and a wrap
 * without head (tail " LIMIT n") limits each host's whole UNION ALL.
 */
static void test_scatter_wrap_flat_parts_and_limit(void **state)
{
    struct fixture *f = *state;
    const struct shardmap *map = router_map(f->router);
    struct sql_rows all = {0}, two = {0}, lim = {0};
    uint32_t nh = map->nnode, want = 0;
    uint32_t *per_host = calloc(nh, sizeof(*per_host));
    int64_t sum = 0, got[2] = {0, 0};

    assert_non_null(per_host);
    assert_int_equal(
        router_scatter(f->router, &all,
                       "SELECT id, points FROM %S.users WHERE company_id = %u",
                       TEST_COMPANY),
        0);
    assert_true(all.nrow > 2 * nh);
    for (uint32_t i = 0; i < all.nrow; i++) {
        uint64_t id = strtoull(sql_cell(&all, i, 0), NULL, 10);
        per_host[map->node_of[shardmap_id_shard(id)]]++;
        sum += strtoll(sql_cell(&all, i, 1), NULL, 10);
    }
    assert_int_equal(router_scatter_wrap(
                         f->router, &two, "SELECT k, SUM(p) FROM (", ") t GROUP BY k",
                         "SELECT 0 AS k, points AS p FROM %S.users WHERE "
                         "company_id = %u) UNION ALL (SELECT 1, points "
                         "FROM %S.users WHERE company_id = %u",
                         TEST_COMPANY, TEST_COMPANY),
                     0);
    assert_true(two.nrow <= 2 * nh);
    for (uint32_t i = 0; i < two.nrow; i++)
        got[strtol(sql_cell(&two, i, 0), NULL, 10) != 0] +=
            strtoll(sql_cell(&two, i, 1), NULL, 10);
    assert_int_equal(got[0], sum);
    assert_int_equal(got[1], sum);
    /* Each host sends at most 2 rows: the limit is on its union, not a shard. */
    for (uint32_t n = 0; n < nh; n++)
        want += per_host[n] < 2 ? per_host[n] : 2;
    assert_int_equal(router_scatter_wrap(
                         f->router, &lim, NULL, " LIMIT 2",
                         "SELECT id FROM %S.users WHERE company_id = %u", TEST_COMPANY),
                     0);
    assert_int_equal(lim.nrow, want);
    assert_int_equal(router_scatter_wrap(f->router, &lim, "SELECT * FROM (", NULL,
                                         "SELECT id FROM %S.users"),
                     -EINVAL);
    sql_rows_free(&lim);
    sql_rows_free(&two);
    sql_rows_free(&all);
    free(per_host);
}

static int by_points_then_id(const char *const *a, const char *const *b, void *arg)
{
    long long pa = strtoll(a[1], NULL, 10), pb = strtoll(b[1], NULL, 10);
    unsigned long long ia = strtoull(a[0], NULL, 10), ib = strtoull(b[0], NULL, 10);
    (void)arg;
    if (pa != pb)
        return pa > pb ? -1 : 1;
    return ia < ib ? -1 : ia > ib;
}

static int cmp_rows(const void *a, const void *b)
{
    return by_points_then_id((const char *const *)a, (const char *const *)b, NULL);
}

static void test_scatter_topk_merges(void **state)
{
    struct fixture *f = *state;
    struct sql_rows top = {0}, all = {0};

    assert_int_equal(router_scatter_topk(f->router, &top, 10, "points DESC, id ASC",
                                         by_points_then_id, NULL,
                                         "SELECT id, points FROM %S.users WHERE "
                                         "company_id = %u ORDER BY points DESC, id "
                                         "ASC LIMIT 10",
                                         TEST_COMPANY),
                     0);
    assert_int_equal(
        router_scatter(f->router, &all,
                       "SELECT id, points FROM %S.users WHERE company_id = %u",
                       TEST_COMPANY),
        0);
    assert_true(all.nrow > 10);
    assert_int_equal(top.nrow, 10);
    /* The merge equals sorting everything and cutting at 10. */
    qsort(all.cell, all.nrow, 2 * sizeof(char *), cmp_rows);
    for (uint32_t i = 0; i < 10; i++) {
        assert_string_equal(sql_cell(&top, i, 0), sql_cell(&all, i, 0));
        assert_string_equal(sql_cell(&top, i, 1), sql_cell(&all, i, 1));
    }
    sql_rows_free(&top);
    sql_rows_free(&all);
}

static void test_scatter_exec_batches_per_host(void **state)
{
    struct fixture *f = *state;
    struct sql_rows rows = {0}, sum = {0};
    struct router_host_stats before[8], after[8];
    uint32_t nh = router_stats(f->router, before, 8);
    int64_t users = 0;

    for (uint32_t s = 0; s < NSHARD; s++)
        users += rtest_count_users(f->router, s);
    router_set_polling(f->router, 0); /* as in test_scatter_returns_the_union */
    nh = router_stats(f->router, before, 8);
    assert_int_equal(router_scatter_exec(f->router, &rows,
                                         "UPDATE %S.users SET points = points + 1 "
                                         "WHERE company_id = %u",
                                         TEST_COMPANY),
                     0);
    router_stats(f->router, after, 8);
    router_set_polling(f->router, 1);
    assert_int_equal(rows.affected, users);
    for (uint32_t i = 0; i < nh; i++)
        assert_int_equal(after[i].queries - before[i].queries, 1);
    assert_int_equal(router_scatter(f->router, &sum,
                                    "SELECT COUNT(*) FROM %S.users "
                                    "WHERE points = 0 AND company_id = %u",
                                    TEST_COMPANY),
                     0);
    for (uint32_t i = 0; i < sum.nrow; i++)
        assert_string_equal(sql_cell(&sum, i, 0), "0");
    sql_rows_free(&sum);
}

struct hammer {
    struct router *router;
    uint32_t shard;
    volatile int stop;
    int failures, max_ms;
};

static void *hammer_main(void *arg)
{
    struct hammer *h = arg;

    while (!h->stop) {
        int64_t t0 = itest_now_ms();
        int rc =
            router_exec(h->router, h->shard, NULL, "SELECT 1 FROM %S.users LIMIT 1");
        int ms = (int)(itest_now_ms() - t0);
        if (rc != 0)
            h->failures++;
        if (ms > h->max_ms)
            h->max_ms = ms;
    }
    return NULL;
}

static void test_stopped_host_fails_fast_others_serve(void **state)
{
    struct fixture *f = *state;
    const struct shardmap *map = router_map(f->router);
    int victim = shardmap_node_index(map, "db2"), pid = itest_pid("db2");
    uint32_t dead_shard = UINT32_MAX, live_shard = UINT32_MAX;
    struct hammer h = {.router = f->router};
    pthread_t t;

    for (uint32_t s = 0; s < NSHARD; s++) {
        if (map->node_of[s] == victim && dead_shard == UINT32_MAX)
            dead_shard = s;
        if (map->node_of[s] != victim && live_shard == UINT32_MAX)
            live_shard = s;
    }
    h.shard = dead_shard;
    itest_sigstop(pid);
    assert_int_equal(pthread_create(&t, NULL, hammer_main, &h), 0);

    /* Every shard of the stopped host fails within 1 s, with a clear status. */
    for (uint32_t s = 0; s < NSHARD; s++) {
        int64_t t0 = itest_now_ms();
        int rc = router_exec(f->router, s, NULL, "SELECT COUNT(*) FROM %S.users");
        int64_t ms = itest_now_ms() - t0;
        if (map->node_of[s] == victim) {
            if (rc != BC_ETIMEOUT && rc != BC_EDOWN)
                fail_msg("shard %u on stopped host: rc %d (%s)", s, rc,
                         bc_strerror(rc));
        } else {
            /* Others are not held up by the requests stuck on the stopped host. */
            if (rc != 0)
                fail_msg("shard %u on a live host: %s", s, router_last_error());
            if (ms > 200)
                fail_msg("shard %u on a live host took %" PRId64 " ms", s, ms);
        }
        assert_true(ms < 1000);
    }
    usleep(1500 * 1000);
    h.stop = 1;
    pthread_join(t, NULL);
    assert_true(h.failures > 0);
    assert_true(h.max_ms < 1000);
    /* A scatter fails as a whole (with the host named), and fast. */
    int64_t t0 = itest_now_ms();
    assert_int_not_equal(
        router_scatter(f->router, NULL, "SELECT 1 FROM %S.users LIMIT 1"), 0);
    assert_true(itest_now_ms() - t0 < 1000);
    assert_non_null(strstr(router_last_error(), "db2"));

    assert_int_equal(kill(pid, SIGCONT), 0);
    /* It heals by itself: within a few seconds the shard answers again. */
    int64_t deadline = itest_now_ms() + 5000;
    int rc;
    do {
        rc = router_exec(f->router, dead_shard, NULL, "SELECT COUNT(*) FROM %S.users");
        if (rc != 0)
            usleep(100 * 1000);
    } while (rc != 0 && itest_now_ms() < deadline);
    assert_int_equal(rc, 0);
    assert_int_equal(router_exec(f->router, live_shard, NULL, "SELECT 1"), 0);
}

/* The stats of the named host. */
static struct router_host_stats host_stats(struct router *r, const char *name)
{
    struct router_host_stats st[SHARDMAP_MAX_HOSTS];
    uint32_t n = router_stats(r, st, SHARDMAP_MAX_HOSTS);

    for (uint32_t i = 0; i < n; i++)
        if (strcmp(st[i].name, name) == 0)
            return st[i];
    fail_msg("no stats for host %s", name);
    return st[0];
}

/* A router of its own over the stack, with a router: section changed. */
static struct router *router_with(uint32_t pool_size, uint32_t query_timeout_ms,
                                  uint32_t batch_timeout_ms)
{
    struct shardmap_conf conf;
    struct router *r;

    itest_conf(&conf);
    conf.pool_size = pool_size;
    conf.query_timeout_ms = query_timeout_ms;
    conf.batch_timeout_ms = batch_timeout_ms;
    assert_int_equal(router_create(&conf, &r), 0);
    shardmap_conf_deinit(&conf);
    assert_non_null(router_map(r));
    return r;
}

/* Up to max shards of the named host, in order; returns how many. */
static uint32_t shards_of(struct router *r, const char *host, uint32_t *found,
                          uint32_t max)
{
    const struct shardmap *map = router_map(r);
    int node = shardmap_node_index(map, host);
    uint32_t n = 0;

    assert_true(node >= 0);
    for (uint32_t s = 0; s < NSHARD && n < max; s++)
        if (map->node_of[s] == node)
            found[n++] = s;
    return n;
}

struct sleeper {
    struct router *router;
    uint32_t shard;
    volatile int done;
    int rc;
    int64_t ms;
};

/* A batch statement of 3 s, from a thread in background mode. */
static void *sleeper_main(void *arg)
{
    struct sleeper *z = arg;
    int64_t t0 = itest_now_ms();

    router_background(1);
    z->rc = router_exec(z->router, z->shard, NULL, "SELECT SLEEP(3)");
    z->ms = itest_now_ms() - t0;
    router_background(0);
    z->done = 1;
    return NULL;
}

/*
 * Batch work never takes a host offline: a 3 s statement on the background
 * pool of db1 runs to its end (batch_timeout_ms, not the 800 ms of a
 * request), while requests for db1's shards, on a request pool of a single
 * connection, go on succeeding and db1 is never reported down.
 */
static void test_background_statement_leaves_requests_alone(void **state)
{
    struct router *r = router_with(1, 800, 0); /* batch: the 30 s default */
    struct sleeper z = {.router = r};
    uint32_t shards[NSHARD], n = shards_of(r, "db1", shards, NSHARD);
    int ok = 0, down = 0;
    pthread_t t;
    (void)state;

    assert_true(n > 0);
    z.shard = shards[0];
    assert_int_equal(pthread_create(&t, NULL, sleeper_main, &z), 0);
    /* The sleeper holds a connection of the background pool. */
    for (int64_t t0 = itest_now_ms();
         host_stats(r, "db1").bg_open == 0 && itest_now_ms() - t0 < 1000;)
        usleep(5 * 1000);
    assert_int_equal(host_stats(r, "db1").bg_open, 1);
    for (int i = 0; i < 20; i++) {
        struct sql_rows rows = {0};
        int64_t t0 = itest_now_ms();
        int rc = router_exec(r, shards[i % n], &rows, "SELECT COUNT(*) FROM %S.users");
        int64_t ms = itest_now_ms() - t0;

        if (rc == 0)
            ok++;
        else if (rc == BC_EDOWN)
            down++;
        else
            fail_msg("request %d on shard %u: %s", i, shards[i % n],
                     router_last_error());
        if (ms > 200)
            fail_msg("request %d took %" PRId64 " ms beside the batch", i, ms);
        sql_rows_free(&rows);
        struct router_host_stats st = host_stats(r, "db1");
        assert_int_equal(st.up, 1);
        assert_true(st.open <= 1);
        usleep(100 * 1000);
    }
    /* All 20 ran while the batch statement was still running. */
    assert_int_equal(z.done, 0);
    assert_int_equal(ok, 20);
    assert_int_equal(down, 0);
    pthread_join(t, NULL);
    if (z.rc != 0)
        fail_msg("the batch statement failed after %" PRId64 " ms: %s", z.ms,
                 router_last_error());
    assert_true(z.ms >= 2900);
    struct router_host_stats st = host_stats(r, "db1");
    assert_int_equal(st.up, 1);
    assert_int_equal(st.timeouts, 0);
    assert_int_equal(st.bg_idle, 1); /* put back, not broken */
    router_destroy(r);
}

/* One statement that must time out; returns how long it took. */
static int64_t expect_timeout(struct router *r, uint32_t shard)
{
    int64_t t0 = itest_now_ms();
    int rc = router_exec(r, shard, NULL, "SELECT SLEEP(1)");

    if (rc != BC_ETIMEOUT)
        fail_msg("SELECT SLEEP(1) on shard %u: rc %d (%s), want a timeout", shard, rc,
                 router_last_error());
    return itest_now_ms() - t0;
}

/*
 * A slow statement is not a host failure: one request that times out leaves
 * its host (db3) up (the next request runs), and a success ends a row of
 * timeouts; only 3 in a row mark the host down (then requests fail at once,
 * and it heals after a second). Timeouts in the background pool never mark
 * it down.
 */
static void test_one_request_timeout_is_not_a_host_failure(void **state)
{
    struct router *r = router_with(4, 200, 300);
    uint32_t shard;
    int64_t t0;
    (void)state;

    /*
     * db3: not the global host, and no map poll either, whose statements
     * would answer between the timeouts and end each row.
     */
    router_set_polling(r, 0);
    assert_int_equal(shards_of(r, "db3", &shard, 1), 1);
    assert_true(expect_timeout(r, shard) < 700);
    assert_int_equal(host_stats(r, "db3").up, 1);
    assert_int_equal(router_exec(r, shard, NULL, "SELECT 1"), 0);

    /* Two in a row, a success, two again: never three in a row. */
    expect_timeout(r, shard);
    expect_timeout(r, shard);
    assert_int_equal(host_stats(r, "db3").up, 1);
    assert_int_equal(router_exec(r, shard, NULL, "SELECT 1"), 0);
    expect_timeout(r, shard);
    expect_timeout(r, shard);
    assert_int_equal(host_stats(r, "db3").up, 1);
    assert_int_equal(host_stats(r, "db3").timeouts, 5);

    /* The third in a row: the host is down, its requests fail at once. */
    expect_timeout(r, shard);
    assert_int_equal(host_stats(r, "db3").up, 0);
    t0 = itest_now_ms();
    assert_int_equal(router_exec(r, shard, NULL, "SELECT 1"), BC_EDOWN);
    assert_true(itest_now_ms() - t0 < 50);
    usleep(1100 * 1000);
    assert_int_equal(router_exec(r, shard, NULL, "SELECT 1"), 0);
    assert_int_equal(host_stats(r, "db3").up, 1);

    /* Background statements that time out, five in a row: db3 stays up. */
    router_background(1);
    for (int i = 0; i < 5; i++) {
        int64_t ms = expect_timeout(r, shard);
        assert_true(ms >= 250 && ms < 900);
        assert_int_equal(host_stats(r, "db3").up, 1);
    }
    router_background(0);
    assert_int_equal(host_stats(r, "db3").timeouts, 11);
    assert_int_equal(router_exec(r, shard, NULL, "SELECT 1"), 0);
    router_destroy(r);
}

static void set_shard_host(MYSQL *g, const char *prefix, uint32_t shard,
                           const char *host)
{
    char sql[512];

    snprintf(sql, sizeof(sql),
             "UPDATE %s_global.shard_map SET host = '%s', version = version + 1 "
             "WHERE shard = %u",
             prefix, host, shard);
    assert_int_equal(mysql_query(g, "START TRANSACTION"), 0);
    assert_int_equal(mysql_query(g, sql), 0);
    snprintf(sql, sizeof(sql), "UPDATE %s_global.map_version SET version = version + 1",
             prefix);
    assert_int_equal(mysql_query(g, sql), 0);
    assert_int_equal(mysql_query(g, "COMMIT"), 0);
}

static void test_router_follows_map_change(void **state)
{
    struct fixture *f = *state;
    const struct shardmap *map = router_map(f->router);
    uint64_t v0 = map->version;
    char orig[SHARDMAP_NAME_MAX], other[SHARDMAP_NAME_MAX];
    MYSQL *g = itest_mysql(&f->conf, f->conf.global_host);
    int64_t t0;

    snprintf(orig, sizeof(orig), "%s", map->nodes[map->node_of[3]].name);
    snprintf(other, sizeof(other), "%s",
             map->nodes[(map->node_of[3] + 1) % map->nnode].name);
    set_shard_host(g, f->conf.schema_prefix, 3, other);
    /* The poller picks it up within its period (1 s) plus a query. */
    t0 = itest_now_ms();
    while (router_map(f->router)->version == v0 && itest_now_ms() - t0 < 3000)
        usleep(20 * 1000);
    map = router_map(f->router);
    assert_int_equal(map->version, v0 + 1);
    assert_string_equal(map->nodes[map->node_of[3]].name, other);
    assert_true(itest_now_ms() - t0 <= 2000);
    /* The schema is not on the new host: the router says so clearly. */
    assert_int_equal(router_exec(f->router, 3, NULL, "SELECT 1 FROM %S.users"),
                     BC_EMOVED);

    set_shard_host(g, f->conf.schema_prefix, 3, orig);
    router_map_stale(f->router);
    t0 = itest_now_ms();
    while (router_map(f->router)->version == v0 + 1 && itest_now_ms() - t0 < 3000)
        usleep(5 * 1000);
    map = router_map(f->router);
    assert_string_equal(map->nodes[map->node_of[3]].name, orig);
    assert_int_equal(router_exec(f->router, 3, NULL, "SELECT 1 FROM %S.users"), 0);
    mysql_close(g);
}

static void test_bad_format_is_an_error(void **state)
{
    struct fixture *f = *state;
    (void)state;
    assert_int_equal(router_exec(f->router, 0, NULL, "SELECT %q"), -EINVAL);
    assert_int_equal(router_exec(f->router, NSHARD, NULL, "SELECT 1"), BC_ESHARD);
    assert_int_equal(router_exec(f->router, 0, NULL, "SELEC nonsense"), BC_EQUERY);
    assert_non_null(strstr(router_last_error(), "SQL syntax"));
}

/* A loopback port nobody listens on: bound once, then closed. */
static uint16_t closed_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

/*
 * A router started while its global host was down has no map: every routed
 * call is BC_ENOMAP (the API's 503), never BC_ENOTFOUND, which the API read
 * as a missing row (401 "the token's user no longer exists" for a user who
 * does). The global schema itself is a host down.
 */
static void test_no_map_is_unavailable_not_not_found(void **state)
{
    struct fixture *f = *state;
    int g = shardmap_conf_host(&f->conf, f->conf.global_host);
    struct sql_rows rows = {0};
    struct router_txn *txn = NULL;
    struct router_op *op = NULL;
    struct router *r = NULL;
    char addr[sizeof(f->conf.hosts[0].addr)];
    uint16_t port;
    uint64_t id;

    assert_true(g >= 0);
    snprintf(addr, sizeof(addr), "%s", f->conf.hosts[g].addr);
    port = f->conf.hosts[g].port;
    snprintf(f->conf.hosts[g].addr, sizeof(addr), "127.0.0.1");
    f->conf.hosts[g].port = closed_port();
    assert_int_equal(router_create(&f->conf, &r), 0); /* copies the conf */
    snprintf(f->conf.hosts[g].addr, sizeof(addr), "%s", addr);
    f->conf.hosts[g].port = port;
    router_set_polling(r, 0);
    assert_null(router_map(r));

    assert_int_equal(router_exec(r, 5, &rows, "SELECT 1 FROM %S.users"), BC_ENOMAP);
    assert_non_null(strstr(router_last_error(), "no shard map loaded"));
    assert_int_equal(router_scatter(r, &rows, "SELECT 1 FROM %S.users"), BC_ENOMAP);
    assert_int_equal(router_txn_begin(r, 5, &txn), BC_ENOMAP);
    assert_null(txn);
    assert_int_equal(router_next_id(r, NULL, 5, &id), BC_ENOMAP);
    assert_int_equal(router_op_start(r, 5, &rows, &op, "SELECT 1 FROM %S.users"),
                     BC_ENOMAP);
    assert_null(op);
    assert_int_equal(router_host_key(r, 5), 0);
    assert_int_equal(router_exec(r, ROUTER_GLOBAL, NULL, "SELECT 1"), BC_EDOWN);
    sql_rows_free(&rows);
    router_destroy(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_write_and_read_every_shard),
        cmocka_unit_test(test_rows_land_on_the_mapped_host),
        cmocka_unit_test(test_email_routes_to_one_shard),
        cmocka_unit_test(test_ids_unique_across_routers),
        cmocka_unit_test(test_scatter_returns_the_union),
        cmocka_unit_test(test_scatter_wrap_reduces_on_each_host),
        cmocka_unit_test(test_scatter_wrap_flat_parts_and_limit),
        cmocka_unit_test(test_scatter_topk_merges),
        cmocka_unit_test(test_scatter_exec_batches_per_host),
        cmocka_unit_test(test_bad_format_is_an_error),
        cmocka_unit_test(test_background_statement_leaves_requests_alone),
        cmocka_unit_test(test_one_request_timeout_is_not_a_host_failure),
        cmocka_unit_test(test_stopped_host_fails_fast_others_serve),
        cmocka_unit_test(test_router_follows_map_change),
        cmocka_unit_test(test_no_map_is_unavailable_not_not_found),
    };
    return cmocka_run_group_tests_name("router_integration", tests, rtest_setup,
                                       rtest_teardown);
}
