/* policy_auth: the authentication step — Basic (hashes on the offload pool), JWT, forward-auth. */
#include "policy/policy_priv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/log.h"
#include "policy/fwdauth.h"

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
    const struct http_header *hh = http_msg_find(rq->req, "authorization");
    const struct str *h = hh ? &hh->value : NULL;
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
    const struct http_header *hh = http_msg_find(rq->req, "authorization");
    const struct str *h = hh ? &hh->value : NULL;
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

enum policy_result policy_step_auth(struct policy_run *run, const struct policy_req *rq)
{
    switch (rq->route->auth.kind) {
    case AUTH_NONE: return POLICY_PASS;
    case AUTH_BASIC: return policy_auth_basic(run, rq);
    case AUTH_JWT: return policy_auth_jwt(run, rq);
    case AUTH_FORWARD: return policy_auth_forward(run, rq);
    }
    return POLICY_PASS;
}

