"""shardctl's move, verify and rebalance refuse bad operands with a clear
message and exit 2 (usage) or 1 (error), and change nothing."""

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
        self.expect(["move", nshard, "db2"], 2, "out of range: shard %d of 0..%d" % (nshard, nshard - 1))
        self.expect(["move", 1], 2, "usage: move SHARD TO-HOST")
        self.expect(["move", 1, "db2", "db3"], 2, "usage: move SHARD TO-HOST")
        self.expect(["move", 1, "--abort", "--resume"], 2, "usage: move SHARD --resume | --abort")
        self.expect(["move", 1, "no_such_host"], 1, "no host no_such_host in the shard map")
        self.expect(["move", 1, "db2", "--grace", "-1"], 2, "--grace wants seconds")
        self.expect(["rebalance", "/nonexistent/plan.yaml"], 1, "/nonexistent/plan.yaml")
        self.expect(["rebalance", "a.yaml", "--parallel", "17"], 2, "--parallel wants 1..16")
        self.expect(["verify", 1], 2, "give --against HOST")
        self.expect(["verify", 1, "--against", "no_such_host"], 1, "no host no_such_host")
        self.expect(["move", 1, "--abort"], 0, "no unfinished move")
        self.expect(["move", 1, before[1]], 0, "already on %s" % before[1])
        self.assertEqual(h.shard_map(), before, "a refused command changed the map")
        self.assertEqual(h.sql("db1", "SELECT COUNT(*) FROM `%s`.moves WHERE shard = 1" % h.global_schema()),
                         [["0"]], "a refused command left a move record")


if __name__ == "__main__":
    unittest.main()
