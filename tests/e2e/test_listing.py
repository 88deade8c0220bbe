"""Bounded listings: the team list is paginated and cached (a new team shows at
once on every server), and a match list's window is at most 31 days."""

import random
import time
import unittest

import stack
from client import Client
from fixtures import admin, new_company, new_match, new_team, parallel, parse_time, rfc3339, signup, uniq

DAY = 86400
RANGE_DAYS = 31
TEAM_KEYS = {"id", "company_id", "name", "members"}


def teams_path(company):
    return "/v1/companies/%s/teams" % company["id"]


def all_pages(test, client, path, limit, query=None, max_pages=100):
    """Every item of a paginated list, following next_cursor; (items, pages)."""
    items, pages, cursor = [], 0, None
    while True:
        q = dict(query or {}, limit=limit, cursor=cursor)
        j = client.get(path, query=q).expect_json(200, msg="%s %s" % (path, q))
        pages += 1
        test.assertLessEqual(len(j["items"]), limit, "a page holds at most limit items")
        items += j["items"]
        cursor = j["next_cursor"]
        if cursor is None:
            return items, pages
        test.assertIsInstance(cursor, str)
        test.assertLess(pages, max_pages, "pagination does not end")


def db_queries(url, hosts):
    """Statements the API server at url sent to the given database hosts so far."""
    r = Client(url).get("/metrics", timeout=5).expect(200, msg="GET /metrics")
    total = 0
    for line in r.text.splitlines():
        if line.startswith("betcity_db_queries_total{") and any('host="%s"' % h in line for h in hosts):
            total += float(line.rsplit(" ", 1)[1])
    return total


def cache_trouble(url):
    """(memcached errors the API server at url has met so far, its servers
    whose breaker is open now), over all its memcached servers."""
    r = Client(url).get("/metrics", timeout=5).expect(200, msg="GET /metrics")
    errors = down = 0
    for line in r.text.splitlines():
        if line.startswith("betcity_cache_ops_total{") and 'op="errors"' in line:
            errors += float(line.rsplit(" ", 1)[1])
        elif line.startswith("betcity_cache_server_up{") and line.rsplit(" ", 1)[1] == "0":
            down += 1
    return errors, down


class TestTeamPages(unittest.TestCase):
    """GET /v1/companies/{id}/teams a page at a time, with member counts."""

    NTEAMS = 7

    @classmethod
    def setUpClass(cls):
        cls.co = new_company()
        teams = [new_team(cls.co) for _ in range(cls.NTEAMS)]
        # 0, 1 or 2 members per team, signed up into it
        cls.members = {t["id"]: i % 3 for i, t in enumerate(teams)}
        joins = [tid for tid, n in cls.members.items() for _ in range(n)]
        parallel(lambda tid: signup(cls.co, team_id=tid), joins, workers=8)
        cls.member = signup(cls.co)  # in no team

    def test_all_teams_across_pages_once_with_their_members(self):
        for limit in (1, 2, 3, self.NTEAMS, 50):
            items, pages = all_pages(self, self.member.client, teams_path(self.co), limit)
            ids = [t["id"] for t in items]
            self.assertEqual(len(ids), len(set(ids)), "limit %d: a team on two pages: %s" % (limit, ids))
            self.assertEqual(ids, sorted(ids, key=int), "limit %d: ordered by id" % limit)
            self.assertEqual(set(ids), set(self.members), "limit %d: every team of the company" % limit)
            self.assertEqual(pages, max(1, -(-self.NTEAMS // limit)), "limit %d: pages" % limit)
            for t in items:
                self.assertEqual(set(t), TEAM_KEYS, t)
                self.assertEqual(t["company_id"], self.co["id"])
                self.assertEqual(t["members"], self.members[t["id"]], "limit %d: members of %s" % (limit, t))

    def test_platform_admin_pages_too(self):
        items, _ = all_pages(self, admin(), teams_path(self.co), 4)
        self.assertEqual({t["id"]: t["members"] for t in items}, self.members)

    def test_bad_parameters(self):
        c = self.member.client
        for q in ({"limit": 0}, {"limit": 501}, {"limit": "x"}, {"cursor": "garbage!!"}, {"cursor": "c"},
                  {"cursor": "c01"}, {"cursor": "c8000000000000000"}):
            c.get(teams_path(self.co), query=q).expect(400, "invalid_parameter", msg=str(q))

    def test_a_repeated_page_comes_from_the_cache(self):
        """A page read again sends no statement to the shards' hosts (no scatter).
        A memcached error (a timeout on a loaded machine) opens the cache's
        breaker for 1 s, in which reads go to the database as they should: a
        round that met one, or an open breaker, is measured again, up to
        three times."""
        s = stack.get()
        url = s.api_urls[0]
        c = self.member.client.at(url)
        path = teams_path(self.co)
        first = c.get(path, query={"limit": 3}).expect_json(200)
        shard_hosts = ["db2", "db3"]  # not the global host: only a scatter reaches them
        rounds = []
        for _ in range(3):
            before, (errors, down) = db_queries(url, shard_hosts), cache_trouble(url)
            self.assertGreater(before, 0, "%s/metrics counts no statement to %s" % (url, shard_hosts))
            for _ in range(20):
                self.assertEqual(c.get(path, query={"limit": 3}).expect_json(200), first)
            errors_after, down_after = cache_trouble(url)
            rounds.append((db_queries(url, shard_hosts) - before, errors_after - errors, down + down_after))
            if rounds[-1][1:] == (0, 0):
                break
            time.sleep(1.2)  # the breaker closes again
        sent = rounds[-1][0]
        self.assertEqual(rounds[-1][1:], (0, 0),
                         "memcached errors or an open breaker in every round (statements, errors, "
                         "servers down): %s" % rounds)
        # Uncached, each read is one statement on each of the two hosts (40).
        self.assertLessEqual(sent, 10, "20 reads of a cached page sent %d statements to %s" % (sent, shard_hosts))


class TestTeamCacheInvalidation(unittest.TestCase):
    """A new team is in the list at once, on every server, cached pages or not."""

    def test_new_team_shows_at_once_on_every_server(self):
        s = stack.get()
        co = new_company()
        new_team(co)
        a = admin()
        urls = [s.api_url] + s.api_urls
        path = teams_path(co)
        known = set()
        for rnd in range(3):
            # warm every page on every server (memcached, and near copies if any)
            for u in urls:
                all_pages(self, a.at(u), path, 2)
            creator = urls[rnd % len(urls)]
            t = a.at(creator).post(path, {"name": uniq("team")}).expect_json(201)
            known.add(t["id"])
            for u in urls:
                items, _ = all_pages(self, a.at(u), path, 2)
                ids = [x["id"] for x in items]
                self.assertEqual(len(ids), len(set(ids)), "%s: a team twice: %s" % (u, ids))
                self.assertTrue(known <= set(ids),
                                "round %d: team %s made on %s is missing on %s: %s" % (rnd, t["id"], creator, u, ids))
                self.assertEqual(len(ids), 1 + len(known), "%s: %s" % (u, ids))
                self.assertEqual([x["members"] for x in items if x["id"] == t["id"]], [0])


class TestMatchWindow(unittest.TestCase):
    """GET /v1/matches: from..to at most 31 days; missing bounds are filled in.

    Other tests (and earlier runs on the same stack) may have matches in these
    windows too: the checks are about this class's two matches and about every
    listed kickoff lying in the window."""

    @classmethod
    def setUpClass(cls):
        cls.u = signup(new_company())
        # further ahead than any other test's matches (test_matches: 30..300 days)
        cls.base = int(time.time()) + DAY * random.randint(400, 700) + random.randint(0, DAY)
        cls.m0 = new_match(kickoff=rfc3339(cls.base))
        cls.m1 = new_match(kickoff=rfc3339(cls.base + (RANGE_DAYS + 1) * DAY))

    def list(self, **q):
        return self.u.client.get("/v1/matches", query=q)

    def window(self, lo, hi, **q):
        """The ids of the listed matches, each checked to lie in [lo, hi)."""
        items, _ = all_pages(self, self.u.client, "/v1/matches", 500, q)
        for m in items:
            self.assertTrue(lo <= parse_time(m["kickoff"]) < hi, "%s outside [%s, %s) for %s"
                            % (m["kickoff"], rfc3339(lo), rfc3339(hi), q))
        return {m["id"] for m in items}

    def mine(self, ids):
        return [m["id"] for m in (self.m0, self.m1) if m["id"] in ids]

    def test_longer_than_31_days_is_refused(self):
        for secs in (RANGE_DAYS * DAY + 1, RANGE_DAYS * DAY + 3600, 365 * DAY):
            r = self.list(**{"from": rfc3339(self.base), "to": rfc3339(self.base + secs)})
            r.expect(400, "range_too_long", msg="%d s" % secs)
            self.assertIn("31 days", r.error_message or "", r.describe())
        self.list(**{"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}).expect(400, "range_too_long")
        self.list(status="scheduled", limit=5, **{"from": "2026-01-01T00:00:00Z",
                                                  "to": "2026-03-01T00:00:00.000Z"}).expect(400, "range_too_long")

    def test_exactly_31_days_is_served(self):
        lo, hi = self.base, self.base + RANGE_DAYS * DAY
        self.assertEqual(self.mine(self.window(lo, hi, **{"from": rfc3339(lo), "to": rfc3339(hi)})),
                         [self.m0["id"]])
        # to is exclusive: a window that ends at m1's kickoff does not hold it
        lo, hi = self.base + DAY, self.base + (RANGE_DAYS + 1) * DAY
        self.assertEqual(self.mine(self.window(lo, hi, **{"from": rfc3339(lo), "to": rfc3339(hi)})), [])

    def test_only_from_means_31_days_after_it(self):
        for lo, want in ((self.base, [self.m0["id"]]), (self.base + 2 * DAY, [self.m1["id"]])):
            got = self.window(lo, lo + RANGE_DAYS * DAY, **{"from": rfc3339(lo)})
            self.assertEqual(self.mine(got), want, "from %s" % rfc3339(lo))

    def test_only_to_means_31_days_before_it(self):
        for hi, want in ((self.base + (RANGE_DAYS + 1) * DAY + 1, [self.m1["id"]]), (self.base + 1, [self.m0["id"]])):
            got = self.window(hi - RANGE_DAYS * DAY, hi, to=rfc3339(hi))
            self.assertEqual(self.mine(got), want, "to %s" % rfc3339(hi))

    def test_no_bounds_is_today_and_the_next_30_days(self):
        soon = new_match(kickoff_in=3600)
        t0 = time.time()
        start = t0 - t0 % DAY
        # the window moves on by a day if the run crosses midnight (UTC)
        ids = self.window(start, start + (RANGE_DAYS + 1) * DAY, status="scheduled")
        self.assertIn(soon["id"], ids)
        self.assertEqual(self.mine(ids), [], "matches 400+ days ahead are outside the default window")


if __name__ == "__main__":
    unittest.main()
