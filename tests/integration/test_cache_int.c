/*
 * test_cache_int.c: the read-through cache against the stack's real
 * memcached servers: fills, the lease against a racing invalidation, a herd
 * on one cold key, a stopped server (breaker), and libmemcached's own memcat
 * finding what the cache stored; what the near-cache keeps of a fill; the
 * event loops' non-blocking marks.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include <libmemcached/memcached.h>

#include "cache/cache.h"
#include "tests/integration/itest.h"

struct fixture {
    struct shardmap_conf conf;
    struct cache *cache;
    char prefix[64];
};

struct filler {
    const char *value;
    useconds_t delay_us;
    atomic_int calls;
};

static int fill(void *arg, char **value, size_t *len)
{
    struct filler *f = arg;

    atomic_fetch_add(&f->calls, 1);
    if (f->delay_us)
        usleep(f->delay_us);
    *value = strdup(f->value);
    *len = strlen(f->value);
    return 0;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    itest_conf(&f->conf);
    assert_true(f->conf.nmemcached >= 2);
    assert_int_equal(cache_create(&f->conf, 100, &f->cache), 0);
    snprintf(f->prefix, sizeof(f->prefix), "bc:test:%d:%" PRId64, (int)getpid(),
             itest_now_ms());
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    cache_destroy(f->cache);
    shardmap_conf_deinit(&f->conf);
    free(f);
    return 0;
}

static char *get(struct cache *c, const char *key, struct filler *fl)
{
    char *v = NULL;
    size_t len;

    assert_int_equal(cache_get(c, key, 0, 60, fill, fl, &v, &len), 0);
    assert_int_equal(len, strlen(v));
    return v;
}

static void test_read_through_fills_once(void **state)
{
    struct fixture *f = *state;
    struct filler fl = {.value = "{\"odds\":215}"};
    char key[128], *v;

    snprintf(key, sizeof(key), "%s:once", f->prefix);
    v = get(f->cache, key, &fl);
    assert_string_equal(v, "{\"odds\":215}");
    free(v);
    v = get(f->cache, key, &fl);
    assert_string_equal(v, "{\"odds\":215}");
    free(v);
    assert_int_equal(atomic_load(&fl.calls), 1);
    /* After a delete the next read fills again. */
    cache_delete(f->cache, key);
    free(get(f->cache, key, &fl));
    assert_int_equal(atomic_load(&fl.calls), 2);
}

struct slow_reader {
    struct cache *cache;
    const char *key;
    struct filler fl;
    int near;
    char *got;
};

static void *slow_main(void *arg)
{
    struct slow_reader *r = arg;
    size_t len;

    if (cache_get(r->cache, r->key, r->near, 60, fill, &r->fl, &r->got, &len) != 0)
        r->got = NULL;
    return NULL;
}

static void test_slow_fill_racing_invalidation_never_wins(void **state)
{
    struct fixture *f = *state;
    struct slow_reader r = {.cache = f->cache,
                            .fl = {.value = "old", .delay_us = 300000}};
    struct filler fresh = {.value = "new"};
    struct cache_stats before, after;
    char key[128], *v;
    pthread_t t;
    uint64_t races_before = 0, races_after = 0;

    snprintf(key, sizeof(key), "%s:race", f->prefix);
    r.key = key;
    cache_stats(f->cache, &before);
    assert_int_equal(pthread_create(&t, NULL, slow_main, &r), 0);
    usleep(100000); /* the reader holds the lease and is loading "old" */
    /* A writer commits "new" and invalidates. */
    cache_delete(f->cache, key);
    pthread_join(t, NULL);
    assert_non_null(r.got);
    assert_string_equal(r.got, "old"); /* its own read was concurrent: fine */
    free(r.got);
    /* But "old" was not stored: the next reader loads "new". */
    v = get(f->cache, key, &fresh);
    assert_string_equal(v, "new");
    free(v);
    assert_int_equal(atomic_load(&fresh.calls), 1);
    cache_stats(f->cache, &after);
    for (uint32_t i = 0; i < after.nserver; i++) {
        races_before += before.server[i].fill_races;
        races_after += after.server[i].fill_races;
    }
    assert_int_equal(races_after - races_before, 1);
}

/* 1 when key is in the near-cache with want; 0 when it is not there. */
static int near_has(struct cache *c, const char *key, const char *want)
{
    char *v = NULL;
    size_t len;
    int has;

    if (!cache_near(c, key, &v, &len))
        return 0;
    has = len == strlen(want) && memcmp(v, want, len) == 0;
    free(v);
    assert_true(has); /* never another value */
    return 1;
}

/*
 * A fill stored under its lease is kept near, as a hit is: the next read on
 * this process costs no memcached round trip. A fill that lost its lease to
 * an invalidation is not, and a delete drops the near copy.
 */
static void test_near_keeps_what_its_lease_stored(void **state)
{
    struct fixture *f = *state;
    struct filler fl = {.value = "{\"odds\":180}"};
    struct slow_reader r = {
        .cache = f->cache, .fl = {.value = "old", .delay_us = 300000}, .near = 1};
    struct cache_stats before, after;
    char key[128], raced[128], *v = NULL;
    size_t len;
    pthread_t t;

    snprintf(key, sizeof(key), "%s:nearfill", f->prefix);
    assert_int_equal(near_has(f->cache, key, ""), 0);
    assert_int_equal(cache_get(f->cache, key, 1, 60, fill, &fl, &v, &len), 0);
    assert_string_equal(v, "{\"odds\":180}");
    free(v);
    assert_int_equal(atomic_load(&fl.calls), 1);
    assert_int_equal(near_has(f->cache, key, "{\"odds\":180}"), 1);
    /* The next read is a near hit: no memcached hit, no fill. */
    cache_stats(f->cache, &before);
    assert_int_equal(cache_get(f->cache, key, 1, 60, fill, &fl, &v, &len), 0);
    free(v);
    cache_stats(f->cache, &after);
    assert_int_equal(after.near_hits - before.near_hits, 1);
    for (uint32_t i = 0; i < after.nserver; i++)
        assert_int_equal(after.server[i].hits, before.server[i].hits);
    assert_int_equal(atomic_load(&fl.calls), 1);
    /* A delete drops it. */
    cache_delete(f->cache, key);
    assert_int_equal(near_has(f->cache, key, ""), 0);

    /* A fill invalidated while it read: neither memcached nor near keep it. */
    snprintf(raced, sizeof(raced), "%s:nearrace", f->prefix);
    r.key = raced;
    assert_int_equal(pthread_create(&t, NULL, slow_main, &r), 0);
    usleep(100000);
    cache_delete(f->cache, raced);
    pthread_join(t, NULL);
    assert_non_null(r.got);
    assert_string_equal(r.got, "old");
    free(r.got);
    assert_int_equal(near_has(f->cache, raced, ""), 0);
    /* A fill without near (near = 0) is not kept near either. */
    fl.value = "plain";
    snprintf(raced, sizeof(raced), "%s:nearoff", f->prefix);
    free(get(f->cache, raced, &fl));
    assert_int_equal(near_has(f->cache, raced, ""), 0);
}

struct herd {
    struct cache *cache;
    const char *key;
    struct filler *fl;
    int ok;
};

static void *herd_main(void *arg)
{
    struct herd *h = arg;
    char *v = NULL;
    size_t len;

    h->ok = cache_get(h->cache, h->key, 0, 60, fill, h->fl, &v, &len) == 0 &&
            strcmp(v, "standings") == 0;
    free(v);
    return NULL;
}

/*
 * 500 threads ask for one cold key at once: one fills it, the others wait
 * for its lease. The cache's memcached timeout is 2 s here, not the
 * fixture's 100 ms: 500 threads started at once on a machine busy with
 * other tests can keep one memcached call over 100 ms, which opens the
 * breaker, and then every request fills for itself by design (what
 * test_stopped_server_costs_no_timeout_per_request checks), not the lease.
 */
static void test_herd_on_cold_key_costs_one_fill(void **state)
{
    enum { N = 500 };
    struct fixture *f = *state;
    struct filler fl = {.value = "standings", .delay_us = 100000};
    static struct herd h[N];
    static pthread_t t[N];
    struct cache_stats st;
    struct cache *c;
    char key[128];
    int ok = 0;

    assert_int_equal(cache_create(&f->conf, 2000, &c), 0);
    snprintf(key, sizeof(key), "%s:herd", f->prefix);
    for (int i = 0; i < N; i++) {
        h[i] = (struct herd){.cache = c, .key = key, .fl = &fl};
        assert_int_equal(pthread_create(&t[i], NULL, herd_main, &h[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        ok += h[i].ok;
    }
    cache_stats(c, &st);
    cache_destroy(c);
    for (uint32_t i = 0; i < st.nserver; i++)
        printf("herd: server %u: misses %" PRIu64 " fills %" PRIu64
               " lease_waits %" PRIu64 " lease_timeouts %" PRIu64 " errors %" PRIu64
               "\n",
               i, st.server[i].misses, st.server[i].fills, st.server[i].lease_waits,
               st.server[i].lease_timeouts, st.server[i].errors);
    assert_int_equal(ok, N);
    assert_int_equal(atomic_load(&fl.calls), 1);
}

/* Runs memccat on servers for key; 1 if it printed want. */
static int memccat_has(const char *servers, const char *key, const char *want)
{
    char cmd[1024], out[256];
    FILE *p;
    size_t n;

    snprintf(cmd, sizeof(cmd), "memccat --servers=%s '%s' 2>/dev/null", servers, key);
    p = popen(cmd, "r");
    assert_non_null(p);
    n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    pclose(p);
    return strncmp(out, want, strlen(want)) == 0;
}

/*
 * memccat (libmemcached-tools 1.1) takes servers and a hash but has no
 * distribution option (it always places keys modulo the server count). So it
 * is pointed at each server alone: every key the cache stored is found by
 * memccat on exactly the server that libmemcached's ketama placement names,
 * and on no other; and some keys are not where modulo placement would look,
 * which shows the cache really uses ketama.
 */
static void test_memcat_finds_what_the_cache_stored(void **state)
{
    struct fixture *f = *state;
    struct filler fl = {.value = "memcat-sees-this"};
    char all[700] = "", one[2][300], key[128];
    memcached_st *ketama = memcached_create(NULL);
    int not_modulo = 0;

    assert_non_null(ketama);
    memcached_behavior_set(ketama, MEMCACHED_BEHAVIOR_KETAMA, 1);
    for (uint32_t i = 0; i < 2; i++) {
        snprintf(one[i], sizeof(one[i]), "%s:%u", f->conf.memcached[i].addr,
                 f->conf.memcached[i].port);
        snprintf(all + strlen(all), sizeof(all) - strlen(all), "%s%s", i ? "," : "",
                 one[i]);
        memcached_server_add(ketama, f->conf.memcached[i].addr,
                             f->conf.memcached[i].port);
    }
    for (int k = 0; k < 16; k++) {
        memcached_return_t rc;
        const memcached_instance_st *owner;
        uint32_t at;

        snprintf(key, sizeof(key), "bc:test:memcat:%d", k);
        cache_delete(f->cache, key);
        free(get(f->cache, key, &fl));
        owner = memcached_server_by_key(ketama, key, strlen(key), &rc);
        assert_non_null(owner);
        at = memcached_server_port(owner) == f->conf.memcached[0].port ? 0 : 1;
        if (!memccat_has(one[at], key, fl.value))
            fail_msg("memccat does not find %s on %s", key, one[at]);
        if (memccat_has(one[1 - at], key, fl.value))
            fail_msg("%s is also on %s", key, one[1 - at]);
        not_modulo += !memccat_has(all, key, fl.value);
    }
    memcached_free(ketama);
    assert_true(not_modulo > 0);
}

static void test_stopped_server_costs_no_timeout_per_request(void **state)
{
    struct fixture *f = *state;
    struct filler fl = {.value = "from-db"};
    int pid = itest_pid("mc1");
    char key[128], *v;
    int64_t t0, worst = 0;
    int k, slow = 0;

    /* Find a key of mc1 (the first server): cache it, check it is a hit. */
    for (k = 0; k < 64; k++) {
        struct cache_stats st;
        snprintf(key, sizeof(key), "%s:mc1:%d", f->prefix, k);
        free(get(f->cache, key, &fl));
        cache_stats(f->cache, &st);
        uint64_t fills = st.server[0].fills;
        cache_delete(f->cache, key);
        free(get(f->cache, key, &fl));
        cache_stats(f->cache, &st);
        if (st.server[0].fills > fills)
            break;
    }
    assert_true(k < 64);
    /* SIGSTOP is asynchronous: wait until the server really stands still. */
    itest_sigstop(pid);
    /* One request pays one poll timeout; the breaker spares all the others. */
    for (int i = 0; i < 51; i++) {
        int64_t ms;
        t0 = itest_now_ms();
        v = get(f->cache, key, &fl);
        ms = itest_now_ms() - t0;
        assert_string_equal(v, "from-db");
        free(v);
        if (ms >= 50)
            slow++;
        if (ms > worst)
            worst = ms;
    }
    assert_int_equal(kill(pid, SIGCONT), 0);
    printf("stopped memcached: %d of 51 requests waited (worst %" PRId64 " ms)\n", slow,
           worst);
    assert_true(worst < 500);
    assert_true(slow <= 1);
    /* Back: after the breaker's second it is flushed and hits resume. */
    usleep(1100000);
    int calls = atomic_load(&fl.calls);
    free(get(f->cache, key, &fl));
    free(get(f->cache, key, &fl));
    assert_int_equal(atomic_load(&fl.calls), calls + 1);
}

/* ---- marks set from an event loop (cache_marker) ----------------------- */

struct got {
    int n, ok, eio;
};

static void on_mark(void *arg, void *tag, int status)
{
    struct got *g = arg;

    (void)tag;
    g->n++;
    if (status == 0)
        g->ok++;
    else if (status == -EIO)
        g->eio++;
}

/* Runs the marker as a loop would until want marks ended or max_ms passed. */
static void drive(struct cache_marker *mk, struct got *g, int want, int64_t max_ms)
{
    int64_t end = itest_now_ms() + max_ms;

    while (g->n < want && itest_now_ms() < end) {
        struct pollfd p = {.fd = cache_marker_fd(mk), .events = POLLIN};
        int64_t due = cache_marker_due_ms(mk) - itest_now_ms();
        (void)poll(&p, 1, due < 0 ? 0 : due > 50 ? 50 : (int)due);
        cache_marker_run(mk, on_mark, g);
    }
}

/*
 * A key that the cache puts on server i (ketama, as the cache's own client):
 * head, then the test's prefix and a number.
 */
static void key_on(struct fixture *f, uint32_t i, const char *head, char *key,
                   size_t size)
{
    memcached_st *m = memcached_create(NULL);

    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_KETAMA, 1);
    for (uint32_t s = 0; s < f->conf.nmemcached; s++)
        memcached_server_add(m, f->conf.memcached[s].addr, f->conf.memcached[s].port);
    for (int k = 0;; k++) {
        memcached_return_t rc;
        const memcached_instance_st *inst;
        snprintf(key, size, "%s%s:on%u:%d", head, f->prefix, i, k);
        inst = memcached_server_by_key(m, key, strlen(key), &rc);
        assert_non_null(inst);
        if (memcached_server_port(inst) == f->conf.memcached[i].port &&
            strcmp(memcached_server_name(inst), f->conf.memcached[i].addr) == 0)
            break;
        assert_true(k < 1000);
    }
    memcached_free(m);
}

/* A client of server i alone (as another process that uses it would be). */
static memcached_st *raw_client(struct fixture *f, uint32_t i)
{
    memcached_st *m = memcached_create(NULL);

    assert_non_null(m);
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_POLL_TIMEOUT, 1000);
    assert_int_equal(
        memcached_server_add(m, f->conf.memcached[i].addr, f->conf.memcached[i].port),
        MEMCACHED_SUCCESS);
    return m;
}

/* Whether raw has key (its value then into out). */
static int raw_has(memcached_st *raw, const char *key, char *out, size_t size)
{
    memcached_return_t rc;
    size_t len;
    uint32_t flags;
    char *v = memcached_get(raw, key, strlen(key), &len, &flags, &rc);

    if (v == NULL) {
        assert_int_equal(rc, MEMCACHED_NOTFOUND);
        return 0;
    }
    snprintf(out, size, "%.*s", (int)len, v);
    free(v);
    return 1;
}

/*
 * A delete that missed its server (sent while it was stopped: it times out
 * and the server's breaker opens) leaves whatever another process put there
 * since until this process flushes the server: once the breaker's second
 * is over, cache_maintain() does, with no request of this process using
 * that server; before it, nothing did.
 */
static void test_maintain_flushes_a_server_that_missed_deletes(void **state)
{
    struct fixture *f = *state;
    memcached_st *raw = raw_client(f, 0);
    int pid = itest_pid("mc1");
    struct cache_stats st;
    char key[128], got[64];

    key_on(f, 0, "", key, sizeof(key));
    itest_sigstop(pid);
    cache_delete(f->cache, key); /* times out */
    assert_int_equal(kill(pid, SIGCONT), 0);
    usleep(200000); /* the server has what it had queued done */
    assert_int_equal(memcached_set(raw, key, strlen(key), "old", 3, 60, 0),
                     MEMCACHED_SUCCESS);
    cache_stats(f->cache, &st);
    assert_int_equal(st.server[0].up, 0);
    usleep(1100000); /* the breaker's second */
    cache_stats(f->cache, &st);
    assert_int_equal(st.server[0].up, 0); /* closed, but not flushed yet */
    assert_true(raw_has(raw, key, got, sizeof(got)));
    assert_string_equal(got, "old");
    cache_maintain(f->cache);
    assert_false(raw_has(raw, key, got, sizeof(got)));
    cache_stats(f->cache, &st);
    assert_int_equal(st.server[0].up, 1);
    cache_maintain(f->cache); /* nothing to do: the next value stays */
    assert_int_equal(memcached_set(raw, key, strlen(key), "new", 3, 60, 0),
                     MEMCACHED_SUCCESS);
    cache_maintain(f->cache);
    assert_true(raw_has(raw, key, got, sizeof(got)));
    assert_string_equal(got, "new");
    memcached_free(raw);
}

/*
 * A generation whose memcached server is away is an odd one of the clock's
 * second; the one made again once the server is back (flushed, so lost)
 * is even. Read right through the moment it comes back, the two come from
 * one second: before, both were that second's, and keys stored while the
 * server was away (a change made then could not bump) came back with it.
 */
static void test_generation_lost_never_comes_back(void **state)
{
    struct fixture *f = *state;
    const char *head = "bc:v1:gen:";
    int pid = itest_pid("mc1");
    uint64_t g, before, away = 0, back = 0;
    struct cache_stats st;
    char key[128];
    int64_t end;

    key_on(f, 0, head, key, sizeof(key));
    before = cache_generation(f->cache, key + strlen(head), 0);
    cache_bump(f->cache, key + strlen(head));
    assert_true(cache_generation(f->cache, key + strlen(head), 0) > before);
    itest_sigstop(pid);
    (void)cache_generation(f->cache, key + strlen(head), 0); /* times out */
    assert_int_equal(kill(pid, SIGCONT), 0);
    for (end = itest_now_ms() + 3000; back == 0 && itest_now_ms() < end; usleep(200)) {
        cache_stats(f->cache, &st);
        int was_up = st.server[0].up;
        g = cache_generation(f->cache, key + strlen(head), 0);
        cache_stats(f->cache, &st);
        if (!st.server[0].up)
            away = g;
        else if (!was_up)
            back = g;
    }
    printf("generation while away %" PRIu64 ", made again %" PRIu64 "\n", away, back);
    assert_true(away != 0 && back != 0);
    assert_true(back != away); /* keys were stored under away */
    assert_true(back > before);
    assert_int_equal(away % 2, 1);
    assert_int_equal(back % 2, 0);
}

static void test_marker_sets_flags_without_blocking(void **state)
{
    struct fixture *f = *state;
    struct cache_marker *mk;
    struct got g = {0};
    char key[128];
    int64_t t0;

    assert_int_equal(cache_marker_create(f->cache, &mk), 0);
    /* Pipelined: 300 marks over both servers, none answered when started. */
    t0 = itest_now_ms();
    for (int i = 0; i < 300; i++) {
        snprintf(key, sizeof(key), "%s:rw:%d", f->prefix, i);
        assert_int_equal(cache_mark_start(mk, key, 5, NULL), 0);
    }
    assert_int_equal(g.n, 0);
    assert_true(cache_marker_due_ms(mk) < INT64_MAX);
    drive(mk, &g, 300, 2000);
    printf("300 marks ended in %" PRId64 " ms\n", itest_now_ms() - t0);
    assert_int_equal(g.n, 300);
    assert_int_equal(g.ok, 300);
    assert_int_equal(cache_marker_due_ms(mk), INT64_MAX);
    /* The blocking calls find each flag where the marker set it. */
    for (int i = 0; i < 300; i++) {
        snprintf(key, sizeof(key), "%s:rw:%d", f->prefix, i);
        assert_int_equal(cache_marked(f->cache, key), 1);
    }
    snprintf(key, sizeof(key), "%s:rw:never", f->prefix);
    assert_int_equal(cache_marked(f->cache, key), 0);
    /* The flag lives its ttl (memcached's clock: ttl - 1 to ttl seconds). */
    snprintf(key, sizeof(key), "%s:rw:short", f->prefix);
    assert_int_equal(cache_mark_start(mk, key, 1, NULL), 0);
    drive(mk, &g, 301, 2000);
    assert_int_equal(g.ok, 301);
    usleep(2100000);
    assert_int_equal(cache_marked(f->cache, key), 0);
    /* A key longer than memcached takes is refused, not sent. */
    char longkey[CACHE_KEY_MAX + 16];
    memset(longkey, 'k', sizeof(longkey) - 1);
    longkey[sizeof(longkey) - 1] = '\0';
    assert_int_equal(cache_mark_start(mk, longkey, 5, NULL), -EIO);
    cache_marker_destroy(mk);
}

static void test_marker_on_stopped_server_ends_in_its_timeout(void **state)
{
    struct fixture *f = *state;
    struct cache_marker *mk;
    struct cache_stats st;
    struct got g = {0};
    int pid = itest_pid("mc1");
    char key[128], other[128];
    int64_t t0, ms;

    key_on(f, 0, "", key, sizeof(key));
    key_on(f, 1, "", other, sizeof(other));
    assert_int_equal(cache_marker_create(f->cache, &mk), 0);
    assert_int_equal(cache_mark_start(mk, key, 5, NULL), 0); /* connected */
    drive(mk, &g, 1, 2000);
    assert_int_equal(g.ok, 1);
    itest_sigstop(pid);
    /* Each mark ends: the stalled server's within its timeout, the other's at once. */
    t0 = itest_now_ms();
    assert_int_equal(cache_mark_start(mk, key, 5, NULL), 0);
    assert_int_equal(cache_mark_start(mk, key, 5, NULL), 0);
    assert_int_equal(cache_mark_start(mk, other, 5, NULL), 0);
    drive(mk, &g, 4, 2000);
    ms = itest_now_ms() - t0;
    printf("stopped memcached: its marks ended in %" PRId64 " ms\n", ms);
    assert_int_equal(g.n, 4);
    assert_int_equal(g.ok, 2);
    assert_int_equal(g.eio, 2);
    assert_true(ms >= 90 && ms < 600);
    /* Its breaker is open for every thread: the next mark is refused at once. */
    cache_stats(f->cache, &st);
    assert_int_equal(st.server[0].up, 0);
    assert_int_equal(cache_mark_start(mk, key, 5, NULL), -EIO);
    assert_int_equal(cache_marked(f->cache, key), -EIO);
    assert_int_equal(kill(pid, SIGCONT), 0);
    /* Back after the breaker's second (a blocking call probes and flushes it). */
    usleep(1100000);
    assert_int_equal(cache_marked(f->cache, key), 0);
    assert_int_equal(cache_mark_start(mk, key, 5, NULL), 0);
    drive(mk, &g, 5, 2000);
    assert_int_equal(g.ok, 3);
    assert_int_equal(cache_marked(f->cache, key), 1);
    cache_marker_destroy(mk);
}

static void test_marker_on_refused_port_fails_fast(void **state)
{
    struct fixture *f = *state;
    struct shardmap_endpoint ep = f->conf.memcached[0];
    struct shardmap_endpoint *saved = f->conf.memcached;
    uint32_t nsaved = f->conf.nmemcached;
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t len = sizeof(sa);
    struct cache *c;
    struct cache_marker *mk;
    struct got g = {0};
    char key[128];
    int fd, rc;
    int64_t t0;

    /* A port nobody listens on: bound once, then closed. */
    fd = socket(AF_INET, SOCK_STREAM, 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    snprintf(ep.addr, sizeof(ep.addr), "127.0.0.1");
    ep.port = ntohs(sa.sin_port);
    f->conf.memcached = &ep;
    f->conf.nmemcached = 1;
    rc = cache_create(&f->conf, 100, &c);
    f->conf.memcached = saved;
    f->conf.nmemcached = nsaved;
    assert_int_equal(rc, 0);
    assert_int_equal(cache_marker_create(c, &mk), 0);
    snprintf(key, sizeof(key), "%s:refused", f->prefix);
    t0 = itest_now_ms();
    rc = cache_mark_start(mk, key, 5, NULL);
    if (rc == 0)
        drive(mk, &g, 1, 2000);
    assert_true(rc == -EIO || (g.n == 1 && g.eio == 1));
    assert_true(itest_now_ms() - t0 < 90); /* refused, not timed out */
    assert_int_equal(cache_mark_start(mk, key, 5, NULL), -EIO); /* breaker */
    cache_marker_destroy(mk);
    cache_destroy(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        /* A cache each: one test's open breaker never reaches the next. */
        cmocka_unit_test_setup_teardown(test_read_through_fills_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slow_fill_racing_invalidation_never_wins,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_near_keeps_what_its_lease_stored, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_herd_on_cold_key_costs_one_fill, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_memcat_finds_what_the_cache_stored, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_stopped_server_costs_no_timeout_per_request, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_maintain_flushes_a_server_that_missed_deletes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_generation_lost_never_comes_back, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_marker_sets_flags_without_blocking, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_marker_on_stopped_server_ends_in_its_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_marker_on_refused_port_fails_fast, setup,
                                        teardown),
    };
    return cmocka_run_group_tests_name("cache_integration", tests, NULL, NULL);
}
