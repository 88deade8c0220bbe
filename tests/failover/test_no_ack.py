"""A host's replica killed (SIGKILL) while loadgen bets, some of its users on
a shard of that host: with no replica to acknowledge, the primary must not
acknowledge a write that exists on it alone. Semi-sync never falls back to
asynchronous; the API's statement deadline answers 503 instead.

  - no bet of the watched shard is acknowledged from just after the kill
    until the replica is back (bets of other hosts go on);
  - when the replica is back, the watched shard's bets are acknowledged
    again within 5 s;
  - every acknowledged bet is a row of its shard on the host's primary,
    listed once; bcadmin check-ledger is clean; the primary stayed the
    primary (nothing failed over: the primary was never down).
"""

import time
import unittest

import fo
from fo import h

LOAD_USERS = 24
WATCHED_USERS = 8
LOAD_RATE = 150
DOWN_S = 4.0  # how long the replica stays dead
RECOVER_S = 5.0
GRACE_S = 0.3  # commits acknowledged as the kill lands


class TestNoAcknowledgementWithoutReplica(unittest.TestCase):
    def setUp(self):
        self.addCleanup(fo.recover)

    def test_replica_killed_writes_wait(self):
        fo.wait_settled(30)
        host = sorted(set(h.shard_map().values()) - {h.global_host()})[0]
        prim = h.primary_of(host)
        rep = fo.replica_of(host)
        shard = h.pick_shards(1, on_host=host)[0]
        co, match = h.new_company(), h.new_match()
        lg = h.Loadgen(co, match["id"], LOAD_USERS, rate=LOAD_RATE, mix="bet=100",
                       watch_shard=shard, shard_users=(shard, WATCHED_USERS))
        lg.wait_loading()
        time.sleep(2)
        watch = fo.AckedWatch(lg)
        self.addCleanup(watch.stop)
        log_at = fo.guard_log_size()
        t_kill = fo.kill9(rep)
        fo.log("%s: killed replica %s of primary %s; shard %d watched" % (host, rep, prim, shard))
        time.sleep(DOWN_S)
        t_back = time.time()
        fo.restart(rep)
        t_restarted = time.time()
        time.sleep(RECOVER_S + 1)
        report = lg.stop()
        watch.stop()

        problems = []

        def check(ok, msg):
            if not ok:
                problems.append(msg)

        on_shard = lambda b: h.stack.shard_of(b) == shard  # noqa: E731
        during = [b for when, b in watch.seen if t_kill + GRACE_S < when < t_back and on_shard(b)]
        check(not during, "%d bets of shard %d acknowledged while %s, its host's only replica, was dead: %s"
              % (len(during), shard, rep, during[:5]))
        where = h.shard_map()
        others = [b for when, b in watch.seen if t_kill + GRACE_S < when < t_back and
                  where[h.stack.shard_of(b)] != host]
        check(others, "no bet of another host was acknowledged while %s was dead" % rep)
        t_ok = watch.first_after(t_back, on_shard)
        check(t_ok is not None and t_ok - t_restarted <= RECOVER_S,
              "shard %d's first acknowledged bet after %s was back came %s"
              % (shard, rep, "never" if t_ok is None else "%.2f s after its restart" % (t_ok - t_restarted)))
        st = report.get("status_counts") or {}
        check(int(st.get("503", 0)) > 0, "no 503 while the replica was dead: %s" % st)
        acked = [b for b, _, _ in lg.acked()]
        problems += h.check_acked(acked)
        rc, out = h.check_ledger()
        check(rc == 0, "bcadmin check-ledger: exit %d\n%s" % (rc, h.tail(out)))
        check(h.primary_of(host) == prim, "%s failed over (primary %s), but its primary never died"
              % (host, h.primary_of(host)))
        fo.log("%s: %s dead %.1f s: %d bets of shard %d acknowledged meanwhile, %d of other hosts; first after "
               "its restart %s; answers %s"
               % (host, rep, t_back - t_kill, len(during), shard, len(others),
                  "-" if t_ok is None else "%.2f s" % (t_ok - t_restarted), st))
        if problems:
            self.fail("replica %s of %s killed under load:\n  %s\nservers:\n%s\nguard log:\n%s"
                      % (rep, host, "\n  ".join(problems), fo.describe_status_safe(),
                         fo.guard_log_since(log_at)[-4000:]))
        fo.wait_settled(30)


if __name__ == "__main__":
    unittest.main()
