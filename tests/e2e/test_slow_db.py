"""A slow database does not stall hot reads (issue 13, "Threading").

Handlers that wait for the database run on the API server's worker pool, off
libmicrohttpd's event loops. Here a MariaDB session of the test holds the row
lock of one user (SELECT … FOR UPDATE) for HOLD_S, and BETS bets of that user
are sent at once to api1: each waits in its UPDATE of the balance until the
lock goes (HOLD_S is below the router's statement deadline, query_timeout_ms
800, so they then go through). Meanwhile, on the same server:
  - /metrics shows at least BETS requests running on workers at once (bets in
    flight are bounded by the pool, not by the event-loop threads: before, 16
    HTTP threads were the bound, and a 17th request waited for one);
  - GET /healthz and GET /v1/matches/{id}/odds (cached) keep answering, each
    well within the hold (before, with every HTTP thread blocked, they waited
    for the lock too).
Needs BC_STACK_DIR (the shard host's client.cnf). Prints its figures (lines
"[slow-db] …").
"""

import subprocess
import sys
import threading
import time
import unittest

import stack
from client import Client, RequestFailed
from fixtures import new_company, new_match, parallel, signup

HOLD_S = 0.5  # the row lock's hold: below query_timeout_ms (800) with room for the queue after it
FAST_S = 0.2  # a hot read slower than this waited for something


def log(msg):
    sys.stdout.write("    [slow-db] %s\n" % msg)
    sys.stdout.flush()


def metric(url, name, **labels):
    """The sum of the samples of name with these labels in url's /metrics (None if absent)."""
    r = Client(url).get("/metrics", timeout=5)
    r.expect(200, msg="GET /metrics")
    total, seen = 0.0, False
    for line in r.text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(('%s="%s"' % kv) in head for kv in labels.items()):
            total += float(value)
            seen = True
    return total if seen else None


def percentile(values, p):
    v = sorted(values)
    return v[max(0, int(round(p / 100.0 * len(v) + 0.5)) - 1)] if v else float("nan")


class RowLock:
    """A session on a shard's host that holds one user's row lock for hold_s
    (its own transaction: START, SELECT … FOR UPDATE, a sleep, COMMIT)."""

    def __init__(self, s, user_id, hold_s):
        shard = stack.shard_of(user_id)
        cnf = s.host_cnfs()[s.shard_map()[shard]]
        sql = ("START TRANSACTION; SELECT id FROM `%s`.users WHERE id = %d FOR UPDATE; "
               "SELECT 'locked'; DO SLEEP(%.3f); COMMIT; SELECT 'released';"
               % (s.schema(shard), int(user_id), hold_s))
        self.p = subprocess.Popen(["mariadb", "--defaults-file=" + cnf, "-N", "-B", "--unbuffered", "-e", sql],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait_locked(self, timeout=10):
        """Returns when the lock is held (the session printed 'locked')."""
        deadline = time.time() + timeout
        for line in self.p.stdout:
            if line.strip() == "locked":
                return
            if time.time() > deadline:
                break
        self.p.kill()
        raise AssertionError("the locking session did not take the lock: %s" % self.p.stderr.read())

    def wait(self):
        out, err = self.p.communicate(timeout=30)
        if self.p.returncode != 0:
            raise AssertionError("the locking session failed: %s" % err)


class TestSlowDatabase(unittest.TestCase):
    BETS = 40  # > the 16 HTTP threads that were the bound before, < the 64 workers

    def test_bets_held_by_a_row_lock_do_not_stall_hot_reads(self):
        s = stack.get()
        s.require_dir()
        url = s.api_urls[0]
        workers = metric(url, "betcity_work_threads")
        if workers is None:
            self.fail("%s/metrics has no betcity_work_threads: no worker pool?" % url)
        bets = min(self.BETS, int(workers) - 8)
        self.assertGreater(bets, 16, "api1 has %d workers: too few to hold more than 16 bets" % workers)
        co = new_company()
        u = signup(co)
        m = new_match()
        client = u.client.at(url)
        odds = "/v1/matches/%s/odds" % m["id"]
        for _ in range(3):  # warm: memcached and the near-cache
            client.get(odds).expect(200, msg="warm odds")
        health = Client(url)

        results = [None] * bets
        reads = {"healthz": [], "odds": []}
        failures = []
        running = []
        stop = threading.Event()

        def bet(i):
            t0 = time.time()
            try:
                r = client.post("/v1/bets", {"match_id": m["id"], "pick": "home", "stake": 1}, timeout=10)
                results[i] = (r.status, time.time() - t0, r)
            except RequestFailed as e:
                results[i] = (None, time.time() - t0, e)

        def prober():
            while not stop.is_set():
                for name, c, path in (("healthz", health, "/healthz"), ("odds", client, odds)):
                    t0 = time.time()
                    try:
                        r = c.get(path, timeout=5)
                        if r.status != 200:
                            failures.append(r.describe(300))
                    except RequestFailed as e:
                        failures.append(str(e))
                    reads[name].append(time.time() - t0)
                time.sleep(0.01)

        lock = RowLock(s, u.id, HOLD_S)
        lock.wait_locked()
        t_lock = time.time()
        threads = [threading.Thread(target=bet, args=(i,), daemon=True) for i in range(bets)]
        for t in threads:
            t.start()
        probe = threading.Thread(target=prober, daemon=True)
        probe.start()
        # mid-hold: every bet waits for the lock on a worker
        while time.time() < t_lock + HOLD_S * 0.6:
            time.sleep(0.02)
        running.append(metric(url, "betcity_work_requests", state="running") or 0)
        while time.time() < t_lock + HOLD_S - 0.05:
            time.sleep(0.02)
        stop.set()
        probe.join(10)
        t_probe_end = time.time()
        lock.wait()
        for t in threads:
            t.join(15)

        statuses = {}
        for st, _, _ in results:
            statuses[st] = statuses.get(st, 0) + 1
        bet_lat = [x[1] for x in results if x is not None]
        log("%d bets of one user held by its row lock for %.1f s on %s: %d running on workers mid-hold; "
            "bets answered %s, p50 %.0f ms, max %.0f ms" % (
                bets, HOLD_S, url, running[0], statuses, percentile(bet_lat, 50) * 1000, max(bet_lat) * 1000))
        for name, lat in sorted(reads.items()):
            log("during the hold (%.2f s): %d GET %s, p50 %.1f ms, max %.1f ms" % (
                t_probe_end - t_lock, len(lat), name, percentile(lat, 50) * 1000, max(lat) * 1000))

        self.assertEqual(failures[:10], [], "hot reads failed while the database was slow")
        self.assertGreaterEqual(running[0], bets, "only %d requests on workers while %d bets waited for the row "
                                "lock" % (running[0], bets))
        for name, lat in sorted(reads.items()):
            self.assertGreaterEqual(len(lat), 3, "too few GET %s during the hold: %d" % (name, len(lat)))
            self.assertLess(max(lat), FAST_S, "GET %s took %.0f ms while bets waited for the database"
                            % (name, max(lat) * 1000))
        # the bets went through once the lock was released (or, past a deadline, 503 with Retry-After)
        for st, dt, r in results:
            if st == 201:
                continue
            self.assertEqual(st, 503, "a held bet answered %s" % (r.describe(300) if st else r))
            self.assertTrue(r.header("Retry-After"), r.describe(300))
        self.assertGreaterEqual(statuses.get(201, 0), bets // 2, "most held bets should go through: %s" % statuses)
        balance = u.client.at(url).get("/v1/me").expect_json(200)["balance"]
        self.assertEqual(balance, u.initial_balance - statuses.get(201, 0), "one debit per bet that answered 201")


if __name__ == "__main__":
    unittest.main()
