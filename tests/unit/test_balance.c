/* Unit tests of src/proxy/balance.c: upstreams are built by hand, not through the loader. */
#include <arpa/inet.h>
#include <netinet/in.h>

#include "proxy/balance.h"
#include "unit.h"

#define T_MAX_SERVERS 16

struct t_up {
    struct conf_upstream up;
    struct conf_server servers[T_MAX_SERVERS];
    char addr[T_MAX_SERVERS][32];
};

/* Servers "10.0.0.<first+i>:80" with the given weights. */
static void t_up_init(struct t_up *t, enum balance_kind kind, const uint32_t *weights, size_t n,
                      unsigned first)
{
    memset(t, 0, sizeof *t);
    for (size_t i = 0; i < n; i++) {
        snprintf(t->addr[i], sizeof t->addr[i], "10.0.0.%u:80", first + (unsigned)i);
        t->servers[i].address = t->addr[i];
        t->servers[i].weight = weights ? weights[i] : 1;
        t->servers[i].index = i;
    }
    t->up.name = "app";
    t->up.balance = kind;
    t->up.servers = t->servers;
    t->up.n_servers = n;
}

static const char *t_addr(const struct t_up *t, int s)
{
    return s < 0 ? "(none)" : t->servers[s].address;
}

UNIT_TEST(swrr_equal_weights_alternate)
{
    struct t_up t;
    t_up_init(&t, BALANCE_ROUND_ROBIN, (uint32_t[]){ 1, 1 }, 2, 1);
    struct balance_state st;
    CHECK_EQ_INT(balance_state_init(&st, &t.up, NULL, 1), 0);
    for (int i = 0; i < 10; i++)
        CHECK_EQ_INT(balance_pick(&st, 0, NULL), i % 2);
    balance_state_free(&st);
}

UNIT_TEST(swrr_5_1_1_is_smooth)
{
    struct t_up t;
    t_up_init(&t, BALANCE_ROUND_ROBIN, (uint32_t[]){ 5, 1, 1 }, 3, 1);
    struct balance_state st;
    CHECK_EQ_INT(balance_state_init(&st, &t.up, NULL, 1), 0);
    const int want[7] = { 0, 0, 1, 0, 2, 0, 0 }; /* a a b a c a a, as nginx */
    for (int round = 0; round < 3; round++)
        for (int i = 0; i < 7; i++)
            CHECK_EQ_INT(balance_pick(&st, 0, NULL), want[i]);
    balance_state_free(&st);
}

/* Picks N times with KIND and counts per server. */
static void t_count(struct t_up *t, const struct balance_ring *ring, int n, const bool *skip,
                    int *counts)
{
    struct balance_state st;
    if (balance_state_init(&st, &t->up, ring, 12345) != 0)
        return;
    for (int i = 0; i < n; i++) {
        int s = balance_pick(&st, str_hash64(&i, sizeof i), skip);
        if (s >= 0)
            counts[s]++;
    }
    balance_state_free(&st);
}

UNIT_TEST(distribution_follows_weights)
{
    const uint32_t w[3] = { 4, 2, 1 };
    enum balance_kind kinds[] = { BALANCE_ROUND_ROBIN, BALANCE_LEAST_CONN, BALANCE_RANDOM_TWO,
                                  BALANCE_HASH };
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        struct t_up t;
        t_up_init(&t, kinds[k], w, 3, 1);
        struct balance_ring *ring = kinds[k] == BALANCE_HASH ? balance_ring_build(&t.up) : NULL;
        int counts[3] = { 0 };
        t_count(&t, ring, 7000, NULL, counts);
        for (int i = 0; i < 3; i++) {
            int expect = 1000 * (int)w[i];
            /* RR and least_conn (all idle: ties go round-robin) are exact; random within 10%;
             * a ring of 160 points per unit weight is only roughly even, so 25% */
            int tol = kinds[k] == BALANCE_RANDOM_TWO ? expect / 10
                      : kinds[k] == BALANCE_HASH     ? expect / 4
                                                     : 0;
            if (counts[i] < expect - tol || counts[i] > expect + tol) {
                fprintf(stderr, "  kind %zu server %d: %d picks, expected %d\n", k, i, counts[i],
                        expect);
                CHECK(0);
            }
        }
        balance_ring_free(ring);
    }
}

UNIT_TEST(skip_honoured_by_every_kind)
{
    enum balance_kind kinds[] = { BALANCE_ROUND_ROBIN, BALANCE_LEAST_CONN, BALANCE_RANDOM_TWO,
                                  BALANCE_HASH };
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        struct t_up t;
        t_up_init(&t, kinds[k], (uint32_t[]){ 3, 1, 2, 1 }, 4, 1);
        struct balance_ring *ring = kinds[k] == BALANCE_HASH ? balance_ring_build(&t.up) : NULL;
        bool skip[4] = { true, false, true, false };
        int counts[4] = { 0 };
        t_count(&t, ring, 2000, skip, counts);
        CHECK_EQ_INT(counts[0], 0);
        CHECK_EQ_INT(counts[2], 0);
        CHECK_EQ_INT(counts[1] + counts[3], 2000);
        CHECK(counts[1] > 0 && counts[3] > 0);

        /* only one left: always it */
        bool one[4] = { true, true, false, true };
        int c1[4] = { 0 };
        t_count(&t, ring, 100, one, c1);
        CHECK_EQ_INT(c1[2], 100);

        /* all skipped: -1 */
        bool all[4] = { true, true, true, true };
        struct balance_state st;
        CHECK_EQ_INT(balance_state_init(&st, &t.up, ring, 7), 0);
        for (int i = 0; i < 10; i++)
            CHECK_EQ_INT(balance_pick(&st, (uint64_t)i * 0x9e3779b97f4a7c15ULL, all), -1);
        balance_state_free(&st);
        balance_ring_free(ring);
    }
}

UNIT_TEST(empty_upstream_picks_nothing)
{
    struct t_up t;
    t_up_init(&t, BALANCE_ROUND_ROBIN, NULL, 0, 1);
    struct balance_state st;
    CHECK_EQ_INT(balance_state_init(&st, &t.up, NULL, 0), 0);
    CHECK_EQ_INT(balance_pick(&st, 0, NULL), -1);
    balance_state_free(&st);
    struct balance_ring *ring = balance_ring_build(&t.up);
    CHECK(ring != NULL);
    CHECK_EQ_INT(balance_ring_lookup(ring, 42, NULL, 0), -1);
    balance_ring_free(ring);
}

UNIT_TEST(least_conn_prefers_least_active)
{
    struct t_up t;
    t_up_init(&t, BALANCE_LEAST_CONN, NULL, 3, 1);
    struct balance_state st;
    CHECK_EQ_INT(balance_state_init(&st, &t.up, NULL, 1), 0);
    balance_begin(&st, 0);
    balance_begin(&st, 0);
    balance_begin(&st, 1);
    CHECK_EQ_INT(balance_pick(&st, 0, NULL), 2);
    balance_begin(&st, 2);
    /* 1 and 2 are tied at one each: they alternate, 0 (two) is never chosen */
    int c[3] = { 0 };
    for (int i = 0; i < 10; i++)
        c[balance_pick(&st, 0, NULL)]++;
    CHECK_EQ_INT(c[0], 0);
    CHECK_EQ_INT(c[1], 5);
    CHECK_EQ_INT(c[2], 5);
    balance_end(&st, 0);
    balance_end(&st, 0);
    CHECK_EQ_INT(st.active[0], 0);
    balance_end(&st, 0); /* never below zero */
    CHECK_EQ_INT(st.active[0], 0);
    CHECK_EQ_INT(balance_pick(&st, 0, NULL), 0);
    balance_state_free(&st);
}

UNIT_TEST(least_conn_is_weight_aware)
{
    struct t_up t;
    t_up_init(&t, BALANCE_LEAST_CONN, (uint32_t[]){ 4, 1 }, 2, 1);
    struct balance_state st;
    CHECK_EQ_INT(balance_state_init(&st, &t.up, NULL, 1), 0);
    /* 3 active on weight 4 (0.75) beats 1 active on weight 1 (1.0) */
    for (int i = 0; i < 3; i++)
        balance_begin(&st, 0);
    balance_begin(&st, 1);
    CHECK_EQ_INT(balance_pick(&st, 0, NULL), 0);
    /* keep picks active: the heavy server takes about four of every five */
    int c[2] = { 0 };
    for (int i = 0; i < 100; i++) {
        int s = balance_pick(&st, 0, NULL);
        c[s]++;
        balance_begin(&st, s);
    }
    CHECK(c[0] >= 75 && c[0] <= 85);
    balance_state_free(&st);
}

UNIT_TEST(random_two_avoids_the_busy_server)
{
    struct t_up t;
    t_up_init(&t, BALANCE_RANDOM_TWO, NULL, 4, 1);
    struct balance_state st;
    CHECK_EQ_INT(balance_state_init(&st, &t.up, NULL, 99), 0);
    for (int i = 0; i < 50; i++)
        balance_begin(&st, 3);
    int c[4] = { 0 };
    for (int i = 0; i < 10000; i++)
        c[balance_pick(&st, 0, NULL)]++;
    CHECK(c[3] < 500);
    CHECK(c[0] > 2500 && c[1] > 2500 && c[2] > 2500);
    /* with the others skipped, the busy one is still served */
    bool skip[4] = { true, true, true, false };
    CHECK_EQ_INT(balance_pick(&st, 0, skip), 3);
    balance_state_free(&st);
}

UNIT_TEST(random_two_zero_seed_still_random)
{
    struct t_up t;
    t_up_init(&t, BALANCE_RANDOM_TWO, NULL, 3, 1);
    struct balance_state st;
    CHECK_EQ_INT(balance_state_init(&st, &t.up, NULL, 0), 0);
    int c[3] = { 0 };
    for (int i = 0; i < 3000; i++)
        c[balance_pick(&st, 0, NULL)]++;
    CHECK(c[0] > 700 && c[1] > 700 && c[2] > 700);
    balance_state_free(&st);
}

UNIT_TEST(hash_is_stable)
{
    struct t_up t;
    t_up_init(&t, BALANCE_HASH, NULL, 4, 1);
    struct balance_ring *ring = balance_ring_build(&t.up);
    struct balance_ring *again = balance_ring_build(&t.up);
    CHECK(ring && again);
    CHECK_EQ_INT(ring->n, 4 * BALANCE_RING_VNODES);
    for (size_t i = 1; i < ring->n; i++)
        CHECK(ring->points[i - 1] <= ring->points[i]);
    struct balance_state st;
    CHECK_EQ_INT(balance_state_init(&st, &t.up, ring, 1), 0);
    for (uint64_t k = 0; k < 1000; k++) {
        uint64_t h = str_hash64(&k, sizeof k);
        int s = balance_pick(&st, h, NULL);
        CHECK(s >= 0);
        CHECK_EQ_INT(balance_pick(&st, h, NULL), s);
        CHECK_EQ_INT(balance_ring_lookup(again, h, NULL, 4), s);
    }
    /* wrap-around: a hash past the last point lands on the first point's server */
    CHECK_EQ_INT(balance_ring_lookup(ring, UINT64_MAX, NULL, 4),
                 ring->points[ring->n - 1] == UINT64_MAX ? (int)ring->servers[ring->n - 1]
                                                         : (int)ring->servers[0]);
    CHECK_EQ_INT(balance_ring_lookup(ring, 0, NULL, 4), (int)ring->servers[0]);
    balance_state_free(&st);
    balance_ring_free(ring);
    balance_ring_free(again);
}

UNIT_TEST(hash_adding_a_server_moves_about_one_fifth)
{
    struct t_up four, five;
    t_up_init(&four, BALANCE_HASH, NULL, 4, 1);
    t_up_init(&five, BALANCE_HASH, NULL, 5, 1);
    struct balance_ring *r4 = balance_ring_build(&four.up), *r5 = balance_ring_build(&five.up);
    CHECK(r4 && r5);
    int moved = 0, moved_elsewhere = 0;
    for (uint64_t k = 0; k < 10000; k++) {
        char key[32];
        int n = snprintf(key, sizeof key, "/item/%llu", (unsigned long long)k);
        uint64_t h = str_hash64(key, (size_t)n);
        int a = balance_ring_lookup(r4, h, NULL, 4), b = balance_ring_lookup(r5, h, NULL, 5);
        if (strcmp(t_addr(&four, a), t_addr(&five, b)) != 0) {
            moved++;
            if (b != 4)
                moved_elsewhere++;
        }
    }
    CHECK(moved >= 1000 && moved <= 3000);
    CHECK_EQ_INT(moved_elsewhere, 0);
    balance_ring_free(r4);
    balance_ring_free(r5);
}

UNIT_TEST(hash_removing_a_server_moves_only_its_keys)
{
    struct t_up full, less;
    t_up_init(&full, BALANCE_HASH, NULL, 5, 1);
    /* the same servers without 10.0.0.3 (index 2): later indexes shift, addresses do not */
    t_up_init(&less, BALANCE_HASH, NULL, 4, 1);
    for (int i = 2; i < 4; i++)
        snprintf(less.addr[i], sizeof less.addr[i], "10.0.0.%d:80", i + 2);
    struct balance_ring *rf = balance_ring_build(&full.up), *rl = balance_ring_build(&less.up);
    CHECK(rf && rl);
    int moved = 0, owned = 0;
    bool skip[5] = { false, false, true, false, false };
    for (uint64_t k = 0; k < 10000; k++) {
        uint64_t h = str_hash64(&k, sizeof k);
        int a = balance_ring_lookup(rf, h, NULL, 5), b = balance_ring_lookup(rl, h, NULL, 4);
        owned += a == 2;
        if (strcmp(t_addr(&full, a), t_addr(&less, b)) != 0) {
            moved++;
            CHECK_EQ_INT(a, 2);
        }
        /* skipping a server on the ring is the same as removing it */
        CHECK(strcmp(t_addr(&full, balance_ring_lookup(rf, h, skip, 5)), t_addr(&less, b)) == 0);
    }
    CHECK_EQ_INT(moved, owned);
    CHECK(owned > 1000 && owned < 3000);
    balance_ring_free(rf);
    balance_ring_free(rl);
}

/* A request with the given headers and path. */
static struct http_msg t_req(struct http_header *hdrs, uint32_t n, const char *path)
{
    struct http_msg m;
    memset(&m, 0, sizeof m);
    m.method = STR_LIT("GET");
    m.path = str_make(path, strlen(path));
    m.target = m.path;
    m.headers = hdrs;
    m.n_headers = n;
    m.max_headers = n;
    return m;
}

#define T_HDR(n, v) ((struct http_header){ STR_LIT(n), STR_LIT(v) })

static uint64_t t_hash_of(const char *s) { return str_hash64(s, strlen(s)); }

UNIT_TEST(request_hash_cookie)
{
    struct t_up t;
    t_up_init(&t, BALANCE_HASH, NULL, 2, 1);
    t.up.hash_key = HASH_KEY_COOKIE;
    t.up.hash_key_name = "sid";
    struct http_header h[] = { T_HDR("Host", "x"), T_HDR("Cookie", "a=1; sidx=no;  sid=abc ; b=2") };
    struct http_msg m = t_req(h, 2, "/");
    CHECK(balance_request_hash(&t.up, &m, NULL) == t_hash_of("abc"));
    /* in a second Cookie field */
    struct http_header h2[] = { T_HDR("cookie", "a=1"), T_HDR("COOKIE", "sid=xyz") };
    m = t_req(h2, 2, "/");
    CHECK(balance_request_hash(&t.up, &m, NULL) == t_hash_of("xyz"));
    /* first pair in the value, no spaces */
    struct http_header h3[] = { T_HDR("Cookie", "sid=first;sid=second") };
    m = t_req(h3, 1, "/");
    CHECK(balance_request_hash(&t.up, &m, NULL) == t_hash_of("first"));
    /* names are case-sensitive; missing hashes as "" */
    struct http_header h4[] = { T_HDR("Cookie", "SID=upper; other") };
    m = t_req(h4, 1, "/");
    CHECK(balance_request_hash(&t.up, &m, NULL) == t_hash_of(""));
    m = t_req(NULL, 0, "/");
    CHECK(balance_request_hash(&t.up, &m, NULL) == t_hash_of(""));
}

UNIT_TEST(request_hash_header_and_uri)
{
    struct t_up t;
    t_up_init(&t, BALANCE_HASH, NULL, 2, 1);
    t.up.hash_key = HASH_KEY_HEADER;
    t.up.hash_key_name = "X-User";
    struct http_header h[] = { T_HDR("x-user", "alice"), T_HDR("X-User", "bob") };
    struct http_msg m = t_req(h, 2, "/a?b=1");
    CHECK(balance_request_hash(&t.up, &m, NULL) == t_hash_of("alice"));
    m = t_req(h, 0, "/a?b=1");
    CHECK(balance_request_hash(&t.up, &m, NULL) == t_hash_of(""));

    t.up.hash_key = HASH_KEY_URI;
    t.up.hash_key_name = NULL;
    m = t_req(h, 2, "/a?b=1");
    CHECK(balance_request_hash(&t.up, &m, NULL) == t_hash_of("/a?b=1"));
    struct http_msg m2 = t_req(h, 2, "/a?b=2");
    CHECK(balance_request_hash(&t.up, &m2, NULL) != balance_request_hash(&t.up, &m, NULL));
}

UNIT_TEST(request_hash_client_ip)
{
    struct t_up t;
    t_up_init(&t, BALANCE_HASH, NULL, 2, 1);
    t.up.hash_key = HASH_KEY_CLIENT_IP;
    struct http_msg m = t_req(NULL, 0, "/");

    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(1111) };
    struct sockaddr_in b = a, c = a;
    b.sin_port = htons(2222);
    inet_pton(AF_INET, "192.0.2.7", &a.sin_addr);
    inet_pton(AF_INET, "192.0.2.7", &b.sin_addr);
    inet_pton(AF_INET, "192.0.2.8", &c.sin_addr);
    uint64_t ha = balance_request_hash(&t.up, &m, (struct sockaddr *)&a);
    CHECK(ha == balance_request_hash(&t.up, &m, (struct sockaddr *)&b)); /* port ignored */
    CHECK(ha != balance_request_hash(&t.up, &m, (struct sockaddr *)&c));
    CHECK(ha == str_hash64(&a.sin_addr, 4));

    struct sockaddr_in6 x = { .sin6_family = AF_INET6, .sin6_port = htons(1) };
    struct sockaddr_in6 y = x, z = x;
    y.sin6_port = htons(2);
    inet_pton(AF_INET6, "2001:db8::1", &x.sin6_addr);
    inet_pton(AF_INET6, "2001:db8::1", &y.sin6_addr);
    inet_pton(AF_INET6, "2001:db8::2", &z.sin6_addr);
    uint64_t hx = balance_request_hash(&t.up, &m, (struct sockaddr *)&x);
    CHECK(hx == balance_request_hash(&t.up, &m, (struct sockaddr *)&y));
    CHECK(hx != balance_request_hash(&t.up, &m, (struct sockaddr *)&z));
    CHECK(hx == str_hash64(&x.sin6_addr, 16));

    /* a v4 client over a dual-stack socket hashes as itself */
    struct sockaddr_in6 mapped = { .sin6_family = AF_INET6 };
    inet_pton(AF_INET6, "::ffff:192.0.2.7", &mapped.sin6_addr);
    CHECK(ha == balance_request_hash(&t.up, &m, (struct sockaddr *)&mapped));
    CHECK(balance_request_hash(&t.up, &m, NULL) == t_hash_of(""));
}

UNIT_TEST(hash_pick_uses_key_and_skip_walks_clockwise)
{
    struct t_up t;
    t_up_init(&t, BALANCE_HASH, NULL, 3, 1);
    t.up.hash_key = HASH_KEY_URI;
    struct balance_ring *ring = balance_ring_build(&t.up);
    struct balance_state st;
    CHECK_EQ_INT(balance_state_init(&st, &t.up, ring, 1), 0);
    struct http_msg m = t_req(NULL, 0, "/some/object");
    uint64_t h = balance_request_hash(&t.up, &m, NULL);
    int first = balance_pick(&st, h, NULL);
    CHECK(first >= 0);
    bool skip[3] = { false, false, false };
    skip[first] = true;
    int second = balance_pick(&st, h, skip);
    CHECK(second >= 0 && second != first);
    /* the retry target is the next distinct server clockwise */
    size_t lo = 0;
    while (lo < ring->n && ring->points[lo] < h)
        lo++;
    int expect = -1;
    for (size_t i = 0; i < ring->n && expect < 0; i++) {
        int s = (int)ring->servers[(lo + i) % ring->n];
        if (s != first)
            expect = s;
    }
    CHECK_EQ_INT(second, expect);
    balance_state_free(&st);
    balance_ring_free(ring);
}

UNIT_TEST(begin_end_count_active)
{
    struct t_up t;
    t_up_init(&t, BALANCE_ROUND_ROBIN, NULL, 2, 1);
    struct balance_state st;
    CHECK_EQ_INT(balance_state_init(&st, &t.up, NULL, 1), 0);
    balance_begin(&st, 1);
    balance_begin(&st, 1);
    balance_begin(&st, -1); /* ignored */
    balance_begin(&st, 2);  /* out of range, ignored */
    CHECK_EQ_INT(st.active[0], 0);
    CHECK_EQ_INT(st.active[1], 2);
    balance_end(&st, 1);
    CHECK_EQ_INT(st.active[1], 1);
    balance_state_free(&st);
}

UNIT_MAIN()
