/* Loading of JWT verification keys: a PEM public key or certificate, a raw HS256 secret, or a
 * JWK Set (RFC 7517, key parameters RFC 7518 §6). */
#include "policy/jwt_priv.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "core/log.h"
#include "policy/base64.h"

#define JWT_MAX_KEY_FILE (1024 * 1024)
#define JWT_MIN_SECRET 32     /* RFC 7518 §3.2: a key at least as long as the hash */
#define JWT_MIN_RSA_BITS 2048 /* RFC 7518 §3.3 */

static const char *const jwt_alg_names[JWT_N_ALGS] = { "HS256", "RS256", "ES256" };

const char *jwt_alg_name(enum jwt_alg alg) { return jwt_alg_names[alg]; }

bool jwt_alg_allowed(const struct conf_auth *auth, enum jwt_alg alg)
{
    if (auth->n_algorithms == 0)
        return true;
    for (size_t i = 0; i < auth->n_algorithms; i++)
        if (strcmp(auth->algorithms[i], jwt_alg_names[alg]) == 0)
            return true;
    return false;
}

__attribute__((format(printf, 3, 4)))
static int jwt_err(char *err, size_t cap, const char *fmt, ...)
{
    if (cap) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, cap, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* Reads PATH whole (at most JWT_MAX_KEY_FILE bytes) into a malloc'd, NUL-terminated buffer. */
static char *jwt_read_file(const char *path, size_t *len, char *err, size_t cap)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        jwt_err(err, cap, "%s: %s", path, strerror(errno));
        return NULL;
    }
    char *data = malloc(JWT_MAX_KEY_FILE + 1);
    size_t n = data ? fread(data, 1, JWT_MAX_KEY_FILE + 1, f) : 0;
    const char *why = !data ? "out of memory" : ferror(f) ? strerror(errno)
                      : n > JWT_MAX_KEY_FILE ? "larger than 1 MiB" : NULL;
    fclose(f);
    if (why) {
        jwt_err(err, cap, "%s: %s", path, why);
        free(data);
        return NULL;
    }
    data[n] = '\0';
    *len = n;
    return data;
}

/* Adds a key; takes PKEY and SECRET (either may be NULL). */
static int jwt_add_key(struct jwt_keys *k, const char *kid, enum jwt_alg alg, EVP_PKEY *pkey,
                       unsigned char *secret, size_t secret_len)
{
    char *id = kid ? strdup(kid) : NULL;
    if (k->n == JWT_MAX_KEYS || (kid && !id)) {
        free(id);
        EVP_PKEY_free(pkey);
        OPENSSL_clear_free(secret, secret_len);
        return -1;
    }
    k->keys[k->n++] = (struct jwt_key){ .kid = id, .alg = alg, .pkey = pkey, .secret = secret,
                                        .secret_len = secret_len };
    return 0;
}

/* The algorithm a public key serves, or NULL with why it serves none. */
static const char *jwt_pkey_alg(EVP_PKEY *pkey, enum jwt_alg *alg)
{
    if (EVP_PKEY_is_a(pkey, "RSA")) {
        if (EVP_PKEY_get_bits(pkey) < JWT_MIN_RSA_BITS)
            return "RSA key shorter than 2048 bits (RFC 7518 §3.3)";
        *alg = JWT_RS256;
    } else if (EVP_PKEY_is_a(pkey, "EC")) {
        char group[64];
        if (!EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group,
                                            NULL) || strcmp(group, "prime256v1") != 0)
            return "EC key not on curve P-256 (ES256 needs P-256)";
        *alg = JWT_ES256;
    } else {
        return "unsupported key type (expected RSA or EC P-256)";
    }
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    bool ok = ctx && EVP_PKEY_public_check(ctx) == 1;
    EVP_PKEY_CTX_free(ctx);
    ERR_clear_error();
    return ok ? NULL : "public key fails its validity check";
}

/* ---------------------------------------------------------------------------------------
 * key_file */

/* The label of the first PEM block ("PUBLIC KEY" in "-----BEGIN PUBLIC KEY-----"). */
static void jwt_pem_label(const char *data, size_t len, char *label, size_t cap)
{
    const char *begin = memmem(data, len, "-----BEGIN ", 11);
    const char *start = begin ? begin + 11 : data + len;
    const char *end = memmem(start, len - (size_t)(start - data), "-----", 5);
    size_t n = end ? (size_t)(end - start) : 0;
    snprintf(label, cap, "%.*s", (int)(n < cap ? n : cap - 1), start);
}

static int jwt_load_pem(struct jwt_keys *k, const char *path, const char *data, size_t len,
                        char *err, size_t cap)
{
    char label[64];
    jwt_pem_label(data, len, label, sizeof label);
    if (strstr(label, "PRIVATE KEY"))
        return jwt_err(err, cap, "%s: holds a private key; give the public key", path);
    BIO *bio = BIO_new_mem_buf(data, (int)len);
    EVP_PKEY *pkey = NULL;
    bool known = true;
    if (bio && strcmp(label, "PUBLIC KEY") == 0) {
        pkey = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
    } else if (bio && strcmp(label, "CERTIFICATE") == 0) {
        X509 *cert = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        pkey = cert ? X509_get_pubkey(cert) : NULL;
        X509_free(cert);
    } else {
        known = false;
    }
    BIO_free(bio);
    ERR_clear_error();
    if (!known)
        return jwt_err(err, cap, "%s: PEM block \"%s\" is not supported (expected PUBLIC KEY or "
                       "CERTIFICATE)", path, label);
    if (!pkey)
        return jwt_err(err, cap, "%s: malformed PEM %s", path, label);
    enum jwt_alg alg;
    const char *why = jwt_pkey_alg(pkey, &alg);
    if (why) {
        EVP_PKEY_free(pkey);
        return jwt_err(err, cap, "%s: %s", path, why);
    }
    if (jwt_add_key(k, NULL, alg, pkey, NULL, 0) < 0)
        return jwt_err(err, cap, "%s: out of memory", path);
    return 0;
}

static int jwt_load_secret(struct jwt_keys *k, const char *path, const char *data, size_t len,
                           char *err, size_t cap)
{
    if (len && data[len - 1] == '\n')
        len--;
    if (len && data[len - 1] == '\r')
        len--;
    if (len < JWT_MIN_SECRET)
        return jwt_err(err, cap, "%s: an HS256 secret of %zu bytes is too short (RFC 7518 "
                       "§3.2: at least 32)", path, len);
    unsigned char *secret = malloc(len);
    if (!secret)
        return jwt_err(err, cap, "%s: out of memory", path);
    memcpy(secret, data, len);
    if (jwt_add_key(k, NULL, JWT_HS256, NULL, secret, len) < 0)
        return jwt_err(err, cap, "%s: out of memory", path);
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * jwks_file */

/* The text of member NAME of JWK when it is a scalar, else NULL. */
static const char *jwt_jwk_str(const struct yaml_doc_node *jwk, const char *name)
{
    const struct yaml_doc_node *v = yaml_doc_get(jwk, name);
    return v && v->kind == YAML_DOC_SCALAR ? v->text : NULL;
}

/* Member NAME of JWK decoded from base64url (RFC 7518 §6: Base64urlUInt and key bytes) into a
 * malloc'd buffer; NULL when absent, empty or malformed. */
static unsigned char *jwt_jwk_bytes(const struct yaml_doc_node *jwk, const char *name, size_t *len)
{
    const struct yaml_doc_node *v = yaml_doc_get(jwk, name);
    if (!v || v->kind != YAML_DOC_SCALAR || v->len == 0)
        return NULL;
    unsigned char *out = malloc(BASE64_DECODED_MAX(v->len));
    ssize_t n = out ? base64url_decode(v->text, v->len, out) : -1;
    if (n <= 0) {
        free(out);
        return NULL;
    }
    *len = (size_t)n;
    return out;
}

/* RFC 7518 §6.3.1: the modulus n and exponent e. */
static EVP_PKEY *jwt_jwk_rsa(const struct yaml_doc_node *jwk)
{
    size_t nl = 0, el = 0;
    unsigned char *n = jwt_jwk_bytes(jwk, "n", &nl), *e = jwt_jwk_bytes(jwk, "e", &el);
    BIGNUM *bn = n ? BN_bin2bn(n, (int)nl, NULL) : NULL, *be = e ? BN_bin2bn(e, (int)el, NULL) : NULL;
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    EVP_PKEY *pkey = NULL;
    if (bn && be && bld && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) &&
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be) &&
        (params = OSSL_PARAM_BLD_to_param(bld)) &&
        (ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL)) && EVP_PKEY_fromdata_init(ctx) == 1)
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params);
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn);
    BN_free(be);
    free(n);
    free(e);
    return pkey;
}

/* RFC 7518 §6.2.1: P-256 coordinates x and y, each the full 32 bytes. */
static EVP_PKEY *jwt_jwk_ec(const struct yaml_doc_node *jwk)
{
    size_t xl = 0, yl = 0;
    unsigned char *x = jwt_jwk_bytes(jwk, "x", &xl), *y = jwt_jwk_bytes(jwk, "y", &yl);
    unsigned char point[65]; /* SEC 1 uncompressed: 0x04 || x || y */
    EVP_PKEY *pkey = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    if (x && y && xl == 32 && yl == 32) {
        point[0] = 0x04;
        memcpy(point + 1, x, 32);
        memcpy(point + 33, y, 32);
        OSSL_PARAM params[] = {
            OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)"prime256v1", 0),
            OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, point, sizeof point),
            OSSL_PARAM_construct_end(),
        };
        if ((ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL)) && EVP_PKEY_fromdata_init(ctx) == 1)
            EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params);
    }
    EVP_PKEY_CTX_free(ctx);
    free(x);
    free(y);
    return pkey;
}

static int jwt_oom(const char **why)
{
    *why = "out of memory";
    return -1;
}

/* Builds the key JWK describes, of algorithm ALG. Returns 0, or -1 with why in *WHY. */
static int jwt_jwk_build(struct jwt_keys *k, const struct yaml_doc_node *jwk, enum jwt_alg alg,
                         const char **why)
{
    const char *kid = jwt_jwk_str(jwk, "kid");
    if (alg == JWT_HS256) {
        size_t len = 0;
        unsigned char *secret = jwt_jwk_bytes(jwk, "k", &len); /* RFC 7518 §6.4.1 */
        *why = !secret ? "bad or missing k" : len < JWT_MIN_SECRET
               ? "oct key shorter than 32 bytes (RFC 7518 §3.2)" : NULL;
        if (*why) {
            OPENSSL_clear_free(secret, len);
            return -1;
        }
        return jwt_add_key(k, kid, alg, NULL, secret, len) == 0 ? 0 : jwt_oom(why);
    }
    EVP_PKEY *pkey = alg == JWT_RS256 ? jwt_jwk_rsa(jwk) : jwt_jwk_ec(jwk);
    ERR_clear_error();
    enum jwt_alg got;
    *why = !pkey ? (alg == JWT_RS256 ? "bad or missing n or e" : "bad or missing x or y, or not a P-256 point")
                 : jwt_pkey_alg(pkey, &got);
    if (*why) {
        EVP_PKEY_free(pkey);
        return -1;
    }
    return jwt_add_key(k, kid, alg, pkey, NULL, 0) == 0 ? 0 : jwt_oom(why);
}

/* Which algorithm JWK's type serves (in *ALG). Returns NULL when the key is usable, else why it
 * is skipped; *ERROR is set instead when the key is malformed or contradicts itself. */
static const char *jwt_jwk_alg(const struct yaml_doc_node *jwk, enum jwt_alg *alg,
                               const char **error)
{
    const char *kty = jwt_jwk_str(jwk, "kty"), *crv = jwt_jwk_str(jwk, "crv");
    const char *use = jwt_jwk_str(jwk, "use"), *want = jwt_jwk_str(jwk, "alg");
    if (!kty) {
        *error = "no kty";
        return NULL;
    }
    if (strcmp(kty, "RSA") == 0)
        *alg = JWT_RS256;
    else if (strcmp(kty, "EC") == 0 && crv && strcmp(crv, "P-256") == 0)
        *alg = JWT_ES256;
    else if (strcmp(kty, "oct") == 0)
        *alg = JWT_HS256;
    else
        return strcmp(kty, "EC") == 0 ? "curve not supported" : "key type not supported";
    /* RFC 7517 §4.2: "sig" or "enc"; only signature keys verify tokens. */
    if (use && strcmp(use, "sig") != 0)
        return "not a signature key (use)";
    if (!want || strcmp(want, jwt_alg_name(*alg)) == 0)
        return NULL;
    for (int a = 0; a < JWT_N_ALGS; a++)
        if (strcmp(want, jwt_alg_name((enum jwt_alg)a)) == 0)
            *error = "alg does not fit kty";
    return *error ? NULL : "algorithm not supported";
}

/* Adds key I of the set, or skips it with a warning. Returns 0, or -1 with ERR filled. */
static int jwt_load_jwk(struct jwt_keys *k, const char *path, size_t i,
                        const struct yaml_doc_node *jwk, char *err, size_t cap)
{
    const char *why = NULL, *skip = NULL;
    enum jwt_alg alg = JWT_HS256;
    if (jwk->kind != YAML_DOC_MAPPING)
        why = "not an object";
    else
        skip = jwt_jwk_alg(jwk, &alg, &why);
    if (skip) {
        log_warn("%s: keys[%zu] skipped: %s", path, i, skip);
        return 0;
    }
    if (!why && k->n == JWT_MAX_KEYS)
        why = "more than 32 keys";
    if (!why && jwt_jwk_build(k, jwk, alg, &why) == 0)
        return 0;
    return jwt_err(err, cap, "%s: keys[%zu]: %s", path, i, why);
}

static int jwt_load_jwks(struct jwt_keys *k, const char *path, const char *data, size_t len,
                         char *err, size_t cap)
{
    struct yaml_doc_node *root = NULL;
    struct yaml_doc_error ye;
    if (yaml_doc_parse(data, len, &root, &ye) < 0)
        return jwt_err(err, cap, "%s:%u:%u: %s", path, ye.line, ye.col, ye.msg);
    const struct yaml_doc_node *keys = yaml_doc_get(root, "keys");
    int rc = 0;
    if (!keys || keys->kind != YAML_DOC_SEQUENCE)
        rc = jwt_err(err, cap, "%s: not a JWK Set (expected an object with a \"keys\" array)", path);
    for (size_t i = 0; rc == 0 && i < keys->n; i++)
        rc = jwt_load_jwk(k, path, i, keys->kids[i], err, cap);
    if (rc == 0 && k->n == 0)
        rc = jwt_err(err, cap, "%s: no usable key (RSA, EC P-256 or oct)", path);
    yaml_doc_free(root);
    return rc;
}

/* ---------------------------------------------------------------------------------------
 * Entry points */

/* Refuses a key set none of whose keys serves an algorithm AUTH allows. */
static int jwt_check_usable(const struct jwt_keys *k, const struct conf_auth *auth,
                            const char *path, char *err, size_t cap)
{
    char offered[32] = "";
    bool seen[JWT_N_ALGS] = { false };
    for (size_t i = 0; i < k->n; i++) {
        if (jwt_alg_allowed(auth, k->keys[i].alg))
            return 0;
        if (!seen[k->keys[i].alg]) {
            seen[k->keys[i].alg] = true;
            snprintf(offered + strlen(offered), sizeof offered - strlen(offered), "%s%s",
                     offered[0] ? ", " : "", jwt_alg_name(k->keys[i].alg));
        }
    }
    return jwt_err(err, cap, "%s: its keys serve %s, which algorithms does not allow", path,
                   offered);
}

static int jwt_load_file(struct jwt_keys *k, const struct conf_auth *auth, const char *path,
                         char *err, size_t cap)
{
    size_t len = 0;
    char *data = jwt_read_file(path, &len, err, cap);
    if (!data)
        return -1;
    int rc;
    if (!auth->key_file)
        rc = jwt_load_jwks(k, path, data, len, err, cap);
    else if (memmem(data, len, "-----BEGIN ", 11))
        rc = jwt_load_pem(k, path, data, len, err, cap); /* never a secret: see jwt.h */
    else
        rc = jwt_load_secret(k, path, data, len, err, cap);
    OPENSSL_clear_free(data, len + 1);
    return rc < 0 ? -1 : jwt_check_usable(k, auth, path, err, cap);
}

struct jwt_keys *jwt_keys_load(const struct conf_auth *auth, char *err, size_t cap)
{
    const char *path = auth->key_file ? auth->key_file : auth->jwks_file;
    if (!path) {
        jwt_err(err, cap, "jwt: needs key_file or jwks_file");
        return NULL;
    }
    if (auth->n_claims > JWT_MAX_CLAIMS) {
        jwt_err(err, cap, "jwt: at most %d claims can be mapped to headers", JWT_MAX_CLAIMS);
        return NULL;
    }
    struct jwt_keys *k = calloc(1, sizeof *k);
    if (!k || !(k->hmac = EVP_MAC_fetch(NULL, "HMAC", NULL))) {
        jwt_err(err, cap, "%s: %s", path, k ? "HMAC is not available" : "out of memory");
        jwt_keys_free(k);
        return NULL;
    }
    if (jwt_load_file(k, auth, path, err, cap) < 0) {
        jwt_keys_free(k);
        return NULL;
    }
    return k;
}

void jwt_keys_free(struct jwt_keys *k)
{
    if (!k)
        return;
    for (size_t i = 0; i < k->n; i++) {
        free(k->keys[i].kid);
        EVP_PKEY_free(k->keys[i].pkey);
        OPENSSL_clear_free(k->keys[i].secret, k->keys[i].secret_len);
    }
    EVP_MAC_free(k->hmac);
    free(k);
}
