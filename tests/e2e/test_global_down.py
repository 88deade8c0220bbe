"""The global host (the catalog's, which holds the shard map) killed
(SIGKILL, `tools/devstack kill`) in a stack without replicas: nothing fails
it over.

1. The API servers keep the map they have: /readyz stays 200 on each, its
   body saying the global database is unavailable, so HAProxy keeps them
   (it checks /readyz every second, a server out after 2 failures: before,
   /readyz asked the global host and both servers went out, every request
   503 "no API server available"); GET /v1/me through HAProxy answers 200
   for a user on another host throughout, 503 with Retry-After for one on
   the dead host. After restart-host the global host is reported back and
   both users are served.
2. An API server started while the global host is down has no map: /readyz
   503, and GET /v1/me, PATCH /v1/me and GET /v1/users/{id} answer 503
   `unavailable` with Retry-After: 1 (before: 401 "the token's user no
   longer exists" and 404 "no such user", for users that exist). Once the
   global host is back it reads the map and serves them.

The global host is restarted in a cleanup, also when a test fails. Needs
BC_STACK_DIR (tools/devstack kill/restart-host, cluster.yaml). Prints its
figures (lines "[global] …").
"""

import os
import re
import signal
import subprocess
import sys
import time
import unittest

import stack
from client import Client, RequestFailed
from fixtures import new_company, signup
from test_abuse import api1_cmdline, free_port

HAPROXY_OUT_S = 3.0  # HAProxy's checks: every 1 s, out after 2 failures (etc/haproxy/haproxy.cfg.in)
BACK_S = 30.0  # the global host restarted: the servers reach it again within this
UP = {"status": "ready"}  # /readyz, the global host up
DOWN = {"status": "ready", "global": "unavailable"}  # and a reason


def log(msg):
    sys.stdout.write("    [global] %s\n" % msg)
    sys.stdout.flush()


def global_host(s):
    """(the global host's name in the map, its devstack server name): the
    config's global_host, whose devstack directory holds its client.cnf."""
    with open(s.cluster) as f:
        m = re.search(r"^\s*global_host:\s*(\S+)", f.read(), re.M)
    if m is None:
        raise unittest.SkipTest("no global_host in %s" % s.cluster)
    cnf = s.host_cnfs().get(m.group(1))
    if cnf is None:
        raise unittest.SkipTest("no client.cnf for the global host %s" % m.group(1))
    return m.group(1), os.path.basename(os.path.dirname(cnf))


def server_alive(s, name):
    p = s.devstack_cmd("pid", name)
    pid = p.stdout.strip()
    if p.returncode != 0 or not pid.isdigit():
        return False
    try:
        with open("/proc/%s/stat" % pid) as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"  # a zombie is dead
    except OSError:
        return False


def ensure_up(s, name):
    """The cleanup of every test here: restarts the server when it is dead,
    then waits for the API servers to reach it again (a global pool marked
    down answers 503 for a second: the next test's requests would get it)."""
    if not server_alive(s, name):
        p = s.devstack_cmd("restart-host", name, timeout=180)
        if p.returncode != 0:
            log("restart-host %s failed: %s" % (name, (p.stdout + p.stderr)[-1500:]))
    for url in [s.api_url] + s.api_urls:
        try:
            wait_ready(url, UP, BACK_S)
        except AssertionError as e:
            log("cleanup: %s" % e)


def kill(test, s, name):
    """kill -9 of a devstack server, restarted in a cleanup."""
    test.addCleanup(ensure_up, s, name)
    p = s.devstack_cmd("kill", name)
    test.assertEqual(p.returncode, 0, "devstack kill %s: %s" % (name, p.stdout + p.stderr))
    deadline = time.time() + 10
    while server_alive(s, name):
        test.assertLess(time.time(), deadline, "%s still alive 10 s after kill -9" % name)
        time.sleep(0.1)
    log("killed %s" % name)


def restart(test, s, name):
    t = time.time()
    p = s.devstack_cmd("restart-host", name, timeout=180)
    test.assertEqual(p.returncode, 0, "restart-host %s: %s" % (name, (p.stdout + p.stderr)[-1500:]))
    log("restart-host %s took %.1f s" % (name, time.time() - t))


def ready(url):
    """(status, body) of GET /readyz; (None, the error) without an answer."""
    try:
        r = Client(url).get("/readyz", token=None, timeout=5)
    except RequestFailed as e:
        return None, str(e)
    return r.status, r.json if r.json is not None else r.text


def wait_ready(url, body, timeout):
    """Waits until url's /readyz answers 200 with body; fails with its last answer."""
    deadline = time.time() + timeout
    while True:
        got = ready(url)
        if got == (200, body):
            return
        if time.time() > deadline:
            raise AssertionError("%s/readyz not 200 %r within %.0f s: last %r" % (url, body, timeout, got))
        time.sleep(0.2)


def wait_me(user, url, timeout):
    """Waits until GET /v1/me of user at url answers 200 (his own row)."""
    deadline = time.time() + timeout
    while True:
        r = user.client.at(url).get("/v1/me")
        if r.status == 200 and r.json.get("id") == user.id:
            return
        if time.time() > deadline:
            raise AssertionError("GET /v1/me not 200 within %.0f s: %s" % (timeout, r.describe()))
        time.sleep(0.2)


def users_by_host(s, gname, n=12):
    """Users of a fresh company: one whose shard is on a host other than the
    global one, one on the global host (None if none of n was), and another
    user of the company."""
    co = new_company()
    other = on_global = None
    for _ in range(n):
        u = signup(co)
        if s.host_of_id(u.id) == gname:
            on_global = on_global or u
        else:
            other = other or u
        if other is not None and on_global is not None:
            break
    if other is None:
        raise AssertionError("no user of %d on a host other than %s" % (n, gname))
    return other, on_global, signup(co)


class GlobalBase(unittest.TestCase):
    def setUp(self):
        self.s = stack.get()
        self.s.require_dir()
        self.s.require_api()
        self.gname, self.gserver = global_host(self.s)
        for url in [self.s.api_url] + self.s.api_urls:  # a test before may have just restarted it
            wait_ready(url, UP, BACK_S)


class TestGlobalHostDown(GlobalBase):

    def test_servers_stay_ready_and_serve_other_hosts(self):
        s = self.s
        other, on_global, _ = users_by_host(s, self.gname)
        log("user %s on %s, user %s on %s" % (other.id, s.host_of_id(other.id),
                                              on_global and on_global.id, self.gname))
        for url in [s.api_url] + s.api_urls:
            self.assertEqual(ready(url), (200, UP), url)
        kill(self, s, self.gserver)

        for url in s.api_urls:
            status, body = ready(url)
            self.assertEqual(status, 200, "%s/readyz with the global host down: %r" % (url, body))
            self.assertEqual({k: body.get(k) for k in DOWN}, DOWN, body)
            self.assertIn("global database", body.get("reason", ""), body)
        # Long enough for HAProxy to take out a server that fails its checks.
        time.sleep(HAPROXY_OUT_S)
        status, body = ready(s.api_url)
        self.assertEqual(status, 200, "HAProxy's /readyz: %r" % (body,))
        self.assertEqual(body.get("global"), "unavailable", body)
        t_end, n = time.time() + HAPROXY_OUT_S, 0
        while time.time() < t_end:
            r = other.client.get("/v1/me")
            r.expect(200, msg="GET /v1/me through HAProxy, a user on %s" % s.host_of_id(other.id))
            self.assertEqual(r.json["id"], other.id)
            n += 1
            time.sleep(0.1)
        log("global host down: %d GET /v1/me through HAProxy in %.0f s, all 200" % (n, HAPROXY_OUT_S))
        if on_global is not None:
            r = on_global.client.get("/v1/me")
            r.expect(503, "unavailable", msg="GET /v1/me, a user on the dead global host")
            self.assertEqual(r.header("Retry-After"), "1", r.describe())

        restart(self, s, self.gserver)
        t = time.time()
        for url in [s.api_url] + s.api_urls:
            wait_ready(url, UP, BACK_S)
        for u in (other, on_global):
            if u is not None:
                wait_me(u, s.api_url, BACK_S)
        log("the global host reported back and its users served %.1f s after its restart" % (time.time() - t))


class NoMapServer:
    """An API server of this test's own, started with api1's options while
    the global host is down: it answers, but has no map."""

    def __init__(self, s):
        argv, skip = [], False
        for a in api1_cmdline(s):
            if skip:
                skip = False
            elif a in ("--listen", "--name"):
                skip = True
            elif not a.startswith(("--listen=", "--name=")):
                argv.append(a)
        self.url = "http://127.0.0.1:%d" % free_port()
        argv += ["--listen", self.url[len("http://"):], "--name", "nomap"]
        self.log = os.path.join(s.dir, "nomap-api.log")
        self.logf = open(self.log, "ab")
        self.proc = subprocess.Popen(argv, stdout=self.logf, stderr=self.logf, stdin=subprocess.DEVNULL)
        deadline = time.time() + 30
        while True:
            try:
                if Client(self.url).get("/healthz", timeout=2).status == 200:
                    return
            except RequestFailed:
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                self.stop()
                raise AssertionError("own API server did not answer /healthz; see %s" % self.log)
            time.sleep(0.2)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # no drain: HAProxy never sent it anything
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logf.close()


class TestStartedWithoutMap(GlobalBase):

    def test_no_map_is_unavailable_not_a_missing_user(self):
        s = self.s
        other, _, peer = users_by_host(s, self.gname)
        kill(self, s, self.gserver)
        srv = NoMapServer(s)
        self.addCleanup(srv.stop)  # before the global host's restart: cleanups run last first
        self.assertEqual(ready(srv.url), (503, {"status": "not_ready", "reason": "no shard map loaded"}))
        c = other.client.at(srv.url)
        for what, r in (("GET /v1/me", c.get("/v1/me")),
                        ("PATCH /v1/me", c.patch("/v1/me", {"display_name": "No Map"})),
                        ("GET /v1/users/{id}", c.get("/v1/users/%s" % other.id)),
                        ("GET /v1/users/{id}, another user's",
                         peer.client.at(srv.url).get("/v1/users/%s" % other.id))):
            r.expect(503, "unavailable", msg="%s on a server without a map" % what)
            self.assertEqual(r.header("Retry-After"), "1", "%s: %s" % (what, r.describe()))
        text = Client(srv.url).get("/metrics", token=None).expect(200).text
        m = re.search(r'^betcity_db_unavailable_total\{[^}]*cause="nomap"\} (\d+)', text, re.M)
        self.assertTrue(m and int(m.group(1)) >= 4, "503s of cause nomap in /metrics: %s" % (m and m.group(0)))
        log("a server without a map: GET and PATCH /v1/me, GET /v1/users/{id} answer 503 (cause nomap)")

        restart(self, s, self.gserver)
        t = time.time()
        wait_ready(srv.url, UP, BACK_S)
        log("the server without a map read it %.1f s after the global host's restart" % (time.time() - t))
        wait_me(other, srv.url, BACK_S)
        j = peer.client.at(srv.url).get("/v1/users/%s" % other.id).expect_json(200)
        self.assertEqual(j.get("display_name"), other.user["display_name"], "the PATCH answered 503 changed it")


if __name__ == "__main__":
    unittest.main()
