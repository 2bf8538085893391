/* exchange_priv: the exchange's data and the functions its files share. The life of one request
 * is one state machine (exchange.c drives it, one handler per state); answers we compose, the
 * upstream side with its retries, and the request steps live in their own files. Private to
 * the exchange's files. */
#ifndef PORTERO_PROXY_EXCHANGE_PRIV_H
#define PORTERO_PROXY_EXCHANGE_PRIV_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/sbuf.h"
#include "http/msg.h"
#include "policy/policy.h"
#include "proxy/exchange.h"
#include "cache/cache_rules.h"
#include "cache/cache_store.h"
#include "http/hdr.h"
#include "proxy/pump.h"
#include "proxy/spool.h"
#include "proxy/worker.h"

enum ex_state { EX_HOLD_BODY, EX_POLICY, EX_LOCAL, EX_CACHE_WAIT, EX_CACHE_SERVE, EX_BACKOFF, EX_CONNECT,
                EX_WAIT_HEAD, EX_BODY, EX_TUNNEL };
enum ex_step { EX_AGAIN, EX_WAIT, EX_GONE };


struct exchange {
    struct client *c;
    struct worker *w;
    struct worker_gen *gen;           /* the generation it started on, held until it ends */
    const struct config *cfg;         /* gen's configuration */
    enum ex_state state;
    struct http_msg req;              /* slices into req_raw; headers = req_hdrs */
    char *req_raw;                    /* owned copy of the request head (capacity req_raw_cap) */
    uint32_t req_raw_cap;
    struct http_header *req_hdrs;     /* owned, capacity req_hdrs_cap */
    uint32_t req_hdrs_cap;
    uint32_t resp_hdrs_cap;
    size_t tried_cap;
    const struct conf_route *route;
    const struct conf_listener *lcfg; /* the listener it came in on (in cfg), NULL if gone */
    uint64_t t_start;
    char client_ip[48];               /* the real client (behind trusted proxies) */
    char peer_ip[48];                 /* who connected: appended to X-Forwarded-For */
    struct sockaddr_storage client_addr;
    /* request steps */
    struct policy_run policy;
    struct pump hold_pump;            /* EX_HOLD_BODY: the client's body into body_hold */
    struct sbuf body_hold;            /* the whole request body, held for inspection */
    struct sbuf path_norm;            /* req.path when normalization changed it (path + query) */
    bool body_held;                   /* the body sits in body_hold: it goes upstream from there */
    bool body_uninspected;            /* too large to hold (detect mode): headers-only inspection */
    bool hold_partial_ok;             /* request buffering: a longer body may go on streaming */
    bool body_partial;                /* body_hold has the start of a chunked body; the rest streams */
    /* upstream side */
    struct worker_upstream *wu;
    int server;                       /* -1 until picked */
    bool *tried;                      /* per server, owned */
    unsigned attempts;
    bool reused;                      /* current connection came from the pool */
    bool retried_reused;
    bool tunnel_requested;
    struct upstream_conn *uc;
    struct loop_timer up_timer;       /* connect, response or upstream idle deadline */
    struct sbuf up_head;              /* request head sent upstream, kept for a retry */
    struct pump req_pump;             /* client -> upstream body */
    struct sbuf replay;               /* copy of a small idempotent request's body, for a retry */
    struct sbuf req_trailers;         /* a chunked request's trailer fields, passed on */
    struct sbuf resp_trailers;        /* a chunked response's trailer fields (grpc-status) */
    bool req_done;
    uint64_t t_upstream;              /* when the upstream attempt started */
    int64_t upstream_ms;
    /* response side */
    struct http_msg resp;
    struct http_header *resp_hdrs;    /* owned */
    struct sbuf resp_head;            /* interim heads, then the final head (or a local answer) */
    uint32_t resp_head_off;           /* written before the response pump took over */
    struct pump resp_pump;            /* upstream -> client body, or a local answer */
    bool resp_started;                /* the final head is committed */
    bool client_close;                /* close the client connection after this exchange */
    bool upstream_close;              /* the server said Connection: close: do not pool */
    int status;
    /* delivery (exchange_deliver.c) */
    int zalgo;                        /* enum compress_algo of the body, -1 = identity */
    struct compress_stream *zs;       /* its compressor, owned */
    bool spooling;                    /* buffering.response: upstream -> spool -> client */
    struct spool spool;
    struct pump spool_pump;           /* spool -> client */
    struct buf *spool_in;             /* spool_pump's buffer, owned */
    bool resp_complete;               /* the whole response body went through */
    /* cache (exchange_cache.c) */
    struct cache_zone *zone;          /* the route's zone (the runtime's reference), NULL: no cache */
    struct cache_obj *hit;            /* object served (or waited on), one reference */
    struct cache_obj *fill;           /* object this exchange fills, one reference */
    struct cache_obj *stale;          /* stored object being revalidated, one reference */
    struct cache_obj *watched;        /* the object `waiter` is registered on (no reference) */
    struct cache_waiter waiter;
    struct worker_mail mail;          /* the waiter's wake-up, posted to this worker */
    struct sbuf cache_key, cache_vary, cache_status;
    struct cache_cc req_cc;
    struct xport hit_xp;              /* the object as a byte source */
    struct buf *hit_in;               /* the serving pump's buffer, owned */
    uint64_t hit_off, hit_end;        /* body bytes still to serve */
    bool cache_readable;
    bool cache_refresh;               /* a detached stale-while-revalidate refresh */
    int cache_kind;                   /* Cache-Status kind of a forwarded request */
    int64_t t_cache_request;          /* when the request went upstream (wall clock, s) */
};

/* The interim answer to "Expect: 100-continue" (RFC 9110 §10.1.1). */
extern const char ex_continue_line[];
#define EX_CONTINUE_LEN (sizeof "HTTP/1.1 100 Continue\r\n\r\n" - 1)

/* exchange.c: the state machine, its bookkeeping and the forwarding path */
enum ex_step ex_abort_client(struct exchange *ex);
enum ex_step ex_action(struct exchange *ex);
void ex_arm_client_timer(struct exchange *ex, uint64_t ms);
bool ex_body_too_slow(const struct exchange *ex, uint64_t body);
enum ex_step ex_finish(struct exchange *ex, bool upstream_reusable);
void ex_on_up_timer(struct loop_timer *t);
void ex_run(struct exchange *ex);
const struct conf_server *ex_server(const struct exchange *ex);
void ex_server_begin(struct exchange *ex, int server);
void ex_server_end(struct exchange *ex);
struct str ex_hsts(const struct exchange *ex, char *buf, size_t cap);

/* exchange_local.c: answers portero composes itself */
enum ex_step ex_local_step(struct exchange *ex);
enum ex_step ex_redirect_route(struct exchange *ex);
enum ex_step ex_redirect_https(struct exchange *ex, uint32_t port);
enum ex_step ex_respond_route(struct exchange *ex);
enum ex_step ex_send_answer(struct exchange *ex, int status, const struct sbuf *extra);
enum ex_step ex_send_error(struct exchange *ex, int status);

/* exchange_upstream.c: picking a server, connecting, failures and retries */
enum ex_step ex_connect(struct exchange *ex, bool fresh);
enum ex_step ex_connect_step(struct exchange *ex);
enum ex_step ex_fail_upstream(struct exchange *ex, int status);
bool ex_may_retry(struct exchange *ex, bool sent);
void ex_record(struct exchange *ex, bool success);
enum ex_step ex_retry(struct exchange *ex);
enum ex_step ex_upstream_failed(struct exchange *ex, int status, const char *why);

/* exchange_deliver.c: compression and response buffering */
int ex_deliver_plan(struct exchange *ex, const struct http_msg *resp, enum h1_body_kind kind,
                    uint64_t length, struct hdr_response_ctx *rc);
int ex_deliver_start(struct exchange *ex, bool spool);
enum ex_step ex_spool_step(struct exchange *ex);
void ex_deliver_end(struct exchange *ex);
uint64_t ex_client_bytes(const struct exchange *ex);

/* exchange_cache.c: the cache step */
enum ex_step ex_cache_step(struct exchange *ex);
enum ex_step ex_cache_wait_step(struct exchange *ex);
enum ex_step ex_cache_serve_step(struct exchange *ex);
void ex_cache_lock_timeout(struct exchange *ex);
bool ex_cache_on_head(struct exchange *ex, enum ex_step *st);
bool ex_cache_on_failure(struct exchange *ex, enum ex_step *st);
void ex_cache_attach(struct exchange *ex);
void ex_cache_end(struct exchange *ex);
enum ex_step ex_forward(struct exchange *ex);
int ex_reserve_resp_headers(struct exchange *ex);

/* exchange_steps.c: the route's request steps and the path they see */
enum ex_step ex_begin_steps(struct exchange *ex);
enum ex_step ex_hold_body_step(struct exchange *ex);
int ex_normalize_path(struct exchange *ex);
enum ex_step ex_policy_step(struct exchange *ex);

#endif
