"""A settlement outlives the API server that runs it: the server holding the
job's lease is killed (SIGKILL) while one of its batch transactions is open,
and the other server takes the job over by itself when the lease runs out
(nobody re-posts anything) and finishes it. Every bet is paid exactly once.

Thousands of bets on a few shards of two hosts (tools/bench/fillshard, the
same rows the API makes), plus a few bets placed through the API, all on one
match. Before the result is posted, a session of the test holds the row lock
of a user whose bets are in the second batch of one shard and not in its
first, so that batch stays open, waiting for that user, however fast the
batches run. The result is posted to the first server, which runs the job;
the test waits until at least one batch has committed and a batch
transaction of the match is open on a database host (the held user's by its
lock wait, information_schema.INNODB_LOCK_WAITS; any other by the rows it
locks, INNODB_TRX), kills the lease's holder, then ends its own
session (the lock is freed, the killed server's open batch is rolled
back). Then: another server holds the lease within lease + a few
seconds, it starts from the bets settled at the handover (its claim read
each bet's status, where the first run counted from the index alone), the
settlement is done, no bet is open, each bet's status and payout
follow the rules, the ledger has exactly one credit row per paying bet, points
are right, bcadmin check-ledger and check-standings pass, and the progress shows
every bet of the match settled (bets_settled == bets_total).

The same with SIGTERM instead of SIGKILL: the server stops the settlement
between batches and joins its threads before freeing the router they use, so
it exits at once and cleanly, releases the lease, and the other server goes
on without waiting for the lease to run out."""

import glob
import os
import re
import subprocess
import sys
import time
import unittest

import stack
from checks import assert_check_ledger, expected_settlement
from client import Client
from fixtures import admin, new_company, new_match, new_users, place_bet, wait_past_kickoff, wait_settled

LEASE_S = 5  # SETTLE_LEASE_MS in api/api_settle_job.c
HOSTS = 2  # hosts whose shards get the bulk bets
SHARDS_PER_HOST = 2
FILL_USERS = 2500  # per shard
FILL_BETS = 15000  # per shard: 60 batches of at most 250
BATCH = 250  # settle_batch_bets' default, API_SETTLE_BATCH_BETS in api/api_int.h
RESULT = {"home_goals": 2, "away_goals": 0}  # home wins
PICKS = ("home", "draw", "away")


def running(pid):
    """Whether pid is a live process (a zombie has exited)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def log(msg):
    sys.stdout.write("    [takeover] %s\n" % msg)
    sys.stdout.flush()


class TestSettlementTakeover(unittest.TestCase):
    def setUp(self):
        self.s = stack.get()
        self.s.require_dir()
        if len(self.s.api_urls) < 2:
            self.skipTest("needs two API servers (BC_API_URLS has %d)" % len(self.s.api_urls))
        self.fillshard = os.path.join(os.path.dirname(self.s.bcadmin), "fillshard")
        if not os.access(self.fillshard, os.X_OK):
            self.skipTest("%s is not built" % self.fillshard)
        self.gs = self.s.global_schema()

    # ------------------------------------------------------------ helpers

    def fill(self, shard, match, company):
        p = subprocess.run([self.fillshard, "-c", self.s.cluster, "--shard", str(shard), "--users",
                            str(FILL_USERS), "--bets", str(FILL_BETS), "--match", str(match), "--company",
                            str(company)], capture_output=True, text=True, timeout=600)
        self.assertEqual(p.returncode, 0, "fillshard --shard %d: %s" % (shard, (p.stdout + p.stderr)[-2000:]))

    def bcadmin(self, cmd):
        p = subprocess.run([self.s.bcadmin, "-c", self.s.cluster, cmd], capture_output=True, text=True,
                           timeout=300)
        return p.returncode, (p.stdout + p.stderr).strip()

    def job(self, match):
        """(lease_owner, lease held now, state) of the job's row."""
        rows = self.s.sql_global("SELECT lease_owner, lease_until > UTC_TIMESTAMP(3), state FROM `%s`.settlements "
                                 "WHERE match_id = %d" % (self.gs, int(match["id"])))
        if not rows:
            return None, False, None
        return rows[0][0], rows[0][1] == "1", rows[0][2]

    def settled(self, match, shards):
        rows = self.s.sql_all_shards("SELECT COUNT(*) FROM {s}.bets WHERE match_id = %d AND status <> 'open'"
                                     % int(match["id"]), shards)
        return sum(int(r[0]) for r in rows)

    def open_batches(self, hosts):
        """[(host, rows locked)] of the transactions that lock many rows now (settlement batches)."""
        out = []
        for h in hosts:
            for (n,) in self.s.sql(h, "SELECT trx_rows_locked FROM information_schema.INNODB_TRX "
                                      "WHERE trx_rows_locked >= 100"):
                out.append((h, int(n)))
        return out

    def waiting_on(self, holder):
        """[rows locked] of the transactions that wait for a lock held by
        holder's session (hold_second_batch()): the shard's second batch,
        open, its first committed."""
        return [int(n) for (n,) in self.s.sql(
            holder.bc_host, "SELECT r.trx_rows_locked FROM information_schema.INNODB_LOCK_WAITS w "
            "JOIN information_schema.INNODB_TRX b ON b.trx_id = w.blocking_trx_id "
            "JOIN information_schema.INNODB_TRX r ON r.trx_id = w.requesting_trx_id "
            "WHERE b.trx_mysql_thread_id = %d" % holder.bc_conn)]

    def locking_users(self, host):
        """[seconds] of the batches' statements that lock their users on host now
        (api/api_settle_batch.c, batch_lock_users()): each such batch has its bets
        locked already, open. Seen in PROCESSLIST, apart from InnoDB's tables."""
        return [int(t) for (t,) in self.s.sql(
            host, "SELECT TIME FROM information_schema.PROCESSLIST WHERE COMMAND = 'Query' "
                  "AND INFO LIKE 'WITH v (id) AS (VALUES %'")]

    def hold_second_batch(self, match, shard, host):
        """Starts a session that holds the row lock of a user with bets in
        shard's second batch of match and none in its first (the batches take
        the bets in id order): that batch waits for it, open, once the first
        has committed. Returns the session; release() ends it."""
        s = self.s
        sch = "`%s`" % s.schema(shard)
        rows = s.sql(host, "SELECT user_id FROM %s.bets WHERE match_id = %d ORDER BY id" % (sch, int(match["id"])))
        first = set(r[0] for r in rows[:BATCH])
        users = [r[0] for r in rows[BATCH:2 * BATCH] if r[0] not in first]
        self.assertTrue(users, "no user of shard %d with bets in the second batch only" % shard)
        user = int(users[len(users) // 2])
        holder = subprocess.Popen(["mariadb", "--defaults-file=" + s.host_cnfs()[host], "-N", "-B", "--unbuffered",
                                   "-e", "START TRANSACTION; SELECT id INTO @u FROM %s.users WHERE id = %d FOR "
                                   "UPDATE; SELECT CONNECTION_ID(); DO SLEEP(300);" % (sch, user)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = holder.stdout.readline().strip()
        if not line.isdigit():
            holder.kill()
            self.fail("the session did not take user %d's lock: %r %s" % (user, line, holder.stderr.read()))
        holder.bc_host, holder.bc_conn = host, int(line)
        log("user %d of shard %d held by connection %s on %s" % (user, shard, line, host))
        return holder

    def release(self, holder):
        """Ends the session of hold_second_batch() (its transaction rolls back)."""
        if holder is None or holder.poll() is not None:
            return
        try:
            self.s.sql(holder.bc_host, "KILL %d" % holder.bc_conn)
            holder.wait(timeout=30)
        except Exception:  # the session must end whatever happened
            holder.kill()
            holder.wait()

    def server_index(self, name):
        idx = int(name[3:]) - 1 if name.startswith("api") and name[3:].isdigit() else -1
        self.assertTrue(0 <= idx < len(self.s.api_urls), "lease owner %r is not one of the API servers" % name)
        return idx

    def pid_of(self, name):
        p = self.s.devstack_cmd("pid", name)
        self.assertEqual(p.returncode, 0, "devstack pid %s: %s" % (name, p.stderr))
        return int(p.stdout.strip())

    def restart(self, name):
        self.s.restart_api(name)

    def claims(self, name, match):
        """[(bets settled before, bets, every bet read)] of the claims of match's job
        that server name logged ("settlement N (result): owner runs it; ..."), in order."""
        pat = re.compile(r"settlement %d \(\w+\): \S+ runs it; \d+ of \d+ shards and (\d+) of (\d+) bets "
                         r"settled before \(counted in \d+ ms(, every bet read)?" % int(match["id"]))
        with open(os.path.join(self.s.dir, name, "api.log"), errors="replace") as f:
            return [(int(g.group(1)), int(g.group(2)), g.group(3) is not None) for g in map(pat.search, f) if g]

    def check_claims(self, m, total, first, second, at_handover):
        """The first run (on server first) counted the match's bets from their index
        alone, with none settled; the run that took over (on second) read every bet,
        so its progress starts at the bets settled at the handover (at least
        at_handover), partly settled shards included, not at the guarded shards'."""
        c1, c2 = self.claims(first, m), self.claims(second, m)
        log("claims: %s %s, %s %s; %d bets settled at the handover" % (first, c1, second, c2, at_handover))
        self.assertEqual(c1[:1], [(0, total, False)], "the first run's claim in %s's log" % first)
        self.assertTrue(c2, "no claim in %s's log" % second)
        before, bets, read = c2[0]
        self.assertEqual((bets, read), (total, True), "the claim that took over: %s" % (c2,))
        self.assertGreaterEqual(before, at_handover, "the run that took over did not count the bets settled "
                                                     "before it, on shards not finished: %s" % (c2,))
        self.assertLessEqual(before, total, c2)

    def sum_shards(self, select_fmt):
        """Column sums of select_fmt over every shard."""
        rows = self.s.sql_all_shards(select_fmt)
        return [sum(int(r[i] or 0) for r in rows) for i in range(len(rows[0]))] if rows else []

    # ------------------------------------------------------------ the tests

    def prepare(self):
        """A match with thousands of bets on a few shards; its result posted to
        api1. Returns (company, match, total bets, API bets, shards, hosts)."""
        s = self.s
        co = new_company()
        users = new_users(co, 6)
        m = new_match(kickoff_in=4, odds=(1.95, 3.40, 4.10))
        mid = int(m["id"])
        api_bets = [(u, place_bet(u, m, PICKS[i % 3], 20 + i)) for i, u in enumerate(users)]

        smap = s.shard_map(refresh=True)
        hosts = sorted(set(smap.values()))[:HOSTS]
        shards = [sh for h in hosts for sh in s.shards_on(h)[:SHARDS_PER_HOST]]
        t0 = time.time()
        for sh in shards:
            self.fill(sh, mid, co["id"])
        total = self.sum_shards("SELECT COUNT(*) FROM {s}.bets WHERE match_id = %d" % mid)[0]
        log("%d bets on match %d (%d filled on shards %s of %s in %.1f s, %d through the API)"
            % (total, mid, FILL_BETS * len(shards), shards, hosts, time.time() - t0, len(api_bets)))
        self.assertEqual(total, FILL_BETS * len(shards) + len(api_bets))
        # fillshard counts its users among their company's members in the shards' aggregates,
        # as a signup does (it did not, and check-standings failed after it).
        rc, out = self.bcadmin("check-standings")
        self.assertEqual(rc, 0, "bcadmin check-standings after fillshard: %s" % out[-2000:])
        wait_past_kickoff(m)
        self.holder = self.hold_second_batch(m, shards[0], hosts[0])
        self.addCleanup(self.release, self.holder)

        # The first server takes the result and is woken to run the job.
        first = Client(s.api_urls[0], admin().token)
        r = first.post("/v1/matches/%d/result" % mid, RESULT).expect_json(202, msg="post result to api1")
        self.t_post = time.time()
        self.assertEqual(r["state"], "running", r)
        return co, m, total, api_bets, shards, hosts

    def caught_mid_batch(self, m, total, shards, hosts):
        """Waits until the job's runner committed a batch and has one open;
        returns (its server's name, lease owner, its pid, a surviving server's
        URL, bets settled so far, the open batches)."""
        s = self.s
        t_post = self.t_post
        owner = None
        while owner is None:
            owner, held, state = self.job(m)
            self.assertNotEqual(state, "done", "the job was done before the test could kill its runner")
            self.assertLess(time.time() - t_post, 10, "nobody claimed the job within 10 s")
            if owner is None:
                time.sleep(0.02)
        name = owner.split("/")[0]
        survivor = s.api_urls[1 - self.server_index(name)] if len(s.api_urls) == 2 else s.api_urls[
            (self.server_index(name) + 1) % len(s.api_urls)]
        pid = self.pid_of(name)

        # At least one batch committed, and one open: then kill the lease's holder. The
        # held user's batch is seen by its lock wait or its running statement, any
        # other by the rows it locks.
        done_before = batches = None
        while True:
            done_before = self.settled(m, shards)
            h = self.holder.bc_host
            batches = ([(h, n) for n in self.waiting_on(self.holder)]
                       or [(h, "locking its users for %d s" % t) for t in self.locking_users(h)]
                       or self.open_batches(hosts))
            if done_before > 0 and batches:
                break
            self.assertNotEqual(self.job(m)[2], "done", "the settlement ended before a batch could be caught "
                                                        "open, though a user of its second batch was held")
            if time.time() - t_post >= 60:
                self.fail("no batch seen within 60 s (%d of %d bets settled; %s)\n%s"
                          % (done_before, total, self.busy(), self.diagnosis(m)))
        return name, owner, pid, survivor, done_before, batches

    def busy(self):
        """One line: each host's statements running now (seconds, state, start), for the
        first line of a failure, the one a CI summary keeps."""
        out = []
        for h in sorted(set(self.s.shard_map().values())):
            try:
                rows = self.s.sql(h, "SELECT TIME, STATE, LEFT(REPLACE(INFO, '\\n', ' '), 24) FROM "
                                     "information_schema.PROCESSLIST WHERE COMMAND = 'Query' AND "
                                     "ID <> CONNECTION_ID() ORDER BY TIME DESC LIMIT 3")
            except Exception as e:  # the line must not hide the failure
                rows = [[str(e)[:40], "", ""]]
            out.append("%s: %s" % (h, " | ".join("%ss %s %s" % tuple(r) for r in rows) or "idle"))
        return "; ".join(out)

    def diagnosis(self, m):
        """What the job, the hosts and the servers' logs say, for a failure's message."""
        out = ["job: %r" % (self.job(m),)]
        for h in sorted(set(self.s.shard_map().values())):
            for q in ("SELECT trx_id, trx_state, trx_started, trx_rows_locked, trx_mysql_thread_id, "
                      "LEFT(trx_query, 120) FROM information_schema.INNODB_TRX",
                      "SELECT ID, USER, COMMAND, TIME, STATE, LEFT(INFO, 120) FROM "
                      "information_schema.PROCESSLIST WHERE COMMAND <> 'Sleep'"):
                try:
                    out += ["%s: %s" % (h, "\t".join(map(str, r))) for r in self.s.sql(h, q)]
                except Exception as e:  # the diagnosis must not hide the failure
                    out.append("%s: %s" % (h, e))
        d = self.s.dir
        for name in sorted(os.listdir(d)) if d else []:
            if not name.startswith("api") or not os.path.isdir(os.path.join(d, name)):
                continue
            for lp in glob.glob(os.path.join(d, name, "*.log")):
                with open(lp, errors="replace") as f:
                    lines = [l.rstrip() for l in f if "settle" in l or "router" in l or "job" in l]
                out += ["%s: %s" % (name, l[:400]) for l in lines[-25:]]
        return "\n".join(out)

    def test_runner_killed_mid_batch_another_server_finishes(self):
        co, m, total, api_bets, shards, hosts = self.prepare()
        name, owner, pid, survivor, done_before, batches = self.caught_mid_batch(m, total, shards, hosts)
        t_post = self.t_post
        try:
            os.kill(pid, 9)
            t_kill = time.time()
            log("killed %s (%s) %.2f s after the post, with %d of %d bets settled and batches open: %s"
                % (name, owner, t_kill - t_post, done_before, total, batches))
            self.release(self.holder)
            # Nothing settles now until another server takes the lease: what the shards say
            # is settled is what that server must start from.
            at_handover = self.sum_shards("SELECT COUNT(*) FROM {s}.bets WHERE match_id = %d AND "
                                          "status <> 'open'" % int(m["id"]))[0]

            # The other server takes the lease over once it runs out; nobody re-posts.
            new_owner = owner
            while new_owner == owner:
                new_owner, held, state = self.job(m)
                if state == "done":
                    break
                self.assertLess(time.time() - t_kill, LEASE_S + 5,
                                "no other server took the job over within lease + 5 s (holder %s)" % new_owner)
                time.sleep(0.1)
            t_take = time.time()
            log("taken over by %s %.2f s after the kill" % (new_owner, t_take - t_kill))
            self.assertNotEqual(new_owner.split("/")[0], name, "the dead server holds the lease again")
            st = wait_settled(m, via=Client(survivor, admin().token), timeout=120)
            log("done %.2f s after the kill: %s" % (time.time() - t_kill, st))
        finally:
            self.restart(name)
        self.check_settled_once(co, m, total, api_bets, st, name)
        self.check_claims(m, total, name, new_owner.split("/")[0], at_handover)

    def test_runner_stopped_mid_batch_exits_and_hands_over(self):
        """SIGTERM to the lease's holder mid-batch: the server stops its
        settlement between batches and joins its threads before it frees the
        router they use (api_server_destroy, api/api_jobs.c), so it exits at
        once and cleanly (no 30 s wait, no sanitizer report in its log under
        the ASan build), releases the lease, and the other server goes on
        without waiting for the lease to run out."""
        co, m, total, api_bets, shards, hosts = self.prepare()
        name, owner, pid, survivor, done_before, batches = self.caught_mid_batch(m, total, shards, hosts)
        log_path = os.path.join(self.s.dir, name, "api.log")
        log_size = os.path.getsize(log_path)
        try:
            os.kill(pid, 15)
            t_stop = time.time()
            log("SIGTERM to %s (%s) with %d of %d bets settled and batches open: %s"
                % (name, owner, done_before, total, batches))
            self.release(self.holder)  # the open batch ends, then the server stops
            while running(pid) and time.time() - t_stop < 15:
                time.sleep(0.05)
            t_exit = time.time()
            self.assertFalse(running(pid), "%s still runs 15 s after SIGTERM" % name)
            log("%s exited %.2f s after SIGTERM" % (name, t_exit - t_stop))
            with open(log_path, errors="replace") as f:
                f.seek(log_size)
                tail = f.read()
            self.assertIn("stopping", tail, "no shutdown line in %s" % log_path)
            for bad in ("AddressSanitizer", "runtime error:", "LeakSanitizer", "Segmentation"):
                self.assertNotIn(bad, tail, "%s in the log of %s after SIGTERM:\n%s" % (bad, name, tail[-3000:]))
            # The lease was released: another server holds it well before it would have run out.
            new_owner, state = owner, None
            while new_owner == owner:
                new_owner, held, state = self.job(m)
                if state == "done":
                    break
                self.assertLess(time.time() - t_stop, LEASE_S,
                                "the stopped server did not release the lease (holder %s)" % new_owner)
                time.sleep(0.05)
            log("taken over by %s %.2f s after SIGTERM" % (new_owner, time.time() - t_stop))
            st = wait_settled(m, via=Client(survivor, admin().token), timeout=120)
        finally:
            self.restart(name)
        self.check_settled_once(co, m, total, api_bets, st, name)
        # The stopped server's last batches commit after done_before was counted: a lower bound.
        self.check_claims(m, total, name, new_owner.split("/")[0], done_before)

    def check_settled_once(self, co, m, total, api_bets, st, name):
        mid = int(m["id"])
        # Progress: every bet of the match settled, on every shard.
        self.assertEqual((st["state"], st["shards_done"]), ("done", st["shards_total"]), st)
        self.assertEqual(st["bets_total"], total, st)
        self.assertEqual(st["bets_settled"], total, st)
        self.assertNotEqual(self.job(m)[0].split("/")[0], name, "finished by the killed server?")

        # Exactly once, on the rows of every shard.
        open_left, wrong = self.sum_shards(
            "SELECT COALESCE(SUM(status = 'open'), 0), COALESCE(SUM(status <> 'open' AND (status <> "
            "IF(pick = 'home', 'won', 'lost') OR payout <> IF(pick = 'home', FLOOR(stake * odds / 100), 0) "
            "OR settled_at IS NULL)), 0) FROM {s}.bets WHERE match_id = %d" % mid)
        self.assertEqual(open_left, 0, "bets of the match still open")
        self.assertEqual(wrong, 0, "bets settled with the wrong status or payout")
        paying, credits, credited_bets, paid, credited = self.sum_shards(
            "SELECT (SELECT COUNT(*) FROM {s}.bets WHERE match_id = %d AND payout > 0), "
            "COUNT(l.id), COUNT(DISTINCT l.bet_id), (SELECT COALESCE(SUM(payout), 0) FROM {s}.bets "
            "WHERE match_id = %d), COALESCE(SUM(l.delta), 0) FROM {s}.ledger l JOIN {s}.bets b ON "
            "b.id = l.bet_id WHERE b.match_id = %d AND l.reason IN ('payout', 'refund')" % (mid, mid, mid))
        log("%d paying bets, %d credit rows for %d bets; %d paid, %d credited"
            % (paying, credits, credited_bets, paid, credited))
        self.assertEqual((credits, credited_bets), (paying, paying), "one credit ledger row per paying bet")
        self.assertEqual(credited, paid, "ledger credits and payouts")
        wrong_points = self.sum_shards(
            "SELECT COUNT(*) FROM {s}.users u LEFT JOIN (SELECT user_id, SUM(payout - stake) AS p FROM "
            "{s}.bets WHERE match_id = %d GROUP BY user_id) b ON b.user_id = u.id WHERE u.company_id = %d "
            "AND u.points <> COALESCE(b.p, 0)" % (mid, int(co["id"])))[0]
        self.assertEqual(wrong_points, 0, "users whose points are not the sum of (payout - stake)")
        for u, b in api_bets:
            _, pay = expected_settlement(b, RESULT)
            self.assertEqual(u.balance(), u.initial_balance - b["stake"] + pay, "balance of user %s" % u.id)
        assert_check_ledger(self)
        # The standings aggregates got each batch's points once too.
        rc, out = self.bcadmin("check-standings")
        self.assertEqual(rc, 0, "bcadmin check-standings after the takeover:\n%s" % out[-3000:])


if __name__ == "__main__":
    unittest.main()
