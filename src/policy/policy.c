#include "policy/policy_priv.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "policy/fwdauth.h"

enum policy_step { STEP_LISTENER_ACL, STEP_ACL, STEP_RATE, STEP_AUTH, STEP_WAF, STEP_DONE };

/* --- compiled set -------------------------------------------------------------------------- */

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
struct ratelimit_table *policy_buckets(void)
{
    pthread_once(&policy_buckets_once, policy_buckets_init);
    return policy_buckets_table;
}

void policy_housekeeping(uint64_t now_ms)
{
    if (policy_buckets())
        ratelimit_expire(policy_buckets(), now_ms);
}

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

/* --- the run ------------------------------------------------------------------------------- */

bool policy_wants_body(const struct conf_route *route, uint64_t *limit)
{
    *limit = route->waf.body_limit;
    return route->waf.mode != WAF_OFF && route->waf.body_limit > 0;
}

enum policy_result policy_answer(struct policy_run *run, int status, const char *reason)
{
    run->status = status;
    run->reason = reason;
    return POLICY_ANSWER;
}

/* Adds a header to set upstream; VALUE copied (NULL: only drop the client's). */
void policy_set_header(struct policy_run *run, const char *name, const char *value)
{
    if (run->n_set == POLICY_MAX_SET)
        return;
    run->set_name[run->n_set] = name;
    run->set_value[run->n_set++] = value ? strdup(value) : NULL;
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

