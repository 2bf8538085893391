/* health_h2: the HTTP/2 side of one active health check (RFC 9113), for upstreams with
 * `protocol: h2`. It does no I/O: the checker sends what health_h2_output gives (the client
 * preface and SETTINGS, the request, acknowledgements) and feeds what it reads to
 * health_h2_input, so the same code serves prior knowledge and TLS with ALPN "h2".
 *
 * The request is one GET on stream 1, END_STREAM on its HEADERS. The verdict is the :status of
 * the first final response header block (1xx blocks are skipped); the body is never read. */
#ifndef PORTERO_PROXY_HEALTH_H2_H
#define PORTERO_PROXY_HEALTH_H2_H

#include <stddef.h>

#include "core/sbuf.h"

struct health_h2;

/* A client session with the request queued: SCHEME ("http" or "https"), AUTHORITY (the Host the
 * check sends), PATH. NULL when out of memory. */
struct health_h2 *health_h2_new(const char *scheme, const char *authority, const char *path);
void health_h2_free(struct health_h2 *s);
/* Appends the bytes the session wants to send to OUT. 0, or -1 (no memory, session failure). */
int health_h2_output(struct health_h2 *s, struct sbuf *out);
/* Takes LEN bytes received and appends the answer they call for (SETTINGS ACK, WINDOW_UPDATE,
 * GOAWAY) to OUT. Returns 1 with *STATUS once the response status is known, 0 when more is
 * needed, or -1 with a one-line reason in ERR ("HTTP/2 stream reset (REFUSED_STREAM)",
 * "HTTP/2 GOAWAY before the request (PROTOCOL_ERROR)", "HTTP/2 protocol error: ..."); OUT may
 * then still hold a GOAWAY worth sending. */
int health_h2_input(struct health_h2 *s, const void *data, size_t len, struct sbuf *out,
                    int *status, char *err, size_t cap);
/* The check is over and the connection is closing cleanly: queues GOAWAY(NO_ERROR) (RFC 9113
 * §6.8) for a last health_h2_output. */
void health_h2_goodbye(struct health_h2 *s);

#endif
