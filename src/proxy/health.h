/* health: active health checks, on the control thread's loop (never on the request path).
 *
 * One checker per server of every upstream with `health_check:`. A check is an HTTP GET of
 * `path` with the configured Host (a status in [status_min, status_max] is a success) or a plain
 * TCP connect (`type: tcp`), bounded by `timeout`, every `interval` (first one soon after start,
 * spread with jitter so checks do not align). `rise` successes in a row mark the server up,
 * `fall` failures mark it down; the verdict goes to server_state.active_up, and a server that
 * comes back gets server_state.up_since = now (slow start). Transitions are logged.
 *
 * HTTP checks speak the upstream's own protocol: over TLS when it has `tls:` (the upstream's
 * client context: verification, SNI, client certificate; a handshake failure is a failed check
 * with the reason), and HTTP/2 when it has `protocol: h2` (prior knowledge, or ALPN h2 over
 * TLS). TCP checks stay a plain connect, with or without `tls:`. */
#ifndef PORTERO_PROXY_HEALTH_H
#define PORTERO_PROXY_HEALTH_H

#include "conf/config.h"
#include "core/loop.h"
#include "proxy/server_state.h"

struct health;
struct runtime;

struct health *health_new(struct loop *loop);
/* Reconciles checkers with a new published runtime: its config, server states and upstream TLS
 * contexts. Holds a reference to RT until the next apply or health_free (checks use RT's TLS
 * contexts between the two; a check in flight keeps its own connection across an apply). */
void health_apply_runtime(struct health *h, struct runtime *rt);
/* The same from parts, without TLS contexts (an upstream with `tls:` then fails its HTTP checks
 * with "no TLS context"): STATE(ARG, u, s) gives the server_state of server S of upstream U.
 * Checkers whose server remains keep their counters; servers without checks are marked up
 * (active_up = true). CFG and the states must stay valid until the next call. */
void health_apply(struct health *h, const struct config *cfg,
                  struct server_state *(*state)(void *arg, size_t u, size_t s), void *arg);
void health_free(struct health *h);

#endif
