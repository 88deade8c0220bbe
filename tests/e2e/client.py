"""HTTP client of the end-to-end suite: one request per connection, a 10 s
timeout on every request, JSON helpers, and assertions whose messages show the
request and the response body.

Only the Python standard library is used (http.client), so the suite runs on
a bare Debian machine.
"""

import http.client
import json
import socket
import urllib.parse

TIMEOUT = 10.0

# Marks "no JSON body given" (None is a valid JSON body: null).
_NOBODY = object()
# Marks "use the client's own token".
_OWN = object()


class RequestFailed(AssertionError):
    """The server did not answer (refused, reset, or no answer in time)."""


class Response:
    """A finished HTTP exchange: status, headers and the whole body."""

    def __init__(self, method, url, status, reason, headers, body, sent=None):
        self.method = method
        self.url = url
        self.status = status
        self.reason = reason
        self.headers = headers  # http.client.HTTPMessage (case-insensitive)
        self.body = body  # bytes
        self.sent = sent  # the request body (bytes) or None
        self._json = _NOBODY

    def header(self, name):
        return self.headers.get(name)

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    @property
    def json(self):
        """The body parsed as JSON, or None if it is not JSON."""
        if self._json is _NOBODY:
            try:
                self._json = json.loads(self.body.decode("utf-8"))
            except (ValueError, UnicodeDecodeError):
                self._json = None
        return self._json

    @property
    def error_code(self):
        j = self.json
        if isinstance(j, dict) and isinstance(j.get("error"), dict):
            return j["error"].get("code")
        return None

    @property
    def error_message(self):
        j = self.json
        if isinstance(j, dict) and isinstance(j.get("error"), dict):
            return j["error"].get("message")
        return None

    def describe(self, limit=1500):
        body = self.text
        if len(body) > limit:
            body = body[:limit] + "…(%d bytes)" % len(self.body)
        sent = ""
        if self.sent is not None:
            s = self.sent[:300].decode("utf-8", "replace")
            if len(self.sent) > 300:
                s += "…(%d bytes)" % len(self.sent)
            sent = " with %s" % s
        return "%s %s%s -> %d %s: %s" % (
            self.method, self.url, sent, self.status, self.reason, body)

    def expect(self, status, code=None, msg=None):
        """Asserts the status (an int or a tuple of ints) and, if given, the
        error code (a string or a tuple of strings); also that an error
        answer has the documented error body. Returns self."""
        statuses = (status,) if isinstance(status, int) else tuple(status)
        prefix = (msg + ": ") if msg else ""
        if self.status not in statuses:
            want = "/".join(str(s) for s in statuses)
            if code:
                want += " " + (code if isinstance(code, str) else "|".join(code))
            raise AssertionError("%sexpected %s, got %s" % (prefix, want, self.describe()))
        if code is not None:
            codes = (code,) if isinstance(code, str) else tuple(code)
            if self.error_code not in codes:
                raise AssertionError("%sexpected error code %s, got %s" % (
                    prefix, "|".join(codes), self.describe()))
        if self.status >= 400 and self.status != 405 and code is not None:
            self.expect_error_body(msg)
        return self

    def expect_error_body(self, msg=None):
        """The documented error body: {"error": {"code": snake_case, "message": text}}."""
        prefix = (msg + ": ") if msg else ""
        j = self.json
        ok = (isinstance(j, dict) and isinstance(j.get("error"), dict)
              and isinstance(j["error"].get("code"), str)
              and isinstance(j["error"].get("message"), str))
        if not ok:
            raise AssertionError("%sexpected an error body {error: {code, message}}, got %s"
                                 % (prefix, self.describe()))
        return self

    def expect_json(self, status=200, msg=None):
        """Asserts the status and a JSON object or array body; returns it."""
        self.expect(status, msg=msg)
        if self.json is None:
            raise AssertionError("%sexpected a JSON body, got %s" % (
                (msg + ": ") if msg else "", self.describe()))
        return self.json


def _split_url(base_url):
    u = urllib.parse.urlsplit(base_url)
    if u.scheme != "http":
        raise ValueError("only http:// URLs are supported: %r" % base_url)
    return u.hostname, u.port or 80, u.path.rstrip("/")


def encode_query(params):
    """?a=b&c=d from a dict, leaving out None values; '' if nothing is left."""
    items = [(k, v) for k, v in params.items() if v is not None]
    return ("?" + urllib.parse.urlencode(items)) if items else ""


class Client:
    """A client of one base URL, optionally with a bearer token."""

    def __init__(self, base_url, token=None, timeout=TIMEOUT):
        self.base_url = base_url.rstrip("/")
        self.host, self.port, self.prefix = _split_url(self.base_url)
        self.token = token
        self.timeout = timeout

    def with_token(self, token):
        return Client(self.base_url, token, self.timeout)

    def at(self, base_url):
        """The same token against another base URL (e.g. one API server)."""
        return Client(base_url, self.token, self.timeout)

    def request(self, method, path, body=_NOBODY, *, raw=None, content_type=_NOBODY,
                headers=None, token=_OWN, query=None, timeout=None):
        """Sends one request on a new connection and reads the whole answer.

        body: a JSON value (sent with Content-Type: application/json unless
        content_type says otherwise); raw: bytes sent as they are (with the
        given content_type, none by default); token: _OWN (the client's),
        None (no Authorization) or a string; headers: extra headers.
        """
        hdrs = {}
        data = None
        if body is not _NOBODY:
            data = json.dumps(body).encode("utf-8")
            ctype = "application/json" if content_type is _NOBODY else content_type
        elif raw is not None:
            data = raw if isinstance(raw, bytes) else raw.encode("utf-8")
            ctype = None if content_type is _NOBODY else content_type
        else:
            ctype = None if content_type is _NOBODY else content_type
        if ctype is not None:
            hdrs["Content-Type"] = ctype
        tok = self.token if token is _OWN else token
        if tok is not None:
            hdrs["Authorization"] = "Bearer " + tok
        hdrs["Connection"] = "close"
        if headers:
            hdrs.update(headers)
        if query:
            path = path + encode_query(query)
        url = self.base_url + path
        conn = http.client.HTTPConnection(self.host, self.port,
                                          timeout=timeout or self.timeout)
        try:
            try:
                conn.request(method, self.prefix + path, body=data, headers=hdrs)
            except (BrokenPipeError, ConnectionResetError):
                # The server may answer (413) and close before reading a large
                # body; its answer is still in our receive buffer.
                if conn.sock is None:
                    raise
            try:
                resp = conn.getresponse()
            except AttributeError as e:  # http.client after the socket went away
                raise ConnectionResetError(str(e)) from None
            payload = resp.read()
            return Response(method, url, resp.status, resp.reason, resp.headers, payload, data)
        except (socket.timeout, TimeoutError) as e:
            raise RequestFailed("%s %s: no answer within %.0f s (%s)" % (
                method, url, timeout or self.timeout, e)) from None
        except (OSError, http.client.HTTPException) as e:
            raise RequestFailed("%s %s: %s: %s" % (method, url, type(e).__name__, e)) from None
        finally:
            conn.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=_NOBODY, **kw):
        return self.request("POST", path, body, **kw)

    def put(self, path, body=_NOBODY, **kw):
        return self.request("PUT", path, body, **kw)

    def patch(self, path, body=_NOBODY, **kw):
        return self.request("PATCH", path, body, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)


def raw_request(host, port, data, timeout=TIMEOUT):
    """Sends bytes as they are on a new connection and returns what came back
    until the server closed or timed out (for malformed HTTP)."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    break
                chunks.append(b)
        except socket.timeout:
            pass
        return b"".join(chunks)
