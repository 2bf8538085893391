/* exchange_local: answers portero composes itself — errors, step refusals, respond and redirect
 * routes — short, plain, and never naming a backend. */
#include "proxy/exchange_priv.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "core/sock.h"
#include "http/hdr.h"
#include "proxy/client.h"
#include "proxy/route.h"

/* --- local answers -------------------------------------------------------------------------- */

/* The request body is not (all) read: answering now means closing after (RFC 9112 §9.6). */
static bool ex_body_unread(const struct exchange *ex)
{
    if (ex->req_pump.in_kind != H1_BODY_NONE)
        return !ex->req_done;
    return h1_request_body_kind(&ex->req) != H1_BODY_NONE && !ex->body_held;
}


/* Starts writing a complete answer composed by us: RESP_HEAD holds head and body. */
static enum ex_step ex_send_local(struct exchange *ex, int status)
{
    ex->status = status;
    ex->resp_started = true;
    if (ex_body_unread(ex))
        ex->client_close = true;
    pump_init(&ex->resp_pump, H1_BODY_NONE, 0, false, &ex->resp_head);
    ex->resp_pump.prefix_off = ex->resp_head_off;
    ex->state = EX_LOCAL;
    return EX_AGAIN;
}

static void ex_local_head(struct exchange *ex, int status, size_t body_len)
{
    struct sbuf *h = &ex->resp_head;
    if (ex_body_unread(ex))
        ex->client_close = true; /* say so in this head: the unread body would be taken for the
                                    next request */
    sbuf_append_cstr(h, "HTTP/1.1 ");
    sbuf_append_u64(h, (uint64_t)status);
    sbuf_append(h, " ", 1);
    sbuf_append_cstr(h, hdr_reason(status));
    sbuf_append_cstr(h, "\r\nContent-Length: ");
    sbuf_append_u64(h, body_len);
    sbuf_append(h, "\r\n", 2);
    if (ex->client_close || ex->w->draining)
        sbuf_append_cstr(h, "Connection: close\r\n");
    else if (ex->req.version_minor == 0)
        sbuf_append_cstr(h, "Connection: keep-alive\r\n");
    struct str server = hdr_server_value(ex->cfg);
    if (server.n)
        sbuf_append_header(h, STR_LIT("Server"), server);
    char hsts_buf[96];
    struct str hsts = ex_hsts(ex, hsts_buf, sizeof hsts_buf);
    if (hsts.n)
        sbuf_append_header(h, STR_LIT("Strict-Transport-Security"), hsts);
    for (size_t i = 0; ex->route && i < ex->route->n_security_headers; i++) {
        const struct conf_header_kv *kv = &ex->route->security_headers[i];
        sbuf_append_header(h, str_make(kv->name, strlen(kv->name)), str_make(kv->value, strlen(kv->value)));
    }
}

/* A short plain answer that reveals nothing about the backends (DESIGN: errors a client can see),
 * with EXTRA header lines (a request step's Retry-After, WWW-Authenticate...) if not NULL. */
enum ex_step ex_send_answer(struct exchange *ex, int status, const struct sbuf *extra)
{
    char body[96];
    int n = snprintf(body, sizeof body, "%d %s\n", status, hdr_reason(status));
    if (status == 400 || status == 408 || status == 413 || status == 414 || status == 431 ||
        status == 501 || status == 505)
        ex->client_close = true;
    ex->resp_head.len = ex->resp_head_off; /* drop any unsent interim head */
    ex_local_head(ex, status, (size_t)n);
    if (extra && extra->len)
        sbuf_append(&ex->resp_head, extra->p, extra->len);
    sbuf_append_cstr(&ex->resp_head, "Content-Type: text/plain\r\n\r\n");
    if (ex->req.method_id != HTTP_METHOD_HEAD)
        sbuf_append(&ex->resp_head, body, (size_t)n);
    return ex_send_local(ex, status);
}

enum ex_step ex_send_error(struct exchange *ex, int status)
{
    return ex_send_answer(ex, status, NULL);
}

enum ex_step ex_respond_route(struct exchange *ex)
{
    const struct conf_route *r = ex->route;
    size_t len = strlen(r->respond_body);
    ex_local_head(ex, r->respond_status, len);
    for (size_t i = 0; i < r->n_respond_headers; i++)
        sbuf_append_header(&ex->resp_head, str_make(r->respond_headers[i].name, strlen(r->respond_headers[i].name)),
                           str_make(r->respond_headers[i].value, strlen(r->respond_headers[i].value)));
    sbuf_append(&ex->resp_head, "\r\n", 2);
    if (ex->req.method_id != HTTP_METHOD_HEAD)
        sbuf_append(&ex->resp_head, r->respond_body, len);
    return ex_send_local(ex, r->respond_status);
}

/* The address the client reached us at ("127.0.0.1:8080", "[::1]:8080"), for $host when an
 * HTTP/1.0 request named no Host: a redirect to "http:///new" would lead nowhere. */
static struct str ex_local_host(const struct exchange *ex, char *buf, size_t cap)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    char ip[64];
    const struct client *conn = ex->c->parent ? ex->c->parent : ex->c;
    if (getsockname(conn->io.fd, (struct sockaddr *)&ss, &len) < 0 ||
        !sock_format_ip((const struct sockaddr *)&ss, ip, sizeof ip))
        return STR_LIT("");
    unsigned port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                    : ((struct sockaddr_in *)&ss)->sin_port);
    int n = snprintf(buf, cap, ss.ss_family == AF_INET6 ? "[%s]:%u" : "%s:%u", ip, port);
    return n > 0 && (size_t)n < cap ? str_make(buf, (size_t)n) : STR_LIT("");
}

enum ex_step ex_redirect_route(struct exchange *ex)
{
    char location[8192], local[96];
    struct str host = ex->req.host.n ? ex->req.host : ex_local_host(ex, local, sizeof local);
    int n = route_redirect_location(ex->route, host, ex->req.path, ex->c->tls ? "https" : "http", location,
                                    sizeof location);
    if (n < 0)
        return ex_send_error(ex, 414);
    ex_local_head(ex, ex->route->redirect_status, 0);
    sbuf_append_header(&ex->resp_head, STR_LIT("Location"), str_make(location, (size_t)n));
    sbuf_append(&ex->resp_head, "\r\n", 2);
    return ex_send_local(ex, ex->route->redirect_status);
}

/* A plain listener with `redirect_https`: every request is sent to the same place over https
 * (301 for GET and HEAD; 308 keeps the method and body of the others, RFC 9110 §15.4.9). */
enum ex_step ex_redirect_https(struct exchange *ex, uint32_t port)
{
    char location[8192], local[96], portbuf[16] = "";
    struct str host = ex->req.host.n ? ex->req.host : ex_local_host(ex, local, sizeof local);
    size_t hn = host.n;
    if (hn && host.p[0] == '[') {
        const char *end = memchr(host.p, ']', host.n);
        hn = end ? (size_t)(end - host.p) + 1 : host.n;
    } else {
        const char *colon = hn ? memchr(host.p, ':', host.n) : NULL;
        hn = colon ? (size_t)(colon - host.p) : host.n;
    }
    if (port != 443)
        snprintf(portbuf, sizeof portbuf, ":%u", port);
    int n = snprintf(location, sizeof location, "https://%.*s%s%.*s", (int)hn, host.p, portbuf,
                     (int)ex->req.target.n, ex->req.target.p);
    if (n < 0 || (size_t)n >= sizeof location)
        return ex_send_error(ex, 414);
    int status = ex->req.method_id == HTTP_METHOD_GET || ex->req.method_id == HTTP_METHOD_HEAD ? 301 : 308;
    ex_local_head(ex, status, 0);
    sbuf_append_header(&ex->resp_head, STR_LIT("Location"), str_make(location, (size_t)n));
    sbuf_append(&ex->resp_head, "\r\n", 2);
    return ex_send_local(ex, status);
}

enum ex_step ex_local_step(struct exchange *ex)
{
    struct client *c = ex->c;
    enum pump_status s = pump_run(&ex->resp_pump, &c->in, &c->xp, &c->readable, &c->xp, &c->writable);
    if (s == PUMP_DONE)
        return ex_finish(ex, false);
    if (s != PUMP_BLOCKED)
        return ex_abort_client(ex);
    ex_arm_client_timer(ex, ex->cfg->limits.send_timeout_ms);
    return EX_WAIT;
}

