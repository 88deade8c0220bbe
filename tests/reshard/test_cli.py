"""shardctl's move, verify and rebalance refuse bad operands with a clear
message and exit 2 (usage) or 1 (error), and change nothing. A second move
between the same two hosts while the first is unfinished is refused with
exit 5, naming the first, before it records or copies anything, and moves
once the first finished. verify without --against has no copy to compare
once the shard went back to the host of the copy its move kept."""

import os
import re
import signal
import unittest

import harness as h


class TestCommandLine(unittest.TestCase):
    def expect(self, args, rc, text):
        r = h.shardctl(*args)
        self.assertEqual(r.rc, rc, "shardctl %s: want exit %d\n%s" % (" ".join(map(str, args)), rc,
                                                                       r.describe()))
        self.assertIn(text, r.out + r.err, "shardctl %s: want %r in the output\n%s"
                      % (" ".join(map(str, args)), text, r.describe()))

    def test_bad_operands(self):
        before = h.shard_map()
        nshard = len(before)
        self.expect(["move", "abc", "db2"], 2, "'abc' is not a shard number")
        self.expect(["move", "-1", "db2"], 2, "a shard number has no sign")
        self.expect(["move", nshard, "db2"], 2, "out of range: shard %d of 0..%d" % (nshard, nshard - 1))
        self.expect(["move", 1], 2, "usage: move SHARD TO-HOST")
        self.expect(["move", 1, "db2", "db3"], 2, "usage: move SHARD TO-HOST")
        self.expect(["move", 1, "--abort", "--resume"], 2, "usage: move SHARD --resume | --abort")
        self.expect(["move", 1, "no_such_host"], 2, "no host no_such_host in the shard map (a new host enters it")
        self.expect(["move", 1, "db2", "--grace", "-1"], 2, "--grace wants seconds")
        self.expect(["rebalance", "/nonexistent/plan.yaml"], 1, "/nonexistent/plan.yaml")
        self.expect(["rebalance", "a.yaml", "--parallel", "17"], 2, "--parallel wants 1..16")
        self.expect(["verify", 1], 2, "give --against HOST")
        self.expect(["verify", 1, "--against", "no_such_host"], 2, "no host no_such_host")
        self.expect(["plan", "--remove-host", "no_such_host"], 2, "no host no_such_host in the shard map")
        # no copy to compare: the live host itself, a host that holds no copy
        # (both said "equal: 0 tables" or compared the copy with itself)
        self.expect(["verify", 1, "--against", before[1]], 2,
                    "shard 1 lives on %s: no copy there to compare" % before[1])
        self.expect(["verify", 1, "--against", h.other_host(before[1], among=sorted(set(before.values())))],
                    2, "no copy there to compare")
        self.expect(["move", 1, "--abort"], 0, "no unfinished move")
        self.expect(["move", 1, before[1]], 0, "already on %s" % before[1])
        self.assertEqual(h.shard_map(), before, "a refused command changed the map")
        self.assertEqual(h.sql("db1", "SELECT COUNT(*) FROM `%s`.moves WHERE shard = 1" % h.global_schema()),
                         [["0"]], "a refused command left a move record")

    def test_stale_plan_is_refused(self):
        """A plan made from an older map runs only while the map differs from
        it by the plan's own steps: after another change it is refused, naming
        both versions, and nothing changes."""
        path = os.path.join(h.scratch_dir(), "stale-plan.yaml")
        r = h.shardctl("plan", "--add-host", "dbstale=127.0.0.1:9", "-o", path)
        self.assertEqual(r.rc, 0, r.describe())
        planned = {int(m) for m in re.findall(r"move shard (\d+):", r.out)}
        base = int(re.search(r"map version (\d+) ->", r.out).group(1))
        before = h.shard_map()
        shard = next(s for s in sorted(before) if s not in planned)
        home = before[shard]
        there = h.other_host(home, among=sorted(set(before.values())))
        self.assertEqual(h.shardctl("move", shard, there, "--grace", 0).rc, 0)
        try:
            now = int(h.sql("db1", "SELECT version FROM `%s`.map_version" % h.global_schema())[0][0])
            self.expect(["rebalance", path], 1,
                        "made from map version %d but the map is now version %d" % (base, now))
            self.assertEqual(h.sql("db1", "SELECT COUNT(*) FROM `%s`.hosts WHERE name = 'dbstale'"
                                   % h.global_schema()), [["0"]], "a stale plan added its host")
        finally:
            self.assertEqual(h.shardctl("move", shard, home, "--grace", 0).rc, 0)
        self.assertEqual(h.shard_map(), before)


class TestSecondMoveBetweenTwoHosts(unittest.TestCase):
    """Two shards of one host, both for the same other host: the second move
    waits for the first (MariaDB takes one replication connection per source
    host on a target, and one started from an older snapshot could not apply
    what the target logged meanwhile)."""

    @classmethod
    def setUpClass(cls):
        s = h.stack.get()
        s.require_dir()
        s.require_api()
        cls.co = h.new_company()
        cls.match = h.new_match()
        hosts = sorted(set(h.shard_map().values()))
        cls.src = hosts[1 % len(hosts)]
        cls.dst = h.other_host(cls.src, hosts)
        cls.shards = h.pick_shards(2, on_host=cls.src)
        for shard in cls.shards:
            h.fillshard(shard, 50, 500, match=cls.match["id"], company=cls.co["id"])

    def bets(self, shard, n):
        uid, cid = h.users_of(shard, self.co["id"], 1)[0]
        c = h.member_client(uid, cid)
        return [h.bet(c, self.match["id"]) for _ in range(n)]

    def test_second_move_waits_for_the_first(self):
        A, B = self.shards
        src, dst = self.src, self.dst
        self.addCleanup(h.settle, B)
        self.addCleanup(h.settle, A)
        placed = self.bets(B, 2)
        mv = h.move_proc(A, dst, "--grace", "1", hold="catchup")
        h.wait_hold(mv, "catchup", 120)
        self.bets(A, 2)  # writes flow on the source while the first replicates
        placed += self.bets(B, 2)

        moves = "SELECT COUNT(*) FROM `%s`.moves WHERE shard = %d" % (h.global_schema(), B)
        before = h.sql("db1", moves)
        r = h.shardctl("move", B, dst, "--json", timeout=120)
        said = " ".join(e.get("message", "") for e in r.of("error"))
        self.assertEqual(r.rc, 5, "a second move %s -> %s while shard %d's is held:\n%s"
                         % (src, dst, A, r.describe()))
        for want in ("shard %d is moving from %s to %s" % (A, src, dst), "move shard %d after it" % B):
            self.assertIn(want, said, r.describe())
        self.assertEqual(h.sql("db1", moves), before, "the refused move left a record")
        self.assertEqual(h.shard_row(B), (src, 0), "the refused move changed the map")
        self.assertFalse(h.schema_exists(dst, B), "the refused move copied shard %d to %s" % (B, dst))
        t = h.shardctl("move", B, dst, timeout=120)
        self.assertEqual(t.rc, 5, t.describe())
        self.assertIn("shard %d is moving from %s to %s" % (A, src, dst), t.err, t.describe())
        r = h.shardctl("move", B, "--resume", timeout=120)
        self.assertEqual((r.rc, "no unfinished move" in r.out + r.err), (0, True),
                         "nothing of the refused move to resume:\n" + r.describe())

        placed += self.bets(B, 2)
        os.kill(mv.p.pid, signal.SIGUSR1)
        self.assertEqual(mv.wait(180), 0, "the first move after SIGUSR1:\n" + mv.describe())
        self.assertEqual(h.shard_row(A), (dst, 0))
        placed += self.bets(B, 2)
        r = h.shardctl("move", B, dst, "--json", "--grace", 1, timeout=240)
        self.assertEqual(r.rc, 0, "the second move once the first finished:\n" + r.describe())
        self.assertTrue(r.of("done"), r.describe())
        self.assertEqual(h.verify_events_clean(r.events), [], r.describe())
        self.assertEqual(h.shard_row(B), (dst, 0))
        self.assertEqual(h.ids_present(dst, B, placed), set(placed), "bets of shard %d on %s" % (B, dst))


class TestVerifyKeptCopy(unittest.TestCase):
    def test_a_copy_kept_on_the_live_host_is_no_copy(self):
        """Moved with --keep-source and back without: the copy kept on the
        first host is the live one now, so verify has nothing to compare it
        with (exit 2), never "equal" of the live copy with itself."""
        S = h.pick_shards(1)[0]
        self.addCleanup(h.settle, S)
        home = h.shard_map()[S]
        there = h.other_host(home, sorted(set(h.shard_map().values())))
        r = h.shardctl("move", S, there, "--keep-source", "--grace", 0, timeout=240)
        self.assertEqual(r.rc, 0, r.describe())
        r = h.shardctl("verify", S, timeout=120)
        self.assertEqual(r.rc, 0, r.describe())
        self.assertIn("comparing the copy on %s with the live one on %s" % (home, there), r.out)
        r = h.shardctl("move", S, home, "--grace", 0, timeout=240)
        self.assertEqual(r.rc, 0, r.describe())
        r = h.shardctl("verify", S, timeout=120)
        self.assertEqual(r.rc, 2, "verify after moving back onto the kept copy:\n" + r.describe())
        self.assertIn("no copy there to compare", r.err, r.describe())
        self.assertNotIn("equal", r.out, r.describe())
        self.assertEqual(h.shard_row(S), (home, 0))


if __name__ == "__main__":
    unittest.main()
