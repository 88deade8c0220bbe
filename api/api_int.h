/*
 * api_int.h: what the API server's own files share. Not an interface.
 */
#ifndef API_INT_H
#define API_INT_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <jansson.h>
#include <microhttpd.h>

#include "api/api.h"
#include "api/api_jobs.h"
#include "api/api_loop.h"
#include "api/api_pwhash.h"
#include "api/api_tarpit.h"
#include "api/api_work.h"

#define API_JSON_MAX (64 * 1024)
#define API_IMAGE_MAX (256 * 1024)
#define API_MAX_PARAMS 2 /* the most ids a route's path has */
#define API_ROUTE_SEGS 4 /* the most segments a route's path has */

/* A user's role, as stored in his row and signed into his tokens. */
enum api_role {
    API_ROLE_MEMBER = 0,
    API_ROLE_COMPANY_ADMIN = 1,
    API_ROLE_PLATFORM_ADMIN = 2
};

/*
 * What a route asks of its caller beyond a valid token. The company of the
 * two company checks is the path's first id (/v1/companies/{id}/...).
 */
enum api_access {
    API_ACCESS_ANY = 0,        /* anyone (with a token if the route needs one) */
    API_ACCESS_COMPANY_MEMBER, /* a member of the company, or the platform admin */
    API_ACCESS_COMPANY_ADMIN,  /* an admin of the company, or the platform admin */
    API_ACCESS_PLATFORM_ADMIN  /* the platform admin only */
};

enum api_body_kind {
    API_BODY_NONE = 0, /* a body is read (up to the limit) and ignored */
    API_BODY_JSON,     /* parsed into req->json before the handler runs */
    API_BODY_IMAGE     /* PNG, JPEG or WebP, checked; its type in req->image_type */
};

/*
 * What a route's handler reads, which decides where it runs. A handler that
 * may touch the database or memcached runs on a worker (api_work.c), with
 * its connection suspended; one that touches neither runs on the event loop.
 */
enum api_reads {
    API_READS_PRIMARY = 0, /* the primaries (and memcached): on a worker */
    /*
     * Reads that may be slightly stale: on a worker, and a replica answers
     * them unless the caller wrote in the last seconds (read-your-writes).
     */
    API_READS_STALE,
    API_READS_NONE, /* no I/O at all (health, metrics): on the event loop */
    /*
     * The answer may be a prebuilt response of the hot table (api_hot.c)
     * under the path's id: looked up on the event loop, before any memcached
     * work; a miss runs the handler on a worker, which fills the table.
     */
    API_READS_HOT,
    /*
     * One short read of the primaries, started on the event loop
     * (api_loop_query(): the handler is called there first, with req->where
     * API_ON_LOOP), else on a worker. Only for routes without a body whose
     * access is anyone's: the loop runs no access check.
     */
    API_READS_LOOP
};

struct api_auth {
    int ok;
    uint64_t user_id;
    uint64_t company_id;
    int role;        /* enum api_role, as signed into the token */
    int64_t expires; /* Unix seconds, as signed into the token */
};

/*
 * The last token verified on a connection and what it said: the next
 * request with the same bytes is checked by a compare and the expiry, not
 * by its HMAC again (api_dispatch.c). Longer tokens are not kept.
 */
#define API_TOKEN_MEMO_MAX 256
struct api_token_memo {
    size_t len; /* 0: none */
    char token[API_TOKEN_MEMO_MAX];
    struct api_auth auth;
};

struct api_header {
    const char *name; /* static strings */
    char value[256];  /* a Set-Cookie of a device token fits */
};

struct api_server;
struct api_pwhash_job;

/*
 * Something to run on a worker: run(item) is called on a pool thread, and
 * may free the item (embed it in what it works on).
 */
struct api_work_item {
    void (*run)(struct api_work_item *item);
    uint64_t key; /* 0, or a key of which at most per_key items run at once */
    struct api_work_item *next; /* private: the queue's */
};

/* One request, from its first byte to its response. */
struct api_req {
    struct api_server *srv;      /* ref */
    struct router *router;       /* ref */
    struct cache *cache;         /* ref, may be NULL */
    struct MHD_Connection *conn; /* ref */
    struct api_loop *loop;       /* ref: the event loop of conn */
    const char *method;          /* ref in MHD */
    const char *url;             /* ref in MHD */
    int found;                   /* api_route_find()'s status for method and url */
    int route;                   /* index in the route table, -1 none */
    uint64_t param[API_MAX_PARAMS];
    char allow[64]; /* found == -EOPNOTSUPP: the path's methods */
    char *body;     /* owned, NUL-terminated */
    size_t body_len, body_cap, body_max;
    int body_too_large;
    int has_body; /* the headers announce one (Content-Length > 0, Transfer-Encoding) */
    int bad_framing; /* two Content-Lengths, or one with Transfer-Encoding */
    int two_authz;   /* more than one Authorization header */
    int queued;      /* the response is queued */
    int lent;        /* the storage is its connection's (api_conn_req()): not freed */
    json_t *json;    /* owned: a JSON route's body, an object */
    const char *image_type; /* static: an image route's checked type */
    struct api_auth auth;
    struct api_token_memo *memo; /* its connection's (api_conn_req()), or NULL */
    int role, role_known;        /* the caller's role as api_caller_role() read it */
    int64_t start_us;
    /* The client: the TCP peer, or the last X-Forwarded-For hop of a trusted proxy. */
    char client[16];    /* dotted IPv4 */
    uint32_t client_ip; /* network order */
    uint32_t peer_ip;   /* the TCP peer, network order */
    int forwarded;      /* the request carries X-Forwarded-For */
    /* The e-mail whose "account" token the request took (api_rate_check()), owned. */
    char *account;
    /* A password hash the request waits for (api_req_hash()), owned. */
    struct api_pwhash_job *job;
    void (*then)(struct api_req *req); /* runs on a worker when the hash is done */
    /* Off the event loop: the worker pool's item, and where the request is. */
    struct api_work_item work;
    enum { API_ON_LOOP = 0, API_ON_WORKER, API_WORKER_ANSWERED, API_ON_LOOP_DB } where;
    /* Answered and held by the tarpit (api_tarpit.c): its list and due time. */
    struct api_req *held_next;
    int64_t held_due_us;

    /* response */
    int status;
    char *resp; /* owned */
    size_t resp_len;
    const char *resp_type; /* static */
    struct api_header headers[4];
    int nheaders;
};

typedef void (*api_handler)(struct api_req *req);

/*
 * One endpoint. The dispatcher answers everything the route declares
 * (404/405, 415, 413, 401, the access check, the body's parsing) before the
 * handler runs, in that order; the handler sees a caller that may call it.
 */
struct api_route {
    const char *method;
    /* The path's segments, NULL-terminated; api_seg_id matches an id. */
    const char *seg[API_ROUTE_SEGS + 1];
    api_handler handler;
    int auth;               /* 1: needs a valid bearer token */
    enum api_access access; /* checked after the token */
    enum api_body_kind body;
    size_t body_max;  /* bytes; a larger body is answered 413 */
    const char *name; /* metrics label */
    enum api_reads reads;
};

extern const struct api_route api_routes[];
extern const int api_nroutes;
/* The id segment of route paths: compared by address, printed "{id}". */
extern const char api_seg_id[];

/* A request's route: what api_route_find() fills in. */
struct api_match {
    int route; /* index in api_routes, -1 none */
    uint64_t param[API_MAX_PARAMS];
    char allow[64]; /* on -EOPNOTSUPP: the path's methods, "GET, PATCH" */
};
/*
 * Finds the route of method and path (a URL path without its query), one
 * segment at a time against the table's constant segments: no allocation,
 * no copy. Returns 0 (m->route and m->param set); BC_ENOTFOUND when no route
 * has this path (ids must be 1..INT64_MAX); -EOPNOTSUPP when the path exists
 * with other methods only (m->allow lists them in table order).
 */
int api_route_find(const char *method, const char *path, struct api_match *m);

/* ---- responses (api_json.c) ---- */
void api_reply_json(struct api_req *req, int status, json_t *body); /* steals body */
void api_reply_raw(struct api_req *req, int status, const char *type, const void *data,
                   size_t len);
/* The message is made valid UTF-8 first (api_utf8_clean: other bytes become '?'). */
void api_error(struct api_req *req, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void api_utf8_clean(char *s);
/* Maps a router status: unavailable -> 503, the rest -> 500 (logged). */
void api_db_error(struct api_req *req, int rc);
void api_add_header(struct api_req *req, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- request bodies (api_json.c) ---- */
enum api_type {
    API_T_STR,
    API_T_INT,
    API_T_BOOL,
    API_T_NUM,
    API_T_OBJ,
    API_T_ID,
    API_T_ANY
};
struct api_field {
    const char *name;
    enum api_type type;
    int required;
    int nullable;
};
/*
 * The dispatcher's part of a JSON route: parses the body into req->json (a
 * JSON object, owned by req). 0, or -EINVAL after replying 400.
 */
int api_body_parse(struct api_req *req);
/*
 * The handler's part: checks req->json against spec (no unknown fields,
 * types right, required present). 0, or -EINVAL after replying 400.
 */
int api_body_check(struct api_req *req, const struct api_field *spec);
/*
 * The dispatcher's part of an image route: the Content-Type is PNG, JPEG or
 * WebP and the bytes start like one; sets req->image_type. 0, or -EINVAL
 * after replying 415 or 422.
 */
int api_body_image(struct api_req *req);

/* ---- text rules (api_text.c) ---- */
/*
 * Names and labels (UTF-8, as JSON strings are): 1..max characters (code
 * points), no control character (C0, DEL, C1) or bidirectional control
 * (U+202A-U+202E, U+2066-U+2069), no white space or invisible character
 * (U+00A0, U+200B, U+200E, U+3000 ...) at either end.
 */
int api_valid_text(const char *s, size_t max);
/*
 * Whether s holds a character one does not see or that is not one: white
 * space or an invisible character anywhere, a control or bidirectional
 * control character, or bytes that are no UTF-8 (e-mail addresses).
 */
int api_text_unseen(const char *s);
/* Which of those rules s breaks ("is empty", "holds a control character" ...), or NULL.
 */
const char *api_text_problem(const char *s, size_t max);
/* Replies 422 code: field breaks that rule (problem), and what the rules are. */
void api_text_refuse(struct api_req *req, const char *code, const char *field,
                     const char *problem, size_t max);
/* 0 when s is valid text; else replies 422 code naming field and the rule it broke. */
int api_text_check(struct api_req *req, const char *code, const char *field,
                   const char *s, size_t max);
/*
 * s without white space or invisible characters at its ends: its first
 * byte's offset into *start and the length in bytes that remains.
 */
size_t api_text_trim(const char *s, size_t *start);
/* Characters (code points) of a UTF-8 string. */
size_t api_text_chars(const char *s, size_t len);
/* Field getters for checked objects; absent (or null) fields give dflt. */
const char *api_str(json_t *obj, const char *name, const char *dflt);
int64_t api_int(json_t *obj, const char *name, int64_t dflt);
uint64_t api_id(json_t *obj, const char *name, uint64_t dflt);
int api_has(json_t *obj, const char *name);
/* Decimal odds (number, <= 2 decimals, 1.01..1000) -> hundredths; 0 or -EINVAL. */
int api_odds_parse(json_t *v, int64_t *hundredths);
json_t *api_odds_json(int64_t hundredths);
json_t *api_id_json(uint64_t id);
json_t *api_str_or_null(const char *s);
/* "2026-06-11 19:00:00.000" (MariaDB) -> "2026-06-11T19:00:00Z" */
json_t *api_time_json(const char *db);
/* RFC 3339 -> "YYYY-MM-DD HH:MM:SS.mmm" for MariaDB (UTC); 0 or -EINVAL. */
int api_time_parse(const char *in, char *out, size_t size, int64_t *epoch_ms);
/*
 * The query parameter name into *value (NULL when absent; "" for "?name" and
 * "?name="): 0, or -EINVAL after replying 400 when it is given more than once
 * or holds a NUL byte (%00).
 */
int api_query(struct api_req *req, const char *name, const char **value);
/* ?limit= (default 50, 1..500): 0, or -EINVAL after replying 400. */
int api_limit(struct api_req *req, int *limit);
/* ?cursor= (0 when absent): 0, or -EINVAL after replying 400. */
int api_cursor(struct api_req *req, uint64_t *cursor);
json_t *api_cursor_json(uint64_t last_id, int more);
/* The checks of api_limit() and api_cursor() on a value: 0 or -EINVAL. */
int api_parse_limit(const char *s, int *limit);
int api_parse_cursor(const char *s, uint64_t *cursor);
/* An id: 1..INT64_MAX in decimal digits only. 0 or -EINVAL. */
int api_parse_id(const char *s, uint64_t *id);
int api_parse_id_n(const char *s, size_t n, uint64_t *id); /* s need not end */

/* ---- auth (api_auth.c) ---- */
int api_token_make(struct api_server *srv, uint64_t user_id, uint64_t company_id,
                   int role, char *out, size_t size);
int api_token_check(struct api_server *srv, const char *token, struct api_auth *auth);
/*
 * A device token of the user (limits.device_ttl_days), and its check: 0 and
 * *user_id, -EINVAL (malformed, or not a device token), -EACCES (no accepted
 * key signed it) or -ETIMEDOUT (expired).
 */
int api_device_make(struct api_server *srv, uint64_t user_id, char *out, size_t size);
#define API_DEVICE_COOKIE "bc_device" /* the cookie a browser keeps it in */
int api_device_check(struct api_server *srv, const char *token, uint64_t *user_id);
const char *api_role_name(int role);
/* A company's random join code: 10 characters of [A-Z2-9] and a NUL. */
void api_join_code(char out[11]);
int api_role_parse(const char *name);

/* ---- abuse limits (api_limit.c) ---- */
void api_limits_init(struct api_limits *l); /* the defaults of api_conf_init() */
/* Whether addr (network order) is in one of nets. */
int api_net_match(const struct api_nets *nets, uint32_t addr);
/*
 * A table of token buckets of one rate, size buckets at most (the least
 * recently used of a key's probe window is evicted). 0 or -ENOMEM.
 */
struct api_limit; /* opaque */
int api_limit_create(const struct api_rate *rate, uint32_t size,
                     struct api_limit **out);
void api_limit_destroy(struct api_limit *l); /* accepts NULL */
/*
 * Takes a token from key's bucket: 0, or -EAGAIN with *retry_s (1..3600)
 * when it has none. A rate whose burst is 0 never refuses. Takes the
 * table's lock for one lookup.
 */
int api_limit_take(struct api_limit *l, const char *key, int64_t now_us,
                   uint32_t *retry_s);
/* Gives a token back (a login that succeeded costs its account nothing). */
void api_limit_give(struct api_limit *l, const char *key, int64_t now_us);
/*
 * The server's check of one bucket for a request: 0, or -EAGAIN after
 * replying 429 rate_limited with Retry-After. which is "login_addr",
 * "signup_addr", "account" or "device"; key the address, the e-mail or the
 * user id (a known device's login).
 */
int api_rate_check(struct api_req *req, const char *which, const char *key);
/* Frees what a finished request owns (its body, JSON, response, job, account key). */
void api_req_clear(struct api_req *req);
/*
 * Gives back the token api_rate_check(req, "account", key) took: only a
 * client's failures count against an e-mail. A request that ends 5xx (a busy
 * hash queue, a database down) gets it back by itself when it completes.
 */
void api_rate_refund(struct api_req *req);

/* ---- the hot table: prebuilt odds responses (api_hot.c) ---- */
struct api_hot; /* opaque */
struct api_hot_stats {
    uint64_t hits;  /* answered from the table */
    uint64_t fills; /* entries put */
    uint64_t stale; /* puts refused: dropped meanwhile, or a fresher one there */
};
/* An empty table. 0 or -ENOMEM. */
int api_hot_create(struct api_hot **out);
/* Drops the table's references (connections keep theirs). Accepts NULL. */
void api_hot_destroy(struct api_hot *h);
/*
 * When id's entry is fresh at now_ms: calls use(arg, resp) under the slot's
 * lock (the response cannot be released meanwhile: use() may queue it, and
 * must do nothing slow) and returns 1; else 0. Takes one striped lock.
 */
int api_hot_use(struct api_hot *h, uint64_t id, int64_t now_ms,
                void (*use)(void *arg, struct MHD_Response *resp), void *arg);
/* The generation of id's slot: read by a fill before it reads its body. */
uint64_t api_hot_gen(struct api_hot *h, uint64_t id);
/*
 * Puts resp for id, fresh until expires_ms, taking the caller's reference:
 * 0; or -ESTALE (resp released) when the slot was dropped since gen was
 * read, or holds id's body read later. Evicts what had the slot.
 */
int api_hot_put(struct api_hot *h, uint64_t id, uint64_t gen, int64_t expires_ms,
                struct MHD_Response *resp);
/* Drops id's entry at once; fills begun before are refused (api_hot_put()). */
void api_hot_drop(struct api_hot *h, uint64_t id);
void api_hot_stats(struct api_hot *h, struct api_hot_stats *out);

/* ---- the dispatcher (api_dispatch.c) ---- */
/*
 * The client: the TCP peer, or the last X-Forwarded-For hop of a trusted
 * proxy, into req->client, client_ip, peer_ip and forwarded. On the loop.
 */
void api_client_find(struct api_req *req);
/*
 * What the headers alone decide, before any body is read (a body's unclear
 * framing 400, 404/405, 415, a Content-Length over the route's limit, 401);
 * sets req->has_body. 1 when it answered, 0 when the request goes on. No
 * I/O: on the loop.
 */
int api_precheck(struct api_req *req);
/*
 * The same once the body is in (404/405, 415, 413, 401): 1 when it
 * answered, 0 when api_dispatch_rest() is to run. No I/O: on the loop.
 */
int api_dispatch(struct api_req *req);
/*
 * The caller's access (it may read his row), the body's parsing and the
 * handler, with the replica flag and the read-your-writes mark (memcached)
 * around it: on the thread the route's reads say. Answers, or leaves a hash
 * job (req->job) with no answer yet.
 */
void api_dispatch_rest(struct api_req *req);
/*
 * The read-your-writes mark that req's answer waits for: 1 and its key and
 * lifetime for a signed-in user's write (not a GET) with a cache, where a
 * replica could answer reads (router_replicas_possible()), else 0. Set by
 * api_dispatch_rest() (cache_mark()), by the loops without blocking.
 */
int api_rw_mark(struct api_req *req, char *key, size_t size, uint32_t *ttl_s);

/* ---- server (api_http.c) ---- */
/*
 * Asks for a password hash or verification on the hash queue's threads:
 * returns the job to fill (op, hash, password, user), or NULL after replying
 * 503 with Retry-After when the queue is full. When the handler returns (on
 * a worker), the job is queued while the connection stays suspended; when
 * it is done, then(req) runs on a worker with req->job->rc and answers.
 * known: a login from a known device (api_pwhash_reserve()). In api_pwhash.c.
 */
struct api_pwhash_job *api_req_hash(struct api_req *req, void (*then)(struct api_req *),
                                    int known);
struct api_pwhash *api_server_pwhash(struct api_server *srv);
/* Microseconds of CLOCK_MONOTONIC. */
int64_t api_now_us(void);
/* The server's bucket table which ("login_addr", "signup_addr", "device"; else
 * "account"). */
struct api_limit *api_server_bucket(struct api_server *srv, const char *which);
struct api_tarpit *api_server_tarpit(struct api_server *srv);
/*
 * A request whose connection is suspended already (its loop could not run
 * its statement) goes to a worker: its handler runs there; no place in the
 * pool: 503 at once. On the request's loop.
 */
void api_req_to_worker(struct api_req *req);
/*
 * api_log.c: a line of the access log (f: conf->access_log) into this
 * thread's buffer; flush writes every thread's buffer out; release (when no
 * thread logs any more) flushes and frees them.
 */
void api_access_log(FILE *f, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void api_access_log_flush(void);
void api_access_log_release(void);

/* Tokens whose HMAC was verified (not answered from a connection's memo). */
void api_server_count_verify(struct api_server *srv);
uint64_t api_server_verifies(struct api_server *srv);
struct api_work *api_server_work(struct api_server *srv);
struct api_hot *api_server_hot(struct api_server *srv);
int api_server_stopping(struct api_server *srv); /* 1 once SIGTERM'd: draining */
/* A response: body (len bytes, taken), Content-Type, every answer's headers; NULL: no
 * memory. */
struct MHD_Response *api_response_make(const char *type, char *body, size_t len);
/* The server's connections: open, closed by a deadline, refused by the cap. */
void api_conns_of(struct api_server *srv, uint64_t *open, uint64_t *reaped,
                  uint64_t *refused);
/* Escapes control characters, non-ASCII bytes, spaces and '\\' as \xHH. */
void api_log_escape(const char *in, char *out, size_t size);
const struct api_conf *api_server_conf(struct api_server *srv);
struct router *api_server_router(struct api_server *srv);
/* The server's background jobs (settlements): destroying the server joins them. */
struct api_jobs *api_server_jobs(struct api_server *srv);
void api_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* libmicrohttpd's logger (MHD_OPTION_EXTERNAL_LOGGER): api_log(), rate-bounded. */
void api_log_mhd(void *cls, const char *fmt, va_list ap);

/*
 * The server's purge of old Idempotency-Key records (api_purge.c): a job of
 * the server, at start and every 10 minutes. 0 or a negative status.
 */
int api_purge_start(struct api_jobs *jobs, struct router *router);
/*
 * The server's cache keeper (api_cached.c): a job that flushes a memcached
 * server which missed this server's deletes as soon as its breaker closes
 * (cache_maintain(), 4 times a second). 0 or a negative status.
 */
int api_cache_keeper_start(struct api_jobs *jobs, struct cache *cache);

/* ---- settlements (api_settle_job.c) ---- */
/*
 * The server's settler: a job of the server (key 0) that claims the
 * settlement jobs nobody holds, at start, every second and when woken, and
 * runs each as a job of the server keyed by its match. Created once the
 * server has its jobs and a router; destroyed after api_jobs_destroy()
 * joined its threads. 0 or a negative status.
 */
struct api_settler; /* opaque */
int api_settler_create(struct api_server *srv, struct api_settler **out);
void api_settler_destroy(struct api_settler *settler); /* accepts NULL */
/* A result was posted: look for the new job now. Accepts NULL. */
void api_settler_wake(struct api_settler *settler);
/* The server's settler; NULL for a server without a router. */
struct api_settler *api_server_settler(struct api_server *srv);
/* Bets a settlement transaction takes at most by default (settle_batch_bets). */
#define API_SETTLE_BATCH_BETS 250

/*
 * A user of a settlement batch: what the batch pays him (the sum of his
 * bets' payouts) and the points it gives him (the sum of payout - stake:
 * cancelled 0, won FLOOR(stake * odds / 100) - stake, lost -stake), and,
 * once his row is locked (found), his company, team (0: none) and whether
 * he is a platform admin.
 */
struct api_batch_user {
    uint64_t id, company, team;
    int64_t paid, points, owed; /* owed: the open payouts the batch closes */
    int found, admin;
};
/*
 * api_standings_agg.c: called inside a settlement batch transaction on one
 * shard, with the batch's users (n, in id order) whose rows the caller has
 * locked (in id order) and whose points it has added to users.points;
 * adds their points to the shard's standings aggregates (platform admins
 * and users not found excluded), locking the aggregate rows in id order.
 * At most two statements; returns 0 or a router status.
 */
int api_standings_batch(struct router_txn *txn, const struct api_batch_user *users,
                        size_t n);
/*
 * A ranked user's membership changes, in txn on his shard, after his row was
 * written or locked (FOR UPDATE): with join he becomes a member of company,
 * and he moves from team from_team to to_team (0: none) with his points.
 * At most two statements; 0 or a router status.
 */
int api_standings_member(struct router_txn *txn, uint64_t company, int join,
                         uint64_t from_team, uint64_t to_team, int64_t points);

/*
 * Where each large company's top K starts: the top-th best of its shards'
 * best scores (api_standings_cut_per_shard() a shard, read from the users'
 * company_points index, a dive each, however the scores spread; never
 * stale), a lower bound of its top-th member's score, and how many of them
 * are at or above it. cuts[].company is set by the caller, ascending;
 * found is 0 for a company whose shards give fewer than top (read all its
 * users). Every user at or above points is the exact top K when there are
 * at least top (fewer: points moved between the reads). One scatter over
 * the range of companies first to last (others dropped): 0 or a status.
 */
struct api_points_cut {
    uint64_t company;
    int64_t points;      /* the top-th best of the shards' bests */
    int64_t at_or_above; /* shard bests at or above it: members, at least */
    int found;
};
/* Best scores a shard gives to a cut: 2 * top over nshard, 1 to the most
 * (a subquery each; under 63 shards, fewer than 2 * top scores in all). */
#define API_CUT_PER_SHARD_MAX 16
uint32_t api_standings_cut_per_shard(uint32_t top, uint32_t nshard);
/* One of a shard's best scores in a company, as the cuts' scatter reads it. */
struct api_points_best {
    uint64_t company;
    int64_t points;
};
/*
 * The cuts of c[0..n) (ascending companies) from the shards' best scores
 * b[0..nb), any order (sorted here); scores of other companies are ignored.
 * A cut is found at the top-th best score, its ties included in at_or_above.
 */
void api_standings_cut_merge(struct api_points_best *b, size_t nb, uint32_t top,
                             struct api_points_cut *c, size_t n);
int api_standings_cuts(struct router *r, uint32_t top, struct api_points_cut *cuts,
                       size_t n);
/* Large companies c[0..n) (ascending) as one scatter reads them: cond, each
 * shard's WHERE (at most API_GROUP_PIECES ranges, each at or above its lowest
 * cut), tail, the host's filter after its window (each its own cut). 0 or -ENOMEM. */
#define API_GROUP_PIECES 4
int api_standings_group_parts(struct sql_buf *cond, struct sql_buf *tail,
                              const struct api_points_cut *c, uint32_t n);

/*
 * api_standings_store.c: a recomputation's lists, written under generation
 * gen in txn (global host) by a thread of their own while it reads on:
 * api_lists_add() queues one list (JSON text) into a multi-row REPLACE sent
 * at about a MiB; api_lists_finish() sends the rest and waits for every
 * write; then the caller destroys the writer (it waits for a write in
 * progress: before the rollback, on every path) and ends txn. Statuses:
 * router ones (the first failed write's, message on the calling thread).
 */
struct api_lists;
int api_lists_start(struct router_txn *txn, uint64_t gen, struct api_lists **out);
int api_lists_add(struct api_lists *l, const char *kind, uint64_t scope,
                  const char *text, size_t len);
int api_lists_finish(struct api_lists *l, uint32_t *stores, int64_t *store_ms);
void api_lists_destroy(struct api_lists *l); /* accepts NULL */

/*
 * The columns of a ranked user row as the standings read them (id,
 * display_name, company_id, team_id, points), and their sort: by company,
 * then points descending, then id (keys parsed once). 0 or -ENOMEM.
 */
enum {
    API_USER_ID,
    API_USER_NAME,
    API_USER_COMPANY,
    API_USER_TEAM,
    API_USER_POINTS,
    API_USER_NCOL
};
int api_standings_sort_rows(struct sql_rows *rows);

/*
 * One user of a ranking as JSON text, appended to b, which holds "[" and the
 * items before (a comma goes first when it holds more): the same object the
 * API documents for standings items, written without building it in jansson
 * (a recomputation writes hundreds of thousands). 0 or -ENOMEM.
 */
struct api_user_item {
    int rank;
    uint64_t id, company;
    const char *name, *company_name;
    const char *team; /* the team id as text; NULL for none */
    int64_t points;
};
int api_standings_user_text(struct sql_buf *b, const struct api_user_item *u);

/* ---- metrics (api_metrics.c) ---- */
struct api_metrics;
struct api_metrics *api_metrics_create(void);
void api_metrics_destroy(struct api_metrics *m);
void api_metrics_observe(struct api_metrics *m, int route, int status, int64_t us);
/* Counts a 503 that api_db_error() answered for status code rc, by its cause. */
void api_metrics_unavailable(struct api_metrics *m, int rc);
struct api_metrics *api_server_metrics(struct api_server *srv);

/* ---- handlers ---- */
void api_h_healthz(struct api_req *req);
void api_h_readyz(struct api_req *req);
void api_h_metrics(struct api_req *req);
void api_h_signup(struct api_req *req);
void api_h_login(struct api_req *req);
void api_h_me(struct api_req *req);
void api_h_me_patch(struct api_req *req);
void api_h_me_avatar_put(struct api_req *req);
void api_h_user_get(struct api_req *req);
void api_h_user_avatar_get(struct api_req *req);
void api_h_company_create(struct api_req *req);
void api_h_company_get(struct api_req *req);
void api_h_company_patch(struct api_req *req);
void api_h_company_logo_put(struct api_req *req);
void api_h_company_logo_get(struct api_req *req);
void api_h_team_create(struct api_req *req);
void api_h_team_list(struct api_req *req);
void api_h_admin_add(struct api_req *req);
void api_h_match_create(struct api_req *req);
void api_h_match_list(struct api_req *req);
void api_h_match_get(struct api_req *req);
void api_h_odds_get(struct api_req *req);
void api_h_odds_put(struct api_req *req);
void api_h_result_post(struct api_req *req);
void api_h_settlement_get(struct api_req *req);
void api_h_bet_create(struct api_req *req);
void api_h_my_bets(struct api_req *req);
void api_h_bet_get(struct api_req *req);
void api_h_standings_users(struct api_req *req);
void api_h_standings_teams(struct api_req *req);
void api_h_standings_companies(struct api_req *req);

/* ---- cached reads (api_cached.c) ---- */
/*
 * The match as the API shows it (JSON object, caller decrefs), read through
 * memcached and, if near, the near-cache: 0, BC_ENOTFOUND or a router
 * status. A fill of another key must not use near (it could store old data).
 */
int api_match_cached(struct api_req *req, uint64_t id, int near, json_t **match);
/*
 * The match from this server's near-cache alone (no I/O: for the event
 * loops): 1 and *match, or 0 when it is not there (or not fresh).
 */
int api_match_near(struct api_req *req, uint64_t id, json_t **match);
/* The odds response body of a match (malloc'd text), through the cache. */
int api_odds_cached(struct api_req *req, uint64_t id, char **text);
/* After a committed change of a match: its keys, and the match lists. */
void api_match_changed(struct api_req *req, uint64_t id);
/*
 * After a committed change of a company's teams (api_companies.c): a team
 * created, or a member who joined or left one (signup with a team_id, PATCH
 * /v1/me team_id). The company's cached team list pages are passed by.
 */
void api_teams_changed(struct api_req *req, uint64_t company_id);
/* Read-through of any JSON text the fill function makes. */
typedef int (*api_fill_fn)(struct api_req *req, uint64_t id, char **text);
int api_cached_text(struct api_req *req, const char *key, int near, uint32_t ttl_s,
                    api_fill_fn fill, uint64_t id, char **text);
json_t *api_match_row_json(struct sql_rows *rows, uint32_t r);

/* ---- shared lookups (api_users.c) ---- */
struct api_user {
    uint64_t id, company_id, team_id; /* team_id 0 = none */
    char email[256];
    char display_name[404]; /* 100 characters of up to 4 bytes */
    char role[24];
    int64_t balance, points;
    int has_avatar;
};
/* Loads a user by id from its shard: 0, BC_ENOTFOUND, or a router status. */
int api_user_load(struct router *router, uint64_t id, struct api_user *user);
json_t *api_user_json(const struct api_user *u);

/* A password's length in characters (docs/api.md: weak_password). */
#define API_PASSWORD_MIN 8
#define API_PASSWORD_MAX 256

/* A hash job of a request (api_req_hash()): what it hashes and what it keeps. */
struct api_pwhash_job {
    enum api_pwhash_op op;
    char hash[API_PWHASH_STRBYTES]; /* VERIFY: the stored hash; HASH: the result */
    /* The longest password allowed, in UTF-8 (4 bytes a character at most),
     * whole: a password is never cut. Wiped once used. */
    char password[API_PASSWORD_MAX * 4 + 1];
    int rc;                                   /* 0; -EACCES (no match); -ENOMEM */
    void (*done)(struct api_pwhash_job *job); /* called on the hash thread */
    void *arg;                                /* of done */
    struct api_user user;                     /* the handler's, kept across */
    int have_user;
    uint32_t addr;               /* the client address of its place */
    int place;                   /* its place's kind (enum api_pwhash_place) */
    struct api_pwhash_job *next; /* private: the queue's */
    int64_t queued_us;           /* private: when it was queued */
};
/*
 * The caller's effective role, read from his row once per request (so a
 * promotion applies without a new login). 0, or after replying (401 if the
 * user is gone, 503/500) BC_ENOTFOUND or a router status.
 */
int api_caller_role(struct api_req *req, int *role);
/*
 * The one access check: the dispatcher runs it with the route's access and
 * the path's company; handlers whose company comes from elsewhere (a query
 * parameter) call it themselves (api_access.c). 0, or after replying:
 * BC_ENOTFOUND (404 "no such company": a company not the caller's is not
 * shown to exist, and one that does not exist is not, to the platform admin
 * either), -EACCES (403), or what api_caller_role() failed with. Reads the
 * caller's row only when the answer depends on his role, and the company's
 * for the platform admin.
 */
int api_check_access(struct api_req *req, enum api_access access, uint64_t company_id);
void api_image_etag(const void *data, size_t len, char out[17]);
void api_image_reply(struct api_req *req, struct sql_rows *rows);

#endif
