"""POST /v1/auth/signup, POST /v1/auth/login and tokens (forged, tampered, expired, and
the token a connection keeps verified)."""

import http.client
import re
import subprocess
import time
import unittest
import urllib.parse

import stack
from fixtures import (ID_RE, PASSWORD, api, b64url, key_id, make_token, new_company, new_team,
                      signup, tamper, uniq)

USER_KEYS = {"id", "email", "display_name", "company_id", "team_id", "role", "balance", "points"}


class TestSignup(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.co = new_company()
        cls.other = new_company()

    def body(self, **kw):
        b = {"company": self.co["slug"], "join_code": self.co["join_code"],
             "email": "%s@e2e.example" % uniq("s"), "password": PASSWORD, "display_name": "Sig Nup"}
        b.update(kw)
        return b

    def test_signup_201_user_object(self):
        b = self.body(email="  %s@E2E.Example " % uniq("MiXeD").upper())
        r = api().post("/v1/auth/signup", b)
        j = r.expect_json(201)
        self.assertIsInstance(j.get("token"), str, r.describe())
        u = j.get("user")
        self.assertEqual(set(u), USER_KEYS, r.describe())
        self.assertRegex(u["id"], ID_RE)
        self.assertEqual(u["email"], b["email"].strip().lower(), "e-mail in canonical form")
        self.assertEqual(u["company_id"], self.co["id"])
        self.assertIsNone(u["team_id"])
        self.assertEqual(u["role"], "member")
        self.assertIsInstance(u["balance"], int)
        self.assertGreaterEqual(u["balance"], 1)
        self.assertEqual(u["points"], 0)
        self.assertEqual(u["display_name"], "Sig Nup")
        me = api().with_token(j["token"]).get("/v1/me").expect_json(200)
        self.assertEqual(me, u)

    def test_signup_with_team(self):
        team = new_team(self.co)
        u = signup(self.co, team_id=team["id"])
        self.assertEqual(u.user["team_id"], team["id"])

    def test_signup_team_of_other_company_invalid_team(self):
        team = new_team(self.other)
        api().post("/v1/auth/signup", self.body(team_id=team["id"])).expect(422, "invalid_team")

    def test_wrong_join_code(self):
        code = self.co["join_code"]
        wrong = ("A" if code[0] != "A" else "B") + code[1:]
        r1 = api().post("/v1/auth/signup", self.body(join_code=wrong)).expect(422, "invalid_join_code")
        # another company's code, and an unknown slug: the same answer
        r2 = api().post("/v1/auth/signup", self.body(join_code=self.other["join_code"])).expect(
            422, "invalid_join_code")
        r3 = api().post("/v1/auth/signup", self.body(company=uniq("nosuch"))).expect(422, "invalid_join_code")
        self.assertEqual(r1.json, r3.json, "unknown slug and wrong code must answer the same")
        self.assertEqual(r1.json, r2.json)

    def test_email_taken(self):
        b = self.body()
        api().post("/v1/auth/signup", b).expect(201)
        api().post("/v1/auth/signup", b).expect(409, "email_taken")
        # the canonical form is what is unique
        api().post("/v1/auth/signup", self.body(email=" " + b["email"].upper() + "\t")).expect(409, "email_taken")
        # also from another company
        other = dict(self.body(company=self.other["slug"], join_code=self.other["join_code"]), email=b["email"])
        api().post("/v1/auth/signup", other).expect(409, "email_taken")

    def test_email_accents_do_not_fold(self):
        """E-mails are ASCII-case-insensitive (canonical form) and otherwise
        compared byte for byte: an accent makes another address."""
        tail = uniq("acc") + "@e2e.example"
        plain = "e" + tail
        accented = "\u00e9" + tail
        upper_accented = "\u00c9" + tail
        a = api().post("/v1/auth/signup", self.body(email=accented, password="pw-accented")).expect_json(201)
        self.assertEqual(a["user"]["email"], accented)
        p = api().post("/v1/auth/signup", self.body(email=plain.upper(), password="pw-plain")).expect_json(201)
        self.assertEqual(p["user"]["email"], plain, "ASCII letters are lower-cased")
        self.assertNotEqual(a["user"]["id"], p["user"]["id"], "e and \u00e9 are two accounts")
        # ASCII case folds, an accent never does; non-ASCII case is kept as it is.
        api().post("/v1/auth/signup", self.body(email=" \u00e9" + tail.upper() + " ")).expect(409, "email_taken")
        u = api().post("/v1/auth/signup", self.body(email=upper_accented)).expect_json(201)
        self.assertNotEqual(u["user"]["id"], a["user"]["id"])
        j = api().post("/v1/auth/login", {"email": accented, "password": "pw-accented"}).expect_json(200)
        self.assertEqual(j["user"]["id"], a["user"]["id"])
        j = api().post("/v1/auth/login", {"email": plain, "password": "pw-plain"}).expect_json(200)
        self.assertEqual(j["user"]["id"], p["user"]["id"])
        api().post("/v1/auth/login", {"email": plain, "password": "pw-accented"}).expect(401, "bad_credentials")
        api().post("/v1/auth/login", {"email": accented, "password": "pw-plain"}).expect(401, "bad_credentials")
        s = stack.get()
        if s.dir:
            # On the accented user's own shard, the plain spelling finds nothing
            # (a case- and accent-insensitive collation would find his row).
            rows = s.sql_shard(stack.shard_of(a["user"]["id"]),
                               "SELECT COUNT(*) FROM {s}.users WHERE id = %s AND email = '%s'"
                               % (a["user"]["id"], plain))
            self.assertEqual(rows, [["0"]])

    def test_weak_password(self):
        for pw in ("", "1234567", "short"):
            api().post("/v1/auth/signup", self.body(password=pw)).expect(422, "weak_password", msg=repr(pw))
        api().post("/v1/auth/signup", self.body(password="12345678")).expect(201, msg="8 chars are enough")

    def test_invalid_email(self):
        for e in ("no-at-sign", "@example.com", "user@", "a@b@c", "", "   ", "x" * 250 + "@e.com"):
            api().post("/v1/auth/signup", self.body(email=e)).expect(422, "invalid_email", msg=repr(e))

    def test_invalid_display_name(self):
        for d in ("", "   ", "x" * 101):
            api().post("/v1/auth/signup", self.body(display_name=d)).expect(422, "invalid_display_name", msg=repr(d))
        j = api().post("/v1/auth/signup", self.body(display_name="  Trim Me  ")).expect_json(201)
        self.assertEqual(j["user"]["display_name"], "Trim Me")

    def test_missing_and_unknown_fields(self):
        b = self.body()
        del b["password"]
        r = api().post("/v1/auth/signup", b).expect(400, "invalid_field")
        self.assertIn("password", r.error_message or "", r.describe())
        r = api().post("/v1/auth/signup", self.body(role="platform_admin")).expect(400, "unknown_field")
        self.assertIn("role", r.error_message or "", r.describe())


class TestLogin(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.co = new_company()
        cls.u = signup(cls.co)

    def test_login_ok(self):
        j = api().post("/v1/auth/login", {"email": self.u.email, "password": PASSWORD}).expect_json(200)
        self.assertEqual(set(j), {"token", "device_token", "user"})
        self.assertEqual(j["user"]["id"], self.u.id)
        api().with_token(j["token"]).get("/v1/me").expect(200)

    def test_login_canonical_email(self):
        j = api().post("/v1/auth/login", {"email": "  " + self.u.email.upper() + " ", "password": PASSWORD}
                       ).expect_json(200)
        self.assertEqual(j["user"]["id"], self.u.id)

    def test_bad_credentials_same_for_unknown_email(self):
        r1 = api().post("/v1/auth/login", {"email": self.u.email, "password": PASSWORD + "x"}).expect(
            401, "bad_credentials")
        r2 = api().post("/v1/auth/login", {"email": "%s@e2e.example" % uniq("nobody"), "password": PASSWORD}
                        ).expect(401, "bad_credentials")
        self.assertEqual(r1.json, r2.json, "unknown e-mail must get the same answer as a wrong password")
        api().post("/v1/auth/login", {"email": self.u.email, "password": ""}).expect(401, "bad_credentials")

    def test_long_passwords_are_checked_whole(self):
        # 256 characters of any script are allowed (up to 1,024 bytes of
        # UTF-8), and a login checks the whole of them: never a prefix.
        login = lambda email, pw: api().post("/v1/auth/login", {"email": email, "password": pw})
        emoji, accents, plain = "\U0001f600" * 100, "\u00e9" * 200, "a" * 256
        for pw, wrong in ((emoji, (emoji[:64], emoji[:64] + "x", emoji[:99])),
                          (accents, (accents[:128] + "totally different", accents[:128])),
                          (plain, (plain + "zzzz", plain[:255] + "b"))):
            u = signup(self.co, password=pw)
            login(u.email, pw).expect(200, msg="the whole password (%d bytes)" % len(pw.encode()))
            for w in wrong:
                login(u.email, w).expect(401, "bad_credentials", msg="%d characters of another password" % len(w))
        # bcadmin's admins are held to the same rule and log in with it
        s = stack.get()
        email = "%s@e2e.example" % uniq("longpw")
        p = subprocess.run([s.bcadmin, "-c", s.cluster, "create-admin", "--email", email, "--password",
                            "\U0001f600" * 70], capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        login(email, "\U0001f600" * 70).expect(200, msg="an admin with a 280-byte password")
        login(email, "\U0001f600" * 64).expect(401, "bad_credentials")

    def test_login_missing_field(self):
        r = api().post("/v1/auth/login", {"email": self.u.email}).expect(400, "invalid_field")
        self.assertIn("password", r.error_message or "")


class TestTokens(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.co = new_company()
        cls.u = signup(cls.co)
        cls.token = cls.u.client.token

    def me(self, token):
        return api().get("/v1/me", token=token)

    def test_valid_token_accepted_by_every_server(self):
        from client import Client
        for url in [stack.get().api_url] + stack.get().api_urls:
            Client(url, self.token).get("/v1/me").expect(200, msg=url)

    def test_white_space_around_the_token(self):
        """White space around a header's value is not the value's (RFC 9110
        5.5): HAProxy trims it, and so does every server straight."""
        from client import Client
        for url in [stack.get().api_url] + stack.get().api_urls:
            for h in ("Bearer %s " % self.token, "Bearer  %s" % self.token, "Bearer %s\t" % self.token):
                Client(url, None).get("/v1/me", headers={"Authorization": h}).expect(200, msg="%s %r" % (url, h))
            Client(url, None).get("/v1/me", headers={"Authorization": "Bearer %s x" % self.token}).expect(
                401, "unauthorized", msg=url)

    def test_no_or_malformed_authorization(self):
        self.me(None).expect(401, "unauthorized")
        for h in ("Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "bearer", self.token, "Bearer  " + "x" * 5000,
                  "Bearer a.b.c", "Bearer ....", "Bearer " + self.token + "x"):
            api().get("/v1/me", token=None, headers={"Authorization": h}).expect(401, "unauthorized", msg=h[:40])

    def test_forged_token(self):
        self.me("not-a-token").expect(401, "unauthorized")
        self.me(make_token(b"\x00" * 32, self.u.id, self.co["id"], 2, int(time.time()) + 3600)).expect(
            401, "unauthorized", msg="signed with another key")
        self.me(b64url(("1:%s:%s:2:%d" % (self.u.id, self.co["id"], int(time.time()) + 3600)).encode())).expect(
            401, "unauthorized", msg="no signature")

    def test_tampered_payload_and_signature(self):
        parts = self.token.split(".")
        self.assertEqual(len(parts), 2, "documented format payload.signature: %r" % self.token)
        payload, sig = parts
        t1 = tamper(payload, len(payload) // 2) + "." + sig
        t2 = payload + "." + tamper(sig, 0)
        t3 = payload + "." + tamper(sig, len(sig) // 2)
        for t in (t1, t2, t3):
            self.assertNotEqual(t, self.token)
            self.me(t).expect(401, "unauthorized", msg="tampered token %s" % t)
        self.me(self.token).expect(200, msg="the original still works")

    def test_escalated_role_in_payload_refused(self):
        payload = self.token.split(".")[0]
        import base64
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode()
        f = raw.split(":")
        f[-2] = "2"
        forged = b64url(":".join(f).encode()) + "." + self.token.split(".")[1]
        self.me(forged).expect(401, "unauthorized")

    def test_expired_token(self):
        s = stack.get()
        secret = s.secret()
        now = int(time.time())
        # Control: a token made here with the server's key and a future expiry works;
        # otherwise the expired case below would prove nothing.
        good = make_token(secret, self.u.id, self.co["id"], 0, now + 600)
        self.me(good).expect(200, msg="a token built as docs/api.md says, with the stack's key")
        for exp in (now - 1, now - 3600, 0):
            self.me(make_token(secret, self.u.id, self.co["id"], 0, exp)).expect(
                401, "unauthorized", msg="expired %d s ago" % (now - exp))

    def test_token_expiry_is_24h(self):
        import base64
        payload = self.token.split(".")[0]
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode()
        f = raw.split(":")
        self.assertEqual(len(f), 6, raw)
        self.assertEqual(f[0], "2")
        self.assertRegex(f[1], r"^[0-9a-f]{8}$", "the key id")
        self.assertEqual(f[2], self.u.id)
        self.assertEqual(f[3], self.co["id"])
        self.assertAlmostEqual(int(f[5]), time.time() + 86400, delta=120)

    def test_token_names_its_key(self):
        """Tokens say which key signed them (docs/operations.md: rotating the key):
        the server's own key id, a token of the first format (no key id) still
        accepted, an unknown key id refused even with a good signature."""
        s = stack.get()
        secret = s.secret()
        now = int(time.time())
        self.assertEqual(self.token_fields()[1], key_id(secret), "the key id of DIR/api.secret")
        self.me(make_token(secret, self.u.id, self.co["id"], 0, now + 600)).expect(200)
        self.me(make_token(secret, self.u.id, self.co["id"], 0, now + 600, version=1)).expect(
            200, msg="the format before key ids")
        self.me(make_token(secret, self.u.id, self.co["id"], 0, now + 600, kid="0badc0de")).expect(
            401, "unauthorized", msg="a key id the server does not have")

    def token_fields(self):
        import base64
        payload = self.token.split(".")[0]
        return base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode().split(":")

class TestTokenMemo(unittest.TestCase):
    """A connection keeps the last token it verified: the same token again
    costs no HMAC (betcity_token_verifications_total does not move), a
    different one is verified on its own, and the memo never outlives the
    token's expiry."""

    @classmethod
    def setUpClass(cls):
        cls.co = new_company()
        cls.u = signup(cls.co)
        cls.url = stack.get().api_urls[0]

    def verifications(self):
        from client import Client
        text = Client(self.url).get("/metrics").expect(200).body.decode()
        m = re.search(r"^betcity_token_verifications_total\{[^}]*\} (\d+)$", text, re.M)
        self.assertIsNotNone(m, "no betcity_token_verifications_total in /metrics")
        return int(m.group(1))

    def connection(self):
        u = urllib.parse.urlsplit(self.url)
        return http.client.HTTPConnection(u.hostname, u.port, timeout=10)

    def me(self, conn, token):
        conn.request("GET", "/v1/me", headers={"Authorization": "Bearer " + token})
        r = conn.getresponse()
        r.read()
        return r.status

    def test_same_token_verified_once_per_connection(self):
        conn = self.connection()
        try:
            before = self.verifications()
            for i in range(5):
                self.assertEqual(self.me(conn, self.u.client.token), 200, "request %d" % i)
            self.assertEqual(self.verifications() - before, 1, "5 requests with one token on one connection")
            payload, sig = self.u.client.token.split(".")
            self.assertEqual(self.me(conn, payload + "." + tamper(sig, 3)), 401, "a tampered token after a good one")
            self.assertEqual(self.me(conn, self.u.client.token), 200, "the good one again")
        finally:
            conn.close()

    def test_memo_ends_with_the_token(self):
        s = stack.get()
        if not s.dir:
            self.skipTest("needs BC_STACK_DIR (the token key)")
        expiry = int(time.time()) + 2
        short = make_token(s.secret(), self.u.id, self.co["id"], 0, expiry)
        conn = self.connection()
        try:
            self.assertEqual(self.me(conn, short), 200)
            time.sleep(max(0.0, expiry - time.time()) + 0.5)
            self.assertEqual(self.me(conn, short), 401, "the token expired while its connection kept it")
        finally:
            conn.close()


if __name__ == "__main__":
    unittest.main()
