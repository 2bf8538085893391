#include "proxy/exchange_priv.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "core/log.h"
#include "core/sock.h"
#include "http/hdr.h"
#include "proxy/client.h"
#include "proxy/route.h"

const char ex_continue_line[] = "HTTP/1.1 100 Continue\r\n\r\n";

static enum ex_step ex_run_state(struct exchange *ex);

/* --- helpers ------------------------------------------------------------------------------ */

const struct conf_server *ex_server(const struct exchange *ex)
{
    return &ex->route->upstream->servers[ex->server];
}

/* Exchanges are recycled per thread with their arrays and head buffers, so a steady stream of
 * requests allocates nothing once warm. */
#define EX_CACHE_MAX 64
static __thread struct exchange *ex_cache[EX_CACHE_MAX];
static __thread unsigned ex_cache_n;

static void ex_release_memory(struct exchange *ex)
{
    sbuf_free(&ex->up_head);
    sbuf_free(&ex->resp_head);
    sbuf_free(&ex->replay);
    sbuf_free(&ex->req_trailers);
    sbuf_free(&ex->cache_key);
    sbuf_free(&ex->cache_vary);
    sbuf_free(&ex->cache_status);
    sbuf_free(&ex->resp_trailers);
    sbuf_free(&ex->body_hold);
    sbuf_free(&ex->path_norm);
    sbuf_free(&ex->policy.answer_headers);
    free(ex->resp_hdrs);
    free(ex->req_hdrs);
    free(ex->req_raw);
    free(ex->tried);
    free(ex);
}

static struct stats_entry *ex_server_stats(const struct exchange *ex)
{
    return ex->gen->server_stats[ex->route->upstream->index][ex->server];
}

/* The exchange counts as active on its server (balancer and gauge) between these two. */
void ex_server_begin(struct exchange *ex, int server)
{
    ex->server = server;
    balance_begin(&ex->wu->bal, server);
    if (ex_server_stats(ex))
        STATS_ADD(ex_server_stats(ex)->active, 1);
}

void ex_server_end(struct exchange *ex)
{
    if (ex->server < 0 || !ex->wu)
        return;
    balance_end(&ex->wu->bal, ex->server);
    if (ex_server_stats(ex))
        STATS_ADD(ex_server_stats(ex)->active, (uint64_t)-1);
}

static void ex_free(struct exchange *ex)
{
    struct loop *loop = ex->w->loop;
    loop_timer_stop(loop, &ex->up_timer);
    ex_cache_end(ex);
    ex_deliver_end(ex);
    policy_run_clear(&ex->policy);
    ex_server_end(ex);
    if (ex->uc)
        upstream_close(ex->uc);
    worker_gen_release(ex->w, ex->gen);
    if (ex_cache_n < EX_CACHE_MAX)
        ex_cache[ex_cache_n++] = ex;
    else
        ex_release_memory(ex);
}

/* A zeroed exchange that keeps the allocations of a recycled one. */
static struct exchange *ex_alloc(void)
{
    if (!ex_cache_n)
        return calloc(1, sizeof(struct exchange));
    struct exchange *ex = ex_cache[--ex_cache_n];
    struct exchange keep = *ex;
    memset(ex, 0, sizeof *ex);
    ex->req_raw = keep.req_raw;
    ex->req_raw_cap = keep.req_raw_cap;
    ex->req_hdrs = keep.req_hdrs;
    ex->req_hdrs_cap = keep.req_hdrs_cap;
    ex->resp_hdrs = keep.resp_hdrs;
    ex->resp_hdrs_cap = keep.resp_hdrs_cap;
    ex->tried = keep.tried;
    ex->tried_cap = keep.tried_cap;
    ex->up_head = keep.up_head;
    ex->resp_head = keep.resp_head;
    ex->replay = keep.replay;
    ex->req_trailers = keep.req_trailers;
    ex->resp_trailers = keep.resp_trailers;
    ex->cache_key = keep.cache_key;
    ex->cache_vary = keep.cache_vary;
    ex->cache_status = keep.cache_status;
    sbuf_reset(&ex->cache_key);
    sbuf_reset(&ex->cache_vary);
    sbuf_reset(&ex->cache_status);
    ex->zalgo = -1;
    sbuf_reset(&ex->req_trailers);
    sbuf_reset(&ex->resp_trailers);
    ex->body_hold = keep.body_hold;
    ex->path_norm = keep.path_norm;
    sbuf_reset(&ex->path_norm);
    ex->policy.answer_headers = keep.policy.answer_headers;
    sbuf_reset(&ex->body_hold);
    sbuf_reset(&ex->policy.answer_headers);
    sbuf_reset(&ex->up_head);
    sbuf_reset(&ex->resp_head);
    sbuf_reset(&ex->replay);
    return ex;
}

void exchange_drain_cache(void)
{
    while (ex_cache_n)
        ex_release_memory(ex_cache[--ex_cache_n]);
}

/* Makes *ARR hold at least N elements of SIZE bytes; returns 0 or -1. */
static int ex_reserve(void **arr, size_t *cap, size_t n, size_t size)
{
    if (*cap >= n)
        return 0;
    void *p = realloc(*arr, n * size);
    if (!p)
        return -1;
    *arr = p;
    *cap = n;
    return 0;
}

/* Per-worker counters for metrics: owner-written, no read-modify-write instruction. */
static void ex_count(struct exchange *ex, uint64_t bytes_in, uint64_t total_ms)
{
    struct worker_stats *ws = &ex->w->stats;
    unsigned cls = stats_status_class(ex->status == 499 ? 0 : ex->status);
    uint64_t out = ex_client_bytes(ex);
    STATS_ADD(ws->bytes_in, bytes_in);
    STATS_ADD(ws->bytes_out, out);
    stats_histogram_observe(&ws->latency_total, total_ms);
    struct stats_entry *rs = ex->route ? ex->gen->route_stats[ex->route->index] : ex->gen->noroute_stats;
    if (rs) {
        STATS_ADD(rs->requests[cls], 1);
        STATS_ADD(rs->bytes_in, bytes_in);
        STATS_ADD(rs->bytes_out, out);
        stats_histogram_observe(&rs->latency, total_ms);
    }
    if (ex->server < 0 || ex->upstream_ms < 0)
        return;
    stats_histogram_observe(&ws->latency_upstream, (uint64_t)ex->upstream_ms);
    struct stats_entry *entries[2] = { ex->gen->up_stats[ex->route->upstream->index], ex_server_stats(ex) };
    for (int i = 0; i < 2; i++) {
        if (!entries[i])
            continue;
        STATS_ADD(entries[i]->requests[cls], 1);
        stats_histogram_observe(&entries[i]->latency, (uint64_t)ex->upstream_ms);
    }
}

static void ex_log(struct exchange *ex)
{
    const struct http_header *ua = http_msg_find(&ex->req, "user-agent");
    const struct http_header *ref = http_msg_find(&ex->req, "referer");
    char upstream[64] = "";
    if (ex->server >= 0)
        snprintf(upstream, sizeof upstream, "%s", ex_server(ex)->address);
    uint64_t body_out = ex->req_pump.bytes_out > ex->up_head.len ? ex->req_pump.bytes_out - ex->up_head.len : 0;
    if (ex->body_held)
        body_out = ex->body_hold.len; /* it went out inside up_head */
    struct accesslog_entry e = {
        .client_ip = str_make(ex->client_ip, strlen(ex->client_ip)),
        .method = ex->req.method.n ? ex->req.method : STR_LIT("-"),
        .target = ex->req.target.n ? ex->req.target : STR_LIT("-"),
        .version_minor = ex->req.version_minor,
        .http2 = ex->c->parent != NULL,
        .status = ex->status,
        .bytes_in = ex->req.head_len + body_out,
        .bytes_out = ex_client_bytes(ex),
        .total_ms = loop_now(ex->w->loop) - ex->t_start,
        .upstream = str_make(upstream, strlen(upstream)),
        .upstream_ms = ex->upstream_ms,
        .route = ex->route ? str_make(ex->route->name, strlen(ex->route->name)) : STR_LIT(""),
        .user_agent = ua ? ua->value : STR_LIT(""),
        .referer = ref ? ref->value : STR_LIT(""),
        .user = str_make(ex->policy.user, strlen(ex->policy.user)),
    };
    accesslog_write(&ex->w->alog, &e);
    ex_count(ex, e.bytes_in, e.total_ms);
}

/* Ends the exchange: log, give the upstream connection back, hand the client on. */
enum ex_step ex_finish(struct exchange *ex, bool upstream_reusable)
{
    struct client *c = ex->c;
    bool keep_alive = !ex->client_close;
    if (ex->t_upstream && ex->upstream_ms < 0)
        ex->upstream_ms = (int64_t)(loop_now(ex->w->loop) - ex->t_upstream);
    ex_log(ex);
    if (ex->uc) {
        upstream_release(ex->uc, upstream_reusable);
        ex->uc = NULL;
    }
    ex_free(ex);
    c->ex = NULL;
    client_exchange_done(c, keep_alive);
    return EX_GONE;
}

enum ex_step ex_abort_client(struct exchange *ex)
{
    if (!ex->status)
        ex->status = 499;
    client_close(ex->c); /* calls exchange_abort, which logs and frees */
    return EX_GONE;
}

void exchange_abort(struct exchange *ex)
{
    if (!ex->status)
        ex->status = 499; /* client went away before an answer */
    ex_log(ex);
    ex->c->ex = NULL;
    ex_free(ex);
}

void ex_arm_client_timer(struct exchange *ex, uint64_t ms)
{
    loop_timer_after(ex->w->loop, &ex->c->timer, ms);
}

/* RFC 6797 §6.1: Strict-Transport-Security, sent only over TLS, when the listener asks. */
struct str ex_hsts(const struct exchange *ex, char *buf, size_t cap)
{
    const struct conf_listener *l = ex->lcfg;
    if (!ex->c->tls || !l || !l->tls.hsts_max_age_s)
        return STR_LIT("");
    int n = snprintf(buf, cap, "max-age=%llu%s%s", (unsigned long long)l->tls.hsts_max_age_s,
                     l->tls.hsts_include_subdomains ? "; includeSubDomains" : "",
                     l->tls.hsts_preload ? "; preload" : "");
    return n > 0 && (size_t)n < cap ? str_make(buf, (size_t)n) : STR_LIT("");
}

/* --- request forwarding and response head ------------------------------------------------------ */

/* Writes pending interim heads (100 Continue, 103) to the client before the final response. */
static enum ex_step ex_flush_interim(struct exchange *ex)
{
    struct client *c = ex->c;
    while (ex->resp_head_off < ex->resp_head.len && c->writable) {
        ssize_t w = xport_write(&c->xp, ex->resp_head.p + ex->resp_head_off, ex->resp_head.len - ex->resp_head_off);
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            c->writable = false;
            break;
        }
        if (w <= 0)
            return ex_abort_client(ex);
        ex->resp_head_off += (uint32_t)w;
    }
    return EX_WAIT;
}

/* A body that keeps trickling re-arms body_timeout forever (slow POST): once it has taken longer
 * than body_timeout, its average rate since the head arrived must reach min_body_rate. */
bool ex_body_too_slow(const struct exchange *ex, uint64_t body)
{
    const struct conf_limits *lim = &ex->cfg->limits;
    uint64_t elapsed = loop_now(ex->w->loop) - ex->t_start;
    return lim->min_body_rate && elapsed > lim->body_timeout_ms &&
           body < lim->min_body_rate * (elapsed / 1000);
}

static enum ex_step ex_pump_request(struct exchange *ex)
{
    struct client *c = ex->c;
    if (ex->req_done)
        return EX_AGAIN;
    uint64_t before = ex->req_pump.bytes_out;
    enum pump_status s = pump_run(&ex->req_pump, &c->in, &c->xp, &c->readable, &ex->uc->xp, &ex->uc->writable);
    if (s == PUMP_BLOCKED && !ex->resp_started && ex_body_too_slow(ex, ex->req_pump.body)) {
        ex->client_close = true;
        return ex_fail_upstream(ex, 408);
    }
    if (ex->req_pump.bytes_out != before && !ex->resp_started)
        ex_arm_client_timer(ex, ex->cfg->limits.body_timeout_ms);
    if (s == PUMP_DONE) {
        ex->req_done = true;
        if (ex->state == EX_WAIT_HEAD) {
            /* The request is out: from now on only the server can be late. */
            loop_timer_stop(ex->w->loop, &ex->c->timer);
            const struct conf_upstream *up = ex->route->upstream;
            uint64_t wait = up->retries.per_try_timeout_ms ? up->retries.per_try_timeout_ms : up->response_timeout_ms;
            loop_timer_after(ex->w->loop, &ex->up_timer, wait);
        }
        return EX_AGAIN;
    }
    if (s == PUMP_TOO_LARGE) {
        if (ex->resp_started)
            return ex_abort_client(ex);
        ex->client_close = true;
        return ex_fail_upstream(ex, 413);
    }
    if (s == PUMP_SRC_ERROR && !ex->resp_started)
        return ex_fail_upstream(ex, 400); /* malformed chunked body */
    if (s == PUMP_SRC_EOF || s == PUMP_SRC_ERROR || s == PUMP_NO_MEMORY)
        return ex_abort_client(ex);
    if (s == PUMP_DST_ERROR && ex->state == EX_WAIT_HEAD)
        return ex_upstream_failed(ex, 502, "write failed");
    if (s == PUMP_DST_ERROR) {
        ex->client_close = true; /* the server stopped reading: finish the response, then close */
        ex->req_done = true;
        return EX_AGAIN;
    }
    return EX_WAIT;
}

static enum ex_step ex_begin_response(struct exchange *ex);

/* Reads and parses the response head; forwards 1xx interim responses (RFC 9110 §15.2). */
static enum ex_step ex_read_head(struct exchange *ex)
{
    struct upstream_conn *uc = ex->uc;
    const struct conf_limits *lim = &ex->cfg->limits;
    struct h1_limits hl = { lim->max_header_bytes, lim->max_header_bytes, lim->max_headers };
    if (!uc->in && !(uc->in = buf_get()))
        return ex_abort_client(ex);
    for (;;) {
        if (buf_len(uc->in)) {
            ex->resp.headers = ex->resp_hdrs;
            ex->resp.max_headers = lim->max_headers;
            int r = h1_parse_response(buf_rptr(uc->in), buf_len(uc->in), &hl, &ex->resp);
            if (r < 0) {
                log_warn("upstream %s server %s: malformed response head", ex->route->upstream->name, ex_server(ex)->address);
                return ex_fail_upstream(ex, 502);
            }
            if (r > 0)
                return ex_begin_response(ex);
        }
        if (!uc->readable)
            return EX_WAIT;
        if (buf_space(uc->in) == 0)
            return ex_upstream_failed(ex, 502, "response head too large");
        ssize_t n = xport_read(&uc->xp, buf_wptr(uc->in), buf_space(uc->in));
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            uc->readable = false;
            return EX_WAIT;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return buf_len(uc->in) ? ex_upstream_failed(ex, 502, "truncated response head")
                                   : ex_upstream_failed(ex, 502, n ? strerror(errno) : "closed before responding");
        if ((size_t)n < buf_space(uc->in) && !uc->rdhup)
            uc->readable = false; /* short read: drained; the next edge brings more */
        uc->in->wpos += (uint32_t)n;
    }
}

static enum ex_step ex_wait_head_step(struct exchange *ex)
{
    enum ex_step st = ex_pump_request(ex);
    if (st == EX_GONE || ex->state != EX_WAIT_HEAD)
        return st == EX_GONE ? EX_GONE : EX_AGAIN;
    st = ex_read_head(ex);
    if (st != EX_WAIT || ex->state != EX_WAIT_HEAD)
        return st == EX_GONE ? EX_GONE : EX_AGAIN;
    return ex_flush_interim(ex);
}

/* --- response ---------------------------------------------------------------------------------- */

static enum ex_step ex_interim(struct exchange *ex)
{
    if (ex->req.version_minor >= 1) {
        struct hdr_response_ctx rc = { .fwd = &ex->cfg->forwarding, .framing = HDR_FRAME_NONE,
                                       .server = hdr_server_value(ex->cfg) };
        hdr_build_response(&ex->resp_head, &ex->resp, &rc);
    }
    buf_consume(ex->uc->in, ex->resp.head_len);
    return EX_AGAIN;
}

static enum ex_step ex_start_tunnel(struct exchange *ex)
{
    struct hdr_response_ctx rc = { .fwd = &ex->cfg->forwarding, .ops = &ex->route->response_headers,
                                   .framing = HDR_FRAME_NONE, .tunnel = true,
                                   .server = hdr_server_value(ex->cfg) };
    hdr_build_response(&ex->resp_head, &ex->resp, &rc);
    buf_consume(ex->uc->in, ex->resp.head_len);
    ex->status = 101;
    ex->resp_started = true;
    ex->client_close = true;
    loop_timer_stop(ex->w->loop, &ex->up_timer);
    pump_init(&ex->resp_pump, H1_BODY_CLOSE, 0, false, &ex->resp_head);
    ex->resp_pump.prefix_off = ex->resp_head_off;
    pump_init(&ex->req_pump, H1_BODY_CLOSE, 0, false, NULL);
    ex->req_done = false;
    client_no_delay(ex->c); /* tunnelled messages are small and interactive */
    ex_arm_client_timer(ex, ex->cfg->limits.tunnel_timeout_ms);
    ex->state = EX_TUNNEL;
    return EX_AGAIN;
}

static enum hdr_framing ex_client_framing(const struct exchange *ex, enum h1_body_kind kind)
{
    if (kind == H1_BODY_NONE)
        return HDR_FRAME_BODYLESS;
    if (kind == H1_BODY_LENGTH)
        return HDR_FRAME_LENGTH;
    return ex->req.version_minor >= 1 ? HDR_FRAME_CHUNKED : HDR_FRAME_CLOSE;
}

static bool ex_retry_status(const struct exchange *ex, int status)
{
    const struct conf_retries *r = &ex->route->upstream->retries;
    for (size_t i = 0; i < r->n_statuses; i++)
        if (r->statuses[i] == status)
            return true;
    return false;
}

static enum ex_step ex_begin_response(struct exchange *ex)
{
    struct http_msg *resp = &ex->resp;
    char hsts_buf[96];
    if (resp->status == 101)
        return ex->tunnel_requested ? ex_start_tunnel(ex) : ex_upstream_failed(ex, 502, "unexpected 101");
    if (resp->status < 200)
        return ex_interim(ex);
    ex_record(ex, resp->status < 500);
    if (ex_retry_status(ex, resp->status) && ex_may_retry(ex, true)) {
        log_info("upstream %s server %s: status %d, retrying", ex->route->upstream->name, ex_server(ex)->address,
                 resp->status);
        return ex_retry(ex); /* the connection goes: its unread body is not worth draining */
    }
    enum ex_step cached;
    if (ex->route->cache.enabled && ex_cache_on_head(ex, &cached))
        return cached;
    enum h1_body_kind kind = h1_response_body_kind(resp, ex->req.method_id);
    struct hdr_response_ctx rc = {
        .fwd = &ex->cfg->forwarding, .ops = &ex->route->response_headers,
        .length = kind == H1_BODY_LENGTH ? (uint64_t)resp->content_length : 0,
        .keep_alive_10 = ex->req.version_minor == 0,
        .security = ex->route->security_headers, .n_security = ex->route->n_security_headers,
        .server = hdr_server_value(ex->cfg), .hsts = ex_hsts(ex, hsts_buf, sizeof hsts_buf),
        .cache_status = str_make(ex->cache_status.p, ex->cache_status.len),
    };
    bool compressed = ex_deliver_plan(ex, resp, kind, rc.length, &rc) > 0;
    /* A compressed body has a length nobody knows yet: chunked (or close-delimited for 1.0). */
    enum hdr_framing framing = ex_client_framing(ex, compressed ? H1_BODY_CLOSE : kind);
    if (framing == HDR_FRAME_CLOSE || ex->w->draining)
        ex->client_close = true;
    rc.framing = framing;
    rc.close = ex->client_close;
    hdr_build_response(&ex->resp_head, resp, &rc);
    ex->status = resp->status;
    ex->resp_started = true;
    ex->upstream_ms = (int64_t)(loop_now(ex->w->loop) - ex->t_upstream);
    ex->upstream_close = resp->conn_close;
    buf_consume(ex->uc->in, resp->head_len);
    pump_init(&ex->resp_pump, kind, kind == H1_BODY_LENGTH ? (uint64_t)resp->content_length : 0,
              framing == HDR_FRAME_CHUNKED, &ex->resp_head);
    if (kind == H1_BODY_CHUNKED && framing == HDR_FRAME_CHUNKED)
        ex->resp_pump.dec.trailers = &ex->resp_trailers; /* gRPC's status travels in trailers */
    ex->resp_pump.prefix_off = ex->resp_head_off;
    if (ex_deliver_start(ex, true) < 0)
        return ex_abort_client(ex);
    ex_cache_attach(ex);
    loop_timer_after(ex->w->loop, &ex->up_timer, ex->route->upstream->idle_timeout_ms);
    ex->state = EX_BODY;
    return EX_AGAIN;
}

static enum ex_step ex_body_step(struct exchange *ex)
{
    struct client *c = ex->c;
    struct upstream_conn *uc = ex->uc;
    enum ex_step st = ex_pump_request(ex);
    if (st == EX_GONE)
        return EX_GONE;
    if (ex->spooling)
        return ex_spool_step(ex);
    uint64_t before = ex->resp_pump.bytes_out;
    enum pump_status s = pump_run(&ex->resp_pump, &uc->in, &uc->xp, &uc->readable, &c->xp, &c->writable);
    if (ex->resp_pump.bytes_out != before) {
        loop_timer_after(ex->w->loop, &ex->up_timer, ex->route->upstream->idle_timeout_ms);
        ex_arm_client_timer(ex, ex->cfg->limits.send_timeout_ms);
    }
    if (s == PUMP_BLOCKED && ex->resp_pump.bytes_out)
        client_no_delay(c); /* a response in several writes: its tail must not wait for an ACK */
    if (s == PUMP_DONE) {
        ex->resp_complete = true;
        bool reusable = ex->resp_pump.in_kind != H1_BODY_CLOSE && ex->req_done && !ex->upstream_close;
        if (!ex->req_done)
            ex->client_close = true; /* the rest of the request body is still on the wire */
        return ex_finish(ex, reusable);
    }
    if (s == PUMP_SRC_EOF || s == PUMP_SRC_ERROR) {
        log_warn("upstream %s server %s: response body %s", ex->route->upstream->name, ex_server(ex)->address,
                 s == PUMP_SRC_EOF ? "truncated" : "malformed");
        if (ex->resp_pump.bytes_out == 0) { /* nothing reached the client: it can still get a 502 */
            upstream_close(uc);
            ex->uc = NULL;
            return ex_send_error(ex, 502);
        }
    }
    if (s != PUMP_BLOCKED)
        return ex_abort_client(ex); /* the head is out: closing is the only way to say it failed */
    return EX_WAIT;
}

/* --- tunnel (after 101) ------------------------------------------------------------------------ */

static enum ex_step ex_tunnel_step(struct exchange *ex)
{
    struct client *c = ex->c;
    struct upstream_conn *uc = ex->uc;
    uint64_t before = ex->req_pump.bytes_out + ex->resp_pump.bytes_out;
    enum pump_status up = PUMP_DONE, down;
    if (!ex->req_done) {
        up = pump_run(&ex->req_pump, &c->in, &c->xp, &c->readable, &uc->xp, &uc->writable);
        if (up == PUMP_DONE) {
            ex->req_done = true;
            xport_shutdown_wr(&uc->xp);
        }
    }
    down = pump_run(&ex->resp_pump, &uc->in, &uc->xp, &uc->readable, &c->xp, &c->writable);
    if (up > PUMP_DONE || down > PUMP_DONE)
        return ex_abort_client(ex);
    if (down == PUMP_DONE) {
        if (!ex->req_done)
            xport_shutdown_wr(&c->xp);
        if (ex->req_done)
            return ex_finish(ex, false);
    }
    if (ex->req_pump.bytes_out + ex->resp_pump.bytes_out != before)
        ex_arm_client_timer(ex, ex->cfg->limits.tunnel_timeout_ms);
    return EX_WAIT;
}

/* --- driving ------------------------------------------------------------------------------------ */

static enum ex_step ex_run_state(struct exchange *ex)
{
    switch (ex->state) {
    case EX_HOLD_BODY: return ex_hold_body_step(ex);
    case EX_POLICY: return ex_policy_step(ex);
    case EX_LOCAL: return ex_local_step(ex);
    case EX_CACHE_WAIT: return ex_cache_wait_step(ex);
    case EX_CACHE_SERVE: return ex_cache_serve_step(ex);
    case EX_BACKOFF: return EX_WAIT;
    case EX_CONNECT: return ex_connect_step(ex);
    case EX_WAIT_HEAD: return ex_wait_head_step(ex);
    case EX_BODY: return ex_body_step(ex);
    case EX_TUNNEL: return ex_tunnel_step(ex);
    }
    return EX_WAIT;
}

void ex_run(struct exchange *ex)
{
    for (int guard = 0; guard < 64; guard++) {
        enum ex_step st = ex_run_state(ex);
        if (st != EX_AGAIN)
            return;
    }
    /* A state machine that keeps saying "again" would spin: re-enter on the next batch. */
    loop_defer(ex->w->loop, &ex->c->task);
}

void exchange_on_upstream_event(struct upstream_conn *uc, uint32_t events)
{
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        uc->readable = true;
    if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        uc->rdhup = true;
    if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
        uc->writable = true;
    ex_run(uc->ex);
}

void ex_on_up_timer(struct loop_timer *t)
{
    struct exchange *ex = container_of(t, struct exchange, up_timer);
    enum ex_step st;
    if (ex->state == EX_CACHE_WAIT) {
        ex_cache_lock_timeout(ex);
        return;
    }
    if (ex->state == EX_BACKOFF)
        st = ex_connect(ex, false);
    else if (ex->state == EX_CONNECT)
        st = ex_upstream_failed(ex, 504, "connect timed out");
    else if (ex->state == EX_WAIT_HEAD && ex->req_done)
        st = ex_upstream_failed(ex, 504, "response timed out");
    else if (ex->state == EX_WAIT_HEAD || ex->state == EX_BODY) {
        log_info("upstream %s server %s: idle timeout", ex->route->upstream->name, ex_server(ex)->address);
        st = ex->resp_started ? ex_abort_client(ex) : ex_fail_upstream(ex, 504);
    } else
        return;
    if (st == EX_AGAIN)
        ex_run(ex);
}

void exchange_on_client_event(struct exchange *ex, uint32_t events)
{
    if (events & EPOLLERR) {
        ex_abort_client(ex);
        return;
    }
    ex_run(ex);
}

void exchange_on_client_timeout(struct exchange *ex)
{
    if (ex->state == EX_WAIT_HEAD && !ex->req_done && !ex->resp_started) {
        ex->client_close = true;
        if (ex_fail_upstream(ex, 408) == EX_AGAIN)
            ex_run(ex);
        return;
    }
    ex->status = ex->status ? ex->status : 408;
    ex_abort_client(ex);
}

/* --- start -------------------------------------------------------------------------------------- */

static struct exchange *ex_new(struct client *c)
{
    struct worker *w = c->w;
    struct exchange *ex = ex_alloc();
    if (!ex)
        return NULL;
    ex->c = c;
    ex->w = w;
    ex->gen = worker_gen_use(w);
    ex->cfg = ex->gen->rt->cfg;
    ex->server = -1;
    ex->upstream_ms = -1;
    ex->t_start = loop_now(w->loop);
    ex->up_timer.on_fire = ex_on_up_timer;
    ex->lcfg = worker_find_listener(ex->cfg, c->listener);
    ex->cache_refresh = c->detached;
    sock_format_ip(&c->peer.sa, ex->peer_ip, sizeof ex->peer_ip);
    memcpy(ex->client_ip, ex->peer_ip, sizeof ex->client_ip);
    memcpy(&ex->client_addr, &c->peer, sizeof c->peer);
    c->ex = ex;
    return ex;
}

/* Copies the head out of the client buffer so the buffer can stream the body. */
static int ex_adopt_head(struct exchange *ex, struct http_msg *req)
{
    struct client *c = ex->c;
    const char *base = buf_rptr(c->in);
    size_t raw_cap = ex->req_raw_cap, hdrs_cap = ex->req_hdrs_cap;
    if (ex_reserve((void **)&ex->req_raw, &raw_cap, req->head_len, 1) < 0 ||
        ex_reserve((void **)&ex->req_hdrs, &hdrs_cap, req->n_headers ? req->n_headers : 1, sizeof *req->headers) < 0)
        return -1;
    ex->req_raw_cap = (uint32_t)raw_cap;
    ex->req_hdrs_cap = (uint32_t)hdrs_cap;
    ex->req = *req;
    ex->req.headers = ex->req_hdrs;
    memcpy(ex->req_raw, base, req->head_len);
#define EX_REBASE(s) ((s).p = (s).p ? ex->req_raw + ((s).p - base) : NULL)
    EX_REBASE(ex->req.method);
    EX_REBASE(ex->req.target);
    EX_REBASE(ex->req.path);
    EX_REBASE(ex->req.host);
    EX_REBASE(ex->req.upgrade);
    for (uint32_t i = 0; i < req->n_headers; i++) {
        ex->req.headers[i] = req->headers[i];
        EX_REBASE(ex->req.headers[i].name);
        EX_REBASE(ex->req.headers[i].value);
    }
#undef EX_REBASE
    buf_consume(c->in, req->head_len);
    return 0;
}

/* A small idempotent request keeps a copy of its body as it passes, so that a pooled connection
 * the server closed under us can be retried like a body-less request. */
#define EX_REPLAY_MAX (16 * 1024)
static void ex_keep_replay(struct exchange *ex, enum h1_body_kind kind)
{
    if (kind == H1_BODY_LENGTH && (uint64_t)ex->req.content_length <= EX_REPLAY_MAX &&
        http_method_is_idempotent(ex->req.method_id))
        ex->req_pump.tap = &ex->replay;
}

/* The request pump takes over where the hold stopped: its decoder state, and the decoded bytes
 * waiting in the client buffer (sent as the next chunk after the one in up_head). */
static void ex_resume_held_body(struct exchange *ex)
{
    struct pump *p = &ex->req_pump;
    struct sbuf *prefix = p->prefix;
    uint64_t limit = p->limit;
    *p = ex->hold_pump;
    p->sink = NULL;
    p->prefix = prefix;
    p->prefix_off = 0;
    p->out_chunked = true;
    p->limit = limit;
    p->bytes_out = 0;
    p->seg_len = p->seg_sent = 0;
    p->term_sent = 0;
}

int ex_reserve_resp_headers(struct exchange *ex)
{
    size_t cap = ex->resp_hdrs_cap;
    int ok = ex_reserve((void **)&ex->resp_hdrs, &cap, ex->cfg->limits.max_headers, sizeof *ex->resp_hdrs);
    ex->resp_hdrs_cap = (uint32_t)cap;
    return ok;
}

enum ex_step ex_forward(struct exchange *ex)
{
    const struct conf_route *r = ex->route;
    struct http_msg *req = &ex->req;
    /* A held body goes out from memory with a length we know, whatever its framing was. */
    enum h1_body_kind kind = ex->body_held ? H1_BODY_LENGTH : h1_request_body_kind(req);
    uint64_t length = ex->body_held ? ex->body_hold.len : (uint64_t)req->content_length;
    uint64_t max = ex->cfg->limits.max_body_bytes;
    if (max && kind == H1_BODY_LENGTH && length > max) {
        ex->client_close = true;
        return ex_send_error(ex, 413);
    }
    char path_small[2048];
    char *path = req->path.n + 2 <= sizeof path_small ? path_small : malloc(req->path.n + 2);
    int plen = path ? route_upstream_path(r, req->path, path, req->path.n + 2) : -1;
    ex->wu = &ex->gen->ups[r->upstream->index];
    int tried_ok = ex_reserve((void **)&ex->tried, &ex->tried_cap, r->upstream->n_servers, sizeof *ex->tried);
    if (tried_ok == 0)
        memset(ex->tried, 0, r->upstream->n_servers * sizeof *ex->tried);
    if (plen < 0 || tried_ok < 0) {
        if (path != path_small)
            free(path);
        return ex_send_error(ex, 500);
    }
    ex->tunnel_requested = req->conn_upgrade && req->upgrade.n;
    retry_budget_on_request(&ex->wu->budget, loop_now(ex->w->loop));
    struct hdr_request_ctx rc = {
        .fwd = &ex->cfg->forwarding, .ops = &r->request_headers, .path = str_make(path, (size_t)plen),
        .client_ip = str_make(ex->peer_ip, strlen(ex->peer_ip)),
        .client_ipv6 = ex->c->peer.sa.sa_family == AF_INET6, .scheme = ex->c->tls ? "https" : "http",
        .fallback_host = str_make(r->upstream->servers[0].address, strlen(r->upstream->servers[0].address)),
        .tunnel = ex->tunnel_requested,
        .framing = kind == H1_BODY_CHUNKED ? HDR_FRAME_CHUNKED : kind == H1_BODY_LENGTH ? HDR_FRAME_LENGTH : HDR_FRAME_NONE,
        .length = kind == H1_BODY_LENGTH ? length : 0,
        .set_name = ex->policy.set_name, .set_value = ex->policy.set_value, .n_set = ex->policy.n_set,
    };
    hdr_build_request(&ex->up_head, req, &rc);
    if (ex->body_held) {
        sbuf_append(&ex->up_head, ex->body_hold.p, ex->body_hold.len);
        kind = H1_BODY_NONE; /* nothing more to read from the client */
    } else if (ex->body_partial && ex->body_hold.len) { /* a zero-size chunk would end the body */
        char size[20];
        sbuf_append(&ex->up_head, size, h1_chunk_header(size, ex->body_hold.len));
        sbuf_append(&ex->up_head, ex->body_hold.p, ex->body_hold.len);
        sbuf_append(&ex->up_head, "\r\n", 2);
    }
    if (path != path_small)
        free(path);
    size_t resp_cap = ex->resp_hdrs_cap;
    int resp_ok = ex_reserve((void **)&ex->resp_hdrs, &resp_cap, ex->cfg->limits.max_headers, sizeof *ex->resp_hdrs);
    ex->resp_hdrs_cap = (uint32_t)resp_cap;
    if (ex->up_head.failed || resp_ok < 0)
        return ex_send_error(ex, 500);
    pump_init(&ex->req_pump, kind, kind == H1_BODY_LENGTH ? (uint64_t)req->content_length : 0,
              kind == H1_BODY_CHUNKED, &ex->up_head);
    ex->req_pump.limit = max;
    if (ex->body_partial)
        ex_resume_held_body(ex);
    if (kind == H1_BODY_CHUNKED)
        ex->req_pump.dec.trailers = &ex->req_trailers;
    ex_keep_replay(ex, kind);
    if (req->expect_continue && kind != H1_BODY_NONE && req->version_minor >= 1 && !ex->body_uninspected &&
        !ex->body_partial)
        sbuf_append(&ex->resp_head, ex_continue_line, EX_CONTINUE_LEN);
    if (kind != H1_BODY_NONE)
        ex_arm_client_timer(ex, ex->cfg->limits.body_timeout_ms);
    else
        loop_timer_stop(ex->w->loop, &ex->c->timer);
    return ex_connect(ex, false);
}

enum ex_step ex_action(struct exchange *ex)
{
    switch (ex->route->action) {
    case ROUTE_RESPOND: return ex_respond_route(ex);
    case ROUTE_REDIRECT: return ex_redirect_route(ex);
    case ROUTE_UPSTREAM: return ex->route->cache.enabled && ex_reserve_resp_headers(ex) == 0 ? ex_cache_step(ex)
                                                                                         : ex_forward(ex);
    }
    return ex_send_error(ex, 500);
}

static enum ex_step ex_dispatch(struct exchange *ex)
{
    if (ex->req.conn_close || ex->w->draining)
        ex->client_close = true;
    if (ex->lcfg && ex->lcfg->redirect_https && !ex->c->tls)
        return ex_redirect_https(ex, ex->lcfg->redirect_https);
    if (ex_normalize_path(ex) < 0)
        return ex_send_error(ex, 400);
    ex->route = route_match(ex->cfg, &ex->req);
    if (!ex->route)
        return ex_send_error(ex, 404);
    return ex_begin_steps(ex);
}

void exchange_start(struct client *c, struct http_msg *req)
{
    struct exchange *ex = ex_new(c);
    if (!ex) {
        client_close(c);
        return;
    }
    if (ex_adopt_head(ex, req) < 0) {
        client_close(c);
        return;
    }
    if (ex->lcfg && ex->lcfg->tls.client_auth != TLS_CLIENT_AUTH_OFF) /* never trust the client's own */
        policy_set_header(&ex->policy, ex->lcfg->tls.client_subject_header, c->tls_subject);
    if (ex->cfg->n_trusted_proxies) {
        policy_real_client(ex->cfg, &c->peer.sa, &ex->req, &ex->client_addr);
        sock_format_ip((const struct sockaddr *)&ex->client_addr, ex->client_ip, sizeof ex->client_ip);
    }
    if (ex_dispatch(ex) == EX_AGAIN)
        ex_run(ex);
}

void exchange_reject(struct client *c, int status)
{
    struct exchange *ex = ex_new(c);
    if (!ex) {
        client_close(c);
        return;
    }
    ex->req.version_minor = 1;
    ex->client_close = true;
    if (ex_send_error(ex, status) == EX_AGAIN)
        ex_run(ex);
}

