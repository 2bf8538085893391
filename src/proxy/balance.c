#include "proxy/balance.h"

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- consistent-hash ring ---- */

struct balance_point {
    uint64_t hash;
    uint32_t server;
};

static int balance_point_cmp(const void *a, const void *b)
{
    const struct balance_point *x = a, *y = b;
    if (x->hash != y->hash)
        return x->hash < y->hash ? -1 : 1;
    /* Equal hashes (astronomically rare) still need a fixed order so every worker and every
     * rebuild agree on the owner of the point. */
    return (x->server > y->server) - (x->server < y->server);
}

/* Point hash of one replica: depends only on the address and the replica number, so a server's
 * points stay put whatever other servers come and go. */
static uint64_t balance_point_hash(const char *address, uint64_t replica)
{
    char buf[512];
    int n = snprintf(buf, sizeof buf, "%s#%llu", address ? address : "",
                     (unsigned long long)replica);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof buf) /* absurdly long address: hash what fits, still deterministic */
        n = (int)sizeof buf - 1;
    return str_hash64(buf, (size_t)n);
}

static size_t balance_ring_size(const struct conf_upstream *up)
{
    const size_t limit = SIZE_MAX / sizeof(struct balance_point);
    size_t total = 0;
    for (size_t i = 0; i < up->n_servers; i++) {
        size_t w = up->servers[i].weight ? up->servers[i].weight : 1;
        if (w > (limit - total) / BALANCE_RING_VNODES)
            return SIZE_MAX;
        total += w * BALANCE_RING_VNODES;
    }
    return total;
}

struct balance_ring *balance_ring_build(const struct conf_upstream *up)
{
    size_t n = balance_ring_size(up);
    if (n == SIZE_MAX || n > UINT32_MAX)
        return NULL;
    struct balance_ring *ring = calloc(1, sizeof *ring);
    struct balance_point *tmp = calloc(n ? n : 1, sizeof *tmp);
    if (!ring || !tmp)
        goto fail;
    ring->points = malloc((n ? n : 1) * sizeof *ring->points);
    ring->servers = malloc((n ? n : 1) * sizeof *ring->servers);
    if (!ring->points || !ring->servers)
        goto fail;
    size_t k = 0;
    for (size_t i = 0; i < up->n_servers; i++) {
        uint64_t reps = (uint64_t)(up->servers[i].weight ? up->servers[i].weight : 1) *
                        BALANCE_RING_VNODES;
        for (uint64_t r = 0; r < reps; r++)
            tmp[k++] = (struct balance_point){ balance_point_hash(up->servers[i].address, r),
                                               (uint32_t)i };
    }
    qsort(tmp, n, sizeof *tmp, balance_point_cmp);
    for (size_t i = 0; i < n; i++) {
        ring->points[i] = tmp[i].hash;
        ring->servers[i] = tmp[i].server;
    }
    ring->n = n;
    free(tmp);
    return ring;
fail:
    free(tmp);
    balance_ring_free(ring);
    return NULL;
}

void balance_ring_free(struct balance_ring *ring)
{
    if (!ring)
        return;
    free(ring->points);
    free(ring->servers);
    free(ring);
}

int balance_ring_lookup(const struct balance_ring *ring, uint64_t hash, const bool *skip,
                        size_t n_servers)
{
    if (!ring || ring->n == 0)
        return -1;
    size_t lo = 0, hi = ring->n; /* first point >= hash, in [lo, hi] */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (ring->points[mid] < hash)
            lo = mid + 1;
        else
            hi = mid;
    }
    /* Walk clockwise past excluded servers; one full turn visits every point, so stopping
     * there proves that every server on the ring is excluded. */
    for (size_t step = 0; step < ring->n; step++) {
        uint32_t s = ring->servers[(lo + step) % ring->n];
        if (s >= n_servers)
            continue; /* a ring built for a bigger upstream: never return an unknown index */
        if (!skip || !skip[s])
            return (int)s;
    }
    return -1;
}

/* ---- per-worker state ---- */

int balance_state_init(struct balance_state *st, const struct conf_upstream *up,
                       const struct balance_ring *ring, uint64_t seed)
{
    size_t n = up->n_servers ? up->n_servers : 1;
    memset(st, 0, sizeof *st);
    st->up = up;
    st->ring = ring;
    st->current = calloc(n, sizeof *st->current);
    st->active = calloc(n, sizeof *st->active);
    if (!st->current || !st->active) {
        balance_state_free(st);
        return -1;
    }
    /* xorshift never leaves the all-zero state, so a zero seed must not reach it. */
    st->rng = seed ? seed : 0x9e3779b97f4a7c15ULL;
    return 0;
}

void balance_state_free(struct balance_state *st)
{
    free(st->current);
    free(st->active);
    free(st->weights);
    st->current = NULL;
    st->active = NULL;
    st->weights = NULL;
}

/* ---- request key ---- */

static uint64_t balance_hash_client(const struct sockaddr *client)
{
    if (client && client->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)client;
        return str_hash64(&in->sin_addr, sizeof in->sin_addr);
    }
    if (client && client->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)client;
        /* A v4 client seen through a dual-stack socket must land where it lands over IPv4. */
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
            return str_hash64(&in6->sin6_addr.s6_addr[12], 4);
        return str_hash64(&in6->sin6_addr, sizeof in6->sin6_addr);
    }
    return str_hash64("", 0);
}

/* Finds cookie NAME in one Cookie header value ("a=1; b=2"). Cookie names are case-sensitive
 * (RFC 6265 §5.4), so the comparison is exact. */
static bool balance_cookie_in(struct str value, struct str name, struct str *out)
{
    while (value.n) {
        const char *semi = memchr(value.p, ';', value.n);
        size_t len = semi ? (size_t)(semi - value.p) : value.n;
        struct str pair = str_trim_ows(str_make(value.p, len));
        value.p += semi ? len + 1 : len;
        value.n -= semi ? len + 1 : len;
        const char *eq = memchr(pair.p, '=', pair.n);
        if (!eq)
            continue;
        struct str k = str_trim_ows(str_make(pair.p, (size_t)(eq - pair.p)));
        if (str_eq(k, name)) {
            *out = str_trim_ows(str_make(eq + 1, pair.n - (size_t)(eq - pair.p) - 1));
            return true;
        }
    }
    return false;
}

/* A client may split cookies over several Cookie fields (HTTP/2 does so routinely). */
static struct str balance_find_cookie(const struct http_msg *req, const char *name)
{
    struct str want = str_make(name, strlen(name)), val = { "", 0 };
    for (uint32_t i = 0; i < req->n_headers; i++)
        if (str_ieq_cstr(req->headers[i].name, "cookie") &&
            balance_cookie_in(req->headers[i].value, want, &val))
            return val;
    return str_make("", 0);
}

uint64_t balance_request_hash(const struct conf_upstream *up, const struct http_msg *req,
                              const struct sockaddr *client)
{
    struct str key = { "", 0 };
    switch (up->hash_key) {
    case HASH_KEY_CLIENT_IP:
        return balance_hash_client(client);
    case HASH_KEY_URI:
        key = req->path;
        break;
    case HASH_KEY_HEADER:
        if (up->hash_key_name) {
            const struct http_header *h = http_msg_find(req, up->hash_key_name);
            if (h)
                key = h->value;
        }
        break;
    case HASH_KEY_COOKIE:
        if (up->hash_key_name)
            key = balance_find_cookie(req, up->hash_key_name);
        break;
    }
    return str_hash64(key.p ? key.p : "", key.n);
}

/* ---- picking ---- */

static uint32_t balance_weight(const struct balance_state *st, size_t i)
{
    uint32_t w = st->weights && st->weights[i] ? st->weights[i] : st->up->servers[i].weight;
    return w ? w : 1;
}

void balance_set_weight(struct balance_state *st, size_t i, uint32_t weight)
{
    if (!st->weights && !weight)
        return;
    if (!st->weights && !(st->weights = calloc(st->up->n_servers, sizeof *st->weights)))
        return; /* without memory, the configured weight is a fine answer */
    st->weights[i] = weight;
}

static bool balance_usable(const bool *skip, size_t i) { return !skip || !skip[i]; }

/* Smooth weighted round-robin (nginx): every candidate gains its weight, the richest wins and
 * pays the candidates' total. CAND restricts the round to some servers (NULL: all not skipped). */
static int balance_swrr(struct balance_state *st, const bool *skip, const bool *cand)
{
    int best = -1;
    int64_t total = 0;
    for (size_t i = 0; i < st->up->n_servers; i++) {
        if (!balance_usable(skip, i) || (cand && !cand[i]))
            continue;
        int64_t w = balance_weight(st, i);
        st->current[i] += w;
        total += w;
        if (best < 0 || st->current[i] > st->current[best])
            best = (int)i;
    }
    if (best >= 0)
        st->current[best] -= total;
    return best;
}

/* True when server A is less loaded than B relative to weight: a/wa < b/wb, without division. */
static int balance_load_cmp(const struct balance_state *st, size_t a, size_t b)
{
    uint64_t la = (uint64_t)st->active[a] * balance_weight(st, b);
    uint64_t lb = (uint64_t)st->active[b] * balance_weight(st, a);
    return (la > lb) - (la < lb);
}

static int balance_least_conn(struct balance_state *st, const bool *skip)
{
    size_t n = st->up->n_servers;
    int best = -1;
    for (size_t i = 0; i < n; i++)
        if (balance_usable(skip, i) && (best < 0 || balance_load_cmp(st, i, (size_t)best) < 0))
            best = (int)i;
    if (best < 0)
        return -1;
    /* Equally loaded servers share the work by weight: SWRR among the tied ones, so idle
     * servers alternate instead of the first one taking every request. */
    bool stack_tied[64];
    bool *tied = n <= 64 ? stack_tied : calloc(n, sizeof *tied);
    if (!tied)
        return best;
    for (size_t i = 0; i < n; i++)
        tied[i] = balance_usable(skip, i) && balance_load_cmp(st, i, (size_t)best) == 0;
    int pick = balance_swrr(st, skip, tied);
    if (tied != stack_tied)
        free(tied);
    return pick;
}

static uint64_t balance_rand(struct balance_state *st)
{
    uint64_t x = st->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    st->rng = x;
    return x;
}

/* Weighted random server among the usable ones other than EXCEPT (-1: none excepted). */
static int balance_weighted_random(struct balance_state *st, const bool *skip, int except)
{
    uint64_t total = 0;
    for (size_t i = 0; i < st->up->n_servers; i++)
        if (balance_usable(skip, i) && (int)i != except)
            total += balance_weight(st, i);
    if (total == 0)
        return -1;
    uint64_t r = balance_rand(st) % total;
    for (size_t i = 0; i < st->up->n_servers; i++) {
        if (!balance_usable(skip, i) || (int)i == except)
            continue;
        uint64_t w = balance_weight(st, i);
        if (r < w)
            return (int)i;
        r -= w;
    }
    return -1; /* unreachable: r < total */
}

/* Power of two choices: two random candidates, the less loaded wins. Avoids both herding on one
 * "least" server and the blindness of pure random. */
static int balance_random_two(struct balance_state *st, const bool *skip)
{
    int a = balance_weighted_random(st, skip, -1);
    if (a < 0)
        return -1;
    int b = balance_weighted_random(st, skip, a);
    if (b < 0)
        return a;
    return balance_load_cmp(st, (size_t)b, (size_t)a) < 0 ? b : a;
}

int balance_pick(struct balance_state *st, uint64_t key_hash, const bool *skip)
{
    if (!st->up || st->up->n_servers == 0)
        return -1;
    switch (st->up->balance) {
    case BALANCE_LEAST_CONN:
        return balance_least_conn(st, skip);
    case BALANCE_RANDOM_TWO:
        return balance_random_two(st, skip);
    case BALANCE_HASH:
        if (st->ring)
            return balance_ring_lookup(st->ring, key_hash, skip, st->up->n_servers);
        break; /* no ring (allocation failed): still serve, just without affinity */
    case BALANCE_ROUND_ROBIN:
        break;
    }
    return balance_swrr(st, skip, NULL);
}

void balance_begin(struct balance_state *st, int server)
{
    if (server >= 0 && (size_t)server < st->up->n_servers)
        st->active[server]++;
}

void balance_end(struct balance_state *st, int server)
{
    if (server >= 0 && (size_t)server < st->up->n_servers && st->active[server] > 0)
        st->active[server]--;
}
