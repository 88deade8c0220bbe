/*
 * shardctl.h: what shardctl's files share.
 */
#ifndef SHARDCTL_H
#define SHARDCTL_H

#include <mysql.h>
#include <pthread.h>
#include <stdint.h>

#include "shardmap/shardmap.h"

/* etc/schema/global.sql, shard.sql and shard_fence.sql, NUL-terminated. */
extern const char shardctl_global_sql[];
extern const char shardctl_shard_sql[];
extern const char shardctl_fence_sql[];

/* Exit codes of every command. */
enum {
    SC_OK = 0,
    SC_ERROR = 1,
    SC_USAGE = 2,
    SC_DOWN = 3,    /* some host down (status) */
    SC_DIFFER = 4,  /* verify found differences */
    SC_REFUSED = 5, /* another move of the shard runs, or an unfinished one differs */
};

/* Replaces every {schema} in tmpl; returns a malloc'd string or NULL. */
char *shardctl_render(const char *tmpl, const char *schema);

/* ---- shardctl_db.c: plain connections for a move's long host work ------- */

struct sc_host {
    char name[SHARDMAP_NAME_MAX];
    char addr[256];
    uint16_t port;
    char user[64];
    char password[128];
};

/* One connection to one host; err holds "HOST: message (errno)" after a failure. */
struct sc_conn {
    MYSQL *m;
    char name[SHARDMAP_NAME_MAX];
    char err[512];
};

/* Connects with multi-statements, utf8mb4 and read/write timeouts of timeout_s. */
int sc_connect(struct sc_conn *c, const struct sc_host *h, unsigned timeout_s);
void sc_close(struct sc_conn *c);
/* Runs SQL (several statements allowed), discarding results; 0 or -1. */
int sc_exec(struct sc_conn *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Runs one statement and stores its result; NULL on error (c->err set). */
MYSQL_RES *sc_query(struct sc_conn *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/*
 * Copies the first cell of the first row into out: 1 when there was a row with
 * a non-NULL first cell, 0 when not, -1 on error.
 */
int sc_value(struct sc_conn *c, char *out, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Cell of row by column name, or NULL. */
const char *sc_col(MYSQL_RES *res, MYSQL_ROW row, const char *name);
/* Escapes s for a single-quoted SQL string into out (size >= 2 * len + 1). */
void sc_escape(struct sc_conn *c, char *out, const char *s);
int64_t sc_now_ms(void);

/* ---- output: human lines, or --json events (one object per line) -------- */

struct sc_out {
    int json;
    int tty;         /* stderr is a terminal: progress bars redraw in place */
    int no_progress; /* rebalance: its overall bar instead of each move's */
    pthread_mutex_t lock;
};
/* Prints {"event":"NAME",<fields>} on stdout when json; fields is JSON text. */
void sc_event(struct sc_out *o, const char *name, const char *fields_fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prints a line for people (stdout) when not json. */
void sc_say(struct sc_out *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* A progress line on stderr, redrawn in place on a terminal, else every few s. */
void sc_progress(struct sc_out *o, int final, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Escapes s for a JSON string (without the quotes). */
void sc_json_str(char *out, size_t size, const char *s);
/* An error: an "error" event when json, else "shardctl: ..." on stderr. */
void sc_error(struct sc_out *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- commands (shardctl_move.c, shardctl_verify.c) ------------------------ */

struct sc_move_opts {
    int keep_source;
    int no_verify;
    int abort;
    int resume;
    unsigned grace_s;             /* before the source copy is dropped */
    const char *postpone_cutover; /* while this file exists, stay in catch-up */
    unsigned parallel;            /* rebalance: moves at a time */
    uint64_t copy_rate;           /* rows/s cap of the copy, 0: none */
};

int shardctl_move(const struct shardmap_conf *conf, struct sc_out *out, uint32_t shard,
                  const char *to, const struct sc_move_opts *opts);
int shardctl_rebalance(const struct shardmap_conf *conf, struct sc_out *out,
                       const char *plan_path, const struct sc_move_opts *opts);
int shardctl_moves(const struct shardmap_conf *conf, struct sc_out *out);
int shardctl_verify(const struct shardmap_conf *conf, struct sc_out *out,
                    uint32_t shard, const char *against);

/*
 * Test and drill hook: when $BC_SHARDCTL_HOLD names point, stop there until
 * SIGUSR1 (then go on) or until killed.
 */
void sc_hold(struct sc_out *o, uint32_t shard, const char *point);

/* shardctl_copy.c: the consistent snapshot copy of one shard schema. */
struct sc_copy {
    struct sc_out *out;
    uint32_t shard;
    const char *schema;
    char binlog_file[256]; /* source binlog position of the snapshot */
    uint64_t binlog_pos;
    char gtid[256];
    uint64_t rows, total;
    int64_t ms;
    uint64_t max_rate; /* rows/s, 0: as fast as it goes */
};
/*
 * Copies every base table of schema but shard_state (each copy's own fencing
 * row) from src, in one snapshot, to dst.
 */
int sc_copy_shard(struct sc_copy *cp, const struct sc_host *src, struct sc_conn *dst,
                  char *err, size_t errsize);

/* shardctl_verify.c: compares two snapshots of one shard schema, chunk by chunk. */
struct sc_verify_result {
    uint32_t tables, chunks, diffs;
    uint64_t rows;
};
/* at: when the snapshots were taken ("catchup", "fence", "copies"), for the event. */
int sc_verify_compare(struct sc_out *out, uint32_t shard, const char *at,
                      struct sc_conn *src, struct sc_conn *dst, const char *schema,
                      struct sc_verify_result *res, char *err, size_t errsize);

#endif
