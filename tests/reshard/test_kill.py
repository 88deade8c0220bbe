"""shardctl killed (SIGKILL) at each hold point of a move, then run again.

For each hold point (copy, catchup, fenced, switched, cleanup) a small shard
of its own moves with BC_SHARDCTL_HOLD=<point>; at the {"event":"hold"} line
the test checks where the map points (the source until the flip, the target
from `switched` on) and that the source copy refuses writes once it is
fenced, bets while the move is held or dead where writes must work, kills the
tool with SIGKILL, bets again, and re-runs the same command. That must exit 0
with the map on the target, the source schema dropped, every bet placed
before, during and after on the target and nothing else new (row count), a
clean verify, and the ledger invariant.

Also: `move --abort` after a kill at `catchup` rolls back (map unchanged,
target schema gone, writes work, a later move works), and a second move of a
shard whose move is held is refused with exit 5 (to the same host and to
another one, also once the first was killed)."""

import unittest

import harness as h

PHASES = ["copy", "catchup", "fenced", "switched", "cleanup"]
FILL_USERS = 300
FILL_BETS = 6000
COPY_FILL_BETS = 30000  # bets beyond one copy batch (1 MiB), so that "copy" holds mid-table
HOLD_TIMEOUT = 120
RUN_TIMEOUT = 240
GRACE = ("--grace", "1")  # seconds before the source is dropped (default 5): the suite's time


class MoveCase(unittest.TestCase):
    """A company, a match and shards of their own for each test."""

    NSHARDS = 1
    BIG = ()  # indexes of the shards filled with COPY_FILL_BETS

    @classmethod
    def setUpClass(cls):
        s = h.stack.get()
        s.require_dir()
        s.require_api()
        cls.co = h.new_company()
        cls.match = h.new_match()
        cls.shards = h.pick_shards(cls.NSHARDS)
        for i, shard in enumerate(cls.shards):
            h.fillshard(shard, FILL_USERS, COPY_FILL_BETS if i in cls.BIG else FILL_BETS,
                        match=cls.match["id"], company=cls.co["id"])

    def client(self, shard, host):
        uid, cid = h.users_of(shard, self.co["id"], 1, host=host)[0]
        return h.member_client(uid, cid)

    def bets(self, c, n):
        return [h.bet(c, self.match["id"]) for _ in range(n)]

    def assert_source_fenced(self, host, shard, bet_id, when):
        """A write on the source copy fails with SQLSTATE 45000 "moved"."""
        rc, err = h.sql_error(host, "UPDATE `%s`.bets SET stake = stake WHERE id = %d" % (h.schema(shard), bet_id))
        self.assertTrue(rc != 0 and "45000" in err and "moved" in err,
                        "%s: a write on the source copy %s of shard %d on %s was not refused with 45000 "
                        "'moved' (exit %d: %s)" % (when, h.schema(shard), shard, host, rc, err or "no error"))

    @staticmethod
    def rows(host, shard):
        """Rows of every table the move copies (all but shard_state)."""
        tables = h.sql(host, "SELECT table_name FROM information_schema.tables WHERE table_schema = '%s' "
                       "AND table_type = 'BASE TABLE' AND table_name <> 'shard_state'" % h.schema(shard))
        return sum(h.count(host, shard, t) for (t,) in tables)

    def assert_ledger(self, when):
        rc, out = h.check_ledger()
        self.assertEqual(rc, 0, "bcadmin check-ledger %s: exit %d\n%s" % (when, rc, h.tail(out)))


class TestKillAtEachPhase(MoveCase):
    NSHARDS = len(PHASES)
    BIG = (PHASES.index("copy"),)

    def kill_and_rerun(self, phase):
        S = self.shards[PHASES.index(phase)]
        self.addCleanup(h.settle, S)
        src = h.shard_map()[S]
        dst = h.other_host(src, sorted(set(h.shard_map().values())))
        base = h.count(src, S)
        c = self.client(S, src)
        if phase == "copy":
            # An avatar: a table copied before bets, as in a shard that
            # earlier tests used; the hold comes after that table's batch.
            c.put("/v1/me/avatar", raw=h.fixtures.png(), content_type="image/png").expect((200, 204), msg="avatar")
        placed = self.bets(c, 3)

        mv = h.move_proc(S, dst, *GRACE, hold=phase)
        h.wait_hold(mv, phase, HOLD_TIMEOUT)
        host, state = h.shard_row(S)
        flipped = phase in ("switched", "cleanup")
        self.assertEqual(host, dst if flipped else src,
                         "held at %s: the map names %s for shard %d (state %d); want %s"
                         % (phase, host, S, state, "the target" if flipped else "the source"))
        if phase == "copy":
            # Tables are copied in name order, so the first batch may hold
            # rows of a table before bets (avatars): count every table.
            on_src = self.rows(src, S)
            on_dst = self.rows(dst, S) if h.schema_exists(dst, S) else 0
            self.assertTrue(0 < on_dst < on_src,
                            "held at copy (after the first batch): %d of %d rows on %s, want some but not all"
                            % (on_dst, on_src, dst))
        if phase in ("fenced", "switched", "cleanup"):
            self.assert_source_fenced(src, S, placed[0], "held at " + phase)
        if phase in ("copy", "catchup"):
            placed += self.bets(c, 3)  # the source serves writes during the copy
        mv.kill9()
        if phase != "fenced":  # a fenced shard pauses writes until the move goes on
            placed += self.bets(c, 3)

        r = h.shardctl("move", S, dst, "--json", *GRACE, timeout=RUN_TIMEOUT)
        self.assertEqual(r.rc, 0, "re-running the move after SIGKILL at %s:\n%s\nfirst run:\n%s"
                         % (phase, r.describe(), mv.describe()))
        placed += self.bets(c, 3)

        problems = []
        if not r.of("done"):
            problems.append("no done event")
        if h.shard_row(S) != (dst, 0):
            problems.append("map row %s, want (%s, 0)" % (h.shard_row(S), dst))
        if h.schema_exists(src, S):
            problems.append("the source schema %s is still on %s" % (h.schema(S), src))
        got = h.ids_present(dst, S, placed)
        if got != set(placed):
            problems.append("bets not on %s: %s" % (dst, sorted(set(placed) - got)))
        n = h.count(dst, S)
        if n != base + len(placed):
            problems.append("%d bets in shard %d on %s, want %d before + %d placed"
                            % (n, S, dst, base, len(placed)))
        # The data written after the kill must have been verified by the
        # re-run; after a kill at cleanup the first run's verify stands.
        events = r.events if phase != "cleanup" else mv.events + r.events
        problems += h.verify_events_clean(events)
        if problems:
            self.fail("move of shard %d %s -> %s killed at %s and re-run:\n  %s\n%s\nfirst run:\n%s"
                      % (S, src, dst, phase, "\n  ".join(problems), r.describe(), mv.describe()))
        self.assert_ledger("after the re-run of a move killed at " + phase)
        h.log("killed at %-8s shard %2d %s -> %s: re-run %.1f s, %d bets checked"
              % (phase, S, src, dst, r.seconds, len(placed)))

    def test_kill_at_copy(self):
        self.kill_and_rerun("copy")

    def test_kill_at_catchup(self):
        self.kill_and_rerun("catchup")

    def test_kill_at_fenced(self):
        self.kill_and_rerun("fenced")

    def test_kill_at_switched(self):
        self.kill_and_rerun("switched")

    def test_kill_at_cleanup(self):
        self.kill_and_rerun("cleanup")


class TestAbortAfterKill(MoveCase):
    def test_abort_after_kill_at_catchup_rolls_back(self):
        S = self.shards[0]
        self.addCleanup(h.settle, S)
        src = h.shard_map()[S]
        dst = h.other_host(src, sorted(set(h.shard_map().values())))
        base = h.count(src, S)
        c = self.client(S, src)
        placed = self.bets(c, 3)
        mv = h.move_proc(S, dst, *GRACE, hold="catchup")
        h.wait_hold(mv, "catchup", HOLD_TIMEOUT)
        self.assertTrue(h.schema_exists(dst, S), "held at catchup: no %s on %s" % (h.schema(S), dst))
        mv.kill9()
        placed += self.bets(c, 3)

        r = h.shardctl("move", S, "--abort", "--json", timeout=RUN_TIMEOUT)
        self.assertEqual(r.rc, 0, "move --abort after SIGKILL at catchup:\n%s" % r.describe())
        placed += self.bets(c, 3)
        problems = []
        if not any(e.get("phase") == "aborted" for e in r.of("phase")):
            problems.append('no {"event":"phase","phase":"aborted"}')
        if h.shard_row(S) != (src, 0):
            problems.append("map row %s, want (%s, 0) as before" % (h.shard_row(S), src))
        if h.schema_exists(dst, S):
            problems.append("the target schema %s is still on %s" % (h.schema(S), dst))
        got = h.ids_present(src, S, placed)
        if got != set(placed):
            problems.append("bets not on %s: %s" % (src, sorted(set(placed) - got)))
        if h.count(src, S) != base + len(placed):
            problems.append("%d bets on %s, want %d + %d" % (h.count(src, S), src, base, len(placed)))
        if problems:
            self.fail("abort of the move of shard %d %s -> %s:\n  %s\n%s"
                      % (S, src, dst, "\n  ".join(problems), r.describe()))
        self.assert_ledger("after the abort")

        # Nothing of the aborted move is left in the way of the next one.
        r = h.shardctl("move", S, dst, "--json", *GRACE, timeout=RUN_TIMEOUT)
        self.assertEqual(r.rc, 0, "a move after the abort:\n%s" % r.describe())
        self.assertEqual(h.shard_row(S), (dst, 0))
        self.assertEqual(h.ids_present(dst, S, placed), set(placed), "bets on %s after the move" % dst)
        self.assertEqual(h.count(dst, S), base + len(placed))


class TestStoppedIOThread(MoveCase):
    def test_rerun_starts_a_stopped_io_thread_again(self):
        """A move killed in catch-up whose replication's I/O thread was then
        stopped (by hand, or by MariaDB on an error it does not retry): the
        re-run starts it again and finishes, where it used to wait for ever
        on a lag that never moved."""
        S = self.shards[0]
        self.addCleanup(h.settle, S)
        src = h.shard_map()[S]
        dst = h.other_host(src, sorted(set(h.shard_map().values())))
        c = self.client(S, src)
        mv = h.move_proc(S, dst, *GRACE, hold="catchup")
        h.wait_hold(mv, "catchup", HOLD_TIMEOUT)
        mv.kill9()
        chan = "%s_move_%04d" % (h.stack.get().prefix, S)
        h.sql(dst, "STOP SLAVE '%s' IO_THREAD" % chan)
        placed = self.bets(c, 3)
        r = h.shardctl("move", S, dst, "--json", *GRACE, timeout=60)
        self.assertEqual(r.rc, 0, "the re-run with the I/O thread stopped:\n%s" % r.describe())
        self.assertEqual(h.shard_row(S), (dst, 0))
        self.assertEqual(h.ids_present(dst, S, placed), set(placed), "bets placed while it was stopped")
        self.assert_ledger("after the move")


class TestTargetRestarted(MoveCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # A second shard on the same source, with rows of its own: its writes
        # are in the source's binlog beside the moving shard's.
        cls.other = h.pick_shards(1, on_host=h.shard_map()[cls.shards[0]])[0]
        h.fillshard(cls.other, 20, 40, match=cls.match["id"], company=cls.co["id"])

    def test_rerun_after_the_target_restarted_filters_again(self):
        """A move killed in catch-up whose target MariaDB then restarted: the
        server starts the move's replication connection again by itself, but
        without its filter (a SET GLOBAL filter is not kept), so it reads the
        source's other shards too and stops on the first of their events
        (their tables are not there). The re-run sets the filter again and
        finishes; the other shard's writes never reach the target."""
        S, O = self.shards[0], self.other
        self.addCleanup(h.settle, S)
        src = h.shard_map()[S]
        dst = h.other_host(src, sorted(set(h.shard_map().values())))
        server = h.primary_of(dst)
        c, co = self.client(S, src), self.client(O, src)
        mv = h.move_proc(S, dst, *GRACE, hold="catchup")
        h.wait_hold(mv, "catchup", HOLD_TIMEOUT)
        mv.kill9()
        s = h.stack.get()
        for cmd in ("kill", "restart-host"):
            r = h.run([s.devstack, cmd, server, "--dir", s.dir], timeout=180, via_files=True)
            self.assertEqual(r.rc, 0, "devstack %s %s:\n%s" % (cmd, server, r.describe()))
        placed = self.bets(c, 3)
        others = self.bets(co, 3)
        r = h.shardctl("move", S, dst, "--json", *GRACE, timeout=120)
        self.assertEqual(r.rc, 0, "the re-run after %s restarted:\n%s" % (server, r.describe()))
        self.assertEqual(h.shard_row(S), (dst, 0))
        self.assertEqual(h.ids_present(dst, S, placed), set(placed), "bets placed after the restart")
        self.assertFalse(h.schema_exists(dst, O), "shard %d's schema reached %s" % (O, dst))
        self.assertEqual(h.ids_present(src, O, others), set(others), "the other shard's bets on %s" % src)
        self.assert_ledger("after the move")


class TestSecondMoveRefused(MoveCase):
    def test_second_move_of_a_shard_is_refused(self):
        S = self.shards[0]
        self.addCleanup(h.settle, S)
        m = h.shard_map()
        src = m[S]
        hosts = sorted(set(m.values()))
        dst = h.other_host(src, hosts)
        third = [x for x in hosts if x not in (src, dst)]
        mv = h.move_proc(S, dst, *GRACE, hold="catchup")
        h.wait_hold(mv, "catchup", HOLD_TIMEOUT)
        try:
            r = h.shardctl("move", S, dst, "--json", timeout=60)
            self.assertEqual(r.rc, 5, "the same move while the first is held at catchup:\n" + r.describe())
            if third:
                r = h.shardctl("move", S, third[0], "--json", timeout=60)
                self.assertEqual(r.rc, 5, "a move to another host while the first is held:\n" + r.describe())
            self.assertIsNone(mv.p.poll(), "the held move exited:\n" + mv.describe())
            self.assertEqual(h.shard_row(S)[0], src, "the map moved while the move was held at catchup")
        finally:
            mv.kill9()
        if third:
            r = h.shardctl("move", S, third[0], "--json", timeout=60)
            self.assertEqual(r.rc, 5, "a move to another host while a killed move to %s is unfinished:\n%s"
                             % (dst, r.describe()))
        r = h.shardctl("move", S, "--abort", "--json", timeout=RUN_TIMEOUT)
        self.assertEqual(r.rc, 0, "move --abort:\n" + r.describe())
        self.assertEqual(h.shard_row(S), (src, 0))


if __name__ == "__main__":
    unittest.main()
