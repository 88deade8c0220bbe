/*
 * betcity-api: the HTTP API server.
 *
 *   betcity-api -c cluster.yaml --listen 127.0.0.1:8081 --secret-file api.secret
 *               [--name api1] [--threads N] [--workers 64] [--no-map-poll]
 *               [--quiet] [--set KEY=VALUE]...   (limits: --help lists the keys)
 *   betcity-api --routes
 *
 * Stops cleanly on SIGINT or SIGTERM. SIGHUP reloads nothing (the config
 * and limits are read at start, the shard map is polled): it is logged.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "api/api_int.h"

static atomic_int log_stop;

/*
 * The access log is buffered per thread (api_log.c), one write when a
 * buffer is full, not per line, and flushed four times a second: its lines
 * are at most 250 ms late. The server's own lines (api_log()) are few and
 * are what explains a crash: stderr is line-buffered, so each is written
 * as it is logged and a kill -9 loses none of them.
 */
static void *log_flusher(void *arg)
{
    (void)arg;
    pthread_setname_np(pthread_self(), "bc-log");
    while (!atomic_load(&log_stop)) {
        usleep(250000);
        fflush(stderr);
        api_access_log_flush();
    }
    return NULL;
}

static void usage(FILE *out)
{
    struct api_conf dflt;

    api_conf_init(&dflt);
    fprintf(
        out,
        "usage: betcity-api -c CLUSTER.yaml --listen IPV4:PORT --secret-file FILE\n"
        "                   [--name NAME] [--threads N] [--workers N] [--no-map-poll]\n"
        "                   [--quiet] [--set KEY=VALUE]...\n"
        "       betcity-api --routes\n"
        "  --listen IPV4:PORT\n"
        "                an IPv4 address (0.0.0.0: all of them) and a port 1..65535;\n"
        "                not a host name, not IPv6 (e.g. 10.0.1.11:8080)\n"
        "  --name NAME   this server's name in its metrics, log lines and settlement\n"
        "                leases, unique per server: 1..63 characters of\n"
        "                A-Z a-z 0-9 _ . - (default %s)\n"
        "  --threads N   event-loop threads (1..256; default: the online cores, %u)\n"
        "  --workers N   threads that run the handlers which wait for the database\n"
        "                or memcached (1..1024; default %u); what they run at once on\n"
        "                one host is bounded by the cluster config's pool_size\n"
        "keys of --set (docs/api.md \"Limits\"), with their defaults:\n",
        dflt.name, dflt.threads, dflt.workers);
    api_conf_keys(out);
}

/*
 * The name goes unquoted into metric labels, log lines and the settlement
 * leases' owner ("<name>/<nonce>"): only characters none of them needs to
 * escape, and at most 63, a host name label's length (the systemd unit
 * passes the short host name), so none is cut.
 */
static int name_ok(const char *name)
{
    size_t n = strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                            "0123456789_.-");

    return n >= 1 && n <= 63 && name[n] == '\0';
}

/*
 * --listen IPV4:PORT into api, checked before anything is contacted. The
 * server listens on one IPv4 address (api_listen.c); a host name would
 * resolve to any number of them, so it is refused as IPv6 is.
 */
static int parse_listen(const char *text, struct api_conf *api)
{
    const char *colon = strrchr(text, ':');
    struct in_addr in;
    unsigned long v;
    char *end;

    if (colon == NULL || colon == text ||
        (size_t)(colon - text) >= sizeof(api->listen_addr) || colon[1] < '0' ||
        colon[1] > '9')
        return -EINVAL;
    v = strtoul(colon + 1, &end, 10);
    if (*end != '\0' || v == 0 || v > 65535)
        return -EINVAL;
    memcpy(api->listen_addr, text, (size_t)(colon - text));
    api->listen_addr[colon - text] = '\0';
    if (inet_pton(AF_INET, api->listen_addr, &in) != 1)
        return -EINVAL;
    api->port = (uint16_t)v;
    return 0;
}

/*
 * Reads the token keys of path (api_secrets_parse(): the signing key first,
 * then older keys still accepted): 0, -errno or -EINVAL.
 */
static int read_secret(const char *path, struct api_conf *api)
{
    char text[4096], err[512];
    size_t n;
    FILE *f = fopen(path, "r");
    int rc;

    if (f == NULL) {
        rc = -errno;
        fprintf(stderr, "betcity-api: %s: %s\n", path, strerror(-rc));
        return rc;
    }
    n = fread(text, 1, sizeof(text), f);
    /* A directory opens, then fails to read (EISDIR): say so, not "no key". */
    rc = ferror(f) ? -(errno ? errno : EIO) : 0;
    fclose(f);
    if (rc < 0) {
        fprintf(stderr, "betcity-api: %s: %s\n", path, strerror(-rc));
        return rc;
    }
    if (n == sizeof(text)) {
        fprintf(stderr, "betcity-api: %s: larger than %zu bytes\n", path, n - 1);
        return -EINVAL;
    }
    text[n] = '\0';
    rc = api_secrets_parse(api, text, path, err, sizeof(err));
    sodium_memzero(text, sizeof(text));
    if (rc < 0)
        fprintf(stderr, "betcity-api: %s\n", err);
    return rc;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"listen", required_argument, NULL, 'l'},
                                         {"secret-file", required_argument, NULL, 's'},
                                         {"name", required_argument, NULL, 'n'},
                                         {"threads", required_argument, NULL, 't'},
                                         {"workers", required_argument, NULL, 'w'},
                                         {"no-map-poll", no_argument, NULL, 'P'},
                                         {"routes", no_argument, NULL, 'r'},
                                         {"quiet", no_argument, NULL, 'q'},
                                         {"set", required_argument, NULL, 'S'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *cluster = NULL, *listen = NULL, *secret = NULL;
    struct shardmap_conf conf;
    struct api_conf api;
    struct router *router = NULL;
    struct cache *cache = NULL;
    struct api_server *srv = NULL;
    char *err = NULL, *end, why[256];
    int c, poll = 1, quiet = 0, routes = 0, rc, sig, nset = 0;
    const char *sets[64]; /* the --set options so far, for a key given twice */
    unsigned long v;
    sigset_t set;

    api_conf_init(&api);
    while ((c = getopt_long(argc, argv, "c:l:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            cluster = optarg;
            break;
        case 'l':
            listen = optarg;
            break;
        case 's':
            secret = optarg;
            break;
        case 'n':
            if (!name_ok(optarg)) {
                fprintf(stderr,
                        "betcity-api: --name wants 1..63 characters of "
                        "A-Z a-z 0-9 _ . -, got '%s'\n",
                        optarg);
                return 2;
            }
            snprintf(api.name, sizeof(api.name), "%s", optarg);
            break;
        case 't':
            v = strtoul(optarg, &end, 10);
            if (*end != '\0' || v < 1 || v > 256) {
                fprintf(stderr, "betcity-api: --threads wants 1..256\n");
                return 2;
            }
            api.threads = (uint32_t)v;
            break;
        case 'w':
            v = strtoul(optarg, &end, 10);
            if (*end != '\0' || v < 1 || v > 1024) {
                fprintf(stderr, "betcity-api: --workers wants 1..1024\n");
                return 2;
            }
            api.workers = (uint32_t)v;
            break;
        case 'P':
            poll = 0;
            break;
        case 'q':
            quiet = 1;
            break;
        case 'S': {
            char key[64], msg[256];
            const char *eq = strchr(optarg, '=');
            if (eq == NULL || (size_t)(eq - optarg) >= sizeof(key)) {
                fprintf(stderr, "betcity-api: --set wants KEY=VALUE, got '%s'\n",
                        optarg);
                return 2;
            }
            memcpy(key, optarg, (size_t)(eq - optarg));
            key[eq - optarg] = '\0';
            if (api_conf_set(&api, key, eq + 1, msg, sizeof(msg)) < 0) {
                fprintf(stderr, "betcity-api: --set %s\n", msg);
                return 2;
            }
            /* A key given twice is a mistake in a unit file, not an override. */
            for (int i = 0; i < nset; i++)
                if (strncmp(sets[i], optarg, (size_t)(eq - optarg) + 1) == 0) {
                    fprintf(stderr,
                            "betcity-api: --set %s: the key %s was set before "
                            "(--set %s); give each key once\n",
                            optarg, key, sets[i]);
                    return 2;
                }
            if (nset == (int)(sizeof(sets) / sizeof(sets[0]))) {
                fprintf(stderr, "betcity-api: more than %zu --set options\n",
                        sizeof(sets) / sizeof(sets[0]));
                return 2;
            }
            sets[nset++] = optarg;
            break;
        }
        case 'r':
            routes = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (routes) {
        if (optind != argc) {
            fprintf(stderr, "betcity-api: --routes takes no argument, got '%s'\n",
                    argv[optind]);
            return 2;
        }
        api_print_routes(stdout);
        return 0;
    }
    if (cluster == NULL || listen == NULL || secret == NULL || optind != argc) {
        usage(stderr);
        return 2;
    }
    if (parse_listen(listen, &api) < 0) {
        fprintf(stderr,
                "betcity-api: --listen wants IPV4:PORT, an IPv4 address (not a host "
                "name, not IPv6) and a port 1..65535, got '%s'\n",
                listen);
        return 2;
    }
    if (sodium_init() < 0 || read_secret(secret, &api) < 0)
        return 1;
    if (shardmap_conf_load(cluster, &conf, &err) < 0) {
        fprintf(stderr, "betcity-api: %s\n",
                err ? err : "cannot load the cluster config");
        free(err);
        return 1;
    }
    /*
     * Handlers run on the workers (the event loops wait for no I/O; GET
     * /v1/me's read runs on a loop only on a connection idle in the pool); a
     * worker that needs a host takes one of its pool_size connections, or
     * waits for one up to connect_timeout_ms. The pool, not the workers, bounds what a
     * host runs at once for this server: 64 bets in flight on a 2-core
     * machine cost MariaDB 1.37 ms of CPU each against 0.82 ms with 8 a host,
     * and passed 40 % fewer (docs/benchmarks.md).
     */
    api.access_log = quiet ? NULL : stderr;
    static char logbuf[1 << 16];
    pthread_t flusher;
    int have_flusher = 0;
    setvbuf(stderr, logbuf, _IOLBF, sizeof(logbuf));

    /* Signals go to sigwait() below, not to the server's threads. */
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    have_flusher = pthread_create(&flusher, NULL, log_flusher, NULL) == 0;

    rc = router_create(&conf, &router);
    if (rc < 0) {
        fprintf(stderr, "betcity-api: router: %s\n", bc_strerror(rc));
        goto out;
    }
    router_set_polling(router, poll);
    rc = cache_create(&conf, 100, &cache);
    if (rc < 0) {
        fprintf(stderr, "betcity-api: cache: %s\n", bc_strerror(rc));
        goto out;
    }
    api.cache = cache;
    api.rw_window_s = router_rw_window_s(router);
    rc = api_server_create(&api, router, &srv);
    if (rc == -EADDRINUSE) {
        /* Another server, HAProxy or anything else listens there: exit 1. */
        fprintf(stderr, "betcity-api: cannot listen on %s: address in use\n", listen);
        goto out;
    }
    if (rc < 0) {
        fprintf(stderr, "betcity-api: cannot listen on %s: %s\n", listen,
                bc_strerror(rc));
        goto out;
    }
    router_map_error(router, why, sizeof(why));
    api_log("%s: listening on %s (%u event loops, %u workers, map %s%s%s)", api.name,
            listen, api.threads, api.workers,
            router_map(router) ? "loaded" : "not yet loaded", why[0] ? ": " : "", why);
    while (sigwait(&set, &sig) == 0 && sig == SIGHUP)
        api_log("%s: SIGHUP: nothing to reload (the config and --set limits are read "
                "at start, the shard map is polled): restart the server to change them",
                api.name);
    api_log("%s: %s: stopping", api.name, strsignal(sig));
    /* SIGTERM (a service manager's stop) drains; SIGINT (Ctrl-C) does not wait. */
    if (sig == SIGTERM && api.limits.stop_drain_ms > 0) {
        api_server_drain(srv, api.limits.stop_drain_ms);
        api_log("%s: drained for %u ms: closing", api.name, api.limits.stop_drain_ms);
    }
out:
    /* Joins the server's settler and settlements: none outlives the router below. */
    api_server_destroy(srv);
    cache_destroy(cache);
    router_destroy(router);
    shardmap_conf_deinit(&conf);
    atomic_store(&log_stop, 1);
    if (have_flusher)
        pthread_join(flusher, NULL);
    fflush(stderr);
    api_access_log_release();
    return rc < 0 ? 1 : 0;
}
