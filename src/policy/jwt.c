/* Verification of a JWT in JWS compact serialization (RFC 7515 §5.2, RFC 7519 §7.2). */
#include "policy/jwt_priv.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>

#include "policy/base64.h"

/* The three parts of a compact JWS, still base64url, pointing into the token. */
struct jwt_parts {
    const char *header, *payload, *sig;
    size_t header_len, payload_len, sig_len;
};

/* What the protected header says; KID points into the header's tree. */
struct jwt_header {
    enum jwt_alg alg;
    const char *kid; /* NULL: no kid */
    size_t kid_len;
};

/* RFC 7515 §7.1: header "." payload "." signature, none of them empty here (a JWT's claims are
 * an object; only alg "none" has an empty signature). Five parts would be a JWE (RFC 7516). */
static bool jwt_split(const char *t, size_t len, struct jwt_parts *p)
{
    const char *end = t + len;
    const char *d1 = memchr(t, '.', len);
    const char *d2 = d1 ? memchr(d1 + 1, '.', (size_t)(end - d1 - 1)) : NULL;
    if (!d2 || memchr(d2 + 1, '.', (size_t)(end - d2 - 1)))
        return false;
    *p = (struct jwt_parts){ .header = t, .header_len = (size_t)(d1 - t),
                             .payload = d1 + 1, .payload_len = (size_t)(d2 - d1 - 1),
                             .sig = d2 + 1, .sig_len = (size_t)(end - d2 - 1) };
    return p->header_len && p->payload_len && p->sig_len;
}

static const char *jwt_read_header(const struct yaml_doc_node *h, const struct conf_auth *auth,
                                   struct jwt_header *out)
{
    const struct yaml_doc_node *alg = yaml_doc_get(h, "alg"), *kid = yaml_doc_get(h, "kid");
    if (!jwt_json_is_string(alg) || (kid && !jwt_json_is_string(kid)))
        return "malformed header";
    /* RFC 7515 §4.1.11: critical extensions not understood MUST be refused; we know none. */
    if (yaml_doc_get(h, "crit"))
        return "unsupported critical header";
    /* RFC 7518 §3.6 "none" would let anyone write tokens; alg names are case-sensitive. */
    if (alg->len == 4 && memcmp(alg->text, "none", 4) == 0)
        return "algorithm none refused";
    int found = -1;
    for (int a = 0; a < JWT_N_ALGS; a++)
        if (alg->len == 5 && memcmp(alg->text, jwt_alg_name((enum jwt_alg)a), 5) == 0)
            found = a;
    if (found < 0 || !jwt_alg_allowed(auth, (enum jwt_alg)found))
        return "algorithm not allowed";
    *out = (struct jwt_header){ .alg = (enum jwt_alg)found, .kid = kid ? kid->text : NULL,
                                .kid_len = kid ? kid->len : 0 };
    return NULL;
}

/* ---------------------------------------------------------------------------------------
 * Signatures (RFC 7518 §3.2-3.4) */

static bool jwt_verify_hmac(EVP_MAC *mac, const struct jwt_key *key, const char *in, size_t n,
                            const unsigned char *sig, size_t sig_len)
{
    unsigned char out[32];
    size_t out_len = 0;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    EVP_MAC_CTX *ctx = sig_len == sizeof out ? EVP_MAC_CTX_new(mac) : NULL;
    bool ok = ctx && EVP_MAC_init(ctx, key->secret, key->secret_len, params) == 1 &&
              EVP_MAC_update(ctx, (const unsigned char *)in, n) == 1 &&
              EVP_MAC_final(ctx, out, &out_len, sizeof out) == 1 && out_len == sizeof out &&
              CRYPTO_memcmp(out, sig, sizeof out) == 0;
    EVP_MAC_CTX_free(ctx);
    return ok;
}

static bool jwt_verify_pkey(EVP_PKEY *pkey, const char *in, size_t n, const unsigned char *sig,
                            size_t sig_len)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    bool ok = md && EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pkey) == 1 &&
              EVP_DigestVerify(md, sig, sig_len, (const unsigned char *)in, n) == 1;
    EVP_MD_CTX_free(md);
    return ok;
}

/* One DER INTEGER from a big-endian unsigned V[0..N): minimal, with a 0 byte when the top
 * bit is set so it stays positive. Returns the bytes written (at most N + 3). */
static size_t jwt_der_integer(const unsigned char *v, size_t n, unsigned char *out)
{
    while (n > 1 && v[0] == 0) {
        v++;
        n--;
    }
    size_t pad = (v[0] & 0x80) ? 1 : 0;
    out[0] = 0x02;
    out[1] = (unsigned char)(n + pad);
    out[2] = 0;
    memcpy(out + 2 + pad, v, n);
    return 2 + pad + n;
}

/* RFC 7518 §3.4: a JWS carries R || S, 32 bytes each; EVP wants the DER ECDSA-Sig-Value of
 * RFC 3279 §2.2.3, SEQUENCE { r INTEGER, s INTEGER } (at most 72 bytes). */
static size_t jwt_es256_der(const unsigned char *sig, unsigned char *out)
{
    size_t n = 2;
    n += jwt_der_integer(sig, 32, out + n);
    n += jwt_der_integer(sig + 32, 32, out + n);
    out[0] = 0x30;
    out[1] = (unsigned char)(n - 2);
    return n;
}

static bool jwt_verify_with(const struct jwt_keys *keys, const struct jwt_key *key, const char *in,
                            size_t n, const unsigned char *sig, size_t sig_len)
{
    unsigned char der[72];
    bool ok = false;
    if (key->alg == JWT_HS256)
        ok = jwt_verify_hmac(keys->hmac, key, in, n, sig, sig_len);
    else if (key->alg == JWT_RS256)
        ok = sig_len == (size_t)EVP_PKEY_get_size(key->pkey) &&
             jwt_verify_pkey(key->pkey, in, n, sig, sig_len);
    else if (sig_len == 64)
        ok = jwt_verify_pkey(key->pkey, in, n, der, jwt_es256_der(sig, der));
    ERR_clear_error();
    return ok;
}

static bool jwt_kid_is(const struct jwt_key *key, const struct jwt_header *h)
{
    return key->kid && strlen(key->kid) == h->kid_len && memcmp(key->kid, h->kid, h->kid_len) == 0;
}

/* A token with a kid is checked with the keys of that id; if no key has it, with the keys that
 * have no id (a key_file has none). A token without kid may be checked with any key. Among
 * those, only keys of the header's algorithm are used: never an RSA public key as an HMAC
 * secret (RFC 8725 §2.1). */
static const char *jwt_check_signature(const struct jwt_keys *keys, const struct jwt_header *h,
                                       const char *in, size_t n, const unsigned char *sig,
                                       size_t sig_len)
{
    bool kid_known = false, candidate = false, alg_fits = false;
    for (size_t i = 0; h->kid && i < keys->n; i++)
        kid_known = kid_known || jwt_kid_is(&keys->keys[i], h);
    for (size_t i = 0; i < keys->n; i++) {
        const struct jwt_key *key = &keys->keys[i];
        if (h->kid && (kid_known ? !jwt_kid_is(key, h) : key->kid != NULL))
            continue;
        candidate = true;
        if (key->alg != h->alg)
            continue;
        alg_fits = true;
        if (jwt_verify_with(keys, key, in, n, sig, sig_len))
            return NULL;
    }
    return !candidate ? "unknown key id" : !alg_fits ? "algorithm does not match key"
                                                     : "bad signature";
}

/* ---------------------------------------------------------------------------------------
 * The whole check */

/* Reads the header and checks the signature over the first two parts as received (RFC 7515
 * §5.2 step 8), before anything in the claims is looked at. */
static const char *jwt_check_signed(const struct jwt_keys *keys, const struct conf_auth *auth,
                                    const struct jwt_parts *p, const unsigned char *hdr,
                                    size_t hdr_len, const unsigned char *sig, size_t sig_len)
{
    struct yaml_doc_node *tree = jwt_json_object((const char *)hdr, hdr_len);
    if (!tree)
        return "malformed header";
    struct jwt_header h;
    const char *e = jwt_read_header(tree, auth, &h);
    if (!e)
        e = jwt_check_signature(keys, &h, p->header, p->header_len + 1 + p->payload_len, sig,
                                sig_len);
    yaml_doc_free(tree);
    return e;
}

static const char *jwt_check(const struct jwt_keys *keys, const struct conf_auth *auth,
                             const char *token, size_t len, int64_t now, struct jwt_result *res)
{
    struct jwt_parts p;
    if (len > JWT_MAX_TOKEN)
        return "token too large";
    if (!token || !jwt_split(token, len, &p))
        return "malformed token";
    /* The three decoded parts together are shorter than the token. */
    unsigned char buf[JWT_MAX_TOKEN];
    ssize_t hl = base64url_decode(p.header, p.header_len, buf);
    ssize_t pl = hl < 0 ? -1 : base64url_decode(p.payload, p.payload_len, buf + hl);
    ssize_t sl = pl < 0 ? -1 : base64url_decode(p.sig, p.sig_len, buf + hl + pl);
    if (sl < 0)
        return "bad base64";
    const char *e = jwt_check_signed(keys, auth, &p, buf, (size_t)hl, buf + hl + pl, (size_t)sl);
    if (e)
        return e;
    struct yaml_doc_node *claims = jwt_json_object((const char *)buf + hl, (size_t)pl);
    if (!claims)
        return "malformed claims";
    e = jwt_claims_check(claims, auth, now);
    if (!e)
        e = jwt_claims_extract(claims, auth, res);
    yaml_doc_free(claims);
    return e;
}

int jwt_verify(const struct jwt_keys *keys, const struct conf_auth *auth, const char *token,
               size_t len, int64_t now, struct jwt_result *res)
{
    memset(res, 0, sizeof *res);
    const char *e = keys && auth ? jwt_check(keys, auth, token, len, now, res) : "no keys";
    if (!e)
        return 0;
    jwt_result_free(res);
    res->error = e;
    return -1;
}

void jwt_result_free(struct jwt_result *res)
{
    for (size_t i = 0; i < JWT_MAX_CLAIMS; i++)
        free(res->values[i]);
    memset(res, 0, sizeof *res);
}
