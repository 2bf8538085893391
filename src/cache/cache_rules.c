/* cache_rules: storability (RFC 9111 §3), freshness (§4.2), age (§4.2.3), whether a stored
 * response may be used (§4, RFC 5861), and the Cache-Status value (RFC 9211). */
#include <string.h>

#include "cache/cache_rules_priv.h"
#include "conf/config.h"

void cache_policy_from_conf(const struct conf_route_cache *c, struct cache_policy *p)
{
    memset(p, 0, sizeof *p);
    p->default_ttl_s = (int64_t)(c->default_ttl_ms / 1000);
    p->heuristic_max_s = (int64_t)(c->heuristic_max_ms / 1000);
    p->swr_default_s = (int64_t)(c->stale_while_revalidate_ms / 1000);
    p->sie_default_s = (int64_t)(c->stale_if_error_ms / 1000);
    p->allow_set_cookie = c->allow_set_cookie;
    p->max_object_size = c->zone ? c->zone->max_object_size : 0;
}

const char *cache_rules_reason(int reason)
{
    /* sf-tokens, so that they can go into Cache-Status' detail as they are */
    switch (reason) {
    case CACHE_STORABLE: return "storable";
    case CACHE_NS_METHOD: return "method";
    case CACHE_NS_STATUS: return "status";
    case CACHE_NS_PARTIAL: return "partial";
    case CACHE_NS_REQ_NO_STORE: return "request-no-store";
    case CACHE_NS_NO_STORE: return "no-store";
    case CACHE_NS_PRIVATE: return "private";
    case CACHE_NS_AUTHORIZATION: return "authorization";
    case CACHE_NS_SET_COOKIE: return "set-cookie";
    case CACHE_NS_VARY_STAR: return "vary-star";
    case CACHE_NS_NO_FRESHNESS: return "no-freshness";
    case CACHE_NS_TOO_BIG: return "too-big";
    default: return "unknown";
    }
}

/* Final status codes defined by RFC 9110 §15 (the ones this cache "understands", §3); 304
 * only ever updates a stored response (§4.3.4). */
static bool status_understood(int s)
{
    return (s >= 200 && s <= 206) || (s >= 300 && s <= 305 && s != 304) || s == 307 || s == 308 ||
           (s >= 400 && s <= 417) || s == 421 || s == 422 || s == 426 || (s >= 500 && s <= 505);
}

/* RFC 9110 §15.1: heuristically cacheable by default. */
static bool status_heuristic(int s)
{
    switch (s) {
    case 200: case 203: case 204: case 300: case 301: case 308: case 404: case 405: case 410:
    case 414: case 501:
        return true;
    default:
        return false;
    }
}

/* The first line of field NAME as an HTTP-date; false when absent or invalid. */
static bool field_date(const struct http_msg *m, const char *name, int64_t *out)
{
    const struct http_header *h = http_msg_find(m, name);
    return h && cache_rules_http_date(h->value, out) == 0;
}

/* The checks of §3 that refuse a response outright; 0 when none applies. */
static int storable_refusal(const struct http_msg *req, const struct http_msg *resp,
                            const struct cache_cc *qcc, const struct cache_cc *rcc,
                            const struct cache_policy *p)
{
    if (req->method_id != HTTP_METHOD_GET && req->method_id != HTTP_METHOD_HEAD)
        return CACHE_NS_METHOD;
    if (resp->status == 206)
        return CACHE_NS_PARTIAL;
    if (!status_understood(resp->status))
        return CACHE_NS_STATUS; /* also 1xx and 304: not a final stored response */
    if (qcc->no_store)
        return CACHE_NS_REQ_NO_STORE;
    if (rcc->no_store)
        return CACHE_NS_NO_STORE;
    if (rcc->is_private)
        return CACHE_NS_PRIVATE;
    /* §3.5 */
    if (http_msg_find(req, "authorization") &&
        !(rcc->must_revalidate || rcc->is_public || rcc->s_maxage >= 0))
        return CACHE_NS_AUTHORIZATION;
    if (!p->allow_set_cookie && http_msg_find(resp, "set-cookie"))
        return CACHE_NS_SET_COOKIE;
    struct str names[CACHE_VARY_MAX_NAMES];
    if (cache_vary_collect(resp, names) < 0)
        return CACHE_NS_VARY_STAR; /* §4.1: "*" never matches */
    if (p->max_object_size && resp->content_length >= 0 &&
        (uint64_t)resp->content_length > p->max_object_size)
        return CACHE_NS_TOO_BIG;
    return 0;
}

/* §4.2.1 explicit expiration: s-maxage, max-age, Expires - Date. Returns false when none. */
static bool explicit_lifetime(const struct http_msg *resp, const struct cache_cc *rcc,
                              int64_t date, int64_t *life)
{
    if (rcc->s_maxage >= 0) {
        *life = rcc->s_maxage;
        return true;
    }
    if (rcc->max_age >= 0) {
        *life = rcc->max_age;
        return true;
    }
    if (http_msg_find(resp, "expires")) {
        int64_t exp;
        /* §5.3: an invalid Expires (e.g. "0") means already expired */
        *life = field_date(resp, "expires", &exp) && exp > date ? exp - date : 0;
        return true;
    }
    return false;
}

/* §4.2.2: 10% of the time since Last-Modified, capped; then the route's default. 0: none. */
static int64_t heuristic_lifetime(const struct http_msg *resp, const struct cache_policy *p, int64_t date)
{
    int64_t lm;
    if (p->heuristic_max_s > 0 && field_date(resp, "last-modified", &lm) && lm < date) {
        int64_t h = (date - lm) / 10;
        if (h > 0)
            return h < p->heuristic_max_s ? h : p->heuristic_max_s;
    }
    return p->default_ttl_s > 0 ? p->default_ttl_s : 0;
}

/* The stale-serving windows; forbidden by must-revalidate & co, and with no-cache unless the
 * response itself grants stale-if-error. */
static void stale_windows(const struct cache_cc *rcc, const struct cache_policy *p, struct cache_fresh *f)
{
    f->swr_s = rcc->stale_while_revalidate >= 0 ? rcc->stale_while_revalidate : p->swr_default_s;
    f->sie_s = rcc->stale_if_error >= 0 ? rcc->stale_if_error : p->sie_default_s;
    if (f->no_cache) {
        f->swr_s = 0;
        f->sie_s = rcc->stale_if_error >= 0 ? rcc->stale_if_error : 0;
    }
    if (f->must_revalidate)
        f->swr_s = f->sie_s = 0;
    if (f->swr_s < 0)
        f->swr_s = 0;
    if (f->sie_s < 0)
        f->sie_s = 0;
}

int cache_rules_storable(const struct http_msg *req, const struct http_msg *resp,
                         const struct cache_policy *p, int64_t now, struct cache_fresh *out)
{
    memset(out, 0, sizeof *out);
    struct cache_cc qcc, rcc;
    cache_cc_parse(req, &qcc);
    cache_cc_parse(resp, &rcc);
    int r = storable_refusal(req, resp, &qcc, &rcc, p);
    if (r)
        return r;
    out->request_time = out->response_time = now;
    if (!field_date(resp, "date", &out->date_s))
        out->date_s = now;
    const struct http_header *age = http_msg_find(resp, "age");
    out->age_s = age ? cache_delta_seconds(age->value) : 0;
    if (out->age_s < 0)
        out->age_s = 0;
    out->has_etag = http_msg_find(resp, "etag") != NULL;
    out->has_last_modified = http_msg_find(resp, "last-modified") != NULL;
    out->no_cache = rcc.no_cache;
    out->must_revalidate = rcc.must_revalidate || rcc.proxy_revalidate || rcc.s_maxage >= 0;
    stale_windows(&rcc, p, out);
    if (!explicit_lifetime(resp, &rcc, out->date_s, &out->lifetime_s)) {
        /* §3: without explicit freshness, only heuristically cacheable statuses or public */
        if (!status_heuristic(resp->status) && !rcc.is_public)
            return CACHE_NS_STATUS;
        /* no-cache: stored to be revalidated on every use (§5.2.2.4), no lifetime needed */
        out->lifetime_s = rcc.no_cache ? 0 : heuristic_lifetime(resp, p, out->date_s);
        out->heuristic = !rcc.no_cache;
        if (out->lifetime_s == 0 && !rcc.no_cache)
            return CACHE_NS_NO_FRESHNESS;
    }
    /* Stale at once with nothing to revalidate with nor serve stale under: storing only churns. */
    if (out->lifetime_s == 0 && !out->has_etag && !out->has_last_modified && !out->swr_s && !out->sie_s)
        return CACHE_NS_NO_FRESHNESS;
    return 0;
}

int64_t cache_rules_age(const struct cache_fresh *f, int64_t request_time, int64_t response_time,
                        int64_t now)
{
    /* §4.2.3 */
    int64_t apparent_age = response_time - f->date_s;
    if (apparent_age < 0)
        apparent_age = 0;
    int64_t response_delay = response_time - request_time;
    if (response_delay < 0)
        response_delay = 0;
    int64_t corrected_age_value = f->age_s + response_delay;
    int64_t corrected_initial_age = apparent_age > corrected_age_value ? apparent_age : corrected_age_value;
    int64_t resident_time = now - response_time;
    if (resident_time < 0)
        resident_time = 0;
    return corrected_initial_age + resident_time;
}

int64_t cache_rules_ttl(const struct cache_fresh *f, int64_t age) { return f->lifetime_s - age; }

/* The request's max-age (§5.2.1.1) and min-fresh (§5.2.1.3) are met. */
static bool request_constraints_met(const struct cache_fresh *f, int64_t age, const struct cache_cc *q)
{
    if (!q)
        return true;
    if (q->max_age >= 0 && age > q->max_age)
        return false;
    if (q->min_fresh >= 0 && f->lifetime_s - age < q->min_fresh)
        return false;
    return true;
}

enum cache_use cache_rules_use(const struct cache_fresh *f, int64_t age, const struct cache_cc *req_cc)
{
    /* §5.2.1.4, §5.2.2.4: no-cache either side */
    if (f->no_cache || (req_cc && req_cc->no_cache))
        return CACHE_USE_REVALIDATE;
    if (!request_constraints_met(f, age, req_cc))
        return CACHE_USE_REVALIDATE;
    if (age < f->lifetime_s)
        return CACHE_USE_FRESH; /* §4.2: fresh while lifetime > age */
    if (f->must_revalidate)
        return CACHE_USE_REVALIDATE; /* §4.2.4: never served stale, not even for max-stale */
    int64_t staleness = age - f->lifetime_s;
    if (req_cc && req_cc->max_stale >= 0 && staleness <= req_cc->max_stale)
        return CACHE_USE_STALE; /* §5.2.1.2 */
    if (staleness < f->swr_s)
        return CACHE_USE_STALE_REVALIDATE_BACKGROUND;
    return CACHE_USE_REVALIDATE;
}

bool cache_rules_stale_if_error_ok(const struct cache_fresh *f, int64_t age, const struct cache_cc *req_cc)
{
    if (f->must_revalidate)
        return false;
    int64_t staleness = age - f->lifetime_s;
    if (staleness < 0)
        staleness = 0; /* fresh but needing revalidation (no-cache): as good as just stale */
    if (staleness < f->sie_s)
        return true;
    if (!req_cc)
        return false;
    /* RFC 5861 §4: the request may grant it too; a client accepting max-stale accepts it here */
    if (req_cc->stale_if_error >= 0 && staleness <= req_cc->stale_if_error)
        return true;
    return req_cc->max_stale >= 0 && staleness <= req_cc->max_stale;
}

/* sf-token (RFC 8941 §3.3.4): a letter or "*" first, then tchar, ":" or "/". */
static bool status_is_token(const char *s)
{
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '*'))
        return false;
    for (; *s; s++)
        if (!cache_is_tchar((unsigned char)*s) && *s != ':' && *s != '/')
            return false;
    return true;
}

/* A token as is, anything else as an sf-string (printable ASCII, '"' and '\' escaped). */
static void status_item(struct sbuf *out, const char *s)
{
    if (status_is_token(s)) {
        sbuf_append_cstr(out, s);
        return;
    }
    sbuf_append(out, "\"", 1);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            sbuf_append(out, "\\", 1);
        if (*s >= 0x20 && *s < 0x7f)
            sbuf_append(out, s, 1);
    }
    sbuf_append(out, "\"", 1);
}

void cache_rules_status(struct sbuf *out, const char *cache_name, int kind, int64_t ttl,
                        const char *detail)
{
    static const char *const fwd[] = { "hit", "fwd=miss", "fwd=uri-miss", "fwd=vary-miss",
                                       "fwd=stale", "fwd=request", "fwd=bypass" };
    int base = kind & CACHE_STATUS_KIND_MASK;
    status_item(out, cache_name);
    sbuf_append_cstr(out, "; ");
    sbuf_append_cstr(out, base <= CACHE_STATUS_BYPASS ? fwd[base] : "fwd=miss");
    if (base != CACHE_STATUS_HIT && (kind & CACHE_STATUS_FWD_304))
        sbuf_append_cstr(out, "; fwd-status=304");
    if (ttl != CACHE_STATUS_NO_TTL) {
        sbuf_append_cstr(out, ttl < 0 ? "; ttl=-" : "; ttl=");
        sbuf_append_u64(out, ttl < 0 ? (uint64_t)0 - (uint64_t)ttl : (uint64_t)ttl);
    }
    if (kind & CACHE_STATUS_STORED)
        sbuf_append_cstr(out, "; stored");
    if (kind & CACHE_STATUS_COLLAPSED)
        sbuf_append_cstr(out, "; collapsed");
    if (detail) {
        sbuf_append_cstr(out, "; detail=");
        status_item(out, detail);
    }
}
