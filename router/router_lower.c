/*
 * router_lower.c: the server threads of background connections under
 * SCHED_IDLE, where the host runs on this machine.
 *
 * MariaDB runs each connection on a thread of its own and sets no
 * priority per connection. Where its server shares a machine's cores with
 * requests (the local stack: three hosts, two API servers and HAProxy on
 * two cores), a settlement batch keeps one core busy, and the threads a
 * request wakes on the way (the host's thread for its statement, an event
 * loop, HAProxy) wait for that core, or for the other one to come out of
 * its idle state. Under SCHED_IDLE the batch's thread gives its core to
 * any other thread at once, and the scheduler counts a core that runs only
 * such threads as idle when it places a woken one (docs/benchmarks.md,
 * "the settlement's MariaDB threads under SCHED_IDLE"). MySQL's resource
 * groups do as much from inside the server; MariaDB has none.
 *
 * It is done only where it cannot touch another thread, or a connection
 * that is not ours:
 *  - the server's @@hostname is this machine's, and its pid file
 *    (@@pid_file) names here a process called mariadbd or mysqld that has
 *    the connection's thread (TID of information_schema.PROCESSLIST): a
 *    host on another machine, or in another PID namespace or container, is
 *    left alone;
 *  - its @@thread_cache_size is 0: the thread ends with the connection and
 *    never serves another, so a lowered thread cannot outlive a background
 *    connection, not even one of a server killed with -9 (a connection that
 *    closes puts its thread back to SCHED_OTHER first all the same, in
 *    case the cache was raised since);
 *  - sched_setscheduler() lets us (the same user, or CAP_SYS_NICE; the
 *    packaged units run the API as its own user: nothing is lowered there).
 *
 * A thread under SCHED_IDLE still runs when the machine's cores are busy,
 * slowly: with two processes spinning on both cores, a 127,000-bet
 * settlement took 12-15 s against 7-10 s (docs/benchmarks.md), and the
 * rows a batch holds are held that much longer.
 */
#include <errno.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "router/router_int.h"

#define LOWER_SQL                                                                      \
    "SELECT @@pid_file, @@thread_cache_size, (SELECT TID FROM "                        \
    "information_schema.PROCESSLIST WHERE ID = CONNECTION_ID()), @@hostname"

void router_set_background_idle(struct router *r, int on)
{
    atomic_store(&r->bg_lower, on != 0);
}

static void lower_note(struct router_pool *pool, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Why the host's last background connection was not lowered ("" if it was). */
static void lower_note(struct router_pool *pool, const char *fmt, ...)
{
    va_list ap;

    pthread_mutex_lock(&pool->lock);
    va_start(ap, fmt);
    vsnprintf(pool->lower_why, sizeof(pool->lower_why), fmt, ap);
    va_end(ap);
    pthread_mutex_unlock(&pool->lock);
}

/* The first line of path as a number > 0, or 0. */
static long read_number(const char *path)
{
    FILE *f = fopen(path, "r");
    char line[64];
    long v = 0;

    if (f == NULL)
        return 0;
    if (fgets(line, sizeof(line), f) != NULL)
        v = strtol(line, NULL, 10);
    fclose(f);
    return v > 0 ? v : 0;
}

/* Whether pid is a MariaDB server on this machine with thread tid. */
static int server_thread(long pid, long tid)
{
    char path[64], comm[32] = "";
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%ld/comm", pid);
    if ((f = fopen(path, "r")) == NULL)
        return 0;
    if (fgets(comm, sizeof(comm), f) == NULL)
        comm[0] = '\0';
    fclose(f);
    comm[strcspn(comm, "\n")] = '\0';
    if (strcmp(comm, "mariadbd") != 0 && strcmp(comm, "mysqld") != 0)
        return 0;
    snprintf(path, sizeof(path), "/proc/%ld/task/%ld", pid, tid);
    return access(path, F_OK) == 0;
}

void router__conn_lower(struct router *r, struct router_conn *conn)
{
    struct router_pool *pool = conn->pool;
    struct sql_rows rows = {0};
    struct sched_param none = {0};
    const char *file, *cache, *tid_s, *name;
    char here[256] = "";
    long pid, tid;

    if (!atomic_load(&r->bg_lower))
        return;
    if (sql_exec(conn->sql, &rows, LOWER_SQL) < 0 || rows.nrow != 1) {
        lower_note(pool, "could not ask the server its thread: %s", sql_last_error());
        goto out;
    }
    file = sql_cell(&rows, 0, 0);
    cache = sql_cell(&rows, 0, 1);
    tid_s = sql_cell(&rows, 0, 2);
    name = sql_cell(&rows, 0, 3);
    if (cache == NULL || strcmp(cache, "0") != 0) {
        lower_note(pool,
                   "its thread_cache_size is %s, not 0: a thread ends "
                   "with its connection only at 0",
                   cache ? cache : "unknown");
        goto out;
    }
    if (gethostname(here, sizeof(here) - 1) < 0 || name == NULL ||
        strcmp(name, here) != 0) {
        lower_note(pool,
                   "not on this machine (the server's host name is %s, this one's %s)",
                   name ? name : "unknown", here);
        goto out;
    }
    tid = tid_s ? strtol(tid_s, NULL, 10) : 0;
    pid = file ? read_number(file) : 0;
    if (tid <= 0 || pid == 0 || !server_thread(pid, tid)) {
        lower_note(pool,
                   "not on this machine (no server with thread %ld under "
                   "pid file %s here)",
                   tid, file ? file : "(none)");
        goto out;
    }
    if (sched_setscheduler((pid_t)tid, SCHED_IDLE, &none) < 0) {
        lower_note(pool, "its thread %ld could not be put under SCHED_IDLE: %s", tid,
                   strerror(errno));
        goto out;
    }
    conn->lowered = 1;
    conn->server_pid = pid;
    conn->server_tid = tid;
    atomic_fetch_add(&pool->bg_lowered, 1);
    lower_note(pool, "%s", "");
out:
    sql_rows_free(&rows);
}

void router__conn_unlower(struct router_conn *conn)
{
    struct sched_param none = {0};

    /*
     * Back to SCHED_OTHER before the connection closes, in case the server
     * keeps its thread after all (thread_cache_size raised since): only if
     * the server still has that thread, whose number could otherwise be
     * another's by now.
     */
    if (server_thread(conn->server_pid, conn->server_tid))
        (void)sched_setscheduler((pid_t)conn->server_tid, SCHED_OTHER, &none);
    conn->lowered = 0;
    atomic_fetch_sub(&conn->pool->bg_lowered, 1);
}
