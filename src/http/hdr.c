#include "http/hdr.h"

#include <ctype.h>

#include <string.h>
#include <strings.h>

#include "http/compress.h"

/* RFC 9110 §7.6.1 hop-by-hop fields plus framing fields we always re-frame ourselves. */
static const char *const hdr_hop_names[] = {
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
    "upgrade", "content-length", "proxy-authenticate", "proxy-authorization",
};

static bool hdr_named_by_connection(const struct http_msg *msg, struct str name)
{
    if (!msg->conn_names) /* close, keep-alive and upgrade name no field we forward */
        return false;
    for (uint32_t i = 0; i < msg->n_headers; i++) {
        if (!str_ieq_cstr(msg->headers[i].name, "connection"))
            continue;
        struct str rest = msg->headers[i].value, token;
        while (str_next_list_item(&rest, &token))
            if (str_ieq(token, name))
                return true;
    }
    return false;
}

bool hdr_is_hop_by_hop(const struct http_msg *msg, struct str name)
{
    for (size_t i = 0; i < sizeof hdr_hop_names / sizeof hdr_hop_names[0]; i++)
        if (str_ieq_cstr(name, hdr_hop_names[i]))
            return true;
    return hdr_named_by_connection(msg, name);
}

static bool hdr_in_list(char *const *names, size_t n, struct str name)
{
    for (size_t i = 0; i < n; i++)
        if (str_ieq_cstr(name, names[i]))
            return true;
    return false;
}

static bool hdr_is_set_by_ops(const struct conf_header_ops *ops, struct str name)
{
    if (!ops)
        return false;
    for (size_t i = 0; i < ops->n_set; i++)
        if (str_ieq_cstr(name, ops->set[i].name))
            return true;
    return hdr_in_list(ops->remove, ops->n_remove, name);
}

static void hdr_append_ops(struct sbuf *out, const struct conf_header_ops *ops)
{
    if (!ops)
        return;
    for (size_t i = 0; i < ops->n_set; i++)
        if (strcasecmp(ops->set[i].name, "host") != 0) /* Host is written first, see below */
            sbuf_append_header(out, str_make(ops->set[i].name, strlen(ops->set[i].name)),
                           str_make(ops->set[i].value, strlen(ops->set[i].value)));
    for (size_t i = 0; i < ops->n_add; i++)
        sbuf_append_header(out, str_make(ops->add[i].name, strlen(ops->add[i].name)),
                           str_make(ops->add[i].value, strlen(ops->add[i].value)));
}

static void hdr_append_framing(struct sbuf *out, enum hdr_framing framing, uint64_t length)
{
    if (framing == HDR_FRAME_LENGTH) {
        sbuf_append_cstr(out, "Content-Length: ");
        sbuf_append_u64(out, length);
        sbuf_append(out, "\r\n", 2);
    } else if (framing == HDR_FRAME_CHUNKED) {
        sbuf_append_cstr(out, "Transfer-Encoding: chunked\r\n");
    }
}

/* Joins every instance of NAME into one list value (RFC 9110 §5.3) followed by EXTRA. */
static void hdr_append_joined(struct sbuf *out, const struct http_msg *msg, const char *name,
                              struct str extra_prefix, struct str extra)
{
    sbuf_append_cstr(out, name);
    sbuf_append(out, ": ", 2);
    for (uint32_t i = 0; i < msg->n_headers; i++) {
        if (!str_ieq_cstr(msg->headers[i].name, name) || hdr_named_by_connection(msg, msg->headers[i].name))
            continue;
        sbuf_append_str(out, msg->headers[i].value);
        sbuf_append(out, ", ", 2);
    }
    sbuf_append_str(out, extra_prefix);
    sbuf_append_str(out, extra);
    sbuf_append(out, "\r\n", 2);
}

/* NAME equals WANT, case aside and with '_' taken for '-': CGI-style backends read X_User as
 * X-User, so a client must not slip an identity header past us under the other spelling. */
static bool hdr_same_identity(struct str name, const char *want)
{
    size_t n = strlen(want);
    if (name.n != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        char a = (char)tolower((unsigned char)name.p[i]), b = (char)tolower((unsigned char)want[i]);
        if (a != b && !((a == '_' || a == '-') && (b == '_' || b == '-')))
            return false;
    }
    return true;
}

static bool hdr_in_names(const char *const *names, size_t n, struct str name)
{
    for (size_t i = 0; i < n; i++)
        if (hdr_same_identity(name, names[i]))
            return true;
    return false;
}

static bool hdr_request_skip(const struct http_msg *req, const struct hdr_request_ctx *ctx,
                             struct str name)
{
    if (hdr_is_hop_by_hop(req, name) || hdr_is_set_by_ops(ctx->ops, name) ||
        hdr_in_names(ctx->set_name, ctx->n_set, name))
        return true;
    if (str_ieq_cstr(name, "host") || str_ieq_cstr(name, "expect"))
        return true; /* Host is written first; Expect: 100-continue is answered by us */
    if (ctx->fwd->x_forwarded &&
        (str_ieq_cstr(name, "x-forwarded-for") || str_ieq_cstr(name, "x-forwarded-proto") ||
         str_ieq_cstr(name, "x-forwarded-host")))
        return true;
    return (ctx->fwd->forwarded && str_ieq_cstr(name, "forwarded")) ||
           (ctx->fwd->via && str_ieq_cstr(name, "via"));
}

static void hdr_append_forwarding(struct sbuf *out, const struct http_msg *req,
                                  const struct hdr_request_ctx *ctx, struct str host)
{
    if (ctx->fwd->x_forwarded) {
        hdr_append_joined(out, req, "X-Forwarded-For", STR_LIT(""), ctx->client_ip);
        sbuf_append_header(out, STR_LIT("X-Forwarded-Proto"), str_make(ctx->scheme, strlen(ctx->scheme)));
        sbuf_append_header(out, STR_LIT("X-Forwarded-Host"), host);
    }
    if (ctx->fwd->forwarded) {
        /* RFC 7239 §4: IPv6 addresses are quoted and bracketed. */
        hdr_append_joined(out, req, "Forwarded", ctx->client_ipv6 ? STR_LIT("for=\"[") : STR_LIT("for="),
                          ctx->client_ip);
        out->len -= 2; /* reopen the line to add the parameters */
        sbuf_append_cstr(out, ctx->client_ipv6 ? "]\";host=\"" : ";host=\"");
        sbuf_append_str(out, host);
        sbuf_append_cstr(out, "\";proto=");
        sbuf_append_cstr(out, ctx->scheme);
        sbuf_append(out, "\r\n", 2);
    }
    if (ctx->fwd->via)
        hdr_append_joined(out, req, "Via", STR_LIT(""), req->version_minor ? STR_LIT("1.1 portero")
                                                                           : STR_LIT("1.0 portero"));
}

/* A route may rewrite Host: then that value replaces the client's, never joins it (RFC 9112 §3.2). */
static struct str hdr_host_override(const struct conf_header_ops *ops)
{
    for (size_t i = 0; ops && i < ops->n_set; i++)
        if (strcasecmp(ops->set[i].name, "host") == 0)
            return str_make(ops->set[i].value, strlen(ops->set[i].value));
    return STR_LIT("");
}

void hdr_build_request(struct sbuf *out, const struct http_msg *req, const struct hdr_request_ctx *ctx)
{
    struct str client_host = req->host.n ? req->host : ctx->fallback_host;
    struct str host = hdr_host_override(ctx->ops);
    if (!host.n)
        host = client_host;
    sbuf_append_str(out, req->method);
    sbuf_append(out, " ", 1);
    sbuf_append_str(out, ctx->path);
    sbuf_append_cstr(out, " HTTP/1.1\r\n");
    sbuf_append_header(out, STR_LIT("Host"), host);
    for (uint32_t i = 0; i < req->n_headers; i++) {
        const struct http_header *h = &req->headers[i];
        if (!hdr_request_skip(req, ctx, h->name))
            sbuf_append_header(out, h->name, h->value);
    }
    hdr_append_ops(out, ctx->ops);
    for (size_t i = 0; i < ctx->n_set; i++)
        if (ctx->set_value[i])
            sbuf_append_header(out, str_make(ctx->set_name[i], strlen(ctx->set_name[i])),
                               str_make(ctx->set_value[i], strlen(ctx->set_value[i])));
    hdr_append_forwarding(out, req, ctx, client_host); /* X-Forwarded-Host: what the client asked */
    hdr_append_framing(out, ctx->framing, ctx->length);
    if (ctx->tunnel) {
        sbuf_append_header(out, STR_LIT("Connection"), STR_LIT("upgrade"));
        sbuf_append_header(out, STR_LIT("Upgrade"), req->upgrade);
    }
    sbuf_append(out, "\r\n", 2);
}

/* The origin's Vary already names Accept-Encoding (or is "*"). */
static bool hdr_varies_on_encoding(const struct http_msg *resp)
{
    for (uint32_t i = 0; i < resp->n_headers; i++) {
        const struct http_header *h = &resp->headers[i];
        if (!str_ieq_cstr(h->name, "vary"))
            continue;
        for (size_t k = 0; k + 1 <= h->value.n; k++) {
            if (h->value.p[k] == '*')
                return true;
            if (k + 15 <= h->value.n && strncasecmp(h->value.p + k, "accept-encoding", 15) == 0)
                return true;
        }
    }
    return false;
}

static bool hdr_response_skip(const struct http_msg *resp, const struct hdr_response_ctx *ctx,
                              struct str name)
{
    if (ctx->framing == HDR_FRAME_BODYLESS && str_ieq_cstr(name, "content-length"))
        return false; /* HEAD and 304 keep the length of the representation, RFC 9110 §8.6 */
    if (hdr_is_hop_by_hop(resp, name) || hdr_is_set_by_ops(ctx->ops, name))
        return true;
    if (str_ieq_cstr(name, "server"))
        return true; /* replaced by ours, or dropped: the backend stays unnamed */
    if (ctx->hsts.n && str_ieq_cstr(name, "strict-transport-security"))
        return true;
    if (ctx->content_encoding.n && (str_ieq_cstr(name, "content-length") || str_ieq_cstr(name, "etag")))
        return true; /* the length changes; the ETag is sent weakened below */
    if (ctx->vary_accept_encoding && str_ieq_cstr(name, "vary") && !hdr_varies_on_encoding(resp))
        return true; /* sent merged below */
    if ((ctx->age.n && str_ieq_cstr(name, "age")) || (ctx->cache_status.n && str_ieq_cstr(name, "cache-status")))
        return true;
    for (size_t i = 0; i < ctx->n_security; i++)
        if (str_ieq_cstr(name, ctx->security[i].name))
            return true;
    return ctx->fwd->via && str_ieq_cstr(name, "via");
}

/* Content-Encoding, weak ETag, Vary, Age and Cache-Status of a compressed or cached answer. */
static void hdr_append_delivery(struct sbuf *out, const struct http_msg *resp, const struct hdr_response_ctx *ctx)
{
    if (ctx->content_encoding.n) {
        sbuf_append_header(out, STR_LIT("Content-Encoding"), ctx->content_encoding);
        const struct http_header *etag = http_msg_find(resp, "etag");
        char weak[512];
        size_t n = etag ? compress_weak_etag(etag->value, weak, sizeof weak) : 0;
        if (n)
            sbuf_append_header(out, STR_LIT("ETag"), str_make(weak, n));
    }
    if (ctx->vary_accept_encoding && !hdr_varies_on_encoding(resp)) {
        bool has_vary = http_msg_find(resp, "vary") != NULL;
        if (has_vary)
            hdr_append_joined(out, resp, "Vary", STR_LIT(""), STR_LIT("Accept-Encoding"));
        else
            sbuf_append_header(out, STR_LIT("Vary"), STR_LIT("Accept-Encoding"));
    }
    if (ctx->age.n)
        sbuf_append_header(out, STR_LIT("Age"), ctx->age);
    if (ctx->cache_status.n)
        sbuf_append_header(out, STR_LIT("Cache-Status"), ctx->cache_status);
}

struct str hdr_server_value(const struct config *cfg)
{
    switch (cfg->server_header) {
    case SERVER_HEADER_OFF: return STR_LIT("");
    case SERVER_HEADER_CUSTOM: return str_make(cfg->server_header_text, strlen(cfg->server_header_text));
    case SERVER_HEADER_NAME: break;
    }
    return STR_LIT("portero");
}

void hdr_build_response(struct sbuf *out, const struct http_msg *resp, const struct hdr_response_ctx *ctx)
{
    sbuf_append_cstr(out, "HTTP/1.1 ");
    sbuf_append_u64(out, (uint64_t)resp->status);
    sbuf_append(out, " ", 1);
    if (resp->reason.n)
        sbuf_append_str(out, resp->reason);
    else
        sbuf_append_cstr(out, hdr_reason(resp->status));
    sbuf_append(out, "\r\n", 2);
    for (uint32_t i = 0; i < resp->n_headers; i++) {
        const struct http_header *h = &resp->headers[i];
        if (!hdr_response_skip(resp, ctx, h->name))
            sbuf_append_header(out, h->name, h->value);
    }
    hdr_append_ops(out, ctx->ops);
    for (size_t i = 0; i < ctx->n_security; i++)
        sbuf_append_header(out, str_make(ctx->security[i].name, strlen(ctx->security[i].name)),
                           str_make(ctx->security[i].value, strlen(ctx->security[i].value)));
    if (ctx->server.n && !hdr_is_set_by_ops(ctx->ops, STR_LIT("server")))
        sbuf_append_header(out, STR_LIT("Server"), ctx->server); /* a route's own rule wins */
    if (ctx->hsts.n)
        sbuf_append_header(out, STR_LIT("Strict-Transport-Security"), ctx->hsts);
    hdr_append_delivery(out, resp, ctx);
    if (ctx->fwd->via)
        hdr_append_joined(out, resp, "Via", STR_LIT(""), resp->version_minor ? STR_LIT("1.1 portero")
                                                                             : STR_LIT("1.0 portero"));
    hdr_append_framing(out, ctx->framing, ctx->length);
    if (ctx->tunnel) {
        sbuf_append_header(out, STR_LIT("Connection"), STR_LIT("upgrade"));
        sbuf_append_header(out, STR_LIT("Upgrade"), resp->upgrade);
    } else if (ctx->close) {
        sbuf_append_cstr(out, "Connection: close\r\n");
    } else if (ctx->keep_alive_10) {
        sbuf_append_cstr(out, "Connection: keep-alive\r\n");
    }
    sbuf_append(out, "\r\n", 2);
}

const char *hdr_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 417: return "Expectation Failed";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}
