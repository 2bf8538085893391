#include "proxy/select.h"

#include "core/log.h"

static bool select_down(const struct conf_upstream *up, struct server_state *const *states, size_t s, uint64_t now)
{
    return up->servers[s].drain || !server_state_usable(states[s], now);
}

/* Slow start: a server back in service gets a weight that grows with its time in service. */
static void select_slow_start(struct worker_upstream *wu, const struct conf_upstream *up,
                              struct server_state *const *states, uint64_t now)
{
    for (size_t s = 0; s < up->n_servers; s++) {
        uint32_t w = server_state_effective_weight(states[s], up->servers[s].weight, up->slow_start_ms, now);
        balance_set_weight(&wu->bal, s, w == up->servers[s].weight ? 0 : w);
    }
}

int select_server(struct worker_upstream *wu, const struct conf_upstream *up, struct server_state *const *states,
                  const bool *tried, uint64_t key, uint64_t now)
{
    size_t candidates = 0, usable = 0, n_tried = 0;
    for (size_t s = 0; s < up->n_servers; s++) {
        bool down = select_down(up, states, s, now);
        wu->skip[s] = tried[s] || down;
        n_tried += tried[s];
        candidates += !tried[s] && !up->servers[s].drain;
        usable += !tried[s] && !down;
    }
    if (!candidates) /* a pool that is all draining has no server for a new request: 503 */
        return n_tried ? SELECT_NONE_LEFT : SELECT_ALL_DOWN;
    if (!usable) {
        if (!up->panic)
            return SELECT_ALL_DOWN;
        for (size_t s = 0; s < up->n_servers; s++) /* panic: health is ignored, draining is not */
            wu->skip[s] = tried[s] || up->servers[s].drain;
    }
    if (up->slow_start_ms)
        select_slow_start(wu, up, states, now);
    int s = balance_pick(&wu->bal, key, wu->skip);
    return s < 0 ? SELECT_NONE_LEFT : s;
}

bool select_has_candidate(const struct conf_upstream *up, struct server_state *const *states, const bool *tried,
                          uint64_t now)
{
    for (size_t s = 0; s < up->n_servers; s++)
        if (!tried[s] && (!select_down(up, states, s, now) || (up->panic && !up->servers[s].drain)))
            return true;
    return false;
}

void select_record(struct worker *w, const struct conf_upstream *up, struct server_state *const *states, size_t s,
                   bool success, uint64_t now)
{
    if (success) {
        server_state_record(states[s], true, NULL, 0, 0, now); /* reads, writes only after failures */
        return;
    }
    const struct conf_outlier *o = &up->outlier;
    struct outlier_policy policy = { o->consecutive_failures, o->base_ejection_ms, o->max_ejection_ms,
                                     o->max_ejected_percent };
    size_t ejected = 0;
    for (size_t i = 0; i < up->n_servers; i++)
        ejected += atomic_load_explicit(&states[i]->ejected_until, memory_order_relaxed) > now;
    if (server_state_record(states[s], false, &policy, up->n_servers, ejected, now)) {
        STATS_ADD(w->stats.ejections, 1);
        log_warn("upstream %s server %s ejected for %llu ms after %u consecutive failures", up->name,
                 up->servers[s].address,
                 (unsigned long long)(atomic_load(&states[s]->ejected_until) - now), o->consecutive_failures);
    }
}
