/*
 * reshard_claim.c: claiming a shard for a move (its lock, then its record),
 * the one-call move of shardctl, and the comparison of two copies.
 *
 * Two tools never work on one shard: the first takes the shard's session
 * lock in the catalog (released by the server when the tool dies), and the
 * record of an unfinished move is unique per shard in the catalog itself.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "reshard/reshard_int.h"

static const char *why(const struct reshard_backend_ops *ops, void *ctx)
{
    const char *e = ops->last_error ? ops->last_error(ctx) : NULL;

    return e != NULL && *e != '\0' ? e : "failed";
}

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A context with the shard's lock taken; 0, -EBUSY or a status. */
static int claim(const struct reshard_backend *b, uint32_t shard,
                 const struct reshard_opts *opts, const char *busy, void **ctx)
{
    int rc, got = 0;

    if ((rc = b->ops->begin(b->be, shard, opts, ctx)) < 0)
        return reshard__fail(opts, shard, rc, "%s", sql_last_error());
    if ((rc = b->ops->lock(*ctx, &got)) < 0 || !got) {
        if (rc == 0)
            rc = reshard__fail(opts, shard, -EBUSY, busy, shard);
        else
            rc = reshard__fail(opts, shard, rc, "%s", why(b->ops, *ctx));
        b->ops->end(*ctx);
        *ctx = NULL;
    }
    return rc;
}

/*
 * Refuses a new move while another shard's move between the same two hosts
 * may hold their replication connection, or is still to set it up: MariaDB
 * takes one per source host on a target, and a connection started later
 * from an older snapshot could not apply what the target logged meanwhile
 * (gtid_strict_mode). 0 free, -EALREADY (refused, said why) or a status.
 */
static int pair_free(const struct reshard_backend_ops *ops, void *ctx,
                     const struct catalog_move *rec, const struct reshard_opts *opts)
{
    enum reshard_phase at = RESHARD_PREPARE;
    struct catalog_move other;
    char back[64] = "";
    int rc = ops->pair_busy(ctx, rec, &other);

    if (rc < 0)
        return reshard__fail(opts, rec->shard, rc, "%s", why(ops, ctx));
    if (rc == 0)
        return 0;
    /* Past its map flip that move can only be finished. */
    reshard_phase_parse(other.phase, &at);
    if (at < RESHARD_SWITCHED)
        snprintf(back, sizeof(back), ", shardctl move %u --abort rolls it back",
                 other.shard);
    return reshard__fail(opts, rec->shard, -EALREADY,
                         "refused: shard %u is moving from %s to %s (move #%" PRIu64
                         ", phase %s); move shard %u after it (one move at a time "
                         "between two hosts: shardctl move %u %s finishes that one%s)",
                         other.shard, other.src, other.dst, other.id, other.phase,
                         rec->shard, other.shard, other.dst, back);
}

int reshard_move_create(const struct reshard_backend *b, uint32_t shard, const char *to,
                        const struct reshard_opts *opts, struct reshard_move **out)
{
    const struct reshard_backend_ops *ops = b->ops;
    struct reshard_move *m;
    char host[SHARDMAP_NAME_MAX];
    int rc, found;

    *out = NULL;
    m = calloc(1, sizeof(*m));
    if (m == NULL)
        return reshard__fail(opts, shard, -ENOMEM, "out of memory");
    m->ops = ops;
    m->opts = *opts;
    m->shard = shard;
    m->started_ms = now_ms();
    m->rec.pause_ms = m->rec.verify_diffs = -1;
    rc = claim(b, shard, opts, "refused: another shardctl is moving shard %u right now",
               &m->ctx);
    if (rc < 0)
        goto error;
    if ((found = ops->load(m->ctx, &m->rec)) < 0) {
        rc = reshard__fail(opts, shard, found, "%s", why(ops, m->ctx));
        goto error;
    }
    if (found) {
        if (to != NULL && strcmp(to, m->rec.dst) != 0) {
            enum reshard_phase at = RESHARD_NPHASE;

            /* Past the map flip (switched on), --abort is refused: only finish it. */
            reshard_phase_parse(m->rec.phase, &at);
            if (at >= RESHARD_SWITCHED && at < RESHARD_NPHASE)
                rc = reshard__fail(opts, shard, BC_EEXISTS,
                                   "refused: move #%" PRIu64
                                   " of shard %u to %s is unfinished (phase %s, past "
                                   "the map flip); finish it with shardctl move %u %s, "
                                   "then move the shard where you want it",
                                   m->rec.id, shard, m->rec.dst, m->rec.phase, shard,
                                   m->rec.dst);
            else
                rc = reshard__fail(
                    opts, shard, BC_EEXISTS,
                    "refused: move #%" PRIu64
                    " of shard %u to %s is unfinished (phase %s); resume it "
                    "with shardctl move %u %s, or roll it back with shardctl "
                    "move %u --abort",
                    m->rec.id, shard, m->rec.dst, m->rec.phase, shard, m->rec.dst,
                    shard);
            goto error;
        }
        if (reshard_phase_parse(m->rec.phase, &m->phase) < 0) {
            rc = reshard__fail(opts, shard, BC_EMISMATCH,
                               "unknown phase '%s' in the move record", m->rec.phase);
            goto error;
        }
        m->resumed = 1;
        m->keep_source = opts->keep_source || m->rec.keep_source;
    } else {
        if (to == NULL) {
            reshard__note(opts, shard, "shard %u: no unfinished move", shard);
            rc = RESHARD_NOTHING;
            goto error;
        }
        if ((rc = ops->shard_host(m->ctx, host)) < 0) {
            rc = reshard__fail(opts, shard, rc, "reading the shard map: %s",
                               why(ops, m->ctx));
            goto error;
        }
        if (strcmp(host, to) == 0) {
            reshard__note(opts, shard, "shard %u is already on %s", shard, to);
            rc = RESHARD_NOTHING;
            goto error;
        }
        m->rec.shard = shard;
        snprintf(m->rec.src, sizeof(m->rec.src), "%s", host);
        snprintf(m->rec.dst, sizeof(m->rec.dst), "%s", to);
        m->rec.keep_source = m->keep_source = opts->keep_source;
        m->phase = RESHARD_PREPARE;
        if ((rc = pair_free(ops, m->ctx, &m->rec, opts)) < 0)
            goto error;
    }
    if ((rc = ops->attach(m->ctx, &m->rec)) < 0) {
        rc = reshard__fail(opts, shard, rc, "%s", why(ops, m->ctx));
        goto error;
    }
    if (!found) {
        snprintf(m->rec.phase, sizeof(m->rec.phase), "%s",
                 reshard_phase_name(RESHARD_PREPARE));
        rc = ops->create(m->ctx, &m->rec);
        if (rc == -EALREADY) {
            /* Another tool's move between the two hosts was recorded since. */
            if ((rc = pair_free(ops, m->ctx, &m->rec, opts)) == 0)
                rc = reshard__fail(opts, shard, -EALREADY,
                                   "refused: another move from %s to %s was just "
                                   "started; move shard %u after it",
                                   m->rec.src, m->rec.dst, shard);
            goto error;
        }
        if (rc < 0) {
            rc = rc == BC_EEXISTS
                     ? reshard__fail(opts, shard, rc,
                                     "refused: another move of the shard was just "
                                     "started (%s)",
                                     why(ops, m->ctx))
                     : reshard__fail(opts, shard, rc, "%s", why(ops, m->ctx));
            goto error;
        }
        struct reshard_event ev = {.kind = RESHARD_EV_PHASE,
                                   .shard = shard,
                                   .move = m->rec.id,
                                   .from = m->rec.src,
                                   .to = m->rec.dst,
                                   .phase = RESHARD_PREPARE};
        reshard__emit(opts, &ev);
        reshard__note(opts, shard, "shard %u: move #%" PRIu64 " %s -> %s", shard,
                      m->rec.id, m->rec.src, m->rec.dst);
    }
    *out = m;
    return 0;
error:
    reshard_move_destroy(m);
    return rc;
}

void reshard_move_destroy(struct reshard_move *m)
{
    if (m == NULL)
        return;
    if (m->ctx != NULL)
        m->ops->end(m->ctx);
    free(m);
}

enum reshard_phase reshard_move_phase(const struct reshard_move *m)
{
    return m->phase;
}

const struct catalog_move *reshard_move_record(const struct reshard_move *m)
{
    return &m->rec;
}

void reshard_move_defer_cleanup(struct reshard_move *m, int defer)
{
    m->defer_cleanup = defer;
}

int reshard_move(const struct reshard_backend *b, uint32_t shard, const char *to,
                 int abort, const struct reshard_opts *opts)
{
    struct reshard_move *m;
    int rc = reshard_move_create(b, shard, abort ? NULL : to, opts, &m);

    if (rc != 0)
        return rc;
    rc = abort ? reshard_move_abort(m) : reshard_move_run(m);
    reshard_move_destroy(m);
    return rc;
}

/* ---- verify -------------------------------------------------------------------- */

int reshard_verify(const struct reshard_backend *b, uint32_t shard, const char *against,
                   const struct reshard_opts *opts, struct reshard_compare *res)
{
    const struct reshard_backend_ops *ops = b->ops;
    struct catalog_move rec = {.pause_ms = -1, .verify_diffs = -1};
    void *ctx = NULL;
    int rc, found;

    memset(res, 0, sizeof(*res));
    rc = claim(b, shard, opts,
               "refused: a shardctl move of shard %u is running; verify after it "
               "finished, or stop it (a re-run resumes it)",
               &ctx);
    if (rc < 0)
        return rc;
    if ((found = ops->load(ctx, &rec)) < 0) {
        rc = reshard__fail(opts, shard, found, "%s", why(ops, ctx));
        goto out;
    }
    if (found) {
        enum reshard_phase phase = RESHARD_NPHASE;

        reshard_phase_parse(rec.phase, &phase); /* an unknown name stays NPHASE */
        if (phase != RESHARD_CATCHUP && phase != RESHARD_CUTOVER) {
            rc = reshard__fail(opts, shard, -EAGAIN,
                               "move #%" PRIu64
                               " of shard %u is in phase %s: nothing to compare yet; "
                               "resume it (it verifies at the cut-over) or --abort it",
                               rec.id, shard, rec.phase);
            goto out;
        }
        if ((rc = ops->attach(ctx, &rec)) < 0) {
            rc = reshard__fail(opts, shard, rc, "%s", why(ops, ctx));
            goto out;
        }
        reshard__note(
            opts, shard,
            "shard %u: comparing %s and %s at one binlog position (move #%" PRIu64
            " in %s)",
            shard, rec.src, rec.dst, rec.id, rec.phase);
        rc = ops->compare_in_flight(ctx, res);
    } else {
        rec.shard = shard;
        if ((rc = ops->shard_host(ctx, rec.dst)) < 0) {
            rc = reshard__fail(opts, shard, rc, "reading the shard map: %s",
                               why(ops, ctx));
            goto out;
        }
        if (against != NULL && strcmp(against, rec.dst) == 0) {
            rc = reshard__fail(opts, shard, -EINVAL,
                               "shard %u lives on %s: no copy there to compare "
                               "(--against names the host of another copy of it)",
                               shard, rec.dst);
            goto out;
        }
        if (against != NULL) {
            snprintf(rec.src, sizeof(rec.src), "%s", against);
        } else if ((rc = ops->kept_source(ctx, rec.src)) < 0) {
            rc = reshard__fail(opts, shard, rc, "%s", why(ops, ctx));
            goto out;
        } else if (rc == 0 || strcmp(rec.src, rec.dst) == 0) {
            /* A copy kept on the host the shard went back to is the live one. */
            rc = reshard__fail(opts, shard, -EINVAL,
                               "no copy there to compare: no move kept a copy of shard "
                               "%u that is still there besides the live one on %s; "
                               "give --against HOST to compare it with another copy",
                               shard, rec.dst);
            goto out;
        }
        if ((rc = ops->attach(ctx, &rec)) < 0) {
            rc = reshard__fail(opts, shard, rc, "%s", why(ops, ctx));
            goto out;
        }
        reshard__note(opts, shard,
                      "shard %u: comparing the copy on %s with the live one on %s "
                      "(writes made since the cut-over show as differences)",
                      shard, rec.src, rec.dst);
        rc = ops->compare_copies(ctx, res);
    }
    if (rc < 0) {
        rc = reshard__fail(opts, shard, rc, "%s", why(ops, ctx));
        goto out;
    }
    reshard__note(opts, shard,
                  "shard %u: %s: %u tables, %" PRIu64
                  " rows, %u chunks, %u differences",
                  shard, res->diffs ? "DIFFERENT" : "equal", res->tables, res->rows,
                  res->chunks, res->diffs);
    rc = res->diffs ? RESHARD_DIFFER : RESHARD_OK;
out:
    ops->end(ctx);
    return rc;
}
