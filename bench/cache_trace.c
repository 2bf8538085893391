/* cache_trace: hit ratio of the memory tier's eviction policy (S3-FIFO) against plain LRU on
 * synthetic traces, through the same cache_evict code the store runs. Prints one line per case
 * and, with --json, one JSON object for bench/run.py.
 *
 * Traces: a Zipf(alpha) working set of OBJECTS ids; "scan" traces add, every SCAN_EVERY requests,
 * a burst of SCAN_LEN one-hit wonders (a crawler, a backup job walking every URL once). The cache
 * holds a fraction of the working set. Deterministic (fixed seed). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache/cache_evict.h"

struct trace_case {
    const char *name;
    struct cache_sim_trace_params p;
};

static const struct trace_case cases[] = {
    { "zipf0.9+scans", { 100000, 0.9, 2000000, 20000, 10000, 1 } },
    { "zipf0.8+scans", { 100000, 0.8, 2000000, 20000, 10000, 2 } },
    { "zipf1.0+scans", { 100000, 1.0, 2000000, 20000, 10000, 3 } },
    { "zipf0.9+heavy-scans", { 100000, 0.9, 2000000, 10000, 20000, 4 } },
    { "zipf0.9 (no scans)", { 100000, 0.9, 2000000, 0, 0, 5 } },
};

static const double fractions[] = { 0.01, 0.05, 0.10 };

int main(int argc, char **argv)
{
    int json = argc > 1 && strcmp(argv[1], "--json") == 0;
    if (json)
        printf("{\"cases\": [");
    else
        printf("%-22s %8s %9s %9s %7s\n", "trace", "cache", "S3-FIFO", "LRU", "ratio");
    int first = 1;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n;
        uint64_t *ids = cache_sim_trace(&cases[i].p, &n);
        if (!ids) {
            fprintf(stderr, "cache_trace: out of memory\n");
            return 1;
        }
        for (size_t f = 0; f < sizeof fractions / sizeof fractions[0]; f++) {
            uint64_t cap = (uint64_t)(fractions[f] * (double)cases[i].p.objects);
            double s3 = cache_sim_run(CACHE_EVICT_S3FIFO, ids, n, cap);
            double lru = cache_sim_run(CACHE_EVICT_LRU, ids, n, cap);
            if (json)
                printf("%s{\"trace\": \"%s\", \"cache_objects\": %llu, \"s3fifo\": %.4f, "
                       "\"lru\": %.4f}", first ? "" : ", ", cases[i].name,
                       (unsigned long long)cap, s3, lru);
            else
                printf("%-22s %8llu %9.4f %9.4f %7.3f\n", cases[i].name,
                       (unsigned long long)cap, s3, lru, lru > 0 ? s3 / lru : 0);
            first = 0;
        }
        free(ids);
    }
    if (json)
        printf("]}\n");
    return 0;
}
