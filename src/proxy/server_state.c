#include "proxy/server_state.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- registry ---------------------------------------------------------------------------- */

/* Chained hash for lookup, plus a list in creation order so that foreach (metrics, admin
 * listings) is stable from one scrape to the next. */
#define SERVER_STATE_BUCKETS 256

struct server_state_entry {
    struct server_state st;
    struct server_state_entry *chain;          /* next in the same bucket */
    struct server_state_entry *prev, *next;    /* creation order */
};

static pthread_mutex_t server_state_lock = PTHREAD_MUTEX_INITIALIZER;
static struct server_state_entry *server_state_buckets[SERVER_STATE_BUCKETS];
static struct server_state_entry *server_state_head, *server_state_tail;

/* ST is the first member, but say so through offsetof rather than rely on it silently. */
static struct server_state_entry *server_state_entry_of(struct server_state *s)
{
    return (struct server_state_entry *)((char *)s - offsetof(struct server_state_entry, st));
}

static size_t server_state_hash(const char *key)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)key; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    return (size_t)(h % SERVER_STATE_BUCKETS);
}

static struct server_state_entry *server_state_find(const char *key, size_t bucket)
{
    for (struct server_state_entry *e = server_state_buckets[bucket]; e; e = e->chain)
        if (strcmp(e->st.key, key) == 0)
            return e;
    return NULL;
}

static struct server_state_entry *server_state_create(const char *upstream, const char *address)
{
    struct server_state_entry *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    size_t len = strlen(upstream) + 1 + strlen(address) + 1;
    if (!(e->st.key = malloc(len))) {
        free(e);
        return NULL;
    }
    snprintf(e->st.key, len, "%s/%s", upstream, address);
    atomic_init(&e->st.refs, 1);
    atomic_init(&e->st.active_up, true); /* innocent until a health check says otherwise */
    atomic_init(&e->st.check_successes, 0);
    atomic_init(&e->st.check_failures, 0);
    atomic_init(&e->st.consecutive_failures, 0);
    atomic_init(&e->st.ejections, 0);
    atomic_init(&e->st.ejected_until, 0);
    atomic_init(&e->st.up_since, 0);
    atomic_init(&e->st.total_ejections, 0);
    atomic_init(&e->st.check_total, 0);
    atomic_init(&e->st.check_failed_total, 0);
    return e;
}

static void server_state_link(struct server_state_entry *e, size_t bucket)
{
    e->chain = server_state_buckets[bucket];
    server_state_buckets[bucket] = e;
    e->prev = server_state_tail;
    if (server_state_tail)
        server_state_tail->next = e;
    else
        server_state_head = e;
    server_state_tail = e;
}

static void server_state_unlink(struct server_state_entry *e)
{
    struct server_state_entry **p = &server_state_buckets[server_state_hash(e->st.key)];
    while (*p != e)
        p = &(*p)->chain;
    *p = e->chain;
    if (e->prev)
        e->prev->next = e->next;
    else
        server_state_head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        server_state_tail = e->prev;
}

static void server_state_destroy(struct server_state_entry *e)
{
    free(e->st.key);
    free(e);
}

struct server_state *server_state_get(const char *upstream, const char *address)
{
    char stack_key[512];
    size_t len = strlen(upstream) + 1 + strlen(address) + 1;
    char *key = len <= sizeof stack_key ? stack_key : malloc(len);
    if (!key)
        return NULL;
    snprintf(key, len, "%s/%s", upstream, address);
    size_t bucket = server_state_hash(key);
    pthread_mutex_lock(&server_state_lock);
    struct server_state_entry *e = server_state_find(key, bucket);
    if (e) {
        atomic_fetch_add_explicit(&e->st.refs, 1, memory_order_relaxed);
    } else if ((e = server_state_create(upstream, address))) {
        server_state_link(e, bucket);
    }
    pthread_mutex_unlock(&server_state_lock);
    if (key != stack_key)
        free(key);
    return e ? &e->st : NULL;
}

/* The decrement happens under the mutex: otherwise a concurrent get could revive an entry
 * whose count just reached 0 and is about to be freed. Puts happen on reloads only. */
void server_state_put(struct server_state *s)
{
    if (!s)
        return;
    struct server_state_entry *e = server_state_entry_of(s);
    pthread_mutex_lock(&server_state_lock);
    bool last = atomic_fetch_sub_explicit(&s->refs, 1, memory_order_relaxed) == 1;
    if (last)
        server_state_unlink(e);
    pthread_mutex_unlock(&server_state_lock);
    if (last)
        server_state_destroy(e);
}

/* FN runs under the registry mutex: it must not call server_state_get/put. */
void server_state_foreach(void (*fn)(struct server_state *s, void *arg), void *arg)
{
    pthread_mutex_lock(&server_state_lock);
    for (struct server_state_entry *e = server_state_head; e; e = e->next)
        fn(&e->st, arg);
    pthread_mutex_unlock(&server_state_lock);
}

void server_state_registry_free(void)
{
    pthread_mutex_lock(&server_state_lock);
    struct server_state_entry *e = server_state_head;
    server_state_head = server_state_tail = NULL;
    memset(server_state_buckets, 0, sizeof server_state_buckets);
    pthread_mutex_unlock(&server_state_lock);
    while (e) {
        struct server_state_entry *next = e->next;
        server_state_destroy(e);
        e = next;
    }
}

/* --- passive health ------------------------------------------------------------------------ */

bool server_state_usable(const struct server_state *s, uint64_t now_ms)
{
    if (!atomic_load_explicit(&s->active_up, memory_order_relaxed))
        return false;
    uint64_t until = atomic_load_explicit(&s->ejected_until, memory_order_relaxed);
    return until == 0 || now_ms >= until;
}

/* BASE << SHIFT, saturating at CAP instead of overflowing (or shifting by >= 64, which is UB). */
static uint64_t server_state_shift_capped(uint64_t base, unsigned shift, uint64_t cap)
{
    if (base == 0)
        return 0;
    if (shift >= 64 || base > (cap >> shift))
        return cap;
    return base << shift;
}

/* Ejects S from NOW for min(base << ejections, max) unless another worker ejected it first.
 * up_since is set to the moment the ejection ends: that is when S returns to service, so slow
 * start ramps it up after an ejection too (server_state_usable is const and cannot note it). */
static bool server_state_eject(struct server_state *s, const struct outlier_policy *policy,
                               uint64_t seen_until, uint64_t now_ms)
{
    uint64_t cap = policy->max_ejection_ms ? policy->max_ejection_ms : UINT64_MAX; /* 0 = no cap */
    unsigned n = atomic_load_explicit(&s->ejections, memory_order_relaxed);
    uint64_t ms = server_state_shift_capped(policy->base_ejection_ms, n, cap);
    uint64_t until = ms > UINT64_MAX - now_ms ? UINT64_MAX : now_ms + ms;
    if (until == 0)
        until = 1; /* 0 means "not ejected" */
    /* Several workers may cross the threshold at once: only the one that swaps the deadline
     * counts the ejection. */
    if (!atomic_compare_exchange_strong_explicit(&s->ejected_until, &seen_until, until,
                                                 memory_order_relaxed, memory_order_relaxed))
        return false;
    atomic_store_explicit(&s->up_since, until, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->ejections, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->total_ejections, 1, memory_order_relaxed);
    atomic_store_explicit(&s->consecutive_failures, 0, memory_order_relaxed);
    return true;
}

bool server_state_record(struct server_state *s, bool success, const struct outlier_policy *policy,
                         size_t n_pool, size_t n_ejected, uint64_t now_ms)
{
    if (success) {
        /* The common path only reads: no cache line ping-pong between workers. */
        if (atomic_load_explicit(&s->consecutive_failures, memory_order_relaxed) != 0)
            atomic_store_explicit(&s->consecutive_failures, 0, memory_order_relaxed);
        return false;
    }
    unsigned n = atomic_fetch_add_explicit(&s->consecutive_failures, 1, memory_order_relaxed) + 1;
    if (!policy || policy->consecutive_failures == 0 || n < policy->consecutive_failures)
        return false;
    uint64_t until = atomic_load_explicit(&s->ejected_until, memory_order_relaxed);
    if (until != 0 && now_ms < until)
        return false; /* already out */
    /* Never eject beyond the share: a pool that is failing as a whole must keep serving. */
    if (((uint64_t)n_ejected + 1) * 100 > (uint64_t)policy->max_ejected_percent * n_pool)
        return false;
    return server_state_eject(s, policy, until, now_ms);
}

uint32_t server_state_effective_weight(const struct server_state *s, uint32_t weight,
                                       uint64_t slow_start_ms, uint64_t now_ms)
{
    uint64_t up = atomic_load_explicit(&s->up_since, memory_order_relaxed);
    if (slow_start_ms == 0 || up == 0)
        return weight;
    if (now_ms < up)
        return 1; /* still ejected: it comes back at up_since */
    uint64_t elapsed = now_ms - up;
    if (elapsed >= slow_start_ms)
        return weight;
    uint64_t w;
    if (elapsed <= UINT64_MAX / (weight ? weight : 1))
        w = (uint64_t)weight * elapsed / slow_start_ms;
    else /* only with absurd slow-start times; precision does not matter there */
        w = (uint64_t)((double)weight * ((double)elapsed / (double)slow_start_ms));
    return w < 1 ? 1 : (uint32_t)w;
}

/* --- retries --------------------------------------------------------------------------------- */

void retry_budget_init(struct retry_budget *b, uint32_t percent, uint32_t min_retries, uint64_t window_ms)
{
    memset(b, 0, sizeof *b);
    b->percent = percent;
    b->min_retries = min_retries;
    b->window_ms = window_ms;
}

/* Starts a new window when the current one is over (window_ms 0: one window forever). A fresh
 * budget's window starts at 0, so the first call on a real clock opens one at NOW. */
static void retry_budget_roll(struct retry_budget *b, uint64_t now_ms)
{
    if (b->window_ms == 0 || now_ms < b->window_start_ms + b->window_ms)
        return;
    b->window_start_ms = now_ms;
    b->requests = 0;
    b->retries = 0;
}

void retry_budget_on_request(struct retry_budget *b, uint64_t now_ms)
{
    retry_budget_roll(b, now_ms);
    b->requests++;
}

bool retry_budget_take(struct retry_budget *b, uint64_t now_ms)
{
    retry_budget_roll(b, now_ms);
    bool ok = b->retries < b->min_retries ||
              (b->retries + 1) * 100 <= (uint64_t)b->percent * b->requests;
    if (ok)
        b->retries++;
    return ok;
}

uint64_t retry_backoff_ms(uint64_t base_ms, uint64_t cap_ms, unsigned attempt, uint64_t *rng)
{
    unsigned shift = attempt > 0 ? attempt - 1 : 0;
    uint64_t hi = server_state_shift_capped(base_ms, shift, cap_ms);
    if (hi > cap_ms)
        hi = cap_ms;
    uint64_t x = *rng ? *rng : 0x9E3779B97F4A7C15ULL; /* xorshift64 is stuck at 0 */
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *rng = x;
    return hi == UINT64_MAX ? x : x % (hi + 1);
}
