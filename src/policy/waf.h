/* waf: the web application firewall step — libmodsecurity 3 running the OWASP Core Rule Set
 * (Debian's modsecurity-crs) over a request's head and body (phases 1 and 2).
 *
 * ModSecurity decides whether a request matched; whether a match blocks or is only logged is the
 * caller's choice (conf_waf.mode): the engine always runs with SecRuleEngine On. An engine is
 * built on the control thread when a configuration is loaded and is then shared, read-only, by
 * every worker thread: waf_inspect may run on many threads at once (see waf.c for why that is
 * safe with the library as packaged). */
#ifndef PORTERO_POLICY_WAF_H
#define PORTERO_POLICY_WAF_H

#include <stdbool.h>
#include <stddef.h>

#include "conf/config.h"
#include "http/msg.h"

/* One per (paranoia, body_limit, audit_log) setting; owns its ModSecurity instance and rules. */
struct waf_engine;

/* Loads the CRS at CONF->paranoia (1-4) with request-body inspection up to CONF->body_limit
 * bytes (0: the body is not inspected) and, if CONF->audit_log is set, a JSON audit log of
 * matched transactions appended to that file. Takes about 0.1 s. Returns NULL with a message in
 * ERR (CAP bytes) naming the file or setting at fault. Concurrent calls are serialized inside
 * (libmodsecurity's rules parser keeps global state). */
struct waf_engine *waf_engine_new(const struct conf_waf *conf, char *err, size_t cap);
void waf_engine_free(struct waf_engine *e);

struct waf_request {              /* lent for the call; slices need not be NUL-terminated */
    const char *client_ip; int client_port; const char *server_ip; int server_port;
    const char *method; size_t method_len;
    const char *uri; size_t uri_len;       /* request target as received */
    const char *version;                   /* "1.1" */
    const struct http_header *headers; size_t n_headers;   /* must include Host */
    const char *body; size_t body_len;     /* decoded request body, may be empty; only the
                                              first body_limit bytes are inspected */
};

struct waf_verdict {
    bool matched;                 /* a rule asked to intervene (or the anomaly score passed the
                                     threshold) */
    int status;                   /* the intervention's status: 403, or 400 for a body that
                                     could not be parsed (JSON, XML, multipart) */
    char rule_id[16];             /* the most severe attack rule that matched (e.g. "942100"),
                                     else the rule that intervened; "" when unknown */
    char message[160];            /* short, for the error log: never sent to the client */
};

/* Runs phases 1 and 2 (connection, URI, headers, body) on REQ and fills OUT (zeroed when nothing
 * matched). Thread-safe. Returns 0, or -1 on an internal error (REQ->uri or method holding a NUL
 * byte, out of memory) with OUT->message saying why. Writes the audit log entry, if any. */
int waf_inspect(struct waf_engine *e, const struct waf_request *req, struct waf_verdict *out);

#endif
