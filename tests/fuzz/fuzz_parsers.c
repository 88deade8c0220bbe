/*
 * fuzz_parsers.c: libFuzzer harness of the small parsers of client input:
 * ids in paths and bodies (api_parse_id), shard-carrying ids
 * (shardmap_id_pack/unpack), list cursors (api_cursor) and limits
 * (api_limit), bearer and device tokens (api_token_check,
 * api_device_check), times (api_time_parse),
 * odds (api_odds_parse), e-mails (shardmap_canonical_email), the server's
 * token secret file and abuse limits, and the access log's escaping.
 *
 * The input's first byte picks the parser, the rest is its text: '0' ids,
 * '1' shard ids (8 bytes), '2' cursors, '3' limits, '4' tokens, '5' signed
 * token payloads, '6' times, '7' odds (JSON), '8' e-mails, '9' signed
 * fields of a token naming its key ("2:<key id>:", or "d:<key id>:" for a
 * device token when the fields' first byte is odd, is put before them),
 * ':' token secret files (api_secrets_parse), ';' abuse limits
 * "key=value" (api_conf_set), '<' a URL escaped for the access log
 * (api_log_escape; the next byte sets the buffer's size). Beyond "no
 * crash, no leak", each parser's answer is checked against what it
 * promises: what it accepts prints back to what it read, and what it
 * refuses it answers with a 4xx.
 *
 * Tokens: a random token cannot carry a valid MAC, so besides tokens as
 * they come (which must all be refused), the harness signs the input as a
 * token's payload with the server's key (base64url(payload) "."
 * base64url(HMAC-SHA256)), which reaches the payload's parsing.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "api/api_int.h"
#include "tests/fuzz/fuzz.h"

static struct api_server *srv;
static uint8_t secret[32];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;

    memset(secret, FUZZ_SECRET_BYTE, sizeof(secret));
    srv = fuzz_api_server();
    return 0;
}

static void parse_id(const char *s, const uint8_t *raw, size_t n)
{
    uint64_t id = 0, again = 0;
    char buf[24];

    if (api_parse_id(s, &id) == 0) {
        snprintf(buf, sizeof(buf), "%" PRIu64, id);
        if (id == 0 || id > (uint64_t)INT64_MAX ||
            strspn(s, "0123456789") != strlen(s) || api_parse_id(buf, &again) != 0 ||
            again != id)
            fuzz_fail("id '%s' accepted as %" PRIu64, s, id);
    }
    /* The path matcher's form: not NUL-terminated, digits only. */
    if (api_parse_id_n((const char *)raw, n, &id) == 0 && n > 0 &&
        memchr(raw, '\0', n) != NULL)
        fuzz_fail("id with a NUL byte accepted");
}

static void shard_id(const uint8_t *raw, size_t n)
{
    struct shardmap_id parts, back;
    uint64_t id = 0, again;

    if (n < 8)
        return;
    memcpy(&id, raw, sizeof(id));
    if (shardmap_id_unpack(id, &parts) == 0 &&
        (shardmap_id_pack(&parts, &again) != 0 || again != id))
        fuzz_fail("id %" PRIu64 " does not pack back", id);
    parts.ms = id >> 20;
    parts.shard = (uint32_t)(id >> 4) & 0x3fff;
    parts.seq = (uint32_t)id & 0x7ff;
    /* (All parts 0 pack to id 0, which no id is: the epoch's first ms, past.) */
    if (shardmap_id_pack(&parts, &again) == 0 && again != 0 &&
        (shardmap_id_unpack(again, &back) != 0 || back.ms != parts.ms ||
         back.shard != parts.shard || back.seq != parts.seq ||
         shardmap_id_shard(again) != parts.shard))
        fuzz_fail("parts do not unpack back");
}

/* A request whose only query argument is name=value. */
static void query_req(struct api_req *req, struct fuzz_conn *conn, const char *name,
                      const char *value)
{
    memset(req, 0, sizeof(*req));
    memset(conn, 0, sizeof(*conn));
    conn->arg[0].name = name;
    conn->arg[0].value = value;
    conn->narg = 1;
    req->srv = srv;
    req->conn = (struct MHD_Connection *)(void *)conn;
    req->method = "GET";
    req->url = "/v1/me/bets";
    fuzz_conn_set(conn);
}

static void cursor(const char *s)
{
    struct fuzz_conn conn;
    struct api_req req;
    uint64_t c = 0, again = 0;
    int rc;

    query_req(&req, &conn, "cursor", s);
    rc = api_cursor(&req, &c);
    if (rc == 0 && s[0] != '\0') {
        /* What it accepts is one it gives out: 'c' and lower-case hex, not 0. */
        json_t *out = api_cursor_json(c, 1);
        if (c == 0 || strspn(s + 1, "0123456789abcdef") != strlen(s + 1))
            fuzz_fail("cursor '%s' accepted as %" PRIu64, s, c);
        free(req.resp);
        query_req(&req, &conn, "cursor", json_string_value(out));
        if (api_cursor(&req, &again) != 0 || again != c)
            fuzz_fail("cursor %" PRIu64 " does not read back", c);
        json_decref(out);
    } else if (rc != 0 && req.status != 400) {
        fuzz_fail("cursor '%s' refused with %d", s, req.status);
    }
    free(req.resp);
    fuzz_conn_set(NULL);
}

static void limit(const char *s)
{
    struct fuzz_conn conn;
    struct api_req req;
    int n = 0, rc;

    query_req(&req, &conn, "limit", s);
    rc = api_limit(&req, &n);
    if ((rc == 0 && (n < 1 || n > 500)) || (rc != 0 && req.status != 400))
        fuzz_fail("limit '%s': %d, %d", s, rc, n);
    free(req.resp);
    fuzz_conn_set(NULL);
}

static void token(const char *s)
{
    struct api_auth auth = {0};

    uint64_t uid;

    if (api_token_check(srv, s, &auth) == 0)
        fuzz_fail("a token the server did not make was accepted: '%s'", s);
    if (api_device_check(srv, s, &uid) == 0)
        fuzz_fail("a device token the server did not make was accepted: '%s'", s);
}

/* The input signed as a token's payload: reaches the payload's parsing. */
static void signed_token(const uint8_t *payload, size_t n)
{
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    char tok[600];
    struct api_auth auth = {0};
    size_t len;

    if (n > 200)
        return;
    crypto_auth_hmacsha256(mac, payload, n, secret);
    sodium_bin2base64(tok, sizeof(tok), payload, n,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    len = strlen(tok);
    tok[len++] = '.';
    sodium_bin2base64(tok + len, sizeof(tok) - len, mac, sizeof(mac),
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    uint64_t uid;

    if (api_token_check(srv, tok, &auth) == 0 && !auth.ok)
        fuzz_fail("token accepted without auth.ok");
    if (api_token_check(srv, tok, &auth) == 0 && api_device_check(srv, tok, &uid) == 0)
        fuzz_fail("one token accepted as access and as device token");
}

/*
 * The input signed as the fields of a token of the current format,
 * "2:<key id>:", or of a device token, "d:<key id>:", as its first byte says.
 */
static void signed_token_v2(const uint8_t *raw, size_t n)
{
    uint8_t payload[256];
    char kid[API_KEY_ID_LEN + 1];

    if (n > 200)
        return;
    api_key_id(secret, kid);
    payload[0] = n > 0 && raw[0] % 2 == 1 ? 'd' : '2';
    payload[1] = ':';
    memcpy(payload + 2, kid, API_KEY_ID_LEN);
    payload[2 + API_KEY_ID_LEN] = ':';
    memcpy(payload + 3 + API_KEY_ID_LEN, raw, n);
    signed_token(payload, n + 3 + API_KEY_ID_LEN);
}

/* A token secret file: refused with a message naming it, or keys within bounds. */
static void secrets(const char *s)
{
    struct api_conf conf;
    char err[256] = "";
    int rc;

    api_conf_init(&conf);
    rc = api_secrets_parse(&conf, s, "secret", err, sizeof(err));
    if (rc != 0 && (rc != -EINVAL || strncmp(err, "secret", 6) != 0))
        fuzz_fail("secrets refused (%d) without a message naming the file", rc);
    if (rc == 0 && conf.nold_secret > API_MAX_KEYS - 1)
        fuzz_fail("secrets: %u old keys", conf.nold_secret);
}

/* One limit, "key=value" (betcity-api --set): refused with a message. */
static void limit_set(char *s)
{
    struct api_conf conf;
    char err[256] = "", *eq = strchr(s, '=');
    int rc;

    if (eq == NULL)
        return;
    *eq = '\0';
    api_conf_init(&conf);
    rc = api_conf_set(&conf, s, eq + 1, err, sizeof(err));
    if (rc != 0 && (rc != -EINVAL || err[0] == '\0'))
        fuzz_fail("limit '%s' refused (%d) without a message", s, rc);
}

/* The access log's escaping of a URL (api_log_escape) into 1..64 bytes. */
static void log_escape(const uint8_t *raw, size_t n)
{
    size_t size = n > 0 ? (size_t)raw[0] % 64 + 1 : 1;
    char *in = malloc(n + 1), *out = malloc(size); /* exact: ASan sees an overrun */

    if (in == NULL || out == NULL)
        goto out;
    if (n > 1)
        memcpy(in, raw + 1, n - 1);
    in[n > 0 ? n - 1 : 0] = '\0';
    api_log_escape(in, out, size);
    if (strlen(out) >= size)
        fuzz_fail("log escape: %zu bytes into %zu", strlen(out), size);
    for (const char *p = out; *p != '\0'; p++)
        if (*p <= ' ' || *p >= 0x7f)
            fuzz_fail("log escape: byte 0x%02x left as it is", (unsigned char)*p);
out:
    free(in);
    free(out);
}

static void time_parse(const char *s)
{
    char out[32], rfc[40];
    int64_t ms = 0, again = 0;

    if (api_time_parse(s, out, sizeof(out), &ms) != 0)
        return;
    if (strlen(out) != 23)
        fuzz_fail("time '%s' gives '%s'", s, out);
    snprintf(rfc, sizeof(rfc), "%.10sT%.12sZ", out, out + 11);
    if (api_time_parse(rfc, out, sizeof(out), &again) != 0 || again != ms)
        fuzz_fail("time '%s' does not read back ('%s')", s, rfc);
}

static void odds(const uint8_t *raw, size_t n)
{
    json_t *v = json_loadb((const char *)raw, n, JSON_DECODE_ANY, NULL), *out;
    int64_t h = 0, again = 0;

    if (v == NULL)
        return;
    if (api_odds_parse(v, &h) == 0) {
        if (h < 101 || h > 100000)
            fuzz_fail("odds accepted as %" PRId64 " hundredths", h);
        out = api_odds_json(h);
        if (api_odds_parse(out, &again) != 0 || again != h)
            fuzz_fail("odds %" PRId64 " do not read back", h);
        json_decref(out);
    }
    json_decref(v);
}

static void email(const char *s)
{
    char out[256], again[256];
    int n = shardmap_canonical_email(s, out, sizeof(out));

    if (n < 0)
        return;
    if ((size_t)n != strlen(out) || n == 0)
        fuzz_fail("email '%s': length %d of '%s'", s, n, out);
    for (int i = 0; i < n; i++)
        if (out[i] >= 'A' && out[i] <= 'Z')
            fuzz_fail("email '%s': '%s' is not lower case", s, out);
    if (shardmap_canonical_email(out, again, sizeof(again)) != n ||
        strcmp(out, again) != 0)
        fuzz_fail("email '%s': canonical form '%s' is not stable", s, out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *raw = data + 1;
    size_t n = size - 1;
    char *s;

    if (size < 1)
        return 0;
    s = malloc(n + 1);
    if (s == NULL)
        return 0;
    memcpy(s, raw, n);
    s[n] = '\0';
    switch ((uint8_t)(data[0] - (uint8_t)'0') % 13) {
    case 0:
        parse_id(s, raw, n);
        break;
    case 1:
        shard_id(raw, n);
        break;
    case 2:
        cursor(s);
        break;
    case 3:
        limit(s);
        break;
    case 4:
        token(s);
        break;
    case 5:
        signed_token(raw, n);
        break;
    case 6:
        time_parse(s);
        break;
    case 7:
        odds(raw, n);
        break;
    case 8:
        email(s);
        break;
    case 9:
        signed_token_v2(raw, n);
        break;
    case 10:
        secrets(s);
        break;
    case 11:
        limit_set(s);
        break;
    case 12:
        log_escape(raw, n);
        break;
    }
    free(s);
    return 0;
}
