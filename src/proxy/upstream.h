/* upstream: connections to servers and the per-worker keep-alive pool.
 *
 * An upstream connection is owned by its worker. It is either lent to one exchange
 * (`ex != NULL`) or idle in its server's pool, watched for the server closing it, with an idle
 * deadline. Pools are LIFO so the warmest connection is reused first. */
#ifndef PORTERO_PROXY_UPSTREAM_H
#define PORTERO_PROXY_UPSTREAM_H

#include <stdbool.h>
#include <stdint.h>

#include "conf/config.h"
#include "core/buf.h"
#include "core/loop.h"
#include "core/xport.h"
#include "proxy/stats.h"

struct exchange;
struct upstream_pool;
struct h2_upstream;
struct tls_client;
struct ssl_session_st;

struct upstream_conn {
    struct loop_io io;
    struct xport xp;                  /* the socket, TLS over it, or the HTTP/2 bridge over those */
    struct xport inner;               /* under the HTTP/2 bridge: the socket or TLS */
    struct h2_upstream *h2;           /* HTTP/2 session (protocol: h2), NULL otherwise */
    struct loop_timer idle_timer;     /* pool idle deadline */
    struct loop_task free_task;       /* frees after the current event batch */
    struct upstream_pool *pool;       /* the pool it returns to */
    struct exchange *ex;              /* borrower, NULL when idle */
    struct upstream_conn *next, *prev;/* pool list links */
    struct buf *in;                   /* response bytes; released when idle */
    bool readable, writable;
    bool connected;                   /* the TCP handshake completed */
    bool tls_handshaking;             /* TLS handshake in progress (xp.ctx is the SSL) */
    bool ready;                       /* TCP, TLS and HTTP/2 set-up done: requests may flow */
    bool tls_session_taken;           /* its session went to the pool after a response */
    bool idle;                        /* linked in its pool's idle list */
    bool rdhup;                       /* the server's FIN was seen: a short read is not "drained" */
    bool closed;
};

/* One pool per (worker, upstream, server). */
struct upstream_pool {
    struct loop *loop;
    const struct conf_upstream *up;   /* borrowed from the worker's snapshot */
    const struct conf_server *server;
    struct upstream_conn *idle;       /* LIFO list */
    uint32_t n_idle;
    uint32_t n_open;                  /* idle + lent */
    bool closing;                     /* retired generation or draining server: never pool again */
    struct stats_entry *stats;        /* this server's per-worker counters (gauges), may be NULL */
    struct worker_stats *wstats;      /* the worker's counters (gauges), may be NULL */
    struct tls_client *tls;           /* the upstream's TLS client context (runtime's), or NULL */
    struct ssl_session_st *tls_session; /* last session with this server, for resumption; owned */
    /* The borrower's handler for events on a lent connection (keeps upstream below exchange). */
    void (*on_lent_event)(struct upstream_conn *uc, uint32_t events);
};

/* Lends an idle connection of POOL (NULL if none). */
struct upstream_conn *upstream_pool_take(struct upstream_pool *pool);
/* Opens a new connection to POOL's server (connect in progress). NULL with errno on failure. */
struct upstream_conn *upstream_connect(struct upstream_pool *pool);
/* Gives UC back to its pool if REUSABLE and the pool has room, else closes it. */
void upstream_release(struct upstream_conn *uc, bool reusable);
/* Closes UC now (lent or idle); memory is freed after the current event batch. */
void upstream_close(struct upstream_conn *uc);
/* Starts TLS on UC (connected) with its pool's context, resuming the pool's session. 0 or -1. */
int upstream_tls_begin(struct upstream_conn *uc);
/* Advances UC's TLS handshake: 1 done, 0 in progress, -1 failed (reason in ERR). */
int upstream_tls_step(struct upstream_conn *uc, char *err, size_t cap);
/* Closes every idle connection of POOL (shutdown). */
void upstream_pool_close_idle(struct upstream_pool *pool);
/* Closes POOL's idle connections and frees what it owns (its generation ends). */
void upstream_pool_free(struct upstream_pool *pool);
/* Moves every idle connection of FROM into TO (same server, new generation). */
void upstream_pool_adopt(struct upstream_pool *to, struct upstream_pool *from);

#endif
