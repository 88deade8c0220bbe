/*
 * test_shardmap_conf.c: unit tests of libshardmap's cluster config file: every
 * example in etc/ must load and survive save -> load unchanged, the defaults
 * and values are what the docs say, and each kind of bad input must fail with
 * BC_ECONFIG and a "path:line: message" naming what is wrong. The shard map
 * and plan files are in test_shardmap_files.c.
 *
 * Run from tests/unit: the examples are found as ../../etc/NAME.yaml.
 */
#include <errno.h>
#include <glob.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "shardmap/shardmap.h"

#include "tests/unit/yaml_fix.h"

static void test_examples_load(void **state)
{
    unsigned seen[3] = {0, 0, 0};
    glob_t g;

    (void)state;
    assert_int_equal(glob(EXAMPLES, 0, NULL, &g), 0);
    for (size_t i = 0; i < g.gl_pathc; i++) {
        const char *path = g.gl_pathv[i];
        enum kind kind = kind_of(path);
        struct shardmap_conf conf;
        struct shardmap_plan plan;
        struct shardmap *map;
        char *err = (char *)1;
        int rc = 0;

        switch (kind) {
        case KIND_CONF:
            rc = shardmap_conf_load(path, &conf, &err);
            if (rc == 0) {
                shardmap_conf_deinit(&conf);
            }
            break;
        case KIND_MAP:
            rc = shardmap_load(path, &map, &err);
            if (rc == 0) {
                shardmap_destroy(map);
            }
            break;
        case KIND_PLAN:
            rc = shardmap_plan_load(path, &plan, &err);
            if (rc == 0) {
                shardmap_plan_deinit(&plan);
            }
            break;
        }
        if (rc != 0) {
            print_error("%s: %s\n%s\n", path, bc_strerror(rc), err ? err : "");
            free(err);
            fail();
        }
        assert_null(err);
        seen[kind]++;
    }
    globfree(&g);
    /* One example of each kind at least. */
    assert_true(seen[KIND_CONF] >= 1);
    assert_true(seen[KIND_MAP] >= 1);
    assert_true(seen[KIND_PLAN] >= 1);
}

static void test_examples_round_trip(void **state)
{
    glob_t g;

    (void)state;
    assert_int_equal(glob(EXAMPLES, 0, NULL, &g), 0);
    for (size_t i = 0; i < g.gl_pathc; i++) {
        round_trip_file(g.gl_pathv[i], kind_of(g.gl_pathv[i]));
    }
    globfree(&g);
}

static void test_cluster_example_values(void **state)
{
    struct shardmap_conf conf;
    char *err = NULL;

    (void)state;
    assert_int_equal(shardmap_conf_load("../../etc/cluster.example.yaml", &conf, &err),
                     0);
    assert_string_equal(conf.name, "dev");
    assert_string_equal(conf.schema_prefix, "bc");
    assert_int_equal(conf.nshard, 64);
    assert_string_equal(conf.global_host, "db1");
    assert_int_equal(conf.nhost, 3);
    for (uint32_t i = 0; i < 3; i++) {
        char name[8];

        snprintf(name, sizeof(name), "db%u", i + 1);
        assert_string_equal(conf.hosts[i].name, name);
        assert_string_equal(conf.hosts[i].addr, "127.0.0.1");
        assert_int_equal(conf.hosts[i].port, 3306 + i);
        assert_int_equal(conf.hosts[i].weight, 1);
        assert_int_equal(shardmap_conf_host(&conf, name), (int)i);
        /* Each host's replica, db<i>b on port 3309 + i. */
        snprintf(name, sizeof(name), "db%ub", i + 1);
        assert_int_equal(conf.hosts[i].nreplica, 1);
        assert_string_equal(conf.hosts[i].replicas[0].name, name);
        assert_int_equal(conf.hosts[i].replicas[0].port, 3309 + i);
    }
    assert_int_equal(conf.max_lag_ms, 1000);
    assert_int_equal(conf.down_after_ms, 1000);
    assert_int_equal(shardmap_conf_host(&conf, "db4"), BC_EHOST);
    assert_int_equal(conf.nmemcached, 2);
    assert_int_equal(conf.pool_size, 8);
    assert_int_equal(conf.map_poll_ms, 1000);
    shardmap_conf_deinit(&conf);
}

/* ---- cluster config ------------------------------------------------------ */

static void test_conf_defaults(void **state)
{
    static const char text[] = "cluster:\n"
                               "  name: t\n"
                               "  schema_prefix: x_1\n"
                               "  shards: 16\n"
                               "hosts:\n"
                               "  - {name: a, addr: h, port: 1, user: u}\n"
                               "  - {name: b, addr: h, port: 65535, user: u}\n"
                               "memcached:\n" /* empty optional sections */
                               "router:\n";
    struct shardmap_conf conf;
    char path[64], *err = NULL;

    (void)state;
    write_tmp(path, text);
    assert_int_equal(shardmap_conf_load(path, &conf, &err), 0);
    unlink(path);
    assert_null(err);
    assert_string_equal(conf.global_host, "a");
    assert_string_equal(conf.hosts[1].password, "");
    assert_int_equal(conf.hosts[1].port, 65535);
    assert_int_equal(conf.hosts[0].weight, 1);
    assert_int_equal(conf.nmemcached, 0);
    assert_int_equal(conf.pool_size, 8);
    assert_int_equal(conf.connect_timeout_ms, 500);
    assert_int_equal(conf.query_timeout_ms, 800);
    assert_int_equal(conf.map_poll_ms, 1000);
    assert_int_equal(conf.move_wait_ms, 3000);
    shardmap_conf_deinit(&conf);
}

static void test_conf_round_trip_keeps_odd_passwords(void **state)
{
    static const char *const passwords[] = {
        "",
        "plain",
        "with space and # hash",
        "'single' \"double\" \\back\\slash",
        ": colon first, - dash, [flow], {map}, &anchor *alias !tag %pct @at `tick`",
        "new\nline\ttab\rcr",
        " leading and trailing ",
        "null",
        "123",
        "\xc3\xa9t\xc3\xa9 \xe2\x82\xac",
        "---",
        "~",
    };
    const size_t n = sizeof(passwords) / sizeof(passwords[0]);
    struct shardmap_host_conf hosts[sizeof(passwords) / sizeof(passwords[0])];
    struct shardmap_endpoint mc[1] = {{"::1", 11211}};
    struct shardmap_conf in, out;
    char path[64], *err = NULL;
    struct stat st;

    (void)state;
    memset(&in, 0, sizeof(in));
    memset(hosts, 0, sizeof(hosts));
    strcpy(in.name, "prod-eu_1");
    strcpy(in.schema_prefix, "bc_2");
    in.nshard = 8192;
    in.hosts = hosts;
    in.nhost = (uint32_t)n;
    in.memcached = mc;
    in.nmemcached = 1;
    in.pool_size = 1024;
    in.connect_timeout_ms = 10;
    in.query_timeout_ms = 600000;
    in.map_poll_ms = 600000;
    in.move_wait_ms = 60000;
    for (size_t i = 0; i < n; i++) {
        snprintf(hosts[i].name, sizeof(hosts[i].name), "%s", i == 1 ? "true" : "db");
        if (i > 1) {
            snprintf(hosts[i].name, sizeof(hosts[i].name), "%zu", i);
        }
        snprintf(hosts[i].addr, sizeof(hosts[i].addr), "db%zu.example.com", i);
        hosts[i].port = (uint16_t)(3306 + i);
        strcpy(hosts[i].user, "bc user");
        strcpy(hosts[i].password, passwords[i]);
        strcpy(hosts[i].ops_user, "bc ops");
        strcpy(hosts[i].ops_password, passwords[n - 1 - i]);
        hosts[i].weight = (uint32_t)(1 + i * 90);
    }
    strcpy(in.global_host, "5");

    tmp_name(path);
    assert_int_equal(shardmap_conf_save(path, &in), 0);
    /* The file holds passwords: only its owner may read it. */
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 077, 0);
    assert_int_equal(shardmap_conf_load(path, &out, &err), 0);
    if (err != NULL) {
        print_error("%s\n", err);
    }
    assert_confs_equal(&in, &out);
    shardmap_conf_deinit(&out);
    unlink(path);
}

/*
 * Each host has the API server's account (user, password) and the operator
 * tools' (ops_user, ops_password); a host without ops_user has one account
 * for both, as every config had before the accounts were split.
 */
static void test_conf_ops_account(void **state)
{
    static const char text[] =
        "cluster: {name: t, schema_prefix: x, shards: 16}\n"
        "hosts:\n"
        "  - {name: a, addr: h, port: 1, user: api, password: pa,\n"
        "     ops_user: ops, ops_password: \"p'o\"}\n"
        "  - {name: b, addr: h, port: 2, user: api, password: pb, ops_user: ops}\n"
        "  - {name: c, addr: h, port: 3, user: one, password: pc}\n"
        "  - {name: d, addr: h, port: 4, user: one, password: pd, ops_user: one,\n"
        "     ops_password: pd}\n";
    struct shardmap_conf conf;
    char path[64], *err = NULL;

    (void)state;
    write_tmp(path, text);
    assert_int_equal(shardmap_conf_load(path, &conf, &err), 0);
    unlink(path);
    assert_null(err);
    assert_int_equal(conf.account, SHARDMAP_ACCOUNT_API);
    assert_string_equal(conf.hosts[0].user, "api");
    assert_string_equal(conf.hosts[0].password, "pa");
    assert_string_equal(conf.hosts[0].ops_user, "ops");
    assert_string_equal(conf.hosts[0].ops_password, "p'o");
    assert_string_equal(conf.hosts[1].ops_user, "ops");
    assert_string_equal(conf.hosts[1].ops_password, "");
    assert_string_equal(conf.hosts[2].ops_user, "one");
    assert_string_equal(conf.hosts[2].ops_password, "pc");
    assert_string_equal(conf.hosts[3].ops_user, "one");
    assert_string_equal(conf.hosts[3].ops_password, "pd");
    shardmap_conf_deinit(&conf);
}

static void test_conf_bad_ops_account(void **state)
{
    (void)state;
    expect_only(KIND_CONF,
                "cluster: {name: t, schema_prefix: x, shards: 16}\n"
                "hosts:\n"
                "  - {name: a, addr: h, port: 1, user: u,\n"
                "     ops_password: secret}\n",
                4,
                "hosts[0].ops_password: is given without ops_user (the tools would "
                "use user and password)");
    expect_only(KIND_CONF,
                "cluster: {name: t, schema_prefix: x, shards: 16}\n"
                "hosts:\n"
                "  - name: a\n"
                "    addr: h\n"
                "    port: 1\n"
                "    user: bc\n"
                "    password: one\n"
                "    ops_user: bc\n"
                "    ops_password: two\n",
                8, "hosts[0].ops_user: 'bc' is also user, with another password");
    expect_only(KIND_CONF,
                "cluster: {name: t, schema_prefix: x, shards: 16}\n"
                "hosts:\n"
                "  - {name: a, addr: h, port: 1, user: u, ops_user: \"\"}\n",
                3, "hosts[0].ops_user:");
}

static void test_conf_unknown_key(void **state)
{
    (void)state;
    expect_only(KIND_CONF,
                "cluster:\n"
                "  name: dev\n"
                "  schema_prefix: bc\n"
                "  shards: 64\n"
                "hosts:\n"
                "  - name: db1\n"
                "    adr: 127.0.0.1\n"
                "    addr: 127.0.0.1\n"
                "    port: 3306\n"
                "    user: bc\n",
                7, "hosts[0]: unknown key 'adr'");
}

static void test_conf_missing_required_key(void **state)
{
    (void)state;
    expect_only(KIND_CONF,
                "cluster:\n"
                "  name: dev\n"
                "  schema_prefix: bc\n"
                "hosts:\n"
                "  - name: db1\n"
                "    addr: 127.0.0.1\n"
                "    port: 3306\n"
                "    user: bc\n",
                1, "cluster: missing required key 'shards'");
    expect_only(KIND_CONF,
                "cluster:\n"
                "  name: dev\n"
                "  schema_prefix: bc\n"
                "  shards: 64\n"
                "hosts:\n"
                "  - name: db1\n"
                "    addr: 127.0.0.1\n"
                "    user: bc\n",
                6, "hosts[0]: missing required key 'port'");
    expect_only(KIND_CONF,
                "cluster:\n"
                "  name: dev\n"
                "  schema_prefix: bc\n"
                "  shards: 64\n",
                1, "missing required key 'hosts'");
}

static void test_conf_string_where_int(void **state)
{
    (void)state;
    expect_only(KIND_CONF,
                "cluster:\n"
                "  name: dev\n"
                "  schema_prefix: bc\n"
                "  shards: 64\n"
                "hosts:\n"
                "  - name: db1\n"
                "    addr: 127.0.0.1\n"
                "    port: mysql\n"
                "    user: bc\n",
                8, "hosts[0].port: expected a decimal integer, got 'mysql'");
    expect_only(KIND_CONF,
                "cluster:\n"
                "  name: dev\n"
                "  schema_prefix: bc\n"
                "  shards: \"64\"\n"
                "hosts:\n"
                "  - {name: db1, addr: h, port: 3306, user: bc}\n",
                4, "cluster.shards: expected a decimal integer, got the string '64'");
    expect_only(KIND_CONF,
                "cluster:\n"
                "  name: dev\n"
                "  schema_prefix: bc\n"
                "  shards: 64\n"
                "hosts:\n"
                "  - {name: db1, addr: h, port: 3306, user: bc}\n"
                "router:\n"
                "  pool_size: [8]\n",
                8, "router.pool_size: expected a decimal integer, got a list");
}

static void test_conf_shards_out_of_range(void **state)
{
    static const char fmt[] = "cluster:\n"
                              "  name: dev\n"
                              "  schema_prefix: bc\n"
                              "  shards: %s\n"
                              "hosts:\n"
                              "  - {name: db1, addr: h, port: 3306, user: bc}\n";
    static const char *const bad[] = {"100", "8",   "16384",
                                      "0",   "-64", "99999999999999999999"};
    char text[256], msg[128];

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(text, sizeof(text), fmt, bad[i]);
        snprintf(msg, sizeof(msg),
                 "cluster.shards: %s is not a power of two in 16..8192", bad[i]);
        expect_only(KIND_CONF, text, 4, msg);
    }
}

static void test_conf_port_out_of_range(void **state)
{
    static const char fmt[] = "cluster:\n"
                              "  name: dev\n"
                              "  schema_prefix: bc\n"
                              "  shards: 64\n"
                              "hosts:\n"
                              "  - {name: db1, addr: h, port: %s, user: bc}\n"
                              "memcached:\n"
                              "  - {addr: h, port: 11211}\n";
    char text[256], msg[128];
    const char *bad[] = {"0", "65536", "-1"};

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(text, sizeof(text), fmt, bad[i]);
        snprintf(msg, sizeof(msg), "hosts[0].port: %s is out of range 1..65535",
                 bad[i]);
        expect_only(KIND_CONF, text, 6, msg);
    }
    expect_only(KIND_CONF,
                "cluster:\n"
                "  name: dev\n"
                "  schema_prefix: bc\n"
                "  shards: 64\n"
                "hosts:\n"
                "  - {name: db1, addr: h, port: 3306, user: bc}\n"
                "memcached:\n"
                "  - addr: h\n"
                "    port: 0\n",
                9, "memcached[0].port: 0 is out of range 1..65535");
}

static void test_conf_weight_zero(void **state)
{
    (void)state;
    expect_only(KIND_CONF,
                "cluster:\n"
                "  name: dev\n"
                "  schema_prefix: bc\n"
                "  shards: 64\n"
                "hosts:\n"
                "  - name: db1\n"
                "    addr: 127.0.0.1\n"
                "    port: 3306\n"
                "    user: bc\n"
                "    weight: 0\n",
                10, "hosts[0].weight: 0 is out of range 1..1000");
}

static void test_conf_router_ranges(void **state)
{
    char path[64];
    char *err = load_bad(KIND_CONF,
                         "cluster:\n"
                         "  name: dev\n"
                         "  schema_prefix: bc\n"
                         "  shards: 64\n"
                         "hosts:\n"
                         "  - {name: db1, addr: h, port: 3306, user: bc}\n"
                         "router:\n"
                         "  pool_size: 0\n"
                         "  connect_timeout_ms: 9\n"
                         "  query_timeout_ms: 600001\n"
                         "  map_poll_ms: 999\n"
                         "  poll_ms: 1000\n"
                         "  move_wait_ms: 99\n",
                         path);

    (void)state;
    expect_err(err, path, 8, "router.pool_size: 0 is out of range 1..1024");
    expect_err(err, path, 9, "router.connect_timeout_ms: 9 is out of range 10..60000");
    expect_err(err, path, 10,
               "router.query_timeout_ms: 600001 is out of range 10..600000");
    expect_err(err, path, 11, "router.map_poll_ms: 999 is out of range 1000..600000");
    expect_err(err, path, 12, "router: unknown key 'poll_ms'");
    expect_err(err, path, 13, "router.move_wait_ms: 99 is out of range 100..60000");
    assert_int_equal(count_lines(err), 6);
    free(err);
}

static void test_conf_duplicate_host_names(void **state)
{
    (void)state;
    expect_only(KIND_CONF,
                "cluster:\n"
                "  name: dev\n"
                "  schema_prefix: bc\n"
                "  shards: 64\n"
                "hosts:\n"
                "  - {name: db1, addr: h, port: 3306, user: bc}\n"
                "  - {name: db2, addr: h, port: 3307, user: bc}\n"
                "  - name: db1\n"
                "    addr: h\n"
                "    port: 3308\n"
                "    user: bc\n",
                8, "hosts[2].name: duplicate host name 'db1' (also hosts[0])");
}

/* Replicas: loaded, saved and loaded back; the replication: section's keys. */
static void test_conf_replicas(void **state)
{
    static const char text[] =
        "cluster: {name: t, schema_prefix: x, shards: 16}\n"
        "hosts:\n"
        "  - name: a\n"
        "    addr: h\n"
        "    port: 1\n"
        "    user: api\n"
        "    replicas:\n"
        "      - {name: a2, addr: r, port: 11}\n"
        "      - {name: a3, addr: s, port: 12}\n"
        "  - {name: b, addr: h, port: 2, user: api, replicas: []}\n"
        "replication: {max_lag_ms: 500, probe_ms: 100}\n";
    struct shardmap_conf conf, back;
    char path[64], *err = NULL;

    (void)state;
    write_tmp(path, text);
    assert_int_equal(shardmap_conf_load(path, &conf, &err), 0);
    unlink(path);
    assert_int_equal(conf.hosts[0].nreplica, 2);
    assert_string_equal(conf.hosts[0].replicas[1].name, "a3");
    assert_string_equal(conf.hosts[0].replicas[1].addr, "s");
    assert_int_equal(conf.hosts[0].replicas[1].port, 12);
    assert_int_equal(conf.hosts[1].nreplica, 0);
    assert_int_equal(conf.max_lag_ms, 500);
    assert_int_equal(conf.probe_ms, 100);
    assert_int_equal(conf.down_after_ms, 1000); /* the default */
    assert_int_equal(shardmap_conf_save(path, &conf), 0);
    assert_int_equal(shardmap_conf_load(path, &back, &err), 0);
    unlink(path);
    assert_int_equal(back.hosts[0].nreplica, 2);
    assert_string_equal(back.hosts[0].replicas[0].name, "a2");
    assert_int_equal(back.hosts[0].replicas[0].port, 11);
    assert_int_equal(back.max_lag_ms, 500);
    shardmap_conf_deinit(&back);
    shardmap_conf_deinit(&conf);
}

static void test_conf_bad_replicas(void **state)
{
    (void)state;
    expect_only(KIND_CONF,
                "cluster: {name: t, schema_prefix: x, shards: 16}\n"
                "hosts:\n"
                "  - {name: a, addr: h, port: 1, user: u,\n"
                "     replicas: [{name: b, addr: h, port: 3}]}\n"
                "  - {name: b, addr: h, port: 2, user: u}\n",
                2,
                "hosts: server name 'b' is used twice (hosts[1] and "
                "hosts[0].replicas[0])");
    expect_only(KIND_CONF,
                "cluster: {name: t, schema_prefix: x, shards: 16}\n"
                "hosts:\n"
                "  - {name: a, addr: h, port: 1, user: u,\n"
                "     replicas: [{name: r, addr: h, port: 70000}]}\n",
                4, "hosts[0].replicas[0].port: 70000 is out of range 1..65535");
    expect_only(KIND_CONF,
                "cluster: {name: t, schema_prefix: x, shards: 16}\n"
                "hosts:\n"
                "  - {name: a, addr: h, port: 1, user: u}\n"
                "replication: {max_lag_ms: 5}\n",
                4, "replication.max_lag_ms: 5 is out of range 100..3600000");
}

static void test_conf_global_host_not_a_host(void **state)
{
    (void)state;
    expect_only(KIND_CONF,
                "cluster:\n"
                "  name: dev\n"
                "  schema_prefix: bc\n"
                "  shards: 64\n"
                "  global_host: db9\n"
                "hosts:\n"
                "  - {name: db1, addr: h, port: 3306, user: bc}\n",
                5, "cluster.global_host: 'db9' is not one of the hosts");
}

static void test_conf_bad_names(void **state)
{
    char path[64];
    char *err = load_bad(KIND_CONF,
                         "cluster:\n"
                         "  name: my cluster\n"
                         "  schema_prefix: BC\n"
                         "  shards: 64\n"
                         "hosts:\n"
                         "  - {name: db.1, addr: h, port: 3306, user: bc}\n"
                         "  - {name: db2, addr: \"\", port: 3306, user: bc}\n",
                         path);

    (void)state;
    expect_err(err, path, 2, "cluster.name: 'my cluster' is not a valid name");
    expect_err(err, path, 3, "cluster.schema_prefix: 'BC' is not a valid prefix");
    expect_err(err, path, 6, "hosts[0].name: 'db.1' is not a valid name");
    expect_err(err, path, 7, "hosts[1].addr: must not be empty");
    assert_int_equal(count_lines(err), 4);
    free(err);
}

/*
 * The longest valid schema_prefix (31 characters) is kept whole, and every
 * name made from it fits SHARDMAP_SCHEMA_MAX and MariaDB's 64 characters; one
 * more character is a config error naming the file and line. Guards the review
 * finding of a long prefix copied through a too-small buffer.
 */
static void test_conf_schema_prefix_longest(void **state)
{
    static const char longest[] = "p123456789_123456789_123456789_";
    char text[256], path[64], name[SHARDMAP_SCHEMA_MAX], *err = NULL;
    struct shardmap_conf conf;
    int n;

    (void)state;
    assert_int_equal(strlen(longest), SHARDMAP_PREFIX_MAX - 1);
    snprintf(text, sizeof(text),
             "cluster:\n  name: t\n  schema_prefix: %s\n  shards: %u\n"
             "hosts:\n  - {name: a, addr: h, port: 1, user: u}\n",
             longest, SHARDMAP_MAX_SHARDS);
    write_tmp(path, text);
    assert_int_equal(shardmap_conf_load(path, &conf, &err), 0);
    unlink(path);
    assert_null(err);
    assert_string_equal(conf.schema_prefix, longest);
    n = snprintf(name, sizeof(name), "%s_move_%04u", conf.schema_prefix,
                 conf.nshard - 1);
    assert_true(n > 0 && (size_t)n < sizeof(name) && n <= 64);
    assert_string_equal(name, "p123456789_123456789_123456789__move_8191");
    n = snprintf(name, sizeof(name), "%s_global", conf.schema_prefix);
    assert_true(n > 0 && (size_t)n < sizeof(name));
    shardmap_conf_deinit(&conf);

    snprintf(text, sizeof(text),
             "cluster:\n  name: t\n  schema_prefix: %sx\n  shards: 16\n"
             "hosts:\n  - {name: a, addr: h, port: 1, user: u}\n",
             longest);
    expect_only(KIND_CONF, text, 3,
                "cluster.schema_prefix: 'p123456789_123456789_123456789_x' is not a "
                "valid prefix: 1..31 characters of a-z 0-9 _");
}

static void test_conf_hosts_count(void **state)
{
    (void)state;
    expect_only(KIND_CONF,
                "cluster:\n"
                "  name: dev\n"
                "  schema_prefix: bc\n"
                "  shards: 64\n"
                "hosts: []\n",
                5, "hosts: has 0 entries, must have 1..256");
    expect_only(KIND_CONF,
                "cluster:\n"
                "  name: dev\n"
                "  schema_prefix: bc\n"
                "  shards: 64\n"
                "hosts:\n"
                "  name: db1\n",
                5, "hosts: expected a list, got a mapping");
}

static void test_conf_yaml_syntax_error(void **state)
{
    (void)state;
    expect_only(KIND_CONF,
                "cluster:\n"
                "  name: dev\n"
                "  schema_prefix: bc\n"
                "  shards: 64\n"
                "hosts:\n"
                "  - name: db1\n"
                "    addr: [127.0.0.1\n"
                "    port: 3306\n",
                8,
                "YAML syntax error: did not find expected ',' or ']' (while parsing a "
                "flow sequence on line 7)");
    expect_only(KIND_CONF,
                "cluster:\n"
                "  name: dev\n"
                "   shards: 64\n",
                3, "YAML syntax error: mapping values are not allowed in this context");
}

static void test_conf_collects_all_errors(void **state)
{
    char path[64];
    char *err = load_bad(KIND_CONF,
                         "cluster:\n"
                         "  name: dev\n"
                         "  schema_prefix: bc\n"
                         "  shards: 48\n"
                         "hosts:\n"
                         "  - name: db1\n"
                         "    addr: 127.0.0.1\n"
                         "    port: 70000\n"
                         "    user: bc\n",
                         path);
    char first[128];

    (void)state;
    expect_err(err, path, 4, "cluster.shards: 48 is not a power of two in 16..8192");
    expect_err(err, path, 8, "hosts[0].port: 70000 is out of range 1..65535");
    /* Exactly two lines, in file order, joined by one '\n'. */
    assert_int_equal(count_lines(err), 2);
    snprintf(first, sizeof(first), "%s:4: ", path);
    assert_memory_equal(err, first, strlen(first));
    assert_null(strstr(err, "\n\n"));
    assert_int_not_equal(err[strlen(err) - 1], '\n');
    free(err);
}

static void test_conf_empty_and_wrong_documents(void **state)
{
    (void)state;
    expect_only(KIND_CONF, "# nothing here\n", 1,
                "the file is empty, expected 'cluster:'");
    expect_only(KIND_CONF, "- cluster\n", 1, "expected a mapping, got a list");
    expect_only(KIND_CONF,
                "cluster:\n"
                "  name: dev\n"
                "  schema_prefix: bc\n"
                "  shards: 64\n"
                "hosts:\n"
                "  - {name: db1, addr: h, port: 3306, user: bc}\n"
                "---\n"
                "cluster: {}\n",
                8, "only one YAML document is allowed");
}

/* Deep nesting is refused at once (libyaml took 33 s for 100,000 levels). */
static void test_conf_nested_too_deep(void **state)
{
    size_t n = 100000, len = strlen("cluster: ");
    char *text = malloc(len + n + 2);
    char ok[256] = "cluster: ";
    struct shardmap_conf conf;
    char *err = NULL;
    struct timespec t0, t1;
    char dir[] = "/tmp/test_conf_dir.XXXXXX", path[64];

    (void)state;
    assert_non_null(text);
    memcpy(text, "cluster: ", len);
    memset(text + len, '[', n);
    memcpy(text + len + n, "\n", 2);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    expect_only(KIND_CONF, text, 1, "nested deeper than 64 levels");
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_true(t1.tv_sec - t0.tv_sec < 2);
    free(text);
    /* 64 levels are still a document (its error is the config's own) */
    for (int i = 0; i < 63; i++)
        strcat(ok, "[");
    for (int i = 0; i < 63; i++)
        strcat(ok, "]");
    strcat(ok, "\n");
    err = load_bad(KIND_CONF, ok, path);
    assert_null(strstr(err, "nested deeper"));
    assert_non_null(strstr(err, "cluster: expected a mapping, got a list"));
    free(err);
    /* a directory: its own reason */
    assert_non_null(mkdtemp(dir));
    assert_int_equal(shardmap_conf_load(dir, &conf, &err), -EISDIR);
    assert_non_null(strstr(err, ": cannot open: Is a directory"));
    free(err);
    rmdir(dir);
}

static void test_conf_missing_file(void **state)
{
    struct shardmap_conf conf;
    char *err = NULL;

    (void)state;
    assert_int_equal(shardmap_conf_load("/nonexistent/cluster.yaml", &conf, &err),
                     -ENOENT);
    assert_true(all_zero(&conf, sizeof(conf)));
    assert_non_null(err);
    assert_non_null(strstr(err, "/nonexistent/cluster.yaml: cannot open: "));
    free(err);
    /* err may be NULL when the caller does not want the text. */
    assert_int_equal(shardmap_conf_load("/nonexistent/cluster.yaml", &conf, NULL),
                     -ENOENT);
}

static void test_save_to_missing_dir_fails_cleanly(void **state)
{
    struct shardmap_conf conf;
    struct shardmap_node nodes[1] = {{"db1", 1}};
    struct shardmap *map = shardmap_create(16, nodes, 1, 1);

    (void)state;
    assert_non_null(map);
    memset(&conf, 0, sizeof(conf));
    assert_int_equal(shardmap_conf_save("/nonexistent/dir/c.yaml", &conf), -ENOENT);
    assert_int_equal(shardmap_save("/nonexistent/dir/m.yaml", map), -ENOENT);
    shardmap_destroy(map);
}

/* ---- shard maps ---------------------------------------------------------- */

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_examples_load),
        cmocka_unit_test(test_examples_round_trip),
        cmocka_unit_test(test_cluster_example_values),
        cmocka_unit_test(test_conf_defaults),
        cmocka_unit_test(test_conf_round_trip_keeps_odd_passwords),
        cmocka_unit_test(test_conf_ops_account),
        cmocka_unit_test(test_conf_bad_ops_account),
        cmocka_unit_test(test_conf_unknown_key),
        cmocka_unit_test(test_conf_missing_required_key),
        cmocka_unit_test(test_conf_string_where_int),
        cmocka_unit_test(test_conf_shards_out_of_range),
        cmocka_unit_test(test_conf_port_out_of_range),
        cmocka_unit_test(test_conf_weight_zero),
        cmocka_unit_test(test_conf_router_ranges),
        cmocka_unit_test(test_conf_duplicate_host_names),
        cmocka_unit_test(test_conf_replicas),
        cmocka_unit_test(test_conf_bad_replicas),
        cmocka_unit_test(test_conf_global_host_not_a_host),
        cmocka_unit_test(test_conf_bad_names),
        cmocka_unit_test(test_conf_schema_prefix_longest),
        cmocka_unit_test(test_conf_hosts_count),
        cmocka_unit_test(test_conf_yaml_syntax_error),
        cmocka_unit_test(test_conf_collects_all_errors),
        cmocka_unit_test(test_conf_empty_and_wrong_documents),
        cmocka_unit_test(test_conf_nested_too_deep),
        cmocka_unit_test(test_conf_missing_file),
        cmocka_unit_test(test_save_to_missing_dir_fails_cleanly),
    };
    return cmocka_run_group_tests_name("shardmap_conf", tests, NULL, NULL);
}
