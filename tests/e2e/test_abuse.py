"""Abuse: login and signup limits (429), the password-hash queue (503), early
401/413 before a body, malformed HTTP and garbage, trickling headers, the
per-address connection cap, escaped access log lines, /metrics for operators
only, nosniff and no-store.

TestLimits starts an API server of its own beside the stack's (same cluster
config, same token key, same command line as api1 but another port) with tiny
limits (--set), and stops it at the end. It sends X-Forwarded-For from
127.0.0.1, the default trusted proxy, to play many client addresses. Raw
socket tests bind 127.0.0.2 or 127.0.0.3 as their source, so the server sees
a client that is not a trusted proxy."""

import json
import os
import random
import socket
import subprocess
import threading
import time
import unittest
import urllib.parse

import stack
from client import Client
from fixtures import PASSWORD, api, new_company, png, signup, uniq


def hostport(url):
    u = urllib.parse.urlsplit(url)
    return u.hostname, u.port


def connect(url, src="127.0.0.2", timeout=5):
    s = socket.create_connection(hostport(url), timeout=timeout, source_address=(src, 0))
    return s


def read_until_closed(s, limit):
    """(bytes read, seconds until the server closed); the time is None if it
    was still open after limit seconds."""
    t0, out = time.time(), b""
    s.settimeout(0.05)
    while time.time() - t0 < limit:
        try:
            b = s.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return out, time.time() - t0
        if not b:
            return out, time.time() - t0
        out += b
    return out, None


def status_of(raw):
    try:
        return int(raw.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None


def body_of(raw):
    return raw.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in raw else b""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api1_cmdline(s):
    """api1's argv, read from /proc (so this test follows devstack's options)."""
    p = s.devstack_cmd("pid", "api1")
    pid = p.stdout.strip()
    if p.returncode != 0 or not pid.isdigit():
        raise unittest.SkipTest("no pid for api1: %s" % (p.stdout + p.stderr))
    with open("/proc/%s/cmdline" % pid, "rb") as f:
        return [a.decode() for a in f.read().split(b"\0") if a]


class OwnServer:
    """An API server of this test's own, with the given --set options (and
    extra arguments after them)."""

    def __init__(self, sets, extra=()):
        s = stack.get()
        s.require_dir()
        argv = api1_cmdline(s)
        self.port = free_port()
        out, skip = [], False
        for a in argv:
            if skip:
                skip = False
                continue
            if a in ("--listen", "--name"):
                skip = True
                continue
            if a.startswith("--listen=") or a.startswith("--name="):
                continue
            out.append(a)
        out += ["--listen", "127.0.0.1:%d" % self.port, "--name", "abuse"]
        for k, v in sets.items():
            out += ["--set", "%s=%s" % (k, v)]
        out += list(extra)
        self.log = os.path.join(s.dir, "abuse-api.log")
        self.logf = open(self.log, "ab")
        self.proc = subprocess.Popen(out, stdout=self.logf, stderr=self.logf, stdin=subprocess.DEVNULL)
        self.url = "http://127.0.0.1:%d" % self.port
        deadline = time.time() + 30
        while True:
            try:
                if Client(self.url).get("/readyz", timeout=2).status == 200:
                    break
            except Exception:  # noqa: BLE001 - not up yet
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                self.stop()
                raise AssertionError("own API server did not get ready; see %s" % self.log)
            time.sleep(0.2)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logf.close()


_n = [0]
_n_lock = threading.Lock()


def loop_addr():
    """A loopback address to connect from (127.0.x.y), one of many: HAProxy counts each apart."""
    return "127.0.%d.%d" % (random.randrange(10, 250), random.randrange(1, 250))


def fresh_addr():
    """A client address no other test used (10.77.x.y)."""
    with _n_lock:
        _n[0] += 1
        n = _n[0]
    return "10.77.%d.%d" % (n // 250, n % 250 + 1)


class TestLimits(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = OwnServer({"login_addr_burst": 3, "login_addr_rate": 0.01, "signup_addr_burst": 2,
                             "signup_addr_rate": 0.01, "account_burst": 2, "account_rate": 0.01,
                             "device_burst": 4, "device_rate": 0.01,
                             "hash_threads": 1, "hash_queue": 2, "conn_per_addr": 4})
        cls.c = Client(cls.srv.url)
        cls.co = new_company()

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()

    def login(self, email, password, addr, device=None):
        body = {"email": email, "password": password}
        if device is not None:
            body["device_token"] = device
        return self.c.post("/v1/auth/login", body, headers={"X-Forwarded-For": "203.0.113.9, " + addr})

    def signup(self, email, addr):
        return self.c.post("/v1/auth/signup", {"company": self.co["slug"], "join_code": self.co["join_code"],
                                               "email": email, "password": PASSWORD, "display_name": "A"},
                           headers={"X-Forwarded-For": addr})

    def expect_429(self, r):
        r.expect(429, "rate_limited")
        ra = r.header("Retry-After")
        self.assertTrue(ra and ra.isdigit() and int(ra) >= 1, "429 without Retry-After: " + r.describe())

    def test_login_limit_per_address(self):
        addr = fresh_addr()
        for i in range(3):
            self.login("%s@e2e.example" % uniq("nobody"), "wrong-password", addr).expect(401, "bad_credentials")
        self.expect_429(self.login("%s@e2e.example" % uniq("nobody"), "wrong-password", addr))
        # The last X-Forwarded-For hop is the client: another address is not limited.
        self.login("%s@e2e.example" % uniq("nobody"), "wrong-password", fresh_addr()).expect(401)

    def test_login_limit_per_account(self):
        email = "%s@e2e.example" % uniq("acct")
        self.signup(email, fresh_addr()).expect(201)
        # Logins that succeed cost the account nothing.
        for _ in range(4):
            self.login(email, PASSWORD, fresh_addr()).expect(200)
        for _ in range(2):
            self.login(email, "wrong-password", fresh_addr()).expect(401, "bad_credentials")
        # From any address: the account's failures are used up.
        self.expect_429(self.login(email, "wrong-password", fresh_addr()))
        self.expect_429(self.login(email.upper(), PASSWORD, fresh_addr()))

    def test_device_token_given_at_signup_and_login(self):
        """Sign-up and login give a device token; it is no access token."""
        email = "%s@e2e.example" % uniq("dev")
        up = self.signup(email, fresh_addr()).expect_json(201)
        self.assertIsInstance(up.get("device_token"), str)
        got = self.login(email, PASSWORD, fresh_addr(), up["device_token"]).expect_json(200)
        self.assertIsInstance(got.get("device_token"), str)
        self.assertNotEqual(got["device_token"], got["token"])
        self.c.get("/v1/me", token=got["device_token"]).expect(401)
        self.c.get("/v1/me", token=got["token"]).expect(200)
        # Not a string: the client's mistake, said so.
        self.login(email, PASSWORD, fresh_addr(), 12).expect(400, "invalid_field")

    def test_known_device_skips_the_account_lockout(self):
        """Others' wrong passwords lock the account for new devices, not for
        a device it signed in from; that device's own attempts, failed or
        not, have a bucket of their own (4 here)."""
        email = "%s@e2e.example" % uniq("dev-lock")
        device = self.signup(email, fresh_addr()).expect_json(201)["device_token"]
        other = self.signup("%s@e2e.example" % uniq("dev-other"), fresh_addr()).expect_json(201)
        for _ in range(2):
            self.login(email, "wrong-password", fresh_addr()).expect(401, "bad_credentials")
        self.expect_429(self.login(email, PASSWORD, fresh_addr()))
        # Another account's device token, or none that verifies: a new device.
        self.expect_429(self.login(email, PASSWORD, fresh_addr(), other["device_token"]))
        forged = device[:-5] + ("A" if device[-5] != "A" else "B") + device[-4:]
        self.expect_429(self.login(email, PASSWORD, fresh_addr(), forged))
        self.expect_429(self.login(email, PASSWORD, fresh_addr(), "not-a-token"))
        # The known device: in, whatever the account's failures.
        self.login(email, PASSWORD, fresh_addr(), device).expect(200)
        self.login(email, "wrong-password", fresh_addr(), device).expect(401, "bad_credentials")
        self.login(email, PASSWORD, fresh_addr(), device).expect(200)
        self.login(email, PASSWORD, fresh_addr(), device).expect(200)
        r = self.login(email, PASSWORD, fresh_addr(), device)
        self.expect_429(r)
        self.assertIn("device", r.json["error"]["message"], r.describe())

    def test_device_cookie_for_browsers(self):
        """The device token comes as an HttpOnly, Secure cookie for the login
        path too; a login that sends it back is a known device's."""
        email = "%s@e2e.example" % uniq("dev-cookie")
        r = self.signup(email, fresh_addr())
        device = r.expect_json(201)["device_token"]
        cookie = r.header("Set-Cookie") or ""
        parts = [p.strip() for p in cookie.split(";")]
        self.assertEqual(parts[0], "bc_device=" + device, cookie)
        for attr in ("HttpOnly", "Secure", "SameSite=Strict", "Path=/v1/auth/login", "Max-Age=15552000"):
            self.assertIn(attr, parts[1:], cookie)
        for _ in range(2):
            self.login(email, "wrong-password", fresh_addr()).expect(401, "bad_credentials")
        self.expect_429(self.login(email, PASSWORD, fresh_addr()))
        r = self.c.post("/v1/auth/login", {"email": email, "password": PASSWORD},
                        headers={"X-Forwarded-For": fresh_addr(), "Cookie": "other=1; bc_device=" + device})
        self.assertIn("bc_device=", r.expect(200).header("Set-Cookie") or "")

    def test_known_device_passes_a_full_queue(self):
        """While a flood keeps the hash queue full, a new device's login is
        refused 503 now and then; a known device's, sent right after such a
        refusal, gets its 200 (places of its own, run first)."""
        email = "%s@e2e.example" % uniq("dev-busy")
        device = self.signup(email, fresh_addr()).expect_json(201)["device_token"]
        control = "%s@e2e.example" % uniq("dev-ctl")
        self.signup(control, fresh_addr()).expect(201)
        known = []

        def attempt():
            r = self.login(control, PASSWORD, fresh_addr())
            if r.status == 503:
                t0 = time.time()
                k = self.login(email, PASSWORD, fresh_addr(), device)
                known.append((k.status, time.time() - t0))
            return r

        before = self.known_hashes()
        got = self.while_queue_busy(attempt, lambda s: len(known) >= 3)
        self.assertEqual(set(got) - {200, 503}, set(), got)
        self.assertGreaterEqual(len(known), 3, "too few 503s to new devices: %s" % got)
        self.assertEqual([st for st, _ in known], [200] * len(known), known)
        # /metrics counts them: hashes done on the known places.
        self.assertEqual(self.known_hashes() - before, len(known))

    def known_hashes(self):
        lines = [line for line in self.c.get("/metrics", token=None).expect(200).text.splitlines()
                 if line.startswith("betcity_pwhash_known_total{")]
        self.assertEqual(len(lines), 1, lines)
        return int(lines[0].rsplit(" ", 1)[1])

    def test_signup_limit_per_address(self):
        addr = fresh_addr()
        for _ in range(2):
            self.signup("%s@e2e.example" % uniq("s"), addr).expect(201)
        self.expect_429(self.signup("%s@e2e.example" % uniq("s"), addr))

    def test_untrusted_peer_forwarded_for_ignored(self):
        """A client that is not a trusted proxy cannot pick its address."""
        host, port = hostport(self.srv.url)
        codes = []
        for i in range(5):
            s = connect(self.srv.url, src="127.0.0.3")
            body = json.dumps({"email": "%s@e2e.example" % uniq("x"), "password": "wrong-password"}).encode()
            s.sendall(b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                      b"X-Forwarded-For: 10.1.2.%d\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n" % (i + 1, len(body)) + body)
            raw, _ = read_until_closed(s, 5)
            s.close()
            codes.append(status_of(raw))
        self.assertEqual(codes[:3], [401, 401, 401], codes)
        self.assertEqual(codes[3:], [429, 429], "127.0.0.3's bucket, whatever X-Forwarded-For says: %s" % codes)

    def test_refusal_answered_late(self):
        """A login refused before any hash (429 here) is answered after
        auth_refusal_delay_ms (500 by default), held without a thread or a
        worker: the server answers other requests at once meanwhile, and
        /metrics counts the refusal held."""
        addr = fresh_addr()
        for _ in range(3):
            self.login("%s@e2e.example" % uniq("late"), "wrong-password", addr).expect(401, "bad_credentials")
        got = {}

        def refused():
            t0 = time.time()
            got["r"] = self.login("%s@e2e.example" % uniq("late"), "wrong-password", addr)
            got["s"] = time.time() - t0

        t = threading.Thread(target=refused)
        t.start()
        time.sleep(0.2)
        t0 = time.time()
        self.c.get("/healthz").expect(200)
        other = time.time() - t0
        held = [line for line in self.c.get("/metrics", token=None).expect(200).text.splitlines()
                if line.startswith("betcity_auth_refusals_held{")]
        t.join()
        self.expect_429(got["r"])
        self.assertGreaterEqual(got["s"], 0.45, "a refusal answered %.3f s after its request" % got["s"])
        self.assertLess(other, 0.3, "/healthz took %.3f s while a refusal was held" % other)
        self.assertEqual(len(held), 1, held)
        self.assertEqual(held[0].rsplit(" ", 1)[1], "1", held)

    def test_hash_queue_full_503_with_retry_after(self):
        """One hash thread, two places: a burst of logins gets 503 for those
        that find the queue full (late: auth_refusal_delay_ms), never a wait
        on an HTTP worker."""
        results = []

        def one(_):
            t0 = time.time()
            r = self.login("%s@e2e.example" % uniq("q"), "wrong-password", fresh_addr())
            results.append((r, time.time() - t0))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        full = [r for r, _ in results if r.status == 503]
        self.assertTrue(full, "no 503 from a queue of 2 under 16 parallel logins: %s"
                        % [r.status for r, _ in results])
        for r in full:
            r.expect(503, "unavailable")
            self.assertEqual(r.header("Retry-After"), "1", r.describe())
        self.assertEqual({r.status for r, _ in results} - {401, 503}, set())
        # Meanwhile the workers answer other requests at once.
        t0 = time.time()
        self.c.get("/healthz").expect(200)
        self.assertLess(time.time() - t0, 0.5)

    def while_queue_busy(self, attempt, enough):
        """Runs attempt() (a request on the hash queue, returning a response)
        again and again while three threads keep the queue of two full with
        logins of unknown e-mails; stops once enough(statuses) or after 60 s.
        Returns the statuses; a status other than 200, 201 or 503 ends it too."""
        stop = threading.Event()

        def block():
            while not stop.is_set():
                self.login("%s@e2e.example" % uniq("busy"), "wrong-password", fresh_addr())

        blockers = [threading.Thread(target=block) for _ in range(3)]
        for t in blockers:
            t.start()
        statuses = []
        try:
            deadline = time.time() + 60
            while not enough(statuses) and set(statuses) <= {200, 201, 503} and time.time() < deadline:
                statuses.append(attempt().status)
        finally:
            stop.set()
            for t in blockers:
                t.join()
        return statuses

    def test_busy_503_costs_the_account_nothing(self):
        """A login refused 503 (the hash queue full) is the server's refusal,
        not a failed login: retried as docs/api.md says, it never locks the
        account (2 failures at most here)."""
        email = "%s@e2e.example" % uniq("busy-acct")
        self.signup(email, fresh_addr()).expect(201)
        got = self.while_queue_busy(lambda: self.login(email, PASSWORD, fresh_addr()),
                                    lambda s: s.count(503) >= 4 and s[-1] == 200)
        self.assertGreaterEqual(got.count(503), 4, "the queue refused too few logins: %s" % got)
        self.assertEqual(set(got) - {200, 503}, set(), "a busy refusal counted as a failure: %s" % got)
        # The account's two failures are all still there.
        for _ in range(2):
            self.login(email, "wrong-password", fresh_addr()).expect(401, "bad_credentials")
        self.expect_429(self.login(email, "wrong-password", fresh_addr()))

    def test_busy_503_signup_retried_until_201(self):
        """A signup retried through 503s gets its 201, however many 503s it
        met; until one e-mail has met more than the account's 2 failures."""
        tries = []
        for _ in range(10):
            email = "%s@e2e.example" % uniq("busy-signup")
            got = self.while_queue_busy(lambda: self.signup(email, fresh_addr()), lambda s: 201 in s)
            tries.append(got)
            self.assertEqual(got[-1:], [201], "signups of one e-mail while the queue is busy: %s" % got)
            self.assertEqual(set(got) - {201, 503}, set(), "a busy refusal counted as a failure: %s" % got)
            if got.count(503) > 2:
                break
        self.assertGreater(max(t.count(503) for t in tries), 2, "the queue refused too few signups: %s" % tries)

    def test_connection_cap_per_address(self):
        socks = [connect(self.srv.url, src="127.0.0.4") for _ in range(4)]
        try:
            for s in socks:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                self.assertEqual(status_of(s.recv(4096)), 200)
            extra = connect(self.srv.url, src="127.0.0.4")
            raw, closed = read_until_closed(extra, 2)
            extra.close()
            self.assertEqual(raw, b"")
            self.assertIsNotNone(closed, "a 5th connection from one address was kept (cap 4)")
            # Another address is not affected.
            other = connect(self.srv.url, src="127.0.0.5")
            other.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            self.assertEqual(status_of(other.recv(4096)), 200)
            other.close()
        finally:
            for s in socks:
                s.close()


class TestConnections(unittest.TestCase):
    """Against the stack: api1 directly (as a client that is no proxy) and HAProxy."""

    def setUp(self):
        s = stack.get()
        s.require_api()
        self.api1 = s.api_urls[0]
        self.haproxy = s.api_url

    def test_memory_of_a_connection_flood_goes_back(self):
        # 1,200 connections at once, each with a request half sent, then all
        # closed: the parser memory they took (about 25 KiB each) goes back to
        # the system within seconds (it stayed: glibc keeps freed memory).
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < 1400:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
        with open("%s/api1/api.pid" % stack.get().dir) as f:
            pid = int(f.read().strip())
        with open("/proc/%d/maps" % pid) as f:
            if "libasan" in f.read():
                self.skipTest("api1 is an ASan build: its allocator keeps freed memory itself")

        def rss_kb():
            with open("/proc/%d/status" % pid) as f:
                return int(next(ln for ln in f if ln.startswith("VmRSS:")).split()[1])
        base = rss_kb()
        socks = []
        for _ in range(1200):
            c = connect(self.api1, src="127.0.0.1")  # a trusted peer: no per-address cap
            c.sendall(b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 200\r\n\r\n{\"email\":1")
            socks.append(c)
        time.sleep(0.5)
        peak = rss_kb()
        for c in socks:
            c.close()
        deadline, now = time.time() + 15, peak
        while time.time() < deadline:
            now = rss_kb()
            if now <= base + 6 * 1024:
                break
            time.sleep(0.5)
        self.assertGreater(peak, base + 10 * 1024, "the flood took %d KiB (base %d)" % (peak - base, base))
        self.assertLessEqual(now, base + 6 * 1024, "RSS %d KiB 15 s after the flood, %d before, %d at its peak"
                             % (now, base, peak))

    def test_early_401_before_body(self):
        s = connect(self.api1)
        t0 = time.time()
        s.sendall(b"PUT /v1/me/avatar HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                  b"Content-Length: 200000\r\n\r\n")
        raw, closed = read_until_closed(s, 3)
        s.close()
        self.assertEqual(status_of(raw), 401, raw[:300])
        self.assertEqual(json.loads(body_of(raw))["error"]["code"], "unauthorized")
        self.assertLess(time.time() - t0, 1.0)

    def test_early_413_before_body(self):
        for url in (self.api1, self.haproxy):
            s = connect(url)
            s.sendall(b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 10000000\r\n\r\n")
            raw, closed = read_until_closed(s, 3)
            s.close()
            self.assertEqual(status_of(raw), 413, "%s: %r" % (url, raw[:300]))
            self.assertEqual(json.loads(body_of(raw))["error"]["code"], "body_too_large", url)
            self.assertIsNotNone(closed, url)

    def test_unclear_body_end_400_and_closed(self):
        """Two Content-Lengths, or one with Transfer-Encoding (RFC 9112 6.3): a
        server that took one of them would read the rest of the body as a
        second request, which a proxy reading the same bytes cuts elsewhere
        (request smuggling). Straight to a server: 400 malformed_request and
        the connection closed, nothing after it answered. HAProxy refuses two
        Content-Lengths the same way (and repairs the other case itself)."""
        smuggled = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        head = b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        two_lengths = head + b"Content-Length: 2\r\nContent-Length: %d\r\n\r\n{}" % (2 + len(smuggled)) + smuggled
        length_and_chunks = head + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled
        for url, data in ((self.api1, two_lengths), (self.haproxy, two_lengths), (self.api1, length_and_chunks)):
            s = connect(url)
            s.sendall(data)
            raw, closed = read_until_closed(s, 3)
            s.close()
            what = "%s %r" % (url, data[len(head):len(head) + 40])
            self.assertEqual(status_of(raw), 400, "%s: %r" % (what, raw[:300]))
            self.assertEqual(raw.count(b"HTTP/1.1 "), 1, "%s: answered after the 400: %r" % (what, raw[:600]))
            self.assertIsNotNone(closed, "%s: left open" % what)
            if url == self.api1:
                self.assertEqual(json.loads(body_of(raw))["error"]["code"], "malformed_request", what)

    def test_transfer_codings_other_than_chunked_400_at_once(self):
        """A transfer coding the server does not decode (gzip, ...), or two
        Transfer-Encoding headers: where the body ends is unknown to it.
        Straight to a server: 400 malformed_request at once and the
        connection closed (it waited for a body until its timeout before),
        also from a trusted proxy's address (127.0.0.1), whose other bodies
        are read to their end before the answer."""
        good = signup(new_company()).client.token
        body = b'{"display_name":"x"}'
        for src in ("127.0.0.2", "127.0.0.1"):
            for te in (b"gzip, chunked", b"gzip", b"identity", b"chunked\r\nTransfer-Encoding: chunked",
                       b"chunked "):
                what = "%s %r" % (src, te)
                s = connect(self.api1, src=src)
                start = time.monotonic()
                s.sendall(b"PATCH /v1/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + good.encode() +
                          b"\r\nContent-Type: application/json\r\nTransfer-Encoding: " + te + b"\r\n\r\n" +
                          b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
                raw, closed = read_until_closed(s, 3)
                s.close()
                self.assertEqual(status_of(raw), 400, "%s: %r" % (what, raw[:300]))
                self.assertEqual(json.loads(body_of(raw))["error"]["code"], "malformed_request", what)
                self.assertIsNotNone(closed, "%s: left open" % what)
                self.assertLess(time.monotonic() - start, 2.0, what)
        # chunked alone is a body as any other
        s = connect(self.api1)
        s.sendall(b"PATCH /v1/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + good.encode() +
                  b"\r\nContent-Type: application/json\r\nTransfer-Encoding: Chunked\r\nConnection: close"
                  b"\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
        raw, _ = read_until_closed(s, 3)
        s.close()
        self.assertEqual(status_of(raw), 200, raw[:300])

    def test_two_authorization_headers_400(self):
        """Which of two tokens is the caller's must not depend on the reader:
        400 malformed_request, through HAProxy and straight, whatever the
        tokens (a valid one first, or second, or twice)."""
        good = signup(new_company()).client.token
        for url in (self.api1, self.haproxy):
            host, port = hostport(url)
            for pair in ((good, "not-a-token"), ("not-a-token", good), (good, good), (None, good)):
                lines = "".join("Authorization: Bearer %s\r\n" % t for t in pair if t is not None)
                s = connect(url)
                s.sendall(("GET /v1/me HTTP/1.1\r\nHost: %s:%d\r\n%sConnection: close\r\n\r\n"
                           % (host, port, lines)).encode())
                raw, _ = read_until_closed(s, 3)
                s.close()
                what = "%s with %d Authorization headers %s" % (url, len(lines.splitlines()), pair)
                if pair[0] is None:
                    self.assertEqual(status_of(raw), 200, "%s: %r" % (what, raw[:300]))
                    continue
                self.assertEqual(status_of(raw), 400, "%s: %r" % (what, raw[:300]))
                self.assertEqual(json.loads(body_of(raw))["error"]["code"], "malformed_request", what)

    def test_malformed_http_answered_or_closed_within_1s(self):
        for url in (self.api1, self.haproxy):
            for data in (b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
                         b"GET /healthz HTTP/9.9\r\n\r\n", b"NOT HTTP AT ALL\r\n\r\n"):
                s = connect(url)
                s.sendall(data)
                raw, closed = read_until_closed(s, 1.0)
                s.close()
                if raw:  # answered within 1 s (HAProxy takes HTTP/9.9 for 1.1)
                    self.assertIsNotNone(status_of(raw), raw[:200])
                else:
                    self.assertIsNotNone(closed, "%s neither answered nor closed %r within 1 s" % (url, data))

    def test_garbage_closed_within_1s(self):
        for url in (self.api1, self.haproxy):
            for src in ("127.0.0.2", "127.0.0.1"):
                s = connect(url, src=src)
                s.sendall(bytes([0, 1, 2, 0xff, 0xfe, 0x80]) * 40)  # no line end
                raw, closed = read_until_closed(s, 3)
                s.close()
                self.assertIsNotNone(closed, "%s kept garbage from %s open 3 s" % (url, src))
                self.assertLess(closed, 1.0, "%s: garbage from %s closed after %.2f s" % (url, src, closed))

    def test_trickled_headers_closed(self):
        """A byte every 100 ms keeps an idle timeout away, not the header deadline."""
        s = connect(self.api1)
        s.settimeout(1)
        t0 = time.time()
        req = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
        closed = None
        for b in req:
            try:
                s.sendall(bytes([b]))
            except OSError:
                closed = time.time() - t0
                break
            time.sleep(0.1)
            try:
                s.setblocking(False)
                if s.recv(100) == b"":
                    closed = time.time() - t0
                    break
            except BlockingIOError:
                pass
            except OSError:
                closed = time.time() - t0
                break
            finally:
                s.setblocking(True)
        s.close()
        self.assertIsNotNone(closed, "a trickling client held the connection %.1f s" % (time.time() - t0))
        self.assertLess(closed, 2.0)

    def test_newline_in_path_not_in_log(self):
        s = stack.get()
        s.require_dir()
        log = os.path.join(s.dir, "api1", "api.log")
        if not os.path.isfile(log):
            raise unittest.SkipTest("no %s" % log)
        marker = uniq("forged")
        size = os.path.getsize(log)
        Client(self.api1).get("/v1/x%%0A%s%%0D%%09200%%20ok" % marker).expect(404)
        deadline, text = time.time() + 3, ""
        while time.time() < deadline:
            with open(log, "rb") as f:
                f.seek(size)
                text = f.read().decode("utf-8", "replace")
            if marker in text:
                break
            time.sleep(0.1)
        lines = [ln for ln in text.split("\n") if marker in ln]
        self.assertEqual(len(lines), 1, "the request's line:\n%s" % text[-2000:])
        # the path is matched and logged as sent: its escapes are never decoded
        # (test_api_log.c escapes what a log line is given)
        self.assertIn("/v1/x%%0A%s%%0D%%09200%%20ok" % marker, lines[0])
        self.assertNotIn("\r", lines[0])

    def test_metrics_for_operators_only(self):
        r = Client(self.haproxy).get("/metrics", token=None)
        r.expect(404, "not_found")
        Client(self.haproxy).get("/%6detrics", token=None).expect(404)
        Client(self.api1).get("/metrics", token=None).expect(200)
        # Relayed by a proxy (any X-Forwarded-For): refused by the server itself.
        Client(self.api1).get("/metrics", token=None, headers={"X-Forwarded-For": "127.0.0.1"}).expect(404)

    def test_nosniff_and_no_store(self):
        co = new_company()
        email = "%s@e2e.example" % uniq("h")
        r = api().post("/v1/auth/signup", {"company": co["slug"], "join_code": co["join_code"], "email": email,
                                           "password": PASSWORD, "display_name": "H"})
        r.expect(201)
        self.assertEqual(r.header("Cache-Control"), "no-store", r.describe())
        r = api().post("/v1/auth/login", {"email": email, "password": PASSWORD})
        r.expect(200)
        self.assertEqual(r.header("Cache-Control"), "no-store", r.describe())
        self.assertEqual(r.header("X-Content-Type-Options"), "nosniff", r.describe())
        u = signup(co)
        r = u.client.put("/v1/me/avatar", raw=png(), content_type="image/png")
        self.assertLess(r.status, 300, r.describe())
        img = api().get("/v1/users/%s/avatar" % u.id, token=None)
        img.expect(200)
        self.assertEqual(img.header("X-Content-Type-Options"), "nosniff", img.describe())
        for r in (api().get("/healthz"), api().get("/v1/me")):
            self.assertEqual(r.header("X-Content-Type-Options"), "nosniff", r.describe())
        # HAProxy's own answers too
        big = "&".join("p%d=1" % i for i in range(65))
        for r in (api().get("/metrics"), api().get("/healthz?" + big)):
            self.assertGreaterEqual(r.status, 400, r.describe())
            self.assertEqual(r.header("X-Content-Type-Options"), "nosniff", r.describe())

    def test_haproxy_bounds_what_a_server_can_parse(self):
        """More than 64 query parameters or a URI over 4 KiB: HAProxy answers
        414 in the API's JSON (a server closed a connection with 300
        parameters unanswered: 502 after three tries, 3 s). Cookies of any
        size never reach the servers (an 8 KiB one got a 431 whose body was
        a second header block), except bc_device on the login. Everything
        within the bounds at once reaches a server and is answered."""
        cases = ("?" + "&".join("p%d=1" % i for i in range(65)), "?" + "&" * 64 + "a", "?a=" + "x" * 4100)
        for query in cases:
            start = time.monotonic()
            api().get("/healthz" + query).expect(414, "uri_too_long", msg=query[:20])
            self.assertLess(time.monotonic() - start, 1.0)
        query = "?" + "&".join("p%d=%s" % (i, "v" * 55) for i in range(64))
        for cookie in ("c=" + "A" * 4090, "a=1; " * 1500, "bc_device=" + "A" * 600):
            r = api().get("/healthz" + query, headers={"Cookie": cookie, "X-Filler": "B" * 3000})
            self.assertEqual(r.status, 200, r.describe())
            self.assertEqual(r.json, {"status": "ok"}, r.describe())

    def test_haproxy_bounds_the_header_fields(self):
        """Header fields over 8 KiB in all, or more than 64: HAProxy answers
        431 in the API's JSON. Each takes a record of a server's parser memory:
        95 headers of 96 bytes (10 KiB) were closed unanswered after the
        handler had run, so a write was made and its answer lost (502). All
        of HAProxy's bounds at once (a URI of 4 KiB with 64 parameters, 8 KiB
        of 64 fields) reach a server, which answers."""
        def fields(n, size):
            return {"X-H%02d" % i: "v" * size for i in range(n)}
        for hdrs in (fields(95, 96), fields(65, 10), fields(2, 4500)):
            start = time.monotonic()
            r = api().get("/healthz", headers=hdrs)
            r.expect(431, "headers_too_large", msg="%d fields" % len(hdrs))
            self.assertLess(time.monotonic() - start, 1.0)
        query = "?" + "&".join("p%d=%s" % (i, "v" * 55) for i in range(64))
        # 58 of ours (6.9 KB), and the client's own (Host, Authorization, ...)
        r = api().get("/v1/me" + query, headers=fields(58, 110))
        r.expect(401, "unauthorized", msg="a request at every bound of HAProxy")
        u = signup(new_company())
        r = u.client.patch("/v1/me" + query, {"display_name": "Bounds"}, headers=fields(58, 110))
        self.assertEqual(r.status, 200, r.describe())

    def test_haproxy_408_for_a_stalled_body(self):
        """A body that stops coming: HAProxy answers 408 in JSON within its
        5 s, before any server holds the request (it used to reach a server,
        and after HAProxy's 10 s the client got a 504 blaming the server and
        asking for a retry)."""
        s = connect(self.haproxy, src=loop_addr(), timeout=10)
        t0 = time.time()
        s.sendall(b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 50\r\n\r\n{\"email\"")
        raw, closed = read_until_closed(s, 9)
        s.close()
        self.assertEqual(status_of(raw), 408, raw[:300])
        self.assertIn(b'"code":"request_timeout"', body_of(raw), raw[:300])
        self.assertIsNotNone(closed, "the connection stayed open")
        self.assertLess(time.time() - t0, 7)

    def test_server_408_for_a_large_body_stalled_past_haproxy(self):
        """A body over HAProxy's first 16 KiB that stops coming: HAProxy hands
        the request to a server, whose reaper answers a JSON 408 at the
        body's deadline (8 s), and HAProxy forwards it. It used to be
        HAProxy's 504 after its 10 s timeout, which blamed the server and
        asked for a retry; a bet whose body came at last is never placed."""
        u = signup(new_company())
        st = stack.get()
        logs = [os.path.join(st.dir, "api%d" % i, "api.log") for i in (1, 2)] if st.dir else []
        sizes = {p: os.path.getsize(p) for p in logs if os.path.isfile(p)}
        s = connect(self.haproxy, src=loop_addr(), timeout=15)
        t0 = time.time()
        head = ("POST /v1/bets HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                "Content-Type: application/json\r\nContent-Length: 40000\r\n\r\n" % u.client.token)
        s.sendall(head.encode() + b'{"match_id":"1",' + b" " * 20000)
        raw, took = b"", None
        s.settimeout(0.05)
        while time.time() - t0 < 13 and took is None:
            try:
                b = s.recv(65536)
            except socket.timeout:
                continue
            if not b:
                break
            raw += b
            if b"\r\n\r\n" in raw and body_of(raw).endswith(b"}}"):
                took = time.time() - t0
        s.close()
        self.assertEqual(status_of(raw), 408, raw[:400])
        self.assertIn(b'"code":"request_timeout"', body_of(raw), raw[:400])
        self.assertIn(b"not complete within 8000 ms", body_of(raw), raw[:400])
        self.assertTrue(took is not None and 7.5 < took < 9.8, "answered after %s s" % took)
        self.assertEqual(u.client.get("/v1/me/bets").expect_json(200)["items"], [], "a bet was placed")
        # logged and counted as the 408 it was (it was "0 ... aborted")
        deadline, lines = time.time() + 3, []
        while sizes and not lines and time.time() < deadline:
            for p, size in sizes.items():
                with open(p, "rb") as f:
                    f.seek(size)
                    lines += [ln for ln in f.read().decode("utf-8", "replace").split("\n")
                              if "POST /v1/bets " in ln and "body timed out" in ln]
            time.sleep(0.1)
        if sizes:
            self.assertEqual(len(lines), 1, "the API servers' access log lines: %r" % lines)
            self.assertIn("POST /v1/bets 408 ", lines[0])

    def test_haproxy_closes_an_idle_keep_alive_after_5_s(self):
        """The next request's headers within 5 s of the last answer, as
        documented (HAProxy's keep-alive timeout was 30 s, which a flood of
        connections that each sent one request held open)."""
        s = connect(self.haproxy, src=loop_addr(), timeout=10)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        raw, closed = read_until_closed(s, 9)
        s.close()
        self.assertEqual(status_of(raw), 200, raw[:200])
        self.assertIsNotNone(closed, "an idle keep-alive connection stayed open 9 s")
        self.assertTrue(4.0 < closed < 7.0, "closed %.1f s after the request" % closed)

    def test_haproxy_refuses_an_address_past_its_connections(self):
        """An address with 1,000 connections open has its next ones refused
        as they are accepted (closed, no answer), while other addresses are
        served; its connections closed, it connects again. Before, the cap
        was an HTTP 429 that left its connections open, so one address's idle
        connections filled HAProxy's and locked everyone out."""
        src = loop_addr()
        held = []
        try:
            for _ in range(1000):
                held.append(connect(self.haproxy, src=src, timeout=5))
            # connected once in the kernel's queue: HAProxy counts them as it accepts them
            time.sleep(1)
            try:  # reset as it is accepted: during the connect, or right after it
                extra = connect(self.haproxy, src=src, timeout=5)
                try:
                    extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                except OSError:
                    pass
                raw, closed = read_until_closed(extra, 2)
                extra.close()
            except ConnectionResetError:
                raw, closed = b"", 0.0
            self.assertEqual(raw, b"", "the 1,001st connection was answered: %r" % raw[:200])
            self.assertIsNotNone(closed, "the 1,001st connection stayed open")
            other = connect(self.haproxy, src=loop_addr(), timeout=5)
            other.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            raw, _ = read_until_closed(other, 3)
            other.close()
            self.assertEqual(status_of(raw), 200, raw[:200])
        finally:
            for c in held:
                c.close()
        deadline = time.time() + 5
        while True:
            c = connect(self.haproxy, src=src, timeout=5)
            c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            raw, _ = read_until_closed(c, 3)
            c.close()
            if status_of(raw) == 200 or time.time() > deadline:
                break
            time.sleep(0.2)
        self.assertEqual(status_of(raw), 200, "the address was not served again: %r" % raw[:200])

    def test_haproxy_passes_the_device_cookie_to_the_login(self):
        """Through HAProxy the login still gets bc_device among other cookies
        (and a large one): the login is a known device's, counted by a
        server's /metrics; without it, or elsewhere than the login, not."""
        def known():
            total = 0
            for url in stack.get().api_urls:
                lines = [ln for ln in Client(url).get("/metrics").expect(200).text.splitlines()
                         if ln.startswith("betcity_pwhash_known_total{")]
                total += int(lines[0].rsplit(" ", 1)[1])
            return total
        co = new_company()
        email = "%s@e2e.example" % uniq("ha-cookie")
        device = api().post("/v1/auth/signup", {"company": co["slug"], "join_code": co["join_code"], "email": email,
                                                "password": PASSWORD, "display_name": "C"}).expect_json(201)[
            "device_token"]
        body = {"email": email, "password": PASSWORD}
        before = known()
        api().post("/v1/auth/login", body, headers={"Cookie": "other=1"}).expect(200)
        self.assertEqual(known(), before, "a login without the cookie is a new device's")
        api().post("/v1/auth/login", body,
                   headers={"Cookie": "a=%s; bc_device=%s; z=2" % ("A" * 5000, device)}).expect(200)
        self.assertEqual(known(), before + 1, "the cookie did not reach the server")

    def test_haproxy_auth_rate_429(self):
        """More than 1,000 /v1/auth/ requests in 10 s from one address: HAProxy
        answers 429 in the API's JSON shape (from an address of its own)."""
        src = "127.0.%d.%d" % (random.randrange(10, 250), random.randrange(1, 250))
        s = connect(self.haproxy, src=src, timeout=10)
        req = b"GET /v1/auth/login HTTP/1.1\r\nHost: x\r\n\r\n"
        got, buf = [], b""
        try:
            for i in range(1100):
                s.sendall(req)
                while True:
                    head, sep, rest = buf.partition(b"\r\n\r\n")
                    if sep:
                        n = 0
                        for line in head.split(b"\r\n"):
                            if line.lower().startswith(b"content-length:"):
                                n = int(line.split(b":")[1])
                        if len(rest) >= n:
                            got.append((status_of(head), head, rest[:n]))
                            buf = rest[n:]
                            break
                    b = s.recv(65536)
                    if not b:
                        raise AssertionError("HAProxy closed after %d answers" % len(got))
                    buf += b
                if got[-1][0] == 429:
                    break
        finally:
            s.close()
        self.assertEqual(got[-1][0], 429, "no 429 after %d auth requests" % len(got))
        self.assertGreaterEqual(len(got), 1000)
        self.assertIn(b"retry-after", got[-1][1].lower())
        self.assertEqual(json.loads(got[-1][2])["error"]["code"], "rate_limited")
        # Other addresses go on.
        api().get("/v1/auth/login").expect(405)
