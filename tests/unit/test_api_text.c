/*
 * test_api_text.c: the standings' user items written as JSON text
 * (api_standings_user_text) parse back, with jansson, to exactly the
 * documented object: every field, ids as strings, no team as null, and
 * names with quotes, backslashes, control characters and UTF-8 intact.
 */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "api/api_int.h"

static const char *const names[] = {
    "Ana",
    "say \"hi\"",
    "back\\slash\\",
    "tab\there, line\nbreak, bell\x07, \x1f",
    "Zoë 🏆 Müller",
    "",
    "\"",
};

/* Parses b's list ("[" items "]") and checks item i against what was written. */
static void check_item(json_t *item, const struct api_user_item *u)
{
    char id[24];

    assert_int_equal(json_object_size(item), 7);
    assert_int_equal(json_integer_value(json_object_get(item, "rank")), u->rank);
    snprintf(id, sizeof(id), "%" PRIu64, u->id);
    assert_string_equal(json_string_value(json_object_get(item, "user_id")), id);
    assert_string_equal(json_string_value(json_object_get(item, "display_name")),
                        u->name);
    snprintf(id, sizeof(id), "%" PRIu64, u->company);
    assert_string_equal(json_string_value(json_object_get(item, "company_id")), id);
    assert_string_equal(json_string_value(json_object_get(item, "company_name")),
                        u->company_name);
    if (u->team == NULL)
        assert_true(json_is_null(json_object_get(item, "team_id")));
    else
        assert_string_equal(json_string_value(json_object_get(item, "team_id")),
                            u->team);
    assert_int_equal(json_integer_value(json_object_get(item, "points")), u->points);
}

static void test_items_parse_back(void **state)
{
    enum { N = sizeof(names) / sizeof(names[0]) };
    struct api_user_item u[N];
    struct sql_buf b = {0};
    json_error_t err;
    json_t *list;

    (void)state;
    assert_int_equal(sql_buf_add(&b, "[", 1), 0);
    for (int i = 0; i < N; i++) {
        u[i] = (struct api_user_item){.rank = i + 1,
                                      .id = UINT64_MAX - (uint64_t)i,
                                      .company = 7 + (uint64_t)i,
                                      .name = names[i],
                                      .company_name = names[N - 1 - i],
                                      .team = i % 2 ? "18446744073709551615" : NULL,
                                      .points = i % 3 ? -(int64_t)i * 1000 : INT64_MAX};
        assert_int_equal(api_standings_user_text(&b, &u[i]), 0);
    }
    assert_int_equal(sql_buf_add(&b, "]", 1), 0);
    list = json_loadb(b.buf, b.len, 0, &err);
    if (list == NULL)
        fail_msg("not JSON (%s at %d): %s", err.text, err.position, b.buf);
    assert_int_equal(json_array_size(list), N);
    for (int i = 0; i < N; i++)
        check_item(json_array_get(list, (size_t)i), &u[i]);
    json_decref(list);
    sql_buf_deinit(&b);
}

static void test_empty_list_and_one_item(void **state)
{
    struct api_user_item u = {.rank = 1,
                              .id = 1,
                              .company = 2,
                              .name = "a",
                              .company_name = "b",
                              .team = "3",
                              .points = 0};
    struct sql_buf b = {0};

    (void)state;
    assert_int_equal(sql_buf_add(&b, "[", 1), 0);
    assert_int_equal(api_standings_user_text(&b, &u), 0);
    assert_int_equal(sql_buf_add(&b, "]", 1), 0);
    assert_string_equal(b.buf, "[{\"rank\":1,\"user_id\":\"1\",\"display_name\":\"a\","
                               "\"company_id\":\"2\",\"company_name\":\"b\","
                               "\"team_id\":\"3\",\"points\":0}]");
    sql_buf_deinit(&b);
}

/*
 * An error message quoting bytes that are not UTF-8 (the JSON parser's error
 * quotes a malformed body near the error), or cut in the middle of a
 * character, is still answered with its own status and a JSON body; before,
 * jansson refused the message and the client got a 503 "out of memory",
 * whose body also carried a trailing NUL (found by fuzz_request).
 */
static void test_error_message_not_utf8(void **state)
{
    struct api_req req;
    json_t *v;
    char cut[600];

    (void)state;
    memset(&req, 0, sizeof(req));
    api_error(&req, 400, "invalid_json", "near '\\u161\313\236\221\230to' and \xc3");
    assert_int_equal(req.status, 400);
    v = json_loadb(req.resp, req.resp_len, 0, NULL);
    assert_non_null(v);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(v, "error"), "message")),
        "near '\\u161\313\236??to' and ?"); /* \313\236 is U+02DE */
    json_decref(v);
    free(req.resp);

    /* A message longer than the 512 bytes kept, cut inside "é". */
    memset(&req, 0, sizeof(req));
    memset(cut, 'a', sizeof(cut));
    for (size_t i = 500; i + 1 < sizeof(cut); i += 2)
        memcpy(&cut[i], "\xc3\xa9", 2);
    cut[sizeof(cut) - 1] = '\0';
    api_error(&req, 422, "invalid_name", "%s", cut);
    assert_int_equal(req.status, 422);
    v = json_loadb(req.resp, req.resp_len, 0, NULL);
    assert_non_null(v);
    json_decref(v);
    free(req.resp);
}

/* Well-formed UTF-8 is kept as it is; each byte of anything else becomes '?'. */
static void test_utf8_clean(void **state)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"plain ascii", "plain ascii"},
        {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
         "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"},
        {"\xc0\xaf", "??"},           /* overlong '/' */
        {"\xe0\x80\xaf", "???"},      /* overlong, 3 bytes */
        {"\xed\xa0\x80", "???"},      /* a surrogate */
        {"\xf4\x90\x80\x80", "????"}, /* above U+10FFFF */
        {"\xf5\x80", "??"},           /* no such lead byte */
        {"\x80x", "?x"},              /* a lone continuation */
        {"ab\xe2\x82", "ab??"},       /* cut at the end */
    };
    char buf[64];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(buf, sizeof(buf), "%s", cases[i].in);
        api_utf8_clean(buf);
        assert_string_equal(buf, cases[i].out);
    }
}

/* A NULL body (jansson out of memory): 503 with a JSON body, no trailing NUL. */
static void test_reply_json_null_body(void **state)
{
    struct api_req req;
    json_t *v;

    (void)state;
    memset(&req, 0, sizeof(req));
    api_reply_json(&req, 200, NULL);
    assert_int_equal(req.status, 503);
    assert_int_equal(req.resp_len, strlen("{\"error\":{\"code\":\"unavailable\","
                                          "\"message\":\"out of memory\"}}"));
    v = json_loadb(req.resp, req.resp_len, 0, NULL);
    assert_non_null(v);
    json_decref(v);
    free(req.resp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_items_parse_back),
        cmocka_unit_test(test_empty_list_and_one_item),
        cmocka_unit_test(test_error_message_not_utf8),
        cmocka_unit_test(test_utf8_clean),
        cmocka_unit_test(test_reply_json_null_body),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
