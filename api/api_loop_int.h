/*
 * api_loop_int.h: what the event loops (api_loop.c) and their batched reads
 * (api_loop_batch.c) share: a loop, its statements' records, and the steps
 * of starting one. Included by those two files only.
 */
#ifndef API_LOOP_INT_H
#define API_LOOP_INT_H

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <sys/socket.h>

#include "api/api_int.h"

/*
 * A statement that finds no idle connection waits on the loop, up to
 * PENDING_MS, at most PENDING_MAX at once, when a connection will come
 * back to it: the loop has statements of its own in flight, or the host's
 * connections are all open and busy (the router then wakes the loop when
 * one comes back: router_waiter_*). Else, or after PENDING_MS, it goes to a
 * worker, which waits for a connection (or opens one) as handlers do.
 */
#define PENDING_MS 250
#define PENDING_MAX 4096

/* A statement in flight for a request, in its loop's list. */
struct api_loop_wait {
    struct api_req *req; /* ref: its connection is suspended */
    struct router_op *op;
    struct sql_rows rows;
    api_loop_done done;
    int write;           /* not a GET: never run twice, marked when it ran */
    int keyed;           /* a write holding one of its user's turns (api_work) */
    uint32_t events;     /* EPOLL* bits registered for the op's socket */
    int64_t due_ms;      /* pending (no op yet): when it goes to a worker */
    int status;          /* pending: why its last start failed */
    uint32_t shard;      /* not started yet: its shard (api_loop_read, pending) */
    struct sql_buf text; /* its statement */
    struct api_loop_wait **batch; /* a batch's first read: its reads, itself first */
    uint32_t nbatch;
    struct api_loop_wait *prev, *next;
};

struct pending {
    int fd;
    socklen_t len;
    struct sockaddr_storage sa;
};

struct api_loop {
    struct MHD_Daemon *daemon; /* ref */
    struct router *router;     /* ref, or NULL: wakes it when a connection is back */
    int ep;                    /* the loop's epoll set */
    int mhd_fd;                /* the daemon's epoll descriptor (the daemon's) */
    int wake_fd;               /* eventfd: new connections, or stop */
    pthread_t thread;
    int running;
    atomic_int quit;
    atomic_int finishing; /* no new statement; ends once those in flight are */
    int64_t finish_by_ms; /* the thread's: abandons what is left then */
    atomic_uint_fast64_t refused;
    pthread_mutex_t lock; /* the queue of new connections */
    struct pending *queue;
    size_t nqueue, capqueue;
    struct api_loop_wait *waits; /* in flight; the loop thread's */
    /* Waiting for a connection (no op yet), oldest first; the thread's. */
    struct api_loop_wait *pend_head, *pend_tail;
    uint32_t npend;
    struct api_loop_wait *retry; /* the pending one whose handler runs again */
    int run;                     /* the loop thread's: MHD_run() is due */
    struct cache_marker *marker; /* NULL: no cache */
    int mark_fd;                 /* its descriptor (the marker's) */
    struct api_loop_wait *marks; /* answered, waiting for their mark */
    struct api_loop_wait *reads; /* api_loop_read()s of this turn, not started */
    atomic_int suspended;        /* its connections suspended (api_loop_suspend()) */
    uint32_t busy_wakes; /* a window's wake-ups from which it is busy (0: off) */
    int batched;         /* the thread's: under SCHED_BATCH now */
    int busy;            /* the thread's: woken often lately */
    uint32_t wakes;      /* the thread's: wake-ups in this window */
    int64_t window_ms;   /* the thread's: when this window began */
};

/* api_loop.c. A statement's record done with: its turn, text and batch freed. */
void api_loop__wait_free(struct api_loop_wait *w);
/* api_loop_query() with a va_list: the statement alone, started at once. */
int api_loop__vquery(struct api_req *req, api_loop_done done, uint32_t shard,
                     const char *fmt, va_list ap);
/* w's op started, for n requests (w's, and a batch's others): on the loop's set. */
void api_loop__started(struct api_loop *l, struct api_loop_wait *w, uint32_t n);
/*
 * w's op did not start (rc): it waits on the loop for a connection (BC_EPOOL
 * while the loop has statements that will give one back), or its handler
 * runs on a worker.
 */
void api_loop__not_started(struct api_loop *l, struct api_loop_wait *w, int rc);
/* api_loop_sched.c. A loop's wake-ups are counted over windows of this. */
#define API_LOOP_SCHED_WINDOW_MS 50
/* Sets l's busy threshold from api_loop_start()'s batch_wakes (0: off). */
void api_loop__sched_init(struct api_loop *l, uint32_t batch_wakes);
/* The loop thread's policy for its next wait (now: sql_now_ms()). */
void api_loop__sched_follow(struct api_loop *l, int64_t now);
/* api_loop_batch.c: the turn's api_loop_read()s, started by host. */
void api_loop__start_reads(struct api_loop *l);

#endif
