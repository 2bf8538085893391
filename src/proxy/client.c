#include "proxy/client.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "http/h1.h"
#include "http/hdr.h"
#include "http/proxyproto.h"
#include "policy/policy.h"
#include "proxy/exchange.h"
#include "proxy/worker.h"

/* Header arrays live on the stack while a head is parsed; the exchange copies what it keeps. */
#define CLIENT_MAX_HEADERS_STACK 256

static void client_read_head(struct client *c);
static void client_linger_read(struct client *c);

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
    if (c->lingering) {
        client_close(c);
        return;
    }
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
    if (c->ip_counted)
        policy_conn_release(&c->peer.sa);
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
    if (c->lingering)
        client_linger_read(c);
    else if (c->ex)
        exchange_on_client_event(c->ex, events);
    else if (c->readable)
        client_read_head(c);
}

/* Closing right after an answer while the client may still be sending (a body we refused, a
 * pipelined request) makes the kernel reset the connection, and a reset can destroy the answer
 * before the client has read it. So the answer is followed by our FIN, what still comes is read
 * and dropped for a short while, and only then the socket closes (nginx's lingering close). */
#define CLIENT_LINGER_MS 2000
#define CLIENT_LINGER_MAX_BYTES (1u << 20)

static void client_linger_read(struct client *c)
{
    char scratch[4096];
    for (;;) {
        ssize_t n = read(c->io.fd, scratch, sizeof scratch);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n < 0 && errno == EINTR)
            continue;
        c->linger_bytes += n > 0 ? (uint32_t)n : 0;
        if (n <= 0 || c->linger_bytes > CLIENT_LINGER_MAX_BYTES) {
            client_close(c);
            return;
        }
    }
}

static void client_linger(struct client *c)
{
    if (c->rdhup || shutdown(c->io.fd, SHUT_WR) < 0) {
        client_close(c); /* the client is done sending: nothing to wait for */
        return;
    }
    c->lingering = true;
    buf_put(c->in);
    c->in = NULL;
    loop_cancel(c->w->loop, &c->task);
    loop_timer_after(c->w->loop, &c->timer, CLIENT_LINGER_MS);
    client_linger_read(c);
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

/* Counts the connection against its address's limit; false (and shed) when over it. */
static bool client_count_ip(struct client *c, const struct conf_listener *cl)
{
    if (!cl || !cl->max_connections_per_ip)
        return true;
    if (policy_conn_acquire(&c->peer.sa, cl->max_connections_per_ip)) {
        c->ip_counted = true;
        return true;
    }
    STATS_ADD(c->w->stats.policy.conn_limited, 1);
    return false;
}

static const struct conf_listener *client_listener(const struct client *c)
{
    const struct config *cfg = worker_config(c->w);
    for (size_t i = 0; i < cfg->n_listeners; i++)
        if (strcmp(cfg->listeners[i].address, c->listener) == 0)
            return &cfg->listeners[i];
    return NULL;
}

/* The PROXY header (HAProxy PROXY protocol v1/v2) at the start of C->in gives the real client.
 * Returns 1 when consumed, 0 to read more, -1 when the connection must go. */
static int client_take_proxy_header(struct client *c)
{
    struct proxyproto_info info;
    enum proxyproto_result r = proxyproto_parse((const uint8_t *)buf_rptr(c->in), buf_len(c->in), &info);
    if (r == PROXYPROTO_NEED_MORE)
        return buf_space(c->in) || buf_len(c->in) < PROXYPROTO_MAX_HEADER ? 0 : -1;
    if (r == PROXYPROTO_ERROR) {
        log_info("client %s: invalid PROXY protocol header: connection closed", c->listener);
        return -1;
    }
    if (info.has_addr)
        memcpy(&c->peer, &info.src, info.src_len < sizeof c->peer ? info.src_len : sizeof c->peer);
    buf_consume(c->in, (uint32_t)info.header_len);
    c->proxy_pending = false;
    if (!client_count_ip(c, client_listener(c))) {
        client_shed(c->io.fd, 429);
        c->io.fd = -1;
        return -1;
    }
    return 1;
}

static void client_read_head(struct client *c)
{
    if (!c->in && !(c->in = buf_get())) {
        client_close(c);
        return;
    }
    for (;;) {
        if (c->proxy_pending && buf_len(c->in)) {
            int r = client_take_proxy_header(c);
            if (r < 0) {
                client_close(c);
                return;
            }
        }
        if (!c->proxy_pending && buf_len(c->in) && client_try_parse(c))
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
        client_linger(c);
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
    if (c->lingering || (!c->ex && c->requests > 0 && !(c->in && buf_len(c->in))))
        client_close(c);
}

void client_shed(int fd, int status)
{
    char scratch[4096], msg[256];
    /* Read what already arrived, so that closing does not turn into a reset that could destroy
     * the answer before the client reads it. */
    while (read(fd, scratch, sizeof scratch) == (ssize_t)sizeof scratch)
        ;
    int body = snprintf(scratch, sizeof scratch, "%d %s\n", status, hdr_reason(status));
    int n = snprintf(msg, sizeof msg, "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\n"
                     "Content-Length: %d\r\nRetry-After: 1\r\nConnection: close\r\n\r\n%s",
                     status, hdr_reason(status), body, scratch);
    if (write(fd, msg, (size_t)n) < 0) {
        /* best effort: the client is gone or not reading; closing is all that is left */
    }
    shutdown(fd, SHUT_WR);
    close(fd);
}

void client_accept(struct worker *w, const char *listener, const struct conf_listener *cl, int fd,
                   const struct sockaddr *peer, socklen_t peer_len)
{
    struct client *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return;
    }
    c->w = w;
    c->listener = listener;
    memcpy(&c->peer, peer, peer_len < sizeof c->peer ? peer_len : sizeof c->peer);
    if (cl && cl->proxy_protocol) {
        if (!policy_is_trusted(worker_config(w), peer)) {
            /* Only trusted load balancers may name the client: anyone else is refused. */
            STATS_ADD(w->stats.policy.acl_denied, 1);
            close(fd);
            free(c);
            return;
        }
        c->proxy_pending = true;
    } else if (!client_count_ip(c, cl)) {
        client_shed(fd, 429);
        free(c);
        return;
    }
    c->io.fd = fd;
    c->io.on_event = client_on_event;
    c->timer.on_fire = client_on_timer;
    c->task.run = client_resume_task;
    if (loop_add(w->loop, &c->io) < 0) {
        log_warn("epoll_ctl: %s", strerror(errno));
        if (c->ip_counted)
            policy_conn_release(&c->peer.sa);
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
