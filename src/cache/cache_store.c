/* cache_store: zones and their registry, the sharded index, memory charges and eviction, purge,
 * counters. Objects are in cache_obj.c, the fill life cycle in cache_fill.c, the disk tier in
 * cache_disk.c. */
#include "cache/cache_store_priv.h"

#include <endian.h>
#include <stddef.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "core/siphash.h"

#define CACHE_SHARD_BITS 6
#define CACHE_MIN_SLOTS 16

_Static_assert(CACHE_SHARDS == 1 << CACHE_SHARD_BITS, "CACHE_SHARDS is 2^CACHE_SHARD_BITS");

uint64_t cache_hash_key(const struct cache_zone *z, const void *key, size_t klen)
{
    struct siphash s;
    siphash_init(&s, z->k0, z->k1);
    siphash_update(&s, "P", 1);
    siphash_update(&s, key, klen);
    return siphash_final(&s);
}

uint64_t cache_hash_variant(const struct cache_zone *z, const void *key, size_t klen,
                            const void *vkey, size_t vklen)
{
    struct siphash s;
    uint64_t n = htole64((uint64_t)klen);
    siphash_init(&s, z->k0, z->k1);
    siphash_update(&s, "V", 1);
    siphash_update(&s, &n, sizeof n);
    siphash_update(&s, key, klen);
    siphash_update(&s, vkey, vklen);
    return siphash_final(&s);
}

/* The top bits pick the shard, the bottom ones the slot: independent. */
struct cache_shard *cache_shard_of(struct cache_zone *z, uint64_t hash)
{
    return &z->shards[hash >> (64 - CACHE_SHARD_BITS)];
}

/* --- entries and variants ------------------------------------------------------------------- */

static struct cache_entry **entry_link(struct cache_shard *s, uint64_t hash)
{
    return &s->slots[hash & (s->n_slots - 1)];
}

struct cache_entry *cache_entry_find(struct cache_shard *s, uint64_t hash, const void *key,
                                     size_t klen)
{
    for (struct cache_entry *e = *entry_link(s, hash); e; e = e->chain)
        if (e->hash == hash && e->klen == klen && memcmp(e->key, key, klen) == 0)
            return e;
    return NULL;
}

/* Rehashes into twice the slots; on allocation failure keeps the old ones (longer chains). */
static void shard_grow(struct cache_shard *s)
{
    size_t n = s->n_slots * 2;
    struct cache_entry **slots = calloc(n, sizeof *slots);
    if (!slots)
        return;
    for (size_t i = 0; i < s->n_slots; i++) {
        while (s->slots[i]) {
            struct cache_entry *e = s->slots[i];
            s->slots[i] = e->chain;
            e->chain = slots[e->hash & (n - 1)];
            slots[e->hash & (n - 1)] = e;
        }
    }
    free(s->slots);
    s->slots = slots;
    s->n_slots = n;
}

struct cache_entry *cache_entry_get(struct cache_shard *s, uint64_t hash, const void *key,
                                    size_t klen)
{
    struct cache_entry *e = cache_entry_find(s, hash, key, klen);
    if (e)
        return e;
    e = calloc(1, sizeof *e + klen);
    if (!e)
        return NULL;
    e->hash = hash;
    e->gen = 1; /* fills with gen 0 are never collapse targets */
    e->klen = klen;
    memcpy(e->key, key, klen);
    if (s->n_entries >= s->n_slots)
        shard_grow(s);
    struct cache_entry **link = entry_link(s, hash);
    e->chain = *link;
    *link = e;
    s->n_entries++;
    return e;
}

void cache_entry_release(struct cache_shard *s, struct cache_entry *e)
{
    if (e->variants || e->fills)
        return;
    struct cache_entry **link = entry_link(s, e->hash);
    while (*link != e)
        link = &(*link)->chain;
    *link = e->chain;
    s->n_entries--;
    free(e->names);
    free(e);
}

struct cache_variant *cache_variant_find(struct cache_entry *e, const void *vkey, size_t vklen)
{
    for (struct cache_variant *v = e->variants; v; v = v->next)
        if (v->vklen == vklen && memcmp(v->vkey, vkey, vklen) == 0)
            return v;
    return NULL;
}

struct cache_variant *cache_variant_get(struct cache_zone *z, struct cache_entry *e,
                                        const void *vkey, size_t vklen)
{
    struct cache_variant *v = cache_variant_find(e, vkey, vklen);
    if (v)
        return v;
    v = calloc(1, sizeof *v + vklen);
    if (!v)
        return NULL;
    v->entry = e;
    v->id = cache_hash_variant(z, e->key, e->klen, vkey, vklen);
    v->vklen = vklen;
    memcpy(v->vkey, vkey, vklen);
    v->next = e->variants;
    e->variants = v;
    return v;
}

void cache_variant_release(struct cache_variant *v)
{
    if (v->obj || v->disk != DISK_NONE)
        return;
    struct cache_variant **link = &v->entry->variants;
    while (*link != v)
        link = &(*link)->next;
    *link = v->next;
    free(v->tags);
    free(v);
}

/* --- trash: work for after the lock ----------------------------------------------------------- */

void cache_trash_obj(struct cache_trash *t, struct cache_obj *o)
{
    o->next_fill = t->objs;
    t->objs = o;
}

void cache_trash_file(struct cache_zone *z, struct cache_trash *t, uint64_t id)
{
    if (t->n_ids == t->cap_ids) {
        size_t cap = t->cap_ids ? 2 * t->cap_ids : 8;
        uint64_t *ids = realloc(t->ids, cap * sizeof *ids);
        if (!ids) {
            cache_disk_remove_file(z, id); /* rare: do it now, under the lock */
            return;
        }
        t->ids = ids;
        t->cap_ids = cap;
    }
    t->ids[t->n_ids++] = id;
}

void cache_trash_empty(struct cache_zone *z, struct cache_trash *t)
{
    while (t->objs) {
        struct cache_obj *o = t->objs;
        t->objs = o->next_fill;
        o->next_fill = NULL;
        cache_obj_put(o);
    }
    for (size_t i = 0; i < t->n_ids; i++)
        cache_disk_remove_file(z, t->ids[i]);
    free(t->ids);
    t->ids = NULL;
    t->n_ids = t->cap_ids = 0;
}

/* --- charges and unlinking -------------------------------------------------------------------- */

void cache_charge(struct cache_zone *z, struct cache_shard *s, struct cache_obj *o, uint64_t n)
{
    if (!o->entry)
        return;
    o->charged += n;
    atomic_fetch_add_explicit(&s->bytes, n, memory_order_relaxed);
    atomic_fetch_add_explicit(&z->bytes, n, memory_order_relaxed);
}

static void uncharge(struct cache_zone *z, struct cache_shard *s, struct cache_obj *o)
{
    atomic_fetch_sub_explicit(&s->bytes, o->charged, memory_order_relaxed);
    atomic_fetch_sub_explicit(&z->bytes, o->charged, memory_order_relaxed);
    atomic_fetch_sub_explicit(&z->objects, 1, memory_order_relaxed);
    o->charged = 0;
    o->entry = NULL;
}

void cache_fill_list_remove(struct cache_obj *o)
{
    struct cache_obj **link = &o->entry->fills;
    while (*link != o)
        link = &(*link)->next_fill;
    *link = o->next_fill;
    o->next_fill = NULL;
}

void cache_unlink_fill(struct cache_zone *z, struct cache_shard *s, struct cache_obj *o,
                       struct cache_trash *t)
{
    cache_fill_list_remove(o);
    uncharge(z, s, o);
    cache_trash_obj(t, o);
}

void cache_unlink_complete(struct cache_zone *z, struct cache_shard *s, struct cache_obj *o,
                           struct cache_trash *t, bool keep_variant)
{
    struct cache_variant *v = o->variant;
    cache_evict_remove(&s->evict, &o->node);
    cache_shard_note_small(z, s);
    v->obj = NULL;
    o->variant = NULL;
    uncharge(z, s, o);
    cache_trash_obj(t, o);
    if (!keep_variant)
        cache_variant_release(v);
}

/* Removes V with its memory object and disk file; T gets what to finish. Frees V. */
static void variant_purge(struct cache_zone *z, struct cache_shard *s, struct cache_variant *v,
                          struct cache_trash *t)
{
    if (v->obj)
        cache_unlink_complete(z, s, v->obj, t, true);
    if (v->disk == DISK_ON) {
        cache_disk_forget(z, s, v);
        cache_trash_file(z, t, v->id);
    }
    /* DISK_PENDING: the writer finds no variant and removes the file it wrote */
    v->disk = DISK_NONE;
    t->count++;
    cache_variant_release(v);
}

void cache_entry_drop_variants(struct cache_zone *z, struct cache_shard *s, struct cache_entry *e,
                               struct cache_trash *t)
{
    while (e->variants)
        variant_purge(z, s, e->variants, t);
}

/* --- eviction --------------------------------------------------------------------------------- */

bool cache_zone_over(struct cache_zone *z)
{
    return atomic_load_explicit(&z->bytes, memory_order_relaxed) >
           atomic_load_explicit(&z->memory, memory_order_relaxed);
}

/* Evicts one object of S from its small FIFO (SMALL) or its main one; false when that FIFO has
 * none to give. */
static bool shard_evict_one(struct cache_zone *z, struct cache_shard *s, bool small)
{
    struct cache_trash t = { 0 };
    pthread_mutex_lock(&s->lock);
    struct cache_evict_node *n = cache_evict_next_in(&s->evict, small);
    cache_shard_note_small(z, s);
    if (n) {
        struct cache_obj *o = (struct cache_obj *)((char *)n - offsetof(struct cache_obj, node));
        struct cache_entry *e = o->entry;
        cache_unlink_complete(z, s, o, &t, false);
        cache_entry_release(s, e);
        atomic_fetch_add_explicit(&z->evictions, 1, memory_order_relaxed);
    }
    pthread_mutex_unlock(&s->lock);
    cache_trash_empty(z, &t);
    return n != NULL;
}

/* The memory budget is zone-wide, the FIFOs are per shard. The zone decides as S3-FIFO does for
 * one cache: from the small FIFOs while they hold 10% of the budget, else from the main ones;
 * shards are then tried from HOME on, then from a rotating cursor. A shard whose small FIFO is
 * empty thus never gives up its main FIFO while others hold unused new objects (measured: with
 * per-shard decisions, a scan evicted hot objects). A zone far smaller than CACHE_SHARDS objects of
 * max size still works, and no thread holds two shard locks. -1 when a full round of both
 * kinds found nothing. */
int cache_make_room(struct cache_zone *z, struct cache_shard *home)
{
    struct cache_shard *s = home;
    unsigned misses = 0;
    while (cache_zone_over(z)) {
        if (misses >= 2 * CACHE_SHARDS)
            return -1;
        bool small = cache_evict_small_over(atomic_load(&z->small_bytes), atomic_load(&z->memory));
        if (misses >= CACHE_SHARDS)
            small = !small; /* the chosen kind ran out: the other one */
        bool has = small ? atomic_load_explicit(&s->small_bytes, memory_order_relaxed) > 0
                         : atomic_load_explicit(&s->bytes, memory_order_relaxed) >
                               atomic_load_explicit(&s->small_bytes, memory_order_relaxed);
        if (has && shard_evict_one(z, s, small)) {
            misses = misses >= CACHE_SHARDS ? CACHE_SHARDS : 0;
            continue;
        }
        misses++;
        s = &z->shards[atomic_fetch_add_explicit(&z->cursor, 1, memory_order_relaxed) %
                       CACHE_SHARDS];
    }
    return 0;
}

/* --- purge ------------------------------------------------------------------------------------ */

/* Removes E's fills and variants; frees E. */
static void entry_purge(struct cache_zone *z, struct cache_shard *s, struct cache_entry *e,
                        struct cache_trash *t)
{
    for (; e->fills; t->count++)
        cache_unlink_fill(z, s, e->fills, t);
    while (e->variants)
        variant_purge(z, s, e->variants, t);
    cache_entry_release(s, e);
}

static size_t purge_finish(struct cache_zone *z, struct cache_trash *t)
{
    size_t n = t->count;
    atomic_fetch_add_explicit(&z->purged, n, memory_order_relaxed);
    cache_trash_empty(z, t);
    return n;
}

size_t cache_purge_key(struct cache_zone *z, const void *key, size_t klen)
{
    struct cache_trash t = { 0 };
    uint64_t hash = cache_hash_key(z, key, klen);
    struct cache_shard *s = cache_shard_of(z, hash);
    pthread_mutex_lock(&s->lock);
    struct cache_entry *e = cache_entry_find(s, hash, key, klen);
    if (e)
        entry_purge(z, s, e, &t);
    pthread_mutex_unlock(&s->lock);
    return purge_finish(z, &t);
}

size_t cache_purge_prefix(struct cache_zone *z, const void *prefix, size_t len)
{
    struct cache_trash t = { 0 };
    for (size_t i = 0; i < CACHE_SHARDS; i++) {
        struct cache_shard *s = &z->shards[i];
        pthread_mutex_lock(&s->lock);
        for (size_t j = 0; j < s->n_slots; j++) {
            for (struct cache_entry *e = s->slots[j], *next; e; e = next) {
                next = e->chain;
                if (e->klen >= len && memcmp(e->key, prefix, len) == 0)
                    entry_purge(z, s, e, &t);
            }
        }
        pthread_mutex_unlock(&s->lock);
        cache_trash_empty(z, &t); /* keeps the count */
    }
    return purge_finish(z, &t);
}

/* Whether TAG is one whole space-separated word of TAGS. */
static bool tags_have(const char *tags, const char *tag, size_t len)
{
    if (!tags || !len)
        return false;
    for (const char *p = tags; *p;) {
        while (*p == ' ' || *p == '\t')
            p++;
        const char *w = p;
        while (*p && *p != ' ' && *p != '\t')
            p++;
        if ((size_t)(p - w) == len && memcmp(w, tag, len) == 0)
            return true;
    }
    return false;
}

static const char *obj_tags(const struct cache_obj *o)
{
    return atomic_load_explicit(&o->has_head, memory_order_acquire) ? o->tags : NULL;
}

static void entry_purge_tag(struct cache_zone *z, struct cache_shard *s, struct cache_entry *e,
                            const char *tag, size_t len, struct cache_trash *t)
{
    for (struct cache_obj *f = e->fills, *next; f; f = next) {
        next = f->next_fill;
        if (tags_have(obj_tags(f), tag, len)) {
            t->count++;
            cache_unlink_fill(z, s, f, t);
        }
    }
    for (struct cache_variant *v = e->variants, *next; v; v = next) {
        next = v->next;
        if (tags_have(v->obj ? v->obj->tags : v->tags, tag, len))
            variant_purge(z, s, v, t);
    }
    cache_entry_release(s, e);
}

size_t cache_purge_tag(struct cache_zone *z, const char *tag, size_t len)
{
    struct cache_trash t = { 0 };
    for (size_t i = 0; i < CACHE_SHARDS; i++) {
        struct cache_shard *s = &z->shards[i];
        pthread_mutex_lock(&s->lock);
        for (size_t j = 0; j < s->n_slots; j++) {
            for (struct cache_entry *e = s->slots[j], *next; e; e = next) {
                next = e->chain;
                entry_purge_tag(z, s, e, tag, len, &t);
            }
        }
        pthread_mutex_unlock(&s->lock);
        cache_trash_empty(z, &t);
    }
    return purge_finish(z, &t);
}

/* --- counters --------------------------------------------------------------------------------- */

static atomic_uint stripe_next;
static _Thread_local unsigned stripe_mine = UINT_MAX;

void cache_zone_note(struct cache_zone *z, enum cache_event ev)
{
    if (ev >= CACHE_EV_N)
        return;
    if (stripe_mine == UINT_MAX)
        stripe_mine = atomic_fetch_add_explicit(&stripe_next, 1, memory_order_relaxed) %
                      CACHE_STRIPES;
    atomic_fetch_add_explicit(&z->stripes[stripe_mine].ev[ev], 1, memory_order_relaxed);
}

void cache_zone_stats(struct cache_zone *z, struct cache_zone_stats *out)
{
    uint64_t ev[CACHE_EV_N] = { 0 };
    for (size_t i = 0; i < CACHE_STRIPES; i++)
        for (size_t j = 0; j < CACHE_EV_N; j++)
            ev[j] += atomic_load_explicit(&z->stripes[i].ev[j], memory_order_relaxed);
    memset(out, 0, sizeof *out);
    out->hits = ev[CACHE_EV_HIT];
    out->misses = ev[CACHE_EV_MISS];
    out->stale = ev[CACHE_EV_STALE];
    out->collapsed = ev[CACHE_EV_COLLAPSED];
    out->bytes = atomic_load_explicit(&z->bytes, memory_order_relaxed);
    out->objects = atomic_load_explicit(&z->objects, memory_order_relaxed);
    out->evictions = atomic_load_explicit(&z->evictions, memory_order_relaxed);
    out->purged = atomic_load_explicit(&z->purged, memory_order_relaxed);
    if (z->disk)
        cache_disk_stats(z, out);
}

/* --- zones and the registry ------------------------------------------------------------------- */

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct cache_zone *registry;

static void zone_random_key(struct cache_zone *z)
{
    uint64_t k[2];
    if (getrandom(k, sizeof k, GRND_NONBLOCK) != (ssize_t)sizeof k) {
        /* no entropy yet (early boot): weaker, but still not guessable from outside */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        k[0] = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uint64_t)ts.tv_sec;
        k[1] = (uint64_t)(uintptr_t)z * 0xbf58476d1ce4e5b9ull ^ (uint64_t)ts.tv_nsec;
    }
    z->k0 = k[0];
    z->k1 = k[1];
}

/* Frees everything Z's shards hold (no other thread uses Z any more; the disk tier is closed, so
 * its files stay for the next start). */
static void zone_clear(struct cache_zone *z)
{
    struct cache_trash t = { 0 };
    for (size_t i = 0; i < CACHE_SHARDS; i++) {
        struct cache_shard *s = &z->shards[i];
        for (size_t j = 0; s->slots && j < s->n_slots; j++) {
            while (s->slots[j])
                entry_purge(z, s, s->slots[j], &t);
        }
        cache_trash_empty(z, &t);
    }
}

static void zone_free(struct cache_zone *z)
{
    if (z->disk)
        cache_disk_close(z); /* writes what is queued first */
    zone_clear(z);
    for (size_t i = 0; i < CACHE_SHARDS; i++) {
        free(z->shards[i].slots);
        cache_evict_free(&z->shards[i].evict);
        pthread_mutex_destroy(&z->shards[i].lock);
    }
    free(z->name);
    free(z->path);
    free(z);
}

static struct cache_zone *zone_alloc(const struct conf_cache_zone *conf)
{
    struct cache_zone *z = aligned_alloc(alignof(struct cache_zone), sizeof *z);
    if (!z)
        return NULL;
    memset(z, 0, sizeof *z);
    z->name = strdup(conf->name ? conf->name : "");
    z->path = conf->path ? strdup(conf->path) : NULL;
    atomic_store(&z->memory, conf->memory);
    atomic_store(&z->max_object_size, conf->max_object_size);
    zone_random_key(z);
    bool ok = z->name && (z->path || !conf->path);
    for (size_t i = 0; i < CACHE_SHARDS; i++) {
        struct cache_shard *s = &z->shards[i];
        pthread_mutex_init(&s->lock, NULL);
        cache_evict_init(&s->evict, CACHE_EVICT_S3FIFO, conf->memory / CACHE_SHARDS);
        s->slots = calloc(CACHE_MIN_SLOTS, sizeof *s->slots);
        s->n_slots = CACHE_MIN_SLOTS;
        ok = ok && s->slots;
    }
    if (!ok) {
        zone_free(z);
        return NULL;
    }
    return z;
}

static struct cache_zone *zone_new(const struct conf_cache_zone *conf, char *err, size_t cap)
{
    struct cache_zone *z = zone_alloc(conf);
    if (!z) {
        snprintf(err, cap, "cache zone %s: out of memory", conf->name);
        return NULL;
    }
    if (conf->path && cache_disk_open(z, conf->max_size, err, cap) < 0) {
        zone_free(z);
        return NULL;
    }
    z->refs = 1;
    return z;
}

static bool same_path(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* Z exists: CONF's budgets apply from now on. Registry lock held. */
static int zone_update(struct cache_zone *z, const struct conf_cache_zone *conf, char *err,
                       size_t cap)
{
    if (!same_path(z->path, conf->path)) {
        snprintf(err, cap, "cache zone %s: changing its path needs a restart", conf->name);
        return -1;
    }
    atomic_store(&z->memory, conf->memory);
    atomic_store(&z->max_object_size, conf->max_object_size);
    for (size_t i = 0; i < CACHE_SHARDS; i++) {
        pthread_mutex_lock(&z->shards[i].lock);
        cache_evict_set_capacity(&z->shards[i].evict, conf->memory / CACHE_SHARDS);
        pthread_mutex_unlock(&z->shards[i].lock);
    }
    if (z->disk)
        cache_disk_set_max_size(z, conf->max_size);
    return 0;
}

struct cache_zone *cache_zone_get(const struct conf_cache_zone *conf, char *err, size_t cap)
{
    pthread_mutex_lock(&registry_lock);
    struct cache_zone *z = registry;
    while (z && strcmp(z->name, conf->name ? conf->name : "") != 0)
        z = z->next;
    if (z && zone_update(z, conf, err, cap) < 0) {
        z = NULL;
    } else if (z) {
        z->refs++;
    } else if ((z = zone_new(conf, err, cap))) {
        z->next = registry;
        registry = z;
    }
    pthread_mutex_unlock(&registry_lock);
    if (z)
        cache_make_room(z, &z->shards[0]); /* the budget may have shrunk */
    return z;
}

struct cache_zone *cache_zone_find(const char *name)
{
    pthread_mutex_lock(&registry_lock);
    struct cache_zone *z = registry;
    while (z && strcmp(z->name, name) != 0)
        z = z->next;
    if (z)
        z->refs++;
    pthread_mutex_unlock(&registry_lock);
    return z;
}

void cache_zone_put(struct cache_zone *z)
{
    if (!z)
        return;
    pthread_mutex_lock(&registry_lock);
    bool last = --z->refs == 0;
    if (last) {
        struct cache_zone **link = &registry;
        while (*link != z)
            link = &(*link)->next;
        *link = z->next;
    }
    pthread_mutex_unlock(&registry_lock);
    if (last)
        zone_free(z);
}

const char *cache_zone_name(const struct cache_zone *z) { return z->name; }

uint64_t cache_zone_max_object_size(const struct cache_zone *z)
{
    return atomic_load_explicit(&z->max_object_size, memory_order_relaxed);
}

void cache_zone_sync(struct cache_zone *z)
{
    if (z->disk)
        cache_disk_sync(z);
}
