#include "policy/fwdauth.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "core/sock.h"
#include "http/h1.h"
#include "http/hdr.h"

#define FWDAUTH_HEAD_MAX (16 * 1024)  /* the answer's head; also the read buffer's size */
#define FWDAUTH_MAX_HEADERS 100
#define FWDAUTH_BODY_MAX (64 * 1024)  /* body bytes read (and dropped) before closing anyway */
#define FWDAUTH_DEFAULT_TIMEOUT_MS 2000
#define FWDAUTH_HOST_CAP 64           /* "[v6]:port" */

enum fwdauth_phase { FWDAUTH_CONNECTING, FWDAUTH_SENDING, FWDAUTH_HEAD, FWDAUTH_BODY, FWDAUTH_DONE };

struct fwdauth_op {
    struct loop *loop;
    const struct conf_auth *auth;     /* borrowed until the callback */
    fwdauth_cb cb;                    /* NULL once cancelled */
    void *arg;
    enum fwdauth_phase phase;
    struct loop_io io;                /* fd -1 when closed */
    struct loop_timer timer;          /* the deadline of the whole sub-request */
    struct loop_task task;            /* calls back, then frees: after the current batch of
                                         events, so a stale event of ours in it finds OP alive */
    bool readable, writable;          /* edge-triggered: what the last edges told us */
    char *buf;                        /* FWDAUTH_HEAD_MAX bytes, allocated once the request is sent */
    size_t buf_len;                   /* head bytes held (the body is read over them) */
    enum h1_body_kind body_kind;
    uint64_t body_left;               /* LENGTH: bytes still to come */
    size_t body_seen;                 /* CHUNKED: raw bytes read so far */
    struct h1_chunked chunked;
    struct fwdauth_result res;        /* owned until handed to the callback */
    size_t req_len, req_off;
    char req[];                       /* the request head, allocated with the op */
};

void fwdauth_result_free(struct fwdauth_result *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n_copy; i++) {
        free(r->copy_name[i]);
        free(r->copy_value[i]);
    }
    free(r->location);
    free(r->www_authenticate);
    memset(r, 0, sizeof *r);
}

/* --- the request ----------------------------------------------------------------------------- */

/* Writes into P when set, else only counts: one pass measures, the next fills. */
struct fwdauth_w {
    char *p;
    size_t n;
};

static void fwdauth_put(struct fwdauth_w *w, const char *s, size_t n)
{
    if (w->p)
        memcpy(w->p + w->n, s, n);
    w->n += n;
}

static void fwdauth_put_header(struct fwdauth_w *w, const char *name, struct str value)
{
    fwdauth_put(w, name, strlen(name));
    fwdauth_put(w, ": ", 2);
    fwdauth_put(w, value.p, value.n);
    fwdauth_put(w, "\r\n", 2);
}

/* Client fields never sent: hop-by-hop and framing ones (RFC 9110 §7.6.1), Host and Expect (ours
 * are written), and forwarding fields, which the auth service must get from us alone — a client's
 * own X-Forwarded-Uri must not speak for the request. */
static bool fwdauth_skip_header(const struct conf_auth *auth, const struct http_msg *req,
                                struct str name)
{
    if (hdr_is_hop_by_hop(req, name) || str_ieq_cstr(name, "host") ||
        str_ieq_cstr(name, "expect") || str_ieq_cstr(name, "forwarded") ||
        (name.n >= 12 && strncasecmp(name.p, "x-forwarded-", 12) == 0))
        return true;
    if (auth->n_forward_request_headers == 0)
        return false;
    for (size_t i = 0; i < auth->n_forward_request_headers; i++)
        if (str_ieq_cstr(name, auth->forward_request_headers[i]))
            return false;
    return true;
}

/* The parser guarantees REQ's names are tokens and its values valid field values; the path and
 * the address come from a validated config, so nothing here can split the head. */
static void fwdauth_compose(struct fwdauth_w *w, const struct conf_auth *auth,
                            const struct http_msg *req, const char *client_ip, const char *host)
{
    const char *path = auth->forward_path && *auth->forward_path ? auth->forward_path : "/";
    fwdauth_put(w, "GET ", 4);
    fwdauth_put(w, path, strlen(path));
    fwdauth_put(w, " HTTP/1.1\r\n", 11);
    fwdauth_put_header(w, "Host", str_make(host, strlen(host)));
    for (uint32_t i = 0; i < req->n_headers; i++) {
        const struct http_header *h = &req->headers[i];
        if (fwdauth_skip_header(auth, req, h->name))
            continue;
        fwdauth_put(w, h->name.p, h->name.n);
        fwdauth_put(w, ": ", 2);
        fwdauth_put(w, h->value.p, h->value.n);
        fwdauth_put(w, "\r\n", 2);
    }
    fwdauth_put_header(w, "X-Forwarded-Method", req->method);
    /* The path the route matched and the backend gets, not the target as sent: a service that
     * judges "/public/../admin", "//admin" or "http://x/admin" by its text would let through a
     * request the backend serves as "/admin". */
    fwdauth_put_header(w, "X-Forwarded-Uri", req->path.n ? req->path : req->target);
    if (req->host.n)
        fwdauth_put_header(w, "X-Forwarded-Host", req->host);
    if (client_ip && *client_ip)
        fwdauth_put_header(w, "X-Forwarded-For", str_make(client_ip, strlen(client_ip)));
    fwdauth_put(w, "Connection: close\r\n\r\n", 21);
}

/* --- the end ----------------------------------------------------------------------------------- */

static void fwdauth_close(struct fwdauth_op *op)
{
    if (op->io.fd >= 0) {
        loop_del(op->loop, &op->io);
        close(op->io.fd);
        op->io.fd = -1;
    }
    loop_timer_stop(op->loop, &op->timer);
    free(op->buf);
    op->buf = NULL;
}

static void fwdauth_task(struct loop_task *task)
{
    struct fwdauth_op *op = container_of(task, struct fwdauth_op, task);
    if (op->cb)
        op->cb(op->arg, &op->res);
    fwdauth_result_free(&op->res);
    free(op);
}

/* Ends the sub-request with what RES holds; the callback runs once the current batch is done. */
static void fwdauth_finish(struct fwdauth_op *op)
{
    fwdauth_close(op);
    op->phase = FWDAUTH_DONE;
    loop_defer(op->loop, &op->task);
}

/* No usable answer: status 0 (the exchange answers 503). */
static void fwdauth_fail(struct fwdauth_op *op, const char *reason)
{
    char addr[FWDAUTH_HOST_CAP];
    if (op->auth->forward_addr_len)
        sock_format_addr((const struct sockaddr *)&op->auth->forward_addr, addr, sizeof addr);
    else
        strcpy(addr, "-");
    log_warn("forward auth %s: %s", addr, reason);
    fwdauth_result_free(&op->res);
    fwdauth_finish(op);
}

static void fwdauth_fail_errno(struct fwdauth_op *op, int err)
{
    char tmp[96]; /* strerror is not thread-safe: workers are threads */
    fwdauth_fail(op, strerror_r(err, tmp, sizeof tmp));
}

/* --- the answer -------------------------------------------------------------------------------- */

/* The values of every field of MSG named NAME joined with ", " (RFC 9110 §5.3), owned; NULL when
 * there is none. *OOM is set when memory ran out. *FIRST gets the first such field. */
static char *fwdauth_join(const struct http_msg *msg, struct str name,
                          const struct http_header **first, bool *oom)
{
    size_t len = 0, count = 0;
    *first = NULL;
    for (uint32_t i = 0; i < msg->n_headers; i++) {
        if (!str_ieq(msg->headers[i].name, name))
            continue;
        if (!*first)
            *first = &msg->headers[i];
        len += msg->headers[i].value.n + (count++ ? 2 : 0);
    }
    if (!count)
        return NULL;
    char *out = malloc(len + 1), *p = out;
    if (!out) {
        *oom = true;
        return NULL;
    }
    for (uint32_t i = 0; i < msg->n_headers; i++) {
        if (!str_ieq(msg->headers[i].name, name))
            continue;
        if (p != out) {
            memcpy(p, ", ", 2);
            p += 2;
        }
        memcpy(p, msg->headers[i].value.p, msg->headers[i].value.n);
        p += msg->headers[i].value.n;
    }
    *p = '\0';
    return out;
}

static char *fwdauth_strndup(struct str s, bool *oom)
{
    char *out = strndup(s.p, s.n);
    if (!out)
        *oom = true;
    return out;
}

/* 2xx: the configured headers found in MSG go into op->res. */
static void fwdauth_take_copies(struct fwdauth_op *op, const struct http_msg *msg, bool *oom)
{
    const struct conf_auth *auth = op->auth;
    struct fwdauth_result *res = &op->res;
    for (size_t i = 0; i < auth->n_forward_response_headers && res->n_copy < FWDAUTH_MAX_COPY; i++) {
        const char *want = auth->forward_response_headers[i];
        const struct http_header *first;
        char *value = fwdauth_join(msg, str_make(want, strlen(want)), &first, oom);
        if (!value)
            continue;
        /* The answer's spelling of the name: a token by the parser's word. */
        char *name = fwdauth_strndup(first->name, oom);
        if (!name) {
            free(value);
            return;
        }
        res->copy_name[res->n_copy] = name;
        res->copy_value[res->n_copy++] = value;
    }
}

/* Takes what the caller needs from a final answer. Fails closed: -1 when memory ran out, since
 * a 2xx without the identity headers it carried must not let the request through. */
static int fwdauth_take_answer(struct fwdauth_op *op, const struct http_msg *msg)
{
    bool oom = false;
    const struct http_header *first;
    op->res.status = msg->status;
    if (msg->status >= 200 && msg->status <= 299) {
        fwdauth_take_copies(op, msg, &oom);
    } else {
        /* Location is a singleton field (RFC 9110 §10.2.2): the first one counts. */
        const struct http_header *loc = http_msg_find(msg, "location");
        if (loc)
            op->res.location = fwdauth_strndup(loc->value, &oom);
        op->res.www_authenticate = fwdauth_join(msg, STR_LIT("www-authenticate"), &first, &oom);
    }
    return oom ? -1 : 0;
}

/* --- the body, read only so that the connection ends cleanly -------------------------------- */

/* Feeds N body bytes at P (a scratch copy: decoding overwrites it). */
static void fwdauth_body_feed(struct fwdauth_op *op, char *p, size_t n)
{
    if (op->body_kind == H1_BODY_LENGTH) {
        op->body_left -= n < op->body_left ? n : op->body_left;
        if (op->body_left == 0)
            fwdauth_finish(op);
        return;
    }
    size_t consumed, produced;
    int rc = h1_chunked_decode(&op->chunked, p, n, &consumed, &produced);
    op->body_seen += n;
    if (rc < 0)
        fwdauth_fail(op, "malformed chunked body");
    else if (rc > 0 || op->body_seen >= FWDAUTH_BODY_MAX)
        fwdauth_finish(op); /* done, or too long to bother: the head has decided */
}

/* After the head: bodiless, close-delimited or too long answers end here (RFC 9112 §6.3);
 * others are read on, starting with the N bytes at P that came with the head. */
static void fwdauth_body_begin(struct fwdauth_op *op, const struct http_msg *msg, char *p, size_t n)
{
    op->body_kind = h1_response_body_kind(msg, HTTP_METHOD_GET);
    if (op->body_kind == H1_BODY_NONE || op->body_kind == H1_BODY_CLOSE ||
        (op->body_kind == H1_BODY_LENGTH && msg->content_length > FWDAUTH_BODY_MAX)) {
        fwdauth_finish(op);
        return;
    }
    op->phase = FWDAUTH_BODY;
    op->body_left = op->body_kind == H1_BODY_LENGTH ? (uint64_t)msg->content_length : 0;
    if (op->body_kind == H1_BODY_LENGTH && op->body_left == 0) {
        fwdauth_finish(op);
        return;
    }
    if (n)
        fwdauth_body_feed(op, p, n);
}

/* --- the head ---------------------------------------------------------------------------------- */

/* Parses what has arrived; interim 1xx answers are dropped (RFC 9110 §15.2). Moves OP on to the
 * body or the end once a final head is complete. */
static void fwdauth_parse_head(struct fwdauth_op *op)
{
    struct http_header headers[FWDAUTH_MAX_HEADERS];
    const struct h1_limits lim = { .max_request_line = FWDAUTH_HEAD_MAX,
                                   .max_header_bytes = FWDAUTH_HEAD_MAX,
                                   .max_headers = FWDAUTH_MAX_HEADERS };
    for (;;) {
        struct http_msg msg = { .headers = headers, .max_headers = FWDAUTH_MAX_HEADERS };
        int rc = h1_parse_response(op->buf, op->buf_len, &lim, &msg);
        if (rc < 0 || msg.status == 101) { /* a GET must not switch protocols on us */
            fwdauth_fail(op, "malformed answer");
            return;
        }
        if (rc == 0) {
            if (op->buf_len == FWDAUTH_HEAD_MAX)
                fwdauth_fail(op, "answer head too large");
            return;
        }
        size_t head = (size_t)rc;
        if (msg.status >= 200) {
            if (fwdauth_take_answer(op, &msg) < 0) {
                fwdauth_fail(op, "out of memory");
                return;
            }
            fwdauth_body_begin(op, &msg, op->buf + head, op->buf_len - head);
            return;
        }
        memmove(op->buf, op->buf + head, op->buf_len - head);
        op->buf_len -= head;
    }
}

static void fwdauth_on_eof(struct fwdauth_op *op)
{
    fwdauth_fail(op, op->phase == FWDAUTH_HEAD ? "connection closed before an answer"
                                               : "connection closed inside the answer's body");
}

/* HEAD and BODY: reads until EAGAIN (edge-triggered) or the end. */
static void fwdauth_read(struct fwdauth_op *op)
{
    if (!op->buf && !(op->buf = malloc(FWDAUTH_HEAD_MAX))) {
        fwdauth_fail(op, "out of memory");
        return;
    }
    while (op->readable && (op->phase == FWDAUTH_HEAD || op->phase == FWDAUTH_BODY)) {
        bool head = op->phase == FWDAUTH_HEAD;
        /* The head accumulates; body bytes are only counted, so they overwrite each other. */
        char *dst = head ? op->buf + op->buf_len : op->buf;
        ssize_t n = read(op->io.fd, dst, head ? FWDAUTH_HEAD_MAX - op->buf_len : FWDAUTH_HEAD_MAX);
        if (n > 0 && head) {
            op->buf_len += (size_t)n;
            fwdauth_parse_head(op);
        } else if (n > 0) {
            fwdauth_body_feed(op, dst, (size_t)n);
        } else if (n == 0) {
            fwdauth_on_eof(op);
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            op->readable = false;
        } else if (errno != EINTR) {
            fwdauth_fail_errno(op, errno);
        }
    }
}

/* --- connect and send ------------------------------------------------------------------------ */

static void fwdauth_send(struct fwdauth_op *op)
{
    while (op->req_off < op->req_len) {
        if (!op->writable)
            return;
        ssize_t n = send(op->io.fd, op->req + op->req_off, op->req_len - op->req_off, MSG_NOSIGNAL);
        if (n >= 0) {
            op->req_off += (size_t)n;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            op->writable = false;
        } else if (errno != EINTR) {
            fwdauth_fail_errno(op, errno);
            return;
        }
    }
    op->phase = FWDAUTH_HEAD;
    fwdauth_read(op);
}

/* CONNECTING: any edge means the connect finished, one way or the other. */
static void fwdauth_connected(struct fwdauth_op *op)
{
    if (!op->writable && !op->readable)
        return;
    int err = sock_error(op->io.fd);
    if (err) {
        fwdauth_fail_errno(op, err);
        return;
    }
    op->phase = FWDAUTH_SENDING;
    fwdauth_send(op);
}

static void fwdauth_on_event(struct loop_io *io, uint32_t events)
{
    struct fwdauth_op *op = container_of(io, struct fwdauth_op, io);
    if (op->phase == FWDAUTH_DONE)
        return; /* a stale event of this batch: the socket is already closed */
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        op->readable = true;
    if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
        op->writable = true;
    switch (op->phase) {
    case FWDAUTH_CONNECTING: fwdauth_connected(op); break;
    case FWDAUTH_SENDING: fwdauth_send(op); break;
    case FWDAUTH_HEAD:
    case FWDAUTH_BODY: fwdauth_read(op); break;
    case FWDAUTH_DONE: break;
    }
}

static void fwdauth_on_timeout(struct loop_timer *t)
{
    struct fwdauth_op *op = container_of(t, struct fwdauth_op, timer);
    fwdauth_fail(op, op->phase == FWDAUTH_CONNECTING ? "connect timeout" : "answer timeout");
}

/* Opens the connection; a failure here still calls back from the loop, like any other. */
static void fwdauth_connect(struct fwdauth_op *op)
{
    const struct conf_auth *auth = op->auth;
    if (!auth->forward_addr_len) {
        fwdauth_fail(op, "no address");
        return;
    }
    int fd = sock_connect((const struct sockaddr *)&auth->forward_addr, auth->forward_addr_len);
    if (fd < 0) {
        fwdauth_fail_errno(op, errno); /* loopback refusals can be immediate */
        return;
    }
    op->io.fd = fd;
    if (loop_add(op->loop, &op->io) < 0) {
        int err = errno;
        close(fd);
        op->io.fd = -1;
        fwdauth_fail_errno(op, err);
        return;
    }
    uint64_t ms = auth->forward_timeout_ms ? auth->forward_timeout_ms : FWDAUTH_DEFAULT_TIMEOUT_MS;
    loop_timer_after(op->loop, &op->timer, ms);
}

struct fwdauth_op *fwdauth_start(struct loop *loop, const struct conf_auth *auth,
                                 const struct http_msg *req, const char *client_ip,
                                 fwdauth_cb cb, void *arg)
{
    char host[FWDAUTH_HOST_CAP] = "-";
    if (auth->forward_addr_len)
        sock_format_addr((const struct sockaddr *)&auth->forward_addr, host, sizeof host);
    struct fwdauth_w w = { 0 };
    fwdauth_compose(&w, auth, req, client_ip, host);
    /* One allocation holds the op and its request; the read buffer comes once connected. */
    struct fwdauth_op *op = calloc(1, sizeof *op + w.n);
    if (!op)
        return NULL;
    op->req_len = w.n;
    w = (struct fwdauth_w){ .p = op->req };
    fwdauth_compose(&w, auth, req, client_ip, host);
    op->loop = loop;
    op->auth = auth;
    op->cb = cb;
    op->arg = arg;
    op->phase = FWDAUTH_CONNECTING;
    op->io.fd = -1;
    op->io.on_event = fwdauth_on_event;
    op->timer.on_fire = fwdauth_on_timeout;
    op->task.run = fwdauth_task;
    fwdauth_connect(op);
    return op;
}

void fwdauth_cancel(struct fwdauth_op *op)
{
    if (!op)
        return;
    op->cb = NULL;
    if (op->phase != FWDAUTH_DONE)
        fwdauth_finish(op); /* frees OP after the batch, without a callback */
}
