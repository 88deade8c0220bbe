"""A host's replica cut off from everyone (tools/devstack partition, a stack
made with BC_NETNS=1) for longer than down_after_ms while loadgen bets, some
of its users on a shard of that host, then healed. The primary never stopped
answering: nothing may fail over, during the cut or at the heal.

The heal is where it went wrong: the replica reconnects, and its primary's
new binlog dump thread kills the one the cut left behind, which MariaDB
does while it holds its list of sessions, until its semi-sync thread lets go
of the old socket (the replica's kernel resets it seconds later). The
primary took no new connection meanwhile, the guard's heartbeat waited for
an acknowledgement, and the guard failed the primary over to the replica.
The cut lasts 14 s: longer than down_after_ms, and than the replica's
slave_net_timeout (4 s), so that the replica gives its connection up; and
the primary's retransmissions then back off so that, without the guard's
kill, the stall after the heal lasted some 10 s (after a 10-s cut, 2 s,
too short to fail the old guard).

  - no failover: the catalog's map version and the host's roles are as
    before, the same primary is writable, the guard's log has no FAILOVER of
    the host;
  - while the replica is cut off, no bet of the watched shard is
    acknowledged (its host's primary acknowledges nothing on its own; those
    bets get 503, by design), bets of other hosts are;
  - the primary takes new connections throughout (each within 2 s; a new
    connection is what the API servers' pools and the guard open);
  - after the heal, the watched shard's bets are acknowledged again within
    5 s;
  - every acknowledged bet is a row of its shard on the host's primary,
    listed once; bcadmin check-ledger is clean.
"""

import subprocess
import threading
import time
import unittest

import fo
from fo import h

LOAD_USERS = 24
WATCHED_USERS = 8
LOAD_RATE = 100
CUT_S = 14.0  # see above
RECOVER_S = 5.0
LOAD_AFTER_HEAL_S = 8.0  # the stall came 1 to 2 s after the heal, the failover 2 s later
GRACE_S = 0.3  # commits acknowledged as the cut lands
CONNECT_MAX_S = 2.0


def map_version():
    return int(h.sql(h.global_host(), "SELECT version FROM `%s`.map_version WHERE id = 1" % h.global_schema())[0][0])


class ConnectWatch:
    """Opens a new connection to a server every 250 ms (mariadb, SELECT 1)
    and records how long each took, or that it failed, with its start."""

    def __init__(self, server):
        self.cnf = h.server_cnf(server)
        self.samples = []  # (start, seconds, ok)
        self._stop = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self._stop.is_set():
            t0 = time.time()
            try:
                ok = subprocess.run(["mariadb", "--defaults-file=" + self.cnf, "--connect-timeout=5", "-N", "-B",
                                     "-e", "SELECT 1"], capture_output=True, timeout=10).returncode == 0
            except subprocess.TimeoutExpired:
                ok = False
            self.samples.append((t0, time.time() - t0, ok))
            self._stop.wait(0.25)

    def stop(self):
        self._stop.set()
        self.t.join(15)

    def worst(self):
        """(start, seconds, ok) of the slowest or failed connection, or None."""
        bad = [s for s in self.samples if not s[2]]
        if bad:
            return bad[0]
        return max(self.samples, key=lambda s: s[1]) if self.samples else None


class TestReplicaPartition(unittest.TestCase):
    def setUp(self):
        self.addCleanup(fo.recover)

    def test_replica_cut_off_and_healed_under_load(self):
        if not fo.netns():
            self.skipTest("the stack was made without BC_NETNS=1 (needs root and ip netns)")
        ph = fo.Phases()
        fo.wait_settled(30)
        host = sorted(set(h.shard_map().values()) - {h.global_host()})[0]
        prim = h.primary_of(host)
        rep = fo.replica_of(host)
        version = map_version()
        roles = {n: r for n, r in h.catalog_servers().items() if r[0] == host}
        shard = h.pick_shards(1, on_host=host)[0]
        co, match = h.new_company(), h.new_match()
        lg = h.Loadgen(co, match["id"], LOAD_USERS, rate=LOAD_RATE, mix="bet=70,me=30",
                       watch_shard=shard, shard_users=(shard, WATCHED_USERS))
        lg.wait_loading()
        ph("setup")
        time.sleep(2)
        watch = fo.AckedWatch(lg)
        self.addCleanup(watch.stop)
        conns = ConnectWatch(prim)
        self.addCleanup(conns.stop)
        log_at = fo.guard_log_size()
        t_cut, heal = fo.partition(self, rep)
        fo.log("%s: cut off replica %s of primary %s for %.0f s; shard %d watched" % (host, rep, prim, CUT_S, shard))
        time.sleep(CUT_S)
        heal()
        t_heal = time.time()
        time.sleep(LOAD_AFTER_HEAL_S)
        report = lg.stop()
        watch.stop()
        conns.stop()
        ph("load")

        problems = []

        def check(ok, msg):
            if not ok:
                problems.append(msg)

        log = fo.guard_log_since(log_at)
        failovers = [line for line in log.splitlines() if (" %s: FAILOVER" % host) in line]
        check(not failovers, "the guard failed %s over while its replica %s was cut off or healed: %s"
              % (host, rep, failovers))
        check(map_version() == version, "map version %d, %d before the cut" % (map_version(), version))
        now_roles = {n: r for n, r in h.catalog_servers().items() if r[0] == host}
        check({n: r[1] for n, r in now_roles.items()} == {n: r[1] for n, r in roles.items()},
              "%s's roles changed: %s, before the cut %s" % (host, now_roles, roles))
        st = fo.status().get(prim) or {}
        check(st.get("role") == "primary" and st.get("up") and st.get("writable"),
              "%s is not %s's writable primary any more: %s" % (prim, host, st))

        on_shard = lambda b: h.stack.shard_of(b) == shard  # noqa: E731
        during = [b for when, b in watch.seen if t_cut + GRACE_S < when < t_heal and on_shard(b)]
        check(not during, "%d bets of shard %d acknowledged while %s, its host's only replica, was cut off: %s"
              % (len(during), shard, rep, during[:5]))
        where = h.shard_map()
        others = [b for when, b in watch.seen if t_cut + GRACE_S < when < t_heal and where[h.stack.shard_of(b)] != host]
        check(others, "no bet of another host was acknowledged while %s was cut off" % rep)
        t_ok = watch.first_after(t_heal, on_shard)
        check(t_ok is not None and t_ok - t_heal <= RECOVER_S,
              "shard %d's first acknowledged bet after the heal came %s"
              % (shard, "never" if t_ok is None else "%.2f s after it" % (t_ok - t_heal)))
        worst = conns.worst()
        check(worst is not None and worst[2] and worst[1] <= CONNECT_MAX_S,
              "a new connection to %s %s (%.1f s after the cut; %d tried)"
              % (prim, "failed" if worst and not worst[2] else "took %.2f s" % (worst[1] if worst else 0),
                 (worst[0] - t_cut) if worst else 0, len(conns.samples)))
        acked = [b for b, _, _ in lg.acked()]
        problems += h.check_acked(acked)
        rc, out = h.check_ledger()
        check(rc == 0, "bcadmin check-ledger: exit %d\n%s" % (rc, h.tail(out)))
        ph("checks")
        fo.log("%s: %s cut %.1f s: %d bets of shard %d acknowledged meanwhile, %d of other hosts; first after the "
               "heal %s; slowest new connection to %s %.2f s of %d; %d bets acked; answers %s; phases (s): %s"
               % (host, rep, t_heal - t_cut, len(during), shard, len(others),
                  "-" if t_ok is None else "%.2f s" % (t_ok - t_heal), prim, worst[1] if worst else -1,
                  len(conns.samples), len(acked), report.get("status_counts"), ph))
        if problems:
            self.fail("replica %s of %s cut off under load, then healed:\n  %s\nservers:\n%s\nguard log:\n%s"
                      % (rep, host, "\n  ".join(problems), fo.describe_status_safe(), log[-4000:]))
        fo.wait_settled(30)


if __name__ == "__main__":
    unittest.main()
