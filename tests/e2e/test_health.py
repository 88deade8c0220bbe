"""GET /healthz, /readyz, /metrics; unknown paths and wrong methods."""

import http.client
import json
import os
import re
import subprocess
import tempfile
import unittest
import urllib.parse

import stack
from client import Client
from fixtures import admin, api, new_match


def parse_metrics(text):
    """{metric name: type} and [(name, labels, value)] of a Prometheus text exposition."""
    types, samples = {}, []
    for line in text.splitlines():
        if not line.strip():
            continue
        m = re.match(r"#\s*TYPE\s+([a-zA-Z_:][a-zA-Z0-9_:]*)\s+(\w+)", line)
        if m:
            types[m.group(1)] = m.group(2)
            continue
        if line.startswith("#"):
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if not m:
            raise AssertionError("not a Prometheus sample line: %r" % line)
        samples.append((m.group(1), m.group(2) or "", float(m.group(3))))
    return types, samples


def request_total(text):
    """Sum of the samples of counters whose name speaks of requests."""
    types, samples = parse_metrics(text)
    names = {n for n, t in types.items() if t == "counter" and "request" in n}
    total = 0.0
    for name, _, value in samples:
        base = name[:-6] if name.endswith("_total") and name not in types else name
        if name in names or base in names:
            total += value
    return names, total


class TestCommandLine(unittest.TestCase):
    """betcity-api's own command line: a mistake is exit 2 and says what."""

    def run_api(self, *args):
        return subprocess.run([stack.get().api_bin] + list(args), capture_output=True,
                              text=True, timeout=30, stdin=subprocess.DEVNULL)

    def test_routes(self):
        p = self.run_api("--routes")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("GET /v1/matches/{id}/odds\n", p.stdout)

    def test_routes_with_an_argument_is_a_usage_error(self):
        p = self.run_api("--routes", "extra")
        self.assertEqual(p.returncode, 2, p.stdout)
        self.assertEqual(p.stdout, "", "no table printed")
        self.assertIn("--routes takes no argument, got 'extra'", p.stderr)

    def test_bad_values_name_the_option(self):
        for args, want in ((["--threads", "0"], "--threads wants 1..256"),
                           (["--set", "trusted_proxies=10.0.0.1,"], "an empty item"),
                           (["--set", "conn_per_addr=0x10"], "wants a whole number"),
                           (["--set", "nokey"], "--set wants KEY=VALUE"),
                           (["--set", "conn_per_addr=10", "--set", "conn_per_addr=20"],
                            "--set conn_per_addr=20: the key conn_per_addr was set before")):
            p = self.run_api(*(args + ["--routes"]))
            self.assertEqual(p.returncode, 2, "%s: %s" % (args, p.stdout))
            self.assertIn(want, p.stderr, args)

    def usage_error(self, args, want):
        """args with a config and key file that do not exist: a check made
        after reading them (or after contacting a database) would exit 1."""
        p = self.run_api("-c", "/nonexistent/cluster.yaml", "--secret-file", "/nonexistent/api.secret", *args)
        self.assertEqual(p.returncode, 2, "%s: %s" % (args, p.stderr))
        self.assertIn(want, p.stderr, args)
        return p

    def test_name_is_checked(self):
        """The name labels metrics and settlement leases: 1..63 of [A-Za-z0-9_.-],
        nothing to escape, nothing cut."""
        for name in ('x"y\\z', "", "a" * 64, "api 1", "api1\n", "api/1", "api{1}"):
            p = self.usage_error(["--listen", "127.0.0.1:1", "--name", name],
                                 "--name wants 1..63 characters of A-Z a-z 0-9 _ . -")
            self.assertIn("got '%s'" % name, p.stderr)
        for name in ("api1", "a" * 63, "web-01.example_2"):
            p = self.run_api("-c", "/nonexistent/cluster.yaml", "--listen", "127.0.0.1:1",
                             "--secret-file", "/nonexistent/api.secret", "--name", name)
            self.assertEqual(p.returncode, 1, "%s: %s" % (name, p.stderr))
            self.assertIn("/nonexistent/api.secret: No such file or directory", p.stderr, name)

    def test_listen_wants_an_ipv4_address_and_port(self):
        for listen in ("localhost:8080", "[::1]:8080", ":8080", "::1", "127.0.0.1", "127.0.0.1:",
                       "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:+80", "127.0.0.1: 80", "10.0.1:80"):
            p = self.usage_error(["--listen", listen], "--listen wants IPV4:PORT, an IPv4 address")
            self.assertIn("got '%s'" % listen, p.stderr)

    def test_secret_file_that_is_a_directory(self):
        with tempfile.TemporaryDirectory() as d:
            p = self.run_api("-c", "/nonexistent/cluster.yaml", "--listen", "127.0.0.1:1", "--secret-file", d)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("%s: Is a directory" % d, p.stderr)
        self.assertNotIn("no key", p.stderr)

    def test_help_has_the_defaults_in_one_column(self):
        p = self.run_api("--help")
        self.assertEqual(p.returncode, 0, p.stderr)
        lines = p.stdout.split("with their defaults:\n", 1)[1].splitlines()
        self.assertGreater(len(lines), 20, p.stdout)
        starts = {len(re.match(r"  \S+ +", line).group(0)) for line in lines}
        self.assertEqual(len(starts), 1, "defaults start at columns %s:\n%s" % (sorted(starts), p.stdout))

    def test_port_in_use_is_refused(self):
        """A second server on the port of an API server, or of HAProxy (which
        sets SO_REUSEPORT), exits 1 at once and takes none of its connections."""
        s = stack.get()
        s.require_dir()
        for url in (s.api_urls[0], s.api_url):
            port = urllib.parse.urlsplit(url).port
            p = subprocess.run([s.api_bin, "-c", s.cluster, "--listen", "127.0.0.1:%d" % port,
                                "--secret-file", os.path.join(s.dir, "api.secret"), "--name", "e2e-dup",
                                "--threads", "1", "--workers", "1", "--quiet"],
                               capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
            self.assertEqual(p.returncode, 1, "%s: %s" % (url, p.stderr))
            self.assertIn("cannot listen on 127.0.0.1:%d: address in use" % port, p.stderr, url)
            for _ in range(10):
                Client(url).get("/healthz", token=None).expect_json(200)


class TestHealth(unittest.TestCase):
    def servers(self):
        s = stack.get()
        return [Client(u) for u in [s.api_url] + s.api_urls]

    def test_healthz(self):
        for c in self.servers():
            j = c.get("/healthz", token=None).expect_json(200)
            self.assertEqual(j, {"status": "ok"}, c.base_url)

    def test_readyz(self):
        for c in self.servers():
            r = c.get("/readyz", token=None)
            j = r.expect_json(200)
            self.assertEqual(j.get("status"), "ready", r.describe())

    def test_json_content_type(self):
        r = api().get("/healthz")
        self.assertTrue((r.header("Content-Type") or "").startswith("application/json"), r.describe())

    def test_metrics_prometheus_text_with_request_counters(self):
        s = stack.get()
        c = Client(s.api_urls[0])
        r = c.get("/metrics", token=None).expect(200)
        self.assertTrue((r.header("Content-Type") or "").startswith("text/plain"),
                        "Prometheus text is text/plain: %s" % r.header("Content-Type"))
        names, before = request_total(r.text)
        self.assertTrue(names, "no counter whose name holds 'request' in /metrics:\n%s" % r.text[:3000])
        for _ in range(5):
            c.get("/healthz").expect(200)
            c.get("/v1/me").expect(401, "unauthorized")
        names2, after = request_total(c.get("/metrics").expect(200).text)
        self.assertGreaterEqual(after - before, 10,
                                "request counters %s went from %s to %s after 10 requests"
                                % (sorted(names2), before, after))

    def test_unknown_path_404(self):
        for path in ("/nope", "/v1/nope", "/v1/users", "/v2/me", "/v1/me/nope", "/v1/matches/999999999999999999/nope"):
            api().get(path).expect(404, "not_found", msg=path)

    def test_wrong_method_405_with_allow(self):
        a = admin()
        for method, path in (("DELETE", "/v1/me"), ("PUT", "/v1/auth/login"), ("GET", "/v1/auth/signup"),
                             ("POST", "/healthz"), ("DELETE", "/v1/matches")):
            r = a.request(method, path)
            r.expect(405, "method_not_allowed", msg="%s %s" % (method, path))
            self.assertTrue(r.header("Allow"), "405 without an Allow header: %s" % r.describe())

    def test_head_is_get_without_the_body(self):
        """HEAD of a GET route answers what GET would, headers only (RFC 9110
        9.3.2): the same status and Content-Length, no body; the next request
        on the connection is read from the right byte. HEAD where no GET is:
        405 naming the methods; a route's token is needed as for GET."""
        a, m = admin(), new_match()
        # odds twice: a miss, then the hot table's prebuilt answer
        for path in ("/healthz", "/v1/me", "/v1/matches?limit=1", "/v1/matches/%s" % m["id"],
                     "/v1/matches/%s/odds" % m["id"], "/v1/matches/%s/odds" % m["id"]):
            g = a.get(path).expect(200)
            h = a.request("HEAD", path).expect(200)
            self.assertEqual(h.body, b"", path)
            self.assertEqual(h.header("Content-Type"), g.header("Content-Type"), path)
            self.assertEqual(h.header("Content-Length"), str(len(g.body)), path)
        api().request("HEAD", "/v1/me").expect(401)
        r = a.request("HEAD", "/v1/auth/login").expect(405)
        self.assertEqual(r.header("Allow"), "POST")
        self.assertEqual(a.request("DELETE", "/v1/me").expect(405).header("Allow"), "GET, HEAD, PATCH")
        s = stack.get()
        for url in [s.api_url] + s.api_urls:  # HAProxy, then each server
            u = urllib.parse.urlsplit(url)
            conn = http.client.HTTPConnection(u.hostname, u.port, timeout=5)
            try:
                for _ in range(3):  # one keep-alive connection: a stray body breaks the GET
                    conn.request("HEAD", "/healthz")
                    r = conn.getresponse()
                    self.assertEqual((r.status, r.read()), (200, b""), url)
                    conn.request("GET", "/healthz")
                    r = conn.getresponse()
                    self.assertEqual((r.status, json.loads(r.read())), (200, {"status": "ok"}), url)
            finally:
                conn.close()

    def test_bad_path_ids_404(self):
        a = admin()
        for path in ("/v1/users/abc", "/v1/users/-1", "/v1/users/12345678901234567890",
                     "/v1/bets/1x", "/v1/matches/%2F1", "/v1/companies/ /teams", "/v1/users/"):
            r = a.get(path.replace(" ", "%20"))
            r.expect(404, "not_found", msg=path)


if __name__ == "__main__":
    unittest.main()
