#include "proxy/exchange.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "core/sock.h"
#include "http/h1.h"
#include "http/hdr.h"
#include "http/path.h"
#include "policy/policy.h"
#include "proxy/client.h"
#include "proxy/pump.h"
#include "proxy/route.h"
#include "proxy/select.h"
#include "proxy/worker.h"

enum ex_state { EX_HOLD_BODY, EX_POLICY, EX_LOCAL, EX_BACKOFF, EX_CONNECT, EX_WAIT_HEAD, EX_BODY, EX_TUNNEL };
enum ex_step { EX_AGAIN, EX_WAIT, EX_GONE };

static const char ex_continue_line[] = "HTTP/1.1 100 Continue\r\n\r\n";

struct exchange {
    struct client *c;
    struct worker *w;
    struct worker_gen *gen;           /* the generation it started on, held until it ends */
    const struct config *cfg;         /* gen's configuration */
    enum ex_state state;
    struct http_msg req;              /* slices into req_raw; headers = req_hdrs */
    char *req_raw;                    /* owned copy of the request head (capacity req_raw_cap) */
    uint32_t req_raw_cap;
    struct http_header *req_hdrs;     /* owned, capacity req_hdrs_cap */
    uint32_t req_hdrs_cap;
    uint32_t resp_hdrs_cap;
    size_t tried_cap;
    const struct conf_route *route;
    uint64_t t_start;
    char client_ip[48];               /* the real client (behind trusted proxies) */
    char peer_ip[48];                 /* who connected: appended to X-Forwarded-For */
    struct sockaddr_storage client_addr;
    /* request steps */
    struct policy_run policy;
    struct pump hold_pump;            /* EX_HOLD_BODY: the client's body into body_hold */
    struct sbuf body_hold;            /* the whole request body, held for inspection */
    struct sbuf path_norm;            /* req.path when normalization changed it (path + query) */
    bool body_held;                   /* the body sits in body_hold: it goes upstream from there */
    bool body_uninspected;            /* too large to hold (detect mode): headers-only inspection */
    /* upstream side */
    struct worker_upstream *wu;
    int server;                       /* -1 until picked */
    bool *tried;                      /* per server, owned */
    unsigned attempts;
    bool reused;                      /* current connection came from the pool */
    bool retried_reused;
    bool tunnel_requested;
    struct upstream_conn *uc;
    struct loop_timer up_timer;       /* connect, response or upstream idle deadline */
    struct sbuf up_head;              /* request head sent upstream, kept for a retry */
    struct pump req_pump;             /* client -> upstream body */
    struct sbuf replay;               /* copy of a small idempotent request's body, for a retry */
    bool req_done;
    uint64_t t_upstream;              /* when the upstream attempt started */
    int64_t upstream_ms;
    /* response side */
    struct http_msg resp;
    struct http_header *resp_hdrs;    /* owned */
    struct sbuf resp_head;            /* interim heads, then the final head (or a local answer) */
    uint32_t resp_head_off;           /* written before the response pump took over */
    struct pump resp_pump;            /* upstream -> client body, or a local answer */
    bool resp_started;                /* the final head is committed */
    bool client_close;                /* close the client connection after this exchange */
    bool upstream_close;              /* the server said Connection: close: do not pool */
    int status;
};

static enum ex_step ex_run_state(struct exchange *ex);
static void ex_run(struct exchange *ex);
static enum ex_step ex_policy_step(struct exchange *ex);
static enum ex_step ex_hold_body_step(struct exchange *ex);

/* --- helpers ------------------------------------------------------------------------------ */

static const struct conf_server *ex_server(const struct exchange *ex)
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
static void ex_server_begin(struct exchange *ex, int server)
{
    ex->server = server;
    balance_begin(&ex->wu->bal, server);
    if (ex_server_stats(ex))
        STATS_ADD(ex_server_stats(ex)->active, 1);
}

static void ex_server_end(struct exchange *ex)
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
    uint64_t out = ex->resp_pump.bytes_out;
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
        .status = ex->status,
        .bytes_in = ex->req.head_len + body_out,
        .bytes_out = ex->resp_pump.bytes_out,
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
static enum ex_step ex_finish(struct exchange *ex, bool upstream_reusable)
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

static enum ex_step ex_abort_client(struct exchange *ex)
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

static void ex_arm_client_timer(struct exchange *ex, uint64_t ms)
{
    loop_timer_after(ex->w->loop, &ex->c->timer, ms);
}

/* --- local answers -------------------------------------------------------------------------- */

/* The request body is not (all) read: answering now means closing after (RFC 9112 §9.6). */
static bool ex_body_unread(const struct exchange *ex)
{
    if (ex->req_pump.in_kind != H1_BODY_NONE)
        return !ex->req_done;
    return h1_request_body_kind(&ex->req) != H1_BODY_NONE && !ex->body_held;
}


/* Starts writing a complete answer composed by us: RESP_HEAD holds head and body. */
static enum ex_step ex_send_local(struct exchange *ex, int status)
{
    ex->status = status;
    ex->resp_started = true;
    if (ex_body_unread(ex))
        ex->client_close = true;
    pump_init(&ex->resp_pump, H1_BODY_NONE, 0, false, &ex->resp_head);
    ex->resp_pump.prefix_off = ex->resp_head_off;
    ex->state = EX_LOCAL;
    return EX_AGAIN;
}

static void ex_local_head(struct exchange *ex, int status, size_t body_len)
{
    struct sbuf *h = &ex->resp_head;
    if (ex_body_unread(ex))
        ex->client_close = true; /* say so in this head: the unread body would be taken for the
                                    next request */
    sbuf_append_cstr(h, "HTTP/1.1 ");
    sbuf_append_u64(h, (uint64_t)status);
    sbuf_append(h, " ", 1);
    sbuf_append_cstr(h, hdr_reason(status));
    sbuf_append_cstr(h, "\r\nContent-Length: ");
    sbuf_append_u64(h, body_len);
    sbuf_append(h, "\r\n", 2);
    if (ex->client_close || ex->w->draining)
        sbuf_append_cstr(h, "Connection: close\r\n");
    else if (ex->req.version_minor == 0)
        sbuf_append_cstr(h, "Connection: keep-alive\r\n");
    struct str server = hdr_server_value(ex->cfg);
    if (server.n)
        sbuf_append_header(h, STR_LIT("Server"), server);
    for (size_t i = 0; ex->route && i < ex->route->n_security_headers; i++) {
        const struct conf_header_kv *kv = &ex->route->security_headers[i];
        sbuf_append_header(h, str_make(kv->name, strlen(kv->name)), str_make(kv->value, strlen(kv->value)));
    }
}

/* A short plain answer that reveals nothing about the backends (DESIGN: errors a client can see),
 * with EXTRA header lines (a request step's Retry-After, WWW-Authenticate...) if not NULL. */
static enum ex_step ex_send_answer(struct exchange *ex, int status, const struct sbuf *extra)
{
    char body[96];
    int n = snprintf(body, sizeof body, "%d %s\n", status, hdr_reason(status));
    if (status == 400 || status == 408 || status == 413 || status == 414 || status == 431 ||
        status == 501 || status == 505)
        ex->client_close = true;
    ex->resp_head.len = ex->resp_head_off; /* drop any unsent interim head */
    ex_local_head(ex, status, (size_t)n);
    if (extra && extra->len)
        sbuf_append(&ex->resp_head, extra->p, extra->len);
    sbuf_append_cstr(&ex->resp_head, "Content-Type: text/plain\r\n\r\n");
    if (ex->req.method_id != HTTP_METHOD_HEAD)
        sbuf_append(&ex->resp_head, body, (size_t)n);
    return ex_send_local(ex, status);
}

static enum ex_step ex_send_error(struct exchange *ex, int status)
{
    return ex_send_answer(ex, status, NULL);
}

static enum ex_step ex_respond_route(struct exchange *ex)
{
    const struct conf_route *r = ex->route;
    size_t len = strlen(r->respond_body);
    ex_local_head(ex, r->respond_status, len);
    for (size_t i = 0; i < r->n_respond_headers; i++)
        sbuf_append_header(&ex->resp_head, str_make(r->respond_headers[i].name, strlen(r->respond_headers[i].name)),
                           str_make(r->respond_headers[i].value, strlen(r->respond_headers[i].value)));
    sbuf_append(&ex->resp_head, "\r\n", 2);
    if (ex->req.method_id != HTTP_METHOD_HEAD)
        sbuf_append(&ex->resp_head, r->respond_body, len);
    return ex_send_local(ex, r->respond_status);
}

static enum ex_step ex_redirect_route(struct exchange *ex)
{
    char location[8192];
    int n = route_redirect_location(ex->route, ex->req.host, ex->req.path, "http", location, sizeof location);
    if (n < 0)
        return ex_send_error(ex, 414);
    ex_local_head(ex, ex->route->redirect_status, 0);
    sbuf_append_header(&ex->resp_head, STR_LIT("Location"), str_make(location, (size_t)n));
    sbuf_append(&ex->resp_head, "\r\n", 2);
    return ex_send_local(ex, ex->route->redirect_status);
}

static enum ex_step ex_local_step(struct exchange *ex)
{
    struct client *c = ex->c;
    enum pump_status s = pump_run(&ex->resp_pump, &c->in, c->io.fd, &c->readable, c->io.fd, &c->writable);
    if (s == PUMP_DONE)
        return ex_finish(ex, false);
    if (s != PUMP_BLOCKED)
        return ex_abort_client(ex);
    ex_arm_client_timer(ex, ex->cfg->limits.send_timeout_ms);
    return EX_WAIT;
}

/* --- upstream connection ---------------------------------------------------------------------- */

static void ex_on_up_timer(struct loop_timer *t);

static struct server_state *const *ex_states(const struct exchange *ex)
{
    return ex->gen->rt->states[ex->route->upstream->index];
}

static void ex_record(struct exchange *ex, bool success)
{
    select_record(ex->w, ex->route->upstream, ex_states(ex), (size_t)ex->server, success, loop_now(ex->w->loop));
}

static enum ex_step ex_upstream_failed(struct exchange *ex, int status, const char *why);

static enum ex_step ex_connect(struct exchange *ex, bool fresh)
{
    const struct conf_upstream *up = ex->route->upstream;
    if (ex->server < 0) {
        uint64_t key = up->balance == BALANCE_HASH
                           ? balance_request_hash(up, &ex->req, (struct sockaddr *)&ex->client_addr) : 0;
        int s = select_server(ex->wu, up, ex_states(ex), ex->tried, key, loop_now(ex->w->loop));
        if (s == SELECT_ALL_DOWN)
            return ex_send_error(ex, 503); /* at once: waiting for a connect timeout helps nobody */
        if (s < 0)
            return ex_send_error(ex, 502);
        ex_server_begin(ex, s);
    }
    ex->attempts++;
    ex->tried[ex->server] = true;
    struct upstream_pool *pool = &ex->wu->pools[ex->server];
    struct upstream_conn *uc = fresh ? NULL : upstream_pool_take(pool);
    ex->reused = uc != NULL;
    if (!uc && !(uc = upstream_connect(pool)))
        return ex_upstream_failed(ex, 502, strerror(errno));
    uc->ex = ex;
    ex->uc = uc;
    ex->t_upstream = loop_now(ex->w->loop);
    if (ex->reused) {
        uc->writable = true;
        ex->state = EX_WAIT_HEAD;
        return EX_AGAIN;
    }
    loop_timer_after(ex->w->loop, &ex->up_timer, up->connect_timeout_ms);
    ex->state = EX_CONNECT;
    return EX_WAIT;
}

/* Puts the kept body back in front of the client's unread bytes, for a retry. */
static int ex_replay_body(struct exchange *ex)
{
    struct client *c = ex->c;
    struct buf *b = buf_get();
    /* Bytes taken but not yet written sit in c->in and in the copy: skip them in c->in. */
    uint32_t skip = ex->req_pump.ready;
    uint32_t rest = c->in ? buf_len(c->in) - skip : 0;
    uint32_t len = (uint32_t)ex->replay.len;
    if (!b || ex->replay.failed || len + rest > b->cap) {
        buf_put(b);
        return -1;
    }
    if (len)
        memcpy(b->data, ex->replay.p, len);
    if (rest)
        memcpy(b->data + len, buf_rptr(c->in) + skip, rest);
    b->wpos = len + rest;
    buf_put(c->in);
    c->in = b;
    struct pump *p = &ex->req_pump;
    struct sbuf *prefix = p->prefix;
    pump_init(p, H1_BODY_LENGTH, (uint64_t)ex->req.content_length, false, prefix);
    p->limit = ex->cfg->limits.max_body_bytes;
    sbuf_reset(&ex->replay);
    p->tap = &ex->replay; /* the bytes go through the tap again */
    return 0;
}

/* Rewinds what was sent upstream so the request can be sent again on another connection. */
static void ex_rewind_request(struct exchange *ex)
{
    if (ex->req_pump.tap && ex_replay_body(ex) < 0)
        ex->req_pump.tap = NULL; /* cannot replay: the retry conditions will refuse */
    ex->req_pump.prefix_off = 0;
    ex->req_pump.bytes_out = 0;
    ex->req_done = false;
    if (ex->uc) {
        upstream_close(ex->uc);
        ex->uc = NULL;
    }
}

/* Gives up on the upstream side and answers STATUS ourselves (nothing reached the client yet). */
static enum ex_step ex_fail_upstream(struct exchange *ex, int status)
{
    ex_rewind_request(ex);
    return ex_send_error(ex, status);
}

/* A retry goes to another server, before any response byte reached the client, only when the
 * request can be sent again, the method allows it once the server may have seen it, attempts
 * remain, another server exists, and the worker's retry budget agrees (so that a failing pool
 * cannot multiply its load). */
/* The request can be sent again: no body, a kept copy of it, or none of it taken yet. */
static bool ex_replayable(const struct exchange *ex)
{
    return ex->req_pump.in_kind == H1_BODY_NONE || ex->req_pump.tap || ex->req_pump.body == 0;
}

static bool ex_may_retry(struct exchange *ex, bool sent)
{
    const struct conf_upstream *up = ex->route->upstream;
    uint64_t now = loop_now(ex->w->loop);
    if (ex->attempts >= up->retries.attempts || !ex_replayable(ex) || ex->resp_pump.bytes_out)
        return false;
    if (sent && !http_method_is_idempotent(ex->req.method_id))
        return false;
    if (!select_has_candidate(up, ex_states(ex), ex->tried, now))
        return false;
    if (!retry_budget_take(&ex->wu->budget, now)) {
        STATS_ADD(ex->w->stats.retry_budget_exhausted, 1);
        return false;
    }
    return true;
}

/* Waits a jittered backoff, then tries another server (EX_BACKOFF ends in ex_on_up_timer). */
static enum ex_step ex_retry(struct exchange *ex)
{
    const struct conf_upstream *up = ex->route->upstream;
    ex_rewind_request(ex);
    ex_server_end(ex);
    ex->server = -1;
    STATS_ADD(ex->w->stats.retries, 1);
    if (ex->gen->up_stats[up->index])
        STATS_ADD(ex->gen->up_stats[up->index]->retries, 1);
    uint64_t delay = retry_backoff_ms(up->retries.backoff_ms, up->retries.backoff_max_ms, ex->attempts,
                                      &ex->wu->bal.rng);
    loop_timer_after(ex->w->loop, &ex->up_timer, delay ? delay : 1);
    ex->state = EX_BACKOFF;
    return EX_WAIT;
}

/* The upstream failed before the response head: retry when that is safe, else answer STATUS. */
static enum ex_step ex_upstream_failed(struct exchange *ex, int status, const char *why)
{
    const struct conf_upstream *up = ex->route->upstream;
    bool replayable = ex_replayable(ex);
    bool sent = ex->reused || (ex->uc && ex->uc->connected);
    log_info("upstream %s server %s: %s", up->name, ex_server(ex)->address, why);
    if (ex->reused && !ex->retried_reused && replayable && http_method_is_idempotent(ex->req.method_id)) {
        /* The server may have closed a pooled connection just as we reused it: one fresh try,
         * and no mark against the server. */
        ex->retried_reused = true;
        ex->attempts--; /* the same attempt, on a fresh connection: not one of `retries.attempts` */
        ex_rewind_request(ex);
        return ex_connect(ex, true);
    }
    ex_record(ex, false);
    if (ex_may_retry(ex, sent))
        return ex_retry(ex);
    return ex_fail_upstream(ex, status);
}

static enum ex_step ex_connect_step(struct exchange *ex)
{
    struct upstream_conn *uc = ex->uc;
    if (!uc->writable)
        return EX_WAIT;
    int err = sock_error(uc->io.fd);
    if (err)
        return ex_upstream_failed(ex, 502, strerror(err));
    uc->connected = true;
    /* While the request goes out, a server that stops reading is caught by the idle timeout. */
    loop_timer_after(ex->w->loop, &ex->up_timer, ex->route->upstream->idle_timeout_ms);
    ex->state = EX_WAIT_HEAD;
    return EX_AGAIN;
}

/* --- request forwarding and response head ------------------------------------------------------ */

/* Writes pending interim heads (100 Continue, 103) to the client before the final response. */
static enum ex_step ex_flush_interim(struct exchange *ex)
{
    struct client *c = ex->c;
    while (ex->resp_head_off < ex->resp_head.len && c->writable) {
        ssize_t w = write(c->io.fd, ex->resp_head.p + ex->resp_head_off, ex->resp_head.len - ex->resp_head_off);
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
static bool ex_body_too_slow(const struct exchange *ex, uint64_t body)
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
    enum pump_status s = pump_run(&ex->req_pump, &c->in, c->io.fd, &c->readable, ex->uc->io.fd, &ex->uc->writable);
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
        ssize_t n = read(uc->io.fd, buf_wptr(uc->in), buf_space(uc->in));
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
    enum h1_body_kind kind = h1_response_body_kind(resp, ex->req.method_id);
    enum hdr_framing framing = ex_client_framing(ex, kind);
    if (framing == HDR_FRAME_CLOSE || ex->w->draining)
        ex->client_close = true;
    struct hdr_response_ctx rc = {
        .fwd = &ex->cfg->forwarding, .ops = &ex->route->response_headers, .framing = framing,
        .length = kind == H1_BODY_LENGTH ? (uint64_t)resp->content_length : 0,
        .close = ex->client_close, .keep_alive_10 = ex->req.version_minor == 0,
        .security = ex->route->security_headers, .n_security = ex->route->n_security_headers,
        .server = hdr_server_value(ex->cfg),
    };
    hdr_build_response(&ex->resp_head, resp, &rc);
    ex->status = resp->status;
    ex->resp_started = true;
    ex->upstream_ms = (int64_t)(loop_now(ex->w->loop) - ex->t_upstream);
    ex->upstream_close = resp->conn_close;
    buf_consume(ex->uc->in, resp->head_len);
    pump_init(&ex->resp_pump, kind, kind == H1_BODY_LENGTH ? (uint64_t)resp->content_length : 0,
              framing == HDR_FRAME_CHUNKED, &ex->resp_head);
    ex->resp_pump.prefix_off = ex->resp_head_off;
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
    uint64_t before = ex->resp_pump.bytes_out;
    enum pump_status s = pump_run(&ex->resp_pump, &uc->in, uc->io.fd, &uc->readable, c->io.fd, &c->writable);
    if (ex->resp_pump.bytes_out != before) {
        loop_timer_after(ex->w->loop, &ex->up_timer, ex->route->upstream->idle_timeout_ms);
        ex_arm_client_timer(ex, ex->cfg->limits.send_timeout_ms);
    }
    if (s == PUMP_BLOCKED && ex->resp_pump.bytes_out)
        client_no_delay(c); /* a response in several writes: its tail must not wait for an ACK */
    if (s == PUMP_DONE) {
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
        up = pump_run(&ex->req_pump, &c->in, c->io.fd, &c->readable, uc->io.fd, &uc->writable);
        if (up == PUMP_DONE) {
            ex->req_done = true;
            shutdown(uc->io.fd, SHUT_WR);
        }
    }
    down = pump_run(&ex->resp_pump, &uc->in, uc->io.fd, &uc->readable, c->io.fd, &c->writable);
    if (up > PUMP_DONE || down > PUMP_DONE)
        return ex_abort_client(ex);
    if (down == PUMP_DONE) {
        if (!ex->req_done)
            shutdown(c->io.fd, SHUT_WR);
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
    case EX_BACKOFF: return EX_WAIT;
    case EX_CONNECT: return ex_connect_step(ex);
    case EX_WAIT_HEAD: return ex_wait_head_step(ex);
    case EX_BODY: return ex_body_step(ex);
    case EX_TUNNEL: return ex_tunnel_step(ex);
    }
    return EX_WAIT;
}

static void ex_run(struct exchange *ex)
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

static void ex_on_up_timer(struct loop_timer *t)
{
    struct exchange *ex = container_of(t, struct exchange, up_timer);
    enum ex_step st;
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

static enum ex_step ex_forward(struct exchange *ex)
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
        .client_ipv6 = ex->c->peer.sa.sa_family == AF_INET6, .scheme = "http",
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
    ex_keep_replay(ex, kind);
    if (req->expect_continue && kind != H1_BODY_NONE && req->version_minor >= 1 && !ex->body_uninspected)
        sbuf_append(&ex->resp_head, ex_continue_line, sizeof ex_continue_line - 1);
    if (kind != H1_BODY_NONE)
        ex_arm_client_timer(ex, ex->cfg->limits.body_timeout_ms);
    else
        loop_timer_stop(ex->w->loop, &ex->c->timer);
    return ex_connect(ex, false);
}

static enum ex_step ex_action(struct exchange *ex)
{
    switch (ex->route->action) {
    case ROUTE_RESPOND: return ex_respond_route(ex);
    case ROUTE_REDIRECT: return ex_redirect_route(ex);
    case ROUTE_UPSTREAM: return ex_forward(ex);
    }
    return ex_send_error(ex, 500);
}

/* --- request steps (DESIGN: the life of one request, step 3) --------------------------------------- */

static void ex_on_policy_resume(struct policy_run *run)
{
    struct exchange *ex = container_of(run, struct exchange, policy);
    if (ex->state == EX_POLICY)
        ex_run(ex);
}

static enum ex_step ex_policy_step(struct exchange *ex)
{
    const struct conf_listener *cl = worker_find_listener(ex->cfg, ex->c->listener);
    struct policy_req rq = {
        .cfg = ex->cfg, .set = ex->gen->rt->policy, .route = ex->route, .listener = cl,
        .pw = ex->w->policy, .counters = &ex->w->stats.policy, .req = &ex->req,
        .client = (const struct sockaddr *)&ex->client_addr, .client_ip = ex->client_ip,
        .local = cl ? (const struct sockaddr *)&cl->addr : NULL, .now_ms = loop_now(ex->w->loop),
        .body = ex->body_hold.p, .body_len = ex->body_hold.len, .body_complete = ex->body_held,
    };
    ex->policy.resume = ex_on_policy_resume;
    ex->state = EX_POLICY;
    if (ex->policy.pending && ex->c->rdhup)
        return ex_abort_client(ex); /* gone while a step waited: nothing goes upstream */
    switch (policy_run(&ex->policy, &rq)) {
    case POLICY_PASS: return ex_action(ex);
    case POLICY_ANSWER: return ex_send_answer(ex, ex->policy.status, &ex->policy.answer_headers);
    case POLICY_PENDING: return EX_WAIT;
    }
    return ex_send_error(ex, 500);
}

/* Reads the whole request body into body_hold before the steps run (a WAF inspects bodies). */
static enum ex_step ex_hold_body_step(struct exchange *ex)
{
    struct client *c = ex->c;
    bool no_socket = false;
    enum pump_status s = pump_run(&ex->hold_pump, &c->in, c->io.fd, &c->readable, -1, &no_socket);
    if (s == PUMP_DONE) {
        ex->body_held = true;
        return ex_policy_step(ex);
    }
    ex->client_close = true; /* from here on, the rest of the body is not ours to read */
    if (s == PUMP_TOO_LARGE)
        return ex_send_error(ex, 413);
    if (s == PUMP_SRC_ERROR)
        return ex_send_error(ex, 400);
    if (s != PUMP_BLOCKED)
        return ex_abort_client(ex);
    if (ex_body_too_slow(ex, ex->hold_pump.body))
        return ex_send_error(ex, 408);
    ex->client_close = false;
    ex_arm_client_timer(ex, ex->cfg->limits.body_timeout_ms);
    return EX_WAIT;
}

static uint64_t ex_min_limit(uint64_t a, uint64_t b)
{
    return !a ? b : !b ? a : a < b ? a : b;
}

/* Starts the route's request steps, holding the body first when a step inspects it. */
static enum ex_step ex_begin_steps(struct exchange *ex)
{
    uint64_t limit;
    enum h1_body_kind kind = h1_request_body_kind(&ex->req);
    if (kind == H1_BODY_NONE || !policy_wants_body(ex->route, &limit))
        return ex_policy_step(ex);
    limit = ex_min_limit(limit, ex->cfg->limits.max_body_bytes);
    if (kind == H1_BODY_LENGTH && (uint64_t)ex->req.content_length > limit) {
        if (ex->route->waf.mode == WAF_BLOCK) /* an uninspected body must not pass */
            return ex_send_error(ex, 413);
        ex->body_uninspected = true; /* detect mode: headers-only inspection */
        return ex_policy_step(ex);
    }
    if (ex->req.expect_continue && ex->req.version_minor >= 1 &&
        write(ex->c->io.fd, ex_continue_line, sizeof ex_continue_line - 1) < 0)
        return ex_abort_client(ex); /* RFC 9110 §10.1.1: ask for the body we are about to read */
    pump_init(&ex->hold_pump, kind, kind == H1_BODY_LENGTH ? (uint64_t)ex->req.content_length : 0,
              false, NULL);
    ex->hold_pump.sink = &ex->body_hold;
    ex->hold_pump.limit = limit;
    ex->state = EX_HOLD_BODY;
    ex_arm_client_timer(ex, ex->cfg->limits.body_timeout_ms);
    return EX_AGAIN;
}

/* Routes match, and the backend receives, the normalized path (see http/path.h); the raw target
 * stays for the log and the WAF. Returns -1 when the path climbs above the root. */
static int ex_normalize_path(struct exchange *ex)
{
    struct str p = ex->req.path;
    const char *q = p.n ? memchr(p.p, '?', p.n) : NULL;
    size_t len = q ? (size_t)(q - p.p) : p.n;
    if (!len || p.p[0] != '/' || !path_needs_normalize(p.p, len))
        return 0;
    sbuf_append(&ex->path_norm, p.p, p.n); /* room for the result, which is never longer */
    if (ex->path_norm.failed)
        return -1;
    int n = path_normalize(p.p, len, ex->path_norm.p);
    if (n < 0)
        return -1;
    memmove(ex->path_norm.p + n, p.p + len, p.n - len); /* the query, unchanged */
    ex->req.path = str_make(ex->path_norm.p, (size_t)n + p.n - len);
    return 0;
}

static enum ex_step ex_dispatch(struct exchange *ex)
{
    if (ex->req.conn_close || ex->w->draining)
        ex->client_close = true;
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
