/* policy: the request steps a route runs before its action (DESIGN: the life of one request,
 * step 3) — allow/deny, rate limits, authentication, WAF, in that order — each able to answer
 * directly. A step may have to wait (a cluster-wide limit asks Redis, forward-auth asks a
 * service): the run then says POLICY_PENDING and calls its owner back from the worker's loop
 * when it can go on. Also here: the real client address behind trusted proxies, listener
 * allow/deny and per-address connection counts, which the client connection uses at accept. */
#ifndef PORTERO_POLICY_POLICY_H
#define PORTERO_POLICY_POLICY_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "conf/config.h"
#include "core/loop.h"
#include "core/sbuf.h"
#include "http/msg.h"

/* What a published configuration needs compiled once: users files, JWT keys, WAF engines. Built
 * on the control thread, then read-only for every worker. */
struct policy_set;
/* NULL with a message naming the file at fault in ERR (CAP bytes). PREV (may be NULL), the set
 * in use, lends its WAF engines to routes whose WAF settings did not change (loading the rule set
 * takes a while); files (users, keys) are always read again. */
struct policy_set *policy_set_build(const struct config *cfg, const struct policy_set *prev,
                                    char *err, size_t cap);
void policy_set_free(struct policy_set *set);

/* Per worker thread: its Redis connection for cluster-wide limits. */
struct policy_worker;
struct policy_worker *policy_worker_new(struct loop *loop);
void policy_worker_free(struct policy_worker *pw);

/* Counters of what the steps refused, per worker (owner-written, read by metrics). */
struct policy_counters {
    _Atomic uint64_t acl_denied;
    _Atomic uint64_t rate_limited;
    _Atomic uint64_t auth_failed;
    _Atomic uint64_t waf_blocked;
    _Atomic uint64_t waf_detected;
    _Atomic uint64_t redis_errors;
    _Atomic uint64_t conn_limited;  /* max_connections_per_ip */
    _Atomic uint64_t shed;          /* past max_connections */
};

struct fwdauth_result;

/* One request as the steps see it; lent for each call, rebuilt by the owner as it likes. */
struct policy_req {
    const struct config *cfg;
    const struct policy_set *set;
    const struct conf_route *route;
    const struct conf_listener *listener; /* the connection's listener (its allow/deny) */
    struct policy_worker *pw;
    struct policy_counters *counters;
    const struct http_msg *req;
    const struct sockaddr *client;   /* the real client (after trusted proxies) */
    const char *client_ip;           /* its text */
    const struct sockaddr *local;    /* the listener's address the connection came to */
    uint64_t now_ms;                 /* monotonic */
    const char *body;                /* the request body when the route inspects it (WAF) */
    size_t body_len;
    bool body_complete;              /* BODY holds the whole body */
};

enum policy_result {
    POLICY_PASS,     /* go on to the route's action */
    POLICY_ANSWER,   /* answer run->status with run->answer_headers */
    POLICY_PENDING   /* wait: run->resume will be called from the loop */
};

#define POLICY_MAX_SET 24
/* The owner embeds one per request and zeroes it before the first policy_run. */
struct policy_run {
    unsigned step;                   /* next step */
    unsigned sub;                    /* position inside the step (e.g. which rate limit) */
    void (*resume)(struct policy_run *run); /* set by the owner: a pending step finished */
    void *pending;                   /* the step's operation in flight, of kind pending_kind */
    enum { POLICY_WAIT_REDIS, POLICY_WAIT_FORWARD, POLICY_WAIT_HASH } pending_kind;
    bool async_done;                 /* the pending step answered: policy_run consumes it */
    int64_t async_value;
    struct fwdauth_result *forward;  /* the auth service's answer, owned */
    /* results */
    int status;                      /* with POLICY_ANSWER */
    struct sbuf answer_headers;      /* "Name: value\r\n" lines for the answer */
    size_t n_set;                    /* headers to set on the forwarded request: every client */
    const char *set_name[POLICY_MAX_SET]; /* header of these names is removed, and those */
    char *set_value[POLICY_MAX_SET]; /* with a value (owned) are added */
    char user[128];                  /* authenticated user or subject, for the access log */
    const char *reason;              /* why the answer (static): "acl", "rate limit", ... */
};

/* Runs the route's steps from where RUN stopped. Between PENDING and resume the owner keeps RUN
 * where it is; RQ may be rebuilt but must describe the same request. */
enum policy_result policy_run(struct policy_run *run, const struct policy_req *rq);
/* The owner goes away while a step is pending: nothing will be called back. */
void policy_run_cancel(struct policy_run *run);
/* Adds a header to set on the forwarded request: every client header of that name is dropped,
 * and VALUE (copied) sent unless NULL. NAME must outlive RUN. */
void policy_set_header(struct policy_run *run, const char *name, const char *value);
/* Frees the results (keeps RUN reusable: zeroed but for its buffers). */
void policy_run_clear(struct policy_run *run);

/* True when the route inspects request bodies (so the owner must buffer one before running the
 * steps, up to *LIMIT bytes). */
bool policy_wants_body(const struct conf_route *route, uint64_t *limit);

/* allow/deny (first match wins; nothing matched: denied if any allow rule exists). */
bool policy_acl_allows(const struct conf_acl *acl, const struct sockaddr *sa);
/* True when SA lies in CFG's trusted_proxies. */
bool policy_is_trusted(const struct config *cfg, const struct sockaddr *sa);
/* The real client of a request that came from PEER: when PEER is a trusted proxy, the right-most
 * address of REQ's real_ip_header that is not itself trusted (RFC 7239 §5.2 order: each proxy
 * appends); else PEER. OUT gets the address (port 0 when taken from the header). */
void policy_real_client(const struct config *cfg, const struct sockaddr *peer,
                        const struct http_msg *req, struct sockaddr_storage *out);

/* Per-address connection counts shared by every worker (max_connections_per_ip). */
bool policy_conn_acquire(const struct sockaddr *sa, uint32_t max);
void policy_conn_release(const struct sockaddr *sa);

/* Periodic housekeeping of process-wide state (idle rate-limit buckets); any thread. */
void policy_housekeeping(uint64_t now_ms);

#endif
