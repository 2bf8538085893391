/* cache_obj: objects, their bodies (blocks that never move, published with release/acquire),
 * reading, accessors and waiters. */
#include "cache/cache_store_priv.h"

#include <stdlib.h>
#include <string.h>

#define BLOCK_FIRST (4u * 1024)
#define BLOCK_MIN (16u * 1024)
#define BLOCK_STEP (1024u * 1024)

/* --- objects ---------------------------------------------------------------------------------- */

struct cache_obj *cache_obj_new(struct cache_zone *z, uint64_t hash, const void *key, size_t klen)
{
    struct cache_obj *o = calloc(1, sizeof *o + klen);
    if (!o)
        return NULL;
    atomic_init(&o->refs, 1);
    atomic_init(&o->state, CACHE_OBJ_FILLING);
    atomic_init(&o->has_head, false);
    o->zone = z;
    o->hash = hash;
    o->max_size = cache_zone_max_object_size(z);
    pthread_mutex_init(&o->wlock, NULL);
    o->waiters.next = o->waiters.prev = &o->waiters;
    o->klen = klen;
    memcpy(o->key, key, klen);
    return o;
}

uint64_t cache_obj_base_size(const struct cache_obj *o)
{
    return sizeof *o + o->klen + o->vklen;
}

static void obj_free(struct cache_obj *o)
{
    cache_body_put(o->body);
    free(o->head);
    free(o->meta);
    free(o->tags);
    free(o->names);
    free(o->vkey);
    pthread_mutex_destroy(&o->wlock);
    free(o);
}

struct cache_obj *cache_obj_ref(struct cache_obj *o)
{
    atomic_fetch_add_explicit(&o->refs, 1, memory_order_relaxed);
    return o;
}

void cache_obj_put(struct cache_obj *o)
{
    if (o && atomic_fetch_sub_explicit(&o->refs, 1, memory_order_acq_rel) == 1)
        obj_free(o);
}

/* --- bodies ----------------------------------------------------------------------------------- */

struct cache_body *cache_body_new(uint64_t hint)
{
    struct cache_body *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    atomic_init(&b->refs, 1);
    b->hint = hint;
    return b;
}

void cache_body_put(struct cache_body *b)
{
    if (!b || atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) != 1)
        return;
    size_t n = atomic_load_explicit(&b->n_blocks, memory_order_relaxed);
    if (n)
        free(b->first.p);
    for (size_t i = 1; i < n; i++)
        free(b->more[i - 1].p);
    free(b->more);
    free(b);
}

/* The size of the block after ALLOC bytes: the first fits the expected length when known, else
 * 4 KiB (small chunked responses are common); then doubling from 16 KiB, 1 MiB steps up to
 * 8 MiB, then 1/8 of what is there (at most 12.5% of a large body unused, few blocks even for
 * huge limits). Never past MAX. */
static uint64_t block_size(uint64_t alloc, uint64_t hint, uint64_t max)
{
    uint64_t n;
    if (!alloc)
        n = hint != CACHE_LENGTH_UNKNOWN && hint ? hint : BLOCK_FIRST;
    else if (alloc < BLOCK_STEP)
        n = alloc > BLOCK_MIN ? alloc : BLOCK_MIN;
    else
        n = alloc / 8 > BLOCK_STEP ? alloc / 8 : BLOCK_STEP;
    return n < max - alloc ? n : max - alloc;
}

/* How many blocks after the first the growth rule can make before reaching MAX. */
static size_t blocks_after(uint64_t first, uint64_t max)
{
    size_t n = 0;
    for (uint64_t alloc = first; alloc < max; n++)
        alloc += block_size(alloc, CACHE_LENGTH_UNKNOWN, max);
    return n;
}

int cache_body_grow(struct cache_obj *o)
{
    struct cache_body *b = o->body;
    size_t n = atomic_load_explicit(&b->n_blocks, memory_order_relaxed);
    uint64_t size = block_size(b->alloc, b->hint, o->max_size);
    if (!size)
        return -1;
    if (n == 1 && !b->more) {
        b->max_more = blocks_after(b->alloc, o->max_size);
        b->more = calloc(b->max_more ? b->max_more : 1, sizeof *b->more);
        if (!b->more)
            return -1;
    }
    if (n && n - 1 >= b->max_more)
        return -1;
    char *p = malloc(size);
    if (!p)
        return -1;
    struct cache_block *blk = n ? &b->more[n - 1] : &b->first;
    *blk = (struct cache_block){ .p = p, .start = b->alloc, .size = size };
    b->alloc += size;
    atomic_store_explicit(&b->n_blocks, n + 1, memory_order_release);
    struct cache_shard *s = cache_shard_of(o->zone, o->hash);
    pthread_mutex_lock(&s->lock);
    cache_charge(o->zone, s, o, size);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

static const struct cache_block *body_block(const struct cache_body *b, size_t i)
{
    return i ? &b->more[i - 1] : &b->first;
}

/* The block holding OFF among the first N (OFF is below the published length). */
static const struct cache_block *body_find(const struct cache_body *b, size_t n, uint64_t off)
{
    size_t lo = 0, hi = n - 1;
    while (lo < hi) {
        size_t mid = lo + (hi - lo + 1) / 2;
        if (body_block(b, mid)->start <= off)
            lo = mid;
        else
            hi = mid - 1;
    }
    return body_block(b, lo);
}

/* --- reading ---------------------------------------------------------------------------------- */

static bool obj_has_head(const struct cache_obj *o)
{
    return atomic_load_explicit(&((struct cache_obj *)o)->has_head, memory_order_acquire);
}

size_t cache_obj_read(const struct cache_obj *o, uint64_t off, const char **p)
{
    if (!obj_has_head(o) || !o->body)
        return 0;
    struct cache_body *b = o->body;
    uint64_t len = atomic_load_explicit(&b->len, memory_order_acquire);
    if (off >= len)
        return 0;
    size_t n = atomic_load_explicit(&b->n_blocks, memory_order_acquire);
    const struct cache_block *blk = body_find(b, n, off);
    uint64_t end = blk->start + blk->size < len ? blk->start + blk->size : len;
    *p = blk->p + (off - blk->start);
    return (size_t)(end - off);
}

uint64_t cache_obj_length(const struct cache_obj *o)
{
    if (!obj_has_head(o) || !o->body)
        return 0;
    return atomic_load_explicit(&o->body->len, memory_order_acquire);
}

enum cache_obj_state cache_obj_state(const struct cache_obj *o)
{
    return (enum cache_obj_state)atomic_load_explicit(&((struct cache_obj *)o)->state,
                                                      memory_order_acquire);
}

const char *cache_obj_head(const struct cache_obj *o, size_t *len)
{
    if (!obj_has_head(o)) {
        *len = 0;
        return NULL;
    }
    *len = o->head_len;
    return o->head;
}

const void *cache_obj_meta(const struct cache_obj *o, size_t *len)
{
    if (!obj_has_head(o) || !o->meta) {
        *len = 0;
        return NULL;
    }
    *len = o->meta_len;
    return o->meta;
}

struct str cache_obj_key(const struct cache_obj *o) { return str_make(o->key, o->klen); }

struct str cache_obj_vary_names(const struct cache_obj *o)
{
    return obj_has_head(o) ? str_make(o->names ? o->names : "", o->names_len) : str_make("", 0);
}

struct str cache_obj_vary_key(const struct cache_obj *o)
{
    return obj_has_head(o) ? str_make(o->vkey ? o->vkey : "", o->vklen) : str_make("", 0);
}

struct str cache_obj_tags(const struct cache_obj *o)
{
    return obj_has_head(o) ? str_make(o->tags ? o->tags : "", o->tags_len) : str_make("", 0);
}

bool cache_obj_vary_matches(const struct cache_obj *o, cache_vary_fn vary, void *ctx)
{
    if (!obj_has_head(o) || !o->names_len)
        return true;
    if (!vary)
        return false;
    struct str k = vary(ctx, str_make(o->names, o->names_len));
    return k.n == o->vklen && (!k.n || memcmp(k.p, o->vkey, k.n) == 0);
}

/* --- waiters ---------------------------------------------------------------------------------- */

void cache_obj_wait(struct cache_obj *o, struct cache_waiter *w)
{
    pthread_mutex_lock(&o->wlock);
    w->next = &o->waiters;
    w->prev = o->waiters.prev;
    o->waiters.prev->next = w;
    o->waiters.prev = w;
    pthread_mutex_unlock(&o->wlock);
}

void cache_obj_unwait(struct cache_obj *o, struct cache_waiter *w)
{
    pthread_mutex_lock(&o->wlock);
    if (w->next) {
        w->prev->next = w->next;
        w->next->prev = w->prev;
        w->next = w->prev = NULL;
    }
    pthread_mutex_unlock(&o->wlock);
}

/* Under the waiter lock, so that cache_obj_unwait returning means no notify runs for its waiter. */
void cache_obj_notify(struct cache_obj *o)
{
    pthread_mutex_lock(&o->wlock);
    for (struct cache_waiter *w = o->waiters.next, *next; w != &o->waiters; w = next) {
        next = w->next;
        w->notify(w);
    }
    pthread_mutex_unlock(&o->wlock);
}
