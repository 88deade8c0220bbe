#!/usr/bin/env python3
"""loadgen's handling of a bet the server answers 503 (tools/loadgen.c), against
a small fake of the API on loopback: no stack needed.

docs/api.md tells a client to send a write answered 503 again with the same
Idempotency-Key. With --retry-busy loadgen does, with the very same body;
without it such a bet counts as unknown (placed or not), as the fault tests
count what a refusing server did. BUILD (default build) names the build
directory holding loadgen."""
import http.server
import json
import os
import subprocess
import threading
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOADGEN = os.path.join(ROOT, os.environ.get("BUILD", "build"), "loadgen")


class FakeApi(http.server.ThreadingHTTPServer):
    """Signs anyone up; answers each bet's first `busy` sends 503, then 201."""

    daemon_threads = True

    def __init__(self, busy):
        super().__init__(("127.0.0.1", 0), Handler)
        self.busy = busy
        self.lock = threading.Lock()
        self.sends = {}  # Idempotency-Key -> the bodies sent with it, in order
        self.no_key = 0
        self.next_id = 1000


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/healthz":
            self.answer(200, {"status": "ok"})
        else:
            self.answer(404, {"error": {"code": "not_found", "message": "no route"}})

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        srv = self.server
        if self.path == "/v1/auth/signup":
            self.answer(201, {"token": "fake-token", "user": {"id": "42"}})
            return
        if self.path != "/v1/bets":
            self.answer(404, {"error": {"code": "not_found", "message": "no route"}})
            return
        key = self.headers.get("Idempotency-Key")
        with srv.lock:
            if key is None:
                srv.no_key += 1
                sent = 1
            else:
                srv.sends.setdefault(key, []).append(body)
                sent = len(srv.sends[key])
            srv.next_id += 1
            bet_id = srv.next_id
        if sent <= srv.busy:
            self.answer(503, {"error": {"code": "unavailable", "message": "try again"}})
        else:
            self.answer(201, {"id": str(bet_id), "status": "open"})


class RetryBusy(unittest.TestCase):
    def run_loadgen(self, busy, *flags):
        srv = FakeApi(busy)
        t = threading.Thread(target=srv.serve_forever, daemon=True)
        t.start()
        try:
            p = subprocess.run(
                [LOADGEN, "--url", "http://127.0.0.1:%d" % srv.server_address[1], "--users", "1",
                 "--duration", "1", "--rate", "3", "--mix", "bet=1", "--match", "7",
                 "--threads", "1", "--company", "fake", "--join-code", "fake", "--signup",
                 "--json", *flags],
                capture_output=True, text=True, timeout=60)
        finally:
            srv.shutdown()
            srv.server_close()
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(srv.no_key, 0, "a bet without an Idempotency-Key")
        self.assertGreater(len(srv.sends), 0, "no bet sent")
        return json.loads(p.stdout)["bets"], srv.sends

    def test_busy_bet_sent_again_with_its_key_and_body(self):
        bets, sends = self.run_loadgen(2, "--retry-busy")
        for key, bodies in sends.items():
            self.assertEqual(len(bodies), 3, "key %s sent %d times" % (key, len(bodies)))
            self.assertEqual(len(set(bodies)), 1, "key %s with different bodies" % key)
            self.assertIn(b'"match_id":"7"', bodies[0])
        self.assertEqual(bets["acked"], len(sends))
        self.assertEqual(bets["acked_after_retry"], len(sends))
        self.assertEqual(bets["retries"], 2 * len(sends))
        self.assertEqual(bets["unknown"], 0)

    def test_without_the_flag_a_busy_bet_is_unknown(self):
        bets, sends = self.run_loadgen(2)
        for key, bodies in sends.items():
            self.assertEqual(len(bodies), 1, "key %s sent %d times" % (key, len(bodies)))
        self.assertEqual(bets["acked"], 0)
        self.assertEqual(bets["unknown"], len(sends))

    def test_keys_differ_between_bets(self):
        bets, sends = self.run_loadgen(0, "--retry-busy")
        self.assertGreater(len(sends), 1, "the run should place several bets")
        self.assertEqual(bets["acked"], len(sends))
        self.assertEqual(bets["retries"], 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
