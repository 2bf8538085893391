/* cache_store_priv: the store's data model, shared by cache_store.c (index, objects, memory tier)
 * and cache_disk.c (disk tier). Not for other modules.
 *
 * Locks: a shard's mutex guards its hash table, entries, variants, eviction queues, disk CLOCK
 * list and the index fields of the objects linked there. An object's waiter mutex guards its
 * waiter list only. The disk queue mutex guards the writer's queue. Order: shard -> disk queue;
 * shard -> waiter never happens (waiters are notified with no shard lock held); no thread holds
 * two shard locks. */
#ifndef PORTERO_CACHE_STORE_PRIV_H
#define PORTERO_CACHE_STORE_PRIV_H

#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "cache/cache_evict.h"
#include "cache/cache_store.h"

/* One stretch of a body. */
struct cache_block {
    char *p;
    uint64_t start;             /* body offset of p[0] */
    uint64_t size;
};

/* A body: shared by an object and the one a 304 makes from it. Blocks never move; the filler
 * writes bytes, then publishes them by storing LEN (release); readers load LEN (acquire). */
struct cache_body {
    atomic_uint refs;
    _Atomic uint64_t len;       /* bytes readable */
    atomic_size_t n_blocks;     /* blocks published (entries before it are fully written) */
    struct cache_block first;
    struct cache_block *more;   /* blocks 1..: MAX_MORE entries, made with the second block */
    size_t max_more;
    uint64_t alloc;             /* bytes allocated in blocks (filler only) */
    uint64_t hint;              /* expected length or CACHE_LENGTH_UNKNOWN */
};

enum { DISK_NONE, DISK_PENDING, DISK_ON };

/* One secondary key of an entry. Lives while it has a memory object or a disk file (or one is
 * being written). */
struct cache_variant {
    struct cache_variant *next;        /* in entry->variants */
    struct cache_entry *entry;
    struct cache_obj *obj;             /* the COMPLETE object in memory (one reference), or NULL */
    uint64_t id;                       /* keyed hash of key and secondary key: file name, ghost */
    uint8_t disk;                      /* DISK_* */
    bool disk_used;                    /* CLOCK bit: used since the hand last passed */
    uint64_t disk_seq;                 /* the latest write queued for it */
    uint64_t disk_size;                /* DISK_ON: file bytes */
    struct cache_variant *dnewer, *dolder; /* DISK_ON: the shard's CLOCK list */
    char *tags;                        /* DISK_ON: the file's tags (purge by tag), NUL-terminated */
    size_t vklen;
    char vkey[];
};

/* One primary key. Lives while it has variants or fills. */
struct cache_entry {
    struct cache_entry *chain;         /* next in its hash slot */
    uint64_t hash;
    uint64_t gen;                      /* bumped when NAMES change; fills remember it */
    char *names;                       /* Vary names of the stored variants (NULL: none) */
    size_t names_len;
    struct cache_variant *variants;
    struct cache_obj *fills;           /* FILLING objects linked here, by obj->next_fill */
    size_t klen;
    char key[];
};

struct cache_obj {
    atomic_uint refs;
    _Atomic int state;                 /* enum cache_obj_state */
    atomic_bool has_head;              /* release-stored after the fields it publishes */
    struct cache_zone *zone;
    uint64_t hash;                     /* primary key hash */
    uint64_t id;                       /* variant id (set with the head) */
    uint64_t max_size;                 /* the zone's max_object_size when begun */
    bool from_disk;                    /* read back from disk: not written again */
    /* published by has_head */
    struct cache_body *body;
    char *head;
    size_t head_len;
    void *meta;
    size_t meta_len;
    char *tags;                        /* NUL-terminated */
    size_t tags_len;
    char *names;
    size_t names_len;
    /* shard lock: the secondary key (before the head: the one begun for), index links */
    char *vkey;
    size_t vklen;
    uint64_t gen;                      /* FILLING: collapse target while == entry->gen (0: never) */
    struct cache_entry *entry;         /* linked (in entry->fills or a variant), else NULL */
    struct cache_variant *variant;     /* COMPLETE and linked: its variant */
    struct cache_obj *next_fill;       /* in entry->fills; once unlinked: in a trash list */
    uint64_t charged;                  /* bytes charged to the zone while linked */
    struct cache_evict_node node;      /* COMPLETE and linked: the shard's eviction order */
    /* waiters */
    pthread_mutex_t wlock;
    struct cache_waiter waiters;       /* circular list head (notify unused) */
    size_t klen;
    char key[];
};

struct cache_shard {
    alignas(64) pthread_mutex_t lock;
    struct cache_entry **slots;
    size_t n_slots;                    /* a power of two */
    size_t n_entries;
    struct cache_evict evict;
    struct cache_variant *disk_newest, *disk_oldest;
    _Atomic uint64_t bytes;            /* memory charged here (read unlocked to pick victims) */
    _Atomic uint64_t small_bytes;      /* evict.small.bytes, mirrored for the same reason */
    _Atomic uint64_t disk_bytes;
};

struct cache_stripe {
    alignas(64) _Atomic uint64_t ev[CACHE_EV_N];
};
#define CACHE_STRIPES 16

struct cache_disk;

struct cache_zone {
    struct cache_zone *next;           /* registry */
    unsigned refs;                     /* registry lock */
    char *name;
    char *path;                        /* NULL: memory only */
    _Atomic uint64_t memory;
    _Atomic uint64_t max_object_size;
    uint64_t k0, k1;                   /* SipHash key (persisted with a disk tier) */
    _Atomic uint64_t bytes, objects, evictions, purged;
    _Atomic uint64_t small_bytes;      /* sum of the shards' small FIFOs */
    atomic_uint cursor;                /* where eviction looks next */
    struct cache_disk *disk;           /* NULL: memory only */
    struct cache_stripe stripes[CACHE_STRIPES];
    struct cache_shard shards[CACHE_SHARDS];
};

/* --- cache_store.c: hashing, index, charges, eviction ----------------------------------------- */

uint64_t cache_hash_key(const struct cache_zone *z, const void *key, size_t klen);
uint64_t cache_hash_variant(const struct cache_zone *z, const void *key, size_t klen,
                            const void *vkey, size_t vklen);
struct cache_shard *cache_shard_of(struct cache_zone *z, uint64_t hash);
/* The rest: shard lock held. */
struct cache_entry *cache_entry_find(struct cache_shard *s, uint64_t hash, const void *key,
                                     size_t klen);
/* Finds or makes the entry (NULL on allocation failure). */
struct cache_entry *cache_entry_get(struct cache_shard *s, uint64_t hash, const void *key,
                                    size_t klen);
/* Frees E when it holds no variant and no fill. */
void cache_entry_release(struct cache_shard *s, struct cache_entry *e);
struct cache_variant *cache_variant_find(struct cache_entry *e, const void *vkey, size_t vklen);
struct cache_variant *cache_variant_get(struct cache_zone *z, struct cache_entry *e,
                                        const void *vkey, size_t vklen);
/* Frees V when it holds nothing any more (its entry stays: callers release it when done). */
void cache_variant_release(struct cache_variant *v);

/* What a shard-locked operation leaves to do once the lock is dropped. */
struct cache_trash {
    struct cache_obj *objs;            /* references to put, by next_fill */
    uint64_t *ids;                     /* disk files to remove */
    size_t n_ids, cap_ids;
    size_t count;                      /* variants or fills removed */
};
void cache_trash_obj(struct cache_trash *t, struct cache_obj *o);
void cache_trash_file(struct cache_zone *z, struct cache_trash *t, uint64_t id);
/* No lock held. */
void cache_trash_empty(struct cache_zone *z, struct cache_trash *t);

/* Adds N bytes to O's charge when O is linked (shard lock held). */
void cache_charge(struct cache_zone *z, struct cache_shard *s, struct cache_obj *o, uint64_t n);
/* Takes the FILLING O out of its entry's fills list (nothing else). */
void cache_fill_list_remove(struct cache_obj *o);
/* Unlinks a FILLING O from its entry's fills (uncharging it); the index reference goes to T. The
 * entry stays (callers release it). */
void cache_unlink_fill(struct cache_zone *z, struct cache_shard *s, struct cache_obj *o,
                       struct cache_trash *t);
/* Unlinks a COMPLETE O from its variant and the eviction order; the reference goes to T. The
 * variant is released unless KEEP_VARIANT; the entry stays. */
void cache_unlink_complete(struct cache_zone *z, struct cache_shard *s, struct cache_obj *o,
                           struct cache_trash *t, bool keep_variant);
/* Drops every variant of E (Vary names changed); removed ones go to T. */
void cache_entry_drop_variants(struct cache_zone *z, struct cache_shard *s, struct cache_entry *e,
                               struct cache_trash *t);
/* Shard lock held: after a change to S's eviction order (mirrors its small FIFO's bytes into
 * the shard's and the zone's counters). */
static inline void cache_shard_note_small(struct cache_zone *z, struct cache_shard *s)
{
    uint64_t now = s->evict.small.bytes;
    uint64_t was = atomic_load_explicit(&s->small_bytes, memory_order_relaxed);
    if (now == was)
        return;
    atomic_store_explicit(&s->small_bytes, now, memory_order_relaxed);
    atomic_fetch_add_explicit(&z->small_bytes, now - was, memory_order_relaxed); /* mod 2^64 */
}
/* No lock held: evicts until the zone is within its memory budget, starting with shard HOME.
 * -1 when nothing more can be evicted and the zone is still over. */
int cache_make_room(struct cache_zone *z, struct cache_shard *home);
bool cache_zone_over(struct cache_zone *z);

/* --- cache_obj.c ------------------------------------------------------------------------------ */

/* A new FILLING object for KEY with one reference (NULL on allocation failure). */
struct cache_obj *cache_obj_new(struct cache_zone *z, uint64_t hash, const void *key, size_t klen);
/* Bytes an object is charged before its body. */
uint64_t cache_obj_base_size(const struct cache_obj *o);
struct cache_body *cache_body_new(uint64_t hint);
void cache_body_put(struct cache_body *b);
/* The filler adds a block for at least one more byte: -1 when O is at its max size or memory
 * fails. Charges it. */
int cache_body_grow(struct cache_obj *o);
void cache_obj_notify(struct cache_obj *o);

/* --- cache_disk.c ----------------------------------------------------------------------------- */

/* Opens (creating) Z->path: the hash key, the index rebuilt from the files, the writer thread.
 * Before any other use of Z's hash. */
int cache_disk_open(struct cache_zone *z, uint64_t max_size, char *err, size_t cap);
/* Drains the queue, stops the writer, frees the disk state (files stay). */
void cache_disk_close(struct cache_zone *z);
void cache_disk_set_max_size(struct cache_zone *z, uint64_t max_size);
void cache_disk_sync(struct cache_zone *z);
/* Shard lock held, V's entry linked: queues O (COMPLETE, V's object) for writing; false when the
 * queue is full (V then stays off disk). */
bool cache_disk_queue(struct cache_zone *z, struct cache_variant *v, struct cache_obj *o);
enum { CACHE_DISK_BAD = -1, CACHE_DISK_NOMEM = -2 };
/* No lock held: reads file ID into the FILLING object O (the file must hold O's key and the
 * secondary key O was begun for), setting its head and body (not finishing it). 0;
 * CACHE_DISK_BAD when the file is missing, corrupt or too big (it should go); CACHE_DISK_NOMEM
 * when memory failed (O is aborted; the file stays). */
int cache_disk_load(struct cache_zone *z, struct cache_obj *o, uint64_t id);
/* Shard lock held, V DISK_ON: V leaves the disk tier (CLOCK list, byte count, tags), DISK_NONE
 * after; the file is the caller's to remove (cache_disk_remove_file, no lock held). */
void cache_disk_forget(struct cache_zone *z, struct cache_shard *s, struct cache_variant *v);
/* No lock held. */
void cache_disk_remove_file(struct cache_zone *z, uint64_t id);
void cache_disk_stats(struct cache_zone *z, struct cache_zone_stats *out);

#endif
