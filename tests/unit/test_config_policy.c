/* Unit tests of the protection part of the config schema: allow/deny, trusted_proxies,
 * proxy_protocol, rate_limits and redis, auth, waf, security_headers, server_header — values,
 * defaults, errors with their FILE:LINE:COL, and the JSON round trip. */
#include <arpa/inet.h>
#include <stdbool.h>
#include <stdlib.h>

#include "conf/config.h"
#include "unit.h"

#define LISTEN "listeners: [{name: web, address: \"127.0.0.1:8080\"}]\n"
#define ROUTE(x) "routes:\n  - { match: { path_prefix: / }, respond: { status: 200 }, " x " }\n"

static struct config *load(const char *yaml, struct conf_errors *errs)
{
    return config_load_buffer("t.yaml", yaml, strlen(yaml), errs);
}

/* Loads YAML, which must fail with exactly MSG among its errors. */
static bool fails_with(const char *yaml, const char *msg)
{
    struct conf_errors errs = { 0 };
    struct config *cfg = load(yaml, &errs);
    bool ok = cfg == NULL;
    bool found = false;
    for (size_t i = 0; i < errs.n; i++)
        found = found || strcmp(errs.msgs[i], msg) == 0;
    if (!ok || !found) {
        fprintf(stderr, "  expected error: %s\n", msg);
        for (size_t i = 0; i < errs.n; i++)
            fprintf(stderr, "  got:            %s\n", errs.msgs[i]);
    }
    config_unref(cfg);
    conf_errors_free(&errs);
    return ok && found;
}

static struct config *loads(const char *yaml)
{
    struct conf_errors errs = { 0 };
    struct config *cfg = load(yaml, &errs);
    for (size_t i = 0; i < errs.n; i++)
        fprintf(stderr, "  unexpected: %s\n", errs.msgs[i]);
    conf_errors_free(&errs);
    return cfg;
}

static bool v4_in(const struct conf_cidr *c, const char *ip)
{
    uint8_t a[4];
    inet_pton(AF_INET, ip, a);
    return conf_cidr_contains(c, AF_INET, a);
}

UNIT_TEST(defaults_hide_the_backend_and_trust_nobody)
{
    struct config *cfg = loads(LISTEN ROUTE(""));
    CHECK(cfg != NULL);
    if (!cfg)
        return;
    CHECK_EQ_INT(cfg->server_header, SERVER_HEADER_NAME);
    CHECK_EQ_INT(cfg->n_trusted_proxies, 0);
    CHECK(strcmp(cfg->real_ip_header, "X-Forwarded-For") == 0);
    CHECK_EQ_INT(cfg->limits.shed_connections, 1024);
    CHECK(cfg->redis.fail_open);
    CHECK_EQ_INT(cfg->redis.timeout_ms, 50);
    CHECK_EQ_INT(cfg->routes[0].acl.n, 0);
    CHECK_EQ_INT(cfg->routes[0].auth.kind, AUTH_NONE);
    CHECK_EQ_INT(cfg->routes[0].waf.mode, WAF_OFF);
    config_unref(cfg);
}

UNIT_TEST(acl_rules_keep_file_order_and_all_means_both_families)
{
    struct config *cfg = loads(LISTEN ROUTE("deny: [10.1.0.0/16], allow: [10.0.0.0/8, \"2001:db8::/32\"]"));
    CHECK(cfg != NULL);
    if (!cfg)
        return;
    const struct conf_acl *acl = &cfg->routes[0].acl;
    CHECK_EQ_INT(acl->n, 3);
    CHECK(!acl->rules[0].allow);
    CHECK(acl->rules[1].allow);
    CHECK(v4_in(&acl->rules[0].cidr, "10.1.2.3"));
    CHECK(!v4_in(&acl->rules[0].cidr, "10.2.0.1"));
    CHECK_EQ_INT(acl->rules[2].cidr.family, AF_INET6);
    config_unref(cfg);
    cfg = loads(LISTEN ROUTE("deny: all"));
    CHECK(cfg != NULL);
    if (cfg) {
        CHECK_EQ_INT(cfg->routes[0].acl.n, 2);
        config_unref(cfg);
    }
}

UNIT_TEST(bad_ranges_are_reported_where_they_are)
{
    CHECK(fails_with(LISTEN ROUTE("allow: [10.0.0.0/33]"),
                     "t.yaml:3:68: invalid address range \"10.0.0.0/33\" in allow (expected e.g. "
                     "10.0.0.0/8, 192.0.2.7 or 2001:db8::/32, or all)"));
    CHECK(fails_with(LISTEN "trusted_proxies: [all]\n" ROUTE(""),
                     "t.yaml:2:19: invalid address range \"all\" in trusted_proxies (expected e.g. "
                     "10.0.0.0/8, 192.0.2.7 or 2001:db8::/32)"));
}

UNIT_TEST(proxy_protocol_needs_trusted_proxies)
{
    CHECK(fails_with("listeners: [{name: lb, address: \"127.0.0.1:8080\", proxy_protocol: true}]\n" ROUTE(""),
                     "t.yaml:1:13: listener \"lb\" has proxy_protocol but trusted_proxies is empty "
                     "(list the load balancers allowed to send PROXY headers)"));
    struct config *cfg = loads("listeners: [{name: lb, address: \"127.0.0.1:8080\", proxy_protocol: true, "
                               "max_connections_per_ip: 5}]\ntrusted_proxies: [127.0.0.1]\n" ROUTE(""));
    CHECK(cfg != NULL);
    if (cfg) {
        CHECK(cfg->listeners[0].proxy_protocol);
        CHECK_EQ_INT(cfg->listeners[0].max_connections_per_ip, 5);
        CHECK(v4_in(&cfg->trusted_proxies[0], "127.0.0.1"));
        config_unref(cfg);
    }
}

UNIT_TEST(rate_limits_parse_rates_keys_and_references)
{
    struct config *cfg = loads(LISTEN "rate_limits: { api: { rate: 5/10s, burst: 7, key: [client_ip, "
                               "\"header:X-Api-Key\"] }, slow: { rate: 600/m } }\n" ROUTE("rate_limit: [api, slow]"));
    CHECK(cfg != NULL);
    if (!cfg)
        return;
    const struct conf_rate_limit *api = &cfg->rate_limits[0], *slow = &cfg->rate_limits[1];
    CHECK_EQ_INT(api->rate, 5);
    CHECK_EQ_INT(api->per_ms, 10000);
    CHECK_EQ_INT(api->burst, 7);
    CHECK_EQ_INT(api->n_key, 2);
    CHECK_EQ_INT(api->key[1].kind, RATE_KEY_HEADER);
    CHECK(strcmp(api->key[1].header, "X-Api-Key") == 0);
    CHECK_EQ_INT(slow->per_ms, 60000);
    CHECK_EQ_INT(slow->burst, 600); /* defaults to the rate */
    CHECK_EQ_INT(slow->n_key, 1);
    CHECK_EQ_INT(slow->key[0].kind, RATE_KEY_CLIENT_IP);
    CHECK_EQ_INT(cfg->routes[0].n_rate_limits, 2);
    CHECK(cfg->routes[0].rate_limits[1] == slow);
    config_unref(cfg);
    CHECK(fails_with(LISTEN ROUTE("rate_limit: nope"),
                     "t.yaml:3:72: unknown rate limit \"nope\" (define it under rate_limits)"));
    CHECK(fails_with(LISTEN "rate_limits: { a: { rate: fast } }\n" ROUTE(""),
                     "t.yaml:2:27: invalid rate \"fast\" (expected REQUESTS/PERIOD, e.g. 10/s, 600/m, "
                     "1000/h or 5/10s)"));
    CHECK(fails_with(LISTEN "rate_limits: { a: { rate: 1/s, cluster: true } }\n" ROUTE(""),
                     "t.yaml:2:19: rate limit \"a\" is cluster-wide but no redis is configured (add "
                     "redis: { address: HOST:PORT })"));
}

UNIT_TEST(auth_takes_exactly_one_method)
{
    struct config *cfg = loads(LISTEN ROUTE("auth: { jwt: { jwks_file: /k.json, issuer: me, "
                               "claims: { sub: X-User } } }"));
    CHECK(cfg != NULL);
    if (cfg) {
        const struct conf_auth *a = &cfg->routes[0].auth;
        CHECK_EQ_INT(a->kind, AUTH_JWT);
        CHECK(strcmp(a->jwks_file, "/k.json") == 0);
        CHECK_EQ_INT(a->leeway_ms, 30000);
        CHECK_EQ_INT(a->n_claims, 1);
        CHECK(strcmp(a->claims[0].value, "X-User") == 0);
        config_unref(cfg);
    }
    CHECK(fails_with(LISTEN ROUTE("auth: { jwt: { algorithms: [none] , key_file: k } }"),
                     "t.yaml:3:88: unsupported JWT algorithm \"none\" (expected HS256, RS256 or ES256)"));
    CHECK(fails_with(LISTEN ROUTE("auth: { jwt: { issuer: me } }"),
                     "t.yaml:3:73: jwt needs exactly one of key_file and jwks_file"));
    CHECK(fails_with(LISTEN ROUTE("auth: { basic: { users_file: u }, jwt: { key_file: k } }"),
                     "t.yaml:3:66: auth needs exactly one of basic, jwt, forward"));
    CHECK(fails_with(LISTEN ROUTE("auth: { ldap: {} }"),
                     "t.yaml:3:68: unknown key \"ldap\" in auth (expected one of: basic, jwt, forward)"));
}

UNIT_TEST(waf_and_security_headers)
{
    struct config *cfg = loads(LISTEN "server_header: off\n" ROUTE("waf: { paranoia: 2 }, security_headers: "
                               "{ hsts: \"max-age=600\", frame_options: DENY }"));
    CHECK(cfg != NULL);
    if (!cfg)
        return;
    const struct conf_route *r = &cfg->routes[0];
    CHECK_EQ_INT(r->waf.mode, WAF_BLOCK);
    CHECK_EQ_INT(r->waf.paranoia, 2);
    CHECK_EQ_INT(r->waf.body_limit, 128 * 1024);
    CHECK_EQ_INT(r->n_security_headers, 2);
    CHECK(strcmp(r->security_headers[0].name, "Strict-Transport-Security") == 0);
    CHECK(strcmp(r->security_headers[1].value, "DENY") == 0);
    CHECK_EQ_INT(cfg->server_header, SERVER_HEADER_OFF);
    config_unref(cfg);
    CHECK(fails_with(LISTEN ROUTE("waf: { paranoia: 5 }"),
                     "t.yaml:3:77: paranoia \"5\" is out of range (1 to 4)"));
    CHECK(fails_with(LISTEN ROUTE("security_headers: { xss: 1 }"),
                     "t.yaml:3:80: unknown key \"xss\" in security_headers (expected one of: hsts, "
                     "content_type_options, frame_options, referrer_policy, csp, permissions_policy)"));
}

/* Everything written back as JSON loads into the same settings. */
UNIT_TEST(json_round_trip_keeps_protection)
{
    struct config *cfg = loads(LISTEN "trusted_proxies: [10.0.0.0/8]\nserver_header: \"edge\"\n"
                               "redis: { address: \"127.0.0.1:6379\", on_error: closed }\n"
                               "rate_limits: { api: { rate: 10/s, cluster: true, key: [route] } }\n"
                               ROUTE("deny: [10.9.0.0/16], allow: [all], rate_limit: api, "
                                     "auth: { forward: { address: \"127.0.0.1:9\", response_headers: [X-User] } }, "
                                     "waf: { mode: detect }, security_headers: { csp: \"default-src 'self'\" }"));
    CHECK(cfg != NULL);
    if (!cfg)
        return;
    char *json = config_to_json(cfg);
    struct config *again = loads(json);
    CHECK(again != NULL);
    if (again) {
        char *json2 = config_to_json(again);
        CHECK(strcmp(json, json2) == 0);
        CHECK(!again->redis.fail_open);
        CHECK_EQ_INT(again->server_header, SERVER_HEADER_CUSTOM);
        CHECK(!again->routes[0].acl.rules[0].allow);
        CHECK_EQ_INT(again->routes[0].auth.kind, AUTH_FORWARD);
        CHECK_EQ_INT(again->routes[0].waf.mode, WAF_DETECT);
        free(json2);
        config_unref(again);
    }
    free(json);
    config_unref(cfg);
}

UNIT_MAIN()
