/*
 * loadgen_http.c: a worker's HTTP client. One curl easy handle per worker
 * keeps its connection alive across requests; every attempt of phase 2 is
 * tallied here, by status, transport error and second.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tools/loadgen.h"

#define MAX_BODY (16u << 20)

uint64_t loadgen_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

int loadgen_sleep_until(uint64_t t, int (*stop)(const struct run *),
                        const struct run *r)
{
    for (;;) {
        uint64_t now = loadgen_now_ns(), step;
        struct timespec ts;

        if (stop(r))
            return -1;
        if (now >= t)
            return 0;
        step = t - now < 50 * NS_PER_MS ? t - now : 50 * NS_PER_MS;
        ts.tv_sec = (time_t)(step / NS_PER_S);
        ts.tv_nsec = (long)(step % NS_PER_S);
        nanosleep(&ts, NULL);
    }
}

static int aborted(const struct run *r)
{
    return atomic_load(&r->abort) != 0;
}

static void account(struct worker *w, int rc)
{
    struct stats *s = &w->st;
    struct run *r = w->run;
    int err;

    s->requests++;
    atomic_fetch_add_explicit(&r->prog_req, 1, memory_order_relaxed);
    if (rc < 0) {
        s->transport[-rc < CURL_LAST ? -rc : 0]++;
        err = 1;
    } else {
        s->status[rc < NSTATUS ? rc : 0]++;
        /* A 422 to a bet is the game saying no (balance, closed), not a fault. */
        err = rc >= 400 && !(rc == 422 && w->cur_op == OP_BET);
    }
    if (err) {
        uint64_t sec = (loadgen_now_ns() - r->start_ns) / NS_PER_S;

        s->err_sec[sec < r->nsec ? sec : r->nsec - 1]++;
        atomic_fetch_add_explicit(&r->prog_err, 1, memory_order_relaxed);
    }
}

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    struct worker *w = arg; /* ref */
    size_t len = size * n, cap = w->cap;
    char *b;

    if (w->len + len + 1 > cap) {
        while (cap < w->len + len + 1)
            cap *= 2;
        if (cap > MAX_BODY || (b = realloc(w->buf, cap)) == NULL)
            return 0;
        w->buf = b;
        w->cap = cap;
    }
    memcpy(w->buf + w->len, p, len);
    w->len += len;
    w->buf[w->len] = '\0';
    return len;
}

static int on_progress(void *arg, curl_off_t a, curl_off_t b, curl_off_t c,
                       curl_off_t d)
{
    struct worker *w = arg; /* ref */

    (void)a, (void)b, (void)c, (void)d;
    return atomic_load(&w->run->abort) ? 1 : 0;
}

static int hdr_add(struct curl_slist **h, const char *line)
{
    struct curl_slist *t = curl_slist_append(*h, line);

    if (t == NULL)
        return -1;
    *h = t;
    return 0;
}

int loadgen_http(struct worker *w, const char *path, const char *body,
                 const char *token, const char *idem)
{
    struct curl_slist *h = NULL;
    char url[512], line[MAX_TOKEN + 32];
    long status = 0, nconn = 0;
    char *ip = NULL;
    int rc;

    snprintf(url, sizeof(url), "%s%s", w->run->o.base, path);
    curl_easy_setopt(w->curl, CURLOPT_URL, url);
    if (body != NULL) {
        curl_easy_setopt(w->curl, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(w->curl, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    } else {
        curl_easy_setopt(w->curl, CURLOPT_HTTPGET, 1L);
    }
    rc = hdr_add(&h, "Expect:");
    if (rc == 0 && body != NULL)
        rc = hdr_add(&h, "Content-Type: application/json");
    if (rc == 0 && token != NULL) {
        snprintf(line, sizeof(line), "Authorization: Bearer %s", token);
        rc = hdr_add(&h, line);
    }
    if (rc == 0 && idem != NULL) {
        snprintf(line, sizeof(line), "Idempotency-Key: %s", idem);
        rc = hdr_add(&h, line);
    }
    w->len = 0;
    w->buf[0] = '\0';
    w->errbuf[0] = '\0';
    if (rc < 0) {
        rc = -CURLE_OUT_OF_MEMORY;
        goto out;
    }
    curl_easy_setopt(w->curl, CURLOPT_HTTPHEADER, h);
    rc = -(int)curl_easy_perform(w->curl);
    curl_easy_setopt(w->curl, CURLOPT_HTTPHEADER, NULL);
    if (rc < 0)
        goto out;
    /* Belt and braces for the loopback policy: check where each new
     * connection actually went. */
    curl_easy_getinfo(w->curl, CURLINFO_NUM_CONNECTS, &nconn);
    curl_easy_getinfo(w->curl, CURLINFO_PRIMARY_IP, &ip);
    if (nconn > 0 && (ip == NULL || !loadgen_is_loopback(ip))) {
        fprintf(stderr, "loadgen: connected to %s, not loopback; stopping\n",
                ip ? ip : "?");
        atomic_store(&w->run->abort, 1);
        rc = -CURLE_COULDNT_CONNECT;
        goto out;
    }
    curl_easy_getinfo(w->curl, CURLINFO_RESPONSE_CODE, &status);
    rc = (int)status;
out:
    curl_slist_free_all(h);
    if (w->counting)
        account(w, rc);
    return rc;
}

int loadgen_http_retry(struct worker *w, const char *path, const char *body,
                       const char *token, const char *idem, int busy_too,
                       unsigned *nretry)
{
    for (unsigned a = 0;; a++) {
        int rc = loadgen_http(w, path, body, token, idem);
        int busy = busy_too && (rc == 429 || rc == 503);
        /* A busy server (its hash queue, its limits) is waited out longer. */
        unsigned limit = busy ? BUSY_RETRIES : BET_RETRIES;

        if ((rc >= 0 && !busy) || a >= limit || atomic_load(&w->run->abort) ||
            loadgen_sleep_until(loadgen_now_ns() + (100 * NS_PER_MS << (a < 3 ? a : 3)),
                                aborted, w->run) < 0) {
            if (nretry != NULL)
                *nretry = a;
            return rc;
        }
    }
}

void loadgen_error_code(const struct worker *w, char *out, size_t len, char *msg,
                        size_t msglen)
{
    json_t *j = json_loadb(w->buf, w->len, 0, NULL);
    json_t *e = json_object_get(j, "error");
    const char *c = json_string_value(json_object_get(e, "code"));
    const char *m = json_string_value(json_object_get(e, "message"));

    snprintf(out, len, "%s", c ? c : "");
    if (msg != NULL)
        snprintf(msg, msglen, "%s", m ? m : "");
    json_decref(j);
}

void loadgen_describe(const struct worker *w, int rc, char *out, size_t len)
{
    char code[48], msg[160];

    if (rc < 0) {
        snprintf(out, len, "%s", w->errbuf[0] ? w->errbuf : curl_easy_strerror(-rc));
        return;
    }
    loadgen_error_code(w, code, sizeof(code), msg, sizeof(msg));
    snprintf(out, len, "HTTP %d%s%s%s%s", rc, code[0] ? " " : "", code,
             msg[0] ? ": " : "", msg);
}

struct worker *loadgen_worker_create(struct run *r, unsigned id, uint64_t seed)
{
    struct worker *w = calloc(1, sizeof(*w));

    if (w == NULL)
        return NULL;
    w->run = r;
    w->id = id;
    w->rng = seed ^ ((uint64_t)id << 32);
    w->cap = 4096;
    w->buf = malloc(w->cap);
    w->st.err_sec = calloc(r->nsec, sizeof(uint64_t));
    w->curl = curl_easy_init();
    if (w->buf == NULL || w->st.err_sec == NULL || w->curl == NULL) {
        curl_easy_cleanup(w->curl);
        free(w->st.err_sec);
        free(w->buf);
        free(w);
        return NULL;
    }
    curl_easy_setopt(w->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(w->curl, CURLOPT_TIMEOUT_MS, r->o.timeout_ms);
    curl_easy_setopt(w->curl, CURLOPT_NOPROXY, "*"); /* never leave loopback */
    curl_easy_setopt(w->curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(w->curl, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(w->curl, CURLOPT_USERAGENT, "betcity-loadgen/1");
    curl_easy_setopt(w->curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(w->curl, CURLOPT_WRITEDATA, w);
    curl_easy_setopt(w->curl, CURLOPT_ERRORBUFFER, w->errbuf);
    curl_easy_setopt(w->curl, CURLOPT_XFERINFODATA, w);
    curl_easy_setopt(w->curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(w->curl, CURLOPT_XFERINFOFUNCTION, on_progress);
    return w;
}

void loadgen_worker_destroy(struct worker *w)
{
    if (w == NULL)
        return;
    curl_easy_cleanup(w->curl);
    free(w->st.err_sec);
    free(w->buf);
    free(w->trace);
    free(w);
}
