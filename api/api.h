/*
 * api.h: the BetCity HTTP API server (../shared/spec/api.md, docs/api.md).
 *
 * Stateless: every request is served from the router (shards and global
 * schema) and the token in its Authorization header, so any number of
 * servers can stand behind HAProxy. HTTP is libmicrohttpd (epoll, a pool of
 * worker threads), JSON is jansson, passwords are argon2id and tokens are
 * HMAC-SHA256 signed (libsodium).
 */
#ifndef API_H
#define API_H

#include <stdint.h>
#include <stdio.h>

#include "cache/cache.h"
#include "router/router.h"

struct api_conf {
    char listen_addr[64]; /* "127.0.0.1" */
    uint16_t port;
    char name[64];            /* instance name in logs and metrics */
    uint8_t secret[32];       /* token signing key, same on every server */
    uint32_t threads;         /* HTTP worker threads (16) */
    uint32_t token_ttl_s;     /* (86400) */
    int64_t initial_balance;  /* economy.initial_balance (1000) */
    uint32_t max_connections; /* (4096) */
    FILE *access_log;         /* ref: one line per request; NULL for none */
    struct cache *cache;      /* ref: memcached read-through for hot reads */
};

struct api_server; /* opaque */

/* Fills conf with the defaults above (secret zeroed). */
void api_conf_init(struct api_conf *conf);

/*
 * Starts serving on conf->listen_addr:port with the given router (borrowed:
 * it must outlive the server). Returns 0 or a negative status.
 */
int api_server_create(const struct api_conf *conf, struct router *router,
                      struct api_server **out);
/* Stops accepting, finishes requests in flight, frees everything. */
void api_server_destroy(struct api_server *srv);

/* Prints every route as "METHOD /path/{param}", one per line. */
void api_print_routes(FILE *out);

/* Password hashing (argon2id), shared with bcadmin. 0 or negative status. */
int api_password_hash(const char *password, char *out, size_t size);
int api_password_verify(const char *hash, const char *password);

/* Creates the platform admin (and its platform company) if missing. */
int api_create_platform_admin(struct router *router, const char *email,
                              const char *password, const char *display_name,
                              int64_t initial_balance, uint64_t *user_id);

#endif
