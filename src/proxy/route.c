#include "proxy/route.h"

#include <pthread.h>
#include <string.h>

/* ---- host ---- */

/* The authority without its port: "[::1]:80" -> "[::1]", "a.com:80" -> "a.com". A trailing dot
 * ("a.com.") names the same host, so it goes too. */
static struct str route_host_name(struct str authority)
{
    struct str h = authority;
    if (!h.n)
        return h; /* HTTP/1.0 without Host: no name (and no pointer to search) */
    if (h.p[0] == '[') {
        const char *close = memchr(h.p, ']', h.n);
        if (close)
            h.n = (size_t)(close - h.p) + 1;
        return h;
    }
    const char *colon = memchr(h.p, ':', h.n);
    if (colon)
        h.n = (size_t)(colon - h.p);
    if (h.n > 1 && h.p[h.n - 1] == '.')
        h.n--;
    return h;
}

static bool route_host_matches(const char *want, struct str authority)
{
    struct str host = route_host_name(authority);
    struct str w = str_make(want, strlen(want));
    if (w.n >= 2 && w.p[0] == '*' && w.p[1] == '.') {
        /* "*.example.com": any name with at least one more label; the bare domain does not. */
        struct str suffix = str_make(w.p + 1, w.n - 1);
        return host.n > suffix.n &&
               str_ieq(str_make(host.p + host.n - suffix.n, suffix.n), suffix);
    }
    if (str_ieq(host, w))
        return true;
    /* An IPv6 literal may be configured without its brackets. */
    return host.n >= 2 && host.p[0] == '[' && str_ieq(str_make(host.p + 1, host.n - 2), w);
}

/* ---- path ---- */

static pthread_key_t route_md_key;
static pthread_once_t route_md_once = PTHREAD_ONCE_INIT;

static void route_md_free(void *md) { pcre2_match_data_free(md); }

static void route_md_key_init(void) { (void)pthread_key_create(&route_md_key, route_md_free); }

/* Match data is per thread: workers match concurrently, and keeping one per thread avoids a
 * malloc per request (pcre2 also caches its backtracking frames in it). One ovector pair is
 * enough because we only ask whether the pattern matches. */
static pcre2_match_data *route_match_data(void)
{
    (void)pthread_once(&route_md_once, route_md_key_init);
    pcre2_match_data *md = pthread_getspecific(route_md_key);
    if (!md) {
        md = pcre2_match_data_create(1, NULL);
        if (md && pthread_setspecific(route_md_key, md) != 0) {
            pcre2_match_data_free(md);
            md = NULL;
        }
    }
    return md;
}

static bool route_regex_matches(const struct conf_route *r, struct str path)
{
    if (!r->regex)
        return false; /* a regex that did not compile must not turn into "match anything" */
    pcre2_match_data *md = route_match_data();
    if (!md)
        return false;
    int rc = pcre2_match(r->regex, (PCRE2_SPTR)path.p, path.n, 0, 0, md, NULL);
    return rc >= 0; /* 0: matched, ovector too small for the captures - still a match */
}

static bool route_path_matches(const struct conf_route *r, struct str path)
{
    if (r->path && !str_eq(path, str_make(r->path, strlen(r->path))))
        return false;
    if (r->path_prefix && !str_has_prefix(path, str_make(r->path_prefix, strlen(r->path_prefix))))
        return false;
    if (r->path_regex && !route_regex_matches(r, path))
        return false;
    return true;
}

/* ---- methods, headers ---- */

static bool route_method_matches(const struct conf_route *r, struct str method)
{
    if (r->n_methods == 0)
        return true;
    for (size_t i = 0; i < r->n_methods; i++)
        if (str_eq(method, str_make(r->methods[i], strlen(r->methods[i]))))
            return true;
    return false;
}

/* Any instance of the field with exactly that value will do. */
static bool route_header_present(const struct http_msg *req, const struct conf_header_kv *kv)
{
    struct str value = str_make(kv->value ? kv->value : "", kv->value ? strlen(kv->value) : 0);
    for (uint32_t i = 0; i < req->n_headers; i++)
        if (str_ieq_cstr(req->headers[i].name, kv->name) && str_eq(req->headers[i].value, value))
            return true;
    return false;
}

static bool route_accepts(const struct conf_route *r, const struct http_msg *req, struct str path)
{
    if (r->host && !route_host_matches(r->host, req->host))
        return false;
    if (!route_path_matches(r, path))
        return false;
    if (!route_method_matches(r, req->method))
        return false;
    for (size_t i = 0; i < r->n_match_headers; i++)
        if (!route_header_present(req, &r->match_headers[i]))
            return false;
    return true;
}

const struct conf_route *route_match(const struct config *cfg, const struct http_msg *req)
{
    struct str path = req->path;
    const char *q = path.n ? memchr(path.p, '?', path.n) : NULL;
    if (q)
        path.n = (size_t)(q - path.p);
    for (size_t i = 0; i < cfg->n_routes; i++)
        if (route_accepts(&cfg->routes[i], req, path))
            return &cfg->routes[i];
    return NULL;
}

/* ---- actions ---- */

/* Bounded output: appends and remembers overflow, so callers check once at the end. */
struct route_out {
    char *p;
    size_t cap, n;
    bool overflow;
};

static void route_put(struct route_out *o, const char *s, size_t n)
{
    if (o->overflow || n >= o->cap - o->n) { /* keep one byte for the NUL */
        o->overflow = true;
        return;
    }
    if (n)
        memcpy(o->p + o->n, s, n);
    o->n += n;
    o->p[o->n] = '\0';
}

static int route_out_done(const struct route_out *o)
{
    return o->overflow || o->n > (size_t)INT32_MAX ? -1 : (int)o->n;
}

/* OUT is NUL-terminated, so CAP must hold the result and one more byte.
 * The prefix is removed only on a segment boundary: "/v1" strips "/v1", "/v1/x" and "/v1?q" but
 * not "/v10" (a different resource); a prefix ending in '/' keeps the slash in the result. */
int route_upstream_path(const struct conf_route *route, struct str req_path, char *out, size_t cap)
{
    struct route_out o = { out, cap, 0, cap == 0 };
    if (cap)
        out[0] = '\0';
    struct str rest = req_path;
    const char *pre = route ? route->strip_prefix : NULL;
    size_t pn = pre ? strlen(pre) : 0;
    if (pn && str_has_prefix(req_path, str_make(pre, pn))) {
        struct str tail = str_make(req_path.p + pn, req_path.n - pn);
        bool boundary = pre[pn - 1] == '/' || tail.n == 0 || tail.p[0] == '/' || tail.p[0] == '?';
        if (boundary)
            rest = tail;
    }
    if (rest.n == 0 || rest.p[0] != '/')
        route_put(&o, "/", 1);
    route_put(&o, rest.p, rest.n);
    return route_out_done(&o);
}

static size_t route_ident_len(const char *s)
{
    size_t n = 0;
    while ((s[n] >= 'a' && s[n] <= 'z') || (s[n] >= 'A' && s[n] <= 'Z') ||
           (s[n] >= '0' && s[n] <= '9') || s[n] == '_')
        n++;
    return n;
}

/* OUT is NUL-terminated. A variable name is the longest identifier after '$', so "$hostname"
 * is not "$host" + "name"; unknown variables are copied literally. */
int route_redirect_location(const struct conf_route *route, struct str host, struct str request_uri,
                            const char *scheme, char *out, size_t cap)
{
    struct route_out o = { out, cap, 0, cap == 0 };
    if (cap)
        out[0] = '\0';
    const char *s = route && route->redirect_location ? route->redirect_location : "";
    while (*s) {
        const char *dollar = strchr(s, '$');
        size_t lit = dollar ? (size_t)(dollar - s) : strlen(s);
        route_put(&o, s, lit);
        s += lit;
        if (!dollar)
            break;
        size_t id = route_ident_len(s + 1);
        struct str name = str_make(s + 1, id);
        if (str_eq(name, STR_LIT("host")))
            route_put(&o, host.p, host.n);
        else if (str_eq(name, STR_LIT("request_uri")))
            route_put(&o, request_uri.p, request_uri.n);
        else if (str_eq(name, STR_LIT("scheme")))
            route_put(&o, scheme ? scheme : "", scheme ? strlen(scheme) : 0);
        else
            route_put(&o, s, id + 1);
        s += id + 1;
    }
    return route_out_done(&o);
}
