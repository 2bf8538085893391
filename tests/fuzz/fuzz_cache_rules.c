/* libFuzzer target: the RFC 9111 rules (src/cache/cache_rules.h). The input is split at "\n"
 * into field values (Cache-Control of request and response, dates, Range, If-Range,
 * If-None-Match, ETag, Last-Modified, Vary, Age, Expires); the first bytes pick the method, the
 * status, the object length and the range limit. Checks, for any bytes:
 * - Cache-Control numbers are absent or in [0, 2^31];
 * - a parsed HTTP-date formats to 29 bytes and parses back to itself (within years 1970..9999);
 * - storability answers a known reason; a stored response has non-negative lifetime, age and
 *   stale windows, and a use decision from the enum;
 * - Vary names are lowercase, sorted, unique, as many as returned;
 * - conditionals answer 0 or 304, ranges 0, 206 or 416, and 206 ranges are ascending, disjoint,
 *   non-adjacent, inside the object and no more than asked;
 * - a merged 304 head parses again (when the field values are valid field values). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cache/cache_rules.h"
#include "http/h1.h"

enum { F_QCC, F_RCC, F_PRAGMA, F_DATE, F_RANGE, F_IFRANGE, F_INM, F_ETAG, F_LM, F_VARY, F_AGE, F_EXPIRES, F_N };

struct fuzz_in {
    struct str f[F_N];
    bool has[F_N];
    bool clean; /* every value is a valid field value (no CTL but HTAB) */
};

static void fuzz_split(const uint8_t *d, size_t n, struct fuzz_in *in)
{
    memset(in, 0, sizeof *in);
    in->clean = true;
    size_t k = 0, start = 0;
    for (size_t i = 0; i <= n && k < F_N; i++) {
        if (i < n && d[i] != '\n') {
            if ((d[i] < 0x20 && d[i] != '\t') || d[i] == 0x7f)
                in->clean = false;
            continue;
        }
        /* header values arrive OWS-trimmed from the parsers */
        in->f[k] = str_trim_ows(str_make((const char *)d + start, i - start));
        in->has[k++] = true;
        start = i + 1;
    }
}

static void fuzz_add(struct http_msg *m, const char *name, const struct fuzz_in *in, int k)
{
    if (in->has[k])
        m->headers[m->n_headers++] = (struct http_header){ str_make(name, strlen(name)), in->f[k] };
}

static void fuzz_check_cc(const struct http_msg *m)
{
    struct cache_cc cc;
    cache_cc_parse(m, &cc);
    int64_t v[] = { cc.max_age, cc.s_maxage, cc.max_stale, cc.min_fresh, cc.stale_while_revalidate,
                    cc.stale_if_error };
    for (size_t i = 0; i < sizeof v / sizeof *v; i++)
        if (v[i] < CACHE_CC_ABSENT || v[i] > CACHE_CC_DELTA_MAX)
            abort();
}

static void fuzz_check_date(struct str s)
{
    int64_t t, back;
    char out[30];
    if (cache_rules_http_date(s, &t) < 0 || t < 0 || t > 253402300799LL)
        return;
    if (cache_rules_format_date(t, out) != 29 || out[29] != '\0')
        abort();
    if (cache_rules_http_date(str_make(out, 29), &back) < 0 || back != t)
        abort();
}

static void fuzz_check_storable(const struct http_msg *req, const struct http_msg *resp, uint8_t knobs)
{
    struct cache_policy p = { knobs & 1 ? 30 : 0, knobs & 2 ? 86400 : 0, knobs & 4 ? 10 : 0,
                              knobs & 8 ? 60 : 0, knobs & 16, knobs & 32 ? 1000 : 0 };
    struct cache_fresh f;
    int r = cache_rules_storable(req, resp, &p, 1000000000, &f);
    if (r < CACHE_STORABLE || r > CACHE_NS_TOO_BIG || !cache_rules_reason(r))
        abort();
    if (r)
        return;
    if (f.lifetime_s < 0 || f.age_s < 0 || f.swr_s < 0 || f.sie_s < 0)
        abort();
    if (f.must_revalidate && (f.swr_s || f.sie_s))
        abort();
    struct cache_cc qcc;
    cache_cc_parse(req, &qcc);
    int64_t age = cache_rules_age(&f, f.request_time - 3, f.response_time, f.response_time + knobs);
    if (age < 0)
        abort();
    enum cache_use u = cache_rules_use(&f, age, &qcc);
    if (u > CACHE_USE_REVALIDATE || (u == CACHE_USE_FRESH && cache_rules_ttl(&f, age) <= 0))
        abort();
    cache_rules_stale_if_error_ok(&f, age, &qcc);
}

static void fuzz_check_vary(const struct http_msg *req, const struct http_msg *resp)
{
    struct sbuf names = { 0 }, key = { 0 };
    int n = cache_rules_vary_names(resp, &names);
    if (n < -1 || n > CACHE_VARY_MAX_NAMES)
        abort();
    if (n > 0) {
        int lines = 1;
        for (size_t i = 0; i < names.len; i++) {
            if (names.p[i] >= 'A' && names.p[i] <= 'Z')
                abort();
            lines += names.p[i] == '\n';
        }
        if (lines != n)
            abort();
        cache_rules_vary_key(req, names.p, names.len, &key);
        if (key.len < names.len + 1) /* every name and a "\n" each */
            abort();
    }
    sbuf_free(&names);
    sbuf_free(&key);
}

static void fuzz_check_ranges(const struct http_msg *req, const struct fuzz_in *in, uint64_t length, size_t max)
{
    struct cache_range r[8];
    size_t n = 99;
    int s = cache_rules_ranges(req, length, in->f[F_ETAG], in->f[F_LM], r, max, &n);
    if ((s == 206) != (n > 0) || (s != 0 && s != 206 && s != 416) || n > max)
        abort();
    for (size_t i = 0; i < n; i++) {
        if (r[i].first > r[i].last || r[i].last >= length)
            abort();
        if (i && r[i].first <= r[i - 1].last + 1)
            abort();
    }
}

static void fuzz_check_merge(const struct http_msg *stored, const struct http_msg *resp, bool clean)
{
    struct http_msg r304 = *resp;
    r304.status = 304;
    struct sbuf out = { 0 };
    cache_rules_merge_304(stored, &r304, &out);
    struct http_header h[64];
    struct http_msg back = { .headers = h, .max_headers = 64 };
    const struct h1_limits lim = { 8192, 1 << 20, 64 };
    if (clean && !out.failed && stored->status >= 200 &&
        h1_parse_response(out.p, out.len, &lim, &back) != (int)out.len)
        abort();
    sbuf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4 || size > 8192)
        return 0;
    uint8_t sel = data[0], st = data[1], knobs = data[2], len = data[3];
    struct fuzz_in in;
    fuzz_split(data + 4, size - 4, &in);
    struct http_header qh[F_N], rh[F_N];
    static const int statuses[] = { 200, 203, 204, 206, 300, 301, 302, 304, 307, 404, 410, 500, 501, 100, 299 };
    static const enum http_method methods[] = { HTTP_METHOD_GET, HTTP_METHOD_HEAD, HTTP_METHOD_POST,
                                                HTTP_METHOD_GET };
    struct http_msg req = { .method_id = methods[sel & 3], .headers = qh, .max_headers = F_N,
                            .content_length = -1 };
    struct http_msg resp = { .status = statuses[st % 15], .reason = STR_LIT("X"), .headers = rh,
                             .max_headers = F_N, .content_length = (sel & 4) ? 2000 : -1 };
    fuzz_add(&req, "Cache-Control", &in, F_QCC);
    fuzz_add(&req, sel & 8 ? "Pragma" : "Authorization", &in, F_PRAGMA);
    fuzz_add(&req, "If-Modified-Since", &in, F_DATE);
    fuzz_add(&req, "Range", &in, F_RANGE);
    fuzz_add(&req, "If-Range", &in, F_IFRANGE);
    fuzz_add(&req, "If-None-Match", &in, F_INM);
    fuzz_add(&req, "Accept-Encoding", &in, F_VARY);
    fuzz_add(&resp, "Cache-Control", &in, F_RCC);
    fuzz_add(&resp, "Date", &in, F_DATE);
    fuzz_add(&resp, "ETag", &in, F_ETAG);
    fuzz_add(&resp, "Last-Modified", &in, F_LM);
    fuzz_add(&resp, "Vary", &in, F_VARY);
    fuzz_add(&resp, "Age", &in, F_AGE);
    fuzz_add(&resp, sel & 16 ? "Expires" : "Set-Cookie", &in, F_EXPIRES);

    fuzz_check_cc(&req);
    fuzz_check_cc(&resp);
    for (int k = 0; k < F_N; k++)
        fuzz_check_date(in.f[k]);
    fuzz_check_storable(&req, &resp, knobs);
    fuzz_check_vary(&req, &resp);
    int c = cache_rules_conditional(&req, in.f[F_ETAG], in.f[F_LM], 1000000000);
    if (c != 0 && c != 304)
        abort();
    fuzz_check_ranges(&req, &in, len * (uint64_t)len, (size_t)(knobs >> 5) + 1);
    fuzz_check_merge(&resp, &req, in.clean);
    struct sbuf s = { 0 };
    char detail[64];
    size_t dn = in.f[F_EXPIRES].n < 63 ? in.f[F_EXPIRES].n : 63;
    memcpy(detail, in.f[F_EXPIRES].p ? in.f[F_EXPIRES].p : "", dn);
    detail[dn] = '\0';
    cache_rules_status(&s, detail, st, (int64_t)knobs - 128, detail);
    sbuf_free(&s);
    return 0;
}
