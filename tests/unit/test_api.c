/*
 * test_api.c: unit tests of the API server's parts that need no database:
 * odds and time parsing, ids, tokens (forged, tampered, expired), password
 * hashes, and the server's ownership of its background jobs (the routes
 * and the access check: test_api_routes.c).
 * Servers are created without a router: no request reaches them.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>

#include "api/api_int.h"

static void test_odds_parse(void **state)
{
    static const struct {
        const char *json;
        int64_t want;
    } cases[] = {
        {"1.01", 101},
        {"2.15", 215},
        {"3.4", 340},
        {"1000", 100000},
        {"2", 200},
        {"1.00", -1},
        {"1.005", -1},
        {"2.155", -1},
        {"1000.01", -1},
        {"0", -1},
        {"-2.5", -1},
        {"\"2.5\"", -1},
        {"null", -1},
        {"true", -1},
        {"1e2", 10000},
        {"4.35", 435},
        {"1.1", 110},
        {"999.99", 99999},
        /* the next double after 2.3: more than two decimals */
        {"2.3000000000000003", -1},
        /* the same double as 2.5: cannot be told from it */
        {"2.50000000000000000001", 250},
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
    /* Every number of hundredths from 1.01 to 1000.00, as a client writes it. */
    for (int64_t h = 101; h <= 100000; h++) {
        char text[32];
        json_t *v;
        int64_t got = -1;

        snprintf(text, sizeof(text), "%lld.%02lld", (long long)(h / 100),
                 (long long)(h % 100));
        v = json_loads(text, JSON_DECODE_ANY, NULL);
        assert_non_null(v);
        if (api_odds_parse(v, &got) != 0 || got != h)
            fail_msg("odds %s: got %lld", text, (long long)got);
        json_decref(v);
    }
}

/* --set values: decimal numbers in range, whole where the key wants it. */
static void test_conf_set_values(void **state)
{
    static const char *const bad[] = {"0x10", "1e3",   "inf", "nan", "-1",
                                      "",     "1.5.1", " 2",  "2 "};
    struct api_conf conf;
    char err[256];
    (void)state;

    api_conf_init(&conf);
    assert_int_equal(api_conf_set(&conf, "login_addr_rate", "0.5", err, sizeof(err)),
                     0);
    assert_true(conf.limits.login_addr.per_s == 0.5);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (api_conf_set(&conf, "login_addr_rate", bad[i], err, sizeof(err)) != -EINVAL)
            fail_msg("login_addr_rate=%s was taken", bad[i]);
        assert_non_null(strstr(err, "wants a decimal number from 0 to 1000000"));
    }
    assert_int_equal(api_conf_set(&conf, "login_addr_burst", "2.5", err, sizeof(err)),
                     -EINVAL);
    assert_non_null(strstr(err, "wants a whole number from "));
    assert_null(strstr(err, "e+"));
}

/* Address lists: every item an IPv4 address or network; an empty item is
 * refused and a refused list changes nothing; an empty value is no address. */
static void test_conf_set_nets(void **state)
{
    static const char *const bad[] = {
        "1.2.3.4,",  ",1.2.3.4",       "1.2.3.4,,5.6.7.8", "1.2.3.4, ,5.6.7.8",
        "10.0.0.0/", "10.0.0.0/+8",    "10.0.0.0/ 8",      "10.0.0.0/33",
        "1.2.3",     "1.2.3.4 5.6.7.8"};
    struct api_conf conf;
    char err[256];
    (void)state;

    api_conf_init(&conf);
    assert_int_equal(api_conf_set(&conf, "trusted_proxies",
                                  " 10.0.1.11/32 , 10.0.0.0/8", err, sizeof(err)),
                     0);
    assert_int_equal(conf.limits.trusted.n, 2);
    assert_true(api_net_match(&conf.limits.trusted, inet_addr("10.200.0.1")));
    assert_true(api_net_match(&conf.limits.trusted, inet_addr("10.0.1.11")));
    assert_false(api_net_match(&conf.limits.trusted, inet_addr("11.0.0.1")));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (api_conf_set(&conf, "trusted_proxies", bad[i], err, sizeof(err)) != -EINVAL)
            fail_msg("trusted_proxies=%s was taken", bad[i]);
        assert_non_null(strstr(err, "trusted_proxies: "));
        assert_int_equal(conf.limits.trusted.n, 2);
    }
    assert_int_equal(
        api_conf_set(&conf, "trusted_proxies", "1.2.3.4,", err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "an empty item"));
    assert_int_equal(api_conf_set(&conf, "metrics_from", "", err, sizeof(err)), 0);
    assert_int_equal(conf.limits.metrics_from.n, 0);
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

/*
 * A cursor is exactly what api_cursor_json() writes: 'c' and 1..16 lower-case
 * hex digits. Guards the review finding of strtoull taking white space, signs
 * and "0x" in a client's cursor.
 */
static void test_cursor_parse_exact(void **state)
{
    static const char *const bad[] = {"",
                                      "c",
                                      "x1f",
                                      "C1f",
                                      "c1F",
                                      "c 1f",
                                      "c+1f",
                                      "c-1",
                                      "c0x1f",
                                      "c1f ",
                                      " c1f",
                                      "c\t1",
                                      "c0",
                                      "c0000",
                                      "c10000000000000000",
                                      "c1g",
                                      "cffffffffffffffff0",
                                      "c0001",
                                      "c01",
                                      "c8000000000000000",
                                      "cffffffffffffffff"};
    uint64_t v = 7;
    json_t *j;

    (void)state;
    assert_int_equal(api_parse_cursor("c1f", &v), 0);
    assert_int_equal(v, 0x1f);
    assert_int_equal(api_parse_cursor("c7fffffffffffffff", &v), 0);
    assert_int_equal(v, INT64_MAX);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        v = 7;
        if (api_parse_cursor(bad[i], &v) != -EINVAL || v != 7) {
            print_error("cursor \"%s\" was accepted\n", bad[i]);
            fail();
        }
    }
    /* What the server hands out comes back as the same id. */
    j = api_cursor_json(235539314929360897ULL, 1);
    assert_int_equal(api_parse_cursor(json_string_value(j), &v), 0);
    assert_int_equal(v, 235539314929360897ULL);
    json_decref(j);
}

/* ?limit= is 1..500 in decimal digits only (strtol took " 5", "+5", "5 "). */
static void test_limit_parse_exact(void **state)
{
    static const char *const bad[] = {"",   "0",  "501",  "1000", " 5",  "+5",
                                      "-5", "5 ", "0x10", "5a",   "1e2", "0500"};
    int v = 7;

    (void)state;
    assert_int_equal(api_parse_limit("1", &v), 0);
    assert_int_equal(v, 1);
    assert_int_equal(api_parse_limit("500", &v), 0);
    assert_int_equal(v, 500);
    assert_int_equal(api_parse_limit("050", &v), 0);
    assert_int_equal(v, 50);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        v = 7;
        if (api_parse_limit(bad[i], &v) != -EINVAL || v != 7) {
            print_error("limit \"%s\" was accepted\n", bad[i]);
            fail();
        }
    }
}

/* A time's fields are digits: sscanf's %d took white space and signs. */
static void test_time_parse_digits_only(void **state)
{
    static const char *const bad[] = {"2026-+6-11T19:00:00Z",   "2026- 6-11T19:00:00Z",
                                      "+026-06-11T19:00:00Z",   "2026-06-11T19:00:+0Z",
                                      "2026-06-11T 9:00:00.5Z", "2026-06-11t19:00:00Z"};
    char out[32];

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (api_time_parse(bad[i], out, sizeof(out), NULL) != -EINVAL) {
            print_error("time \"%s\" was accepted\n", bad[i]);
            fail();
        }
    }
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

static int access_accepted(struct api_server *srv, const char *token)
{
    struct api_auth auth = {0};

    return api_token_check(srv, token, &auth) == 0;
}

static int device_accepted(struct api_server *srv, const char *token)
{
    uint64_t uid;

    return api_device_check(srv, token, &uid) == 0;
}

/* Every single-character change of token (its dot apart) is refused. */
static void every_change_refused(struct api_server *srv, const char *token,
                                 int (*accepted)(struct api_server *, const char *))
{
    char bad[256];

    for (size_t i = 0; i < strlen(token); i++) {
        if (token[i] == '.')
            continue;
        memcpy(bad, token, strlen(token) + 1);
        bad[i] = bad[i] == 'A' ? 'B' : 'A';
        if (accepted(srv, bad))
            fail_msg("tampered token accepted (char %zu): %s", i, bad);
    }
}

static void test_token_roundtrip_and_tamper(void **state)
{
    struct api_server *srv = server(3600, 7), *other = server(3600, 8);
    struct api_auth auth = {0};
    char token[256];
    (void)state;

    assert_int_equal(
        api_token_make(srv, 235539314929360897ULL, 42, 2, token, sizeof(token)), 0);
    assert_int_equal(api_token_check(srv, token, &auth), 0);
    assert_int_equal(auth.user_id, 235539314929360897ULL);
    assert_int_equal(auth.company_id, 42);
    assert_int_equal(auth.role, 2);
    /* Another key (a forged token) and every single-character change fail. */
    assert_int_not_equal(api_token_check(other, token, &auth), 0);
    every_change_refused(srv, token, access_accepted);
    assert_int_not_equal(api_token_check(srv, "", &auth), 0);
    assert_int_not_equal(api_token_check(srv, "abc.def", &auth), 0);
    assert_int_not_equal(api_token_check(srv, ".", &auth), 0);
    api_server_destroy(srv);
    api_server_destroy(other);
}

static struct api_server *server_keys(uint8_t sign, const uint8_t *old, uint32_t nold)
{
    struct api_conf conf;
    struct api_server *srv;

    api_conf_init(&conf);
    conf.port = 0;
    conf.threads = 1;
    conf.token_ttl_s = 3600;
    memset(conf.secret, sign, sizeof(conf.secret));
    for (uint32_t i = 0; i < nold; i++)
        memset(conf.old_secrets[i], old[i], sizeof(conf.old_secrets[i]));
    conf.nold_secret = nold;
    assert_int_equal(api_server_create(&conf, NULL, &srv), 0);
    return srv;
}

/* base64url(payload) "." base64url(HMAC-SHA256(key of bytes key_byte, payload)). */
static void sign_payload(const char *payload, uint8_t key_byte, char *out, size_t size)
{
    unsigned char key[32], mac[crypto_auth_hmacsha256_BYTES];
    size_t len;

    memset(key, key_byte, sizeof(key));
    crypto_auth_hmacsha256(mac, (const unsigned char *)payload, strlen(payload), key);
    sodium_bin2base64(out, size, (const unsigned char *)payload, strlen(payload),
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    len = strlen(out);
    out[len++] = '.';
    sodium_bin2base64(out + len, size - len, mac, sizeof(mac),
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

/*
 * A token names the key that signed it; a server accepts its signing key and
 * its older keys, refuses any other and a token whose key id was changed.
 * Guards the review finding of tokens without a key id (no rotation).
 */
static void test_token_key_rotation(void **state)
{
    static const uint8_t k1_only[] = {1};
    struct api_server *before = server(3600, 1);           /* signs with k1 */
    struct api_server *after = server_keys(2, k1_only, 1); /* k2, accepts k1 */
    struct api_server *stranger = server(3600, 3);         /* k3: unknown to both */
    struct api_auth auth = {0};
    char token[256], forged[256], payload[160], kid1[API_KEY_ID_LEN + 1],
        kid2[API_KEY_ID_LEN + 1];
    unsigned char raw[160];
    uint8_t key[32];
    size_t plen;
    const char *dot;
    (void)state;

    memset(key, 1, sizeof(key));
    api_key_id(key, kid1);
    memset(key, 2, sizeof(key));
    api_key_id(key, kid2);
    assert_string_not_equal(kid1, kid2);

    /* Signed by the old key: accepted by the server that rotated. */
    assert_int_equal(api_token_make(before, 77, 5, 1, token, sizeof(token)), 0);
    assert_int_equal(api_token_check(after, token, &auth), 0);
    assert_int_equal(auth.user_id, 77);
    assert_int_equal(auth.company_id, 5);
    assert_int_equal(auth.role, 1);

    /* Signed by the new key: it says so; a server without that key refuses. */
    assert_int_equal(api_token_make(after, 78, 5, 0, token, sizeof(token)), 0);
    dot = strchr(token, '.');
    assert_non_null(dot);
    assert_int_equal(sodium_base642bin(raw, sizeof(raw) - 1, token,
                                       (size_t)(dot - token), NULL, &plen, NULL,
                                       sodium_base64_VARIANT_URLSAFE_NO_PADDING),
                     0);
    raw[plen] = '\0';
    snprintf(payload, sizeof(payload), "2:%s:78:5:0:", kid2);
    assert_memory_equal(raw, payload, strlen(payload));
    assert_int_equal(api_token_check(after, token, &auth), 0);
    assert_int_equal(auth.user_id, 78);
    assert_int_equal(api_token_check(before, token, &auth), -EACCES);

    /* Signed by an unknown key: refused. */
    assert_int_equal(api_token_make(stranger, 79, 5, 0, token, sizeof(token)), 0);
    assert_int_equal(api_token_check(after, token, &auth), -EACCES);
    assert_int_equal(api_token_check(before, token, &auth), -EACCES);

    /* Tampered: the key id changed to another accepted key's, the MAC kept. */
    assert_int_equal(api_token_make(after, 80, 5, 0, token, sizeof(token)), 0);
    dot = strchr(token, '.');
    assert_int_equal(sodium_base642bin(raw, sizeof(raw) - 1, token,
                                       (size_t)(dot - token), NULL, &plen, NULL,
                                       sodium_base64_VARIANT_URLSAFE_NO_PADDING),
                     0);
    memcpy(raw + 2, kid1, API_KEY_ID_LEN);
    sodium_bin2base64(forged, sizeof(forged), raw, plen,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    strcat(forged, dot);
    assert_int_equal(api_token_check(after, forged, &auth), -EACCES);
    /* ... or signed by k1 with k2's id: the named key does not verify it. */
    snprintf(payload, sizeof(payload), "2:%s:81:5:2:%lld", kid2,
             (long long)time(NULL) + 600);
    sign_payload(payload, 1, forged, sizeof(forged));
    assert_int_equal(api_token_check(after, forged, &auth), -EACCES);
    snprintf(payload, sizeof(payload), "2:%s:81:5:2:%lld", kid1,
             (long long)time(NULL) + 600);
    sign_payload(payload, 1, forged, sizeof(forged));
    assert_int_equal(api_token_check(after, forged, &auth), 0);
    assert_int_equal(auth.user_id, 81);

    /* The first format (no key id) still passes with any accepted key. */
    snprintf(payload, sizeof(payload), "1:82:5:0:%lld", (long long)time(NULL) + 600);
    sign_payload(payload, 1, forged, sizeof(forged));
    assert_int_equal(api_token_check(after, forged, &auth), 0);
    assert_int_equal(auth.user_id, 82);
    sign_payload(payload, 3, forged, sizeof(forged));
    assert_int_equal(api_token_check(after, forged, &auth), -EACCES);
    /* An unknown version signed by a good key is still not a token. */
    snprintf(payload, sizeof(payload), "3:82:5:0:%lld", (long long)time(NULL) + 600);
    sign_payload(payload, 2, forged, sizeof(forged));
    assert_int_equal(api_token_check(after, forged, &auth), -EINVAL);

    api_server_destroy(before);
    api_server_destroy(after);
    api_server_destroy(stranger);
}

/* The secret file: the signing key first, then older keys; errors name the line. */
static void test_secrets_parse(void **state)
{
    static const char k1[] =
        "0101010101010101010101010101010101010101010101010101010101010101";
    static const char k2[] =
        "0202020202020202020202020202020202020202020202020202020202020202";
    struct api_conf conf;
    char text[1024], err[256];
    uint8_t want[32];
    (void)state;

    api_conf_init(&conf);
    snprintf(text, sizeof(text), "# signing key first\n%s\n\n  %s \r\n", k2, k1);
    assert_int_equal(api_secrets_parse(&conf, text, "f", err, sizeof(err)), 0);
    memset(want, 2, sizeof(want));
    assert_memory_equal(conf.secret, want, 32);
    assert_int_equal(conf.nold_secret, 1);
    memset(want, 1, sizeof(want));
    assert_memory_equal(conf.old_secrets[0], want, 32);

    /* One key, no newline: the file of before. */
    assert_int_equal(api_secrets_parse(&conf, k1, "f", err, sizeof(err)), 0);
    assert_int_equal(conf.nold_secret, 0);
    assert_memory_equal(conf.secret, want, 32);

    snprintf(text, sizeof(text), "%s\n#\n%.63s\n", k1, k2);
    assert_int_equal(api_secrets_parse(&conf, text, "f", err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "f:3: want 64 hex characters (a 32-byte key)");
    snprintf(text, sizeof(text), "%s\n%s\n", k1, k1);
    assert_int_equal(api_secrets_parse(&conf, text, "f", err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "f:2: the same key as line 1");
    assert_int_equal(api_secrets_parse(&conf, "# none\n\n", "f", err, sizeof(err)),
                     -EINVAL);
    assert_string_equal(err, "f: no key (64 hex characters a line)");
    text[0] = '\0';
    for (int i = 0; i <= API_MAX_KEYS; i++)
        snprintf(text + strlen(text), sizeof(text) - strlen(text), "%062x%02x\n", 0u,
                 i);
    assert_int_equal(api_secrets_parse(&conf, text, "f", err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "f:9: more than 8 keys");
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

/*
 * A device token names its user and verifies with the key that signed it
 * (or after a rotation); it is no access token and an access token is no
 * device token; a tampered one, another key's, or an expired one fails.
 */
static void test_device_token(void **state)
{
    struct api_server *srv = server(3600, 7), *other = server(3600, 8);
    static const uint8_t old = 7;
    struct api_server *rotated = server_keys(9, &old, 1);
    struct api_auth auth = {0};
    char device[256], token[256];
    uint64_t uid = 0;
    struct api_conf conf;
    struct api_server *expired;
    (void)state;

    assert_int_equal(
        api_device_make(srv, 235539314929360897ULL, device, sizeof(device)), 0);
    assert_int_equal(api_device_check(srv, device, &uid), 0);
    assert_int_equal(uid, 235539314929360897ULL);
    uid = 0;
    assert_int_equal(api_device_check(rotated, device, &uid), 0);
    assert_int_equal(uid, 235539314929360897ULL);
    assert_int_equal(api_device_check(other, device, &uid), -EACCES);
    assert_int_equal(api_token_check(srv, device, &auth), -EINVAL);
    assert_int_equal(api_token_make(srv, 5, 1, 0, token, sizeof(token)), 0);
    assert_int_equal(api_device_check(srv, token, &uid), -EINVAL);
    every_change_refused(srv, device, device_accepted);
    assert_int_equal(api_device_check(srv, "", &uid), -EINVAL);
    /* A life of 0 days is refused by the key; forced here, it has expired. */
    api_conf_init(&conf);
    conf.port = 0;
    conf.threads = 1;
    conf.limits.device_ttl_days = 0;
    memset(conf.secret, 7, sizeof(conf.secret));
    assert_int_equal(api_server_create(&conf, NULL, &expired), 0);
    assert_int_equal(api_device_make(expired, 1, device, sizeof(device)), 0);
    assert_int_equal(api_device_check(srv, device, &uid), -ETIMEDOUT);
    api_server_destroy(expired);
    api_server_destroy(rotated);
    api_server_destroy(other);
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

/* ---- background jobs belong to their server ---- */

struct probe {
    atomic_int started, finished;
};

/* Runs until its server asks it to stop, then takes a while to finish. */
static void blocking_job(struct api_job *job, uint64_t key, void *arg)
{
    struct probe *p = arg;
    (void)key;

    atomic_fetch_add(&p->started, 1);
    while (!api_job_stopping(job))
        api_job_sleep(job, 60000);
    usleep(50000); /* the shard in hand: destroy must wait for it */
    atomic_fetch_add(&p->finished, 1);
}

static void quick_job(struct api_job *job, uint64_t key, void *arg)
{
    struct probe *p = arg;
    (void)job;
    (void)key;

    atomic_fetch_add(&p->finished, 1);
}

static void wait_for(atomic_int *v, int want)
{
    for (int i = 0; i < 5000 && atomic_load(v) < want; i++)
        usleep(1000);
    assert_int_equal(atomic_load(v), want);
}

static double seconds_since(const struct timespec *t0)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

/*
 * Regression: settlements were detached threads with file-static state, so
 * the first server to stop stopped every server's settlements, and a stopped
 * server's thread could outlive it (and the router).
 */
static void test_server_destroy_joins_its_jobs_only(void **state)
{
    struct api_server *a = server(3600, 1), *b = server(3600, 2);
    struct probe pa = {0}, pb = {0};
    struct timespec t0;
    (void)state;

    /* One job per key and server: the same match runs on both servers. */
    assert_int_equal(api_jobs_start(api_server_jobs(a), 7, blocking_job, &pa), 0);
    assert_int_equal(api_jobs_start(api_server_jobs(b), 7, blocking_job, &pb), 0);
    assert_int_equal(api_jobs_start(api_server_jobs(a), 7, blocking_job, &pa),
                     BC_EEXISTS);
    wait_for(&pa.started, 1);
    wait_for(&pb.started, 1);
    assert_true(api_jobs_running(api_server_jobs(a), 7));
    assert_false(api_jobs_running(api_server_jobs(a), 8));

    /* Destroy wakes the sleeping job and waits for it to finish. */
    clock_gettime(CLOCK_MONOTONIC, &t0);
    api_server_destroy(a);
    assert_int_equal(atomic_load(&pa.finished), 1);
    assert_true(seconds_since(&t0) < 10);

    /* The other server's job was not asked to stop. */
    usleep(100000);
    assert_int_equal(atomic_load(&pb.finished), 0);
    assert_true(api_jobs_running(api_server_jobs(b), 7));
    api_server_destroy(b);
    assert_int_equal(atomic_load(&pb.finished), 1);
}

static void test_jobs_finished_are_reaped_and_bounded(void **state)
{
    struct api_server *srv = server(3600, 1);
    struct api_jobs *jobs = api_server_jobs(srv);
    struct probe p = {0}, q = {0};
    (void)state;

    /* A finished job frees its key and its slot for the next start. */
    for (int i = 1; i <= 200; i++) {
        assert_int_equal(api_jobs_start(jobs, 3, quick_job, &p), 0);
        wait_for(&p.finished, i);
        while (api_jobs_running(jobs, 3))
            usleep(100);
    }
    /* At most 64 at once; the next one is refused, not queued. */
    for (uint64_t k = 1; k <= 64; k++)
        assert_int_equal(api_jobs_start(jobs, k, blocking_job, &q), 0);
    assert_int_equal(api_jobs_start(jobs, 65, blocking_job, &q), -EAGAIN);
    wait_for(&q.started, 64);
    api_server_destroy(srv);
    assert_int_equal(atomic_load(&q.finished), 64);
}

static int thread_nice_now(void)
{
    return getpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid));
}

/* Stores its thread's nice value + 100 (0 until it ran). */
static void nice_job(struct api_job *job, uint64_t key, void *arg)
{
    atomic_int *out = arg;
    (void)job;
    (void)key;

    atomic_store(out, thread_nice_now() + 100);
}

/* A job's thread runs background_nice steps below the thread that made the server. */
static void test_jobs_run_below_the_server(void **state)
{
    int base = thread_nice_now();
    (void)state;

    for (uint32_t nice = 0; nice <= 10; nice += 5) {
        struct api_conf conf;
        struct api_server *srv;
        atomic_int got = 0;

        api_conf_init(&conf);
        conf.port = 0;
        conf.threads = 1;
        conf.limits.background_nice = nice;
        assert_int_equal(api_server_create(&conf, NULL, &srv), 0);
        assert_int_equal(api_jobs_start(api_server_jobs(srv), 1, nice_job, &got), 0);
        for (int i = 0; i < 5000 && atomic_load(&got) == 0; i++)
            usleep(1000);
        assert_int_equal(atomic_load(&got) - 100,
                         base + (int)nice > 19 ? 19 : base + (int)nice);
        api_server_destroy(srv);
    }
    /* The thread that made them keeps its own. */
    assert_int_equal(thread_nice_now(), base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_odds_parse),
        cmocka_unit_test(test_conf_set_values),
        cmocka_unit_test(test_conf_set_nets),
        cmocka_unit_test(test_odds_print_exact),
        cmocka_unit_test(test_time_parse),
        cmocka_unit_test(test_parse_id),
        cmocka_unit_test(test_cursor_parse_exact),
        cmocka_unit_test(test_limit_parse_exact),
        cmocka_unit_test(test_time_parse_digits_only),
        cmocka_unit_test(test_token_roundtrip_and_tamper),
        cmocka_unit_test(test_token_key_rotation),
        cmocka_unit_test(test_secrets_parse),
        cmocka_unit_test(test_token_expired),
        cmocka_unit_test(test_device_token),
        cmocka_unit_test(test_password_hash),
        cmocka_unit_test(test_server_destroy_joins_its_jobs_only),
        cmocka_unit_test(test_jobs_finished_are_reaped_and_bounded),
        cmocka_unit_test(test_jobs_run_below_the_server),
    };
    return cmocka_run_group_tests_name("api", tests, NULL, NULL);
}
