/* Unit tests of the failover part of the config schema: health_check, outlier, retries,
 * slow_start, panic, server drain and the admin API keys — values, defaults and every error
 * with its FILE:LINE:COL. */
#include <stdbool.h>

#include "conf/config.h"
#include "unit.h"

#define LISTEN "listeners: [{name: web, address: \"127.0.0.1:8080\"}]\n"
/* One upstream on line 2; the snippet under test starts at column UP_COL. */
#define UP_HEAD "upstreams: { app: { servers: [ { address: \"127.0.0.1:1\" } ], "
#define UP(x) LISTEN UP_HEAD x " } }\n"

static struct config *load(const char *yaml, struct conf_errors *errs)
{
    return config_load_buffer("t.yaml", yaml, strlen(yaml), errs);
}

static void print_errs(const struct conf_errors *errs, const char *want, bool loaded)
{
    fprintf(stderr, "  expected error: %s\n", want);
    for (size_t i = 0; i < errs->n; i++)
        fprintf(stderr, "  got:            %s\n", errs->msgs[i]);
    if (loaded)
        fprintf(stderr, "  (and the load succeeded)\n");
}

/* Loads YAML, which must fail with MSG among its errors. */
static bool fails_with(const char *yaml, const char *msg)
{
    struct conf_errors errs = { 0 };
    struct config *cfg = load(yaml, &errs);
    bool ok = cfg == NULL;
    for (size_t i = 0; ok && i < errs.n && strcmp(errs.msgs[i], msg) != 0; i++)
        ok = i + 1 < errs.n;
    ok = ok && errs.n > 0;
    if (!ok)
        print_errs(&errs, msg, cfg != NULL);
    config_unref(cfg);
    conf_errors_free(&errs);
    return ok;
}

/* The upstream snippet SNIPPET must fail with "t.yaml:2:COL: MSG", COL being where AT starts
 * in SNIPPET (its first occurrence). */
static bool up_fails(const char *snippet, const char *at, const char *msg)
{
    char yaml[1024], want[512];
    const char *p = strstr(snippet, at);
    if (!p) {
        fprintf(stderr, "  test bug: %s not in %s\n", at, snippet);
        return false;
    }
    snprintf(yaml, sizeof yaml, "%s%s%s } }\n", LISTEN, UP_HEAD, snippet);
    snprintf(want, sizeof want, "t.yaml:2:%zu: %s", strlen(UP_HEAD) + (size_t)(p - snippet) + 1,
             msg);
    return fails_with(yaml, want);
}

/* Loads the upstream snippet, which must succeed; the caller unrefs. */
static struct config *up_load(const char *snippet)
{
    char yaml[1024];
    struct conf_errors errs = { 0 };
    snprintf(yaml, sizeof yaml, "%s%s%s } }\n", LISTEN, UP_HEAD, snippet);
    struct config *cfg = load(yaml, &errs);
    for (size_t i = 0; i < errs.n; i++)
        fprintf(stderr, "  unexpected: %s\n", errs.msgs[i]);
    conf_errors_free(&errs);
    return cfg;
}

/* ------------------------------------------------------------------------------------- */

UNIT_TEST(defaults_when_absent)
{
    struct config *c = up_load("balance: round_robin");
    CHECK(c != NULL);
    if (!c)
        return;
    const struct conf_upstream *u = &c->upstreams[0];
    const struct conf_health_check *hc = &u->health_check;
    CHECK(!hc->enabled);
    CHECK_EQ_INT(hc->type, HEALTH_CHECK_HTTP);
    CHECK(hc->path && strcmp(hc->path, "/") == 0);
    CHECK(hc->host == NULL);
    CHECK_EQ_INT(hc->interval_ms, 2000);
    CHECK_EQ_INT(hc->timeout_ms, 1000);
    CHECK(hc->status_min == 200 && hc->status_max == 399);
    CHECK(hc->rise == 2 && hc->fall == 3);
    CHECK_EQ_INT(u->outlier.consecutive_failures, 5);
    CHECK_EQ_INT(u->outlier.base_ejection_ms, 30000);
    CHECK_EQ_INT(u->outlier.max_ejection_ms, 300000);
    CHECK_EQ_INT(u->outlier.max_ejected_percent, 50);
    CHECK_EQ_INT(u->retries.attempts, 2);
    CHECK_EQ_INT(u->retries.per_try_timeout_ms, 0);
    CHECK(u->retries.statuses == NULL && u->retries.n_statuses == 0);
    CHECK_EQ_INT(u->retries.budget_percent, 20);
    CHECK_EQ_INT(u->retries.budget_min, 3);
    CHECK_EQ_INT(u->retries.backoff_ms, 25);
    CHECK_EQ_INT(u->retries.backoff_max_ms, 250);
    CHECK_EQ_INT(u->slow_start_ms, 0);
    CHECK(!u->panic);
    CHECK(!u->servers[0].drain);
    CHECK(strcmp(c->admin_address, "127.0.0.1:9901") == 0);
    CHECK(c->admin_token == NULL);
    config_unref(c);
}

UNIT_TEST(health_check_values)
{
    struct config *c = up_load("health_check: { type: http, path: /healthz, host: api.local, "
                               "interval: 5s, timeout: 1500ms, status: \"200-204\", rise: 1, "
                               "fall: 7 }");
    CHECK(c != NULL);
    if (c) {
        const struct conf_health_check *hc = &c->upstreams[0].health_check;
        CHECK(hc->enabled && hc->type == HEALTH_CHECK_HTTP);
        CHECK(strcmp(hc->path, "/healthz") == 0 && strcmp(hc->host, "api.local") == 0);
        CHECK(hc->interval_ms == 5000 && hc->timeout_ms == 1500);
        CHECK(hc->status_min == 200 && hc->status_max == 204);
        CHECK(hc->rise == 1 && hc->fall == 7);
    }
    config_unref(c);
    /* One code, tcp, timeout longer than interval (allowed), and an empty mapping. */
    c = up_load("health_check: { type: tcp, status: 204, interval: 1s, timeout: 3s }");
    CHECK(c != NULL);
    if (c) {
        const struct conf_health_check *hc = &c->upstreams[0].health_check;
        CHECK(hc->enabled && hc->type == HEALTH_CHECK_TCP);
        CHECK(hc->status_min == 204 && hc->status_max == 204);
        CHECK(hc->interval_ms == 1000 && hc->timeout_ms == 3000);
        CHECK(strcmp(hc->path, "/") == 0);
    }
    config_unref(c);
    c = up_load("health_check: {}");
    CHECK(c && c->upstreams[0].health_check.enabled && c->upstreams[0].health_check.rise == 2);
    config_unref(c);
    c = up_load("health_check: ");
    CHECK(c && c->upstreams[0].health_check.enabled);
    config_unref(c);
}

UNIT_TEST(health_check_errors)
{
    const char *range = "(codes 100 to 599, first not above last)";
    char msg[256];
    CHECK(up_fails("health_check: 5", "5",
                   "expected a mapping for health_check, got \"5\""));
    CHECK(up_fails("health_check: { type: udp }", "udp",
                   "invalid value \"udp\" for type (expected one of: http, tcp)"));
    CHECK(up_fails("health_check: { path: healthz }", "healthz",
                   "invalid path \"healthz\": must start with \"/\""));
    CHECK(up_fails("health_check: { host: \"a b\" }", "\"a b\"",
                   "invalid host \"a b\": may hold only visible ASCII characters (no spaces)"));
    CHECK(up_fails("health_check: { host: \"\" }", "\"\"", "invalid host \"\": must not be empty"));
    CHECK(up_fails("health_check: { interval: 0 }", "0",
                   "interval \"0\" is out of range (1ms to 365d)"));
    CHECK(up_fails("health_check: { timeout: 0s }", "0s",
                   "timeout \"0s\" is out of range (1ms to 365d)"));
    CHECK(up_fails("health_check: { timeout: soon }", "soon",
                   "expected a duration (e.g. 500ms, 2s, 5m, 1h, 1d) for timeout, got \"soon\""));
    snprintf(msg, sizeof msg, "invalid status \"600\" %s", range);
    CHECK(up_fails("health_check: { status: 600 }", "600", msg));
    snprintf(msg, sizeof msg, "invalid status \"99\" %s", range);
    CHECK(up_fails("health_check: { status: 99 }", "99", msg));
    snprintf(msg, sizeof msg, "invalid status \"399-200\" %s", range);
    CHECK(up_fails("health_check: { status: 399-200 }", "399", msg));
    snprintf(msg, sizeof msg, "invalid status \"200-600\" %s", range);
    CHECK(up_fails("health_check: { status: 200-600 }", "200", msg));
    const char *bad[] = { "2xx", "200-", "-200", "200-300-400", "200 - 300", "ok" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char snippet[128];
        snprintf(snippet, sizeof snippet, "health_check: { status: \"%s\" }", bad[i]);
        snprintf(msg, sizeof msg, "expected a status code or range (e.g. 200 or 200-399) for "
                 "status, got \"%s\"", bad[i]);
        CHECK(up_fails(snippet, "\"", msg));
    }
    CHECK(up_fails("health_check: { rise: 0 }", "0", "rise \"0\" is out of range (1 to 4294967295)"));
    CHECK(up_fails("health_check: { fall: -1 }", "-1",
                   "expected an integer for fall, got \"-1\""));
    CHECK(up_fails("health_check: { interval: 1s, probe: x }", "probe",
                   "unknown key \"probe\" in health_check"));
}

UNIT_TEST(outlier_values_and_errors)
{
    struct config *c = up_load("outlier: { consecutive_failures: 0, base_ejection: 10s, "
                               "max_ejection: 10s, max_ejected_percent: 100 }");
    CHECK(c != NULL);
    if (c) {
        const struct conf_outlier *o = &c->upstreams[0].outlier;
        CHECK(o->consecutive_failures == 0 && o->base_ejection_ms == 10000);
        CHECK(o->max_ejection_ms == 10000 && o->max_ejected_percent == 100);
    }
    config_unref(c);
    c = up_load("outlier: { consecutive_failures: 3 }"); /* the others keep their defaults */
    CHECK(c && c->upstreams[0].outlier.consecutive_failures == 3 &&
          c->upstreams[0].outlier.max_ejection_ms == 300000);
    config_unref(c);
    CHECK(up_fails("outlier: { max_ejected_percent: 101 }", "101",
                   "max_ejected_percent \"101\" is out of range (0 to 100)"));
    CHECK(up_fails("outlier: { base_ejection: 0 }", "0",
                   "base_ejection \"0\" is out of range (1ms to 365d)"));
    CHECK(up_fails("outlier: { base_ejection: 1m, max_ejection: 30s }", "30s",
                   "max_ejection (30000ms) must not be less than base_ejection (60000ms)"));
    /* Only base given, above the default max: reported at base_ejection. */
    CHECK(up_fails("outlier: { base_ejection: 10m }", "10m",
                   "max_ejection (300000ms) must not be less than base_ejection (600000ms)"));
    CHECK(up_fails("outlier: [ 1 ]", "[",
                   "expected a mapping for outlier, got a sequence"));
    CHECK(up_fails("outlier: { consecutive: 1 }", "consecutive",
                   "unknown key \"consecutive\" in outlier"));
}

UNIT_TEST(retries_values)
{
    struct config *c = up_load("retries: { attempts: 3, per_try_timeout: 750ms, "
                               "statuses: [502, 503, 429], budget: \"35%\", budget_min: 0, "
                               "backoff: 0, backoff_max: 1s }");
    CHECK(c != NULL);
    if (c) {
        const struct conf_retries *r = &c->upstreams[0].retries;
        CHECK(r->attempts == 3 && r->per_try_timeout_ms == 750);
        CHECK_EQ_INT(r->n_statuses, 3);
        CHECK(r->n_statuses == 3 && r->statuses[0] == 502 && r->statuses[1] == 503 &&
              r->statuses[2] == 429);
        CHECK(r->budget_percent == 35 && r->budget_min == 0);
        CHECK(r->backoff_ms == 0 && r->backoff_max_ms == 1000);
    }
    config_unref(c);
    c = up_load("retries: { budget: 0, attempts: 10, statuses: [] }");
    CHECK(c && c->upstreams[0].retries.budget_percent == 0 &&
          c->upstreams[0].retries.attempts == 10 && c->upstreams[0].retries.n_statuses == 0);
    config_unref(c);
    c = up_load("retries: { budget: 100% }");
    CHECK(c && c->upstreams[0].retries.budget_percent == 100);
    config_unref(c);
}

UNIT_TEST(retries_errors)
{
    CHECK(up_fails("retries: { attempts: 0 }", "0", "attempts \"0\" is out of range (1 to 10)"));
    CHECK(up_fails("retries: { attempts: 11 }", "11", "attempts \"11\" is out of range (1 to 10)"));
    CHECK(up_fails("retries: { per_try_timeout: 0 }", "0",
                   "per_try_timeout \"0\" is out of range (1ms to 365d)"));
    CHECK(up_fails("retries: { statuses: [502, 404] }", "404",
                   "invalid retry status \"404\" (expected 429 or 500 to 599)"));
    CHECK(up_fails("retries: { statuses: [600] }", "600",
                   "invalid retry status \"600\" (expected 429 or 500 to 599)"));
    CHECK(up_fails("retries: { statuses: [502, x] }", "x",
                   "expected an integer for statuses, got \"x\""));
    CHECK(up_fails("retries: { statuses: [503, 502, 503] }", "503]",
                   "duplicate retry status \"503\""));
    CHECK(up_fails("retries: { statuses: 502 }", "502",
                   "expected a sequence for statuses, got \"502\""));
    CHECK(up_fails("retries: { budget: 101 }", "101", "budget \"101\" is out of range (0% to 100%)"));
    CHECK(up_fails("retries: { budget: \"150%\" }", "\"150%\"",
                   "budget \"150%\" is out of range (0% to 100%)"));
    CHECK(up_fails("retries: { budget: \"20 %\" }", "\"20 %\"",
                   "expected a percentage (e.g. 20% or 20) for budget, got \"20 %\""));
    CHECK(up_fails("retries: { budget: \"%\" }", "\"%\"",
                   "expected a percentage (e.g. 20% or 20) for budget, got \"%\""));
    CHECK(up_fails("retries: { backoff: 1s, backoff_max: 500ms }", "500ms",
                   "backoff_max (500ms) must not be less than backoff (1000ms)"));
    CHECK(up_fails("retries: { backoff: x }", "x",
                   "expected a duration (e.g. 500ms, 2s, 5m, 1h, 1d) for backoff, got \"x\""));
    CHECK(up_fails("retries: { budget_min: -1 }", "-1",
                   "expected an integer for budget_min, got \"-1\""));
    CHECK(up_fails("retries: { tries: 2 }", "tries: 2", "unknown key \"tries\" in retries"));
}

UNIT_TEST(slow_start_panic_drain)
{
    struct config *c = up_load("slow_start: 30s, panic: true");
    CHECK(c && c->upstreams[0].slow_start_ms == 30000 && c->upstreams[0].panic);
    config_unref(c);
    c = up_load("slow_start: off, panic: false");
    CHECK(c && c->upstreams[0].slow_start_ms == 0 && !c->upstreams[0].panic);
    config_unref(c);
    c = up_load("slow_start: 0");
    CHECK(c && c->upstreams[0].slow_start_ms == 0);
    config_unref(c);
    CHECK(up_fails("slow_start: soon", "soon",
                   "expected a duration (e.g. 500ms, 2s, 5m, 1h, 1d) for slow_start, got \"soon\""));
    CHECK(up_fails("slow_start: 400d", "400d", "slow_start \"400d\" is out of range (0 to 365d)"));
    CHECK(up_fails("slow_start: [1]", "[", "expected a duration (e.g. 500ms, 2s, 5m, 1h, 1d) "
                   "for slow_start, got a sequence"));
    CHECK(up_fails("panic: maybe", "maybe",
                   "expected a boolean (true or false) for panic, got \"maybe\""));

    const char *yaml = LISTEN "upstreams:\n  app:\n    servers:\n"
                       "      - { address: \"127.0.0.1:1\", drain: true }\n"
                       "      - { address: \"127.0.0.1:2\", drain: false, weight: 3 }\n"
                       "      - { address: \"127.0.0.1:3\" }\n";
    struct conf_errors errs = { 0 };
    c = load(yaml, &errs);
    CHECK(c != NULL);
    if (c) {
        const struct conf_upstream *u = &c->upstreams[0];
        CHECK(u->servers[0].drain && !u->servers[1].drain && !u->servers[2].drain);
        CHECK(u->servers[1].weight == 3);
    }
    config_unref(c);
    conf_errors_free(&errs);
    CHECK(fails_with(LISTEN "upstreams:\n  app:\n    servers:\n"
                     "      - { address: \"127.0.0.1:1\", drain: 1 }\n",
                     "t.yaml:5:42: expected a boolean (true or false) for drain, got \"1\""));
}

UNIT_TEST(admin_keys)
{
    struct conf_errors errs = { 0 };
    struct config *c = load(LISTEN "admin: { address: \"[::1]:9000\", token: \"s3cr3t-T0k.en\" }\n",
                            &errs);
    CHECK(c && strcmp(c->admin_address, "[::1]:9000") == 0 &&
          strcmp(c->admin_token, "s3cr3t-T0k.en") == 0);
    config_unref(c);
    c = load(LISTEN "admin: { address: off }\n", &errs);
    CHECK(c && strcmp(c->admin_address, "off") == 0 && c->admin_token == NULL);
    config_unref(c);
    /* A token alone keeps the default address. */
    c = load(LISTEN "admin: { token: abc }\n", &errs);
    CHECK(c && strcmp(c->admin_address, "127.0.0.1:9901") == 0 &&
          strcmp(c->admin_token, "abc") == 0);
    config_unref(c);
    CHECK(errs.n == 0);
    conf_errors_free(&errs);
    CHECK(fails_with(LISTEN "admin: { token: \"a b\" }\n",
                     "t.yaml:2:17: invalid token \"a b\": may hold only visible ASCII characters "
                     "(no spaces)"));
    CHECK(fails_with(LISTEN "admin: { token: \"\" }\n",
                     "t.yaml:2:17: invalid token \"\": must not be empty"));
    CHECK(fails_with(LISTEN "admin: { token: \"caf\xc3\xa9\" }\n",
                     "t.yaml:2:17: invalid token \"caf\xc3\xa9\": may hold only visible ASCII "
                     "characters (no spaces)"));
    CHECK(fails_with(LISTEN "admin: { token: 5, address: OFF }\n",
                     "t.yaml:2:29: invalid address \"OFF\": must be \"off\" or a numeric IP:port, "
                     "[IPv6]:port or *:port"));
    CHECK(fails_with(LISTEN "admin: { token: [a] }\n",
                     "t.yaml:2:17: expected a string for token, got a sequence"));
}

UNIT_TEST(many_new_errors_at_once)
{
    const char *yaml = LISTEN "upstreams:\n  app:\n    servers: [ { address: \"127.0.0.1:1\" } ]\n"
                       "    health_check: { status: 700, rise: 0 }\n"
                       "    retries: { attempts: 20, statuses: [404] }\n"
                       "    outlier: { max_ejected_percent: 200 }\n";
    struct conf_errors errs = { 0 };
    struct config *c = load(yaml, &errs);
    CHECK(c == NULL);
    CHECK_EQ_INT(errs.n, 5);
    if (errs.n == 5) {
        CHECK(strncmp(errs.msgs[0], "t.yaml:5:29: invalid status", 27) == 0);
        CHECK(strncmp(errs.msgs[1], "t.yaml:5:40: rise", 17) == 0);
        CHECK(strncmp(errs.msgs[2], "t.yaml:6:26: attempts", 21) == 0);
        CHECK(strncmp(errs.msgs[3], "t.yaml:6:41: invalid retry status", 33) == 0);
        CHECK(strncmp(errs.msgs[4], "t.yaml:7:37: max_ejected_percent", 32) == 0);
    }
    conf_errors_free(&errs);
}

UNIT_MAIN();
