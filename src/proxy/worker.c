#include "proxy/worker.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/log.h"
#include "core/sock.h"
#include "proxy/client.h"
#include "proxy/exchange.h"

#define WORKER_ACCEPT_BATCH 64
#define WORKER_BACKLOG 4096
#define WORKER_RETRY_WINDOW_MS 10000

/* --- the group: publication of runtimes ------------------------------------------------------- */

int worker_group_init(struct worker_group *g, struct worker *workers, unsigned n, struct runtime *rt)
{
    memset(g, 0, sizeof *g);
    g->workers = workers;
    g->n_workers = n;
    atomic_init(&g->max_connections, rt->cfg->limits.max_connections);
    atomic_init(&g->accept_limit, rt->cfg->limits.max_connections + rt->cfg->limits.shed_connections);
    g->current = runtime_ref(rt);
    atomic_init(&g->generation, rt->generation);
    return pthread_mutex_init(&g->lock, NULL) == 0 ? 0 : -1;
}

void worker_group_publish(struct worker_group *g, struct runtime *rt)
{
    pthread_mutex_lock(&g->lock);
    struct runtime *old = g->current;
    g->current = runtime_ref(rt);
    atomic_store(&g->generation, rt->generation);
    atomic_store(&g->max_connections, rt->cfg->limits.max_connections);
    atomic_store(&g->accept_limit, rt->cfg->limits.max_connections + rt->cfg->limits.shed_connections);
    pthread_mutex_unlock(&g->lock);
    runtime_unref(old);
    for (unsigned i = 0; i < g->n_workers; i++)
        if (g->workers[i].loop)
            loop_wake(g->workers[i].loop);
}

static struct runtime *worker_group_acquire(struct worker_group *g)
{
    pthread_mutex_lock(&g->lock);
    struct runtime *rt = runtime_ref(g->current);
    pthread_mutex_unlock(&g->lock);
    return rt;
}

void worker_group_destroy(struct worker_group *g)
{
    runtime_unref(g->current);
    g->current = NULL;
    pthread_mutex_destroy(&g->lock);
}

/* --- generations -------------------------------------------------------------------------------- */

static struct stats_entry *worker_server_stats(struct worker *w, const char *up, const char *addr)
{
    char key[160];
    snprintf(key, sizeof key, "%s/%s", up, addr);
    return stats_table_entry(&w->stats.servers, key);
}

static int worker_gen_upstream(struct worker *w, struct worker_gen *gen, size_t u)
{
    const struct config *cfg = gen->rt->cfg;
    const struct conf_upstream *up = &cfg->upstreams[u];
    struct worker_upstream *wu = &gen->ups[u];
    wu->pools = calloc(up->n_servers, sizeof *wu->pools);
    wu->skip = calloc(up->n_servers, sizeof *wu->skip);
    gen->server_stats[u] = calloc(up->n_servers, sizeof *gen->server_stats[u]);
    if (!wu->pools || !wu->skip || !gen->server_stats[u] ||
        balance_state_init(&wu->bal, up, gen->rt->rings[u], 0x9e3779b97f4a7c15ULL * (w->id + 1)) < 0)
        return -1;
    retry_budget_init(&wu->budget, up->retries.budget_percent, up->retries.budget_min, WORKER_RETRY_WINDOW_MS);
    gen->up_stats[u] = stats_table_entry(&w->stats.upstreams, up->name);
    for (size_t s = 0; s < up->n_servers; s++) {
        gen->server_stats[u][s] = worker_server_stats(w, up->name, up->servers[s].address);
        wu->pools[s] = (struct upstream_pool){
            .loop = w->loop, .up = up, .server = &up->servers[s], .on_lent_event = exchange_on_upstream_event,
            .closing = up->servers[s].drain, .stats = gen->server_stats[u][s], .wstats = &w->stats,
            .tls = gen->rt->upstream_tls ? gen->rt->upstream_tls[u] : NULL,
        };
    }
    return 0;
}

static void worker_gen_free(struct worker_gen *gen)
{
    const struct config *cfg = gen->rt->cfg;
    for (size_t u = 0; gen->ups && u < cfg->n_upstreams; u++) {
        struct worker_upstream *wu = &gen->ups[u];
        for (size_t s = 0; wu->pools && s < cfg->upstreams[u].n_servers; s++)
            upstream_pool_free(&wu->pools[s]);
        balance_state_free(&wu->bal);
        free(wu->pools);
        free(wu->skip);
        if (gen->server_stats)
            free(gen->server_stats[u]);
    }
    free(gen->ups);
    free(gen->route_stats);
    free(gen->up_stats);
    free(gen->server_stats);
    runtime_unref(gen->rt);
    free(gen);
}

static struct worker_gen *worker_gen_build(struct worker *w, struct runtime *rt)
{
    struct worker_gen *gen = calloc(1, sizeof *gen);
    if (!gen) {
        runtime_unref(rt);
        return NULL;
    }
    gen->rt = rt; /* the caller's reference */
    gen->users = 1;
    const struct config *cfg = rt->cfg;
    size_t nu = cfg->n_upstreams ? cfg->n_upstreams : 1, nr = cfg->n_routes ? cfg->n_routes : 1;
    gen->ups = calloc(nu, sizeof *gen->ups);
    gen->up_stats = calloc(nu, sizeof *gen->up_stats);
    gen->server_stats = calloc(nu, sizeof *gen->server_stats);
    gen->route_stats = calloc(nr, sizeof *gen->route_stats);
    bool ok = gen->ups && gen->up_stats && gen->server_stats && gen->route_stats;
    for (size_t u = 0; ok && u < cfg->n_upstreams; u++)
        ok = worker_gen_upstream(w, gen, u) == 0;
    gen->noroute_stats = stats_table_entry(&w->stats.routes, "");
    for (size_t r = 0; ok && r < cfg->n_routes; r++)
        gen->route_stats[r] = stats_table_entry(&w->stats.routes, cfg->routes[r].name);
    if (!ok) {
        worker_gen_free(gen);
        return NULL;
    }
    return gen;
}

struct worker_gen *worker_gen_use(struct worker *w)
{
    w->gen->users++;
    return w->gen;
}

void worker_gen_release(struct worker *w, struct worker_gen *gen)
{
    (void)w;
    if (--gen->users == 0)
        worker_gen_free(gen);
}

static bool worker_same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* Pooled connections carry the old TLS and protocol settings: only equal ones may move over. */
static bool worker_same_transport(const struct conf_upstream *a, const struct conf_upstream *b)
{
    const struct conf_upstream_tls *x = &a->tls, *y = &b->tls;
    return a->protocol == b->protocol && x->enabled == y->enabled && x->verify == y->verify &&
           worker_same_str(x->ca, y->ca) && worker_same_str(x->sni, y->sni) &&
           worker_same_str(x->client_cert, y->client_cert) && worker_same_str(x->client_key, y->client_key);
}

/* Idle connections to servers that stay (same upstream name and address, not draining) move
 * to the new generation's pools; the rest close when the old generation lets go. */
static void worker_gen_migrate(struct worker_gen *to, struct worker_gen *from)
{
    const struct config *nc = to->rt->cfg, *oc = from->rt->cfg;
    for (size_t u = 0; u < oc->n_upstreams; u++) {
        const struct conf_upstream *up = &oc->upstreams[u];
        const struct conf_upstream *nup = config_find_upstream(nc, up->name);
        for (size_t s = 0; nup && s < up->n_servers; s++) {
            for (size_t t = 0; t < nup->n_servers; t++) {
                if (strcmp(nup->servers[t].address, up->servers[s].address) != 0 || nup->servers[t].drain ||
                    !worker_same_transport(up, nup))
                    continue;
                upstream_pool_adopt(&to->ups[nup->index].pools[t], &from->ups[u].pools[s]);
                break;
            }
        }
        for (size_t s = 0; s < up->n_servers; s++) {
            from->ups[u].pools[s].closing = true; /* lent connections close when given back */
            upstream_pool_close_idle(&from->ups[u].pools[s]);
        }
    }
}

/* --- listeners ------------------------------------------------------------------------------------ */

static void worker_on_accept(struct loop_io *io, uint32_t events);

static void worker_listener_enable(struct worker *w, struct worker_listener *l, bool on)
{
    if (l->paused == !on)
        return;
    if (on)
        loop_add_reader(w->loop, &l->io);
    else
        loop_del(w->loop, &l->io);
    l->paused = !on;
}

static void worker_pause_listeners(struct worker *w, bool pause)
{
    if (w->accept_paused == pause || w->draining)
        return;
    w->accept_paused = pause;
    for (struct worker_listener *l = w->listeners; l; l = l->next)
        worker_listener_enable(w, l, !pause);
}

static const char *worker_intern_address(struct worker *w, const char *address)
{
    for (struct worker_address *a = w->addresses; a; a = a->next)
        if (strcmp(a->text, address) == 0)
            return a->text;
    size_t n = strlen(address) + 1;
    struct worker_address *a = malloc(sizeof *a + n);
    if (!a)
        return NULL;
    memcpy(a->text, address, n);
    a->next = w->addresses;
    w->addresses = a;
    return a->text;
}

static int worker_add_listener(struct worker *w, int fd, const char *address)
{
    struct worker_listener *l = calloc(1, sizeof *l);
    if (!l || !(l->address = worker_intern_address(w, address))) {
        free(l);
        return -1;
    }
    l->io.fd = fd;
    l->io.on_event = worker_on_accept;
    l->w = w;
    l->paused = true;
    l->next = w->listeners;
    w->listeners = l;
    if (!w->accept_paused && !w->draining)
        worker_listener_enable(w, l, true);
    return 0;
}

static void worker_free_listener_task(struct loop_task *task)
{
    struct worker_listener *l = container_of(task, struct worker_listener, free_task);
    free(l);
}

static void worker_close_listener(struct worker *w, struct worker_listener *l)
{
    worker_listener_enable(w, l, false);
    close(l->io.fd);
    l->closed = true; /* an event for it may still wait in this batch */
    l->free_task.run = worker_free_listener_task;
    loop_defer(w->loop, &l->free_task);
}

const struct conf_listener *worker_find_listener(const struct config *cfg, const char *address)
{
    for (size_t i = 0; i < cfg->n_listeners; i++)
        if (strcmp(cfg->listeners[i].address, address) == 0)
            return &cfg->listeners[i];
    return NULL;
}

static bool worker_config_has_listener(const struct config *cfg, const char *address)
{
    for (size_t i = 0; i < cfg->n_listeners; i++)
        if (strcmp(cfg->listeners[i].address, address) == 0)
            return true;
    return false;
}

/* Listeners are matched by address: kept ones keep their sockets (no refused connection),
 * removed ones take what their queue holds, then close; new ones open here. */
static void worker_sync_listeners(struct worker *w, const struct config *cfg)
{
    for (struct worker_listener **p = &w->listeners; *p;) {
        struct worker_listener *l = *p;
        if (worker_config_has_listener(cfg, l->address)) {
            p = &l->next;
            continue;
        }
        worker_on_accept(&l->io, 0);
        *p = l->next;
        worker_close_listener(w, l);
    }
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        const struct conf_listener *cl = &cfg->listeners[i];
        bool have = false;
        for (struct worker_listener *l = w->listeners; l && !have; l = l->next)
            have = strcmp(l->address, cl->address) == 0;
        if (have)
            continue;
        int fd = sock_listen((const struct sockaddr *)&cl->addr, cl->addr_len, WORKER_BACKLOG);
        if (fd < 0 || worker_add_listener(w, fd, cl->address) < 0) {
            log_error("worker %u: cannot listen on %s: %s", w->id, cl->address, strerror(errno));
            if (fd >= 0)
                close(fd);
        }
    }
}

/* --- accept and close ----------------------------------------------------------------------------- */

/* Gives a connection slot back. Whoever takes the count below the limit wakes the workers that
 * paused at it, including for a slot that was only reserved around an accept(2) that found
 * nothing: that reservation alone can make another worker see the limit. */
static void worker_release_slot(struct worker *w)
{
    struct worker_group *g = w->group;
    if (atomic_fetch_sub(&g->connections, 1) < atomic_load(&g->accept_limit))
        return;
    for (unsigned i = 0; i < g->n_workers; i++)
        if (&g->workers[i] != w && g->workers[i].loop)
            loop_wake(g->workers[i].loop);
    worker_pause_listeners(w, false);
}

static void worker_on_accept(struct loop_io *io, uint32_t events)
{
    (void)events;
    struct worker_listener *l = container_of(io, struct worker_listener, io);
    struct worker *w = l->w;
    struct worker_group *g = w->group;
    if (l->closed)
        return;
    const struct conf_listener *cl = worker_find_listener(worker_config(w), l->address);
    for (int i = 0; i < WORKER_ACCEPT_BATCH; i++) {
        /* Reserve a slot first, so that workers accepting at once cannot overshoot the limit. */
        unsigned n = atomic_fetch_add(&g->connections, 1);
        if (n >= atomic_load(&g->accept_limit)) {
            atomic_fetch_sub(&g->connections, 1);
            worker_pause_listeners(w, true); /* the kernel backlog holds the rest */
            return;
        }
        struct sockaddr_storage peer;
        socklen_t len = sizeof peer;
        int fd = accept4(io->fd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            worker_release_slot(w);
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED)
                log_warn("accept on %s: %s", l->address, strerror(errno));
            return;
        }
        STATS_ADD(w->stats.connections_accepted, 1);
        if (n >= atomic_load(&g->max_connections)) {
            /* Overloaded: a quick 503 is kinder than a queue that times out (and cheaper). */
            STATS_ADD(w->stats.policy.shed, 1);
            client_shed(fd, 503);
            worker_release_slot(w);
            continue;
        }
        client_accept(w, l->address, cl, fd, (struct sockaddr *)&peer, len);
    }
}

void worker_client_closed(struct worker *w)
{
    w->n_clients--;
    STATS_SET(w->stats.client_conns_active, w->n_clients);
    worker_release_slot(w);
    if (w->draining && w->n_clients == 0)
        loop_stop(w->loop);
}

/* --- timers, drain, wake-ups ---------------------------------------------------------------------- */

static void worker_on_flush(struct loop_timer *t)
{
    struct worker *w = container_of(t, struct worker, flush_timer);
    accesslog_flush(&w->alog);
    if (w->id == 0)
        policy_housekeeping(loop_now(w->loop));
    loop_timer_after(w->loop, t, worker_config(w)->log.flush_interval_ms);
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
    while (w->listeners) {
        struct worker_listener *l = w->listeners;
        w->listeners = l->next;
        worker_close_listener(w, l);
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
    loop_timer_after(w->loop, &w->drain_timer, worker_config(w)->limits.drain_timeout_ms);
}

/* HTTP/2 connections live long and settled their TLS and SETTINGS under the old configuration:
 * a graceful GOAWAY lets their streams finish and the client reconnect under the new one
 * (HTTP/1.1 connections take the new one at their next request). */
static void worker_goaway_h2(struct worker *w)
{
    for (struct client *c = w->clients, *next; c; c = next) {
        next = c->next;
        if (c->h2)
            client_drain(c);
    }
}

static void worker_install(struct worker *w)
{
    struct runtime *rt = worker_group_acquire(w->group);
    if (rt->generation == w->generation) {
        runtime_unref(rt);
        return;
    }
    struct worker_gen *gen = worker_gen_build(w, rt);
    if (!gen) {
        log_error("worker %u: out of memory installing configuration generation %llu", w->id,
                  (unsigned long long)w->generation);
        return;
    }
    struct worker_gen *old = w->gen;
    worker_gen_migrate(gen, old);
    w->gen = gen;
    w->generation = gen->rt->generation;
    if (!w->draining)
        worker_sync_listeners(w, gen->rt->cfg);
    worker_gen_release(w, old);
    worker_goaway_h2(w);
}

void worker_post(struct worker *w, struct worker_mail *m)
{
    pthread_mutex_lock(&w->mail_lock);
    bool wake = !m->posted;
    if (!m->posted) {
        m->posted = true;
        m->next = w->mail;
        w->mail = m;
    }
    pthread_mutex_unlock(&w->mail_lock);
    if (wake)
        loop_wake(w->loop);
}

void worker_unpost(struct worker *w, struct worker_mail *m)
{
    pthread_mutex_lock(&w->mail_lock);
    if (m->posted) {
        for (struct worker_mail **p = &w->mail; *p; p = &(*p)->next) {
            if (*p == m) {
                *p = m->next;
                break;
            }
        }
        m->posted = false;
    }
    pthread_mutex_unlock(&w->mail_lock);
    loop_cancel(w->loop, &m->task);
}

/* Moves the posted wake-ups to the loop's deferred tasks (they run after this batch). */
static void worker_take_mail(struct worker *w)
{
    pthread_mutex_lock(&w->mail_lock); /* held throughout: a new post relinks `next` */
    for (struct worker_mail *m = w->mail; m; m = m->next) {
        m->posted = false;
        loop_defer(w->loop, &m->task);
    }
    w->mail = NULL;
    pthread_mutex_unlock(&w->mail_lock);
}

static void worker_on_wake(void *arg)
{
    struct worker *w = arg;
    worker_take_mail(w);
    if (atomic_load(&w->stop_requested)) {
        worker_begin_drain(w);
        return;
    }
    if (atomic_load(&w->group->generation) != w->generation)
        worker_install(w);
    if (w->accept_paused && atomic_load(&w->group->connections) < atomic_load(&w->group->accept_limit))
        worker_pause_listeners(w, false);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    loop_timer_after(w->loop, &w->flush_timer, worker_config(w)->log.flush_interval_ms);
    worker_on_wake(w); /* a generation may have been published while we started */
    loop_run(w->loop, worker_on_wake, w);
    while (w->detached) /* background cache refreshes do not hold a shutdown */
        client_close(w->detached);
    accesslog_flush(&w->alog);
    worker_gen_release(w, w->gen);
    w->gen = NULL;
    loop_flush_tasks(w->loop); /* the deferred frees the closes above queued */
    exchange_drain_cache();
    buf_drain_free_list();
    return NULL;
}

/* --- life ------------------------------------------------------------------------------------------ */

int worker_init(struct worker *w, struct worker_group *group, unsigned id, const int *fds, int access_fd,
                enum log_format format)
{
    memset(w, 0, sizeof *w);
    w->id = id;
    w->group = group;
    w->loop = loop_new();
    w->flush_timer.on_fire = worker_on_flush;
    w->drain_timer.on_fire = worker_on_drain_timeout;
    pthread_mutex_init(&w->mail_lock, NULL);
    if (!w->loop || worker_stats_init(&w->stats) < 0 || accesslog_init(&w->alog, access_fd, format) < 0)
        return -1;
    if (!(w->policy = policy_worker_new(w->loop)))
        return -1;
    struct runtime *rt = worker_group_acquire(group);
    w->generation = rt->generation;
    if (!(w->gen = worker_gen_build(w, rt)))
        return -1;
    const struct config *cfg = rt->cfg;
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        if (worker_add_listener(w, fds[i], cfg->listeners[i].address) < 0)
            return -1;
    }
    return 0;
}

int worker_adopt_listener(struct worker *w, int fd, const char *address)
{
    return worker_add_listener(w, fd, address);
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
    while (w->listeners) {
        struct worker_listener *l = w->listeners;
        w->listeners = l->next;
        close(l->io.fd);
        free(l);
    }
    while (w->addresses) {
        struct worker_address *a = w->addresses;
        w->addresses = a->next;
        free(a);
    }
    policy_worker_free(w->policy);
    w->policy = NULL;
    if (w->gen)
        worker_gen_release(w, w->gen); /* never started: nothing else holds it */
    w->gen = NULL;
    accesslog_destroy(&w->alog);
    worker_stats_free(&w->stats);
    pthread_mutex_destroy(&w->mail_lock);
    loop_free(w->loop);
    w->loop = NULL;
}
