/*
 * sql.h: the one SQL layer of BetCity. Everything that talks to MariaDB (the
 * router's pools, the catalog, the move engine, the tools) goes through here:
 *
 *  - connections with millisecond deadlines, enforced with Connector/C's
 *    non-blocking API (a hung host fails a call within its deadline);
 *  - statement formats whose values are always escaped (no SQL text is ever
 *    built from raw input), identifiers validated;
 *  - one mapping of server and client errors to the tree's BC_E* codes, with
 *    the message on the calling thread (sql_last_error());
 *  - result rows, streamed rows for long copies, and the parsing of
 *    SHOW SLAVE STATUS / SHOW MASTER STATUS / the snapshot's binlog position;
 *  - the host-account rule: which user and password reach a host.
 *
 * Thread safety: a struct sql_conn belongs to one thread at a time; every
 * other function may be called from any thread.
 */
#ifndef SQL_H
#define SQL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "shardmap/shardmap.h"

/* ---- rows ------------------------------------------------------------------ */

/*
 * Rows of one result; cells are NUL-terminated, NULL for SQL NULL. A cell's
 * bytes live in the rows' blocks (a few allocations for a whole result, not
 * one a cell): cells may be reordered or moved to other rows, whose blocks
 * must then be adopted with them (sql_rows_adopt()), never freed one by one.
 */
struct sql_block;
struct sql_rows {
    uint32_t nrow;
    uint32_t ncol;
    char **cell;              /* owned: nrow * ncol, row-major */
    unsigned long *len;       /* owned: byte length of each cell */
    uint64_t affected;        /* affected rows (summed over statements) */
    uint64_t insert_id;       /* last insert id of a single statement */
    struct sql_block *blocks; /* owned: the bytes the cells point into */
};

static inline const char *sql_cell(const struct sql_rows *rows, uint32_t row,
                                   uint32_t col)
{
    return rows->cell[(uint64_t)row * rows->ncol + col];
}
/* Frees the cells and zeroes rows; NULL is a no-op. */
void sql_rows_free(struct sql_rows *rows);
/*
 * Moves src's rows to the end of dst (src is left empty). Both must have the
 * same number of columns unless one is empty. 0, -EINVAL or -ENOMEM.
 */
int sql_rows_append(struct sql_rows *dst, struct sql_rows *src);
/*
 * dst takes src's blocks: the bytes of every cell src held, for cells the
 * caller moved from src to dst. src's cells are dangling from then on: free
 * src (its arrays) without reading them.
 */
void sql_rows_adopt(struct sql_rows *dst, struct sql_rows *src);

/* ---- statement text ---------------------------------------------------------- */

/* A growing statement buffer. Zero-initialise; sql_buf_deinit() frees it. */
struct sql_buf {
    char *buf; /* NUL-terminated while len > 0 */
    size_t len, cap;
};
void sql_buf_deinit(struct sql_buf *b);
int sql_buf_add(struct sql_buf *b, const char *s, size_t n);
/* Appends s as a quoted, escaped string literal. */
int sql_buf_add_str(struct sql_buf *b, const char *s, size_t n);
/* Appends bytes as a hex literal X'..'. */
int sql_buf_add_hex(struct sql_buf *b, const char *s, size_t n);
/* Appends a validated identifier, back-quoted; -EINVAL if it is not one. */
int sql_buf_add_ident(struct sql_buf *b, const char *name);

/*
 * 1 when name is a plain identifier: 1..64 of [A-Za-z0-9_$], not all digits.
 * Schema, table, column and replication connection names are checked with
 * it before they reach SQL.
 */
int sql_ident_ok(const char *name);

/*
 * Statement formats. Conversions:
 *   %S  the schema given to the call, back-quoted (no argument)
 *   %N  the shard number given to the call (no argument)
 *   %s  const char *: an escaped, quoted string literal; NULL gives NULL
 *   %b  const char *, size_t: escaped string literal of that many bytes
 *   %x  const char *, size_t: hex literal X'..' of that many bytes
 *   %I  const char *: an identifier, validated (sql_ident_ok) and back-quoted
 *   %d  int64_t        %u  uint64_t
 *   %R  const char *: SQL text the program built itself (a column list it
 *       assembled from %I-checked names, a constant clause); never input
 *   %%  a percent sign
 * Anything else is -EINVAL (and so is a bad identifier); the message is in
 * sql_last_error(). Strings are escaped with backslashes as for a utf8mb4
 * connection in SQL_MODE (no NO_BACKSLASH_ESCAPES, no ANSI_QUOTES), which
 * every connection of this layer is, whatever the server's global sql_mode.
 */
/*
 * The session sql_mode every connection sets as it connects. Strict (a value
 * that does not fit is an error, never truncated), and without the modes
 * that change how text is read: NO_BACKSLASH_ESCAPES would make a backslash
 * in our literals plain text, ANSI_QUOTES and PIPES_AS_CONCAT change what a
 * quote and || mean.
 */
#define SQL_MODE "STRICT_ALL_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION"

int sql_vformat(struct sql_buf *b, const char *schema, uint32_t shard, const char *fmt,
                va_list ap);
int sql_format(struct sql_buf *b, const char *schema, uint32_t shard, const char *fmt,
               ...);

/* ---- endpoints and the host-account rule ------------------------------------- */

struct sql_endpoint {
    char name[SHARDMAP_NAME_MAX]; /* the host's logical name, for messages */
    char addr[256];
    uint16_t port;
    char user[64];
    char password[128];
};

/*
 * The endpoint of host `name`: its address and port are addr/port when addr
 * is not NULL (a host the catalog knows), else the config's. The account is
 * the host's own in the config; a host missing from the config uses the
 * global host's account. Of the host's two accounts, conf->account chooses:
 * user/password (the API server's) or ops_user/ops_password (the operator
 * tools'). BC_EHOST when addr is NULL and the config has no such host.
 */
int sql_endpoint_of(const struct shardmap_conf *conf, const char *name,
                    const char *addr, uint16_t port, struct sql_endpoint *ep);

/* ---- connections ------------------------------------------------------------- */

struct sql_conn; /* opaque */

struct sql_conn_opts {
    uint32_t connect_timeout_ms; /* 0: 500 */
    uint32_t query_timeout_ms;   /* 0: 800; per statement and its result */
    int multi_statements;        /* allow "a; b; c" in one call */
};

/*
 * Opens one connection (utf8mb4). Errors: BC_EDOWN (refused, unreachable,
 * bad account), BC_ETIMEOUT (no handshake within the connect deadline),
 * -ENOMEM. The message names the host and its address.
 */
int sql_conn_open(const struct sql_endpoint *ep, const struct sql_conn_opts *opts,
                  struct sql_conn **out);
/* Closes at once, also towards a hung peer; NULL is a no-op. */
void sql_conn_close(struct sql_conn *c);
void sql_conn_set_timeout(struct sql_conn *c, uint32_t query_timeout_ms);
const struct sql_endpoint *sql_conn_endpoint(const struct sql_conn *c);
/* The server's error number of the last failed call, 0 after a success. */
unsigned sql_conn_errno(const struct sql_conn *c);
/* 1 when the last failure left the connection unusable (close it). */
int sql_conn_broken(const struct sql_conn *c);
/*
 * 1 when the server has closed an idle connection (it restarted, or its
 * wait_timeout ended the session): end of file, an error it sent before
 * closing, or a reset is waiting on the socket. One non-blocking peek, no
 * round trip; 0 when nothing is there, as on a live idle connection.
 */
int sql_conn_peer_closed(struct sql_conn *c);

/*
 * Runs SQL text (several statements when the connection allows them) within
 * the query deadline. rows may be NULL; otherwise the rows of every result
 * are appended and affected/insert_id set; on failure rows is freed.
 * Errors:
 *   BC_ETIMEOUT   the deadline passed (the connection is broken)
 *   BC_EDOWN      client-side failure: connection lost (broken)
 *   BC_EDUPKEY    duplicate key
 *   BC_ENOSCHEMA  unknown database, table or sequence
 *   BC_EFENCED    the shard copy is fenced ("bc: shard moved" from a trigger)
 *   BC_ELOCKWAIT  lock wait timeout or deadlock
 *   BC_EREADONLY  the server is read-only (not its host's primary now)
 *   BC_EQUERY     any other server error
 * The message, "host NAME: server text (errno)", is in sql_last_error().
 */
int sql_query(struct sql_conn *c, const char *sql, size_t len, struct sql_rows *rows);
/*
 * One statement driven by the caller's event loop (sql_async.c): the same
 * steps, statuses and rows as sql_query(), but the caller waits. Start it;
 * while the call returns SQL_WAIT_* bits, wait for those events on
 * sql_conn_fd() (READ: readable, WRITE: writable; TIMEOUT: until
 * sql_op_due_ms()) and pass what happened to sql_op_cont(), and call
 * sql_op_tick() when sql_op_due_ms() has come: past the statement's
 * deadline (query_timeout_ms from the start) it ends the statement with
 * BC_ETIMEOUT and breaks the connection. A return of 0 means it ended:
 * its status is op->status (0 or sql_query()'s errors; on failure rows was
 * freed). sql must stay valid until it ended; the op is the caller's
 * storage, nothing to free.
 */
#define SQL_WAIT_READ 1
#define SQL_WAIT_WRITE 2
#define SQL_WAIT_EXCEPT 4
#define SQL_WAIT_TIMEOUT 8
struct st_mysql_res;
struct sql_op {
    struct sql_conn *conn; /* ref */
    struct sql_rows *rows; /* ref, may be NULL */
    int state, wait, ret, more, err;
    int status;               /* when it ended */
    int64_t deadline_ms;      /* sql_now_ms() clock */
    int64_t lib_due_ms;       /* when Connector/C asked to be woken (TIMEOUT) */
    struct st_mysql_res *res; /* a result being read */
};
int sql_op_start(struct sql_op *op, struct sql_conn *c, const char *sql, size_t len,
                 struct sql_rows *rows);
int sql_op_cont(struct sql_op *op, int events);
int sql_op_tick(struct sql_op *op, int64_t now_ms);
/* When sql_op_tick() is due next (ms, sql_now_ms()'s clock). */
int64_t sql_op_due_ms(const struct sql_op *op);
/* The connection's socket, for the caller's epoll set. */
int sql_conn_fd(struct sql_conn *c);

/* Formats (schema for %S may be NULL when unused) and runs. */
int sql_exec(struct sql_conn *c, struct sql_rows *rows, const char *fmt, ...);
int sql_vexec(struct sql_conn *c, struct sql_rows *rows, const char *schema,
              uint32_t shard, const char *fmt, va_list ap);
/*
 * Runs one statement and copies the first cell of its first row into out:
 * 1 when there was such a cell (not NULL), 0 when not, or a negative status.
 */
int sql_value(struct sql_conn *c, char *out, size_t size, const char *fmt, ...);

/* One row of a streamed result. */
enum sql_kind { SQL_KIND_NUMBER, SQL_KIND_TEXT, SQL_KIND_BINARY };
struct sql_stream_row {
    uint32_t ncol;
    const char *const *cell;   /* NULL for SQL NULL */
    const unsigned long *len;  /* byte lengths */
    const char *const *name;   /* column names */
    const enum sql_kind *kind; /* how to write each value back as a literal */
};
/* Return 0 to go on, anything else stops the stream and is returned. */
typedef int (*sql_row_fn)(void *arg, const struct sql_stream_row *row);
/*
 * Runs one SELECT and hands its rows to fn one at a time, without holding
 * the result in memory (mysql_use_result). The query deadline applies to
 * each network wait, not to the whole stream. Errors as sql_query(), or
 * fn's own non-zero value.
 */
int sql_stream(struct sql_conn *c, sql_row_fn fn, void *arg, const char *fmt, ...);

/* Message of the last error on this thread. */
const char *sql_last_error(void);
/*
 * 1 when this thread's last sql_conn_open() was refused by the server for
 * its account (a wrong user or password: the server answers, so it is not
 * down), 0 otherwise.
 */
int sql_last_denied(void);
void sql_set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- an executor: anything that runs SQL text -------------------------------- */

/*
 * The catalog and other callers that do not care where their statements run
 * take one of these: a connection (sql_conn_executor), or a router's pool of
 * the global host (router_catalog()).
 */
struct sql_executor {
    int (*run)(void *arg, const char *sql, size_t len, struct sql_rows *rows);
    void *arg;
};
void sql_conn_executor(struct sql_conn *c, struct sql_executor *out);

/* ---- replication status ------------------------------------------------------ */

struct sql_binlog_pos {
    char file[256];
    uint64_t pos;
};
/* SHOW MASTER STATUS. BC_ENOTFOUND when the server writes no binlog. */
int sql_master_pos(struct sql_conn *c, struct sql_binlog_pos *pos);
/*
 * The binlog position of the connection's consistent snapshot (after START
 * TRANSACTION WITH CONSISTENT SNAPSHOT): binlog_snapshot_file/_position.
 */
int sql_snapshot_pos(struct sql_conn *c, struct sql_binlog_pos *pos);

struct sql_replica_status {
    struct sql_binlog_pos exec; /* Relay_Master_Log_File, Exec_Master_Log_Pos */
    int io_running;             /* Slave_IO_Running = Yes */
    int io_stopped;             /* Slave_IO_Running = No (not Connecting) */
    int sql_running;            /* Slave_SQL_Running = Yes */
    long behind_s;              /* Seconds_Behind_Master; -1 when NULL */
    char master_host[256];      /* Master_Host */
    uint16_t master_port;       /* Master_Port */
    char gtid_io_pos[512];      /* Gtid_IO_Pos: the GTIDs received so far */
    unsigned last_io_errno;     /* Last_IO_Errno */
    unsigned last_sql_errno;    /* Last_SQL_Errno */
    char last_io_error[512];
    char last_sql_error[512];
    char do_db[512]; /* Replicate_Do_DB: the connection's filter */
};
/*
 * SHOW SLAVE 'channel' STATUS (channel "" for the default connection).
 * BC_ENOTFOUND when there is no such replication connection.
 */
int sql_replica_status(struct sql_conn *c, const char *channel,
                       struct sql_replica_status *st);

/* Milliseconds of CLOCK_MONOTONIC. */
int64_t sql_now_ms(void);

#endif
