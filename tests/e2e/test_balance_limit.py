"""The balance limit (docs/api.md, "Bets"): a bet is refused with 422
balance_limit when the user's balance plus what his open bets can pay would
pass 10^12 Betcoins, so that no settlement's credit can leave 64 bits; the
open payouts are counted in users.open_payout, which place_bet adds to and
the settlement takes off; `bcadmin check-ledger` checks that column against
the open bets, and `bcadmin recount-open-payouts` makes it again."""

import subprocess
import unittest

import stack
from checks import assert_check_ledger, assert_ledger_ok
import time

from fixtures import new_company, new_match, new_team, place_bet, settle, signup, wait_past_kickoff

LIMIT = 10 ** 12


def set_balance(user, balance):
    """The user's balance and initial balance (the ledger still adds up), straight in his row."""
    stack.get().sql_shard(stack.shard_of(user.id), "UPDATE {s}.users SET balance = %d, initial_balance = %d "
                          "WHERE id = %d" % (balance, balance, int(user.id)))
    user.initial_balance = balance


def open_payout(user):
    rows = stack.get().sql_shard(stack.shard_of(user.id),
                                 "SELECT open_payout FROM {s}.users WHERE id = %d" % int(user.id))
    return int(rows[0][0])


def bcadmin(*args):
    s = stack.get()
    p = subprocess.run([s.bcadmin, "-c", s.cluster] + list(args), capture_output=True, text=True, timeout=300)
    return p.returncode, (p.stdout + p.stderr).strip()


class TestBalanceLimit(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.co = new_company()

    def bet(self, user, match, pick, stake):
        return user.client.post("/v1/bets", {"match_id": match["id"], "pick": pick, "stake": stake})

    def test_bets_past_the_limit_are_refused_and_the_rest_settles(self):
        u = signup(self.co)
        base = LIMIT - 1000
        set_balance(u, base)
        m = new_match(kickoff_in=4, odds=(1.85, 3.30, 4.00))
        # 1000 at 1.85 can pay 1850: base - 1000 + 1850 = LIMIT - 150.
        place_bet(u, m, "home", 1000)
        self.assertEqual(open_payout(u), 1850, "place_bet counts what the bet can pay")
        # Another such bet could take the balance to LIMIT + 700.
        r = self.bet(u, m, "home", 1000).expect(422, "balance_limit")
        self.assertIn("1000000000000", r.error_message or "", r.describe())
        # A stake above the balance is still that error, whatever the limit.
        self.bet(u, m, "home", base).expect(422, "insufficient_balance")
        self.assertEqual(u.balance(), base - 1000, "refused bets debit nothing")
        self.assertEqual(open_payout(u), 1850, "refused bets count nothing")
        # 1 at 3.30 can pay 3: LIMIT - 147, within the limit.
        place_bet(u, m, "draw", 1)
        self.assertEqual(open_payout(u), 1853)
        wait_past_kickoff(m)
        settle(m, {"home_goals": 2, "away_goals": 1})
        self.assertEqual(u.balance(), base - 1001 + 1850, "the winning bet paid, the balance within the limit")
        self.assertEqual(open_payout(u), 0, "the settlement takes the bets' open payouts off")
        assert_ledger_ok(self, u)
        assert_check_ledger(self)
        # After the settlement the room is what the balance leaves: LIMIT - 151.
        m2 = new_match(odds=(1.85, 3.30, 4.00))
        self.bet(u, m2, "home", 200).expect(422, "balance_limit")  # LIMIT + 19
        place_bet(u, m2, "home", 100)  # LIMIT - 66
        self.assertEqual(open_payout(u), 185)

    def test_a_cancelled_match_takes_its_open_payouts_off(self):
        u = signup(self.co)
        m = new_match(kickoff_in=3, odds=(2.50, 3.20, 2.80))
        place_bet(u, m, "away", 40)  # can pay 112
        place_bet(u, m, "home", 10)  # can pay 25
        self.assertEqual(open_payout(u), 137)
        wait_past_kickoff(m)
        settle(m, {"cancelled": True})
        self.assertEqual(open_payout(u), 0)
        self.assertEqual(u.balance(), u.initial_balance, "both stakes paid back")
        assert_check_ledger(self)

    def test_averages_keep_their_decimals_at_the_limit(self):
        # Points up to 10^12 make averages of 12-13 digits and two decimals:
        # the standings show them all (10 significant digits gave "1e+11").
        co = new_company()
        team = new_team(co)
        rich, poor = signup(co, team_id=team["id"]), signup(co, team_id=team["id"])
        set_balance(rich, 3 * 10 ** 11)
        m = new_match(kickoff_in=4, odds=(3.00, 3.30, 4.00))
        place_bet(rich, m, "home", 10 ** 11)  # pays 3 * 10^11: points + 2 * 10^11
        place_bet(poor, m, "away", 1)  # lost: points - 1
        reader = poor.client
        before = reader.get("/v1/standings/companies").expect_json(200)["generation"]
        wait_past_kickoff(m)
        settle(m, {"home_goals": 1, "away_goals": 0})
        deadline = time.time() + 30
        while reader.get("/v1/standings/companies").expect_json(200)["generation"] <= before:
            self.assertLess(time.time(), deadline, "standings not recomputed 30 s after the settlement")
            time.sleep(0.2)
        want = 99999999999.5  # (2 * 10^11 - 1) / 2
        r = reader.get("/v1/standings/teams?company=%s" % co["id"])
        mine = [t for t in r.expect_json(200)["items"] if t["team_id"] == team["id"]]
        self.assertEqual(len(mine), 1, r.describe())
        self.assertEqual((mine[0]["points"], mine[0]["average"]), (2 * 10 ** 11 - 1, want), mine[0])
        self.assertIn('"average":99999999999.5', r.text, "the average as the server wrote it")
        r = reader.get("/v1/standings/companies")
        mine = [c for c in r.expect_json(200)["items"] if c["company_id"] == co["id"]]
        self.assertEqual(len(mine), 1, "the company is first by its average")
        self.assertEqual(mine[0]["average"], want, mine[0])

    def test_check_ledger_finds_a_wrong_open_payout_and_recount_mends_it(self):
        u = signup(self.co)
        m = new_match(odds=(2.50, 3.20, 2.80))
        place_bet(u, m, "home", 30)  # can pay 75
        stack.get().sql_shard(stack.shard_of(u.id),
                              "UPDATE {s}.users SET open_payout = 7 WHERE id = %d" % int(u.id))
        rc, out = bcadmin("check-ledger")
        self.assertEqual(rc, 1, out)
        self.assertIn("user %s: open_payout 7, his open bets can pay 75" % u.id, out)
        rc, out = bcadmin("recount-open-payouts")
        self.assertEqual(rc, 0, out)
        self.assertRegex(out, r"open payouts: \d+ users on \d+ shards recounted, [1-9]\d* changed")
        self.assertEqual(open_payout(u), 75)
        assert_check_ledger(self)
        # Recounting again changes nothing.
        rc, out = bcadmin("recount-open-payouts")
        self.assertEqual(rc, 0, out)
        self.assertIn(" 0 changed", out)


if __name__ == "__main__":
    unittest.main()
