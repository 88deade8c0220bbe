/*
 * api_limit.c: token buckets for logins and signups (and a request's check
 * of one, api_rate_check()), the networks the server trusts (proxies,
 * metrics scrapers), and the keys of api_conf_set().
 *
 * A table holds a fixed number of buckets, found by a keyed hash of their
 * key (an address or an e-mail) in a window of PROBE slots. A key not in its
 * window takes an empty slot or evicts the bucket of the window that was
 * used longest ago: memory stays bounded whatever the number of keys, and an
 * evicted key starts again with a full bucket (as it would after resting).
 * One lock per table: logins and signups are few next to the hash they
 * cost, and a take holds it for a few hundred nanoseconds.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "api/api_int.h"

#define PROBE 8

struct bucket {
    uint64_t key; /* keyed hash of the key; 0: empty */
    double tokens;
    int64_t at_us; /* when tokens was last brought up to date */
};

struct api_limit {
    struct api_rate rate;
    uint32_t size;
    unsigned char hash_key[crypto_shorthash_KEYBYTES];
    pthread_mutex_t lock;
    struct bucket *slot; /* size of them */
};

int api_limit_create(const struct api_rate *rate, uint32_t size, struct api_limit **out)
{
    struct api_limit *l;

    if (size < PROBE)
        size = PROBE;
    l = calloc(1, sizeof(*l));
    if (l == NULL)
        return -ENOMEM;
    l->slot = calloc(size, sizeof(*l->slot));
    if (l->slot == NULL) {
        free(l);
        return -ENOMEM;
    }
    l->rate = *rate;
    l->size = size;
    crypto_shorthash_keygen(l->hash_key);
    pthread_mutex_init(&l->lock, NULL);
    *out = l;
    return 0;
}

void api_limit_destroy(struct api_limit *l)
{
    if (l == NULL)
        return;
    pthread_mutex_destroy(&l->lock);
    free(l->slot);
    free(l);
}

static uint64_t key_hash(const struct api_limit *l, const char *key)
{
    unsigned char h[crypto_shorthash_BYTES];
    uint64_t v;

    crypto_shorthash(h, (const unsigned char *)key, strlen(key), l->hash_key);
    memcpy(&v, h, sizeof(v));
    return v != 0 ? v : 1;
}

/* The key's bucket, brought up to now; found or made (evicting). Under lock. */
static struct bucket *bucket_get(struct api_limit *l, const char *key, int64_t now_us)
{
    uint64_t h = key_hash(l, key);
    struct bucket *victim = NULL, *b;

    for (uint32_t i = 0; i < PROBE; i++) {
        b = &l->slot[(h + i) % l->size];
        if (b->key == h) {
            double dt = (double)(now_us - b->at_us) / 1e6;
            if (dt > 0)
                b->tokens = fmin((double)l->rate.burst, b->tokens + dt * l->rate.per_s);
            b->at_us = now_us;
            return b;
        }
        if (victim == NULL || b->key == 0 ||
            (victim->key != 0 && b->at_us < victim->at_us))
            victim = b;
    }
    victim->key = h;
    victim->tokens = (double)l->rate.burst;
    victim->at_us = now_us;
    return victim;
}

int api_limit_take(struct api_limit *l, const char *key, int64_t now_us,
                   uint32_t *retry_s)
{
    struct bucket *b;
    int rc = 0;

    if (l->rate.burst == 0)
        return 0; /* limit off */
    pthread_mutex_lock(&l->lock);
    b = bucket_get(l, key, now_us);
    if (b->tokens >= 1.0) {
        b->tokens -= 1.0;
    } else {
        rc = -EAGAIN;
        /* When the next token is there: whole seconds, at least one. */
        double wait = l->rate.per_s > 0 ? (1.0 - b->tokens) / l->rate.per_s : 3600;
        *retry_s = (uint32_t)fmin(3600, fmax(1, ceil(wait)));
    }
    pthread_mutex_unlock(&l->lock);
    return rc;
}

void api_limit_give(struct api_limit *l, const char *key, int64_t now_us)
{
    struct bucket *b;

    if (l->rate.burst == 0)
        return;
    pthread_mutex_lock(&l->lock);
    b = bucket_get(l, key, now_us);
    b->tokens = fmin((double)l->rate.burst, b->tokens + 1.0);
    pthread_mutex_unlock(&l->lock);
}

int api_net_match(const struct api_nets *nets, uint32_t addr)
{
    for (int i = 0; i < nets->n; i++)
        if ((addr & nets->net[i].mask) == nets->net[i].addr)
            return 1;
    return 0;
}

/* "10.0.0.0/8,127.0.0.1" (IPv4 addresses or networks; "" none) into nets. */
static int nets_parse(const char *key, const char *text, struct api_nets *nets,
                      char *err, size_t errsize)
{
    struct api_nets parsed;
    char buf[512];
    int count = 0;

    if (strlen(text) >= sizeof(buf)) {
        snprintf(err, errsize, "%s: the list is longer than %zu characters", key,
                 sizeof(buf) - 1);
        return -EINVAL;
    }
    snprintf(buf, sizeof(buf), "%s", text);
    /* An empty value is an empty list: no address at all. */
    for (char *tok = buf + strspn(buf, " "); *tok != '\0';) {
        char *comma = strchr(tok, ','), *slash, *end;
        unsigned long bits = 32;
        struct in_addr a;
        size_t len;

        if (comma != NULL)
            *comma = '\0';
        tok += strspn(tok, " ");
        len = strlen(tok);
        while (len > 0 && tok[len - 1] == ' ')
            tok[--len] = '\0';
        if (len == 0) {
            snprintf(err, errsize, "%s: '%s': an empty item in the list", key, text);
            return -EINVAL;
        }
        slash = strchr(tok, '/');
        if (slash != NULL) {
            *slash = '\0';
            bits = strtoul(slash + 1, &end, 10);
            if (slash[1] < '0' || slash[1] > '9' || *end != '\0' || bits > 32) {
                snprintf(err, errsize, "%s: '%s/%s': the prefix length wants 0..32",
                         key, tok, slash + 1);
                return -EINVAL;
            }
        }
        if (inet_pton(AF_INET, tok, &a) != 1) {
            snprintf(err, errsize, "%s: '%s' is not an IPv4 address", key, tok);
            return -EINVAL;
        }
        if (count == API_MAX_NETS) {
            snprintf(err, errsize, "%s: more than %d networks", key, API_MAX_NETS);
            return -EINVAL;
        }
        parsed.net[count].mask = bits == 0 ? 0 : htonl(~0u << (32 - bits));
        parsed.net[count].addr = a.s_addr & parsed.net[count].mask;
        count++;
        if (comma == NULL)
            break;
        tok = comma + 1;
        if (*tok == '\0') {
            snprintf(err, errsize, "%s: '%s': an empty item in the list", key, text);
            return -EINVAL;
        }
    }
    parsed.n = count;
    *nets = parsed; /* a list with an error changes nothing */
    return 0;
}

/* The keys of api_conf_set(): name, kind, field, lowest, highest, meaning. */
enum key_kind { K_RATE, K_BURST, K_U32, K_NETS };
#define L(f) offsetof(struct api_limits, f)
static const struct conf_key {
    const char *name;
    enum key_kind kind;
    size_t off;
    double lo, hi;
    const char *help;
} keys[] = {
    {"login_addr_rate", K_RATE, L(login_addr), 0, 1e6,
     "logins per second per client address"},
    {"login_addr_burst", K_BURST, L(login_addr), 0, 1e6,
     "logins at once per address (0: off)"},
    {"signup_addr_rate", K_RATE, L(signup_addr), 0, 1e6,
     "signups per second per client address"},
    {"signup_addr_burst", K_BURST, L(signup_addr), 0, 1e6,
     "signups at once per address (0: off)"},
    {"account_rate", K_RATE, L(account), 0, 1e6,
     "failed logins and signups per second per e-mail"},
    {"account_burst", K_BURST, L(account), 0, 1e6,
     "of them at once per e-mail (0: off)"},
    {"device_rate", K_RATE, L(device), 0, 1e6,
     "logins per second per account from its known devices (a device token), "
     "failed or not; they skip the account's bucket"},
    {"device_burst", K_BURST, L(device), 0, 1e6,
     "of them at once per account (0: off)"},
    {"device_ttl_days", K_U32, L(device_ttl_days), 1, 3650,
     "days a device token (given at each login and sign-up) stays valid"},
    {"limit_table_size", K_U32, L(table_size), 64, 1 << 24, "buckets per table"},
    {"hash_threads", K_U32, L(hash_threads), 1, 64, "password-hash threads"},
    {"hash_queue", K_U32, L(hash_queue), 1, 65536, "hashes queued or running, at most"},
    {"hash_known", K_U32, L(hash_known), 0, 65536,
     "more places, for the logins of known devices only, whose hashes run first "
     "(0: none, they queue with the others)"},
    {"hash_per_addr", K_U32, L(hash_per_addr), 1, 65536,
     "of them for one client address, at most"},
    {"hash_max_wait_ms", K_U32, L(hash_max_wait_ms), 1, 600000,
     "a hash is refused (503) when its expected wait is longer"},
    {"auth_refusal_delay_ms", K_U32, L(auth_refusal_delay_ms), 0, 60000,
     "a login or sign-up answered 429 or 503 (a bucket, the hash queue full, a "
     "database that cannot answer) gets its answer this late: a flooding "
     "connection then sends one a delay (0: at once)"},
    {"auth_refusal_held", K_U32, L(auth_refusal_held), 1, 1 << 20,
     "refusals waiting at once, at most; beyond, they are answered at once"},
    {"hash_nice", K_U32, L(hash_nice), 0, 19,
     "added to the nice value of the password-hash threads: on CPUs they share, "
     "the event loops and workers go first (a flood of logins slows the logins, "
     "not the other requests)"},
    {"work_queue", K_U32, L(work_queue), 1, 1 << 20,
     "requests queued or running on the workers; more are refused (503)"},
    {"work_per_user", K_U32, L(work_per_user), 0, 1 << 20,
     "a signed-in user's writes queued or running at once; the next wait (0: any)"},
    {"work_parked_per_user", K_U32, L(work_parked_per_user), 0, 1 << 20,
     "of a signed-in user's writes, those waiting behind work_per_user at once; "
     "more are refused (429) (0: any)"},
    {"loop_reads", K_U32, L(loop_reads), 0, 1,
     "1: GET /v1/me reads on the event loops when a connection is idle; 0: on a "
     "worker"},
    {"read_batch", K_U32, L(read_batch), 1, API_READ_BATCH_MAX,
     "primary-key reads on the event loops (GET /v1/me) that one turn of a loop "
     "starts on the same host go as one statement of at most this many reads "
     "(1: each read alone): the host spends less CPU a read under load"},
    {"settle_pause_pct", K_U32, L(settle_pause_pct), 0, 400,
     "after each settlement batch, its host's thread pauses this share (%) of the "
     "batch's time: the settlement takes longer, requests meanwhile wait less for "
     "the databases' CPU"},
    {"settle_batches", K_U32, L(settle_batches), 0, 64,
     "settlement batches this server runs at once, over all its hosts and jobs (0: "
     "one per host of each job): fewer leave hosts that share CPUs more of them for "
     "requests, and the settlement takes longer"},
    {"settle_batch_bets", K_U32, L(settle_batch_bets), 1, 100000,
     "bets one settlement transaction takes at most: fewer make shorter statements, "
     "which leave requests on CPUs the hosts share less to wait for, and a longer "
     "settlement"},
    {"background_nice", K_U32, L(background_nice), 0, 19,
     "added to the nice value of the server's background threads (settlements, "
     "the standings' recomputation, purges): on CPUs they share, the event loops "
     "and workers go first"},
    {"background_hosts", K_U32, L(background_hosts), 0, 64,
     "hosts a scatter of the server's background work (the standings' "
     "recomputation, the settlements' counts) asks at once (0: all): 1 leaves "
     "hosts that share CPUs all but one scan at a time, and the scatter takes "
     "about the sum of the hosts' times"},
    {"background_cores_pct", K_U32, L(background_cores_pct), 0, 400,
     "hosts on one machine (the same @@hostname) share its cores: their background "
     "statements (settlement batches, the settlements' counts) take at most this "
     "share (%) of its cores (@@thread_pool_size) at once; below one core, one at "
     "a time for that share of the time (0: no limit); a host alone on its "
     "machine is not slowed"},
    {"standings_per_core", K_U32, L(standings_per_core), 0, 1,
     "1: the standings' recomputation that ends a settlement scans as many hosts "
     "of a machine at once as it has cores; 0: at the settlement batches' share "
     "(background_cores_pct): requests on the cores the hosts share wait less "
     "meanwhile, and the standings show the settlement later"},
    {"background_idle", K_U32, L(background_idle), 0, 1,
     "1: a background connection to a host on this machine gets its MariaDB "
     "thread under SCHED_IDLE, where that is safe (the host's thread_cache_size "
     "0, this process allowed): requests' threads take a core from its batches at "
     "once; 0: never"},
    {"loop_bets", K_U32, L(loop_bets), 0, 1,
     "1: POST /v1/bets runs its statement on the event loops when a connection is "
     "idle and the match is in the near-cache; 0: on a worker"},
    {"loop_batch_wakes", K_U32, L(loop_batch_wakes), 0, 1000000,
     "an event loop woken this many times a second or more, with none of its "
     "connections waiting for an answer, runs under Linux's SCHED_BATCH policy "
     "until it is woken less than a quarter as often: a socket's wake-up then "
     "does not preempt the thread on its CPU, and the loop takes what came "
     "meanwhile at that thread's next turn; on CPUs shared with HAProxy, the "
     "loops and HAProxy wake fewer times a request (0: never)"},
    {"conn_per_addr", K_U32, L(conn_per_addr), 1, 1 << 20,
     "connections per client address (trusted proxies apart)"},
    {"header_timeout_ms", K_U32, L(header_timeout_ms), 100, 600000,
     "from connect to a request's complete headers"},
    {"body_timeout_ms", K_U32, L(body_timeout_ms), 100, 600000,
     "from the headers to the complete body"},
    {"idle_timeout_ms", K_U32, L(idle_timeout_ms), 100, 600000,
     "from a response to the next request's complete headers"},
    {"stop_drain_ms", K_U32, L(stop_drain_ms), 0, 600000,
     "on SIGTERM, how long the server answers /readyz 503 (and closes each "
     "connection after its answer) before it stops accepting: a proxy's health "
     "checks take it out meanwhile, so no request meets a closed port"},
    {"trusted_proxies", K_NETS, L(trusted), 0, 0,
     "proxies whose X-Forwarded-For names the client (IPv4[/bits],...)"},
    {"metrics_from", K_NETS, L(metrics_from), 0, 0,
     "who may GET /metrics, directly (not through a proxy)"},
};
#undef L

static void nets_print(FILE *out, const struct api_nets *nets)
{
    char text[API_MAX_NETS * 20] = "";
    size_t len = 0;

    for (int i = 0; i < nets->n; i++) {
        char a[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &nets->net[i].addr, a, sizeof(a));
        len += (size_t)snprintf(text + len, sizeof(text) - len, "%s%s/%d", i ? "," : "",
                                a, __builtin_popcount(nets->net[i].mask));
    }
    fprintf(out, "%-14s", text);
}

void api_conf_keys(FILE *out)
{
    struct api_conf conf;
    int width = 0;

    api_conf_init(&conf);
    /* The defaults in one column, however long the longest key. */
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        if ((int)strlen(keys[i].name) > width)
            width = (int)strlen(keys[i].name);
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        const char *p = (const char *)&conf.limits + keys[i].off;
        fprintf(out, "  %-*s ", width, keys[i].name);
        switch (keys[i].kind) {
        case K_RATE:
            fprintf(out, "%-14g", ((const struct api_rate *)p)->per_s);
            break;
        case K_BURST:
            fprintf(out, "%-14u", ((const struct api_rate *)p)->burst);
            break;
        case K_U32:
            fprintf(out, "%-14u", *(const uint32_t *)p);
            break;
        case K_NETS:
            nets_print(out, (const struct api_nets *)p);
            break;
        }
        fprintf(out, " %s\n", keys[i].help);
    }
}

int api_conf_set(struct api_conf *conf, const char *key, const char *value, char *err,
                 size_t errsize)
{
    const struct conf_key *k = NULL;
    char *p, *end;
    double v;

    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        if (strcmp(keys[i].name, key) == 0)
            k = &keys[i];
    if (k == NULL) {
        snprintf(err, errsize, "unknown key '%s' (betcity-api --help lists them)", key);
        return -EINVAL;
    }
    p = (char *)&conf->limits + k->off;
    if (k->kind == K_NETS)
        return nets_parse(key, value, (struct api_nets *)p, err, errsize);
    /* Decimal only: strtod() would also take 0x10, inf and nan. */
    v = strtod(value, &end);
    if (value[0] == '\0' || *end != '\0' ||
        strspn(value, "0123456789.") != strlen(value) || !(v >= k->lo && v <= k->hi) ||
        (k->kind != K_RATE && v != floor(v))) {
        snprintf(err, errsize, "%s: '%s': wants %s from %.15g to %.15g", key, value,
                 k->kind == K_RATE ? "a decimal number" : "a whole number", k->lo,
                 k->hi);
        return -EINVAL;
    }
    if (k->kind == K_RATE)
        ((struct api_rate *)p)->per_s = v;
    else if (k->kind == K_BURST)
        ((struct api_rate *)p)->burst = (uint32_t)v;
    else
        *(uint32_t *)p = (uint32_t)v;
    return 0;
}

void api_limits_init(struct api_limits *l)
{
    char err[128];
    int rc;

    memset(l, 0, sizeof(*l));
    l->login_addr = (struct api_rate){20, 200};
    l->signup_addr = (struct api_rate){10, 200};
    l->account = (struct api_rate){0.1, 10};
    l->device = (struct api_rate){0.1, 10};
    l->device_ttl_days = 180;
    l->table_size = 16384;
    l->hash_threads = 2;
    l->hash_queue = 64;
    l->hash_known = 16;
    l->hash_per_addr = 2;
    l->hash_max_wait_ms = 500;
    l->hash_nice = 10;
    l->auth_refusal_delay_ms = 500;
    l->auth_refusal_held = 4096;
    l->work_queue = 1024;
    l->work_per_user = 4;
    l->work_parked_per_user = 16;
    l->loop_reads = 1;
    l->loop_bets = 1;
    l->loop_batch_wakes = 1000;
    l->read_batch = 16;
    l->background_nice = 10;
    l->settle_batch_bets = API_SETTLE_BATCH_BETS;
    l->background_cores_pct = 50;
    l->background_idle = 1;
    l->standings_per_core = 1;
    l->conn_per_addr = 64;
    l->header_timeout_ms = 800;
    /* Below HAProxy's 10 s timeout server, so that its 408 gets through. */
    l->body_timeout_ms = 8000;
    l->idle_timeout_ms = 15000;
    l->stop_drain_ms = 2500;
    rc = nets_parse("trusted_proxies", "127.0.0.1", &l->trusted, err, sizeof(err));
    if (rc == 0)
        rc = nets_parse("metrics_from", "127.0.0.0/8", &l->metrics_from, err,
                        sizeof(err));
    if (rc != 0)
        abort(); /* the defaults above are constant text */
}

int api_rate_check(struct api_req *req, const char *which, const char *key)
{
    struct api_limit *l = api_server_bucket(req->srv, which);
    struct api_limit *account = api_server_bucket(req->srv, "account");
    uint32_t retry_s = 1;

    if (api_limit_take(l, key, api_now_us(), &retry_s) == 0) {
        if (l == account) {
            free(req->account);
            req->account = strdup(key); /* NULL: the token is not given back */
        }
        return 0;
    }
    api_add_header(req, "Retry-After", "%u", retry_s);
    api_error(req, 429, "rate_limited", "too many attempts %s; try again in %u s",
              l == account                                 ? "for this account"
              : l == api_server_bucket(req->srv, "device") ? "from this device"
                                                           : "from your address",
              retry_s);
    return -EAGAIN;
}

void api_rate_refund(struct api_req *req)
{
    if (req->account == NULL)
        return;
    api_limit_give(api_server_bucket(req->srv, "account"), req->account, api_now_us());
    free(req->account);
    req->account = NULL;
}
