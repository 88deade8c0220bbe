"""A primary left read-only with no switchover under way: a switchover killed
after it set the primary read-only, or a primary restarted (servers start
read-only) within down_after_ms, so never failed over. Its host's writes
failed until the guard was restarted. Now the guard makes it writable again
within a round or two, says so once, and changes no role; while something
holds the topology lock a switchover takes (GET_LOCK on the global
primary), it leaves the primary alone. A switchover killed after its
replica took writes (the old primary its replica, the catalog not flipped)
is finished by the guard: the catalog names the replica.
"""

import re
import subprocess
import time
import unittest

import fo
from fo import h

WANT = "was read-only with no switchover under way: writable again"


def read_only(server):
    return h.sql_server(server, "SELECT @@global.read_only")[0][0] == "1"


def wait_writable(server, timeout):
    deadline = time.time() + timeout
    while read_only(server) and time.time() < deadline:
        time.sleep(0.2)
    return not read_only(server)


def prefix():
    with open(h.stack.get().cluster) as f:
        return re.search(r"^\s*schema_prefix:\s*(\S+)", f.read(), re.M).group(1)


class TestPrimaryLeftReadOnly(unittest.TestCase):
    def setUp(self):
        self.addCleanup(fo.recover)

    def check_made_writable(self, host):
        before = fo.wait_settled()
        prim = h.primary_of(host)
        mark = fo.guard_log_size()
        h.sql_server(prim, "SET GLOBAL read_only = 1")
        self.addCleanup(h.sql_server, prim, "SET GLOBAL read_only = 0")
        deadline = time.time() + 10
        while WANT not in fo.guard_log_since(mark) and time.time() < deadline:
            time.sleep(0.2)
        self.assertFalse(read_only(prim), fo.guard_log_tail())
        log = fo.guard_log_since(mark)
        self.assertEqual(log.count("%s: primary %s" % (host, prim)), 1, log)
        self.assertIn(WANT, log)
        after = fo.wait_settled(30)
        self.assertEqual({s: after[s]["role"] for s in after},
                         {s: before[s]["role"] for s in before}, fo.describe_status(after))

    def test_a_shard_hosts_primary(self):
        self.check_made_writable([x for x in h.hosts() if x != h.global_host()][0])

    def test_the_global_hosts_primary(self):
        self.check_made_writable(h.global_host())

    def test_left_alone_while_the_lock_is_held(self):
        fo.wait_settled()
        host = [x for x in h.hosts() if x != h.global_host()][0]
        prim = h.primary_of(host)
        gprim = h.primary_of(h.global_host())
        # A session holding the lock, as a switchover does, for 6 s once it has
        # it (GET_LOCK waits out the guard's own brief hold of each round).
        holder = subprocess.Popen(
            ["mariadb", "--defaults-file=" + h.server_cnf(gprim), "-N", "-e",
             "SELECT GET_LOCK('%s_global', 5); SELECT SLEEP(6)" % prefix()],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(holder.kill)
        time.sleep(1)
        h.sql_server(prim, "SET GLOBAL read_only = 1")
        self.addCleanup(h.sql_server, prim, "SET GLOBAL read_only = 0")
        time.sleep(3)
        if holder.poll() is not None:
            self.skipTest("the lock holder ended early: %s" % holder.stderr.read())
        self.assertTrue(read_only(prim), "made writable while the lock was held")
        holder.wait(15)
        self.assertTrue(wait_writable(prim, 10), fo.guard_log_tail())


class TestSwitchoverKilled(unittest.TestCase):
    """kill -9 of `shardctl switchover` held at a point (BC_SHARDCTL_HOLD)."""

    def setUp(self):
        self.addCleanup(fo.recover)

    def killed_at(self, point):
        before = fo.wait_settled()
        host = [x for x in h.hosts() if x != h.global_host()][0]
        prim = h.primary_of(host)
        rep = fo.replica_of(host)
        mark = fo.guard_log_size()
        sw = h.Proc([h.tool("shardctl"), "-c", h.stack.get().cluster, "switchover", host],
                    "switchover", env_extra={"BC_SHARDCTL_HOLD": "switchover-" + point})
        deadline = time.time() + 30
        while "holding at" not in sw.out and sw.p.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        self.assertIn("holding at switchover-" + point, sw.out, sw.err)
        self.assertTrue(read_only(prim))
        sw.kill9()
        return before, host, prim, rep, mark

    def test_killed_with_the_primary_read_only(self):
        before, host, prim, rep, mark = self.killed_at("readonly")
        self.assertTrue(wait_writable(prim, 10), fo.guard_log_tail())
        after = fo.wait_settled(30)
        self.assertEqual(after[prim]["role"], "primary", fo.describe_status(after))
        self.assertEqual(after[rep]["role"], "replica", fo.describe_status(after))
        self.assertIn(WANT, fo.guard_log_since(mark))

    def test_killed_after_the_replica_took_writes(self):
        before, host, prim, rep, mark = self.killed_at("promoted")
        self.assertFalse(read_only(rep))
        want = "%s: a switchover to %s was left unfinished" % (host, rep)
        deadline = time.time() + 10
        while want not in fo.guard_log_since(mark) and time.time() < deadline:
            time.sleep(0.2)
        self.assertIn(want, fo.guard_log_since(mark), fo.guard_log_tail())
        after = fo.wait_settled(30)
        self.assertEqual(after[rep]["role"], "primary", fo.describe_status(after))
        self.assertEqual(after[prim]["role"], "replica", fo.describe_status(after))
        self.assertEqual(h.primary_of(host), rep)
        self.assertTrue(read_only(prim))


if __name__ == "__main__":
    unittest.main()
