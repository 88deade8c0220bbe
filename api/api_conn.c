/*
 * api_conn.c: the server's connections as libmicrohttpd hands them over:
 * a cap per client address, and deadlines on a request's headers and body.
 *
 * libmicrohttpd's own timeout is an idle timeout: a client that sends a
 * byte every few seconds, or garbage without a line end, would hold its
 * connection as long as it likes. Here every connection has a deadline that
 * its state sets (connect or last response: complete headers within
 * header_timeout_ms or idle_timeout_ms; headers in: complete body within
 * body_timeout_ms; body in: none, the handler's own deadlines bound it). A
 * reaper thread, every REAP_MS, shuts down the socket of a connection past
 * its deadline, unless bytes wait in it (sent in time, not read yet by a
 * busy worker); libmicrohttpd then sees the end of the stream and closes it
 * as usual. The socket is shut down under the list's lock, and a connection
 * leaves the list (under that lock) before libmicrohttpd closes its socket,
 * so the reaper never touches a descriptor that was reused.
 *
 * Each connection also lends the storage of its current request
 * (api_conn_req()), and keeps the last token verified on it (the memo).
 *
 * The cap counts the connections of each peer address except trusted
 * proxies (HAProxy is one address for all its clients: it has limits of its
 * own); a peer at its cap is refused at accept.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <malloc.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>

#include "api/api_int.h"

#define REAP_MS 100
#define TRIM_PEAK 256                  /* connections at once: a flood */
#define TRIM_EVERY_US (10 * 1000000LL) /* at most one trim in 10 s */

/*
 * A connection's body phase ends once: the loop takes the complete body
 * (BODY_IN -> BODY_NONE), or the reaper answers 408 at its deadline
 * (BODY_IN -> BODY_REAPED), whichever swaps first. A request whose body
 * the reaper timed out is never handled: its client got a 408.
 */
enum { BODY_NONE, BODY_IN, BODY_REAPED };

struct api_conn {
    struct api_conn *prev, *next; /* in the list, under its lock */
    int fd;
    uint32_t peer;    /* IPv4, network order */
    int counted;      /* against the per-address cap */
    int reaped;       /* its socket was shut down */
    int worker;       /* its worker thread's slot, or -1 */
    atomic_llong due; /* monotonic us; 0: no deadline */
    atomic_int body;  /* BODY_*: reading a body, and who ended that */
    /*
     * The storage of the connection's request: libmicrohttpd carries one
     * request at a time on a connection, and completes it before the next
     * one starts and before the connection closes, so a keep-alive client's
     * requests cost no allocation of ours.
     */
    struct api_req req;
    struct api_token_memo memo; /* kept from one request to the next */
};

#define MAX_WORKERS API_LOOPS_MAX

/* A worker thread of libmicrohttpd (its daemon) and the handlers running on it. */
struct worker {
    const void *daemon; /* set once, under the list's lock */
    atomic_int busy;
    atomic_uint nconn;            /* its open connections */
    atomic_uint_fast64_t nclosed; /* connections it closed */
};

struct api_conns {
    struct api_limits lim;
    pthread_mutex_t lock;
    pthread_cond_t stop_cond;
    struct api_conn head; /* list sentinel */
    uint32_t n;
    int stop;
    pthread_t reaper;
    atomic_uint_fast64_t nreaped, nrefused;
    struct worker worker[MAX_WORKERS];
    atomic_uint nworker;
};

static int64_t mono_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/*
 * A body not complete within body_timeout_ms gets a 408 before the socket is
 * shut down, where a proxy in front (HAProxy forwards such an early answer)
 * would otherwise answer a 502 or 504 that blames the server and asks for a
 * retry. Nothing was sent on the connection yet: its request was not
 * handled, and cannot be (k->body).
 */
static void answer_timeout(struct api_conns *c, struct api_conn *k)
{
    char date[64], msg[512];
    time_t now = time(NULL);
    struct tm tm;
    char body[160];
    int blen, len;

    gmtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    blen = snprintf(body, sizeof(body),
                    "{\"error\":{\"code\":\"request_timeout\",\"message\":\"the "
                    "request body was not complete within %u ms\"}}",
                    c->lim.body_timeout_ms);
    len = snprintf(msg, sizeof(msg),
                   "HTTP/1.1 408 Request Timeout\r\nDate: %s\r\nContent-Type: "
                   "application/json\r\nX-Content-Type-Options: nosniff\r\n"
                   "Connection: close\r\nContent-Length: %d\r\n\r\n%s",
                   date, blen, body);
    if (len > 0 && (size_t)len < sizeof(msg))
        (void)send(k->fd, msg, (size_t)len, MSG_DONTWAIT | MSG_NOSIGNAL);
}

static void *reaper_main(void *arg)
{
    struct api_conns *c = arg;
    struct timespec until;
    uint32_t peak = 0;
    int64_t trimmed = 0;

    pthread_setname_np(pthread_self(), "bc-reaper");
    pthread_mutex_lock(&c->lock);
    while (!c->stop) {
        int64_t now = mono_us();

        /*
         * After a flood of connections (each had ~25 KiB of parser memory),
         * the freed memory goes back to the system: glibc keeps it otherwise,
         * and repeated floods took a server from 22 to 72 MB.
         */
        peak = c->n > peak ? c->n : peak;
        if (peak >= TRIM_PEAK && c->n <= peak / 4 && now - trimmed >= TRIM_EVERY_US) {
            pthread_mutex_unlock(&c->lock);
            malloc_trim(0);
            pthread_mutex_lock(&c->lock);
            trimmed = now;
            peak = c->n;
        }
        for (struct api_conn *k = c->head.next; k != &c->head; k = k->next) {
            long long due = atomic_load(&k->due);
            int pending = 0;
            if (due == 0 || now <= due || k->reaped)
                continue;
            /*
             * A handler running on the connection's worker (which then reads
             * none of its other connections), or bytes waiting in the socket:
             * the client sent in time and we have not got to it yet (a
             * kick-off burst). The deadline measures the client, not us:
             * look again at the next round.
             */
            if ((k->worker >= 0 && atomic_load(&c->worker[k->worker].busy) > 0) ||
                (ioctl(k->fd, FIONREAD, &pending) == 0 && pending > 0)) {
                /* Unless the connection's state just set a new deadline. */
                atomic_compare_exchange_strong(&k->due, &due, now + REAP_MS * 1000);
                continue;
            }
            if (atomic_load(&k->body) != BODY_NONE) {
                int in = BODY_IN;
                if (!atomic_compare_exchange_strong(&k->body, &in, BODY_REAPED))
                    continue; /* the body came in meanwhile */
                answer_timeout(c, k);
            }
            shutdown(k->fd, SHUT_RDWR);
            k->reaped = 1;
            atomic_fetch_add_explicit(&c->nreaped, 1, memory_order_relaxed);
        }
        api_deadline_ms(&until, CLOCK_REALTIME, REAP_MS);
        pthread_cond_timedwait(&c->stop_cond, &c->lock, &until);
    }
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

int api_conns_create(const struct api_limits *lim, struct api_conns **out)
{
    struct api_conns *c = calloc(1, sizeof(*c));
    int rc;

    if (c == NULL)
        return -ENOMEM;
    c->lim = *lim;
    c->head.next = c->head.prev = &c->head;
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->stop_cond, NULL);
    if ((rc = -pthread_create(&c->reaper, NULL, reaper_main, c)) < 0) {
        pthread_cond_destroy(&c->stop_cond);
        pthread_mutex_destroy(&c->lock);
        free(c);
        return rc;
    }
    *out = c;
    return 0;
}

void api_conns_destroy(struct api_conns *c)
{
    if (c == NULL)
        return;
    pthread_mutex_lock(&c->lock);
    c->stop = 1;
    pthread_cond_signal(&c->stop_cond);
    pthread_mutex_unlock(&c->lock);
    pthread_join(c->reaper, NULL);
    pthread_cond_destroy(&c->stop_cond);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

enum MHD_Result api_conns_accept(void *cls, const struct sockaddr *addr, socklen_t len)
{
    struct api_conns *c = cls;
    uint32_t peer, n = 0;

    if (addr->sa_family != AF_INET || len < (socklen_t)sizeof(struct sockaddr_in))
        return MHD_YES;
    peer = ((const struct sockaddr_in *)addr)->sin_addr.s_addr;
    if (api_net_match(&c->lim.trusted, peer))
        return MHD_YES;
    /* One pass over at most max_connections entries, at accept only. */
    pthread_mutex_lock(&c->lock);
    for (struct api_conn *k = c->head.next; k != &c->head && n < c->lim.conn_per_addr;
         k = k->next)
        n += k->counted && k->peer == peer;
    pthread_mutex_unlock(&c->lock);
    if (n < c->lim.conn_per_addr)
        return MHD_YES;
    atomic_fetch_add_explicit(&c->nrefused, 1, memory_order_relaxed);
    return MHD_NO;
}

/* The slot of conn's worker thread (added on first sight), or -1. */
static int worker_of(struct api_conns *c, struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_DAEMON);
    const void *d = info != NULL ? (const void *)info->daemon : NULL;
    unsigned n = atomic_load(&c->nworker);
    int slot = -1;

    if (d == NULL)
        return -1;
    for (unsigned i = 0; i < n; i++)
        if (c->worker[i].daemon == d)
            return (int)i;
    pthread_mutex_lock(&c->lock);
    n = atomic_load(&c->nworker);
    for (unsigned i = 0; i < n && slot < 0; i++)
        if (c->worker[i].daemon == d)
            slot = (int)i;
    if (slot < 0 && n < MAX_WORKERS) {
        c->worker[n].daemon = d;
        atomic_store(&c->nworker, n + 1);
        slot = (int)n;
    }
    pthread_mutex_unlock(&c->lock);
    return slot;
}

void api_conns_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                      enum MHD_ConnectionNotificationCode toe)
{
    struct api_conns *c = cls;
    struct api_conn *k = *socket_context;
    const union MHD_ConnectionInfo *info;

    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        k = calloc(1, sizeof(*k));
        if (k == NULL)
            return; /* untracked: only its idle timeout applies */
        info = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        k->fd = info != NULL ? info->connect_fd : -1;
        k->worker = worker_of(c, conn);
        if (k->worker >= 0)
            atomic_fetch_add_explicit(&c->worker[k->worker].nconn, 1,
                                      memory_order_relaxed);
        info = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        if (info != NULL && info->client_addr->sa_family == AF_INET) {
            k->peer = ((const struct sockaddr_in *)info->client_addr)->sin_addr.s_addr;
            k->counted = !api_net_match(&c->lim.trusted, k->peer);
        }
        atomic_store(&k->due, mono_us() + (int64_t)c->lim.header_timeout_ms * 1000);
        if (k->fd < 0)
            atomic_store(&k->due, 0);
        pthread_mutex_lock(&c->lock);
        k->next = &c->head;
        k->prev = c->head.prev;
        k->prev->next = k;
        c->head.prev = k;
        c->n++;
        pthread_mutex_unlock(&c->lock);
        *socket_context = k;
        return;
    }
    if (k == NULL) {
        /* Untracked (no memory at its start), but its loop counts it. */
        int w = worker_of(c, conn);
        if (w >= 0)
            atomic_fetch_add_explicit(&c->worker[w].nclosed, 1, memory_order_relaxed);
        return;
    }
    if (k->worker >= 0) {
        atomic_fetch_sub_explicit(&c->worker[k->worker].nconn, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&c->worker[k->worker].nclosed, 1,
                                  memory_order_relaxed);
    }
    pthread_mutex_lock(&c->lock);
    k->prev->next = k->next;
    k->next->prev = k->prev;
    c->n--;
    pthread_mutex_unlock(&c->lock);
    free(k);
    *socket_context = NULL;
}

void api_conn_handler(struct api_conns *c, struct MHD_Connection *conn, int enter)
{
    int w = worker_of(c, conn);

    if (w >= 0)
        atomic_fetch_add(&c->worker[w].busy, enter ? 1 : -1);
}

static struct api_conn *conn_of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

    return info != NULL ? info->socket_context : NULL;
}

int api_conn_phase(struct api_conns *c, struct MHD_Connection *conn,
                   enum api_conn_phase phase)
{
    struct api_conn *k = conn_of(conn);
    int64_t ms = 0;
    int in = BODY_IN;

    if (k == NULL)
        return 0;
    if (phase == API_CONN_BODY) {
        ms = c->lim.body_timeout_ms;
        atomic_store(&k->body, BODY_IN);
    } else if (!atomic_compare_exchange_strong(&k->body, &in, BODY_NONE) &&
               in == BODY_REAPED) {
        return -1;
    }
    if (phase == API_CONN_IDLE)
        ms = c->lim.idle_timeout_ms;
    atomic_store(&k->due, ms ? mono_us() + ms * 1000 : 0);
    return 0;
}

struct api_req *api_conn_req(struct api_conns *c, struct MHD_Connection *conn)
{
    struct api_conn *k = conn_of(conn);
    (void)c;

    if (k == NULL)
        return NULL;
    memset(&k->req, 0, sizeof(k->req));
    k->req.memo = &k->memo;
    return &k->req;
}

void api_conns_stats(struct api_conns *c, uint64_t *open, uint64_t *reaped,
                     uint64_t *refused)
{
    pthread_mutex_lock(&c->lock);
    *open = c->n;
    pthread_mutex_unlock(&c->lock);
    *reaped = atomic_load(&c->nreaped);
    *refused = atomic_load(&c->nrefused);
}

uint32_t api_conns_loops(struct api_conns *c, uint32_t *count, uint32_t max)
{
    uint32_t n = atomic_load(&c->nworker);

    for (uint32_t i = 0; i < n && i < max; i++)
        count[i] = atomic_load_explicit(&c->worker[i].nconn, memory_order_relaxed);
    return n;
}

void api_conns_set_loops(struct api_conns *c, struct MHD_Daemon *const *loop,
                         uint32_t n)
{
    pthread_mutex_lock(&c->lock);
    for (uint32_t i = 0; i < n && i < MAX_WORKERS; i++)
        c->worker[i].daemon = loop[i];
    atomic_store(&c->nworker, n < MAX_WORKERS ? n : MAX_WORKERS);
    pthread_mutex_unlock(&c->lock);
}

uint64_t api_conns_closed(struct api_conns *c, uint32_t i)
{
    if (i >= atomic_load(&c->nworker))
        return 0;
    return atomic_load_explicit(&c->worker[i].nclosed, memory_order_relaxed);
}
