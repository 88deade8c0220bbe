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

static void must_query(MYSQL *m, const char *sql)
{
    if (mysql_query(m, sql) != 0) {
        print_error("%s: %s\n", sql, mysql_error(m));
        fail();
    }
}

/*
 * A shard made before e-mails and Idempotency-Keys compared bytes (columns of
 * utf8mb4_unicode_ci, which fold case and accents) is brought to them by
 * init: afterwards "abc" and "ABC" are two keys, "e" and "é" two addresses.
 */
/* A connection to the host of shard 0, whose schema is put in schema. */
static MYSQL *shard0_host(const struct shardmap_conf *conf,
                          char schema[SHARDMAP_SCHEMA_MAX])
{
    MYSQL *m = NULL;
    char sql[256];

    snprintf(schema, SHARDMAP_SCHEMA_MAX, "%s_0000", conf->schema_prefix);
    for (uint32_t i = 0; i < conf->nhost && m == NULL; i++) {
        m = itest_mysql(conf, conf->hosts[i].name);
        snprintf(sql, sizeof(sql),
                 "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE "
                 "SCHEMA_NAME = '%s'",
                 schema);
        if (itest_scalar(m, sql) != 1) {
            mysql_close(m);
            m = NULL;
        }
    }
    assert_non_null(m);
    return m;
}

static void test_init_brings_old_shards_to_binary_keys(void **state)
{
    struct shardmap_conf conf;
    MYSQL *m;
    char sql[1024], schema[SHARDMAP_SCHEMA_MAX];
    (void)state;

    itest_conf(&conf);
    m = shard0_host(&conf, schema);
    snprintf(sql, sizeof(sql),
             "ALTER TABLE %s.idempotency MODIFY idem_key VARCHAR(64) CHARACTER SET "
             "utf8mb4 COLLATE utf8mb4_unicode_ci NOT NULL",
             schema);
    must_query(m, sql);
    snprintf(sql, sizeof(sql),
             "ALTER TABLE %s.users MODIFY email VARCHAR(254) CHARACTER SET utf8mb4 "
             "COLLATE utf8mb4_unicode_ci NOT NULL",
             schema);
    must_query(m, sql);
    snprintf(sql, sizeof(sql),
             "SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = "
             "'%s' AND ((TABLE_NAME = 'idempotency' AND COLUMN_NAME = 'idem_key' AND "
             "DATA_TYPE = 'varbinary') OR (TABLE_NAME = 'users' AND COLUMN_NAME = "
             "'email' AND COLLATION_NAME = 'utf8mb4_bin'))",
             schema);
    assert_int_equal(itest_scalar(m, sql), 0);

    assert_int_equal(itest_shardctl(out, sizeof(out), "init"), 0);
    assert_int_equal(itest_scalar(m, sql), 2);
    /* Run again, it changes nothing. */
    assert_int_equal(itest_shardctl(out, sizeof(out), "init"), 0);
    assert_int_equal(itest_scalar(m, sql), 2);

    /* The columns compare bytes now. */
    snprintf(sql, sizeof(sql),
             "INSERT INTO %s.idempotency (user_id, idem_key, request_hash, bet_id) "
             "VALUES (-7, 'abc', '', 1), (-7, 'ABC', '', 2), (-7, 'abc ', '', 3)",
             schema);
    must_query(m, sql);
    snprintf(sql, sizeof(sql),
             "SELECT COUNT(*) FROM %s.idempotency WHERE user_id = -7 AND idem_key = "
             "'abc'",
             schema);
    assert_int_equal(itest_scalar(m, sql), 1);
    snprintf(sql, sizeof(sql), "DELETE FROM %s.idempotency WHERE user_id = -7", schema);
    must_query(m, sql);
    snprintf(sql, sizeof(sql),
             "INSERT INTO %s.users (id, email, password_hash, display_name, "
             "company_id, balance, initial_balance) VALUES "
             "(-7, _utf8mb4'\xc3\xa9@x.test', '', 'e', -7, 0, 0), "
             "(-8, 'e@x.test', '', 'e', -7, 0, 0)",
             schema);
    must_query(m, sql);
    snprintf(sql, sizeof(sql),
             "SELECT COUNT(*) FROM %s.users WHERE email = _utf8mb4'\xc3\xa9@x.test'",
             schema);
    assert_int_equal(itest_scalar(m, sql), 1);
    snprintf(sql, sizeof(sql), "DELETE FROM %s.users WHERE id IN (-7, -8)", schema);
    must_query(m, sql);
    mysql_close(m);
    shardmap_conf_deinit(&conf);
}

/*
 * A shard made before 2026-12-04 indexes its bets by (match_id, status),
 * which every settled bet moved in; init gives it match_bets (match_id) in
 * its place, keeps its rows, and the second time changes nothing.
 */
static void test_init_brings_old_shards_to_match_bets(void **state)
{
    struct shardmap_conf conf;
    MYSQL *m;
    char sql[1024], schema[SHARDMAP_SCHEMA_MAX];
    int64_t rows;
    (void)state;

    itest_conf(&conf);
    m = shard0_host(&conf, schema);
    snprintf(sql, sizeof(sql),
             "ALTER TABLE %s.bets DROP KEY match_bets, ADD KEY match_open (match_id, "
             "status)",
             schema);
    must_query(m, sql);
    snprintf(sql, sizeof(sql), "SELECT COUNT(*) FROM %s.bets", schema);
    rows = itest_scalar(m, sql);
    /* "match_bets (match_id)" as one row of 1, "match_open (...)" as 10 a column. */
    snprintf(sql, sizeof(sql),
             "SELECT COALESCE(SUM(IF(INDEX_NAME = 'match_bets' AND COLUMN_NAME = "
             "'match_id', 1, 10)), 0) FROM information_schema.STATISTICS WHERE "
             "TABLE_SCHEMA = '%s' AND TABLE_NAME = 'bets' AND INDEX_NAME IN "
             "('match_bets', 'match_open')",
             schema);
    assert_int_equal(itest_scalar(m, sql), 20);

    assert_int_equal(itest_shardctl(out, sizeof(out), "init"), 0);
    assert_int_equal(itest_scalar(m, sql), 1);
    assert_int_equal(itest_shardctl(out, sizeof(out), "init"), 0);
    assert_int_equal(itest_scalar(m, sql), 1);
    snprintf(sql, sizeof(sql), "SELECT COUNT(*) FROM %s.bets", schema);
    assert_int_equal(itest_scalar(m, sql), rows);
    mysql_close(m);
    shardmap_conf_deinit(&conf);
}

/*
 * A shard made before 2026-12-07 has no users.open_payout (the balance
 * limit's count): init adds it as 0, keeps the users, and the second time
 * changes nothing; `bcadmin recount-open-payouts` then counts the bets open
 * before (docs/operations.md, "Upgrading to the balance limit").
 */
static void test_init_and_recount_give_old_shards_open_payout(void **state)
{
    struct shardmap_conf conf;
    MYSQL *m;
    char sql[1024], has[512], schema[SHARDMAP_SCHEMA_MAX], cmd[1024];
    const char *build = getenv("BUILD") ? getenv("BUILD") : "build";
    int64_t rows;
    (void)state;

    itest_conf(&conf);
    m = shard0_host(&conf, schema);
    /* A user with an open bet that can pay 25 (10 at 2.50). */
    snprintf(sql, sizeof(sql),
             "INSERT INTO %s.users (id, email, password_hash, display_name, "
             "company_id, balance, initial_balance, open_payout) VALUES (-9, "
             "'open-payout@x.test', '', 'o', -9, 990, 1000, 25)",
             schema);
    must_query(m, sql);
    snprintf(sql, sizeof(sql),
             "INSERT INTO %s.bets (id, user_id, match_id, pick, stake, odds, "
             "placed_at, payout, settled_at) VALUES (-9, -9, -9, 'home', 10, 250, "
             "NOW(3), 0, NOW(3))",
             schema);
    must_query(m, sql);
    snprintf(sql, sizeof(sql), "ALTER TABLE %s.users DROP COLUMN open_payout", schema);
    must_query(m, sql);
    snprintf(has, sizeof(has),
             "SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = "
             "'%s' AND TABLE_NAME = 'users' AND COLUMN_NAME = 'open_payout'",
             schema);
    assert_int_equal(itest_scalar(m, has), 0);
    snprintf(sql, sizeof(sql), "SELECT COUNT(*) FROM %s.users", schema);
    rows = itest_scalar(m, sql);

    assert_int_equal(itest_shardctl(out, sizeof(out), "init"), 0);
    assert_int_equal(itest_scalar(m, has), 1);
    assert_int_equal(itest_shardctl(out, sizeof(out), "init"), 0);
    assert_int_equal(itest_scalar(m, has), 1);
    assert_int_equal(itest_scalar(m, sql), rows);
    snprintf(sql, sizeof(sql), "SELECT open_payout FROM %s.users WHERE id = -9",
             schema);
    assert_int_equal(itest_scalar(m, sql), 0);

    snprintf(cmd, sizeof(cmd),
             "%s/bcadmin -c \"$BC_CLUSTER\" recount-open-payouts >/dev/null 2>&1",
             build);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(itest_scalar(m, sql), 25);
    snprintf(sql, sizeof(sql),
             "SELECT COUNT(*) FROM %s.users u LEFT JOIN (SELECT user_id, "
             "SUM(FLOOR(stake * odds / 100)) AS o FROM %s.bets WHERE status = 'open' "
             "GROUP BY user_id) b ON b.user_id = u.id WHERE u.open_payout <> "
             "COALESCE(b.o, 0)",
             schema, schema);
    assert_int_equal(itest_scalar(m, sql), 0);
    snprintf(sql, sizeof(sql), "DELETE FROM %s.bets WHERE id = -9", schema);
    must_query(m, sql);
    snprintf(sql, sizeof(sql), "DELETE FROM %s.users WHERE id = -9", schema);
    must_query(m, sql);
    mysql_close(m);
    shardmap_conf_deinit(&conf);
}

/* A copy of the stack's cluster file through sed script (into path, a mkstemp
 * template). */
static void edited_cluster(char *path, const char *script)
{
    char cmd[2048];
    int fd = mkstemp(path);

    assert_true(fd >= 0);
    close(fd);
    snprintf(cmd, sizeof(cmd), "sed '%s' \"$BC_CLUSTER\" > %s", script, path);
    assert_int_equal(system(cmd), 0);
}

static void test_init_refuses_another_shard_count(void **state)
{
    char path[] = "/tmp/bc-cluster-XXXXXX";
    (void)state;

    edited_cluster(path, "s/^  shards: 64$/  shards: 128/");
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
    /* The hosts, then their servers (a stack without replicas: the primaries). */
    assert_int_equal(up, 6);
    assert_non_null(strstr(out, "SERVER "));
    for (int i = 1; i <= 3; i++) {
        char line[64];
        snprintf(line, sizeof(line), "\ndb%d ", i);
        p = strstr(strstr(out, "SERVER "), line);
        assert_non_null(p);
        assert_non_null(strstr(p, " primary "));
    }

    assert_int_equal(itest_shardctl(out, sizeof(out), "status --json"), 0);
    p = out;
    up = 0;
    while ((p = strstr(p, "\"up\":true")) != NULL) {
        up++;
        p++;
    }
    assert_int_equal(up, 6); /* 3 hosts, 3 servers */
    assert_non_null(strstr(out, "\"role\":\"primary\",\"up\":true,\"writable\":true"));
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
        itest_shardctl(out, sizeof(out), "plan --remove-host nope -o %s", path), 2);
    assert_non_null(strstr(out, "no host nope in the shard map"));
}

/* The new host's weight: --weight, else the cluster config's, else 1. */
static void test_plan_add_host_weight(void **state)
{
    char path[] = "/tmp/bc-plan-XXXXXX", conf[] = "/tmp/bc-cluster-XXXXXX";
    const struct {
        const char *config, *flag;
        uint32_t weight;
    } cases[] = {
        {NULL, "", 1}, /* a host the config does not list */
        {NULL, "--weight 3", 3},
        {conf, "", 2}, /* the config lists db4 with weight 2 */
        {conf, "--weight 1", 1},
    };
    struct shardmap_plan plan;
    char *err = NULL;
    int fd = mkstemp(path);
    (void)state;

    assert_true(fd >= 0);
    close(fd);
    edited_cluster(
        conf, "/^memcached:/i\\\n"
              "  - {name: db4, addr: 127.0.0.1, port: 3999, user: bc_api, weight: 2}");
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (cases[i].config != NULL)
            assert_int_equal(
                itest_shardctl(out, sizeof(out),
                               "-c %s plan --add-host db4=127.0.0.1:3999 %s -o %s",
                               cases[i].config, cases[i].flag, path),
                0);
        else
            assert_int_equal(
                itest_shardctl(out, sizeof(out),
                               "plan --add-host db4=127.0.0.1:3999 %s -o %s",
                               cases[i].flag, path),
                0);
        assert_int_equal(shardmap_plan_load(path, &plan, &err), 0);
        assert_int_equal(plan.new_host.weight, cases[i].weight);
        assert_int_equal(plan.target->nodes[plan.moves[0].to].weight, cases[i].weight);
        shardmap_plan_deinit(&plan);
    }
    unlink(conf);
    unlink(path);
}

static void test_bad_config_names_file_and_line(void **state)
{
    char path[] = "/tmp/bc-bad-XXXXXX";
    (void)state;

    edited_cluster(path, "s/^  shards: 64$/  shardz: 64/");
    assert_int_equal(itest_shardctl(out, sizeof(out), "-c %s status", path), 1);
    assert_non_null(strstr(out, path));
    assert_non_null(strstr(out, ":4:"));
    unlink(path);
}

/* A global host that does not answer is a host down: exit 3, saying which. */
static void test_status_with_every_host_down_exits_3(void **state)
{
    char path[] = "/tmp/bc-down-XXXXXX";
    (void)state;

    /* Port 1 on loopback: nothing listens, the connect is refused at once. */
    edited_cluster(path, "s/^    port: [0-9]*$/    port: 1/");
    assert_int_equal(itest_shardctl(out, sizeof(out), "-c %s status", path), 3);
    assert_non_null(strstr(out, "no shard map in"));
    assert_non_null(strstr(out, "is down"));
    assert_non_null(strstr(out, "connecting: "));
    unlink(path);
}

/*
 * A host marked down says what marked it: a wrong password is no dead
 * server, and not exit 3 (a host down) but 1, for status, plan and move.
 */
static void test_a_wrong_password_is_named(void **state)
{
    char path[] = "/tmp/bc-pw-XXXXXX";
    const char *const cmds[] = {
        "status", "plan --add-host db4=127.0.0.1:3999 -o /dev/null", "move 3 db2"};
    (void)state;

    edited_cluster(path, "s/^    ops_password: .*$/    ops_password: \"wrong\"/");
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
        int rc = itest_shardctl(out, sizeof(out), "-c %s %s", path, cmds[i]);
        if (rc != 1 || strstr(out, "Access denied") == NULL)
            fail_msg("shardctl %s with a wrong ops_password: exit %d (want 1, with "
                     "the server's \"Access denied\"):\n%s",
                     cmds[i], rc, out);
    }
    unlink(path);
}

/*
 * plan without a map says why: a global host that does not answer is a host
 * down (exit 3), as for status; not an empty "no shard map: ".
 */
static void test_plan_with_the_global_host_down_exits_3(void **state)
{
    char path[] = "/tmp/bc-down-XXXXXX";
    (void)state;

    edited_cluster(path, "s/^    port: [0-9]*$/    port: 1/");
    assert_int_equal(itest_shardctl(out, sizeof(out),
                                    "-c %s plan --add-host db4=127.0.0.1:3999 -o "
                                    "/dev/null",
                                    path),
                     3);
    assert_non_null(strstr(out, "no shard map in"));
    assert_non_null(strstr(out, "is down"));
    assert_null(strstr(out, "no shard map: \n"));
    unlink(path);
}

/*
 * A config with another shard count is refused by plan, move, verify and
 * rebalance as by init, saying both counts, and changes nothing.
 */
static void test_another_shard_count_is_refused_by_every_command(void **state)
{
    char path[] = "/tmp/bc-cluster-XXXXXX", plan[] = "/tmp/bc-plan-XXXXXX";
    const char *const cmds[] = {"plan --add-host db4=127.0.0.1:3999 -o /dev/null",
                                "move 3 db1", "move 3 db2", "verify 3", "rebalance %s"};
    struct shardmap_conf conf;
    MYSQL *global;
    char sql[256], args[256];
    int64_t moves;
    int fd = mkstemp(plan);
    (void)state;

    assert_true(fd >= 0);
    close(fd);
    itest_conf(&conf);
    global = itest_mysql(&conf, conf.global_host);
    snprintf(sql, sizeof(sql), "SELECT COUNT(*) FROM %s_global.moves",
             conf.schema_prefix);
    moves = itest_scalar(global, sql);
    assert_int_equal(itest_shardctl(out, sizeof(out),
                                    "plan --add-host db4=127.0.0.1:3999 -o %s", plan),
                     0);
    edited_cluster(path, "s/^  shards: 64$/  shards: 128/");
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
        snprintf(args, sizeof(args), cmds[i], plan);
        assert_int_equal(itest_shardctl(out, sizeof(out), "-c %s %s", path, args), 1);
        if (strstr(out, "has 64 shards, the config says 128") == NULL) {
            print_error("shardctl %s: %s\n", args, out);
            fail();
        }
    }
    assert_int_equal(itest_scalar(global, sql), moves);
    snprintf(sql, sizeof(sql),
             "SELECT COUNT(*) FROM %s_global.hosts WHERE name = 'db4'",
             conf.schema_prefix);
    assert_int_equal(itest_scalar(global, sql), 0);
    mysql_close(global);
    shardmap_conf_deinit(&conf);
    unlink(path);
    unlink(plan);
}

/* The hint for an unfinished move offers --abort only before the map flip. */
static void test_status_hint_follows_the_phase(void **state)
{
    static const char *const phase[] = {"copy",     "catchup",  "cutover",
                                        "switched", "verified", "cleanup"};
    struct shardmap_conf conf;
    MYSQL *global;
    char sql[512], line[256];
    (void)state;

    itest_conf(&conf);
    global = itest_mysql(&conf, conf.global_host);
    /* Records only (shards 58..63 stay where they are); removed below. */
    for (uint32_t i = 0; i < 6; i++) {
        snprintf(sql, sizeof(sql),
                 "INSERT INTO %s_global.moves (shard, src_host, dst_host, phase, note) "
                 "VALUES (%u, 'db1', 'db2', '%s', 'itest')",
                 conf.schema_prefix, 58 + i, phase[i]);
        must_query(global, sql);
    }
    itest_shardctl(out, sizeof(out), "status");
    snprintf(sql, sizeof(sql), "DELETE FROM %s_global.moves WHERE note = 'itest'",
             conf.schema_prefix);
    must_query(global, sql);
    for (uint32_t i = 0; i < 6; i++) {
        snprintf(line, sizeof(line),
                 "shard %u db1 -> db2, phase %s (re-run shardctl move %u db2 to finish "
                 "it%s)\n",
                 58 + i, phase[i], 58 + i,
                 i < 3 ? ", or --abort"
                       : "; past the map flip, --abort no longer applies");
        if (strstr(out, line) == NULL) {
            print_error("no line \"%s\" in:\n%s\n", line, out);
            fail();
        }
    }
    mysql_close(global);
    shardmap_conf_deinit(&conf);
}

static void test_unknown_command_is_named(void **state)
{
    (void)state;
    assert_int_equal(itest_shardctl(out, sizeof(out), "bogus arg"), 2);
    assert_non_null(strstr(out, "shardctl: unknown command 'bogus'"));
    assert_null(strstr(out, "no operands"));
    assert_int_equal(itest_shardctl(out, sizeof(out), "status extra"), 2);
    assert_non_null(strstr(out, "shardctl status: usage: no operands"));
    /* A usage error whatever the config: checked before it is read. */
    assert_int_equal(itest_shardctl(out, sizeof(out), "-c /nonexistent/c.yaml bogus"),
                     2);
    assert_non_null(strstr(out, "shardctl: unknown command 'bogus'"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_creates_each_schema_on_exactly_its_host),
        cmocka_unit_test(test_init_twice_is_safe),
        cmocka_unit_test(test_init_brings_old_shards_to_binary_keys),
        cmocka_unit_test(test_init_brings_old_shards_to_match_bets),
        cmocka_unit_test(test_init_and_recount_give_old_shards_open_payout),
        cmocka_unit_test(test_init_refuses_another_shard_count),
        cmocka_unit_test(test_status_shows_healthy_hosts),
        cmocka_unit_test(test_status_with_every_host_down_exits_3),
        cmocka_unit_test(test_a_wrong_password_is_named),
        cmocka_unit_test(test_plan_add_host_writes_plan),
        cmocka_unit_test(test_plan_add_host_weight),
        cmocka_unit_test(test_bad_config_names_file_and_line),
        cmocka_unit_test(test_plan_with_the_global_host_down_exits_3),
        cmocka_unit_test(test_another_shard_count_is_refused_by_every_command),
        cmocka_unit_test(test_status_hint_follows_the_phase),
        cmocka_unit_test(test_unknown_command_is_named),
    };
    return cmocka_run_group_tests_name("shardctl_integration", tests, NULL, NULL);
}
