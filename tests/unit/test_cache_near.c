/*
 * test_cache_near.c: the near-cache against a read that an invalidation
 * overtakes, with a scripted memcached (a thread of this test speaking the
 * text protocol on a loopback port) that holds a get's answer until the
 * delete of its key has come: the order in which a real server may answer
 * two clients, made certain.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "cache/cache.h"

#define MAX_CONNS 8

/* The scripted server: the value it has, and what it has seen. */
struct fake {
    int listen_fd;
    uint16_t port;
    const char *value;
    atomic_int gets, deletes, quit;
    pthread_t thread;
};

struct conn {
    int fd;
    char buf[1024];
    size_t len;
    char held[256]; /* a get's key, answered once a delete came */
};

static void send_all(int fd, const char *s)
{
    size_t n = strlen(s);

    while (n > 0) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

static void answer_get(struct fake *f, struct conn *c)
{
    char out[512];

    snprintf(out, sizeof(out), "VALUE %s 0 %zu 1\r\n%s\r\nEND\r\n", c->held,
             strlen(f->value), f->value);
    send_all(c->fd, out);
    c->held[0] = '\0';
}

/* One command line of c; 1 when it was a delete. */
static int command(struct fake *f, struct conn *c, char *line)
{
    char key[256];

    if (sscanf(line, "gets %255s", key) == 1 || sscanf(line, "get %255s", key) == 1) {
        snprintf(c->held, sizeof(c->held), "%s", key);
        atomic_fetch_add(&f->gets, 1);
        if (atomic_load(&f->deletes) > 0)
            answer_get(f, c);
        return 0;
    }
    if (sscanf(line, "delete %255s", key) == 1) {
        atomic_fetch_add(&f->deletes, 1);
        send_all(c->fd, "DELETED\r\n");
        return 1;
    }
    send_all(c->fd, "ERROR\r\n");
    return 0;
}

static void *fake_main(void *arg)
{
    struct fake *f = arg;
    struct conn conns[MAX_CONNS];
    int n = 0;

    while (!atomic_load(&f->quit)) {
        struct pollfd p[MAX_CONNS + 1] = {{.fd = f->listen_fd, .events = POLLIN}};
        int deleted = 0;

        for (int i = 0; i < n; i++)
            p[i + 1] = (struct pollfd){.fd = conns[i].fd, .events = POLLIN};
        if (poll(p, (nfds_t)n + 1, 20) <= 0)
            continue;
        if ((p[0].revents & POLLIN) && n < MAX_CONNS) {
            conns[n] = (struct conn){.fd = accept(f->listen_fd, NULL, NULL)};
            if (conns[n].fd >= 0)
                n++;
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = &conns[i];
            ssize_t r;
            char *eol;

            if (!(p[i + 1].revents & (POLLIN | POLLHUP)))
                continue;
            r = recv(c->fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len, 0);
            if (r <= 0)
                continue;
            c->len += (size_t)r;
            c->buf[c->len] = '\0';
            while ((eol = strstr(c->buf, "\r\n")) != NULL) {
                *eol = '\0';
                deleted |= command(f, c, c->buf);
                c->len -= (size_t)(eol + 2 - c->buf);
                memmove(c->buf, eol + 2, c->len + 1);
            }
        }
        for (int i = 0; i < n && deleted; i++)
            if (conns[i].held[0] != '\0')
                answer_get(f, &conns[i]);
    }
    for (int i = 0; i < n; i++)
        close(conns[i].fd);
    return NULL;
}

static void fake_start(struct fake *f, const char *value)
{
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);

    f->value = value;
    f->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(f->listen_fd >= 0);
    assert_int_equal(bind(f->listen_fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(f->listen_fd, 8), 0);
    assert_int_equal(getsockname(f->listen_fd, (struct sockaddr *)&a, &alen), 0);
    f->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&f->thread, NULL, fake_main, f), 0);
}

static void fake_stop(struct fake *f)
{
    atomic_store(&f->quit, 1);
    pthread_join(f->thread, NULL);
    close(f->listen_fd);
}

static int fill_none(void *arg, char **value, size_t *len)
{
    (void)arg;
    *value = strdup("filled");
    *len = strlen("filled");
    return *value ? 0 : -1;
}

struct reader {
    struct cache *cache;
    const char *key;
    char *got;
};

static void *reader_main(void *arg)
{
    struct reader *r = arg;
    size_t len;

    if (cache_get(r->cache, r->key, 1, 60, fill_none, NULL, &r->got, &len) != 0)
        r->got = NULL;
    return NULL;
}

/*
 * A reader's get reaches memcached first; its answer, the old value, comes
 * after this process's delete of the key (the writer: it dropped its near
 * copy, then deleted). The reader must not keep that value near: the
 * writer's own server would answer it for 0.9 s after its write returned.
 */
static void test_read_overtaken_by_a_delete_is_not_kept_near(void **state)
{
    struct fake f = {0};
    struct shardmap_endpoint ep = {.addr = "127.0.0.1"};
    struct shardmap_conf conf = {.memcached = &ep, .nmemcached = 1};
    struct reader r = {.key = "bc:v1:match:7"};
    struct cache *c = NULL;
    pthread_t t;
    char *v = NULL;
    size_t len;

    (void)state;
    fake_start(&f, "old");
    ep.port = f.port;
    assert_int_equal(cache_create(&conf, 1000, &c), 0);
    r.cache = c;
    assert_int_equal(pthread_create(&t, NULL, reader_main, &r), 0);
    for (int i = 0; i < 2000 && atomic_load(&f.gets) == 0; i++)
        usleep(1000);
    assert_int_equal(atomic_load(&f.gets), 1); /* the get waits for its answer */
    cache_delete(c, r.key);
    pthread_join(t, NULL);
    assert_int_equal(atomic_load(&f.deletes), 1);
    assert_non_null(r.got);
    assert_string_equal(r.got, "old"); /* the read itself was concurrent: fine */
    free(r.got);
    if (cache_near(c, r.key, &v, &len)) {
        fail_msg("kept near after the delete: %.*s", (int)len, v);
        free(v);
    }
    cache_destroy(c);
    fake_stop(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read_overtaken_by_a_delete_is_not_kept_near),
    };
    return cmocka_run_group_tests_name("cache_near", tests, NULL, NULL);
}
