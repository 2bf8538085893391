/* buf: fixed-size I/O buffers recycled through a per-thread free list.
 *
 * A connection takes a buffer when it has bytes to hold and gives it back as soon as it is
 * empty, so an idle connection holds none (DESIGN: idle costs nothing). */
#ifndef PORTERO_CORE_BUF_H
#define PORTERO_CORE_BUF_H

#include <stdint.h>
#include <stddef.h>

#define BUF_SIZE (32 * 1024)

struct buf {
    uint32_t rpos;          /* first unread byte */
    uint32_t wpos;          /* one past the last written byte */
    uint32_t cap;           /* BUF_SIZE, or more for a grown buffer (see buf_grow) */
    struct buf *next_free;  /* private: free-list link */
    char data[];
};

/* An empty buffer from this thread's free list or the heap; NULL if memory is exhausted. */
struct buf *buf_get(void);
/* Returns B (may be NULL) to this thread's free list (bounded; the rest goes back to the heap). */
void buf_put(struct buf *b);
/* Frees this thread's free list (at thread exit, so leak checkers see nothing). */
void buf_drain_free_list(void);
/* A buffer of capacity CAP holding B's unread bytes (for a request head larger than BUF_SIZE);
 * B is given back. Returns NULL (B untouched) if memory is exhausted. */
struct buf *buf_grow(struct buf *b, uint32_t cap);

static inline uint32_t buf_len(const struct buf *b) { return b->wpos - b->rpos; }
static inline uint32_t buf_space(const struct buf *b) { return b->cap - b->wpos; }
static inline char *buf_rptr(struct buf *b) { return b->data + b->rpos; }
static inline char *buf_wptr(struct buf *b) { return b->data + b->wpos; }
/* Drops N read bytes; an emptied buffer rewinds so its whole capacity is writable again. */
void buf_consume(struct buf *b, uint32_t n);
/* Moves unread bytes to the front so that the tail has room to read into. */
void buf_compact(struct buf *b);

#endif
