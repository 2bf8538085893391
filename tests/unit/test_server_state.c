/* Unit tests of server_state: the registry (keys, references), passive health (ejection, its
 * growth, cap and share limit, expiry), slow start, the retry budget and the backoff. Pure logic
 * on an explicit clock: no threads, no sleeping. */
#include "unit.h"

#include "proxy/server_state.h"

static const struct outlier_policy policy3 = {
    .consecutive_failures = 3, .base_ejection_ms = 1000, .max_ejection_ms = 5000,
    .max_ejected_percent = 50,
};

/* Fails S N times in a pool of N_POOL with N_EJECTED already out; returns how many ejected. */
static int fail_n(struct server_state *s, int n, size_t n_pool, size_t n_ejected, uint64_t now)
{
    int ejected = 0;
    for (int i = 0; i < n; i++)
        ejected += server_state_record(s, false, &policy3, n_pool, n_ejected, now);
    return ejected;
}

static void count_cb(struct server_state *s, void *arg)
{
    (void)s;
    (*(int *)arg)++;
}

UNIT_TEST(registry_keys_and_refs)
{
    struct server_state *a = server_state_get("app", "127.0.0.1:9001");
    struct server_state *b = server_state_get("app", "127.0.0.1:9002");
    struct server_state *a2 = server_state_get("app", "127.0.0.1:9001");
    struct server_state *c = server_state_get("api", "127.0.0.1:9001");
    CHECK(a && b && c);
    CHECK(a == a2);
    CHECK(a != b && a != c);
    CHECK(strcmp(a->key, "app/127.0.0.1:9001") == 0);
    CHECK(strcmp(c->key, "api/127.0.0.1:9001") == 0);
    CHECK_EQ_INT(atomic_load(&a->refs), 2);
    CHECK(atomic_load(&a->active_up));
    CHECK_EQ_INT(atomic_load(&a->ejected_until), 0);
    CHECK_EQ_INT(atomic_load(&a->up_since), 0);
    int n = 0;
    server_state_foreach(count_cb, &n);
    CHECK_EQ_INT(n, 3);
    /* state survives while one reference remains (a reload keeps it) */
    atomic_store(&a->ejections, 7);
    server_state_put(a2);
    struct server_state *a3 = server_state_get("app", "127.0.0.1:9001");
    CHECK(a3 == a);
    CHECK_EQ_INT(atomic_load(&a3->ejections), 7);
    server_state_put(a3);
    server_state_put(a);
    server_state_put(b);
    n = 0;
    server_state_foreach(count_cb, &n);
    CHECK_EQ_INT(n, 1);
    /* gone with its last reference: a new one starts fresh */
    struct server_state *a4 = server_state_get("app", "127.0.0.1:9001");
    CHECK_EQ_INT(atomic_load(&a4->ejections), 0);
    server_state_put(a4);
    server_state_put(c);
    n = 0;
    server_state_foreach(count_cb, &n);
    CHECK_EQ_INT(n, 0);
    /* registry_free takes what is left, references or not */
    CHECK(server_state_get("x", "1.2.3.4:5") != NULL);
    server_state_registry_free();
    n = 0;
    server_state_foreach(count_cb, &n);
    CHECK_EQ_INT(n, 0);
}

UNIT_TEST(long_keys)
{
    char addr[1200];
    memset(addr, 'h', sizeof addr - 1);
    addr[sizeof addr - 1] = '\0';
    struct server_state *a = server_state_get("up", addr);
    struct server_state *b = server_state_get("up", addr);
    CHECK(a && a == b);
    CHECK_EQ_INT(strlen(a->key), 3 + strlen(addr));
    server_state_put(a);
    server_state_put(b);
}

UNIT_TEST(usable_and_ejection_expiry)
{
    struct server_state *s = server_state_get("u", "a:1");
    CHECK(server_state_usable(s, 100));
    CHECK_EQ_INT(fail_n(s, 2, 4, 0, 100), 0);
    CHECK(server_state_usable(s, 100));
    CHECK_EQ_INT(fail_n(s, 1, 4, 0, 100), 1);
    CHECK_EQ_INT(atomic_load(&s->ejected_until), 1100);
    CHECK_EQ_INT(atomic_load(&s->up_since), 1100);
    CHECK_EQ_INT(atomic_load(&s->consecutive_failures), 0);
    CHECK_EQ_INT(atomic_load(&s->total_ejections), 1);
    CHECK(!server_state_usable(s, 100));
    CHECK(!server_state_usable(s, 1099));
    CHECK(server_state_usable(s, 1100));
    /* while ejected, more failures do not eject again */
    CHECK_EQ_INT(fail_n(s, 5, 4, 0, 500), 0);
    CHECK_EQ_INT(atomic_load(&s->total_ejections), 1);
    /* active verdict down: not usable whatever the ejection says */
    atomic_store(&s->active_up, false);
    CHECK(!server_state_usable(s, 5000));
    server_state_put(s);
}

UNIT_TEST(ejection_time_doubles_and_caps)
{
    struct server_state *s = server_state_get("u", "b:1");
    uint64_t now = 10000;
    uint64_t want[] = { 1000, 2000, 4000, 5000, 5000 };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        CHECK_EQ_INT(fail_n(s, 3, 10, 0, now), 1);
        CHECK_EQ_INT(atomic_load(&s->ejected_until) - now, want[i]);
        now = atomic_load(&s->ejected_until);
    }
    CHECK_EQ_INT(atomic_load(&s->ejections), 5);
    /* a huge ejection count must not shift past 64 bits */
    atomic_store(&s->ejections, 200);
    CHECK_EQ_INT(fail_n(s, 3, 10, 0, now), 1);
    CHECK_EQ_INT(atomic_load(&s->ejected_until) - now, 5000);
    server_state_put(s);
}

UNIT_TEST(max_ejected_percent)
{
    struct server_state *s[3];
    for (int i = 0; i < 3; i++) {
        char addr[16];
        snprintf(addr, sizeof addr, "p:%d", i);
        s[i] = server_state_get("pool", addr);
    }
    /* pool of 3 at 50%: the first may go (1*100 <= 150), a second may not (200 > 150) */
    size_t ejected = 0;
    for (int i = 0; i < 3; i++)
        ejected += (size_t)fail_n(s[i], 3, 3, ejected, 0);
    CHECK_EQ_INT(ejected, 1);
    CHECK(!server_state_usable(s[0], 0));
    CHECK(server_state_usable(s[1], 0));
    CHECK(server_state_usable(s[2], 0));
    /* a lone server at 50% is never ejected */
    struct server_state *lone = server_state_get("lone", "l:1");
    CHECK_EQ_INT(fail_n(lone, 30, 1, 0, 0), 0);
    CHECK(server_state_usable(lone, 0));
    /* 100% lets the last one go too */
    struct outlier_policy all = policy3;
    all.max_ejected_percent = 100;
    /* its failure count is already past the threshold: the next failure ejects */
    CHECK(server_state_record(lone, false, &all, 1, 0, 0));
    CHECK(!server_state_usable(lone, 0));
    /* passive checks off */
    struct outlier_policy off = policy3;
    off.consecutive_failures = 0;
    for (int i = 0; i < 10; i++)
        CHECK(!server_state_record(s[1], false, &off, 3, 0, 0));
    for (int i = 0; i < 3; i++)
        server_state_put(s[i]);
    server_state_put(lone);
}

UNIT_TEST(success_resets_failures)
{
    struct server_state *s = server_state_get("u", "c:1");
    CHECK_EQ_INT(fail_n(s, 2, 4, 0, 0), 0);
    CHECK_EQ_INT(atomic_load(&s->consecutive_failures), 2);
    CHECK(!server_state_record(s, true, &policy3, 4, 0, 0));
    CHECK_EQ_INT(atomic_load(&s->consecutive_failures), 0);
    CHECK_EQ_INT(fail_n(s, 2, 4, 0, 0), 0);
    CHECK(server_state_usable(s, 0));
    server_state_put(s);
}

UNIT_TEST(slow_start_ramp)
{
    struct server_state *s = server_state_get("u", "d:1");
    /* never went down: full weight */
    CHECK_EQ_INT(server_state_effective_weight(s, 10, 1000, 5000), 10);
    atomic_store(&s->up_since, 5000);
    CHECK_EQ_INT(server_state_effective_weight(s, 10, 0, 5000), 10);   /* off */
    CHECK_EQ_INT(server_state_effective_weight(s, 10, 1000, 4000), 1);  /* still ejected */
    CHECK_EQ_INT(server_state_effective_weight(s, 10, 1000, 5000), 1);  /* at least 1 */
    CHECK_EQ_INT(server_state_effective_weight(s, 10, 1000, 5100), 1);
    CHECK_EQ_INT(server_state_effective_weight(s, 10, 1000, 5250), 2);
    CHECK_EQ_INT(server_state_effective_weight(s, 10, 1000, 5500), 5);
    CHECK_EQ_INT(server_state_effective_weight(s, 10, 1000, 5999), 9);
    CHECK_EQ_INT(server_state_effective_weight(s, 10, 1000, 6000), 10);
    CHECK_EQ_INT(server_state_effective_weight(s, 10, 1000, 99999), 10);
    /* no 64-bit overflow with a large weight and ramp */
    uint64_t big = 1ULL << 40;
    CHECK_EQ_INT(server_state_effective_weight(s, 4000000000u, big, 5000 + big / 2), 2000000000u);
    /* after an ejection, up_since is its end: the ramp starts there */
    CHECK_EQ_INT(fail_n(s, 3, 4, 0, 10000), 1);
    CHECK_EQ_INT(server_state_effective_weight(s, 10, 1000, 10500), 1);
    CHECK_EQ_INT(server_state_effective_weight(s, 10, 1000, 11500), 5);
    CHECK_EQ_INT(server_state_effective_weight(s, 10, 1000, 12000), 10);
    server_state_put(s);
}

UNIT_TEST(retry_budget_share)
{
    struct retry_budget b;
    retry_budget_init(&b, 20, 3, 10000);
    for (int i = 0; i < 100; i++)
        retry_budget_on_request(&b, 1000);
    int allowed = 0;
    for (int i = 0; i < 50; i++)
        allowed += retry_budget_take(&b, 1000);
    CHECK_EQ_INT(allowed, 20);
    CHECK(!retry_budget_take(&b, 1000));
    /* more requests earn more retries: 5 requests at 20% -> 1 */
    for (int i = 0; i < 5; i++)
        retry_budget_on_request(&b, 2000);
    CHECK(retry_budget_take(&b, 2000));
    CHECK(!retry_budget_take(&b, 2000));
}

UNIT_TEST(retry_budget_min_and_window)
{
    struct retry_budget b;
    retry_budget_init(&b, 20, 3, 10000);
    retry_budget_on_request(&b, 50000);
    /* low traffic: min_retries are always there */
    CHECK(retry_budget_take(&b, 50000));
    CHECK(retry_budget_take(&b, 50001));
    CHECK(retry_budget_take(&b, 50002));
    CHECK(!retry_budget_take(&b, 50003));
    CHECK(!retry_budget_take(&b, 59999));
    /* a new window starts afresh */
    CHECK(retry_budget_take(&b, 60000));
    CHECK_EQ_INT(b.window_start_ms, 60000);
    CHECK_EQ_INT(b.requests, 0);
    CHECK_EQ_INT(b.retries, 1);
    /* no minimum, no requests: nothing */
    retry_budget_init(&b, 20, 0, 10000);
    CHECK(!retry_budget_take(&b, 1));
}

UNIT_TEST(backoff_bounds)
{
    uint64_t rng = 0; /* 0 must not stick */
    uint64_t max_seen[5] = { 0 };
    bool nonzero = false;
    for (int i = 0; i < 2000; i++) {
        for (unsigned attempt = 1; attempt <= 5; attempt++) {
            uint64_t ms = retry_backoff_ms(25, 250, attempt, &rng);
            uint64_t hi = attempt == 1 ? 25 : attempt == 2 ? 50 : attempt == 3 ? 100 : attempt == 4 ? 200 : 250;
            CHECK(ms <= hi);
            if (ms > max_seen[attempt - 1])
                max_seen[attempt - 1] = ms;
            nonzero |= ms != 0;
        }
    }
    CHECK(nonzero);
    CHECK(rng != 0);
    /* uniform enough to reach near the top of each range */
    CHECK(max_seen[0] >= 20);
    CHECK(max_seen[4] >= 200);
    /* absurd attempt numbers are capped, not undefined */
    for (int i = 0; i < 100; i++)
        CHECK(retry_backoff_ms(25, 250, 1000, &rng) <= 250);
    CHECK_EQ_INT(retry_backoff_ms(0, 250, 3, &rng), 0);
    CHECK_EQ_INT(retry_backoff_ms(25, 0, 3, &rng), 0);
}

UNIT_MAIN()
