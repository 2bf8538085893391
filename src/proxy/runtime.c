#include "proxy/runtime.h"

#include <stdio.h>
#include <stdlib.h>

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
    if (!rt->policy) {
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
