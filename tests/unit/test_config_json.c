/* Unit tests of config_to_json and the server edits: the JSON loads back into an equal
 * snapshot (dumping it again gives the same text), strings are escaped, keys keep file order,
 * and each edit changes exactly what it says. */
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <stdbool.h>

#include "conf/config.h"
#include "conf/config_resolve.h"
#include "unit.h"

#define LISTEN "listeners: [{name: web, address: \"127.0.0.1:8080\"}]\n"

static int test_resolve(const char *host, const char *port, struct sockaddr_storage *out,
                        socklen_t *out_len, char *err, size_t err_cap)
{
    if (strcmp(host, "backend.internal") != 0 && strcmp(host, "localhost") != 0) {
        snprintf(err, err_cap, "Name or service not known");
        return -1;
    }
    struct sockaddr_in *sin = (struct sockaddr_in *)out;
    memset(out, 0, sizeof *out);
    sin->sin_family = AF_INET;
    sin->sin_port = htons((uint16_t)atoi(port));
    inet_pton(AF_INET, "10.0.0.7", &sin->sin_addr);
    *out_len = sizeof *sin;
    return 0;
}

/* Loads TEXT (which must be valid), printing the errors if it is not. */
static struct config *load(const char *name, const char *text)
{
    struct conf_errors errs = { 0 };
    config_set_resolver(test_resolve);
    struct config *cfg = config_load_buffer(name, text, strlen(text), &errs);
    for (size_t i = 0; i < errs.n; i++)
        fprintf(stderr, "  unexpected: %s\n", errs.msgs[i]);
    conf_errors_free(&errs);
    return cfg;
}

/* Dumps CFG, loads the JSON and dumps again: both texts must be equal. Returns the reloaded
 * snapshot (the caller unrefs) or NULL. */
static struct config *round_trip(int *unit_failed, const struct config *cfg)
{
    char *json = config_to_json(cfg);
    CHECK(json != NULL);
    if (!json)
        return NULL;
    struct config *again = load("dump.json", json);
    CHECK(again != NULL);
    char *json2 = again ? config_to_json(again) : NULL;
    CHECK(json2 && strcmp(json, json2) == 0);
    if (json2 && strcmp(json, json2) != 0)
        fprintf(stderr, "  first dump:\n%s\n  second dump:\n%s\n", json, json2);
    free(json);
    free(json2);
    return again;
}

static const char full_yaml[] =
    "workers: 3\n"
    "log: { access: /var/log/p.log, format: json, error: /var/log/e.log, level: debug,\n"
    "       flush_interval: 250ms }\n"
    "limits: { max_connections: 500, header_timeout: 5s, body_timeout: 1m,\n"
    "          keepalive_timeout: 2m, send_timeout: 45s, tunnel_timeout: 2h,\n"
    "          drain_timeout: 1500ms, max_request_line: 4KiB, max_header_bytes: 32KiB,\n"
    "          max_headers: 50, max_body_bytes: 10GiB }\n"
    "forwarding: { x_forwarded: false, forwarded: true, via: true }\n"
    "admin: { address: \"127.0.0.1:9999\", token: \"t0k-en\" }\n"
    "listeners:\n"
    "  - name: web\n"
    "    address: \"0.0.0.0:8080\"\n"
    "  - address: \"[::]:8443\"\n"
    "routes:\n"
    "  - name: api\n"
    "    match: { host: \"API.Example.com\", path_prefix: \"/v1/\", methods: [GET, POST],\n"
    "             headers: { X-Env: \"canary \\\"blue\\\"\" } }\n"
    "    upstream: app\n"
    "    strip_prefix: /v1\n"
    "    request_headers:  { set: { X-Env: prod }, add: { X-Extra: \"1\" }, remove: [Cookie] }\n"
    "    response_headers: { remove: [ Server, X-Powered-By ] }\n"
    "  - match: { path: /old, path_regex: \"^/o\\\\d+(/.*)?$\" }\n"
    "    redirect: { status: 301, location: \"https://$host/new\" }\n"
    "  - match: { host: \"*.example.com\" }\n"
    "    respond: { status: 503, body: \"down \\\"now\\\"\\\\\\n\\t\\x01\\x7f\\u00e9\\u2028\\u0085"
    "\\uFEFF\\U0001F600 end\", headers: { Content-Type: text/plain } }\n"
    "  - respond: { }\n"
    "upstreams:\n"
    "  zeta:\n"
    "    balance: hash\n"
    "    hash_key: \"cookie:session\"\n"
    "    servers:\n"
    "      - { address: \"127.0.0.1:9001\", weight: 5 }\n"
    "      - { address: \"backend.internal:9002\", drain: true }\n"
    "    keepalive: { max_idle: 0, idle_timeout: 30s }\n"
    "    timeouts: { connect: 1s, response: 20s, idle: 1d }\n"
    "    health_check: { type: tcp, path: /healthz, host: h.local, interval: 3s, timeout: 2500ms,\n"
    "                    status: \"200-204\", rise: 4, fall: 5 }\n"
    "    outlier: { consecutive_failures: 0, base_ejection: 1m, max_ejection: 1h,\n"
    "               max_ejected_percent: 10 }\n"
    "    retries: { attempts: 4, per_try_timeout: 750ms, statuses: [503, 429], budget: 35%,\n"
    "               budget_min: 0, backoff: 0, backoff_max: 2s }\n"
    "    slow_start: 90s\n"
    "    panic: true\n"
    "  app:\n"
    "    balance: hash\n"
    "    hash_key: \"header:X-User\"\n"
    "    servers: [ { address: \"[::1]:7000\" }, { address: \"10.0.0.1:7001\" } ]\n"
    "    health_check: { status: 204 }\n";

UNIT_TEST(round_trip_full)
{
    struct config *c = load("t.yaml", full_yaml);
    CHECK(c != NULL);
    if (!c)
        return;
    struct config *d = round_trip(unit_failed, c);
    if (d) {
        CHECK_EQ_INT(d->workers, 3);
        CHECK_EQ_INT(d->log.format, LOG_FORMAT_JSON);
        CHECK_EQ_INT(d->log.flush_interval_ms, 250);
        CHECK_EQ_INT(d->limits.drain_timeout_ms, 1500);
        CHECK_EQ_INT(d->limits.max_request_line, 4096);
        CHECK(d->limits.max_body_bytes == 10ULL << 30);
        CHECK(!d->forwarding.x_forwarded && d->forwarding.forwarded && d->forwarding.via);
        CHECK(strcmp(d->admin_address, "127.0.0.1:9999") == 0);
        CHECK(strcmp(d->admin_token, "t0k-en") == 0);
        CHECK(d->n_listeners == 2 && strcmp(d->listeners[1].name, "listener2") == 0);
        CHECK(strcmp(d->listeners[1].address, "[::]:8443") == 0);
        CHECK(d->n_upstreams == 2 && strcmp(d->upstreams[0].name, "zeta") == 0);
        const struct conf_upstream *z = &d->upstreams[0];
        CHECK(z->hash_key == HASH_KEY_COOKIE && strcmp(z->hash_key_name, "session") == 0);
        CHECK(strcmp(z->servers[1].address, "backend.internal:9002") == 0);
        CHECK(z->servers[0].weight == 5 && !z->servers[0].drain && z->servers[1].drain);
        CHECK(z->keepalive_max_idle == 0 && z->idle_timeout_ms == 86400000);
        CHECK(z->health_check.enabled && z->health_check.type == HEALTH_CHECK_TCP);
        CHECK(strcmp(z->health_check.host, "h.local") == 0);
        CHECK(z->health_check.timeout_ms == 2500 && z->health_check.status_max == 204);
        CHECK(z->health_check.rise == 4 && z->health_check.fall == 5);
        CHECK(z->outlier.consecutive_failures == 0 && z->outlier.max_ejection_ms == 3600000);
        CHECK(z->retries.attempts == 4 && z->retries.per_try_timeout_ms == 750);
        CHECK(z->retries.n_statuses == 2 && z->retries.statuses[1] == 429);
        CHECK(z->retries.budget_percent == 35 && z->retries.budget_min == 0);
        CHECK(z->retries.backoff_ms == 0 && z->retries.backoff_max_ms == 2000);
        CHECK(z->slow_start_ms == 90000 && z->panic);
        const struct conf_upstream *a = &d->upstreams[1];
        CHECK(a->hash_key == HASH_KEY_HEADER && strcmp(a->hash_key_name, "X-User") == 0);
        CHECK(a->health_check.enabled && a->health_check.status_min == 204 &&
              a->health_check.status_max == 204);
        CHECK(a->retries.per_try_timeout_ms == 0 && a->slow_start_ms == 0 && !a->panic);
        CHECK_EQ_INT(d->n_routes, 4);
        const struct conf_route *r = &d->routes[0];
        CHECK(strcmp(r->host, "api.example.com") == 0 && r->upstream == &d->upstreams[1]);
        CHECK(strcmp(r->match_headers[0].value, "canary \"blue\"") == 0);
        CHECK(r->n_methods == 2 && strcmp(r->strip_prefix, "/v1") == 0);
        CHECK(r->request_headers.n_set == 1 && r->request_headers.n_add == 1);
        CHECK(r->response_headers.n_remove == 2 && r->response_headers.n_set == 0);
        CHECK(strcmp(d->routes[1].path_regex, "^/o\\d+(/.*)?$") == 0 && d->routes[1].regex);
        CHECK(d->routes[1].action == ROUTE_REDIRECT && d->routes[1].redirect_status == 301);
        CHECK(d->routes[2].action == ROUTE_RESPOND && d->routes[2].respond_status == 503);
        CHECK(strcmp(d->routes[2].respond_body, c->routes[2].respond_body) == 0);
        CHECK(d->routes[3].action == ROUTE_RESPOND && d->routes[3].respond_body[0] == '\0');
    }
    config_unref(d);
    config_unref(c);
}

UNIT_TEST(json_text)
{
    struct config *c = load("t.yaml", full_yaml);
    char *j = c ? config_to_json(c) : NULL;
    CHECK(j != NULL);
    if (j) {
        /* Top-level keys in file order, upstreams in config order. */
        const char *keys[] = { "\"workers\"", "\"log\"", "\"limits\"", "\"forwarding\"",
                               "\"admin\"", "\"listeners\"", "\"upstreams\"", "\"zeta\"",
                               "\"app\"", "\"routes\"" };
        const char *prev = j;
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
            const char *at = strstr(j, keys[i]);
            CHECK(at != NULL && at >= prev);
            prev = at ? at : prev;
        }
        CHECK(j[0] == '{' && j[strlen(j) - 2] == '}' && j[strlen(j) - 1] == '\n');
        /* Durations as strings the loader reads back; sizes as integers. */
        CHECK(strstr(j, "\"flush_interval\": \"250ms\"") != NULL);
        CHECK(strstr(j, "\"drain_timeout\": \"1500ms\"") != NULL);
        CHECK(strstr(j, "\"body_timeout\": \"1m\"") != NULL);
        CHECK(strstr(j, "\"tunnel_timeout\": \"2h\"") != NULL);
        CHECK(strstr(j, "\"idle\": \"1d\"") != NULL);
        CHECK(strstr(j, "\"max_body_bytes\": 10737418240") != NULL);
        CHECK(strstr(j, "\"max_header_bytes\": 32768") != NULL);
        CHECK(strstr(j, "\"via\": true") != NULL);
        CHECK(strstr(j, "\"status\": \"200-204\"") != NULL);
        CHECK(strstr(j, "\"budget\": 35") != NULL);
        CHECK(strstr(j, "\"address\": \"backend.internal:9002\"") != NULL);
        /* Escapes: quote, backslash, controls, and what YAML would fold (NEL, U+2028, BOM). */
        CHECK(strstr(j, "\"down \\\"now\\\"\\\\\\u000a\\u0009\\u0001\\u007f\xc3\xa9\\u2028"
                        "\\u0085\\ufeff\xf0\x9f\x98\x80 end\"") != NULL);
        CHECK(strstr(j, "\"^/o\\\\d+(/.*)?$\"") != NULL);
        /* Absent things stay absent: no per_try_timeout for app, no token-less admin key. */
        CHECK(strstr(strstr(j, "\"app\""), "per_try_timeout") == NULL);
    }
    free(j);
    config_unref(c);
    CHECK(config_to_json(NULL) == NULL);
}

UNIT_TEST(defaults_round_trip)
{
    struct config *c = load("t.yaml", LISTEN "upstreams: { a: { servers: [ {address: "
                                             "\"127.0.0.1:1\"} ] } }\n");
    CHECK(c != NULL);
    if (!c)
        return;
    char *j = config_to_json(c);
    CHECK(j && strstr(j, "health_check") == NULL); /* off unless given */
    CHECK(j && strstr(j, "\"routes\"") == NULL && strstr(j, "\"token\"") == NULL);
    CHECK(j && strstr(j, "\"slow_start\": \"0ms\"") != NULL);
    free(j);
    struct config *d = round_trip(unit_failed, c);
    CHECK(d && !d->upstreams[0].health_check.enabled && d->upstreams[0].retries.attempts == 2);
    CHECK(d && d->n_routes == 0 && d->admin_token == NULL);
    config_unref(d);
    config_unref(c);
    c = load("t.yaml", LISTEN "admin: { address: off }\n");
    d = c ? round_trip(unit_failed, c) : NULL;
    CHECK(d && strcmp(d->admin_address, "off") == 0 && d->n_upstreams == 0);
    config_unref(d);
    config_unref(c);
}

/* Every seed of the config fuzz corpus and the example that loads must round-trip. */
UNIT_TEST(round_trip_corpus)
{
    const char *dir = "tests/fuzz/corpus/config";
    DIR *d = opendir(dir);
    int loaded = 0;
    CHECK(d != NULL);
    for (struct dirent *e; d && (e = readdir(d));) {
        char path[512];
        struct conf_errors errs = { 0 };
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        config_set_resolver(test_resolve);
        struct config *c = config_load_file(path, &errs);
        conf_errors_free(&errs);
        if (!c)
            continue;
        loaded++;
        config_unref(round_trip(unit_failed, c));
        config_unref(c);
    }
    if (d)
        closedir(d);
    CHECK(loaded >= 4);
    struct conf_errors errs = { 0 };
    struct config *c = config_load_file("examples/quickstart.yaml", &errs);
    conf_errors_free(&errs);
    CHECK(c != NULL);
    config_unref(c ? round_trip(unit_failed, c) : NULL);
    config_unref(c);
}

/* ------------------------------------------------------------------------------------- */

static const char edit_yaml[] = LISTEN
    "upstreams:\n"
    "  app:\n"
    "    servers:\n"
    "      - { address: \"127.0.0.1:9001\", weight: 2 }\n"
    "      - { address: \"backend.internal:9002\" }\n"
    "    retries: { statuses: [502] }\n"
    "  solo:\n"
    "    servers: [ { address: \"127.0.0.1:9100\" } ]\n"
    "routes:\n"
    "  - { match: { path_prefix: /solo }, upstream: solo }\n"
    "  - { upstream: app }\n";

/* Loads edited JSON (freeing it), which must be valid. */
static struct config *load_edit(int *unit_failed, char *json)
{
    CHECK(json != NULL);
    struct config *c = json ? load("edit.json", json) : NULL;
    CHECK(c != NULL);
    free(json);
    return c;
}

/* Dumps of A and B are equal. */
static bool same_dump(const struct config *a, const struct config *b)
{
    char *x = config_to_json(a), *y = config_to_json(b);
    bool same = x && y && strcmp(x, y) == 0;
    free(x);
    free(y);
    return same;
}

UNIT_TEST(edit_add_and_remove)
{
    const char *err = "untouched";
    struct config *c = load("t.yaml", edit_yaml);
    if (!c) {
        CHECK(c != NULL);
        return;
    }
    struct config *added = load_edit(unit_failed,
                                     config_edit_add_server(c, "app", "127.0.0.1:9003", 7, &err));
    CHECK(err == NULL);
    if (added) {
        const struct conf_upstream *u = config_find_upstream(added, "app");
        CHECK(u->n_servers == 3 && strcmp(u->servers[2].address, "127.0.0.1:9003") == 0);
        CHECK(u->servers[2].weight == 7 && !u->servers[2].drain && u->servers[2].index == 2);
        CHECK(u->servers[0].weight == 2 && strcmp(u->servers[1].address,
                                                  "backend.internal:9002") == 0);
        CHECK(u->retries.n_statuses == 1 && added->n_routes == 2);
        CHECK(added->routes[1].upstream == u);
        CHECK(config_find_upstream(added, "solo")->n_servers == 1);
        /* Removing it again gives back the original, all the rest unchanged. */
        struct config *back = load_edit(unit_failed, config_edit_remove_server(
                                                         added, "app", "127.0.0.1:9003", &err));
        CHECK(err == NULL && back && same_dump(back, c));
        config_unref(back);
    }
    config_unref(added);
    /* Weight 0 means the default, 1; a host name is kept as written. */
    added = load_edit(unit_failed, config_edit_add_server(c, "solo", "localhost:9200", 0, &err));
    CHECK(added && config_find_upstream(added, "solo")->servers[1].weight == 1);
    CHECK(added && strcmp(config_find_upstream(added, "solo")->servers[1].address,
                          "localhost:9200") == 0);
    config_unref(added);
    struct config *removed = load_edit(unit_failed, config_edit_remove_server(
                                                        c, "app", "127.0.0.1:9001", &err));
    if (removed) {
        const struct conf_upstream *u = config_find_upstream(removed, "app");
        CHECK(u->n_servers == 1 && strcmp(u->servers[0].address, "backend.internal:9002") == 0);
        CHECK(u->servers[0].index == 0);
    }
    config_unref(removed);
    config_unref(c);
}

UNIT_TEST(edit_server)
{
    const char *err = "untouched";
    struct config *c = load("t.yaml", edit_yaml);
    if (!c) {
        CHECK(c != NULL);
        return;
    }
    struct config *e1 = load_edit(unit_failed, config_edit_server(c, "app", "127.0.0.1:9001", 9,
                                                                  -1, &err));
    CHECK(err == NULL);
    if (e1) {
        const struct conf_upstream *u = config_find_upstream(e1, "app");
        CHECK(u->servers[0].weight == 9 && !u->servers[0].drain);
        CHECK(u->servers[1].weight == 1 && !u->servers[1].drain);
    }
    struct config *e2 = e1 ? load_edit(unit_failed, config_edit_server(
                                                         e1, "app", "backend.internal:9002", 0,
                                                         1, &err))
                           : NULL;
    if (e2) {
        const struct conf_upstream *u = config_find_upstream(e2, "app");
        CHECK(u->servers[0].weight == 9 && !u->servers[0].drain); /* kept */
        CHECK(u->servers[1].weight == 1 && u->servers[1].drain);
        /* Undrain and set the weight back: the original again. */
        struct config *e3 = load_edit(unit_failed, config_edit_server(
                                                       e2, "app", "backend.internal:9002", 0, 0,
                                                       &err));
        struct config *e4 = e3 ? load_edit(unit_failed, config_edit_server(
                                                             e3, "app", "127.0.0.1:9001", 2, -1,
                                                             &err))
                               : NULL;
        CHECK(e4 && same_dump(e4, c));
        config_unref(e3);
        config_unref(e4);
    }
    config_unref(e2);
    config_unref(e1);
    /* A numeric address matches the same endpoint written differently. */
    e1 = load_edit(unit_failed, config_edit_server(c, "app", "127.0.0.1:09001", 0, 1, &err));
    CHECK(e1 && config_find_upstream(e1, "app")->servers[0].drain);
    config_unref(e1);
    config_unref(c);
}

UNIT_TEST(edit_errors)
{
    const char *err = NULL;
    struct config *c = load("t.yaml", edit_yaml);
    if (!c) {
        CHECK(c != NULL);
        return;
    }
    CHECK(config_edit_add_server(c, "nope", "127.0.0.1:1", 1, &err) == NULL);
    CHECK(err && strcmp(err, "unknown upstream") == 0);
    CHECK(config_edit_remove_server(c, "nope", "127.0.0.1:9001", &err) == NULL);
    CHECK(err && strcmp(err, "unknown upstream") == 0);
    CHECK(config_edit_server(c, NULL, "127.0.0.1:9001", 1, 1, &err) == NULL);
    CHECK(err && strcmp(err, "unknown upstream") == 0);
    CHECK(config_edit_add_server(c, "app", "127.0.0.1:9001", 1, &err) == NULL);
    CHECK(err && strcmp(err, "server already exists") == 0);
    CHECK(config_edit_add_server(c, "app", "127.0.0.1:09001", 1, &err) == NULL);
    CHECK(err && strcmp(err, "server already exists") == 0);
    CHECK(config_edit_add_server(c, "app", "backend.internal:9002", 1, &err) == NULL);
    CHECK(err && strcmp(err, "server already exists") == 0);
    CHECK(config_edit_add_server(c, "app", "a b:1", 1, &err) == NULL);
    CHECK(err && strcmp(err, "invalid server address") == 0);
    CHECK(config_edit_add_server(c, "app", NULL, 1, &err) == NULL);
    CHECK(err && strcmp(err, "invalid server address") == 0);
    CHECK(config_edit_remove_server(c, "app", "127.0.0.1:9999", &err) == NULL);
    CHECK(err && strcmp(err, "unknown server") == 0);
    CHECK(config_edit_server(c, "app", "127.0.0.1:9999", 1, 1, &err) == NULL);
    CHECK(err && strcmp(err, "unknown server") == 0);
    CHECK(config_edit_server(c, "app", "", 1, 1, &err) == NULL);
    CHECK(err && strcmp(err, "unknown server") == 0);
    CHECK(config_edit_remove_server(c, "solo", "127.0.0.1:9100", &err) == NULL);
    CHECK(err && strcmp(err, "an upstream needs at least one server") == 0);
    CHECK(config_edit_add_server(NULL, "app", "127.0.0.1:1", 1, &err) == NULL);
    CHECK(err && strcmp(err, "unknown upstream") == 0);
    /* An edit the loader refuses (weight out of range) still yields JSON; loading it reports
     * the problem like any other config error. */
    char *j = config_edit_add_server(c, "app", "127.0.0.1:1", 2000000, &err);
    CHECK(j != NULL && err == NULL);
    struct conf_errors errs = { 0 };
    struct config *bad = j ? config_load_buffer("edit.json", j, strlen(j), &errs) : NULL;
    CHECK(bad == NULL && errs.n == 1 &&
          strstr(errs.msgs[0], "weight \"2000000\" is out of range") != NULL);
    conf_errors_free(&errs);
    free(j);
    config_unref(c);
}

UNIT_MAIN();
