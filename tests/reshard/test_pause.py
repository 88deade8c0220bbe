"""Writes to a shard whose move is cutting over wait, and are retried by the
server, not failed; the wait is bounded.

A move is held right after it fenced the source (BC_SHARDCTL_HOLD=fenced).
(1) A bet on the shard sent then does not fail: it is still waiting 0.8 s
later; the tool is let go (SIGUSR1), the cut-over finishes, and the bet
answers 201, once, on the new host. (2) Held there again (moving back): a bet
waits about router.move_wait_ms (3 s) and then answers 503 with Retry-After,
and nothing was written on either host; the re-run of the move finishes it.
Meanwhile a bet on another shard is not slowed. (3) A match settled while a
shard's move is held after its fence: the settlement of that shard waits,
goes to the new host once the tool goes on, and the match settles whole.
(4) A server with a map from before a move writes to a shard while the next
move rebuilds a copy on that server's (old) host: the copy under construction
refuses the write, the server follows the map, and the bet lands once, on the
shard's real host."""

import signal
import threading
import time
import unittest

import fixtures
import harness as h

MOVE_WAIT_MS = 3000  # router.move_wait_ms, the default


class TestWritesWaitOutTheCutover(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        s = h.stack.get()
        s.require_dir()
        s.require_api()
        cls.co = h.new_company()
        cls.match = h.new_match()
        cls.shard, cls.other = h.pick_shards(2)
        for sh in (cls.shard, cls.other):
            h.fillshard(sh, 5, 5, match=cls.match["id"], company=cls.co["id"])

    def post_bet(self, client, key):
        t0 = time.time()
        r = client.post("/v1/bets", {"match_id": str(self.match["id"]), "pick": "draw", "stake": 1},
                        headers={"Idempotency-Key": key})
        return r, time.time() - t0

    def test_a_write_waits_for_the_cutover(self):
        S, O = self.shard, self.other
        self.addCleanup(h.settle, S)
        src = h.shard_map()[S]
        dst = h.other_host(src, sorted(set(h.shard_map().values())))
        uid, cid = h.users_of(S, self.co["id"], 1)[0]
        c = h.member_client(uid, cid)
        ouid, ocid = h.users_of(O, self.co["id"], 1)[0]
        oc = h.member_client(ouid, ocid)
        before = h.count(src, S)

        mv = h.move_proc(S, dst, "--grace", "0", hold="fenced")
        h.wait_hold(mv, "fenced", 120)
        got = {}
        t = threading.Thread(target=lambda: got.update(zip(("r", "s"), self.post_bet(c, "pause-1"))))
        t.start()
        time.sleep(0.8)
        self.assertTrue(t.is_alive(), "a bet on shard %d answered while its source was fenced and the map not "
                                      "flipped: %s" % (S, got.get("r") and got["r"].describe()))
        r_other, s_other = self.post_bet(oc, "pause-other-1")
        self.assertEqual(r_other.status, 201, "a bet on another shard during the cut-over:\n" + r_other.describe())
        self.assertLess(s_other, 1.0, "a bet on another shard took %.2f s during shard %d's cut-over" % (s_other, S))
        mv.p.send_signal(signal.SIGUSR1)  # let the cut-over go on
        t.join(10)
        self.assertFalse(t.is_alive(), "the waiting bet never answered")
        rc = mv.wait(120)
        self.assertEqual(rc, 0, "the move after SIGUSR1:\n" + mv.describe())
        r, secs = got["r"], got["s"]
        self.assertEqual(r.status, 201, "the bet sent during the cut-over:\n" + r.describe())
        self.assertTrue(0.8 <= secs < MOVE_WAIT_MS / 1000.0,
                        "the bet sent during the cut-over took %.2f s; want it to wait (>= 0.8 s) and then "
                        "succeed within move_wait_ms" % secs)
        bid = int(r.json["id"])
        self.assertEqual(h.shard_row(S), (dst, 0))
        self.assertEqual(h.ids_present(dst, S, [bid]), {bid}, "the waiting bet is not on the new host %s" % dst)
        self.assertEqual(h.count(dst, S), before + 1, "bets of shard %d after the move" % S)
        h.log("a bet sent while shard %d was fenced waited %.2f s and succeeded on %s" % (S, secs, dst))

        # Held again (moving back): the wait is bounded.
        mv = h.move_proc(S, src, "--grace", "0", hold="fenced")
        h.wait_hold(mv, "fenced", 120)
        causes = h.unavailable_by_cause()
        r, stuck = self.post_bet(c, "pause-2")
        self.assertEqual(r.status, 503, "a bet while the cut-over is stuck:\n" + r.describe())
        self.assertTrue(r.header("Retry-After"), "503 without Retry-After:\n" + r.describe())
        after = h.unavailable_by_cause()
        self.assertEqual({k: after[k] - causes.get(k, 0) for k in after if after[k] != causes.get(k, 0)},
                         {"moved": 1}, "the API servers' 503s by cause (/metrics) for the stuck bet")
        self.assertTrue(MOVE_WAIT_MS / 1000.0 - 0.2 <= stuck < MOVE_WAIT_MS / 1000.0 + 2.0,
                        "the stuck bet answered after %.2f s; want about move_wait_ms (%d ms)" % (stuck, MOVE_WAIT_MS))
        mv.kill9()
        self.assertEqual(h.count(dst, S), before + 1, "the refused bet was written on %s" % dst)
        rerun = h.shardctl("move", S, src, "--json", "--grace", "0", timeout=180)
        self.assertEqual(rerun.rc, 0, "re-running the held move:\n" + rerun.describe())
        self.assertEqual(h.shard_row(S), (src, 0))
        self.assertEqual(h.count(src, S), before + 1, "bets of shard %d after moving back" % S)
        r, secs = self.post_bet(c, "pause-3")
        self.assertEqual(r.status, 201, "a bet after the move back:\n" + r.describe())
        rc, out = h.check_ledger()
        self.assertEqual(rc, 0, "check-ledger:\n" + h.tail(out))
        h.log("a bet while the cut-over was stuck answered 503 after %.2f s" % stuck)

    def test_b_settlement_waits_for_the_cutover(self):
        S, O = self.shard, self.other
        self.addCleanup(h.settle, S)
        match = h.new_match(kickoff_in=5)
        bets = []
        for sh in (S, O):
            uid, cid = h.users_of(sh, self.co["id"], 1)[0]
            cl = h.member_client(uid, cid)
            for pick in ("home", "away"):
                bets.append((sh, h.bet(cl, match["id"], stake=10, pick=pick)))
        fixtures.wait_past_kickoff(match)
        src = h.shard_map()[S]
        dst = h.other_host(src, sorted(set(h.shard_map().values())))
        mv = h.move_proc(S, dst, "--grace", "0", hold="fenced")
        h.wait_hold(mv, "fenced", 120)
        r = fixtures.admin().post("/v1/matches/%s/result" % match["id"], {"home_goals": 2, "away_goals": 0})
        self.assertEqual(r.status, 202, "posting the result while shard %d is fenced:\n%s" % (S, r.describe()))
        time.sleep(1.0)
        mv.p.send_signal(signal.SIGUSR1)
        self.assertEqual(mv.wait(120), 0, "the move after SIGUSR1:\n" + mv.describe())
        st = fixtures.wait_settled(match, timeout=60)
        self.assertEqual((st["shards_done"], st["shards_total"]), (st["shards_total"], len(h.shard_map())), st)
        for sh, bid in bets:
            host = h.shard_map()[sh]
            rows = h.sql(host, "SELECT status, payout FROM `%s`.bets WHERE id = %d" % (h.schema(sh), bid))
            self.assertEqual(len(rows), 1, "bet %d of shard %d on %s" % (bid, sh, host))
            self.assertIn(rows[0][0], ("won", "lost"), "bet %d of shard %d after the settlement: %s" % (bid, sh, rows))
        rc, out = h.check_ledger()
        self.assertEqual(rc, 0, "check-ledger after the settlement:\n" + h.tail(out))
        h.log("match %s settled while shard %d was fenced: %s" % (match["id"], S, st))

    def test_c_a_stale_writer_never_writes_into_a_copy_being_built(self):
        S = self.shard
        self.addCleanup(h.settle, S)
        a = h.shard_map()[S]
        b = h.other_host(a, sorted(set(h.shard_map().values())))
        stale = h.StaleApi("rsstale-copy")  # its map: S on a
        self.addCleanup(stale.stop)
        uid, cid = h.users_of(S, self.co["id"], 1)[0]
        c = h.member_client(uid, cid, stale.url)
        r = h.shardctl("move", S, b, "--json", "--grace", "0", timeout=180)  # a's copy dropped
        self.assertEqual(r.rc, 0, "move %d to %s:\n%s" % (S, b, r.describe()))
        mv = h.move_proc(S, a, "--grace", "0", hold="catchup")  # a copy being built on a again
        h.wait_hold(mv, "catchup", 120)
        on_b = h.count(b, S)
        r, secs = self.post_bet(c, "stale-copy-1")
        self.assertEqual(r.status, 201, "a bet through the stale server:\n" + r.describe())
        bid = int(r.json["id"])
        self.assertEqual(h.ids_present(b, S, [bid]), {bid},
                         "the bet is not on %s, the shard's host (it went into the copy being built on %s?)"
                         % (b, a))
        self.assertEqual(h.count(b, S), on_b + 1)
        mv.p.send_signal(signal.SIGUSR1)
        self.assertEqual(mv.wait(180), 0, "the move back after SIGUSR1:\n" + mv.describe())
        self.assertEqual(h.verify_events_clean(mv.events), [])
        self.assertEqual(h.shard_row(S), (a, 0))
        self.assertEqual(h.ids_present(a, S, [bid]), {bid}, "the bet did not come along to %s" % a)
        self.assertEqual(h.count(a, S), on_b + 1, "bets of shard %d on %s after moving back" % (S, a))
        stale.stop()
        h.log("a stale server's bet during a rebuild of a copy on its old host went to %s in %.2f s" % (b, secs))


if __name__ == "__main__":
    unittest.main()
