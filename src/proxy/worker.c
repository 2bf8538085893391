#include "proxy/worker.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/log.h"
#include "proxy/client.h"
#include "proxy/exchange.h"

#define WORKER_ACCEPT_BATCH 64

static void worker_pause_listeners(struct worker *w, bool pause)
{
    if (w->accept_paused == pause || w->draining)
        return;
    w->accept_paused = pause;
    for (size_t i = 0; i < w->n_listeners; i++) {
        struct worker_listener *l = &w->listeners[i];
        if (l->paused == pause || l->io.fd < 0)
            continue;
        if (pause)
            loop_del(w->loop, &l->io);
        else
            loop_add_reader(w->loop, &l->io);
        l->paused = pause;
    }
}

static void worker_on_accept(struct loop_io *io, uint32_t events)
{
    (void)events;
    struct worker_listener *l = container_of(io, struct worker_listener, io);
    struct worker *w = l->w;
    struct worker_group *g = w->group;
    for (int i = 0; i < WORKER_ACCEPT_BATCH; i++) {
        /* Reserve a slot first, so that workers accepting at once cannot overshoot the limit. */
        if (atomic_fetch_add(&g->connections, 1) >= g->max_connections) {
            atomic_fetch_sub(&g->connections, 1);
            worker_pause_listeners(w, true); /* the kernel backlog holds the rest */
            return;
        }
        struct sockaddr_storage peer;
        socklen_t len = sizeof peer;
        int fd = accept4(io->fd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            atomic_fetch_sub(&g->connections, 1);
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED)
                log_warn("accept on %s: %s", l->conf->address, strerror(errno));
            return;
        }
        client_accept(w, fd, (struct sockaddr *)&peer, len);
    }
}

void worker_client_closed(struct worker *w)
{
    struct worker_group *g = w->group;
    w->n_clients--;
    if (atomic_fetch_sub(&g->connections, 1) >= g->max_connections) {
        /* We were at the limit: every worker that paused may accept again. */
        for (unsigned i = 0; i < g->n_workers; i++)
            if (&g->workers[i] != w && g->workers[i].loop)
                loop_wake(g->workers[i].loop);
        worker_pause_listeners(w, false);
    }
    if (w->draining && w->n_clients == 0)
        loop_stop(w->loop);
}

static void worker_on_flush(struct loop_timer *t)
{
    struct worker *w = container_of(t, struct worker, flush_timer);
    accesslog_flush(&w->alog);
    loop_timer_after(w->loop, t, w->cfg->log.flush_interval_ms);
}

static void worker_on_drain_timeout(struct loop_timer *t)
{
    struct worker *w = container_of(t, struct worker, drain_timer);
    log_warn("worker %u: drain timeout, closing %u connections", w->id, w->n_clients);
    while (w->clients)
        client_close(w->clients);
    loop_stop(w->loop);
}

/* Stop accepting, close idle connections, let running exchanges finish (DESIGN: graceful drain). */
static void worker_begin_drain(struct worker *w)
{
    if (w->draining)
        return;
    w->draining = true;
    for (size_t i = 0; i < w->n_listeners; i++) {
        struct worker_listener *l = &w->listeners[i];
        if (!l->paused && l->io.fd >= 0)
            loop_del(w->loop, &l->io);
        if (l->io.fd >= 0)
            close(l->io.fd);
        l->io.fd = -1;
    }
    struct client *c = w->clients;
    while (c) {
        struct client *next = c->next;
        client_drain(c);
        c = next;
    }
    if (w->n_clients == 0) {
        loop_stop(w->loop);
        return;
    }
    loop_timer_after(w->loop, &w->drain_timer, w->cfg->limits.drain_timeout_ms);
}

static void worker_on_wake(void *arg)
{
    struct worker *w = arg;
    if (atomic_load(&w->stop_requested))
        worker_begin_drain(w);
    else if (w->accept_paused && atomic_load(&w->group->connections) < w->group->max_connections)
        worker_pause_listeners(w, false);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    loop_timer_after(w->loop, &w->flush_timer, w->cfg->log.flush_interval_ms);
    loop_run(w->loop, worker_on_wake, w);
    accesslog_flush(&w->alog);
    for (size_t u = 0; u < w->cfg->n_upstreams; u++)
        for (size_t s = 0; s < w->cfg->upstreams[u].n_servers; s++)
            upstream_pool_close_idle(&w->ups[u].pools[s]);
    loop_flush_tasks(w->loop); /* the deferred frees the closes above queued */
    exchange_drain_cache();
    buf_drain_free_list();
    return NULL;
}

static int worker_init_upstreams(struct worker *w, struct balance_ring *const *rings)
{
    w->ups = calloc(w->cfg->n_upstreams ? w->cfg->n_upstreams : 1, sizeof *w->ups);
    if (!w->ups)
        return -1;
    for (size_t u = 0; u < w->cfg->n_upstreams; u++) {
        const struct conf_upstream *up = &w->cfg->upstreams[u];
        struct worker_upstream *wu = &w->ups[u];
        wu->pools = calloc(up->n_servers, sizeof *wu->pools);
        if (!wu->pools || balance_state_init(&wu->bal, up, rings[u], 0x9e3779b97f4a7c15ULL * (w->id + 1)) < 0)
            return -1;
        for (size_t s = 0; s < up->n_servers; s++)
            wu->pools[s] = (struct upstream_pool){ .loop = w->loop, .up = up, .server = &up->servers[s],
                                                   .on_lent_event = exchange_on_upstream_event };
    }
    return 0;
}

int worker_init(struct worker *w, struct worker_group *group, unsigned id, struct config *cfg,
                const int *fds, struct balance_ring *const *rings, int access_fd)
{
    memset(w, 0, sizeof *w);
    w->id = id;
    w->group = group;
    w->cfg = config_ref(cfg);
    w->loop = loop_new();
    w->flush_timer.on_fire = worker_on_flush;
    w->drain_timer.on_fire = worker_on_drain_timeout;
    w->listeners = calloc(cfg->n_listeners ? cfg->n_listeners : 1, sizeof *w->listeners);
    if (!w->loop || !w->listeners || accesslog_init(&w->alog, access_fd, cfg->log.format) < 0)
        return -1;
    w->n_listeners = cfg->n_listeners;
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        struct worker_listener *l = &w->listeners[i];
        l->io.fd = fds[i];
        l->io.on_event = worker_on_accept;
        l->w = w;
        l->conf = &cfg->listeners[i];
        if (loop_add_reader(w->loop, &l->io) < 0)
            return -1;
    }
    return worker_init_upstreams(w, rings);
}

int worker_start(struct worker *w)
{
    return pthread_create(&w->thread, NULL, worker_main, w) == 0 ? 0 : -1;
}

void worker_request_stop(struct worker *w)
{
    atomic_store(&w->stop_requested, true);
    loop_wake(w->loop);
}

void worker_join(struct worker *w) { pthread_join(w->thread, NULL); }

void worker_destroy(struct worker *w)
{
    for (size_t i = 0; i < w->n_listeners; i++)
        if (w->listeners[i].io.fd >= 0)
            close(w->listeners[i].io.fd);
    if (w->ups) {
        for (size_t u = 0; u < w->cfg->n_upstreams; u++) {
            balance_state_free(&w->ups[u].bal);
            free(w->ups[u].pools);
        }
    }
    free(w->ups);
    free(w->listeners);
    accesslog_destroy(&w->alog);
    loop_free(w->loop);
    w->loop = NULL;
    config_unref(w->cfg);
}
