/* fuzz_jwt: jwt_verify on arbitrary bytes. Keys are written to a temporary directory once and
 * loaded the way a route loads them: an HS256 secret file, and a JWK Set holding an oct key
 * (kid "h", the same secret) and an EC P-256 key (kid "e"). Whatever the input, verification
 * must neither crash nor leak, and its result must be consistent (an error exactly when invalid,
 * claim values only when valid).
 *
 * The first input byte picks what the rest is:
 *   0: a token, checked as it is against both key sets;
 *   1: a signing input ("header.payload" in base64url) the harness signs with the secret, so
 *      the fuzzer gets past the signature to the claims;
 *   2: header JSON, a NUL byte, claims JSON: the harness encodes and signs both, so the JSON
 *      readers see arbitrary text. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>

#include "conf/config.h"
#include "core/log.h"
#include "policy/jwt.h"

#define NOW 1700000000

/* The corpus in tests/fuzz/corpus/jwt/ was signed with this secret. */
static const char fuzz_secret[] = "portero-fuzz-secret-0123456789abcdef";

static struct conf_header_kv fuzz_claims[] = { { "sub", "X-User" }, { "roles", "X-Roles" } };
static struct conf_auth fuzz_auth_hs, fuzz_auth_jwks;
static struct jwt_keys *fuzz_keys_hs, *fuzz_keys_jwks;

static void fuzz_b64url(const unsigned char *in, size_t n, char *out)
{
    int len = EVP_EncodeBlock((unsigned char *)out, in, (int)n);
    while (len > 0 && out[len - 1] == '=')
        len--;
    out[len] = '\0';
    for (int i = 0; i < len; i++)
        out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
}

static const char *fuzz_write(const char *dir, const char *name, const char *text, char *path)
{
    sprintf(path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0)
        abort();
    return path;
}

/* The JWK Set text: an oct key of the secret and the public half of a fresh EC key. */
static void fuzz_jwks_text(char *out, size_t cap)
{
    EVP_PKEY *ec = EVP_EC_gen("P-256");
    unsigned char pt[65];
    size_t n = 0;
    if (!ec || !EVP_PKEY_get_octet_string_param(ec, OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof pt, &n) ||
        n != 65)
        abort();
    EVP_PKEY_free(ec);
    char x[64], y[64], k[80];
    fuzz_b64url(pt + 1, 32, x);
    fuzz_b64url(pt + 33, 32, y);
    fuzz_b64url((const unsigned char *)fuzz_secret, strlen(fuzz_secret), k);
    snprintf(out, cap, "{\"keys\":[{\"kty\":\"oct\",\"kid\":\"h\",\"k\":\"%s\"},"
             "{\"kty\":\"EC\",\"kid\":\"e\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\"}]}", k, x, y);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char dir[] = "/tmp/portero-fuzz-jwt-XXXXXX", secret_path[64], jwks_path[64], jwks[1024];
    char err[256];
    if (!mkdtemp(dir))
        abort();
    fuzz_jwks_text(jwks, sizeof jwks);
    fuzz_auth_hs = (struct conf_auth){ .kind = AUTH_JWT, .leeway_ms = 30000,
                                       .key_file = (char *)fuzz_write(dir, "secret", fuzz_secret,
                                                                      secret_path) };
    fuzz_auth_jwks = (struct conf_auth){ .kind = AUTH_JWT, .leeway_ms = 0, .issuer = "iss",
                                         .audience = "aud", .claims = fuzz_claims, .n_claims = 2,
                                         .jwks_file = (char *)fuzz_write(dir, "jwks", jwks,
                                                                         jwks_path) };
    fuzz_keys_hs = jwt_keys_load(&fuzz_auth_hs, err, sizeof err);
    fuzz_keys_jwks = fuzz_keys_hs ? jwt_keys_load(&fuzz_auth_jwks, err, sizeof err) : NULL;
    if (!fuzz_keys_jwks) {
        fprintf(stderr, "fuzz_jwt: %s\n", err);
        abort();
    }
    unlink(secret_path);
    unlink(jwks_path);
    rmdir(dir);
    fuzz_auth_hs.key_file = fuzz_auth_jwks.jwks_file = NULL; /* the paths are gone with DIR */
    log_set_level(LOG_SEV_ERROR);
    return 0;
}

static void fuzz_check(const struct jwt_keys *keys, const struct conf_auth *auth,
                       const char *tok, size_t len)
{
    struct jwt_result res;
    int rc = jwt_verify(keys, auth, tok, len, NOW, &res);
    if ((rc == 0) == (res.error != NULL) || (rc != 0 && (res.values[0] || res.n_values)))
        abort();
    jwt_result_free(&res);
}

/* Appends "." and the HS256 signature of TOK[0..*LEN) in place (TOK has room). */
static void fuzz_sign(char *tok, size_t *len)
{
    unsigned char sig[32];
    size_t n = 0;
    if (!EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, fuzz_secret, strlen(fuzz_secret),
                   (const unsigned char *)tok, *len, sig, sizeof sig, &n))
        abort();
    tok[(*len)++] = '.';
    fuzz_b64url(sig, n, tok + *len);
    *len += strlen(tok + *len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0 || size > 2 * JWT_MAX_TOKEN)
        return 0;
    const char *in = (const char *)data + 1;
    size_t n = size - 1;
    char *tok = malloc(4 * n + 64); /* room for base64 of both parts and a signature */
    size_t len = 0;
    if (data[0] % 3 == 0) {
        memcpy(tok, in, n);
        len = n;
    } else if (data[0] % 3 == 1) {
        memcpy(tok, in, n);
        len = n;
        fuzz_sign(tok, &len);
    } else {
        const char *nul = memchr(in, '\0', n);
        size_t hl = nul ? (size_t)(nul - in) : n;
        fuzz_b64url((const unsigned char *)in, hl, tok);
        len = strlen(tok);
        tok[len++] = '.';
        fuzz_b64url((const unsigned char *)in + hl + (nul != NULL), n - hl - (nul != NULL),
                    tok + len);
        len += strlen(tok + len);
        fuzz_sign(tok, &len);
    }
    fuzz_check(fuzz_keys_hs, &fuzz_auth_hs, tok, len);
    fuzz_check(fuzz_keys_jwks, &fuzz_auth_jwks, tok, len);
    free(tok);
    return 0;
}
