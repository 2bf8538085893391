/* The eviction simulator: a synthetic scan-heavy trace and a replay through cache_evict, so the
 * policy the store ships is the policy that is measured. */
#include "cache/cache_evict.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>

/* One-hit wonders take ids from here up: never equal to a working-set id. */
#define SIM_SCAN_BASE (1ull << 48)

/* splitmix64 (Steele, Lea, Flood 2014): small, fast and good enough for a synthetic trace. */
static uint64_t sim_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double sim_uniform(uint64_t *state) { return (double)(sim_next(state) >> 11) * 0x1p-53; }

/* The Zipf cumulative distribution over ranks 1..N (rank r has weight 1/r^alpha). */
static double *sim_zipf_cdf(uint64_t n, double alpha)
{
    double *cdf = malloc(n * sizeof *cdf);
    if (!cdf)
        return NULL;
    double sum = 0;
    for (uint64_t r = 0; r < n; r++) {
        sum += 1.0 / pow((double)(r + 1), alpha);
        cdf[r] = sum;
    }
    for (uint64_t r = 0; r < n; r++)
        cdf[r] /= sum;
    return cdf;
}

static uint64_t sim_zipf_draw(const double *cdf, uint64_t n, double u)
{
    uint64_t lo = 0, hi = n - 1;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        if (cdf[mid] < u)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

uint64_t *cache_sim_trace(const struct cache_sim_trace_params *p, size_t *n)
{
    if (!p->objects || !p->requests)
        return NULL;
    uint64_t *ids = malloc(p->requests * sizeof *ids);
    double *cdf = sim_zipf_cdf(p->objects, p->alpha);
    if (!ids || !cdf) {
        free(ids);
        free(cdf);
        return NULL;
    }
    uint64_t state = p->seed, scan_id = SIM_SCAN_BASE, since_scan = 0;
    size_t i = 0;
    while (i < p->requests) {
        if (p->scan_every && since_scan == p->scan_every) {
            for (uint64_t k = 0; k < p->scan_len && i < p->requests; k++)
                ids[i++] = scan_id++;
            since_scan = 0;
            continue;
        }
        uint64_t rank = sim_zipf_draw(cdf, p->objects, sim_uniform(&state));
        ids[i++] = 1 + rank;
        since_scan++;
    }
    free(cdf);
    *n = i;
    return ids;
}

/* --- replay ----------------------------------------------------------------------------------- */

struct sim_obj {
    struct cache_evict_node node; /* first: a node pointer is an object pointer */
    struct sim_obj *chain;
};

struct sim_map {
    struct sim_obj **slots;
    size_t mask;
};

static struct sim_obj **sim_link(struct sim_map *m, uint64_t id)
{
    struct sim_obj **link = &m->slots[(id * 0x9e3779b97f4a7c15ull >> 17) & m->mask];
    while (*link && (*link)->node.id != id)
        link = &(*link)->chain;
    return link;
}

static void sim_drop(struct sim_map *m, struct sim_obj *o)
{
    struct sim_obj **link = sim_link(m, o->node.id);
    *link = o->chain;
    free(o);
}

/* A miss: caches ID, evicting down to CAPACITY. False on allocation failure. */
static bool sim_admit(struct cache_evict *e, struct sim_map *m, struct sim_obj **link, uint64_t id,
                      uint64_t capacity)
{
    struct sim_obj *o = calloc(1, sizeof *o);
    if (!o)
        return false;
    o->node.id = id;
    o->node.size = 1;
    *link = o;
    cache_evict_insert(e, &o->node);
    while (cache_evict_bytes(e) > capacity) {
        struct cache_evict_node *v = cache_evict_next(e);
        if (!v)
            break;
        sim_drop(m, (struct sim_obj *)v);
    }
    return true;
}

static void sim_clear(struct sim_map *m)
{
    for (size_t i = 0; i <= m->mask; i++) {
        while (m->slots[i]) {
            struct sim_obj *o = m->slots[i];
            m->slots[i] = o->chain;
            free(o);
        }
    }
    free(m->slots);
}

double cache_sim_run(enum cache_evict_kind kind, const uint64_t *ids, size_t n, uint64_t capacity)
{
    struct sim_map m = { 0 };
    size_t slots = 1024;
    while (slots < 2 * capacity)
        slots *= 2;
    m.slots = calloc(slots, sizeof *m.slots);
    if (!m.slots || !capacity) {
        free(m.slots);
        return -1;
    }
    m.mask = slots - 1;
    struct cache_evict e;
    cache_evict_init(&e, kind, capacity);
    uint64_t hits = 0;
    bool ok = true;
    for (size_t i = 0; i < n && ok; i++) {
        struct sim_obj **link = sim_link(&m, ids[i]);
        if (*link) {
            hits++;
            cache_evict_touch(&e, &(*link)->node);
        } else {
            ok = sim_admit(&e, &m, link, ids[i], capacity);
        }
    }
    cache_evict_free(&e);
    sim_clear(&m);
    return ok && n ? (double)hits / (double)n : (ok ? 0 : -1);
}
