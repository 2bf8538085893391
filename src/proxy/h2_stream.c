/* h2_stream: one HTTP/2 stream presented to its stream client as an HTTP/1.1 connection that
 * carries one request (see http/h2_bridge.h).
 *
 * Reading yields the request head synthesized from the HEADERS, then the body: raw DATA bytes
 * when the request has content-length, else chunked on the fly, ending with the client's
 * trailers. DATA bytes are given back to flow control only when the exchange reads them, so a
 * stream buffers at most its window (RFC 9113 §5.2: flow control is our backpressure).
 *
 * Writing takes the exchange's HTTP/1.1 response: the head becomes HEADERS, the body is decoded
 * into a bounded buffer that a data provider turns into DATA frames, and chunked trailers become
 * a trailing HEADERS. When the buffer is full, writev says EAGAIN; the data provider wakes the
 * exchange when it has made room. */
#include "proxy/h2_server_priv.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/client.h"
#include "proxy/exchange.h"
#include "proxy/worker.h"

/* Response heads are composed by the exchange (the origin's fields plus ours): generous bounds. */
#define H2S_RESP_HEADERS 512
/* A request body still arriving after its response is read and dropped (RFC 9113 §8.1 would
 * allow RST_STREAM(NO_ERROR), which clients such as curl report as a failed upload) up to this
 * much; past it the stream is reset. */
#define H2S_DISCARD_MAX (4u << 20)
static const struct h1_limits h2s_resp_limits = { 16384, 256 * 1024, H2S_RESP_HEADERS };

static void h2s_wake(struct h2_stream *st, bool reader)
{
    if (!st->c || st->released)
        return;
    if (reader)
        st->c->readable = true;
    else
        st->c->writable = true;
    client_stream_wake(st->c);
}

static void h2s_rst(struct h2_stream *st, uint32_t code)
{
    struct h2_server *s = st->srv;
    if (st->ng_closed || s->freeing)
        return;
    nghttp2_submit_rst_stream(s->ng, NGHTTP2_FLAG_NONE, st->id, code);
    h2s_schedule(s);
}

/* The stream no longer keeps the connection busy (its request ended or was reset). */
static void h2s_deactivate(struct h2_stream *st)
{
    struct h2_server *s = st->srv;
    if (!st->active)
        return;
    st->active = false;
    if (--s->n_active == 0)
        h2s_idle(s);
}

/* Gives the DATA bytes still held back to flow control (the connection's window would shrink
 * for good otherwise). */
static void h2s_give_back(struct h2_stream *st)
{
    if (st->in_unconsumed && !st->srv->freeing)
        nghttp2_session_consume(st->srv->ng, st->id, (size_t)st->in_unconsumed);
    st->in_unconsumed = 0;
}

/* The stream client is finished with the stream (its exchange ended or was aborted). */
static void h2s_release(struct h2_stream *st)
{
    if (st->released)
        return;
    st->released = true;
    st->in_discard = true;
    st->out_blocked = false;
    h2s_give_back(st);
    sbuf_free(&st->in_head);
    sbuf_free(&st->in_data);
    sbuf_free(&st->in_tail);
    st->in_head_off = st->in_data_off = st->in_tail_off = 0;
    st->chunk_left = 0;
    h2s_deactivate(st);
    st->srv->reap = true;
    h2s_schedule(st->srv);
}

bool h2s_any_active(const struct h2_server *s)
{
    return s->n_active > 0;
}

struct h2_stream *h2s_stream_new(struct h2_server *s, int32_t id)
{
    struct h2_stream *st = calloc(1, sizeof *st);
    if (!st)
        return NULL;
    st->srv = s;
    st->id = id;
    h2b_head_init(&st->head, H2B_REQUEST, s->max_header_bytes);
    st->next = s->streams;
    if (s->streams)
        s->streams->prev = st;
    s->streams = st;
    st->active = true;
    s->n_active++;
    /* Not idle any more, but a header block must end within header_timeout (a HEADERS frame
     * whose CONTINUATION never comes would hold the connection for ever); once the head is in,
     * the stream client's own timers take over and this expiry finds nothing to do. */
    if (!s->draining && !s->lingering && !s->final_goaway)
        loop_timer_after(s->c->w->loop, &s->c->timer, s->header_ms);
    return st;
}

bool h2s_head_pending(const struct h2_server *s)
{
    for (const struct h2_stream *st = s->streams; st; st = st->next)
        if (!st->c && !st->ng_closed && !st->released && !st->in_discard)
            return true;
    return false;
}

static void h2s_stream_unlink_free(struct h2_stream *st)
{
    struct h2_server *s = st->srv;
    if (st->prev)
        st->prev->next = st->next;
    else
        s->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    h2b_head_free(&st->head);
    sbuf_free(&st->in_head);
    sbuf_free(&st->in_data);
    sbuf_free(&st->in_tail);
    sbuf_free(&st->out_head);
    sbuf_free(&st->out_trailers);
    buf_put(st->out);
    h2s_deactivate(st);
    free(st);
}

void h2s_stream_destroy(struct h2_stream *st)
{
    if (st->c) {
        if (!st->released)
            client_close(st->c); /* aborts the exchange (logged as 499) */
        client_stream_free(st->c);
        st->c = NULL;
    }
    h2s_stream_unlink_free(st);
}

void h2s_reap(struct h2_server *s)
{
    struct h2_stream *next;
    if (!s->reap)
        return;
    s->reap = false;
    for (struct h2_stream *st = s->streams; st; st = next) {
        next = st->next;
        if (st->reject && st->c && !st->released) {
            int status = st->reject;
            st->reject = 0;
            exchange_reject(st->c, status); /* the same answer, log line and counters as HTTP/1.1 */
        }
        if (st->released && st->c) {
            client_stream_free(st->c);
            st->c = NULL;
        }
        if (st->ng_closed && !st->c)
            h2s_stream_unlink_free(st);
    }
}

/* --- request: nghttp2 -> stream client ------------------------------------------------------------- */

void h2s_stream_request(struct h2_stream *st, bool end_stream)
{
    struct h2_server *s = st->srv;
    int r = h2b_head_finish(&st->head, end_stream ? 0 : H2B_F_BODY, &st->in_head);
    st->method = st->head.method_id;
    st->in_chunked = r == 0 && st->head.body_chunked;
    h2b_head_free(&st->head);
    st->in_ended = end_stream;
    struct client *c = r == -1 ? NULL : client_stream_new(s->c);
    if (!c) {
        h2s_rst(st, NGHTTP2_INTERNAL_ERROR);
        st->in_discard = true;
        return;
    }
    c->xp.ops = &h2s_stream_xport_ops;
    c->xp.ctx = st;
    c->stream = st;
    st->c = c;
    STATS_ADD(c->w->stats.h2_streams, 1);
    if (r < 0) { /* 400 or 431, answered from the server's task (not inside nghttp2) */
        st->reject = -r;
        st->in_discard = true;
        s->reap = true;
        sbuf_free(&st->in_head);
        h2s_schedule(s);
        return;
    }
    h2s_wake(st, true);
}

void h2s_stream_trailers(struct h2_stream *st)
{
    /* With content-length framing HTTP/1.1 has no place for trailers: they are dropped. */
    if (st->in_chunked && !st->in_discard && h2b_head_finish(&st->head, 0, &st->in_tail) < 0) {
        sbuf_free(&st->in_tail);
        h2s_rst(st, NGHTTP2_PROTOCOL_ERROR);
    }
    h2b_head_free(&st->head);
    st->in_ended = true;
    h2s_wake(st, true);
}

void h2s_stream_end(struct h2_stream *st)
{
    if (st->in_chunked && !st->in_discard)
        h2b_chunk_last(&st->in_tail, NULL, 0);
    st->in_ended = true;
    h2s_wake(st, true);
}

void h2s_stream_data(struct h2_stream *st, const uint8_t *data, size_t len)
{
    struct h2_server *s = st->srv;
    if (st->in_discard) {
        nghttp2_session_consume(s->ng, st->id, len);
        if (st->released && (st->discarded += len) > H2S_DISCARD_MAX)
            h2s_rst(st, NGHTTP2_NO_ERROR); /* answered long ago: the rest is not wanted */
        return;
    }
    if (st->in_data_off && st->in_data_off >= st->in_data.len / 2) {
        memmove(st->in_data.p, st->in_data.p + st->in_data_off, st->in_data.len - st->in_data_off);
        st->in_data.len -= st->in_data_off;
        st->in_data_off = 0;
    }
    sbuf_append(&st->in_data, data, len);
    if (st->in_data.failed) {
        nghttp2_session_consume(s->ng, st->id, len);
        h2s_rst(st, NGHTTP2_INTERNAL_ERROR);
        return;
    }
    st->in_unconsumed += len;
    h2s_wake(st, true);
}

void h2s_stream_ng_closed(struct h2_stream *st)
{
    st->ng_closed = true;
    st->srv->reap = true;
    h2s_deactivate(st);
    h2s_give_back(st);
    if (st->c && !st->released)
        client_close(st->c); /* reset by the client, or a protocol error: the exchange goes */
    h2s_schedule(st->srv);
}

void h2s_stream_end_sent(struct h2_stream *st)
{
    st->end_sent = true;
}

static size_t h2s_copy(char *dst, size_t room, const char *src, size_t n)
{
    size_t k = n < room ? n : room;
    memcpy(dst, src, k);
    return k;
}

/* Copies the next piece of [head][body][tail] into OUT; returns its size (0: nothing ready) and
 * adds the DATA payload bytes among them to *DATA. */
static size_t h2s_read_piece(struct h2_stream *st, char *out, size_t room, uint64_t *data)
{
    if (st->frame_off < st->frame_len) {
        size_t k = h2s_copy(out, room, st->frame + st->frame_off, st->frame_len - st->frame_off);
        st->frame_off += (uint8_t)k;
        return k;
    }
    if (st->in_head_off < st->in_head.len) {
        size_t k = h2s_copy(out, room, st->in_head.p + st->in_head_off, st->in_head.len - st->in_head_off);
        st->in_head_off += k;
        return k;
    }
    size_t avail = st->in_data.len - st->in_data_off;
    if (st->in_chunked && !st->chunk_left && avail) {
        st->frame_len = (uint8_t)h1_chunk_header(st->frame, avail); /* one chunk per read-out run */
        st->frame_off = 0;
        st->chunk_left = avail;
        return h2s_read_piece(st, out, room, data);
    }
    if (avail) {
        size_t want = st->in_chunked && st->chunk_left < avail ? (size_t)st->chunk_left : avail;
        size_t k = h2s_copy(out, room, st->in_data.p + st->in_data_off, want);
        st->in_data_off += k;
        *data += k;
        if (st->in_chunked && (st->chunk_left -= k) == 0) {
            memcpy(st->frame, "\r\n", 2);
            st->frame_len = 2;
            st->frame_off = 0;
        }
        return k;
    }
    if (st->in_ended && st->in_tail_off < st->in_tail.len) {
        size_t k = h2s_copy(out, room, st->in_tail.p + st->in_tail_off, st->in_tail.len - st->in_tail_off);
        st->in_tail_off += k;
        return k;
    }
    return 0;
}

static ssize_t h2s_stream_read(struct xport *x, void *buf, size_t n)
{
    struct h2_stream *st = x->ctx;
    struct h2_server *s = st->srv;
    size_t got = 0, k;
    uint64_t data = 0;
    while (got < n && (k = h2s_read_piece(st, (char *)buf + got, n - got, &data)) > 0)
        got += k;
    if (st->in_data_off == st->in_data.len)
        st->in_data.len = st->in_data_off = 0;
    if (st->in_head_off && st->in_head_off == st->in_head.len) {
        sbuf_free(&st->in_head); /* the head is read once */
        st->in_head_off = 0;
    }
    if (data && st->in_unconsumed) {
        uint64_t give = data < st->in_unconsumed ? data : st->in_unconsumed;
        nghttp2_session_consume(s->ng, st->id, (size_t)give); /* opens the window: WINDOW_UPDATE */
        st->in_unconsumed -= give;
        h2s_schedule(s);
    }
    if (got)
        return (ssize_t)got;
    if (st->in_ended)
        return 0;
    errno = st->ng_closed || st->released ? ECONNRESET : EAGAIN;
    return -1;
}

/* --- response: exchange -> nghttp2 ----------------------------------------------------------------- */

static ssize_t h2s_data_read(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
                             uint32_t *flags, nghttp2_data_source *src, void *user_data)
{
    (void)user_data;
    struct h2_stream *st = src->ptr;
    size_t avail = st->out ? buf_len(st->out) : 0;
    if (!avail && !st->out_ended) {
        st->out_deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    size_t k = avail < length ? avail : length;
    if (k) {
        memcpy(buf, buf_rptr(st->out), k);
        buf_consume(st->out, (uint32_t)k);
    }
    if (k && st->out_blocked) {
        st->out_blocked = false;
        h2s_wake(st, false); /* room again: the exchange may write */
    }
    if (st->out_ended && k == avail) {
        buf_put(st->out); /* the last DATA: the buffer goes back to the pool now */
        st->out = NULL;
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        struct h2b_nv nv;
        if (st->out_trailers.len && h2b_nv_trailers(st->out_trailers.p, st->out_trailers.len, &nv) == 0) {
            if (nv.n && nghttp2_submit_trailer(ng, id, nv.nv, nv.n) == 0)
                *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM; /* the trailers' HEADERS ends the stream */
            h2b_nv_free(&nv);
        }
    }
    return (ssize_t)k;
}

static int h2s_submit_head(struct h2_stream *st, const struct http_msg *m)
{
    struct h2_server *s = st->srv;
    enum h1_body_kind kind = h1_response_body_kind(m, st->method);
    uint64_t length = kind == H1_BODY_LENGTH ? (uint64_t)m->content_length : 0;
    h2b_body_init(&st->out_body, kind, length, kind == H1_BODY_CHUNKED ? &st->out_trailers : NULL);
    st->out_ended = st->out_body.ended;
    if (!st->out_ended && !(st->out = buf_get()))
        return -1;
    struct h2b_nv nv;
    if (h2b_nv_response(m, &nv) < 0)
        return -1;
    nghttp2_data_provider prd = { .source.ptr = st, .read_callback = h2s_data_read };
    int r = nghttp2_submit_response(s->ng, st->id, nv.nv, nv.n, st->out_ended ? NULL : &prd);
    h2b_nv_free(&nv);
    st->out_started = true;
    return r == 0 ? 0 : -1;
}

/* Takes response head bytes; returns how many, or -1 (malformed, too large). */
static ssize_t h2s_take_head(struct h2_stream *st, const char *p, size_t len)
{
    size_t before = st->out_head.len, max = h2s_resp_limits.max_header_bytes + 1;
    size_t k = len < max - before ? len : max - before;
    sbuf_append(&st->out_head, p, k);
    if (st->out_head.failed)
        return -1;
    struct http_header hdrs[H2S_RESP_HEADERS];
    struct http_msg m = { .headers = hdrs, .max_headers = H2S_RESP_HEADERS };
    int r = h1_parse_response(st->out_head.p, st->out_head.len, &h2s_resp_limits, &m);
    if (r == 0)
        return k ? (ssize_t)k : -1;
    if (r < 0)
        return -1;
    size_t taken = (size_t)r - before;
    if (m.status < 200) { /* interim (100 Continue, 103): not forwarded */
        sbuf_reset(&st->out_head);
        return (ssize_t)taken;
    }
    if (h2s_submit_head(st, &m) < 0)
        return -1;
    sbuf_free(&st->out_head);
    return (ssize_t)taken;
}

/* Takes response body bytes into the bounded buffer; returns how many (0: full), or -1. */
static ssize_t h2s_take_body(struct h2_stream *st, const char *p, size_t len)
{
    if (st->out_ended)
        return -1; /* bytes past the end of the response */
    if (buf_space(st->out) < BUF_SIZE / 4 && st->out->rpos)
        buf_compact(st->out);
    size_t room = buf_space(st->out), consumed, produced;
    if (!room)
        return 0;
    int r = h2b_body_decode(&st->out_body, p, len, buf_wptr(st->out), room, &consumed, &produced);
    if (r < 0)
        return -1;
    st->out->wpos += (uint32_t)produced;
    st->out_ended = r == 1;
    return (ssize_t)consumed;
}

static void h2s_output_ready(struct h2_stream *st)
{
    struct h2_server *s = st->srv;
    if (st->out_deferred && ((st->out && buf_len(st->out)) || st->out_ended)) {
        st->out_deferred = false;
        nghttp2_session_resume_data(s->ng, st->id);
    }
    h2s_schedule(s); /* one flush for every stream written in this batch */
}

static ssize_t h2s_stream_writev(struct xport *x, const struct iovec *iov, int n)
{
    struct h2_stream *st = x->ctx;
    if (st->ng_closed || st->srv->calm) {
        errno = EPIPE;
        return -1;
    }
    size_t total = 0;
    bool full = false;
    for (int i = 0; i < n && !full; i++) {
        const char *p = iov[i].iov_base;
        size_t len = iov[i].iov_len;
        while (len) {
            ssize_t k = st->out_started ? h2s_take_body(st, p, len) : h2s_take_head(st, p, len);
            if (k < 0) {
                errno = EPROTO; /* the exchange aborts: the stream is reset */
                return -1;
            }
            if (k == 0) {
                full = true;
                break;
            }
            p += k;
            len -= (size_t)k;
            total += (size_t)k;
        }
    }
    if (full)
        st->out_blocked = true;
    if (total)
        h2s_output_ready(st);
    if (!total && full) {
        errno = EAGAIN;
        return -1;
    }
    return (ssize_t)total;
}

/* Ends a close-delimited response body (the exchange has no other way to say it). */
static int h2s_stream_shutdown_wr(struct xport *x)
{
    struct h2_stream *st = x->ctx;
    if (st->out_started && !st->out_ended && h2b_body_eof(&st->out_body) == 1) {
        st->out_ended = true;
        h2s_output_ready(st);
    }
    return 0;
}

const struct xport_ops h2s_stream_xport_ops = {
    .read = h2s_stream_read,
    .writev = h2s_stream_writev,
    .shutdown_wr = h2s_stream_shutdown_wr,
};

/* --- called by client.c ------------------------------------------------------------------------------ */

void h2s_stream_done(struct client *c)
{
    struct h2_stream *st = c->stream;
    st->done = true;
    if (st->out_started && !st->out_ended && h2b_body_eof(&st->out_body) == 1) {
        st->out_ended = true; /* a close-delimited body ends with its exchange */
        h2s_output_ready(st);
    }
    /* A request body the exchange did not read is dropped as it comes (h2s_stream_data). */
    if (!st->out_started || !st->out_ended)
        h2s_rst(st, NGHTTP2_INTERNAL_ERROR); /* should not happen: the response is incomplete */
    h2s_release(st);
}

void h2s_stream_close(struct client *c)
{
    struct h2_stream *st = c->stream;
    if (!st->end_sent)
        h2s_rst(st, NGHTTP2_INTERNAL_ERROR); /* the response will not be complete */
    h2s_release(st);
}
