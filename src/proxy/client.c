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
#include "core/sock.h"
#include "http/h1.h"
#include "http/hdr.h"
#include "http/proxyproto.h"
#include "policy/policy.h"
#include "proxy/exchange.h"
#include "proxy/h2_server.h"
#include "proxy/worker.h"
#include "tls/tls.h"

/* Header arrays live on the stack while a head is parsed; the exchange copies what it keeps. */
#define CLIENT_MAX_HEADERS_STACK 256

static void client_read_head(struct client *c);
static void client_linger_read(struct client *c);
static void client_tls_step(struct client *c);
static void client_end_detached(struct client *c);

/* Keeps the worker's count of idle client connections (a metrics gauge) in step. */
static void client_set_busy(struct client *c, bool busy)
{
    struct worker *w = c->w;
    if (c->busy == busy || c->parent)
        return;
    c->busy = busy;
    w->n_idle_clients += busy ? -1u : 1u;
    STATS_SET(w->stats.client_conns_idle, w->n_idle_clients);
}

static void client_free_task(struct loop_task *task)
{
    struct client *c = container_of(task, struct client, task);
    free(c->tls_subject);
    free(c);
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
    if (c->h2) {
        h2s_on_timer(c->h2);
        return;
    }
    if (c->lingering || c->tls_handshaking) { /* a handshake counts against header_timeout */
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

/* A stream client ends with its exchange: the HTTP/2 session resets the stream if unfinished and
 * frees the client once nghttp2 is done with the stream. */
/* What every client without a socket of its own (a stream, a detached refresh) gives up when it
 * ends: its exchange, deadline, pending task and buffer. */
static void client_end_socketless(struct client *c)
{
    c->closed = true;
    if (c->ex)
        exchange_abort(c->ex);
    loop_timer_stop(c->w->loop, &c->timer);
    loop_cancel(c->w->loop, &c->task);
    buf_put(c->in);
    c->in = NULL;
}

static void client_close_stream(struct client *c)
{
    client_end_socketless(c);
    h2s_stream_close(c);
}

static void client_free_tls(struct client *c)
{
    if (c->tls_gen)
        worker_gen_release(c->w, c->tls_gen);
    c->tls_gen = NULL;
    if (c->xp.ops == &tls_xport_ops)
        SSL_free(c->xp.ctx);
    c->xp.ops = NULL;
    c->xp.ctx = NULL;
}

void client_close(struct client *c)
{
    if (c->closed)
        return;
    if (c->detached) {
        client_end_detached(c);
        return;
    }
    if (c->parent) {
        client_close_stream(c);
        return;
    }
    struct worker *w = c->w;
    if (c->ex)
        exchange_abort(c->ex);
    if (c->h2) {
        struct h2_server *h2 = c->h2;
        c->h2 = NULL;
        h2s_free(h2); /* aborts every stream's exchange */
    }
    client_set_busy(c, true); /* leaves the idle count */
    c->closed = true;
    loop_timer_stop(w->loop, &c->timer);
    loop_cancel(w->loop, &c->task);
    client_free_tls(c);
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
    if (c->h2)
        h2s_on_event(c->h2, events);
    else if (c->tls_handshaking)
        client_tls_step(c);
    else if (c->lingering)
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
        ssize_t n = xport_read(&c->xp, scratch, sizeof scratch);
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
    if (c->rdhup || xport_shutdown_wr(&c->xp) < 0) {
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

const struct conf_listener *client_listener(const struct client *c)
{
    return worker_find_listener(worker_config(c->w), c->listener);
}

/* RFC 9113 §3.4: a cleartext connection whose first bytes are the client preface speaks HTTP/2
 * (prior knowledge). Returns 1 when C->in holds the whole preface, 0 when what it holds so far
 * could still be one (wait), -1 when it is not. */
static const char client_h2_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
static int client_sniff_h2(struct client *c)
{
    size_t need = sizeof client_h2_preface - 1, have = buf_len(c->in);
    if (c->requests || c->tls || c->parent)
        return -1;
    const struct conf_listener *cl = client_listener(c);
    if (!cl || !cl->http2.enabled)
        return -1;
    if (memcmp(buf_rptr(c->in), client_h2_preface, have < need ? have : need) != 0)
        return -1;
    return have >= need ? 1 : 0;
}

/* Hands the connection to the HTTP/2 session; false when it had to close. */
static bool client_start_h2(struct client *c)
{
    client_set_busy(c, true);
    loop_timer_stop(c->w->loop, &c->timer);
    c->head_timer_armed = false;
    if (h2s_start(c) < 0) {
        client_close(c);
        return false;
    }
    return true;
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
        int h2 = c->proxy_pending || !buf_len(c->in) ? -1 : client_sniff_h2(c);
        if (h2 > 0) {
            client_start_h2(c);
            return;
        }
        if (h2 < 0 && !c->proxy_pending && buf_len(c->in) && client_try_parse(c))
            return;
        if (!c->readable)
            break;
        if (client_make_room(c) < 0) {
            client_set_busy(c, true);
            exchange_reject(c, 431);
            return;
        }
        ssize_t n = xport_read(&c->xp, buf_wptr(c->in), buf_space(c->in));
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
    if (c->detached) {
        c->ex = NULL;
        client_end_detached(c);
        return;
    }
    if (c->parent) {
        loop_timer_stop(w->loop, &c->timer);
        h2s_stream_done(c); /* the stream carried one request: it ends with it */
        return;
    }
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
    if (c->no_delay || c->parent)
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
    if (c->h2) {
        h2s_drain(c->h2); /* GOAWAY: the streams in flight finish */
        return;
    }
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

/* --- TLS ---------------------------------------------------------------------------------------- */

/* Starts the server side of a handshake on C with its listener's certificates. The generation is
 * held until the handshake ends: its SNI, ALPN and OCSP callbacks point into that runtime. */
static int client_tls_begin(struct client *c, const struct conf_listener *cl)
{
    struct worker_gen *gen = worker_gen_use(c->w);
    const struct config *cfg = gen->rt->cfg;
    size_t idx = (size_t)(cl - cfg->listeners);
    struct tls_server *ts = idx < cfg->n_listeners && gen->rt->listener_tls ? gen->rt->listener_tls[idx] : NULL;
    SSL *ssl = ts ? tls_server_ssl(ts, c->io.fd) : NULL;
    if (!ssl) {
        worker_gen_release(c->w, gen);
        return -1;
    }
    c->xp.ops = &tls_xport_ops;
    c->xp.ctx = ssl;
    c->tls_gen = gen;
    c->tls_handshaking = true;
    return 0;
}

static void client_tls_done(struct client *c)
{
    char subject[1024];
    c->tls_handshaking = false;
    c->tls = true;
    STATS_ADD(c->w->stats.tls_handshakes, 1);
    if (SSL_session_reused(c->xp.ctx))
        STATS_ADD(c->w->stats.tls_resumed, 1);
    worker_gen_release(c->w, c->tls_gen);
    c->tls_gen = NULL;
    if (tls_peer_subject(c->xp.ctx, subject, sizeof subject))
        c->tls_subject = strdup(subject);
    const struct conf_listener *cl = client_listener(c);
    if (tls_alpn_h2(c->xp.ctx) && cl && cl->http2.enabled) {
        client_start_h2(c);
        return;
    }
    client_read_head(c); /* the request may already sit decrypted inside the SSL */
}

static void client_tls_step(struct client *c)
{
    char err[256];
    bool want_write = false;
    int r = tls_handshake(c->xp.ctx, &want_write, err, sizeof err);
    if (r > 0) {
        c->readable = true;
        client_tls_done(c);
        return;
    }
    if (r < 0) {
        char ip[48];
        sock_format_ip(&c->peer.sa, ip, sizeof ip);
        log_debug("client %s: TLS handshake failed: %s", ip, err);
        STATS_ADD(c->w->stats.tls_handshake_failed, 1);
        client_close(c);
    }
}

/* --- detached refreshes ---------------------------------------------------------------------------- */

/* A detached client reads an empty body and throws its answer away: the cache keeps it. */
static ssize_t client_null_read(struct xport *x, void *buf, size_t n)
{
    (void)x;
    (void)buf;
    (void)n;
    return 0;
}

static ssize_t client_null_writev(struct xport *x, const struct iovec *iov, int n)
{
    (void)x;
    size_t total = 0;
    for (int i = 0; i < n; i++)
        total += iov[i].iov_len;
    return (ssize_t)total;
}

static int client_null_shutdown(struct xport *x)
{
    (void)x;
    return 0;
}

static const struct xport_ops client_null_ops = { client_null_read, client_null_writev, client_null_shutdown };

static void client_end_detached(struct client *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        c->w->detached = c->next;
    if (c->next)
        c->next->prev = c->prev;
    client_end_socketless(c);
    c->task.run = client_free_task;
    loop_defer(c->w->loop, &c->task);
}

/* Fields a refresh must not repeat: it asks for the whole, current representation. */
static bool client_refresh_skips(struct str name)
{
    static const char *const skip[] = { "cache-control", "pragma", "if-none-match", "if-modified-since",
                                        "if-match", "if-unmodified-since", "if-range", "range", "expect",
                                        "content-length", "transfer-encoding", "connection", "host" };
    for (size_t i = 0; i < sizeof skip / sizeof skip[0]; i++)
        if (str_ieq_cstr(name, skip[i]))
            return true;
    return false;
}

static void client_refresh_run(struct loop_task *task)
{
    struct client *c = container_of(task, struct client, task);
    c->task.run = client_resume_task;
    client_read_head(c);
}

void client_refresh(struct client *like, const struct http_msg *req)
{
    struct client *c = calloc(1, sizeof *c);
    struct buf *b = c ? buf_get() : NULL;
    if (!b) {
        free(c);
        return;
    }
    struct sbuf h = { 0 };
    sbuf_append_cstr(&h, "GET ");
    sbuf_append_str(&h, req->target);
    sbuf_append_cstr(&h, " HTTP/1.1\r\nHost: ");
    sbuf_append_str(&h, req->host);
    sbuf_append_cstr(&h, "\r\n");
    for (uint32_t i = 0; i < req->n_headers; i++)
        if (!client_refresh_skips(req->headers[i].name))
            sbuf_append_header(&h, req->headers[i].name, req->headers[i].value);
    sbuf_append_cstr(&h, "\r\n");
    if (h.failed || h.len > buf_space(b)) {
        sbuf_free(&h);
        buf_put(b);
        free(c);
        return;
    }
    memcpy(buf_wptr(b), h.p, h.len);
    b->wpos += (uint32_t)h.len;
    sbuf_free(&h);
    c->w = like->w;
    c->listener = like->listener;
    c->peer = like->peer;
    c->tls = like->tls;
    c->detached = true;
    c->busy = true;
    c->in = b;
    c->io.fd = -1;
    c->xp = (struct xport){ .fd = -1, .ops = &client_null_ops };
    c->writable = true;
    c->timer.on_fire = client_on_timer;
    c->task.run = client_refresh_run; /* after the current exchange's step: never inside it */
    loop_defer(c->w->loop, &c->task);
    c->next = c->w->detached;
    if (c->next)
        c->next->prev = c;
    c->w->detached = c;
}

/* --- HTTP/2 stream clients ------------------------------------------------------------------------ */

static void client_stream_task(struct loop_task *task)
{
    struct client *s = container_of(task, struct client, task);
    if (s->closed)
        return;
    if (s->ex)
        exchange_on_client_event(s->ex, 0);
    else if (s->readable)
        client_read_head(s);
}

static void client_stream_timer(struct loop_timer *t)
{
    struct client *s = container_of(t, struct client, timer);
    if (s->ex)
        exchange_on_client_timeout(s->ex);
    else
        client_close(s);
}

struct client *client_stream_new(struct client *parent)
{
    struct client *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->w = parent->w;
    s->parent = parent;
    s->listener = parent->listener;
    s->peer = parent->peer;
    s->tls = parent->tls;
    s->tls_subject = parent->tls_subject ? strdup(parent->tls_subject) : NULL;
    s->io.fd = -1;
    s->xp.fd = -1;
    s->busy = true;
    s->writable = true;
    s->task.run = client_stream_task;
    s->timer.on_fire = client_stream_timer;
    return s;
}

void client_stream_free(struct client *s)
{
    loop_timer_stop(s->w->loop, &s->timer);
    loop_cancel(s->w->loop, &s->task);
    buf_put(s->in);
    free(s->tls_subject);
    free(s);
}

void client_stream_wake(struct client *s)
{
    if (!s->closed)
        loop_defer(s->w->loop, &s->task);
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
    c->xp.fd = fd;
    if (cl && cl->tls.enabled && client_tls_begin(c, cl) < 0) {
        if (c->ip_counted)
            policy_conn_release(&c->peer.sa);
        close(fd);
        free(c);
        return;
    }
    c->io.on_event = client_on_event;
    c->timer.on_fire = client_on_timer;
    c->task.run = client_resume_task;
    if (loop_add(w->loop, &c->io) < 0) {
        log_warn("epoll_ctl: %s", strerror(errno));
        if (c->ip_counted)
            policy_conn_release(&c->peer.sa);
        client_free_tls(c);
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
