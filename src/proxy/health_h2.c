/* health_h2: one HTTP/2 GET over memory, for active health checks (see the header). nghttp2
 * does framing, HPACK and the protocol's rules (RFC 9113 §8.3.2: :status must be present and
 * valid, else the stream is reset); we only watch the response's first final header block. */
#include "proxy/health_h2.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nghttp2/nghttp2.h>

#define HEALTH_H2_WINDOW 65535        /* we never read the body: the default window is plenty */
#define HEALTH_H2_MAX_LIST (16 * 1024) /* advertised header list bound (§6.5.2), like the h1 head */

struct health_h2 {
    nghttp2_session *sess;  /* owned */
    int32_t stream;         /* our request's stream id */
    int pending_status;     /* :status of the header block being received, 0 if none yet */
    int status;             /* the final status, 0 until known */
    bool failed;
    char why[160];          /* the reason, once failed */
    char last_error[120];   /* nghttp2's last complaint, to explain a session that ends */
};

__attribute__((format(printf, 2, 3)))
static void health_h2_fail(struct health_h2 *s, const char *fmt, ...)
{
    if (s->failed || s->status)
        return; /* the first verdict stands */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->why, sizeof s->why, fmt, ap);
    va_end(ap);
    s->failed = true;
}

/* A three-digit status (RFC 9110 §15), else 0. */
static int health_h2_parse_status(const uint8_t *v, size_t n)
{
    if (n != 3 || v[0] < '1' || v[0] > '5' || v[1] < '0' || v[1] > '9' || v[2] < '0' || v[2] > '9')
        return 0;
    return (v[0] - '0') * 100 + (v[1] - '0') * 10 + (v[2] - '0');
}

static int health_h2_on_header(nghttp2_session *sess, const nghttp2_frame *frame,
                               const uint8_t *name, size_t nlen, const uint8_t *value,
                               size_t vlen, uint8_t flags, void *arg)
{
    (void)sess;
    (void)flags;
    struct health_h2 *s = arg;
    if (frame->hd.type == NGHTTP2_HEADERS && frame->hd.stream_id == s->stream && nlen == 7 &&
        memcmp(name, ":status", 7) == 0)
        s->pending_status = health_h2_parse_status(value, vlen);
    return 0;
}

/* A complete header block: the first final one gives the verdict, a 1xx is skipped (§8.1). */
static int health_h2_on_frame(nghttp2_session *sess, const nghttp2_frame *frame, void *arg)
{
    (void)sess;
    struct health_h2 *s = arg;
    if (frame->hd.type == NGHTTP2_GOAWAY && frame->goaway.last_stream_id < s->stream)
        health_h2_fail(s, "HTTP/2 GOAWAY before the request (%s)",
                       nghttp2_http2_strerror(frame->goaway.error_code));
    if (frame->hd.type != NGHTTP2_HEADERS || frame->hd.stream_id != s->stream)
        return 0;
    if (s->pending_status >= 200 && !s->failed && !s->status)
        s->status = s->pending_status;
    s->pending_status = 0;
    return 0;
}

static int health_h2_on_close(nghttp2_session *sess, int32_t stream, uint32_t code, void *arg)
{
    (void)sess;
    struct health_h2 *s = arg;
    if (stream != s->stream)
        return 0;
    if (code != NGHTTP2_NO_ERROR)
        health_h2_fail(s, "HTTP/2 stream reset (%s)", nghttp2_http2_strerror(code));
    else
        health_h2_fail(s, "HTTP/2 stream ended without a response");
    return 0;
}

/* nghttp2 explains what it is about to do about bad input (GOAWAY, RST_STREAM, or ignoring a
 * field); kept to say why the session ended, not a verdict by itself. */
static int health_h2_on_error(nghttp2_session *sess, int code, const char *msg, size_t len,
                              void *arg)
{
    (void)sess;
    (void)code;
    struct health_h2 *s = arg;
    snprintf(s->last_error, sizeof s->last_error, "%.*s", (int)len, msg);
    return 0;
}

static int health_h2_session(struct health_h2 *s)
{
    nghttp2_session_callbacks *cb;
    if (nghttp2_session_callbacks_new(&cb) != 0)
        return -1;
    nghttp2_session_callbacks_set_on_header_callback(cb, health_h2_on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, health_h2_on_frame);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, health_h2_on_close);
    nghttp2_session_callbacks_set_error_callback2(cb, health_h2_on_error);
    int rc = nghttp2_session_client_new(&s->sess, cb, s);
    nghttp2_session_callbacks_del(cb);
    return rc == 0 ? 0 : -1;
}

/* nghttp2_submit_request copies names and values (no NO_COPY flag): the caller's strings need
 * not outlive the call. */
#define HEALTH_H2_NV(n, v) { (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE }

/* SETTINGS first (§3.4: the preface is the magic then SETTINGS; nghttp2 sends the magic), then
 * the request: no push wanted, no body, END_STREAM on HEADERS. */
static int health_h2_submit(struct health_h2 *s, const char *scheme, const char *authority,
                            const char *path)
{
    const nghttp2_settings_entry iv[] = {
        { NGHTTP2_SETTINGS_ENABLE_PUSH, 0 },
        { NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, HEALTH_H2_WINDOW },
        { NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, HEALTH_H2_MAX_LIST },
    };
    if (nghttp2_submit_settings(s->sess, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]) != 0)
        return -1;
    const nghttp2_nv nv[] = {
        HEALTH_H2_NV(":method", "GET"),
        HEALTH_H2_NV(":scheme", scheme),
        HEALTH_H2_NV(":authority", authority),
        HEALTH_H2_NV(":path", path),
        HEALTH_H2_NV("user-agent", "portero-health"),
    };
    s->stream = nghttp2_submit_request(s->sess, NULL, nv, sizeof nv / sizeof nv[0], NULL, NULL);
    return s->stream > 0 ? 0 : -1;
}

struct health_h2 *health_h2_new(const char *scheme, const char *authority, const char *path)
{
    struct health_h2 *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    if (health_h2_session(s) < 0 || health_h2_submit(s, scheme, authority, path) < 0) {
        health_h2_free(s);
        return NULL;
    }
    return s;
}

void health_h2_free(struct health_h2 *s)
{
    if (!s)
        return;
    nghttp2_session_del(s->sess);
    free(s);
}

int health_h2_output(struct health_h2 *s, struct sbuf *out)
{
    for (;;) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(s->sess, &data);
        if (n < 0)
            return -1;
        if (n == 0)
            return out->failed ? -1 : 0;
        sbuf_append(out, data, (size_t)n);
    }
}

/* A connection error makes nghttp2 queue GOAWAY and stop reading once it is sent (§5.4.1):
 * hence the output first, then the question whether a response can still come. */
int health_h2_input(struct health_h2 *s, const void *data, size_t len, struct sbuf *out,
                    int *status, char *err, size_t cap)
{
    ssize_t n = nghttp2_session_mem_recv(s->sess, data, len);
    if (n < 0)
        health_h2_fail(s, "HTTP/2 protocol error: %s", nghttp2_strerror((int)n));
    else if (!s->status && health_h2_output(s, out) < 0)
        health_h2_fail(s, "HTTP/2 session failed");
    else if (!s->status && !nghttp2_session_want_read(s->sess))
        health_h2_fail(s, "HTTP/2 protocol error: %s",
                       s->last_error[0] ? s->last_error : "the session ended");
    if (s->status) {
        *status = s->status;
        return 1;
    }
    if (s->failed) {
        snprintf(err, cap, "%s", s->why);
        return -1;
    }
    return 0;
}

void health_h2_goodbye(struct health_h2 *s)
{
    nghttp2_session_terminate_session(s->sess, NGHTTP2_NO_ERROR);
}
