/* exchange_upstream: picking a server, connecting, and what happens when that fails: retries on
 * another server (bounded by attempts and the budget), replay of what was sent, backoff. */
#include "proxy/exchange_priv.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "core/log.h"
#include "core/sock.h"
#include "proxy/client.h"
#include "proxy/h2_upstream.h"
#include "proxy/select.h"

/* --- upstream connection ---------------------------------------------------------------------- */


static struct server_state *const *ex_states(const struct exchange *ex)
{
    return ex->gen->rt->states[ex->route->upstream->index];
}

void ex_record(struct exchange *ex, bool success)
{
    select_record(ex->w, ex->route->upstream, ex_states(ex), (size_t)ex->server, success, loop_now(ex->w->loop));
}

enum ex_step ex_upstream_failed(struct exchange *ex, int status, const char *why);

enum ex_step ex_connect(struct exchange *ex, bool fresh)
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
enum ex_step ex_fail_upstream(struct exchange *ex, int status)
{
    enum ex_step st;
    if (status >= 500 && ex_cache_on_failure(ex, &st)) /* a stale copy allowed for errors */
        return st;
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

bool ex_may_retry(struct exchange *ex, bool sent)
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
enum ex_step ex_retry(struct exchange *ex)
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
enum ex_step ex_upstream_failed(struct exchange *ex, int status, const char *why)
{
    const struct conf_upstream *up = ex->route->upstream;
    /* RFC 9113 §8.7: a stream the server refused (REFUSED_STREAM, or above its GOAWAY's last
     * stream) was not processed, so even a POST (every gRPC call) may go again. */
    bool refused = ex->uc && ex->uc->h2 && errno == ECONNREFUSED;
    bool replayable = ex_replayable(ex);
    bool sent = ex->reused || (ex->uc && ex->uc->ready);
    log_info("upstream %s server %s: %s", up->name, ex_server(ex)->address, why);
    bool safe = http_method_is_idempotent(ex->req.method_id) || refused;
    if ((ex->reused || refused) && !ex->retried_reused && replayable && safe) {
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

/* TLS to the server (upstream `tls:`), within the connect timeout. */
static enum ex_step ex_tls_step(struct exchange *ex)
{
    struct upstream_conn *uc = ex->uc;
    char err[256], why[320];
    int r = upstream_tls_step(uc, err, sizeof err);
    if (r > 0)
        return EX_AGAIN;
    if (r == 0)
        return EX_WAIT;
    STATS_ADD(ex->w->stats.upstream_tls_failed, 1);
    snprintf(why, sizeof why, "TLS handshake failed: %s", err);
    return ex_upstream_failed(ex, 502, why);
}

enum ex_step ex_connect_step(struct exchange *ex)
{
    struct upstream_conn *uc = ex->uc;
    if (!uc->connected) {
        if (!uc->writable)
            return EX_WAIT;
        int err = sock_error(uc->io.fd);
        if (err)
            return ex_upstream_failed(ex, 502, strerror(err));
        uc->connected = true;
        if (uc->pool->tls && upstream_tls_begin(uc) < 0)
            return ex_upstream_failed(ex, 502, "TLS set-up failed");
    }
    if (uc->tls_handshaking) {
        enum ex_step st = ex_tls_step(ex);
        if (st != EX_AGAIN || ex->state != EX_CONNECT)
            return st;
    }
    if (ex->route->upstream->protocol == UPSTREAM_HTTP2 && !uc->h2 && h2u_attach(uc) < 0)
        return ex_upstream_failed(ex, 502, "HTTP/2 set-up failed");
    uc->ready = true;
    /* While the request goes out, a server that stops reading is caught by the idle timeout. */
    loop_timer_after(ex->w->loop, &ex->up_timer, ex->route->upstream->idle_timeout_ms);
    ex->state = EX_WAIT_HEAD;
    return EX_AGAIN;
}

