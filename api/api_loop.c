/*
 * api_loop.c: the event loops, each a thread that waits in one epoll set for
 *  - its libmicrohttpd daemon (the daemon's own epoll descriptor: ready
 *    means MHD_run() has sockets to serve, a resumed connection, or its
 *    inter-thread signal),
 *  - an eventfd through which the acceptor hands it new connections,
 *  - the sockets of the statements its requests run on the loop,
 *  - its memcached marker's epoll descriptor (the read-your-writes marks of
 *    the writes it ran, set without blocking: cache_mark_start()).
 *
 * Why the loop runs statements. A request that waits for the database used
 * to go to a worker thread and back: two wake-ups of sleeping threads per
 * request, lock traffic on the pool's queue, and the worker's own poll() on
 * the socket, a cost larger than the statement's own for a primary-key
 * read. A short read (GET /v1/me) now starts on the loop, on a connection
 * that a worker left idle in the router's pool (router_op_start(): never
 * a connect, never a wait), and its answer is queued when the socket says
 * the result is in, between the loop's other requests. Whatever needs
 * waiting goes to a worker as before.
 *
 * A loop never blocks but in epoll_wait(): its timeout is the nearest of
 * the daemon's own (idle connections) and the statements' deadlines.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "api/api_loop_int.h"

#define EVENTS 64
/* A stopping loop's statements in flight get this long to end (theirs are shorter). */
#define FINISH_MS 5000
static _Thread_local struct api_loop *this_loop;
static atomic_uint_fast64_t n_answered, n_to_worker, n_marked, n_mark_failed;
static atomic_int_fast64_t n_busy; /* in flight or pending, every loop's */

struct api_loop *api_loop_self(void)
{
    return this_loop;
}

void api_loop_suspend(struct api_loop *l, struct MHD_Connection *conn)
{
    if (l != NULL)
        atomic_fetch_add_explicit(&l->suspended, 1, memory_order_relaxed);
    MHD_suspend_connection(conn);
}

void api_loop_resume(struct api_loop *l, struct MHD_Connection *conn)
{
    uint64_t one = 1;

    if (l != NULL)
        atomic_fetch_sub_explicit(&l->suspended, 1, memory_order_relaxed);
    MHD_resume_connection(conn);
    if (l == this_loop)
        l->run = 1;
    else /* libmicrohttpd signals nothing to a loop it does not run itself */
        (void)!write(l->wake_fd, &one, sizeof(one));
}

void api_loop_stats(uint64_t *answered, uint64_t *to_worker, uint64_t *marked,
                    uint64_t *mark_failed, uint64_t *busy)
{
    int64_t b = atomic_load_explicit(&n_busy, memory_order_relaxed);

    *busy = b > 0 ? (uint64_t)b : 0;
    *answered = atomic_load_explicit(&n_answered, memory_order_relaxed);
    *to_worker = atomic_load_explicit(&n_to_worker, memory_order_relaxed);
    *marked = atomic_load_explicit(&n_marked, memory_order_relaxed);
    *mark_failed = atomic_load_explicit(&n_mark_failed, memory_order_relaxed);
}

static void list_add(struct api_loop_wait **head, struct api_loop_wait *w)
{
    w->prev = NULL;
    w->next = *head;
    if (*head != NULL)
        (*head)->prev = w;
    *head = w;
}

static void list_del(struct api_loop_wait **head, struct api_loop_wait *w)
{
    if (w->prev != NULL)
        w->prev->next = w->next;
    else
        *head = w->next;
    if (w->next != NULL)
        w->next->prev = w->prev;
}

/* w is done: a write's turn goes back to its user's next write. */
void api_loop__wait_free(struct api_loop_wait *w)
{
    sql_buf_deinit(&w->text);
    free(w->batch);
    if (w->keyed)
        api_work_key_give(api_server_work(w->req->srv), w->req->auth.user_id);
    free(w);
}

/* An answered request's connection goes back to its daemon; w is done. */
static void answered(struct api_loop *l, struct api_loop_wait *w)
{
    struct api_req *req = w->req;

    api_loop__wait_free(w);
    if (req->status == 0)
        api_error(req, 500, "internal", "the handler gave no answer");
    req->where = API_WORKER_ANSWERED;
    api_loop_resume(l, req->conn);
}

/* The mark of an answered write is in (or failed): its answer leaves. */
static void mark_done(void *arg, void *tag, int status)
{
    struct api_loop *l = arg;
    struct api_loop_wait *w = tag;

    atomic_fetch_add_explicit(status == 0 ? &n_marked : &n_mark_failed, 1,
                              memory_order_relaxed);
    list_del(&l->marks, w);
    answered(l, w);
}

/*
 * A write that ran answers after its user's read-your-writes mark is set
 * (as api_dispatch_rest() marks before the answer leaves): 1 when the mark
 * is on its way (mark_done() answers), 0 when there is none to set or no
 * server takes it now (answered at once, as cache_mark()'s failure is).
 */
static int mark_start(struct api_loop *l, struct api_loop_wait *w)
{
    char key[64];
    uint32_t ttl_s;

    if (l->marker == NULL || !w->write ||
        !api_rw_mark(w->req, key, sizeof(key), &ttl_s))
        return 0;
    if (cache_mark_start(l->marker, key, ttl_s, w) < 0) {
        atomic_fetch_add_explicit(&n_mark_failed, 1, memory_order_relaxed);
        return 0;
    }
    list_add(&l->marks, w);
    return 1;
}

static uint32_t epoll_bits(int wait)
{
    uint32_t ev = 0;

    if (wait & SQL_WAIT_READ)
        ev |= EPOLLIN;
    if (wait & SQL_WAIT_WRITE)
        ev |= EPOLLOUT;
    if (wait & SQL_WAIT_EXCEPT)
        ev |= EPOLLPRI;
    return ev;
}

static int sql_bits(uint32_t ev, int wait)
{
    int got = 0;

    if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP))
        got |= SQL_WAIT_READ;
    if (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))
        got |= SQL_WAIT_WRITE;
    if (ev & EPOLLPRI)
        got |= SQL_WAIT_EXCEPT;
    return got & wait;
}

/*
 * Takes w out of the loop: its socket leaves the set before its connection
 * goes back to the pool (to other threads). The op's status: -ECANCELED
 * when it had not ended (abandoned, its connection closed).
 */
static int wait_close(struct api_loop *l, struct api_loop_wait *w)
{
    int status;

    if (w->events != 0)
        (void)epoll_ctl(l->ep, EPOLL_CTL_DEL, router_op_fd(w->op), NULL);
    status = router_op_end(w->op);
    list_del(&l->waits, w);
    atomic_fetch_sub_explicit(&n_busy, 1, memory_order_relaxed);
    return status;
}

/* w's request, still suspended, runs its handler on a worker (which resumes it). */
static void to_worker_after_all(struct api_loop_wait *w)
{
    struct api_req *req = w->req;

    api_loop__wait_free(w); /* first: the worker's run counts its own turn */
    atomic_fetch_add_explicit(&n_to_worker, 1, memory_order_relaxed);
    api_req_to_worker(req);
}

/*
 * Answers w's request on the loop with the statement's status, or, when
 * the loop could not run it (no idle connection, a moved shard, a dead
 * idle connection, no room in the epoll set) or its done says so, runs its
 * handler on a worker, which waits as handlers do. A write abandoned
 * half-way is never run again: it may have committed (answered as a
 * timeout is). Frees w, or keeps it until the write's mark is in. rows
 * are w's own (freed here) or a batch's view of its row (api_batch_rows()).
 */
static void answer_rows(struct api_loop *l, struct api_loop_wait *w, int status,
                        struct sql_rows *rows)
{
    struct api_req *req = w->req;
    int stopping = atomic_load(&l->quit), to_worker;

    if (status == -ECANCELED && w->write)
        status = BC_ETIMEOUT;
    to_worker = status == BC_EPOOL || status == BC_EMOVED || status == -ECANCELED;
    if (stopping) {
        api_add_header(req, "Retry-After", "1");
        api_error(req, 503, "unavailable", "the server is stopping; try again");
    } else if (!to_worker) {
        to_worker = !w->done(req, status, rows);
    }
    if (rows == &w->rows)
        sql_rows_free(rows);
    if (!stopping && to_worker) {
        to_worker_after_all(w);
        return;
    }
    if (!stopping)
        atomic_fetch_add_explicit(&n_answered, 1, memory_order_relaxed);
    if (!stopping && req->status != 0 && mark_start(l, w))
        return;
    answered(l, w);
}

/* A batch's reads, each with its own row of the batch's (api_batch_rows()). */
static void answer_batch(struct api_loop *l, struct api_loop_wait *w, int status)
{
    struct sql_rows all = w->rows, view = {0};
    struct api_loop_wait **batch = w->batch;
    uint32_t n = w->nbatch;

    memset(&w->rows, 0, sizeof(w->rows));
    w->batch = NULL; /* w is batch[0]: answered (and freed) below */
    w->nbatch = 0;
    atomic_fetch_sub_explicit(&n_busy, (int64_t)n - 1, memory_order_relaxed);
    for (uint32_t i = 0; i < n; i++) {
        int rc = status == 0 ? api_batch_rows(&all, i, &view) : status;
        answer_rows(l, batch[i], rc, &view);
    }
    sql_rows_free(&all);
    free(batch);
}

static void wait_answer(struct api_loop *l, struct api_loop_wait *w, int status)
{
    if (w->nbatch > 0) {
        answer_batch(l, w, status);
        return;
    }
    answer_rows(l, w, status, &w->rows);
}

/* After the op moved on: wait for what it waits for now, or answer. */
static void wait_update(struct api_loop *l, struct api_loop_wait *w)
{
    int wait = router_op_wait(w->op);
    uint32_t ev = epoll_bits(wait);
    struct epoll_event e = {.events = ev, .data.ptr = w};
    int rc = 0;

    if (wait == 0) {
        wait_answer(l, w, wait_close(l, w));
        return;
    }
    if (ev == w->events)
        return;
    if (ev == 0) /* only Connector/C's own timer: sql_op_tick() */
        rc = epoll_ctl(l->ep, EPOLL_CTL_DEL, router_op_fd(w->op), NULL);
    else
        rc = epoll_ctl(l->ep, w->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD,
                       router_op_fd(w->op), &e);
    if (rc < 0) {
        wait_answer(l, w, wait_close(l, w)); /* -ECANCELED: a worker runs it */
        return;
    }
    w->events = ev;
}

static void pend_push(struct api_loop *l, struct api_loop_wait *w, int front)
{
    w->prev = NULL;
    w->next = NULL;
    if (l->pend_head == NULL) {
        l->pend_head = l->pend_tail = w;
    } else if (front) {
        w->next = l->pend_head;
        l->pend_head = w;
    } else {
        l->pend_tail->next = w;
        l->pend_tail = w;
    }
    l->npend++;
    atomic_fetch_add_explicit(&n_busy, 1, memory_order_relaxed);
}

static struct api_loop_wait *pend_pop(struct api_loop *l)
{
    struct api_loop_wait *w = l->pend_head;

    if (w != NULL) {
        l->pend_head = w->next;
        if (l->pend_head == NULL)
            l->pend_tail = NULL;
        l->npend--;
        w->next = NULL;
        atomic_fetch_sub_explicit(&n_busy, 1, memory_order_relaxed);
    }
    return w;
}

void api_loop__started(struct api_loop *l, struct api_loop_wait *w, uint32_t n)
{
    list_add(&l->waits, w);
    atomic_fetch_add_explicit(&n_busy, (int64_t)n, memory_order_relaxed);
    wait_update(l, w);
}

/* After a BC_EPOOL: whether a connection will come back to the loop. */
static int will_come_back(const struct api_loop *l)
{
    return l->waits != NULL || router_waiter_promised();
}

void api_loop__not_started(struct api_loop *l, struct api_loop_wait *w, int rc)
{
    if (rc == BC_EPOOL && will_come_back(l) && l->npend < PENDING_MAX) {
        w->due_ms = sql_now_ms() + PENDING_MS;
        pend_push(l, w, 0);
        return;
    }
    to_worker_after_all(w);
}

int api_loop__vquery(struct api_req *req, api_loop_done done, uint32_t shard,
                     const char *fmt, va_list ap)
{
    struct api_loop *l = this_loop;
    struct api_loop_wait *w;
    int retry;
    int rc;

    if (l == NULL || req->router == NULL || atomic_load(&l->quit) ||
        atomic_load(&l->finishing))
        return 0;
    retry = l->retry != NULL && l->retry->req == req;
    w = retry ? l->retry : calloc(1, sizeof(*w));
    if (w == NULL)
        return 0;
    w->req = req;
    w->done = done;
    w->write = strcmp(api_routes[req->route].method, "GET") != 0;
    /* A user's writes take turns here as on the workers (work_per_user). */
    if (w->write && !w->keyed) {
        if (!api_work_key_take(api_server_work(req->srv), req->auth.user_id)) {
            free(w); /* (a retry is always keyed) */
            return 0;
        }
        w->keyed = 1;
    }
    w->shard = shard;
    rc = router_op_vstart(req->router, shard, &w->rows, &w->op, fmt, ap);
    if (rc == BC_EPOOL && !retry && will_come_back(l) && l->npend < PENDING_MAX) {
        w->due_ms = sql_now_ms() + PENDING_MS;
        pend_push(l, w, 0);
        req->where = API_ON_LOOP_DB;
        api_loop_suspend(l, req->conn);
        return 1;
    }
    if (rc < 0) {
        w->status = rc;
        if (!retry)
            api_loop__wait_free(w);
        return 0;
    }
    if (retry)
        l->retry = NULL; /* taken: start_pending() lets go of it */
    list_add(&l->waits, w);
    atomic_fetch_add_explicit(&n_busy, 1, memory_order_relaxed);
    /* Suspended first: the answer may come at once (wait_answer() resumes it). */
    req->where = API_ON_LOOP_DB;
    if (!retry)
        api_loop_suspend(l, req->conn);
    wait_update(l, w);
    return 1;
}

int api_loop_query(struct api_req *req, api_loop_done done, uint32_t shard,
                   const char *fmt, ...)
{
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = api_loop__vquery(req, done, shard, fmt, ap);
    va_end(ap);
    return rc;
}

/* The hosts found busy in one pass of start_pending(). */
struct busy_hosts {
    uintptr_t key[8];
    uint32_t n;
};

static int busy_has(const struct busy_hosts *b, uintptr_t key)
{
    for (uint32_t i = 0; i < b->n; i++)
        if (b->key[i] == key)
            return 1;
    return 0;
}

static void busy_add(struct busy_hosts *b, uintptr_t key)
{
    if (key != 0 && b->n < 8 && !busy_has(b, key))
        b->key[b->n++] = key;
}

/*
 * The pending statements, oldest first, each by its handler again: started
 * on a connection given back meanwhile, or sent to a worker when it waited
 * PENDING_MS or no connection will come back to the loop. One whose host's
 * connections are still all busy waits on without its handler running.
 */
static void start_pending(struct api_loop *l, int64_t now)
{
    struct busy_hosts busy = {.n = 0};
    struct api_loop_wait *w;
    uint32_t n = l->npend; /* each once: those that wait on go to the back */

    while (n-- > 0 && (w = pend_pop(l)) != NULL) {
        struct api_req *req = w->req;
        uintptr_t host = router_host_key(req->router, w->shard);

        if (now < w->due_ms && host != 0 &&
            (busy_has(&busy, host) || router_host_busy(req->router, host))) {
            busy_add(&busy, host);
            pend_push(l, w, 0);
            continue;
        }
        l->retry = w;
        w->status = 0; /* a handler that now starts nothing goes to a worker */
        req->where = API_ON_LOOP;
        api_routes[req->route].handler(req);
        if (l->retry == NULL)
            continue; /* started (w is in flight, or answered already) */
        l->retry = NULL;
        if (w->status == BC_EPOOL && now < w->due_ms && will_come_back(l) &&
            req->status == 0) {
            req->where = API_ON_LOOP_DB;
            busy_add(&busy, host); /* the next of that host would not start either */
            pend_push(l, w, 0);
            continue;
        }
        api_loop__wait_free(w);
        if (req->status != 0) { /* the handler answered */
            req->where = API_WORKER_ANSWERED;
            api_loop_resume(l, req->conn);
            continue;
        }
        atomic_fetch_add_explicit(&n_to_worker, 1, memory_order_relaxed);
        api_req_to_worker(req);
    }
}

/* The acceptor's new connections, added to the daemon on its own thread. */
static void take_new(struct api_loop *l)
{
    uint64_t n;
    struct pending *q;
    size_t nq;

    /* Also what workers' resumes wrote: the caller runs the daemon next. */
    (void)!read(l->wake_fd, &n, sizeof(n));
    pthread_mutex_lock(&l->lock);
    q = l->queue;
    nq = l->nqueue;
    l->queue = NULL;
    l->nqueue = l->capqueue = 0;
    pthread_mutex_unlock(&l->lock);
    for (size_t i = 0; i < nq; i++)
        /* The daemon closes the socket itself when it cannot take it. */
        if (MHD_add_connection(l->daemon, q[i].fd, (const struct sockaddr *)&q[i].sa,
                               q[i].len) != MHD_YES)
            atomic_fetch_add_explicit(&l->refused, 1, memory_order_relaxed);
    free(q);
}

/*
 * Finishing: 1 once nothing is in flight (statements, waits for a
 * connection, reads to batch, answers waiting for their mark) or
 * FINISH_MS after it began; answers already made have been handed to the
 * daemon by then (each turn runs it after answering).
 */
static int finished(struct api_loop *l)
{
    int64_t now = sql_now_ms();

    if (l->finish_by_ms == 0)
        l->finish_by_ms = now + FINISH_MS;
    return (l->waits == NULL && l->pend_head == NULL && l->reads == NULL &&
            l->marks == NULL) ||
           now >= l->finish_by_ms;
}

/* Milliseconds until the nearest of the daemon's and the statements' timers. */
static int next_timeout(struct api_loop *l, int64_t now)
{
    MHD_UNSIGNED_LONG_LONG mhd;
    int64_t t = -1;

    if (MHD_get_timeout(l->daemon, &mhd) == MHD_YES)
        t = mhd > 86400000ull ? 86400000 : (int64_t)mhd;
    if (l->pend_head != NULL) {
        int64_t left = l->pend_head->due_ms - now;
        t = left < 0 ? 0 : t < 0 || left < t ? left : t;
    }
    for (struct api_loop_wait *w = l->waits; w != NULL; w = w->next) {
        int64_t left = router_op_due_ms(w->op) - now;
        if (left < 0)
            left = 0;
        if (t < 0 || left < t)
            t = left;
    }
    if (l->marker != NULL && cache_marker_due_ms(l->marker) != INT64_MAX) {
        int64_t left = cache_marker_due_ms(l->marker) - now;
        if (left < 0)
            left = 0;
        if (t < 0 || left < t)
            t = left;
    }
    return (int)t;
}

/* Statements whose deadline (or Connector/C's timer) has come. */
static void tick(struct api_loop *l, int64_t now)
{
    struct api_loop_wait *w = l->waits, *next;

    for (; w != NULL; w = next) {
        next = w->next;
        if (router_op_due_ms(w->op) <= now) {
            (void)router_op_tick(w->op, now);
            wait_update(l, w);
        }
    }
}

static void *loop_main(void *arg)
{
    struct api_loop *l = arg;
    struct epoll_event ev[EVENTS];
    struct api_loop_wait *w;

    pthread_setname_np(pthread_self(), "bc-loop");
    this_loop = l;
    if (sched_getscheduler(0) != SCHED_OTHER)
        l->busy_wakes = 0; /* a policy of the operator's (chrt): kept */
    /* Without a slot (-ENOSPC) it waits only for its own statements. */
    if (l->router != NULL)
        (void)router_waiter_add(l->router, l->wake_fd);
    for (;;) {
        if (atomic_load(&l->finishing) && finished(l))
            break;
        int64_t now = sql_now_ms();
        if (l->busy_wakes > 0)
            api_loop__sched_follow(l, now);
        int t = l->run ? 0 : next_timeout(l, now);
        if (l->batched && (t < 0 || t > API_LOOP_SCHED_WINDOW_MS))
            t = API_LOOP_SCHED_WINDOW_MS; /* a quiet window ends the batches */
        if (atomic_load(&l->finishing) && (t < 0 || t > 50))
            t = 50; /* looks at finished() often */
        int n = epoll_wait(l->ep, ev, EVENTS, t);
        l->wakes += n > 0;
        int run = n == 0; /* the daemon's timer came (or a statement's) */
        int marks = 0;

        if (n < 0) {
            if (errno != EINTR)
                api_log("event loop: epoll_wait: %s", strerror(errno));
            continue;
        }
        for (int i = 0; i < n; i++) {
            void *p = ev[i].data.ptr;
            if (p == &l->mhd_fd) {
                run = 1;
            } else if (p == &l->wake_fd) {
                take_new(l);
                run = 1;
            } else if (p == &l->mark_fd) {
                marks = 1;
            } else {
                w = p;
                int got = sql_bits(ev[i].events, router_op_wait(w->op));
                if (got != 0)
                    (void)router_op_cont(w->op, got);
                wait_update(l, w);
                run = 1; /* a resumed connection's answer is queued at once */
            }
        }
        if (l->waits != NULL)
            tick(l, sql_now_ms());
        if (l->pend_head != NULL)
            start_pending(l, sql_now_ms());
        if (l->marker != NULL &&
            (marks ||
             (l->marks != NULL && cache_marker_due_ms(l->marker) <= sql_now_ms())))
            cache_marker_run(l->marker, mark_done, l); /* resumes what it answers */
        if (run || l->run) {
            l->run = 0;
            (void)MHD_run(l->daemon);
        }
        if (l->reads != NULL)
            api_loop__start_reads(l);
        if (router_waiter_self() && l->pend_head != NULL)
            l->run = 1; /* it gave back a connection its pending wait for */
    }
    /*
     * What the finish left (past its bound): the statements in flight are
     * abandoned, their requests answered 503. wait_close() unlinks w before
     * wait_answer() frees it: taken apart, never as two arguments of one call.
     */
    atomic_store(&l->quit, 1);
    while ((w = l->waits) != NULL) {
        int status = wait_close(l, w);
        wait_answer(l, w, status);
    }
    while ((w = pend_pop(l)) != NULL) {
        struct api_req *req = w->req;
        api_loop__wait_free(w);
        api_add_header(req, "Retry-After", "1");
        api_error(req, 503, "unavailable", "the server is stopping; try again");
        req->where = API_WORKER_ANSWERED;
        api_loop_resume(l, req->conn);
    }
    /* Answered writes whose mark is still out: their answers leave now. */
    while ((w = l->marks) != NULL) {
        list_del(&l->marks, w);
        answered(l, w);
    }
    if (l->router != NULL)
        router_waiter_remove(l->router); /* before wake_fd closes */
    return NULL;
}

static int watch(struct api_loop *l, int fd, int *tag)
{
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = tag};

    return epoll_ctl(l->ep, EPOLL_CTL_ADD, fd, &e) < 0 ? -errno : 0;
}

int api_loop_start(struct MHD_Daemon *daemon, struct cache *cache,
                   struct router *router, uint32_t batch_wakes, struct api_loop **out)
{
    const union MHD_DaemonInfo *info =
        MHD_get_daemon_info(daemon, MHD_DAEMON_INFO_EPOLL_FD);
    struct api_loop *l;
    int rc;

    if (info == NULL)
        return -EINVAL;
    if ((l = calloc(1, sizeof(*l))) == NULL)
        return -ENOMEM;
    l->daemon = daemon;
    l->router = router;
    l->mhd_fd = info->epoll_fd;
    l->mark_fd = -1;
    api_loop__sched_init(l, batch_wakes);
    l->ep = epoll_create1(EPOLL_CLOEXEC);
    l->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    pthread_mutex_init(&l->lock, NULL);
    if (l->ep < 0 || l->wake_fd < 0)
        rc = -errno;
    else if ((rc = watch(l, l->mhd_fd, &l->mhd_fd)) == 0 &&
             (rc = watch(l, l->wake_fd, &l->wake_fd)) == 0 &&
             (cache == NULL || (rc = cache_marker_create(cache, &l->marker)) == 0) &&
             (l->marker == NULL ||
              (rc = watch(l, cache_marker_fd(l->marker), &l->mark_fd)) == 0))
        rc = -pthread_create(&l->thread, NULL, loop_main, l);
    if (rc < 0) {
        api_loop_stop(l);
        return rc;
    }
    l->running = 1;
    *out = l;
    return 0;
}

void api_loop_finish(struct api_loop *l)
{
    uint64_t one = 1;

    if (l == NULL || atomic_exchange(&l->finishing, 1))
        return;
    if (l->running)
        (void)!write(l->wake_fd, &one, sizeof(one));
}

void api_loop_stop(struct api_loop *l)
{
    uint64_t one = 1;

    if (l == NULL)
        return;
    api_loop_finish(l);
    if (l->running) {
        (void)!write(l->wake_fd, &one, sizeof(one));
        pthread_join(l->thread, NULL);
    }
    for (size_t i = 0; i < l->nqueue; i++)
        close(l->queue[i].fd);
    free(l->queue);
    cache_marker_destroy(l->marker);
    if (l->wake_fd >= 0)
        close(l->wake_fd);
    if (l->ep >= 0)
        close(l->ep);
    pthread_mutex_destroy(&l->lock);
    free(l);
}

int api_loop_add(struct api_loop *l, int fd, const struct sockaddr *sa, socklen_t len)
{
    uint64_t one = 1;
    int wake;

    if ((size_t)len > sizeof(struct sockaddr_storage))
        return -EINVAL;
    pthread_mutex_lock(&l->lock);
    if (l->nqueue == l->capqueue) {
        size_t cap = l->capqueue ? l->capqueue * 2 : 16;
        struct pending *q = realloc(l->queue, cap * sizeof(*q));
        if (q == NULL) {
            pthread_mutex_unlock(&l->lock);
            return -ENOMEM;
        }
        l->queue = q;
        l->capqueue = cap;
    }
    l->queue[l->nqueue].fd = fd;
    l->queue[l->nqueue].len = len;
    memcpy(&l->queue[l->nqueue].sa, sa, len);
    wake = l->nqueue++ == 0; /* the first of a batch wakes the loop */
    pthread_mutex_unlock(&l->lock);
    if (wake)
        (void)!write(l->wake_fd, &one, sizeof(one));
    return 0;
}

uint64_t api_loop_refused(struct api_loop *l)
{
    return atomic_load_explicit(&l->refused, memory_order_relaxed);
}
