#include "policy/redis_limit.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>

#include "core/sock.h"

#define RLIM_DEFAULT_TIMEOUT_MS 50

/* The bucket, atomically: KEYS[1] a hash {c: credit, t: ms, p: per_ms}; ARGV rate, per_ms,
 * burst. Credit is counted in 1/per_ms of a token, so refill is integer math: a token costs
 * per_ms, a ms adds rate. A bucket written under another period (a reload turned 1/m into 1/h)
 * has its credit moved to the new unit, so the tokens left stay the same (a hash without p
 * predates it: same period). Lua's doubles hold integers exactly up to 2^53, so the bucket is
 * capped there (only a burst of millions over a period of months comes near). The clock is
 * Redis's (TIME), so instances with skewed clocks agree; replicate_commands lets Redis < 5
 * write after reading it (HSET of several fields needs Redis >= 4). Returns 0 (token taken) or
 * the ms until one is available; the key expires a second after the bucket would be full again
 * (a missing key is a full bucket). */
static const char rlim_script[] =
    "if redis.replicate_commands then redis.replicate_commands() end\n"
    "local rate, per, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local cap = math.min(burst * per, 2^53)\n"
    "local b = redis.call('HMGET', KEYS[1], 'c', 't', 'p')\n"
    "local credit, last = cap, now\n"
    "if b[1] and b[2] then\n"
    "  credit, last = tonumber(b[1]), tonumber(b[2])\n"
    "  local was = tonumber(b[3]) or per\n"
    "  if was ~= per and was > 0 then credit = math.floor(credit / was * per) end\n"
    "  credit = math.min(cap, credit)\n"
    "end\n"
    "if now > last then credit = math.min(cap, credit + (now - last) * rate); last = now end\n"
    "if credit < per then return math.ceil((per - credit) / rate) end\n"
    "credit = credit - per\n"
    "redis.call('HSET', KEYS[1], 'c', string.format('%d', credit), 't', string.format('%d', last),\n"
    "           'p', ARGV[2])\n"
    "redis.call('PEXPIRE', KEYS[1], string.format('%d', math.ceil((cap - credit) / rate) + 1000))\n"
    "return 0\n";

/* One hiredis connection on the loop. Listed in its redis_limit until freed: by a deferred task
 * once hiredis let go of it and no reply is owed on it, or by redis_limit_free. */
struct rlim_conn {
    struct redis_limit *r;
    struct rlim_conn *next;     /* in r->conns */
    redisAsyncContext *ac;      /* NULL once hiredis freed the context (and closed the fd) */
    struct loop_io io;
    struct loop_task kick;      /* writes queued commands: the write edge may be long past */
    struct loop_task close;     /* tears the connection down once detached (see rlim_detach) */
    struct loop_task reap;      /* frees this after the current batch of events */
    bool writable;              /* edge-triggered: the socket took all we gave it so far */
    bool want_write;            /* hiredis holds bytes to send */
    bool answered;              /* Redis gave at least one reply that was not an error */
    unsigned pending;           /* requests whose hiredis callback is still owed */
    uint64_t last_progress;     /* loop ms of the last reply, or of the start of the wait */
};

struct redis_limit {
    struct loop *loop;
    struct rlim_conn *conn;          /* what new requests use; NULL = none yet */
    struct rlim_conn *conns;         /* every connection not yet freed */
    struct sockaddr_storage addr;    /* where CONN goes */
    socklen_t addr_len;
    uint64_t retry_at;               /* loop ms: no connection attempt before (backoff) */
    struct redis_limit_op *ops;      /* requests not yet answered */
    char sha[41];                    /* of rlim_script, hex */
};

/* Freed once answered (or cancelled) and not owed a hiredis callback. */
struct redis_limit_op {
    struct redis_limit *r;
    struct redis_limit_op *prev, *next; /* in r->ops while unanswered */
    struct rlim_conn *conn;             /* whose hiredis holds this as privdata; NULL = none */
    redis_limit_cb cb;                  /* NULL once answered or cancelled */
    void *arg;
    struct loop_timer timer;            /* the reply's deadline */
    struct loop_task fail;              /* answers -1 from the loop (failures met in take) */
    bool evaled;                        /* sent as EVAL (Redis did not know the script) */
    char rate[12], per[24], burst[12];  /* ARGV */
    size_t key_len;
    char key[];                         /* prefix, limit name, ':', key */
};

/* --- requests ----------------------------------------------------------------------------------- */

/* Unlinks OP from the unanswered; frees it unless a hiredis callback is owed. */
static void rlim_op_finish(struct redis_limit_op *op)
{
    struct redis_limit *r = op->r;
    *(op->prev ? &op->prev->next : &r->ops) = op->next;
    if (op->next)
        op->next->prev = op->prev;
    op->cb = NULL;
    loop_timer_stop(r->loop, &op->timer);
    loop_cancel(r->loop, &op->fail);
    if (!op->conn)
        free(op);
}

static void rlim_answer(struct redis_limit_op *op, int64_t result)
{
    redis_limit_cb cb = op->cb;
    void *arg = op->arg;
    rlim_op_finish(op);
    cb(arg, result);
}

static void rlim_on_fail(struct loop_task *task)
{
    rlim_answer(container_of(task, struct redis_limit_op, fail), -1);
}

static int rlim_send(struct redis_limit_op *op, redisAsyncContext *ac);
static void rlim_detach(struct redis_limit *r, bool failed);

static int64_t rlim_result(const redisReply *rep)
{
    if (!rep || rep->type != REDIS_REPLY_INTEGER || rep->integer < 0)
        return -1;
    return rep->integer;
}

static bool rlim_is_noscript(const redisReply *rep)
{
    return rep->type == REDIS_REPLY_ERROR && rep->str && strncmp(rep->str, "NOSCRIPT", 8) == 0;
}

static void rlim_maybe_reap(struct rlim_conn *c)
{
    if (!c->ac && !c->pending)
        loop_defer(c->r->loop, &c->reap);
}

/* hiredis: the reply to OP, or NULL when the connection is going away. */
static void rlim_on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct redis_limit_op *op = privdata;
    struct rlim_conn *c = op->conn;
    struct redis_limit *r = op->r;
    const redisReply *rep = reply;
    if (rep) {
        c->last_progress = loop_now(r->loop);
        c->answered |= rep->type != REDIS_REPLY_ERROR;
    }
    if (rep && op->cb && !op->evaled && rlim_is_noscript(rep)) {
        op->evaled = true; /* Redis restarted or flushed its scripts: send the script itself */
        if (rlim_send(op, ac) == 0)
            return;
    }
    op->conn = NULL;
    c->pending--;
    if (!rep && r->conn == c)
        rlim_detach(r, true); /* failed under us (reset, refused, error): back off */
    rlim_maybe_reap(c);
    if (op->cb)
        rlim_answer(op, rlim_result(rep));
    else
        free(op);
}

static int rlim_send(struct redis_limit_op *op, redisAsyncContext *ac)
{
    const char *argv[7] = { op->evaled ? "EVAL" : "EVALSHA", op->evaled ? rlim_script : op->r->sha,
                            "1", op->key, op->rate, op->per, op->burst };
    size_t len[7];
    for (int i = 0; i < 7; i++)
        len[i] = i == 3 ? op->key_len : strlen(argv[i]);
    return redisAsyncCommandArgv(ac, rlim_on_reply, op, 7, argv, len) == REDIS_OK ? 0 : -1;
}

/* The deadline passed: OP fails. A connection that has answered nothing for
 * REDIS_LIMIT_STALL_MS while owing replies is dropped (which fails the others). */
static void rlim_on_timeout(struct loop_timer *t)
{
    struct redis_limit_op *op = container_of(t, struct redis_limit_op, timer);
    struct redis_limit *r = op->r;
    struct rlim_conn *c = op->conn;
    redis_limit_cb cb = op->cb;
    void *arg = op->arg;
    rlim_op_finish(op);
    if (c && r->conn == c && loop_now(r->loop) - c->last_progress >= REDIS_LIMIT_STALL_MS)
        rlim_detach(r, true);
    cb(arg, -1);
}

/* --- the hiredis adapter: its event hooks on our edge-triggered loop ---------------------------- */

static void rlim_write(struct rlim_conn *c)
{
    redisAsyncHandleWrite(c->ac);
    if (c->ac && c->want_write)
        c->writable = false; /* the socket is full: wait for the next write edge */
}

static void rlim_kick(struct loop_task *task)
{
    struct rlim_conn *c = container_of(task, struct rlim_conn, kick);
    if (c->ac && c->writable && c->want_write)
        rlim_write(c);
}

/* Reads until the socket is drained (an edge comes once; hiredis reads 16 KiB a call). */
static void rlim_read(struct rlim_conn *c, uint32_t events)
{
    int avail = 0;
    do
        redisAsyncHandleRead(c->ac);
    while (c->ac && ioctl(c->io.fd, FIONREAD, &avail) == 0 && avail > 0);
    if (c->ac && (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
        redisAsyncHandleRead(c->ac); /* drained: now meet the end of stream or the error */
}

static void rlim_on_event(struct loop_io *io, uint32_t events)
{
    struct rlim_conn *c = container_of(io, struct rlim_conn, io);
    if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
        c->writable = true;
        /* the first write edge also completes the connect (hiredis checks SO_ERROR) */
        if (c->ac && (c->want_write || !(c->ac->c.flags & REDIS_CONNECTED)))
            rlim_write(c);
    }
    if (c->ac && (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
        rlim_read(c, events);
}

static void rlim_ev_read(void *data) { (void)data; } /* every read edge is read anyway */

static void rlim_ev_add_write(void *data)
{
    struct rlim_conn *c = data;
    c->want_write = true;
    if (c->writable)
        loop_defer(c->r->loop, &c->kick); /* not now: we may be inside hiredis */
}

static void rlim_ev_del_write(void *data) { ((struct rlim_conn *)data)->want_write = false; }

/* hiredis frees the context (error, end of stream, or redisAsyncFree); it closes the fd next. */
static void rlim_ev_cleanup(void *data)
{
    struct rlim_conn *c = data;
    if (!c->ac)
        return; /* some hiredis versions call it twice */
    loop_del(c->r->loop, &c->io);
    loop_cancel(c->r->loop, &c->kick);
    loop_cancel(c->r->loop, &c->close);
    c->ac = NULL;
    /* a working connection closed while idle (Redis's `timeout`, a restart) is no failure; one
     * that never worked (e.g. refused with "max clients") is */
    if (c->r->conn == c)
        rlim_detach(c->r, c->pending > 0 || !c->answered);
    rlim_maybe_reap(c);
}

/* --- connections -------------------------------------------------------------------------------- */

static bool rlim_dying(const struct rlim_conn *c)
{
    return !c->ac || (c->ac->c.flags & (REDIS_DISCONNECTING | REDIS_FREEING));
}

static void rlim_close(struct loop_task *task)
{
    struct rlim_conn *c = container_of(task, struct rlim_conn, close);
    if (!rlim_dying(c))
        redisAsyncFree(c->ac); /* the owed callbacks run now, with NULL */
}

static void rlim_reap(struct loop_task *task)
{
    struct rlim_conn *c = container_of(task, struct rlim_conn, reap);
    struct rlim_conn **link = &c->r->conns;
    while (*link != c)
        link = &(*link)->next;
    *link = c->next;
    free(c);
}

/* Starts a non-blocking connect to R->addr (numeric: no resolver call), on R's loop. */
static struct rlim_conn *rlim_connect(struct redis_limit *r)
{
    char ip[64];
    const struct sockaddr *sa = (const struct sockaddr *)&r->addr;
    sock_format_ip(sa, ip, sizeof ip);
    int port = ntohs(sa->sa_family == AF_INET6 ? ((const struct sockaddr_in6 *)sa)->sin6_port
                                               : ((const struct sockaddr_in *)sa)->sin_port);
    redisAsyncContext *ac = redisAsyncConnect(ip, port);
    struct rlim_conn *c = ac && !ac->err ? calloc(1, sizeof *c) : NULL;
    if (c) {
        *c = (struct rlim_conn){ .r = r, .ac = ac, .io = { ac->c.fd, rlim_on_event },
                                 .kick.run = rlim_kick, .close.run = rlim_close,
                                 .reap.run = rlim_reap,
                                 .last_progress = loop_now(r->loop) };
    }
    if (!c || loop_add(r->loop, &c->io) < 0) {
        free(c);
        if (ac)
            redisAsyncFree(ac); /* no hooks yet: just closes */
        return NULL;
    }
    ac->ev.data = c;
    ac->ev.addRead = rlim_ev_read;
    ac->ev.delRead = rlim_ev_read;
    ac->ev.addWrite = rlim_ev_add_write;
    ac->ev.delWrite = rlim_ev_del_write;
    ac->ev.cleanup = rlim_ev_cleanup;
    c->next = r->conns;
    r->conns = c;
    return c;
}

/* New requests stop using R->conn; after a FAILED one, none is tried for
 * REDIS_LIMIT_BACKOFF_MS. The connection is closed from a task of the loop, so that the owed
 * callbacks it fails never run inside redis_limit_take nor inside a hiredis callback. */
static void rlim_detach(struct redis_limit *r, bool failed)
{
    struct rlim_conn *c = r->conn;
    r->conn = NULL;
    if (failed)
        r->retry_at = loop_now(r->loop) + REDIS_LIMIT_BACKOFF_MS;
    if (c && !rlim_dying(c))
        loop_defer(r->loop, &c->close);
}

static bool rlim_same_addr(const struct redis_limit *r, const struct conf_redis *cfg)
{
    return r->addr_len == cfg->addr_len && memcmp(&r->addr, &cfg->addr, cfg->addr_len) == 0;
}

/* The connection for CFG, made if need be; NULL when none can be had now. */
static struct rlim_conn *rlim_conn_for(struct redis_limit *r, const struct conf_redis *cfg)
{
    if (!cfg->address || !cfg->addr_len || cfg->addr_len > sizeof r->addr)
        return NULL;
    if (!rlim_same_addr(r, cfg)) { /* a reload moved Redis */
        rlim_detach(r, false);
        memcpy(&r->addr, &cfg->addr, cfg->addr_len);
        r->addr_len = cfg->addr_len;
        r->retry_at = 0;
    }
    if (r->conn && rlim_dying(r->conn))
        rlim_detach(r, true);
    if (r->conn || loop_now(r->loop) < r->retry_at)
        return r->conn;
    r->conn = rlim_connect(r);
    if (!r->conn)
        r->retry_at = loop_now(r->loop) + REDIS_LIMIT_BACKOFF_MS;
    return r->conn;
}

/* --- the face ----------------------------------------------------------------------------------- */

struct redis_limit *redis_limit_new(struct loop *loop)
{
    struct redis_limit *r = calloc(1, sizeof *r);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    if (!r || !EVP_Digest(rlim_script, strlen(rlim_script), md, &md_len, EVP_sha1(), NULL) ||
        md_len != 20) {
        free(r);
        return NULL;
    }
    for (unsigned i = 0; i < md_len; i++)
        snprintf(r->sha + 2 * i, 3, "%02x", md[i]);
    r->loop = loop;
    return r;
}

void redis_limit_free(struct redis_limit *r)
{
    if (!r)
        return;
    while (r->ops)
        rlim_op_finish(r->ops);
    rlim_detach(r, false);
    while (r->conns) {
        struct rlim_conn *c = r->conns;
        if (c->ac)
            redisAsyncFree(c->ac); /* the owed callbacks free their (finished) requests */
        loop_cancel(r->loop, &c->close);
        loop_cancel(r->loop, &c->reap);
        r->conns = c->next;
        free(c);
    }
    free(r);
}

static struct redis_limit_op *rlim_op_new(struct redis_limit *r, const struct conf_redis *cfg,
                                          const struct conf_rate_limit *limit, const char *key,
                                          size_t key_len, redis_limit_cb cb, void *arg)
{
    const char *prefix = cfg->prefix ? cfg->prefix : "";
    const char *name = limit->name ? limit->name : "";
    size_t plen = strlen(prefix), nlen = strlen(name);
    struct redis_limit_op *op = calloc(1, sizeof *op + plen + nlen + 1 + key_len + 1);
    if (!op)
        return NULL;
    op->r = r;
    op->cb = cb;
    op->arg = arg;
    op->timer.on_fire = rlim_on_timeout;
    op->fail.run = rlim_on_fail;
    snprintf(op->rate, sizeof op->rate, "%u", limit->rate ? limit->rate : 1);
    snprintf(op->per, sizeof op->per, "%llu", (unsigned long long)(limit->per_ms ? limit->per_ms : 1));
    snprintf(op->burst, sizeof op->burst, "%u", limit->burst);
    memcpy(op->key, prefix, plen);
    memcpy(op->key + plen, name, nlen);
    op->key[plen + nlen] = ':';
    if (key_len)
        memcpy(op->key + plen + nlen + 1, key, key_len);
    op->key_len = plen + nlen + 1 + key_len;
    return op;
}

struct redis_limit_op *redis_limit_take(struct redis_limit *r, const struct conf_redis *cfg,
                                        const struct conf_rate_limit *limit, const char *key,
                                        size_t key_len, redis_limit_cb cb, void *arg)
{
    struct redis_limit_op *op = rlim_op_new(r, cfg, limit, key, key_len, cb, arg);
    if (!op)
        return NULL;
    op->next = r->ops;
    if (r->ops)
        r->ops->prev = op;
    r->ops = op;
    struct rlim_conn *c = rlim_conn_for(r, cfg);
    if (!c || rlim_send(op, c->ac) < 0) {
        loop_defer(r->loop, &op->fail); /* never call back from inside this call */
        return op;
    }
    op->conn = c;
    if (c->pending++ == 0)
        c->last_progress = loop_now(r->loop); /* the wait for a reply starts now */
    loop_timer_after(r->loop, &op->timer, cfg->timeout_ms ? cfg->timeout_ms : RLIM_DEFAULT_TIMEOUT_MS);
    return op;
}

void redis_limit_cancel(struct redis_limit_op *op)
{
    if (op && op->cb)
        rlim_op_finish(op);
}
