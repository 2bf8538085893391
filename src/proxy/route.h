/* route: matching a request to the first route of the snapshot that accepts it, and the
 * pure string work of route actions (strip_prefix, redirect locations). */
#ifndef PORTERO_PROXY_ROUTE_H
#define PORTERO_PROXY_ROUTE_H

#include <stddef.h>

#include "conf/config.h"
#include "http/msg.h"

/* First route in file order whose match accepts REQ, or NULL (the caller answers 404).
 * Host compares case-insensitively without the port; "*.example.com" matches any name ending in
 * ".example.com" (not "example.com" itself). path, path_prefix and path_regex see the path without
 * the query. methods compare exactly; headers compare names case-insensitively, values exactly. */
const struct conf_route *route_match(const struct config *cfg, const struct http_msg *req);

/* Writes into OUT (size CAP) the path+query to send upstream: REQ_PATH with ROUTE's strip_prefix
 * removed when it is a prefix (an empty result becomes "/"). Returns the length, or -1 if CAP is
 * too small. */
int route_upstream_path(const struct conf_route *route, struct str req_path, char *out, size_t cap);

/* Expands $host, $request_uri and $scheme in the redirect location into OUT (size CAP).
 * Returns the length, or -1 if CAP is too small. */
int route_redirect_location(const struct conf_route *route, struct str host, struct str request_uri,
                            const char *scheme, char *out, size_t cap);

#endif
