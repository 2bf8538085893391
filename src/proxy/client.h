/* client: one accepted connection — the TLS handshake, reading HTTP/1.1 request heads, keep-alive,
 * pipelining (one exchange at a time, answered in order), timeouts, and closing — or one HTTP/2
 * stream of such a connection (a "stream client", made by h2_server), which the exchange drives
 * exactly like an HTTP/1.1 connection carrying one request. */
#ifndef PORTERO_PROXY_CLIENT_H
#define PORTERO_PROXY_CLIENT_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/loop.h"
#include "core/xport.h"

struct worker;
struct worker_listener;
struct exchange;
struct conf_listener;
struct http_msg;
struct h2_server;
struct worker_gen;

/* Kept small: an idle keep-alive connection costs this struct and nothing else. */
struct client {
    struct loop_io io;             /* the socket (unused on a stream client) */
    struct xport xp;               /* how bytes move: the socket, TLS over it, or an HTTP/2 stream */
    struct loop_timer timer;       /* header, keep-alive, body, send or tunnel deadline */
    struct loop_task task;         /* deferred: next pipelined request, or freeing */
    struct worker *w;
    struct client *next, *prev;    /* worker's list of clients */
    struct buf *in;                /* request bytes; NULL while idle */
    struct exchange *ex;           /* current exchange, NULL between requests */
    const char *listener;          /* its listener's address, interned by the worker (lives as
                                      long as the worker) */
    union {
        struct sockaddr sa;
        struct sockaddr_in v4;
        struct sockaddr_in6 v6;
    } peer;
    uint32_t requests;             /* exchanges started on this connection */
    bool readable, writable;
    bool closed;
    bool rdhup;                    /* the peer's FIN was seen: a short read is not "drained" */
    bool head_timer_armed;         /* header_timeout runs (first byte of a head seen) */
    bool busy;                     /* an exchange runs (else idle, for the gauge) */
    bool no_delay;                 /* TCP_NODELAY is set */
    bool proxy_pending;            /* a PROXY protocol header must come first */
    bool ip_counted;               /* counted against max_connections_per_ip until closed */
    bool lingering;                /* answered and half-closed: dropping what the client still sends */
    uint32_t linger_bytes;
    bool tls_handshaking;          /* the TLS handshake runs (xp.ctx is the SSL) */
    bool tls;                      /* the connection is TLS (after the handshake) */
    struct worker_gen *tls_gen;    /* held while the handshake may call into its certificates */
    char *tls_subject;             /* verified client certificate subject, owned; NULL if none */
    struct h2_server *h2;          /* this connection speaks HTTP/2: the session owns its streams */
    struct client *parent;         /* stream client: the connection it belongs to */
    void *stream;                  /* stream client: h2_server's stream state */
    bool detached;                 /* a refresh behind a stale answer: no connection at all */
};

/* Takes ownership of FD accepted by W's listener at address LISTENER (interned; CL its current
 * settings). */
void client_accept(struct worker *w, const char *listener, const struct conf_listener *cl, int fd,
                   const struct sockaddr *peer, socklen_t peer_len);
/* Answers a connection we will not serve with a canned STATUS response (503 overloaded, 429 too
 * many connections from one address) and closes FD, best effort and without waiting. */
void client_shed(int fd, int status);
/* The exchange finished: KEEP_ALIVE says whether the connection may serve another request. */
void client_exchange_done(struct client *c, bool keep_alive);
/* Sets TCP_NODELAY once: a response is about to take more than one write. */
void client_no_delay(struct client *c);
/* Closes the connection now (aborting any exchange); on a stream client, resets the stream. */
void client_close(struct client *c);
/* Worker is draining: close if idle between requests, else let the (first or running) exchange
 * finish and close after it. */
void client_drain(struct client *c);

/* The listener settings C was accepted on, in the worker's current configuration (NULL if the
 * listener is gone since). */
const struct conf_listener *client_listener(const struct client *c);

/* Starts a detached exchange that fetches REQ's resource again into the cache, while the stale
 * copy answers the client (RFC 5861 stale-while-revalidate). LIKE lends worker, listener and
 * address; the answer goes to the cache only. Best effort: nothing happens without memory. */
void client_refresh(struct client *like, const struct http_msg *req);

/* --- HTTP/2 stream clients (used by h2_server) --- */
/* A stream client of connection PARENT: zeroed; worker, peer, listener and TLS facts copied;
 * xp.fd = -1 (the caller sets xp.ops and xp.ctx); not in the worker's client list. */
struct client *client_stream_new(struct client *parent);
/* Frees stream client S (its exchange must be gone). */
void client_stream_free(struct client *s);
/* Something changed for stream client S (the caller set s->readable / s->writable): runs its
 * exchange, or the parsing of its head, from a deferred task. */
void client_stream_wake(struct client *s);

#endif
