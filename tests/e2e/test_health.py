"""GET /healthz, /readyz, /metrics; unknown paths and wrong methods."""

import re
import unittest

import stack
from client import Client
from fixtures import admin, api


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

    def test_bad_path_ids_404(self):
        a = admin()
        for path in ("/v1/users/abc", "/v1/users/-1", "/v1/users/12345678901234567890",
                     "/v1/bets/1x", "/v1/matches/%2F1", "/v1/companies/ /teams", "/v1/users/"):
            r = a.get(path.replace(" ", "%20"))
            r.expect(404, "not_found", msg=path)


if __name__ == "__main__":
    unittest.main()
