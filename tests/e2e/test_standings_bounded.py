"""Standings of a company whose aggregates are short (issue 10 part 3): the
recomputation reads small companies' users together, in runs whose size the
shards' aggregates (members per company) bound. A company whose users were
loaded around the API, without aggregate rows (here tools/bench/fillshard's
users, their aggregate row then deleted), is short: the run that reads it
returns more rows than its
bound, and the recomputation reads its companies one by one, top K each,
instead of holding them all. Its ranking is still exact (the top 500 of
its users by points, then id), the server says what happened, and
`bcadmin rebuild-standings` brings the aggregates back (check-standings
clean); then the company is ranked as a large one, exactly the same (all
its members on one shard: too few shards' best scores for a cut, so it is
read whole). Large companies spread over the shards are cut: only their
users at or above the 500th of their shards' best scores are read."""

import glob
import os
import re
import subprocess
import time
import unittest

import stack
from fixtures import admin, new_company, new_match, settle, wait_past_kickoff

SHARD = 5
USERS = 31000  # more than a run may return (ROWS = 30,000 rows, api/api_standings.c)
TOP = 500


class StandingsCase(unittest.TestCase):
    """Helpers: bcadmin, the servers' logs, a settlement and its standings."""

    def setUp(self):
        self.s = stack.get()
        self.s.require_dir()
        self.fillshard = os.path.join(os.path.dirname(self.s.bcadmin), "fillshard")
        if not os.access(self.fillshard, os.X_OK):
            self.skipTest("%s is not built" % self.fillshard)

    def bcadmin(self, cmd):
        p = subprocess.run([self.s.bcadmin, "-c", self.s.cluster, cmd], capture_output=True, text=True,
                           timeout=300)
        return p.returncode, (p.stdout + p.stderr).strip()

    def log_sizes(self):
        return {p: os.path.getsize(p) for p in glob.glob(os.path.join(self.s.dir, "api*", "api.log"))}

    def logged_since(self, sizes, text):
        for path, off in sizes.items():
            with open(path, "rb") as f:
                f.seek(off)
                if text.encode() in f.read():
                    return True
        return False

    def settle_and_recompute(self, match, result):
        """Settles match and waits for the standings' next generation."""
        gen = admin().get("/v1/standings/companies").expect_json(200)["generation"]
        wait_past_kickoff(match)
        settle(match, result, timeout=120)
        deadline = time.time() + 60
        while admin().get("/v1/standings/companies").expect_json(200)["generation"] <= gen:
            self.assertLess(time.time(), deadline, "standings not recomputed 60 s after the settlement")
            time.sleep(0.2)

    def last_cut_line(self, sizes):
        """(large companies cut, their users read) of the last recomputation logged since sizes."""
        found = None
        deadline = time.time() + 3
        while found is None and time.time() < deadline:
            for path, off in sizes.items():
                with open(path, "rb") as f:
                    f.seek(off)
                    for m in re.finditer(rb"(\d+) large companies cut by their shards' best scores, at least "
                                         rb"(\d+) of their users read", f.read()):
                        found = (int(m.group(1)), int(m.group(2)))
            if found is None:
                time.sleep(0.1)
        self.assertIsNotNone(found, "no standings line in the servers' logs")
        return found


class TestStandingsWithShortAggregates(StandingsCase):
    def test_company_without_aggregates_is_ranked_exactly(self):
        co = new_company()
        m = new_match(kickoff_in=3)
        p = subprocess.run([self.fillshard, "-c", self.s.cluster, "--shard", str(SHARD), "--users", str(USERS),
                            "--bets", str(USERS), "--match", str(m["id"]), "--company", str(co["id"])],
                           capture_output=True, text=True, timeout=600)
        self.assertEqual(p.returncode, 0, "fillshard: %s" % (p.stdout + p.stderr)[-2000:])
        # fillshard counts its users in the aggregates, as a signup does: drop them
        self.s.sql_shard(SHARD, "DELETE FROM {s}.standings_company WHERE company_id = %s" % co["id"])
        sizes = self.log_sizes()
        self.settle_and_recompute(m, {"home_goals": 1, "away_goals": 0})
        # The API servers flush their log every 250 ms: the line may trail
        # the standings it was written before.
        deadline = time.time() + 3
        while not self.logged_since(sizes, "have more members than their aggregates say") and \
                time.time() < deadline:
            time.sleep(0.1)
        self.assertTrue(self.logged_since(sizes, "have more members than their aggregates say"),
                        "the recomputation did not notice the short aggregates")

        rows = self.s.sql_shard(SHARD, "SELECT id, points FROM {s}.users WHERE company_id = %s "
                                       "ORDER BY points DESC, id ASC LIMIT %d" % (co["id"], TOP))
        want = [(r[0], int(r[1])) for r in rows]
        # Another test's settlement may have moved the generation first: the
        # standings of this one's recomputation follow within seconds.
        deadline = time.time() + 10
        while True:
            got = admin().get("/v1/standings/users", query={"company": co["id"]}).expect_json(200)["items"]
            if [(str(u["user_id"]), int(u["points"])) for u in got] == want or time.time() > deadline:
                break
            time.sleep(0.2)
        self.assertEqual(len(got), TOP)
        self.assertEqual([(str(u["user_id"]), int(u["points"])) for u in got],
                         [(r[0], int(r[1])) for r in rows])

        rc, out = self.bcadmin("rebuild-standings")
        self.assertEqual(rc, 0, out)
        rc, out = self.bcadmin("check-standings")
        self.assertEqual(rc, 0, out)

        # With its aggregates back the company is a large one (more than 500
        # members): ranked with the other large companies by one windowed
        # scatter, exactly the same, and nothing is short any more.
        sizes = self.log_sizes()
        self.settle_and_recompute(new_match(kickoff_in=2), {"home_goals": 0, "away_goals": 0})
        self.assertFalse(self.logged_since(sizes, "have more members than their aggregates say"))
        again = admin().get("/v1/standings/users", query={"company": co["id"]}).expect_json(200)["items"]
        self.assertEqual([(str(u["user_id"]), int(u["points"])) for u in again],
                         [(r[0], int(r[1])) for r in rows])
        self.assertEqual([u["rank"] for u in again], list(range(1, TOP + 1)))
        rc, out = self.bcadmin("check-standings")
        self.assertEqual(rc, 0, out)


class TestLargeCompaniesAroundASmallOne(StandingsCase):
    """Two large companies with a small one between them by id: the large
    ones' best scores and users are read as one index range from the first
    to the second, which holds the small one's rows too; those must not
    count toward either cut or ranking. The large ones have members on every
    shard, enough for a cut from their shards' best scores. All three
    rankings stay exact."""

    PER_SHARD = 16  # members of each large company on each shard
    SMALL = 60

    def fill(self, co, users, match, shard):
        p = subprocess.run([self.fillshard, "-c", self.s.cluster, "--shard", str(shard), "--users",
                            str(users), "--bets", str(users), "--match", str(match["id"]), "--company",
                            str(co["id"])], capture_output=True, text=True, timeout=600)
        self.assertEqual(p.returncode, 0, "fillshard: %s" % (p.stdout + p.stderr)[-2000:])

    def ranking(self, co):
        rows = self.s.sql_all_shards("SELECT id, points FROM {s}.users WHERE company_id = %s" % co["id"])
        rows = sorted(((r[0], int(r[1])) for r in rows), key=lambda r: (-r[1], int(r[0])))
        return rows[:TOP]

    def test_small_company_inside_the_large_ones_range(self):
        a, b, c = new_company(), new_company(), new_company()
        self.assertLess(int(a["id"]), int(b["id"]))
        self.assertLess(int(b["id"]), int(c["id"]))
        m = new_match(kickoff_in=8)
        shards = self.s.shards or len(self.s.shard_map())
        # Each shard gives a company's cut its best ceil(2 * 500 / shards)
        # scores (api_standings_cut_per_shard): members on every shard, at
        # least that many on each, make more than 500 of them. That takes
        # the stack's 64 shards (32 at least); a smaller stack cannot show it.
        if self.PER_SHARD * shards <= TOP:
            self.skipTest("needs more than %d shards (the stack has %d)" % (TOP // self.PER_SHARD, shards))
        self.assertGreaterEqual(self.PER_SHARD, -(-2 * TOP // shards))
        for shard in range(shards):
            self.fill(a, self.PER_SHARD, m, shard)
            self.fill(c, self.PER_SHARD, m, shard)
        self.fill(b, self.SMALL, m, SHARD + 1)
        rc, out = self.bcadmin("rebuild-standings")
        self.assertEqual(rc, 0, out)
        sizes = self.log_sizes()
        self.settle_and_recompute(m, {"home_goals": 1, "away_goals": 0})
        cut, _ = self.last_cut_line(sizes)
        self.assertGreaterEqual(cut, 2, "the two large companies were not cut by their shards' best scores")
        # Each cut was at or under its company's 500th score: no company was
        # read again, whole, for fewer than 500 users at or above it.
        self.assertFalse(self.logged_since(sizes, "than a moment before"))
        for co, n in ((a, TOP), (b, self.SMALL), (c, TOP)):
            want = self.ranking(co)
            deadline = time.time() + 10
            while True:
                got = admin().get("/v1/standings/users", query={"company": co["id"]}).expect_json(200)["items"]
                pairs = [(str(u["user_id"]), int(u["points"])) for u in got]
                if pairs == want or time.time() > deadline:
                    break
                time.sleep(0.2)
            self.assertEqual(len(got), n, "company %s" % co["id"])
            self.assertEqual(pairs, want, "company %s" % co["id"])
            self.assertEqual([u["rank"] for u in got], list(range(1, n + 1)))
            self.assertTrue(all(str(u["company_id"]) == str(co["id"]) for u in got))
        rc, out = self.bcadmin("check-standings")
        self.assertEqual(rc, 0, out)
