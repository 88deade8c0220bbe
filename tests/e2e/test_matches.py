"""Matches: create, list (filters, pagination), get; odds GET/PUT; result validation."""

import random
import time
import unittest

import stack
from client import Client
from fixtures import (ID_RE, NO_ID, TIME_RE, admin, api, hundredths, new_company, new_match, new_users, place_bet,
                      rfc3339, signup, uniq, wait_past_kickoff)

MATCH_KEYS = {"id", "home", "away", "stage", "kickoff", "status", "odds", "score"}


class TestMatchCreate(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.co = new_company()
        cls.u = signup(cls.co)

    def body(self, **kw):
        tag = uniq("m")
        b = {"home": "H " + tag, "away": "A " + tag, "stage": "Group A",
             "kickoff": rfc3339(time.time() + 86400), "odds": {"home": 2.1, "draw": 3.25, "away": 4.5}}
        b.update(kw)
        return b

    def test_create_and_get(self):
        b = self.body()
        r = admin().post("/v1/matches", b)
        m = r.expect_json(201)
        self.assertEqual(set(m), MATCH_KEYS, r.describe())
        self.assertRegex(m["id"], ID_RE)
        self.assertEqual((m["home"], m["away"], m["stage"], m["kickoff"]),
                         (b["home"], b["away"], b["stage"], b["kickoff"]))
        self.assertEqual(m["status"], "scheduled")
        self.assertIsNone(m["score"])
        self.assertEqual(m["odds"], {"home": 2.1, "draw": 3.25, "away": 4.5, "version": 1})
        g = self.u.client.get("/v1/matches/%s" % m["id"]).expect_json(200)
        self.assertEqual(g, m)

    def test_kickoff_with_milliseconds(self):
        t = int(time.time()) + 86400
        m = admin().post("/v1/matches", self.body(kickoff=rfc3339(t)[:-1] + ".250Z")).expect_json(201)
        self.assertRegex(m["kickoff"], TIME_RE)
        self.assertEqual(m["kickoff"], rfc3339(t))

    def test_odds_bounds(self):
        m = admin().post("/v1/matches", self.body(odds={"home": 1.01, "draw": 1000.00, "away": 17})).expect_json(201)
        self.assertEqual([hundredths(m["odds"][k]) for k in ("home", "draw", "away")], [101, 100000, 1700])
        for bad in (1.0, 1.005, 2.999, 1000.01, 0, -2.5, "2.50", True):
            admin().post("/v1/matches", self.body(odds={"home": bad, "draw": 3, "away": 3})).expect(
                422, "invalid_odds", msg=repr(bad))

    def test_invalid_teams(self):
        admin().post("/v1/matches", self.body(home="Brazil", away="Brazil")).expect(422, "invalid_teams")
        admin().post("/v1/matches", self.body(home="")).expect(422, "invalid_teams")
        admin().post("/v1/matches", self.body(away="")).expect(422, "invalid_teams")

    def test_invalid_kickoff(self):
        for k in ("tomorrow", "2026-13-01T00:00:00Z", "2026-06-11 19:00:00", "2026-06-11T25:00:00Z", "", "2026-06-11",
                  "2026-06-11T19:00:00+02:00"):
            admin().post("/v1/matches", self.body(kickoff=k)).expect(422, "invalid_kickoff", msg=repr(k))

    def test_kickoff_years(self):
        """Kickoffs of the years 2000 to 2100 only, and the error says so."""
        for k in ("1999-12-31T23:59:59Z", "2101-01-01T00:00:00Z", "9999-12-31T23:59:59Z"):
            e = admin().post("/v1/matches", self.body(kickoff=k)).expect(422, "invalid_kickoff", msg=repr(k))
            self.assertIn("2000 to 2100", e.error_message, k)
        for k, shown in (("2100-12-31T23:59:59Z", "2100-12-31T23:59:59Z"),
                         ("2000-01-01T00:00:00.250+00:00", "2000-01-01T00:00:00Z")):
            m = admin().post("/v1/matches", self.body(kickoff=k)).expect_json(201, msg=repr(k))
            self.assertEqual(m["kickoff"], shown, k)
        e = admin().get("/v1/matches?from=1999-12-01T00:00:00Z").expect(400, "invalid_parameter")
        self.assertIn("2000 to 2100", e.error_message)

    def test_fields(self):
        b = self.body()
        del b["odds"]
        admin().post("/v1/matches", b).expect(400, "invalid_field")
        admin().post("/v1/matches", self.body(extra=1)).expect(400, "unknown_field")
        admin().post("/v1/matches", self.body(odds={"home": 2, "draw": 2, "away": 2, "x": 2})).expect(
            400, "unknown_field")

    def test_only_platform_admin(self):
        self.u.client.post("/v1/matches", self.body()).expect(403, "forbidden")
        api().post("/v1/matches", self.body()).expect(401, "unauthorized")

    def test_get_unknown_and_needs_token(self):
        self.u.client.get("/v1/matches/" + NO_ID).expect(404, "not_found")
        m = new_match()
        api().get("/v1/matches/%s" % m["id"]).expect(401, "unauthorized")
        api().get("/v1/matches").expect(401, "unauthorized")


class TestMatchList(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.co = new_company()
        cls.u = signup(cls.co)
        # a random window far enough ahead that no other match shares it
        cls.base = int(time.time()) + 86400 * random.randint(30, 300) + random.randint(0, 86400)
        cls.ms = [new_match(kickoff=rfc3339(cls.base + off)) for off in (0, 60, 120, 120)]
        cls.ms[2:] = sorted(cls.ms[2:], key=lambda m: int(m["id"]))

    def list(self, **q):
        return self.u.client.get("/v1/matches", query=q).expect_json(200)

    def ids(self, items):
        return [m["id"] for m in items]

    def test_window_order_and_odds(self):
        j = self.list(**{"from": rfc3339(self.base), "to": rfc3339(self.base + 180)})
        self.assertEqual(self.ids(j["items"]), self.ids(self.ms), "ordered by kickoff then id")
        self.assertIsNone(j["next_cursor"])
        for got, want in zip(j["items"], self.ms):
            self.assertEqual(got["odds"], want["odds"])
            self.assertEqual(set(got), MATCH_KEYS)

    def test_same_shown_kickoff_ordered_by_id(self):
        """Kickoffs sent with milliseconds are whole seconds, as shown: matches
        that show the same kickoff list in id order (hidden milliseconds
        ordered them 5, 12, 8, 6, 7 before)."""
        t = self.base + 400  # outside the other tests' windows
        ms = [new_match(kickoff=rfc3339(t)[:-1] + frac) for frac in ("Z", ".999Z", ".5Z", ".1234Z", ".001Z")]
        j = self.list(**{"from": rfc3339(t), "to": rfc3339(t + 1)})
        self.assertEqual(self.ids(j["items"]), sorted(self.ids(ms), key=int))
        self.assertEqual({m["kickoff"] for m in j["items"]}, {rfc3339(t)})

    def test_from_inclusive_to_exclusive(self):
        j = self.list(**{"from": rfc3339(self.base + 60), "to": rfc3339(self.base + 120)})
        self.assertEqual(self.ids(j["items"]), [self.ms[1]["id"]])

    def test_pagination(self):
        seen, pages, cursor = [], 0, None
        while True:
            q = {"from": rfc3339(self.base), "to": rfc3339(self.base + 180), "limit": 3, "cursor": cursor}
            j = self.list(**q)
            pages += 1
            self.assertLessEqual(len(j["items"]), 3)
            if pages == 1:
                self.assertEqual(len(j["items"]), 3)
                self.assertIsInstance(j["next_cursor"], str, "a full first page has a cursor")
            seen += self.ids(j["items"])
            cursor = j["next_cursor"]
            if cursor is None:
                break
            self.assertLess(pages, 5, "pagination does not end")
        self.assertEqual(seen, self.ids(self.ms))

    def test_status_filter(self):
        # its own window, so that the other tests' window keeps only scheduled matches
        mc = new_match(kickoff=rfc3339(self.base + 600))
        ms = new_match(kickoff=rfc3339(self.base + 650))
        admin().post("/v1/matches/%s/result" % mc["id"], {"cancelled": True}).expect(202)
        w = {"from": rfc3339(self.base + 600), "to": rfc3339(self.base + 700)}
        self.assertEqual(self.ids(self.list(status="cancelled", **w)["items"]), [mc["id"]])
        self.assertEqual(self.ids(self.list(status="scheduled", **w)["items"]), [ms["id"]])
        self.assertEqual(self.list(status="finished", **w)["items"], [])
        self.assertEqual(self.ids(self.list(**w)["items"]), [mc["id"], ms["id"]])
        got = self.u.client.get("/v1/matches/%s" % mc["id"]).expect_json(200)
        self.assertEqual(got["status"], "cancelled")
        self.assertIsNone(got["score"])

    def test_bad_parameters(self):
        for q in ({"status": "bogus"}, {"limit": 0}, {"limit": 501}, {"limit": "abc"}, {"limit": -1},
                  {"cursor": "garbage!!"}, {"from": "yesterday"}, {"to": "2026-99-99T00:00:00Z"},
                  {"from": "2026-12-02T00:00:00Z", "to": "2026-12-01T23:59:59Z"}):
            self.u.client.get("/v1/matches", query=q).expect(400, "invalid_parameter", msg=str(q))
        self.u.client.get("/v1/matches", query={"limit": 500}).expect(200)
        same = {"from": "2026-12-02T00:00:00Z", "to": "2026-12-02T00:00:00Z"}
        self.assertEqual(self.list(**same)["items"], [], "from = to: an empty window, not an error")

    def test_parameter_twice_or_with_nul_400(self):
        """A parameter given twice, or holding a NUL byte (%00, which a C string
        would cut short: "cursor=%00" read as no cursor), is refused with a 400
        that names it, on every listing, instead of one of its values being
        taken silently. Parameters no route reads stay ignored."""
        c, co = self.u.client, self.co["id"]
        day = rfc3339(self.base)
        for path, name in (("/v1/matches?limit=1&limit=2", "limit"),
                           ("/v1/matches?status=scheduled&status=finished", "status"),
                           ("/v1/matches?from=%s&from=%s" % (day, day), "from"),
                           ("/v1/matches?to=%s%%00x" % day, "to"),
                           ("/v1/matches?cursor=%00c1", "cursor"),
                           ("/v1/me/bets?cursor=%00%01", "cursor"),
                           ("/v1/me/bets?status=open&status=open", "status"),
                           ("/v1/standings/users?company=%s&company=%s" % (co, co), "company"),
                           ("/v1/standings/teams?company=%s%%00" % co, "company"),
                           ("/v1/companies/%s/teams?limit=2&limit=2" % co, "limit")):
            r = c.get(path).expect(400, "invalid_parameter", msg=path)
            self.assertIn(name, r.json["error"]["message"], path)
        c.get("/v1/matches?limit=2&x=1&x=2&y=%00").expect(200)
        c.get("/v1/me/bets?cursor=").expect(200)


class TestOdds(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.co = new_company()
        cls.u, cls.v = new_users(cls.co, 2)

    def test_get_odds(self):
        m = new_match(odds=(1.85, 3.4, 4.75))
        r = self.u.client.get("/v1/matches/%s/odds" % m["id"])
        j = r.expect_json(200)
        self.assertEqual(j, {"match_id": m["id"], "home": 1.85, "draw": 3.4, "away": 4.75, "version": 1})
        self.u.client.get("/v1/matches/%s/odds" % NO_ID).expect(404, "not_found")
        api().get("/v1/matches/%s/odds" % m["id"]).expect(401, "unauthorized")

    def test_concurrent_puts_each_answered_with_its_own_change(self):
        """PUTs at once on both servers: each 200 carries its own odds and a
        version of its own (the update and the read back were two statements,
        so a PUT was answered with another's change)."""
        import concurrent.futures
        s = stack.get()
        token = admin().token
        for _ in range(3):
            m = new_match(odds=(2.0, 3.0, 4.0))
            homes = [round(1.1 + i / 10.0, 2) for i in range(8)]

            def put(i):
                c = Client(s.api_urls[i % len(s.api_urls)], token)
                return c.put("/v1/matches/%s/odds" % m["id"], {"home": homes[i], "draw": 3.0, "away": 4.0})
            with concurrent.futures.ThreadPoolExecutor(8) as ex:
                answers = list(ex.map(put, range(len(homes))))
            got = [r.expect_json(200) for r in answers]
            self.assertEqual([g["home"] for g in got], homes)
            self.assertEqual(sorted(g["version"] for g in got), list(range(2, 2 + len(homes))))
            last = max(got, key=lambda g: g["version"])
            time.sleep(1.2)  # every server's near-cache has seen it (docs/api.md)
            o = admin().get("/v1/matches/%s/odds" % m["id"]).expect_json(200)
            self.assertEqual((o["home"], o["version"]), (last["home"], last["version"]))

    def test_put_odds_versions_and_every_server_sees_it_within_1s(self):
        m = new_match(odds=(2.0, 3.0, 4.0))
        s = stack.get()
        servers = [Client(u, self.u.client.token) for u in s.api_urls]
        for c in servers:  # warm every cache with version 1
            for _ in range(3):
                self.assertEqual(c.get("/v1/matches/%s/odds" % m["id"]).expect_json(200)["version"], 1)
                c.get("/v1/matches/%s" % m["id"]).expect(200)
        r = admin().put("/v1/matches/%s/odds" % m["id"], {"home": 2.2, "draw": 3.1, "away": 3.65})
        j = r.expect_json(200)
        self.assertEqual(j, {"match_id": m["id"], "home": 2.2, "draw": 3.1, "away": 3.65, "version": 2})
        time.sleep(1.2)
        for c in servers + [self.u.client]:
            o = c.get("/v1/matches/%s/odds" % m["id"]).expect_json(200)
            self.assertEqual((o["version"], o["home"]), (2, 2.2), "%s shows old odds > 1 s after PUT" % c.base_url)
            g = c.get("/v1/matches/%s" % m["id"]).expect_json(200)
            self.assertEqual(g["odds"], {"home": 2.2, "draw": 3.1, "away": 3.65, "version": 2}, c.base_url)
        # a bet now locks the new odds
        b = place_bet(self.u, m, "away", 10)
        self.assertEqual(hundredths(b["odds"]), 365)
        j = admin().put("/v1/matches/%s/odds" % m["id"], {"home": 2.3, "draw": 3.1, "away": 3.5}).expect_json(200)
        self.assertEqual(j["version"], 3)

    def test_put_odds_errors(self):
        m = new_match()
        p = "/v1/matches/%s/odds" % m["id"]
        self.u.client.put(p, {"home": 2, "draw": 2, "away": 2}).expect(403, "forbidden")
        for bad in (1.0, 0.5, 3.333, "3", 1000.5):
            admin().put(p, {"home": bad, "draw": 2, "away": 2}).expect(422, "invalid_odds", msg=repr(bad))
        admin().put(p, {"home": 2, "draw": 2}).expect(400, "invalid_field")
        admin().put(p, {"home": 2, "draw": 2, "away": 2, "version": 9}).expect(400, "unknown_field")
        admin().put("/v1/matches/%s/odds" % NO_ID, {"home": 2, "draw": 2, "away": 2}).expect(404, "not_found")
        self.assertEqual(self.u.client.get(p).expect_json(200)["version"], 1, "failed PUTs change nothing")
        admin().post("/v1/matches/%s/result" % m["id"], {"cancelled": True}).expect(202)
        admin().put(p, {"home": 2, "draw": 2, "away": 2}).expect(409, "match_not_scheduled")


class TestResultValidation(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.co = new_company()
        cls.u = signup(cls.co)

    def test_result_errors(self):
        m = new_match(kickoff_in=2)
        p = "/v1/matches/%s/result" % m["id"]
        self.u.client.post(p, {"home_goals": 1, "away_goals": 0}).expect(403, "forbidden")
        admin().post(p, {"home_goals": 1, "away_goals": 0}).expect(422, "betting_open")
        wait_past_kickoff(m)
        for hg, ag in ((100, 0), (-1, 0), (0, 100), (0, -5)):
            admin().post(p, {"home_goals": hg, "away_goals": ag}).expect(422, "invalid_score", msg="%d:%d" % (hg, ag))
        admin().post(p, {"home_goals": 1}).expect(400, "invalid_field")
        admin().post(p, {"home_goals": 1, "away_goals": 0, "winner": "home"}).expect(400, "unknown_field")
        admin().post("/v1/matches/%s/result" % NO_ID, {"cancelled": True}).expect(404, "not_found")
        self.assertEqual(self.u.client.get("/v1/matches/%s" % m["id"]).expect_json(200)["status"], "scheduled")
        admin().get("/v1/matches/%s/settlement" % m["id"]).expect(404, "not_found")

    def test_settlement_before_result_404_and_admin_only(self):
        m = new_match()
        admin().get("/v1/matches/%s/settlement" % m["id"]).expect(404, "not_found")
        self.u.client.get("/v1/matches/%s/settlement" % m["id"]).expect(403, "forbidden")

    def test_cancel_before_kickoff(self):
        m = new_match(kickoff_in=3600)
        r = admin().post("/v1/matches/%s/result" % m["id"], {"cancelled": True})
        j = r.expect_json(202)
        self.assertEqual(j.get("match_id"), m["id"], r.describe())
        self.assertEqual(j.get("result"), "cancelled")
        self.assertIn(j.get("state"), ("running", "done"))


if __name__ == "__main__":
    unittest.main()
