"""shardctl status while the global host's primary is dead and nothing fails
it over (the guard killed first): status reads the catalog from that host's
other server (of those that answer, the newest copy), says so in a first
`warning:` line, shows the host and the dead server DOWN and exits 3, within
15 s; `--json` gives the same (`catalog_from`, `global_error`, the host's `"up":false`).
Then the primary and the guard start again and the roles settle with the
same primary and map version: nothing failed over.
"""

import json
import time
import unittest

import fo
from fo import h


def status_json(r):
    for line in r.out.splitlines():
        line = line.strip()
        if line.startswith("{") and '"servers"' in line:
            return json.loads(line)
    raise AssertionError("no JSON object in shardctl status --json:\n" + r.describe())


class TestStatusWithoutGlobalPrimary(unittest.TestCase):
    def setUp(self):
        self.addCleanup(fo.recover)

    def test_status_reads_the_catalog_from_another_server(self):
        fo.wait_settled()
        host = h.global_host()
        prim = h.primary_of(host)
        copy = [s for s in h.servers_of(host) if s != prim][0]
        before = status_json(h.shardctl("status", "--json", timeout=60))

        fo.devstack("kill", "guard")
        fo.kill9(prim)
        t0 = time.time()
        r = h.shardctl("status", timeout=60)
        took = time.time() - t0
        self.assertEqual(r.rc, 3, r.describe())
        self.assertLess(took, 15, r.describe())
        first = r.out.lstrip().splitlines()[0]
        self.assertTrue(first.startswith("warning: the global host %s has no writable server that answers"
                                         % host), r.describe())
        self.assertIn("the catalog below is %s's copy, read-only" % copy, first)
        self.assertIn("map version %d," % before["map_version"], r.out)
        lines = r.out.splitlines()
        host_line = [ln for ln in lines if ln.startswith(host + " ")][0]
        self.assertIn(" DOWN ", host_line, r.describe())
        srv_line = [ln for ln in lines[lines.index(host_line) + 1:] if ln.startswith(prim + " ")][0]
        self.assertIn(" primary ", srv_line, r.describe())
        self.assertIn(" DOWN ", srv_line, r.describe())

        j = status_json(h.shardctl("status", "--json", timeout=60))
        self.assertEqual(j["catalog_from"], copy)
        self.assertTrue(j["global_error"])
        self.assertEqual(j["map_version"], before["map_version"])
        self.assertFalse([x for x in j["hosts"] if x["name"] == host][0]["up"])
        by_name = {s["name"]: s for s in j["servers"]}
        self.assertEqual(by_name[prim]["role"], "primary")
        self.assertFalse(by_name[prim]["up"])
        self.assertTrue(by_name[copy]["up"])

        fo.restart(prim)
        fo.devstack("restart-host", "guard")
        after = fo.wait_settled(30)
        self.assertEqual(after[prim]["role"], "primary", fo.describe_status(after))
        self.assertEqual(status_json(h.shardctl("status", "--json", timeout=60))["map_version"],
                         before["map_version"])


class TestReplicaStoppedByHand(unittest.TestCase):
    """A replica whose replication is stopped without an error (STOP SLAVE by
    hand) was said nowhere: the guard logged nothing and status's NOTE showed
    the catalog's old note. Now the guard says it once, and status shows it
    (exit 3); the guard does not undo an operator's stop."""

    def setUp(self):
        self.addCleanup(fo.recover)

    def test_the_guard_and_status_say_it(self):
        fo.wait_settled()
        host = [x for x in h.hosts() if x != h.global_host()][0]
        rep = fo.replica_of(host)
        mark = fo.guard_log_size()
        h.sql_server(rep, "STOP SLAVE")
        self.addCleanup(h.sql_server, rep, "START SLAVE")
        # STOP SLAVE stops the applier first: a probe in between sees "io running".
        want = "%s: replica %s does not replicate and shows no error (io " % (host, rep)
        deadline = time.time() + 15
        while want not in fo.guard_log_since(mark) and time.time() < deadline:
            time.sleep(0.3)
        self.assertIn(want, fo.guard_log_since(mark), fo.guard_log_tail())
        r = h.shardctl("status", timeout=60)
        self.assertEqual(r.rc, 3, r.describe())
        lines = r.out.splitlines()
        servers = lines[[i for i, ln in enumerate(lines) if ln.startswith("SERVER ")][0]:]
        line = [ln for ln in servers if ln.startswith(rep + " ")][0]  # a host may share its name
        self.assertIn("not replicating (io stopped, sql stopped, no error)", line, r.describe())
        time.sleep(2)  # the guard leaves it stopped, and says it once
        self.assertEqual(fo.guard_log_since(mark).count(want), 1, fo.guard_log_tail())
        h.sql_server(rep, "START SLAVE")
        fo.wait_settled(30)


if __name__ == "__main__":
    unittest.main()
