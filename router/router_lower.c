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
 * SCHED_IDLE alone ranks the thread below the other threads of its own
 * group of the scheduler only: the MariaDB server's. Linux schedules a
 * process started in a session of its own (setsid(), as every daemon is)
 * as a group of its own when sched_autogroup_enabled is on (Debian's
 * default), and groups share a core by weight: a batch's thread under
 * SCHED_IDLE then still holds a core against HAProxy, an event loop or
 * another host's thread for up to a time slice, and the requests' p99 on
 * the bench machine were 2-4 times their figure with a single core
 * spinning under SCHED_IDLE (docs/benchmarks.md, "SCHED_IDLE and the
 * scheduler's groups"). So the thread also goes into a child of its cpu
 * cgroup made idle (cpu.idle 1, Linux 5.15 on): GROUP_NAME, which its
 * siblings (the root's: every autogroup) preempt at once. Only in a
 * cgroup v1 cpu hierarchy, where a thread may leave its process's group;
 * under cgroup v2 alone it keeps SCHED_IDLE only, and router_stats() says
 * why.
 *
 * A thread under SCHED_IDLE still runs when the machine's cores are busy,
 * slowly: with two processes spinning on both cores, a 127,000-bet
 * settlement took 12-15 s against 7-10 s (docs/benchmarks.md), and the
 * rows a batch holds are held that much longer.
 */
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "router/router_int.h"

#define LOWER_SQL                                                                      \
    "SELECT @@pid_file, @@thread_cache_size, (SELECT TID FROM "                        \
    "information_schema.PROCESSLIST WHERE ID = CONNECTION_ID()), @@hostname"

/* The idle child cgroup, in the cpu hierarchy under the thread's own. */
#define GROUP_NAME "betcity-background"

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

int router__cpu_mount(FILE *mountinfo, char *out, size_t size)
{
    char line[1024];

    /* "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [TAGS...] - FSTYPE SOURCE SUPEROPTS" */
    while (fgets(line, sizeof(line), mountinfo) != NULL) {
        char *dash = strstr(line, " - "), *save = NULL, *field, *mnt = NULL;
        char fstype[32] = "", super[256] = "";

        if (dash == NULL || sscanf(dash + 3, "%31s %*s %255s", fstype, super) != 2 ||
            strcmp(fstype, "cgroup") != 0)
            continue;
        *dash = '\0';
        field = strtok_r(line, " ", &save);
        for (int i = 1; field != NULL && i < 5; i++)
            mnt = field = strtok_r(NULL, " ", &save);
        if (mnt == NULL)
            continue;
        for (char *opt = strtok_r(super, ",", &save); opt != NULL;
             opt = strtok_r(NULL, ",", &save))
            if (strcmp(opt, "cpu") == 0) {
                int n = snprintf(out, size, "%s", mnt);
                return n > 0 && (size_t)n < size ? 0 : -ENAMETOOLONG;
            }
    }
    return -ENOENT;
}

int router__cpu_cgroup(FILE *cgroup, char *out, size_t size)
{
    char line[1024];

    /* "ID:CONTROLLERS:PATH"; CONTROLLERS a comma-separated list. */
    while (fgets(line, sizeof(line), cgroup) != NULL) {
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        char *save = NULL;

        if (c2 == NULL)
            continue;
        *c2 = '\0';
        c2[1 + strcspn(c2 + 1, "\n")] = '\0';
        for (char *ctl = strtok_r(c1 + 1, ",", &save); ctl != NULL;
             ctl = strtok_r(NULL, ",", &save))
            if (strcmp(ctl, "cpu") == 0) {
                int n = snprintf(out, size, "%s", c2 + 1);
                return n > 0 && (size_t)n < size ? 0 : -ENAMETOOLONG;
            }
    }
    return -ENOENT;
}

static void say(char *why, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Why, into why: truncated at size (a pool's note). */
static void say(char *why, size_t size, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, size, fmt, ap);
    va_end(ap);
}

/* Writes text into path (a cgroup file); 0 or -errno. */
static int write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    int rc = 0;

    if (f == NULL)
        return -errno;
    if (fputs(text, f) == EOF)
        rc = -errno;
    if (fclose(f) == EOF && rc == 0)
        rc = -errno;
    return rc;
}

/*
 * The directory of the thread's cpu cgroup (v1) into dir; 0, or -errno with
 * why into why.
 */
static int thread_group(long pid, long tid, char *dir, size_t size, char *why,
                        size_t why_size)
{
    char mnt[PATH_MAX], path[64], group[PATH_MAX] = "";
    FILE *f;
    int rc, n;

    if ((f = fopen("/proc/self/mountinfo", "r")) == NULL) {
        rc = -errno;
        say(why, why_size, "no /proc/self/mountinfo");
        return rc;
    }
    rc = router__cpu_mount(f, mnt, sizeof(mnt));
    fclose(f);
    if (rc < 0) {
        say(why, why_size,
            "no cgroup v1 cpu hierarchy (under cgroup v2 a thread "
            "cannot leave its process's group)");
        return rc;
    }
    snprintf(path, sizeof(path), "/proc/%ld/task/%ld/cgroup", pid, tid);
    if ((f = fopen(path, "r")) == NULL)
        return say(why, why_size, "cannot read %s", path), -ENOENT;
    rc = router__cpu_cgroup(f, group, sizeof(group));
    fclose(f);
    if (rc < 0)
        return say(why, why_size, "%s names no cpu cgroup", path), rc;
    n = snprintf(dir, size, "%s%s", mnt, strcmp(group, "/") == 0 ? "" : group);
    return n > 0 && (size_t)n < size ? 0 : -ENAMETOOLONG;
}

/* Cuts "/" GROUP_NAME off the end of cgroup path dir: 1 if it was there, or 0. */
static int group_strip(char *dir)
{
    size_t len = strlen(dir), name = strlen("/" GROUP_NAME);

    if (len <= name || strcmp(dir + len - name, "/" GROUP_NAME) != 0)
        return 0;
    dir[len - name] = '\0';
    return 1;
}

/*
 * Puts the thread into GROUP_NAME under its cpu cgroup, made idle; 0, or
 * -errno with why into why. The group is shared by every API server here
 * and removed by the one that takes its last thread out (group_unlower()):
 * removed between our mkdir and our writes, it is made again.
 */
static int group_lower(long pid, long tid, char *why, size_t why_size)
{
    char dir[PATH_MAX], idle[PATH_MAX + 64], file[PATH_MAX + 96], id[32];
    int rc;

    if ((rc = thread_group(pid, tid, dir, sizeof(dir), why, why_size)) < 0)
        return rc;
    (void)group_strip(dir); /* in it already: not one inside it */
    snprintf(idle, sizeof(idle), "%s/" GROUP_NAME, dir);
    snprintf(id, sizeof(id), "%ld\n", tid);
    for (int tries = 0; tries < 3; tries++) {
        if (mkdir(idle, 0755) < 0 && errno != EEXIST) {
            rc = -errno;
            say(why, why_size, "cannot make %s: %s", idle, strerror(-rc));
            return rc;
        }
        snprintf(file, sizeof(file), "%s/cpu.idle", idle);
        if ((rc = write_file(file, "1\n")) == -ENOENT && access(idle, F_OK) < 0)
            continue; /* removed meanwhile */
        if (rc < 0) {
            say(why, why_size, "cannot write %s: %s%s", file, strerror(-rc),
                rc == -ENOENT ? " (Linux before 5.15)" : "");
            return rc;
        }
        snprintf(file, sizeof(file), "%s/tasks", idle);
        if ((rc = write_file(file, id)) == -ENOENT && access(idle, F_OK) < 0)
            continue;
        break;
    }
    if (rc < 0)
        say(why, why_size, "cannot move thread %ld into %s: %s", tid, idle,
            strerror(-rc));
    return rc;
}

/*
 * The thread back into the cgroup above GROUP_NAME, if it is in one; then
 * GROUP_NAME removed if that left it empty (EBUSY when it is not: others'
 * threads are in it).
 */
static void group_unlower(long pid, long tid)
{
    char dir[PATH_MAX], why[8], file[PATH_MAX + 16], id[32];

    if (thread_group(pid, tid, dir, sizeof(dir), why, sizeof(why)) < 0 ||
        !group_strip(dir))
        return;
    snprintf(file, sizeof(file), "%s/tasks", dir);
    snprintf(id, sizeof(id), "%ld\n", tid);
    if (write_file(file, id) == 0) {
        snprintf(file, sizeof(file), "%s/" GROUP_NAME, dir);
        (void)rmdir(file);
    }
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
    {
        char why[sizeof(pool->group_why)] = "";

        conn->grouped = group_lower(pid, tid, why, sizeof(why)) == 0;
        if (conn->grouped)
            atomic_fetch_add(&pool->bg_grouped, 1);
        pthread_mutex_lock(&pool->lock);
        snprintf(pool->group_why, sizeof(pool->group_why), "%s", why);
        pthread_mutex_unlock(&pool->lock);
    }
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
    if (server_thread(conn->server_pid, conn->server_tid)) {
        if (conn->grouped)
            group_unlower(conn->server_pid, conn->server_tid);
        (void)sched_setscheduler((pid_t)conn->server_tid, SCHED_OTHER, &none);
    }
    if (conn->grouped)
        atomic_fetch_sub(&conn->pool->bg_grouped, 1);
    conn->grouped = 0;
    conn->lowered = 0;
    atomic_fetch_sub(&conn->pool->bg_lowered, 1);
}
