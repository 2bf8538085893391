/* loop: one event loop per thread — edge-triggered epoll, one timer heap for every deadline,
 * deferred tasks, and an eventfd through which other threads wake it.
 *
 * Nothing here is thread-safe except loop_wake(): a loop is owned by the thread running it. */
#ifndef PORTERO_CORE_LOOP_H
#define PORTERO_CORE_LOOP_H

#include <stdbool.h>
#include <stdint.h>

struct loop;

/* A registered file descriptor. EVENTS passed to the callback are epoll bits. */
struct loop_io {
    int fd;
    void (*on_event)(struct loop_io *io, uint32_t events);
};

/* A deadline. Embedded in its owner; the owner finds itself with container_of. */
struct loop_timer {
    uint64_t deadline; /* ms on the loop clock; 0 = not armed */
    uint64_t key;      /* private: deadline the heap is ordered by (<= deadline) */
    uint32_t slot;     /* private: index in the heap + 1; 0 = not in the heap */
    void (*on_fire)(struct loop_timer *t);
};

/* Work to run once the current batch of events is processed (e.g. resume a stalled reader). */
struct loop_task {
    struct loop_task *next; /* private */
    bool queued;            /* private */
    void (*run)(struct loop_task *task);
};

#define container_of(ptr, type, member) ((type *)((char *)(ptr) - __builtin_offsetof(type, member)))

struct loop *loop_new(void);
void loop_free(struct loop *loop);

/* Registers IO for EPOLLIN | EPOLLOUT | EPOLLRDHUP, edge-triggered. Returns 0 or -1 (errno). */
int loop_add(struct loop *loop, struct loop_io *io);
/* Registers IO for EPOLLIN only, level-triggered (listening sockets, eventfds). */
int loop_add_reader(struct loop *loop, struct loop_io *io);
void loop_del(struct loop *loop, struct loop_io *io);

/* Milliseconds on a monotonic clock, refreshed once per loop iteration. */
uint64_t loop_now(const struct loop *loop);
/* Arms (or re-arms) T to fire at loop_now() + MS. Extending a deadline is O(1). */
void loop_timer_after(struct loop *loop, struct loop_timer *t, uint64_t ms);
void loop_timer_stop(struct loop *loop, struct loop_timer *t);

void loop_defer(struct loop *loop, struct loop_task *task);
/* Cancels a queued task (its owner is going away). */
void loop_cancel(struct loop *loop, struct loop_task *task);

/* Runs until loop_stop(). ON_WAKE is called in the loop's thread after loop_wake(). */
void loop_run(struct loop *loop, void (*on_wake)(void *arg), void *arg);
void loop_stop(struct loop *loop);
/* Runs the deferred tasks now (after loop_run returned, so that queued frees happen). */
void loop_flush_tasks(struct loop *loop);
/* Thread-safe: makes the loop call its ON_WAKE callback soon. */
void loop_wake(struct loop *loop);

#endif
