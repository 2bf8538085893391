/* admin_rate: per-server request rates for GET /upstreams, from totals sampled once a second. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin/admin_priv.h"
#include "admin/metrics_fmt.h"

void admin_server_key(char out[ADMIN_KEY_MAX], const char *upstream, const char *address)
{
    snprintf(out, ADMIN_KEY_MAX, "%s/%s", upstream, address);
}

struct worker_stats **admin_worker_stats(struct control *ctl, size_t *n)
{
    size_t nw = control_worker_count(ctl);
    struct worker_stats **v = calloc(nw ? nw : 1, sizeof *v);
    *n = v ? nw : 0;
    for (size_t i = 0; v && i < nw; i++)
        v[i] = control_worker_stats(ctl, i);
    return v;
}

static const struct admin_rate *admin_rate_find(const struct admin_rates *r, const char *key)
{
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->v[i].key, key) == 0)
            return &r->v[i];
    return NULL;
}

static void admin_rate_push(struct admin_rate *e, uint64_t at, uint64_t total)
{
    e->at[e->next] = at;
    e->total[e->next] = total;
    e->next = (e->next + 1) % ADMIN_RATE_SAMPLES;
    if (e->n < ADMIN_RATE_SAMPLES)
        e->n++;
}

void admin_rates_sample(struct admin_rates *r, struct control *ctl)
{
    const struct config *cfg = control_config(ctl);
    uint64_t now = loop_now(control_loop(ctl));
    size_t total = 0, nw, k = 0;
    for (size_t u = 0; u < cfg->n_upstreams; u++)
        total += cfg->upstreams[u].n_servers;
    struct admin_rate *v = calloc(total ? total : 1, sizeof *v);
    struct worker_stats **stats = admin_worker_stats(ctl, &nw);
    if (!v || !stats) {
        free(v);
        free(stats);
        return; /* keep the old history; the next tick tries again */
    }
    for (size_t u = 0; u < cfg->n_upstreams; u++) {
        for (size_t s = 0; s < cfg->upstreams[u].n_servers; s++) {
            struct admin_rate *e = &v[k++];
            admin_server_key(e->key, cfg->upstreams[u].name, cfg->upstreams[u].servers[s].address);
            const struct admin_rate *old = admin_rate_find(r, e->key);
            if (old)
                *e = *old;
            struct metrics_sum sum;
            metrics_sum_entry(stats, nw, METRICS_SERVERS, e->key, &sum);
            admin_rate_push(e, now, sum.requests_total);
        }
    }
    free(stats);
    free(r->v);
    r->v = v;
    r->n = k;
}

double admin_rates_get(const struct admin_rates *r, const char *key, uint64_t total, uint64_t now_ms)
{
    const struct admin_rate *e = admin_rate_find(r, key);
    if (!e || !e->n)
        return 0;
    unsigned oldest = e->n < ADMIN_RATE_SAMPLES ? 0 : e->next;
    uint64_t elapsed = now_ms - e->at[oldest];
    if (now_ms < e->at[oldest] || elapsed < 1000 || total < e->total[oldest])
        return 0;
    return (double)(total - e->total[oldest]) * 1000.0 / (double)elapsed;
}

void admin_rates_free(struct admin_rates *r)
{
    free(r->v);
    r->v = NULL;
    r->n = 0;
}
