/* jwt_priv: what the jwt files share — the key set's layout (jwt_keys.c builds it, jwt.c reads
 * it) and the strict JSON reading and claim checks of jwt_claims.c. Not for other modules. */
#ifndef PORTERO_POLICY_JWT_PRIV_H
#define PORTERO_POLICY_JWT_PRIV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "conf/config.h"
#include "conf/yaml_doc.h"
#include "policy/jwt.h"

/* The algorithms of RFC 7518 §3 we implement; each key serves exactly one. */
enum jwt_alg { JWT_HS256, JWT_RS256, JWT_ES256, JWT_N_ALGS };

#define JWT_MAX_KEYS 32

struct jwt_key {
    char *kid;               /* owned; NULL: the key has no id */
    enum jwt_alg alg;
    EVP_PKEY *pkey;          /* owned; RS256 and ES256 */
    unsigned char *secret;   /* owned; HS256 */
    size_t secret_len;
};

struct jwt_keys {
    struct jwt_key keys[JWT_MAX_KEYS];
    size_t n;
    EVP_MAC *hmac;           /* owned; fetched once so each HS256 check does not look it up */
};

/* "HS256", "RS256", "ES256". */
const char *jwt_alg_name(enum jwt_alg alg);
/* True when AUTH allows ALG (no list: all three). */
bool jwt_alg_allowed(const struct conf_auth *auth, enum jwt_alg alg);

/* Nesting accepted in a JSON document (a token's header or claims, a JWK Set). */
#define JWT_JSON_MAX_DEPTH 16
/* Members accepted in one JSON object. */
#define JWT_JSON_MAX_MEMBERS 256

/* Parses DATA[0..LEN) as one JSON object (RFC 8259), refusing what YAML reads but JSON does
 * not allow (unquoted or single-quoted strings and names, tags, anchors, comments, YAML's own
 * escapes, trailing commas, raw control characters, more after the object) and objects with
 * duplicate names. Every JSON escape is understood, surrogate pairs included. Returns the tree
 * (the caller frees it with yaml_doc_free) or NULL. */
struct yaml_doc_node *jwt_json_object(const char *data, size_t len);
/* True when NODE is a JSON string (a quoted scalar). */
bool jwt_json_is_string(const struct yaml_doc_node *node);

/* Checks the registered claims of PAYLOAD against AUTH at NOW: exp, nbf, iss, aud. Returns NULL
 * or why the token is invalid. */
const char *jwt_claims_check(const struct yaml_doc_node *payload, const struct conf_auth *auth,
                             int64_t now);
/* Copies the values of AUTH's mapped claims into RES. Returns NULL or why not (RES may then
 * hold some values: the caller frees them). */
const char *jwt_claims_extract(const struct yaml_doc_node *payload, const struct conf_auth *auth,
                               struct jwt_result *res);

#endif
