"""A primary whose commits wait for an acknowledgement that will never come,
though its replica has them: the guard acknowledges on the replica's word.

The real case: a replica receives a transaction, and the dump connection
that sent it ends before its acknowledgement is read (the dump thread killed
as the replica reconnected, the link cut). The replica reconnects from the
GTID after the transaction, which is never sent again, so never
acknowledged; with AFTER_SYNC nothing later is written either, and the
primary waits for good (seen once in CI after a switchover under load). That
loss cannot be timed from a test, so a replica that receives without
acknowledging stands in for it: its I/O thread restarted with
rpl_semi_sync_slave_enabled off. The primary's state is the same: commits
wait, its binlog does not move, and the replica has all of it.

  - each of a few writes on the host's primary returns within WRITE_MAX_S
    (without the guard's release each waits until the client gives up);
  - the guard logs the release of each ("… lost; released");
  - every row written is on the replica;
  - nothing failed over, and once the replica acknowledges again the
    host's writes need no release.
"""

import time
import unittest

import fo
from fo import h

WRITES = 3
WRITE_MAX_S = 5.0
CLIENT_TIMEOUT_S = 30
SCHEMA = "bc_lost_ack_test"


def restart_io(server, semi_sync):
    h.sql_server(server, "SET GLOBAL rpl_semi_sync_slave_enabled = %d; STOP SLAVE IO_THREAD; "
                         "START SLAVE IO_THREAD" % semi_sync)


def semi_clients(server):
    return int(h.sql_server(server, "SELECT variable_value FROM information_schema.GLOBAL_STATUS "
                                    "WHERE variable_name = 'RPL_SEMI_SYNC_MASTER_CLIENTS'")[0][0])


def wait_for(what, pred, timeout=15):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError("not within %d s: %s" % (timeout, what))


def timed_write(prim, query):
    t0 = time.time()
    h.sql_server(prim, query, timeout=CLIENT_TIMEOUT_S)
    return time.time() - t0


class TestLostAcknowledgement(unittest.TestCase):
    def setUp(self):
        self.addCleanup(fo.recover)

    def test_commits_the_replica_has_are_released(self):
        fo.wait_settled(30)
        host = sorted(set(h.shard_map().values()) - {h.global_host()})[0]
        prim, rep = h.primary_of(host), fo.replica_of(host)
        log_at = fo.guard_log_size()

        restart_io(rep, 0)
        self.addCleanup(restart_io, rep, 1)
        wait_for("%s counts no semi-sync replica" % prim, lambda: semi_clients(prim) == 0)
        took = [timed_write(prim, "CREATE DATABASE IF NOT EXISTS `%s`" % SCHEMA)]
        self.addCleanup(h.sql_server, prim, "DROP DATABASE IF EXISTS `%s`" % SCHEMA, CLIENT_TIMEOUT_S)
        took.append(timed_write(prim, "CREATE TABLE IF NOT EXISTS `%s`.t (id INT PRIMARY KEY)" % SCHEMA))
        for i in range(WRITES):
            took.append(timed_write(prim, "INSERT INTO `%s`.t VALUES (%d)" % (SCHEMA, i)))
        # The guard logs a release after the write it woke has returned.
        end = time.time() + 3
        while fo.guard_log_since(log_at).count("lost; released") < len(took) and time.time() < end:
            time.sleep(0.1)
        released = fo.guard_log_since(log_at).count("lost; released")

        problems = []
        slow = [round(t, 2) for t in took if t > WRITE_MAX_S]
        if slow:
            problems.append("writes on %s took %s s, want <= %.1f" % (prim, slow, WRITE_MAX_S))
        if released < len(took):
            problems.append("the guard released %d waits for %d writes" % (released, len(took)))
        wait_for("%s has the rows" % rep, lambda: h.sql_server(rep, "SELECT COUNT(*) FROM `%s`.t" % SCHEMA)
                 [0][0] == str(WRITES))
        if h.primary_of(host) != prim:
            problems.append("%s failed over (primary %s)" % (host, h.primary_of(host)))

        restart_io(rep, 1)
        wait_for("%s counts its replica again" % prim, lambda: semi_clients(prim) == 1)
        log_at2 = fo.guard_log_size()
        after = timed_write(prim, "INSERT INTO `%s`.t VALUES (%d)" % (SCHEMA, WRITES))
        if "lost; released" in fo.guard_log_since(log_at2):
            problems.append("a write released after %s acknowledged again" % rep)
        fo.log("%s: %d writes while %s acknowledged nothing took %s s, %d releases; after: %.3f s"
               % (host, len(took), rep, [round(t, 2) for t in took], released, after))
        if problems:
            self.fail("lost acknowledgements on %s:\n  %s\nguard log:\n%s"
                      % (host, "\n  ".join(problems), fo.guard_log_since(log_at)[-3000:]))


if __name__ == "__main__":
    unittest.main()
