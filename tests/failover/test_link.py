"""The links of a stack whose MariaDB servers run in network namespaces of
their own (tools/devstack, BC_NETNS=1) delay packets as a network between
machines does: 0.25 ms each way (a veth pair with netem, or netwire between
two TUN devices where the kernel has no netem).

  - a one-byte round trip from the root namespace to a shard host's primary's
    address (10.213.n.2) takes >= 0.4 ms at the median (its link, both
    ways), and so does a TCP connect; over loopback a round trip takes less
    than half of that;
  - from the host's replica's namespace to the primary's address (through
    the root namespace, as replication goes) >= 0.8 ms (two links, both
    ways);
  - none of them is absurd (median below 10 ms).
tests/failover/test_partition.py cuts such a link and heals it.

The round trips are those of a small echo server the test runs in the
server's namespace, on its address and a port of its own: they measure the
link, not MariaDB.
"""

import hashlib
import json
import os
import select
import statistics
import subprocess
import sys
import unittest

import fo
from fo import h

MIN_LINK_RTT_MS = 0.4  # root namespace <-> a server: its link both ways (2 x 0.25 ms)
MIN_TWO_LINKS_RTT_MS = 0.8  # a server <-> another: two links both ways (4 x 0.25 ms)
MAX_RTT_MS = 10.0  # a wire gone wrong (late timers), not a busy machine
ROUND_TRIPS = 300
CONNECTS = 100

# Echoes what each connection sends, on ADDR and a free port it prints; ends
# when its stdin closes.
ECHO = r"""
import socket, sys, threading
s = socket.socket()
s.bind((sys.argv[1], 0))
s.listen(64)
print(s.getsockname()[1], flush=True)
def serve(c):
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with c:
        while True:
            b = c.recv(64)
            if not b:
                return
            c.sendall(b)
def accept():
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()
threading.Thread(target=accept, daemon=True).start()
sys.stdin.read()
"""

# ADDR PORT N M: N one-byte round trips on one connection (after 10 to warm
# up), then M connects; prints their times in ms as JSON.
PROBE = r"""
import json, socket, sys, time
addr, port, n, m = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
c = socket.create_connection((addr, port), timeout=5)
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
rtt = []
for i in range(n + 10):
    t = time.perf_counter()
    c.sendall(b"x")
    if c.recv(64) != b"x":
        sys.exit("echo: bad answer")
    rtt.append((time.perf_counter() - t) * 1000)
c.close()
conn = []
for i in range(m):
    t = time.perf_counter()
    socket.create_connection((addr, port), timeout=5).close()
    conn.append((time.perf_counter() - t) * 1000)
print(json.dumps({"rtt": rtt[10:], "connect": conn}))
"""


def netns_of(server):
    """The server's network namespace: bc<6 hex digits of sha1(DIR)>-<server>
    (tools/devstack's netns_name)."""
    d = os.path.realpath(fo.stack.get().dir)
    return "bc%s-%s" % (hashlib.sha1(d.encode()).hexdigest()[:6], server)


def addr_of(server):
    return fo._cnf_value(h.server_cnf(server), "host")


def in_netns(ns, argv):
    return ["ip", "netns", "exec", ns] + argv if ns else argv


class Echo:
    """ECHO on addr, in network namespace ns (None: the root namespace)."""

    def __init__(self, addr, ns=None):
        self.addr = addr
        self.p = subprocess.Popen(in_netns(ns, [sys.executable, "-c", ECHO, addr]), stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        ready, _, _ = select.select([self.p.stdout], [], [], 10)
        line = self.p.stdout.readline() if ready else ""
        if not line.strip().isdigit():
            self.stop()
            raise AssertionError("the echo server on %s%s did not start" % (addr, " in " + ns if ns else ""))
        self.port = int(line)

    def stop(self):
        if self.p.poll() is None:
            self.p.stdin.close()
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
        self.p.stdout.close()


def probe(echo, ns=None):
    """(median round trip, median connect) in ms to echo, from namespace ns."""
    p = subprocess.run(in_netns(ns, [sys.executable, "-c", PROBE, echo.addr, str(echo.port), str(ROUND_TRIPS),
                                     str(CONNECTS)]), capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        raise AssertionError("probe of %s:%d%s failed: %s" % (echo.addr, echo.port, " from " + ns if ns else "",
                                                             p.stderr[-1000:]))
    r = json.loads(p.stdout)
    return statistics.median(r["rtt"]), statistics.median(r["connect"])


class TestLink(unittest.TestCase):
    def setUp(self):
        self.addCleanup(fo.recover)

    def echo(self, addr, ns=None):
        e = Echo(addr, ns)
        self.addCleanup(e.stop)
        return e

    def test_link_latency_to_a_server_and_between_servers(self):
        if not fo.netns():
            self.skipTest("the stack was made without BC_NETNS=1 (needs root and ip netns)")
        fo.wait_settled(30)
        host = sorted(set(h.shard_map().values()) - {h.global_host()})[0]
        prim, rep = h.primary_of(host), fo.replica_of(host)
        far = self.echo(addr_of(prim), netns_of(prim))
        near = self.echo("127.0.0.1")
        rtt, conn = probe(far)
        rtt_lo, conn_lo = probe(near)
        rtt_2, conn_2 = probe(far, netns_of(rep))
        fo.log("round trip / connect, median ms: root -> %s (%s) %.3f / %.3f; loopback %.3f / %.3f; "
               "%s -> %s %.3f / %.3f" % (prim, far.addr, rtt, conn, rtt_lo, conn_lo, rep, prim, rtt_2, conn_2))
        problems = []
        if not MIN_LINK_RTT_MS <= rtt <= MAX_RTT_MS or not MIN_LINK_RTT_MS <= conn <= MAX_RTT_MS:
            problems.append("root namespace -> %s: median round trip %.3f ms, connect %.3f ms; want %.1f..%.1f"
                            % (prim, rtt, conn, MIN_LINK_RTT_MS, MAX_RTT_MS))
        if not rtt_lo < rtt / 2:
            problems.append("loopback: median round trip %.3f ms, want < half of the link's %.3f" % (rtt_lo, rtt))
        if not MIN_TWO_LINKS_RTT_MS <= rtt_2 <= MAX_RTT_MS:
            problems.append("%s -> %s (two links): median round trip %.3f ms, want %.1f..%.1f"
                            % (rep, prim, rtt_2, MIN_TWO_LINKS_RTT_MS, MAX_RTT_MS))
        self.assertFalse(problems, "\n  ".join(problems))


if __name__ == "__main__":
    unittest.main()
