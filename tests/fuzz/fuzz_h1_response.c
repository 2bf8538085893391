/* libFuzzer target: h1_parse_response and h1_response_body_kind. Checks the head length, that
 * slices stay inside the head, framing facts, and agreement between prefixes and the whole. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/h1.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAXH 128
static const struct h1_limits lim = { 8192, 16384, 100 };

static void fail(void) { abort(); }

/* Parses an exact-size copy of BUF; slices point into *KEEP when given (caller frees). */
static int parse(const char *buf, size_t n, struct http_msg *m, struct http_header *h, char **keep)
{
    char *copy = malloc(n ? n : 1);
    if (n)
        memcpy(copy, buf, n);
    memset(m, 0x5a, sizeof(*m));
    m->headers = h;
    m->max_headers = MAXH;
    int rc = h1_parse_response(copy, n, &lim, m);
    if (keep)
        *keep = copy;
    else
        free(copy);
    return rc;
}

static void in_head(struct str s, const char *buf, size_t head)
{
    if (s.n && (s.p < buf || s.p + s.n > buf + head))
        fail();
}

static void check_kind(const struct http_msg *m)
{
    static const enum http_method methods[] = { HTTP_METHOD_GET, HTTP_METHOD_HEAD,
                                                HTTP_METHOD_POST, HTTP_METHOD_CONNECT };
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        enum h1_body_kind k = h1_response_body_kind(m, methods[i]);
        bool bodiless = methods[i] == HTTP_METHOD_HEAD || m->status < 200 || m->status == 204 ||
                        m->status == 304;
        if (bodiless && k != H1_BODY_NONE)
            fail();
        if (k == H1_BODY_CHUNKED && !m->chunked)
            fail();
        if (k == H1_BODY_LENGTH && m->content_length < 0)
            fail();
        if (k == H1_BODY_CLOSE && (m->chunked || m->content_length >= 0))
            fail();
    }
}

static void check_ok(const char *buf, size_t n, int rc, const struct http_msg *m)
{
    if ((size_t)rc > n || m->head_len != (uint32_t)rc || (uint32_t)rc > lim.max_header_bytes)
        fail();
    if (m->status < 100 || m->status > 599 || m->version_minor > 1 ||
        m->n_headers > lim.max_headers)
        fail();
    if (m->chunked && (m->content_length >= 0 || m->version_minor == 0))
        fail();
    in_head(m->reason, buf, rc);
    in_head(m->upgrade, buf, rc);
    for (uint32_t i = 0; i < m->n_headers; i++) {
        if (m->headers[i].name.n == 0)
            fail();
        in_head(m->headers[i].name, buf, rc);
        in_head(m->headers[i].value, buf, rc);
        for (size_t k = 0; k < m->headers[i].value.n; k++)
            if (m->headers[i].value.p[k] == '\r' || m->headers[i].value.p[k] == '\n')
                fail();
    }
    check_kind(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    static struct http_header h[MAXH];
    struct http_msg m;
    char *copy;
    int rc = parse(buf, size, &m, h, &copy);
    if (rc > 0)
        check_ok(copy, size, rc, &m);
    free(copy);
    if (rc > 0 && parse(buf, (size_t)rc, &m, h, NULL) != rc)
        fail();
    size_t cuts[2] = { size / 2, rc > 0 ? (size_t)rc - 1 : size / 3 };
    for (int i = 0; i < 2; i++) {
        if (cuts[i] >= size)
            continue;
        int prc = parse(buf, cuts[i], &m, h, NULL);
        if (prc != 0 && prc != rc)
            fail();
        if (rc > 0 && cuts[i] < (size_t)rc && prc != 0)
            fail();
    }
    return 0;
}
