#include "policy/ratelimit.h"

#include <endian.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "core/siphash.h"

#define RL_SHARD_BITS 6
#define RL_SHARDS (1u << RL_SHARD_BITS)
#define RL_MIN_SLOTS 16

__extension__ typedef unsigned __int128 rl_u128;

enum rl_kind { RL_BUCKET = 1, RL_CONN = 2 };

/* One bucket or one address's connection count. Owned by its shard's hash table. */
struct rl_entry {
    struct rl_entry *chain;         /* next in its hash slot */
    struct rl_entry *older, *newer; /* buckets only: the shard's order of last use */
    uint64_t hash;
    /* Buckets count credit in units of 1/per_ms token, so that refill is exact integer math:
     * a token costs per_ms units and every ms adds rate units (128 bits: burst * per_ms can
     * pass 2^64 with the largest values the config allows). */
    rl_u128 credit;
    uint64_t per_ms;                /* buckets: the period CREDIT is counted in */
    uint64_t last_ms;               /* buckets: when CREDIT was last brought up to date */
    uint64_t full_ms;               /* buckets: when the bucket will be full again */
    uint32_t conns;                 /* conn counts: connections counted */
    uint8_t kind;
    size_t key_len;
    uint8_t key[];                  /* buckets: limit name, NUL, key; counts: the address */
};

struct rl_shard {
    alignas(64) pthread_mutex_t lock; /* a cache line apart from its neighbours' locks */
    struct rl_entry **slots;
    size_t n_slots;                   /* a power of two */
    size_t n_entries;                 /* buckets and counts */
    size_t n_buckets;
    struct rl_entry *oldest, *newest; /* buckets by last use */
};

struct ratelimit_table {
    struct rl_shard shards[RL_SHARDS];
    uint64_t k0, k1;                  /* SipHash key */
    size_t max_per_shard;             /* buckets */
};

/* What a lookup searches for: the key is A then B (B may be empty). */
struct rl_key {
    uint8_t kind;
    const uint8_t *a;
    size_t a_len;
    const uint8_t *b;
    size_t b_len;
    uint64_t hash;
};

/* --- hash tables ---------------------------------------------------------------------------- */

static struct rl_shard *rl_hash(struct ratelimit_table *t, struct rl_key *k)
{
    struct siphash s;
    siphash_init(&s, t->k0, t->k1);
    siphash_update(&s, &k->kind, 1);
    siphash_update(&s, k->a, k->a_len);
    if (k->b_len)
        siphash_update(&s, k->b, k->b_len);
    k->hash = siphash_final(&s);
    /* the top bits pick the shard, the bottom ones the slot: independent */
    return &t->shards[k->hash >> (64 - RL_SHARD_BITS)];
}

static bool rl_matches(const struct rl_entry *e, const struct rl_key *k)
{
    return e->hash == k->hash && e->kind == k->kind && e->key_len == k->a_len + k->b_len &&
           memcmp(e->key, k->a, k->a_len) == 0 &&
           (!k->b_len || memcmp(e->key + k->a_len, k->b, k->b_len) == 0);
}

static struct rl_entry **rl_link_of(struct rl_shard *s, uint64_t hash)
{
    return &s->slots[hash & (s->n_slots - 1)];
}

static struct rl_entry *rl_find(struct rl_shard *s, const struct rl_key *k)
{
    for (struct rl_entry *e = *rl_link_of(s, k->hash); e; e = e->chain)
        if (rl_matches(e, k))
            return e;
    return NULL;
}

/* Rehashes S into N_SLOTS slots; on allocation failure keeps the old ones (longer chains). */
static void rl_resize(struct rl_shard *s, size_t n_slots)
{
    struct rl_entry **slots = calloc(n_slots, sizeof *slots);
    if (!slots)
        return;
    for (size_t i = 0; i < s->n_slots; i++) {
        while (s->slots[i]) {
            struct rl_entry *e = s->slots[i];
            s->slots[i] = e->chain;
            e->chain = slots[e->hash & (n_slots - 1)];
            slots[e->hash & (n_slots - 1)] = e;
        }
    }
    free(s->slots);
    s->slots = slots;
    s->n_slots = n_slots;
}

static void rl_lru_unlink(struct rl_shard *s, struct rl_entry *e)
{
    *(e->older ? &e->older->newer : &s->oldest) = e->newer;
    *(e->newer ? &e->newer->older : &s->newest) = e->older;
    e->older = e->newer = NULL;
}

static void rl_lru_push(struct rl_shard *s, struct rl_entry *e)
{
    e->older = s->newest;
    e->newer = NULL;
    *(s->newest ? &s->newest->newer : &s->oldest) = e;
    s->newest = e;
}

/* A new entry for K, linked into S (buckets also at the new end of the use order). */
static struct rl_entry *rl_insert(struct rl_shard *s, const struct rl_key *k)
{
    struct rl_entry *e = calloc(1, sizeof *e + k->a_len + k->b_len);
    if (!e)
        return NULL;
    e->hash = k->hash;
    e->kind = k->kind;
    e->key_len = k->a_len + k->b_len;
    memcpy(e->key, k->a, k->a_len);
    if (k->b_len)
        memcpy(e->key + k->a_len, k->b, k->b_len);
    if (s->n_entries >= s->n_slots)
        rl_resize(s, s->n_slots * 2);
    struct rl_entry **link = rl_link_of(s, e->hash);
    e->chain = *link;
    *link = e;
    s->n_entries++;
    if (e->kind == RL_BUCKET) {
        rl_lru_push(s, e);
        s->n_buckets++;
    }
    return e;
}

static void rl_remove(struct rl_shard *s, struct rl_entry *e)
{
    struct rl_entry **link = rl_link_of(s, e->hash);
    while (*link != e)
        link = &(*link)->chain;
    *link = e->chain;
    s->n_entries--;
    if (e->kind == RL_BUCKET) {
        rl_lru_unlink(s, e);
        s->n_buckets--;
    }
    free(e);
}

/* --- the table ------------------------------------------------------------------------------ */

static void rl_random_key(struct ratelimit_table *t)
{
    uint64_t k[2];
    if (getrandom(k, sizeof k, GRND_NONBLOCK) != (ssize_t)sizeof k) {
        /* no entropy yet (early boot): weaker, but still not guessable from outside */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        k[0] = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uint64_t)ts.tv_sec;
        k[1] = (uint64_t)(uintptr_t)t * 0xbf58476d1ce4e5b9ull ^ (uint64_t)ts.tv_nsec;
    }
    t->k0 = k[0];
    t->k1 = k[1];
}

struct ratelimit_table *ratelimit_table_new_bounded(size_t max_buckets)
{
    struct ratelimit_table *t = aligned_alloc(alignof(struct ratelimit_table), sizeof *t);
    if (!t)
        return NULL;
    memset(t, 0, sizeof *t);
    rl_random_key(t);
    t->max_per_shard = max_buckets / RL_SHARDS ? max_buckets / RL_SHARDS : 1;
    for (size_t i = 0; i < RL_SHARDS; i++) {
        struct rl_shard *s = &t->shards[i];
        pthread_mutex_init(&s->lock, NULL);
        s->slots = calloc(RL_MIN_SLOTS, sizeof *s->slots);
        s->n_slots = RL_MIN_SLOTS;
        if (!s->slots) {
            for (size_t j = 0; j <= i; j++)
                pthread_mutex_destroy(&t->shards[j].lock);
            for (size_t j = 0; j < i; j++)
                free(t->shards[j].slots);
            free(t);
            return NULL;
        }
    }
    return t;
}

struct ratelimit_table *ratelimit_table_new(void)
{
    return ratelimit_table_new_bounded(RATELIMIT_MAX_BUCKETS);
}

void ratelimit_table_free(struct ratelimit_table *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < RL_SHARDS; i++) {
        struct rl_shard *s = &t->shards[i];
        for (size_t j = 0; j < s->n_slots; j++) {
            while (s->slots[j]) {
                struct rl_entry *e = s->slots[j];
                s->slots[j] = e->chain;
                free(e);
            }
        }
        free(s->slots);
        pthread_mutex_destroy(&s->lock);
    }
    free(t);
}

size_t ratelimit_bucket_count(struct ratelimit_table *t)
{
    size_t n = 0;
    for (size_t i = 0; i < RL_SHARDS; i++) {
        pthread_mutex_lock(&t->shards[i].lock);
        n += t->shards[i].n_buckets;
        pthread_mutex_unlock(&t->shards[i].lock);
    }
    return n;
}

/* --- token buckets -------------------------------------------------------------------------- */

/* The config guarantees rate, per_ms >= 1; the guards only keep a hand-made limit from dividing
 * by zero. */
static uint64_t rl_rate(const struct conf_rate_limit *l) { return l->rate ? l->rate : 1; }
static uint64_t rl_per(const struct conf_rate_limit *l) { return l->per_ms ? l->per_ms : 1; }
static rl_u128 rl_cap(const struct conf_rate_limit *l) { return (rl_u128)l->burst * rl_per(l); }

static rl_u128 rl_div_up(rl_u128 a, uint64_t b) { return (a + b - 1) / b; }

static uint64_t rl_add_sat(uint64_t a, rl_u128 b)
{
    return b >= UINT64_MAX - a ? UINT64_MAX : a + (uint64_t)b;
}

/* A reload wrote the rate over another period (1/m became 1/h): the tokens left stay the
 * tokens left, so the credit moves to the new unit. No overflow: credit <= 2^30 * 2^35 and
 * PER <= 2^35 (a year in ms). */
static void rl_bucket_rescale(struct rl_entry *e, uint64_t per)
{
    if (e->per_ms == per)
        return;
    e->credit = e->per_ms ? e->credit * per / e->per_ms : 0;
    e->per_ms = per;
}

/* Brings E up to NOW_MS under L's current rate and burst, then takes a token if it holds one. */
static uint64_t rl_bucket_take(struct rl_entry *e, const struct conf_rate_limit *l, uint64_t now_ms)
{
    uint64_t rate = rl_rate(l), per = rl_per(l);
    rl_u128 cap = rl_cap(l);
    rl_bucket_rescale(e, per);
    if (e->credit > cap)
        e->credit = cap; /* the burst shrank in a reload */
    if (now_ms > e->last_ms) {
        rl_u128 gain = (rl_u128)(now_ms - e->last_ms) * rate;
        e->credit = gain >= cap - e->credit ? cap : e->credit + gain;
        e->last_ms = now_ms;
    }
    uint64_t wait = 0;
    if (e->credit >= per)
        e->credit -= per;
    else
        wait = (uint64_t)rl_div_up(per - e->credit, rate); /* <= per_ms: fits */
    e->full_ms = rl_add_sat(e->last_ms, rl_div_up(cap - e->credit, rate));
    return wait;
}

/* A new, full bucket in S, evicting S's least recently used one when S is at its bound. */
static struct rl_entry *rl_bucket_new(struct ratelimit_table *t, struct rl_shard *s,
                                      const struct rl_key *k, const struct conf_rate_limit *l,
                                      uint64_t now_ms)
{
    if (s->n_buckets >= t->max_per_shard && s->oldest)
        rl_remove(s, s->oldest);
    struct rl_entry *e = rl_insert(s, k);
    if (e) {
        e->credit = rl_cap(l);
        e->per_ms = rl_per(l);
        e->last_ms = now_ms;
    }
    return e;
}

uint64_t ratelimit_take(struct ratelimit_table *t, const struct conf_rate_limit *limit,
                        const char *key, size_t key_len, uint64_t now_ms)
{
    const char *name = limit->name ? limit->name : "";
    struct rl_key k = { .kind = RL_BUCKET, .a = (const uint8_t *)name, .a_len = strlen(name) + 1,
                        .b = (const uint8_t *)key, .b_len = key_len };
    struct rl_shard *s = rl_hash(t, &k);
    uint64_t wait = 0;
    pthread_mutex_lock(&s->lock);
    struct rl_entry *e = rl_find(s, &k);
    if (e) {
        rl_lru_unlink(s, e);
        rl_lru_push(s, e);
    } else {
        e = rl_bucket_new(t, s, &k, limit, now_ms);
    }
    if (e)
        wait = rl_bucket_take(e, limit, now_ms);
    pthread_mutex_unlock(&s->lock);
    return wait;
}

void ratelimit_expire(struct ratelimit_table *t, uint64_t now_ms)
{
    for (size_t i = 0; i < RL_SHARDS; i++) {
        struct rl_shard *s = &t->shards[i];
        pthread_mutex_lock(&s->lock);
        for (struct rl_entry *e = s->oldest, *next; e; e = next) {
            next = e->newer;
            if (e->full_ms <= now_ms && now_ms - e->full_ms >= RATELIMIT_IDLE_MS)
                rl_remove(s, e);
        }
        if (s->n_slots > RL_MIN_SLOTS && s->n_entries < s->n_slots / 8)
            rl_resize(s, s->n_slots / 2); /* give back what a burst of keys made us grow */
        pthread_mutex_unlock(&s->lock);
    }
}

/* --- connections per address ------------------------------------------------------------------ */

bool ratelimit_conn_acquire(struct ratelimit_table *t, const uint8_t *addr, size_t addr_len,
                            uint32_t max)
{
    struct rl_key k = { .kind = RL_CONN, .a = addr, .a_len = addr_len };
    struct rl_shard *s = rl_hash(t, &k);
    bool ok = true;
    pthread_mutex_lock(&s->lock);
    struct rl_entry *e = rl_find(s, &k);
    if (e)
        ok = e->conns < max;
    else if (!max)
        ok = false;
    else
        e = rl_insert(s, &k);
    if (ok && e)
        e->conns++;
    pthread_mutex_unlock(&s->lock);
    return ok;
}

void ratelimit_conn_release(struct ratelimit_table *t, const uint8_t *addr, size_t addr_len)
{
    struct rl_key k = { .kind = RL_CONN, .a = addr, .a_len = addr_len };
    struct rl_shard *s = rl_hash(t, &k);
    pthread_mutex_lock(&s->lock);
    struct rl_entry *e = rl_find(s, &k);
    if (e && --e->conns == 0)
        rl_remove(s, e);
    pthread_mutex_unlock(&s->lock);
}
