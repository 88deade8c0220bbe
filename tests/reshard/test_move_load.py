"""A shard of 10,000 users and 100,000 bets moves to another host while
loadgen bets through HAProxy, half of its users on that shard.

After `shardctl move S TO --keep-source`: every acknowledged bet is a row of
its shard on the host the map names, listed once; the rows of shard S are
exactly the filled ones plus the acknowledged ones (per company: fillshard's
users and loadgen's users are in two companies); the ledger holds; the move's
verify event has no differences; loadgen saw no error, on the watched shard
or elsewhere. An API server started before the move with --no-map-poll (it
never reloads its map on its own) places a bet for a user of S after the
move: 201, the bet is on the new host, and the kept source copy has not
changed since the map flipped (it is fenced). Then `shardctl move S FROM`
rolls it back over the kept copy, with every bet."""

import json
import time
import unittest

import harness as h

FILL_USERS = 10000
FILL_BETS = 100000
LOAD_USERS = 40
WATCHED_USERS = 20
LOAD_RATE = 120  # requests/s in total: 2 cores run the whole stack and the move
MAX_PAUSE_MS = 1000  # the cut-over's write pause
MAX_BET_MS = 3000  # the router's bounded wait for a moved shard


class TestMoveUnderLoad(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        s = h.stack.get()
        s.require_dir()
        s.require_api()
        m = h.shard_map()
        cls.src = "db2" if "db2" in m.values() else sorted(set(m.values()))[0]
        cls.dst = h.other_host(cls.src, sorted(set(m.values())))
        cls.shard = h.pick_shards(1, on_host=cls.src)[0]
        cls.co_fill = h.new_company()
        cls.co_load = h.new_company()
        cls.match = h.new_match()
        t0 = time.time()
        h.fillshard(cls.shard, FILL_USERS, FILL_BETS, match=cls.match["id"], company=cls.co_fill["id"])
        h.log("shard %d on %s filled with %d users and %d bets in %.1f s; moving it to %s"
              % (cls.shard, cls.src, FILL_USERS, FILL_BETS, time.time() - t0, cls.dst))

    def test_move_under_load_loses_nothing(self):
        S, src, dst = self.shard, self.src, self.dst
        self.addCleanup(h.settle, S)
        co_fill, co_load = int(self.co_fill["id"]), int(self.co_load["id"])
        mid = self.match["id"]
        fill_where = "user_id IN (SELECT id FROM `%s`.users WHERE company_id = %d)" % (h.schema(S), co_fill)
        load_where = "user_id IN (SELECT id FROM `%s`.users WHERE company_id = %d)" % (h.schema(S), co_load)

        self.assertEqual(h.count(src, S, "users", "company_id = %d" % co_fill), FILL_USERS,
                         "fillshard --users: users of the company in shard %d on %s" % (S, src))
        self.assertEqual(h.count(src, S, "bets", fill_where), FILL_BETS,
                         "fillshard --bets: bets of the company's users in shard %d on %s" % (S, src))
        rc, out = h.check_ledger()
        self.assertEqual(rc, 0, "check-ledger after fillshard, before the move:\n" + h.tail(out))
        total_before = h.count(src, S)

        # The stale server loads the map now and keeps it: it bets once on S
        # before the move (on the source) and once after.
        stale = h.StaleApi()
        uid, cid = h.users_of(S, co_fill, 1, host=src)[0]
        stale_client = h.member_client(uid, cid, stale.url)
        b0 = h.bet(stale_client, mid)
        self.assertEqual(h.ids_present(src, S, [b0]), {b0}, "bet %d through the stale server before the move" % b0)

        lg = h.Loadgen(self.co_load, mid, LOAD_USERS, rate=LOAD_RATE, mix="bet=70,odds=30",
                       watch_shard=S, shard_users=(S, WATCHED_USERS))
        lg.wait_loading()
        time.sleep(3)  # a baseline before the move

        mv = h.move_proc(S, dst, "--keep-source")
        mv.wait_event(lambda e: e.get("event") == "phase" and e.get("phase") == "switched", 300,
                           "the switched phase")
        src_at_switch = h.count(src, S)
        rc = mv.wait(300)
        self.assertEqual(rc, 0, "shardctl move %d %s --keep-source:\n%s" % (S, dst, mv.describe()))
        time.sleep(2)  # load after the move, onto the new host
        report = lg.stop()

        b1 = h.bet(stale_client, mid)
        src_after = h.count(src, S)

        problems = []

        def check(ok, msg):
            if not ok:
                problems.append(msg)

        done = mv.of("done")
        check(len(done) == 1 and done[0].get("from") == src and done[0].get("to") == dst,
              "one done event from %s to %s: %s" % (src, dst, done))
        pause = done[0].get("pause_ms") if done else None
        check(isinstance(pause, (int, float)) and pause < MAX_PAUSE_MS,
              "cut-over pause_ms %s, want < %d (milliseconds, not seconds)" % (pause, MAX_PAUSE_MS))
        check(h.shard_row(S) == (dst, 0), "map row of shard %d: %s, want (%s, 0 active)" % (S, h.shard_row(S), dst))
        problems += h.verify_events_clean(mv.events)

        acked = lg.acked()
        ids = [b for b, _, _ in acked]
        watched = [b for b in ids if h.stack.shard_of(b) == S]
        problems += h.check_acked(ids + [b0, b1])
        check(len(watched) > 0, "no acknowledged bet on shard %d: the load did not reach it" % S)

        unknown = int((report.get("bets") or {}).get("unknown") or 0)
        n_load = h.count(dst, S, "bets", load_where)
        check(len(watched) <= n_load <= len(watched) + unknown,
              "bets of loadgen's users in shard %d on %s: %d rows, %d acknowledged (%d unknown outcomes)"
              % (S, dst, n_load, len(watched), unknown))
        check(h.count(dst, S, "bets", fill_where) == FILL_BETS + 2,
              "bets of fillshard's company in shard %d on %s: %d, want %d filled + 2 through the stale server"
              % (S, dst, h.count(dst, S, "bets", fill_where), FILL_BETS))
        total_after = h.count(dst, S)
        check(total_after == total_before + n_load + 2,
              "all bets of shard %d: %d on %s, %d before the move + %d of loadgen + 2 of the stale server"
              % (S, total_after, dst, total_before, n_load))
        check(h.ids_present(dst, S, [b1]) == {b1} and not h.ids_present(src, S, [b1]),
              "bet %d through the stale server after the move: on %s %s, on the kept source %s %s"
              % (b1, dst, h.ids_present(dst, S, [b1]), src, h.ids_present(src, S, [b1])))
        check(h.schema_exists(src, S), "--keep-source: %s on %s was dropped" % (h.schema(S), src))
        check(src_after == src_at_switch,
              "the kept source copy changed after the map flip: %d bets at switched, %d at the end "
              "(fencing let a write through)" % (src_at_switch, src_after))
        check(src_at_switch < total_after,
              "no bet reached %s after the flip (%d on the source at switched, %d on the target)"
              % (dst, src_at_switch, total_after))

        rc, out = h.check_ledger()
        check(rc == 0, "bcadmin check-ledger after the move: exit %d\n%s" % (rc, h.tail(out)))

        n_err, what = h.loadgen_errors(report)
        check(n_err == 0, "loadgen errors: %s" % what)
        w = h.watch_section(report)
        check(w is not None and w.get("shard") == S, "no watch section for shard %d in loadgen's report: %s"
              % (S, json.dumps(w)))
        if w is not None:
            ws = w.get("watched") or {}
            check((ws.get("max_ms") or 0) < MAX_BET_MS,
                  "slowest acknowledged bet on the moving shard %s ms, want < %d (a pause, bounded by the router's "
                  "retries)" % (ws.get("max_ms"), MAX_BET_MS))
            check(ws.get("users") == WATCHED_USERS and ws.get("errors") == 0 and ws.get("acked") == len(watched),
                  "loadgen's watched shard %d: want %d users, 0 errors, %d acked: %s"
                  % (S, WATCHED_USERS, len(watched), json.dumps(ws)))
        cut = mv.of("cutover")
        h.log("move of shard %d: %.1f s, done pause_ms %s, cutover attempts %s; bets acked %d (%d on shard %d); "
              "watched: %s" % (S, done[0].get("seconds", 0) if done else -1, done[0].get("pause_ms") if done else None,
                               [(c.get("attempt"), c.get("pause_ms")) for c in cut], len(ids), len(watched), S,
                               json.dumps(w)))
        stale.stop()
        if problems:
            self.fail("after moving shard %d from %s to %s under load:\n  %s\n%s\nstale server log:\n%s"
                      % (S, src, dst, "\n  ".join(problems), mv.describe(), stale.log_tail()))

        # Rolling back: the same move the other way. The fenced copy kept on
        # the source is out of date; it is replaced, and every bet comes along.
        back = h.shardctl("move", S, src, "--json", "--grace", "0", timeout=300)
        self.assertEqual(back.rc, 0, "moving shard %d back to %s:\n%s" % (S, src, back.describe()))
        self.assertEqual(h.shard_row(S), (src, 0), "map after moving shard %d back" % S)
        self.assertEqual(h.count(src, S), total_after, "bets of shard %d after moving it back to %s" % (S, src))
        self.assertFalse(h.schema_exists(dst, S), "%s left on %s after moving back" % (h.schema(S), dst))
        self.assertEqual(h.verify_events_clean(back.events), [])
        rc, out = h.check_ledger()
        self.assertEqual(rc, 0, "check-ledger after moving back:\n" + h.tail(out))


if __name__ == "__main__":
    unittest.main()
