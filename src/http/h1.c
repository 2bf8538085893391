/* h1: strict HTTP/1.1 head parsing (RFC 9112, RFC 9110) and the chunked codec.
 *
 * The head parsers make one forward pass over the bytes: each byte is classified once through
 * a table, each field is interpreted as soon as its CRLF has arrived, and the pass stops at the
 * first byte that proves the message invalid. Running out of bytes before the head is complete
 * returns 0, unless the bytes present already exceed a limit.
 *
 * Limits: a NULL `lim`, or a zero field in it, means the built-in default for that field
 * (8 KiB request line, 64 KiB head, 100 fields); every limit is capped at INT_MAX so a head
 * length always fits the int return value. */
#include "http/h1.h"

#include <limits.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------ */
/* Byte classes                                                                                */

enum {
    H1_C_TCHAR = 1,  /* RFC 9110 §5.6.2 tchar */
    H1_C_VCHAR = 2,  /* RFC 5234 VCHAR, 0x21..0x7e: request-target bytes */
    H1_C_FVAL = 4,   /* RFC 9110 §5.5 field-value bytes: HTAB, SP, VCHAR, obs-text */
    H1_C_HEX = 8,    /* HEXDIG */
    H1_C_HOST = 16,  /* RFC 3986 reg-name: unreserved, sub-delims but ',', and '%' */
};

static const uint8_t h1_cls[256] = {
     0,  0,  0,  0,  0,  0,  0,  0,  0,  4,  0,  0,  0,  0,  0,  0, /* 0x00 */
     0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0, /* 0x10 */
     4, 23,  6,  7, 23, 23, 23, 23, 22, 22, 23, 23,  6, 23, 23,  6, /* 0x20 */
    31, 31, 31, 31, 31, 31, 31, 31, 31, 31,  6, 22,  6, 22,  6,  6, /* 0x30 */
     6, 31, 31, 31, 31, 31, 31, 23, 23, 23, 23, 23, 23, 23, 23, 23, /* 0x40 */
    23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23,  6,  6,  6,  7, 23, /* 0x50 */
     7, 31, 31, 31, 31, 31, 31, 23, 23, 23, 23, 23, 23, 23, 23, 23, /* 0x60 */
    23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23,  6,  7,  6, 23,  0, /* 0x70 */
     4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4, /* 0x80 */
     4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4, /* 0x90 */
     4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4, /* 0xa0 */
     4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4, /* 0xb0 */
     4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4, /* 0xc0 */
     4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4, /* 0xd0 */
     4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4, /* 0xe0 */
     4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4, /* 0xf0 */
};

static inline bool h1_is(char c, uint8_t cls) { return (h1_cls[(unsigned char)c] & cls) != 0; }

/* First index in [i, end) whose byte is not of class CLS, or END. */
static inline size_t h1_span(const char *b, size_t i, size_t end, uint8_t cls)
{
    while (end - i >= 4 && h1_is(b[i], cls) && h1_is(b[i + 1], cls) && h1_is(b[i + 2], cls) &&
           h1_is(b[i + 3], cls))
        i += 4;
    while (i < end && h1_is(b[i], cls))
        i++;
    return i;
}

/* Word-at-a-time spans for the long runs (targets, field values): each test below is exact
 * for "some byte of the word is ...", so a flagged word is finished byte by byte. */
#define H1_ONES 0x0101010101010101ULL
#define H1_HIGH 0x8080808080808080ULL

static inline uint64_t h1_load8(const char *p)
{
    uint64_t w;
    memcpy(&w, p, 8);
    return w;
}

static inline uint64_t h1_has_less(uint64_t w, uint8_t n) /* some byte < n (n <= 128) */
{
    return (w - H1_ONES * n) & ~w & H1_HIGH;
}

static inline uint64_t h1_has_byte(uint64_t w, uint8_t b)
{
    uint64_t x = w ^ (H1_ONES * b);
    return (x - H1_ONES) & ~x & H1_HIGH;
}

/* Field-value bytes: everything but CTLs (HTAB is handled by the byte loop) and DEL. */
static size_t h1_span_fval(const char *b, size_t i, size_t end)
{
    while (end - i >= 8) {
        uint64_t w = h1_load8(b + i);
        if (h1_has_less(w, 0x20) | h1_has_byte(w, 0x7f))
            break;
        i += 8;
    }
    return h1_span(b, i, end, H1_C_FVAL);
}

/* Request-target bytes: VCHAR only. */
static size_t h1_span_vchar(const char *b, size_t i, size_t end)
{
    while (end - i >= 8) {
        uint64_t w = h1_load8(b + i);
        if (h1_has_less(w, 0x21) | h1_has_byte(w, 0x7f) | (w & H1_HIGH))
            break;
        i += 8;
    }
    return h1_span(b, i, end, H1_C_VCHAR);
}

static int h1_hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    return (c | 0x20) - 'a' + 10;
}

static bool h1_all_tchar(struct str s)
{
    return s.n > 0 && h1_span(s.p, 0, s.n, H1_C_TCHAR) == s.n;
}

/* ------------------------------------------------------------------------------------------ */
/* Parse context                                                                               */

#define H1_DEF_REQUEST_LINE 8192u
#define H1_DEF_HEADER_BYTES 65536u
#define H1_DEF_HEADERS 100u
#define H1_MAX_LEADING_CRLF 4 /* RFC 9112 §2.2: empty lines before the request line */

struct h1_ctx {
    const char *b;
    size_t len;         /* bytes available */
    size_t end;         /* scan bound: min(len, head limit) */
    size_t max_line;    /* request line limit (content, CRLF excluded) */
    uint32_t max_fields;
    bool request;
    /* framing facts gathered from the fields, checked when the head is complete */
    bool te_seen, cl_seen, keep_alive, host_from_target;
    uint8_t n_chunked;
    uint32_t n_host;
};

static uint32_t h1_limit(uint32_t v, uint32_t def)
{
    if (v == 0)
        v = def;
    return v > (uint32_t)INT_MAX ? (uint32_t)INT_MAX : v;
}

static void h1_ctx_init(struct h1_ctx *c, const char *buf, size_t len,
                        const struct h1_limits *lim, struct http_msg *m, bool request)
{
    memset(c, 0, sizeof(*c));
    c->b = buf;
    c->len = len;
    size_t hb = h1_limit(lim ? lim->max_header_bytes : 0, H1_DEF_HEADER_BYTES);
    c->end = len < hb ? len : hb;
    c->max_line = h1_limit(lim ? lim->max_request_line : 0, H1_DEF_REQUEST_LINE);
    c->max_fields = h1_limit(lim ? lim->max_headers : 0, H1_DEF_HEADERS);
    if (!m->headers)
        c->max_fields = 0;
    else if (m->max_headers < c->max_fields)
        c->max_fields = m->max_headers;
    c->request = request;

    struct http_header *h = m->headers;
    uint32_t mh = m->max_headers;
    memset(m, 0, sizeof(*m));
    m->headers = h;
    m->max_headers = mh;
    m->content_length = -1;
}

/* Out of bytes at the head bound: a limit was hit if bytes remain beyond it (RFC 6585 §5). */
static int h1_more(const struct h1_ctx *c)
{
    return c->end < c->len ? -431 : 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Start lines                                                                                 */

/* HTTP-version = "HTTP/" DIGIT "." DIGIT (RFC 9112 §2.3). Returns 1 when P holds a complete
 * supported version, 0 when AVAIL bytes are a valid prefix, -400 / -505 otherwise. */
static int h1_version(const char *p, size_t avail, uint8_t *minor)
{
    static const char pat[] = "HTTP/";
    size_t n = avail < 5 ? avail : 5;
    if (memcmp(p, pat, n) != 0)
        return -400;
    if (avail > 5 && (p[5] < '0' || p[5] > '9'))
        return -400;
    if (avail > 6 && p[6] != '.')
        return -400;
    if (avail > 7 && (p[7] < '0' || p[7] > '9'))
        return -400;
    if (avail < 8)
        return 0;
    if (p[5] != '1' || (p[7] != '0' && p[7] != '1'))
        return -505;
    *minor = (uint8_t)(p[7] - '0');
    return 1;
}

/* Expects CRLF at *I (bounded by the head limit); advances past it. */
static int h1_crlf(const struct h1_ctx *c, size_t *i)
{
    if (*i >= c->end)
        return h1_more(c);
    if (c->b[*i] != '\r') /* RFC 9112 §2.2: bare LF / bare CR / NUL are invalid */
        return -400;
    if (*i + 1 >= c->end)
        return h1_more(c);
    if (c->b[*i + 1] != '\n')
        return -400;
    *i += 2;
    return 1;
}

/* RFC 9112 §2.2: at most a few empty lines before the request line are ignored. */
static int h1_skip_empty_lines(const struct h1_ctx *c, size_t *i)
{
    for (int k = 0; k <= H1_MAX_LEADING_CRLF; k++) {
        if (*i >= c->end)
            return h1_more(c);
        if (c->b[*i] != '\r')
            return 1;
        if (k == H1_MAX_LEADING_CRLF)
            return -400;
        int rc = h1_crlf(c, i);
        if (rc <= 0)
            return rc;
    }
    return -400;
}

static enum http_method h1_method_id(struct str m)
{
#define H1_M(lit, id) if (m.n == sizeof(lit) - 1 && memcmp(m.p, lit, m.n) == 0) return id
    switch (m.n) {
    case 3: H1_M("GET", HTTP_METHOD_GET); H1_M("PUT", HTTP_METHOD_PUT); break;
    case 4: H1_M("HEAD", HTTP_METHOD_HEAD); H1_M("POST", HTTP_METHOD_POST); break;
    case 5: H1_M("PATCH", HTTP_METHOD_PATCH); H1_M("TRACE", HTTP_METHOD_TRACE); break;
    case 6: H1_M("DELETE", HTTP_METHOD_DELETE); break;
    case 7: H1_M("OPTIONS", HTTP_METHOD_OPTIONS); H1_M("CONNECT", HTTP_METHOD_CONNECT); break;
    default: break;
    }
#undef H1_M
    return HTTP_METHOD_OTHER;
}

/* request-line = method SP request-target SP HTTP-version CRLF (RFC 9112 §3). Content longer
 * than max_line -> -414 as soon as the bytes show it. */
static int h1_request_line(struct h1_ctx *c, size_t *pos, struct http_msg *m)
{
    size_t ls = *pos;
    size_t cend = ls + c->max_line < c->end ? ls + c->max_line : c->end;
    int over = ls + c->max_line <= c->end ? -414 : -431;
    const char *b = c->b;

    size_t i = h1_span(b, ls, cend, H1_C_TCHAR); /* method = token, RFC 9110 §9 */
    if (i == cend)
        return cend < c->len ? over : 0;
    if (b[i] != ' ' || i == ls)
        return -400;
    m->method = str_make(b + ls, i - ls);
    size_t ts = ++i;
    i = h1_span_vchar(b, i, cend); /* request-target: visible ASCII only, §3.2 */
    if (i == cend)
        return cend < c->len ? over : 0;
    if (b[i] != ' ' || i == ts)
        return -400;
    m->target = str_make(b + ts, i - ts);
    i++;
    int rc = h1_version(b + i, cend - i, &m->version_minor);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return cend < c->len ? over : 0;
    i += 8;
    rc = h1_crlf(c, &i);
    if (rc <= 0)
        return rc;
    *pos = i;
    return 1;
}

/* status-line = HTTP-version SP status-code SP [ reason-phrase ] CRLF (RFC 9112 §4); a missing
 * SP before an empty reason is tolerated. */
static int h1_status_line(struct h1_ctx *c, size_t *pos, struct http_msg *m)
{
    const char *b = c->b;
    size_t i = *pos;
    int rc = h1_version(b + i, c->end - i, &m->version_minor);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return h1_more(c);
    i += 8;
    int status = 0;
    for (int k = 0; k < 4; k++, i++) { /* SP 3DIGIT */
        if (i >= c->end)
            return h1_more(c);
        if (k == 0 ? b[i] != ' ' : (b[i] < '0' || b[i] > '9'))
            return -400;
        if (k > 0)
            status = status * 10 + (b[i] - '0');
    }
    if (status < 100 || status > 599) /* RFC 9110 §15 */
        return -400;
    m->status = status;
    if (i >= c->end)
        return h1_more(c);
    if (b[i] == ' ') {
        size_t rs = ++i;
        i = h1_span_fval(b, i, c->end);
        m->reason = str_make(b + rs, i - rs);
    }
    rc = h1_crlf(c, &i);
    if (rc <= 0)
        return rc;
    *pos = i;
    return 1;
}

/* ------------------------------------------------------------------------------------------ */
/* Request target and authority                                                                */

/* authority = host [ ":" port ] (RFC 3986 §3.2), without userinfo (RFC 9110 §4.2.4 deprecates
 * it; we reject it). host is an IP-literal "[...]" or a reg-name of unreserved / sub-delims /
 * pct-encoded bytes ("," excluded: a Host that looks like a list is refused). */
static bool h1_authority_ok(struct str a, bool need_host, bool need_port)
{
    size_t i = 0;
    if (a.n && a.p[0] == '[') {
        i = 1;
        while (i < a.n && (h1_is(a.p[i], H1_C_HEX) || a.p[i] == ':' || a.p[i] == '.'))
            i++;
        if (i >= a.n || a.p[i] != ']' || i == 1)
            return false;
        i++;
    } else {
        for (; i < a.n && h1_is(a.p[i], H1_C_HOST); i++)
            if (a.p[i] == '%' && (i + 2 >= a.n || !h1_is(a.p[i + 1], H1_C_HEX) ||
                                  !h1_is(a.p[i + 2], H1_C_HEX)))
                return false;
        if (need_host && i == 0)
            return false;
    }
    if (i == a.n)
        return !need_port;
    if (a.p[i] != ':')
        return false;
    size_t ps = ++i;
    while (i < a.n && a.p[i] >= '0' && a.p[i] <= '9')
        i++;
    return i == a.n && i - ps <= 5 && (!need_port || i > ps);
}

/* absolute-form = absolute-URI (RFC 9112 §3.2.2), http or https only; the authority becomes
 * the routing host (§3.2.2: the Host field is then ignored). */
static int h1_absolute_form(struct h1_ctx *c, struct http_msg *m)
{
    struct str t = m->target;
    size_t i;
    if (t.n >= 7 && str_ieq(str_make(t.p, 7), STR_LIT("http://")))
        i = 7;
    else if (t.n >= 8 && str_ieq(str_make(t.p, 8), STR_LIT("https://")))
        i = 8;
    else
        return -400;
    size_t as = i;
    while (i < t.n && t.p[i] != '/' && t.p[i] != '?' && t.p[i] != '#')
        i++;
    struct str auth = str_make(t.p + as, i - as);
    if (!h1_authority_ok(auth, true, false))
        return -400;
    if (i < t.n && t.p[i] != '/') /* a query without a path cannot be re-sent in origin-form */
        return -400;
    m->path = i < t.n ? str_make(t.p + i, t.n - i) : STR_LIT("/");
    m->host = auth;
    m->absolute_form = true;
    c->host_from_target = true;
    return 1;
}

/* RFC 9112 §3.2: origin-form, absolute-form, authority-form (CONNECT only, §3.2.3),
 * asterisk-form (OPTIONS only, §3.2.4). */
static int h1_target(struct h1_ctx *c, struct http_msg *m)
{
    struct str t = m->target;
    bool connect = m->method_id == HTTP_METHOD_CONNECT;
    if (t.p[0] == '/') {
        if (connect)
            return -400;
        m->path = t;
        return 1;
    }
    if (connect) {
        if (!h1_authority_ok(t, true, true))
            return -400;
        m->host = t;
        c->host_from_target = true;
        return 1;
    }
    if (t.n == 1 && t.p[0] == '*') {
        if (m->method_id != HTTP_METHOD_OPTIONS)
            return -400;
        m->path = t;
        return 1;
    }
    return h1_absolute_form(c, m);
}

/* ------------------------------------------------------------------------------------------ */
/* Field semantics                                                                             */

/* RFC 9112 §3.2: exactly one Host field, whose value is a valid (possibly empty) authority. */
static int h1_host(struct h1_ctx *c, struct http_msg *m, struct str v)
{
    if (++c->n_host > 1 || !h1_authority_ok(v, false, false))
        return -400;
    if (!c->host_from_target)
        m->host = v;
    return 1;
}

/* RFC 9110 §8.6, RFC 9112 §6.3: Content-Length = 1*DIGIT (18 at most, so no overflow);
 * repeated fields must agree; together with Transfer-Encoding the message is rejected. */
static int h1_content_length(struct h1_ctx *c, struct http_msg *m, struct str v)
{
    if (c->te_seen || v.n == 0 || v.n > 18)
        return -400;
    int64_t n = 0;
    for (size_t i = 0; i < v.n; i++) {
        if (v.p[i] < '0' || v.p[i] > '9')
            return -400;
        n = n * 10 + (v.p[i] - '0');
    }
    if (c->cl_seen && m->content_length != n)
        return -400;
    c->cl_seen = true;
    m->content_length = n;
    return 1;
}

/* RFC 9112 §6.1: Transfer-Encoding is a list across all its fields; chunked must be final and
 * appear once (§7); other codings are not implemented (-501, RFC 9112 §6.1). HTTP/1.0
 * messages with it have faulty framing (§6.1); with Content-Length they are rejected
 * (§6.3). */
static int h1_transfer_encoding(struct h1_ctx *c, struct http_msg *m, struct str v)
{
    if (c->cl_seen || m->version_minor == 0)
        return -400;
    c->te_seen = true;
    struct str rest = v, item;
    while (str_next_list_item(&rest, &item)) {
        if (!h1_all_tchar(item) || c->n_chunked)
            return -400;
        if (!str_ieq(item, STR_LIT("chunked")))
            return -501;
        c->n_chunked++;
    }
    return 1;
}

/* RFC 9112 §9.3, §9.6; RFC 9110 §7.6.1: connection options. */
static int h1_connection(struct h1_ctx *c, struct http_msg *m, struct str v)
{
    struct str rest = v, item;
    while (str_next_list_item(&rest, &item)) {
        if (str_ieq(item, STR_LIT("close")))
            m->conn_close = true;
        else if (str_ieq(item, STR_LIT("keep-alive")))
            c->keep_alive = true;
        else if (str_ieq(item, STR_LIT("upgrade")))
            m->conn_upgrade = true;
        else
            m->conn_names = true;
    }
    return 1;
}

/* Whether a request's Upgrade field may be honoured (and so forwarded). Ignored are:
 * HTTP/1.0 requests (RFC 9110 §7.8: a server MUST ignore Upgrade in them), and offers of h2c,
 * whose upgrade RFC 9113 §3.1 deprecates: were a 101 to turn the connection into an HTTP/2
 * tunnel, every request inside it would bypass the proxy's routing and limits ("h2c
 * smuggling"). Protocol names are compared without their "/version" and case-insensitively. */
static bool h1_upgrade_allowed(const struct h1_ctx *c, const struct http_msg *m, struct str v)
{
    if (!c->request)
        return true;
    if (m->version_minor == 0)
        return false;
    struct str rest = v, item;
    while (str_next_list_item(&rest, &item)) {
        const char *slash = memchr(item.p, '/', item.n);
        if (slash)
            item.n = (size_t)(slash - item.p);
        if (str_ieq(item, STR_LIT("h2c")))
            return false;
    }
    return true;
}

#define H1_NAME_IS(n, lit) str_ieq((n), STR_LIT(lit))

/* Interprets one complete field line. */
static int h1_field(struct h1_ctx *c, struct http_msg *m, const struct http_header *h)
{
    struct str n = h->name, v = h->value;
    switch (n.n) {
    case 4:
        if (c->request && H1_NAME_IS(n, "host"))
            return h1_host(c, m, v);
        break;
    case 6: /* RFC 9110 §10.1.1: ignored in HTTP/1.0 requests */
        if (c->request && H1_NAME_IS(n, "expect") && m->version_minor == 1 &&
            str_ieq(v, STR_LIT("100-continue")))
            m->expect_continue = true;
        break;
    case 7:
        if (H1_NAME_IS(n, "upgrade") && m->upgrade.n == 0 && h1_upgrade_allowed(c, m, v))
            m->upgrade = v;
        break;
    case 10:
        if (H1_NAME_IS(n, "connection"))
            return h1_connection(c, m, v);
        break;
    case 14:
        if (H1_NAME_IS(n, "content-length"))
            return h1_content_length(c, m, v);
        break;
    case 17:
        if (H1_NAME_IS(n, "transfer-encoding"))
            return h1_transfer_encoding(c, m, v);
        break;
    default:
        break;
    }
    return 1;
}

/* ------------------------------------------------------------------------------------------ */
/* Field section                                                                               */

/* field-line = field-name ":" OWS field-value OWS, each ending in CRLF (RFC 9112 §5); the head
 * ends with an empty line (§2.1). */
static int h1_fields(struct h1_ctx *c, size_t *pos, struct http_msg *m)
{
    const char *b = c->b;
    size_t i = *pos;
    int rc;
    for (;;) {
        if (i >= c->end)
            return h1_more(c);
        if (b[i] == '\r')
            break;
        if (m->n_headers >= c->max_fields)
            return -431;
        size_t ns = i;
        i = h1_span(b, i, c->end, H1_C_TCHAR);
        if (i >= c->end)
            return h1_more(c);
        /* §5.1: no whitespace before ':'; §5.2: obs-fold (a line starting with SP/HTAB) and, §2.2,
         * whitespace after the start line are rejected; an empty name is invalid. */
        if (b[i] != ':' || i == ns)
            return -400;
        size_t ne = i++;
        size_t vs = i;
        i = h1_span_fval(b, i, c->end); /* RFC 9110 §5.5: no CTL but HTAB, no DEL */
        rc = h1_crlf(c, &i);
        if (rc <= 0)
            return rc;
        struct http_header *h = &m->headers[m->n_headers++];
        h->name = str_make(b + ns, ne - ns);
        h->value = str_trim_ows(str_make(b + vs, i - 2 - vs));
        rc = h1_field(c, m, h);
        if (rc < 0)
            return rc;
    }
    rc = h1_crlf(c, &i);
    if (rc <= 0)
        return rc;
    *pos = i;
    return 1;
}

/* Checks that need the whole field section. */
static int h1_finish(struct h1_ctx *c, struct http_msg *m)
{
    if (c->te_seen && c->n_chunked == 0) /* an empty Transfer-Encoding list */
        return -400;
    m->chunked = c->n_chunked == 1;
    if (m->version_minor == 0 && !c->keep_alive) /* RFC 9112 §9.3 */
        m->conn_close = true;
    if (c->request && m->version_minor == 1 && c->n_host == 0) /* RFC 9112 §3.2 */
        return -400;
    return 1;
}

static int h1_head_rest(struct h1_ctx *c, size_t i, struct http_msg *m)
{
    int rc = h1_fields(c, &i, m);
    if (rc <= 0)
        return rc;
    rc = h1_finish(c, m);
    if (rc < 0)
        return rc;
    m->head_len = (uint32_t)i;
    return (int)i;
}

int h1_parse_request(const char *buf, size_t len, const struct h1_limits *lim, struct http_msg *msg)
{
    struct h1_ctx c;
    h1_ctx_init(&c, buf, len, lim, msg, true);
    size_t i = 0;
    int rc = h1_skip_empty_lines(&c, &i);
    if (rc <= 0)
        return rc;
    rc = h1_request_line(&c, &i, msg);
    if (rc <= 0)
        return rc;
    msg->method_id = h1_method_id(msg->method);
    rc = h1_target(&c, msg);
    if (rc <= 0)
        return rc;
    return h1_head_rest(&c, i, msg);
}

int h1_parse_response(const char *buf, size_t len, const struct h1_limits *lim, struct http_msg *msg)
{
    struct h1_ctx c;
    h1_ctx_init(&c, buf, len, lim, msg, false);
    if (len == 0)
        return 0;
    size_t i = 0;
    int rc = h1_status_line(&c, &i, msg);
    if (rc <= 0)
        return rc;
    return h1_head_rest(&c, i, msg);
}

/* ------------------------------------------------------------------------------------------ */
/* Body framing                                                                                */

/* RFC 9112 §6.3. A Content-Length of 0 is H1_BODY_LENGTH with content_length 0. */
enum h1_body_kind h1_response_body_kind(const struct http_msg *resp, enum http_method req_method)
{
    if (req_method == HTTP_METHOD_HEAD)
        return H1_BODY_NONE;
    if (resp->status < 200 || resp->status == 204 || resp->status == 304)
        return H1_BODY_NONE;
    if (req_method == HTTP_METHOD_CONNECT && resp->status < 300) /* §6.3: a tunnel */
        return H1_BODY_NONE;
    if (resp->chunked)
        return H1_BODY_CHUNKED;
    if (resp->content_length >= 0)
        return H1_BODY_LENGTH;
    return H1_BODY_CLOSE;
}

/* RFC 9112 §6.3: without TE or CL a request has no body. */
enum h1_body_kind h1_request_body_kind(const struct http_msg *req)
{
    if (req->chunked)
        return H1_BODY_CHUNKED;
    if (req->content_length > 0)
        return H1_BODY_LENGTH;
    return H1_BODY_NONE;
}

/* ------------------------------------------------------------------------------------------ */
/* Chunked decoder, RFC 9112 §7.1:
 *   chunked-body = *chunk last-chunk trailer-section CRLF
 *   chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
 * One handler per state; each consumes one byte and returns 0, or -1 on malformed input. The
 * data state is handled by the driver, which moves whole runs of data bytes at once. */

enum {
    H1_CK_SIZE0 = 0, /* first hex digit of a chunk-size */
    H1_CK_SIZE,      /* further hex digits */
    H1_CK_BWS,       /* BWS between the size and ';' */
    H1_CK_EXT,       /* chunk-ext bytes, skipped */
    H1_CK_SIZE_LF,   /* LF ending the chunk-size line */
    H1_CK_DATA,      /* chunk-data (driver) */
    H1_CK_DATA_CR,   /* CRLF after the data */
    H1_CK_DATA_LF,
    H1_CK_TR_START,  /* start of a trailer line or of the final CRLF */
    H1_CK_TR_NAME,
    H1_CK_TR_VALUE,
    H1_CK_TR_LF,
    H1_CK_END_LF,    /* LF of the final CRLF */
    H1_CK_DONE,
    H1_CK_ERROR,
};

#define H1_CK_MAX_DIGITS 16
#define H1_CK_MAX_EXT 4096

static int h1_ck_size0(struct h1_chunked *st, unsigned char ch)
{
    if (!h1_is((char)ch, H1_C_HEX)) /* no sign, no space, no "0x" (§7.1) */
        return -1;
    st->remaining = (uint64_t)h1_hexval(ch);
    st->size_digits = 1;
    st->aux = 0;
    st->state = H1_CK_SIZE;
    return 0;
}

static int h1_ck_size(struct h1_chunked *st, unsigned char ch)
{
    if (h1_is((char)ch, H1_C_HEX)) {
        /* the size must stay below 2^63 */
        if (st->size_digits >= H1_CK_MAX_DIGITS || (st->remaining >> 59) != 0)
            return -1;
        st->remaining = (st->remaining << 4) | (uint64_t)h1_hexval(ch);
        st->size_digits++;
        return 0;
    }
    if (ch == ';')
        st->state = H1_CK_EXT;
    else if (ch == ' ' || ch == '\t')
        st->state = H1_CK_BWS;
    else if (ch == '\r')
        st->state = H1_CK_SIZE_LF;
    else
        return -1;
    st->aux = 1;
    return 0;
}

static int h1_ck_bws(struct h1_chunked *st, unsigned char ch)
{
    if (++st->aux > H1_CK_MAX_EXT)
        return -1;
    if (ch == ';')
        st->state = H1_CK_EXT;
    else if (ch != ' ' && ch != '\t') /* BWS must lead to a chunk-ext */
        return -1;
    return 0;
}

static int h1_ck_ext(struct h1_chunked *st, unsigned char ch)
{
    if (ch == '\r') {
        st->state = H1_CK_SIZE_LF;
        return 0;
    }
    if (++st->aux > H1_CK_MAX_EXT || !h1_is((char)ch, H1_C_FVAL))
        return -1;
    return 0;
}

static int h1_ck_size_lf(struct h1_chunked *st, unsigned char ch)
{
    if (ch != '\n')
        return -1;
    st->aux = 0;
    st->state = st->remaining ? H1_CK_DATA : H1_CK_TR_START;
    return 0;
}

static int h1_ck_data_cr(struct h1_chunked *st, unsigned char ch)
{
    if (ch != '\r')
        return -1;
    st->state = H1_CK_DATA_LF;
    return 0;
}

static int h1_ck_data_lf(struct h1_chunked *st, unsigned char ch)
{
    if (ch != '\n')
        return -1;
    st->state = H1_CK_SIZE0;
    return 0;
}

/* Trailer section (§7.1.2): field lines, bounded by H1_CHUNKED_MAX_TRAILER bytes in all. */
static int h1_ck_tr_start(struct h1_chunked *st, unsigned char ch)
{
    if (++st->aux > H1_CHUNKED_MAX_TRAILER)
        return -1;
    if (ch == '\r')
        st->state = H1_CK_END_LF;
    else if (h1_is((char)ch, H1_C_TCHAR))
        st->state = H1_CK_TR_NAME;
    else
        return -1;
    return 0;
}

static int h1_ck_tr_name(struct h1_chunked *st, unsigned char ch)
{
    if (++st->aux > H1_CHUNKED_MAX_TRAILER)
        return -1;
    if (ch == ':')
        st->state = H1_CK_TR_VALUE;
    else if (!h1_is((char)ch, H1_C_TCHAR))
        return -1;
    return 0;
}

static int h1_ck_tr_value(struct h1_chunked *st, unsigned char ch)
{
    if (++st->aux > H1_CHUNKED_MAX_TRAILER)
        return -1;
    if (ch == '\r')
        st->state = H1_CK_TR_LF;
    else if (!h1_is((char)ch, H1_C_FVAL))
        return -1;
    return 0;
}

static int h1_ck_tr_lf(struct h1_chunked *st, unsigned char ch)
{
    if (++st->aux > H1_CHUNKED_MAX_TRAILER || ch != '\n')
        return -1;
    st->state = H1_CK_TR_START;
    return 0;
}

static int h1_ck_end_lf(struct h1_chunked *st, unsigned char ch)
{
    if (ch != '\n')
        return -1;
    st->state = H1_CK_DONE;
    return 0;
}

static int h1_ck_fail(struct h1_chunked *st, unsigned char ch)
{
    (void)st;
    (void)ch;
    return -1;
}

typedef int (*h1_ck_handler)(struct h1_chunked *st, unsigned char ch);

static const h1_ck_handler h1_ck_handlers[] = {
    [H1_CK_SIZE0] = h1_ck_size0,       [H1_CK_SIZE] = h1_ck_size,
    [H1_CK_BWS] = h1_ck_bws,           [H1_CK_EXT] = h1_ck_ext,
    [H1_CK_SIZE_LF] = h1_ck_size_lf,   [H1_CK_DATA] = h1_ck_fail,
    [H1_CK_DATA_CR] = h1_ck_data_cr,   [H1_CK_DATA_LF] = h1_ck_data_lf,
    [H1_CK_TR_START] = h1_ck_tr_start, [H1_CK_TR_NAME] = h1_ck_tr_name,
    [H1_CK_TR_VALUE] = h1_ck_tr_value, [H1_CK_TR_LF] = h1_ck_tr_lf,
    [H1_CK_END_LF] = h1_ck_end_lf,     [H1_CK_DONE] = h1_ck_fail,
    [H1_CK_ERROR] = h1_ck_fail,
};

/* RFC 9110 §6.5.1: a trailer must not carry what frames, routes, authenticates or controls the
 * message; a recipient that keeps trailers drops those (the smuggling corpus sends them). */
static bool h1_trailer_allowed(struct str name)
{
    static const char *const deny[] = {
        "content-length", "transfer-encoding", "host", "connection", "keep-alive", "proxy-connection",
        "te", "upgrade", "trailer", "expect", "max-forwards", "range", "if-match", "if-none-match",
        "if-modified-since", "if-unmodified-since", "if-range", "authorization", "proxy-authorization",
        "www-authenticate", "proxy-authenticate", "cookie", "set-cookie", "content-encoding",
        "content-type", "content-range", "cache-control", "expires", "pragma", "age", "date",
        "location", "retry-after", "vary", "forwarded", "x-forwarded-for",
    };
    for (size_t i = 0; i < sizeof deny / sizeof deny[0]; i++)
        if (str_ieq_cstr(name, deny[i]))
            return false;
    return true;
}

/* Copies a trailer line's bytes (not the final CRLF) to st->trailers, and takes the line back
 * out when it is complete and names a field a trailer may not carry. */
static void h1_ck_keep_trailer(struct h1_chunked *st, uint8_t before, unsigned char ch)
{
    bool starts = before == H1_CK_TR_START && st->state == H1_CK_TR_NAME;
    if (!starts && before != H1_CK_TR_NAME && before != H1_CK_TR_VALUE && before != H1_CK_TR_LF)
        return;
    if (starts)
        st->tr_line = (uint32_t)st->trailers->len;
    sbuf_append(st->trailers, (const char *)&ch, 1);
    if (before != H1_CK_TR_LF || st->trailers->failed)
        return;
    const char *line = st->trailers->p + st->tr_line;
    const char *colon = memchr(line, ':', st->trailers->len - st->tr_line);
    if (colon && !h1_trailer_allowed(str_make(line, (size_t)(colon - line))))
        st->trailers->len = st->tr_line;
}

int h1_chunked_decode(struct h1_chunked *st, char *in, size_t len, size_t *consumed,
                      size_t *produced)
{
    size_t i = 0, out = 0;
    int rc = 0;
    while (i < len && st->state != H1_CK_DONE) {
        if (st->state == H1_CK_DATA) {
            size_t n = len - i;
            if ((uint64_t)n > st->remaining)
                n = (size_t)st->remaining;
            if (out != i)
                memmove(in + out, in + i, n);
            out += n;
            i += n;
            st->remaining -= n;
            if (st->remaining == 0)
                st->state = H1_CK_DATA_CR;
            continue;
        }
        uint8_t before = st->state;
        if (st->state >= sizeof(h1_ck_handlers) / sizeof(h1_ck_handlers[0]) ||
            h1_ck_handlers[st->state](st, (unsigned char)in[i]) < 0) {
            st->state = H1_CK_ERROR;
            rc = -1;
            break;
        }
        if (st->trailers)
            h1_ck_keep_trailer(st, before, (unsigned char)in[i]);
        i++;
    }
    if (st->state == H1_CK_DONE)
        rc = 1;
    else if (st->state == H1_CK_ERROR)
        rc = -1;
    *consumed = i;
    *produced = out;
    return rc;
}

size_t h1_chunk_header(char *out, uint64_t n)
{
    static const char hex[] = "0123456789abcdef";
    char tmp[16];
    size_t k = 0;
    do {
        tmp[k++] = hex[n & 15];
        n >>= 4;
    } while (n);
    for (size_t i = 0; i < k; i++)
        out[i] = tmp[k - 1 - i];
    out[k] = '\r';
    out[k + 1] = '\n';
    return k + 2;
}
