#!/usr/bin/env python3
"""Unit tests of make bench-scale's figures from a loadgen trace
(tools/bench/scale_steps.py: trace_figures, slice_p99s) and of the cores by
kind of thread (threads_use, threads_text): no stack needed."""
import os
import sys
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(ROOT, "tools", "bench"))
sys.path.insert(0, os.path.join(ROOT, "tests", "reshard"))
import harness  # noqa: E402
import scale_steps  # noqa: E402


def op(due, kind, ms, status=200, late=0.0):
    """A trace line as harness.Loadgen.trace() gives it."""
    return (due, kind, ms, status, late)


class TraceFigures(unittest.TestCase):
    def test_percentiles_statuses_and_window(self):
        # 100 bets of 1..100 ms due at t = 0..99 s, 10 reads at t = 200.
        trace = [op(float(i), "bet", float(i + 1), 201, late=0.1) for i in range(100)]
        trace[7] = op(7.0, "bet", 8.0, 503)
        trace[8] = op(8.0, "bet", 9.0, -28)
        trace += [op(200.0 + i, "me", 2.0) for i in range(10)]
        f = scale_steps.trace_figures(harness, trace)
        self.assertEqual(f["bet"]["count"], 100)
        self.assertEqual(f["bet"]["ok"], 98)
        self.assertEqual(f["bet"]["p50_ms"], 50.0)
        self.assertEqual(f["bet"]["p99_ms"], 99.0)
        self.assertEqual(f["bet"]["max_ms"], 100.0)
        self.assertEqual(f["bet"]["late_p99_ms"], 0.1)
        self.assertEqual(f["status"], {"201": 98, "503": 1, "200": 10})
        self.assertEqual(f["5xx"], 1)
        self.assertEqual(f["transport_errors"], 1)
        self.assertEqual(f["me"]["count"], 10)
        # [t0, t1): the reads alone, the last bets alone.
        w = scale_steps.trace_figures(harness, trace, 150.0, 300.0)
        self.assertEqual((w["bet"]["count"], w["me"]["count"]), (0, 10))
        self.assertIsNone(w["bet"]["p99_ms"])
        w = scale_steps.trace_figures(harness, trace, 90.0, 99.0)
        self.assertEqual((w["bet"]["count"], w["bet"]["p50_ms"], w["bet"]["max_ms"]), (9, 95.0, 99.0))

    def test_slices_cut_the_window(self):
        slice_s = scale_steps.SLICE
        trace = [op(1000.0 + k * slice_s + 1, "bet", 10.0 * (k + 1)) for k in range(3)]
        trace.append(op(1000.0 + 3 * slice_s + 1, "bet", 99.0))  # after the window
        p = scale_steps.slice_p99s(harness, trace, 1000.0, 3 * slice_s)
        self.assertEqual(p["bet"], [10.0, 20.0, 30.0])
        self.assertEqual(p["me"], [None, None, None])
        # A window that is not a whole number of slices: the last is shorter.
        p = scale_steps.slice_p99s(harness, trace, 1000.0, 2 * slice_s + 2)
        self.assertEqual(p["bet"], [10.0, 20.0, 30.0])


def snap(t, procs, threads):
    """A cpu_snapshot() as it would be read at time t."""
    return {"t": t, "procs": procs, "threads": threads, "machine": {k: 0.0 for k in scale_steps.MACHINE_CPU}}


class ThreadsUse(unittest.TestCase):
    def test_kinds_new_and_ended_threads(self):
        idle = "/system.slice/mariadb.service/betcity-background"
        a = snap(0.0, {"db1": 10.0, "api1": 5.0},
                 {"db1": {1: ("mariadbd", "/", 8.0), 2: ("mariadbd", "/", 1.0), 3: ("mariadbd", "/", 1.0)},
                  "api1": {10: ("betcity-api", "/", 1.0), 11: ("bc-loop", "/", 3.0), 12: ("bc-job", "/", 1.0)}})
        # 10 s later: thread 2 was moved into the idle cgroup and used 3 s
        # (counted there, all of it); 3 ended after 1 s more; 4 is new
        # (idle, 2 s); the API's job thread ended, a new one used 0.5 s.
        b = snap(10.0, {"db1": 17.0, "api1": 7.5},
                 {"db1": {1: ("mariadbd", "/", 9.0), 2: ("mariadbd", idle, 4.0), 4: ("mariadbd", idle, 2.0)},
                  "api1": {10: ("betcity-api", "/", 1.0), 11: ("bc-loop", "/", 4.0), 13: ("bc-job", "/", 0.5)}})
        use = scale_steps.cpu_use(a, b)
        self.assertEqual(use["procs"], {"db1": 0.7, "api1": 0.25})
        self.assertEqual(use["threads"]["db1"], {"idle cgroup": 0.5, "other": 0.1, "ended": 0.1})
        self.assertEqual(use["threads"]["api1"], {"the rest": 0.0, "loops": 0.1, "jobs": 0.05, "ended": 0.1})
        self.assertEqual(scale_steps.threads_text(use["threads"]),
                         "api1 0.05 / 0.10 / 0.00 / 0.00 (0.10); db1 0.50 / 0.10 (0.10)")

    def test_a_tid_reused_by_another_thread_counts_from_zero(self):
        a = snap(0.0, {"api1": 5.0}, {"api1": {7: ("bc-work", "/", 5.0)}})
        b = snap(1.0, {"api1": 5.5}, {"api1": {7: ("bc-job", "/", 0.5)}})
        self.assertEqual(scale_steps.cpu_use(a, b)["threads"]["api1"], {"jobs": 0.5, "ended": 0.0})

    def test_cgroup_v2_and_gone_servers(self):
        self.assertEqual(scale_steps.thread_kind("db2", "mariadbd", ""), "other")
        self.assertEqual(scale_steps.thread_kind("db2", "mariadbd", "/a/betcity-background"), "idle cgroup")
        # A server gone at the second snapshot has no process figure: no thread figures either.
        a = snap(0.0, {"db1": 1.0}, {"db1": {1: ("mariadbd", "/", 1.0)}})
        b = snap(1.0, {"db1": None}, {"db1": {}})
        self.assertEqual(scale_steps.cpu_use(a, b)["threads"], {})


if __name__ == "__main__":
    unittest.main()
