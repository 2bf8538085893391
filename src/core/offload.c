#include "core/offload.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct offload_inbox {
    struct loop_io io;              /* the eventfd the pool writes when a job is finished */
    struct loop *loop;
    pthread_mutex_t lock;
    pthread_cond_t idle;            /* signalled when in_flight drops to 0 */
    struct offload_job *done_head, *done_tail; /* finished, not yet delivered */
    unsigned in_flight;             /* submitted and not yet on the done list */
};

/* The pool: one queue, OFFLOAD_THREADS threads started on first use, never stopped (they hold
 * nothing between jobs). */
static pthread_mutex_t offload_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t offload_work = PTHREAD_COND_INITIALIZER;
static struct offload_job *offload_head, *offload_tail;
static unsigned offload_queued;
static pthread_once_t offload_once = PTHREAD_ONCE_INIT;
static bool offload_started;

static struct offload_job *offload_take(void)
{
    pthread_mutex_lock(&offload_lock);
    while (!offload_head)
        pthread_cond_wait(&offload_work, &offload_lock);
    struct offload_job *job = offload_head;
    offload_head = job->next;
    if (!offload_head)
        offload_tail = NULL;
    offload_queued--;
    pthread_mutex_unlock(&offload_lock);
    return job;
}

/* Hands JOB back. The eventfd is written under the inbox lock and in_flight dropped after it, so
 * that offload_inbox_free (which waits for in_flight 0) never races a write to a closed fd. */
static void offload_deliver(struct offload_job *job)
{
    struct offload_inbox *in = job->inbox;
    uint64_t one = 1;
    job->next = NULL;
    pthread_mutex_lock(&in->lock);
    if (in->done_tail)
        in->done_tail->next = job;
    else
        in->done_head = job;
    in->done_tail = job;
    if (write(in->io.fd, &one, sizeof one) < 0) {
        /* the counter cannot overflow here; the loop drains the list on its next wake anyway */
    }
    if (--in->in_flight == 0)
        pthread_cond_signal(&in->idle);
    pthread_mutex_unlock(&in->lock);
}

static void *offload_thread(void *arg)
{
    (void)arg;
    for (;;) {
        struct offload_job *job = offload_take();
        job->work(job);
        offload_deliver(job);
    }
    return NULL;
}

static void offload_start(void)
{
    for (int i = 0; i < OFFLOAD_THREADS; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, offload_thread, NULL) != 0)
            return;
        pthread_detach(t);
        offload_started = true;
    }
}

/* Delivers every finished job to its owner (the loop's thread). */
static void offload_on_event(struct loop_io *io, uint32_t events)
{
    (void)events;
    struct offload_inbox *in = container_of(io, struct offload_inbox, io);
    uint64_t count;
    if (read(in->io.fd, &count, sizeof count) < 0) {
        /* EAGAIN: another wake already took the count; the list is what matters */
    }
    pthread_mutex_lock(&in->lock);
    struct offload_job *job = in->done_head;
    in->done_head = in->done_tail = NULL;
    pthread_mutex_unlock(&in->lock);
    while (job) {
        struct offload_job *next = job->next;
        job->done(job);
        job = next;
    }
}

struct offload_inbox *offload_inbox_new(struct loop *loop)
{
    struct offload_inbox *in = calloc(1, sizeof *in);
    if (!in)
        return NULL;
    in->loop = loop;
    in->io.on_event = offload_on_event;
    in->io.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    pthread_mutex_init(&in->lock, NULL);
    pthread_cond_init(&in->idle, NULL);
    if (in->io.fd < 0 || loop_add_reader(loop, &in->io) < 0) {
        offload_inbox_free(in);
        return NULL;
    }
    return in;
}

void offload_inbox_free(struct offload_inbox *in)
{
    if (!in)
        return;
    pthread_mutex_lock(&in->lock);
    while (in->in_flight)
        pthread_cond_wait(&in->idle, &in->lock); /* a hash takes milliseconds: this is short */
    pthread_mutex_unlock(&in->lock);
    if (in->io.fd >= 0) {
        loop_del(in->loop, &in->io);
        offload_on_event(&in->io, 0); /* owners are gone: each done only frees its job */
        close(in->io.fd);
    }
    pthread_mutex_destroy(&in->lock);
    pthread_cond_destroy(&in->idle);
    free(in);
}

int offload_submit(struct offload_inbox *in, struct offload_job *job)
{
    pthread_once(&offload_once, offload_start);
    job->inbox = in;
    job->next = NULL;
    job->cancelled = false;
    pthread_mutex_lock(&offload_lock);
    if (!offload_started || offload_queued >= OFFLOAD_MAX_QUEUED) {
        pthread_mutex_unlock(&offload_lock);
        return -1;
    }
    pthread_mutex_lock(&in->lock);
    in->in_flight++;
    pthread_mutex_unlock(&in->lock);
    if (offload_tail)
        offload_tail->next = job;
    else
        offload_head = job;
    offload_tail = job;
    offload_queued++;
    pthread_cond_signal(&offload_work);
    pthread_mutex_unlock(&offload_lock);
    return 0;
}
