/* Unit tests of the response spool (memory, then a temp file) and of the pump's body filter
 * and observer, which compression and cache fills use. */
#include "unit.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy/pump.h"
#include "proxy/spool.h"

static void spool_fill(struct spool *s, const char *data, size_t n, size_t *taken)
{
    struct iovec v = { (void *)data, n };
    ssize_t w = xport_writev(&s->xp, &v, 1);
    *taken = w < 0 ? 0 : (size_t)w;
}

/* Bytes go through memory, then the file, and come out in order; past both caps the writer
 * waits; EOF once the writer ended and all was read. */
UNIT_TEST(test_spool_memory_then_file_in_order)
{
    struct spool s = { 0 };
    spool_init(&s, 10, 20);
    char in[40], out[64];
    for (int i = 0; i < 40; i++)
        in[i] = (char)('a' + i % 26);
    size_t taken;
    spool_fill(&s, in, 40, &taken);
    CHECK_EQ_INT(taken, 30); /* 10 in memory, 20 in the file */
    spool_fill(&s, in + 30, 10, &taken);
    CHECK_EQ_INT(taken, 0);
    ssize_t r = xport_read(&s.xp, out, 4);
    CHECK_EQ_INT(r, 4);
    r = xport_read(&s.xp, out + 4, sizeof out - 4);
    CHECK_EQ_INT(r, 6); /* the rest of memory first */
    r = xport_read(&s.xp, out + 10, sizeof out - 10);
    CHECK_EQ_INT(r, 20);
    CHECK(memcmp(out, in, 30) == 0);
    errno = 0;
    CHECK_EQ_INT(xport_read(&s.xp, out, 8), -1);
    CHECK_EQ_INT(errno, EAGAIN);
    /* the reader caught up: the space is free again */
    spool_fill(&s, in + 30, 10, &taken);
    CHECK_EQ_INT(taken, 10);
    xport_shutdown_wr(&s.xp);
    CHECK_EQ_INT(xport_read(&s.xp, out, sizeof out), 10);
    CHECK(memcmp(out, in + 30, 10) == 0);
    CHECK_EQ_INT(xport_read(&s.xp, out, sizeof out), 0);
    spool_free(&s);
}

UNIT_TEST(test_spool_memory_only)
{
    struct spool s = { 0 };
    spool_init(&s, 8, 0);
    size_t taken;
    spool_fill(&s, "0123456789", 10, &taken);
    CHECK_EQ_INT(taken, 8);
    CHECK_EQ_INT(s.fd, -1);
    spool_free(&s);
}

/* A filter that upper-cases and counts its flushes. */
struct upper { int syncs, finishes; };
static int upper_run(void *ctx, const char *in, size_t in_len, size_t *consumed, char *out, size_t cap,
                     size_t *produced, enum pump_flush flush)
{
    struct upper *u = ctx;
    size_t n = in_len < cap ? in_len : cap;
    for (size_t i = 0; i < n; i++)
        out[i] = (char)(in[i] >= 'a' && in[i] <= 'z' ? in[i] - 32 : in[i]);
    *consumed = *produced = n;
    if (n < in_len)
        return 0;
    u->syncs += flush == PUMP_FLUSH_SYNC;
    u->finishes += flush == PUMP_FLUSH_FINISH;
    return 1;
}

struct seen { char data[64]; size_t len; };
static void observe(void *arg, const char *data, size_t len)
{
    struct seen *s = arg;
    memcpy(s->data + s->len, data, len);
    s->len += len;
}

/* The filter sees the decoded body, its output is framed chunked, the observer sees the body
 * before the filter, and a paused source flushes the filter. */
UNIT_TEST(test_pump_filter_and_observer)
{
    int sv[2], dv[2];
    CHECK_EQ_INT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    CHECK_EQ_INT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, dv), 0);
    struct xport src = { .fd = sv[0] }, dst = { .fd = dv[0] };
    struct pump p;
    struct upper u = { 0 };
    struct seen seen = { .len = 0 };
    pump_init(&p, H1_BODY_CHUNKED, 0, true, NULL);
    p.filter.run = upper_run;
    p.filter.ctx = &u;
    p.observer.fn = observe;
    p.observer.arg = &seen;
    struct buf *b = NULL;
    bool readable = true, writable = true;
    CHECK_EQ_INT(write(sv[1], "3\r\nabc\r\n", 8), 8);
    CHECK_EQ_INT(pump_run(&p, &b, &src, &readable, &dst, &writable), PUMP_BLOCKED);
    CHECK_EQ_INT(u.syncs, 1); /* the source paused with input inside the filter */
    readable = true;
    CHECK_EQ_INT(write(sv[1], "2\r\nde\r\n0\r\n\r\n", 12), 12);
    CHECK_EQ_INT(pump_run(&p, &b, &src, &readable, &dst, &writable), PUMP_DONE);
    CHECK_EQ_INT(u.finishes, 1);
    char got[128];
    ssize_t n = read(dv[1], got, sizeof got);
    CHECK(n > 0);
    const char want[] = "3\r\nABC\r\n2\r\nDE\r\n0\r\n\r\n";
    CHECK_EQ_INT(n, (ssize_t)strlen(want));
    CHECK(n > 0 && memcmp(got, want, (size_t)n) == 0);
    CHECK_EQ_INT(seen.len, 5);
    CHECK(memcmp(seen.data, "abcde", 5) == 0);
    pump_release(&p);
    buf_put(b);
    close(sv[0]);
    close(sv[1]);
    close(dv[0]);
    close(dv[1]);
    buf_drain_free_list();
}

UNIT_MAIN();
