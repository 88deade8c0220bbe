/*
 * test_api_listen.c: the acceptor deals connections out over the event
 * loops evenly, whatever their socket numbers, keeps doing so as
 * connections close, and the server stops with connections open. A port
 * another socket listens on is refused, SO_REUSEPORT or not; a restart
 * binds its port at once. A busy loop runs under SCHED_BATCH, a quiet one
 * under SCHED_OTHER; with loop_batch_wakes=0 always the latter.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "api/api_int.h"

#define LOOPS 4

static struct api_server *server(uint32_t threads)
{
    struct api_conf conf;
    struct api_server *srv;

    api_conf_init(&conf);
    conf.port = 0;
    conf.threads = threads;
    memset(conf.secret, 3, sizeof(conf.secret));
    assert_int_equal(api_server_create(&conf, NULL, &srv), 0);
    assert_int_not_equal(api_server_port(srv), 0);
    return srv;
}

/* A connection that has had one GET /healthz answered (so a loop holds it). */
static int client(uint16_t port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    struct timeval tv = {.tv_sec = 5};
    static const char req[] = "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";
    char buf[512];
    ssize_t n;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(write(fd, req, sizeof(req) - 1), (ssize_t)(sizeof(req) - 1));
    n = read(fd, buf, sizeof(buf) - 1);
    assert_true(n > 12);
    buf[n] = '\0';
    assert_non_null(strstr(buf, "HTTP/1.1 200"));
    return fd;
}

/* Loop counts once they add up to want (closes are seen a little later). */
static uint32_t loops_when(struct api_server *srv, uint32_t *count, uint32_t want)
{
    uint32_t n = 0, sum = ~0u;

    for (int tries = 0; tries < 500 && sum != want; tries++) {
        struct timespec ts = {.tv_nsec = 10 * 1000000L};
        n = api_server_loops(srv, count, LOOPS);
        sum = 0;
        for (uint32_t i = 0; i < n && i < LOOPS; i++)
            sum += count[i];
        if (sum != want)
            nanosleep(&ts, NULL);
    }
    assert_int_equal(sum, want);
    return n;
}

static void test_connections_spread_evenly(void **state)
{
    struct api_server *srv = server(LOOPS);
    uint32_t count[LOOPS];
    int fd[42], extra[3];
    (void)state;

    /*
     * The test holds both ends of each connection in one process, so the
     * server's sockets get every other number: spread by number would put
     * them on two loops of four.
     */
    for (int i = 0; i < 42; i++)
        fd[i] = client(api_server_port(srv));
    assert_int_equal(loops_when(srv, count, 42), LOOPS);
    for (int i = 0; i < LOOPS; i++)
        if (count[i] < 10 || count[i] > 11)
            fail_msg("loop %d holds %u of 42 connections", i, count[i]);

    /* Every third one closes: the next ones fill the loops that lost most. */
    for (int i = 0; i < 42; i += 3) {
        close(fd[i]);
        fd[i] = -1;
    }
    loops_when(srv, count, 28);
    for (int i = 0; i < 3; i++)
        extra[i] = client(api_server_port(srv));
    loops_when(srv, count, 31);
    {
        uint32_t lo = count[0], hi = count[0];
        for (int i = 1; i < LOOPS; i++) {
            lo = count[i] < lo ? count[i] : lo;
            hi = count[i] > hi ? count[i] : hi;
        }
        /* 14 closed anywhere; 3 new ones went to the emptiest loops. */
        if (hi - lo > 5)
            fail_msg("loops hold %u to %u connections after closes", lo, hi);
    }
    /* Stops with connections still open. */
    api_server_destroy(srv);
    for (int i = 0; i < 42; i++)
        if (fd[i] >= 0)
            close(fd[i]);
    for (int i = 0; i < 3; i++)
        close(extra[i]);
}

/* A socket listening on 127.0.0.1, with SO_REUSEPORT or not; its port. */
static int holder(int reuseport, uint16_t *port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t len = sizeof(sa);
    int one = 1, fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    if (reuseport) {
        assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)),
                         0);
        assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)),
                         0);
    }
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(fd, 1), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

static int create_on(uint16_t port, struct api_server **out)
{
    struct api_conf conf;

    api_conf_init(&conf);
    conf.port = port;
    conf.threads = 1;
    memset(conf.secret, 3, sizeof(conf.secret));
    return api_server_create(&conf, NULL, out);
}

static void test_port_in_use_is_refused(void **state)
{
    struct api_server *second = NULL;
    uint16_t port;
    (void)state;

    /* Whether its owner set SO_REUSEPORT or not (HAProxy does), a port is not shared.
     */
    for (int reuseport = 0; reuseport <= 1; reuseport++) {
        int fd = holder(reuseport, &port);
        assert_int_equal(create_on(port, &second), -EADDRINUSE);
        close(fd);
    }
}

static void test_running_server_keeps_its_port(void **state)
{
    struct api_server *first = server(1), *second = NULL;
    uint16_t port = api_server_port(first);
    (void)state;

    /* A second server on the port of a running one fails and takes none of its
     * connections. */
    assert_int_equal(create_on(port, &second), -EADDRINUSE);
    for (int i = 0; i < 8; i++)
        close(client(port));
    api_server_destroy(first);
}

static void test_restart_binds_at_once(void **state)
{
    struct api_server *first = server(1), *second = NULL;
    uint16_t port = api_server_port(first);
    int fd = client(port);
    (void)state;

    /* The stopped server closed the connection first: its end of it still holds the
     * port. */
    api_server_destroy(first);
    close(fd);
    assert_int_equal(create_on(port, &second), 0);
    close(client(port));
    api_server_destroy(second);
}

/* The thread ids of this process's "bc-loop" threads, once want have named themselves.
 */
static void loop_tids(pid_t *tid, int want)
{
    int n = 0;

    for (int tries = 0; tries < 500 && n != want; tries++) {
        DIR *d = opendir("/proc/self/task");
        struct dirent *e;
        struct timespec ts = {.tv_nsec = 10 * 1000000L};

        assert_non_null(d);
        n = 0;
        while ((e = readdir(d)) != NULL) {
            char path[300], comm[32] = "";
            FILE *f;

            if (e->d_name[0] == '.')
                continue;
            snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
            if ((f = fopen(path, "r")) == NULL)
                continue; /* a thread that ended meanwhile */
            if (fgets(comm, sizeof(comm), f) != NULL &&
                strcmp(comm, "bc-loop\n") == 0 && n < want)
                tid[n++] = (pid_t)atoi(e->d_name);
            fclose(f);
        }
        closedir(d);
        if (n != want)
            nanosleep(&ts, NULL);
    }
    assert_int_equal(n, want);
}

struct burst {
    uint16_t port;
    atomic_int stop;
    int requests;
};

/* GET /healthz on new connections, one after another, until stop. */
static void *burst_main(void *arg)
{
    struct burst *b = arg;
    static const char req[] =
        "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";

    while (!atomic_load(&b->stop)) {
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(b->port)};
        char buf[512];
        int fd = socket(AF_INET, SOCK_STREAM, 0);

        inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
            write(fd, req, sizeof(req) - 1) != (ssize_t)(sizeof(req) - 1)) {
            if (fd >= 0)
                close(fd);
            break;
        }
        while (read(fd, buf, sizeof(buf)) > 0)
            ;
        close(fd);
        b->requests++;
    }
    return NULL;
}

/*
 * The policies the loop of a server of one loop had while a client sent it
 * requests for 400 ms (*batch: SCHED_BATCH seen), and once it was quiet
 * (*after, a second later at most).
 */
static void policies_under_burst(uint32_t batch_wakes, int *batch, int *after)
{
    struct api_conf conf;
    struct api_server *srv;
    struct burst b = {.requests = 0};
    pthread_t thread;
    pid_t tid = 0;

    api_conf_init(&conf);
    conf.port = 0;
    conf.threads = 1;
    conf.limits.loop_batch_wakes = batch_wakes;
    memset(conf.secret, 3, sizeof(conf.secret));
    assert_int_equal(api_server_create(&conf, NULL, &srv), 0);
    loop_tids(&tid, 1);
    assert_int_equal(sched_getscheduler(tid), SCHED_OTHER); /* quiet */
    b.port = api_server_port(srv);
    atomic_init(&b.stop, 0);
    assert_int_equal(pthread_create(&thread, NULL, burst_main, &b), 0);
    *batch = 0;
    for (int i = 0; i < 80; i++) {
        struct timespec ts = {.tv_nsec = 5 * 1000000L};
        *batch |= sched_getscheduler(tid) == SCHED_BATCH;
        nanosleep(&ts, NULL);
    }
    atomic_store(&b.stop, 1);
    pthread_join(thread, NULL);
    assert_true(b.requests > 10);
    for (int i = 0; i < 100 && (*after = sched_getscheduler(tid)) != SCHED_OTHER; i++) {
        struct timespec ts = {.tv_nsec = 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    api_server_destroy(srv);
}

static void test_busy_loop_runs_under_sched_batch(void **state)
{
    int batch, after;
    (void)state;

    /*
     * Quiet: SCHED_OTHER; busy: SCHED_BATCH; quiet again: SCHED_OTHER. Busy
     * from 20 wake-ups a second (one a window): under valgrind too.
     */
    policies_under_burst(20, &batch, &after);
    assert_true(batch);
    assert_int_equal(after, SCHED_OTHER);
    /* loop_batch_wakes=0: never. */
    policies_under_burst(0, &batch, &after);
    assert_false(batch);
    assert_int_equal(after, SCHED_OTHER);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connections_spread_evenly),
        cmocka_unit_test(test_port_in_use_is_refused),
        cmocka_unit_test(test_running_server_keeps_its_port),
        cmocka_unit_test(test_restart_binds_at_once),
        cmocka_unit_test(test_busy_loop_runs_under_sched_batch),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
