/* h1: strict HTTP/1.1 parsing (RFC 9112) and the chunked codec.
 *
 * The parsers are pure: they read bytes, fill a struct http_msg with slices into those bytes,
 * and never allocate. They can be called again on a longer buffer when more bytes arrive;
 * errors are detected as early as the bytes allow, so a bare LF or a NUL fails at once
 * rather than when the head is complete. */
#ifndef PORTERO_HTTP_H1_H
#define PORTERO_HTTP_H1_H

#include <stddef.h>
#include <stdint.h>

#include "core/sbuf.h"
#include "http/msg.h"

struct h1_limits {
    uint32_t max_request_line; /* request line longer than this -> -414 */
    uint32_t max_header_bytes; /* head longer than this -> -431 */
    uint32_t max_headers;      /* more header fields than this -> -431 (and <= msg->max_headers) */
};

/* Return values of the head parsers:
 *   > 0  the head is complete; the value is its length in bytes (also msg->head_len)
 *   0    need more bytes (nothing wrong so far)
 *   < 0  minus an HTTP status to answer with: -400 malformed, -414 request line too long,
 *        -431 head too large or too many fields, -501 unknown transfer coding,
 *        -505 unsupported HTTP version.
 * MSG->headers must point to an array of MSG->max_headers entries before the call. */
int h1_parse_request(const char *buf, size_t len, const struct h1_limits *lim, struct http_msg *msg);
/* Same for a response head; any negative value means "malformed response" (the proxy answers 502). */
int h1_parse_response(const char *buf, size_t len, const struct h1_limits *lim, struct http_msg *msg);

enum h1_body_kind { H1_BODY_NONE, H1_BODY_LENGTH, H1_BODY_CHUNKED, H1_BODY_CLOSE };
/* How the body of a parsed response is framed, RFC 9112 §6.3: HEAD requests, 1xx, 204 and 304
 * have none; then chunked, then Content-Length, else read until close. */
enum h1_body_kind h1_response_body_kind(const struct http_msg *resp, enum http_method req_method);
/* Request bodies: chunked, Content-Length, or none (never close-delimited). */
enum h1_body_kind h1_request_body_kind(const struct http_msg *req);

/* Incremental chunked decoder (RFC 9112 §7.1). Chunk extensions are skipped; trailer fields are
 * checked (token name, field-value bytes, CRLF; bounded by H1_CHUNKED_MAX_TRAILER bytes) and
 * dropped, or kept when `trailers` is set. */
#define H1_CHUNKED_MAX_TRAILER 8192
struct h1_chunked {
    uint8_t state;      /* private */
    uint8_t size_digits;/* private */
    uint32_t aux;       /* private: bytes seen in the current extension / trailer section */
    uint64_t remaining; /* private: data bytes left in the current chunk */
    struct sbuf *trailers; /* optional, not owned: receives the trailer field lines, each with its
                              CRLF (gRPC's status travels there), minus the fields a trailer must
                              not carry (RFC 9110 §6.5.1: framing, routing, auth, ...) */
    uint32_t tr_line;   /* private: where the trailer line being kept starts in *trailers */
};

/* Decodes IN[0..LEN) in place: the data bytes found are moved to the start of IN and their count
 * stored in *PRODUCED; the input bytes used are stored in *CONSUMED (never more than LEN).
 * Returns 0 when more input is needed, 1 when the last chunk and trailers are done (input after
 * *CONSUMED belongs to the next message), -1 on malformed input (overflow, non-hex, "0x",
 * missing CRLF after data, bare LF). */
int h1_chunked_decode(struct h1_chunked *st, char *in, size_t len, size_t *consumed,
                      size_t *produced);

/* Writes a chunk-size line for N data bytes ("1a2\r\n") into OUT (>= 18 bytes); returns length. */
size_t h1_chunk_header(char *out, uint64_t n);

#endif
