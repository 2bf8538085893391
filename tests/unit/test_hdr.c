/* Unit tests of the heads portero sends (http/hdr): hop-by-hop removal, forwarding headers,
 * route rewrites and our own framing. Expected heads are compared byte for byte. */
#include "unit.h"

#include <stdint.h>
#include <strings.h>

#include "http/h1.h"
#include "http/hdr.h"

#define NHDR 64
static struct http_header hdrs[NHDR];
static const struct h1_limits lim = { 8192, 65536, NHDR };

static const struct conf_forwarding fwd_none = { 0 };
static const struct conf_forwarding fwd_xff = { .x_forwarded = true };
static const struct conf_forwarding fwd_fwd = { .forwarded = true };
static const struct conf_forwarding fwd_via = { .via = true };

/* Parses a request head (a string literal: the slices point into it); returns h1's result. */
static int parse_req(const char *s, struct http_msg *m)
{
    memset(m, 0, sizeof *m);
    m->headers = hdrs;
    m->max_headers = NHDR;
    return h1_parse_request(s, strlen(s), &lim, m);
}

static int parse_resp(const char *s, struct http_msg *m)
{
    memset(m, 0, sizeof *m);
    m->headers = hdrs;
    m->max_headers = NHDR;
    return h1_parse_response(s, strlen(s), &lim, m);
}

static struct hdr_request_ctx req_ctx(const struct conf_forwarding *fwd, const char *path)
{
    return (struct hdr_request_ctx){
        .fwd = fwd,
        .path = str_make(path, strlen(path)),
        .client_ip = STR_LIT("127.0.0.1"),
        .scheme = "http",
        .fallback_host = STR_LIT("10.0.0.1:9001"),
        .framing = HDR_FRAME_NONE,
    };
}

static struct hdr_response_ctx resp_ctx(const struct conf_forwarding *fwd, enum hdr_framing f,
                                        uint64_t length)
{
    return (struct hdr_response_ctx){ .fwd = fwd, .framing = f, .length = length };
}

/* Compares the built head with EXPECTED and prints both on mismatch. */
#define CHECK_HEAD(sb, expected)                                                          \
    do {                                                                                  \
        const char *unit_e = (expected);                                                  \
        if ((sb)->len != strlen(unit_e) || memcmp((sb)->p, unit_e, (sb)->len) != 0) {     \
            fprintf(stderr, "  %s:%d: head mismatch\n  got:      \"%.*s\"\n  expected: \"%s\"\n", \
                    __FILE__, __LINE__, (int)(sb)->len, (sb)->p ? (sb)->p : "", unit_e);  \
            *unit_failed = 1;                                                             \
        }                                                                                 \
    } while (0)

/* Number of header lines of SB whose name is NAME (case-insensitive). */
static int count_fields(const struct sbuf *sb, const char *name)
{
    size_t nl = strlen(name);
    int count = 0;
    for (size_t i = 0; i + 2 < sb->len; i++) {
        if (sb->p[i] != '\r' || sb->p[i + 1] != '\n')
            continue;
        const char *line = sb->p + i + 2;
        size_t left = sb->len - (i + 2);
        if (left > nl && strncasecmp(line, name, nl) == 0 && line[nl] == ':')
            count++;
    }
    return count;
}

/* ---------------------------------------------------------------------------------------- */
/* requests                                                                                   */

UNIT_TEST(test_req_basic_host_first_and_xff)
{
    struct http_msg m;
    CHECK(parse_req("GET /a?b HTTP/1.1\r\nUser-Agent: x\r\nHost: example.com\r\nAccept: */*\r\n\r\n", &m) > 0);
    struct hdr_request_ctx c = req_ctx(&fwd_xff, "/a?b");
    struct sbuf out = { 0 };
    hdr_build_request(&out, &m, &c);
    CHECK_HEAD(&out, "GET /a?b HTTP/1.1\r\n"
                     "Host: example.com\r\n"
                     "User-Agent: x\r\n"
                     "Accept: */*\r\n"
                     "X-Forwarded-For: 127.0.0.1\r\n"
                     "X-Forwarded-Proto: http\r\n"
                     "X-Forwarded-Host: example.com\r\n"
                     "\r\n");
    sbuf_free(&out);
}

UNIT_TEST(test_req_uses_ctx_path_not_target)
{
    struct http_msg m;
    CHECK(parse_req("GET /v1/users?id=3 HTTP/1.1\r\nHost: api\r\n\r\n", &m) > 0);
    struct hdr_request_ctx c = req_ctx(&fwd_none, "/users?id=3");
    struct sbuf out = { 0 };
    hdr_build_request(&out, &m, &c);
    CHECK_HEAD(&out, "GET /users?id=3 HTTP/1.1\r\nHost: api\r\n\r\n");
    sbuf_free(&out);
}

UNIT_TEST(test_req_hand_built_msg)
{
    struct http_header h[] = {
        { STR_LIT("Accept"), STR_LIT("text/html") },
        { STR_LIT("host"), STR_LIT("example.org") },
        { STR_LIT("X-Forwarded-For"), STR_LIT("1.2.3.4") },
    };
    struct http_msg m = {
        .method = STR_LIT("DELETE"), .method_id = HTTP_METHOD_DELETE, .target = STR_LIT("/item/7"),
        .path = STR_LIT("/item/7"), .version_minor = 1, .headers = h, .n_headers = 3,
        .max_headers = 3, .content_length = -1, .host = STR_LIT("example.org"),
    };
    struct hdr_request_ctx c = req_ctx(&fwd_xff, "/item/7");
    struct sbuf out = { 0 };
    hdr_build_request(&out, &m, &c);
    CHECK_HEAD(&out, "DELETE /item/7 HTTP/1.1\r\n"
                     "Host: example.org\r\n"
                     "Accept: text/html\r\n"
                     "X-Forwarded-For: 1.2.3.4, 127.0.0.1\r\n"
                     "X-Forwarded-Proto: http\r\n"
                     "X-Forwarded-Host: example.org\r\n"
                     "\r\n");
    sbuf_free(&out);
}

UNIT_TEST(test_req_hop_by_hop_removed)
{
    struct http_msg m;
    CHECK(parse_req("POST /u HTTP/1.1\r\n"
                    "Host: h\r\n"
                    "Connection: keep-alive, X-Secret\r\n"
                    "Keep-Alive: timeout=5\r\n"
                    "Proxy-Connection: keep-alive\r\n"
                    "TE: trailers\r\n"
                    "Trailer: X-T\r\n"
                    "Upgrade: websocket\r\n"
                    "X-Secret: 1\r\n"
                    "x-secret: 2\r\n"
                    "X-Keep: 3\r\n"
                    "Content-Length: 5\r\n"
                    "\r\n", &m) > 0);
    struct hdr_request_ctx c = req_ctx(&fwd_none, "/u");
    c.framing = HDR_FRAME_LENGTH;
    c.length = 5;
    struct sbuf out = { 0 };
    hdr_build_request(&out, &m, &c);
    CHECK_HEAD(&out, "POST /u HTTP/1.1\r\nHost: h\r\nX-Keep: 3\r\nContent-Length: 5\r\n\r\n");
    sbuf_free(&out);
}

UNIT_TEST(test_req_transfer_encoding_removed_and_rechunked)
{
    struct http_msg m;
    CHECK(parse_req("POST /u HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n", &m) > 0);
    CHECK(m.chunked);
    struct hdr_request_ctx c = req_ctx(&fwd_none, "/u");
    c.framing = HDR_FRAME_CHUNKED;
    struct sbuf out = { 0 };
    hdr_build_request(&out, &m, &c);
    CHECK_HEAD(&out, "POST /u HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nTransfer-Encoding: chunked\r\n\r\n");
    sbuf_free(&out);
}

UNIT_TEST(test_req_framing_none_drops_client_length)
{
    struct http_msg m;
    CHECK(parse_req("GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", &m) > 0);
    struct hdr_request_ctx c = req_ctx(&fwd_none, "/");
    struct sbuf out = { 0 };
    hdr_build_request(&out, &m, &c);
    CHECK_HEAD(&out, "GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    sbuf_free(&out);
}

UNIT_TEST(test_req_length_framing_writes_our_length)
{
    struct http_msg m;
    CHECK(parse_req("PUT /f HTTP/1.1\r\nHost: h\r\nContent-Length: 123456789012\r\n\r\n", &m) > 0);
    struct hdr_request_ctx c = req_ctx(&fwd_none, "/f");
    c.framing = HDR_FRAME_LENGTH;
    c.length = 123456789012ull;
    struct sbuf out = { 0 };
    hdr_build_request(&out, &m, &c);
    CHECK_HEAD(&out, "PUT /f HTTP/1.1\r\nHost: h\r\nContent-Length: 123456789012\r\n\r\n");
    sbuf_free(&out);
}

UNIT_TEST(test_req_expect_and_proxy_auth_removed)
{
    struct http_msg m;
    CHECK(parse_req("POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
                    "Proxy-Authorization: Basic eA==\r\nContent-Length: 1\r\n\r\n", &m) > 0);
    struct hdr_request_ctx c = req_ctx(&fwd_none, "/");
    c.framing = HDR_FRAME_LENGTH;
    c.length = 1;
    struct sbuf out = { 0 };
    hdr_build_request(&out, &m, &c);
    CHECK_HEAD(&out, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\n");
    sbuf_free(&out);
}

UNIT_TEST(test_hop_by_hop_predicate)
{
    struct http_msg m;
    CHECK(parse_req("GET / HTTP/1.1\r\nHost: h\r\nConnection: close, X-Gone , x-also\r\n\r\n", &m) > 0);
    CHECK(hdr_is_hop_by_hop(&m, STR_LIT("Connection")));
    CHECK(hdr_is_hop_by_hop(&m, STR_LIT("KEEP-ALIVE")));
    CHECK(hdr_is_hop_by_hop(&m, STR_LIT("proxy-connection")));
    CHECK(hdr_is_hop_by_hop(&m, STR_LIT("Te")));
    CHECK(hdr_is_hop_by_hop(&m, STR_LIT("Trailer")));
    CHECK(hdr_is_hop_by_hop(&m, STR_LIT("Transfer-Encoding")));
    CHECK(hdr_is_hop_by_hop(&m, STR_LIT("Upgrade")));
    CHECK(hdr_is_hop_by_hop(&m, STR_LIT("x-gone")));
    CHECK(hdr_is_hop_by_hop(&m, STR_LIT("X-Also")));
    CHECK(!hdr_is_hop_by_hop(&m, STR_LIT("X-Gon")));
    CHECK(!hdr_is_hop_by_hop(&m, STR_LIT("Accept")));
    CHECK(!hdr_is_hop_by_hop(&m, STR_LIT("Trailers")));
}

UNIT_TEST(test_req_xff_appended_to_existing)
{
    struct http_msg m;
    CHECK(parse_req("GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n", &m) > 0);
    struct hdr_request_ctx c = req_ctx(&fwd_xff, "/");
    struct sbuf out = { 0 };
    hdr_build_request(&out, &m, &c);
    CHECK_HEAD(&out, "GET / HTTP/1.1\r\nHost: h\r\n"
                     "X-Forwarded-For: 1.2.3.4, 127.0.0.1\r\n"
                     "X-Forwarded-Proto: http\r\n"
                     "X-Forwarded-Host: h\r\n\r\n");
    sbuf_free(&out);
}

UNIT_TEST(test_req_xff_joins_several_lines)
{
    struct http_msg m;
    CHECK(parse_req("GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.1.1.1\r\nX-A: a\r\n"
                    "x-forwarded-for: 2.2.2.2, 3.3.3.3\r\n\r\n", &m) > 0);
    struct hdr_request_ctx c = req_ctx(&fwd_xff, "/");
    struct sbuf out = { 0 };
    hdr_build_request(&out, &m, &c);
    CHECK_HEAD(&out, "GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n"
                     "X-Forwarded-For: 1.1.1.1, 2.2.2.2, 3.3.3.3, 127.0.0.1\r\n"
                     "X-Forwarded-Proto: http\r\n"
                     "X-Forwarded-Host: h\r\n\r\n");
    sbuf_free(&out);
}

UNIT_TEST(test_req_xforwarded_proto_host_replaced)
{
    struct http_msg m;
    CHECK(parse_req("GET / HTTP/1.1\r\nHost: shop.example\r\nX-Forwarded-Proto: https\r\n"
                    "X-Forwarded-Host: evil.example\r\nX-B: b\r\n\r\n", &m) > 0);
    struct hdr_request_ctx c = req_ctx(&fwd_xff, "/");
    struct sbuf out = { 0 };
    hdr_build_request(&out, &m, &c);
    CHECK_HEAD(&out, "GET / HTTP/1.1\r\nHost: shop.example\r\nX-B: b\r\n"
                     "X-Forwarded-For: 127.0.0.1\r\n"
                     "X-Forwarded-Proto: http\r\n"
                     "X-Forwarded-Host: shop.example\r\n\r\n");
    CHECK_EQ_INT(count_fields(&out, "X-Forwarded-Proto"), 1);
    CHECK_EQ_INT(count_fields(&out, "X-Forwarded-Host"), 1);
    sbuf_free(&out);
}

UNIT_TEST(test_req_xforwarded_off_passes_client_values)
{
    struct http_msg m;
    CHECK(parse_req("GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 9.9.9.9\r\n\r\n", &m) > 0);
    struct hdr_request_ctx c = req_ctx(&fwd_none, "/");
    struct sbuf out = { 0 };
    hdr_build_request(&out, &m, &c);
    CHECK_HEAD(&out, "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 9.9.9.9\r\n\r\n");
    sbuf_free(&out);
}

UNIT_TEST(test_req_forwarded_ipv4)
{
    struct http_msg m;
    CHECK(parse_req("GET / HTTP/1.1\r\nHost: example.com:8080\r\n\r\n", &m) > 0);
    struct hdr_request_ctx c = req_ctx(&fwd_fwd, "/");
    struct sbuf out = { 0 };
    hdr_build_request(&out, &m, &c);
    CHECK_HEAD(&out, "GET / HTTP/1.1\r\nHost: example.com:8080\r\n"
                     "Forwarded: for=127.0.0.1;host=\"example.com:8080\";proto=http\r\n\r\n");
    sbuf_free(&out);
}

UNIT_TEST(test_req_forwarded_ipv6_quoted)
{
    struct http_msg m;
    CHECK(parse_req("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", &m) > 0);
    struct hdr_request_ctx c = req_ctx(&fwd_fwd, "/");
    c.client_ip = STR_LIT("::1");
    c.client_ipv6 = true;
    struct sbuf out = { 0 };
    hdr_build_request(&out, &m, &c);
    CHECK_HEAD(&out, "GET / HTTP/1.1\r\nHost: example.com\r\n"
                     "Forwarded: for=\"[::1]\";host=\"example.com\";proto=http\r\n\r\n");
    sbuf_free(&out);
}

UNIT_TEST(test_req_forwarded_appended_to_existing)
{
    struct http_msg m;
    CHECK(parse_req("GET / HTTP/1.1\r\nHost: h\r\nForwarded: for=192.0.2.60;proto=https\r\n\r\n", &m) > 0);
    struct hdr_request_ctx c = req_ctx(&fwd_fwd, "/");
    struct sbuf out = { 0 };
    hdr_build_request(&out, &m, &c);
    CHECK_HEAD(&out, "GET / HTTP/1.1\r\nHost: h\r\n"
                     "Forwarded: for=192.0.2.60;proto=https, for=127.0.0.1;host=\"h\";proto=http\r\n\r\n");
    CHECK_EQ_INT(count_fields(&out, "Forwarded"), 1);
    sbuf_free(&out);
}

UNIT_TEST(test_req_via)
{
    struct http_msg m;
    CHECK(parse_req("GET / HTTP/1.1\r\nHost: h\r\n\r\n", &m) > 0);
    struct hdr_request_ctx c = req_ctx(&fwd_via, "/");
    struct sbuf out = { 0 };
    hdr_build_request(&out, &m, &c);
    CHECK_HEAD(&out, "GET / HTTP/1.1\r\nHost: h\r\nVia: 1.1 portero\r\n\r\n");
    sbuf_free(&out);

    CHECK(parse_req("GET / HTTP/1.1\r\nHost: h\r\nVia: 1.0 fred\r\n\r\n", &m) > 0);
    out = (struct sbuf){ 0 };
    hdr_build_request(&out, &m, &c);
    CHECK_HEAD(&out, "GET / HTTP/1.1\r\nHost: h\r\nVia: 1.0 fred, 1.1 portero\r\n\r\n");
    sbuf_free(&out);
}

UNIT_TEST(test_req_http10_fallback_host_and_via)
{
    struct http_msg m;
    CHECK(parse_req("GET /x HTTP/1.0\r\nAccept: */*\r\n\r\n", &m) > 0);
    CHECK_EQ_INT(m.host.n, 0);
    struct conf_forwarding all = { .x_forwarded = true, .via = true };
    struct hdr_request_ctx c = req_ctx(&all, "/x");
    struct sbuf out = { 0 };
    hdr_build_request(&out, &m, &c);
    CHECK_HEAD(&out, "GET /x HTTP/1.1\r\n"
                     "Host: 10.0.0.1:9001\r\n"
                     "Accept: */*\r\n"
                     "X-Forwarded-For: 127.0.0.1\r\n"
                     "X-Forwarded-Proto: http\r\n"
                     "X-Forwarded-Host: 10.0.0.1:9001\r\n"
                     "Via: 1.0 portero\r\n\r\n");
    sbuf_free(&out);
}

UNIT_TEST(test_req_all_forwarding_order)
{
    struct http_msg m;
    CHECK(parse_req("GET / HTTP/1.1\r\nHost: h\r\n\r\n", &m) > 0);
    struct conf_forwarding all = { .x_forwarded = true, .forwarded = true, .via = true };
    struct hdr_request_ctx c = req_ctx(&all, "/");
    c.framing = HDR_FRAME_LENGTH;
    c.length = 0;
    struct sbuf out = { 0 };
    hdr_build_request(&out, &m, &c);
    CHECK_HEAD(&out, "GET / HTTP/1.1\r\nHost: h\r\n"
                     "X-Forwarded-For: 127.0.0.1\r\n"
                     "X-Forwarded-Proto: http\r\n"
                     "X-Forwarded-Host: h\r\n"
                     "Forwarded: for=127.0.0.1;host=\"h\";proto=http\r\n"
                     "Via: 1.1 portero\r\n"
                     "Content-Length: 0\r\n\r\n");
    sbuf_free(&out);
}

UNIT_TEST(test_req_ops_set_add_remove)
{
    struct http_msg m;
    CHECK(parse_req("GET / HTTP/1.1\r\nHost: h\r\nX-Env: dev\r\nX-Extra: client\r\nX-Drop: 1\r\n"
                    "x-env: dev2\r\nX-DROP: 2\r\nX-Stay: s\r\n\r\n", &m) > 0);
    struct conf_header_kv set[] = { { "X-Env", "prod" } };
    struct conf_header_kv add[] = { { "X-Extra", "proxy" }, { "X-New", "n" } };
    char *rm[] = { "x-drop" };
    struct conf_header_ops ops = { set, 1, add, 2, rm, 1 };
    struct hdr_request_ctx c = req_ctx(&fwd_none, "/");
    c.ops = &ops;
    struct sbuf out = { 0 };
    hdr_build_request(&out, &m, &c);
    CHECK_HEAD(&out, "GET / HTTP/1.1\r\nHost: h\r\n"
                     "X-Extra: client\r\n"
                     "X-Stay: s\r\n"
                     "X-Env: prod\r\n"
                     "X-Extra: proxy\r\n"
                     "X-New: n\r\n\r\n");
    sbuf_free(&out);
}

/* A route that sets Host (a common rewrite; the config loader accepts it) must not produce a
 * request with two Host fields: RFC 9112 §3.2 makes the origin answer 400 to that. */
UNIT_TEST(test_req_ops_set_host_single_host)
{
    struct http_msg m;
    CHECK(parse_req("GET / HTTP/1.1\r\nHost: public.example\r\n\r\n", &m) > 0);
    struct conf_header_kv set[] = { { "Host", "backend.internal" } };
    struct conf_header_ops ops = { .set = set, .n_set = 1 };
    struct hdr_request_ctx c = req_ctx(&fwd_none, "/");
    c.ops = &ops;
    struct sbuf out = { 0 };
    hdr_build_request(&out, &m, &c);
    CHECK_EQ_INT(count_fields(&out, "Host"), 1);
    CHECK(memmem(out.p, out.len, "\r\nHost: backend.internal\r\n", 26) != NULL);
    if (count_fields(&out, "Host") != 1)
        fprintf(stderr, "  got: \"%.*s\"\n", (int)out.len, out.p);
    sbuf_free(&out);
}

/* RFC 9110 §7.6.1: a field named by Connection is removed before forwarding, so a client's
 * X-Forwarded-For listed in Connection must not survive into the joined value. */
UNIT_TEST(test_req_xff_named_by_connection_dropped)
{
    struct http_msg m;
    CHECK(parse_req("GET / HTTP/1.1\r\nHost: h\r\nConnection: X-Forwarded-For\r\n"
                    "X-Forwarded-For: 6.6.6.6\r\n\r\n", &m) > 0);
    struct hdr_request_ctx c = req_ctx(&fwd_xff, "/");
    struct sbuf out = { 0 };
    hdr_build_request(&out, &m, &c);
    CHECK_HEAD(&out, "GET / HTTP/1.1\r\nHost: h\r\n"
                     "X-Forwarded-For: 127.0.0.1\r\n"
                     "X-Forwarded-Proto: http\r\n"
                     "X-Forwarded-Host: h\r\n\r\n");
    sbuf_free(&out);
}

UNIT_TEST(test_req_tunnel_forwards_upgrade)
{
    struct http_msg m;
    CHECK(parse_req("GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    "Sec-WebSocket-Key: k\r\nSec-WebSocket-Version: 13\r\n\r\n", &m) > 0);
    CHECK(m.conn_upgrade);
    struct hdr_request_ctx c = req_ctx(&fwd_none, "/ws");
    c.tunnel = true;
    struct sbuf out = { 0 };
    hdr_build_request(&out, &m, &c);
    CHECK_HEAD(&out, "GET /ws HTTP/1.1\r\nHost: h\r\n"
                     "Sec-WebSocket-Key: k\r\nSec-WebSocket-Version: 13\r\n"
                     "Connection: upgrade\r\nUpgrade: websocket\r\n\r\n");
    sbuf_free(&out);

    /* without tunnel, the same request loses its Upgrade */
    c.tunnel = false;
    out = (struct sbuf){ 0 };
    hdr_build_request(&out, &m, &c);
    CHECK_HEAD(&out, "GET /ws HTTP/1.1\r\nHost: h\r\n"
                     "Sec-WebSocket-Key: k\r\nSec-WebSocket-Version: 13\r\n\r\n");
    sbuf_free(&out);
}

UNIT_TEST(test_req_appends_to_existing_sbuf)
{
    struct http_msg m;
    CHECK(parse_req("GET / HTTP/1.1\r\nHost: h\r\n\r\n", &m) > 0);
    struct hdr_request_ctx c = req_ctx(&fwd_none, "/");
    struct sbuf out = { 0 };
    sbuf_append_cstr(&out, "PREV");
    hdr_build_request(&out, &m, &c);
    CHECK_HEAD(&out, "PREVGET / HTTP/1.1\r\nHost: h\r\n\r\n");
    sbuf_free(&out);
}

/* ---------------------------------------------------------------------------------------- */
/* responses                                                                                  */

UNIT_TEST(test_resp_basic_length)
{
    struct http_msg m;
    CHECK(parse_resp("HTTP/1.1 200 OK\r\nServer: gunicorn\r\nContent-Length: 5\r\n"
                     "Connection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\nX-Hop: h\r\nX-A: 1\r\n\r\n", &m) > 0);
    struct hdr_response_ctx c = resp_ctx(&fwd_xff, HDR_FRAME_LENGTH, 5);
    struct sbuf out = { 0 };
    hdr_build_response(&out, &m, &c);
    /* the origin's Server never passes (server_header: off here) */
    CHECK_HEAD(&out, "HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 5\r\n\r\n");
    sbuf_free(&out);
}

UNIT_TEST(test_resp_server_and_security_headers_replace_the_origins)
{
    struct http_msg m;
    CHECK(parse_resp("HTTP/1.1 200 OK\r\nServer: gunicorn/20.1\r\nX-Frame-Options: ALLOW\r\n"
                     "Content-Length: 0\r\n\r\n", &m) > 0);
    struct conf_header_kv sec[] = { { "X-Frame-Options", "DENY" }, { "X-Content-Type-Options", "nosniff" } };
    struct hdr_response_ctx c = resp_ctx(&fwd_none, HDR_FRAME_LENGTH, 0);
    c.security = sec;
    c.n_security = 2;
    c.server = STR_LIT("portero");
    struct sbuf out = { 0 };
    hdr_build_response(&out, &m, &c);
    CHECK_HEAD(&out, "HTTP/1.1 200 OK\r\nX-Frame-Options: DENY\r\nX-Content-Type-Options: nosniff\r\n"
                     "Server: portero\r\nContent-Length: 0\r\n\r\n");
    sbuf_free(&out);
}

UNIT_TEST(test_req_policy_headers_replace_the_clients)
{
    struct http_msg m;
    CHECK(parse_req("GET / HTTP/1.1\r\nHost: h\r\nX-User: admin\r\nX-Role: root\r\n\r\n", &m) > 0);
    struct hdr_request_ctx c = req_ctx(&fwd_none, "/");
    const char *names[] = { "X-User", "X-Role" };
    char alice[] = "alice";
    char *values[] = { alice, NULL }; /* a claim the token did not carry: only dropped */
    c.set_name = names;
    c.set_value = values;
    c.n_set = 2;
    struct sbuf out = { 0 };
    hdr_build_request(&out, &m, &c);
    CHECK_HEAD(&out, "GET / HTTP/1.1\r\nHost: h\r\nX-User: alice\r\n\r\n");
    sbuf_free(&out);
}

UNIT_TEST(test_resp_status_line_always_11)
{
    struct http_msg m;
    CHECK(parse_resp("HTTP/1.0 404 Nope\r\nX-A: 1\r\n\r\n", &m) > 0);
    struct hdr_response_ctx c = resp_ctx(&fwd_none, HDR_FRAME_CHUNKED, 0);
    struct sbuf out = { 0 };
    hdr_build_response(&out, &m, &c);
    CHECK_HEAD(&out, "HTTP/1.1 404 Nope\r\nX-A: 1\r\nTransfer-Encoding: chunked\r\n\r\n");
    sbuf_free(&out);
}

UNIT_TEST(test_resp_empty_reason_uses_ours)
{
    struct http_msg m = { .status = 503, .version_minor = 1, .headers = hdrs, .content_length = -1 };
    struct hdr_response_ctx c = resp_ctx(&fwd_none, HDR_FRAME_LENGTH, 0);
    struct sbuf out = { 0 };
    hdr_build_response(&out, &m, &c);
    CHECK_HEAD(&out, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n");
    sbuf_free(&out);
}

UNIT_TEST(test_resp_bodyless_keeps_origin_length)
{
    struct http_msg m;
    CHECK(parse_resp("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 1234\r\n\r\n", &m) > 0);
    struct hdr_response_ctx c = resp_ctx(&fwd_none, HDR_FRAME_BODYLESS, 0);
    struct sbuf out = { 0 };
    hdr_build_response(&out, &m, &c);
    CHECK_HEAD(&out, "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 1234\r\n\r\n");
    sbuf_free(&out);

    CHECK(parse_resp("HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 99\r\n\r\n", &m) > 0);
    out = (struct sbuf){ 0 };
    hdr_build_response(&out, &m, &c);
    CHECK_HEAD(&out, "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 99\r\n\r\n");
    sbuf_free(&out);
}

UNIT_TEST(test_resp_length_replaces_origin_length)
{
    struct http_msg m;
    CHECK(parse_resp("HTTP/1.1 200 OK\r\nContent-Length: 10\r\nX-B: b\r\n\r\n", &m) > 0);
    struct hdr_response_ctx c = resp_ctx(&fwd_none, HDR_FRAME_LENGTH, 10);
    struct sbuf out = { 0 };
    hdr_build_response(&out, &m, &c);
    CHECK_HEAD(&out, "HTTP/1.1 200 OK\r\nX-B: b\r\nContent-Length: 10\r\n\r\n");
    CHECK_EQ_INT(count_fields(&out, "Content-Length"), 1);
    sbuf_free(&out);
}

UNIT_TEST(test_resp_chunked_replaces_origin_te)
{
    struct http_msg m;
    CHECK(parse_resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\nX-B: b\r\n\r\n", &m) > 0);
    struct hdr_response_ctx c = resp_ctx(&fwd_none, HDR_FRAME_CHUNKED, 0);
    struct sbuf out = { 0 };
    hdr_build_response(&out, &m, &c);
    CHECK_HEAD(&out, "HTTP/1.1 200 OK\r\nX-B: b\r\nTransfer-Encoding: chunked\r\n\r\n");
    sbuf_free(&out);
}

UNIT_TEST(test_resp_close_delimited_writes_no_framing)
{
    struct http_msg m;
    CHECK(parse_resp("HTTP/1.1 200 OK\r\nX-B: b\r\n\r\n", &m) > 0);
    struct hdr_response_ctx c = resp_ctx(&fwd_none, HDR_FRAME_CLOSE, 0);
    c.close = true;
    struct sbuf out = { 0 };
    hdr_build_response(&out, &m, &c);
    CHECK_HEAD(&out, "HTTP/1.1 200 OK\r\nX-B: b\r\nConnection: close\r\n\r\n");
    sbuf_free(&out);
}

UNIT_TEST(test_resp_connection_close_and_keepalive10)
{
    struct http_msg m;
    CHECK(parse_resp("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n", &m) > 0);
    struct hdr_response_ctx c = resp_ctx(&fwd_none, HDR_FRAME_LENGTH, 2);
    struct sbuf out = { 0 };
    hdr_build_response(&out, &m, &c); /* origin's close is hop-by-hop: not ours to forward */
    CHECK_HEAD(&out, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n");
    sbuf_free(&out);

    c.close = true;
    out = (struct sbuf){ 0 };
    hdr_build_response(&out, &m, &c);
    CHECK_HEAD(&out, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n");
    sbuf_free(&out);

    c.close = false;
    c.keep_alive_10 = true;
    out = (struct sbuf){ 0 };
    hdr_build_response(&out, &m, &c);
    CHECK_HEAD(&out, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n");
    sbuf_free(&out);

    c.close = true; /* close wins */
    out = (struct sbuf){ 0 };
    hdr_build_response(&out, &m, &c);
    CHECK_HEAD(&out, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n");
    CHECK_EQ_INT(count_fields(&out, "Connection"), 1);
    sbuf_free(&out);
}

UNIT_TEST(test_resp_ops_remove_server)
{
    struct http_msg m;
    CHECK(parse_resp("HTTP/1.1 200 OK\r\nServer: nginx/1.2\r\nX-Powered-By: PHP\r\nX-Frame-Options: ALLOW\r\n"
                     "Content-Length: 0\r\n\r\n", &m) > 0);
    char *rm[] = { "server", "X-Powered-By" };
    struct conf_header_kv set[] = { { "X-Frame-Options", "DENY" } };
    struct conf_header_kv add[] = { { "X-Served-By", "portero" } };
    struct conf_header_ops ops = { set, 1, add, 1, rm, 2 };
    struct hdr_response_ctx c = resp_ctx(&fwd_none, HDR_FRAME_LENGTH, 0);
    c.ops = &ops;
    struct sbuf out = { 0 };
    hdr_build_response(&out, &m, &c);
    CHECK_HEAD(&out, "HTTP/1.1 200 OK\r\nX-Frame-Options: DENY\r\nX-Served-By: portero\r\n"
                     "Content-Length: 0\r\n\r\n");
    sbuf_free(&out);
}

UNIT_TEST(test_resp_via)
{
    struct http_msg m;
    CHECK(parse_resp("HTTP/1.1 200 OK\r\nVia: 1.1 cdn\r\nContent-Length: 0\r\n\r\n", &m) > 0);
    struct hdr_response_ctx c = resp_ctx(&fwd_via, HDR_FRAME_LENGTH, 0);
    struct sbuf out = { 0 };
    hdr_build_response(&out, &m, &c);
    CHECK_HEAD(&out, "HTTP/1.1 200 OK\r\nVia: 1.1 cdn, 1.1 portero\r\nContent-Length: 0\r\n\r\n");
    sbuf_free(&out);
}

UNIT_TEST(test_resp_tunnel_101)
{
    struct http_msg m;
    CHECK(parse_resp("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: abc\r\n\r\n", &m) > 0);
    struct hdr_response_ctx c = resp_ctx(&fwd_none, HDR_FRAME_NONE, 0);
    c.tunnel = true;
    c.close = true; /* ignored for a tunnel */
    struct sbuf out = { 0 };
    hdr_build_response(&out, &m, &c);
    CHECK_HEAD(&out, "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: abc\r\n"
                     "Connection: upgrade\r\nUpgrade: websocket\r\n\r\n");
    sbuf_free(&out);
}

UNIT_TEST(test_reason_values)
{
    CHECK(strcmp(hdr_reason(200), "OK") == 0);
    CHECK(strcmp(hdr_reason(101), "Switching Protocols") == 0);
    CHECK(strcmp(hdr_reason(204), "No Content") == 0);
    CHECK(strcmp(hdr_reason(301), "Moved Permanently") == 0);
    CHECK(strcmp(hdr_reason(302), "Found") == 0);
    CHECK(strcmp(hdr_reason(304), "Not Modified") == 0);
    CHECK(strcmp(hdr_reason(400), "Bad Request") == 0);
    CHECK(strcmp(hdr_reason(403), "Forbidden") == 0);
    CHECK(strcmp(hdr_reason(404), "Not Found") == 0);
    CHECK(strcmp(hdr_reason(408), "Request Timeout") == 0);
    CHECK(strcmp(hdr_reason(413), "Content Too Large") == 0);
    CHECK(strcmp(hdr_reason(414), "URI Too Long") == 0);
    CHECK(strcmp(hdr_reason(429), "Too Many Requests") == 0);
    CHECK(strcmp(hdr_reason(431), "Request Header Fields Too Large") == 0);
    CHECK(strcmp(hdr_reason(502), "Bad Gateway") == 0);
    CHECK(strcmp(hdr_reason(503), "Service Unavailable") == 0);
    CHECK(strcmp(hdr_reason(504), "Gateway Timeout") == 0);
    CHECK(strcmp(hdr_reason(505), "HTTP Version Not Supported") == 0);
    CHECK(strcmp(hdr_reason(299), "Unknown") == 0);
    CHECK(strcmp(hdr_reason(0), "Unknown") == 0);
    CHECK(strcmp(hdr_reason(-1), "Unknown") == 0);
}

UNIT_MAIN()
