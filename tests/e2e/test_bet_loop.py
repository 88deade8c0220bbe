"""POST /v1/bets on the event loops (issue 13, "Threading" and "A bet in at
most 2 round trips").

A bet whose match is in the server's near-cache runs its one statement (CALL
place_bet) on the loop that parsed it, on a connection idle in the router's
pool (betcity_loop_reads_total{outcome="answered"}). Where a replica could
answer its user's reads, its answer leaves after the user's read-your-writes
mark is set in memcached without blocking (betcity_loop_marks_total
{outcome="set"}); where none could (this stack has no replicas), it sets
none. Idempotency keys replay there as on a worker. A stopped (SIGSTOP)
memcached costs a bet at most the cache's timeout (100 ms) for its mark,
never a failure, and the loops keep answering meanwhile.

The stack has no replicas (tests/integration/run's BC_REPLICAS=0): the tests
of marks give a host a replica in the catalog (a server row of role replica
at the address of the host's own primary: the API servers then mark every
write; no read goes to it, as its lag probe fails without the heartbeat
schema), and remove it at the end, also on failure. Needs
BC_STACK_DIR (the shard map, tools/devstack pid, the memcached ports).
Prints its figures (lines "[bet-loop] ...").
"""

import os
import re
import signal
import socket
import sys
import time
import unittest

import stack
from client import Client
from fixtures import new_company, new_match
from test_me_loop import GLOBAL_HOST, loop_metrics, user_off_global_host

FAST_S = 0.2  # a health check slower than this waited for something


def log(msg):
    sys.stdout.write("    [bet-loop] %s\n" % msg)
    sys.stdout.flush()


def bet(c, match, pick, stake):
    return c.post("/v1/bets", {"match_id": match["id"], "pick": pick, "stake": stake}).expect_json(201)


def warm(c, match):
    """Two bets on a worker: the first reads the match from the database into
    memcached (a fill under its lease, never kept in the near-cache), the
    second from memcached into api1's near-cache, fresh 0.9 s from then."""
    bet(c, match, "home", 1)
    bet(c, match, "home", 1)


def delta(after, before, name, outcome):
    return after[(name, outcome)] - before[(name, outcome)]


def memcached_ports(s):
    ports = stack._read_env_file(os.path.join(s.dir, "ports.env"))
    return {k[5:]: int(v) for k, v in sorted(ports.items()) if re.fullmatch(r"PORT_mc\d+", k)}


def memcached_has(port, key):
    """Whether the memcached on port holds key (its text protocol)."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as c:
        c.sendall(b"get " + key.encode() + b"\r\n")
        data = b""
        while not data.endswith(b"END\r\n"):
            chunk = c.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.startswith(b"VALUE ")


REPLICA = "e2e_bet_loop_replica"


def replica_remove(s):
    """Removes the test's replica row, if any, with a new map version."""
    g = s.global_schema()
    s.sql_global("DELETE FROM `%s`.servers WHERE name = '%s'; "
                 "UPDATE `%s`.map_version SET version = version + 1 WHERE id = 1 AND ROW_COUNT() > 0"
                 % (g, REPLICA, g))


def replica_add(s, host):
    """A replica of host in the catalog (its primary's address)."""
    g = s.global_schema()
    s.sql_global("INSERT INTO `%s`.servers (name, host, addr, port, role) "
                 "SELECT '%s', host, addr, port, 'replica' FROM `%s`.servers WHERE name = '%s'; "
                 "UPDATE `%s`.map_version SET version = version + 1 WHERE id = 1"
                 % (g, REPLICA, g, host, g))


def gauge(url, name):
    """The value of a gauge of the server at url (its /metrics, one instance)."""
    for line in Client(url).get("/metrics", timeout=5).text.splitlines():
        m = re.match(r"%s\{[^}]*\} (\S+)$" % name, line)
        if m:
            return int(float(m.group(1)))
    raise AssertionError("%s/metrics lacks %s" % (url, name))


def catalog_version(s):
    return int(s.sql_global("SELECT version FROM `%s`.map_version WHERE id = 1" % s.global_schema())[0][0])


def await_marks(url, c, match, marked):
    """Bets of c until one is marked (marked) or not (not marked): the
    server at url polls the map every second. Fails after 10 s."""
    deadline = time.time() + 10
    while True:
        warm(c, match)
        before = loop_metrics(url)
        bet(c, match, "home", 1)
        n = delta(loop_metrics(url), before, "betcity_loop_marks_total", "set")
        if n == (1 if marked else 0):
            return
        if time.time() > deadline:
            raise AssertionError("%s: bets %s marked 10 s after the replica was %s"
                                 % (url, "still" if not marked else "not", "removed" if not marked else "added"))
        time.sleep(0.3)


class TestBetsOnTheLoops(unittest.TestCase):
    """With a replica in the catalog: every bet is marked."""

    @classmethod
    def setUpClass(cls):
        s = stack.get()
        s.require_dir()
        url = s.api_urls[0]
        replica_remove(s)
        try:
            replica_add(s, GLOBAL_HOST)
            u = user_off_global_host(s, new_company())
            await_marks(url, u.client.at(url), new_match(), True)
        except BaseException:
            replica_remove(s)
            raise

    @classmethod
    def tearDownClass(cls):
        replica_remove(stack.get())

    def bettor(self):
        s = stack.get()
        s.require_dir()
        url = s.api_urls[0]
        u = user_off_global_host(s, new_company())
        return s, url, u, u.client.at(url)

    def test_bets_are_answered_on_the_loop_and_marked(self):
        """Two bets fill api1's near-cache with the match (on a worker); the
        next 10, one after another, run on a loop, each with its mark set
        in memcached; the balance is debited once per bet; a repeated
        Idempotency-Key replays the same bet there, and another body with it
        is refused."""
        s, url, u, c = self.bettor()
        m = new_match()
        warm(c, m)
        before = loop_metrics(url)
        ids = set()
        for i in range(10):
            j = c.post("/v1/bets", {"match_id": m["id"], "pick": "draw", "stake": 2}).expect_json(201)
            ids.add(j["id"])
        key = "loop-%d" % time.time_ns()
        first = c.post("/v1/bets", {"match_id": m["id"], "pick": "away", "stake": 3},
                       headers={"Idempotency-Key": key}).expect_json(201)
        again = c.post("/v1/bets", {"match_id": m["id"], "pick": "away", "stake": 3},
                       headers={"Idempotency-Key": key}).expect_json(200)
        c.post("/v1/bets", {"match_id": m["id"], "pick": "home", "stake": 3},
               headers={"Idempotency-Key": key}).expect(422, code="idempotency_key_reused")
        after = loop_metrics(url)
        answered = delta(after, before, "betcity_loop_reads_total", "answered")
        marked = delta(after, before, "betcity_loop_marks_total", "set")
        log("13 bets: %d answered on a loop, %d sent to a worker; marks set %d, failed %d" % (
            answered, delta(after, before, "betcity_loop_reads_total", "to_worker"), marked,
            delta(after, before, "betcity_loop_marks_total", "failed")))
        self.assertEqual(len(ids), 10)
        self.assertEqual(again["id"], first["id"])
        # within the near-cache's 0.9 s every one of them ran on a loop
        self.assertEqual(answered, 13)
        self.assertEqual(marked, 13)
        me = c.get("/v1/me").expect_json(200)
        self.assertEqual(me["balance"], u.initial_balance - 2 - 10 * 2 - 3)
        rw = "bc:v1:rw:%s" % u.id
        held = [name for name, port in memcached_ports(s).items() if memcached_has(port, rw)]
        self.assertEqual(len(held), 1, "the mark %s is on %s" % (rw, held))
        s.check_ledger()

    def test_stopped_memcached_costs_a_bet_its_timeout_only(self):
        """Both memcached servers stopped while api1 still has the match in
        its near-cache: 6 bets in a row answer 201, the first after its
        mark's timeout (100 ms), the others at once (the breaker); /healthz
        answers at once in between. After SIGCONT, marks are set again."""
        s, url, u, c = self.bettor()
        m = new_match()
        pids = [int(s.devstack_cmd("pid", name).stdout.strip()) for name in sorted(memcached_ports(s))]
        self.assertEqual(len(pids), 2)
        warm(c, m)
        before = loop_metrics(url)
        lat, health = [], []
        for pid in pids:
            stack.sigstop(pid)
        try:
            h = Client(url)
            for i in range(6):
                t0 = time.time()
                c.post("/v1/bets", {"match_id": m["id"], "pick": "draw", "stake": 2}).expect(201)
                lat.append(time.time() - t0)
                t0 = time.time()
                h.get("/healthz", timeout=5).expect(200)
                health.append(time.time() - t0)
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        after = loop_metrics(url)
        failed = delta(after, before, "betcity_loop_marks_total", "failed")
        log("memcached stopped: 6 bets in %s ms; marks failed %d; /healthz max %.1f ms" % (
            ", ".join("%.0f" % (x * 1000) for x in lat), failed, max(health) * 1000))
        self.assertEqual(delta(after, before, "betcity_loop_reads_total", "answered"), 6)
        self.assertEqual(failed, 6)
        self.assertGreaterEqual(lat[0], 0.09, "the first mark did not wait for its timeout")
        self.assertLess(max(lat), 0.6)
        self.assertLess(max(health), FAST_S)
        # back: after the breaker's second the marks are set again
        time.sleep(1.2)
        c.get("/v1/me").expect(200)  # a worker's blocking call probes and flushes the servers
        deadline = time.time() + 10
        while True:
            warm(c, m)
            b = loop_metrics(url)
            c.post("/v1/bets", {"match_id": m["id"], "pick": "home", "stake": 1}).expect(201)
            a = loop_metrics(url)
            if delta(a, b, "betcity_loop_marks_total", "set") == 1 or time.time() > deadline:
                break
            time.sleep(0.3)
        self.assertEqual(delta(a, b, "betcity_loop_marks_total", "set"), 1, "no mark set after SIGCONT")


class TestNoReplicaNoMark(unittest.TestCase):
    def test_bets_without_replicas_set_no_mark(self):
        """No host has a replica (a replica given before stops counting
        map_poll_ms + 1 s after api1 reloaded its map without it, about 3 s
        after its removal): bets on a loop answer
        without a read-your-writes mark, and memcached holds none for their
        user. Then a replica enters the catalog: the next bets are marked."""
        s = stack.get()
        s.require_dir()
        url = s.api_urls[0]
        replica_remove(s)
        others = s.sql_global("SELECT COUNT(*) FROM `%s`.servers WHERE role = 'replica'" % s.global_schema())
        if int(others[0][0]) > 0:
            self.skipTest("the stack has replicas (BC_REPLICAS=0 is the e2e suite's shape)")
        self.addCleanup(replica_remove, s)
        m = new_match()
        # until api1's map has no replica (after another test's)
        await_marks(url, user_off_global_host(s, new_company()).client.at(url), m, False)
        u = user_off_global_host(s, new_company())
        c = u.client.at(url)
        warm(c, m)
        before = loop_metrics(url)
        for _ in range(5):
            bet(c, m, "draw", 1)
        after = loop_metrics(url)
        rw = "bc:v1:rw:%s" % u.id
        marked = delta(after, before, "betcity_loop_marks_total", "set")
        log("no replica: 5 bets, %d answered on a loop, marks set %d, failed %d" % (
            delta(after, before, "betcity_loop_reads_total", "answered"), marked,
            delta(after, before, "betcity_loop_marks_total", "failed")))
        self.assertEqual(delta(after, before, "betcity_loop_reads_total", "answered"), 5)
        self.assertEqual(marked, 0)
        self.assertEqual(delta(after, before, "betcity_loop_marks_total", "failed"), 0)
        self.assertEqual([n for n, port in memcached_ports(s).items() if memcached_has(port, rw)], [],
                         "a mark %s without replicas" % rw)
        # /metrics says so, at the catalog's map version
        self.assertEqual(gauge(url, "betcity_read_your_writes_flags"), 0)
        self.assertEqual(gauge(url, "betcity_map_version"), catalog_version(s))

        replica_add(s, GLOBAL_HOST)
        await_marks(url, c, m, True)
        warm(c, m)
        before = loop_metrics(url)
        for _ in range(3):
            bet(c, m, "home", 1)
        after = loop_metrics(url)
        self.assertEqual(delta(after, before, "betcity_loop_marks_total", "set"), 3,
                         "bets not marked with a replica in the map")
        self.assertEqual(gauge(url, "betcity_read_your_writes_flags"), 1)
        self.assertEqual(gauge(url, "betcity_map_version"), catalog_version(s))
        self.assertEqual(len([n for n, port in memcached_ports(s).items() if memcached_has(port, rw)]), 1)
        s.check_ledger()


if __name__ == "__main__":
    unittest.main()
