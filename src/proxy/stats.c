#include "proxy/stats.h"

#include <stdlib.h>
#include <string.h>

const uint32_t stats_latency_bounds_ms[STATS_LATENCY_BUCKETS] = {
    1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000,
};

static int stats_table_init(struct stats_table *t)
{
    t->entries = calloc(STATS_MAX_ENTRIES, sizeof *t->entries);
    atomic_store(&t->n, 0);
    return t->entries ? 0 : -1;
}

int worker_stats_init(struct worker_stats *s)
{
    memset(s, 0, sizeof *s);
    if (stats_table_init(&s->routes) < 0 || stats_table_init(&s->upstreams) < 0 ||
        stats_table_init(&s->servers) < 0) {
        worker_stats_free(s);
        return -1;
    }
    return 0;
}

void worker_stats_free(struct worker_stats *s)
{
    free(s->routes.entries);
    free(s->upstreams.entries);
    free(s->servers.entries);
    s->routes.entries = s->upstreams.entries = s->servers.entries = NULL;
}

struct stats_entry *stats_table_entry(struct stats_table *t, const char *name)
{
    size_t n = atomic_load_explicit(&t->n, memory_order_relaxed);
    for (size_t i = 0; i < n; i++)
        if (strcmp(t->entries[i].name, name) == 0)
            return &t->entries[i];
    if (n == STATS_MAX_ENTRIES)
        return NULL;
    struct stats_entry *e = &t->entries[n];
    size_t len = strlen(name);
    if (len >= sizeof e->name)
        len = sizeof e->name - 1;
    memcpy(e->name, name, len);
    e->name[len] = '\0';
    atomic_store_explicit(&t->n, n + 1, memory_order_release); /* readers see a whole entry */
    return e;
}

void stats_histogram_observe(struct stats_histogram *h, uint64_t ms)
{
    unsigned i = 0;
    while (i < STATS_LATENCY_BUCKETS && ms > stats_latency_bounds_ms[i])
        i++;
    STATS_ADD(h->buckets[i], 1);
    STATS_ADD(h->sum_ms, ms);
    STATS_ADD(h->count, 1);
}
