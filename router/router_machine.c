/*
 * router_machine.c: hosts grouped by the machine they run on, so that the
 * background work of hosts that share a machine's cores takes turns.
 *
 * Hosts with cores of their own each run their background statements
 * (settlement batches, the scans of a recomputation) beside their requests.
 * Several MariaDB servers on one machine (the local stack, or several
 * servers on one VM) share its cores instead: if each of them runs a batch
 * at once, the batches take every core and every host's requests wait for
 * a CPU. With a limit set (router_set_background_cores(); off in a new
 * router, 50 in the API's background_cores_pct), a host's machine is learned from
 * the server itself, the first time background work goes to it (and again
 * after its address changed):
 * @@hostname names the machine, and @@thread_pool_size, which MariaDB sets
 * to the machine's CPUs, counts its cores. Background statements of the
 * hosts of one machine then take at most background_cores_pct of its cores
 * at once: each waits for a place (router_machine_enter()). Below one core
 * (two cores at 30 %: 0.6 of one), the one place stays closed after each
 * statement for the rest of that share of the time.
 * A host alone on its machine runs one batch at a time anyway, so nothing
 * changes where hosts have cores of their own.
 *
 * Two servers on one machine under different host names (two containers)
 * are not seen as sharing it; two machines with one name are, and then
 * take turns where they need not (router_set_background_cores(r, 0), or
 * the API's background_cores_pct = 0, turns it off).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "router/router_int.h"

#define MACHINE_SQL "SELECT @@hostname, @@thread_pool_size"
/* How often a waiter looks whether its caller stopped. */
#define MACHINE_WAIT_MS 100

void router__machines_init(struct router *r)
{
    pthread_mutex_init(&r->machine_lock, NULL);
    pthread_cond_init(&r->machine_freed, NULL);
    atomic_init(&r->bg_cores_pct, ROUTER_BG_CORES_PCT);
    atomic_init(&r->bg_lower, 0);
}

void router__machines_deinit(struct router *r)
{
    pthread_mutex_destroy(&r->machine_lock);
    pthread_cond_destroy(&r->machine_freed);
}

void router_set_background_cores(struct router *r, uint32_t pct)
{
    atomic_store(&r->bg_cores_pct, pct);
    pthread_mutex_lock(&r->machine_lock);
    pthread_cond_broadcast(&r->machine_freed); /* more places, or none to wait for */
    pthread_mutex_unlock(&r->machine_lock);
}

/* Places of a machine at pct % of its cores: at least one (closed at times below a
 * core). */
static uint32_t machine_slots(const struct router_machine *mc, uint32_t pct)
{
    uint32_t n = (uint32_t)((uint64_t)mc->ncpu * pct / 100);

    return n > 0 ? n : 1;
}

/* The machine of name, added when new; -1 when the table is full. */
static int machine_find(struct router *r, const char *name, uint32_t ncpu)
{
    for (uint32_t i = 0; i < r->nmachine; i++)
        if (strcmp(r->machines[i].name, name) == 0) {
            r->machines[i].ncpu = ncpu;
            return (int)i;
        }
    if (r->nmachine == SHARDMAP_MAX_HOSTS)
        return -1;
    struct router_machine *mc = &r->machines[r->nmachine];
    snprintf(mc->name, sizeof(mc->name), "%s", name);
    mc->ncpu = ncpu;
    return (int)r->nmachine++;
}

/*
 * The machine of pool's host, asked of the server when not known for its
 * present address; -1 when it cannot be asked (the host is down: the
 * statement that follows fails on its own, and the next one asks again).
 */
static int machine_of(struct router *r, struct router_pool *pool)
{
    struct sql_rows rows = {0};
    struct router_conn *conn;
    uint64_t epoch;
    int m = -1, rc, broken = 1;

    pthread_mutex_lock(&pool->lock);
    epoch = pool->epoch;
    pthread_mutex_unlock(&pool->lock);
    pthread_mutex_lock(&r->machine_lock);
    if (pool->machine_known && pool->machine_epoch == epoch)
        m = pool->machine;
    pthread_mutex_unlock(&r->machine_lock);
    if (m >= 0)
        return m;

    int was = router__background();
    router_background(1);
    rc = router__conn_get(r, pool, &conn);
    if (rc == 0) {
        rc = router__conn_query(r, conn, MACHINE_SQL, strlen(MACHINE_SQL), &rows,
                                &broken);
        router__conn_put(conn, rc < 0 && broken);
    }
    router_background(was);
    if (rc == 0 && rows.nrow == 1 && sql_cell(&rows, 0, 0) != NULL) {
        const char *n = sql_cell(&rows, 0, 1);
        long ncpu = n != NULL ? strtol(n, NULL, 10) : 1;

        pthread_mutex_lock(&r->machine_lock);
        m = machine_find(r, sql_cell(&rows, 0, 0),
                         ncpu > 0 && ncpu < 65536 ? (uint32_t)ncpu : 1);
        if (m >= 0) {
            pool->machine = m;
            pool->machine_epoch = epoch;
            pool->machine_known = 1;
        }
        pthread_mutex_unlock(&r->machine_lock);
    }
    sql_rows_free(&rows);
    return m;
}

/*
 * Statements of the machine that hold a place and count: those that took
 * it less than ROUTER_MACHINE_STALL_MS ago. One that holds it longer waits
 * for something other than a CPU (a row lock, a stopped or unreachable
 * server, until its deadline) and no longer keeps the others waiting, as
 * MariaDB's thread pool does with its stall limit.
 */
static uint32_t machine_busy(const struct router_machine *mc, int64_t now)
{
    uint32_t n = 0;

    for (uint32_t i = 0; i < ROUTER_MACHINE_HOLDERS; i++)
        n +=
            mc->held_since[i] != 0 && now - mc->held_since[i] < ROUTER_MACHINE_STALL_MS;
    return n;
}

/*
 * A free holder's index when a place of the machine is to be had now, else
 * -1 with *wait_ms how long to wait at most before looking again.
 */
static int machine_open(const struct router_machine *mc, uint32_t pct, int64_t now,
                        int64_t *wait_ms)
{
    *wait_ms = MACHINE_WAIT_MS;
    if (machine_busy(mc, now) >= machine_slots(mc, pct))
        return -1;
    if (now < mc->open_at_ms) {
        if (mc->open_at_ms - now < MACHINE_WAIT_MS)
            *wait_ms = mc->open_at_ms - now;
        return -1;
    }
    for (uint32_t i = 0; i < ROUTER_MACHINE_HOLDERS; i++)
        if (mc->held_since[i] == 0)
            return (int)i;
    return -1; /* every holder stalled */
}

/* The share a statement is counted at: the limit, or min_pct when more. */
static uint32_t share_at(uint32_t pct, uint32_t min_pct)
{
    return pct > min_pct ? pct : min_pct;
}

int router__machine_enter(struct router *r, struct router_pool *pool, uint32_t min_pct,
                          int (*stopping)(void *), void *arg, int *token)
{
    struct router_machine *mc;
    int64_t wait_ms, now;
    uint32_t pct;
    int m, slot = -1;

    *token = -1;
    if (atomic_load(&r->bg_cores_pct) == 0 || (m = machine_of(r, pool)) < 0)
        return 0;
    mc = &r->machines[m];
    pthread_mutex_lock(&r->machine_lock);
    while ((pct = atomic_load(&r->bg_cores_pct)) > 0 &&
           (slot = machine_open(mc, share_at(pct, min_pct), router__now_ms(),
                                &wait_ms)) < 0) {
        if (stopping != NULL && stopping(arg)) {
            pthread_mutex_unlock(&r->machine_lock);
            return -ECANCELED;
        }
        struct timespec ts;
        router__deadline(&ts, wait_ms);
        mc->waits++;
        pthread_cond_timedwait(&r->machine_freed, &r->machine_lock, &ts);
    }
    if (slot < 0) { /* the limit was turned off meanwhile */
        pthread_mutex_unlock(&r->machine_lock);
        return 0;
    }
    now = router__now_ms();
    mc->held_since[slot] = now > 0 ? now : 1;
    mc->held_pct[slot] = share_at(pct, min_pct);
    uint32_t busy = machine_busy(mc, now);
    if (busy > mc->peak)
        mc->peak = busy;
    pthread_mutex_unlock(&r->machine_lock);
    *token = m * ROUTER_MACHINE_HOLDERS + slot;
    return 0;
}

void router_machine_leave(struct router *r, int token)
{
    if (token < 0)
        return;
    pthread_mutex_lock(&r->machine_lock);
    struct router_machine *mc = &r->machines[token / ROUTER_MACHINE_HOLDERS];
    int64_t *since = &mc->held_since[token % ROUTER_MACHINE_HOLDERS];
    /* In % of one core, at the share the statement was let in at. */
    uint64_t share = (uint64_t)mc->ncpu * mc->held_pct[token % ROUTER_MACHINE_HOLDERS];
    int64_t now = router__now_ms(), held = now - *since;

    if (held >= ROUTER_MACHINE_STALL_MS) {
        mc->stalls++;
        held = ROUTER_MACHINE_STALL_MS;
    }
    /*
     * Less than a core: the one place stays closed for a while after each
     * statement, so that background work takes that share of one core's
     * time (70 %: closed 3/7 of the time the statement took).
     */
    if (share > 0 && share < 100)
        mc->open_at_ms = now + held * (int64_t)(100 - share) / (int64_t)share;
    *since = 0;
    pthread_cond_broadcast(&r->machine_freed);
    pthread_mutex_unlock(&r->machine_lock);
}

int router_machine_enter(struct router *r, uint32_t shard, int (*stopping)(void *),
                         void *arg, int *token)
{
    struct router_pool *pool;
    int err = 0;

    *token = -1;
    pool = router__pool_of_shard(r, shard, &err);
    if (pool == NULL)
        return 0; /* the statement that follows says why */
    return router__machine_enter(r, pool, 0, stopping, arg, token);
}

/*
 * " (2 threads idle, in an idle cgroup)", " (2 threads idle; not in an idle
 * cgroup: why)", or why its last background connection's thread is not idle
 * (router_lower.c), into buf; the length written. Takes the pool's lock
 * (under machine_lock: never the other way round).
 */
static size_t describe_lowered(struct router_pool *pool, char *buf, size_t size)
{
    unsigned idle = atomic_load(&pool->bg_lowered);
    unsigned grouped = atomic_load(&pool->bg_grouped);
    int n;

    pthread_mutex_lock(&pool->lock);
    if (idle > 0 && grouped >= idle)
        n = snprintf(buf, size, " (%u thread%s idle, in an idle cgroup)", idle,
                     idle > 1 ? "s" : "");
    else if (idle > 0)
        n = snprintf(buf, size, " (%u thread%s idle; %u not in an idle cgroup: %s)",
                     idle, idle > 1 ? "s" : "", idle - grouped,
                     pool->group_why[0] != '\0' ? pool->group_why : "unknown");
    else if (pool->lower_why[0] != '\0')
        n = snprintf(buf, size, " (threads not idle: %s)", pool->lower_why);
    else
        n = 0;
    pthread_mutex_unlock(&pool->lock);
    return n <= 0 ? 0 : (size_t)n < size ? (size_t)n : size - 1;
}

size_t router_machines_describe(struct router *r, char *buf, size_t size)
{
    uint32_t pct = atomic_load(&r->bg_cores_pct);
    size_t len = 0;

    if (size > 0)
        buf[0] = '\0';
    pthread_mutex_lock(&r->machine_lock);
    for (uint32_t i = 0; i < r->nmachine && len < size; i++) {
        const struct router_machine *mc = &r->machines[i];
        uint64_t share = (uint64_t)mc->ncpu * pct;
        int n = share >= 100 ? snprintf(buf + len, size - len,
                                        "%s%s: %u cores, %u at once (at most %u seen, "
                                        "%u waits, %u held over %d ms), hosts",
                                        i > 0 ? "; " : "", mc->name, mc->ncpu,
                                        machine_slots(mc, pct), mc->peak, mc->waits,
                                        mc->stalls, ROUTER_MACHINE_STALL_MS)
                : pct > 0
                    ? snprintf(buf + len, size - len,
                               "%s%s: %u cores, 1 at once for %u %% of the time (at "
                               "most %u seen, %u waits, %u held over %d ms), hosts",
                               i > 0 ? "; " : "", mc->name, mc->ncpu, (unsigned)share,
                               mc->peak, mc->waits, mc->stalls, ROUTER_MACHINE_STALL_MS)
                    : snprintf(buf + len, size - len, "%s%s: %u cores, no limit, hosts",
                               i > 0 ? "; " : "", mc->name, mc->ncpu);
        len += n > 0 ? (size_t)n : 0;
        for (unsigned p = 0; p < atomic_load(&r->npool) && len < size; p++) {
            struct router_pool *pool = r->pools[p];
            if (pool->machine_known && pool->machine == (int)i) {
                n = snprintf(buf + len, size - len, " %s", pool->name);
                len += n > 0 ? (size_t)n : 0;
                if (len < size && atomic_load(&r->bg_lower))
                    len += describe_lowered(pool, buf + len, size - len);
            }
        }
    }
    pthread_mutex_unlock(&r->machine_lock);
    return len < size ? len : size > 0 ? size - 1 : 0;
}
