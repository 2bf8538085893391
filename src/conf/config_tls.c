/* config_tls: the TLS and HTTP/2 part of the schema — listener `tls:`, `http2:` and
 * `redirect_https:`, upstream `tls:` and `protocol:`. Same key tables as config.c (see
 * config_priv.h); config.c's listener and upstream tables point at the setters and writers here.
 *
 * Loading only checks the shape: whether the certificate, key, OCSP and CA files exist and
 * parse is found out when the TLS contexts are built (runtime_build), so that a reload reports
 * it and keeps the old configuration. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/config_priv.h"

#define CONF_TLS_HSTS_PRELOAD_MIN_S 31536000ULL /* hstspreload.org asks for a year at least */

static const char *const conf_tls_versions[] = { "1.2", "1.3", NULL };
static const char *const conf_tls_client_auth_modes[] = { "off", "optional", "required", NULL };
const char *const conf_upstream_protocols[] = { "h1", "h2", NULL };
_Static_assert(sizeof(enum tls_version) == sizeof(int), "enums are stored as int");
_Static_assert(sizeof(enum tls_client_auth) == sizeof(int), "enums are stored as int");
_Static_assert(sizeof(enum upstream_protocol) == sizeof(int), "enums are stored as int");

/* ---------------------------------------------------------------------------------------
 * String checks */

/* Cipher lists: printable ASCII, no spaces needed (OpenSSL separates with ':'). */
static const char *conf_tls_check_cipher_list(char *s)
{
    return conf_check_visible(s);
}

static const char *conf_tls_check_header(char *s)
{
    return conf_is_token(s) ? NULL : "must be a header name (a token)";
}

/* A DNS name to send as SNI and verify: letters, digits, '-' and '.', lower-cased. */
static const char *conf_tls_check_sni(char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 253 || s[0] == '.' || s[0] == '-')
        return "must be a DNS name";
    for (char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c >= 'A' && c <= 'Z')
            *p = (char)(c + 32);
        else if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.'))
            return "must be a DNS name (letters, digits, '-' and '.')";
    }
    return NULL;
}

#define TLS_STR(n, T, f, chk, req) { .name = n, .type = CT_STRING, .off = offsetof(T, f), \
                                     .check = chk, .required = req }

/* ---------------------------------------------------------------------------------------
 * Listener tls: certificates */

static const struct conf_key conf_tls_cert_keys[] = {
    TLS_STR("cert", struct conf_tls_cert, cert, conf_check_nonempty, true),
    TLS_STR("key", struct conf_tls_cert, key, conf_check_nonempty, true),
    TLS_STR("ocsp", struct conf_tls_cert, ocsp, conf_check_nonempty, false),
};
static const struct conf_table conf_tls_cert_table = CONF_TABLE("certificate", conf_tls_cert_keys);

static void conf_set_tls_certificates(struct conf_ctx *ctx, const struct yaml_doc_node *val,
                                      void *base)
{
    struct conf_listener_tls *t = base;
    if (!conf_is_seq(ctx, val, "certificates"))
        return;
    size_t count = yaml_doc_count(val);
    if (count == 0) {
        conf_error(ctx, val, "certificates must list at least one { cert, key }");
        return;
    }
    t->certificates = conf_xcalloc(count, sizeof *t->certificates);
    for (size_t i = 0; i < count; i++) {
        struct conf_tls_cert *c = &t->certificates[t->n_certificates++];
        conf_apply(ctx, val->kids[i], &conf_tls_cert_table, c, NULL);
    }
}

static void conf_dump_tls_certificates(struct conf_json *w, const struct conf_key *key,
                                       const void *base)
{
    const struct conf_listener_tls *t = base;
    conf_json_open(w, key->name, '[');
    for (size_t i = 0; i < t->n_certificates; i++) {
        conf_json_open(w, NULL, '{');
        conf_dump_table(w, &conf_tls_cert_table, &t->certificates[i]);
        conf_json_close(w, '}');
    }
    conf_json_close(w, ']');
}

/* ---------------------------------------------------------------------------------------
 * Listener tls: alpn */

/* `alpn: [h2, http/1.1]`: the protocols offered, in server preference order. */
static void conf_set_tls_alpn(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base)
{
    struct conf_listener_tls *t = base;
    char q[CONF_QUOTE_SIZE];
    if (!conf_is_seq(ctx, val, "alpn"))
        return;
    size_t count = yaml_doc_count(val);
    if (count == 0) {
        conf_error(ctx, val, "alpn must list at least one protocol (h2, http/1.1)");
        return;
    }
    conf_free_strs(t->alpn, t->n_alpn);
    t->alpn = conf_xcalloc(count, sizeof *t->alpn);
    t->n_alpn = 0;
    for (size_t i = 0; i < count; i++) {
        const char *text = conf_scalar(ctx, val->kids[i], "a protocol name", "alpn");
        bool dup = false;
        if (!text)
            continue;
        if (strcmp(text, "h2") != 0 && strcmp(text, "http/1.1") != 0) {
            conf_error(ctx, val->kids[i], "invalid ALPN protocol %s (expected h2 or http/1.1)",
                       conf_quote_node(q, val->kids[i]));
            continue;
        }
        for (size_t j = 0; j < t->n_alpn && !dup; j++)
            dup = strcmp(t->alpn[j], text) == 0;
        if (dup)
            conf_error(ctx, val->kids[i], "duplicate ALPN protocol %s",
                       conf_quote_node(q, val->kids[i]));
        else
            t->alpn[t->n_alpn++] = conf_xstrdup(text);
    }
}

static void conf_dump_tls_alpn(struct conf_json *w, const struct conf_key *key, const void *base)
{
    const struct conf_listener_tls *t = base;
    conf_json_strs(w, key->name, (const char *const *)t->alpn, t->n_alpn);
}

/* ---------------------------------------------------------------------------------------
 * Listener tls: client_auth */

static const struct conf_key conf_tls_client_auth_keys[] = {
    { .name = "mode", .type = CT_ENUM, .off = offsetof(struct conf_listener_tls, client_auth),
      .names = conf_tls_client_auth_modes, .required = true },
    TLS_STR("ca", struct conf_listener_tls, client_ca, conf_check_nonempty, false),
    TLS_STR("header", struct conf_listener_tls, client_subject_header, conf_tls_check_header,
            false),
};
static const struct conf_table conf_tls_client_auth_table =
    CONF_TABLE("client_auth", conf_tls_client_auth_keys);

/* `client_auth: { mode: optional|required, ca: FILE, header: NAME }`: a mode that asks for
 * certificates needs the CA that verifies them. */
static void conf_set_tls_client_auth(struct conf_ctx *ctx, const struct yaml_doc_node *val,
                                     void *base)
{
    struct conf_listener_tls *t = base;
    if (!conf_apply(ctx, val, &conf_tls_client_auth_table, t, NULL))
        return;
    if (t->client_auth != TLS_CLIENT_AUTH_OFF && !t->client_ca)
        conf_error(ctx, val, "client_auth mode %s needs ca (the PEM bundle that verifies client "
                   "certificates)", conf_tls_client_auth_modes[t->client_auth]);
}

static void conf_dump_tls_client_auth(struct conf_json *w, const struct conf_key *key,
                                      const void *base)
{
    const struct conf_listener_tls *t = base;
    if (t->client_auth != TLS_CLIENT_AUTH_OFF)
        conf_dump_nested(w, key->name, &conf_tls_client_auth_table, t);
}

/* ---------------------------------------------------------------------------------------
 * Listener tls: hsts */

/* `max_age: 365d` is kept in seconds, the unit of the header (RFC 6797 section 6.1.1). */
static void conf_set_hsts_max_age(struct conf_ctx *ctx, const struct yaml_doc_node *val,
                                  void *base)
{
    struct conf_listener_tls *t = base;
    const char *want = "a duration (e.g. 365d)";
    const char *text = conf_scalar(ctx, val, want, "max_age");
    uint64_t ms;
    char q[CONF_QUOTE_SIZE];
    if (!text)
        return;
    if (config_parse_duration(text, &ms)) {
        conf_type_error(ctx, val, want, "max_age");
        return;
    }
    if (ms > 2 * CONF_MAX_DURATION_MS) {
        conf_error(ctx, val, "max_age %s is out of range (0 to 730d)", conf_quote_node(q, val));
        return;
    }
    t->hsts_max_age_s = ms / 1000;
}

static void conf_dump_hsts_max_age(struct conf_json *w, const struct conf_key *key,
                                   const void *base)
{
    const struct conf_listener_tls *t = base;
    conf_json_duration(w, key->name, t->hsts_max_age_s * 1000);
}

static const struct conf_key conf_tls_hsts_keys[] = {
    { .name = "max_age", .type = CT_CUSTOM, .set = conf_set_hsts_max_age,
      .dump = conf_dump_hsts_max_age, .required = true },
    { .name = "include_subdomains", .type = CT_BOOL,
      .off = offsetof(struct conf_listener_tls, hsts_include_subdomains) },
    { .name = "preload", .type = CT_BOOL, .off = offsetof(struct conf_listener_tls, hsts_preload) },
};
static const struct conf_table conf_tls_hsts_table = CONF_TABLE("hsts", conf_tls_hsts_keys);

static void conf_set_tls_hsts(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base)
{
    struct conf_listener_tls *t = base;
    if (!conf_apply(ctx, val, &conf_tls_hsts_table, t, NULL))
        return;
    if (t->hsts_preload &&
        (!t->hsts_include_subdomains || t->hsts_max_age_s < CONF_TLS_HSTS_PRELOAD_MIN_S))
        conf_error(ctx, val, "hsts preload needs include_subdomains: true and max_age of at "
                   "least 365d");
}

static void conf_dump_tls_hsts(struct conf_json *w, const struct conf_key *key, const void *base)
{
    const struct conf_listener_tls *t = base;
    if (t->hsts_max_age_s)
        conf_dump_nested(w, key->name, &conf_tls_hsts_table, t);
}

/* ---------------------------------------------------------------------------------------
 * Listener tls */

static const struct conf_key conf_listener_tls_keys[] = {
    { .name = "certificates", .type = CT_CUSTOM, .set = conf_set_tls_certificates,
      .dump = conf_dump_tls_certificates, .required = true },
    { .name = "alpn", .type = CT_CUSTOM, .set = conf_set_tls_alpn, .dump = conf_dump_tls_alpn },
    { .name = "min_version", .type = CT_ENUM,
      .off = offsetof(struct conf_listener_tls, min_version), .names = conf_tls_versions },
    TLS_STR("ciphers", struct conf_listener_tls, ciphers, conf_tls_check_cipher_list, false),
    TLS_STR("ciphersuites", struct conf_listener_tls, ciphersuites, conf_tls_check_cipher_list,
            false),
    { .name = "session_tickets", .type = CT_BOOL,
      .off = offsetof(struct conf_listener_tls, session_tickets) },
    { .name = "ticket_rotation", .type = CT_DURATION,
      .off = offsetof(struct conf_listener_tls, ticket_rotation_ms), .min = 1,
      .max = CONF_MAX_DURATION_MS },
    { .name = "client_auth", .type = CT_CUSTOM, .set = conf_set_tls_client_auth,
      .dump = conf_dump_tls_client_auth },
    { .name = "hsts", .type = CT_CUSTOM, .set = conf_set_tls_hsts, .dump = conf_dump_tls_hsts },
};
static const struct conf_table conf_listener_tls_table = CONF_TABLE("tls", conf_listener_tls_keys);

static void conf_tls_listener_defaults(struct conf_listener_tls *t)
{
    t->alpn = conf_xcalloc(2, sizeof *t->alpn);
    t->alpn[0] = conf_xstrdup("h2");
    t->alpn[1] = conf_xstrdup("http/1.1");
    t->n_alpn = 2;
    t->min_version = TLS_VERSION_1_2;
    t->session_tickets = true;
    t->ticket_rotation_ms = 12ULL * 3600 * 1000;
    t->client_auth = TLS_CLIENT_AUTH_OFF;
    t->client_subject_header = conf_xstrdup("X-Client-Cert-Subject");
}

/* `tls: { certificates: [...], ... }` turns TLS on; `tls: false` (or no key) leaves it off. */
void conf_set_listener_tls(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base)
{
    struct conf_listener_tls *t = &((struct conf_listener *)base)->tls;
    if (conf_bool_value(val) == 0)
        return;
    if (val->kind != YAML_DOC_MAPPING && !yaml_doc_is_null(val)) {
        conf_type_error(ctx, val, "a mapping with certificates", "tls");
        return;
    }
    conf_tls_listener_defaults(t);
    t->enabled = true;
    conf_apply(ctx, val, &conf_listener_tls_table, t, NULL);
}

void conf_dump_listener_tls(struct conf_json *w, const struct conf_key *key, const void *base)
{
    const struct conf_listener_tls *t = &((const struct conf_listener *)base)->tls;
    if (t->enabled)
        conf_dump_nested(w, key->name, &conf_listener_tls_table, t);
}

/* ---------------------------------------------------------------------------------------
 * Listener http2, redirect_https */

static const struct conf_key conf_listener_http2_keys[] = {
    { .name = "enabled", .type = CT_BOOL, .off = offsetof(struct conf_listener_http2, enabled) },
    { .name = "max_concurrent_streams", .type = CT_U32,
      .off = offsetof(struct conf_listener_http2, max_concurrent_streams), .min = 1,
      .max = 1000000 },
    /* RFC 9113 section 6.9.2: a window is at most 2^31-1 */
    { .name = "initial_window", .type = CT_SIZE32,
      .off = offsetof(struct conf_listener_http2, initial_window), .min = 1,
      .max = 2147483647 },
    { .name = "max_resets", .type = CT_U32, .off = offsetof(struct conf_listener_http2, max_resets),
      .min = 1, .max = UINT32_MAX },
    { .name = "max_control_frames", .type = CT_U32,
      .off = offsetof(struct conf_listener_http2, max_control_frames), .min = 1,
      .max = UINT32_MAX },
    { .name = "flood_window", .type = CT_DURATION,
      .off = offsetof(struct conf_listener_http2, flood_window_ms), .min = 1,
      .max = CONF_MAX_DURATION_MS },
};
static const struct conf_table conf_listener_http2_table =
    CONF_TABLE("http2", conf_listener_http2_keys);

/* `http2: { ... }`, or `http2: false` / `true` for enabled alone. */
void conf_set_listener_http2(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base)
{
    struct conf_listener_http2 *h = &((struct conf_listener *)base)->http2;
    int b = conf_bool_value(val);
    if (b >= 0) {
        h->enabled = b == 1;
        return;
    }
    conf_apply(ctx, val, &conf_listener_http2_table, h, NULL);
}

void conf_dump_listener_http2(struct conf_json *w, const struct conf_key *key, const void *base)
{
    conf_dump_nested(w, key->name, &conf_listener_http2_table,
                     &((const struct conf_listener *)base)->http2);
}

/* `redirect_https: true` (port 443), `false`, or the port of the TLS listener. */
void conf_set_redirect_https(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base)
{
    struct conf_listener *l = base;
    const char *want = "true, false or a port number";
    char q[CONF_QUOTE_SIZE];
    int b = conf_bool_value(val);
    uint64_t port;
    if (b >= 0) {
        l->redirect_https = b ? 443 : 0;
        return;
    }
    if (!conf_scalar_u64(ctx, val, want, "redirect_https", &port))
        return;
    if (port < 1 || port > 65535) {
        conf_error(ctx, val, "redirect_https %s is out of range (1 to 65535)",
                   conf_quote_node(q, val));
        return;
    }
    l->redirect_https = (uint32_t)port;
}

void conf_dump_redirect_https(struct conf_json *w, const struct conf_key *key, const void *base)
{
    const struct conf_listener *l = base;
    if (l->redirect_https)
        conf_json_u64(w, key->name, l->redirect_https);
}

void conf_tls_listener_init(struct conf_listener *l)
{
    l->http2 = (struct conf_listener_http2){
        .enabled = true, .max_concurrent_streams = 128, .initial_window = 256 * 1024,
        .max_resets = 200, .max_control_frames = 1000, .flood_window_ms = 10000,
    };
}

/* ---------------------------------------------------------------------------------------
 * Upstream tls, protocol */

static const struct conf_key conf_upstream_tls_keys[] = {
    { .name = "verify", .type = CT_BOOL, .off = offsetof(struct conf_upstream_tls, verify) },
    TLS_STR("ca", struct conf_upstream_tls, ca, conf_check_nonempty, false),
    TLS_STR("sni", struct conf_upstream_tls, sni, conf_tls_check_sni, false),
    TLS_STR("client_cert", struct conf_upstream_tls, client_cert, conf_check_nonempty, false),
    TLS_STR("client_key", struct conf_upstream_tls, client_key, conf_check_nonempty, false),
};
static const struct conf_table conf_upstream_tls_table = CONF_TABLE("tls", conf_upstream_tls_keys);

/* `tls: true` (verify with the system store), `tls: false`, or the mapping. */
void conf_set_upstream_tls(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base)
{
    struct conf_upstream_tls *t = &((struct conf_upstream *)base)->tls;
    int b = conf_bool_value(val);
    if (b >= 0) {
        t->enabled = t->verify = b == 1;
        return;
    }
    t->verify = true;
    if (!conf_apply(ctx, val, &conf_upstream_tls_table, t, NULL))
        return;
    t->enabled = true;
    if (!t->client_cert != !t->client_key)
        conf_error(ctx, val, "tls needs both client_cert and client_key, or neither");
}

void conf_dump_upstream_tls(struct conf_json *w, const struct conf_key *key, const void *base)
{
    const struct conf_upstream_tls *t = &((const struct conf_upstream *)base)->tls;
    if (t->enabled)
        conf_dump_nested(w, key->name, &conf_upstream_tls_table, t);
}

void conf_tls_upstream_init(struct conf_upstream *up)
{
    up->protocol = UPSTREAM_HTTP1;
    up->tls = (struct conf_upstream_tls){ .enabled = false };
}

/* ---------------------------------------------------------------------------------------
 * Cross-checks, freeing */

void conf_tls_check(struct conf_ctx *ctx)
{
    struct config *cfg = ctx->cfg;
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        const struct conf_listener *l = &cfg->listeners[i];
        const struct yaml_doc_node *node = ctx->listeners_node && i < yaml_doc_count(ctx->listeners_node)
                                               ? ctx->listeners_node->kids[i] : NULL;
        if (l->tls.enabled && l->redirect_https)
            conf_error(ctx, node ? yaml_doc_get(node, "redirect_https") : NULL,
                       "listener \"%s\" has both tls and redirect_https (redirect_https is "
                       "for a plain listener)", l->name);
        /* The PROXY header would have to be read before the handshake, outside the TLS
         * transport: not supported yet, so refuse rather than misread it. */
        if (l->tls.enabled && l->proxy_protocol)
            conf_error(ctx, node ? yaml_doc_get(node, "proxy_protocol") : NULL,
                       "listener \"%s\": proxy_protocol together with tls is not supported", l->name);
    }
}

void conf_tls_free_listener(struct conf_listener *l)
{
    struct conf_listener_tls *t = &l->tls;
    for (size_t i = 0; i < t->n_certificates; i++) {
        free(t->certificates[i].cert);
        free(t->certificates[i].key);
        free(t->certificates[i].ocsp);
    }
    free(t->certificates);
    conf_free_strs(t->alpn, t->n_alpn);
    free(t->ciphers);
    free(t->ciphersuites);
    free(t->client_ca);
    free(t->client_subject_header);
}

void conf_tls_free_upstream(struct conf_upstream *up)
{
    free(up->tls.ca);
    free(up->tls.sni);
    free(up->tls.client_cert);
    free(up->tls.client_key);
}
