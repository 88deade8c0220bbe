/*
 * test_api_tarpit.c: unit tests of the refusals' tarpit (api/api_tarpit.c):
 * a held request is resumed once its delay is over, in the order held, and
 * not before; the tarpit off (delay 0) or full refuses to hold; drain
 * resumes every held request at once and refuses new ones; NULL is taken
 * where documented.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "api/api_int.h"

static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* What the resume callback saw: which request, when. */
static pthread_mutex_t seen_lock = PTHREAD_MUTEX_INITIALIZER;
static struct api_req *seen[16];
static int64_t seen_ms[16];
static int nseen;

static void on_resume(struct api_req *req)
{
    pthread_mutex_lock(&seen_lock);
    if (nseen < 16) {
        seen[nseen] = req;
        seen_ms[nseen++] = mono_ms();
    }
    pthread_mutex_unlock(&seen_lock);
}

static int seen_count(void)
{
    int n;

    pthread_mutex_lock(&seen_lock);
    n = nseen;
    pthread_mutex_unlock(&seen_lock);
    return n;
}

/* Waits up to ms for n resumes; the count then. */
static int wait_seen(int n, int ms)
{
    int64_t end = mono_ms() + ms;

    while (seen_count() < n && mono_ms() < end)
        usleep(2000);
    return seen_count();
}

static int setup(void **state)
{
    (void)state;
    nseen = 0;
    return 0;
}

static void test_held_for_the_delay_in_order(void **state)
{
    struct api_tarpit *t = NULL;
    struct api_req req[3];
    int64_t held_ms[3];

    (void)state;
    memset(req, 0, sizeof(req));
    assert_int_equal(api_tarpit_create(300, 8, on_resume, &t), 0);
    for (int i = 0; i < 3; i++) {
        held_ms[i] = mono_ms();
        assert_int_equal(api_tarpit_hold(t, &req[i]), 0);
        usleep(20000);
    }
    /* 60 ms in, the first is due at 300: all three held, none resumed. */
    assert_int_equal(api_tarpit_held(t), 3);
    assert_int_equal(seen_count(), 0);
    assert_int_equal(wait_seen(3, 3000), 3);
    for (int i = 0; i < 3; i++) {
        assert_ptr_equal(seen[i], &req[i]);
        /* Not before its delay; the slack is the scheduler's, not a bound. */
        assert_true(seen_ms[i] - held_ms[i] >= 299);
        assert_true(seen_ms[i] - held_ms[i] < 2000);
    }
    assert_int_equal(api_tarpit_held(t), 0);
    api_tarpit_destroy(t);
}

static void test_off_and_full_refuse(void **state)
{
    struct api_tarpit *off = NULL, *t = NULL;
    struct api_req req[3];

    (void)state;
    memset(req, 0, sizeof(req));
    assert_int_equal(api_tarpit_create(0, 8, on_resume, &off), 0);
    assert_int_equal(api_tarpit_hold(off, &req[0]), -EAGAIN);
    api_tarpit_destroy(off);

    assert_int_equal(api_tarpit_create(10000, 2, on_resume, &t), 0);
    assert_int_equal(api_tarpit_hold(t, &req[0]), 0);
    assert_int_equal(api_tarpit_hold(t, &req[1]), 0);
    assert_int_equal(api_tarpit_hold(t, &req[2]), -EAGAIN);
    assert_int_equal(api_tarpit_held(t), 2);
    assert_int_equal(seen_count(), 0);
    api_tarpit_destroy(t); /* drains: both resumed, none lost */
    assert_int_equal(seen_count(), 2);
}

static void test_drain_resumes_at_once(void **state)
{
    struct api_tarpit *t = NULL;
    struct api_req req[3];
    int64_t t0;

    (void)state;
    memset(req, 0, sizeof(req));
    assert_int_equal(api_tarpit_create(10000, 8, on_resume, &t), 0);
    assert_int_equal(api_tarpit_hold(t, &req[0]), 0);
    assert_int_equal(api_tarpit_hold(t, &req[1]), 0);
    usleep(20000);
    assert_int_equal(seen_count(), 0);
    t0 = mono_ms();
    api_tarpit_drain(t);
    assert_int_equal(seen_count(), 2);
    assert_ptr_equal(seen[0], &req[0]);
    assert_ptr_equal(seen[1], &req[1]);
    assert_true(mono_ms() - t0 < 1000);
    /* Stopping: the caller answers at once. */
    assert_int_equal(api_tarpit_hold(t, &req[2]), -EAGAIN);
    assert_int_equal(api_tarpit_held(t), 0);
    api_tarpit_destroy(t);
    assert_int_equal(seen_count(), 2);
}

static void test_null_accepted(void **state)
{
    struct api_req req;

    (void)state;
    memset(&req, 0, sizeof(req));
    assert_int_equal(api_tarpit_hold(NULL, &req), -EAGAIN);
    assert_int_equal(api_tarpit_held(NULL), 0);
    api_tarpit_drain(NULL);
    api_tarpit_destroy(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_held_for_the_delay_in_order, setup),
        cmocka_unit_test_setup(test_off_and_full_refuse, setup),
        cmocka_unit_test_setup(test_drain_resumes_at_once, setup),
        cmocka_unit_test_setup(test_null_accepted, setup),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
