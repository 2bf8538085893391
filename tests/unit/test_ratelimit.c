/* Unit tests of the per-process rate-limit engine: token buckets under a fake clock (burst,
 * refusal, fractional refill, Retry-After values), independence of keys and limits, state kept
 * across a reload, expiry and the bound on buckets, per-address connection counts, and threads
 * sharing one bucket. */
#include "unit.h"

#include <pthread.h>
#include <stdint.h>

#include "policy/ratelimit.h"

static struct conf_rate_limit limit_of(char *name, uint32_t rate, uint64_t per_ms, uint32_t burst)
{
    return (struct conf_rate_limit){ .name = name, .rate = rate, .per_ms = per_ms, .burst = burst };
}

static uint64_t take(struct ratelimit_table *t, const struct conf_rate_limit *l, const char *key,
                     uint64_t now)
{
    return ratelimit_take(t, l, key, strlen(key), now);
}

UNIT_TEST(test_burst_then_refusal)
{
    struct ratelimit_table *t = ratelimit_table_new();
    CHECK(t != NULL);
    struct conf_rate_limit l = limit_of("api", 10, 1000, 5);
    for (int i = 0; i < 5; i++)
        CHECK_EQ_INT(take(t, &l, "1.2.3.4", 1000), 0);
    CHECK_EQ_INT(take(t, &l, "1.2.3.4", 1000), 100); /* one token every 100 ms */
    CHECK_EQ_INT(take(t, &l, "1.2.3.4", 1000), 100); /* a refusal takes nothing */
    CHECK_EQ_INT(ratelimit_bucket_count(t), 1);
    ratelimit_table_free(t);
}

UNIT_TEST(test_refill_timing)
{
    struct ratelimit_table *t = ratelimit_table_new();
    struct conf_rate_limit l = limit_of("api", 10, 1000, 2);
    CHECK_EQ_INT(take(t, &l, "k", 5000), 0);
    CHECK_EQ_INT(take(t, &l, "k", 5000), 0);
    CHECK_EQ_INT(take(t, &l, "k", 5050), 50);
    CHECK_EQ_INT(take(t, &l, "k", 5099), 1);
    CHECK_EQ_INT(take(t, &l, "k", 5100), 0);
    CHECK_EQ_INT(take(t, &l, "k", 5100), 100);
    /* a long pause refills to the burst, never beyond */
    CHECK_EQ_INT(take(t, &l, "k", 60000), 0);
    CHECK_EQ_INT(take(t, &l, "k", 60000), 0);
    CHECK_EQ_INT(take(t, &l, "k", 60000), 100);
    ratelimit_table_free(t);
}

/* 3 per second: a token every 333 1/3 ms; fractions carry over instead of being lost (up to
 * the burst: a full bucket gains nothing). */
UNIT_TEST(test_fractional_refill)
{
    struct ratelimit_table *t = ratelimit_table_new();
    struct conf_rate_limit l = limit_of("frac", 3, 1000, 2);
    CHECK_EQ_INT(take(t, &l, "k", 0), 0);
    CHECK_EQ_INT(take(t, &l, "k", 0), 0);
    CHECK_EQ_INT(take(t, &l, "k", 333), 1);   /* 999/1000 of a token */
    CHECK_EQ_INT(take(t, &l, "k", 334), 0);   /* 1002/1000: taken, 2/1000 left over */
    CHECK_EQ_INT(take(t, &l, "k", 334), 333); /* (1000 - 2) / 3 rounded up */
    CHECK_EQ_INT(take(t, &l, "k", 667), 0);   /* 2 + 333 * 3 = 1001 */
    /* over 3 s exactly 9 more tokens, however the requests fall */
    int granted = 0;
    for (uint64_t now = 668; now <= 3667; now++)
        granted += take(t, &l, "k", now) == 0;
    CHECK_EQ_INT(granted, 9);
    ratelimit_table_free(t);
}

UNIT_TEST(test_retry_after_values)
{
    struct ratelimit_table *t = ratelimit_table_new();
    struct conf_rate_limit l = limit_of("slow", 1, 60000, 1);
    CHECK_EQ_INT(take(t, &l, "k", 100), 0);
    CHECK_EQ_INT(take(t, &l, "k", 100), 60000);
    CHECK_EQ_INT(take(t, &l, "k", 1100), 59000);
    CHECK_EQ_INT(take(t, &l, "k", 60099), 1);
    CHECK_EQ_INT(take(t, &l, "k", 60100), 0);
    /* the largest values the config accepts neither overflow nor wrap */
    struct conf_rate_limit big = limit_of("big", 1000000000, 365ULL * 86400 * 1000, 1000000000);
    CHECK_EQ_INT(take(t, &big, "k", 0), 0);
    struct conf_rate_limit yearly = limit_of("yearly", 1, 365ULL * 86400 * 1000, 1);
    CHECK_EQ_INT(take(t, &yearly, "k", 0), 0);
    CHECK_EQ_INT(take(t, &yearly, "k", 1000), 365ULL * 86400 * 1000 - 1000);
    ratelimit_table_free(t);
}

UNIT_TEST(test_keys_and_limits_independent)
{
    struct ratelimit_table *t = ratelimit_table_new();
    struct conf_rate_limit a = limit_of("a", 1, 1000, 1);
    struct conf_rate_limit ab = limit_of("ab", 1, 1000, 1);
    CHECK_EQ_INT(take(t, &a, "x", 0), 0);
    CHECK(take(t, &a, "x", 0) > 0);
    CHECK_EQ_INT(take(t, &a, "y", 0), 0);  /* another key */
    CHECK_EQ_INT(take(t, &ab, "x", 0), 0); /* another limit, same key */
    /* name+key pairs whose concatenations are equal stay apart: "a"+"bc" vs "ab"+"c" */
    CHECK_EQ_INT(take(t, &a, "bc", 0), 0);
    CHECK_EQ_INT(take(t, &ab, "c", 0), 0);
    /* keys are bytes: an embedded NUL and a prefix are different keys */
    CHECK_EQ_INT(ratelimit_take(t, &a, "p\0q", 3, 0), 0);
    CHECK_EQ_INT(ratelimit_take(t, &a, "p", 1, 0), 0);
    CHECK(ratelimit_take(t, &a, "p\0q", 3, 0) > 0);
    CHECK_EQ_INT(ratelimit_take(t, &a, "", 0, 0), 0); /* the empty key is a key too */
    CHECK(ratelimit_take(t, &a, "", 0, 0) > 0);
    CHECK_EQ_INT(ratelimit_bucket_count(t), 8);
    ratelimit_table_free(t);
}

/* A reload makes a new conf_rate_limit with the same name: the state carries over and the new
 * rate and burst apply. */
UNIT_TEST(test_reload_keeps_state)
{
    struct ratelimit_table *t = ratelimit_table_new();
    char name1[] = "login", name2[] = "login";
    struct conf_rate_limit old = limit_of(name1, 1, 1000, 3);
    CHECK_EQ_INT(take(t, &old, "u", 0), 0);
    CHECK_EQ_INT(take(t, &old, "u", 0), 0);
    struct conf_rate_limit same = limit_of(name2, 1, 1000, 3);
    CHECK_EQ_INT(take(t, &same, "u", 0), 0);
    CHECK_EQ_INT(take(t, &same, "u", 0), 1000);
    /* burst lowered to 1 while the bucket holds 2 refilled tokens: clipped to 1 */
    struct conf_rate_limit smaller = limit_of(name2, 1, 1000, 1);
    CHECK_EQ_INT(take(t, &smaller, "u", 2000), 0);
    CHECK_EQ_INT(take(t, &smaller, "u", 2000), 1000);
    /* a faster rate applies at once */
    struct conf_rate_limit faster = limit_of(name2, 10, 1000, 1);
    CHECK_EQ_INT(take(t, &faster, "u", 2000), 100);
    ratelimit_table_free(t);
}

/* Workers read the clock at different moments: an earlier NOW neither refills nor breaks. */
UNIT_TEST(test_clock_behind_does_not_refill)
{
    struct ratelimit_table *t = ratelimit_table_new();
    struct conf_rate_limit l = limit_of("c", 10, 1000, 1);
    CHECK_EQ_INT(take(t, &l, "k", 1000), 0);
    CHECK_EQ_INT(take(t, &l, "k", 900), 100);
    CHECK_EQ_INT(take(t, &l, "k", 1050), 50);
    CHECK_EQ_INT(take(t, &l, "k", 1100), 0);
    ratelimit_table_free(t);
}

UNIT_TEST(test_expire_drops_idle_full_buckets)
{
    struct ratelimit_table *t = ratelimit_table_new();
    struct conf_rate_limit l = limit_of("e", 10, 1000, 5);
    for (int i = 0; i < 5; i++)
        take(t, &l, "drained", 0);             /* empty: full again at 500 ms */
    CHECK_EQ_INT(take(t, &l, "once", 0), 0);  /* full again at 100 ms */
    CHECK_EQ_INT(ratelimit_bucket_count(t), 2);
    ratelimit_expire(t, 100 + RATELIMIT_IDLE_MS - 1);
    CHECK_EQ_INT(ratelimit_bucket_count(t), 2);
    ratelimit_expire(t, 100 + RATELIMIT_IDLE_MS);
    CHECK_EQ_INT(ratelimit_bucket_count(t), 1);
    ratelimit_expire(t, 499 + RATELIMIT_IDLE_MS);
    CHECK_EQ_INT(ratelimit_bucket_count(t), 1);
    ratelimit_expire(t, 500 + RATELIMIT_IDLE_MS);
    CHECK_EQ_INT(ratelimit_bucket_count(t), 0);
    /* a dropped bucket comes back full */
    uint64_t now = 600 + RATELIMIT_IDLE_MS;
    for (int i = 0; i < 5; i++)
        CHECK_EQ_INT(take(t, &l, "drained", now), 0);
    CHECK_EQ_INT(take(t, &l, "drained", now), 100);
    ratelimit_expire(t, now); /* not full: kept */
    CHECK_EQ_INT(ratelimit_bucket_count(t), 1);
    ratelimit_table_free(t);
}

UNIT_TEST(test_expire_under_key_churn)
{
    struct ratelimit_table *t = ratelimit_table_new();
    struct conf_rate_limit l = limit_of("churn", 100, 1000, 10);
    char key[32];
    for (int i = 0; i < 20000; i++) {
        snprintf(key, sizeof key, "client-%d", i);
        take(t, &l, key, (uint64_t)i);
    }
    CHECK_EQ_INT(ratelimit_bucket_count(t), 20000);
    ratelimit_expire(t, 20009 + RATELIMIT_IDLE_MS - 1); /* the last is full at 20009 */
    CHECK_EQ_INT(ratelimit_bucket_count(t), 1);
    ratelimit_expire(t, 20009 + RATELIMIT_IDLE_MS);
    CHECK_EQ_INT(ratelimit_bucket_count(t), 0);
    ratelimit_table_free(t);
}

/* A bounded table evicts the least recently used bucket of a full shard. */
UNIT_TEST(test_bound_evicts_oldest)
{
    struct ratelimit_table *t = ratelimit_table_new_bounded(64); /* one bucket per shard */
    struct conf_rate_limit l = limit_of("b", 1, 3600000, 1);
    CHECK_EQ_INT(take(t, &l, "victim", 0), 0);
    CHECK(take(t, &l, "victim", 0) > 0);
    char key[32];
    for (int i = 0; i < 10000; i++) {
        snprintf(key, sizeof key, "k%d", i);
        take(t, &l, key, 1);
    }
    CHECK(ratelimit_bucket_count(t) <= 64);
    /* its shard certainly took other keys since (chance otherwise (63/64)^10000): evicted,
     * so it is back to a full bucket */
    CHECK_EQ_INT(take(t, &l, "victim", 2), 0);
    ratelimit_table_free(t);

    /* a recently used bucket survives where an idle one goes */
    t = ratelimit_table_new_bounded(128); /* two per shard */
    int kept = 0;
    for (int round = 0; round < 50; round++) {
        take(t, &l, "hot", 0);
        snprintf(key, sizeof key, "cold-%d", round);
        take(t, &l, key, 0);
    }
    kept = take(t, &l, "hot", 0) > 0; /* still drained: never evicted */
    CHECK_EQ_INT(kept, 1);
    ratelimit_table_free(t);
}

UNIT_TEST(test_conn_acquire_release)
{
    struct ratelimit_table *t = ratelimit_table_new();
    const uint8_t v4[4] = { 10, 0, 0, 1 }, other[4] = { 10, 0, 0, 2 };
    uint8_t v6[16] = { 10, 0, 0, 1 }; /* same first bytes, another family */
    CHECK(ratelimit_conn_acquire(t, v4, 4, 2));
    CHECK(ratelimit_conn_acquire(t, v4, 4, 2));
    CHECK(!ratelimit_conn_acquire(t, v4, 4, 2));
    CHECK(!ratelimit_conn_acquire(t, v4, 4, 2)); /* refusals count nothing */
    CHECK(ratelimit_conn_acquire(t, other, 4, 2));
    CHECK(ratelimit_conn_acquire(t, v6, 16, 1));
    CHECK(!ratelimit_conn_acquire(t, v6, 16, 1));
    ratelimit_conn_release(t, v4, 4);
    CHECK(ratelimit_conn_acquire(t, v4, 4, 2));
    CHECK(!ratelimit_conn_acquire(t, v4, 4, 2));
    /* a larger limit (after a reload) lets more in */
    CHECK(ratelimit_conn_acquire(t, v4, 4, 3));
    for (int i = 0; i < 3; i++)
        ratelimit_conn_release(t, v4, 4);
    ratelimit_conn_release(t, v4, 4); /* one too many: harmless */
    CHECK(ratelimit_conn_acquire(t, v4, 4, 1));
    CHECK(!ratelimit_conn_acquire(t, v4, 4, 1));
    CHECK(!ratelimit_conn_acquire(t, other, 4, 0)); /* MAX 0 refuses */
    CHECK_EQ_INT(ratelimit_bucket_count(t), 0);     /* counts are not buckets */
    ratelimit_expire(t, UINT64_MAX);                 /* nor expire */
    CHECK(!ratelimit_conn_acquire(t, v4, 4, 1));
    ratelimit_conn_release(t, v4, 4);
    ratelimit_conn_release(t, other, 4);
    ratelimit_conn_release(t, v6, 16);
    ratelimit_table_free(t); /* ASan: nothing left behind */
}

/* --- threads ------------------------------------------------------------------------------- */

#define N_THREADS 4
#define TAKES_PER_THREAD 20000

struct hammer {
    struct ratelimit_table *t;
    const struct conf_rate_limit *l;
    const char *key;
    uint64_t now;
    int granted;
};

static void *hammer_run(void *arg)
{
    struct hammer *h = arg;
    for (int i = 0; i < TAKES_PER_THREAD; i++)
        h->granted += ratelimit_take(h->t, h->l, h->key, strlen(h->key), h->now) == 0;
    return NULL;
}

UNIT_TEST(test_threads_share_one_bucket)
{
    struct ratelimit_table *t = ratelimit_table_new();
    struct conf_rate_limit l = limit_of("shared", 1, 3600000, 1000);
    struct hammer h[N_THREADS];
    pthread_t th[N_THREADS];
    for (int i = 0; i < N_THREADS; i++) {
        h[i] = (struct hammer){ .t = t, .l = &l, .key = "one-key", .now = 12345 };
        CHECK_EQ_INT(pthread_create(&th[i], NULL, hammer_run, &h[i]), 0);
    }
    int total = 0;
    for (int i = 0; i < N_THREADS; i++) {
        pthread_join(th[i], NULL);
        total += h[i].granted;
    }
    CHECK_EQ_INT(total, 1000);
    ratelimit_table_free(t);
}

/* Threads with keys of their own, while another thread expires: each gets exactly its burst. */
static void *expirer_run(void *arg)
{
    struct hammer *h = arg;
    for (int i = 0; i < 200; i++)
        ratelimit_expire(h->t, h->now);
    return NULL;
}

UNIT_TEST(test_threads_own_keys_with_expiry)
{
    struct ratelimit_table *t = ratelimit_table_new();
    struct conf_rate_limit l = limit_of("own", 1, 3600000, 777);
    static const char *keys[N_THREADS] = { "t0", "t1", "t2", "t3" };
    struct hammer h[N_THREADS], ex = { .t = t, .now = 12345 };
    pthread_t th[N_THREADS], ext;
    CHECK_EQ_INT(pthread_create(&ext, NULL, expirer_run, &ex), 0);
    for (int i = 0; i < N_THREADS; i++) {
        h[i] = (struct hammer){ .t = t, .l = &l, .key = keys[i], .now = 12345 };
        CHECK_EQ_INT(pthread_create(&th[i], NULL, hammer_run, &h[i]), 0);
    }
    for (int i = 0; i < N_THREADS; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ_INT(h[i].granted, 777);
    }
    pthread_join(ext, NULL);
    CHECK_EQ_INT(ratelimit_bucket_count(t), N_THREADS);
    ratelimit_table_free(t);
}

UNIT_MAIN()
