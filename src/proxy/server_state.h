/* server_state: what is known about one server at run time, shared by every worker and the
 * control thread, and kept across reloads (keyed by "upstream/address").
 *
 * Writers: the control thread (active health checks, slow-start clock) and workers (passive
 * outcomes). Everything is an atomic with relaxed order: a worker reading a slightly stale
 * verdict is harmless, and the success path only *reads* shared state (it writes the failure
 * counter back to 0 only when it was not 0), so the hot path makes no read-modify-write. */
#ifndef PORTERO_PROXY_SERVER_STATE_H
#define PORTERO_PROXY_SERVER_STATE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct server_state {
    char *key;                          /* "upstream/address", owned */
    atomic_int refs;                    /* snapshots and checkers holding it */
    /* active health (control thread) */
    atomic_bool active_up;              /* last verdict; true until checks say otherwise */
    atomic_uint check_successes;        /* consecutive, toward `rise` */
    atomic_uint check_failures;         /* consecutive, toward `fall` */
    /* passive health (workers) */
    atomic_uint consecutive_failures;   /* connect failures, resets, 5xx in a row */
    atomic_uint ejections;              /* times ejected; grows the ejection time */
    atomic_uint_least64_t ejected_until;/* loop clock ms; 0 = not ejected */
    /* service start, for slow start: when it last became usable (ms, 0 = since start) */
    atomic_uint_least64_t up_since;
    /* counters for the admin API and metrics (relaxed adds, failures and transitions only) */
    atomic_uint_least64_t total_ejections;
    atomic_uint_least64_t check_total;
    atomic_uint_least64_t check_failed_total;
};

/* Process-wide registry; thread-safe (a mutex, taken only on reload and by the control thread). */
struct server_state *server_state_get(const char *upstream, const char *address); /* +1 ref, creates */
void server_state_put(struct server_state *s);                                      /* -1 ref */
/* Calls FN for every live entry (control thread: metrics, admin). */
void server_state_foreach(void (*fn)(struct server_state *s, void *arg), void *arg);
void server_state_registry_free(void);

/* Outlier ejection policy of an upstream (config `outlier`). */
struct outlier_policy {
    uint32_t consecutive_failures;  /* failures in a row that eject; 0 = passive checks off */
    uint64_t base_ejection_ms;      /* first ejection time; doubles with each ejection */
    uint64_t max_ejection_ms;       /* cap */
    uint32_t max_ejected_percent;   /* never eject more than this share of the pool */
};

/* True when S may get new requests at NOW: active verdict up and not ejected. */
bool server_state_usable(const struct server_state *s, uint64_t now_ms);
/* Records the outcome of one exchange on S. On failure, may eject S for
 * min(base << ejections, max) if POLICY allows and fewer than max_ejected_percent of the N_POOL
 * servers (counted with N_EJECTED, the caller's current count) are ejected. Returns true if it
 * ejected S now. */
bool server_state_record(struct server_state *s, bool success, const struct outlier_policy *policy,
                         size_t n_pool, size_t n_ejected, uint64_t now_ms);
/* Slow start: WEIGHT scaled by how far S is into its ramp of SLOW_START_MS (at least 1). */
uint32_t server_state_effective_weight(const struct server_state *s, uint32_t weight,
                                       uint64_t slow_start_ms, uint64_t now_ms);

/* Retry budget (per worker, no sharing): retries allowed while retries <= ratio x requests,
 * over a sliding window. */
struct retry_budget {
    uint32_t percent;               /* e.g. 20 */
    uint32_t min_retries;           /* always allow this many per window (low traffic) */
    uint64_t window_start_ms;
    uint64_t window_ms;
    uint64_t requests;              /* in this window */
    uint64_t retries;
};
void retry_budget_init(struct retry_budget *b, uint32_t percent, uint32_t min_retries, uint64_t window_ms);
void retry_budget_on_request(struct retry_budget *b, uint64_t now_ms);
/* Takes one retry from the budget if it allows; returns false when exhausted. */
bool retry_budget_take(struct retry_budget *b, uint64_t now_ms);
/* Jittered exponential backoff for retry number ATTEMPT (1-based): uniform in
 * [0, min(base << (attempt-1), cap)]; RNG is caller-owned xorshift state. */
uint64_t retry_backoff_ms(uint64_t base_ms, uint64_t cap_ms, unsigned attempt, uint64_t *rng);

#endif
