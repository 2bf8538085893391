/* worker: one thread, one event loop, its own SO_REUSEPORT listening sockets, its own
 * connections, upstream pools and balancer state (DESIGN: no lock on the request path). */
#ifndef PORTERO_PROXY_WORKER_H
#define PORTERO_PROXY_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "conf/config.h"
#include "core/loop.h"
#include "proxy/accesslog.h"
#include "proxy/balance.h"
#include "proxy/upstream.h"

struct client;

struct worker_listener {
    struct loop_io io;
    struct worker *w;
    const struct conf_listener *conf;
    bool paused;
};

/* What the workers of one process share: the process-wide connection count behind
 * limits.max_connections (touched on accept and close only, never per request). */
struct worker_group {
    struct worker *workers;
    unsigned n_workers;
    atomic_uint connections;
    unsigned max_connections;
};

struct worker_upstream {
    struct balance_state bal;
    struct upstream_pool *pools;     /* one per server, owned */
};

struct worker {
    unsigned id;
    pthread_t thread;
    struct loop *loop;
    struct config *cfg;              /* a reference held for the worker's life */
    struct worker_listener *listeners;
    size_t n_listeners;
    struct worker_upstream *ups;     /* indexed like cfg->upstreams */
    struct client *clients;          /* every open client connection (for drain) */
    uint32_t n_clients;
    struct worker_group *group;      /* shared, owned by main */
    bool accept_paused;              /* at max_connections: listeners out of epoll */
    bool draining;
    struct accesslog alog;
    struct loop_timer flush_timer;
    struct loop_timer drain_timer;
    atomic_bool stop_requested;
};

/* Prepares W (loop, pools, balancers) with listening fds FDS (one per cfg listener, taken over).
 * RINGS: hash rings per upstream (NULL entries for non-hash), shared read-only. */
int worker_init(struct worker *w, struct worker_group *group, unsigned id, struct config *cfg,
                const int *fds, struct balance_ring *const *rings, int access_fd);
int worker_start(struct worker *w);
/* Thread-safe: asks W to drain and stop; join with worker_join. */
void worker_request_stop(struct worker *w);
void worker_join(struct worker *w);
void worker_destroy(struct worker *w);

/* Called by the client module when a connection opens or closes (accept pausing, drain). */
void worker_client_closed(struct worker *w);

#endif
