#include "policy/policy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/log.h"
#include "core/offload.h"
#include "core/str.h"
#include "policy/basic_auth.h"
#include "policy/fwdauth.h"
#include "policy/jwt.h"
#include "policy/ratelimit.h"
#include "policy/redis_limit.h"
#include "policy/waf.h"

enum policy_step { STEP_LISTENER_ACL, STEP_ACL, STEP_RATE, STEP_AUTH, STEP_WAF, STEP_DONE };

#define POLICY_COUNT(rq, field) \
    atomic_store_explicit(&(rq)->counters->field, \
                          atomic_load_explicit(&(rq)->counters->field, memory_order_relaxed) + 1, \
                          memory_order_relaxed)

/* --- compiled set -------------------------------------------------------------------------- */

/* A loaded WAF engine with the settings it was loaded for; shared by the routes (and the sets of
 * successive reloads) that want the same. */
struct policy_waf {
    atomic_int refs;
    struct waf_engine *engine;
    struct conf_waf conf;       /* audit_log is an owned copy */
};

/* Per route (by index): what its steps load from files. Owned. */
struct policy_set {
    size_t n_routes;
    struct basic_auth **basic;
    struct jwt_keys **jwt;
    struct policy_waf **waf;    /* one reference each */
};

static void policy_waf_unref(struct policy_waf *pw)
{
    if (!pw || atomic_fetch_sub(&pw->refs, 1) != 1)
        return;
    waf_engine_free(pw->engine);
    free(pw->conf.audit_log);
    free(pw);
}

void policy_set_free(struct policy_set *set)
{
    if (!set)
        return;
    for (size_t i = 0; i < set->n_routes; i++) {
        basic_auth_free(set->basic[i]);
        jwt_keys_free(set->jwt[i]);
        policy_waf_unref(set->waf[i]);
    }
    free(set->basic);
    free(set->jwt);
    free(set->waf);
    free(set);
}

static bool policy_same_waf(const struct conf_waf *a, const struct conf_waf *b)
{
    return a->paranoia == b->paranoia && a->body_limit == b->body_limit &&
           !a->audit_log == !b->audit_log && (!a->audit_log || strcmp(a->audit_log, b->audit_log) == 0);
}

/* An engine already loaded for the same settings, by an earlier route or the previous set. */
static struct policy_waf *policy_find_waf(const struct policy_set *set, size_t upto,
                                          const struct policy_set *prev, const struct conf_waf *w)
{
    for (size_t i = 0; i < upto; i++)
        if (set->waf[i] && policy_same_waf(&set->waf[i]->conf, w))
            return set->waf[i];
    for (size_t i = 0; prev && i < prev->n_routes; i++)
        if (prev->waf[i] && policy_same_waf(&prev->waf[i]->conf, w))
            return prev->waf[i];
    return NULL;
}

static struct policy_waf *policy_load_waf(const struct conf_waf *w, char *err, size_t cap)
{
    struct policy_waf *pw = calloc(1, sizeof *pw);
    if (!pw) {
        snprintf(err, cap, "out of memory");
        return NULL;
    }
    if (!(pw->engine = waf_engine_new(w, err, cap))) {
        free(pw);
        return NULL;
    }
    atomic_init(&pw->refs, 1);
    pw->conf = *w;
    pw->conf.audit_log = w->audit_log ? strdup(w->audit_log) : NULL;
    return pw;
}

static int policy_build_route(const struct config *cfg, struct policy_set *set,
                              const struct policy_set *prev, size_t i, char *err, size_t cap)
{
    const struct conf_route *r = &cfg->routes[i];
    if (r->auth.kind == AUTH_BASIC && !(set->basic[i] = basic_auth_load(r->auth.users_file, err, cap)))
        return -1;
    if (r->auth.kind == AUTH_JWT && !(set->jwt[i] = jwt_keys_load(&r->auth, err, cap)))
        return -1;
    if (r->waf.mode == WAF_OFF)
        return 0;
    struct policy_waf *shared = policy_find_waf(set, i, prev, &r->waf);
    if (shared) {
        atomic_fetch_add(&shared->refs, 1);
        set->waf[i] = shared;
        return 0;
    }
    set->waf[i] = policy_load_waf(&r->waf, err, cap);
    return set->waf[i] ? 0 : -1;
}

struct policy_set *policy_set_build(const struct config *cfg, const struct policy_set *prev,
                                    char *err, size_t cap)
{
    struct policy_set *set = calloc(1, sizeof *set);
    size_t n = cfg->n_routes ? cfg->n_routes : 1;
    if (!set || !(set->basic = calloc(n, sizeof *set->basic)) ||
        !(set->jwt = calloc(n, sizeof *set->jwt)) || !(set->waf = calloc(n, sizeof *set->waf))) {
        snprintf(err, cap, "out of memory");
        policy_set_free(set);
        return NULL;
    }
    set->n_routes = cfg->n_routes;
    for (size_t i = 0; i < cfg->n_routes; i++) {
        if (policy_build_route(cfg, set, prev, i, err, cap) < 0) {
            policy_set_free(set);
            return NULL;
        }
    }
    return set;
}

/* --- process-wide and per-worker state ------------------------------------------------------ */

static struct ratelimit_table *policy_buckets_table;
static pthread_once_t policy_buckets_once = PTHREAD_ONCE_INIT;

static void policy_buckets_init(void)
{
    policy_buckets_table = ratelimit_table_new();
}

/* Buckets and connection counts outlive reloads (a reload must not reset a limit). */
static struct ratelimit_table *policy_buckets(void)
{
    pthread_once(&policy_buckets_once, policy_buckets_init);
    return policy_buckets_table;
}

void policy_housekeeping(uint64_t now_ms)
{
    if (policy_buckets())
        ratelimit_expire(policy_buckets(), now_ms);
}

struct policy_worker {
    struct loop *loop;
    struct redis_limit *redis;      /* made on first use */
    struct offload_inbox *offload;  /* password hashes done off the loop; made on first use */
};

struct policy_worker *policy_worker_new(struct loop *loop)
{
    struct policy_worker *pw = calloc(1, sizeof *pw);
    if (pw)
        pw->loop = loop;
    return pw;
}

void policy_worker_free(struct policy_worker *pw)
{
    if (!pw)
        return;
    if (pw->redis)
        redis_limit_free(pw->redis);
    offload_inbox_free(pw->offload);
    free(pw);
}

/* --- addresses -------------------------------------------------------------------------------- */

static const uint8_t *policy_addr_bytes(const struct sockaddr *sa, int *family, size_t *len)
{
    *family = sa->sa_family;
    if (sa->sa_family == AF_INET) {
        *len = 4;
        return (const uint8_t *)&((const struct sockaddr_in *)(const void *)sa)->sin_addr;
    }
    if (sa->sa_family == AF_INET6) {
        *len = 16;
        return (const uint8_t *)&((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
    }
    *len = 0;
    return NULL;
}

bool policy_acl_allows(const struct conf_acl *acl, const struct sockaddr *sa)
{
    int family;
    size_t len;
    const uint8_t *addr = policy_addr_bytes(sa, &family, &len);
    bool any_allow = false;
    for (size_t i = 0; i < acl->n; i++) {
        const struct conf_acl_rule *rule = &acl->rules[i];
        any_allow = any_allow || rule->allow;
        if (addr && conf_cidr_contains(&rule->cidr, family, addr))
            return rule->allow;
    }
    return !any_allow;
}

static bool policy_in_cidrs(const struct conf_cidr *v, size_t n, const struct sockaddr *sa)
{
    int family;
    size_t len;
    const uint8_t *addr = policy_addr_bytes(sa, &family, &len);
    for (size_t i = 0; addr && i < n; i++)
        if (conf_cidr_contains(&v[i], family, addr))
            return true;
    return false;
}

bool policy_is_trusted(const struct config *cfg, const struct sockaddr *sa)
{
    return policy_in_cidrs(cfg->trusted_proxies, cfg->n_trusted_proxies, sa);
}

/* Parses one list element of X-Forwarded-For ("192.0.2.1", "2001:db8::1", "[2001:db8::1]:80",
 * "192.0.2.1:80") into OUT; false if it is none of those. */
static bool policy_parse_hop(struct str s, struct sockaddr_storage *out)
{
    char text[INET6_ADDRSTRLEN + 8];
    s = str_trim_ows(s);
    if (s.n == 0 || s.n >= sizeof text)
        return false;
    memcpy(text, s.p, s.n);
    text[s.n] = '\0';
    char *ip = text;
    if (ip[0] == '[') {
        char *end = strchr(ip, ']');
        if (!end)
            return false;
        *end = '\0';
        ip++;
    } else if (strchr(ip, '.') && strchr(ip, ':') && strchr(ip, ':') == strrchr(ip, ':')) {
        *strchr(ip, ':') = '\0'; /* IPv4 with a port; IPv6 text has two colons or more */
    }
    memset(out, 0, sizeof *out);
    struct sockaddr_in *v4 = (struct sockaddr_in *)out;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)out;
    if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        return true;
    }
    if (inet_pton(AF_INET6, ip, &v6->sin6_addr) != 1)
        return false;
    if (IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr)) {
        /* ::ffff:a.b.c.d, a dual-stack proxy's view of an IPv4 client, is that IPv4 client */
        struct in_addr a4;
        memcpy(&a4, &v6->sin6_addr.s6_addr[12], 4);
        memset(out, 0, sizeof *out);
        v4->sin_family = AF_INET;
        v4->sin_addr = a4;
        return true;
    }
    v6->sin6_family = AF_INET6;
    return true;
}

/* Walks every instance of the header right to left: the client is the first hop that is not a
 * trusted proxy (anything left of it could have been written by the client itself). */
void policy_real_client(const struct config *cfg, const struct sockaddr *peer,
                        const struct http_msg *req, struct sockaddr_storage *out)
{
    socklen_t len = peer->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    memcpy(out, peer, len);
    if (!cfg->n_trusted_proxies || !policy_is_trusted(cfg, peer))
        return;
    for (uint32_t i = req->n_headers; i-- > 0;) {
        const struct http_header *h = &req->headers[i];
        if (!str_ieq_cstr(h->name, cfg->real_ip_header))
            continue;
        struct str v = h->value;
        while (v.n) {
            size_t cut = v.n;
            while (cut > 0 && v.p[cut - 1] != ',')
                cut--;
            struct sockaddr_storage hop;
            if (!policy_parse_hop(str_make(v.p + cut, v.n - cut), &hop))
                return; /* garbage: stop at the last address we could trust */
            memcpy(out, &hop, sizeof hop);
            if (!policy_is_trusted(cfg, (struct sockaddr *)&hop))
                return;
            v.n = cut ? cut - 1 : 0;
        }
    }
}

bool policy_conn_acquire(const struct sockaddr *sa, uint32_t max)
{
    int family;
    size_t len;
    const uint8_t *addr = policy_addr_bytes(sa, &family, &len);
    if (!max || !addr || !policy_buckets())
        return true;
    return ratelimit_conn_acquire(policy_buckets(), addr, len, max);
}

void policy_conn_release(const struct sockaddr *sa)
{
    int family;
    size_t len;
    const uint8_t *addr = policy_addr_bytes(sa, &family, &len);
    if (addr && policy_buckets())
        ratelimit_conn_release(policy_buckets(), addr, len);
}

/* --- the run ------------------------------------------------------------------------------- */

bool policy_wants_body(const struct conf_route *route, uint64_t *limit)
{
    *limit = route->waf.body_limit;
    return route->waf.mode != WAF_OFF && route->waf.body_limit > 0;
}

static enum policy_result policy_answer(struct policy_run *run, int status, const char *reason)
{
    run->status = status;
    run->reason = reason;
    return POLICY_ANSWER;
}

/* Adds a header to set upstream; VALUE copied (NULL: only drop the client's). */
static void policy_set_header(struct policy_run *run, const char *name, const char *value)
{
    if (run->n_set == POLICY_MAX_SET)
        return;
    run->set_name[run->n_set] = name;
    run->set_value[run->n_set++] = value ? strdup(value) : NULL;
}

static const struct str *policy_find_header(const struct http_msg *req, const char *name)
{
    for (uint32_t i = 0; i < req->n_headers; i++)
        if (str_ieq_cstr(req->headers[i].name, name))
            return &req->headers[i].value;
    return NULL;
}

/* --- step: allow / deny ----------------------------------------------------------------------- */

static enum policy_result policy_step_acl(struct policy_run *run, const struct policy_req *rq,
                                          const struct conf_acl *acl)
{
    if (!acl || !acl->n || policy_acl_allows(acl, rq->client))
        return POLICY_PASS;
    POLICY_COUNT(rq, acl_denied);
    return policy_answer(run, 403, "acl");
}

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
            const struct str *h = policy_find_header(rq->req, part->header);
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

static enum policy_result policy_step_rate(struct policy_run *run, const struct policy_req *rq)
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

/* --- step: authentication ----------------------------------------------------------------------- */

/* Appends TEXT as the inside of an RFC 9110 §5.6.4 quoted-string. */
static void policy_quoted(struct sbuf *out, const char *text)
{
    for (; *text; text++) {
        if (*text == '"' || *text == '\\')
            sbuf_append(out, "\\", 1);
        sbuf_append(out, text, 1);
    }
}

static enum policy_result policy_auth_failed(struct policy_run *run, const struct policy_req *rq,
                                             const char *scheme, const char *error)
{
    struct sbuf *h = &run->answer_headers;
    POLICY_COUNT(rq, auth_failed);
    sbuf_append_cstr(h, "WWW-Authenticate: "); /* RFC 9110 §11.6.1 */
    sbuf_append_cstr(h, scheme);
    sbuf_append_cstr(h, " realm=\"");
    policy_quoted(h, rq->route->auth.realm);
    sbuf_append_cstr(h, "\"");
    if (error) { /* RFC 6750 §3 */
        sbuf_append_cstr(h, ", error=\"invalid_token\", error_description=\"");
        policy_quoted(h, error);
        sbuf_append_cstr(h, "\"");
    } else if (strcmp(scheme, "Basic") == 0) {
        sbuf_append_cstr(h, ", charset=\"UTF-8\""); /* RFC 7617 §2.1 */
    }
    sbuf_append(h, "\r\n", 2);
    return policy_answer(run, 401, "auth");
}

/* A Basic check that missed the cache: the hash (tens of ms for bcrypt) runs on the offload
 * pool, so that a stream of wrong passwords cannot stall the worker's loop. */
struct policy_basic_job {
    struct offload_job job;
    struct policy_run *run;
    struct basic_auth *ba;         /* held alive by the run's owner (its configuration) */
    struct basic_auth_pending p;
};

static void policy_basic_work(struct offload_job *job)
{
    basic_auth_check_slow(&container_of(job, struct policy_basic_job, job)->p);
}

static void policy_basic_done(struct offload_job *job)
{
    struct policy_basic_job *b = container_of(job, struct policy_basic_job, job);
    struct policy_run *run = b->run;
    if (job->cancelled) {
        basic_auth_pending_clear(&b->p);
        free(b);
        return;
    }
    basic_auth_remember(b->ba, &b->p, run->user, sizeof run->user);
    run->pending = NULL;
    run->async_done = true;
    run->async_value = b->p.ok;
    free(b);
    run->resume(run);
}

static enum policy_result policy_basic_offload(struct policy_run *run, const struct policy_req *rq,
                                               struct policy_basic_job *b)
{
    struct policy_worker *pw = rq->pw;
    if (!pw->offload)
        pw->offload = offload_inbox_new(pw->loop);
    b->run = run;
    b->ba = rq->set->basic[rq->route->index];
    b->job.work = policy_basic_work;
    b->job.done = policy_basic_done;
    if (!pw->offload || offload_submit(pw->offload, &b->job) < 0) {
        basic_auth_pending_clear(&b->p);
        free(b);
        log_warn("basic auth: password checks are saturated; answering 503");
        return policy_answer(run, 503, "auth busy");
    }
    run->pending = &b->job;
    run->pending_kind = POLICY_WAIT_HASH;
    return POLICY_PENDING;
}

static enum policy_result policy_auth_basic(struct policy_run *run, const struct policy_req *rq)
{
    if (run->async_done) { /* the pool checked the password */
        run->async_done = false;
        return run->async_value ? POLICY_PASS : policy_auth_failed(run, rq, "Basic", NULL);
    }
    const struct str *h = policy_find_header(rq->req, "authorization");
    struct basic_auth *ba = rq->set->basic[rq->route->index];
    struct policy_basic_job *b = h && ba ? calloc(1, sizeof *b) : NULL;
    enum basic_auth_answer a =
        b ? basic_auth_check_fast(ba, h->p, h->n, run->user, sizeof run->user, &b->p) : BASIC_AUTH_REFUSED;
    if (a == BASIC_AUTH_SLOW)
        return policy_basic_offload(run, rq, b);
    free(b);
    return a == BASIC_AUTH_OK ? POLICY_PASS : policy_auth_failed(run, rq, "Basic", NULL);
}

static enum policy_result policy_auth_jwt(struct policy_run *run, const struct policy_req *rq)
{
    const struct conf_auth *a = &rq->route->auth;
    const struct str *h = policy_find_header(rq->req, "authorization");
    if (!h || h->n <= 7 || strncasecmp(h->p, "Bearer ", 7) != 0) /* RFC 6750 §2.1 */
        return policy_auth_failed(run, rq, "Bearer", NULL);
    struct str token = str_trim_ows(str_make(h->p + 7, h->n - 7));
    struct jwt_result res = { 0 };
    if (jwt_verify(rq->set->jwt[rq->route->index], a, token.p, token.n, (int64_t)time(NULL), &res) < 0) {
        enum policy_result r = policy_auth_failed(run, rq, "Bearer", res.error ? res.error : "invalid");
        jwt_result_free(&res);
        return r;
    }
    for (size_t i = 0; i < a->n_claims; i++) {
        const char *v = i < res.n_values ? res.values[i] : NULL;
        policy_set_header(run, a->claims[i].value, v); /* the client's own copy never passes */
        if (v && strcmp(a->claims[i].name, "sub") == 0)
            snprintf(run->user, sizeof run->user, "%s", v);
    }
    jwt_result_free(&res);
    return POLICY_PASS;
}

static void policy_on_fwdauth(void *arg, struct fwdauth_result *res)
{
    struct policy_run *run = arg;
    run->pending = NULL;
    run->async_done = true;
    run->forward = malloc(sizeof *run->forward);
    if (run->forward) {
        *run->forward = *res; /* takes its strings */
        memset(res, 0, sizeof *res);
    }
    run->async_value = run->forward ? run->forward->status : 0;
    run->resume(run);
}

static const char *policy_forward_value(const struct fwdauth_result *fa, const char *name)
{
    for (size_t i = 0; i < fa->n_copy; i++)
        if (strcasecmp(fa->copy_name[i], name) == 0)
            return fa->copy_value[i];
    return NULL;
}

/* The auth service said no: its 401 / 403 / redirect goes to the client as is; anything else
 * becomes 403 (a 4xx) or 503 (it failed or could not be asked). */
static enum policy_result policy_forward_denied(struct policy_run *run, const struct policy_req *rq,
                                                const struct fwdauth_result *fa)
{
    int s = fa ? fa->status : 0;
    POLICY_COUNT(rq, auth_failed);
    if (fa && fa->www_authenticate) {
        sbuf_append_cstr(&run->answer_headers, "WWW-Authenticate: ");
        sbuf_append_cstr(&run->answer_headers, fa->www_authenticate);
        sbuf_append(&run->answer_headers, "\r\n", 2);
    }
    if (fa && fa->location && s >= 300 && s < 400) {
        sbuf_append_cstr(&run->answer_headers, "Location: ");
        sbuf_append_cstr(&run->answer_headers, fa->location);
        sbuf_append(&run->answer_headers, "\r\n", 2);
        return policy_answer(run, s, "auth");
    }
    if (s == 401 && !(fa && fa->www_authenticate)) {
        /* RFC 9110 §15.5.2: a 401 carries a challenge; the service gave none, so we do */
        sbuf_append_cstr(&run->answer_headers, "WWW-Authenticate: Bearer realm=\"");
        policy_quoted(&run->answer_headers, rq->route->auth.realm);
        sbuf_append_cstr(&run->answer_headers, "\"\r\n");
    }
    if (s == 401 || s == 403)
        return policy_answer(run, s, "auth");
    return policy_answer(run, s >= 400 && s < 500 ? 403 : 503, "auth");
}

static enum policy_result policy_auth_forward(struct policy_run *run, const struct policy_req *rq)
{
    const struct conf_auth *a = &rq->route->auth;
    if (!run->async_done) {
        run->pending = fwdauth_start(rq->pw->loop, a, rq->req, rq->client_ip, policy_on_fwdauth, run);
        if (!run->pending)
            return policy_forward_denied(run, rq, NULL);
        run->pending_kind = POLICY_WAIT_FORWARD;
        return POLICY_PENDING;
    }
    run->async_done = false;
    const struct fwdauth_result *fa = run->forward;
    if (!fa || fa->status < 200 || fa->status > 299)
        return policy_forward_denied(run, rq, fa);
    for (size_t i = 0; i < a->n_forward_response_headers; i++)
        policy_set_header(run, a->forward_response_headers[i],
                          policy_forward_value(fa, a->forward_response_headers[i]));
    return POLICY_PASS;
}

static enum policy_result policy_step_auth(struct policy_run *run, const struct policy_req *rq)
{
    switch (rq->route->auth.kind) {
    case AUTH_NONE: return POLICY_PASS;
    case AUTH_BASIC: return policy_auth_basic(run, rq);
    case AUTH_JWT: return policy_auth_jwt(run, rq);
    case AUTH_FORWARD: return policy_auth_forward(run, rq);
    }
    return POLICY_PASS;
}

/* --- step: WAF ------------------------------------------------------------------------------------ */

static void policy_sock_ip(const struct sockaddr *sa, char *ip, size_t cap, int *port)
{
    *ip = '\0';
    *port = 0;
    if (!sa)
        return;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)(const void *)sa;
        inet_ntop(AF_INET, &v4->sin_addr, ip, (socklen_t)cap);
        *port = ntohs(v4->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)(const void *)sa;
        inet_ntop(AF_INET6, &v6->sin6_addr, ip, (socklen_t)cap);
        *port = ntohs(v6->sin6_port);
    }
}

static enum policy_result policy_step_waf(struct policy_run *run, const struct policy_req *rq)
{
    const struct conf_waf *conf = &rq->route->waf;
    struct policy_waf *pw = conf->mode == WAF_OFF ? NULL : rq->set->waf[rq->route->index];
    if (!pw)
        return POLICY_PASS;
    char server_ip[INET6_ADDRSTRLEN];
    int client_port, server_port;
    char client_ip[INET6_ADDRSTRLEN];
    policy_sock_ip(rq->client, client_ip, sizeof client_ip, &client_port);
    policy_sock_ip(rq->local, server_ip, sizeof server_ip, &server_port);
    const struct http_msg *m = rq->req;
    struct waf_request wr = {
        .client_ip = rq->client_ip, .client_port = client_port, .server_ip = server_ip,
        .server_port = server_port, .method = m->method.p, .method_len = m->method.n,
        .uri = m->target.p, .uri_len = m->target.n, .version = m->version_minor ? "1.1" : "1.0",
        .headers = m->headers, .n_headers = m->n_headers, .body = rq->body, .body_len = rq->body_len,
    };
    struct waf_verdict v = { 0 };
    if (waf_inspect(pw->engine, &wr, &v) < 0) {
        /* What cannot be inspected does not pass a blocking WAF. */
        log_error("waf: inspection failed for %.*s from %s; request %s", (int)m->target.n, m->target.p,
                  rq->client_ip, conf->mode == WAF_BLOCK ? "refused" : "let through");
        return conf->mode == WAF_BLOCK ? policy_answer(run, 403, "waf") : POLICY_PASS;
    }
    if (!v.matched)
        return POLICY_PASS;
    log_warn("waf %s: rule %s: %s (client %s, %.*s %.*s, route %s)",
             conf->mode == WAF_BLOCK ? "blocked" : "detected", v.rule_id[0] ? v.rule_id : "?",
             v.message, rq->client_ip, (int)m->method.n, m->method.p,
             (int)(m->target.n > 200 ? 200 : m->target.n), m->target.p, rq->route->name);
    if (conf->mode == WAF_DETECT) {
        POLICY_COUNT(rq, waf_detected);
        return POLICY_PASS;
    }
    POLICY_COUNT(rq, waf_blocked);
    /* 403, or 400 for a body its parsers refused (malformed JSON, multipart) */
    return policy_answer(run, v.status == 400 ? 400 : 403, "waf");
}

/* --- the run ---------------------------------------------------------------------------------------- */

static enum policy_result policy_step(struct policy_run *run, const struct policy_req *rq)
{
    switch (run->step) {
    case STEP_LISTENER_ACL: return policy_step_acl(run, rq, rq->listener ? &rq->listener->acl : NULL);
    case STEP_ACL: return policy_step_acl(run, rq, &rq->route->acl);
    case STEP_RATE: return policy_step_rate(run, rq);
    case STEP_AUTH: return policy_step_auth(run, rq);
    case STEP_WAF: return policy_step_waf(run, rq);
    }
    return POLICY_PASS;
}

enum policy_result policy_run(struct policy_run *run, const struct policy_req *rq)
{
    if (run->pending)
        return POLICY_PENDING; /* woken for another reason: keep waiting */
    while (run->step < STEP_DONE) {
        enum policy_result r = policy_step(run, rq);
        if (r != POLICY_PASS)
            return r;
        run->step++;
        run->sub = 0;
    }
    return POLICY_PASS;
}

void policy_run_cancel(struct policy_run *run)
{
    if (!run->pending)
        return;
    if (run->pending_kind == POLICY_WAIT_REDIS)
        redis_limit_cancel(run->pending);
    else if (run->pending_kind == POLICY_WAIT_FORWARD)
        fwdauth_cancel(run->pending);
    else
        offload_cancel(run->pending); /* the job frees itself when the hash is done */
    run->pending = NULL;
}

void policy_run_clear(struct policy_run *run)
{
    policy_run_cancel(run);
    for (size_t i = 0; i < run->n_set; i++)
        free(run->set_value[i]);
    if (run->forward) {
        fwdauth_result_free(run->forward);
        free(run->forward);
    }
    struct sbuf keep = run->answer_headers;
    sbuf_reset(&keep);
    memset(run, 0, sizeof *run);
    run->answer_headers = keep;
}
