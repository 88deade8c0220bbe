/*
 * api_auth.c: stateless tokens, roles and join codes.
 *
 * Token: base64url(payload) "." base64url(HMAC-SHA256(secret, payload)),
 * payload "1:<user id>:<company id>:<role>:<expiry, unix seconds>". Any
 * server with the same secret verifies it without a lookup; the MAC is
 * compared in constant time.
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

int api_token_make(struct api_server *srv, uint64_t user_id, uint64_t company_id,
                   int role, char *out, size_t size)
{
    const struct api_conf *conf = api_server_conf(srv);
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    char payload[128];
    int n;
    size_t len;

    n = snprintf(payload, sizeof(payload), "1:%" PRIu64 ":%" PRIu64 ":%d:%" PRId64,
                 user_id, company_id, role, (int64_t)time(NULL) + conf->token_ttl_s);
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

int api_token_check(struct api_server *srv, const char *token, struct api_auth *auth)
{
    const struct api_conf *conf = api_server_conf(srv);
    unsigned char payload[128], mac[crypto_auth_hmacsha256_BYTES + 1];
    size_t plen, mlen;
    const char *dot = strchr(token, '.'), *end;
    char text[129];
    uint64_t uid, cid;
    int role, n = 0;
    int64_t exp;

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
    if (crypto_auth_hmacsha256_verify(mac, payload, plen, conf->secret) != 0)
        return -EACCES;
    memcpy(text, payload, plen);
    text[plen] = '\0';
    if (sscanf(text, "1:%" SCNu64 ":%" SCNu64 ":%d:%" SCNd64 "%n", &uid, &cid, &role,
               &exp, &n) != 4 ||
        (size_t)n != plen)
        return -EINVAL;
    if (exp <= (int64_t)time(NULL))
        return -ETIMEDOUT;
    auth->ok = 1;
    auth->user_id = uid;
    auth->company_id = cid;
    auth->role = role;
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
