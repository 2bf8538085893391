/* metrics_fmt: sums of the per-worker counters and their Prometheus text exposition (0.0.4),
 * apart from the control thread so that tests can feed them fake workers. Private to src/admin/.
 *
 * Reading is lock-free: table sizes are loaded with acquire (entries are published with a release
 * store), counters with relaxed loads; a sum may be a few requests behind, never torn. */
#ifndef PORTERO_ADMIN_METRICS_FMT_H
#define PORTERO_ADMIN_METRICS_FMT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cache/cache_store.h"
#include "core/sbuf.h"
#include "proxy/stats.h"

enum metrics_table { METRICS_ROUTES, METRICS_UPSTREAMS, METRICS_SERVERS };

/* One route, upstream or server ("UPSTREAM/ADDRESS") summed over workers. Gauges that are
 * transiently negative (a worker's own adds and subtracts race a reader) read as 0. */
struct metrics_sum {
    uint64_t requests[6];       /* by status class, [0] = no status */
    uint64_t requests_total;
    uint64_t bytes_in, bytes_out, retries;
    uint64_t active;            /* gauge: exchanges in progress */
    uint64_t idle_conns;        /* gauge: pooled idle connections */
    uint64_t latency_sum_ms, latency_count;
};

/* Sums the entries named NAME (truncated as stats_table_entry truncates) of table WHICH over
 * STATS[0..N). Returns how many workers have such an entry (OUT is all zero when none). */
size_t metrics_sum_entry(struct worker_stats *const *stats, size_t n, enum metrics_table which,
                         const char *name, struct metrics_sum *out);

/* What the control thread knows of one server of the running config. */
struct metrics_server {
    const char *upstream;
    const char *address;
    bool up;                    /* server_state_usable() now */
    uint64_t ejections;         /* server_state.total_ejections */
    uint64_t checks, checks_failed;
};

/* One cache zone of the running config and its counters. */
struct metrics_cache_zone {
    const char *name;
    struct cache_zone_stats stats; /* cache_zone_stats(); all 0 when the store has not opened it */
};

struct metrics_source {
    struct worker_stats *const *stats;
    size_t n_workers;
    const struct metrics_server *servers;
    size_t n_servers;
    const struct metrics_cache_zone *zones;
    size_t n_zones;
    uint64_t reloads_ok, reloads_failed;
    uint64_t start_time;        /* wall clock seconds */
};

/* Appends the whole exposition (# HELP / # TYPE for each family) to OUT. */
void metrics_format(const struct metrics_source *src, struct sbuf *out);
/* Appends V[0..N) escaped as a label value (\\, \", \n). */
void metrics_label_escape(struct sbuf *out, const char *v, size_t n);
/* Appends MS milliseconds as decimal seconds: 1 -> "0.001", 2500 -> "2.5", 10000 -> "10". */
void metrics_seconds(struct sbuf *out, uint64_t ms);

#endif
