/* hdr: composing the heads portero sends — hop-by-hop removal (RFC 9110 §7.6.1), forwarding
 * headers (X-Forwarded-*, RFC 7239 Forwarded, Via), per-route rewrites, and our own framing. */
#ifndef PORTERO_HTTP_HDR_H
#define PORTERO_HTTP_HDR_H

#include <stdbool.h>
#include <stdint.h>

#include "conf/config.h"
#include "core/sbuf.h"
#include "http/msg.h"

/* How the body we send is framed; decides Content-Length / Transfer-Encoding we write. */
enum hdr_framing {
    HDR_FRAME_NONE,      /* no body, and no Content-Length written (requests without body) */
    HDR_FRAME_BODYLESS,  /* response without body (HEAD, 204, 304): keep the origin's Content-Length */
    HDR_FRAME_LENGTH,    /* Content-Length: length */
    HDR_FRAME_CHUNKED,   /* Transfer-Encoding: chunked */
    HDR_FRAME_CLOSE      /* delimited by closing the connection (HTTP/1.0 clients) */
};

struct hdr_request_ctx {
    const struct conf_forwarding *fwd;
    const struct conf_header_ops *ops; /* route's request_headers, may be NULL */
    struct str path;                   /* path+query to send (after strip_prefix) */
    struct str client_ip;              /* textual */
    bool client_ipv6;
    const char *scheme;                /* "http" */
    struct str fallback_host;          /* Host to send when the client sent none (HTTP/1.0) */
    bool tunnel;                       /* forward Upgrade (WebSocket handshake) */
    enum hdr_framing framing;
    uint64_t length;                   /* with HDR_FRAME_LENGTH */
    /* Headers a request step decided (auth claims, forward-auth answers): every client header of
     * these names is dropped, and those with a value are sent. */
    const char *const *set_name;
    char *const *set_value;
    size_t n_set;
};

/* Appends the request head to send upstream (always HTTP/1.1, keep-alive). */
void hdr_build_request(struct sbuf *out, const struct http_msg *req, const struct hdr_request_ctx *ctx);

struct hdr_response_ctx {
    const struct conf_forwarding *fwd;
    const struct conf_header_ops *ops; /* route's response_headers, may be NULL */
    enum hdr_framing framing;
    uint64_t length;
    bool close;                        /* tell the client we close after this response */
    bool keep_alive_10;                /* HTTP/1.0 client kept alive: say "Connection: keep-alive" */
    bool tunnel;                       /* 101 Switching Protocols: forward Upgrade */
    const struct conf_header_kv *security; /* route's security_headers: set, replacing the origin's */
    size_t n_security;
    struct str server;                 /* Server value to send instead of the origin's; empty:
                                          drop the origin's and send none */
    struct str hsts;                   /* Strict-Transport-Security value of a TLS listener (replaces
                                          the origin's); empty: leave the origin's alone */
    struct str content_encoding;       /* we compress the body with this coding: Content-Length
                                          goes, the ETag is weakened (RFC 9110 §8.8.3) */
    bool vary_accept_encoding;         /* the representation depends on Accept-Encoding: say so */
    struct str age;                    /* Age to send (a cached answer), replacing the origin's */
    struct str cache_status;           /* Cache-Status value (RFC 9211), empty: none */
};

/* Appends the response head for the client (status line always HTTP/1.1, RFC 9110 §6.2). */
void hdr_build_response(struct sbuf *out, const struct http_msg *resp, const struct hdr_response_ctx *ctx);

/* True when NAME must not be forwarded: a hop-by-hop field, or one listed in MSG's Connection. */
bool hdr_is_hop_by_hop(const struct http_msg *msg, struct str name);

/* Server value for CFG's server_header ("" when off). */
struct str hdr_server_value(const struct config *cfg);

/* Reason phrase for a status we generate ("Not Found"); "Unknown" if we have none. */
const char *hdr_reason(int status);

#endif
