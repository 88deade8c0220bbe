/*
 * api_listen.c: the server's listening socket and the thread that accepts
 * its connections and hands them to the event loops.
 *
 * libmicrohttpd's own listening socket, with a pool of loops, is in every
 * loop's epoll set: a new connection wakes them all and whichever loop
 * calls accept() first keeps it. Which one wins is luck and load, and a
 * few long-lived connections (HAProxy keeps a handful to each server) can
 * all land on one loop while the other cores idle. Here every loop is a
 * daemon of its own without a listening socket, and one thread accepts and
 * hands each connection (api_loop_add(); the loop's thread adds it to its
 * daemon) to the loop with the fewest open connections: those it gave it
 * less those the loop has closed (api_conns_closed()) or refused
 * (api_loop_refused()), all counted without a lock.
 *
 * The acceptor blocks in accept4(); shutdown() of the socket wakes it when
 * the server stops. It never spins: a descriptor shortage (EMFILE, ENFILE,
 * ENOBUFS, ENOMEM) makes it wait 10 ms before it tries again, and the
 * connection waits in the backlog meanwhile.
 */
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "api/api_int.h"

struct api_listener {
    int fd;
    struct api_loop **loop; /* ref, set by api_listen_run() */
    uint32_t nloop;
    struct api_conns *conns; /* ref: what each loop closed */
    uint64_t *given;         /* connections added to each loop; the thread's */
    uint32_t next;           /* where a tie starts; the thread's */
    pthread_t thread;
    int running;
    atomic_int stop;
};

int api_listen_open(const struct sockaddr_in *addr, struct api_listener **out)
{
    struct api_listener *l = calloc(1, sizeof(*l));
    int one = 1, rc;

    if (l == NULL)
        return -ENOMEM;
    l->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (l->fd < 0) {
        rc = -errno;
        free(l);
        return rc;
    }
    /*
     * SO_REUSEADDR: a restarted server binds at once, beside the TIME_WAIT
     * connections of the one before; Linux still refuses the address while
     * another socket listens on it. No SO_REUSEPORT: the server has this one
     * socket, and with it a second server (or anything else that set it, as
     * HAProxy does) would share the port and take part of its connections.
     * The kernel decides, atomically, in bind() or listen() (two servers
     * started at once may both bind; the second listen() fails), so no
     * race lets two pass: one gets EADDRINUSE.
     */
    if (setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(l->fd, (const struct sockaddr *)addr, sizeof(*addr)) < 0 ||
        listen(l->fd, SOMAXCONN) < 0) {
        rc = -errno;
        close(l->fd);
        free(l);
        return rc;
    }
    *out = l;
    return 0;
}

static void pause_ms(long ms)
{
    struct timespec ts = {.tv_sec = 0, .tv_nsec = ms * 1000000L};

    nanosleep(&ts, NULL);
}

/* The loop with the fewest open connections (ties go round). */
static uint32_t least_loaded(struct api_listener *l)
{
    uint32_t best = l->next % l->nloop;
    uint64_t best_open = UINT64_MAX;

    for (uint32_t j = 0; j < l->nloop; j++) {
        uint32_t i = (l->next + j) % l->nloop;
        uint64_t closed = api_conns_closed(l->conns, i) + api_loop_refused(l->loop[i]);
        uint64_t open = l->given[i] > closed ? l->given[i] - closed : 0;
        if (open < best_open) {
            best = i;
            best_open = open;
        }
    }
    l->next = best + 1;
    return best;
}

static void *acceptor_main(void *arg)
{
    struct api_listener *l = arg;

    pthread_setname_np(pthread_self(), "bc-accept");
    while (!atomic_load(&l->stop)) {
        struct sockaddr_storage sa;
        socklen_t len = sizeof(sa);
        int fd =
            accept4(l->fd, (struct sockaddr *)&sa, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);

        if (fd < 0) {
            /*
             * A shortage (EMFILE, ENFILE, ENOBUFS, ENOMEM) waits a little;
             * EINVAL after shutdown() means the server stops.
             */
            if (errno != EINTR && errno != ECONNABORTED && errno != EAGAIN &&
                errno != EPROTO && errno != EPERM && !atomic_load(&l->stop))
                pause_ms(10);
            continue;
        }
        /*
         * The daemon closes the socket itself when it cannot take it (a
         * full loop, the per-address cap); then it never counts as closed.
         */
        uint32_t i = least_loaded(l);
        if (api_loop_add(l->loop[i], fd, (const struct sockaddr *)&sa, len) == 0)
            l->given[i]++;
        else
            close(fd);
    }
    return NULL;
}

int api_listen_run(struct api_listener *l, struct api_loop **loop, uint32_t nloop,
                   struct api_conns *conns)
{
    int rc;

    l->given = calloc(nloop ? nloop : 1, sizeof(*l->given));
    if (l->given == NULL || nloop == 0)
        return l->given ? -EINVAL : -ENOMEM;
    l->loop = loop;
    l->nloop = nloop;
    l->conns = conns;
    rc = pthread_create(&l->thread, NULL, acceptor_main, l);
    if (rc != 0)
        return -rc;
    l->running = 1;
    return 0;
}

void api_listen_close(struct api_listener *l)
{
    if (l == NULL)
        return;
    atomic_store(&l->stop, 1);
    /* Wakes accept4(); new connections are refused from now on. */
    shutdown(l->fd, SHUT_RDWR);
    if (l->running)
        pthread_join(l->thread, NULL);
    close(l->fd);
    free(l->given);
    free(l);
}

uint16_t api_listen_port(const struct api_listener *l)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);

    if (getsockname(l->fd, (struct sockaddr *)&sa, &len) < 0)
        return 0;
    return ntohs(sa.sin_port);
}
