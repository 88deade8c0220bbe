"""A settlement's batches take a shard's open bets of the match in id order,
each after the last one's (api/api_settle_batch.c), and only a batch that
looked from the match's first bet may write the shard's guard row. A bet
whose id lies below the batches' cursor (ids follow the clocks of the
servers that made them) is still settled.

One shard gets more bets than two batches (tools/bench/fillshard). A session
of its own holds the row lock of a user of the second batch, so that batch
waits for it; once the first batch has committed, that session writes an
open bet of the match with an id below every other (its debit and ledger row
with it, as place_bet does) and commits. The settlement then ends with every
bet of the match settled, that one too, paid once, and bcadmin check-ledger
and check-standings pass."""

import os
import subprocess
import sys
import time
import unittest

import stack
from checks import assert_check_ledger
from client import Client
from fixtures import admin, new_company, new_match, wait_past_kickoff, wait_settled

BATCH = 250  # settle_batch_bets' default, API_SETTLE_BATCH_BETS in api/api_int.h
FILL_USERS = 3000
FILL_BETS = 5000  # 20 batches, more than two
STAKE = 7
ODDS = (1.95, 3.40, 4.10)
RESULT = {"home_goals": 1, "away_goals": 0}  # home wins


def log(msg):
    sys.stdout.write("    [cursor] %s\n" % msg)
    sys.stdout.flush()


class TestSettlementCursor(unittest.TestCase):
    def setUp(self):
        self.s = stack.get()
        self.s.require_dir()
        self.fillshard = os.path.join(os.path.dirname(self.s.bcadmin), "fillshard")
        if not os.access(self.fillshard, os.X_OK):
            self.skipTest("%s is not built" % self.fillshard)

    def bcadmin(self, cmd):
        p = subprocess.run([self.s.bcadmin, "-c", self.s.cluster, cmd], capture_output=True, text=True,
                           timeout=300)
        return p.returncode, (p.stdout + p.stderr).strip()

    def test_bet_below_the_cursor_is_settled(self):
        s = self.s
        co = new_company()
        m = new_match(kickoff_in=3, odds=ODDS)
        mid = int(m["id"])
        shard = sorted(s.shard_map(refresh=True))[0]
        host = s.shard_map()[shard]
        sch = "`%s`" % s.schema(shard)
        p = subprocess.run([self.fillshard, "-c", s.cluster, "--shard", str(shard), "--users", str(FILL_USERS),
                            "--bets", str(FILL_BETS), "--match", str(mid), "--company", str(co["id"])],
                           capture_output=True, text=True, timeout=600)
        self.assertEqual(p.returncode, 0, "fillshard: %s" % (p.stdout + p.stderr)[-2000:])
        rc, out = self.bcadmin("rebuild-standings")
        self.assertEqual(rc, 0, "bcadmin rebuild-standings: %s" % out[-2000:])

        # The bets in the order the batches take them; a user none of whose
        # bets is in the first batch and one of whose is in the second.
        rows = s.sql(host, "SELECT id, user_id FROM %s.bets WHERE match_id = %d ORDER BY id" % (sch, mid))
        self.assertEqual(len(rows), FILL_BETS)
        first_rank = {}
        for i, (_, u) in enumerate(rows):
            first_rank.setdefault(int(u), i)
        users = [int(u) for i, (_, u) in enumerate(rows[BATCH:2 * BATCH]) if first_rank[int(u)] >= BATCH]
        self.assertTrue(users, "no user with bets in the second batch only")
        user = users[len(users) // 2]
        # An id of the same shard, a second before the match's first bet, free.
        low = int(rows[0][0])
        below = (((low >> 23) - 1000) << 23) | (low & ((1 << 23) - 1) & ~1023)
        for t in ("bets", "users"):
            self.assertEqual(s.sql(host, "SELECT COUNT(*) FROM %s.%s WHERE id = %d" % (sch, t, below)),
                             [["0"]], "id %d is taken in %s" % (below, t))
        balance = int(s.sql(host, "SELECT balance FROM %s.users WHERE id = %d" % (sch, user))[0][0])

        wait_past_kickoff(m)
        # The writing session holds the user, then waits for a named lock
        # that another session holds until the first batch has committed. It
        # reads no bet meanwhile: a read of the second batch's bets could wait
        # for that batch, which waits for the user (a deadlock).
        gate = "bc_cursor_test_%d" % mid
        cnf = s.host_cnfs()[host]
        holder = subprocess.Popen(["mariadb", "--defaults-file=" + cnf, "-N", "-B", "--unbuffered", "-e",
                                   "SELECT CONNECTION_ID(), GET_LOCK('%s', 10); DO SLEEP(120);" % gate],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        script = (
            "START TRANSACTION; SELECT id INTO @held FROM {s}.users WHERE id = {u} FOR UPDATE; SELECT 'locked'; "
            "SELECT 'gate', GET_LOCK('{g}', 60); "
            "INSERT INTO {s}.bets (id, user_id, match_id, pick, stake, odds, placed_at, payout, settled_at) "
            "VALUES ({b}, {u}, {m}, 'home', {k}, {o}, NOW(3), 0, NOW(3)); "
            "INSERT INTO {s}.ledger (user_id, delta, reason, bet_id) VALUES ({u}, -{k}, 'bet', {b}); "
            "UPDATE {s}.users SET balance = balance - {k}, open_payout = open_payout + FLOOR({k} * {o} / 100) "
            "WHERE id = {u}; COMMIT; SELECT 'inserted';"
        ).format(s=sch, u=user, m=mid, g=gate, b=below, k=STAKE, o=int(round(ODDS[0] * 100)))
        sess = None
        try:
            held = holder.stdout.readline().split()
            self.assertEqual(held[1:], ["1"], "the gate's lock was not taken: %r" % held)
            sess = subprocess.Popen(["mariadb", "--defaults-file=" + cnf, "-N", "-B", "--unbuffered", "-e", script],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            first = sess.stdout.readline().strip()
            if first != "locked":
                sess.kill()
                self.fail("the session did not take the user's lock: %r %s" % (first, sess.stderr.read()))
            Client(s.api_urls[0], admin().token).post("/v1/matches/%d/result" % mid, RESULT).expect_json(
                202, msg="post result")
            t_post = time.time()
            settled = 0
            while time.time() - t_post < 60:
                settled = int(s.sql(host, "SELECT COUNT(*) FROM %s.bets WHERE match_id = %d AND status <> 'open'"
                                    % (sch, mid))[0][0])
                if settled >= BATCH:
                    break
                time.sleep(0.05)
            # The second batch waits for the user, so exactly the first is
            # settled: every settled id is above the bet about to be written.
            self.assertEqual(settled, BATCH, "bets settled before the bet below them was written")
            s.sql(host, "KILL %d" % int(held[0]))  # its connection ends: the gate opens
            out, err = sess.communicate(timeout=60)
        finally:
            for p in (holder, sess):
                if p is not None and p.poll() is None:
                    p.kill()
        self.assertEqual(sess.returncode, 0, "the session: %s" % err)
        lines = [l.split("\t") for l in out.split("\n") if l]
        log("user %d held; bet %d written %s; %s" % (user, below, lines, time.strftime("%H:%M:%S")))
        self.assertEqual(lines, [["gate", "1"], ["inserted"]])

        st = wait_settled(m, via=Client(s.api_urls[0], admin().token), timeout=120)
        log("settled %.1f s after the post: %s" % (time.time() - t_post, st))
        self.assertEqual((st["state"], st["shards_done"]), ("done", st["shards_total"]), st)
        pay = (STAKE * int(round(ODDS[0] * 100))) // 100
        self.assertEqual(s.sql(host, "SELECT status, payout FROM %s.bets WHERE id = %d" % (sch, below)),
                         [["won", str(pay)]], "the bet below the cursor")
        self.assertEqual(s.sql(host, "SELECT COUNT(*), COALESCE(SUM(delta), 0) FROM %s.ledger WHERE bet_id = %d "
                                     "AND reason = 'payout'" % (sch, below)), [["1", str(pay)]])
        self.assertEqual(s.sql(host, "SELECT COUNT(*) FROM %s.bets WHERE match_id = %d AND status = 'open'"
                               % (sch, mid)), [["0"]], "open bets left on shard %d" % shard)
        self.assertEqual(s.sql(host, "SELECT bets_settled FROM %s.settled_matches WHERE match_id = %d"
                               % (sch, mid)), [[str(FILL_BETS + 1)]], "the guard row's count")
        got = int(s.sql(host, "SELECT balance FROM %s.users WHERE id = %d" % (sch, user))[0][0])
        won = int(s.sql(host, "SELECT COALESCE(SUM(payout), 0) FROM %s.bets WHERE match_id = %d AND user_id = %d"
                        % (sch, mid, user))[0][0])
        self.assertEqual(got, balance - STAKE + won, "balance of user %d" % user)
        assert_check_ledger(self)
        rc, out = self.bcadmin("check-standings")
        self.assertEqual(rc, 0, "bcadmin check-standings:\n%s" % out[-3000:])


if __name__ == "__main__":
    unittest.main()
