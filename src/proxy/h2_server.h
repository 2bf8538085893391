/* h2_server: HTTP/2 towards clients (RFC 9113) with nghttp2 — one session per connection, each
 * stream a "stream client" that the exchange drives like an HTTP/1.1 connection carrying one
 * request (the stream is bridged to HTTP/1.1 bytes, see http/h2_bridge.h). */
#ifndef PORTERO_PROXY_H2_SERVER_H
#define PORTERO_PROXY_H2_SERVER_H

#include <stdint.h>

struct client;
struct h2_server;

/* C (TLS done, or plain) speaks HTTP/2 from now on: ALPN chose h2, or C->in starts with the client
 * preface (the bytes already read are fed to the session first). Sends our SETTINGS and sets
 * C->h2. Returns 0, or -1 (the caller closes C). */
int h2s_start(struct client *c);
/* Readiness changed on the connection. */
void h2s_on_event(struct h2_server *s, uint32_t events);
/* The connection's timer fired (idle, or the preface never came). */
void h2s_on_timer(struct h2_server *s);
/* The worker drains or reloads: GOAWAY; the connection closes when its streams have ended. */
void h2s_drain(struct h2_server *s);
/* The connection closes: every stream's exchange is aborted, everything freed. */
void h2s_free(struct h2_server *s);
/* Stream client S's exchange finished: its response is complete. */
void h2s_stream_done(struct client *s);
/* client_close on stream client S: RST_STREAM if unfinished; S is freed once nghttp2 is done. */
void h2s_stream_close(struct client *s);

#endif
