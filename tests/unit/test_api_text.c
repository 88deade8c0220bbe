/*
 * test_api_text.c: the standings' user items written as JSON text
 * (api_standings_user_text) parse back, with jansson, to exactly the
 * documented object: every field, ids as strings, no team as null, and
 * names with quotes, backslashes, control characters and UTF-8 intact;
 * and the large companies' cuts from their shards' best scores
 * (api_standings_cut_merge): at the top-th best with its ties, other
 * companies ignored, and on random shards never above the company's own
 * top-th score.
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
/* Names: characters, not bytes; no control or blank character at an end. */
static void test_valid_text(void **state)
{
    char cjk[34 * 3 + 1] = "", long_cjk[101 * 3 + 1] = "";
    size_t start;
    (void)state;

    for (int i = 0; i < 34; i++)
        strcat(cjk, "\u4e2d" /* 中 */);
    for (int i = 0; i < 101; i++)
        strcat(long_cjk, "\u4e2d");
    assert_true(api_valid_text(cjk, 34)); /* 102 bytes, 34 characters */
    assert_false(api_valid_text(cjk, 33));
    assert_false(api_valid_text(long_cjk, 100));
    assert_true(api_valid_text("Zo\u00eb \U0001F3C6 M\u00fcller", 12));
    assert_false(api_valid_text("Zo\u00eb \U0001F3C6 M\u00fcller", 11));
    assert_false(api_valid_text("", 10));
    assert_false(api_valid_text(" x", 10));
    assert_false(api_valid_text("x\t", 10));
    assert_false(api_valid_text("\u00a0x", 10)); /* no-break space */
    assert_false(api_valid_text("x\u3000", 10)); /* ideographic space */
    assert_false(api_valid_text("\u200bx", 10)); /* zero width space */
    assert_false(api_valid_text("x\ufeff", 10)); /* BOM */
    assert_false(api_valid_text("a\xc2\x85"
                                "b",
                                10)); /* C1 control (NEL) */
    assert_false(api_valid_text("a\x7f"
                                "b",
                                10));
    assert_false(api_valid_text("a\nb", 10));
    assert_true(api_valid_text("a\u00a0b", 10)); /* inside, a name's own */
    assert_true(api_valid_text("a \u200d b", 10));

    /* Each refusal names the rule it breaks. */
    assert_null(api_text_problem("Ana", 10));
    assert_string_equal(api_text_problem("", 10), "is empty");
    assert_string_equal(api_text_problem("abc", 2), "is too long");
    assert_string_equal(api_text_problem("tab\tin", 10), "holds a control character");
    assert_string_equal(api_text_problem("a\xc2\x85", 10), "holds a control character");
    assert_string_equal(api_text_problem("ab\xe4", 10),
                        "holds bytes that are no UTF-8");
    assert_string_equal(api_text_problem(" x", 10),
                        "starts or ends with white space or an invisible character");
    assert_string_equal(api_text_problem("x\u200b", 10),
                        "starts or ends with white space or an invisible character");
    assert_string_equal(api_text_problem("x\u200f", 10),
                        "starts or ends with white space or an invisible character");
    /* Bidirectional overrides and isolates reorder what follows: nowhere. */
    assert_non_null(strstr(api_text_problem("\u202eevil", 10), "bidirectional"));
    assert_non_null(strstr(api_text_problem("a\u2066b", 10), "bidirectional"));
    assert_null(api_text_problem("a\u200fb", 10)); /* a mark inside: a name's own */
    /* What an e-mail must not hold: nothing one does not see. */
    assert_false(api_text_unseen("m1@alpha.test"));
    assert_false(api_text_unseen("\u00e9@x.org"));
    assert_true(api_text_unseen("m1@alpha.test\u00a0"));
    assert_true(api_text_unseen("m1\u200b@alpha.test"));
    assert_true(api_text_unseen("m1\u202e@alpha.test"));
    assert_true(api_text_unseen("m 1@alpha.test"));
    assert_true(api_text_unseen("m1@alpha.test\x7f"));
    assert_true(api_text_unseen("m1@alpha.t\xe4st"));
    /* Unicode's default ignorables, each a look-alike of the plain address. */
    static const char *const ignorable[] = {
        "an\u00adn@x.org", "ann\u034f@x.org",     "ann\u2064@x.org", "ann\u3164@x.org",
        "ann\u180e@x.org", "ann\U000e0020@x.org", "ann\ufe0f@x.org", "ann\u2800@x.org",
        "ann\uffa0@x.org", "ann\U0001d173@x.org", "ann\u115f@x.org"};
    for (size_t i = 0; i < sizeof(ignorable) / sizeof(ignorable[0]); i++)
        assert_true(api_text_unseen(ignorable[i]));
    /* A name neither starts nor ends with one, nor is made of them... */
    assert_false(api_valid_text("\u3164", 10));
    assert_false(api_valid_text("\u115f\u1160", 10));
    assert_false(api_valid_text("\u00adAnn", 10));
    assert_false(api_valid_text("Ann\u180e", 10));
    /* ...but an emoji's variation selector or a flag's tags end one. */
    assert_true(api_valid_text("Ann \u2764\ufe0f", 10));
    assert_true(api_valid_text("Ann \U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e"
                               "\U000e0067\U000e007f",
                               20)); /* 11 characters */
    /* Those marks end what they follow: none starts a name or is one alone. */
    assert_false(api_valid_text("\ufe0f", 10));
    assert_false(api_valid_text("\ufe0f\ufe0f", 10));
    assert_false(api_valid_text("\U000e0067\U000e007f", 10));
    assert_false(api_valid_text("\U000e0100", 10));
    assert_false(api_valid_text("\ufe0fAnn", 10));
    assert_false(
        api_valid_text("Ann \ufe0f", 10)); /* after white space: ends nothing */
    assert_true(api_valid_text("A\ufe0f\ufe0f", 10));
    assert_int_equal(api_text_trim("\ufe0f\U000e0067", &start), 0);
    assert_int_equal(api_text_trim("\ufe0fAda \ufe0f", &start), 3); /* "Ada" */
    assert_int_equal(start, 3);

    assert_int_equal(api_text_trim(" \u00a0 Ana \u200b\t", &start), 3);
    assert_int_equal(start, 4);
    assert_int_equal(api_text_trim("\u00a0\u200b ", &start), 0);
    /* a sequence cut short at the end is read as one byte, never past it */
    assert_int_equal(api_text_trim("ab\xe4", &start), 3);
    /* text that is no UTF-8 (a command line's) is no name */
    assert_false(api_valid_text("ab\xe4", 10));
    assert_false(api_valid_text("\xff\xfe", 10));
    assert_false(api_valid_text("a\xe4"
                                "bc",
                                10));
    assert_false(api_valid_text("a\x80"
                                "b",
                                10));
    assert_int_equal(api_text_chars("\u00e9\u00e9\u00e9 \u00e9",
                                    strlen("\u00e9\u00e9\u00e9 \u00e9")),
                     5);
}

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

static void test_cut_per_shard(void **state)
{
    (void)state;
    /* enough for twice top scores in all */
    assert_int_equal(api_standings_cut_per_shard(500, 2048), 1);
    assert_int_equal(api_standings_cut_per_shard(500, 1024), 1);
    assert_int_equal(api_standings_cut_per_shard(500, 1000), 1);
    assert_int_equal(api_standings_cut_per_shard(500, 999), 2);
    assert_int_equal(api_standings_cut_per_shard(500, 512), 2);
    assert_int_equal(api_standings_cut_per_shard(500, 64), 16);
    assert_int_equal(api_standings_cut_per_shard(500, 63), 16);
    assert_int_equal(api_standings_cut_per_shard(500, 16), API_CUT_PER_SHARD_MAX);
    assert_int_equal(api_standings_cut_per_shard(500, 0), 1);
}

static void test_cut_merge(void **state)
{
    /* Top 3. Company 10: 9, 7, 7, 7, 4 (the cut's tie counts whole); 20: two
     * bests only; 30: negative scores; 15 is not asked for. */
    struct api_points_best b[] = {
        {30, -2}, {10, 7}, {15, 100}, {20, 5},  {10, 4},   {10, 9}, {15, 100},
        {30, -3}, {10, 7}, {20, 1},   {30, -1}, {15, 100}, {10, 7},
    };
    struct api_points_cut c[3] = {
        {.company = 10, .points = 99, .at_or_above = 99, .found = 1},
        {.company = 20, .points = 99, .at_or_above = 99, .found = 1},
        {.company = 30}};

    (void)state;
    api_standings_cut_merge(b, sizeof(b) / sizeof(b[0]), 3, c, 3);
    assert_int_equal(c[0].found, 1);
    assert_int_equal(c[0].points, 7);
    assert_int_equal(c[0].at_or_above, 4);
    assert_int_equal(c[1].found, 0);
    assert_int_equal(c[1].at_or_above, 2);
    assert_int_equal(c[2].found, 1);
    assert_int_equal(c[2].points, -3);
    assert_int_equal(c[2].at_or_above, 3);

    /* No bests at all: nothing found, nothing left from before. */
    c[0].found = 1;
    c[0].at_or_above = 5;
    api_standings_cut_merge(b, 0, 3, c, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(c[i].found, 0);
        assert_int_equal(c[i].at_or_above, 0);
    }
}

static int desc_cmp(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return x < y ? 1 : x > y ? -1 : 0;
}

/*
 * Random companies on random shard counts: each shard gives its best
 * api_standings_cut_per_shard() scores; a cut found is never above the
 * company's top-th score, and at least top members are at or above it.
 */
static void test_cut_merge_is_a_lower_bound(void **state)
{
    enum { TOPK = 50, MAXM = 600 };
    static const uint32_t nshards[] = {4, 16, 64, 256};
    static int64_t member[MAXM], sorted[MAXM];
    static uint32_t shard_of[MAXM];
    static struct api_points_best b[MAXM];
    uint64_t seed = 42;
    uint32_t found = 0;

    (void)state;
    for (int round = 0; round < 400; round++) {
        uint32_t ns = nshards[round % 4], m = 1 + (uint32_t)(round * 7 % MAXM);
        uint32_t k = api_standings_cut_per_shard(TOPK, ns), nb = 0;
        int64_t spread = 1 + round % 5 * 300;
        struct api_points_cut c = {.company = 7};

        for (uint32_t i = 0; i < m; i++) {
            seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
            member[i] = (int64_t)((seed >> 33) % (uint64_t)spread) - spread / 3;
            shard_of[i] = (uint32_t)((seed >> 13) % ns);
        }
        /* Each shard's best k. */
        for (uint32_t s = 0; s < ns; s++) {
            uint32_t n = 0;
            for (uint32_t i = 0; i < m; i++)
                if (shard_of[i] == s)
                    sorted[n++] = member[i];
            qsort(sorted, n, sizeof(*sorted), desc_cmp);
            for (uint32_t i = 0; i < n && i < k; i++)
                b[nb++] = (struct api_points_best){.company = 7, .points = sorted[i]};
        }
        api_standings_cut_merge(b, nb, TOPK, &c, 1);
        memcpy(sorted, member, m * sizeof(*member));
        qsort(sorted, m, sizeof(*sorted), desc_cmp);
        if (m < TOPK) {
            assert_int_equal(c.found, 0);
            continue;
        }
        if (!c.found)
            continue;
        found++;
        uint32_t at = 0;
        for (uint32_t i = 0; i < m; i++)
            at += member[i] >= c.points;
        assert_true(c.points <= sorted[TOPK - 1]);
        assert_true(at >= TOPK);
        assert_true(c.at_or_above >= TOPK);
    }
    /* Most rounds with enough members on enough shards do find a cut. */
    assert_true(found > 100);
}

/* The group's statement parts for the cuts given: cond, then tail. */
static void group_parts(const struct api_points_cut *c, uint32_t n, const char *cond,
                        const char *tail)
{
    struct sql_buf a = {0}, b = {0};

    assert_int_equal(api_standings_group_parts(&a, &b, c, n), 0);
    assert_non_null(a.buf);
    assert_string_equal(a.buf, cond);
    assert_string_equal(b.buf, tail);
    sql_buf_deinit(&a);
    sql_buf_deinit(&b);
}

static void test_group_parts(void **state)
{
    /* Runs of equal cuts: one range each. */
    struct api_points_cut runs[] = {
        {10, 5, 600, 1}, {11, 5, 600, 1}, {12, 3, 700, 1}, {14, 3, 500, 1}};
    /* Six cuts apart: the closest neighbours merge (10 and 9, then 50 and
     * 49) into four ranges, each at or under every cut in it. */
    struct api_points_cut apart[] = {{1, 10, 500, 1}, {2, 9, 500, 1},  {3, 1, 500, 1},
                                     {4, 50, 500, 1}, {5, 49, 500, 1}, {6, 2, 500, 1}};
    /* A company without a cut is read whole: its range has no bound, and a
     * neighbour merged with it loses its own. */
    struct api_points_cut whole[] = {{7, 4, 500, 1},  {8, 0, 0, 0},
                                     {9, 4, 500, 1},  {10, 6, 500, 1},
                                     {11, 8, 500, 1}, {12, 12, 500, 1}};
    (void)state;
    group_parts(
        runs, 4,
        "(company_id BETWEEN 10 AND 11 AND points >= 5) OR (company_id BETWEEN 12 "
        "AND 14 AND points >= 3)",
        ") u) t WHERE rn <= 500 AND points >= CASE company_id WHEN 10 THEN 5 WHEN 11 "
        "THEN 5 WHEN 12 THEN 3 WHEN 14 THEN 3 END");
    group_parts(
        apart, 6,
        "(company_id BETWEEN 1 AND 2 AND points >= 9) OR (company_id BETWEEN 3 AND 3 "
        "AND points >= 1) OR (company_id BETWEEN 4 AND 5 AND points >= 49) OR "
        "(company_id BETWEEN 6 AND 6 AND points >= 2)",
        ") u) t WHERE rn <= 500 AND points >= CASE company_id WHEN 1 THEN 10 WHEN 2 "
        "THEN 9 WHEN 3 THEN 1 WHEN 4 THEN 50 WHEN 5 THEN 49 WHEN 6 THEN 2 END");
    group_parts(
        whole, 6,
        "(company_id BETWEEN 7 AND 7 AND points >= 4) OR (company_id BETWEEN 8 AND 8) "
        "OR (company_id BETWEEN 9 AND 11 AND points >= 4) OR (company_id BETWEEN 12 "
        "AND 12 AND points >= 12)",
        ") u) t WHERE rn <= 500 AND points >= CASE company_id WHEN 7 THEN 4 WHEN 8 "
        "THEN points WHEN 9 THEN 4 WHEN 10 THEN 6 WHEN 11 THEN 8 WHEN 12 THEN 12 END");
    group_parts(
        runs, 1, "(company_id BETWEEN 10 AND 10 AND points >= 5)",
        ") u) t WHERE rn <= 500 AND points >= CASE company_id WHEN 10 THEN 5 END");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_items_parse_back),
        cmocka_unit_test(test_empty_list_and_one_item),
        cmocka_unit_test(test_error_message_not_utf8),
        cmocka_unit_test(test_utf8_clean),
        cmocka_unit_test(test_valid_text),
        cmocka_unit_test(test_reply_json_null_body),
        cmocka_unit_test(test_cut_per_shard),
        cmocka_unit_test(test_cut_merge),
        cmocka_unit_test(test_cut_merge_is_a_lower_bound),
        cmocka_unit_test(test_group_parts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
