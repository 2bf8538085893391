#include "proxy/health.h"

#include <errno.h>
#include <openssl/err.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/sbuf.h"
#include "core/sock.h"
#include "core/xport.h"
#include "http/h1.h"
#include "proxy/health_h2.h"
#include "proxy/runtime.h"
#include "tls/tls.h"

#define HEALTH_MAX_HEAD (16 * 1024) /* a health answer's head; beyond that it is not healthy */
#define HEALTH_MAX_HEADERS 64
#define HEALTH_FIRST_MAX_MS 200     /* first check soon after start (or after a reload) */
#define HEALTH_DEFAULT_MS 1000      /* stands in for a 0 interval or timeout (never hammer) */

/* CONNECTING -> (HANDSHAKING, with tls) -> TALKING: writing the request (and, over HTTP/2, the
 * frames the session answers with) while reading the answer. */
enum health_phase { HEALTH_IDLE, HEALTH_CONNECTING, HEALTH_HANDSHAKING, HEALTH_TALKING };

/* One server's checker. Everything it needs from the snapshot is copied at apply time: the
 * control thread may free the previous snapshot before it calls health_apply again. The TLS
 * context is the exception: it is borrowed from h->rt, which health holds until the next apply
 * (an SSL made from it keeps its own reference to the OpenSSL context). */
struct health_checker {
    struct health *h;
    struct health_checker *prev, *next; /* h->live, or h->dead once removed */
    char *key;                          /* "upstream/address" */
    char *upstream, *address;           /* for log lines and the default Host */
    struct server_state *st;            /* one reference, ours */
    struct conf_health_check hc;        /* copy; path and host owned */
    struct sockaddr_storage addr;
    socklen_t addr_len;
    bool seen;                          /* health_apply bookkeeping */
    bool tls_on;                        /* the upstream has `tls:` */
    bool h2;                            /* the upstream has `protocol: h2` */
    struct tls_client *tls;             /* borrowed from h->rt; NULL without one */
    SSL_SESSION *tls_session;           /* owned: the last check's, resumed by the next */
    /* the check in flight (nothing allocated while idle) */
    enum health_phase phase;
    struct loop_io io;
    struct loop_timer timer;            /* idle: next check; during a check: its timeout */
    bool readable, writable;            /* edge-triggered: what the last edges told us */
    bool answered;                      /* a response came: the connection may end politely */
    char alert[48];                     /* a fatal TLS alert the server sent, or "" */
    struct xport xp;                    /* the socket, or TLS over it (ctx = SSL *, owned) */
    struct health_h2 *sess;             /* owned: the HTTP/2 session, with protocol: h2 */
    struct sbuf out;                    /* bytes to send, from out_off */
    size_t out_off;
    char *buf;                          /* HTTP/1.1: the head so far; HTTP/2: a read chunk */
    size_t buf_len;
};

struct health {
    struct loop *loop;
    struct health_checker *live;
    struct health_checker *dead; /* removed; freed after the current batch of events */
    struct loop_task free_task;
    struct runtime *rt;          /* a reference: the checkers' TLS contexts live in it */
    uint64_t rng;                /* xorshift64, for jitter */
};

static void health_check_start(struct health_checker *c);
static void health_on_event(struct loop_io *io, uint32_t events);

/* --- small helpers ------------------------------------------------------------------------- */

static uint64_t health_rand(struct health *h, uint64_t below_or_eq)
{
    uint64_t x = h->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    h->rng = x;
    return below_or_eq == UINT64_MAX ? x : x % (below_or_eq + 1);
}

static void health_list_push(struct health_checker **head, struct health_checker *c)
{
    c->prev = NULL;
    c->next = *head;
    if (*head)
        (*head)->prev = c;
    *head = c;
}

static void health_list_unlink(struct health_checker **head, struct health_checker *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        *head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

static char *health_strdup_or_null(const char *s) { return s ? strdup(s) : NULL; }

/* The caller of health_apply holds a reference for us to share until the next apply; ours
 * keeps the state alive (and its counters) after that. */
static struct server_state *health_state_hold(struct server_state *st)
{
    atomic_fetch_add_explicit(&st->refs, 1, memory_order_relaxed);
    return st;
}

static uint64_t health_interval(const struct health_checker *c)
{
    return c->hc.interval_ms ? c->hc.interval_ms : HEALTH_DEFAULT_MS;
}

static void health_forget_session(struct health_checker *c)
{
    SSL_SESSION_free(c->tls_session);
    c->tls_session = NULL;
}

/* --- the end of one check ------------------------------------------------------------------ */

/* After a response the connection ends cleanly: GOAWAY (RFC 9113 §6.8) and close_notify (RFC
 * 8446 §6.1), each tried once without waiting. After a failure nothing more is sent (OpenSSL
 * forbids SSL_shutdown after a fatal error). */
static void health_goodbye(struct health_checker *c)
{
    if (c->sess) {
        health_h2_goodbye(c->sess);
        sbuf_reset(&c->out);
        if (health_h2_output(c->sess, &c->out) == 0 && c->out.len)
            (void)xport_write(&c->xp, c->out.p, c->out.len);
    }
    if (c->xp.ctx) {
        ERR_clear_error();
        SSL_shutdown(c->xp.ctx);
        ERR_clear_error();
    }
}

/* Releases what the check in flight holds: session, TLS, socket, buffers, timeout. */
static void health_check_reset(struct health_checker *c)
{
    if (c->phase != HEALTH_IDLE) {
        if (c->answered)
            health_goodbye(c);
        loop_del(c->h->loop, &c->io);
        close(c->io.fd);
        c->io.fd = -1;
    }
    c->phase = HEALTH_IDLE;
    loop_timer_stop(c->h->loop, &c->timer);
    health_h2_free(c->sess);
    c->sess = NULL;
    SSL_free(c->xp.ctx);
    ERR_clear_error();
    c->xp = (struct xport){ .fd = -1 };
    c->answered = false;
    c->alert[0] = '\0';
    sbuf_free(&c->out);
    c->out_off = 0;
    free(c->buf);
    c->buf = NULL;
    c->buf_len = 0;
}

/* Applies one outcome to the shared state: `rise` successes in a row bring a down server up
 * (and start its slow-start ramp), `fall` failures in a row take an up server down. */
static void health_verdict(struct health_checker *c, bool ok, const char *reason)
{
    struct server_state *st = c->st;
    atomic_fetch_add_explicit(&st->check_total, 1, memory_order_relaxed);
    bool up = atomic_load_explicit(&st->active_up, memory_order_relaxed);
    if (ok) {
        atomic_store_explicit(&st->check_failures, 0, memory_order_relaxed);
        unsigned n = atomic_fetch_add_explicit(&st->check_successes, 1, memory_order_relaxed) + 1;
        if (!up && n >= (c->hc.rise ? c->hc.rise : 1)) {
            atomic_store_explicit(&st->up_since, loop_now(c->h->loop), memory_order_relaxed);
            /* The checks just saw it recover: an outlier ejection from its outage ends too,
             * so it rejoins now (with slow start) rather than when the ejection expires. */
            atomic_store_explicit(&st->ejected_until, 0, memory_order_relaxed);
            atomic_store_explicit(&st->consecutive_failures, 0, memory_order_relaxed);
            atomic_store_explicit(&st->active_up, true, memory_order_relaxed);
            log_info("upstream %s server %s is up (health check)", c->upstream, c->address);
        }
        return;
    }
    atomic_fetch_add_explicit(&st->check_failed_total, 1, memory_order_relaxed);
    atomic_store_explicit(&st->check_successes, 0, memory_order_relaxed);
    unsigned n = atomic_fetch_add_explicit(&st->check_failures, 1, memory_order_relaxed) + 1;
    if (up && n >= (c->hc.fall ? c->hc.fall : 1)) {
        atomic_store_explicit(&st->active_up, false, memory_order_relaxed);
        log_warn("upstream %s server %s is down (health check: %s)", c->upstream, c->address,
                 reason);
    } else {
        log_debug("upstream %s server %s: health check failed: %s", c->upstream, c->address,
                  reason);
    }
}

/* Ends the check in flight with its outcome and schedules the next one after `interval` plus
 * up to 10% jitter, so that checks started together drift apart. */
static void health_check_done(struct health_checker *c, bool ok, const char *reason)
{
    health_check_reset(c);
    health_verdict(c, ok, reason);
    uint64_t interval = health_interval(c);
    loop_timer_after(c->h->loop, &c->timer, interval + health_rand(c->h, interval / 10));
}

static const char *health_errno_reason(int err, char *out, size_t cap)
{
    if (err == ECONNREFUSED)
        return "connect refused";
    if (err == ETIMEDOUT)
        return "connect timeout";
    if (err == EHOSTUNREACH || err == ENETUNREACH)
        return "unreachable";
    if (err == ECONNRESET || err == EPIPE)
        return "connection reset";
    snprintf(out, cap, "%s", strerror(err));
    return out;
}

/* A TLS 1.3 server checks our certificate after our side of the handshake is done: its
 * "certificate required" alert surfaces as a read error, which the alert explains. */
static void health_check_fail_errno(struct health_checker *c, int err)
{
    char tmp[96];
    if (c->alert[0]) {
        snprintf(tmp, sizeof tmp, "TLS alert from the server: %s", c->alert);
        health_check_done(c, false, tmp);
        return;
    }
    health_check_done(c, false, health_errno_reason(err, tmp, sizeof tmp));
}

/* OpenSSL 3.0 names no TLS 1.3 alert: the two a misconfigured check meets get names here. */
static void health_tls_info(const SSL *ssl, int where, int ret)
{
    struct health_checker *c = SSL_get_app_data(ssl);
    if (!(where & SSL_CB_READ_ALERT) || (ret >> 8) != SSL3_AL_FATAL || !c)
        return;
    int desc = ret & 0xff;
    const char *name = SSL_alert_desc_string_long(ret);
    if (desc == SSL_AD_CERTIFICATE_REQUIRED)
        name = "certificate required";
    else if (desc == SSL_AD_NO_APPLICATION_PROTOCOL)
        name = "no application protocol";
    if (strcmp(name, "unknown") == 0)
        snprintf(c->alert, sizeof c->alert, "alert %d", desc);
    else
        snprintf(c->alert, sizeof c->alert, "%s", name);
}

/* --- one check, a state per phase ------------------------------------------------------------ */

/* Judges a complete response head by its status. Over TLS the session is kept for the next
 * check (taken now: a TLS 1.3 ticket arrives after the handshake). */
static void health_http_judge(struct health_checker *c, int status)
{
    c->answered = true;
    SSL_SESSION *sess = c->xp.ctx ? tls_client_session(c->xp.ctx) : NULL;
    if (sess) {
        health_forget_session(c);
        c->tls_session = sess;
    }
    if (status >= c->hc.status_min && status <= c->hc.status_max) {
        health_check_done(c, true, NULL);
        return;
    }
    char reason[32];
    snprintf(reason, sizeof reason, "status %d", status);
    health_check_done(c, false, reason);
}

/* HTTP/1.1: parses what has arrived. Returns true when the check is over (judged or failed). */
static bool health_h1_parse(struct health_checker *c)
{
    struct http_header headers[HEALTH_MAX_HEADERS];
    struct http_msg msg;
    memset(&msg, 0, sizeof msg);
    msg.headers = headers;
    msg.max_headers = HEALTH_MAX_HEADERS;
    const struct h1_limits lim = { .max_request_line = HEALTH_MAX_HEAD,
                                   .max_header_bytes = HEALTH_MAX_HEAD,
                                   .max_headers = HEALTH_MAX_HEADERS };
    int rc = h1_parse_response(c->buf, c->buf_len, &lim, &msg);
    if (rc > 0) {
        health_http_judge(c, msg.status);
        return true;
    }
    if (rc < 0 || c->buf_len == HEALTH_MAX_HEAD) {
        health_check_done(c, false, rc < 0 ? "malformed response" : "response head too large");
        return true;
    }
    return false;
}

/* Writes what is pending. Tried on every event, whatever the flags say: an SSL_write may wait
 * for readability, and an attempt that finds the socket full costs one EAGAIN. Returns false
 * when the check is over (failed). */
static bool health_flush(struct health_checker *c)
{
    while (c->out_off < c->out.len) {
        ssize_t n = xport_write(&c->xp, c->out.p + c->out_off, c->out.len - c->out_off);
        if (n > 0) {
            c->out_off += (size_t)n;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            c->writable = false;
            return true;
        } else if (n == 0 || errno != EINTR) {
            health_check_fail_errno(c, n == 0 ? EPIPE : errno);
            return false;
        }
    }
    sbuf_reset(&c->out);
    c->out_off = 0;
    return true;
}

/* HTTP/2: feeds N bytes to the session, sends what it answers (SETTINGS ACK...). Returns true
 * when the check is over. */
static bool health_h2_take(struct health_checker *c, size_t n)
{
    char why[200];
    int status = 0;
    int rc = health_h2_input(c->sess, c->buf, n, &c->out, &status, why, sizeof why);
    if (rc > 0) {
        health_http_judge(c, status);
        return true;
    }
    if (rc < 0) {
        /* the session's GOAWAY, if the socket takes it now (RFC 9113 §5.4.1) */
        if (c->out.len > c->out_off)
            (void)xport_write(&c->xp, c->out.p + c->out_off, c->out.len - c->out_off);
        health_check_done(c, false, why);
        return true;
    }
    return !health_flush(c);
}

/* Reads until the answer is judged, EAGAIN, EOF or an error. */
static void health_read(struct health_checker *c)
{
    if (!c->buf && !(c->buf = malloc(HEALTH_MAX_HEAD))) {
        health_check_done(c, false, "out of memory");
        return;
    }
    while (c->readable) {
        size_t at = c->sess ? 0 : c->buf_len;
        ssize_t n = xport_read(&c->xp, c->buf + at, HEALTH_MAX_HEAD - at);
        if (n > 0) {
            c->buf_len = at + (size_t)n;
            if (c->sess ? health_h2_take(c, (size_t)n) : health_h1_parse(c))
                return;
        } else if (n == 0) {
            health_check_done(c, false, "connection closed before a response");
            return;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            c->readable = false; /* wait for the next edge */
        } else if (errno != EINTR) {
            health_check_fail_errno(c, errno);
            return;
        }
    }
}

/* TALKING: sends what is pending, reads what came. */
static void health_phase_talk(struct health_checker *c)
{
    if (health_flush(c))
        health_read(c);
}

/* The request: HTTP/1.1 text, or an HTTP/2 session whose first output carries the preface,
 * SETTINGS and the request's HEADERS. */
static int health_build_request(struct health_checker *c)
{
    const char *path = c->hc.path && *c->hc.path ? c->hc.path : "/";
    const char *host = c->hc.host && *c->hc.host ? c->hc.host : c->address;
    if (c->h2) {
        c->sess = health_h2_new(c->tls_on ? "https" : "http", host, path);
        return c->sess ? health_h2_output(c->sess, &c->out) : -1;
    }
    sbuf_append_cstr(&c->out, "GET ");
    sbuf_append_cstr(&c->out, path);
    sbuf_append_cstr(&c->out, " HTTP/1.1\r\nHost: ");
    sbuf_append_cstr(&c->out, host);
    sbuf_append_cstr(&c->out, "\r\nUser-Agent: portero-health\r\nConnection: close\r\n\r\n");
    return c->out.failed ? -1 : 0;
}

static void health_begin_request(struct health_checker *c)
{
    if (health_build_request(c) < 0) {
        health_check_done(c, false, "out of memory");
        return;
    }
    c->phase = HEALTH_TALKING;
    health_phase_talk(c);
}

/* HANDSHAKING: tried on every event; OpenSSL says which readiness it waits for. A failed
 * handshake also drops the saved session (the server may have forgotten it). */
static void health_phase_handshake(struct health_checker *c)
{
    bool want_write = false;
    char why[200];
    int r = tls_handshake(c->xp.ctx, &want_write, why, sizeof why);
    if (r == 0) {
        if (want_write)
            c->writable = false;
        else
            c->readable = false;
        return;
    }
    if (r < 0) {
        char reason[256];
        health_forget_session(c);
        snprintf(reason, sizeof reason, "TLS handshake failed: %s", why);
        health_check_done(c, false, reason);
        return;
    }
    health_begin_request(c);
}

/* The socket is connected: a TCP check is done; an HTTP check starts TLS or its request. */
static void health_connected(struct health_checker *c)
{
    c->xp = (struct xport){ .fd = c->io.fd };
    if (c->hc.type == HEALTH_CHECK_TCP) {
        health_check_done(c, true, NULL);
        return;
    }
    if (!c->tls_on) {
        health_begin_request(c);
        return;
    }
    if (!c->tls) {
        health_check_done(c, false, "no TLS context");
        return;
    }
    SSL *ssl = tls_client_ssl(c->tls, c->io.fd, c->address, c->tls_session);
    if (!ssl) {
        health_check_done(c, false, "cannot start TLS");
        return;
    }
    SSL_set_app_data(ssl, c);
    SSL_set_info_callback(ssl, health_tls_info);
    c->xp.ops = &tls_xport_ops;
    c->xp.ctx = ssl;
    c->phase = HEALTH_HANDSHAKING;
    health_phase_handshake(c);
}

/* CONNECTING: an edge means the connect finished, one way or the other. */
static void health_phase_connect(struct health_checker *c)
{
    if (!c->writable && !c->readable)
        return;
    int err = sock_error(c->io.fd);
    if (err) {
        health_check_fail_errno(c, err);
        return;
    }
    health_connected(c);
}

static void health_on_event(struct loop_io *io, uint32_t events)
{
    struct health_checker *c = container_of(io, struct health_checker, io);
    if (c->phase == HEALTH_IDLE)
        return; /* a stale event of a socket closed earlier in this batch */
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        c->readable = true;
    if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
        c->writable = true;
    switch (c->phase) {
    case HEALTH_CONNECTING: health_phase_connect(c); break;
    case HEALTH_HANDSHAKING: health_phase_handshake(c); break;
    case HEALTH_TALKING: health_phase_talk(c); break;
    case HEALTH_IDLE: break;
    }
}

/* The one timer: when idle it starts the next check; during a check it is the timeout. */
static void health_on_timer(struct loop_timer *t)
{
    struct health_checker *c = container_of(t, struct health_checker, timer);
    if (c->phase == HEALTH_IDLE)
        health_check_start(c);
    else
        health_check_done(c, false, c->phase == HEALTH_HANDSHAKING ? "TLS handshake timeout"
                                                                   : "timeout");
}

static void health_check_start(struct health_checker *c)
{
    int fd = sock_connect((const struct sockaddr *)&c->addr, c->addr_len);
    if (fd < 0) {
        health_check_fail_errno(c, errno); /* loopback refusals are often immediate */
        return;
    }
    c->io.fd = fd;
    c->io.on_event = health_on_event;
    c->readable = c->writable = false;
    if (loop_add(c->h->loop, &c->io) < 0) {
        int err = errno;
        close(fd);
        c->io.fd = -1;
        health_check_fail_errno(c, err);
        return;
    }
    c->phase = HEALTH_CONNECTING;
    loop_timer_after(c->h->loop, &c->timer, c->hc.timeout_ms ? c->hc.timeout_ms : HEALTH_DEFAULT_MS);
}

/* --- checkers and reconciliation ----------------------------------------------------------- */

static void health_checker_destroy(struct health_checker *c)
{
    health_check_reset(c);
    health_forget_session(c);
    if (c->st)
        server_state_put(c->st);
    free(c->hc.path);
    free(c->hc.host);
    free(c->key);
    free(c->upstream);
    free(c->address);
    free(c);
}

/* Copies the check parameters of server SRV of UP (the snapshot is only borrowed) and takes TLS,
 * UP's client context (or NULL). A check in flight keeps its connection; the new parameters
 * apply from the next one. A session saved under another context is not resumed: resumption
 * skips verification, which the new context (a new CA, say) must do again. */
static int health_checker_configure(struct health_checker *c, const struct conf_upstream *up,
                                    const struct conf_server *srv, struct tls_client *tls)
{
    char *path = health_strdup_or_null(up->health_check.path);
    char *host = health_strdup_or_null(up->health_check.host);
    if ((up->health_check.path && !path) || (up->health_check.host && !host)) {
        free(path);
        free(host);
        return -1;
    }
    free(c->hc.path);
    free(c->hc.host);
    c->hc = up->health_check;
    c->hc.path = path;
    c->hc.host = host;
    size_t len = srv->addr_len <= sizeof c->addr ? srv->addr_len : sizeof c->addr;
    memcpy(&c->addr, &srv->addr, len);
    c->addr_len = (socklen_t)len;
    c->tls_on = up->tls.enabled;
    c->h2 = up->protocol == UPSTREAM_HTTP2;
    if (c->tls != tls)
        health_forget_session(c);
    c->tls = tls;
    return 0;
}

static struct health_checker *health_checker_new(struct health *h, const struct conf_upstream *up,
                                                 const struct conf_server *srv, const char *key,
                                                 struct server_state *st, struct tls_client *tls)
{
    struct health_checker *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->h = h;
    c->io.fd = -1;
    c->xp.fd = -1;
    c->timer.on_fire = health_on_timer;
    c->key = strdup(key);
    c->upstream = strdup(up->name);
    c->address = strdup(srv->address);
    if (!c->key || !c->upstream || !c->address || health_checker_configure(c, up, srv, tls) < 0) {
        health_checker_destroy(c);
        return NULL;
    }
    c->st = health_state_hold(st);
    health_list_push(&h->live, c);
    /* First check soon, spread so that a large config does not connect everywhere at once. */
    uint64_t spread = health_interval(c) / 4;
    loop_timer_after(h->loop, &c->timer,
                     health_rand(h, spread < HEALTH_FIRST_MAX_MS ? spread : HEALTH_FIRST_MAX_MS));
    return c;
}

static struct health_checker *health_find(struct health *h, const char *key)
{
    for (struct health_checker *c = h->live; c; c = c->next)
        if (strcmp(c->key, key) == 0)
            return c;
    return NULL;
}

static void health_free_task(struct loop_task *task)
{
    struct health *h = container_of(task, struct health, free_task);
    while (h->dead) {
        struct health_checker *c = h->dead;
        health_list_unlink(&h->dead, c);
        health_checker_destroy(c);
    }
}

/* Stops a checker now but frees it after the current batch: an event for its socket may still
 * be waiting in the batch that called health_apply. */
static void health_retire(struct health *h, struct health_checker *c)
{
    health_check_reset(c);
    health_list_unlink(&h->live, c);
    health_list_push(&h->dead, c);
    loop_defer(h->loop, &h->free_task);
}

/* Keeps (and refreshes) the checker of server S of UP, or creates it. */
static void health_apply_server(struct health *h, const struct conf_upstream *up, size_t s,
                                struct server_state *st, struct tls_client *tls)
{
    const struct conf_server *srv = &up->servers[s];
    char stack_key[512];
    size_t len = strlen(up->name) + 1 + strlen(srv->address) + 1;
    char *key = len <= sizeof stack_key ? stack_key : malloc(len);
    if (!key)
        return;
    snprintf(key, len, "%s/%s", up->name, srv->address);
    struct health_checker *c = health_find(h, key);
    if (c && !c->seen) {
        if (health_checker_configure(c, up, srv, tls) == 0 && c->st != st) {
            server_state_put(c->st);
            c->st = health_state_hold(st);
        }
    } else if (!c && !(c = health_checker_new(h, up, srv, key, st, tls))) {
        log_error("upstream %s server %s: no memory for its health check", up->name, srv->address);
    }
    if (c)
        c->seen = true; /* a duplicate address in one upstream keeps one checker */
    if (key != stack_key)
        free(key);
}

/* TLS: per upstream, its client context (NULL without tls), or NULL for none at all. */
static void health_reconcile(struct health *h, const struct config *cfg,
                             struct server_state *(*state)(void *arg, size_t u, size_t s),
                             void *arg, struct tls_client *const *tls)
{
    for (struct health_checker *c = h->live; c; c = c->next)
        c->seen = false;
    for (size_t u = 0; cfg && u < cfg->n_upstreams; u++) {
        const struct conf_upstream *up = &cfg->upstreams[u];
        for (size_t s = 0; s < up->n_servers; s++) {
            struct server_state *st = state(arg, u, s);
            if (!st)
                continue;
            if (up->health_check.enabled)
                health_apply_server(h, up, s, st, tls ? tls[u] : NULL);
            else
                atomic_store_explicit(&st->active_up, true, memory_order_relaxed);
        }
    }
    struct health_checker *c = h->live;
    while (c) {
        struct health_checker *next = c->next;
        if (!c->seen)
            health_retire(h, c);
        c = next;
    }
}

void health_apply(struct health *h, const struct config *cfg,
                  struct server_state *(*state)(void *arg, size_t u, size_t s), void *arg)
{
    health_reconcile(h, cfg, state, arg, NULL);
    runtime_unref(h->rt); /* no checker borrows from it any more */
    h->rt = NULL;
}

static struct server_state *health_runtime_state(void *arg, size_t u, size_t s)
{
    struct runtime *rt = arg;
    return rt->states[u][s];
}

/* The new runtime is held before the old one is let go, so a context pointer compared in
 * health_checker_configure cannot have been freed and reused in between. */
void health_apply_runtime(struct health *h, struct runtime *rt)
{
    struct runtime *old = h->rt;
    h->rt = runtime_ref(rt);
    health_reconcile(h, rt->cfg, health_runtime_state, rt, rt->upstream_tls);
    runtime_unref(old);
}

struct health *health_new(struct loop *loop)
{
    struct health *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->loop = loop;
    h->free_task.run = health_free_task;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    h->rng = ((uint64_t)ts.tv_sec * 1000000007ULL) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32);
    if (h->rng == 0)
        h->rng = 0x9E3779B97F4A7C15ULL; /* xorshift64 is stuck at 0 */
    return h;
}

/* Frees at once: it runs at shutdown, after loop_run returned (never from a checker's own
 * callback), so no event can still point at a checker. */
void health_free(struct health *h)
{
    if (!h)
        return;
    loop_cancel(h->loop, &h->free_task);
    health_free_task(&h->free_task);
    while (h->live) {
        struct health_checker *c = h->live;
        health_list_unlink(&h->live, c);
        health_checker_destroy(c);
    }
    runtime_unref(h->rt);
    free(h);
}
