/* config_resolve: replacing the host-name lookup the loader does for upstream servers.
 *
 * Server addresses may name hosts, which the loader resolves with getaddrinfo. Tests and the
 * fuzz target must not wait on DNS, so they install their own resolver here. Not thread-safe:
 * set it once, before any load. */
#ifndef PORTERO_CONF_CONFIG_RESOLVE_H
#define PORTERO_CONF_CONFIG_RESOLVE_H

#include <stddef.h>
#include <sys/socket.h>

/* Resolves HOST (never numeric) and the numeric PORT into *OUT / *OUT_LEN. Returns 0, or -1
 * with a short reason written into ERR (size ERR_CAP). */
typedef int (*conf_resolver_fn)(const char *host, const char *port, struct sockaddr_storage *out,
                                socklen_t *out_len, char *err, size_t err_cap);

/* Installs FN; NULL restores the default (getaddrinfo, first IPv4 answer, else the first). */
void config_set_resolver(conf_resolver_fn fn);

#endif
