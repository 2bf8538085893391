/* basic_auth: HTTP Basic authentication (RFC 7617) against an htpasswd-style users file.
 *
 * Only slow, salted hashes are accepted: bcrypt ($2a$, $2b$, $2y$) and SHA-crypt ($5$, $6$).
 * A bcrypt check costs tens of milliseconds by design, so credentials that verified are
 * remembered for a few minutes (as a keyed SHA-256, never the password itself) and repeated
 * requests are cheap. A check that misses that cache runs the hash on the calling thread. */
#ifndef PORTERO_POLICY_BASIC_AUTH_H
#define PORTERO_POLICY_BASIC_AUTH_H

#include <stdbool.h>
#include <stddef.h>

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

#endif
