/* libFuzzer target: h1_parse_request. The first input byte picks the limits, the rest is the
 * request. Beyond "no crash", checks the parser's contract: head length, slices inside the
 * buffer, framing facts consistent, and that prefixes of the input agree with the whole. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/h1.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAXH 128
static const struct h1_limits lims[4] = {
    { 8192, 65536, 100 }, { 32, 128, 4 }, { 64, 96, 8 }, { 1, 1, 1 },
};

static void fail(void) { abort(); }

/* Parses an exact-size copy of BUF (so any read past N is caught by ASan); the slices in M point
 * into *KEEP when KEEP is given (the caller frees it), else the copy is freed at once. */
static int parse(const char *buf, size_t n, const struct h1_limits *lim, struct http_msg *m,
                 struct http_header *h, char **keep)
{
    char *copy = malloc(n ? n : 1);
    if (n)
        memcpy(copy, buf, n);
    memset(m, 0xa5, sizeof(*m));
    m->headers = h;
    m->max_headers = MAXH;
    int rc = h1_parse_request(copy, n, lim, m);
    if (keep)
        *keep = copy;
    else
        free(copy);
    return rc;
}

static void in_head(struct str s, const char *buf, size_t head)
{
    if (s.n == 0)
        return;
    if (s.p < buf || s.p + s.n > buf + head)
        fail();
}

static void check_ok(const char *buf, size_t n, int rc, const struct h1_limits *lim,
                     struct http_msg *m)
{
    if ((size_t)rc > n || m->head_len != (uint32_t)rc || (uint32_t)rc > lim->max_header_bytes)
        fail();
    if (m->n_headers > lim->max_headers || m->n_headers > MAXH)
        fail();
    if (m->method.n == 0 || m->target.n == 0 || m->version_minor > 1)
        fail();
    if (m->target.n + m->method.n + 10 > lim->max_request_line)
        fail();
    in_head(m->method, buf, rc);
    in_head(m->target, buf, rc);
    in_head(m->host, buf, rc);
    in_head(m->upgrade, buf, rc);
    if (!(m->path.n == 1 && m->path.p[0] == '/'))
        in_head(m->path, buf, rc);
    if (m->chunked && m->content_length >= 0)
        fail();
    if (m->chunked && m->version_minor == 0)
        fail();
    for (uint32_t i = 0; i < m->n_headers; i++) {
        struct str nm = m->headers[i].name, v = m->headers[i].value;
        if (nm.n == 0)
            fail();
        in_head(nm, buf, rc);
        in_head(v, buf, rc);
        for (size_t k = 0; k < v.n; k++)
            if (v.p[k] == '\r' || v.p[k] == '\n' || v.p[k] == 0)
                fail();
        if (v.n && (v.p[0] == ' ' || v.p[v.n - 1] == ' ' || v.p[0] == '\t'))
            fail();
    }
    enum h1_body_kind k = h1_request_body_kind(m);
    if (k == H1_BODY_CLOSE || (k == H1_BODY_CHUNKED) != m->chunked)
        fail();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const struct h1_limits *lim = &lims[data[0] & 3];
    const char *buf = (const char *)data + 1;
    size_t n = size - 1;
    static struct http_header h[MAXH];
    struct http_msg m;

    char *copy;
    int rc = parse(buf, n, lim, &m, h, &copy);
    if (rc > 0)
        check_ok(copy, n, rc, lim, &m);
    free(copy);
    if (rc > 0) {
        if (parse(buf, (size_t)rc, lim, &m, h, NULL) != rc) /* the head alone parses the same */
            fail();
    } else if (rc < 0 && rc != -400 && rc != -414 && rc != -431 && rc != -501 && rc != -505) {
        fail();
    }
    /* prefixes: incomplete (0) or already the same answer */
    size_t cuts[3] = { n / 2, n ? n - 1 : 0, rc > 0 ? (size_t)rc - 1 : n / 3 };
    for (int i = 0; i < 3; i++) {
        if (cuts[i] >= n)
            continue;
        int prc = parse(buf, cuts[i], lim, &m, h, NULL);
        if (prc != 0 && prc != rc)
            fail();
        if (rc > 0 && cuts[i] < (size_t)rc && prc != 0)
            fail();
    }
    return 0;
}
