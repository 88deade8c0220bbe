"""Settlement of home, draw, away and cancelled matches: payouts, void refunds,
points, balances, ledger; re-posting the same result (no-op) or another one (409)."""

import re
import unittest

import stack
from checks import (assert_bets_settled_once, assert_check_ledger, assert_ledger_ok, db_user,
                    expected_settlement, outcome)
from fixtures import (TIME_RE, admin, hundredths, new_company, new_match, new_users, parallel, place_bet,
                      wait_past_kickoff, wait_settled)

ODDS = (2.35, 3.10, 2.95)
RESULTS = {
    "home": {"home_goals": 2, "away_goals": 1},
    "draw": {"home_goals": 1, "away_goals": 1},
    "away": {"home_goals": 0, "away_goals": 3},
    "cancelled": {"cancelled": True},
}
# (user index, pick, stake): stakes chosen so that floor() matters
PLAN = [(0, "home", 33), (1, "draw", 47), (2, "away", 59), (3, "home", 101), (3, "draw", 10), (0, "away", 1)]


class TestSettlement(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.co = new_company()
        cls.users = new_users(cls.co, 4)
        cls.matches = {k: new_match(kickoff_in=4, odds=ODDS) for k in RESULTS}
        cls.bets = {k: [] for k in RESULTS}  # kind -> [(user, bet)]
        for kind, m in cls.matches.items():
            for ui, pick, stake in PLAN:
                cls.bets[kind].append((cls.users[ui], place_bet(cls.users[ui], m, pick, stake)))
        # Every other bet of the draw match as a row written before open bets
        # held placeholders (payout and settled_at NULL, etc/schema/shard.sql):
        # such rows settle the same.
        cls.legacy = cls.bets["draw"][::2]
        for _, b in cls.legacy:
            stack.get().sql_shard(stack.shard_of(b["id"]),
                                  "UPDATE {s}.bets SET payout = NULL, settled_at = NULL WHERE id = %s" % b["id"])
        cls.legacy_rows = [stack.get().sql_shard(stack.shard_of(b["id"]), "SELECT status, payout IS NULL AND "
                                                 "settled_at IS NULL FROM {s}.bets WHERE id = %s" % b["id"])
                           for _, b in cls.legacy]
        cls.legacy_open = [u.client.get("/v1/bets/%s" % b["id"]).expect_json(200) for u, b in cls.legacy]
        # odds changed after the bets: settlement must use the locked odds
        admin().put("/v1/matches/%s/odds" % cls.matches["home"]["id"],
                    {"home": 1.5, "draw": 4.0, "away": 6.0}).expect(200)
        wait_past_kickoff(*cls.matches.values())
        cls.posted = {}
        for kind, m in cls.matches.items():
            r = admin().post("/v1/matches/%s/result" % m["id"], RESULTS[kind])
            cls.posted[kind] = r.expect_json(202, msg="result of the %s match" % kind)
        cls.settlements = {k: wait_settled(m) for k, m in cls.matches.items()}

    def check_kind(self, kind):
        result = RESULTS[kind]
        for user, bet in self.bets[kind]:
            self.assertEqual(hundredths(bet["odds"]), hundredths(ODDS[("home", "draw", "away").index(bet["pick"])]))
            st, pay = expected_settlement(bet, result)
            g = user.client.get("/v1/bets/%s" % bet["id"]).expect_json(200)
            self.assertEqual((g["status"], g["payout"]), (st, pay),
                             "%s match, bet %s %d @%s: %s" % (kind, bet["pick"], bet["stake"], bet["odds"], g))
            self.assertEqual(g["odds"], bet["odds"], "locked odds unchanged")
            self.assertRegex(g["settled_at"] or "", TIME_RE)
            self.assertEqual(g["placed_at"], bet["placed_at"])
        assert_bets_settled_once(self, [b for _, b in self.bets[kind]], result)

    def test_home_win(self):
        self.check_kind("home")
        # hand-computed: 33 @2.35 -> 77, 101 @2.35 -> 237
        pays = sorted(expected_settlement(b, RESULTS["home"])[1] for _, b in self.bets["home"])
        self.assertEqual(pays, [0, 0, 0, 0, 77, 237])

    def test_draw(self):
        self.check_kind("draw")
        pays = sorted(expected_settlement(b, RESULTS["draw"])[1] for _, b in self.bets["draw"])
        self.assertEqual(pays, [0, 0, 0, 0, 31, 145])

    def test_rows_with_null_placeholders_settle(self):
        self.assertEqual(self.legacy_rows, [[["open", "1"]]] * len(self.legacy), "the rows made NULL")
        for g in self.legacy_open:
            self.assertEqual((g["status"], g["payout"], g["settled_at"]), ("open", None, None), g)
        self.check_kind("draw")  # through the API and in the rows, once each

    def test_away_win(self):
        self.check_kind("away")
        pays = sorted(expected_settlement(b, RESULTS["away"])[1] for _, b in self.bets["away"])
        self.assertEqual(pays, [0, 0, 0, 0, 2, 174])

    def test_cancelled_refunds(self):
        self.check_kind("cancelled")
        for _, b in self.bets["cancelled"]:
            self.assertEqual(expected_settlement(b, RESULTS["cancelled"]), ("void", b["stake"]))

    def test_settlement_objects(self):
        for kind, m in self.matches.items():
            p = self.posted[kind]
            self.assertEqual(p.get("match_id"), m["id"], p)
            self.assertEqual(p.get("result"), outcome(RESULTS[kind]), p)
            self.assertIn(p.get("state"), ("running", "done"), p)
            s = self.settlements[kind]
            self.assertEqual(set(s), {"match_id", "result", "state", "shards_total", "shards_done", "bets_total",
                                      "bets_settled"}, s)
            self.assertEqual((s["match_id"], s["result"], s["state"]), (m["id"], outcome(RESULTS[kind]), "done"))
            self.assertEqual(s["shards_done"], s["shards_total"], s)
            self.assertGreaterEqual(s["shards_total"], 1)
            self.assertEqual(s["bets_settled"], len(PLAN), "bets_settled of the %s match: %s" % (kind, s))
            self.assertEqual(s["bets_total"], len(PLAN), "bets_total of the %s match: %s" % (kind, s))

    def test_match_objects_after_result(self):
        u = self.users[0]
        for kind, m in self.matches.items():
            g = u.client.get("/v1/matches/%s" % m["id"]).expect_json(200)
            if kind == "cancelled":
                self.assertEqual((g["status"], g["score"]), ("cancelled", None), g)
            else:
                r = RESULTS[kind]
                self.assertEqual(g["status"], "finished", g)
                self.assertEqual(g["score"], {"home": r["home_goals"], "away": r["away_goals"]}, g)

    def test_balances_points_ledger(self):
        expect = {u.id: [u.initial_balance, 0] for u in self.users}
        for kind in RESULTS:
            for user, bet in self.bets[kind]:
                _, pay = expected_settlement(bet, RESULTS[kind])
                expect[user.id][0] += pay - bet["stake"]
                expect[user.id][1] += pay - bet["stake"]
        for u in self.users:
            me = u.me()
            self.assertEqual((me["balance"], me["points"]), tuple(expect[u.id]), "user %s /v1/me" % u.id)
            self.assertEqual(db_user(u.id), tuple(expect[u.id]), "user %s row" % u.id)
            p = self.users[0].client.get("/v1/users/%s" % u.id).expect_json(200)
            self.assertEqual(p["points"], expect[u.id][1], "public profile points of %s" % u.id)
            assert_ledger_ok(self, u)
        assert_check_ledger(self)

    def test_repost_same_result_is_noop(self):
        before = parallel(lambda u: u.me(), self.users)
        for kind, m in self.matches.items():
            r = admin().post("/v1/matches/%s/result" % m["id"], RESULTS[kind])
            j = r.expect_json(202, msg="same result again")
            self.assertEqual(j.get("result"), outcome(RESULTS[kind]))
            s = wait_settled(m)
            self.assertEqual(s["bets_settled"], len(PLAN), s)
        self.assertEqual(parallel(lambda u: u.me(), self.users), before, "balances/points changed by a re-post")
        for kind in RESULTS:
            assert_bets_settled_once(self, [b for _, b in self.bets[kind]], RESULTS[kind])

    def test_different_result_conflict(self):
        before = parallel(lambda u: u.me(), self.users)
        a = admin()
        a.post("/v1/matches/%s/result" % self.matches["home"]["id"], {"home_goals": 0, "away_goals": 1}).expect(
            409, "result_conflict")
        a.post("/v1/matches/%s/result" % self.matches["home"]["id"], {"cancelled": True}).expect(409, "result_conflict")
        a.post("/v1/matches/%s/result" % self.matches["draw"]["id"], {"home_goals": 2, "away_goals": 0}).expect(
            409, "result_conflict")
        a.post("/v1/matches/%s/result" % self.matches["cancelled"]["id"], {"home_goals": 1, "away_goals": 0}).expect(
            409, "result_conflict")
        self.assertEqual(parallel(lambda u: u.me(), self.users), before)
        s = a.get("/v1/matches/%s/settlement" % self.matches["home"]["id"]).expect_json(200)
        self.assertEqual(s["result"], "home")

    def test_no_bets_or_odds_after_result(self):
        u = self.users[0]
        for kind, m in self.matches.items():
            u.client.post("/v1/bets", {"match_id": m["id"], "pick": "home", "stake": 1}).expect(
                422, "betting_closed", msg=kind)
            admin().put("/v1/matches/%s/odds" % m["id"], {"home": 2, "draw": 2, "away": 2}).expect(
                409, "match_not_scheduled", msg=kind)

    def test_bets_listed_by_status(self):
        u = self.users[3]
        want = {"open": set(), "won": set(), "lost": set(), "void": set()}
        for kind in RESULTS:
            for uu, b in self.bets[kind]:
                if uu is u:
                    want[expected_settlement(b, RESULTS[kind])[0]].add(b["id"])
        for status, ids in want.items():
            got = u.client.get("/v1/me/bets", query={"status": status}).expect_json(200)["items"]
            self.assertEqual({b["id"] for b in got}, ids, status)
            self.assertTrue(all(b["status"] == status for b in got), got)


def settle_done_line(s, match_id, timeout=5):
    """The match of the job's last log line ("settlement N: done by OWNER:
    ... its hosts paused P ms in all; the server ran at most B batches at
    once") in any log of the stack: groups owner, paused ms, batches; None
    when no log has it within timeout seconds."""
    import os
    import re
    import time
    pat = re.compile(r"settlement %s: done by (\S+): .*its hosts paused (\d+) ms in all; "
                     r"the server ran at most (\d+) batches at once" % match_id)
    deadline = time.time() + timeout
    while True:
        for name in sorted(os.listdir(s.dir)):
            path = os.path.join(s.dir, name)
            if not (name.endswith(".log") or os.path.isdir(path)):
                continue
            logs = [path] if name.endswith(".log") else [
                os.path.join(path, f) for f in os.listdir(path) if f.endswith(".log")]
            for lp in logs:
                with open(lp, errors="replace") as f:
                    for text in f:
                        hit = pat.search(text)
                        if hit:
                            return hit
        if time.time() >= deadline:
            return None
        time.sleep(0.2)


def settle_on_own_server(test, settings, nusers, check=None):
    """An API server of its own with settings posts a result and runs its
    settlement (the server that takes a result wakes its own settler at
    once); every bet is then settled exactly once. Returns the job's last
    log line (settle_done_line) of a run by that server, after check(company,
    [(user, bet)], the server: test_abuse.OwnServer) when given; skips the test when another server claimed the
    job three times."""
    from test_abuse import OwnServer
    s = stack.get()
    own = OwnServer(settings)
    try:
        for attempt in range(3):
            co = new_company()
            users = new_users(co, nusers)
            m = new_match(kickoff_in=3, odds=ODDS)
            bets = [(u, place_bet(u, m, "home", 5)) for u in users]
            wait_past_kickoff(m)
            a = admin().at(own.url)
            a.post("/v1/matches/%s/result" % m["id"], RESULTS["home"]).expect(202)
            j = wait_settled(m, via=a)
            test.assertEqual(j["bets_settled"], nusers, j)
            assert_bets_settled_once(test, [b for _, b in bets], RESULTS["home"])
            line = settle_done_line(s, m["id"])
            test.assertIsNotNone(line, "no log line of settlement %s's end" % m["id"])
            if line.group(1).startswith("abuse/"):
                if check is not None:
                    check(co, bets, own)
                return line  # run by the server of its own
        test.skipTest("another server claimed the settlement three times")
    finally:
        own.stop()


class TestSettlePause(unittest.TestCase):
    def test_pause_between_batches_keeps_every_bet_paid_once(self):
        """settle_pause_pct=400: the hosts pause after each batch (the job's
        last log line says how long, more than 0 ms), and every bet is
        settled exactly once with the ledger whole."""
        line = settle_on_own_server(self, {"settle_pause_pct": 400}, 12)
        self.assertGreater(int(line.group(2)), 0, line.group(0))
        assert_check_ledger(self)


class TestSettleBatches(unittest.TestCase):
    def test_one_batch_at_once_keeps_every_bet_paid_once(self):
        """settle_batches=1: the hosts' threads take turns, so the server
        never runs two batches at once (the job's last log line counts
        them), and every bet of users on every host is settled exactly
        once with the ledger whole."""
        line = settle_on_own_server(self, {"settle_batches": 1}, 24)
        self.assertEqual(int(line.group(3)), 1, line.group(0))
        assert_check_ledger(self)


class TestSettleBatchBets(unittest.TestCase):
    def test_small_batches_settle_every_bet_once(self):
        """settle_batch_bets=2: no batch settles more than 2 bets (the job's
        last log line counts its batches and the most bets one settled), so
        12 bets take at least 6 batches, and every bet is settled exactly
        once with the ledger whole."""
        line = settle_on_own_server(self, {"settle_batch_bets": 2}, 12)
        m = re.search(r"; (\d+) batches, at most (\d+) bets in one;", line.string)
        self.assertTrue(m, "no batch count in the job's last log line: " + line.string)
        batches, widest = int(m.group(1)), int(m.group(2))
        self.assertTrue(1 <= widest <= 2 and batches >= 6, line.string)
        assert_check_ledger(self)


class TestBackgroundHosts(unittest.TestCase):
    def test_one_host_at_a_time_settles_and_ranks(self):
        """background_hosts=1 with settle_batches=1 (for hosts that share
        CPUs): the server's settlement counts and its standings'
        recomputation ask one host at a time (the router's integration test
        times that), and they still see every shard: every bet is paid once,
        the job counts them all, and the company's ranking, recomputed by
        that server, gives each member his bet's points."""
        def ranked(co, bets, own):
            points = {u.id: expected_settlement(b, RESULTS["home"])[1] - b["stake"] for u, b in bets}
            got = bets[0][0].client.get("/v1/standings/users", query={"company": co["id"]}).expect_json(200)
            self.assertEqual({x["user_id"]: x["points"] for x in got["items"]}, points, got)

        line = settle_on_own_server(self, {"settle_batches": 1, "background_hosts": 1}, 24, check=ranked)
        self.assertEqual(int(line.group(3)), 1, line.group(0))
        assert_check_ledger(self)


class TestMachineShare(unittest.TestCase):
    def test_hosts_of_one_machine_take_turns(self):
        """No key set (background_cores_pct 50, the default): the server
        running a settlement finds the stack's hosts on one machine (the
        servers' @@hostname, which is this machine's name) and lets their
        batches and counts take half its cores at once, at least one: the
        job's last log line names the machine with every host on it, and
        never more of its statements ran at once than its places (a core's
        worth a place for the standings' recomputation); every bet is paid
        once, the ledger whole."""
        import re
        import socket
        line = settle_on_own_server(self, {}, 24)
        hit = re.search(r"machines: (\S+): (\d+) cores, (\d+) at once(?: for (\d+) % of the "
                        r"time)? \(at most (\d+) seen, \d+ waits, \d+ held over \d+ ms\), "
                        r"hosts((?: \S+)+)\)$",
                        line.string.rstrip())
        self.assertIsNotNone(hit, line.string)
        name, cores, places, seen = hit.group(1), int(hit.group(2)), int(hit.group(3)), int(hit.group(5))
        self.assertEqual(name, socket.gethostname(), line.string)
        self.assertEqual(places, max(1, cores * 50 // 100), line.string)
        # One core: half of its time (the one place closed after each batch).
        self.assertEqual(hit.group(4), "50" if cores == 1 else None, line.string)
        self.assertGreaterEqual(seen, 1, line.string)
        # Its batches one place each; the standings' recomputation's scans one a core.
        self.assertLessEqual(seen, max(places, cores), line.string)
        # Each host with its background threads' note (TestBackgroundIdle) apart.
        hosts = re.sub(r" \([^)]*\)", "", hit.group(6)).split()
        self.assertEqual(len(hosts), len(set(hosts)), line.string)
        self.assertGreaterEqual(len(hosts), 3, line.string)
        assert_check_ledger(self)

    def test_recomputation_at_the_batches_share(self):
        """standings_per_core=0: the standings' recomputation takes the
        machine's places at the batches' share, not a core's worth a place,
        so never more of the machine's statements ran at once than its
        places (the job's last log line); the standings show every user's
        settled points, every bet is paid once, the ledger whole."""
        import re

        def ranked(co, bets, own):
            points = {u.id: expected_settlement(b, RESULTS["home"])[1] - b["stake"] for u, b in bets}
            got = bets[0][0].client.get("/v1/standings/users", query={"company": co["id"]}).expect_json(200)
            self.assertEqual({x["user_id"]: x["points"] for x in got["items"]}, points, got)

        line = settle_on_own_server(self, {"standings_per_core": 0}, 24, check=ranked)
        hit = re.search(r"machines: \S+: (\d+) cores, (\d+) at once.*\(at most (\d+) seen,", line.string)
        self.assertIsNotNone(hit, line.string)
        places, seen = int(hit.group(2)), int(hit.group(3))
        self.assertGreaterEqual(seen, 1, line.string)
        self.assertLessEqual(seen, places, line.string)
        assert_check_ledger(self)

    def test_off_at_zero(self):
        """background_cores_pct=0: no places, no machine asked (the line
        names none); every bet is still paid once."""
        line = settle_on_own_server(self, {"background_cores_pct": 0}, 12)
        self.assertRegex(line.string, r"machines: \)\s*$")
        assert_check_ledger(self)


def own_connections(pid):
    """{local port: None} of the process's TCP connections (its sockets in
    /proc/PID/fd matched with /proc/PID/net/tcp*)."""
    import os
    inodes = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue  # closed meanwhile
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    ports = set()
    for name in ("tcp", "tcp6"):
        with open("/proc/%d/net/%s" % (pid, name)) as f:
            for line in f.readlines()[1:]:
                p = line.split()
                if p[9] in inodes:
                    ports.add(int(p[1].rsplit(":", 1)[1], 16))
    return ports


def idle_gauges(url):
    """({host: betcity_db_background_idle_threads}, {host: open connections
    of its background pool}) of a server's /metrics."""
    import re
    from client import Client
    text = Client(url).get("/metrics").expect(200).body.decode()
    idle = {m.group(1): int(m.group(2)) for m in re.finditer(
        r'^betcity_db_background_idle_threads\{instance="[^"]*",host="([^"]+)"\} (\d+)$', text, re.M)}
    bg = {m.group(1): int(m.group(2)) for m in re.finditer(
        r'^betcity_db_pool_connections\{instance="[^"]*",host="([^"]+)",state="background"\} (\d+)$',
        text, re.M)}
    return idle, bg


def cpu_mount():
    """The mount point of the cgroup v1 hierarchy with the cpu controller,
    or None (cgroup v2 alone)."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            head, _, tail = line.partition(" - ")
            fields = tail.split()
            if len(fields) >= 3 and fields[0] == "cgroup" and "cpu" in fields[2].split(","):
                return head.split()[4]
    return None


def cpu_cgroup(tid):
    """The thread's cpu cgroup ("/..."), or None (cgroup v2 alone)."""
    with open("/proc/%d/cgroup" % tid) as f:
        for line in f:
            _, ctls, path = line.rstrip("\n").split(":", 2)
            if "cpu" in ctls.split(","):
                return path
    return None


def group_idle(group):
    """The cpu.idle of a cpu cgroup ("/..."), or None (none, or no such file)."""
    import os
    mount = cpu_mount()
    if mount is None or group is None:
        return None
    try:
        with open(os.path.join(mount + group, "cpu.idle")) as f:
            return f.read().strip()
    except OSError:
        return None


def server_threads(pid, groups=None):
    """{host: [policy of the MariaDB thread of each of the process's
    connections to it]} (information_schema.PROCESSLIST's client port and
    TID; a connection that closed meanwhile is left out); each thread's cpu
    cgroup into groups ({tid: (policy, path, its cpu.idle)}) too, read at
    the same time."""
    import os
    groups = {} if groups is None else groups
    s = stack.get()
    ports = own_connections(pid)
    out = {}
    for host in s.host_cnfs():
        out[host] = []
        for client, tid in s.sql(host, "SELECT HOST, TID FROM information_schema.PROCESSLIST "
                                       "WHERE TID IS NOT NULL"):
            if ":" in (client or "") and int(client.rsplit(":", 1)[1]) in ports:
                try:
                    policy = os.sched_getscheduler(int(tid))
                    group = cpu_cgroup(int(tid))
                    out[host].append(policy)
                    groups[int(tid)] = (policy, group, group_idle(group))
                except OSError:
                    pass  # its connection closed meanwhile
    return out


class TestBackgroundIdle(unittest.TestCase):
    def settle_and_look(self, settings):
        """A settlement run by a server of its own with settings; then, while
        it runs on, its gauges and the policies of its connections' MariaDB
        threads (once two looks at its gauges around the one at the threads
        agree), and the job's last log line."""
        import time
        seen = {}

        def look(co, bets, own):
            for _ in range(50):
                before = idle_gauges(own.url)
                groups = {}
                threads = server_threads(own.proc.pid, groups)
                if idle_gauges(own.url) == before:
                    seen["gauges"], seen["threads"], seen["groups"] = before, threads, groups
                    return
                time.sleep(0.1)
            self.fail("the server's background connections kept changing")

        line = settle_on_own_server(self, settings, 12, check=look)
        return seen["gauges"], seen["threads"], line, seen["groups"]

    def test_background_threads_run_under_sched_idle(self):
        """By default (background_idle 1, the stack's hosts on this machine
        with thread_cache_size 0): the MariaDB threads of the background
        connections of the server that ran a settlement are under
        SCHED_IDLE, as many as its gauge counts on each host, and those of
        its other connections (its requests') are not; the job's last log
        line says so of each host."""
        import os
        (gauges, bg), threads, line, groups = self.settle_and_look({})
        self.assertGreaterEqual(sum(gauges.values()), 1, (gauges, threads))
        for host, policies in threads.items():
            self.assertEqual(policies.count(os.SCHED_IDLE), gauges.get(host, 0), (host, gauges, threads))
            # Only background connections' threads (its requests' pool stays as it is).
            self.assertLessEqual(gauges.get(host, 0), bg.get(host, 0), (host, gauges, bg))
            self.assertEqual(set(policies) - {os.SCHED_IDLE, os.SCHED_OTHER}, set(), (host, threads))
        # Its requests' connections too (the result's post, the settlement's polls).
        self.assertGreater(sum(len(p) for p in threads.values()), sum(gauges.values()), threads)
        # The lowered threads also in an idle cpu cgroup (where a thread may
        # leave its process's: a cgroup v1 cpu hierarchy), the others not.
        mount = cpu_mount()
        idle = [g for g in groups.values() if g[1] is not None and g[1].endswith("/betcity-background")]
        if mount is None:
            self.assertEqual(idle, [], groups)
            self.assertRegex(line.string, r"hosts .*\(\d+ threads? idle; \d+ not in an idle cgroup: "
                                          r"no cgroup v1 cpu hierarchy")
        else:
            self.assertEqual(len(idle), sum(gauges.values()), (groups, gauges))
            for policy, group, flag in idle:
                self.assertEqual((policy, flag), (os.SCHED_IDLE, "1"), group)
            self.assertRegex(line.string, r"hosts .*\(\d+ threads? idle, in an idle cgroup\)")
            self.assertNotRegex(line.string, r"not in an idle cgroup")
        assert_check_ledger(self)

    def test_off_at_zero(self):
        """background_idle=0: none of the server's connections' threads is
        under SCHED_IDLE, its gauges say 0, the log line notes nothing."""
        import os
        (gauges, bg), threads, line, groups = self.settle_and_look({"background_idle": 0})
        self.assertEqual(set(gauges.values()), {0}, gauges)
        self.assertGreaterEqual(sum(bg.values()), 1, bg)
        self.assertGreaterEqual(sum(len(p) for p in threads.values()), 2, threads)
        for host, policies in threads.items():
            self.assertNotIn(os.SCHED_IDLE, policies, (host, threads))
        self.assertEqual([g for g in groups.values() if g[1] and g[1].endswith("/betcity-background")], [],
                         groups)
        self.assertNotRegex(line.string, r"idle\)|idle cgroup")


def thread_nices(pid):
    """[(name, nice)] of the process's threads, from /proc."""
    import os
    out = []
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                stat = f.read()
        except OSError:
            continue  # the thread ended meanwhile
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        out.append((name, int(stat[stat.rindex(")") + 2:].split()[16])))
    return out


class TestBackgroundPriority(unittest.TestCase):
    def own_threads(self, settings):
        """The threads of an API server of its own with settings, once its
        settler (a job) runs, and the nice value of its main thread."""
        import time
        from test_abuse import OwnServer
        own = OwnServer(settings)
        try:
            deadline = time.time() + 10
            while True:
                threads = thread_nices(own.proc.pid)
                if any(n == "bc-job" for n, _ in threads) or time.time() > deadline:
                    break
                time.sleep(0.1)
            base = dict(thread_nices(own.proc.pid)).get("betcity-api")
        finally:
            own.stop()
        self.assertIsNotNone(base, threads)
        self.assertIn("bc-job", [n for n, _ in threads], threads)
        self.assertIn("bc-loop", [n for n, _ in threads], threads)
        self.assertIn("bc-work", [n for n, _ in threads], threads)
        return threads, base

    def test_jobs_run_at_a_lower_priority_than_requests(self):
        """By default (background_nice 10) the server's jobs (its settler,
        the settlements and the standings' recomputation it runs, and the
        threads they start) run 10 nice steps below the event loops and
        the workers, which keep the process's own."""
        threads, base = self.own_threads({})
        self.assertIn("bc-hash", [n for n, _ in threads], threads)
        for name, nice in threads:
            if name in ("bc-job", "bc-hash"):  # hash_nice: 10 as well
                self.assertEqual(nice, min(base + 10, 19), threads)
            elif name in ("bc-loop", "bc-work"):
                self.assertEqual(nice, base, threads)

    def test_background_nice_0_leaves_jobs_as_they_are(self):
        """And hash_nice 0 the password hashes' threads."""
        threads, base = self.own_threads({"background_nice": 0, "hash_nice": 0})
        self.assertEqual({nice for _, nice in threads}, {base}, threads)
        threads, base = self.own_threads({"background_nice": 0, "hash_nice": 3})
        self.assertEqual({nice for n, nice in threads if n != "bc-hash"}, {base}, threads)
        self.assertEqual({nice for n, nice in threads if n == "bc-hash"}, {min(base + 3, 19)}, threads)


if __name__ == "__main__":
    unittest.main()
