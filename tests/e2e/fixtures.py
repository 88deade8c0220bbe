"""What the tests build on: the platform admin, fresh companies, users,
teams and matches with unique names (so the suite can run twice on one stack
and next to seeded data), images, tokens and time helpers."""

import base64
import calendar
import concurrent.futures
import hashlib
import hmac
import os
import random
import re
import struct
import threading
import time
import unittest
import zlib

import stack
from client import Client

ID_RE = re.compile(r"^[0-9]{1,19}$")
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
PASSWORD = "correct-horse-9"
# A well-formed id that names nothing: matches, companies and teams count from 1 (AUTO_INCREMENT),
# users and bets carry their time (> 2^23); never use "1" for "unknown".
NO_ID = "999999999999999999"

_lock = threading.Lock()
_admin = None
_rng = random.SystemRandom()


def uniq(prefix="e2e"):
    """A unique lower-case name: prefix, time and randomness."""
    return "%s-%x%s" % (prefix, int(time.time() * 1000) % (1 << 40),
                        "".join(_rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(6)))


def api():
    s = stack.get()
    s.require_api()
    return Client(s.api_url)


def admin():
    """A client logged in as the platform admin (logged in once)."""
    global _admin
    with _lock:
        if _admin is not None:
            return _admin
    s = stack.get()
    s.require_api()
    if not s.admin_email:
        raise unittest.SkipTest("BC_ADMIN_EMAIL is not set")
    r = auth_post("/v1/auth/login", {"email": s.admin_email, "password": s.admin_password})
    j = r.expect_json(200, msg="platform admin login")
    c = Client(s.api_url, j["token"])
    c.user = j["user"]
    with _lock:
        _admin = c
    return c


def parallel(fn, items, workers=16):
    """[fn(x) for x in items] on a thread pool, in order; the first exception is raised."""
    items = list(items)
    if not items:
        return []
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(workers, len(items))) as ex:
        return list(ex.map(fn, items))


# ---------------------------------------------------------------- companies, users

def new_company(name=None, colors=None):
    """A fresh company (dict with join_code) made by the platform admin."""
    slug = uniq("co")
    body = {"name": name or ("E2E " + slug), "slug": slug}
    if colors is not None:
        body["colors"] = colors
    return admin().post("/v1/companies", body).expect_json(201, msg="create company")


class User:
    """A signed-up user: .client (with token), .user (dict), .email, .password."""

    def __init__(self, client, user, email, password, company):
        self.client = client
        self.user = user
        self.email = email
        self.password = password
        self.company = company
        self.initial_balance = user.get("balance")

    @property
    def id(self):
        return self.user["id"]

    def me(self):
        return self.client.get("/v1/me").expect_json(200)

    def balance(self):
        return self.me()["balance"]

    def relogin(self):
        j = auth_post("/v1/auth/login", {"email": self.email, "password": self.password}).expect_json(200)
        self.client = self.client.with_token(j["token"])
        self.user = j["user"]
        return self


def auth_post(path, body, patience=90.0):
    """POST to /v1/auth/*, as a well-behaved client does: a 503 or 429 with
    Retry-After (the server's hash queue or limits, busy with the suite's
    parallel signups from one address) is waited out and sent again, for up
    to `patience` seconds. A count of tries is not enough: on a loaded
    machine a hash takes several times its idle cost, the queue then takes
    one or two jobs at a time, and one of 16 parallel signups from one
    address was refused 20 times in a row (CI, lane 2, test_crash)."""
    deadline = time.time() + patience
    while True:
        r = api().post(path, body)
        wait = r.header("Retry-After")
        if r.status not in (429, 503) or wait is None or time.time() >= deadline:
            return r
        time.sleep(min(float(wait), 2.0) * (0.5 + random.random() / 2))


def signup(company, display_name=None, team_id=None, email=None, password=PASSWORD):
    email = email or ("%s@e2e.example" % uniq("u"))
    body = {"company": company["slug"], "join_code": company["join_code"], "email": email,
            "password": password, "display_name": display_name or ("User " + email.split("@")[0])}
    if team_id is not None:
        body["team_id"] = team_id
    j = auth_post("/v1/auth/signup", body).expect_json(201, msg="signup")
    return User(api().with_token(j["token"]), j["user"], email, password, company)


def new_users(company, n, team_id=None, workers=16):
    return parallel(lambda i: signup(company, team_id=team_id), range(n), workers)


def new_team(company, name=None):
    return admin().post("/v1/companies/%s/teams" % company["id"],
                        {"name": name or uniq("team")}).expect_json(201, msg="create team")


def promote(company, user):
    """Makes user a company_admin of company (by the platform admin) and logs him in again."""
    admin().post("/v1/companies/%s/admins" % company["id"], {"user_id": user.id}).expect(200)
    return user.relogin()


# ---------------------------------------------------------------- matches

def rfc3339(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(t)))


def parse_time(s):
    return calendar.timegm(time.strptime(s, "%Y-%m-%dT%H:%M:%SZ"))


def new_match(kickoff_in=3600.0, odds=(2.50, 3.20, 2.80), kickoff=None, home=None, away=None, stage="E2E"):
    """A fresh match whose kickoff is kickoff_in seconds from now (rounded up to a whole second)."""
    tag = uniq("m")
    if kickoff is None:
        kickoff = rfc3339(int(time.time() + kickoff_in) + 1)
    body = {"home": home or ("Home " + tag), "away": away or ("Away " + tag), "stage": stage,
            "kickoff": kickoff, "odds": {"home": odds[0], "draw": odds[1], "away": odds[2]}}
    return admin().post("/v1/matches", body).expect_json(201, msg="create match")


def wait_past_kickoff(*matches, margin=0.3):
    t = max(parse_time(m["kickoff"]) for m in matches) + margin
    d = t - time.time()
    if d > 0:
        time.sleep(d)


def settle(match, body, via=None, timeout=60):
    """Posts a result (202) and waits until its settlement is done; returns it."""
    c = via or admin()
    c.post("/v1/matches/%s/result" % match["id"], body).expect(202, msg="post result")
    return wait_settled(match, via=c, timeout=timeout)


def wait_settled(match, via=None, timeout=60):
    c = via or admin()
    deadline = time.time() + timeout
    while True:
        r = c.get("/v1/matches/%s/settlement" % match["id"])
        if r.status == 200 and r.json and r.json.get("state") == "done":
            return r.json
        if time.time() > deadline:
            raise AssertionError("settlement of match %s not done within %d s: %s"
                                 % (match["id"], timeout, r.describe()))
        time.sleep(0.2)


def hundredths(x):
    """Odds as integer hundredths (exact for numbers with two decimals)."""
    return int(round(float(x) * 100))


def payout(stake, odds_h):
    return stake * odds_h // 100


def place_bet(user, match, pick, stake, key=None):
    h = {"Idempotency-Key": key} if key else None
    return user.client.post("/v1/bets", {"match_id": match["id"], "pick": pick, "stake": stake},
                            headers=h).expect_json(201, msg="place bet")


# ---------------------------------------------------------------- images

def png(w=1, h=1, pad=0):
    """A real PNG image (optionally followed by pad bytes)."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    raw = b"".join(b"\x00" + bytes([_rng.randrange(256), 0, 0] * w) for _ in range(h))
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return data + os.urandom(pad)


def png_of_size(n):
    p = png()
    return p + os.urandom(n - len(p))


def jpeg():
    """A small JPEG: SOI, JFIF APP0, a comment, EOI (only the magic bytes matter)."""
    app0 = b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    com = os.urandom(8).hex().encode()
    return (b"\xff\xd8\xff\xe0" + struct.pack(">H", len(app0) + 2) + app0
            + b"\xff\xfe" + struct.pack(">H", len(com) + 2) + com + b"\xff\xd9")


def webp():
    """A RIFF/WEBP container with a VP8L chunk header (only the magic bytes matter)."""
    vp8l = b"\x2f\x00\x00\x00\x00" + os.urandom(7)
    body = b"WEBP" + b"VP8L" + struct.pack("<I", len(vp8l)) + vp8l
    return b"RIFF" + struct.pack("<I", len(body)) + body


# ---------------------------------------------------------------- tokens

def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode("ascii")


def key_id(secret):
    """The id a token names its key by (docs/api.md "Tokens")."""
    return hashlib.blake2b(secret, digest_size=16, key=b"betcity-kid").hexdigest()[:8]


def make_token(secret, user_id, company_id, role, expiry, version=2, kid=None):
    """A token in the format of docs/api.md "Tokens":
    base64url(payload) "." base64url(HMAC-SHA256(secret, payload)); version 1
    is the format before key ids (still accepted)."""
    if version == 1:
        payload = "1:%s:%s:%d:%d" % (user_id, company_id, role, expiry)
    else:
        payload = "2:%s:%s:%s:%d:%d" % (kid or key_id(secret), user_id, company_id, role, expiry)
    payload = payload.encode("ascii")
    return b64url(payload) + "." + b64url(hmac.new(secret, payload, hashlib.sha256).digest())


def tamper(s, i):
    """s with the base64url character at index i replaced by another one."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    c = s[i]
    n = alphabet[(alphabet.index(c) + 17) % 64] if c in alphabet else "A"
    return s[:i] + n + s[i + 1:]
