/* admin: the admin API's listener and connections on the control thread's loop — HTTP/1.1 with
 * keep-alive, one request at a time per connection, bodies by Content-Length up to 1 MiB. What a
 * request does is admin_api.c's business (admin_dispatch).
 *
 * Objects that an event of the current batch may still point at (a closed connection, a replaced
 * listener) are closed at once but freed by a deferred task, after the batch. */
#include "admin/admin.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "admin/admin_priv.h"
#include "core/log.h"
#include "core/sock.h"
#include "http/h1.h"

#define ADMIN_MAX_HEAD (64 * 1024)
#define ADMIN_MAX_BODY (1024 * 1024)
#define ADMIN_MAX_LINE 8192
#define ADMIN_MAX_HEADERS 64
#define ADMIN_IN_MAX (ADMIN_MAX_HEAD + ADMIN_MAX_BODY)
#define ADMIN_IDLE_MS 60000
#define ADMIN_MAX_CONNS 128
#define ADMIN_RATE_TICK_MS 1000

struct admin_listener {
    struct loop_io io;             /* fd -1 once closed */
    struct loop_task free_task;
    struct admin *a;
    struct admin_listener *next;   /* in a->closed_listeners until freed */
};

struct admin_conn {
    struct loop_io io;             /* fd -1 once closed */
    struct loop_timer idle;
    struct loop_task free_task;
    struct admin *a;
    struct admin_conn *prev, *next;
    char *in;                      /* received, not yet answered; NULL when empty */
    size_t in_len, in_cap;
    struct sbuf out;               /* answer being written */
    size_t out_off;
    bool eof;                      /* the peer sent FIN */
    bool close_after;              /* close once OUT is written */
    bool sent_continue;            /* 100 Continue sent for the request in progress */
    bool dead;
};

struct admin {
    struct control *ctl;
    struct admin_listener *listener;        /* NULL when "off" */
    char *address;                          /* what LISTENER is bound to (NULL when off) */
    struct admin_listener *closed_listeners;
    struct admin_conn *conns;               /* open and dead-not-yet-freed */
    size_t n_conns;                         /* open ones */
    struct loop_timer rate_timer;
    struct admin_rates rates;
};

static struct loop *admin_loop(const struct admin *a) { return control_loop(a->ctl); }

/* --- connections -------------------------------------------------------------------------------- */

static void admin_conn_free_task(struct loop_task *t)
{
    struct admin_conn *c = container_of(t, struct admin_conn, free_task);
    if (c->prev)
        c->prev->next = c->next;
    else
        c->a->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c->in);
    sbuf_free(&c->out);
    free(c);
}

static void admin_conn_close(struct admin_conn *c)
{
    if (c->dead)
        return;
    c->dead = true;
    c->a->n_conns--;
    loop_timer_stop(admin_loop(c->a), &c->idle);
    loop_del(admin_loop(c->a), &c->io);
    close(c->io.fd);
    c->io.fd = -1;
    loop_defer(admin_loop(c->a), &c->free_task);
}

static void admin_conn_on_idle(struct loop_timer *t)
{
    admin_conn_close(container_of(t, struct admin_conn, idle));
}

static void admin_conn_touch(struct admin_conn *c)
{
    loop_timer_after(admin_loop(c->a), &c->idle, ADMIN_IDLE_MS);
}

/* Writes what OUT holds: 1 all written (OUT released), 0 the socket is full, -1 error. */
static int admin_conn_flush(struct admin_conn *c)
{
    while (c->out_off < c->out.len) {
        ssize_t n = send(c->io.fd, c->out.p + c->out_off, c->out.len - c->out_off, MSG_NOSIGNAL);
        if (n > 0) {
            c->out_off += (size_t)n;
            admin_conn_touch(c);
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else {
            return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
        }
    }
    sbuf_free(&c->out);
    c->out_off = 0;
    return 1;
}

/* Reads until the socket is drained, the peer closes, or IN holds ADMIN_IN_MAX bytes. */
static int admin_conn_fill(struct admin_conn *c)
{
    while (!c->eof && c->in_len < ADMIN_IN_MAX) {
        if (c->in_len == c->in_cap) {
            size_t cap = c->in_cap ? c->in_cap * 2 : 4096;
            char *p = realloc(c->in, cap < ADMIN_IN_MAX ? cap : ADMIN_IN_MAX);
            if (!p)
                return -1;
            c->in = p;
            c->in_cap = cap < ADMIN_IN_MAX ? cap : ADMIN_IN_MAX;
        }
        ssize_t n = recv(c->io.fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
        if (n > 0) {
            c->in_len += (size_t)n;
            admin_conn_touch(c);
        } else if (n == 0) {
            c->eof = true;
        } else if (errno != EINTR) {
            return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
        }
    }
    return 0;
}

/* Drops the first N bytes of IN (the request answered); an empty IN holds no memory. */
static void admin_conn_consume(struct admin_conn *c, size_t n)
{
    c->in_len -= n;
    if (c->in_len) {
        memmove(c->in, c->in + n, c->in_len);
        return;
    }
    free(c->in);
    c->in = NULL;
    c->in_cap = 0;
}

/* Queues the answer of R (status line, headers, body). */
static void admin_conn_queue(struct admin_conn *c, const struct admin_req *r)
{
    struct sbuf *o = &c->out;
    char line[64];
    snprintf(line, sizeof line, "HTTP/1.1 %d ", r->status);
    sbuf_append_cstr(o, line);
    sbuf_append_cstr(o, admin_reason(r->status));
    sbuf_append_cstr(o, "\r\nContent-Type: ");
    sbuf_append_cstr(o, r->content_type ? r->content_type : "application/json");
    sbuf_append_cstr(o, "\r\nContent-Length: ");
    sbuf_append_u64(o, r->out.len);
    sbuf_append_cstr(o, "\r\nCache-Control: no-store\r\n");
    if (r->allow[0]) {
        sbuf_append_cstr(o, "Allow: ");
        sbuf_append_cstr(o, r->allow);
        sbuf_append_cstr(o, "\r\n");
    }
    if (r->challenge)
        sbuf_append_cstr(o, "WWW-Authenticate: Bearer\r\n");
    if (c->close_after)
        sbuf_append_cstr(o, "Connection: close\r\n");
    sbuf_append_cstr(o, "\r\n");
    sbuf_append(o, r->out.p, r->out.len);
    if (o->failed) { /* out of memory: say nothing, close */
        c->close_after = true;
        o->len = 0;
    }
}

/* Answers a request that cannot be read further (STATUS 400, 411, 413, 431, ...) and closes. */
static int admin_conn_reject(struct admin_conn *c, int status)
{
    struct admin_req r = { .ctl = c->a->ctl };
    admin_reply_error(&r, status, admin_reason(status));
    c->close_after = true;
    admin_conn_queue(c, &r);
    sbuf_free(&r.out);
    c->in_len = 0;
    return 1;
}

static void admin_conn_answer(struct admin_conn *c, const struct http_msg *req, const char *body,
                              size_t body_len)
{
    const struct http_header *auth = http_msg_find(req, "authorization");
    const char *q = memchr(req->path.p, '?', req->path.n);
    struct admin_req r = {
        .ctl = c->a->ctl,
        .rates = &c->a->rates,
        .method = req->method,
        .path = str_make(req->path.p, q ? (size_t)(q - req->path.p) : req->path.n),
        .authorization = auth ? auth->value : str_make("", 0),
        .body = body,
        .body_len = body_len,
    };
    admin_dispatch(&r);
    c->close_after = c->close_after || req->conn_close;
    admin_conn_queue(c, &r);
    sbuf_free(&r.out);
}

/* Handles the request at the start of IN if it is all there: 1 an answer was queued, 0 more
 * bytes are needed. */
static int admin_conn_process(struct admin_conn *c)
{
    struct http_header headers[ADMIN_MAX_HEADERS];
    struct http_msg req = { .headers = headers, .max_headers = ADMIN_MAX_HEADERS };
    const struct h1_limits lim = { ADMIN_MAX_LINE, ADMIN_MAX_HEAD, ADMIN_MAX_HEADERS };
    if (!c->in_len)
        return 0;
    int head = h1_parse_request(c->in, c->in_len, &lim, &req);
    if (head <= 0)
        return head < 0 ? admin_conn_reject(c, -head) : 0;
    enum h1_body_kind kind = h1_request_body_kind(&req);
    if (kind == H1_BODY_CHUNKED)
        return admin_conn_reject(c, 411);
    uint64_t body_len = kind == H1_BODY_LENGTH ? (uint64_t)req.content_length : 0;
    if (body_len > ADMIN_MAX_BODY)
        return admin_conn_reject(c, 413);
    size_t need = (size_t)head + (size_t)body_len;
    if (c->in_len < need) {
        if (!req.expect_continue || c->sent_continue)
            return 0;
        c->sent_continue = true;
        sbuf_append_cstr(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
        return 1;
    }
    c->sent_continue = false;
    admin_conn_answer(c, &req, c->in + head, (size_t)body_len);
    admin_conn_consume(c, need);
    return 1;
}

/* Moves C along as far as it can go: write, read, answer, again. */
static void admin_conn_drive(struct admin_conn *c)
{
    for (;;) {
        int w = admin_conn_flush(c);
        if (w <= 0) {
            if (w < 0)
                admin_conn_close(c);
            return;
        }
        if (c->close_after || admin_conn_fill(c) < 0) {
            admin_conn_close(c);
            return;
        }
        if (!admin_conn_process(c)) {
            if (c->eof)
                admin_conn_close(c);
            return;
        }
    }
}

static void admin_conn_on_event(struct loop_io *io, uint32_t events)
{
    struct admin_conn *c = container_of(io, struct admin_conn, io);
    if (c->dead)
        return;
    if (events & EPOLLERR) {
        admin_conn_close(c);
        return;
    }
    admin_conn_drive(c);
}

static void admin_conn_new(struct admin *a, int fd)
{
    struct admin_conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return;
    }
    c->a = a;
    c->io = (struct loop_io){ .fd = fd, .on_event = admin_conn_on_event };
    c->idle.on_fire = admin_conn_on_idle;
    c->free_task.run = admin_conn_free_task;
    if (loop_add(admin_loop(a), &c->io) < 0) {
        close(fd);
        free(c);
        return;
    }
    c->next = a->conns;
    if (a->conns)
        a->conns->prev = c;
    a->conns = c;
    a->n_conns++;
    admin_conn_touch(c);
}

/* --- listener ----------------------------------------------------------------------------------- */

static void admin_on_accept(struct loop_io *io, uint32_t events)
{
    (void)events;
    struct admin_listener *l = container_of(io, struct admin_listener, io);
    for (int i = 0; i < 32 && io->fd >= 0; i++) {
        int fd = accept4(io->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                log_warn("admin API: accept: %s", strerror(errno));
            return;
        }
        if (l->a->n_conns >= ADMIN_MAX_CONNS) {
            close(fd); /* an admin API needs few connections: refuse a flood */
            continue;
        }
        admin_conn_new(l->a, fd);
    }
}

static void admin_listener_free_task(struct loop_task *t)
{
    struct admin_listener *l = container_of(t, struct admin_listener, free_task);
    struct admin_listener **p = &l->a->closed_listeners;
    while (*p && *p != l)
        p = &(*p)->next;
    if (*p)
        *p = l->next;
    free(l);
}

static void admin_unlisten(struct admin *a)
{
    struct admin_listener *l = a->listener;
    if (!l)
        return;
    loop_del(admin_loop(a), &l->io);
    close(l->io.fd);
    l->io.fd = -1;
    l->next = a->closed_listeners;
    a->closed_listeners = l;
    loop_defer(admin_loop(a), &l->free_task);
    a->listener = NULL;
    free(a->address);
    a->address = NULL;
}

/* Listens on ADDRESS ("IP:port") in place of the current listener; 0, or -1 with *ERR
 * (malloc'd) and the current listener untouched. */
static int admin_listen(struct admin *a, const char *address, char **err)
{
    char msg[512];
    struct sockaddr_storage ss;
    socklen_t len;
    struct admin_listener *l = calloc(1, sizeof *l);
    char *copy = strdup(address);
    int fd = -1;
    if (!l || !copy) {
        snprintf(msg, sizeof msg, "out of memory");
    } else if (config_parse_address(address, &ss, &len) != 0) {
        snprintf(msg, sizeof msg, "invalid admin address \"%s\" (want IP:port)", address);
    } else if ((fd = sock_listen((struct sockaddr *)&ss, len, 64)) < 0) {
        snprintf(msg, sizeof msg, "cannot listen on %s: %s", address, strerror(errno));
    } else {
        *l = (struct admin_listener){ .io = { .fd = fd, .on_event = admin_on_accept }, .a = a,
                                      .free_task = { .run = admin_listener_free_task } };
        if (loop_add_reader(admin_loop(a), &l->io) == 0) {
            admin_unlisten(a);
            a->listener = l;
            a->address = copy;
            return 0;
        }
        snprintf(msg, sizeof msg, "cannot watch the admin listener: %s", strerror(errno));
        close(fd);
    }
    free(l);
    free(copy);
    *err = strdup(msg);
    return -1;
}

static bool admin_is_off(const char *address) { return !address || strcmp(address, "off") == 0; }

/* --- life --------------------------------------------------------------------------------------- */

static void admin_on_rate_tick(struct loop_timer *t)
{
    struct admin *a = container_of(t, struct admin, rate_timer);
    admin_rates_sample(&a->rates, a->ctl);
    loop_timer_after(admin_loop(a), &a->rate_timer, ADMIN_RATE_TICK_MS);
}

struct admin *admin_start(struct control *ctl, char **err)
{
    struct admin *a = calloc(1, sizeof *a);
    if (!a) {
        *err = strdup("out of memory");
        return NULL;
    }
    a->ctl = ctl;
    const char *address = control_config(ctl)->admin_address;
    if (!admin_is_off(address) && admin_listen(a, address, err) < 0) {
        free(a);
        return NULL;
    }
    if (a->address)
        log_info("admin API listening on %s", a->address);
    a->rate_timer.on_fire = admin_on_rate_tick;
    admin_rates_sample(&a->rates, ctl);
    loop_timer_after(admin_loop(a), &a->rate_timer, ADMIN_RATE_TICK_MS);
    return a;
}

void admin_apply(struct admin *a)
{
    const char *want = control_config(a->ctl)->admin_address;
    if (admin_is_off(want)) {
        if (a->listener)
            log_info("admin API: no longer listening on %s", a->address);
        admin_unlisten(a);
        return;
    }
    if (a->address && strcmp(a->address, want) == 0)
        return;
    char *err = NULL;
    if (admin_listen(a, want, &err) < 0) {
        /* Keep the current listener (if any): an operator who cannot reach the API cannot fix
         * this. The next publication tries again. */
        log_error("admin API: %s; still on %s", err ? err : "cannot listen", a->address ? a->address : "nothing");
        free(err);
        return;
    }
    log_info("admin API now listening on %s", a->address);
}

void admin_free(struct admin *a)
{
    if (!a)
        return;
    struct loop *loop = admin_loop(a);
    loop_timer_stop(loop, &a->rate_timer);
    admin_unlisten(a);
    while (a->conns) {
        struct admin_conn *c = a->conns;
        admin_conn_close(c);
        loop_cancel(loop, &c->free_task);
        admin_conn_free_task(&c->free_task);
    }
    while (a->closed_listeners) {
        struct admin_listener *l = a->closed_listeners;
        loop_cancel(loop, &l->free_task);
        admin_listener_free_task(&l->free_task);
    }
    admin_rates_free(&a->rates);
    free(a);
}
