/* policy_priv: what the files of src/policy/ share — the compiled set, the per-worker state,
 * the helpers steps answer with, and the steps themselves (policy.c runs them in order;
 * policy_addr.c: addresses and allow/deny; policy_rate.c: rate limits; policy_auth.c:
 * authentication). Private to src/policy/. */
#ifndef PORTERO_POLICY_POLICY_PRIV_H
#define PORTERO_POLICY_POLICY_PRIV_H

#include <stdatomic.h>

#include "core/offload.h"
#include "core/str.h"
#include "policy/basic_auth.h"
#include "policy/jwt.h"
#include "policy/policy.h"
#include "policy/ratelimit.h"
#include "policy/redis_limit.h"
#include "policy/waf.h"

/* Bumps a per-worker refusal counter (owner-written, relaxed: see proxy/stats.h). */
#define POLICY_COUNT(rq, field) \
    atomic_store_explicit(&(rq)->counters->field, \
                          atomic_load_explicit(&(rq)->counters->field, memory_order_relaxed) + 1, \
                          memory_order_relaxed)

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

struct policy_worker {
    struct loop *loop;
    struct redis_limit *redis;      /* made on first use */
    struct offload_inbox *offload;  /* password hashes done off the loop; made on first use */
};

/* Process-wide rate-limit buckets and per-address connection counts (outlive reloads); NULL
 * only when memory ran out at start. */
struct ratelimit_table *policy_buckets(void);

/* Ends the run with STATUS (REASON is static text for logs). */
enum policy_result policy_answer(struct policy_run *run, int status, const char *reason);
/* Adds a header to set upstream; VALUE copied (NULL: only drop the client's). */

/* The steps: each returns PASS to go on, ANSWER, or PENDING (then resumes where it stopped). */
enum policy_result policy_step_acl(struct policy_run *run, const struct policy_req *rq,
                                   const struct conf_acl *acl);
enum policy_result policy_step_rate(struct policy_run *run, const struct policy_req *rq);
enum policy_result policy_step_auth(struct policy_run *run, const struct policy_req *rq);

#endif
