/* config: the YAML loader. The document is read into a yaml_doc tree, then walked with one
 * static key table per mapping (name, type, field offset, bounds, setter): the tables are the
 * schema, so adding a key is adding a row. Every problem is recorded with the position of the
 * node it concerns and the walk carries on, so one run reports all of them, sorted by place.
 * The same tables, walked the other way, write a snapshot back as JSON (config_to_json), and
 * server edits of a running configuration are that JSON with the edit applied while writing. */
#include "conf/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/config_priv.h"
#include "conf/config_resolve.h"
#include "conf/yaml_doc.h"
#include "core/str.h"

#define CONF_MAX_WORKERS 1024
#define CONF_MAX_WEIGHT 1000000
#define CONF_MAX_NAME 64

/* ---------------------------------------------------------------------------------------
 * Errors and allocation */

/* Allocation failure while loading config leaves nothing sensible to do; stop loudly rather
 * than thread NULL through every setter. */
void *conf_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) {
        fputs("portero: out of memory while loading config\n", stderr);
        abort();
    }
    return p;
}

char *conf_xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = conf_xcalloc(n, 1);
    memcpy(p, s, n);
    return p;
}

void conf_error(struct conf_ctx *ctx, const struct yaml_doc_node *at, const char *fmt, ...)
{
    char *msg = NULL;
    va_list ap;
    va_start(ap, fmt);
    int rc = vasprintf(&msg, fmt, ap);
    va_end(ap);
    if (rc < 0) {
        fputs("portero: out of memory while loading config\n", stderr);
        abort();
    }
    if (ctx->n_errs == ctx->cap_errs) {
        size_t cap = ctx->cap_errs ? ctx->cap_errs * 2 : 8;
        struct conf_err *e = realloc(ctx->errs, cap * sizeof *e);
        if (!e) {
            fputs("portero: out of memory while loading config\n", stderr);
            abort();
        }
        ctx->errs = e;
        ctx->cap_errs = cap;
    }
    ctx->errs[ctx->n_errs] = (struct conf_err){ at ? at->line : 1, at ? at->col : 1,
                                                ctx->n_errs, msg };
    ctx->n_errs++;
}

/* Writes TEXT (LEN bytes) into OUT as a short quoted string that is safe to print: control
 * bytes become \xNN and anything past 40 bytes becomes "...". Returns OUT. */
const char *conf_quote(char out[CONF_QUOTE_SIZE], const char *text, size_t len)
{
    size_t o = 0;
    out[o++] = '"';
    for (size_t i = 0; i < len && i < 40; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c < 0x20 || c == 0x7f || c == '"' || c == '\\')
            o += (size_t)snprintf(out + o, 5, "\\x%02x", c);
        else
            out[o++] = (char)c;
    }
    if (len > 40) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o++] = '"';
    out[o] = '\0';
    return out;
}

const char *conf_quote_node(char out[CONF_QUOTE_SIZE], const struct yaml_doc_node *n)
{
    return conf_quote(out, n->text, n->len);
}

static int conf_err_cmp(const void *a, const void *b)
{
    const struct conf_err *x = a, *y = b;
    if (x->line != y->line)
        return x->line < y->line ? -1 : 1;
    if (x->col != y->col)
        return x->col < y->col ? -1 : 1;
    return x->seq < y->seq ? -1 : (x->seq > y->seq);
}

/* Sorts the collected errors by position and appends them to ERRS as "FILE:LINE:COL: msg". */
static void conf_flush_errors(struct conf_ctx *ctx, struct conf_errors *errs)
{
    if (ctx->n_errs == 0)
        return; /* nothing to report: leave ERRS untouched, unallocated */
    qsort(ctx->errs, ctx->n_errs, sizeof *ctx->errs, conf_err_cmp);
    char **msgs = errs ? realloc(errs->msgs, (errs->n + ctx->n_errs + 1) * sizeof *msgs) : NULL;
    if (errs && !msgs) {
        fputs("portero: out of memory while loading config\n", stderr);
        abort();
    }
    for (size_t i = 0; i < ctx->n_errs; i++) {
        struct conf_err *e = &ctx->errs[i];
        if (errs && asprintf(&msgs[errs->n], "%s:%u:%u: %s", ctx->file, e->line, e->col,
                             e->msg) >= 0)
            errs->n++;
        free(e->msg);
    }
    if (errs)
        errs->msgs = msgs;
    free(ctx->errs);
    ctx->errs = NULL;
    ctx->n_errs = ctx->cap_errs = 0;
}

void conf_errors_free(struct conf_errors *errs)
{
    if (!errs)
        return;
    for (size_t i = 0; i < errs->n; i++)
        free(errs->msgs[i]);
    free(errs->msgs);
    errs->msgs = NULL;
    errs->n = 0;
}

/* ---------------------------------------------------------------------------------------
 * Pure parsers: numbers, durations, sizes, addresses */

/* Reads one or more decimal digits at *P into *OUT, advancing *P. -1 on none or overflow. */
static int conf_parse_digits(const char **p, uint64_t *out)
{
    const char *s = *p;
    uint64_t v = 0;
    if (*s < '0' || *s > '9')
        return -1;
    for (; *s >= '0' && *s <= '9'; s++) {
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *p = s;
    *out = v;
    return 0;
}

/* Whole-string unsigned decimal. */
int conf_parse_u64(const char *text, uint64_t *out)
{
    const char *p = text;
    if (conf_parse_digits(&p, out) || *p != '\0')
        return -1;
    return 0;
}

struct conf_unit {
    const char *suffix;
    uint64_t mult;
};

/* Multiplies the leading number of TEXT by the multiplier of its suffix in UNITS. */
static int conf_parse_with_units(const char *text, const struct conf_unit *units, size_t n,
                                 uint64_t *out)
{
    const char *p = text;
    uint64_t v;
    if (!text || conf_parse_digits(&p, &v))
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(p, units[i].suffix) != 0)
            continue;
        if (v > UINT64_MAX / units[i].mult)
            return -1;
        *out = v * units[i].mult;
        return 0;
    }
    return -1;
}

int config_parse_duration(const char *text, uint64_t *out_ms)
{
    static const struct conf_unit units[] = {
        { "", 1000 }, { "ms", 1 }, { "s", 1000 }, { "m", 60000 }, { "h", 3600000 },
        { "d", 86400000 },
    };
    return conf_parse_with_units(text, units, sizeof units / sizeof units[0], out_ms);
}

int config_parse_size(const char *text, uint64_t *out_bytes)
{
    static const struct conf_unit units[] = {
        { "", 1 },           { "B", 1 },
        { "k", 1ULL << 10 }, { "K", 1ULL << 10 }, { "KiB", 1ULL << 10 }, { "KB", 1000ULL },
        { "m", 1ULL << 20 }, { "M", 1ULL << 20 }, { "MiB", 1ULL << 20 }, { "MB", 1000000ULL },
        { "g", 1ULL << 30 }, { "G", 1ULL << 30 }, { "GiB", 1ULL << 30 }, { "GB", 1000000000ULL },
        { "TiB", 1ULL << 40 }, { "TB", 1000000000000ULL },
    };
    return conf_parse_with_units(text, units, sizeof units / sizeof units[0], out_bytes);
}

/* A port is 1..65535 written in plain digits (at most 5, so "08080" is fine, "+80" is not). */
static int conf_parse_port(const char *text, uint16_t *out)
{
    uint64_t v;
    if (strlen(text) > 5 || conf_parse_u64(text, &v) || v == 0 || v > 65535)
        return -1;
    *out = (uint16_t)v;
    return 0;
}

static int conf_parse_v6(const char *text, struct sockaddr_storage *out, socklen_t *out_len)
{
    const char *close = strchr(text, ']');
    char host[INET6_ADDRSTRLEN];
    uint16_t port;
    size_t hlen = close ? (size_t)(close - text - 1) : 0;
    if (!close || close[1] != ':' || hlen == 0 || hlen >= sizeof host)
        return -1;
    memcpy(host, text + 1, hlen);
    host[hlen] = '\0';
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)out;
    memset(out, 0, sizeof *out);
    if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1 || conf_parse_port(close + 2, &port))
        return -1;
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(port);
    *out_len = sizeof *sin6;
    return 0;
}

int config_parse_address(const char *text, struct sockaddr_storage *out, socklen_t *out_len)
{
    if (!text)
        return -1;
    if (text[0] == '[')
        return conf_parse_v6(text, out, out_len);
    const char *colon = strrchr(text, ':');
    char host[INET_ADDRSTRLEN];
    uint16_t port;
    size_t hlen = colon ? (size_t)(colon - text) : 0;
    if (!colon || hlen >= sizeof host || conf_parse_port(colon + 1, &port))
        return -1;
    memcpy(host, text, hlen);
    host[hlen] = '\0';
    struct sockaddr_in *sin = (struct sockaddr_in *)out;
    memset(out, 0, sizeof *out);
    sin->sin_family = AF_INET;
    sin->sin_port = htons(port);
    if (hlen == 0 || strcmp(host, "*") == 0)
        sin->sin_addr.s_addr = htonl(INADDR_ANY);
    else if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
        return -1;
    *out_len = sizeof *sin;
    return 0;
}

/* Same endpoint? Compares family, address and port only (not padding or flow info). */
static bool conf_same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return false;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
    return x->sin6_port == y->sin6_port &&
           memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr) == 0;
}

static bool conf_is_wildcard(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return ((const struct sockaddr_in *)(const void *)ss)->sin_addr.s_addr == htonl(INADDR_ANY);
    const struct sockaddr_in6 *s6 = (const void *)ss;
    return memcmp(&s6->sin6_addr, &in6addr_any, sizeof in6addr_any) == 0;
}

/* The default resolver: getaddrinfo with a numeric port; the first IPv4 answer wins because
 * most backends listen there and a v6 answer first would only add a failed connect. */
static int conf_getaddrinfo(const char *host, const char *port, struct sockaddr_storage *out,
                            socklen_t *out_len, char *err, size_t err_cap)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_NUMERICSERV };
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        snprintf(err, err_cap, "%s", gai_strerror(rc));
        return -1;
    }
    const struct addrinfo *pick = NULL;
    for (const struct addrinfo *ai = res; ai && !pick; ai = ai->ai_next)
        if (ai->ai_family == AF_INET)
            pick = ai;
    for (const struct addrinfo *ai = res; ai && !pick; ai = ai->ai_next)
        if (ai->ai_family == AF_INET6)
            pick = ai;
    if (pick) {
        memset(out, 0, sizeof *out);
        memcpy(out, pick->ai_addr, pick->ai_addrlen);
        *out_len = pick->ai_addrlen;
    } else {
        snprintf(err, err_cap, "no IPv4 or IPv6 address");
    }
    freeaddrinfo(res);
    return pick ? 0 : -1;
}

static conf_resolver_fn conf_resolver = conf_getaddrinfo;

void config_set_resolver(conf_resolver_fn fn) { conf_resolver = fn ? fn : conf_getaddrinfo; }

/* ---------------------------------------------------------------------------------------
 * Character classes and string checks. Each check returns NULL when S is fine, else what is
 * wrong with it; a check may normalise S in place (hosts are lower-cased). */

static bool conf_is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return true;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

bool conf_is_token(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!conf_is_tchar((unsigned char)*s))
            return false;
    return true;
}

static bool conf_is_name_char(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           c == '_' || c == '-' || c == '.' || c == ':';
}

/* Names (listeners, upstreams, routes) appear in logs, metrics and admin URLs: keep them tame. */
const char *conf_check_name(char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > CONF_MAX_NAME)
        return "must be 1 to 64 characters";
    for (size_t i = 0; i < n; i++)
        if (!conf_is_name_char((unsigned char)s[i]))
            return "may hold only letters, digits, '_', '-', '.' and ':'";
    return NULL;
}

const char *conf_check_nonempty(char *s) { return *s ? NULL : "must not be empty"; }

const char *conf_check_path(char *s)
{
    if (s[0] != '/')
        return "must start with \"/\"";
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s == 0x7f)
            return "must not hold spaces or control characters";
    return NULL;
}

/* Visible ASCII only (no spaces, controls or non-ASCII), at least one character. */
static bool conf_is_visible(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
            return false;
    return true;
}

/* Admin tokens and health check Host values. */
const char *conf_check_visible(char *s)
{
    if (!*s)
        return "must not be empty";
    return conf_is_visible(s) ? NULL : "may hold only visible ASCII characters (no spaces)";
}

static const char *conf_check_admin_address(char *s)
{
    if (strcmp(s, "off") == 0)
        return NULL;
    struct sockaddr_storage ss;
    socklen_t len;
    if (config_parse_address(s, &ss, &len))
        return "must be \"off\" or a numeric IP:port, [IPv6]:port or *:port";
    return NULL;
}

static const char *conf_check_location(char *s)
{
    if (!*s)
        return "must not be empty";
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s == 0x7f)
            return "must not hold spaces or control characters";
    return NULL;
}

/* Route hosts: lower-cased; a leading "*." is the only wildcard; no port. */
static const char *conf_check_host(char *s)
{
    char *p = s;
    if (p[0] == '*' && p[1] == '.')
        p += 2;
    if (!*p)
        return "must name a host";
    for (; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c >= 'A' && c <= 'Z')
            *p = (char)(c + 32);
        else if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || strchr("-._[]:", c)))
            return "may hold only letters, digits, '-', '.', '_' (and a leading \"*.\")";
    }
    return NULL;
}

static const char *conf_check_header_name(char *s)
{
    return conf_is_token(s) ? NULL : "must be a header name (a token)";
}

const char *conf_check_address(char *s)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (config_parse_address(s, &ss, &len))
        return "must be a numeric IP:port, [IPv6]:port or *:port";
    return NULL;
}

/* Field values we would send: VCHAR, SP, HTAB and obs-text; never CR, LF or other controls. */
bool conf_is_field_value(const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return false;
    }
    return true;
}

/* The proxy frames every message itself; configuration must not be able to fake framing. */
static bool conf_is_framing_header(const char *name)
{
    static const char *const names[] = { "content-length", "transfer-encoding", "connection",
                                         "keep-alive", "upgrade", "te", "trailer",
                                         "proxy-connection" };
    struct str n = str_make(name, strlen(name));
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (str_ieq_cstr(n, names[i]))
            return true;
    return false;
}

/* ---------------------------------------------------------------------------------------
 * The key-table walker */

_Static_assert(sizeof(enum log_format) == sizeof(int), "enums are stored as int");
_Static_assert(sizeof(enum balance_kind) == sizeof(int), "enums are stored as int");

/* Reports "expected WANT for NAME, got ..." at VAL. */
void conf_type_error(struct conf_ctx *ctx, const struct yaml_doc_node *val,
                            const char *want, const char *name)
{
    char q[CONF_QUOTE_SIZE];
    if (val->kind == YAML_DOC_SCALAR && !yaml_doc_is_null(val))
        conf_error(ctx, val, "expected %s for %s, got %s", want, name, conf_quote_node(q, val));
    else
        conf_error(ctx, val, "expected %s for %s, got %s", want, name, yaml_doc_kind_name(val));
}

/* The text of scalar VAL, or NULL (reported) if VAL is null, not a scalar or holds a NUL. */
const char *conf_scalar(struct conf_ctx *ctx, const struct yaml_doc_node *val,
                               const char *want, const char *name)
{
    if (val->kind != YAML_DOC_SCALAR || yaml_doc_is_null(val)) {
        conf_type_error(ctx, val, want, name);
        return NULL;
    }
    if (memchr(val->text, '\0', val->len)) {
        conf_error(ctx, val, "%s must not hold a NUL character", name);
        return NULL;
    }
    return val->text;
}

/* True if VAL is a mapping (null counts as an empty one); else reports a type error. */
bool conf_is_map(struct conf_ctx *ctx, const struct yaml_doc_node *val, const char *name)
{
    if (val->kind == YAML_DOC_MAPPING || yaml_doc_is_null(val))
        return true;
    conf_type_error(ctx, val, "a mapping", name);
    return false;
}

bool conf_is_seq(struct conf_ctx *ctx, const struct yaml_doc_node *val, const char *name)
{
    if (val->kind == YAML_DOC_SEQUENCE || yaml_doc_is_null(val))
        return true;
    conf_type_error(ctx, val, "a sequence", name);
    return false;
}

/* Reports keys that are not scalars and keys seen twice (ICASE: compared as header names). */
void conf_check_keys(struct conf_ctx *ctx, const struct yaml_doc_node *map,
                            const char *what, bool icase)
{
    char q[CONF_QUOTE_SIZE];
    for (size_t i = 0; i < yaml_doc_count(map); i++) {
        const struct yaml_doc_node *k = yaml_doc_key(map, i);
        if (k->kind != YAML_DOC_SCALAR) {
            conf_error(ctx, k, "keys must be scalars in %s, got %s", what, yaml_doc_kind_name(k));
            continue;
        }
        for (size_t j = 0; j < i; j++) {
            const struct yaml_doc_node *p = yaml_doc_key(map, j);
            struct str a = str_make(k->text, k->len), b = str_make(p->text, p->len);
            if (p->kind != YAML_DOC_SCALAR || !(icase ? str_ieq(a, b) : str_eq(a, b)))
                continue;
            conf_error(ctx, k, "duplicate key %s in %s (first at %u:%u)", conf_quote_node(q, k),
                       what, p->line, p->col);
            break;
        }
    }
}

static const struct conf_key *conf_find_key(const struct conf_table *t,
                                            const struct yaml_doc_node *k)
{
    for (size_t i = 0; i < t->n; i++)
        if (strlen(t->keys[i].name) == k->len && memcmp(t->keys[i].name, k->text, k->len) == 0)
            return &t->keys[i];
    return NULL;
}

/* Bit of key NAME in T's "seen" mask (the table must hold NAME). */
uint64_t conf_bit(const struct conf_table *t, const char *name)
{
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->keys[i].name, name) == 0)
            return 1ULL << i;
    return 0;
}

/* Walks mapping MAP with table T into BASE. Returns false if MAP is not a mapping; else true
 * with *SEEN (if given) holding a bit per table key present. Unknown, duplicate and missing
 * required keys are reported here. */
bool conf_apply(struct conf_ctx *ctx, const struct yaml_doc_node *map,
                       const struct conf_table *t, void *base, uint64_t *seen_out)
{
    uint64_t seen = 0;
    char q[CONF_QUOTE_SIZE];
    if (seen_out)
        *seen_out = 0;
    if (!conf_is_map(ctx, map, t->what))
        return false;
    conf_check_keys(ctx, map, t->what, false);
    for (size_t i = 0; i < yaml_doc_count(map); i++) {
        const struct yaml_doc_node *k = yaml_doc_key(map, i);
        if (k->kind != YAML_DOC_SCALAR)
            continue;
        const struct conf_key *key = conf_find_key(t, k);
        if (!key) {
            conf_error(ctx, k, "unknown key %s in %s", conf_quote_node(q, k), t->what);
            continue;
        }
        uint64_t bit = 1ULL << (key - t->keys);
        if (seen & bit)
            continue; /* duplicate, already reported */
        seen |= bit;
        conf_apply_key(ctx, key, yaml_doc_value(map, i), base);
    }
    for (size_t i = 0; i < t->n; i++)
        if (t->keys[i].required && !(seen & (1ULL << i)))
            conf_error(ctx, map, "missing required key \"%s\" in %s", t->keys[i].name, t->what);
    if (seen_out)
        *seen_out = seen;
    return true;
}

/* Stores a checked string. */
static void conf_set_string(struct conf_ctx *ctx, const struct conf_key *key,
                            const struct yaml_doc_node *val, void *base)
{
    const char *text = conf_scalar(ctx, val, "a string", key->name);
    if (!text)
        return;
    char *copy = conf_xstrdup(text), q[CONF_QUOTE_SIZE];
    const char *problem = key->check ? key->check(copy) : NULL;
    if (problem) {
        conf_error(ctx, val, "invalid %s %s: %s", key->name, conf_quote_node(q, val), problem);
        free(copy);
        return;
    }
    char **field = CONF_FIELD(base, char *, key->off);
    free(*field);
    *field = copy;
}

int conf_bool_value(const struct yaml_doc_node *val)
{
    static const char *const yes[] = { "true", "True", "TRUE", "yes", "on" };
    static const char *const no[] = { "false", "False", "FALSE", "no", "off" };
    if (val->kind != YAML_DOC_SCALAR || yaml_doc_is_null(val))
        return -1;
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (strcmp(val->text, yes[i]) == 0)
            return 1;
        if (strcmp(val->text, no[i]) == 0)
            return 0;
    }
    return -1;
}

static void conf_set_bool(struct conf_ctx *ctx, const struct conf_key *key,
                          const struct yaml_doc_node *val, void *base)
{
    if (!conf_scalar(ctx, val, "a boolean (true or false)", key->name))
        return;
    int b = conf_bool_value(val);
    if (b < 0) {
        conf_type_error(ctx, val, "a boolean (true or false)", key->name);
        return;
    }
    *CONF_FIELD(base, bool, key->off) = b == 1;
}

/* Integers, durations and sizes: parse, then check the key's bounds. */
static void conf_set_number(struct conf_ctx *ctx, const struct conf_key *key,
                            const struct yaml_doc_node *val, void *base)
{
    bool dur = key->type == CT_DURATION;
    bool size = key->type == CT_SIZE32 || key->type == CT_SIZE64;
    const char *want = dur ? "a duration (e.g. 500ms, 2s, 5m, 1h, 1d)"
                     : size ? "a size (e.g. 512, 64KiB, 1MiB, 2GiB)" : "an integer";
    const char *text = conf_scalar(ctx, val, want, key->name);
    uint64_t v;
    char q[CONF_QUOTE_SIZE];
    if (!text)
        return;
    int rc = dur ? config_parse_duration(text, &v) : size ? config_parse_size(text, &v)
                                                          : conf_parse_u64(text, &v);
    if (rc) {
        conf_type_error(ctx, val, want, key->name);
        return;
    }
    if (v < key->min || v > key->max) {
        if (dur) /* duration keys span 1ms..365d, or 0..365d where 0 means off */
            conf_error(ctx, val, "%s %s is out of range (%s to 365d)", key->name,
                       conf_quote_node(q, val), key->min ? "1ms" : "0");
        else
            conf_error(ctx, val, "%s %s is out of range (%llu to %llu%s)", key->name,
                       conf_quote_node(q, val), (unsigned long long)key->min,
                       (unsigned long long)key->max, size ? " bytes" : "");
        return;
    }
    if (key->type == CT_U32 || key->type == CT_SIZE32)
        *CONF_FIELD(base, uint32_t, key->off) = (uint32_t)v;
    else if (key->type == CT_INT)
        *CONF_FIELD(base, int, key->off) = (int)v;
    else
        *CONF_FIELD(base, uint64_t, key->off) = v;
}

static void conf_set_enum(struct conf_ctx *ctx, const struct conf_key *key,
                          const struct yaml_doc_node *val, void *base)
{
    const char *text = conf_scalar(ctx, val, "a string", key->name);
    char q[CONF_QUOTE_SIZE], list[256] = "";
    if (!text)
        return;
    for (int i = 0; key->names[i]; i++) {
        if (strcmp(text, key->names[i]) == 0) {
            *CONF_FIELD(base, int, key->off) = i;
            return;
        }
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "",
                 key->names[i]);
    }
    conf_error(ctx, val, "invalid value %s for %s (expected one of: %s)", conf_quote_node(q, val),
               key->name, list);
}

void conf_free_kvs(struct conf_header_kv *kv, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(kv[i].name);
        free(kv[i].value);
    }
    free(kv);
}

void conf_free_strs(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* One header of a NAME: VALUE mapping; false (reported) if either is not acceptable. */
static bool conf_header_pair(struct conf_ctx *ctx, const struct conf_key *key,
                             const struct yaml_doc_node *k, const struct yaml_doc_node *v,
                             struct conf_header_kv *out)
{
    char q[CONF_QUOTE_SIZE];
    if (k->kind != YAML_DOC_SCALAR)
        return false; /* reported by conf_check_keys */
    if (memchr(k->text, '\0', k->len) || !conf_is_token(k->text)) {
        conf_error(ctx, k, "invalid header name %s in %s (must be a token)",
                   conf_quote_node(q, k), key->name);
        return false;
    }
    if (key->no_framing && conf_is_framing_header(k->text)) {
        conf_error(ctx, k, "header %s cannot be set by configuration (the proxy frames "
                   "messages itself)", conf_quote_node(q, k));
        return false;
    }
    const char *value = conf_scalar(ctx, v, "a string", k->text);
    if (!value)
        return false;
    if (!conf_is_field_value(value)) {
        conf_error(ctx, v, "invalid value for header %s: control characters are not allowed",
                   conf_quote_node(q, k));
        return false;
    }
    out->name = conf_xstrdup(k->text);
    out->value = conf_xstrdup(value);
    return true;
}

void conf_set_headers(struct conf_ctx *ctx, const struct conf_key *key,
                             const struct yaml_doc_node *val, void *base)
{
    if (!conf_is_map(ctx, val, key->name))
        return;
    conf_check_keys(ctx, val, key->name, true);
    size_t n = 0, count = yaml_doc_count(val);
    struct conf_header_kv *kv = conf_xcalloc(count, sizeof *kv);
    for (size_t i = 0; i < count; i++)
        if (conf_header_pair(ctx, key, yaml_doc_key(val, i), yaml_doc_value(val, i), &kv[n]))
            n++;
    struct conf_header_kv **field = CONF_FIELD(base, struct conf_header_kv *, key->off);
    size_t *n_field = CONF_FIELD(base, size_t, key->count_off);
    conf_free_kvs(*field, *n_field);
    *field = kv;
    *n_field = n;
}

static void conf_set_tokens(struct conf_ctx *ctx, const struct conf_key *key,
                            const struct yaml_doc_node *val, void *base)
{
    char q[CONF_QUOTE_SIZE];
    if (!conf_is_seq(ctx, val, key->name))
        return;
    size_t n = 0, count = yaml_doc_count(val);
    char **v = conf_xcalloc(count, sizeof *v);
    for (size_t i = 0; i < count; i++) {
        const struct yaml_doc_node *item = val->kids[i];
        const char *text = conf_scalar(ctx, item, "a token", key->name);
        if (!text)
            continue;
        if (!conf_is_token(text)) {
            conf_error(ctx, item, "invalid entry %s in %s (must be a token)",
                       conf_quote_node(q, item), key->name);
            continue;
        }
        v[n++] = conf_xstrdup(text);
    }
    char ***field = CONF_FIELD(base, char **, key->off);
    size_t *n_field = CONF_FIELD(base, size_t, key->count_off);
    conf_free_strs(*field, *n_field);
    *field = v;
    *n_field = n;
}

void conf_apply_key(struct conf_ctx *ctx, const struct conf_key *key,
                           const struct yaml_doc_node *val, void *base)
{
    switch (key->type) {
    case CT_STRING:
        conf_set_string(ctx, key, val, base);
        break;
    case CT_BOOL:
        conf_set_bool(ctx, key, val, base);
        break;
    case CT_U32:
    case CT_INT:
    case CT_DURATION:
    case CT_SIZE32:
    case CT_SIZE64:
        conf_set_number(ctx, key, val, base);
        break;
    case CT_ENUM:
        conf_set_enum(ctx, key, val, base);
        break;
    case CT_HEADERS:
        conf_set_headers(ctx, key, val, base);
        break;
    case CT_TOKENS:
        conf_set_tokens(ctx, key, val, base);
        break;
    case CT_NESTED:
        conf_apply(ctx, val, key->sub, (char *)base + key->off, NULL);
        break;
    case CT_CUSTOM:
        key->set(ctx, val, base);
        break;
    }
}

/* ---------------------------------------------------------------------------------------
 * The JSON writer: the same tables, walked the other way. Each key is written from its field
 * by its type; CT_CUSTOM keys (and keys written only in some cases) carry a dump function.
 * The output is indented JSON that the loader reads back into an equal snapshot. */

struct conf_json_edit;

struct conf_json {
    char *buf;
    size_t len, cap;
    unsigned depth;
    bool first;                        /* nothing written yet in the innermost container */
    const struct conf_json_edit *edit; /* server edit applied while writing, or NULL */
};

static void conf_json_raw(struct conf_json *w, const char *s, size_t n)
{
    if (w->len + n + 1 > w->cap) {
        size_t cap = w->cap ? w->cap : 4096;
        while (w->len + n + 1 > cap)
            cap *= 2;
        char *b = realloc(w->buf, cap);
        if (!b) {
            fputs("portero: out of memory while writing config\n", stderr);
            abort();
        }
        w->buf = b;
        w->cap = cap;
    }
    memcpy(w->buf + w->len, s, n);
    w->len += n;
    w->buf[w->len] = '\0';
}

static void conf_json_cstr(struct conf_json *w, const char *s) { conf_json_raw(w, s, strlen(s)); }

/* Length of the UTF-8 sequence at S when it must be written as a \u escape because YAML
 * (which reads our JSON back) would fold or refuse it: C1 controls (NEL among them), the line
 * and paragraph separators, BOM and the non-characters U+FFFE/U+FFFF. 0 if it need not be
 * escaped; *CP gets the code point. */
static size_t conf_json_unsafe_utf8(const unsigned char *s, unsigned *cp)
{
    if (s[0] >= 0xC2 && s[0] <= 0xDF && (s[1] & 0xC0) == 0x80) {
        *cp = (s[0] & 0x1Fu) << 6 | (s[1] & 0x3Fu);
        return *cp <= 0x9F ? 2 : 0;
    }
    if ((s[0] & 0xF0) == 0xE0 && (s[1] & 0xC0) == 0x80 && (s[2] & 0xC0) == 0x80) {
        *cp = (s[0] & 0x0Fu) << 12 | (s[1] & 0x3Fu) << 6 | (s[2] & 0x3Fu);
        return *cp == 0x2028 || *cp == 0x2029 || *cp == 0xFEFF || *cp >= 0xFFFE ? 3 : 0;
    }
    return 0;
}

/* Writes S as a JSON string: quotes and backslashes escaped, control characters (and the few
 * characters YAML would fold or refuse) as \u00XX / \uXXXX; other UTF-8 as is. */
static void conf_json_string(struct conf_json *w, const char *s)
{
    char esc[8];
    conf_json_raw(w, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        size_t run = 0;
        unsigned cp = 0;
        while (p[run] >= 0x20 && p[run] != '"' && p[run] != '\\' && p[run] != 0x7f &&
               !(p[run] >= 0x80 && conf_json_unsafe_utf8(p + run, &cp)))
            run++;
        conf_json_raw(w, (const char *)p, run);
        p += run;
        if (!*p)
            break;
        size_t n = *p < 0x80 ? 1 : conf_json_unsafe_utf8(p, &cp);
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            conf_json_raw(w, esc, 2);
        } else {
            snprintf(esc, sizeof esc, "\\u%04x", *p < 0x80 ? *p : cp);
            conf_json_cstr(w, esc);
        }
        p += n;
    }
    conf_json_raw(w, "\"", 1);
}

static void conf_json_newline(struct conf_json *w)
{
    conf_json_raw(w, "\n", 1);
    for (unsigned i = 0; i < w->depth; i++)
        conf_json_raw(w, "  ", 2);
}

/* Starts the next item of the innermost container: separator, newline, indent, "KEY": . */
static void conf_json_item(struct conf_json *w, const char *key)
{
    if (!w->first)
        conf_json_raw(w, ",", 1);
    w->first = false;
    if (w->depth)
        conf_json_newline(w);
    if (key) {
        conf_json_string(w, key);
        conf_json_raw(w, ": ", 2);
    }
}

struct conf_json_mark conf_json_open(struct conf_json *w, const char *key, char open)
{
    struct conf_json_mark m = { w->len, w->first };
    conf_json_item(w, key);
    conf_json_raw(w, &open, 1);
    w->depth++;
    w->first = true;
    return m;
}

void conf_json_close(struct conf_json *w, char close)
{
    w->depth--;
    if (!w->first)
        conf_json_newline(w);
    conf_json_raw(w, &close, 1);
    w->first = false;
}

/* Closes the container opened at M, or takes it back (key included) if nothing went in. */
void conf_json_close_or_drop(struct conf_json *w, struct conf_json_mark m, char close)
{
    if (!w->first) {
        conf_json_close(w, close);
        return;
    }
    w->depth--;
    w->len = m.len;
    w->buf[w->len] = '\0';
    w->first = m.first;
}

void conf_json_str(struct conf_json *w, const char *key, const char *s)
{
    conf_json_item(w, key);
    conf_json_string(w, s);
}

void conf_json_u64(struct conf_json *w, const char *key, uint64_t v)
{
    char num[24];
    snprintf(num, sizeof num, "%llu", (unsigned long long)v);
    conf_json_item(w, key);
    conf_json_cstr(w, num);
}

void conf_json_bool(struct conf_json *w, const char *key, bool v)
{
    conf_json_item(w, key);
    conf_json_cstr(w, v ? "true" : "false");
}

/* A duration in the largest unit that divides it exactly: "1500ms", "2s", "5m", "1h", "1d". */
void conf_json_duration(struct conf_json *w, const char *key, uint64_t ms)
{
    static const struct conf_unit units[] = {
        { "d", 86400000 }, { "h", 3600000 }, { "m", 60000 }, { "s", 1000 },
    };
    char text[32];
    const char *suffix = "ms";
    uint64_t v = ms;
    for (size_t i = 0; ms && i < sizeof units / sizeof units[0]; i++) {
        if (ms % units[i].mult == 0) {
            v = ms / units[i].mult;
            suffix = units[i].suffix;
            break;
        }
    }
    snprintf(text, sizeof text, "%llu%s", (unsigned long long)v, suffix);
    conf_json_str(w, key, text);
}

void conf_json_headers(struct conf_json *w, const char *key,
                              const struct conf_header_kv *kv, size_t n)
{
    if (!n)
        return;
    conf_json_open(w, key, '{');
    for (size_t i = 0; i < n; i++)
        conf_json_str(w, kv[i].name, kv[i].value);
    conf_json_close(w, '}');
}

void conf_json_strs(struct conf_json *w, const char *key, const char *const *v,
                           size_t n)
{
    if (!n)
        return;
    conf_json_open(w, key, '[');
    for (size_t i = 0; i < n; i++)
        conf_json_str(w, NULL, v[i]);
    conf_json_close(w, ']');
}


/* Writes mapping KEY from table SUB at BASE; left out if it would be empty. */
void conf_dump_nested(struct conf_json *w, const char *key, const struct conf_table *sub,
                             const void *base)
{
    struct conf_json_mark m = conf_json_open(w, key, '{');
    conf_dump_table(w, sub, base);
    conf_json_close_or_drop(w, m, '}');
}


/* One key from its field. A string that is NULL, a list that is empty and a number below the
 * key's minimum (0 for "unset" durations) are left out: loading gives them back. */
static void conf_dump_key(struct conf_json *w, const struct conf_key *key, const void *base)
{
    const char *name = key->name;
    switch (key->type) {
    case CT_STRING: {
        const char *s = *CONF_CFIELD(base, char *, key->off);
        if (s)
            conf_json_str(w, name, s);
        break;
    }
    case CT_BOOL:
        conf_json_bool(w, name, *CONF_CFIELD(base, bool, key->off));
        break;
    case CT_U32:
    case CT_SIZE32:
        conf_json_u64(w, name, *CONF_CFIELD(base, uint32_t, key->off));
        break;
    case CT_INT:
        conf_json_u64(w, name, (uint64_t)*CONF_CFIELD(base, int, key->off));
        break;
    case CT_SIZE64:
        conf_json_u64(w, name, *CONF_CFIELD(base, uint64_t, key->off));
        break;
    case CT_DURATION: {
        uint64_t ms = *CONF_CFIELD(base, uint64_t, key->off);
        if (ms >= key->min)
            conf_json_duration(w, name, ms);
        break;
    }
    case CT_ENUM:
        conf_json_str(w, name, key->names[*CONF_CFIELD(base, int, key->off)]);
        break;
    case CT_HEADERS:
        conf_json_headers(w, name, *CONF_CFIELD(base, struct conf_header_kv *, key->off),
                          *CONF_CFIELD(base, size_t, key->count_off));
        break;
    case CT_TOKENS:
        conf_json_strs(w, name, *CONF_CFIELD(base, char **, key->off),
                       *CONF_CFIELD(base, size_t, key->count_off));
        break;
    case CT_NESTED:
    case CT_CUSTOM: /* without a dump function: a mapping at off, like CT_NESTED */
        if (key->sub)
            conf_dump_nested(w, name, key->sub, (const char *)base + key->off);
        break;
    }
}

void conf_dump_table(struct conf_json *w, const struct conf_table *t, const void *base)
{
    for (size_t i = 0; i < t->n; i++) {
        if (t->keys[i].dump)
            t->keys[i].dump(w, &t->keys[i], base);
        else
            conf_dump_key(w, &t->keys[i], base);
    }
}

/* ---------------------------------------------------------------------------------------
 * Custom setters (and their JSON writers) */

static void conf_set_workers(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base)
{
    struct config *cfg = base;
    const char *want = "\"auto\" or an integer";
    const char *text = conf_scalar(ctx, val, want, "workers");
    uint64_t n;
    if (!text)
        return;
    if (strcmp(text, "auto") == 0) {
        cfg->workers = 0; /* resolved once loading succeeds */
        return;
    }
    if (conf_parse_u64(text, &n)) {
        conf_type_error(ctx, val, want, "workers");
        return;
    }
    if (n < 1 || n > CONF_MAX_WORKERS) {
        conf_error(ctx, val, "workers %llu is out of range (1 to %d)", (unsigned long long)n,
                   CONF_MAX_WORKERS);
        return;
    }
    cfg->workers = (unsigned)n;
}

static void conf_dump_workers(struct conf_json *w, const struct conf_key *key, const void *base)
{
    conf_json_u64(w, key->name, ((const struct config *)base)->workers);
}

/* "client_ip", "uri", "header:NAME" or "cookie:NAME" (NAME a token). */
static void conf_set_hash_key(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base)
{
    struct conf_upstream *up = base;
    const char *text = conf_scalar(ctx, val, "a string", "hash_key");
    const char *name = NULL;
    char q[CONF_QUOTE_SIZE];
    if (!text)
        return;
    if (strcmp(text, "client_ip") == 0) {
        up->hash_key = HASH_KEY_CLIENT_IP;
    } else if (strcmp(text, "uri") == 0) {
        up->hash_key = HASH_KEY_URI;
    } else if (strncmp(text, "header:", 7) == 0 && conf_is_token(text + 7)) {
        up->hash_key = HASH_KEY_HEADER;
        name = text + 7;
    } else if (strncmp(text, "cookie:", 7) == 0 && conf_is_token(text + 7)) {
        up->hash_key = HASH_KEY_COOKIE;
        name = text + 7;
    } else {
        conf_error(ctx, val, "invalid hash_key %s (expected one of: client_ip, uri, "
                   "header:NAME, cookie:NAME)", conf_quote_node(q, val));
        return;
    }
    free(up->hash_key_name);
    up->hash_key_name = name ? conf_xstrdup(name) : NULL;
}

static void conf_dump_hash_key(struct conf_json *w, const struct conf_key *key, const void *base)
{
    static const char *const kinds[] = { "client_ip", "uri", "header:", "cookie:" };
    const struct conf_upstream *up = base;
    char *text = NULL;
    if (asprintf(&text, "%s%s", kinds[up->hash_key], up->hash_key_name ? up->hash_key_name : "")
        < 0) {
        fputs("portero: out of memory while writing config\n", stderr);
        abort();
    }
    conf_json_str(w, key->name, text);
    free(text);
}

static void conf_set_redirect_status(struct conf_ctx *ctx, const struct yaml_doc_node *val,
                                     void *base)
{
    struct conf_route *route = base;
    const char *text = conf_scalar(ctx, val, "an integer", "status");
    uint64_t v;
    char q[CONF_QUOTE_SIZE];
    if (!text)
        return;
    if (conf_parse_u64(text, &v)) {
        conf_type_error(ctx, val, "an integer", "status");
        return;
    }
    if (v != 301 && v != 302 && v != 303 && v != 307 && v != 308) {
        conf_error(ctx, val, "invalid redirect status %s (expected one of: 301, 302, 303, 307, "
                   "308)", conf_quote_node(q, val));
        return;
    }
    route->redirect_status = (int)v;
}

static void conf_dump_redirect_status(struct conf_json *w, const struct conf_key *key,
                                      const void *base)
{
    conf_json_u64(w, key->name, (uint64_t)((const struct conf_route *)base)->redirect_status);
}

static void conf_set_path_regex(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base)
{
    struct conf_route *route = base;
    const char *text = conf_scalar(ctx, val, "a string", "path_regex");
    int code;
    PCRE2_SIZE offset;
    if (!text)
        return;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)text, PCRE2_ZERO_TERMINATED, 0, &code, &offset,
                                   NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        if (pcre2_get_error_message(code, msg, sizeof msg) < 0)
            snprintf((char *)msg, sizeof msg, "error %d", code);
        conf_error(ctx, val, "invalid path_regex: %s at offset %zu", (const char *)msg,
                   (size_t)offset);
        return;
    }
    pcre2_code_free(route->regex);
    free(route->path_regex);
    route->regex = re;
    route->path_regex = conf_xstrdup(text);
}

static void conf_dump_path_regex(struct conf_json *w, const struct conf_key *key,
                                 const void *base)
{
    const struct conf_route *route = base;
    if (route->path_regex)
        conf_json_str(w, key->name, route->path_regex);
}

/* Routes can name upstreams defined further down the file, so they are walked last: this only
 * remembers where they are. */
static void conf_stash_routes(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base)
{
    (void)base;
    ctx->routes_node = val;
}

static void conf_set_route_upstream(struct conf_ctx *ctx, const struct yaml_doc_node *val,
                                    void *base)
{
    struct conf_route *route = base;
    const char *text = conf_scalar(ctx, val, "an upstream name", "upstream");
    char q[CONF_QUOTE_SIZE];
    if (!text)
        return;
    route->upstream = (struct conf_upstream *)config_find_upstream(ctx->cfg, text);
    if (!route->upstream)
        conf_error(ctx, val, "unknown upstream %s in route", conf_quote_node(q, val));
}

static void conf_dump_route_upstream(struct conf_json *w, const struct conf_key *key,
                                    const void *base)
{
    const struct conf_route *route = base;
    if (route->action == ROUTE_UPSTREAM && route->upstream)
        conf_json_str(w, key->name, route->upstream->name);
}

/* ---------------------------------------------------------------------------------------
 * Tables: the schema. Defaults live in conf_defaults / conf_*_init, documented in config.h. */

static const char *const conf_log_formats[] = { "text", "json", NULL };
static const char *const conf_log_levels[] = { "error", "warn", "info", "debug", NULL };
static const char *const conf_balances[] = { "round_robin", "least_conn", "random_two", "hash",
                                             NULL };

#define DUR(n, T, f) { .name = n, .type = CT_DURATION, .off = offsetof(T, f), .min = 1, \
                       .max = CONF_MAX_DURATION_MS }

static const struct conf_key conf_log_keys[] = {
    { .name = "access", .type = CT_STRING, .off = offsetof(struct conf_log, access),
      .check = conf_check_nonempty },
    { .name = "format", .type = CT_ENUM, .off = offsetof(struct conf_log, format),
      .names = conf_log_formats },
    { .name = "error", .type = CT_STRING, .off = offsetof(struct conf_log, error),
      .check = conf_check_nonempty },
    { .name = "level", .type = CT_ENUM, .off = offsetof(struct conf_log, level),
      .names = conf_log_levels },
    DUR("flush_interval", struct conf_log, flush_interval_ms),
};
static const struct conf_table conf_log_table = CONF_TABLE("log", conf_log_keys);

static const struct conf_key conf_limits_keys[] = {
    { .name = "max_connections", .type = CT_U32,
      .off = offsetof(struct conf_limits, max_connections), .min = 1, .max = UINT32_MAX },
    DUR("header_timeout", struct conf_limits, header_timeout_ms),
    DUR("body_timeout", struct conf_limits, body_timeout_ms),
    DUR("keepalive_timeout", struct conf_limits, keepalive_timeout_ms),
    DUR("send_timeout", struct conf_limits, send_timeout_ms),
    DUR("tunnel_timeout", struct conf_limits, tunnel_timeout_ms),
    DUR("drain_timeout", struct conf_limits, drain_timeout_ms),
    { .name = "max_request_line", .type = CT_SIZE32,
      .off = offsetof(struct conf_limits, max_request_line), .min = 16, .max = UINT32_MAX },
    { .name = "max_header_bytes", .type = CT_SIZE32,
      .off = offsetof(struct conf_limits, max_header_bytes), .min = 64, .max = UINT32_MAX },
    { .name = "max_headers", .type = CT_U32, .off = offsetof(struct conf_limits, max_headers),
      .min = 1, .max = 65535 },
    { .name = "max_body_bytes", .type = CT_SIZE64,
      .off = offsetof(struct conf_limits, max_body_bytes), .min = 0, .max = UINT64_MAX },
    { .name = "min_body_rate", .type = CT_SIZE64,
      .off = offsetof(struct conf_limits, min_body_rate), .min = 0, .max = 1ULL << 40 },
    { .name = "shed_connections", .type = CT_U32,
      .off = offsetof(struct conf_limits, shed_connections), .min = 0, .max = 1000000 },
};
static const struct conf_table conf_limits_table = CONF_TABLE("limits", conf_limits_keys);

static const struct conf_key conf_forwarding_keys[] = {
    { .name = "x_forwarded", .type = CT_BOOL,
      .off = offsetof(struct conf_forwarding, x_forwarded) },
    { .name = "forwarded", .type = CT_BOOL, .off = offsetof(struct conf_forwarding, forwarded) },
    { .name = "via", .type = CT_BOOL, .off = offsetof(struct conf_forwarding, via) },
};
static const struct conf_table conf_forwarding_table =
    CONF_TABLE("forwarding", conf_forwarding_keys);

static const struct conf_key conf_admin_keys[] = {
    { .name = "address", .type = CT_STRING, .off = offsetof(struct config, admin_address),
      .check = conf_check_admin_address },
    { .name = "token", .type = CT_STRING, .off = offsetof(struct config, admin_token),
      .check = conf_check_visible },
};
static const struct conf_table conf_admin_table = CONF_TABLE("admin", conf_admin_keys);

static const struct conf_key conf_listener_keys[] = {
    { .name = "name", .type = CT_STRING, .off = offsetof(struct conf_listener, name),
      .check = conf_check_name },
    { .name = "address", .type = CT_STRING, .off = offsetof(struct conf_listener, address),
      .check = conf_check_address, .required = true },
    { .name = "proxy_protocol", .type = CT_BOOL,
      .off = offsetof(struct conf_listener, proxy_protocol) },
    { .name = "allow", .type = CT_CUSTOM, .set = conf_set_listener_allow,
      .dump = conf_dump_listener_acl },
    { .name = "deny", .type = CT_CUSTOM, .set = conf_set_listener_deny, .dump = conf_dump_nothing },
    { .name = "max_connections_per_ip", .type = CT_U32,
      .off = offsetof(struct conf_listener, max_connections_per_ip), .min = 0, .max = UINT32_MAX },
    { .name = "tls", .type = CT_CUSTOM, .set = conf_set_listener_tls, .dump = conf_dump_listener_tls },
    { .name = "http2", .type = CT_CUSTOM, .set = conf_set_listener_http2,
      .dump = conf_dump_listener_http2 },
    { .name = "redirect_https", .type = CT_CUSTOM, .set = conf_set_redirect_https,
      .dump = conf_dump_redirect_https },
};
static const struct conf_table conf_listener_table = CONF_TABLE("listener", conf_listener_keys);

static const struct conf_key conf_server_keys[] = {
    { .name = "address", .type = CT_STRING, .off = offsetof(struct conf_server, address),
      .check = conf_check_nonempty, .required = true },
    { .name = "weight", .type = CT_U32, .off = offsetof(struct conf_server, weight), .min = 1,
      .max = CONF_MAX_WEIGHT },
    { .name = "drain", .type = CT_BOOL, .off = offsetof(struct conf_server, drain) },
};
static const struct conf_table conf_server_table = CONF_TABLE("server", conf_server_keys);

static const struct conf_key conf_keepalive_keys[] = {
    { .name = "max_idle", .type = CT_U32, .off = offsetof(struct conf_upstream, keepalive_max_idle),
      .min = 0, .max = UINT32_MAX },
    DUR("idle_timeout", struct conf_upstream, keepalive_idle_timeout_ms),
};
static const struct conf_table conf_keepalive_table = CONF_TABLE("keepalive", conf_keepalive_keys);

static const struct conf_key conf_timeouts_keys[] = {
    DUR("connect", struct conf_upstream, connect_timeout_ms),
    DUR("response", struct conf_upstream, response_timeout_ms),
    DUR("idle", struct conf_upstream, idle_timeout_ms),
};
static const struct conf_table conf_timeouts_table = CONF_TABLE("timeouts", conf_timeouts_keys);

/* ---------------------------------------------------------------------------------------
 * Failover: health_check, outlier, retries, slow_start */

static const char *const conf_health_check_types[] = { "http", "tcp", NULL };

#define DUR0(n, T, f) { .name = n, .type = CT_DURATION, .off = offsetof(T, f), .min = 0, \
                        .max = CONF_MAX_DURATION_MS }

/* Reads an unsigned decimal scalar of VAL; false (reported as a type error) if it is none. */
bool conf_scalar_u64(struct conf_ctx *ctx, const struct yaml_doc_node *val,
                            const char *want, const char *name, uint64_t *out)
{
    const char *text = conf_scalar(ctx, val, want, name);
    if (!text)
        return false;
    if (conf_parse_u64(text, out)) {
        conf_type_error(ctx, val, want, name);
        return false;
    }
    return true;
}

/* `status: 200-399` or `status: 200`: codes 100..599, first <= last. */
static void conf_set_hc_status(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base)
{
    struct conf_health_check *hc = base;
    const char *want = "a status code or range (e.g. 200 or 200-399)";
    const char *text = conf_scalar(ctx, val, want, "status");
    const char *p = text;
    uint64_t lo, hi;
    char q[CONF_QUOTE_SIZE];
    if (!text)
        return;
    if (conf_parse_digits(&p, &lo) || (*p != '\0' && *p != '-')) {
        conf_type_error(ctx, val, want, "status");
        return;
    }
    hi = lo;
    if (*p == '-') {
        p++;
        if (conf_parse_digits(&p, &hi) || *p != '\0') {
            conf_type_error(ctx, val, want, "status");
            return;
        }
    }
    if (lo < 100 || hi > 599 || lo > hi) {
        conf_error(ctx, val, "invalid status %s (codes 100 to 599, first not above last)",
                   conf_quote_node(q, val));
        return;
    }
    hc->status_min = (int)lo;
    hc->status_max = (int)hi;
}

/* "200-399", or the single code as a number. */
static void conf_dump_hc_status(struct conf_json *w, const struct conf_key *key, const void *base)
{
    const struct conf_health_check *hc = base;
    char text[32];
    if (hc->status_min == hc->status_max) {
        conf_json_u64(w, key->name, (uint64_t)hc->status_min);
        return;
    }
    snprintf(text, sizeof text, "%d-%d", hc->status_min, hc->status_max);
    conf_json_str(w, key->name, text);
}

static const struct conf_key conf_health_check_keys[] = {
    { .name = "type", .type = CT_ENUM, .off = offsetof(struct conf_health_check, type),
      .names = conf_health_check_types },
    { .name = "path", .type = CT_STRING, .off = offsetof(struct conf_health_check, path),
      .check = conf_check_path },
    { .name = "host", .type = CT_STRING, .off = offsetof(struct conf_health_check, host),
      .check = conf_check_visible },
    DUR("interval", struct conf_health_check, interval_ms),
    DUR("timeout", struct conf_health_check, timeout_ms),
    { .name = "status", .type = CT_CUSTOM, .set = conf_set_hc_status,
      .dump = conf_dump_hc_status },
    { .name = "rise", .type = CT_U32, .off = offsetof(struct conf_health_check, rise), .min = 1,
      .max = UINT32_MAX },
    { .name = "fall", .type = CT_U32, .off = offsetof(struct conf_health_check, fall), .min = 1,
      .max = UINT32_MAX },
};
static const struct conf_table conf_health_check_table =
    CONF_TABLE("health_check", conf_health_check_keys);

/* The key's presence turns active checks on; absent keys keep conf_upstream_init's defaults. */
static void conf_set_health_check(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base)
{
    struct conf_upstream *up = base;
    up->health_check.enabled =
        conf_apply(ctx, val, &conf_health_check_table, &up->health_check, NULL);
}

static void conf_dump_health_check(struct conf_json *w, const struct conf_key *key,
                                   const void *base)
{
    const struct conf_upstream *up = base;
    if (up->health_check.enabled)
        conf_dump_nested(w, key->name, &conf_health_check_table, &up->health_check);
}

static const struct conf_key conf_outlier_keys[] = {
    { .name = "consecutive_failures", .type = CT_U32,
      .off = offsetof(struct conf_outlier, consecutive_failures), .min = 0, .max = UINT32_MAX },
    DUR("base_ejection", struct conf_outlier, base_ejection_ms),
    DUR("max_ejection", struct conf_outlier, max_ejection_ms),
    { .name = "max_ejected_percent", .type = CT_U32,
      .off = offsetof(struct conf_outlier, max_ejected_percent), .min = 0, .max = 100 },
};
static const struct conf_table conf_outlier_table = CONF_TABLE("outlier", conf_outlier_keys);

/* Reports LO > HI (two durations of mapping MAP) at HI's node, else LO's, else MAP. */
static void conf_check_dur_order(struct conf_ctx *ctx, const struct yaml_doc_node *map,
                                 const char *lo_name, uint64_t lo, const char *hi_name,
                                 uint64_t hi)
{
    if (lo <= hi)
        return;
    const struct yaml_doc_node *at = yaml_doc_get(map, hi_name);
    if (!at)
        at = yaml_doc_get(map, lo_name);
    conf_error(ctx, at ? at : map, "%s (%llums) must not be less than %s (%llums)", hi_name,
               (unsigned long long)hi, lo_name, (unsigned long long)lo);
}

static void conf_set_outlier(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base)
{
    struct conf_outlier *o = &((struct conf_upstream *)base)->outlier;
    if (conf_apply(ctx, val, &conf_outlier_table, o, NULL))
        conf_check_dur_order(ctx, val, "base_ejection", o->base_ejection_ms, "max_ejection",
                             o->max_ejection_ms);
}

/* A retry status: 429 or 5xx. */
static bool conf_is_retry_status(uint64_t v) { return v == 429 || (v >= 500 && v <= 599); }

/* `statuses: [502, 503]`: each 429 or 5xx, no repeats. */
static void conf_set_retry_statuses(struct conf_ctx *ctx, const struct yaml_doc_node *val,
                                    void *base)
{
    struct conf_retries *r = base;
    char q[CONF_QUOTE_SIZE];
    if (!conf_is_seq(ctx, val, "statuses"))
        return;
    size_t n = 0, count = yaml_doc_count(val);
    int *v = conf_xcalloc(count, sizeof *v);
    for (size_t i = 0; i < count; i++) {
        const struct yaml_doc_node *item = val->kids[i];
        uint64_t code;
        bool dup = false;
        if (!conf_scalar_u64(ctx, item, "an integer", "statuses", &code))
            continue;
        if (!conf_is_retry_status(code)) {
            conf_error(ctx, item, "invalid retry status %s (expected 429 or 500 to 599)",
                       conf_quote_node(q, item));
            continue;
        }
        for (size_t j = 0; j < n && !dup; j++)
            dup = v[j] == (int)code;
        if (dup)
            conf_error(ctx, item, "duplicate retry status %s", conf_quote_node(q, item));
        else
            v[n++] = (int)code;
    }
    free(r->statuses);
    r->statuses = v;
    r->n_statuses = n;
}

static void conf_dump_retry_statuses(struct conf_json *w, const struct conf_key *key,
                                     const void *base)
{
    const struct conf_retries *r = base;
    if (!r->n_statuses)
        return;
    conf_json_open(w, key->name, '[');
    for (size_t i = 0; i < r->n_statuses; i++)
        conf_json_u64(w, NULL, (uint64_t)r->statuses[i]);
    conf_json_close(w, ']');
}

static void conf_dump_retry_budget(struct conf_json *w, const struct conf_key *key,
                                   const void *base)
{
    conf_json_u64(w, key->name, ((const struct conf_retries *)base)->budget_percent);
}

/* `budget: 20%` or `budget: 20`: a percentage 0..100. */
static void conf_set_retry_budget(struct conf_ctx *ctx, const struct yaml_doc_node *val,
                                  void *base)
{
    struct conf_retries *r = base;
    const char *want = "a percentage (e.g. 20% or 20)";
    const char *text = conf_scalar(ctx, val, want, "budget");
    const char *p = text;
    uint64_t v;
    char q[CONF_QUOTE_SIZE];
    if (!text)
        return;
    if (conf_parse_digits(&p, &v) || (strcmp(p, "%") != 0 && *p != '\0')) {
        conf_type_error(ctx, val, want, "budget");
        return;
    }
    if (v > 100) {
        conf_error(ctx, val, "budget %s is out of range (0%% to 100%%)", conf_quote_node(q, val));
        return;
    }
    r->budget_percent = (uint32_t)v;
}

static const struct conf_key conf_retries_keys[] = {
    { .name = "attempts", .type = CT_U32, .off = offsetof(struct conf_retries, attempts),
      .min = 1, .max = 10 },
    DUR("per_try_timeout", struct conf_retries, per_try_timeout_ms),
    { .name = "statuses", .type = CT_CUSTOM, .set = conf_set_retry_statuses,
      .dump = conf_dump_retry_statuses },
    { .name = "budget", .type = CT_CUSTOM, .set = conf_set_retry_budget,
      .dump = conf_dump_retry_budget },
    { .name = "budget_min", .type = CT_U32, .off = offsetof(struct conf_retries, budget_min),
      .min = 0, .max = UINT32_MAX },
    DUR0("backoff", struct conf_retries, backoff_ms),
    DUR0("backoff_max", struct conf_retries, backoff_max_ms),
};
static const struct conf_table conf_retries_table = CONF_TABLE("retries", conf_retries_keys);

static void conf_set_retries(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base)
{
    struct conf_retries *r = &((struct conf_upstream *)base)->retries;
    if (conf_apply(ctx, val, &conf_retries_table, r, NULL))
        conf_check_dur_order(ctx, val, "backoff", r->backoff_ms, "backoff_max",
                             r->backoff_max_ms);
}

/* `slow_start: 30s`; `0` or `off` turns it off. */
static void conf_set_slow_start(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base)
{
    static const struct conf_key key = DUR0("slow_start", struct conf_upstream, slow_start_ms);
    if (val->kind == YAML_DOC_SCALAR && strcmp(val->text, "off") == 0) {
        ((struct conf_upstream *)base)->slow_start_ms = 0;
        return;
    }
    conf_set_number(ctx, &key, val, base);
}

static void conf_dump_slow_start(struct conf_json *w, const struct conf_key *key,
                                 const void *base)
{
    conf_json_duration(w, key->name, ((const struct conf_upstream *)base)->slow_start_ms);
}

/* ---------------------------------------------------------------------------------------
 * Upstreams */

static bool conf_is_hostname(const char *s, size_t n)
{
    if (n == 0 || n > 253)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.' || c == '_'))
            return false;
    }
    return true;
}

/* Fills SRV->addr from SRV->address: numeric forms directly, "host:port" by name lookup. AT is
 * the address node, for messages. */
static void conf_resolve_server(struct conf_ctx *ctx, const struct yaml_doc_node *at,
                                struct conf_server *srv)
{
    const char *text = srv->address;
    char q[CONF_QUOTE_SIZE], why[128] = "", host[256];
    uint16_t port;
    if (config_parse_address(text, &srv->addr, &srv->addr_len) == 0) {
        if (conf_is_wildcard(&srv->addr))
            conf_error(ctx, at, "invalid server address %s: a wildcard address cannot be "
                       "connected to", conf_quote(q, text, strlen(text)));
        return;
    }
    const char *colon = strrchr(text, ':');
    size_t hlen = colon ? (size_t)(colon - text) : 0;
    if (!colon || !conf_is_hostname(text, hlen) || conf_parse_port(colon + 1, &port)) {
        conf_error(ctx, at, "invalid server address %s (expected HOST:PORT, IP:PORT or "
                   "[IPv6]:PORT)", conf_quote(q, text, strlen(text)));
        return;
    }
    memcpy(host, text, hlen);
    host[hlen] = '\0';
    if (conf_resolver(host, colon + 1, &srv->addr, &srv->addr_len, why, sizeof why))
        conf_error(ctx, at, "cannot resolve %s: %s", conf_quote(q, host, hlen), why);
}

static void conf_set_servers(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base)
{
    struct conf_upstream *up = base;
    if (!conf_is_seq(ctx, val, "servers"))
        return;
    size_t count = yaml_doc_count(val);
    up->servers = conf_xcalloc(count, sizeof *up->servers);
    for (size_t i = 0; i < count; i++) {
        struct conf_server *srv = &up->servers[i];
        uint64_t seen;
        srv->weight = 1;
        srv->index = i;
        up->n_servers++;
        if (conf_apply(ctx, val->kids[i], &conf_server_table, srv, &seen) && srv->address)
            conf_resolve_server(ctx, yaml_doc_get(val->kids[i], "address"), srv);
    }
}

/* A server edit applied while writing JSON (config_edit_*). */
enum conf_edit_op { CONF_EDIT_ADD, CONF_EDIT_REMOVE, CONF_EDIT_SET };

struct conf_json_edit {
    enum conf_edit_op op;
    const struct conf_upstream *up; /* the upstream edited */
    const char *address;            /* the server added, removed or changed */
    uint32_t weight;                /* ADD, SET: 0 = default / keep */
    int drain;                      /* SET: < 0 keep, 0 clear, 1 set */
};

/* Is SRV the server written ADDRESS? Same text, or the same numeric endpoint. */
static bool conf_server_is(const struct conf_server *srv, const char *address)
{
    struct sockaddr_storage a, b;
    socklen_t la, lb;
    if (strcmp(srv->address, address) == 0)
        return true;
    return config_parse_address(srv->address, &a, &la) == 0 &&
           config_parse_address(address, &b, &lb) == 0 && conf_same_addr(&a, &b);
}

static void conf_dump_server(struct conf_json *w, const struct conf_server *srv)
{
    conf_json_open(w, NULL, '{');
    conf_dump_table(w, &conf_server_table, srv);
    conf_json_close(w, '}');
}

/* The servers, with the writer's edit applied when it concerns this upstream. */
static void conf_dump_servers(struct conf_json *w, const struct conf_key *key, const void *base)
{
    const struct conf_upstream *up = base;
    const struct conf_json_edit *e = w->edit && w->edit->up == up ? w->edit : NULL;
    conf_json_open(w, key->name, '[');
    for (size_t i = 0; i < up->n_servers; i++) {
        struct conf_server srv = up->servers[i];
        if (e && e->op != CONF_EDIT_ADD && conf_server_is(&srv, e->address)) {
            if (e->op == CONF_EDIT_REMOVE)
                continue;
            srv.weight = e->weight ? e->weight : srv.weight;
            srv.drain = e->drain < 0 ? srv.drain : e->drain > 0;
        }
        conf_dump_server(w, &srv);
    }
    if (e && e->op == CONF_EDIT_ADD) {
        struct conf_server srv = { .address = (char *)e->address,
                                   .weight = e->weight ? e->weight : 1 };
        conf_dump_server(w, &srv);
    }
    conf_json_close(w, ']');
}

static const struct conf_key conf_upstream_keys[] = {
    { .name = "balance", .type = CT_ENUM, .off = offsetof(struct conf_upstream, balance),
      .names = conf_balances },
    { .name = "hash_key", .type = CT_CUSTOM, .set = conf_set_hash_key,
      .dump = conf_dump_hash_key },
    { .name = "servers", .type = CT_CUSTOM, .set = conf_set_servers, .dump = conf_dump_servers,
      .required = true },
    { .name = "keepalive", .type = CT_NESTED, .sub = &conf_keepalive_table },
    { .name = "timeouts", .type = CT_NESTED, .sub = &conf_timeouts_table },
    { .name = "health_check", .type = CT_CUSTOM, .set = conf_set_health_check,
      .dump = conf_dump_health_check },
    { .name = "outlier", .type = CT_CUSTOM, .set = conf_set_outlier,
      .off = offsetof(struct conf_upstream, outlier), .sub = &conf_outlier_table },
    { .name = "retries", .type = CT_CUSTOM, .set = conf_set_retries,
      .off = offsetof(struct conf_upstream, retries), .sub = &conf_retries_table },
    { .name = "slow_start", .type = CT_CUSTOM, .set = conf_set_slow_start,
      .dump = conf_dump_slow_start },
    { .name = "panic", .type = CT_BOOL, .off = offsetof(struct conf_upstream, panic) },
    { .name = "protocol", .type = CT_ENUM, .off = offsetof(struct conf_upstream, protocol),
      .names = conf_upstream_protocols },
    { .name = "tls", .type = CT_CUSTOM, .set = conf_set_upstream_tls, .dump = conf_dump_upstream_tls },
};
static const struct conf_table conf_upstream_table = CONF_TABLE("upstream", conf_upstream_keys);

static void conf_upstream_init(struct conf_upstream *up, size_t index)
{
    up->index = index;
    up->balance = BALANCE_ROUND_ROBIN;
    up->hash_key = HASH_KEY_CLIENT_IP;
    up->keepalive_max_idle = 64;
    up->keepalive_idle_timeout_ms = 60000;
    up->connect_timeout_ms = 2000;
    up->response_timeout_ms = 30000;
    up->idle_timeout_ms = 60000;
    up->health_check = (struct conf_health_check){
        .type = HEALTH_CHECK_HTTP, .path = conf_xstrdup("/"), .interval_ms = 2000,
        .timeout_ms = 1000, .status_min = 200, .status_max = 399, .rise = 2, .fall = 3,
    };
    up->outlier = (struct conf_outlier){ .consecutive_failures = 5, .base_ejection_ms = 30000,
                                         .max_ejection_ms = 300000, .max_ejected_percent = 50 };
    up->retries = (struct conf_retries){ .attempts = 2, .budget_percent = 20, .budget_min = 3,
                                         .backoff_ms = 25, .backoff_max_ms = 250 };
    conf_tls_upstream_init(up);
}

static void conf_set_upstreams(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base)
{
    struct config *cfg = base;
    char q[CONF_QUOTE_SIZE];
    if (!conf_is_map(ctx, val, "upstreams"))
        return;
    conf_check_keys(ctx, val, "upstreams", false);
    cfg->upstreams = conf_xcalloc(yaml_doc_count(val), sizeof *cfg->upstreams);
    for (size_t i = 0; i < yaml_doc_count(val); i++) {
        const struct yaml_doc_node *k = yaml_doc_key(val, i), *v = yaml_doc_value(val, i);
        if (k->kind != YAML_DOC_SCALAR)
            continue;
        struct conf_upstream *up = &cfg->upstreams[cfg->n_upstreams];
        conf_upstream_init(up, cfg->n_upstreams++);
        up->name = conf_xstrdup(k->text);
        const char *problem = memchr(k->text, '\0', k->len) ? "must not hold NUL"
                                                             : conf_check_name(up->name);
        if (problem)
            conf_error(ctx, k, "invalid upstream name %s: %s", conf_quote_node(q, k), problem);
        if (!conf_apply(ctx, v, &conf_upstream_table, up, NULL))
            continue;
        const struct yaml_doc_node *servers = yaml_doc_get(v, "servers");
        if (servers && up->n_servers == 0 &&
            (servers->kind == YAML_DOC_SEQUENCE || yaml_doc_is_null(servers)))
            conf_error(ctx, servers, "upstream %s has no servers", conf_quote_node(q, k));
    }
}

static void conf_dump_upstreams(struct conf_json *w, const struct conf_key *key,
                                const void *base)
{
    const struct config *cfg = base;
    struct conf_json_mark m = conf_json_open(w, key->name, '{');
    for (size_t i = 0; i < cfg->n_upstreams; i++)
        conf_dump_nested(w, cfg->upstreams[i].name, &conf_upstream_table, &cfg->upstreams[i]);
    conf_json_close_or_drop(w, m, '}');
}

/* ---------------------------------------------------------------------------------------
 * Listeners */

/* Reports a listener whose name or address repeats an earlier one's. */
static void conf_check_listener_dups(struct conf_ctx *ctx, const struct yaml_doc_node *seq)
{
    struct config *cfg = ctx->cfg;
    char q[CONF_QUOTE_SIZE];
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        const struct conf_listener *l = &cfg->listeners[i];
        for (size_t j = 0; j < i; j++) {
            const struct conf_listener *m = &cfg->listeners[j];
            if (l->name && m->name && strcmp(l->name, m->name) == 0) {
                const struct yaml_doc_node *at = yaml_doc_get(seq->kids[i], "name");
                conf_error(ctx, at ? at : seq->kids[i], "duplicate listener name %s",
                           conf_quote(q, l->name, strlen(l->name)));
            }
            if (l->addr_len && m->addr_len && conf_same_addr(&l->addr, &m->addr))
                conf_error(ctx, yaml_doc_get(seq->kids[i], "address"),
                           "duplicate listener address %s (same as listener %s)",
                           conf_quote(q, l->address, strlen(l->address)), m->name ? m->name : "?");
        }
    }
}

static void conf_set_listeners(struct conf_ctx *ctx, const struct yaml_doc_node *val, void *base)
{
    struct config *cfg = base;
    char name[32];
    ctx->listeners_node = val;
    if (!conf_is_seq(ctx, val, "listeners"))
        return;
    size_t count = yaml_doc_count(val);
    cfg->listeners = conf_xcalloc(count, sizeof *cfg->listeners);
    for (size_t i = 0; i < count; i++) {
        struct conf_listener *l = &cfg->listeners[cfg->n_listeners++];
        conf_tls_listener_init(l);
        conf_apply(ctx, val->kids[i], &conf_listener_table, l, NULL);
        if (!l->name) {
            snprintf(name, sizeof name, "listener%zu", i + 1);
            l->name = conf_xstrdup(name);
        }
        if (l->address && config_parse_address(l->address, &l->addr, &l->addr_len))
            l->addr_len = 0; /* cannot happen: the check accepted it */
    }
    conf_check_listener_dups(ctx, val);
}

static void conf_dump_listeners(struct conf_json *w, const struct conf_key *key,
                                const void *base)
{
    const struct config *cfg = base;
    conf_json_open(w, key->name, '[');
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        conf_json_open(w, NULL, '{');
        conf_dump_table(w, &conf_listener_table, &cfg->listeners[i]);
        conf_json_close(w, '}');
    }
    conf_json_close(w, ']');
}

/* ---------------------------------------------------------------------------------------
 * Routes */

#define HDRS(n, T, f, nf, nofr) { .name = n, .type = CT_HEADERS, .off = offsetof(T, f), \
                                  .count_off = offsetof(T, nf), .no_framing = nofr }

static const struct conf_key conf_match_keys[] = {
    { .name = "host", .type = CT_STRING, .off = offsetof(struct conf_route, host),
      .check = conf_check_host },
    { .name = "path", .type = CT_STRING, .off = offsetof(struct conf_route, path),
      .check = conf_check_path },
    { .name = "path_prefix", .type = CT_STRING, .off = offsetof(struct conf_route, path_prefix),
      .check = conf_check_path },
    { .name = "path_regex", .type = CT_CUSTOM, .set = conf_set_path_regex,
      .dump = conf_dump_path_regex },
    { .name = "methods", .type = CT_TOKENS, .off = offsetof(struct conf_route, methods),
      .count_off = offsetof(struct conf_route, n_methods) },
    HDRS("headers", struct conf_route, match_headers, n_match_headers, false),
};
static const struct conf_table conf_match_table = CONF_TABLE("match", conf_match_keys);

static const struct conf_key conf_respond_keys[] = {
    { .name = "status", .type = CT_INT, .off = offsetof(struct conf_route, respond_status),
      .min = 100, .max = 599 },
    { .name = "body", .type = CT_STRING, .off = offsetof(struct conf_route, respond_body) },
    HDRS("headers", struct conf_route, respond_headers, n_respond_headers, true),
};
static const struct conf_table conf_respond_table = CONF_TABLE("respond", conf_respond_keys);

static const struct conf_key conf_redirect_keys[] = {
    { .name = "status", .type = CT_CUSTOM, .set = conf_set_redirect_status,
      .dump = conf_dump_redirect_status },
    { .name = "location", .type = CT_STRING,
      .off = offsetof(struct conf_route, redirect_location), .check = conf_check_location,
      .required = true },
};
static const struct conf_table conf_redirect_table = CONF_TABLE("redirect", conf_redirect_keys);

static const struct conf_key conf_header_ops_keys[] = {
    HDRS("set", struct conf_header_ops, set, n_set, true),
    HDRS("add", struct conf_header_ops, add, n_add, true),
    { .name = "remove", .type = CT_TOKENS, .off = offsetof(struct conf_header_ops, remove),
      .count_off = offsetof(struct conf_header_ops, n_remove) },
};
static const struct conf_table conf_request_headers_table =
    CONF_TABLE("request_headers", conf_header_ops_keys);
static const struct conf_table conf_response_headers_table =
    CONF_TABLE("response_headers", conf_header_ops_keys);

/* respond / redirect: written only for the route's action. */
static void conf_dump_action(struct conf_json *w, const struct conf_key *key, const void *base)
{
    const struct conf_route *route = base;
    enum route_action action = key->sub == &conf_respond_table ? ROUTE_RESPOND : ROUTE_REDIRECT;
    if (route->action == action)
        conf_dump_nested(w, key->name, key->sub, route);
}

static const struct conf_key conf_route_keys[] = {
    { .name = "name", .type = CT_STRING, .off = offsetof(struct conf_route, name),
      .check = conf_check_name },
    { .name = "match", .type = CT_NESTED, .sub = &conf_match_table },
    { .name = "upstream", .type = CT_CUSTOM, .set = conf_set_route_upstream,
      .dump = conf_dump_route_upstream },
    { .name = "strip_prefix", .type = CT_STRING, .off = offsetof(struct conf_route, strip_prefix),
      .check = conf_check_path },
    { .name = "respond", .type = CT_NESTED, .sub = &conf_respond_table,
      .dump = conf_dump_action },
    { .name = "redirect", .type = CT_NESTED, .sub = &conf_redirect_table,
      .dump = conf_dump_action },
    { .name = "request_headers", .type = CT_NESTED,
      .off = offsetof(struct conf_route, request_headers), .sub = &conf_request_headers_table },
    { .name = "response_headers", .type = CT_NESTED,
      .off = offsetof(struct conf_route, response_headers), .sub = &conf_response_headers_table },
    { .name = "allow", .type = CT_CUSTOM, .set = conf_set_route_allow, .dump = conf_dump_route_acl },
    { .name = "deny", .type = CT_CUSTOM, .set = conf_set_route_deny, .dump = conf_dump_nothing },
    { .name = "rate_limit", .type = CT_CUSTOM, .set = conf_set_route_rate_limit,
      .dump = conf_dump_route_rate_limit },
    { .name = "auth", .type = CT_CUSTOM, .set = conf_set_auth, .dump = conf_dump_auth },
    { .name = "waf", .type = CT_CUSTOM, .set = conf_set_waf, .dump = conf_dump_waf },
    { .name = "security_headers", .type = CT_CUSTOM, .set = conf_set_security_headers,
      .dump = conf_dump_security_headers },
    { .name = "cache", .type = CT_CUSTOM, .set = conf_set_route_cache, .dump = conf_dump_route_cache },
    { .name = "compress", .type = CT_CUSTOM, .set = conf_set_route_compress,
      .dump = conf_dump_route_compress },
    { .name = "buffering", .type = CT_CUSTOM, .set = conf_set_route_buffering,
      .dump = conf_dump_route_buffering },
};
static const struct conf_table conf_route_table = CONF_TABLE("route", conf_route_keys);

static void conf_dump_routes(struct conf_json *w, const struct conf_key *key, const void *base)
{
    const struct config *cfg = base;
    struct conf_json_mark m = conf_json_open(w, key->name, '[');
    for (size_t i = 0; i < cfg->n_routes; i++) {
        conf_json_open(w, NULL, '{');
        conf_dump_table(w, &conf_route_table, &cfg->routes[i]);
        conf_json_close(w, '}');
    }
    conf_json_close_or_drop(w, m, ']');
}

/* Picks the route's one action from the keys present; reports none, several, and a
 * strip_prefix that has no upstream to strip for. */
static void conf_route_action(struct conf_ctx *ctx, const struct yaml_doc_node *node,
                              struct conf_route *route, uint64_t seen)
{
    const struct conf_table *t = &conf_route_table;
    uint64_t up = conf_bit(t, "upstream"), resp = conf_bit(t, "respond"),
             redir = conf_bit(t, "redirect");
    int n = !!(seen & up) + !!(seen & resp) + !!(seen & redir);
    char q[CONF_QUOTE_SIZE];
    const char *name = conf_quote(q, route->name, strlen(route->name));
    if (n == 0)
        conf_error(ctx, node, "route %s has no action (expected one of: upstream, respond, "
                   "redirect)", name);
    else if (n > 1)
        conf_error(ctx, node, "route %s has more than one action (upstream, respond and "
                   "redirect exclude each other)", name);
    route->action = (seen & up) ? ROUTE_UPSTREAM : (seen & resp) ? ROUTE_RESPOND : ROUTE_REDIRECT;
    if ((seen & conf_bit(t, "strip_prefix")) && !(seen & up))
        conf_error(ctx, yaml_doc_get(node, "strip_prefix"),
                   "strip_prefix needs an upstream action in route %s", name);
}

static void conf_route_init(struct conf_route *route, size_t index)
{
    char name[32];
    route->index = index;
    route->respond_status = 200;
    route->respond_body = conf_xstrdup("");
    route->redirect_status = 302;
    snprintf(name, sizeof name, "route%zu", index + 1);
    route->name = conf_xstrdup(name);
}

static void conf_parse_routes(struct conf_ctx *ctx, const struct yaml_doc_node *val)
{
    struct config *cfg = ctx->cfg;
    char q[CONF_QUOTE_SIZE];
    if (!val || !conf_is_seq(ctx, val, "routes"))
        return;
    size_t count = yaml_doc_count(val);
    cfg->routes = conf_xcalloc(count, sizeof *cfg->routes);
    for (size_t i = 0; i < count; i++) {
        struct conf_route *route = &cfg->routes[cfg->n_routes++];
        uint64_t seen;
        conf_route_init(route, i);
        if (!conf_apply(ctx, val->kids[i], &conf_route_table, route, &seen))
            continue;
        conf_route_action(ctx, val->kids[i], route, seen);
        for (size_t j = 0; j < i; j++) {
            if (strcmp(cfg->routes[j].name, route->name) != 0)
                continue;
            const struct yaml_doc_node *at = yaml_doc_get(val->kids[i], "name");
            conf_error(ctx, at ? at : val->kids[i], "duplicate route name %s",
                       conf_quote(q, route->name, strlen(route->name)));
            break;
        }
    }
}

/* ---------------------------------------------------------------------------------------
 * The top level, snapshots and loading */

static const struct conf_key conf_top_keys[] = {
    { .name = "workers", .type = CT_CUSTOM, .set = conf_set_workers, .dump = conf_dump_workers },
    { .name = "log", .type = CT_NESTED, .off = offsetof(struct config, log),
      .sub = &conf_log_table },
    { .name = "limits", .type = CT_NESTED, .off = offsetof(struct config, limits),
      .sub = &conf_limits_table },
    { .name = "forwarding", .type = CT_NESTED, .off = offsetof(struct config, forwarding),
      .sub = &conf_forwarding_table },
    { .name = "admin", .type = CT_NESTED, .sub = &conf_admin_table },
    { .name = "listeners", .type = CT_CUSTOM, .set = conf_set_listeners,
      .dump = conf_dump_listeners },
    { .name = "upstreams", .type = CT_CUSTOM, .set = conf_set_upstreams,
      .dump = conf_dump_upstreams },
    { .name = "trusted_proxies", .type = CT_CUSTOM, .set = conf_set_trusted_proxies,
      .dump = conf_dump_trusted_proxies },
    { .name = "real_ip_header", .type = CT_STRING, .off = offsetof(struct config, real_ip_header),
      .check = conf_check_header_name },
    { .name = "rate_limits", .type = CT_CUSTOM, .set = conf_set_rate_limits,
      .dump = conf_dump_rate_limits },
    { .name = "redis", .type = CT_CUSTOM, .set = conf_set_redis, .dump = conf_dump_redis },
    { .name = "server_header", .type = CT_CUSTOM, .set = conf_set_server_header,
      .dump = conf_dump_server_header },
    { .name = "cache_zones", .type = CT_CUSTOM, .set = conf_set_cache_zones,
      .dump = conf_dump_cache_zones },
    { .name = "routes", .type = CT_CUSTOM, .set = conf_stash_routes, .dump = conf_dump_routes },
};
static const struct conf_table conf_top_table = CONF_TABLE("config", conf_top_keys);

static void conf_defaults(struct config *cfg, const char *path)
{
    atomic_init(&cfg->refs, 1);
    cfg->path = conf_xstrdup(path);
    cfg->workers = 0; /* auto */
    cfg->log = (struct conf_log){ .access = conf_xstrdup("stdout"), .format = LOG_FORMAT_TEXT,
                                  .error = conf_xstrdup("stderr"), .level = LOG_LEVEL_INFO,
                                  .flush_interval_ms = 1000 };
    cfg->limits = (struct conf_limits){
        .max_connections = 10000, .header_timeout_ms = 10000, .body_timeout_ms = 60000,
        .keepalive_timeout_ms = 75000, .send_timeout_ms = 60000, .tunnel_timeout_ms = 3600000,
        .drain_timeout_ms = 30000, .max_request_line = 8192, .max_header_bytes = 65536,
        .max_headers = 100, .max_body_bytes = 0, .shed_connections = 1024,
        .min_body_rate = 256,
    };
    cfg->forwarding = (struct conf_forwarding){ .x_forwarded = true };
    cfg->admin_address = conf_xstrdup("127.0.0.1:9901");
    conf_policy_defaults(cfg);
}

void conf_free_ops(struct conf_header_ops *ops)
{
    conf_free_kvs(ops->set, ops->n_set);
    conf_free_kvs(ops->add, ops->n_add);
    conf_free_strs(ops->remove, ops->n_remove);
}

static void conf_free_route(struct conf_route *r)
{
    free(r->name);
    free(r->host);
    free(r->path);
    free(r->path_prefix);
    free(r->path_regex);
    pcre2_code_free(r->regex);
    conf_free_strs(r->methods, r->n_methods);
    conf_free_kvs(r->match_headers, r->n_match_headers);
    free(r->strip_prefix);
    free(r->respond_body);
    conf_free_kvs(r->respond_headers, r->n_respond_headers);
    free(r->redirect_location);
    conf_free_ops(&r->request_headers);
    conf_free_ops(&r->response_headers);
    conf_policy_free_route(r);
    conf_cache_free_route(r);
}

static void conf_free(struct config *cfg)
{
    for (size_t i = 0; i < cfg->n_routes; i++)
        conf_free_route(&cfg->routes[i]);
    free(cfg->routes);
    for (size_t i = 0; i < cfg->n_upstreams; i++) {
        struct conf_upstream *up = &cfg->upstreams[i];
        for (size_t j = 0; j < up->n_servers; j++)
            free(up->servers[j].address);
        free(up->servers);
        free(up->name);
        free(up->hash_key_name);
        free(up->health_check.path);
        free(up->health_check.host);
        free(up->retries.statuses);
        conf_tls_free_upstream(up);
    }
    free(cfg->upstreams);
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        free(cfg->listeners[i].name);
        free(cfg->listeners[i].address);
        conf_policy_free_listener(&cfg->listeners[i]);
        conf_tls_free_listener(&cfg->listeners[i]);
    }
    free(cfg->listeners);
    free(cfg->log.access);
    free(cfg->log.error);
    free(cfg->admin_address);
    free(cfg->admin_token);
    conf_policy_free(cfg);
    conf_cache_free(cfg);
    free(cfg->path);
    free(cfg);
}

/* Walks the whole document into ctx->cfg; problems land in ctx. */
static void conf_build(struct conf_ctx *ctx, const struct yaml_doc_node *root)
{
    static const struct yaml_doc_node empty = { .kind = YAML_DOC_SCALAR, .line = 1, .col = 1,
                                                .text = (char *)"", .plain = true };
    if (!root)
        root = &empty; /* an empty file is an empty mapping: it fails for lack of listeners */
    ctx->root = root;
    if (!conf_apply(ctx, root, &conf_top_table, ctx->cfg, NULL))
        return;
    conf_parse_routes(ctx, ctx->routes_node);
    conf_policy_check(ctx);
    conf_tls_check(ctx);
    conf_cache_check(ctx);
    if (ctx->cfg->n_listeners == 0)
        conf_error(ctx, ctx->listeners_node ? ctx->listeners_node : root,
                   "no listeners defined (add at least one under \"listeners\")");
    if (ctx->cfg->workers == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        ctx->cfg->workers = n < 1 ? 1 : n > CONF_MAX_WORKERS ? CONF_MAX_WORKERS : (unsigned)n;
    }
}

struct config *config_load_buffer(const char *name, const char *data, size_t len,
                                  struct conf_errors *errs)
{
    struct conf_ctx ctx = { .file = name ? name : "<config>" };
    struct yaml_doc_node *root;
    struct yaml_doc_error yerr;
    struct yaml_doc_node at = { .kind = YAML_DOC_SCALAR };

    if (yaml_doc_parse(data ? data : "", data ? len : 0, &root, &yerr)) {
        at.line = yerr.line;
        at.col = yerr.col;
        conf_error(&ctx, &at, "%s", yerr.msg);
        conf_flush_errors(&ctx, errs);
        return NULL;
    }
    ctx.cfg = conf_xcalloc(1, sizeof *ctx.cfg);
    conf_defaults(ctx.cfg, ctx.file);
    conf_build(&ctx, root);
    yaml_doc_free(root);
    if (ctx.n_errs) {
        conf_free(ctx.cfg);
        conf_flush_errors(&ctx, errs);
        return NULL;
    }
    conf_flush_errors(&ctx, errs);
    return ctx.cfg;
}

/* Reads all of F into a malloc'd buffer. 0, or -1 with errno set. */
static int conf_slurp(FILE *f, char **data, size_t *len)
{
    FILE *mem = open_memstream(data, len);
    char chunk[65536];
    size_t n;
    if (!mem)
        return -1;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        fwrite(chunk, 1, n, mem);
    int bad = ferror(f) ? errno : 0;
    if (fclose(mem) != 0 && !bad)
        bad = errno ? errno : ENOMEM;
    if (bad) {
        free(*data);
        *data = NULL;
        errno = bad;
        return -1;
    }
    return 0;
}

struct config *config_load_file(const char *path, struct conf_errors *errs)
{
    FILE *f = fopen(path, "rb");
    char *data = NULL;
    size_t len = 0;
    if (f && conf_slurp(f, &data, &len) == 0) {
        fclose(f);
        struct config *cfg = config_load_buffer(path, data, len, errs);
        free(data);
        return cfg;
    }
    int err = errno;
    if (f)
        fclose(f);
    struct conf_ctx ctx = { .file = path };
    struct yaml_doc_node at = { .kind = YAML_DOC_SCALAR, .line = 1, .col = 1 };
    conf_error(&ctx, &at, "cannot read config file: %s", strerror(err));
    conf_flush_errors(&ctx, errs);
    return NULL;
}

struct config *config_ref(struct config *cfg)
{
    if (cfg)
        atomic_fetch_add_explicit(&cfg->refs, 1, memory_order_relaxed);
    return cfg;
}

void config_unref(struct config *cfg)
{
    if (cfg && atomic_fetch_sub_explicit(&cfg->refs, 1, memory_order_acq_rel) == 1)
        conf_free(cfg);
}

const struct conf_upstream *config_find_upstream(const struct config *cfg, const char *name)
{
    for (size_t i = 0; cfg && name && i < cfg->n_upstreams; i++)
        if (cfg->upstreams[i].name && strcmp(cfg->upstreams[i].name, name) == 0)
            return &cfg->upstreams[i];
    return NULL;
}

/* ---------------------------------------------------------------------------------------
 * JSON out, and edits of a running configuration */

/* CFG as JSON, with EDIT (if any) applied to its servers. */
static char *conf_write_json(const struct config *cfg, const struct conf_json_edit *edit)
{
    struct conf_json w = { .first = true, .edit = edit };
    if (!cfg)
        return NULL;
    conf_json_open(&w, NULL, '{');
    conf_dump_table(&w, &conf_top_table, cfg);
    conf_json_close(&w, '}');
    conf_json_raw(&w, "\n", 1);
    return w.buf;
}

char *config_to_json(const struct config *cfg)
{
    return conf_write_json(cfg, NULL);
}

static const struct conf_server *conf_find_server(const struct conf_upstream *up,
                                                  const char *address)
{
    for (size_t i = 0; i < up->n_servers; i++)
        if (conf_server_is(&up->servers[i], address))
            return &up->servers[i];
    return NULL;
}

/* Checks edit E of server ADDRESS in upstream UPSTREAM against CFG, then writes the edited
 * JSON. NULL with *ERR set when the edit cannot be made. */
static char *conf_edit(const struct config *cfg, const char *upstream, const char *address,
                       struct conf_json_edit *e, const char **err)
{
    const char *problem = NULL;
    e->up = cfg ? config_find_upstream(cfg, upstream) : NULL;
    e->address = address;
    if (!e->up)
        problem = "unknown upstream";
    else if (!address || !conf_is_visible(address))
        problem = e->op == CONF_EDIT_ADD ? "invalid server address" : "unknown server";
    else if (e->op == CONF_EDIT_ADD && conf_find_server(e->up, address))
        problem = "server already exists";
    else if (e->op != CONF_EDIT_ADD && !conf_find_server(e->up, address))
        problem = "unknown server";
    else if (e->op == CONF_EDIT_REMOVE && e->up->n_servers == 1)
        problem = "an upstream needs at least one server";
    if (err)
        *err = problem;
    return problem ? NULL : conf_write_json(cfg, e);
}

char *config_edit_add_server(const struct config *cfg, const char *upstream, const char *address,
                             uint32_t weight, const char **err)
{
    struct conf_json_edit e = { .op = CONF_EDIT_ADD, .weight = weight };
    return conf_edit(cfg, upstream, address, &e, err);
}

char *config_edit_remove_server(const struct config *cfg, const char *upstream, const char *address,
                                const char **err)
{
    struct conf_json_edit e = { .op = CONF_EDIT_REMOVE };
    return conf_edit(cfg, upstream, address, &e, err);
}

char *config_edit_server(const struct config *cfg, const char *upstream, const char *address,
                         uint32_t weight, int drain, const char **err)
{
    struct conf_json_edit e = { .op = CONF_EDIT_SET, .weight = weight, .drain = drain };
    return conf_edit(cfg, upstream, address, &e, err);
}
