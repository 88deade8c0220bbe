/*
 * test_reshard.c: the move engine's phase machine against a fake backend.
 *
 * The fake keeps a catalog in memory (the shard map, the moves table, the
 * shards' locks) and records every host operation; tests make any
 * operation fail once, as a crash or a refusal would, and then run the move
 * again from its record, as an operator re-running shardctl would.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "reshard/reshard.h"

#define NSHARD 64 /* the smallest shard count a map may have */
#define MAXMOVES 32

/* ---- the fake ---------------------------------------------------------------- */

/* A rebalance calls the fake from several threads: every entry locks. */
static pthread_mutex_t fake_lock = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP;
static pthread_mutex_t *guard_take(void)
{
    pthread_mutex_lock(&fake_lock);
    return &fake_lock;
}
static void guard_drop(pthread_mutex_t **m)
{
    pthread_mutex_unlock(*m);
}
#define GUARD                                                                          \
    pthread_mutex_t *guard_ __attribute__((cleanup(guard_drop))) = guard_take()

struct fake {
    char map[NSHARD][SHARDMAP_NAME_MAX];
    int state[NSHARD];
    uint64_t version;
    struct catalog_move moves[MAXMOVES];
    uint32_t nmove;
    int locked[NSHARD];
    /* hosts */
    int target_copy[NSHARD]; /* 0 none, 1 fenced retired copy, 2 live */
    int source_copy[NSHARD]; /* 1 while the source copy exists */
    int fenced[NSHARD];
    int replicating[NSHARD];
    /* behaviour */
    char fail_op[32]; /* the next call of this op fails (once) */
    int fail_status;
    int fence_busy; /* fence answers BC_ELOCKWAIT this many times */
    int drain_slow; /* drain answers BC_ETIMEOUT this many times */
    uint32_t diffs_at_fence, diffs_in_flight, diffs_copies;
    int no_snapshot; /* compare_at_fence has no snapshot (a resumed run) */
    int plan_stale;
    char hosts[8][SHARDMAP_NAME_MAX];
    int nhost;
    /* what happened */
    char log[4096];
    char events[4096];
    char hooks[256];
    int ncutover_attempt;
    int pair_of[NSHARD]; /* from * 4 + to of the shard's replication */
    int pair_max;
    char last_error[256];
};

struct ctx {
    struct fake *f;
    uint32_t shard;
    int holds_lock;
    struct catalog_move mv;
};

static int host_index(const char *name)
{
    return name[0] == 'd' && name[1] == 'b' && name[2] >= '1' && name[2] <= '4'
               ? name[2] - '1'
               : 0;
}

static void logop(struct fake *f, const char *op)
{
    strncat(f->log, op, sizeof(f->log) - strlen(f->log) - 2);
    strcat(f->log, " ");
}

/* Logs op; returns its injected failure, if any. */
static int op(struct ctx *c, const char *name)
{
    struct fake *f = c->f;

    logop(f, name);
    if (strcmp(f->fail_op, name) == 0) {
        f->fail_op[0] = '\0';
        snprintf(f->last_error, sizeof(f->last_error), "%s failed (injected)", name);
        return f->fail_status ? f->fail_status : BC_EDOWN;
    }
    return 0;
}

static struct catalog_move *active(struct fake *f, uint32_t shard)
{
    for (uint32_t i = 0; i < f->nmove; i++)
        if (f->moves[i].shard == shard && strcmp(f->moves[i].phase, "done") != 0 &&
            strcmp(f->moves[i].phase, "aborted") != 0)
            return &f->moves[i];
    return NULL;
}

static struct catalog_move *by_id(struct fake *f, uint64_t id)
{
    return id >= 1 && id <= f->nmove ? &f->moves[id - 1] : NULL;
}

static int f_begin(void *be, uint32_t shard, const struct reshard_opts *opts,
                   void **out)
{
    GUARD;
    struct ctx *c;

    (void)opts;
    if (shard >= NSHARD)
        return BC_ESHARD;
    c = calloc(1, sizeof(*c));
    c->f = be;
    c->shard = shard;
    *out = c;
    return 0;
}

static void f_end(void *ctx)
{
    GUARD;
    struct ctx *c = ctx;

    if (c->holds_lock)
        c->f->locked[c->shard] = 0;
    free(c);
}

static const char *f_last_error(void *ctx)
{
    return ((struct ctx *)ctx)->f->last_error;
}

static int f_lock(void *ctx, int *got)
{
    GUARD;
    struct ctx *c = ctx;
    int rc = op(c, "lock");

    if (rc < 0)
        return rc;
    *got = !c->f->locked[c->shard];
    if (*got)
        c->f->locked[c->shard] = c->holds_lock = 1;
    return 0;
}

static int f_load(void *ctx, struct catalog_move *mv)
{
    GUARD;
    struct ctx *c = ctx;
    struct catalog_move *a = active(c->f, c->shard);

    if (a == NULL)
        return 0;
    *mv = *a;
    return 1;
}

static int f_shard_host(void *ctx, char host[SHARDMAP_NAME_MAX])
{
    GUARD;
    struct ctx *c = ctx;

    snprintf(host, SHARDMAP_NAME_MAX, "%s", c->f->map[c->shard]);
    return 0;
}

static int f_create(void *ctx, struct catalog_move *mv)
{
    GUARD;
    struct ctx *c = ctx;
    int rc = op(c, "create");

    if (rc < 0)
        return rc;
    if (active(c->f, c->shard) != NULL)
        return BC_EEXISTS;
    mv->id = ++c->f->nmove;
    c->f->moves[mv->id - 1] = *mv;
    c->f->state[c->shard] = SHARDMAP_STATE_MOVING;
    return 0;
}

static int f_save(void *ctx, const struct catalog_move *mv, unsigned fields)
{
    GUARD;
    struct ctx *c = ctx;
    struct catalog_move *r = by_id(c->f, mv->id);
    char name[48];
    int rc;

    snprintf(name, sizeof(name), "save:%s", mv->phase);
    if ((rc = op(c, name)) < 0)
        return rc;
    snprintf(r->phase, sizeof(r->phase), "%s", mv->phase);
    if (fields & CATALOG_MOVE_COPY) {
        snprintf(r->binlog_file, sizeof(r->binlog_file), "%s", mv->binlog_file);
        r->binlog_pos = mv->binlog_pos;
        r->rows_copied = mv->rows_copied;
    }
    if (fields & CATALOG_MOVE_VERIFY)
        r->verify_diffs = mv->verify_diffs;
    if (fields & CATALOG_MOVE_FINISHED)
        snprintf(r->finished_at, sizeof(r->finished_at), "now");
    return 0;
}

static int f_set_state(void *ctx, enum shardmap_state state)
{
    GUARD;
    struct ctx *c = ctx;

    c->f->state[c->shard] = (int)state;
    return 0;
}

static int f_flip(void *ctx, const struct catalog_move *mv)
{
    GUARD;
    struct ctx *c = ctx;
    struct catalog_move *r = by_id(c->f, mv->id);
    int rc = op(c, "flip");

    if (rc < 0)
        return rc;
    snprintf(c->f->map[c->shard], SHARDMAP_NAME_MAX, "%s", mv->dst);
    c->f->state[c->shard] = SHARDMAP_STATE_ACTIVE;
    c->f->version++;
    /* The roles swap: a move back finds the old source's fenced copy. */
    c->f->target_copy[c->shard] = 1;
    snprintf(r->phase, sizeof(r->phase), "switched");
    r->pause_ms = mv->pause_ms;
    return 0;
}

static int f_kept_source(void *ctx, char host[SHARDMAP_NAME_MAX])
{
    GUARD;
    struct ctx *c = ctx;

    for (uint32_t i = c->f->nmove; i-- > 0;)
        if (c->f->moves[i].shard == c->shard && c->f->moves[i].keep_source &&
            strcmp(c->f->moves[i].phase, "done") == 0) {
            snprintf(host, SHARDMAP_NAME_MAX, "%s", c->f->moves[i].src);
            return 1;
        }
    return 0;
}

static int f_attach(void *ctx, const struct catalog_move *mv)
{
    GUARD;
    struct ctx *c = ctx;
    int rc = op(c, "attach");

    c->mv = *mv;
    return rc;
}

static int f_target_live(void *ctx)
{
    GUARD;
    struct ctx *c = ctx;
    int rc = op(c, "target_live");

    return rc < 0 ? rc : c->f->target_copy[c->shard] == 2;
}

static int f_copy(void *ctx, struct catalog_move *mv)
{
    GUARD;
    struct ctx *c = ctx;
    int rc = op(c, "copy");

    if (rc < 0)
        return rc;
    c->f->target_copy[c->shard] = 1; /* fenced until the cut-over */
    snprintf(mv->binlog_file, sizeof(mv->binlog_file), "bin.000001");
    mv->binlog_pos = 4242;
    mv->rows_copied = 100;
    return 0;
}

static int f_replicate(void *ctx, const struct catalog_move *mv)
{
    GUARD;
    struct ctx *c = ctx;
    int rc = op(c, "replicate");

    assert_int_equal(mv->binlog_pos, 4242);
    if (rc == 0) {
        int pair = host_index(mv->src) * 4 + host_index(mv->dst), n = 1;
        for (int s = 0; s < NSHARD; s++)
            n += c->f->replicating[s] && c->f->pair_of[s] == pair;
        if (n > c->f->pair_max)
            c->f->pair_max = n;
        c->f->pair_of[c->shard] = pair;
        c->f->replicating[c->shard] = 1;
    }
    return rc;
}

static int f_start_replication(void *ctx)
{
    GUARD;
    struct ctx *c = ctx;

    logop(c->f, "start_replication");
    return 0;
}

static int f_lag(void *ctx, struct reshard_lag *lag)
{
    struct ctx *c = ctx;
    int rc = 0;

    {
        GUARD;
        lag->bytes = 0;
        lag->behind_s = 0;
        if (strcmp(c->f->fail_op, "lag") == 0)
            rc = op(c, "lag");
    }
    /* Replication takes a while: moves of a rebalance overlap here. */
    usleep(3000);
    return rc;
}

static int f_compare_in_flight(void *ctx, struct reshard_compare *res)
{
    GUARD;
    struct ctx *c = ctx;
    int rc = op(c, "compare_in_flight");

    memset(res, 0, sizeof(*res));
    res->tables = 5;
    res->diffs = c->f->diffs_in_flight;
    return rc;
}

static int f_fence(void *ctx)
{
    GUARD;
    struct ctx *c = ctx;
    int rc = op(c, "fence");

    c->f->ncutover_attempt++;
    if (rc < 0)
        return rc;
    if (c->f->fence_busy > 0) {
        c->f->fence_busy--;
        return BC_ELOCKWAIT;
    }
    c->f->fenced[c->shard] = 1;
    return 0;
}

static int f_drain(void *ctx)
{
    GUARD;
    struct ctx *c = ctx;
    int rc = op(c, "drain");

    if (rc < 0)
        return rc;
    if (c->f->drain_slow > 0) {
        c->f->drain_slow--;
        return BC_ETIMEOUT;
    }
    return 0;
}

static int f_switch_target(void *ctx)
{
    GUARD;
    struct ctx *c = ctx;
    int rc = op(c, "switch_target");

    if (rc == 0) {
        c->f->replicating[c->shard] = 0;
        c->f->target_copy[c->shard] = 2;
    }
    return rc;
}

static int f_unfence_source(void *ctx)
{
    GUARD;
    struct ctx *c = ctx;

    logop(c->f, "unfence_source");
    c->f->fenced[c->shard] = 0;
    return 0;
}

static int f_compare_at_fence(void *ctx, struct reshard_compare *res)
{
    GUARD;
    struct ctx *c = ctx;
    int rc = op(c, "compare_at_fence");

    memset(res, 0, sizeof(*res));
    if (rc < 0)
        return rc;
    if (c->f->no_snapshot)
        return BC_ENOTFOUND;
    res->tables = 5;
    res->diffs = c->f->diffs_at_fence;
    return 0;
}

static int f_compare_copies(void *ctx, struct reshard_compare *res)
{
    GUARD;
    struct ctx *c = ctx;
    int rc = op(c, "compare_copies");

    memset(res, 0, sizeof(*res));
    res->diffs = c->f->diffs_copies;
    return rc;
}

static int f_drop_channel(void *ctx)
{
    GUARD;
    struct ctx *c = ctx;

    logop(c->f, "drop_channel");
    c->f->replicating[c->shard] = 0;
    return 0;
}

static int f_drop_source(void *ctx)
{
    GUARD;
    struct ctx *c = ctx;
    int rc = op(c, "drop_source");

    if (rc == 0)
        c->f->source_copy[c->shard] = 0;
    return rc;
}

static int f_drop_target(void *ctx)
{
    GUARD;
    struct ctx *c = ctx;
    int rc = op(c, "drop_target");

    if (rc == 0)
        c->f->target_copy[c->shard] = 0;
    return rc;
}

static int f_check_plan(void *be, const struct shardmap_plan *plan)
{
    GUARD;
    struct fake *f = be;

    if (f->plan_stale || plan->base_version != f->version)
        return BC_EMISMATCH;
    return 0;
}

static int f_add_host(void *be, const struct shardmap_host_conf *h, int *added)
{
    GUARD;
    struct fake *f = be;

    for (int i = 0; i < f->nhost; i++)
        if (strcmp(f->hosts[i], h->name) == 0) {
            *added = 0;
            return 0;
        }
    snprintf(f->hosts[f->nhost++], SHARDMAP_NAME_MAX, "%s", h->name);
    f->version++;
    *added = 1;
    return 0;
}

static int f_remove_host(void *be, const char *name, int *removed)
{
    GUARD;
    struct fake *f = be;

    *removed = 0;
    for (int s = 0; s < NSHARD; s++)
        if (strcmp(f->map[s], name) == 0)
            return 0;
    for (int i = 0; i < f->nhost; i++)
        if (strcmp(f->hosts[i], name) == 0) {
            memmove(f->hosts[i], f->hosts[i + 1],
                    (size_t)(f->nhost - i - 1) * SHARDMAP_NAME_MAX);
            f->nhost--;
            f->version++;
            *removed = 1;
        }
    return 0;
}

static const struct reshard_backend_ops fake_ops = {
    .begin = f_begin,
    .end = f_end,
    .last_error = f_last_error,
    .lock = f_lock,
    .load = f_load,
    .shard_host = f_shard_host,
    .create = f_create,
    .save = f_save,
    .set_state = f_set_state,
    .flip = f_flip,
    .kept_source = f_kept_source,
    .attach = f_attach,
    .target_live = f_target_live,
    .copy = f_copy,
    .replicate = f_replicate,
    .start_replication = f_start_replication,
    .lag = f_lag,
    .compare_in_flight = f_compare_in_flight,
    .fence = f_fence,
    .drain = f_drain,
    .switch_target = f_switch_target,
    .unfence_source = f_unfence_source,
    .compare_at_fence = f_compare_at_fence,
    .compare_copies = f_compare_copies,
    .drop_channel = f_drop_channel,
    .drop_source = f_drop_source,
    .drop_target = f_drop_target,
    .check_plan = f_check_plan,
    .add_host = f_add_host,
    .remove_host = f_remove_host,
};

static void on_event(void *arg, const struct reshard_event *ev)
{
    GUARD;
    struct fake *f = arg;
    char one[64] = "";

    switch (ev->kind) {
    case RESHARD_EV_PHASE:
        snprintf(one, sizeof(one), "%s ", reshard_phase_name(ev->phase));
        break;
    case RESHARD_EV_CUTOVER:
        snprintf(one, sizeof(one), "CUTOVER(%d) ", ev->cutover.attempt);
        break;
    case RESHARD_EV_VERIFY:
        snprintf(one, sizeof(one), "VERIFY(%s) ",
                 ev->verify.skipped    ? "skipped"
                 : ev->verify.recorded ? "recorded"
                                       : "new");
        break;
    case RESHARD_EV_DONE:
        snprintf(one, sizeof(one), "DONE ");
        break;
    case RESHARD_EV_ERROR:
        snprintf(one, sizeof(one), "ERROR ");
        break;
    case RESHARD_EV_HOST_ADDED:
    case RESHARD_EV_HOST_REMOVED:
        snprintf(one, sizeof(one), "%s(%s) ",
                 ev->kind == RESHARD_EV_HOST_ADDED ? "ADDED" : "REMOVED", ev->text);
        break;
    default:
        break;
    }
    strncat(f->events, one, sizeof(f->events) - strlen(f->events) - 1);
}

static void on_hook(void *arg, uint32_t shard, enum reshard_point at)
{
    GUARD;
    struct fake *f = arg;
    char one[32];

    snprintf(one, sizeof(one), "%u:%s ", shard, reshard_point_name(at));
    strncat(f->hooks, one, sizeof(f->hooks) - strlen(f->hooks) - 1);
}

struct world {
    struct fake f;
    struct reshard_backend b;
    struct reshard_opts o;
};

static int setup(void **state)
{
    struct world *w = calloc(1, sizeof(*w));

    for (int s = 0; s < NSHARD; s++) {
        snprintf(w->f.map[s], SHARDMAP_NAME_MAX, "db%d", 1 + s % 2);
        w->f.source_copy[s] = 1;
    }
    w->f.version = 1;
    w->f.nhost = 2;
    snprintf(w->f.hosts[0], SHARDMAP_NAME_MAX, "db1");
    snprintf(w->f.hosts[1], SHARDMAP_NAME_MAX, "db2");
    w->b.ops = &fake_ops;
    w->b.be = &w->f;
    reshard_opts_init(&w->o);
    w->o.grace_s = 0;
    w->o.on_event = on_event;
    w->o.event_arg = &w->f;
    w->o.hook = on_hook;
    w->o.hook_arg = &w->f;
    *state = w;
    return 0;
}

static int teardown(void **state)
{
    free(*state);
    return 0;
}

static void clear_logs(struct fake *f)
{
    f->log[0] = f->events[0] = f->hooks[0] = '\0';
}

/* ---- tests ------------------------------------------------------------------- */

static void test_phase_names_round_trip(void **state)
{
    (void)state;
    for (int p = 0; p < RESHARD_NPHASE; p++) {
        enum reshard_phase back;
        assert_int_equal(reshard_phase_parse(reshard_phase_name(p), &back), 0);
        assert_int_equal(back, p);
    }
    enum reshard_phase x;
    assert_int_equal(reshard_phase_parse("copying", &x), -EINVAL);
    for (int a = 0; a < RESHARD_NPOINT; a++) {
        enum reshard_point back;
        assert_int_equal(reshard_point_parse(reshard_point_name(a), &back), 0);
        assert_int_equal(back, a);
    }
}

/* A move from start to end passes every phase once, in order. */
static void test_move_passes_every_transition(void **state)
{
    struct world *w = *state;

    w->o.grace_s = 1;
    assert_int_equal(reshard_move(&w->b, 2, "db2", 0, &w->o), RESHARD_OK);
    assert_string_equal(w->f.events, "prepare copy copied catchup cutover CUTOVER(1) "
                                     "switched verified cleanup done DONE ");
    assert_string_equal(w->f.log,
                        "lock attach create target_live save:copy copy save:copied "
                        "replicate save:catchup compare_in_flight save:catchup "
                        "save:cutover start_replication fence drain switch_target flip "
                        "drop_channel compare_at_fence save:verified save:cleanup "
                        "drop_source save:done ");
    assert_string_equal(w->f.hooks, "2:catchup 2:fenced 2:switched 2:cleanup ");
    assert_string_equal(w->f.map[2], "db2");
    assert_int_equal(w->f.state[2], SHARDMAP_STATE_ACTIVE);
    assert_int_equal(w->f.version, 2);
    assert_int_equal(w->f.nmove, 1);
    assert_string_equal(w->f.moves[0].phase, "done");
    assert_int_equal(w->f.moves[0].verify_diffs, 0);
    assert_string_equal(w->f.moves[0].binlog_file, "bin.000001");
    assert_int_equal(w->f.source_copy[2], 0);
    assert_int_equal(w->f.locked[2], 0); /* released with the context */
}

/* Stepping by hand: one recorded phase per step. */
static void test_step_records_one_phase_at_a_time(void **state)
{
    struct world *w = *state;
    struct reshard_move *m;
    static const enum reshard_phase want[] = {
        RESHARD_COPY,    RESHARD_COPIED,   RESHARD_CATCHUP,
        RESHARD_CUTOVER, RESHARD_SWITCHED, RESHARD_VERIFIED,
    };

    assert_int_equal(reshard_move_create(&w->b, 3, "db1", &w->o, &m), 0);
    assert_int_equal(reshard_move_phase(m), RESHARD_PREPARE);
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        assert_int_equal(reshard_move_step(m), 1);
        assert_int_equal(reshard_move_phase(m), want[i]);
        assert_string_equal(w->f.moves[0].phase, reshard_phase_name(want[i]));
    }
    assert_int_equal(reshard_move_step(m), 0);
    assert_int_equal(reshard_move_phase(m), RESHARD_DONE);
    assert_int_equal(reshard_move_step(m), 0);
    reshard_move_destroy(m);
}

/*
 * A crash in any step leaves its phase recorded; running the move again
 * resumes there and finishes it, with one record and the map flipped once.
 */
static void test_resume_from_each_phase(void **state)
{
    static const struct {
        const char *op;
        const char *phase;
        int copies; /* the resumed run copies (again) */
    } crash[] = {
        {"target_live", "prepare", 1},  {"copy", "copy", 1},
        {"replicate", "copied", 0},     {"compare_in_flight", "catchup", 0},
        {"fence", "cutover", 0},        {"compare_at_fence", "switched", 0},
        {"drop_source", "verified", 0}, {"save:done", "verified", 0},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(crash) / sizeof(crash[0]); i++) {
        void *st;
        setup(&st);
        struct world *w = st;
        snprintf(w->f.fail_op, sizeof(w->f.fail_op), "%s", crash[i].op);
        assert_true(reshard_move(&w->b, 5, "db1", 0, &w->o) < 0);
        assert_string_equal(w->f.moves[0].phase, crash[i].phase);
        assert_non_null(strstr(w->f.events, "ERROR"));
        clear_logs(&w->f);
        /* The re-run: the same command, or --resume (no host). */
        assert_int_equal(reshard_move(&w->b, 5, i % 2 ? NULL : "db1", 0, &w->o),
                         RESHARD_OK);
        assert_string_equal(w->f.moves[0].phase, "done");
        assert_int_equal(w->f.nmove, 1);
        assert_string_equal(w->f.map[5], "db1");
        assert_int_equal(w->f.version, 2);
        /* The resumed run started at the recorded phase, not before it. */
        assert_null(strstr(w->f.log, "create"));
        assert_int_equal(strstr(w->f.log, " copy ") != NULL, crash[i].copies);
        teardown(&st);
    }
}

/* Resumed after the flip, the comparison recorded in catch-up stands. */
static void test_resume_after_flip_reports_recorded_comparison(void **state)
{
    struct world *w = *state;

    snprintf(w->f.fail_op, sizeof(w->f.fail_op), "compare_at_fence");
    assert_true(reshard_move(&w->b, 4, "db2", 0, &w->o) < 0);
    w->f.no_snapshot = 1;
    clear_logs(&w->f);
    assert_int_equal(reshard_move(&w->b, 4, NULL, 0, &w->o), RESHARD_OK);
    assert_non_null(strstr(w->f.events, "VERIFY(recorded)"));
}

static void test_no_verify_skips_both_comparisons(void **state)
{
    struct world *w = *state;

    w->o.no_verify = 1;
    assert_int_equal(reshard_move(&w->b, 1, "db1", 0, &w->o), RESHARD_OK);
    assert_null(strstr(w->f.log, "compare"));
    assert_non_null(strstr(w->f.events, "VERIFY(skipped)"));
}

static void test_abort_before_flip_rolls_back(void **state)
{
    struct world *w = *state;

    snprintf(w->f.fail_op, sizeof(w->f.fail_op), "fence");
    assert_true(reshard_move(&w->b, 6, "db2", 0, &w->o) < 0);
    assert_string_equal(w->f.moves[0].phase, "cutover");
    clear_logs(&w->f);
    assert_int_equal(reshard_move(&w->b, 6, NULL, 1, &w->o), 0);
    assert_string_equal(w->f.moves[0].phase, "aborted");
    assert_string_equal(w->f.moves[0].finished_at, "now");
    assert_string_equal(w->f.map[6], "db1");
    assert_int_equal(w->f.state[6], SHARDMAP_STATE_ACTIVE);
    assert_int_equal(w->f.target_copy[6], 0);
    assert_int_equal(w->f.fenced[6], 0);
    assert_string_equal(w->f.log, "lock attach drop_channel unfence_source drop_target "
                                  "save:aborted ");
    /* Nothing unfinished is left: a new move may start. */
    assert_int_equal(reshard_move(&w->b, 6, NULL, 1, &w->o), RESHARD_NOTHING);
    assert_int_equal(reshard_move(&w->b, 6, "db2", 0, &w->o), RESHARD_OK);
    assert_int_equal(w->f.nmove, 2);
}

static void test_abort_after_flip_is_refused(void **state)
{
    struct world *w = *state;

    snprintf(w->f.fail_op, sizeof(w->f.fail_op), "compare_at_fence");
    assert_true(reshard_move(&w->b, 6, "db2", 0, &w->o) < 0);
    clear_logs(&w->f);
    assert_int_equal(reshard_move(&w->b, 6, NULL, 1, &w->o), BC_EMISMATCH);
    assert_string_equal(w->f.moves[0].phase, "switched");
    assert_string_equal(w->f.map[6], "db2");
    assert_null(strstr(w->f.log, "drop_target"));
}

static void test_second_move_is_refused(void **state)
{
    struct world *w = *state;
    struct reshard_move *m;

    /* Another tool holds the shard's lock. */
    assert_int_equal(reshard_move_create(&w->b, 2, "db2", &w->o, &m), 0);
    assert_int_equal(reshard_move(&w->b, 2, "db2", 0, &w->o), -EBUSY);
    reshard_move_destroy(m); /* its record stays: prepare */
    /* An unfinished move to another host. */
    assert_int_equal(reshard_move(&w->b, 2, "db3", 0, &w->o), BC_EEXISTS);
    assert_int_equal(w->f.nmove, 1);
    /* The record itself refuses a second one (two tools racing past the lock). */
    w->f.moves[0].shard = 7;
    assert_int_equal(reshard_move(&w->b, 2, "db2", 0, &w->o), RESHARD_OK);
    w->f.moves[1].phase[0] = 'x'; /* unfinished again */
    assert_int_equal(reshard_move_create(&w->b, 2, "db1", &w->o, &m), BC_EEXISTS);
}

static void test_nothing_to_do(void **state)
{
    struct world *w = *state;

    assert_int_equal(reshard_move(&w->b, 0, "db1", 0, &w->o), RESHARD_NOTHING);
    assert_int_equal(reshard_move(&w->b, 0, NULL, 0, &w->o), RESHARD_NOTHING);
    assert_int_equal(w->f.nmove, 0);
    assert_int_equal(reshard_move(&w->b, NSHARD, "db1", 0, &w->o), BC_ESHARD);
}

static void test_live_copy_on_target_is_refused(void **state)
{
    struct world *w = *state;

    w->f.target_copy[2] = 2;
    assert_int_equal(reshard_move(&w->b, 2, "db2", 0, &w->o), BC_EEXISTS);
    assert_string_equal(w->f.moves[0].phase, "prepare");
    assert_null(strstr(w->f.log, "copy"));
}

static void test_cutover_retries_busy_fence_and_slow_drain(void **state)
{
    struct world *w = *state;

    w->f.fence_busy = 2;
    w->f.drain_slow = 1;
    assert_int_equal(reshard_move(&w->b, 2, "db2", 0, &w->o), RESHARD_OK);
    assert_int_equal(w->f.ncutover_attempt, 4);
    assert_non_null(strstr(w->f.events, "CUTOVER(4)"));
    /* The slow drain gave the writes back before the next attempt. */
    assert_non_null(strstr(w->f.log, "drain unfence_source fence drain switch_target"));
}

static void test_cutover_gives_up_after_five_attempts(void **state)
{
    struct world *w = *state;

    w->f.fence_busy = 99;
    assert_int_equal(reshard_move(&w->b, 2, "db2", 0, &w->o), BC_ETIMEOUT);
    assert_int_equal(w->f.ncutover_attempt, 5);
    assert_string_equal(w->f.map[2], "db1");
    assert_string_equal(w->f.moves[0].phase, "cutover");
}

static void test_failed_flip_unfences_the_source(void **state)
{
    struct world *w = *state;

    snprintf(w->f.fail_op, sizeof(w->f.fail_op), "flip");
    assert_true(reshard_move(&w->b, 2, "db2", 0, &w->o) < 0);
    assert_string_equal(w->f.map[2], "db1");
    assert_int_equal(w->f.fenced[2], 0);
    assert_non_null(strstr(w->f.log, "flip start_replication unfence_source"));
}

static void test_differences_in_catchup_stop_before_cutover(void **state)
{
    struct world *w = *state;

    w->f.diffs_in_flight = 3;
    assert_int_equal(reshard_move(&w->b, 2, "db2", 0, &w->o), BC_EMISMATCH);
    assert_string_equal(w->f.moves[0].phase, "catchup");
    assert_string_equal(w->f.map[2], "db1");
    assert_null(strstr(w->f.log, "fence"));
}

static void test_differences_at_fence_keep_the_source(void **state)
{
    struct world *w = *state;

    w->f.diffs_at_fence = 2;
    assert_int_equal(reshard_move(&w->b, 2, "db2", 0, &w->o), RESHARD_DIFFER);
    assert_string_equal(w->f.moves[0].phase, "done");
    assert_int_equal(w->f.moves[0].verify_diffs, 2);
    assert_int_equal(w->f.source_copy[2], 1);
    assert_null(strstr(w->f.log, "drop_source"));
}

static int postpone_twice(void *arg)
{
    int *n = arg;

    return (*n)-- > 0;
}

static void test_postponed_cutover_waits(void **state)
{
    struct world *w = *state;
    int n = 3;

    w->o.postpone = postpone_twice;
    w->o.postpone_arg = &n;
    assert_int_equal(reshard_move(&w->b, 2, "db2", 0, &w->o), RESHARD_OK);
    assert_true(n < 0);
}

static void test_verify_compares_the_right_copies(void **state)
{
    struct world *w = *state;
    struct reshard_compare res;

    /* One copy only: nothing to compare with. */
    assert_int_equal(reshard_verify(&w->b, 2, NULL, &w->o, &res), -EINVAL);
    /* Against a named host. */
    w->f.diffs_copies = 1;
    assert_int_equal(reshard_verify(&w->b, 2, "db2", &w->o, &res), RESHARD_DIFFER);
    assert_int_equal(res.diffs, 1);
    /* A move in catch-up: compared in flight. */
    snprintf(w->f.fail_op, sizeof(w->f.fail_op), "compare_in_flight");
    assert_true(reshard_move(&w->b, 2, "db2", 0, &w->o) < 0);
    clear_logs(&w->f);
    assert_int_equal(reshard_verify(&w->b, 2, NULL, &w->o, &res), RESHARD_OK);
    assert_non_null(strstr(w->f.log, "compare_in_flight"));
    /* A move still copying: nothing to compare yet. */
    snprintf(w->f.moves[0].phase, sizeof(w->f.moves[0].phase), "copy");
    assert_int_equal(reshard_verify(&w->b, 2, NULL, &w->o, &res), -EAGAIN);
    /* A kept source is the default other copy. */
    snprintf(w->f.moves[0].phase, sizeof(w->f.moves[0].phase), "done");
    w->f.moves[0].keep_source = 1;
    w->f.diffs_copies = 0;
    assert_int_equal(reshard_verify(&w->b, 2, NULL, &w->o, &res), RESHARD_OK);
}

static void make_plan(struct world *w, struct shardmap_plan *plan, int add)
{
    struct shardmap_node nodes[3] = {{"db1", 1}, {"db2", 1}, {"db3", 1}};

    memset(plan, 0, sizeof(*plan));
    plan->base_version = w->f.version;
    plan->target = shardmap_create(NSHARD, nodes, add ? 3 : 2, 2);
    plan->moves = calloc(4, sizeof(*plan->moves));
    for (uint32_t s = 0; s < NSHARD; s++)
        plan->target->node_of[s] = (uint16_t)(s % 2);
    if (add) {
        /* Shards 0, 2 (from db1), then 1, 3 (from db2) go to db3. */
        static const uint32_t order[] = {0, 2, 1, 3};
        for (uint32_t i = 0; i < 4; i++) {
            uint32_t s = order[i];
            plan->target->node_of[s] = 2;
            plan->moves[plan->nmove++] =
                (struct shardmap_move){.shard = s, .from = s % 2, .to = 2};
        }
        plan->has_new_host = 1;
        snprintf(plan->new_host.name, sizeof(plan->new_host.name), "db3");
    }
}

static void test_rebalance_refuses_a_stale_plan(void **state)
{
    struct world *w = *state;
    struct shardmap_plan plan;

    make_plan(w, &plan, 1);
    plan.base_version = w->f.version - 1 + 7;
    assert_int_equal(reshard_rebalance(&w->b, &plan, &w->o), BC_EMISMATCH);
    assert_int_equal(w->f.nmove, 0);
    assert_int_equal(w->f.nhost, 2);
    shardmap_plan_deinit(&plan);
}

static void test_rebalance_runs_every_move_and_drains(void **state)
{
    struct world *w = *state;
    struct shardmap_plan plan;

    make_plan(w, &plan, 1);
    w->o.parallel = 2;
    w->o.hook = NULL;
    assert_int_equal(reshard_rebalance(&w->b, &plan, &w->o), RESHARD_OK);
    for (uint32_t s = 0; s < 4; s++)
        assert_string_equal(w->f.map[s], "db3");
    assert_int_equal(w->f.nmove, 4);
    for (uint32_t i = 0; i < 4; i++)
        assert_string_equal(w->f.moves[i].phase, "done");
    assert_non_null(strstr(w->f.events, "ADDED(db3)"));
    /* Two at a time, but never two between one pair of hosts. */
    assert_int_equal(w->f.pair_max, 1);
    shardmap_plan_deinit(&plan);
    /* Drain db3 again: it leaves the map. */
    make_plan(w, &plan, 0);
    memset(plan.moves, 0, 4 * sizeof(*plan.moves));
    for (uint32_t s = 0; s < 4; s++)
        plan.moves[plan.nmove++] =
            (struct shardmap_move){.shard = s, .from = 2, .to = s % 2};
    shardmap_destroy(plan.target);
    struct shardmap_node nodes[3] = {{"db1", 1}, {"db2", 1}, {"db3", 1}};
    plan.target = shardmap_create(NSHARD, nodes, 3, 3);
    for (uint32_t s = 0; s < NSHARD; s++)
        plan.target->node_of[s] = (uint16_t)(s % 2);
    plan.base_version = w->f.version;
    clear_logs(&w->f);
    assert_int_equal(reshard_rebalance(&w->b, &plan, &w->o), RESHARD_OK);
    assert_non_null(strstr(w->f.events, "REMOVED(db3)"));
    assert_int_equal(w->f.nhost, 2);
    shardmap_plan_deinit(&plan);
}

static void test_rebalance_failed_move_keeps_others(void **state)
{
    struct world *w = *state;
    struct shardmap_plan plan;

    make_plan(w, &plan, 1);
    w->f.target_copy[1] = 2; /* shard 1's move is refused */
    assert_true(reshard_rebalance(&w->b, &plan, &w->o) < 0);
    assert_string_equal(w->f.map[0], "db3");
    assert_string_equal(w->f.map[1], "db2");
    assert_string_equal(w->f.map[2], "db3");
    assert_int_equal(w->f.nhost, 3); /* db3 stays: nothing was drained */
    shardmap_plan_deinit(&plan);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_phase_names_round_trip),
        cmocka_unit_test_setup_teardown(test_move_passes_every_transition, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_step_records_one_phase_at_a_time, setup,
                                        teardown),
        cmocka_unit_test(test_resume_from_each_phase),
        cmocka_unit_test_setup_teardown(
            test_resume_after_flip_reports_recorded_comparison, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_verify_skips_both_comparisons, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_abort_before_flip_rolls_back, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_abort_after_flip_is_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_second_move_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nothing_to_do, setup, teardown),
        cmocka_unit_test_setup_teardown(test_live_copy_on_target_is_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_cutover_retries_busy_fence_and_slow_drain,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_cutover_gives_up_after_five_attempts,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_flip_unfences_the_source, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_differences_in_catchup_stop_before_cutover,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_differences_at_fence_keep_the_source,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_postponed_cutover_waits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_verify_compares_the_right_copies, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_rebalance_refuses_a_stale_plan, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_rebalance_runs_every_move_and_drains,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_rebalance_failed_move_keeps_others, setup,
                                        teardown),
    };

    return cmocka_run_group_tests_name("reshard", tests, NULL, NULL);
}
