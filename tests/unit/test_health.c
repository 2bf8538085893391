/* Unit tests of active health checks: a real loop against real local sockets. A tiny HTTP
 * server runs in a thread and answers each check with a status the test chooses; a closed
 * port refuses; a listening socket nobody accepts on completes TCP handshakes but never
 * answers. Every run is bounded by a stop timer, intervals are 30-50 ms. */
#include "unit.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "core/loop.h"
#include "core/sock.h"
#include "proxy/health.h"
#include "proxy/health_h2.h"

#include <nghttp2/nghttp2.h>

/* --- a listening socket on 127.0.0.1 with a kernel-chosen port ------------------------------- */

static int listen_local(char *address, size_t cap, struct sockaddr_storage *ss, socklen_t *len)
{
    struct sockaddr_in *in = (struct sockaddr_in *)ss;
    memset(ss, 0, sizeof *ss);
    in->sin_family = AF_INET;
    in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    *len = sizeof *in;
    int fd = sock_listen((struct sockaddr *)ss, *len, 64);
    if (fd < 0)
        return -1;
    socklen_t l = *len;
    getsockname(fd, (struct sockaddr *)ss, &l);
    sock_format_addr((struct sockaddr *)ss, address, cap);
    return fd;
}

/* --- the tiny HTTP server (its own thread, blocking I/O on accepted sockets) ---------------- */

struct http_srv {
    int fd;
    pthread_t thread;
    atomic_bool stop;
    atomic_int status;   /* what the next answer says */
    atomic_int served;
    char first_req[512]; /* the first request head received */
    char address[64];
    struct sockaddr_storage addr;
    socklen_t addr_len;
};

static void http_srv_answer(struct http_srv *srv, int cfd)
{
    char req[2048];
    size_t len = 0;
    while (len < sizeof req - 1) {
        ssize_t n = read(cfd, req + len, sizeof req - 1 - len);
        if (n <= 0)
            return;
        len += (size_t)n;
        req[len] = '\0';
        if (strstr(req, "\r\n\r\n"))
            break;
    }
    if (atomic_load(&srv->served) == 0) {
        size_t keep = len < sizeof srv->first_req - 1 ? len : sizeof srv->first_req - 1;
        memcpy(srv->first_req, req, keep);
        srv->first_req[keep] = '\0';
    }
    char resp[128];
    int n = snprintf(resp, sizeof resp, "HTTP/1.1 %d X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                     atomic_load(&srv->status));
    ssize_t w = write(cfd, resp, (size_t)n);
    (void)w;
    atomic_fetch_add(&srv->served, 1);
}

static void *http_srv_main(void *arg)
{
    struct http_srv *srv = arg;
    while (!atomic_load(&srv->stop)) {
        struct pollfd p = { .fd = srv->fd, .events = POLLIN };
        if (poll(&p, 1, 20) <= 0)
            continue;
        int cfd = accept4(srv->fd, NULL, NULL, SOCK_CLOEXEC); /* blocking: simple answers */
        if (cfd < 0)
            continue;
        http_srv_answer(srv, cfd);
        close(cfd);
    }
    return NULL;
}

static int http_srv_start(struct http_srv *srv, int status)
{
    memset(srv, 0, sizeof *srv);
    atomic_init(&srv->status, status);
    srv->fd = listen_local(srv->address, sizeof srv->address, &srv->addr, &srv->addr_len);
    if (srv->fd < 0)
        return -1;
    return pthread_create(&srv->thread, NULL, http_srv_main, srv);
}

static void http_srv_stop(struct http_srv *srv)
{
    atomic_store(&srv->stop, true);
    pthread_join(srv->thread, NULL);
    close(srv->fd);
}

/* --- a hand-built snapshot: one server per upstream ------------------------------------------ */

#define MAX_UP 4

struct world {
    struct loop *loop;
    struct health *h;
    struct loop_timer stopper;
    struct config cfg;
    struct conf_upstream ups[MAX_UP];
    struct conf_server srvs[MAX_UP];
    char names[MAX_UP][16];
    struct server_state *states[MAX_UP];
    /* a scripted step in the middle of the run (loop_stop is sticky: one run per test) */
    struct loop_timer step;
    void (*on_step)(struct world *w);
    uint64_t obs[8];      /* what the step saw */
    bool obs_up[4];
    uint64_t step_at;     /* loop clock at the step */
};

static struct world *cur;

static void stopper_fire(struct loop_timer *t)
{
    (void)t;
    loop_stop(cur->loop);
}

static struct conf_health_check check_http(const char *path, const char *host)
{
    return (struct conf_health_check){
        .enabled = true, .type = HEALTH_CHECK_HTTP, .path = (char *)path, .host = (char *)host,
        .interval_ms = 40, .timeout_ms = 100, .status_min = 200, .status_max = 399,
        .rise = 2, .fall = 2,
    };
}

/* Adds upstream N ("upN") with one server at ADDRESS/SS. */
static void world_add(struct world *w, const char *address, const struct sockaddr_storage *ss,
                      socklen_t len, struct conf_health_check hc)
{
    size_t n = w->cfg.n_upstreams++;
    snprintf(w->names[n], sizeof w->names[n], "up%zu", n);
    struct conf_server *srv = &w->srvs[n];
    srv->address = (char *)address;
    srv->addr = *ss;
    srv->addr_len = len;
    srv->weight = 1;
    struct conf_upstream *up = &w->ups[n];
    up->name = w->names[n];
    up->index = n;
    up->servers = srv;
    up->n_servers = 1;
    up->health_check = hc;
    w->states[n] = server_state_get(up->name, address);
}

static struct server_state *world_state(void *arg, size_t u, size_t s)
{
    (void)s;
    return ((struct world *)arg)->states[u];
}

static void world_init(struct world *w)
{
    memset(w, 0, sizeof *w);
    w->loop = loop_new();
    w->h = health_new(w->loop);
    w->stopper.on_fire = stopper_fire;
    w->cfg.upstreams = w->ups;
    cur = w;
}

static void world_apply(struct world *w) { health_apply(w->h, &w->cfg, world_state, w); }

static void step_fire(struct loop_timer *t)
{
    struct world *w = container_of(t, struct world, step);
    w->step_at = loop_now(w->loop);
    w->on_step(w);
}

/* Runs the loop for MS, calling FN at each of STEP_MS, 2*STEP_MS... while FN re-arms it. */
static void world_run(struct world *w, uint64_t ms, void (*fn)(struct world *w), uint64_t step_ms)
{
    if (fn) {
        w->on_step = fn;
        w->step.on_fire = step_fire;
        loop_timer_after(w->loop, &w->step, step_ms);
    }
    loop_timer_after(w->loop, &w->stopper, ms);
    loop_run(w->loop, NULL, NULL);
    loop_timer_stop(w->loop, &w->step);
}

static void world_free(struct world *w)
{
    health_free(w->h);
    loop_flush_tasks(w->loop);
    loop_free(w->loop);
    for (size_t i = 0; i < w->cfg.n_upstreams; i++)
        if (w->states[i])
            server_state_put(w->states[i]);
}

static uint64_t total(const struct server_state *s) { return atomic_load(&s->check_total); }
static uint64_t failed(const struct server_state *s) { return atomic_load(&s->check_failed_total); }
static bool up(const struct server_state *s) { return atomic_load(&s->active_up); }

/* --- the error log, captured in a file ---------------------------------------------------- */

static char log_path[64];

static void log_capture(void)
{
    snprintf(log_path, sizeof log_path, "/tmp/portero-test-health-%d.log", (int)getpid());
    unlink(log_path);
    log_open(log_path);
}

static bool log_has(const char *text)
{
    FILE *f = fopen(log_path, "r");
    if (!f)
        return false;
    char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return strstr(buf, text) != NULL;
}

static void log_release(void)
{
    log_close();
    unlink(log_path);
}

/* --- tests ------------------------------------------------------------------------------------ */

static struct http_srv *step_srv;
static int step_n;

/* 300 ms of 200, then 500 until 600 ms, then 200 again. */
static void flip_step(struct world *w)
{
    struct server_state *s = w->states[0];
    if (step_n == 0) {
        w->obs[0] = total(s);
        w->obs[1] = failed(s);
        w->obs_up[0] = up(s);
        atomic_store(&step_srv->status, 500);
        loop_timer_after(w->loop, &w->step, 300);
    } else {
        w->obs[2] = failed(s);
        w->obs_up[1] = up(s);
        w->obs[3] = w->step_at;
        atomic_store(&step_srv->status, 200);
    }
    step_n++;
}

UNIT_TEST(http_down_on_500_and_back_with_slow_start_clock)
{
    struct http_srv srv;
    CHECK(http_srv_start(&srv, 200) == 0);
    struct world w;
    world_init(&w);
    log_capture();
    world_add(&w, srv.address, &srv.addr, srv.addr_len, check_http("/healthz", "health.example"));
    world_apply(&w);
    step_srv = &srv;
    step_n = 0;
    world_run(&w, 950, flip_step, 300);
    struct server_state *s = w.states[0];
    CHECK_EQ_INT(step_n, 2);
    CHECK(w.obs[0] >= 4);           /* checked every ~40 ms */
    CHECK_EQ_INT(w.obs[1], 0);
    CHECK(w.obs_up[0]);
    CHECK(w.obs[2] >= 2);           /* fall = 2 */
    CHECK(!w.obs_up[1]);
    CHECK(up(s));                    /* rise = 2 */
    uint64_t since = atomic_load(&s->up_since);
    CHECK(since >= w.obs[3] && since <= loop_now(w.loop));
    CHECK(atomic_load(&s->check_successes) >= 2);
    CHECK_EQ_INT(atomic_load(&s->check_failures), 0);
    CHECK(strncmp(srv.first_req, "GET /healthz HTTP/1.1\r\nHost: health.example\r\n"
                                 "User-Agent: portero-health\r\nConnection: close\r\n\r\n",
                  sizeof srv.first_req) == 0);
    char line[160];
    snprintf(line, sizeof line, "upstream up0 server %s is down (health check: status 500)", srv.address);
    CHECK(log_has(line));
    snprintf(line, sizeof line, "upstream up0 server %s is up (health check)", srv.address);
    CHECK(log_has(line));
    log_release();
    world_free(&w);
    http_srv_stop(&srv);
}

UNIT_TEST(refused_goes_down_after_fall)
{
    char address[64];
    struct sockaddr_storage ss;
    socklen_t len;
    int fd = listen_local(address, sizeof address, &ss, &len);
    CHECK(fd >= 0);
    close(fd); /* nobody listens there now */
    struct world w;
    world_init(&w);
    log_capture();
    struct conf_health_check hc = check_http(NULL, NULL);
    hc.interval_ms = 30;
    hc.fall = 3;
    world_add(&w, address, &ss, len, hc);
    world_apply(&w);
    world_run(&w, 400, NULL, 0);
    struct server_state *s = w.states[0];
    CHECK(!up(s));
    CHECK(failed(s) >= 3);
    CHECK_EQ_INT(total(s), failed(s));
    CHECK_EQ_INT(atomic_load(&s->up_since), 0);
    char line[160];
    snprintf(line, sizeof line, "upstream up0 server %s is down (health check: connect refused)", address);
    CHECK(log_has(line));
    log_release();
    world_free(&w);
}

UNIT_TEST(recovering_server_rises)
{
    struct http_srv srv;
    CHECK(http_srv_start(&srv, 204) == 0);
    struct world w;
    world_init(&w);
    struct conf_health_check hc = check_http(NULL, NULL);
    hc.rise = 3;
    log_capture();
    world_add(&w, srv.address, &srv.addr, srv.addr_len, hc);
    struct server_state *s = w.states[0];
    atomic_store(&s->active_up, false); /* as a fall would have left it */
    uint64_t start = loop_now(w.loop);
    world_apply(&w);
    world_run(&w, 400, NULL, 0);
    CHECK(up(s));
    CHECK(atomic_load(&s->check_successes) >= 3);
    CHECK(atomic_load(&s->up_since) >= start);
    CHECK(atomic_load(&s->up_since) <= loop_now(w.loop));
    CHECK_EQ_INT(failed(s), 0);
    /* default Host: the server's address as written; default path "/" */
    char want[160];
    snprintf(want, sizeof want, "GET / HTTP/1.1\r\nHost: %s\r\n", srv.address);
    CHECK(strncmp(srv.first_req, want, strlen(want)) == 0);
    char line[160];
    snprintf(line, sizeof line, "upstream up0 server %s is up (health check)", srv.address);
    CHECK(log_has(line));
    log_release();
    world_free(&w);
    http_srv_stop(&srv);
}

UNIT_TEST(tcp_connect_and_http_timeout)
{
    /* accepts nothing: handshakes complete in the kernel backlog, no byte ever comes back */
    char address[64];
    struct sockaddr_storage ss;
    socklen_t len;
    int fd = listen_local(address, sizeof address, &ss, &len);
    CHECK(fd >= 0);
    struct world w;
    world_init(&w);
    log_capture();
    struct conf_health_check tcp = check_http(NULL, NULL);
    tcp.type = HEALTH_CHECK_TCP;
    struct conf_health_check http = check_http(NULL, NULL);
    http.timeout_ms = 60;
    world_add(&w, address, &ss, len, tcp);
    world_add(&w, address, &ss, len, http);
    world_apply(&w);
    world_run(&w, 500, NULL, 0);
    CHECK(up(w.states[0]));
    CHECK(total(w.states[0]) >= 4);
    CHECK_EQ_INT(failed(w.states[0]), 0);
    CHECK(!up(w.states[1]));
    CHECK(failed(w.states[1]) >= 2);
    char line[160];
    snprintf(line, sizeof line, "upstream up1 server %s is down (health check: timeout)", address);
    CHECK(log_has(line));
    log_release();
    world_free(&w); /* with a check in flight: its socket and buffer must go too */
    close(fd);
}

UNIT_TEST(status_range)
{
    struct http_srv srv;
    CHECK(http_srv_start(&srv, 302) == 0);
    struct world w;
    world_init(&w);
    log_capture();
    struct conf_health_check strict = check_http(NULL, NULL);
    strict.status_max = 299;
    struct conf_health_check exact = check_http(NULL, NULL);
    exact.status_min = exact.status_max = 302;
    world_add(&w, srv.address, &srv.addr, srv.addr_len, strict);
    world_add(&w, srv.address, &srv.addr, srv.addr_len, check_http(NULL, NULL)); /* 200-399 */
    world_add(&w, srv.address, &srv.addr, srv.addr_len, exact);
    world_apply(&w);
    world_run(&w, 400, NULL, 0);
    CHECK(!up(w.states[0]));
    CHECK(up(w.states[1]));
    CHECK(up(w.states[2]));
    CHECK_EQ_INT(failed(w.states[1]) + failed(w.states[2]), 0);
    char line[160];
    snprintf(line, sizeof line, "upstream up0 server %s is down (health check: status 302)", srv.address);
    CHECK(log_has(line));
    log_release();
    world_free(&w);
    http_srv_stop(&srv);
}

static struct sockaddr_storage step_ss;
static socklen_t step_len;
static char step_address[64];

/* From inside a loop callback (as the admin API would): drop up1's checks, add up3. */
static void reapply_step(struct world *w)
{
    w->obs[0] = total(w->states[0]);
    w->obs[1] = total(w->states[1]);
    w->obs_up[0] = up(w->states[1]);
    w->ups[1].health_check.enabled = false;
    world_add(w, step_address, &step_ss, step_len, check_http(NULL, NULL));
    world_apply(w);
    w->obs_up[1] = up(w->states[1]);
}

UNIT_TEST(apply_keeps_adds_and_removes_checkers)
{
    struct http_srv srv;
    CHECK(http_srv_start(&srv, 200) == 0);
    char refused[64];
    struct sockaddr_storage rss;
    socklen_t rlen;
    int fd = listen_local(refused, sizeof refused, &rss, &rlen);
    close(fd);
    struct world w;
    world_init(&w);
    log_capture();
    world_add(&w, srv.address, &srv.addr, srv.addr_len, check_http(NULL, NULL)); /* kept */
    world_add(&w, refused, &rss, rlen, check_http(NULL, NULL));                   /* removed */
    struct conf_health_check none = { 0 };
    world_add(&w, srv.address, &srv.addr, srv.addr_len, none);                    /* no checks */
    atomic_store(&w.states[2]->active_up, false);
    world_apply(&w);
    CHECK(up(w.states[2])); /* no checks: up at once */
    step_ss = srv.addr;
    step_len = srv.addr_len;
    snprintf(step_address, sizeof step_address, "%s", srv.address);
    world_run(&w, 600, reapply_step, 250);
    CHECK(w.obs[0] >= 3);
    CHECK(!w.obs_up[0]);             /* up1 was down by its checks... */
    CHECK(w.obs_up[1]);              /* ...and up once they were removed */
    CHECK(total(w.states[0]) > w.obs[0]); /* kept checker went on */
    CHECK_EQ_INT(total(w.states[1]), w.obs[1]); /* removed one stopped at once */
    CHECK(total(w.states[3]) >= 3);  /* new one started soon */
    CHECK_EQ_INT(total(w.states[2]), 0);
    log_release();
    world_free(&w);
    http_srv_stop(&srv);
}

/* --- the HTTP/2 conversation, in memory against an nghttp2 server session ----------------------- */

enum srv_mode { SRV_ANSWER, SRV_INTERIM, SRV_RESET, SRV_GOAWAY };

struct h2srv {
    nghttp2_session *sess;
    enum srv_mode mode;
    int status;
    char seen[512];  /* "name=value;" of the request's fields */
};

static int h2srv_on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *n, size_t nl,
                           const uint8_t *v, size_t vl, uint8_t flags, void *arg)
{
    (void)s, (void)f, (void)flags;
    struct h2srv *srv = arg;
    size_t at = strlen(srv->seen);
    snprintf(srv->seen + at, sizeof srv->seen - at, "%.*s=%.*s;", (int)nl, n, (int)vl, v);
    return 0;
}

static int h2srv_on_frame(nghttp2_session *s, const nghttp2_frame *f, void *arg)
{
    struct h2srv *srv = arg;
    if (f->hd.type != NGHTTP2_HEADERS || !(f->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    char st[8];
    snprintf(st, sizeof st, "%d", srv->status);
    nghttp2_nv final[] = { { (uint8_t *)":status", (uint8_t *)st, 7, strlen(st), 0 } };
    nghttp2_nv early[] = { { (uint8_t *)":status", (uint8_t *)"103", 7, 3, 0 } };
    switch (srv->mode) {
    case SRV_INTERIM:
        nghttp2_submit_headers(s, NGHTTP2_FLAG_NONE, f->hd.stream_id, NULL, early, 1, NULL);
        /* fall through */
    case SRV_ANSWER: nghttp2_submit_response(s, f->hd.stream_id, final, 1, NULL); break;
    case SRV_RESET: nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_REFUSED_STREAM); break;
    case SRV_GOAWAY: nghttp2_submit_goaway(s, NGHTTP2_FLAG_NONE, 0, NGHTTP2_ENHANCE_YOUR_CALM, NULL, 0); break;
    }
    return 0;
}

static void h2srv_init(struct h2srv *srv, enum srv_mode mode, int status)
{
    memset(srv, 0, sizeof *srv);
    srv->mode = mode;
    srv->status = status;
    nghttp2_session_callbacks *cb;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_header_callback(cb, h2srv_on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, h2srv_on_frame);
    nghttp2_session_server_new(&srv->sess, cb, srv);
    nghttp2_session_callbacks_del(cb);
    nghttp2_submit_settings(srv->sess, NGHTTP2_FLAG_NONE, NULL, 0);
}

/* Runs the conversation until the check has a verdict (at most a few round trips). */
static int h2_converse(struct h2srv *srv, struct health_h2 *cli, int *status, char *err, size_t cap)
{
    struct sbuf out = { 0 };
    int rc = 0;
    for (int round = 0; round < 4 && rc == 0; round++) {
        sbuf_reset(&out);
        if (health_h2_output(cli, &out) < 0 ||
            nghttp2_session_mem_recv(srv->sess, (const uint8_t *)out.p, out.len) != (ssize_t)out.len) {
            rc = -2;
            break;
        }
        const uint8_t *data;
        ssize_t n;
        while (rc == 0 && (n = nghttp2_session_mem_send(srv->sess, &data)) > 0)
            rc = health_h2_input(cli, data, (size_t)n, &out, status, err, cap);
    }
    sbuf_free(&out);
    return rc;
}

UNIT_TEST(h2_check_sends_get_and_reads_status)
{
    struct h2srv srv;
    h2srv_init(&srv, SRV_ANSWER, 503);
    struct health_h2 *cli = health_h2_new("https", "health.example", "/healthz");
    CHECK(cli != NULL);
    int status = 0;
    char err[160] = "";
    CHECK_EQ_INT(h2_converse(&srv, cli, &status, err, sizeof err), 1);
    CHECK_EQ_INT(status, 503);
    CHECK(strcmp(srv.seen, ":method=GET;:scheme=https;:authority=health.example;:path=/healthz;"
                           "user-agent=portero-health;") == 0);
    /* the clean end: a GOAWAY(NO_ERROR) goes out */
    health_h2_goodbye(cli);
    struct sbuf out = { 0 };
    CHECK(health_h2_output(cli, &out) == 0 && out.len >= 9 && (uint8_t)out.p[3] == NGHTTP2_GOAWAY);
    sbuf_free(&out);
    health_h2_free(cli);
    nghttp2_session_del(srv.sess);
}

UNIT_TEST(h2_check_skips_interim_responses)
{
    struct h2srv srv;
    h2srv_init(&srv, SRV_INTERIM, 204);
    struct health_h2 *cli = health_h2_new("http", "a", "/");
    int status = 0;
    char err[160] = "";
    CHECK_EQ_INT(h2_converse(&srv, cli, &status, err, sizeof err), 1);
    CHECK_EQ_INT(status, 204);
    health_h2_free(cli);
    nghttp2_session_del(srv.sess);
}

UNIT_TEST(h2_check_failures_have_reasons)
{
    static const struct { enum srv_mode mode; const char *why; } cases[] = {
        { SRV_RESET, "HTTP/2 stream reset (REFUSED_STREAM)" },
        { SRV_GOAWAY, "HTTP/2 GOAWAY before the request (ENHANCE_YOUR_CALM)" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct h2srv srv;
        h2srv_init(&srv, cases[i].mode, 200);
        struct health_h2 *cli = health_h2_new("http", "a", "/");
        int status = 0;
        char err[160] = "";
        CHECK_EQ_INT(h2_converse(&srv, cli, &status, err, sizeof err), -1);
        CHECK(strcmp(err, cases[i].why) == 0);
        health_h2_free(cli);
        nghttp2_session_del(srv.sess);
    }
    /* an HTTP/1.1 server answering the preface */
    struct health_h2 *cli = health_h2_new("http", "a", "/");
    struct sbuf out = { 0 };
    CHECK(health_h2_output(cli, &out) == 0 && out.len > 24 && memcmp(out.p, "PRI * HTTP/2.0", 14) == 0);
    sbuf_free(&out);
    static const char h1[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
    int status = 0;
    char err[160] = "";
    CHECK_EQ_INT(health_h2_input(cli, h1, sizeof h1 - 1, &out, &status, err, sizeof err), -1);
    CHECK(strncmp(err, "HTTP/2 protocol error: ", 23) == 0);
    CHECK(out.len >= 9 && (uint8_t)out.p[3] == NGHTTP2_GOAWAY); /* the goodbye to send */
    sbuf_free(&out);
    health_h2_free(cli);
}

static void count_state(struct server_state *s, void *arg)
{
    (void)s;
    (*(int *)arg)++;
}

/* Every checker gave its reference back: the process-wide registry is empty (LeakSanitizer
 * would say so too). Registered last, so it runs after the others. */
UNIT_TEST(zz_every_reference_returned)
{
    int n = 0;
    server_state_foreach(count_state, &n);
    CHECK_EQ_INT(n, 0);
    server_state_registry_free();
}

UNIT_MAIN()
