/* basic_auth: HTTP Basic authentication (RFC 7617) against an htpasswd-style users file.
 *
 * Only slow, salted hashes are accepted: bcrypt ($2a$, $2b$, $2y$) and SHA-crypt ($5$, $6$).
 * A bcrypt check costs tens of milliseconds by design, so credentials that verified are
 * remembered for a few minutes (as a keyed SHA-256, never the password itself) and repeated
 * requests are cheap. A check that misses that cache can run its hash on another thread:
 * basic_auth_check_fast, then basic_auth_check_slow anywhere, then basic_auth_remember. */
#ifndef PORTERO_POLICY_BASIC_AUTH_H
#define PORTERO_POLICY_BASIC_AUTH_H

#include <stdbool.h>
#include <stddef.h>

#include <crypt.h>

/* Longest user name a users file may hold, in bytes (longer names are refused at load). */
#define BASIC_AUTH_MAX_USER 127

/* Immutable after load but for its internal cache (locked); shared by all worker threads. */
struct basic_auth;

/* Loads PATH: one "user:HASH" per line; blank lines and lines starting with '#' are skipped.
 * Returns NULL with a message naming the file (and line) in ERR (CAP bytes) when the file
 * cannot be read, a line has no ':', a user name is empty, too long or listed twice, a hash
 * is malformed or of an unsupported scheme (plain text, DES, MD5 "$1$"/"$apr1$", ...) or a
 * bcrypt cost is above 17, or no user is listed. The caller frees the result with
 * basic_auth_free. */
struct basic_auth *basic_auth_load(const char *path, char *err, size_t cap);
void basic_auth_free(struct basic_auth *ba);

/* Checks the Authorization header value VALUE[0..LEN) ("Basic " base64(user ":" password),
 * scheme case-insensitive, RFC 7617 §2). True when the user exists and the password matches.
 * Then, if USER is not NULL, the user name is copied there NUL-terminated (truncated to
 * USER_CAP - 1 bytes). Thread-safe; a cache miss costs one hash computation, also for unknown
 * users, so timing does not tell whether a user exists. */
bool basic_auth_check(struct basic_auth *ba, const char *value, size_t len, char *user,
                      size_t user_cap);

/* A check that missed the cache, carrying owned copies of all the slow hash needs (so it may
 * run on another thread while the users table is reloaded). Secrets are wiped by
 * basic_auth_remember or basic_auth_pending_clear. */
#define BASIC_AUTH_MAX_HASH 160
struct basic_auth_pending {
    char user[BASIC_AUTH_MAX_USER + 1];
    char password[1024 + 1];
    char hash[BASIC_AUTH_MAX_HASH];  /* the user's, or a dummy's for an unknown user */
    bool known;                      /* the user exists */
    unsigned char digest[32];        /* cache key of these credentials */
    bool ok;                         /* set by basic_auth_check_slow */
    struct crypt_data work;          /* crypt_rn's scratch (32 KiB: too big for a stack) */
};

enum basic_auth_answer { BASIC_AUTH_REFUSED, BASIC_AUTH_OK, BASIC_AUTH_SLOW };
/* The cheap part: malformed credentials are REFUSED, remembered ones OK (USER filled as with
 * basic_auth_check); anything else is SLOW with *P filled. */
enum basic_auth_answer basic_auth_check_fast(struct basic_auth *ba, const char *value, size_t len,
                                             char *user, size_t user_cap,
                                             struct basic_auth_pending *p);
/* The hash and the constant-time comparison; sets P->ok. Any thread; touches only *P. */
void basic_auth_check_slow(struct basic_auth_pending *p);
/* After basic_auth_check_slow: remembers good credentials in BA, copies the user name to USER
 * when P->ok, and wipes P. */
void basic_auth_remember(struct basic_auth *ba, struct basic_auth_pending *p, char *user,
                         size_t user_cap);
void basic_auth_pending_clear(struct basic_auth_pending *p);

#endif
