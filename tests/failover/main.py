"""Runs the failover suite (tests/failover/run calls this).

    python3 tests/failover/main.py [PATTERN...]

PATTERN: a substring of the test ids to run (e.g. test_kill.TestKillPrimary);
without one, every test. Prints one line per test with its time, the
failures, and as the last line `failover: N passed, M failed[, K skipped]`.
Exit status 0 if every test passed, 1 otherwise (a skip is not a pass).
"""

import atexit
import os
import signal
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # no __pycache__ in the tree

import fo  # noqa: E402  (tests/reshard/harness.py and tests/e2e on the path)
from fo import h  # noqa: E402
import runner  # noqa: E402  (tests/e2e/runner.py)
from client import Client, RequestFailed  # noqa: E402

# Order: reads first (the original roles), then a shard host's switchover and
# the kills (each leaves its old primary a replica), the links' delay, a
# partition of a primary and one of a replica, a shard move over the roles
# they left (the global host's primary is not the config's any more), and the
# global host's switchover last. Each test starts by waiting for settled roles
# and leaves them settled (or its cleanup does).
MODULES = ["test_reads", "test_switchover", "test_kill", "test_kill_global", "test_status", "test_read_only",
           "test_no_ack",
           "test_lost_ack", "test_link", "test_partition", "test_replica_partition", "test_move",
           "test_switchover_global"]


class Result(runner.Result):
    """runner.Result that also stops what a test left running."""

    def stopTest(self, test):
        super().stopTest(test)
        h.stop_all()


def preflight():
    s = h.stack.get()
    if not s.dir or not os.path.isdir(s.dir):
        print("failover: BC_STACK_DIR is not set: these tests need the stack directory (SQL on the servers)")
        return False
    if not s.api_url:
        print("failover: BC_API_URL is not set and %s has no urls.env: is the API part of the stack?" % s.dir)
        return False
    missing = [t for t in ("shardctl", "loadgen", "betcity-api", "bcadmin") if not os.access(h.tool(t), os.X_OK)]
    if missing:
        print("failover: not built: %s" % ", ".join(h.tool(t) for t in missing))
        return False
    no_replica = [x for x in h.hosts() if len(h.servers_of(x)) < 2]
    if no_replica:
        print("failover: hosts without a replica in %s: %s (the stack must be made with BC_REPLICAS=1)"
              % (s.dir, " ".join(no_replica)))
        return False
    print("failover: API %s (servers: %s), stack dir %s" % (s.api_url, " ".join(s.api_urls), s.dir))
    deadline = time.time() + 60
    while True:
        try:
            if Client(s.api_url).get("/readyz", timeout=2).status == 200:
                break
        except RequestFailed:
            pass
        if time.time() > deadline:
            print("failover: %s/readyz is not 200 after 60 s" % s.api_url)
            return False
        time.sleep(0.5)
    try:
        fo.wait_settled(60)
    except AssertionError as e:
        print("failover: %s" % e)
        return False
    return True


def main(argv):
    patterns = [a for a in argv if not a.startswith("-")]
    suite, tests = runner.load(MODULES, patterns)
    print("failover: %d tests" % len(tests))
    atexit.register(h.stop_all)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if not preflight():
        print("failover: 0 passed, %d failed" % len(tests))
        return 1
    t0 = time.time()
    test_runner = unittest.TextTestRunner(stream=sys.stdout, verbosity=2, resultclass=Result, buffer=False)
    try:
        result = test_runner.run(suite)
    finally:
        h.stop_all()
    took = time.time() - t0

    passed, failed, skipped = runner.tally(tests, result)
    print("failover: run time %.1f s" % took)
    line = "failover: %d passed, %d failed" % (passed, failed)
    if skipped:
        line += ", %d skipped" % skipped
    print(line)
    return 1 if failed or skipped else 0  # a skipped test did not pass


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
