/* Metrics exposition from fake per-worker counters: exact lines, sums over workers, cumulative
 * histograms in seconds, gauges, label escaping. */
#include "admin/metrics_fmt.h"
#include "unit.h"

/* Does the exposition in B hold LINE as a whole line? */
static int has_line(const struct sbuf *b, const char *line)
{
    size_t n = strlen(line);
    for (size_t i = 0; i + n <= b->len; i++) {
        if ((i == 0 || b->p[i - 1] == '\n') && memcmp(b->p + i, line, n) == 0 &&
            (i + n == b->len || b->p[i + n] == '\n'))
            return 1;
    }
    fprintf(stderr, "  missing line: %s\n", line);
    return 0;
}

/* Occurrences of NEEDLE in B. */
static int count_of(const struct sbuf *b, const char *needle)
{
    size_t n = strlen(needle);
    int count = 0;
    for (size_t i = 0; i + n <= b->len; i++)
        count += memcmp(b->p + i, needle, n) == 0;
    return count;
}

struct fake {
    struct worker_stats w[2];
    struct worker_stats *ptrs[2];
    struct metrics_source src;
    struct sbuf out;
};

static void fake_init(struct fake *f)
{
    memset(f, 0, sizeof *f);
    for (int i = 0; i < 2; i++) {
        worker_stats_init(&f->w[i]);
        f->ptrs[i] = &f->w[i];
    }
    f->src.stats = f->ptrs;
    f->src.n_workers = 2;
}

static void fake_render(struct fake *f)
{
    sbuf_reset(&f->out);
    metrics_format(&f->src, &f->out);
}

static void fake_free(struct fake *f)
{
    for (int i = 0; i < 2; i++)
        worker_stats_free(&f->w[i]);
    sbuf_free(&f->out);
}

UNIT_TEST(requests_by_route_summed_over_workers)
{
    struct fake f;
    fake_init(&f);
    struct stats_entry *a = stats_table_entry(&f.w[0].routes, "ok");
    struct stats_entry *b = stats_table_entry(&f.w[1].routes, "nf");   /* different order */
    struct stats_entry *c = stats_table_entry(&f.w[1].routes, "ok");
    STATS_ADD(a->requests[2], 2);
    STATS_ADD(c->requests[2], 1);
    STATS_ADD(c->requests[4], 1);
    STATS_ADD(b->requests[4], 5);
    fake_render(&f);
    CHECK(has_line(&f.out, "# HELP portero_requests_total Client requests by route and response status class."));
    CHECK(has_line(&f.out, "# TYPE portero_requests_total counter"));
    CHECK(has_line(&f.out, "portero_requests_total{route=\"ok\",class=\"2xx\"} 3"));
    CHECK(has_line(&f.out, "portero_requests_total{route=\"ok\",class=\"4xx\"} 1"));
    CHECK(has_line(&f.out, "portero_requests_total{route=\"ok\",class=\"5xx\"} 0"));
    CHECK(has_line(&f.out, "portero_requests_total{route=\"ok\",class=\"none\"} 0"));
    CHECK(has_line(&f.out, "portero_requests_total{route=\"nf\",class=\"4xx\"} 5"));
    /* each route once, whatever the number of workers that know it */
    CHECK_EQ_INT(count_of(&f.out, "{route=\"ok\",class=\"2xx\"}"), 1);
    fake_free(&f);
}

UNIT_TEST(upstream_and_server_counters)
{
    struct fake f;
    fake_init(&f);
    STATS_ADD(stats_table_entry(&f.w[0].upstreams, "app")->requests[2], 4);
    STATS_ADD(stats_table_entry(&f.w[1].upstreams, "app")->requests[5], 1);
    STATS_ADD(stats_table_entry(&f.w[1].upstreams, "app")->retries, 7);
    STATS_ADD(stats_table_entry(&f.w[0].servers, "app/127.0.0.1:9001")->requests[2], 3);
    STATS_ADD(stats_table_entry(&f.w[1].servers, "app/127.0.0.1:9001")->requests[2], 1);
    STATS_ADD(stats_table_entry(&f.w[1].servers, "app/[::1]:9002")->requests[5], 1);
    fake_render(&f);
    CHECK(has_line(&f.out, "portero_upstream_requests_total{upstream=\"app\",class=\"2xx\"} 4"));
    CHECK(has_line(&f.out, "portero_upstream_requests_total{upstream=\"app\",class=\"5xx\"} 1"));
    CHECK(has_line(&f.out, "portero_server_requests_total{upstream=\"app\",server=\"127.0.0.1:9001\",class=\"2xx\"} 4"));
    CHECK(has_line(&f.out, "portero_server_requests_total{upstream=\"app\",server=\"[::1]:9002\",class=\"5xx\"} 1"));
    CHECK(has_line(&f.out, "portero_upstream_retries_total{upstream=\"app\"} 7"));
    fake_free(&f);
}

UNIT_TEST(latency_histogram_cumulative_in_seconds)
{
    struct fake f;
    fake_init(&f);
    stats_histogram_observe(&f.w[0].latency_total, 0);
    stats_histogram_observe(&f.w[1].latency_total, 3);
    stats_histogram_observe(&f.w[1].latency_total, 1500);
    stats_histogram_observe(&f.w[0].latency_total, 60000); /* beyond the last bound */
    stats_histogram_observe(&f.w[0].latency_upstream, 250);
    fake_render(&f);
    CHECK(has_line(&f.out, "# TYPE portero_request_duration_seconds histogram"));
    CHECK(has_line(&f.out, "portero_request_duration_seconds_bucket{le=\"0.001\"} 1"));
    CHECK(has_line(&f.out, "portero_request_duration_seconds_bucket{le=\"0.005\"} 2"));
    CHECK(has_line(&f.out, "portero_request_duration_seconds_bucket{le=\"0.025\"} 2"));
    CHECK(has_line(&f.out, "portero_request_duration_seconds_bucket{le=\"1\"} 2"));
    CHECK(has_line(&f.out, "portero_request_duration_seconds_bucket{le=\"2.5\"} 3"));
    CHECK(has_line(&f.out, "portero_request_duration_seconds_bucket{le=\"10\"} 3"));
    CHECK(has_line(&f.out, "portero_request_duration_seconds_bucket{le=\"+Inf\"} 4"));
    CHECK(has_line(&f.out, "portero_request_duration_seconds_sum 61.503"));
    CHECK(has_line(&f.out, "portero_request_duration_seconds_count 4"));
    CHECK(has_line(&f.out, "# TYPE portero_upstream_response_duration_seconds histogram"));
    CHECK(has_line(&f.out, "portero_upstream_response_duration_seconds_bucket{le=\"0.1\"} 0"));
    CHECK(has_line(&f.out, "portero_upstream_response_duration_seconds_bucket{le=\"0.25\"} 1"));
    CHECK(has_line(&f.out, "portero_upstream_response_duration_seconds_sum 0.25"));
    CHECK(has_line(&f.out, "portero_upstream_response_duration_seconds_count 1"));
    fake_free(&f);
}

UNIT_TEST(connection_gauges)
{
    struct fake f;
    fake_init(&f);
    STATS_SET(f.w[0].client_conns_active, 4); /* open */
    STATS_SET(f.w[1].client_conns_active, 1);
    STATS_SET(f.w[0].client_conns_idle, 2);
    /* a worker's own -1 then +1 on two counters, read in between: the sum still comes out right */
    STATS_ADD(f.w[0].upstream_conns_idle, (uint64_t)-1);
    STATS_ADD(f.w[1].upstream_conns_idle, 3);
    STATS_ADD(f.w[1].upstream_conns_active, (uint64_t)-1); /* transiently "negative": 0 */
    fake_render(&f);
    CHECK(has_line(&f.out, "# TYPE portero_client_connections gauge"));
    CHECK(has_line(&f.out, "portero_client_connections{state=\"active\"} 3"));
    CHECK(has_line(&f.out, "portero_client_connections{state=\"idle\"} 2"));
    CHECK(has_line(&f.out, "portero_upstream_connections{state=\"active\"} 0"));
    CHECK(has_line(&f.out, "portero_upstream_connections{state=\"idle\"} 2"));
    fake_free(&f);
}

UNIT_TEST(worker_counters_and_process)
{
    struct fake f;
    fake_init(&f);
    STATS_ADD(f.w[0].bytes_in, 100);
    STATS_ADD(f.w[1].bytes_in, 23);
    STATS_ADD(f.w[1].bytes_out, 9);
    STATS_ADD(f.w[0].retries, 2);
    STATS_ADD(f.w[1].retry_budget_exhausted, 1);
    STATS_ADD(f.w[0].ejections, 1);
    STATS_ADD(f.w[0].connections_accepted, 3);
    STATS_ADD(f.w[1].connections_accepted, 4);
    f.src.reloads_ok = 5;
    f.src.reloads_failed = 2;
    f.src.start_time = 1700000000;
    fake_render(&f);
    CHECK(has_line(&f.out, "portero_bytes_received_total 123"));
    CHECK(has_line(&f.out, "portero_bytes_sent_total 9"));
    CHECK(has_line(&f.out, "portero_retries_total 2"));
    CHECK(has_line(&f.out, "portero_retry_budget_exhausted_total 1"));
    CHECK(has_line(&f.out, "portero_ejections_total 1"));
    CHECK(has_line(&f.out, "# TYPE portero_connections_accepted_total counter"));
    CHECK(has_line(&f.out, "portero_connections_accepted_total 7"));
    CHECK(has_line(&f.out, "portero_config_reloads_total{result=\"ok\"} 5"));
    CHECK(has_line(&f.out, "portero_config_reloads_total{result=\"failed\"} 2"));
    CHECK(has_line(&f.out, "# TYPE portero_start_time_seconds gauge"));
    CHECK(has_line(&f.out, "portero_start_time_seconds 1700000000"));
    fake_free(&f);
}

UNIT_TEST(server_state_families)
{
    struct fake f;
    fake_init(&f);
    const struct metrics_server servers[] = {
        { .upstream = "app", .address = "127.0.0.1:9001", .up = true, .checks = 10, .checks_failed = 1 },
        { .upstream = "app", .address = "127.0.0.1:9002", .up = false, .ejections = 3 },
    };
    f.src.servers = servers;
    f.src.n_servers = 2;
    fake_render(&f);
    CHECK(has_line(&f.out, "# TYPE portero_server_up gauge"));
    CHECK(has_line(&f.out, "portero_server_up{upstream=\"app\",server=\"127.0.0.1:9001\"} 1"));
    CHECK(has_line(&f.out, "portero_server_up{upstream=\"app\",server=\"127.0.0.1:9002\"} 0"));
    CHECK(has_line(&f.out, "portero_server_ejections_total{upstream=\"app\",server=\"127.0.0.1:9002\"} 3"));
    CHECK(has_line(&f.out, "portero_health_checks_total{upstream=\"app\",server=\"127.0.0.1:9001\"} 10"));
    CHECK(has_line(&f.out, "portero_health_checks_failed_total{upstream=\"app\",server=\"127.0.0.1:9001\"} 1"));
    fake_free(&f);
}

UNIT_TEST(cache_zone_families)
{
    struct fake f;
    fake_init(&f);
    const struct metrics_cache_zone zones[] = {
        { .name = "main", .stats = { .hits = 7, .misses = 3, .stale = 2, .collapsed = 99, .bytes = 4096,
                                     .objects = 5, .evictions = 11, .disk_bytes = 8192, .disk_objects = 6,
                                     .disk_evictions = 1, .purged = 4 } },
        { .name = "empty" },
    };
    f.src.zones = zones;
    f.src.n_zones = 2;
    fake_render(&f);
    CHECK(has_line(&f.out, "# TYPE portero_cache_hits_total counter"));
    CHECK(has_line(&f.out, "portero_cache_hits_total{zone=\"main\"} 7"));
    CHECK(has_line(&f.out, "portero_cache_misses_total{zone=\"main\"} 3"));
    CHECK(has_line(&f.out, "portero_cache_stale_total{zone=\"main\"} 2"));
    CHECK(has_line(&f.out, "portero_cache_collapsed_total{zone=\"main\"} 99"));
    CHECK(has_line(&f.out, "# TYPE portero_cache_stored_bytes gauge"));
    CHECK(has_line(&f.out, "portero_cache_stored_bytes{zone=\"main\"} 4096"));
    CHECK(has_line(&f.out, "# TYPE portero_cache_objects gauge"));
    CHECK(has_line(&f.out, "portero_cache_objects{zone=\"main\"} 5"));
    CHECK(has_line(&f.out, "portero_cache_disk_stored_bytes{zone=\"main\"} 8192"));
    CHECK(has_line(&f.out, "portero_cache_disk_objects{zone=\"main\"} 6"));
    CHECK(has_line(&f.out, "portero_cache_purged_total{zone=\"main\"} 4"));
    CHECK(has_line(&f.out, "# TYPE portero_cache_evictions_total counter"));
    CHECK(has_line(&f.out, "portero_cache_evictions_total{zone=\"main\",tier=\"memory\"} 11"));
    CHECK(has_line(&f.out, "portero_cache_evictions_total{zone=\"main\",tier=\"disk\"} 1"));
    CHECK(has_line(&f.out, "portero_cache_hits_total{zone=\"empty\"} 0"));
    CHECK(has_line(&f.out, "portero_cache_evictions_total{zone=\"empty\",tier=\"disk\"} 0"));
    CHECK_EQ_INT(count_of(&f.out, "portero_cache_hits_total{"), 2);
    fake_free(&f);
}

UNIT_TEST(label_values_escaped)
{
    struct fake f;
    fake_init(&f);
    STATS_ADD(stats_table_entry(&f.w[0].routes, "a\"b\\c\nd")->requests[3], 1);
    fake_render(&f);
    CHECK(has_line(&f.out, "portero_requests_total{route=\"a\\\"b\\\\c\\nd\",class=\"3xx\"} 1"));
    struct sbuf b = { 0 };
    metrics_label_escape(&b, "plain", 5);
    metrics_label_escape(&b, "\\\"\n", 3);
    CHECK(b.len == 11 && memcmp(b.p, "plain\\\\\\\"\\n", 11) == 0);
    sbuf_free(&b);
    fake_free(&f);
}

UNIT_TEST(seconds_from_milliseconds)
{
    static const struct {
        uint64_t ms;
        const char *want;
    } cases[] = {
        { 0, "0" }, { 1, "0.001" }, { 10, "0.01" }, { 250, "0.25" }, { 1000, "1" },
        { 2500, "2.5" }, { 10000, "10" }, { 61503, "61.503" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct sbuf b = { 0 };
        metrics_seconds(&b, cases[i].ms);
        CHECK(b.len == strlen(cases[i].want) && memcmp(b.p, cases[i].want, b.len) == 0);
        sbuf_free(&b);
    }
}

UNIT_TEST(sum_entry_by_name)
{
    struct fake f;
    fake_init(&f);
    struct stats_entry *e0 = stats_table_entry(&f.w[0].servers, "app/127.0.0.1:9001");
    struct stats_entry *e1 = stats_table_entry(&f.w[1].servers, "app/127.0.0.1:9001");
    STATS_ADD(e0->requests[2], 5);
    STATS_ADD(e1->requests[0], 1);
    STATS_ADD(e0->active, 2);
    STATS_ADD(e1->active, (uint64_t)-1);
    STATS_ADD(e1->idle_conns, 3);
    stats_histogram_observe(&e0->latency, 10);
    stats_histogram_observe(&e1->latency, 30);
    struct metrics_sum sum;
    CHECK_EQ_INT(metrics_sum_entry(f.ptrs, 2, METRICS_SERVERS, "app/127.0.0.1:9001", &sum), 2);
    CHECK_EQ_INT(sum.requests_total, 6);
    CHECK_EQ_INT(sum.requests[2], 5);
    CHECK_EQ_INT(sum.active, 1);
    CHECK_EQ_INT(sum.idle_conns, 3);
    CHECK_EQ_INT(sum.latency_sum_ms, 40);
    CHECK_EQ_INT(sum.latency_count, 2);
    CHECK_EQ_INT(metrics_sum_entry(f.ptrs, 2, METRICS_SERVERS, "app/127.0.0.1:9", &sum), 0);
    CHECK_EQ_INT(sum.requests_total, 0);
    CHECK_EQ_INT(metrics_sum_entry(f.ptrs, 2, METRICS_ROUTES, "app/127.0.0.1:9001", &sum), 0);
    /* names longer than an entry holds are found by their stored (truncated) prefix */
    char longname[200];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    STATS_ADD(stats_table_entry(&f.w[0].routes, longname)->requests[2], 1);
    CHECK_EQ_INT(metrics_sum_entry(f.ptrs, 2, METRICS_ROUTES, longname, &sum), 1);
    CHECK_EQ_INT(sum.requests_total, 1);
    fake_free(&f);
}

UNIT_TEST(empty_workers_render_every_family)
{
    struct fake f;
    fake_init(&f);
    fake_render(&f);
    static const char *const families[] = {
        "portero_requests_total counter", "portero_upstream_requests_total counter",
        "portero_server_requests_total counter", "portero_request_duration_seconds histogram",
        "portero_upstream_response_duration_seconds histogram", "portero_client_connections gauge",
        "portero_upstream_connections gauge", "portero_bytes_received_total counter",
        "portero_bytes_sent_total counter", "portero_retries_total counter",
        "portero_retry_budget_exhausted_total counter", "portero_ejections_total counter",
        "portero_server_up gauge", "portero_server_ejections_total counter",
        "portero_health_checks_total counter", "portero_health_checks_failed_total counter",
        "portero_config_reloads_total counter", "portero_connections_accepted_total counter",
        "portero_start_time_seconds gauge", "portero_cache_hits_total counter",
        "portero_cache_misses_total counter", "portero_cache_stale_total counter",
        "portero_cache_collapsed_total counter", "portero_cache_stored_bytes gauge",
        "portero_cache_objects gauge", "portero_cache_evictions_total counter",
    };
    for (size_t i = 0; i < sizeof families / sizeof families[0]; i++) {
        char line[128];
        snprintf(line, sizeof line, "# TYPE %s", families[i]);
        CHECK(has_line(&f.out, line));
    }
    CHECK(has_line(&f.out, "portero_request_duration_seconds_count 0"));
    CHECK(f.out.len > 0 && f.out.p[f.out.len - 1] == '\n');
    fake_free(&f);
}

UNIT_MAIN()
