"""The memcached read-through cache (issue "Cache"), seen from outside.

1. Odds are fresh on every API server: after a PUT through HAProxy returned,
   GET odds on api1 and api2 directly shows the new odds within 1.0 s, even
   with the near-cache warm, also when the match itself was read just after
   its odds (worst delay printed).
2. Placing a bet reads the match from the cache: the global host's statement
   counter (GET /metrics) barely moves over 50 bets on one API server.
3. 500 concurrent readers of a cold standings key cost one database read.
4.-6. memcached killed under load, stopped, restarted: test_cache_faults.py,
   which imports its helpers from here.

Every test prints its figures (lines starting with "[cache]"). Tests 2 and 3
need BC_STACK_DIR (database access).
The database counters include the background statements of each API server on
the global host (HAProxy's /readyz check every second, the shard map poll):
the tests measure that drift over an idle interval and subtract it.
"""

import http.client
import math
import os
import random
import re
import sys
import socket
import threading
import time
import unittest

import stack
from client import Client, RequestFailed, Response
from fixtures import (admin, hundredths, new_company, new_match, new_users, uniq, wait_past_kickoff,
                      wait_settled)

NEAR_MS = 900  # cache/cache.h CACHE_NEAR_MS
BREAKER_S = 1.0  # cache/cache.c BREAKER_MS
CACHE_TIMEOUT_MS = 100  # api/main.c: cache_create(&conf, 100, …)


def log(msg):
    sys.stdout.write("    [cache] %s\n" % msg)
    sys.stdout.flush()


# ---------------------------------------------------------------- metrics

_SAMPLE_RE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{([^}]*)\})?\s+(\S+)\s*$")
_LABEL_RE = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


class Metrics:
    """The samples of one GET /metrics answer."""

    def __init__(self, text):
        self.samples = []
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            m = _SAMPLE_RE.match(line)
            if m:
                labels = dict(_LABEL_RE.findall(m.group(2) or ""))
                self.samples.append((m.group(1), labels, float(m.group(3))))

    def sum(self, name, **labels):
        """The sum of the samples of name whose labels include the given ones (0 if none)."""
        return sum(v for n, lab, v in self.samples
                   if n == name and all(lab.get(k) == w for k, w in labels.items()))

    def has(self, name):
        return any(n == name for n, _, _ in self.samples)


def metrics(url):
    r = Client(url).get("/metrics", timeout=5)
    r.expect(200, msg="GET /metrics")
    return Metrics(r.text)


def db_queries(url, host):
    m = metrics(url)
    if not m.has("betcity_db_queries_total"):
        raise AssertionError("%s/metrics has no betcity_db_queries_total" % url)
    return m.sum("betcity_db_queries_total", host=host)


def idle_drift(url, host, seconds):
    """Statements per second that the server sends to host with no request of ours."""
    a, t0 = db_queries(url, host), time.time()
    time.sleep(seconds)
    b, t1 = db_queries(url, host), time.time()
    return (b - a) / (t1 - t0)


def global_host(s):
    """cluster.global_host of cluster.yaml (db1 in the devstack)."""
    try:
        with open(s.cluster) as f:
            for line in f:
                m = re.match(r"\s*global_host:\s*[\"']?([A-Za-z0-9_.-]+)", line)
                if m:
                    return m.group(1)
    except (OSError, TypeError):
        pass
    return "db1"


def memcached_names(s):
    """{"mc1": "127.0.0.1:PORT", …}: the server label of /metrics for each devstack memcached."""
    ports = stack._read_env_file(os.path.join(s.dir, "ports.env"))
    return {k[5:]: "127.0.0.1:%s" % v for k, v in sorted(ports.items()) if re.fullmatch(r"PORT_mc\d+", k)}


def cache_ops(m, op, server=None):
    if server is None:
        return m.sum("betcity_cache_ops_total", op=op)
    return m.sum("betcity_cache_ops_total", op=op, server=server)


def percentile(values, p):
    """Nearest-rank percentile."""
    v = sorted(values)
    return v[max(0, math.ceil(p / 100.0 * len(v)) - 1)]


def odds_path(match):
    return "/v1/matches/%s/odds" % match["id"]


def require_two_servers(tc, s):
    if len(s.api_urls) < 2:
        tc.skipTest("needs two API servers (BC_API_URLS has %d)" % len(s.api_urls))


def require_cache(tc, url):
    if not metrics(url).has("betcity_cache_ops_total"):
        tc.skipTest("%s runs without memcached (no betcity_cache_ops_total)" % url)


class CacheTest(unittest.TestCase):
    maxDiff = None


# ---------------------------------------------------------------- 1. odds freshness

class TestOddsFreshness(CacheTest):
    """Rounds of: warm every cache, PUT odds, poll GET odds on api1, api2 and
    HAProxy. Two kinds of round:
      steady:    readers of the odds on all three run before and after the PUT
                 (through HAProxy), which comes at a random moment (the near
                 copies have any age);
      crossed:   no read for 1 s, then on api1 and api2 GET odds and, 50 ms
                 later, GET match (clients read both); the PUT goes to one API
                 server directly and the other one is read first: it alone,
                 until LIMIT_S, then all three.
    The new odds (and version) must show within LIMIT_S of the PUT returning,
    and no read started later may show the old ones."""

    ROUNDS = ("steady", "crossed") * 3
    LIMIT_S = 1.0
    TAIL_S = 1.4  # reads go on this long after the PUT returned

    def test_new_odds_on_both_servers_within_1s(self):
        s = stack.get()
        s.require_api()
        require_two_servers(self, s)
        adm = admin()
        m = new_match(odds=(2.50, 3.20, 2.80))
        targets = [("api1", s.api_urls[0]), ("api2", s.api_urls[1]), ("haproxy", s.api_url)]
        version = m["odds"]["version"]
        rng = random.Random()
        worst = 0.0
        worst_stale = 0.0
        failed = []
        for rnd, mode in enumerate(self.ROUNDS):
            new = (round(1.50 + rnd * 0.17 + rng.randrange(50) / 100.0, 2), round(3.30 + rnd / 100.0, 2), 4.10)
            reads = {name: [] for name, _ in targets}
            stop = threading.Event()
            errors = []

            def reader(name, url):
                c = adm.at(url)
                while not stop.is_set():
                    t0 = time.time()
                    try:
                        r = c.get(odds_path(m), timeout=5)
                    except RequestFailed as e:
                        errors.append("%s: %s" % (name, e))
                        time.sleep(0.05)
                        continue
                    t1 = time.time()
                    if r.status != 200:
                        errors.append("%s: %s" % (name, r.describe(300)))
                        time.sleep(0.05)
                        continue
                    j = r.json
                    reads[name].append((t0, t1, j["version"],
                                        (hundredths(j["home"]), hundredths(j["draw"]), hundredths(j["away"]))))
                    time.sleep(0.005)

            threads = {name: threading.Thread(target=reader, args=(name, url), daemon=True) for name, url in targets}
            # crossed rounds: the PUT on one server, the other one read first
            put_on = s.api_urls[1] if rnd % 4 == 1 else s.api_urls[0]
            first = "api1" if put_on == s.api_urls[1] else "api2"
            try:
                if mode == "steady":
                    for t in threads.values():
                        t.start()
                    # warm every cache (memcached and each server's near-cache); a
                    # random moment, so that the PUT meets near copies of any age
                    time.sleep(0.6 + rng.random() * NEAR_MS / 1000.0)
                    via = adm
                else:
                    time.sleep(NEAR_MS / 1000.0 + 0.1)  # the near copies expire
                    for _, url in targets[:2]:
                        adm.at(url).get(odds_path(m)).expect(200, msg="warm the odds")
                        adm.at(url).get(odds_path(m)).expect(200, msg="warm the odds")
                    time.sleep(0.05)
                    for _, url in targets[:2]:
                        adm.at(url).get("/v1/matches/%s" % m["id"]).expect(200, msg="warm the match")
                        adm.at(url).get("/v1/matches/%s" % m["id"]).expect(200, msg="warm the match")
                    via = adm.at(put_on)
                t_sent = time.time()
                r = via.put(odds_path(m), {"home": new[0], "draw": new[1], "away": new[2]})
                t_put = time.time()
                if mode != "steady":
                    threads[first].start()
                j = r.expect_json(200, msg="PUT odds on %s" % via.base_url)
                self.assertEqual(j["version"], version + 1, "PUT odds: version %s" % j)
                version = j["version"]
                want = tuple(hundredths(x) for x in new)
                self.assertEqual((hundredths(j["home"]), hundredths(j["draw"]), hundredths(j["away"])), want, j)
                if mode != "steady":
                    time.sleep(max(0.0, t_put + self.LIMIT_S - time.time()))
                    for t in threads.values():
                        if not t.is_alive():
                            t.start()
                time.sleep(max(0.0, t_put + self.TAIL_S - time.time()))
            finally:
                stop.set()
                for t in threads.values():
                    if t.is_alive():
                        t.join(10)
            self.assertEqual(errors, [], "reads that failed in round %d" % rnd)
            per, problems = [], []
            where = "round %d (%s%s)" % (rnd + 1, mode, "" if mode == "steady" else
                                         ", PUT on " + ("api1" if first == "api2" else "api2"))
            for name, _ in targets:
                rs = reads[name]
                if mode == "steady" and not any(t0 < t_sent for t0, _, _, _ in rs):
                    problems.append("%s: no read before the PUT" % name)
                fresh = [(v, o) == (version, want) for _, _, v, o in rs]
                bad = [x for x, f in zip(rs, fresh) if not f and x[2] >= version]
                if bad:
                    problems.append("%s showed odds of version %d that are not the PUT's: %s"
                                    % (name, version, bad[:3]))
                # the last read started after the PUT returned that still showed the old odds
                stale = [t0 - t_put for (t0, _, _, _), f in zip(rs, fresh) if not f and t0 >= t_put]
                worst_stale = max([worst_stale] + stale)
                late = [(round(t0 - t_put, 3), v) for (t0, _, v, o), f in zip(rs, fresh)
                        if not f and t0 >= t_put + self.LIMIT_S]
                if late:
                    problems.append("%s: %d of %d reads started %.3f-%.3f s after the PUT returned showed old "
                                    "odds (versions %s, new: %d)"
                                    % (name, len(late), len(rs), late[0][0], late[-1][0],
                                       sorted({v for _, v in late}), version))
                # the first read that showed the new odds, after which no read showed the old
                last_old = max([i for i, f in enumerate(fresh) if not f], default=-1)
                if last_old + 1 >= len(rs):
                    per.append("%s never (%d reads)" % (name, len(rs)))
                    problems.append("%s never showed the new odds within %.1f s of the PUT" % (name, self.TAIL_S))
                    continue
                seen = max(0.0, rs[last_old + 1][1] - t_put)
                if mode == "steady" or name == first:  # read from the PUT on
                    worst = max(worst, seen)
                    per.append("%s %.0f ms (%d reads)" % (name, seen * 1000, len(rs)))
                    if seen > self.LIMIT_S:
                        problems.append("%s showed the new odds %.3f s after the PUT returned" % (name, seen))
                else:
                    per.append("%s read from %.1f s: fresh (%d reads)" % (name, self.LIMIT_S, len(rs)))
            log("%s: PUT took %.1f ms; new odds seen after: %s" % (where, (t_put - t_sent) * 1000, ", ".join(per)))
            failed += ["%s: %s" % (where, p) for p in problems]
        log("odds freshness: worst delay %.0f ms after the PUT returned (limit %.0f ms); last stale read started "
            "%.0f ms after it; %d rounds, %d with stale reads"
            % (worst * 1000, self.LIMIT_S * 1000, worst_stale * 1000, len(self.ROUNDS),
               len({f.split(":")[0] for f in failed})))
        if failed:
            self.fail("odds not fresh within %.1f s of the PUT returning:\n  %s" % (self.LIMIT_S, "\n  ".join(failed)))


# ---------------------------------------------------------------- 2. bets use the cached match

class TestBetUsesCachedMatch(CacheTest):
    BETS = 50

    def test_bets_do_not_read_the_match_from_the_global_host(self):
        s = stack.get()
        s.require_dir()
        url = s.api_urls[0]
        require_cache(self, url)
        gh = global_host(s)
        co = new_company()
        users = [u for u in new_users(co, 8) if s.host_of_id(u.id) != gh]
        self.assertTrue(users, "no user of 8 has his shard off the global host %s" % gh)
        u = users[0]
        shard_host = s.host_of_id(u.id)
        m = new_match(odds=(1.91, 3.40, 4.20))
        c = u.client.at(url)
        for _ in range(3):
            c.get("/v1/matches/%s" % m["id"]).expect(200, msg="warm the match")
        drift = idle_drift(url, gh, 2.0)
        before = metrics(url)
        t0 = time.time()
        for i in range(self.BETS):
            r = c.post("/v1/bets", {"match_id": m["id"], "pick": "away", "stake": 1},
                       headers={"Idempotency-Key": uniq("k")})
            j = r.expect_json(201, msg="bet %d" % i)
            self.assertEqual(hundredths(j["odds"]), 420, j)
        t1 = time.time()
        after = metrics(url)
        d_global = (after.sum("betcity_db_queries_total", host=gh)
                    - before.sum("betcity_db_queries_total", host=gh))
        d_shard = (after.sum("betcity_db_queries_total", host=shard_host)
                   - before.sum("betcity_db_queries_total", host=shard_host))
        expected_drift = drift * (t1 - t0)
        per_bet = (d_global - expected_drift) / self.BETS
        log("bets: %d bets on %s in %.2f s (user's shard %d on %s): global host %s +%d statements "
            "(idle drift %.2f/s, so %.1f expected without bets) = %.3f per bet; shard host %s +%d = %.1f per bet"
            % (self.BETS, url, t1 - t0, stack.shard_of(u.id), shard_host, gh, d_global, drift, expected_drift,
               per_bet, shard_host, d_shard, d_shard / self.BETS))
        # the counter counts this server's statements: a bet sends several to its shard
        self.assertGreaterEqual(d_shard, self.BETS, "shard host %s: +%d statements for %d bets"
                                % (shard_host, d_shard, self.BETS))
        self.assertLess(per_bet, 0.2, "global host %s: %.3f statements per bet (+%d for %d bets, %.1f of them "
                        "background): the match is not read from the cache" % (gh, per_bet, d_global, self.BETS,
                                                                               expected_drift))


# ---------------------------------------------------------------- 3. a herd on a cold key

class TestColdStandingsHerd(CacheTest):
    READERS = 500

    def test_500_readers_of_cold_standings_one_query(self):
        s = stack.get()
        s.require_dir()
        require_two_servers(self, s)
        url = s.api_urls[0]
        require_cache(self, url)
        gh = global_host(s)
        gen_sql = "SELECT COALESCE(MAX(generation), 0) FROM `%s`.standings" % s.global_schema()
        gen0 = int(s.sql_global(gen_sql)[0][0])
        m = new_match(kickoff_in=1.5)
        wait_past_kickoff(m)
        # the result through api2: its settlement and recomputation do not touch api1's counters
        via = admin().at(s.api_urls[1])
        via.post("/v1/matches/%s/result" % m["id"], {"home_goals": 0, "away_goals": 0}).expect(202, msg="result")
        wait_settled(m, via=via)
        deadline = time.time() + 30
        while True:
            gen = int(s.sql_global(gen_sql)[0][0])
            if gen > gen0:
                break
            if time.time() > deadline:
                raise AssertionError("standings not recomputed 30 s after the settlement (generation %d)" % gen)
            time.sleep(0.1)
        # The bump follows the commit; copies of the generation in near-caches
        # expire meanwhile. This wait is also the idle interval of the drift.
        drift = idle_drift(url, gh, 3.0)
        token = admin().token
        n = self.READERS
        results = [None] * n

        c = Client(url, token)
        path = c.prefix + "/v1/standings/companies"
        raw = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\nAuthorization: Bearer %s\r\nConnection: close\r\n\r\n"
               % (path, c.host, c.port, token)).encode()
        socks = [None] * n

        def reader(i):
            t0 = time.time()
            s = socks[i]
            try:
                if isinstance(s, str):
                    results[i] = (None, s, 0, None)
                    return
                resp = http.client.HTTPResponse(s, method="GET")
                resp.begin()
                body = resp.read()
                r = Response("GET", url + "/v1/standings/companies", resp.status, resp.reason, resp.headers, body)
                results[i] = (r.status, r.body, time.time() - t0, r)
            except (OSError, http.client.HTTPException) as e:
                results[i] = (None, "%s: %s" % (type(e).__name__, e), time.time() - t0, None)
            finally:
                if not isinstance(s, str):
                    s.close()

        before = metrics(url)
        t0 = time.time()
        # One thread connects and sends all 500 requests, each right after its
        # connect: they are all in flight together, and none waits for a
        # Python thread's turn between its connect and its request (the
        # server closes a connection whose headers have not come 800 ms after
        # its connect, header_timeout_ms). Then a thread per reader answers.
        for i in range(n):
            try:
                s = socket.create_connection((c.host, c.port), timeout=20)
                s.sendall(raw)
                socks[i] = s
            except OSError as e:
                socks[i] = "connect: %s: %s" % (type(e).__name__, e)
        old = threading.stack_size()
        threading.stack_size(512 * 1024)
        try:
            threads = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(n)]
            for t in threads:
                t.start()
        finally:
            threading.stack_size(old)
        for t in threads:
            t.join(60)
        t1 = time.time()
        after = metrics(url)
        q = (after.sum("betcity_db_queries_total", host=gh) - before.sum("betcity_db_queries_total", host=gh))
        expected_drift = drift * (t1 - t0)
        ops = {op: cache_ops(after, op) - cache_ops(before, op)
               for op in ("hits", "misses", "fills", "lease_waits", "lease_timeouts", "fill_races", "errors")}
        near = (after.sum("betcity_cache_near_hits_total") - before.sum("betcity_cache_near_hits_total"))
        bad = [x for x in results if x is None or x[0] != 200]
        lat = sorted(x[2] for x in results if x is not None)
        log("herd: %d concurrent GET /v1/standings/companies on %s in %.2f s (p50 %.0f ms, max %.0f ms): global "
            "host %s +%d statements, %.1f expected from the idle drift (%.2f/s) = %.1f for the readers; cache: %s, "
            "near hits %d" % (n, url, t1 - t0, percentile(lat, 50) * 1000 if lat else 0, lat[-1] * 1000 if lat else 0,
                              gh, q, expected_drift, drift, q - expected_drift,
                              ", ".join("%s %d" % kv for kv in ops.items()), near))
        self.assertEqual(len(bad), 0, "%d of %d readers failed, e.g. %s" % (
            len(bad), n, [(x[0], x[3].describe(300) if x[3] else x[1]) if x else "no result" for x in bad[:3]]))
        bodies = {x[1] for x in results}
        self.assertEqual(len(bodies), 1, "%d different bodies among %d readers" % (len(bodies), n))
        body = results[0][3].json
        self.assertEqual(body["generation"], gen, "the readers got generation %s, the database has %d"
                         % (body["generation"], gen))
        # the fill is one statement; a little slack for the rounding of the drift
        self.assertLessEqual(q - expected_drift, 4.0,
                             "%d readers of a cold key sent %d statements to %s (%.1f background expected): "
                             "more than the one fill" % (n, q, gh, expected_drift))


if __name__ == "__main__":
    unittest.main()
