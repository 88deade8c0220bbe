/*
 * api_loop.h: the API server's event loops, the acceptor that feeds them and
 * the connections they serve (api_loop.c, api_listen.c, api_conn.c).
 * Internal to the API server, included by api_int.h.
 */
#ifndef API_LOOP_H
#define API_LOOP_H

#include <stdint.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <microhttpd.h>

#include "sql/sql.h"

struct api_req;
struct api_limits;
struct api_server;
struct router;

/* ---- connections: per-address cap, header and body deadlines (api_conn.c) ---- */
struct api_conns; /* opaque */
enum api_conn_phase {
    API_CONN_BODY, /* headers in: the body is due within body_timeout_ms */
    API_CONN_BUSY, /* request complete: no deadline while it is handled */
    API_CONN_IDLE  /* response sent: the next headers are due within idle_timeout_ms */
};
/* Starts the reaper thread; lim is copied. 0 or -errno. */
int api_conns_create(const struct api_limits *lim, struct api_conns **out);
void api_conns_destroy(struct api_conns *c); /* after MHD_stop_daemon; accepts NULL */
/* libmicrohttpd's accept policy and connection notification callbacks (cls: c). */
enum MHD_Result api_conns_accept(void *cls, const struct sockaddr *addr, socklen_t len);
void api_conns_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                      enum MHD_ConnectionNotificationCode toe);
/*
 * Sets the connection's deadline for its new phase. Lock-free. -1 when its
 * body phase ended in a 408 already (the body came too late): the request
 * must not be handled, and the connection is closed (MHD_NO). 0 otherwise.
 */
int api_conn_phase(struct api_conns *c, struct MHD_Connection *conn,
                   enum api_conn_phase phase);
/*
 * A handler starts (enter 1) or ends (0) on conn's event-loop thread (the
 * handlers that do no I/O, and the dispatcher's own checks): while one runs
 * there, the loop's other connections are not read, and their deadlines
 * wait (the server is slow then, not the client). Handlers on the worker
 * pool do not count: the loop goes on reading meanwhile.
 */
void api_conn_handler(struct api_conns *c, struct MHD_Connection *conn, int enter);
/* Event loops a server runs at most (conf->threads). */
#define API_LOOPS_MAX 256

/*
 * Open connections per event loop: fills count[0..max) in the order the
 * loops were first seen, returns how many loops have been seen.
 */
uint32_t api_conns_loops(struct api_conns *c, uint32_t *count, uint32_t max);
uint32_t api_server_loops(struct api_server *srv, uint32_t *count, uint32_t max);

/*
 * The loops (one daemon each, first to last) take slots 0..n-1 in that
 * order; call before any connection. Then api_conns_closed() is how many
 * connections loop i has closed.
 */
void api_conns_set_loops(struct api_conns *c, struct MHD_Daemon *const *loop,
                         uint32_t n);
uint64_t api_conns_closed(struct api_conns *c, uint32_t i);

void api_conns_stats(struct api_conns *c, uint64_t *open, uint64_t *reaped,
                     uint64_t *refused);
/*
 * The zeroed storage of conn's current request, lent by the connection
 * (never freed by the caller; valid until the request completes), or NULL
 * when conn is not tracked (then the caller allocates one). Lock-free.
 */
struct api_req *api_conn_req(struct api_conns *c, struct MHD_Connection *conn);

/*
 * An event loop: a thread of its own that runs one libmicrohttpd daemon
 * (started with MHD_USE_EPOLL and no thread of its own) and, in the same
 * epoll set, the sockets of the statements its requests run there
 * (api_loop_query()), and its wake-ups from router (NULL: none) when a
 * connection it waits for comes back. start makes the thread; finish asks
 * it to start no statement (requests go to the workers) and to end once
 * those in flight are answered, without waiting; stop finishes it, answers
 * what is left after 5 s (503, their connections closed) and joins it. The
 * daemon is the caller's: stopped after api_loop_stop(). Both accept NULL.
 *
 * batch_wakes > 0: while the loop is busy (woken batch_wakes times a second
 * or more, until less than a quarter of that) and none of its connections
 * is suspended (none waits for a statement, a worker, a hash or a mark),
 * the thread runs under Linux's SCHED_BATCH policy: woken by a socket, it
 * does not preempt the thread on its CPU but runs at that thread's next
 * turn with what came meanwhile. Otherwise it runs under SCHED_OTHER, so
 * that a request or an answer it waits for is taken at once. A thread
 * started under another policy keeps it.
 */
struct api_loop;
int api_loop_start(struct MHD_Daemon *daemon, struct cache *cache,
                   struct router *router, uint32_t batch_wakes, struct api_loop **out);
void api_loop_finish(struct api_loop *l);
void api_loop_stop(struct api_loop *l);
/*
 * Suspends a request's connection of loop l (the request's loop) until
 * api_loop_resume(): the loop counts it (batch_wakes above).
 */
void api_loop_suspend(struct api_loop *l, struct MHD_Connection *conn);
/*
 * Hands a new connection to the loop, from the acceptor's thread: the loop
 * adds it to its daemon (MHD_add_connection() must run on the loop's own
 * thread). 0, or -errno (the caller closes fd). A connection the daemon
 * then refuses (full, the per-address cap) counts in api_loop_refused().
 */
int api_loop_add(struct api_loop *l, int fd, const struct sockaddr *sa, socklen_t len);
uint64_t api_loop_refused(struct api_loop *l);
/* The loop of the calling thread, or NULL off the loops. */
struct api_loop *api_loop_self(void);
/*
 * Resumes a suspended connection of loop l, from any thread, and wakes the
 * loop (libmicrohttpd does not when it runs no thread of its own).
 */
void api_loop_resume(struct api_loop *l, struct MHD_Connection *conn);

/*
 * Runs one statement of req's handler on the event loop req is on (called
 * by a handler of an API_READS_LOOP route, which then returns without an
 * answer): a SELECT, or a write's single statement (CALL place_bet), on the
 * primary of shard's host (router_op_start()). When started, req's
 * connection is suspended and done(req, status, rows) answers on the loop
 * when the statement ends (1), or asks for the handler to run again on a
 * worker (0: a status the worker's way deals with, as a lock wait that it
 * retries; only for statements that failed whole); rows are freed after
 * it. A statement the loop cannot run (no idle connection, a shard that
 * moved, a dead idle connection) runs the handler again on a worker, which
 * waits as handlers do. A write that was sent is never run again by the
 * loop: one abandoned half-way answers as a timeout. A write's answer
 * leaves after its read-your-writes mark is set (api_rw_mark(), without
 * blocking: cache_mark_start()) or failed. 1 when started, 0 when not (the
 * caller then runs the handler on a worker as usual).
 */
typedef int (*api_loop_done)(struct api_req *req, int status, struct sql_rows *rows);
int api_loop_query(struct api_req *req, api_loop_done done, uint32_t shard,
                   const char *fmt, ...);
/*
 * A read of at most one row (a primary-key SELECT) as api_loop_query()
 * runs one, but that may share its statement: the reads that handlers start
 * in one turn of the loop, on shards of the same host, go as one statement
 * (at most the limits' read_batch of them), and each read's done gets its
 * own row. A batch that cannot start, or that fails as a whole with a
 * status the worker's way deals with, runs each read's handler on a worker,
 * as api_loop_query() does. fmt must begin with "SELECT ".
 */
#define API_READ_BATCH_MAX 64 /* the limits' read_batch at most */
int api_loop_read(struct api_req *req, api_loop_done done, uint32_t shard,
                  const char *fmt, ...);
/*
 * api_loop_batch.c: a batch's statement into out, from the n reads' texts
 * (each "SELECT ...", formatted for its shard): read i becomes "(SELECT i,
 * ...)", joined by UNION ALL; -EINVAL for a text that is not a SELECT,
 * -ENOMEM. And read i's rows from the batch's: a view into all (never
 * freed by itself) of at most one row without the tag column; 0, or
 * BC_EQUERY when read i got more than one row.
 */
int api_batch_text(struct sql_buf *out, const struct sql_buf *const *reads, uint32_t n);
int api_batch_rows(const struct sql_rows *all, uint32_t i, struct sql_rows *view);

/*
 * Statements run on the loops: answered there, and sent to a worker after
 * all; the writes' marks set, and failed (their answers left all the same);
 * busy now (in flight, or waiting on a loop for a connection). A write
 * holds one of its user's turns (api_work_key_take(): work_per_user at once
 * with his writes on the workers) until it is answered or leaves for a worker.
 */
void api_loop_stats(uint64_t *answered, uint64_t *to_worker, uint64_t *marked,
                    uint64_t *mark_failed, uint64_t *busy);
/* Reads started in a statement shared with others (api_loop_read()). */
uint64_t api_loop_shared(void);

/*
 * api_listen.c: the listening socket (bound and listening on open) and the
 * thread that accepts on it and hands each connection to the loop with the
 * fewest open ones (loop[] i is slot i of conns). close stops the thread,
 * refuses new connections and closes the socket; it accepts NULL.
 */
struct api_listener;
int api_listen_open(const struct sockaddr_in *addr, struct api_listener **out);
int api_listen_run(struct api_listener *l, struct api_loop **loop, uint32_t nloop,
                   struct api_conns *conns);
void api_listen_close(struct api_listener *l);
uint16_t api_listen_port(const struct api_listener *l);

#endif
