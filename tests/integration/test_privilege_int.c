/*
 * test_privilege_int.c: the two database accounts of a cluster against the
 * real MariaDB hosts of the test stack. The API server's account (user,
 * password) may read and write the stack's schemas and nothing more: no
 * CREATE or DROP of a table or a database, no GRANT, no SELECT ... INTO
 * OUTFILE, no SET GLOBAL, and no multi-statement text on the router's
 * connections. The operator tools' account (ops_user, ops_password) runs
 * shardctl init, and the API's could not. Every connection pins its
 * sql_mode, so strings with quotes and backslashes round-trip through the
 * router even on a server whose global sql_mode has NO_BACKSLASH_ESCAPES.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <mysqld_error.h>

#include "router/router.h"
#include "tests/integration/itest.h"

/* The suite's users belong to a company no other test uses. */
#define TEST_COMPANY ((uint64_t)999997)

struct fixture {
    struct shardmap_conf ops; /* the config as the tools read it */
    struct shardmap_conf api; /* the same, as the API server reads it */
    char global[SHARDMAP_PREFIX_MAX + 8];
};

static char out[16384];

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    assert_non_null(f);
    assert_int_equal(itest_shardctl(out, sizeof(out), "init"), 0);
    itest_conf(&f->ops);
    itest_conf(&f->api);
    f->api.account = SHARDMAP_ACCOUNT_API;
    snprintf(f->global, sizeof(f->global), "%s_global", f->ops.schema_prefix);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    shardmap_conf_deinit(&f->ops);
    shardmap_conf_deinit(&f->api);
    free(f);
    return 0;
}

/* A connection of conf's account to the global host (one statement a call). */
static struct sql_conn *open_global(const struct shardmap_conf *conf)
{
    struct sql_endpoint ep;
    struct sql_conn *c = NULL;
    int rc;

    assert_int_equal(sql_endpoint_of(conf, conf->global_host, NULL, 0, &ep), 0);
    rc = sql_conn_open(&ep, &(struct sql_conn_opts){.query_timeout_ms = 10000}, &c);
    if (rc != 0)
        fail_msg("connect as %s: %s", ep.user, sql_last_error());
    return c;
}

/* Runs fmt on c and asserts that the server refused it for want of a right. */
static void expect_denied(struct sql_conn *c, const char *fmt, const char *arg)
{
    unsigned no;
    int rc = sql_exec(c, NULL, fmt, arg);

    no = sql_conn_errno(c);
    printf("  %-60.60s -> %d (%u) %s\n", fmt, rc, no, rc < 0 ? sql_last_error() : "");
    if (rc != BC_EQUERY && rc != BC_ENOSCHEMA)
        fail_msg("'%s' (%s) was not refused: %d", fmt, arg, rc);
    if (no != ER_DBACCESS_DENIED_ERROR && no != ER_TABLEACCESS_DENIED_ERROR &&
        no != ER_SPECIFIC_ACCESS_DENIED_ERROR && no != ER_ACCESS_DENIED_ERROR &&
        no != ER_COLUMNACCESS_DENIED_ERROR)
        fail_msg("'%s' (%s) failed, but not for a right: %s", fmt, arg,
                 sql_last_error());
}

static int64_t count_of(struct sql_conn *c, const char *fmt, const char *arg)
{
    char v[32];

    assert_int_equal(sql_value(c, v, sizeof(v), fmt, arg), 1);
    return strtoll(v, NULL, 10);
}

/*
 * The API's account reads and writes its schemas, and is refused every
 * statement that changes what exists or who may do what, or reaches the
 * server's files or global settings. The operator's account may run the same
 * DDL (so a refusal is the account's, not the statement's).
 */
static void test_api_account_cannot_create_drop_grant_or_write_files(void **state)
{
    struct fixture *f = *state;
    struct sql_conn *api = open_global(&f->api), *ops = open_global(&f->ops);
    char file[128];

    /* DML on the stack's schemas works: the account is not simply locked out. */
    assert_true(count_of(api, "SELECT COUNT(*) FROM %I.shard_map", f->global) ==
                (int64_t)f->ops.nshard);
    assert_int_equal(sql_exec(api, NULL,
                              "UPDATE %I.map_version SET version = version "
                              "WHERE id = 1",
                              f->global),
                     0);

    expect_denied(api, "CREATE TABLE %I.privilege_probe (id INT)", f->global);
    expect_denied(api, "CREATE DATABASE %I", "bc_privilege_probe");
    /* EXECUTE (the shards' place_bet) does not let it make or replace routines. */
    expect_denied(api, "CREATE PROCEDURE %I.privilege_probe() BEGIN END", f->global);
    expect_denied(api, "DROP TABLE %I.shard_map", f->global);
    expect_denied(api, "DROP DATABASE %I", f->global);
    expect_denied(api, "TRUNCATE TABLE %I.shard_map", f->global);
    expect_denied(api, "ALTER TABLE %I.shard_map ADD COLUMN x INT", f->global);
    expect_denied(api, "GRANT SELECT ON %I.* TO 'bc_api'@'127.0.0.1'", f->global);
    expect_denied(api, "CREATE USER %s IDENTIFIED BY 'x'", "bc_privilege_probe");
    snprintf(file, sizeof(file), "/tmp/bc_privilege_probe_%d", (int)getpid());
    expect_denied(api, "SELECT 1 INTO OUTFILE %s", file);
    assert_int_equal(access(file, F_OK), -1);
    expect_denied(api, "SET GLOBAL max_connections = %R", "500");
    /* Nothing of it happened. */
    assert_true(count_of(ops, "SELECT COUNT(*) FROM %I.shard_map", f->global) ==
                (int64_t)f->ops.nshard);

    /* The operator's account may. */
    assert_int_equal(
        sql_exec(ops, NULL, "CREATE TABLE %I.privilege_probe (id INT)", f->global), 0);
    assert_int_equal(sql_exec(ops, NULL, "DROP TABLE %I.privilege_probe", f->global),
                     0);
    sql_conn_close(api);
    sql_conn_close(ops);
}

/*
 * shardctl connects with the operator's account: init runs. Given a config
 * whose operator account is the API's, the same init is refused by the
 * server, so the tool does not get its rights from the API's account.
 */
static void test_ops_account_runs_shardctl_init(void **state)
{
    struct fixture *f = *state;
    struct shardmap_conf narrow = f->api;
    struct shardmap_host_conf *hosts;
    char path[] = "/tmp/test_privilege_int-XXXXXX";
    int fd;

    assert_int_equal(itest_shardctl(out, sizeof(out), "init"), 0);

    hosts = calloc(f->api.nhost, sizeof(*hosts));
    assert_non_null(hosts);
    memcpy(hosts, f->api.hosts, f->api.nhost * sizeof(*hosts));
    for (uint32_t i = 0; i < f->api.nhost; i++) {
        memcpy(hosts[i].ops_user, hosts[i].user, sizeof(hosts[i].ops_user));
        memcpy(hosts[i].ops_password, hosts[i].password, sizeof(hosts[i].ops_password));
    }
    narrow.hosts = hosts;
    fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(shardmap_conf_save(path, &narrow), 0);
    assert_int_not_equal(itest_shardctl(out, sizeof(out), "-c %s init", path), 0);
    assert_non_null(strstr(out, "denied"));
    unlink(path);
    free(hosts);
}

/*
 * The API's router sends one statement a call: the server refuses a text of
 * two. A router of the operator's account runs it (its fill batches and
 * router_scatter_exec() need that).
 */
static void test_api_router_refuses_multi_statements(void **state)
{
    struct fixture *f = *state;
    struct sql_rows rows = {0};
    struct router *api, *ops;

    assert_int_equal(router_create(&f->api, &api), 0);
    assert_int_equal(router_create(&f->ops, &ops), 0);
    assert_int_equal(router_exec(api, 0, &rows, "SELECT 1"), 0);
    sql_rows_free(&rows);
    assert_int_equal(router_exec(api, 0, &rows, "SELECT 1; SELECT 2"), BC_EQUERY);
    assert_int_equal(router_exec(api, ROUTER_GLOBAL, NULL,
                                 "UPDATE %S.map_version SET version = version WHERE "
                                 "id = 1; DELETE FROM %S.shard_map WHERE shard = 0"),
                     BC_EQUERY);
    assert_int_equal(router_exec(ops, 0, &rows, "SELECT 1; SELECT 2"), 0);
    assert_int_equal(rows.nrow, 2);
    sql_rows_free(&rows);
    router_destroy(api);
    router_destroy(ops);
}

/* The hosts' global sql_mode, saved by the test that changes it. */
static char saved_mode[SHARDMAP_MAX_HOSTS][512];

static int restore_sql_mode(void **state)
{
    struct fixture *f = *state;

    for (uint32_t i = 0; i < f->ops.nhost; i++) {
        MYSQL *m;
        char sql[700];

        if (saved_mode[i][0] == '\0')
            continue;
        m = itest_mysql(&f->ops, f->ops.hosts[i].name);
        snprintf(sql, sizeof(sql), "SET GLOBAL sql_mode = '%.500s'",
                 strcmp(saved_mode[i], "-") == 0 ? "" : saved_mode[i]);
        if (mysql_query(m, sql) != 0)
            print_error("%s: %s\n", sql, mysql_error(m));
        mysql_close(m);
    }
    return teardown(state);
}

/*
 * A server started (or set) with NO_BACKSLASH_ESCAPES reads a backslash as
 * plain text; the formatter escapes with backslashes. Each connection sets
 * its own sql_mode as it connects, so quotes and backslashes still make the
 * round trip through the router, and the session's mode is ours.
 */
static void test_sql_mode_pinned_whatever_the_server_global(void **state)
{
    static const char *const odd[] = {
        "o'brien\\@x.example",     "back\\\\slash\\'@x.example",
        "\"dq\" \\\" '' \\n@x.ex", "percent%_under\\%\\_@x.ex",
        "trail\\@x.example\\",
    };
    struct fixture *f = *state;
    struct sql_rows rows = {0};
    struct router *r;
    char mode[512];

    for (uint32_t i = 0; i < f->ops.nhost; i++) {
        MYSQL *m = itest_mysql(&f->ops, f->ops.hosts[i].name);
        MYSQL_RES *res;
        MYSQL_ROW row;

        assert_int_equal(mysql_query(m, "SELECT @@GLOBAL.sql_mode"), 0);
        res = mysql_store_result(m);
        row = mysql_fetch_row(res);
        snprintf(saved_mode[i], sizeof(saved_mode[i]), "%s",
                 row[0] && row[0][0] ? row[0] : "-");
        mysql_free_result(res);
        assert_int_equal(mysql_query(m, "SET GLOBAL sql_mode = 'NO_BACKSLASH_ESCAPES'"),
                         0);
        mysql_close(m);
    }
    /* A new router: its connections are made under the new global mode. */
    assert_int_equal(router_create(&f->api, &r), 0);

    for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++) {
        uint64_t id = ((uint64_t)(7 + i) << SHARDMAP_ID_SEQ_BITS) | (1000 + i);
        uint32_t shard = router_shard_of_id(id);
        int rc;

        router_exec(r, shard, NULL, "DELETE FROM %S.users WHERE id = %u", id);
        rc =
            router_exec(r, shard, NULL,
                        "INSERT INTO %S.users (id, email, password_hash, display_name, "
                        "company_id, balance, initial_balance) VALUES (%u, %s, 'x', "
                        "%s, %u, 0, 0)",
                        id, odd[i], odd[i], TEST_COMPANY);
        if (rc != 0)
            fail_msg("insert %s: %s", odd[i], router_last_error());
        assert_int_equal(router_exec(r, shard, &rows,
                                     "SELECT email, display_name FROM %S.users WHERE "
                                     "email = %s AND company_id = %u",
                                     odd[i], TEST_COMPANY),
                         0);
        assert_int_equal(rows.nrow, 1);
        assert_string_equal(sql_cell(&rows, 0, 0), odd[i]);
        assert_string_equal(sql_cell(&rows, 0, 1), odd[i]);
        sql_rows_free(&rows);
        assert_int_equal(
            router_exec(r, shard, NULL, "DELETE FROM %S.users WHERE id = %u", id), 0);
    }
    assert_int_equal(router_exec(r, 3, &rows, "SELECT @@SESSION.sql_mode"), 0);
    snprintf(mode, sizeof(mode), "%s", sql_cell(&rows, 0, 0));
    sql_rows_free(&rows);
    printf("  session sql_mode: %s\n", mode);
    assert_string_equal(mode, SQL_MODE);
    router_destroy(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_api_account_cannot_create_drop_grant_or_write_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ops_account_runs_shardctl_init, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_api_router_refuses_multi_statements, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_sql_mode_pinned_whatever_the_server_global,
                                        setup, restore_sql_mode),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
