/* Unit tests of the forward-auth client: a real loop against auth servers this file runs on
 * 127.0.0.1 (one thread each, blocking sockets, one connection). A server records the request it
 * got and answers with scripted pieces (optionally spaced in time, to split the answer across
 * reads), or never answers. Every loop run is bounded by a stop timer. */
#include "unit.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/loop.h"
#include "core/sock.h"
#include "http/h1.h"
#include "policy/fwdauth.h"

/* --- a scripted auth server ------------------------------------------------------------------ */

#define SRV_MAX_PARTS 4

struct auth_srv {
    int lfd;
    pthread_t thread;
    const char *parts[SRV_MAX_PARTS]; /* the answer, sent piece by piece; none: never answers */
    int gap_ms;                       /* pause between pieces */
    bool close_after;                 /* shut our side once the pieces are sent */
    int accepted;
    char got[8192];                   /* the request head received (NUL-terminated) */
    size_t got_len;
};

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Waits (bounded) until FD is readable; false on timeout. */
static bool wait_readable(int fd, int ms)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    return poll(&p, 1, ms) == 1;
}

static void srv_read_head(struct auth_srv *s, int cfd)
{
    while (s->got_len < sizeof s->got - 1 && wait_readable(cfd, 3000)) {
        ssize_t n = read(cfd, s->got + s->got_len, sizeof s->got - 1 - s->got_len);
        if (n <= 0)
            return;
        s->got_len += (size_t)n;
        s->got[s->got_len] = '\0';
        if (strstr(s->got, "\r\n\r\n"))
            return;
    }
}

/* Reads until the client closes (bounded), so that we never close first. */
static void srv_drain(int cfd)
{
    char tmp[512];
    while (wait_readable(cfd, 3000) && read(cfd, tmp, sizeof tmp) > 0) {
    }
}

static void *srv_main(void *arg)
{
    struct auth_srv *s = arg;
    if (!wait_readable(s->lfd, 3000))
        return NULL;
    int cfd = accept(s->lfd, NULL, NULL);
    if (cfd < 0)
        return NULL;
    s->accepted = 1;
    srv_read_head(s, cfd);
    for (int i = 0; i < SRV_MAX_PARTS && s->parts[i]; i++) {
        if (i && s->gap_ms)
            sleep_ms(s->gap_ms);
        if (send(cfd, s->parts[i], strlen(s->parts[i]), MSG_NOSIGNAL) < 0)
            break;
    }
    if (s->close_after)
        shutdown(cfd, SHUT_WR);
    srv_drain(cfd);
    close(cfd);
    return NULL;
}

/* Listens on a free port of 127.0.0.1 (blocking listener); fills AUTH's address. */
static int srv_listen(struct conf_auth *auth)
{
    struct sockaddr_in *in = (struct sockaddr_in *)&auth->forward_addr;
    memset(&auth->forward_addr, 0, sizeof auth->forward_addr);
    in->sin_family = AF_INET;
    in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    auth->forward_addr_len = sizeof *in;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)in, sizeof *in) < 0 || listen(fd, 8) < 0)
        return -1;
    socklen_t len = sizeof *in;
    getsockname(fd, (struct sockaddr *)in, &len);
    return fd;
}

static void srv_start(struct auth_srv *s, struct conf_auth *auth)
{
    s->lfd = srv_listen(auth);
    pthread_create(&s->thread, NULL, srv_main, s);
}

static void srv_join(struct auth_srv *s)
{
    pthread_join(s->thread, NULL);
    close(s->lfd);
}

/* A port nobody listens on: bound, then closed. */
static void closed_port(struct conf_auth *auth)
{
    int fd = srv_listen(auth);
    close(fd);
}

/* --- the client's request --------------------------------------------------------------------- */

static const char client_req[] =
    "POST /app/page?x=1 HTTP/1.1\r\n"
    "Host: app.example.com\r\n"
    "Authorization: Bearer abc\r\n"
    "Cookie: sid=42\r\n"
    "Connection: keep-alive, X-Hop\r\n"
    "X-Hop: secret\r\n"
    "Content-Length: 5\r\n"
    "X-Forwarded-Uri: /spoofed\r\n"
    "Accept: */*\r\n"
    "\r\n";

static struct http_header req_headers[32];

static void parse_client_req(struct http_msg *req)
{
    memset(req, 0, sizeof *req);
    req->headers = req_headers;
    req->max_headers = 32;
    const struct h1_limits lim = { 8192, 8192, 32 };
    int rc = h1_parse_request(client_req, sizeof client_req - 1, &lim, req);
    if (rc <= 0)
        abort(); /* the fixture itself is wrong */
}

static void auth_init(struct conf_auth *auth, uint64_t timeout_ms)
{
    log_set_level(LOG_SEV_ERROR); /* failures are expected here: keep their warnings quiet */
    memset(auth, 0, sizeof *auth);
    auth->kind = AUTH_FORWARD;
    auth->forward_path = "/auth";
    auth->forward_timeout_ms = timeout_ms;
}

/* --- running the loop ------------------------------------------------------------------------- */

struct outcome {
    int calls;
    int status;
    struct fwdauth_result res; /* strings taken from the callee's result */
    uint64_t at;               /* when the callback ran */
    struct loop *loop;
};

static void on_result(void *arg, struct fwdauth_result *res)
{
    struct outcome *o = arg;
    o->calls++;
    o->status = res->status;
    o->at = now_ms();
    /* Take the strings, as the exchange does: the callee must not free them afterwards. */
    o->res = *res;
    for (size_t i = 0; i < res->n_copy; i++)
        res->copy_name[i] = res->copy_value[i] = NULL;
    res->location = res->www_authenticate = NULL;
    loop_stop(o->loop);
}

/* A timer that stops the loop, with the loop beside it. */
struct stopper {
    struct loop_timer t;
    struct loop *loop;
};

static void stop_fire(struct loop_timer *t)
{
    loop_stop(container_of(t, struct stopper, t)->loop);
}

/* Runs LOOP until the callback or MS have passed, then lets deferred frees happen. */
static void run_bounded(struct loop *loop, uint64_t ms)
{
    struct stopper st = { .t.on_fire = stop_fire, .loop = loop };
    loop_timer_after(loop, &st.t, ms);
    loop_run(loop, NULL, NULL);
    loop_timer_stop(loop, &st.t);
    loop_flush_tasks(loop);
}

/* Asks the auth service of AUTH once; returns the outcome (caller frees o->res). */
static void ask(struct conf_auth *auth, struct outcome *o, uint64_t bound_ms)
{
    memset(o, 0, sizeof *o);
    o->loop = loop_new();
    struct http_msg req;
    parse_client_req(&req);
    struct fwdauth_op *op = fwdauth_start(o->loop, auth, &req, "203.0.113.7", on_result, o);
    if (op)
        run_bounded(o->loop, bound_ms);
    loop_free(o->loop);
    o->loop = NULL;
}

/* Parses the head the server received into MSG (headers in HDRS); returns its length or <= 0. */
static int parse_got(const struct auth_srv *s, struct http_msg *msg, struct http_header *hdrs)
{
    memset(msg, 0, sizeof *msg);
    msg->headers = hdrs;
    msg->max_headers = 32;
    const struct h1_limits lim = { 8192, 8192, 32 };
    return h1_parse_request(s->got, s->got_len, &lim, msg);
}

static bool header_is(const struct http_msg *msg, const char *name, const char *value)
{
    const struct http_header *h = http_msg_find(msg, name);
    return h && h->value.n == strlen(value) && memcmp(h->value.p, value, h->value.n) == 0;
}

/* --- tests ------------------------------------------------------------------------------------ */

UNIT_TEST(test_fwdauth_2xx_copies_configured_headers)
{
    struct conf_auth auth;
    auth_init(&auth, 2000);
    char *names[] = { "x-user", "X-Groups", "X-Absent" };
    auth.forward_response_headers = names;
    auth.n_forward_response_headers = 3;
    struct auth_srv s = { .parts = { "HTTP/1.1 200 OK\r\nX-User: alice\r\nX-Groups: a\r\n"
                                     "X-Other: no\r\nX-Groups: b, c\r\nContent-Length: 5\r\n\r\n",
                                     "hello" }, .gap_ms = 20 };
    srv_start(&s, &auth);
    struct outcome o;
    ask(&auth, &o, 3000);
    srv_join(&s);
    CHECK_EQ_INT(o.calls, 1);
    CHECK_EQ_INT(o.status, 200);
    CHECK_EQ_INT(o.res.n_copy, 2);
    CHECK(o.res.copy_name[0] && strcmp(o.res.copy_name[0], "X-User") == 0);
    CHECK(o.res.copy_value[0] && strcmp(o.res.copy_value[0], "alice") == 0);
    CHECK(o.res.copy_name[1] && strcmp(o.res.copy_name[1], "X-Groups") == 0);
    CHECK(o.res.copy_value[1] && strcmp(o.res.copy_value[1], "a, b, c") == 0);
    CHECK(o.res.location == NULL && o.res.www_authenticate == NULL);
    fwdauth_result_free(&o.res);
}

UNIT_TEST(test_fwdauth_401_returns_www_authenticate)
{
    struct conf_auth auth;
    auth_init(&auth, 2000);
    char *names[] = { "X-User" };
    auth.forward_response_headers = names;
    auth.n_forward_response_headers = 1;
    struct auth_srv s = { .parts = { "HTTP/1.1 401 Unauthorized\r\nX-User: mallory\r\n"
                                     "WWW-Authenticate: Basic realm=\"x\"\r\n"
                                     "Transfer-Encoding: chunked\r\n\r\n4\r\nnope\r\n0\r\n\r\n" } };
    srv_start(&s, &auth);
    struct outcome o;
    ask(&auth, &o, 3000);
    srv_join(&s);
    CHECK_EQ_INT(o.calls, 1);
    CHECK_EQ_INT(o.status, 401);
    CHECK(o.res.www_authenticate && strcmp(o.res.www_authenticate, "Basic realm=\"x\"") == 0);
    CHECK(o.res.location == NULL);
    CHECK_EQ_INT(o.res.n_copy, 0); /* a refusal's headers never reach the upstream */
    fwdauth_result_free(&o.res);
}

UNIT_TEST(test_fwdauth_302_returns_location)
{
    struct conf_auth auth;
    auth_init(&auth, 2000);
    struct auth_srv s = { .parts = { "HTTP/1.1 302 Found\r\nLocation: https://login.example/?r=1\r\n"
                                     "Content-Length: 0\r\n\r\n" } };
    srv_start(&s, &auth);
    struct outcome o;
    ask(&auth, &o, 3000);
    srv_join(&s);
    CHECK_EQ_INT(o.calls, 1);
    CHECK_EQ_INT(o.status, 302);
    CHECK(o.res.location && strcmp(o.res.location, "https://login.example/?r=1") == 0);
    CHECK(o.res.www_authenticate == NULL);
    fwdauth_result_free(&o.res);
}

UNIT_TEST(test_fwdauth_request_carries_client_and_forwarded_headers)
{
    struct conf_auth auth;
    auth_init(&auth, 2000);
    struct auth_srv s = { .parts = { "HTTP/1.1 204 No Content\r\n\r\n" } };
    srv_start(&s, &auth);
    struct outcome o;
    ask(&auth, &o, 3000);
    srv_join(&s);
    CHECK_EQ_INT(o.status, 204);
    struct http_msg got;
    struct http_header hdrs[32];
    CHECK(parse_got(&s, &got, hdrs) > 0);
    CHECK(str_eq(got.method, STR_LIT("GET")));
    CHECK(str_eq(got.target, STR_LIT("/auth")));
    char host[64];
    sock_format_addr((struct sockaddr *)&auth.forward_addr, host, sizeof host);
    CHECK(header_is(&got, "Host", host));
    CHECK(header_is(&got, "Authorization", "Bearer abc"));
    CHECK(header_is(&got, "Cookie", "sid=42"));
    CHECK(header_is(&got, "Accept", "*/*"));
    CHECK(header_is(&got, "X-Forwarded-Method", "POST"));
    CHECK(header_is(&got, "X-Forwarded-Uri", "/app/page?x=1")); /* ours, not the client's */
    CHECK(header_is(&got, "X-Forwarded-Host", "app.example.com"));
    CHECK(header_is(&got, "X-Forwarded-For", "203.0.113.7"));
    CHECK(header_is(&got, "Connection", "close"));
    CHECK(http_msg_find(&got, "X-Hop") == NULL);          /* named by Connection: hop-by-hop */
    CHECK(http_msg_find(&got, "Content-Length") == NULL); /* framing: the GET has no body */
    CHECK(strstr(s.got, "/spoofed") == NULL);
    CHECK(strstr(s.got, "keep-alive") == NULL);
    fwdauth_result_free(&o.res);
}

UNIT_TEST(test_fwdauth_request_headers_allowlist)
{
    struct conf_auth auth;
    auth_init(&auth, 2000);
    char *names[] = { "cookie", "Connection" };
    auth.forward_request_headers = names;
    auth.n_forward_request_headers = 2;
    struct auth_srv s = { .parts = { "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" } };
    srv_start(&s, &auth);
    struct outcome o;
    ask(&auth, &o, 3000);
    srv_join(&s);
    CHECK_EQ_INT(o.status, 200);
    struct http_msg got;
    struct http_header hdrs[32];
    CHECK(parse_got(&s, &got, hdrs) > 0);
    CHECK(header_is(&got, "Cookie", "sid=42"));
    CHECK(http_msg_find(&got, "Authorization") == NULL);
    CHECK(http_msg_find(&got, "Accept") == NULL);
    CHECK(header_is(&got, "Connection", "close")); /* ours only: hop-by-hop is never copied */
    CHECK(header_is(&got, "X-Forwarded-Uri", "/app/page?x=1"));
    fwdauth_result_free(&o.res);
}

UNIT_TEST(test_fwdauth_never_answers_times_out)
{
    struct conf_auth auth;
    auth_init(&auth, 150);
    struct auth_srv s = { .parts = { NULL } };
    srv_start(&s, &auth);
    uint64_t t0 = now_ms();
    struct outcome o;
    ask(&auth, &o, 3000);
    srv_join(&s);
    CHECK_EQ_INT(s.accepted, 1);
    CHECK_EQ_INT(o.calls, 1);
    CHECK_EQ_INT(o.status, 0);
    CHECK(o.at - t0 >= 140);
    CHECK(o.at - t0 < 1500);
    fwdauth_result_free(&o.res);
}

UNIT_TEST(test_fwdauth_body_too_slow_times_out)
{
    struct conf_auth auth;
    auth_init(&auth, 150);
    struct auth_srv s = { .parts = { "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc" } };
    srv_start(&s, &auth);
    struct outcome o;
    ask(&auth, &o, 3000);
    srv_join(&s);
    CHECK_EQ_INT(o.calls, 1);
    CHECK_EQ_INT(o.status, 0); /* the answer never completed within the deadline */
    fwdauth_result_free(&o.res);
}

UNIT_TEST(test_fwdauth_refused_fails_fast)
{
    struct conf_auth auth;
    auth_init(&auth, 5000);
    closed_port(&auth);
    uint64_t t0 = now_ms();
    struct outcome o;
    ask(&auth, &o, 3000);
    CHECK_EQ_INT(o.calls, 1);
    CHECK_EQ_INT(o.status, 0);
    CHECK(o.at - t0 < 500);
    fwdauth_result_free(&o.res);
}

UNIT_TEST(test_fwdauth_never_calls_back_from_start)
{
    struct conf_auth auth;
    auth_init(&auth, 5000);
    closed_port(&auth);
    struct outcome o = { 0 };
    o.loop = loop_new();
    struct http_msg req;
    parse_client_req(&req);
    struct fwdauth_op *op = fwdauth_start(o.loop, &auth, &req, NULL, on_result, &o);
    CHECK(op != NULL);
    CHECK_EQ_INT(o.calls, 0);
    run_bounded(o.loop, 3000);
    CHECK_EQ_INT(o.calls, 1);
    CHECK_EQ_INT(o.status, 0);
    loop_free(o.loop);
}

UNIT_TEST(test_fwdauth_no_address_fails_from_the_loop)
{
    struct conf_auth auth;
    auth_init(&auth, 2000); /* forward_addr_len 0: the config had no usable address */
    struct outcome o;
    ask(&auth, &o, 3000);
    CHECK_EQ_INT(o.calls, 1);
    CHECK_EQ_INT(o.status, 0);
    fwdauth_result_free(&o.res);
}

/* The answer A (then B) must give status 0, quickly. */
static void check_malformed(int *unit_failed, const char *a, const char *b)
{
    struct conf_auth auth;
    auth_init(&auth, 2000);
    struct auth_srv s = { .parts = { a, b }, .gap_ms = 10, .close_after = true };
    srv_start(&s, &auth);
    uint64_t t0 = now_ms();
    struct outcome o;
    ask(&auth, &o, 3000);
    srv_join(&s);
    /* Each is seen at once (by the parser or at EOF), long before the 2 s deadline. */
    if (o.calls != 1 || o.status != 0 || o.res.n_copy || o.res.location || o.at - t0 > 1000) {
        fprintf(stderr, "  answer %s: calls %d status %d\n", a, o.calls, o.status);
        *unit_failed = 1;
    }
    fwdauth_result_free(&o.res);
}

UNIT_TEST(test_fwdauth_malformed_answers_fail)
{
    check_malformed(unit_failed, "HTTP/1.1 2OO OK\r\n\r\n", NULL);
    check_malformed(unit_failed, "HTTP/1.1 200 OK\nX-User: a\n\n", NULL);
    check_malformed(unit_failed, "SSH-2.0-OpenSSH\r\n", NULL);
    check_malformed(unit_failed, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                    NULL);
    check_malformed(unit_failed, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", NULL);
    /* closed before a whole head, or inside a framed body */
    check_malformed(unit_failed, "HTTP/1.1 200 OK\r\nX-Us", NULL);
    check_malformed(unit_failed, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", NULL);
    check_malformed(unit_failed, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "zz\r\n");
}

UNIT_TEST(test_fwdauth_interim_and_split_answer)
{
    struct conf_auth auth;
    auth_init(&auth, 2000);
    char *names[] = { "X-User" };
    auth.forward_response_headers = names;
    auth.n_forward_response_headers = 1;
    struct auth_srv s = { .parts = { "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 O",
                                     "K\r\nX-User: bob\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab",
                                     "c\r\n0\r\n\r\n" }, .gap_ms = 20 };
    srv_start(&s, &auth);
    struct outcome o;
    ask(&auth, &o, 3000);
    srv_join(&s);
    CHECK_EQ_INT(o.calls, 1);
    CHECK_EQ_INT(o.status, 200);
    CHECK_EQ_INT(o.res.n_copy, 1);
    CHECK(o.res.copy_value[0] && strcmp(o.res.copy_value[0], "bob") == 0);
    fwdauth_result_free(&o.res);
}

UNIT_TEST(test_fwdauth_large_or_unframed_body_not_awaited)
{
    /* Neither body is ever completed; the head alone decides, well before the deadline. */
    const char *answers[] = { "HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\nxyz",
                              "HTTP/1.1 403 Forbidden\r\n\r\npartial body, delimited by close" };
    for (int i = 0; i < 2; i++) {
        struct conf_auth auth;
        auth_init(&auth, 1000);
        struct auth_srv s = { .parts = { answers[i] } };
        srv_start(&s, &auth);
        uint64_t t0 = now_ms();
        struct outcome o;
        ask(&auth, &o, 3000);
        srv_join(&s);
        CHECK_EQ_INT(o.calls, 1);
        CHECK_EQ_INT(o.status, i == 0 ? 200 : 403);
        CHECK(o.at - t0 < 800);
        fwdauth_result_free(&o.res);
    }
}

/* --- cancellation ----------------------------------------------------------------------------- */

struct canceller {
    struct loop_timer t;
    struct fwdauth_op *op;
};

static void cancel_fire(struct loop_timer *t)
{
    struct canceller *c = container_of(t, struct canceller, t);
    fwdauth_cancel(c->op);
    c->op = NULL;
}

UNIT_TEST(test_fwdauth_cancel_before_answer)
{
    struct conf_auth auth;
    auth_init(&auth, 2000);
    struct auth_srv s = { .parts = { NULL } };
    srv_start(&s, &auth);
    struct outcome o = { 0 };
    o.loop = loop_new();
    struct http_msg req;
    parse_client_req(&req);
    struct canceller c = { .t.on_fire = cancel_fire };
    c.op = fwdauth_start(o.loop, &auth, &req, "203.0.113.7", on_result, &o);
    CHECK(c.op != NULL);
    loop_timer_after(o.loop, &c.t, 50); /* connected and waiting by then */
    uint64_t t0 = now_ms();
    run_bounded(o.loop, 300);
    CHECK(c.op == NULL);
    CHECK_EQ_INT(o.calls, 0);
    CHECK(now_ms() - t0 >= 250); /* the loop ran on to its bound: nothing stopped it early */
    loop_free(o.loop);
    srv_join(&s); /* returns because the socket was closed */
    CHECK_EQ_INT(s.accepted, 1);
    CHECK(strstr(s.got, "GET /auth HTTP/1.1\r\n") == s.got);
}

UNIT_TEST(test_fwdauth_cancel_at_once)
{
    /* Cancelled while connecting (to a server, to a closed port), and after an immediate
     * failure (no address) whose callback is already queued. */
    struct conf_auth auth;
    auth_init(&auth, 2000);
    struct auth_srv s = { .parts = { "HTTP/1.1 200 OK\r\n\r\n" } };
    srv_start(&s, &auth);
    struct conf_auth refused, nowhere;
    auth_init(&refused, 2000);
    closed_port(&refused);
    auth_init(&nowhere, 2000);
    struct outcome o = { 0 };
    o.loop = loop_new();
    struct http_msg req;
    parse_client_req(&req);
    struct fwdauth_op *a = fwdauth_start(o.loop, &auth, &req, NULL, on_result, &o);
    struct fwdauth_op *b = fwdauth_start(o.loop, &refused, &req, NULL, on_result, &o);
    struct fwdauth_op *c = fwdauth_start(o.loop, &nowhere, &req, NULL, on_result, &o);
    CHECK(a && b && c);
    fwdauth_cancel(a);
    fwdauth_cancel(b);
    fwdauth_cancel(c);
    run_bounded(o.loop, 100);
    CHECK_EQ_INT(o.calls, 0);
    loop_free(o.loop);
    srv_join(&s);
}

UNIT_MAIN();
