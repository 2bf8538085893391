#include "admin/metrics_fmt.h"

#include <stdlib.h>
#include <string.h>

/* --- sums --------------------------------------------------------------------------------------- */

static struct stats_table *metrics_table_of(struct worker_stats *s, enum metrics_table which)
{
    switch (which) {
    case METRICS_ROUTES: return &s->routes;
    case METRICS_UPSTREAMS: return &s->upstreams;
    default: return &s->servers;
    }
}

/* Entries [0, n) are complete once n is read with acquire (stats_table_entry's release store). */
static size_t metrics_table_len(struct stats_table *t)
{
    return t->entries ? atomic_load_explicit(&t->n, memory_order_acquire) : 0;
}

static struct stats_entry *metrics_find(struct stats_table *t, const char *name)
{
    size_t n = metrics_table_len(t);
    for (size_t i = 0; i < n; i++)
        if (strncmp(t->entries[i].name, name, sizeof t->entries[i].name - 1) == 0)
            return &t->entries[i];
    return NULL;
}

/* A gauge summed modulo 2^64 from owner-kept adds and subtracts: "negative" reads as 0. */
static uint64_t metrics_gauge(uint64_t v) { return v > (uint64_t)INT64_MAX ? 0 : v; }

size_t metrics_sum_entry(struct worker_stats *const *stats, size_t n, enum metrics_table which,
                         const char *name, struct metrics_sum *out)
{
    size_t found = 0;
    memset(out, 0, sizeof *out);
    for (size_t w = 0; w < n; w++) {
        struct stats_entry *e = metrics_find(metrics_table_of(stats[w], which), name);
        if (!e)
            continue;
        found++;
        for (unsigned c = 0; c < 6; c++)
            out->requests[c] += STATS_GET(e->requests[c]);
        out->bytes_in += STATS_GET(e->bytes_in);
        out->bytes_out += STATS_GET(e->bytes_out);
        out->retries += STATS_GET(e->retries);
        out->active += STATS_GET(e->active);
        out->idle_conns += STATS_GET(e->idle_conns);
        out->latency_sum_ms += STATS_GET(e->latency.sum_ms);
        out->latency_count += STATS_GET(e->latency.count);
    }
    for (unsigned c = 0; c < 6; c++)
        out->requests_total += out->requests[c];
    out->active = metrics_gauge(out->active);
    out->idle_conns = metrics_gauge(out->idle_conns);
    return found;
}

static uint64_t metrics_worker_sum(const struct metrics_source *src, size_t off)
{
    uint64_t v = 0;
    for (size_t w = 0; w < src->n_workers; w++)
        v += STATS_GET(*(stats_u64 *)((char *)src->stats[w] + off));
    return v;
}

/* The names of table WHICH over every worker, each once, in first-seen order (borrowed from the
 * tables, whose entries never move). NULL-free array in *OUT, malloc'd; returns the count. */
static size_t metrics_names(const struct metrics_source *src, enum metrics_table which, const char ***out)
{
    size_t n = 0, cap = 0;
    const char **v = NULL;
    for (size_t w = 0; w < src->n_workers; w++) {
        struct stats_table *t = metrics_table_of(src->stats[w], which);
        size_t len = metrics_table_len(t);
        for (size_t i = 0; i < len; i++) {
            const char *name = t->entries[i].name;
            size_t k = 0;
            while (k < n && strcmp(v[k], name) != 0)
                k++;
            if (k < n)
                continue;
            if (n == cap) {
                size_t ncap = cap ? cap * 2 : 64;
                const char **nv = realloc(v, ncap * sizeof *nv);
                if (!nv)
                    break;
                v = nv;
                cap = ncap;
            }
            v[n++] = name;
        }
    }
    *out = v;
    return n;
}

/* --- exposition --------------------------------------------------------------------------------- */

void metrics_label_escape(struct sbuf *out, const char *v, size_t n)
{
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        const char *esc = v[i] == '\\' ? "\\\\" : v[i] == '"' ? "\\\"" : v[i] == '\n' ? "\\n" : NULL;
        if (!esc)
            continue;
        sbuf_append(out, v + run, i - run);
        sbuf_append(out, esc, 2);
        run = i + 1;
    }
    sbuf_append(out, v + run, n - run);
}

void metrics_seconds(struct sbuf *out, uint64_t ms)
{
    sbuf_append_u64(out, ms / 1000);
    unsigned frac = (unsigned)(ms % 1000);
    if (!frac)
        return;
    char digits[4] = { '.', (char)('0' + frac / 100), (char)('0' + frac / 10 % 10), (char)('0' + frac % 10) };
    size_t len = 4;
    while (digits[len - 1] == '0')
        len--;
    sbuf_append(out, digits, len);
}

static void metrics_family(struct sbuf *o, const char *name, const char *type, const char *help)
{
    sbuf_append_cstr(o, "# HELP ");
    sbuf_append_cstr(o, name);
    sbuf_append(o, " ", 1);
    sbuf_append_cstr(o, help);
    sbuf_append_cstr(o, "\n# TYPE ");
    sbuf_append_cstr(o, name);
    sbuf_append(o, " ", 1);
    sbuf_append_cstr(o, type);
    sbuf_append(o, "\n", 1);
}

/* One sample line: metrics_line_begin, any metrics_label, then metrics_line_end*. */
struct metrics_line {
    struct sbuf *o;
    bool labels;
};

static struct metrics_line metrics_line_begin(struct sbuf *o, const char *name, const char *suffix)
{
    sbuf_append_cstr(o, name);
    if (suffix)
        sbuf_append_cstr(o, suffix);
    return (struct metrics_line){ .o = o };
}

static void metrics_label(struct metrics_line *l, const char *key, const char *v, size_t n)
{
    sbuf_append(l->o, l->labels ? "," : "{", 1);
    l->labels = true;
    sbuf_append_cstr(l->o, key);
    sbuf_append(l->o, "=\"", 2);
    metrics_label_escape(l->o, v, n);
    sbuf_append(l->o, "\"", 1);
}

static void metrics_label_cstr(struct metrics_line *l, const char *key, const char *v)
{
    metrics_label(l, key, v, strlen(v));
}

static void metrics_line_close(struct metrics_line *l)
{
    sbuf_append(l->o, l->labels ? "} " : " ", l->labels ? 2 : 1);
}

static void metrics_line_end(struct metrics_line *l, uint64_t v)
{
    metrics_line_close(l);
    sbuf_append_u64(l->o, v);
    sbuf_append(l->o, "\n", 1);
}

static void metrics_line_end_seconds(struct metrics_line *l, uint64_t ms)
{
    metrics_line_close(l);
    metrics_seconds(l->o, ms);
    sbuf_append(l->o, "\n", 1);
}

/* The identifying labels of an entry of table WHICH: route, upstream, or upstream + server
 * (a server entry is named "UPSTREAM/ADDRESS"; addresses hold no '/'). */
static void metrics_entry_labels(struct metrics_line *l, enum metrics_table which, const char *name)
{
    const char *slash = which == METRICS_SERVERS ? strrchr(name, '/') : NULL;
    if (which == METRICS_ROUTES) {
        metrics_label_cstr(l, "route", name);
    } else if (!slash) {
        metrics_label_cstr(l, "upstream", name);
    } else {
        metrics_label(l, "upstream", name, (size_t)(slash - name));
        metrics_label_cstr(l, "server", slash + 1);
    }
}

static const char *const metrics_classes[6] = { "none", "1xx", "2xx", "3xx", "4xx", "5xx" };

/* A counter family by status class over the entries of one table. */
struct metrics_by_class {
    const char *name;
    const char *help;
    enum metrics_table table;
};

static const struct metrics_by_class metrics_class_families[] = {
    { "portero_requests_total", "Client requests by route and response status class.", METRICS_ROUTES },
    { "portero_upstream_requests_total", "Requests answered through an upstream, by status class.",
      METRICS_UPSTREAMS },
    { "portero_server_requests_total", "Requests answered by each server, by status class.",
      METRICS_SERVERS },
};

static void metrics_format_by_class(const struct metrics_source *src, struct sbuf *o,
                                    const struct metrics_by_class *f)
{
    const char **names;
    size_t n = metrics_names(src, f->table, &names);
    metrics_family(o, f->name, "counter", f->help);
    for (size_t i = 0; i < n; i++) {
        struct metrics_sum sum;
        metrics_sum_entry(src->stats, src->n_workers, f->table, names[i], &sum);
        for (unsigned c = 0; c < 6; c++) {
            struct metrics_line l = metrics_line_begin(o, f->name, NULL);
            metrics_entry_labels(&l, f->table, names[i]);
            metrics_label_cstr(&l, "class", metrics_classes[c]);
            metrics_line_end(&l, sum.requests[c]);
        }
    }
    free(names);
}

static void metrics_format_upstream_retries(const struct metrics_source *src, struct sbuf *o)
{
    const char **names;
    size_t n = metrics_names(src, METRICS_UPSTREAMS, &names);
    metrics_family(o, "portero_upstream_retries_total", "counter", "Retries to another server, by upstream.");
    for (size_t i = 0; i < n; i++) {
        struct metrics_sum sum;
        metrics_sum_entry(src->stats, src->n_workers, METRICS_UPSTREAMS, names[i], &sum);
        struct metrics_line l = metrics_line_begin(o, "portero_upstream_retries_total", NULL);
        metrics_label_cstr(&l, "upstream", names[i]);
        metrics_line_end(&l, sum.retries);
    }
    free(names);
}

/* A latency histogram kept per worker. */
struct metrics_histogram {
    const char *name;
    const char *help;
    size_t off; /* of the struct stats_histogram in struct worker_stats */
};

static const struct metrics_histogram metrics_histograms[] = {
    { "portero_request_duration_seconds", "Time from a request's first byte to the end of its response.",
      offsetof(struct worker_stats, latency_total) },
    { "portero_upstream_response_duration_seconds", "Time from sending a request upstream to its response head.",
      offsetof(struct worker_stats, latency_upstream) },
};

static void metrics_format_histogram(const struct metrics_source *src, struct sbuf *o,
                                     const struct metrics_histogram *h)
{
    uint64_t buckets[STATS_LATENCY_BUCKETS + 1] = { 0 }, sum_ms = 0;
    for (size_t w = 0; w < src->n_workers; w++) {
        struct stats_histogram *hist = (struct stats_histogram *)((char *)src->stats[w] + h->off);
        for (unsigned b = 0; b <= STATS_LATENCY_BUCKETS; b++)
            buckets[b] += STATS_GET(hist->buckets[b]);
        sum_ms += STATS_GET(hist->sum_ms);
    }
    metrics_family(o, h->name, "histogram", h->help);
    uint64_t cumulative = 0;
    for (unsigned b = 0; b <= STATS_LATENCY_BUCKETS; b++) {
        struct sbuf le = { 0 };
        cumulative += buckets[b];
        if (b < STATS_LATENCY_BUCKETS)
            metrics_seconds(&le, stats_latency_bounds_ms[b]);
        else
            sbuf_append_cstr(&le, "+Inf");
        struct metrics_line l = metrics_line_begin(o, h->name, "_bucket");
        metrics_label(&l, "le", le.p, le.len);
        metrics_line_end(&l, cumulative);
        sbuf_free(&le);
    }
    /* _count is the +Inf bucket, so the two always agree within one scrape. */
    struct metrics_line l = metrics_line_begin(o, h->name, "_sum");
    metrics_line_end_seconds(&l, sum_ms);
    l = metrics_line_begin(o, h->name, "_count");
    metrics_line_end(&l, cumulative);
}

/* Worker-wide counters, one unlabelled sample each. */
struct metrics_scalar {
    const char *name;
    const char *help;
    size_t off; /* of the stats_u64 in struct worker_stats */
};

static const struct metrics_scalar metrics_scalars[] = {
    { "portero_connections_accepted_total", "Client connections accepted.",
      offsetof(struct worker_stats, connections_accepted) },
    { "portero_bytes_received_total", "Bytes received from clients.", offsetof(struct worker_stats, bytes_in) },
    { "portero_bytes_sent_total", "Bytes sent to clients.", offsetof(struct worker_stats, bytes_out) },
    { "portero_retries_total", "Requests retried on another server.", offsetof(struct worker_stats, retries) },
    { "portero_retry_budget_exhausted_total", "Retries refused because the retry budget was spent.",
      offsetof(struct worker_stats, retry_budget_exhausted) },
    { "portero_ejections_total", "Servers ejected by passive health checks (outlier detection).",
      offsetof(struct worker_stats, ejections) },
    { "portero_tls_handshakes_total", "Client TLS handshakes completed.", offsetof(struct worker_stats, tls_handshakes) },
    { "portero_tls_resumed_total", "Client TLS handshakes that resumed a session (ticket).",
      offsetof(struct worker_stats, tls_resumed) },
    { "portero_tls_handshake_failures_total", "Client TLS handshakes that failed.",
      offsetof(struct worker_stats, tls_handshake_failed) },
    { "portero_upstream_tls_failures_total", "Upstream TLS handshakes that failed (verification included).",
      offsetof(struct worker_stats, upstream_tls_failed) },
    { "portero_http2_connections_total", "Client connections that spoke HTTP/2.",
      offsetof(struct worker_stats, h2_connections) },
    { "portero_http2_streams_total", "HTTP/2 streams that carried a request.", offsetof(struct worker_stats, h2_streams) },
    { "portero_http2_flood_closed_total", "HTTP/2 connections closed by a flood defence (rapid reset, "
      "SETTINGS/PING/empty-frame floods).", offsetof(struct worker_stats, h2_flood_closed) },
#define METRICS_POLICY(f) offsetof(struct worker_stats, policy) + offsetof(struct policy_counters, f)
    { "portero_acl_denied_total", "Requests denied by allow/deny lists (403), and PROXY-protocol "
      "connections from untrusted peers.", METRICS_POLICY(acl_denied) },
    { "portero_rate_limited_total", "Requests refused by a rate limit (429).", METRICS_POLICY(rate_limited) },
    { "portero_auth_failed_total", "Requests refused by authentication (401, 403, or 503 when forward-auth "
      "could not answer).", METRICS_POLICY(auth_failed) },
    { "portero_waf_blocked_total", "Requests blocked by the WAF (403).", METRICS_POLICY(waf_blocked) },
    { "portero_waf_detected_total", "Requests the WAF matched in detect mode (let through).",
      METRICS_POLICY(waf_detected) },
    { "portero_redis_errors_total", "Cluster-wide rate-limit checks that failed (Redis unreachable, slow "
      "or in error).", METRICS_POLICY(redis_errors) },
    { "portero_connections_limited_total", "Connections refused by max_connections_per_ip (429).",
      METRICS_POLICY(conn_limited) },
    { "portero_connections_shed_total", "Connections answered 503 and closed past max_connections.",
      METRICS_POLICY(shed) },
#undef METRICS_POLICY
};

/* A gauge family with an "active" and an "idle" sample. */
struct metrics_conn_gauge {
    const char *name;
    const char *help;
    size_t active_off; /* "active" = this minus idle_off when SUBTRACT_IDLE */
    size_t idle_off;
    bool subtract_idle;
};

static const struct metrics_conn_gauge metrics_conn_gauges[] = {
    { "portero_client_connections", "Open client connections: in a request (active) or between requests (idle).",
      offsetof(struct worker_stats, client_conns_active), offsetof(struct worker_stats, client_conns_idle), true },
    { "portero_upstream_connections", "Upstream connections: lent to a request (active) or pooled (idle).",
      offsetof(struct worker_stats, upstream_conns_active), offsetof(struct worker_stats, upstream_conns_idle),
      false },
};

static void metrics_format_conn_gauge(const struct metrics_source *src, struct sbuf *o,
                                      const struct metrics_conn_gauge *g)
{
    uint64_t idle = metrics_gauge(metrics_worker_sum(src, g->idle_off));
    uint64_t active = metrics_gauge(metrics_worker_sum(src, g->active_off));
    if (g->subtract_idle)
        active = active > idle ? active - idle : 0;
    metrics_family(o, g->name, "gauge", g->help);
    struct metrics_line l = metrics_line_begin(o, g->name, NULL);
    metrics_label_cstr(&l, "state", "active");
    metrics_line_end(&l, active);
    l = metrics_line_begin(o, g->name, NULL);
    metrics_label_cstr(&l, "state", "idle");
    metrics_line_end(&l, idle);
}

static uint64_t metrics_srv_up(const struct metrics_server *s) { return s->up; }
static uint64_t metrics_srv_ejections(const struct metrics_server *s) { return s->ejections; }
static uint64_t metrics_srv_checks(const struct metrics_server *s) { return s->checks; }
static uint64_t metrics_srv_checks_failed(const struct metrics_server *s) { return s->checks_failed; }

/* Per-server state of the running config. */
struct metrics_server_family {
    const char *name;
    const char *type;
    const char *help;
    uint64_t (*value)(const struct metrics_server *s);
};

static const struct metrics_server_family metrics_server_families[] = {
    { "portero_server_up", "gauge", "1 when the server may get new requests (healthy, not ejected).",
      metrics_srv_up },
    { "portero_server_ejections_total", "counter", "Times the server was ejected by passive checks.",
      metrics_srv_ejections },
    { "portero_health_checks_total", "counter", "Active health checks run against the server.",
      metrics_srv_checks },
    { "portero_health_checks_failed_total", "counter", "Active health checks that failed.",
      metrics_srv_checks_failed },
};

static void metrics_format_servers(const struct metrics_source *src, struct sbuf *o,
                                   const struct metrics_server_family *f)
{
    metrics_family(o, f->name, f->type, f->help);
    for (size_t i = 0; i < src->n_servers; i++) {
        struct metrics_line l = metrics_line_begin(o, f->name, NULL);
        metrics_label_cstr(&l, "upstream", src->servers[i].upstream);
        metrics_label_cstr(&l, "server", src->servers[i].address);
        metrics_line_end(&l, f->value(&src->servers[i]));
    }
}

/* Per cache zone, from the store's counters. */
struct metrics_cache_family {
    const char *name;
    const char *type;
    const char *help;
    size_t off; /* of the uint64_t in struct cache_zone_stats */
};

#define METRICS_CACHE(f) offsetof(struct cache_zone_stats, f)
static const struct metrics_cache_family metrics_cache_families[] = {
    { "portero_cache_hits_total", "counter", "Requests answered from the cache with a fresh response.",
      METRICS_CACHE(hits) },
    { "portero_cache_misses_total", "counter", "Cacheable requests that found nothing stored and went "
      "to the origin.", METRICS_CACHE(misses) },
    { "portero_cache_stale_total", "counter", "Requests answered with a stale response "
      "(stale-while-revalidate, stale-if-error).", METRICS_CACHE(stale) },
    { "portero_cache_collapsed_total", "counter", "Requests that waited for another request's response "
      "to the same key instead of going to the origin.", METRICS_CACHE(collapsed) },
    { "portero_cache_stored_bytes", "gauge", "Bytes held by the memory tier (bodies, heads, keys).",
      METRICS_CACHE(bytes) },
    { "portero_cache_objects", "gauge", "Responses held by the memory tier.", METRICS_CACHE(objects) },
    { "portero_cache_disk_stored_bytes", "gauge", "Bytes of the disk tier's files.", METRICS_CACHE(disk_bytes) },
    { "portero_cache_disk_objects", "gauge", "Responses held by the disk tier.", METRICS_CACHE(disk_objects) },
    { "portero_cache_purged_total", "counter", "Responses removed by purges of the admin API.",
      METRICS_CACHE(purged) },
};

static void metrics_format_cache_family(const struct metrics_source *src, struct sbuf *o,
                                        const struct metrics_cache_family *f)
{
    metrics_family(o, f->name, f->type, f->help);
    for (size_t i = 0; i < src->n_zones; i++) {
        struct metrics_line l = metrics_line_begin(o, f->name, NULL);
        metrics_label_cstr(&l, "zone", src->zones[i].name);
        metrics_line_end(&l, *(const uint64_t *)(const void *)((const char *)&src->zones[i].stats + f->off));
    }
}

static void metrics_format_cache_evictions(const struct metrics_source *src, struct sbuf *o)
{
    const char *name = "portero_cache_evictions_total";
    metrics_family(o, name, "counter", "Responses evicted to keep a cache tier within its budget.");
    for (size_t i = 0; i < src->n_zones; i++) {
        for (int disk = 0; disk < 2; disk++) {
            const struct cache_zone_stats *s = &src->zones[i].stats;
            struct metrics_line l = metrics_line_begin(o, name, NULL);
            metrics_label_cstr(&l, "zone", src->zones[i].name);
            metrics_label_cstr(&l, "tier", disk ? "disk" : "memory");
            metrics_line_end(&l, disk ? s->disk_evictions : s->evictions);
        }
    }
}

static void metrics_format_process(const struct metrics_source *src, struct sbuf *o)
{
    metrics_family(o, "portero_config_reloads_total", "counter",
                   "Configuration publications (file reloads and admin API changes) by outcome.");
    struct metrics_line l = metrics_line_begin(o, "portero_config_reloads_total", NULL);
    metrics_label_cstr(&l, "result", "ok");
    metrics_line_end(&l, src->reloads_ok);
    l = metrics_line_begin(o, "portero_config_reloads_total", NULL);
    metrics_label_cstr(&l, "result", "failed");
    metrics_line_end(&l, src->reloads_failed);
    metrics_family(o, "portero_start_time_seconds", "gauge", "Start time of the process since the Unix epoch.");
    l = metrics_line_begin(o, "portero_start_time_seconds", NULL);
    metrics_line_end(&l, src->start_time);
}

#define METRICS_COUNT(a) (sizeof(a) / sizeof((a)[0]))

void metrics_format(const struct metrics_source *src, struct sbuf *out)
{
    for (size_t i = 0; i < METRICS_COUNT(metrics_class_families); i++)
        metrics_format_by_class(src, out, &metrics_class_families[i]);
    for (size_t i = 0; i < METRICS_COUNT(metrics_histograms); i++)
        metrics_format_histogram(src, out, &metrics_histograms[i]);
    for (size_t i = 0; i < METRICS_COUNT(metrics_conn_gauges); i++)
        metrics_format_conn_gauge(src, out, &metrics_conn_gauges[i]);
    for (size_t i = 0; i < METRICS_COUNT(metrics_scalars); i++) {
        const struct metrics_scalar *s = &metrics_scalars[i];
        metrics_family(out, s->name, "counter", s->help);
        struct metrics_line l = metrics_line_begin(out, s->name, NULL);
        metrics_line_end(&l, metrics_worker_sum(src, s->off));
    }
    metrics_format_upstream_retries(src, out);
    for (size_t i = 0; i < METRICS_COUNT(metrics_server_families); i++)
        metrics_format_servers(src, out, &metrics_server_families[i]);
    for (size_t i = 0; i < METRICS_COUNT(metrics_cache_families); i++)
        metrics_format_cache_family(src, out, &metrics_cache_families[i]);
    metrics_format_cache_evictions(src, out);
    metrics_format_process(src, out);
}
