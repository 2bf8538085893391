#include "cache/cache_evict.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

enum { Q_NONE, Q_SMALL, Q_MAIN };

#define EVICT_FREQ_MAX 3
#define GHOST_WAYS 4
#define GHOST_MIN_SLOTS 64

void cache_evict_init(struct cache_evict *e, enum cache_evict_kind kind, uint64_t capacity)
{
    memset(e, 0, sizeof *e);
    e->kind = kind;
    e->capacity = capacity;
}

void cache_evict_free(struct cache_evict *e)
{
    free(e->ghost);
    e->ghost = NULL;
    e->ghost_slots = 0;
}

void cache_evict_set_capacity(struct cache_evict *e, uint64_t capacity) { e->capacity = capacity; }

uint64_t cache_evict_bytes(const struct cache_evict *e) { return e->small.bytes + e->main.bytes; }

/* --- FIFOs ---------------------------------------------------------------------------------- */

static void fifo_push(struct cache_evict_fifo *f, struct cache_evict_node *n)
{
    n->older = f->newest;
    n->newer = NULL;
    *(f->newest ? &f->newest->newer : &f->oldest) = n;
    f->newest = n;
    f->bytes += n->size;
    f->n++;
}

static void fifo_unlink(struct cache_evict_fifo *f, struct cache_evict_node *n)
{
    *(n->older ? &n->older->newer : &f->oldest) = n->newer;
    *(n->newer ? &n->newer->older : &f->newest) = n->older;
    n->older = n->newer = NULL;
    f->bytes -= n->size;
    f->n--;
}

static struct cache_evict_fifo *fifo_of(struct cache_evict *e, const struct cache_evict_node *n)
{
    return n->queue == Q_SMALL ? &e->small : &e->main;
}

/* --- ghost FIFO ------------------------------------------------------------------------------
 * A FIFO of ids kept as a table of (id, insertion stamp): an id counts as present while fewer
 * than LIMIT ids were inserted after it, LIMIT being the main FIFO's object count (the paper's
 * ghost size). Buckets of GHOST_WAYS slots; a full bucket loses its oldest id early, which only
 * makes the ghost slightly forgetful. */

static uint64_t ghost_limit(const struct cache_evict *e)
{
    return e->main.n > GHOST_MIN_SLOTS / 2 ? e->main.n : GHOST_MIN_SLOTS / 2;
}

static bool ghost_live(const struct cache_evict *e, const struct cache_evict_ghost_slot *s)
{
    return s->id && e->ghost_clock - s->stamp < ghost_limit(e);
}

static struct cache_evict_ghost_slot *ghost_bucket(struct cache_evict_ghost_slot *t, size_t slots,
                                                   uint64_t id)
{
    return &t[(id * 0x9e3779b97f4a7c15ull >> 20) & (slots - GHOST_WAYS)];
}

static void ghost_put(struct cache_evict_ghost_slot *t, size_t slots, uint64_t id, uint64_t stamp)
{
    struct cache_evict_ghost_slot *b = ghost_bucket(t, slots, id), *oldest = b;
    for (int i = 0; i < GHOST_WAYS; i++) {
        if (!b[i].id || b[i].id == id) {
            oldest = &b[i];
            break;
        }
        if (b[i].stamp < oldest->stamp)
            oldest = &b[i];
    }
    oldest->id = id;
    oldest->stamp = stamp;
}

/* Keeps the table at least twice the ghost's size; on allocation failure keeps the old one. */
static void ghost_grow(struct cache_evict *e)
{
    size_t want = GHOST_MIN_SLOTS;
    while (want < 2 * ghost_limit(e))
        want *= 2;
    if (want <= e->ghost_slots)
        return;
    struct cache_evict_ghost_slot *t = calloc(want, sizeof *t);
    if (!t)
        return;
    for (size_t i = 0; i < e->ghost_slots; i++)
        if (ghost_live(e, &e->ghost[i]))
            ghost_put(t, want, e->ghost[i].id, e->ghost[i].stamp);
    free(e->ghost);
    e->ghost = t;
    e->ghost_slots = want;
}

static uint64_t ghost_id(uint64_t id) { return id ? id : 1; }

static void ghost_add(struct cache_evict *e, uint64_t id)
{
    ghost_grow(e);
    if (!e->ghost)
        return;
    ghost_put(e->ghost, e->ghost_slots, ghost_id(id), e->ghost_clock++);
}

/* Whether ID is in the ghost; removes it (it is about to be cached again). */
static bool ghost_take(struct cache_evict *e, uint64_t id)
{
    if (!e->ghost)
        return false;
    id = ghost_id(id);
    struct cache_evict_ghost_slot *b = ghost_bucket(e->ghost, e->ghost_slots, id);
    for (int i = 0; i < GHOST_WAYS; i++) {
        if (b[i].id == id) {
            bool live = ghost_live(e, &b[i]);
            b[i].id = 0;
            return live;
        }
    }
    return false;
}

/* --- the policy ------------------------------------------------------------------------------ */

void cache_evict_insert(struct cache_evict *e, struct cache_evict_node *n)
{
    n->freq = 0;
    if (e->kind == CACHE_EVICT_LRU || ghost_take(e, n->id)) {
        n->queue = Q_MAIN;
        fifo_push(&e->main, n);
    } else {
        n->queue = Q_SMALL;
        fifo_push(&e->small, n);
    }
}

void cache_evict_touch(struct cache_evict *e, struct cache_evict_node *n)
{
    if (e->kind == CACHE_EVICT_LRU) {
        fifo_unlink(&e->main, n);
        fifo_push(&e->main, n);
    } else if (n->freq < EVICT_FREQ_MAX) {
        n->freq++;
    }
}

void cache_evict_remove(struct cache_evict *e, struct cache_evict_node *n)
{
    if (n->queue == Q_NONE)
        return;
    fifo_unlink(fifo_of(e, n), n);
    n->queue = Q_NONE;
}

/* The small FIFO's oldest: to main when it was hit while in small, else out (id to the ghost). */
static struct cache_evict_node *evict_small(struct cache_evict *e)
{
    struct cache_evict_node *n = e->small.oldest;
    fifo_unlink(&e->small, n);
    if (n->freq) {
        n->freq = 0;
        n->queue = Q_MAIN;
        fifo_push(&e->main, n);
        return NULL;
    }
    n->queue = Q_NONE;
    ghost_add(e, n->id);
    return n;
}

/* The main FIFO's oldest: out when unused since its last pass, else another round. */
static struct cache_evict_node *evict_main(struct cache_evict *e)
{
    struct cache_evict_node *n = e->main.oldest;
    fifo_unlink(&e->main, n);
    if (n->freq && e->kind == CACHE_EVICT_S3FIFO) {
        n->freq--;
        fifo_push(&e->main, n);
        return NULL;
    }
    n->queue = Q_NONE;
    return n;
}

struct cache_evict_node *cache_evict_next_in(struct cache_evict *e, bool small)
{
    /* bounded: a node is promoted once or has its counter lowered at most 3 times */
    struct cache_evict_fifo *f = small ? &e->small : &e->main;
    while (f->n) {
        struct cache_evict_node *n = small ? evict_small(e) : evict_main(e);
        if (n)
            return n;
    }
    return NULL;
}

struct cache_evict_node *cache_evict_next(struct cache_evict *e)
{
    for (;;) {
        if (!e->small.n && !e->main.n)
            return NULL;
        bool small_over = cache_evict_small_over(e->small.bytes, e->capacity);
        bool small = e->small.n && (small_over || !e->main.n);
        struct cache_evict_node *n = small ? evict_small(e) : evict_main(e);
        if (n)
            return n;
    }
}
