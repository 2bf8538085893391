#include "policy/waf.h"

#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <modsecurity/intervention.h>
#include <modsecurity/modsecurity.h>
#include <modsecurity/rules_set.h>
#include <modsecurity/transaction.h>

/* Threads. One ModSecurity instance and RulesSet per engine, shared by every worker, with one
 * Transaction per request (not a copy per thread: an engine takes ~17 MB and ~70 ms to load).
 * libmodsecurity's maintainers give this as the supported model (upstream issue #3215): loading
 * rules is not thread-safe (the seclang parser keeps global state, #2536, #3138), so loads are
 * serialized by waf_load_lock; once loaded a RulesSet is only read by transactions. Known 3.0.9
 * exceptions, checked against this code:
 * - in-memory IP/GLOBAL collections lock writers but not readers (#3054, fixed in 3.0.13): with
 *   the CRS defaults no rule writes them (only IP reputation by GeoIP/RBL, off in crs-setup);
 * - the audit log's JSON writer calls ctime(), which returns static storage: waf_audit_lock;
 * - @pm's optional mutex is not needed (#3227).
 * Checked by running 4 threads on one engine (with and without an audit log) under helgrind:
 * after waf_audit_lock, the only reports left are in glibc/libgcc internals (pthread_once, the
 * unwinder, PCRE2's JIT allocator mutex, stdio's FILE lock) that its default suppressions hide;
 * tests/unit/test_waf.c checks 4 threads get the verdicts one thread gets. */

/* Where Debian's modsecurity-crs puts the rule set (its owasp-crs.load lists the same files, but
 * uses IncludeOptional, which libmodsecurity 3.0.9 does not know). */
#define WAF_CRS_SETUP "/etc/modsecurity/crs/crs-setup.conf"
#define WAF_CRS_BEFORE "/etc/modsecurity/crs/REQUEST-900-EXCLUSION-RULES-BEFORE-CRS.conf"
#ifndef WAF_CRS_RULES /* a test build may point elsewhere */
#define WAF_CRS_RULES "/usr/share/modsecurity-crs/rules/*.conf"
#endif
#define WAF_CRS_AFTER "/etc/modsecurity/crs/RESPONSE-999-EXCLUSION-RULES-AFTER-CRS.conf"

/* Rule ids of our own directives, in the range ModSecurity leaves for local use (1-99,999). */
#define WAF_ID_DEFAULTS 90100
#define WAF_ID_PARANOIA 90101

struct waf_engine {
    ModSecurity *msc;   /* owned; its log callback collects rule messages per transaction */
    RulesSet *rules;    /* owned */
    size_t body_limit;  /* bytes of body handed to ModSecurity */
    bool audit;         /* an audit log is configured: run the logging phase */
};

static pthread_mutex_t waf_load_lock = PTHREAD_MUTEX_INITIALIZER;  /* rules parser: global state */
static pthread_mutex_t waf_audit_lock = PTHREAD_MUTEX_INITIALIZER; /* audit log: see waf_audit */

/* --- loading ----------------------------------------------------------------------------- */

/* A path goes inside a double-quoted directive argument: refuse what would end or escape it. */
static bool waf_path_ok(const char *p)
{
    for (; *p; p++)
        if (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20 || *p == 0x7f)
            return false;
    return true;
}

/* libmodsecurity 3.0.9 accepts an audit log it cannot open and then writes nothing: open it
 * here first (creating it, private to us and our group) so the operator hears of it at load. */
static int waf_open_audit_log(const char *path, char *err, size_t cap)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) {
        snprintf(err, cap, "waf: audit_log %s: %s", path, strerror(errno));
        return -1;
    }
    close(fd);
    return 0;
}

static int waf_check_conf(const struct conf_waf *conf, char *err, size_t cap)
{
    if (conf->paranoia < 1 || conf->paranoia > 4) {
        snprintf(err, cap, "waf: paranoia must be 1-4, not %u", conf->paranoia);
        return -1;
    }
    if (conf->body_limit > SIZE_MAX / 2) {
        snprintf(err, cap, "waf: body_limit %llu is too large",
                 (unsigned long long)conf->body_limit);
        return -1;
    }
    if (conf->audit_log && (!conf->audit_log[0] || strlen(conf->audit_log) >= PATH_MAX ||
                            !waf_path_ok(conf->audit_log))) {
        snprintf(err, cap, "waf: audit_log \"%.200s\": empty, too long, or holds a quote, "
                 "backslash or control character", conf->audit_log);
        return -1;
    }
    return conf->audit_log ? waf_open_audit_log(conf->audit_log, err, cap) : 0;
}

/* ModSecurity's own error strings are malloc'd for us (C API); this frees it. */
static int waf_add_result(int rc, const char *what, const char *msc_err, char *err, size_t cap)
{
    if (rc >= 0) {
        free((void *)msc_err);
        return 0;
    }
    snprintf(err, cap, "waf: loading %s: %s", what, msc_err ? msc_err : "unknown error");
    /* ModSecurity ends its messages with a newline; the caller's log line adds its own. */
    size_t n = strlen(err);
    while (n && (err[n - 1] == '\n' || err[n - 1] == '\r'))
        err[--n] = '\0';
    free((void *)msc_err);
    return -1;
}

static int waf_add_file(RulesSet *rules, const char *path, char *err, size_t cap)
{
    const char *msc_err = NULL;
    int rc = msc_rules_add_file(rules, path, &msc_err);
    return waf_add_result(rc, path, msc_err, err, cap);
}

static int waf_add_text(RulesSet *rules, const char *what, const char *text, char *err,
                        size_t cap)
{
    const char *msc_err = NULL;
    int rc = msc_rules_add(rules, text, &msc_err);
    return waf_add_result(rc, what, msc_err, err, cap);
}

/* The engine settings. The rule engine is always On: blocking or only logging is the caller's
 * decision. Bodies past the limit never reach ModSecurity (the exchange answers 413 or inspects
 * headers only), so ProcessPartial only guards against a caller that sends more. The body
 * processor rules and the REQBODY_ERROR / MULTIPART_STRICT_ERROR checks are those of
 * ModSecurity's recommended configuration, which Debian does not install: without them JSON and
 * XML bodies would not be parsed into ARGS, and an unparsable body would go uninspected. The
 * audit log leaves the request body (part C) out: it may hold passwords. */
static int waf_add_settings(RulesSet *rules, const struct conf_waf *conf, char *err, size_t cap)
{
    char audit[PATH_MAX + 200];
    if (conf->audit_log)
        snprintf(audit, sizeof audit,
                 "SecAuditEngine RelevantOnly\nSecAuditLogType Serial\nSecAuditLogFormat JSON\n"
                 "SecAuditLogParts ABHZ\nSecAuditLog \"%s\"\n", conf->audit_log);
    else
        snprintf(audit, sizeof audit, "SecAuditEngine Off\n");
    char text[sizeof audit + 1200];
    snprintf(text, sizeof text,
             "SecRuleEngine On\n"
             "SecRequestBodyAccess On\n"
             "SecRequestBodyLimit %llu\n"
             "SecRequestBodyNoFilesLimit %llu\n"
             "SecRequestBodyLimitAction ProcessPartial\n"
             "SecResponseBodyAccess Off\n"
             "%s"
             "SecRule REQUEST_HEADERS:Content-Type \"@rx ^(?:application(?:/soap\\+|/)|text/)xml\" "
             "\"id:90110,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=XML\"\n"
             "SecRule REQUEST_HEADERS:Content-Type \"@rx ^application/(?:[a-z0-9.+-]+\\+)?json\" "
             "\"id:90111,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=JSON\"\n"
             "SecRule REQBODY_ERROR \"!@eq 0\" \"id:90112,phase:2,t:none,log,deny,status:400,"
             "msg:'Request body could not be parsed'\"\n"
             "SecRule MULTIPART_STRICT_ERROR \"!@eq 0\" \"id:90113,phase:2,t:none,log,deny,"
             "status:400,msg:'Multipart request body failed strict validation'\"\n",
             (unsigned long long)conf->body_limit, (unsigned long long)conf->body_limit, audit);
    return waf_add_text(rules, conf->audit_log ? "settings (audit_log)" : "settings", text, err,
                        cap);
}

/* Defaults of ours for CRS settings, loaded before crs-setup.conf so that an operator's setting
 * there (rules 900200, 900220) wins, as the CRS sets its own only when the variable is unset:
 * - methods: the CRS allows only GET HEAD POST OPTIONS, which would refuse every REST API;
 * - request content types: the CRS 3.3 list leaves out application/octet-stream and
 *   text/plain, so every binary or plain-text upload got a 403 (rule 920420). Such bodies have
 *   no parser: the rules see them whole (REQUEST_BODY), not as arguments. */
static int waf_add_defaults(RulesSet *rules, char *err, size_t cap)
{
    char text[768];
    snprintf(text, sizeof text,
             "SecAction \"id:%d,phase:1,pass,t:none,nolog,"
             "setvar:'tx.allowed_methods=GET HEAD POST OPTIONS PUT PATCH DELETE',"
             "setvar:'tx.allowed_request_content_type=|application/x-www-form-urlencoded| "
             "|multipart/form-data| |multipart/related| |text/xml| |application/xml| "
             "|application/soap+xml| |application/json| |application/cloudevents+json| "
             "|application/cloudevents-batch+json| |application/octet-stream| |text/plain|'\"\n",
             WAF_ID_DEFAULTS);
    return waf_add_text(rules, "CRS defaults", text, err, cap);
}

/* CRS 3.x reads tx.paranoia_level, CRS 4 tx.blocking_paranoia_level. The CRS sets its default
 * only when the variable is unset (REQUEST-901), so this runs after crs-setup.conf (portero's
 * setting wins over one made there) and before the rules. */
static int waf_add_paranoia(RulesSet *rules, uint32_t level, char *err, size_t cap)
{
    char text[256];
    snprintf(text, sizeof text,
             "SecAction \"id:%d,phase:1,pass,t:none,nolog,setvar:tx.paranoia_level=%u,"
             "setvar:tx.blocking_paranoia_level=%u\"\n", WAF_ID_PARANOIA, level, level);
    return waf_add_text(rules, "paranoia setting", text, err, cap);
}

static int waf_add_optional(RulesSet *rules, const char *path, char *err, size_t cap)
{
    if (access(path, F_OK) != 0 && errno == ENOENT)
        return 0;
    return waf_add_file(rules, path, err, cap);
}

/* The CRS in the order of Debian's owasp-crs.load, one file at a time so an error names it. */
static int waf_add_crs(RulesSet *rules, uint32_t paranoia, char *err, size_t cap)
{
    if (waf_add_defaults(rules, err, cap) < 0 ||
        waf_add_file(rules, WAF_CRS_SETUP, err, cap) < 0 ||
        waf_add_paranoia(rules, paranoia, err, cap) < 0 ||
        waf_add_optional(rules, WAF_CRS_BEFORE, err, cap) < 0)
        return -1;
    glob_t g;
    int grc = glob(WAF_CRS_RULES, GLOB_ERR, NULL, &g);
    if (grc != 0) {
        snprintf(err, cap, "waf: no rules at %s (is modsecurity-crs installed?)", WAF_CRS_RULES);
        if (grc != GLOB_NOMATCH)
            globfree(&g);
        return -1;
    }
    int rc = 0;
    for (size_t i = 0; i < g.gl_pathc && rc == 0; i++)
        rc = waf_add_file(rules, g.gl_pathv[i], err, cap);
    globfree(&g);
    return rc < 0 ? -1 : waf_add_optional(rules, WAF_CRS_AFTER, err, cap);
}

static void waf_log_cb(void *data, const void *line);

struct waf_engine *waf_engine_new(const struct conf_waf *conf, char *err, size_t cap)
{
    if (waf_check_conf(conf, err, cap) < 0)
        return NULL;
    struct waf_engine *e = calloc(1, sizeof *e);
    if (!e) {
        snprintf(err, cap, "waf: out of memory");
        return NULL;
    }
    e->body_limit = (size_t)conf->body_limit;
    e->audit = conf->audit_log != NULL;
    pthread_mutex_lock(&waf_load_lock);
    e->msc = msc_init();
    int rc = -1;
    if (e->msc && (e->rules = msc_create_rules_set())) {
        msc_set_connector_info(e->msc, "portero");
        msc_set_log_cb(e->msc, waf_log_cb);
        rc = waf_add_settings(e->rules, conf, err, cap);
        if (rc == 0)
            rc = waf_add_crs(e->rules, conf->paranoia, err, cap);
    } else {
        snprintf(err, cap, "waf: cannot start libmodsecurity");
    }
    pthread_mutex_unlock(&waf_load_lock);
    if (rc < 0) {
        waf_engine_free(e);
        return NULL;
    }
    return e;
}

void waf_engine_free(struct waf_engine *e)
{
    if (!e)
        return;
    if (e->rules)
        msc_rules_cleanup(e->rules);
    if (e->msc)
        msc_cleanup(e->msc);
    free(e);
}

/* --- rule messages ----------------------------------------------------------------------- */

/* One rule message, taken from ModSecurity's text form:
 *   ... Matched "..." (Value: `<request data>' ) [file "F"] [line "N"] [id "I"] [rev "R"]
 *   [msg "M"] [data "<escaped>"] [severity "S"] ... [uri "<request path>"] ...
 * Request data appears unescaped before [file] and in [uri], so a request could forge fields:
 * a line is used only when " [file \"" occurs in it exactly once (then it is the real one) and
 * the fields follow it in this exact order. */
struct waf_rule_msg {
    char id[16];
    char msg[128];
    int severity;       /* 0 (emergency) .. 7; 9 when absent */
};

/* Expects LIT at *P; advances past it. */
static bool waf_lit(const char **p, const char *lit)
{
    size_t n = strlen(lit);
    if (strncmp(*p, lit, n) != 0)
        return false;
    *p += n;
    return true;
}

/* Copies the field value at *P up to END (exclusive) into OUT, printable ASCII only. */
static bool waf_field(const char **p, const char *end, char *out, size_t cap)
{
    const char *q = strstr(*p, end);
    if (!q)
        return false;
    size_t n = (size_t)(q - *p), k = 0;
    for (size_t i = 0; i < n && k + 1 < cap; i++) {
        unsigned char c = (unsigned char)(*p)[i];
        out[k++] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    out[k] = '\0';
    *p = q + strlen(end);
    return true;
}

static bool waf_digits(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}

static bool waf_parse_msg(const char *line, struct waf_rule_msg *out)
{
    static const char file_tag[] = " [file \"";
    const char *p = strstr(line, file_tag);
    if (!p || strstr(p + 1, file_tag))
        return false;
    p += sizeof file_tag - 1;
    char scratch[8];
    if (!waf_field(&p, "\"] [line \"", scratch, sizeof scratch) ||
        !waf_field(&p, "\"] [id \"", scratch, sizeof scratch) ||
        !waf_field(&p, "\"] [rev \"", out->id, sizeof out->id) || !waf_digits(out->id) ||
        !waf_field(&p, "\"] [msg \"", scratch, sizeof scratch) ||
        !waf_field(&p, "\"] [data \"", out->msg, sizeof out->msg))
        return false;
    out->severity = 9;
    /* [data] has its quotes escaped by ModSecurity, so its end is the next quote. */
    if (waf_field(&p, "\"]", scratch, sizeof scratch) && waf_lit(&p, " [severity \"") &&
        *p >= '0' && *p <= '7' && p[1] == '"')
        out->severity = *p - '0';
    return true;
}

/* The CRS's scoring rules (blocking evaluation, correlation) restate a match: not an attack. */
static bool waf_is_scoring_rule(const char *id)
{
    long n = strtol(id, NULL, 10);
    return (n >= 949000 && n < 950000) || (n >= 959000 && n < 960000) ||
           (n >= 980000 && n < 981000);
}

/* Per inspection: the most severe attack rule seen (the first of equals). */
struct waf_capture {
    bool have;
    struct waf_rule_msg best;
};

/* Called by ModSecurity on the inspecting thread for each rule that logs; DATA is the capture
 * the transaction was created with. */
static void waf_log_cb(void *data, const void *line)
{
    struct waf_capture *cap = data;
    struct waf_rule_msg m;
    if (!cap || !line || !waf_parse_msg(line, &m) || waf_is_scoring_rule(m.id))
        return;
    if (cap->have && m.severity >= cap->best.severity)
        return;
    cap->best = m;
    cap->have = true;
}

/* --- inspection -------------------------------------------------------------------------- */

static void waf_verdict_set(struct waf_verdict *out, const struct waf_capture *cap,
                            const ModSecurityIntervention *it)
{
    struct waf_rule_msg decisive = { .severity = 9 };
    bool known = it->log && waf_parse_msg(it->log, &decisive);
    out->matched = true;
    out->status = it->status >= 300 && it->status <= 599 ? it->status : 403;
    if (cap->have) {
        snprintf(out->rule_id, sizeof out->rule_id, "%s", cap->best.id);
        if (known && strcmp(decisive.id, cap->best.id) != 0)
            snprintf(out->message, sizeof out->message, "%.90s (%.60s)", cap->best.msg,
                     decisive.msg);
        else
            snprintf(out->message, sizeof out->message, "%s", cap->best.msg);
    } else if (known) {
        snprintf(out->rule_id, sizeof out->rule_id, "%s", decisive.id);
        snprintf(out->message, sizeof out->message, "%s", decisive.msg);
    } else {
        snprintf(out->message, sizeof out->message, "intervention without a rule message");
    }
}

/* True when ModSecurity asked to intervene; fills OUT then. The strings it hands over are
 * malloc'd copies, ours to free. */
static bool waf_check(Transaction *t, const struct waf_capture *cap, struct waf_verdict *out)
{
    ModSecurityIntervention it = { .status = 200 };
    bool disrupt = msc_intervention(t, &it) && it.disruptive;
    if (disrupt)
        waf_verdict_set(out, cap, &it);
    free(it.log);
    free(it.url);
    return disrupt;
}

/* Phases 0 and URI: ModSecurity wants C strings; one allocation holds method and target. */
static int waf_feed_line(Transaction *t, const struct waf_request *req)
{
    if (memchr(req->method, '\0', req->method_len) || memchr(req->uri, '\0', req->uri_len))
        return -1;
    char *s = malloc(req->method_len + req->uri_len + 2);
    if (!s)
        return -1;
    memcpy(s, req->method, req->method_len);
    s[req->method_len] = '\0';
    char *uri = s + req->method_len + 1;
    memcpy(uri, req->uri, req->uri_len);
    uri[req->uri_len] = '\0';
    msc_process_connection(t, req->client_ip ? req->client_ip : "", req->client_port,
                           req->server_ip ? req->server_ip : "", req->server_port);
    msc_process_uri(t, uri, s, req->version ? req->version : "1.1");
    free(s);
    return 0;
}

static void waf_feed_headers(Transaction *t, const struct waf_request *req)
{
    for (size_t i = 0; i < req->n_headers; i++) {
        const struct http_header *h = &req->headers[i];
        msc_add_n_request_header(t, (const unsigned char *)h->name.p, h->name.n,
                                 (const unsigned char *)h->value.p, h->value.n);
    }
    msc_process_request_headers(t);
}

static void waf_feed_body(Transaction *t, const struct waf_engine *e,
                          const struct waf_request *req)
{
    size_t n = req->body_len < e->body_limit ? req->body_len : e->body_limit;
    if (n > 0 && req->body)
        msc_append_request_body(t, (const unsigned char *)req->body, n);
    /* Always: phase 2 is where the CRS adds up the anomaly score, even for an empty body. */
    msc_process_request_body(t);
}

/* The logging phase, for a transaction the WAF matched (blocked or detected). RelevantOnly
 * would also write every transaction in which a rule merely warned below the anomaly threshold:
 * with the CRS that is any request whose Host is an IP address (rule 920350), so health checks
 * and clean traffic would fill the log, each entry taking the lock below. The JSON writer of
 * libmodsecurity 3.0.9 formats its time_stamp with ctime(), whose result and struct tm are
 * static: entries written at once from two threads race on them (helgrind shows it). Hence one
 * lock for every engine. */
static void waf_audit(Transaction *t, const struct waf_verdict *out)
{
    /* The entry records the status the WAF chose, not what the client finally got. */
    msc_update_status_code(t, out->status);
    pthread_mutex_lock(&waf_audit_lock);
    msc_process_logging(t);
    pthread_mutex_unlock(&waf_audit_lock);
}

int waf_inspect(struct waf_engine *e, const struct waf_request *req, struct waf_verdict *out)
{
    memset(out, 0, sizeof *out);
    struct waf_capture cap = { 0 };
    Transaction *t = msc_new_transaction(e->msc, e->rules, &cap);
    if (!t) {
        snprintf(out->message, sizeof out->message, "cannot start a transaction");
        return -1;
    }
    if (waf_feed_line(t, req) < 0) {
        msc_transaction_cleanup(t);
        snprintf(out->message, sizeof out->message, "NUL byte in method or target, or no memory");
        return -1;
    }
    waf_feed_headers(t, req);
    if (!waf_check(t, &cap, out)) {
        waf_feed_body(t, e, req);
        waf_check(t, &cap, out);
    }
    if (e->audit && out->matched)
        waf_audit(t, out);
    msc_transaction_cleanup(t);
    return 0;
}
