/* offload: runs slow, blocking work (a bcrypt check costs ~60 ms) on a small process-wide pool of
 * threads, and hands the result back to the event loop that asked, so that a worker's loop never
 * waits for it. Each loop owns one inbox (an eventfd in its epoll set) where finished jobs land.
 *
 * A job is embedded in its owner's allocation. Its `done` runs exactly once, in the loop thread
 * of the inbox it was submitted to — also when it was cancelled (then `cancelled` is true and
 * `done` only has to free it). */
#ifndef PORTERO_CORE_OFFLOAD_H
#define PORTERO_CORE_OFFLOAD_H

#include <stdbool.h>

#include "core/loop.h"

struct offload_inbox;

struct offload_job {
    void (*work)(struct offload_job *job);  /* on a pool thread: touch only the job's own data */
    void (*done)(struct offload_job *job);  /* in the submitting loop's thread */
    bool cancelled;                         /* set by offload_cancel, read by done */
    /* private */
    struct offload_inbox *inbox;
    struct offload_job *next;
};

/* Pool size and queue bound: past OFFLOAD_MAX_QUEUED waiting jobs, submissions are refused. */
#define OFFLOAD_THREADS 2
#define OFFLOAD_MAX_QUEUED 256

struct offload_inbox *offload_inbox_new(struct loop *loop);
/* Waits for the inbox's jobs still on the pool, then calls `done` (cancelled) for every job not
 * yet delivered, and frees the inbox. Call from its loop's thread once its owners are gone. */
void offload_inbox_free(struct offload_inbox *in);

/* Queues JOB. Returns 0, or -1 when the pool is saturated or could not start (the caller then
 * answers without the work: e.g. 503). */
int offload_submit(struct offload_inbox *in, struct offload_job *job);
/* The owner goes away: `done` will still run (to free the job) with `cancelled` set. */
static inline void offload_cancel(struct offload_job *job) { job->cancelled = true; }

#endif
