/* Unit tests of JWT validation (policy/jwt): keys and tokens are made here with OpenSSL —
 * an HS256 secret file, RSA 2048 and EC P-256 PEM files, a certificate, a JWK Set with kids —
 * and every rule of jwt_verify is exercised: signatures, algorithm policy (none, not allowed,
 * the HS256-with-a-public-key confusion), exp / nbf with leeway, iss, aud, strict base64url
 * and JSON, claim extraction, and load errors that name the file. */
#include "unit.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "conf/config.h"
#include "core/log.h"
#include "policy/jwt.h"

#define NOW 1700000000

/* ---------------------------------------------------------------------------------------
 * Files */

static char dir[64];
static char written[64][128]; /* paths write_file made, removed at exit */
static size_t n_written;

static void remove_tmp_dir(void)
{
    for (size_t i = 0; i < n_written; i++)
        unlink(written[i]);
    if (rmdir(dir) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

/* Writes LEN bytes of DATA to NAME in this binary's temporary directory; returns the path
 * (one of a few rotating static buffers). */
static const char *write_bytes(const char *name, const void *data, size_t len)
{
    static char paths[8][128];
    static unsigned turn;
    if (!dir[0]) {
        strcpy(dir, "/tmp/portero-jwt-XXXXXX");
        if (!mkdtemp(dir))
            abort();
        atexit(remove_tmp_dir);
    }
    char *path = paths[turn++ % 8];
    snprintf(path, 128, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, len, f) != len)
        abort();
    fclose(f);
    bool known = false;
    for (size_t i = 0; i < n_written; i++)
        known = known || strcmp(written[i], path) == 0;
    if (!known && n_written < sizeof written / sizeof *written)
        snprintf(written[n_written++], sizeof *written, "%s", path);
    return path;
}

static const char *write_file(const char *name, const char *text)
{
    return write_bytes(name, text, strlen(text));
}

/* The PEM of PKEY's public key, NUL-terminated (static buffer). */
static const char *public_pem(EVP_PKEY *pkey)
{
    static char out[4096];
    BIO *bio = BIO_new(BIO_s_mem());
    PEM_write_bio_PUBKEY(bio, pkey);
    int n = BIO_read(bio, out, sizeof out - 1);
    BIO_free(bio);
    out[n > 0 ? n : 0] = '\0';
    return out;
}

/* ---------------------------------------------------------------------------------------
 * Keys, made once per binary (RSA generation is slow) */

static EVP_PKEY *rsa, *ec, *ec2; /* ec2: a valid signature by the wrong party */

static EVP_PKEY *rsa_key(void)
{
    if (!rsa)
        rsa = EVP_RSA_gen(2048);
    return rsa;
}

static EVP_PKEY *ec_key(void)
{
    if (!ec)
        ec = EVP_EC_gen("P-256");
    return ec;
}

static EVP_PKEY *ec_key2(void)
{
    if (!ec2)
        ec2 = EVP_EC_gen("P-256");
    return ec2;
}

/* At exit, so leak checking sees every key freed. */
__attribute__((constructor)) static void register_free_keys(void);
static void free_keys(void)
{
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(ec);
    EVP_PKEY_free(ec2);
}

static const char secret[] = "0123456789abcdef0123456789abcdef-hs256";

/* ---------------------------------------------------------------------------------------
 * Tokens */

static void b64url(const unsigned char *in, size_t n, char *out)
{
    int len = EVP_EncodeBlock((unsigned char *)out, in, (int)n);
    while (len > 0 && out[len - 1] == '=')
        len--;
    out[len] = '\0';
    for (int i = 0; i < len; i++)
        out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
}

enum signer { SIGN_HS, SIGN_RS, SIGN_ES, SIGN_ES2, SIGN_HS_WITH_PEM, SIGN_ES_DER, SIGN_BAD };

/* Turns a DER ECDSA-Sig-Value into R || S (32 bytes each). */
static void der_to_raw(const unsigned char *der, unsigned char *raw)
{
    memset(raw, 0, 64);
    size_t at = 2;
    for (int k = 0; k < 2; k++) {
        size_t len = der[at + 1];
        const unsigned char *v = der + at + 2;
        at += 2 + len;
        while (len > 32) {
            v++;
            len--;
        }
        memcpy(raw + 32 * k + (32 - len), v, len);
    }
}

static size_t sign_pkey(EVP_PKEY *key, const char *in, unsigned char *sig)
{
    size_t n = 512;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) != 1 ||
        EVP_DigestSign(md, sig, &n, (const unsigned char *)in, strlen(in)) != 1)
        abort();
    EVP_MD_CTX_free(md);
    return n;
}

static size_t sign_hmac(const void *key, size_t key_len, const char *in, unsigned char *sig)
{
    size_t n = 0;
    if (!EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key, key_len, (const unsigned char *)in,
                   strlen(in), sig, 32, &n))
        abort();
    return n;
}

static size_t sign(enum signer how, const char *in, unsigned char *sig)
{
    unsigned char der[128];
    switch (how) {
    case SIGN_HS:
        return sign_hmac(secret, strlen(secret), in, sig);
    case SIGN_HS_WITH_PEM: {
        const char *pem = public_pem(rsa_key());
        return sign_hmac(pem, strlen(pem), in, sig);
    }
    case SIGN_RS:
        return sign_pkey(rsa_key(), in, sig);
    case SIGN_ES:
    case SIGN_ES2:
        sign_pkey(how == SIGN_ES ? ec_key() : ec_key2(), in, der);
        der_to_raw(der, sig);
        return 64;
    case SIGN_ES_DER:
        return sign_pkey(ec_key(), in, sig);
    default:
        memset(sig, 0x5a, 32);
        return 32;
    }
}

/* HEADER and PAYLOAD (JSON text) encoded and signed (static buffer). */
static const char *token(const char *header, const char *payload, enum signer how)
{
    static char out[16384];
    unsigned char sig[512];
    b64url((const unsigned char *)header, strlen(header), out);
    size_t n = strlen(out);
    out[n++] = '.';
    b64url((const unsigned char *)payload, strlen(payload), out + n);
    size_t sig_len = sign(how, out, sig);
    n = strlen(out);
    out[n++] = '.';
    b64url(sig, sig_len, out + n);
    return out;
}

#define HS "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"
#define RS "{\"alg\":\"RS256\"}"
#define ES "{\"alg\":\"ES256\"}"

/* ---------------------------------------------------------------------------------------
 * Auth settings and checks */

static struct conf_auth auth_for(const char *key_file, const char *jwks_file)
{
    return (struct conf_auth){ .kind = AUTH_JWT, .key_file = (char *)key_file,
                               .jwks_file = (char *)jwks_file, .leeway_ms = 30000 };
}

static struct jwt_keys *load(const struct conf_auth *auth)
{
    char err[512] = "";
    struct jwt_keys *k = jwt_keys_load(auth, err, sizeof err);
    if (!k)
        fprintf(stderr, "  jwt_keys_load: %s\n", err);
    return k;
}

/* jwt_verify's error for TOKEN ("ok" when valid). */
static const char *verify_at(const struct jwt_keys *k, const struct conf_auth *auth,
                             const char *tok, int64_t now)
{
    static char msg[64];
    struct jwt_result res;
    int rc = jwt_verify(k, auth, tok, strlen(tok), now, &res);
    snprintf(msg, sizeof msg, "%s", rc == 0 ? "ok" : res.error ? res.error : "(no error)");
    if ((rc == 0) != (res.error == NULL))
        snprintf(msg, sizeof msg, "inconsistent result");
    jwt_result_free(&res);
    return msg;
}

static const char *verify(const struct jwt_keys *k, const struct conf_auth *auth, const char *tok)
{
    return verify_at(k, auth, tok, NOW);
}

#define CHECK_STR(a, b)                                                                   \
    do {                                                                                  \
        const char *unit_s = (a), *unit_e = (b);                                          \
        if (strcmp(unit_s, unit_e) != 0) {                                                \
            fprintf(stderr, "  %s:%d: %s == \"%s\", expected \"%s\"\n", __FILE__, __LINE__, \
                    #a, unit_s, unit_e);                                                  \
            *unit_failed = 1;                                                             \
        }                                                                                 \
    } while (0)

static const char *secret_file(void)
{
    char text[128];
    snprintf(text, sizeof text, "%s\n", secret);
    return write_file("secret", text);
}

/* ---------------------------------------------------------------------------------------
 * Signatures and keys */

UNIT_TEST(test_hs256_secret_file)
{
    struct conf_auth a = auth_for(secret_file(), NULL);
    struct jwt_keys *k = load(&a);
    CHECK(k != NULL);
    if (!k)
        return;
    CHECK_STR(verify(k, &a, token(HS, "{\"sub\":\"u1\"}", SIGN_HS)), "ok");
    CHECK_STR(verify(k, &a, token(HS, "{\"sub\":\"u1\",\"exp\":1700000100}", SIGN_HS)), "ok");
    CHECK_STR(verify(k, &a, token(HS, "{\"sub\":\"u1\"}", SIGN_BAD)), "bad signature");
    /* Only the key type's algorithm: this file holds an HS256 secret. */
    CHECK_STR(verify(k, &a, token(RS, "{}", SIGN_RS)), "algorithm does not match key");
    jwt_keys_free(k);

    /* Without the trailing newline the secret is the same; with "\r\n" too. */
    char text[128];
    snprintf(text, sizeof text, "%s\r\n", secret);
    a.key_file = (char *)write_file("secret-crlf", text);
    k = load(&a);
    CHECK(k != NULL);
    CHECK_STR(verify(k, &a, token(HS, "{}", SIGN_HS)), "ok");
    jwt_keys_free(k);
    a.key_file = (char *)write_file("secret-bare", secret);
    k = load(&a);
    CHECK(k != NULL);
    CHECK_STR(verify(k, &a, token(HS, "{}", SIGN_HS)), "ok");
    jwt_keys_free(k);
    /* Only one newline goes: with two, the secret differs. */
    snprintf(text, sizeof text, "%s\n\n", secret);
    a.key_file = (char *)write_file("secret-2nl", text);
    k = load(&a);
    CHECK(k != NULL);
    CHECK_STR(verify(k, &a, token(HS, "{}", SIGN_HS)), "bad signature");
    jwt_keys_free(k);
}

UNIT_TEST(test_rs256_and_es256_pem)
{
    struct conf_auth a = auth_for(write_file("rsa.pem", public_pem(rsa_key())), NULL);
    struct jwt_keys *k = load(&a);
    CHECK(k != NULL);
    if (!k)
        return;
    CHECK_STR(verify(k, &a, token(RS, "{\"sub\":\"r\"}", SIGN_RS)), "ok");
    CHECK_STR(verify(k, &a, token(ES, "{\"sub\":\"r\"}", SIGN_ES)), "algorithm does not match key");
    jwt_keys_free(k);

    a.key_file = (char *)write_file("ec.pem", public_pem(ec_key()));
    k = load(&a);
    CHECK(k != NULL);
    if (!k)
        return;
    CHECK_STR(verify(k, &a, token(ES, "{\"sub\":\"e\"}", SIGN_ES)), "ok");
    CHECK_STR(verify(k, &a, token(ES, "{\"sub\":\"e\"}", SIGN_ES2)), "bad signature");
    /* A JWS carries raw R || S, not DER (RFC 7518 §3.4). */
    CHECK_STR(verify(k, &a, token(ES, "{\"sub\":\"e\"}", SIGN_ES_DER)), "bad signature");
    jwt_keys_free(k);
}

UNIT_TEST(test_tampering)
{
    struct conf_auth a = auth_for(write_file("rsa.pem", public_pem(rsa_key())), NULL);
    struct jwt_keys *k = load(&a);
    CHECK(k != NULL);
    if (!k)
        return;
    char tok[4096], other[4096];
    snprintf(tok, sizeof tok, "%s", token(RS, "{\"sub\":\"alice\",\"admin\":false}", SIGN_RS));
    CHECK_STR(verify(k, &a, tok), "ok");
    /* Another payload under the first signature. */
    snprintf(other, sizeof other, "%s", token(RS, "{\"sub\":\"alice\",\"admin\":true}", SIGN_RS));
    char *p1 = strchr(tok, '.'), *p2 = strchr(other, '.');
    char mixed[8192];
    snprintf(mixed, sizeof mixed, "%.*s%.*s%s", (int)(p1 - tok), tok,
             (int)(strrchr(other, '.') - p2), p2, strrchr(tok, '.'));
    CHECK_STR(verify(k, &a, mixed), "bad signature");
    /* One signature character changed. */
    size_t n = strlen(tok);
    tok[n - 5] = tok[n - 5] == 'A' ? 'B' : 'A';
    CHECK_STR(verify(k, &a, tok), "bad signature");
    /* A signature cut short: refused as a short signature, or as base64 whose last character
     * has stray low bits (which one depends on the random signature). */
    tok[n - 4] = '\0';
    const char *why = verify(k, &a, tok);
    CHECK(strcmp(why, "bad signature") == 0 || strcmp(why, "bad base64") == 0);
    jwt_keys_free(k);
}

/* The classic confusion: the verifier holds an RSA public key; the attacker signs with HS256
 * using that public key's PEM as the HMAC secret. */
UNIT_TEST(test_hs256_with_public_key_refused)
{
    struct conf_auth a = auth_for(write_file("rsa.pem", public_pem(rsa_key())), NULL);
    struct jwt_keys *k = load(&a);
    CHECK(k != NULL);
    if (!k)
        return;
    CHECK_STR(verify(k, &a, token(HS, "{\"sub\":\"mallory\"}", SIGN_HS_WITH_PEM)),
              "algorithm does not match key");
    /* Also when the route allows HS256 only: the key file serves RS256, so it cannot load. */
    char *algs[] = { "HS256" };
    a.algorithms = algs;
    a.n_algorithms = 1;
    char err[256] = "";
    CHECK(jwt_keys_load(&a, err, sizeof err) == NULL);
    CHECK(strstr(err, "rsa.pem: its keys serve RS256, which algorithms does not allow") != NULL);
    jwt_keys_free(k);
}

UNIT_TEST(test_certificate_pem)
{
    EVP_PKEY *key = ec_key();
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)"issuer", -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    X509_set_pubkey(x, key);
    CHECK(X509_sign(x, key, EVP_sha256()) > 0);
    char pem[4096];
    BIO *bio = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(bio, x);
    int n = BIO_read(bio, pem, sizeof pem - 1);
    pem[n > 0 ? n : 0] = '\0';
    BIO_free(bio);
    X509_free(x);
    struct conf_auth a = auth_for(write_file("cert.pem", pem), NULL);
    struct jwt_keys *k = load(&a);
    CHECK(k != NULL);
    CHECK_STR(verify(k, &a, token(ES, "{}", SIGN_ES)), "ok");
    jwt_keys_free(k);
}

/* ---------------------------------------------------------------------------------------
 * Algorithm policy */

UNIT_TEST(test_alg_none_and_not_allowed)
{
    struct conf_auth a = auth_for(secret_file(), NULL);
    struct jwt_keys *k = load(&a);
    CHECK(k != NULL);
    if (!k)
        return;
    /* alg none: an empty signature part is not even a well-formed JWS for us; with a signature
     * it is refused by name. */
    char tok[512];
    snprintf(tok, sizeof tok, "%s", token("{\"alg\":\"none\"}", "{\"sub\":\"x\"}", SIGN_HS));
    CHECK_STR(verify(k, &a, tok), "algorithm none refused");
    *(strrchr(tok, '.') + 1) = '\0';
    CHECK_STR(verify(k, &a, tok), "malformed token");
    CHECK_STR(verify(k, &a, token("{\"alg\":\"None\"}", "{}", SIGN_HS)), "algorithm not allowed");
    CHECK_STR(verify(k, &a, token("{\"alg\":\"HS512\"}", "{}", SIGN_HS)), "algorithm not allowed");
    CHECK_STR(verify(k, &a, token("{\"alg\":\"hs256\"}", "{}", SIGN_HS)), "algorithm not allowed");
    CHECK_STR(verify(k, &a, token("{\"typ\":\"JWT\"}", "{}", SIGN_HS)), "malformed header");
    CHECK_STR(verify(k, &a, token("{\"alg\":256}", "{}", SIGN_HS)), "malformed header");
    CHECK_STR(verify(k, &a, token("{\"alg\":[\"HS256\"]}", "{}", SIGN_HS)), "malformed header");
    /* Critical extensions are refused: we understand none (RFC 7515 §4.1.11). */
    CHECK_STR(verify(k, &a, token("{\"alg\":\"HS256\",\"crit\":[\"exp\"],\"exp\":1}", "{}",
                                  SIGN_HS)), "unsupported critical header");
    /* A route allowing only ES256 refuses HS256 tokens before looking at keys. */
    char *algs[] = { "ES256", "HS256" };
    struct conf_auth only_es = a;
    only_es.algorithms = algs;
    only_es.n_algorithms = 1;
    CHECK_STR(verify(k, &only_es, token(HS, "{}", SIGN_HS)), "algorithm not allowed");
    only_es.n_algorithms = 2;
    CHECK_STR(verify(k, &only_es, token(HS, "{}", SIGN_HS)), "ok");
    jwt_keys_free(k);
}

/* ---------------------------------------------------------------------------------------
 * Registered claims */

static const char *hs_claims(const struct jwt_keys *k, const struct conf_auth *a,
                             const char *payload, int64_t now)
{
    return verify_at(k, a, token(HS, payload, SIGN_HS), now);
}

UNIT_TEST(test_exp_nbf_leeway)
{
    struct conf_auth a = auth_for(secret_file(), NULL);
    struct jwt_keys *k = load(&a);
    CHECK(k != NULL);
    if (!k)
        return;
    const char *exp = "{\"exp\":1700000000}";
    CHECK_STR(hs_claims(k, &a, exp, NOW - 1), "ok");
    CHECK_STR(hs_claims(k, &a, exp, NOW + 29), "ok");         /* within 30 s of leeway */
    CHECK_STR(hs_claims(k, &a, exp, NOW + 30), "expired");    /* now >= exp + leeway */
    CHECK_STR(hs_claims(k, &a, exp, NOW + 3600), "expired");
    CHECK_STR(hs_claims(k, &a, "{\"exp\":1700000000.5}", NOW + 30), "ok");
    const char *nbf = "{\"nbf\":1700000000}";
    CHECK_STR(hs_claims(k, &a, nbf, NOW), "ok");
    CHECK_STR(hs_claims(k, &a, nbf, NOW - 30), "ok");
    CHECK_STR(hs_claims(k, &a, nbf, NOW - 31), "not yet valid");
    struct conf_auth strict = a;
    strict.leeway_ms = 0;
    CHECK_STR(hs_claims(k, &strict, exp, NOW - 1), "ok");
    CHECK_STR(hs_claims(k, &strict, exp, NOW), "expired");
    CHECK_STR(hs_claims(k, &strict, nbf, NOW - 1), "not yet valid");
    strict.leeway_ms = 1500;
    CHECK_STR(hs_claims(k, &strict, exp, NOW + 1), "ok");
    CHECK_STR(hs_claims(k, &strict, exp, NOW + 2), "expired");
    /* Both at once; and dates that are not numbers. */
    CHECK_STR(hs_claims(k, &a, "{\"nbf\":1699999000,\"exp\":1700001000}", NOW), "ok");
    CHECK_STR(hs_claims(k, &a, "{\"exp\":\"1800000000\"}", NOW), "bad exp claim");
    CHECK_STR(hs_claims(k, &a, "{\"exp\":true}", NOW), "bad exp claim");
    CHECK_STR(hs_claims(k, &a, "{\"exp\":null}", NOW), "bad exp claim");
    CHECK_STR(hs_claims(k, &a, "{\"exp\":1e999}", NOW), "bad exp claim");
    CHECK_STR(hs_claims(k, &a, "{\"nbf\":[1]}", NOW), "bad nbf claim");
    jwt_keys_free(k);
}

UNIT_TEST(test_issuer_and_audience)
{
    struct conf_auth a = auth_for(secret_file(), NULL);
    struct jwt_keys *k = load(&a);
    CHECK(k != NULL);
    if (!k)
        return;
    /* Neither configured: anything goes. */
    CHECK_STR(hs_claims(k, &a, "{\"iss\":\"x\",\"aud\":\"y\"}", NOW), "ok");
    a.issuer = "https://idp.example";
    a.audience = "api";
    CHECK_STR(hs_claims(k, &a, "{\"iss\":\"https://idp.example\",\"aud\":\"api\"}", NOW), "ok");
    CHECK_STR(hs_claims(k, &a, "{\"iss\":\"https:\\/\\/idp.example\",\"aud\":\"api\"}", NOW),
              "ok");
    CHECK_STR(hs_claims(k, &a, "{\"iss\":\"https://idp.example/\",\"aud\":\"api\"}", NOW),
              "wrong issuer");
    CHECK_STR(hs_claims(k, &a, "{\"iss\":\"https://IDP.example\",\"aud\":\"api\"}", NOW),
              "wrong issuer");
    CHECK_STR(hs_claims(k, &a, "{\"aud\":\"api\"}", NOW), "wrong issuer");
    CHECK_STR(hs_claims(k, &a, "{\"iss\":[\"https://idp.example\"],\"aud\":\"api\"}", NOW),
              "wrong issuer");
    const char *iss = "\"iss\":\"https://idp.example\"";
    char p[256];
    snprintf(p, sizeof p, "{%s,\"aud\":[\"web\",\"api\"]}", iss);
    CHECK_STR(hs_claims(k, &a, p, NOW), "ok");
    snprintf(p, sizeof p, "{%s,\"aud\":[\"web\",\"apis\"]}", iss);
    CHECK_STR(hs_claims(k, &a, p, NOW), "wrong audience");
    snprintf(p, sizeof p, "{%s,\"aud\":[]}", iss);
    CHECK_STR(hs_claims(k, &a, p, NOW), "wrong audience");
    snprintf(p, sizeof p, "{%s,\"aud\":\"API\"}", iss);
    CHECK_STR(hs_claims(k, &a, p, NOW), "wrong audience");
    snprintf(p, sizeof p, "{%s}", iss);
    CHECK_STR(hs_claims(k, &a, p, NOW), "wrong audience");
    snprintf(p, sizeof p, "{%s,\"aud\":{\"api\":1}}", iss);
    CHECK_STR(hs_claims(k, &a, p, NOW), "wrong audience");
    /* A NUL inside the claim must not make a prefix match. */
    snprintf(p, sizeof p, "{%s,\"aud\":\"api\\u0000x\"}", iss);
    CHECK_STR(hs_claims(k, &a, p, NOW), "wrong audience");
    jwt_keys_free(k);
}

/* ---------------------------------------------------------------------------------------
 * Strict parsing */

UNIT_TEST(test_malformed_tokens)
{
    struct conf_auth a = auth_for(secret_file(), NULL);
    struct jwt_keys *k = load(&a);
    CHECK(k != NULL);
    if (!k)
        return;
    char good[512], t[1024];
    snprintf(good, sizeof good, "%s", token(HS, "{\"sub\":\"s\"}", SIGN_HS));
    CHECK_STR(verify(k, &a, good), "ok");
    CHECK_STR(verify(k, &a, ""), "malformed token");
    CHECK_STR(verify(k, &a, "abc"), "malformed token");
    CHECK_STR(verify(k, &a, "a.b"), "malformed token");
    CHECK_STR(verify(k, &a, ".."), "malformed token");
    snprintf(t, sizeof t, "%s.e30", good);
    CHECK_STR(verify(k, &a, t), "malformed token");          /* four parts */
    snprintf(t, sizeof t, "%s.e30.e30", good);
    CHECK_STR(verify(k, &a, t), "malformed token");          /* five parts: a JWE */
    /* base64url: padding, the standard alphabet, whitespace, non-zero unused bits. */
    snprintf(t, sizeof t, "%s=", good);
    CHECK_STR(verify(k, &a, t), "bad base64");
    snprintf(t, sizeof t, "%s", good);
    *strchr(t, '.') = '\0';
    char rest[512];
    snprintf(rest, sizeof rest, "%s", strchr(good, '.'));
    char bad[4096];
    snprintf(bad, sizeof bad, "%s==%s", t, rest);
    CHECK_STR(verify(k, &a, bad), "bad base64");
    snprintf(bad, sizeof bad, "%s %s", t, rest);
    CHECK_STR(verify(k, &a, bad), "bad base64");
    snprintf(bad, sizeof bad, "%s+%s", t, rest);
    CHECK_STR(verify(k, &a, bad), "bad base64");
    /* "e30" is "{}"; "e31" decodes alike only if unused bits are ignored. */
    CHECK_STR(verify(k, &a, token(HS, "{}", SIGN_HS)), "ok");
    snprintf(t, sizeof t, "%s", token(HS, "{}", SIGN_HS));
    char *dot = strchr(t, '.');
    CHECK(strncmp(dot, ".e30.", 5) == 0);
    dot[3] = '1';
    CHECK_STR(verify(k, &a, t), "bad base64");
    /* Length bound. */
    char *big = malloc(JWT_MAX_TOKEN + 2);
    memset(big, 'A', JWT_MAX_TOKEN + 1);
    big[JWT_MAX_TOKEN + 1] = '\0';
    big[10] = big[20] = '.';
    CHECK_STR(verify(k, &a, big), "token too large");
    free(big);
    /* LEN bounds the token: a prefix is not the token. */
    struct jwt_result res;
    CHECK(jwt_verify(k, &a, good, strlen(good) - 1, NOW, &res) < 0);
    CHECK(res.error != NULL);
    jwt_result_free(&res);
    CHECK(jwt_verify(k, &a, good, (size_t)(strrchr(good, '.') - good), NOW, &res) < 0);
    CHECK_STR(res.error, "malformed token");
    jwt_result_free(&res);
    jwt_keys_free(k);
}

UNIT_TEST(test_strict_json)
{
    struct conf_auth a = auth_for(secret_file(), NULL);
    struct jwt_keys *k = load(&a);
    CHECK(k != NULL);
    if (!k)
        return;
    /* Header: YAML that is not JSON, duplicates, not an object. */
    CHECK_STR(verify(k, &a, token("{alg: HS256}", "{}", SIGN_HS)), "malformed header");
    CHECK_STR(verify(k, &a, token("{\"alg\": HS256}", "{}", SIGN_HS)), "malformed header");
    CHECK_STR(verify(k, &a, token("alg: HS256", "{}", SIGN_HS)), "malformed header");
    CHECK_STR(verify(k, &a, token("{\"alg\":\"none\",\"alg\":\"HS256\"}", "{}", SIGN_HS)),
              "malformed header");
    CHECK_STR(verify(k, &a, token("[\"HS256\"]", "{}", SIGN_HS)), "malformed header");
    CHECK_STR(verify(k, &a, token("{\"alg\":\"HS256\"} # c", "{}", SIGN_HS)), "malformed header");
    CHECK_STR(verify(k, &a, token(" {\"alg\" : \"HS256\"}\n", "{}", SIGN_HS)), "ok");
    /* Claims: signed, but not a JSON object. */
    CHECK_STR(verify(k, &a, token(HS, "[1,2]", SIGN_HS)), "malformed claims");
    CHECK_STR(verify(k, &a, token(HS, "{\"sub\":\"a\",\"sub\":\"b\"}", SIGN_HS)),
              "malformed claims");
    CHECK_STR(verify(k, &a, token(HS, "{\"sub\":bob}", SIGN_HS)), "malformed claims");
    CHECK_STR(verify(k, &a, token(HS, "{\"n\":01}", SIGN_HS)), "malformed claims");
    CHECK_STR(verify(k, &a, token(HS, "{\"n\":0x10}", SIGN_HS)), "malformed claims");
    CHECK_STR(verify(k, &a, token(HS, "{\"n\":-1.5e+3,\"m\":0,\"b\":false,\"z\":null}", SIGN_HS)),
              "ok");
    CHECK_STR(verify(k, &a, token(HS, "{\"a\":{\"b\":1,\"b\":2}}", SIGN_HS)), "malformed claims");
    CHECK_STR(verify(k, &a, token(HS, "{\"a\":\"\x01\"}", SIGN_HS)), "malformed claims");
    CHECK_STR(verify(k, &a, token(HS, "", SIGN_HS)), "malformed token");
    /* Nesting is bounded. */
    char deep[256] = "{\"a\":";
    for (int i = 0; i < 20; i++)
        strcat(deep, "[");
    for (int i = 0; i < 20; i++)
        strcat(deep, "]");
    strcat(deep, "}");
    CHECK_STR(verify(k, &a, token(HS, deep, SIGN_HS)), "malformed claims");
    jwt_keys_free(k);
}

/* ---------------------------------------------------------------------------------------
 * Claims mapped to headers */

UNIT_TEST(test_claims_extraction)
{
    struct conf_auth a = auth_for(secret_file(), NULL);
    struct conf_header_kv claims[] = {
        { "sub", "X-User" }, { "n", "X-N" }, { "admin", "X-Admin" }, { "missing", "X-M" },
        { "nil", "X-Nil" }, { "roles", "X-Roles" }, { "obj", "X-Obj" }, { "nested", "X-Nested" },
        { "empty", "X-Empty" },
    };
    a.claims = claims;
    a.n_claims = sizeof claims / sizeof *claims;
    struct jwt_keys *k = load(&a);
    CHECK(k != NULL);
    if (!k)
        return;
    const char *tok = token(HS, "{\"sub\":\"user \\u00e9\",\"n\":42.5,\"admin\":true,\"nil\":null,"
                            "\"roles\":[\"a\",null,\"b c\",7],\"obj\":{\"x\":1},"
                            "\"nested\":[[\"x\"]],\"empty\":\"\",\"exp\":1700000100}", SIGN_HS);
    struct jwt_result res;
    CHECK_EQ_INT(jwt_verify(k, &a, tok, strlen(tok), NOW, &res), 0);
    CHECK(res.error == NULL);
    CHECK_EQ_INT(res.n_values, a.n_claims);
    CHECK(res.values[0] && strcmp(res.values[0], "user \xc3\xa9") == 0);
    CHECK(res.values[1] && strcmp(res.values[1], "42.5") == 0);
    CHECK(res.values[2] && strcmp(res.values[2], "true") == 0);
    CHECK(res.values[3] == NULL);
    CHECK(res.values[4] == NULL);
    CHECK(res.values[5] && strcmp(res.values[5], "a, b c, 7") == 0);
    CHECK(res.values[6] == NULL);
    CHECK(res.values[7] == NULL);
    CHECK(res.values[8] && strcmp(res.values[8], "") == 0);
    jwt_result_free(&res);
    CHECK(res.values[0] == NULL && res.n_values == 0);

    /* A value that would break the header it goes into refuses the token. */
    tok = token(HS, "{\"sub\":\"eve\\r\\nX-Admin: 1\"}", SIGN_HS);
    CHECK_EQ_INT(jwt_verify(k, &a, tok, strlen(tok), NOW, &res), -1);
    CHECK_STR(res.error, "claim not valid in a header");
    CHECK_EQ_INT(res.n_values, 0);
    CHECK(res.values[0] == NULL);
    jwt_result_free(&res);
    tok = token(HS, "{\"roles\":[\"ok\",\"nul\\u0000\"]}", SIGN_HS);
    CHECK_STR(verify(k, &a, tok), "claim not valid in a header");
    /* Tabs are allowed in header values. */
    tok = token(HS, "{\"sub\":\"a\\tb\"}", SIGN_HS);
    CHECK_STR(verify(k, &a, tok), "ok");
    /* An invalid token has no values, even when its claims would have. */
    tok = token(HS, "{\"sub\":\"late\",\"exp\":1}", SIGN_HS);
    CHECK_EQ_INT(jwt_verify(k, &a, tok, strlen(tok), NOW, &res), -1);
    CHECK_STR(res.error, "expired");
    CHECK(res.values[0] == NULL);
    jwt_result_free(&res);
    jwt_keys_free(k);
}

/* ---------------------------------------------------------------------------------------
 * JWK Sets */

static void bn_param_b64(EVP_PKEY *key, const char *name, char *out)
{
    BIGNUM *bn = NULL;
    unsigned char bytes[512];
    EVP_PKEY_get_bn_param(key, name, &bn);
    int n = BN_bn2bin(bn, bytes);
    BN_free(bn);
    b64url(bytes, (size_t)n, out);
}

/* "x":"..","y":".." of an EC key. */
static void ec_xy(EVP_PKEY *key, char *out, size_t cap)
{
    unsigned char pt[65];
    size_t n = 0;
    EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof pt, &n);
    char x[64], y[64];
    b64url(pt + 1, 32, x);
    b64url(pt + 33, 32, y);
    snprintf(out, cap, "\"x\":\"%s\",\"y\":\"%s\"", x, y);
}

/* A set with an RSA key "r1", an EC key "e1", an oct key "h1" and keys to be skipped. */
static const char *jwks_file(void)
{
    static char text[8192];
    char n[600], e[16], xy[200], kb[80];
    bn_param_b64(rsa_key(), OSSL_PKEY_PARAM_RSA_N, n);
    bn_param_b64(rsa_key(), OSSL_PKEY_PARAM_RSA_E, e);
    ec_xy(ec_key(), xy, sizeof xy);
    b64url((const unsigned char *)secret, strlen(secret), kb);
    snprintf(text, sizeof text,
             "{\"keys\":[\n"
             " {\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"},\n"
             " {\"kty\":\"RSA\",\"kid\":\"r1\",\"use\":\"sig\",\"alg\":\"RS256\",\"n\":\"%s\",\"e\":\"%s\"},\n"
             " {\"kty\":\"RSA\",\"kid\":\"enc\",\"use\":\"enc\",\"n\":\"%s\",\"e\":\"%s\"},\n"
             " {\"kty\":\"RSA\",\"kid\":\"r384\",\"alg\":\"RS384\",\"n\":\"%s\",\"e\":\"%s\"},\n"
             " {\"kty\":\"EC\",\"kid\":\"e1\",\"crv\":\"P-256\",%s},\n"
             " {\"kty\":\"EC\",\"kid\":\"p384\",\"crv\":\"P-384\",\"x\":\"AA\",\"y\":\"AA\"},\n"
             " {\"kty\":\"oct\",\"kid\":\"h1\",\"k\":\"%s\"}\n"
             "]}\n", n, e, n, e, n, e, xy, kb);
    return write_file("jwks.json", text);
}

/* What the log got while loading AUTH's keys (static buffer). */
static const char *load_logged(const struct conf_auth *auth, struct jwt_keys **k)
{
    static char text[4096];
    const char *path = write_file("log", "");
    log_open(path);
    log_set_level(LOG_SEV_WARN);
    *k = load(auth);
    log_set_level(LOG_SEV_ERROR);
    log_close();
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(text, 1, sizeof text - 1, f) : 0;
    text[n] = '\0';
    if (f)
        fclose(f);
    return text;
}

UNIT_TEST(test_jwks_kid)
{
    struct conf_auth a = auth_for(NULL, jwks_file());
    struct jwt_keys *k = NULL;
    const char *logged = load_logged(&a, &k);
    CHECK(k != NULL);
    if (!k)
        return;
    CHECK(strstr(logged, "jwks.json: keys[0] skipped: key type not supported\n") != NULL);
    CHECK(strstr(logged, "jwks.json: keys[2] skipped: not a signature key (use)\n") != NULL);
    CHECK(strstr(logged, "jwks.json: keys[3] skipped: algorithm not supported\n") != NULL);
    CHECK(strstr(logged, "jwks.json: keys[5] skipped: curve not supported\n") != NULL);
    CHECK(strstr(logged, "keys[1]") == NULL && strstr(logged, "keys[4]") == NULL);
    CHECK_STR(verify(k, &a, token("{\"alg\":\"RS256\",\"kid\":\"r1\"}", "{}", SIGN_RS)), "ok");
    CHECK_STR(verify(k, &a, token("{\"alg\":\"ES256\",\"kid\":\"e1\"}", "{}", SIGN_ES)), "ok");
    CHECK_STR(verify(k, &a, token("{\"alg\":\"HS256\",\"kid\":\"h1\"}", "{}", SIGN_HS)), "ok");
    /* Without kid, any key of the algorithm may verify. */
    CHECK_STR(verify(k, &a, token(RS, "{}", SIGN_RS)), "ok");
    CHECK_STR(verify(k, &a, token(ES, "{}", SIGN_ES)), "ok");
    /* kid and alg must agree; unknown ids; skipped keys are not there. */
    CHECK_STR(verify(k, &a, token("{\"alg\":\"ES256\",\"kid\":\"r1\"}", "{}", SIGN_ES)),
              "algorithm does not match key");
    CHECK_STR(verify(k, &a, token("{\"alg\":\"HS256\",\"kid\":\"r1\"}", "{}", SIGN_HS_WITH_PEM)),
              "algorithm does not match key");
    CHECK_STR(verify(k, &a, token("{\"alg\":\"RS256\",\"kid\":\"zz\"}", "{}", SIGN_RS)),
              "unknown key id");
    CHECK_STR(verify(k, &a, token("{\"alg\":\"RS256\",\"kid\":\"enc\"}", "{}", SIGN_RS)),
              "unknown key id");
    CHECK_STR(verify(k, &a, token("{\"alg\":\"RS256\",\"kid\":\"r1\\u0000\"}", "{}", SIGN_RS)),
              "unknown key id");
    CHECK_STR(verify(k, &a, token("{\"alg\":\"ES256\",\"kid\":\"e1\"}", "{}", SIGN_ES2)),
              "bad signature");
    CHECK_STR(verify(k, &a, token("{\"alg\":\"RS256\",\"kid\":7}", "{}", SIGN_RS)),
              "malformed header");
    jwt_keys_free(k);
}

/* Keys without kid in a set are used for tokens whose kid no key carries. */
UNIT_TEST(test_jwks_without_kid)
{
    char xy[200], text[512];
    ec_xy(ec_key(), xy, sizeof xy);
    snprintf(text, sizeof text, "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",%s}]}", xy);
    struct conf_auth a = auth_for(NULL, write_file("jwks-nokid.json", text));
    struct jwt_keys *k = load(&a);
    CHECK(k != NULL);
    CHECK_STR(verify(k, &a, token("{\"alg\":\"ES256\",\"kid\":\"any\"}", "{}", SIGN_ES)), "ok");
    CHECK_STR(verify(k, &a, token(ES, "{}", SIGN_ES)), "ok");
    jwt_keys_free(k);
}

/* ---------------------------------------------------------------------------------------
 * Load errors */

/* Loading with AUTH fails with an error holding EXPECT. */
static bool load_fails(const struct conf_auth *auth, const char *expect)
{
    char err[512] = "";
    struct jwt_keys *k = jwt_keys_load(auth, err, sizeof err);
    if (k) {
        jwt_keys_free(k);
        fprintf(stderr, "  loaded, expected \"%s\"\n", expect);
        return false;
    }
    if (!strstr(err, expect)) {
        fprintf(stderr, "  error \"%s\", expected \"%s\"\n", err, expect);
        return false;
    }
    return true;
}

static bool key_file_fails(const char *name, const char *text, const char *expect)
{
    struct conf_auth a = auth_for(write_file(name, text), NULL);
    char full[256];
    snprintf(full, sizeof full, "%s: %s", a.key_file, expect);
    return load_fails(&a, full);
}

static bool jwks_fails(const char *name, const char *text, const char *expect)
{
    struct conf_auth a = auth_for(NULL, write_file(name, text));
    char full[256];
    snprintf(full, sizeof full, "%s%s", a.jwks_file, expect);
    return load_fails(&a, full);
}

UNIT_TEST(test_key_file_errors)
{
    struct conf_auth a = auth_for("/nonexistent/portero.key", NULL);
    CHECK(load_fails(&a, "/nonexistent/portero.key: No such file"));
    a = auth_for(NULL, "/nonexistent/jwks.json");
    CHECK(load_fails(&a, "/nonexistent/jwks.json: No such file"));
    a = auth_for(NULL, NULL);
    CHECK(load_fails(&a, "needs key_file or jwks_file"));
    CHECK(key_file_fails("short", "too-short-secret\n", "an HS256 secret of 16 bytes is too short"));
    CHECK(key_file_fails("emptysecret", "", "an HS256 secret of 0 bytes"));
    CHECK(key_file_fails("garbage.pem", "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n",
                         "malformed PEM PUBLIC KEY"));
    CHECK(key_file_fails("other.pem", "-----BEGIN DH PARAMETERS-----\nAA==\n-----END DH PARAMETERS-----\n",
                         "PEM block \"DH PARAMETERS\" is not supported"));
    /* A private key does not belong in a proxy's config. */
    BIO *bio = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(bio, ec_key(), NULL, NULL, 0, NULL, NULL);
    char pem[4096];
    int n = BIO_read(bio, pem, sizeof pem - 1);
    pem[n > 0 ? n : 0] = '\0';
    BIO_free(bio);
    CHECK(key_file_fails("priv.pem", pem, "holds a private key"));
    /* Weak or unsupported keys. */
    EVP_PKEY *small = EVP_RSA_gen(1024), *p384 = EVP_EC_gen("P-384");
    CHECK(key_file_fails("rsa1024.pem", public_pem(small), "RSA key shorter than 2048 bits"));
    CHECK(key_file_fails("p384.pem", public_pem(p384), "EC key not on curve P-256"));
    EVP_PKEY_free(small);
    EVP_PKEY_free(p384);
    /* Too many claims to map. */
    struct conf_header_kv claims[JWT_MAX_CLAIMS + 1];
    for (size_t i = 0; i <= JWT_MAX_CLAIMS; i++)
        claims[i] = (struct conf_header_kv){ "c", "X-C" };
    a = auth_for(secret_file(), NULL);
    a.claims = claims;
    a.n_claims = JWT_MAX_CLAIMS + 1;
    CHECK(load_fails(&a, "at most 16 claims"));
    a.n_claims = JWT_MAX_CLAIMS;
    struct jwt_keys *k = load(&a);
    CHECK(k != NULL);
    jwt_keys_free(k);
    /* No room for an error: nothing written, still NULL. */
    a = auth_for("/nonexistent/portero.key", NULL);
    CHECK(jwt_keys_load(&a, NULL, 0) == NULL);
}

UNIT_TEST(test_jwks_errors)
{
    CHECK(jwks_fails("j1", "{\"keys\": [\n", ":2:1: YAML syntax error"));
    CHECK(jwks_fails("j2", "{\"key\": []}", ": not a JWK Set"));
    CHECK(jwks_fails("j3", "[]", ": not a JWK Set"));
    CHECK(jwks_fails("j4", "", ": not a JWK Set"));
    CHECK(jwks_fails("j5", "{\"keys\": []}", ": no usable key"));
    CHECK(jwks_fails("j6", "{\"keys\": [{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"AA\"}]}",
                     ": no usable key"));
    CHECK(jwks_fails("j7", "{\"keys\": [\"RSA\"]}", ": keys[0]: not an object"));
    CHECK(jwks_fails("j8", "{\"keys\": [{\"kid\":\"a\"}]}", ": keys[0]: no kty"));
    CHECK(jwks_fails("j9", "{\"keys\": [{\"kty\":\"RSA\",\"n\":\"A+A\",\"e\":\"AQAB\"}]}",
                     ": keys[0]: bad or missing n or e"));
    CHECK(jwks_fails("j10", "{\"keys\": [{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AAAA\",\"y\":\"AAAA\"}]}",
                     ": keys[0]: bad or missing x or y"));
    CHECK(jwks_fails("j11", "{\"keys\": [{\"kty\":\"oct\",\"k\":\"c2hvcnQ\"}]}",
                     ": keys[0]: oct key shorter than 32 bytes"));
    CHECK(jwks_fails("j12", "{\"keys\": [{\"kty\":\"oct\",\"alg\":\"RS256\",\"k\":\"AA\"}]}",
                     ": keys[0]: alg does not fit kty"));
    /* A point off the curve. */
    char x[64], y[64], text[512];
    unsigned char coord[32];
    memset(coord, 1, sizeof coord);
    b64url(coord, 32, x);
    b64url(coord, 32, y);
    snprintf(text, sizeof text, "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\"}]}",
             x, y);
    CHECK(jwks_fails("j13", text, ": keys[0]: bad or missing x or y, or not a P-256 point"));
    /* Too many keys. */
    char kb[80];
    b64url((const unsigned char *)secret, strlen(secret), kb);
    char *many = malloc(64 * 128);
    strcpy(many, "{\"keys\":[");
    for (int i = 0; i < 33; i++)
        sprintf(many + strlen(many), "%s{\"kty\":\"oct\",\"k\":\"%s\"}", i ? "," : "", kb);
    strcat(many, "]}");
    CHECK(jwks_fails("j14", many, ": keys[32]: more than 32 keys"));
    free(many);
}

/* ---------------------------------------------------------------------------------------
 * Threads */

struct worker_arg {
    const struct jwt_keys *k;
    const struct conf_auth *a;
    const char *tokens[3];
    int ok;
};

static void *worker(void *p)
{
    struct worker_arg *w = p;
    for (int i = 0; i < 60; i++) {
        struct jwt_result res;
        const char *t = w->tokens[i % 3];
        if (jwt_verify(w->k, w->a, t, strlen(t), NOW, &res) == 0 && res.values[0] &&
            strcmp(res.values[0], "t") == 0)
            w->ok++;
        jwt_result_free(&res);
    }
    return NULL;
}

UNIT_TEST(test_threads_share_keys)
{
    struct conf_header_kv claims[] = { { "sub", "X-User" } };
    struct conf_auth a = auth_for(NULL, jwks_file());
    a.claims = claims;
    a.n_claims = 1;
    struct jwt_keys *k = load(&a);
    CHECK(k != NULL);
    if (!k)
        return;
    char t[3][2048];
    snprintf(t[0], sizeof t[0], "%s", token(RS, "{\"sub\":\"t\"}", SIGN_RS));
    snprintf(t[1], sizeof t[1], "%s", token(ES, "{\"sub\":\"t\"}", SIGN_ES));
    snprintf(t[2], sizeof t[2], "%s", token(HS, "{\"sub\":\"t\"}", SIGN_HS));
    pthread_t th[4];
    struct worker_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (struct worker_arg){ k, &a, { t[0], t[1], t[2] }, 0 };
        pthread_create(&th[i], NULL, worker, &args[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ_INT(args[i].ok, 60);
    }
    jwt_keys_free(k);
}

__attribute__((constructor)) static void register_free_keys(void)
{
    atexit(free_keys);
    log_set_level(LOG_SEV_ERROR); /* skipped JWKS keys are checked in the log where it matters */
}

UNIT_MAIN()
