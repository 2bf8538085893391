/* Unit tests of the TLS and HTTP/2 part of the config schema: listener tls / http2 /
 * redirect_https and upstream tls / protocol — values, defaults, errors with their
 * FILE:LINE:COL, and the JSON round trip. */
#include <stdbool.h>
#include <stdlib.h>

#include "conf/config.h"
#include "unit.h"

#define ROUTE "routes: [ { match: { path_prefix: / }, respond: { status: 200 } } ]\n"
#define TLS_LISTEN(x) "listeners:\n  - name: web\n    address: \"127.0.0.1:8443\"\n" \
                      "    tls: { certificates: [ { cert: /c/a.pem, key: /c/a.key } ]" x " }\n"
#define UPSTREAM(x) "upstreams:\n  app:\n    servers: [ { address: \"127.0.0.1:9443\" } ]\n" x
#define PLAIN "listeners: [{name: web, address: \"127.0.0.1:8080\"}]\n"

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

UNIT_TEST(tls_defaults)
{
    struct config *cfg = loads(TLS_LISTEN("") ROUTE);
    CHECK(cfg != NULL);
    if (!cfg)
        return;
    const struct conf_listener_tls *t = &cfg->listeners[0].tls;
    CHECK(t->enabled);
    CHECK_EQ_INT(t->n_certificates, 1);
    CHECK(strcmp(t->certificates[0].cert, "/c/a.pem") == 0);
    CHECK(strcmp(t->certificates[0].key, "/c/a.key") == 0);
    CHECK(t->certificates[0].ocsp == NULL);
    CHECK_EQ_INT(t->n_alpn, 2);
    CHECK(strcmp(t->alpn[0], "h2") == 0 && strcmp(t->alpn[1], "http/1.1") == 0);
    CHECK_EQ_INT(t->min_version, TLS_VERSION_1_2);
    CHECK(t->ciphers == NULL && t->ciphersuites == NULL);
    CHECK(t->session_tickets);
    CHECK_EQ_INT(t->ticket_rotation_ms, 12 * 3600 * 1000);
    CHECK_EQ_INT(t->client_auth, TLS_CLIENT_AUTH_OFF);
    CHECK(strcmp(t->client_subject_header, "X-Client-Cert-Subject") == 0);
    CHECK_EQ_INT(t->hsts_max_age_s, 0);
    const struct conf_listener_http2 *h = &cfg->listeners[0].http2;
    CHECK(h->enabled);
    CHECK_EQ_INT(h->max_concurrent_streams, 128);
    CHECK_EQ_INT(h->initial_window, 256 * 1024);
    CHECK_EQ_INT(h->max_resets, 200);
    CHECK_EQ_INT(h->max_control_frames, 1000);
    CHECK_EQ_INT(h->flood_window_ms, 10000);
    CHECK_EQ_INT(cfg->listeners[0].redirect_https, 0);
    config_unref(cfg);
}

UNIT_TEST(plain_listener_and_upstream_defaults)
{
    struct config *cfg = loads(PLAIN UPSTREAM("") ROUTE);
    CHECK(cfg != NULL);
    if (!cfg)
        return;
    CHECK(!cfg->listeners[0].tls.enabled);
    CHECK(cfg->listeners[0].http2.enabled); /* h2c by prior knowledge */
    CHECK_EQ_INT(cfg->upstreams[0].protocol, UPSTREAM_HTTP1);
    CHECK(!cfg->upstreams[0].tls.enabled);
    config_unref(cfg);
}

UNIT_TEST(tls_full_listener)
{
    struct config *cfg = loads(
        "listeners:\n"
        "  - name: web\n"
        "    address: \"127.0.0.1:8443\"\n"
        "    tls:\n"
        "      certificates:\n"
        "        - { cert: /c/rsa.pem, key: /c/rsa.key, ocsp: /c/a.der }\n"
        "        - { cert: /c/ec.pem, key: /c/ec.key }\n"
        "      alpn: [http/1.1]\n"
        "      min_version: 1.3\n"
        "      ciphers: \"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256\"\n"
        "      ciphersuites: TLS_AES_128_GCM_SHA256\n"
        "      session_tickets: false\n"
        "      ticket_rotation: 1h\n"
        "      client_auth: { mode: required, ca: /c/ca.pem, header: X-Subject }\n"
        "      hsts: { max_age: 365d, include_subdomains: true, preload: true }\n"
        "    http2: { enabled: false, max_concurrent_streams: 10, initial_window: 64KiB,\n"
        "             max_resets: 5, max_control_frames: 7, flood_window: 2s }\n"
        "  - name: plain\n"
        "    address: \"127.0.0.1:8080\"\n"
        "    redirect_https: 8443\n"
        "    http2: false\n" ROUTE);
    CHECK(cfg != NULL);
    if (!cfg)
        return;
    const struct conf_listener_tls *t = &cfg->listeners[0].tls;
    CHECK_EQ_INT(t->n_certificates, 2);
    CHECK(strcmp(t->certificates[0].ocsp, "/c/a.der") == 0);
    CHECK(strcmp(t->certificates[1].cert, "/c/ec.pem") == 0);
    CHECK_EQ_INT(t->n_alpn, 1);
    CHECK(strcmp(t->alpn[0], "http/1.1") == 0);
    CHECK_EQ_INT(t->min_version, TLS_VERSION_1_3);
    CHECK(strcmp(t->ciphersuites, "TLS_AES_128_GCM_SHA256") == 0);
    CHECK(!t->session_tickets);
    CHECK_EQ_INT(t->ticket_rotation_ms, 3600000);
    CHECK_EQ_INT(t->client_auth, TLS_CLIENT_AUTH_REQUIRED);
    CHECK(strcmp(t->client_ca, "/c/ca.pem") == 0);
    CHECK(strcmp(t->client_subject_header, "X-Subject") == 0);
    CHECK_EQ_INT(t->hsts_max_age_s, 365 * 86400);
    CHECK(t->hsts_include_subdomains && t->hsts_preload);
    const struct conf_listener_http2 *h = &cfg->listeners[0].http2;
    CHECK(!h->enabled);
    CHECK_EQ_INT(h->max_concurrent_streams, 10);
    CHECK_EQ_INT(h->initial_window, 65536);
    CHECK_EQ_INT(h->max_resets, 5);
    CHECK_EQ_INT(h->max_control_frames, 7);
    CHECK_EQ_INT(h->flood_window_ms, 2000);
    CHECK(!cfg->listeners[1].tls.enabled);
    CHECK_EQ_INT(cfg->listeners[1].redirect_https, 8443);
    CHECK(!cfg->listeners[1].http2.enabled);
    CHECK_EQ_INT(cfg->listeners[1].http2.max_concurrent_streams, 128);
    config_unref(cfg);
}

UNIT_TEST(redirect_https_forms)
{
    struct config *cfg = loads("listeners: [{name: p, address: \"127.0.0.1:8080\", "
                               "redirect_https: true}]\n" ROUTE);
    CHECK(cfg && cfg->listeners[0].redirect_https == 443);
    config_unref(cfg);
    cfg = loads("listeners: [{name: p, address: \"127.0.0.1:8080\", redirect_https: false}]\n" ROUTE);
    CHECK(cfg && cfg->listeners[0].redirect_https == 0);
    config_unref(cfg);
    CHECK(fails_with("listeners: [{name: p, address: \"127.0.0.1:8080\", redirect_https: 70000}]\n"
                     ROUTE, "t.yaml:1:66: redirect_https \"70000\" is out of range (1 to 65535)"));
    CHECK(fails_with("listeners: [{name: p, address: \"127.0.0.1:8080\", redirect_https: maybe}]\n"
                     ROUTE, "t.yaml:1:66: expected true, false or a port number for "
                            "redirect_https, got \"maybe\""));
    CHECK(fails_with("listeners:\n  - name: web\n    address: \"127.0.0.1:8443\"\n"
                     "    redirect_https: true\n"
                     "    tls: { certificates: [ { cert: /a, key: /b } ] }\n" ROUTE,
                     "t.yaml:4:21: listener \"web\" has both tls and redirect_https "
                     "(redirect_https is for a plain listener)"));
}

UNIT_TEST(tls_certificates_are_required)
{
    CHECK(fails_with("listeners: [{name: web, address: \"127.0.0.1:8443\", tls: {}}]\n" ROUTE,
                     "t.yaml:1:57: missing required key \"certificates\" in tls"));
    CHECK(fails_with("listeners: [{name: web, address: \"127.0.0.1:8443\", tls: "
                     "{certificates: []}}]\n" ROUTE,
                     "t.yaml:1:72: certificates must list at least one { cert, key }"));
    CHECK(fails_with("listeners: [{name: web, address: \"127.0.0.1:8443\", tls: "
                     "{certificates: [{cert: /a}]}}]\n" ROUTE,
                     "t.yaml:1:73: missing required key \"key\" in certificate"));
    CHECK(fails_with("listeners: [{name: web, address: \"127.0.0.1:8443\", tls: "
                     "{certificates: [{cert: \"\", key: /k}]}}]\n" ROUTE,
                     "t.yaml:1:80: invalid cert \"\": must not be empty"));
    CHECK(fails_with("listeners: [{name: web, address: \"127.0.0.1:8443\", tls: true}]\n" ROUTE,
                     "t.yaml:1:57: expected a mapping with certificates for tls, got \"true\""));
    struct config *cfg = loads("listeners: [{name: web, address: \"127.0.0.1:8443\", tls: false}]\n"
                               ROUTE);
    CHECK(cfg && !cfg->listeners[0].tls.enabled);
    config_unref(cfg);
}

UNIT_TEST(tls_listener_values_are_checked)
{
    CHECK(fails_with(TLS_LISTEN(", alpn: [h2, h3]") ROUTE,
                     "t.yaml:4:76: invalid ALPN protocol \"h3\" (expected h2 or http/1.1)"));
    CHECK(fails_with(TLS_LISTEN(", alpn: [h2, h2]") ROUTE,
                     "t.yaml:4:76: duplicate ALPN protocol \"h2\""));
    CHECK(fails_with(TLS_LISTEN(", alpn: []") ROUTE,
                     "t.yaml:4:71: alpn must list at least one protocol (h2, http/1.1)"));
    CHECK(fails_with(TLS_LISTEN(", min_version: 1.1") ROUTE,
                     "t.yaml:4:78: invalid value \"1.1\" for min_version (expected one of: 1.2, "
                     "1.3)"));
    CHECK(fails_with(TLS_LISTEN(", ticket_rotation: soon") ROUTE,
                     "t.yaml:4:82: expected a duration (e.g. 500ms, 2s, 5m, 1h, 1d) for "
                     "ticket_rotation, got \"soon\""));
    CHECK(fails_with(TLS_LISTEN(", ciphers: \"A B\"") ROUTE,
                     "t.yaml:4:74: invalid ciphers \"A B\": may hold only visible ASCII "
                     "characters (no spaces)"));
    CHECK(fails_with(TLS_LISTEN(", client_auth: { mode: optional }") ROUTE,
                     "t.yaml:4:78: client_auth mode optional needs ca (the PEM bundle that "
                     "verifies client certificates)"));
    CHECK(fails_with(TLS_LISTEN(", client_auth: { mode: sometimes, ca: /ca }") ROUTE,
                     "t.yaml:4:86: invalid value \"sometimes\" for mode (expected one of: off, "
                     "optional, required)"));
    CHECK(fails_with(TLS_LISTEN(", client_auth: { mode: required, ca: /ca, header: \"X Y\" }")
                     ROUTE, "t.yaml:4:113: invalid header \"X Y\": must be a header name (a "
                            "token)"));
    CHECK(fails_with(TLS_LISTEN(", client_auth: { ca: /ca }") ROUTE,
                     "t.yaml:4:78: missing required key \"mode\" in client_auth"));
    CHECK(fails_with(TLS_LISTEN(", hsts: { max_age: 1d, preload: true }") ROUTE,
                     "t.yaml:4:71: hsts preload needs include_subdomains: true and max_age of at "
                     "least 365d"));
    CHECK(fails_with(TLS_LISTEN(", bogus: 1") ROUTE, "t.yaml:4:65: unknown key \"bogus\" in tls"));
    struct config *cfg = loads(TLS_LISTEN(", client_auth: { mode: off }") ROUTE);
    CHECK(cfg && cfg->listeners[0].tls.client_auth == TLS_CLIENT_AUTH_OFF);
    config_unref(cfg);
}

UNIT_TEST(http2_values_are_checked)
{
    CHECK(fails_with("listeners: [{name: p, address: \"127.0.0.1:8080\", http2: "
                     "{max_concurrent_streams: 0}}]\n" ROUTE,
                     "t.yaml:1:82: max_concurrent_streams \"0\" is out of range (1 to 1000000)"));
    CHECK(fails_with("listeners: [{name: p, address: \"127.0.0.1:8080\", http2: "
                     "{initial_window: 4GiB}}]\n" ROUTE,
                     "t.yaml:1:74: initial_window \"4GiB\" is out of range (1 to 2147483647 "
                     "bytes)"));
    CHECK(fails_with("listeners: [{name: p, address: \"127.0.0.1:8080\", http2: {streams: 1}}]\n"
                     ROUTE, "t.yaml:1:58: unknown key \"streams\" in http2"));
}

UNIT_TEST(upstream_tls_forms)
{
    struct config *cfg = loads(PLAIN UPSTREAM("    tls: true\n    protocol: h2\n") ROUTE);
    CHECK(cfg != NULL);
    if (cfg) {
        const struct conf_upstream *up = &cfg->upstreams[0];
        CHECK(up->tls.enabled && up->tls.verify);
        CHECK(up->tls.ca == NULL && up->tls.sni == NULL && up->tls.client_cert == NULL);
        CHECK_EQ_INT(up->protocol, UPSTREAM_HTTP2);
        config_unref(cfg);
    }
    cfg = loads(PLAIN UPSTREAM("    tls: { ca: /c/ca.pem, sni: Backend.Test, client_cert: /c/c.pem, "
                               "client_key: /c/c.key }\n") ROUTE);
    CHECK(cfg != NULL);
    if (cfg) {
        const struct conf_upstream_tls *t = &cfg->upstreams[0].tls;
        CHECK(t->enabled && t->verify);
        CHECK(strcmp(t->ca, "/c/ca.pem") == 0);
        CHECK(strcmp(t->sni, "backend.test") == 0);
        CHECK(strcmp(t->client_cert, "/c/c.pem") == 0 && strcmp(t->client_key, "/c/c.key") == 0);
        CHECK_EQ_INT(cfg->upstreams[0].protocol, UPSTREAM_HTTP1);
        config_unref(cfg);
    }
    cfg = loads(PLAIN UPSTREAM("    tls: { verify: false }\n") ROUTE);
    CHECK(cfg && cfg->upstreams[0].tls.enabled && !cfg->upstreams[0].tls.verify);
    config_unref(cfg);
    cfg = loads(PLAIN UPSTREAM("    tls: false\n") ROUTE);
    CHECK(cfg && !cfg->upstreams[0].tls.enabled);
    config_unref(cfg);
}

UNIT_TEST(upstream_tls_values_are_checked)
{
    CHECK(fails_with(PLAIN UPSTREAM("    tls: { client_cert: /c/c.pem }\n") ROUTE,
                     "t.yaml:5:10: tls needs both client_cert and client_key, or neither"));
    CHECK(fails_with(PLAIN UPSTREAM("    tls: { client_key: /c/c.key }\n") ROUTE,
                     "t.yaml:5:10: tls needs both client_cert and client_key, or neither"));
    CHECK(fails_with(PLAIN UPSTREAM("    tls: { sni: \"a b\" }\n") ROUTE,
                     "t.yaml:5:17: invalid sni \"a b\": must be a DNS name (letters, digits, '-' "
                     "and '.')"));
    CHECK(fails_with(PLAIN UPSTREAM("    protocol: h3\n") ROUTE,
                     "t.yaml:5:15: invalid value \"h3\" for protocol (expected one of: h1, h2)"));
    CHECK(fails_with(PLAIN UPSTREAM("    tls: maybe\n") ROUTE,
                     "t.yaml:5:10: expected a mapping for tls, got \"maybe\""));
}

/* Dumps CFG, loads the JSON and dumps again: both texts must be equal. */
static struct config *round_trip(int *unit_failed, const struct config *cfg, char **json_out)
{
    char *json = config_to_json(cfg);
    CHECK(json != NULL);
    if (!json)
        return NULL;
    struct config *again = loads(json);
    CHECK(again != NULL);
    char *json2 = again ? config_to_json(again) : NULL;
    CHECK(json2 && strcmp(json, json2) == 0);
    if (json2 && strcmp(json, json2) != 0)
        fprintf(stderr, "  first dump:\n%s\n  second dump:\n%s\n", json, json2);
    free(json2);
    *json_out = json;
    return again;
}

UNIT_TEST(json_round_trip_keeps_tls)
{
    struct config *cfg = loads(
        "listeners:\n"
        "  - name: web\n"
        "    address: \"127.0.0.1:8443\"\n"
        "    tls:\n"
        "      certificates: [ { cert: /c/rsa.pem, key: /c/rsa.key, ocsp: /c/a.der } ]\n"
        "      alpn: [http/1.1, h2]\n"
        "      ciphersuites: TLS_AES_256_GCM_SHA384\n"
        "      ticket_rotation: 90m\n"
        "      client_auth: { mode: optional, ca: /c/ca.pem }\n"
        "      hsts: { max_age: 30d }\n"
        "    http2: { max_resets: 9 }\n"
        "  - name: plain\n"
        "    address: \"127.0.0.1:8080\"\n"
        "    redirect_https: 8443\n"
        UPSTREAM("    protocol: h2\n    tls: { sni: b.test, client_cert: /c.pem, client_key: /c.key }\n")
        "  other:\n    servers: [ { address: \"127.0.0.1:9000\" } ]\n" ROUTE);
    CHECK(cfg != NULL);
    if (!cfg)
        return;
    char *j = NULL;
    struct config *again = round_trip(unit_failed, cfg, &j);
    if (again) {
        const struct conf_listener_tls *t = &again->listeners[0].tls;
        CHECK(t->enabled && t->n_certificates == 1 && t->n_alpn == 2);
        CHECK(strcmp(t->alpn[0], "http/1.1") == 0);
        CHECK_EQ_INT(t->ticket_rotation_ms, 90 * 60000);
        CHECK_EQ_INT(t->client_auth, TLS_CLIENT_AUTH_OPTIONAL);
        CHECK_EQ_INT(t->hsts_max_age_s, 30 * 86400);
        CHECK_EQ_INT(again->listeners[0].http2.max_resets, 9);
        CHECK_EQ_INT(again->listeners[1].redirect_https, 8443);
        CHECK(!again->listeners[1].tls.enabled);
        CHECK(again->upstreams[0].tls.enabled && again->upstreams[0].protocol == UPSTREAM_HTTP2);
        CHECK(!again->upstreams[1].tls.enabled);
    }
    CHECK(j && strstr(j, "\"ticket_rotation\": \"90m\"") != NULL);
    CHECK(j && strstr(j, "\"max_age\": \"30d\"") != NULL);
    CHECK(j && strstr(j, "\"redirect_https\": 8443") != NULL);
    CHECK(j && strstr(j, "\"protocol\": \"h2\"") != NULL);
    CHECK(j && strstr(j, "\"protocol\": \"h1\"") != NULL);
    CHECK(j && strstr(j, "\"initial_window\": 262144") != NULL);
    CHECK(j && strstr(j, "\"min_version\": \"1.2\"") != NULL);
    free(j);
    config_unref(again);
    config_unref(cfg);
}

UNIT_MAIN();
