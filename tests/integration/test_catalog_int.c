/*
 * test_catalog_int.c: the catalog against the real MariaDB global host of the
 * test stack, in a scratch cluster of its own (prefix bccat, 16 shards) so
 * that it never touches the cluster the other suites use. The tests run in
 * order and build on each other: install, create, then change the map.
 * The settlement jobs and the servers table: test_catalog_jobs_int.c.
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
#include "tests/integration/catfix.h"
#include "tests/integration/itest.h"

#define PREFIX "bccat"
#define SCHEMA PREFIX "_global"
#define NSHARD 16

static int setup(void **state)
{
    return catfix_setup(state, PREFIX, NSHARD);
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

static void peek_exec(struct fixture *f, const char *sql)
{
    if (mysql_query(f->peek, sql) != 0)
        fail_msg("%s: %s", sql, mysql_error(f->peek));
}

/* The name of team id, as the global schema has it now. */
static void team_name(struct fixture *f, int64_t id, char *out, size_t size)
{
    char q[160];
    MYSQL_RES *res;
    MYSQL_ROW row;

    snprintf(q, sizeof(q), "SELECT name FROM " SCHEMA ".teams WHERE id = %" PRId64, id);
    peek_exec(f, q);
    res = mysql_store_result(f->peek);
    assert_non_null(res);
    row = mysql_fetch_row(res);
    assert_non_null(row);
    snprintf(out, size, "%s", row[0]);
    mysql_free_result(res);
}

/*
 * A cluster made before team names were unique: install renames the
 * second and later teams of a name in a company ("<name> #<id>", the first
 * keeps it; names compare without case or accents), leaves other
 * companies' teams and other names as they are, and adds the key, which
 * then refuses another team of that name.
 */
static void test_install_makes_team_names_unique(void **state)
{
    struct fixture *f = *state;
    int64_t first, id[4];
    char name[128], want[128];

    peek_exec(f, "SET NAMES utf8mb4");
    peek_exec(f, "ALTER TABLE " SCHEMA ".teams DROP KEY company_name");
    peek_exec(f, "INSERT INTO " SCHEMA ".teams (company_id, name) VALUES "
                 "(901, 'Sales'), (901, 'sales'), (901, 'Ops'), (901, 'SALÉS'), "
                 "(902, 'Sales')");
    first = (int64_t)mysql_insert_id(f->peek);
    for (int i = 0; i < 4; i++)
        id[i] = first + 1 + i;
    assert_int_equal(catalog_install(&f->cat), 0);

    team_name(f, first, name, sizeof(name));
    assert_string_equal(name, "Sales");
    snprintf(want, sizeof(want), "sales #%" PRId64, id[0]);
    team_name(f, id[0], name, sizeof(name));
    assert_string_equal(name, want);
    team_name(f, id[1], name, sizeof(name));
    assert_string_equal(name, "Ops");
    snprintf(want, sizeof(want), "SALÉS #%" PRId64, id[2]);
    team_name(f, id[2], name, sizeof(name));
    assert_string_equal(name, want);
    team_name(f, id[3], name, sizeof(name)); /* another company's */
    assert_string_equal(name, "Sales");
    assert_int_equal(itest_scalar(f->peek, "SELECT COUNT(*) FROM information_schema."
                                           "STATISTICS WHERE TABLE_SCHEMA = '" SCHEMA
                                           "' AND TABLE_NAME = 'teams' AND INDEX_NAME "
                                           "= 'company_name' AND NON_UNIQUE = 0"),
                     2);
    assert_int_not_equal(mysql_query(f->peek,
                                     "INSERT INTO " SCHEMA ".teams (company_id, "
                                     "name) VALUES (901, 'sAlEs')"),
                         0);
    assert_int_equal(mysql_errno(f->peek), 1062); /* ER_DUP_ENTRY */
    /* Installed again: nothing more to rename. */
    assert_int_equal(catalog_install(&f->cat), 0);
    team_name(f, id[0], name, sizeof(name));
    snprintf(want, sizeof(want), "sales #%" PRId64, id[0]);
    assert_string_equal(name, want);
    peek_exec(f, "DELETE FROM " SCHEMA ".teams WHERE company_id IN (901, 902)");
}

static void test_failed_create_rolls_back(void **state)
{
    struct fixture *f = *state;
    struct shardmap *map = catfix_placed_map(&f->conf);
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
    struct shardmap *map = catfix_placed_map(&f->conf);
    struct catalog_map *m;
    uint32_t n = 0;

    assert_int_equal(catalog_map_create(&f->cat, &f->conf, map), 0);
    assert_int_equal(catalog_cluster_shards(&f->cat, &n), 0);
    assert_int_equal(n, NSHARD);
    assert_int_equal(catfix_version(f), 1);

    m = catfix_load(f);
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
    catfix_unload(m);

    /* Once only: the second one changes nothing. */
    assert_int_equal(catalog_map_create(&f->cat, &f->conf, map), BC_EEXISTS);
    assert_non_null(strstr(sql_last_error(), "exists"));
    assert_int_equal(catfix_version(f), 1);
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
    assert_int_equal(catfix_version(f), 2);
    assert_int_equal(catalog_host_add(&f->cat, &h, &added), 0);
    assert_int_equal(added, 0);
    assert_int_equal(catfix_version(f), 2);

    assert_int_equal(catalog_host_get(&f->cat, "db9", &got), 0);
    assert_string_equal(got.name, "db9");
    assert_string_equal(got.addr, "127.0.0.9");
    assert_int_equal(got.port, 3999);
    assert_int_equal(got.weight, 2);
    assert_int_equal(catalog_host_get(&f->cat, "nope", &got), BC_EHOST);

    /* Last in the order, with no shard. */
    m = catfix_load(f);
    assert_int_equal(m->nhost, f->conf.nhost + 1);
    assert_string_equal(m->host[m->nhost - 1].name, "db9");
    assert_int_equal(m->map->version, 2);
    catfix_unload(m);

    /* A host with shards stays. */
    assert_int_equal(
        catalog_host_remove_empty(&f->cat, f->conf.hosts[0].name, &removed), 0);
    assert_int_equal(removed, 0);
    assert_int_equal(catfix_version(f), 2);
    assert_int_equal(catalog_host_get(&f->cat, f->conf.hosts[0].name, &got), 0);

    assert_int_equal(catalog_host_remove_empty(&f->cat, "db9", &removed), 0);
    assert_int_equal(removed, 1);
    assert_int_equal(catfix_version(f), 3);
    assert_int_equal(catalog_host_get(&f->cat, "db9", &got), BC_EHOST);
    assert_int_equal(catalog_host_remove_empty(&f->cat, "db9", &removed), 0);
    assert_int_equal(removed, 0);
    assert_int_equal(catfix_version(f), 3);
}

static void test_shard_host_and_states(void **state)
{
    static const enum shardmap_state states[] = {
        SHARDMAP_STATE_MOVING, SHARDMAP_STATE_FENCED, SHARDMAP_STATE_ACTIVE};
    struct fixture *f = *state;
    struct catalog_map *m = catfix_load(f);
    char host[SHARDMAP_NAME_MAX];
    uint64_t v = m->map->version;

    for (uint32_t s = 0; s < NSHARD; s++) {
        assert_int_equal(catalog_shard_host(&f->cat, s, host), 0);
        assert_string_equal(host, m->map->nodes[m->map->node_of[s]].name);
    }
    catfix_unload(m);
    assert_int_equal(catalog_shard_host(&f->cat, NSHARD, host), BC_ESHARD);

    for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++) {
        assert_int_equal(catalog_shard_set_state(&f->cat, 7, states[i]), 0);
        m = catfix_load(f);
        assert_int_equal(m->map->state[7], states[i]);
        assert_int_equal(m->map->state[6], SHARDMAP_STATE_ACTIVE);
        /* The state is for people: the version stays. */
        assert_int_equal(m->map->version, v);
        catfix_unload(m);
    }
    assert_int_equal(catalog_shard_set_state(&f->cat, NSHARD, SHARDMAP_STATE_ACTIVE),
                     BC_ESHARD);
}

static void test_move_from_create_to_flip(void **state)
{
    struct fixture *f = *state;
    struct catalog_map *m = catfix_load(f);
    struct catalog_move mv = {
        .shard = 5, .keep_source = 1, .pause_ms = -1, .verify_diffs = -1};
    struct catalog_move again, got;
    char host[SHARDMAP_NAME_MAX];
    uint64_t v = m->map->version;

    snprintf(mv.src, sizeof(mv.src), "%s", m->map->nodes[m->map->node_of[5]].name);
    snprintf(mv.dst, sizeof(mv.dst), "%s", other_host(m->map, 5));
    catfix_unload(m);

    assert_int_equal(catalog_move_active(&f->cat, 5, &got), 0);
    assert_int_equal(catalog_move_create(&f->cat, &mv), 0);
    assert_true(mv.id > 0);
    assert_string_equal(mv.phase, "prepare");
    m = catfix_load(f);
    assert_int_equal(m->map->state[5], SHARDMAP_STATE_MOVING);
    assert_int_equal(m->map->version, v);
    catfix_unload(m);

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
    assert_int_equal(catfix_version(f), v + 1);
    m = catfix_load(f);
    assert_string_equal(m->map->nodes[m->map->node_of[5]].name, mv.dst);
    assert_int_equal(m->map->state[5], SHARDMAP_STATE_ACTIVE);
    assert_int_equal(m->map->version, v + 1);
    catfix_unload(m);
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
    /* The aborted move back dropped its target, the kept copy: none left. */
    assert_int_equal(catalog_move_kept_source(&f->cat, 5, host), 0);
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
    struct sql_conn *a = catfix_conn(&f->ep), *b = catfix_conn(&f->ep);
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
static void flip_keep(struct fixture *f, uint32_t shard, const char *from,
                      const char *to, int keep_source)
{
    struct catalog_move mv = {
        .shard = shard, .keep_source = keep_source, .pause_ms = 1, .verify_diffs = -1};

    snprintf(mv.src, sizeof(mv.src), "%s", from);
    snprintf(mv.dst, sizeof(mv.dst), "%s", to);
    snprintf(mv.phase, sizeof(mv.phase), "prepare");
    assert_int_equal(catalog_move_create(&f->cat, &mv), 0);
    assert_int_equal(catalog_move_flip(&f->cat, &mv), 0);
    snprintf(mv.phase, sizeof(mv.phase), "done");
    assert_int_equal(catalog_move_save(&f->cat, &mv, CATALOG_MOVE_FINISHED), 0);
}

static void flip(struct fixture *f, uint32_t shard, const char *from, const char *to)
{
    flip_keep(f, shard, from, to, 0);
}

/*
 * A plan runs against the map it was made from, or against that map with
 * some of the plan's own steps done (a rebalance run again after it stopped);
 * any other change of the map makes it stale.
 */
static void test_check_plan_refuses_a_stale_plan(void **state)
{
    struct fixture *f = *state;
    struct catalog_map *m = catfix_load(f);
    struct shardmap_node extra = {.name = "dbplan", .weight = 1};
    struct shardmap_host_conf h = {
        .name = "dbplan", .addr = "127.0.0.1", .port = 9, .weight = 1};
    struct shardmap_plan plan;
    uint64_t v = catfix_version(f);
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
    assert_true(catfix_version(f) > v);
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
    snprintf(want, sizeof(want), "version %" PRIu64 " ", catfix_version(f));
    assert_non_null(strstr(sql_last_error(), want));

    /* Put the map back as it was for the tests after this one. */
    flip(f, other, other_host(m->map, other),
         m->map->nodes[m->map->node_of[other]].name);
    flip(f, moved, "dbplan", plan.target->nodes[plan.moves[0].from].name);
    assert_int_equal(catalog_host_remove_empty(&f->cat, "dbplan", &added), 0);
    assert_int_equal(added, 1);
    shardmap_plan_deinit(&plan);
    catfix_unload(m);
}

/*
 * The moves between two hosts that hold (or are to set up) a replication
 * connection: unfinished and before "verified", of another shard, in that
 * direction. The lock around the check and the insert is one for all.
 */
static void test_moves_between_two_hosts(void **state)
{
    struct fixture *f = *state;
    struct catalog_move mv = {.shard = 10, .pause_ms = -1, .verify_diffs = -1};
    struct catalog_move got;
    const char *dst;
    char src[SHARDMAP_NAME_MAX];

    assert_int_equal(catalog_shard_host(&f->cat, 10, src), 0);
    dst = strcmp(src, f->conf.hosts[0].name) ? f->conf.hosts[0].name
                                             : f->conf.hosts[1].name;
    snprintf(mv.src, sizeof(mv.src), "%s", src);
    snprintf(mv.dst, sizeof(mv.dst), "%s", dst);
    assert_int_equal(catalog_move_between(&f->cat, src, dst, 11, &got), 0);
    assert_int_equal(catalog_move_create(&f->cat, &mv), 0);
    const char *const phases[] = {"prepare",  "copy",    "copied",
                                  "catchup",  "cutover", "switched",
                                  "verified", "cleanup", "done"};
    for (size_t i = 0; i < sizeof(phases) / sizeof(phases[0]); i++) {
        int busy = i < 6; /* before "verified" */
        snprintf(mv.phase, sizeof(mv.phase), "%s", phases[i]);
        assert_int_equal(catalog_move_save(&f->cat, &mv, 0), 0);
        assert_int_equal(catalog_move_between(&f->cat, src, dst, 11, &got), busy);
        if (busy) {
            assert_int_equal(got.id, mv.id);
            assert_int_equal(got.shard, 10);
            assert_string_equal(got.phase, phases[i]);
        }
        /* Its own move, and the other direction, are not in the way. */
        assert_int_equal(catalog_move_between(&f->cat, src, dst, 10, &got), 0);
        assert_int_equal(catalog_move_between(&f->cat, dst, src, 11, &got), 0);
    }
    assert_int_equal(catalog_shard_set_state(&f->cat, 10, SHARDMAP_STATE_ACTIVE), 0);

    /* The lock: held by the session that took it, until it lets go. */
    static const char used[] = "SELECT IS_USED_LOCK('" PREFIX "_move_create') IS NOT "
                               "NULL";
    assert_int_equal(itest_scalar(f->peek, used), 0);
    assert_int_equal(catalog_lock_move_create(&f->cat, 1), 0);
    assert_int_equal(itest_scalar(f->peek, used), 1);
    assert_int_equal(catalog_lock_move_create(&f->cat, 0), 0);
    assert_int_equal(itest_scalar(f->peek, used), 0);
}

/*
 * The copy a finished move kept counts while it is there and is not the live
 * one: a later move into its host replaced it.
 */
static void test_kept_source_is_a_copy_still_there(void **state)
{
    struct fixture *f = *state;
    char home[SHARDMAP_NAME_MAX], host[SHARDMAP_NAME_MAX];
    const char *a, *b;

    assert_true(f->conf.nhost >= 3);
    assert_int_equal(catalog_shard_host(&f->cat, 12, home), 0);
    a = strcmp(home, f->conf.hosts[0].name) ? f->conf.hosts[0].name
                                            : f->conf.hosts[1].name;
    b = strcmp(home, f->conf.hosts[2].name) ? f->conf.hosts[2].name
                                            : f->conf.hosts[1].name;
    assert_int_equal(catalog_move_kept_source(&f->cat, 12, host), 0);
    flip_keep(f, 12, home, a, 1);
    assert_int_equal(catalog_move_kept_source(&f->cat, 12, host), 1);
    assert_string_equal(host, home);
    /* Back home without keeping: the copy kept there is the live one. */
    flip_keep(f, 12, a, home, 0);
    assert_int_equal(catalog_move_kept_source(&f->cat, 12, host), 0);
    /* Kept on home, then on a; back to a: home's copy is the one left. */
    flip_keep(f, 12, home, a, 1);
    flip_keep(f, 12, a, b, 1);
    assert_int_equal(catalog_move_kept_source(&f->cat, 12, host), 1);
    assert_string_equal(host, a);
    flip_keep(f, 12, b, a, 0);
    assert_int_equal(catalog_move_kept_source(&f->cat, 12, host), 1);
    assert_string_equal(host, home);
    flip(f, 12, a, home);
    assert_int_equal(catalog_move_kept_source(&f->cat, 12, host), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_install_is_idempotent),
        cmocka_unit_test(test_install_makes_team_names_unique),
        cmocka_unit_test(test_failed_create_rolls_back),
        cmocka_unit_test(test_map_create_then_load),
        cmocka_unit_test(test_load_refuses_another_shard_count),
        cmocka_unit_test(test_host_add_and_remove_bump_the_version),
        cmocka_unit_test(test_shard_host_and_states),
        cmocka_unit_test(test_move_from_create_to_flip),
        cmocka_unit_test(test_moves_list_newest_first),
        cmocka_unit_test(test_lock_shard_is_per_session),
        cmocka_unit_test(test_check_plan_refuses_a_stale_plan),
        cmocka_unit_test(test_moves_between_two_hosts),
        cmocka_unit_test(test_kept_source_is_a_copy_still_there),
    };
    return cmocka_run_group_tests_name("catalog_integration", tests, setup,
                                       catfix_teardown);
}
