/* metrics: GET /metrics — gathers what the control thread knows and hands it to metrics_format. */
#include "admin/admin.h"

#include <stdlib.h>

#include "admin/metrics_fmt.h"

/* The servers of the running config with their shared state; malloc'd array, count in *N. */
static struct metrics_server *metrics_servers(struct control *ctl, size_t *n)
{
    const struct config *cfg = control_config(ctl);
    uint64_t now = loop_now(control_loop(ctl));
    size_t total = 0, k = 0;
    for (size_t u = 0; u < cfg->n_upstreams; u++)
        total += cfg->upstreams[u].n_servers;
    struct metrics_server *v = calloc(total ? total : 1, sizeof *v);
    for (size_t u = 0; v && u < cfg->n_upstreams; u++) {
        const struct conf_upstream *up = &cfg->upstreams[u];
        for (size_t s = 0; s < up->n_servers; s++) {
            struct server_state *st = control_server_state(ctl, u, s);
            v[k++] = (struct metrics_server){
                .upstream = up->name,
                .address = up->servers[s].address,
                .up = server_state_usable(st, now),
                .ejections = atomic_load_explicit(&st->total_ejections, memory_order_relaxed),
                .checks = atomic_load_explicit(&st->check_total, memory_order_relaxed),
                .checks_failed = atomic_load_explicit(&st->check_failed_total, memory_order_relaxed),
            };
        }
    }
    *n = k;
    return v;
}

/* The cache zones of the running config with the store's counters; malloc'd array, count in *N. */
static struct metrics_cache_zone *metrics_zones(struct control *ctl, size_t *n)
{
    const struct config *cfg = control_config(ctl);
    struct metrics_cache_zone *v = calloc(cfg->n_cache_zones ? cfg->n_cache_zones : 1, sizeof *v);
    *n = 0;
    for (size_t i = 0; v && i < cfg->n_cache_zones; i++) {
        struct cache_zone *z = cache_zone_find(cfg->cache_zones[i].name);
        v[i].name = cfg->cache_zones[i].name;
        if (z)
            cache_zone_stats(z, &v[i].stats);
        cache_zone_put(z);
        *n = i + 1;
    }
    return v;
}

void metrics_render(struct control *ctl, struct sbuf *out)
{
    size_t nw = control_worker_count(ctl);
    struct worker_stats **stats = calloc(nw ? nw : 1, sizeof *stats);
    struct metrics_source src = {
        .stats = stats,
        .n_workers = stats ? nw : 0,
        .reloads_ok = control_reloads(ctl, true),
        .reloads_failed = control_reloads(ctl, false),
        .start_time = control_started_at(ctl),
    };
    for (size_t i = 0; i < src.n_workers; i++)
        stats[i] = control_worker_stats(ctl, i);
    struct metrics_server *servers = metrics_servers(ctl, &src.n_servers);
    src.servers = servers;
    if (!servers)
        src.n_servers = 0;
    struct metrics_cache_zone *zones = metrics_zones(ctl, &src.n_zones);
    src.zones = zones;
    metrics_format(&src, out);
    free(zones);
    free(servers);
    free(stats);
}
