#include "proxy/runtime.h"

#include <stdio.h>
#include <stdlib.h>

#include "cache/cache_store.h"
#include "tls/tls.h"

static void runtime_free(struct runtime *rt)
{
    const struct config *cfg = rt->cfg;
    for (size_t u = 0; u < cfg->n_upstreams; u++) {
        if (rt->rings)
            balance_ring_free(rt->rings[u]);
        if (!rt->states || !rt->states[u])
            continue;
        for (size_t s = 0; s < cfg->upstreams[u].n_servers; s++)
            if (rt->states[u][s])
                server_state_put(rt->states[u][s]);
        free(rt->states[u]);
    }
    free(rt->rings);
    free(rt->states);
    for (size_t i = 0; rt->zones && i < cfg->n_cache_zones; i++)
        if (rt->zones[i])
            cache_zone_put(rt->zones[i]);
    free(rt->zones);
    for (size_t i = 0; rt->listener_tls && i < cfg->n_listeners; i++)
        tls_server_free(rt->listener_tls[i]);
    free(rt->listener_tls);
    for (size_t u = 0; rt->upstream_tls && u < cfg->n_upstreams; u++)
        tls_client_free(rt->upstream_tls[u]);
    free(rt->upstream_tls);
    policy_set_free(rt->policy);
    config_unref(rt->cfg);
    free(rt);
}

static int runtime_fill(struct runtime *rt)
{
    const struct config *cfg = rt->cfg;
    size_t n = cfg->n_upstreams ? cfg->n_upstreams : 1;
    rt->rings = calloc(n, sizeof *rt->rings);
    rt->states = calloc(n, sizeof *rt->states);
    if (!rt->rings || !rt->states)
        return -1;
    for (size_t u = 0; u < cfg->n_upstreams; u++) {
        const struct conf_upstream *up = &cfg->upstreams[u];
        if (up->balance == BALANCE_HASH && !(rt->rings[u] = balance_ring_build(up)))
            return -1;
        if (!(rt->states[u] = calloc(up->n_servers, sizeof *rt->states[u])))
            return -1;
        for (size_t s = 0; s < up->n_servers; s++)
            if (!(rt->states[u][s] = server_state_get(up->name, up->servers[s].address)))
                return -1;
    }
    return 0;
}

/* The TLS contexts of every TLS listener and upstream: certificates, keys, OCSP responses and CA
 * files are read here, so that a reload with a bad file is refused and the old contexts stay. */
/* Cache zones live in a process-wide registry by name, so a reload keeps their contents. */
static int runtime_zones(struct runtime *rt, char *err, size_t cap)
{
    const struct config *cfg = rt->cfg;
    rt->zones = calloc(cfg->n_cache_zones ? cfg->n_cache_zones : 1, sizeof *rt->zones);
    if (!rt->zones)
        return -1;
    for (size_t i = 0; i < cfg->n_cache_zones; i++)
        if (!(rt->zones[i] = cache_zone_get(&cfg->cache_zones[i], err, cap)))
            return -1;
    return 0;
}

static int runtime_tls(struct runtime *rt, char *err, size_t cap)
{
    const struct config *cfg = rt->cfg;
    rt->listener_tls = calloc(cfg->n_listeners ? cfg->n_listeners : 1, sizeof *rt->listener_tls);
    rt->upstream_tls = calloc(cfg->n_upstreams ? cfg->n_upstreams : 1, sizeof *rt->upstream_tls);
    if (!rt->listener_tls || !rt->upstream_tls) {
        snprintf(err, cap, "out of memory building the configuration");
        return -1;
    }
    for (size_t i = 0; i < cfg->n_listeners; i++)
        if (cfg->listeners[i].tls.enabled &&
            !(rt->listener_tls[i] = tls_server_build(&cfg->listeners[i], err, cap)))
            return -1;
    for (size_t u = 0; u < cfg->n_upstreams; u++)
        if (cfg->upstreams[u].tls.enabled &&
            !(rt->upstream_tls[u] = tls_client_build(&cfg->upstreams[u], err, cap)))
            return -1;
    return 0;
}

struct runtime *runtime_build(struct config *cfg, uint64_t generation, const struct runtime *prev,
                              char *err, size_t cap)
{
    struct runtime *rt = calloc(1, sizeof *rt);
    snprintf(err, cap, "out of memory building the configuration");
    if (!rt)
        return NULL;
    atomic_init(&rt->refs, 1);
    rt->generation = generation;
    rt->cfg = config_ref(cfg);
    if (runtime_fill(rt) < 0) {
        runtime_free(rt);
        return NULL;
    }
    rt->policy = policy_set_build(cfg, prev ? prev->policy : NULL, err, cap);
    if (!rt->policy || runtime_tls(rt, err, cap) < 0 || runtime_zones(rt, err, cap) < 0) {
        runtime_free(rt);
        return NULL;
    }
    return rt;
}

struct runtime *runtime_ref(struct runtime *rt)
{
    atomic_fetch_add(&rt->refs, 1);
    return rt;
}

void runtime_unref(struct runtime *rt)
{
    if (rt && atomic_fetch_sub(&rt->refs, 1) == 1)
        runtime_free(rt);
}
