"""`shardctl move --copy-rate ROWS` keeps the copy at or under ROWS rows/s
(measured between the copy and copied phase events), and the move is as
correct as without it."""

import time
import unittest

import harness as h

USERS, BETS = 1000, 10000  # 21,000 rows with the ledger
RATE = 8000  # rows/s: at least ~2.6 s of copy


class TestCopyRate(unittest.TestCase):
    def test_copy_rate_caps_the_copy(self):
        s = h.stack.get()
        s.require_dir()
        co, match = h.new_company(), h.new_match()
        S = h.pick_shards(1)[0]
        self.addCleanup(h.settle, S)
        h.fillshard(S, USERS, BETS, match=match["id"], company=co["id"])
        src = h.shard_map()[S]
        dst = h.other_host(src, sorted(set(h.shard_map().values())))
        before = h.count(src, S)
        r = h.move_proc(S, dst, "--grace", "0", "--copy-rate", str(RATE))
        self.assertEqual(r.wait(300), 0, "shardctl move --copy-rate:\n" + r.describe())
        copies = r.of("copy")
        rows = max(int(e.get("rows") or 0) for e in copies)
        self.assertGreaterEqual(rows, USERS + 2 * BETS, "rows copied")
        t = {e.get("phase"): e["_t"] for e in r.of("phase")}
        secs = t["copied"] - t["copy"]
        self.assertGreaterEqual(secs, rows / RATE * 0.9,
                                "%d rows copied in %.2f s: faster than --copy-rate %d" % (rows, secs, RATE))
        self.assertLessEqual(max(float(e.get("rate") or 0) for e in copies), RATE * 1.1,
                             "the copy reported a rate over the cap: %s" % [e.get("rate") for e in copies])
        self.assertEqual(h.shard_row(S), (dst, 0))
        self.assertEqual(h.count(dst, S), before)
        self.assertEqual(h.verify_events_clean(r.events), [])
        h.log("--copy-rate %d: %d rows in %.2f s (%.0f rows/s)" % (RATE, rows, secs, rows / secs))


if __name__ == "__main__":
    unittest.main()
