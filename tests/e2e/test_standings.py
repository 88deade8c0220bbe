"""Standings (users global and per company, teams, companies) equal a
recomputation in Python from the raw rows of every shard."""

import time
import unittest
from fractions import Fraction

import stack
from fixtures import (NO_ID, TIME_RE, admin, api, new_company, new_match, new_team, new_users, parallel, place_bet,
                      settle, signup, wait_past_kickoff)

LIMIT = 500


def avg(points, members):
    return Fraction(points, members) if members else Fraction(0)


def round2(f):
    """Round half away from zero to two decimals, as a Fraction."""
    q = abs(f) * 100
    n = int(q)
    if q - n >= Fraction(1, 2):
        n += 1
    return Fraction(n if f >= 0 else -n, 100)


class TestStandings(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        s = stack.get()
        s.require_dir()
        cls.co = new_company()
        cls.other = new_company()
        cls.t1, cls.t2, cls.t3 = new_team(cls.co), new_team(cls.co), new_team(cls.co)
        cls.u1, cls.u2, cls.u6 = new_users(cls.co, 3, team_id=cls.t1["id"])
        cls.u3, cls.u4 = new_users(cls.co, 2, team_id=cls.t2["id"])
        cls.u5 = signup(cls.co)
        cls.x = signup(cls.other)
        m = new_match(kickoff_in=3, odds=(2.50, 3.20, 2.80))
        for u, pick, stake in ((cls.u1, "home", 100), (cls.u2, "away", 50), (cls.u3, "home", 40),
                               (cls.u4, "draw", 30), (cls.u5, "home", 10), (cls.x, "home", 8)):
            place_bet(u, m, pick, stake)
        # the standings as they are now (this also makes every key warm)
        cls.paths = {
            "global": ("/v1/standings/users", None),
            "company": ("/v1/standings/users", cls.co["id"]),
            "teams": ("/v1/standings/teams", cls.co["id"]),
            "companies": ("/v1/standings/companies", None),
        }
        before = {k: cls.get(k)["generation"] for k in cls.paths}
        wait_past_kickoff(m)
        settle(m, {"home_goals": 1, "away_goals": 0})
        # recomputed after the settlement: wait for a new generation of each
        cls.got = {}
        deadline = time.time() + 30
        for k in cls.paths:
            while True:
                j = cls.get(k)
                if j["generation"] > before[k]:
                    cls.got[k] = j
                    break
                if time.time() > deadline:
                    raise AssertionError("standings %s not recomputed 30 s after the settlement (generation %s)"
                                         % (k, j["generation"]))
                time.sleep(0.2)
        cls.load_rows()

    @classmethod
    def get(cls, kind):
        path, company = cls.paths[kind]
        return cls.u1.client.get(path, query={"company": company}).expect_json(200, msg="standings " + kind)

    @classmethod
    def load_rows(cls):
        s = stack.get()
        # docs/api.md "Standings arithmetic": platform admins are not ranked
        cls.users = [dict(id=r[0], display_name=r[1], company_id=r[2], team_id=r[3], points=int(r[4]))
                     for r in s.sql_all_shards("SELECT id, display_name, company_id, team_id, points, role"
                                               " FROM {s}.users") if r[5] != "platform_admin"]
        g = s.global_schema()
        cls.companies = {r[0]: {"name": r[1], "platform": r[2] not in (None, "0")}
                         for r in s.sql_global("SELECT id, name, platform FROM `%s`.companies" % g)}
        cls.teams = {r[0]: {"company_id": r[1], "name": r[2]}
                     for r in s.sql_global("SELECT id, company_id, name FROM `%s`.teams WHERE company_id = %d"
                                           % (g, int(cls.co["id"])))}
        # recomputed points from the bets, for the users of this test
        mine = [u.id for u in (cls.u1, cls.u2, cls.u3, cls.u4, cls.u5, cls.u6)]
        rows = s.sql_all_shards("SELECT user_id, COALESCE(SUM(payout - stake), 0) FROM {s}.bets"
                                " WHERE status <> 'open' AND user_id IN (%s) GROUP BY user_id" % ",".join(mine),
                                {stack.shard_of(i) for i in mine})
        cls.bet_points = {r[0]: int(r[1]) for r in rows}

    # ------------------------------------------------------------ helpers

    def user_items(self, users):
        users = sorted(users, key=lambda u: (-u["points"], int(u["id"])))[:LIMIT]
        return [{"rank": i + 1, "user_id": u["id"], "display_name": u["display_name"],
                 "company_id": u["company_id"], "company_name": self.companies.get(u["company_id"], {}).get("name"),
                 "team_id": u["team_id"], "points": u["points"]} for i, u in enumerate(users)]

    def assert_items(self, got, want, what):
        if got == want:
            return
        diffs = []
        for i in range(max(len(got), len(want))):
            g = got[i] if i < len(got) else None
            w = want[i] if i < len(want) else None
            if g != w:
                diffs.append("#%d got %s\n    want %s" % (i + 1, g, w))
        self.fail("%s differ from the recomputation (%d vs %d items), first differences:\n%s"
                  % (what, len(got), len(want), "\n".join(diffs[:8])))

    def assert_group_items(self, got, groups, id_key, what):
        """groups: {id: (name, members, points)}; checks values, rounding and order."""
        rows = [(gid, name, members, points, avg(points, members)) for gid, (name, members, points) in groups.items()]
        exact = sorted(rows, key=lambda r: (-r[4], int(r[0])))[:LIMIT]
        rounded = sorted(rows, key=lambda r: (-round2(r[4]), int(r[0])))[:LIMIT]
        got_ids = [x.get(id_key) for x in got]
        self.assertIn(got_ids, ([r[0] for r in exact], [r[0] for r in rounded]),
                      "%s: order is not by average desc then id asc:\n got %s\nwant %s"
                      % (what, got_ids[:20], [r[0] for r in exact][:20]))
        by_id = {r[0]: r for r in rows}
        for i, x in enumerate(got):
            self.assertEqual(set(x), {"rank", id_key, "name", "members", "points", "average"}, x)
            gid, name, members, points, a = by_id[x[id_key]]
            self.assertEqual((x["rank"], x["name"], x["members"], x["points"]), (i + 1, name, members, points),
                             "%s item %s" % (what, x))
            self.assertIsInstance(x["average"], (int, float))
            self.assertLessEqual(abs(Fraction(str(x["average"])) - a), Fraction(5, 1000) + Fraction(1, 10 ** 9),
                                 "%s: average of %s is %s, exact %s" % (what, gid, x["average"], float(a)))
            self.assertEqual(Fraction(str(x["average"])), round2(a),
                             "%s: average of %s rounded half away from zero to two decimals" % (what, gid))

    # ------------------------------------------------------------ tests

    def test_shape(self):
        for k, j in self.got.items():
            self.assertEqual(set(j), {"items", "generation", "computed_at"}, k)
            self.assertIsInstance(j["generation"], int)
            self.assertRegex(j["computed_at"] or "", TIME_RE)
            self.assertLessEqual(len(j["items"]), LIMIT)

    def test_points_are_sums_over_settled_bets(self):
        want = {self.u1.id: 150, self.u2.id: -50, self.u3.id: 60, self.u4.id: -30, self.u5.id: 15}
        self.assertEqual(self.bet_points, want, "sum of payout - stake over the settled bets (rows)")
        rows = {u["id"]: u["points"] for u in self.users}
        for uid, p in list(want.items()) + [(self.u6.id, 0)]:
            self.assertEqual(rows[uid], p, "users.points of %s" % uid)

    def test_users_in_company(self):
        mine = [u for u in self.users if u["company_id"] == self.co["id"]]
        self.assertEqual(len(mine), 6)
        self.assert_items(self.got["company"]["items"], self.user_items(mine), "company user standings")
        ids = [x["user_id"] for x in self.got["company"]["items"]]
        self.assertEqual(ids, [self.u1.id, self.u3.id, self.u5.id, self.u6.id, self.u4.id, self.u2.id])

    def test_users_global(self):
        got = self.got["global"]["items"]
        self.assert_items(got, self.user_items(self.users), "global user standings")
        emails = {u.email for u in (self.u1, self.u2, self.u3, self.u4, self.u5, self.u6)}
        for x in got:
            self.assertNotIn("email", x)
            self.assertFalse(any(isinstance(v, str) and "@" in v and v in emails for v in x.values()), x)

    def test_teams(self):
        groups = {tid: [t["name"], 0, 0] for tid, t in self.teams.items()}
        for u in self.users:
            if u["company_id"] == self.co["id"] and u["team_id"] is not None:
                groups[u["team_id"]][1] += 1
                groups[u["team_id"]][2] += u["points"]
        self.assertEqual({k: tuple(v[1:]) for k, v in groups.items()},
                         {self.t1["id"]: (3, 100), self.t2["id"]: (2, 30), self.t3["id"]: (0, 0)})
        self.assert_group_items(self.got["teams"]["items"], {k: tuple(v) for k, v in groups.items()},
                                "team_id", "team standings")

    def test_companies(self):
        got = self.got["companies"]["items"]
        groups = {cid: [c["name"], 0, 0] for cid, c in self.companies.items()}
        for u in self.users:
            g = groups.setdefault(u["company_id"], [None, 0, 0])
            g[1] += 1
            g[2] += u["points"]
        # the platform's own company (platform admins only, who are not ranked) is no contestant
        for cid, c in self.companies.items():
            if c["platform"] and groups[cid][1] == 0:
                groups.pop(cid)
        self.assertEqual(tuple(groups[self.co["id"]][1:]), (6, 145))
        self.assert_group_items(got, {k: tuple(v) for k, v in groups.items()}, "company_id", "company standings")

    def test_parameters(self):
        c = self.u1.client
        c.get("/v1/standings/teams").expect(400, "invalid_parameter")
        c.get("/v1/standings/users", query={"company": NO_ID}).expect(404, "not_found")
        for bad in ("abc", "", "+8", "0", "99999999999999999999"):
            for kind in ("users", "teams"):
                c.get("/v1/standings/" + kind, query={"company": bad}).expect(400, "invalid_parameter", msg=bad)
        c.get("/v1/standings/teams", query={"company": self.other["id"]}).expect(404, "not_found")
        api().get("/v1/standings/companies").expect(401, "unauthorized")
        api().get("/v1/standings/users").expect(401, "unauthorized")
        # the platform admin may read any company's standings
        admin().get("/v1/standings/teams", query={"company": self.co["id"]}).expect(200)

    def test_every_server_serves_the_same(self):
        from client import Client
        for url in stack.get().api_urls:
            c = Client(url, self.u1.client.token)
            for k, (path, company) in self.paths.items():
                j = c.get(path, query={"company": company}).expect_json(200)
                if j["generation"] == self.got[k]["generation"]:
                    self.assertEqual(j["items"], self.got[k]["items"], "%s on %s" % (k, url))


class TestStandingsFreshOnEveryServer(unittest.TestCase):
    def test_every_server_shows_the_settlement_when_its_job_is_done(self):
        """Every API server reads its company's standings every 30 ms while a
        settlement runs (each keeps the generation it read); when the job is
        seen done, each server's next read already shows the new generation
        and the points: none keeps the old one for the near-cache's 0.9 s."""
        import threading
        from client import Client
        s = stack.get()
        co = new_company()
        u = signup(co)
        m = new_match(kickoff_in=3, odds=(2.00, 3.00, 4.00))
        place_bet(u, m, "home", 10)
        path, query = "/v1/standings/users", {"company": co["id"]}
        clients = [Client(url, u.client.token) for url in s.api_urls]
        before = {c.base_url: c.get(path, query=query).expect_json(200)["generation"] for c in clients}
        stop = threading.Event()

        def read(c):
            while not stop.is_set():
                c.get(path, query=query)
                time.sleep(0.03)

        readers = [threading.Thread(target=read, args=(c,), daemon=True) for c in clients]
        for t in readers:
            t.start()
        try:
            wait_past_kickoff(m)
            a = admin()
            a.post("/v1/matches/%s/result" % m["id"], {"home_goals": 2, "away_goals": 0}).expect(202)
            deadline = time.time() + 60
            while True:
                j = a.get("/v1/matches/%s/settlement" % m["id"]).expect_json(200)
                if j.get("state") == "done":
                    break
                self.assertLess(time.time(), deadline, "settlement not done in 60 s: %s" % j)
                time.sleep(0.05)
            seen = {c.base_url: c.get(path, query=query).expect_json(200) for c in clients}
        finally:
            stop.set()
            for t in readers:
                t.join(5)
        for url, j in sorted(seen.items()):
            self.assertGreater(j["generation"], before[url], "%s still shows generation %s when the job "
                               "is done" % (url, j["generation"]))
            mine = [it for it in j["items"] if it["user_id"] == u.id]
            self.assertEqual(len(mine), 1, "%s: %s" % (url, j["items"]))
            self.assertEqual(mine[0]["points"], 10, "%s: %s" % (url, mine[0]))  # payout 20 - stake 10


if __name__ == "__main__":
    unittest.main()
