/*
 * test_netwire_queue.c: unit tests of tools/netwire's delay line
 * (tools/netwire_queue.c): a packet leaves no sooner than its due time and
 * in the order it came, a full queue takes nothing more, the ring wraps
 * around, a due time before the last one's is raised to it, and init checks
 * its sizes.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "tools/netwire_queue.h"

#define SLOT 64

/* Queues a packet of len bytes filled with tag, due at due. */
static void push(struct netwire_queue *q, unsigned char tag, size_t len, uint64_t due)
{
    unsigned char *slot = netwire_queue_slot(q);

    assert_non_null(slot);
    memset(slot, tag, len);
    netwire_queue_push(q, len, due);
}

/* Takes the head, which must be due at now and be tag's packet of len bytes. */
static void pop_expect(struct netwire_queue *q, uint64_t now, unsigned char tag,
                       size_t len)
{
    size_t got = 0;
    const unsigned char *p = netwire_queue_due(q, now, &got);

    assert_non_null(p);
    assert_int_equal(got, len);
    for (size_t i = 0; i < len; i++)
        assert_int_equal(p[i], tag);
    netwire_queue_pop(q);
}

static void test_netwire_queue_empty_has_nothing_due(void **state)
{
    struct netwire_queue q;
    size_t len;

    (void)state;
    assert_int_equal(netwire_queue_init(&q, 4, SLOT), 0);
    assert_int_equal(netwire_queue_count(&q), 0);
    assert_true(netwire_queue_next_due(&q) == UINT64_MAX);
    assert_null(netwire_queue_due(&q, UINT64_MAX, &len));
    netwire_queue_pop(&q); /* a no-op */
    assert_int_equal(netwire_queue_count(&q), 0);
    netwire_queue_deinit(&q);
}

static void test_netwire_queue_packet_waits_for_its_due_time(void **state)
{
    struct netwire_queue q;
    size_t len;

    (void)state;
    assert_int_equal(netwire_queue_init(&q, 4, SLOT), 0);
    push(&q, 'a', 20, 1250);
    assert_true(netwire_queue_next_due(&q) == 1250);
    assert_null(netwire_queue_due(&q, 1000, &len));
    assert_null(netwire_queue_due(&q, 1249, &len));
    pop_expect(&q, 1250, 'a', 20);
    assert_true(netwire_queue_next_due(&q) == UINT64_MAX);
    netwire_queue_deinit(&q);
}

static void test_netwire_queue_keeps_arrival_order(void **state)
{
    struct netwire_queue q;
    size_t len;

    (void)state;
    assert_int_equal(netwire_queue_init(&q, 8, SLOT), 0);
    push(&q, 'a', 1, 100);
    push(&q, 'b', 2, 100);
    push(&q, 'c', 3, 150);
    assert_int_equal(netwire_queue_count(&q), 3);
    pop_expect(&q, 120, 'a', 1);
    pop_expect(&q, 120, 'b', 2);
    assert_null(netwire_queue_due(&q, 120, &len));
    assert_true(netwire_queue_next_due(&q) == 150);
    pop_expect(&q, 150, 'c', 3);
    netwire_queue_deinit(&q);
}

/* A clock that went back, or a shorter delay, must not let a later packet
 * overtake an earlier one. */
static void test_netwire_queue_earlier_due_is_raised(void **state)
{
    struct netwire_queue q;
    size_t len;

    (void)state;
    assert_int_equal(netwire_queue_init(&q, 4, SLOT), 0);
    push(&q, 'a', 4, 500);
    push(&q, 'b', 4, 300);
    assert_null(netwire_queue_due(&q, 400, &len));
    pop_expect(&q, 500, 'a', 4);
    assert_true(netwire_queue_next_due(&q) == 500);
    pop_expect(&q, 500, 'b', 4);
    netwire_queue_deinit(&q);
}

static void test_netwire_queue_full_takes_nothing(void **state)
{
    struct netwire_queue q;

    (void)state;
    assert_int_equal(netwire_queue_init(&q, 3, SLOT), 0);
    push(&q, 'a', 5, 10);
    push(&q, 'b', 5, 20);
    push(&q, 'c', 5, 30);
    assert_null(netwire_queue_slot(&q));
    netwire_queue_push(&q, 5, 40); /* ignored */
    assert_int_equal(netwire_queue_count(&q), 3);
    pop_expect(&q, 100, 'a', 5);
    assert_non_null(netwire_queue_slot(&q));
    push(&q, 'd', 5, 40);
    pop_expect(&q, 100, 'b', 5);
    pop_expect(&q, 100, 'c', 5);
    pop_expect(&q, 100, 'd', 5);
    assert_int_equal(netwire_queue_count(&q), 0);
    netwire_queue_deinit(&q);
}

/* Many times round a small ring: every packet comes out once, in order,
 * with its own bytes and length. */
static void test_netwire_queue_ring_wraps_around(void **state)
{
    struct netwire_queue q;
    unsigned next_in = 0, next_out = 0;
    uint64_t now = 0;

    (void)state;
    assert_int_equal(netwire_queue_init(&q, 5, SLOT), 0);
    for (int round = 0; round < 200; round++) {
        /* 1..3 in, then 1..2 out when due: the ring's fill goes up and down. */
        int in = 1 + round % 3, out = 1 + round % 2;

        for (int i = 0; i < in && netwire_queue_slot(&q) != NULL; i++, next_in++)
            push(&q, (unsigned char)next_in, 1 + next_in % SLOT, now + 7);
        now += 7;
        for (int i = 0; i < out && netwire_queue_count(&q) > 0; i++, next_out++)
            pop_expect(&q, now, (unsigned char)next_out, 1 + next_out % SLOT);
    }
    while (netwire_queue_count(&q) > 0) {
        pop_expect(&q, now, (unsigned char)next_out, 1 + next_out % SLOT);
        next_out++;
    }
    assert_int_equal(next_in, next_out);
    assert_true(next_in > 200);
    netwire_queue_deinit(&q);
}

static void test_netwire_queue_length_is_capped_at_the_slot(void **state)
{
    struct netwire_queue q;

    (void)state;
    assert_int_equal(netwire_queue_init(&q, 2, SLOT), 0);
    memset(netwire_queue_slot(&q), 'x', SLOT);
    netwire_queue_push(&q, SLOT + 100, 1);
    pop_expect(&q, 1, 'x', SLOT);
    netwire_queue_deinit(&q);
}

static void test_netwire_queue_init_checks_sizes(void **state)
{
    struct netwire_queue q;

    (void)state;
    assert_int_equal(netwire_queue_init(&q, 0, SLOT), -EINVAL);
    netwire_queue_deinit(&q);
    assert_int_equal(netwire_queue_init(&q, 4, 0), -EINVAL);
    assert_int_equal(netwire_queue_init(&q, UINT32_MAX, 1 << 20), -EINVAL);
    assert_int_equal(netwire_queue_init(&q, 1, SLOT), 0);
    netwire_queue_deinit(&q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_netwire_queue_empty_has_nothing_due),
        cmocka_unit_test(test_netwire_queue_packet_waits_for_its_due_time),
        cmocka_unit_test(test_netwire_queue_keeps_arrival_order),
        cmocka_unit_test(test_netwire_queue_earlier_due_is_raised),
        cmocka_unit_test(test_netwire_queue_full_takes_nothing),
        cmocka_unit_test(test_netwire_queue_ring_wraps_around),
        cmocka_unit_test(test_netwire_queue_length_is_capped_at_the_slot),
        cmocka_unit_test(test_netwire_queue_init_checks_sizes),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
