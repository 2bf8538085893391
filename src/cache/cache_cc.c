/* cache_cc: Cache-Control parsing (RFC 9111 §5.2, RFC 5861) and the small field helpers the
 * other cache_rules sources share. */
#include <string.h>

#include "cache/cache_rules_priv.h"

bool cache_field_next(const struct http_msg *m, const char *name, uint32_t *i, struct str *value)
{
    while (*i < m->n_headers) {
        const struct http_header *h = &m->headers[(*i)++];
        if (str_ieq_cstr(h->name, name)) {
            *value = h->value;
            return true;
        }
    }
    return false;
}

bool cache_is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return true;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

int64_t cache_delta_seconds(struct str s)
{
    if (s.n == 0)
        return -1;
    int64_t v = 0;
    for (size_t i = 0; i < s.n; i++) {
        if (s.p[i] < '0' || s.p[i] > '9')
            return -1;
        /* §1.2.2: a value too large is taken as 2^31 */
        if (v < CACHE_CC_DELTA_MAX)
            v = v * 10 + (s.p[i] - '0');
    }
    return v > CACHE_CC_DELTA_MAX ? CACHE_CC_DELTA_MAX : v;
}

static bool cc_ows(char c) { return c == ' ' || c == '\t'; }

/* One directive of a Cache-Control list. */
struct cc_item {
    struct str name;
    struct str arg;   /* token, or the inside of a quoted-string (escapes left in place) */
    bool has_arg;
    bool bad;         /* malformed argument or trailing garbage */
};

/* Skips to just after the next comma outside a quoted-string (or to the end). */
static void cc_skip_item(struct str *rest)
{
    bool quoted = false;
    while (rest->n) {
        char c = *rest->p++;
        rest->n--;
        if (quoted && c == '\\' && rest->n) {
            rest->p++;
            rest->n--;
        } else if (c == '"') {
            quoted = !quoted;
        } else if (c == ',' && !quoted) {
            return;
        }
    }
}

static void cc_skip_ows(struct str *s)
{
    while (s->n && cc_ows(*s->p)) {
        s->p++;
        s->n--;
    }
}

static struct str cc_take_token(struct str *s)
{
    size_t k = 0;
    while (k < s->n && cache_is_tchar((unsigned char)s->p[k]))
        k++;
    struct str t = str_make(s->p, k);
    s->p += k;
    s->n -= k;
    return t;
}

/* quoted-string (RFC 9110 §5.6.4) at S (which starts at the DQUOTE): its inside, or bad. */
static void cc_take_quoted(struct str *s, struct cc_item *it)
{
    size_t k = 1;
    while (k < s->n && s->p[k] != '"')
        k += (s->p[k] == '\\') ? 2 : 1;
    if (k >= s->n) {
        it->bad = true;
        s->p += s->n;
        s->n = 0;
        return;
    }
    it->arg = str_make(s->p + 1, k - 1);
    s->p += k + 1;
    s->n -= k + 1;
}

/* Parses the next directive of REST: cache-directive = token [ "=" ( token / quoted-string ) ]
 * (§5.2). Whitespace around "=" is tolerated. Returns false at the end of the list. */
static bool cc_next(struct str *rest, struct cc_item *it)
{
    for (;;) {
        while (rest->n && (cc_ows(*rest->p) || *rest->p == ',')) {
            rest->p++;
            rest->n--;
        }
        if (!rest->n)
            return false;
        memset(it, 0, sizeof *it);
        it->name = cc_take_token(rest);
        if (it->name.n)
            break;
        cc_skip_item(rest); /* not a token: skip the member */
    }
    cc_skip_ows(rest);
    if (rest->n && *rest->p == '=') {
        rest->p++;
        rest->n--;
        cc_skip_ows(rest);
        it->has_arg = true;
        if (rest->n && *rest->p == '"')
            cc_take_quoted(rest, it);
        else
            it->arg = cc_take_token(rest);
        cc_skip_ows(rest);
    }
    if (rest->n && *rest->p != ',') {
        it->bad = true; /* trailing garbage in the member */
        cc_skip_item(rest);
    }
    return true;
}

/* A numeric argument: the value, or -1 when absent / malformed. */
static int64_t cc_number(const struct cc_item *it)
{
    return (it->bad || !it->has_arg) ? -1 : cache_delta_seconds(it->arg);
}

/* Sets *DST from IT's number, first occurrence only; returns false if IT's number is malformed. */
static bool cc_set_number(int64_t *dst, const struct cc_item *it)
{
    int64_t v = cc_number(it);
    if (*dst == CACHE_CC_ABSENT && v >= 0)
        *dst = v;
    return v >= 0;
}

static void cc_apply(struct cache_cc *cc, const struct cc_item *it, bool *max_age_bad)
{
    struct str n = it->name;
    if (str_ieq_cstr(n, "max-age")) {
        if (!cc_set_number(&cc->max_age, it) && cc->max_age == CACHE_CC_ABSENT)
            *max_age_bad = true;
    } else if (str_ieq_cstr(n, "s-maxage")) {
        cc_set_number(&cc->s_maxage, it);
    } else if (str_ieq_cstr(n, "max-stale")) {
        /* §5.2.1.2: without a value, any staleness is accepted */
        if (!it->has_arg && !it->bad && cc->max_stale == CACHE_CC_ABSENT)
            cc->max_stale = CACHE_CC_DELTA_MAX;
        else
            cc_set_number(&cc->max_stale, it);
    } else if (str_ieq_cstr(n, "min-fresh")) {
        cc_set_number(&cc->min_fresh, it);
    } else if (str_ieq_cstr(n, "stale-while-revalidate")) {
        cc_set_number(&cc->stale_while_revalidate, it);
    } else if (str_ieq_cstr(n, "stale-if-error")) {
        cc_set_number(&cc->stale_if_error, it);
    } else if (str_ieq_cstr(n, "no-cache")) {
        cc->no_cache = true; /* §5.2.2.4: the qualified form is treated as unqualified (a cache may) */
    } else if (str_ieq_cstr(n, "no-store")) {
        cc->no_store = true;
    } else if (str_ieq_cstr(n, "private")) {
        cc->is_private = true; /* §5.2.2.7: a shared cache stores neither form */
    } else if (str_ieq_cstr(n, "must-revalidate")) {
        cc->must_revalidate = true;
    } else if (str_ieq_cstr(n, "proxy-revalidate")) {
        cc->proxy_revalidate = true;
    } else if (str_ieq_cstr(n, "only-if-cached")) {
        cc->only_if_cached = true;
    } else if (str_ieq_cstr(n, "public")) {
        /* loosening directives take no argument; a malformed one is ignored */
        cc->is_public |= !it->has_arg && !it->bad;
    } else if (str_ieq_cstr(n, "immutable")) {
        cc->immutable |= !it->has_arg && !it->bad;
    }
    /* unknown directives are ignored (§5.2.3) */
}

/* §5.4: a request's Pragma: no-cache counts as Cache-Control: no-cache when no Cache-Control
 * field is present. */
static bool cc_pragma_no_cache(const struct http_msg *m)
{
    uint32_t i = 0;
    struct str v, item;
    while (cache_field_next(m, "pragma", &i, &v))
        while (str_next_list_item(&v, &item))
            if (str_ieq_cstr(item, "no-cache"))
                return true;
    return false;
}

void cache_cc_parse(const struct http_msg *m, struct cache_cc *cc)
{
    memset(cc, 0, sizeof *cc);
    cc->max_age = cc->s_maxage = cc->max_stale = cc->min_fresh = CACHE_CC_ABSENT;
    cc->stale_while_revalidate = cc->stale_if_error = CACHE_CC_ABSENT;
    bool max_age_bad = false;
    uint32_t i = 0;
    struct str v;
    struct cc_item it;
    while (cache_field_next(m, "cache-control", &i, &v)) {
        cc->present = true;
        while (cc_next(&v, &it))
            cc_apply(cc, &it, &max_age_bad);
    }
    bool response = m->status > 0;
    /* §4.2.1: invalid freshness information on a response means stale */
    if (response && max_age_bad && cc->max_age == CACHE_CC_ABSENT)
        cc->max_age = 0;
    if (!response && !cc->present && cc_pragma_no_cache(m))
        cc->no_cache = true;
}
