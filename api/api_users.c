/*
 * api_users.c: signup, login, the caller's profile and avatar, and public
 * profiles.
 *
 * A user lives in the shard of his canonical e-mail, and his id carries
 * that shard: lookups by id or by e-mail reach exactly one shard.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sodium.h>

#include "api/api_int.h"

#define USER_COLS                                                                      \
    "u.id, u.email, u.display_name, u.company_id, u.team_id, u.role, u.balance, "      \
    "u.points, EXISTS(SELECT 1 FROM %S.avatars a WHERE a.user_id = u.id)"

static void profile_changed(struct api_req *req, uint64_t id);
static void signup_insert(struct api_req *req);
static void login_answer(struct api_req *req);

static void user_from_row(struct sql_rows *rows, uint32_t r, struct api_user *u)
{
    memset(u, 0, sizeof(*u));
    u->id = strtoull(sql_cell(rows, r, 0), NULL, 10);
    snprintf(u->email, sizeof(u->email), "%s", sql_cell(rows, r, 1));
    snprintf(u->display_name, sizeof(u->display_name), "%s", sql_cell(rows, r, 2));
    u->company_id = strtoull(sql_cell(rows, r, 3), NULL, 10);
    u->team_id = sql_cell(rows, r, 4) ? strtoull(sql_cell(rows, r, 4), NULL, 10) : 0;
    snprintf(u->role, sizeof(u->role), "%s", sql_cell(rows, r, 5));
    u->balance = strtoll(sql_cell(rows, r, 6), NULL, 10);
    u->points = strtoll(sql_cell(rows, r, 7), NULL, 10);
    u->has_avatar = strcmp(sql_cell(rows, r, 8), "1") == 0;
}

int api_user_load(struct router *router, uint64_t id, struct api_user *user)
{
    struct sql_rows rows = {0};
    int rc;

    rc = router_exec(router, router_shard_of_id(id), &rows,
                     "SELECT " USER_COLS " FROM %S.users u WHERE u.id = %u", id);
    if (rc < 0)
        return rc;
    if (rows.nrow == 0)
        rc = BC_ENOTFOUND;
    else
        user_from_row(&rows, 0, user);
    sql_rows_free(&rows);
    return rc;
}

json_t *api_user_json(const struct api_user *u)
{
    return json_pack("{s:o,s:s,s:s,s:o,s:o,s:s,s:I,s:I}", "id", api_id_json(u->id),
                     "email", u->email, "display_name", u->display_name, "company_id",
                     api_id_json(u->company_id), "team_id",
                     u->team_id ? api_id_json(u->team_id) : json_null(), "role",
                     u->role, "balance", (json_int_t)u->balance, "points",
                     (json_int_t)u->points);
}

static json_t *profile_json(const struct api_user *u)
{
    char url[64];

    snprintf(url, sizeof(url), "/v1/users/%" PRIu64 "/avatar", u->id);
    return json_pack("{s:o,s:s,s:o,s:I,s:o}", "id", api_id_json(u->id), "display_name",
                     u->display_name, "team_id",
                     u->team_id ? api_id_json(u->team_id) : json_null(), "points",
                     (json_int_t)u->points, "avatar_url",
                     u->has_avatar ? json_string(url) : json_null());
}

/* Canonical, plausible e-mail: one '@' with text on both sides, no spaces. */
static int email_canon(const char *in, char *out, size_t size)
{
    const char *at;
    int n = shardmap_canonical_email(in, out, size);

    if (n <= 0 || n > 254)
        return -EINVAL;
    at = strchr(out, '@');
    if (at == NULL || at == out || at[1] == '\0' || strchr(at + 1, '@') != NULL)
        return -EINVAL;
    /* No white space, invisible or control character: no look-alike accounts. */
    if (api_text_unseen(out))
        return -EINVAL;
    return 0;
}

/*
 * A password of 8 to 256 characters (docs/api.md), whole in a hash job's
 * buffer: 256 characters of valid UTF-8 take 1,024 bytes at most.
 */
static int password_fits(const char *password)
{
    size_t len = strlen(password), chars = api_text_chars(password, len);

    return chars >= API_PASSWORD_MIN && chars <= API_PASSWORD_MAX &&
           len < sizeof(((struct api_pwhash_job *)0)->password);
}

/*
 * Trims a display name (api_text_trim()) into out: NULL, or the rule it
 * breaks (api_text_problem()), out untouched.
 */
static const char *name_clean(const char *in, char *out, size_t size, size_t max)
{
    size_t start, len = api_text_trim(in, &start);
    char name[sizeof(((struct api_user *)0)->display_name)];
    const char *problem;

    /* Both hold 100 characters of 4 bytes: a name that does not fit is longer. */
    if (len >= size || len >= sizeof(name))
        return "is too long";
    memcpy(name, in + start, len);
    name[len] = '\0';
    if ((problem = api_text_problem(name, max)) != NULL)
        return problem;
    memcpy(out, name, len + 1);
    return NULL;
}

/*
 * 0 when the team belongs to the company; after replying, -EINVAL when it
 * does not (422) or the router's status.
 */
static int team_check(struct api_req *req, uint64_t team_id, uint64_t company_id)
{
    struct sql_rows rows = {0};
    int rc, ok;

    rc = router_exec(req->router, ROUTER_GLOBAL, &rows,
                     "SELECT company_id FROM %S.teams WHERE id = %u", team_id);
    if (rc < 0) {
        api_db_error(req, rc);
        return rc;
    }
    ok = rows.nrow == 1 && strtoull(sql_cell(&rows, 0, 0), NULL, 10) == company_id;
    sql_rows_free(&rows);
    if (!ok) {
        api_error(req, 422, "invalid_team",
                  "team %" PRIu64 " is not a team of your company", team_id);
        return -EINVAL;
    }
    return 0;
}

static void auth_reply(struct api_req *req, int status, const struct api_user *u)
{
    char token[256], device[256];

    if (api_token_make(req->srv, u->id, u->company_id, api_role_parse(u->role), token,
                       sizeof(token)) < 0 ||
        api_device_make(req->srv, u->id, device, sizeof(device)) < 0) {
        api_error(req, 500, "internal", "cannot make a token");
        return;
    }
    /* A token is a credential: no cache on the way may keep it. */
    api_add_header(req, "Cache-Control", "no-store");
    /*
     * The device token as a cookie too, for browsers: sent back to the login
     * only, never readable by scripts, never over plain HTTP.
     */
    api_add_header(req, "Set-Cookie",
                   API_DEVICE_COOKIE "=%s; Max-Age=%" PRIu64 "; Path=/v1/auth/login; "
                                     "HttpOnly; Secure; SameSite=Strict",
                   device,
                   (uint64_t)api_server_conf(req->srv)->limits.device_ttl_days * 86400);
    api_reply_json(req, status,
                   json_pack("{s:s,s:s,s:o}", "token", token, "device_token", device,
                             "user", api_user_json(u)));
}

/*
 * Inserts a user in the shard of its e-mail and fills u->id; a ranked user
 * (not a platform admin) joins his company's and team's standings
 * aggregates in the same transaction.
 */
static int user_insert(struct router *router, struct api_user *u, const char *hash)
{
    uint32_t shard = router_shard_of_key(router, u->email, strlen(u->email));
    struct router_txn *txn;
    int64_t deadline = 0;
    uint64_t seen;
    int rc;

    do {
        seen = router_map_version(router);
        if ((rc = router_txn_begin(router, shard, &txn)) < 0)
            continue;
        rc = router_next_id(router, txn, shard, &u->id);
        if (rc == 0)
            rc = router_txn_exec(
                txn, NULL,
                "INSERT INTO %S.users (id, email, password_hash, display_name, "
                "company_id, team_id, role, balance, initial_balance) VALUES (%u, "
                "%s, %s, %s, %u, NULLIF(%u, 0), %s, %d, %d)",
                u->id, u->email, hash, u->display_name, u->company_id, u->team_id,
                u->role, u->balance, u->balance);
        if (rc == 0 && strcmp(u->role, "platform_admin") != 0)
            rc = api_standings_member(txn, u->company_id, 1, 0, u->team_id, 0);
        if (rc == 0) {
            rc = router_txn_commit(txn);
        } else {
            router_txn_rollback(txn);
        }
    } while (rc == BC_EMOVED && router_await_move(router, seen, &deadline) == 0);
    return rc;
}

void api_h_signup(struct api_req *req)
{
    static const struct api_field spec[] = {{"company", API_T_STR, 1, 0},
                                            {"join_code", API_T_STR, 1, 0},
                                            {"email", API_T_STR, 1, 0},
                                            {"password", API_T_STR, 1, 0},
                                            {"display_name", API_T_STR, 1, 0},
                                            {"team_id", API_T_ID, 0, 1},
                                            {NULL, 0, 0, 0}};
    struct sql_rows rows = {0};
    struct api_user u = {0};
    struct api_pwhash_job *job;
    const char *code, *password, *problem;
    json_t *body = req->json;
    int rc, ok;

    if (api_body_check(req, spec) < 0)
        return;
    if (email_canon(api_str(body, "email", ""), u.email, sizeof(u.email)) < 0) {
        api_error(req, 422, "invalid_email", "email must look like name@domain");
        goto out;
    }
    if (api_rate_check(req, "signup_addr", req->client) < 0 ||
        api_rate_check(req, "account", u.email) < 0)
        goto out;
    password = api_str(body, "password", "");
    if (!password_fits(password)) {
        api_error(req, 422, "weak_password", "password must have 8 to 256 characters");
        goto out;
    }
    if ((problem = name_clean(api_str(body, "display_name", ""), u.display_name,
                              sizeof(u.display_name), 100)) != NULL) {
        api_text_refuse(req, "invalid_display_name", "display_name", problem, 100);
        goto out;
    }
    /* The slug as it is (the column's collation would take 'ALPHA', 'álpha '). */
    rc = router_exec(req->router, ROUTER_GLOBAL, &rows,
                     "SELECT id, join_code FROM %S.companies WHERE slug = %s AND "
                     "BINARY slug = %s AND platform = 0",
                     api_str(body, "company", ""), api_str(body, "company", ""));
    if (rc < 0) {
        api_db_error(req, rc);
        goto out;
    }
    code = api_str(body, "join_code", "");
    ok = rows.nrow == 1 && strlen(code) == strlen(sql_cell(&rows, 0, 1)) &&
         sodium_memcmp(code, sql_cell(&rows, 0, 1), strlen(code)) == 0;
    if (!ok) {
        api_error(req, 422, "invalid_join_code", "unknown company or wrong join code");
        goto out;
    }
    u.company_id = strtoull(sql_cell(&rows, 0, 0), NULL, 10);
    u.team_id = api_id(body, "team_id", 0);
    if (u.team_id != 0 && team_check(req, u.team_id, u.company_id) < 0)
        goto out;
    snprintf(u.role, sizeof(u.role), "member");
    u.balance = api_server_conf(req->srv)->initial_balance;
    /* The hash runs on the hash queue; signup_insert() goes on after it. */
    if ((job = api_req_hash(req, signup_insert, 0)) == NULL)
        goto out;
    job->op = API_PWHASH_HASH;
    snprintf(job->password, sizeof(job->password), "%s", password);
    job->user = u;
    job->have_user = 1;
out:
    sql_rows_free(&rows);
}

/* Signup's second half, once the password is hashed (on an HTTP worker). */
static void signup_insert(struct api_req *req)
{
    struct api_user *u = &req->job->user;
    int rc;

    if (req->job->rc < 0) {
        api_add_header(req, "Retry-After", "1");
        api_error(req, 503, "unavailable", "cannot hash the password now");
        return;
    }
    rc = user_insert(req->router, u, req->job->hash);
    if (rc == BC_EDUPKEY) {
        api_error(req, 409, "email_taken", "an account with this email exists");
    } else if (rc < 0) {
        api_db_error(req, rc);
    } else {
        if (u->team_id != 0)
            api_teams_changed(req, u->company_id); /* its member count */
        api_rate_refund(req); /* only failures count against an e-mail */
        auth_reply(req, 201, u);
    }
}

/*
 * Login: the user's row is read on the worker, the password is verified on
 * the hash queue, login_answer() answers. An unknown or malformed e-mail
 * costs the same verification (against the queue's dummy hash) and gets the
 * same answer as a wrong password: neither the time nor the answer tells
 * whether an account exists.
 *
 * A login that carries a device token of the account (given at its last
 * login or sign-up on that device, in the body's device_token or else in
 * the cookie API_DEVICE_COOKIE) comes from a known device: it takes the
 * device bucket of the account instead of the account's failures, so that
 * others' wrong passwords never lock its owner out, and a known place on
 * the hash queue, so that a flood of logins never keeps him waiting
 * (OWASP's device cookies). A device token that is not the account's, or
 * is malformed or expired, is no error: the login is a new device's.
 */
void api_h_login(struct api_req *req)
{
    static const struct api_field spec[] = {{"email", API_T_STR, 1, 0},
                                            {"password", API_T_STR, 1, 0},
                                            {"device_token", API_T_STR, 0, 1},
                                            {NULL, 0, 0, 0}};
    struct sql_rows rows = {0};
    struct api_pwhash_job *job;
    struct api_user u = {0};
    char email[256], id[24];
    const char *device, *password;
    json_t *body = req->json;
    uint64_t device_user = 0;
    uint32_t shard;
    int rc, valid, known, fits;

    if (api_body_check(req, spec) < 0)
        return;
    if (api_rate_check(req, "login_addr", req->client) < 0)
        return;
    valid = email_canon(api_str(body, "email", ""), email, sizeof(email)) == 0;
    if (valid) {
        shard = router_shard_of_key(req->router, email, strlen(email));
        rc = router_exec(req->router, shard, &rows,
                         "SELECT " USER_COLS
                         ", u.password_hash FROM %S.users u WHERE u.email = %s",
                         email);
        if (rc < 0) {
            api_db_error(req, rc);
            goto out;
        }
        if (rows.nrow == 1)
            user_from_row(&rows, 0, &u);
    }
    device = api_str(body, "device_token", NULL);
    if (device == NULL) /* else a browser's cookie (auth_reply()) */
        device =
            MHD_lookup_connection_value(req->conn, MHD_COOKIE_KIND, API_DEVICE_COOKIE);
    known = rows.nrow == 1 && device != NULL &&
            api_device_check(req->srv, device, &device_user) == 0 &&
            device_user == u.id;
    snprintf(id, sizeof(id), "%" PRIu64, u.id);
    if (valid &&
        api_rate_check(req, known ? "device" : "account", known ? id : email) < 0)
        goto out;
    if ((job = api_req_hash(req, login_answer, known)) == NULL)
        goto out;
    job->op = API_PWHASH_VERIFY;
    /*
     * A password no signup takes matches no account: it is checked against
     * the dummy hash (the same time as any other), never cut to fit.
     */
    password = api_str(body, "password", "");
    fits = password_fits(password);
    snprintf(job->password, sizeof(job->password), "%s", fits ? password : "");
    if (rows.nrow == 1 && fits) {
        snprintf(job->hash, sizeof(job->hash), "%s", sql_cell(&rows, 0, 9));
        job->user = u;
        job->have_user = 1;
    } else {
        snprintf(job->hash, sizeof(job->hash), "%s",
                 api_pwhash_dummy(api_server_pwhash(req->srv)));
    }
out:
    sql_rows_free(&rows);
}

/* Login's second half, once the password is verified (on an HTTP worker). */
static void login_answer(struct api_req *req)
{
    struct api_pwhash_job *job = req->job;

    if (!job->have_user || job->rc < 0) {
        /* Its address's next hashes wait behind others' while it fails. */
        api_pwhash_failed(api_server_pwhash(req->srv), job->addr);
        api_error(req, 401, "bad_credentials", "wrong email or password");
        return;
    }
    /* Only failures count against the account. */
    api_rate_refund(req);
    auth_reply(req, 200, &job->user);
}

static void me_answer(struct api_req *req, int rc, const struct api_user *u)
{
    if (rc == BC_ENOTFOUND)
        api_error(req, 401, "unauthorized", "the token's user no longer exists");
    else if (rc < 0)
        api_db_error(req, rc);
    else
        api_reply_json(req, 200, api_user_json(u));
}

/* GET /v1/me's read ended on the event loop (api_loop_query()). */
static int me_read(struct api_req *req, int rc, struct sql_rows *rows)
{
    struct api_user u;

    if (rc == 0 && rows->nrow == 0)
        rc = BC_ENOTFOUND;
    else if (rc == 0)
        user_from_row(rows, 0, &u);
    me_answer(req, rc, &u);
    return 1;
}

/*
 * A route that reads on the loop (API_READS_LOOP): called there first, it
 * starts its read and returns; when the loop cannot, it runs on a worker.
 */
void api_h_me(struct api_req *req)
{
    struct api_user u;
    uint64_t id = req->auth.user_id;
    int rc;

    if (req->where == API_ON_LOOP && api_loop_self() != NULL) {
        (void)api_loop_read(req, me_read, router_shard_of_id(id),
                            "SELECT " USER_COLS " FROM %S.users u WHERE u.id = %u", id);
        return;
    }
    rc = api_user_load(req->router, id, &u);
    me_answer(req, rc, &u);
}

/*
 * Sets the user's display name (set_name) and team (set_team; 0 none). A
 * change of team moves the user's members count and points from one team's
 * standings aggregate to the other's, in the same transaction, his row
 * locked first. 0, BC_ENOTFOUND (no such user) or a router status.
 */
static int profile_update(struct router *router, uint64_t id, int set_name,
                          const char *name, int set_team, uint64_t team)
{
    struct sql_rows rows = {0};
    struct router_txn *txn;
    int64_t deadline = 0;
    uint64_t seen, company, old;
    int rc;

    do {
        seen = router_map_version(router);
        if ((rc = router_txn_begin(router, router_shard_of_id(id), &txn)) < 0)
            continue;
        rc = router_txn_exec(txn, &rows,
                             "SELECT company_id, COALESCE(team_id, 0), points, role "
                             "FROM %S.users WHERE id = %u FOR UPDATE",
                             id);
        if (rc == 0 && rows.nrow == 0)
            rc = BC_ENOTFOUND;
        if (rc == 0)
            rc = router_txn_exec(
                txn, NULL,
                "UPDATE %S.users SET display_name = IF(%d, %s, display_name), "
                "team_id = IF(%d, NULLIF(%u, 0), team_id) WHERE id = %u",
                (int64_t)set_name, name, (int64_t)set_team, team, id);
        if (rc == 0 && set_team &&
            strcmp(sql_cell(&rows, 0, 3), "platform_admin") != 0) {
            company = strtoull(sql_cell(&rows, 0, 0), NULL, 10);
            old = strtoull(sql_cell(&rows, 0, 1), NULL, 10);
            rc = api_standings_member(txn, company, 0, old, team,
                                      strtoll(sql_cell(&rows, 0, 2), NULL, 10));
        }
        sql_rows_free(&rows);
        if (rc == 0) {
            rc = router_txn_commit(txn);
        } else {
            router_txn_rollback(txn);
        }
    } while (rc == BC_EMOVED && router_await_move(router, seen, &deadline) == 0);
    return rc;
}

void api_h_me_patch(struct api_req *req)
{
    static const struct api_field spec[] = {{"display_name", API_T_STR, 0, 0},
                                            {"team_id", API_T_ID, 0, 1},
                                            {NULL, 0, 0, 0}};
    char name[sizeof(((struct api_user *)0)->display_name)] = "";
    const char *problem;
    json_t *body = req->json;
    uint64_t team = 0;
    int rc;

    if (api_body_check(req, spec) < 0)
        return;
    if (api_has(body, "display_name") &&
        (problem = name_clean(api_str(body, "display_name", ""), name, sizeof(name),
                              100)) != NULL) {
        api_text_refuse(req, "invalid_display_name", "display_name", problem, 100);
        return;
    }
    team = api_id(body, "team_id", 0);
    if (team != 0 && team_check(req, team, req->auth.company_id) < 0)
        return;
    rc = profile_update(req->router, req->auth.user_id, api_has(body, "display_name"),
                        name, api_has(body, "team_id"), team);
    if (rc < 0 && rc != BC_ENOTFOUND) {
        api_db_error(req, rc);
        return;
    }
    profile_changed(req, req->auth.user_id);
    if (api_has(body, "team_id"))
        api_teams_changed(req, req->auth.company_id); /* member counts */
    api_h_me(req);                                    /* 401 when the user is gone */
}

void api_image_etag(const void *data, size_t len, char out[17])
{
    unsigned char h[8];

    crypto_generichash(h, sizeof(h), data, len, NULL, 0);
    sodium_bin2hex(out, 17, h, sizeof(h));
}

/* If-None-Match against an ETag: any number of headers, each a list of tags or "*". */
struct inm {
    const char *etag;
    int match;
};

static enum MHD_Result inm_check(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *value)
{
    struct inm *m = cls;
    size_t len;
    (void)kind;

    if (strcasecmp(key, "If-None-Match") != 0 || value == NULL)
        return MHD_YES;
    value += strspn(value, " \t");
    len = strlen(value);
    while (len > 0 && (value[len - 1] == ' ' || value[len - 1] == '\t'))
        len--;
    m->match = strstr(value, m->etag) != NULL || (len == 1 && value[0] == '*');
    return m->match ? MHD_NO : MHD_YES; /* a match ends the walk */
}

void api_image_reply(struct api_req *req, struct sql_rows *rows)
{
    char etag[24];
    struct inm inm = {etag, 0};

    if (rows->nrow == 0) {
        api_error(req, 404, "not_found", "no image");
        return;
    }
    snprintf(etag, sizeof(etag), "\"%s\"", sql_cell(rows, 0, 1));
    api_add_header(req, "ETag", "%s", etag);
    api_add_header(req, "Cache-Control", "public, max-age=60");
    /* An upload is only checked for its image magic: never run as a page. */
    api_add_header(req, "Content-Security-Policy", "default-src 'none'; sandbox");
    MHD_get_connection_values(req->conn, MHD_HEADER_KIND, inm_check, &inm);
    if (inm.match) {
        api_reply_raw(req, 304, NULL, NULL, 0);
        return;
    }
    api_reply_raw(req, 200,
                  strcmp(sql_cell(rows, 0, 0), "image/png") == 0    ? "image/png"
                  : strcmp(sql_cell(rows, 0, 0), "image/jpeg") == 0 ? "image/jpeg"
                                                                    : "image/webp",
                  sql_cell(rows, 0, 2), rows->len[2]);
}

void api_h_me_avatar_put(struct api_req *req)
{
    char etag[17];
    int rc;

    api_image_etag(req->body, req->body_len, etag);
    rc = router_exec(
        req->router, router_shard_of_id(req->auth.user_id), NULL,
        "INSERT INTO %S.avatars (user_id, content_type, etag, data) VALUES "
        "(%u, %s, %s, %b) ON DUPLICATE KEY UPDATE content_type = VALUES(content_type), "
        "etag = VALUES(etag), data = VALUES(data)",
        req->auth.user_id, req->image_type, etag, req->body, req->body_len);
    if (rc < 0) {
        api_db_error(req, rc);
        return;
    }
    profile_changed(req, req->auth.user_id);
    api_reply_raw(req, 204, NULL, NULL, 0);
}

void api_h_user_avatar_get(struct api_req *req)
{
    struct sql_rows rows = {0};
    int rc = router_exec(
        req->router, router_shard_of_id(req->param[0]), &rows,
        "SELECT content_type, etag, data FROM %S.avatars WHERE user_id = %u",
        req->param[0]);

    if (rc < 0)
        api_db_error(req, rc);
    else
        api_image_reply(req, &rows);
    sql_rows_free(&rows);
}

static void profile_key(struct api_req *req, uint64_t id, char *key, size_t size)
{
    /* Points change only at settlements, which bump the "standings" generation. */
    uint64_t gen = req->cache ? cache_generation(req->cache, "standings", 0) : 0;

    snprintf(key, size, "bc:v1:profile:%" PRIu64 ":g%" PRIu64, id, gen);
}

/* After a committed change of a user's public profile. */
static void profile_changed(struct api_req *req, uint64_t id)
{
    char key[96];

    if (req->cache == NULL)
        return;
    profile_key(req, id, key, sizeof(key));
    cache_delete(req->cache, key);
}

/* {"company_id": ..., "profile": {...}}: the profile and what access needs. */
static int profile_fill(struct api_req *req, uint64_t id, char **text)
{
    struct api_user u;
    json_t *v;
    int rc = api_user_load(req->router, id, &u);

    if (rc < 0)
        return rc;
    v = json_pack("{s:o,s:o}", "company_id", api_id_json(u.company_id), "profile",
                  profile_json(&u));
    *text = v ? json_dumps(v, JSON_COMPACT) : NULL;
    json_decref(v);
    return *text ? 0 : -ENOMEM;
}

void api_h_user_get(struct api_req *req)
{
    char key[96], *text = NULL;
    json_t *v = NULL;
    uint64_t company;
    int rc;

    profile_key(req, req->param[0], key, sizeof(key));
    rc = api_cached_text(req, key, 0, 300, profile_fill, req->param[0], &text);
    if (rc == BC_ENOTFOUND || rc == BC_ESHARD) {
        api_error(req, 404, "not_found", "no such user");
        return;
    }
    if (rc < 0) {
        api_db_error(req, rc);
        return;
    }
    v = json_loads(text, 0, NULL);
    free(text);
    if (v == NULL) {
        api_error(req, 503, "unavailable", "out of memory");
        return;
    }
    company = api_id(v, "company_id", 0);
    /* Another company's user is not shown to exist (but to the platform admin). */
    if (company != req->auth.company_id) {
        int role;
        if (api_caller_role(req, &role) < 0)
            goto out;
        if (role != API_ROLE_PLATFORM_ADMIN) {
            api_error(req, 404, "not_found", "no such user");
            goto out;
        }
    }
    api_reply_json(req, 200, json_incref(json_object_get(v, "profile")));
out:
    json_decref(v);
}

void api_h_admin_add(struct api_req *req)
{
    static const struct api_field spec[] = {{"user_id", API_T_ID, 1, 0},
                                            {NULL, 0, 0, 0}};
    uint64_t company = req->param[0];
    json_t *body = req->json, *p;
    struct api_user u;
    int rc;

    if (api_body_check(req, spec) < 0)
        return;
    rc = api_user_load(req->router, api_id(body, "user_id", 0), &u);
    if (rc == BC_ENOTFOUND || rc == BC_ESHARD || (rc == 0 && u.company_id != company)) {
        api_error(req, 422, "invalid_user",
                  "that user is not a member of this company");
        return;
    }
    if (rc == 0 && strcmp(u.role, "platform_admin") != 0)
        rc = router_exec(req->router, router_shard_of_id(u.id), NULL,
                         "UPDATE %S.users SET role = 'company_admin' WHERE id = %u",
                         u.id);
    if (rc < 0) {
        api_db_error(req, rc);
        return;
    }
    if (strcmp(u.role, "platform_admin") != 0)
        snprintf(u.role, sizeof(u.role), "company_admin");
    p = profile_json(&u);
    json_object_set_new(p, "role", json_string(u.role));
    api_reply_json(req, 200, p);
}

int api_create_platform_admin(struct router *router, const char *email,
                              const char *password, const char *display_name,
                              int64_t initial_balance, uint64_t *user_id)
{
    struct sql_rows rows = {0};
    struct api_user u = {0};
    char hash[crypto_pwhash_STRBYTES], code[11];
    int rc;

    /* The signup's rules (a display name is trimmed, 1..100 characters). */
    if (email_canon(email, u.email, sizeof(u.email)) < 0 || !password_fits(password) ||
        name_clean(display_name, u.display_name, sizeof(u.display_name), 100) != NULL)
        return -EINVAL;
    api_join_code(code);
    rc =
        router_exec(router, ROUTER_GLOBAL, NULL,
                    "INSERT IGNORE INTO %S.companies (name, slug, join_code, platform) "
                    "VALUES ('BetCity', 'betcity-platform', %s, 1)",
                    code);
    if (rc == 0)
        rc = router_exec(router, ROUTER_GLOBAL, &rows,
                         "SELECT id FROM %S.companies WHERE slug = 'betcity-platform'");
    if (rc == 0 && rows.nrow != 1)
        rc = BC_ENOTFOUND; /* the row just inserted (or there) is gone */
    if (rc < 0)
        goto out;
    u.company_id = strtoull(sql_cell(&rows, 0, 0), NULL, 10);
    sql_rows_free(&rows);
    rc = router_exec(router, router_shard_of_key(router, u.email, strlen(u.email)),
                     &rows, "SELECT id, role FROM %S.users WHERE email = %s", u.email);
    if (rc < 0)
        goto out;
    if (rows.nrow == 1) {
        *user_id = strtoull(sql_cell(&rows, 0, 0), NULL, 10);
        /* Another user's address is no admin's: nothing is changed. */
        rc = strcmp(sql_cell(&rows, 0, 1), "platform_admin") == 0 ? BC_EEXISTS : -EPERM;
        goto out;
    }
    snprintf(u.role, sizeof(u.role), "platform_admin");
    u.balance = initial_balance;
    if ((rc = api_password_hash(password, hash, sizeof(hash))) < 0)
        goto out;
    rc = user_insert(router, &u, hash);
    *user_id = u.id;
out:
    sql_rows_free(&rows);
    return rc;
}
