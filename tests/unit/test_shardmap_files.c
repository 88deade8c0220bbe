/*
 * test_shardmap_files.c: unit tests of libshardmap's shard map and plan
 * files: each survives save -> load unchanged (the map at full size too), and
 * each kind of bad input fails with BC_ECONFIG and a "path:line: message"
 * naming what is wrong. Also the cluster config's bound on its memcached
 * list, which the cache's server table relies on.
 *
 * Run from tests/unit (as test_shardmap_conf).
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

#include "tests/unit/yaml_fix.h"

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

/* More memcached servers than the cache holds is an error, not a silent cut. */
static void test_conf_memcached_limit(void **state)
{
    char text[2048];
    char msg[96];
    size_t len;

    (void)state;
    for (unsigned n = SHARDMAP_MAX_MEMCACHED; n <= SHARDMAP_MAX_MEMCACHED + 1; n++) {
        len = (size_t)snprintf(text, sizeof(text),
                               "cluster:\n"
                               "  name: dev\n"
                               "  schema_prefix: bc\n"
                               "  shards: 64\n"
                               "hosts:\n"
                               "  - {name: db1, addr: h, port: 3306, user: bc}\n"
                               "memcached:\n");
        for (unsigned i = 0; i < n; i++)
            len += (size_t)snprintf(text + len, sizeof(text) - len,
                                    "  - {addr: h, port: %u}\n", 11211 + i);
        assert_true(len < sizeof(text));
        if (n == SHARDMAP_MAX_MEMCACHED) {
            struct shardmap_conf conf;
            char path[64], *err = NULL;

            write_tmp(path, text);
            assert_int_equal(shardmap_conf_load(path, &conf, &err), 0);
            assert_int_equal(conf.nmemcached, n);
            shardmap_conf_deinit(&conf);
            unlink(path);
            continue;
        }
        snprintf(msg, sizeof(msg), "memcached: has %u entries, at most %u allowed", n,
                 SHARDMAP_MAX_MEMCACHED);
        expect_only(KIND_CONF, text, 7, msg);
    }
}

#define CONF_HEAD                                                                      \
    "cluster:\n"                                                                       \
    "  name: dev\n"                                                                    \
    "  schema_prefix: %s\n"                                                            \
    "  shards: 64\n"                                                                   \
    "hosts:\n"                                                                         \
    "  - {name: db1, addr: h, port: %s, user: bc}\n"

/* A tag is refused where it stands: the loaded document could not tell "!!str 5"
 * from 5. */
static void test_conf_tags_refused(void **state)
{
    const char *ports[] = {"!!str 3306", "!!float 3306", "!!int 3306", "! 3306"};
    char text[512];

    (void)state;
    for (size_t i = 0; i < sizeof(ports) / sizeof(ports[0]); i++) {
        snprintf(text, sizeof(text), CONF_HEAD, "bc", ports[i]);
        expect_only(KIND_CONF, text, 6, "the tag ");
    }
    snprintf(text, sizeof(text), CONF_HEAD "memcached: !!seq\n  - {addr: h, port: 1}\n",
             "bc", "3306");
    expect_only(KIND_CONF, text, 7, "the tag tag:yaml.org,2002:seq is not read");
}

/* A value quoted in a message keeps the report one line per error. */
static void test_conf_messages_quote_no_control_characters(void **state)
{
    char text[512], path[64], *err;

    (void)state;
    snprintf(text, sizeof(text), CONF_HEAD, "\"b\\ncluster.yaml:1: forged\"", "3306");
    err = load_bad(KIND_CONF, text, path);
    assert_int_equal(count_lines(err), 1);
    expect_err(err, path, 3, "cluster.schema_prefix: 'b?cluster.yaml:1: forged'");
    free(err);
}

/* A FIFO nobody writes to reads as an empty file instead of hanging the open. */
static void test_conf_fifo_without_writer(void **state)
{
    struct shardmap_conf conf;
    char path[64], *err = NULL;

    (void)state;
    tmp_name(path);
    unlink(path);
    assert_int_equal(mkfifo(path, 0600), 0);
    assert_int_equal(shardmap_conf_load(path, &conf, &err), BC_ECONFIG);
    assert_non_null(err);
    free(err);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
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
        cmocka_unit_test(test_conf_memcached_limit),
        cmocka_unit_test(test_conf_tags_refused),
        cmocka_unit_test(test_conf_messages_quote_no_control_characters),
        cmocka_unit_test(test_conf_fifo_without_writer),
    };
    return cmocka_run_group_tests_name("shardmap_files", tests, NULL, NULL);
}
