/* Unit tests of the event loop: timer heap order, lazy extension, stop, deferred tasks,
 * cross-thread wake-ups and edge-triggered I/O. Every test bounds loop_run with a timer that
 * calls loop_stop, so real waits stay in the tens of milliseconds. */
#include "unit.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/loop.h"

static struct loop *cur; /* the loop of the running test (callbacks find it here) */

/* --- a timer that records when it fired ------------------------------------------------- */

#define MAX_REC 1200

struct rec {
    struct loop_timer t;
    int id;
    uint64_t want;   /* deadline it should fire at (loop clock) */
    int fires;
    uint64_t fired_at;
    bool stopped;    /* the test stopped it before it fired */
};

static int order[MAX_REC * 2];
static int n_order;

static void rec_fire(struct loop_timer *t)
{
    struct rec *r = container_of(t, struct rec, t);
    r->fires++;
    r->fired_at = loop_now(cur);
    if (n_order < (int)(sizeof order / sizeof order[0]))
        order[n_order++] = r->id;
}

static void rec_init(struct rec *r, int id)
{
    memset(r, 0, sizeof *r);
    r->id = id;
    r->t.on_fire = rec_fire;
}

/* Arms R for MS milliseconds from now and remembers the deadline it must fire at. */
static void rec_arm(struct rec *r, uint64_t ms)
{
    loop_timer_after(cur, &r->t, ms);
    r->want = loop_now(cur) + (ms ? ms : 1);
}

/* --- the stopper bounding every run ----------------------------------------------------- */

static struct loop_timer stopper;
static bool stopper_fired;

static void stopper_fire(struct loop_timer *t)
{
    (void)t;
    stopper_fired = true;
    loop_stop(cur);
}

static void start(void)
{
    cur = loop_new();
    n_order = 0;
    stopper_fired = false;
    memset(&stopper, 0, sizeof stopper);
    stopper.on_fire = stopper_fire;
}

static void run_for(uint64_t ms)
{
    loop_timer_after(cur, &stopper, ms);
    loop_run(cur, NULL, NULL);
}

static void finish(void)
{
    loop_free(cur);
    cur = NULL;
}

/* ---------------------------------------------------------------------------------------- */

UNIT_TEST(test_loop_new_free)
{
    struct loop *l = loop_new();
    CHECK(l != NULL);
    CHECK(loop_now(l) > 0);
    loop_free(l);
    loop_free(NULL);
}

UNIT_TEST(test_timers_fire_in_deadline_order)
{
    start();
    struct rec r[3];
    for (int i = 0; i < 3; i++)
        rec_init(&r[i], i);
    rec_arm(&r[0], 30);
    rec_arm(&r[1], 10);
    rec_arm(&r[2], 20);
    run_for(50);
    CHECK(stopper_fired);
    CHECK_EQ_INT(n_order, 3);
    CHECK_EQ_INT(order[0], 1);
    CHECK_EQ_INT(order[1], 2);
    CHECK_EQ_INT(order[2], 0);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(r[i].fires, 1);
        CHECK(r[i].fired_at >= r[i].want);
        CHECK_EQ_INT(r[i].t.deadline, 0); /* disarmed once fired */
    }
    finish();
}

UNIT_TEST(test_timer_zero_ms_fires_next_iteration)
{
    start();
    struct rec r;
    rec_init(&r, 0);
    uint64_t t0 = loop_now(cur);
    rec_arm(&r, 0);
    CHECK_EQ_INT(r.t.deadline, t0 + 1);
    run_for(20);
    CHECK_EQ_INT(r.fires, 1);
    CHECK(r.fired_at >= t0 + 1);
    finish();
}

UNIT_TEST(test_timer_extend_fires_at_new_deadline)
{
    start();
    struct rec t, mark;
    rec_init(&t, 0);
    rec_init(&mark, 1);
    rec_arm(&t, 10);
    rec_arm(&t, 40); /* lazy extension: stays at its old heap position */
    CHECK_EQ_INT(t.t.deadline, t.want);
    rec_arm(&mark, 25);
    run_for(60);
    CHECK_EQ_INT(t.fires, 1);
    CHECK(t.fired_at >= t.want);
    CHECK_EQ_INT(n_order, 2);
    CHECK_EQ_INT(order[0], 1); /* the 25 ms mark fires before the extended timer */
    CHECK_EQ_INT(order[1], 0);
    finish();
}

UNIT_TEST(test_timer_extend_twice)
{
    start();
    struct rec t;
    rec_init(&t, 0);
    rec_arm(&t, 5);
    rec_arm(&t, 15);
    rec_arm(&t, 30);
    run_for(50);
    CHECK_EQ_INT(t.fires, 1);
    CHECK(t.fired_at >= t.want);
    finish();
}

/* When the loop wakes late, several timers are due in one batch; an extended timer must still
 * fire at the place of its new deadline, not of the heap slot it had before the extension. */
UNIT_TEST(test_timer_extended_keeps_order_when_loop_late)
{
    start();
    struct rec a, b;
    rec_init(&a, 0);
    rec_init(&b, 1);
    rec_arm(&a, 5);
    rec_arm(&a, 15); /* heap slot keyed at 5 ms, deadline 15 ms */
    rec_arm(&b, 10);
    struct timespec ts = { 0, 30 * 1000 * 1000 };
    nanosleep(&ts, NULL); /* both are overdue when the loop first looks */
    run_for(40);
    CHECK_EQ_INT(a.fires, 1);
    CHECK_EQ_INT(b.fires, 1);
    CHECK_EQ_INT(n_order, 2);
    CHECK_EQ_INT(order[0], 1); /* b (10 ms) before a (15 ms) */
    CHECK_EQ_INT(order[1], 0);
    finish();
}

/* A timer whose deadline is extended from another timer's callback, while the loop runs. */
static struct rec ext_target;
static void extend_fire(struct loop_timer *tm)
{
    rec_fire(tm);
    rec_arm(&ext_target, 30);
}

UNIT_TEST(test_timer_extend_while_running)
{
    start();
    struct rec ext;
    rec_init(&ext, 1);
    ext.t.on_fire = extend_fire;
    rec_init(&ext_target, 0);
    rec_arm(&ext_target, 15);
    rec_arm(&ext, 5);
    run_for(70);
    CHECK_EQ_INT(ext.fires, 1);
    CHECK_EQ_INT(ext_target.fires, 1);
    CHECK(ext_target.want >= ext.fired_at + 30);
    CHECK(ext_target.fired_at >= ext_target.want);
    finish();
}

UNIT_TEST(test_timer_rearm_earlier)
{
    start();
    struct rec t, mark;
    rec_init(&t, 0);
    rec_init(&mark, 1);
    rec_arm(&t, 60);
    rec_arm(&t, 10);
    rec_arm(&mark, 30);
    run_for(80);
    CHECK_EQ_INT(t.fires, 1);
    CHECK(t.fired_at >= t.want);
    CHECK_EQ_INT(n_order, 2);
    CHECK_EQ_INT(order[0], 0); /* before the 30 ms mark: not at the old 60 ms deadline */
    CHECK_EQ_INT(order[1], 1);
    finish();
}

UNIT_TEST(test_timer_stop_prevents_firing)
{
    start();
    struct rec a, b;
    rec_init(&a, 0);
    rec_init(&b, 1);
    rec_arm(&a, 10);
    rec_arm(&b, 20);
    loop_timer_stop(cur, &a.t);
    CHECK_EQ_INT(a.t.deadline, 0);
    CHECK_EQ_INT(a.t.slot, 0);
    loop_timer_stop(cur, &a.t); /* stopping twice is harmless */
    run_for(40);
    CHECK_EQ_INT(a.fires, 0);
    CHECK_EQ_INT(b.fires, 1);
    finish();
}

UNIT_TEST(test_timer_stop_never_armed)
{
    start();
    struct rec a;
    rec_init(&a, 0);
    loop_timer_stop(cur, &a.t);
    run_for(5);
    CHECK_EQ_INT(a.fires, 0);
    finish();
}

UNIT_TEST(test_timer_stop_after_extension)
{
    start();
    struct rec a, b;
    rec_init(&a, 0);
    rec_init(&b, 1);
    rec_arm(&a, 10);
    rec_arm(&a, 30); /* heap slot still keyed at 10 ms */
    rec_arm(&b, 5);
    loop_timer_stop(cur, &a.t);
    CHECK_EQ_INT(a.t.slot, 0);
    run_for(50);
    CHECK_EQ_INT(a.fires, 0);
    CHECK_EQ_INT(b.fires, 1);
    finish();
}

/* Stops a timer from a callback after its first heap slot surfaced and it was re-pushed. */
static struct rec stop_target;
static void stop_other_fire(struct loop_timer *tm)
{
    rec_fire(tm);
    loop_timer_stop(cur, &stop_target.t);
}

UNIT_TEST(test_timer_stop_after_extension_resurfaced)
{
    start();
    struct rec killer;
    rec_init(&stop_target, 0);
    rec_init(&killer, 1);
    killer.t.on_fire = stop_other_fire;
    rec_arm(&stop_target, 5);
    rec_arm(&stop_target, 40); /* surfaces at 5 ms, re-pushed for 40 ms */
    rec_arm(&killer, 20);
    run_for(60);
    CHECK_EQ_INT(killer.fires, 1);
    CHECK_EQ_INT(stop_target.fires, 0);
    finish();
}

/* A timer that re-arms itself from its own callback fires again. */
static void periodic_fire(struct loop_timer *tm)
{
    struct rec *r = container_of(tm, struct rec, t);
    rec_fire(tm);
    if (r->fires < 3)
        rec_arm(r, 5);
}

UNIT_TEST(test_timer_rearm_from_callback)
{
    start();
    struct rec p;
    rec_init(&p, 0);
    p.t.on_fire = periodic_fire;
    rec_arm(&p, 5);
    run_for(50);
    CHECK_EQ_INT(p.fires, 3);
    finish();
}

/* --- 1000 random timers ----------------------------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 11);
}

#define N_RANDOM 1000
static struct rec rnd[N_RANDOM];

/* Every 7th timer, when it fires, stops a random other one (if it has not fired yet). */
static void random_fire(struct loop_timer *tm)
{
    struct rec *r = container_of(tm, struct rec, t);
    rec_fire(tm);
    if (r->id % 7 == 0) {
        struct rec *victim = &rnd[rng() % N_RANDOM];
        if (victim != r && victim->fires == 0 && !victim->stopped)
            victim->stopped = true;
        loop_timer_stop(cur, &victim->t); /* also a no-op on a fired (or firing) timer */
    }
}

UNIT_TEST(test_timers_random_order_and_stops)
{
    start();
    for (int i = 0; i < N_RANDOM; i++) {
        rec_init(&rnd[i], i);
        rnd[i].t.on_fire = random_fire;
        rec_arm(&rnd[i], rng() % 40);
    }
    /* re-arm a third later (lazy extension) or earlier, and stop a quarter */
    for (int i = 0; i < N_RANDOM; i++) {
        uint32_t k = rng() % 12;
        if (k < 4)
            rec_arm(&rnd[i], rng() % 60);
        if (k >= 9) {
            loop_timer_stop(cur, &rnd[i].t);
            rnd[i].stopped = true;
        }
    }
    run_for(90);
    CHECK(stopper_fired);
    int expected = 0, bad_fires = 0, late = 0;
    for (int i = 0; i < N_RANDOM; i++) {
        if (rnd[i].stopped) {
            bad_fires += rnd[i].fires != 0;
        } else {
            expected++;
            bad_fires += rnd[i].fires != 1;
            late += rnd[i].fires == 1 && rnd[i].fired_at < rnd[i].want;
        }
    }
    CHECK(expected > N_RANDOM / 2);
    CHECK_EQ_INT(n_order, expected);
    CHECK_EQ_INT(bad_fires, 0);
    CHECK_EQ_INT(late, 0);
    int out_of_order = 0;
    for (int i = 1; i < n_order; i++)
        out_of_order += rnd[order[i]].want < rnd[order[i - 1]].want;
    CHECK_EQ_INT(out_of_order, 0);
    finish();
}

/* --- deferred tasks --------------------------------------------------------------------- */

struct counted_task {
    struct loop_task task;
    int runs;
};

static void counted_run(struct loop_task *t)
{
    container_of(t, struct counted_task, task)->runs++;
}

UNIT_TEST(test_defer_twice_runs_once)
{
    start();
    struct counted_task a = { .task.run = counted_run };
    loop_defer(cur, &a.task);
    loop_defer(cur, &a.task);
    run_for(10);
    CHECK_EQ_INT(a.runs, 1);
    CHECK(!a.task.queued);
    finish();
}

UNIT_TEST(test_cancel_removes_one)
{
    start();
    struct counted_task a = { .task.run = counted_run };
    struct counted_task b = { .task.run = counted_run };
    struct counted_task c = { .task.run = counted_run };
    loop_defer(cur, &a.task);
    loop_defer(cur, &b.task);
    loop_defer(cur, &c.task);
    loop_cancel(cur, &b.task); /* from the middle of the queue */
    CHECK(!b.task.queued);
    loop_cancel(cur, &b.task); /* cancelling twice is harmless */
    run_for(10);
    CHECK_EQ_INT(a.runs, 1);
    CHECK_EQ_INT(b.runs, 0);
    CHECK_EQ_INT(c.runs, 1);
    finish();
}

UNIT_TEST(test_cancel_then_defer_again)
{
    start();
    struct counted_task a = { .task.run = counted_run };
    loop_defer(cur, &a.task);
    loop_cancel(cur, &a.task);
    loop_defer(cur, &a.task);
    run_for(10);
    CHECK_EQ_INT(a.runs, 1);
    finish();
}

/* A task deferred by a timer runs before the loop goes back to sleep. */
static struct counted_task timer_task = { .task.run = counted_run };
static bool task_ran_before_stopper;
static void defer_from_timer(struct loop_timer *tm)
{
    rec_fire(tm);
    loop_defer(cur, &timer_task.task);
}
static void stopper_checks_task(struct loop_timer *tm)
{
    task_ran_before_stopper = timer_task.runs == 1;
    stopper_fire(tm);
}

UNIT_TEST(test_task_deferred_by_timer_runs_same_iteration)
{
    start();
    timer_task.runs = 0;
    task_ran_before_stopper = false;
    struct rec r;
    rec_init(&r, 0);
    r.t.on_fire = defer_from_timer;
    rec_arm(&r, 5);
    stopper.on_fire = stopper_checks_task;
    run_for(30);
    CHECK_EQ_INT(r.fires, 1);
    CHECK(task_ran_before_stopper);
    CHECK_EQ_INT(timer_task.runs, 1);
    finish();
}

UNIT_TEST(test_flush_tasks_after_run)
{
    start();
    run_for(1);
    struct counted_task a = { .task.run = counted_run };
    loop_defer(cur, &a.task);
    loop_defer(cur, &a.task);
    loop_flush_tasks(cur);
    CHECK_EQ_INT(a.runs, 1);
    loop_flush_tasks(cur);
    CHECK_EQ_INT(a.runs, 1);
    finish();
}

/* --- loop_wake from another thread ------------------------------------------------------ */

static int wake_calls;
static void *wake_arg_seen;

static void on_wake(void *arg)
{
    wake_calls++;
    wake_arg_seen = arg;
    loop_stop(cur);
}

static void *waker_thread(void *arg)
{
    struct timespec ts = { 0, 10 * 1000 * 1000 };
    nanosleep(&ts, NULL);
    loop_wake(arg);
    return NULL;
}

UNIT_TEST(test_wake_from_other_thread)
{
    start();
    wake_calls = 0;
    wake_arg_seen = NULL;
    int token = 42;
    pthread_t th;
    CHECK_EQ_INT(pthread_create(&th, NULL, waker_thread, cur), 0);
    loop_timer_after(cur, &stopper, 2000); /* safety net only */
    loop_run(cur, on_wake, &token);
    pthread_join(th, NULL);
    CHECK(!stopper_fired);
    CHECK(wake_calls >= 1);
    CHECK(wake_arg_seen == &token);
    finish();
}

/* --- I/O -------------------------------------------------------------------------------- */

struct io_rec {
    struct loop_io io;
    uint32_t all_events;
    int n_in;
    char got[16];
    ssize_t got_len;
    bool saw_rdhup;
};

static void io_on_event(struct loop_io *io, uint32_t events)
{
    struct io_rec *r = container_of(io, struct io_rec, io);
    r->all_events |= events;
    if (events & EPOLLIN) {
        r->n_in++;
        ssize_t n = read(io->fd, r->got, sizeof r->got);
        if (n > 0)
            r->got_len = n;
    }
    if (events & EPOLLRDHUP)
        r->saw_rdhup = true;
    if (r->got_len > 0 && (events & EPOLLIN))
        loop_stop(cur);
}

static int peer_fd;
static void peer_write_fire(struct loop_timer *tm)
{
    (void)tm;
    ssize_t w = write(peer_fd, "ping", 4);
    (void)w;
}

static int nb_socketpair(int sv[2])
{
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
        return -1;
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    fcntl(sv[1], F_SETFL, O_NONBLOCK);
    return 0;
}

UNIT_TEST(test_io_epollin_when_peer_writes)
{
    start();
    int sv[2];
    CHECK_EQ_INT(nb_socketpair(sv), 0);
    struct io_rec r = { .io = { .fd = sv[0], .on_event = io_on_event } };
    CHECK_EQ_INT(loop_add(cur, &r.io), 0);
    peer_fd = sv[1];
    struct loop_timer w = { .on_fire = peer_write_fire };
    loop_timer_after(cur, &w, 10);
    loop_timer_after(cur, &stopper, 1000); /* safety net only */
    loop_run(cur, NULL, NULL);
    CHECK(!stopper_fired);
    CHECK(r.all_events & EPOLLOUT); /* registered for writability too */
    CHECK(r.n_in >= 1);
    CHECK_EQ_INT(r.got_len, 4);
    CHECK(memcmp(r.got, "ping", 4) == 0);
    loop_del(cur, &r.io);
    close(sv[0]);
    close(sv[1]);
    finish();
}

static void peer_close_fire(struct loop_timer *tm)
{
    (void)tm;
    close(peer_fd);
    peer_fd = -1;
}

static void rdhup_on_event(struct loop_io *io, uint32_t events)
{
    struct io_rec *r = container_of(io, struct io_rec, io);
    r->all_events |= events;
    if (events & EPOLLRDHUP) {
        r->saw_rdhup = true;
        loop_stop(cur);
    }
}

UNIT_TEST(test_io_rdhup_when_peer_closes)
{
    start();
    int sv[2];
    CHECK_EQ_INT(nb_socketpair(sv), 0);
    struct io_rec r = { .io = { .fd = sv[0], .on_event = rdhup_on_event } };
    CHECK_EQ_INT(loop_add(cur, &r.io), 0);
    peer_fd = sv[1];
    struct loop_timer c = { .on_fire = peer_close_fire };
    loop_timer_after(cur, &c, 10);
    loop_timer_after(cur, &stopper, 1000);
    loop_run(cur, NULL, NULL);
    CHECK(!stopper_fired);
    CHECK(r.saw_rdhup);
    loop_del(cur, &r.io);
    close(sv[0]);
    finish();
}

UNIT_TEST(test_io_deleted_gets_no_events)
{
    start();
    int sv[2];
    CHECK_EQ_INT(nb_socketpair(sv), 0);
    struct io_rec r = { .io = { .fd = sv[0], .on_event = io_on_event } };
    CHECK_EQ_INT(loop_add(cur, &r.io), 0);
    loop_del(cur, &r.io);
    peer_fd = sv[1];
    struct loop_timer w = { .on_fire = peer_write_fire };
    loop_timer_after(cur, &w, 5);
    run_for(30);
    CHECK(stopper_fired);
    CHECK_EQ_INT(r.all_events, 0);
    close(sv[0]);
    close(sv[1]);
    finish();
}

UNIT_MAIN()
