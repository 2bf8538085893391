/* Unit tests of src/proxy/route.c: routes are built by hand, regexes compiled here. */
#include <pthread.h>

#include "proxy/route.h"
#include "unit.h"

#define T_MAX_ROUTES 8

struct t_cfg {
    struct config cfg;
    struct conf_route routes[T_MAX_ROUTES];
};

static struct conf_route *t_add(struct t_cfg *t, const char *name)
{
    struct conf_route *r = &t->routes[t->cfg.n_routes];
    memset(r, 0, sizeof *r);
    r->index = t->cfg.n_routes++;
    r->name = (char *)name;
    r->action = ROUTE_RESPOND;
    r->respond_status = 200;
    return r;
}

static void t_init(struct t_cfg *t)
{
    memset(t, 0, sizeof *t);
    t->cfg.routes = t->routes;
}

static pcre2_code *t_regex(const char *pattern)
{
    int err;
    PCRE2_SIZE off;
    return pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, 0, &err, &off, NULL);
}

static void t_free(struct t_cfg *t)
{
    for (size_t i = 0; i < t->cfg.n_routes; i++)
        pcre2_code_free(t->routes[i].regex);
}

static struct http_msg t_req(const char *method, const char *host, const char *path,
                             struct http_header *hdrs, uint32_t n)
{
    struct http_msg m;
    memset(&m, 0, sizeof m);
    m.method = str_make(method, strlen(method));
    m.host = str_make(host, strlen(host));
    m.path = str_make(path, strlen(path));
    m.target = m.path;
    m.headers = hdrs;
    m.n_headers = n;
    m.max_headers = n;
    return m;
}

/* Name of the route REQ matches, or "-" for none. */
static const char *t_match(const struct t_cfg *t, const char *method, const char *host,
                           const char *path)
{
    struct http_msg m = t_req(method, host, path, NULL, 0);
    const struct conf_route *r = route_match(&t->cfg, &m);
    return r ? r->name : "-";
}

#define CHECK_ROUTE(t, method, host, path, want) \
    CHECK(strcmp(t_match(t, method, host, path), want) == 0)

UNIT_TEST(route_exact_path)
{
    struct t_cfg t;
    t_init(&t);
    t_add(&t, "exact")->path = "/old";
    CHECK_ROUTE(&t, "GET", "a", "/old", "exact");
    CHECK_ROUTE(&t, "GET", "a", "/old?x=1", "exact"); /* query ignored */
    CHECK_ROUTE(&t, "GET", "a", "/old/", "-");
    CHECK_ROUTE(&t, "GET", "a", "/olde", "-");
    CHECK_ROUTE(&t, "GET", "a", "/", "-");
}

UNIT_TEST(route_path_prefix)
{
    struct t_cfg t;
    t_init(&t);
    t_add(&t, "v1")->path_prefix = "/v1/";
    CHECK_ROUTE(&t, "GET", "a", "/v1/users", "v1");
    CHECK_ROUTE(&t, "GET", "a", "/v1/", "v1");
    CHECK_ROUTE(&t, "GET", "a", "/v1", "-");
    CHECK_ROUTE(&t, "GET", "a", "/v1?/v1/", "-"); /* the query is not part of the path */
    CHECK_ROUTE(&t, "GET", "a", "/v2/users", "-");
}

UNIT_TEST(route_path_regex)
{
    struct t_cfg t;
    t_init(&t);
    struct conf_route *r = t_add(&t, "img");
    r->path_regex = "^/img/[0-9]+\\.(png|jpg)$";
    r->regex = t_regex(r->path_regex);
    CHECK(r->regex != NULL);
    CHECK_ROUTE(&t, "GET", "a", "/img/12.png", "img");
    CHECK_ROUTE(&t, "GET", "a", "/img/12.png?size=2", "img"); /* $ sees the path only */
    CHECK_ROUTE(&t, "GET", "a", "/img/x.png", "-");
    CHECK_ROUTE(&t, "GET", "a", "/img/12.gif", "-");
    /* a route whose regex is missing never matches */
    struct conf_route *broken = t_add(&t, "broken");
    broken->path_regex = "(";
    CHECK_ROUTE(&t, "GET", "a", "/anything", "-");
    t_free(&t);
}

static void *t_regex_worker(void *arg)
{
    const struct t_cfg *t = arg;
    long bad = 0;
    for (int i = 0; i < 2000; i++) {
        char path[32];
        snprintf(path, sizeof path, "/n/%d%s", i, i % 2 ? "x" : "");
        struct http_msg m = t_req("GET", "a", path, NULL, 0);
        const struct conf_route *r = route_match(&t->cfg, &m);
        const char *want = i % 2 ? "fallback" : "digits";
        if (!r || strcmp(r->name, want) != 0)
            bad++;
    }
    return (void *)bad;
}

UNIT_TEST(route_regex_concurrent)
{
    struct t_cfg t;
    t_init(&t);
    struct conf_route *r = t_add(&t, "digits");
    r->path_regex = "^/n/(\\d+)$";
    r->regex = t_regex(r->path_regex);
    t_add(&t, "fallback")->path_prefix = "/";
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        CHECK_EQ_INT(pthread_create(&th[i], NULL, t_regex_worker, &t), 0);
    for (int i = 0; i < 4; i++) {
        void *bad;
        pthread_join(th[i], &bad);
        CHECK_EQ_INT((long)bad, 0);
    }
    t_free(&t);
}

UNIT_TEST(route_host_exact_and_port)
{
    struct t_cfg t;
    t_init(&t);
    t_add(&t, "api")->host = "api.example.com";
    t_add(&t, "v6")->host = "[::1]";
    t_add(&t, "v6bare")->host = "2001:db8::1";
    CHECK_ROUTE(&t, "GET", "api.example.com", "/", "api");
    CHECK_ROUTE(&t, "GET", "API.Example.COM", "/", "api");
    CHECK_ROUTE(&t, "GET", "api.example.com:8080", "/", "api");
    CHECK_ROUTE(&t, "GET", "api.example.com.", "/", "api");
    CHECK_ROUTE(&t, "GET", "api.example.org", "/", "-");
    CHECK_ROUTE(&t, "GET", "x.api.example.com", "/", "-");
    CHECK_ROUTE(&t, "GET", "", "/", "-");
    CHECK_ROUTE(&t, "GET", "[::1]:8080", "/", "v6");
    CHECK_ROUTE(&t, "GET", "[::1]", "/", "v6");
    CHECK_ROUTE(&t, "GET", "[2001:DB8::1]:443", "/", "v6bare");
}

UNIT_TEST(route_host_wildcard)
{
    struct t_cfg t;
    t_init(&t);
    t_add(&t, "wild")->host = "*.example.com";
    CHECK_ROUTE(&t, "GET", "a.example.com", "/", "wild");
    CHECK_ROUTE(&t, "GET", "a.b.example.com", "/", "wild");
    CHECK_ROUTE(&t, "GET", "A.EXAMPLE.com:81", "/", "wild");
    CHECK_ROUTE(&t, "GET", "example.com", "/", "-");
    CHECK_ROUTE(&t, "GET", "aexample.com", "/", "-");
    CHECK_ROUTE(&t, "GET", "a.example.com.evil", "/", "-");
}

UNIT_TEST(route_first_match_wins)
{
    struct t_cfg t;
    t_init(&t);
    t_add(&t, "first")->path_prefix = "/a";
    t_add(&t, "second")->path_prefix = "/";
    t_add(&t, "third")->path = "/a/b";
    CHECK_ROUTE(&t, "GET", "h", "/a/b", "first");
    CHECK_ROUTE(&t, "GET", "h", "/b", "second");
    struct http_msg m = t_req("GET", "h", "/a", NULL, 0);
    CHECK(route_match(&t.cfg, &m) == &t.routes[0]);
}

UNIT_TEST(route_no_routes_no_match)
{
    struct t_cfg t;
    t_init(&t);
    CHECK_ROUTE(&t, "GET", "h", "/", "-");
    t_add(&t, "any"); /* no constraint: everything */
    CHECK_ROUTE(&t, "DELETE", "", "*", "any");
}

UNIT_TEST(route_methods)
{
    struct t_cfg t;
    t_init(&t);
    struct conf_route *r = t_add(&t, "rw");
    static char *methods[] = { "GET", "POST" };
    r->methods = methods;
    r->n_methods = 2;
    CHECK_ROUTE(&t, "GET", "h", "/", "rw");
    CHECK_ROUTE(&t, "POST", "h", "/", "rw");
    CHECK_ROUTE(&t, "PUT", "h", "/", "-");
    CHECK_ROUTE(&t, "get", "h", "/", "-"); /* methods are case-sensitive */
    CHECK_ROUTE(&t, "GETX", "h", "/", "-");
}

UNIT_TEST(route_headers)
{
    struct t_cfg t;
    t_init(&t);
    struct conf_route *r = t_add(&t, "canary");
    static struct conf_header_kv want[] = { { "X-Env", "canary" }, { "X-Team", "a" } };
    r->match_headers = want;
    r->n_match_headers = 2;
    t_add(&t, "rest");

    struct http_header ok[] = { { STR_LIT("x-env"), STR_LIT("prod") },
                                { STR_LIT("X-ENV"), STR_LIT("canary") },
                                { STR_LIT("x-team"), STR_LIT("a") } };
    struct http_msg m = t_req("GET", "h", "/", ok, 3);
    CHECK(route_match(&t.cfg, &m) == &t.routes[0]); /* any instance will do */

    struct http_header wrong_case[] = { { STR_LIT("X-Env"), STR_LIT("Canary") },
                                        { STR_LIT("X-Team"), STR_LIT("a") } };
    m = t_req("GET", "h", "/", wrong_case, 2);
    CHECK(route_match(&t.cfg, &m) == &t.routes[1]); /* values are exact */

    struct http_header missing[] = { { STR_LIT("X-Env"), STR_LIT("canary") } };
    m = t_req("GET", "h", "/", missing, 1);
    CHECK(route_match(&t.cfg, &m) == &t.routes[1]);
}

UNIT_TEST(route_all_constraints_together)
{
    struct t_cfg t;
    t_init(&t);
    struct conf_route *r = t_add(&t, "api");
    static char *methods[] = { "GET" };
    r->host = "api.example.com";
    r->path_prefix = "/v1/";
    r->methods = methods;
    r->n_methods = 1;
    CHECK_ROUTE(&t, "GET", "api.example.com", "/v1/x", "api");
    CHECK_ROUTE(&t, "POST", "api.example.com", "/v1/x", "-");
    CHECK_ROUTE(&t, "GET", "www.example.com", "/v1/x", "-");
    CHECK_ROUTE(&t, "GET", "api.example.com", "/v2/x", "-");
}

/* strip_prefix result for PATH, or "<-1>" when it does not fit in CAP. */
static const char *t_strip(const char *prefix, const char *path, size_t cap, char *out)
{
    struct conf_route r;
    memset(&r, 0, sizeof r);
    r.strip_prefix = (char *)prefix;
    int n = route_upstream_path(&r, str_make(path, strlen(path)), out, cap);
    if (n < 0)
        return "<-1>";
    if ((size_t)n != strlen(out))
        return "<bad length>";
    return out;
}

#define CHECK_STRIP(prefix, path, want)                                    \
    do {                                                                   \
        char buf_[128];                                                    \
        CHECK(strcmp(t_strip(prefix, path, sizeof buf_, buf_), want) == 0); \
    } while (0)

UNIT_TEST(route_strip_prefix)
{
    CHECK_STRIP("/v1", "/v1/users?x", "/users?x");
    CHECK_STRIP("/v1", "/v1", "/");
    CHECK_STRIP("/v1", "/v1?q", "/?q");
    CHECK_STRIP("/v1", "/v1/", "/");
    CHECK_STRIP("/v1", "/v2/users", "/v2/users");
    CHECK_STRIP("/v1", "/", "/");
    CHECK_STRIP("/v1", "/v10/x", "/v10/x"); /* not on a segment boundary */
    CHECK_STRIP("/v1/", "/v1/users", "/users");
    CHECK_STRIP("/v1/", "/v1", "/v1");
    CHECK_STRIP(NULL, "/a?b", "/a?b");
    CHECK_STRIP("", "/a", "/a");
    char buf[8];
    CHECK(strcmp(t_strip("/v1", "/v1/users", 6, buf), "<-1>") == 0); /* "/users" + NUL needs 7 */
    CHECK(strcmp(t_strip("/v1", "/v1/users", 7, buf), "/users") == 0);
    CHECK(strcmp(t_strip("/v1", "/v1", 1, buf), "<-1>") == 0);
    CHECK(strcmp(t_strip("/v1", "/v1", 0, buf), "<-1>") == 0);
}

static int t_redirect(const char *loc, const char *host, const char *uri, const char *scheme,
                      char *out, size_t cap)
{
    struct conf_route r;
    memset(&r, 0, sizeof r);
    r.action = ROUTE_REDIRECT;
    r.redirect_location = (char *)loc;
    return route_redirect_location(&r, str_make(host, strlen(host)), str_make(uri, strlen(uri)),
                                   scheme, out, cap);
}

UNIT_TEST(route_redirect_expansion)
{
    char out[128];
    int n = t_redirect("https://$host/new", "a.com", "/old?x=1", "http", out, sizeof out);
    CHECK(strcmp(out, "https://a.com/new") == 0);
    CHECK_EQ_INT(n, strlen("https://a.com/new"));
    t_redirect("$scheme://$host$request_uri", "a.com:8080", "/p?q", "https", out, sizeof out);
    CHECK(strcmp(out, "https://a.com:8080/p?q") == 0);
    t_redirect("/x?a=$1&b=$hostname&c=$&d=$host", "h", "/", "http", out, sizeof out);
    CHECK(strcmp(out, "/x?a=$1&b=$hostname&c=$&d=h") == 0); /* others stay literal */
    t_redirect("$", "h", "/", "http", out, sizeof out);
    CHECK(strcmp(out, "$") == 0);
    n = t_redirect("/plain", "h", "/", "http", out, sizeof out);
    CHECK(strcmp(out, "/plain") == 0);
    CHECK_EQ_INT(n, 6);
}

UNIT_TEST(route_redirect_too_small)
{
    char out[32];
    /* "https://a.com/new" is 17 bytes and OUT is NUL-terminated */
    CHECK_EQ_INT(t_redirect("https://$host/new", "a.com", "/", "http", out, 18), 17);
    CHECK_EQ_INT(t_redirect("https://$host/new", "a.com", "/", "http", out, 17), -1);
    CHECK_EQ_INT(t_redirect("https://$host/new", "long.example.com", "/", "http", out, 16), -1);
    CHECK_EQ_INT(t_redirect("$request_uri", "h", "/0123456789abcdef", "http", out, 16), -1);
    CHECK_EQ_INT(t_redirect("x", "h", "/", "http", out, 0), -1);
}

UNIT_MAIN()
