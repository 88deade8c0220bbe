/*
 * cache_marker.c: flags set without blocking, for an event loop
 * (cache_mark_start(); the rules are cache.h's).
 *
 * libmemcached has no call that returns before its answer, and an event
 * loop must not wait for one: a memcached server that stalls would stall
 * every request of the loop. A marker speaks memcached's text protocol
 * itself, on one non-blocking connection per server: "set <key> 0 <ttl> 1"
 * and the value "1", whose answer is one line ("STORED"). Marks to one
 * server are pipelined; the server answers them in order, so each
 * connection keeps its marks in flight in a FIFO with their deadlines. A
 * connection that fails or misses a deadline is closed, its marks end with
 * -EIO, and its server's breaker opens for every thread (as a failed
 * cache_mark() opens it). The server of a key is libmemcached's own choice
 * (ketama, cache__server_of() on the marker's clone of the configuration),
 * so the blocking calls (cache_marked()) find the flag where it was set.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cache/cache_int.h"

#define LINE_MAX_BYTES 256

struct mark {
    void *tag;
    int64_t due_ms;
};

struct mconn {
    struct server *s; /* ref */
    struct sockaddr_storage sa;
    socklen_t salen; /* 0: the address did not resolve */
    int fd;          /* -1: closed */
    int connecting;
    unsigned epoch;  /* of the server when connected */
    uint32_t events; /* registered in the marker's set */
    char *out;       /* to send: out[sent..nout) */
    size_t nout, sent, capout;
    char in[LINE_MAX_BYTES]; /* an answer's line so far */
    size_t nin;
    struct mark *q; /* in flight, oldest at head */
    size_t head, len, cap;
};

/* A mark that ended outside run() (its connection failed): reported there. */
struct ended {
    void *tag;
    int status;
};

struct cache_marker {
    struct cache *c;
    memcached_st *m; /* the distribution only: no I/O on it */
    int ep;
    struct mconn conn[MAX_SERVERS];
    uint32_t nconn;
    struct ended *ended;
    size_t nended, capended;
};

static int resolve(struct mconn *k)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
    char port[8];

    snprintf(port, sizeof(port), "%u", k->s->port);
    if (getaddrinfo(k->s->addr, port, &hints, &ai) != 0)
        return -EIO;
    if (ai->ai_addrlen <= sizeof(k->sa)) {
        memcpy(&k->sa, ai->ai_addr, ai->ai_addrlen);
        k->salen = ai->ai_addrlen;
    }
    freeaddrinfo(ai);
    return k->salen > 0 ? 0 : -EIO;
}

int cache_marker_create(struct cache *c, struct cache_marker **out)
{
    struct cache_marker *mk = calloc(1, sizeof(*mk));

    if (mk == NULL)
        return -ENOMEM;
    mk->c = c;
    mk->ep = epoll_create1(EPOLL_CLOEXEC);
    if (mk->ep < 0 ||
        (c->master != NULL && (mk->m = memcached_clone(NULL, c->master)) == NULL)) {
        cache_marker_destroy(mk);
        return mk->ep < 0 ? -errno : -ENOMEM;
    }
    mk->nconn = c->nserver;
    for (uint32_t i = 0; i < mk->nconn; i++) {
        mk->conn[i].s = &c->server[i];
        mk->conn[i].fd = -1;
        (void)resolve(&mk->conn[i]); /* unresolved: its marks are refused */
    }
    *out = mk;
    return 0;
}

static void conn_close(struct cache_marker *mk, struct mconn *k)
{
    if (k->fd >= 0) {
        (void)epoll_ctl(mk->ep, EPOLL_CTL_DEL, k->fd, NULL);
        close(k->fd);
    }
    k->fd = -1;
    k->connecting = 0;
    k->events = 0;
    k->nout = k->sent = 0;
    k->nin = 0;
}

void cache_marker_destroy(struct cache_marker *mk)
{
    if (mk == NULL)
        return;
    for (uint32_t i = 0; i < mk->nconn; i++) {
        conn_close(mk, &mk->conn[i]);
        free(mk->conn[i].out);
        free(mk->conn[i].q);
    }
    if (mk->ep >= 0)
        close(mk->ep);
    memcached_free(mk->m);
    free(mk->ended);
    free(mk);
}

int cache_marker_fd(const struct cache_marker *mk)
{
    return mk->ep;
}

/* Marks that ended outside run() wait there for their done. */
static void ended_push(struct cache_marker *mk, void *tag, int status)
{
    if (mk->nended == mk->capended) {
        size_t cap = mk->capended ? mk->capended * 2 : 16;
        struct ended *e = realloc(mk->ended, cap * sizeof(*e));
        if (e == NULL)
            abort(); /* a done lost would leave its request hanging for good */
        mk->ended = e;
        mk->capended = cap;
    }
    mk->ended[mk->nended++] = (struct ended){tag, status};
}

/* The connection failed: closed, its server's breaker opened, its marks -EIO. */
static void conn_fail(struct cache_marker *mk, struct mconn *k)
{
    conn_close(mk, k);
    cache__server_failed(k->s);
    while (k->len > 0) {
        ended_push(mk, k->q[k->head].tag, -EIO);
        k->head = (k->head + 1) % k->cap;
        k->len--;
    }
    k->head = 0;
}

/* The events the connection waits for now, in the marker's set. */
static int conn_watch(struct cache_marker *mk, struct mconn *k)
{
    uint32_t ev = EPOLLIN;
    struct epoll_event e;

    if (k->connecting || k->sent < k->nout)
        ev |= EPOLLOUT;
    if (ev == k->events)
        return 0;
    e = (struct epoll_event){.events = ev, .data.ptr = k};
    if (epoll_ctl(mk->ep, k->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, k->fd, &e) < 0)
        return -errno;
    k->events = ev;
    return 0;
}

static int conn_open(struct cache_marker *mk, struct mconn *k)
{
    int one = 1;

    k->fd = socket(k->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (k->fd < 0)
        return -errno;
    (void)setsockopt(k->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    k->epoch = atomic_load(&k->s->epoch);
    if (connect(k->fd, (struct sockaddr *)&k->sa, k->salen) < 0) {
        if (errno != EINPROGRESS) {
            int rc = -errno;
            conn_close(mk, k);
            return rc;
        }
        k->connecting = 1;
    }
    return conn_watch(mk, k);
}

/* Sends what it can of the connection's bytes; -errno when it failed. */
static int conn_send(struct mconn *k)
{
    while (!k->connecting && k->sent < k->nout) {
        ssize_t n = send(k->fd, k->out + k->sent, k->nout - k->sent, MSG_NOSIGNAL);
        if (n < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
        k->sent += (size_t)n;
    }
    if (k->sent == k->nout)
        k->sent = k->nout = 0;
    return 0;
}

int cache_mark_start(struct cache_marker *mk, const char *key, uint32_t ttl_s,
                     void *tag)
{
    struct server *s = cache__server_of(mk->c, mk->m, key);
    struct mconn *k = NULL;
    int64_t now = cache__now_ms();
    char cmd[CACHE_KEY_MAX + 64];
    int n;

    if (s == NULL || strlen(key) > CACHE_KEY_MAX ||
        atomic_load(&s->down_until_ms) > now || atomic_load(&s->flush_needed))
        return -EIO;
    for (uint32_t i = 0; i < mk->nconn; i++)
        if (mk->conn[i].s == s)
            k = &mk->conn[i];
    if (k == NULL || k->salen == 0)
        return -EIO;
    /* The server came back since this connection was made: it died with it. */
    if (k->fd >= 0 && k->len == 0 && k->epoch != atomic_load(&s->epoch))
        conn_close(mk, k);
    if (k->fd < 0 && conn_open(mk, k) < 0) {
        cache__server_failed(s);
        return -EIO;
    }
    n = snprintf(cmd, sizeof(cmd), "set %s 0 %u 1\r\n1\r\n", key, ttl_s);
    if (k->len == k->cap) {
        size_t cap = k->cap ? k->cap * 2 : 16;
        struct mark *q = malloc(cap * sizeof(*q));
        if (q == NULL)
            return -ENOMEM;
        for (size_t i = 0; i < k->len; i++)
            q[i] = k->q[(k->head + i) % k->cap];
        free(k->q);
        k->q = q;
        k->head = 0;
        k->cap = cap;
    }
    if (k->nout + (size_t)n > k->capout) {
        size_t cap = k->capout ? k->capout * 2 : 1024;
        while (cap < k->nout + (size_t)n)
            cap *= 2;
        char *o = realloc(k->out, cap);
        if (o == NULL)
            return -ENOMEM;
        k->out = o;
        k->capout = cap;
    }
    memcpy(k->out + k->nout, cmd, (size_t)n);
    k->nout += (size_t)n;
    k->q[(k->head + k->len) % k->cap] =
        (struct mark){.tag = tag, .due_ms = now + mk->c->timeout_ms};
    k->len++;
    if (conn_send(k) < 0 || conn_watch(mk, k) < 0)
        conn_fail(mk, k); /* the mark ends in run(), with the others */
    return 0;
}

/* The answers in: one line per mark, in order. -EIO when the stream is bad. */
static int conn_read(struct mconn *k, cache_mark_done done, void *arg)
{
    for (;;) {
        ssize_t n = recv(k->fd, k->in + k->nin, sizeof(k->in) - k->nin, 0);
        if (n == 0)
            return -EIO; /* closed by the server */
        if (n < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -EIO;
        k->nin += (size_t)n;
        for (;;) {
            char *nl = memchr(k->in, '\n', k->nin);
            size_t used;
            struct mark m;
            if (nl == NULL)
                break;
            if (k->len == 0)
                return -EIO; /* an answer to nothing */
            m = k->q[k->head];
            k->head = (k->head + 1) % k->cap;
            k->len--;
            used = (size_t)(nl - k->in) + 1;
            done(arg, m.tag,
                 used == 8 && memcmp(k->in, "STORED\r\n", 8) == 0 ? 0 : -EIO);
            memmove(k->in, k->in + used, k->nin - used);
            k->nin -= used;
        }
        if (k->nin == sizeof(k->in))
            return -EIO; /* no line is that long */
    }
}

static void conn_ready(struct cache_marker *mk, struct mconn *k, uint32_t ev,
                       cache_mark_done done, void *arg)
{
    if (k->connecting && (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(k->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0) {
            conn_fail(mk, k);
            return;
        }
        k->connecting = 0;
    }
    if (conn_send(k) < 0 ||
        ((ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) && conn_read(k, done, arg) < 0)) {
        if (k->len == 0 && k->sent == k->nout)
            conn_close(mk, k); /* closed while idle (a restart): no failure */
        else
            conn_fail(mk, k);
        return;
    }
    if (conn_watch(mk, k) < 0)
        conn_fail(mk, k);
}

void cache_marker_run(struct cache_marker *mk, cache_mark_done done, void *arg)
{
    struct epoll_event ev[MAX_SERVERS];
    int64_t now;
    int n = epoll_wait(mk->ep, ev, MAX_SERVERS, 0);

    for (int i = 0; i < n; i++)
        conn_ready(mk, ev[i].data.ptr, ev[i].events, done, arg);
    now = cache__now_ms();
    for (uint32_t i = 0; i < mk->nconn; i++) {
        struct mconn *k = &mk->conn[i];
        if (k->len > 0 && k->q[k->head].due_ms <= now)
            conn_fail(mk, k); /* no answer in time: the server is stalled */
    }
    /* done may start marks (and so end some here): every one is reported. */
    for (size_t i = 0; i < mk->nended; i++)
        done(arg, mk->ended[i].tag, mk->ended[i].status);
    mk->nended = 0;
}

int64_t cache_marker_due_ms(const struct cache_marker *mk)
{
    int64_t due = INT64_MAX;

    if (mk->nended > 0)
        return 0;
    for (uint32_t i = 0; i < mk->nconn; i++) {
        const struct mconn *k = &mk->conn[i];
        if (k->len > 0 && k->q[k->head].due_ms < due)
            due = k->q[k->head].due_ms;
    }
    return due;
}
