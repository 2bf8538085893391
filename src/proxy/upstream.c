#include "proxy/upstream.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "core/log.h"
#include "core/sock.h"
#include "proxy/h2_upstream.h"
#include "tls/tls.h"

static void upstream_tls_keep_session(struct upstream_conn *uc, SSL *ssl);
static SSL *upstream_ssl(const struct upstream_conn *uc);

static void upstream_free_task(struct loop_task *task)
{
    struct upstream_conn *uc = container_of(task, struct upstream_conn, free_task);
    buf_put(uc->in);
    free(uc);
}

/* Keeps the idle / active connection gauges of the worker and the server (owner-written). */
static void upstream_gauge(struct upstream_pool *pool, int idle, int active)
{
    if (pool->wstats) {
        STATS_ADD(pool->wstats->upstream_conns_idle, (uint64_t)(int64_t)idle);
        STATS_ADD(pool->wstats->upstream_conns_active, (uint64_t)(int64_t)active);
    }
    if (pool->stats)
        STATS_ADD(pool->stats->idle_conns, (uint64_t)(int64_t)idle);
}

static void upstream_unlink_idle(struct upstream_conn *uc)
{
    struct upstream_pool *pool = uc->pool;
    if (uc->prev)
        uc->prev->next = uc->next;
    else
        pool->idle = uc->next;
    if (uc->next)
        uc->next->prev = uc->prev;
    uc->next = uc->prev = NULL;
    uc->idle = false;
    pool->n_idle--;
    upstream_gauge(pool, -1, 0);
}

void upstream_close(struct upstream_conn *uc)
{
    if (uc->closed)
        return;
    struct upstream_pool *pool = uc->pool;
    if (uc->idle)
        upstream_unlink_idle(uc);
    else
        upstream_gauge(pool, 0, -1);
    uc->closed = true;
    pool->n_open--;
    loop_timer_stop(pool->loop, &uc->idle_timer);
    SSL *ssl = upstream_ssl(uc); /* under the HTTP/2 bridge too */
    if (uc->h2)
        h2u_detach(uc);
    if (ssl)
        SSL_free(ssl);
    close(uc->io.fd); /* our only reference: close(2) takes it out of epoll */
    uc->free_task.run = upstream_free_task;
    loop_defer(pool->loop, &uc->free_task);
}

/* Keeps the session of a TLS connection so the next connection to that server resumes it (an
 * abbreviated handshake: no certificate, one round trip less). TLS 1.3 tickets arrive after the
 * handshake, so the session is taken when a response has been read and when the connection ends. */
static void upstream_tls_keep_session(struct upstream_conn *uc, SSL *ssl)
{
    SSL_SESSION *s = tls_client_session(ssl);
    if (!s)
        return; /* nothing better than what the pool has */
    SSL_SESSION_free(uc->pool->tls_session);
    uc->pool->tls_session = s;
}

static SSL *upstream_ssl(const struct upstream_conn *uc)
{
    const struct xport *t = uc->h2 ? &uc->inner : &uc->xp;
    return t->ops == &tls_xport_ops ? t->ctx : NULL;
}

int upstream_tls_begin(struct upstream_conn *uc)
{
    struct upstream_pool *pool = uc->pool;
    SSL *ssl = tls_client_ssl(pool->tls, uc->io.fd, pool->server->address, pool->tls_session);
    if (!ssl)
        return -1;
    uc->xp.ops = &tls_xport_ops;
    uc->xp.ctx = ssl;
    uc->tls_handshaking = true;
    return 0;
}

int upstream_tls_step(struct upstream_conn *uc, char *err, size_t cap)
{
    bool want_write = false;
    int r = tls_handshake(uc->xp.ctx, &want_write, err, cap);
    if (r < 0) {
        SSL_SESSION_free(uc->pool->tls_session); /* the server may have forgotten it */
        uc->pool->tls_session = NULL;
    }
    if (r == 0) {
        if (want_write)
            uc->writable = false;
        else
            uc->readable = false;
        return 0;
    }
    uc->tls_handshaking = false;
    return r;
}

/* An idle connection that becomes readable was closed by the server (or sent junk): drop it.
 * Over TLS or HTTP/2 the bytes may be the protocol's own (a session ticket, a PING): keep the
 * connection if reading yields nothing for us. */
static bool upstream_idle_junk(struct upstream_conn *uc)
{
    char b;
    if (!uc->xp.ops)
        return true;
    ssize_t n = xport_read(&uc->xp, &b, 1);
    return !(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
}

static void upstream_on_event(struct loop_io *io, uint32_t events)
{
    struct upstream_conn *uc = container_of(io, struct upstream_conn, io);
    if (uc->closed)
        return;
    if (!uc->idle) {
        if (uc->ex)
            uc->pool->on_lent_event(uc, events);
        return;
    }
    if ((events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) || ((events & EPOLLIN) && upstream_idle_junk(uc)))
        upstream_close(uc);
}

static void upstream_on_idle_timeout(struct loop_timer *t)
{
    upstream_close(container_of(t, struct upstream_conn, idle_timer));
}

struct upstream_conn *upstream_pool_take(struct upstream_pool *pool)
{
    struct upstream_conn *uc = pool->idle;
    if (!uc)
        return NULL;
    upstream_unlink_idle(uc);
    upstream_gauge(pool, 0, 1);
    loop_timer_stop(pool->loop, &uc->idle_timer);
    /* Idle connections that saw any read event were closed, so nothing is waiting to be read:
     * reading before the request is out would only return EAGAIN. */
    uc->readable = false;
    return uc;
}

struct upstream_conn *upstream_connect(struct upstream_pool *pool)
{
    int fd = sock_connect((const struct sockaddr *)&pool->server->addr, pool->server->addr_len);
    if (fd < 0)
        return NULL;
    struct upstream_conn *uc = calloc(1, sizeof *uc);
    if (!uc) {
        close(fd);
        errno = ENOMEM;
        return NULL;
    }
    uc->io.fd = fd;
    uc->xp.fd = fd;
    uc->io.on_event = upstream_on_event;
    uc->idle_timer.on_fire = upstream_on_idle_timeout;
    uc->pool = pool;
    if (loop_add(pool->loop, &uc->io) < 0) {
        int saved = errno;
        close(fd);
        free(uc);
        errno = saved;
        return NULL;
    }
    pool->n_open++;
    upstream_gauge(pool, 0, 1);
    return uc;
}

void upstream_release(struct upstream_conn *uc, bool reusable)
{
    struct upstream_pool *pool = uc->pool;
    uc->ex = NULL;
    if (upstream_ssl(uc) && !uc->tls_session_taken) {
        upstream_tls_keep_session(uc, upstream_ssl(uc)); /* once per connection: it has its ticket now */
        uc->tls_session_taken = true;
    }
    if (uc->h2 && !h2u_reusable(uc))
        reusable = false;
    if (!reusable || pool->closing || (uc->in && buf_len(uc->in)) ||
        pool->n_idle >= pool->up->keepalive_max_idle) {
        upstream_close(uc);
        return;
    }
    upstream_gauge(pool, 1, -1);
    buf_put(uc->in);
    uc->in = NULL;
    uc->next = pool->idle;
    uc->prev = NULL;
    if (pool->idle)
        pool->idle->prev = uc;
    pool->idle = uc;
    pool->n_idle++;
    uc->idle = true;
    loop_timer_after(pool->loop, &uc->idle_timer, pool->up->keepalive_idle_timeout_ms);
}

void upstream_pool_close_idle(struct upstream_pool *pool)
{
    while (pool->idle)
        upstream_close(pool->idle);
}

void upstream_pool_free(struct upstream_pool *pool)
{
    upstream_pool_close_idle(pool);
    SSL_SESSION_free(pool->tls_session);
    pool->tls_session = NULL;
}

void upstream_pool_adopt(struct upstream_pool *to, struct upstream_pool *from)
{
    while (from->idle) {
        struct upstream_conn *uc = from->idle;
        upstream_unlink_idle(uc);
        from->n_open--;
        uc->pool = to;
        to->n_open++;
        upstream_gauge(to, 1, 0);
        uc->next = to->idle;
        uc->prev = NULL;
        if (to->idle)
            to->idle->prev = uc;
        to->idle = uc;
        to->n_idle++;
        uc->idle = true;
    }
}
