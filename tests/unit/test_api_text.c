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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_items_parse_back),
        cmocka_unit_test(test_empty_list_and_one_item),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
