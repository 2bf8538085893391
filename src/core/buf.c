#include "core/buf.h"

#include <stdlib.h>
#include <string.h>

/* Enough to absorb bursts without returning memory to malloc on every exchange. */
#define BUF_FREE_MAX 256

static __thread struct buf *buf_free_list;
static __thread unsigned buf_free_count;

struct buf *buf_get(void)
{
    struct buf *b = buf_free_list;
    if (b) {
        buf_free_list = b->next_free;
        buf_free_count--;
    } else {
        b = malloc(sizeof *b + BUF_SIZE);
        if (!b)
            return NULL;
    }
    b->cap = BUF_SIZE;
    b->rpos = b->wpos = 0;
    b->next_free = NULL;
    return b;
}

void buf_put(struct buf *b)
{
    if (!b)
        return;
    if (buf_free_count >= BUF_FREE_MAX || b->cap != BUF_SIZE) {
        free(b);
        return;
    }
    b->next_free = buf_free_list;
    buf_free_list = b;
    buf_free_count++;
}

void buf_drain_free_list(void)
{
    while (buf_free_list) {
        struct buf *b = buf_free_list;
        buf_free_list = b->next_free;
        free(b);
    }
    buf_free_count = 0;
}

void buf_consume(struct buf *b, uint32_t n)
{
    b->rpos += n;
    if (b->rpos == b->wpos)
        b->rpos = b->wpos = 0;
}

void buf_compact(struct buf *b)
{
    if (b->rpos == 0)
        return;
    uint32_t len = b->wpos - b->rpos;
    memmove(b->data, b->data + b->rpos, len);
    b->rpos = 0;
    b->wpos = len;
}

struct buf *buf_grow(struct buf *b, uint32_t cap)
{
    struct buf *g = malloc(sizeof *g + cap);
    if (!g)
        return NULL;
    g->cap = cap;
    g->rpos = 0;
    g->wpos = buf_len(b);
    g->next_free = NULL;
    memcpy(g->data, buf_rptr(b), g->wpos);
    buf_put(b);
    return g;
}
