"""Runs the end-to-end suite (tests/e2e/run calls this).

    python3 tests/e2e/main.py [PATTERN...]

PATTERN: a substring of the test ids to run (e.g. test_bets.TestIdempotency);
without one, every test. Prints one line per test with its time, the
failures, and as the last line `e2e: N passed, M failed[, K skipped]`.
Exit status 0 if nothing failed, 1 otherwise.
"""

import os
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # no __pycache__ in the tree

import runner  # noqa: E402
import stack  # noqa: E402
from client import Client, RequestFailed  # noqa: E402

# Order: quick checks first; the test that kills an API server last.
MODULES = ["test_health", "test_binlog", "test_fence", "test_auth", "test_abuse", "test_me", "test_companies",
           "test_matches", "test_listing", "test_bets", "test_balance_limit", "test_settlement", "test_standings", "test_standings_check",
           "test_standings_bounded", "test_standings_store", "test_placement", "test_robustness", "test_slow_db",
           "test_me_loop", "test_bet_loop", "test_hot", "test_cache", "test_cache_faults", "test_global_down",
           "test_settle_cursor", "test_settle_takeover", "test_crash", "test_stop", "test_settle_host_down"]


def preflight():
    s = stack.get()
    if not s.api_url:
        print("e2e: BC_API_URL is not set and %s has no urls.env: is the API part of the stack?"
              % (s.dir or "BC_STACK_DIR"))
        return False
    print("e2e: API %s (servers: %s), stack dir %s" % (s.api_url, " ".join(s.api_urls), s.dir or "-"))
    deadline = time.time() + 60
    while True:
        try:
            r = Client(s.api_url).get("/readyz", timeout=2)
            if r.status == 200:
                return True
            last = r.describe(200)
        except RequestFailed as e:
            last = str(e)
        if time.time() > deadline:
            print("e2e: WARNING: %s/readyz not 200 after 60 s: %s" % (s.api_url, last))
            return True
        time.sleep(0.5)


def main(argv):
    patterns = [a for a in argv if not a.startswith("-")]
    here = os.path.dirname(os.path.abspath(__file__))
    unlisted = sorted(f[:-3] for f in os.listdir(here)
                      if f.startswith("test_") and f.endswith(".py") and f[:-3] not in MODULES)
    if unlisted:
        print("e2e: %s not in main.py's MODULES: its tests would never run" % ", ".join(unlisted))
        return 1
    suite, tests = runner.load(MODULES, patterns)
    print("e2e: %d tests" % len(tests))
    if not tests:
        print("e2e: no test matches %s" % " ".join(patterns))
        return 1
    if not preflight():
        print("e2e: 0 passed, %d failed" % len(tests))
        return 1
    t0 = time.time()
    test_runner = unittest.TextTestRunner(stream=sys.stdout, verbosity=2, resultclass=runner.Result, buffer=False)
    result = test_runner.run(suite)
    took = time.time() - t0

    passed, failed, skipped = runner.tally(tests, result)
    print("e2e: run time %.1f s" % took)
    line = "e2e: %d passed, %d failed" % (passed, failed)
    if skipped:
        line += ", %d skipped" % skipped
    print(line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
