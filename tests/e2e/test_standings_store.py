"""The standings' lists are written by a thread of their own while the
recomputation reads on (api/api_standings_store.c). A list write that the
global host refuses fails the recomputation cleanly: `bcadmin
recompute-standings` exits 1 with the server's own message, no row of a new
generation is left in the standings table (the lists served stay those of
the last generation), and once the writes go through again the next
recomputation stores a new generation whole, which the servers show at
once (bcadmin bumps the cache's "standings" group, as a server does after
a settlement)."""

import json
import subprocess
import time
import unittest
import zlib

import stack
from fixtures import admin, new_company, new_team, signup

TRIGGER = "e2e_standings_refused"
MESSAGE = "e2e: standings writes refused"


def recompute():
    """(exit status, output) of bcadmin -c CLUSTER recompute-standings."""
    s = stack.get()
    p = subprocess.run([s.bcadmin, "-c", s.cluster, "recompute-standings"], capture_output=True, text=True,
                       timeout=300)
    return p.returncode, (p.stdout + p.stderr).strip()


class TestListWriteRefused(unittest.TestCase):
    def setUp(self):
        self.s = stack.get()
        self.s.require_dir()
        self.table = "`%s`.standings" % self.s.global_schema()

    def generations(self):
        """(highest generation stored, rows stored under it)."""
        (gen, n), = self.s.sql_global("SELECT COALESCE(MAX(generation), 0), COUNT(*) FROM %s "
                                      "WHERE generation = (SELECT MAX(generation) FROM %s)"
                                      % (self.table, self.table))
        return int(gen), int(n)

    def served_at_least(self, gen):
        """The served company standings once they show generation gen: bcadmin
        bumps the cache's "standings" group, and the servers see the bump
        within about a second (the group's generation is near-cached), not
        when their cached copy of the last list expires (an hour)."""
        deadline = time.time() + 5
        while True:
            j = admin().get("/v1/standings/companies").expect_json(200)
            if j["generation"] >= gen:
                return j
            self.assertLess(time.time(), deadline, "generation %d not served 5 s after it was stored" % gen)
            time.sleep(0.2)

    def test_refused_write_stores_nothing_and_the_next_recomputation_all(self):
        rc, out = recompute()
        self.assertEqual(rc, 0, out)
        gen, lists = self.generations()
        self.assertGreater(lists, 0, "no lists stored under generation %d" % gen)
        served = self.served_at_least(gen)
        self.s.sql_global("CREATE TRIGGER `%s`.%s BEFORE INSERT ON %s FOR EACH ROW "
                          "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '%s'"
                          % (self.s.global_schema(), TRIGGER, self.table, MESSAGE))
        try:
            rc, out = recompute()
            self.assertEqual(rc, 1, "a recomputation whose writes are refused: " + out)
            self.assertIn(MESSAGE, out, "bcadmin does not give the server's message")
            self.assertEqual(self.generations(), (gen, lists),
                             "a refused recomputation left rows of a new generation")
            again = admin().get("/v1/standings/companies").expect_json(200)
            self.assertEqual(again["generation"], served["generation"])
            self.assertEqual(again["items"], served["items"])
        finally:
            self.s.sql_global("DROP TRIGGER IF EXISTS `%s`.%s" % (self.s.global_schema(), TRIGGER))
        rc, out = recompute()
        self.assertEqual(rc, 0, out)
        gen2, lists2 = self.generations()
        self.assertGreater(gen2, gen)
        self.assertEqual(lists2, lists, "the new generation does not hold every list")
        self.served_at_least(gen2)


class TestOneAtATime(unittest.TestCase):
    """Recomputations run one at a time (the lock row, kind 'recompute'): four
    started at once each store a generation of their own, one after another,
    and every list ends under the last. Before the lock, they read the
    highest generation together and stored under the same number, and the
    one that read the oldest sums could commit last."""

    def test_concurrent_recomputations_each_store_a_generation(self):
        s = stack.get()
        s.require_dir()
        table = "`%s`.standings" % s.global_schema()
        (before,), = s.sql_global("SELECT COALESCE(MAX(generation), 0) FROM %s" % table)
        procs = [subprocess.Popen([s.bcadmin, "-c", s.cluster, "recompute-standings"], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for _ in range(4)]
        for p in procs:
            out, _ = p.communicate(timeout=300)
            self.assertEqual(p.returncode, 0, out)
        (after,), = s.sql_global("SELECT MAX(generation) FROM %s" % table)
        # A settlement of another test may recompute meanwhile: at least 4.
        self.assertGreaterEqual(int(after) - int(before), 4,
                                "four recomputations stored fewer generations: some shared one")
        (older,), = s.sql_global("SELECT COUNT(*) FROM %s WHERE kind <> 'recompute' AND generation <> %d"
                                 % (table, int(after)))
        self.assertEqual(int(older), 0, "lists of an older generation left beside the last")


class TestListsStoredDeflated(unittest.TestCase):
    """A recomputation stores each list deflated (zlib) in body_deflate, body
    empty: a tenth of the bytes to the redo log, the binlog and the
    replicas. What a server answers is the inflated list. A row written
    before that change (its text in body, body_deflate NULL) is still
    served as it is, and a damaged one is an internal error (500) of that
    list alone, logged, not a crash."""

    def setUp(self):
        self.s = stack.get()
        self.s.require_dir()
        self.table = "`%s`.standings" % self.s.global_schema()

    def recompute_fresh(self):
        """Two new companies (a team and a member each) and a recomputation:
        (generation, [company, company]), nobody having read their lists."""
        cos = [new_company() for _ in range(2)]
        for co in cos:
            signup(co, team_id=new_team(co)["id"])
        rc, out = recompute()
        self.assertEqual(rc, 0, out)
        (gen,), = self.s.sql_global("SELECT MAX(generation) FROM %s" % self.table)
        return int(gen), cos

    def stored(self, kind, scope):
        """(body, the inflated body_deflate or None) of a stored list."""
        (body, packed), = self.s.sql_global("SELECT body, HEX(body_deflate) FROM %s WHERE kind = '%s' "
                                            "AND scope = %d" % (self.table, kind, int(scope)))
        return body, None if packed is None else zlib.decompress(bytes.fromhex(packed)).decode()

    def served(self, path, gen):
        deadline = time.time() + 5
        while True:
            j = admin().get(path).expect_json(200)
            if j["generation"] >= gen:
                return j
            self.assertLess(time.time(), deadline, "%s: generation %d not served within 5 s" % (path, gen))
            time.sleep(0.2)

    def test_lists_are_stored_deflated_and_served_inflated(self):
        gen, cos = self.recompute_fresh()
        (plain, total), = self.s.sql_global(
            "SELECT SUM(body_deflate IS NULL OR body <> ''), COUNT(*) FROM %s WHERE kind <> 'recompute' "
            "AND generation = %d" % (self.table, gen))
        self.assertGreater(int(total), 0)
        self.assertEqual(int(plain), 0, "lists of generation %d stored as text, not deflated" % gen)
        for kind, scope, path in (("companies", 0, "/v1/standings/companies"),
                                  ("users", cos[0]["id"], "/v1/standings/users?company=%s" % cos[0]["id"]),
                                  ("teams", cos[0]["id"], "/v1/standings/teams?company=%s" % cos[0]["id"])):
            body, text = self.stored(kind, scope)
            self.assertEqual(body, "", "%s %s: body not empty beside body_deflate" % (kind, scope))
            items = json.loads(text)
            self.assertGreater(len(items), 0, "%s %s: an empty list" % (kind, scope))
            self.assertEqual(self.served(path, gen)["items"], items, "%s %s: served is not the stored list"
                             % (kind, scope))

    def test_a_list_stored_as_text_is_served_and_a_damaged_one_is_a_500(self):
        gen, (old, bad) = self.recompute_fresh()
        text = json.dumps([{"rank": 1, "team_id": "1", "name": "stored as text", "members": 1, "points": 7,
                            "average": 7.0}])
        self.s.sql_global("UPDATE %s SET body = '%s', body_deflate = NULL WHERE kind = 'teams' AND scope = %d"
                          % (self.table, text, int(old["id"])))
        self.s.sql_global("UPDATE %s SET body_deflate = 'not a zlib stream' WHERE kind = 'teams' AND scope = %d"
                          % (self.table, int(bad["id"])))
        j = self.served("/v1/standings/teams?company=%s" % old["id"], gen)
        self.assertEqual(j["items"], json.loads(text), "a list stored as text is not served as it is")
        r = admin().get("/v1/standings/teams?company=%s" % bad["id"])
        self.assertEqual(r.status, 500, r.describe())
        self.assertEqual(r.expect_json(500)["error"]["code"], "internal", r.describe())
        # The others are served still, and so is the damaged list once a
        # recomputation stores it again.
        self.served("/v1/standings/teams?company=%s" % old["id"], gen)
        rc, out = recompute()
        self.assertEqual(rc, 0, out)
        j = self.served("/v1/standings/teams?company=%s" % bad["id"], gen + 1)
        self.assertEqual(len(j["items"]), 1, j)


class TestUsage(unittest.TestCase):
    def test_unknown_command_is_a_usage_error_whatever_the_config(self):
        s = stack.get()
        for conf in (s.cluster, "/nonexistent/cluster.yaml"):
            p = subprocess.run([s.bcadmin, "-c", conf, "recompute-standing"], capture_output=True, text=True,
                               timeout=60)
            self.assertEqual(p.returncode, 2, p.stdout + p.stderr)
            self.assertIn("bcadmin: unknown command 'recompute-standing'", p.stderr)


if __name__ == "__main__":
    unittest.main()
