/* h2_bridge: an HTTP/2 header block collected field by field and written as an HTTP/1.1 head
 * (RFC 9113 §8.2, §8.3). The head is parsed again by the strict h1 parser, so this side only
 * has to make sure nothing can change its shape: no CR/LF/NUL anywhere, no space in the request
 * line, no connection-specific field. */
#include "http/h2_bridge.h"

#include <string.h>

#include "http/hdr.h"

static bool h2b_is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return true;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* RFC 9113 §8.2.1: a name is a lowercase token (uppercase makes the message malformed). */
static bool h2b_name_ok(const uint8_t *p, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!h2b_is_tchar(p[i]) || (p[i] >= 'A' && p[i] <= 'Z'))
            return false;
    return true;
}

/* RFC 9113 §8.2.1: no NUL, CR or LF, and no leading or trailing SP / HTAB. */
static bool h2b_value_ok(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] == 0 || p[i] == '\r' || p[i] == '\n')
            return false;
    if (n && (p[0] == ' ' || p[0] == '\t' || p[n - 1] == ' ' || p[n - 1] == '\t'))
        return false;
    return true;
}

/* A request-line piece (method, path) or authority: visible ASCII or obs-text, nothing that
 * could split the line (SP, HTAB, controls, DEL). */
static bool h2b_visible(const uint8_t *p, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (p[i] <= 0x20 || p[i] == 0x7f)
            return false;
    return true;
}

static bool h2b_eq(const uint8_t *p, size_t n, const char *lit)
{
    size_t k = strlen(lit);
    return n == k && memcmp(p, lit, k) == 0;
}

static bool h2b_ieq(const uint8_t *p, size_t n, const char *lit)
{
    return str_ieq_cstr(str_make((const char *)p, n), lit);
}

static enum http_method h2b_method_id(struct str m)
{
    static const struct { const char *name; enum http_method id; } map[] = {
        { "GET", HTTP_METHOD_GET },         { "HEAD", HTTP_METHOD_HEAD },
        { "POST", HTTP_METHOD_POST },       { "PUT", HTTP_METHOD_PUT },
        { "DELETE", HTTP_METHOD_DELETE },   { "OPTIONS", HTTP_METHOD_OPTIONS },
        { "TRACE", HTTP_METHOD_TRACE },     { "CONNECT", HTTP_METHOD_CONNECT },
        { "PATCH", HTTP_METHOD_PATCH },
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (h2b_eq((const uint8_t *)m.p, m.n, map[i].name))
            return map[i].id;
    return HTTP_METHOD_OTHER;
}

void h2b_head_init(struct h2b_head *h, enum h2b_block kind, uint32_t max_list)
{
    memset(h, 0, sizeof *h);
    h->kind = kind;
    h->max_list = max_list;
    h->content_length = -1;
}

void h2b_head_free(struct h2b_head *h)
{
    sbuf_free(&h->values);
    sbuf_free(&h->fields);
    sbuf_free(&h->cookie);
}

static int h2b_fail(struct h2b_head *h, int err)
{
    if (!h->error)
        h->error = err;
    return h->error;
}

static struct str h2b_val(const struct h2b_head *h, struct h2b_slice sl)
{
    return str_make(sl.len ? h->values.p + sl.off : "", sl.len);
}

/* Stores a pseudo-header (or host) value once (a second one is malformed, §8.3). N > 0: every
 * such value was checked non-empty. */
static int h2b_set_value(struct h2b_head *h, struct h2b_slice *slot, const uint8_t *v, size_t n)
{
    if (slot->len)
        return h2b_fail(h, -400);
    slot->off = (uint32_t)h->values.len;
    sbuf_append(&h->values, v, n);
    slot->len = (uint32_t)n;
    return h->values.failed ? h2b_fail(h, -1) : 0;
}

static int h2b_status_value(const uint8_t *v, size_t n)
{
    if (n != 3)
        return -1;
    int s = 0;
    for (size_t i = 0; i < 3; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        s = s * 10 + (v[i] - '0');
    }
    return s;
}

/* RFC 9113 §8.3.1 request and §8.3.2 response pseudo-header fields. */
static int h2b_add_pseudo(struct h2b_head *h, const uint8_t *name, size_t nlen, const uint8_t *v,
                          size_t vlen)
{
    if (h->regular_seen || h->kind == H2B_TRAILERS)
        return h2b_fail(h, -400);
    if (h->kind == H2B_RESPONSE) {
        if (!h2b_eq(name, nlen, ":status") || h->status)
            return h2b_fail(h, -400);
        int s = h2b_status_value(v, vlen);
        if (s < 100 || s > 599 || s == 101) /* §8.6: no 101 in HTTP/2 */
            return h2b_fail(h, -400);
        h->status = s;
        return 0;
    }
    if (h2b_eq(name, nlen, ":method")) {
        if (!h2b_visible(v, vlen))
            return h2b_fail(h, -400);
        for (size_t i = 0; i < vlen; i++)
            if (!h2b_is_tchar(v[i]))
                return h2b_fail(h, -400);
        int r = h2b_set_value(h, &h->method, v, vlen);
        h->method_id = r ? HTTP_METHOD_OTHER : h2b_method_id(h2b_val(h, h->method));
        return r;
    }
    if (h2b_eq(name, nlen, ":scheme"))
        return h2b_visible(v, vlen) ? h2b_set_value(h, &h->scheme, v, vlen) : h2b_fail(h, -400);
    if (h2b_eq(name, nlen, ":path")) {
        /* origin-form, or "*" (OPTIONS); never empty for http(s) */
        if (!h2b_visible(v, vlen) || (v[0] != '/' && !h2b_eq(v, vlen, "*")))
            return h2b_fail(h, -400);
        return h2b_set_value(h, &h->path, v, vlen);
    }
    if (h2b_eq(name, nlen, ":authority")) {
        /* no deprecated userinfo (§8.3.1) */
        if (!h2b_visible(v, vlen) || memchr(v, '@', vlen))
            return h2b_fail(h, -400);
        return h2b_set_value(h, &h->authority, v, vlen);
    }
    return h2b_fail(h, -400); /* unknown, or :protocol which we never enabled (RFC 8441) */
}

/* RFC 9113 §8.2.2: connection-specific fields make a message malformed. */
static bool h2b_connection_specific(const uint8_t *name, size_t nlen)
{
    return h2b_eq(name, nlen, "connection") || h2b_eq(name, nlen, "keep-alive") ||
           h2b_eq(name, nlen, "proxy-connection") || h2b_eq(name, nlen, "transfer-encoding") ||
           h2b_eq(name, nlen, "upgrade");
}

static int64_t h2b_parse_length(const uint8_t *v, size_t n)
{
    if (n == 0 || n > 18)
        return -1;
    int64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        x = x * 10 + (v[i] - '0');
    }
    return x;
}

static int h2b_add_regular(struct h2b_head *h, const uint8_t *name, size_t nlen, const uint8_t *v,
                           size_t vlen)
{
    h->regular_seen = true;
    if (h2b_connection_specific(name, nlen))
        return h2b_fail(h, -400);
    if (h2b_eq(name, nlen, "te") && !h2b_ieq(v, vlen, "trailers"))
        return h2b_fail(h, -400);
    if (h2b_eq(name, nlen, "content-length")) {
        if (h->kind == H2B_TRAILERS)
            return 0; /* framing is not a trailer's business (RFC 9110 §6.5.1): dropped */
        h->content_length = h->has_cl ? -1 : h2b_parse_length(v, vlen);
        h->has_cl = true;
    }
    if (h->kind == H2B_REQUEST && h2b_eq(name, nlen, "host")) {
        if (h->has_host || !h2b_visible(v, vlen) || memchr(v, '@', vlen))
            return h2b_fail(h, -400);
        h->has_host = true;
        return h2b_set_value(h, &h->host, v, vlen);
    }
    if (h->kind == H2B_REQUEST && h2b_eq(name, nlen, "cookie")) {
        /* §8.2.3: crumbs sent as separate fields are joined again for HTTP/1.1 */
        if (h->cookie.len)
            sbuf_append(&h->cookie, "; ", 2);
        sbuf_append(&h->cookie, v, vlen);
        return 0;
    }
    sbuf_append_header(&h->fields, str_make((const char *)name, nlen),
                       str_make((const char *)v, vlen));
    return 0;
}

int h2b_head_add(struct h2b_head *h, const uint8_t *name, size_t nlen, const uint8_t *value,
                 size_t vlen)
{
    if (h->error)
        return h->error;
    /* §6.5.2: the size of an uncompressed field is name + value + 32 octets */
    uint64_t size = (uint64_t)h->list_size + nlen + vlen + 32;
    h->list_size = size > UINT32_MAX ? UINT32_MAX : (uint32_t)size;
    if (h->max_list && size > h->max_list)
        return h2b_fail(h, -431);
    if (!h2b_value_ok(value, vlen))
        return h2b_fail(h, -400);
    if (nlen && name[0] == ':')
        return h2b_add_pseudo(h, name, nlen, value, vlen);
    if (!h2b_name_ok(name, nlen))
        return h2b_fail(h, -400);
    return h2b_add_regular(h, name, nlen, value, vlen);
}

static int h2b_finish_request(struct h2b_head *h, unsigned flags, struct sbuf *out)
{
    if (!h->method.len || h->method_id == HTTP_METHOD_CONNECT)
        return -400; /* CONNECT (§8.5) is not bridged yet */
    if (!h->scheme.len || !h->path.len)
        return -400;
    struct str authority = h2b_val(h, h->authority.len ? h->authority : h->host);
    if (!authority.n)
        return -400;
    /* §8.3.1: a Host that names another entity than :authority makes the request malformed */
    if (h->authority.len && h->host.len && !str_ieq(h2b_val(h, h->host), authority))
        return -400;
    if (!(flags & H2B_F_BODY) && h->content_length > 0)
        return -400; /* a body announced, END_STREAM says there is none (§8.1.1) */
    sbuf_append_str(out, h2b_val(h, h->method));
    sbuf_append(out, " ", 1);
    sbuf_append_str(out, h2b_val(h, h->path));
    sbuf_append_cstr(out, " HTTP/1.1\r\nhost: ");
    sbuf_append_str(out, authority);
    sbuf_append(out, "\r\n", 2);
    sbuf_append(out, h->fields.p, h->fields.len);
    if (h->cookie.len)
        sbuf_append_header(out, STR_LIT("cookie"), str_make(h->cookie.p, h->cookie.len));
    h->body_chunked = (flags & H2B_F_BODY) && !h->has_cl;
    if (h->body_chunked)
        sbuf_append_cstr(out, "transfer-encoding: chunked\r\n");
    sbuf_append(out, "\r\n", 2);
    return 0;
}

static int h2b_finish_response(struct h2b_head *h, unsigned flags, struct sbuf *out)
{
    if (!h->status)
        return -400;
    sbuf_append_cstr(out, "HTTP/1.1 ");
    sbuf_append_u64(out, (uint64_t)h->status);
    sbuf_append(out, " ", 1);
    sbuf_append_cstr(out, hdr_reason(h->status));
    sbuf_append(out, "\r\n", 2);
    sbuf_append(out, h->fields.p, h->fields.len);
    bool bodyless = h->status < 200 || h->status == 204 || h->status == 304 || (flags & H2B_F_HEAD);
    if (!bodyless && !h->has_cl) {
        /* the h1 reader would otherwise read until the connection closes (RFC 9112 §6.3) */
        h->body_chunked = flags & H2B_F_BODY;
        sbuf_append_cstr(out, h->body_chunked ? "transfer-encoding: chunked\r\n" : "content-length: 0\r\n");
    }
    sbuf_append(out, "\r\n", 2);
    return 0;
}

int h2b_head_finish(struct h2b_head *h, unsigned flags, struct sbuf *out)
{
    if (h->error)
        return h->error;
    if (h->values.failed || h->fields.failed || h->cookie.failed)
        return -1;
    int r;
    if (h->kind == H2B_REQUEST) {
        r = h2b_finish_request(h, flags, out);
    } else if (h->kind == H2B_RESPONSE) {
        r = h2b_finish_response(h, flags, out);
    } else {
        h2b_chunk_last(out, h->fields.p, h->fields.len);
        r = 0;
    }
    if (r == 0 && out->failed)
        return -1;
    return r;
}
