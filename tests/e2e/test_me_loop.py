"""GET /v1/me reads on the event loops (issue 13, "Threading").

Its primary-key read starts on the loop that parsed the request, on a
connection idle in the router's pool, and is answered there when the
database's answer comes, with no worker thread in between
(betcity_loop_reads_total{outcome="answered"}); a read that finds no
connection waits on the loop for one its loop gives back, or goes to a worker
(outcome "to_worker" once started). A stopped (SIGSTOP) database host costs
those reads their statement deadline and a 503, and the loops go on answering
everything else meanwhile. Needs BC_STACK_DIR (the shard map, tools/devstack
pid). Prints its figures (lines "[me-loop] ...").
"""

import http.client
import json
import os
import re
import signal
import sys
import threading
import time
import unittest

import stack
from client import Client, RequestFailed
from fixtures import new_company, new_users, parallel, signup

GLOBAL_HOST = "db1"  # stack.sql_global(): the host of the global schema
FAST_S = 0.2  # a health check slower than this waited for something


def log(msg):
    sys.stdout.write("    [me-loop] %s\n" % msg)
    sys.stdout.flush()


def loop_metrics(url):
    """{(name, outcome): count} of the loops' counters (betcity_loop_reads_total,
    betcity_loop_marks_total) in url's /metrics; each outcome must be there."""
    r = Client(url).get("/metrics", timeout=5)
    r.expect(200, msg="GET /metrics")
    out = {}
    for line in r.text.splitlines():
        m = re.match(r'(betcity_loop_(?:reads|marks)_total)\{.*outcome="(\w+)"\} (\S+)$', line)
        if m:
            out[(m.group(1), m.group(2))] = int(float(m.group(3)))
    want = {("betcity_loop_reads_total", "answered"), ("betcity_loop_reads_total", "to_worker"),
            ("betcity_loop_marks_total", "set"), ("betcity_loop_marks_total", "failed")}
    if not want <= set(out):
        raise AssertionError("%s/metrics lacks %s" % (url, sorted(want - set(out))))
    return out


def loop_reads(url):
    """{outcome: count} of betcity_loop_reads_total in url's /metrics."""
    return {o: n for (name, o), n in loop_metrics(url).items() if name == "betcity_loop_reads_total"}


def user_off_global_host(s, co):
    """A new user of co whose shard is not on the global schema's host: no
    worker's statement (readiness checks, the map poll) takes that host's
    idle connections between two of its reads."""
    for _ in range(30):
        u = signup(co)
        if s.host_of_id(u.id) != GLOBAL_HOST:
            return u
    raise AssertionError("30 signups all landed on %s" % GLOBAL_HOST)


class TestMeOnTheLoops(unittest.TestCase):
    def test_reads_are_answered_on_the_loop(self):
        """20 reads one after another on api1: each finds the connection the
        one before gave back, and all 20 are answered on a loop."""
        s = stack.get()
        s.require_dir()
        url = s.api_urls[0]
        u = user_off_global_host(s, new_company())
        c = u.client.at(url)
        c.get("/v1/me").expect(200, msg="first read (may open the pool's connection)")
        before = loop_reads(url)
        for _ in range(20):
            j = c.get("/v1/me").expect_json(200)
            self.assertEqual(j["id"], u.id)
            self.assertEqual(j["email"], u.email)
        after = loop_reads(url)
        log("20 reads: answered on a loop +%d, sent to a worker +%d"
            % (after["answered"] - before["answered"], after["to_worker"] - before["to_worker"]))
        self.assertEqual(after["answered"] - before["answered"], 20)
        self.assertEqual(after["to_worker"], before["to_worker"])

    def test_reads_at_once_each_get_their_own_row(self):
        """32 users' reads sent at once on 32 connections to api1, in bursts:
        reads that a loop's turn starts on one host share a statement
        (read_batch), and every answer is its own user's, in full. Some
        reads must have shared one (betcity_loop_shared_reads_total rose)."""
        s = stack.get()
        s.require_dir()
        url = s.api_urls[0]
        users = new_users(new_company(), 32)
        hostport = url.split("//", 1)[1]
        conns = [http.client.HTTPConnection(hostport, timeout=10) for _ in users]
        shared = lambda: int(re.search(r"betcity_loop_shared_reads_total\{[^}]*\} (\d+)",
                                       Client(url).get("/metrics", timeout=5).text).group(1))
        before, bursts, answers = shared(), 0, 0
        try:
            for c in conns:
                c.connect()
            while bursts < 40 and (bursts < 5 or shared() == before):
                bursts += 1
                for c, u in zip(conns, users):
                    c.request("GET", "/v1/me", headers={"Authorization": "Bearer " + u.client.token})
                for c, u in zip(conns, users):
                    r = c.getresponse()
                    body = r.read()
                    self.assertEqual(r.status, 200, body)
                    j = json.loads(body)
                    self.assertEqual((j["id"], j["email"], j["company_id"]),
                                     (u.id, u.email, u.user["company_id"]), "burst %d" % bursts)
                    answers += 1
        finally:
            for c in conns:
                c.close()
        log("%d bursts of 32 reads at once: %d answers, each its user's; %d reads "
            "shared a statement" % (bursts, answers, shared() - before))
        self.assertGreater(shared(), before, "no read shared a statement in %d bursts" % bursts)

    def test_stopped_host_costs_the_deadline_not_the_loops(self):
        """The user's host stopped: 8 reads at once on api1 answer 503 within
        the deadlines (the statement's 800 ms, a worker's connect 500 ms), and
        GET /healthz on api1 answers at once all along; after SIGCONT the
        reads answer 200 again."""
        s = stack.get()
        s.require_dir()
        url = s.api_urls[0]
        u = user_off_global_host(s, new_company())
        host = s.host_of_id(u.id)
        c = u.client.at(url)
        parallel(lambda i: c.get("/v1/me").expect(200, msg="warm"), range(8), workers=8)
        p = s.devstack_cmd("pid", host)
        pid = int(p.stdout.strip())
        results, health = [None] * 8, []
        done = threading.Event()

        def read(i):
            t0 = time.time()
            try:
                r = c.get("/v1/me", timeout=10)
                results[i] = (r.status, time.time() - t0, r)
            except RequestFailed as e:
                results[i] = (None, time.time() - t0, e)

        threads = [threading.Thread(target=read, args=(i,)) for i in range(8)]
        stack.sigstop(pid)
        try:
            for t in threads:
                t.start()
            time.sleep(0.1)
            h = Client(url)
            while any(t.is_alive() for t in threads) and len(health) < 200:
                t0 = time.time()
                r = h.get("/healthz", timeout=5)
                health.append((r.status, time.time() - t0))
                time.sleep(0.02)
            for t in threads:
                t.join(15)
        finally:
            os.kill(pid, signal.SIGCONT)
            done.set()
        slowest = max(r[1] for r in results)
        log("%s stopped: me %s in at most %.3f s; %d health checks, slowest %.3f s"
            % (host, sorted(set(r[0] for r in results)), slowest, len(health),
               max(t for _, t in health) if health else float("nan")))
        for status, t, r in results:
            self.assertEqual(status, 503, "GET /v1/me with its host stopped: %r" % (r,))
            self.assertLess(t, 3.0)
        self.assertGreater(len(health), 0)
        for status, t in health:
            self.assertEqual(status, 200)
            self.assertLess(t, FAST_S, "GET /healthz waited %.3f s while reads hung" % t)
        deadline = time.time() + 10
        while True:
            r = c.get("/v1/me", timeout=5)
            if r.status == 200 or time.time() > deadline:
                break
            time.sleep(0.2)
        self.assertEqual(r.status, 200, "GET /v1/me after SIGCONT: %s" % r.text)


if __name__ == "__main__":
    unittest.main()
