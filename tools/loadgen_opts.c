/*
 * loadgen_opts.c: loadgen's command line, checked before anything runs.
 * Every bad flag is reported, then the usage; a URL that is not loopback is
 * refused because loadgen must only ever load the local stack (project policy).
 */
#include <arpa/inet.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "shardmap/shardmap.h"
#include "tools/loadgen.h"

#define MAX_SHARD_USERS 100000 /* each costs about --shards e-mail hashes */

const char *const loadgen_op_names[NOP] = {"odds", "bet", "me", "matches", "history"};

static void usage(FILE *out)
{
    fprintf(
        out,
        "usage: loadgen --url URL --users N --duration S [options]\n"
        "\n"
        "  --url URL            API base URL; loopback only (127.0.0.0/8, ::1, "
        "localhost)\n"
        "  --users N            virtual users (1..1000000)\n"
        "  --duration S         seconds of load after sign-up (1..86400)\n"
        "  --rate R             requests/s in total, open loop; 0 = closed loop,\n"
        "                       as fast as the workers go (default 0)\n"
        "  --mix SPEC           weights of odds,bet,me,matches,history (history:\n"
        "                       GET /v1/me/bets; default "
        "odds=80,bet=20)\n"
        "  --company SLUG --join-code CODE   company to sign the users up with\n"
        "  --password PW        password of every user (default loadgen-pass)\n"
        "  --email-prefix P     users are P-1@loadgen.test ... (default lg)\n"
        "  --signup | --login   only sign up / only log in (default: sign up, log in\n"
        "                       when the e-mail is taken; log in without --company)\n"
        "  --match ID,...       match ids (default: scheduled matches not started "
        "yet)\n"
        "  --stake N            stake of every bet (default 1)\n"
        "  --retry-busy         send a bet answered 429 or 503 again with the same\n"
        "                       body and Idempotency-Key (up to 12 times, 100-800 ms\n"
        "                       apart), as docs/api.md tells a client; without it\n"
        "                       such a bet counts as unknown (placed or not)\n"
        "  --acked FILE         write \"<bet_id> <user_id> <stake>\" per acknowledged "
        "bet\n"
        "                       (line by line; never a bet whose answer was lost)\n"
        "  --trace FILE         write \"<unix ms due> <op> <latency us> <status> <late "
        "us>\"\n"
        "                       per operation of the load (status: HTTP, or -curl "
        "code;\n"
        "                       late: how long after it was due loadgen started it,\n"
        "                       part of the latency), to cut the latencies into\n"
        "                       windows of time; kept in memory (32 bytes an\n"
        "                       operation) and written when the load ends\n"
        "  --watch-shard N      bets of users on logical shard N apart from the "
        "others:\n"
        "                       count, errors, p50/p99/max ms, and the longest gap "
        "between\n"
        "                       two acknowledged bets of that shard (max_gap_ms)\n"
        "  --shard-users N:K    K of the --users live on shard N: their e-mails are "
        "the\n"
        "                       first P-<i>@loadgen.test that hash there (as the API "
        "does)\n"
        "  --shards COUNT       the cluster's shard count, for --shard-users (default "
        "64)\n"
        "  --json               final report as one JSON object on stdout\n"
        "  --threads N          worker threads, one connection each (default 8)\n"
        "  --timeout-ms MS      per request (default 5000)\n"
        "\n"
        "Exit: 0 ran (errors are in the report), 1 could not start, 2 usage.\n");
}

int loadgen_is_loopback(const char *host)
{
    struct in_addr a4;
    struct in6_addr a6;

    if (strcasecmp(host, "localhost") == 0)
        return 1;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    return inet_pton(AF_INET6, host, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
}

static int num(const char *flag, const char *s, long lo, long hi, long *out)
{
    char *end;
    long v = strtol(s, &end, 10);

    if (end == s || *end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "loadgen: %s wants an integer %ld..%ld, not '%s'\n", flag, lo,
                hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

/* "odds=80,bet=20": a name alone weighs 1; unnamed operations weigh 0. */
static int parse_mix(const char *spec, struct opts *o)
{
    char *copy = strdup(spec), *save = NULL, *tok;
    int rc = 0;

    if (copy == NULL)
        return -1;
    memset(o->mix, 0, sizeof(o->mix));
    o->mix_total = 0;
    for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        long w = 1;
        unsigned i;

        if (eq != NULL)
            *eq = '\0';
        for (i = 0; i < NOP && strcmp(tok, loadgen_op_names[i]) != 0; i++)
            ;
        if (i == NOP) {
            fprintf(stderr,
                    "loadgen: --mix: unknown operation '%s' (odds, bet, me, matches, "
                    "history)\n",
                    tok);
            rc = -1;
        } else if (eq != NULL && num("--mix weight", eq + 1, 0, 1000000, &w) < 0) {
            rc = -1;
        } else {
            o->mix_total += (unsigned)w - o->mix[i];
            o->mix[i] = (unsigned)w;
        }
    }
    free(copy);
    if (rc == 0 && o->mix_total == 0) {
        fprintf(stderr, "loadgen: --mix: all weights are 0\n");
        rc = -1;
    }
    return rc;
}

static int check_matches(const char *s)
{
    const char *p = s;

    for (;;) {
        size_t n = strspn(p, "0123456789");

        if (n < 1 || n > 19 || (p[n] != ',' && p[n] != '\0')) {
            fprintf(stderr,
                    "loadgen: --match wants ids of 1..19 digits, comma separated\n");
            return -1;
        }
        if (p[n] == '\0')
            return 0;
        p += n + 1;
    }
}

/* "N:K": K users on shard N; checked against --shards and --users later. */
static int parse_shard_users(const char *spec, struct opts *o)
{
    char shard[16];
    const char *colon = strchr(spec, ':');
    size_t n = colon ? (size_t)(colon - spec) : 0;
    long max = SHARDMAP_MAX_SHARDS - 1;

    if (colon == NULL || n == 0 || n >= sizeof(shard)) {
        fprintf(stderr, "loadgen: --shard-users wants SHARD:COUNT, not '%s'\n", spec);
        return -1;
    }
    memcpy(shard, spec, n);
    shard[n] = '\0';
    if (num("--shard-users shard", shard, 0, max, &o->shard_users) < 0)
        return -1;
    return num("--shard-users count", colon + 1, 1, MAX_SHARD_USERS, &o->shard_users_k);
}

/* Sets o->base to the normalised URL when it is http(s) on a loopback host. */
static int check_url(const char *url, struct opts *o)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *norm = NULL, *extra = NULL;
    size_t n;
    int rc = -1;

    if (u == NULL || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
        fprintf(stderr, "loadgen: --url '%s' is not a URL like http://127.0.0.1:8080\n",
                url);
        goto out;
    }
    if (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0) {
        fprintf(stderr, "loadgen: --url: scheme '%s', want http or https\n", scheme);
        goto out;
    }
    n = strlen(host);
    if (host[0] == '[' && n > 2 && host[n - 1] == ']') {
        memmove(host, host + 1, n - 2);
        host[n - 2] = '\0';
    }
    if (!loadgen_is_loopback(host)) {
        fprintf(stderr,
                "loadgen: --url: host '%s' is not loopback; loadgen only drives the "
                "local stack (127.0.0.0/8, ::1, localhost) by project policy\n",
                host);
        goto out;
    }
    if (curl_url_get(u, CURLUPART_QUERY, &extra, 0) == CURLUE_OK ||
        curl_url_get(u, CURLUPART_FRAGMENT, &extra, 0) == CURLUE_OK) {
        fprintf(stderr, "loadgen: --url: no query or fragment, just the base URL\n");
        goto out;
    }
    if (curl_url_get(u, CURLUPART_URL, &norm, 0) != CURLUE_OK || strlen(norm) > 256) {
        fprintf(stderr, "loadgen: --url: too long\n");
        goto out;
    }
    for (n = strlen(norm); n > 0 && norm[n - 1] == '/'; n--)
        norm[n - 1] = '\0';
    if ((o->base = strdup(norm)) != NULL)
        rc = 0;
out:
    curl_free(extra);
    curl_free(norm);
    curl_free(host);
    curl_free(scheme);
    curl_url_cleanup(u);
    return rc;
}

int loadgen_opts_parse(int argc, char **argv, struct opts *o)
{
    static const struct option lopts[] = {
        {"url", required_argument, NULL, 'u'},
        {"users", required_argument, NULL, 'n'},
        {"duration", required_argument, NULL, 'd'},
        {"rate", required_argument, NULL, 'r'},
        {"mix", required_argument, NULL, 'm'},
        {"company", required_argument, NULL, 'c'},
        {"join-code", required_argument, NULL, 'J'},
        {"password", required_argument, NULL, 'p'},
        {"email-prefix", required_argument, NULL, 'e'},
        {"match", required_argument, NULL, 'M'},
        {"stake", required_argument, NULL, 's'},
        {"acked", required_argument, NULL, 'a'},
        {"trace", required_argument, NULL, 'R'},
        {"json", no_argument, NULL, 'j'},
        {"retry-busy", no_argument, NULL, 'B'},
        {"threads", required_argument, NULL, 't'},
        {"timeout-ms", required_argument, NULL, 'T'},
        {"signup", no_argument, NULL, 'S'},
        {"login", no_argument, NULL, 'L'},
        {"watch-shard", required_argument, NULL, 'W'},
        {"shard-users", required_argument, NULL, 'U'},
        {"shards", required_argument, NULL, 'N'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *url = NULL, *users = NULL, *duration = NULL;
    int c, bad = 0, signup = 0, login = 0;

    memset(o, 0, sizeof(*o));
    o->threads = 8;
    o->timeout_ms = 5000;
    o->stake = 1;
    o->password = "loadgen-pass";
    o->prefix = "lg";
    o->mix[OP_ODDS] = 80;
    o->mix[OP_BET] = 20;
    o->mix_total = 100;
    o->watch_shard = -1;
    o->nshard = 64;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", lopts, NULL)) != -1) {
        switch (c) {
        case 'u':
            url = optarg;
            break;
        case 'n':
            users = optarg;
            bad |= num("--users", optarg, 1, 1000000, &o->users);
            break;
        case 'd':
            duration = optarg;
            bad |= num("--duration", optarg, 1, 86400, &o->duration);
            break;
        case 'r':
            bad |= num("--rate", optarg, 0, 1000000, &o->rate);
            break;
        case 'm':
            bad |= parse_mix(optarg, o);
            break;
        case 'c':
            o->company = optarg;
            break;
        case 'J':
            o->join_code = optarg;
            break;
        case 'p':
            o->password = optarg;
            break;
        case 'e':
            o->prefix = optarg;
            break;
        case 'M':
            o->match_arg = optarg;
            bad |= check_matches(optarg);
            break;
        case 's':
            bad |= num("--stake", optarg, 1, 1000000000, &o->stake);
            break;
        case 'a':
            o->acked = optarg;
            break;
        case 'R':
            o->trace = optarg;
            break;
        case 'j':
            o->json = 1;
            break;
        case 'B':
            o->retry_busy = 1;
            break;
        case 't':
            bad |= num("--threads", optarg, 1, 1024, &o->threads);
            break;
        case 'T':
            bad |= num("--timeout-ms", optarg, 1, 600000, &o->timeout_ms);
            break;
        case 'S':
            signup = 1;
            break;
        case 'L':
            login = 1;
            break;
        case 'W':
            bad |= num("--watch-shard", optarg, 0, SHARDMAP_MAX_SHARDS - 1,
                       &o->watch_shard);
            break;
        case 'U':
            bad |= parse_shard_users(optarg, o);
            break;
        case 'N':
            bad |= num("--shards", optarg, SHARDMAP_MIN_SHARDS, SHARDMAP_MAX_SHARDS,
                       &o->nshard);
            if (!shardmap_valid_nshard((uint32_t)o->nshard)) {
                fprintf(stderr, "loadgen: --shards must be a power of two\n");
                bad = -1;
            }
            break;
        case 'h':
            usage(stdout);
            return 1;
        default:
            fprintf(stderr, "loadgen: unknown option or missing value: %s\n",
                    argv[optind - 1]);
            bad = -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "loadgen: unexpected argument '%s'\n", argv[optind]);
        bad = -1;
    }
    if (url == NULL || users == NULL || duration == NULL) {
        fprintf(stderr, "loadgen: missing%s%s%s\n", url ? "" : " --url",
                users ? "" : " --users", duration ? "" : " --duration");
        bad = -1;
    }
    if (url != NULL && check_url(url, o) < 0)
        bad = -1;
    if (signup && login) {
        fprintf(stderr, "loadgen: --signup and --login exclude each other\n");
        bad = -1;
    }
    if ((o->company == NULL) != (o->join_code == NULL)) {
        fprintf(stderr, "loadgen: --company and --join-code go together\n");
        bad = -1;
    }
    o->mode = login || (!signup && o->company == NULL) ? MODE_LOGIN
              : signup                                 ? MODE_SIGNUP
                                                       : MODE_AUTO;
    if (signup && o->company == NULL) {
        fprintf(stderr, "loadgen: --signup needs --company and --join-code\n");
        bad = -1;
    }
    if (o->mode != MODE_LOGIN && strlen(o->password) < 8) {
        fprintf(stderr, "loadgen: --password: at least 8 characters to sign up\n");
        bad = -1;
    }
    if (o->prefix[0] == '\0' || strlen(o->prefix) > 64 ||
        o->prefix[strspn(o->prefix, "abcdefghijklmnopqrstuvwxyz0123456789._-")] !=
            '\0') {
        fprintf(stderr, "loadgen: --email-prefix: 1..64 of [a-z0-9._-]\n");
        bad = -1;
    }
    if (o->shard_users_k > 0 && o->shard_users >= o->nshard) {
        fprintf(stderr,
                "loadgen: --shard-users %ld: the cluster has %ld shards (--shards)\n",
                o->shard_users, o->nshard);
        bad = -1;
    }
    if (o->shard_users_k > 0 && users != NULL && o->shard_users_k > o->users) {
        fprintf(stderr,
                "loadgen: --shard-users: %ld users on the shard, but --users %ld\n",
                o->shard_users_k, o->users);
        bad = -1;
    }
    if (bad) {
        loadgen_opts_deinit(o);
        fprintf(stderr, "\n");
        usage(stderr);
        return -1;
    }
    return 0;
}

void loadgen_opts_deinit(struct opts *o)
{
    free(o->base);
    o->base = NULL;
}
