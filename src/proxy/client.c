#include "proxy/client.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "http/h1.h"
#include "proxy/exchange.h"
#include "proxy/worker.h"

/* Header arrays live on the stack while a head is parsed; the exchange copies what it keeps. */
#define CLIENT_MAX_HEADERS_STACK 256

static void client_read_head(struct client *c);

/* Keeps the worker's count of idle client connections (a metrics gauge) in step. */
static void client_set_busy(struct client *c, bool busy)
{
    struct worker *w = c->w;
    if (c->busy == busy)
        return;
    c->busy = busy;
    w->n_idle_clients += busy ? -1u : 1u;
    STATS_SET(w->stats.client_conns_idle, w->n_idle_clients);
}

static void client_free_task(struct loop_task *task)
{
    free(container_of(task, struct client, task));
}

static void client_resume_task(struct loop_task *task)
{
    struct client *c = container_of(task, struct client, task);
    if (c->closed)
        return;
    if (c->ex)
        exchange_on_client_event(c->ex, 0);
    else
        client_read_head(c);
}

static void client_on_timer(struct loop_timer *t)
{
    struct client *c = container_of(t, struct client, timer);
    if (c->ex) {
        exchange_on_client_timeout(c->ex);
        return;
    }
    if (c->in && buf_len(c->in)) {
        client_set_busy(c, true);
        exchange_reject(c, 408); /* a head started but did not finish in time (slowloris) */
        return;
    }
    client_close(c); /* keep-alive idle: close silently, RFC 9112 §9.6 */
}

void client_close(struct client *c)
{
    if (c->closed)
        return;
    struct worker *w = c->w;
    if (c->ex)
        exchange_abort(c->ex);
    client_set_busy(c, true); /* leaves the idle count */
    c->closed = true;
    loop_timer_stop(w->loop, &c->timer);
    loop_cancel(w->loop, &c->task);
    close(c->io.fd); /* our only reference: close(2) takes it out of epoll, no EPOLL_CTL_DEL */
    buf_put(c->in);
    c->in = NULL;
    if (c->prev)
        c->prev->next = c->next;
    else
        w->clients = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->task.run = client_free_task;
    loop_defer(w->loop, &c->task);
    worker_client_closed(w);
}

static void client_on_event(struct loop_io *io, uint32_t events)
{
    struct client *c = container_of(io, struct client, io);
    if (c->closed)
        return;
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        c->readable = true;
    if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        c->rdhup = true; /* an EOF waits behind the data: keep reading until it shows */
    if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
        c->writable = true;
    if (c->ex)
        exchange_on_client_event(c->ex, events);
    else if (c->readable)
        client_read_head(c);
}

/* Parses what C->in holds: starts an exchange, rejects, or returns 0 to read more. */
static int client_try_parse(struct client *c)
{
    const struct conf_limits *lim = &worker_config(c->w)->limits;
    struct h1_limits hl = { lim->max_request_line, lim->max_header_bytes, lim->max_headers };
    struct http_header headers[CLIENT_MAX_HEADERS_STACK];
    struct http_msg req = { .headers = headers };
    req.max_headers = lim->max_headers < CLIENT_MAX_HEADERS_STACK ? lim->max_headers : CLIENT_MAX_HEADERS_STACK;
    int r = h1_parse_request(buf_rptr(c->in), buf_len(c->in), &hl, &req);
    if (r > 0) {
        c->requests++;
        c->head_timer_armed = false;
        client_set_busy(c, true);
        exchange_start(c, &req);
        return 1;
    }
    if (r < 0) {
        client_set_busy(c, true);
        exchange_reject(c, -r);
        return 1;
    }
    if (!c->head_timer_armed) {
        c->head_timer_armed = true;
        loop_timer_after(c->w->loop, &c->timer, lim->header_timeout_ms);
    }
    return 0;
}

static int client_make_room(struct client *c)
{
    if (buf_space(c->in))
        return 0;
    buf_compact(c->in);
    if (buf_space(c->in))
        return 0;
    uint32_t limit = worker_config(c->w)->limits.max_header_bytes + 1;
    if (c->in->cap >= limit)
        return -1; /* the parser has already said 431 for anything longer */
    struct buf *g = buf_grow(c->in, limit);
    if (!g)
        return -1;
    c->in = g;
    return 0;
}

static void client_read_head(struct client *c)
{
    if (!c->in && !(c->in = buf_get())) {
        client_close(c);
        return;
    }
    for (;;) {
        if (buf_len(c->in) && client_try_parse(c))
            return;
        if (!c->readable)
            break;
        if (client_make_room(c) < 0) {
            client_set_busy(c, true);
            exchange_reject(c, 431);
            return;
        }
        ssize_t n = read(c->io.fd, buf_wptr(c->in), buf_space(c->in));
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            c->readable = false;
            break;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            client_close(c); /* peer closed (or reset) between or inside heads */
            return;
        }
        if ((size_t)n < buf_space(c->in) && !c->rdhup)
            c->readable = false; /* short read: drained; the next edge brings more */
        c->in->wpos += (uint32_t)n;
    }
    if (!buf_len(c->in)) {
        buf_put(c->in); /* idle costs nothing */
        c->in = NULL;
    }
}

void client_exchange_done(struct client *c, bool keep_alive)
{
    struct worker *w = c->w;
    if (!keep_alive || w->draining) {
        client_close(c);
        return;
    }
    client_set_busy(c, false);
    if (c->in && !buf_len(c->in)) {
        buf_put(c->in);
        c->in = NULL;
    }
    c->head_timer_armed = false;
    loop_timer_after(w->loop, &c->timer, worker_config(w)->limits.keepalive_timeout_ms);
    c->task.run = client_resume_task;
    if (c->in || c->readable)
        loop_defer(w->loop, &c->task); /* pipelined bytes wait: answer in order, outside this stack */
}

void client_no_delay(struct client *c)
{
    if (c->no_delay)
        return;
    /* Our writes are whole messages or large pieces: Nagle would only hold back the tail of a
     * long response until the client's delayed ACK (tens of milliseconds). Set on the first
     * response that needs more than one write, so short exchanges spare the syscall. */
    int one = 1;
    setsockopt(c->io.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->no_delay = true;
}

void client_drain(struct client *c)
{
    /* Close only what is idle between requests. A connection not yet past its first request was
     * accepted for one that may be on the wire right now: serve it (with Connection: close). */
    if (!c->ex && c->requests > 0 && !(c->in && buf_len(c->in)))
        client_close(c);
}

void client_accept(struct worker *w, int fd, const struct sockaddr *peer, socklen_t peer_len)
{
    struct client *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return;
    }
    c->io.fd = fd;
    c->io.on_event = client_on_event;
    c->timer.on_fire = client_on_timer;
    c->task.run = client_resume_task;
    c->w = w;
    memcpy(&c->peer, peer, peer_len < sizeof c->peer ? peer_len : sizeof c->peer);
    if (loop_add(w->loop, &c->io) < 0) {
        log_warn("epoll_ctl: %s", strerror(errno));
        close(fd);
        free(c);
        return;
    }
    c->next = w->clients;
    if (w->clients)
        w->clients->prev = c;
    w->clients = c;
    w->n_clients++;
    c->busy = true;
    client_set_busy(c, false);
    STATS_SET(w->stats.client_conns_active, w->n_clients);
    /* The first request gets header_timeout from accept: a silent connection is a slowloris too. */
    c->head_timer_armed = true;
    loop_timer_after(w->loop, &c->timer, worker_config(w)->limits.header_timeout_ms);
}
