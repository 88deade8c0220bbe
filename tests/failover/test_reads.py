"""Reads that may be slightly stale (GET /v1/me/bets) on a host's replica:

- read-your-writes: a user places a bet and reads his bets 20 times at
  once: the bet is in every answer, and none of those reads went to the
  replica (a user who wrote in the last ~3 s reads the primary); again with
  the replica's applier stopped just before the bet (the replica does not
  have it, and its lag is still under the bound for a moment);
- a stopped applier (STOP SLAVE SQL_THREAD on the replica): once its lag
  passed max_lag_ms and the user's read-your-writes window ended, his reads
  go to the primary: they see a bet placed after the stop, the replica's
  query counter in /metrics grows by no more than the router's lag probes
  while the primary's grows by one a read, and the router's lag gauge
  shows the lag; the primary still waits for the replica's acknowledgements
  (semi-sync stays on: the replica still receives). The applier is started
  again at the end, also on failure, and the replica catches up.

The users are on a host that is not the global one (its replica serves no
background reads of the API servers) and every read is sent to one API
server directly, whose /metrics is compared before and after.
"""

import time
import unittest

import fo
from fo import h

RYW_READS = 20
RYW_WINDOW_S = fo.MAX_LAG_MS / 1000.0 + 2  # the read-your-writes flag's life
LAG_TTL_S = 0.2  # the router measures a replica's lag at most this often (ROUTER_LAG_TTL_MS)


def user_off_global(company):
    """A new user whose shard is on a host other than the global one."""
    for _ in range(30):
        u = h.fixtures.signup(company)
        host = h.shard_map()[h.stack.shard_of(u.id)]
        if host != h.global_host():
            return u, host
    raise AssertionError("30 new users, all on the global host")


def bet(client, match):
    return int(client.post("/v1/bets", {"match_id": match["id"], "pick": "home", "stake": 1})
               .expect_json(201, msg="place a bet")["id"])


def read_bets(client, n):
    """n reads of GET /v1/me/bets: [(set of bet ids)], seconds taken."""
    t0 = time.time()
    out = [{int(b["id"]) for b in client.get("/v1/me/bets").expect_json(200, msg="GET /v1/me/bets")["items"]}
           for _ in range(n)]
    return out, time.time() - t0


def counters(url, host, replica):
    m = fo.metrics(url)
    return fo.db_queries(m, host), fo.replica_queries(m, host, replica), fo.replica_lag(m, host, replica)


def replica_has(replica, shard, bet_id):
    return bool(h.sql_server(replica, "SELECT 1 FROM `%s`.bets WHERE id = %d" % (h.schema(shard), bet_id)))


class ReadsBase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        fo.wait_settled(30)
        cls.co, cls.match = h.new_company(), h.new_match()
        cls.url = h.stack.get().api_urls[0]

    def new_user(self):
        u, host = user_off_global(self.co)
        rep = fo.replica_of(host)
        return u, u.client.at(self.url), host, rep

    def stop_applier(self, replica):
        h.sql_server(replica, "STOP SLAVE SQL_THREAD")
        self.addCleanup(self.start_applier, replica)

    def start_applier(self, replica):
        h.sql_server(replica, "START SLAVE SQL_THREAD")
        fo.wait_settled(30)  # caught up: lag under the bound again


class TestReadYourWrites(ReadsBase):
    def check_reads(self, client, host, replica, bet_id, what):
        p0, r0, _ = counters(self.url, host, replica)
        seen, secs = read_bets(client, RYW_READS)
        p1, r1, _ = counters(self.url, host, replica)
        missing = [i for i, s in enumerate(seen) if bet_id not in s]
        self.assertEqual(missing, [], "%s: bet %d missing from reads %s of %d right after it was placed"
                         % (what, bet_id, missing, RYW_READS))
        self.assertEqual(r1 - r0, 0, "%s: %d statements on replica %s during %d reads right after a bet "
                         "(%.2f s): read-your-writes should send them to the primary"
                         % (what, r1 - r0, replica, RYW_READS, secs))
        self.assertGreaterEqual(p1 - p0, RYW_READS, "%s: statements on %s's primary during %d reads"
                                % (what, host, RYW_READS))
        return secs

    def test_bet_then_20_reads(self):
        u, c, host, rep = self.new_user()
        time.sleep(RYW_WINDOW_S + 0.5)  # the signup's window, if it opened one, is over
        # Reads go to the replica before the bet: the check below can fail.
        r0 = counters(self.url, host, rep)[1]
        read_bets(c, 3)
        self.assertGreater(counters(self.url, host, rep)[1], r0,
                           "a user who did not write lately does not read from replica %s" % rep)
        b = bet(c, self.match)
        secs = self.check_reads(c, host, rep, b, "healthy replica")
        fo.log("read-your-writes: %d reads in %.2f s on %s's primary, bet %d in each" % (RYW_READS, secs, host, b))

    def test_bet_then_20_reads_replica_behind(self):
        u, c, host, rep = self.new_user()
        shard = h.stack.shard_of(u.id)
        self.stop_applier(rep)
        b = bet(c, self.match)
        secs = self.check_reads(c, host, rep, b, "replica's applier stopped")
        self.assertFalse(replica_has(rep, shard, b), "bet %d is on %s with its applier stopped" % (b, rep))
        fo.log("read-your-writes, applier stopped: %d reads in %.2f s, bet %d on the primary only"
               % (RYW_READS, secs, b))


class TestApplierStopped(ReadsBase):
    def test_reads_move_to_the_primary(self):
        u, c, host, rep = self.new_user()
        shard = h.stack.shard_of(u.id)
        prim = h.primary_of(host)
        b0 = bet(c, self.match)
        time.sleep(RYW_WINDOW_S + 0.5)
        p0, r0, _ = counters(self.url, host, rep)
        seen, _ = read_bets(c, 3)
        p1, r1, lag = counters(self.url, host, rep)
        self.assertGreater(r1 - r0, 0, "before the stop, %s's reads do not go to replica %s" % (host, rep))
        self.assertIn(b0, seen[-1])

        self.stop_applier(rep)
        t_stop = time.time()
        b1 = bet(c, self.match)
        # Past the lag bound (the heartbeat on the replica stops with its
        # applier) and past the user's read-your-writes window.
        time.sleep(max(0.0, t_stop + RYW_WINDOW_S + 0.5 - time.time()))
        self.assertFalse(replica_has(rep, shard, b1), "bet %d is on %s with its applier stopped" % (b1, rep))
        p0, r0, _ = counters(self.url, host, rep)
        seen, secs = read_bets(c, 10)
        p1, r1, lag = counters(self.url, host, rep)
        self.assertEqual([i for i, s in enumerate(seen) if b1 not in s or b0 not in s], [],
                         "bets %d and %d not in every read with %s's applier stopped: %s" % (b0, b1, rep, seen))
        probes = 1 + int(secs / LAG_TTL_S) + 1
        self.assertLessEqual(r1 - r0, probes,
                             "replica %s (applier stopped %.1f s) got %d statements during 10 reads in %.2f s: "
                             "more than the router's lag probes (%d)" % (rep, time.time() - t_stop, r1 - r0, secs,
                                                                         probes))
        self.assertGreaterEqual(p1 - p0, 10, "statements on %s's primary %s during 10 reads" % (host, prim))
        self.assertTrue(lag is not None and lag > fo.MAX_LAG_MS,
                        "the router's lag of %s: %s ms, want > %d" % (rep, lag, fo.MAX_LAG_MS))
        semi = h.sql_server(prim, "SELECT @@global.rpl_semi_sync_master_enabled")[0][0]
        self.assertEqual(semi, "1", "semi-sync waiting on primary %s with its replica's applier stopped "
                         "(the replica still receives: writes must still wait for it)" % prim)
        fo.log("applier of %s stopped: 10 reads on %s in %.2f s (replica got %d statements: lag probes), "
               "router lag %s ms" % (rep, prim, secs, r1 - r0, lag))


if __name__ == "__main__":
    unittest.main()
