/* Unit tests of the content-delivery part of the config schema: top-level cache_zones and route
 * cache / compress / buffering — values, defaults, errors with their FILE:LINE:COL, and the
 * JSON round trip. */
#include <stdbool.h>
#include <stdlib.h>

#include "conf/config.h"
#include "unit.h"

/* Lines 1-4. */
#define HEAD "listeners: [{name: web, address: \"127.0.0.1:8080\"}]\n" \
             "upstreams:\n"                                            \
             "  app:\n"                                                \
             "    servers: [ { address: \"127.0.0.1:9000\" } ]\n"
/* Lines 5-7. */
#define ZONES "cache_zones:\n"     \
              "  main:\n"          \
              "    memory: 16MiB\n"
/* One route whose first key line is X (indented by four): line 10 after ZONES, else 7. */
#define ROUTE(x) "routes:\n"                    \
                 "  - upstream: app\n" x

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

UNIT_TEST(nothing_configured)
{
    struct config *cfg = loads(HEAD ROUTE(""));
    CHECK(cfg != NULL);
    if (!cfg)
        return;
    CHECK_EQ_INT(cfg->n_cache_zones, 0);
    const struct conf_route *r = &cfg->routes[0];
    CHECK(!r->cache.enabled && r->cache.zone == NULL);
    CHECK(!r->compress.enabled);
    CHECK_EQ_INT(r->buffering.response, 0);
    CHECK_EQ_INT(r->buffering.response_file, 0);
    CHECK_EQ_INT(r->buffering.request, 0);
    CHECK(config_find_cache_zone(cfg, "main") == NULL);
    char *j = config_to_json(cfg);
    CHECK(j && !strstr(j, "cache") && !strstr(j, "compress") && !strstr(j, "buffering"));
    free(j);
    config_unref(cfg);
}

UNIT_TEST(defaults)
{
    struct config *cfg = loads(HEAD ZONES ROUTE("    cache: { zone: main }\n    compress: {}\n"));
    CHECK(cfg != NULL);
    if (!cfg)
        return;
    CHECK_EQ_INT(cfg->n_cache_zones, 1);
    const struct conf_cache_zone *z = &cfg->cache_zones[0];
    CHECK(strcmp(z->name, "main") == 0);
    CHECK_EQ_INT(z->index, 0);
    CHECK_EQ_INT(z->memory, 16 << 20);
    CHECK_EQ_INT(z->max_object_size, 8 << 20);
    CHECK(z->path == NULL);
    CHECK_EQ_INT(z->max_size, 0);
    CHECK(config_find_cache_zone(cfg, "main") == z);
    CHECK(config_find_cache_zone(cfg, "other") == NULL);

    const struct conf_route_cache *c = &cfg->routes[0].cache;
    CHECK(c->enabled && c->zone == z);
    CHECK_EQ_INT(c->n_key, 4);
    if (c->n_key == 4) {
        CHECK_EQ_INT(c->key[0].kind, CACHE_KEY_SCHEME);
        CHECK_EQ_INT(c->key[1].kind, CACHE_KEY_HOST);
        CHECK_EQ_INT(c->key[2].kind, CACHE_KEY_PATH);
        CHECK_EQ_INT(c->key[3].kind, CACHE_KEY_QUERY);
        CHECK(c->key[0].name == NULL);
    }
    CHECK_EQ_INT(c->n_methods, 2);
    CHECK(c->n_methods == 2 && strcmp(c->methods[0], "GET") == 0 && strcmp(c->methods[1], "HEAD") == 0);
    CHECK_EQ_INT(c->default_ttl_ms, 0);
    CHECK_EQ_INT(c->heuristic_max_ms, 86400000);
    CHECK_EQ_INT(c->stale_while_revalidate_ms, 0);
    CHECK_EQ_INT(c->stale_if_error_ms, 0);
    CHECK(!c->allow_set_cookie);
    CHECK(strcmp(c->tag_header, "Surrogate-Key") == 0);
    CHECK_EQ_INT(c->lock_timeout_ms, 5000);

    const struct conf_route_compress *k = &cfg->routes[0].compress;
    CHECK(k->enabled);
    CHECK_EQ_INT(k->n_algorithms, 3);
    CHECK(k->algorithms[0] == COMPRESS_BR && k->algorithms[1] == COMPRESS_ZSTD &&
          k->algorithms[2] == COMPRESS_GZIP);
    CHECK_EQ_INT(k->n_types, 8);
    CHECK(k->n_types == 8 && strcmp(k->types[0], "text/html") == 0 &&
          strcmp(k->types[7], "image/svg+xml") == 0);
    CHECK_EQ_INT(k->min_size, 1024);
    CHECK_EQ_INT(k->level[COMPRESS_BR], 4);
    CHECK_EQ_INT(k->level[COMPRESS_ZSTD], 3);
    CHECK_EQ_INT(k->level[COMPRESS_GZIP], 6);
    config_unref(cfg);
}

UNIT_TEST(full)
{
    struct config *cfg = loads(
        HEAD
        "cache_zones:\n"
        "  main: { memory: 256MiB, max_object_size: 1MiB, path: /var/cache/p/main, max_size: 10GiB }\n"
        "  small: { memory: 2MiB }\n"
        "routes:\n"
        "  - upstream: app\n"
        "    cache:\n"
        "      zone: small\n"
        "      key: [method, host, path, \"header:Accept-Language\", \"cookie:session\"]\n"
        "      methods: [GET]\n"
        "      default_ttl: 30s\n"
        "      heuristic_max: 0\n"
        "      stale_while_revalidate: 1m\n"
        "      stale_if_error: 1h\n"
        "      allow_set_cookie: true\n"
        "      tag_header: Cache-Tag\n"
        "      lock_timeout: 250ms\n"
        "    compress:\n"
        "      algorithms: [gzip, br]\n"
        "      types: [Text/HTML, application/wasm]\n"
        "      min_size: 0\n"
        "      level: { gzip: 9, br: 11, zstd: 19 }\n"
        "    buffering: { response: 1MiB, response_file: 64MiB, request: 64KiB }\n"
        "  - upstream: app\n"
        "    compress: true\n"
        "    cache: false\n"
        "  - upstream: app\n"
        "    compress: false\n");
    CHECK(cfg != NULL);
    if (!cfg)
        return;
    CHECK_EQ_INT(cfg->n_cache_zones, 2);
    const struct conf_cache_zone *z = &cfg->cache_zones[0], *s = &cfg->cache_zones[1];
    CHECK_EQ_INT(z->memory, 256ULL << 20);
    CHECK_EQ_INT(z->max_object_size, 1 << 20);
    CHECK(z->path && strcmp(z->path, "/var/cache/p/main") == 0);
    CHECK_EQ_INT(z->max_size, 10ULL << 30);
    CHECK_EQ_INT(s->index, 1);
    CHECK_EQ_INT(s->max_object_size, 2 << 20); /* the default shrinks to the zone */

    const struct conf_route_cache *c = &cfg->routes[0].cache;
    CHECK(c->enabled && c->zone == s);
    CHECK_EQ_INT(c->n_key, 5);
    if (c->n_key == 5) {
        CHECK_EQ_INT(c->key[0].kind, CACHE_KEY_METHOD);
        CHECK_EQ_INT(c->key[3].kind, CACHE_KEY_HEADER);
        CHECK(strcmp(c->key[3].name, "Accept-Language") == 0);
        CHECK_EQ_INT(c->key[4].kind, CACHE_KEY_COOKIE);
        CHECK(strcmp(c->key[4].name, "session") == 0);
    }
    CHECK(c->n_methods == 1 && strcmp(c->methods[0], "GET") == 0);
    CHECK_EQ_INT(c->default_ttl_ms, 30000);
    CHECK_EQ_INT(c->heuristic_max_ms, 0);
    CHECK_EQ_INT(c->stale_while_revalidate_ms, 60000);
    CHECK_EQ_INT(c->stale_if_error_ms, 3600000);
    CHECK(c->allow_set_cookie);
    CHECK(strcmp(c->tag_header, "Cache-Tag") == 0);
    CHECK_EQ_INT(c->lock_timeout_ms, 250);

    const struct conf_route_compress *k = &cfg->routes[0].compress;
    CHECK(k->enabled && k->n_algorithms == 2);
    CHECK(k->algorithms[0] == COMPRESS_GZIP && k->algorithms[1] == COMPRESS_BR);
    CHECK(k->n_types == 2 && strcmp(k->types[0], "text/html") == 0 &&
          strcmp(k->types[1], "application/wasm") == 0);
    CHECK_EQ_INT(k->min_size, 0);
    CHECK_EQ_INT(k->level[COMPRESS_GZIP], 9);
    CHECK_EQ_INT(k->level[COMPRESS_BR], 11);
    CHECK_EQ_INT(k->level[COMPRESS_ZSTD], 19);

    const struct conf_route_buffering *b = &cfg->routes[0].buffering;
    CHECK_EQ_INT(b->response, 1 << 20);
    CHECK_EQ_INT(b->response_file, 64 << 20);
    CHECK_EQ_INT(b->request, 64 << 10);

    CHECK(cfg->routes[1].compress.enabled && cfg->routes[1].compress.n_types == 8);
    CHECK(!cfg->routes[1].cache.enabled);
    CHECK(!cfg->routes[2].compress.enabled);
    config_unref(cfg);
}

UNIT_TEST(zone_errors)
{
    CHECK(fails_with(HEAD "cache_zones:\n  main: { max_object_size: 1MiB }\n" ROUTE(""),
                     "t.yaml:6:9: missing required key \"memory\" in cache zone"));
    CHECK(fails_with(HEAD "cache_zones:\n  main: { memory: 512KiB }\n" ROUTE(""),
                     "t.yaml:6:19: memory \"512KiB\" is out of range (1048576 to "
                     "1125899906842624 bytes)"));
    CHECK(fails_with(HEAD "cache_zones:\n  main: { memory: 4MiB, max_object_size: 8MiB }\n" ROUTE(""),
                     "t.yaml:6:42: cache zone \"main\": max_object_size must not exceed memory"));
    CHECK(fails_with(HEAD "cache_zones:\n  main: { memory: 4MiB, path: /var/c }\n" ROUTE(""),
                     "t.yaml:6:9: cache zone \"main\": path needs max_size (the disk tier's budget)"));
    CHECK(fails_with(HEAD "cache_zones:\n  main: { memory: 4MiB, max_size: 1GiB }\n" ROUTE(""),
                     "t.yaml:6:35: cache zone \"main\": max_size needs path (the disk tier's "
                     "directory)"));
    CHECK(fails_with(HEAD "cache_zones:\n  main: { memory: 4MiB, path: var/c, max_size: 1GiB }\n"
                     ROUTE(""), "t.yaml:6:31: invalid path \"var/c\": must start with \"/\""));
    CHECK(fails_with(HEAD "cache_zones:\n  \"a b\": { memory: 4MiB }\n" ROUTE(""),
                     "t.yaml:6:3: invalid cache zone name \"a b\": may hold only letters, digits, "
                     "'_', '-', '.' and ':'"));
    CHECK(fails_with(HEAD "cache_zones:\n  main: { memory: 4MiB, ttl: 1s }\n" ROUTE(""),
                     "t.yaml:6:25: unknown key \"ttl\" in cache zone"));
    CHECK(fails_with(HEAD "cache_zones: [main]\n" ROUTE(""),
                     "t.yaml:5:14: expected a mapping for cache_zones, got a sequence"));
}

UNIT_TEST(route_cache_errors)
{
    CHECK(fails_with(HEAD ZONES ROUTE("    cache: { zone: other }\n"),
                     "t.yaml:10:20: unknown cache zone \"other\" (define it under cache_zones)"));
    CHECK(fails_with(HEAD ZONES ROUTE("    cache: { methods: [GET] }\n"),
                     "t.yaml:10:12: missing required key \"zone\" in cache"));
    CHECK(fails_with(HEAD ZONES ROUTE("    cache: main\n"),
                     "t.yaml:10:12: expected a mapping with zone for cache, got \"main\""));
    CHECK(fails_with(HEAD ZONES "routes:\n  - respond: { status: 200 }\n    cache: { zone: main }\n",
                     "t.yaml:10:12: cache needs an upstream action in route \"route1\""));
    CHECK(fails_with(HEAD ZONES ROUTE("    cache: { zone: main, key: [host, url] }\n"),
                     "t.yaml:10:38: invalid cache key item \"url\" (expected scheme, host, path, "
                     "query, method, header:NAME or cookie:NAME)"));
    CHECK(fails_with(HEAD ZONES ROUTE("    cache: { zone: main, key: [\"header:a b\"] }\n"),
                     "t.yaml:10:32: invalid cache key item \"header:a b\" (expected scheme, host, "
                     "path, query, method, header:NAME or cookie:NAME)"));
    CHECK(fails_with(HEAD ZONES ROUTE("    cache: { zone: main, key: [\"header:X-A\", \"header:x-a\"] }\n"),
                     "t.yaml:10:46: duplicate cache key item \"header:x-a\""));
    CHECK(fails_with(HEAD ZONES ROUTE("    cache: { zone: main, key: [path, path] }\n"),
                     "t.yaml:10:38: duplicate cache key item \"path\""));
    CHECK(fails_with(HEAD ZONES ROUTE("    cache: { zone: main, key: [] }\n"),
                     "t.yaml:10:31: key must list at least one item"));
    CHECK(fails_with(HEAD ZONES ROUTE("    cache: { zone: main, methods: [GET, POST] }\n"),
                     "t.yaml:10:41: method \"POST\" cannot be cached (expected GET or HEAD)"));
    CHECK(fails_with(HEAD ZONES ROUTE("    cache: { zone: main, methods: [GET, GET] }\n"),
                     "t.yaml:10:41: duplicate method \"GET\""));
    CHECK(fails_with(HEAD ZONES ROUTE("    cache: { zone: main, tag_header: \"a b\" }\n"),
                     "t.yaml:10:38: invalid tag_header \"a b\": must be a header name (a token)"));
    CHECK(fails_with(HEAD ZONES ROUTE("    cache: { zone: main, lock_timeout: 0 }\n"),
                     "t.yaml:10:40: lock_timeout \"0\" is out of range (1ms to 365d)"));
    CHECK(fails_with(HEAD ZONES ROUTE("    cache: { zone: main, default_ttl: forever }\n"),
                     "t.yaml:10:39: expected a duration (e.g. 500ms, 2s, 5m, 1h, 1d) for "
                     "default_ttl, got \"forever\""));
}

UNIT_TEST(route_compress_and_buffering_errors)
{
    CHECK(fails_with(HEAD ROUTE("    compress: { algorithms: [gzip, deflate] }\n"),
                     "t.yaml:7:36: unknown compression algorithm \"deflate\" (expected br, zstd "
                     "or gzip)"));
    CHECK(fails_with(HEAD ROUTE("    compress: { algorithms: [br, br] }\n"),
                     "t.yaml:7:34: duplicate compression algorithm \"br\""));
    CHECK(fails_with(HEAD ROUTE("    compress: { algorithms: [] }\n"),
                     "t.yaml:7:29: algorithms must list at least one algorithm"));
    CHECK(fails_with(HEAD ROUTE("    compress: { types: [text/html, \"text/html; charset=utf-8\"] }\n"),
                     "t.yaml:7:36: invalid media type \"text/html; charset=utf-8\" in types: must "
                     "be a media type such as text/html (no parameters)"));
    CHECK(fails_with(HEAD ROUTE("    compress: { types: [\"text/*\"] }\n"),
                     "t.yaml:7:25: invalid media type \"text/*\" in types: wildcards are not "
                     "supported: list each media type"));
    CHECK(fails_with(HEAD ROUTE("    compress: { types: [html] }\n"),
                     "t.yaml:7:25: invalid media type \"html\" in types: must be a media type such "
                     "as text/html"));
    CHECK(fails_with(HEAD ROUTE("    compress: { types: [text/css, TEXT/CSS] }\n"),
                     "t.yaml:7:35: duplicate media type \"TEXT/CSS\" in types"));
    CHECK(fails_with(HEAD ROUTE("    compress: { level: { gzip: 10 } }\n"),
                     "t.yaml:7:32: gzip \"10\" is out of range (1 to 9)"));
    CHECK(fails_with(HEAD ROUTE("    compress: { level: { br: 12 } }\n"),
                     "t.yaml:7:30: br \"12\" is out of range (0 to 11)"));
    CHECK(fails_with(HEAD ROUTE("    compress: { level: { zstd: 0 } }\n"),
                     "t.yaml:7:32: zstd \"0\" is out of range (1 to 19)"));
    CHECK(fails_with(HEAD ROUTE("    compress: { level: { lz4: 1 } }\n"),
                     "t.yaml:7:26: unknown key \"lz4\" in level"));
    CHECK(fails_with(HEAD ROUTE("    compress: fast\n"),
                     "t.yaml:7:15: expected a mapping, true or false for compress, got \"fast\""));
    CHECK(fails_with(HEAD ROUTE("    buffering: { response_file: 64MiB }\n"),
                     "t.yaml:7:33: buffering: response_file needs response (the memory part) "
                     "above 0"));
    CHECK(fails_with(HEAD ROUTE("    buffering: { response: 2GiB }\n"),
                     "t.yaml:7:28: response \"2GiB\" is out of range (0 to 1073741824 bytes)"));
    CHECK(fails_with(HEAD "routes:\n  - redirect: { location: /x }\n    buffering: { request: 1KiB }\n",
                     "t.yaml:7:16: buffering needs an upstream action in route \"route1\""));
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

UNIT_TEST(json_round_trip)
{
    struct config *cfg = loads(
        HEAD
        "cache_zones:\n"
        "  main: { memory: 256MiB, max_object_size: 1MiB, path: /var/cache/p/main, max_size: 10GiB }\n"
        "  small: { memory: 2MiB }\n"
        "routes:\n"
        "  - upstream: app\n"
        "    cache:\n"
        "      zone: small\n"
        "      key: [scheme, host, path, query, method, \"header:Accept\", \"cookie:sid\"]\n"
        "      methods: [HEAD]\n"
        "      default_ttl: 90s\n"
        "      stale_if_error: 1d\n"
        "      tag_header: Cache-Tag\n"
        "    compress: { algorithms: [zstd], types: [Application/JSON], min_size: 10, level: { zstd: 7 } }\n"
        "    buffering: { response: 1MiB, response_file: 64MiB }\n"
        "  - upstream: app\n"
        "    cache: { zone: main }\n"
        "    compress: true\n"
        "    buffering: { request: 8KiB }\n");
    CHECK(cfg != NULL);
    if (!cfg)
        return;
    char *j = NULL;
    struct config *again = round_trip(unit_failed, cfg, &j);
    if (again) {
        CHECK_EQ_INT(again->n_cache_zones, 2);
        CHECK(again->cache_zones[0].path && again->cache_zones[0].max_size == 10ULL << 30);
        CHECK(again->cache_zones[1].path == NULL && again->cache_zones[1].max_size == 0);
        const struct conf_route_cache *c = &again->routes[0].cache;
        CHECK(c->enabled && c->zone == &again->cache_zones[1]);
        CHECK_EQ_INT(c->n_key, 7);
        CHECK(c->n_key == 7 && strcmp(c->key[6].name, "sid") == 0);
        CHECK(c->n_methods == 1 && strcmp(c->methods[0], "HEAD") == 0);
        CHECK_EQ_INT(c->default_ttl_ms, 90000);
        CHECK_EQ_INT(c->stale_if_error_ms, 86400000);
        const struct conf_route_compress *k = &again->routes[0].compress;
        CHECK(k->n_algorithms == 1 && k->algorithms[0] == COMPRESS_ZSTD);
        CHECK(k->n_types == 1 && strcmp(k->types[0], "application/json") == 0);
        CHECK_EQ_INT(k->level[COMPRESS_ZSTD], 7);
        CHECK_EQ_INT(k->level[COMPRESS_GZIP], 6);
        CHECK_EQ_INT(again->routes[0].buffering.response_file, 64 << 20);
        CHECK(again->routes[1].cache.zone == &again->cache_zones[0]);
        CHECK(again->routes[1].compress.enabled);
        CHECK_EQ_INT(again->routes[1].buffering.request, 8192);
    }
    CHECK(j && strstr(j, "\"zone\": \"small\"") != NULL);
    CHECK(j && strstr(j, "\"header:Accept\"") != NULL);
    CHECK(j && strstr(j, "\"default_ttl\": \"90s\"") != NULL);
    CHECK(j && strstr(j, "\"heuristic_max\": \"1d\"") != NULL);
    CHECK(j && strstr(j, "\"lock_timeout\": \"5s\"") != NULL);
    CHECK(j && strstr(j, "\"max_size\": 10737418240") != NULL);
    free(j);
    config_unref(again);
    config_unref(cfg);
}

UNIT_MAIN();
