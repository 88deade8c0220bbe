/*
 * test_api.c: unit tests of the API server's pure parts: odds and time
 * parsing, ids, tokens (forged, tampered, expired) and password hashes.
 * The server is created without a router: no request reaches it.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "api/api_int.h"

static void test_odds_parse(void **state)
{
    static const struct {
        const char *json;
        int64_t want;
    } cases[] = {
        {"1.01", 101},   {"2.15", 215},     {"3.4", 340},   {"1000", 100000},
        {"2", 200},      {"1.00", -1},      {"1.005", -1},  {"2.155", -1},
        {"1000.01", -1}, {"0", -1},         {"-2.5", -1},   {"\"2.5\"", -1},
        {"null", -1},    {"true", -1},      {"1e2", 10000}, {"4.35", 435},
        {"1.1", 110},    {"999.99", 99999},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *v = json_loads(cases[i].json, JSON_DECODE_ANY, NULL);
        int64_t got = -1;
        int rc;
        assert_non_null(v);
        rc = api_odds_parse(v, &got);
        if (rc != (cases[i].want < 0 ? -EINVAL : 0) ||
            (rc == 0 && got != cases[i].want))
            fail_msg("odds %s: got %d, %lld want %lld", cases[i].json, rc,
                     (long long)got, (long long)cases[i].want);
        json_decref(v);
    }
}

static void test_odds_print_exact(void **state)
{
    json_t *v = api_odds_json(215);
    char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_REAL_PRECISION(10));
    (void)state;
    assert_string_equal(s, "2.15");
    free(s);
    json_decref(v);
}

static void test_time_parse(void **state)
{
    char out[32];
    int64_t ms;
    (void)state;
    assert_int_equal(api_time_parse("2026-06-11T19:00:00Z", out, sizeof(out), &ms), 0);
    assert_string_equal(out, "2026-06-11 19:00:00.000");
    assert_int_equal(ms, 1781204400000LL);
    assert_int_equal(api_time_parse("2026-06-11T19:00:00.5Z", out, sizeof(out), &ms),
                     0);
    assert_string_equal(out, "2026-06-11 19:00:00.500");
    assert_int_equal(
        api_time_parse("2026-06-11T19:00:00+00:00", out, sizeof(out), NULL), 0);
    assert_int_equal(
        api_time_parse("2026-06-11T19:00:00+02:00", out, sizeof(out), NULL), -EINVAL);
    assert_int_equal(api_time_parse("2026-02-31T19:00:00Z", out, sizeof(out), NULL),
                     -EINVAL);
    assert_int_equal(api_time_parse("2026-06-11 19:00:00Z", out, sizeof(out), NULL),
                     -EINVAL);
    assert_int_equal(api_time_parse("yesterday", out, sizeof(out), NULL), -EINVAL);
    assert_int_equal(api_time_parse("2026-06-11T25:00:00Z", out, sizeof(out), NULL),
                     -EINVAL);
}

static void test_parse_id(void **state)
{
    uint64_t id;
    (void)state;
    assert_int_equal(api_parse_id("235539314929360897", &id), 0);
    assert_int_equal(id, 235539314929360897ULL);
    assert_int_equal(api_parse_id("9223372036854775807", &id), 0);
    assert_int_equal(api_parse_id("9223372036854775808", &id), -EINVAL);
    assert_int_equal(api_parse_id("0", &id), -EINVAL);
    assert_int_equal(api_parse_id("12a", &id), -EINVAL);
    assert_int_equal(api_parse_id("", &id), -EINVAL);
    assert_int_equal(api_parse_id("12345678901234567890", &id), -EINVAL);
}

static struct api_server *server(uint32_t ttl, uint8_t key_byte)
{
    struct api_conf conf;
    struct api_server *srv;

    api_conf_init(&conf);
    conf.port = 0; /* any free port: nothing connects */
    conf.threads = 1;
    conf.token_ttl_s = ttl;
    memset(conf.secret, key_byte, sizeof(conf.secret));
    assert_int_equal(api_server_create(&conf, NULL, &srv), 0);
    return srv;
}

static void test_token_roundtrip_and_tamper(void **state)
{
    struct api_server *srv = server(3600, 7), *other = server(3600, 8);
    struct api_auth auth = {0};
    char token[256], bad[256];
    (void)state;

    assert_int_equal(
        api_token_make(srv, 235539314929360897ULL, 42, 2, token, sizeof(token)), 0);
    assert_int_equal(api_token_check(srv, token, &auth), 0);
    assert_int_equal(auth.user_id, 235539314929360897ULL);
    assert_int_equal(auth.company_id, 42);
    assert_int_equal(auth.role, 2);
    /* Another key (a forged token) and every single-character change fail. */
    assert_int_not_equal(api_token_check(other, token, &auth), 0);
    for (size_t i = 0; i < strlen(token); i++) {
        if (token[i] == '.')
            continue;
        memcpy(bad, token, strlen(token) + 1);
        bad[i] = bad[i] == 'A' ? 'B' : 'A';
        if (api_token_check(srv, bad, &auth) == 0)
            fail_msg("tampered token accepted (char %zu)", i);
    }
    assert_int_not_equal(api_token_check(srv, "", &auth), 0);
    assert_int_not_equal(api_token_check(srv, "abc.def", &auth), 0);
    assert_int_not_equal(api_token_check(srv, ".", &auth), 0);
    api_server_destroy(srv);
    api_server_destroy(other);
}

static void test_token_expired(void **state)
{
    struct api_server *srv = server(0, 7);
    struct api_auth auth;
    char token[256];
    (void)state;

    assert_int_equal(api_token_make(srv, 1, 1, 0, token, sizeof(token)), 0);
    assert_int_not_equal(api_token_check(srv, token, &auth), 0);
    api_server_destroy(srv);
}

static void test_password_hash(void **state)
{
    char hash[256];
    (void)state;
    assert_int_equal(api_password_hash("correct horse", hash, sizeof(hash)), 0);
    assert_non_null(strstr(hash, "$argon2id$"));
    assert_int_equal(api_password_verify(hash, "correct horse"), 0);
    assert_int_not_equal(api_password_verify(hash, "correct horsf"), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_odds_parse),
        cmocka_unit_test(test_odds_print_exact),
        cmocka_unit_test(test_time_parse),
        cmocka_unit_test(test_parse_id),
        cmocka_unit_test(test_token_roundtrip_and_tamper),
        cmocka_unit_test(test_token_expired),
        cmocka_unit_test(test_password_hash),
    };
    return cmocka_run_group_tests_name("api", tests, NULL, NULL);
}
