/*
 * api_auth.c: stateless tokens, roles and join codes.
 *
 * Token: base64url(payload) "." base64url(HMAC-SHA256(key, payload)),
 * payload "2:<key id>:<user id>:<company id>:<role>:<expiry, unix seconds>".
 * The key id (api_key_id()) names the key that signed it: the server signs
 * with its current key and accepts the older keys of its secret file too, so
 * the key can be rotated without logging anyone out (docs/operations.md).
 * Tokens of the first format, "1:<user id>:…" without a key id, are still
 * accepted when one of the keys verifies them. Any server with the same keys
 * verifies a token without a lookup; the MAC is compared in constant time.
 *
 * Device token: the same, payload "d:<key id>:<user id>:<expiry>". Given at
 * each login and sign-up, it tells a later login of that account that it
 * comes from a device the account has signed in from (api_h_login()); it
 * is no access token, and an access token is no device token.
 *
 * Password hashes are in api_pwhash.c.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "api/api_int.h"

const char *api_role_name(int role)
{
    switch (role) {
    case API_ROLE_COMPANY_ADMIN:
        return "company_admin";
    case API_ROLE_PLATFORM_ADMIN:
        return "platform_admin";
    default:
        return "member";
    }
}

int api_role_parse(const char *name)
{
    if (name != NULL && strcmp(name, "company_admin") == 0)
        return API_ROLE_COMPANY_ADMIN;
    if (name != NULL && strcmp(name, "platform_admin") == 0)
        return API_ROLE_PLATFORM_ADMIN;
    return API_ROLE_MEMBER;
}

void api_key_id(const uint8_t key[32], char out[API_KEY_ID_LEN + 1])
{
    unsigned char h[crypto_generichash_BYTES_MIN];

    /* A hash, not the key: tokens are seen by clients. */
    crypto_generichash(h, sizeof(h), key, 32, (const unsigned char *)"betcity-kid", 11);
    sodium_bin2hex(out, API_KEY_ID_LEN + 1, h, API_KEY_ID_LEN / 2);
}

int api_secrets_parse(struct api_conf *conf, const char *text, const char *path,
                      char *err, size_t errsize)
{
    uint8_t keys[API_MAX_KEYS][32];
    unsigned nkey = 0, line = 0, kline[API_MAX_KEYS];
    char kid[API_MAX_KEYS][API_KEY_ID_LEN + 1];

    for (const char *p = text; *p != '\0';) {
        const char *eol = strchr(p, '\n'), *a = p, *b;
        size_t bin;

        if (eol == NULL)
            eol = p + strlen(p);
        line++;
        while (a < eol && (*a == ' ' || *a == '\t'))
            a++;
        b = eol;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t' || b[-1] == '\r'))
            b--;
        p = *eol != '\0' ? eol + 1 : eol;
        if (a == b || *a == '#')
            continue;
        if (nkey == API_MAX_KEYS) {
            snprintf(err, errsize, "%s:%u: more than %d keys", path, line,
                     API_MAX_KEYS);
            return -EINVAL;
        }
        if (b - a != 64 ||
            sodium_hex2bin(keys[nkey], 32, a, 64, NULL, &bin, NULL) != 0 || bin != 32) {
            snprintf(err, errsize, "%s:%u: want 64 hex characters (a 32-byte key)",
                     path, line);
            return -EINVAL;
        }
        api_key_id(keys[nkey], kid[nkey]);
        for (unsigned i = 0; i < nkey; i++)
            if (strcmp(kid[i], kid[nkey]) == 0) {
                snprintf(err, errsize, "%s:%u: the same key as line %u", path, line,
                         kline[i]);
                return -EINVAL;
            }
        kline[nkey++] = line;
    }
    if (nkey == 0) {
        snprintf(err, errsize, "%s: no key (64 hex characters a line)", path);
        return -EINVAL;
    }
    memcpy(conf->secret, keys[0], 32);
    memcpy(conf->old_secrets, keys[1], (nkey - 1) * 32u);
    conf->nold_secret = nkey - 1;
    sodium_memzero(keys, sizeof(keys));
    return 0;
}

/* The i-th key the server accepts: 0 is its signing key, then the older ones. */
static const uint8_t *accepted_key(const struct api_conf *conf, uint32_t i)
{
    if (i == 0)
        return conf->secret;
    return i <= conf->nold_secret ? conf->old_secrets[i - 1] : NULL;
}

/* out = base64url(payload) "." base64url(HMAC-SHA256(the signing key, payload)). */
static int token_seal(const struct api_conf *conf, const char *payload, int n,
                      char *out, size_t size)
{
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    size_t len;

    crypto_auth_hmacsha256(mac, (const unsigned char *)payload, (unsigned long long)n,
                           conf->secret);
    if (size <
        sodium_base64_ENCODED_LEN((size_t)n, sodium_base64_VARIANT_URLSAFE_NO_PADDING) +
            sodium_base64_ENCODED_LEN(sizeof(mac),
                                      sodium_base64_VARIANT_URLSAFE_NO_PADDING) +
            1)
        return -ENOSPC;
    sodium_bin2base64(out, size, (const unsigned char *)payload, (size_t)n,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    len = strlen(out);
    out[len++] = '.';
    sodium_bin2base64(out + len, size - len, mac, sizeof(mac),
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    return 0;
}

/*
 * The payload of a token one of the accepted keys signed, as text, and in
 * *fields what follows its kind ("2" an access token, "d" a device token:
 * "<kind>:<key id>:", checked against the key its id names only; "1" an
 * access token of the first format, "1:", any accepted key). 0, -EINVAL
 * (malformed, or another kind) or -EACCES (no key verifies it).
 */
static int token_open(const struct api_conf *conf, const char *token, char text[129],
                      const char **fields)
{
    unsigned char payload[128], mac[crypto_auth_hmacsha256_BYTES + 1];
    const char *dot = strchr(token, '.'), *end;
    size_t plen, mlen;

    if (dot == NULL || strlen(token) > 400)
        return -EINVAL;
    if (sodium_base642bin(payload, sizeof(payload) - 1, token, (size_t)(dot - token),
                          NULL, &plen, &end,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        end != dot)
        return -EINVAL;
    if (sodium_base642bin(mac, sizeof(mac), dot + 1, strlen(dot + 1), NULL, &mlen, &end,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        *end != '\0' || mlen != crypto_auth_hmacsha256_BYTES)
        return -EINVAL;
    memcpy(text, payload, plen);
    text[plen] = '\0';
    if (strncmp(text, "2:", 2) == 0 || strncmp(text, "d:", 2) == 0) {
        /* The key its id names, and only that one: a token names its key. */
        char kid[API_KEY_ID_LEN + 1];
        const uint8_t *key = NULL;

        if (plen < 3 + API_KEY_ID_LEN || text[2 + API_KEY_ID_LEN] != ':')
            return -EINVAL;
        for (uint32_t i = 0; key == NULL && accepted_key(conf, i) != NULL; i++) {
            api_key_id(accepted_key(conf, i), kid);
            if (memcmp(kid, text + 2, API_KEY_ID_LEN) == 0)
                key = accepted_key(conf, i);
        }
        if (key == NULL || crypto_auth_hmacsha256_verify(mac, payload, plen, key) != 0)
            return -EACCES;
        *fields = text + 3 + API_KEY_ID_LEN;
        return 0;
    }
    /* The first format names no key: any accepted key may have signed it. */
    uint32_t i = 0;

    while (accepted_key(conf, i) != NULL &&
           crypto_auth_hmacsha256_verify(mac, payload, plen, accepted_key(conf, i)) !=
               0)
        i++;
    if (accepted_key(conf, i) == NULL)
        return -EACCES;
    if (strncmp(text, "1:", 2) != 0)
        return -EINVAL;
    *fields = text + 2;
    return 0;
}

int api_token_make(struct api_server *srv, uint64_t user_id, uint64_t company_id,
                   int role, char *out, size_t size)
{
    const struct api_conf *conf = api_server_conf(srv);
    char payload[128], kid[API_KEY_ID_LEN + 1];
    int n;

    api_key_id(conf->secret, kid);
    n = snprintf(payload, sizeof(payload), "2:%s:%" PRIu64 ":%" PRIu64 ":%d:%" PRId64,
                 kid, user_id, company_id, role,
                 (int64_t)time(NULL) + conf->token_ttl_s);
    return token_seal(conf, payload, n, out, size);
}

int api_token_check(struct api_server *srv, const char *token, struct api_auth *auth)
{
    const struct api_conf *conf = api_server_conf(srv);
    const char *fields;
    char text[129];
    uint64_t uid, cid;
    int role, n = 0, rc;
    int64_t exp;

    if ((rc = token_open(conf, token, text, &fields)) < 0)
        return rc;
    if (text[0] == 'd') /* a device token grants nothing but a login's place */
        return -EINVAL;
    if (sscanf(fields, "%" SCNu64 ":%" SCNu64 ":%d:%" SCNd64 "%n", &uid, &cid, &role,
               &exp, &n) != 4 ||
        fields[n] != '\0')
        return -EINVAL;
    if (exp <= (int64_t)time(NULL))
        return -ETIMEDOUT;
    auth->ok = 1;
    auth->user_id = uid;
    auth->company_id = cid;
    auth->role = role;
    auth->expires = exp;
    return 0;
}

int api_device_make(struct api_server *srv, uint64_t user_id, char *out, size_t size)
{
    const struct api_conf *conf = api_server_conf(srv);
    char payload[128], kid[API_KEY_ID_LEN + 1];
    int n;

    api_key_id(conf->secret, kid);
    n = snprintf(payload, sizeof(payload), "d:%s:%" PRIu64 ":%" PRId64, kid, user_id,
                 (int64_t)time(NULL) + (int64_t)conf->limits.device_ttl_days * 86400);
    return token_seal(conf, payload, n, out, size);
}

int api_device_check(struct api_server *srv, const char *token, uint64_t *user_id)
{
    const struct api_conf *conf = api_server_conf(srv);
    const char *fields;
    char text[129];
    uint64_t uid;
    int64_t exp;
    int n = 0, rc;

    if ((rc = token_open(conf, token, text, &fields)) < 0)
        return rc;
    if (text[0] != 'd')
        return -EINVAL;
    if (sscanf(fields, "%" SCNu64 ":%" SCNd64 "%n", &uid, &exp, &n) != 2 ||
        fields[n] != '\0')
        return -EINVAL;
    if (exp <= (int64_t)time(NULL))
        return -ETIMEDOUT;
    *user_id = uid;
    return 0;
}

void api_join_code(char out[11])
{
    /* 32 symbols without 0/O and 1/I: 50 bits, read aloud without mistakes. */
    static const char symbols[] = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    unsigned char rnd[10];

    randombytes_buf(rnd, sizeof(rnd));
    for (int i = 0; i < 10; i++)
        out[i] = symbols[rnd[i] % 32];
    out[10] = '\0';
}
