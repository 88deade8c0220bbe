"""Runs the resharding suite (tests/reshard/run calls this).

    python3 tests/reshard/main.py [PATTERN...]

PATTERN: a substring of the test ids to run (e.g. test_kill.TestKillAtEachPhase);
without one, every test. Prints one line per test with its time, the
failures, and as the last line `reshard: N passed, M failed[, K skipped]`.
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

import harness  # noqa: E402
import runner  # noqa: E402  (tests/e2e/runner.py)
import stack  # noqa: E402  (tests/e2e/stack.py, on the path through harness)
from client import Client, RequestFailed  # noqa: E402

# Order: the moves of one shard first; adding a host and rebalancing last,
# since it moves a quarter of the shards (those the other tests used too).
MODULES = ["test_cli", "test_throttle", "test_pause", "test_move_load", "test_kill", "test_verify", "test_rebalance"]


class Result(runner.Result):
    """runner.Result that also stops what a test left running."""

    def stopTest(self, test):
        super().stopTest(test)
        harness.stop_all()


def preflight():
    s = stack.get()
    if not s.dir or not os.path.isdir(s.dir):
        print("reshard: BC_STACK_DIR is not set: these tests need the stack directory (SQL on the hosts)")
        return False
    if not s.api_url:
        print("reshard: BC_API_URL is not set and %s has no urls.env: is the API part of the stack?" % s.dir)
        return False
    missing = [t for t in ("shardctl", "fillshard", "loadgen", "betcity-api", "bcadmin")
               if not os.access(harness.tool(t), os.X_OK)]
    if missing:
        print("reshard: not built: %s" % ", ".join(harness.tool(t) for t in missing))
        return False
    print("reshard: API %s (servers: %s), stack dir %s" % (s.api_url, " ".join(s.api_urls), s.dir))
    deadline = time.time() + 60
    while True:
        try:
            if Client(s.api_url).get("/readyz", timeout=2).status == 200:
                return True
        except RequestFailed:
            pass
        if time.time() > deadline:
            print("reshard: %s/readyz is not 200 after 60 s" % s.api_url)
            return False
        time.sleep(0.5)


def main(argv):
    patterns = [a for a in argv if not a.startswith("-")]
    suite, tests = runner.load(MODULES, patterns)
    print("reshard: %d tests" % len(tests))
    atexit.register(harness.stop_all)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if not preflight():
        print("reshard: 0 passed, %d failed" % len(tests))
        return 1
    t0 = time.time()
    test_runner = unittest.TextTestRunner(stream=sys.stdout, verbosity=2, resultclass=Result, buffer=False)
    try:
        result = test_runner.run(suite)
    finally:
        harness.stop_all()
    took = time.time() - t0

    passed, failed, skipped = runner.tally(tests, result)
    print("reshard: run time %.1f s" % took)
    line = "reshard: %d passed, %d failed" % (passed, failed)
    if skipped:
        line += ", %d skipped" % skipped
    print(line)
    return 1 if failed or skipped else 0  # a skipped test did not pass


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
