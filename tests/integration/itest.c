/*
 * itest.c: shared helpers of the integration tests.
 */
#include <dirent.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "tests/integration/itest.h"

void itest_conf(struct shardmap_conf *conf)
{
    const char *path = getenv("BC_CLUSTER");
    char *err = NULL;

    if (path == NULL)
        fail_msg("BC_CLUSTER is not set: run through tests/integration/run");
    if (shardmap_conf_load(path, conf, &err) != 0)
        fail_msg("%s", err ? err : "cannot load cluster config");
    /* The tests set up and inspect as an operator does. */
    conf->account = SHARDMAP_ACCOUNT_OPS;
}

MYSQL *itest_mysql(const struct shardmap_conf *conf, const char *host)
{
    int i = shardmap_conf_host(conf, host);
    const struct shardmap_host_conf *h;
    MYSQL *m;

    assert_true(i >= 0);
    h = &conf->hosts[i];
    m = mysql_init(NULL);
    assert_non_null(m);
    if (mysql_real_connect(m, h->addr, h->ops_user, h->ops_password, NULL, h->port,
                           NULL, 0) == NULL)
        fail_msg("connect %s: %s", host, mysql_error(m));
    return m;
}

int64_t itest_scalar(MYSQL *m, const char *sql)
{
    MYSQL_RES *res;
    MYSQL_ROW row;
    int64_t v = -1;

    if (mysql_query(m, sql) != 0)
        fail_msg("%s: %s", sql, mysql_error(m));
    res = mysql_store_result(m);
    assert_non_null(res);
    row = mysql_fetch_row(res);
    if (row != NULL && row[0] != NULL)
        v = strtoll(row[0], NULL, 10);
    mysql_free_result(res);
    return v;
}

int itest_pid(const char *name)
{
    char path[1024];
    const char *dir = getenv("BC_STACK_DIR");
    const char *file = strncmp(name, "mc", 2) == 0 ? "memcached.pid" : "mysqld.pid";
    FILE *f;
    int pid = -1;

    assert_non_null(dir);
    snprintf(path, sizeof(path), "%s/%s/%s", dir, name, file);
    f = fopen(path, "r");
    if (f == NULL)
        fail_msg("no pid file %s", path);
    if (fscanf(f, "%d", &pid) != 1)
        pid = -1;
    fclose(f);
    assert_true(pid > 0);
    return pid;
}

/* Threads of pid not stopped (state other than T or t); -1 if it has none. */
static int running_threads(int pid)
{
    char path[64], buf[512], *p;
    struct dirent *e;
    int running = 0, seen = 0;
    DIR *d;

    snprintf(path, sizeof(path), "/proc/%d/task", pid);
    if ((d = opendir(path)) == NULL)
        return -1;
    while ((e = readdir(d)) != NULL) {
        FILE *f;
        size_t n;
        if (e->d_name[0] == '.')
            continue;
        snprintf(buf, sizeof(buf), "/proc/%d/task/%s/stat", pid, e->d_name);
        if ((f = fopen(buf, "r")) == NULL)
            continue; /* ended meanwhile */
        n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        p = strrchr(buf, ')');
        seen++;
        if (p == NULL || p[1] != ' ' || (p[2] != 'T' && p[2] != 't'))
            running++;
    }
    closedir(d);
    return seen > 0 ? running : -1;
}

void itest_sigstop(int pid)
{
    assert_int_equal(kill(pid, SIGSTOP), 0);
    for (int i = 0; i < 5000; i++) {
        if (running_threads(pid) == 0)
            return;
        usleep(1000);
    }
    fail_msg("pid %d: %d threads still running 5 s after SIGSTOP", pid,
             running_threads(pid));
}

int itest_shardctl(char *out, size_t size, const char *args_fmt, ...)
{
    char args[1024], cmd[2048];
    const char *build = getenv("BUILD") ? getenv("BUILD") : "build";
    va_list ap;
    size_t len = 0;
    FILE *p;
    int status;

    va_start(ap, args_fmt);
    vsnprintf(args, sizeof(args), args_fmt, ap);
    va_end(ap);
    if (strstr(args, "-c ") != NULL)
        snprintf(cmd, sizeof(cmd), "%s/shardctl %s 2>&1", build, args);
    else
        snprintf(cmd, sizeof(cmd), "%s/shardctl -c \"$BC_CLUSTER\" %s 2>&1", build,
                 args);
    p = popen(cmd, "r");
    assert_non_null(p);
    while (len + 1 < size) {
        size_t n = fread(out + len, 1, size - len - 1, p);
        if (n == 0)
            break;
        len += n;
    }
    out[len] = '\0';
    /* Drain what did not fit, so the child never blocks on a full pipe. */
    char sink[4096];
    while (fread(sink, 1, sizeof(sink), p) > 0)
        ;
    status = pclose(p);
    printf("$ shardctl %s\n%s", args, out);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int64_t itest_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
