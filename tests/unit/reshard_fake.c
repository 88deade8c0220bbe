/*
 * reshard_fake.c: the fake backend of test_reshard.c (reshard_fake.h).
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
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "reshard/reshard.h"
#include "tests/unit/reshard_fake.h"

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
    pthread_mutex_t *guard_ __attribute__((cleanup(guard_drop), unused)) = guard_take()

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
    if (strcmp(f->fail_always, name) == 0 && (int)c->shard == f->fail_always_shard) {
        snprintf(f->last_error, sizeof(f->last_error), "%s failed (injected)", name);
        return BC_EDOWN;
    }
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

/* A move of another shard between the same hosts, before "verified". */
static struct catalog_move *between(struct fake *f, const struct catalog_move *mv)
{
    for (uint32_t i = 0; i < f->nmove; i++) {
        struct catalog_move *o = &f->moves[i];
        enum reshard_phase ph = RESHARD_DONE;
        reshard_phase_parse(o->phase, &ph);
        if (o->shard != mv->shard && ph < RESHARD_VERIFIED &&
            strcmp(o->src, mv->src) == 0 && strcmp(o->dst, mv->dst) == 0)
            return o;
    }
    return NULL;
}

static int f_pair_busy(void *ctx, const struct catalog_move *mv,
                       struct catalog_move *other)
{
    GUARD;
    struct ctx *c = ctx;
    struct catalog_move *o = between(c->f, mv);
    int rc = op(c, "pair_busy");

    if (rc < 0 || o == NULL)
        return rc;
    *other = *o;
    return 1;
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
    /* Another tool got in between pair_busy and create (pair_race). */
    if (c->f->pair_race != NULL) {
        c->f->moves[c->f->nmove++] = *c->f->pair_race;
        c->f->pair_race = NULL;
    }
    if (between(c->f, mv) != NULL)
        return -EALREADY;
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
        struct timespec ts = {0, 60 * 1000000L}; /* a slow drain takes time */
        c->f->drain_slow--;
        nanosleep(&ts, NULL);
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

    int rc = op(c, "drop_channel");

    if (rc == 0)
        c->f->replicating[c->shard] = 0;
    return rc;
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

static int f_add_host(void *be, struct shardmap_host_conf *h, int *added)
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
    .pair_busy = f_pair_busy,
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
        snprintf(f->error_event, sizeof(f->error_event), "%s",
                 ev->text ? ev->text : "");
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

int fake_setup(void **state)
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

int fake_teardown(void **state)
{
    free(*state);
    return 0;
}

void clear_logs(struct fake *f)
{
    f->log[0] = f->events[0] = f->hooks[0] = '\0';
}
