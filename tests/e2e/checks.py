"""Checks against the raw rows: balances, ledger, payouts, bcadmin check-ledger."""

import stack
from fixtures import hundredths, payout


def db_user(user_id):
    """(balance, points) of the user's row in its shard."""
    rows = stack.get().sql_shard(stack.shard_of(user_id),
                                 "SELECT balance, points FROM {s}.users WHERE id = %d" % int(user_id))
    assert len(rows) == 1, "user %s not in its shard: %s" % (user_id, rows)
    return int(rows[0][0]), int(rows[0][1])


def ledger_sum(user_id):
    """(sum of deltas, number of rows) of the user's ledger."""
    rows = stack.get().sql_shard(stack.shard_of(user_id),
                                 "SELECT COALESCE(SUM(delta), 0), COUNT(*) FROM {s}.ledger WHERE user_id = %d"
                                 % int(user_id))
    return int(rows[0][0]), int(rows[0][1])


def assert_ledger_ok(tc, user):
    """initial_balance + sum of the user's ledger deltas = balance (API and row)."""
    bal_api = user.balance()
    bal_db, _ = db_user(user.id)
    total, _ = ledger_sum(user.id)
    tc.assertEqual(bal_api, bal_db, "balance in the API and in the row of user %s" % user.id)
    tc.assertEqual(user.initial_balance + total, bal_db,
                   "ledger invariant of user %s: %d + %d != %d" % (user.id, user.initial_balance, total, bal_db))


def assert_check_ledger(tc):
    rc, out = stack.get().check_ledger()
    tc.assertEqual(rc, 0, "bcadmin check-ledger reports a violation (exit %d):\n%s" % (rc, out[-3000:]))


def outcome(result):
    """'home' | 'draw' | 'away' | 'cancelled' of a result body."""
    if result.get("cancelled"):
        return "cancelled"
    h, a = result["home_goals"], result["away_goals"]
    return "home" if h > a else "away" if h < a else "draw"


def expected_settlement(bet, result):
    """(status, payout) of a bet after its match got result (a result body)."""
    o = outcome(result)
    if o == "cancelled":
        return "void", bet["stake"]
    if bet["pick"] == o:
        return "won", payout(bet["stake"], hundredths(bet["odds"]))
    return "lost", 0


def ledger_rows_by_bet(bets):
    """{bet id: (credit rows, credit sum, debit rows, debit sum)} from the ledgers
    of the bets' shards (every bet lives in its user's shard)."""
    by_shard = {}
    for b in bets:
        by_shard.setdefault(stack.shard_of(b["id"]), []).append(int(b["id"]))
    out = {}
    for shard, ids in by_shard.items():
        rows = stack.get().sql_shard(
            shard,
            "SELECT bet_id, SUM(delta > 0), COALESCE(SUM(CASE WHEN delta > 0 THEN delta END), 0),"
            " SUM(delta < 0), COALESCE(SUM(CASE WHEN delta < 0 THEN delta END), 0)"
            " FROM {s}.ledger WHERE bet_id IN (%s) GROUP BY bet_id" % ",".join(map(str, ids)))
        for bid, nc, sc, nd, sd in rows:
            out[bid] = (int(nc), int(sc), int(nd), int(sd))
    return out


def assert_bets_settled_once(tc, bets, result):
    """Every bet (dicts as placed) settled once as result says, in its row and its ledger."""
    rows_by_shard = {}
    for b in bets:
        rows_by_shard.setdefault(stack.shard_of(b["id"]), []).append(int(b["id"]))
    rows = {}
    for shard, ids in rows_by_shard.items():
        for bid, status, pay, settled in stack.get().sql_shard(
                shard, "SELECT id, status, payout, settled_at FROM {s}.bets WHERE id IN (%s)"
                % ",".join(map(str, ids))):
            rows[bid] = (status, None if pay is None else int(pay), settled)
    ledger = ledger_rows_by_bet(bets)
    problems = []
    for b in bets:
        st, pay = expected_settlement(b, result)
        got = rows.get(b["id"])
        if got is None:
            problems.append("bet %s: no row in shard %d" % (b["id"], stack.shard_of(b["id"])))
            continue
        if got[0] != st or got[1] != pay or got[2] is None:
            problems.append("bet %s (%s %d @%s): row %s, expected %s payout %d"
                            % (b["id"], b["pick"], b["stake"], b["odds"], got, st, pay))
        nc, sc, nd, sd = ledger.get(b["id"], (0, 0, 0, 0))
        if nc > 1:
            problems.append("bet %s: %d credit (payout) ledger rows" % (b["id"], nc))
        if sc != pay:
            problems.append("bet %s: ledger credits %d, payout %d" % (b["id"], sc, pay))
        if nd > 1 or (nd == 1 and sd != -b["stake"]):
            problems.append("bet %s: debit ledger rows %d summing %d, stake %d" % (b["id"], nd, sd, b["stake"]))
    if problems:
        tc.fail("bets not settled exactly once:\n" + "\n".join(problems[:50]))
