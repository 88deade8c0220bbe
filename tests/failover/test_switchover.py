"""`shardctl switchover HOST` while loadgen bets and reads through HAProxy,
some of its users on a shard of HOST: here a host that is not the global
one; test_switchover_global.py does the global host (db1, the catalog's)
with the same function, last in the suite.

Clients see none of it: no error answer (no 5xx, no transport error, no
unknown outcome), every acknowledged bet is a row of its shard on the host's
new primary, listed once, the slowest acknowledged bet of the watched shard
is bounded, and the ledger holds. The switchover exits 0, prints its write
pause ("writes paused N ms", recorded and bounded), and leaves the catalog
with the roles swapped: the old replica primary and writable, the old
primary a read-only replica that replicates from it. The stack is left
settled (no switch back).
"""

import re
import time
import unittest

import fo
from fo import h

LOAD_USERS = 24
LOAD_RATE = 150
MAX_PAUSE_MS = 2500  # the switchover waits 2 s at most for the replica, then gives up
MAX_BET_MS = 3000  # the slowest acknowledged bet of the switched host's watched shard


def switchover_under_load(tc, host):
    fo.wait_settled(30)
    old, new = h.primary_of(host), fo.replica_of(host)
    shard = h.pick_shards(1, on_host=host)[0]
    co, match = h.new_company(), h.new_match()
    lg = h.Loadgen(co, match["id"], LOAD_USERS, rate=LOAD_RATE, mix="bet=60,odds=20,me=20",
                   watch_shard=shard, shard_users=(shard, 8))
    lg.wait_loading()
    time.sleep(2)
    r = h.shardctl("switchover", host, timeout=60)
    time.sleep(2)  # load on the new primary
    report = lg.stop()
    m = re.search(r"writes paused (\d+) ms", r.out)
    tc.assertTrue(r.rc == 0 and m, "shardctl switchover %s under load:\n%s\nguard log:\n%s"
                  % (host, r.describe(), fo.guard_log_tail()))
    pause = int(m.group(1))

    problems = []
    roles = h.catalog_servers()
    if (roles[new][1], roles[old][1]) != ("primary", "replica"):
        problems.append("catalog roles after switchover %s: %s %s, %s %s, want primary and replica"
                        % (host, new, roles[new], old, roles[old]))
    n_err, what = h.loadgen_errors(report)
    if n_err:
        problems.append("loadgen errors during the switchover: %s" % what)
    acked = [b for b, _, _ in lg.acked()]
    watched = [b for b in acked if h.stack.shard_of(b) == shard]
    if not watched:
        problems.append("no acknowledged bet on shard %d of %s" % (shard, host))
    problems += h.check_acked(acked)
    rc, out = h.check_ledger()
    if rc != 0:
        problems.append("bcadmin check-ledger: exit %d\n%s" % (rc, h.tail(out)))
    if pause > MAX_PAUSE_MS:
        problems.append("switchover %s paused writes %d ms, want <= %d" % (host, pause, MAX_PAUSE_MS))
    w = (h.watch_section(report) or {}).get("watched") or {}
    if (w.get("max_ms") or 0) > MAX_BET_MS:
        problems.append("slowest acknowledged bet of shard %d: %s ms, want <= %d" % (shard, w.get("max_ms"),
                                                                                    MAX_BET_MS))
    fo.log("switchover %s: %s -> %s, writes paused %d ms (command %.1f s); %d bets acked (%d on shard %d, "
           "slowest %s ms, longest gap %s ms); answers %s"
           % (host, old, new, pause, r.seconds, len(acked), len(watched), shard, w.get("max_ms"),
              w.get("max_gap_ms"), report.get("status_counts")))
    if problems:
        tc.fail("switchover %s under load:\n  %s" % (host, "\n  ".join(problems)))
    st = fo.wait_settled(30)
    tc.assertTrue(st[new]["role"] == "primary" and st[new]["writable"] and st[old]["role"] == "replica"
                  and st[old]["replicating"] and not st[old]["writable"],
                  "after switchover %s: %s %s, %s %s" % (host, new, st[new], old, st[old]))


class TestSwitchoverUnderLoad(unittest.TestCase):
    def setUp(self):
        self.addCleanup(fo.recover)

    def test_switchover_shard_host_under_load(self):
        switchover_under_load(self, sorted(set(h.shard_map().values()) - {h.global_host()})[-1])


if __name__ == "__main__":
    unittest.main()
