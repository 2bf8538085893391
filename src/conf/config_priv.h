/* config_priv: the loader's machinery shared by the files of src/conf — error collection, the
 * key-table walker and the JSON writer — so that each part of the schema can live in its own
 * file (config.c: core proxy; config_policy.c: protection; config_tls.c: TLS and HTTP/2;
 * config_cache.c: caching, compression and buffering).
 * Private to src/conf/. */
#ifndef PORTERO_CONF_CONFIG_PRIV_H
#define PORTERO_CONF_CONFIG_PRIV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf/config.h"
#include "conf/yaml_doc.h"

#define CONF_MAX_DURATION_MS (365ULL * 86400 * 1000) /* a year: beyond it, surely a typo */
#define CONF_QUOTE_SIZE 200

struct conf_err {
    unsigned line, col;
    size_t seq; /* insertion order: keeps the sort stable */
    char *msg;
};

struct conf_ctx {
    const char *file;
    struct config *cfg;
    struct conf_err *errs;
    size_t n_errs, cap_errs;
    const struct yaml_doc_node *root;
    const struct yaml_doc_node *listeners_node;
    const struct yaml_doc_node *routes_node; /* walked last: routes name upstreams */
};

enum conf_type {
    CT_STRING,   /* char *, optional check */
    CT_BOOL,     /* bool */
    CT_U32,      /* uint32_t in [min, max] */
    CT_INT,      /* int in [min, max] */
    CT_DURATION, /* uint64_t milliseconds in [min, max] */
    CT_SIZE32,   /* uint32_t bytes in [min, max] */
    CT_SIZE64,   /* uint64_t bytes in [min, max] */
    CT_ENUM,     /* an enum (int-sized), value = index in names */
    CT_HEADERS,  /* struct conf_header_kv * with its size_t count at count_off */
    CT_TOKENS,   /* char ** of tokens with its size_t count at count_off */
    CT_NESTED,   /* a mapping walked with sub, base + off */
    CT_CUSTOM,   /* set(ctx, value, base) does it all */
};

struct conf_table;
struct conf_key;
struct conf_json;
typedef const char *(*conf_check_fn)(char *s);
typedef void (*conf_set_fn)(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base);
typedef void (*conf_dump_fn)(struct conf_json *w, const struct conf_key *key, const void *base);

struct conf_key {
    const char *name;
    enum conf_type type;
    size_t off;                   /* field offset in the base struct */
    size_t count_off;             /* CT_HEADERS, CT_TOKENS */
    uint64_t min, max;            /* numeric bounds */
    const char *const *names;     /* CT_ENUM, NULL-terminated */
    conf_check_fn check;          /* CT_STRING */
    conf_set_fn set;              /* CT_CUSTOM */
    conf_dump_fn dump;            /* writes the key as JSON; NULL: by type (CT_CUSTOM: as
                                     CT_NESTED, with sub at off) */
    const struct conf_table *sub; /* CT_NESTED */
    bool required;
    bool no_framing;              /* CT_HEADERS: refuse framing header names */
};

struct conf_table {
    const char *what; /* for messages: `unknown key "x" in WHAT` */
    const struct conf_key *keys;
    size_t n;
};

#define CONF_TABLE(what, keys) { what, keys, sizeof keys / sizeof keys[0] }
#define CONF_FIELD(base, T, off) ((T *)(void *)((char *)(base) + (off)))
#define CONF_CFIELD(base, T, off) ((const T *)(const void *)((const char *)(base) + (off)))

/* Where a JSON container began, to take it back if it stays empty. */
struct conf_json_mark {
    size_t len;
    bool first;
};

/* Allocation failure while loading aborts (nothing sensible to do). */
void *conf_xcalloc(size_t n, size_t size);
char *conf_xstrdup(const char *s);

/* Records "FILE:LINE:COL: message" at AT (NULL: 1:1). */
void conf_error(struct conf_ctx *ctx, const struct yaml_doc_node *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* TEXT as a short printable quoted string in OUT; returns OUT. */
const char *conf_quote(char out[CONF_QUOTE_SIZE], const char *text, size_t len);
const char *conf_quote_node(char out[CONF_QUOTE_SIZE], const struct yaml_doc_node *n);
void conf_type_error(struct conf_ctx *ctx, const struct yaml_doc_node *val, const char *want,
                     const char *name);

/* Scalars and containers: each reports what is wrong and returns NULL / false. */
const char *conf_scalar(struct conf_ctx *ctx, const struct yaml_doc_node *val, const char *want,
                        const char *name);
bool conf_scalar_u64(struct conf_ctx *ctx, const struct yaml_doc_node *val, const char *want,
                     const char *name, uint64_t *out);
bool conf_is_map(struct conf_ctx *ctx, const struct yaml_doc_node *val, const char *name);
/* A boolean scalar (also for shorthands such as `tls: true`): 1 true, 0 false, -1 not a
 * boolean (nothing reported). */
int conf_bool_value(const struct yaml_doc_node *val);
bool conf_is_seq(struct conf_ctx *ctx, const struct yaml_doc_node *val, const char *name);
void conf_check_keys(struct conf_ctx *ctx, const struct yaml_doc_node *map, const char *what,
                     bool icase);
int conf_parse_u64(const char *text, uint64_t *out);

/* The walker: MAP with table T into BASE; *SEEN_OUT gets a bit per key present. */
bool conf_apply(struct conf_ctx *ctx, const struct yaml_doc_node *map, const struct conf_table *t,
                void *base, uint64_t *seen_out);
void conf_apply_key(struct conf_ctx *ctx, const struct conf_key *key,
                    const struct yaml_doc_node *val, void *base);
uint64_t conf_bit(const struct conf_table *t, const char *name);
void conf_set_headers(struct conf_ctx *ctx, const struct conf_key *key,
                      const struct yaml_doc_node *val, void *base);

/* String checks for CT_STRING keys: NULL if fine, else what is wrong. */
bool conf_is_token(const char *s);
bool conf_is_field_value(const char *s);
const char *conf_check_name(char *s);
const char *conf_check_path(char *s);
const char *conf_check_visible(char *s);
const char *conf_check_nonempty(char *s);
const char *conf_check_address(char *s);

void conf_free_kvs(struct conf_header_kv *kv, size_t n);
void conf_free_strs(char **v, size_t n);
void conf_free_ops(struct conf_header_ops *ops);

/* The JSON writer. */
struct conf_json_mark conf_json_open(struct conf_json *w, const char *key, char open);
void conf_json_close(struct conf_json *w, char close);
void conf_json_close_or_drop(struct conf_json *w, struct conf_json_mark m, char close);
void conf_json_str(struct conf_json *w, const char *key, const char *s);
void conf_json_u64(struct conf_json *w, const char *key, uint64_t v);
void conf_json_bool(struct conf_json *w, const char *key, bool v);
void conf_json_duration(struct conf_json *w, const char *key, uint64_t ms);
void conf_json_headers(struct conf_json *w, const char *key, const struct conf_header_kv *kv,
                       size_t n);
void conf_json_strs(struct conf_json *w, const char *key, const char *const *v, size_t n);
void conf_dump_nested(struct conf_json *w, const char *key, const struct conf_table *sub,
                      const void *base);
void conf_dump_table(struct conf_json *w, const struct conf_table *t, const void *base);

/* config_policy.c: the protection schema; config.c's tables point at these. */
void conf_set_listener_allow(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base);
void conf_set_listener_deny(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base);
void conf_set_route_allow(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base);
void conf_set_route_deny(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base);
void conf_dump_listener_acl(struct conf_json *w, const struct conf_key *key, const void *base);
void conf_dump_route_acl(struct conf_json *w, const struct conf_key *key, const void *base);
void conf_dump_nothing(struct conf_json *w, const struct conf_key *key, const void *base);
void conf_set_trusted_proxies(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base);
void conf_dump_trusted_proxies(struct conf_json *w, const struct conf_key *key, const void *base);
void conf_set_server_header(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base);
void conf_dump_server_header(struct conf_json *w, const struct conf_key *key, const void *base);
void conf_set_rate_limits(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base);
void conf_dump_rate_limits(struct conf_json *w, const struct conf_key *key, const void *base);
void conf_set_redis(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base);
void conf_dump_redis(struct conf_json *w, const struct conf_key *key, const void *base);
void conf_set_route_rate_limit(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base);
void conf_dump_route_rate_limit(struct conf_json *w, const struct conf_key *key, const void *base);
void conf_set_auth(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base);
void conf_dump_auth(struct conf_json *w, const struct conf_key *key, const void *base);
void conf_set_waf(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base);
void conf_dump_waf(struct conf_json *w, const struct conf_key *key, const void *base);
void conf_set_security_headers(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base);
void conf_dump_security_headers(struct conf_json *w, const struct conf_key *key, const void *base);
void conf_policy_defaults(struct config *cfg);
/* Cross-key checks after the walk (cluster limits need redis, proxy_protocol needs
 * trusted_proxies). */
void conf_policy_check(struct conf_ctx *ctx);
void conf_policy_free_listener(struct conf_listener *l);
void conf_policy_free_route(struct conf_route *r);
void conf_policy_free(struct config *cfg);

/* config_tls.c: listener tls / http2 / redirect_https, upstream tls / protocol. */
extern const char *const conf_upstream_protocols[];
void conf_set_listener_tls(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base);
void conf_dump_listener_tls(struct conf_json *w, const struct conf_key *key, const void *base);
void conf_set_listener_http2(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base);
void conf_dump_listener_http2(struct conf_json *w, const struct conf_key *key, const void *base);
void conf_set_redirect_https(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base);
void conf_dump_redirect_https(struct conf_json *w, const struct conf_key *key, const void *base);
void conf_set_upstream_tls(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base);
void conf_dump_upstream_tls(struct conf_json *w, const struct conf_key *key, const void *base);
void conf_tls_listener_init(struct conf_listener *l);
void conf_tls_upstream_init(struct conf_upstream *up);
/* Cross-key checks after the walk (tls and redirect_https exclude each other). */
void conf_tls_check(struct conf_ctx *ctx);
void conf_tls_free_listener(struct conf_listener *l);
void conf_tls_free_upstream(struct conf_upstream *up);

/* config_cache.c: top-level cache_zones, route cache / compress / buffering. */
void conf_set_cache_zones(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base);
void conf_dump_cache_zones(struct conf_json *w, const struct conf_key *key, const void *base);
void conf_set_route_cache(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base);
void conf_dump_route_cache(struct conf_json *w, const struct conf_key *key, const void *base);
void conf_set_route_compress(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base);
void conf_dump_route_compress(struct conf_json *w, const struct conf_key *key, const void *base);
void conf_set_route_buffering(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base);
void conf_dump_route_buffering(struct conf_json *w, const struct conf_key *key, const void *base);
/* Cross-key checks after the routes (cache and buffering need the upstream action). */
void conf_cache_check(struct conf_ctx *ctx);
void conf_cache_free_route(struct conf_route *r);
void conf_cache_free(struct config *cfg);

#endif
