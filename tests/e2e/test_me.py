"""GET/PATCH /v1/me, PUT /v1/me/avatar, GET /v1/users/{id}[/avatar]."""

import http.client
import re
import unittest
import urllib.parse

import stack
from fixtures import (NO_ID, admin, api, jpeg, new_company, new_team, new_users, png, png_of_size, signup,
                      webp)

PROFILE_KEYS = {"id", "display_name", "team_id", "points", "avatar_url"}
ETAG_RE = re.compile(r'^(W/)?"[0-9a-fA-F]+"$')


class TestMe(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.co = new_company()
        cls.other = new_company()
        cls.team = new_team(cls.co)
        cls.other_team = new_team(cls.other)
        cls.a, cls.b = new_users(cls.co, 2)

    def test_get_me(self):
        j = self.a.client.get("/v1/me").expect_json(200)
        self.assertEqual(j["id"], self.a.id)
        self.assertEqual(j["email"], self.a.email)
        self.assertEqual(j["company_id"], self.co["id"])
        self.assertEqual(j["role"], "member")
        self.assertEqual(j["balance"], self.a.initial_balance)

    def test_get_me_needs_token(self):
        api().get("/v1/me").expect(401, "unauthorized")
        api().patch("/v1/me", {"display_name": "x"}).expect(401, "unauthorized")

    def test_patch_display_name_visible_everywhere(self):
        u = signup(self.co)
        # warm the public profile (read through the cache), then change it
        self.b.client.get("/v1/users/%s" % u.id).expect(200)
        j = u.client.patch("/v1/me", {"display_name": "  Renamed Ü  "}).expect_json(200)
        self.assertEqual(j["display_name"], "Renamed Ü")
        self.assertEqual(u.me()["display_name"], "Renamed Ü")
        p = self.b.client.get("/v1/users/%s" % u.id).expect_json(200)
        self.assertEqual(p["display_name"], "Renamed Ü", "public profile after PATCH (cache invalidated?)")

    def test_patch_team_join_and_leave(self):
        u = signup(self.co)
        before = self._members(self.team["id"])
        j = u.client.patch("/v1/me", {"team_id": self.team["id"]}).expect_json(200)
        self.assertEqual(j["team_id"], self.team["id"])
        self.assertEqual(self._members(self.team["id"]), before + 1, "team member count after joining")
        j = u.client.patch("/v1/me", {"team_id": None}).expect_json(200)
        self.assertIsNone(j["team_id"])
        self.assertIsNone(u.me()["team_id"])
        self.assertEqual(self._members(self.team["id"]), before)

    def _members(self, team_id):
        items = admin().get("/v1/companies/%s/teams" % self.co["id"]).expect_json(200)["items"]
        for t in items:
            if t["id"] == team_id:
                return t["members"]
        raise AssertionError("team %s not listed: %s" % (team_id, items))

    def test_patch_team_of_other_company_invalid_team(self):
        self.a.client.patch("/v1/me", {"team_id": self.other_team["id"]}).expect(422, "invalid_team")
        self.a.client.patch("/v1/me", {"team_id": "999999999999999999"}).expect(422, "invalid_team")
        self.assertIsNone(self.a.me()["team_id"])

    def test_patch_invalid(self):
        c = self.a.client
        c.patch("/v1/me", {"display_name": "   "}).expect(422, "invalid_display_name")
        c.patch("/v1/me", {"display_name": "x" * 101}).expect(422, "invalid_display_name")
        r = c.patch("/v1/me", {"display_name": 5}).expect(400, "invalid_field")
        self.assertIn("display_name", r.error_message or "")
        for field, value in (("role", "platform_admin"), ("balance", 10 ** 9), ("email", "x@y.z"),
                             ("company_id", self.other["id"])):
            r = c.patch("/v1/me", {field: value}).expect(400, "unknown_field", msg=field)
            self.assertIn(field, r.error_message or "", r.describe())
        me = self.a.me()
        self.assertEqual(me["role"], "member")
        self.assertEqual(me["balance"], self.a.initial_balance)
        self.assertEqual(me["company_id"], self.co["id"])

    def test_patch_empty_object_no_change(self):
        before = self.b.me()
        self.assertEqual(self.b.client.patch("/v1/me", {}).expect_json(200), before)


class TestUsers(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.co = new_company()
        cls.other = new_company()
        cls.a, cls.b = new_users(cls.co, 2)
        cls.x = signup(cls.other)

    def test_public_profile_same_company(self):
        r = self.b.client.get("/v1/users/%s" % self.a.id)
        j = r.expect_json(200)
        self.assertEqual(set(j), PROFILE_KEYS, r.describe())
        self.assertEqual(j["id"], self.a.id)
        self.assertEqual(j["display_name"], self.a.user["display_name"])
        self.assertIsNone(j["team_id"])
        self.assertEqual(j["points"], 0)
        self.assertNotIn(self.a.email, r.text, "a public profile never shows the e-mail")

    def test_own_profile(self):
        self.a.client.get("/v1/users/%s" % self.a.id).expect(200)

    def test_other_company_404(self):
        self.x.client.get("/v1/users/%s" % self.a.id).expect(404, "not_found")
        self.a.client.get("/v1/users/%s" % self.x.id).expect(404, "not_found")

    def test_platform_admin_reads_any(self):
        admin().get("/v1/users/%s" % self.a.id).expect(200)

    def test_unknown_user_404(self):
        self.a.client.get("/v1/users/" + NO_ID).expect(404, "not_found")
        self.a.client.get("/v1/users/%d" % (int(self.a.id) + 1)).expect(404, "not_found")
        self.a.client.get("/v1/users/9223372036854775807").expect(404, "not_found")

    def test_needs_token(self):
        api().get("/v1/users/%s" % self.a.id).expect(401, "unauthorized")


class TestAvatar(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.co = new_company()
        cls.a, cls.b = new_users(cls.co, 2)

    def put(self, user, data, ctype):
        return user.client.put("/v1/me/avatar", raw=data, content_type=ctype)

    def get_avatar(self, user_id, **kw):
        return api().get("/v1/users/%s/avatar" % user_id, token=None, **kw)

    def test_png_roundtrip_etag_304(self):
        u = signup(self.co)
        self.get_avatar(u.id).expect(404, "not_found", msg="no avatar yet")
        self.assertIsNone(self.b.client.get("/v1/users/%s" % u.id).expect_json(200)["avatar_url"])
        img = png(3, 2)
        r = self.put(u, img, "image/png").expect(204)
        self.assertEqual(r.body, b"", "204 has no body")
        r = self.get_avatar(u.id).expect(200)
        self.assertEqual(r.body, img)
        self.assertEqual(r.header("Content-Type"), "image/png")
        self.assertEqual(r.header("Content-Security-Policy"), "default-src 'none'; sandbox")
        self.put(u, img, "image/png; charset=binary").expect(204)  # parameters are fine
        etag = r.header("ETag")
        self.assertRegex(etag or "", ETAG_RE, r.describe())
        cc = (r.header("Cache-Control") or "").replace(" ", "")
        self.assertEqual(cc, "public,max-age=60", r.header("Cache-Control"))
        r304 = self.get_avatar(u.id, headers={"If-None-Match": etag}).expect(304)
        self.assertEqual(r304.body, b"")
        self.get_avatar(u.id, headers={"If-None-Match": '"0000deadbeef"'}).expect(200)
        prof = self.b.client.get("/v1/users/%s" % u.id).expect_json(200)
        self.assertIsInstance(prof["avatar_url"], str)
        self.assertTrue(prof["avatar_url"].startswith("/v1/users/%s/avatar" % u.id), prof)
        api().get(prof["avatar_url"]).expect(200)
        # a new image: new ETag, the old one no longer matches
        img2 = jpeg()
        self.put(u, img2, "image/jpeg").expect(204)
        r2 = self.get_avatar(u.id).expect(200)
        self.assertEqual(r2.body, img2)
        self.assertEqual(r2.header("Content-Type"), "image/jpeg")
        self.assertNotEqual(r2.header("ETag"), etag)
        self.get_avatar(u.id, headers={"If-None-Match": etag}).expect(200)

    def test_if_none_match_in_several_headers_and_the_304_length(self):
        u = signup(self.co)
        img = png(4, 4)
        self.put(u, img, "image/png").expect(204)
        etag = self.get_avatar(u.id).expect(200).header("ETag")
        path = "/v1/users/%s/avatar" % u.id
        s = stack.get()
        for base in [s.api_url] + s.api_urls:
            url = urllib.parse.urlsplit(base)
            for values, want in (([' "0000deadbeef"', etag], 304), (['"0000deadbeef"', " * "], 304),
                                 (['"0000deadbeef"', '"1111deadbeef", ' + etag], 304),
                                 (['"0000deadbeef"', "*x"], 200), (['"0000deadbeef"'], 200)):
                c = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
                c.putrequest("GET", path)
                for v in values:
                    c.putheader("If-None-Match", v)
                c.endheaders()
                r = c.getresponse()
                body = r.read()
                self.assertEqual(r.status, want, (base, values))
                if want == 304:
                    self.assertEqual(body, b"")
                    if base == s.api_url:  # through HAProxy: no "Content-Length: 0"
                        self.assertIsNone(r.getheader("Content-Length"), (base, values))
                c.close()

    def test_jpeg_and_webp_accepted(self):
        for data, ctype in ((jpeg(), "image/jpeg"), (webp(), "image/webp")):
            self.put(self.a, data, ctype).expect(204, msg=ctype)
            r = self.get_avatar(self.a.id).expect(200)
            self.assertEqual(r.body, data)
            self.assertEqual(r.header("Content-Type"), ctype)

    def test_wrong_content_type_415(self):
        for ctype in ("text/plain", "application/json", "image/gif", "application/octet-stream", None,
                      "image/png, text/html", "image/pngx", "image/png text/html"):
            self.put(self.a, png(), ctype).expect(415, "unsupported_media_type", msg=str(ctype))

    def test_wrong_magic_422(self):
        gif = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"
        for data, ctype, what in ((b"hello, this is not an image", "image/png", "text"),
                                  (gif, "image/png", "a GIF"),
                                  (b"", "image/png", "empty"),
                                  (png(), "image/jpeg", "PNG labelled JPEG"),
                                  (jpeg(), "image/webp", "JPEG labelled WebP"),
                                  (b"RIFF\x04\x00\x00\x00WAVE", "image/webp", "RIFF but not WebP"),
                                  (b"\x89PNG", "image/png", "truncated PNG signature")):
            self.put(self.a, data, ctype).expect(422, "invalid_image", msg=what)

    def test_size_limit(self):
        u = signup(self.co)
        self.put(u, png_of_size(256 * 1024), "image/png").expect(204, msg="exactly 256 KiB")
        self.assertEqual(len(self.get_avatar(u.id).expect(200).body), 256 * 1024)
        self.put(u, png_of_size(256 * 1024 + 1), "image/png").expect(413, "body_too_large")
        self.put(u, png_of_size(1024 * 1024), "image/png").expect(413, "body_too_large")

    def test_needs_token(self):
        api().put("/v1/me/avatar", raw=png(), content_type="image/png").expect(401, "unauthorized")

    def test_avatar_of_unknown_user_404(self):
        self.get_avatar(NO_ID).expect(404, "not_found")


if __name__ == "__main__":
    unittest.main()
