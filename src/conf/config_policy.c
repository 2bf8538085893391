/* config_policy: the protection part of the schema — address ranges and allow/deny lists,
 * trusted proxies, rate limits and their Redis, authentication, WAF, security headers and the
 * Server header. Same key tables as config.c (see config_priv.h); config.c's listener, route and
 * top-level tables point at the setters and writers here. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/config_priv.h"
#include "core/str.h"

/* ---------------------------------------------------------------------------------------
 * Address ranges */

static void conf_cidr_text(const struct conf_cidr *c, char *out, size_t cap)
{
    char ip[INET6_ADDRSTRLEN] = "";
    inet_ntop(c->family, c->addr, ip, sizeof ip);
    snprintf(out, cap, "%s/%u", ip, c->bits);
}

/* The items of a key that takes one scalar or a sequence of them ("allow: all" or
 * "allow: [a, b]"): VAL's children, or ONE holding VAL itself. */
static const struct yaml_doc_node *const *conf_items(const struct yaml_doc_node *val,
                                                     const struct yaml_doc_node *one[1],
                                                     size_t *count)
{
    if (val->kind == YAML_DOC_SEQUENCE) {
        *count = yaml_doc_count(val);
        return (const struct yaml_doc_node *const *)val->kids;
    }
    *count = 1;
    return one;
}

/* Appends the ranges of sequence (or single scalar) VAL to *V / *N. "all" (when ALL_OK) stands
 * for 0.0.0.0/0 and ::/0. */
static void conf_cidrs_parse(struct conf_ctx *ctx, const struct yaml_doc_node *val,
                             const char *name, bool all_ok, struct conf_cidr **v, size_t *n)
{
    char q[CONF_QUOTE_SIZE];
    const struct yaml_doc_node *one[1] = { val };
    size_t count;
    const struct yaml_doc_node *const *items = conf_items(val, one, &count);
    *v = realloc(*v, (*n + 2 * count + 1) * sizeof **v);
    if (!*v)
        abort();
    for (size_t i = 0; i < count; i++) {
        const char *text = conf_scalar(ctx, items[i], "an address range", name);
        if (!text)
            continue;
        if (all_ok && strcmp(text, "all") == 0) {
            (*v)[(*n)++] = (struct conf_cidr){ .family = AF_INET };
            (*v)[(*n)++] = (struct conf_cidr){ .family = AF_INET6 };
        } else if (conf_cidr_parse(text, &(*v)[*n]) == 0) {
            (*n)++;
        } else {
            conf_error(ctx, items[i], "invalid address range %s in %s (expected e.g. "
                       "10.0.0.0/8, 192.0.2.7 or 2001:db8::/32%s)", conf_quote_node(q, items[i]),
                       name, all_ok ? ", or all" : "");
        }
    }
}

static void conf_json_cidrs(struct conf_json *w, const char *key, const struct conf_cidr *v,
                            size_t n)
{
    char text[INET6_ADDRSTRLEN + 8];
    struct conf_json_mark m = conf_json_open(w, key, '[');
    for (size_t i = 0; i < n; i++) {
        conf_cidr_text(&v[i], text, sizeof text);
        conf_json_str(w, NULL, text);
    }
    conf_json_close_or_drop(w, m, ']');
}

/* ---------------------------------------------------------------------------------------
 * allow / deny */

static void conf_acl_add(struct conf_ctx *ctx, const struct yaml_doc_node *val, struct conf_acl *acl,
                         bool allow)
{
    struct conf_cidr *v = NULL;
    size_t n = 0;
    conf_cidrs_parse(ctx, val, allow ? "allow" : "deny", true, &v, &n);
    struct conf_acl_rule *rules = realloc(acl->rules, (acl->n + n + 1) * sizeof *rules);
    if (!rules)
        abort();
    for (size_t i = 0; i < n; i++)
        rules[acl->n++] = (struct conf_acl_rule){ .allow = allow, .cidr = v[i] };
    acl->rules = rules;
    free(v);
}

void conf_set_listener_allow(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base)
{
    conf_acl_add(ctx, val, &((struct conf_listener *)base)->acl, true);
}

void conf_set_listener_deny(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base)
{
    conf_acl_add(ctx, val, &((struct conf_listener *)base)->acl, false);
}

void conf_set_route_allow(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base)
{
    conf_acl_add(ctx, val, &((struct conf_route *)base)->acl, true);
}

void conf_set_route_deny(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base)
{
    conf_acl_add(ctx, val, &((struct conf_route *)base)->acl, false);
}

/* Both lists, in rule order (a list is one run of rules: the file order of the two keys is the
 * order rules are tried in, so it is kept). */
static void conf_dump_acl(struct conf_json *w, const struct conf_acl *acl)
{
    char text[INET6_ADDRSTRLEN + 8];
    for (size_t i = 0; i < acl->n;) {
        bool allow = acl->rules[i].allow;
        conf_json_open(w, allow ? "allow" : "deny", '[');
        for (; i < acl->n && acl->rules[i].allow == allow; i++) {
            conf_cidr_text(&acl->rules[i].cidr, text, sizeof text);
            conf_json_str(w, NULL, text);
        }
        conf_json_close(w, ']');
    }
}

void conf_dump_listener_acl(struct conf_json *w, const struct conf_key *key, const void *base)
{
    (void)key;
    conf_dump_acl(w, &((const struct conf_listener *)base)->acl);
}

void conf_dump_route_acl(struct conf_json *w, const struct conf_key *key, const void *base)
{
    (void)key;
    conf_dump_acl(w, &((const struct conf_route *)base)->acl);
}

void conf_dump_nothing(struct conf_json *w, const struct conf_key *key, const void *base)
{
    (void)w, (void)key, (void)base;
}

/* ---------------------------------------------------------------------------------------
 * trusted_proxies, server_header */

void conf_set_trusted_proxies(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base)
{
    struct config *cfg = base;
    conf_cidrs_parse(ctx, val, "trusted_proxies", false, &cfg->trusted_proxies,
                     &cfg->n_trusted_proxies);
}

void conf_dump_trusted_proxies(struct conf_json *w, const struct conf_key *key, const void *base)
{
    const struct config *cfg = base;
    conf_json_cidrs(w, key->name, cfg->trusted_proxies, cfg->n_trusted_proxies);
}

void conf_set_server_header(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base)
{
    struct config *cfg = base;
    const char *text = conf_scalar(ctx, val, "off, name or a header value", "server_header");
    if (!text)
        return;
    free(cfg->server_header_text);
    cfg->server_header_text = NULL;
    if (strcmp(text, "off") == 0 || strcmp(text, "false") == 0) {
        cfg->server_header = SERVER_HEADER_OFF;
    } else if (strcmp(text, "name") == 0) {
        cfg->server_header = SERVER_HEADER_NAME;
    } else if (!*text || !conf_is_field_value(text)) {
        conf_error(ctx, val, "invalid server_header: must be off, name, or a header value "
                   "without control characters");
    } else {
        cfg->server_header = SERVER_HEADER_CUSTOM;
        cfg->server_header_text = conf_xstrdup(text);
    }
}

void conf_dump_server_header(struct conf_json *w, const struct conf_key *key, const void *base)
{
    const struct config *cfg = base;
    conf_json_str(w, key->name, cfg->server_header == SERVER_HEADER_OFF    ? "off"
                                : cfg->server_header == SERVER_HEADER_NAME ? "name"
                                                                           : cfg->server_header_text);
}

/* ---------------------------------------------------------------------------------------
 * rate_limits, redis */

/* "10/s", "600/m", "1000/h" or "5/10s". */
static int conf_parse_rate(const char *text, uint32_t *rate, uint64_t *per_ms)
{
    const char *slash = strchr(text, '/');
    char num[24];
    uint64_t n;
    if (!slash || (size_t)(slash - text) >= sizeof num)
        return -1;
    memcpy(num, text, (size_t)(slash - text));
    num[slash - text] = '\0';
    if (conf_parse_u64(num, &n) || n < 1 || n > 1000000000)
        return -1;
    const char *unit = slash + 1;
    if (strcmp(unit, "s") == 0)
        *per_ms = 1000;
    else if (strcmp(unit, "m") == 0)
        *per_ms = 60000;
    else if (strcmp(unit, "h") == 0)
        *per_ms = 3600000;
    else if (config_parse_duration(unit, per_ms) || *per_ms == 0 || *per_ms > CONF_MAX_DURATION_MS)
        return -1;
    *rate = (uint32_t)n;
    return 0;
}

static void conf_set_rate(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base)
{
    struct conf_rate_limit *rl = base;
    char q[CONF_QUOTE_SIZE];
    const char *text = conf_scalar(ctx, val, "a rate (e.g. 10/s, 600/m, 5/10s)", "rate");
    if (text && conf_parse_rate(text, &rl->rate, &rl->per_ms))
        conf_error(ctx, val, "invalid rate %s (expected REQUESTS/PERIOD, e.g. 10/s, 600/m, 1000/h "
                   "or 5/10s)", conf_quote_node(q, val));
}

static void conf_dump_rate(struct conf_json *w, const struct conf_key *key, const void *base)
{
    const struct conf_rate_limit *rl = base;
    char text[64];
    if (rl->per_ms == 1000)
        snprintf(text, sizeof text, "%u/s", rl->rate);
    else
        snprintf(text, sizeof text, "%u/%llums", rl->rate, (unsigned long long)rl->per_ms);
    conf_json_str(w, key->name, text);
}

static bool conf_rate_key_part(const char *text, struct conf_rate_key *out)
{
    if (strcmp(text, "client_ip") == 0)
        out->kind = RATE_KEY_CLIENT_IP;
    else if (strcmp(text, "route") == 0)
        out->kind = RATE_KEY_ROUTE;
    else if (strncmp(text, "header:", 7) == 0 && conf_is_token(text + 7)) {
        out->kind = RATE_KEY_HEADER;
        out->header = conf_xstrdup(text + 7);
    } else
        return false;
    return true;
}

static void conf_set_rate_key(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base)
{
    struct conf_rate_limit *rl = base;
    char q[CONF_QUOTE_SIZE];
    const struct yaml_doc_node *one[1] = { val };
    size_t count;
    const struct yaml_doc_node *const *items = conf_items(val, one, &count);
    rl->key = conf_xcalloc(count, sizeof *rl->key);
    for (size_t i = 0; i < count; i++) {
        const char *text = conf_scalar(ctx, items[i], "a key part", "key");
        if (text && !conf_rate_key_part(text, &rl->key[rl->n_key]))
            conf_error(ctx, items[i], "invalid rate limit key %s (expected client_ip, route or "
                       "header:NAME)", conf_quote_node(q, items[i]));
        else if (text)
            rl->n_key++;
    }
}

static void conf_dump_rate_key(struct conf_json *w, const struct conf_key *key, const void *base)
{
    const struct conf_rate_limit *rl = base;
    char text[300];
    struct conf_json_mark m = conf_json_open(w, key->name, '[');
    for (size_t i = 0; i < rl->n_key; i++) {
        const struct conf_rate_key *k = &rl->key[i];
        snprintf(text, sizeof text, "%s%s",
                 k->kind == RATE_KEY_CLIENT_IP ? "client_ip" : k->kind == RATE_KEY_ROUTE ? "route"
                                                                                         : "header:",
                 k->kind == RATE_KEY_HEADER ? k->header : "");
        conf_json_str(w, NULL, text);
    }
    conf_json_close_or_drop(w, m, ']');
}

static const struct conf_key conf_rate_limit_keys[] = {
    { .name = "rate", .type = CT_CUSTOM, .set = conf_set_rate, .dump = conf_dump_rate,
      .required = true },
    { .name = "burst", .type = CT_U32, .off = offsetof(struct conf_rate_limit, burst), .min = 1,
      .max = 1000000000 },
    { .name = "key", .type = CT_CUSTOM, .set = conf_set_rate_key, .dump = conf_dump_rate_key },
    { .name = "cluster", .type = CT_BOOL, .off = offsetof(struct conf_rate_limit, cluster) },
};
static const struct conf_table conf_rate_limit_table =
    CONF_TABLE("rate limit", conf_rate_limit_keys);

void conf_set_rate_limits(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base)
{
    struct config *cfg = base;
    char q[CONF_QUOTE_SIZE];
    if (!conf_is_map(ctx, val, "rate_limits"))
        return;
    conf_check_keys(ctx, val, "rate_limits", false);
    cfg->rate_limits = conf_xcalloc(yaml_doc_count(val), sizeof *cfg->rate_limits);
    for (size_t i = 0; i < yaml_doc_count(val); i++) {
        const struct yaml_doc_node *k = yaml_doc_key(val, i);
        if (k->kind != YAML_DOC_SCALAR)
            continue;
        struct conf_rate_limit *rl = &cfg->rate_limits[cfg->n_rate_limits];
        rl->index = cfg->n_rate_limits++;
        rl->name = conf_xstrdup(k->text);
        const char *problem = memchr(k->text, '\0', k->len) ? "must not hold NUL"
                                                             : conf_check_name(rl->name);
        if (problem)
            conf_error(ctx, k, "invalid rate limit name %s: %s", conf_quote_node(q, k), problem);
        conf_apply(ctx, yaml_doc_value(val, i), &conf_rate_limit_table, rl, NULL);
        if (!rl->burst)
            rl->burst = rl->rate ? rl->rate : 1;
        if (!rl->n_key) {
            free(rl->key);
            rl->key = conf_xcalloc(1, sizeof *rl->key);
            rl->n_key = 1; /* client_ip */
        }
    }
}

void conf_dump_rate_limits(struct conf_json *w, const struct conf_key *key, const void *base)
{
    const struct config *cfg = base;
    struct conf_json_mark m = conf_json_open(w, key->name, '{');
    for (size_t i = 0; i < cfg->n_rate_limits; i++)
        conf_dump_nested(w, cfg->rate_limits[i].name, &conf_rate_limit_table,
                         &cfg->rate_limits[i]);
    conf_json_close_or_drop(w, m, '}');
}

static void conf_set_on_error(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base)
{
    struct conf_redis *r = base;
    char q[CONF_QUOTE_SIZE];
    const char *text = conf_scalar(ctx, val, "open or closed", "on_error");
    if (text && strcmp(text, "open") == 0)
        r->fail_open = true;
    else if (text && strcmp(text, "closed") == 0)
        r->fail_open = false;
    else if (text)
        conf_error(ctx, val, "invalid value %s for on_error (expected one of: open, closed)",
                   conf_quote_node(q, val));
}

static void conf_dump_on_error(struct conf_json *w, const struct conf_key *key, const void *base)
{
    conf_json_str(w, key->name, ((const struct conf_redis *)base)->fail_open ? "open" : "closed");
}

static const struct conf_key conf_redis_keys[] = {
    { .name = "address", .type = CT_STRING, .off = offsetof(struct conf_redis, address),
      .check = conf_check_address, .required = true },
    { .name = "timeout", .type = CT_DURATION, .off = offsetof(struct conf_redis, timeout_ms),
      .min = 1, .max = CONF_MAX_DURATION_MS },
    { .name = "on_error", .type = CT_CUSTOM, .set = conf_set_on_error, .dump = conf_dump_on_error },
    { .name = "prefix", .type = CT_STRING, .off = offsetof(struct conf_redis, prefix),
      .check = conf_check_visible },
};
static const struct conf_table conf_redis_table = CONF_TABLE("redis", conf_redis_keys);

void conf_set_redis(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base)
{
    struct conf_redis *r = &((struct config *)base)->redis;
    conf_apply(ctx, val, &conf_redis_table, r, NULL);
    if (r->address && config_parse_address(r->address, &r->addr, &r->addr_len))
        r->addr_len = 0;
}

void conf_dump_redis(struct conf_json *w, const struct conf_key *key, const void *base)
{
    const struct conf_redis *r = &((const struct config *)base)->redis;
    if (r->address)
        conf_dump_nested(w, key->name, &conf_redis_table, r);
}

/* route `rate_limit: NAME` or `[NAME, ...]`: names from the top-level rate_limits. */
void conf_set_route_rate_limit(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base)
{
    struct conf_route *route = base;
    struct config *cfg = ctx->cfg;
    char q[CONF_QUOTE_SIZE];
    const struct yaml_doc_node *one[1] = { val };
    size_t count;
    const struct yaml_doc_node *const *items = conf_items(val, one, &count);
    route->rate_limits = conf_xcalloc(count, sizeof *route->rate_limits);
    for (size_t i = 0; i < count; i++) {
        const char *text = conf_scalar(ctx, items[i], "a rate limit name", "rate_limit");
        struct conf_rate_limit *found = NULL;
        for (size_t j = 0; text && j < cfg->n_rate_limits; j++)
            if (strcmp(cfg->rate_limits[j].name, text) == 0)
                found = &cfg->rate_limits[j];
        if (found)
            route->rate_limits[route->n_rate_limits++] = found;
        else if (text)
            conf_error(ctx, items[i], "unknown rate limit %s (define it under rate_limits)",
                       conf_quote_node(q, items[i]));
    }
}

void conf_dump_route_rate_limit(struct conf_json *w, const struct conf_key *key, const void *base)
{
    const struct conf_route *route = base;
    struct conf_json_mark m = conf_json_open(w, key->name, '[');
    for (size_t i = 0; i < route->n_rate_limits; i++)
        conf_json_str(w, NULL, route->rate_limits[i]->name);
    conf_json_close_or_drop(w, m, ']');
}

/* ---------------------------------------------------------------------------------------
 * auth */

static const char *const conf_jwt_algorithms[] = { "HS256", "RS256", "ES256" };

static void conf_set_algorithms(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base)
{
    struct conf_auth *a = base;
    char q[CONF_QUOTE_SIZE];
    if (!conf_is_seq(ctx, val, "algorithms"))
        return;
    a->algorithms = conf_xcalloc(yaml_doc_count(val), sizeof *a->algorithms);
    for (size_t i = 0; i < yaml_doc_count(val); i++) {
        const char *text = conf_scalar(ctx, val->kids[i], "an algorithm", "algorithms");
        bool ok = false;
        for (size_t j = 0; text && j < sizeof conf_jwt_algorithms / sizeof *conf_jwt_algorithms; j++)
            ok = ok || strcmp(text, conf_jwt_algorithms[j]) == 0;
        if (ok)
            a->algorithms[a->n_algorithms++] = conf_xstrdup(text);
        else if (text)
            conf_error(ctx, val->kids[i], "unsupported JWT algorithm %s (expected HS256, RS256 "
                       "or ES256)", conf_quote_node(q, val->kids[i]));
    }
}

static void conf_dump_algorithms(struct conf_json *w, const struct conf_key *key, const void *base)
{
    const struct conf_auth *a = base;
    conf_json_strs(w, key->name, (const char *const *)a->algorithms, a->n_algorithms);
}

#define AUTH_STR(n, f, chk, req) { .name = n, .type = CT_STRING, \
                                   .off = offsetof(struct conf_auth, f), .check = chk, .required = req }

static const struct conf_key conf_basic_keys[] = {
    AUTH_STR("realm", realm, conf_check_visible, false),
    AUTH_STR("users_file", users_file, conf_check_nonempty, true),
};
static const struct conf_table conf_basic_table = CONF_TABLE("basic", conf_basic_keys);

static const struct conf_key conf_jwt_keys[] = {
    AUTH_STR("key_file", key_file, conf_check_nonempty, false),
    AUTH_STR("jwks_file", jwks_file, conf_check_nonempty, false),
    { .name = "algorithms", .type = CT_CUSTOM, .set = conf_set_algorithms,
      .dump = conf_dump_algorithms },
    AUTH_STR("issuer", issuer, conf_check_nonempty, false),
    AUTH_STR("audience", audience, conf_check_nonempty, false),
    { .name = "leeway", .type = CT_DURATION, .off = offsetof(struct conf_auth, leeway_ms),
      .min = 0, .max = CONF_MAX_DURATION_MS },
    { .name = "claims", .type = CT_HEADERS, .off = offsetof(struct conf_auth, claims),
      .count_off = offsetof(struct conf_auth, n_claims), .no_framing = true },
};
static const struct conf_table conf_jwt_table = CONF_TABLE("jwt", conf_jwt_keys);

static const struct conf_key conf_forward_keys[] = {
    AUTH_STR("address", forward_address, conf_check_address, true),
    AUTH_STR("path", forward_path, conf_check_path, false),
    { .name = "timeout", .type = CT_DURATION, .off = offsetof(struct conf_auth, forward_timeout_ms),
      .min = 1, .max = CONF_MAX_DURATION_MS },
    { .name = "request_headers", .type = CT_TOKENS,
      .off = offsetof(struct conf_auth, forward_request_headers),
      .count_off = offsetof(struct conf_auth, n_forward_request_headers) },
    { .name = "response_headers", .type = CT_TOKENS,
      .off = offsetof(struct conf_auth, forward_response_headers),
      .count_off = offsetof(struct conf_auth, n_forward_response_headers) },
};
static const struct conf_table conf_forward_table = CONF_TABLE("forward", conf_forward_keys);

/* The header names claims map to must be tokens we may set. */
static void conf_check_claims(struct conf_ctx *ctx, const struct yaml_doc_node *val,
                              const struct conf_auth *a)
{
    const struct yaml_doc_node *claims = yaml_doc_get(val, "claims");
    for (size_t i = 0; i < a->n_claims; i++)
        if (!conf_is_token(a->claims[i].value))
            conf_error(ctx, claims, "claims: %s maps to an invalid header name (must be a token)",
                       a->claims[i].name);
}

static void conf_auth_kind(struct conf_ctx *ctx, const struct yaml_doc_node *k,
                           const struct yaml_doc_node *v, struct conf_auth *a)
{
    char q[CONF_QUOTE_SIZE];
    if (strcmp(k->text, "basic") == 0) {
        a->kind = AUTH_BASIC;
        conf_apply(ctx, v, &conf_basic_table, a, NULL);
    } else if (strcmp(k->text, "jwt") == 0) {
        a->kind = AUTH_JWT;
        conf_apply(ctx, v, &conf_jwt_table, a, NULL);
        if (!a->key_file == !a->jwks_file)
            conf_error(ctx, v, "jwt needs exactly one of key_file and jwks_file");
        conf_check_claims(ctx, v, a);
    } else if (strcmp(k->text, "forward") == 0) {
        a->kind = AUTH_FORWARD;
        conf_apply(ctx, v, &conf_forward_table, a, NULL);
        if (a->forward_address &&
            config_parse_address(a->forward_address, &a->forward_addr, &a->forward_addr_len))
            a->forward_addr_len = 0;
    } else {
        conf_error(ctx, k, "unknown key %s in auth (expected one of: basic, jwt, forward)",
                   conf_quote_node(q, k));
    }
}

void conf_set_auth(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base)
{
    struct conf_auth *a = &((struct conf_route *)base)->auth;
    if (!conf_is_map(ctx, val, "auth"))
        return;
    conf_check_keys(ctx, val, "auth", false);
    if (yaml_doc_count(val) != 1) {
        conf_error(ctx, val, "auth needs exactly one of basic, jwt, forward");
        return;
    }
    a->realm = conf_xstrdup("portero");
    a->leeway_ms = 30000;
    a->forward_path = conf_xstrdup("/");
    a->forward_timeout_ms = 2000;
    const struct yaml_doc_node *k = yaml_doc_key(val, 0);
    if (k->kind == YAML_DOC_SCALAR)
        conf_auth_kind(ctx, k, yaml_doc_value(val, 0), a);
}

void conf_dump_auth(struct conf_json *w, const struct conf_key *key, const void *base)
{
    const struct conf_auth *a = &((const struct conf_route *)base)->auth;
    if (a->kind == AUTH_NONE)
        return;
    conf_json_open(w, key->name, '{');
    if (a->kind == AUTH_BASIC)
        conf_dump_nested(w, "basic", &conf_basic_table, a);
    else if (a->kind == AUTH_JWT)
        conf_dump_nested(w, "jwt", &conf_jwt_table, a);
    else
        conf_dump_nested(w, "forward", &conf_forward_table, a);
    conf_json_close(w, '}');
}

/* ---------------------------------------------------------------------------------------
 * waf */

static const char *const conf_waf_modes[] = { "off", "detect", "block", NULL };

static const struct conf_key conf_waf_keys[] = {
    { .name = "mode", .type = CT_ENUM, .off = offsetof(struct conf_waf, mode),
      .names = conf_waf_modes },
    { .name = "paranoia", .type = CT_U32, .off = offsetof(struct conf_waf, paranoia), .min = 1,
      .max = 4 },
    { .name = "body_limit", .type = CT_SIZE64, .off = offsetof(struct conf_waf, body_limit),
      .min = 0, .max = 64ULL << 20 },
    { .name = "audit_log", .type = CT_STRING, .off = offsetof(struct conf_waf, audit_log),
      .check = conf_check_nonempty },
};
static const struct conf_table conf_waf_table = CONF_TABLE("waf", conf_waf_keys);
_Static_assert(sizeof(enum waf_mode) == sizeof(int), "enums are stored as int");

void conf_set_waf(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base)
{
    struct conf_waf *waf = &((struct conf_route *)base)->waf;
    *waf = (struct conf_waf){ .mode = WAF_BLOCK, .paranoia = 1, .body_limit = 128 * 1024 };
    conf_apply(ctx, val, &conf_waf_table, waf, NULL);
}

void conf_dump_waf(struct conf_json *w, const struct conf_key *key, const void *base)
{
    const struct conf_waf *waf = &((const struct conf_route *)base)->waf;
    if (waf->mode != WAF_OFF)
        conf_dump_nested(w, key->name, &conf_waf_table, waf);
}

/* ---------------------------------------------------------------------------------------
 * security_headers: friendly keys for the usual response headers */

static const struct {
    const char *key, *header;
} conf_security_names[] = {
    { "hsts", "Strict-Transport-Security" },
    { "content_type_options", "X-Content-Type-Options" },
    { "frame_options", "X-Frame-Options" },
    { "referrer_policy", "Referrer-Policy" },
    { "csp", "Content-Security-Policy" },
    { "permissions_policy", "Permissions-Policy" },
};
#define CONF_N_SECURITY (sizeof conf_security_names / sizeof conf_security_names[0])

static size_t conf_security_index(const struct yaml_doc_node *k)
{
    for (size_t i = 0; i < CONF_N_SECURITY; i++)
        if (k->kind == YAML_DOC_SCALAR && strcmp(k->text, conf_security_names[i].key) == 0)
            return i;
    return CONF_N_SECURITY;
}

void conf_set_security_headers(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base)
{
    struct conf_route *route = base;
    char q[CONF_QUOTE_SIZE];
    if (!conf_is_map(ctx, val, "security_headers"))
        return;
    conf_check_keys(ctx, val, "security_headers", false);
    route->security_headers = conf_xcalloc(CONF_N_SECURITY, sizeof *route->security_headers);
    for (size_t i = 0; i < yaml_doc_count(val) && route->n_security_headers < CONF_N_SECURITY; i++) {
        const struct yaml_doc_node *k = yaml_doc_key(val, i), *v = yaml_doc_value(val, i);
        size_t at = conf_security_index(k);
        if (at == CONF_N_SECURITY) {
            if (k->kind == YAML_DOC_SCALAR)
                conf_error(ctx, k, "unknown key %s in security_headers (expected one of: hsts, "
                           "content_type_options, frame_options, referrer_policy, csp, "
                           "permissions_policy)", conf_quote_node(q, k));
            continue;
        }
        const char *text = conf_scalar(ctx, v, "a header value", k->text);
        if (!text)
            continue;
        if (!*text || !conf_is_field_value(text)) {
            conf_error(ctx, v, "invalid value for %s: must be a non-empty header value", k->text);
            continue;
        }
        struct conf_header_kv *kv = &route->security_headers[route->n_security_headers++];
        kv->name = conf_xstrdup(conf_security_names[at].header);
        kv->value = conf_xstrdup(text);
    }
}

void conf_dump_security_headers(struct conf_json *w, const struct conf_key *key, const void *base)
{
    const struct conf_route *route = base;
    struct conf_json_mark m = conf_json_open(w, key->name, '{');
    for (size_t i = 0; i < route->n_security_headers; i++)
        for (size_t j = 0; j < CONF_N_SECURITY; j++)
            if (strcmp(route->security_headers[i].name, conf_security_names[j].header) == 0)
                conf_json_str(w, conf_security_names[j].key, route->security_headers[i].value);
    conf_json_close_or_drop(w, m, '}');
}

/* ---------------------------------------------------------------------------------------
 * Defaults, cross-checks, freeing */

void conf_policy_defaults(struct config *cfg)
{
    cfg->real_ip_header = conf_xstrdup("X-Forwarded-For");
    cfg->redis = (struct conf_redis){ .timeout_ms = 50, .fail_open = true,
                                      .prefix = conf_xstrdup("portero:") };
    cfg->server_header = SERVER_HEADER_NAME;
}

void conf_policy_check(struct conf_ctx *ctx)
{
    struct config *cfg = ctx->cfg;
    const struct yaml_doc_node *rls = yaml_doc_get(ctx->root, "rate_limits");
    for (size_t i = 0; i < cfg->n_rate_limits; i++)
        if (cfg->rate_limits[i].cluster && !cfg->redis.address)
            conf_error(ctx, rls ? yaml_doc_get(rls, cfg->rate_limits[i].name) : NULL,
                       "rate limit \"%s\" is cluster-wide but no redis is configured (add "
                       "redis: { address: HOST:PORT })", cfg->rate_limits[i].name);
    for (size_t i = 0; i < cfg->n_listeners; i++)
        if (cfg->listeners[i].proxy_protocol && !cfg->n_trusted_proxies)
            conf_error(ctx, ctx->listeners_node ? ctx->listeners_node->kids[i] : NULL,
                       "listener \"%s\" has proxy_protocol but trusted_proxies is empty (list the "
                       "load balancers allowed to send PROXY headers)", cfg->listeners[i].name);
}

void conf_policy_free_listener(struct conf_listener *l)
{
    free(l->acl.rules);
}

static void conf_free_auth(struct conf_auth *a)
{
    free(a->realm);
    free(a->users_file);
    free(a->key_file);
    free(a->jwks_file);
    conf_free_strs(a->algorithms, a->n_algorithms);
    free(a->issuer);
    free(a->audience);
    conf_free_kvs(a->claims, a->n_claims);
    free(a->forward_address);
    free(a->forward_path);
    conf_free_strs(a->forward_request_headers, a->n_forward_request_headers);
    conf_free_strs(a->forward_response_headers, a->n_forward_response_headers);
}

void conf_policy_free_route(struct conf_route *r)
{
    free(r->acl.rules);
    free(r->rate_limits);
    conf_free_auth(&r->auth);
    free(r->waf.audit_log);
    conf_free_kvs(r->security_headers, r->n_security_headers);
}

void conf_policy_free(struct config *cfg)
{
    free(cfg->trusted_proxies);
    free(cfg->real_ip_header);
    for (size_t i = 0; i < cfg->n_rate_limits; i++) {
        struct conf_rate_limit *rl = &cfg->rate_limits[i];
        free(rl->name);
        for (size_t j = 0; j < rl->n_key; j++)
            free(rl->key[j].header);
        free(rl->key);
    }
    free(cfg->rate_limits);
    free(cfg->redis.address);
    free(cfg->redis.prefix);
    free(cfg->server_header_text);
}
