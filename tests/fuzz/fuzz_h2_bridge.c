/* libFuzzer target: the HTTP/2 <-> HTTP/1.1 bridge.
 * Byte 0 picks the mode, byte 1 the flags; the rest is the input.
 *  0-2  an HTTP/2 header block (request, response, trailers) as fields [nlen][vlen][name][value]:
 *       when it is accepted, its HTTP/1.1 rendering has CR only in CRLF, and a request or response
 *       head that the strict h1 parser takes is exactly one head (nothing smuggled after it)
 *  3-4  an HTTP/1.1 request / response head -> nv array: names lowercase, nothing
 *       connection-specific left, every pointer inside the array's own memory
 *  5    trailer lines -> nv array
 *  6    a body (kind from the flags) decoded with small output room, against one whole decode */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/h2_bridge.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(void) { abort(); }

static const struct h1_limits lim = { 8192, 65536, 100 };

static void check_crlf_only(const struct sbuf *s)
{
    for (size_t i = 0; i < s->len; i++) {
        if (s->p[i] == '\r' && (i + 1 >= s->len || s->p[i + 1] != '\n'))
            fail();
        if (s->p[i] == '\n' && (i == 0 || s->p[i - 1] != '\r'))
            fail();
        if (s->p[i] == '\0')
            fail();
    }
}

static void fuzz_block(enum h2b_block kind, unsigned flags, const uint8_t *p, size_t n)
{
    struct h2b_head h;
    h2b_head_init(&h, kind, flags & 4 ? 256 : 65536);
    size_t pos = 0;
    while (pos + 2 <= n) {
        size_t nl = p[pos], vl = p[pos + 1];
        pos += 2;
        if (nl + vl > n - pos)
            break;
        h2b_head_add(&h, p + pos, nl, p + pos + nl, vl);
        pos += nl + vl;
    }
    struct sbuf out = { 0 };
    int r = h2b_head_finish(&h, flags & 3, &out);
    if (r == 0) {
        check_crlf_only(&out);
        struct http_header hdrs[128];
        struct http_msg m = { .headers = hdrs, .max_headers = 128 };
        int pr = 0;
        if (kind == H2B_REQUEST)
            pr = h1_parse_request(out.p, out.len, &lim, &m);
        else if (kind == H2B_RESPONSE)
            pr = h1_parse_response(out.p, out.len, &lim, &m);
        if (pr > 0 && (size_t)pr != out.len)
            fail();
        if (pr > 0 && kind == H2B_RESPONSE && m.status != h.status)
            fail();
        if (pr > 0 && kind == H2B_REQUEST && m.method_id != h.method_id)
            fail();
    }
    sbuf_free(&out);
    h2b_head_free(&h);
}

static void check_nv(const struct h2b_nv *nv)
{
    for (size_t i = 0; i < nv->n; i++) {
        const nghttp2_nv *f = &nv->nv[i];
        if ((char *)f->name < nv->mem || (char *)f->value < nv->mem)
            fail();
        for (size_t k = 0; k < f->namelen; k++)
            if (f->name[k] >= 'A' && f->name[k] <= 'Z')
                fail();
        static const char *const banned[] = { "connection", "keep-alive", "transfer-encoding",
                                              "upgrade", "proxy-connection", "host" };
        for (size_t b = 0; b < sizeof banned / sizeof banned[0]; b++)
            if (f->namelen == strlen(banned[b]) && memcmp(f->name, banned[b], f->namelen) == 0)
                fail();
        if (f->namelen == 2 && memcmp(f->name, "te", 2) == 0 &&
            (f->valuelen != 8 || memcmp(f->value, "trailers", 8) != 0))
            fail();
    }
}

static void fuzz_nv(int mode, const uint8_t *p, size_t n)
{
    struct http_header hdrs[128];
    struct http_msg m = { .headers = hdrs, .max_headers = 128 };
    struct h2b_nv nv;
    if (mode == 3 && h1_parse_request((const char *)p, n, &lim, &m) > 0 &&
        m.method_id != HTTP_METHOD_CONNECT && h2b_nv_request(&m, "https", &nv) == 0) {
        check_nv(&nv);
        h2b_nv_free(&nv);
    }
    if (mode == 4 && h1_parse_response((const char *)p, n, &lim, &m) > 0 &&
        h2b_nv_response(&m, &nv) == 0) {
        check_nv(&nv);
        h2b_nv_free(&nv);
    }
    if (mode == 5 && h2b_nv_trailers((const char *)p, n, &nv) == 0) {
        check_nv(&nv);
        h2b_nv_free(&nv);
    }
}

static void fuzz_body(unsigned flags, const uint8_t *p, size_t n)
{
    enum h1_body_kind kind = (enum h1_body_kind)(flags % 4);
    uint64_t length = flags / 4 * 7;
    struct sbuf t1 = { 0 }, t2 = { 0 };
    struct h2b_body whole, small;
    h2b_body_init(&whole, kind, length, &t1);
    h2b_body_init(&small, kind, length, &t2);
    char *o1 = malloc(n + 1), *o2 = malloc(n + 1);
    size_t c1, p1;
    int r1 = h2b_body_decode(&whole, (const char *)p, n, o1, n, &c1, &p1);
    if (c1 > n || p1 > c1)
        fail();
    size_t pos = 0, got = 0, room = 1 + flags % 13;
    int r2 = 0;
    for (;;) {
        size_t c, q;
        r2 = h2b_body_decode(&small, (const char *)p + pos, n - pos, o2 + got, room, &c, &q);
        if (c > n - pos || q > c || q > room)
            fail();
        pos += c;
        got += q;
        if (r2 != 0 || c == 0)
            break;
    }
    if (r1 != r2 || (r1 >= 0 && (c1 != pos || p1 != got || memcmp(o1, o2, got) != 0)))
        fail();
    if (r1 == 1 && (t1.len != t2.len || memcmp(t1.p, t2.p, t1.len) != 0))
        fail();
    free(o1);
    free(o2);
    sbuf_free(&t1);
    sbuf_free(&t2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    int mode = data[0] % 7;
    unsigned flags = data[1];
    if (mode <= 2)
        fuzz_block((enum h2b_block)mode, flags, data + 2, size - 2);
    else if (mode <= 5)
        fuzz_nv(mode, data + 2, size - 2);
    else
        fuzz_body(flags, data + 2, size - 2);
    return 0;
}
