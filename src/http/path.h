/* path: the request path as routes and backends must both see it. Dot-segments are removed
 * (RFC 3986 §5.2.4, with "%2e" read as "." in them) and runs of "/" merged, so that
 * "/public/../admin", "/public/%2e%2e/admin" or "//admin" cannot match one route (and its
 * allow/deny, auth) and then reach the backend as another path. The normalized path is what
 * routes match and what is sent upstream. */
#ifndef PORTERO_HTTP_PATH_H
#define PORTERO_HTTP_PATH_H

#include <stdbool.h>
#include <stddef.h>

/* True when PATH[0..LEN) (no query) may change under path_normalize: it holds "//", a "."
 * segment or a "%2e". False for the common path, which then needs no copy. */
bool path_needs_normalize(const char *path, size_t len);

/* Writes the normalized form of PATH[0..LEN) (an origin-form path starting with "/", no query)
 * to OUT, which must hold LEN bytes (the result is never longer). Returns its length, or -1 when
 * the path climbs above the root ("/../x"): such a request is refused (400). */
int path_normalize(const char *path, size_t len, char *out);

#endif
