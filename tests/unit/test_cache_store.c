/* Unit tests of the cache store: fills and hits, collapsing, Vary variants, aborts and limits,
 * eviction under the budget, S3-FIFO against LRU on the simulator, readers of a filling object on
 * several threads, waiters, purge by key / prefix / tag, 304 updates, the disk tier (round trip
 * across a "restart", corrupt and partial files, max_size) and the zone registry. */
#include "unit.h"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cache/cache_evict.h"
#include "cache/cache_store.h"

static struct conf_cache_zone zone_conf(char *name, uint64_t memory)
{
    return (struct conf_cache_zone){ .name = name, .memory = memory, .max_object_size = 1 << 20 };
}

static struct cache_zone *zone_get(struct conf_cache_zone *c)
{
    char err[256] = "";
    struct cache_zone *z = cache_zone_get(c, err, sizeof err);
    if (!z)
        fprintf(stderr, "  zone: %s\n", err);
    return z;
}

static struct str vary_fixed(void *ctx, struct str names)
{
    (void)names;
    return str_make(ctx, strlen(ctx));
}

static struct cache_response resp(const char *head, const char *tags)
{
    return (struct cache_response){ .head = head, .head_len = strlen(head),
                                    .meta = "M", .meta_len = 1,
                                    .tags = str_make(tags, strlen(tags)),
                                    .length_hint = CACHE_LENGTH_UNKNOWN };
}

/* Stores KEY -> BODY (no Vary); returns 0 on success. */
static int store(struct cache_zone *z, const char *key, const char *body, const char *tags)
{
    struct cache_obj *o;
    if (cache_fill_begin(z, key, strlen(key), NULL, NULL, &o) != CACHE_FILL_NEW)
        return -1;
    struct cache_response r = resp("HTTP/1.1 200 OK\r\n\r\n", tags);
    r.length_hint = strlen(body);
    int rc = cache_obj_set_head(o, &r);
    if (rc == 0)
        rc = cache_obj_append(o, body, strlen(body));
    if (rc == 0)
        cache_obj_finish(o);
    cache_obj_put(o);
    return rc;
}

/* The whole body of a COMPLETE object, NUL-terminated in BUF. */
static const char *body_of(struct cache_obj *o, char *buf, size_t cap)
{
    size_t n = 0;
    const char *p;
    for (size_t got; n < cap - 1 && (got = cache_obj_read(o, n, &p)); n += got)
        memcpy(buf + n, p, got < cap - 1 - n ? got : cap - 1 - n);
    buf[n] = '\0';
    return buf;
}

static bool has(struct cache_zone *z, const char *key)
{
    struct cache_obj *o = cache_lookup(z, key, strlen(key), NULL, NULL);
    cache_obj_put(o);
    return o != NULL;
}

UNIT_TEST(test_fill_then_hit)
{
    struct conf_cache_zone c = zone_conf("t_fill", 1 << 20);
    struct cache_zone *z = zone_get(&c);
    CHECK(z != NULL);
    CHECK(cache_lookup(z, "k", 1, NULL, NULL) == NULL);
    CHECK_EQ_INT(store(z, "k", "hello world", "a b"), 0);
    struct cache_obj *o = cache_lookup(z, "k", 1, NULL, NULL);
    CHECK(o != NULL);
    CHECK_EQ_INT(cache_obj_state(o), CACHE_OBJ_COMPLETE);
    size_t n;
    const char *h = cache_obj_head(o, &n);
    CHECK(n == 19 && memcmp(h, "HTTP/1.1 200 OK\r\n\r\n", n) == 0);
    const void *m = cache_obj_meta(o, &n);
    CHECK(n == 1 && memcmp(m, "M", 1) == 0);
    char buf[64];
    CHECK(strcmp(body_of(o, buf, sizeof buf), "hello world") == 0);
    CHECK_EQ_INT(cache_obj_length(o), 11);
    CHECK(str_eq(cache_obj_tags(o), STR_LIT("a b")));
    CHECK(str_eq(cache_obj_key(o), STR_LIT("k")));
    cache_obj_put(o);
    struct cache_zone_stats st;
    cache_zone_note(z, CACHE_EV_HIT);
    cache_zone_note(z, CACHE_EV_MISS);
    cache_zone_stats(z, &st);
    CHECK_EQ_INT(st.objects, 1);
    CHECK(st.bytes > 11);
    CHECK_EQ_INT(st.hits, 1);
    CHECK_EQ_INT(st.misses, 1);
    cache_zone_put(z);
}

UNIT_TEST(test_large_body_blocks)
{
    struct conf_cache_zone c = zone_conf("t_large", 64 << 20);
    c.max_object_size = 4 << 20;
    struct cache_zone *z = zone_get(&c);
    struct cache_obj *o;
    CHECK_EQ_INT(cache_fill_begin(z, "big", 3, NULL, NULL, &o), CACHE_FILL_NEW);
    struct cache_response r = resp("H", "");
    CHECK_EQ_INT(cache_obj_set_head(o, &r), 0);
    static char chunk[7777];
    uint64_t total = 0;
    while (total + sizeof chunk <= (3u << 20)) {
        for (size_t i = 0; i < sizeof chunk; i++)
            chunk[i] = (char)((total + i) * 31 % 251);
        CHECK_EQ_INT(cache_obj_append(o, chunk, sizeof chunk), 0);
        total += sizeof chunk;
    }
    cache_obj_finish(o);
    CHECK_EQ_INT(cache_obj_length(o), total);
    bool ok = true;
    const char *p;
    for (uint64_t off = 0, n; off < total; off += n) {
        n = cache_obj_read(o, off, &p);
        ok = ok && n > 0;
        for (uint64_t i = 0; ok && i < n; i++)
            ok = p[i] == (char)((off + i) * 31 % 251);
        if (!n)
            break;
    }
    CHECK(ok);
    CHECK_EQ_INT(cache_obj_read(o, total, &p), 0);
    cache_obj_put(o);
    cache_zone_put(z);
}

UNIT_TEST(test_collapse_onto_filling)
{
    struct conf_cache_zone c = zone_conf("t_collapse", 1 << 20);
    struct cache_zone *z = zone_get(&c);
    struct cache_obj *a, *b;
    CHECK_EQ_INT(cache_fill_begin(z, "k", 1, NULL, NULL, &a), CACHE_FILL_NEW);
    CHECK_EQ_INT(cache_fill_begin(z, "k", 1, NULL, NULL, &b), CACHE_FILL_COLLAPSED);
    CHECK(a == b);
    struct cache_obj *l = cache_lookup(z, "k", 1, NULL, NULL);
    CHECK(l == a);
    CHECK_EQ_INT(cache_obj_state(l), CACHE_OBJ_FILLING);
    size_t n;
    CHECK(cache_obj_head(l, &n) == NULL);
    const char *p;
    CHECK_EQ_INT(cache_obj_read(l, 0, &p), 0);
    struct cache_response r = resp("H", "");
    CHECK_EQ_INT(cache_obj_set_head(a, &r), 0);
    CHECK_EQ_INT(cache_obj_append(a, "abc", 3), 0);
    CHECK_EQ_INT(cache_obj_read(l, 1, &p), 2);
    CHECK(memcmp(p, "bc", 2) == 0);
    cache_obj_finish(a);
    CHECK_EQ_INT(cache_obj_state(b), CACHE_OBJ_COMPLETE);
    cache_obj_put(a);
    cache_obj_put(b);
    cache_obj_put(l);
    /* a new fill while a COMPLETE one exists is a refresh: it replaces it when done */
    CHECK_EQ_INT(cache_fill_begin(z, "k", 1, NULL, NULL, &a), CACHE_FILL_NEW);
    l = cache_lookup(z, "k", 1, NULL, NULL);
    CHECK(l != a && cache_obj_state(l) == CACHE_OBJ_COMPLETE);
    CHECK_EQ_INT(cache_obj_set_head(a, &r), 0);
    CHECK_EQ_INT(cache_obj_append(a, "xyz!", 4), 0);
    cache_obj_finish(a);
    b = cache_lookup(z, "k", 1, NULL, NULL);
    CHECK(b == a);
    CHECK_EQ_INT(cache_obj_length(l), 3); /* the old one still reads */
    cache_obj_put(l);
    cache_obj_put(b);
    cache_obj_put(a);
    cache_zone_put(z);
}

static int store_variant(struct cache_zone *z, const char *key, const char *names, char *vk,
                         const char *body)
{
    struct cache_obj *o;
    enum cache_fill_result fr = cache_fill_begin(z, key, strlen(key), vary_fixed, vk, &o);
    if (fr != CACHE_FILL_NEW) {
        cache_obj_put(o);
        return -1;
    }
    struct cache_response r = resp("H", "");
    r.vary_names = str_make(names, strlen(names));
    r.vary_key = str_make(vk, strlen(vk));
    int rc = cache_obj_set_head(o, &r);
    if (rc == 0)
        rc = cache_obj_append(o, body, strlen(body));
    if (rc == 0)
        cache_obj_finish(o);
    cache_obj_put(o);
    return rc;
}

static const char *variant_body(struct cache_zone *z, const char *key, char *vk, char *buf,
                                size_t cap)
{
    struct cache_obj *o = cache_lookup(z, key, strlen(key), vary_fixed, vk);
    if (!o)
        return "(miss)";
    body_of(o, buf, cap);
    cache_obj_put(o);
    return buf;
}

UNIT_TEST(test_vary_variants)
{
    struct conf_cache_zone c = zone_conf("t_vary", 1 << 20);
    struct cache_zone *z = zone_get(&c);
    char buf[64];
    CHECK_EQ_INT(store_variant(z, "k", "accept-encoding", "gzip", "G"), 0);
    CHECK_EQ_INT(store_variant(z, "k", "accept-encoding", "identity", "I"), 0);
    CHECK(strcmp(variant_body(z, "k", "gzip", buf, sizeof buf), "G") == 0);
    CHECK(strcmp(variant_body(z, "k", "identity", buf, sizeof buf), "I") == 0);
    CHECK(strcmp(variant_body(z, "k", "br", buf, sizeof buf), "(miss)") == 0);
    /* without a callback, a key with Vary names never matches */
    CHECK(!has(z, "k"));
    /* a collapsed request checks the variant once the head is there */
    struct cache_obj *o;
    CHECK_EQ_INT(cache_fill_begin(z, "k", 1, vary_fixed, "br", &o), CACHE_FILL_NEW);
    CHECK(cache_obj_vary_matches(o, vary_fixed, "gzip")); /* no head yet: unknown */
    struct cache_response r = resp("H", "");
    r.vary_names = STR_LIT("accept-encoding");
    r.vary_key = STR_LIT("br");
    CHECK_EQ_INT(cache_obj_set_head(o, &r), 0);
    CHECK(cache_obj_vary_matches(o, vary_fixed, "br"));
    CHECK(!cache_obj_vary_matches(o, vary_fixed, "gzip"));
    CHECK(str_eq(cache_obj_vary_key(o), STR_LIT("br")));
    CHECK(str_eq(cache_obj_vary_names(o), STR_LIT("accept-encoding")));
    cache_obj_abort(o);
    cache_obj_put(o);
    /* new Vary names replace the variants stored under the old ones */
    CHECK_EQ_INT(store_variant(z, "k", "accept-language", "fr", "F"), 0);
    CHECK(strcmp(variant_body(z, "k", "fr", buf, sizeof buf), "F") == 0);
    CHECK(strcmp(variant_body(z, "k", "gzip", buf, sizeof buf), "(miss)") == 0);
    struct cache_zone_stats st;
    cache_zone_stats(z, &st);
    CHECK_EQ_INT(st.objects, 1);
    cache_zone_put(z);
}

UNIT_TEST(test_abort_and_limits)
{
    struct conf_cache_zone c = zone_conf("t_abort", 1 << 20);
    c.max_object_size = 10;
    struct cache_zone *z = zone_get(&c);
    struct cache_obj *o, *reader;
    CHECK_EQ_INT(cache_fill_begin(z, "k", 1, NULL, NULL, &o), CACHE_FILL_NEW);
    CHECK_EQ_INT(cache_fill_begin(z, "k", 1, NULL, NULL, &reader), CACHE_FILL_COLLAPSED);
    struct cache_response r = resp("H", "");
    CHECK_EQ_INT(cache_obj_set_head(o, &r), 0);
    CHECK_EQ_INT(cache_obj_append(o, "0123456789", 10), 0);
    CHECK_EQ_INT(cache_obj_append(o, "x", 1), -1); /* past max_object_size */
    CHECK_EQ_INT(cache_obj_state(reader), CACHE_OBJ_ABORTED);
    CHECK_EQ_INT(cache_obj_append(o, "x", 1), -1);
    cache_obj_finish(o); /* no effect once aborted */
    CHECK_EQ_INT(cache_obj_state(o), CACHE_OBJ_ABORTED);
    CHECK(!has(z, "k"));
    cache_obj_put(o);
    cache_obj_put(reader);
    CHECK_EQ_INT(cache_fill_begin(z, "k", 1, NULL, NULL, &o), CACHE_FILL_NEW);
    cache_obj_abort(o);
    cache_obj_abort(o);
    cache_obj_put(o);
    CHECK(!has(z, "k"));
    struct cache_zone_stats st;
    cache_zone_stats(z, &st);
    CHECK_EQ_INT(st.objects, 0);
    CHECK_EQ_INT(st.bytes, 0);
    cache_zone_put(z);
}

UNIT_TEST(test_eviction_under_budget)
{
    struct conf_cache_zone c = zone_conf("t_evict", 256 * 1024);
    struct cache_zone *z = zone_get(&c);
    static char body[10001];
    memset(body, 'b', sizeof body - 1);
    char key[32];
    for (int i = 0; i < 200; i++) {
        snprintf(key, sizeof key, "obj-%d", i);
        CHECK_EQ_INT(store(z, key, body, ""), 0);
        struct cache_zone_stats st;
        cache_zone_stats(z, &st);
        CHECK(st.bytes <= 256 * 1024);
    }
    struct cache_zone_stats st;
    cache_zone_stats(z, &st);
    CHECK(st.evictions > 150);
    CHECK(st.objects >= 5 && st.objects <= 26);
    CHECK(has(z, "obj-199")); /* the newest survives */
    /* one object bigger than the whole budget cannot be stored */
    struct cache_obj *o;
    CHECK_EQ_INT(cache_fill_begin(z, "huge", 4, NULL, NULL, &o), CACHE_FILL_NEW);
    struct cache_response r = resp("H", "");
    CHECK_EQ_INT(cache_obj_set_head(o, &r), 0);
    int rc = 0;
    for (int i = 0; i < 40 && rc == 0; i++)
        rc = cache_obj_append(o, body, sizeof body - 1);
    CHECK_EQ_INT(rc, -1);
    CHECK_EQ_INT(cache_obj_state(o), CACHE_OBJ_ABORTED);
    cache_obj_put(o);
    cache_zone_put(z);
}

/* Objects hit twice survive a scan of one-hit wonders that fills the cache several times. */
UNIT_TEST(test_store_scan_resistance)
{
    struct conf_cache_zone c = zone_conf("t_scan", 512 * 1024);
    struct cache_zone *z = zone_get(&c);
    static char body[2001];
    memset(body, 'h', sizeof body - 1);
    char key[32];
    for (int i = 0; i < 20; i++) {
        snprintf(key, sizeof key, "hot-%d", i);
        store(z, key, body, "");
        has(z, key);
    }
    for (int i = 0; i < 2000; i++) {
        snprintf(key, sizeof key, "scan-%d", i);
        store(z, key, body, "");
    }
    int hot = 0;
    for (int i = 0; i < 20; i++) {
        snprintf(key, sizeof key, "hot-%d", i);
        hot += has(z, key);
    }
    if (hot < 18)
        fprintf(stderr, "  hot objects left: %d of 20\n", hot);
    CHECK(hot >= 18);
    cache_zone_put(z);
}

UNIT_TEST(test_evict_policy_units)
{
    struct cache_evict e;
    struct cache_evict_node n[20];
    memset(n, 0, sizeof n);
    cache_evict_init(&e, CACHE_EVICT_S3FIFO, 10);
    for (int i = 0; i < 10; i++) {
        n[i].id = (uint64_t)i + 1;
        n[i].size = 1;
        cache_evict_insert(&e, &n[i]);
    }
    CHECK_EQ_INT(cache_evict_bytes(&e), 10);
    cache_evict_touch(&e, &n[0]);
    /* small is over its share: the oldest, hit, moves to main; the next (unhit) goes */
    CHECK(cache_evict_next(&e) == &n[1]);
    /* n[1] is in the ghost: it comes back into main */
    cache_evict_insert(&e, &n[1]);
    cache_evict_remove(&e, &n[1]);
    cache_evict_remove(&e, &n[1]); /* removing twice is harmless */
    CHECK_EQ_INT(cache_evict_bytes(&e), 9);
    cache_evict_free(&e);

    cache_evict_init(&e, CACHE_EVICT_LRU, 3);
    for (int i = 0; i < 3; i++) {
        n[i] = (struct cache_evict_node){ .id = (uint64_t)i + 1, .size = 1 };
        cache_evict_insert(&e, &n[i]);
    }
    cache_evict_touch(&e, &n[0]);
    CHECK(cache_evict_next(&e) == &n[1]);
    CHECK(cache_evict_next(&e) == &n[2]);
    CHECK(cache_evict_next(&e) == &n[0]);
    CHECK(cache_evict_next(&e) == NULL);
    cache_evict_free(&e);
}

UNIT_TEST(test_sim_s3fifo_beats_lru_on_scans)
{
    struct cache_sim_trace_params p = { .objects = 20000, .alpha = 0.9, .requests = 400000,
                                        .scan_every = 20000, .scan_len = 4000, .seed = 42 };
    size_t n;
    uint64_t *ids = cache_sim_trace(&p, &n);
    CHECK(ids != NULL && n == p.requests);
    double s3 = cache_sim_run(CACHE_EVICT_S3FIFO, ids, n, 2000);
    double lru = cache_sim_run(CACHE_EVICT_LRU, ids, n, 2000);
    printf("  sim (zipf 0.9, 20k objects, cache 2000, scans of 4000 every 20000): "
           "S3-FIFO %.4f LRU %.4f\n", s3, lru);
    CHECK(s3 > 0 && lru > 0);
    CHECK(s3 > lru);
    size_t n2;
    uint64_t *again = cache_sim_trace(&p, &n2);
    CHECK(again && n2 == n && memcmp(again, ids, n * sizeof *ids) == 0); /* deterministic */
    free(again);
    free(ids);
}

/* --- threads ---------------------------------------------------------------------------------- */

struct reader {
    struct cache_waiter w; /* first */
    pthread_mutex_t m;
    pthread_cond_t c;
    int pending;
    atomic_int notified;
    struct cache_obj *o;
    uint64_t got;
    bool ok;
};

static void reader_notify(struct cache_waiter *w)
{
    struct reader *r = (struct reader *)w;
    atomic_fetch_add(&r->notified, 1);
    pthread_mutex_lock(&r->m);
    r->pending = 1;
    pthread_cond_signal(&r->c);
    pthread_mutex_unlock(&r->m);
}

static char pattern(uint64_t i) { return (char)(i * 7 % 253); }

static void reader_sleep(struct reader *r)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 1; /* a safety net only: every change notifies */
    pthread_mutex_lock(&r->m);
    while (!r->pending && pthread_cond_timedwait(&r->c, &r->m, &ts) == 0)
        ;
    r->pending = 0;
    pthread_mutex_unlock(&r->m);
}

static void *reader_main(void *arg)
{
    struct reader *r = arg;
    r->ok = true; /* registered as a waiter by the test before the filler started */
    for (;;) {
        enum cache_obj_state st = cache_obj_state(r->o); /* before reading: no byte is missed */
        const char *p;
        size_t n;
        while ((n = cache_obj_read(r->o, r->got, &p))) {
            for (size_t i = 0; i < n; i++)
                r->ok = r->ok && p[i] == pattern(r->got + i);
            r->got += n;
        }
        if (st != CACHE_OBJ_FILLING)
            break;
        reader_sleep(r);
    }
    r->ok = r->ok && cache_obj_state(r->o) == CACHE_OBJ_COMPLETE;
    cache_obj_unwait(r->o, &r->w);
    return NULL;
}

#define FILL_TOTAL (1u << 20)

static void *filler_main(void *arg)
{
    struct cache_obj *o = arg;
    char chunk[1500];
    struct cache_response r = resp("H", "");
    cache_obj_set_head(o, &r);
    for (uint64_t off = 0; off < FILL_TOTAL;) {
        size_t n = sizeof chunk - (off % 500);
        if (n > FILL_TOTAL - off)
            n = FILL_TOTAL - off;
        for (size_t i = 0; i < n; i++)
            chunk[i] = pattern(off + i);
        cache_obj_append(o, chunk, n);
        off += n;
        if (off % 64 == 0)
            sched_yield();
    }
    cache_obj_finish(o);
    return NULL;
}

UNIT_TEST(test_concurrent_readers_of_filling_object)
{
    struct conf_cache_zone c = zone_conf("t_threads", 8 << 20);
    c.max_object_size = 2 << 20;
    struct cache_zone *z = zone_get(&c);
    struct cache_obj *o;
    CHECK_EQ_INT(cache_fill_begin(z, "k", 1, NULL, NULL, &o), CACHE_FILL_NEW);
    enum { N = 4 };
    struct reader r[N];
    pthread_t t[N], f;
    for (int i = 0; i < N; i++) {
        memset(&r[i], 0, sizeof r[i]);
        r[i].w.notify = reader_notify;
        pthread_mutex_init(&r[i].m, NULL);
        pthread_cond_init(&r[i].c, NULL);
        CHECK_EQ_INT(cache_fill_begin(z, "k", 1, NULL, NULL, &r[i].o), CACHE_FILL_COLLAPSED);
        cache_obj_wait(r[i].o, &r[i].w);
        pthread_create(&t[i], NULL, reader_main, &r[i]);
    }
    pthread_create(&f, NULL, filler_main, o);
    pthread_join(f, NULL);
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        CHECK(r[i].ok);
        CHECK_EQ_INT(r[i].got, FILL_TOTAL);
        CHECK(atomic_load(&r[i].notified) > 0);
        cache_obj_put(r[i].o);
        pthread_mutex_destroy(&r[i].m);
        pthread_cond_destroy(&r[i].c);
    }
    cache_obj_put(o);
    cache_zone_put(z);
}

UNIT_TEST(test_waiters_notified_and_unwait)
{
    struct conf_cache_zone c = zone_conf("t_wait", 1 << 20);
    struct cache_zone *z = zone_get(&c);
    struct cache_obj *o;
    CHECK_EQ_INT(cache_fill_begin(z, "k", 1, NULL, NULL, &o), CACHE_FILL_NEW);
    struct reader a = { .w.notify = reader_notify }, b = { .w.notify = reader_notify };
    pthread_mutex_init(&a.m, NULL);
    pthread_cond_init(&a.c, NULL);
    pthread_mutex_init(&b.m, NULL);
    pthread_cond_init(&b.c, NULL);
    cache_obj_unwait(o, &a.w); /* never registered: a no-op */
    cache_obj_wait(o, &a.w);
    cache_obj_wait(o, &b.w);
    struct cache_response r = resp("H", "");
    cache_obj_set_head(o, &r);
    CHECK_EQ_INT(atomic_load(&a.notified), 1);
    cache_obj_append(o, "x", 1);
    CHECK_EQ_INT(atomic_load(&a.notified), 2);
    CHECK_EQ_INT(atomic_load(&b.notified), 2);
    cache_obj_unwait(o, &b.w);
    cache_obj_unwait(o, &b.w);
    cache_obj_finish(o);
    CHECK_EQ_INT(atomic_load(&a.notified), 3);
    CHECK_EQ_INT(atomic_load(&b.notified), 2);
    cache_obj_unwait(o, &a.w);
    cache_obj_put(o);
    /* abort notifies too */
    CHECK_EQ_INT(cache_fill_begin(z, "j", 1, NULL, NULL, &o), CACHE_FILL_NEW);
    cache_obj_wait(o, &b.w);
    cache_obj_abort(o);
    CHECK_EQ_INT(atomic_load(&b.notified), 3);
    cache_obj_unwait(o, &b.w);
    cache_obj_put(o);
    pthread_mutex_destroy(&a.m);
    pthread_cond_destroy(&a.c);
    pthread_mutex_destroy(&b.m);
    pthread_cond_destroy(&b.c);
    cache_zone_put(z);
}

static void remove_dir(const char *path);

/* Threads fill, read, abort, update and purge a small key space under a tight budget with a
 * disk tier; afterwards purging everything must leave zero bytes and objects charged. */
struct stress_arg {
    struct cache_zone *z;
    unsigned seed;
    int errors;
};

static void stress_fill(struct cache_zone *z, const char *key, unsigned r)
{
    struct cache_obj *o;
    enum cache_fill_result fr = cache_fill_begin(z, key, strlen(key), NULL, NULL, &o);
    if (fr != CACHE_FILL_NEW) {
        cache_obj_put(o);
        return;
    }
    struct cache_response h = resp("H", r % 2 ? "odd" : "even");
    static const char data[3000];
    if (cache_obj_set_head(o, &h) == 0 && cache_obj_append(o, data, 1 + r % sizeof data) == 0) {
        if (r % 7 == 0)
            cache_obj_abort(o);
        else
            cache_obj_finish(o);
    }
    cache_obj_put(o);
}

static void stress_read(struct cache_zone *z, const char *key, struct stress_arg *a)
{
    struct cache_obj *o = cache_lookup(z, key, strlen(key), NULL, NULL);
    if (!o)
        return;
    const char *p;
    enum cache_obj_state st = cache_obj_state(o); /* COMPLETE: the length is final */
    uint64_t got = 0;
    for (size_t n; (n = cache_obj_read(o, got, &p)); got += n)
        a->errors += p[0] != 0;
    if (st == CACHE_OBJ_COMPLETE && got != cache_obj_length(o))
        a->errors++;
    if (cache_obj_state(o) == CACHE_OBJ_COMPLETE && rand_r(&a->seed) % 5 == 0) {
        struct cache_obj *f;
        if (cache_fill_begin(z, key, strlen(key), NULL, NULL, &f) == CACHE_FILL_NEW) {
            struct cache_response h = resp("H2", "");
            cache_obj_update(f, o, &h);
        }
        cache_obj_put(f);
    }
    cache_obj_put(o);
}

static void *stress_main(void *arg)
{
    struct stress_arg *a = arg;
    char key[32];
    for (int i = 0; i < 6000; i++) {
        unsigned r = (unsigned)rand_r(&a->seed);
        snprintf(key, sizeof key, "s/%u/%u", r % 4, (r >> 4) % 50);
        switch (r % 10) {
        case 0:
            cache_purge_key(a->z, key, strlen(key));
            break;
        case 1:
            if (r % 50 == 1)
                cache_purge_tag(a->z, "odd", 3);
            else if (r % 50 == 11)
                cache_purge_prefix(a->z, "s/1/", 4);
            break;
        case 2:
        case 3:
        case 4:
            stress_fill(a->z, key, r);
            break;
        default:
            stress_read(a->z, key, a);
        }
    }
    return NULL;
}

UNIT_TEST(test_threads_stress_accounting)
{
    char dir[256];
    snprintf(dir, sizeof dir, "/tmp/portero-cache-stress-%d-XXXXXX", (int)getpid());
    CHECK(mkdtemp(dir) != NULL);
    struct conf_cache_zone c = zone_conf("t_stress", 96 * 1024);
    c.path = dir;
    c.max_size = 128 * 1024;
    struct cache_zone *z = zone_get(&c);
    enum { N = 4 };
    pthread_t t[N];
    struct stress_arg a[N];
    for (int i = 0; i < N; i++) {
        a[i] = (struct stress_arg){ .z = z, .seed = 1234u + (unsigned)i };
        pthread_create(&t[i], NULL, stress_main, &a[i]);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        CHECK_EQ_INT(a[i].errors, 0);
    }
    cache_zone_sync(z);
    struct cache_zone_stats st;
    cache_zone_stats(z, &st);
    CHECK(st.evictions > 0);
    CHECK(st.disk_bytes <= 128 * 1024);
    cache_purge_prefix(z, "", 0);
    cache_zone_sync(z);
    cache_zone_stats(z, &st);
    CHECK_EQ_INT(st.bytes, 0);
    CHECK_EQ_INT(st.objects, 0);
    CHECK_EQ_INT(st.disk_bytes, 0);
    CHECK_EQ_INT(st.disk_objects, 0);
    cache_zone_put(z);
    remove_dir(dir);
}

/* --- purge, update -------------------------------------------------------------------------- */

UNIT_TEST(test_purge_variants)
{
    struct conf_cache_zone c = zone_conf("t_purge", 1 << 20);
    struct cache_zone *z = zone_get(&c);
    store(z, "https://a/x/1", "1", "red big");
    store(z, "https://a/x/2", "2", "blue");
    store(z, "https://a/y/3", "3", "reddish");
    store(z, "https://b/x/4", "4", "red");
    struct cache_obj *held = cache_lookup(z, "https://a/x/1", 13, NULL, NULL);
    CHECK_EQ_INT(cache_purge_key(z, "https://a/x/1", 13), 1);
    CHECK_EQ_INT(cache_purge_key(z, "https://a/x/1", 13), 0);
    CHECK(!has(z, "https://a/x/1"));
    char buf[8];
    CHECK(strcmp(body_of(held, buf, sizeof buf), "1") == 0); /* a holder finishes */
    cache_obj_put(held);
    CHECK_EQ_INT(cache_purge_tag(z, "red", 3), 1);   /* whole words only: not "reddish" */
    CHECK(!has(z, "https://b/x/4"));
    CHECK(has(z, "https://a/y/3"));
    CHECK_EQ_INT(cache_purge_prefix(z, "https://a/", 10), 2);
    CHECK(!has(z, "https://a/x/2") && !has(z, "https://a/y/3"));
    /* a fill is purged too: its filler finishes it unlinked */
    struct cache_obj *o;
    CHECK_EQ_INT(cache_fill_begin(z, "https://c/1", 11, NULL, NULL, &o), CACHE_FILL_NEW);
    CHECK_EQ_INT(cache_purge_prefix(z, "", 0), 1);
    struct cache_response r = resp("H", "");
    CHECK_EQ_INT(cache_obj_set_head(o, &r), 0);
    cache_obj_finish(o);
    CHECK_EQ_INT(cache_obj_state(o), CACHE_OBJ_COMPLETE);
    CHECK(!has(z, "https://c/1"));
    cache_obj_put(o);
    struct cache_zone_stats st;
    cache_zone_stats(z, &st);
    CHECK_EQ_INT(st.purged, 5);
    CHECK_EQ_INT(st.objects, 0);
    CHECK_EQ_INT(st.bytes, 0);
    cache_zone_put(z);
}

UNIT_TEST(test_update_after_304)
{
    struct conf_cache_zone c = zone_conf("t_update", 1 << 20);
    struct cache_zone *z = zone_get(&c);
    store(z, "k", "body!", "t1");
    struct cache_obj *old = cache_lookup(z, "k", 1, NULL, NULL), *fill;
    CHECK_EQ_INT(cache_fill_begin(z, "k", 1, NULL, NULL, &fill), CACHE_FILL_NEW);
    struct cache_response r = resp("HTTP/1.1 200 OK\r\nX: new\r\n\r\n", "");
    r.meta = "N";
    CHECK_EQ_INT(cache_obj_update(fill, old, &r), 0);
    CHECK_EQ_INT(cache_obj_state(fill), CACHE_OBJ_COMPLETE);
    struct cache_obj *now = cache_lookup(z, "k", 1, NULL, NULL);
    CHECK(now == fill);
    size_t n;
    const char *h = cache_obj_head(now, &n);
    CHECK(n > 20 && memmem(h, n, "X: new", 6) != NULL);
    const char *m = cache_obj_meta(now, &n);
    CHECK(n == 1 && m[0] == 'N');
    char buf[16];
    CHECK(strcmp(body_of(now, buf, sizeof buf), "body!") == 0);
    CHECK(str_eq(cache_obj_tags(now), STR_LIT("t1"))); /* kept */
    CHECK(strcmp(body_of(old, buf, sizeof buf), "body!") == 0);
    h = cache_obj_head(old, &n);
    CHECK(memmem(h, n, "X: new", 6) == NULL);
    cache_obj_put(now);
    cache_obj_put(fill);
    cache_obj_put(old);
    struct cache_zone_stats st;
    cache_zone_stats(z, &st);
    CHECK_EQ_INT(st.objects, 1);
    cache_zone_put(z);
}

/* --- disk ------------------------------------------------------------------------------------- */

static void temp_dir(char *out, size_t cap)
{
    snprintf(out, cap, "/tmp/portero-cache-test-%d-XXXXXX", (int)getpid());
    if (!mkdtemp(out))
        out[0] = '\0';
}

static void remove_dir(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *de;
    char p[512];
    while (d && (de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        snprintf(p, sizeof p, "%s/%s", path, de->d_name);
        unlink(p);
    }
    if (d)
        closedir(d);
    rmdir(path);
}

static int count_files(const char *path, char prefix)
{
    DIR *d = opendir(path);
    struct dirent *de;
    int n = 0;
    while (d && (de = readdir(d)))
        n += de->d_name[0] == prefix && de->d_name[1] == '-';
    if (d)
        closedir(d);
    return n;
}

/* The name of one c- file in PATH. */
static bool first_file(const char *path, char *out, size_t cap)
{
    DIR *d = opendir(path);
    struct dirent *de;
    bool found = false;
    while (d && !found && (de = readdir(d)))
        if (de->d_name[0] == 'c' && de->d_name[1] == '-')
            found = snprintf(out, cap, "%s/%s", path, de->d_name) > 0;
    if (d)
        closedir(d);
    return found;
}

static void write_file(const char *path, const void *p, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd >= 0) {
        if (write(fd, p, n) < 0)
            perror(path);
        close(fd);
    }
}

UNIT_TEST(test_disk_round_trip_and_restart)
{
    char dir[256];
    temp_dir(dir, sizeof dir);
    CHECK(dir[0]);
    struct conf_cache_zone c = zone_conf("t_disk", 1 << 20);
    c.path = dir;
    c.max_size = 64 << 20;
    struct cache_zone *z = zone_get(&c);
    CHECK(z != NULL);
    CHECK_EQ_INT(store(z, "k1", "first body", "t"), 0);
    CHECK_EQ_INT(store(z, "k2", "second", ""), 0);
    CHECK_EQ_INT(store_variant(z, "k3", "accept-encoding", "gzip", "gz"), 0);
    cache_zone_sync(z);
    struct cache_zone_stats st;
    cache_zone_stats(z, &st);
    CHECK_EQ_INT(st.disk_writes, 3);
    CHECK_EQ_INT(st.disk_objects, 3);
    CHECK_EQ_INT(count_files(dir, 'c'), 3);
    cache_zone_put(z); /* "restart" */

    z = zone_get(&c);
    CHECK(z != NULL);
    cache_zone_stats(z, &st);
    CHECK_EQ_INT(st.disk_objects, 3);
    CHECK_EQ_INT(st.objects, 0);
    struct cache_obj *o = cache_lookup(z, "k1", 2, NULL, NULL);
    CHECK(o != NULL);
    char buf[32];
    if (o) {
        CHECK_EQ_INT(cache_obj_state(o), CACHE_OBJ_COMPLETE);
        CHECK(strcmp(body_of(o, buf, sizeof buf), "first body") == 0);
        size_t n;
        const char *h = cache_obj_head(o, &n);
        CHECK(n == 19 && memcmp(h, "HTTP/1.1 200 OK", 15) == 0);
        const char *m = cache_obj_meta(o, &n);
        CHECK(n == 1 && m[0] == 'M');
        CHECK(str_eq(cache_obj_tags(o), STR_LIT("t")));
    }
    cache_obj_put(o);
    CHECK(strcmp(variant_body(z, "k3", "gzip", buf, sizeof buf), "gz") == 0);
    CHECK(strcmp(variant_body(z, "k3", "br", buf, sizeof buf), "(miss)") == 0);
    cache_zone_stats(z, &st);
    CHECK_EQ_INT(st.disk_reads, 2);
    CHECK_EQ_INT(st.disk_writes, 0); /* read back: not written again */
    /* purge removes files, also of variants only on disk */
    CHECK_EQ_INT(cache_purge_tag(z, "t", 1), 1);
    CHECK_EQ_INT(cache_purge_key(z, "k2", 2), 1);
    cache_zone_sync(z);
    CHECK_EQ_INT(count_files(dir, 'c'), 1);
    cache_zone_put(z);
    z = zone_get(&c);
    CHECK(!has(z, "k1") && !has(z, "k2"));
    cache_zone_put(z);
    remove_dir(dir);
}

UNIT_TEST(test_disk_corrupt_files)
{
    char dir[256], path[512], good[512];
    temp_dir(dir, sizeof dir);
    struct conf_cache_zone c = zone_conf("t_corrupt", 1 << 20);
    c.path = dir;
    c.max_size = 64 << 20;
    struct cache_zone *z = zone_get(&c);
    CHECK_EQ_INT(store(z, "k1", "some body bytes", ""), 0);
    cache_zone_sync(z);
    cache_zone_put(z);
    CHECK(first_file(dir, good, sizeof good));
    /* garbage, a partial temp file, a truncated copy under another name */
    snprintf(path, sizeof path, "%s/c-0123456789abcdef", dir);
    write_file(path, "garbage", 7);
    snprintf(path, sizeof path, "%s/t-0000000000000001", dir);
    write_file(path, "partial", 7);
    char data[4096];
    int fd = open(good, O_RDONLY);
    ssize_t n = read(fd, data, sizeof data);
    close(fd);
    CHECK(n > 60);
    snprintf(path, sizeof path, "%s/c-00000000000000aa", dir);
    write_file(path, data, (size_t)n - 3);
    snprintf(path, sizeof path, "%s/other-file", dir);
    write_file(path, "x", 1);
    z = zone_get(&c);
    struct cache_zone_stats st;
    cache_zone_stats(z, &st);
    CHECK_EQ_INT(st.disk_objects, 1);
    CHECK_EQ_INT(count_files(dir, 'c'), 1);
    CHECK_EQ_INT(count_files(dir, 't'), 0);
    CHECK(access(path, F_OK) == 0); /* not ours: left alone */
    cache_zone_put(z);
    /* a flipped body byte: the checksum fails at read time, the file goes */
    data[n - 2] ^= 0x55;
    write_file(good, data, (size_t)n);
    z = zone_get(&c);
    CHECK(!has(z, "k1"));
    CHECK_EQ_INT(count_files(dir, 'c'), 0);
    cache_zone_stats(z, &st);
    CHECK_EQ_INT(st.disk_objects, 0);
    cache_zone_put(z);
    remove_dir(dir);
}

UNIT_TEST(test_disk_max_size)
{
    char dir[256];
    temp_dir(dir, sizeof dir);
    struct conf_cache_zone c = zone_conf("t_disk_max", 1 << 20);
    c.path = dir;
    c.max_size = 20000;
    struct cache_zone *z = zone_get(&c);
    static char body[3001];
    memset(body, 'd', sizeof body - 1);
    char key[32];
    for (int i = 0; i < 30; i++) {
        snprintf(key, sizeof key, "d-%d", i);
        store(z, key, body, "");
    }
    cache_zone_sync(z);
    struct cache_zone_stats st;
    cache_zone_stats(z, &st);
    CHECK(st.disk_bytes <= 20000);
    CHECK(st.disk_evictions >= 20);
    CHECK_EQ_INT(count_files(dir, 'c'), (long long)st.disk_objects);
    cache_zone_put(z);
    remove_dir(dir);
}

/* A 304 update rewrites the file; an object evicted from memory comes back from disk. */
UNIT_TEST(test_disk_update_and_memory_eviction)
{
    char dir[256];
    temp_dir(dir, sizeof dir);
    struct conf_cache_zone c = zone_conf("t_disk_upd", 64 * 1024);
    c.path = dir;
    c.max_size = 64 << 20;
    struct cache_zone *z = zone_get(&c);
    CHECK_EQ_INT(store(z, "k", "the body", "tag"), 0);
    struct cache_obj *old = cache_lookup(z, "k", 1, NULL, NULL), *fill;
    CHECK_EQ_INT(cache_fill_begin(z, "k", 1, NULL, NULL, &fill), CACHE_FILL_NEW);
    struct cache_response r = resp("HTTP/1.1 200 OK\r\nX: v2\r\n\r\n", "");
    CHECK_EQ_INT(cache_obj_update(fill, old, &r), 0);
    cache_obj_put(fill);
    cache_obj_put(old);
    cache_zone_sync(z);
    /* push "k" out of memory with objects used twice (one-hit wonders would leave it alone:
     * they go through the small FIFO only) */
    static char body[4001];
    memset(body, 'e', sizeof body - 1);
    char key[32];
    for (int i = 0; i < 80; i++) {
        snprintf(key, sizeof key, "e-%d", i);
        store(z, key, body, "");
        has(z, key);
        has(z, key);
    }
    cache_zone_sync(z);
    struct cache_zone_stats st;
    cache_zone_stats(z, &st);
    CHECK(st.evictions > 0);
    CHECK(st.bytes <= 64 * 1024);
    uint64_t reads = st.disk_reads;
    struct cache_obj *o = cache_lookup(z, "k", 1, NULL, NULL);
    CHECK(o != NULL);
    char buf[32];
    size_t n = 0;
    const char *h = o ? cache_obj_head(o, &n) : NULL;
    CHECK(h && memmem(h, n, "X: v2", 5) != NULL);
    CHECK(o && strcmp(body_of(o, buf, sizeof buf), "the body") == 0);
    CHECK(o && str_eq(cache_obj_tags(o), STR_LIT("tag")));
    cache_obj_put(o);
    cache_zone_stats(z, &st);
    CHECK_EQ_INT(st.disk_reads, reads + 1); /* it was out of memory */
    cache_zone_put(z);
    z = zone_get(&c); /* and after a restart */
    o = cache_lookup(z, "k", 1, NULL, NULL);
    h = o ? cache_obj_head(o, &n) : NULL;
    CHECK(h && memmem(h, n, "X: v2", 5) != NULL);
    cache_obj_put(o);
    cache_zone_put(z);
    remove_dir(dir);
}

UNIT_TEST(test_zone_registry)
{
    struct conf_cache_zone c = zone_conf("t_reg", 1 << 20);
    struct cache_zone *a = zone_get(&c);
    store(a, "k", "v", "");
    c.memory = 2 << 20;
    struct cache_zone *b = zone_get(&c);
    CHECK(a == b);
    struct cache_zone *f = cache_zone_find("t_reg");
    CHECK(f == a);
    CHECK(cache_zone_find("t_none") == NULL);
    CHECK(strcmp(cache_zone_name(f), "t_reg") == 0);
    cache_zone_put(f);
    char err[256] = "";
    c.path = "/tmp/x";
    c.max_size = 1 << 20;
    CHECK(cache_zone_get(&c, err, sizeof err) == NULL);
    CHECK(strstr(err, "restart") != NULL);
    cache_zone_put(a);
    CHECK(has(b, "k")); /* still one reference: the content lives on */
    cache_zone_put(b);
    c.path = NULL;
    a = zone_get(&c);
    CHECK(!has(a, "k")); /* the last reference went: a new zone */
    cache_zone_put(a);
    c.path = "/proc/no/such/dir";
    c.name = "t_bad";
    CHECK(cache_zone_get(&c, err, sizeof err) == NULL);
    CHECK(strstr(err, "t_bad") != NULL);
}

UNIT_MAIN();
