/* cache_range: requests answered from a stored full response: conditionals (RFC 9110 §13.1,
 * RFC 9111 §4.3.2) and byte ranges (RFC 9110 §14). */
#include <string.h>

#include "cache/cache_rules_priv.h"

struct etag {
    struct str opaque;  /* with its quotes */
    bool weak;
};

static bool etagc(unsigned char c) { return c == 0x21 || (c >= 0x23 && c != 0x7f); }

/* entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE (RFC 9110 §8.8.3), at the start of *S. */
static bool etag_take(struct str *s, struct etag *t)
{
    size_t k = 0;
    t->weak = s->n >= 2 && s->p[0] == 'W' && s->p[1] == '/';
    if (t->weak)
        k = 2;
    if (k >= s->n || s->p[k] != '"')
        return false;
    size_t start = k++;
    while (k < s->n && etagc((unsigned char)s->p[k]))
        k++;
    if (k >= s->n || s->p[k] != '"')
        return false;
    t->opaque = str_make(s->p + start, k + 1 - start);
    s->p += k + 1;
    s->n -= k + 1;
    return true;
}

/* The whole of S is one entity-tag. */
static bool etag_parse(struct str s, struct etag *t)
{
    return etag_take(&s, t) && s.n == 0;
}

/* Skips OWS and commas; false at the end. */
static bool list_skip(struct str *s)
{
    while (s->n && (s->p[0] == ' ' || s->p[0] == '\t' || s->p[0] == ',')) {
        s->p++;
        s->n--;
    }
    return s->n > 0;
}

/* If-None-Match (RFC 9110 §13.1.2): "*" or a list of entity-tags, weakly compared (§8.8.3.2)
 * with STORED. A malformed list matches nothing from the bad member on. */
static bool inm_matches(const struct http_msg *req, const struct etag *stored, bool have)
{
    uint32_t i = 0;
    struct str v;
    struct etag t;
    while (cache_field_next(req, "if-none-match", &i, &v)) {
        if (v.n == 1 && v.p[0] == '*')
            return true; /* a current representation exists: the stored one */
        while (list_skip(&v)) {
            if (!etag_take(&v, &t))
                break;
            if (have && str_eq(t.opaque, stored->opaque))
                return true;
            if (v.n && v.p[0] != ',' && v.p[0] != ' ' && v.p[0] != '\t')
                break;
        }
    }
    return false;
}

int cache_rules_conditional(const struct http_msg *req, struct str etag, struct str last_modified,
                            int64_t now)
{
    if (req->method_id != HTTP_METHOD_GET && req->method_id != HTTP_METHOD_HEAD)
        return 0;
    if (http_msg_find(req, "if-none-match")) {
        struct etag stored;
        bool have = etag_parse(etag, &stored);
        return inm_matches(req, &stored, have) ? 304 : 0;
    }
    /* §13.1.3: exactly one valid date, ignored when later than now */
    uint32_t i = 0;
    struct str v;
    int64_t ims, lm;
    if (!cache_field_next(req, "if-modified-since", &i, &v) || cache_rules_http_date(v, &ims) < 0 ||
        cache_field_next(req, "if-modified-since", &i, &v) || ims > now)
        return 0;
    if (cache_rules_http_date(last_modified, &lm) < 0)
        return 0;
    return lm <= ims ? 304 : 0;
}

/* If-Range (RFC 9110 §13.1.5): true when the range may be served: no If-Range, a strong
 * entity-tag equal to the stored strong one, or a date equal to the stored Last-Modified. */
static bool if_range_ok(const struct http_msg *req, struct str etag, struct str last_modified)
{
    const struct http_header *h = http_msg_find(req, "if-range");
    if (!h)
        return true;
    struct str v = h->value;
    struct etag want, have;
    if ((v.n && v.p[0] == '"') || (v.n >= 2 && v.p[0] == 'W' && v.p[1] == '/'))
        return etag_parse(v, &want) && !want.weak && etag_parse(etag, &have) && !have.weak &&
               str_eq(want.opaque, have.opaque);
    int64_t a, b;
    return cache_rules_http_date(v, &a) == 0 && cache_rules_http_date(last_modified, &b) == 0 && a == b;
}

/* 1*DIGIT, saturating at UINT64_MAX; false when not all digits or empty. */
static bool range_num(struct str s, uint64_t *out)
{
    if (!s.n)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < s.n; i++) {
        if (s.p[i] < '0' || s.p[i] > '9')
            return false;
        unsigned d = (unsigned)(s.p[i] - '0');
        v = v > (UINT64_MAX - d) / 10 ? UINT64_MAX : v * 10 + d;
    }
    *out = v;
    return true;
}

/* One range-spec (§14.1.1) against LENGTH: -1 invalid (the whole Range is ignored),
 * 0 unsatisfiable, 1 satisfiable with *R set. */
static int range_spec(struct str spec, uint64_t length, struct cache_range *r)
{
    const char *dash = memchr(spec.p, '-', spec.n);
    if (!dash)
        return -1;
    struct str a = str_make(spec.p, (size_t)(dash - spec.p));
    struct str b = str_make(dash + 1, spec.n - a.n - 1);
    uint64_t first, last;
    if (!a.n) { /* suffix-range: the last B bytes, all when fewer (§14.1.2) */
        if (!range_num(b, &last))
            return -1;
        if (last == 0 || length == 0)
            return 0;
        r->first = last >= length ? 0 : length - last;
        r->last = length - 1;
        return 1;
    }
    if (!range_num(a, &first))
        return -1;
    last = UINT64_MAX;
    if (b.n && !range_num(b, &last))
        return -1;
    if (last < first)
        return -1;
    if (first >= length)
        return 0;
    r->first = first;
    r->last = last >= length ? length - 1 : last;
    return 1;
}

/* Sorts R[0..N) by first and merges overlapping or adjacent ranges; returns the new count. */
static size_t range_coalesce(struct cache_range *r, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        struct cache_range x = r[i];
        size_t j = i;
        for (; j > 0 && r[j - 1].first > x.first; j--)
            r[j] = r[j - 1];
        r[j] = x;
    }
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (m && r[i].first <= r[m - 1].last + 1) { /* last < length, so no overflow */
            if (r[i].last > r[m - 1].last)
                r[m - 1].last = r[i].last;
        } else {
            r[m++] = r[i];
        }
    }
    return m;
}

/* Parses the range-set of "bytes=SET" into R (satisfiable ranges only); -1 when the whole Range
 * is to be ignored, else the count. */
static int range_parse_set(struct str set, uint64_t length, struct cache_range *r)
{
    struct str spec;
    size_t specs = 0, sat = 0;
    while (str_next_list_item(&set, &spec)) {
        if (++specs > CACHE_RANGE_MAX_SPECS)
            return -1;
        int k = range_spec(spec, length, &r[sat]);
        if (k < 0)
            return -1;
        sat += (size_t)k;
    }
    return specs ? (int)sat : -1;
}

int cache_rules_ranges(const struct http_msg *req, uint64_t length, struct str etag,
                       struct str last_modified, struct cache_range *out, size_t max, size_t *n)
{
    *n = 0;
    /* §14.2: GET is the only method with range handling */
    if (req->method_id != HTTP_METHOD_GET)
        return 0;
    uint32_t i = 0;
    struct str v, ignored;
    if (!cache_field_next(req, "range", &i, &v) || cache_field_next(req, "range", &i, &ignored))
        return 0; /* none, or several lines: not a valid Range */
    if (v.n < 6 || !str_ieq_cstr(str_make(v.p, 6), "bytes="))
        return 0;
    if (!if_range_ok(req, etag, last_modified))
        return 0; /* §13.1.5: the validator changed: the whole new representation */
    struct cache_range r[CACHE_RANGE_MAX_SPECS];
    int sat = range_parse_set(str_make(v.p + 6, v.n - 6), length, r);
    if (sat < 0)
        return 0;
    if (sat == 0)
        return 416;
    size_t m = range_coalesce(r, (size_t)sat);
    if (m > max)
        return 0;
    memcpy(out, r, m * sizeof *r);
    *n = m;
    return 206;
}
