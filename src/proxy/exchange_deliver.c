/* exchange_deliver: how a response body reaches the client — compressed on the fly when the
 * route and the client agree (DESIGN step 6), and through a spool when the route buffers
 * responses, so that the upstream connection returns to its pool while a slow client reads. */
#include "proxy/exchange_priv.h"

#include <string.h>

#include "core/log.h"
#include "http/compress.h"
#include "proxy/client.h"

/* --- compression ---------------------------------------------------------------------------- */

static int ex_compress_filter(void *ctx, const char *in, size_t in_len, size_t *consumed, char *out, size_t cap,
                              size_t *produced, enum pump_flush flush)
{
    enum compress_flush f = flush == PUMP_FLUSH_FINISH ? COMPRESS_FINISH
                            : flush == PUMP_FLUSH_SYNC ? COMPRESS_SYNC : COMPRESS_NONE;
    return compress_run(ctx, in, in_len, consumed, out, cap, produced, f);
}

/* The representation could be compressed: the route compresses this type, the origin did not
 * encode it, and it is a whole body (RFC 9110 §8.4: a 206 is a part of a representation). */
static bool ex_compressible(const struct exchange *ex, const struct http_msg *resp, enum h1_body_kind kind)
{
    const struct conf_route_compress *z = &ex->route->compress;
    if (!z->enabled || kind == H1_BODY_NONE || resp->status == 206 || resp->status < 200)
        return false;
    if (http_msg_find(resp, "content-encoding") || http_msg_find(resp, "content-range"))
        return false;
    const struct http_header *ct = http_msg_find(resp, "content-type");
    if (!ct || !compress_type_matches(ct->value, z->types, z->n_types))
        return false;
    const struct http_header *cc = http_msg_find(resp, "cache-control");
    return !(cc && memmem(cc->value.p, cc->value.n, "no-transform", 12)); /* RFC 9111 §5.2.2.6 */
}

int ex_deliver_plan(struct exchange *ex, const struct http_msg *resp, enum h1_body_kind kind,
                    uint64_t length, struct hdr_response_ctx *rc)
{
    ex->zalgo = -1;
    if (!ex_compressible(ex, resp, kind))
        return 0;
    rc->vary_accept_encoding = true;
    const struct conf_route_compress *z = &ex->route->compress;
    if (kind == H1_BODY_LENGTH && length < z->min_size)
        return 0;
    const struct http_header *ae = http_msg_find(&ex->req, "accept-encoding");
    int algo = ae ? compress_negotiate(ae->value, z->algorithms, z->n_algorithms) : -1;
    if (algo < 0 || ex->req.method_id == HTTP_METHOD_HEAD)
        return 0;
    ex->zalgo = algo;
    const char *token = compress_token((enum compress_algo)algo);
    rc->content_encoding = str_make(token, strlen(token));
    return 1;
}

/* --- response buffering --------------------------------------------------------------------- */

/* Sets the response pump's compressor and, with `buffering.response`, its spool. */
int ex_deliver_start(struct exchange *ex, bool spool)
{
    if (ex->zalgo >= 0) {
        const struct conf_route_compress *z = &ex->route->compress;
        /* A known size lets the encoder size its window and tables to the body. */
        int64_t size = ex->resp_pump.in_kind == H1_BODY_LENGTH ? (int64_t)ex->resp_pump.in_left : -1;
        ex->zs = compress_new_sized((enum compress_algo)ex->zalgo, z->level[ex->zalgo], size);
        if (!ex->zs)
            return -1;
        ex->resp_pump.filter.run = ex_compress_filter;
        ex->resp_pump.filter.ctx = ex->zs;
    }
    const struct conf_route_buffering *b = &ex->route->buffering;
    if (spool && b->response && ex->resp_pump.in_kind != H1_BODY_NONE) {
        spool_init(&ex->spool, b->response, b->response_file);
        pump_init(&ex->spool_pump, H1_BODY_CLOSE, 0, false, NULL);
        ex->spooling = true;
    }
    return 0;
}

/* The upstream half of a spooled response is complete: the connection goes back to its pool
 * now, however long the client takes. */
static void ex_spool_upstream_done(struct exchange *ex)
{
    bool reusable = ex->resp_pump.in_kind != H1_BODY_CLOSE && ex->req_done && !ex->upstream_close;
    if (!ex->req_done)
        ex->client_close = true; /* the rest of the request body is still on the wire */
    if (ex->upstream_ms < 0)
        ex->upstream_ms = (int64_t)(loop_now(ex->w->loop) - ex->t_upstream);
    loop_timer_stop(ex->w->loop, &ex->up_timer);
    upstream_release(ex->uc, reusable);
    ex->uc = NULL;
    xport_shutdown_wr(&ex->spool.xp);
}

static enum ex_step ex_spool_fill(struct exchange *ex)
{
    struct upstream_conn *uc = ex->uc;
    bool room = true;
    uint64_t before = ex->resp_pump.bytes_out;
    enum pump_status s = pump_run(&ex->resp_pump, &uc->in, &uc->xp, &uc->readable, &ex->spool.xp, &room);
    if (ex->resp_pump.bytes_out != before)
        loop_timer_after(ex->w->loop, &ex->up_timer, ex->route->upstream->idle_timeout_ms);
    if (s == PUMP_DONE) {
        ex->resp_complete = true;
        ex_spool_upstream_done(ex);
        return EX_AGAIN;
    }
    if (s == PUMP_SRC_EOF || s == PUMP_SRC_ERROR)
        log_warn("upstream %s server %s: response body %s", ex->route->upstream->name, ex_server(ex)->address,
                 s == PUMP_SRC_EOF ? "truncated" : "malformed");
    return s == PUMP_BLOCKED ? EX_WAIT : ex_abort_client(ex);
}

enum ex_step ex_spool_step(struct exchange *ex)
{
    struct client *c = ex->c;
    if (ex->uc && ex_spool_fill(ex) == EX_GONE)
        return EX_GONE;
    bool avail = true;
    uint64_t before = ex->spool_pump.bytes_out;
    enum pump_status s = pump_run(&ex->spool_pump, &ex->spool_in, &ex->spool.xp, &avail, &c->xp, &c->writable);
    if (ex->spool_pump.bytes_out != before)
        ex_arm_client_timer(ex, ex->cfg->limits.send_timeout_ms);
    if (s == PUMP_BLOCKED && ex->spool_pump.bytes_out)
        client_no_delay(c);
    if (s == PUMP_DONE)
        return ex_finish(ex, false);
    if (s != PUMP_BLOCKED)
        return ex_abort_client(ex);
    /* A spool that was full and has just been drained takes the upstream's bytes again. */
    return ex->uc && spool_pending(&ex->spool) == 0 && ex->spool_pump.bytes_out != before ? EX_AGAIN : EX_WAIT;
}

void ex_deliver_end(struct exchange *ex)
{
    compress_free(ex->zs);
    ex->zs = NULL;
    pump_release(&ex->resp_pump);
    if (ex->spooling) {
        spool_free(&ex->spool);
        buf_put(ex->spool_in);
        ex->spool_in = NULL;
        ex->spooling = false;
    }
}

uint64_t ex_client_bytes(const struct exchange *ex)
{
    return ex->spooling ? ex->spool_pump.bytes_out : ex->resp_pump.bytes_out;
}
