"""The memcached read-through cache (issue "Cache"), seen from outside.

1. Odds are fresh on every API server: after a PUT through HAProxy returned,
   GET odds on api1 and api2 directly shows the new odds within 1.0 s, even
   with the near-cache warm, also when the match itself was read just after
   its odds (worst delay printed).
2. Placing a bet reads the match from the cache: the global host's statement
   counter (GET /metrics) barely moves over 50 bets on one API server.
3. 500 concurrent readers of a cold standings key cost one database read.
4. Killing one, then both memcached servers under load through HAProxy fails
   no request; after restart-host both, cache hits come back without
   restarting the API servers.
5. A stopped (SIGSTOP) memcached costs no timeout per request (breaker).
6. After restart-host of a memcached, the cache is back to normal within a
   few seconds (no more errors on it, its hit rate as before).

Every test prints its figures (lines starting with "[cache]"). Tests 2 to 6
need BC_STACK_DIR (database access, tools/devstack pid/restart-host).
The database counters include the background statements of each API server on
the global host (HAProxy's /readyz check every second, the shard map poll):
the tests measure that drift over an idle interval and subtract it.
"""

import http.client
import math
import os
import random
import re
import signal
import sys
import socket
import threading
import time
import unittest

import stack
from client import Client, RequestFailed, Response
from fixtures import (admin, hundredths, new_company, new_match, new_users, parallel, uniq, wait_past_kickoff,
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


# ---------------------------------------------------------------- 4. memcached killed under load

class LoadRunner:
    """Threads sending GET odds, GET match, GET standings and POST bets (with an
    Idempotency-Key, sometimes replayed) through one URL until stop()."""

    def __init__(self, url, users, matches, company, threads=8, pause=0.02):
        self.url = url
        self.users = users
        self.matches = matches
        self.company = company
        self.nthreads = threads
        self.pause = pause
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.counts = {}
        self.failures = []  # (time, op, what)
        self.t0 = None

    def _count(self, op, status):
        with self.lock:
            self.counts[(op, status)] = self.counts.get((op, status), 0) + 1

    def _fail(self, op, what):
        with self.lock:
            self.failures.append((round(time.time() - self.t0, 3), op, what))

    def _one(self, rng, last):
        u = rng.choice(self.users)
        c = u.client.at(self.url)
        m = rng.choice(self.matches)
        x = rng.random()
        if x < 0.35:
            op, r = "odds", c.get(odds_path(m))
            ok = r.status == 200
        elif x < 0.55:
            op, r = "match", c.get("/v1/matches/%s" % m["id"])
            ok = r.status == 200
        elif x < 0.70:
            op = "standings"
            if rng.random() < 0.5:
                r = c.get("/v1/standings/companies")
            else:
                r = c.get("/v1/standings/users", query={"company": self.company["id"]})
            ok = r.status == 200
        else:
            if last.get(u.id) and rng.random() < 0.2:
                op = "bet_replay"
                key, body = last[u.id]
                r = c.post("/v1/bets", body, headers={"Idempotency-Key": key})
                ok = r.status == 200
            else:
                op = "bet"
                key = uniq("k")
                body = {"match_id": m["id"], "pick": rng.choice(("home", "draw", "away")), "stake": 1}
                r = c.post("/v1/bets", body, headers={"Idempotency-Key": key})
                ok = r.status == 201 or (r.status == 422 and r.error_code == "insufficient_balance")
                if r.status == 201:
                    last[u.id] = (key, body)
        self._count(op, r.status)
        if not ok:
            self._fail(op, r.describe(300))

    def _run(self):
        rng = random.Random()
        last = {}
        while not self.stopping.is_set():
            try:
                self._one(rng, last)
            except RequestFailed as e:
                self._count("transport", "error")
                self._fail("transport", str(e))
            except Exception as e:  # a bug of the test: count it, do not hide it
                self._count("exception", type(e).__name__)
                self._fail("exception", repr(e))
            time.sleep(self.pause)

    def start(self):
        self.t0 = time.time()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(self.nthreads)]
        for t in self.threads:
            t.start()

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(30)

    def total(self):
        return sum(self.counts.values())


def pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def proc_state(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def devstack_pid(s, name):
    p = s.devstack_cmd("pid", name)
    if p.returncode != 0 or not p.stdout.strip().isdigit():
        return None
    return int(p.stdout.strip())


def ensure_up(s, name):
    """Resumes a stopped server and restarts a dead one (tools/devstack restart-host)."""
    pid = devstack_pid(s, name)
    if pid is not None and proc_state(pid) in ("T", "t"):
        os.kill(pid, signal.SIGCONT)
        return
    if pid is None or not pid_alive(pid):
        p = s.devstack_cmd("restart-host", name, timeout=120)
        if p.returncode != 0:
            log("restart-host %s failed: %s" % (name, (p.stdout + p.stderr)[-1000:]))


def hit_summary(a, b):
    """Memcached hits, misses, near hits, errors and hit rate between two lists of per-server metrics."""
    def tot(ms, f):
        return sum(f(m) for m in ms)
    hits = tot(b, lambda m: cache_ops(m, "hits")) - tot(a, lambda m: cache_ops(m, "hits"))
    misses = tot(b, lambda m: cache_ops(m, "misses")) - tot(a, lambda m: cache_ops(m, "misses"))
    errors = tot(b, lambda m: cache_ops(m, "errors")) - tot(a, lambda m: cache_ops(m, "errors"))
    near = (tot(b, lambda m: m.sum("betcity_cache_near_hits_total"))
            - tot(a, lambda m: m.sum("betcity_cache_near_hits_total")))
    rate = hits / (hits + misses) if hits + misses else 0.0
    return "memcached hits %d, misses %d (hit rate %.0f%%), errors %d, near hits %d" % (
        hits, misses, rate * 100, errors, near)


class TestMemcachedKilledUnderLoad(CacheTest):
    """Load through HAProxy; kill -9 mc1 at 3 s, mc2 at 6 s; no request may fail.
    Then restart-host both: every API server must hit each memcached again
    (within RESUME_S: how fast is TestMemcachedRestarted's business), with the
    same API processes."""

    LOAD_S = 12.0
    KILL = (("mc1", 3.0), ("mc2", 6.0))
    RESUME_S = 20.0

    def test_kill_one_then_both_memcached_no_failed_request(self):
        s = stack.get()
        s.require_dir()
        require_two_servers(self, s)
        require_cache(self, s.api_urls[0])
        names = memcached_names(s)
        if sorted(names) != ["mc1", "mc2"]:
            self.skipTest("needs the devstack's mc1 and mc2 (ports.env has %s)" % sorted(names))
        mc_pid = {n: devstack_pid(s, n) for n in names}
        api_pid = {n: devstack_pid(s, n) for n in ("api1", "api2")}
        if None in mc_pid.values() or None in api_pid.values():
            self.skipTest("tools/devstack pid: %s %s" % (mc_pid, api_pid))
        co = new_company()
        users = new_users(co, 16)
        matches = parallel(lambda i: new_match(odds=(2.05, 3.10, 3.60)), range(20), workers=8)
        by_url = {u: admin().at(u) for u in s.api_urls}
        for c in by_url.values():
            for mt in matches:
                c.get(odds_path(mt)).expect(200, msg="warm")
        snap = lambda: [metrics(u) for u in s.api_urls]  # noqa: E731
        killed = []
        try:
            load = LoadRunner(s.api_url, users, matches, co)
            phases = [("both up", snap())]
            load.start()
            try:
                for name, at in self.KILL:
                    time.sleep(max(0.0, load.t0 + at - time.time()))
                    phases.append(("%s killed" % name, snap()))
                    os.kill(mc_pid[name], signal.SIGKILL)
                    killed.append(name)
                    log("kill -9 %s (pid %d) at %.2f s" % (name, mc_pid[name], time.time() - load.t0))
                time.sleep(max(0.0, load.t0 + self.LOAD_S - time.time()))
            finally:
                load.stop()
            took = time.time() - load.t0
            phases.append(("end", snap()))
            for name in killed:
                self.assertFalse(pid_alive(mc_pid[name]), "%s (pid %d) survived kill -9" % (name, mc_pid[name]))
            for (label, a), (_, b) in zip(phases, phases[1:]):
                log("load, %s: %s" % (label, hit_summary(a, b)))
            counts = ", ".join("%s %s: %d" % (op, st, n) for (op, st), n in sorted(load.counts.items(), key=str))
            log("load: %d requests in %.1f s through HAProxy (%.0f/s): %s; failures %d"
                % (load.total(), took, load.total() / took, counts, len(load.failures)))
            self.assertEqual(load.failures[:20], [], "%d failed requests (seconds into the load, op, what)"
                             % len(load.failures))
            for op in ("odds", "match", "standings", "bet"):
                self.assertGreater(sum(n for (o, _), n in load.counts.items() if o == op), 20,
                                   "too few %s requests: %s" % (op, load.counts))
            hits_before = cache_ops(phases[1][1][0], "hits") - cache_ops(phases[0][1][0], "hits")
            self.assertGreater(hits_before, 0, "api1 had no memcached hit before the kill")

            # restart both memcached; the API servers keep running
            for name in ("mc1", "mc2"):
                t = time.time()
                p = s.devstack_cmd("restart-host", name, timeout=120)
                self.assertEqual(p.returncode, 0, "restart-host %s: %s" % (name, p.stdout + p.stderr))
                killed.remove(name)
                log("restart-host %s took %.1f s" % (name, time.time() - t))
            t_restart = time.time()
            base = snap()
            resumed = {}
            pending = {(i, srv) for i in range(len(s.api_urls)) for srv in names.values()}
            deadline = t_restart + self.RESUME_S
            rng = random.Random()
            while pending and time.time() < deadline:
                t_end = time.time() + 0.5
                while time.time() < t_end:
                    for c in by_url.values():
                        c.get(odds_path(rng.choice(matches))).expect(200, msg="read after the restart")
                        c.get("/v1/standings/companies").expect(200, msg="read after the restart")
                now = snap()
                for (i, srv) in list(pending):
                    if cache_ops(now[i], "hits", srv) > cache_ops(base[i], "hits", srv):
                        resumed[(i, srv)] = time.time() - t_restart
                        pending.discard((i, srv))
            for (i, srv), dt in sorted(resumed.items()):
                log("after the restart: api%d has hits on %s again after %.1f s" % (i + 1, srv, dt))
            self.assertEqual(sorted(pending), [], "no memcached hit %.0f s after the restart on (API server index, "
                             "memcached): %s" % (self.RESUME_S, sorted(pending)))
            # the hit rate once back, over a short read load through HAProxy
            load2 = LoadRunner(s.api_url, users, matches, co, threads=4)
            a = snap()
            load2.start()
            time.sleep(3.0)
            load2.stop()
            log("after the restart, 3 s of load: %s; failures %d" % (hit_summary(a, snap()), len(load2.failures)))
            self.assertEqual(load2.failures[:20], [], "failed requests after the restart")
            self.assertEqual({n: devstack_pid(s, n) for n in api_pid}, api_pid, "an API server was restarted")
        finally:
            for name in sorted(names):
                ensure_up(s, name)


# ---------------------------------------------------------------- 5. a stopped memcached

class TestStoppedMemcached(CacheTest):
    MATCHES = 10
    REQUESTS = 50
    PAUSE_S = 0.02
    SLOW_S = 0.08  # a request that waited for the cache's timeout (100 ms)

    def test_sigstop_memcached_costs_no_timeout_per_request(self):
        s = stack.get()
        s.require_dir()
        require_two_servers(self, s)
        require_cache(self, s.api_urls[0])
        names = memcached_names(s)
        if "mc2" not in names:
            self.skipTest("no mc2 in ports.env")
        pid = devstack_pid(s, "mc2")
        if pid is None:
            self.skipTest("tools/devstack pid mc2 failed")
        matches = parallel(lambda i: new_match(odds=(1.50 + i / 100.0, 3.00, 5.00)), range(self.MATCHES), workers=8)
        clients = [admin().at(u) for u in s.api_urls[:2]]
        for c in clients:
            for _ in range(2):
                for mt in matches:
                    c.get(odds_path(mt)).expect(200, msg="warm")
        before = [metrics(u) for u in s.api_urls[:2]]
        lat, errors = [], []
        try:
            os.kill(pid, signal.SIGSTOP)
            time.sleep(NEAR_MS / 1000.0 + 0.2)  # the near-cache copies expire: reads go to memcached
            t_start = time.time()
            for i in range(self.REQUESTS):
                c = clients[i % 2]
                mt = matches[(i // 2) % len(matches)]
                t0 = time.time()
                try:
                    r = c.get(odds_path(mt), timeout=5)
                    dt = time.time() - t0
                    if r.status != 200:
                        errors.append(r.describe(300))
                    elif hundredths(r.json["home"]) != hundredths(mt["odds"]["home"]):
                        errors.append("wrong odds: %s" % r.describe(300))
                except RequestFailed as e:
                    dt = time.time() - t0
                    errors.append(str(e))
                lat.append(dt)
                time.sleep(self.PAUSE_S)
            took = time.time() - t_start
        finally:
            os.kill(pid, signal.SIGCONT)
        after = [metrics(u) for u in s.api_urls[:2]]
        mc2 = names["mc2"]
        err_mc2 = sum(cache_ops(b, "errors", mc2) - cache_ops(a, "errors", mc2) for a, b in zip(before, after))
        hits_mc2 = sum(cache_ops(b, "hits", mc2) - cache_ops(a, "hits", mc2) for a, b in zip(before, after))
        slow = [round(x * 1000) for x in lat if x > self.SLOW_S]
        # at most one request per breaker period per API server waits for the timeout
        allowed = 2 * (math.ceil(took / BREAKER_S) + 1)
        p99 = percentile(lat, 99)
        log("mc2 stopped: %d GET odds (%d matches, api1 and api2) in %.2f s: p50 %.1f ms, p99 %.1f ms, max %.1f ms; "
            "%d slower than %.0f ms %s (allowed %d); cache errors on mc2 +%d, hits on mc2 +%d; errors %d"
            % (len(lat), len(matches), took, percentile(lat, 50) * 1000, p99 * 1000, max(lat) * 1000, len(slow),
               self.SLOW_S * 1000, slow, allowed, err_mc2, hits_mc2, len(errors)))
        self.assertEqual(errors, [], "failed requests while mc2 was stopped")
        self.assertGreater(err_mc2, 0, "no cache error on mc2 while it was stopped: no key of the %d matches there?"
                           % len(matches))
        self.assertLess(p99, 0.150, "p99 latency %.1f ms while mc2 was stopped" % (p99 * 1000))
        self.assertLessEqual(len(slow), allowed, "%d requests waited for the cache timeout (%s ms): the breaker "
                             "does not skip the stopped server" % (len(slow), slow))
        # mc2 serves again
        deadline = time.time() + 10
        while True:
            for c in clients:
                for mt in matches:
                    c.get(odds_path(mt)).expect(200, msg="read after SIGCONT")
            now = [metrics(u) for u in s.api_urls[:2]]
            if sum(cache_ops(b, "hits", mc2) - cache_ops(a, "hits", mc2) for a, b in zip(after, now)) > 0:
                break
            if time.time() > deadline:
                self.fail("no hit on mc2 within 10 s of SIGCONT")
            time.sleep(0.3)


# ---------------------------------------------------------------- 6. a restarted memcached

class TestMemcachedRestarted(CacheTest):
    """After tools/devstack restart-host mc1 the cache is back to normal within a
    few seconds: the breaker waits 1 s, flushes the server and uses it again;
    no cache errors after that, and mc1's keys are hit again."""

    MATCHES = 20
    BACK_S = 3.0  # breaker (1 s) + flush + slack
    WINDOW_S = 3.0
    OBSERVE_S = 25.0

    def test_restart_host_memcached_back_to_normal(self):
        s = stack.get()
        s.require_dir()
        require_two_servers(self, s)
        require_cache(self, s.api_urls[0])
        names = memcached_names(s)
        if "mc1" not in names:
            self.skipTest("no mc1 in ports.env")
        mc1 = names["mc1"]
        urls = s.api_urls[:2]
        matches = parallel(lambda i: new_match(), range(self.MATCHES), workers=8)
        clients = [admin().at(u) for u in urls]
        stop = threading.Event()
        failures = []

        def reader():
            rng = random.Random()
            while not stop.is_set():
                for c in clients:
                    try:
                        r = c.get(odds_path(rng.choice(matches)))
                        if r.status != 200:
                            failures.append(r.describe(300))
                    except RequestFailed as e:
                        failures.append(str(e))
                time.sleep(0.01)

        def mc1_ops(ms):
            return {op: sum(cache_ops(m, op, mc1) for m in ms) for op in ("hits", "misses", "errors")}

        def delta(a, b):
            return {k: b[k] - a[k] for k in a}

        def rate(d):
            return d["hits"] / (d["hits"] + d["misses"]) if d["hits"] + d["misses"] else 0.0

        threads = [threading.Thread(target=reader, daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            # a quiet start: no cache error on mc1 for a second (an earlier
            # restart's errors may still go on), at most OBSERVE_S
            t_quiet = time.time()
            prev = mc1_ops([metrics(u) for u in urls])
            while True:
                time.sleep(1.0)
                now = mc1_ops([metrics(u) for u in urls])
                if now["errors"] == prev["errors"] or time.time() > t_quiet + self.OBSERVE_S:
                    break
                prev = now
            if time.time() - t_quiet > 1.5:
                log("restart-host mc1: waited %.0f s for mc1 to have no cache errors before the test"
                    % (time.time() - t_quiet))
            a = mc1_ops([metrics(u) for u in urls])
            time.sleep(self.WINDOW_S)
            before = delta(a, mc1_ops([metrics(u) for u in urls]))
            p = s.devstack_cmd("restart-host", "mc1", timeout=120)
            self.assertEqual(p.returncode, 0, "restart-host mc1: %s" % (p.stdout + p.stderr))
            t_restart = time.time()
            time.sleep(self.BACK_S)
            a = mc1_ops([metrics(u) for u in urls])
            time.sleep(self.WINDOW_S)
            after = delta(a, mc1_ops([metrics(u) for u in urls]))
            # how long the errors really go on (for the report), at most OBSERVE_S
            last_error = None
            prev = mc1_ops([metrics(u) for u in urls])
            if after["errors"]:
                last_error = time.time() - t_restart
                while time.time() < t_restart + self.OBSERVE_S:
                    time.sleep(1.0)
                    now = mc1_ops([metrics(u) for u in urls])
                    if now["errors"] > prev["errors"]:
                        last_error = time.time() - t_restart
                    elif time.time() - t_restart > last_error + 3.0:
                        break
                    prev = now
        finally:
            stop.set()
            for t in threads:
                t.join(30)
            ensure_up(s, "mc1")
        log("restart-host mc1: before, %.0f s: mc1 hits %d, misses %d (hit rate %.0f%%), errors %d; "
            "%.0f-%.0f s after the restart: hits %d, misses %d (hit rate %.0f%%), errors %d%s"
            % (self.WINDOW_S, before["hits"], before["misses"], rate(before) * 100, before["errors"],
               self.BACK_S, self.BACK_S + self.WINDOW_S, after["hits"], after["misses"], rate(after) * 100,
               after["errors"], "" if last_error is None else "; the last cache error on mc1 came %.0f s after "
               "the restart" % last_error))
        self.assertEqual(failures[:10], [], "failed reads")
        self.assertGreater(before["hits"], 0, "no hit on mc1 before the restart")
        self.assertEqual(after["errors"], 0, "cache errors on mc1 %.0f-%.0f s after restart-host mc1 (each one "
                         "opens the breaker for 1 s and flushes mc1 again)"
                         % (self.BACK_S, self.BACK_S + self.WINDOW_S))
        self.assertGreaterEqual(rate(after), 0.8 * rate(before),
                                "mc1's hit rate %.0f-%.0f s after restart-host mc1: %.0f%%, before: %.0f%%"
                                % (self.BACK_S, self.BACK_S + self.WINDOW_S, rate(after) * 100, rate(before) * 100))


if __name__ == "__main__":
    unittest.main()
