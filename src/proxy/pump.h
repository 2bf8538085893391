/* pump: moves one message body (or a tunnel's bytes) from a source socket through one bounded
 * buffer to a destination socket, re-framing it on the way (RFC 9112 §6, §7.1).
 *
 * Backpressure is structural: the pump reads only while its buffer has room, and the buffer is
 * emptied only by writing. Readiness is edge-triggered, so the caller keeps `readable` and
 * `writable` flags that the pump clears on EAGAIN and the event handler sets again. */
#ifndef PORTERO_PROXY_PUMP_H
#define PORTERO_PROXY_PUMP_H

#include <stdbool.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/sbuf.h"
#include "core/xport.h"
#include "http/h1.h"

enum pump_status {
    PUMP_BLOCKED,    /* waiting for readiness */
    PUMP_DONE,       /* body complete and fully written */
    PUMP_SRC_EOF,    /* source closed before the body was complete */
    PUMP_SRC_ERROR,  /* read error, or malformed chunked framing */
    PUMP_DST_ERROR,  /* write error (peer gone) */
    PUMP_NO_MEMORY,
    PUMP_TOO_LARGE   /* the body passed `limit`: nothing past the limit was written */
};

/* Sees the decoded body as it passes (e.g. fills a cache object). */
struct pump_observer {
    void (*fn)(void *arg, const char *data, size_t len);
    void *arg;
};

enum pump_flush { PUMP_FLUSH_NONE, PUMP_FLUSH_SYNC, PUMP_FLUSH_FINISH };

/* A body transform between decoding and writing. RUN takes IN[0..in_len) and writes to
 * OUT[0..cap), reporting *CONSUMED and *PRODUCED; FLUSH SYNC makes what was consumed decodable
 * now (the source paused: a stream must not sit in the filter), FINISH ends it. Returns 1 when
 * the flush goal is reached, 0 to be called again with more room, -1 on error. */
struct pump_filter {
    int (*run)(void *ctx, const char *in, size_t in_len, size_t *consumed, char *out, size_t cap,
               size_t *produced, enum pump_flush flush);
    void *ctx;                  /* not owned */
    struct buf *out;            /* transformed bytes waiting to be written (owned by the pump
                                   until pump_release) */
    uint32_t ready;             /* bytes in out */
    bool dirty;                 /* input consumed since the last flush */
    bool finished;              /* FINISH reached */
};

struct pump {
    enum h1_body_kind in_kind;  /* NONE, LENGTH, CHUNKED or CLOSE (CLOSE also = tunnel) */
    uint64_t in_left;           /* LENGTH: body bytes not yet taken from the source */
    struct h1_chunked dec;
    bool out_chunked;           /* frame what we write as chunked */
    bool in_done;               /* every body byte is in the buffer (or sent) */
    bool src_eof;               /* the source said EOF (tunnels) */
    uint32_t ready;             /* decoded body bytes at the buffer's read position */
    uint32_t seg_len;           /* chunked out: data bytes of the chunk being written */
    uint32_t seg_sent;          /* chunked out: bytes of [size line][data][CRLF] written */
    uint8_t seg_hdr_len;
    char seg_hdr[20];
    uint32_t term_sent;         /* chunked out: bytes of the terminator ("0\r\n", the trailers
                                   kept in dec.trailers if set, "\r\n") written */
    struct sbuf *prefix;        /* optional head to write before the body, not owned */
    uint32_t prefix_off;
    uint64_t limit;             /* most body bytes allowed, 0 = no limit */
    struct sbuf *tap;           /* optional, not owned: receives a copy of LENGTH body bytes */
    struct sbuf *sink;          /* optional, not owned: the decoded body goes here instead of
                                   to a destination socket (a body held for inspection) */
    struct pump_observer observer; /* optional: sees every decoded body byte (a cache fill) */
    struct pump_filter filter;  /* optional: transforms the decoded body (compression); the
                                   output is then framed chunked or close-delimited */
    uint64_t body;              /* body bytes taken from the source (decoded) */
    uint64_t bytes_in;          /* bytes read from the source */
    uint64_t bytes_out;         /* bytes written to the destination (prefix included) */
};

/* Prepares P for a body of KIND (LENGTH uses LENGTH bytes). PREFIX, if not NULL, is written first. */
void pump_init(struct pump *p, enum h1_body_kind kind, uint64_t length, bool out_chunked,
               struct sbuf *prefix);

/* Makes as much progress as readiness allows. *BUF is the source-side buffer: it may hold bytes
 * already read (the start of the body, and bytes past its end which the pump leaves alone); the
 * pump takes one from buf_get() if *BUF is NULL. DST may be NULL with a sink. Returns why it
 * stopped. To carry a chunked body's trailers across, set dec.trailers after pump_init. */
enum pump_status pump_run(struct pump *p, struct buf **buf, struct xport *src, bool *src_readable,
                          struct xport *dst, bool *dst_writable);

/* True once everything the pump must write has been written. */
bool pump_finished(const struct pump *p);
/* Gives back what the pump holds beyond the caller's buffers (a filter's output buffer). */
void pump_release(struct pump *p);

#endif
