/*
 * loadgen.h: what loadgen's files share: the options, the counters each worker
 * keeps during phase 2, and the final report.
 */
#ifndef LOADGEN_H
#define LOADGEN_H

#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define NS_PER_MS UINT64_C(1000000)
#define NS_PER_S UINT64_C(1000000000)
#define MAX_TOKEN 2048
#define BET_RETRIES 3   /* retries after the first attempt, same key and body */
#define BUSY_RETRIES 12 /* retries of a 429/503 where the caller allows it */

/* Latency histogram in microseconds: exact below 64, then 32 sub-buckets per
 * power of two (about 3% resolution), up to 2^42 us. */
#define HIST_SUB 32
#define HIST_NBUCKET 1216
#define NSTATUS 600 /* status index; 0 holds statuses >= 600 */
#define MAX_CODES 16

enum op { OP_ODDS, OP_BET, OP_ME, OP_MATCHES, OP_HISTORY, NOP };
extern const char *const loadgen_op_names[NOP];

enum mode { MODE_AUTO, MODE_SIGNUP, MODE_LOGIN };

/* Bets split by the logical shard of their user (--watch-shard). */
enum group { GROUP_WATCHED, GROUP_OTHERS, NGROUP };

struct opts {
    char *base; /* normalised URL without trailing '/', malloc'd */
    long users, duration, rate, threads, timeout_ms, stake;
    unsigned mix[NOP], mix_total;
    const char *company, *join_code, *password, *prefix, *acked; /* ref in argv */
    const char *trace;                                           /* ref in argv */
    const char *match_arg; /* ref in argv: validated "ID,ID,..." or NULL */
    int json;
    int retry_busy; /* --retry-busy: a bet answered 429/503 is sent again */
    enum mode mode;
    long watch_shard;                /* --watch-shard, -1 without */
    long shard_users, shard_users_k; /* --shard-users N:K; K = 0 without */
    long nshard;                     /* --shards, the cluster's shard count (64) */
};

struct hist {
    uint64_t n, max_us;
    uint64_t b[HIST_NBUCKET];
};

struct code_count {
    char code[48];
    uint64_t n;
};

/* Bets of one group: every outcome counts in lat and count; acked ones also
 * in acked; errors are transport errors, HTTP errors other than 422 (the game
 * saying no) and acks without a bet id. */
struct group_stats {
    struct hist lat;
    uint64_t count, acked, errors;
};

/* Counters of one worker in phase 2, merged by the main thread after join. */
struct stats {
    struct hist lat[NOP];
    uint64_t count[NOP], ok[NOP];
    uint64_t requests; /* HTTP attempts, retries included */
    uint64_t status[NSTATUS];
    uint64_t transport[CURL_LAST]; /* by CURLcode */
    uint64_t *err_sec;             /* errors per second of phase 2, malloc'd */
    uint64_t acked, acked_after_retry, retries, unknown, ok_max_us, lag_max_us;
    struct code_count rej[MAX_CODES]; /* 422 answers to bets, by code */
    unsigned nrej;
    uint64_t rej_other;
    struct group_stats grp[NGROUP]; /* only with --watch-shard */
};

struct vuser {
    char *token; /* NULL until phase 1 got one */
    char id[24];
    uint64_t num;   /* its e-mail is <prefix>-<num>@loadgen.test */
    uint32_t shard; /* logical shard, carried by its id (set with the token) */
};

struct run;

/* One worker thread: its keep-alive handle, response buffer and counters. */
/* One operation of --trace (see trace_op() in loadgen.c). */
struct trace_rec {
    int64_t due_ms; /* wall clock */
    uint64_t us, late_us;
    int32_t rc;
    uint8_t op;
};

struct worker {
    struct run *run; /* ref */
    unsigned id;
    pthread_t tid;
    CURL *curl;
    char *buf; /* response body, NUL-terminated */
    size_t len, cap;
    char errbuf[CURL_ERROR_SIZE];
    uint64_t rng, seq;
    int counting; /* phase 2: loadgen_http tallies every attempt in st */
    enum op cur_op;
    unsigned signed_up, logged_in;
    char why[512]; /* first phase-1 failure */
    struct stats st;
    /* --trace: this worker's operations, written when the load ends. */
    struct trace_rec *trace;
    size_t ntrace, trace_cap;
    unsigned trace_lost; /* not kept: out of memory */
};

/* What the workers of one run share; the main thread owns it. Workers only
 * read it, except for the atomics and what acked_lock guards. */
struct run {
    struct opts o;
    struct vuser *users;           /* [nusers]; phase 1 worker t fills users t mod n */
    size_t nusers, *ready, nready; /* ready: indices of users with a token */
    char **matches;                /* [nmatch] ids, fixed before phase 2 */
    size_t nmatch, nsec;           /* nsec: entries of each stats.err_sec */
    struct worker **w;             /* [nworker] */
    unsigned nworker;
    FILE *acked; /* NULL without --acked; line buffered; under acked_lock */
    pthread_mutex_t acked_lock;
    FILE *trace; /* NULL without --trace; written by the main thread at the end */
    uint64_t last_ack_ns, pause_max_ns; /* under acked_lock */
    /* Per group with --watch-shard, under acked_lock: the last ack and the
     * longest time without one. */
    uint64_t grp_last_ns[NGROUP], grp_gap_max_ns[NGROUP];
    uint64_t start_ns, end_ns;          /* phase 2 schedule, set before it starts */
    uint64_t stop_ns, hard_ns, done_ns; /* main thread only */
    char key_prefix[24]; /* random per run: Idempotency-Keys never repeat */
    atomic_int abort;    /* cut transfers in flight, stop retrying */
    atomic_uint nfinished;
    atomic_uint_fast64_t prog_req, prog_err, prog_acked, prog_ready, prog_failed;
};

uint64_t loadgen_now_ns(void); /* CLOCK_MONOTONIC */

/* Sleeps until monotonic time t in steps of at most 50 ms; returns -1 as soon
 * as stop(r) says so, 0 when t is reached. */
int loadgen_sleep_until(uint64_t t, int (*stop)(const struct run *),
                        const struct run *r);

/* A worker with a curl easy handle set up for r (timeouts, no proxy, abort on
 * r->abort), or NULL when out of memory. worker_destroy takes NULL. */
struct worker *loadgen_worker_create(struct run *r, unsigned id, uint64_t seed);
void loadgen_worker_destroy(struct worker *w);

/* One exchange on w's keep-alive handle: GET path, or POST body (JSON) when
 * body is not NULL, with the token and Idempotency-Key when not NULL. Returns
 * the HTTP status, or -CURLcode for a transport error (w->errbuf says more);
 * the response body is in w->buf. With w->counting, tallies it in w->st. */
int loadgen_http(struct worker *w, const char *path, const char *body,
                 const char *token, const char *idem);

/* loadgen_http, retrying transport errors up to BET_RETRIES times after 100,
 * 200, 400 ms with the very same body and key, and (when busy_too) 429/503 up
 * to BUSY_RETRIES times, 800 ms apart after the third. *nretry (if not NULL)
 * gets the number of retries made. */
int loadgen_http_retry(struct worker *w, const char *path, const char *body,
                       const char *token, const char *idem, int busy_too,
                       unsigned *nretry);

/* error.code (and error.message when msg is not NULL) of the body in w->buf,
 * "" when absent. */
void loadgen_error_code(const struct worker *w, char *code, size_t len, char *msg,
                        size_t msglen);

/* A one-line account of a failed exchange: the curl error or the HTTP error. */
void loadgen_describe(const struct worker *w, int rc, char *out, size_t len);

/* Parses argv into o, printing every problem to stderr (all of them, then the
 * usage). Returns 0 to run, 1 when --help printed the usage, -1 for bad flags.
 * After 0, free o with loadgen_opts_deinit. */
int loadgen_opts_parse(int argc, char **argv, struct opts *o);
void loadgen_opts_deinit(struct opts *o);

/* 1 for "localhost" and literal 127.0.0.0/8 or ::1 addresses, else 0. */
int loadgen_is_loopback(const char *host);

void loadgen_hist_add(struct hist *h, uint64_t us);

/* Tallies one more 422 answer to a bet under its error code. */
void loadgen_count_reject(struct stats *s, const char *code);

/* Adds src into dst; both have nsec err_sec entries. */
void loadgen_stats_merge(struct stats *dst, const struct stats *src, size_t nsec);

struct report {
    const struct opts *o;   /* ref */
    const struct stats *st; /* ref: all workers merged */
    double elapsed_s;
    size_t nsec; /* entries of st->err_sec to show */
    size_t users_ready, users_failed, signed_up, logged_in, nmatch;
    unsigned threads;
    double pause_max_ms;
    int interrupted;
    size_t grp_users[NGROUP]; /* ready users per group, with --watch-shard */
    double grp_gap_max_ms[NGROUP];
};

/* Prints the final report on stdout: one JSON object with o->json, else a
 * table. Returns 0, or -1 when out of memory. */
int loadgen_report(const struct report *rep);

#endif
