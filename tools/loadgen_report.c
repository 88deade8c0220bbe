/*
 * loadgen_report.c: latency histograms, merging the workers' counters, and
 * the final report (a table, or one JSON object for scripts).
 *
 * Histograms have fixed log buckets, so recording is O(1) without allocation
 * and percentiles never sort samples; a percentile is the upper edge of its
 * bucket (within about 3%), capped at the exact maximum.
 */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "tools/loadgen.h"

static unsigned hist_index(uint64_t v)
{
    unsigned e, idx;

    if (v < 2 * HIST_SUB)
        return (unsigned)v;
    e = 63 - (unsigned)__builtin_clzll(v) - 5; /* v >> e is in [32, 64) */
    idx = (e + 1) * HIST_SUB + (unsigned)((v >> e) - HIST_SUB);
    return idx < HIST_NBUCKET ? idx : HIST_NBUCKET - 1;
}

static uint64_t hist_upper(unsigned idx)
{
    unsigned e;

    if (idx < 2 * HIST_SUB)
        return idx;
    e = idx / HIST_SUB - 1;
    return ((uint64_t)(idx % HIST_SUB + HIST_SUB + 1) << e) - 1;
}

void loadgen_hist_add(struct hist *h, uint64_t us)
{
    h->b[hist_index(us)]++;
    h->n++;
    if (us > h->max_us)
        h->max_us = us;
}

/* The value in ms at or below which permille/1000 of the samples lie. */
static double hist_pct_ms(const struct hist *h, unsigned permille)
{
    uint64_t want = (h->n * permille + 999) / 1000, seen = 0;

    if (want == 0)
        want = 1;
    for (unsigned i = 0; i < HIST_NBUCKET && h->n > 0; i++) {
        seen += h->b[i];
        if (seen >= want) {
            uint64_t v = hist_upper(i);

            return (double)(v < h->max_us ? v : h->max_us) / 1000.0;
        }
    }
    return (double)h->max_us / 1000.0;
}

void loadgen_count_reject(struct stats *s, const char *code)
{
    for (unsigned i = 0; i < s->nrej; i++) {
        if (strcmp(s->rej[i].code, code) == 0) {
            s->rej[i].n++;
            return;
        }
    }
    if (s->nrej == MAX_CODES || code[0] == '\0' ||
        strlen(code) >= sizeof(s->rej[0].code)) {
        s->rej_other++;
        return;
    }
    strcpy(s->rej[s->nrej].code, code);
    s->rej[s->nrej++].n = 1;
}

static void hist_merge(struct hist *d, const struct hist *s)
{
    for (unsigned i = 0; i < HIST_NBUCKET; i++)
        d->b[i] += s->b[i];
    d->n += s->n;
    d->max_us = s->max_us > d->max_us ? s->max_us : d->max_us;
}

void loadgen_stats_merge(struct stats *dst, const struct stats *src, size_t nsec)
{
    for (unsigned op = 0; op < NOP; op++) {
        hist_merge(&dst->lat[op], &src->lat[op]);
        dst->count[op] += src->count[op];
        dst->ok[op] += src->ok[op];
    }
    for (unsigned g = 0; g < NGROUP; g++) {
        hist_merge(&dst->grp[g].lat, &src->grp[g].lat);
        dst->grp[g].count += src->grp[g].count;
        dst->grp[g].acked += src->grp[g].acked;
        dst->grp[g].errors += src->grp[g].errors;
    }
    dst->requests += src->requests;
    for (unsigned i = 0; i < NSTATUS; i++)
        dst->status[i] += src->status[i];
    for (unsigned i = 0; i < CURL_LAST; i++)
        dst->transport[i] += src->transport[i];
    for (size_t i = 0; i < nsec; i++)
        dst->err_sec[i] += src->err_sec[i];
    dst->acked += src->acked;
    dst->acked_after_retry += src->acked_after_retry;
    dst->retries += src->retries;
    dst->unknown += src->unknown;
    dst->ok_max_us = src->ok_max_us > dst->ok_max_us ? src->ok_max_us : dst->ok_max_us;
    dst->lag_max_us =
        src->lag_max_us > dst->lag_max_us ? src->lag_max_us : dst->lag_max_us;
    for (unsigned i = 0; i < src->nrej; i++) {
        for (uint64_t k = 0; k < src->rej[i].n; k++)
            loadgen_count_reject(dst, src->rej[i].code);
    }
    dst->rej_other += src->rej_other;
}

static const char *transport_name(unsigned code)
{
    switch (code) {
    case CURLE_OPERATION_TIMEDOUT:
        return "timeout";
    case CURLE_COULDNT_CONNECT:
        return "connect";
    case CURLE_GOT_NOTHING:
        return "empty_reply";
    case CURLE_RECV_ERROR:
        return "recv";
    case CURLE_SEND_ERROR:
        return "send";
    case CURLE_ABORTED_BY_CALLBACK:
        return "aborted";
    case CURLE_PARTIAL_FILE:
        return "partial_body";
    case CURLE_WEIRD_SERVER_REPLY:
        return "bad_reply";
    default:
        return NULL;
    }
}

static double ms3(double ms) /* three decimals are plenty; ms >= 0 */
{
    return (double)(uint64_t)(ms * 1000.0 + 0.5) / 1000.0;
}

/* The bets of one --watch-shard group. */
static json_t *group_json(const struct report *rep, enum group g)
{
    const struct group_stats *gs = &rep->st->grp[g];

    return json_pack(
        "{sIsIsIsIsfsfsfsf}", "users", (json_int_t)rep->grp_users[g], "count",
        (json_int_t)gs->count, "acked", (json_int_t)gs->acked, "errors",
        (json_int_t)gs->errors, "p50_ms", ms3(hist_pct_ms(&gs->lat, 500)), "p99_ms",
        ms3(hist_pct_ms(&gs->lat, 990)), "max_ms", ms3((double)gs->lat.max_us / 1000.0),
        "max_gap_ms", ms3(rep->grp_gap_max_ms[g]));
}

/* Every aggregate, as the JSON report; the table is printed from it too. */
static json_t *build(const struct report *rep)
{
    const struct stats *st = rep->st;
    const struct opts *o = rep->o;
    json_t *j = json_object(), *ops = json_object(), *sc = json_object();
    json_t *te = json_object(), *eps = json_array(), *bets = json_object();
    json_t *rej = json_object(), *users = json_object();
    uint64_t ntransport = 0;
    char key[32];

    for (unsigned op = 0; op < NOP; op++) {
        const struct hist *h = &st->lat[op];

        if (o->mix[op] == 0)
            continue;
        json_object_set_new(
            ops, loadgen_op_names[op],
            json_pack("{sIsIsfsfsfsf}", "count", (json_int_t)st->count[op], "ok",
                      (json_int_t)st->ok[op], "p50_ms", ms3(hist_pct_ms(h, 500)),
                      "p90_ms", ms3(hist_pct_ms(h, 900)), "p99_ms",
                      ms3(hist_pct_ms(h, 990)), "max_ms",
                      ms3((double)h->max_us / 1000.0)));
    }
    for (unsigned i = 0; i < NSTATUS; i++) {
        if (st->status[i] == 0)
            continue;
        snprintf(key, sizeof(key), i ? "%u" : "other", i);
        json_object_set_new(sc, key, json_integer((json_int_t)st->status[i]));
    }
    for (unsigned i = 0; i < CURL_LAST; i++) {
        const char *name = transport_name(i);

        if (st->transport[i] == 0)
            continue;
        ntransport += st->transport[i];
        snprintf(key, sizeof(key), "curl_%u", i);
        json_object_set_new(te, name ? name : key,
                            json_integer((json_int_t)st->transport[i]));
    }
    for (size_t i = 0; i < rep->nsec; i++)
        json_array_append_new(eps, json_integer((json_int_t)st->err_sec[i]));
    for (unsigned i = 0; i < st->nrej; i++)
        json_object_set_new(rej, st->rej[i].code,
                            json_integer((json_int_t)st->rej[i].n));
    if (st->rej_other > 0)
        json_object_set_new(rej, "other", json_integer((json_int_t)st->rej_other));
    json_object_set_new(bets, "write_pause_ms_max",
                        o->mix[OP_BET] ? json_real(ms3(rep->pause_max_ms))
                                       : json_null());
    json_object_set_new(bets, "ok_max_ms",
                        json_real(ms3((double)st->ok_max_us / 1000.0)));
    json_object_set_new(bets, "acked", json_integer((json_int_t)st->acked));
    json_object_set_new(bets, "acked_after_retry",
                        json_integer((json_int_t)st->acked_after_retry));
    json_object_set_new(bets, "retries", json_integer((json_int_t)st->retries));
    json_object_set_new(bets, "unknown", json_integer((json_int_t)st->unknown));
    json_object_set_new(bets, "rejected", rej);
    json_object_set_new(users, "requested", json_integer(o->users));
    json_object_set_new(users, "ready", json_integer((json_int_t)rep->users_ready));
    json_object_set_new(users, "signed_up", json_integer((json_int_t)rep->signed_up));
    json_object_set_new(users, "logged_in", json_integer((json_int_t)rep->logged_in));
    json_object_set_new(users, "failed", json_integer((json_int_t)rep->users_failed));

    json_object_set_new(j, "duration_s", json_real(ms3(rep->elapsed_s)));
    json_object_set_new(j, "requests", json_integer((json_int_t)st->requests));
    json_object_set_new(
        j, "rps",
        json_real(rep->elapsed_s > 0 ? ms3((double)st->requests / rep->elapsed_s) : 0));
    json_object_set_new(j, "rate_target", json_integer(o->rate));
    json_object_set_new(j, "threads", json_integer(rep->threads));
    json_object_set_new(j, "matches", json_integer((json_int_t)rep->nmatch));
    json_object_set_new(j, "lag_ms_max",
                        json_real(ms3((double)st->lag_max_us / 1000.0)));
    json_object_set_new(j, "interrupted", json_boolean(rep->interrupted));
    json_object_set_new(j, "users", users);
    json_object_set_new(j, "ops", ops);
    json_object_set_new(j, "status_counts", sc);
    json_object_set_new(j, "transport_errors", json_integer((json_int_t)ntransport));
    json_object_set_new(j, "transport_errors_by_kind", te);
    json_object_set_new(j, "errors_per_second", eps);
    json_object_set_new(j, "bets_acked", json_integer((json_int_t)st->acked));
    json_object_set_new(j, "bets", bets);
    if (o->watch_shard >= 0)
        json_object_set_new(j, "watch",
                            json_pack("{sIsoso}", "shard", (json_int_t)o->watch_shard,
                                      "watched", group_json(rep, GROUP_WATCHED),
                                      "others", group_json(rep, GROUP_OTHERS)));
    return j;
}

static void print_counts(const char *title, json_t *obj)
{
    const char *k;
    json_t *v;

    printf("%-18s", title);
    if (json_object_size(obj) == 0)
        printf(" none");
    json_object_foreach(obj, k, v)
    {
        printf(" %s=%" JSON_INTEGER_FORMAT, k, json_integer_value(v));
    }
    printf("\n");
}

static void print_watch(json_t *watch)
{
    static const char *const names[NGROUP] = {"watched", "others"};
    char label[32];

    printf("%-16s %6s %8s %8s %8s %9s %9s %9s %10s\n", "bets by shard", "users",
           "count", "acked", "errors", "p50 ms", "p99 ms", "max ms", "max gap ms");
    for (unsigned g = 0; g < NGROUP; g++) {
        json_t *v = json_object_get(watch, names[g]);

        if (g == GROUP_WATCHED)
            snprintf(label, sizeof(label), "  shard %" JSON_INTEGER_FORMAT,
                     json_integer_value(json_object_get(watch, "shard")));
        else
            snprintf(label, sizeof(label), "  other shards");
        printf("%-16s %6" JSON_INTEGER_FORMAT " %8" JSON_INTEGER_FORMAT
               " %8" JSON_INTEGER_FORMAT " %8" JSON_INTEGER_FORMAT
               " %9.2f %9.2f %9.2f %10.1f\n",
               label, json_integer_value(json_object_get(v, "users")),
               json_integer_value(json_object_get(v, "count")),
               json_integer_value(json_object_get(v, "acked")),
               json_integer_value(json_object_get(v, "errors")),
               json_real_value(json_object_get(v, "p50_ms")),
               json_real_value(json_object_get(v, "p99_ms")),
               json_real_value(json_object_get(v, "max_ms")),
               json_real_value(json_object_get(v, "max_gap_ms")));
    }
}

static void print_table(const struct report *rep, json_t *j)
{
    json_t *ops = json_object_get(j, "ops"), *bets = json_object_get(j, "bets");
    json_t *eps = json_object_get(j, "errors_per_second"), *v;
    const char *name;
    size_t i;

    printf("loadgen: %.1f s%s, %" JSON_INTEGER_FORMAT " requests, %.1f req/s",
           rep->elapsed_s, rep->interrupted ? " (interrupted)" : "",
           json_integer_value(json_object_get(j, "requests")),
           json_real_value(json_object_get(j, "rps")));
    if (rep->o->rate)
        printf(" (open loop, target %ld)", rep->o->rate);
    else
        printf(" (closed loop)");
    printf(", %zu users, %u threads, %zu matches\n", rep->users_ready, rep->threads,
           rep->nmatch);
    printf("%-10s %9s %9s %9s %9s %9s %9s\n", "op", "count", "ok", "p50 ms", "p90 ms",
           "p99 ms", "max ms");
    json_object_foreach(ops, name, v)
    {
        printf("%-10s %9" JSON_INTEGER_FORMAT " %9" JSON_INTEGER_FORMAT
               " %9.2f %9.2f %9.2f %9.2f\n",
               name, json_integer_value(json_object_get(v, "count")),
               json_integer_value(json_object_get(v, "ok")),
               json_real_value(json_object_get(v, "p50_ms")),
               json_real_value(json_object_get(v, "p90_ms")),
               json_real_value(json_object_get(v, "p99_ms")),
               json_real_value(json_object_get(v, "max_ms")));
    }
    print_counts("status:", json_object_get(j, "status_counts"));
    print_counts("transport errors:", json_object_get(j, "transport_errors_by_kind"));
    printf("%-18s", "errors/s:");
    json_array_foreach(eps, i, v)
    {
        printf(" %" JSON_INTEGER_FORMAT, json_integer_value(v));
    }
    printf("\n");
    if (rep->o->mix[OP_BET]) {
        printf("bets:              acked %" JSON_INTEGER_FORMAT
               " (after a retry %" JSON_INTEGER_FORMAT
               "), unknown outcome %" JSON_INTEGER_FORMAT
               ", retries %" JSON_INTEGER_FORMAT "\n"
               "                   write pause max %.1f ms, slowest ack %.1f ms\n",
               json_integer_value(json_object_get(bets, "acked")),
               json_integer_value(json_object_get(bets, "acked_after_retry")),
               json_integer_value(json_object_get(bets, "unknown")),
               json_integer_value(json_object_get(bets, "retries")), rep->pause_max_ms,
               json_real_value(json_object_get(bets, "ok_max_ms")));
        print_counts("bets rejected:", json_object_get(bets, "rejected"));
    }
    if (json_object_get(j, "watch") != NULL)
        print_watch(json_object_get(j, "watch"));
}

int loadgen_report(const struct report *rep)
{
    json_t *j = build(rep);
    int rc = 0;

    if (rep->o->json) {
        rc = json_dumpf(j, stdout, JSON_COMPACT | JSON_REAL_PRECISION(12));
        printf("\n");
    } else {
        print_table(rep, j);
    }
    if (rep->o->rate && rep->st->lag_max_us > 100000)
        fprintf(stderr,
                "loadgen: fell up to %.0f ms behind its schedule (latencies include "
                "the wait); more --threads may help\n",
                (double)rep->st->lag_max_us / 1000.0);
    fflush(stdout);
    json_decref(j);
    return rc;
}
