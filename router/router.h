/*
 * router.h: every query of BetCity goes through here to the MariaDB host that
 * holds its logical shard (or the global schema).
 *
 *  - two bounded connection pools per host, one for requests and one for
 *    background work (router_background()), with connect and per-statement
 *    deadlines enforced by the non-blocking MariaDB Connector/C API, so a dead
 *    or hung (SIGSTOPped) host fails a request within its deadline and never
 *    holds up requests for other hosts; a host whose connections fail, or on
 *    which several request statements in a row time out, is marked down for
 *    a second (requests fail fast meanwhile) and reconnected after; one slow
 *    statement is not a host failure;
 *  - routing by id, by key and by shard; single-shard transactions pinned to
 *    one connection; statements schema-qualified per shard;
 *  - scatter-gather: one statement per host covering all of that host's
 *    shards, hosts in parallel, results merged (top-K merge included);
 *  - the authoritative shard map lives in <prefix>_global; a background thread
 *    polls its version and swaps maps without blocking readers.
 *
 * SQL is never built from raw client input: statements are formats in which
 * values are escaped and identifiers checked (sql_format(), sql/sql.h).
 *
 * Thread safety: every function may be called from any thread, except
 * router_destroy(). A router_txn belongs to one thread at a time.
 */
#ifndef ROUTER_H
#define ROUTER_H

#include <stdint.h>

#include "shardmap/shardmap.h"
#include "sql/sql.h"

/* Pseudo-shard that addresses the unsharded <prefix>_global schema. */
#define ROUTER_GLOBAL UINT32_MAX

struct router;     /* opaque */
struct router_txn; /* opaque */
struct catalog;    /* catalog/catalog.h */

/*
 * Creates a router for the cluster: copies what it needs from conf, opens no
 * connection yet (pools fill on demand), loads the shard map from the global
 * schema and starts the map poller. If the global schema holds no map yet
 * (before `shardctl init`) or the global host is down, the router starts
 * with none and routed calls fail with BC_ENOMAP until one appears (never
 * BC_ENOTFOUND, which callers read as a missing row). Returns 0 or a
 * negative status.
 * Its connections use conf->account (sql_endpoint_of()); those of the API's
 * account (the default) take one statement per call, those of the operator
 * tools' account also "a; b; c" (router_scatter_exec(), fill batches).
 */
int router_create(const struct shardmap_conf *conf, struct router **out);
void router_destroy(struct router *router);

/*
 * The current shard map: valid until router_destroy() (retired maps are kept,
 * so a reader never sees one freed under it). NULL before any map exists.
 */
const struct shardmap *router_map(struct router *router);
/*
 * Why the last reload of the map failed, into buf ("" when it did not, or
 * while a reload is under way): for operators' logs.
 */
void router_map_error(struct router *router, char *buf, size_t size);
/* Reloads the map now if its version changed; 0 or a negative status. */
int router_reload_map(struct router *router);
/* Asks the poller to reload at once (a shard answered that it moved). */
void router_map_stale(struct router *router);
/*
 * Turns the background poller off (tests of stale servers, statement counts)
 * or back on. Turning it off waits for a reload under way to end.
 */
void router_set_polling(struct router *router, int on);

/* Version of the map in use; 0 before the first load. */
uint64_t router_map_version(struct router *router);
/*
 * After a shard answered BC_EMOVED (its schema is gone from the host, or a
 * move fenced its copy): reloads the map, waiting out a cut-over until the
 * map's version differs from seen (the version the failed attempt used).
 * *deadline_ms is 0 on the first call of a request and is then set to now +
 * router.move_wait_ms, so one request waits at most that long in all.
 * Returns 0 when the caller should retry, BC_EMOVED when the time is up.
 * router_exec() does this itself; transactions call it and start again.
 */
int router_await_move(struct router *router, uint64_t seen, int64_t *deadline_ms);

/* Logical shard of a key / of an id. */
uint32_t router_shard_of_key(struct router *router, const void *key, size_t len);
static inline uint32_t router_shard_of_id(uint64_t id)
{
    return shardmap_id_shard(id);
}
uint32_t router_nshard(struct router *router);
/*
 * Writes the schema name of a shard ("bc_0007") or of ROUTER_GLOBAL
 * ("bc_global") into buf; returns 0, or -ENAMETOOLONG (buf "") when it does not
 * fit in size bytes: a name is never truncated. SHARDMAP_SCHEMA_MAX always fits.
 */
int router_schema(struct router *router, uint32_t shard, char *buf, size_t size);

/*
 * Statement formats are sql_format()'s (sql/sql.h): %S is the shard's schema,
 * back-quoted, %N its number (0 for ROUTER_GLOBAL); %s %b %x %I %d %u %R %%
 * as documented there. A bad format or identifier is -EINVAL.
 */

/*
 * Runs one statement on the host of `shard` (or ROUTER_GLOBAL) in autocommit
 * mode. rows may be NULL when no result is wanted; otherwise the caller frees
 * it with sql_rows_free(). Errors: BC_EDOWN (host down or unreachable),
 * BC_ETIMEOUT, BC_EQUERY (the server refused the statement; the message is
 * in router_last_error()), BC_EDUPKEY, BC_ELOCKWAIT, BC_ESHARD, BC_ENOMAP
 * (no map yet: unavailable, as a host down is), BC_EMOVED. A statement
 * whose schema is missing (the shard moved away) or whose copy is fenced
 * follows the map (router_await_move()) and is sent again; BC_EMOVED when
 * the map did not follow in time. Transactions, ids and scatters answer
 * BC_EMOVED in both cases too.
 */
int router_exec(struct router *router, uint32_t shard, struct sql_rows *rows,
                const char *fmt, ...);

/*
 * Background work (settlement batches, standings recomputation, jobs): a
 * thread that calls router_background(1) sends its statements (router_exec,
 * transactions, scatters) over each host's background pool instead of the
 * request pool, with router.batch_timeout_ms (30000) per statement instead
 * of query_timeout_ms. A slow background statement is never a host failure:
 * only failed connections mark a host down. router_background(0) goes back.
 * The setting is the calling thread's own. ROUTER_BACKGROUND_PER_CORE is
 * background work whose scatters take places among the background
 * statements of a machine (router_machine_enter()) as if the share were a
 * core's worth a place, when it is less: short work that users wait for
 * (the standings' recomputation), which then asks about as many hosts of a
 * machine at once as it has cores, not one at a time like the batches nor
 * every host at once (which leaves requests no core).
 */
#define ROUTER_BACKGROUND 1
#define ROUTER_BACKGROUND_PER_CORE 2
void router_background(int mode);

/*
 * Hosts a background thread's scatter asks at once (0, the default: every
 * host, each on a thread of its own). With 1 the hosts answer one after
 * another: a scatter takes about the sum of their times instead of the
 * longest, and where the hosts share CPUs with requests (one machine), one
 * host's scan at a time leaves the others' CPUs to them. A dead host then
 * delays the next hosts by its deadline too. Requests' scatters always ask
 * every host at once.
 */
void router_set_background_hosts(struct router *router, uint32_t n);

/*
 * Hosts that share a machine share its cores (router_machine.c): their
 * background statements (each settlement batch its caller brackets with
 * router_machine_enter() and router_machine_leave(), each host's statement
 * of a background scatter) take at most pct % of the machine's cores at
 * once (its places: pct % of its cores, rounded down); the others wait for
 * a place. Below one core, the one place stays closed after each statement
 * for the rest of that share of the time. A statement that holds a place
 * over 1 s (it waits for a lock or a stopped server, not a CPU) no longer
 * counts, so that one hung host does not hold up its machine's others. The
 * machine is the server's @@hostname and its cores its @@thread_pool_size
 * (the CPUs, by MariaDB's default), asked the first time background work
 * goes to a host. Default 0: no limit (50 gives half). A host alone on its
 * machine is not slowed.
 */
void router_set_background_cores(struct router *router, uint32_t pct);
/*
 * On (1): a background connection to a host that runs on this machine gets
 * its server thread under SCHED_IDLE when it opens (router_lower.c), so
 * that the host's threads of requests, and this machine's other processes,
 * take a CPU at once from its batches. Done only where it is safe: the
 * server's @@hostname is this machine's, its pid file names a running
 * mariadbd (or mysqld) here with that thread, its thread_cache_size is 0 (the thread
 * ends with the connection and never serves another), and this process may change the
 * thread's policy (the same user, or CAP_SYS_NICE). Elsewhere nothing changes and
 * router_stats() says why. The thread also goes into an idle child of its
 * cpu cgroup (betcity-background, cpu.idle 1) where a cgroup v1 cpu
 * hierarchy lets a thread leave its process's group: SCHED_IDLE alone ranks
 * it below its own server's threads only, not below other processes
 * (each daemon is a scheduler group of its own under sched_autogroup).
 * Default 0: off.
 */
void router_set_background_idle(struct router *router, int on);
/*
 * Waits for a place among the background statements of the machine of
 * shard's host; 0 with *token to give back to router_machine_leave(), or
 * -ECANCELED when stopping(arg) said so first (asked every 100 ms). A host
 * that cannot be asked its machine is let through (*token -1).
 */
int router_machine_enter(struct router *router, uint32_t shard, int (*stopping)(void *),
                         void *arg, int *token);
void router_machine_leave(struct router *router, int token);
/*
 * The machines as known so far, for a log line: "vm: 2 cores, 1 at once (at
 * most 1 seen, 840 waits, 0 held over 1000 ms), hosts db1 (2 threads idle)
 * db2 ..." (with router_set_background_idle() on: each host's background
 * threads under SCHED_IDLE, or why not); "" before any background work.
 * Returns the length written.
 */
size_t router_machines_describe(struct router *router, char *buf, size_t size);

/*
 * Reads that may be slightly stale (standings, public profiles, lists,
 * bet history): after router_stale_reads(1), a single SELECT of the
 * calling thread through router_exec() may be served by a replica of its
 * host, while that replica's lag (now minus the heartbeat the guard writes
 * on the primary, measured at most every 200 ms) is at most
 * replication.max_lag_ms. A lagging, unreachable or missing replica sends
 * the read to the primary. The setting is the calling thread's own;
 * router_stale_reads(0) goes back. Returns the setting it replaced.
 * A read that fills a shared cache must not be stale (the cache would keep
 * it after the write's invalidation): turn it off around cache fills.
 */
int router_stale_reads(int on);

/*
 * Read-your-writes. After a write, its user's stale-ok reads go to the
 * primaries for router_rw_window_s() (max_lag_ms's whole seconds + 2 s):
 * the API sets a flag in memcached that every server checks. The flag is
 * needed only where some replica could answer. router_replicas_possible()
 * is 0 when none can: this router found the catalog at its map's version
 * within the last L = map_poll_ms + 1 s, and its maps have given no host
 * a replica for at least L. The other routers (all with the same
 * map_poll_ms and max_lag_ms) hold to their side: a replica answers no
 * stale read while its router's own check is older than L (it may have
 * missed the replica's removal), nor for L + the window + 1 s after it
 * entered the router's map (or the router found the catalog again after
 * losing track of it), so a write answered without a flag cannot be
 * missed by its user's reads on any server. 1 when in doubt (no map yet,
 * no recent check, polling off).
 */
uint32_t router_rw_window_s(const struct router *router);
int router_replicas_possible(struct router *router);

/*
 * One statement on the primary of a shard's host, driven by the caller's
 * event loop instead of a waiting thread (router_async.c): the API's loops
 * answer GET /v1/me so, without handing the request to a worker and back.
 * It runs only on a connection idle in the host's request pool: it never
 * connects and never waits for one. Not started (a negative status, *op
 * NULL): BC_EPOOL (none idle), BC_EDOWN (marked down), BC_ENOMAP (no
 * map), BC_ESHARD, -EINVAL (ROUTER_GLOBAL or a bad format), -ENOMEM.
 * Started (0): while router_op_wait() gives SQL_WAIT_* bits, wait for those
 * events on router_op_fd() and pass them to router_op_cont(), and call
 * router_op_tick() when router_op_due_ms() (sql_now_ms()'s clock) has come
 * (the statement's deadline is query_timeout_ms). Once the wait is 0 it
 * ended: take its socket out of the epoll set first (the connection goes
 * back to the pool, to other threads), then router_op_end() gives the
 * status and frees the op: router_exec()'s statuses, with BC_EMOVED for a
 * shard that moved and BC_EPOOL for an idle connection found dead; both
 * mean "run it the usual way", which follows moves and reconnects.
 * router_op_end() before the end abandons the statement (its connection
 * is closed): -ECANCELED. Rows as router_exec()'s. One thread at a time.
 */
struct router_op; /* opaque */
/*
 * For reads that share one statement (the loops' batched reads): the host
 * that serves `shard` now, as an opaque key (0: none, e.g. no map), equal
 * for two shards exactly when one host serves both; and `fmt` formatted for
 * `shard` (%S its schema, %N its number) into b. A key is a snapshot: a
 * statement over several shards that one of them left fails with BC_EMOVED.
 */
uintptr_t router_host_key(struct router *router, uint32_t shard);
/*
 * Waiting for a connection without blocking. A thread that drives
 * router_op_*() registers an eventfd (router_waiter_add(), from that
 * thread; at most ROUTER_WAITERS threads at once, else -ENOSPC). Then a
 * BC_EPOOL of router_op_start() on a host whose request connections are all
 * open and busy marks the thread on the host, and router_waiter_promised()
 * says 1: the next connection that host gets back (or closes, or the host
 * going down) writes 1 to the eventfd of each thread marked, which should
 * then try again. When the thread itself gives it back, nothing is written:
 * router_waiter_self() says 1 once instead. router_waiter_promised() 0
 * after a BC_EPOOL: nothing may come back (a connection may be opened now,
 * which only a thread that may wait does). router_host_busy(): the same
 * test and mark for a host (router_host_key()) without starting anything:
 * 1 when trying now would be in vain. router_waiter_remove(), from the same
 * thread: once it returns, nothing writes to the eventfd any more.
 */
#define ROUTER_WAITERS 64
int router_waiter_add(struct router *router, int fd);
void router_waiter_remove(struct router *router);
int router_waiter_promised(void);
int router_waiter_self(void);
int router_host_busy(struct router *router, uintptr_t key);
int router_vformat(struct router *router, uint32_t shard, struct sql_buf *b,
                   const char *fmt, va_list ap);
int router_op_start(struct router *router, uint32_t shard, struct sql_rows *rows,
                    struct router_op **op, const char *fmt, ...);
int router_op_vstart(struct router *router, uint32_t shard, struct sql_rows *rows,
                     struct router_op **op, const char *fmt, va_list ap);
int router_op_fd(struct router_op *op);
int router_op_wait(const struct router_op *op);
int64_t router_op_due_ms(const struct router_op *op);
int router_op_cont(struct router_op *op, int events);
int router_op_tick(struct router_op *op, int64_t now_ms);
int router_op_end(struct router_op *op);

/* Single-shard transactions: one pooled connection from begin to the end. */
int router_txn_begin(struct router *router, uint32_t shard, struct router_txn **txn);
int router_txn_exec(struct router_txn *txn, struct sql_rows *rows, const char *fmt,
                    ...);
/*
 * Takes the shard's fence once for the whole transaction, for one that
 * writes many rows (a settlement batch): shard_state's row is read with a
 * share lock, as each written row's trigger would (etc/schema/
 * shard_fence.sql), and @bc_fence_held is set, so that the triggers of the
 * rows written next skip their own read (each costs a subquery a row). A
 * move's fence waits for the transaction's end as before. BC_EMOVED when the
 * copy is fenced already (or its schema gone); the caller rolls back. The
 * variable is cleared before the transaction ends (commit or rollback), and
 * a connection where that fails is closed, never pooled with it set.
 */
int router_txn_fence(struct router_txn *txn);
/* Commits and frees txn; on failure the transaction is rolled back. */
int router_txn_commit(struct router_txn *txn);
/* Rolls back and frees txn; NULL is a no-op. */
void router_txn_rollback(struct router_txn *txn);

/*
 * A new id for a row of `shard` (see shardmap_id): the milliseconds and the
 * sequence both come from the shard's own database (NOW(3) and the shard's
 * SEQUENCE id_seq), so every API server gets distinct ids without talking
 * to the others; two ids collide only with more than 1,024 ids of one shard
 * in one millisecond of its host's clock. txn may be NULL.
 */
int router_next_id(struct router *router, struct router_txn *txn, uint32_t shard,
                   uint64_t *id);

/*
 * Scatter-gather over every shard: `fmt` is one SELECT shape (use %S and %N);
 * each host gets one statement, the UNION ALL of it over its shards, and the
 * hosts run in parallel. Rows of all hosts are appended into rows. If any
 * host fails, the call fails with its status (after all hosts answered).
 */
int router_scatter(struct router *router, struct sql_rows *rows, const char *fmt, ...);

/*
 * Like router_scatter(), but each host's UNION ALL is wrapped in head and
 * tail (constants of the caller, e.g. "SELECT k, SUM(n) FROM (" and ") t GROUP
 * BY k"), so that a host reduces its shards' rows before it sends them: the
 * rows returned grow with the hosts, not the shards. Each shard's part is
 * parenthesised ("(" fmt ")"); name the columns in fmt (AS) for head to use.
 * A shape of several SELECTs joins them with ") UNION ALL (", so that the
 * host's statement stays one flat UNION ALL (a UNION inside each part costs
 * the host a temporary table per shard). head may be NULL: tail " LIMIT n"
 * then limits the whole UNION ALL, whose rows stream without a temporary
 * table.
 */
int router_scatter_wrap(struct router *router, struct sql_rows *rows, const char *head,
                        const char *tail, const char *fmt, ...);

/*
 * Row comparison for top-K merges: negative when a ranks before b.
 */
typedef int (*router_row_cmp)(const char *const *a, const char *const *b, void *arg);

/*
 * Top-K scatter: like router_scatter(), but each host returns only its best
 * k rows (`order_sql` is its ORDER BY clause, a constant of the caller, e.g.
 * "points DESC, id ASC"), and the host lists are k-way merged with cmp, which
 * must agree with order_sql. rows gets at most k rows, best first.
 */
int router_scatter_topk(struct router *router, struct sql_rows *rows, uint32_t k,
                        const char *order_sql, router_row_cmp cmp, void *cmp_arg,
                        const char *fmt, ...);

/*
 * Runs `fmt` (any statement; use %S, %N) once per shard, as one
 * multi-statement batch per host, hosts in parallel; rows->affected gets the
 * sum of affected rows when rows is not NULL. Only a router of the operator
 * tools' account (SHARDMAP_ACCOUNT_OPS) may send such batches: on any other
 * the server refuses a host's batch of more than one shard (BC_EQUERY).
 */
int router_scatter_exec(struct router *router, struct sql_rows *rows, const char *fmt,
                        ...);

/* Runs raw SQL (no formatting) on a named host with no schema selected; for
 * shardctl's DDL and checks. Statuses as sql_query() (BC_ENOSCHEMA, not
 * BC_EMOVED), or BC_EHOST. */
int router_host_exec(struct router *router, const char *host, struct sql_rows *rows,
                     const char *sql);

/*
 * Executors (sql/sql.h) over the router. The transaction's runs SQL text on
 * its connection, inside it; valid until the transaction ends. The global
 * one runs SQL text on a pooled connection of the global host, with the
 * router's deadlines, mark-down and retry of a read on a stale idle
 * connection; consecutive texts may run on different connections. Both
 * answer the SQL layer's statuses (BC_ENOSCHEMA, BC_EFENCED as they are).
 */
void router_txn_executor(struct router_txn *txn, struct sql_executor *out);
void router_global_executor(struct router *router, struct sql_executor *out);

/*
 * The endpoint (address and account) of a host the router has a pool for:
 * the config's hosts and those the map added. BC_EHOST for any other.
 */
int router_endpoint(struct router *router, const char *host, struct sql_endpoint *out);

/*
 * The cluster's catalog over the router's pool of the global host, valid
 * until router_destroy(). Its statements run on any pooled connection: no
 * catalog_lock_shard() through it (the lock belongs to one session).
 */
struct catalog *router_catalog(struct router *router);

/* Message of the last error on this thread (server message, or status text). */
const char *router_last_error(void);

struct router_host_stats {
    char name[SHARDMAP_NAME_MAX]; /* the host, or the replica server */
    char host[SHARDMAP_NAME_MAX]; /* the host it serves */
    int replica;                  /* a pool of a replica (stale-ok reads) */
    int lag_ms;                   /* a replica's last measured lag; -1 unknown */
    int up;                       /* 0 while marked down */
    uint32_t open;                /* open connections of the request pool */
    uint32_t idle;
    uint32_t bg_open; /* open connections of the background pool */
    uint32_t bg_idle;
    uint64_t queries;
    uint64_t errors;
    uint64_t timeouts;
    uint64_t stale;      /* idle connections the server had closed, closed unused */
    uint32_t bg_lowered; /* of bg_open, those whose server thread is SCHED_IDLE */
    char lower_why[160]; /* why the last background connection was not ("" if it was) */
    uint32_t bg_grouped; /* of bg_lowered, those also in an idle cpu cgroup */
    char group_why[160]; /* why the last lowered one was not ("" if it was) */
};
/* Fills up to max entries (hosts, then replicas as the router met them); returns the
 * number of pools. */
uint32_t router_stats(struct router *router, struct router_host_stats *out,
                      uint32_t max);

#endif
