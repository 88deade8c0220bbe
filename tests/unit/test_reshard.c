/*
 * test_reshard.c: the move engine's phase machine against a fake backend
 * (reshard_fake.c).
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
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "reshard/reshard.h"
#include "tests/unit/reshard_fake.h"

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
                        "lock pair_busy attach create target_live save:copy copy "
                        "save:copied "
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
        fake_setup(&st);
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
        fake_teardown(&st);
    }
}

/*
 * Resumed in cleanup, the source waits out a whole grace period again
 * before it is dropped (the run before may have stopped right after the
 * flip, while servers with the old map still read the source).
 */
static void test_resume_in_cleanup_waits_the_grace_period(void **state)
{
    struct world *w = *state;
    struct timespec t0, t1;

    w->o.grace_s = 1;
    snprintf(w->f.fail_op, sizeof(w->f.fail_op), "drop_source");
    assert_true(reshard_move(&w->b, 5, "db1", 0, &w->o) < 0);
    assert_string_equal(w->f.moves[0].phase, "cleanup");
    clear_logs(&w->f);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(reshard_move(&w->b, 5, NULL, 0, &w->o), RESHARD_OK);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_true((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000 >=
                950);
    assert_string_equal(w->f.moves[0].phase, "done");
    assert_non_null(strstr(w->f.log, "drop_source"));
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
    /* A move elsewhere is refused without offering the --abort refused above. */
    assert_int_equal(reshard_move(&w->b, 6, "db3", 0, &w->o), BC_EEXISTS);
    assert_non_null(strstr(w->f.error_event, "past the map flip"));
    assert_null(strstr(w->f.error_event, "--abort"));
}

static void test_second_move_is_refused(void **state)
{
    struct world *w = *state;
    struct reshard_move *m;

    /* Another tool holds the shard's lock. */
    assert_int_equal(reshard_move_create(&w->b, 2, "db2", &w->o, &m), 0);
    assert_int_equal(reshard_move(&w->b, 2, "db2", 0, &w->o), -EBUSY);
    reshard_move_destroy(m); /* its record stays: prepare */
    /* An unfinished move to another host, before its flip: either way out. */
    assert_int_equal(reshard_move(&w->b, 2, "db3", 0, &w->o), BC_EEXISTS);
    assert_non_null(strstr(w->f.error_event, "--abort"));
    assert_int_equal(w->f.nmove, 1);
    /* The record itself refuses a second one (two tools racing past the lock). */
    w->f.moves[0].shard = 7;
    snprintf(w->f.moves[0].dst, sizeof(w->f.moves[0].dst), "db3"); /* not in the way */
    assert_int_equal(reshard_move(&w->b, 2, "db2", 0, &w->o), RESHARD_OK);
    w->f.moves[1].phase[0] = 'x'; /* unfinished again */
    assert_int_equal(reshard_move_create(&w->b, 2, "db1", &w->o, &m), BC_EEXISTS);
}

/*
 * While a move between two hosts is unfinished before "verified", another
 * shard's move between the same two hosts is refused before it records or
 * copies anything; other pairs of hosts go on, and it moves after the first.
 */
static void test_second_move_between_two_hosts_waits(void **state)
{
    struct world *w = *state;
    struct catalog_move racer = {.id = 99, .shard = 6, .phase = "copy"};

    /* Shard 2 db1 -> db2 stops in catch-up (unfinished, replicating). */
    snprintf(w->f.fail_op, sizeof(w->f.fail_op), "compare_in_flight");
    assert_true(reshard_move(&w->b, 2, "db2", 0, &w->o) < 0);
    clear_logs(&w->f);
    assert_int_equal(reshard_move(&w->b, 4, "db2", 0, &w->o), -EALREADY);
    assert_non_null(strstr(w->f.error_event, "shard 2 is moving from db1 to db2"));
    assert_non_null(strstr(w->f.error_event, "move shard 4 after it"));
    assert_null(strstr(w->f.log, "attach"));
    assert_int_equal(w->f.nmove, 1); /* nothing to resume */
    assert_string_equal(w->f.map[4], "db1");
    assert_int_equal(w->f.state[4], SHARDMAP_STATE_ACTIVE);
    /* The other way round is another pair of hosts. */
    assert_int_equal(reshard_move(&w->b, 3, "db1", 0, &w->o), RESHARD_OK);
    /* Once the first is finished, the second moves. */
    assert_int_equal(reshard_move(&w->b, 2, NULL, 0, &w->o), RESHARD_OK);
    assert_int_equal(reshard_move(&w->b, 4, "db2", 0, &w->o), RESHARD_OK);
    assert_string_equal(w->f.map[4], "db2");
    /* Another tool records one between the check and the insert. */
    snprintf(racer.src, sizeof(racer.src), "db2");
    snprintf(racer.dst, sizeof(racer.dst), "db1");
    w->f.pair_race = &racer;
    assert_int_equal(reshard_move(&w->b, 4, "db1", 0, &w->o), -EALREADY);
    assert_non_null(strstr(w->f.error_event, "shard 6 is moving from db2 to db1"));
    assert_string_equal(w->f.map[4], "db2");
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
    /* Recorded as aborted: no unfinished move whose --abort would drop it. */
    assert_string_equal(w->f.moves[0].phase, "aborted");
    assert_null(strstr(w->f.log, "copy"));
    clear_logs(&w->f);
    assert_int_equal(reshard_move(&w->b, 2, NULL, 1, &w->o), RESHARD_NOTHING);
    assert_null(strstr(w->f.log, "drop_target"));
    assert_int_equal(w->f.target_copy[2], 2);
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
    /* The pause recorded is the longest attempt's (60 ms), not the last's. */
    assert_true(w->f.moves[0].pause_ms >= 55);
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
    snprintf(w->f.map[2], sizeof(w->f.map[2]), "db2"); /* where the move took it */
    w->f.diffs_copies = 0;
    assert_int_equal(reshard_verify(&w->b, 2, NULL, &w->o, &res), RESHARD_OK);
    /* Back on the kept copy's host, that copy is the live one: nothing to compare. */
    snprintf(w->f.map[2], sizeof(w->f.map[2]), "db1");
    clear_logs(&w->f);
    assert_int_equal(reshard_verify(&w->b, 2, NULL, &w->o, &res), -EINVAL);
    assert_non_null(strstr(w->f.error_event, "no copy there to compare"));
    assert_null(strstr(w->f.log, "compare_copies"));
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
    /* The same plan again: every shard is there, no source to wait for. */
    struct timespec t0, t1;
    w->o.grace_s = 3;
    plan.base_version = w->f.version; /* the real check takes the plan's own steps */
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(reshard_rebalance(&w->b, &plan, &w->o), RESHARD_OK);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_true(t1.tv_sec - t0.tv_sec < 2);
    assert_int_equal(w->f.nmove, 4);
    w->o.grace_s = 0;
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
    /*
     * Shard 1's refused move is recorded aborted (no replication of it runs,
     * so db2 -> db3 may take the next one): shard 3 moves.
     */
    for (uint32_t i = 0; i < w->f.nmove; i++)
        if (w->f.moves[i].shard == 1)
            assert_string_equal(w->f.moves[i].phase, "aborted");
    assert_string_equal(w->f.map[3], "db3");
    assert_int_equal(w->f.nhost, 3); /* db3 stays: nothing was drained */
    shardmap_plan_deinit(&plan);
}

/* A move that fails once is resumed, and the plan finishes. */
static void test_rebalance_resumes_a_failed_move(void **state)
{
    struct world *w = *state;
    struct shardmap_plan plan;

    make_plan(w, &plan, 1);
    snprintf(w->f.fail_op, sizeof(w->f.fail_op), "replicate");
    assert_int_equal(reshard_rebalance(&w->b, &plan, &w->o), RESHARD_OK);
    for (uint32_t s = 0; s < 4; s++)
        assert_string_equal(w->f.map[s], "db3");
    assert_int_equal(w->f.nmove, 4); /* the failed one resumed, not made again */
    assert_non_null(strstr(w->f.events, "ERROR "));
    shardmap_plan_deinit(&plan);
}

/*
 * A move that fails for good after its replication started may hold the
 * hosts' one replication connection: the other moves between the same two
 * hosts are not started; the rest of the plan runs.
 */
static void test_rebalance_failed_pair_stops_its_other_moves(void **state)
{
    struct world *w = *state;
    struct shardmap_plan plan;

    make_plan(w, &plan, 1); /* db1 -> db3: shards 0, 2; db2 -> db3: 1, 3 */
    snprintf(w->f.fail_always, sizeof(w->f.fail_always), "fence");
    w->f.fail_always_shard = 0;
    assert_true(reshard_rebalance(&w->b, &plan, &w->o) < 0);
    assert_string_equal(w->f.map[0], "db1");
    assert_string_equal(w->f.moves[0].phase, "cutover"); /* resumable */
    assert_int_equal(w->f.replicating[0], 1);
    assert_string_equal(w->f.map[2], "db1"); /* never started */
    for (uint32_t i = 0; i < w->f.nmove; i++)
        assert_int_not_equal(w->f.moves[i].shard, 2);
    assert_string_equal(w->f.map[1], "db3");
    assert_string_equal(w->f.map[3], "db3");
    assert_int_equal(w->f.pair_max, 1);
    shardmap_plan_deinit(&plan);
}

/* A connection that cannot be removed stops the move before "verified". */
static void test_channel_left_behind_fails_the_move(void **state)
{
    struct world *w = *state;

    snprintf(w->f.fail_op, sizeof(w->f.fail_op), "drop_channel");
    assert_true(reshard_move(&w->b, 2, "db2", 0, &w->o) < 0);
    assert_string_equal(w->f.moves[0].phase, "switched");
    assert_null(strstr(w->f.log, "compare_at_fence"));
    assert_int_equal(w->f.source_copy[2], 1);
    /* Resumed, it removes the connection and finishes. */
    clear_logs(&w->f);
    assert_int_equal(reshard_move(&w->b, 2, NULL, 0, &w->o), RESHARD_OK);
    assert_non_null(strstr(w->f.log, "drop_channel compare_at_fence"));
    assert_string_equal(w->f.moves[0].phase, "done");
    assert_int_equal(w->f.source_copy[2], 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_phase_names_round_trip),
        cmocka_unit_test_setup_teardown(test_move_passes_every_transition, fake_setup,
                                        fake_teardown),
        cmocka_unit_test_setup_teardown(test_step_records_one_phase_at_a_time,
                                        fake_setup, fake_teardown),
        cmocka_unit_test(test_resume_from_each_phase),
        cmocka_unit_test_setup_teardown(test_resume_in_cleanup_waits_the_grace_period,
                                        fake_setup, fake_teardown),
        cmocka_unit_test_setup_teardown(
            test_resume_after_flip_reports_recorded_comparison, fake_setup,
            fake_teardown),
        cmocka_unit_test_setup_teardown(test_no_verify_skips_both_comparisons,
                                        fake_setup, fake_teardown),
        cmocka_unit_test_setup_teardown(test_abort_before_flip_rolls_back, fake_setup,
                                        fake_teardown),
        cmocka_unit_test_setup_teardown(test_abort_after_flip_is_refused, fake_setup,
                                        fake_teardown),
        cmocka_unit_test_setup_teardown(test_second_move_is_refused, fake_setup,
                                        fake_teardown),
        cmocka_unit_test_setup_teardown(test_second_move_between_two_hosts_waits,
                                        fake_setup, fake_teardown),
        cmocka_unit_test_setup_teardown(test_nothing_to_do, fake_setup, fake_teardown),
        cmocka_unit_test_setup_teardown(test_live_copy_on_target_is_refused, fake_setup,
                                        fake_teardown),
        cmocka_unit_test_setup_teardown(test_cutover_retries_busy_fence_and_slow_drain,
                                        fake_setup, fake_teardown),
        cmocka_unit_test_setup_teardown(test_cutover_gives_up_after_five_attempts,
                                        fake_setup, fake_teardown),
        cmocka_unit_test_setup_teardown(test_failed_flip_unfences_the_source,
                                        fake_setup, fake_teardown),
        cmocka_unit_test_setup_teardown(test_differences_in_catchup_stop_before_cutover,
                                        fake_setup, fake_teardown),
        cmocka_unit_test_setup_teardown(test_differences_at_fence_keep_the_source,
                                        fake_setup, fake_teardown),
        cmocka_unit_test_setup_teardown(test_postponed_cutover_waits, fake_setup,
                                        fake_teardown),
        cmocka_unit_test_setup_teardown(test_verify_compares_the_right_copies,
                                        fake_setup, fake_teardown),
        cmocka_unit_test_setup_teardown(test_rebalance_refuses_a_stale_plan, fake_setup,
                                        fake_teardown),
        cmocka_unit_test_setup_teardown(test_rebalance_runs_every_move_and_drains,
                                        fake_setup, fake_teardown),
        cmocka_unit_test_setup_teardown(test_rebalance_failed_move_keeps_others,
                                        fake_setup, fake_teardown),
        cmocka_unit_test_setup_teardown(test_rebalance_resumes_a_failed_move,
                                        fake_setup, fake_teardown),
        cmocka_unit_test_setup_teardown(
            test_rebalance_failed_pair_stops_its_other_moves, fake_setup,
            fake_teardown),
        cmocka_unit_test_setup_teardown(test_channel_left_behind_fails_the_move,
                                        fake_setup, fake_teardown),
    };

    return cmocka_run_group_tests_name("reshard", tests, NULL, NULL);
}
