/* config_cache: the content-delivery part of the schema — top-level `cache_zones:` and route
 * `cache:`, `compress:` and `buffering:`. Same key tables as config.c (see config_priv.h);
 * config.c's top-level and route tables point at the setters and writers here.
 *
 * Loading checks shape and ranges only: whether a zone's `path` can be created and written is
 * found out when the store opens it (runtime_build), so that a reload reports it and keeps the
 * old configuration. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/config_priv.h"
#include "core/str.h"

#define CACHE_MIB (1024ULL * 1024)
#define CACHE_MAX_BYTES (1ULL << 50)          /* a petabyte: beyond it, surely a typo */
#define CACHE_DEFAULT_MAX_OBJECT (8 * CACHE_MIB)
#define CACHE_MAX_BUFFER (1ULL << 30)         /* memory buffers: 1GiB per exchange at most */
#define CACHE_MAX_BUFFER_FILE (1ULL << 40)    /* temp files: 1TiB */

static const char *const conf_compress_names[COMPRESS_N] = { "br", "zstd", "gzip" };
_Static_assert(COMPRESS_BR == 0 && COMPRESS_ZSTD == 1 && COMPRESS_GZIP == 2 && COMPRESS_N == 3,
               "conf_compress_names follows enum compress_algo");

static const char *const conf_compress_default_types[] = {
    "text/html", "text/css", "text/plain", "text/javascript", "application/javascript",
    "application/json", "application/xml", "image/svg+xml",
};
#define CONF_N_DEFAULT_TYPES (sizeof conf_compress_default_types / sizeof conf_compress_default_types[0])

/* The items of sequence VAL, which must hold at least one: NULL (reported) otherwise. */
static struct yaml_doc_node *const *conf_cache_items(struct conf_ctx *ctx,
                                                     const struct yaml_doc_node *val,
                                                     const char *name, const char *what,
                                                     size_t *count)
{
    if (!conf_is_seq(ctx, val, name))
        return NULL;
    *count = yaml_doc_count(val);
    if (*count == 0) {
        conf_error(ctx, val, "%s must list at least one %s", name, what);
        return NULL;
    }
    return val->kids;
}

/* ---------------------------------------------------------------------------------------
 * cache_zones */

static void conf_dump_zone_max_size(struct conf_json *w, const struct conf_key *key,
                                    const void *base)
{
    const struct conf_cache_zone *z = base;
    if (z->max_size)
        conf_json_u64(w, key->name, z->max_size);
}

static const struct conf_key conf_cache_zone_keys[] = {
    { .name = "memory", .type = CT_SIZE64, .off = offsetof(struct conf_cache_zone, memory),
      .min = CACHE_MIB, .max = CACHE_MAX_BYTES, .required = true },
    { .name = "max_object_size", .type = CT_SIZE64,
      .off = offsetof(struct conf_cache_zone, max_object_size), .min = 1, .max = CACHE_MAX_BYTES },
    { .name = "path", .type = CT_STRING, .off = offsetof(struct conf_cache_zone, path),
      .check = conf_check_path },
    { .name = "max_size", .type = CT_SIZE64, .off = offsetof(struct conf_cache_zone, max_size),
      .min = CACHE_MIB, .max = CACHE_MAX_BYTES, .dump = conf_dump_zone_max_size },
};
static const struct conf_table conf_cache_zone_table = CONF_TABLE("cache zone", conf_cache_zone_keys);

/* Cross-key rules of one zone: an object must fit the memory tier; the disk tier needs both its
 * directory and its budget. */
static void conf_cache_zone_check(struct conf_ctx *ctx, const struct yaml_doc_node *map,
                                  struct conf_cache_zone *z, uint64_t seen)
{
    const struct conf_table *t = &conf_cache_zone_table;
    bool has_path = seen & conf_bit(t, "path"), has_max = seen & conf_bit(t, "max_size");
    if (!(seen & conf_bit(t, "max_object_size")) && z->memory && z->max_object_size > z->memory)
        z->max_object_size = z->memory; /* the default shrinks to a small zone */
    if (z->memory && z->max_object_size > z->memory)
        conf_error(ctx, yaml_doc_get(map, "max_object_size"),
                   "cache zone \"%s\": max_object_size must not exceed memory", z->name);
    if (has_path && !has_max)
        conf_error(ctx, map, "cache zone \"%s\": path needs max_size (the disk tier's budget)",
                   z->name);
    if (has_max && !has_path)
        conf_error(ctx, yaml_doc_get(map, "max_size"),
                   "cache zone \"%s\": max_size needs path (the disk tier's directory)", z->name);
}

void conf_set_cache_zones(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base)
{
    struct config *cfg = base;
    char q[CONF_QUOTE_SIZE];
    if (!conf_is_map(ctx, val, "cache_zones"))
        return;
    conf_check_keys(ctx, val, "cache_zones", false);
    cfg->cache_zones = conf_xcalloc(yaml_doc_count(val), sizeof *cfg->cache_zones);
    for (size_t i = 0; i < yaml_doc_count(val); i++) {
        const struct yaml_doc_node *k = yaml_doc_key(val, i), *v = yaml_doc_value(val, i);
        uint64_t seen;
        if (k->kind != YAML_DOC_SCALAR)
            continue;
        struct conf_cache_zone *z = &cfg->cache_zones[cfg->n_cache_zones];
        z->index = cfg->n_cache_zones++;
        z->name = conf_xstrdup(k->text);
        z->max_object_size = CACHE_DEFAULT_MAX_OBJECT;
        const char *problem = memchr(k->text, '\0', k->len) ? "must not hold NUL"
                                                             : conf_check_name(z->name);
        if (problem)
            conf_error(ctx, k, "invalid cache zone name %s: %s", conf_quote_node(q, k), problem);
        if (conf_apply(ctx, v, &conf_cache_zone_table, z, &seen))
            conf_cache_zone_check(ctx, v, z, seen);
    }
}

void conf_dump_cache_zones(struct conf_json *w, const struct conf_key *key, const void *base)
{
    const struct config *cfg = base;
    struct conf_json_mark m = conf_json_open(w, key->name, '{');
    for (size_t i = 0; i < cfg->n_cache_zones; i++)
        conf_dump_nested(w, cfg->cache_zones[i].name, &conf_cache_zone_table,
                         &cfg->cache_zones[i]);
    conf_json_close_or_drop(w, m, '}');
}

const struct conf_cache_zone *config_find_cache_zone(const struct config *cfg, const char *name)
{
    for (size_t i = 0; cfg && name && i < cfg->n_cache_zones; i++)
        if (strcmp(cfg->cache_zones[i].name, name) == 0)
            return &cfg->cache_zones[i];
    return NULL;
}

/* ---------------------------------------------------------------------------------------
 * Route cache: zone, key, methods */

static void conf_set_cache_zone(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base)
{
    struct conf_route_cache *c = base;
    char q[CONF_QUOTE_SIZE];
    const char *text = conf_scalar(ctx, val, "a cache zone name", "zone");
    if (!text)
        return;
    c->zone = (struct conf_cache_zone *)config_find_cache_zone(ctx->cfg, text);
    if (!c->zone)
        conf_error(ctx, val, "unknown cache zone %s (define it under cache_zones)",
                   conf_quote_node(q, val));
}

static void conf_dump_cache_zone(struct conf_json *w, const struct conf_key *key, const void *base)
{
    const struct conf_route_cache *c = base;
    if (c->zone)
        conf_json_str(w, key->name, c->zone->name);
}

static const struct {
    const char *name;
    enum cache_key_kind kind;
} conf_cache_key_names[] = {
    { "scheme", CACHE_KEY_SCHEME }, { "host", CACHE_KEY_HOST }, { "path", CACHE_KEY_PATH },
    { "query", CACHE_KEY_QUERY },   { "method", CACHE_KEY_METHOD },
    { "header:", CACHE_KEY_HEADER }, { "cookie:", CACHE_KEY_COOKIE },
};
#define CONF_N_KEY_NAMES (sizeof conf_cache_key_names / sizeof conf_cache_key_names[0])

/* One key item: "scheme", "host", "path", "query", "method", "header:NAME" or "cookie:NAME"
 * (NAME a token). False if TEXT is none of these. */
static bool conf_cache_key_item(const char *text, struct conf_cache_key *out)
{
    for (size_t i = 0; i < CONF_N_KEY_NAMES; i++) {
        const char *name = conf_cache_key_names[i].name;
        size_t n = strlen(name);
        bool named = name[n - 1] == ':';
        if (named ? strncmp(text, name, n) != 0 || !conf_is_token(text + n) : strcmp(text, name) != 0)
            continue;
        out->kind = conf_cache_key_names[i].kind;
        out->name = named ? conf_xstrdup(text + n) : NULL;
        return true;
    }
    return false;
}

/* Header names compare without case (RFC 9110 section 5.1), cookie names with. */
static bool conf_cache_key_same(const struct conf_cache_key *a, const struct conf_cache_key *b)
{
    if (a->kind != b->kind)
        return false;
    if (a->kind == CACHE_KEY_HEADER)
        return str_ieq(str_make(a->name, strlen(a->name)), str_make(b->name, strlen(b->name)));
    return a->kind != CACHE_KEY_COOKIE || strcmp(a->name, b->name) == 0;
}

static void conf_free_cache_keys(struct conf_cache_key *k, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(k[i].name);
    free(k);
}

static void conf_set_cache_key(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base)
{
    struct conf_route_cache *c = base;
    char q[CONF_QUOTE_SIZE];
    size_t count;
    struct yaml_doc_node *const *items = conf_cache_items(ctx, val, "key", "item", &count);
    if (!items)
        return;
    conf_free_cache_keys(c->key, c->n_key);
    c->key = conf_xcalloc(count, sizeof *c->key);
    c->n_key = 0;
    for (size_t i = 0; i < count; i++) {
        const char *text = conf_scalar(ctx, items[i], "a cache key item", "key");
        struct conf_cache_key *k = &c->key[c->n_key];
        bool dup = false;
        if (!text)
            continue;
        if (!conf_cache_key_item(text, k)) {
            conf_error(ctx, items[i], "invalid cache key item %s (expected scheme, host, path, "
                       "query, method, header:NAME or cookie:NAME)", conf_quote_node(q, items[i]));
            continue;
        }
        for (size_t j = 0; j < c->n_key && !dup; j++)
            dup = conf_cache_key_same(&c->key[j], k);
        if (dup) {
            conf_error(ctx, items[i], "duplicate cache key item %s", conf_quote_node(q, items[i]));
            free(k->name);
            k->name = NULL;
            continue;
        }
        c->n_key++;
    }
}

static void conf_dump_cache_key(struct conf_json *w, const struct conf_key *key, const void *base)
{
    const struct conf_route_cache *c = base;
    char text[CONF_QUOTE_SIZE + 16];
    struct conf_json_mark m = conf_json_open(w, key->name, '[');
    for (size_t i = 0; i < c->n_key; i++) {
        const struct conf_cache_key *k = &c->key[i];
        for (size_t j = 0; j < CONF_N_KEY_NAMES; j++) {
            if (conf_cache_key_names[j].kind != k->kind)
                continue;
            snprintf(text, sizeof text, "%s%s", conf_cache_key_names[j].name, k->name ? k->name : "");
            conf_json_str(w, NULL, text);
        }
    }
    conf_json_close_or_drop(w, m, ']');
}

/* RFC 9111 section 2: only GET (and HEAD, answered from a stored GET) are cached here. */
static void conf_set_cache_methods(struct conf_ctx *ctx, const struct yaml_doc_node *val,
                                   void *base)
{
    struct conf_route_cache *c = base;
    char q[CONF_QUOTE_SIZE];
    size_t count;
    struct yaml_doc_node *const *items = conf_cache_items(ctx, val, "methods", "method", &count);
    if (!items)
        return;
    conf_free_strs(c->methods, c->n_methods);
    c->methods = conf_xcalloc(count, sizeof *c->methods);
    c->n_methods = 0;
    for (size_t i = 0; i < count; i++) {
        const char *text = conf_scalar(ctx, items[i], "a method", "methods");
        bool dup = false;
        if (!text)
            continue;
        if (strcmp(text, "GET") != 0 && strcmp(text, "HEAD") != 0) {
            conf_error(ctx, items[i], "method %s cannot be cached (expected GET or HEAD)",
                       conf_quote_node(q, items[i]));
            continue;
        }
        for (size_t j = 0; j < c->n_methods && !dup; j++)
            dup = strcmp(c->methods[j], text) == 0;
        if (dup)
            conf_error(ctx, items[i], "duplicate method %s", conf_quote_node(q, items[i]));
        else
            c->methods[c->n_methods++] = conf_xstrdup(text);
    }
}

static void conf_dump_cache_methods(struct conf_json *w, const struct conf_key *key,
                                    const void *base)
{
    const struct conf_route_cache *c = base;
    conf_json_strs(w, key->name, (const char *const *)c->methods, c->n_methods);
}

static const char *conf_check_tag_header(char *s)
{
    return conf_is_token(s) ? NULL : "must be a header name (a token)";
}

#define CACHE_DUR(n, f, lo) { .name = n, .type = CT_DURATION, \
                              .off = offsetof(struct conf_route_cache, f), .min = lo, \
                              .max = CONF_MAX_DURATION_MS }

static const struct conf_key conf_route_cache_keys[] = {
    { .name = "zone", .type = CT_CUSTOM, .set = conf_set_cache_zone, .dump = conf_dump_cache_zone,
      .required = true },
    { .name = "key", .type = CT_CUSTOM, .set = conf_set_cache_key, .dump = conf_dump_cache_key },
    { .name = "methods", .type = CT_CUSTOM, .set = conf_set_cache_methods,
      .dump = conf_dump_cache_methods },
    CACHE_DUR("default_ttl", default_ttl_ms, 0),
    CACHE_DUR("heuristic_max", heuristic_max_ms, 0),
    CACHE_DUR("stale_while_revalidate", stale_while_revalidate_ms, 0),
    CACHE_DUR("stale_if_error", stale_if_error_ms, 0),
    { .name = "allow_set_cookie", .type = CT_BOOL,
      .off = offsetof(struct conf_route_cache, allow_set_cookie) },
    { .name = "tag_header", .type = CT_STRING, .off = offsetof(struct conf_route_cache, tag_header),
      .check = conf_check_tag_header },
    CACHE_DUR("lock_timeout", lock_timeout_ms, 1),
};
static const struct conf_table conf_route_cache_table = CONF_TABLE("cache", conf_route_cache_keys);

static void conf_cache_defaults(struct conf_route_cache *c)
{
    static const enum cache_key_kind key[] = { CACHE_KEY_SCHEME, CACHE_KEY_HOST, CACHE_KEY_PATH,
                                               CACHE_KEY_QUERY };
    c->n_key = sizeof key / sizeof key[0];
    c->key = conf_xcalloc(c->n_key, sizeof *c->key);
    for (size_t i = 0; i < c->n_key; i++)
        c->key[i].kind = key[i];
    c->n_methods = 2;
    c->methods = conf_xcalloc(2, sizeof *c->methods);
    c->methods[0] = conf_xstrdup("GET");
    c->methods[1] = conf_xstrdup("HEAD");
    c->heuristic_max_ms = 86400000;
    c->tag_header = conf_xstrdup("Surrogate-Key");
    c->lock_timeout_ms = 5000;
}

/* `cache: { zone: NAME, ... }`; `cache: false` (or no key) leaves caching off. */
void conf_set_route_cache(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base)
{
    struct conf_route_cache *c = &((struct conf_route *)base)->cache;
    if (conf_bool_value(val) == 0)
        return;
    if (val->kind != YAML_DOC_MAPPING && !yaml_doc_is_null(val)) {
        conf_type_error(ctx, val, "a mapping with zone", "cache");
        return;
    }
    conf_cache_defaults(c);
    c->enabled = true;
    conf_apply(ctx, val, &conf_route_cache_table, c, NULL);
}

void conf_dump_route_cache(struct conf_json *w, const struct conf_key *key, const void *base)
{
    const struct conf_route_cache *c = &((const struct conf_route *)base)->cache;
    if (c->enabled)
        conf_dump_nested(w, key->name, &conf_route_cache_table, c);
}

/* ---------------------------------------------------------------------------------------
 * Route compress */

static void conf_set_compress_algorithms(struct conf_ctx *ctx, const struct yaml_doc_node *val,
                                         void *base)
{
    struct conf_route_compress *c = base;
    char q[CONF_QUOTE_SIZE];
    size_t count;
    struct yaml_doc_node *const *items = conf_cache_items(ctx, val, "algorithms", "algorithm",
                                                          &count);
    if (!items)
        return;
    c->n_algorithms = 0;
    for (size_t i = 0; i < count; i++) {
        const char *text = conf_scalar(ctx, items[i], "an algorithm", "algorithms");
        size_t a = 0;
        bool dup = false;
        while (text && a < COMPRESS_N && strcmp(text, conf_compress_names[a]) != 0)
            a++;
        if (!text)
            continue;
        if (a == COMPRESS_N) {
            conf_error(ctx, items[i], "unknown compression algorithm %s (expected br, zstd or "
                       "gzip)", conf_quote_node(q, items[i]));
            continue;
        }
        for (size_t j = 0; j < c->n_algorithms && !dup; j++)
            dup = c->algorithms[j] == (enum compress_algo)a;
        if (dup)
            conf_error(ctx, items[i], "duplicate compression algorithm %s",
                       conf_quote_node(q, items[i]));
        else
            c->algorithms[c->n_algorithms++] = (enum compress_algo)a;
    }
}

static void conf_dump_compress_algorithms(struct conf_json *w, const struct conf_key *key,
                                          const void *base)
{
    const struct conf_route_compress *c = base;
    struct conf_json_mark m = conf_json_open(w, key->name, '[');
    for (size_t i = 0; i < c->n_algorithms; i++)
        conf_json_str(w, NULL, conf_compress_names[c->algorithms[i]]);
    conf_json_close_or_drop(w, m, ']');
}

/* "type/subtype" (RFC 9110 section 8.3.1), lower-cased in place; parameters and wildcards are
 * refused (matching is exact). NULL if fine, else what is wrong. */
static const char *conf_check_media_type(char *s)
{
    char *slash = strchr(s, '/');
    if (!slash || slash == s || !slash[1])
        return "must be a media type such as text/html";
    if (strchr(s, '*'))
        return "wildcards are not supported: list each media type";
    *slash = '\0';
    bool ok = conf_is_token(s) && conf_is_token(slash + 1);
    *slash = '/';
    if (!ok)
        return "must be a media type such as text/html (no parameters)";
    for (char *p = s; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p + 32);
    return NULL;
}

static void conf_set_compress_types(struct conf_ctx *ctx, const struct yaml_doc_node *val,
                                    void *base)
{
    struct conf_route_compress *c = base;
    char q[CONF_QUOTE_SIZE];
    size_t count;
    struct yaml_doc_node *const *items = conf_cache_items(ctx, val, "types", "media type", &count);
    if (!items)
        return;
    conf_free_strs(c->types, c->n_types);
    c->types = conf_xcalloc(count, sizeof *c->types);
    c->n_types = 0;
    for (size_t i = 0; i < count; i++) {
        const char *text = conf_scalar(ctx, items[i], "a media type", "types");
        if (!text)
            continue;
        char *copy = conf_xstrdup(text);
        const char *problem = conf_check_media_type(copy);
        bool dup = false;
        for (size_t j = 0; !problem && j < c->n_types && !dup; j++)
            dup = strcmp(c->types[j], copy) == 0;
        if (problem)
            conf_error(ctx, items[i], "invalid media type %s in types: %s",
                       conf_quote_node(q, items[i]), problem);
        else if (dup)
            conf_error(ctx, items[i], "duplicate media type %s in types",
                       conf_quote_node(q, items[i]));
        if (problem || dup)
            free(copy);
        else
            c->types[c->n_types++] = copy;
    }
}

static void conf_dump_compress_types(struct conf_json *w, const struct conf_key *key,
                                     const void *base)
{
    const struct conf_route_compress *c = base;
    conf_json_strs(w, key->name, (const char *const *)c->types, c->n_types);
}

#define LEVEL(n, a, lo, hi) { .name = n, .type = CT_INT, \
                              .off = offsetof(struct conf_route_compress, level) + (a) * sizeof(int), \
                              .min = lo, .max = hi }

static const struct conf_key conf_compress_level_keys[] = {
    LEVEL("gzip", COMPRESS_GZIP, 1, 9),
    LEVEL("br", COMPRESS_BR, 0, 11),
    LEVEL("zstd", COMPRESS_ZSTD, 1, 19),
};
static const struct conf_table conf_compress_level_table =
    CONF_TABLE("level", conf_compress_level_keys);

static const struct conf_key conf_route_compress_keys[] = {
    { .name = "algorithms", .type = CT_CUSTOM, .set = conf_set_compress_algorithms,
      .dump = conf_dump_compress_algorithms },
    { .name = "types", .type = CT_CUSTOM, .set = conf_set_compress_types,
      .dump = conf_dump_compress_types },
    { .name = "min_size", .type = CT_SIZE64, .off = offsetof(struct conf_route_compress, min_size),
      .min = 0, .max = CACHE_MAX_BYTES },
    { .name = "level", .type = CT_NESTED, .sub = &conf_compress_level_table },
};
static const struct conf_table conf_route_compress_table =
    CONF_TABLE("compress", conf_route_compress_keys);

static void conf_compress_defaults(struct conf_route_compress *c)
{
    for (size_t a = 0; a < COMPRESS_N; a++)
        c->algorithms[a] = (enum compress_algo)a;
    c->n_algorithms = COMPRESS_N;
    c->types = conf_xcalloc(CONF_N_DEFAULT_TYPES, sizeof *c->types);
    for (size_t i = 0; i < CONF_N_DEFAULT_TYPES; i++)
        c->types[i] = conf_xstrdup(conf_compress_default_types[i]);
    c->n_types = CONF_N_DEFAULT_TYPES;
    c->min_size = 1024;
    c->level[COMPRESS_BR] = 4;
    c->level[COMPRESS_ZSTD] = 3;
    c->level[COMPRESS_GZIP] = 6;
}

/* `compress: { ... }`, `compress: true` (the defaults) or `compress: false` (off, as no key). */
void conf_set_route_compress(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base)
{
    struct conf_route_compress *c = &((struct conf_route *)base)->compress;
    int b = conf_bool_value(val);
    if (b == 0)
        return;
    if (b < 0 && val->kind != YAML_DOC_MAPPING && !yaml_doc_is_null(val)) {
        conf_type_error(ctx, val, "a mapping, true or false", "compress");
        return;
    }
    conf_compress_defaults(c);
    c->enabled = true;
    if (b < 0)
        conf_apply(ctx, val, &conf_route_compress_table, c, NULL);
}

void conf_dump_route_compress(struct conf_json *w, const struct conf_key *key, const void *base)
{
    const struct conf_route_compress *c = &((const struct conf_route *)base)->compress;
    if (c->enabled)
        conf_dump_nested(w, key->name, &conf_route_compress_table, c);
}

/* ---------------------------------------------------------------------------------------
 * Route buffering */

static const struct conf_key conf_route_buffering_keys[] = {
    { .name = "response", .type = CT_SIZE64,
      .off = offsetof(struct conf_route_buffering, response), .min = 0, .max = CACHE_MAX_BUFFER },
    { .name = "response_file", .type = CT_SIZE64,
      .off = offsetof(struct conf_route_buffering, response_file), .min = 0,
      .max = CACHE_MAX_BUFFER_FILE },
    { .name = "request", .type = CT_SIZE64, .off = offsetof(struct conf_route_buffering, request),
      .min = 0, .max = CACHE_MAX_BUFFER },
};
static const struct conf_table conf_route_buffering_table =
    CONF_TABLE("buffering", conf_route_buffering_keys);

/* `buffering: { response: SIZE, response_file: SIZE, request: SIZE }`: 0 leaves each off; the
 * temp file only continues a memory buffer. */
void conf_set_route_buffering(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base)
{
    struct conf_route_buffering *b = &((struct conf_route *)base)->buffering;
    if (!conf_apply(ctx, val, &conf_route_buffering_table, b, NULL))
        return;
    if (b->response_file && !b->response)
        conf_error(ctx, yaml_doc_get(val, "response_file"),
                   "buffering: response_file needs response (the memory part) above 0");
}

void conf_dump_route_buffering(struct conf_json *w, const struct conf_key *key, const void *base)
{
    const struct conf_route_buffering *b = &((const struct conf_route *)base)->buffering;
    if (b->response || b->response_file || b->request)
        conf_dump_nested(w, key->name, &conf_route_buffering_table, b);
}

/* ---------------------------------------------------------------------------------------
 * Cross-checks, freeing */

/* After the routes: a cache (or a buffer) sits between a client and an upstream, so it needs
 * the upstream action. */
void conf_cache_check(struct conf_ctx *ctx)
{
    const struct config *cfg = ctx->cfg;
    const struct yaml_doc_node *seq = ctx->routes_node;
    for (size_t i = 0; i < cfg->n_routes; i++) {
        const struct conf_route *r = &cfg->routes[i];
        const struct conf_route_buffering *b = &r->buffering;
        const struct yaml_doc_node *node = seq && i < yaml_doc_count(seq) ? seq->kids[i] : NULL;
        if (r->action == ROUTE_UPSTREAM)
            continue;
        if (r->cache.enabled)
            conf_error(ctx, node ? yaml_doc_get(node, "cache") : NULL,
                       "cache needs an upstream action in route \"%s\"", r->name);
        if (b->response || b->response_file || b->request)
            conf_error(ctx, node ? yaml_doc_get(node, "buffering") : NULL,
                       "buffering needs an upstream action in route \"%s\"", r->name);
    }
}

void conf_cache_free_route(struct conf_route *r)
{
    conf_free_cache_keys(r->cache.key, r->cache.n_key);
    conf_free_strs(r->cache.methods, r->cache.n_methods);
    free(r->cache.tag_header);
    conf_free_strs(r->compress.types, r->compress.n_types);
}

void conf_cache_free(struct config *cfg)
{
    for (size_t i = 0; i < cfg->n_cache_zones; i++) {
        free(cfg->cache_zones[i].name);
        free(cfg->cache_zones[i].path);
    }
    free(cfg->cache_zones);
}
