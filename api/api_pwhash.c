/*
 * api_pwhash.c: password hashes (argon2id), and the server's queue that
 * runs them on threads of their own, off the HTTP workers.
 *
 * argon2id (libsodium crypto_pwhash_str) with 3 passes over 12 MiB, OWASP's
 * "m=12 MiB, t=3" setting: ~25 ms of one core. A login or signup that needs
 * one reserves a place in the queue (or is answered 503 at once when it is
 * full), has its connection suspended, and is resumed by the hash thread
 * when its hash is done: an HTTP worker never waits for a hash, so a flood
 * of bad logins costs the queue's threads and nothing else. The queue's
 * depth bounds the waiting (and the memory: 12 MiB per running hash); the
 * threads serve first the address with the fewest jobs (take_job()).
 *
 * Logins from known devices (a device token of the account: api_device.c)
 * have places of their own beside the others, and their jobs run first: a
 * flood of bad logins from many addresses fills the other places, not
 * those, so the account's owner signing in from a device he has used
 * before waits for the jobs already running and no others.
 *
 * An address whose logins failed lately (twice within 10 s, or more
 * spread out: the count loses half every 10 s) is failing: its jobs run
 * after the plain ones, and it takes no place of the last quarter of them.
 * So a flood of bad logins from many addresses leaves room for a login
 * from a new device at another address, which runs next (where it used to
 * find the queue full, or its wait behind the whole flood too long, and
 * got a 503).
 *
 * api_password_hash() and api_password_verify() are the same work run on
 * the caller's thread, for tools (bcadmin) and server start-up; at most
 * HASH_SLOTS of those run at once per process.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "api/api_int.h"

#define HASH_OPS 3
#define HASH_MEM (12u * 1024 * 1024)
#define HASH_SLOTS 2

_Static_assert(API_PWHASH_STRBYTES >= crypto_pwhash_STRBYTES,
               "a job holds a whole hash string");

static sem_t hash_slots;
static pthread_once_t hash_once = PTHREAD_ONCE_INIT;

static void hash_init(void)
{
    sem_init(&hash_slots, 0, HASH_SLOTS);
    if (sodium_init() < 0)
        abort(); /* no usable random source: nothing can be secure */
}

static int64_t mono_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int pw_hash(const char *password, char *out)
{
    return crypto_pwhash_str(out, password, strlen(password), HASH_OPS, HASH_MEM) == 0
               ? 0
               : -ENOMEM;
}

static int pw_verify(const char *hash, const char *password)
{
    return crypto_pwhash_str_verify(hash, password, strlen(password)) == 0 ? 0
                                                                           : -EACCES;
}

int api_password_hash(const char *password, char *out, size_t size)
{
    int rc;

    pthread_once(&hash_once, hash_init);
    if (size < crypto_pwhash_STRBYTES)
        return -ENOSPC;
    sem_wait(&hash_slots);
    rc = pw_hash(password, out);
    sem_post(&hash_slots);
    return rc;
}

int api_password_verify(const char *hash, const char *password)
{
    int rc;

    pthread_once(&hash_once, hash_init);
    sem_wait(&hash_slots);
    rc = pw_verify(hash, password);
    sem_post(&hash_slots);
    return rc;
}

/* Jobs in flight per client address: at most depth keys at once. */
struct addr_count {
    uint32_t addr;
    uint32_t n; /* 0: free */
};

/*
 * Failed logins per client address, forgotten over time: a table of
 * FAIL_SLOTS, FAIL_PROBE slots looked at per address; a new address takes
 * the free or most forgotten of them (an address that fails more than
 * others stays).
 */
#define FAIL_BITS 12
#define FAIL_SLOTS (1u << FAIL_BITS)
#define FAIL_PROBE 8
#define FAIL_HALF_US 10000000.0 /* half of the count forgotten in 10 s */
#define FAIL_FROM 1.5           /* failing: two failures within 10 s, or more */
struct addr_fail {
    uint32_t addr;
    double n;     /* 0: free */
    int64_t t_us; /* when n was */
};

struct api_pwhash {
    pthread_mutex_t lock;
    struct addr_count *by_addr; /* 2 * depth slots, open addressing */
    uint32_t naddr_slot;
    uint32_t per_addr;    /* jobs in flight per address, at most */
    uint32_t max_wait_us; /* refuse when the expected wait is longer */
    /*
     * A plain job queued this long runs before the younger ones of
     * addresses that hold fewer places (0: never): the fewest-places order
     * alone let an address's two logins at once wait behind a whole flood
     * of one-login addresses.
     */
    int64_t age_us;
    uint32_t nice;       /* added to the threads' nice value */
    double job_us;       /* moving average of one job's run time */
    pthread_cond_t work; /* a job queued, or stopping */
    pthread_cond_t idle; /* inflight fell to 0 */
    struct api_pwhash_job *head, *tail;
    uint32_t depth;    /* reservations allowed at once */
    uint32_t inflight; /* reserved, queued or running */
    uint32_t failing;  /* of them, failing addresses' places */
    uint32_t known;    /* known devices' places, beside depth */
    uint32_t known_inflight;
    struct addr_fail *fails; /* FAIL_SLOTS */
    int stopping;            /* drain(): no new reservation */
    int quit;                /* destroy(): threads leave once the queue is empty */
    uint32_t nthread;
    pthread_t *thread;
    char dummy[API_PWHASH_STRBYTES]; /* hash of a random password */
    atomic_uint_fast64_t done, refused, known_done;
};

static struct addr_count *addr_slot(struct api_pwhash *q, uint32_t addr);

/*
 * The queued job to run next, unlinked: the oldest of a known device's, or
 * else the oldest plain one of the address holding the fewest places
 * (reserved, queued or running), a plain job queued age_us ago counting
 * as one of an address with none, or else the failing ones the
 * same way (without the age). A flood from one address keeps its share of
 * places, but another address's login runs next, not behind the flood's
 * queued jobs; and a flood of bad logins from many addresses runs after
 * everyone else's. O(queue) under the lock, for a job of ~25 ms. NULL when
 * the queue is empty.
 */
static struct api_pwhash_job *take_job(struct api_pwhash *q)
{
    struct api_pwhash_job *job, *prev = NULL, *best = NULL, *best_prev = NULL;
    uint64_t best_n = UINT64_MAX;
    int64_t old = q->age_us > 0 ? mono_us() - q->age_us : INT64_MIN;

    for (job = q->head; job != NULL; prev = job, job = job->next) {
        if (job->place == API_PWHASH_KNOWN) {
            best = job;
            best_prev = prev;
            break;
        }
        struct addr_count *c = addr_slot(q, job->addr);
        uint64_t n = c != NULL && c->addr == job->addr ? c->n : 0;
        if (job->place == API_PWHASH_FAILING)
            n += (uint64_t)1 << 32; /* after every plain one */
        else if (job->queued_us <= old)
            n = 0; /* waited long enough: the oldest such runs first */
        if (n < best_n) {
            best = job;
            best_prev = prev;
            best_n = n;
        }
    }
    if (best == NULL)
        return NULL;
    if (best_prev != NULL)
        best_prev->next = best->next;
    else
        q->head = best->next;
    if (q->tail == best)
        q->tail = best_prev;
    best->next = NULL;
    return best;
}

static void *hash_main(void *arg)
{
    struct api_pwhash *q = arg;
    struct api_pwhash_job *job;

    pthread_setname_np(pthread_self(), "bc-hash");
    api_thread_nice(q->nice);
    for (;;) {
        pthread_mutex_lock(&q->lock);
        while (q->head == NULL && !q->quit)
            pthread_cond_wait(&q->work, &q->lock);
        job = take_job(q);
        if (job == NULL) {
            pthread_mutex_unlock(&q->lock);
            return NULL;
        }
        pthread_mutex_unlock(&q->lock);

        int64_t t0 = mono_us(), dt;
        int known = job->place == API_PWHASH_KNOWN;
        if (job->op == API_PWHASH_HASH)
            job->rc = pw_hash(job->password, job->hash);
        else
            job->rc = pw_verify(job->hash, job->password);
        dt = mono_us() - t0;
        sodium_memzero(job->password, sizeof(job->password));
        atomic_fetch_add_explicit(&q->done, 1, memory_order_relaxed);
        if (known)
            atomic_fetch_add_explicit(&q->known_done, 1, memory_order_relaxed);
        /* The job belongs to its caller again from here on. */
        job->done(job);

        pthread_mutex_lock(&q->lock);
        q->job_us = q->job_us * 0.9 + (double)dt * 0.1;
        pthread_mutex_unlock(&q->lock);
    }
}

int api_pwhash_create(uint32_t nthread, uint32_t depth, uint32_t known,
                      uint32_t per_addr, uint32_t max_wait_ms, uint32_t age_ms,
                      uint32_t nice, struct api_pwhash **out)
{
    struct api_pwhash *q;
    unsigned char pw[16];
    char hex[33];
    int rc;

    pthread_once(&hash_once, hash_init);
    q = calloc(1, sizeof(*q));
    if (q == NULL)
        return -ENOMEM;
    q->thread = calloc(nthread, sizeof(*q->thread));
    q->naddr_slot = 2 * depth;
    q->by_addr = calloc(q->naddr_slot, sizeof(*q->by_addr));
    q->fails = calloc(FAIL_SLOTS, sizeof(*q->fails));
    if (q->thread == NULL || q->by_addr == NULL || q->fails == NULL) {
        free(q->fails);
        free(q->by_addr);
        free(q->thread);
        free(q);
        return -ENOMEM;
    }
    q->per_addr = per_addr;
    q->max_wait_us = max_wait_ms * 1000;
    q->age_us = (int64_t)age_ms * 1000;
    q->nice = nice;
    /* What a login of an unknown e-mail verifies against: the same work. */
    randombytes_buf(pw, sizeof(pw));
    sodium_bin2hex(hex, sizeof(hex), pw, sizeof(pw));
    int64_t t0 = mono_us();
    if ((rc = pw_hash(hex, q->dummy)) < 0) {
        free(q->fails);
        free(q->by_addr);
        free(q->thread);
        free(q);
        return rc;
    }
    q->job_us = (double)(mono_us() - t0);
    pthread_mutex_init(&q->lock, NULL);
    pthread_cond_init(&q->work, NULL);
    pthread_cond_init(&q->idle, NULL);
    q->depth = depth;
    q->known = known;
    for (; q->nthread < nthread; q->nthread++)
        if ((rc = -pthread_create(&q->thread[q->nthread], NULL, hash_main, q)) < 0) {
            api_pwhash_destroy(q);
            return rc;
        }
    *out = q;
    return 0;
}

void api_pwhash_drain(struct api_pwhash *q)
{
    if (q == NULL)
        return;
    pthread_mutex_lock(&q->lock);
    q->stopping = 1;
    while (q->inflight + q->known_inflight > 0)
        pthread_cond_wait(&q->idle, &q->lock);
    pthread_mutex_unlock(&q->lock);
}

void api_pwhash_destroy(struct api_pwhash *q)
{
    if (q == NULL)
        return;
    api_pwhash_drain(q);
    pthread_mutex_lock(&q->lock);
    q->quit = 1;
    pthread_cond_broadcast(&q->work);
    pthread_mutex_unlock(&q->lock);
    for (uint32_t i = 0; i < q->nthread; i++)
        pthread_join(q->thread[i], NULL);
    pthread_cond_destroy(&q->idle);
    pthread_cond_destroy(&q->work);
    pthread_mutex_destroy(&q->lock);
    free(q->fails);
    free(q->by_addr);
    free(q->thread);
    free(q);
}

/* The address's counter: found, or a free slot (n == 0). Under lock. */
static struct addr_count *addr_slot(struct api_pwhash *q, uint32_t addr)
{
    uint32_t h = (uint32_t)(((uint64_t)(addr * 2654435761u) * q->naddr_slot) >> 32);
    struct addr_count *free_slot = NULL;

    /* At most depth counters are in use: a free slot is always there. */
    for (uint32_t i = 0; i < q->naddr_slot; i++) {
        struct addr_count *c = &q->by_addr[(h + i) % q->naddr_slot];
        if (c->n > 0 && c->addr == addr)
            return c;
        if (c->n == 0 && free_slot == NULL)
            free_slot = c;
    }
    return free_slot;
}

/* What is left of the address's failed logins now. Under lock. */
static struct addr_fail *fail_slot(struct api_pwhash *q, uint32_t addr, int64_t now,
                                   int add)
{
    /* The product's top bits: its low ones follow the address's low ones alone. */
    uint32_t h = (addr * 2654435761u) >> (32 - FAIL_BITS);
    struct addr_fail *take = NULL;

    for (uint32_t i = 0; i < FAIL_PROBE; i++) {
        struct addr_fail *f = &q->fails[(h + i) % FAIL_SLOTS];
        if (f->n > 0) {
            f->n *= exp2(-(double)(now - f->t_us) / FAIL_HALF_US);
            f->t_us = now;
            if (f->n < 0.01)
                f->n = 0;
        }
        if (f->n > 0 && f->addr == addr)
            return f;
        if (take == NULL || f->n < take->n)
            take = f;
    }
    if (!add)
        return NULL;
    take->addr = addr;
    take->n = 0;
    take->t_us = now;
    return take;
}

void api_pwhash_failed(struct api_pwhash *q, uint32_t addr)
{
    pthread_mutex_lock(&q->lock);
    fail_slot(q, addr, mono_us(), 1)->n += 1;
    pthread_mutex_unlock(&q->lock);
}

int api_pwhash_reserve(struct api_pwhash *q, uint32_t addr, int known)
{
    struct addr_count *c;
    struct addr_fail *f;
    uint32_t limit = q->depth, ahead;
    int rc = -EAGAIN, place = API_PWHASH_PLAIN;

    pthread_mutex_lock(&q->lock);
    /*
     * A known device's own places, whatever the others hold: it runs before
     * every queued job, so its wait is the jobs running and the known ones.
     * With none left (or none at all), it asks for a place as others do.
     */
    if (known && !q->stopping && q->known_inflight < q->known) {
        q->known_inflight++;
        pthread_mutex_unlock(&q->lock);
        return API_PWHASH_KNOWN;
    }
    c = addr_slot(q, addr);
    /*
     * The jobs that would run before this one: for a plain place the other
     * plain ones and the known ones (of the failing ones, those running
     * when it is queued, which the + 1 below stands for); for a failing
     * address's, all. A failing address never takes the last quarter of the
     * places.
     */
    f = fail_slot(q, addr, mono_us(), 0);
    if (f != NULL && f->n >= FAIL_FROM) {
        place = API_PWHASH_FAILING;
        ahead = q->inflight + q->known_inflight;
        limit = q->depth - q->depth / 4;
    } else {
        ahead = q->inflight - q->failing + q->known_inflight;
    }
    /*
     * Refused at once when the queue is full, or when the wait behind the
     * jobs ahead would be longer than max_wait_us; and beyond its share
     * (per_addr) an address gets a place only while that wait is at most
     * half of max_wait_us: a burst from one address (an office behind one
     * NAT, a test suite) goes through an idle queue, while one address's
     * flood never takes more than half of the wait the others may have.
     */
    double wait_us = (double)(ahead / q->nthread + 1) * q->job_us;
    if (!q->stopping && q->inflight < limit && c != NULL &&
        wait_us <= (double)q->max_wait_us &&
        (c->n < q->per_addr || wait_us <= (double)q->max_wait_us / 2)) {
        c->addr = addr;
        c->n++;
        q->inflight++;
        q->failing += place == API_PWHASH_FAILING;
        rc = place;
    }
    pthread_mutex_unlock(&q->lock);
    if (rc < 0)
        atomic_fetch_add_explicit(&q->refused, 1, memory_order_relaxed);
    return rc;
}

void api_pwhash_release(struct api_pwhash *q, uint32_t addr, int place)
{
    struct addr_count *c;

    pthread_mutex_lock(&q->lock);
    if (place == API_PWHASH_KNOWN) {
        q->known_inflight--;
    } else {
        c = addr_slot(q, addr);
        if (c != NULL && c->n > 0 && c->addr == addr)
            c->n--;
        q->inflight--;
        q->failing -= place == API_PWHASH_FAILING;
    }
    if (q->inflight + q->known_inflight == 0)
        pthread_cond_broadcast(&q->idle);
    pthread_mutex_unlock(&q->lock);
}

void api_pwhash_submit(struct api_pwhash *q, struct api_pwhash_job *job)
{
    job->next = NULL;
    job->queued_us = mono_us();
    pthread_mutex_lock(&q->lock);
    if (q->tail != NULL)
        q->tail->next = job;
    else
        q->head = job;
    q->tail = job;
    pthread_cond_signal(&q->work);
    pthread_mutex_unlock(&q->lock);
}

const char *api_pwhash_dummy(const struct api_pwhash *q)
{
    return q->dummy;
}

void api_pwhash_stats(struct api_pwhash *q, uint64_t *inflight, uint64_t *done,
                      uint64_t *refused, uint64_t *known)
{
    pthread_mutex_lock(&q->lock);
    *inflight = q->inflight + q->known_inflight;
    pthread_mutex_unlock(&q->lock);
    *done = atomic_load(&q->done);
    *refused = atomic_load(&q->refused);
    *known = atomic_load(&q->known_done);
}

/* ---- a request's hash (api_int.h) ---- */

/*
 * Runs on the hash thread: the job is done; the handler's second half goes
 * to a worker on the place its request still holds (work_run()).
 */
static void hash_done(struct api_pwhash_job *job)
{
    struct api_req *req = job->arg;

    api_work_submit(api_server_work(req->srv), &req->work);
}

struct api_pwhash_job *api_req_hash(struct api_req *req, void (*then)(struct api_req *),
                                    int known)
{
    struct api_pwhash_job *job;
    int place;

    if ((place = api_pwhash_reserve(api_server_pwhash(req->srv), req->client_ip,
                                    known)) < 0) {
        api_add_header(req, "Retry-After", "1");
        api_error(req, 503, "unavailable",
                  "too many passwords to check now; try again");
        return NULL;
    }
    job = calloc(1, sizeof(*job));
    if (job == NULL) {
        api_pwhash_release(api_server_pwhash(req->srv), req->client_ip, place);
        api_error(req, 503, "unavailable", "out of memory");
        return NULL;
    }
    job->done = hash_done;
    job->arg = req;
    job->addr = req->client_ip;
    job->place = place;
    req->job = job;
    req->then = then;
    return job;
}
