/* h2_bridge: conversions between HTTP/2 messages and HTTP/1.1 bytes, shared by the downstream
 * (h2_server) and upstream (h2_upstream) bridges. HTTP/2 is bridged to HTTP/1.1 so that one
 * exchange state machine serves both protocols: an HTTP/2 header block becomes an HTTP/1.1 head
 * that the strict h1 parser reads again, and an HTTP/1.1 head becomes an nghttp2_nv array.
 *
 * Pure: no I/O, no loop, no nghttp2 session (only its nghttp2_nv type). */
#ifndef PORTERO_HTTP_H2_BRIDGE_H
#define PORTERO_HTTP_H2_BRIDGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nghttp2/nghttp2.h>

#include "core/sbuf.h"
#include "http/h1.h"
#include "http/msg.h"

/* ------------------------------------------------------------------------------------------ */
/* 1. HTTP/2 header block -> HTTP/1.1 head                                                     */

enum h2b_block {
    H2B_REQUEST,   /* request HEADERS: pseudo-headers :method :scheme :path (:authority) */
    H2B_RESPONSE,  /* response HEADERS: :status (a 1xx block is an interim response) */
    H2B_TRAILERS   /* trailing HEADERS: no pseudo-headers; becomes a chunked trailer section */
};

/* Flags of h2b_head_finish. */
#define H2B_F_BODY 1u  /* the block did not carry END_STREAM: a body follows */
#define H2B_F_HEAD 2u  /* response to a HEAD request: it has no body whatever its fields say */

/* One header block being collected. Zero-initialize with h2b_head_init, add each field as
 * nghttp2 delivers it (on_header), then h2b_head_finish; always h2b_head_free. */
struct h2b_head {
    enum h2b_block kind;
    uint32_t max_list;       /* RFC 9113 §6.5.2 header list size bound (name + value + 32 per
                                field); 0 = unbounded */
    uint32_t list_size;      /* private: size so far */
    int error;               /* first error, sticky: 0, -400 malformed, -431 too large */
    bool regular_seen;       /* private: pseudo-headers must all come first (§8.3) */
    bool has_cl;             /* private: a content-length field was seen */
    bool has_host;           /* private */
    /* outputs, valid after h2b_head_add / h2b_head_finish returned 0 */
    enum http_method method_id; /* request: the method */
    int status;              /* response: the :status (100..599) */
    int64_t content_length;  /* the content-length field's value, -1 if none or unparsable */
    bool body_chunked;       /* finish: the head says Transfer-Encoding: chunked (request or
                                response with a body and no content-length) */
    struct h2b_slice { uint32_t off, len; } method, scheme, authority, path, host; /* private:
                                where `values` holds the pseudo-header values and host */
    struct sbuf values;      /* private */
    struct sbuf fields;      /* private: regular fields as "name: value\r\n" */
    struct sbuf cookie;      /* private: cookie crumbs joined with "; " (§8.2.3) */
};

void h2b_head_init(struct h2b_head *h, enum h2b_block kind, uint32_t max_list);
/* Adds one field (NAME lowercase, as received). Returns 0, or the (sticky) error: -1 when out of
 * memory, -400 for a
 * malformed field (§8.2.1 uppercase or non-token name, CR/LF/NUL or surrounding whitespace in a
 * value, unknown/misplaced/duplicate pseudo-header, connection-specific field §8.2.2, te other than
 * "trailers"), -431 when the list passes max_list. */
int h2b_head_add(struct h2b_head *h, const uint8_t *name, size_t nlen, const uint8_t *value,
                 size_t vlen);
/* Appends to OUT the HTTP/1.1 rendering of the block (FLAGS: H2B_F_*):
 *   request:  "METHOD PATH HTTP/1.1\r\nhost: AUTHORITY\r\n<fields>\r\n" (RFC 9113 §8.3.1: :method,
 *             :scheme, :path required; CONNECT refused with -400 for now); a body without
 *             content-length gets "transfer-encoding: chunked" (body_chunked set)
 *   response: "HTTP/1.1 STATUS Reason\r\n<fields>\r\n"; a final response with a body and no
 *             content-length gets "transfer-encoding: chunked"; one without a body (END_STREAM,
 *             not HEAD, not 204/304) and no content-length gets "content-length: 0"
 *   trailers: "0\r\n<fields>\r\n" (the end of a chunked body; content-length and framing fields
 *             are dropped)
 * Returns 0, the sticky error, -400 for a missing pseudo-header, or -1 when out of memory. */
int h2b_head_finish(struct h2b_head *h, unsigned flags, struct sbuf *out);
void h2b_head_free(struct h2b_head *h);

/* ------------------------------------------------------------------------------------------ */
/* 2. HTTP/1.1 head -> nghttp2_nv array                                                        */

/* A self-contained nv array: names (lowercased) and values are copies in MEM. */
struct h2b_nv {
    nghttp2_nv *nv;
    size_t n;
    char *mem;     /* owned; freed by h2b_nv_free with the array */
};

/* REQ as parsed by h1_parse_request -> :method, :scheme (SCHEME, e.g. "https"), :authority (the
 * request's host: Host or the absolute-form authority), :path, then the fields minus the
 * connection-specific ones (RFC 9113 §8.2.2: Connection and what it lists, Keep-Alive,
 * Proxy-Connection, Transfer-Encoding, Upgrade) and Host; TE only as "te: trailers".
 * CONNECT gets :method and :authority only (§8.5). Returns 0, or -1 (no memory, no authority). */
int h2b_nv_request(const struct http_msg *req, const char *scheme, struct h2b_nv *out);
/* RESP as parsed by h1_parse_response -> :status then the fields (same filtering). 0 or -1. */
int h2b_nv_response(const struct http_msg *resp, struct h2b_nv *out);
/* Trailer field lines ("name: value\r\n" each, as the chunked decoder collects them) -> nv
 * (connection-specific and framing fields dropped). Returns 0, or -1 (malformed, no memory). */
int h2b_nv_trailers(const char *lines, size_t len, struct h2b_nv *out);
void h2b_nv_free(struct h2b_nv *nv);

/* ------------------------------------------------------------------------------------------ */
/* 3. Streaming decoder of an HTTP/1.1 message body (the bytes an exchange writes)             */

struct h2b_body {
    enum h1_body_kind kind;
    uint64_t left;          /* LENGTH: bytes still expected */
    struct h1_chunked ck;   /* CHUNKED: decoder state (ck.trailers receives the trailer lines) */
    bool ended;             /* every body byte was produced (CLOSE: only via h2b_body_eof) */
};

/* KIND/LENGTH as h1_*_body_kind and content_length say; TRAILERS (may be NULL, not owned)
 * receives each trailer field line "name: value\r\n" of a chunked body. */
void h2b_body_init(struct h2b_body *b, enum h1_body_kind kind, uint64_t length,
                   struct sbuf *trailers);
/* Takes body bytes from IN[0..LEN) and copies their data to OUT (room CAP; CAP == 0 takes
 * nothing). *CONSUMED: input bytes used; *PRODUCED: data bytes written. Returns 1 when the body
 * ended (input past *CONSUMED is not part of it), 0 when more is expected, -1 malformed. */
int h2b_body_decode(struct h2b_body *b, const char *in, size_t len, char *out, size_t cap,
                    size_t *consumed, size_t *produced);
/* The source closed: ends a CLOSE body (returns 1); any other unfinished body was cut (-1). */
int h2b_body_eof(struct h2b_body *b);

/* ------------------------------------------------------------------------------------------ */
/* 4. Data -> chunked bytes (RFC 9112 §7.1)                                                   */

/* Appends one chunk carrying DATA[0..N) ("n\r\n" data "\r\n"); nothing when N == 0. */
void h2b_chunk_append(struct sbuf *out, const void *data, size_t n);
/* Appends the last chunk and the trailer section: "0\r\n" LINES "\r\n" (LINES may be empty). */
void h2b_chunk_last(struct sbuf *out, const char *lines, size_t len);

#endif
