#include "core/loop.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define LOOP_MAX_EVENTS 256

struct loop {
    int epfd;
    struct loop_io wake_io;
    uint64_t now;
    bool stopping;
    struct loop_timer **heap; /* min-heap on key */
    uint32_t heap_len, heap_cap;
    struct loop_task *tasks;  /* LIFO is fine: tasks are independent */
    void (*on_wake)(void *arg);
    void *wake_arg;
};

static uint64_t loop_clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void loop_on_wake_fd(struct loop_io *io, uint32_t events)
{
    (void)events;
    struct loop *loop = container_of(io, struct loop, wake_io);
    uint64_t v;
    while (read(io->fd, &v, sizeof v) > 0) {
    }
    if (loop->on_wake)
        loop->on_wake(loop->wake_arg);
}

struct loop *loop_new(void)
{
    struct loop *loop = calloc(1, sizeof *loop);
    if (!loop)
        return NULL;
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    loop->wake_io.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    loop->wake_io.on_event = loop_on_wake_fd;
    loop->now = loop_clock_ms();
    if (loop->epfd < 0 || loop->wake_io.fd < 0 || loop_add_reader(loop, &loop->wake_io) < 0) {
        loop_free(loop);
        return NULL;
    }
    return loop;
}

void loop_free(struct loop *loop)
{
    if (!loop)
        return;
    if (loop->epfd >= 0)
        close(loop->epfd);
    if (loop->wake_io.fd >= 0)
        close(loop->wake_io.fd);
    free(loop->heap);
    free(loop);
}

int loop_add(struct loop *loop, struct loop_io *io)
{
    struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = io };
    return epoll_ctl(loop->epfd, EPOLL_CTL_ADD, io->fd, &ev);
}

int loop_add_reader(struct loop *loop, struct loop_io *io)
{
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = io };
    return epoll_ctl(loop->epfd, EPOLL_CTL_ADD, io->fd, &ev);
}

void loop_del(struct loop *loop, struct loop_io *io)
{
    epoll_ctl(loop->epfd, EPOLL_CTL_DEL, io->fd, NULL);
}

uint64_t loop_now(const struct loop *loop) { return loop->now; }

/* --- timer heap ------------------------------------------------------------------------- */

static void loop_heap_set(struct loop *loop, uint32_t i, struct loop_timer *t)
{
    loop->heap[i] = t;
    t->slot = i + 1;
}

static void loop_heap_up(struct loop *loop, uint32_t i)
{
    struct loop_timer *t = loop->heap[i];
    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (loop->heap[parent]->key <= t->key)
            break;
        loop_heap_set(loop, i, loop->heap[parent]);
        i = parent;
    }
    loop_heap_set(loop, i, t);
}

static void loop_heap_down(struct loop *loop, uint32_t i)
{
    struct loop_timer *t = loop->heap[i];
    for (;;) {
        uint32_t child = 2 * i + 1;
        if (child >= loop->heap_len)
            break;
        if (child + 1 < loop->heap_len && loop->heap[child + 1]->key < loop->heap[child]->key)
            child++;
        if (t->key <= loop->heap[child]->key)
            break;
        loop_heap_set(loop, i, loop->heap[child]);
        i = child;
    }
    loop_heap_set(loop, i, t);
}

static void loop_heap_remove(struct loop *loop, struct loop_timer *t)
{
    uint32_t i = t->slot - 1;
    struct loop_timer *last = loop->heap[--loop->heap_len];
    t->slot = 0;
    if (last == t)
        return;
    loop_heap_set(loop, i, last);
    loop_heap_up(loop, i);
    loop_heap_down(loop, last->slot - 1);
}

static void loop_heap_push(struct loop *loop, struct loop_timer *t)
{
    if (loop->heap_len == loop->heap_cap) {
        uint32_t cap = loop->heap_cap ? loop->heap_cap * 2 : 256;
        struct loop_timer **heap = realloc(loop->heap, cap * sizeof *heap);
        if (!heap)
            abort(); /* a loop that cannot keep deadlines cannot keep its promises */
        loop->heap = heap;
        loop->heap_cap = cap;
    }
    t->key = t->deadline;
    loop_heap_set(loop, loop->heap_len++, t);
    loop_heap_up(loop, loop->heap_len - 1);
}

void loop_timer_after(struct loop *loop, struct loop_timer *t, uint64_t ms)
{
    uint64_t deadline = loop->now + (ms ? ms : 1);
    t->deadline = deadline;
    if (t->slot && t->key <= deadline)
        return; /* later than its heap position: fixed up lazily when it surfaces */
    if (t->slot)
        loop_heap_remove(loop, t);
    loop_heap_push(loop, t);
}

void loop_timer_stop(struct loop *loop, struct loop_timer *t)
{
    t->deadline = 0;
    if (t->slot)
        loop_heap_remove(loop, t);
}

static void loop_run_timers(struct loop *loop)
{
    while (loop->heap_len && loop->heap[0]->key <= loop->now) {
        struct loop_timer *t = loop->heap[0];
        loop_heap_remove(loop, t);
        if (t->deadline != t->key) {
            loop_heap_push(loop, t); /* extended since it was pushed: take its real place */
            continue;
        }
        t->deadline = 0;
        t->on_fire(t);
    }
}

static int loop_next_timeout(const struct loop *loop)
{
    if (loop->tasks)
        return 0;
    if (!loop->heap_len)
        return 1000;
    uint64_t key = loop->heap[0]->key;
    if (key <= loop->now)
        return 0;
    uint64_t wait = key - loop->now;
    return wait > 1000 ? 1000 : (int)wait;
}

/* --- tasks ------------------------------------------------------------------------------ */

void loop_defer(struct loop *loop, struct loop_task *task)
{
    if (task->queued)
        return;
    task->queued = true;
    task->next = loop->tasks;
    loop->tasks = task;
}

void loop_cancel(struct loop *loop, struct loop_task *task)
{
    if (!task->queued)
        return;
    for (struct loop_task **p = &loop->tasks; *p; p = &(*p)->next) {
        if (*p == task) {
            *p = task->next;
            break;
        }
    }
    task->queued = false;
}

static void loop_run_tasks(struct loop *loop)
{
    while (loop->tasks) {
        struct loop_task *task = loop->tasks;
        loop->tasks = task->next;
        task->queued = false;
        task->run(task);
    }
}

void loop_run(struct loop *loop, void (*on_wake)(void *arg), void *arg)
{
    struct epoll_event events[LOOP_MAX_EVENTS];
    loop->on_wake = on_wake;
    loop->wake_arg = arg;
    while (!loop->stopping) {
        int n = epoll_wait(loop->epfd, events, LOOP_MAX_EVENTS, loop_next_timeout(loop));
        if (n < 0 && errno != EINTR)
            break;
        loop->now = loop_clock_ms();
        for (int i = 0; i < n; i++) {
            struct loop_io *io = events[i].data.ptr;
            io->on_event(io, events[i].events);
        }
        loop_run_tasks(loop);
        loop_run_timers(loop);
        loop_run_tasks(loop);
    }
}

void loop_stop(struct loop *loop) { loop->stopping = true; }

void loop_flush_tasks(struct loop *loop) { loop_run_tasks(loop); }

void loop_wake(struct loop *loop)
{
    uint64_t one = 1;
    ssize_t r = write(loop->wake_io.fd, &one, sizeof one);
    (void)r;
}
