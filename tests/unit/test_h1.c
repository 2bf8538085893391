/* Unit tests of the strict HTTP/1.1 parser and the chunked codec: one test per rule. */
#include "unit.h"

#include <stdint.h>

#include "http/h1.h"

#define NHDR 64
static struct http_header hdrs[NHDR];
static const struct h1_limits lim_default = { 8192, 65536, 100 };

static int reqn_lim(const char *s, size_t n, const struct h1_limits *lim, struct http_msg *m)
{
    m->headers = hdrs;
    m->max_headers = NHDR;
    return h1_parse_request(s, n, lim, m);
}

static int reqn(const char *s, size_t n, struct http_msg *m)
{
    return reqn_lim(s, n, &lim_default, m);
}

static int req(const char *s, struct http_msg *m) { return reqn(s, strlen(s), m); }

/* Status of a request built from a request line and some field lines (without the final CRLF). */
static int req_status(const char *s)
{
    struct http_msg m;
    return req(s, &m);
}

static int resp(const char *s, struct http_msg *m)
{
    m->headers = hdrs;
    m->max_headers = NHDR;
    return h1_parse_response(s, strlen(s), &lim_default, m);
}

static int resp_status(const char *s)
{
    struct http_msg m;
    return resp(s, &m);
}

static bool str_is(struct str s, const char *c)
{
    return s.n == strlen(c) && memcmp(s.p, c, s.n) == 0;
}

#define GET_HOST "GET / HTTP/1.1\r\nHost: a\r\n"

/* ---------------------------------------------------------------------------------------- */
/* request line                                                                              */

UNIT_TEST(test_simple_get)
{
    struct http_msg m;
    const char *s = "GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nX-A:  v 1 \t\r\n\r\nBODY";
    int rc = req(s, &m);
    CHECK_EQ_INT(rc, (int)strlen(s) - 4);
    CHECK_EQ_INT(m.head_len, rc);
    CHECK(str_is(m.method, "GET"));
    CHECK_EQ_INT(m.method_id, HTTP_METHOD_GET);
    CHECK(str_is(m.target, "/a?b=1"));
    CHECK(str_is(m.path, "/a?b=1"));
    CHECK_EQ_INT(m.version_minor, 1);
    CHECK(str_is(m.host, "example.com"));
    CHECK_EQ_INT(m.n_headers, 2);
    CHECK(str_is(m.headers[1].name, "X-A"));
    CHECK(str_is(m.headers[1].value, "v 1"));
    CHECK_EQ_INT(m.content_length, -1);
    CHECK(!m.chunked && !m.conn_close && !m.absolute_form && !m.expect_continue);
}

UNIT_TEST(test_method_ids)
{
    static const struct { const char *name; enum http_method id; } t[] = {
        { "GET", HTTP_METHOD_GET },         { "HEAD", HTTP_METHOD_HEAD },
        { "POST", HTTP_METHOD_POST },       { "PUT", HTTP_METHOD_PUT },
        { "DELETE", HTTP_METHOD_DELETE },   { "OPTIONS", HTTP_METHOD_OPTIONS },
        { "TRACE", HTTP_METHOD_TRACE },     { "PATCH", HTTP_METHOD_PATCH },
        { "PURGE", HTTP_METHOD_OTHER },
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        char buf[128];
        snprintf(buf, sizeof(buf), "%s / HTTP/1.1\r\nHost: a\r\n\r\n", t[i].name);
        struct http_msg m;
        CHECK(req(buf, &m) > 0);
        CHECK_EQ_INT(m.method_id, t[i].id);
    }
}

UNIT_TEST(test_method_case_sensitive)
{
    struct http_msg m;
    CHECK(req("get / HTTP/1.1\r\nHost: a\r\n\r\n", &m) > 0);
    CHECK_EQ_INT(m.method_id, HTTP_METHOD_OTHER);
}

UNIT_TEST(test_reject_bad_method_token)
{
    CHECK_EQ_INT(req_status("GE@T / HTTP/1.1\r\nHost: a\r\n\r\n"), -400);
    CHECK_EQ_INT(req_status("GE(T / HTTP/1.1\r\nHost: a\r\n\r\n"), -400);
    CHECK_EQ_INT(req_status("G\x80T / HTTP/1.1\r\nHost: a\r\n\r\n"), -400);
}

UNIT_TEST(test_reject_empty_method)
{
    CHECK_EQ_INT(req_status(" / HTTP/1.1\r\nHost: a\r\n\r\n"), -400);
}

UNIT_TEST(test_reject_double_space_request_line)
{
    CHECK_EQ_INT(req_status("GET  / HTTP/1.1\r\nHost: a\r\n\r\n"), -400);
    CHECK_EQ_INT(req_status("GET /  HTTP/1.1\r\nHost: a\r\n\r\n"), -400);
    CHECK_EQ_INT(req_status("GET / HTTP/1.1 \r\nHost: a\r\n\r\n"), -400);
}

UNIT_TEST(test_reject_tab_in_request_line)
{
    CHECK_EQ_INT(req_status("GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n"), -400);
    CHECK_EQ_INT(req_status("GET /\tHTTP/1.1\r\nHost: a\r\n\r\n"), -400);
}

UNIT_TEST(test_reject_target_non_vchar)
{
    CHECK_EQ_INT(req_status("GET /a\x01 HTTP/1.1\r\nHost: a\r\n\r\n"), -400);
    CHECK_EQ_INT(req_status("GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n"), -400);
    CHECK_EQ_INT(req_status("GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n"), -400);
}

UNIT_TEST(test_reject_http09_request)
{
    CHECK_EQ_INT(req_status("GET /\r\n\r\n"), -400);
}

UNIT_TEST(test_reject_version_garbage)
{
    CHECK_EQ_INT(req_status("GET / http/1.1\r\nHost: a\r\n\r\n"), -400);
    CHECK_EQ_INT(req_status("GET / HTTP/1.x\r\nHost: a\r\n\r\n"), -400);
    CHECK_EQ_INT(req_status("GET / HTTP/11\r\nHost: a\r\n\r\n"), -400);
    CHECK_EQ_INT(req_status("GET / HTTP/1.10\r\nHost: a\r\n\r\n"), -400);
    CHECK_EQ_INT(req_status("GET / XTTP/1.1\r\nHost: a\r\n\r\n"), -400);
}

UNIT_TEST(test_505_unsupported_version)
{
    CHECK_EQ_INT(req_status("GET / HTTP/2.0\r\nHost: a\r\n\r\n"), -505);
    CHECK_EQ_INT(req_status("GET / HTTP/1.2\r\nHost: a\r\n\r\n"), -505);
    CHECK_EQ_INT(req_status("GET / HTTP/0.9\r\nHost: a\r\n\r\n"), -505);
}

UNIT_TEST(test_leading_empty_lines_ignored)
{
    struct http_msg m;
    const char *s = "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
    CHECK_EQ_INT(req(s, &m), (int)strlen(s));
    CHECK(str_is(m.method, "GET"));
}

UNIT_TEST(test_reject_many_leading_empty_lines)
{
    CHECK_EQ_INT(req_status("\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"), -400);
}

UNIT_TEST(test_reject_leading_bare_lf)
{
    CHECK_EQ_INT(req_status("\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"), -400);
    CHECK_EQ_INT(req_status("\r\rGET / HTTP/1.1\r\nHost: a\r\n\r\n"), -400);
}

/* ---------------------------------------------------------------------------------------- */
/* request target forms                                                                      */

UNIT_TEST(test_absolute_form)
{
    struct http_msg m;
    CHECK(req("GET http://example.com:8080/x?y HTTP/1.1\r\n"
              "Host: example.com:8080\r\n\r\n", &m) > 0);
    CHECK(m.absolute_form);
    CHECK(str_is(m.host, "example.com:8080"));
    CHECK(str_is(m.path, "/x?y"));
}

UNIT_TEST(test_absolute_form_overrides_host)
{
    struct http_msg m;
    CHECK(req("GET HTTPS://real.example/p HTTP/1.1\r\nHost: other.example\r\n\r\n", &m) > 0);
    CHECK(m.absolute_form);
    CHECK(str_is(m.host, "real.example"));
    CHECK(str_is(m.path, "/p"));
}

UNIT_TEST(test_absolute_form_empty_path_is_slash)
{
    struct http_msg m;
    CHECK(req("GET http://a.example HTTP/1.1\r\nHost: a.example\r\n\r\n", &m) > 0);
    CHECK(str_is(m.path, "/"));
    CHECK(str_is(m.host, "a.example"));
}

UNIT_TEST(test_reject_absolute_form_userinfo)
{
    CHECK_EQ_INT(req_status("GET http://u:p@a.example/ HTTP/1.1\r\nHost: a\r\n\r\n"), -400);
}

UNIT_TEST(test_reject_absolute_form_bad_scheme)
{
    CHECK_EQ_INT(req_status("GET ftp://a.example/ HTTP/1.1\r\nHost: a\r\n\r\n"), -400);
    CHECK_EQ_INT(req_status("GET http:/a.example/ HTTP/1.1\r\nHost: a\r\n\r\n"), -400);
    CHECK_EQ_INT(req_status("GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n"), -400);
}

UNIT_TEST(test_reject_absolute_form_query_without_path)
{
    CHECK_EQ_INT(req_status("GET http://a.example?q HTTP/1.1\r\nHost: a\r\n\r\n"), -400);
}

UNIT_TEST(test_connect_authority_form)
{
    struct http_msg m;
    CHECK(req("CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n", &m) > 0);
    CHECK_EQ_INT(m.method_id, HTTP_METHOD_CONNECT);
    CHECK(str_is(m.host, "a.example:443"));
    CHECK(req("CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\n\r\n", &m) > 0);
}

UNIT_TEST(test_reject_connect_origin_form)
{
    CHECK_EQ_INT(req_status("CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n"), -400);
}

UNIT_TEST(test_reject_connect_without_port)
{
    CHECK_EQ_INT(req_status("CONNECT a.example HTTP/1.1\r\nHost: a\r\n\r\n"), -400);
    CHECK_EQ_INT(req_status("CONNECT a.example: HTTP/1.1\r\nHost: a\r\n\r\n"), -400);
    CHECK_EQ_INT(req_status("CONNECT :443 HTTP/1.1\r\nHost: a\r\n\r\n"), -400);
}

UNIT_TEST(test_reject_authority_form_without_connect)
{
    CHECK_EQ_INT(req_status("GET a.example:443 HTTP/1.1\r\nHost: a\r\n\r\n"), -400);
}

UNIT_TEST(test_asterisk_form_options)
{
    struct http_msg m;
    CHECK(req("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", &m) > 0);
    CHECK(str_is(m.path, "*"));
}

UNIT_TEST(test_reject_asterisk_form_not_options)
{
    CHECK_EQ_INT(req_status("GET * HTTP/1.1\r\nHost: a\r\n\r\n"), -400);
    CHECK_EQ_INT(req_status("OPTIONS *a HTTP/1.1\r\nHost: a\r\n\r\n"), -400);
}

/* ---------------------------------------------------------------------------------------- */
/* field lines                                                                               */

UNIT_TEST(test_reject_obs_fold)
{
    CHECK_EQ_INT(req_status(GET_HOST "X-A: a\r\n b\r\n\r\n"), -400);
    CHECK_EQ_INT(req_status(GET_HOST "X-A: a\r\n\tb\r\n\r\n"), -400);
}

UNIT_TEST(test_reject_whitespace_after_request_line)
{
    CHECK_EQ_INT(req_status("GET / HTTP/1.1\r\n Host: a\r\n\r\n"), -400);
}

UNIT_TEST(test_reject_space_before_colon)
{
    CHECK_EQ_INT(req_status(GET_HOST "X-A : b\r\n\r\n"), -400);
    CHECK_EQ_INT(req_status(GET_HOST "X-A\t: b\r\n\r\n"), -400);
}

UNIT_TEST(test_reject_bad_header_name)
{
    CHECK_EQ_INT(req_status(GET_HOST "X@A: b\r\n\r\n"), -400);
    CHECK_EQ_INT(req_status(GET_HOST "X\"A: b\r\n\r\n"), -400);
    CHECK_EQ_INT(req_status(GET_HOST "X\x80: b\r\n\r\n"), -400);
    CHECK_EQ_INT(req_status(GET_HOST "NoColon\r\n\r\n"), -400);
}

UNIT_TEST(test_reject_empty_header_name)
{
    CHECK_EQ_INT(req_status(GET_HOST ": b\r\n\r\n"), -400);
}

UNIT_TEST(test_reject_bare_cr)
{
    CHECK_EQ_INT(req_status(GET_HOST "X-A: a\rb\r\n\r\n"), -400);
    CHECK_EQ_INT(req_status("GET / HTTP/1.1\rHost: a\r\n\r\n"), -400);
    CHECK_EQ_INT(req_status(GET_HOST "X-A\r: b\r\n\r\n"), -400);
    CHECK_EQ_INT(req_status(GET_HOST "\r\r\n"), -400);
}

UNIT_TEST(test_reject_bare_lf)
{
    CHECK_EQ_INT(req_status("GET / HTTP/1.1\nHost: a\r\n\r\n"), -400);
    CHECK_EQ_INT(req_status(GET_HOST "X-A: a\n\r\n"), -400);
    CHECK_EQ_INT(req_status(GET_HOST "\n"), -400);
    CHECK_EQ_INT(req_status(GET_HOST "X-A: a\nb\r\n\r\n"), -400);
}

UNIT_TEST(test_reject_bare_lf_early)
{
    /* detected before the head is complete */
    CHECK_EQ_INT(req_status("GET / HTTP/1.1\n"), -400);
    CHECK_EQ_INT(req_status(GET_HOST "X-A: a\n"), -400);
}

UNIT_TEST(test_reject_nul)
{
    struct http_msg m;
    static const char v[] = "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\0b\r\n\r\n";
    CHECK_EQ_INT(reqn(v, sizeof(v) - 1, &m), -400);
    static const char t[] = "GET /\0 HTTP/1.1\r\nHost: a\r\n\r\n";
    CHECK_EQ_INT(reqn(t, sizeof(t) - 1, &m), -400);
    static const char n[] = "GET / HTTP/1.1\r\nHost: a\r\nX\0A: b\r\n\r\n";
    CHECK_EQ_INT(reqn(n, sizeof(n) - 1, &m), -400);
    static const char e[] = "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\0"; /* early, incomplete head */
    CHECK_EQ_INT(reqn(e, sizeof(e) - 1, &m), -400);
}

UNIT_TEST(test_reject_ctl_in_value)
{
    CHECK_EQ_INT(req_status(GET_HOST "X-A: a\x01z\r\n\r\n"), -400);
    CHECK_EQ_INT(req_status(GET_HOST "X-A: a\x1b[0m\r\n\r\n"), -400);
}

/* every offset of a long value and target, so word-at-a-time scans see the byte everywhere */
UNIT_TEST(test_reject_ctl_at_every_offset)
{
    static const char bad[] = { 0x00, 0x01, 0x0a, 0x0d, 0x1f, 0x7f };
    for (size_t b = 0; b < sizeof(bad); b++) {
        for (size_t off = 0; off < 40; off++) {
            char s[256];
            int n = snprintf(s, sizeof(s), GET_HOST "X-A: %s\r\n\r\n",
                             "0123456789abcdef\xc3\xa9\x80\xff" "0123456789abcdefghij");
            s[strlen(GET_HOST) + 5 + off] = bad[b];
            struct http_msg m;
            CHECK_EQ_INT(reqn(s, (size_t)n, &m), -400);
            n = snprintf(s, sizeof(s), "GET /%s HTTP/1.1\r\nHost: a\r\n\r\n",
                         "0123456789abcdef0123456789abcdefghijklmnop");
            s[5 + off] = bad[b];
            CHECK_EQ_INT(reqn(s, (size_t)n, &m), -400);
        }
    }
}

UNIT_TEST(test_long_values_accepted)
{
    struct http_msg m;
    const char *s = GET_HOST "X-A: \t0123456789 abcdef\xc3\xa9\x80\xff 0123456789\tabcdefghij "
                             "\r\n\r\n";
    CHECK(req(s, &m) > 0);
    CHECK(str_is(m.headers[1].value, "0123456789 abcdef\xc3\xa9\x80\xff 0123456789\tabcdefghij"));
}

UNIT_TEST(test_reject_del_in_value)
{
    CHECK_EQ_INT(req_status(GET_HOST "X-A: a\x7f\r\n\r\n"), -400);
}

UNIT_TEST(test_accept_obs_text_and_htab_in_value)
{
    struct http_msg m;
    CHECK(req(GET_HOST "X-A: caf\xc3\xa9\tz\r\n\r\n", &m) > 0);
    CHECK(str_is(m.headers[1].value, "caf\xc3\xa9\tz"));
}

UNIT_TEST(test_empty_header_value)
{
    struct http_msg m;
    CHECK(req(GET_HOST "X-A:\r\nX-B:   \r\n\r\n", &m) > 0);
    CHECK_EQ_INT(m.headers[1].value.n, 0);
    CHECK_EQ_INT(m.headers[2].value.n, 0);
}

/* ---------------------------------------------------------------------------------------- */
/* Content-Length                                                                            */

UNIT_TEST(test_content_length)
{
    struct http_msg m;
    CHECK(req(GET_HOST "Content-Length: 42\r\n\r\n", &m) > 0);
    CHECK_EQ_INT(m.content_length, 42);
    CHECK(req(GET_HOST "content-length: 007\r\n\r\n", &m) > 0);
    CHECK_EQ_INT(m.content_length, 7);
    CHECK(req(GET_HOST "Content-Length: 999999999999999999\r\n\r\n", &m) > 0);
    CHECK_EQ_INT(m.content_length, 999999999999999999LL);
}

UNIT_TEST(test_cl_duplicate_identical_ok)
{
    struct http_msg m;
    CHECK(req(GET_HOST "Content-Length: 5\r\nContent-Length: 5\r\n\r\n", &m) > 0);
    CHECK_EQ_INT(m.content_length, 5);
}

UNIT_TEST(test_reject_cl_sign)
{
    CHECK_EQ_INT(req_status(GET_HOST "Content-Length: +5\r\n\r\n"), -400);
    CHECK_EQ_INT(req_status(GET_HOST "Content-Length: -5\r\n\r\n"), -400);
}

UNIT_TEST(test_reject_cl_space)
{
    CHECK_EQ_INT(req_status(GET_HOST "Content-Length: 5 5\r\n\r\n"), -400);
}

UNIT_TEST(test_reject_cl_comma)
{
    CHECK_EQ_INT(req_status(GET_HOST "Content-Length: 5,5\r\n\r\n"), -400);
    CHECK_EQ_INT(req_status(GET_HOST "Content-Length: 5, 5\r\n\r\n"), -400);
}

UNIT_TEST(test_reject_cl_overflow)
{
    CHECK_EQ_INT(req_status(GET_HOST "Content-Length: 9223372036854775808\r\n\r\n"), -400);
    CHECK_EQ_INT(req_status(GET_HOST "Content-Length: 99999999999999999999999\r\n\r\n"), -400);
}

UNIT_TEST(test_reject_cl_differing)
{
    CHECK_EQ_INT(req_status(GET_HOST "Content-Length: 5\r\nContent-Length: 6\r\n\r\n"), -400);
}

UNIT_TEST(test_reject_cl_empty_or_hex)
{
    CHECK_EQ_INT(req_status(GET_HOST "Content-Length:\r\n\r\n"), -400);
    CHECK_EQ_INT(req_status(GET_HOST "Content-Length: 0x10\r\n\r\n"), -400);
    CHECK_EQ_INT(req_status(GET_HOST "Content-Length: 1e3\r\n\r\n"), -400);
}

/* ---------------------------------------------------------------------------------------- */
/* Transfer-Encoding                                                                         */

UNIT_TEST(test_te_chunked)
{
    struct http_msg m;
    CHECK(req(GET_HOST "Transfer-Encoding: chunked\r\n\r\n", &m) > 0);
    CHECK(m.chunked);
    CHECK_EQ_INT(m.content_length, -1);
}

UNIT_TEST(test_te_chunked_case_and_ows)
{
    struct http_msg m;
    CHECK(req(GET_HOST "transfer-encoding:  ChUnKeD \t\r\n\r\n", &m) > 0);
    CHECK(m.chunked);
}

UNIT_TEST(test_reject_cl_and_te)
{
    CHECK_EQ_INT(req_status(GET_HOST "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
                 -400);
    CHECK_EQ_INT(req_status(GET_HOST "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"),
                 -400);
}

UNIT_TEST(test_reject_te_http10)
{
    CHECK_EQ_INT(req_status("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), -400);
}

UNIT_TEST(test_reject_te_not_chunked)
{
    CHECK_EQ_INT(req_status(GET_HOST "Transfer-Encoding: gzip\r\n\r\n"), -501);
    CHECK_EQ_INT(req_status(GET_HOST "Transfer-Encoding: identity\r\n\r\n"), -501);
}

UNIT_TEST(test_reject_te_unknown_before_chunked)
{
    CHECK_EQ_INT(req_status(GET_HOST "Transfer-Encoding: gzip, chunked\r\n\r\n"), -501);
}

UNIT_TEST(test_reject_te_chunked_not_final)
{
    CHECK_EQ_INT(req_status(GET_HOST "Transfer-Encoding: chunked, gzip\r\n\r\n"), -400);
}

UNIT_TEST(test_reject_te_chunked_twice)
{
    CHECK_EQ_INT(req_status(GET_HOST "Transfer-Encoding: chunked, chunked\r\n\r\n"), -400);
    CHECK_EQ_INT(req_status(GET_HOST "Transfer-Encoding: chunked\r\n"
                                     "Transfer-Encoding: chunked\r\n\r\n"), -400);
}

UNIT_TEST(test_te_fields_concatenate)
{
    CHECK_EQ_INT(req_status(GET_HOST "Transfer-Encoding: gzip\r\n"
                                     "Transfer-Encoding: chunked\r\n\r\n"), -501);
    CHECK_EQ_INT(req_status(GET_HOST "Transfer-Encoding: chunked\r\n"
                                     "Transfer-Encoding: gzip\r\n\r\n"), -400);
    struct http_msg m;
    CHECK(req(GET_HOST "Transfer-Encoding:\r\nTransfer-Encoding: chunked\r\n\r\n", &m) > 0);
    CHECK(m.chunked);
}

UNIT_TEST(test_reject_te_empty)
{
    CHECK_EQ_INT(req_status(GET_HOST "Transfer-Encoding:\r\n\r\n"), -400);
    CHECK_EQ_INT(req_status(GET_HOST "Transfer-Encoding: ,\r\n\r\n"), -400);
}

UNIT_TEST(test_reject_te_not_token)
{
    CHECK_EQ_INT(req_status(GET_HOST "Transfer-Encoding: chunked;q=1\r\n\r\n"), -400);
    CHECK_EQ_INT(req_status(GET_HOST "Transfer-Encoding: chun ked\r\n\r\n"), -400);
    CHECK_EQ_INT(req_status(GET_HOST "Transfer-Encoding: \"chunked\"\r\n\r\n"), -400);
}

/* ---------------------------------------------------------------------------------------- */
/* Host, Connection, Expect, Upgrade                                                         */

UNIT_TEST(test_reject_missing_host_http11)
{
    CHECK_EQ_INT(req_status("GET / HTTP/1.1\r\nX-A: b\r\n\r\n"), -400);
}

UNIT_TEST(test_http10_without_host_ok)
{
    struct http_msg m;
    CHECK(req("GET / HTTP/1.0\r\n\r\n", &m) > 0);
    CHECK_EQ_INT(m.version_minor, 0);
    CHECK_EQ_INT(m.host.n, 0);
}

UNIT_TEST(test_reject_two_hosts)
{
    CHECK_EQ_INT(req_status("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"), -400);
    CHECK_EQ_INT(req_status("GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"), -400);
}

UNIT_TEST(test_reject_invalid_host)
{
    CHECK_EQ_INT(req_status("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), -400);
    CHECK_EQ_INT(req_status("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"), -400);
    CHECK_EQ_INT(req_status("GET / HTTP/1.1\r\nHost: u@a\r\n\r\n"), -400);
    CHECK_EQ_INT(req_status("GET / HTTP/1.1\r\nHost: a,b\r\n\r\n"), -400);
    CHECK_EQ_INT(req_status("GET / HTTP/1.1\r\nHost: a:80x\r\n\r\n"), -400);
    CHECK_EQ_INT(req_status("GET / HTTP/1.1\r\nHost: a%zz\r\n\r\n"), -400);
    CHECK_EQ_INT(req_status("GET / HTTP/1.1\r\nHost: [::1\r\n\r\n"), -400);
    CHECK_EQ_INT(req_status("GET / HTTP/1.1\r\nHost: a\xc3\xa9\r\n\r\n"), -400);
}

UNIT_TEST(test_valid_hosts)
{
    struct http_msg m;
    CHECK(req("GET / HTTP/1.1\r\nHost: [2001:db8::1]:8080\r\n\r\n", &m) > 0);
    CHECK(str_is(m.host, "[2001:db8::1]:8080"));
    CHECK(req("GET / HTTP/1.1\r\nHost: 127.0.0.1:80\r\n\r\n", &m) > 0);
    CHECK(req("GET / HTTP/1.1\r\nHost: my_host-1.example.com\r\n\r\n", &m) > 0);
    CHECK(req("GET / HTTP/1.1\r\nHost:\r\n\r\n", &m) > 0); /* RFC 9110 §7.2: empty allowed */
}

UNIT_TEST(test_connection_close)
{
    struct http_msg m;
    CHECK(req(GET_HOST "Connection: foo, Close\r\n\r\n", &m) > 0);
    CHECK(m.conn_close);
    CHECK(req(GET_HOST "\r\n", &m) > 0);
    CHECK(!m.conn_close);
}

UNIT_TEST(test_http10_default_close)
{
    struct http_msg m;
    CHECK(req("GET / HTTP/1.0\r\n\r\n", &m) > 0);
    CHECK(m.conn_close);
    CHECK(req("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &m) > 0);
    CHECK(!m.conn_close);
    CHECK(req("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", &m) > 0);
    CHECK(m.conn_close);
}

UNIT_TEST(test_connection_upgrade)
{
    struct http_msg m;
    CHECK(req(GET_HOST "Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n", &m) > 0);
    CHECK(m.conn_upgrade);
    CHECK(str_is(m.upgrade, "websocket"));
}

/* RFC 9113 §3.1, RFC 9110 §7.8: offers the proxy must not honour leave m.upgrade empty, so no
 * tunnel is requested and the (hop-by-hop) Upgrade field is not forwarded. */
UNIT_TEST(test_upgrade_h2c_ignored)
{
    struct http_msg m;
    CHECK(req(GET_HOST "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                       "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n", &m) > 0);
    CHECK(m.conn_upgrade);
    CHECK_EQ_INT(m.upgrade.n, 0);
    CHECK(req(GET_HOST "Connection: Upgrade\r\nUpgrade: websocket, H2C\r\n\r\n", &m) > 0);
    CHECK_EQ_INT(m.upgrade.n, 0);
    CHECK(req(GET_HOST "Connection: Upgrade\r\nUpgrade: h2c/1.0\r\n\r\n", &m) > 0);
    CHECK_EQ_INT(m.upgrade.n, 0);
    /* a name that merely starts with h2c is another protocol */
    CHECK(req(GET_HOST "Connection: Upgrade\r\nUpgrade: h2cx\r\n\r\n", &m) > 0);
    CHECK(str_is(m.upgrade, "h2cx"));
}

UNIT_TEST(test_upgrade_ignored_http10)
{
    struct http_msg m;
    CHECK(req("GET / HTTP/1.0\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", &m) > 0);
    CHECK_EQ_INT(m.upgrade.n, 0);
}

UNIT_TEST(test_upgrade_kept_in_response)
{
    struct http_msg m;
    CHECK(resp("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
               "Upgrade: websocket\r\n\r\n", &m) > 0);
    CHECK(str_is(m.upgrade, "websocket"));
}

UNIT_TEST(test_expect_continue)
{
    struct http_msg m;
    CHECK(req(GET_HOST "Expect: 100-Continue\r\n\r\n", &m) > 0);
    CHECK(m.expect_continue);
    CHECK(req(GET_HOST "Expect: 100-continue-x\r\n\r\n", &m) > 0);
    CHECK(!m.expect_continue);
}

UNIT_TEST(test_expect_continue_ignored_http10)
{
    struct http_msg m;
    CHECK(req("POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n", &m) > 0);
    CHECK(!m.expect_continue);
}

/* ---------------------------------------------------------------------------------------- */
/* limits and incremental parsing                                                            */

UNIT_TEST(test_414)
{
    struct h1_limits lim = { 20, 65536, 100 };
    struct http_msg m;
    const char *s = "GET /aaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: a\r\n\r\n";
    CHECK_EQ_INT(reqn_lim(s, strlen(s), &lim, &m), -414);
}

UNIT_TEST(test_414_before_crlf)
{
    struct h1_limits lim = { 20, 65536, 100 };
    struct http_msg m;
    const char *s = "GET /aaaaaaaaaaaaaaaaaaaaaaaaa";
    CHECK_EQ_INT(reqn_lim(s, 20, &lim, &m), 0);
    CHECK_EQ_INT(reqn_lim(s, 21, &lim, &m), -414);
}

UNIT_TEST(test_request_line_at_limit_ok)
{
    const char *s = "GET /abcd HTTP/1.1\r\nHost: a\r\n\r\n"; /* request line: 18 bytes */
    struct h1_limits lim = { 18, 65536, 100 };
    struct http_msg m;
    CHECK_EQ_INT(reqn_lim(s, strlen(s), &lim, &m), (int)strlen(s));
    lim.max_request_line = 17;
    CHECK_EQ_INT(reqn_lim(s, strlen(s), &lim, &m), -414);
}

UNIT_TEST(test_431_bytes)
{
    struct h1_limits lim = { 8192, 64, 100 };
    struct http_msg m;
    const char *s = GET_HOST "X-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    CHECK_EQ_INT(reqn_lim(s, strlen(s), &lim, &m), -431);
    CHECK_EQ_INT(reqn_lim(s, 65, &lim, &m), -431); /* as soon as exceeded */
    CHECK_EQ_INT(reqn_lim(s, 64, &lim, &m), 0);
}

UNIT_TEST(test_head_at_byte_limit_ok)
{
    const char *s = GET_HOST "\r\n";
    struct h1_limits lim = { 8192, (uint32_t)strlen(s), 100 };
    struct http_msg m;
    CHECK_EQ_INT(reqn_lim(s, strlen(s), &lim, &m), (int)strlen(s));
    lim.max_header_bytes--;
    CHECK_EQ_INT(reqn_lim(s, strlen(s), &lim, &m), -431);
}

UNIT_TEST(test_431_count)
{
    struct h1_limits lim = { 8192, 65536, 3 };
    struct http_msg m;
    CHECK(reqn_lim(GET_HOST "A: 1\r\nB: 2\r\n\r\n", strlen(GET_HOST "A: 1\r\nB: 2\r\n\r\n"), &lim,
                   &m) > 0);
    const char *s = GET_HOST "A: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    CHECK_EQ_INT(reqn_lim(s, strlen(s), &lim, &m), -431);
}

UNIT_TEST(test_431_count_msg_capacity)
{
    struct http_header small[2];
    struct http_msg m = { .headers = small, .max_headers = 2 };
    const char *s = GET_HOST "A: 1\r\nB: 2\r\n\r\n";
    CHECK_EQ_INT(h1_parse_request(s, strlen(s), &lim_default, &m), -431);
}

UNIT_TEST(test_null_limits_use_defaults)
{
    struct http_msg m = { .headers = hdrs, .max_headers = NHDR };
    const char *s = GET_HOST "\r\n";
    CHECK_EQ_INT(h1_parse_request(s, strlen(s), NULL, &m), (int)strlen(s));
}

UNIT_TEST(test_incomplete_returns_0)
{
    const char *s = "GET http://a.example/x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
                    "Transfer-Encoding2: x\r\n\r\n";
    size_t n = strlen(s);
    struct http_msg m;
    for (size_t k = 0; k < n; k++)
        CHECK_EQ_INT(reqn(s, k, &m), 0);
    CHECK_EQ_INT(reqn(s, n, &m), (int)n);
}

UNIT_TEST(test_head_len_excludes_body)
{
    struct http_msg m;
    const char *s = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";
    int rc = req(s, &m);
    CHECK_EQ_INT(rc, (int)strlen(s) - 5);
    CHECK_EQ_INT(m.head_len, rc);
}

UNIT_TEST(test_reparse_resets_msg)
{
    struct http_msg m;
    CHECK(req(GET_HOST "Content-Length: 5\r\nConnection: close\r\n\r\n", &m) > 0);
    CHECK(req(GET_HOST "\r\n", &m) > 0);
    CHECK_EQ_INT(m.content_length, -1);
    CHECK(!m.conn_close);
    CHECK_EQ_INT(m.n_headers, 1);
}

/* ---------------------------------------------------------------------------------------- */
/* responses                                                                                 */

UNIT_TEST(test_response_simple)
{
    struct http_msg m;
    const char *s = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
    CHECK_EQ_INT(resp(s, &m), (int)strlen(s) - 3);
    CHECK_EQ_INT(m.status, 200);
    CHECK(str_is(m.reason, "OK"));
    CHECK_EQ_INT(m.content_length, 3);
    CHECK_EQ_INT(m.version_minor, 1);
}

UNIT_TEST(test_response_reason_with_spaces_and_obs_text)
{
    struct http_msg m;
    CHECK(resp("HTTP/1.1 404 Not  Found \xe9\r\n\r\n", &m) > 0);
    CHECK(str_is(m.reason, "Not  Found \xe9"));
}

UNIT_TEST(test_response_missing_reason)
{
    struct http_msg m;
    CHECK(resp("HTTP/1.1 204\r\n\r\n", &m) > 0);
    CHECK_EQ_INT(m.status, 204);
    CHECK(resp("HTTP/1.1 204 \r\n\r\n", &m) > 0);
    CHECK_EQ_INT(m.reason.n, 0);
}

UNIT_TEST(test_reject_response_status_range)
{
    CHECK(resp_status("HTTP/1.1 099 X\r\n\r\n") < 0);
    CHECK(resp_status("HTTP/1.1 600 X\r\n\r\n") < 0);
    CHECK(resp_status("HTTP/1.1 20 X\r\n\r\n") < 0);
    CHECK(resp_status("HTTP/1.1 2000 X\r\n\r\n") < 0);
    CHECK(resp_status("HTTP/1.1 2a0 X\r\n\r\n") < 0);
}

UNIT_TEST(test_reject_response_bad_version)
{
    CHECK(resp_status("HTTP/2.0 200 OK\r\n\r\n") < 0);
    CHECK(resp_status("HTTP/1.1  200 OK\r\n\r\n") < 0);
    CHECK(resp_status("ICY 200 OK\r\n\r\n") < 0);
}

UNIT_TEST(test_reject_response_ctl_in_reason)
{
    CHECK(resp_status("HTTP/1.1 200 O\x01K\r\n\r\n") < 0);
    CHECK(resp_status("HTTP/1.1 200 OK\n\r\n") < 0);
}

UNIT_TEST(test_response_header_rules)
{
    CHECK(resp_status("HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n") < 0);
    CHECK(resp_status("HTTP/1.1 200 OK\r\nX : a\r\n\r\n") < 0);
    CHECK(resp_status("HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n") < 0);
}

UNIT_TEST(test_response_te_and_cl_rejected)
{
    CHECK(resp_status("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n")
          < 0);
}

UNIT_TEST(test_response_te_unknown_rejected)
{
    CHECK(resp_status("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n") < 0);
    CHECK(resp_status("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n") < 0);
    CHECK(resp_status("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n") < 0);
}

UNIT_TEST(test_response_te_http10_rejected)
{
    CHECK(resp_status("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n") < 0);
}

UNIT_TEST(test_response_cl_differing_rejected)
{
    CHECK(resp_status("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n") < 0);
    CHECK(resp_status("HTTP/1.1 200 OK\r\nContent-Length: 1, 1\r\n\r\n") < 0);
}

UNIT_TEST(test_response_no_host_needed)
{
    struct http_msg m;
    CHECK(resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", &m) > 0);
    CHECK(m.chunked);
    CHECK(!m.conn_close);
}

UNIT_TEST(test_response_http10_close)
{
    struct http_msg m;
    CHECK(resp("HTTP/1.0 200 OK\r\n\r\n", &m) > 0);
    CHECK(m.conn_close);
    CHECK(resp("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n", &m) > 0);
    CHECK(!m.conn_close);
}

UNIT_TEST(test_response_incomplete_returns_0)
{
    const char *s = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n";
    size_t n = strlen(s);
    for (size_t k = 0; k < n; k++) {
        struct http_msg m = { .headers = hdrs, .max_headers = NHDR };
        CHECK_EQ_INT(h1_parse_response(s, k, &lim_default, &m), 0);
    }
}

UNIT_TEST(test_response_431)
{
    struct h1_limits lim = { 8192, 30, 100 };
    struct http_msg m = { .headers = hdrs, .max_headers = NHDR };
    const char *s = "HTTP/1.1 200 OK\r\nX-Long: aaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    CHECK(h1_parse_response(s, strlen(s), &lim, &m) < 0);
}

/* ---------------------------------------------------------------------------------------- */
/* body kinds                                                                                */

static enum h1_body_kind resp_kind(const char *s, enum http_method req_method)
{
    struct http_msg m;
    if (resp(s, &m) <= 0)
        return (enum h1_body_kind)-1;
    return h1_response_body_kind(&m, req_method);
}

UNIT_TEST(test_body_kind_head_request)
{
    CHECK_EQ_INT(resp_kind("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", HTTP_METHOD_HEAD),
                 H1_BODY_NONE);
}

UNIT_TEST(test_body_kind_1xx_204_304)
{
    CHECK_EQ_INT(resp_kind("HTTP/1.1 100 Continue\r\n\r\n", HTTP_METHOD_GET), H1_BODY_NONE);
    CHECK_EQ_INT(resp_kind("HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", HTTP_METHOD_GET),
                 H1_BODY_NONE);
    CHECK_EQ_INT(resp_kind("HTTP/1.1 304 NM\r\nContent-Length: 9\r\n\r\n", HTTP_METHOD_GET),
                 H1_BODY_NONE);
}

UNIT_TEST(test_body_kind_connect_2xx)
{
    CHECK_EQ_INT(resp_kind("HTTP/1.1 200 OK\r\n\r\n", HTTP_METHOD_CONNECT), H1_BODY_NONE);
}

UNIT_TEST(test_body_kind_chunked_length_close)
{
    CHECK_EQ_INT(resp_kind("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                           HTTP_METHOD_GET), H1_BODY_CHUNKED);
    CHECK_EQ_INT(resp_kind("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", HTTP_METHOD_GET),
                 H1_BODY_LENGTH);
    CHECK_EQ_INT(resp_kind("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", HTTP_METHOD_GET),
                 H1_BODY_LENGTH);
    CHECK_EQ_INT(resp_kind("HTTP/1.1 200 OK\r\n\r\n", HTTP_METHOD_GET), H1_BODY_CLOSE);
}

UNIT_TEST(test_request_body_kind)
{
    struct http_msg m;
    CHECK(req(GET_HOST "Transfer-Encoding: chunked\r\n\r\n", &m) > 0);
    CHECK_EQ_INT(h1_request_body_kind(&m), H1_BODY_CHUNKED);
    CHECK(req(GET_HOST "Content-Length: 4\r\n\r\n", &m) > 0);
    CHECK_EQ_INT(h1_request_body_kind(&m), H1_BODY_LENGTH);
    CHECK(req(GET_HOST "Content-Length: 0\r\n\r\n", &m) > 0);
    CHECK_EQ_INT(h1_request_body_kind(&m), H1_BODY_NONE);
    CHECK(req(GET_HOST "\r\n", &m) > 0);
    CHECK_EQ_INT(h1_request_body_kind(&m), H1_BODY_NONE);
}

/* ---------------------------------------------------------------------------------------- */
/* chunked decoder                                                                           */

/* Decodes S whole; returns the decoder's result, the output in OUT, counts in *CONS / *PROD. */
static int dechunk(const char *s, size_t n, char *out, size_t *cons, size_t *prod)
{
    struct h1_chunked st = { 0 };
    memcpy(out, s, n);
    return h1_chunked_decode(&st, out, n, cons, prod);
}

static int dechunk_rc(const char *s)
{
    char out[8192 * 2];
    size_t c, p;
    return dechunk(s, strlen(s), out, &c, &p);
}

UNIT_TEST(test_chunked_simple)
{
    const char *s = "5\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\nNEXT";
    char out[256];
    size_t c, p;
    CHECK_EQ_INT(dechunk(s, strlen(s), out, &c, &p), 1);
    CHECK_EQ_INT(c, strlen(s) - 4);
    CHECK_EQ_INT(p, 31);
    CHECK(memcmp(out, "helloabcdefghijklmnopqrstuvwxyz", 31) == 0);
}

UNIT_TEST(test_chunked_extensions_skipped)
{
    const char *s = "3;name=value;q=\"quoted ; str\"\r\nabc\r\n0;last\r\n\r\n";
    char out[256];
    size_t c, p;
    CHECK_EQ_INT(dechunk(s, strlen(s), out, &c, &p), 1);
    CHECK_EQ_INT(p, 3);
    CHECK(memcmp(out, "abc", 3) == 0);
}

UNIT_TEST(test_chunked_bws_before_extension)
{
    CHECK_EQ_INT(dechunk_rc("3 \t;x=y\r\nabc\r\n0\r\n\r\n"), 1);
}

UNIT_TEST(test_reject_chunk_trailing_space_without_extension)
{
    CHECK_EQ_INT(dechunk_rc("3 \r\nabc\r\n0\r\n\r\n"), -1);
}

UNIT_TEST(test_chunked_trailers_dropped)
{
    const char *s = "2\r\nhi\r\n0\r\nX-Trailer: v\r\nY: \xff\r\n\r\nZ";
    char out[256];
    size_t c, p;
    CHECK_EQ_INT(dechunk(s, strlen(s), out, &c, &p), 1);
    CHECK_EQ_INT(c, strlen(s) - 1);
    CHECK_EQ_INT(p, 2);
}

/* Kept trailers arrive whole even when the section is split across calls byte by byte. */
UNIT_TEST(test_chunked_trailers_kept_across_splits)
{
    const char *s = "2\r\nhi\r\n0\r\ngrpc-status: 0\r\nX-A: b c\r\n\r\nNEXT";
    size_t n = strlen(s) - 4;
    struct sbuf tr = { 0 };
    struct h1_chunked st = { .trailers = &tr };
    char buf[256];
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        size_t c, p;
        buf[0] = s[i];
        rc = h1_chunked_decode(&st, buf, 1, &c, &p);
        CHECK_EQ_INT(c, 1);
    }
    CHECK_EQ_INT(rc, 1);
    CHECK_EQ_INT(tr.len, strlen("grpc-status: 0\r\nX-A: b c\r\n"));
    CHECK(memcmp(tr.p, "grpc-status: 0\r\nX-A: b c\r\n", tr.len) == 0);
    sbuf_free(&tr);
}

/* Fields a trailer may not carry (RFC 9110 §6.5.1) are dropped, the others kept in order. */
UNIT_TEST(test_chunked_trailers_forbidden_fields_dropped)
{
    const char *s = "0\r\nContent-Length: 50\r\ngrpc-status: 0\r\nHOST: evil\r\n"
                    "Transfer-Encoding: chunked\r\nX-Sum: 1\r\n\r\n";
    size_t n = strlen(s);
    struct sbuf tr = { 0 };
    struct h1_chunked st = { .trailers = &tr };
    char buf[256];
    size_t c, p;
    memcpy(buf, s, n);
    CHECK_EQ_INT(h1_chunked_decode(&st, buf, n, &c, &p), 1);
    CHECK_EQ_INT(tr.len, strlen("grpc-status: 0\r\nX-Sum: 1\r\n"));
    CHECK(memcmp(tr.p, "grpc-status: 0\r\nX-Sum: 1\r\n", tr.len) == 0);
    sbuf_free(&tr);
}

/* A body without trailers leaves the sink empty; a malformed trailer still fails the body. */
UNIT_TEST(test_chunked_trailers_kept_none_and_malformed)
{
    struct sbuf tr = { 0 };
    struct h1_chunked st = { .trailers = &tr };
    char buf[64];
    size_t c, p;
    memcpy(buf, "1\r\nx\r\n0\r\n\r\n", 12);
    CHECK_EQ_INT(h1_chunked_decode(&st, buf, 12, &c, &p), 1);
    CHECK_EQ_INT(tr.len, 0);
    struct h1_chunked bad = { .trailers = &tr };
    memcpy(buf, "0\r\nBad Name: v\r\n\r\n", 19);
    CHECK_EQ_INT(h1_chunked_decode(&bad, buf, 19, &c, &p), -1);
    sbuf_free(&tr);
}

UNIT_TEST(test_chunked_incomplete_returns_0)
{
    CHECK_EQ_INT(dechunk_rc("5\r\nhel"), 0);
    CHECK_EQ_INT(dechunk_rc("5\r\nhello\r\n0\r\n"), 0);
    CHECK_EQ_INT(dechunk_rc(""), 0);
}

static const char split_msg[] = "4;a=b\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n"
                                "0\r\nT: 1\r\n\r\n";
static const char split_out[] = "Wikipedia in\r\n\r\nchunks.";

UNIT_TEST(test_chunked_split_every_point)
{
    size_t n = sizeof(split_msg) - 1;
    for (size_t k = 0; k <= n; k++) {
        char buf[256], out[256];
        size_t outn = 0, c, p;
        struct h1_chunked st = { 0 };
        memcpy(buf, split_msg, n);
        int rc = h1_chunked_decode(&st, buf, k, &c, &p);
        CHECK(rc == 0 || (rc == 1 && k == n));
        CHECK_EQ_INT(c, k);
        memcpy(out, buf, p);
        outn = p;
        if (k < n) {
            rc = h1_chunked_decode(&st, buf + k, n - k, &c, &p);
            CHECK_EQ_INT(rc, 1);
            CHECK_EQ_INT(c, n - k);
            memcpy(out + outn, buf + k, p);
            outn += p;
        }
        CHECK_EQ_INT(outn, sizeof(split_out) - 1);
        CHECK(memcmp(out, split_out, outn) == 0);
    }
}

UNIT_TEST(test_chunked_byte_at_a_time)
{
    size_t n = sizeof(split_msg) - 1;
    char buf[256], out[256];
    size_t outn = 0, c, p;
    struct h1_chunked st = { 0 };
    memcpy(buf, split_msg, n);
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        rc = h1_chunked_decode(&st, buf + i, 1, &c, &p);
        CHECK_EQ_INT(c, 1);
        CHECK(p <= 1);
        if (p)
            out[outn++] = buf[i];
        CHECK(rc == (i + 1 == n ? 1 : 0));
    }
    CHECK_EQ_INT(rc, 1);
    CHECK_EQ_INT(outn, sizeof(split_out) - 1);
    CHECK(memcmp(out, split_out, outn) == 0);
}

UNIT_TEST(test_chunked_done_consumes_nothing_more)
{
    struct h1_chunked st = { 0 };
    char buf[] = "0\r\n\r\nGET";
    size_t c, p;
    CHECK_EQ_INT(h1_chunked_decode(&st, buf, 8, &c, &p), 1);
    CHECK_EQ_INT(c, 5);
    CHECK_EQ_INT(h1_chunked_decode(&st, buf + 5, 3, &c, &p), 1);
    CHECK_EQ_INT(c, 0);
    CHECK_EQ_INT(p, 0);
}

UNIT_TEST(test_chunk_size_max_ok)
{
    struct h1_chunked st = { 0 };
    char buf[] = "7fffffffffffffff\r\nab";
    size_t c, p;
    CHECK_EQ_INT(h1_chunked_decode(&st, buf, strlen(buf), &c, &p), 0);
    CHECK_EQ_INT(p, 2);
}

UNIT_TEST(test_reject_chunk_size_overflow)
{
    CHECK_EQ_INT(dechunk_rc("8000000000000000\r\n"), -1);
    CHECK_EQ_INT(dechunk_rc("ffffffffffffffffff\r\n"), -1);
}

UNIT_TEST(test_reject_chunk_size_too_many_digits)
{
    CHECK_EQ_INT(dechunk_rc("00000000000000001\r\nx\r\n0\r\n\r\n"), -1);
}

UNIT_TEST(test_reject_chunk_size_non_hex)
{
    CHECK_EQ_INT(dechunk_rc("g\r\n"), -1);
    CHECK_EQ_INT(dechunk_rc("1g\r\n"), -1);
    CHECK_EQ_INT(dechunk_rc("\r\n"), -1);
}

UNIT_TEST(test_reject_chunk_size_0x_prefix)
{
    CHECK_EQ_INT(dechunk_rc("0x5\r\nhello\r\n0\r\n\r\n"), -1);
}

UNIT_TEST(test_reject_chunk_size_sign_or_leading_space)
{
    CHECK_EQ_INT(dechunk_rc("+5\r\nhello\r\n0\r\n\r\n"), -1);
    CHECK_EQ_INT(dechunk_rc("-5\r\nhello\r\n0\r\n\r\n"), -1);
    CHECK_EQ_INT(dechunk_rc(" 5\r\nhello\r\n0\r\n\r\n"), -1);
}

UNIT_TEST(test_reject_chunk_missing_crlf_after_data)
{
    CHECK_EQ_INT(dechunk_rc("5\r\nhelloX\r\n0\r\n\r\n"), -1);
    CHECK_EQ_INT(dechunk_rc("5\r\nhello\rX0\r\n\r\n"), -1);
    CHECK_EQ_INT(dechunk_rc("5\r\nhello0\r\n\r\n"), -1);
}

UNIT_TEST(test_reject_chunk_bare_lf)
{
    CHECK_EQ_INT(dechunk_rc("5\nhello\r\n0\r\n\r\n"), -1);
    CHECK_EQ_INT(dechunk_rc("5\r\nhello\n0\r\n\r\n"), -1);
    CHECK_EQ_INT(dechunk_rc("5\r\nhello\r\n0\r\n\n"), -1);
    CHECK_EQ_INT(dechunk_rc("5\r\nhello\r\n0\r\nT: v\n\r\n"), -1);
    CHECK_EQ_INT(dechunk_rc("5;ext\nhello\r\n0\r\n\r\n"), -1);
}

UNIT_TEST(test_reject_chunk_bare_cr)
{
    CHECK_EQ_INT(dechunk_rc("5\rhello\r\n0\r\n\r\n"), -1);
    CHECK_EQ_INT(dechunk_rc("0\r\n\rX"), -1);
}

UNIT_TEST(test_reject_chunk_extension_too_long)
{
    char s[6000];
    size_t n = 0;
    s[n++] = '1';
    s[n++] = ';';
    while (n < 4200)
        s[n++] = 'a';
    memcpy(s + n, "\r\nx\r\n0\r\n\r\n", 11);
    CHECK_EQ_INT(dechunk_rc(s), -1);
    s[4000] = '\0'; /* a 3998-byte extension is fine */
    strcat(s, "\r\nx\r\n0\r\n\r\n");
    CHECK_EQ_INT(dechunk_rc(s), 1);
}

UNIT_TEST(test_reject_chunk_extension_ctl)
{
    CHECK_EQ_INT(dechunk_rc("1;a\x01\r\nx\r\n0\r\n\r\n"), -1);
}

UNIT_TEST(test_reject_trailer_too_long)
{
    static char s[H1_CHUNKED_MAX_TRAILER + 200];
    size_t n = 0;
    memcpy(s, "0\r\nX: ", 6);
    n = 6;
    while (n < H1_CHUNKED_MAX_TRAILER + 100)
        s[n++] = 'v';
    memcpy(s + n, "\r\n\r\n", 5);
    CHECK_EQ_INT(dechunk_rc(s), -1);
}

UNIT_TEST(test_reject_trailer_malformed)
{
    CHECK_EQ_INT(dechunk_rc("0\r\nX: a\r\n b\r\n\r\n"), -1);  /* obs-fold */
    CHECK_EQ_INT(dechunk_rc("0\r\nX : a\r\n\r\n"), -1);       /* space before colon */
    CHECK_EQ_INT(dechunk_rc("0\r\nNoColon\r\n\r\n"), -1);
    CHECK_EQ_INT(dechunk_rc("0\r\nX: a\x7f\r\n\r\n"), -1);
}

UNIT_TEST(test_chunked_error_is_sticky)
{
    struct h1_chunked st = { 0 };
    char a[] = "zz", b[] = "0\r\n\r\n";
    size_t c, p;
    CHECK_EQ_INT(h1_chunked_decode(&st, a, 2, &c, &p), -1);
    CHECK_EQ_INT(h1_chunked_decode(&st, b, 5, &c, &p), -1);
}

UNIT_TEST(test_chunk_header_format)
{
    char out[18];
    size_t n = h1_chunk_header(out, 0);
    CHECK(n == 3 && memcmp(out, "0\r\n", 3) == 0);
    n = h1_chunk_header(out, 0x1a2);
    CHECK(n == 5 && memcmp(out, "1a2\r\n", 5) == 0);
    n = h1_chunk_header(out, UINT64_MAX);
    CHECK(n == 18 && memcmp(out, "ffffffffffffffff\r\n", 18) == 0);
}

UNIT_TEST(test_chunk_header_roundtrip)
{
    static const uint64_t sizes[] = { 1, 15, 16, 255, 4096, 65535, 1000000 };
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        char line[32];
        size_t n = h1_chunk_header(line, sizes[i]);
        struct h1_chunked st = { 0 };
        size_t c, p;
        CHECK_EQ_INT(h1_chunked_decode(&st, line, n, &c, &p), 0);
        CHECK_EQ_INT(c, n);
        CHECK_EQ_INT(p, 0);
    }
}

UNIT_MAIN()
