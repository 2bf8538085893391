/* h2_upstream: HTTP/2 to an upstream server (RFC 9113, prior knowledge or ALPN "h2"), presented
 * to the exchange as an HTTP/1.1 connection, so that one exchange state machine serves both.
 *
 * After h2u_attach, the connection's xport (uc->xp) is a bridge around the real transport:
 *   - writev takes the exchange's HTTP/1.1 request (head, then the body framed as the head says,
 *     chunked trailers included) and sends it as HEADERS (with "te: trailers", which gRPC
 *     servers require), DATA and trailing HEADERS on one stream;
 *   - read gives back an HTTP/1.1 response synthesized from the stream: the head, the body
 *     chunked (raw when the server sent content-length) and the server's trailers
 *     (grpc-status) in the chunked trailer section.
 * One stream at a time; the connection goes back to the pool between streams. Flow control
 * follows the exchange: received DATA is acknowledged (WINDOW_UPDATE) only as the exchange reads
 * it, so a slow client slows the server down instead of filling our memory.
 *
 * The bridge also takes the connection's event handler (uc->io.on_event) to flush frames when
 * the socket becomes writable and to answer PING / SETTINGS / WINDOW_UPDATE while the
 * connection is pooled (an HTTP/1.1 idle connection that becomes readable is closed instead).
 *
 * Ownership: the bridge (struct h2_upstream) is owned by the upstream connection (uc->h2) and
 * freed by h2u_detach; the inner transport (socket, SSL) stays the connection's. */
#ifndef PORTERO_PROXY_H2_UPSTREAM_H
#define PORTERO_PROXY_H2_UPSTREAM_H

#include <stdbool.h>

struct upstream_conn;
struct h2_upstream;

/* UC's transport (uc->xp: plain socket or TLS, connected and handshaken) carries HTTP/2 from now
 * on: queues the client preface and SETTINGS (sent at once if the socket takes them), and
 * replaces uc->xp with the bridge (keeping the inner transport inside). Returns 0, or -1 (no
 * memory, the socket failed) with UC unchanged. */
int h2u_attach(struct upstream_conn *uc);
/* UC is being closed: sends GOAWAY if the socket takes it at once, gives uc->xp and
 * uc->io.on_event back, and frees the session (the caller then closes the socket / SSL).
 * Does nothing when UC has no bridge. */
void h2u_detach(struct upstream_conn *uc);
/* The connection may carry another request: no GOAWAY, no error, the last stream ended cleanly
 * (response complete and read, request fully taken) and stream ids remain. */
bool h2u_reusable(const struct upstream_conn *uc);

#endif
