/* h2_server: the nghttp2 server session on one client connection (RFC 9113).
 *
 * nghttp2 does the framing, HPACK, flow control and the protocol's own checks; this file moves
 * bytes between the connection's xport and the session, keeps the flood defences and timeouts,
 * and hands each request stream to h2_stream.c. Everything the session wants to send is written
 * from one deferred task, so many streams written in one batch of events leave in one write. */
#include "proxy/h2_server_priv.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/sock.h"
#include "proxy/client.h"
#include "proxy/worker.h"

/* Bounded work per event: past this much input, the rest waits for a deferred run so that one
 * busy connection does not starve the others on the worker. */
#define H2S_READ_BUDGET (256 * 1024)
#define H2S_LINGER_MS 2000
#define H2S_LINGER_MAX_BYTES (1u << 20)
#define H2S_DRAIN_NOTICE_MS 1000 /* between the shutdown notice and the last GOAWAY (~1 RTT+) */
#define H2S_CONN_WINDOW_MAX (16u << 20)

static void h2s_task(struct loop_task *task);

void h2s_schedule(struct h2_server *s)
{
    if (!s->freeing)
        loop_defer(s->c->w->loop, &s->task);
}

static struct loop *h2s_loop(const struct h2_server *s) { return s->c->w->loop; }

void h2s_idle(struct h2_server *s)
{
    if (!s->draining && !s->lingering && !s->calm && !s->freeing && !s->final_goaway)
        loop_timer_after(h2s_loop(s), &s->c->timer, s->keepalive_ms);
}

/* --- flood defences ---------------------------------------------------------------------------------- */

/* A defence fired: GOAWAY(ENHANCE_YOUR_CALM), and the connection closes once it is written. Other
 * connections are not affected. */
static int h2s_calm(struct h2_server *s, const char *what)
{
    if (!s->calm) {
        char ip[48];
        s->calm = true;
        sock_format_ip(&s->c->peer.sa, ip, sizeof ip);
        log_info("client %s: HTTP/2 %s flood: GOAWAY and close", ip, what);
        STATS_ADD(s->c->w->stats.h2_flood_closed, 1);
        nghttp2_session_terminate_session(s->ng, NGHTTP2_ENHANCE_YOUR_CALM);
    }
    return NGHTTP2_ERR_CALLBACK_FAILURE; /* stop processing what this client sent */
}

/* Counts frames that cost us work but carry no request: resets (rapid reset, CVE-2023-44487) and
 * control or empty frames (SETTINGS, PING, PRIORITY, WINDOW_UPDATE, empty DATA / HEADERS /
 * CONTINUATION floods), each over flood_window. */
static int h2s_on_begin_frame(nghttp2_session *ng, const nghttp2_frame_hd *hd, void *user_data)
{
    (void)ng;
    struct h2_server *s = user_data;
    uint64_t now = loop_now(h2s_loop(s));
    if (now - s->flood_start >= s->flood_window_ms) {
        s->flood_start = now;
        s->n_resets = s->n_control = 0;
    }
    if (!s->got_frame) {
        s->got_frame = true; /* the preface came: from now on the idle timeout applies */
        if (!h2s_any_active(s))
            loop_timer_after(h2s_loop(s), &s->c->timer, s->keepalive_ms);
    }
    bool control = false;
    switch (hd->type) {
    case NGHTTP2_RST_STREAM:
        if (++s->n_resets > s->max_resets)
            return h2s_calm(s, "RST_STREAM");
        break;
    case NGHTTP2_WINDOW_UPDATE:
        /* a client reading our DATA sends these in step with it: only the excess counts */
        if (s->data_credit)
            s->data_credit--;
        else
            control = true;
        break;
    case NGHTTP2_SETTINGS:
    case NGHTTP2_PING:
    case NGHTTP2_PRIORITY:
        control = true;
        break;
    case NGHTTP2_DATA:
        control = hd->length == 0 && !(hd->flags & NGHTTP2_FLAG_END_STREAM);
        break;
    case NGHTTP2_HEADERS:
    case NGHTTP2_CONTINUATION:
        control = hd->length == 0;
        break;
    default:
        break;
    }
    if (control && ++s->n_control > s->max_control)
        return h2s_calm(s, "control frame");
    return 0;
}

static int h2s_on_invalid_frame(nghttp2_session *ng, const nghttp2_frame *frame, int err, void *user_data)
{
    (void)ng;
    (void)frame;
    (void)err;
    struct h2_server *s = user_data;
    /* each makes us reset a stream: bounded like the client's own resets */
    if (++s->n_resets > s->max_resets)
        return h2s_calm(s, "invalid frame");
    return 0;
}

/* --- session callbacks ------------------------------------------------------------------------------- */

static struct h2_stream *h2s_stream_of(nghttp2_session *ng, int32_t id)
{
    return nghttp2_session_get_stream_user_data(ng, id);
}

static int h2s_on_begin_headers(nghttp2_session *ng, const nghttp2_frame *frame, void *user_data)
{
    struct h2_server *s = user_data;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    if (frame->headers.cat == NGHTTP2_HCAT_HEADERS) { /* trailers of a request */
        struct h2_stream *st = h2s_stream_of(ng, frame->hd.stream_id);
        if (st)
            h2b_head_init(&st->head, H2B_TRAILERS, s->max_header_bytes);
        return 0;
    }
    if (frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    struct h2_stream *st = h2s_stream_new(s, frame->hd.stream_id);
    if (!st)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* RST_STREAM(INTERNAL_ERROR) */
    nghttp2_session_set_stream_user_data(ng, frame->hd.stream_id, st);
    return 0;
}

/* RFC 9113 §6.5.2: the header list is bounded (h2b_head_add keeps -431 and stores no more);
 * the block is still decoded to the end to keep HPACK in step, then answered 431. */
static int h2s_on_header(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name, size_t nlen,
                         const uint8_t *value, size_t vlen, uint8_t flags, void *user_data)
{
    (void)flags;
    (void)user_data;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    struct h2_stream *st = h2s_stream_of(ng, frame->hd.stream_id);
    if (st && !st->in_discard)
        h2b_head_add(&st->head, name, nlen, value, vlen);
    return 0;
}

static int h2s_on_frame_recv(nghttp2_session *ng, const nghttp2_frame *frame, void *user_data)
{
    (void)user_data;
    struct h2_stream *st = frame->hd.stream_id ? h2s_stream_of(ng, frame->hd.stream_id) : NULL;
    bool end_stream = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
    if (!st)
        return 0;
    if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST)
        h2s_stream_request(st, end_stream);
    else if (frame->hd.type == NGHTTP2_HEADERS && end_stream)
        h2s_stream_trailers(st);
    else if (frame->hd.type == NGHTTP2_DATA && end_stream)
        h2s_stream_end(st);
    return 0;
}

static int h2s_on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
                             void *user_data)
{
    (void)flags;
    (void)user_data;
    struct h2_stream *st = h2s_stream_of(ng, id);
    if (st)
        h2s_stream_data(st, data, len);
    else
        nghttp2_session_consume(ng, id, len);
    return 0;
}

static int h2s_on_frame_send(nghttp2_session *ng, const nghttp2_frame *frame, void *user_data)
{
    struct h2_server *s = user_data;
    if (frame->hd.type == NGHTTP2_DATA && s->data_credit < 4 * s->max_control)
        s->data_credit++;
    if ((frame->hd.type == NGHTTP2_DATA || frame->hd.type == NGHTTP2_HEADERS) &&
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        struct h2_stream *st = h2s_stream_of(ng, frame->hd.stream_id);
        if (st)
            h2s_stream_end_sent(st);
    }
    return 0;
}

static int h2s_on_stream_close(nghttp2_session *ng, int32_t id, uint32_t error_code, void *user_data)
{
    (void)error_code;
    struct h2_server *s = user_data;
    struct h2_stream *st = s->freeing ? NULL : h2s_stream_of(ng, id);
    if (st)
        h2s_stream_ng_closed(st);
    return 0;
}

static nghttp2_session_callbacks *h2s_callbacks(void)
{
    nghttp2_session_callbacks *cb;
    if (nghttp2_session_callbacks_new(&cb) != 0)
        return NULL;
    nghttp2_session_callbacks_set_on_begin_frame_callback(cb, h2s_on_begin_frame);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, h2s_on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, h2s_on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, h2s_on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, h2s_on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, h2s_on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, h2s_on_stream_close);
    nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cb, h2s_on_invalid_frame);
    return cb;
}

/* --- I/O ------------------------------------------------------------------------------------------------- */

/* Feeds what the connection has (bounded). Returns 0, or -1 when the connection must close now. */
static int h2s_read(struct h2_server *s)
{
    struct client *c = s->c;
    uint8_t buf[16384];
    size_t budget = H2S_READ_BUDGET;
    while (c->readable && !s->calm && budget) {
        ssize_t n = xport_read(&c->xp, buf, sizeof buf);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            c->readable = false;
            break;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1; /* the client closed or reset: its streams go with it */
        if ((size_t)n < sizeof buf && !c->rdhup)
            c->readable = false;
        ssize_t r = nghttp2_session_mem_recv(s->ng, buf, (size_t)n);
        if (r < 0 && !s->calm) {
            if (r == NGHTTP2_ERR_FLOODED) /* nghttp2's own defence (unanswered SETTINGS / PING) */
                STATS_ADD(c->w->stats.h2_flood_closed, 1);
            log_debug("HTTP/2 session: %s", nghttp2_strerror((int)r));
            return -1; /* bad preface, flood detected by nghttp2, out of memory */
        }
        budget -= (size_t)n < budget ? (size_t)n : budget;
    }
    if (c->readable && !s->calm)
        h2s_schedule(s); /* more waits: after the other connections had their turn */
    return 0;
}

/* Writes what the session has to send, through one buffer. Returns 0, or -1 (write failed). */
static int h2s_flush(struct h2_server *s)
{
    struct client *c = s->c;
    for (;;) {
        if (!s->wb && !(s->wb = buf_get()))
            return -1;
        if (!buf_space(s->wb))
            buf_compact(s->wb);
        while (buf_space(s->wb)) {
            if (!s->pend_len) {
                ssize_t k = nghttp2_session_mem_send(s->ng, &s->pend);
                if (k < 0)
                    return -1;
                if (k == 0)
                    break;
                s->pend_len = (size_t)k;
            }
            size_t take = s->pend_len < buf_space(s->wb) ? s->pend_len : buf_space(s->wb);
            memcpy(buf_wptr(s->wb), s->pend, take);
            s->wb->wpos += (uint32_t)take;
            s->pend += take;
            s->pend_len -= take;
        }
        if (!buf_len(s->wb) || !c->writable)
            break;
        ssize_t w = xport_write(&c->xp, buf_rptr(s->wb), buf_len(s->wb));
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            c->writable = false;
            break;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        buf_consume(s->wb, (uint32_t)w);
    }
    if (!buf_len(s->wb) && !s->pend_len) {
        buf_put(s->wb); /* idle costs nothing */
        s->wb = NULL;
    }
    return 0;
}

static bool h2s_output_empty(const struct h2_server *s)
{
    return !s->wb && !s->pend_len && !nghttp2_session_want_write(s->ng);
}

/* Our last frame is out: FIN, then drop what the client still sends for a short while, so that
 * closing does not turn into a reset that destroys the GOAWAY before the client read it. */
static void h2s_linger(struct h2_server *s)
{
    struct client *c = s->c;
    if (c->rdhup || xport_shutdown_wr(&c->xp) < 0) {
        client_close(c);
        return;
    }
    s->lingering = true;
    loop_timer_after(h2s_loop(s), &c->timer, H2S_LINGER_MS);
}

static void h2s_linger_read(struct h2_server *s)
{
    char scratch[4096];
    uint32_t total = 0;
    for (;;) {
        ssize_t n = xport_read(&s->c->xp, scratch, sizeof scratch);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n < 0 && errno == EINTR)
            continue;
        total += n > 0 ? (uint32_t)n : 0;
        if (n <= 0 || total > H2S_LINGER_MAX_BYTES) {
            client_close(s->c);
            return;
        }
    }
}

/* Requests still running when the session ended cannot be answered any more. */
static void h2s_abort_streams(struct h2_server *s)
{
    for (struct h2_stream *st = s->streams; st; st = st->next)
        if (st->c && !st->released)
            client_close(st->c);
}

/* One run: read, answer rejects and reap streams, write, then decide whether the connection is
 * finished. client_close (which frees S) is always the last thing done. */
static void h2s_run(struct h2_server *s)
{
    struct client *c = s->c;
    if (s->lingering) {
        h2s_linger_read(s);
        return;
    }
    if (h2s_read(s) < 0) {
        client_close(c);
        return;
    }
    h2s_reap(s);
    if (h2s_flush(s) < 0) {
        client_close(c);
        return;
    }
    /* The session is over (GOAWAY sent and no stream left, or a connection error ended it) and
     * every byte is out. */
    if (!nghttp2_session_want_read(s->ng) && h2s_output_empty(s)) {
        if (s->calm) {
            client_close(c); /* an abuser gets no lingering */
            return;
        }
        h2s_abort_streams(s);
        h2s_linger(s);
    }
}

static void h2s_task(struct loop_task *task)
{
    h2s_run(container_of(task, struct h2_server, task));
}

void h2s_on_event(struct h2_server *s, uint32_t events)
{
    (void)events; /* client_on_event has turned them into c->readable / c->writable */
    h2s_run(s);
}

/* --- life -------------------------------------------------------------------------------------------------- */

static void h2s_settings(struct h2_server *s, const struct conf_listener_http2 *h)
{
    nghttp2_settings_entry iv[] = {
        { NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, h->max_concurrent_streams },
        { NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, h->initial_window },
        { NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, s->max_header_bytes },
        { NGHTTP2_SETTINGS_ENABLE_PUSH, 0 },
        { NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES, 1 },
    };
    nghttp2_submit_settings(s->ng, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]);
    /* The connection window bounds what all streams together may have unread. */
    uint64_t conn = (uint64_t)h->initial_window * (h->max_concurrent_streams ? h->max_concurrent_streams : 1);
    if (conn > H2S_CONN_WINDOW_MAX)
        conn = H2S_CONN_WINDOW_MAX;
    if (conn > NGHTTP2_INITIAL_CONNECTION_WINDOW_SIZE)
        nghttp2_session_set_local_window_size(s->ng, NGHTTP2_FLAG_NONE, 0, (int32_t)conn);
}

static nghttp2_option *h2s_options(const struct h2_server *s)
{
    nghttp2_option *opt;
    if (nghttp2_option_new(&opt) != 0)
        return NULL;
    nghttp2_option_set_no_auto_window_update(opt, 1); /* flow control follows what the exchange reads */
    nghttp2_option_set_no_closed_streams(opt, 1);
    nghttp2_option_set_max_settings(opt, 32);
    nghttp2_option_set_max_outbound_ack(opt, s->max_control < 1000 ? s->max_control : 1000);
    uint64_t per_s = s->flood_window_ms >= 1000 ? s->max_resets / (s->flood_window_ms / 1000) : s->max_resets;
    nghttp2_option_set_stream_reset_rate_limit(opt, s->max_resets, per_s ? per_s : 1);
    /* a header list of max_header_bytes needs this many 16 KiB frames at most */
    nghttp2_option_set_max_continuations(opt, s->max_header_bytes / 16384 + 8);
    return opt;
}

static const struct conf_listener_http2 h2s_defaults = {
    .enabled = true, .max_concurrent_streams = 128, .initial_window = 256 * 1024,
    .max_resets = 200, .max_control_frames = 1000, .flood_window_ms = 10000,
};

static void h2s_copy_settings(struct h2_server *s, const struct conf_listener_http2 *h,
                              const struct conf_limits *lim)
{
    s->max_header_bytes = lim->max_header_bytes;
    s->max_resets = h->max_resets;
    s->max_control = h->max_control_frames;
    s->flood_window_ms = h->flood_window_ms ? h->flood_window_ms : 10000;
    s->keepalive_ms = lim->keepalive_timeout_ms;
    s->header_ms = lim->header_timeout_ms;
}

int h2s_start(struct client *c)
{
    struct h2_server *s = calloc(1, sizeof *s);
    if (!s)
        return -1;
    const struct conf_listener *cl = client_listener(c);
    const struct conf_listener_http2 *h = cl ? &cl->http2 : &h2s_defaults;
    s->c = c;
    s->task.run = h2s_task;
    h2s_copy_settings(s, h, &worker_config(c->w)->limits);
    s->flood_start = loop_now(h2s_loop(s));
    nghttp2_session_callbacks *cb = h2s_callbacks();
    nghttp2_option *opt = h2s_options(s);
    int r = cb && opt ? nghttp2_session_server_new2(&s->ng, cb, s, opt) : -1;
    nghttp2_session_callbacks_del(cb);
    nghttp2_option_del(opt);
    if (r != 0) {
        free(s);
        return -1;
    }
    c->h2 = s;
    STATS_ADD(c->w->stats.h2_connections, 1);
    client_no_delay(c); /* frames of many streams interleave: Nagle would only add delay */
    h2s_settings(s, h);
    /* until the client's first frame: header_timeout, as for a silent HTTP/1.1 connection (the
     * frames read below re-arm it as they come) */
    loop_timer_after(h2s_loop(s), &c->timer, s->header_ms);
    if (c->in && buf_len(c->in)) { /* the preface (and more) read while sniffing */
        ssize_t n = nghttp2_session_mem_recv(s->ng, (const uint8_t *)buf_rptr(c->in), buf_len(c->in));
        if (n < 0 && !s->calm)
            return -1; /* the caller closes C, which frees S */
    }
    buf_put(c->in);
    c->in = NULL;
    h2s_schedule(s);
    return 0;
}

void h2s_on_timer(struct h2_server *s)
{
    struct client *c = s->c;
    if (s->lingering || s->calm || !s->got_frame) {
        client_close(c);
        return;
    }
    if (s->draining && !s->final_goaway) {
        /* RFC 9113 §6.8: the last GOAWAY names the last stream we will serve */
        s->final_goaway = true;
        nghttp2_submit_goaway(s->ng, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(s->ng),
                              NGHTTP2_NO_ERROR, NULL, 0);
        h2s_schedule(s);
        return;
    }
    if (h2s_head_pending(s)) {
        client_close(c); /* a header block that does not end (slowloris over HTTP/2) */
        return;
    }
    if (s->final_goaway && !s->draining) {
        client_close(c); /* the idle GOAWAY could not be written in time */
        return;
    }
    if (h2s_any_active(s)) /* a stray expiry while requests run: each has its own timers */
        return;
    /* idle: say goodbye, close once it is written (or after the linger time if it never is) */
    s->final_goaway = true;
    nghttp2_submit_goaway(s->ng, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(s->ng),
                          NGHTTP2_NO_ERROR, NULL, 0);
    loop_timer_after(h2s_loop(s), &c->timer, H2S_LINGER_MS);
    h2s_schedule(s);
}

void h2s_drain(struct h2_server *s)
{
    if (s->draining || s->lingering || s->calm)
        return;
    s->draining = true;
    if (!h2s_any_active(s)) {
        s->final_goaway = true; /* nothing in flight to protect: the last GOAWAY at once */
        nghttp2_submit_goaway(s->ng, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(s->ng),
                              NGHTTP2_NO_ERROR, NULL, 0);
    } else {
        nghttp2_submit_shutdown_notice(s->ng);
        loop_timer_after(h2s_loop(s), &s->c->timer, H2S_DRAIN_NOTICE_MS);
    }
    h2s_schedule(s);
}

void h2s_free(struct h2_server *s)
{
    s->freeing = true;
    loop_cancel(h2s_loop(s), &s->task);
    while (s->streams)
        h2s_stream_destroy(s->streams);
    nghttp2_session_del(s->ng);
    buf_put(s->wb);
    free(s);
}
