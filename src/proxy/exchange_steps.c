/* exchange_steps: the route's request steps (policy) as exchange states — holding a body a step
 * inspects, waiting for a step that waits — and the normalized path routes and backends see. */
#include "proxy/exchange_priv.h"

#include <string.h>
#include <unistd.h>

#include "http/path.h"
#include "proxy/client.h"

/* --- request steps (DESIGN: the life of one request, step 3) --------------------------------------- */

static void ex_on_policy_resume(struct policy_run *run)
{
    struct exchange *ex = container_of(run, struct exchange, policy);
    if (ex->state == EX_POLICY)
        ex_run(ex);
}

enum ex_step ex_policy_step(struct exchange *ex)
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
enum ex_step ex_hold_body_step(struct exchange *ex)
{
    struct client *c = ex->c;
    bool no_socket = false;
    enum pump_status s = pump_run(&ex->hold_pump, &c->in, &c->xp, &c->readable, NULL, &no_socket);
    if (s == PUMP_DONE) {
        ex->body_held = true;
        return ex_policy_step(ex);
    }
    if (s == PUMP_TOO_LARGE && ex->hold_partial_ok) {
        ex->body_partial = true; /* longer than the buffer: what we hold goes first, the rest streams */
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

static enum ex_step ex_start_hold(struct exchange *ex, enum h1_body_kind kind, uint64_t limit)
{
    if (ex->req.expect_continue && ex->req.version_minor >= 1 &&
        xport_write(&ex->c->xp, ex_continue_line, EX_CONTINUE_LEN) < 0)
        return ex_abort_client(ex); /* RFC 9110 §10.1.1: ask for the body we are about to read */
    pump_init(&ex->hold_pump, kind, kind == H1_BODY_LENGTH ? (uint64_t)ex->req.content_length : 0,
              false, NULL);
    ex->hold_pump.sink = &ex->body_hold;
    ex->hold_pump.limit = limit;
    ex->state = EX_HOLD_BODY;
    ex_arm_client_timer(ex, ex->cfg->limits.body_timeout_ms);
    return EX_AGAIN;
}

/* `buffering.request`: the body is read whole before a server is picked, so a slow upload does
 * not hold a backend connection. A Content-Length beyond the buffer streams as usual; a chunked
 * body that outgrows it is sent as what was held followed by the rest, streaming. */
static enum ex_step ex_buffer_request(struct exchange *ex, enum h1_body_kind kind)
{
    uint64_t size = ex->route->buffering.request;
    if (!size || ex->route->action != ROUTE_UPSTREAM ||
        (kind == H1_BODY_LENGTH && (uint64_t)ex->req.content_length > size))
        return ex_policy_step(ex);
    ex->hold_partial_ok = true;
    return ex_start_hold(ex, kind, size);
}

/* Starts the route's request steps, holding the body first when a step inspects it. */
enum ex_step ex_begin_steps(struct exchange *ex)
{
    if (ex->cache_refresh)
        return ex_action(ex); /* our own refresh: the client's request already passed the steps */
    uint64_t limit;
    enum h1_body_kind kind = h1_request_body_kind(&ex->req);
    if (kind == H1_BODY_NONE)
        return ex_policy_step(ex);
    if (!policy_wants_body(ex->route, &limit))
        return ex_buffer_request(ex, kind);
    limit = ex_min_limit(limit, ex->cfg->limits.max_body_bytes);
    if (kind == H1_BODY_LENGTH && (uint64_t)ex->req.content_length > limit) {
        if (ex->route->waf.mode == WAF_BLOCK) /* an uninspected body must not pass */
            return ex_send_error(ex, 413);
        ex->body_uninspected = true; /* detect mode: headers-only inspection */
        return ex_policy_step(ex);
    }
    return ex_start_hold(ex, kind, limit);
}

/* Routes match, and the backend receives, the normalized path (see http/path.h); the raw target
 * stays for the log and the WAF. Returns -1 when the path climbs above the root. */
int ex_normalize_path(struct exchange *ex)
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

