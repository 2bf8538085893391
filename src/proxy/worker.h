/* worker: one thread, one event loop, its own SO_REUSEPORT listening sockets, its own
 * connections, upstream pools and balancer state (DESIGN: no lock on the request path).
 *
 * A worker serves one configuration generation at a time (`gen`). When the control thread
 * publishes a new runtime, the worker installs it between events: new exchanges use it, running
 * ones finish on the generation they started with, which is freed when its last exchange ends. */
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
#include "proxy/runtime.h"
#include "proxy/server_state.h"
#include "proxy/stats.h"
#include "proxy/upstream.h"

struct client;
struct worker;

/* A listener address, kept for the worker's life: client connections name their listener by it,
 * and may outlive the listener itself (a reload that removed it). */
struct worker_address {
    struct worker_address *next;
    char text[];
};

struct worker_listener {
    struct loop_io io;
    struct worker *w;
    const char *address;             /* interned (worker->addresses): the key listeners are
                                        matched by on reload */
    struct worker_listener *next;
    struct loop_task free_task;      /* freed after the event batch that may still name it */
    bool paused;
    bool closed;
};

/* What the workers of one process share: the published runtime and the process-wide
 * connection count behind limits.max_connections (touched on accept and close only). */
struct worker_group {
    struct worker *workers;
    unsigned n_workers;
    atomic_uint connections;
    atomic_uint max_connections;
    atomic_uint accept_limit;        /* max_connections + shed_connections: past it, accepting
                                        pauses (between the two, connections are shed with 503) */
    pthread_mutex_t lock;            /* guards `current` (taken on publish and install only) */
    struct runtime *current;
    atomic_uint_least64_t generation;
};

/* Per generation and upstream: the balancer, pools, retry budget. */
struct worker_upstream {
    struct balance_state bal;
    struct upstream_pool *pools;     /* one per server, owned */
    struct retry_budget budget;
    bool *skip;                      /* scratch for server selection, one per server */
    size_t n_ejected;                /* servers this worker saw ejected (outlier share) */
};

struct worker_gen {
    struct runtime *rt;              /* a reference */
    struct worker_upstream *ups;     /* indexed like rt->cfg->upstreams, owned */
    struct stats_entry **route_stats;/* per route (may hold NULL when the table is full) */
    struct stats_entry **up_stats;   /* per upstream */
    struct stats_entry ***server_stats; /* [upstream][server] */
    struct stats_entry *noroute_stats;  /* requests no route took (404, early 4xx), named "" */
    unsigned users;                  /* exchanges on it, +1 while it is the worker's current */
};

/* A wake-up another thread posts to a worker (a cache object it waits on grew): the task runs
 * on the worker's loop. Embedded in its owner; `posted` is guarded by the mailbox lock. */
struct worker_mail {
    struct loop_task task;
    struct worker_mail *next;
    bool posted;
};

struct worker {
    unsigned id;
    pthread_t thread;
    struct loop *loop;
    struct worker_group *group;      /* shared, owned by main */
    struct worker_gen *gen;          /* current generation */
    uint64_t generation;
    struct worker_listener *listeners;
    struct worker_address *addresses; /* interned listener addresses clients point at */
    struct policy_worker *policy;    /* Redis connection of cluster-wide limits */
    struct client *clients;          /* every open client connection (for drain) */
    struct client *detached;         /* cache refreshes running without a client (closed at exit) */
    uint32_t n_clients;
    uint32_t n_idle_clients;         /* between requests (gauge for metrics) */
    bool accept_paused;              /* at max_connections: listeners out of epoll */
    bool draining;
    struct accesslog alog;
    struct worker_stats stats;       /* written by this worker only */
    struct loop_timer flush_timer;
    struct loop_timer drain_timer;
    atomic_bool stop_requested;
    pthread_mutex_t mail_lock;       /* guards mail */
    struct worker_mail *mail;        /* posted by other threads, run on wake */
};

int worker_group_init(struct worker_group *g, struct worker *workers, unsigned n, struct runtime *rt);
/* Control thread: makes RT current (takes a reference) and wakes every worker. */
void worker_group_publish(struct worker_group *g, struct runtime *rt);
void worker_group_destroy(struct worker_group *g);

/* Prepares W with listening fds FDS (one per listener of the group's current config, taken over). */
int worker_init(struct worker *w, struct worker_group *group, unsigned id, const int *fds, int access_fd,
                enum log_format format);
/* Before worker_start: one more listening socket for ADDRESS (an upgrade handed over more
 * sockets than this process has workers). */
int worker_adopt_listener(struct worker *w, int fd, const char *address);
int worker_start(struct worker *w);
/* Thread-safe: asks W to drain and stop; join with worker_join. */
void worker_request_stop(struct worker *w);
void worker_join(struct worker *w);
void worker_destroy(struct worker *w);

/* CFG's listener at ADDRESS, or NULL. */
const struct conf_listener *worker_find_listener(const struct config *cfg, const char *address);
/* The configuration new exchanges on W use. */
static inline const struct config *worker_config(const struct worker *w) { return w->gen->rt->cfg; }
/* An exchange starts (takes the current generation) or ends (lets its generation go). */
struct worker_gen *worker_gen_use(struct worker *w);
void worker_gen_release(struct worker *w, struct worker_gen *gen);

/* Thread-safe: runs M's task on W's loop soon (once, however often it is posted meanwhile). */
void worker_post(struct worker *w, struct worker_mail *m);
/* W's thread: M will not run (any more) from a post made before this call. */
void worker_unpost(struct worker *w, struct worker_mail *m);

/* Called by the client module when a connection closes (accept pausing, drain). */
void worker_client_closed(struct worker *w);

#endif
