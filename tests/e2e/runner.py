"""What the Python suites share: loading the tests, a result that prints each
test's time, and the closing count (tests/e2e/main.py, tests/reshard/main.py)."""

import time
import unittest


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


def load(modules, patterns):
    """The tests of modules (imported by name) whose id holds one of patterns."""
    suite = unittest.TestSuite()
    loader = unittest.TestLoader()
    for name in modules:
        for t in iter_tests(loader.loadTestsFromModule(__import__(name))):
            if not patterns or any(p in t.id() for p in patterns):
                suite.addTest(t)
    return suite, list(iter_tests(suite))


def tally(tests, result):
    """(passed, failed, skipped) of tests after a run that gave result."""
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
    return passed, failed, skipped
