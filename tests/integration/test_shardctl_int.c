/*
 * test_shardctl_int.c: shardctl init, status and plan against the real
 * MariaDB hosts of the test stack. What exists is asked of MariaDB itself.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "tests/integration/itest.h"

static char out[65536];

static void test_init_creates_each_schema_on_exactly_its_host(void **state)
{
    struct shardmap_conf conf;
    MYSQL *global;
    char sql[512];
    (void)state;

    itest_conf(&conf);
    assert_int_equal(itest_shardctl(out, sizeof(out), "init"), 0);
    assert_non_null(strstr(out, "64 shard schemas ready"));

    global = itest_mysql(&conf, conf.global_host);
    snprintf(sql, sizeof(sql), "SELECT version FROM %s_global.map_version",
             conf.schema_prefix);
    assert_int_equal(itest_scalar(global, sql), 1);
    snprintf(sql, sizeof(sql), "SELECT COUNT(*) FROM %s_global.shard_map",
             conf.schema_prefix);
    assert_int_equal(itest_scalar(global, sql), 64);

    uint32_t total = 0;
    for (uint32_t i = 0; i < conf.nhost; i++) {
        MYSQL *m = itest_mysql(&conf, conf.hosts[i].name);
        int64_t mapped, present;

        snprintf(sql, sizeof(sql),
                 "SELECT COUNT(*) FROM %s_global.shard_map WHERE host = '%s'",
                 conf.schema_prefix, conf.hosts[i].name);
        mapped = itest_scalar(global, sql);
        snprintf(sql, sizeof(sql),
                 "SELECT COUNT(*) FROM information_schema.SCHEMATA "
                 "WHERE SCHEMA_NAME LIKE '%s\\_____' AND SCHEMA_NAME <> '%s_global'",
                 conf.schema_prefix, conf.schema_prefix);
        present = itest_scalar(m, sql);
        /* Every schema on this host is one the map puts here, and vice versa. */
        assert_true(mapped > 10);
        assert_int_equal(present, mapped);
        for (uint32_t s = 0; s < 64; s++) {
            char schema[64];
            int64_t exists;
            snprintf(schema, sizeof(schema), "%s_%04u", conf.schema_prefix, s);
            snprintf(sql, sizeof(sql),
                     "SELECT COUNT(*) FROM information_schema.TABLES WHERE "
                     "TABLE_SCHEMA = '%s' AND TABLE_NAME IN ('users','bets','ledger',"
                     "'shard_state','id_seq')",
                     schema);
            exists = itest_scalar(m, sql);
            snprintf(sql, sizeof(sql),
                     "SELECT COUNT(*) FROM %s_global.shard_map WHERE shard = %u AND "
                     "host = '%s'",
                     conf.schema_prefix, s, conf.hosts[i].name);
            if (itest_scalar(global, sql) == 1) {
                assert_int_equal(exists, 5);
                total++;
            } else {
                assert_int_equal(exists, 0);
            }
        }
        mysql_close(m);
    }
    assert_int_equal(total, 64);
    mysql_close(global);
    shardmap_conf_deinit(&conf);
}

static void test_init_twice_is_safe(void **state)
{
    (void)state;
    assert_int_equal(itest_shardctl(out, sizeof(out), "init"), 0);
    assert_non_null(strstr(out, "shard map exists"));
    assert_non_null(strstr(out, "64 shard schemas ready"));
}

static void test_init_refuses_another_shard_count(void **state)
{
    char path[] = "/tmp/bc-cluster-XXXXXX", cmd[2048];
    int fd = mkstemp(path);
    (void)state;

    assert_true(fd >= 0);
    close(fd);
    snprintf(cmd, sizeof(cmd),
             "sed 's/^  shards: 64$/  shards: 128/' \"$BC_CLUSTER\" > %s", path);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(itest_shardctl(out, sizeof(out), "-c %s init", path), 1);
    assert_non_null(strstr(out, "refusing"));
    assert_non_null(strstr(out, "has 64 shards, the config says 128"));
    unlink(path);
}

static void test_status_shows_healthy_hosts(void **state)
{
    const char *p = out;
    int up = 0;
    (void)state;

    assert_int_equal(itest_shardctl(out, sizeof(out), "status"), 0);
    assert_non_null(strstr(out, "map version 1, 64 shards"));
    while ((p = strstr(p, " up ")) != NULL) {
        up++;
        p++;
    }
    assert_int_equal(up, 3);

    assert_int_equal(itest_shardctl(out, sizeof(out), "status --json"), 0);
    p = out;
    up = 0;
    while ((p = strstr(p, "\"up\":true")) != NULL) {
        up++;
        p++;
    }
    assert_int_equal(up, 3);
    assert_non_null(strstr(out, "\"map_version\":1"));
}

static void test_plan_add_host_writes_plan(void **state)
{
    char path[] = "/tmp/bc-plan-XXXXXX";
    struct shardmap_plan plan;
    char *err = NULL;
    int fd = mkstemp(path);
    (void)state;

    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(itest_shardctl(out, sizeof(out),
                                    "plan --add-host db4=127.0.0.1:3999 -o %s", path),
                     0);
    /* 64 shards, 3 -> 4 hosts: 16 move, all onto db4. */
    assert_non_null(strstr(out, "16 of 64 shards move"));
    assert_int_equal(shardmap_plan_load(path, &plan, &err), 0);
    assert_int_equal(plan.nmove, 16);
    assert_true(plan.has_new_host);
    assert_string_equal(plan.new_host.name, "db4");
    assert_int_equal(plan.new_host.port, 3999);
    for (uint32_t i = 0; i < plan.nmove; i++)
        assert_string_equal(plan.target->nodes[plan.moves[i].to].name, "db4");
    shardmap_plan_deinit(&plan);

    assert_int_equal(
        itest_shardctl(out, sizeof(out), "plan --remove-host db2 -o %s", path), 0);
    assert_int_equal(shardmap_plan_load(path, &plan, &err), 0);
    for (uint32_t i = 0; i < plan.nmove; i++)
        assert_string_equal(plan.target->nodes[plan.moves[i].from].name, "db2");
    assert_true(plan.nmove > 10);
    shardmap_plan_deinit(&plan);
    unlink(path);

    assert_int_equal(itest_shardctl(out, sizeof(out), "plan --add-host db4"), 2);
    assert_int_equal(
        itest_shardctl(out, sizeof(out), "plan --remove-host nope -o %s", path), 1);
    assert_non_null(strstr(out, "no such host"));
}

static void test_bad_config_names_file_and_line(void **state)
{
    char path[] = "/tmp/bc-bad-XXXXXX", cmd[2048];
    int fd = mkstemp(path);
    (void)state;

    assert_true(fd >= 0);
    close(fd);
    snprintf(cmd, sizeof(cmd),
             "sed 's/^  shards: 64$/  shardz: 64/' \"$BC_CLUSTER\" > %s", path);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(itest_shardctl(out, sizeof(out), "-c %s status", path), 1);
    assert_non_null(strstr(out, path));
    assert_non_null(strstr(out, ":4:"));
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_creates_each_schema_on_exactly_its_host),
        cmocka_unit_test(test_init_twice_is_safe),
        cmocka_unit_test(test_init_refuses_another_shard_count),
        cmocka_unit_test(test_status_shows_healthy_hosts),
        cmocka_unit_test(test_plan_add_host_writes_plan),
        cmocka_unit_test(test_bad_config_names_file_and_line),
    };
    return cmocka_run_group_tests_name("shardctl_integration", tests, NULL, NULL);
}
