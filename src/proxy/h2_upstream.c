/* h2_upstream: the HTTP/2 client bridge of an upstream connection (see the header).
 *
 * Requests: the exchange writes an HTTP/1.1 request into the bridge. The head is collected up
 * to its blank line, parsed again (h1_parse_request) and submitted as HEADERS; the body is
 * decoded from its HTTP/1.1 framing into a bounded buffer that a data source turns into DATA
 * frames as the stream's send window allows (RFC 9113 §5.2); chunked trailers become a trailing
 * HEADERS frame (§8.1).
 *
 * Responses: the frames the server sends are rendered as HTTP/1.1 bytes in `syn` (h2_bridge does
 * the head and chunk rendering), which the exchange reads like a socket. Our receive window is
 * reopened only for the DATA bytes the exchange has read (NO_AUTO_WINDOW_UPDATE plus
 * nghttp2_session_consume), so `syn` holds at most one window of body.
 *
 * Readiness: the exchange keeps edge-triggered `readable` / `writable` flags for the connection.
 * When the bridge itself creates readiness the socket will not signal (room in the request
 * buffer after a WINDOW_UPDATE, work left after a bounded read loop), it re-runs the
 * connection's event handler from a deferred task (`kick`). */
#include "proxy/h2_upstream.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include <nghttp2/nghttp2.h>

#include "core/log.h"
#include "core/sbuf.h"
#include "core/xport.h"
#include "http/h1.h"
#include "http/h2_bridge.h"
#include "proxy/upstream.h"

#define H2U_WINDOW (256 * 1024)     /* our receive window, per stream and for the connection */
#define H2U_OBUF_CAP (64 * 1024)    /* request body bytes waiting for DATA frames */
#define H2U_SEND_BATCH (64 * 1024)  /* frames gathered into one write */
#define H2U_HEAD_MAX (256 * 1024)   /* a request head longer than this is refused */
#define H2U_MAX_LIST (64 * 1024)    /* response header list size (RFC 9113 §6.5.2) */
#define H2U_READ_CHUNK (16 * 1024)  /* socket bytes per nghttp2_session_mem_recv */
#define H2U_PULL_ROUNDS 64          /* reads per event before letting other connections run */
#define H2U_SYN_COMPACT (64 * 1024) /* read bytes kept at the front of `syn` before moving */

/* The one stream in flight (one request at a time per connection). */
struct h2u_stream {
    int32_t id;                 /* 0 until the request is submitted */
    /* request, as the exchange writes it */
    struct sbuf head;           /* the head, up to and including its blank line */
    bool head_done;
    bool head_req;              /* a HEAD request: its response has no body */
    struct h2b_body body;       /* decoder of the body framing the head announced */
    struct sbuf trailers;       /* chunked trailer lines, sent as trailing HEADERS */
    char *obuf;                 /* owned: decoded body waiting for DATA (H2U_OBUF_CAP bytes) */
    size_t olen, ooff;          /* filled up to olen, sent up to ooff */
    bool body_ended;            /* the whole request message was taken from the exchange */
    bool deferred;              /* the data source said DEFERRED: resume when bytes come */
    bool end_sent;              /* END_STREAM went out */
    /* response, as the exchange reads it */
    struct h2b_head rh;         /* the header block being received */
    bool rh_open;
    struct sbuf syn;            /* synthesized HTTP/1.1 bytes, read from syn_off */
    size_t syn_off;
    size_t unconsumed;          /* DATA bytes in syn not yet given back to the window */
    bool final_seen;            /* the final (non-1xx) head is in syn: next block = trailers */
    bool chunked;               /* the body is rendered chunked (else raw, or none) */
    bool bodyless;              /* DATA is dropped: HEAD, 204, 304, or END_STREAM on the head */
    bool resp_done;             /* the whole response is in syn */
    bool closed;                /* nghttp2 closed the stream */
    bool failed;                /* reset, refused or malformed before the response was complete */
    bool refused;               /* ... and the server did not process it (RFC 9113 §8.7): REFUSED_STREAM,
                                   or above a GOAWAY's last stream id */
};

struct h2_upstream {
    nghttp2_session *sess;      /* owned */
    struct upstream_conn *uc;   /* the connection this bridge belongs to (uc->h2 == this) */
    void (*io_next)(struct loop_io *io, uint32_t events); /* the connection's own event handler */
    struct loop_task kick;      /* re-runs the handler with kick_events */
    uint32_t kick_events;
    const char *scheme;         /* :scheme, "http" or "https" */
    struct sbuf out;            /* frames the socket has not taken yet, from out_off */
    size_t out_off;
    bool told_eagain;           /* writev said EAGAIN: signal writability when room is back */
    bool dead;                  /* session failed or ended: no new request, no reuse */
    bool broken;                /* the transport failed or closed: no more I/O at all */
    bool eof;                   /* the server closed the connection */
    bool goaway;                /* GOAWAY received or sent: no new streams */
    struct h2u_stream st;
};

enum h2u_pull { H2U_PULL_MORE, H2U_PULL_DRAINED, H2U_PULL_END };

/* --- helpers ---------------------------------------------------------------------------------- */

__attribute__((format(printf, 3, 4)))
static void h2u_log(const struct h2_upstream *h, enum log_sev sev, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    log_msg(sev, "upstream %s server %s: HTTP/2: %s", h->uc->pool->up->name, h->uc->pool->server->address, msg);
}

static int h2u_die(struct h2_upstream *h, const char *why)
{
    if (!h->dead)
        h2u_log(h, LOG_SEV_WARN, "connection failed: %s", why);
    h->dead = true;
    return -1;
}

static void h2u_kick(struct h2_upstream *h, uint32_t events)
{
    h->kick_events |= events;
    loop_defer(h->uc->pool->loop, &h->kick);
}

static void h2u_kick_run(struct loop_task *task)
{
    struct h2_upstream *h = container_of(task, struct h2_upstream, kick);
    uint32_t events = h->kick_events;
    h->kick_events = 0;
    h->uc->io.on_event(&h->uc->io, events); /* may free H (h2u_detach) */
}

static void h2u_stream_clear(struct h2u_stream *st)
{
    sbuf_free(&st->head);
    sbuf_free(&st->trailers);
    sbuf_free(&st->syn);
    free(st->obuf);
    if (st->rh_open)
        h2b_head_free(&st->rh);
    memset(st, 0, sizeof *st);
}

static bool h2u_syn_empty(const struct h2u_stream *st)
{
    return st->syn_off == st->syn.len;
}

/* The stream ended cleanly for both sides and the exchange has everything: the next bytes
 * written are a new request. A failed stream stays, so that reads keep reporting the failure
 * (the exchange then closes the connection). */
static void h2u_maybe_clear(struct h2_upstream *h)
{
    struct h2u_stream *st = &h->st;
    if (st->id && st->closed && st->body_ended && st->resp_done && !st->failed && h2u_syn_empty(st))
        h2u_stream_clear(st);
}

/* --- transport ---------------------------------------------------------------------------------- */

/* Writes what nghttp2 has to send, gathered into few writes. Returns 0 (all out, or the socket
 * is full: EPOLLOUT resumes in h2u_on_io), or -1 when the transport failed. */
static int h2u_flush(struct h2_upstream *h)
{
    struct xport *inner = &h->uc->inner;
    while (!h->broken) {
        while (h->out_off < h->out.len) {
            ssize_t w = xport_write(inner, h->out.p + h->out_off, h->out.len - h->out_off);
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                return 0;
            if (w <= 0) {
                h->broken = true;
                return h2u_die(h, w < 0 ? strerror(errno) : "write failed");
            }
            h->out_off += (size_t)w;
        }
        if (h->out.cap > H2U_SEND_BATCH * 2)
            sbuf_free(&h->out); /* a rare burst: do not keep its memory on a pooled connection */
        sbuf_reset(&h->out);
        h->out_off = 0;
        while (h->out.len < H2U_SEND_BATCH) {
            const uint8_t *data;
            ssize_t n = nghttp2_session_mem_send(h->sess, &data);
            if (n < 0)
                return h2u_die(h, nghttp2_strerror((int)n));
            if (n == 0)
                break;
            sbuf_append(&h->out, data, (size_t)n);
        }
        if (h->out.failed)
            return h2u_die(h, "out of memory");
        if (h->out.len == 0)
            return 0;
    }
    return -1;
}

/* Reads one chunk from the socket into the session. */
static enum h2u_pull h2u_pull(struct h2_upstream *h)
{
    uint8_t tmp[H2U_READ_CHUNK];
    if (h->broken)
        return H2U_PULL_END;
    ssize_t r = xport_read(&h->uc->inner, tmp, sizeof tmp);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return H2U_PULL_DRAINED;
    if (r < 0 && errno == EINTR)
        return H2U_PULL_MORE;
    if (r <= 0) {
        h->broken = h->dead = true;
        h->eof = r == 0;
        if (r < 0)
            h2u_log(h, LOG_SEV_INFO, "read failed: %s", strerror(errno));
        return H2U_PULL_END;
    }
    ssize_t k = nghttp2_session_mem_recv(h->sess, tmp, (size_t)r);
    if (k < 0) {
        h2u_die(h, nghttp2_strerror((int)k)); /* nghttp2 queued a GOAWAY: flushed by the caller */
        return H2U_PULL_END;
    }
    return (size_t)r < sizeof tmp ? H2U_PULL_DRAINED : H2U_PULL_MORE; /* short read = drained */
}

/* Reads until the socket is drained (bounded: a busy server cannot hold the worker). */
static void h2u_pull_all(struct h2_upstream *h)
{
    for (int i = 0; i < H2U_PULL_ROUNDS; i++)
        if (h2u_pull(h) != H2U_PULL_MORE)
            return;
    h2u_kick(h, EPOLLIN);
}

/* --- nghttp2 callbacks: the response ------------------------------------------------------------ */

static int h2u_on_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    (void)s;
    struct h2_upstream *h = ud;
    struct h2u_stream *st = &h->st;
    if (f->hd.type != NGHTTP2_HEADERS || !st->id || f->hd.stream_id != st->id)
        return 0;
    if (st->rh_open)
        h2b_head_free(&st->rh);
    h2b_head_init(&st->rh, st->final_seen ? H2B_TRAILERS : H2B_RESPONSE, H2U_MAX_LIST);
    st->rh_open = true;
    return 0;
}

static int h2u_on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                         const uint8_t *value, size_t vlen, uint8_t flags, void *ud)
{
    (void)s;
    (void)flags;
    struct h2_upstream *h = ud;
    struct h2u_stream *st = &h->st;
    if (!st->id || f->hd.stream_id != st->id || !st->rh_open)
        return 0;
    if (h2b_head_add(&st->rh, name, nlen, value, vlen) == 0)
        return 0;
    h2u_log(h, LOG_SEV_INFO, "malformed response field \"%.*s\"", (int)(nlen < 64 ? nlen : 64), (const char *)name);
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* RST_STREAM; the close marks the stream failed */
}

/* A complete header block on our stream: the response head (1xx included) or the trailers. */
static void h2u_on_block(struct h2_upstream *h, bool end_stream)
{
    struct h2u_stream *st = &h->st;
    int r = 0;
    if (!st->rh_open)
        return;
    if (!st->final_seen) {
        unsigned flags = (end_stream ? 0 : H2B_F_BODY) | (st->head_req ? H2B_F_HEAD : 0);
        r = h2b_head_finish(&st->rh, flags, &st->syn);
        if (r == 0 && st->rh.status >= 200) {
            st->final_seen = true;
            st->bodyless = end_stream || st->head_req || st->rh.status == 204 || st->rh.status == 304;
            st->chunked = !st->bodyless && st->rh.body_chunked;
            st->resp_done = end_stream;
        }
    } else {
        /* Trailers end the stream (§8.1). A raw (content-length) body has no place for them. */
        if (st->chunked)
            r = h2b_head_finish(&st->rh, 0, &st->syn);
        st->resp_done = true;
    }
    h2b_head_free(&st->rh);
    st->rh_open = false;
    if (r < 0 || st->syn.failed) {
        h2u_log(h, LOG_SEV_INFO, "malformed response header block");
        st->failed = true;
        nghttp2_submit_rst_stream(h->sess, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_PROTOCOL_ERROR);
    }
}

static int h2u_on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    (void)s;
    struct h2_upstream *h = ud;
    struct h2u_stream *st = &h->st;
    if (f->hd.type == NGHTTP2_GOAWAY) {
        h->goaway = true; /* streams above its last id are closed by nghttp2 (refused) */
        return 0;
    }
    if (!st->id || f->hd.stream_id != st->id || st->failed)
        return 0;
    bool end = f->hd.flags & NGHTTP2_FLAG_END_STREAM;
    if (f->hd.type == NGHTTP2_HEADERS)
        h2u_on_block(h, end);
    else if (f->hd.type == NGHTTP2_DATA && end && !st->resp_done) {
        if (st->chunked)
            h2b_chunk_last(&st->syn, "", 0);
        st->resp_done = true;
    }
    return 0;
}

static int h2u_on_data(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data, size_t len, void *ud)
{
    (void)flags;
    struct h2_upstream *h = ud;
    struct h2u_stream *st = &h->st;
    if (!st->id || sid != st->id || st->bodyless || !st->final_seen || st->failed) {
        nghttp2_session_consume(s, sid, len); /* dropped: give the window back at once */
        return 0;
    }
    if (st->chunked)
        h2b_chunk_append(&st->syn, data, len);
    else
        sbuf_append(&st->syn, data, len);
    st->unconsumed += len;
    return st->syn.failed ? NGHTTP2_ERR_CALLBACK_FAILURE : 0;
}

static int h2u_on_stream_close(nghttp2_session *s, int32_t sid, uint32_t error_code, void *ud)
{
    (void)s;
    struct h2_upstream *h = ud;
    struct h2u_stream *st = &h->st;
    if (!st->id || sid != st->id)
        return 0;
    st->closed = true;
    if (!st->resp_done && !st->failed) {
        st->failed = true;
        st->refused = error_code == NGHTTP2_REFUSED_STREAM; /* nghttp2 uses it for GOAWAY too */
        h2u_log(h, LOG_SEV_INFO, "stream %d closed before the response was complete: %s", (int)sid,
                nghttp2_http2_strerror(error_code));
    }
    return 0;
}

static int h2u_on_frame_send(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    (void)s;
    struct h2_upstream *h = ud;
    if (f->hd.type == NGHTTP2_GOAWAY)
        h->goaway = true;
    if (h->st.id && f->hd.stream_id == h->st.id && (f->hd.flags & NGHTTP2_FLAG_END_STREAM) &&
        (f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA))
        h->st.end_sent = true;
    return 0;
}

static int h2u_on_frame_not_send(nghttp2_session *s, const nghttp2_frame *f, int err, void *ud)
{
    (void)s;
    struct h2_upstream *h = ud;
    if (h->st.id && f->hd.stream_id == h->st.id && f->hd.type == NGHTTP2_HEADERS && !h->st.failed) {
        h->st.failed = true;
        h2u_log(h, LOG_SEV_INFO, "request not sent: %s", nghttp2_strerror(err));
    }
    return 0;
}

/* --- the request -------------------------------------------------------------------------------- */

static int h2u_send_trailers(struct h2_upstream *h)
{
    struct h2b_nv nv = { 0 };
    if (h2b_nv_trailers(h->st.trailers.p, h->st.trailers.len, &nv) < 0)
        return -1;
    int r = nv.n ? nghttp2_submit_trailer(h->sess, h->st.id, nv.nv, nv.n) : -1;
    h2b_nv_free(&nv);
    return r;
}

/* nghttp2 asks for DATA payload: what the exchange wrote, then EOF (and trailers). */
static ssize_t h2u_data_source(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t length, uint32_t *flags,
                               nghttp2_data_source *src, void *ud)
{
    (void)s;
    (void)sid;
    (void)src;
    struct h2_upstream *h = ud;
    struct h2u_stream *st = &h->st;
    size_t avail = st->olen - st->ooff;
    if (!avail && !st->body_ended) {
        st->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    size_t k = avail < length ? avail : length;
    if (k)
        memcpy(buf, st->obuf + st->ooff, k);
    st->ooff += k;
    if (k && h->told_eagain) {
        h->told_eagain = false;
        h2u_kick(h, EPOLLOUT); /* room again for the exchange's next write */
    }
    if (st->body_ended && st->ooff == st->olen) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (st->trailers.len && h2u_send_trailers(h) == 0)
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM; /* the trailing HEADERS carries END_STREAM */
    }
    return (ssize_t)k;
}

/* NV plus "te: trailers" (RFC 9113 §8.2.2; gRPC servers refuse requests without it). */
static int32_t h2u_submit_nv(struct h2_upstream *h, const struct h2b_nv *nv, bool body)
{
    nghttp2_nv *all = malloc((nv->n + 1) * sizeof *all);
    if (!all)
        return NGHTTP2_ERR_NOMEM;
    size_t n = 0;
    for (size_t i = 0; i < nv->n; i++)
        if (!(nv->nv[i].namelen == 2 && memcmp(nv->nv[i].name, "te", 2) == 0))
            all[n++] = nv->nv[i];
    all[n++] = (nghttp2_nv){ (uint8_t *)"te", (uint8_t *)"trailers", 2, 8, NGHTTP2_NV_FLAG_NONE };
    nghttp2_data_provider prd = { .source.ptr = h, .read_callback = h2u_data_source };
    int32_t id = nghttp2_submit_request(h->sess, NULL, all, n, body ? &prd : NULL, h);
    free(all);
    return id;
}

/* The head is complete: parse it again and submit HEADERS. 0, or -1 with errno. */
static int h2u_submit(struct h2_upstream *h)
{
    struct h2u_stream *st = &h->st;
    uint32_t lines = 1;
    for (size_t i = 0; i + 1 < st->head.len; i++)
        lines += st->head.p[i] == '\r' && st->head.p[i + 1] == '\n';
    struct http_header *hdrs = calloc(lines, sizeof *hdrs);
    struct http_msg req = { .headers = hdrs, .max_headers = lines };
    struct h1_limits lim = { (uint32_t)st->head.len, (uint32_t)st->head.len, lines };
    struct h2b_nv nv = { 0 };
    int r = hdrs ? h1_parse_request(st->head.p, st->head.len, &lim, &req) : -1;
    if (r <= 0 || h2b_nv_request(&req, h->scheme, &nv) < 0) {
        free(hdrs);
        h2u_log(h, LOG_SEV_WARN, "cannot convert the request head (%d)", r);
        errno = EPROTO;
        return -1;
    }
    enum h1_body_kind kind = h1_request_body_kind(&req);
    uint64_t length = kind == H1_BODY_LENGTH ? (uint64_t)req.content_length : 0;
    st->head_req = req.method_id == HTTP_METHOD_HEAD;
    st->body_ended = kind == H1_BODY_NONE || (kind == H1_BODY_LENGTH && length == 0);
    h2b_body_init(&st->body, kind, length, &st->trailers);
    free(hdrs);
    int32_t id = h2u_submit_nv(h, &nv, !st->body_ended);
    h2b_nv_free(&nv);
    if (id < 0) {
        h2u_log(h, LOG_SEV_INFO, "cannot start a stream: %s", nghttp2_strerror(id));
        h->goaway = true; /* ids spent or GOAWAY: this connection takes no more requests */
        st->refused = true;
        errno = ECONNREFUSED; /* nothing was sent: safe to send elsewhere */
        return -1;
    }
    st->id = id;
    return 0;
}

/* Collects the head the exchange writes; returns the bytes of P taken, or -1 with errno. */
static ssize_t h2u_head_take(struct h2_upstream *h, const char *p, size_t len)
{
    struct h2u_stream *st = &h->st;
    size_t old = st->head.len;
    sbuf_append(&st->head, p, len);
    if (st->head.failed) {
        errno = ENOMEM;
        return -1;
    }
    size_t from = old > 3 ? old - 3 : 0;
    const char *end = memmem(st->head.p + from, st->head.len - from, "\r\n\r\n", 4);
    if (!end) {
        if (st->head.len <= H2U_HEAD_MAX)
            return (ssize_t)len;
        errno = EMSGSIZE;
        return -1;
    }
    st->head.len = (size_t)(end - st->head.p) + 4;
    st->head_done = true;
    if (h2u_submit(h) < 0)
        return -1;
    return (ssize_t)(st->head.len - old);
}

/* Decodes body bytes into obuf; returns the bytes of P taken (0: obuf full), or -1 with errno. */
static ssize_t h2u_body_take(struct h2_upstream *h, const char *p, size_t len)
{
    struct h2u_stream *st = &h->st;
    if (!st->obuf && !(st->obuf = malloc(H2U_OBUF_CAP))) {
        errno = ENOMEM;
        return -1;
    }
    if (st->ooff) {
        memmove(st->obuf, st->obuf + st->ooff, st->olen - st->ooff);
        st->olen -= st->ooff;
        st->ooff = 0;
    }
    size_t room = H2U_OBUF_CAP - st->olen, used = 0, made = 0;
    if (!room)
        return 0;
    int r = h2b_body_decode(&st->body, p, len, st->obuf + st->olen, room, &used, &made);
    if (r < 0) {
        h2u_log(h, LOG_SEV_WARN, "malformed request body framing");
        errno = EPROTO;
        return -1;
    }
    st->olen += made;
    if (r == 1) {
        st->body_ended = true;
        used = len; /* nothing follows a message on this stream */
    }
    if ((made || r == 1) && st->deferred) {
        st->deferred = false;
        nghttp2_session_resume_data(h->sess, st->id);
    }
    return (ssize_t)used;
}

static ssize_t h2u_take(struct h2_upstream *h, const char *p, size_t len)
{
    struct h2u_stream *st = &h->st;
    if (!st->head_done)
        return h2u_head_take(h, p, len);
    if (st->body_ended || st->closed)
        return (ssize_t)len; /* the server ended the stream early (§8.1): nobody wants the rest */
    return h2u_body_take(h, p, len);
}

/* --- the xport the exchange sees ------------------------------------------------------------- */

/* Copies synthesized bytes out, giving DATA bytes back to the flow-control windows. */
static size_t h2u_syn_take(struct h2_upstream *h, char *out, size_t n)
{
    struct h2u_stream *st = &h->st;
    size_t avail = st->syn.len - st->syn_off;
    size_t k = avail < n ? avail : n;
    if (!k)
        return 0;
    memcpy(out, st->syn.p + st->syn_off, k);
    st->syn_off += k;
    bool empty = h2u_syn_empty(st);
    if (empty) {
        sbuf_reset(&st->syn);
        st->syn_off = 0;
    } else if (st->syn_off >= H2U_SYN_COMPACT && st->syn_off * 2 >= st->syn.len) {
        memmove(st->syn.p, st->syn.p + st->syn_off, st->syn.len - st->syn_off);
        st->syn.len -= st->syn_off;
        st->syn_off = 0;
    }
    /* Framing bytes are counted as data until syn is empty, then the rest is given back: the
     * window reopens at most a chunk header early, and never leaks. */
    size_t ack = empty || k > st->unconsumed ? st->unconsumed : k;
    if (ack) {
        st->unconsumed -= ack;
        nghttp2_session_consume(h->sess, st->id, ack);
    }
    return k;
}

/* No more bytes will come for the current stream. */
static bool h2u_over(const struct h2_upstream *h)
{
    return h->st.resp_done || h->st.failed || h->dead;
}

/* What read says when it has no byte to give. */
static ssize_t h2u_read_none(const struct h2_upstream *h)
{
    const struct h2u_stream *st = &h->st;
    if (st->failed) {
        errno = st->refused ? ECONNREFUSED : ECONNRESET; /* the exchange answers 502 or retries */
        return -1;
    }
    if (st->resp_done) {
        errno = EAGAIN;
        return -1;
    }
    if (h->eof || (!st->id && (h->goaway || h->dead)))
        return 0; /* like a closed HTTP/1.1 connection: "closed before responding" */
    if (h->dead) {
        errno = ECONNRESET;
        return -1;
    }
    errno = EAGAIN;
    return -1;
}

static ssize_t h2u_read(struct xport *x, void *buf, size_t n)
{
    struct h2_upstream *h = x->ctx;
    h2u_maybe_clear(h);
    size_t got = h2u_syn_take(h, buf, n);
    enum h2u_pull pr = H2U_PULL_MORE;
    for (int round = 0; got < n && pr == H2U_PULL_MORE && !h2u_over(h); round++) {
        if (round == H2U_PULL_ROUNDS) {
            h2u_kick(h, EPOLLIN); /* a short read must mean drained: come back for the rest */
            break;
        }
        pr = h2u_pull(h);
        got += h2u_syn_take(h, (char *)buf + got, n - got);
    }
    h2u_flush(h); /* WINDOW_UPDATE for what was read, SETTINGS / PING acknowledgements */
    return got ? (ssize_t)got : h2u_read_none(h);
}

static ssize_t h2u_writev(struct xport *x, const struct iovec *iov, int n)
{
    struct h2_upstream *h = x->ctx;
    h2u_maybe_clear(h);
    h->told_eagain = false;
    if (h->st.failed || h->dead) {
        errno = h->st.refused ? ECONNREFUSED : h->st.failed ? ECONNRESET : EPIPE;
        return -1;
    }
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        const char *p = iov[i].iov_base;
        size_t len = iov[i].iov_len;
        while (len) {
            ssize_t k = h2u_take(h, p, len);
            if (k < 0) {
                h->st.failed = true;
                if (total)
                    goto out;
                return -1;
            }
            if (k == 0)
                goto out;
            total += (size_t)k;
            p += k;
            len -= (size_t)k;
        }
    }
out:
    if (h2u_flush(h) < 0 && !total) {
        errno = EPIPE;
        return -1;
    }
    if (total)
        return (ssize_t)total;
    h->told_eagain = true;
    errno = EAGAIN;
    return -1;
}

/* Ends the request body where it stands (END_STREAM). */
static int h2u_shutdown_wr(struct xport *x)
{
    struct h2_upstream *h = x->ctx;
    struct h2u_stream *st = &h->st;
    if (!st->id || st->body_ended)
        return 0;
    st->body_ended = true;
    if (st->deferred) {
        st->deferred = false;
        nghttp2_session_resume_data(h->sess, st->id);
    }
    return h2u_flush(h);
}

static const struct xport_ops h2u_xport_ops = {
    .read = h2u_read,
    .writev = h2u_writev,
    .shutdown_wr = h2u_shutdown_wr,
};

/* --- the connection ------------------------------------------------------------------------------ */

/* In front of the connection's handler: frames are read and written here whatever the exchange
 * is doing (WINDOW_UPDATE for the request must not wait for the response to be read; frames
 * queued after the request was taken go out when the socket drains). */
static void h2u_on_io(struct loop_io *io, uint32_t events)
{
    struct upstream_conn *uc = container_of(io, struct upstream_conn, io);
    struct h2_upstream *h = uc->h2;
    if (!h)
        return;
    if (!uc->closed) {
        if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
            h2u_pull_all(h);
        h2u_flush(h);
    }
    h->io_next(io, events);
}

static int h2u_session_new(struct h2_upstream *h)
{
    nghttp2_session_callbacks *cb;
    nghttp2_option *opt;
    if (nghttp2_session_callbacks_new(&cb) != 0)
        return -1;
    if (nghttp2_option_new(&opt) != 0) {
        nghttp2_session_callbacks_del(cb);
        return -1;
    }
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, h2u_on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, h2u_on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, h2u_on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, h2u_on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, h2u_on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, h2u_on_frame_send);
    nghttp2_session_callbacks_set_on_frame_not_send_callback(cb, h2u_on_frame_not_send);
    nghttp2_option_set_no_auto_window_update(opt, 1); /* the window follows the exchange's reads */
    int r = nghttp2_session_client_new2(&h->sess, cb, h, opt);
    nghttp2_session_callbacks_del(cb);
    nghttp2_option_del(opt);
    if (r != 0)
        return -1;
    const nghttp2_settings_entry iv[] = {
        { NGHTTP2_SETTINGS_ENABLE_PUSH, 0 },
        { NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2U_WINDOW },
        { NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, H2U_MAX_LIST },
    };
    /* The client preface goes out with the first send (nghttp2 writes it for client sessions). */
    if (nghttp2_submit_settings(h->sess, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]) != 0 ||
        nghttp2_session_set_local_window_size(h->sess, NGHTTP2_FLAG_NONE, 0, H2U_WINDOW) != 0) {
        nghttp2_session_del(h->sess);
        return -1;
    }
    return 0;
}

int h2u_attach(struct upstream_conn *uc)
{
    struct h2_upstream *h = calloc(1, sizeof *h);
    if (!h)
        return -1;
    h->uc = uc;
    h->scheme = uc->pool->up->tls.enabled ? "https" : "http";
    h->kick.run = h2u_kick_run;
    if (h2u_session_new(h) < 0) {
        free(h);
        return -1;
    }
    uc->inner = uc->xp;
    uc->xp = (struct xport){ .fd = uc->inner.fd, .ops = &h2u_xport_ops, .ctx = h };
    h->io_next = uc->io.on_event;
    uc->io.on_event = h2u_on_io;
    uc->h2 = h;
    if (h2u_flush(h) < 0) {
        h2u_detach(uc);
        return -1;
    }
    return 0;
}

void h2u_detach(struct upstream_conn *uc)
{
    struct h2_upstream *h = uc->h2;
    if (!h)
        return;
    if (!h->broken && !h->goaway && nghttp2_session_terminate_session(h->sess, NGHTTP2_NO_ERROR) == 0)
        h2u_flush(h); /* a courtesy GOAWAY, if the socket takes it now */
    loop_cancel(uc->pool->loop, &h->kick);
    uc->xp = uc->inner;
    uc->io.on_event = h->io_next;
    uc->h2 = NULL;
    nghttp2_session_del(h->sess);
    h2u_stream_clear(&h->st);
    sbuf_free(&h->out);
    free(h);
}

bool h2u_reusable(const struct upstream_conn *uc)
{
    const struct h2_upstream *h = uc->h2;
    if (!h || h->dead || h->goaway)
        return false;
    const struct h2u_stream *st = &h->st;
    if (st->id && !(st->closed && st->resp_done && !st->failed && st->body_ended && h2u_syn_empty(st)))
        return false;
    if (!st->id && st->head.len)
        return false; /* half a head written: the exchange gave up mid-request */
    return nghttp2_session_check_request_allowed(h->sess) != 0;
}
