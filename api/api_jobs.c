/*
 * api_jobs.c: the API server's background work (its settler and the
 * settlements it runs), owned by the server that started it.
 *
 * Each job is a thread in a slot of its owner, never detached: a finished
 * job's thread is joined by the next start (which reuses its slot) or by
 * api_jobs_destroy(), which first asks every running job to stop and then
 * joins it. So when the server is gone no job of it runs any more, and
 * the router it borrowed can be freed; two servers in one process each own
 * their jobs and stop only their own. A job's sleep ends early on a stop
 * or a kick (work to look at: a result was posted).
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "api/api_int.h"

#define JOBS_MAX 64 /* jobs at once: the settler and the settlements it runs */

enum job_state { JOB_FREE, JOB_RUNNING, JOB_DONE };

struct api_job {
    struct api_jobs *owner; /* ref */
    pthread_t thread;
    enum job_state state; /* under owner->lock */
    uint64_t key;         /* set before the thread starts, then read-only */
    api_job_fn fn;
    void *arg; /* ref */
};

struct api_jobs {
    pthread_mutex_t lock;
    pthread_cond_t wake; /* broadcast on stop and kick: sleeping jobs wake */
    uint32_t nice;       /* added to each job thread's nice value, read-only */
    atomic_int stopping; /* written under lock, read by jobs between steps */
    uint64_t kicks;      /* under lock: a sleep ends when it changes */
    struct api_job job[JOBS_MAX];
};

int api_jobs_create(uint32_t nice, struct api_jobs **out)
{
    struct api_jobs *jobs = calloc(1, sizeof(*jobs));
    pthread_condattr_t attr;
    int rc;

    if (jobs == NULL)
        return -ENOMEM;
    jobs->nice = nice;
    /* Sleeps are timed on the monotonic clock: a clock step cannot stretch them. */
    if ((rc = pthread_condattr_init(&attr)) != 0)
        goto error;
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    rc = pthread_cond_init(&jobs->wake, &attr);
    pthread_condattr_destroy(&attr);
    if (rc != 0)
        goto error;
    if ((rc = pthread_mutex_init(&jobs->lock, NULL)) != 0) {
        pthread_cond_destroy(&jobs->wake);
        goto error;
    }
    *out = jobs;
    return 0;
error:
    free(jobs);
    return -rc;
}

void api_jobs_stop(struct api_jobs *jobs)
{
    if (jobs == NULL)
        return;
    pthread_mutex_lock(&jobs->lock);
    atomic_store(&jobs->stopping, 1);
    pthread_cond_broadcast(&jobs->wake);
    pthread_mutex_unlock(&jobs->lock);
}

void api_jobs_destroy(struct api_jobs *jobs)
{
    pthread_t threads[JOBS_MAX];
    int n = 0;

    if (jobs == NULL)
        return;
    pthread_mutex_lock(&jobs->lock);
    atomic_store(&jobs->stopping, 1);
    pthread_cond_broadcast(&jobs->wake);
    for (int i = 0; i < JOBS_MAX; i++)
        if (jobs->job[i].state != JOB_FREE)
            threads[n++] = jobs->job[i].thread;
    pthread_mutex_unlock(&jobs->lock);
    /* Outside the lock: a job takes it to say it is done. */
    for (int i = 0; i < n; i++)
        pthread_join(threads[i], NULL);
    pthread_cond_destroy(&jobs->wake);
    pthread_mutex_destroy(&jobs->lock);
    free(jobs);
}

/*
 * Lowers the calling thread's priority by nice (Linux keeps a nice value per
 * thread, and the threads this one starts inherit it): where the server's
 * threads and the databases share CPUs, a settlement's or a recomputation's
 * threads, and the password hashes, then give way to the event loops and
 * workers. Raising it back is not allowed without privileges, which these
 * threads never need.
 */
void api_thread_nice(uint32_t nice)
{
    id_t tid = (id_t)syscall(SYS_gettid);
    int cur;

    if (nice == 0)
        return;
    errno = 0;
    cur = getpriority(PRIO_PROCESS, tid);
    if (cur == -1 && errno != 0)
        return;
    cur += (int)nice;
    if (setpriority(PRIO_PROCESS, tid, cur > 19 ? 19 : cur) < 0 && errno != EACCES)
        api_log("thread: cannot lower its priority: %s", strerror(errno));
}

static void *job_main(void *p)
{
    struct api_job *job = p;

    pthread_setname_np(pthread_self(), "bc-job"); /* and the threads it starts */
    api_thread_nice(job->owner->nice);
    job->fn(job, job->key, job->arg);
    pthread_mutex_lock(&job->owner->lock);
    job->state = JOB_DONE;
    pthread_mutex_unlock(&job->owner->lock);
    return NULL;
}

int api_jobs_start(struct api_jobs *jobs, uint64_t key, api_job_fn fn, void *arg)
{
    struct api_job *slot = NULL;
    int rc = 0;

    pthread_mutex_lock(&jobs->lock);
    if (atomic_load(&jobs->stopping))
        rc = -ECANCELED;
    for (int i = 0; i < JOBS_MAX && rc == 0; i++) {
        struct api_job *j = &jobs->job[i];
        /* A done job has left the lock and is returning: this join is short. */
        if (j->state == JOB_DONE) {
            pthread_join(j->thread, NULL);
            j->state = JOB_FREE;
        }
        if (j->state == JOB_RUNNING && j->key == key)
            rc = BC_EEXISTS;
        else if (j->state == JOB_FREE && slot == NULL)
            slot = j;
    }
    if (rc == 0 && slot == NULL)
        rc = -EAGAIN;
    if (rc == 0) {
        slot->owner = jobs;
        slot->state = JOB_RUNNING;
        slot->key = key;
        slot->fn = fn;
        slot->arg = arg;
        rc = -pthread_create(&slot->thread, NULL, job_main, slot);
        if (rc < 0)
            slot->state = JOB_FREE;
    }
    pthread_mutex_unlock(&jobs->lock);
    return rc;
}

int api_jobs_running(struct api_jobs *jobs, uint64_t key)
{
    int running = 0;

    pthread_mutex_lock(&jobs->lock);
    for (int i = 0; i < JOBS_MAX; i++)
        if (jobs->job[i].state == JOB_RUNNING && jobs->job[i].key == key)
            running = 1;
    pthread_mutex_unlock(&jobs->lock);
    return running;
}

int api_job_stopping(struct api_job *job)
{
    return atomic_load(&job->owner->stopping);
}

void api_jobs_kick(struct api_jobs *jobs)
{
    pthread_mutex_lock(&jobs->lock);
    jobs->kicks++;
    pthread_cond_broadcast(&jobs->wake);
    pthread_mutex_unlock(&jobs->lock);
}

void api_deadline_ms(struct timespec *t, clockid_t clock, uint32_t ms)
{
    clock_gettime(clock, t);
    t->tv_sec += ms / 1000;
    t->tv_nsec += (long)(ms % 1000) * 1000000;
    if (t->tv_nsec >= 1000000000) {
        t->tv_sec++;
        t->tv_nsec -= 1000000000;
    }
}

void api_job_sleep(struct api_job *job, uint32_t ms)
{
    struct api_jobs *jobs = job->owner;
    struct timespec until;
    uint64_t kicks;

    api_deadline_ms(&until, CLOCK_MONOTONIC, ms);
    pthread_mutex_lock(&jobs->lock);
    /* Both are set under the lock before the broadcast: no wake-up is lost. */
    kicks = jobs->kicks;
    while (!atomic_load(&jobs->stopping) && jobs->kicks == kicks &&
           pthread_cond_timedwait(&jobs->wake, &jobs->lock, &until) != ETIMEDOUT)
        ;
    pthread_mutex_unlock(&jobs->lock);
}
