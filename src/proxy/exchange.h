/* exchange: the life of one request — route, local answer or forward to an upstream server,
 * stream both bodies, log. One state machine, one handler per state. */
#ifndef PORTERO_PROXY_EXCHANGE_H
#define PORTERO_PROXY_EXCHANGE_H

#include <stdint.h>

#include "http/msg.h"

struct client;
struct exchange;
struct upstream_conn;

/* Starts an exchange for the request head at the start of C->in (HEAD_LEN bytes, parsed into
 * REQ whose header array is lent to the exchange). The exchange copies the head, consumes it from
 * C->in, and sets C->ex. */
void exchange_start(struct client *c, struct http_msg *req);
/* Answers a request head that failed to parse with STATUS and closes the connection after it. */
void exchange_reject(struct client *c, int status);
/* Drives the exchange after readiness changed on the client side. */
void exchange_on_client_event(struct exchange *ex, uint32_t events);
/* Readiness changed on the upstream connection lent to an exchange. */
void exchange_on_upstream_event(struct upstream_conn *uc, uint32_t events);
/* The client timer fired during the exchange. */
void exchange_on_client_timeout(struct exchange *ex);
/* The client connection is going away: drop the exchange (logs it as aborted). */
void exchange_abort(struct exchange *ex);
/* Frees this thread's recycled exchanges (at worker exit). */
void exchange_drain_cache(void);

#endif
