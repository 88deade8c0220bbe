/*
 * test_router_op_int.c: statements driven by the caller's event loop
 * (router_op_*) against the real MariaDB hosts of the test stack: the same
 * rows as router_exec(), never a connect or a wait for a connection, the
 * statement's deadline, server errors, a shard whose table is gone, a
 * statement abandoned half-way, and the wake-up of a loop that waits for a
 * busy host's connection.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cmocka.h>

#include "router/router.h"
#include "tests/integration/itest.h"
#include "tests/integration/rtest.h"

/* A router of its own (no connection yet), with the given statement deadline. */
static struct router *fresh_router(uint32_t query_timeout_ms)
{
    struct shardmap_conf conf;
    struct router *r;

    itest_conf(&conf);
    conf.pool_size = 2;
    conf.query_timeout_ms = query_timeout_ms;
    assert_int_equal(router_create(&conf, &r), 0);
    shardmap_conf_deinit(&conf);
    assert_non_null(router_map(r));
    router_set_polling(r, 0); /* no poller statement on the pools */
    return r;
}

static struct router_host_stats stats_of_shard(struct router *r, uint32_t shard)
{
    const struct shardmap *map = router_map(r);
    const char *host = map->nodes[map->node_of[shard]].name;
    struct router_host_stats st[SHARDMAP_MAX_HOSTS];
    uint32_t n = router_stats(r, st, SHARDMAP_MAX_HOSTS);

    for (uint32_t i = 0; i < n; i++)
        if (!st[i].replica && strcmp(st[i].name, host) == 0)
            return st[i];
    fail_msg("no stats for host %s", host);
    return st[0];
}

/* What an event loop does, with poll(): drives op to its end; its status. */
static int drive(struct router_op *op, int *waits)
{
    int wait;

    *waits = 0;
    while ((wait = router_op_wait(op)) != 0) {
        struct pollfd p = {.fd = router_op_fd(op)};
        int64_t left = router_op_due_ms(op) - sql_now_ms();
        int n, got = 0;

        if (wait & SQL_WAIT_READ)
            p.events |= POLLIN;
        if (wait & SQL_WAIT_WRITE)
            p.events |= POLLOUT;
        n = poll(&p, 1, left < 0 ? 0 : (int)left);
        (*waits)++;
        if (n == 0) {
            router_op_tick(op, sql_now_ms());
            continue;
        }
        assert_true(n == 1);
        if (p.revents & (POLLIN | POLLERR | POLLHUP))
            got |= SQL_WAIT_READ;
        if (p.revents & (POLLOUT | POLLERR | POLLHUP))
            got |= SQL_WAIT_WRITE;
        router_op_cont(op, got & wait);
    }
    return router_op_end(op);
}

/* The rows of a statement on the loop are those of router_exec(). */
static void test_op_reads_what_exec_reads(void **state)
{
    struct fixture *f = *state;
    struct sql_rows a = {0}, b = {0};
    struct router_op *op;
    uint64_t id;
    int waits;

    assert_int_equal(router_next_id(f->router, NULL, 3, &id), 0);
    rtest_insert_user(f->router, id, "op1@x", 42);
    assert_int_equal(router_exec(f->router, 3, &a,
                                 "SELECT id, email, points, team_id FROM %S.users "
                                 "WHERE id = %u",
                                 id),
                     0);
    assert_int_equal(router_op_start(f->router, 3, &b, &op,
                                     "SELECT id, email, points, team_id FROM %S.users "
                                     "WHERE id = %u",
                                     id),
                     0);
    /* (It may end without a wait: the answer can be in by the first read.) */
    assert_int_equal(drive(op, &waits), 0);
    assert_int_equal(b.nrow, 1);
    assert_int_equal(b.ncol, a.ncol);
    for (uint32_t c = 0; c < a.ncol; c++) {
        if (sql_cell(&a, 0, c) == NULL)
            assert_null(sql_cell(&b, 0, c));
        else
            assert_string_equal(sql_cell(&b, 0, c), sql_cell(&a, 0, c));
    }
    assert_string_equal(sql_cell(&b, 0, 1), "op1@x");
    assert_string_equal(sql_cell(&b, 0, 2), "42");
    sql_rows_free(&a);
    sql_rows_free(&b);

    /* No row: 0 and an empty result. */
    assert_int_equal(
        router_op_start(f->router, 3, &b, &op, "SELECT id FROM %S.users WHERE id = 0"),
        0);
    assert_int_equal(drive(op, &waits), 0);
    assert_int_equal(b.nrow, 0);
    sql_rows_free(&b);
}

/*
 * It never connects and never waits for a connection: a router with no
 * connection yet refuses at once (BC_EPOOL, nothing to free); once a
 * statement of a thread left a connection idle, the op takes it, and gives
 * it back at its end.
 */
static void test_op_takes_only_an_idle_connection(void **state)
{
    struct router *r = fresh_router(800);
    struct sql_rows rows = {0};
    struct router_op *op = (struct router_op *)&rows;
    int64_t t0 = itest_now_ms();
    int waits;
    (void)state;

    assert_int_equal(router_op_start(r, 9, &rows, &op, "SELECT 1"), BC_EPOOL);
    assert_null(op);
    assert_true(itest_now_ms() - t0 < 50);
    assert_int_equal(stats_of_shard(r, 9).open, 0);

    assert_int_equal(router_exec(r, 9, NULL, "SELECT 1"), 0);
    assert_int_equal(stats_of_shard(r, 9).idle, 1);
    assert_int_equal(router_op_start(r, 9, &rows, &op, "SELECT 7"), 0);
    assert_int_equal(stats_of_shard(r, 9).idle, 0); /* it holds the one */
    {
        struct sql_rows more = {0};
        struct router_op *second;
        assert_int_equal(router_op_start(r, 9, &more, &second, "SELECT 8"), BC_EPOOL);
        assert_null(second);
    }
    assert_int_equal(drive(op, &waits), 0);
    assert_string_equal(sql_cell(&rows, 0, 0), "7");
    sql_rows_free(&rows);
    assert_int_equal(stats_of_shard(r, 9).idle, 1);
    assert_int_equal(stats_of_shard(r, 9).open, 1);

    /* The global schema is not for the loops; a bad format is refused too. */
    assert_int_equal(router_op_start(r, ROUTER_GLOBAL, &rows, &op, "SELECT 1"),
                     -EINVAL);
    assert_int_equal(router_op_start(r, 9, &rows, &op, "SELECT %Q"), -EINVAL);
    assert_int_equal(stats_of_shard(r, 9).idle, 1);
    router_destroy(r);
}

/*
 * The statement's deadline holds without a thread waiting: past
 * query_timeout_ms the op ends with BC_ETIMEOUT, its connection is closed,
 * and one slow statement leaves the host up; the next statement runs.
 */
static void test_op_deadline(void **state)
{
    struct router *r = fresh_router(300);
    struct router_op *op;
    int64_t t0, ms;
    int waits;
    (void)state;

    assert_int_equal(router_exec(r, 11, NULL, "SELECT 1"), 0);
    t0 = itest_now_ms();
    assert_int_equal(router_op_start(r, 11, NULL, &op, "SELECT SLEEP(2)"), 0);
    assert_int_equal(drive(op, &waits), BC_ETIMEOUT);
    ms = itest_now_ms() - t0;
    if (ms < 290 || ms > 700)
        fail_msg("the deadline of 300 ms ended the statement after %" PRId64 " ms", ms);
    assert_non_null(strstr(router_last_error(), "timed out"));
    assert_int_equal(stats_of_shard(r, 11).open, 0); /* the connection went */
    assert_int_equal(stats_of_shard(r, 11).up, 1);
    assert_int_equal(stats_of_shard(r, 11).timeouts, 1);
    assert_int_equal(router_exec(r, 11, NULL, "SELECT 1"), 0);
    router_destroy(r);
}

/*
 * A server error is the router's status and the connection stays good; a
 * shard whose table is not there (moved away) is BC_EMOVED, which the
 * caller follows the usual way.
 */
static void test_op_errors(void **state)
{
    struct router *r = fresh_router(800);
    struct sql_rows rows = {0};
    struct router_op *op;
    int waits;
    (void)state;

    assert_int_equal(router_exec(r, 13, NULL, "SELECT 1"), 0);
    assert_int_equal(router_op_start(r, 13, &rows, &op, "SELEC 1"), 0);
    assert_int_equal(drive(op, &waits), BC_EQUERY);
    assert_non_null(strstr(router_last_error(), "syntax"));
    assert_int_equal(stats_of_shard(r, 13).idle, 1); /* back, not broken */

    assert_int_equal(
        router_op_start(r, 13, &rows, &op, "SELECT 1 FROM %S.no_such_table"), 0);
    assert_int_equal(drive(op, &waits), BC_EMOVED);
    assert_int_equal(rows.nrow, 0);
    assert_int_equal(stats_of_shard(r, 13).up, 1);
    router_destroy(r);
}

/* Abandoned before its end (a server that stops): -ECANCELED, connection closed. */
static void test_op_abandoned(void **state)
{
    struct router *r = fresh_router(800);
    struct sql_rows rows = {0};
    struct router_op *op;
    (void)state;

    assert_int_equal(router_exec(r, 15, NULL, "SELECT 1"), 0);
    assert_int_equal(router_op_start(r, 15, &rows, &op, "SELECT SLEEP(1)"), 0);
    assert_int_not_equal(router_op_wait(op), 0);
    assert_int_equal(router_op_end(op), -ECANCELED);
    assert_int_equal(stats_of_shard(r, 15).open, 0);
    assert_int_equal(stats_of_shard(r, 15).up, 1);
    assert_int_equal(router_exec(r, 15, NULL, "SELECT 1"), 0);
    router_destroy(r);
}

/* Whether the eventfd efd was written to within ms; reads it empty. */
static int told(int efd, int ms)
{
    struct pollfd p = {.fd = efd, .events = POLLIN};
    uint64_t n;

    if (poll(&p, 1, ms) != 1)
        return 0;
    assert_int_equal(read(efd, &n, sizeof(n)), (ssize_t)sizeof(n));
    return n > 0;
}

struct ender {
    pthread_t thread;
    struct router_op *op;
    int status;
};

/* Another thread's statement ends (a worker's, another loop's). */
static void *end_elsewhere(void *arg)
{
    struct ender *e = arg;
    int waits;

    e->status = drive(e->op, &waits);
    return NULL;
}

/*
 * A loop waits for a busy host without blocking: with its eventfd
 * registered, BC_EPOOL on a host whose connections are all open and busy
 * is promised a wake-up, which the next connection another thread gives
 * back writes to the eventfd; one the loop gives back itself is said by
 * router_waiter_self() instead. A host that may still open a connection
 * promises nothing (a worker should open it), and after the removal
 * nothing is promised or written.
 */
static void test_op_waiter_is_told(void **state)
{
    struct router *r = fresh_router(800);
    int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct sql_rows a = {0}, b = {0}, c = {0}, d = {0};
    struct router_op *op1, *op2, *op3;
    struct router_txn *txn;
    struct ender e;
    uintptr_t host = router_host_key(r, 9);
    int waits;
    (void)state;

    assert_true(efd >= 0);
    assert_int_not_equal(host, 0);
    assert_int_equal(router_waiter_add(r, efd), 0);
    assert_int_equal(router_waiter_add(r, efd), -EINVAL); /* one a thread */

    /* No connection open yet: nothing would come back. */
    assert_int_equal(router_op_start(r, 9, &a, &op1, "SELECT 1"), BC_EPOOL);
    assert_int_equal(router_waiter_promised(), 0);
    assert_int_equal(router_host_busy(r, host), 0);

    /* Both of the pool's connections open (a transaction holds one meanwhile). */
    assert_int_equal(router_txn_begin(r, 9, &txn), 0);
    assert_int_equal(router_exec(r, 9, NULL, "SELECT 1"), 0);
    router_txn_rollback(txn);
    assert_int_equal(stats_of_shard(r, 9).idle, 2);

    assert_int_equal(router_op_start(r, 9, &a, &op1, "SELECT 1"), 0);
    assert_int_equal(router_op_start(r, 9, &b, &op2, "SELECT 2"), 0);
    assert_int_equal(router_op_start(r, 9, &c, &op3, "SELECT 3"), BC_EPOOL);
    assert_int_equal(router_waiter_promised(), 1);
    assert_int_equal(router_host_busy(r, host), 1);
    assert_false(told(efd, 0));

    /* Given back by the loop itself: no write, router_waiter_self() once. */
    assert_int_equal(router_waiter_self(), 0);
    assert_int_equal(drive(op1, &waits), 0);
    assert_false(told(efd, 0));
    assert_int_equal(router_waiter_self(), 1);
    assert_int_equal(router_waiter_self(), 0);
    assert_int_equal(router_host_busy(r, host), 0); /* one is idle */

    /* Busy again, and another thread gives one back: the eventfd says so. */
    assert_int_equal(router_op_start(r, 9, &c, &op3, "SELECT 3"), 0);
    assert_int_equal(router_host_busy(r, host), 1);
    e.op = op2;
    assert_int_equal(pthread_create(&e.thread, NULL, end_elsewhere, &e), 0);
    assert_int_equal(pthread_join(e.thread, NULL), 0);
    assert_int_equal(e.status, 0);
    assert_string_equal(sql_cell(&b, 0, 0), "2");
    assert_true(told(efd, 1000));
    assert_int_equal(router_waiter_self(), 0);

    /* Once only: the next give-back writes nothing unless marked again. */
    sql_rows_free(&b);
    assert_int_equal(router_op_start(r, 9, &b, &op2, "SELECT 4"), 0);
    e.op = op2;
    assert_int_equal(pthread_create(&e.thread, NULL, end_elsewhere, &e), 0);
    assert_int_equal(pthread_join(e.thread, NULL), 0);
    assert_false(told(efd, 0));

    /* Removed: nothing promised, nothing written. */
    router_waiter_remove(r);
    sql_rows_free(&b);
    assert_int_equal(router_op_start(r, 9, &b, &op2, "SELECT 5"), 0);
    assert_int_equal(router_op_start(r, 9, &d, &op1, "SELECT 6"), BC_EPOOL);
    assert_int_equal(router_waiter_promised(), 0);
    assert_int_equal(router_host_busy(r, host), 0);
    e.op = op2;
    assert_int_equal(pthread_create(&e.thread, NULL, end_elsewhere, &e), 0);
    assert_int_equal(pthread_join(e.thread, NULL), 0);
    assert_false(told(efd, 0));
    assert_int_equal(drive(op3, &waits), 0);
    assert_string_equal(sql_cell(&c, 0, 0), "3");
    assert_int_equal(d.nrow, 0);
    sql_rows_free(&a);
    sql_rows_free(&b);
    sql_rows_free(&c);
    close(efd);
    router_destroy(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_op_reads_what_exec_reads),
        cmocka_unit_test(test_op_takes_only_an_idle_connection),
        cmocka_unit_test(test_op_deadline),
        cmocka_unit_test(test_op_errors),
        cmocka_unit_test(test_op_abandoned),
        cmocka_unit_test(test_op_waiter_is_told),
    };
    return cmocka_run_group_tests_name("router_op_integration", tests, rtest_setup,
                                       rtest_teardown);
}
