/*
 * api_pwhash.h: password hashes on a queue and threads of their own, off
 * the HTTP workers (api_pwhash.c). Internal to the API server, included by
 * api_int.h.
 */
#ifndef API_PWHASH_H
#define API_PWHASH_H

#include <stdint.h>

#define API_PWHASH_STRBYTES 128 /* >= crypto_pwhash_STRBYTES */
enum api_pwhash_op { API_PWHASH_HASH, API_PWHASH_VERIFY };
struct api_pwhash;     /* opaque: the queue and its threads */
struct api_pwhash_job; /* api_int.h: a request's job */

/*
 * Starts nthread hash threads over a queue of depth places (waiting or
 * running), at most per_addr of them for one client address, refusing a job
 * whose expected wait (jobs ahead / threads * a job's moving average time)
 * is over max_wait_ms; and known places more, for the logins of known
 * devices only (api_pwhash_reserve()). A plain job queued age_ms ago runs
 * before younger ones (api_pwhash_submit(); 0: never; the server's is
 * API_PWHASH_AGE_MS). The threads add nice to their nice value
 * (api_thread_nice()); hashes a random password for api_pwhash_dummy()
 * (~25 ms). 0 or -errno.
 */
#define API_PWHASH_AGE_MS 200
int api_pwhash_create(uint32_t nthread, uint32_t depth, uint32_t known,
                      uint32_t per_addr, uint32_t max_wait_ms, uint32_t age_ms,
                      uint32_t nice, struct api_pwhash **out);
/* Refuses new reservations and waits until every reserved job is done. */
void api_pwhash_drain(struct api_pwhash *q);
/* Drains, then joins the threads and frees q. Accepts NULL. */
void api_pwhash_destroy(struct api_pwhash *q);
/* The kinds of place in the queue (api_pwhash_reserve()). */
enum api_pwhash_place {
    API_PWHASH_PLAIN,  /* a place as any */
    API_PWHASH_KNOWN,  /* a known device's: its job runs first */
    API_PWHASH_FAILING /* of an address whose logins failed lately: runs last */
};
/*
 * A place in the queue for a client address (network order): its kind, or
 * -EAGAIN when full, the address has its share, the wait would be too long,
 * or draining. known: a login from a device its account has signed in from
 * (a device token, api_device_check()), which takes one of the known places
 * whatever the other places hold (API_PWHASH_KNOWN; its job runs before
 * every other queued job), or when they are all held, a place as others do.
 * An address with logins that failed lately (api_pwhash_failed()) gets an
 * API_PWHASH_FAILING place: its jobs run after the plain ones, and it never
 * takes the last quarter of the places, so that a flood of bad logins from
 * many addresses leaves room for other people's, which go first. Never
 * waits; takes the queue's lock.
 */
int api_pwhash_reserve(struct api_pwhash *q, uint32_t addr, int known);
/* Gives the place back once its job is done (or was never submitted). */
void api_pwhash_release(struct api_pwhash *q, uint32_t addr, int place);
/*
 * A login from addr failed (a wrong password, an unknown e-mail): counted
 * for the address, and forgotten over time (half of it every 10 s); from
 * 1.5 on (two failures within 10 s), its places are API_PWHASH_FAILING ones.
 */
void api_pwhash_failed(struct api_pwhash *q, uint32_t addr);
/*
 * Queues job on a place reserved for job->addr (job->place: its kind).
 * The hash threads take first the oldest job of a known device, then the
 * oldest plain job of the address with the fewest places held (a plain job
 * queued age_ms ago as one of an address with none), then the failing ones
 * the same way, so that one address's queued jobs never wait ahead of
 * another's, nor for ever behind a flood of other addresses' first jobs. A thread runs
 * it, wipes its password, and calls job->done(job) on that thread; the job is the
 * caller's again from then on, who releases the place.
 */
void api_pwhash_submit(struct api_pwhash *q, struct api_pwhash_job *job);
/* The hash of a random password: what unknown e-mails verify against. */
const char *api_pwhash_dummy(const struct api_pwhash *q);
/* Jobs reserved, queued or running; done; refused; done on known places. */
void api_pwhash_stats(struct api_pwhash *q, uint64_t *inflight, uint64_t *done,
                      uint64_t *refused, uint64_t *known);

#endif
