/* cache_head: what the cache does with whole heads: Vary names and secondary keys (RFC 9111
 * §4.1), and the refreshed stored head after a 304 (§4.3.4, §3.2). */
#include <string.h>

#include "cache/cache_rules_priv.h"

static char head_lower(char c) { return (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c; }

static int head_icmp(struct str a, struct str b)
{
    size_t n = a.n < b.n ? a.n : b.n;
    for (size_t i = 0; i < n; i++) {
        char x = head_lower(a.p[i]), y = head_lower(b.p[i]);
        if (x != y)
            return (unsigned char)x < (unsigned char)y ? -1 : 1;
    }
    return a.n < b.n ? -1 : a.n > b.n;
}

static bool head_is_token(struct str s)
{
    for (size_t i = 0; i < s.n; i++)
        if (!cache_is_tchar((unsigned char)s.p[i]))
            return false;
    return s.n > 0;
}

/* Inserts NAME into the sorted set NAMES[0..*N); false when the set is full. */
static bool vary_insert(struct str *names, int *n, struct str name)
{
    int at = 0;
    while (at < *n && head_icmp(names[at], name) < 0)
        at++;
    if (at < *n && head_icmp(names[at], name) == 0)
        return true;
    if (*n == CACHE_VARY_MAX_NAMES)
        return false;
    memmove(names + at + 1, names + at, (size_t)(*n - at) * sizeof *names);
    names[at] = name;
    (*n)++;
    return true;
}

int cache_vary_collect(const struct http_msg *resp, struct str *names)
{
    int n = 0;
    uint32_t i = 0;
    struct str v, item;
    while (cache_field_next(resp, "vary", &i, &v)) {
        while (str_next_list_item(&v, &item)) {
            /* "*" (§4.1: never matches), or a name we cannot key on */
            if (!head_is_token(item) || (item.n == 1 && item.p[0] == '*'))
                return -1;
            if (!vary_insert(names, &n, item))
                return -1;
        }
    }
    return n;
}

int cache_rules_vary_names(const struct http_msg *resp, struct sbuf *out)
{
    struct str names[CACHE_VARY_MAX_NAMES];
    int n = cache_vary_collect(resp, names);
    for (int k = 0; k < n; k++) {
        if (k)
            sbuf_append(out, "\n", 1);
        for (size_t j = 0; j < names[k].n; j++) {
            char c = head_lower(names[k].p[j]);
            sbuf_append(out, &c, 1);
        }
    }
    return n;
}

/* Appends the line of one selecting header (§4.1): its field lines combined, list members
 * trimmed, so that "a,b", "a, b" and two lines "a" / "b" select the same response. */
static void vary_key_line(const struct http_msg *req, struct str name, struct sbuf *out)
{
    sbuf_append_str(out, name);
    bool present = false, first = true;
    for (uint32_t i = 0; i < req->n_headers; i++) {
        if (!str_ieq(req->headers[i].name, name))
            continue;
        if (!present)
            sbuf_append(out, "=", 1);
        present = true;
        struct str v = req->headers[i].value, item;
        while (str_next_list_item(&v, &item)) {
            if (!first)
                sbuf_append(out, ",", 1);
            sbuf_append_str(out, item);
            first = false;
        }
    }
    sbuf_append(out, "\n", 1);
}

void cache_rules_vary_key(const struct http_msg *req, const char *names, size_t len, struct sbuf *out)
{
    size_t at = 0;
    while (at < len) {
        const char *nl = memchr(names + at, '\n', len - at);
        size_t end = nl ? (size_t)(nl - names) : len;
        if (end > at)
            vary_key_line(req, str_make(names + at, end - at), out);
        at = end + 1;
    }
}

/* Is NAME one the 304 may not replace (§3.2: Content-Length, and the fields excepted from
 * storage by §3.1: hop-by-hop ones and those the 304's Connection names)? */
static bool merge_kept(const struct http_msg *resp304, struct str name)
{
    static const char *const kept[] = { "content-length", "transfer-encoding", "connection",
                                        "keep-alive", "proxy-connection", "te", "trailer", "upgrade",
                                        "proxy-authenticate", "proxy-authentication-info",
                                        "proxy-authorization" };
    for (size_t k = 0; k < sizeof kept / sizeof *kept; k++)
        if (str_ieq_cstr(name, kept[k]))
            return true;
    uint32_t i = 0;
    struct str v, item;
    while (cache_field_next(resp304, "connection", &i, &v))
        while (str_next_list_item(&v, &item))
            if (str_ieq(item, name))
                return true;
    return false;
}

static bool merge_replaced(const struct http_msg *resp304, struct str name)
{
    if (merge_kept(resp304, name))
        return false;
    for (uint32_t i = 0; i < resp304->n_headers; i++)
        if (str_ieq(resp304->headers[i].name, name))
            return true;
    return false;
}

void cache_rules_merge_304(const struct http_msg *stored_head, const struct http_msg *resp304,
                           struct sbuf *out)
{
    int status = stored_head->status;
    char code[3] = { (char)('0' + status / 100 % 10), (char)('0' + status / 10 % 10), (char)('0' + status % 10) };
    sbuf_append_cstr(out, "HTTP/1.1 ");
    sbuf_append(out, code, 3);
    sbuf_append(out, " ", 1);
    sbuf_append_str(out, stored_head->reason);
    sbuf_append(out, "\r\n", 2);
    for (uint32_t i = 0; i < stored_head->n_headers; i++) {
        const struct http_header *h = &stored_head->headers[i];
        if (!merge_replaced(resp304, h->name))
            sbuf_append_header(out, h->name, h->value);
    }
    for (uint32_t i = 0; i < resp304->n_headers; i++) {
        const struct http_header *h = &resp304->headers[i];
        if (!merge_kept(resp304, h->name))
            sbuf_append_header(out, h->name, h->value);
    }
    sbuf_append(out, "\r\n", 2);
}
