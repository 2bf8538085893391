/* cache_store: the HTTP cache's storage — zones, the sharded index, objects filled while others
 * read them, S3-FIFO eviction of the memory tier, the optional disk tier, purge and counters.
 * It knows nothing of HTTP: keys, Vary names, secondary keys, heads and metadata are bytes the
 * exchange computes (RFC 9111 decisions live in cache_rules).
 *
 * Zones. A zone is process-wide, found by name in a registry, refcounted, and outlives config
 * reloads: each snapshot that names it holds a reference (cache_zone_get), so a reload that keeps
 * a zone keeps its content. It dies with its last reference (its disk writer is drained first).
 *
 * Index. A zone is split into CACHE_SHARDS shards by a keyed SipHash-2-4 of the primary key; each
 * shard has one mutex and its own hash table and eviction queues. A lookup takes exactly one
 * shard lock; nothing zone-wide is locked on the hit path (zone counters are atomics, the hit and
 * stale counters are striped per thread).
 *
 * Variants (RFC 9111 §4.1). Per primary key the store keeps the Vary names of the latest stored
 * response and, under them, one variant per secondary key. The exchange supplies a
 * cache_vary_fn that computes its request's secondary key for given names; the store calls it
 * with the stored names. Storing a response whose Vary names differ from the stored ones drops
 * the variants stored under the old names.
 *
 * Objects. A `struct cache_obj` is refcounted: the index holds one reference while the object is
 * linked, every lookup or fill hands the caller one more. An object is freed when it has been
 * unlinked (evicted, replaced, purged, aborted) AND its last reference is put; a reader holding a
 * reference always finishes. Its head, metadata, key, Vary names and tags never change once set,
 * so pointers from the accessors stay valid while the reference is held. Its body grows in blocks
 * that never move. Every object reference must be put before the zone's last reference.
 *
 * Filling. cache_fill_begin makes a FILLING object (the caller is its filler) or returns the one
 * already filling for the same variant (request collapsing: the caller reads it as it grows and is
 * woken through a cache_waiter). The filler sets the head, appends the body, then finishes (the
 * object becomes COMPLETE and replaces the previous one of its variant) or aborts (readers see
 * ABORTED). A revalidation answered 304 finishes the filling object with the old one's body
 * (cache_obj_update).
 *
 * Eviction. The memory budget is zone-wide (an atomic byte count: bodies as allocated, heads,
 * metadata, keys); each shard orders its COMPLETE objects with S3-FIFO (cache_evict.h: the policy,
 * the measurements against LRU, and why). When a charge passes the budget, the charging thread
 * evicts, no lock held: from the shards' small FIFOs while they hold 10% of the budget, else from
 * their main FIFOs (the decision S3-FIFO takes for one cache, taken zone-wide), its own shard
 * first. FILLING objects are charged as they grow but are never evicted; a fill that cannot be
 * made room for is aborted. Index records (keys of disk-only variants) are not charged.
 *
 * Disk tier (zone `path`, `max_size`). A COMPLETE object is queued to the zone's writer thread,
 * which writes it to PATH/c-<16 hex digits> (a keyed hash of primary and secondary key; the key
 * lives in PATH/portero-cache.key so names survive a restart) through a temp file and rename.
 * A memory miss whose variant is on disk reads the file back synchronously on the calling thread
 * (at most max_object_size plus the head: one open/read/close; callers on the same variant
 * meanwhile collapse onto it). Disk space is bounded by max_size with a CLOCK (second chance)
 * order. Opening a zone rebuilds the index from the directory: partial temp files and files with
 * a bad header or size are removed; a body whose checksum fails at read time is removed then.
 * The index keeps, per disk-resident variant, its key, secondary key and tags in memory (not
 * counted in `memory`), so purge by prefix or tag never reads the disk. Objects waiting for the
 * writer are bounded (64 MiB): past that, new objects stay memory-only. There is no fsync (a
 * machine crash can lose recent files; damaged ones are detected as above). Queued writes are
 * done when the zone's last reference goes (or at cache_zone_sync): put the zones at shutdown.
 *
 * Threads. Everything here is thread-safe unless said otherwise. Callbacks (cache_vary_fn,
 * cache_waiter.notify) must not call into the store. */
#ifndef PORTERO_CACHE_STORE_H
#define PORTERO_CACHE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf/config.h"
#include "core/str.h"

#define CACHE_SHARDS 64
/* cache_response.length_hint when the body length is not known in advance. */
#define CACHE_LENGTH_UNKNOWN UINT64_MAX

struct cache_zone;
struct cache_obj;

/* ---- zones ---------------------------------------------------------------------------------- */

/* Returns the zone named CONF->name with one reference: the existing one with its memory budget
 * and max_object_size updated from CONF, or a new one (its disk directory created if missing and
 * its index rebuilt from the files there). NULL with a message in ERR[0..CAP) when the directory
 * cannot be used, when CONF changes the disk path of an existing zone (a restart is needed for
 * that), or on allocation failure. Meant for the control thread (config load): opening a disk
 * zone reads every file's header. */
struct cache_zone *cache_zone_get(const struct conf_cache_zone *conf, char *err, size_t cap);
/* The zone named NAME with one reference, or NULL (admin API: purge, stats). */
struct cache_zone *cache_zone_find(const char *name);
/* Drops one reference; the last one stops the zone's disk writer after it has written what was
 * queued, then frees every object (none may still be referenced outside). NULL is ignored. */
void cache_zone_put(struct cache_zone *z);
const char *cache_zone_name(const struct cache_zone *z);
uint64_t cache_zone_max_object_size(const struct cache_zone *z);
/* Waits until the disk writer has written everything queued so far (tests, shutdown). */
void cache_zone_sync(struct cache_zone *z);

/* ---- counters -------------------------------------------------------------------------------- */

/* What the exchange counts (the store cannot tell a fresh hit from a stale one). */
enum cache_event { CACHE_EV_HIT, CACHE_EV_MISS, CACHE_EV_STALE, CACHE_EV_COLLAPSED, CACHE_EV_N };
/* One event; striped per thread, so cheap on the hit path. */
void cache_zone_note(struct cache_zone *z, enum cache_event ev);

struct cache_zone_stats {
    uint64_t hits, misses, stale, collapsed;   /* cache_zone_note */
    uint64_t bytes;            /* memory tier: bytes charged (bodies, heads, metadata, keys) */
    uint64_t objects;          /* memory tier: objects linked (COMPLETE and FILLING) */
    uint64_t evictions;        /* memory tier: objects evicted for the budget */
    uint64_t disk_bytes;       /* disk tier: file bytes */
    uint64_t disk_objects;     /* disk tier: files indexed */
    uint64_t disk_evictions;   /* disk tier: files removed for max_size */
    uint64_t disk_reads;       /* objects read back from disk */
    uint64_t disk_writes;      /* objects written to disk */
    uint64_t purged;           /* variants removed by purge */
};
void cache_zone_stats(struct cache_zone *z, struct cache_zone_stats *out);

/* ---- lookup and fill ------------------------------------------------------------------------ */

/* Returns the request's secondary key for the Vary header names NAMES (exactly as a filler gave
 * them in cache_response.vary_names; never empty when called). The slice must stay valid until
 * the store's call returns (e.g. built in a buffer CTX owns). Called with a shard lock held: must
 * be quick, must not block and must not call into the store. */
typedef struct str (*cache_vary_fn)(void *ctx, struct str names);

/* The object stored for KEY[0..KLEN) and the request's variant (VARY and CTX compute its
 * secondary key; VARY may be NULL when the caller has no Vary support: then only responses
 * stored without Vary match), with one reference; NULL on a miss. The COMPLETE object if there
 * is one (fresh or stale: the metadata tells), else a FILLING one of that variant (the caller may
 * collapse onto it). On a memory miss whose variant is on disk, reads it back first (synchronous,
 * see the top of this file). Marks the object used for eviction. */
struct cache_obj *cache_lookup(struct cache_zone *z, const void *key, size_t klen,
                               cache_vary_fn vary, void *ctx);

enum cache_fill_result {
    CACHE_FILL_NEW,        /* *OUT is a new FILLING object: the caller fills it */
    CACHE_FILL_COLLAPSED,  /* *OUT is another caller's FILLING object of the same variant */
    CACHE_FILL_ERROR,      /* allocation failure: *OUT is NULL; fetch without storing */
};
/* Starts filling the variant of KEY the request selects (under the Vary names stored now for KEY;
 * none yet: the secondary key is empty), or joins the fill already running for it. *OUT gets one
 * reference either way. A FILLING object has no head until its filler sets one; a collapsed
 * caller that then finds different Vary names must check cache_obj_vary_matches. */
enum cache_fill_result cache_fill_begin(struct cache_zone *z, const void *key, size_t klen,
                                        cache_vary_fn vary, void *ctx, struct cache_obj **out);

/* What a filler stores besides the body. All bytes are copied. */
struct cache_response {
    const void *head;          /* the raw HTTP/1.1 response head, as the exchange will serve it */
    size_t head_len;
    const void *meta;          /* opaque to the store (freshness data etc.); may be NULL */
    size_t meta_len;
    struct str tags;           /* space-separated purge tags (the tag header's value), or empty */
    struct str vary_names;     /* the response's Vary names as the exchange normalises them;
                                  empty = no Vary */
    struct str vary_key;       /* the filler's request's secondary key for VARY_NAMES */
    uint64_t length_hint;      /* the body length if known (Content-Length), else
                                  CACHE_LENGTH_UNKNOWN: sizes the first body block */
};

/* Sets O's head (once, before any append; the filler only). Notifies waiters. -1 when O is too
 * big or the budget cannot be met (O is then aborted), else 0. */
int cache_obj_set_head(struct cache_obj *o, const struct cache_response *r);
/* Appends body bytes (the filler only, after set_head). Readers see them at once. -1 when the
 * body passes the zone's max_object_size or the memory budget cannot be met: O is aborted
 * (readers see ABORTED) and the filler must stop filling. 0 otherwise. Notifies waiters. */
int cache_obj_append(struct cache_obj *o, const void *data, size_t len);
/* The body is complete: O becomes COMPLETE, replaces the previous object of its variant in the
 * index (unless O was purged meanwhile) and is queued for the disk tier. Notifies waiters. */
void cache_obj_finish(struct cache_obj *o);
/* The fill failed (upstream error, response not storable after all): O is unlinked, readers see
 * ABORTED. Notifies waiters. Idempotent; a no-op on a COMPLETE object. */
void cache_obj_abort(struct cache_obj *o);
/* A revalidation of OLD (COMPLETE) came back 304 (RFC 9111 §4.3.4): finishes the FILLING object
 * FILL with R's head and metadata (R's tags too when not empty, else OLD's) and OLD's body, shared
 * (not copied), under OLD's variant; FILL then replaces OLD like cache_obj_finish. The Vary
 * fields of R are ignored. -1 (FILL aborted) on allocation failure or when OLD is not COMPLETE. */
int cache_obj_update(struct cache_obj *fill, struct cache_obj *old, const struct cache_response *r);

/* ---- reading -------------------------------------------------------------------------------- */

enum cache_obj_state { CACHE_OBJ_FILLING, CACHE_OBJ_COMPLETE, CACHE_OBJ_ABORTED };

enum cache_obj_state cache_obj_state(const struct cache_obj *o);
/* The head, or NULL while a FILLING object has none yet. */
const char *cache_obj_head(const struct cache_obj *o, size_t *len);
/* The metadata (NULL with *LEN 0 when none or no head yet). */
const void *cache_obj_meta(const struct cache_obj *o, size_t *len);
/* The body bytes available now (all of them once COMPLETE). */
uint64_t cache_obj_length(const struct cache_obj *o);
/* Points *P at the contiguous body bytes available at OFF now and returns their count (0 when
 * none yet, or OFF is at or past the end). Safe while the filler appends. */
size_t cache_obj_read(const struct cache_obj *o, uint64_t off, const char **p);
/* The primary key, the Vary names and secondary key, and the tags (empty slices before the head
 * for the last three: a FILLING object's variant is then the one it was begun for). */
struct str cache_obj_key(const struct cache_obj *o);
struct str cache_obj_vary_names(const struct cache_obj *o);
struct str cache_obj_vary_key(const struct cache_obj *o);
struct str cache_obj_tags(const struct cache_obj *o);
/* Whether the request (VARY, CTX) selects O under O's own Vary names (true without names). For a
 * collapsed request once the head is there: false means it must fetch for itself. */
bool cache_obj_vary_matches(const struct cache_obj *o, cache_vary_fn vary, void *ctx);

struct cache_obj *cache_obj_ref(struct cache_obj *o);
/* Drops one reference; NULL is ignored. */
void cache_obj_put(struct cache_obj *o);

/* ---- waiting for a FILLING object ------------------------------------------------------------ */

/* A reader woken when the object it waits on changes: head set, body appended, finished or
 * aborted. NOTIFY runs on the filler's thread with the object's waiter lock held: it must be
 * quick, safe to call from any thread, must not call into the store, and may run many times
 * (e.g. set a flag and wake the reader's worker once). The fields after NOTIFY are the store's:
 * zero them before first use. */
struct cache_waiter {
    void (*notify)(struct cache_waiter *w);
    struct cache_waiter *prev, *next; /* private */
};
/* Registers W on O (W not already registered anywhere). Changes after this call notify W; the
 * caller reads O's state after registering, so no change is missed. */
void cache_obj_wait(struct cache_obj *o, struct cache_waiter *w);
/* Unregisters W (a no-op when W is not registered). On return no notify for W is running or will
 * run. */
void cache_obj_unwait(struct cache_obj *o, struct cache_waiter *w);

/* ---- purge ----------------------------------------------------------------------------------- */

/* Each unlinks what matches from the index at once (memory and disk; FILLING objects too, which
 * their filler then finishes unlinked) and returns the number of variants and fills removed. Prefix and tag
 * purges walk the whole zone, one shard lock at a time. A tag matches one whole space-separated
 * word of an object's tags. */
size_t cache_purge_key(struct cache_zone *z, const void *key, size_t klen);
size_t cache_purge_prefix(struct cache_zone *z, const void *prefix, size_t len);
size_t cache_purge_tag(struct cache_zone *z, const char *tag, size_t len);

#endif
