/* Unit tests of the RFC 9111 rules (src/cache/cache_rules.h): one test per rule, the RFCs'
 * own examples where they give some. */
#include "unit.h"

#include <stdint.h>

#include "cache/cache_rules.h"
#include "conf/config.h"
#include "http/h1.h"

/* A parsed head and the bytes it points into. */
struct tmsg {
    char buf[4096];
    struct http_header h[64];
    struct http_msg m;
};

static const struct h1_limits lim = { 8192, 65536, 64 };

/* Parses START (a request or status line) and FIELDS ("Name: value\n" lines, "\n" turned into CRLF). */
static struct http_msg *mk(struct tmsg *t, const char *start, const char *fields)
{
    size_t n = 0;
    for (const char *s = start; *s; s++)
        t->buf[n++] = *s;
    t->buf[n++] = '\r';
    t->buf[n++] = '\n';
    bool response = strncmp(start, "HTTP/", 5) == 0;
    if (!response) { /* requests need a Host */
        memcpy(t->buf + n, "Host: x\r\n", 9);
        n += 9;
    }
    for (const char *s = fields; *s; s++) {
        if (*s == '\n')
            t->buf[n++] = '\r';
        t->buf[n++] = *s;
    }
    t->buf[n++] = '\r';
    t->buf[n++] = '\n';
    memset(&t->m, 0, sizeof t->m);
    t->m.headers = t->h;
    t->m.max_headers = 64;
    int r = response ? h1_parse_response(t->buf, n, &lim, &t->m)
                            : h1_parse_request(t->buf, n, &lim, &t->m);
    if (r <= 0) {
        fprintf(stderr, "  test head does not parse (%d): %s\n", r, start);
        abort();
    }
    return &t->m;
}

static struct http_msg *req(struct tmsg *t, const char *fields) { return mk(t, "GET /a HTTP/1.1", fields); }
static struct http_msg *resp(struct tmsg *t, const char *fields) { return mk(t, "HTTP/1.1 200 OK", fields); }

static void cc_of_resp(const char *fields, struct cache_cc *cc)
{
    struct tmsg t;
    cache_cc_parse(resp(&t, fields), cc);
}

static void cc_of_req(const char *fields, struct cache_cc *cc)
{
    struct tmsg t;
    cache_cc_parse(req(&t, fields), cc);
}

static bool sbuf_is(const struct sbuf *b, const char *want)
{
    bool ok = b->len == strlen(want) && memcmp(b->p, want, b->len) == 0;
    if (!ok)
        fprintf(stderr, "  got \"%.*s\", want \"%s\"\n", (int)b->len, b->p ? b->p : "", want);
    return ok;
}

/* ---- Cache-Control ---- */

UNIT_TEST(cc_response_directives)
{
    struct cache_cc cc;
    cc_of_resp("Cache-Control: public, max-age=60, s-maxage=120\n"
               "Cache-Control: must-revalidate, proxy-revalidate, immutable\n"
               "Cache-Control: stale-while-revalidate=30, stale-if-error=600\n", &cc);
    CHECK(cc.present);
    CHECK_EQ_INT(cc.max_age, 60);
    CHECK_EQ_INT(cc.s_maxage, 120);
    CHECK_EQ_INT(cc.stale_while_revalidate, 30);
    CHECK_EQ_INT(cc.stale_if_error, 600);
    CHECK(cc.is_public && cc.must_revalidate && cc.proxy_revalidate && cc.immutable);
    CHECK(!cc.no_cache && !cc.no_store && !cc.is_private);
}

UNIT_TEST(cc_request_directives)
{
    struct cache_cc cc;
    cc_of_req("Cache-Control: max-age=5, min-fresh=10, max-stale=20, no-cache, no-store, only-if-cached\n", &cc);
    CHECK_EQ_INT(cc.max_age, 5);
    CHECK_EQ_INT(cc.min_fresh, 10);
    CHECK_EQ_INT(cc.max_stale, 20);
    CHECK(cc.no_cache && cc.no_store && cc.only_if_cached);
    cc_of_req("Cache-Control: max-stale\n", &cc);
    CHECK_EQ_INT(cc.max_stale, CACHE_CC_DELTA_MAX); /* §5.2.1.2: any staleness */
    cc_of_req("Cache-Control: max-stale=x\n", &cc);
    CHECK_EQ_INT(cc.max_stale, CACHE_CC_ABSENT);
    cc_of_req("", &cc);
    CHECK(!cc.present);
    CHECK_EQ_INT(cc.max_age, CACHE_CC_ABSENT);
    CHECK_EQ_INT(cc.max_stale, CACHE_CC_ABSENT);
}

UNIT_TEST(cc_qualified_forms_and_quoted_arguments)
{
    struct cache_cc cc;
    /* the comma inside the quotes does not end the member (§5.2.2.4, §5.2.2.7) */
    cc_of_resp("Cache-Control: no-cache=\"Set-Cookie, X-Foo\", private=\"A\", max-age=\"30\"\n", &cc);
    CHECK(cc.no_cache && cc.is_private);
    CHECK_EQ_INT(cc.max_age, 30);
    cc_of_resp("Cache-Control: no-cache=\"a\\\"b, c\", s-maxage=7\n", &cc);
    CHECK(cc.no_cache);
    CHECK_EQ_INT(cc.s_maxage, 7);
}

UNIT_TEST(cc_case_unknown_and_first_occurrence)
{
    struct cache_cc cc;
    cc_of_resp("Cache-Control: FOO=bar, Max-Age=3, ext=\"x,y\", max-age=9, Public\n", &cc);
    CHECK_EQ_INT(cc.max_age, 3);
    CHECK(cc.is_public);
    cc_of_resp("Cache-Control: public=1, immutable=yes\n", &cc);
    CHECK(!cc.is_public && !cc.immutable); /* loosening directives with a bogus argument: ignored */
}

UNIT_TEST(cc_malformed_numbers)
{
    struct cache_cc cc;
    /* §4.2.1: invalid freshness on a response means stale */
    cc_of_resp("Cache-Control: max-age=abc\n", &cc);
    CHECK_EQ_INT(cc.max_age, 0);
    cc_of_resp("Cache-Control: max-age=-5\n", &cc);
    CHECK_EQ_INT(cc.max_age, 0);
    cc_of_resp("Cache-Control: max-age=5 junk\n", &cc);
    CHECK_EQ_INT(cc.max_age, 0);
    cc_of_resp("Cache-Control: max-age\n", &cc);
    CHECK_EQ_INT(cc.max_age, 0);
    cc_of_resp("Cache-Control: s-maxage=x, stale-if-error=, stale-while-revalidate=1.5\n", &cc);
    CHECK_EQ_INT(cc.s_maxage, CACHE_CC_ABSENT);
    CHECK_EQ_INT(cc.stale_if_error, CACHE_CC_ABSENT);
    CHECK_EQ_INT(cc.stale_while_revalidate, CACHE_CC_ABSENT);
    CHECK_EQ_INT(cc.max_age, CACHE_CC_ABSENT);
    /* on a request a malformed max-age is just absent */
    cc_of_req("Cache-Control: max-age=abc\n", &cc);
    CHECK_EQ_INT(cc.max_age, CACHE_CC_ABSENT);
    /* §1.2.2: too large saturates at 2^31 */
    cc_of_resp("Cache-Control: max-age=99999999999999999999999\n", &cc);
    CHECK_EQ_INT(cc.max_age, 2147483648LL);
    cc_of_resp("Cache-Control: max-age = 12 , ,, no-store\n", &cc);
    CHECK_EQ_INT(cc.max_age, 12);
    CHECK(cc.no_store);
    cc_of_resp("Cache-Control: \"junk\", max-age=4, no-cache=\"unterminated, max-age=1\n", &cc);
    CHECK_EQ_INT(cc.max_age, 4);
    CHECK(cc.no_cache);
}

UNIT_TEST(cc_pragma_no_cache)
{
    struct cache_cc cc;
    cc_of_req("Pragma: no-cache\n", &cc);
    CHECK(cc.no_cache); /* §5.4 */
    cc_of_req("Pragma: foo, No-Cache\n", &cc);
    CHECK(cc.no_cache);
    cc_of_req("Pragma: no-cache\nCache-Control: max-age=10\n", &cc);
    CHECK(!cc.no_cache); /* Cache-Control present: Pragma ignored */
    cc_of_resp("Pragma: no-cache\n", &cc);
    CHECK(!cc.no_cache); /* only requests */
}

/* ---- storability and freshness ---- */

static const struct cache_policy pol0 = { 0, 86400, 0, 0, false, 1 << 20 };
#define NOW 1000000000LL
#define DATE_NOW "Date: Sun, 09 Sep 2001 01:46:40 GMT\n" /* NOW */

static int storable_full(const char *method_line, const char *qf, const char *status_line, const char *rf,
                         const struct cache_policy *p, struct cache_fresh *f)
{
    struct tmsg q, r;
    return cache_rules_storable(mk(&q, method_line, qf), mk(&r, status_line, rf), p, NOW, f);
}

static int storable(const char *qf, const char *rf, struct cache_fresh *f)
{
    return storable_full("GET /a HTTP/1.1", qf, "HTTP/1.1 200 OK", rf, &pol0, f);
}

UNIT_TEST(storable_basic_max_age)
{
    struct cache_fresh f;
    CHECK_EQ_INT(storable("", DATE_NOW "Cache-Control: max-age=60\nETag: \"x\"\n", &f), 0);
    CHECK_EQ_INT(f.lifetime_s, 60);
    CHECK_EQ_INT(f.date_s, NOW);
    CHECK_EQ_INT(f.age_s, 0);
    CHECK_EQ_INT(f.request_time, NOW);
    CHECK_EQ_INT(f.response_time, NOW);
    CHECK(f.has_etag && !f.has_last_modified && !f.no_cache && !f.must_revalidate && !f.heuristic);
    CHECK_EQ_INT(storable_full("HEAD /a HTTP/1.1", "", "HTTP/1.1 200 OK", "Cache-Control: max-age=6\n",
                               &pol0, &f), 0);
    CHECK_EQ_INT(f.date_s, NOW); /* no Date: the time received */
}

UNIT_TEST(storable_method_and_status)
{
    struct cache_fresh f;
    CHECK_EQ_INT(storable_full("POST /a HTTP/1.1", "Content-Length: 0\n", "HTTP/1.1 200 OK",
                               "Cache-Control: max-age=60\n", &pol0, &f), CACHE_NS_METHOD);
    CHECK_EQ_INT(storable_full("GET /a HTTP/1.1", "", "HTTP/1.1 206 Partial Content",
                               "Cache-Control: max-age=60\nContent-Range: bytes 0-1/2\n", &pol0, &f),
                 CACHE_NS_PARTIAL);
    CHECK_EQ_INT(storable_full("GET /a HTTP/1.1", "", "HTTP/1.1 304 Not Modified",
                               "Cache-Control: max-age=60\n", &pol0, &f), CACHE_NS_STATUS);
    CHECK_EQ_INT(storable_full("GET /a HTTP/1.1", "", "HTTP/1.1 299 Odd", "Cache-Control: max-age=60\n",
                               &pol0, &f), CACHE_NS_STATUS);
    /* 500 is not heuristically cacheable: only with explicit freshness */
    struct cache_policy p = pol0;
    p.default_ttl_s = 30;
    CHECK_EQ_INT(storable_full("GET /a HTTP/1.1", "", "HTTP/1.1 500 Oops", "", &p, &f), CACHE_NS_STATUS);
    CHECK_EQ_INT(storable_full("GET /a HTTP/1.1", "", "HTTP/1.1 500 Oops", "Cache-Control: max-age=5\n", &p, &f), 0);
    CHECK_EQ_INT(f.lifetime_s, 5);
    /* 302: heuristic only with public */
    CHECK_EQ_INT(storable_full("GET /a HTTP/1.1", "", "HTTP/1.1 302 Found", "Location: /b\n", &p, &f),
                 CACHE_NS_STATUS);
    CHECK_EQ_INT(storable_full("GET /a HTTP/1.1", "", "HTTP/1.1 302 Found", "Cache-Control: public\n", &p, &f), 0);
    CHECK_EQ_INT(f.lifetime_s, 30);
    /* 404 heuristically cacheable: the default applies */
    CHECK_EQ_INT(storable_full("GET /a HTTP/1.1", "", "HTTP/1.1 404 Not Found", "", &p, &f), 0);
    CHECK(f.heuristic);
    CHECK_EQ_INT(storable_full("GET /a HTTP/1.1", "", "HTTP/1.1 100 Continue", "", &p, &f), CACHE_NS_STATUS);
}

UNIT_TEST(storable_no_store_private)
{
    struct cache_fresh f;
    CHECK_EQ_INT(storable("Cache-Control: no-store\n", "Cache-Control: max-age=60\n", &f), CACHE_NS_REQ_NO_STORE);
    CHECK_EQ_INT(storable("", "Cache-Control: max-age=60, no-store\n", &f), CACHE_NS_NO_STORE);
    CHECK_EQ_INT(storable("", "Cache-Control: max-age=60, private\n", &f), CACHE_NS_PRIVATE);
    CHECK_EQ_INT(storable("", "Cache-Control: private=\"Set-Cookie\", max-age=60\n", &f), CACHE_NS_PRIVATE);
    /* the request's no-cache does not stop storing the answer */
    CHECK_EQ_INT(storable("Cache-Control: no-cache\n", "Cache-Control: max-age=60\n", &f), 0);
}

UNIT_TEST(storable_authorization)
{
    struct cache_fresh f;
    const char *auth = "Authorization: Basic dTpw\n";
    CHECK_EQ_INT(storable(auth, "Cache-Control: max-age=60\n", &f), CACHE_NS_AUTHORIZATION);
    CHECK_EQ_INT(storable(auth, "Cache-Control: max-age=60, public\n", &f), 0);
    CHECK_EQ_INT(storable(auth, "Cache-Control: max-age=60, must-revalidate\n", &f), 0);
    CHECK(f.must_revalidate);
    CHECK_EQ_INT(storable(auth, "Cache-Control: s-maxage=60\n", &f), 0);
    CHECK(f.must_revalidate); /* §5.2.2.10: s-maxage implies proxy-revalidate */
    CHECK_EQ_INT(storable(auth, "Cache-Control: max-age=60, proxy-revalidate\n", &f), CACHE_NS_AUTHORIZATION);
}

UNIT_TEST(storable_set_cookie_vary_size)
{
    struct cache_fresh f;
    CHECK_EQ_INT(storable("", "Cache-Control: max-age=60\nSet-Cookie: a=b\n", &f), CACHE_NS_SET_COOKIE);
    struct cache_policy p = pol0;
    p.allow_set_cookie = true;
    CHECK_EQ_INT(storable_full("GET /a HTTP/1.1", "", "HTTP/1.1 200 OK",
                               "Cache-Control: max-age=60\nSet-Cookie: a=b\n", &p, &f), 0);
    CHECK_EQ_INT(storable("", "Cache-Control: max-age=60\nVary: Accept-Encoding, *\n", &f), CACHE_NS_VARY_STAR);
    CHECK_EQ_INT(storable("", "Cache-Control: max-age=60\nVary: Accept-Encoding\n", &f), 0);
    CHECK_EQ_INT(storable("", "Cache-Control: max-age=60\nContent-Length: 1048577\n", &f), CACHE_NS_TOO_BIG);
    CHECK_EQ_INT(storable("", "Cache-Control: max-age=60\nContent-Length: 1048576\n", &f), 0);
    p.max_object_size = 0; /* no limit */
    CHECK_EQ_INT(storable_full("GET /a HTTP/1.1", "", "HTTP/1.1 200 OK",
                               "Cache-Control: max-age=60\nContent-Length: 99999999999\n", &p, &f), 0);
}

UNIT_TEST(freshness_order_of_sources)
{
    struct cache_fresh f;
    /* §4.2.1: s-maxage, then max-age, then Expires - Date */
    CHECK_EQ_INT(storable("", DATE_NOW "Cache-Control: max-age=60, s-maxage=90\n"
                              "Expires: Sun, 09 Sep 2001 01:56:40 GMT\n", &f), 0);
    CHECK_EQ_INT(f.lifetime_s, 90);
    CHECK_EQ_INT(storable("", DATE_NOW "Cache-Control: max-age=60\nExpires: Sun, 09 Sep 2001 01:56:40 GMT\n", &f), 0);
    CHECK_EQ_INT(f.lifetime_s, 60);
    CHECK_EQ_INT(storable("", "Date: Sun, 09 Sep 2001 01:36:40 GMT\nExpires: Sun, 09 Sep 2001 01:46:40 GMT\n", &f), 0);
    CHECK_EQ_INT(f.lifetime_s, 600); /* Expires - Date, with Date in the past */
    CHECK_EQ_INT(f.date_s, NOW - 600);
    /* §5.3: invalid Expires ("0") = already expired: stored only with a validator */
    CHECK_EQ_INT(storable("", DATE_NOW "Expires: 0\n", &f), CACHE_NS_NO_FRESHNESS);
    CHECK_EQ_INT(storable("", DATE_NOW "Expires: 0\nETag: \"v1\"\n", &f), 0);
    CHECK_EQ_INT(f.lifetime_s, 0);
    CHECK(!f.heuristic);
}

UNIT_TEST(freshness_heuristic_and_default)
{
    struct cache_fresh f;
    /* §4.2.2: 10% of Date - Last-Modified (here 1000 s -> 100 s) */
    CHECK_EQ_INT(storable("", DATE_NOW "Last-Modified: Sun, 09 Sep 2001 01:30:00 GMT\n", &f), 0);
    CHECK_EQ_INT(f.lifetime_s, 100);
    CHECK(f.heuristic && f.has_last_modified);
    /* capped at heuristic_max (1 day here) */
    CHECK_EQ_INT(storable("", DATE_NOW "Last-Modified: Sun, 06 Nov 1994 08:49:37 GMT\n", &f), 0);
    CHECK_EQ_INT(f.lifetime_s, 86400);
    /* no heuristic when disabled, none without Last-Modified: the default, else not stored */
    struct cache_policy p = pol0;
    p.heuristic_max_s = 0;
    CHECK_EQ_INT(storable_full("GET /a HTTP/1.1", "", "HTTP/1.1 200 OK",
                               DATE_NOW "Last-Modified: Sun, 06 Nov 1994 08:49:37 GMT\n", &p, &f),
                 CACHE_NS_NO_FRESHNESS);
    CHECK_EQ_INT(storable("", DATE_NOW, &f), CACHE_NS_NO_FRESHNESS);
    p.default_ttl_s = 45;
    CHECK_EQ_INT(storable_full("GET /a HTTP/1.1", "", "HTTP/1.1 200 OK", DATE_NOW, &p, &f), 0);
    CHECK_EQ_INT(f.lifetime_s, 45);
    /* an explicit max-age=0 is not replaced by the default */
    CHECK_EQ_INT(storable_full("GET /a HTTP/1.1", "", "HTTP/1.1 200 OK",
                               DATE_NOW "Cache-Control: max-age=0\nETag: \"a\"\n", &p, &f), 0);
    CHECK_EQ_INT(f.lifetime_s, 0);
    CHECK_EQ_INT(storable_full("GET /a HTTP/1.1", "", "HTTP/1.1 200 OK",
                               DATE_NOW "Cache-Control: max-age=0\n", &p, &f), CACHE_NS_NO_FRESHNESS);
}

UNIT_TEST(freshness_no_cache_and_age)
{
    struct cache_fresh f;
    CHECK_EQ_INT(storable("", "Cache-Control: no-cache\nETag: \"a\"\nAge: 17\n", &f), 0);
    CHECK(f.no_cache);
    CHECK_EQ_INT(f.lifetime_s, 0);
    CHECK_EQ_INT(f.age_s, 17);
    CHECK_EQ_INT(storable("", "Cache-Control: max-age=9\nAge: bogus\n", &f), 0);
    CHECK_EQ_INT(f.age_s, 0);
    /* no-cache on a status that is not heuristically cacheable does not make it storable */
    CHECK_EQ_INT(storable_full("GET /a HTTP/1.1", "", "HTTP/1.1 500 Oops", "Cache-Control: no-cache\nETag: \"a\"\n",
                               &pol0, &f), CACHE_NS_STATUS);
}

UNIT_TEST(stale_windows_from_response_and_defaults)
{
    struct cache_fresh f;
    struct cache_policy p = pol0;
    p.swr_default_s = 11;
    p.sie_default_s = 22;
    CHECK_EQ_INT(storable_full("GET /a HTTP/1.1", "", "HTTP/1.1 200 OK", "Cache-Control: max-age=5\n", &p, &f), 0);
    CHECK_EQ_INT(f.swr_s, 11);
    CHECK_EQ_INT(f.sie_s, 22);
    CHECK_EQ_INT(storable_full("GET /a HTTP/1.1", "", "HTTP/1.1 200 OK",
                               "Cache-Control: max-age=5, stale-while-revalidate=0, stale-if-error=99\n", &p, &f), 0);
    CHECK_EQ_INT(f.swr_s, 0);
    CHECK_EQ_INT(f.sie_s, 99);
    const char *forbid[] = { "Cache-Control: max-age=5, must-revalidate, stale-if-error=99\n",
                             "Cache-Control: max-age=5, proxy-revalidate, stale-while-revalidate=9\n",
                             "Cache-Control: s-maxage=5, stale-if-error=99\n" };
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(storable_full("GET /a HTTP/1.1", "", "HTTP/1.1 200 OK", forbid[i], &p, &f), 0);
        CHECK(f.must_revalidate);
        CHECK_EQ_INT(f.swr_s, 0);
        CHECK_EQ_INT(f.sie_s, 0);
    }
    /* max-age=0 and no validator: kept for stale-if-error */
    CHECK_EQ_INT(storable_full("GET /a HTTP/1.1", "", "HTTP/1.1 200 OK", "Cache-Control: max-age=0\n", &p, &f), 0);
}

UNIT_TEST(reason_strings)
{
    for (int r = CACHE_STORABLE; r <= CACHE_NS_TOO_BIG; r++)
        CHECK(strcmp(cache_rules_reason(r), "unknown") != 0);
    CHECK(strcmp(cache_rules_reason(999), "unknown") == 0);
    CHECK(strcmp(cache_rules_reason(CACHE_NS_SET_COOKIE), "set-cookie") == 0);
    struct sbuf b = { 0 };
    cache_rules_status(&b, "portero", CACHE_STATUS_MISS, CACHE_STATUS_NO_TTL, cache_rules_reason(CACHE_NS_PRIVATE));
    CHECK(sbuf_is(&b, "portero; fwd=miss; detail=private")); /* a token: not quoted */
    sbuf_free(&b);
}

UNIT_TEST(policy_from_conf)
{
    struct conf_cache_zone z = { .max_object_size = 4096 };
    struct conf_route_cache c = { .zone = &z, .default_ttl_ms = 1500, .heuristic_max_ms = 86400000,
                                  .stale_while_revalidate_ms = 2000, .stale_if_error_ms = 3000,
                                  .allow_set_cookie = true };
    struct cache_policy p;
    cache_policy_from_conf(&c, &p);
    CHECK_EQ_INT(p.default_ttl_s, 1);
    CHECK_EQ_INT(p.heuristic_max_s, 86400);
    CHECK_EQ_INT(p.swr_default_s, 2);
    CHECK_EQ_INT(p.sie_default_s, 3);
    CHECK(p.allow_set_cookie);
    CHECK_EQ_INT(p.max_object_size, 4096);
}

/* ---- age and use ---- */

UNIT_TEST(age_calculation)
{
    /* §4.2.3 with Date 100, request sent 105, response at 110 with Age 3, now 200:
     * apparent 10, corrected age value 3 + 5 = 8, initial 10, resident 90 */
    struct cache_fresh f = { .date_s = 100, .age_s = 3 };
    CHECK_EQ_INT(cache_rules_age(&f, 105, 110, 200), 100);
    f.age_s = 30; /* an upstream cache's Age dominates */
    CHECK_EQ_INT(cache_rules_age(&f, 105, 110, 110), 35);
    f.date_s = 500; f.age_s = 0; /* Date in the future: apparent age 0 */
    CHECK_EQ_INT(cache_rules_age(&f, 110, 110, 110), 0);
    CHECK_EQ_INT(cache_rules_age(&f, 110, 110, 90), 0); /* clock went back */
}

static struct cache_cc qcc(const char *fields)
{
    struct cache_cc cc;
    cc_of_req(fields, &cc);
    return cc;
}

UNIT_TEST(use_fresh_and_stale)
{
    struct cache_fresh f = { .lifetime_s = 60 };
    struct cache_cc none = qcc("");
    CHECK_EQ_INT(cache_rules_use(&f, 0, &none), CACHE_USE_FRESH);
    CHECK_EQ_INT(cache_rules_use(&f, 59, NULL), CACHE_USE_FRESH);
    CHECK_EQ_INT(cache_rules_use(&f, 60, &none), CACHE_USE_REVALIDATE);
    CHECK_EQ_INT(cache_rules_ttl(&f, 20), 40);
    CHECK_EQ_INT(cache_rules_ttl(&f, 80), -20);
    f.swr_s = 30;
    CHECK_EQ_INT(cache_rules_use(&f, 60, &none), CACHE_USE_STALE_REVALIDATE_BACKGROUND);
    CHECK_EQ_INT(cache_rules_use(&f, 89, &none), CACHE_USE_STALE_REVALIDATE_BACKGROUND);
    CHECK_EQ_INT(cache_rules_use(&f, 90, &none), CACHE_USE_REVALIDATE);
}

UNIT_TEST(use_request_directives)
{
    struct cache_fresh f = { .lifetime_s = 60, .swr_s = 100 };
    struct cache_cc c = qcc("Cache-Control: no-cache\n");
    CHECK_EQ_INT(cache_rules_use(&f, 1, &c), CACHE_USE_REVALIDATE);
    c = qcc("Pragma: no-cache\n");
    CHECK_EQ_INT(cache_rules_use(&f, 1, &c), CACHE_USE_REVALIDATE);
    c = qcc("Cache-Control: max-age=0\n"); /* a reload: never answered by stale-while-revalidate */
    CHECK_EQ_INT(cache_rules_use(&f, 1, &c), CACHE_USE_REVALIDATE);
    CHECK_EQ_INT(cache_rules_use(&f, 70, &c), CACHE_USE_REVALIDATE);
    CHECK_EQ_INT(cache_rules_use(&f, 0, &c), CACHE_USE_FRESH);
    c = qcc("Cache-Control: max-age=30\n");
    CHECK_EQ_INT(cache_rules_use(&f, 30, &c), CACHE_USE_FRESH);
    CHECK_EQ_INT(cache_rules_use(&f, 31, &c), CACHE_USE_REVALIDATE);
    c = qcc("Cache-Control: min-fresh=20\n");
    CHECK_EQ_INT(cache_rules_use(&f, 40, &c), CACHE_USE_FRESH);
    CHECK_EQ_INT(cache_rules_use(&f, 41, &c), CACHE_USE_REVALIDATE);
    c = qcc("Cache-Control: max-stale=10\n");
    f.swr_s = 0;
    CHECK_EQ_INT(cache_rules_use(&f, 70, &c), CACHE_USE_STALE);
    CHECK_EQ_INT(cache_rules_use(&f, 71, &c), CACHE_USE_REVALIDATE);
    c = qcc("Cache-Control: max-stale\n");
    CHECK_EQ_INT(cache_rules_use(&f, 100000, &c), CACHE_USE_STALE);
    f.must_revalidate = true; /* §5.2.2.2: not even for max-stale */
    CHECK_EQ_INT(cache_rules_use(&f, 61, &c), CACHE_USE_REVALIDATE);
    CHECK_EQ_INT(cache_rules_use(&f, 59, &c), CACHE_USE_FRESH);
}

UNIT_TEST(use_response_no_cache)
{
    struct cache_fresh f = { .lifetime_s = 600, .no_cache = true };
    CHECK_EQ_INT(cache_rules_use(&f, 0, NULL), CACHE_USE_REVALIDATE);
}

UNIT_TEST(stale_if_error)
{
    struct cache_fresh f = { .lifetime_s = 60, .sie_s = 100 };
    CHECK(cache_rules_stale_if_error_ok(&f, 30, NULL));
    CHECK(cache_rules_stale_if_error_ok(&f, 159, NULL));
    CHECK(!cache_rules_stale_if_error_ok(&f, 160, NULL));
    f.sie_s = 0;
    CHECK(!cache_rules_stale_if_error_ok(&f, 61, NULL));
    struct cache_cc c = qcc("Cache-Control: stale-if-error=50\n");
    CHECK(cache_rules_stale_if_error_ok(&f, 110, &c));
    CHECK(!cache_rules_stale_if_error_ok(&f, 111, &c));
    c = qcc("Cache-Control: max-stale=5\n");
    CHECK(cache_rules_stale_if_error_ok(&f, 65, &c));
    CHECK(!cache_rules_stale_if_error_ok(&f, 66, &c));
    f.sie_s = 1000;
    f.must_revalidate = true;
    CHECK(!cache_rules_stale_if_error_ok(&f, 61, NULL));
}

/* ---- Vary ---- */

UNIT_TEST(vary_names_normalized)
{
    struct tmsg t;
    struct sbuf b = { 0 };
    CHECK_EQ_INT(cache_rules_vary_names(resp(&t, "Vary: User-Agent, accept-encoding\nVary: ACCEPT-ENCODING, Accept\n"), &b), 3);
    CHECK(sbuf_is(&b, "accept\naccept-encoding\nuser-agent"));
    sbuf_reset(&b);
    CHECK_EQ_INT(cache_rules_vary_names(resp(&t, ""), &b), 0);
    CHECK_EQ_INT(b.len, 0);
    CHECK_EQ_INT(cache_rules_vary_names(resp(&t, "Vary: *\n"), &b), -1);
    CHECK_EQ_INT(cache_rules_vary_names(resp(&t, "Vary: a b\n"), &b), -1);
    CHECK_EQ_INT(cache_rules_vary_names(resp(&t, "Vary: ,\n"), &b), 0);
    sbuf_free(&b);
}

UNIT_TEST(vary_too_many_names)
{
    struct tmsg t;
    char fields[1024] = "Vary: ";
    for (int i = 0; i <= CACHE_VARY_MAX_NAMES; i++)
        sprintf(fields + strlen(fields), "h%d,", i);
    strcat(fields, "\n");
    struct sbuf b = { 0 };
    CHECK_EQ_INT(cache_rules_vary_names(resp(&t, fields), &b), -1);
    sbuf_free(&b);
}

static void vkey(const char *names, const char *fields, struct sbuf *b)
{
    struct tmsg t;
    sbuf_reset(b);
    cache_rules_vary_key(req(&t, fields), names, strlen(names), b);
}

UNIT_TEST(vary_secondary_key)
{
    struct sbuf a = { 0 }, b = { 0 };
    const char *names = "accept-encoding\nuser-agent";
    vkey(names, "Accept-Encoding: gzip,  br\nUser-Agent: x\n", &a);
    CHECK(sbuf_is(&a, "accept-encoding=gzip,br\nuser-agent=x\n"));
    vkey(names, "user-agent: x\naccept-encoding: gzip\nAccept-Encoding: br\n", &b);
    CHECK(a.len == b.len && memcmp(a.p, b.p, a.len) == 0); /* combined lines = one list */
    vkey(names, "User-Agent: x\n", &a);
    CHECK(sbuf_is(&a, "accept-encoding\nuser-agent=x\n")); /* absent */
    vkey(names, "Accept-Encoding:\nUser-Agent: x\n", &b);
    CHECK(sbuf_is(&b, "accept-encoding=\nuser-agent=x\n")); /* empty: distinct from absent */
    vkey("", "User-Agent: x\n", &a);
    CHECK_EQ_INT(a.len, 0);
    sbuf_free(&a);
    sbuf_free(&b);
}

/* ---- dates ---- */

UNIT_TEST(http_date_three_forms)
{
    /* RFC 9110 §5.6.7's examples */
    int64_t t = 0;
    CHECK_EQ_INT(cache_rules_http_date(STR_LIT("Sun, 06 Nov 1994 08:49:37 GMT"), &t), 0);
    CHECK_EQ_INT(t, 784111777);
    t = 0;
    CHECK_EQ_INT(cache_rules_http_date(STR_LIT("Sunday, 06-Nov-94 08:49:37 GMT"), &t), 0);
    CHECK_EQ_INT(t, 784111777);
    t = 0;
    CHECK_EQ_INT(cache_rules_http_date(STR_LIT("Sun Nov  6 08:49:37 1994"), &t), 0);
    CHECK_EQ_INT(t, 784111777);
    CHECK_EQ_INT(cache_rules_http_date(STR_LIT("Thu, 01 Jan 1970 00:00:00 GMT"), &t), 0);
    CHECK_EQ_INT(t, 0);
    CHECK_EQ_INT(cache_rules_http_date(STR_LIT("Tue, 29 Feb 2000 12:00:00 GMT"), &t), 0);
    CHECK_EQ_INT(t, 951825600);
    CHECK_EQ_INT(cache_rules_http_date(STR_LIT("Thursday, 01-Jan-15 00:00:00 GMT"), &t), 0);
    CHECK_EQ_INT(t, 1420070400);
    CHECK_EQ_INT(cache_rules_http_date(STR_LIT("Fri Dec 31 23:59:59 9999"), &t), 0);
    CHECK_EQ_INT(t, 253402300799LL);
}

UNIT_TEST(http_date_invalid)
{
    int64_t t;
    const char *bad[] = { "", "0", "-1", "Sun, 06 Nov 1994 08:49:37 UTC", "Sun, 06 Nov 1994 08:49:37 GMT ",
                          "Sun, 6 Nov 1994 08:49:37 GMT", "Sun, 31 Nov 1994 08:49:37 GMT",
                          "Sun, 29 Feb 1900 08:49:37 GMT", "Sun, 06 Nov 1994 24:00:00 GMT",
                          "Sun, 06 Nov 1994 08:60:00 GMT", "Sun, 06 Nov 1994 08:49:61 GMT",
                          "Sun, 06 Foo 1994 08:49:37 GMT", "Xyz, 06 Nov 1994 08:49:37 GMT",
                          "Sun, 00 Nov 1994 08:49:37 GMT", "Sun Nov 6 08:49:37 1994",
                          "Sunday, 06-Nov-1994 08:49:37 GMT", "Sun, 06 Nov 94 08:49:37 GMT" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        if (cache_rules_http_date(str_make(bad[i], strlen(bad[i])), &t) != -1) {
            fprintf(stderr, "  accepted \"%s\"\n", bad[i]);
            *unit_failed = 1;
        }
    }
}

UNIT_TEST(http_date_format_round_trip)
{
    char out[30];
    CHECK_EQ_INT(cache_rules_format_date(784111777, out), 29);
    CHECK(strcmp(out, "Sun, 06 Nov 1994 08:49:37 GMT") == 0);
    cache_rules_format_date(0, out);
    CHECK(strcmp(out, "Thu, 01 Jan 1970 00:00:00 GMT") == 0);
    cache_rules_format_date(-5, out);
    CHECK(strcmp(out, "Thu, 01 Jan 1970 00:00:00 GMT") == 0);
    cache_rules_format_date(951825600, out);
    CHECK(strcmp(out, "Tue, 29 Feb 2000 12:00:00 GMT") == 0);
    cache_rules_format_date(INT64_MAX, out);
    CHECK(strcmp(out, "Fri, 31 Dec 9999 23:59:59 GMT") == 0);
    for (int64_t t = 0; t < 253402300799LL; t += 9876543) {
        int64_t back = -1;
        cache_rules_format_date(t, out);
        CHECK_EQ_INT(cache_rules_http_date(str_make(out, 29), &back), 0);
        CHECK_EQ_INT(back, t);
        if (back != t)
            break;
    }
}

/* ---- conditionals ---- */

static int cond(const char *fields, const char *etag, const char *lm)
{
    struct tmsg t;
    return cache_rules_conditional(req(&t, fields), str_make(etag, strlen(etag)), str_make(lm, strlen(lm)), NOW);
}

#define LM "Sun, 06 Nov 1994 08:49:37 GMT"

UNIT_TEST(conditional_if_none_match)
{
    CHECK_EQ_INT(cond("If-None-Match: \"xyzzy\"\n", "\"xyzzy\"", ""), 304);
    CHECK_EQ_INT(cond("If-None-Match: W/\"xyzzy\"\n", "\"xyzzy\"", ""), 304); /* weak comparison */
    CHECK_EQ_INT(cond("If-None-Match: \"xyzzy\"\n", "W/\"xyzzy\"", ""), 304);
    CHECK_EQ_INT(cond("If-None-Match: \"a\", \"xyzzy\", \"b\"\n", "\"xyzzy\"", ""), 304);
    CHECK_EQ_INT(cond("If-None-Match: \"a\"\nIf-None-Match: \"xy,zzy\"\n", "\"xy,zzy\"", ""), 304);
    CHECK_EQ_INT(cond("If-None-Match: *\n", "", ""), 304);
    CHECK_EQ_INT(cond("If-None-Match: \"a\"\n", "\"xyzzy\"", ""), 0);
    CHECK_EQ_INT(cond("If-None-Match: \"a\"\n", "", ""), 0);
    CHECK_EQ_INT(cond("If-None-Match: xyzzy\n", "xyzzy", ""), 0); /* not entity-tags */
    CHECK_EQ_INT(cond("If-None-Match: \"a\" junk, \"xyzzy\"\n", "\"xyzzy\"", ""), 0);
    /* If-None-Match present and not matching: If-Modified-Since is not looked at (§13.2.2) */
    CHECK_EQ_INT(cond("If-None-Match: \"a\"\nIf-Modified-Since: " LM "\n", "\"b\"", LM), 0);
    struct tmsg t;
    CHECK_EQ_INT(cache_rules_conditional(mk(&t, "POST /a HTTP/1.1", "Content-Length: 0\nIf-None-Match: *\n"),
                                         STR_LIT("\"a\""), STR_LIT(""), NOW), 0);
    CHECK_EQ_INT(cache_rules_conditional(mk(&t, "HEAD /a HTTP/1.1", "If-None-Match: \"a\"\n"),
                                         STR_LIT("\"a\""), STR_LIT(""), NOW), 304);
}

UNIT_TEST(conditional_if_modified_since)
{
    CHECK_EQ_INT(cond("If-Modified-Since: " LM "\n", "", LM), 304);
    CHECK_EQ_INT(cond("If-Modified-Since: Sun, 06 Nov 1994 08:49:38 GMT\n", "", LM), 304);
    CHECK_EQ_INT(cond("If-Modified-Since: Sun, 06 Nov 1994 08:49:36 GMT\n", "", LM), 0);
    CHECK_EQ_INT(cond("If-Modified-Since: yesterday\n", "", LM), 0);
    CHECK_EQ_INT(cond("If-Modified-Since: " LM "\n", "", ""), 0); /* no Last-Modified */
    CHECK_EQ_INT(cond("If-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT\n", "", LM), 0); /* after now */
    CHECK_EQ_INT(cond("If-Modified-Since: " LM "\nIf-Modified-Since: " LM "\n", "", LM), 0); /* two */
    CHECK_EQ_INT(cond("", "\"a\"", LM), 0);
}

/* ---- 304 merge ---- */

UNIT_TEST(merge_304_replaces_and_keeps)
{
    struct tmsg s, r;
    mk(&s, "HTTP/1.1 200 OK", "Date: Sun, 06 Nov 1994 08:49:37 GMT\nCache-Control: max-age=10\n"
                              "ETag: \"v1\"\nContent-Length: 5\nX-A: 1\nX-A: 2\nContent-Type: text/plain\n");
    mk(&r, "HTTP/1.1 304 Not Modified", "Date: Sun, 06 Nov 1994 09:00:00 GMT\nCache-Control: max-age=60\n"
                                        "x-a: 3\nContent-Length: 0\nConnection: x-hop\nX-Hop: y\nETag: \"v1\"\n");
    struct sbuf b = { 0 };
    cache_rules_merge_304(&s.m, &r.m, &b);
    CHECK(sbuf_is(&b, "HTTP/1.1 200 OK\r\n"
                      "Content-Length: 5\r\nContent-Type: text/plain\r\n"
                      "Date: Sun, 06 Nov 1994 09:00:00 GMT\r\nCache-Control: max-age=60\r\nx-a: 3\r\n"
                      "ETag: \"v1\"\r\n\r\n"));
    sbuf_free(&b);
    /* the result parses back */
    struct tmsg p;
    mk(&s, "HTTP/1.1 203 Non-Authoritative Information", "Content-Length: 2\n");
    mk(&r, "HTTP/1.1 304 Not Modified", "Transfer-Encoding: chunked\nAge: 4\n");
    cache_rules_merge_304(&s.m, &r.m, &b);
    CHECK(sbuf_is(&b, "HTTP/1.1 203 Non-Authoritative Information\r\nContent-Length: 2\r\nAge: 4\r\n\r\n"));
    p.m.headers = p.h;
    p.m.max_headers = 64;
    CHECK_EQ_INT(h1_parse_response(b.p, b.len, &lim, &p.m), (int)b.len);
    sbuf_free(&b);
}

/* ---- ranges ---- */

static int rng(const char *method_line, const char *fields, uint64_t len, size_t max,
               struct cache_range *out, size_t *n)
{
    struct tmsg t;
    return cache_rules_ranges(mk(&t, method_line, fields), len, STR_LIT("\"v1\""), STR_LIT(LM), out, max, n);
}

static int range1(const char *fields, uint64_t len, struct cache_range *out, size_t *n)
{
    return rng("GET /a HTTP/1.1", fields, len, 4, out, n);
}

UNIT_TEST(ranges_single)
{
    struct cache_range r[4];
    size_t n;
    /* RFC 9110 §14.1.2's examples on a 10000-byte representation */
    CHECK_EQ_INT(range1("Range: bytes=0-499\n", 10000, r, &n), 206);
    CHECK(n == 1 && r[0].first == 0 && r[0].last == 499);
    CHECK_EQ_INT(range1("Range: bytes=500-999\n", 10000, r, &n), 206);
    CHECK(n == 1 && r[0].first == 500 && r[0].last == 999);
    CHECK_EQ_INT(range1("Range: bytes=-500\n", 10000, r, &n), 206);
    CHECK(n == 1 && r[0].first == 9500 && r[0].last == 9999);
    CHECK_EQ_INT(range1("Range: bytes=9500-\n", 10000, r, &n), 206);
    CHECK(n == 1 && r[0].first == 9500 && r[0].last == 9999);
    CHECK_EQ_INT(range1("Range: bytes=0-0,-1\n", 10000, r, &n), 206);
    CHECK(n == 2 && r[0].first == 0 && r[0].last == 0 && r[1].first == 9999 && r[1].last == 9999);
    /* clipped */
    CHECK_EQ_INT(range1("Range: bytes=9000-99999999999999999999999\n", 10000, r, &n), 206);
    CHECK(n == 1 && r[0].first == 9000 && r[0].last == 9999);
    CHECK_EQ_INT(range1("Range: bytes=-20000\n", 10000, r, &n), 206);
    CHECK(n == 1 && r[0].first == 0 && r[0].last == 9999);
    CHECK_EQ_INT(range1("Range: Bytes=0-1\n", 10000, r, &n), 206);
}

UNIT_TEST(ranges_coalesced_and_multi)
{
    struct cache_range r[4];
    size_t n;
    CHECK_EQ_INT(range1("Range: bytes=500-600,601-999\n", 10000, r, &n), 206); /* §14.1.2's example */
    CHECK(n == 1 && r[0].first == 500 && r[0].last == 999);
    CHECK_EQ_INT(range1("Range: bytes=500-700,601-999\n", 10000, r, &n), 206);
    CHECK(n == 1 && r[0].first == 500 && r[0].last == 999);
    CHECK_EQ_INT(range1("Range: bytes=20-30, 0-5, 25-40, 100-\n", 200, r, &n), 206);
    CHECK(n == 3 && r[0].first == 0 && r[0].last == 5 && r[1].first == 20 && r[1].last == 40 &&
          r[2].first == 100 && r[2].last == 199);
    /* more ranges than MAX: the whole representation */
    CHECK_EQ_INT(rng("GET /a HTTP/1.1", "Range: bytes=0-0,-1\n", 10000, 1, r, &n), 0);
    CHECK_EQ_INT(n, 0);
    CHECK_EQ_INT(rng("GET /a HTTP/1.1", "Range: bytes=0-5,3-9\n", 10000, 1, r, &n), 206);
    CHECK(n == 1 && r[0].first == 0 && r[0].last == 9);
    /* unsatisfiable members are dropped */
    CHECK_EQ_INT(range1("Range: bytes=0-1,20000-\n", 10000, r, &n), 206);
    CHECK_EQ_INT(n, 1);
    char many[1024] = "Range: bytes=";
    for (int i = 0; i <= CACHE_RANGE_MAX_SPECS; i++)
        sprintf(many + strlen(many), "%d-%d,", i * 2, i * 2);
    strcat(many, "\n");
    CHECK_EQ_INT(range1(many, 10000, r, &n), 0);
}

UNIT_TEST(ranges_unsatisfiable_and_ignored)
{
    struct cache_range r[4];
    size_t n;
    CHECK_EQ_INT(range1("Range: bytes=10000-\n", 10000, r, &n), 416);
    CHECK_EQ_INT(range1("Range: bytes=99999999999999999999999-\n", 10000, r, &n), 416);
    CHECK_EQ_INT(range1("Range: bytes=-0\n", 10000, r, &n), 416);
    CHECK_EQ_INT(range1("Range: bytes=0-\n", 0, r, &n), 416);
    CHECK_EQ_INT(range1("Range: bytes=-5\n", 0, r, &n), 416);
    /* ignored: served whole */
    const char *ign[] = { "", "Range: bytes=5-1\n", "Range: items=0-1\n", "Range: bytes=\n", "Range: bytes=a-b\n",
                          "Range: bytes=0-1,x\n", "Range: bytes 0-1\n", "Range: bytes=-\n", "Range: bytes=1-2-3\n",
                          "Range: bytes=0-1\nRange: bytes=2-3\n", "Range: bytes= 0 -1\n" };
    for (size_t i = 0; i < sizeof ign / sizeof *ign; i++) {
        n = 9;
        if (range1(ign[i], 10000, r, &n) != 0 || n != 0) {
            fprintf(stderr, "  not ignored: %s", ign[i]);
            *unit_failed = 1;
        }
    }
    CHECK_EQ_INT(rng("HEAD /a HTTP/1.1", "Range: bytes=0-1\n", 10000, 4, r, &n), 0);
}

UNIT_TEST(ranges_if_range)
{
    struct cache_range r[4];
    size_t n;
    CHECK_EQ_INT(range1("Range: bytes=0-1\nIf-Range: \"v1\"\n", 100, r, &n), 206);
    CHECK_EQ_INT(range1("Range: bytes=0-1\nIf-Range: \"v2\"\n", 100, r, &n), 0);
    CHECK_EQ_INT(range1("Range: bytes=0-1\nIf-Range: W/\"v1\"\n", 100, r, &n), 0); /* strong only */
    CHECK_EQ_INT(range1("Range: bytes=0-1\nIf-Range: " LM "\n", 100, r, &n), 206);
    CHECK_EQ_INT(range1("Range: bytes=0-1\nIf-Range: Wed, 21 Oct 2015 07:28:00 GMT\n", 100, r, &n), 0);
    CHECK_EQ_INT(range1("Range: bytes=0-1\nIf-Range: garbage\n", 100, r, &n), 0);
    struct tmsg t;
    CHECK_EQ_INT(cache_rules_ranges(req(&t, "Range: bytes=0-1\nIf-Range: \"v1\"\n"), 100, STR_LIT("W/\"v1\""),
                                    STR_LIT(""), r, 4, &n), 0); /* stored tag weak */
    CHECK_EQ_INT(cache_rules_ranges(req(&t, "Range: bytes=0-1\nIf-Range: Wed, 21 Oct 2015 07:28:00 GMT\n"), 100,
                                    STR_LIT("\"v1\""), STR_LIT("Wed, 21 Oct 2015 07:28:00 GMT"), r, 4, &n), 206);
}

/* ---- Cache-Status ---- */

static void st(int kind, int64_t ttl, const char *detail, const char *want, int *unit_failed)
{
    struct sbuf b = { 0 };
    cache_rules_status(&b, "portero", kind, ttl, detail);
    CHECK(sbuf_is(&b, want));
    sbuf_free(&b);
}

UNIT_TEST(cache_status_values)
{
    st(CACHE_STATUS_HIT, 120, NULL, "portero; hit; ttl=120", unit_failed);
    st(CACHE_STATUS_MISS | CACHE_STATUS_STORED, CACHE_STATUS_NO_TTL, NULL, "portero; fwd=miss; stored", unit_failed);
    st(CACHE_STATUS_STALE | CACHE_STATUS_FWD_304, CACHE_STATUS_NO_TTL, NULL, "portero; fwd=stale; fwd-status=304",
       unit_failed);
    st(CACHE_STATUS_URI_MISS, CACHE_STATUS_NO_TTL, NULL, "portero; fwd=uri-miss", unit_failed);
    st(CACHE_STATUS_HIT, -20, "stale-if-error", "portero; hit; ttl=-20; detail=stale-if-error", unit_failed);
    st(CACHE_STATUS_VARY_MISS | CACHE_STATUS_STORED | CACHE_STATUS_COLLAPSED, 60, NULL,
       "portero; fwd=vary-miss; ttl=60; stored; collapsed", unit_failed);
    st(CACHE_STATUS_REQUEST, CACHE_STATUS_NO_TTL, NULL, "portero; fwd=request", unit_failed);
    st(CACHE_STATUS_BYPASS, CACHE_STATUS_NO_TTL, "method \"X\"", "portero; fwd=bypass; detail=\"method \\\"X\\\"\"",
       unit_failed);
    struct sbuf b = { 0 };
    cache_rules_status(&b, "edge 1", CACHE_STATUS_HIT, 0, NULL);
    CHECK(sbuf_is(&b, "\"edge 1\"; hit; ttl=0"));
    sbuf_free(&b);
}

UNIT_MAIN()
