/* admin_api: the admin API's endpoints — one table of (method, path pattern, handler) — and their
 * handlers. Everything here runs on the control thread, one request at a time. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin/admin.h"
#include "admin/admin_json.h"
#include "admin/admin_priv.h"
#include "admin/metrics_fmt.h"

#define ADMIN_JSON "application/json"
#define ADMIN_MAX_PARAMS 2
#define ADMIN_PARAM_MAX 256
#define ADMIN_RUNTIME_NOTE "runtime change: lost on reload unless POST /config/persist"

/* The '*' segments of a matched path, URL-decoded. */
struct admin_params {
    char v[ADMIN_MAX_PARAMS][ADMIN_PARAM_MAX];
};

struct admin_endpoint {
    const char *method;
    const char *pattern; /* "/upstreams/ * /servers": a '*' segment matches one non-empty segment */
    void (*run)(struct admin_req *r, const struct admin_params *p);
    bool open;           /* answered without the admin token (orchestrator probes) */
};

/* --- answers ------------------------------------------------------------------------------------ */

static const struct {
    int status;
    const char *reason;
} admin_reasons[] = {
    { 100, "Continue" }, { 200, "OK" }, { 400, "Bad Request" }, { 401, "Unauthorized" },
    { 404, "Not Found" }, { 405, "Method Not Allowed" }, { 408, "Request Timeout" }, { 409, "Conflict" },
    { 411, "Length Required" }, { 413, "Content Too Large" }, { 414, "URI Too Long" },
    { 422, "Unprocessable Content" }, { 431, "Request Header Fields Too Large" },
    { 500, "Internal Server Error" }, { 501, "Not Implemented" }, { 503, "Service Unavailable" },
    { 505, "HTTP Version Not Supported" },
};

const char *admin_reason(int status)
{
    for (size_t i = 0; i < sizeof admin_reasons / sizeof admin_reasons[0]; i++)
        if (admin_reasons[i].status == status)
            return admin_reasons[i].reason;
    return "Unknown";
}

struct admin_json admin_reply_json(struct admin_req *r, int status)
{
    r->status = status;
    r->content_type = ADMIN_JSON;
    sbuf_reset(&r->out);
    return (struct admin_json){ .out = &r->out };
}

void admin_reply_error(struct admin_req *r, int status, const char *msg)
{
    struct admin_json j = admin_reply_json(r, status);
    admin_json_begin(&j, NULL, '{');
    admin_json_str(&j, "error", msg);
    admin_json_end(&j, '}');
}

/* The outcome of a publication: 200 {"ok":true,"changed":...} or 422 with every error. RUNTIME:
 * the change came from the API and is not in the file. */
static void admin_reply_result(struct admin_req *r, const struct control_result *res, bool runtime)
{
    struct admin_json j = admin_reply_json(r, res->ok ? 200 : 422);
    admin_json_begin(&j, NULL, '{');
    admin_json_bool(&j, "ok", res->ok);
    if (res->ok) {
        admin_json_str(&j, "changed", res->summary ? res->summary : "");
        if (runtime) {
            admin_json_bool(&j, "persisted", false);
            admin_json_str(&j, "note", ADMIN_RUNTIME_NOTE);
        }
    } else {
        admin_json_str(&j, "error", "invalid configuration: the running configuration is unchanged");
        admin_json_begin(&j, "errors", '[');
        for (size_t i = 0; i < res->errors.n; i++)
            admin_json_str(&j, NULL, res->errors.msgs[i]);
        admin_json_end(&j, ']');
    }
    admin_json_end(&j, '}');
}

/* --- request bodies ----------------------------------------------------------------------------- */

static const char *const admin_type_names[] = { "a string", "an integer", "a boolean" };

/* Checks B's fields against SPEC[0..N); answers 400 and returns false on the first problem. */
static bool admin_check_fields(struct admin_req *r, const struct admin_body *b,
                               const struct admin_field_spec *spec, size_t n)
{
    char msg[160];
    for (size_t i = 0; i < b->n; i++) {
        size_t k = 0;
        while (k < n && strcmp(spec[k].key, b->fields[i].key) != 0)
            k++;
        if (k == n)
            snprintf(msg, sizeof msg, "unknown key \"%.64s\"", b->fields[i].key);
        else if (b->fields[i].type != spec[k].type)
            snprintf(msg, sizeof msg, "\"%s\" must be %s", spec[k].key, admin_type_names[spec[k].type]);
        if (k == n || b->fields[i].type != spec[k].type) {
            admin_reply_error(r, 400, msg);
            return false;
        }
    }
    for (size_t k = 0; k < n; k++) {
        if (spec[k].required && !admin_body_get(b, spec[k].key)) {
            snprintf(msg, sizeof msg, "\"%s\" is required", spec[k].key);
            admin_reply_error(r, 400, msg);
            return false;
        }
    }
    return true;
}

bool admin_read_body(struct admin_req *r, const struct admin_field_spec *spec, size_t n,
                     struct admin_body *b)
{
    char err[256];
    if (admin_body_parse(r->body, r->body_len, b, err, sizeof err) < 0) {
        admin_reply_error(r, 400, err);
        return false;
    }
    if (!admin_check_fields(r, b, spec, n)) {
        admin_body_free(b);
        return false;
    }
    return true;
}

/* B's "weight" into *OUT (0 when absent); answers 400 and returns false when out of range. */
static bool admin_body_weight(struct admin_req *r, const struct admin_body *b, uint32_t *out)
{
    const struct admin_field *f = admin_body_get(b, "weight");
    *out = 0;
    if (!f)
        return true;
    if (f->num < 1 || f->num > UINT32_MAX) {
        admin_reply_error(r, 400, "\"weight\" must be a positive integer");
        return false;
    }
    *out = (uint32_t)f->num;
    return true;
}

/* --- server edits ------------------------------------------------------------------------------- */

/* config_edit_* refusals and their status; anything else is 400. */
static const struct {
    const char *err;
    int status;
} admin_edit_errors[] = {
    { "unknown upstream", 404 },
    { "unknown server", 404 },
    { "server already exists", 409 },
    { "an upstream needs at least one server", 409 },
    { "invalid server address", 400 },
};

static int admin_edit_status(const char *err)
{
    for (size_t i = 0; err && i < sizeof admin_edit_errors / sizeof admin_edit_errors[0]; i++)
        if (strcmp(admin_edit_errors[i].err, err) == 0)
            return admin_edit_errors[i].status;
    return err ? 400 : 500;
}

/* Publishes JSON (an edited config from config_edit_*, freed here; NULL with ERR when the edit
 * was refused) and answers. */
static void admin_publish_edit(struct admin_req *r, char *json, const char *err)
{
    if (!json) {
        admin_reply_error(r, admin_edit_status(err), err ? err : "out of memory");
        return;
    }
    struct control_result res;
    control_apply_buffer(r->ctl, "admin", json, strlen(json), &res);
    free(json);
    admin_reply_result(r, &res, true);
    control_result_free(&res);
}

static void admin_h_server_add(struct admin_req *r, const struct admin_params *p)
{
    static const struct admin_field_spec spec[] = {
        { "address", ADMIN_VALUE_STRING, true },
        { "weight", ADMIN_VALUE_INT, false },
    };
    struct admin_body b;
    uint32_t weight;
    if (!admin_read_body(r, spec, 2, &b))
        return;
    if (admin_body_weight(r, &b, &weight)) {
        const char *err = NULL;
        char *json = config_edit_add_server(control_config(r->ctl), p->v[0],
                                            admin_body_get(&b, "address")->str, weight, &err);
        admin_publish_edit(r, json, err);
    }
    admin_body_free(&b);
}

static void admin_h_server_remove(struct admin_req *r, const struct admin_params *p)
{
    const char *err = NULL;
    char *json = config_edit_remove_server(control_config(r->ctl), p->v[0], p->v[1], &err);
    admin_publish_edit(r, json, err);
}

static void admin_h_server_edit(struct admin_req *r, const struct admin_params *p)
{
    static const struct admin_field_spec spec[] = {
        { "weight", ADMIN_VALUE_INT, false },
        { "drain", ADMIN_VALUE_BOOL, false },
    };
    struct admin_body b;
    uint32_t weight;
    if (!admin_read_body(r, spec, 2, &b))
        return;
    const struct admin_field *drain = admin_body_get(&b, "drain");
    if (b.n == 0) {
        admin_reply_error(r, 400, "nothing to change: give \"weight\" and/or \"drain\"");
    } else if (admin_body_weight(r, &b, &weight)) {
        const char *err = NULL;
        char *json = config_edit_server(control_config(r->ctl), p->v[0], p->v[1], weight,
                                        drain ? drain->flag : -1, &err);
        admin_publish_edit(r, json, err);
    }
    admin_body_free(&b);
}

static void admin_set_drain(struct admin_req *r, const struct admin_params *p, int drain)
{
    const char *err = NULL;
    char *json = config_edit_server(control_config(r->ctl), p->v[0], p->v[1], 0, drain, &err);
    admin_publish_edit(r, json, err);
}

static void admin_h_server_drain(struct admin_req *r, const struct admin_params *p) { admin_set_drain(r, p, 1); }
static void admin_h_server_undrain(struct admin_req *r, const struct admin_params *p) { admin_set_drain(r, p, 0); }

/* --- state -------------------------------------------------------------------------------------- */

static const char *const admin_balance_names[] = { "round_robin", "least_conn", "random_two", "hash" };

static const char *admin_health(struct control *ctl, size_t u, size_t s)
{
    const struct conf_server *srv = &control_config(ctl)->upstreams[u].servers[s];
    const struct server_state *st = control_server_state(ctl, u, s);
    if (srv->drain)
        return "draining";
    if (server_state_usable(st, loop_now(control_loop(ctl))))
        return "up";
    return atomic_load_explicit(&st->active_up, memory_order_relaxed) ? "ejected" : "down";
}

/* The workers' counters, for the state views. */
struct admin_view {
    struct worker_stats **stats;
    size_t n;
};

static void admin_json_server(struct admin_req *r, struct admin_json *j, const struct admin_view *view,
                              size_t u, size_t s)
{
    const struct conf_upstream *up = &control_config(r->ctl)->upstreams[u];
    const struct conf_server *srv = &up->servers[s];
    char key[ADMIN_KEY_MAX];
    struct metrics_sum sum;
    admin_server_key(key, up->name, srv->address);
    metrics_sum_entry(view->stats, view->n, METRICS_SERVERS, key, &sum);
    const struct server_state *st = control_server_state(r->ctl, u, s);
    uint64_t now = loop_now(control_loop(r->ctl));
    admin_json_begin(j, NULL, '{');
    admin_json_str(j, "address", srv->address);
    admin_json_u64(j, "weight", srv->weight);
    admin_json_bool(j, "drain", srv->drain);
    admin_json_str(j, "health", admin_health(r->ctl, u, s));
    admin_json_u64(j, "active_requests", sum.active);
    admin_json_u64(j, "pooled_connections", sum.idle_conns);
    admin_json_u64(j, "requests_total", sum.requests_total);
    admin_json_num(j, "request_rate", admin_rates_get(r->rates, key, sum.requests_total, now));
    admin_json_num(j, "latency_ms_avg",
                   sum.latency_count ? (double)sum.latency_sum_ms / (double)sum.latency_count : 0.0);
    admin_json_u64(j, "ejections", atomic_load_explicit(&st->total_ejections, memory_order_relaxed));
    admin_json_end(j, '}');
}

static void admin_json_upstream(struct admin_req *r, struct admin_json *j, const struct admin_view *view,
                                size_t u)
{
    const struct conf_upstream *up = &control_config(r->ctl)->upstreams[u];
    admin_json_begin(j, NULL, '{');
    admin_json_str(j, "name", up->name);
    admin_json_str(j, "balance", (unsigned)up->balance < 4 ? admin_balance_names[up->balance] : "unknown");
    admin_json_begin(j, "servers", '[');
    for (size_t s = 0; s < up->n_servers; s++)
        admin_json_server(r, j, view, u, s);
    admin_json_end(j, ']');
    admin_json_end(j, '}');
}

static void admin_h_upstreams(struct admin_req *r, const struct admin_params *p)
{
    (void)p;
    struct admin_view view;
    view.stats = admin_worker_stats(r->ctl, &view.n);
    const struct config *cfg = control_config(r->ctl);
    struct admin_json j = admin_reply_json(r, 200);
    admin_json_begin(&j, NULL, '{');
    admin_json_begin(&j, "upstreams", '[');
    for (size_t u = 0; u < cfg->n_upstreams; u++)
        admin_json_upstream(r, &j, &view, u);
    admin_json_end(&j, ']');
    admin_json_end(&j, '}');
    free(view.stats);
}

static void admin_h_upstream(struct admin_req *r, const struct admin_params *p)
{
    const struct conf_upstream *up = config_find_upstream(control_config(r->ctl), p->v[0]);
    if (!up) {
        admin_reply_error(r, 404, "unknown upstream");
        return;
    }
    struct admin_view view;
    view.stats = admin_worker_stats(r->ctl, &view.n);
    struct admin_json j = admin_reply_json(r, 200);
    admin_json_upstream(r, &j, &view, up->index);
    free(view.stats);
}

static void admin_h_live(struct admin_req *r, const struct admin_params *p)
{
    (void)p;
    struct admin_json j = admin_reply_json(r, 200);
    admin_json_begin(&j, NULL, '{');
    admin_json_str(&j, "status", "live");
    admin_json_end(&j, '}');
}

static void admin_h_ready(struct admin_req *r, const struct admin_params *p)
{
    (void)p;
    bool ready = control_ready(r->ctl);
    struct admin_json j = admin_reply_json(r, ready ? 200 : 503);
    admin_json_begin(&j, NULL, '{');
    admin_json_str(&j, "status", ready ? "ready" : "not ready");
    admin_json_end(&j, '}');
}

static void admin_h_metrics(struct admin_req *r, const struct admin_params *p)
{
    (void)p;
    r->status = 200;
    r->content_type = "text/plain; version=0.0.4";
    sbuf_reset(&r->out);
    metrics_render(r->ctl, &r->out);
}

/* --- whole configs ------------------------------------------------------------------------------ */

static void admin_h_config_get(struct admin_req *r, const struct admin_params *p)
{
    (void)p;
    char *json = config_to_json(control_config(r->ctl));
    if (!json) {
        admin_reply_error(r, 500, "cannot serialise the running configuration");
        return;
    }
    struct admin_json j = admin_reply_json(r, 200);
    admin_json_raw(&j, NULL, json, strlen(json));
    free(json);
}

static void admin_h_config_put(struct admin_req *r, const struct admin_params *p)
{
    (void)p;
    struct control_result res;
    control_apply_buffer(r->ctl, "admin:/config", r->body ? r->body : "", r->body_len, &res);
    admin_reply_result(r, &res, true);
    control_result_free(&res);
}

static void admin_h_reload(struct admin_req *r, const struct admin_params *p)
{
    (void)p;
    struct control_result res;
    control_reload_file(r->ctl, &res);
    admin_reply_result(r, &res, false);
    control_result_free(&res);
}

static void admin_h_persist(struct admin_req *r, const struct admin_params *p)
{
    (void)p;
    char *err = NULL;
    int rc = control_persist(r->ctl, &err);
    struct admin_json j = admin_reply_json(r, rc == 0 ? 200 : 500);
    admin_json_begin(&j, NULL, '{');
    admin_json_bool(&j, "ok", rc == 0);
    if (rc != 0)
        admin_json_str(&j, "error", err ? err : "cannot write the configuration file");
    admin_json_end(&j, '}');
    free(err);
}

static void admin_h_config_status(struct admin_req *r, const struct admin_params *p)
{
    (void)p;
    struct admin_json j = admin_reply_json(r, 200);
    admin_json_begin(&j, NULL, '{');
    admin_json_bool(&j, "unsaved", control_unsaved(r->ctl));
    admin_json_u64(&j, "reloads_ok", control_reloads(r->ctl, true));
    admin_json_u64(&j, "reloads_failed", control_reloads(r->ctl, false));
    admin_json_end(&j, '}');
}

/* --- cache (admin_cache.c) ---------------------------------------------------------------------- */

static void admin_h_cache_list(struct admin_req *r, const struct admin_params *p)
{
    (void)p;
    admin_cache_list(r);
}

static void admin_h_cache_zone(struct admin_req *r, const struct admin_params *p) { admin_cache_zone(r, p->v[0]); }
static void admin_h_cache_purge(struct admin_req *r, const struct admin_params *p) { admin_cache_purge(r, p->v[0]); }

/* --- routing ------------------------------------------------------------------------------------ */

static const struct admin_endpoint admin_endpoints[] = {
    { "GET", "/live", admin_h_live, true },
    { "GET", "/ready", admin_h_ready, true },
    { "GET", "/upstreams", admin_h_upstreams, false },
    { "GET", "/upstreams/*", admin_h_upstream, false },
    { "POST", "/upstreams/*/servers", admin_h_server_add, false },
    { "DELETE", "/upstreams/*/servers/*", admin_h_server_remove, false },
    { "PATCH", "/upstreams/*/servers/*", admin_h_server_edit, false },
    { "PUT", "/upstreams/*/servers/*", admin_h_server_edit, false },
    { "POST", "/upstreams/*/servers/*/drain", admin_h_server_drain, false },
    { "POST", "/upstreams/*/servers/*/undrain", admin_h_server_undrain, false },
    { "GET", "/config", admin_h_config_get, false },
    { "PUT", "/config", admin_h_config_put, false },
    { "GET", "/config/status", admin_h_config_status, false },
    { "POST", "/config/persist", admin_h_persist, false },
    { "POST", "/reload", admin_h_reload, false },
    { "GET", "/metrics", admin_h_metrics, false },
    { "GET", "/cache", admin_h_cache_list, false },
    { "GET", "/cache/*", admin_h_cache_zone, false },
    { "POST", "/cache/*/purge", admin_h_cache_purge, false },
};
#define ADMIN_N_ENDPOINTS (sizeof admin_endpoints / sizeof admin_endpoints[0])

/* Does PATH match PATTERN? The raw text of its '*' segments goes to RAW (the rest empty). */
static bool admin_match(const char *pattern, struct str path, struct str raw[ADMIN_MAX_PARAMS])
{
    size_t i = 0, np = 0;
    for (size_t k = 0; k < ADMIN_MAX_PARAMS; k++)
        raw[k] = str_make("", 0);
    while (*pattern) {
        if (*pattern != '/' || i >= path.n || path.p[i] != '/')
            return false;
        pattern++;
        i++;
        size_t plen = strcspn(pattern, "/"), start = i;
        while (i < path.n && path.p[i] != '/')
            i++;
        struct str seg = str_make(path.p + start, i - start);
        if (plen == 1 && *pattern == '*') {
            if (!seg.n || np == ADMIN_MAX_PARAMS)
                return false;
            raw[np++] = seg;
        } else if (seg.n != plen || memcmp(seg.p, pattern, plen) != 0) {
            return false;
        }
        pattern += plen;
    }
    return i == path.n;
}

static int admin_hex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)(c | 0x20);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Percent-decodes IN into OUT (CAP bytes, NUL-terminated); -1 if malformed, too long, or %00. */
static int admin_url_decode(struct str in, char *out, size_t cap)
{
    size_t k = 0;
    for (size_t i = 0; i < in.n; i++) {
        int c = (unsigned char)in.p[i];
        if (c == '%') {
            int hi = i + 2 < in.n ? admin_hex(in.p[i + 1]) : -1;
            int lo = hi >= 0 ? admin_hex(in.p[i + 2]) : -1;
            if (lo < 0 || (c = hi * 16 + lo) == 0)
                return -1;
            i += 2;
        }
        if (k + 1 >= cap)
            return -1;
        out[k++] = (char)c;
    }
    out[k] = '\0';
    return 0;
}

/* Compares the token offered with the one configured in time that depends only on the latter's
 * length, so that timing reveals nothing of how much of a guess was right. */
static bool admin_token_eq(struct str given, const char *token)
{
    size_t n = strlen(token);
    volatile unsigned char diff = given.n != n;
    for (size_t i = 0; i < n; i++) {
        unsigned char g = i < given.n ? (unsigned char)given.p[i] : 0;
        diff |= g ^ (unsigned char)token[i];
    }
    return diff == 0;
}

static bool admin_authorized(const struct admin_req *r)
{
    const char *token = control_config(r->ctl)->admin_token;
    struct str v = r->authorization;
    if (!token)
        return true;
    if (v.n < 7 || !str_ieq(str_make(v.p, 6), STR_LIT("Bearer")) || v.p[6] != ' ')
        return false;
    return admin_token_eq(str_trim_ows(str_make(v.p + 7, v.n - 7)), token);
}

/* 405: the methods PATH allows, into R->allow. */
static void admin_set_allow(struct admin_req *r)
{
    struct str raw[ADMIN_MAX_PARAMS];
    size_t len = 0;
    r->allow[0] = '\0';
    for (size_t i = 0; i < ADMIN_N_ENDPOINTS; i++) {
        const struct admin_endpoint *e = &admin_endpoints[i];
        if (!admin_match(e->pattern, r->path, raw) || strstr(r->allow, e->method))
            continue;
        int n = snprintf(r->allow + len, sizeof r->allow - len, "%s%s", len ? ", " : "", e->method);
        if (n > 0 && (size_t)n < sizeof r->allow - len)
            len += (size_t)n;
    }
}

void admin_dispatch(struct admin_req *r)
{
    struct str raw[ADMIN_MAX_PARAMS] = { { "", 0 }, { "", 0 } }, tmp[ADMIN_MAX_PARAMS];
    const struct admin_endpoint *hit = NULL;
    bool known = false;
    for (size_t i = 0; i < ADMIN_N_ENDPOINTS && !hit; i++) {
        if (!admin_match(admin_endpoints[i].pattern, r->path, tmp))
            continue;
        known = true;
        if (str_eq(r->method, str_make(admin_endpoints[i].method, strlen(admin_endpoints[i].method)))) {
            hit = &admin_endpoints[i];
            memcpy(raw, tmp, sizeof raw);
        }
    }
    if (!(hit && hit->open) && !admin_authorized(r)) {
        r->challenge = true;
        admin_reply_error(r, 401, "unauthorized");
        return;
    }
    if (!known) {
        admin_reply_error(r, 404, "not found");
        return;
    }
    if (!hit) {
        admin_set_allow(r);
        admin_reply_error(r, 405, "method not allowed");
        return;
    }
    struct admin_params params;
    for (size_t i = 0; i < ADMIN_MAX_PARAMS; i++) {
        if (admin_url_decode(raw[i], params.v[i], sizeof params.v[i]) < 0) {
            admin_reply_error(r, 400, "malformed path");
            return;
        }
    }
    hit->run(r, &params);
}
