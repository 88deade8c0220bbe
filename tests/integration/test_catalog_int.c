/*
 * test_catalog_int.c: the catalog against the real MariaDB global host of the
 * test stack, in a scratch cluster of its own (prefix bccat, 16 shards) so
 * that it never touches the cluster the other suites use. The tests run in
 * order and build on each other: install, create, then change the map.
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
#include "tests/integration/itest.h"

#define PREFIX "bccat"
#define SCHEMA PREFIX "_global"
#define NSHARD 16

struct fixture {
    struct shardmap_conf conf; /* the stack's, with PREFIX and NSHARD */
    struct sql_endpoint ep;    /* the global host */
    struct sql_conn *conn;
    struct catalog cat;
    MYSQL *peek; /* another session, to see what was committed */
};

static struct sql_conn *open_conn(const struct sql_endpoint *ep)
{
    struct sql_conn_opts opts = {.query_timeout_ms = 20000, .multi_statements = 1};
    struct sql_conn *c = NULL;

    if (sql_conn_open(ep, &opts, &c) != 0)
        fail_msg("connecting to %s: %s", ep->name, sql_last_error());
    return c;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    struct sql_executor exec;

    assert_non_null(f);
    itest_conf(&f->conf);
    snprintf(f->conf.schema_prefix, sizeof(f->conf.schema_prefix), PREFIX);
    f->conf.nshard = NSHARD;
    assert_int_equal(sql_endpoint_of(&f->conf, f->conf.global_host, NULL, 0, &f->ep),
                     0);
    f->conn = open_conn(&f->ep);
    sql_conn_executor(f->conn, &exec);
    catalog_init(&f->cat, &f->conf, &exec);
    assert_string_equal(f->cat.schema, SCHEMA);
    f->peek = itest_mysql(&f->conf, f->conf.global_host);
    /* Left over by an interrupted run: start from nothing. */
    if (mysql_query(f->peek, "DROP DATABASE IF EXISTS " SCHEMA) != 0)
        fail_msg("%s", mysql_error(f->peek));
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    if (mysql_query(f->peek, "DROP DATABASE IF EXISTS " SCHEMA) != 0)
        fprintf(stderr, "dropping %s: %s\n", SCHEMA, mysql_error(f->peek));
    mysql_close(f->peek);
    catalog_deinit(&f->cat);
    sql_conn_close(f->conn);
    shardmap_conf_deinit(&f->conf);
    free(f);
    return 0;
}

static uint64_t version_of(struct fixture *f)
{
    uint64_t v = 0;

    assert_int_equal(catalog_map_version(&f->cat, &v), 0);
    /* The same as another session sees: the change was committed. */
    assert_int_equal(itest_scalar(f->peek, "SELECT version FROM " SCHEMA
                                           ".map_version WHERE id = 1"),
                     (int64_t)v);
    return v;
}

static struct catalog_map *load(struct fixture *f)
{
    struct catalog_map *m = calloc(1, sizeof(*m));

    assert_non_null(m);
    if (catalog_map_load(&f->cat, m) != 0)
        fail_msg("catalog_map_load: %s", sql_last_error());
    return m;
}

static void unload(struct catalog_map *m)
{
    catalog_map_deinit(m);
    free(m);
}

/* A host of the map that does not hold shard. */
static const char *other_host(const struct shardmap *map, uint32_t shard)
{
    return map->nodes[(map->node_of[shard] + 1) % map->nnode].name;
}

static void test_install_is_idempotent(void **state)
{
    struct fixture *f = *state;
    uint64_t v;
    uint32_t n = 99;

    /* No schema at all yet: no cluster. */
    assert_int_equal(catalog_map_version(&f->cat, &v), BC_ENOTFOUND);
    assert_non_null(strstr(sql_last_error(), "shardctl init"));
    assert_int_equal(catalog_cluster_shards(&f->cat, &n), 0);
    assert_int_equal(n, 0);

    assert_int_equal(catalog_install(&f->cat), 0);
    assert_int_equal(catalog_install(&f->cat), 0);
    assert_int_equal(itest_scalar(f->peek,
                                  "SELECT COUNT(*) FROM information_schema.TABLES "
                                  "WHERE TABLE_SCHEMA = '" SCHEMA "' AND TABLE_NAME IN "
                                  "('cluster_meta', 'hosts', 'shard_map', "
                                  "'map_version', 'moves', 'settlements')"),
                     6);
    /* Tables, but no map yet. */
    assert_int_equal(catalog_map_version(&f->cat, &v), BC_ENOTFOUND);
    assert_int_equal(catalog_cluster_shards(&f->cat, &n), 0);
    assert_int_equal(n, 0);
}

static struct shardmap *placed_map(const struct shardmap_conf *conf)
{
    struct shardmap_node nodes[SHARDMAP_MAX_HOSTS];
    struct shardmap *map;

    for (uint32_t i = 0; i < conf->nhost; i++) {
        snprintf(nodes[i].name, sizeof(nodes[i].name), "%s", conf->hosts[i].name);
        nodes[i].weight = conf->hosts[i].weight;
    }
    map = shardmap_create(conf->nshard, nodes, conf->nhost, 1);
    assert_non_null(map);
    assert_int_equal(shardmap_place(map), 0);
    return map;
}

static void test_failed_create_rolls_back(void **state)
{
    struct fixture *f = *state;
    struct shardmap *map = placed_map(&f->conf);
    uint64_t v;

    /*
     * A row in the way of the third statement: the transaction fails after
     * map_version was written, and that write must not stay behind, neither
     * committed nor open on the catalog's own connection.
     */
    if (mysql_query(f->peek, "INSERT INTO " SCHEMA ".cluster_meta VALUES "
                             "('cluster', 'in the way')") != 0)
        fail_msg("%s", mysql_error(f->peek));
    assert_int_equal(catalog_map_create(&f->cat, &f->conf, map), BC_EEXISTS);
    assert_int_equal(catalog_map_version(&f->cat, &v), BC_ENOTFOUND);
    assert_int_equal(
        itest_scalar(f->peek, "SELECT COUNT(*) FROM " SCHEMA ".map_version"), 0);
    if (mysql_query(f->peek, "DELETE FROM " SCHEMA ".cluster_meta") != 0)
        fail_msg("%s", mysql_error(f->peek));
    shardmap_destroy(map);
}

static void test_map_create_then_load(void **state)
{
    struct fixture *f = *state;
    struct shardmap *map = placed_map(&f->conf);
    struct catalog_map *m;
    uint32_t n = 0;

    assert_int_equal(catalog_map_create(&f->cat, &f->conf, map), 0);
    assert_int_equal(catalog_cluster_shards(&f->cat, &n), 0);
    assert_int_equal(n, NSHARD);
    assert_int_equal(version_of(f), 1);

    m = load(f);
    assert_int_equal(m->nhost, f->conf.nhost);
    for (uint32_t i = 0; i < m->nhost; i++) {
        assert_string_equal(m->host[i].name, f->conf.hosts[i].name);
        assert_string_equal(m->host[i].addr, f->conf.hosts[i].addr);
        assert_int_equal(m->host[i].port, f->conf.hosts[i].port);
        assert_int_equal(m->host[i].weight, f->conf.hosts[i].weight);
        assert_string_equal(m->map->nodes[i].name, f->conf.hosts[i].name);
    }
    assert_int_equal(m->map->version, 1);
    assert_int_equal(m->map->nshard, NSHARD);
    for (uint32_t s = 0; s < NSHARD; s++) {
        assert_string_equal(m->map->nodes[m->map->node_of[s]].name,
                            map->nodes[map->node_of[s]].name);
        assert_int_equal(m->map->state[s], SHARDMAP_STATE_ACTIVE);
    }
    unload(m);

    /* Once only: the second one changes nothing. */
    assert_int_equal(catalog_map_create(&f->cat, &f->conf, map), BC_EEXISTS);
    assert_non_null(strstr(sql_last_error(), "exists"));
    assert_int_equal(version_of(f), 1);
    assert_int_equal(itest_scalar(f->peek, "SELECT COUNT(*) FROM " SCHEMA ".shard_map"),
                     NSHARD);
    shardmap_destroy(map);
}

static void test_load_refuses_another_shard_count(void **state)
{
    struct fixture *f = *state;
    struct shardmap_conf conf = f->conf;
    struct catalog other;
    struct catalog_map m;

    conf.nshard = NSHARD * 2;
    catalog_init(&other, &conf, &f->cat.exec);
    assert_int_equal(catalog_map_load(&other, &m), BC_EMISMATCH);
    assert_null(m.map);
    catalog_deinit(&other);
}

static void test_host_add_and_remove_bump_the_version(void **state)
{
    struct fixture *f = *state;
    struct shardmap_host_conf h = {
        .name = "db9", .addr = "127.0.0.9", .port = 3999, .weight = 2};
    struct catalog_host got;
    struct catalog_map *m;
    int added = -1, removed = -1;

    assert_int_equal(catalog_host_add(&f->cat, &h, &added), 0);
    assert_int_equal(added, 1);
    assert_int_equal(version_of(f), 2);
    assert_int_equal(catalog_host_add(&f->cat, &h, &added), 0);
    assert_int_equal(added, 0);
    assert_int_equal(version_of(f), 2);

    assert_int_equal(catalog_host_get(&f->cat, "db9", &got), 0);
    assert_string_equal(got.name, "db9");
    assert_string_equal(got.addr, "127.0.0.9");
    assert_int_equal(got.port, 3999);
    assert_int_equal(got.weight, 2);
    assert_int_equal(catalog_host_get(&f->cat, "nope", &got), BC_EHOST);

    /* Last in the order, with no shard. */
    m = load(f);
    assert_int_equal(m->nhost, f->conf.nhost + 1);
    assert_string_equal(m->host[m->nhost - 1].name, "db9");
    assert_int_equal(m->map->version, 2);
    unload(m);

    /* A host with shards stays. */
    assert_int_equal(
        catalog_host_remove_empty(&f->cat, f->conf.hosts[0].name, &removed), 0);
    assert_int_equal(removed, 0);
    assert_int_equal(version_of(f), 2);
    assert_int_equal(catalog_host_get(&f->cat, f->conf.hosts[0].name, &got), 0);

    assert_int_equal(catalog_host_remove_empty(&f->cat, "db9", &removed), 0);
    assert_int_equal(removed, 1);
    assert_int_equal(version_of(f), 3);
    assert_int_equal(catalog_host_get(&f->cat, "db9", &got), BC_EHOST);
    assert_int_equal(catalog_host_remove_empty(&f->cat, "db9", &removed), 0);
    assert_int_equal(removed, 0);
    assert_int_equal(version_of(f), 3);
}

static void test_shard_host_and_states(void **state)
{
    static const enum shardmap_state states[] = {
        SHARDMAP_STATE_MOVING, SHARDMAP_STATE_FENCED, SHARDMAP_STATE_ACTIVE};
    struct fixture *f = *state;
    struct catalog_map *m = load(f);
    char host[SHARDMAP_NAME_MAX];
    uint64_t v = m->map->version;

    for (uint32_t s = 0; s < NSHARD; s++) {
        assert_int_equal(catalog_shard_host(&f->cat, s, host), 0);
        assert_string_equal(host, m->map->nodes[m->map->node_of[s]].name);
    }
    unload(m);
    assert_int_equal(catalog_shard_host(&f->cat, NSHARD, host), BC_ESHARD);

    for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++) {
        assert_int_equal(catalog_shard_set_state(&f->cat, 7, states[i]), 0);
        m = load(f);
        assert_int_equal(m->map->state[7], states[i]);
        assert_int_equal(m->map->state[6], SHARDMAP_STATE_ACTIVE);
        /* The state is for people: the version stays. */
        assert_int_equal(m->map->version, v);
        unload(m);
    }
    assert_int_equal(catalog_shard_set_state(&f->cat, NSHARD, SHARDMAP_STATE_ACTIVE),
                     BC_ESHARD);
}

static void test_move_from_create_to_flip(void **state)
{
    struct fixture *f = *state;
    struct catalog_map *m = load(f);
    struct catalog_move mv = {
        .shard = 5, .keep_source = 1, .pause_ms = -1, .verify_diffs = -1};
    struct catalog_move again, got;
    char host[SHARDMAP_NAME_MAX];
    uint64_t v = m->map->version;

    snprintf(mv.src, sizeof(mv.src), "%s", m->map->nodes[m->map->node_of[5]].name);
    snprintf(mv.dst, sizeof(mv.dst), "%s", other_host(m->map, 5));
    unload(m);

    assert_int_equal(catalog_move_active(&f->cat, 5, &got), 0);
    assert_int_equal(catalog_move_create(&f->cat, &mv), 0);
    assert_true(mv.id > 0);
    assert_string_equal(mv.phase, "prepare");
    m = load(f);
    assert_int_equal(m->map->state[5], SHARDMAP_STATE_MOVING);
    assert_int_equal(m->map->version, v);
    unload(m);

    /* One unfinished move per shard, whoever asks. */
    again = mv;
    again.id = 0;
    assert_int_equal(catalog_move_create(&f->cat, &again), BC_EEXISTS);
    assert_non_null(strstr(sql_last_error(), "shard 5"));

    assert_int_equal(catalog_move_active(&f->cat, 5, &got), 1);
    assert_int_equal(got.id, mv.id);
    assert_int_equal(got.shard, 5);
    assert_string_equal(got.src, mv.src);
    assert_string_equal(got.dst, mv.dst);
    assert_string_equal(got.phase, "prepare");
    assert_int_equal(got.keep_source, 1);
    assert_int_equal(got.pause_ms, -1);
    assert_int_equal(got.verify_diffs, -1);
    assert_string_equal(got.binlog_file, "");
    assert_string_equal(got.finished_at, "");
    assert_true(strlen(got.started_at) >= 19);
    assert_int_equal(catalog_move_active(&f->cat, 6, &got), 0);

    /* Each field flag writes its fields and no others. */
    snprintf(mv.phase, sizeof(mv.phase), "copy");
    snprintf(mv.binlog_file, sizeof(mv.binlog_file), "mysql-bin.000007");
    mv.binlog_pos = 123456;
    assert_int_equal(catalog_move_save(&f->cat, &mv, 0), 0);
    assert_int_equal(catalog_move_active(&f->cat, 5, &got), 1);
    assert_string_equal(got.phase, "copy");
    assert_string_equal(got.binlog_file, "");

    snprintf(mv.phase, sizeof(mv.phase), "copied");
    snprintf(mv.snapshot_gtid, sizeof(mv.snapshot_gtid), "0-1-4242");
    mv.rows_copied = 777;
    mv.verify_diffs = 3;
    assert_int_equal(catalog_move_save(&f->cat, &mv, CATALOG_MOVE_COPY), 0);
    assert_int_equal(catalog_move_active(&f->cat, 5, &got), 1);
    assert_string_equal(got.phase, "copied");
    assert_string_equal(got.binlog_file, "mysql-bin.000007");
    assert_int_equal(got.binlog_pos, 123456);
    assert_string_equal(got.snapshot_gtid, "0-1-4242");
    assert_int_equal(got.rows_copied, 777);
    assert_int_equal(got.verify_diffs, -1);

    snprintf(mv.phase, sizeof(mv.phase), "catchup");
    assert_int_equal(catalog_move_save(&f->cat, &mv, CATALOG_MOVE_VERIFY), 0);
    assert_int_equal(catalog_move_active(&f->cat, 5, &got), 1);
    assert_string_equal(got.phase, "catchup");
    assert_int_equal(got.verify_diffs, 3);
    mv.verify_diffs = -1;
    assert_int_equal(catalog_move_save(&f->cat, &mv, CATALOG_MOVE_VERIFY), 0);
    assert_int_equal(catalog_move_active(&f->cat, 5, &got), 1);
    assert_int_equal(got.verify_diffs, -1);

    /* The flip: the map row, its state, the version and the move at once. */
    snprintf(mv.phase, sizeof(mv.phase), "cutover");
    assert_int_equal(catalog_move_save(&f->cat, &mv, 0), 0);
    assert_int_equal(catalog_shard_set_state(&f->cat, 5, SHARDMAP_STATE_FENCED), 0);
    mv.pause_ms = 42;
    assert_int_equal(catalog_move_flip(&f->cat, &mv), 0);
    assert_int_equal(version_of(f), v + 1);
    m = load(f);
    assert_string_equal(m->map->nodes[m->map->node_of[5]].name, mv.dst);
    assert_int_equal(m->map->state[5], SHARDMAP_STATE_ACTIVE);
    assert_int_equal(m->map->version, v + 1);
    unload(m);
    assert_int_equal(catalog_shard_host(&f->cat, 5, host), 0);
    assert_string_equal(host, mv.dst);
    assert_int_equal(itest_scalar(f->peek, "SELECT version FROM " SCHEMA
                                           ".shard_map WHERE shard = 5"),
                     (int64_t)(v + 1));
    assert_int_equal(catalog_move_active(&f->cat, 5, &got), 1);
    assert_string_equal(got.phase, "switched");
    assert_int_equal(got.pause_ms, 42);

    /* Not kept until it is done. */
    assert_int_equal(catalog_move_kept_source(&f->cat, 5, host), 0);
    snprintf(mv.phase, sizeof(mv.phase), "done");
    mv.verify_diffs = 0;
    assert_int_equal(
        catalog_move_save(&f->cat, &mv, CATALOG_MOVE_VERIFY | CATALOG_MOVE_FINISHED),
        0);
    assert_int_equal(catalog_move_active(&f->cat, 5, &got), 0);
    assert_int_equal(catalog_move_kept_source(&f->cat, 5, host), 1);
    assert_string_equal(host, mv.src);
    assert_int_equal(catalog_move_kept_source(&f->cat, 6, host), 0);

    /* Finished: the shard may move again. */
    again = (struct catalog_move){.shard = 5, .pause_ms = -1, .verify_diffs = -1};
    snprintf(again.src, sizeof(again.src), "%s", mv.dst);
    snprintf(again.dst, sizeof(again.dst), "%s", mv.src);
    assert_int_equal(catalog_move_create(&f->cat, &again), 0);
    assert_true(again.id > mv.id);
    snprintf(again.phase, sizeof(again.phase), "aborted");
    assert_int_equal(catalog_move_save(&f->cat, &again, CATALOG_MOVE_FINISHED), 0);
    assert_int_equal(catalog_shard_set_state(&f->cat, 5, SHARDMAP_STATE_ACTIVE), 0);
    assert_int_equal(catalog_move_active(&f->cat, 5, &got), 0);
    /* The kept copy is still the one of the done move. */
    assert_int_equal(catalog_move_kept_source(&f->cat, 5, host), 1);
    assert_string_equal(host, mv.src);
}

static void test_moves_list_newest_first(void **state)
{
    struct fixture *f = *state;
    struct catalog_move mv = {.shard = 9, .pause_ms = -1, .verify_diffs = -1};
    struct catalog_move *list = NULL;
    char host[SHARDMAP_NAME_MAX];
    uint32_t n = 0;

    assert_int_equal(catalog_shard_host(&f->cat, 9, host), 0);
    snprintf(mv.src, sizeof(mv.src), "%s", host);
    snprintf(mv.dst, sizeof(mv.dst), "%s",
             strcmp(host, f->conf.hosts[0].name) ? f->conf.hosts[0].name
                                                 : f->conf.hosts[1].name);
    assert_int_equal(catalog_move_create(&f->cat, &mv), 0);

    assert_int_equal(catalog_moves_list(&f->cat, 100, &list, &n), 0);
    assert_int_equal(n, 3);
    assert_int_equal(list[0].id, mv.id);
    assert_int_equal(list[0].shard, 9);
    assert_string_equal(list[0].phase, "prepare");
    assert_string_equal(list[0].finished_at, "");
    assert_string_equal(list[1].phase, "aborted");
    assert_string_equal(list[2].phase, "done");
    assert_true(list[2].finished_at[0] != '\0');
    assert_int_equal(list[2].pause_ms, 42);
    assert_int_equal(list[2].verify_diffs, 0);
    assert_true(list[0].id > list[1].id && list[1].id > list[2].id);
    free(list);

    assert_int_equal(catalog_moves_list(&f->cat, 1, &list, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(list[0].id, mv.id);
    free(list);

    snprintf(mv.phase, sizeof(mv.phase), "aborted");
    assert_int_equal(catalog_move_save(&f->cat, &mv, CATALOG_MOVE_FINISHED), 0);
    assert_int_equal(catalog_shard_set_state(&f->cat, 9, SHARDMAP_STATE_ACTIVE), 0);
}

static void test_lock_shard_is_per_session(void **state)
{
    struct fixture *f = *state;
    struct sql_conn *a = open_conn(&f->ep), *b = open_conn(&f->ep);
    struct sql_executor ea, eb;
    struct catalog ca, cb;
    int got = -1;

    sql_conn_executor(a, &ea);
    sql_conn_executor(b, &eb);
    catalog_init(&ca, &f->conf, &ea);
    catalog_init(&cb, &f->conf, &eb);

    assert_int_equal(catalog_lock_shard(&ca, 3, &got), 0);
    assert_int_equal(got, 1);
    assert_int_equal(catalog_lock_shard(&cb, 3, &got), 0);
    assert_int_equal(got, 0);
    assert_int_equal(catalog_lock_shard(&cb, 4, &got), 0);
    assert_int_equal(got, 1);
    assert_int_equal(catalog_lock_shard(&cb, NSHARD, &got), BC_ESHARD);

    /* The server lets go of the lock with the session, once it saw it end. */
    sql_conn_close(a);
    catalog_deinit(&ca);
    for (int64_t until = itest_now_ms() + 5000;; usleep(20000)) {
        assert_int_equal(catalog_lock_shard(&cb, 3, &got), 0);
        if (got == 1 || itest_now_ms() > until)
            break;
    }
    assert_int_equal(got, 1);
    catalog_deinit(&cb);
    sql_conn_close(b);
}

/* Moves shard to host in the catalog, as a finished move would. */
static void flip(struct fixture *f, uint32_t shard, const char *from, const char *to)
{
    struct catalog_move mv = {.shard = shard, .pause_ms = 1, .verify_diffs = -1};

    snprintf(mv.src, sizeof(mv.src), "%s", from);
    snprintf(mv.dst, sizeof(mv.dst), "%s", to);
    snprintf(mv.phase, sizeof(mv.phase), "prepare");
    assert_int_equal(catalog_move_create(&f->cat, &mv), 0);
    assert_int_equal(catalog_move_flip(&f->cat, &mv), 0);
    snprintf(mv.phase, sizeof(mv.phase), "done");
    assert_int_equal(catalog_move_save(&f->cat, &mv, CATALOG_MOVE_FINISHED), 0);
}

/*
 * A plan runs against the map it was made from, or against that map with
 * some of the plan's own steps done (a rebalance run again after it stopped);
 * any other change of the map makes it stale.
 */
static void test_check_plan_refuses_a_stale_plan(void **state)
{
    struct fixture *f = *state;
    struct catalog_map *m = load(f);
    struct shardmap_node extra = {.name = "dbplan", .weight = 1};
    struct shardmap_host_conf h = {
        .name = "dbplan", .addr = "127.0.0.1", .port = 9, .weight = 1};
    struct shardmap_plan plan;
    uint64_t v = version_of(f);
    uint32_t moved, other = UINT32_MAX;
    int added = 0;
    char want[64];

    assert_int_equal(m->map->version, v);
    assert_int_equal(shardmap_plan_add(m->map, &extra, &plan), 0);
    assert_true(plan.nmove > 0);
    assert_int_equal(plan.base_version, v);
    assert_int_equal(catalog_check_plan(&f->cat, &plan), 0);

    /* Half-way: the plan's host added, its first move done. */
    assert_int_equal(catalog_host_add(&f->cat, &h, &added), 0);
    assert_int_equal(added, 1);
    moved = plan.moves[0].shard;
    flip(f, moved, plan.target->nodes[plan.moves[0].from].name, "dbplan");
    assert_true(version_of(f) > v);
    assert_int_equal(catalog_check_plan(&f->cat, &plan), 0);

    /* A change the plan did not make: a shard it leaves alone moved. */
    for (uint32_t s = 0; s < NSHARD && other == UINT32_MAX; s++) {
        int in_plan = 0;
        for (uint32_t i = 0; i < plan.nmove; i++)
            in_plan |= plan.moves[i].shard == s;
        if (!in_plan)
            other = s;
    }
    assert_true(other != UINT32_MAX);
    flip(f, other, m->map->nodes[m->map->node_of[other]].name,
         other_host(m->map, other));
    assert_int_equal(catalog_check_plan(&f->cat, &plan), BC_EMISMATCH);
    printf("stale plan: %s\n", sql_last_error());
    snprintf(want, sizeof(want), "version %" PRIu64 " ", v);
    assert_non_null(strstr(sql_last_error(), want));
    snprintf(want, sizeof(want), "version %" PRIu64 " ", version_of(f));
    assert_non_null(strstr(sql_last_error(), want));

    /* Put the map back as it was for the tests after this one. */
    flip(f, other, other_host(m->map, other),
         m->map->nodes[m->map->node_of[other]].name);
    flip(f, moved, "dbplan", plan.target->nodes[plan.moves[0].from].name);
    assert_int_equal(catalog_host_remove_empty(&f->cat, "dbplan", &added), 0);
    assert_int_equal(added, 1);
    shardmap_plan_deinit(&plan);
    unload(m);
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
    o->conn = open_conn(&f->ep);
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
    uint64_t v0 = version_of(f), v;
    int ro = -1;

    h0->nreplica = 1;
    snprintf(h0->replicas[0].name, sizeof(h0->replicas[0].name), "r1");
    snprintf(h0->replicas[0].addr, sizeof(h0->replicas[0].addr), "127.0.0.7");
    h0->replicas[0].port = 4001;
    assert_int_equal(catalog_servers_sync(&f->cat, &f->conf), 0);
    assert_int_equal(version_of(f), v0 + 1);
    /* Again: nothing to add, no new version. */
    assert_int_equal(catalog_servers_sync(&f->cat, &f->conf), 0);
    assert_int_equal(version_of(f), v0 + 1);

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
    assert_int_equal(version_of(f), v0 + 1);
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
    assert_int_equal(version_of(f), v0 + 2);
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
    assert_int_equal(version_of(f), v0 + 3);
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
        cmocka_unit_test(test_install_is_idempotent),
        cmocka_unit_test(test_failed_create_rolls_back),
        cmocka_unit_test(test_map_create_then_load),
        cmocka_unit_test(test_load_refuses_another_shard_count),
        cmocka_unit_test(test_host_add_and_remove_bump_the_version),
        cmocka_unit_test(test_shard_host_and_states),
        cmocka_unit_test(test_move_from_create_to_flip),
        cmocka_unit_test(test_moves_list_newest_first),
        cmocka_unit_test(test_lock_shard_is_per_session),
        cmocka_unit_test(test_check_plan_refuses_a_stale_plan),
        cmocka_unit_test(test_settlement_create_get_progress),
        cmocka_unit_test(test_settlement_claim_has_one_winner),
        cmocka_unit_test(test_settlement_renew_and_release_by_the_owner),
        cmocka_unit_test(test_settlement_expired_lease_is_taken_over),
        cmocka_unit_test(test_servers_sync_promote_and_roles),
        cmocka_unit_test(test_install_upgrades_old_settlements),
    };
    return cmocka_run_group_tests_name("catalog_integration", tests, setup, teardown);
}
