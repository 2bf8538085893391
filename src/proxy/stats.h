/* stats: per-worker counters, summed by the control thread when metrics or the admin API are read.
 *
 * Each worker writes only its own `struct worker_stats`, with relaxed atomic loads and stores
 * (STATS_ADD): no lock and no read-modify-write instruction on the request path. The control
 * thread reads with relaxed loads; a sum may be a few requests behind, never torn. Entries are
 * keyed by name and never removed, so counters stay monotonic across reloads. */
#ifndef PORTERO_PROXY_STATS_H
#define PORTERO_PROXY_STATS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "policy/policy.h"

typedef _Atomic uint64_t stats_u64; /* the one typedef here: an owner-written counter */

#define STATS_ADD(field, n) \
    atomic_store_explicit(&(field), atomic_load_explicit(&(field), memory_order_relaxed) + (n), memory_order_relaxed)
#define STATS_SET(field, v) atomic_store_explicit(&(field), (v), memory_order_relaxed)
#define STATS_GET(field) atomic_load_explicit(&(field), memory_order_relaxed)

/* Latency histogram upper bounds in milliseconds; a last implicit +Inf bucket follows. */
#define STATS_LATENCY_BUCKETS 12
extern const uint32_t stats_latency_bounds_ms[STATS_LATENCY_BUCKETS];

struct stats_histogram {
    stats_u64 buckets[STATS_LATENCY_BUCKETS + 1]; /* non-cumulative; the last is +Inf */
    stats_u64 sum_ms;
    stats_u64 count;
};

/* Counters of one route, upstream or server (by name). */
struct stats_entry {
    char name[128];                 /* route name, upstream name, or "upstream/address" */
    stats_u64 requests[6];          /* by status class: [1]..[5] = 1xx..5xx, [0] = no status */
    stats_u64 bytes_in;
    stats_u64 bytes_out;
    stats_u64 retries;
    stats_u64 active;               /* gauge: exchanges in progress (servers) */
    stats_u64 idle_conns;           /* gauge: pooled idle connections (servers) */
    struct stats_histogram latency; /* total (routes) or upstream (upstreams, servers) */
};

#define STATS_MAX_ENTRIES 1024
struct stats_table {
    struct stats_entry *entries;    /* STATS_MAX_ENTRIES, allocated once, never moved */
    _Atomic size_t n;               /* published after an entry is initialised */
};

struct worker_stats {
    struct stats_table routes;
    struct stats_table upstreams;
    struct stats_table servers;
    struct stats_histogram latency_total;     /* every exchange */
    struct stats_histogram latency_upstream;  /* time to the upstream's response head */
    stats_u64 client_conns_active;            /* gauge: open client connections */
    stats_u64 client_conns_idle;              /* gauge: between requests */
    stats_u64 upstream_conns_active;          /* gauge: lent to exchanges */
    stats_u64 upstream_conns_idle;            /* gauge: in pools */
    stats_u64 bytes_in;
    stats_u64 bytes_out;
    stats_u64 retries;
    stats_u64 retry_budget_exhausted;
    stats_u64 ejections;
    stats_u64 connections_accepted;
    stats_u64 tls_handshakes;                 /* completed client handshakes */
    stats_u64 tls_resumed;                    /* ... of which resumed a session */
    stats_u64 tls_handshake_failed;
    stats_u64 h2_connections;                 /* connections that spoke HTTP/2 */
    stats_u64 h2_streams;                     /* HTTP/2 streams that carried a request */
    stats_u64 h2_flood_closed;                /* connections closed by a flood defence */
    stats_u64 upstream_tls_failed;            /* upstream handshakes that failed */
    struct policy_counters policy;            /* what the request steps refused */
};

int worker_stats_init(struct worker_stats *s);
void worker_stats_free(struct worker_stats *s);
/* The entry named NAME, created if absent (owner thread only). NULL when the table is full. */
struct stats_entry *stats_table_entry(struct stats_table *t, const char *name);
void stats_histogram_observe(struct stats_histogram *h, uint64_t ms);
/* Status class index for STATUS (0 when no status). */
static inline unsigned stats_status_class(int status)
{
    return status >= 100 && status < 600 ? (unsigned)(status / 100) : 0;
}

#endif
