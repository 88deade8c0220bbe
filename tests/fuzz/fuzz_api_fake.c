/*
 * fuzz_api_fake.c: what the API harnesses put in place of the databases and
 * the password hash, so that an input costs microseconds and needs neither.
 *
 *  - the router functions libapi.a calls (router/router.h), linked instead
 *    of librouter.a: a cluster of 64 shards whose every host is down. Every
 *    statement, transaction, id and scatter fails with BC_EDOWN, as when
 *    MariaDB is unreachable, so a handler runs its request checks and then
 *    answers 503. A router function the API comes to call needs its
 *    stand-in here (the harnesses' link says which);
 *  - crypto_pwhash_str() and crypto_pwhash_str_verify(): defined here, they
 *    take the place of libsodium's (the executable's definition wins over
 *    the shared library's) and answer at once, a fixed hash and "wrong
 *    password": argon2id costs 25 ms per call and is not our code.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "api/api.h"
#include "catalog/catalog.h"
#include "router/router.h"
#include "tests/fuzz/fuzz.h"

/* ---- password hashes ---- */

int crypto_pwhash_str(char out[crypto_pwhash_STRBYTES], const char *const passwd,
                      unsigned long long passwdlen, unsigned long long opslimit,
                      size_t memlimit)
{
    (void)passwd;
    (void)passwdlen;
    (void)opslimit;
    (void)memlimit;
    snprintf(out, crypto_pwhash_STRBYTES, "$argon2id$v=19$m=12288,t=3,p=1$fuzz$fuzz");
    return 0;
}

int crypto_pwhash_str_verify(const char str[crypto_pwhash_STRBYTES],
                             const char *const passwd, unsigned long long passwdlen)
{
    (void)str;
    (void)passwd;
    (void)passwdlen;
    return -1;
}

/* ---- a router whose every host is down ---- */

#define FAKE_NSHARD 64

static int down_run(void *arg, const char *sql, size_t len, struct sql_rows *rows)
{
    (void)arg;
    (void)sql;
    (void)len;
    if (rows != NULL)
        memset(rows, 0, sizeof(*rows));
    return BC_EDOWN;
}

static struct catalog down_catalog = {
    .schema = "bc_global", .nshard = FAKE_NSHARD, .exec = {down_run, NULL}};

const struct shardmap *router_map(struct router *router)
{
    (void)router;
    return NULL;
}

uint64_t router_map_version(struct router *router)
{
    (void)router;
    return 1;
}

int router_await_move(struct router *router, uint64_t seen, int64_t *deadline_ms)
{
    (void)router;
    (void)seen;
    (void)deadline_ms;
    return BC_EMOVED;
}

uint32_t router_shard_of_key(struct router *router, const void *key, size_t len)
{
    (void)router;
    return shardmap_shard_of_key(key, len, FAKE_NSHARD);
}

uint32_t router_nshard(struct router *router)
{
    (void)router;
    return FAKE_NSHARD;
}

int router_exec(struct router *router, uint32_t shard, struct sql_rows *rows,
                const char *fmt, ...)
{
    (void)router;
    (void)shard;
    (void)fmt;
    return down_run(NULL, NULL, 0, rows);
}

/* The event loops' reads (router_op_*): the host is down, none starts. */
int router_op_vstart(struct router *router, uint32_t shard, struct sql_rows *rows,
                     struct router_op **op, const char *fmt, va_list ap)
{
    (void)router;
    (void)shard;
    (void)rows;
    (void)fmt;
    (void)ap;
    *op = NULL;
    return BC_EDOWN;
}

int router_op_start(struct router *router, uint32_t shard, struct sql_rows *rows,
                    struct router_op **op, const char *fmt, ...)
{
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = router_op_vstart(router, shard, rows, op, fmt, ap);
    va_end(ap);
    return rc;
}

/* No connection ever comes back to wait for: the loops register nothing. */
int router_waiter_add(struct router *router, int fd)
{
    (void)router;
    (void)fd;
    return -ENOSPC;
}

void router_waiter_remove(struct router *router)
{
    (void)router;
}

int router_waiter_promised(void)
{
    return 0;
}

int router_waiter_self(void)
{
    return 0;
}

int router_host_busy(struct router *router, uintptr_t key)
{
    (void)router;
    (void)key;
    return 0;
}

/* The batched reads' host (one) and text, formatted as the real router does. */
uintptr_t router_host_key(struct router *router, uint32_t shard)
{
    (void)router;
    (void)shard;
    return 1;
}

int router_vformat(struct router *router, uint32_t shard, struct sql_buf *b,
                   const char *fmt, va_list ap)
{
    (void)router;
    return sql_vformat(b, "fuzz_0000", shard, fmt, ap);
}

/* Never called: no op is ever started. */
int router_op_fd(struct router_op *op)
{
    (void)op;
    return -1;
}

int router_op_wait(const struct router_op *op)
{
    (void)op;
    return 0;
}

int64_t router_op_due_ms(const struct router_op *op)
{
    (void)op;
    return 0;
}

int router_op_cont(struct router_op *op, int events)
{
    (void)op;
    (void)events;
    return 0;
}

int router_op_tick(struct router_op *op, int64_t now_ms)
{
    (void)op;
    (void)now_ms;
    return 0;
}

int router_op_end(struct router_op *op)
{
    (void)op;
    return BC_EDOWN;
}

int router_stale_reads(int on)
{
    static _Thread_local int mode;
    int was = mode;

    mode = on;
    return was;
}

/* No replicas to read: the fuzzed requests' writes set no flag. */
int router_replicas_possible(struct router *router)
{
    (void)router;
    return 0;
}

uint32_t router_rw_window_s(const struct router *router)
{
    (void)router;
    return 2;
}

void router_background(int mode)
{
    (void)mode;
}

void router_set_background_hosts(struct router *router, uint32_t n)
{
    (void)router;
    (void)n;
}

void router_set_background_cores(struct router *router, uint32_t pct)
{
    (void)router;
    (void)pct;
}

void router_set_background_idle(struct router *router, int on)
{
    (void)router;
    (void)on;
}

int router_machine_enter(struct router *router, uint32_t shard, int (*stopping)(void *),
                         void *arg, int *token)
{
    (void)router;
    (void)shard;
    (void)stopping;
    (void)arg;
    *token = -1;
    return 0;
}

void router_machine_leave(struct router *router, int token)
{
    (void)router;
    (void)token;
}

size_t router_machines_describe(struct router *router, char *buf, size_t size)
{
    (void)router;
    if (size > 0)
        buf[0] = '\0';
    return 0;
}

int router_txn_begin(struct router *router, uint32_t shard, struct router_txn **txn)
{
    (void)router;
    (void)shard;
    *txn = NULL;
    return BC_EDOWN;
}

int router_txn_exec(struct router_txn *txn, struct sql_rows *rows, const char *fmt, ...)
{
    (void)txn;
    (void)fmt;
    return down_run(NULL, NULL, 0, rows);
}

int router_txn_fence(struct router_txn *txn)
{
    (void)txn;
    return BC_EDOWN;
}

int router_txn_commit(struct router_txn *txn)
{
    (void)txn;
    return BC_EDOWN;
}

void router_txn_rollback(struct router_txn *txn)
{
    (void)txn;
}

int router_next_id(struct router *router, struct router_txn *txn, uint32_t shard,
                   uint64_t *id)
{
    (void)router;
    (void)txn;
    (void)shard;
    *id = 0;
    return BC_EDOWN;
}

int router_scatter(struct router *router, struct sql_rows *rows, const char *fmt, ...)
{
    (void)router;
    (void)fmt;
    return down_run(NULL, NULL, 0, rows);
}

int router_scatter_wrap(struct router *router, struct sql_rows *rows, const char *head,
                        const char *tail, const char *fmt, ...)
{
    (void)router;
    (void)head;
    (void)tail;
    (void)fmt;
    return down_run(NULL, NULL, 0, rows);
}

int router_scatter_topk(struct router *router, struct sql_rows *rows, uint32_t k,
                        const char *order_sql, router_row_cmp cmp, void *cmp_arg,
                        const char *fmt, ...)
{
    (void)router;
    (void)k;
    (void)order_sql;
    (void)cmp;
    (void)cmp_arg;
    (void)fmt;
    return down_run(NULL, NULL, 0, rows);
}

void router_txn_executor(struct router_txn *txn, struct sql_executor *out)
{
    (void)txn;
    out->run = down_run;
    out->arg = NULL;
}

struct catalog *router_catalog(struct router *router)
{
    (void)router;
    return &down_catalog;
}

const char *router_last_error(void)
{
    return "every host is down (fuzz harness)";
}

uint32_t router_stats(struct router *router, struct router_host_stats *out,
                      uint32_t max)
{
    (void)router;
    (void)out;
    (void)max;
    return 0;
}

struct api_server *fuzz_api_server(void)
{
    struct api_server *srv;
    struct api_conf conf;

    api_conf_init(&conf);
    conf.port = 0; /* any free port: nothing connects */
    conf.threads = 1;
    conf.workers = 4;
    memset(conf.secret, FUZZ_SECRET_BYTE, sizeof(conf.secret));
    if (api_server_create(&conf, NULL, &srv) < 0)
        fuzz_fail("api_server_create failed");
    return srv;
}
