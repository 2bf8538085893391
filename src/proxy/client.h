/* client: one accepted HTTP/1.1 connection — reading request heads, keep-alive, pipelining
 * (one exchange at a time, answered in order), timeouts, and closing. */
#ifndef PORTERO_PROXY_CLIENT_H
#define PORTERO_PROXY_CLIENT_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/loop.h"

struct worker;
struct worker_listener;
struct exchange;
struct conf_listener;

/* Kept small: an idle keep-alive connection costs this struct and nothing else. */
struct client {
    struct loop_io io;
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
/* Closes the connection now (aborting any exchange). */
void client_close(struct client *c);
/* Worker is draining: close if idle between requests, else let the (first or running) exchange
 * finish and close after it. */
void client_drain(struct client *c);

#endif
