/*
 * shardctl_reshard.c: shardctl's move, verify, rebalance and moves commands
 * over the move engine (reshard/), and how its events look: lines for
 * people and progress bars on stderr, or one JSON object per line (--json).
 *
 * The drill and test hook lives here, not in the library: with
 * BC_SHARDCTL_HOLD=<point> (copy, catchup, fenced, switched, cleanup) a move
 * stops at that point until SIGUSR1, or until it is killed.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "reshard/reshard.h"
#include "tools/shardctl.h"

/* ---- output ---------------------------------------------------------------------- */

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void sc_json_str(char *out, size_t size, const char *s)
{
    size_t j = 0;

    for (const char *p = s ? s : ""; *p && j + 7 < size; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch == '"' || ch == '\\') {
            out[j++] = '\\';
            out[j++] = (char)ch;
        } else if (ch < 0x20) {
            j += (size_t)snprintf(out + j, size - j, "\\u%04x", ch);
        } else {
            out[j++] = (char)ch;
        }
    }
    out[j] = '\0';
}

/* {"event":"NAME",<fields>} on stdout. Takes o->lock. */
static void json_event(struct sc_out *o, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void json_event(struct sc_out *o, const char *name, const char *fmt, ...)
{
    va_list ap;

    pthread_mutex_lock(&o->lock);
    printf("{\"event\":\"%s\"", name);
    if (*fmt != '\0') {
        putchar(',');
        va_start(ap, fmt);
        vprintf(fmt, ap);
        va_end(ap);
    }
    printf("}\n");
    fflush(stdout);
    pthread_mutex_unlock(&o->lock);
}

/* A line for people on stdout (stderr's progress line cleared first). */
static void say(struct sc_out *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void say(struct sc_out *o, const char *fmt, ...)
{
    va_list ap;

    pthread_mutex_lock(&o->lock);
    if (o->tty)
        fprintf(stderr, "\r\033[K");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
    pthread_mutex_unlock(&o->lock);
}

/* A progress line on stderr, redrawn in place on a terminal, else every 2 s. */
static void progress(struct sc_out *o, int final, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void progress(struct sc_out *o, int final, const char *fmt, ...)
{
    va_list ap;

    if (o->no_progress)
        return;
    pthread_mutex_lock(&o->lock);
    if (o->tty || final || now_ms() - o->last_progress_ms >= 2000) {
        o->last_progress_ms = now_ms();
        fputs(o->tty ? "\r\033[K" : "", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        if (!o->tty || final)
            fputc('\n', stderr);
        fflush(stderr);
    }
    pthread_mutex_unlock(&o->lock);
}

static void bar(char *out, unsigned width, unsigned pct)
{
    for (unsigned i = 0; i < width; i++)
        out[i] = i < pct * width / 100 ? '#' : '.';
    out[width] = '\0';
}

static void render_json(struct sc_out *o, const struct reshard_event *ev)
{
    char a[2048], b[600];

    switch (ev->kind) {
    case RESHARD_EV_PHASE:
        json_event(o, "phase",
                   "\"move\":%" PRIu64 ",\"shard\":%u,\"from\":\"%s\",\"to\":\"%s\","
                   "\"phase\":\"%s\"",
                   ev->move, ev->shard, ev->from, ev->to,
                   reshard_phase_name(ev->phase));
        break;
    case RESHARD_EV_COPY:
        sc_json_str(a, sizeof(a), ev->copy.table);
        json_event(o, "copy",
                   "\"shard\":%u,\"table\":\"%s\",\"rows\":%" PRIu64
                   ",\"total\":%" PRIu64 ",\"rate\":%.0f,\"eta_s\":%.1f",
                   ev->shard, a, ev->copy.rows, ev->copy.total, ev->copy.rate,
                   ev->copy.eta_s);
        break;
    case RESHARD_EV_CATCHUP:
        json_event(o, "catchup",
                   "\"shard\":%u,\"lag_bytes\":%" PRId64 ",\"behind_s\":%ld", ev->shard,
                   ev->catchup.lag_bytes, ev->catchup.behind_s);
        break;
    case RESHARD_EV_CUTOVER:
        json_event(
            o, "cutover",
            "\"shard\":%u,\"pause_ms\":%" PRId64 ",\"attempt\":%d,\"fence_ms\":%" PRId64
            ",\"drain_ms\":%" PRId64 ",\"switch_ms\":%" PRId64 ",\"flip_ms\":%" PRId64,
            ev->shard, ev->cutover.pause_ms, ev->cutover.attempt, ev->cutover.fence_ms,
            ev->cutover.drain_ms, ev->cutover.switch_ms, ev->cutover.flip_ms);
        break;
    case RESHARD_EV_DIFFERENCE:
        sc_json_str(a, sizeof(a), ev->verify.key);
        sc_json_str(b, sizeof(b), ev->copy.table);
        json_event(o, "difference",
                   "\"shard\":%u,\"table\":\"%s\",\"key\":\"%s\",\"what\":\"%s\"",
                   ev->shard, b, a, ev->verify.what);
        break;
    case RESHARD_EV_VERIFY:
        if (ev->verify.skipped)
            json_event(o, "verify", "\"shard\":%u,\"skipped\":true", ev->shard);
        else if (ev->verify.recorded)
            json_event(
                o, "verify",
                "\"shard\":%u,\"at\":\"%s\",\"recorded\":true,\"differences\":%u",
                ev->shard, ev->verify.at, ev->verify.diffs);
        else
            json_event(o, "verify",
                       "\"shard\":%u,\"at\":\"%s\",\"tables\":%u,\"chunks\":%u,"
                       "\"rows\":%" PRIu64 ",\"differences\":%u,\"seconds\":%.1f",
                       ev->shard, ev->verify.at, ev->verify.tables, ev->verify.chunks,
                       ev->verify.rows, ev->verify.diffs, ev->verify.seconds);
        break;
    case RESHARD_EV_DONE:
        json_event(o, "done",
                   "\"shard\":%u,\"from\":\"%s\",\"to\":\"%s\",\"seconds\":%.1f,"
                   "\"pause_ms\":%" PRId64 ",\"verify_diffs\":%u",
                   ev->shard, ev->from, ev->to, ev->done.seconds, ev->done.pause_ms,
                   ev->done.verify_diffs);
        break;
    case RESHARD_EV_ERROR:
        if (ev->shard != RESHARD_NO_SHARD)
            snprintf(b, sizeof(b), "shard %u: ", ev->shard);
        else
            b[0] = '\0';
        strncat(b, ev->text, sizeof(b) - strlen(b) - 1);
        sc_json_str(a, sizeof(a), b);
        json_event(o, "error", "\"message\":\"%s\"", a);
        break;
    case RESHARD_EV_REBALANCE:
        json_event(o, "rebalance", "\"done\":%u,\"total\":%u,\"failed\":%u",
                   ev->rebalance.done, ev->rebalance.total, ev->rebalance.failed);
        break;
    case RESHARD_EV_REBALANCE_DONE:
        json_event(o, "rebalance_done", "\"moves\":%u,\"failed\":%u,\"seconds\":%.1f",
                   ev->rebalance.total, ev->rebalance.failed, ev->rebalance.seconds);
        break;
    case RESHARD_EV_HOST_ADDED:
    case RESHARD_EV_HOST_REMOVED:
        json_event(o, ev->kind == RESHARD_EV_HOST_ADDED ? "host_added" : "host_removed",
                   "\"host\":\"%s\"", ev->text);
        break;
    case RESHARD_EV_NOTE: /* what the text output says, e.g. a replication I/O error */
        sc_json_str(a, sizeof(a), ev->text);
        json_event(o, "note", "\"message\":\"%s\"", a);
        break;
    case RESHARD_EV_VERIFY_PROGRESS:
        break;
    }
}

static void render_text(struct sc_out *o, const struct reshard_event *ev)
{
    char b[31];

    switch (ev->kind) {
    case RESHARD_EV_NOTE:
        say(o, "%s", ev->text);
        break;
    case RESHARD_EV_ERROR:
        pthread_mutex_lock(&o->lock);
        if (ev->shard != RESHARD_NO_SHARD)
            fprintf(stderr, "%sshardctl: shard %u: %s\n", o->tty ? "\r\033[K" : "",
                    ev->shard, ev->text);
        else
            fprintf(stderr, "%sshardctl: %s\n", o->tty ? "\r\033[K" : "", ev->text);
        pthread_mutex_unlock(&o->lock);
        break;
    case RESHARD_EV_COPY: {
        unsigned pct =
            ev->copy.total ? (unsigned)(ev->copy.rows * 100 / ev->copy.total) : 100;
        bar(b, 20, pct);
        progress(o, ev->final,
                 "shard %u copy  [%s] %3u%%  %" PRIu64 "/%" PRIu64
                 " rows  %.0f rows/s  ETA %.0f s  (%s)",
                 ev->shard, b, pct, ev->copy.rows, ev->copy.total, ev->copy.rate,
                 ev->copy.eta_s, ev->copy.table);
        break;
    }
    case RESHARD_EV_CATCHUP:
        progress(o, 0, "shard %u catch-up  lag %" PRId64 " bytes, %ld s%s", ev->shard,
                 ev->catchup.lag_bytes, ev->catchup.behind_s,
                 ev->catchup.postponed ? "  (cut-over postponed)" : "");
        break;
    case RESHARD_EV_VERIFY_PROGRESS:
        if (!ev->final)
            progress(o, 0, "shard %u verify  %u/%u tables  %" PRIu64 " rows  %u chunks",
                     ev->shard, ev->verify.tables, ev->verify.ntable, ev->verify.rows,
                     ev->verify.chunks);
        else
            progress(o, 1,
                     "shard %u verify  %u tables  %" PRIu64 " rows  %u chunks  %u "
                     "differences  %.1f s",
                     ev->shard, ev->verify.tables, ev->verify.rows, ev->verify.chunks,
                     ev->verify.diffs, ev->verify.seconds);
        break;
    case RESHARD_EV_DIFFERENCE:
        say(o, "shard %u: DIFFERENCE %s_%04u.%s key (%s): %s", ev->shard, o->prefix,
            ev->shard, ev->copy.table, ev->verify.key, ev->verify.what);
        break;
    case RESHARD_EV_REBALANCE: {
        unsigned total = ev->rebalance.total;
        bar(b, 30, total ? ev->rebalance.done * 100 / total : 100);
        say(o, "rebalance [%s] %u/%u moves, %u failed, %.0f s", b, ev->rebalance.done,
            total, ev->rebalance.failed, ev->rebalance.seconds);
        break;
    }
    default:
        break;
    }
}

static void on_event(void *arg, const struct reshard_event *ev)
{
    struct sc_out *o = arg;
    struct reshard_event e = *ev;

    /* The copy's and comparison's events name no hosts. */
    e.from = e.from ? e.from : "";
    e.to = e.to ? e.to : "";
    e.text = e.text ? e.text : "";
    e.copy.table = e.copy.table ? e.copy.table : "";
    e.verify.at = e.verify.at ? e.verify.at : "";
    e.verify.key = e.verify.key ? e.verify.key : "";
    e.verify.what = e.verify.what ? e.verify.what : "";
    if (o->json)
        render_json(o, &e);
    else
        render_text(o, &e);
}

/* ---- the hold hook and the postponed cut-over ---------------------------------------
 */

static void hold(void *arg, uint32_t shard, enum reshard_point at)
{
    struct sc_out *o = arg;
    const char *want = getenv("BC_SHARDCTL_HOLD");
    sigset_t usr1;
    int sig = 0;

    if (want == NULL || strcmp(want, reshard_point_name(at)) != 0)
        return;
    /* shardctl_reshard_signals() blocked SIGUSR1 in every thread. */
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    if (o->json)
        json_event(o, "hold", "\"shard\":%u,\"at\":\"%s\"", shard, want);
    else
        say(o, "shard %u: holding at %s (BC_SHARDCTL_HOLD) until SIGUSR1 or killed",
            shard, want);
    while (sigwait(&usr1, &sig) != 0 || sig != SIGUSR1)
        ;
    if (o->json)
        json_event(o, "resume", "\"shard\":%u,\"at\":\"%s\"", shard, want);
}

void shardctl_reshard_signals(void)
{
    sigset_t usr1;

    if (getenv("BC_SHARDCTL_HOLD") == NULL)
        return;
    /* The hold hook waits for SIGUSR1: no thread may die of it. */
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &usr1, NULL);
}

static int postpone_file(void *arg)
{
    struct stat st;

    return stat((const char *)arg, &st) == 0;
}

/* ---- commands ----------------------------------------------------------------------
 */

static void opts_for(struct reshard_opts *ro, const struct sc_move_opts *mo,
                     struct sc_out *out)
{
    reshard_opts_init(ro);
    ro->keep_source = mo->keep_source;
    ro->no_verify = mo->no_verify;
    ro->grace_s = mo->grace_s;
    ro->copy_rate = mo->copy_rate;
    ro->parallel = mo->parallel;
    if (mo->postpone_cutover != NULL) {
        ro->postpone = postpone_file;
        ro->postpone_arg = (void *)mo->postpone_cutover;
    }
    ro->on_event = on_event;
    ro->event_arg = out;
    ro->hook = hold;
    ro->hook_arg = out;
}

/* The exit code of a move engine status (the table is in shardctl.h). */
static int exit_code(int rc)
{
    switch (rc) {
    case RESHARD_OK:
    case RESHARD_NOTHING:
        return SC_OK;
    case RESHARD_DIFFER:
        return SC_DIFFER;
    case -EBUSY:
    case -EALREADY: /* another move between the same two hosts */
    case BC_EEXISTS:
        return SC_REFUSED;
    case -EINVAL:
    case BC_ESHARD:
    case BC_EHOST: /* no such host in the map: a bad operand */
        return SC_USAGE;
    case BC_EDOWN:
        return sc_exit_of(rc);
    default:
        return SC_ERROR;
    }
}

static int with_backend(const struct shardmap_conf *conf, struct sc_out *out,
                        struct reshard_backend *b)
{
    int rc = reshard_backend_db_create(conf, b);

    snprintf(out->prefix, sizeof(out->prefix), "%s", conf->schema_prefix);
    if (rc < 0)
        fprintf(stderr, "shardctl: %s\n", bc_strerror(rc));
    return rc;
}

int shardctl_move(const struct shardmap_conf *conf, struct sc_out *out, uint32_t shard,
                  const char *to, const struct sc_move_opts *mo)
{
    struct reshard_backend b;
    struct reshard_opts ro;
    int rc;

    if (with_backend(conf, out, &b) < 0)
        return SC_ERROR;
    opts_for(&ro, mo, out);
    rc = reshard_move(&b, shard, to, mo->abort, &ro);
    reshard_backend_db_destroy(&b);
    return exit_code(rc);
}

int shardctl_verify(const struct shardmap_conf *conf, struct sc_out *out,
                    uint32_t shard, const char *against)
{
    struct sc_move_opts mo = {.parallel = 1};
    struct reshard_backend b;
    struct reshard_compare res;
    struct reshard_opts ro;
    int rc;

    if (with_backend(conf, out, &b) < 0)
        return SC_ERROR;
    opts_for(&ro, &mo, out);
    rc = reshard_verify(&b, shard, against, &ro, &res);
    reshard_backend_db_destroy(&b);
    return exit_code(rc);
}

int shardctl_rebalance(const struct shardmap_conf *conf, struct sc_out *out,
                       const char *plan_path, const struct sc_move_opts *mo)
{
    struct shardmap_plan plan;
    struct reshard_backend b;
    struct reshard_opts ro;
    char *err = NULL;
    int rc;

    if (shardmap_plan_load(plan_path, &plan, &err) < 0) {
        fprintf(stderr, "shardctl: %s\n", err ? err : "cannot read the plan");
        free(err);
        return SC_ERROR;
    }
    if (with_backend(conf, out, &b) < 0) {
        shardmap_plan_deinit(&plan);
        return SC_ERROR;
    }
    opts_for(&ro, mo, out);
    out->no_progress = 1; /* the rebalance's overall bar instead of each move's */
    rc = reshard_rebalance(&b, &plan, &ro);
    reshard_backend_db_destroy(&b);
    shardmap_plan_deinit(&plan);
    return exit_code(rc);
}

int shardctl_moves(const struct shardmap_conf *conf, struct sc_out *out)
{
    struct sql_endpoint ep;
    struct sql_conn_opts co = {.connect_timeout_ms = 5000, .query_timeout_ms = 30000};
    struct sql_conn *g = NULL;
    struct sql_executor ex;
    struct catalog cat;
    struct catalog_move *mv = NULL;
    uint32_t n = 0;
    int rc;

    if ((rc = catalog_global_endpoint(conf, &ep)) < 0 ||
        (rc = sql_conn_open(&ep, &co, &g)) < 0) {
        fprintf(stderr, "shardctl: %s\n", sql_last_error());
        return sc_exit_of(rc);
    }
    sql_conn_executor(g, &ex);
    catalog_init(&cat, conf, &ex);
    rc = catalog_moves_list(&cat, 100, &mv, &n);
    if (rc < 0) {
        fprintf(stderr, "shardctl: %s\n", sql_last_error());
        goto out;
    }
    if (out->json)
        printf("[");
    else
        printf("%-6s %5s %-10s %-10s %-9s %10s %8s %6s %-23s %s\n", "MOVE", "SHARD",
               "FROM", "TO", "PHASE", "ROWS", "PAUSEms", "DIFFS", "STARTED",
               "FINISHED");
    for (uint32_t i = 0; i < n; i++) {
        const struct catalog_move *m = &mv[i];
        char pause[24] = "", diffs[24] = "";
        if (m->pause_ms >= 0)
            snprintf(pause, sizeof(pause), "%" PRId64, m->pause_ms);
        if (m->verify_diffs >= 0)
            snprintf(diffs, sizeof(diffs), "%" PRId64, m->verify_diffs);
        if (out->json)
            printf("%s{\"move\":%" PRIu64 ",\"shard\":%u,\"from\":\"%s\",\"to\":\"%s\","
                   "\"phase\":\"%s\",\"rows\":%" PRIu64 ",\"pause_ms\":%s,"
                   "\"verify_diffs\":%s,\"started_at\":\"%s\",\"finished_at\":%s%s%s}",
                   i ? "," : "", m->id, m->shard, m->src, m->dst, m->phase,
                   m->rows_copied, pause[0] ? pause : "null", diffs[0] ? diffs : "null",
                   m->started_at, m->finished_at[0] ? "\"" : "",
                   m->finished_at[0] ? m->finished_at : "null",
                   m->finished_at[0] ? "\"" : "");
        else
            printf("%-6" PRIu64 " %5u %-10s %-10s %-9s %10" PRIu64
                   " %8s %6s %-23s %s\n",
                   m->id, m->shard, m->src, m->dst, m->phase, m->rows_copied, pause,
                   diffs, m->started_at, m->finished_at);
    }
    if (out->json)
        printf("]\n");
out:
    free(mv);
    catalog_deinit(&cat);
    sql_conn_close(g);
    return rc < 0 ? SC_ERROR : SC_OK;
}
