"""SIGKILL of a host's primary while loadgen bets, some of its users on a
shard of that host (--watch-shard); the guard promotes the replica. Here a
host that is not the global one; test_kill_global.py does the global host
with the same function and more checks.

  - the watched shard's bets are acknowledged again within 5 s of the kill
    (first acknowledged bet after it; loadgen's max_gap_ms says the same);
  - every acknowledged bet is a row of its shard on the host's new primary,
    listed once; the loadgen users' bets on the watched shard are exactly
    the acknowledged ones (plus at most the answers lost or failed);
    bcadmin check-ledger is clean;
  - the catalog names the replica primary, the old primary 'fenced';
  - the old primary, started again (devstack restart-host), is read-only
    and becomes 'replica' (replicating) or 'rebuild' (with a note) within
    10 s; it wrote nothing after the flip: its own GTIDs (its server_id in
    the host's domain) end where its binlog ended when it died, and a
    'replica' has nothing the new primary lacks (else it must be 'rebuild').
The stack is left settled (every host a writable primary and a healthy
replica); the old primary stays a replica (no switch back).
"""

import time
import unittest

import fo
from fo import h

LOAD_USERS = 24
WATCHED_USERS = 8
LOAD_RATE = 150  # requests/s in total (2 cores run the stack, two servers per host)
RECOVER_S = 5.0  # the watched shard's bets succeed again within this after the kill
LOAD_AFTER_KILL_S = 5.0
REJOIN_S = 10.0  # the old primary is a replica (or marked for rebuild) this long after its restart
FLIP_WAIT_S = 15  # the test gives up waiting for a failover after this


def try_global_write(url):
    """Whether one API server, asked directly, creates a match now."""
    body = {"home": "FO " + h.fixtures.uniq("h"), "away": "FO " + h.fixtures.uniq("a"), "stage": "FO",
            "kickoff": h.fixtures.rfc3339(time.time() + 86400), "odds": {"home": 2.0, "draw": 3.0, "away": 4.0}}
    try:
        return h.fixtures.admin().at(url).post("/v1/matches", body, timeout=3).status == 201
    except h.RequestFailed:
        return False


def kill_primary_under_load(tc, host, global_check=False):
    ph = fo.Phases()
    fo.wait_settled(30)
    old = h.primary_of(host)
    new = fo.replica_of(host)
    domain, old_sid = fo.server_ids(old)
    shard = h.pick_shards(1, on_host=host)[0]
    co, match = h.new_company(), h.new_match()
    lg = h.Loadgen(co, match["id"], LOAD_USERS, rate=LOAD_RATE, mix="bet=70,me=30",
                   watch_shard=shard, shard_users=(shard, WATCHED_USERS))
    lg.wait_loading()
    ph("setup")
    time.sleep(2)  # a baseline before the kill
    watch = fo.AckedWatch(lg)
    tc.addCleanup(watch.stop)
    log_at = fo.guard_log_size()
    t_kill = fo.kill9(old)
    fo.log("%s: killed primary %s (replica %s); shard %d watched" % (host, old, new, shard))

    # Until the catalog (on the global group's writable server) names the
    # new primary and, for the global host, each API server on its own (not
    # through HAProxy) writes the global schema again: it found the new
    # global primary itself.
    t_flip, api_ok = None, {}
    pending = list(h.stack.get().api_urls) if global_check else []
    while time.time() < t_kill + FLIP_WAIT_S and (t_flip is None or pending):
        if t_flip is None:
            try:
                if h.primary_of(host, timeout=0) != old:
                    t_flip = time.time()
            except AssertionError:
                pass  # no writable global server yet
        for url in list(pending):
            if try_global_write(url):
                api_ok[url] = time.time() - t_kill
                pending.remove(url)
        time.sleep(0.1)
    if t_flip is None:
        lg.stop()
        tc.fail("%s: the catalog does not name a new primary of %s %d s after %s was killed:\nservers:\n%s\n"
                "guard log:\n%s" % (host, host, FLIP_WAIT_S, old, fo.describe_status_safe(),
                                    fo.guard_log_since(log_at)[-4000:]))
    time.sleep(max(0.0, t_kill + LOAD_AFTER_KILL_S - time.time()))
    ph("load")
    report = lg.stop()
    watch.stop()
    roles = h.catalog_servers()
    # What the dead server had written, read from its binlog files before it
    # starts again.
    dead_gtids = fo.binlog_gtids_offline(old)

    problems = []

    def check(ok, msg):
        if not ok:
            problems.append(msg)

    on_shard = lambda b: h.stack.shard_of(b) == shard  # noqa: E731
    more, recover, t_back, ws = fo.failover_problems(roles, old, new, watch, report, t_kill, shard, "kill",
                                                     RECOVER_S)
    problems += more

    acked = [b for b, _, _ in lg.acked()]
    watched = [b for b in acked if on_shard(b)]
    check(len(watched) > 0 and len(watch.after(t_back or time.time(), on_shard)) > 0,
          "no acknowledged bet on shard %d after the failover (%d in all)" % (shard, len(watched)))
    ph("stop")
    problems += h.check_acked(acked)
    ph("acked")
    where = "user_id IN (SELECT id FROM `%s`.users WHERE company_id = %d)" % (h.schema(shard), int(co["id"]))
    n_rows = h.count(host, shard, "bets", where)
    slack = int((report.get("bets") or {}).get("unknown") or 0) + int(ws.get("errors") or 0)
    check(len(watched) <= n_rows <= len(watched) + slack,
          "bets of loadgen's users in shard %d on %s's new primary: %d rows, %d acknowledged, "
          "%d answers lost or failed" % (shard, host, n_rows, len(watched), slack))
    rc, out = h.check_ledger()
    ph("ledger")
    check(rc == 0, "bcadmin check-ledger after the failover: exit %d\n%s" % (rc, h.tail(out)))
    if global_check:
        for url in h.stack.get().api_urls:
            t = api_ok.get(url)
            check(t is not None and t <= RECOVER_S,
                  "API server %s created a match (global schema) %s after the kill, want <= %.1f s"
                  % (url, "never (15 s)" if t is None else "%.2f s" % t, RECOVER_S))

    # The old primary comes back: read-only at once, then a replica (or
    # marked for rebuild), never taking a write of its own.
    t_restart = time.time()
    fo.restart(old)
    fo.log("%s: %s restarted (took %.1f s)" % (host, old, time.time() - t_restart))
    t_restarted = time.time()
    ph("restart")
    final, states = None, []
    while time.time() < t_restarted + REJOIN_S:
        s = fo.status().get(old)
        states.append(s)
        if s and s["up"] and s["writable"]:
            check(False, "%s is writable after its restart: %s" % (old, s))
            break
        if s and s["role"] == "replica" and s["up"] and s["replicating"]:
            final = s
            break
        if s and s["role"] == "rebuild" and s["note"]:
            final = s
            break
        time.sleep(0.25)
    rejoin_s = time.time() - t_restarted
    ph("rejoin")
    check(final is not None, "%s did not become a replicating replica nor 'rebuild' within %.0f s of its restart: "
          "last status %s" % (old, REJOIN_S, states[-1] if states else None))

    own = (domain, old_sid)
    old_now, new_now = fo.gtid_state(old), fo.gtid_state(new)
    check(old_now.get(own, 0) == dead_gtids.get(own, 0),
          "%s wrote after its kill: its own GTIDs in domain %d end at %d, its binlog ended at %d when it died"
          % (old, domain, old_now.get(own, 0), dead_gtids.get(own, 0)))
    if final is not None and final["role"] == "replica":
        check(new_now.get(own, 0) >= dead_gtids.get(own, 0),
              "%s rejoined as a replica holding transactions %s lacks: %d-%d-%d on it, %s has %d-%d-%d "
              "(it should be 'rebuild')" % (old, new, domain, old_sid, dead_gtids.get(own, 0), new, domain,
                                            old_sid, new_now.get(own, 0)))
    fo.log("%s: failover flip seen %.2f s after the kill; shard %d bets back after %s s (max_gap_ms %s); "
           "%d bets acked (%d on shard %d); %s %s %.1f s after its restart; API servers: %s; phases (s): %s"
           % (host, (t_flip or t_kill) - t_kill, shard, "%.2f" % recover if recover is not None else "-",
              ws.get("max_gap_ms"), len(acked), len(watched), shard, old, final and final["role"], rejoin_s,
              {u: round(t, 2) for u, t in api_ok.items()} or "-", ph))
    if problems:
        tc.fail("kill -9 of %s (primary of %s) under load:\n  %s\nservers:\n%s\nguard log:\n%s"
                % (old, host, "\n  ".join(problems), fo.describe_status_safe(),
                   fo.guard_log_since(log_at)[-4000:]))
    if final["role"] == "rebuild":
        fo.rebuild(old)
    fo.wait_settled(30)


class TestKillPrimary(unittest.TestCase):
    def setUp(self):
        self.addCleanup(fo.recover)

    def test_kill_primary_of_a_shard_host(self):
        hosts = sorted(set(h.shard_map().values()) - {h.global_host()})
        kill_primary_under_load(self, hosts[0])


if __name__ == "__main__":
    unittest.main()
