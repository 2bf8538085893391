/* Unit tests of the HTTP/2 <-> HTTP/1.1 bridge: header blocks to heads (and back through the
 * strict h1 parser), heads to nghttp2_nv arrays, the body decoder and chunk framing. */
#include "unit.h"

#include "http/h2_bridge.h"

struct field {
    const char *name, *value;
};

#define F(n, v) { n, v }
#define END { NULL, NULL }

/* Feeds FIELDS into a block of KIND; returns the first error of add or finish, with the head in
 * OUT (NUL-terminated when it succeeded). */
static int block(enum h2b_block kind, uint32_t max_list, const struct field *fields, unsigned flags,
                 struct sbuf *out, struct h2b_head *keep)
{
    struct h2b_head h;
    h2b_head_init(&h, kind, max_list);
    int r = 0;
    for (const struct field *f = fields; f->name && r == 0; f++)
        r = h2b_head_add(&h, (const uint8_t *)f->name, strlen(f->name), (const uint8_t *)f->value,
                         strlen(f->value));
    if (r == 0)
        r = h2b_head_finish(&h, flags, out);
    sbuf_append(out, "", 1);
    if (keep)
        *keep = h;
    else
        h2b_head_free(&h);
    return r;
}

static int req_block(const struct field *fields, unsigned flags, struct sbuf *out)
{
    return block(H2B_REQUEST, 65536, fields, flags, out, NULL);
}

static int req_error(const struct field *fields)
{
    struct sbuf out = { 0 };
    int r = req_block(fields, 0, &out);
    sbuf_free(&out);
    return r;
}

UNIT_TEST(request_block_becomes_h1_head)
{
    struct field f[] = { F(":method", "GET"), F(":scheme", "https"), F(":authority", "a.test:8443"),
                         F(":path", "/p?q=1"), F("user-agent", "x/1"), F("accept", "*/*"), END };
    struct sbuf out = { 0 };
    CHECK_EQ_INT(req_block(f, 0, &out), 0);
    CHECK(strcmp(out.p, "GET /p?q=1 HTTP/1.1\r\nhost: a.test:8443\r\nuser-agent: x/1\r\n"
                        "accept: */*\r\n\r\n") == 0);
    /* and the strict parser takes it */
    struct http_header hdrs[16];
    struct http_msg m = { .headers = hdrs, .max_headers = 16 };
    struct h1_limits lim = { 8192, 65536, 100 };
    CHECK(h1_parse_request(out.p, out.len - 1, &lim, &m) > 0);
    CHECK(m.method_id == HTTP_METHOD_GET);
    CHECK(str_eq(m.host, STR_LIT("a.test:8443")));
    sbuf_free(&out);
}

UNIT_TEST(request_host_field_when_no_authority)
{
    struct field f[] = { F(":method", "GET"), F(":scheme", "http"), F(":path", "/"),
                         F("host", "h.test"), END };
    struct sbuf out = { 0 };
    CHECK_EQ_INT(req_block(f, 0, &out), 0);
    CHECK(strcmp(out.p, "GET / HTTP/1.1\r\nhost: h.test\r\n\r\n") == 0);
    sbuf_free(&out);
}

UNIT_TEST(request_host_must_match_authority)
{
    struct field same[] = { F(":method", "GET"), F(":scheme", "http"), F(":path", "/"),
                            F(":authority", "A.test"), F("host", "a.test"), END };
    CHECK_EQ_INT(req_error(same), 0);
    struct field differ[] = { F(":method", "GET"), F(":scheme", "http"), F(":path", "/"),
                              F(":authority", "a.test"), F("host", "b.test"), END };
    CHECK_EQ_INT(req_error(differ), -400);
    struct field none[] = { F(":method", "GET"), F(":scheme", "http"), F(":path", "/"), END };
    CHECK_EQ_INT(req_error(none), -400);
}

UNIT_TEST(request_body_framing)
{
    struct field nolen[] = { F(":method", "POST"), F(":scheme", "http"), F(":path", "/u"),
                             F(":authority", "a"), END };
    struct sbuf out = { 0 };
    struct h2b_head h;
    CHECK_EQ_INT(block(H2B_REQUEST, 0, nolen, H2B_F_BODY, &out, &h), 0);
    CHECK(strcmp(out.p, "POST /u HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n") == 0);
    CHECK(h.body_chunked);
    CHECK(h.method_id == HTTP_METHOD_POST);
    h2b_head_free(&h);
    sbuf_reset(&out);

    struct field len[] = { F(":method", "POST"), F(":scheme", "http"), F(":path", "/u"),
                           F(":authority", "a"), F("content-length", "5"), END };
    CHECK_EQ_INT(block(H2B_REQUEST, 0, len, H2B_F_BODY, &out, &h), 0);
    CHECK(strcmp(out.p, "POST /u HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\n\r\n") == 0);
    CHECK(!h.body_chunked);
    CHECK_EQ_INT(h.content_length, 5);
    h2b_head_free(&h);
    sbuf_reset(&out);

    /* END_STREAM on the headers with a body announced is malformed (RFC 9113 §8.1.1) */
    CHECK_EQ_INT(block(H2B_REQUEST, 0, len, 0, &out, NULL), -400);
    sbuf_reset(&out);
    /* no END_STREAM, no body announced: chunked (the stream's end closes it) */
    struct field get[] = { F(":method", "GET"), F(":scheme", "http"), F(":path", "/"),
                           F(":authority", "a"), END };
    CHECK_EQ_INT(block(H2B_REQUEST, 0, get, 0, &out, NULL), 0);
    CHECK(strstr(out.p, "transfer-encoding") == NULL);
    sbuf_free(&out);
}

UNIT_TEST(request_cookie_crumbs_joined)
{
    struct field f[] = { F(":method", "GET"), F(":scheme", "http"), F(":path", "/"),
                         F(":authority", "a"), F("cookie", "a=1"), F("x", "y"), F("cookie", "b=2"),
                         END };
    struct sbuf out = { 0 };
    CHECK_EQ_INT(req_block(f, 0, &out), 0);
    CHECK(strcmp(out.p, "GET / HTTP/1.1\r\nhost: a\r\nx: y\r\ncookie: a=1; b=2\r\n\r\n") == 0);
    sbuf_free(&out);
}

UNIT_TEST(request_pseudo_header_rules)
{
    struct field no_method[] = { F(":scheme", "http"), F(":path", "/"), F(":authority", "a"), END };
    CHECK_EQ_INT(req_error(no_method), -400);
    struct field no_path[] = { F(":method", "GET"), F(":scheme", "http"), F(":authority", "a"), END };
    CHECK_EQ_INT(req_error(no_path), -400);
    struct field no_scheme[] = { F(":method", "GET"), F(":path", "/"), F(":authority", "a"), END };
    CHECK_EQ_INT(req_error(no_scheme), -400);
    struct field dup[] = { F(":method", "GET"), F(":method", "GET"), F(":scheme", "http"),
                           F(":path", "/"), F(":authority", "a"), END };
    CHECK_EQ_INT(req_error(dup), -400);
    struct field late[] = { F(":method", "GET"), F(":scheme", "http"), F("x", "1"), F(":path", "/"),
                            F(":authority", "a"), END };
    CHECK_EQ_INT(req_error(late), -400);
    struct field unknown[] = { F(":method", "GET"), F(":scheme", "http"), F(":path", "/"),
                               F(":authority", "a"), F(":protocol", "websocket"), END };
    CHECK_EQ_INT(req_error(unknown), -400);
    struct field status[] = { F(":status", "200"), END };
    CHECK_EQ_INT(req_error(status), -400);
    struct field connect[] = { F(":method", "CONNECT"), F(":authority", "a:443"), END };
    CHECK_EQ_INT(req_error(connect), -400);
    struct field star[] = { F(":method", "OPTIONS"), F(":scheme", "http"), F(":path", "*"),
                            F(":authority", "a"), END };
    CHECK_EQ_INT(req_error(star), 0);
    struct field relative[] = { F(":method", "GET"), F(":scheme", "http"), F(":path", "p"),
                                F(":authority", "a"), END };
    CHECK_EQ_INT(req_error(relative), -400);
}

/* Nothing a client sends may reshape the request line or add a line. */
UNIT_TEST(request_injection_refused)
{
    struct field sp_path[] = { F(":method", "GET"), F(":scheme", "http"), F(":path", "/a HTTP/1.1"),
                               F(":authority", "a"), END };
    CHECK_EQ_INT(req_error(sp_path), -400);
    struct field sp_method[] = { F(":method", "GET /x"), F(":scheme", "http"), F(":path", "/"),
                                 F(":authority", "a"), END };
    CHECK_EQ_INT(req_error(sp_method), -400);
    struct field crlf_value[] = { F(":method", "GET"), F(":scheme", "http"), F(":path", "/"),
                                  F(":authority", "a"), F("x", "1\r\nevil: 2"), END };
    CHECK_EQ_INT(req_error(crlf_value), -400);
    struct field lf_auth[] = { F(":method", "GET"), F(":scheme", "http"), F(":path", "/"),
                               F(":authority", "a\nb"), END };
    CHECK_EQ_INT(req_error(lf_auth), -400);
    struct field userinfo[] = { F(":method", "GET"), F(":scheme", "http"), F(":path", "/"),
                                F(":authority", "u@a"), END };
    CHECK_EQ_INT(req_error(userinfo), -400);
    struct field upper[] = { F(":method", "GET"), F(":scheme", "http"), F(":path", "/"),
                             F(":authority", "a"), F("X-Up", "1"), END };
    CHECK_EQ_INT(req_error(upper), -400);
    struct field colon[] = { F(":method", "GET"), F(":scheme", "http"), F(":path", "/"),
                             F(":authority", "a"), F("a:b", "1"), END };
    CHECK_EQ_INT(req_error(colon), -400);
    struct field ws[] = { F(":method", "GET"), F(":scheme", "http"), F(":path", "/"),
                          F(":authority", "a"), F("x", " 1"), END };
    CHECK_EQ_INT(req_error(ws), -400);
    /* a NUL inside a value */
    struct h2b_head h;
    h2b_head_init(&h, H2B_REQUEST, 0);
    CHECK_EQ_INT(h2b_head_add(&h, (const uint8_t *)"x", 1, (const uint8_t *)"a\0b", 3), -400);
    h2b_head_free(&h);
}

UNIT_TEST(connection_specific_fields_malformed)
{
    const char *names[] = { "connection", "keep-alive", "proxy-connection", "transfer-encoding",
                            "upgrade" };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        struct field f[] = { F(":method", "GET"), F(":scheme", "http"), F(":path", "/"),
                             F(":authority", "a"), { names[i], "x" }, END };
        CHECK_EQ_INT(req_error(f), -400);
    }
    struct field te_ok[] = { F(":method", "GET"), F(":scheme", "http"), F(":path", "/"),
                             F(":authority", "a"), F("te", "trailers"), END };
    CHECK_EQ_INT(req_error(te_ok), 0);
    struct field te_bad[] = { F(":method", "GET"), F(":scheme", "http"), F(":path", "/"),
                              F(":authority", "a"), F("te", "gzip"), END };
    CHECK_EQ_INT(req_error(te_bad), -400);
}

UNIT_TEST(header_list_size_bounded)
{
    /* ":method"+"GET"+32 = 42 ... the bound counts name + value + 32 per field (§6.5.2) */
    struct field f[] = { F(":method", "GET"), F(":scheme", "http"), F(":path", "/"),
                         F(":authority", "a"), END };
    struct sbuf out = { 0 };
    uint32_t exact = (7 + 3 + 32) + (7 + 4 + 32) + (5 + 1 + 32) + (10 + 1 + 32);
    CHECK_EQ_INT(block(H2B_REQUEST, exact, f, 0, &out, NULL), 0);
    sbuf_reset(&out);
    CHECK_EQ_INT(block(H2B_REQUEST, exact - 1, f, 0, &out, NULL), -431);
    sbuf_free(&out);
    /* the error is sticky */
    struct h2b_head h;
    h2b_head_init(&h, H2B_REQUEST, 40);
    CHECK_EQ_INT(h2b_head_add(&h, (const uint8_t *)"x", 1, (const uint8_t *)"0123456789", 10), -431);
    CHECK_EQ_INT(h2b_head_add(&h, (const uint8_t *)"y", 1, (const uint8_t *)"1", 1), -431);
    struct sbuf o2 = { 0 };
    CHECK_EQ_INT(h2b_head_finish(&h, 0, &o2), -431);
    h2b_head_free(&h);
    sbuf_free(&o2);
}

UNIT_TEST(response_block_framing)
{
    struct sbuf out = { 0 };
    struct field ok[] = { F(":status", "200"), F("content-type", "text/plain"), END };
    struct h2b_head h;
    CHECK_EQ_INT(block(H2B_RESPONSE, 0, ok, H2B_F_BODY, &out, &h), 0);
    CHECK(strcmp(out.p, "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n"
                        "transfer-encoding: chunked\r\n\r\n") == 0);
    CHECK(h.body_chunked);
    CHECK_EQ_INT(h.status, 200);
    h2b_head_free(&h);
    sbuf_reset(&out);
    CHECK_EQ_INT(block(H2B_RESPONSE, 0, ok, 0, &out, NULL), 0);
    CHECK(strcmp(out.p, "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 0\r\n\r\n") == 0);
    sbuf_reset(&out);
    CHECK_EQ_INT(block(H2B_RESPONSE, 0, ok, H2B_F_HEAD, &out, NULL), 0);
    CHECK(strcmp(out.p, "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n") == 0);
    sbuf_reset(&out);
    struct field cl[] = { F(":status", "404"), F("content-length", "3"), END };
    CHECK_EQ_INT(block(H2B_RESPONSE, 0, cl, H2B_F_BODY, &out, NULL), 0);
    CHECK(strcmp(out.p, "HTTP/1.1 404 Not Found\r\ncontent-length: 3\r\n\r\n") == 0);
    sbuf_reset(&out);
    struct field nc[] = { F(":status", "304"), END };
    CHECK_EQ_INT(block(H2B_RESPONSE, 0, nc, 0, &out, NULL), 0);
    CHECK(strcmp(out.p, "HTTP/1.1 304 Not Modified\r\n\r\n") == 0);
    sbuf_reset(&out);
    struct field cont[] = { F(":status", "100"), END };
    CHECK_EQ_INT(block(H2B_RESPONSE, 0, cont, H2B_F_BODY, &out, NULL), 0);
    CHECK(strcmp(out.p, "HTTP/1.1 100 Continue\r\n\r\n") == 0);
    sbuf_free(&out);
}

UNIT_TEST(response_pseudo_rules)
{
    const char *bad[] = { "101", "99", "1000", "20x", "" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct field f[] = { F(":status", bad[i]), END };
        struct sbuf out = { 0 };
        CHECK_EQ_INT(block(H2B_RESPONSE, 0, f, 0, &out, NULL), -400);
        sbuf_free(&out);
    }
    struct field none[] = { F("x", "1"), END };
    struct sbuf out = { 0 };
    CHECK_EQ_INT(block(H2B_RESPONSE, 0, none, 0, &out, NULL), -400);
    sbuf_reset(&out);
    struct field method[] = { F(":status", "200"), F(":method", "GET"), END };
    CHECK_EQ_INT(block(H2B_RESPONSE, 0, method, 0, &out, NULL), -400);
    sbuf_free(&out);
}

UNIT_TEST(trailers_block_is_chunked_end)
{
    struct sbuf out = { 0 };
    struct field t[] = { F("grpc-status", "0"), F("grpc-message", "ok"), F("content-length", "1"), END };
    CHECK_EQ_INT(block(H2B_TRAILERS, 0, t, 0, &out, NULL), 0);
    CHECK(strcmp(out.p, "0\r\ngrpc-status: 0\r\ngrpc-message: ok\r\n\r\n") == 0);
    sbuf_reset(&out);
    struct field pseudo[] = { F(":status", "200"), END };
    CHECK_EQ_INT(block(H2B_TRAILERS, 0, pseudo, 0, &out, NULL), -400);
    sbuf_reset(&out);
    struct field empty[] = { END };
    CHECK_EQ_INT(block(H2B_TRAILERS, 0, empty, 0, &out, NULL), 0);
    CHECK(strcmp(out.p, "0\r\n\r\n") == 0);
    sbuf_free(&out);
}

/* ------------------------------------------------------------------------------------------ */

static struct http_header hdrs[32];
static const struct h1_limits lim = { 8192, 65536, 100 };

static bool nv_is(const nghttp2_nv *nv, const char *name, const char *value)
{
    return nv->namelen == strlen(name) && memcmp(nv->name, name, nv->namelen) == 0 &&
           nv->valuelen == strlen(value) && memcmp(nv->value, value, nv->valuelen) == 0;
}

UNIT_TEST(h1_request_to_nv)
{
    const char *s = "POST /up?x=1 HTTP/1.1\r\nHost: b.test\r\nConnection: keep-alive, X-Hop\r\n"
                    "X-Hop: 1\r\nKeep-Alive: 5\r\nTE: trailers, deflate\r\nContent-Type: a/b\r\n"
                    "Transfer-Encoding: chunked\r\nProxy-Connection: x\r\n\r\n";
    struct http_msg m = { .headers = hdrs, .max_headers = 32 };
    CHECK(h1_parse_request(s, strlen(s), &lim, &m) > 0);
    struct h2b_nv nv;
    CHECK_EQ_INT(h2b_nv_request(&m, "https", &nv), 0);
    CHECK_EQ_INT(nv.n, 6);
    if (nv.n == 6) {
        CHECK(nv_is(&nv.nv[0], ":method", "POST"));
        CHECK(nv_is(&nv.nv[1], ":scheme", "https"));
        CHECK(nv_is(&nv.nv[2], ":authority", "b.test"));
        CHECK(nv_is(&nv.nv[3], ":path", "/up?x=1"));
        CHECK(nv_is(&nv.nv[4], "content-type", "a/b"));
        CHECK(nv_is(&nv.nv[5], "te", "trailers"));
    }
    h2b_nv_free(&nv);
}

UNIT_TEST(h1_request_absolute_form_authority)
{
    const char *s = "GET http://abs.test:81/z HTTP/1.1\r\nHost: abs.test:81\r\n\r\n";
    struct http_msg m = { .headers = hdrs, .max_headers = 32 };
    CHECK(h1_parse_request(s, strlen(s), &lim, &m) > 0);
    struct h2b_nv nv;
    CHECK_EQ_INT(h2b_nv_request(&m, "http", &nv), 0);
    CHECK_EQ_INT(nv.n, 4);
    if (nv.n == 4) {
        CHECK(nv_is(&nv.nv[2], ":authority", "abs.test:81"));
        CHECK(nv_is(&nv.nv[3], ":path", "/z"));
    }
    h2b_nv_free(&nv);
}

UNIT_TEST(h1_response_to_nv)
{
    const char *s = "HTTP/1.1 201 Created\r\nContent-Length: 2\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
                    "Connection: close\r\nUpgrade: h2c\r\n\r\n";
    struct http_msg m = { .headers = hdrs, .max_headers = 32 };
    CHECK(h1_parse_response(s, strlen(s), &lim, &m) > 0);
    struct h2b_nv nv;
    CHECK_EQ_INT(h2b_nv_response(&m, &nv), 0);
    CHECK_EQ_INT(nv.n, 4);
    if (nv.n == 4) {
        CHECK(nv_is(&nv.nv[0], ":status", "201"));
        CHECK(nv_is(&nv.nv[1], "content-length", "2"));
        CHECK(nv_is(&nv.nv[2], "set-cookie", "a=1"));
        CHECK(nv_is(&nv.nv[3], "set-cookie", "b=2"));
    }
    h2b_nv_free(&nv);
}

UNIT_TEST(trailer_lines_to_nv)
{
    const char *l = "Grpc-Status: 0\r\ngrpc-message:  fine \r\nContent-Length: 3\r\nx-e:\r\n";
    struct h2b_nv nv;
    CHECK_EQ_INT(h2b_nv_trailers(l, strlen(l), &nv), 0);
    CHECK_EQ_INT(nv.n, 3);
    if (nv.n == 3) {
        CHECK(nv_is(&nv.nv[0], "grpc-status", "0"));
        CHECK(nv_is(&nv.nv[1], "grpc-message", "fine"));
        CHECK(nv_is(&nv.nv[2], "x-e", ""));
    }
    h2b_nv_free(&nv);
    CHECK_EQ_INT(h2b_nv_trailers("", 0, &nv), 0);
    CHECK_EQ_INT(nv.n, 0);
    h2b_nv_free(&nv);
    CHECK_EQ_INT(h2b_nv_trailers("nocolon\r\n", 9, &nv), -1);
    CHECK_EQ_INT(h2b_nv_trailers("a: b", 4, &nv), -1);
    CHECK_EQ_INT(h2b_nv_trailers("a b: c\r\n", 8, &nv), -1);
    CHECK_EQ_INT(h2b_nv_trailers("a: b\n", 5, &nv), -1);
}

/* ------------------------------------------------------------------------------------------ */

UNIT_TEST(body_length_and_close)
{
    struct h2b_body b;
    char out[16];
    size_t c, p;
    h2b_body_init(&b, H1_BODY_LENGTH, 5, NULL);
    CHECK_EQ_INT(h2b_body_decode(&b, "abc", 3, out, sizeof out, &c, &p), 0);
    CHECK(c == 3 && p == 3 && memcmp(out, "abc", 3) == 0);
    CHECK_EQ_INT(h2b_body_decode(&b, "deNEXT", 6, out, 1, &c, &p), 0); /* room for one byte */
    CHECK(c == 1 && p == 1 && out[0] == 'd');
    CHECK_EQ_INT(h2b_body_decode(&b, "eNEXT", 5, out, sizeof out, &c, &p), 1);
    CHECK(c == 1 && p == 1 && out[0] == 'e' && b.ended);
    CHECK_EQ_INT(h2b_body_decode(&b, "NEXT", 4, out, sizeof out, &c, &p), 1);
    CHECK(c == 0 && p == 0);

    h2b_body_init(&b, H1_BODY_NONE, 0, NULL);
    CHECK(b.ended);
    h2b_body_init(&b, H1_BODY_LENGTH, 0, NULL);
    CHECK(b.ended);

    h2b_body_init(&b, H1_BODY_CLOSE, 0, NULL);
    CHECK_EQ_INT(h2b_body_decode(&b, "xyz", 3, out, sizeof out, &c, &p), 0);
    CHECK(c == 3 && p == 3);
    CHECK_EQ_INT(h2b_body_eof(&b), 1);
    h2b_body_init(&b, H1_BODY_LENGTH, 4, NULL);
    CHECK_EQ_INT(h2b_body_eof(&b), -1);
}

UNIT_TEST(body_chunked_with_trailers)
{
    const char *in = "3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\ngrpc-status: 0\r\nx: y\r\n\r\nNEXT";
    struct sbuf tr = { 0 };
    struct h2b_body b;
    h2b_body_init(&b, H1_BODY_CHUNKED, 0, &tr);
    char out[64];
    size_t c, p, pos = 0, got = 0;
    char data[16];
    int r = 0;
    /* fed with little room at a time, as a stream buffer that fills up */
    while (r == 0) {
        r = h2b_body_decode(&b, in + pos, strlen(in) - pos, out, 4, &c, &p);
        memcpy(data + got, out, p);
        got += p;
        pos += c;
        if (r == 0 && c == 0)
            break;
    }
    CHECK_EQ_INT(r, 1);
    CHECK(got == 5 && memcmp(data, "abcde", 5) == 0);
    CHECK(strcmp(in + pos, "NEXT") == 0);
    CHECK(tr.len == strlen("grpc-status: 0\r\nx: y\r\n") &&
          memcmp(tr.p, "grpc-status: 0\r\nx: y\r\n", tr.len) == 0);
    struct h2b_nv nv;
    CHECK_EQ_INT(h2b_nv_trailers(tr.p, tr.len, &nv), 0);
    CHECK_EQ_INT(nv.n, 2);
    h2b_nv_free(&nv);
    sbuf_free(&tr);

    h2b_body_init(&b, H1_BODY_CHUNKED, 0, NULL);
    CHECK_EQ_INT(h2b_body_decode(&b, "zz\r\n", 4, out, sizeof out, &c, &p), -1);
}

UNIT_TEST(chunk_framing_roundtrip)
{
    struct sbuf s = { 0 };
    h2b_chunk_append(&s, "hello", 5);
    h2b_chunk_append(&s, "", 0);
    char big[300];
    memset(big, 'x', sizeof big);
    h2b_chunk_append(&s, big, sizeof big);
    h2b_chunk_last(&s, "a: 1\r\n", 6);
    CHECK(memcmp(s.p, "5\r\nhello\r\n12c\r\n", 15) == 0);
    struct sbuf tr = { 0 };
    struct h2b_body b;
    h2b_body_init(&b, H1_BODY_CHUNKED, 0, &tr);
    char *out = malloc(s.len);
    size_t c, p;
    CHECK_EQ_INT(h2b_body_decode(&b, s.p, s.len, out, s.len, &c, &p), 1);
    CHECK_EQ_INT(c, s.len);
    CHECK_EQ_INT(p, 305);
    CHECK(tr.len == 6 && memcmp(tr.p, "a: 1\r\n", 6) == 0);
    free(out);
    sbuf_free(&s);
    sbuf_free(&tr);
    sbuf_append(&s, "", 0);
    h2b_chunk_last(&s, NULL, 0);
    CHECK(s.len == 5 && memcmp(s.p, "0\r\n\r\n", 5) == 0);
    sbuf_free(&s);
}

UNIT_MAIN();
