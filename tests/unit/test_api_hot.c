/*
 * test_api_hot.c: unit tests of the hot table (api/api_hot.c), the
 * prebuilt responses the event loops answer GET odds with: a fresh entry is
 * used as it is (the same response, no copy), an expired or dropped one is
 * not, a fill that began before a drop does not come in after it, a racing
 * older fill does not replace a fresher one, a colliding id evicts, and a
 * body is freed when the table's reference, the last here, goes. (That a
 * response queued on connections outlives the table's reference is
 * libmicrohttpd's counting, seen end to end in tests/e2e/test_hot.py.) Also: the routes
 * answered from the table need no I/O before it (anyone with a token, no body).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "api/api_int.h"

static int bodies_freed;

static void body_free(void *p)
{
    free(p);
    bodies_freed++;
}

/* A response of text, its body freed by body_free() with the last reference. */
static struct MHD_Response *response(const char *text)
{
    char *body = strdup(text);
    struct MHD_Response *r;

    assert_non_null(body);
    r = MHD_create_response_from_buffer_with_free_callback(strlen(body), body,
                                                           body_free);
    assert_non_null(r);
    return r;
}

/* What a use saw. */
struct seen {
    struct MHD_Response *resp;
    int calls;
};

static void see(void *arg, struct MHD_Response *resp)
{
    struct seen *s = arg;

    s->resp = resp;
    s->calls++;
}

static void test_hot_fresh_entry_is_the_same_response(void **state)
{
    struct api_hot *h;
    struct MHD_Response *r = response("{\"home\":2.5}");
    struct seen s = {0};
    struct api_hot_stats st;
    (void)state;

    bodies_freed = 0;
    assert_int_equal(api_hot_create(&h), 0);
    assert_int_equal(api_hot_use(h, 42, 1000, see, &s), 0); /* empty */
    assert_int_equal(s.calls, 0);
    assert_int_equal(api_hot_put(h, 42, api_hot_gen(h, 42), 1900, r), 0);
    assert_int_equal(api_hot_use(h, 42, 1000, see, &s), 1);
    assert_ptr_equal(s.resp, r);
    assert_int_equal(api_hot_use(h, 42, 1899, see, &s), 1);
    assert_int_equal(s.calls, 2);
    assert_int_equal(api_hot_use(h, 43, 1000, see, &s), 0); /* another match */
    api_hot_stats(h, &st);
    assert_int_equal(st.hits, 2);
    assert_int_equal(st.fills, 1);
    assert_int_equal(st.stale, 0);
    assert_int_equal(bodies_freed, 0);
    api_hot_destroy(h); /* the table's reference was the last */
    assert_int_equal(bodies_freed, 1);
}

static void test_hot_expired_entry_is_a_miss(void **state)
{
    struct api_hot *h;
    struct seen s = {0};
    (void)state;

    assert_int_equal(api_hot_create(&h), 0);
    assert_int_equal(api_hot_put(h, 7, api_hot_gen(h, 7), 1900, response("a")), 0);
    assert_int_equal(api_hot_use(h, 7, 1900, see, &s), 0);
    assert_int_equal(api_hot_use(h, 7, 5000, see, &s), 0);
    assert_int_equal(s.calls, 0);
    /* A later fill of the same match takes the slot again. */
    assert_int_equal(api_hot_put(h, 7, api_hot_gen(h, 7), 5900, response("b")), 0);
    assert_int_equal(api_hot_use(h, 7, 5000, see, &s), 1);
    api_hot_destroy(h);
}

/* The writer's server: a drop removes the entry at once and frees its body. */
static void test_hot_drop_is_immediate(void **state)
{
    struct api_hot *h;
    struct seen s = {0};
    (void)state;

    bodies_freed = 0;
    assert_int_equal(api_hot_create(&h), 0);
    assert_int_equal(api_hot_put(h, 9, api_hot_gen(h, 9), 1900, response("old")), 0);
    api_hot_drop(h, 9);
    assert_int_equal(bodies_freed, 1);
    assert_int_equal(api_hot_use(h, 9, 1000, see, &s), 0);
    api_hot_drop(h, 9); /* nothing there: fine */
    api_hot_destroy(h);
    assert_int_equal(bodies_freed, 1);
}

/* A fill that read its body before a drop is refused after it (its reference freed). */
static void test_hot_fill_begun_before_a_drop_stays_out(void **state)
{
    struct api_hot *h;
    struct seen s = {0};
    struct api_hot_stats st;
    uint64_t gen;
    (void)state;

    bodies_freed = 0;
    assert_int_equal(api_hot_create(&h), 0);
    gen = api_hot_gen(h, 11); /* the fill begins, reads the old body... */
    api_hot_drop(h, 11);      /* ...a PUT on this server commits and drops... */
    assert_int_equal(api_hot_put(h, 11, gen, 1900, response("old")), -ESTALE);
    assert_int_equal(bodies_freed, 1);
    assert_int_equal(api_hot_use(h, 11, 1000, see, &s), 0);
    /* A fill begun after the drop comes in. */
    assert_int_equal(api_hot_put(h, 11, api_hot_gen(h, 11), 1950, response("new")), 0);
    assert_int_equal(api_hot_use(h, 11, 1000, see, &s), 1);
    api_hot_stats(h, &st);
    assert_int_equal(st.stale, 1);
    assert_int_equal(st.fills, 1);
    api_hot_destroy(h);
    assert_int_equal(bodies_freed, 2);
}

/* Two fills raced: the one that read its body later stays, whichever put last. */
static void test_hot_fresher_fill_stays(void **state)
{
    struct api_hot *h;
    struct MHD_Response *later = response("later"), *earlier = response("earlier");
    struct seen s = {0};
    uint64_t gen;
    (void)state;

    assert_int_equal(api_hot_create(&h), 0);
    gen = api_hot_gen(h, 5);
    assert_int_equal(api_hot_put(h, 5, gen, 2000, later), 0);
    assert_int_equal(api_hot_put(h, 5, gen, 1990, earlier), -ESTALE);
    assert_int_equal(api_hot_use(h, 5, 1000, see, &s), 1);
    assert_ptr_equal(s.resp, later);
    api_hot_destroy(h);
}

/* Ids that share a slot evict each other; a drop of one leaves the other. */
static void test_hot_colliding_ids_evict(void **state)
{
    struct api_hot *h;
    struct seen s = {0};
    uint64_t a = 3, b = 3 + 4096;
    (void)state;

    bodies_freed = 0;
    assert_int_equal(api_hot_create(&h), 0);
    assert_int_equal(api_hot_put(h, a, api_hot_gen(h, a), 1900, response("a")), 0);
    assert_int_equal(api_hot_put(h, b, api_hot_gen(h, b), 1900, response("b")), 0);
    assert_int_equal(bodies_freed, 1); /* a's body: the table held the only reference */
    assert_int_equal(api_hot_use(h, a, 1000, see, &s), 0);
    assert_int_equal(api_hot_use(h, b, 1000, see, &s), 1);
    api_hot_drop(h, a);
    assert_int_equal(api_hot_use(h, b, 1000, see, &s), 1);
    api_hot_destroy(h);
    assert_int_equal(bodies_freed, 2);
}

/* What the loop answers from the table skips the dispatcher's rest: it must need none.
 */
static void test_hot_routes_need_no_io_before_the_table(void **state)
{
    int nhot = 0;
    (void)state;

    for (int r = 0; r < api_nroutes; r++) {
        const struct api_route *rt = &api_routes[r];
        if (rt->reads != API_READS_HOT)
            continue;
        nhot++;
        assert_string_equal(rt->method, "GET");
        assert_int_equal(rt->access, API_ACCESS_ANY);
        assert_int_equal(rt->body, API_BODY_NONE);
        /* The table is keyed by the path's first id. */
        int nid = 0;
        for (int i = 0; rt->seg[i] != NULL; i++)
            nid += rt->seg[i] == api_seg_id;
        assert_int_equal(nid, 1);
    }
    assert_int_equal(nhot, 1); /* GET /v1/matches/{id}/odds */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hot_fresh_entry_is_the_same_response),
        cmocka_unit_test(test_hot_expired_entry_is_a_miss),
        cmocka_unit_test(test_hot_drop_is_immediate),
        cmocka_unit_test(test_hot_fill_begun_before_a_drop_stays_out),
        cmocka_unit_test(test_hot_fresher_fill_stays),
        cmocka_unit_test(test_hot_colliding_ids_evict),
        cmocka_unit_test(test_hot_routes_need_no_io_before_the_table),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
