/* jwt: validation of JWT bearer tokens (RFC 7519) in JWS compact form (RFC 7515), signed with
 * HS256, RS256 or ES256 (RFC 7518 §3).
 *
 * Keys come from one file a route names: a PEM public key, a raw HS256 secret, or a JWK Set
 * (RFC 7517). Each key serves exactly one algorithm, fixed by its type (oct: HS256, RSA: RS256,
 * EC P-256: ES256), so a token can never make a public key act as an HMAC secret. Keys named
 * inside a token (jku, jwk, x5u) are never followed. */
#ifndef PORTERO_POLICY_JWT_H
#define PORTERO_POLICY_JWT_H

#include <stddef.h>
#include <stdint.h>

struct conf_auth;

/* Longest token accepted, in bytes. */
#define JWT_MAX_TOKEN 8192

/* Immutable after load; shared by all worker threads. */
struct jwt_keys;

/* Loads the keys of AUTH (a jwt auth): from AUTH->key_file — a PEM public key (RSA of 2048 bits
 * or more, or EC P-256) or certificate, or, if the file holds no PEM, its bytes (one trailing
 * newline stripped, at least 32 bytes) as the HS256 secret — or from AUTH->jwks_file, a JWK Set
 * whose keys of type RSA (n, e), EC (crv P-256, x, y) and oct (k) are used with their `kid`;
 * keys of other types or for other algorithms are skipped with a warning in the log.
 * Returns NULL with a message naming the file in ERR (CAP bytes) when the file cannot be read
 * or parsed, a key is malformed or too weak, no key serves an algorithm AUTH allows, or AUTH
 * maps more than JWT_MAX_CLAIMS claims. The caller frees the result with jwt_keys_free. */
struct jwt_keys *jwt_keys_load(const struct conf_auth *auth, char *err, size_t cap);
void jwt_keys_free(struct jwt_keys *k);

#define JWT_MAX_CLAIMS 16

struct jwt_result {
    const char *error;            /* static text when invalid: "expired", "bad signature", ... */
    size_t n_values;              /* AUTH->n_claims on success, else 0 */
    char *values[JWT_MAX_CLAIMS]; /* owned: value of claim AUTH->claims[i].name, NULL when
                                     absent or null; strings as they are, numbers and booleans
                                     as written, an array of those joined with ", " */
};

/* Verifies TOKEN[0..LEN) (what follows "Bearer ") against KEYS and AUTH's rules at NOW
 * (seconds since the epoch):
 * - the header's alg must be one AUTH->algorithms allows (default HS256, RS256, ES256; "none"
 *   is always refused) and must be the algorithm of the key checked; a header `kid` picks the
 *   keys of that id; headers marked critical (crit) are refused, none being understood;
 * - exp and nbf, when present, are checked with AUTH->leeway_ms of tolerance (RFC 7519 §4.1.4,
 *   §4.1.5); iss must equal AUTH->issuer when set; aud (a string or an array of strings) must
 *   hold AUTH->audience when set;
 * - header and claims must be JSON objects without duplicate names (RFC 7515 §4, RFC 7519 §4);
 *   base64url must be strict (RFC 7515 §2); a token longer than JWT_MAX_TOKEN is refused;
 * - a claim value mapped to a header must hold no control characters.
 * Returns 0 with RES->values filled when valid, -1 when not (RES->error says why, no values).
 * RES needs no set-up; the caller calls jwt_result_free in either case. Thread-safe. */
int jwt_verify(const struct jwt_keys *keys, const struct conf_auth *auth, const char *token,
               size_t len, int64_t now, struct jwt_result *res);
/* Frees RES's values and zeroes it (error included). */
void jwt_result_free(struct jwt_result *res);

#endif
