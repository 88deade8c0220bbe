/*
 * test_shardmap_conf.c: unit tests of the YAML files of libshardmap: the
 * cluster config, shard maps and plans. Every example in etc/ must load, each
 * kind must survive save -> load unchanged, and each kind of bad input must
 * fail with BC_ECONFIG and a "path:line: message" naming what is wrong.
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
#include <unistd.h>

#include <cmocka.h>

#include "shardmap/shardmap.h"

#define EXAMPLES "../../etc/*.yaml"

enum kind { KIND_CONF, KIND_MAP, KIND_PLAN };

/* ---- helpers ------------------------------------------------------------- */

/* Writes text to a new temporary file; path must hold 64 bytes. */
static void write_tmp(char *path, const char *text)
{
    size_t len = strlen(text);
    int fd;

    strcpy(path, "/tmp/test_shardmap_conf-XXXXXX");
    fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    assert_int_equal(close(fd), 0);
}

/* A path for a file to save to; the caller unlinks it. */
static void tmp_name(char *path)
{
    write_tmp(path, "");
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;

    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    n = ftell(f);
    assert_true(n >= 0);
    rewind(f);
    buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static int all_zero(const void *p, size_t n)
{
    const unsigned char *c = p;

    for (size_t i = 0; i < n; i++) {
        if (c[i] != 0) {
            return 0;
        }
    }
    return 1;
}

/*
 * Loads text as a file of the given kind, which must fail with BC_ECONFIG,
 * leave its output zeroed, and give an error text. Returns the text; path
 * gets the (removed) file's name for expect_err().
 */
static char *load_bad(enum kind kind, const char *text, char *path)
{
    struct shardmap_conf conf;
    struct shardmap_plan plan;
    struct shardmap *map = (struct shardmap *)1;
    char *err = NULL;
    int rc = 0;

    write_tmp(path, text);
    switch (kind) {
    case KIND_CONF:
        rc = shardmap_conf_load(path, &conf, &err);
        assert_true(all_zero(&conf, sizeof(conf)));
        break;
    case KIND_MAP:
        rc = shardmap_load(path, &map, &err);
        assert_null(map);
        break;
    case KIND_PLAN:
        rc = shardmap_plan_load(path, &plan, &err);
        assert_true(all_zero(&plan, sizeof(plan)));
        break;
    }
    unlink(path);
    assert_int_equal(rc, BC_ECONFIG);
    assert_non_null(err);
    return err;
}

/* Asserts that err holds the line "path:line: msg" (msg may be a prefix). */
static void expect_err(const char *err, const char *path, int line, const char *msg)
{
    char want[512];
    const char *p;

    snprintf(want, sizeof(want), "%s:%d: %s", path, line, msg);
    p = strstr(err, want);
    if (p == NULL || (p != err && p[-1] != '\n')) {
        print_error("expected \"%s\" in:\n%s\n", want, err);
        fail();
    }
}

static unsigned count_lines(const char *err)
{
    unsigned n = 1;

    for (; *err != '\0'; err++) {
        n += *err == '\n';
    }
    return n;
}

/* One error only: err is one line, "path:line: msg" (msg may be a prefix). */
static void expect_only(enum kind kind, const char *text, int line, const char *msg)
{
    char path[64], want[512];
    char *err = load_bad(kind, text, path);

    snprintf(want, sizeof(want), "%s:%d: %s", path, line, msg);
    if (strncmp(err, want, strlen(want)) != 0 || strchr(err, '\n') != NULL) {
        print_error("expected \"%s\", got:\n%s\n", want, err);
        fail();
    }
    free(err);
}

static void assert_maps_equal(const struct shardmap *a, const struct shardmap *b)
{
    assert_int_equal(a->version, b->version);
    assert_int_equal(a->nshard, b->nshard);
    assert_int_equal(a->nnode, b->nnode);
    for (uint32_t i = 0; i < a->nnode; i++) {
        assert_string_equal(a->nodes[i].name, b->nodes[i].name);
        assert_int_equal(a->nodes[i].weight, b->nodes[i].weight);
    }
    assert_memory_equal(a->node_of, b->node_of, a->nshard * sizeof(*a->node_of));
    for (uint32_t s = 0; s < b->nshard; s++) {
        assert_int_equal(b->state[s], SHARDMAP_STATE_ACTIVE);
    }
}

static void assert_confs_equal(const struct shardmap_conf *a,
                               const struct shardmap_conf *b)
{
    assert_string_equal(a->name, b->name);
    assert_string_equal(a->schema_prefix, b->schema_prefix);
    assert_int_equal(a->nshard, b->nshard);
    assert_string_equal(a->global_host, b->global_host);
    assert_int_equal(a->nhost, b->nhost);
    for (uint32_t i = 0; i < a->nhost; i++) {
        assert_string_equal(a->hosts[i].name, b->hosts[i].name);
        assert_string_equal(a->hosts[i].addr, b->hosts[i].addr);
        assert_int_equal(a->hosts[i].port, b->hosts[i].port);
        assert_string_equal(a->hosts[i].user, b->hosts[i].user);
        assert_string_equal(a->hosts[i].password, b->hosts[i].password);
        assert_string_equal(a->hosts[i].ops_user, b->hosts[i].ops_user);
        assert_string_equal(a->hosts[i].ops_password, b->hosts[i].ops_password);
        assert_int_equal(a->hosts[i].weight, b->hosts[i].weight);
    }
    assert_int_equal(a->nmemcached, b->nmemcached);
    for (uint32_t i = 0; i < a->nmemcached; i++) {
        assert_string_equal(a->memcached[i].addr, b->memcached[i].addr);
        assert_int_equal(a->memcached[i].port, b->memcached[i].port);
    }
    assert_int_equal(a->pool_size, b->pool_size);
    assert_int_equal(a->connect_timeout_ms, b->connect_timeout_ms);
    assert_int_equal(a->query_timeout_ms, b->query_timeout_ms);
    assert_int_equal(a->map_poll_ms, b->map_poll_ms);
    assert_int_equal(a->move_wait_ms, b->move_wait_ms);
}

static void assert_plans_equal(const struct shardmap_plan *a,
                               const struct shardmap_plan *b)
{
    assert_int_equal(a->base_version, b->base_version);
    assert_int_equal(a->has_new_host, b->has_new_host);
    if (a->has_new_host) {
        assert_string_equal(a->new_host.name, b->new_host.name);
        assert_string_equal(a->new_host.addr, b->new_host.addr);
        assert_int_equal(a->new_host.port, b->new_host.port);
    }
    assert_maps_equal(a->target, b->target);
    assert_int_equal(a->nmove, b->nmove);
    for (uint32_t i = 0; i < a->nmove; i++) {
        assert_int_equal(a->moves[i].shard, b->moves[i].shard);
        assert_int_equal(a->moves[i].from, b->moves[i].from);
        assert_int_equal(a->moves[i].to, b->moves[i].to);
    }
}

/* The first top-level key of a YAML file: "cluster", "shard_map" or "plan". */
static enum kind kind_of(const char *path)
{
    char line[256];
    FILE *f = fopen(path, "r");

    assert_non_null(f);
    while (fgets(line, sizeof(line), f) != NULL) {
        if (line[0] == '#' || line[0] == ' ' || line[0] == '\n') {
            continue;
        }
        fclose(f);
        if (strncmp(line, "cluster:", 8) == 0 || strncmp(line, "hosts:", 6) == 0) {
            return KIND_CONF;
        }
        if (strncmp(line, "shard_map:", 10) == 0) {
            return KIND_MAP;
        }
        if (strncmp(line, "plan:", 5) == 0) {
            return KIND_PLAN;
        }
        print_error("%s: unknown top-level key: %s", path, line);
        fail();
    }
    fclose(f);
    print_error("%s: no top-level key\n", path);
    fail();
    return KIND_CONF;
}

/* Loads path, saves it elsewhere, loads that, and compares. */
static void round_trip_file(const char *path, enum kind kind)
{
    struct shardmap_conf c1, c2;
    struct shardmap_plan p1, p2;
    struct shardmap *m1, *m2;
    char out[64], *err = (char *)1;

    tmp_name(out);
    switch (kind) {
    case KIND_CONF:
        assert_int_equal(shardmap_conf_load(path, &c1, &err), 0);
        assert_null(err);
        assert_int_equal(shardmap_conf_save(out, &c1), 0);
        assert_int_equal(shardmap_conf_load(out, &c2, &err), 0);
        assert_confs_equal(&c1, &c2);
        shardmap_conf_deinit(&c1);
        shardmap_conf_deinit(&c2);
        break;
    case KIND_MAP:
        assert_int_equal(shardmap_load(path, &m1, &err), 0);
        assert_null(err);
        assert_int_equal(shardmap_save(out, m1), 0);
        assert_int_equal(shardmap_load(out, &m2, &err), 0);
        assert_maps_equal(m1, m2);
        shardmap_destroy(m1);
        shardmap_destroy(m2);
        break;
    case KIND_PLAN:
        assert_int_equal(shardmap_plan_load(path, &p1, &err), 0);
        assert_null(err);
        assert_int_equal(shardmap_plan_save(out, &p1), 0);
        assert_int_equal(shardmap_plan_load(out, &p2, &err), 0);
        assert_plans_equal(&p1, &p2);
        shardmap_plan_deinit(&p1);
        shardmap_plan_deinit(&p2);
        break;
    }
    unlink(out);
}

/* ---- examples ------------------------------------------------------------ */

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

static void test_map_round_trip_compact(void **state)
{
    struct shardmap_node nodes[4] = {
        {"db1", 1}, {"db2", 3}, {"empty", 1}, {"db4", 1000}};
    struct shardmap *in = shardmap_create(64, nodes, 4, 42), *out = NULL;
    char path[64], *err = NULL, *text;

    (void)state;
    assert_non_null(in);
    for (uint32_t s = 0; s < 64; s++) {
        in->node_of[s] = s <= 20 || s == 25 ? 0 : s % 2 ? 1 : 3;
    }
    tmp_name(path);
    assert_int_equal(shardmap_save(path, in), 0);
    text = slurp(path);
    assert_non_null(strstr(text, "shards: \"0-20,25\""));
    assert_non_null(strstr(text, "shards: \"\""));
    assert_non_null(strstr(text, "shards: \"21,23,27,29,"));
    assert_non_null(strstr(text, "version: 42"));
    free(text);
    assert_int_equal(shardmap_load(path, &out, &err), 0);
    assert_null(err);
    assert_maps_equal(in, out);
    shardmap_destroy(out);
    shardmap_destroy(in);
    unlink(path);
}

static void test_map_full_size_round_trip(void **state)
{
    struct shardmap_node nodes[SHARDMAP_MAX_HOSTS];
    struct shardmap *in, *out = NULL;
    char path[64], *err = NULL;

    (void)state;
    for (uint32_t i = 0; i < SHARDMAP_MAX_HOSTS; i++) {
        snprintf(nodes[i].name, sizeof(nodes[i].name), "h%03u", i);
        nodes[i].weight = 1 + i;
    }
    in = shardmap_create(SHARDMAP_MAX_SHARDS, nodes, SHARDMAP_MAX_HOSTS, UINT64_MAX);
    assert_non_null(in);
    for (uint32_t s = 0; s < SHARDMAP_MAX_SHARDS; s++) {
        in->node_of[s] = (uint16_t)((s * 7919u) % SHARDMAP_MAX_HOSTS);
    }
    tmp_name(path);
    assert_int_equal(shardmap_save(path, in), 0);
    assert_int_equal(shardmap_load(path, &out, &err), 0);
    assert_null(err);
    assert_maps_equal(in, out);
    shardmap_destroy(out);
    shardmap_destroy(in);
    unlink(path);
}

static const char map_head[] = "shard_map:\n"
                               "  version: 3\n"
                               "  shards: 16\n"
                               "  hosts:\n";

static void map_text(char *buf, size_t size, const char *hosts)
{
    snprintf(buf, size, "%s%s", map_head, hosts);
}

static void test_map_shard_overlap(void **state)
{
    char text[512];

    (void)state;
    map_text(text, sizeof(text),
             "    - name: db1\n"
             "      shards: \"0-7\"\n"
             "    - name: db2\n"
             "      weight: 2\n"
             "      shards: \"6-15\"\n");
    expect_only(KIND_MAP, text, 9,
                "shard_map.hosts[1].shards: shards 6-7 are already assigned to db1");
    map_text(text, sizeof(text),
             "    - name: db1\n"
             "      shards: \"0-7, 3\"\n"
             "    - name: db2\n"
             "      shards: \"8-15\"\n");
    expect_only(KIND_MAP, text, 6,
                "shard_map.hosts[0].shards: shard 3 is already assigned to this host "
                "(listed twice)");
}

static void test_map_shard_missing(void **state)
{
    char text[512];

    (void)state;
    map_text(text, sizeof(text),
             "    - name: db1\n"
             "      shards: \"0-7\"\n"
             "    - name: db2\n"
             "      shards: \"10-13\"\n");
    expect_only(KIND_MAP, text, 4,
                "shard_map.hosts: shards 8-9,14-15 are not assigned to any host");
}

static void test_map_bad_shard_lists(void **state)
{
    char text[512], path[64], *err;

    (void)state;
    map_text(text, sizeof(text),
             "    - name: db1\n"
             "      shards: \"0-7,16\"\n"
             "    - name: db2\n"
             "      shards: \"8-x\"\n"
             "    - name: db3\n"
             "      shards: \"15-8\"\n"
             "    - name: db4\n"
             "      shards: 8-15\n"
             "      weight: 1001\n");
    err = load_bad(KIND_MAP, text, path);
    expect_err(err, path, 6,
               "shard_map.hosts[0].shards: shard 16 is out of range 0..15");
    expect_err(err, path, 8, "shard_map.hosts[1].shards: bad shard list near '8-x'");
    expect_err(err, path, 10, "shard_map.hosts[2].shards: range 15-8 is backwards");
    expect_err(err, path, 13,
               "shard_map.hosts[3].weight: 1001 is out of range 1..1000");
    assert_int_equal(count_lines(err), 4);
    free(err);
    map_text(text, sizeof(text),
             "    - name: db1\n"
             "      shards: \"0-15,\"\n");
    expect_only(KIND_MAP, text, 6,
                "shard_map.hosts[0].shards: bad shard list: ends with a comma");
}

static void test_map_structure_errors(void **state)
{
    char path[64], *err;

    (void)state;
    err = load_bad(KIND_MAP,
                   "shard_map:\n"
                   "  version: 0\n"
                   "  shards: 64\n"
                   "  extra: 1\n"
                   "  hosts:\n"
                   "    - name: db1\n"
                   "    - {name: db1, shards: \"0-63\"}\n",
                   path);
    expect_err(err, path, 2, "shard_map.version: 0 is out of range, must be >= 1");
    expect_err(err, path, 4, "shard_map: unknown key 'extra'");
    expect_err(err, path, 6, "shard_map.hosts[0]: missing required key 'shards'");
    expect_err(err, path, 7,
               "shard_map.hosts[1].name: duplicate host name 'db1' (also "
               "shard_map.hosts[0])");
    assert_int_equal(count_lines(err), 4);
    free(err);
    /* A cluster file is not a shard map. */
    err = load_bad(KIND_MAP, "cluster: {}\n", path);
    expect_err(err, path, 1, "unknown key 'cluster'");
    expect_err(err, path, 1, "missing required key 'shard_map'");
    free(err);
}

/* ---- plans ------------------------------------------------------------------ */

static const char plan_head[] =
    "plan:\n"                                                /* 1 */
    "  base_version: 3\n"                                    /* 2 */
    "  new_host: {name: db3, addr: 127.0.0.1, port: 3309}\n" /* 3 */
    "  target:\n"                                            /* 4 */
    "    version: 4\n"                                       /* 5 */
    "    shards: 16\n"                                       /* 6 */
    "    hosts:\n"                                           /* 7 */
    "      - {name: db1, shards: \"0-5\"}\n"                 /* 8 */
    "      - {name: db2, weight: 2, shards: \"8-13\"}\n"     /* 9 */
    "      - {name: db3, shards: \"6-7,14-15\"}\n"           /* 10 */
    "  moves:\n";                                            /* 11 */

static void plan_text(char *buf, size_t size, const char *moves)
{
    snprintf(buf, size, "%s%s", plan_head, moves);
}

static void test_plan_load_values(void **state)
{
    struct shardmap_plan plan;
    char text[1024], path[64], *err = NULL;

    (void)state;
    plan_text(text, sizeof(text),
              "    - {shard: 6, from: db1, to: db3}\n"
              "    - {shard: 14, from: db2, to: db3}\n");
    write_tmp(path, text);
    assert_int_equal(shardmap_plan_load(path, &plan, &err), 0);
    unlink(path);
    assert_null(err);
    assert_int_equal(plan.base_version, 3);
    assert_true(plan.has_new_host);
    assert_string_equal(plan.new_host.name, "db3");
    assert_string_equal(plan.new_host.addr, "127.0.0.1");
    assert_int_equal(plan.new_host.port, 3309);
    assert_int_equal(plan.target->version, 4);
    assert_int_equal(plan.target->nnode, 3);
    assert_int_equal(plan.target->nodes[1].weight, 2);
    assert_int_equal(plan.target->node_of[15], 2);
    assert_int_equal(plan.nmove, 2);
    assert_int_equal(plan.moves[1].shard, 14);
    assert_int_equal(plan.moves[1].from, 1);
    assert_int_equal(plan.moves[1].to, 2);
    shardmap_plan_deinit(&plan);
}

static void test_plan_round_trip(void **state)
{
    struct shardmap_node nodes[3] = {{"db1", 1}, {"db2", 2}, {"db3", 1}};
    struct shardmap_node db4 = {"db4", 1};
    struct shardmap_plan in, in2, out;
    struct shardmap *base = shardmap_create(256, nodes, 3, 7);
    char path[64], *err = NULL;

    (void)state;
    assert_non_null(base);
    assert_int_equal(shardmap_place(base), 0);

    /* An add-host plan, with a new host, and a remove-host plan, without. */
    assert_int_equal(shardmap_plan_add(base, &db4, &in), 0);
    in.has_new_host = 1;
    strcpy(in.new_host.name, "db4");
    strcpy(in.new_host.addr, "10.0.0.4");
    in.new_host.port = 3306;
    tmp_name(path);
    assert_int_equal(shardmap_plan_save(path, &in), 0);
    assert_int_equal(shardmap_plan_load(path, &out, &err), 0);
    assert_null(err);
    assert_plans_equal(&in, &out);
    assert_int_equal(out.new_host.weight, 1);
    shardmap_plan_deinit(&out);

    assert_int_equal(shardmap_plan_remove(base, "db2", &in2), 0);
    assert_int_equal(shardmap_plan_save(path, &in2), 0);
    assert_int_equal(shardmap_plan_load(path, &out, &err), 0);
    assert_null(err);
    assert_plans_equal(&in2, &out);
    shardmap_plan_deinit(&out);

    /* A plan with no moves. */
    in2.nmove = 0;
    assert_int_equal(shardmap_plan_save(path, &in2), 0);
    assert_int_equal(shardmap_plan_load(path, &out, &err), 0);
    assert_int_equal(out.nmove, 0);
    shardmap_plan_deinit(&out);

    unlink(path);
    shardmap_plan_deinit(&in);
    shardmap_plan_deinit(&in2);
    shardmap_destroy(base);
}

static void test_plan_move_unknown_host(void **state)
{
    char text[1024];

    (void)state;
    plan_text(text, sizeof(text),
              "    - {shard: 6, from: db1, to: db3}\n"
              "    - {shard: 7, from: db9, to: db3}\n");
    expect_only(KIND_PLAN, text, 13,
                "plan.moves[1].from: unknown host 'db9': not a host of plan.target");
}

static void test_plan_move_checks(void **state)
{
    char text[1024], path[64], *err;

    (void)state;
    plan_text(text, sizeof(text),
              "    - {shard: 6, from: db1, to: db2}\n"  /* 12 */
              "    - {shard: 7, from: db3, to: db3}\n"  /* 13 */
              "    - {shard: 16, from: db1, to: db3}\n" /* 14 */
              "    - {shard: 14, from: db2, to: db3}\n" /* 15 */
              "    - {shard: 14, from: db1, to: db3}\n" /* 16 */
              "    - {shard: 15, from: db1}\n");        /* 17 */
    err = load_bad(KIND_PLAN, text, path);
    expect_err(err, path, 12,
               "plan.moves[0]: shard 6 is on db3 in plan.target, not on db2");
    expect_err(err, path, 13, "plan.moves[1]: from and to are both db3");
    expect_err(err, path, 14, "plan.moves[2].shard: 16 is out of range 0..15");
    expect_err(err, path, 16,
               "plan.moves[4]: shard 14 is already moved by plan.moves[3]");
    expect_err(err, path, 17, "plan.moves[5]: missing required key 'to'");
    assert_int_equal(count_lines(err), 5);
    free(err);
}

static void test_plan_structure_errors(void **state)
{
    char path[64], *err;

    (void)state;
    err = load_bad(KIND_PLAN,
                   "plan:\n"
                   "  base_version: x\n"
                   "  new_host: {name: db9, addr: h, port: 1, user: root}\n"
                   "  target:\n"
                   "    version: 4\n"
                   "    shards: 16\n"
                   "    hosts:\n"
                   "      - {name: db1, shards: \"0-15\"}\n",
                   path);
    expect_err(err, path, 1, "plan: missing required key 'moves'");
    expect_err(err, path, 2, "plan.base_version: expected a decimal integer, got 'x'");
    expect_err(err, path, 3, "plan.new_host: unknown key 'user'");
    expect_err(err, path, 3, "plan.new_host.name: 'db9' is not a host of plan.target");
    assert_int_equal(count_lines(err), 4);
    free(err);

    /* A broken target is reported with its own lines. */
    err = load_bad(KIND_PLAN,
                   "plan:\n"
                   "  base_version: 3\n"
                   "  target:\n"
                   "    version: 4\n"
                   "    shards: 16\n"
                   "    hosts:\n"
                   "      - {name: db1, shards: \"0-14\"}\n"
                   "  moves: []\n",
                   path);
    expect_err(err, path, 6, "plan.target.hosts: shard 15 is not assigned to any host");
    assert_int_equal(count_lines(err), 1);
    free(err);
}

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
        cmocka_unit_test(test_conf_missing_file),
        cmocka_unit_test(test_save_to_missing_dir_fails_cleanly),
        cmocka_unit_test(test_map_round_trip_compact),
        cmocka_unit_test(test_map_full_size_round_trip),
        cmocka_unit_test(test_map_shard_overlap),
        cmocka_unit_test(test_map_shard_missing),
        cmocka_unit_test(test_map_bad_shard_lists),
        cmocka_unit_test(test_map_structure_errors),
        cmocka_unit_test(test_plan_load_values),
        cmocka_unit_test(test_plan_round_trip),
        cmocka_unit_test(test_plan_move_unknown_host),
        cmocka_unit_test(test_plan_move_checks),
        cmocka_unit_test(test_plan_structure_errors),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
