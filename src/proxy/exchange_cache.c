/* exchange_cache: the cache step of an exchange (DESIGN: the life of one request, step 4) —
 * lookup, serving a stored or still-filling object, filling on a miss, collapsing concurrent
 * misses onto one fill, revalidation with a conditional request, and stale serving (RFC 9111,
 * RFC 5861). The store (cache/cache_store) is shared by all workers; the rules (cache/cache_rules)
 * are pure. */
#include "proxy/exchange_priv.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "proxy/client.h"

/* What the exchange keeps beside a stored object (opaque to the store, persisted on disk). */
struct ex_cache_meta {
    uint32_t version;
    struct cache_fresh fresh;
};
#define EX_CACHE_META_VERSION 1

static int64_t ex_wall(void)
{
    return (int64_t)time(NULL);
}

/* --- key and variants ------------------------------------------------------------------------- */

/* The default key is the request's URL ("http://host/path?query"): the admin API's purge by URL
 * and by prefix rebuild exactly these bytes. Other key items follow, one per line. */
static void ex_cache_key(struct exchange *ex)
{
    const struct conf_route_cache *cc = &ex->route->cache;
    struct sbuf *k = &ex->cache_key;
    sbuf_reset(k);
    for (size_t i = 0; i < cc->n_key; i++) {
        const struct conf_cache_key *item = &cc->key[i];
        const struct http_header *h;
        switch (item->kind) {
        case CACHE_KEY_SCHEME: sbuf_append_cstr(k, ex->c->tls ? "https://" : "http://"); break;
        case CACHE_KEY_HOST:
            for (size_t j = 0; j < ex->req.host.n; j++) {
                char ch = ex->req.host.p[j];
                sbuf_append(k, &(char){ (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch) }, 1);
            }
            break;
        case CACHE_KEY_PATH: {
            const char *q = memchr(ex->req.path.p, '?', ex->req.path.n);
            sbuf_append(k, ex->req.path.p, q ? (size_t)(q - ex->req.path.p) : ex->req.path.n);
            break;
        }
        case CACHE_KEY_QUERY: {
            const char *q = memchr(ex->req.path.p, '?', ex->req.path.n);
            if (q)
                sbuf_append(k, q, (size_t)(ex->req.path.p + ex->req.path.n - q));
            break;
        }
        case CACHE_KEY_METHOD: sbuf_append_cstr(k, "\n"); sbuf_append_str(k, ex->req.method); break;
        case CACHE_KEY_HEADER:
            sbuf_append_cstr(k, "\n");
            if ((h = http_msg_find(&ex->req, item->name)))
                sbuf_append_str(k, h->value);
            break;
        case CACHE_KEY_COOKIE:
            sbuf_append_cstr(k, "\n");
            if ((h = http_msg_find(&ex->req, "cookie")))
                sbuf_append_str(k, h->value); /* the whole Cookie line: coarse but safe */
            break;
        }
    }
}

/* cache_vary_fn: this request's secondary key for NAMES (called under a shard lock). */
static struct str ex_cache_vary(void *ctx, struct str names)
{
    struct exchange *ex = ctx;
    sbuf_reset(&ex->cache_vary);
    cache_rules_vary_key(&ex->req, names.p, names.n, &ex->cache_vary);
    return str_make(ex->cache_vary.p, ex->cache_vary.len);
}

static bool ex_cache_method_ok(const struct exchange *ex)
{
    const struct conf_route_cache *cc = &ex->route->cache;
    for (size_t i = 0; i < cc->n_methods; i++)
        if (ex->req.method.n == strlen(cc->methods[i]) && memcmp(ex->req.method.p, cc->methods[i], ex->req.method.n) == 0)
            return true;
    return false;
}

static const struct ex_cache_meta *ex_cache_meta_of(const struct cache_obj *o)
{
    size_t len = 0;
    const struct ex_cache_meta *m = cache_obj_meta(o, &len);
    return m && len == sizeof *m && m->version == EX_CACHE_META_VERSION ? m : NULL;
}

/* --- waking up from other workers ------------------------------------------------------------ */

static void ex_cache_mail(struct loop_task *task)
{
    struct exchange *ex = container_of(task, struct exchange, mail.task);
    ex->cache_readable = true;
    if (ex->state == EX_CACHE_WAIT || ex->state == EX_CACHE_SERVE)
        ex_run(ex);
}

/* cache_waiter notify: runs on the filler's thread, under the object's lock. */
static void ex_cache_notify(struct cache_waiter *w)
{
    struct exchange *ex = container_of(w, struct exchange, waiter);
    worker_post(ex->w, &ex->mail);
}

static void ex_cache_watch(struct exchange *ex, struct cache_obj *o)
{
    ex->waiter.notify = ex_cache_notify;
    ex->mail.task.run = ex_cache_mail;
    ex->watched = o;
    cache_obj_wait(o, &ex->waiter);
}

static void ex_cache_unwatch(struct exchange *ex)
{
    if (!ex->watched)
        return;
    cache_obj_unwait(ex->watched, &ex->waiter);
    worker_unpost(ex->w, &ex->mail);
    ex->watched = NULL;
}

/* --- serving an object ------------------------------------------------------------------------ */

/* The object as a byte source for the response pump: [hit_off, hit_end) of its body. */
static ssize_t ex_cache_read(struct xport *x, void *buf, size_t cap)
{
    struct exchange *ex = x->ctx;
    struct cache_obj *o = ex->hit;
    size_t done = 0;
    while (done < cap && ex->hit_off < ex->hit_end) {
        const char *p;
        size_t n = cache_obj_read(o, ex->hit_off, &p);
        if (!n)
            break;
        uint64_t left = ex->hit_end - ex->hit_off;
        n = n < cap - done ? n : cap - done;
        n = n < left ? n : (size_t)left;
        memcpy((char *)buf + done, p, n);
        done += n;
        ex->hit_off += n;
    }
    if (done)
        return (ssize_t)done;
    if (ex->hit_off >= ex->hit_end || cache_obj_state(o) == CACHE_OBJ_COMPLETE)
        return 0;
    errno = cache_obj_state(o) == CACHE_OBJ_ABORTED ? ECONNRESET : EAGAIN;
    return -1;
}

static ssize_t ex_cache_write(struct xport *x, const struct iovec *iov, int n)
{
    (void)x;
    (void)iov;
    (void)n;
    errno = EBADF;
    return -1;
}

static int ex_cache_shutdown(struct xport *x)
{
    (void)x;
    return 0;
}

static const struct xport_ops ex_cache_ops = { ex_cache_read, ex_cache_write, ex_cache_shutdown };

static void ex_cache_status(struct exchange *ex, int kind, int64_t ttl, const char *detail)
{
    sbuf_reset(&ex->cache_status);
    cache_rules_status(&ex->cache_status, "portero", kind, ttl, detail);
}

/* Picks what to send from a stored head: the whole object, a 304 to the client's own
 * conditional, or one range (RFC 9110 §13, §14). Returns the status, or -416. */
static int ex_cache_select(struct exchange *ex, uint64_t length, bool complete)
{
    const struct http_header *etag = http_msg_find(&ex->resp, "etag");
    const struct http_header *lm = http_msg_find(&ex->resp, "last-modified");
    struct str e = etag ? etag->value : STR_LIT(""), l = lm ? lm->value : STR_LIT("");
    if (cache_rules_conditional(&ex->req, e, l, ex_wall()) == 304)
        return 304;
    if (!complete || ex->resp.status != 200 || ex->req.method_id != HTTP_METHOD_GET)
        return ex->resp.status;
    struct cache_range r[CACHE_RANGE_MAX_SPECS];
    size_t n = 0;
    int rc = cache_rules_ranges(&ex->req, length, e, l, r, CACHE_RANGE_MAX_SPECS, &n);
    if (rc == 416)
        return -416;
    if (rc == 206 && n == 1) { /* several ranges: answered whole, which RFC 9110 §14.2 allows */
        ex->hit_off = r[0].first;
        ex->hit_end = r[0].last + 1;
        return 206;
    }
    return ex->resp.status;
}

static enum ex_step ex_cache_416(struct exchange *ex, uint64_t length)
{
    char range[64];
    snprintf(range, sizeof range, "Content-Range: bytes */%llu\r\n", (unsigned long long)length);
    struct sbuf extra = { 0 };
    sbuf_append_cstr(&extra, range);
    enum ex_step st = ex_send_answer(ex, 416, &extra);
    sbuf_free(&extra);
    return st;
}

/* Reads the first body bytes before anything is written, so that head and body leave in one
 * write: a head sent alone would leave the body to Nagle's algorithm, waiting for the client's
 * delayed ACK (40 ms). */
static void ex_cache_prefetch(struct exchange *ex)
{
    if (ex->resp_pump.in_kind == H1_BODY_NONE || (!ex->hit_in && !(ex->hit_in = buf_get())))
        return;
    ssize_t n = ex_cache_read(&ex->hit_xp, buf_wptr(ex->hit_in), buf_space(ex->hit_in));
    if (n > 0)
        ex->hit_in->wpos += (uint32_t)n;
}

static void ex_cache_format_u64(char out[24], uint64_t v)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    out[n] = '\0';
}

/* Builds the head for serving O (whose head is parsed in ex->resp) and starts the pump. */
static enum ex_step ex_cache_serve_head(struct exchange *ex, int status, uint64_t length, bool known)
{
    char age[24], hsts_buf[96];
    const struct ex_cache_meta *m = ex_cache_meta_of(ex->hit);
    int64_t a = m ? cache_rules_age(&m->fresh, m->fresh.request_time, m->fresh.response_time, ex_wall()) : 0;
    ex_cache_format_u64(age, (uint64_t)(a > 0 ? a : 0)); /* on every hit: no printf */
    bool body = status != 304 && ex->req.method_id != HTTP_METHOD_HEAD && status != 204;
    uint64_t send = status == 206 ? ex->hit_end - ex->hit_off : length;
    struct hdr_response_ctx rc = {
        .fwd = &ex->cfg->forwarding, .ops = &ex->route->response_headers,
        .length = send, .keep_alive_10 = ex->req.version_minor == 0,
        .security = ex->route->security_headers, .n_security = ex->route->n_security_headers,
        .server = hdr_server_value(ex->cfg), .hsts = ex_hsts(ex, hsts_buf, sizeof hsts_buf),
        .age = str_make(age, strlen(age)),
        .cache_status = str_make(ex->cache_status.p, ex->cache_status.len),
    };
    enum h1_body_kind kind = !body ? H1_BODY_NONE : known ? H1_BODY_LENGTH : H1_BODY_CLOSE;
    bool compressed = status == 200 && ex_deliver_plan(ex, &ex->resp, kind, send, &rc) > 0;
    enum h1_body_kind out = compressed ? H1_BODY_CLOSE : kind;
    rc.framing = !body ? HDR_FRAME_BODYLESS : out == H1_BODY_LENGTH ? HDR_FRAME_LENGTH
                 : ex->req.version_minor >= 1 ? HDR_FRAME_CHUNKED : HDR_FRAME_CLOSE;
    if (rc.framing == HDR_FRAME_CLOSE || ex->w->draining)
        ex->client_close = true;
    rc.close = ex->client_close;
    ex->resp.status = status;
    ex->resp.reason = STR_LIT("");
    ex->resp.conn_close = false;
    hdr_build_response(&ex->resp_head, &ex->resp, &rc);
    if (status == 206) { /* the Content-Range goes in before the head's final CRLF */
        char cr[96];
        int n = snprintf(cr, sizeof cr, "Content-Range: bytes %llu-%llu/%llu\r\n\r\n",
                         (unsigned long long)ex->hit_off, (unsigned long long)ex->hit_end - 1,
                         (unsigned long long)length);
        ex->resp_head.len -= 2;
        sbuf_append(&ex->resp_head, cr, (size_t)n);
    }
    ex->status = status;
    ex->resp_started = true;
    ex->hit_xp = (struct xport){ .fd = -1, .ops = &ex_cache_ops, .ctx = ex };
    ex->cache_readable = true;
    pump_init(&ex->resp_pump, kind, send, rc.framing == HDR_FRAME_CHUNKED, &ex->resp_head);
    ex->resp_pump.prefix_off = ex->resp_head_off;
    ex_cache_prefetch(ex);
    if (compressed && ex_deliver_start(ex, false) < 0)
        return ex_abort_client(ex);
    ex->state = EX_CACHE_SERVE;
    return EX_AGAIN;
}

/* Parses O's stored head into ex->resp (slices into O, valid while it is referenced). */
static bool ex_cache_parse_head(struct exchange *ex, struct cache_obj *o)
{
    size_t hlen = 0;
    const char *head = cache_obj_head(o, &hlen);
    const struct conf_limits *lim = &ex->cfg->limits;
    struct h1_limits hl = { lim->max_header_bytes, lim->max_header_bytes, lim->max_headers };
    ex->resp.headers = ex->resp_hdrs;
    ex->resp.max_headers = lim->max_headers;
    return head && h1_parse_response(head, hlen, &hl, &ex->resp) > 0;
}

/* Serves object O (one reference handed over): stored, or filling with its head set. */
static enum ex_step ex_cache_serve(struct exchange *ex, struct cache_obj *o)
{
    ex->hit = o;
    if (!ex_cache_parse_head(ex, o))
        return ex_send_error(ex, 502);
    bool complete = cache_obj_state(o) == CACHE_OBJ_COMPLETE;
    bool known = complete || ex->resp.content_length >= 0;
    uint64_t length = complete ? cache_obj_length(o) : known ? (uint64_t)ex->resp.content_length : 0;
    ex->hit_off = 0;
    ex->hit_end = known ? length : UINT64_MAX;
    int status = ex_cache_select(ex, length, complete);
    if (status == -416)
        return ex_cache_416(ex, length);
    if (!complete)
        ex_cache_watch(ex, o);
    return ex_cache_serve_head(ex, status, length, known);
}

enum ex_step ex_cache_serve_step(struct exchange *ex)
{
    struct client *c = ex->c;
    uint64_t before = ex->resp_pump.bytes_out;
    enum pump_status s = pump_run(&ex->resp_pump, &ex->hit_in, &ex->hit_xp, &ex->cache_readable, &c->xp,
                                  &c->writable);
    if (ex->resp_pump.bytes_out != before)
        ex_arm_client_timer(ex, ex->cfg->limits.send_timeout_ms);
    if (s == PUMP_BLOCKED && ex->resp_pump.bytes_out)
        client_no_delay(c);
    if (s == PUMP_DONE)
        return ex_finish(ex, false);
    if (s == PUMP_SRC_EOF && ex->resp_pump.in_kind == H1_BODY_CLOSE)
        return ex_finish(ex, false);
    return s == PUMP_BLOCKED ? EX_WAIT : ex_abort_client(ex);
}

/* --- lookup ------------------------------------------------------------------------------------ */

static enum ex_step ex_cache_fetch(struct exchange *ex, struct cache_obj *stale);
static enum ex_step ex_cache_use(struct exchange *ex, struct cache_obj *o);
static void ex_cache_set_validator(struct exchange *ex, const char *name, struct str value);

/* A request collapsed onto another one's fill waits for its head (bounded by lock_timeout). */
enum ex_step ex_cache_wait_step(struct exchange *ex)
{
    struct cache_obj *o = ex->hit;
    size_t hlen = 0;
    enum cache_obj_state st = cache_obj_state(o);
    if (st == CACHE_OBJ_FILLING && !cache_obj_head(o, &hlen))
        return EX_WAIT;
    loop_timer_stop(ex->w->loop, &ex->up_timer);
    ex_cache_unwatch(ex);
    ex->hit = NULL;
    if (st == CACHE_OBJ_ABORTED || !cache_obj_vary_matches(o, ex_cache_vary, ex)) {
        cache_obj_put(o);
        ex_cache_status(ex, CACHE_STATUS_MISS, CACHE_STATUS_NO_TTL, NULL);
        return ex_forward(ex); /* the first request's answer cannot be shared: fetch our own */
    }
    cache_zone_note(ex->zone, CACHE_EV_COLLAPSED);
    ex_cache_status(ex, CACHE_STATUS_HIT | CACHE_STATUS_COLLAPSED, CACHE_STATUS_NO_TTL, NULL);
    return ex_cache_serve(ex, o);
}

void ex_cache_lock_timeout(struct exchange *ex)
{
    ex_cache_unwatch(ex);
    cache_obj_put(ex->hit);
    ex->hit = NULL;
    ex_cache_status(ex, CACHE_STATUS_MISS, CACHE_STATUS_NO_TTL, "lock-timeout");
    if (ex_forward(ex) == EX_AGAIN)
        ex_run(ex);
}

/* Starts filling (or joins the fill running for this variant); STALE, if any, is the stored
 * object being revalidated (its reference is kept in ex->stale). */
static enum ex_step ex_cache_fetch(struct exchange *ex, struct cache_obj *stale)
{
    struct cache_obj *o = NULL;
    enum cache_fill_result r = cache_fill_begin(ex->zone, ex->cache_key.p, ex->cache_key.len, ex_cache_vary, ex, &o);
    if (r == CACHE_FILL_COLLAPSED && !stale) {
        ex->hit = o; /* our reference while we wait */
        ex_cache_watch(ex, o);
        ex->state = EX_CACHE_WAIT;
        loop_timer_after(ex->w->loop, &ex->up_timer, ex->route->cache.lock_timeout_ms);
        return ex_cache_wait_step(ex);
    }
    if (r == CACHE_FILL_COLLAPSED)
        cache_obj_put(o); /* a revalidation already runs: ours goes on its own, unstored */
    else
        ex->fill = o;
    ex->stale = stale;
    /* A fill asks for the whole current representation: the client's own conditionals and
     * range are answered from what we store; a revalidation asks with our validators only
     * (RFC 9111 §4.3.1). */
    const struct http_header *etag = stale ? http_msg_find(&ex->resp, "etag") : NULL;
    const struct http_header *lm = stale ? http_msg_find(&ex->resp, "last-modified") : NULL;
    ex_cache_set_validator(ex, "If-None-Match", etag ? etag->value : STR_LIT(""));
    ex_cache_set_validator(ex, "If-Modified-Since", lm ? lm->value : STR_LIT(""));
    policy_set_header(&ex->policy, "If-Match", NULL);
    policy_set_header(&ex->policy, "If-Unmodified-Since", NULL);
    policy_set_header(&ex->policy, "Range", NULL);
    policy_set_header(&ex->policy, "If-Range", NULL);
    ex->t_cache_request = ex_wall();
    return ex_forward(ex);
}

/* Replaces the client's conditionals with ours (a NUL-terminated copy for the policy list). */
static void ex_cache_set_validator(struct exchange *ex, const char *name, struct str value)
{
    char v[512];
    if (!value.n || value.n >= sizeof v) {
        policy_set_header(&ex->policy, name, NULL); /* only drop the client's */
        return;
    }
    memcpy(v, value.p, value.n);
    v[value.n] = '\0';
    policy_set_header(&ex->policy, name, v);
}

/* The cache step: a fresh stored answer is served here; a stale one is served (within
 * stale-while-revalidate, refreshed behind it) or revalidated; a miss fills, or collapses onto
 * the fill already running for the same variant. */
enum ex_step ex_cache_step(struct exchange *ex)
{
    ex->zone = ex->gen->rt->zones[ex->route->cache.zone->index];
    sbuf_reset(&ex->cache_status);
    cache_cc_parse(&ex->req, &ex->req_cc);
    if (!ex_cache_method_ok(ex) || ex->tunnel_requested) {
        ex_cache_status(ex, CACHE_STATUS_BYPASS, CACHE_STATUS_NO_TTL, NULL);
        return ex_forward(ex);
    }
    ex_cache_key(ex);
    if (ex->cache_refresh)
        return ex_cache_fetch(ex, NULL);
    struct cache_obj *o = cache_lookup(ex->zone, ex->cache_key.p, ex->cache_key.len, ex_cache_vary, ex);
    if (!o) {
        cache_zone_note(ex->zone, CACHE_EV_MISS);
        ex->cache_kind = CACHE_STATUS_URI_MISS;
        if (ex->req_cc.only_if_cached)
            return ex_send_error(ex, 504); /* RFC 9111 §5.2.1.7 */
        return ex->req.method_id == HTTP_METHOD_HEAD ? ex_forward(ex) : ex_cache_fetch(ex, NULL);
    }
    if (cache_obj_state(o) != CACHE_OBJ_COMPLETE) { /* a fill runs: collapse onto it */
        cache_obj_put(o);
        return ex_cache_fetch(ex, NULL);
    }
    return ex_cache_use(ex, o);
}

/* A stored object is there: serve it, serve it stale, or revalidate it. */
static enum ex_step ex_cache_use(struct exchange *ex, struct cache_obj *o)
{
    const struct ex_cache_meta *m = ex_cache_meta_of(o);
    if (!m) {
        cache_obj_put(o);
        return ex_cache_fetch(ex, NULL);
    }
    int64_t age = cache_rules_age(&m->fresh, m->fresh.request_time, m->fresh.response_time, ex_wall());
    int64_t ttl = cache_rules_ttl(&m->fresh, age);
    switch (cache_rules_use(&m->fresh, age, &ex->req_cc)) {
    case CACHE_USE_FRESH:
        cache_zone_note(ex->zone, CACHE_EV_HIT);
        ex_cache_status(ex, CACHE_STATUS_HIT, ttl, NULL);
        return ex_cache_serve(ex, o);
    case CACHE_USE_STALE:
        cache_zone_note(ex->zone, CACHE_EV_STALE);
        ex_cache_status(ex, CACHE_STATUS_HIT, ttl, "max-stale");
        return ex_cache_serve(ex, o);
    case CACHE_USE_STALE_REVALIDATE_BACKGROUND:
        cache_zone_note(ex->zone, CACHE_EV_STALE);
        ex_cache_status(ex, CACHE_STATUS_HIT, ttl, "stale-while-revalidate");
        client_refresh(ex->c, ex->req.method.n ? &ex->req : NULL);
        return ex_cache_serve(ex, o);
    case CACHE_USE_REVALIDATE:
        break;
    }
    if (ex->req_cc.only_if_cached) {
        cache_obj_put(o);
        return ex_send_error(ex, 504);
    }
    cache_zone_note(ex->zone, CACHE_EV_MISS);
    ex->cache_kind = ex->req_cc.no_cache || ex->req_cc.max_age == 0 ? CACHE_STATUS_REQUEST : CACHE_STATUS_STALE;
    if (!ex_cache_parse_head(ex, o)) { /* its validators come from there */
        cache_obj_put(o);
        return ex_cache_fetch(ex, NULL);
    }
    return ex_cache_fetch(ex, o);
}

/* --- the upstream's answer --------------------------------------------------------------------- */

static void ex_cache_append(void *arg, const char *data, size_t len)
{
    struct exchange *ex = arg;
    if (ex->fill && cache_obj_append(ex->fill, data, len) < 0) {
        cache_obj_put(ex->fill); /* too large or no room: the store aborted it, readers fetch */
        ex->fill = NULL;
        ex->resp_pump.observer.fn = NULL;
    }
}

static void ex_cache_drop_fill(struct exchange *ex)
{
    if (!ex->fill)
        return;
    cache_obj_abort(ex->fill);
    cache_obj_put(ex->fill);
    ex->fill = NULL;
}

/* Gives the upstream connection back once its (bodiless or unwanted) answer is dealt with. */
static void ex_cache_release_upstream(struct exchange *ex, bool body_read)
{
    struct upstream_conn *uc = ex->uc;
    if (!uc)
        return;
    if (ex->upstream_ms < 0)
        ex->upstream_ms = (int64_t)(loop_now(ex->w->loop) - ex->t_upstream);
    buf_consume(uc->in, ex->resp.head_len);
    loop_timer_stop(ex->w->loop, &ex->up_timer);
    upstream_release(uc, body_read && ex->req_done && !ex->resp.conn_close);
    ex->uc = NULL;
}

/* Stores RESP's head in the fill (when RFC 9111 §3 allows) and sets Cache-Status. */
static void ex_cache_store_head(struct exchange *ex)
{
    struct cache_policy pol;
    struct cache_fresh f;
    cache_policy_from_conf(&ex->route->cache, &pol);
    pol.max_object_size = cache_zone_max_object_size(ex->zone);
    int64_t now = ex_wall();
    int why = ex->req_cc.no_store ? CACHE_NS_REQ_NO_STORE : cache_rules_storable(&ex->req, &ex->resp, &pol, now, &f);
    struct sbuf names = { 0 };
    if (!why && cache_rules_vary_names(&ex->resp, &names) < 0)
        why = CACHE_NS_VARY_STAR;
    int kind = ex->cache_kind;
    if (!why && ex->fill) {
        f.request_time = ex->t_cache_request;
        f.response_time = now;
        struct ex_cache_meta meta = { .version = EX_CACHE_META_VERSION, .fresh = f };
        struct str key = names.len ? ex_cache_vary(ex, str_make(names.p, names.len)) : STR_LIT("");
        const struct http_header *tags = http_msg_find(&ex->resp, ex->route->cache.tag_header);
        struct cache_response r = {
            .head = buf_rptr(ex->uc->in), .head_len = ex->resp.head_len, .meta = &meta, .meta_len = sizeof meta,
            .tags = tags ? tags->value : STR_LIT(""), .vary_names = str_make(names.p, names.len), .vary_key = key,
            .length_hint = ex->resp.content_length >= 0 ? (uint64_t)ex->resp.content_length : CACHE_LENGTH_UNKNOWN,
        };
        if (cache_obj_set_head(ex->fill, &r) == 0)
            kind |= CACHE_STATUS_STORED;
        else
            ex_cache_drop_fill(ex);
    } else {
        ex_cache_drop_fill(ex);
    }
    sbuf_free(&names);
    ex_cache_status(ex, kind, CACHE_STATUS_NO_TTL, why ? cache_rules_reason(why) : NULL);
}

/* The revalidation came back 304 (RFC 9111 §4.3.4): the stored object gets the new head and
 * freshness, keeps its body, and answers the client. */
static enum ex_step ex_cache_revalidated(struct exchange *ex)
{
    struct http_header hs[256];
    struct http_msg stored = { .headers = hs, .max_headers = 256 }, merged_msg = stored;
    struct http_header hm[256];
    merged_msg.headers = hm;
    struct h1_limits hl = { 1u << 20, 1u << 20, 256 };
    size_t hlen = 0;
    const char *head = cache_obj_head(ex->stale, &hlen);
    struct sbuf merged = { 0 };
    if (head && h1_parse_response(head, hlen, &hl, &stored) > 0)
        cache_rules_merge_304(&stored, &ex->resp, &merged);
    struct cache_obj *serve = ex->stale;
    ex->stale = NULL;
    struct cache_policy pol;
    struct cache_fresh f;
    cache_policy_from_conf(&ex->route->cache, &pol);
    int64_t now = ex_wall();
    if (ex->fill && merged.len && h1_parse_response(merged.p, merged.len, &hl, &merged_msg) > 0 &&
        cache_rules_storable(&ex->req, &merged_msg, &pol, now, &f) == 0) {
        f.request_time = ex->t_cache_request;
        f.response_time = now;
        struct ex_cache_meta meta = { .version = EX_CACHE_META_VERSION, .fresh = f };
        struct cache_response r = { .head = merged.p, .head_len = merged.len, .meta = &meta, .meta_len = sizeof meta };
        if (cache_obj_update(ex->fill, serve, &r) == 0) {
            cache_obj_put(serve);
            serve = ex->fill; /* COMPLETE now, with the old body */
            ex->fill = NULL;
        } else {
            cache_obj_put(ex->fill);
            ex->fill = NULL;
        }
    }
    ex_cache_drop_fill(ex);
    sbuf_free(&merged);
    ex_cache_release_upstream(ex, true);
    ex_cache_status(ex, CACHE_STATUS_STALE | CACHE_STATUS_FWD_304, CACHE_STATUS_NO_TTL, NULL);
    return ex_cache_serve(ex, serve);
}

/* RFC 5861 §4: the origin failed while we hold a stale copy allowed for errors: serve it. */
static bool ex_cache_stale_allowed(struct exchange *ex)
{
    const struct ex_cache_meta *m = ex->stale ? ex_cache_meta_of(ex->stale) : NULL;
    if (!m)
        return false;
    int64_t age = cache_rules_age(&m->fresh, m->fresh.request_time, m->fresh.response_time, ex_wall());
    return cache_rules_stale_if_error_ok(&m->fresh, age, &ex->req_cc);
}

static enum ex_step ex_cache_serve_stale(struct exchange *ex)
{
    const struct ex_cache_meta *m = ex_cache_meta_of(ex->stale);
    int64_t age = cache_rules_age(&m->fresh, m->fresh.request_time, m->fresh.response_time, ex_wall());
    struct cache_obj *o = ex->stale;
    ex->stale = NULL;
    ex_cache_drop_fill(ex);
    cache_zone_note(ex->zone, CACHE_EV_STALE);
    ex_cache_status(ex, CACHE_STATUS_HIT, cache_rules_ttl(&m->fresh, age), "stale-if-error");
    return ex_cache_serve(ex, o);
}

bool ex_cache_on_failure(struct exchange *ex, enum ex_step *st)
{
    if (!ex->stale || !ex_cache_stale_allowed(ex))
        return false;
    if (ex->uc) {
        upstream_close(ex->uc);
        ex->uc = NULL;
    }
    loop_timer_stop(ex->w->loop, &ex->up_timer);
    ex->resp_head.len = ex->resp_head_off = 0;
    *st = ex_cache_serve_stale(ex);
    return true;
}

/* RFC 9111 §4.4: a successful unsafe request invalidates what is stored for its URI. */
static void ex_cache_invalidate(struct exchange *ex)
{
    struct cache_zone *z = ex->gen->rt->zones[ex->route->cache.zone->index];
    ex_cache_key(ex);
    cache_purge_key(z, ex->cache_key.p, ex->cache_key.len);
}

bool ex_cache_on_head(struct exchange *ex, enum ex_step *st)
{
    int status = ex->resp.status;
    if (!http_method_is_safe(ex->req.method_id)) {
        if (status < 400)
            ex_cache_invalidate(ex);
        return false;
    }
    if (!ex->zone)
        return false;
    if (ex->stale && status == 304) {
        *st = ex_cache_revalidated(ex);
        return true;
    }
    if (ex->stale && status >= 500 && ex_cache_stale_allowed(ex)) {
        upstream_close(ex->uc); /* its error body is not worth reading */
        ex->uc = NULL;
        loop_timer_stop(ex->w->loop, &ex->up_timer);
        *st = ex_cache_serve_stale(ex);
        return true;
    }
    if (ex->stale) {
        cache_obj_put(ex->stale); /* a new answer replaces it */
        ex->stale = NULL;
    }
    if (ex->cache_status.len == 0 || ex->fill)
        ex_cache_store_head(ex);
    return false;
}

void ex_cache_attach(struct exchange *ex)
{
    if (!ex->fill)
        return;
    ex->resp_pump.observer.fn = ex_cache_append;
    ex->resp_pump.observer.arg = ex;
}

void ex_cache_end(struct exchange *ex)
{
    ex_cache_unwatch(ex);
    if (ex->fill) {
        if (ex->resp_complete)
            cache_obj_finish(ex->fill);
        else
            cache_obj_abort(ex->fill);
        cache_obj_put(ex->fill);
        ex->fill = NULL;
    }
    if (ex->hit)
        cache_obj_put(ex->hit);
    if (ex->stale)
        cache_obj_put(ex->stale);
    ex->hit = ex->stale = NULL;
    buf_put(ex->hit_in);
    ex->hit_in = NULL;
    ex->zone = NULL;
}
