"""POST /v1/bets (rules, Idempotency-Key, kick-off), GET /v1/me/bets, GET /v1/bets/{id},
and 200 concurrent bets by one user."""

import concurrent.futures
import threading
import subprocess
import time
import unittest

import stack
from checks import assert_check_ledger, assert_ledger_ok, db_user
from fixtures import (ID_RE, NO_ID, TIME_RE, admin, api, hundredths, new_company, new_match, new_users, place_bet,
                      settle, signup, uniq, wait_past_kickoff)

BET_KEYS = {"id", "match_id", "pick", "stake", "odds", "status", "payout", "placed_at", "settled_at"}


class TestBets(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.co = new_company()
        cls.u, cls.v = new_users(cls.co, 2)
        cls.m = new_match(odds=(1.95, 3.3, 4.2))

    def bet(self, user, body, **kw):
        return user.client.post("/v1/bets", body, **kw)

    def test_place_bet(self):
        u = signup(self.co)
        r = self.bet(u, {"match_id": self.m["id"], "pick": "draw", "stake": 37})
        b = r.expect_json(201)
        self.assertEqual(set(b), BET_KEYS, r.describe())
        self.assertRegex(b["id"], ID_RE)
        self.assertEqual((b["match_id"], b["pick"], b["stake"], b["status"]), (self.m["id"], "draw", 37, "open"))
        self.assertEqual(hundredths(b["odds"]), 330, "the pick's odds are locked into the bet")
        self.assertIsNone(b["payout"])
        self.assertIsNone(b["settled_at"])
        self.assertRegex(b["placed_at"], TIME_RE)
        self.assertEqual(u.balance(), u.initial_balance - 37, "the stake is debited at once")
        self.assertEqual(u.client.get("/v1/bets/%s" % b["id"]).expect_json(200), b)
        self.assertEqual(stack.shard_of(b["id"]), stack.shard_of(u.id), "a bet lives in its user's shard")
        assert_ledger_ok(self, u)

    def test_open_bet_row_holds_placeholders(self):
        # The row of an open bet holds payout 0 and settled_at = placed_at, so
        # that its settlement rewrites fixed-size values in place; the API
        # shows both as null until then (etc/schema/shard.sql).
        u = signup(self.co)
        b = self.bet(u, {"match_id": self.m["id"], "pick": "home", "stake": 5}).expect_json(201)
        rows = stack.get().sql_shard(stack.shard_of(b["id"]), "SELECT status, payout, placed_at = settled_at, "
                                     "settled_at IS NULL FROM {s}.bets WHERE id = %s" % b["id"])
        self.assertEqual([tuple(str(x) for x in r) for r in rows], [("open", "0", "1", "0")],
                         "the open bet's row: status, payout, settled_at = placed_at, settled_at IS NULL")
        for got in (u.client.get("/v1/bets/%s" % b["id"]).expect_json(200),
                    next(x for x in u.client.get("/v1/me/bets").expect_json(200)["items"] if x["id"] == b["id"])):
            self.assertEqual((got["status"], got["payout"], got["settled_at"]), ("open", None, None), got)

    def test_rule_errors(self):
        u = signup(self.co)
        mid = self.m["id"]
        for pick in ("win", "HOME", "", "1"):
            self.bet(u, {"match_id": mid, "pick": pick, "stake": 1}).expect(422, "invalid_pick", msg=repr(pick))
        for stake in (0, -5, 1.5, -0.5):
            self.bet(u, {"match_id": mid, "pick": "home", "stake": stake}).expect(422, "invalid_stake", msg=repr(stake))
        self.bet(u, {"match_id": mid, "pick": "home", "stake": "10"}).expect(
            (400, 422), ("invalid_field", "invalid_stake"))
        self.bet(u, {"match_id": mid, "pick": "home", "stake": u.initial_balance + 1}).expect(
            422, "insufficient_balance")
        # The stake's bound (10^12) is a rule of its own, and its message says it.
        self.bet(u, {"match_id": mid, "pick": "home", "stake": 10 ** 12}).expect(422, "insufficient_balance")
        r = self.bet(u, {"match_id": mid, "pick": "home", "stake": 10 ** 12 + 1}).expect(422, "invalid_stake")
        self.assertIn("1000000000000", r.error_message or "")
        self.bet(u, {"match_id": NO_ID, "pick": "home", "stake": 1}).expect(404, "not_found")
        r = self.bet(u, {"match_id": int(mid), "pick": "home", "stake": 1}).expect(400, "invalid_field")
        self.assertIn("match_id", r.error_message or "")
        r = self.bet(u, {"match_id": mid, "stake": 1}).expect(400, "invalid_field")
        self.assertIn("pick", r.error_message or "")
        r = self.bet(u, {"match_id": mid, "pick": "home", "stake": 1, "payout": 100}).expect(400, "unknown_field")
        self.assertIn("payout", r.error_message or "")
        # a client cannot set its price: odds it names are only checked against the match's
        self.bet(u, {"match_id": mid, "pick": "home", "stake": 1, "odds": 100}).expect(409, "odds_changed")
        api().post("/v1/bets", {"match_id": mid, "pick": "home", "stake": 1}).expect(401, "unauthorized")
        self.assertEqual(u.balance(), u.initial_balance, "refused bets debit nothing")
        self.assertEqual(u.client.get("/v1/me/bets").expect_json(200)["items"], [])

    def test_huge_stake_is_well_formed_json(self):
        # 10^30 and 2^63 are well-formed JSON integers: a rule error, not malformed_json
        u = signup(self.co)
        for stake in (2 ** 63, 10 ** 30):
            self.bet(u, {"match_id": self.m["id"], "pick": "home", "stake": stake}).expect(
                422, ("invalid_stake", "insufficient_balance"), msg=repr(stake))
        # and so are those below -2^63 (jansson words their overflow apart)
        for stake in (-2 ** 63, -2 ** 63 - 1, -10 ** 30):
            self.bet(u, {"match_id": self.m["id"], "pick": "home", "stake": stake}).expect(
                422, "invalid_stake", msg=repr(stake))
        self.assertEqual(u.balance(), u.initial_balance)

    def test_whole_balance_then_nothing(self):
        u = signup(self.co)
        place_bet(u, self.m, "away", u.initial_balance)
        self.assertEqual(u.balance(), 0)
        self.bet(u, {"match_id": self.m["id"], "pick": "away", "stake": 1}).expect(422, "insufficient_balance")
        assert_ledger_ok(self, u)

    def test_get_bet_only_owner(self):
        b = place_bet(self.u, self.m, "home", 5)
        self.v.client.get("/v1/bets/%s" % b["id"]).expect(404, "not_found")
        admin().get("/v1/bets/%s" % b["id"]).expect(404, "not_found")
        other = signup(new_company())
        other.client.get("/v1/bets/%s" % b["id"]).expect(404, "not_found")
        api().get("/v1/bets/%s" % b["id"]).expect(401, "unauthorized")
        self.u.client.get("/v1/bets/" + NO_ID).expect(404, "not_found")
        self.u.client.get("/v1/bets/%d" % (int(b["id"]) + 1)).expect(404, "not_found")

    def test_list_newest_first_filter_and_pages(self):
        u = signup(self.co)
        m2 = new_match(kickoff_in=2)
        bets = [place_bet(u, self.m, "home", 1), place_bet(u, m2, "away", 2),
                place_bet(u, self.m, "draw", 3), place_bet(u, m2, "home", 4)]
        j = u.client.get("/v1/me/bets").expect_json(200)
        self.assertEqual([b["id"] for b in j["items"]], [b["id"] for b in reversed(bets)], "newest first")
        self.assertIsNone(j["next_cursor"])
        self.assertEqual(j["items"][0], bets[-1])
        seen, cursor, pages = [], None, 0
        while True:
            j = u.client.get("/v1/me/bets", query={"limit": 3, "cursor": cursor}).expect_json(200)
            pages += 1
            self.assertLessEqual(len(j["items"]), 3)
            seen += [b["id"] for b in j["items"]]
            cursor = j["next_cursor"]
            if cursor is None:
                break
            self.assertLess(pages, 4)
        self.assertEqual(seen, [b["id"] for b in reversed(bets)])
        # settle m2 with a home win: bet 4 won, bet 2 lost
        wait_past_kickoff(m2)
        settle(m2, {"home_goals": 2, "away_goals": 0})
        ids = lambda st: [b["id"] for b in u.client.get("/v1/me/bets", query={"status": st}).expect_json(200)["items"]]
        self.assertEqual(ids("open"), [bets[2]["id"], bets[0]["id"]])
        self.assertEqual(ids("won"), [bets[3]["id"]])
        self.assertEqual(ids("lost"), [bets[1]["id"]])
        self.assertEqual(ids("void"), [])
        u.client.get("/v1/me/bets", query={"status": "bogus"}).expect(400, "invalid_parameter")
        u.client.get("/v1/me/bets", query={"limit": 501}).expect(400, "invalid_parameter")
        u.client.get("/v1/me/bets", query={"cursor": "%%%"}).expect(400, "invalid_parameter")

    def test_bet_on_finished_or_cancelled_match_closed(self):
        u = signup(self.co)
        mc = new_match()
        admin().post("/v1/matches/%s/result" % mc["id"], {"cancelled": True}).expect(202)
        self.bet(u, {"match_id": mc["id"], "pick": "home", "stake": 1}).expect(422, "betting_closed")
        self.assertEqual(u.balance(), u.initial_balance)


class TestBetAtNamedOdds(unittest.TestCase):
    """A bet may name the odds it is placed at: other odds are 409
    odds_changed, nothing debited. A server's own copy of a match is up to a
    second old (its near-cache), and a bet locked the replaced odds for that
    long after a change answered on another server; a bet that names its odds
    is checked against memcached (whose entry the change deleted) or the
    database, so right after a change, on either server, the new odds are
    taken and the old ones refused."""

    @classmethod
    def setUpClass(cls):
        cls.co = new_company()

    def test_named_odds_taken_others_refused(self):
        u = signup(self.co)
        m = new_match(odds=(1.95, 3.3, 4.2))
        body = {"match_id": m["id"], "pick": "draw", "stake": 5}
        b = u.client.post("/v1/bets", dict(body, odds=3.3)).expect_json(201)
        self.assertEqual(hundredths(b["odds"]), 330)
        r = u.client.post("/v1/bets", dict(body, odds=3.31)).expect(409, "odds_changed")
        self.assertIn("are 3.30 now, not 3.31", r.json["error"]["message"])
        u.client.post("/v1/bets", dict(body, odds=1.234)).expect(422, "invalid_odds")
        # Not a number: 422 as any odds the API reads (docs/api.md), null too.
        u.client.post("/v1/bets", dict(body, odds="3.3")).expect(422, "invalid_odds")
        u.client.post("/v1/bets", dict(body, odds=None)).expect(422, "invalid_odds")
        u.client.post("/v1/bets", dict(body, pick=1)).expect(422, "invalid_pick")
        self.assertEqual(u.balance(), u.initial_balance - 5, "refused bets debit nothing")
        assert_ledger_ok(self, u)

    def test_a_change_made_on_one_server_is_bet_at_on_the_other(self):
        s = stack.get()
        if len(s.api_urls) < 2:
            self.skipTest("needs two API servers")
        a = admin()
        u = signup(self.co)
        m = new_match(odds=(2.00, 3.00, 4.00))
        path = "/v1/matches/%s/odds" % m["id"]
        for new_home, (writer, better) in zip((2.10, 2.20), (s.api_urls, s.api_urls[::-1])):
            old_home = a.get(path).expect_json(200)["home"]
            body = {"match_id": m["id"], "pick": "home", "stake": 1}
            for url in s.api_urls:  # a bet puts the match in each server's near-cache
                u.client.at(url).post("/v1/bets", body).expect(201)
            a.at(writer).put(path, {"home": new_home, "draw": 3.0, "away": 4.0}).expect(200)
            c = u.client.at(better)
            c.post("/v1/bets", dict(body, odds=old_home)).expect(409, "odds_changed")
            b = c.post("/v1/bets", dict(body, odds=new_home)).expect_json(201)
            self.assertEqual(hundredths(b["odds"]), round(new_home * 100), b)
        self.assertEqual(u.balance(), u.initial_balance - 6)
        assert_ledger_ok(self, u)

    def test_retry_with_its_key_after_an_odds_change_gets_the_bet(self):
        """A bet whose answer was lost is sent again after the odds moved: the
        same key and body get the bet (200) at the odds it named, on every
        server; another body 422 idempotency_key_reused; a new key at the old
        odds 409 odds_changed. Nothing is debited twice."""
        from client import Client
        u = signup(self.co)
        m = new_match(odds=(2.40, 3.20, 2.80))
        key = uniq("idem")
        body = {"match_id": m["id"], "pick": "home", "stake": 100, "odds": 2.4}
        b1 = u.client.post("/v1/bets", body, headers={"Idempotency-Key": key}).expect_json(201)
        admin().put("/v1/matches/%s/odds" % m["id"], {"home": 2.5, "draw": 3.2, "away": 2.8}).expect(200)
        time.sleep(1.5)  # past every server's near-cache: all of them hold the new odds
        for c in [u.client] + [Client(url, u.client.token) for url in stack.get().api_urls]:
            r = c.post("/v1/bets", body, headers={"Idempotency-Key": key})
            self.assertEqual(r.expect_json(200), b1, r.describe())
            c.post("/v1/bets", dict(body, stake=101), headers={"Idempotency-Key": key}).expect(
                422, "idempotency_key_reused")
            c.post("/v1/bets", body, headers={"Idempotency-Key": uniq("idem")}).expect(409, "odds_changed")
        self.assertEqual(hundredths(b1["odds"]), 240)
        self.assertEqual(u.balance(), u.initial_balance - 100, "debited once")
        self.assertEqual(len(u.client.get("/v1/me/bets").expect_json(200)["items"]), 1)
        assert_ledger_ok(self, u)


class TestBettingClosesAtKickoff(unittest.TestCase):
    def test_betting_closed_after_kickoff(self):
        co = new_company()
        u = signup(co)
        m = new_match(kickoff_in=2)
        place_bet(u, m, "home", 10)
        wait_past_kickoff(m, margin=0.2)
        r = u.client.post("/v1/bets", {"match_id": m["id"], "pick": "home", "stake": 10})
        r.expect(422, "betting_closed")
        self.assertEqual(u.balance(), u.initial_balance - 10)
        # also on the other server, directly (each keeps its own cache of the match)
        from client import Client
        for url in stack.get().api_urls:
            Client(url, u.client.token).post("/v1/bets", {"match_id": m["id"], "pick": "draw", "stake": 1}).expect(
                422, "betting_closed", msg=url)
        self.assertEqual(u.balance(), u.initial_balance - 10)


    def test_retry_with_its_key_after_kickoff_gets_the_bet(self):
        """A bet whose answer was lost just before kick-off is sent again after
        it: the same key and body get the bet (200), on every server, and after
        the settlement its settled state; another body 422
        idempotency_key_reused; a new key betting_closed. Nothing is debited
        twice."""
        co = new_company()
        u = signup(co)
        m = new_match(kickoff_in=2)
        key = uniq("idem")
        body = {"match_id": m["id"], "pick": "home", "stake": 10}
        b1 = place_bet(u, m, "home", 10, key=key)
        wait_past_kickoff(m, margin=0.2)
        from client import Client
        for c in [u.client] + [Client(url, u.client.token) for url in stack.get().api_urls]:
            r = c.post("/v1/bets", body, headers={"Idempotency-Key": key})
            self.assertEqual(r.expect_json(200), b1, r.describe())
            c.post("/v1/bets", dict(body, stake=11), headers={"Idempotency-Key": key}).expect(
                422, "idempotency_key_reused")
            c.post("/v1/bets", body, headers={"Idempotency-Key": uniq("idem")}).expect(422, "betting_closed")
        self.assertEqual(u.balance(), u.initial_balance - 10)
        settle(m, {"home_goals": 1, "away_goals": 0})
        r = u.client.post("/v1/bets", body, headers={"Idempotency-Key": key})
        b = r.expect_json(200)
        self.assertEqual((b["id"], b["status"]), (b1["id"], "won"), r.describe())
        self.assertEqual(b["payout"], u.client.get("/v1/bets/%s" % b1["id"]).expect_json(200)["payout"])
        self.assertEqual(len(u.client.get("/v1/me/bets").expect_json(200)["items"]), 1)
        assert_ledger_ok(self, u)


class TestIdempotency(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.co = new_company()
        cls.m = new_match()

    def test_retry_same_key_same_body_debits_once(self):
        u = signup(self.co)
        key = uniq("idem")
        body = {"match_id": self.m["id"], "pick": "home", "stake": 40}
        b1 = place_bet(u, self.m, "home", 40, key=key)
        for _ in range(3):
            r = u.client.post("/v1/bets", body, headers={"Idempotency-Key": key})
            b = r.expect_json(200)
            self.assertEqual(b["id"], b1["id"], r.describe())
            self.assertEqual(b, b1)
        self.assertEqual(u.balance(), u.initial_balance - 40, "debited once")
        self.assertEqual(len(u.client.get("/v1/me/bets").expect_json(200)["items"]), 1)
        assert_ledger_ok(self, u)
        # a new key is a new bet
        b2 = place_bet(u, self.m, "home", 40, key=uniq("idem"))
        self.assertNotEqual(b2["id"], b1["id"])
        self.assertEqual(u.balance(), u.initial_balance - 80)

    def test_same_key_other_body_422(self):
        u = signup(self.co)
        key = uniq("idem")
        place_bet(u, self.m, "home", 40, key=key)
        for body in ({"match_id": self.m["id"], "pick": "away", "stake": 40},
                     {"match_id": self.m["id"], "pick": "home", "stake": 41}):
            u.client.post("/v1/bets", body, headers={"Idempotency-Key": key}).expect(422, "idempotency_key_reused")
        self.assertEqual(u.balance(), u.initial_balance - 40)

    def test_invalid_keys(self):
        u = signup(self.co)
        body = {"match_id": self.m["id"], "pick": "home", "stake": 1}
        for key in ("k" * 65, "", "caf\u00e9", "tab\there"):
            u.client.post("/v1/bets", body, headers={"Idempotency-Key": key}).expect(
                422, "invalid_idempotency_key", msg=repr(key))
        self.assertEqual(u.balance(), u.initial_balance, "no bet for an invalid key")
        b = u.client.post("/v1/bets", body, headers={"Idempotency-Key": "K" * 64}).expect_json(201)
        r = u.client.post("/v1/bets", body, headers={"Idempotency-Key": "K" * 64}).expect_json(200)
        self.assertEqual(r["id"], b["id"], "a 64-char key is valid")

    def test_keys_compare_bytes(self):
        """"abc", "ABC" are two keys (no case folding); "\u00e0bc" is not a key at
        all (printable ASCII only), so it can never fold into "abc"."""
        u = signup(self.co)
        key = uniq("abc")
        body = {"match_id": self.m["id"], "pick": "home", "stake": 5}
        b1 = place_bet(u, self.m, "home", 5, key=key)
        r = u.client.post("/v1/bets", body, headers={"Idempotency-Key": key.upper()})
        b2 = r.expect_json(201, msg="an upper-case key is another key")
        self.assertNotEqual(b2["id"], b1["id"])
        u.client.post("/v1/bets", body, headers={"Idempotency-Key": "\u00e0" + key[1:]}).expect(
            422, "invalid_idempotency_key")
        # each key still replays its own bet
        r = u.client.post("/v1/bets", body, headers={"Idempotency-Key": key.upper()})
        self.assertEqual(r.expect_json(200)["id"], b2["id"])
        r = u.client.post("/v1/bets", body, headers={"Idempotency-Key": key})
        self.assertEqual(r.expect_json(200)["id"], b1["id"])
        self.assertEqual(u.balance(), u.initial_balance - 10, "two bets, two debits")

    def test_keys_forgotten_after_24_hours(self):
        """A key's record lives 24 h: bcadmin purge-idempotency (the pass every API
        server runs every 10 minutes) deletes older ones and keeps the rest; a
        forgotten key then makes a new bet."""
        s = stack.get()
        u = signup(self.co)
        old, fresh = uniq("old"), uniq("fresh")
        body = {"match_id": self.m["id"], "pick": "home", "stake": 3}
        b_old = place_bet(u, self.m, "home", 3, key=old)
        b_fresh = place_bet(u, self.m, "home", 3, key=fresh)
        shard = stack.shard_of(u.id)
        s.sql_shard(shard, "UPDATE {s}.idempotency SET created_at = NOW(3) - INTERVAL 25 HOUR "
                           "WHERE user_id = %d AND idem_key = '%s'" % (int(u.id), old))
        p = subprocess.run([s.bcadmin, "-c", s.cluster, "purge-idempotency"], capture_output=True,
                           text=True, timeout=300)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertRegex(p.stdout, r"^[1-9][0-9]* idempotency keys older than 86400 s deleted, 0 shards failed")
        keys = s.sql_shard(shard, "SELECT idem_key FROM {s}.idempotency WHERE user_id = %d ORDER BY idem_key"
                           % int(u.id))
        self.assertEqual(keys, [[fresh]], "the old key is gone, the fresh one stays")
        r = u.client.post("/v1/bets", body, headers={"Idempotency-Key": fresh}).expect_json(200)
        self.assertEqual(r["id"], b_fresh["id"])
        r = u.client.post("/v1/bets", body, headers={"Idempotency-Key": old}).expect_json(201)
        self.assertNotEqual(r["id"], b_old["id"], "a forgotten key is a new bet")
        self.assertEqual(u.balance(), u.initial_balance - 9)
        assert_ledger_ok(self, u)
        keys = s.sql_shard(shard, "SELECT idem_key FROM {s}.idempotency WHERE user_id = %d ORDER BY idem_key"
                           % int(u.id))
        self.assertEqual(len(keys), 2, keys)
        for bad in ("x", "0", "3600", "-1", " 90000"):
            # below 24 h would forget keys clients were promised (a retry then bets twice)
            p = subprocess.run([s.bcadmin, "-c", s.cluster, "purge-idempotency", "--older-than", bad],
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(p.returncode, 2, bad)
            self.assertIn("--older-than wants whole seconds from 86400", p.stderr)
        self.assertEqual(s.sql_shard(shard, "SELECT idem_key FROM {s}.idempotency WHERE user_id = %d ORDER BY idem_key"
                                     % int(u.id)), keys, "a refused purge deleted nothing")

    def test_key_is_per_user(self):
        a, b = new_users(self.co, 2)
        key = uniq("shared")
        ba = place_bet(a, self.m, "draw", 7, key=key)
        r = b.client.post("/v1/bets", {"match_id": self.m["id"], "pick": "draw", "stake": 7},
                          headers={"Idempotency-Key": key})
        bb = r.expect_json(201, msg="another user's key is not a retry of his bet")
        self.assertNotEqual(bb["id"], ba["id"])
        self.assertEqual(b.balance(), b.initial_balance - 7)

    def race(self, u, bodies, key):
        """The bodies sent at once by u, all with key; their answers."""
        barrier = threading.Barrier(len(bodies))

        def go(body):
            barrier.wait(timeout=30)
            return u.client.post("/v1/bets", body, headers={"Idempotency-Key": key})

        with concurrent.futures.ThreadPoolExecutor(len(bodies)) as ex:
            return list(ex.map(go, bodies))

    def test_concurrent_retries_debit_once(self):
        u = signup(self.co)
        key = uniq("race")
        body = {"match_id": self.m["id"], "pick": "away", "stake": 25}
        rs = self.race(u, [body] * 20, key)
        bad = [r.describe() for r in rs if r.status not in (200, 201)]
        if bad:
            self.fail("concurrent retries must get 201 or 200:\n" + "\n".join(bad[:10]))
        self.assertEqual(sum(r.status == 201 for r in rs), 1, [r.status for r in rs])
        self.assertEqual(len({r.json["id"] for r in rs}), 1, "all retries return the same bet")
        self.assertEqual(u.balance(), u.initial_balance - 25, "debited once")
        assert_ledger_ok(self, u)

    def test_concurrent_retries_of_the_whole_balance_get_the_bet(self):
        """Retries that waited for the first one's debit found the balance
        short; each is that bet's replay (200), or, with another body, 422
        idempotency_key_reused, never 422 insufficient_balance (the client
        would take its placed bet for refused). Three users, 20 retries each."""
        for _ in range(3):
            u = signup(self.co)
            key = uniq("whole")
            bodies = [{"match_id": self.m["id"], "pick": "home", "stake": u.initial_balance},
                      {"match_id": self.m["id"], "pick": "away", "stake": u.initial_balance}]
            rs = self.race(u, [bodies[0]] * 14 + [bodies[1]] * 6, key)
            placed = [r for r in rs if r.status == 201]
            self.assertEqual(len(placed), 1, [r.describe() for r in rs if r.status != 200][:5])
            won = placed[0].json
            for r, body in zip(rs, [bodies[0]] * 14 + [bodies[1]] * 6):
                if body["pick"] == won["pick"]:
                    self.assertIn(r.status, (200, 201), r.describe())
                    self.assertEqual(r.json["id"], won["id"], r.describe())
                else:
                    r.expect(422, "idempotency_key_reused")
            self.assertEqual(u.balance(), 0, "debited once")
            assert_ledger_ok(self, u)


class TestConcurrentBets(unittest.TestCase):
    def test_200_concurrent_bets_balance_covers_10(self):
        co = new_company()
        u = signup(co)
        m = new_match(kickoff_in=3600)
        bal = u.initial_balance
        self.assertGreaterEqual(bal, 10)
        stake = bal // 10
        accepted_max = bal // stake
        n = 200
        barrier = threading.Barrier(n + 1)
        stop = threading.Event()
        seen_balances = []

        def sampler():
            barrier.wait(timeout=60)
            while not stop.is_set():
                r = u.client.get("/v1/me")
                if r.status == 200:
                    seen_balances.append(r.json["balance"])
                time.sleep(0.01)

        def go(_):
            barrier.wait(timeout=60)
            return u.client.post("/v1/bets", {"match_id": m["id"], "pick": "home", "stake": stake})

        t0 = time.time()
        st = threading.Thread(target=sampler)
        st.start()
        try:
            with concurrent.futures.ThreadPoolExecutor(n) as ex:
                rs = list(ex.map(go, range(n)))
        finally:
            stop.set()
            st.join()
        took = time.time() - t0
        created = [r for r in rs if r.status == 201]
        refused = [r for r in rs if r.status == 422 and r.error_code == "insufficient_balance"]
        # one user's writes: 4 run, 16 wait, more are refused at once (work_parked_per_user)
        busy = [r for r in rs if r.status == 429 and r.error_code == "rate_limited"
                and r.header("Retry-After") == "1"]
        other = [r.describe(300) for r in rs if r not in created and r not in refused and r not in busy]
        if other:
            self.fail("answers other than 201, 422 insufficient_balance and 429 (%d of %d, %.1f s):\n%s"
                      % (len(other), n, took, "\n".join(other[:10])))
        self.assertEqual(len(created), accepted_max, "accepted bets (balance %d, stake %d)" % (bal, stake))
        self.assertEqual(len(refused) + len(busy), n - accepted_max)
        final = u.balance()
        self.assertEqual(final, bal - accepted_max * stake)
        self.assertTrue(all(b >= 0 for b in seen_balances), "a balance went below zero: %s" % min(seen_balances))
        bal_db, _ = db_user(u.id)
        self.assertGreaterEqual(bal_db, 0)
        self.assertEqual(bal_db, final)
        rows = stack.get().sql_shard(stack.shard_of(u.id),
                                     "SELECT COUNT(*), COALESCE(SUM(stake), 0) FROM {s}.bets WHERE user_id = %d"
                                     % int(u.id))
        self.assertEqual((int(rows[0][0]), int(rows[0][1])), (accepted_max, accepted_max * stake), "bet rows")
        assert_ledger_ok(self, u)
        assert_check_ledger(self)


if __name__ == "__main__":
    unittest.main()
