/* cache_evict: the order in which the memory tier gives objects up, and a trace simulator that
 * measures it. Pure: no locks, no clock; one `struct cache_evict` per shard, guarded by the
 * shard's lock (the store) or owned by one thread (the simulator). Sizes are bytes (the store)
 * or 1 per object (the simulator).
 *
 * S3-FIFO (Yang, Zhang, Qiu, Yue, Rashmi: "FIFO queues are all you need for cache eviction",
 * SOSP 2023). A new object enters a small FIFO (~10% of the capacity); a hit only raises a 2-bit
 * counter (no list move, so a hit is one store under the shard lock). When the small FIFO is over
 * its share, its oldest object moves to the main FIFO if it was hit while there, else it leaves
 * and its id goes to a ghost FIFO (ids only, as many as the main FIFO holds objects). A miss whose
 * id is in the ghost enters the main FIFO directly. The main FIFO evicts its oldest object whose
 * counter is 0, giving the others another round with the counter lowered by one.
 * One-hit wonders (a crawler, a scan of a large directory) thus pass through the small FIFO only
 * and never push the working set out, which is where plain LRU loses.
 *
 * Why S3-FIFO and not LRU (or a segmented LRU): measured with bench/cache_trace.c (cache_sim's
 * replay through this very code; 100k-object working set, 2M requests, cache of 1%, 5% and 10%
 * of the working set), S3-FIFO's hit ratio is above LRU's in every case:
 *   Zipf 0.9 + a scan of 10k one-hit wonders every 20k requests:  0.302/0.402/0.449 vs
 *                                                                  0.225/0.317/0.337 (LRU)
 *   Zipf 0.8, same scans:   0.211/0.313/0.370 vs 0.134/0.226/0.256
 *   Zipf 0.9, no scans:     0.451/0.599/0.671 vs 0.342/0.514/0.603
 * i.e. 1.2-1.6x LRU's hits under scans, still 1.1-1.3x without. Besides, a hit needs no list
 * move (one byte store under the shard lock, where LRU relinks on every hit), and the queues
 * are plain FIFOs, like the disk tier's CLOCK order. Promotion to main resets the counter
 * (keeping it measured slightly worse). CACHE_EVICT_LRU exists for that comparison. */
#ifndef PORTERO_CACHE_EVICT_H
#define PORTERO_CACHE_EVICT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum cache_evict_kind { CACHE_EVICT_S3FIFO, CACHE_EVICT_LRU };

/* Embedded in what is cached. Fields are the policy's while the node is inserted. */
struct cache_evict_node {
    struct cache_evict_node *newer, *older;
    uint64_t id;     /* identity for the ghost FIFO (a hash of the object's key) */
    uint64_t size;   /* fixed while inserted */
    uint8_t freq;    /* hits since insertion or the last pass, saturating at 3 */
    uint8_t queue;   /* private: which FIFO holds the node */
};

struct cache_evict_fifo {
    struct cache_evict_node *newest, *oldest;
    uint64_t bytes;
    size_t n;
};

struct cache_evict_ghost_slot {
    uint64_t id;     /* 0: empty */
    uint64_t stamp;  /* ghost clock when inserted */
};

struct cache_evict {
    enum cache_evict_kind kind;
    uint64_t capacity;                 /* what the small FIFO's share is computed from */
    struct cache_evict_fifo small, main; /* LRU: main only, newest = most recently used */
    struct cache_evict_ghost_slot *ghost; /* 4-way buckets; NULL until the first ghost */
    size_t ghost_slots;                /* a power of two */
    uint64_t ghost_clock;              /* ids inserted so far */
};

void cache_evict_init(struct cache_evict *e, enum cache_evict_kind kind, uint64_t capacity);
/* Frees the ghost table; inserted nodes are the caller's (they are simply forgotten). */
void cache_evict_free(struct cache_evict *e);
void cache_evict_set_capacity(struct cache_evict *e, uint64_t capacity);
/* N (id and size set) enters. */
void cache_evict_insert(struct cache_evict *e, struct cache_evict_node *n);
/* N was used. */
void cache_evict_touch(struct cache_evict *e, struct cache_evict_node *n);
/* N leaves without a ghost (purged or replaced); a no-op when N is not inserted (a zeroed node
 * or one cache_evict_next returned). */
void cache_evict_remove(struct cache_evict *e, struct cache_evict_node *n);
/* Chooses the next victim, removes it and returns it; NULL when nothing is inserted. */
struct cache_evict_node *cache_evict_next(struct cache_evict *e);
/* The same, deciding between the FIFOs for the caller (which sees several instances: the store's
 * shards): from the small FIFO (promoting hit objects to main on the way) when SMALL, else from
 * the main one. NULL when that FIFO has no victim. */
struct cache_evict_node *cache_evict_next_in(struct cache_evict *e, bool small);
/* Whether a small FIFO of SMALL bytes is over its share of CAPACITY. */
static inline bool cache_evict_small_over(uint64_t small, uint64_t capacity)
{
    return small * 100 >= capacity * 10;
}
/* Bytes of the inserted nodes. */
uint64_t cache_evict_bytes(const struct cache_evict *e);

/* ---- trace simulator ------------------------------------------------------------------------- */

struct cache_sim_trace_params {
    uint64_t objects;      /* working set: ids 1..objects, drawn with Zipf(alpha) popularity */
    double alpha;
    uint64_t requests;     /* trace length, scans included */
    uint64_t scan_every;   /* working-set requests between two scans (0: no scans) */
    uint64_t scan_len;     /* one-hit wonders per scan (ids never seen before or again) */
    uint64_t seed;
};
/* A malloc'ed trace of *N ids (the caller frees), or NULL on allocation failure. Deterministic
 * for given parameters. */
uint64_t *cache_sim_trace(const struct cache_sim_trace_params *p, size_t *n);
/* Replays IDS through a cache of CAPACITY objects (size 1 each) ordered by KIND; returns the hit
 * ratio (0..1), or -1 on allocation failure. */
double cache_sim_run(enum cache_evict_kind kind, const uint64_t *ids, size_t n, uint64_t capacity);

#endif
