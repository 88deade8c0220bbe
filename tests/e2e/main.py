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

import stack  # noqa: E402
from client import Client, RequestFailed  # noqa: E402

# Order: quick checks first; the test that kills an API server last.
MODULES = ["test_health", "test_auth", "test_me", "test_companies", "test_matches", "test_bets",
           "test_settlement", "test_standings", "test_placement", "test_robustness", "test_cache",
           "test_crash"]


class Result(unittest.TextTestResult):
    """Records which tests passed or were skipped, and prints each test's time."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.passed_ids = set()
        self.skipped_ids = set()
        self.class_skips = set()
        self.class_errors = []
        self._t0 = {}

    def startTest(self, test):
        self._t0[test.id()] = time.time()
        super().startTest(test)

    def _status(self, test, status):
        if test.id() in self._t0:
            status += " (%.1fs)" % (time.time() - self._t0[test.id()])
        self._write_status(test, status)

    def addSuccess(self, test):
        unittest.TestResult.addSuccess(self, test)
        self.passed_ids.add(test.id())
        self._status(test, "ok")

    def addFailure(self, test, err):
        unittest.TestResult.addFailure(self, test, err)
        self._status(test, "FAIL")

    def addError(self, test, err):
        unittest.TestResult.addError(self, test, err)
        if not hasattr(test, "_testMethodName"):  # setUpClass, tearDownClass, module level
            self.class_errors.append(test.description)
        self._status(test, "ERROR")

    def addSkip(self, test, reason):
        if hasattr(test, "_testMethodName"):
            self.skipped_ids.add(test.id())
        else:
            self.class_skips.add(test.description)
        super().addSkip(test, reason)


def iter_tests(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from iter_tests(t)
        else:
            yield t


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
    loader = unittest.TestLoader()
    suite = unittest.TestSuite()
    for name in MODULES:
        mod = __import__(name)
        for t in iter_tests(loader.loadTestsFromModule(mod)):
            if not patterns or any(p in t.id() for p in patterns):
                suite.addTest(t)
    tests = list(iter_tests(suite))
    print("e2e: %d tests" % len(tests))
    if not preflight():
        print("e2e: 0 passed, %d failed" % len(tests))
        return 1
    t0 = time.time()
    runner = unittest.TextTestRunner(stream=sys.stdout, verbosity=2, resultclass=Result, buffer=False)
    result = runner.run(suite)
    took = time.time() - t0

    passed = skipped = failed = 0
    for t in tests:
        tid = t.id()
        cls = "%s.%s" % (type(t).__module__, type(t).__name__)
        if tid in result.passed_ids:
            passed += 1
        elif tid in result.skipped_ids or any(d.endswith("(%s)" % cls) for d in result.class_skips):
            skipped += 1
        else:
            failed += 1
    # an error in tearDownClass comes after its tests passed: count it too
    for d in result.class_errors:
        if d.startswith("tearDown"):
            failed += 1
    print("e2e: run time %.1f s" % took)
    line = "e2e: %d passed, %d failed" % (passed, failed)
    if skipped:
        line += ", %d skipped" % skipped
    print(line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
