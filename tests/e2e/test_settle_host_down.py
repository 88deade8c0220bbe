"""A settlement whose job is claimed while a host is down. Its claim counted
the match's bets on every host in one scatter, and a host that did not
answer failed the whole count: no shard settled, the job retried the count
every lease (5 s) for as long as the host stayed down. Now the hosts that
answer settle at once, the down host's shards wait for it, and the job is
done once it is back, every bet paid once.
"""

import re
import time
import unittest

import stack
from checks import assert_check_ledger
from client import Client, RequestFailed
from fixtures import admin, new_company, new_match, new_users, place_bet, wait_past_kickoff, wait_settled

SHARD_BITS, SEQ_BITS = 13, 10  # shardmap/shardmap.h: ids carry their shard


def shard_of(user_id):
    return (int(user_id) >> SEQ_BITS) & ((1 << SHARD_BITS) - 1)


class TestSettleWithAHostDown(unittest.TestCase):
    def setUp(self):
        self.s = stack.get()
        self.s.require_dir()
        with open(self.s.cluster) as f:
            text = f.read()
        self.prefix = re.search(r"^\s*schema_prefix:\s*(\S+)", text, re.M).group(1)
        self.global_host = re.search(r"^\s*global_host:\s*(\S+)", text, re.M).group(1)

    def shard_hosts(self):
        rows = self.s.sql(self.global_host, "SELECT shard, host FROM %s_global.shard_map" % self.prefix)
        return {int(r[0]): r[1] for r in rows}

    def restart(self, host):
        p = self.s.devstack_cmd("restart-host", host, timeout=180)
        self.assertEqual(p.returncode, 0, (p.stdout + p.stderr)[-2000:])

    def test_hosts_that_answer_settle_while_one_is_down(self):
        hosts = self.shard_hosts()
        down = sorted(h for h in set(hosts.values()) if h != self.global_host)[-1]
        co = new_company()
        users = new_users(co, 24)
        on_down = [u for u in users if hosts[shard_of(u.user["id"])] == down]
        others = [u for u in users if hosts[shard_of(u.user["id"])] != down]
        if not on_down or not others:
            self.skipTest("the users' shards did not fall on %s and on another host" % down)
        m = new_match(kickoff_in=3, odds=(2.0, 3.0, 4.0))
        for u in users:
            place_bet(u, m, "home", 10)
        p = self.s.devstack_cmd("kill", down)
        self.assertEqual(p.returncode, 0, p.stderr)
        t_kill = time.time()
        self.addCleanup(self.restart, down)
        wait_past_kickoff(m)
        admin().post("/v1/matches/%s/result" % m["id"], {"home_goals": 1, "away_goals": 0}).expect(202)
        # While the host is down, the others' users are paid: initial - 10 + 20.
        deadline = time.time() + 30
        paid = []
        while time.time() < deadline:
            paid = [u for u in others if u.client.get("/v1/me").expect_json(200)["balance"] == u.initial_balance + 10]
            if len(paid) == len(others):
                break
            time.sleep(0.5)
        j = admin().get("/v1/matches/%s/settlement" % m["id"]).expect_json(200)
        self.assertEqual(len(paid), len(others), "paid on the hosts that answer: %d of %d; settlement %s"
                         % (len(paid), len(others), j))
        self.assertEqual(j["state"], "running", j)
        # Each down shard's failure is logged once, then a line in 10 s per
        # host (with a count): every retry was a line (12,000 an hour).
        time.sleep(3)
        n_down = sum(1 for h in hosts.values() if h == down)
        t_down = time.time() - t_kill
        lines = []
        for name in ("api1", "api2"):
            path = "%s/%s/api.log" % (self.s.dir, name)
            with open(path, errors="replace") as f:
                lines += [ln for ln in f if "settlement %s: shard" % m["id"] in ln and " failed: " in ln]
        self.assertLessEqual(len(lines), n_down + int(t_down / 10) + 2,
                             "%d lines of failed batches in %.0f s for %d shards of %s:\n%s"
                             % (len(lines), t_down, n_down, down, "".join(lines[-5:])))
        self.restart(down)
        done = wait_settled(m, timeout=90)
        self.assertEqual(done["shards_done"], done["shards_total"], done)
        for u in on_down:
            deadline = time.time() + 10
            while True:
                try:
                    bal = u.client.get("/v1/me").expect_json(200)["balance"]
                except (AssertionError, RequestFailed):
                    bal = None
                if bal == u.initial_balance + 10 or time.time() > deadline:
                    break
                time.sleep(0.3)
            self.assertEqual(bal, u.initial_balance + 10)
        assert_check_ledger(self)


if __name__ == "__main__":
    unittest.main()
