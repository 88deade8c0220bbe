/*
 * netwire: a link with latency between this network namespace and another,
 * in user space, for the local stack's network namespaces (tools/devstack,
 * BC_NETNS=1) where the kernel has no sch_netem to delay a veth pair.
 *
 *   netwire [--delay-us US] [--queue PACKETS] [--pidfile FILE] [--daemon]
 *           DEV NETNS PEER_DEV
 *
 * Creates the TUN device DEV (layer 3, no packet information) in the network
 * namespace it runs in, and the TUN device PEER_DEV in the network namespace
 * NETNS (a name under /run/netns, or the path of a namespace file), and
 * forwards every packet sent into one device out of the other after US
 * microseconds (default 250, 0..10000000), in the order they came: a wire
 * between the two namespaces. Each direction holds at most PACKETS packets
 * in flight (default 1000, a NIC's txqueuelen); a packet that finds its
 * direction full is dropped, as is one the far device does not take (it is
 * down: how tools/devstack partitions a server), as a link drops them.
 *
 * The devices are made down and without addresses; the caller configures
 * them with ip(8) once they exist: at once without --daemon, when the
 * command returns with it (netwire detaches only once both devices exist
 * and FILE is written). They are not persistent: they go away when netwire
 * exits, or is killed. Packets of up to 2047 bytes pass (the devices' MTU is
 * 1500); longer ones are dropped.
 *
 * A packet's US are counted from when netwire reads it. The timer that
 * wakes netwire for it comes late, by tens of microseconds (about 0.1 ms in
 * a virtual machine): netwire sets it early by the median of its recent
 * lateness (at most half of US, at most 200 us) and sends what is due by
 * the time it wakes, so that half the packets leave by their due time.
 * Reading a packet costs a wake-up too, which nothing corrects: the link's
 * one-way time is US plus that (tens of microseconds, more on a busy
 * machine).
 *
 * --pidfile FILE   the running process's pid, removed when it exits
 * --daemon         run in the background (new session, stdin /dev/null,
 *                  stdout and stderr kept: the caller's log)
 * SIGTERM, SIGINT, SIGHUP: exit 0, with the counters on stderr; SIGUSR1: the
 * counters on stderr. A device that fails (deleted under it) ends it with
 * status 1. Exit status 1 also if a device, the namespace or FILE cannot be
 * made, 2 on a usage error. Needs CAP_NET_ADMIN in both namespaces and
 * CAP_SYS_ADMIN for setns (root).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include <linux/if_tun.h>

#include "tools/netwire_queue.h"

#define PROG "netwire"
#define SLOT_SIZE 2048        /* bytes a queued packet may take; longer: dropped */
#define READ_BATCH 64         /* packets read from one device before flushing */
#define DELAY_US_MAX 10000000 /* 10 s */
#define EARLY_MAX_NS 200000   /* the most the timer is set early */
#define EARLY_STEP_NS 2000    /* how far one wake-up moves that */
#define QUEUE_MAX 100000
#define NS_PER_US UINT64_C(1000)
#define NS_PER_S UINT64_C(1000000000)

struct opts {
    long delay_us, queue;
    int daemon;
    const char *pidfile;  /* ref in argv */
    const char *dev;      /* ref in argv */
    const char *netns;    /* ref in argv */
    const char *peer_dev; /* ref in argv */
    char netns_path[PATH_MAX];
};

/* One direction of the wire: packets read from `from`, written to `to`. */
struct dir {
    const char *from_name, *to_name; /* ref in opts */
    int from, to;                    /* ref: the devices' fds */
    struct netwire_queue q;
    uint64_t read;      /* packets read */
    uint64_t sent;      /* written to the far device */
    uint64_t dropped;   /* the queue was full */
    uint64_t too_long;  /* longer than a slot */
    uint64_t not_taken; /* the far device refused them (down: EIO) */
    int64_t off_sum;    /* sum over packets sent of (sent - due), ns */
    int64_t late_max;   /* the most a packet left after its due time, ns */
};

/* The loop's timer: how early it is set, for it wakes late. */
struct timer {
    uint64_t early_ns; /* the median lateness of the wake-ups, at most max_ns */
    uint64_t max_ns;   /* EARLY_MAX_NS, or half the delay if less */
};

/* Both directions and the timer. */
struct wire {
    struct dir d[2];
    struct timer t;
};

static void logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void logmsg(const char *fmt, ...)
{
    char buf[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s[%ld]: %s\n", PROG, (long)getpid(), buf);
}

static uint64_t mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

/* ---------------------------------------------------------------- options */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: %s [--delay-us US] [--queue PACKETS] [--pidfile FILE] [--daemon]\n"
            "       %*s DEV NETNS PEER_DEV\n"
            "Creates the TUN device DEV here and PEER_DEV in network namespace NETNS\n"
            "(a name under /run/netns, or a path), and forwards the packets between\n"
            "them after US microseconds each way (default 250), at most PACKETS in\n"
            "flight each way (default 1000).\n",
            PROG, (int)strlen(PROG), "");
}

/* Parses a whole decimal number in [lo, hi]; an error message names the option. */
static int num(const char *opt, const char *s, long lo, long hi, long *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "%s: %s must be a whole number in %ld..%ld, not '%s'\n", PROG,
                opt, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int check_dev(const char *what, const char *name)
{
    size_t n = strlen(name);

    if (n == 0 || n >= IFNAMSIZ || strpbrk(name, "/: \t\n") != NULL ||
        strcmp(name, ".") == 0 || strcmp(name, "..") == 0) {
        fprintf(stderr,
                "%s: %s '%s' is not a device name (1..%d characters, no '/', ':' "
                "or space)\n",
                PROG, what, name, IFNAMSIZ - 1);
        return -1;
    }
    return 0;
}

/* 0 with *o filled, 1 for --help, -1 after printing what was wrong. */
static int parse_opts(int argc, char **argv, struct opts *o)
{
    static const struct option lopts[] = {
        {"delay-us", required_argument, NULL, 'd'},
        {"queue", required_argument, NULL, 'q'},
        {"pidfile", required_argument, NULL, 'p'},
        {"daemon", no_argument, NULL, 'D'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c, bad = 0;

    memset(o, 0, sizeof(*o));
    o->delay_us = 250;
    o->queue = 1000;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", lopts, NULL)) != -1) {
        switch (c) {
        case 'd':
            bad |= num("--delay-us", optarg, 0, DELAY_US_MAX, &o->delay_us);
            break;
        case 'q':
            bad |= num("--queue", optarg, 1, QUEUE_MAX, &o->queue);
            break;
        case 'p':
            if (optarg[0] == '\0') {
                fprintf(stderr, "%s: --pidfile needs a file name\n", PROG);
                bad = -1;
            }
            o->pidfile = optarg;
            break;
        case 'D':
            o->daemon = 1;
            break;
        case 'h':
            return 1;
        case ':':
            fprintf(stderr, "%s: %s needs a value\n", PROG, argv[optind - 1]);
            bad = -1;
            break;
        default:
            fprintf(stderr, "%s: unknown option %s\n", PROG, argv[optind - 1]);
            bad = -1;
            break;
        }
    }
    if (argc - optind != 3) {
        fprintf(stderr, "%s: want DEV NETNS PEER_DEV, got %d argument%s\n", PROG,
                argc - optind, argc - optind == 1 ? "" : "s");
        return -1;
    }
    o->dev = argv[optind];
    o->netns = argv[optind + 1];
    o->peer_dev = argv[optind + 2];
    bad |= check_dev("DEV", o->dev);
    bad |= check_dev("PEER_DEV", o->peer_dev);
    if (strchr(o->netns, '/') != NULL) {
        snprintf(o->netns_path, sizeof(o->netns_path), "%s", o->netns);
    } else if (o->netns[0] == '\0' || o->netns[0] == '.' ||
               strlen(o->netns) > NAME_MAX) {
        fprintf(stderr, "%s: NETNS '%s' is neither a namespace name nor a path\n", PROG,
                o->netns);
        bad = -1;
    } else {
        snprintf(o->netns_path, sizeof(o->netns_path), "/run/netns/%s", o->netns);
    }
    return bad ? -1 : 0;
}

/* ---------------------------------------------------------------- devices */

/* Creates the TUN device name in the current network namespace; its fd
 * (non-blocking) or -errno. */
static int tun_create(const char *name)
{
    struct ifreq ifr;
    int fd, err;

    fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    memset(&ifr, 0, sizeof(ifr));
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
        err = -errno;
        close(fd);
        return err;
    }
    return fd;
}

/* Creates the TUN device name in the namespace at path and comes back to the
 * caller's namespace; the fd stays bound to the device over there. The fd or
 * -errno; *what says which step failed. */
static int tun_create_in(const char *path, const char *name, const char **what)
{
    int self, ns = -1, fd, err;

    *what = "open /proc/self/ns/net";
    self = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    if (self < 0)
        return -errno;
    *what = "open the namespace";
    ns = open(path, O_RDONLY | O_CLOEXEC);
    if (ns < 0)
        goto error;
    *what = "enter the namespace (setns)";
    if (setns(ns, CLONE_NEWNET) < 0)
        goto error;
    *what = "create the TUN device";
    fd = tun_create(name);
    if (setns(self, CLONE_NEWNET) < 0) {
        /* Nothing else may be made in the wrong namespace. */
        logmsg("cannot return to the first network namespace: %s", strerror(errno));
        exit(1);
    }
    close(ns);
    close(self);
    return fd;

error:
    err = -errno;
    if (ns >= 0)
        close(ns);
    close(self);
    return err;
}

/* ---------------------------------------------------------------- pid file, daemon */

static int write_pidfile(const char *path)
{
    char tmp[PATH_MAX];
    FILE *f;
    int err = 0;

    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
        return -ENAMETOOLONG;
    f = fopen(tmp, "we");
    if (f == NULL)
        return -errno;
    if (fprintf(f, "%ld\n", (long)getpid()) < 0)
        err = -EIO;
    if (fclose(f) != 0 && err == 0)
        err = -errno;
    if (err == 0 && rename(tmp, path) != 0)
        err = -errno;
    if (err != 0)
        unlink(tmp);
    return err;
}

/*
 * Forks; the parent waits until the child says it is ready (daemon_ready)
 * and exits 0, or exits 1 if the child dies first. In the child: a new
 * session, stdin /dev/null, and the fd to say "ready" on (-1 on failure).
 */
static int daemon_start(void)
{
    int p[2], fd;
    pid_t pid;
    char c;
    ssize_t n;

    if (pipe2(p, O_CLOEXEC) < 0)
        return -1;
    pid = fork();
    if (pid < 0)
        return -1;
    if (pid > 0) {
        close(p[1]);
        do
            n = read(p[0], &c, 1);
        while (n < 0 && errno == EINTR);
        _exit(n == 1 ? 0 : 1);
    }
    close(p[0]);
    if (setsid() < 0 || chdir("/") < 0)
        return -1;
    fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        dup2(fd, STDIN_FILENO);
        close(fd);
    }
    return p[1];
}

static void daemon_ready(int fd)
{
    ssize_t n;

    if (fd < 0)
        return;
    do
        n = write(fd, "1", 1);
    while (n < 0 && errno == EINTR);
    close(fd);
}

/* ---------------------------------------------------------------- the wire */

static void log_counters(const struct wire *w)
{
    const struct dir *d = w->d;

    logmsg("timer set %.1f us early", (double)w->t.early_ns / 1e3);
    for (int i = 0; i < 2; i++)
        logmsg("%s -> %s: %" PRIu64 " packets read, %" PRIu64 " sent (%+.1f us from "
               "their due time on average, at most %.1f us late), %" PRIu64
               " dropped (queue full), %" PRIu64 " too long, %" PRIu64
               " not taken (device down), %" PRIu32 " queued",
               d[i].from_name, d[i].to_name, d[i].read, d[i].sent,
               d[i].sent > 0 ? (double)d[i].off_sum / (double)d[i].sent / 1e3 : 0.0,
               (double)d[i].late_max / 1e3, d[i].dropped, d[i].too_long, d[i].not_taken,
               netwire_queue_count(&d[i].q));
}

/* Writes every packet of d that is due at horizon to its far device; now is
 * the clock, for the counters. */
static void flush_due(struct dir *d, uint64_t horizon, uint64_t now)
{
    const unsigned char *pkt;
    size_t len;

    while ((pkt = netwire_queue_due(&d->q, horizon, &len)) != NULL) {
        int64_t off = (int64_t)(now - netwire_queue_next_due(&d->q));
        ssize_t n;

        do
            n = write(d->to, pkt, len);
        while (n < 0 && errno == EINTR);
        /* A device that is down refuses with EIO: the packet is lost, as on a
         * cut link. Any other refusal (no buffer) loses it too. */
        if (n == (ssize_t)len) {
            d->sent++;
            d->off_sum += off;
            if (off > d->late_max)
                d->late_max = off;
        } else {
            d->not_taken++;
        }
        netwire_queue_pop(&d->q);
    }
}

/* Reads up to READ_BATCH packets from d's near device into its queue. 0, or
 * -errno when the device failed. */
static int read_some(struct dir *d, uint64_t delay_ns)
{
    static unsigned char scratch[SLOT_SIZE]; /* where a dropped packet lands */

    for (int i = 0; i < READ_BATCH; i++) {
        unsigned char *slot = netwire_queue_slot(&d->q);
        ssize_t n = read(d->from, slot != NULL ? slot : scratch, SLOT_SIZE);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                return 0;
            return -errno;
        }
        if (n == 0)
            return 0;
        d->read++;
        if (slot == NULL)
            d->dropped++;
        else if (n >= SLOT_SIZE)
            d->too_long++;
        else
            netwire_queue_push(&d->q, (size_t)n, mono_ns() + delay_ns);
    }
    return 0;
}

/* After a wake-up by the timeout, set for want: moves early_ns a step
 * towards how late it came, a running median that one stall (the machine
 * busy) moves by one step only. */
static void timer_woke(struct timer *t, uint64_t want, uint64_t now)
{
    uint64_t late = now > want ? now - want : 0;

    if (late > t->early_ns)
        t->early_ns += EARLY_STEP_NS;
    else if (late < t->early_ns)
        t->early_ns -= t->early_ns < EARLY_STEP_NS ? t->early_ns : EARLY_STEP_NS;
    if (t->early_ns > t->max_ns)
        t->early_ns = t->max_ns;
}

/* Forwards until a signal ends it. 0 on SIGTERM/SIGINT/SIGHUP, -errno when a
 * device or the loop failed. */
static int run(struct wire *w, int sigfd, uint64_t delay_ns)
{
    struct dir *d = w->d;
    struct timer *t = &w->t;
    struct epoll_event ev[4];
    int ep, err = 0;

    t->early_ns = 0;
    t->max_ns = delay_ns / 2 < EARLY_MAX_NS ? delay_ns / 2 : EARLY_MAX_NS;

    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        return -errno;
    for (int i = 0; i < 2; i++) {
        ev[0] = (struct epoll_event){.events = EPOLLIN, .data.u32 = (uint32_t)i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, d[i].from, &ev[0]) < 0)
            goto error;
    }
    ev[0] = (struct epoll_event){.events = EPOLLIN, .data.u32 = 2};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, sigfd, &ev[0]) < 0)
        goto error;

    for (;;) {
        uint64_t now = mono_ns(), next, want = 0;
        struct timespec ts, *timeout = NULL;
        int n;

        /* What the timer would wake for too late is sent now. */
        flush_due(&d[0], now + t->early_ns, now);
        flush_due(&d[1], now + t->early_ns, now);
        next = netwire_queue_next_due(&d[0].q);
        if (netwire_queue_next_due(&d[1].q) < next)
            next = netwire_queue_next_due(&d[1].q);
        if (next != UINT64_MAX) {
            uint64_t wait;

            want = next - t->early_ns;
            wait = want > now ? want - now : 0;
            ts.tv_sec = (time_t)(wait / NS_PER_S);
            ts.tv_nsec = (long)(wait % NS_PER_S);
            timeout = &ts;
        }
        n = epoll_pwait2(ep, ev, 4, timeout, NULL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            goto error;
        }
        if (n == 0 && timeout != NULL)
            timer_woke(t, want, mono_ns());
        for (int i = 0; i < n; i++) {
            uint32_t k = ev[i].data.u32;

            if (k == 2) {
                struct signalfd_siginfo si;

                if (read(sigfd, &si, sizeof(si)) != (ssize_t)sizeof(si))
                    continue;
                if (si.ssi_signo == SIGUSR1) {
                    log_counters(w);
                    continue;
                }
                logmsg("signal %u: stopping", si.ssi_signo);
                goto out;
            }
            if (ev[i].events & (EPOLLERR | EPOLLHUP)) {
                logmsg("%s: the device failed (deleted?)", d[k].from_name);
                err = -EIO;
                goto out;
            }
            err = read_some(&d[k], delay_ns);
            if (err < 0) {
                logmsg("%s: read: %s", d[k].from_name, strerror(-err));
                goto out;
            }
        }
    }

error:
    err = -errno;
    logmsg("epoll: %s", strerror(errno));
out:
    close(ep);
    return err;
}

int main(int argc, char **argv)
{
    struct opts o;
    struct wire w;
    struct dir *d = w.d;
    int r, fd_dev = -1, fd_peer = -1, sigfd = -1, ready = -1, status = 1;
    const char *what;
    sigset_t sigs;

    memset(&w, 0, sizeof(w));
    r = parse_opts(argc, argv, &o);
    if (r != 0) {
        usage(r > 0 ? stdout : stderr);
        return r > 0 ? 0 : 2;
    }

    /* The signals that stop it are read from a signalfd, blocked before the
     * devices exist: none can end it between their making and their use. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    sigaddset(&sigs, SIGUSR1);
    sigprocmask(SIG_BLOCK, &sigs, NULL);
    sigfd = signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sigfd < 0) {
        logmsg("signalfd: %s", strerror(errno));
        goto out;
    }
    /* Wake-ups at the due time, not up to 50 us later (the default slack). */
    prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);

    fd_dev = tun_create(o.dev);
    if (fd_dev < 0) {
        logmsg("%s: cannot create the TUN device: %s", o.dev, strerror(-fd_dev));
        goto out;
    }
    fd_peer = tun_create_in(o.netns_path, o.peer_dev, &what);
    if (fd_peer < 0) {
        logmsg("%s in %s: cannot %s: %s", o.peer_dev, o.netns_path, what,
               strerror(-fd_peer));
        goto out;
    }
    for (int i = 0; i < 2; i++) {
        r = netwire_queue_init(&d[i].q, (uint32_t)o.queue, SLOT_SIZE);
        if (r < 0) {
            logmsg("queue of %ld packets: %s", o.queue, strerror(-r));
            goto out;
        }
    }
    d[0].from_name = d[1].to_name = o.dev;
    d[1].from_name = d[0].to_name = o.peer_dev;
    d[0].from = d[1].to = fd_dev;
    d[1].from = d[0].to = fd_peer;

    if (o.daemon) {
        ready = daemon_start();
        if (ready < 0) {
            logmsg("cannot run in the background: %s", strerror(errno));
            goto out;
        }
    }
    if (o.pidfile != NULL) {
        r = write_pidfile(o.pidfile);
        if (r < 0) {
            logmsg("%s: cannot write the pid file: %s", o.pidfile, strerror(-r));
            goto out;
        }
    }
    logmsg("%s <-> %s in %s: %ld us each way, at most %ld packets in flight each way",
           o.dev, o.peer_dev, o.netns_path, o.delay_us, o.queue);
    daemon_ready(ready);
    ready = -1;

    r = run(&w, sigfd, (uint64_t)o.delay_us * NS_PER_US);
    log_counters(&w);
    status = r < 0 ? 1 : 0;
    if (o.pidfile != NULL)
        unlink(o.pidfile);

out:
    if (ready >= 0)
        close(ready); /* the parent exits 1 */
    for (int i = 1; i >= 0; i--)
        netwire_queue_deinit(&d[i].q);
    if (fd_peer >= 0)
        close(fd_peer);
    if (fd_dev >= 0)
        close(fd_dev);
    if (sigfd >= 0)
        close(sigfd);
    return status;
}
