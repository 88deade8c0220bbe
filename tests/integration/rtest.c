/*
 * rtest.c: the router integration suites' fixture (rtest.h).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "tests/integration/itest.h"
#include "tests/integration/rtest.h"

static char out[8192];

int rtest_setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    /* The shard layout comes from the tool, as in production (idempotent). */
    assert_int_equal(itest_shardctl(out, sizeof(out), "init"), 0);
    itest_conf(&f->conf);
    assert_int_equal(router_create(&f->conf, &f->router), 0);
    assert_non_null(router_map(f->router));
    /* Only this suite's rows (company TEST_COMPANY), so it can run again. */
    assert_int_equal(router_scatter_exec(f->router, NULL,
                                         "DELETE FROM %S.users WHERE company_id = %u",
                                         TEST_COMPANY),
                     0);
    *state = f;
    return 0;
}

int rtest_teardown(void **state)
{
    struct fixture *f = *state;

    router_scatter_exec(f->router, NULL, "DELETE FROM %S.users WHERE company_id = %u",
                        TEST_COMPANY);
    router_destroy(f->router);
    shardmap_conf_deinit(&f->conf);
    free(f);
    return 0;
}

int64_t rtest_count_users(struct router *r, uint32_t shard)
{
    struct sql_rows rows = {0};
    int64_t n;

    assert_int_equal(router_exec(r, shard, &rows,
                                 "SELECT COUNT(*) FROM %S.users WHERE company_id = %u",
                                 TEST_COMPANY),
                     0);
    n = strtoll(sql_cell(&rows, 0, 0), NULL, 10);
    sql_rows_free(&rows);
    return n;
}

void rtest_insert_user(struct router *r, uint64_t id, const char *email, int64_t points)
{
    struct sql_rows rows = {0};
    int rc =
        router_exec(r, router_shard_of_id(id), &rows,
                    "INSERT INTO %S.users (id, email, password_hash, display_name, "
                    "company_id, balance, initial_balance, points) VALUES (%u, %s, "
                    "'x', %s, %u, 1000, 1000, %d)",
                    id, email, email, TEST_COMPANY, points);
    if (rc != 0)
        fail_msg("insert %s: %s", email, router_last_error());
    assert_int_equal(rows.affected, 1);
    sql_rows_free(&rows);
}
