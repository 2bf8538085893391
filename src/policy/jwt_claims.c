/* Strict JSON reading for JOSE objects, and the checks and extraction of JWT claims. */
#include "policy/jwt_priv.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------
 * JSON through the YAML reader. YAML reads every JSON text the same way JSON does; what it
 * reads besides (plain words, comments, block style) is refused here. */

/* RFC 8259 §6: -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)? */
static bool jwt_json_number_text(const char *s, size_t n)
{
    size_t i = 0;
    if (i < n && s[i] == '-')
        i++;
    if (i < n && s[i] == '0')
        i++;
    else if (i < n && s[i] >= '1' && s[i] <= '9')
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
    else
        return false;
    if (i < n && s[i] == '.') {
        size_t start = ++i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == start)
            return false;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        size_t start = i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == start)
            return false;
    }
    return i == n;
}

/* An unquoted scalar is JSON only as a literal or a number. */
static bool jwt_json_plain_ok(const struct yaml_doc_node *node)
{
    static const char *const literals[] = { "true", "false", "null" };
    for (size_t i = 0; i < 3; i++)
        if (node->len == strlen(literals[i]) && memcmp(node->text, literals[i], node->len) == 0)
            return true;
    return jwt_json_number_text(node->text, node->len);
}

static bool jwt_json_same_name(const struct yaml_doc_node *a, const struct yaml_doc_node *b)
{
    return a->len == b->len && memcmp(a->text, b->text, a->len) == 0;
}

/* Object names are quoted and unique (RFC 7515 §4, RFC 7519 §4 let us refuse duplicates). */
static bool jwt_json_object_ok(const struct yaml_doc_node *map)
{
    size_t n = yaml_doc_count(map);
    if (n > JWT_JSON_MAX_MEMBERS)
        return false;
    for (size_t i = 0; i < n; i++) {
        const struct yaml_doc_node *k = yaml_doc_key(map, i);
        if (k->kind != YAML_DOC_SCALAR || k->plain)
            return false;
        for (size_t j = 0; j < i; j++)
            if (jwt_json_same_name(yaml_doc_key(map, j), k))
                return false;
    }
    return true;
}

static bool jwt_json_tree_ok(const struct yaml_doc_node *node, unsigned depth)
{
    if (node->kind == YAML_DOC_SCALAR)
        return !node->plain || jwt_json_plain_ok(node);
    if (depth >= JWT_JSON_MAX_DEPTH)
        return false;
    if (node->kind == YAML_DOC_MAPPING && !jwt_json_object_ok(node))
        return false;
    for (size_t i = 0; i < node->n; i++)
        if (!jwt_json_tree_ok(node->kids[i], depth + 1))
            return false;
    return true;
}

static bool jwt_json_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* The lexical rules of RFC 8259 that YAML's reader does not apply, checked while DATA is copied
 * for it: outside strings only JSON's structure, literals and numbers (no quotes of YAML's own,
 * tags, anchors, comments, trailing commas, second documents); inside strings only JSON's
 * escapes. The copy is never longer than DATA. */
struct jwt_json_lex {
    char *out;
    size_t n;
    char open[JWT_JSON_MAX_DEPTH + 1]; /* '{' or '[' of each container not yet closed */
    size_t depth;
    char last;                         /* the last byte outside strings but whitespace */
    bool done;                         /* the top-level object closed */
};

static bool jwt_json_hex4(const char *s, size_t avail, unsigned *v)
{
    *v = 0;
    for (size_t i = 0; i < 4; i++) {
        char c = i < avail ? s[i] : '\0';
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0)
            return false;
        *v = *v << 4 | (unsigned)d;
    }
    return true;
}

/* RFC 8259 §7: a \u escape at S (AVAIL bytes, S[0] == '\\', S[1] == 'u'). A character beyond
 * U+FFFF is written as a surrogate pair (encoders that escape non-ASCII, e.g. Python's json,
 * do so), which YAML refuses: the pair becomes YAML's \UXXXXXXXX. A lone surrogate is no
 * character and has no UTF-8 form (RFC 7519 §7.2 step 10 wants valid UTF-8): refused. Returns
 * the bytes read, 0 when malformed. */
static size_t jwt_json_unicode(struct jwt_json_lex *lx, const char *s, size_t avail)
{
    unsigned hi, lo;
    if (!jwt_json_hex4(s + 2, avail - 2, &hi) || (hi >= 0xDC00 && hi <= 0xDFFF))
        return 0;
    if (hi < 0xD800 || hi > 0xDBFF) {
        memcpy(lx->out + lx->n, s, 6);
        lx->n += 6;
        return 6;
    }
    if (avail < 12 || s[6] != '\\' || s[7] != 'u' || !jwt_json_hex4(s + 8, avail - 8, &lo) ||
        lo < 0xDC00 || lo > 0xDFFF)
        return 0;
    unsigned cp = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
    lx->n += (size_t)snprintf(lx->out + lx->n, 11, "\\U%08X", cp); /* 10 of the 12 bytes */
    return 12;
}

/* The string whose opening quote is at DATA[I]: copied, escapes checked, raw control characters
 * refused (RFC 8259 §7). Returns the index just past its closing quote, 0 when malformed. */
static size_t jwt_json_string(struct jwt_json_lex *lx, const char *data, size_t len, size_t i)
{
    lx->out[lx->n++] = data[i++];
    while (i < len && data[i] != '"') {
        if ((unsigned char)data[i] < 0x20 || data[i] == 0x7f)
            return 0;
        if (data[i] != '\\') {
            lx->out[lx->n++] = data[i++];
            continue;
        }
        if (i + 1 < len && data[i + 1] == 'u') {
            size_t used = jwt_json_unicode(lx, data + i, len - i);
            if (!used)
                return 0;
            i += used;
        } else if (i + 1 < len && strchr("\"\\/bfnrt", data[i + 1]) && data[i + 1] != '\0') {
            lx->out[lx->n++] = data[i++];
            lx->out[lx->n++] = data[i++];
        } else {
            return 0;
        }
    }
    if (i == len)
        return 0;
    lx->out[lx->n++] = data[i];
    return i + 1;
}

/* One byte outside strings (whitespace excepted). */
static bool jwt_json_structural(struct jwt_json_lex *lx, char c)
{
    char top = lx->depth ? lx->open[lx->depth - 1] : '\0';
    bool ok;
    if (lx->done || (!lx->depth && c != '{'))
        return false; /* one object, nothing before or after it */
    if (c == '{' || c == '[') {
        ok = lx->depth < JWT_JSON_MAX_DEPTH;
        if (ok)
            lx->open[lx->depth++] = c;
    } else if (c == '}' || c == ']') {
        ok = top == (c == '}' ? '{' : '[') && lx->last != ',' && lx->last != ':';
        if (ok && --lx->depth == 0)
            lx->done = true;
    } else if (c == ':') {
        ok = top == '{' && lx->last == '"';
    } else if (c == ',') {
        ok = lx->last != '{' && lx->last != '[' && lx->last != ',' && lx->last != ':';
    } else {
        ok = strchr("0123456789+-.eEtrufalsn", c) != NULL; /* numbers, true, false, null */
    }
    lx->last = c;
    return ok;
}

/* Copies DATA into LX->out (LEN bytes) if it is lexically one JSON object; false if not. */
static bool jwt_json_lex(struct jwt_json_lex *lx, const char *data, size_t len)
{
    for (size_t i = 0; i < len;) {
        char c = data[i];
        if (((unsigned char)c < 0x20 && !jwt_json_space(c)) || c == 0x7f)
            return false;
        if (c == '"' && lx->depth && !lx->done) {
            if (!(i = jwt_json_string(lx, data, len, i)))
                return false;
            lx->last = '"';
            continue;
        }
        if (!jwt_json_space(c) && !jwt_json_structural(lx, c))
            return false;
        lx->out[lx->n++] = data[i++];
    }
    return lx->done;
}

struct yaml_doc_node *jwt_json_object(const char *data, size_t len)
{
    struct jwt_json_lex lx = { .out = malloc(len + 1) };
    struct yaml_doc_node *root = NULL;
    struct yaml_doc_error err;
    bool ok = lx.out && jwt_json_lex(&lx, data, len) &&
              yaml_doc_parse(lx.out, lx.n, &root, &err) == 0 && root;
    free(lx.out);
    if (ok && root->kind == YAML_DOC_MAPPING && jwt_json_tree_ok(root, 0))
        return root;
    yaml_doc_free(root);
    return NULL;
}

bool jwt_json_is_string(const struct yaml_doc_node *node)
{
    return node && node->kind == YAML_DOC_SCALAR && !node->plain;
}

static bool jwt_json_string_eq(const struct yaml_doc_node *node, const char *s)
{
    return jwt_json_is_string(node) && node->len == strlen(s) && memcmp(node->text, s, node->len) == 0;
}

/* ---------------------------------------------------------------------------------------
 * Registered claims (RFC 7519 §4.1) */

/* A NumericDate (RFC 7519 §2): seconds since the epoch, fractions allowed. Returns 1 when
 * present and well formed (in *OUT), 0 when absent, -1 when malformed. */
static int jwt_numeric_date(const struct yaml_doc_node *payload, const char *name, double *out)
{
    const struct yaml_doc_node *node = yaml_doc_get(payload, name);
    if (!node)
        return 0;
    /* In a checked tree a plain scalar other than a literal is a number. */
    if (node->kind != YAML_DOC_SCALAR || !node->plain || !jwt_json_number_text(node->text, node->len))
        return -1;
    *out = strtod(node->text, NULL);
    return isfinite(*out) ? 1 : -1;
}

static bool jwt_audience_ok(const struct yaml_doc_node *aud, const char *want)
{
    if (!aud)
        return false;
    if (aud->kind == YAML_DOC_SEQUENCE) {
        for (size_t i = 0; i < aud->n; i++)
            if (jwt_json_string_eq(aud->kids[i], want))
                return true;
        return false;
    }
    return jwt_json_string_eq(aud, want);
}

const char *jwt_claims_check(const struct yaml_doc_node *payload, const struct conf_auth *auth,
                             int64_t now)
{
    double leeway = (double)auth->leeway_ms / 1000.0, t = (double)now, exp, nbf;
    int has_exp = jwt_numeric_date(payload, "exp", &exp);
    int has_nbf = jwt_numeric_date(payload, "nbf", &nbf);
    if (has_exp < 0)
        return "bad exp claim";
    if (has_nbf < 0)
        return "bad nbf claim";
    /* RFC 7519 §4.1.4: the current time MUST be before exp. */
    if (has_exp && t >= exp + leeway)
        return "expired";
    /* RFC 7519 §4.1.5: the current time MUST be after or equal to nbf. */
    if (has_nbf && t + leeway < nbf)
        return "not yet valid";
    /* RFC 7519 §4.1.1, §4.1.3: compared as case-sensitive strings. */
    if (auth->issuer && !jwt_json_string_eq(yaml_doc_get(payload, "iss"), auth->issuer))
        return "wrong issuer";
    if (auth->audience && !jwt_audience_ok(yaml_doc_get(payload, "aud"), auth->audience))
        return "wrong audience";
    return NULL;
}

/* ---------------------------------------------------------------------------------------
 * Claims mapped to request headers */

/* A header value may hold visible characters, SP, HTAB and obs-text (RFC 9110 §5.5). */
static bool jwt_header_safe(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)s[i] < 0x20 && s[i] != '\t') || s[i] == 0x7f)
            return false;
    return true;
}

/* Items that carry a value: scalars but null. */
static bool jwt_claim_item(const struct yaml_doc_node *node)
{
    return node->kind == YAML_DOC_SCALAR && !yaml_doc_is_null(node);
}

/* ITEMS[0..N) joined with ", ", nulls left out. *OUT is malloc'd, or NULL when no item has a
 * value or one is an array or object (that has no header form). */
static const char *jwt_claim_join(const struct yaml_doc_node *const *items, size_t n, char **out)
{
    size_t total = 0, used = 0;
    for (size_t i = 0; i < n; i++) {
        if (items[i]->kind != YAML_DOC_SCALAR)
            return NULL;
        if (!jwt_claim_item(items[i]))
            continue;
        if (!jwt_header_safe(items[i]->text, items[i]->len))
            return "claim not valid in a header";
        total += items[i]->len + (used++ ? 2 : 0);
    }
    if (used == 0)
        return NULL;
    char *p = malloc(total + 1);
    if (!p)
        return "out of memory";
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        if (!jwt_claim_item(items[i]))
            continue;
        if (at) {
            memcpy(p + at, ", ", 2);
            at += 2;
        }
        memcpy(p + at, items[i]->text, items[i]->len);
        at += items[i]->len;
    }
    p[at] = '\0';
    *out = p;
    return NULL;
}

/* A scalar as its text, an array of scalars joined, an object absent. */
static const char *jwt_claim_value(const struct yaml_doc_node *node, char **out)
{
    *out = NULL;
    if (!node || node->kind == YAML_DOC_MAPPING)
        return NULL;
    if (node->kind == YAML_DOC_SCALAR)
        return jwt_claim_join(&node, 1, out);
    return jwt_claim_join((const struct yaml_doc_node *const *)node->kids, node->n, out);
}

const char *jwt_claims_extract(const struct yaml_doc_node *payload, const struct conf_auth *auth,
                               struct jwt_result *res)
{
    size_t n = auth->n_claims < JWT_MAX_CLAIMS ? auth->n_claims : JWT_MAX_CLAIMS;
    res->n_values = n;
    for (size_t i = 0; i < n; i++) {
        const char *e = jwt_claim_value(yaml_doc_get(payload, auth->claims[i].name), &res->values[i]);
        if (e)
            return e;
    }
    return NULL;
}
