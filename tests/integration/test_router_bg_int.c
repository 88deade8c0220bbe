/*
 * test_router_bg_int.c: how many hosts a background scatter asks at once,
 * timed on the test stack's servers' own clocks: router_set_background_hosts()
 * and the places of hosts that share a machine (router_set_background_cores(),
 * router_machine_enter()); background connections' server threads under
 * SCHED_IDLE (router_set_background_idle()).
 */
#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "router/router.h"
#include "tests/integration/itest.h"
#include "tests/integration/rtest.h"

/* When each host's statement of a scatter began and ended (unix s), per host. */
struct span {
    double from, to;
};

/*
 * A background scatter (mode: router_background()) of about 20 ms a shard,
 * timed by the servers themselves: NOW(6) is when a host's statement began,
 * the last part's SYSDATE(6) when it had done its shards. Returns the hosts'
 * spans.
 */
static uint32_t timed_scatter(struct router *r, uint32_t width, uint32_t cores_pct,
                              int mode, struct span *sp, uint32_t max)
{
    const struct shardmap *map = router_map(r);
    struct sql_rows rows = {0};
    uint8_t seen[NSHARD] = {0};

    assert_true(map->nnode <= max);
    for (uint32_t i = 0; i < map->nnode; i++)
        sp[i] = (struct span){0, 0};
    router_set_background_hosts(r, width);
    router_set_background_cores(r, cores_pct);
    router_background(mode);
    assert_int_equal(router_scatter(r, &rows,
                                    "SELECT %N, UNIX_TIMESTAMP(NOW(6)), "
                                    "UNIX_TIMESTAMP(SYSDATE(6)) FROM (SELECT "
                                    "SLEEP(0.02) AS z) AS z"),
                     0);
    router_background(0);
    router_set_background_hosts(r, 0);
    router_set_background_cores(r, 0);
    assert_int_equal(rows.nrow, NSHARD);
    for (uint32_t i = 0; i < rows.nrow; i++) {
        uint32_t s = (uint32_t)strtoul(sql_cell(&rows, i, 0), NULL, 10);
        double from = strtod(sql_cell(&rows, i, 1), NULL),
               to = strtod(sql_cell(&rows, i, 2), NULL);
        struct span *h = &sp[map->node_of[s]];

        assert_true(s < NSHARD);
        assert_int_equal(seen[s], 0);
        seen[s] = 1;
        if (h->from == 0 || from < h->from)
            h->from = from;
        if (to > h->to)
            h->to = to;
    }
    sql_rows_free(&rows);
    return map->nnode;
}

/* Hosts whose statements were running at the moment t. */
static uint32_t running_at(const struct span *sp, uint32_t n, double t)
{
    uint32_t k = 0;

    for (uint32_t i = 0; i < n; i++)
        k += sp[i].from <= t && t < sp[i].to;
    return k;
}

/* The most hosts whose statements ran at once. */
static uint32_t most_at_once(const struct span *sp, uint32_t n)
{
    uint32_t most = 0;

    for (uint32_t i = 0; i < n; i++) {
        uint32_t k = running_at(sp, n, sp[i].from);
        most = k > most ? k : most;
    }
    return most;
}

/*
 * router_set_background_hosts(): a background thread's scatter asks at most
 * that many hosts at once, and still gets every shard's rows; 0 asks them
 * all at once. (The machine's limit off: the stack's hosts share one.)
 */
static void test_background_scatter_hosts_at_once(void **state)
{
    struct fixture *f = *state;
    struct span sp[8];
    uint32_t n, most;

    for (uint32_t width = 0; width <= 2; width++) {
        n = timed_scatter(f->router, width, 0, ROUTER_BACKGROUND, sp, 8);
        assert_true(n >= 3);
        most = most_at_once(sp, n);
        print_message("background_hosts %u: at most %u of %u hosts at once\n", width,
                      most, n);
        assert_int_equal(most, width == 0 ? n : width);
    }
}

static int stop_now(void *arg)
{
    return *(int *)arg;
}

/*
 * router_set_background_cores(): the stack's hosts all run on this machine
 * (one @@hostname), so their background statements share its places: at
 * 400 % (four places a core) all at once, at one core's worth one host's
 * statement at a time (a thread in ROUTER_BACKGROUND_PER_CORE mode one a
 * core), with 0 no limit; below one core one at a time with
 * the place closed after each for the rest of that share of the time. The
 * machine is named by the servers, with every host on it; a waiter that is
 * told to stop gets -ECANCELED.
 */
static void test_background_hosts_of_one_machine_take_turns(void **state)
{
    struct fixture *f = *state;
    char desc[512], self[256] = "";
    struct span sp[8];
    uint32_t n, most;
    int held, again, stop = 1;

    /* Four places a core: all at once; and the machine is learned. */
    n = timed_scatter(f->router, 0, 400, ROUTER_BACKGROUND, sp, 8);
    assert_true(n >= 3);
    assert_int_equal(most_at_once(sp, n), n);
    router_machines_describe(f->router, desc, sizeof(desc));
    print_message("machines: %s\n", desc);
    assert_int_equal(gethostname(self, sizeof(self) - 1), 0);
    assert_true(strncmp(desc, self, strlen(self)) == 0 && desc[strlen(self)] == ':');
    assert_null(strchr(desc, ';')); /* one machine */
    for (uint32_t h = 0; h < router_map(f->router)->nnode; h++) {
        char word[80];
        snprintf(word, sizeof(word), " %s", router_map(f->router)->nodes[h].name);
        assert_non_null(strstr(desc, word));
    }
    unsigned ncpu = (unsigned)strtoul(desc + strlen(self) + 2, NULL, 10);
    assert_true(ncpu >= 1 && ncpu <= 100);
    /* One core's worth, or a little more: one place. */
    const uint32_t one = (100 + ncpu - 1) / ncpu, pcts[] = {one, 0};

    for (size_t i = 0; i < sizeof(pcts) / sizeof(pcts[0]); i++) {
        n = timed_scatter(f->router, 0, pcts[i], ROUTER_BACKGROUND, sp, 8);
        most = most_at_once(sp, n);
        print_message("background_cores_pct %u: at most %u of %u hosts at once\n",
                      pcts[i], most, n);
        assert_int_equal(most, pcts[i] == one ? 1 : n);
    }
    /* A thread whose scatters take a place a core: as many hosts at once as cores. */
    n = timed_scatter(f->router, 0, one, ROUTER_BACKGROUND_PER_CORE, sp, 8);
    most = most_at_once(sp, n);
    print_message(
        "background_cores_pct %u, a place a core: at most %u of %u hosts at once\n",
        one, most, n);
    assert_int_equal(most, ncpu < n ? ncpu : n);

    /*
     * Below one core (half of one): one host at a time, and after each the
     * place stays closed about as long as its statement took.
     */
    uint32_t pct = 50 / ncpu > 0 ? 50 / ncpu : 1, share = ncpu * pct;
    assert_true(share > 0 && share < 100);
    n = timed_scatter(f->router, 0, pct, ROUTER_BACKGROUND, sp, 8);
    assert_int_equal(most_at_once(sp, n), 1);
    for (uint32_t i = 0; i < n; i++) {
        /* The statement that ran before sp[i]: the latest to end before it began. */
        const struct span *prev = NULL;
        for (uint32_t j = 0; j < n; j++)
            if (j != i && sp[j].to <= sp[i].from &&
                (prev == NULL || sp[j].to > prev->to))
                prev = &sp[j];
        if (prev == NULL)
            continue;
        double took = prev->to - prev->from, gap = sp[i].from - prev->to,
               want = took * (100 - share) / share;
        print_message(
            "below a core (%u %%): %.1f ms, then closed %.1f ms (want %.1f)\n", share,
            took * 1e3, gap * 1e3, want * 1e3);
        assert_true(gap >= 0.9 * want - 0.002);
    }
    router_set_background_cores(f->router, pct);
    router_machines_describe(f->router, desc, sizeof(desc));
    print_message("machines: %s\n", desc);
    assert_non_null(strstr(desc, "1 at once for "));

    /* One place: the second waits, and leaves when told to stop. */
    router_set_background_cores(f->router, one);
    assert_int_equal(router_machine_enter(f->router, 0, NULL, NULL, &held), 0);
    assert_true(held >= 0);
    assert_int_equal(
        router_machine_enter(f->router, NSHARD - 1, stop_now, &stop, &again),
        -ECANCELED);
    router_machine_leave(f->router, held);
    assert_int_equal(
        router_machine_enter(f->router, NSHARD - 1, stop_now, &stop, &again), 0);
    assert_true(again >= 0);
    router_machine_leave(f->router, again);

    /*
     * A place held over the stall limit (1 s: its statement waits for a
     * lock or a stopped server, not a CPU) no longer counts: the next one
     * gets a place after about that long instead of waiting for it.
     */
    assert_int_equal(router_machine_enter(f->router, 0, NULL, NULL, &held), 0);
    int64_t t0 = itest_now_ms();
    assert_int_equal(router_machine_enter(f->router, NSHARD - 1, NULL, NULL, &again),
                     0);
    int64_t waited = itest_now_ms() - t0;
    print_message("a place held past the stall limit: the next waited %" PRId64 " ms\n",
                  waited);
    assert_true(waited >= 900 && waited < 2000);
    assert_int_not_equal(again, held);
    router_machine_leave(f->router, again);
    router_machine_leave(f->router, held);
    router_machines_describe(f->router, desc, sizeof(desc));
    print_message("machines: %s\n", desc);
    assert_non_null(strstr(desc, ", 1 held over 1000 ms)"));

    /* No limit: nobody waits, and there is nothing to give back. */
    router_set_background_cores(f->router, 0);
    assert_int_equal(router_machine_enter(f->router, 0, NULL, NULL, &held), 0);
    assert_int_equal(held, -1);
    router_set_background_cores(f->router, 0);
}

/*
 * Whether this machine has a cgroup v1 hierarchy with the cpu controller
 * (a "cgroup" line of /proc/self/mountinfo whose super options name cpu).
 */
static int have_cpu_v1(void)
{
    FILE *f = fopen("/proc/self/mountinfo", "r");
    char line[1024];
    int found = 0;

    assert_non_null(f);
    while (!found && fgets(line, sizeof(line), f) != NULL) {
        char *dash = strstr(line, " - cgroup ");
        char *opts = dash ? strrchr(dash, ' ') : NULL;

        if (opts != NULL) {
            char *save = NULL;
            opts[strcspn(opts, "\n")] = '\0';
            for (char *o = strtok_r(opts + 1, ",", &save); o != NULL && !found;
                 o = strtok_r(NULL, ",", &save))
                found = strcmp(o, "cpu") == 0;
        }
    }
    fclose(f);
    return found;
}

/* The cpu cgroup of thread tid ("/..."), into out ("" when none). */
static void thread_cpu_group(long tid, char *out, size_t size)
{
    char path[64], line[512];
    FILE *f;

    out[0] = '\0';
    snprintf(path, sizeof(path), "/proc/%ld/cgroup", tid);
    assert_non_null(f = fopen(path, "r"));
    while (fgets(line, sizeof(line), f) != NULL) {
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (c2 == NULL)
            continue;
        *c2 = '\0';
        if (strcmp(c1 + 1, "cpu") == 0 || strncmp(c1 + 1, "cpu,", 4) == 0 ||
            strstr(c1 + 1, ",cpu,") != NULL) {
            c2[1 + strcspn(c2 + 1, "\n")] = '\0';
            snprintf(out, size, "%s", c2 + 1);
        }
    }
    fclose(f);
}

static char last_group[512]; /* thread_policy()'s thread's cpu cgroup */

/*
 * The policy of the server thread of the connection a statement on shard 0
 * takes; its cpu cgroup into last_group.
 */
static int thread_policy(struct router *r, int mode)
{
    struct sql_rows rows = {0};
    int policy;

    router_background(mode);
    assert_int_equal(
        router_exec(r, 0, &rows,
                    "SELECT TID FROM information_schema.PROCESSLIST WHERE ID = "
                    "CONNECTION_ID()"),
        0);
    router_background(0);
    assert_int_equal(rows.nrow, 1);
    policy = sched_getscheduler((pid_t)strtol(sql_cell(&rows, 0, 0), NULL, 10));
    thread_cpu_group(strtol(sql_cell(&rows, 0, 0), NULL, 10), last_group,
                     sizeof(last_group));
    sql_rows_free(&rows);
    assert_true(policy >= 0);
    return policy;
}

/* Shard 0's host's stats in r. */
static struct router_host_stats host_stats(struct router *r, const char *host)
{
    static struct router_host_stats st[64];
    uint32_t n = router_stats(r, st, 64);

    for (uint32_t i = 0; i < n; i++)
        if (!st[i].replica && strcmp(st[i].name, host) == 0)
            return st[i];
    fail_msg("no stats for host %s", host);
    return st[0];
}

/*
 * router_set_background_idle(): the stack's hosts run on this machine as
 * this user, with thread_cache_size 0 (devstack), so a new background
 * connection's server thread goes under SCHED_IDLE and a request
 * connection's does not; off, neither does. With the host's thread cache
 * on, a thread could outlive its connection: nothing is lowered, and the
 * stats say why.
 */
static void test_background_threads_idle_only_where_safe(void **state)
{
    struct fixture *f = *state;
    const struct shardmap *map = router_map(f->router);
    const char *host = map->nodes[map->node_of[0]].name;
    MYSQL *m = itest_mysql(&f->conf, host);
    struct router *r;
    struct router_host_stats st;

    assert_int_equal(itest_scalar(m, "SELECT @@thread_cache_size"), 0);

    assert_int_equal(router_create(&f->conf, &r), 0);
    router_set_background_idle(r, 1);
    assert_int_equal(thread_policy(r, ROUTER_BACKGROUND), SCHED_IDLE);
    /* And in the idle cgroup, where a thread can be moved alone (cgroup v1). */
    if (have_cpu_v1()) {
        print_message("background thread's cpu cgroup: %s\n", last_group);
        assert_non_null(strstr(last_group, "/betcity-background"));
    } else {
        assert_null(strstr(last_group, "betcity-background"));
    }
    assert_int_equal(thread_policy(r, 0), SCHED_OTHER);
    assert_null(strstr(last_group, "betcity-background"));
    st = host_stats(r, host);
    assert_int_equal(st.bg_lowered, 1);
    assert_string_equal(st.lower_why, "");
    if (have_cpu_v1()) {
        assert_int_equal(st.bg_grouped, 1);
        assert_string_equal(st.group_why, "");
    } else {
        assert_int_equal(st.bg_grouped, 0);
        assert_non_null(strstr(st.group_why, "no cgroup v1 cpu hierarchy"));
    }
    router_destroy(r);

    assert_int_equal(router_create(&f->conf, &r), 0);
    assert_int_equal(thread_policy(r, ROUTER_BACKGROUND), SCHED_OTHER);
    assert_null(strstr(last_group, "betcity-background"));
    assert_int_equal(host_stats(r, host).bg_lowered, 0);
    assert_int_equal(host_stats(r, host).bg_grouped, 0);
    router_destroy(r);

    assert_int_equal(mysql_query(m, "SET GLOBAL thread_cache_size = 8"), 0);
    assert_int_equal(router_create(&f->conf, &r), 0);
    router_set_background_idle(r, 1);
    assert_int_equal(thread_policy(r, ROUTER_BACKGROUND), SCHED_OTHER);
    st = host_stats(r, host);
    assert_int_equal(st.bg_lowered, 0);
    print_message("thread cache on: %s\n", st.lower_why);
    assert_non_null(strstr(st.lower_why, "thread_cache_size is 8, not 0"));
    router_destroy(r);
    assert_int_equal(mysql_query(m, "SET GLOBAL thread_cache_size = 0"), 0);
    mysql_close(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_background_scatter_hosts_at_once),
        cmocka_unit_test(test_background_hosts_of_one_machine_take_turns),
        cmocka_unit_test(test_background_threads_idle_only_where_safe),
    };
    return cmocka_run_group_tests_name("router_background_integration", tests,
                                       rtest_setup, rtest_teardown);
}
