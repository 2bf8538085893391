/* h2_server internals shared by h2_server.c (the session on the connection) and h2_stream.c (one
 * stream bridged to HTTP/1.1 bytes for its stream client). */
#ifndef PORTERO_PROXY_H2_SERVER_PRIV_H
#define PORTERO_PROXY_H2_SERVER_PRIV_H

#include <stdbool.h>
#include <stdint.h>

#include <nghttp2/nghttp2.h>

#include "core/buf.h"
#include "core/loop.h"
#include "core/sbuf.h"
#include "core/xport.h"
#include "http/h2_bridge.h"
#include "proxy/h2_server.h"

struct client;

/* Response body bytes decoded and waiting for DATA frames sit in one pooled buffer per stream
 * (BUF_SIZE): the exchange blocks when it is full, so a slow client holds at most that much of a
 * response beyond its window. */

/* One stream. Lives from its first HEADERS until nghttp2 closed it AND its stream client is gone
 * (freed by h2s_reap). */
struct h2_stream {
    struct h2_server *srv;
    struct h2_stream *next, *prev;   /* srv->streams */
    struct client *c;                /* the stream client (owned here), NULL before the request
                                        head is complete and after it was freed */
    int32_t id;
    enum http_method method;
    struct h2b_head head;            /* the header block being received (request, then trailers) */
    int reject;                      /* status to answer instead of the request (400, 431) */
    /* client -> exchange: [head][body, framed chunked on the fly unless content-length][tail] */
    struct sbuf in_head;
    size_t in_head_off;
    struct sbuf in_data;             /* DATA payload not yet read */
    size_t in_data_off;
    struct sbuf in_tail;             /* chunked: "0\r\n<trailers>\r\n" once END_STREAM came */
    size_t in_tail_off;
    uint64_t in_unconsumed;          /* DATA bytes received, not yet given back to flow control */
    uint64_t chunk_left;             /* data bytes of the chunk being read out */
    char frame[24];                  /* chunk framing due before anything else */
    uint8_t frame_len, frame_off;
    bool in_chunked;
    bool in_ended;                   /* END_STREAM received */
    bool in_discard;                 /* DATA is given back to flow control at once and dropped */
    /* exchange -> client */
    struct sbuf out_head;            /* response head bytes until the head is complete */
    struct h2b_body out_body;
    struct sbuf out_trailers;        /* trailer lines of a chunked response */
    struct buf *out;                 /* taken with a response head that has a body */
    bool out_started;                /* the final response was submitted */
    bool out_ended;                  /* every body byte is in `out` (or sent) */
    bool out_deferred;               /* the data provider said DEFERRED: resume on new bytes */
    bool out_blocked;                /* writev refused bytes: wake the exchange on room */
    bool end_sent;                   /* our END_STREAM went out */
    uint64_t discarded;              /* request body bytes dropped after the exchange ended */
    bool done;                       /* the exchange finished */
    bool released;                   /* the stream client is finished (done or closed) */
    bool active;                     /* counted in srv->n_active */
    bool ng_closed;                  /* nghttp2 closed the stream */
};

struct h2_server {
    struct client *c;                /* the connection */
    nghttp2_session *ng;
    struct loop_task task;           /* deferred: read more, start rejects, reap, flush */
    struct h2_stream *streams;
    uint32_t n_active;               /* streams with a request in progress (not idle) */
    bool reap;                       /* a stream was released or closed: h2s_reap has work */
    struct buf *wb;                  /* bytes for the socket; NULL when empty */
    const uint8_t *pend;             /* nghttp2_session_mem_send output not yet copied to wb */
    size_t pend_len;
    /* settings, copied at start (a reload does not change a running connection) */
    uint32_t max_header_bytes;
    uint32_t max_resets, max_control;
    uint64_t flood_window_ms, keepalive_ms, header_ms;
    /* flood accounting over flood_window_ms */
    uint64_t flood_start;
    uint32_t n_resets, n_control, data_credit;
    bool got_frame;                  /* the preface and a first frame arrived */
    bool draining;                   /* GOAWAY shutdown notice sent */
    bool final_goaway;               /* the last GOAWAY is queued */
    bool calm;                       /* a flood defence fired: GOAWAY(ENHANCE_YOUR_CALM), close */
    bool lingering;                  /* our side is closed: dropping what the client still sends */
    bool freeing;                    /* h2s_free runs: no nghttp2 calls from stream teardown */
    bool fatal;                      /* close the connection at the end of this run */
};

/* Runs the server soon (flush, reap), from a deferred task. */
void h2s_schedule(struct h2_server *s);
/* No stream has a request running any more: the idle timeout runs. */
void h2s_idle(struct h2_server *s);
/* A stream still has a request in progress (head arriving, or its exchange running). */
bool h2s_any_active(const struct h2_server *s);
/* A stream's header block has begun and not ended. */
bool h2s_head_pending(const struct h2_server *s);

/* h2_stream.c */
extern const struct xport_ops h2s_stream_xport_ops;
struct h2_stream *h2s_stream_new(struct h2_server *s, int32_t id);
/* The request's header block ended (END_STREAM says whether a body follows). */
void h2s_stream_request(struct h2_stream *st, bool end_stream);
/* The trailers block ended (it carries END_STREAM). */
void h2s_stream_trailers(struct h2_stream *st);
/* END_STREAM on DATA. */
void h2s_stream_end(struct h2_stream *st);
void h2s_stream_data(struct h2_stream *st, const uint8_t *data, size_t len);
/* nghttp2 closed the stream (both ends done, or reset). */
void h2s_stream_ng_closed(struct h2_stream *st);
/* Our END_STREAM went out (HEADERS or DATA). */
void h2s_stream_end_sent(struct h2_stream *st);
/* Answers pending rejects, frees finished stream clients and dead streams. */
void h2s_reap(struct h2_server *s);
/* Frees ST now (h2s_free): aborts its exchange. */
void h2s_stream_destroy(struct h2_stream *st);

#endif
