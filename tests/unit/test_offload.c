/* Unit tests of the offload pool: work runs off the loop's thread, done runs on it exactly once
 * (cancelled jobs included), a saturated pool refuses, and freeing an inbox waits for its jobs. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "core/offload.h"
#include "unit.h"

struct job {
    struct offload_job job;
    pthread_t worked_on;
    int value, result;
    int *done_count, *cancelled_count;
    struct loop *loop;
    int stop_after;
};

static void sleep_ms(int ms)
{
    struct timespec ts = { 0, ms * 1000000L };
    nanosleep(&ts, NULL);
}

static void work_square(struct offload_job *j)
{
    struct job *x = container_of(j, struct job, job);
    x->worked_on = pthread_self();
    sleep_ms(5); /* long enough for jobs to overlap */
    x->result = x->value * x->value;
}

static void done_count(struct offload_job *j)
{
    struct job *x = container_of(j, struct job, job);
    if (j->cancelled)
        (*x->cancelled_count)++;
    else
        (*x->done_count)++;
    if (*x->done_count + *x->cancelled_count == x->stop_after)
        loop_stop(x->loop);
}

static struct loop_timer guard;

static struct loop *guard_loop;
static void guard_stop(struct loop_timer *t)
{
    (void)t;
    loop_stop(guard_loop);
}

UNIT_TEST(jobs_run_off_the_loop_and_come_back)
{
    struct loop *loop = loop_new();
    struct offload_inbox *in = offload_inbox_new(loop);
    CHECK(in != NULL);
    int done = 0, cancelled = 0;
    struct job jobs[10];
    for (int i = 0; i < 10; i++) {
        jobs[i] = (struct job){ .job = { .work = work_square, .done = done_count }, .value = i,
                                .done_count = &done, .cancelled_count = &cancelled, .loop = loop,
                                .stop_after = 10 };
        CHECK_EQ_INT(offload_submit(in, &jobs[i].job), 0);
    }
    offload_cancel(&jobs[3].job); /* still runs, but its done sees the flag */
    guard_loop = loop;
    guard.on_fire = guard_stop;
    loop_timer_after(loop, &guard, 5000);
    loop_run(loop, NULL, NULL);
    CHECK_EQ_INT(done, 9);
    CHECK_EQ_INT(cancelled, 1);
    for (int i = 0; i < 10; i++) {
        CHECK_EQ_INT(jobs[i].result, i * i);
        CHECK(!pthread_equal(jobs[i].worked_on, pthread_self()));
    }
    loop_timer_stop(loop, &guard);
    offload_inbox_free(in);
    loop_free(loop);
}

UNIT_TEST(freeing_the_inbox_waits_and_delivers_cancelled)
{
    struct loop *loop = loop_new();
    struct offload_inbox *in = offload_inbox_new(loop);
    int done = 0, cancelled = 0;
    struct job jobs[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (struct job){ .job = { .work = work_square, .done = done_count }, .value = i + 1,
                                .done_count = &done, .cancelled_count = &cancelled, .loop = loop,
                                .stop_after = 100 };
        CHECK_EQ_INT(offload_submit(in, &jobs[i].job), 0);
        offload_cancel(&jobs[i].job); /* the owners are gone */
    }
    offload_inbox_free(in); /* must not return while a pool thread may still deliver */
    CHECK_EQ_INT(cancelled, 4);
    CHECK_EQ_INT(done, 0);
    for (int i = 0; i < 4; i++)
        CHECK_EQ_INT(jobs[i].result, (i + 1) * (i + 1));
    loop_free(loop);
}

static void work_slow(struct offload_job *j)
{
    (void)j;
    sleep_ms(5);
}

UNIT_TEST(a_saturated_pool_refuses)
{
    struct loop *loop = loop_new();
    struct offload_inbox *in = offload_inbox_new(loop);
    int done = 0, cancelled = 0, refused = 0, n = OFFLOAD_MAX_QUEUED + OFFLOAD_THREADS + 8;
    struct job *jobs = calloc((size_t)n, sizeof *jobs);
    for (int i = 0; i < n; i++) {
        jobs[i] = (struct job){ .job = { .work = work_slow, .done = done_count },
                                .done_count = &done, .cancelled_count = &cancelled, .loop = loop,
                                .stop_after = -1 };
        if (offload_submit(in, &jobs[i].job) < 0)
            refused++;
        else
            offload_cancel(&jobs[i].job);
    }
    CHECK(refused >= 1);
    CHECK(refused <= OFFLOAD_THREADS + 8);
    offload_inbox_free(in);
    CHECK_EQ_INT(cancelled, n - refused);
    free(jobs);
    loop_free(loop);
}

UNIT_MAIN()
