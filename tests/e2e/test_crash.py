"""Exactly-once settlement across an API server killed (SIGKILL) right after it
took a result: the settlement finishes by itself, without a re-post.

64 users (on many shards) bet on three matches. Each result is posted directly
to api1, api1 is killed at once (after 0, 15 and 50 ms). If the kill came
before the result was recorded (no settlement yet), the result is posted
through api2, as a client whose request failed would; otherwise nobody posts
again: api2's settler takes the job over when api1's lease runs out (or claims
it first). The settlement must be done within lease + a few seconds; a re-post
of the same result afterwards answers 202 with the finished job and changes
nothing. Then api1 is restarted. Every bet must be settled exactly once: bet
rows, at most one payout row in the ledger per bet, balances, the ledger
invariant (bcadmin check-ledger)."""

import json
import os
import signal
import socket
import sys
import time
import unittest

import stack
from checks import assert_bets_settled_once, assert_check_ledger, db_user, expected_settlement, ledger_sum
from client import Client, RequestFailed
from fixtures import admin, new_company, new_match, new_users, parallel, place_bet, wait_past_kickoff

N_USERS = 64
LEASE_S = 5  # SETTLE_LEASE_MS in api/api_settle_job.c
PICKS = ("home", "draw", "away")
ROUNDS = [  # (kill delay in ms, result)
    (0, {"home_goals": 3, "away_goals": 1}),
    (15, {"home_goals": 2, "away_goals": 2}),
    (50, {"home_goals": 0, "away_goals": 1}),
]


def log(msg):
    sys.stdout.write("    [crash] %s\n" % msg)
    sys.stdout.flush()


class TestSettlementSurvivesKill(unittest.TestCase):
    def setUp(self):
        self.s = stack.get()
        self.s.require_dir()
        if len(self.s.api_urls) < 2:
            self.skipTest("needs two API servers (BC_API_URLS has %d)" % len(self.s.api_urls))
        p = self.s.devstack_cmd("pid", "api1")
        if p.returncode != 0:
            self.skipTest("tools/devstack pid api1 failed: %s" % (p.stderr or p.stdout).strip())

    def api1_pid(self):
        p = self.s.devstack_cmd("pid", "api1")
        self.assertEqual(p.returncode, 0, "devstack pid api1: %s" % p.stderr)
        return int(p.stdout.strip())

    def post_and_kill(self, match, result, delay_ms):
        """Sends POST …/result to api1 on a raw socket and SIGKILLs api1 after delay_ms."""
        pid = self.api1_pid()
        api1 = Client(self.s.api_urls[0])
        body = json.dumps(result).encode()
        req = ("POST %s/v1/matches/%s/result HTTP/1.1\r\nHost: %s:%d\r\nAuthorization: Bearer %s\r\n"
               "Content-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
               % (api1.prefix, match["id"], api1.host, api1.port, admin().token, len(body))).encode() + body
        sock = socket.create_connection((api1.host, api1.port), timeout=10)
        try:
            sock.sendall(req)
            t0 = time.time()
            if delay_ms:
                time.sleep(delay_ms / 1000.0)
            os.kill(pid, signal.SIGKILL)
            killed_after = (time.time() - t0) * 1000
            sock.settimeout(2)
            try:
                answer = sock.recv(200)
            except OSError as e:
                answer = ("(%s)" % type(e).__name__).encode()
        finally:
            sock.close()
        # the pid really was the server at api_urls[0]
        deadline = time.time() + 5
        while True:
            try:
                api1.get("/healthz", timeout=1)
            except RequestFailed:
                break
            if time.time() > deadline:
                raise AssertionError("%s still answers after SIGKILL of `devstack pid api1` (%d): "
                                     "BC_API_URLS[0] is not api1?" % (self.s.api_urls[0], pid))
            time.sleep(0.05)
        return killed_after, answer.split(b"\r\n", 1)[0].decode("latin-1")

    def settled_count(self, match, bets):
        shards = {stack.shard_of(b["id"]) for b in bets}
        rows = self.s.sql_all_shards("SELECT COUNT(*) FROM {s}.bets WHERE match_id = %d AND status <> 'open'"
                                     % int(match["id"]), shards)
        return sum(int(r[0]) for r in rows)

    def wait_done_by_itself(self, match, result):
        """Waits for the settlement without re-posting; posts the result once
        through api2 only if api1 died before recording it. Returns (settlement,
        whether it had to be posted, seconds)."""
        api2 = Client(self.s.api_urls[1], admin().token)
        t0 = time.time()
        posted = False
        while True:
            g = api2.get("/v1/matches/%s/settlement" % match["id"])
            if g.status == 404 and not posted:
                api2.post("/v1/matches/%s/result" % match["id"], result).expect(202, msg="result through api2")
                posted = True
                continue
            if g.status == 200 and g.json.get("state") == "done":
                return g.json, posted, time.time() - t0
            if time.time() - t0 > LEASE_S + 15:
                raise AssertionError("settlement not done %d s after the kill, without a re-post: %s"
                                     % (LEASE_S + 15, g.describe()))
            time.sleep(0.2)

    def test_kill_api1_mid_settlement_finishes_by_itself(self):
        co = new_company()
        users = new_users(co, N_USERS)
        shards = {stack.shard_of(u.id) for u in users}
        hosts = {self.s.shard_map()[sh] for sh in shards}
        log("%d users on %d shards of %d hosts" % (len(users), len(shards), len(hosts)))
        matches = [new_match(kickoff_in=5, odds=(1.87, 3.45, 4.15)) for _ in ROUNDS]
        plan = [(u, m, PICKS[(i + j) % 3], 10 + i + j) for j, m in enumerate(matches) for i, u in enumerate(users)]
        bets = parallel(lambda x: (x[0], x[1], place_bet(x[0], x[1], x[2], x[3])), plan, workers=32)
        wait_past_kickoff(*matches)

        for (delay, result), m in zip(ROUNDS, matches):
            mbets = [b for _, mm, b in bets if mm is m]
            try:
                killed_after, answer = self.post_and_kill(m, result, delay)
                done_by_api1 = self.settled_count(m, mbets)
                g = Client(self.s.api_urls[1], admin().token).get("/v1/matches/%s/settlement" % m["id"])
                log("killed api1 %.1f ms after sending the result (answer: %r); settlement then: %s; "
                    "%d of %d bets settled by api1" % (killed_after, answer or "none",
                                                       g.json if g.status == 200 else g.status, done_by_api1,
                                                       len(mbets)))
                s, posted, took = self.wait_done_by_itself(m, result)
                log("done %.1f s after the kill (%s): %s"
                    % (took, "posted through api2: api1 died first" if posted else "no re-post", s))
                self.assertEqual(s["bets_settled"], len(mbets), "bets_settled: %s" % s)
                self.assertEqual(s["bets_total"], len(mbets), "bets_total: %s" % s)
                self.assertEqual(s["shards_done"], s["shards_total"], s)
                # The same result again is harmless: the job as it is.
                r = Client(self.s.api_urls[1], admin().token).post("/v1/matches/%s/result" % m["id"], result)
                self.assertEqual(r.expect_json(202, msg="same result again")["state"], "done")
            finally:
                self.s.restart_api("api1")
            assert_bets_settled_once(self, mbets, result)

        # balances: initial - stakes + payouts, in the API and in the rows; ledger invariant
        expect = {u.id: u.initial_balance for u in users}
        for u, m, b in bets:
            res = ROUNDS[matches.index(m)][1]
            expect[u.id] += expected_settlement(b, res)[1] - b["stake"]
        problems = []
        for u in users:
            bal_db, _ = db_user(u.id)
            total, _ = ledger_sum(u.id)
            if bal_db != expect[u.id]:
                problems.append("user %s: balance %d, expected %d" % (u.id, bal_db, expect[u.id]))
            if u.initial_balance + total != bal_db:
                problems.append("user %s: ledger %d + %d != balance %d" % (u.id, u.initial_balance, total, bal_db))
        if problems:
            self.fail("\n".join(problems))
        got = parallel(lambda u: u.balance(), users)
        self.assertEqual(got, [expect[u.id] for u in users], "balances through the API")
        assert_check_ledger(self)


if __name__ == "__main__":
    unittest.main()
