/* Unit tests of the config loader: parsing helpers, a full config field by field, defaults,
 * JSON input, and each class of error with its exact FILE:LINE:COL. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <unistd.h>

#include "conf/config.h"
#include "conf/config_resolve.h"
#include "unit.h"

/* Enough to make a config valid; appended after the snippet under test so positions in the
 * snippet stay simple. */
#define LISTEN "listeners: [{name: web, address: \"127.0.0.1:8080\"}]\n"

/* Resolves a few fixed names so tests never touch DNS. */
static int test_resolve(const char *host, const char *port, struct sockaddr_storage *out,
                        socklen_t *out_len, char *err, size_t err_cap)
{
    memset(out, 0, sizeof *out);
    if (strcmp(host, "backend.internal") == 0) {
        struct sockaddr_in *sin = (struct sockaddr_in *)out;
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)atoi(port));
        inet_pton(AF_INET, "10.0.0.7", &sin->sin_addr);
        *out_len = sizeof *sin;
        return 0;
    }
    snprintf(err, err_cap, "Name or service not known");
    return -1;
}

static struct config *load(const char *yaml, struct conf_errors *errs)
{
    config_set_resolver(test_resolve);
    return config_load_buffer("t.yaml", yaml, strlen(yaml), errs);
}

static bool has_msg(const struct conf_errors *errs, const char *msg)
{
    for (size_t i = 0; i < errs->n; i++)
        if (strcmp(errs->msgs[i], msg) == 0)
            return true;
    return false;
}

/* Loads YAML, which must fail, with MSG among the errors (all printed when it is not). */
static bool fails_with(const char *yaml, const char *msg)
{
    struct conf_errors errs = { 0 };
    struct config *cfg = load(yaml, &errs);
    bool ok = cfg == NULL && has_msg(&errs, msg);
    if (!ok) {
        fprintf(stderr, "  expected error: %s\n", msg);
        for (size_t i = 0; i < errs.n; i++)
            fprintf(stderr, "  got:            %s\n", errs.msgs[i]);
        if (cfg)
            fprintf(stderr, "  (and the load succeeded)\n");
    }
    config_unref(cfg);
    conf_errors_free(&errs);
    return ok;
}

static uint16_t port_of(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)(const void *)ss)->sin_port);
    return ntohs(((const struct sockaddr_in6 *)(const void *)ss)->sin6_port);
}

static bool is_ipv4(const struct sockaddr_storage *ss, const char *ip)
{
    struct in_addr a;
    inet_pton(AF_INET, ip, &a);
    return ss->ss_family == AF_INET &&
           ((const struct sockaddr_in *)(const void *)ss)->sin_addr.s_addr == a.s_addr;
}

/* ------------------------------------------------------------------------------------- */

UNIT_TEST(parse_duration)
{
    uint64_t v = 0;
    CHECK(config_parse_duration("500ms", &v) == 0 && v == 500);
    CHECK(config_parse_duration("2s", &v) == 0 && v == 2000);
    CHECK(config_parse_duration("5m", &v) == 0 && v == 300000);
    CHECK(config_parse_duration("1h", &v) == 0 && v == 3600000);
    CHECK(config_parse_duration("1d", &v) == 0 && v == 86400000);
    CHECK(config_parse_duration("30", &v) == 0 && v == 30000);
    CHECK(config_parse_duration("0", &v) == 0 && v == 0);
    CHECK(config_parse_duration("", &v) != 0);
    CHECK(config_parse_duration("-1s", &v) != 0);
    CHECK(config_parse_duration("+1s", &v) != 0);
    CHECK(config_parse_duration("1.5s", &v) != 0);
    CHECK(config_parse_duration("10 s", &v) != 0);
    CHECK(config_parse_duration("s", &v) != 0);
    CHECK(config_parse_duration("10x", &v) != 0);
    CHECK(config_parse_duration("1sec", &v) != 0);
    CHECK(config_parse_duration("99999999999999999999", &v) != 0);
    CHECK(config_parse_duration("18446744073709551615d", &v) != 0);
    CHECK(config_parse_duration(NULL, &v) != 0);
}

UNIT_TEST(parse_size)
{
    uint64_t v = 0;
    CHECK(config_parse_size("512", &v) == 0 && v == 512);
    CHECK(config_parse_size("512B", &v) == 0 && v == 512);
    CHECK(config_parse_size("64KiB", &v) == 0 && v == 65536);
    CHECK(config_parse_size("1MiB", &v) == 0 && v == 1048576);
    CHECK(config_parse_size("2GiB", &v) == 0 && v == 2147483648ULL);
    CHECK(config_parse_size("1KB", &v) == 0 && v == 1000);
    CHECK(config_parse_size("3MB", &v) == 0 && v == 3000000);
    CHECK(config_parse_size("1GB", &v) == 0 && v == 1000000000);
    CHECK(config_parse_size("4k", &v) == 0 && v == 4096);
    CHECK(config_parse_size("4K", &v) == 0 && v == 4096);
    CHECK(config_parse_size("2m", &v) == 0 && v == 2097152);
    CHECK(config_parse_size("1g", &v) == 0 && v == 1073741824);
    CHECK(config_parse_size("0", &v) == 0 && v == 0);
    CHECK(config_parse_size("", &v) != 0);
    CHECK(config_parse_size("-1", &v) != 0);
    CHECK(config_parse_size("1.5MiB", &v) != 0);
    CHECK(config_parse_size("1 KiB", &v) != 0);
    CHECK(config_parse_size("1kib", &v) != 0);
    CHECK(config_parse_size("1XB", &v) != 0);
    CHECK(config_parse_size("KiB", &v) != 0);
    CHECK(config_parse_size("17179869184GiB", &v) != 0); /* 2^64: overflow */
    CHECK(config_parse_size("18446744073709551616", &v) != 0);
}

UNIT_TEST(parse_address)
{
    struct sockaddr_storage ss;
    socklen_t len = 0;
    CHECK(config_parse_address("127.0.0.1:8080", &ss, &len) == 0);
    CHECK(is_ipv4(&ss, "127.0.0.1") && port_of(&ss) == 8080 && len == sizeof(struct sockaddr_in));
    CHECK(config_parse_address("*:80", &ss, &len) == 0 && is_ipv4(&ss, "0.0.0.0") &&
          port_of(&ss) == 80);
    CHECK(config_parse_address(":81", &ss, &len) == 0 && is_ipv4(&ss, "0.0.0.0") &&
          port_of(&ss) == 81);
    CHECK(config_parse_address("[::]:8080", &ss, &len) == 0 && ss.ss_family == AF_INET6 &&
          port_of(&ss) == 8080 && len == sizeof(struct sockaddr_in6));
    CHECK(config_parse_address("[::1]:65535", &ss, &len) == 0 && ss.ss_family == AF_INET6);
    CHECK(config_parse_address("127.0.0.1", &ss, &len) != 0);
    CHECK(config_parse_address("127.0.0.1:", &ss, &len) != 0);
    CHECK(config_parse_address("127.0.0.1:0", &ss, &len) != 0);
    CHECK(config_parse_address("127.0.0.1:65536", &ss, &len) != 0);
    CHECK(config_parse_address("127.0.0.1:+80", &ss, &len) != 0);
    CHECK(config_parse_address("127.0.0.1:8a", &ss, &len) != 0);
    CHECK(config_parse_address("localhost:80", &ss, &len) != 0);
    CHECK(config_parse_address("1.2.3:80", &ss, &len) != 0);
    CHECK(config_parse_address("::1:80", &ss, &len) != 0);
    CHECK(config_parse_address("[::1]80", &ss, &len) != 0);
    CHECK(config_parse_address("[::1:80", &ss, &len) != 0);
    CHECK(config_parse_address("[]:80", &ss, &len) != 0);
    CHECK(config_parse_address("[1.2.3.4]:80", &ss, &len) != 0);
    CHECK(config_parse_address("", &ss, &len) != 0);
}

static const char full_yaml[] =
    "workers: 3\n"
    "log: { access: /var/log/p.log, format: json, error: /var/log/e.log, level: debug,\n"
    "       flush_interval: 250ms }\n"
    "limits: { max_connections: 500, header_timeout: 5s, body_timeout: 1m,\n"
    "          keepalive_timeout: 2m, send_timeout: 45s, tunnel_timeout: 2h,\n"
    "          drain_timeout: 15s, max_request_line: 4KiB, max_header_bytes: 32KiB,\n"
    "          max_headers: 50, max_body_bytes: 10MiB }\n"
    "forwarding: { x_forwarded: false, forwarded: true, via: true }\n"
    "admin: { address: \"127.0.0.1:9999\" }\n"
    "listeners:\n"
    "  - name: web\n"
    "    address: \"0.0.0.0:8080\"\n"
    "  - name: web6\n"
    "    address: \"[::]:8443\"\n"
    "routes:\n" /* before upstreams on purpose: routes may name later upstreams */
    "  - name: api\n"
    "    match: { host: \"API.Example.com\", path_prefix: \"/v1/\", methods: [GET, POST],\n"
    "             headers: { X-Env: canary } }\n"
    "    upstream: app\n"
    "    strip_prefix: /v1\n"
    "    request_headers:  { set: { X-Env: prod }, add: { X-Extra: \"1\" }, remove: [Cookie] }\n"
    "    response_headers: { remove: [ Server, X-Powered-By ] }\n"
    "  - match: { path: /old, path_regex: \"^/old$\" }\n"
    "    redirect: { status: 301, location: \"https://$host/new\" }\n"
    "  - match: { host: \"*.example.com\" }\n"
    "    respond: { status: 503, body: \"down\\n\", headers: { Content-Type: text/plain } }\n"
    "upstreams:\n"
    "  app:\n"
    "    balance: hash\n"
    "    hash_key: \"cookie:session\"\n"
    "    servers:\n"
    "      - { address: \"127.0.0.1:9001\", weight: 5 }\n"
    "      - { address: \"backend.internal:9002\" }\n"
    "    keepalive: { max_idle: 8, idle_timeout: 30s }\n"
    "    timeouts: { connect: 1s, response: 20s, idle: 40s }\n"
    "    health_check: { path: /healthz, interval: 2s }\n"
    "  other:\n"
    "    balance: least_conn\n"
    "    servers: [ { address: \"[::1]:7000\" } ]\n";

static void check_full_top(int *unit_failed, const struct config *c)
{
    CHECK_EQ_INT(c->workers, 3);
    CHECK(strcmp(c->path, "t.yaml") == 0);
    CHECK(strcmp(c->log.access, "/var/log/p.log") == 0);
    CHECK(strcmp(c->log.error, "/var/log/e.log") == 0);
    CHECK_EQ_INT(c->log.format, LOG_FORMAT_JSON);
    CHECK_EQ_INT(c->log.level, LOG_LEVEL_DEBUG);
    CHECK_EQ_INT(c->log.flush_interval_ms, 250);
    CHECK_EQ_INT(c->limits.max_connections, 500);
    CHECK_EQ_INT(c->limits.header_timeout_ms, 5000);
    CHECK_EQ_INT(c->limits.body_timeout_ms, 60000);
    CHECK_EQ_INT(c->limits.keepalive_timeout_ms, 120000);
    CHECK_EQ_INT(c->limits.send_timeout_ms, 45000);
    CHECK_EQ_INT(c->limits.tunnel_timeout_ms, 7200000);
    CHECK_EQ_INT(c->limits.drain_timeout_ms, 15000);
    CHECK_EQ_INT(c->limits.max_request_line, 4096);
    CHECK_EQ_INT(c->limits.max_header_bytes, 32768);
    CHECK_EQ_INT(c->limits.max_headers, 50);
    CHECK_EQ_INT(c->limits.max_body_bytes, 10485760);
    CHECK(!c->forwarding.x_forwarded && c->forwarding.forwarded && c->forwarding.via);
    CHECK(strcmp(c->admin_address, "127.0.0.1:9999") == 0);
    CHECK_EQ_INT(c->n_listeners, 2);
    CHECK(strcmp(c->listeners[0].name, "web") == 0);
    CHECK(strcmp(c->listeners[0].address, "0.0.0.0:8080") == 0);
    CHECK(is_ipv4(&c->listeners[0].addr, "0.0.0.0") && port_of(&c->listeners[0].addr) == 8080);
    CHECK(strcmp(c->listeners[1].name, "web6") == 0);
    CHECK(c->listeners[1].addr.ss_family == AF_INET6 && port_of(&c->listeners[1].addr) == 8443);
}

static void check_full_upstreams(int *unit_failed, const struct config *c)
{
    CHECK_EQ_INT(c->n_upstreams, 2);
    const struct conf_upstream *u = config_find_upstream(c, "app");
    CHECK(u == &c->upstreams[0]);
    CHECK(config_find_upstream(c, "other") == &c->upstreams[1]);
    CHECK(config_find_upstream(c, "nope") == NULL);
    CHECK_EQ_INT(u->index, 0);
    CHECK_EQ_INT(u->balance, BALANCE_HASH);
    CHECK_EQ_INT(u->hash_key, HASH_KEY_COOKIE);
    CHECK(strcmp(u->hash_key_name, "session") == 0);
    CHECK_EQ_INT(u->n_servers, 2);
    CHECK(strcmp(u->servers[0].address, "127.0.0.1:9001") == 0);
    CHECK(is_ipv4(&u->servers[0].addr, "127.0.0.1") && port_of(&u->servers[0].addr) == 9001);
    CHECK_EQ_INT(u->servers[0].weight, 5);
    CHECK_EQ_INT(u->servers[0].index, 0);
    CHECK(strcmp(u->servers[1].address, "backend.internal:9002") == 0);
    CHECK(is_ipv4(&u->servers[1].addr, "10.0.0.7") && port_of(&u->servers[1].addr) == 9002);
    CHECK_EQ_INT(u->servers[1].weight, 1);
    CHECK_EQ_INT(u->servers[1].index, 1);
    CHECK_EQ_INT(u->keepalive_max_idle, 8);
    CHECK_EQ_INT(u->keepalive_idle_timeout_ms, 30000);
    CHECK_EQ_INT(u->connect_timeout_ms, 1000);
    CHECK_EQ_INT(u->response_timeout_ms, 20000);
    CHECK_EQ_INT(u->idle_timeout_ms, 40000);
    const struct conf_upstream *o = &c->upstreams[1];
    CHECK_EQ_INT(o->index, 1);
    CHECK_EQ_INT(o->balance, BALANCE_LEAST_CONN);
    CHECK(o->servers[0].addr.ss_family == AF_INET6 && port_of(&o->servers[0].addr) == 7000);
}

static void check_full_routes(int *unit_failed, const struct config *c)
{
    CHECK_EQ_INT(c->n_routes, 3);
    const struct conf_route *r = &c->routes[0];
    CHECK(strcmp(r->name, "api") == 0 && r->index == 0);
    CHECK(strcmp(r->host, "api.example.com") == 0);
    CHECK(strcmp(r->path_prefix, "/v1/") == 0 && !r->path && !r->path_regex && !r->regex);
    CHECK(r->n_methods == 2 && strcmp(r->methods[0], "GET") == 0 &&
          strcmp(r->methods[1], "POST") == 0);
    CHECK(r->n_match_headers == 1 && strcmp(r->match_headers[0].name, "X-Env") == 0 &&
          strcmp(r->match_headers[0].value, "canary") == 0);
    CHECK(r->action == ROUTE_UPSTREAM && r->upstream == &c->upstreams[0]);
    CHECK(strcmp(r->strip_prefix, "/v1") == 0);
    CHECK(r->request_headers.n_set == 1 && strcmp(r->request_headers.set[0].value, "prod") == 0);
    CHECK(r->request_headers.n_add == 1 &&
          strcmp(r->request_headers.add[0].name, "X-Extra") == 0);
    CHECK(r->request_headers.n_remove == 1 &&
          strcmp(r->request_headers.remove[0], "Cookie") == 0);
    CHECK(r->response_headers.n_remove == 2 && r->response_headers.n_set == 0 &&
          strcmp(r->response_headers.remove[1], "X-Powered-By") == 0);
    r = &c->routes[1];
    CHECK(strcmp(r->name, "route2") == 0 && r->index == 1);
    CHECK(strcmp(r->path, "/old") == 0 && strcmp(r->path_regex, "^/old$") == 0 && r->regex);
    CHECK(r->action == ROUTE_REDIRECT && r->redirect_status == 301);
    CHECK(strcmp(r->redirect_location, "https://$host/new") == 0);
    CHECK(r->upstream == NULL);
    r = &c->routes[2];
    CHECK(strcmp(r->name, "route3") == 0 && strcmp(r->host, "*.example.com") == 0);
    CHECK(r->action == ROUTE_RESPOND && r->respond_status == 503);
    CHECK(strcmp(r->respond_body, "down\n") == 0);
    CHECK(r->n_respond_headers == 1 &&
          strcmp(r->respond_headers[0].name, "Content-Type") == 0 &&
          strcmp(r->respond_headers[0].value, "text/plain") == 0);
}

UNIT_TEST(full_config)
{
    struct conf_errors errs = { 0 };
    struct config *c = load(full_yaml, &errs);
    CHECK(c != NULL);
    CHECK_EQ_INT(errs.n, 0);
    for (size_t i = 0; i < errs.n; i++)
        fprintf(stderr, "  %s\n", errs.msgs[i]);
    if (c) {
        CHECK_EQ_INT(atomic_load(&c->refs), 1);
        check_full_top(unit_failed, c);
        check_full_upstreams(unit_failed, c);
        check_full_routes(unit_failed, c);
    }
    config_unref(c);
    conf_errors_free(&errs);
}

UNIT_TEST(defaults)
{
    struct conf_errors errs = { 0 };
    struct config *c = load(LISTEN "upstreams: { a: { servers: [ { address: \"127.0.0.1:1\" } ] } }\n"
                            "routes: [ { upstream: a }, { respond: {} }, "
                            "{ redirect: { location: /x } } ]\n", &errs);
    CHECK(c != NULL);
    if (!c)
        return;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    CHECK_EQ_INT(c->workers, cpus < 1 ? 1 : cpus);
    CHECK(strcmp(c->log.access, "stdout") == 0 && strcmp(c->log.error, "stderr") == 0);
    CHECK(c->log.format == LOG_FORMAT_TEXT && c->log.level == LOG_LEVEL_INFO);
    CHECK_EQ_INT(c->log.flush_interval_ms, 1000);
    CHECK_EQ_INT(c->limits.max_connections, 10000);
    CHECK_EQ_INT(c->limits.header_timeout_ms, 10000);
    CHECK_EQ_INT(c->limits.body_timeout_ms, 60000);
    CHECK_EQ_INT(c->limits.keepalive_timeout_ms, 75000);
    CHECK_EQ_INT(c->limits.send_timeout_ms, 60000);
    CHECK_EQ_INT(c->limits.tunnel_timeout_ms, 3600000);
    CHECK_EQ_INT(c->limits.drain_timeout_ms, 30000);
    CHECK_EQ_INT(c->limits.max_request_line, 8192);
    CHECK_EQ_INT(c->limits.max_header_bytes, 65536);
    CHECK_EQ_INT(c->limits.max_headers, 100);
    CHECK_EQ_INT(c->limits.max_body_bytes, 0);
    CHECK(c->forwarding.x_forwarded && !c->forwarding.forwarded && !c->forwarding.via);
    CHECK(strcmp(c->admin_address, "127.0.0.1:9901") == 0);
    const struct conf_upstream *u = &c->upstreams[0];
    CHECK(u->balance == BALANCE_ROUND_ROBIN && u->hash_key == HASH_KEY_CLIENT_IP &&
          u->hash_key_name == NULL);
    CHECK(u->keepalive_max_idle == 64 && u->keepalive_idle_timeout_ms == 60000);
    CHECK(u->connect_timeout_ms == 2000 && u->response_timeout_ms == 30000 &&
          u->idle_timeout_ms == 60000);
    CHECK(u->servers[0].weight == 1);
    const struct conf_route *r = c->routes;
    CHECK(strcmp(r[0].name, "route1") == 0 && r[0].action == ROUTE_UPSTREAM);
    CHECK(!r[0].host && !r[0].path && !r[0].path_prefix && !r[0].regex && r[0].n_methods == 0);
    CHECK(strcmp(r[1].name, "route2") == 0 && r[1].action == ROUTE_RESPOND);
    CHECK(r[1].respond_status == 200 && strcmp(r[1].respond_body, "") == 0);
    CHECK(strcmp(r[2].name, "route3") == 0 && r[2].action == ROUTE_REDIRECT &&
          r[2].redirect_status == 302);
    config_unref(c);
    conf_errors_free(&errs);
}

UNIT_TEST(json_input)
{
    const char *json =
        "{\"workers\": 2, \"log\": {\"format\": \"json\"},\n"
        " \"listeners\": [{\"name\": \"web\", \"address\": \"127.0.0.1:8080\"}],\n"
        " \"forwarding\": {\"via\": true},\n"
        " \"upstreams\": {\"app\": {\"servers\": [{\"address\": \"127.0.0.1:9001\", "
        "\"weight\": 2}]}},\n"
        " \"routes\": [{\"match\": {\"methods\": [\"GET\"]}, \"upstream\": \"app\"}]}\n";
    struct conf_errors errs = { 0 };
    struct config *c = load(json, &errs);
    CHECK(c != NULL);
    if (c) {
        CHECK(c->workers == 2 && c->log.format == LOG_FORMAT_JSON && c->forwarding.via);
        CHECK(c->n_listeners == 1 && c->n_upstreams == 1 && c->upstreams[0].servers[0].weight == 2);
        CHECK(c->routes[0].upstream == &c->upstreams[0]);
    }
    config_unref(c);
    conf_errors_free(&errs);
    /* JSON errors carry positions too. */
    CHECK(fails_with("{\"listeners\": [{\"name\": \"web\", \"address\": \"127.0.0.1:8080\"}],\n"
                     " \"bogus\": 1}\n",
                     "t.yaml:2:2: unknown key \"bogus\" in config"));
}

UNIT_TEST(refcount)
{
    struct conf_errors errs = { 0 };
    struct config *c = load(LISTEN, &errs);
    CHECK(c != NULL && errs.n == 0);
    CHECK(config_ref(c) == c);
    CHECK_EQ_INT(atomic_load(&c->refs), 2);
    config_unref(c);
    CHECK_EQ_INT(atomic_load(&c->refs), 1);
    config_unref(c);
    config_unref(NULL);
}

UNIT_TEST(syntax_error)
{
    CHECK(fails_with("listeners:\n  - name: [web\n",
                     "t.yaml:3:1: YAML syntax error: did not find expected ',' or ']' while "
                     "parsing a flow sequence"));
    CHECK(fails_with("a: b\n c: d\n", "t.yaml:2:3: YAML syntax error: mapping values are not "
                                      "allowed in this context"));
    CHECK(fails_with("a: &x 1\nb: *x\n", "t.yaml:2:4: YAML aliases are not supported"));
    CHECK(fails_with(LISTEN "---\n" LISTEN, "t.yaml:2:1: only one YAML document is allowed"));
    CHECK(fails_with("a: \"\xff\"\n", "t.yaml:1:5: YAML syntax error: invalid leading UTF-8 octet"));
}

UNIT_TEST(unknown_keys)
{
    CHECK(fails_with(LISTEN "foo: 1\n", "t.yaml:2:1: unknown key \"foo\" in config"));
    CHECK(fails_with(LISTEN "routes:\n  - respond: {}\n    foo: bar\n",
                     "t.yaml:4:5: unknown key \"foo\" in route"));
    CHECK(fails_with(LISTEN "limits: { max_conns: 1 }\n",
                     "t.yaml:2:11: unknown key \"max_conns\" in limits"));
    CHECK(fails_with(LISTEN "routes: [ { respond: { code: 200 } } ]\n",
                     "t.yaml:2:24: unknown key \"code\" in respond"));
}

UNIT_TEST(duplicate_keys)
{
    CHECK(fails_with(LISTEN "workers: 1\nworkers: 2\n",
                     "t.yaml:3:1: duplicate key \"workers\" in config (first at 2:1)"));
    CHECK(fails_with(LISTEN "routes: [ { respond: { headers: { X-A: 1, x-a: 2 } } } ]\n",
                     "t.yaml:2:43: duplicate key \"x-a\" in headers (first at 2:35)"));
    CHECK(fails_with(LISTEN "upstreams:\n  a: { servers: [ { address: \"1.1.1.1:1\" } ] }\n"
                     "  a: { servers: [ { address: \"1.1.1.1:1\" } ] }\n",
                     "t.yaml:4:3: duplicate key \"a\" in upstreams (first at 3:3)"));
}

UNIT_TEST(wrong_types)
{
    CHECK(fails_with("- a\n- b\n", "t.yaml:1:1: expected a mapping for config, got a sequence"));
    CHECK(fails_with(LISTEN "limits: [1]\n",
                     "t.yaml:2:9: expected a mapping for limits, got a sequence"));
    CHECK(fails_with("listeners: web\n",
                     "t.yaml:1:12: expected a sequence for listeners, got \"web\""));
    CHECK(fails_with(LISTEN "log: { access: [a] }\n",
                     "t.yaml:2:16: expected a string for access, got a sequence"));
    CHECK(fails_with(LISTEN "limits: { max_headers: ten }\n",
                     "t.yaml:2:24: expected an integer for max_headers, got \"ten\""));
    CHECK(fails_with(LISTEN "limits: { max_headers: -1 }\n",
                     "t.yaml:2:24: expected an integer for max_headers, got \"-1\""));
    CHECK(fails_with(LISTEN "forwarding: { via: maybe }\n",
                     "t.yaml:2:20: expected a boolean (true or false) for via, got \"maybe\""));
    CHECK(fails_with(LISTEN "log: { access: }\n",
                     "t.yaml:2:16: expected a string for access, got null"));
    CHECK(fails_with(LISTEN "routes: [ { respond: {}, match: { methods: GET } } ]\n",
                     "t.yaml:2:44: expected a sequence for methods, got \"GET\""));
    CHECK(fails_with(LISTEN "upstreams: { a: { servers: [ \"1.1.1.1:1\" ] } }\n",
                     "t.yaml:2:30: expected a mapping for server, got \"1.1.1.1:1\""));
    CHECK(fails_with(LISTEN "upstreams: { a: { servers: [ { address: \"1.1.1.1:1\" } ], "
                     "health_check: 5 } }\n",
                     "t.yaml:2:72: expected a mapping for health_check, got \"5\""));
}

UNIT_TEST(bad_values)
{
    CHECK(fails_with(LISTEN "limits: { header_timeout: 10x }\n",
                     "t.yaml:2:27: expected a duration (e.g. 500ms, 2s, 5m, 1h, 1d) for "
                     "header_timeout, got \"10x\""));
    CHECK(fails_with(LISTEN "limits: { header_timeout: 0s }\n",
                     "t.yaml:2:27: header_timeout \"0s\" is out of range (1ms to 365d)"));
    CHECK(fails_with(LISTEN "limits: { max_body_bytes: 1XB }\n",
                     "t.yaml:2:27: expected a size (e.g. 512, 64KiB, 1MiB, 2GiB) for "
                     "max_body_bytes, got \"1XB\""));
    CHECK(fails_with(LISTEN "limits: { max_header_bytes: 8GiB }\n",
                     "t.yaml:2:29: max_header_bytes \"8GiB\" is out of range (64 to 4294967295 "
                     "bytes)"));
    CHECK(fails_with(LISTEN "limits: { max_connections: 0 }\n",
                     "t.yaml:2:28: max_connections \"0\" is out of range (1 to 4294967295)"));
    CHECK(fails_with(LISTEN "limits: { max_connections: 99999999999 }\n",
                     "t.yaml:2:28: max_connections \"99999999999\" is out of range (1 to "
                     "4294967295)"));
    CHECK(fails_with(LISTEN "log: { format: xml }\n",
                     "t.yaml:2:16: invalid value \"xml\" for format (expected one of: text, "
                     "json)"));
    CHECK(fails_with(LISTEN "log: { level: verbose }\n",
                     "t.yaml:2:15: invalid value \"verbose\" for level (expected one of: error, "
                     "warn, info, debug)"));
    CHECK(fails_with(LISTEN "upstreams: { a: { balance: fastest, servers: [{address: "
                     "\"1.1.1.1:1\"}] } }\n",
                     "t.yaml:2:28: invalid value \"fastest\" for balance (expected one of: "
                     "round_robin, least_conn, random_two, hash)"));
    CHECK(fails_with(LISTEN "workers: 0\n", "t.yaml:2:10: workers 0 is out of range (1 to 1024)"));
    CHECK(fails_with(LISTEN "workers: many\n",
                     "t.yaml:2:10: expected \"auto\" or an integer for workers, got \"many\""));
    CHECK(fails_with(LISTEN "routes: [ { respond: { body: \"a\\0b\" } } ]\n",
                     "t.yaml:2:30: body must not hold a NUL character"));
}

UNIT_TEST(listeners)
{
    CHECK(fails_with("workers: 1\n", "t.yaml:1:1: no listeners defined (add at least one under "
                                     "\"listeners\")"));
    CHECK(fails_with("", "t.yaml:1:1: no listeners defined (add at least one under "
                         "\"listeners\")"));
    CHECK(fails_with("workers: 1\nlisteners: []\n",
                     "t.yaml:2:12: no listeners defined (add at least one under "
                     "\"listeners\")"));
    CHECK(fails_with("listeners:\n  - name: a\n    address: \"localhost:80\"\n",
                     "t.yaml:3:14: invalid address \"localhost:80\": must be a numeric IP:port, "
                     "[IPv6]:port or *:port"));
    CHECK(fails_with("listeners:\n  - name: a\n", "t.yaml:2:5: missing required key \"address\" "
                                                 "in listener"));
    CHECK(fails_with("listeners:\n  - { name: a, address: \"*:80\" }\n"
                     "  - { name: b, address: \"0.0.0.0:80\" }\n",
                     "t.yaml:3:25: duplicate listener address \"0.0.0.0:80\" (same as listener "
                     "a)"));
    CHECK(fails_with("listeners:\n  - { name: a, address: \"*:80\" }\n"
                     "  - { name: a, address: \"*:81\" }\n",
                     "t.yaml:3:13: duplicate listener name \"a\""));
    CHECK(fails_with("listeners:\n  - { name: \"a b\", address: \"*:80\" }\n",
                     "t.yaml:2:13: invalid name \"a b\": may hold only letters, digits, '_', '-', "
                     "'.' and ':'"));
    CHECK(fails_with(LISTEN "admin: { address: \"localhost:1\" }\n",
                     "t.yaml:2:19: invalid address \"localhost:1\": must be \"off\" or a numeric "
                     "IP:port, [IPv6]:port or *:port"));
    /* A listener without a name gets one from its position. */
    struct conf_errors errs = { 0 };
    struct config *c = load("listeners: [ { address: \"*:80\" }, { address: \"*:81\" } ]\n", &errs);
    CHECK(c && strcmp(c->listeners[1].name, "listener2") == 0);
    config_unref(c);
    conf_errors_free(&errs);
}

UNIT_TEST(upstreams)
{
    CHECK(fails_with(LISTEN "upstreams:\n  app:\n    servers: []\n",
                     "t.yaml:4:14: upstream \"app\" has no servers"));
    CHECK(fails_with(LISTEN "upstreams:\n  app:\n    balance: hash\n",
                     "t.yaml:4:5: missing required key \"servers\" in upstream"));
    CHECK(fails_with(LISTEN "upstreams:\n  app:\n    servers:\n      - address: nosuch.test:80\n",
                     "t.yaml:5:18: cannot resolve \"nosuch.test\": Name or service not known"));
    CHECK(fails_with(LISTEN "upstreams:\n  app:\n    servers:\n      - address: \"a b:80\"\n",
                     "t.yaml:5:18: invalid server address \"a b:80\" (expected HOST:PORT, "
                     "IP:PORT or [IPv6]:PORT)"));
    CHECK(fails_with(LISTEN "upstreams:\n  app:\n    servers:\n      - address: \"127.0.0.1\"\n",
                     "t.yaml:5:18: invalid server address \"127.0.0.1\" (expected HOST:PORT, "
                     "IP:PORT or [IPv6]:PORT)"));
    CHECK(fails_with(LISTEN "upstreams:\n  app:\n    servers:\n      - address: \"*:80\"\n",
                     "t.yaml:5:18: invalid server address \"*:80\": a wildcard address cannot "
                     "be connected to"));
    CHECK(fails_with(LISTEN "upstreams:\n  app:\n    servers:\n      - { address: \"1.1.1.1:1\","
                     " weight: 0 }\n",
                     "t.yaml:5:41: weight \"0\" is out of range (1 to 1000000)"));
    CHECK(fails_with(LISTEN "upstreams:\n  app:\n    hash_key: ip\n    servers: [ { address: "
                     "\"1.1.1.1:1\" } ]\n",
                     "t.yaml:4:15: invalid hash_key \"ip\" (expected one of: client_ip, uri, "
                     "header:NAME, cookie:NAME)"));
    CHECK(fails_with(LISTEN "upstreams:\n  app:\n    hash_key: \"header:X Y\"\n    servers: [ { "
                     "address: \"1.1.1.1:1\" } ]\n",
                     "t.yaml:4:15: invalid hash_key \"header:X Y\" (expected one of: client_ip, "
                     "uri, header:NAME, cookie:NAME)"));
    CHECK(fails_with(LISTEN "upstreams:\n  \"a/b\": { servers: [ { address: \"1.1.1.1:1\" } ] }\n",
                     "t.yaml:3:3: invalid upstream name \"a/b\": may hold only letters, digits, "
                     "'_', '-', '.' and ':'"));
}

UNIT_TEST(hash_keys_and_real_resolver)
{
    struct conf_errors errs = { 0 };
    struct config *c = load(LISTEN "upstreams:\n"
                            "  h: { hash_key: \"header:X-User\", servers: [ {address: \"1.1.1.1:1\"} ] }\n"
                            "  u: { hash_key: uri, servers: [ {address: \"1.1.1.1:1\"} ] }\n",
                            &errs);
    CHECK(c != NULL);
    if (c) {
        CHECK(c->upstreams[0].hash_key == HASH_KEY_HEADER &&
              strcmp(c->upstreams[0].hash_key_name, "X-User") == 0);
        CHECK(c->upstreams[1].hash_key == HASH_KEY_URI && !c->upstreams[1].hash_key_name);
    }
    config_unref(c);
    conf_errors_free(&errs);
    /* The default resolver (getaddrinfo) on a name every host knows. */
    config_set_resolver(NULL);
    const char *y = LISTEN "upstreams: { a: { servers: [ { address: \"localhost:9000\" } ] } }\n";
    c = config_load_buffer("t.yaml", y, strlen(y), &errs);
    CHECK(c != NULL);
    if (c)
        CHECK(port_of(&c->upstreams[0].servers[0].addr) == 9000);
    config_unref(c);
    conf_errors_free(&errs);
}

UNIT_TEST(route_actions)
{
    CHECK(fails_with(LISTEN "routes:\n  - match: { path: / }\n",
                     "t.yaml:3:5: route \"route1\" has no action (expected one of: upstream, "
                     "respond, redirect)"));
    CHECK(fails_with(LISTEN "routes:\n  - name: two\n    respond: {}\n    redirect: { location: "
                     "/x }\n",
                     "t.yaml:3:5: route \"two\" has more than one action (upstream, respond and "
                     "redirect exclude each other)"));
    CHECK(fails_with(LISTEN "routes:\n  - upstream: ghost\n",
                     "t.yaml:3:15: unknown upstream \"ghost\" in route"));
    CHECK(fails_with(LISTEN "routes:\n  - respond: {}\n    strip_prefix: /v1\n",
                     "t.yaml:4:19: strip_prefix needs an upstream action in route \"route1\""));
    CHECK(fails_with(LISTEN "routes:\n  - { name: x, respond: {} }\n  - { name: x, respond: {} }\n",
                     "t.yaml:4:13: duplicate route name \"x\""));
    CHECK(fails_with(LISTEN "routes:\n  - redirect: { status: 301 }\n",
                     "t.yaml:3:15: missing required key \"location\" in redirect"));
}

UNIT_TEST(route_values)
{
    CHECK(fails_with(LISTEN "routes:\n  - match: { path_regex: \"a(b\" }\n    respond: {}\n",
                     "t.yaml:3:26: invalid path_regex: missing closing parenthesis at offset 3"));
    CHECK(fails_with(LISTEN "routes:\n  - respond: { status: 99 }\n",
                     "t.yaml:3:24: status \"99\" is out of range (100 to 599)"));
    CHECK(fails_with(LISTEN "routes:\n  - respond: { status: 600 }\n",
                     "t.yaml:3:24: status \"600\" is out of range (100 to 599)"));
    CHECK(fails_with(LISTEN "routes:\n  - redirect: { status: 300, location: /x }\n",
                     "t.yaml:3:25: invalid redirect status \"300\" (expected one of: 301, 302, "
                     "303, 307, 308)"));
    CHECK(fails_with(LISTEN "routes:\n  - redirect: { location: \"/a b\" }\n",
                     "t.yaml:3:27: invalid location \"/a b\": must not hold spaces or control "
                     "characters"));
    CHECK(fails_with(LISTEN "routes:\n  - match: { methods: [GET, \"PO ST\"] }\n    respond: {}\n",
                     "t.yaml:3:29: invalid entry \"PO ST\" in methods (must be a token)"));
    CHECK(fails_with(LISTEN "routes:\n  - match: { path: old }\n    respond: {}\n",
                     "t.yaml:3:20: invalid path \"old\": must start with \"/\""));
    CHECK(fails_with(LISTEN "routes:\n  - match: { host: \"a b\" }\n    respond: {}\n",
                     "t.yaml:3:20: invalid host \"a b\": may hold only letters, digits, '-', '.', "
                     "'_' (and a leading \"*.\")"));
}

UNIT_TEST(route_headers)
{
    CHECK(fails_with(LISTEN "routes:\n  - match: { headers: { \"X Bad\": 1 } }\n    respond: {}\n",
                     "t.yaml:3:25: invalid header name \"X Bad\" in headers (must be a token)"));
    CHECK(fails_with(LISTEN "routes:\n  - respond: { headers: { \"Content-Length\": \"5\" } }\n",
                     "t.yaml:3:27: header \"Content-Length\" cannot be set by configuration (the "
                     "proxy frames messages itself)"));
    CHECK(fails_with(LISTEN "routes:\n  - respond: {}\n    request_headers: { set: { "
                     "Transfer-Encoding: chunked } }\n",
                     "t.yaml:4:31: header \"Transfer-Encoding\" cannot be set by configuration "
                     "(the proxy frames messages itself)"));
    CHECK(fails_with(LISTEN "routes:\n  - respond: {}\n    response_headers: { add: { X-A: "
                     "\"a\\nb\" } }\n",
                     "t.yaml:4:37: invalid value for header \"X-A\": control characters are not "
                     "allowed"));
    CHECK(fails_with(LISTEN "routes:\n  - respond: {}\n    response_headers: { remove: [ "
                     "\"Bad Header\" ] }\n",
                     "t.yaml:4:35: invalid entry \"Bad Header\" in remove (must be a token)"));
    CHECK(fails_with(LISTEN "routes:\n  - respond: {}\n    response_headers: { replace: {} }\n",
                     "t.yaml:4:25: unknown key \"replace\" in response_headers"));
}

UNIT_TEST(many_errors_sorted)
{
    const char *y = "workers: lots\n"
                    "routes:\n"
                    "  - upstream: ghost\n"
                    "    bogus: 1\n"
                    "log: { format: xml }\n"
                    "listeners: []\n";
    struct conf_errors errs = { 0 };
    struct config *c = load(y, &errs);
    CHECK(c == NULL);
    CHECK_EQ_INT(errs.n, 5);
    if (errs.n == 5) {
        CHECK(strcmp(errs.msgs[0], "t.yaml:1:10: expected \"auto\" or an integer for workers, got "
                                   "\"lots\"") == 0);
        CHECK(strcmp(errs.msgs[1], "t.yaml:3:15: unknown upstream \"ghost\" in route") == 0);
        CHECK(strcmp(errs.msgs[2], "t.yaml:4:5: unknown key \"bogus\" in route") == 0);
        CHECK(strncmp(errs.msgs[3], "t.yaml:5:16: invalid value \"xml\"", 32) == 0);
        CHECK(strncmp(errs.msgs[4], "t.yaml:6:12: no listeners defined", 33) == 0);
    }
    /* A second load appends to the same list. */
    config_unref(load("", &errs));
    CHECK_EQ_INT(errs.n, 6);
    conf_errors_free(&errs);
    CHECK(errs.n == 0 && errs.msgs == NULL);
}

UNIT_TEST(load_file)
{
    struct conf_errors errs = { 0 };
    CHECK(config_load_file("/nonexistent/portero.yaml", &errs) == NULL);
    CHECK(errs.n == 1 && strcmp(errs.msgs[0], "/nonexistent/portero.yaml:1:1: cannot read config "
                                              "file: No such file or directory") == 0);
    conf_errors_free(&errs);

    char path[] = "/tmp/portero-test-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    const char *y = "workers: 1\n" LISTEN "bogus: 1\n";
    CHECK(write(fd, y, strlen(y)) == (ssize_t)strlen(y));
    close(fd);
    CHECK(config_load_file(path, &errs) == NULL);
    char want[128];
    snprintf(want, sizeof want, "%s:3:1: unknown key \"bogus\" in config", path);
    CHECK(errs.n == 1 && strcmp(errs.msgs[0], want) == 0);
    conf_errors_free(&errs);

    fd = open(path, O_WRONLY | O_TRUNC);
    CHECK(fd >= 0 && write(fd, LISTEN, strlen(LISTEN)) == (ssize_t)strlen(LISTEN));
    close(fd);
    struct config *c = config_load_file(path, &errs);
    CHECK(c && strcmp(c->path, path) == 0 && errs.n == 0);
    config_unref(c);
    unlink(path);
}

UNIT_TEST(quickstart_example)
{
    struct conf_errors errs = { 0 };
    struct config *c = config_load_file("examples/quickstart.yaml", &errs);
    for (size_t i = 0; i < errs.n; i++)
        fprintf(stderr, "  %s\n", errs.msgs[i]);
    CHECK(c != NULL);
    if (c) {
        CHECK(c->n_listeners == 1 && strcmp(c->listeners[0].name, "web") == 0);
        CHECK(c->n_upstreams == 1 && c->upstreams[0].n_servers == 2);
        CHECK(c->n_routes == 4);
        CHECK(c->n_rate_limits == 1 && c->routes[3].n_rate_limits == 1);
    }
    config_unref(c);
    conf_errors_free(&errs);
}

UNIT_MAIN();
