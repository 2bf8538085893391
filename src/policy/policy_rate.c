/* policy_rate: the rate-limit step — local token buckets, or cluster-wide ones in Redis. */
#include "policy/policy_priv.h"

#include <string.h>

#include "core/log.h"

/* --- step: rate limits ------------------------------------------------------------------------ */

/* Key parts, each prefixed by its length so that no two different lists of parts make the same
 * key ("11:192.0.2.7|3:api"). False when a header part is absent: like a missing key in nginx's
 * limit_req, the limit does not apply to that request (else every request without the header
 * would share one bucket). */
static bool policy_rate_key(const struct policy_req *rq, const struct conf_rate_limit *lim,
                            struct sbuf *key)
{
    for (size_t i = 0; i < lim->n_key; i++) {
        const struct conf_rate_key *part = &lim->key[i];
        struct str v;
        if (part->kind == RATE_KEY_CLIENT_IP) {
            v = str_make(rq->client_ip, strlen(rq->client_ip));
        } else if (part->kind == RATE_KEY_ROUTE) {
            v = str_make(rq->route->name, strlen(rq->route->name));
        } else {
            const struct http_header *hh = http_msg_find(rq->req, part->header);
            const struct str *h = hh ? &hh->value : NULL;
            if (!h)
                return false;
            v = *h;
        }
        if (i)
            sbuf_append(key, "|", 1);
        sbuf_append_u64(key, v.n);
        sbuf_append(key, ":", 1);
        sbuf_append_str(key, v);
    }
    return true;
}

static enum policy_result policy_rate_denied(struct policy_run *run, const struct policy_req *rq,
                                             uint64_t wait_ms)
{
    POLICY_COUNT(rq, rate_limited);
    uint64_t secs = (wait_ms + 999) / 1000; /* RFC 9110 §10.2.3: whole seconds, rounded up */
    sbuf_append_cstr(&run->answer_headers, "Retry-After: ");
    sbuf_append_u64(&run->answer_headers, secs ? secs : 1);
    sbuf_append(&run->answer_headers, "\r\n", 2);
    return policy_answer(run, 429, "rate limit");
}

/* Redis failed: counted, logged at most once a second per worker, then open or closed. */
static enum policy_result policy_redis_failed(struct policy_run *run, const struct policy_req *rq)
{
    static __thread uint64_t last_log_ms;
    POLICY_COUNT(rq, redis_errors);
    if (!last_log_ms || rq->now_ms - last_log_ms >= 1000) {
        last_log_ms = rq->now_ms;
        log_warn("rate limit: redis %s failed or timed out; failing %s", rq->cfg->redis.address,
                 rq->cfg->redis.fail_open ? "open (requests pass)" : "closed (503)");
    }
    return rq->cfg->redis.fail_open ? POLICY_PASS : policy_answer(run, 503, "rate limit store");
}

static void policy_on_redis(void *arg, int64_t result)
{
    struct policy_run *run = arg;
    run->pending = NULL;
    run->async_done = true;
    run->async_value = result;
    run->resume(run);
}

/* Asks Redis for a cluster-wide token: PENDING, or the failure outcome at once. */
static enum policy_result policy_rate_cluster(struct policy_run *run, const struct policy_req *rq,
                                              const struct conf_rate_limit *lim, struct sbuf *key)
{
    struct policy_worker *pw = rq->pw;
    if (!pw->redis)
        pw->redis = redis_limit_new(pw->loop);
    if (pw->redis)
        run->pending = redis_limit_take(pw->redis, &rq->cfg->redis, lim, key->p, key->len,
                                        policy_on_redis, run);
    if (!run->pending)
        return policy_redis_failed(run, rq);
    run->pending_kind = POLICY_WAIT_REDIS;
    return POLICY_PENDING;
}

enum policy_result policy_step_rate(struct policy_run *run, const struct policy_req *rq)
{
    const struct conf_route *r = rq->route;
    for (; run->sub < r->n_rate_limits; run->sub++) {
        const struct conf_rate_limit *lim = r->rate_limits[run->sub];
        enum policy_result res = POLICY_PASS;
        if (run->async_done) { /* Redis answered for this limit */
            run->async_done = false;
            if (run->async_value > 0)
                return policy_rate_denied(run, rq, (uint64_t)run->async_value);
            if (run->async_value < 0 && (res = policy_redis_failed(run, rq)) != POLICY_PASS)
                return res;
            continue;
        }
        struct sbuf key = { 0 };
        if (!policy_rate_key(rq, lim, &key)) {
            sbuf_free(&key);
            continue;
        }
        if (lim->cluster) {
            res = policy_rate_cluster(run, rq, lim, &key);
        } else {
            uint64_t wait = ratelimit_take(policy_buckets(), lim, key.p ? key.p : "", key.len, rq->now_ms);
            if (wait)
                res = policy_rate_denied(run, rq, wait);
        }
        sbuf_free(&key);
        if (res != POLICY_PASS)
            return res;
    }
    return POLICY_PASS;
}

