/*
 * api_jobs.h: the API server's background jobs (api_jobs.c), threads that
 * belong to an object (the server): started through it, at most one running
 * per key (a match id), and joined when it is destroyed. A job stops early
 * when asked: it polls api_job_stopping() between steps and sleeps only
 * through api_job_sleep(), which the stop request cuts short. Internal to
 * the API server, included by api_int.h.
 */
#ifndef API_JOBS_H
#define API_JOBS_H

#include <stdint.h>
#include <time.h>

struct api_jobs; /* opaque */
struct api_job;  /* opaque: one running job, handed to its function */
typedef void (*api_job_fn)(struct api_job *job, uint64_t key, void *arg);
/*
 * 0 or -errno. Each job's thread adds nice to its nice value before it runs
 * (0: none); the threads it starts inherit it.
 */
int api_jobs_create(uint32_t nice, struct api_jobs **out);
/*
 * Adds nice to the calling thread's nice value (at most 19; 0: nothing),
 * for threads that give way to the event loops and workers where they share
 * CPUs: the jobs' and the password hashes'.
 */
void api_thread_nice(uint32_t nice);
/*
 * Asks every job to stop, joins them all (as long as their current step
 * takes), then frees jobs. Accepts NULL. Starts racing it get -ECANCELED;
 * none may come after it (the server stops taking requests first).
 */
void api_jobs_destroy(struct api_jobs *jobs);
/*
 * Asks every job to stop (as destroy does) without waiting for them: a
 * settlement stops between batches and releases its lease. Accepts NULL.
 */
void api_jobs_stop(struct api_jobs *jobs);
/*
 * Runs fn(job, key, arg) on a thread of its own; arg is borrowed and must
 * outlive the job (the server does). Returns 0; BC_EEXISTS if a job with this
 * key is running; -EAGAIN if too many are; -ECANCELED while stopping; or
 * -errno from pthread_create. Reaps finished jobs; takes the jobs' lock.
 */
int api_jobs_start(struct api_jobs *jobs, uint64_t key, api_job_fn fn, void *arg);
/* Whether a job with this key is running (for tests and logs). */
int api_jobs_running(struct api_jobs *jobs, uint64_t key);
/* Whether the job's owner asked it to stop. */
int api_job_stopping(struct api_job *job);
/*
 * Sleeps up to ms milliseconds; returns at once when the job is asked to
 * stop or the jobs are kicked. Threads a job started may sleep on it too.
 */
void api_job_sleep(struct api_job *job, uint32_t ms);
/* *t = now on clock + ms: a deadline for pthread_cond_timedwait(). */
void api_deadline_ms(struct timespec *t, clockid_t clock, uint32_t ms);
/* Cuts short every sleep of the jobs' threads (new work to look at). */
void api_jobs_kick(struct api_jobs *jobs);

#endif
