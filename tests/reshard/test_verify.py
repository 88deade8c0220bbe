"""shardctl verify during a move held at `catchup` (replication running) while
loadgen bets on the shard: refused (exit 5) while the move's tool runs. With
the held tool killed (the move unfinished, its replication still running),
verify finds the copies equal under load; after one bet's stake is changed on the target copy
with SQL, it exits 4 and names that table and key (and nothing else). Then the
move is aborted; the bets acknowledged meanwhile are on the source, and the
ledger holds."""

import time
import unittest

import harness as h

FILL_USERS = 300
FILL_BETS = 6000


class TestVerifyFindsADifference(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        s = h.stack.get()
        s.require_dir()
        s.require_api()
        cls.co = h.new_company()
        cls.co_load = h.new_company()
        cls.match = h.new_match()
        cls.shard = h.pick_shards(1)[0]
        h.fillshard(cls.shard, FILL_USERS, FILL_BETS, match=cls.match["id"], company=cls.co["id"])

    def test_verify_during_catchup(self):
        S = self.shard
        self.addCleanup(h.settle, S)
        src = h.shard_map()[S]
        dst = h.other_host(src, sorted(set(h.shard_map().values())))
        lg = h.Loadgen(self.co_load, self.match["id"], 10, rate=20, mix="bet=100", watch_shard=S,
                       shard_users=(S, 6), threads=2, trace=True)
        lg.wait_loading()
        t_load = time.time()
        problems = []
        mv = h.move_proc(S, dst, hold="catchup")
        try:
            h.wait_hold(mv, "catchup", 120)
            time.sleep(1)
            # The running tool owns the shard (it restarts a stopped applier):
            # verify must not race it, and says so.
            r = h.shardctl("verify", S, "--json", timeout=120)
            if r.rc != 5 or not r.of("error"):
                problems.append("verify while a move of the shard runs: want exit 5 (refused) with an "
                                "error event:\n" + r.describe())
        finally:
            mv.kill9()
        # The move's replication goes on without the tool: the same checks
        # with the move interrupted (unfinished) rather than held.
        self.assertTrue(h.schema_exists(dst, S), "no target copy on %s" % dst)
        r = h.shardctl("verify", S, "--json", timeout=120)
        ev = r.of("verify")
        if r.rc != 0 or not ev or h.differences(r.events) or ev[-1].get("differences") not in (0, []) \
                or int(ev[-1].get("rows") or 0) < FILL_BETS:
            problems.append("verify of the unfinished move under load: want exit 0, no differences, at least "
                            "%d rows:\n%s" % (FILL_BETS, r.describe()))

        # A bet of fillshard's company (loadgen never touches it) changes on the target only.
        fill_bets = h.sql(dst, "SELECT b.id, b.stake FROM `%s`.bets b JOIN `%s`.users u ON u.id = b.user_id "
                               "WHERE u.company_id = %d ORDER BY b.id LIMIT 1"
                          % (h.schema(S), h.schema(S), int(self.co["id"])))
        self.assertEqual(len(fill_bets), 1, "no filled bet in the target copy on %s" % dst)
        bid, stake = int(fill_bets[0][0]), int(fill_bets[0][1])
        # The target copy is fenced until the cut-over: a plain write is refused...
        rc, err = h.sql_error(dst, "UPDATE `%s`.bets SET stake = %d WHERE id = %d" % (h.schema(S), stake + 7, bid))
        self.assertTrue(rc != 0 and "shard moved" in err,
                        "a write into the copy being built on %s was not refused: exit %d %s" % (dst, rc, err))
        # ... so pass like the move's copy session does.
        h.sql(dst, "SET SESSION sql_log_bin = 0; SET @bc_move_copy = 1; UPDATE `%s`.bets SET stake = %d WHERE id = %d"
              % (h.schema(S), stake + 7, bid))
        self.assertEqual(h.sql(dst, "SELECT stake FROM `%s`.bets WHERE id = %d" % (h.schema(S), bid)),
                         [[str(stake + 7)]])
        r = h.shardctl("verify", S, "--json", timeout=120)
        diffs = h.differences(r.events)
        ours = [d for d in diffs if d.get("table") == "bets" and str(bid) in str(d.get("key"))]
        if r.rc != 4 or not ours or len(diffs) != 1:
            problems.append("verify after bet %d changed on the target: want exit 4 and exactly that difference "
                            "(table bets, key %d):\n%s" % (bid, bid, r.describe()))
        t = h.shardctl("verify", S, timeout=120)
        if t.rc != 4 or "bets" not in t.out + t.err or str(bid) not in t.out + t.err:
            problems.append("verify (text) after the change: want exit 4 naming bets and %d:\n%s"
                            % (bid, t.describe()))

        a = h.shardctl("move", S, "--abort", "--json", timeout=120)
        report = lg.stop()
        self.assertEqual(a.rc, 0, "move --abort:\n" + a.describe())
        self.assertEqual(h.shard_row(S), (src, 0), "map after the abort")
        self.assertFalse(h.schema_exists(dst, S), "target schema left on %s after the abort" % dst)
        ids = [b for b, _, _ in lg.acked()]
        self.assertTrue(any(h.stack.shard_of(b) == S for b in ids), "no bet acknowledged on shard %d" % S)
        self.assertEqual(h.check_acked(ids), [])
        n_err, what = h.loadgen_errors(report)
        self.assertEqual(n_err, 0, "loadgen errors: " + what)
        # --trace: a line for each operation the report counted, due while
        # the load ran, with the report's longest latency.
        trace, bet = lg.trace(), report["ops"]["bet"]
        self.assertEqual((len(trace), sum(1 for t in trace if 200 <= t[3] < 300)), (bet["count"], bet["ok"]),
                         "trace lines and 2xx against the report's bets")
        self.assertEqual({t[1] for t in trace}, {"bet"})
        self.assertTrue(all(t_load - 5 <= t[0] <= time.time() for t in trace), "a trace line due outside the load")
        self.assertAlmostEqual(max(t[2] for t in trace), bet["max_ms"], delta=0.002)
        self.assertTrue(all(0 <= t[4] <= t[2] for t in trace), "a request sent later than it ended")
        rc, out = h.check_ledger()
        self.assertEqual(rc, 0, "check-ledger:\n" + h.tail(out))
        if problems:
            self.fail("shard %d, move %s -> %s held at catchup:\n  %s" % (S, src, dst, "\n  ".join(problems)))


if __name__ == "__main__":
    unittest.main()
