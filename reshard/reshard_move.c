/*
 * reshard_move.c: the move of one shard as a phase machine (see reshard.h).
 *
 * Each phase has one step function; a step does its work through the
 * backend and records the next phase before returning, so the recorded
 * phase always names the step to run next. Every step can run again from
 * its start: a move killed anywhere resumes from its record. Whatever the
 * machine decides (refusals, retries of the cut-over, what the comparisons
 * mean) is here; how it is done to MariaDB is in the backend.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "reshard/reshard_int.h"

#define CATCHUP_BYTES (256 * 1024) /* close enough behind to cut over */
#define CUTOVER_ATTEMPTS 5
#define DRAIN_WAIT_S 5 /* the backend's drain deadline, for the message */

static const char *const phase_names[RESHARD_NPHASE] = {
    [RESHARD_PREPARE] = "prepare",   [RESHARD_COPY] = "copy",
    [RESHARD_COPIED] = "copied",     [RESHARD_CATCHUP] = "catchup",
    [RESHARD_CUTOVER] = "cutover",   [RESHARD_SWITCHED] = "switched",
    [RESHARD_VERIFIED] = "verified", [RESHARD_CLEANUP] = "cleanup",
    [RESHARD_DONE] = "done",         [RESHARD_ABORTED] = "aborted",
};

static const char *const point_names[RESHARD_NPOINT] = {
    [RESHARD_AT_COPY] = "copy",       [RESHARD_AT_CATCHUP] = "catchup",
    [RESHARD_AT_FENCED] = "fenced",   [RESHARD_AT_SWITCHED] = "switched",
    [RESHARD_AT_CLEANUP] = "cleanup",
};

const char *reshard_phase_name(enum reshard_phase phase)
{
    return (unsigned)phase < RESHARD_NPHASE ? phase_names[phase] : "unknown";
}

int reshard_phase_parse(const char *name, enum reshard_phase *out)
{
    for (int i = 0; i < RESHARD_NPHASE; i++)
        if (strcmp(name, phase_names[i]) == 0) {
            *out = (enum reshard_phase)i;
            return 0;
        }
    return -EINVAL;
}

const char *reshard_point_name(enum reshard_point at)
{
    return (unsigned)at < RESHARD_NPOINT ? point_names[at] : "unknown";
}

int reshard_point_parse(const char *name, enum reshard_point *out)
{
    for (int i = 0; i < RESHARD_NPOINT; i++)
        if (strcmp(name, point_names[i]) == 0) {
            *out = (enum reshard_point)i;
            return 0;
        }
    return -EINVAL;
}

void reshard_opts_init(struct reshard_opts *opts)
{
    memset(opts, 0, sizeof(*opts));
    opts->grace_s = 5;
    opts->parallel = 1;
}

/* ---- events ------------------------------------------------------------------ */

void reshard__emit(const struct reshard_opts *opts, const struct reshard_event *ev)
{
    if (opts->on_event != NULL)
        opts->on_event(opts->event_arg, ev);
}

static void say(const struct reshard_opts *opts, enum reshard_event_kind kind,
                uint32_t shard, const char *fmt, va_list ap)
{
    struct reshard_event ev = {.kind = kind, .shard = shard, .from = "", .to = ""};
    char text[1024];

    vsnprintf(text, sizeof(text), fmt, ap);
    ev.text = text;
    reshard__emit(opts, &ev);
}

void reshard__note(const struct reshard_opts *opts, uint32_t shard, const char *fmt,
                   ...)
{
    va_list ap;

    va_start(ap, fmt);
    say(opts, RESHARD_EV_NOTE, shard, fmt, ap);
    va_end(ap);
}

int reshard__fail(const struct reshard_opts *opts, uint32_t shard, int status,
                  const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    say(opts, RESHARD_EV_ERROR, shard, fmt, ap);
    va_end(ap);
    return status;
}

int reshard__context_error(int rc, const char *fmt, ...)
{
    char what[512], msg[1024];
    va_list ap;

    snprintf(msg, sizeof(msg), "%s", sql_last_error());
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    sql_set_error("%s: %s", what, msg);
    return rc;
}

void reshard__hook(const struct reshard_opts *opts, uint32_t shard,
                   enum reshard_point at)
{
    if (opts->hook != NULL)
        opts->hook(opts->hook_arg, shard, at);
}

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};

    nanosleep(&ts, NULL);
}

/* The backend's message for a failed call. */
static const char *why(struct reshard_move *m)
{
    const char *e = m->ops->last_error ? m->ops->last_error(m->ctx) : NULL;

    return e != NULL && *e != '\0' ? e : "failed";
}

static int fail(struct reshard_move *m, int status, const char *what)
{
    return reshard__fail(&m->opts, m->shard, status, "%s%s%s", what ? what : "",
                         what ? ": " : "", why(m));
}

static void phase_event(struct reshard_move *m)
{
    struct reshard_event ev = {.kind = RESHARD_EV_PHASE,
                               .shard = m->shard,
                               .move = m->rec.id,
                               .from = m->rec.src,
                               .to = m->rec.dst,
                               .phase = m->phase};

    reshard__emit(&m->opts, &ev);
}

/* Records the next phase (with the fields named) and announces it. */
static int record(struct reshard_move *m, enum reshard_phase next, unsigned fields)
{
    struct catalog_move rec = m->rec;
    int rc;

    snprintf(rec.phase, sizeof(rec.phase), "%s", reshard_phase_name(next));
    if ((rc = m->ops->save(m->ctx, &rec, fields)) < 0)
        return fail(m, rc, "recording the move");
    m->rec = rec;
    m->phase = next;
    phase_event(m);
    reshard__note(&m->opts, m->shard, "shard %u: %s (%s -> %s)", m->shard,
                  reshard_phase_name(next), m->rec.src, m->rec.dst);
    return 0;
}

/* Fails unless the map puts the shard on host (what the step expects). */
static int map_is(struct reshard_move *m, const char *host, int want, const char *msg)
{
    char now[SHARDMAP_NAME_MAX];
    int rc = m->ops->shard_host(m->ctx, now);

    if (rc < 0)
        return fail(m, rc, "reading the shard map");
    if ((strcmp(now, host) == 0) != want)
        return reshard__fail(&m->opts, m->shard, BC_EMISMATCH, msg, now);
    return 0;
}

/* ---- the steps ------------------------------------------------------------------ */

/* prepare: the target must not hold a live copy of the shard. */
static int step_prepare(struct reshard_move *m)
{
    int live = m->ops->target_live(m->ctx);

    if (live < 0)
        return fail(m, live, NULL);
    /*
     * Refused, the record ends here (aborted, nothing done): left unfinished,
     * its --abort would drop the very copy this refused to overwrite.
     */
    if (live && record(m, RESHARD_ABORTED, 0) == 0)
        return reshard__fail(
            &m->opts, m->shard, BC_EEXISTS,
            "%s already has a copy of shard %u that is not a fenced, "
            "retired copy; refusing to overwrite it (drop it by hand if "
            "it is stale)",
            m->rec.dst, m->shard);
    return record(m, RESHARD_COPY, 0);
}

/* copy: a fresh, fenced schema on the target, filled from one snapshot. */
static int step_copy(struct reshard_move *m)
{
    struct catalog_move rec = m->rec;
    int rc;

    if ((rc = map_is(m, m->rec.dst, 0,
                     "the map already points to %s: not dropping the live copy")) < 0)
        return rc;
    if ((rc = m->ops->copy(m->ctx, &rec)) < 0)
        return fail(m, rc, "copying");
    m->rec = rec;
    return record(m, RESHARD_COPIED, CATALOG_MOVE_COPY);
}

/* copied: the target replicates the schema from the snapshot on. */
static int step_replicate(struct reshard_move *m)
{
    int rc = m->ops->replicate(m->ctx, &m->rec);

    if (rc < 0)
        return fail(m, rc, "setting up replication");
    return record(m, RESHARD_CATCHUP, 0);
}

static int postponed(struct reshard_move *m)
{
    return m->opts.postpone != NULL && m->opts.postpone(m->opts.postpone_arg);
}

/* Waits until the target is close behind and the cut-over not postponed. */
static int wait_caught_up(struct reshard_move *m)
{
    struct reshard_lag lag;
    int64_t last = 0;
    int said = 0, rc;

    for (;;) {
        if ((rc = m->ops->lag(m->ctx, &lag)) < 0)
            return fail(m, rc, "replication");
        if (now_ms() - last >= 500) {
            struct reshard_event ev = {.kind = RESHARD_EV_CATCHUP,
                                       .shard = m->shard,
                                       .move = m->rec.id,
                                       .from = m->rec.src,
                                       .to = m->rec.dst};
            last = now_ms();
            ev.catchup.lag_bytes = lag.bytes;
            ev.catchup.behind_s = lag.behind_s;
            ev.catchup.postponed = postponed(m);
            reshard__emit(&m->opts, &ev);
        }
        if (lag.bytes >= 0 && lag.bytes <= CATCHUP_BYTES && lag.behind_s <= 1) {
            if (!postponed(m))
                return 0;
            if (!said++)
                reshard__note(&m->opts, m->shard,
                              "shard %u: caught up; cut-over postponed", m->shard);
        }
        sleep_ms(100);
    }
}

/* The copies compared at one binlog position, before the cut-over. */
static int precheck(struct reshard_move *m)
{
    struct reshard_compare res;
    struct catalog_move rec = m->rec;
    int rc = m->ops->compare_in_flight(m->ctx, &res);

    if (rc < 0)
        return fail(m, rc, "comparing the copies");
    if (res.diffs > 0)
        return reshard__fail(
            &m->opts, m->shard, BC_EMISMATCH,
            "%u differences between the copies in catch-up: not cutting over; the "
            "shard stays on %s (shardctl move %u --abort, then look into it)",
            res.diffs, m->rec.src, m->shard);
    rec.verify_diffs = 0;
    if ((rc = m->ops->save(m->ctx, &rec, CATALOG_MOVE_VERIFY)) < 0)
        return fail(m, rc, "recording the move");
    m->rec = rec;
    m->prechecked = 1;
    return 0;
}

/* catchup: close behind, compared, and not postponed. */
static int step_catchup(struct reshard_move *m)
{
    int rc;

    reshard__hook(&m->opts, m->shard, RESHARD_AT_CATCHUP);
    for (;;) {
        if ((rc = wait_caught_up(m)) < 0)
            return rc;
        if (m->opts.no_verify || m->prechecked)
            break;
        /* The comparison takes a while: catch up again after it. */
        if ((rc = precheck(m)) < 0)
            return rc;
    }
    return record(m, RESHARD_CUTOVER, 0);
}

/* Gives the writes back to the source after a failed attempt. */
static int unfence(struct reshard_move *m, int rc)
{
    int u = m->ops->unfence_source(m->ctx);

    if (u < 0)
        reshard__fail(&m->opts, m->shard, u, "could not unfence the source: %s",
                      why(m));
    return rc;
}

/* One cut-over attempt: 1 switched, 0 try again (writes resumed), <0 failed. */
static int cutover_once(struct reshard_move *m, int attempt)
{
    struct reshard_event ev = {.kind = RESHARD_EV_CUTOVER,
                               .shard = m->shard,
                               .move = m->rec.id,
                               .from = m->rec.src,
                               .to = m->rec.dst};
    struct catalog_move rec = m->rec;
    int64_t t0 = now_ms(), t_fenced, t_drained, t_switched;
    int rc;

    /* From the fence on, no write commits on the source. */
    rc = m->ops->fence(m->ctx);
    if (rc == BC_ELOCKWAIT)
        return 0;
    if (rc < 0)
        return fail(m, rc, "fencing the source");
    t_fenced = now_ms();
    reshard__hook(&m->opts, m->shard, RESHARD_AT_FENCED);
    rc = m->ops->drain(m->ctx);
    if (rc == BC_ETIMEOUT) {
        reshard__note(&m->opts, m->shard,
                      "shard %u: cut-over attempt %d: the target did not catch up in "
                      "%d s; writes resume on the source",
                      m->shard, attempt, DRAIN_WAIT_S);
        rc = m->ops->unfence_source(m->ctx);
        /* The writes' pause is the longest of the attempts', not the last's. */
        if (now_ms() - t0 > m->pause_ms)
            m->pause_ms = now_ms() - t0;
        return rc < 0 ? fail(m, rc, "unfencing the source") : 0;
    }
    if (rc < 0)
        return unfence(m, fail(m, rc, "waiting for the target"));
    t_drained = now_ms();
    if ((rc = m->ops->switch_target(m->ctx)) < 0)
        return unfence(m, fail(m, rc, "switching to the target"));
    t_switched = now_ms();
    /* The flip: the map and the move's phase in one transaction. */
    snprintf(rec.phase, sizeof(rec.phase), "%s", reshard_phase_name(RESHARD_SWITCHED));
    rec.pause_ms = now_ms() - t0 > m->pause_ms ? now_ms() - t0 : m->pause_ms;
    if ((rc = m->ops->flip(m->ctx, &rec)) < 0) {
        fail(m, rc, "flipping the map");
        m->ops->start_replication(m->ctx);
        return unfence(m, rc);
    }
    rec.pause_ms = now_ms() - t0;
    if (m->pause_ms > rec.pause_ms) {
        reshard__note(&m->opts, m->shard,
                      "shard %u: an earlier cut-over attempt paused writes %" PRId64
                      " ms, the longest",
                      m->shard, m->pause_ms);
        rec.pause_ms = m->pause_ms;
    }
    m->rec = rec;
    m->phase = RESHARD_SWITCHED;
    ev.cutover.pause_ms = rec.pause_ms;
    ev.cutover.attempt = attempt;
    ev.cutover.fence_ms = t_fenced - t0;
    ev.cutover.drain_ms = t_drained - t_fenced;
    ev.cutover.switch_ms = t_switched - t_drained;
    ev.cutover.flip_ms = rec.pause_ms - (t_switched - t0);
    reshard__emit(&m->opts, &ev);
    phase_event(m);
    reshard__note(&m->opts, m->shard,
                  "shard %u: switched to %s; writes paused %" PRId64 " ms", m->shard,
                  m->rec.dst, rec.pause_ms);
    return 1;
}

/* cutover: fence, drain, flip; a slow drain gives the writes back and retries. */
static int step_cutover(struct reshard_move *m)
{
    int rc;

    if ((rc = map_is(m, m->rec.src, 1,
                     "the map says the shard is on %s, not on the move's source: not "
                     "cutting over")) < 0)
        return rc;
    /*
     * A resumed cut-over: replication may have been stopped before the crash,
     * or be one that can never catch up (an error, a source failed over).
     */
    m->ops->start_replication(m->ctx);
    if ((rc = m->ops->lag(m->ctx, &(struct reshard_lag){0})) < 0)
        return fail(m, rc, "replication");
    m->ops->set_state(m->ctx, SHARDMAP_STATE_FENCED);
    for (int attempt = 1; attempt <= CUTOVER_ATTEMPTS; attempt++) {
        rc = cutover_once(m, attempt);
        if (rc != 0)
            return rc < 0 ? rc : 0;
        /* Let the target catch up again before the next attempt. */
        for (int i = 0; i < 50; i++) {
            struct reshard_lag lag;
            if ((rc = m->ops->lag(m->ctx, &lag)) < 0)
                return fail(m, rc, "replication");
            if (lag.bytes >= 0 && lag.bytes <= CATCHUP_BYTES)
                break;
            sleep_ms(100);
        }
    }
    return reshard__fail(&m->opts, m->shard, BC_ETIMEOUT,
                         "the target did not catch up within %d s in %d attempts; the "
                         "shard keeps serving from %s; re-run to try again, or --abort",
                         DRAIN_WAIT_S, CUTOVER_ATTEMPTS, m->rec.src);
}

/* switched: replication gone; the copies compared as of the fence. */
static int step_verify(struct reshard_move *m)
{
    struct reshard_event ev = {.kind = RESHARD_EV_VERIFY,
                               .shard = m->shard,
                               .move = m->rec.id,
                               .from = m->rec.src,
                               .to = m->rec.dst};
    struct reshard_compare res = {0};
    int rc;

    if ((rc = m->ops->drop_channel(m->ctx)) < 0)
        return fail(m, rc, "removing the move's replication connection");
    reshard__hook(&m->opts, m->shard, RESHARD_AT_SWITCHED);
    rc = m->opts.no_verify ? BC_ENOTFOUND : m->ops->compare_at_fence(m->ctx, &res);
    if (rc == 0) {
        if (res.diffs > 0) {
            m->verify_failed = 1;
            m->keep_source = 1;
            reshard__fail(&m->opts, m->shard, 0,
                          "%u differences between %s and %s; keeping the source copy "
                          "for inspection (move it back with shardctl move %u %s)",
                          res.diffs, m->rec.src, m->rec.dst, m->shard, m->rec.src);
        }
        m->rec.verify_diffs = res.diffs;
        return record(m, RESHARD_VERIFIED, CATALOG_MOVE_VERIFY);
    }
    if (rc != BC_ENOTFOUND)
        return fail(m, rc, "comparing the copies at the fence");
    /*
     * Restarted after the flip: the snapshot at the fence died with the
     * killed run, and the target has taken writes since. What stands is the
     * comparison recorded in catch-up.
     */
    if (m->rec.verify_diffs >= 0) {
        ev.verify.at = "catchup";
        ev.verify.recorded = 1;
        ev.verify.diffs = (uint32_t)m->rec.verify_diffs;
        reshard__emit(&m->opts, &ev);
        reshard__note(&m->opts, m->shard,
                      "shard %u: verified in catch-up (%" PRId64
                      " differences, recorded); the check at the fence was lost with "
                      "the interrupted run",
                      m->shard, m->rec.verify_diffs);
    } else {
        ev.verify.skipped = 1;
        reshard__emit(&m->opts, &ev);
        reshard__note(&m->opts, m->shard,
                      "shard %u: not verified (--no-verify, or interrupted before)",
                      m->shard);
    }
    return record(m, RESHARD_VERIFIED, 0);
}

/* The source copy dropped (or kept), and the move done. */
static int finish(struct reshard_move *m)
{
    struct reshard_event ev = {.kind = RESHARD_EV_DONE,
                               .shard = m->shard,
                               .move = m->rec.id,
                               .from = m->rec.src,
                               .to = m->rec.dst};
    double s;
    int rc;

    if (m->keep_source) {
        reshard__note(&m->opts, m->shard,
                      "shard %u: the fenced source copy stays on %s", m->shard,
                      m->rec.src);
    } else {
        if ((rc = map_is(m, m->rec.src, 0,
                         "the map points to %s: not dropping the live copy")) < 0)
            return rc;
        if ((rc = m->ops->drop_source(m->ctx)) < 0)
            return fail(m, rc, "dropping the source copy");
    }
    if ((rc = record(m, RESHARD_DONE, CATALOG_MOVE_FINISHED)) < 0)
        return rc;
    s = (double)(now_ms() - m->started_ms) / 1000.0;
    ev.done.seconds = s;
    ev.done.pause_ms = m->rec.pause_ms;
    ev.done.verify_diffs = m->rec.verify_diffs > 0 ? (uint32_t)m->rec.verify_diffs : 0;
    reshard__emit(&m->opts, &ev);
    reshard__note(&m->opts, m->shard, "shard %u: moved %s -> %s in %.1f s", m->shard,
                  m->rec.src, m->rec.dst, s);
    return 0;
}

static void cleanup_hook(struct reshard_move *m)
{
    if (!m->cleanup_hooked) {
        m->cleanup_hooked = 1;
        reshard__hook(&m->opts, m->shard, RESHARD_AT_CLEANUP);
    }
}

/* verified: a grace period for stale servers, then the source goes. */
static int step_verified(struct reshard_move *m)
{
    int rc;

    cleanup_hook(m);
    if (m->keep_source || m->opts.grace_s == 0)
        return finish(m);
    if ((rc = record(m, RESHARD_CLEANUP, 0)) < 0)
        return rc;
    reshard__note(&m->opts, m->shard, "shard %u: dropping the source copy in %u s",
                  m->shard, m->opts.grace_s);
    sleep_ms(m->opts.grace_s * 1000u);
    m->grace_waited = 1;
    return 0;
}

/*
 * cleanup: the grace period ran in this run, or in one that stopped during
 * it: a resumed run waits a whole one again (how much of it passed is not
 * recorded), since a server with a map from before the flip may still be
 * reading the source until it ends.
 */
static int step_cleanup(struct reshard_move *m)
{
    cleanup_hook(m);
    if (!m->grace_waited && !m->keep_source && m->opts.grace_s > 0) {
        reshard__note(
            &m->opts, m->shard,
            "shard %u: dropping the source copy in %u s (a whole grace period: "
            "the run before stopped during it)",
            m->shard, m->opts.grace_s);
        sleep_ms(m->opts.grace_s * 1000u);
        m->grace_waited = 1;
    }
    return finish(m);
}

typedef int (*step_fn)(struct reshard_move *m);

static const step_fn steps[RESHARD_NPHASE] = {
    [RESHARD_PREPARE] = step_prepare,   [RESHARD_COPY] = step_copy,
    [RESHARD_COPIED] = step_replicate,  [RESHARD_CATCHUP] = step_catchup,
    [RESHARD_CUTOVER] = step_cutover,   [RESHARD_SWITCHED] = step_verify,
    [RESHARD_VERIFIED] = step_verified, [RESHARD_CLEANUP] = step_cleanup,
};

int reshard_move_step(struct reshard_move *m)
{
    int rc;

    if (m->phase == RESHARD_DONE || m->phase == RESHARD_ABORTED)
        return 0;
    if (m->defer_cleanup &&
        (m->phase == RESHARD_VERIFIED || m->phase == RESHARD_CLEANUP))
        return 0;
    if ((rc = steps[m->phase](m)) < 0)
        return rc;
    return m->phase == RESHARD_DONE ? 0 : 1;
}

int reshard_move_run(struct reshard_move *m)
{
    int rc;

    if (m->resumed)
        reshard__note(&m->opts, m->shard,
                      "shard %u: resuming move #%" PRIu64 " (%s -> %s) at %s", m->shard,
                      m->rec.id, m->rec.src, m->rec.dst, reshard_phase_name(m->phase));
    if (m->resumed && m->phase == RESHARD_CUTOVER)
        reshard__note(&m->opts, m->shard,
                      "shard %u: the interrupted run may have left the source fenced: "
                      "its writes then waited since, longer than the pause this run "
                      "reports",
                      m->shard);
    while ((rc = reshard_move_step(m)) > 0)
        ;
    if (rc < 0)
        return rc;
    return m->verify_failed ? RESHARD_DIFFER : RESHARD_OK;
}

int reshard_move_abort(struct reshard_move *m)
{
    int rc;

    if (m->phase == RESHARD_DONE || m->phase == RESHARD_ABORTED)
        return 0;
    char now[SHARDMAP_NAME_MAX];

    if ((rc = m->ops->shard_host(m->ctx, now)) < 0)
        return fail(m, rc, "reading the shard map");
    if (strcmp(now, m->rec.src) != 0)
        return reshard__fail(
            &m->opts, m->shard, BC_EMISMATCH,
            "move #%" PRIu64
            " of shard %u is past the map flip (the map points to %s): "
            "finish it with shardctl move %u --resume, then move it back with shardctl "
            "move %u %s",
            m->rec.id, m->shard, now, m->shard, m->shard, m->rec.src);
    if ((rc = m->ops->drop_channel(m->ctx)) < 0)
        return fail(m, rc, "removing the move's replication connection");
    if ((rc = m->ops->unfence_source(m->ctx)) < 0)
        return fail(m, rc, "unfencing the source");
    if ((rc = m->ops->drop_target(m->ctx)) < 0)
        return fail(m, rc, "dropping the target copy");
    if ((rc = m->ops->set_state(m->ctx, SHARDMAP_STATE_ACTIVE)) < 0)
        return fail(m, rc, "resetting the shard's state");
    if ((rc = record(m, RESHARD_ABORTED, CATALOG_MOVE_FINISHED)) < 0)
        return rc;
    reshard__note(&m->opts, m->shard,
                  "shard %u: move #%" PRIu64 " rolled back; the shard stays on %s",
                  m->shard, m->rec.id, m->rec.src);
    return 0;
}
