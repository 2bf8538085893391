/* msg: a protocol-neutral HTTP message head. Slices point into the buffer that was parsed;
 * that buffer must outlive the message. */
#ifndef PORTERO_HTTP_MSG_H
#define PORTERO_HTTP_MSG_H

#include <stdbool.h>
#include <stdint.h>

#include "core/str.h"

struct http_header {
    struct str name;
    struct str value; /* OWS already trimmed */
};

enum http_method {
    HTTP_METHOD_OTHER, HTTP_METHOD_GET, HTTP_METHOD_HEAD, HTTP_METHOD_POST, HTTP_METHOD_PUT,
    HTTP_METHOD_DELETE, HTTP_METHOD_OPTIONS, HTTP_METHOD_TRACE, HTTP_METHOD_CONNECT,
    HTTP_METHOD_PATCH
};

struct http_msg {
    /* request line */
    struct str method;
    enum http_method method_id;
    struct str target;      /* as sent */
    struct str path;        /* origin-form path and query ("/a?b"); for absolute-form, its path part
                               ("/" when empty); for asterisk-form "*" */
    /* status line */
    int status;
    struct str reason;
    uint8_t version_minor;  /* HTTP/1.x */

    /* header fields in order; array owned by whoever set `headers` (capacity max_headers) */
    struct http_header *headers;
    uint32_t n_headers;
    uint32_t max_headers;

    /* framing facts, derived by the parser (RFC 9112 §6) */
    int64_t content_length; /* -1: no Content-Length */
    bool chunked;           /* Transfer-Encoding: chunked (final) */
    bool conn_close;        /* Connection: close, or HTTP/1.0 without keep-alive */
    bool conn_upgrade;      /* Connection lists "upgrade" */
    bool conn_names;        /* Connection lists other field names (hop-by-hop, RFC 9110 §7.6.1) */
    bool expect_continue;   /* request: Expect: 100-continue */
    bool absolute_form;     /* request target was absolute-form */
    struct str host;        /* request: the authority used for routing (target's if absolute-form) */
    struct str upgrade;     /* Upgrade value; empty if none or not honoured (HTTP/1.0, h2c offers) */
    uint32_t head_len;      /* bytes of the head including the final CRLF CRLF */
};

/* Returns the first header named NAME (case-insensitive), or NULL. */
const struct http_header *http_msg_find(const struct http_msg *msg, const char *name);
bool http_method_is_idempotent(enum http_method m);
/* RFC 9110 §9.2.1: GET, HEAD, OPTIONS, TRACE. */
bool http_method_is_safe(enum http_method m);

#endif
