/*
 * loadgen: drives virtual users through the BetCity HTTP API and reports
 * throughput, latency per operation and errors.
 *
 *   loadgen --url http://127.0.0.1:8080 --users 200 --duration 30 [--rate 500]
 *           [--mix odds=80,bet=20] [--acked bets.txt] [--trace ops.txt] [--json] ...
 *           [--shard-users 7:50 --watch-shard 7 [--shards 64]]
 *
 * Phase 1 signs every virtual user up (or logs it in) and keeps its token.
 * Phase 2 runs the operation mix for --duration seconds: open loop at --rate
 * requests per second in total, or closed loop as fast as the workers go with
 * --rate 0. Each worker thread owns one curl easy handle, hence one keep-alive
 * connection, and serves its share of the users round robin.
 *
 * In open loop the latency of a request is counted from the time the schedule
 * meant to send it, so a server stall shows as latency and not as a silently
 * lower rate (no coordinated omission). Bets carry an Idempotency-Key; a
 * transport error is retried with the same key and body, so a retry never
 * places a second bet; with --retry-busy, so is an answer 429 or 503 (else
 * that bet counts as unknown, placed or not). --watch-shard splits the
 * bets by the logical shard of their user (the shard an id carries), to see what a
 * shard move costs the clients of that shard; --shard-users makes sure enough users
 * live there. Only loopback URLs are accepted: loadgen is a tool for the local stack,
 * never for someone else's server (project policy).
 *
 * Exit codes: 0 it ran (request errors are in the report), 1 it could not
 * start, 2 usage.
 */
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "shardmap/shardmap.h"
#include "tools/loadgen.h"

#define MAX_MATCHES 4096
#define GRACE_MS 1000 /* after duration + timeout, requests in flight are cut */

/* The signal handler's view of the run: set once before it is installed. */
static struct run *g_run;
static atomic_int g_sigint;  /* number of SIGINT/SIGTERM seen */
static atomic_int g_loading; /* phase 2 is running */

/* Before and after phase 2 a Ctrl-C cuts everything at once; during phase 2
 * the first one stops new requests and the second cuts those in flight. */
static void on_signal(int sig)
{
    int n = atomic_fetch_add(&g_sigint, 1) + 1;

    (void)sig;
    if (!atomic_load(&g_loading) || n > 1)
        atomic_store(&g_run->abort, 1);
}

static uint64_t rng_next(uint64_t *s) /* splitmix64 */
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Phase 2 issues no new operation after the duration or a first Ctrl-C. */
static int stop_issuing(const struct run *r)
{
    return atomic_load(&g_sigint) > 0 || atomic_load(&r->abort) ||
           loadgen_now_ns() >= r->end_ns;
}

static int valid_id(const char *s)
{
    size_t n = s ? strspn(s, "0123456789") : 0;

    return n >= 1 && n <= 19 && s[n] == '\0';
}

/* ---- phase 1: sign up or log in ---- */

static int parse_auth(const struct worker *w, struct vuser *u)
{
    json_t *j = json_loadb(w->buf, w->len, 0, NULL);
    const char *tok = json_string_value(json_object_get(j, "token"));
    const char *id =
        json_string_value(json_object_get(json_object_get(j, "user"), "id"));
    int rc = -1;

    if (tok != NULL && valid_id(id) && strlen(id) < sizeof(u->id) &&
        strlen(tok) < MAX_TOKEN && (u->token = strdup(tok)) != NULL) {
        strcpy(u->id, id);
        u->shard = shardmap_id_shard(strtoull(id, NULL, 10));
        rc = 0;
    }
    json_decref(j);
    return rc;
}

/* The compact text of j, which it releases; NULL if j is NULL (json_pack
 * failed: a flag that is not UTF-8) or out of memory. */
static char *dump_json(json_t *j)
{
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;

    json_decref(j);
    return text;
}

static int user_start(struct worker *w, size_t n)
{
    const struct opts *o = &w->run->o;
    struct vuser *u = &w->run->users[n];
    const char *step = "signup";
    char email[128], name[96], why[256];
    char *body = NULL;
    int rc = 0;

    snprintf(email, sizeof(email), "%s-%" PRIu64 "@loadgen.test", o->prefix, u->num);
    if (o->mode != MODE_LOGIN) {
        snprintf(name, sizeof(name), "%s %" PRIu64, o->prefix, u->num);
        body = dump_json(json_pack("{s:s,s:s,s:s,s:s,s:s}", "company", o->company,
                                   "join_code", o->join_code, "email", email,
                                   "password", o->password, "display_name", name));
        rc = body ? loadgen_http_retry(w, "/v1/auth/signup", body, NULL, NULL, 1, NULL)
                  : 0;
        free(body);
        if (rc == 201 && parse_auth(w, u) == 0) {
            w->signed_up++;
            return 0;
        }
        if (rc != 409 || o->mode == MODE_SIGNUP)
            goto fail;
    }
    step = "login";
    body = dump_json(json_pack("{s:s,s:s}", "email", email, "password", o->password));
    rc = body ? loadgen_http_retry(w, "/v1/auth/login", body, NULL, NULL, 1, NULL) : 0;
    free(body);
    if (rc == 200 && parse_auth(w, u) == 0) {
        w->logged_in++;
        return 0;
    }
fail:
    if (rc == 0)
        snprintf(why, sizeof(why), "cannot encode the request (flags not UTF-8?)");
    else if (rc == 200 || rc == 201)
        snprintf(why, sizeof(why), "HTTP %d without token or user.id", rc);
    else
        loadgen_describe(w, rc, why, sizeof(why));
    if (w->why[0] == '\0')
        snprintf(w->why, sizeof(w->why), "%s %s: %s", step, email, why);
    return -1;
}

static void *phase1_main(void *arg)
{
    struct worker *w = arg;
    struct run *r = w->run;

    for (size_t n = w->id; n < r->nusers && !atomic_load(&r->abort); n += r->nworker) {
        if (user_start(w, n) == 0)
            atomic_fetch_add(&r->prog_ready, 1);
        else
            atomic_fetch_add(&r->prog_failed, 1);
    }
    atomic_fetch_add(&r->nfinished, 1);
    return NULL;
}

/* The shard the API puts user <prefix>-<num>@loadgen.test on: the key hash of
 * its canonical e-mail (lower case already: the prefix is [a-z0-9._-]). */
static uint32_t user_shard(const struct opts *o, uint64_t num)
{
    char email[128];
    int len =
        snprintf(email, sizeof(email), "%s-%" PRIu64 "@loadgen.test", o->prefix, num);

    return shardmap_shard_of_key(email, (size_t)len, (uint32_t)o->nshard);
}

/* The users' e-mail numbers: 1..N, except that with --shard-users N:K, when
 * fewer than K of those hash to shard N, the last others give way to the next
 * numbers above N that do. Deterministic, so --login finds the same users. */
static void pick_users(struct run *r)
{
    const struct opts *o = &r->o;
    size_t have = 0, n = r->nusers;
    uint64_t i = r->nusers;

    for (size_t k = 0; k < r->nusers; k++)
        r->users[k].num = k + 1;
    if (o->shard_users_k == 0)
        return;
    for (size_t k = 0; k < r->nusers; k++)
        have += user_shard(o, r->users[k].num) == (uint32_t)o->shard_users;
    while (have < (size_t)o->shard_users_k) {
        if (user_shard(o, ++i) != (uint32_t)o->shard_users)
            continue;
        while (user_shard(o, r->users[n - 1].num) == (uint32_t)o->shard_users)
            n--; /* have < K <= N: one of the others is left */
        r->users[--n].num = i;
        have++;
    }
}

/* Users whose id says another shard than loadgen computed: --shards is not
 * the cluster's shard count (or the e-mail was canonicalised otherwise). */
static void check_user_shards(const struct run *r)
{
    const struct opts *o = &r->o;
    size_t bad = 0, first = 0;

    for (size_t k = 0; k < r->nready; k++) {
        const struct vuser *u = &r->users[r->ready[k]];

        if (u->shard != user_shard(o, u->num) && bad++ == 0)
            first = r->ready[k];
    }
    if (bad > 0)
        fprintf(stderr,
                "loadgen: warning: %zu users are not on the shard their e-mail hashes "
                "to with --shards %ld (%s-%" PRIu64 "@loadgen.test is on shard %u): "
                "is --shards the cluster's shard count?\n",
                bad, o->nshard, o->prefix, r->users[first].num, r->users[first].shard);
}

/* ---- phase 2: the mix ---- */

static enum group group_of(const struct run *r, const struct vuser *u)
{
    return u->shard == (uint32_t)r->o.watch_shard ? GROUP_WATCHED : GROUP_OTHERS;
}

static void ack(struct worker *w, const struct vuser *u, const char *bet_id)
{
    struct run *r = w->run;
    enum group g = group_of(r, u);
    uint64_t now;

    pthread_mutex_lock(&r->acked_lock);
    now = loadgen_now_ns();
    if (now - r->last_ack_ns > r->pause_max_ns)
        r->pause_max_ns = now - r->last_ack_ns;
    r->last_ack_ns = now;
    if (now - r->grp_last_ns[g] > r->grp_gap_max_ns[g])
        r->grp_gap_max_ns[g] = now - r->grp_last_ns[g];
    r->grp_last_ns[g] = now;
    if (r->acked != NULL)
        fprintf(r->acked, "%s %s %ld\n", bet_id, u->id, r->o.stake);
    pthread_mutex_unlock(&r->acked_lock);
    atomic_fetch_add_explicit(&r->prog_acked, 1, memory_order_relaxed);
}

/* Places one bet; returns the final status or -CURLcode, and sets *acked
 * when the bet is placed and acknowledged with its id. */
static int do_bet(struct worker *w, const struct vuser *u, uint64_t t0, int *acked)
{
    static const char *const picks[3] = {"home", "draw", "away"};
    struct run *r = w->run;
    char body[160], key[64], code[48];
    unsigned nretry = 0;
    json_t *j;
    const char *id;
    int rc;

    snprintf(body, sizeof(body), "{\"match_id\":\"%s\",\"pick\":\"%s\",\"stake\":%ld}",
             r->matches[rng_next(&w->rng) % r->nmatch], picks[rng_next(&w->rng) % 3],
             r->o.stake);
    snprintf(key, sizeof(key), "%s-%u-%" PRIu64, r->key_prefix, w->id, ++w->seq);
    rc = loadgen_http_retry(w, "/v1/bets", body, u->token, key, r->o.retry_busy,
                            &nretry);
    w->st.retries += nretry;
    if (rc == 200 || rc == 201) {
        j = json_loadb(w->buf, w->len, 0, NULL);
        id = json_string_value(json_object_get(j, "id"));
        if (valid_id(id)) {
            uint64_t us = (loadgen_now_ns() - t0) / 1000;

            ack(w, u, id);
            *acked = 1;
            w->st.acked++;
            w->st.acked_after_retry += nretry > 0;
            if (us > w->st.ok_max_us)
                w->st.ok_max_us = us;
        } else {
            loadgen_count_reject(&w->st, "ack_without_id");
        }
        json_decref(j);
    } else if (rc == 422) {
        loadgen_error_code(w, code, sizeof(code), NULL, 0);
        loadgen_count_reject(&w->st, code);
    } else if (rc < 0 || rc >= 500) {
        /* Lost in transport or a 5xx: placed or not (docs/api.md, a 503 to a write). */
        w->st.unknown++;
    }
    return rc;
}

/*
 * One line of --trace: when the operation was due (wall clock, ms), what, how
 * long it took from then, its final status, and how long after it was due
 * this process started it (us: its own delay, counted in the latency). Kept
 * in the worker's memory (32 bytes an operation) and written when the load
 * ends: a write to the file can wait for the disk (a journal commit of the
 * file system the databases write to), and the load must not wait with it.
 */
static void trace_op(struct worker *w, enum op op, uint64_t us, int rc,
                     uint64_t late_us)
{
    struct timespec ts;

    if (w->ntrace == w->trace_cap) {
        size_t cap = w->trace_cap ? 2 * w->trace_cap : 4096;
        struct trace_rec *t = realloc(w->trace, cap * sizeof(*t));
        if (t == NULL) {
            w->trace_lost++;
            return;
        }
        w->trace = t;
        w->trace_cap = cap;
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    w->trace[w->ntrace++] =
        (struct trace_rec){.due_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 -
                                     (int64_t)(us / 1000),
                           .us = us,
                           .late_us = late_us,
                           .rc = rc,
                           .op = (uint8_t)op};
}

/* Writes the workers' traces; -1 (said) when the file is incomplete. */
static int trace_write(struct run *r)
{
    unsigned lost = 0;

    for (unsigned i = 0; r->w != NULL && i < r->nworker; i++) {
        const struct worker *w = r->w[i];
        if (w == NULL)
            continue;
        for (size_t k = 0; k < w->ntrace; k++)
            fprintf(r->trace, "%" PRId64 " %s %" PRIu64 " %d %" PRIu64 "\n",
                    w->trace[k].due_ms, loadgen_op_names[w->trace[k].op],
                    w->trace[k].us, (int)w->trace[k].rc, w->trace[k].late_us);
        lost += w->trace_lost;
    }
    if (lost > 0)
        fprintf(stderr, "loadgen: --trace %s: out of memory: %u operations left out\n",
                r->o.trace, lost);
    return lost > 0 ? -1 : 0;
}

static void do_op(struct worker *w, enum op op, const struct vuser *u, uint64_t t0)
{
    struct run *r = w->run;
    char path[96];
    int rc, acked = 0;
    uint64_t us, late_us = r->trace != NULL ? (loadgen_now_ns() - t0) / 1000 : 0;

    w->cur_op = op;
    switch (op) {
    case OP_ODDS:
        snprintf(path, sizeof(path), "/v1/matches/%s/odds",
                 r->matches[rng_next(&w->rng) % r->nmatch]);
        rc = loadgen_http(w, path, NULL, u->token, NULL);
        break;
    case OP_BET:
        rc = do_bet(w, u, t0, &acked);
        break;
    case OP_ME:
        rc = loadgen_http(w, "/v1/me", NULL, u->token, NULL);
        break;
    case OP_HISTORY:
        rc = loadgen_http(w, "/v1/me/bets?limit=20", NULL, u->token, NULL);
        break;
    default:
        rc = loadgen_http(w, "/v1/matches?status=scheduled&limit=50", NULL, u->token,
                          NULL);
        break;
    }
    us = (loadgen_now_ns() - t0) / 1000;
    loadgen_hist_add(&w->st.lat[op], us);
    if (r->trace != NULL)
        trace_op(w, op, us, rc, late_us);
    w->st.count[op]++;
    w->st.ok[op] += rc >= 200 && rc < 300;
    if (op == OP_BET && r->o.watch_shard >= 0) {
        struct group_stats *g = &w->st.grp[group_of(r, u)];

        loadgen_hist_add(&g->lat, us);
        g->count++;
        g->acked += acked;
        g->errors += !acked && rc != 422;
    }
}

static enum op pick_op(struct worker *w)
{
    const struct opts *o = &w->run->o;
    unsigned x = (unsigned)(rng_next(&w->rng) % o->mix_total);

    for (unsigned i = 0; i < NOP; i++) {
        if (x < o->mix[i])
            return (enum op)i;
        x -= o->mix[i];
    }
    return OP_ODDS;
}

/* Worker t of nt serves users ready[t], ready[t + nt], ... and, in open loop,
 * the slots t, t + nt, ... of a global schedule with one slot every 1/rate s. */
static void *phase2_main(void *arg)
{
    struct worker *w = arg;
    struct run *r = w->run;
    size_t nt = r->nready < r->nworker ? r->nready : r->nworker, ui = w->id;
    double slot_ns = r->o.rate > 0 ? 1e9 / (double)r->o.rate : 0;

    w->counting = 1;
    for (uint64_t k = 0; !stop_issuing(r); k++) {
        uint64_t due = loadgen_now_ns();

        if (slot_ns > 0) {
            uint64_t t = r->start_ns + (uint64_t)((double)(k * nt + w->id) * slot_ns);

            if (t >= r->end_ns || loadgen_sleep_until(t, stop_issuing, r) < 0)
                break;
            if (due > t && (due - t) / 1000 > w->st.lag_max_us)
                w->st.lag_max_us = (due - t) / 1000;
            due = t;
        }
        do_op(w, pick_op(w), &r->users[r->ready[ui]], due);
        ui = ui + nt < r->nready ? ui + nt : w->id;
    }
    w->counting = 0;
    atomic_fetch_add(&r->nfinished, 1);
    return NULL;
}

/* ---- matches ---- */

static int parse_kickoff(const char *s, time_t *out)
{
    struct tm tm = {0};

    if (s == NULL || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d", &tm.tm_year, &tm.tm_mon,
                            &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec) != 6)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    *out = timegm(&tm);
    return 0;
}

static int add_match(struct run *r, const char *id)
{
    char **m;

    if (r->nmatch == MAX_MATCHES)
        return 0;
    if ((m = realloc(r->matches, (r->nmatch + 1) * sizeof(*m))) == NULL)
        return -1;
    r->matches = m;
    if ((m[r->nmatch] = strdup(id)) == NULL)
        return -1;
    r->nmatch++;
    return 0;
}

/* Scheduled matches whose kickoff is still ahead, through worker w. */
static int fetch_matches(struct run *r, struct worker *w, const char *token)
{
    char path[512], *cur = NULL;
    time_t now = time(NULL), ko;
    int rc = 0;

    for (int page = 0; page < 20 && rc == 0; page++) {
        json_t *j, *items, *it;
        const char *next;
        size_t i;

        snprintf(path, sizeof(path), "/v1/matches?status=scheduled&limit=500%s%s",
                 cur ? "&cursor=" : "", cur ? cur : "");
        curl_free(cur);
        cur = NULL;
        rc = loadgen_http_retry(w, path, NULL, token, NULL, 1, NULL);
        if (rc != 200) {
            loadgen_describe(w, rc, path, sizeof(path));
            fprintf(stderr, "loadgen: GET /v1/matches: %s\n", path);
            return -1;
        }
        j = json_loadb(w->buf, w->len, 0, NULL);
        items = json_object_get(j, "items");
        json_array_foreach(items, i, it)
        {
            const char *id = json_string_value(json_object_get(it, "id"));
            const char *k = json_string_value(json_object_get(it, "kickoff"));

            if (valid_id(id) && parse_kickoff(k, &ko) == 0 && ko > now)
                rc = add_match(r, id);
        }
        next = json_string_value(json_object_get(j, "next_cursor"));
        if (rc == 0 && next != NULL && next[0] != '\0')
            cur = curl_easy_escape(w->curl, next, 0);
        json_decref(j);
        if (cur == NULL)
            break;
    }
    curl_free(cur);
    return rc;
}

/* ---- threads and the main loop ---- */

static int run_threads(struct run *r, unsigned n, void *(*fn)(void *), int phase2)
{
    uint64_t next = loadgen_now_ns() + NS_PER_S, req0 = 0, err0 = 0;
    struct timespec tick = {0, 20 * 1000 * 1000};
    unsigned started = 0;
    int told = 0;

    atomic_store(&r->nfinished, 0);
    for (; started < n; started++) {
        if (pthread_create(&r->w[started]->tid, NULL, fn, r->w[started]) != 0) {
            fprintf(stderr, "loadgen: cannot create thread %u\n", started);
            atomic_store(&r->abort, 1);
            break;
        }
    }
    while (atomic_load(&r->nfinished) < started) {
        uint64_t now = loadgen_now_ns();
        int sig = atomic_load(&g_sigint);

        if (sig > 0 && !told) {
            told = 1;
            fprintf(stderr, "loadgen: interrupted%s\n",
                    phase2 ? "; finishing requests in flight (Ctrl-C again cuts them)"
                           : "");
            if (phase2 && r->stop_ns > now)
                r->stop_ns = now;
            if (r->hard_ns > now + GRACE_MS * NS_PER_MS)
                r->hard_ns = now + GRACE_MS * NS_PER_MS;
        }
        if (phase2 && (sig > 1 || now >= r->hard_ns))
            atomic_store(&r->abort, 1);
        if (now >= next) {
            uint64_t req = atomic_load(&r->prog_req), err = atomic_load(&r->prog_err);

            next += NS_PER_S;
            if (!phase2) {
                fprintf(stderr,
                        "loadgen: users ready %" PRIu64 "/%zu, failed %" PRIu64 "\n",
                        (uint64_t)atomic_load(&r->prog_ready), r->nusers,
                        (uint64_t)atomic_load(&r->prog_failed));
                continue;
            }
            fprintf(stderr,
                    "loadgen: %3" PRIu64 "s %9" PRIu64 " req %7" PRIu64
                    " req/s %6" PRIu64 " err/s %8" PRIu64 " bets acked\n",
                    (now - r->start_ns) / NS_PER_S, req, req - req0, err - err0,
                    (uint64_t)atomic_load(&r->prog_acked));
            req0 = req;
            err0 = err;
        }
        nanosleep(&tick, NULL);
    }
    for (unsigned i = 0; i < started; i++)
        pthread_join(r->w[i]->tid, NULL);
    return started == n ? 0 : -1;
}

/* Match ids from --match, else the scheduled matches still open for bets. */
static int load_matches(struct run *r)
{
    const char *p = r->o.match_arg;
    char id[24];

    if (r->o.mix[OP_ODDS] == 0 && r->o.mix[OP_BET] == 0)
        return 0;
    while (p != NULL) {
        size_t n = strspn(p, "0123456789");

        memcpy(id, p, n);
        id[n] = '\0';
        if (add_match(r, id) < 0)
            return -1;
        p = p[n] == ',' ? p + n + 1 : NULL;
    }
    if (r->o.match_arg == NULL &&
        fetch_matches(r, r->w[0], r->users[r->ready[0]].token) < 0)
        return -1;
    if (r->nmatch == 0) {
        fprintf(stderr, "loadgen: no scheduled match with a kickoff ahead; create one "
                        "or pass --match\n");
        return -1;
    }
    return 0;
}

/* Signs up or logs in every user; 0 when at least one is ready. */
static int phase1(struct run *r)
{
    unsigned signed_up = 0, logged_in = 0;
    const char *why = "";

    if (run_threads(r, r->nworker, phase1_main, 0) < 0)
        return -1;
    if (atomic_load(&g_sigint) > 0)
        return -1;
    for (size_t i = 0; i < r->nusers; i++) {
        if (r->users[i].token != NULL)
            r->ready[r->nready++] = i;
    }
    for (unsigned i = 0; i < r->nworker; i++) {
        signed_up += r->w[i]->signed_up;
        logged_in += r->w[i]->logged_in;
        if (why[0] == '\0')
            why = r->w[i]->why;
    }
    fprintf(stderr, "loadgen: %zu/%zu users ready (%u signed up, %u logged in)\n",
            r->nready, r->nusers, signed_up, logged_in);
    if (r->o.shard_users_k > 0)
        check_user_shards(r);
    if (r->nready < r->nusers)
        fprintf(stderr, "loadgen: %s%zu users failed; first: %s\n",
                r->nready ? "" : "no user could start: ", r->nusers - r->nready, why);
    return r->nready > 0 ? 0 : -1;
}

static void phase2(struct run *r)
{
    unsigned nt = r->nready < r->nworker ? (unsigned)r->nready : r->nworker;

    r->start_ns = loadgen_now_ns();
    r->end_ns = r->start_ns + (uint64_t)r->o.duration * NS_PER_S;
    r->stop_ns = r->end_ns;
    r->hard_ns = r->end_ns + ((uint64_t)r->o.timeout_ms + GRACE_MS) * NS_PER_MS;
    r->last_ack_ns = r->start_ns;
    for (unsigned g = 0; g < NGROUP; g++)
        r->grp_last_ns[g] = r->start_ns;
    atomic_store(&g_loading, 1);
    run_threads(r, nt, phase2_main, 1);
    atomic_store(&g_loading, 0);
    r->done_ns = loadgen_now_ns();
    if (r->stop_ns > r->done_ns)
        r->stop_ns = r->done_ns;
    /* A stall at the very end counts as a write pause too. */
    if (r->stop_ns > r->last_ack_ns && r->stop_ns - r->last_ack_ns > r->pause_max_ns)
        r->pause_max_ns = r->stop_ns - r->last_ack_ns;
    for (unsigned g = 0; g < NGROUP; g++) {
        if (r->stop_ns > r->grp_last_ns[g] &&
            r->stop_ns - r->grp_last_ns[g] > r->grp_gap_max_ns[g])
            r->grp_gap_max_ns[g] = r->stop_ns - r->grp_last_ns[g];
    }
}

static int report(struct run *r)
{
    struct stats *total = calloc(1, sizeof(*total));
    struct report rep = {.o = &r->o};
    uint64_t secs = (r->done_ns - r->start_ns + NS_PER_S - 1) / NS_PER_S;
    int rc = -1;

    if (total == NULL || (total->err_sec = calloc(r->nsec, sizeof(uint64_t))) == NULL)
        goto out;
    for (unsigned i = 0; i < r->nworker; i++)
        loadgen_stats_merge(total, &r->w[i]->st, r->nsec);
    for (unsigned i = 0; i < r->nworker; i++) {
        rep.signed_up += r->w[i]->signed_up;
        rep.logged_in += r->w[i]->logged_in;
    }
    rep.st = total;
    rep.elapsed_s = (double)(r->done_ns - r->start_ns) / 1e9;
    rep.nsec = secs < r->nsec ? secs : r->nsec;
    rep.users_ready = r->nready;
    rep.users_failed = r->nusers - r->nready;
    rep.nmatch = r->nmatch;
    rep.threads = r->nready < r->nworker ? (unsigned)r->nready : r->nworker;
    rep.pause_max_ms = (double)r->pause_max_ns / 1e6;
    for (size_t k = 0; r->o.watch_shard >= 0 && k < r->nready; k++)
        rep.grp_users[group_of(r, &r->users[r->ready[k]])]++;
    for (unsigned g = 0; g < NGROUP; g++)
        rep.grp_gap_max_ms[g] = (double)r->grp_gap_max_ns[g] / 1e6;
    rep.interrupted = atomic_load(&g_sigint) > 0;
    rc = loadgen_report(&rep);
out:
    if (total != NULL)
        free(total->err_sec);
    free(total);
    return rc;
}

int main(int argc, char **argv)
{
    struct run r;
    struct sigaction sa;
    uint64_t seed = 0;
    int rc = 1, hc;

    memset(&r, 0, sizeof(r));
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "loadgen: cannot initialise libcurl\n");
        return 1;
    }
    hc = loadgen_opts_parse(argc, argv, &r.o);
    if (hc != 0) {
        curl_global_cleanup();
        return hc > 0 ? 0 : 2;
    }
    g_run = &r;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    pthread_mutex_init(&r.acked_lock, NULL);
    if (getrandom(&seed, sizeof(seed), 0) != (ssize_t)sizeof(seed))
        seed = loadgen_now_ns() ^ ((uint64_t)getpid() << 40);
    /* Keys are unique per run, so a rerun with the same users reuses none. */
    snprintf(r.key_prefix, sizeof(r.key_prefix), "lg%012" PRIx64, seed >> 16);
    r.nusers = (size_t)r.o.users;
    r.nworker = r.o.threads < r.o.users ? (unsigned)r.o.threads : (unsigned)r.o.users;
    r.nsec = (size_t)(r.o.duration + (r.o.timeout_ms + GRACE_MS) / 1000 + 3);
    if (r.o.acked != NULL && (r.acked = fopen(r.o.acked, "w")) == NULL) {
        fprintf(stderr, "loadgen: --acked %s: %s\n", r.o.acked, strerror(errno));
        goto out;
    }
    /* Line by line: whatever stops loadgen (a second Ctrl-C, SIGKILL after a
     * SIGTERM), every acknowledged bet up to then is in the file, whole. */
    if (r.acked != NULL)
        setvbuf(r.acked, NULL, _IOLBF, 0);
    if (r.o.trace != NULL && (r.trace = fopen(r.o.trace, "w")) == NULL) {
        fprintf(stderr, "loadgen: --trace %s: %s\n", r.o.trace, strerror(errno));
        goto out;
    }
    r.users = calloc(r.nusers, sizeof(*r.users));
    r.ready = calloc(r.nusers, sizeof(*r.ready));
    r.w = calloc(r.nworker, sizeof(*r.w));
    if (r.users == NULL || r.ready == NULL || r.w == NULL)
        goto oom;
    pick_users(&r);
    for (unsigned i = 0; i < r.nworker; i++) {
        if ((r.w[i] = loadgen_worker_create(&r, i, rng_next(&seed))) == NULL)
            goto oom;
    }
    hc = loadgen_http_retry(r.w[0], "/healthz", NULL, NULL, NULL, 1, NULL);
    if (hc < 0 && atomic_load(&g_sigint) == 0) {
        fprintf(stderr, "loadgen: cannot reach %s: %s\n", r.o.base, r.w[0]->errbuf);
        goto out;
    }
    if (hc > 0 && hc != 200)
        fprintf(stderr, "loadgen: warning: GET /healthz answered HTTP %d\n", hc);
    if (atomic_load(&g_sigint) == 0 && phase1(&r) == 0 && load_matches(&r) == 0 &&
        atomic_load(&g_sigint) == 0) {
        fprintf(stderr, "loadgen: %ld s of load on %zu matches, %s\n", r.o.duration,
                r.nmatch, r.o.rate ? "open loop" : "closed loop");
        phase2(&r);
        rc = report(&r) < 0 ? 1 : 0;
    } else if (atomic_load(&g_sigint) > 0) {
        fprintf(stderr, "loadgen: interrupted before the load started\n");
    }
    goto out;
oom:
    fprintf(stderr, "loadgen: out of memory\n");
out:
    if (r.acked != NULL && fclose(r.acked) != 0) {
        fprintf(stderr, "loadgen: --acked %s: %s\n", r.o.acked, strerror(errno));
        rc = 1;
    }
    if (r.trace != NULL && trace_write(&r) < 0)
        rc = 1;
    if (r.trace != NULL && fclose(r.trace) != 0) {
        fprintf(stderr, "loadgen: --trace %s: %s\n", r.o.trace, strerror(errno));
        rc = 1;
    }
    for (unsigned i = 0; r.w != NULL && i < r.nworker; i++) {
        loadgen_worker_destroy(r.w[i]);
    }
    for (size_t i = 0; r.users != NULL && i < r.nusers; i++)
        free(r.users[i].token);
    for (size_t i = 0; i < r.nmatch; i++)
        free(r.matches[i]);
    free(r.matches);
    free(r.w);
    free(r.ready);
    free(r.users);
    pthread_mutex_destroy(&r.acked_lock);
    loadgen_opts_deinit(&r.o);
    curl_global_cleanup();
    return rc;
}
