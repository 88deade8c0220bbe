"""Companies, logos, teams, admins, and company isolation."""

import re
import unittest

from fixtures import (NO_ID, admin, api, jpeg, new_company, new_team, new_users, parallel, png, png_of_size,
                      promote, signup, uniq)

COMPANY_KEYS = {"id", "name", "slug", "colors", "logo_url"}
JOIN_RE = re.compile(r"^[A-Z0-9]{10}$")


class TestCompanies(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.co = new_company()
        cls.member, cls.boss = new_users(cls.co, 2)
        promote(cls.co, cls.boss)

    def test_create_defaults(self):
        slug = uniq("co")
        r = admin().post("/v1/companies", {"name": "Acme %s" % slug, "slug": slug})
        j = r.expect_json(201)
        self.assertEqual(set(j), COMPANY_KEYS | {"join_code"}, r.describe())
        self.assertEqual(j["slug"], slug)
        self.assertEqual(j["name"], "Acme %s" % slug)
        self.assertEqual(j["colors"], {"primary": "#1d4ed8", "secondary": "#f59e0b"})
        self.assertIsNone(j["logo_url"])
        self.assertRegex(j["join_code"], JOIN_RE)
        self.assertRegex(j["id"], r"^[0-9]{1,19}$")

    def test_create_with_colors_and_join_codes_differ(self):
        a = new_company(colors={"primary": "#000000", "secondary": "#ffffff"})
        b = new_company()
        self.assertEqual(a["colors"], {"primary": "#000000", "secondary": "#ffffff"})
        self.assertNotEqual(a["join_code"], b["join_code"])

    def test_slug_taken(self):
        slug = uniq("co")
        admin().post("/v1/companies", {"name": "One", "slug": slug}).expect(201)
        admin().post("/v1/companies", {"name": "Two", "slug": slug}).expect(409, "slug_taken")

    def test_create_invalid(self):
        a = admin()
        for slug in ("x", "Has-Upper", "has space", "a" * 65, "under_score", "", "é-slug"):
            a.post("/v1/companies", {"name": "N", "slug": slug}).expect(422, "invalid_slug", msg=repr(slug))
        a.post("/v1/companies", {"name": "", "slug": uniq("co")}).expect(422, "invalid_name")
        a.post("/v1/companies", {"name": "   ", "slug": uniq("co")}).expect(422, "invalid_name")
        a.post("/v1/companies", {"name": "N", "slug": uniq("co"),
                                 "colors": {"primary": "red", "secondary": "#ffffff"}}).expect(422, "invalid_color")
        a.post("/v1/companies", {"name": "N", "slug": uniq("co"), "bogus": 1}).expect(400, "unknown_field")
        a.post("/v1/companies", {"slug": uniq("co")}).expect(400, "invalid_field")

    def test_only_platform_admin_creates(self):
        for u in (self.member, self.boss):
            u.client.post("/v1/companies", {"name": "N", "slug": uniq("co")}).expect(403, "forbidden")
        api().post("/v1/companies", {"name": "N", "slug": uniq("co")}).expect(401, "unauthorized")

    def test_get_join_code_only_for_admins(self):
        path = "/v1/companies/%s" % self.co["id"]
        j = self.member.client.get(path).expect_json(200)
        self.assertEqual(set(j), COMPANY_KEYS, "a member sees no join_code: %s" % j)
        j = self.boss.client.get(path).expect_json(200)
        self.assertEqual(j.get("join_code"), self.co["join_code"], "its company_admin sees the join_code")
        j = admin().get(path).expect_json(200)
        self.assertEqual(j.get("join_code"), self.co["join_code"], "the platform admin sees the join_code")
        api().get(path).expect(401, "unauthorized")
        admin().get("/v1/companies/" + NO_ID).expect(404, "not_found")

    def test_patch(self):
        co = new_company()
        boss = signup(co)
        promote(co, boss)
        path = "/v1/companies/%s" % co["id"]
        j = boss.client.patch(path, {"name": "Renamed", "colors": {"primary": "#112233", "secondary": "#aabbcc"}}
                              ).expect_json(200)
        self.assertEqual(j["name"], "Renamed")
        self.assertEqual(j["colors"]["primary"], "#112233")
        self.assertEqual(j["colors"]["secondary"], "#aabbcc")
        self.assertEqual(boss.client.get(path).expect_json(200)["name"], "Renamed")
        j = admin().patch(path, {"name": "By Platform"}).expect_json(200)
        self.assertEqual(j["name"], "By Platform")
        self.assertEqual(j["colors"]["primary"], "#112233", "a PATCH without colors keeps them")

    def test_patch_invalid_color(self):
        path = "/v1/companies/%s" % self.co["id"]
        for col in ("#12345", "#1234567", "#gggggg", "123456", "blue", "", "#12 456"):
            self.boss.client.patch(path, {"colors": {"primary": col, "secondary": "#ffffff"}}).expect(
                422, "invalid_color", msg=repr(col))
        self.boss.client.patch(path, {"name": ""}).expect(422, "invalid_name")
        self.assertEqual(admin().get(path).expect_json(200)["colors"], self.co["colors"])

    def test_patch_forbidden_for_member(self):
        self.member.client.patch("/v1/companies/%s" % self.co["id"], {"name": "Hijack"}).expect(403, "forbidden")


class TestLogo(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.co = new_company()
        cls.member, cls.boss = new_users(cls.co, 2)
        promote(cls.co, cls.boss)

    def logo(self, **kw):
        return api().get("/v1/companies/%s/logo" % self.co["id"], token=None, **kw)

    def test_logo_put_get_etag(self):
        co = new_company()
        boss = signup(co)
        promote(co, boss)
        path = "/v1/companies/%s/logo" % co["id"]
        api().get(path).expect(404, "not_found", msg="no logo yet")
        img = png(4, 4)
        boss.client.put(path, raw=img, content_type="image/png").expect(204)
        r = api().get(path).expect(200)
        self.assertEqual(r.body, img)
        self.assertEqual(r.header("Content-Type"), "image/png")
        etag = r.header("ETag")
        self.assertRegex(etag or "", r'^(W/)?"[0-9a-fA-F]+"$')
        self.assertEqual((r.header("Cache-Control") or "").replace(" ", ""), "public,max-age=60")
        api().get(path, headers={"If-None-Match": etag}).expect(304)
        j = boss.client.get("/v1/companies/%s" % co["id"]).expect_json(200)
        self.assertIsInstance(j["logo_url"], str)
        api().get(j["logo_url"]).expect(200)
        img2 = jpeg()
        admin().put(path, raw=img2, content_type="image/jpeg").expect(204, msg="platform admin")
        r2 = api().get(path).expect(200)
        self.assertEqual(r2.body, img2)
        self.assertNotEqual(r2.header("ETag"), etag)

    def test_logo_member_forbidden(self):
        self.member.client.put("/v1/companies/%s/logo" % self.co["id"], raw=png(),
                               content_type="image/png").expect(403, "forbidden")

    def test_logo_invalid(self):
        path = "/v1/companies/%s/logo" % self.co["id"]
        c = self.boss.client
        c.put(path, raw=png(), content_type="text/plain").expect(415, "unsupported_media_type")
        c.put(path, raw=b"<svg xmlns='http://www.w3.org/2000/svg'/>", content_type="image/png").expect(
            422, "invalid_image")
        c.put(path, raw=b"", content_type="image/webp").expect(422, "invalid_image")
        c.put(path, raw=png_of_size(256 * 1024 + 1), content_type="image/png").expect(413, "body_too_large")


class TestTeams(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.co = new_company()
        cls.member, cls.boss = new_users(cls.co, 2)
        promote(cls.co, cls.boss)

    def test_create_by_company_admin_and_list(self):
        name = uniq("Team")
        r = self.boss.client.post("/v1/companies/%s/teams" % self.co["id"], {"name": name})
        t = r.expect_json(201)
        self.assertEqual(set(t), {"id", "company_id", "name", "members"}, r.describe())
        self.assertRegex(t["id"], r"^[0-9]{1,19}$")
        self.assertEqual(t["company_id"], self.co["id"])
        self.assertEqual(t["name"], name)
        self.assertEqual(t["members"], 0)
        t2 = new_team(self.co)  # by the platform admin
        u1 = signup(self.co, team_id=t["id"])
        signup(self.co, team_id=t["id"])
        u1.client.get("/v1/me").expect(200)
        j = self.member.client.get("/v1/companies/%s/teams" % self.co["id"]).expect_json(200)
        self.assertIn("items", j)
        self.assertIsNone(j.get("next_cursor"))
        by_id = {x["id"]: x for x in j["items"]}
        self.assertEqual(by_id[t["id"]]["members"], 2, j)
        self.assertEqual(by_id[t2["id"]]["members"], 0, j)
        admin().get("/v1/companies/%s/teams" % self.co["id"]).expect(200)

    def test_member_cannot_create(self):
        self.member.client.post("/v1/companies/%s/teams" % self.co["id"], {"name": "X"}).expect(403, "forbidden")

    def test_invalid_name(self):
        for n in ("", "   "):
            self.boss.client.post("/v1/companies/%s/teams" % self.co["id"], {"name": n}).expect(
                422, "invalid_name", msg=repr(n))

    def test_needs_token(self):
        api().get("/v1/companies/%s/teams" % self.co["id"]).expect(401, "unauthorized")

    def test_name_taken_once_a_company(self):
        """A team name is its company's once: the same name again, in another
        case or without its accents, is 409 team_name_taken and makes no
        team; eight POSTs of one new name at once make exactly one; another
        company may use the name."""
        teams = "/v1/companies/%s/teams" % self.co["id"]
        name = uniq("Équipe")
        t = self.boss.client.post(teams, {"name": name}).expect_json(201)
        for again in (name, name.upper(), name.lower(), "E" + name[1:]):
            r = self.boss.client.post(teams, {"name": again}).expect(409, "team_name_taken", msg=repr(again))
            self.assertIn("name", r.json["error"]["message"])
        admin().post(teams, {"name": name}).expect(409, "team_name_taken")
        other = new_company()
        admin().post("/v1/companies/%s/teams" % other["id"], {"name": name}).expect(201)
        raced = uniq("Race")
        got = parallel(lambda i: self.boss.client.post(teams, {"name": raced}), range(8), workers=8)
        self.assertEqual(sorted(r.status for r in got), [201] + [409] * 7, [r.describe(200) for r in got])
        for r in got:
            if r.status == 409:
                r.expect(409, "team_name_taken")
        listed = []
        cursor = None
        while True:
            page = teams + "?limit=500" + ("&cursor=%s" % cursor if cursor else "")
            j = self.member.client.get(page).expect_json(200)
            listed += j["items"]
            cursor = j.get("next_cursor")
            if not cursor:
                break
        names = [x["name"] for x in listed]
        self.assertEqual(names.count(name), 1, names)
        self.assertEqual(names.count(raced), 1, names)
        self.assertIn(t["id"], [x["id"] for x in listed])

    def test_names_apart_by_a_character_beyond_the_bmp(self):
        """Two names that differ in an emoji or a rare CJK character are two
        teams (utf8mb4_unicode_ci weighed every such character alike: 409)."""
        teams = "/v1/companies/%s/teams" % self.co["id"]
        tag = uniq("Lions")
        for a, b in (("\U0001F981 " + tag, "\U0001F42F " + tag), (tag + " \U00020000", tag + " \U00020001")):
            self.boss.client.post(teams, {"name": a}).expect(201)
            self.boss.client.post(teams, {"name": b}).expect(201, msg=repr(b))
            self.boss.client.post(teams, {"name": b}).expect(409, "team_name_taken")


class TestAdmins(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.co = new_company()
        cls.other = new_company()
        cls.a, cls.b, cls.c = new_users(cls.co, 3)
        cls.x = signup(cls.other)

    def test_platform_admin_promotes_and_it_applies_at_once(self):
        u = signup(self.co)
        old_client = u.client
        r = admin().post("/v1/companies/%s/admins" % self.co["id"], {"user_id": u.id})
        j = r.expect_json(200)
        self.assertEqual(j.get("id"), u.id, r.describe())
        self.assertEqual(j.get("role"), "company_admin", r.describe())
        self.assertEqual(u.me()["role"], "company_admin")
        # docs/api.md: admin rights come from the user's row, so the old token works at once
        old_client.post("/v1/companies/%s/teams" % self.co["id"], {"name": uniq("T")}).expect(201)
        self.assertIn("join_code", old_client.get("/v1/companies/%s" % self.co["id"]).expect_json(200))

    def test_company_admin_promotes(self):
        boss = signup(self.co)
        promote(self.co, boss)
        j = boss.client.post("/v1/companies/%s/admins" % self.co["id"], {"user_id": self.b.id}).expect_json(200)
        self.assertEqual(j["role"], "company_admin")

    def test_member_forbidden(self):
        self.c.client.post("/v1/companies/%s/admins" % self.co["id"], {"user_id": self.a.id}).expect(403, "forbidden")
        self.assertEqual(self.a.me()["role"], "member")

    def test_invalid_user(self):
        a = admin()
        a.post("/v1/companies/%s/admins" % self.co["id"], {"user_id": self.x.id}).expect(422, "invalid_user")
        a.post("/v1/companies/%s/admins" % self.co["id"], {"user_id": "1"}).expect(422, "invalid_user")
        self.assertEqual(self.x.me()["role"], "member")
        a.post("/v1/companies/%s/admins" % self.co["id"], {}).expect(400, "invalid_field")


class TestIsolation(unittest.TestCase):
    """A member (even a company admin) of A gets 404 for everything of B."""

    @classmethod
    def setUpClass(cls):
        cls.A = new_company()
        cls.B = new_company()
        cls.a_member, cls.a_boss = new_users(cls.A, 2)
        promote(cls.A, cls.a_boss)
        cls.b_team = new_team(cls.B)
        cls.b_user = signup(cls.B, team_id=cls.b_team["id"])

    def each_a(self):
        return (self.a_member, self.a_boss)

    def test_company_object_and_join_code(self):
        for u in self.each_a():
            r = u.client.get("/v1/companies/%s" % self.B["id"]).expect(404, "not_found")
            self.assertNotIn(self.B["join_code"], r.text)
            u.client.patch("/v1/companies/%s" % self.B["id"], {"name": "Pwned"}).expect(404, "not_found")
        self.assertNotEqual(admin().get("/v1/companies/%s" % self.B["id"]).expect_json(200)["name"], "Pwned")

    def test_users(self):
        for u in self.each_a():
            u.client.get("/v1/users/%s" % self.b_user.id).expect(404, "not_found")
        self.b_user.client.get("/v1/users/%s" % self.a_member.id).expect(404, "not_found")

    def test_teams(self):
        for u in self.each_a():
            u.client.get("/v1/companies/%s/teams" % self.B["id"]).expect(404, "not_found")
        self.a_boss.client.post("/v1/companies/%s/teams" % self.B["id"], {"name": "Intruders"}).expect(
            404, "not_found")

    def test_admins(self):
        self.a_boss.client.post("/v1/companies/%s/admins" % self.B["id"], {"user_id": self.b_user.id}).expect(
            404, "not_found")
        self.assertEqual(self.b_user.me()["role"], "member")

    def test_standings(self):
        for u in self.each_a():
            u.client.get("/v1/standings/users", query={"company": self.B["id"]}).expect(404, "not_found")
            u.client.get("/v1/standings/teams", query={"company": self.B["id"]}).expect(404, "not_found")

    def test_logo_upload(self):
        self.a_boss.client.put("/v1/companies/%s/logo" % self.B["id"], raw=png(), content_type="image/png").expect(
            (403, 404), ("forbidden", "not_found"))

    def test_join_with_other_code(self):
        api().post("/v1/auth/signup", {"company": self.B["slug"], "join_code": self.A["join_code"],
                                       "email": "%s@e2e.example" % uniq("iso"), "password": "password-123",
                                       "display_name": "Sneaky"}).expect(422, "invalid_join_code")

    def test_team_of_b_cannot_be_joined(self):
        self.a_member.client.patch("/v1/me", {"team_id": self.b_team["id"]}).expect(422, "invalid_team")


if __name__ == "__main__":
    unittest.main()


class TestUnknownCompany(unittest.TestCase):
    """A company that does not exist is 404 to the platform admin too: its
    teams, logo, standings and admins were answered as if it existed (an
    empty list, 204 with nothing stored, 422 invalid_user)."""

    def test_platform_admin_gets_404(self):
        a = admin()
        ghost = "999999999"
        u = signup(new_company())
        a.get("/v1/companies/%s" % ghost).expect(404, "not_found")
        a.get("/v1/companies/%s/teams" % ghost).expect(404, "not_found")
        a.post("/v1/companies/%s/teams" % ghost, {"name": uniq("t")}).expect(404, "not_found")
        a.patch("/v1/companies/%s" % ghost, {"name": "Ghost"}).expect(404, "not_found")
        a.put("/v1/companies/%s/logo" % ghost, raw=png(), content_type="image/png").expect(404, "not_found")
        a.get("/v1/companies/%s/logo" % ghost).expect(404, "not_found")
        a.post("/v1/companies/%s/admins" % ghost, {"user_id": u.id}).expect(404, "not_found")
        for kind in ("users", "teams"):
            a.get("/v1/standings/%s?company=%s" % (kind, ghost)).expect(404, "not_found")
        # a company that exists is as before
        co = new_company()
        self.assertEqual(a.get("/v1/companies/%s/teams" % co["id"]).expect_json(200)["items"], [])
        a.get("/v1/standings/users?company=%s" % co["id"]).expect(200)

    def test_the_platforms_own_company_is_none_of_the_game(self):
        """The platform admin's company (the platform's) was 404 to GET and
        PATCH, but its teams list and standings answered 200 and the admins
        route promoted him there (role platform_admin)."""
        a = admin()
        me = a.get("/v1/me").expect_json(200)
        home = me["company_id"]
        a.get("/v1/companies/%s" % home).expect(404, "not_found")
        a.get("/v1/companies/%s/teams" % home).expect(404, "not_found")
        a.post("/v1/companies/%s/teams" % home, {"name": uniq("t")}).expect(404, "not_found")
        a.post("/v1/companies/%s/admins" % home, {"user_id": me["id"]}).expect(404, "not_found")
        for kind in ("users", "teams"):
            a.get("/v1/standings/%s?company=%s" % (kind, home)).expect(404, "not_found")
        ids = [c["company_id"] for c in a.get("/v1/standings/companies").expect_json(200)["items"]]
        self.assertNotIn(home, ids)
