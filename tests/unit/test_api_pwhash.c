/*
 * test_api_pwhash.c: unit tests of the password hash queue (api/api_pwhash.c)
 * with real argon2id hashes (~25 ms each): a job of an address with few
 * places held runs before the queued jobs of an address holding many, and
 * one address's jobs keep their order; a known device's job gets a place
 * when the others are full and runs before them; a hash verifies against its password
 * and not another, and the password is wiped; the queue's depth and a drain
 * refuse reservations; an address whose logins failed runs after the
 * others and leaves them the last quarter of the places.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "api/api_int.h"

#define ADDR_A 0x0200007fu /* 127.0.0.2 in network order */
#define ADDR_B 0x0100007fu /* 127.0.0.1 */
#define NJOB 11

static struct api_pwhash *queue;
static pthread_mutex_t done_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t done_cond = PTHREAD_COND_INITIALIZER;
static struct api_pwhash_job *order[NJOB];
static int ndone;

/* On the hash thread: the job's place in the order of completion. */
static void on_done(struct api_pwhash_job *job)
{
    api_pwhash_release(queue, job->addr, job->place);
    pthread_mutex_lock(&done_lock);
    if (ndone < NJOB)
        order[ndone++] = job;
    pthread_cond_broadcast(&done_cond);
    pthread_mutex_unlock(&done_lock);
}

static void wait_done(int n)
{
    struct timespec end;

    clock_gettime(CLOCK_REALTIME, &end);
    end.tv_sec += 120; /* valgrind runs a hash in about a second */
    pthread_mutex_lock(&done_lock);
    while (ndone < n)
        if (pthread_cond_timedwait(&done_cond, &done_lock, &end) != 0)
            break;
    pthread_mutex_unlock(&done_lock);
    assert_int_equal(ndone, n);
}

/* Any number of jobs: their order of completion, at most 64. */
static struct api_pwhash_job *order_any[64];
static int ndone_any;

static void on_done_any(struct api_pwhash_job *job)
{
    api_pwhash_release(queue, job->addr, job->place);
    pthread_mutex_lock(&done_lock);
    if (ndone_any < 64)
        order_any[ndone_any++] = job;
    pthread_cond_broadcast(&done_cond);
    pthread_mutex_unlock(&done_lock);
}

/* Waits (at most 300 s) for n of them; copies their order; how many came. */
static int wait_any(struct api_pwhash_job **out, int n)
{
    struct timespec end;
    int got;

    clock_gettime(CLOCK_REALTIME, &end);
    end.tv_sec += 300;
    pthread_mutex_lock(&done_lock);
    while (ndone_any < n)
        if (pthread_cond_timedwait(&done_cond, &done_lock, &end) != 0)
            break;
    got = ndone_any;
    memcpy(out, order_any, (size_t)got * sizeof(*out));
    pthread_mutex_unlock(&done_lock);
    return got;
}

static void job_init(struct api_pwhash_job *job, enum api_pwhash_op op, uint32_t addr,
                     const char *password, const char *hash)
{
    memset(job, 0, sizeof(*job));
    job->op = op;
    job->addr = addr;
    job->done = on_done;
    snprintf(job->password, sizeof(job->password), "%s", password);
    if (hash != NULL)
        snprintf(job->hash, sizeof(job->hash), "%s", hash);
}

/*
 * Queues the NJOB jobs in order; returns how many had begun by the time
 * the last was queued: those done by then, and the one running.
 */
static int submit_all(struct api_pwhash_job *jobs)
{
    int begun;

    for (int i = 0; i < NJOB; i++)
        api_pwhash_submit(queue, &jobs[i]);
    pthread_mutex_lock(&done_lock);
    begun = ndone + 1;
    pthread_mutex_unlock(&done_lock);
    return begun;
}

static int setup(void **state)
{
    (void)state;
    ndone = 0;
    ndone_any = 0;
    memset(order, 0, sizeof(order));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    api_pwhash_destroy(queue);
    queue = NULL;
    return 0;
}

/*
 * One thread; address A queues ten jobs, then address B one. B's runs
 * right after the A jobs the thread had begun before it was queued (done
 * by the time it is queued, or the one running then), not behind A's
 * queue; A's run in the order queued.
 */
static void test_other_address_runs_next(void **state)
{
    struct api_pwhash_job jobs[NJOB];
    int b_at = -1, last_a = -1, begun;

    (void)state;
    assert_int_equal(api_pwhash_create(1, 16, 0, 16, 600000, 0, 0, &queue), 0);
    for (int i = 0; i < NJOB; i++) {
        uint32_t addr = i < NJOB - 1 ? ADDR_A : ADDR_B;
        job_init(&jobs[i], API_PWHASH_VERIFY, addr, "wrong", api_pwhash_dummy(queue));
        assert_int_equal(api_pwhash_reserve(queue, addr, 0), 0);
    }
    begun = submit_all(jobs);
    wait_done(NJOB);
    for (int i = 0; i < NJOB; i++) {
        assert_int_equal(order[i]->rc, -EACCES);
        if (order[i] == &jobs[NJOB - 1]) {
            b_at = i;
            continue;
        }
        int k = (int)(order[i] - jobs);
        assert_true(k > last_a); /* A's jobs in the order queued */
        last_a = k;
    }
    assert_in_range(b_at, 0, begun);
}

/*
 * One thread and a queue of ten places, all held by ten addresses' jobs
 * (a flood from many addresses); a known device's login still gets its
 * place and runs right after the job the thread had begun, before the nine
 * queued ahead of it.
 */
static void test_known_device_runs_first(void **state)
{
    struct api_pwhash_job jobs[NJOB];
    uint64_t inflight, done, refused, known;
    int known_at = -1, begun;

    (void)state;
    assert_int_equal(api_pwhash_create(1, NJOB - 1, 2, 1, 600000, 0, 0, &queue), 0);
    for (int i = 0; i < NJOB - 1; i++) {
        uint32_t addr = ADDR_A + ((uint32_t)i << 24);
        job_init(&jobs[i], API_PWHASH_VERIFY, addr, "wrong", api_pwhash_dummy(queue));
        assert_int_equal(api_pwhash_reserve(queue, addr, 0), 0);
    }
    assert_int_equal(api_pwhash_reserve(queue, ADDR_B, 0), -EAGAIN); /* full */
    job_init(&jobs[NJOB - 1], API_PWHASH_VERIFY, ADDR_B, "wrong",
             api_pwhash_dummy(queue));
    jobs[NJOB - 1].place = API_PWHASH_KNOWN;
    assert_int_equal(api_pwhash_reserve(queue, ADDR_B, 1), 1);
    begun = submit_all(jobs);
    wait_done(NJOB);
    for (int i = 0; i < NJOB; i++)
        if (order[i] == &jobs[NJOB - 1])
            known_at = i;
    assert_in_range(known_at, 0, begun);
    assert_int_equal(jobs[NJOB - 1].rc, -EACCES);
    api_pwhash_stats(queue, &inflight, &done, &refused, &known);
    assert_int_equal(done, NJOB);
    assert_int_equal(known, 1);
    assert_int_equal(refused, 1);
}

/* A hash verifies against its password, not another; passwords are wiped. */
static void test_hash_and_verify(void **state)
{
    static const char zero[sizeof(((struct api_pwhash_job *)0)->password)];
    struct api_pwhash_job h, good, bad;

    (void)state;
    assert_int_equal(api_pwhash_create(2, 8, 0, 8, 600000, 0, 0, &queue), 0);
    job_init(&h, API_PWHASH_HASH, ADDR_A, "correct horse", NULL);
    assert_int_equal(api_pwhash_reserve(queue, ADDR_A, 0), 0);
    api_pwhash_submit(queue, &h);
    wait_done(1);
    assert_int_equal(h.rc, 0);
    assert_memory_equal(h.password, zero, sizeof(zero));
    assert_int_equal(strncmp(h.hash, "$argon2id$", 10), 0);

    job_init(&good, API_PWHASH_VERIFY, ADDR_A, "correct horse", h.hash);
    job_init(&bad, API_PWHASH_VERIFY, ADDR_B, "correct horsf", h.hash);
    assert_int_equal(api_pwhash_reserve(queue, ADDR_A, 0), 0);
    assert_int_equal(api_pwhash_reserve(queue, ADDR_B, 0), 0);
    api_pwhash_submit(queue, &good);
    api_pwhash_submit(queue, &bad);
    wait_done(3);
    assert_int_equal(good.rc, 0);
    assert_int_equal(bad.rc, -EACCES);
    assert_memory_equal(good.password, zero, sizeof(zero));
    assert_memory_equal(bad.password, zero, sizeof(zero));
}

/* Beyond the queue's depth, and once drained, a reservation is refused. */
static void test_depth_and_drain_refuse(void **state)
{
    uint64_t inflight, done, refused, known;

    (void)state;
    assert_int_equal(api_pwhash_create(1, 2, 1, 2, 600000, 0, 0, &queue), 0);
    assert_int_equal(api_pwhash_reserve(queue, ADDR_A, 0), 0);
    assert_int_equal(api_pwhash_reserve(queue, ADDR_B, 0), 0);
    assert_int_equal(api_pwhash_reserve(queue, ADDR_B, 0), -EAGAIN);
    /* The one known place is apart from the full queue's, and only one. */
    assert_int_equal(api_pwhash_reserve(queue, ADDR_B, 1), 1);
    assert_int_equal(api_pwhash_reserve(queue, ADDR_A, 1), -EAGAIN);
    api_pwhash_stats(queue, &inflight, &done, &refused, &known);
    assert_int_equal(inflight, 3);
    assert_int_equal(refused, 2);
    /* Known places all held: a known device takes a place as others do. */
    api_pwhash_release(queue, ADDR_A, 0);
    assert_int_equal(api_pwhash_reserve(queue, ADDR_A, 1), 0);
    api_pwhash_release(queue, ADDR_A, 0);
    api_pwhash_release(queue, ADDR_B, 0);
    api_pwhash_release(queue, ADDR_B, 1);
    api_pwhash_drain(queue); /* nothing in flight: returns at once */
    assert_int_equal(api_pwhash_reserve(queue, ADDR_A, 0), -EAGAIN);
    assert_int_equal(api_pwhash_reserve(queue, ADDR_A, 1), -EAGAIN);
    api_pwhash_stats(queue, &inflight, &done, &refused, &known);
    assert_int_equal(inflight, 0);
    assert_int_equal(done, 0);
    assert_int_equal(refused, 4);
    assert_int_equal(known, 0);
}

/*
 * An address with two failed logins gets failing places: its jobs run
 * after every plain one, even where it holds fewer places (one against
 * three), and it takes none of the last quarter of the places, which stay
 * for the others. One failed login is not enough.
 */
static void test_failing_address_runs_last_and_leaves_room(void **state)
{
    struct api_pwhash_job jobs[5];
    const uint32_t addr_c = ADDR_A + (3u << 24);
    int c_at = -1;

    (void)state;
    assert_int_equal(api_pwhash_create(1, 16, 0, 16, 600000, 0, 0, &queue), 0);
    api_pwhash_failed(queue, addr_c);
    assert_int_equal(api_pwhash_reserve(queue, addr_c, 0), API_PWHASH_PLAIN);
    api_pwhash_release(queue, addr_c, API_PWHASH_PLAIN);
    api_pwhash_failed(queue, addr_c);
    /* A's job runs first (the thread takes it at once), then C's and B's queue. */
    job_init(&jobs[0], API_PWHASH_VERIFY, ADDR_A, "wrong", api_pwhash_dummy(queue));
    job_init(&jobs[1], API_PWHASH_VERIFY, addr_c, "wrong", api_pwhash_dummy(queue));
    for (int i = 2; i < 5; i++)
        job_init(&jobs[i], API_PWHASH_VERIFY, ADDR_B, "wrong", api_pwhash_dummy(queue));
    for (int i = 0; i < 5; i++) {
        jobs[i].place = api_pwhash_reserve(queue, jobs[i].addr, 0);
        assert_int_equal(jobs[i].place, i == 1 ? API_PWHASH_FAILING : API_PWHASH_PLAIN);
    }
    for (int i = 0; i < 5; i++)
        api_pwhash_submit(queue, &jobs[i]);
    wait_done(5);
    for (int i = 0; i < 5; i++)
        if (order[i] == &jobs[1])
            c_at = i;
    assert_int_equal(c_at, 4);

    /*
     * 16 places: a failing address gets 12 of them, the others the rest.
     * Every place is given back before the checks (the teardown waits for
     * them).
     */
    int c_places[13], b_places[5];
    for (int i = 0; i < 13; i++)
        c_places[i] = api_pwhash_reserve(queue, addr_c, 0);
    for (int i = 0; i < 5; i++)
        b_places[i] = api_pwhash_reserve(queue, ADDR_B, 0);
    for (int i = 0; i < 13; i++)
        if (c_places[i] >= 0)
            api_pwhash_release(queue, addr_c, c_places[i]);
    for (int i = 0; i < 5; i++)
        if (b_places[i] >= 0)
            api_pwhash_release(queue, ADDR_B, b_places[i]);
    for (int i = 0; i < 13; i++)
        assert_int_equal(c_places[i], i < 12 ? API_PWHASH_FAILING : -EAGAIN);
    for (int i = 0; i < 5; i++)
        assert_int_equal(b_places[i], i < 4 ? API_PWHASH_PLAIN : -EAGAIN);
}

/*
 * 64 addresses of one /24 (127.0.0.2 ... 127.0.0.65, a flood's), each with
 * two failed logins: every one of them is failing. (Their counts once
 * shared a few slots of the table, which kept forgetting them.)
 */
static void test_many_failing_addresses_are_all_remembered(void **state)
{
    (void)state;
    assert_int_equal(api_pwhash_create(1, 128, 0, 2, 600000, 0, 0, &queue), 0);
    for (uint32_t i = 0; i < 64; i++) {
        api_pwhash_failed(queue, ADDR_A + (i << 24));
        api_pwhash_failed(queue, ADDR_A + (i << 24));
    }
    int place[64];
    for (uint32_t i = 0; i < 64; i++)
        place[i] = api_pwhash_reserve(queue, ADDR_A + (i << 24), 0);
    for (uint32_t i = 0; i < 64; i++) /* all back first: the teardown waits for them */
        if (place[i] >= 0)
            api_pwhash_release(queue, ADDR_A + (i << 24), place[i]);
    for (uint32_t i = 0; i < 64; i++)
        if (place[i] != API_PWHASH_FAILING)
            fail_msg("127.0.0.%u: place %d, want %d (failing)", 2 + i, place[i],
                     API_PWHASH_FAILING);
}

/*
 * An address that queued two jobs at once (it holds two places) while a
 * flood of one-job addresses queues behind them: by the fewest places
 * alone, its two waited until every one of the flood's had run. Queued
 * age_ms (the server's: 200 ms; 1 here), they run before the younger ones.
 */
static void test_two_at_once_do_not_wait_behind_a_flood(void **state)
{
    enum { NFLOOD = 30, N = NFLOOD + 3 };
    struct api_pwhash_job *jobs = calloc(N, sizeof(*jobs));
    struct api_pwhash_job *seen[N];
    int places[N], at[2] = {-1, -1}, n = 0;

    (void)state;
    assert_non_null(jobs);
    /* Queued 1 ms: by the time the first job is done, every one is. */
    assert_int_equal(api_pwhash_create(1, 64, 0, 2, 600000, 1, 0, &queue), 0);
    /* 0: keeps the thread busy; 1, 2: address B's two; then the flood. */
    for (int i = 0; i < N; i++) {
        uint32_t addr = i == 0 ? ADDR_A : i < 3 ? ADDR_B : ADDR_A + ((uint32_t)i << 24);
        job_init(&jobs[i], API_PWHASH_VERIFY, addr, "wrong", api_pwhash_dummy(queue));
        jobs[i].done = on_done_any;
        places[i] = api_pwhash_reserve(queue, addr, 0);
        jobs[i].place = places[i];
    }
    for (int i = 0; i < N; i++)
        if (places[i] >= 0)
            api_pwhash_submit(queue, &jobs[i]);
    for (int i = 0; i < N; i++)
        assert_int_equal(places[i], API_PWHASH_PLAIN);
    n = wait_any(seen, N);
    assert_int_equal(n, N);
    for (int i = 0; i < N; i++)
        for (int k = 0; k < 2; k++)
            if (seen[i] == &jobs[1 + k])
                at[k] = i;
    /* Right after the first; by the fewest places alone, last (31, 32). */
    assert_int_equal(at[0], 1);
    assert_int_equal(at[1], 2);
    free(jobs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_other_address_runs_next, setup, teardown),
        cmocka_unit_test_setup_teardown(test_known_device_runs_first, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hash_and_verify, setup, teardown),
        cmocka_unit_test_setup_teardown(test_depth_and_drain_refuse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failing_address_runs_last_and_leaves_room,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_failing_addresses_are_all_remembered,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_at_once_do_not_wait_behind_a_flood,
                                        setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
