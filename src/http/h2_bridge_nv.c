/* h2_bridge: an HTTP/1.1 head (already parsed strictly by h1) as an nghttp2_nv array. Each
 * array is built in two passes by one emitter: the first counts, the second copies into a
 * single allocation, so the result does not depend on the parsed buffer's lifetime. */
#include "http/h2_bridge.h"

#include <stdlib.h>
#include <string.h>

struct h2b_nvb {
    struct h2b_nv *out;  /* NULL while counting */
    size_t n;            /* fields emitted */
    size_t bytes;        /* name and value bytes emitted */
    char *next;          /* writing: where the next copy goes */
    bool bad;            /* malformed input (trailer lines) */
};

static void h2b_nvb_put(struct h2b_nvb *b, struct str name, struct str value)
{
    if (b->out) {
        nghttp2_nv *nv = &b->out->nv[b->n];
        char *p = b->next;
        for (size_t i = 0; i < name.n; i++) /* RFC 9113 §8.2.1: lowercase names */
            p[i] = (name.p[i] >= 'A' && name.p[i] <= 'Z') ? (char)(name.p[i] + 32) : name.p[i];
        if (value.n)
            memcpy(p + name.n, value.p, value.n);
        *nv = (nghttp2_nv){ (uint8_t *)p, (uint8_t *)p + name.n, name.n, value.n,
                            NGHTTP2_NV_FLAG_NONE };
        b->next = p + name.n + value.n;
    }
    b->n++;
    b->bytes += name.n + value.n;
}

typedef void (*h2b_emit_fn)(struct h2b_nvb *b, const void *ctx);

static int h2b_nv_build(struct h2b_nv *out, h2b_emit_fn emit, const void *ctx)
{
    *out = (struct h2b_nv){ 0 };
    struct h2b_nvb count = { 0 };
    emit(&count, ctx);
    if (count.bad)
        return -1;
    size_t head = count.n * sizeof(nghttp2_nv);
    char *mem = malloc(head + count.bytes + 1);
    if (!mem)
        return -1;
    out->nv = (nghttp2_nv *)(void *)mem;
    out->mem = mem;
    struct h2b_nvb fill = { .out = out, .next = mem + head };
    emit(&fill, ctx);
    out->n = fill.n;
    return 0;
}

void h2b_nv_free(struct h2b_nv *nv)
{
    free(nv->mem);
    *nv = (struct h2b_nv){ 0 };
}

static bool h2b_listed_in_connection(const struct http_msg *m, struct str name)
{
    for (uint32_t i = 0; i < m->n_headers; i++) {
        if (!str_ieq_cstr(m->headers[i].name, "connection"))
            continue;
        struct str rest = m->headers[i].value, token;
        while (str_next_list_item(&rest, &token))
            if (str_ieq(token, name))
                return true;
    }
    return false;
}

/* RFC 9113 §8.2.2: connection-specific fields are never sent; Host travels as :authority. (By
 * length first: this runs for every field of every message.) */
static bool h2b_is_connection_field(struct str name)
{
    switch (name.n) {
    case 4: return str_ieq_cstr(name, "host");
    case 7: return str_ieq_cstr(name, "upgrade");
    case 10: return str_ieq_cstr(name, "connection") || str_ieq_cstr(name, "keep-alive");
    case 16: return str_ieq_cstr(name, "proxy-connection");
    case 17: return str_ieq_cstr(name, "transfer-encoding");
    default: return false;
    }
}

/* §8.2.2: TE may be sent only as "trailers". */
static bool h2b_te_has_trailers(struct str value)
{
    struct str rest = value, item;
    while (str_next_list_item(&rest, &item)) {
        const char *semi = memchr(item.p, ';', item.n); /* "trailers;q=1" is not valid, but harmless */
        struct str token = str_trim_ows(str_make(item.p, semi ? (size_t)(semi - item.p) : item.n));
        if (str_ieq_cstr(token, "trailers"))
            return true;
    }
    return false;
}

static void h2b_emit_fields(struct h2b_nvb *b, const struct http_msg *m)
{
    bool te = false, conn = false;
    for (uint32_t i = 0; i < m->n_headers && !conn; i++)
        conn = m->headers[i].name.n == 10 && str_ieq_cstr(m->headers[i].name, "connection");
    for (uint32_t i = 0; i < m->n_headers; i++) {
        const struct http_header *f = &m->headers[i];
        if (f->name.n == 2 && str_ieq_cstr(f->name, "te")) {
            te = te || h2b_te_has_trailers(f->value);
            continue;
        }
        if (h2b_is_connection_field(f->name) || (conn && h2b_listed_in_connection(m, f->name)))
            continue;
        h2b_nvb_put(b, f->name, f->value);
    }
    if (te)
        h2b_nvb_put(b, STR_LIT("te"), STR_LIT("trailers"));
}

struct h2b_req_ctx {
    const struct http_msg *req;
    struct str scheme;
};

static void h2b_emit_request(struct h2b_nvb *b, const void *ctx)
{
    const struct h2b_req_ctx *rc = ctx;
    const struct http_msg *m = rc->req;
    h2b_nvb_put(b, STR_LIT(":method"), m->method);
    if (m->method_id != HTTP_METHOD_CONNECT) { /* §8.5: CONNECT has no :scheme nor :path */
        h2b_nvb_put(b, STR_LIT(":scheme"), rc->scheme);
        h2b_nvb_put(b, STR_LIT(":authority"), m->host);
        h2b_nvb_put(b, STR_LIT(":path"), m->path);
    } else {
        h2b_nvb_put(b, STR_LIT(":authority"), m->host);
    }
    h2b_emit_fields(b, m);
}

int h2b_nv_request(const struct http_msg *req, const char *scheme, struct h2b_nv *out)
{
    struct h2b_req_ctx ctx = { req, str_make(scheme, strlen(scheme)) };
    struct str authority = req->host;
    if (!authority.n) {
        const struct http_header *h = http_msg_find(req, "host");
        if (!h || !h->value.n)
            return -1;
        authority = h->value;
    }
    struct http_msg copy = *req;
    copy.host = authority;
    ctx.req = &copy;
    return h2b_nv_build(out, h2b_emit_request, &ctx);
}

static void h2b_emit_response(struct h2b_nvb *b, const void *ctx)
{
    const struct http_msg *m = ctx;
    char status[3] = { (char)('0' + m->status / 100 % 10), (char)('0' + m->status / 10 % 10),
                       (char)('0' + m->status % 10) };
    h2b_nvb_put(b, STR_LIT(":status"), str_make(status, 3)); /* copied at once */
    h2b_emit_fields(b, m);
}

int h2b_nv_response(const struct http_msg *resp, struct h2b_nv *out)
{
    if (resp->status < 100 || resp->status > 999)
        return -1;
    return h2b_nv_build(out, h2b_emit_response, resp);
}

struct h2b_lines {
    const char *p;
    size_t n;
};

/* Trailers carry no framing, routing or connection fields (RFC 9110 §6.5.1, RFC 9113 §8.2.2). */
static bool h2b_trailer_dropped(struct str name)
{
    return h2b_is_connection_field(name) || str_ieq_cstr(name, "content-length") ||
           str_ieq_cstr(name, "te") || str_ieq_cstr(name, "trailer");
}

static bool h2b_name_is_token(struct str name)
{
    if (!name.n)
        return false;
    for (size_t i = 0; i < name.n; i++) {
        unsigned char c = (unsigned char)name.p[i];
        bool alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        if (!alnum && (!c || !strchr("!#$%&'*+-.^_`|~", c)))
            return false;
    }
    return true;
}

static void h2b_emit_trailers(struct h2b_nvb *b, const void *ctx)
{
    const struct h2b_lines *l = ctx;
    size_t pos = 0;
    while (pos < l->n) {
        const char *line = l->p + pos;
        const char *end = memchr(line, '\n', l->n - pos);
        if (!end || end == line || end[-1] != '\r') {
            b->bad = true;
            return;
        }
        size_t len = (size_t)(end - 1 - line);
        pos += len + 2;
        const char *colon = memchr(line, ':', len);
        struct str name = str_make(line, colon ? (size_t)(colon - line) : 0);
        if (!colon || !h2b_name_is_token(name) || memchr(line, '\r', len) || memchr(line, '\0', len)) {
            b->bad = true;
            return;
        }
        struct str value = str_trim_ows(str_make(colon + 1, len - name.n - 1));
        if (!h2b_trailer_dropped(name))
            h2b_nvb_put(b, name, value);
    }
}

int h2b_nv_trailers(const char *lines, size_t len, struct h2b_nv *out)
{
    struct h2b_lines l = { lines, len };
    return h2b_nv_build(out, h2b_emit_trailers, &l);
}
