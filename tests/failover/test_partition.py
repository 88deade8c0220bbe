"""A host's primary cut off from everyone (tools/devstack partition: the
stack runs each MariaDB server in a network namespace of its own,
BC_NETNS=1) while loadgen bets, some of its users on a shard of that host.
A dead process refuses connections at once; an unreachable server answers
nothing, so the guard and the API servers learn of it only from their
deadlines. Then the link comes back.

  - the watched shard's bets are acknowledged again within 5 s of the cut;
  - every acknowledged bet is a row of its shard on the host's new primary,
    listed once; bcadmin check-ledger is clean;
  - the catalog names the replica primary, the old primary 'fenced';
  - the old primary wrote nothing after the flip: its own GTIDs (its
    server_id in the host's domain), read from its binlog files while it is
    still cut off and again after it is back, are the same;
  - once healed it is read-only at once and becomes 'replica' (replicating)
    or 'rebuild' (with a note) within 15 s; no bet row it holds that the new
    primary lacks was acknowledged to a client.
"""

import time
import unittest

import fo
from fo import h

LOAD_USERS = 24
WATCHED_USERS = 8
LOAD_RATE = 150
RECOVER_S = 5.0
LOAD_AFTER_CUT_S = 6.0
REJOIN_S = 15.0
FLIP_WAIT_S = 15


class TestPartition(unittest.TestCase):
    def setUp(self):
        self.addCleanup(fo.recover)

    def test_partition_primary_of_a_shard_host(self):
        if not fo.netns():
            self.skipTest("the stack was made without BC_NETNS=1 (needs root and ip netns)")
        ph = fo.Phases()
        fo.wait_settled(30)
        host = sorted(set(h.shard_map().values()) - {h.global_host()})[-1]
        old = h.primary_of(host)
        new = fo.replica_of(host)
        domain, old_sid = fo.server_ids(old)
        own = (domain, old_sid)
        shard = h.pick_shards(1, on_host=host)[0]
        co, match = h.new_company(), h.new_match()
        lg = h.Loadgen(co, match["id"], LOAD_USERS, rate=LOAD_RATE, mix="bet=70,me=30",
                       watch_shard=shard, shard_users=(shard, WATCHED_USERS))
        lg.wait_loading()
        ph("setup")
        time.sleep(2)
        watch = fo.AckedWatch(lg)
        self.addCleanup(watch.stop)
        log_at = fo.guard_log_size()
        t_cut, heal = fo.partition(self, old)
        fo.log("%s: cut off primary %s (replica %s); shard %d watched" % (host, old, new, shard))

        t_flip = None
        while time.time() < t_cut + FLIP_WAIT_S and t_flip is None:
            try:
                if h.primary_of(host, timeout=0) != old:
                    t_flip = time.time()
            except AssertionError:
                pass
            time.sleep(0.1)
        if t_flip is None:
            lg.stop()
            self.fail("%s: no new primary of %s %d s after %s was cut off:\nservers:\n%s\nguard log:\n%s"
                      % (host, host, FLIP_WAIT_S, old, fo.describe_status_safe(),
                         fo.guard_log_since(log_at)[-4000:]))
        # What the cut-off server has written, from its binlog files (it runs,
        # unreachable): nothing may be added to it from now on.
        at_flip = fo.binlog_gtids_offline(old)
        time.sleep(max(0.0, t_cut + LOAD_AFTER_CUT_S - time.time()))
        report = lg.stop()
        watch.stop()
        ph("load")

        problems = []

        def check(ok, msg):
            if not ok:
                problems.append(msg)

        roles = h.catalog_servers()
        more, recover, _, ws = fo.failover_problems(roles, old, new, watch, report, t_cut, shard, "cut",
                                                    RECOVER_S)
        problems += more
        acked = [b for b, _, _ in lg.acked()]
        problems += h.check_acked(acked)
        rc, out = h.check_ledger()
        check(rc == 0, "bcadmin check-ledger after the failover: exit %d\n%s" % (rc, h.tail(out)))
        ph("checks")

        # The link comes back: read-only at once, then a replica or 'rebuild'.
        heal()
        t_heal = time.time()
        final, states = None, []
        while time.time() < t_heal + REJOIN_S:
            s = fo.status().get(old)
            states.append(s)
            if s and s["up"] and s["role"] in ("replica", "rebuild") and not s["writable"] and \
                    (s["role"] == "rebuild" or s["replicating"]):
                final = s
                break
            time.sleep(0.25)
        ph("rejoin")
        check(final is not None, "%s did not become a replicating replica nor 'rebuild' within %.0f s of the "
              "heal: last status %s" % (old, REJOIN_S, states[-1] if states else None))
        now_own = fo.gtid_state(old).get(own, 0)
        check(now_own == at_flip.get(own, 0),
              "%s wrote after the flip: its own GTIDs in domain %d end at %d now, at %d while it was cut off"
              % (old, domain, now_own, at_flip.get(own, 0)))
        # Rows only the old primary has (its writes in flight at the cut,
        # never acknowledged) must not be acknowledged bets.
        schema = h.schema(shard)
        only_old = set(int(r[0]) for r in h.sql_server(old, "SELECT id FROM `%s`.bets" % schema)) - \
            set(int(r[0]) for r in h.sql_server(new, "SELECT id FROM `%s`.bets" % schema))
        check(not (only_old & set(acked)),
              "acknowledged bets that only %s holds: %s" % (old, sorted(only_old & set(acked))[:10]))
        fo.log("%s: cut %s, flip seen %.2f s after; shard %d bets back after %s s (max_gap_ms %s); %d bets acked; "
               "%s %s after the heal, %d bet rows only on it; phases (s): %s"
               % (host, old, t_flip - t_cut, shard, "%.2f" % recover if recover is not None else "-",
                  ws.get("max_gap_ms"), len(acked), old, final and final["role"], len(only_old), ph))
        if problems:
            self.fail("partition of %s (primary of %s) under load:\n  %s\nservers:\n%s\nguard log:\n%s"
                      % (old, host, "\n  ".join(problems), fo.describe_status_safe(),
                         fo.guard_log_since(log_at)[-4000:]))
        if final["role"] == "rebuild":
            fo.rebuild(old)
        fo.wait_settled(30)


if __name__ == "__main__":
    unittest.main()
