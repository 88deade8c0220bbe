"""A shard move on the stack with replicas, under bet load (as
tests/reshard/test_move_load.py, smaller): `shardctl move S TO-HOST` while
loadgen bets, some of its users on S.

Nothing is lost: the move exits 0, the map names the target, every
acknowledged bet is a row on the target's primary listed once, the loadgen
users' bets on S are exactly the acknowledged ones, the ledger holds and
loadgen saw no error. On the replicas: the target host's replica has the
shard's schema (the same tables, triggers and routines as the target's
primary) and the same rows (CHECKSUM TABLE of every table), and the source
host's replica no longer has the schema, nor does the source's primary.
"""

import time
import unittest

import fo
from fo import h

FILL_USERS = 2000
FILL_BETS = 10000
LOAD_USERS = 24
WATCHED_USERS = 8
LOAD_RATE = 120
REPLICA_WAIT_S = 15  # for the replicas to apply the copy and the drop


def schema_shape(server, shard):
    """Tables (with types), triggers and routines of the shard's schema on a server."""
    s = h.schema(shard)
    q = ("SELECT CONCAT('table ', table_name, ' ', table_type) FROM information_schema.tables WHERE table_schema = '%s' "
         "UNION ALL SELECT CONCAT('trigger ', trigger_name) FROM information_schema.triggers "
         "WHERE trigger_schema = '%s' UNION ALL SELECT CONCAT('routine ', routine_name) "
         "FROM information_schema.routines WHERE routine_schema = '%s'" % (s, s, s))
    return sorted(r[0] for r in h.sql_server(server, q))


def checksums(server, shard):
    """{table: CHECKSUM TABLE} of the shard's base tables on a server."""
    s = h.schema(shard)
    tables = [r[0] for r in h.sql_server(server, "SELECT table_name FROM information_schema.tables WHERE "
                                                 "table_schema = '%s' AND table_type = 'BASE TABLE'" % s)]
    if not tables:
        return {}
    rows = h.sql_server(server, "CHECKSUM TABLE %s" % ", ".join("`%s`.`%s`" % (s, t) for t in sorted(tables)))
    return {r[0].split(".", 1)[1]: r[1] for r in rows}


def has_schema(server, shard):
    return bool(h.sql_server(server, "SELECT 1 FROM information_schema.schemata WHERE schema_name = '%s'"
                             % h.schema(shard)))


class TestMoveOnReplicas(unittest.TestCase):
    def test_move_under_load_reaches_the_replicas(self):
        fo.wait_settled(30)
        m = h.shard_map()
        ghost = h.global_host()
        src = sorted(set(m.values()) - {ghost})[0]
        dst = h.other_host(src, sorted(set(m.values())))
        S = h.pick_shards(1, on_host=src)[0]
        self.addCleanup(fo.recover)
        self.addCleanup(h.settle, S)  # first (cleanups run last in, first out)
        src_rep, dst_rep = fo.replica_of(src), fo.replica_of(dst)
        co_fill, co_load, match = h.new_company(), h.new_company(), h.new_match()
        h.fillshard(S, FILL_USERS, FILL_BETS, match=match["id"], company=co_fill["id"])
        total_before = h.count(src, S)

        lg = h.Loadgen(co_load, match["id"], LOAD_USERS, rate=LOAD_RATE, mix="bet=70,me=30",
                       watch_shard=S, shard_users=(S, WATCHED_USERS))
        lg.wait_loading()
        time.sleep(2)
        mv = h.move_proc(S, dst, "--grace", "1")
        rc = mv.wait(180)
        self.assertEqual(rc, 0, "shardctl move %d %s:\n%s" % (S, dst, mv.describe()))
        time.sleep(2)  # load on the new host
        report = lg.stop()

        problems = []

        def check(ok, msg):
            if not ok:
                problems.append(msg)

        if h.shard_row(S) != (dst, 0):
            # Where each server of the global host says the shard is: the
            # move may have recorded its flip on another one than the primary.
            where = {srv: h.sql_server(srv, "SELECT host, state FROM `%s`.shard_map WHERE shard = %d"
                                       % (h.global_schema(), S)) for srv in h.servers_of(ghost)}
            self.fail("shard %d: `shardctl move %d %s` exited 0 but the catalog on the global primary %s maps it to "
                      "%s; shard_map on each server of %s: %s; schema %s on %s's primary: %s, on %s's: %s\n%s\n"
                      "servers:\n%s" % (S, S, dst, h.primary_of(ghost), h.shard_row(S), ghost, where, h.schema(S),
                                        src, has_schema(h.primary_of(src), S), dst,
                                        has_schema(h.primary_of(dst), S), mv.describe(), fo.describe_status_safe()))
        acked = [b for b, _, _ in lg.acked()]
        watched = [b for b in acked if h.stack.shard_of(b) == S]
        check(len(watched) > 0, "no acknowledged bet on shard %d" % S)
        problems += h.check_acked(acked)
        where = "user_id IN (SELECT id FROM `%s`.users WHERE company_id = %d)" % (h.schema(S), int(co_load["id"]))
        n_load = h.count(dst, S, "bets", where)
        unknown = int((report.get("bets") or {}).get("unknown") or 0)
        check(len(watched) <= n_load <= len(watched) + unknown,
              "bets of loadgen's users in shard %d on %s: %d rows, %d acknowledged, %d unknown"
              % (S, dst, n_load, len(watched), unknown))
        check(h.count(dst, S) == total_before + n_load,
              "bets of shard %d on %s: %d, want %d before the move + %d of loadgen"
              % (S, dst, h.count(dst, S), total_before, n_load))
        rc, out = h.check_ledger()
        check(rc == 0, "bcadmin check-ledger after the move: exit %d\n%s" % (rc, h.tail(out)))
        n_err, what = h.loadgen_errors(report)
        check(n_err == 0, "loadgen errors: %s" % what)

        # The replicas: the target's has the shard as its primary has it,
        # the source's has it no more.
        dst_prim = h.primary_of(dst)
        want_shape, want_sums = schema_shape(dst_prim, S), checksums(dst_prim, S)
        deadline = time.time() + REPLICA_WAIT_S
        while True:
            shape, sums = schema_shape(dst_rep, S), checksums(dst_rep, S)
            gone = not has_schema(src_rep, S) and not has_schema(h.primary_of(src), S)
            if (shape, sums) == (want_shape, want_sums) and gone:
                break
            if time.time() > deadline:
                check(shape == want_shape, "schema %s on %s's replica %s: %s\nwant (as on %s): %s"
                      % (h.schema(S), dst, dst_rep, shape, dst_prim, want_shape))
                check(sums == want_sums, "rows of %s on %s's replica %s: checksums %s, want (as on %s) %s"
                      % (h.schema(S), dst, dst_rep, sums, dst_prim, want_sums))
                check(gone, "%s still on %s's replica %s (%s) or primary (%s) %d s after the move"
                      % (h.schema(S), src, src_rep, has_schema(src_rep, S), has_schema(h.primary_of(src), S),
                         REPLICA_WAIT_S))
                break
            time.sleep(0.5)
        check(want_sums.get("bets") not in (None, "0"), "no bets rows on %s: %s" % (dst_prim, want_sums))
        done = mv.of("done")
        fo.log("move of shard %d %s -> %s under load: %.1f s, pause_ms %s; %d bets acked (%d on shard %d); "
               "replica %s has %d tables, %d bets" % (S, src, dst, done[0].get("seconds", -1) if done else -1,
                                                    done[0].get("pause_ms") if done else None, len(acked),
                                                    len(watched), S, dst_rep, len(want_sums), h.count(dst, S)))
        if problems:
            self.fail("shard %d moved from %s to %s under load:\n  %s\n%s\nservers:\n%s"
                      % (S, src, dst, "\n  ".join(problems), mv.describe(), fo.describe_status(fo.status())))
        fo.wait_settled(30)


def fence_of(server, shard):
    """shard_state.fenced of the shard's schema on one server, as text."""
    rows = h.sql_server(server, "SELECT fenced FROM `%s`.shard_state WHERE id = 1" % h.schema(shard))
    return rows[0][0] if rows else None


def bet_within(client, match_id, seconds):
    """A bet placed within seconds (503s retried): its id, or the last failure."""
    deadline, last = time.time() + seconds, None
    while time.time() < deadline:
        try:
            return h.bet(client, match_id), None
        except AssertionError as e:
            last = str(e).split("\n")[0]
        time.sleep(0.3)
    return None, last


def shard_to_move(tc, both_off_global=False):
    """(source host, target host, shard of the source) for a move test, the
    stack settled first; cleanup restores the servers, then rolls back a
    move the test left unfinished (it failed before its own abort)."""
    fo.wait_settled(30)
    hosts = sorted(set(h.shard_map().values()))
    off = [x for x in hosts if x != h.global_host()]
    src = off[0]
    dst = off[1] if both_off_global else h.other_host(src, hosts)
    S = h.pick_shards(1, on_host=src)[0]

    def cleanup():
        fo.recover()
        h.shardctl("move", str(S), "--abort", timeout=120)
    tc.addCleanup(cleanup)
    return src, dst, S


def wait_promoted(tc, host, replica, timeout=15):
    """Waits until the guard made replica the primary of host (a failover)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if h.primary_of(host, timeout=0) == replica:
                return
        except AssertionError:
            pass
        time.sleep(0.3)
    tc.assertEqual(h.primary_of(host), replica, "no failover of %s to %s:\n%s"
                   % (host, replica, fo.guard_log_tail()))


class TestFenceAcrossFailover(unittest.TestCase):
    """A move killed inside its cut-over, fenced, then its source host failed
    over: the promoted replica holds the fence as its primary did (the
    source's fence is logged where the source has replicas), so the shard
    waits for the operator (`move --abort`) whichever server is primary.
    After the abort, the old primary's restart and a switchover back to it,
    the shard takes bets: the unfence reached every server of the host. The
    fence was not logged before: the promoted replica took writes the moment
    it was promoted, and after a switchover back the old primary's fence,
    never lifted, refused every write of the shard for good."""

    def test_fence_follows_the_source_through_a_failover_and_back(self):
        src, dst, S = shard_to_move(self)
        co, match = h.new_company(), h.new_match()
        h.fillshard(S, 5, 5, match=match["id"], company=co["id"])
        (uid, cid), = h.users_of(S, co["id"])
        client = h.member_client(uid, cid)
        old, rep = h.primary_of(src), fo.replica_of(src)

        mv = h.move_proc(S, dst, hold="fenced")
        h.wait_hold(mv, "fenced")
        deadline = time.time() + 10
        while fence_of(rep, S) != "1" and time.time() < deadline:
            time.sleep(0.2)
        self.assertEqual((fence_of(old, S), fence_of(rep, S)), ("1", "1"),
                         "shard %d fenced on %s's primary %s, its replica %s (10 s)" % (S, src, old, rep))
        mv.kill9()
        fo.kill9(old)
        wait_promoted(self, src, rep)
        self.assertEqual(fence_of(rep, S), "1", "the promoted replica lost the cut-over's fence")

        r = h.shardctl("move", str(S), "--abort", timeout=120)
        self.assertEqual(r.rc, 0, "move %d --abort after the failover:\n%s" % (S, r.describe()))
        self.assertEqual(h.shard_row(S)[0], src, "the aborted move left shard %d on %s" % (S, src))
        bid, why = bet_within(client, match["id"], 10)
        self.assertIsNotNone(bid, "no bet on shard %d after the abort: %s" % (S, why))

        fo.restart(old)
        fo.wait_settled(30)
        r = h.shardctl("switchover", src, timeout=60)
        self.assertEqual(r.rc, 0, "switchover %s back to %s:\n%s" % (src, old, r.describe()))
        self.assertEqual(h.primary_of(src), old)
        bid, why = bet_within(client, match["id"], 10)
        self.assertIsNotNone(bid, "no bet on shard %d after the switchover back to %s: %s" % (S, old, why))
        self.assertEqual((fence_of(old, S), fence_of(rep, S)), ("0", "0"))
        rc, out = h.check_ledger()
        self.assertEqual(rc, 0, "bcadmin check-ledger:\n%s" % h.tail(out))
        fo.wait_settled(30)



class TestSourceFailoverInCatchup(unittest.TestCase):
    """A move killed in catch-up, then its source host failed over: the
    move's replication connection reads the old primary, at positions of its
    binlog that the new primary's do not continue. The re-run the runbook
    gives for `catchup` says so at once (exit 1, "failed over", what to do)
    instead of waiting for ever on a lag measured against another server's
    binlog; `--abort` rolls it back and a new move of the shard succeeds."""

    def test_rerun_after_a_source_failover_fails_at_once_and_abort_recovers(self):
        src, dst, S = shard_to_move(self)
        old, rep = h.primary_of(src), fo.replica_of(src)
        mv = h.move_proc(S, dst, hold="catchup")
        h.wait_hold(mv, "catchup")
        mv.kill9()
        fo.kill9(old)
        wait_promoted(self, src, rep)

        t0 = time.time()
        r = h.shardctl("move", str(S), dst, timeout=60)
        took = time.time() - t0
        self.assertNotEqual(r.rc, 0, "the re-run after the source's failover succeeded?\n%s" % r.describe())
        self.assertLess(took, 20, "the re-run took %.1f s to fail" % took)
        self.assertIn("failed over", r.out + r.err, r.describe())
        self.assertIn("--abort", r.out + r.err, r.describe())
        r = h.shardctl("move", str(S), "--abort", timeout=120)
        self.assertEqual(r.rc, 0, "move %d --abort:\n%s" % (S, r.describe()))
        fo.restart(old)
        fo.wait_settled(30)
        r = h.shardctl("move", str(S), dst, "--grace", "1", timeout=180)
        self.assertEqual(r.rc, 0, "a new move of shard %d after the abort:\n%s" % (S, r.describe()))
        self.assertEqual(h.shard_row(S)[0], dst)
        rc, out = h.check_ledger()
        self.assertEqual(rc, 0, "bcadmin check-ledger:\n%s" % h.tail(out))



class TestTargetFailoverDropsTheMoveConnection(unittest.TestCase):
    """A move killed in catch-up, then its target host failed over: the old
    target primary holds the move's replication connection, which its new
    primary lacks (the re-run says so; `--abort` rolls the move back). When
    the old primary comes back and rejoins as a replica, the guard removes
    that connection: left, it would restart with the server without its
    filter and apply the source's whole binlog, the source's DROP of a moved
    shard too. Its own replication then settles as usual."""

    def test_rejoined_old_target_keeps_no_move_connection(self):
        src, dst, S = shard_to_move(self, both_off_global=True)
        chan = "%s_move_%04d" % (h.stack.get().prefix, S)
        old, rep = h.primary_of(dst), fo.replica_of(dst)
        mv = h.move_proc(S, dst, hold="catchup")
        h.wait_hold(mv, "catchup")
        mv.kill9()

        def connections(server):
            return [r[0] for r in h.sql_server(server, "SHOW ALL SLAVES STATUS")]
        self.assertIn(chan, connections(old), "the move's connection on the target's primary %s" % old)
        fo.kill9(old)
        wait_promoted(self, dst, rep)
        r = h.shardctl("move", str(S), "--abort", timeout=120)
        self.assertEqual(r.rc, 0, "move %d --abort after the target's failover:\n%s" % (S, r.describe()))
        fo.restart(old)
        # The guard rejoins it, or marks it for rebuild when its GTIDs of the
        # source's domain (what the move's connection applied and logged)
        # are not in the new primary's binlog: either way the connection goes.
        deadline, role = time.time() + 30, None
        while time.time() < deadline:
            srv = fo.status().get(old) or {}
            role = srv.get("role")
            if (role == "replica" and srv.get("replicating")) or role == "rebuild":
                break
            time.sleep(0.5)
        self.assertIn(role, ("replica", "rebuild"), "%s 30 s after its restart: %s\n%s"
                      % (old, fo.status().get(old), fo.guard_log_tail()))
        self.assertNotIn(chan, connections(old), "the old primary %s (%s) keeps the move's connection:\n%s"
                         % (old, role, fo.guard_log_tail()))
        fo.log("old target primary %s after its restart: %s" % (old, role))
        self.assertEqual(h.shard_row(S)[0], src)



class TestRelayLogFailureRecovered(unittest.TestCase):
    """Removing a named replication connection from a replica (RESET SLAVE
    'x' ALL, as an operator cleans up a move's connection by hand) stopped
    the replica's own replication in MariaDB with a relay log write failure
    (1595) in drills; the guard now starts it again (logged), so the host's
    writes, which wait for that replica's acknowledgement, go on."""

    def test_guard_restarts_a_replica_after_a_relay_log_write_failure(self):
        fo.wait_settled(30)
        self.addCleanup(fo.recover)
        host = sorted(set(h.shard_map().values()) - {h.global_host()})[0]
        rep = fo.replica_of(host)
        other = h.primary_of(h.global_host())
        cnf = h.server_cnf(other)
        port = fo._cnf_value(cnf, "port")
        user, password = fo._cnf_value(cnf, "user"), fo._cnf_value(cnf, "password")
        size = fo.guard_log_size()
        chan = "%s_move_9999" % h.stack.get().prefix
        h.sql_server(rep, "CHANGE MASTER '%s' TO MASTER_HOST = '127.0.0.1', MASTER_PORT = %s, MASTER_USER = '%s', "
                     "MASTER_PASSWORD = '%s', MASTER_USE_GTID = no, MASTER_LOG_FILE = 'none.000001', "
                     "MASTER_LOG_POS = 4; SET GLOBAL %s.replicate_do_db = 'no_such_schema'; START SLAVE '%s'"
                     % (chan, port, user, password, chan, chan))
        time.sleep(1)
        h.sql_server(rep, "STOP SLAVE '%s'; RESET SLAVE '%s' ALL" % (chan, chan))
        st = fo.wait_settled(15)
        self.assertTrue(st[rep]["replicating"], "replica %s after the reset: %s\nguard log:\n%s"
                        % (rep, st[rep], fo.guard_log_since(size)))
        fo.log("relay log write failure after the reset: %s" % (
            "yes, started again by the guard" if "started again" in fo.guard_log_since(size) else "no"))


if __name__ == "__main__":
    unittest.main()
