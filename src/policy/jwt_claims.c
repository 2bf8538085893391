/* Strict JSON reading for JOSE objects, and the checks and extraction of JWT claims. */
#include "policy/jwt_priv.h"

#include <math.h>
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

struct yaml_doc_node *jwt_json_object(const char *data, size_t len)
{
    /* Outside whitespace, JSON has no control characters; an object is all there is. */
    for (size_t i = 0; i < len; i++)
        if (((unsigned char)data[i] < 0x20 && !jwt_json_space(data[i])) || data[i] == 0x7f)
            return NULL;
    size_t start = 0, end = len;
    while (start < end && jwt_json_space(data[start]))
        start++;
    while (end > start && jwt_json_space(data[end - 1]))
        end--;
    if (end - start < 2 || data[start] != '{' || data[end - 1] != '}')
        return NULL;
    struct yaml_doc_node *root = NULL;
    struct yaml_doc_error err;
    if (yaml_doc_parse(data, len, &root, &err) < 0 || !root)
        return NULL;
    if (root->kind != YAML_DOC_MAPPING || !jwt_json_tree_ok(root, 0)) {
        yaml_doc_free(root);
        return NULL;
    }
    return root;
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
