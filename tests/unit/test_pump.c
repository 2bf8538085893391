/* Unit tests of the body pump over non-blocking AF_UNIX socketpairs: pass-through, re-framing,
 * dechunking, close-delimited bodies, prefixes, backpressure and each error exit.
 *
 * The test plays both peers: it feeds the source socket and drains the destination socket
 * between pump_run calls, setting the readiness flags as an edge-triggered loop would. */
#include "unit.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy/pump.h"

/* A plain-socket endpoint for one call. */
#define XP(sock) (&(struct xport){ .fd = (sock) })

/* s[0]: pump reads, s[1]: test feeds; d[0]: pump writes, d[1]: test drains */
struct rig {
    int s[2];
    int d[2];
};

static int rig_open(struct rig *r)
{
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, r->s) < 0 || socketpair(AF_UNIX, SOCK_STREAM, 0, r->d) < 0)
        return -1;
    for (int i = 0; i < 2; i++) {
        fcntl(r->s[i], F_SETFL, O_NONBLOCK);
        fcntl(r->d[i], F_SETFL, O_NONBLOCK);
    }
    return 0;
}

static void rig_close(struct rig *r)
{
    for (int i = 0; i < 2; i++) {
        if (r->s[i] >= 0)
            close(r->s[i]);
        if (r->d[i] >= 0)
            close(r->d[i]);
    }
}

static void write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w <= 0)
            return; /* small test data always fits in the socket buffer */
        c += w;
        n -= (size_t)w;
    }
}

/* Reads up to MAX bytes (0 = all available) from FD into GOT. */
static void drain(int fd, struct sbuf *got, size_t max)
{
    char tmp[8192];
    size_t total = 0;
    for (;;) {
        size_t want = sizeof tmp;
        if (max && max - total < want)
            want = max - total;
        if (want == 0)
            return;
        ssize_t r = read(fd, tmp, want);
        if (r <= 0)
            return;
        sbuf_append(got, tmp, (size_t)r);
        total += (size_t)r;
    }
}

/* The source side: DATA is written as the socket accepts it; closed (SHUT_WR) at the end if asked. */
struct feed {
    const char *data;
    size_t len, off;
    bool close_at_end;
    bool closed;
};

static void feed_more(struct feed *f, int fd)
{
    while (f->off < f->len) {
        ssize_t w = write(fd, f->data + f->off, f->len - f->off);
        if (w <= 0)
            break;
        f->off += (size_t)w;
    }
    if (f->off == f->len && f->close_at_end && !f->closed) {
        shutdown(fd, SHUT_WR);
        f->closed = true;
    }
}

/* Runs the pump to a final status, feeding and draining between calls (DRAIN_MAX bytes at a
 * time, 0 = all). Returns PUMP_BLOCKED if it did not finish within the iteration budget. */
static enum pump_status drive(struct pump *p, struct buf **b, struct rig *r, struct feed *f,
                              struct sbuf *got, size_t drain_max)
{
    for (int i = 0; i < 200000; i++) {
        if (f)
            feed_more(f, r->s[1]);
        bool readable = true, writable = true;
        enum pump_status st = pump_run(p, b, XP(r->s[0]), &readable, XP(r->d[0]), &writable);
        drain(r->d[1], got, drain_max);
        if (st != PUMP_BLOCKED) {
            drain(r->d[1], got, 0);
            return st;
        }
    }
    return PUMP_BLOCKED;
}

static bool sbuf_is(const struct sbuf *s, const char *c)
{
    return s->len == strlen(c) && (s->len == 0 || memcmp(s->p, c, s->len) == 0);
}

static bool buf_is(struct buf *b, const char *c)
{
    return b && buf_len(b) == strlen(c) && memcmp(buf_rptr(b), c, buf_len(b)) == 0;
}

/* Decodes a chunked body completely; true when it is well-formed, ends exactly at its last
 * byte, and decodes to WANT. */
static bool dechunks_to(const struct sbuf *s, const char *want, size_t want_len)
{
    if (!s->len)
        return false;
    char *copy = malloc(s->len);
    memcpy(copy, s->p, s->len);
    struct h1_chunked st = { 0 };
    size_t consumed = 0, produced = 0;
    int r = h1_chunked_decode(&st, copy, s->len, &consumed, &produced);
    bool ok = r == 1 && consumed == s->len && produced == want_len && memcmp(copy, want, want_len) == 0;
    free(copy);
    return ok;
}

static uint64_t rng_state = 0x2545f4914f6cdd1dull;
static uint32_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 11);
}

static char *random_bytes(size_t n)
{
    char *p = malloc(n);
    for (size_t i = 0; i < n; i++)
        p[i] = (char)rng();
    return p;
}

/* Chunked-encodes DATA with varied chunk sizes, some extensions, and a trailer. */
static void chunk_encode(struct sbuf *out, const char *data, size_t n)
{
    size_t off = 0;
    while (off < n) {
        size_t k = 1 + rng() % 9000;
        if (k > n - off)
            k = n - off;
        char hdr[20];
        size_t hl = h1_chunk_header(hdr, k);
        if (rng() % 4 == 0) {
            sbuf_append(out, hdr, hl - 2);
            sbuf_append_cstr(out, ";ext=\"v\"\r\n");
        } else {
            sbuf_append(out, hdr, hl);
        }
        sbuf_append(out, data + off, k);
        sbuf_append(out, "\r\n", 2);
        off += k;
    }
    sbuf_append_cstr(out, "0\r\nX-Checksum: abc\r\n\r\n");
}

/* ---------------------------------------------------------------------------------------- */

UNIT_TEST(test_length_passthrough_leaves_pipelined_bytes)
{
    struct rig r;
    CHECK_EQ_INT(rig_open(&r), 0);
    write_all(r.s[1], "HELLOGET /next HTTP/1.1\r\n\r\n", 27);
    struct pump p;
    pump_init(&p, H1_BODY_LENGTH, 5, false, NULL);
    struct buf *b = NULL;
    struct sbuf got = { 0 };
    CHECK_EQ_INT(drive(&p, &b, &r, NULL, &got, 0), PUMP_DONE);
    CHECK(sbuf_is(&got, "HELLO"));
    CHECK(buf_is(b, "GET /next HTTP/1.1\r\n\r\n"));
    CHECK(pump_finished(&p));
    CHECK_EQ_INT(p.bytes_out, 5);
    CHECK_EQ_INT(p.bytes_in, 27);
    buf_put(b);
    sbuf_free(&got);
    rig_close(&r);
    buf_drain_free_list();
}

UNIT_TEST(test_length_body_started_in_buffer)
{
    struct rig r;
    CHECK_EQ_INT(rig_open(&r), 0);
    struct buf *b = buf_get();
    memcpy(buf_wptr(b), "0123", 4); /* head parser already read the start of the body */
    b->wpos += 4;
    write_all(r.s[1], "456789NEXT", 10);
    struct pump p;
    pump_init(&p, H1_BODY_LENGTH, 10, false, NULL);
    struct sbuf got = { 0 };
    CHECK_EQ_INT(drive(&p, &b, &r, NULL, &got, 0), PUMP_DONE);
    CHECK(sbuf_is(&got, "0123456789"));
    CHECK(buf_is(b, "NEXT"));
    buf_put(b);
    sbuf_free(&got);
    rig_close(&r);
    buf_drain_free_list();
}

UNIT_TEST(test_length_whole_body_already_buffered)
{
    struct rig r;
    CHECK_EQ_INT(rig_open(&r), 0);
    struct buf *b = buf_get();
    memcpy(buf_wptr(b), "abcdefXYZ", 9);
    b->wpos += 9;
    struct pump p;
    pump_init(&p, H1_BODY_LENGTH, 6, false, NULL);
    bool readable = false, writable = true; /* the source has nothing: must not be needed */
    CHECK_EQ_INT(pump_run(&p, &b, XP(r.s[0]), &readable, XP(r.d[0]), &writable), PUMP_DONE);
    struct sbuf got = { 0 };
    drain(r.d[1], &got, 0);
    CHECK(sbuf_is(&got, "abcdef"));
    CHECK(buf_is(b, "XYZ"));
    CHECK_EQ_INT(p.bytes_in, 0);
    buf_put(b);
    sbuf_free(&got);
    rig_close(&r);
    buf_drain_free_list();
}

UNIT_TEST(test_length_large_body)
{
    struct rig r;
    CHECK_EQ_INT(rig_open(&r), 0);
    size_t n = 1000 * 1000;
    char *data = random_bytes(n);
    struct feed f = { data, n, 0, false, false };
    struct pump p;
    pump_init(&p, H1_BODY_LENGTH, n, false, NULL);
    struct buf *b = NULL;
    struct sbuf got = { 0 };
    CHECK_EQ_INT(drive(&p, &b, &r, &f, &got, 0), PUMP_DONE);
    CHECK_EQ_INT(got.len, n);
    CHECK(got.len == n && memcmp(got.p, data, n) == 0);
    CHECK_EQ_INT(p.bytes_out, n);
    buf_put(b);
    free(data);
    sbuf_free(&got);
    rig_close(&r);
    buf_drain_free_list();
}

UNIT_TEST(test_chunked_in_chunked_out)
{
    struct rig r;
    CHECK_EQ_INT(rig_open(&r), 0);
    const char *in = "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-T: 1\r\n\r\nNEXT";
    write_all(r.s[1], in, strlen(in));
    struct pump p;
    pump_init(&p, H1_BODY_CHUNKED, 0, true, NULL);
    struct buf *b = NULL;
    struct sbuf got = { 0 };
    CHECK_EQ_INT(drive(&p, &b, &r, NULL, &got, 0), PUMP_DONE);
    CHECK(dechunks_to(&got, "hello world", 11));
    CHECK(got.len >= 5 && memcmp(got.p + got.len - 5, "0\r\n\r\n", 5) == 0);
    CHECK(buf_is(b, "NEXT"));
    CHECK_EQ_INT(p.bytes_out, got.len);
    buf_put(b);
    sbuf_free(&got);
    rig_close(&r);
    buf_drain_free_list();
}

/* Trailers kept by the decoder go out in the terminator (gRPC status crosses the proxy this way). */
UNIT_TEST(test_chunked_trailers_passed_on)
{
    struct rig r;
    CHECK_EQ_INT(rig_open(&r), 0);
    const char *in = "3\r\nabc\r\n0\r\ngrpc-status: 0\r\ngrpc-message: ok\r\n\r\nNEXT";
    write_all(r.s[1], in, strlen(in));
    struct pump p;
    struct sbuf trailers = { 0 };
    pump_init(&p, H1_BODY_CHUNKED, 0, true, NULL);
    p.dec.trailers = &trailers;
    struct buf *b = NULL;
    struct sbuf got = { 0 };
    CHECK_EQ_INT(drive(&p, &b, &r, NULL, &got, 0), PUMP_DONE);
    CHECK(sbuf_is(&trailers, "grpc-status: 0\r\ngrpc-message: ok\r\n"));
    CHECK(sbuf_is(&got, "3\r\nabc\r\n0\r\ngrpc-status: 0\r\ngrpc-message: ok\r\n\r\n"));
    CHECK(buf_is(b, "NEXT"));
    CHECK_EQ_INT(p.bytes_out, got.len);
    buf_put(b);
    sbuf_free(&got);
    sbuf_free(&trailers);
    rig_close(&r);
    buf_drain_free_list();
}

UNIT_TEST(test_chunked_in_raw_out)
{
    struct rig r;
    CHECK_EQ_INT(rig_open(&r), 0);
    const char *in = "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
    write_all(r.s[1], in, strlen(in));
    struct pump p;
    pump_init(&p, H1_BODY_CHUNKED, 0, false, NULL);
    struct buf *b = NULL;
    struct sbuf got = { 0 };
    CHECK_EQ_INT(drive(&p, &b, &r, NULL, &got, 0), PUMP_DONE);
    CHECK(sbuf_is(&got, "hello world"));
    CHECK(buf_is(b, "GET / HTTP/1.1\r\n"));
    buf_put(b);
    sbuf_free(&got);
    rig_close(&r);
    buf_drain_free_list();
}

UNIT_TEST(test_chunked_byte_by_byte)
{
    /* the framing arrives one byte per read: every decoder state resumes across reads */
    struct rig r;
    CHECK_EQ_INT(rig_open(&r), 0);
    const char *in = "3;a=b\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nT: v\r\n\r\n";
    struct pump p;
    pump_init(&p, H1_BODY_CHUNKED, 0, true, NULL);
    struct buf *b = NULL;
    struct sbuf got = { 0 };
    enum pump_status st = PUMP_BLOCKED;
    for (size_t i = 0; i < strlen(in) && st == PUMP_BLOCKED; i++) {
        write_all(r.s[1], in + i, 1);
        bool readable = true, writable = true;
        st = pump_run(&p, &b, XP(r.s[0]), &readable, XP(r.d[0]), &writable);
        drain(r.d[1], &got, 0);
    }
    CHECK_EQ_INT(st, PUMP_DONE);
    CHECK(dechunks_to(&got, "abc0123456789abcdef", 19));
    CHECK_EQ_INT(buf_len(b), 0);
    buf_put(b);
    sbuf_free(&got);
    rig_close(&r);
    buf_drain_free_list();
}

UNIT_TEST(test_chunked_large_rechunk_and_dechunk)
{
    size_t n = 400 * 1000;
    char *data = random_bytes(n);
    struct sbuf enc = { 0 };
    chunk_encode(&enc, data, n);
    for (int out_chunked = 0; out_chunked < 2; out_chunked++) {
        struct rig r;
        CHECK_EQ_INT(rig_open(&r), 0);
        struct feed f = { enc.p, enc.len, 0, false, false };
        struct pump p;
        pump_init(&p, H1_BODY_CHUNKED, 0, out_chunked, NULL);
        struct buf *b = NULL;
        struct sbuf got = { 0 };
        /* drain in small, odd amounts so writes stop at every offset of the framing */
        CHECK_EQ_INT(drive(&p, &b, &r, &f, &got, 777), PUMP_DONE);
        if (out_chunked)
            CHECK(dechunks_to(&got, data, n));
        else
            CHECK(got.len == n && memcmp(got.p, data, n) == 0);
        CHECK_EQ_INT(p.bytes_in, enc.len);
        CHECK_EQ_INT(buf_len(b), 0);
        buf_put(b);
        sbuf_free(&got);
        rig_close(&r);
    }
    free(data);
    sbuf_free(&enc);
    buf_drain_free_list();
}

UNIT_TEST(test_chunk_larger_than_buffer)
{
    /* one chunk of 3 buffers' worth: the decoder must hand out data before the chunk ends */
    size_t n = 3 * BUF_SIZE + 123;
    char *data = random_bytes(n);
    struct sbuf enc = { 0 };
    char hdr[20];
    sbuf_append(&enc, hdr, h1_chunk_header(hdr, n));
    sbuf_append(&enc, data, n);
    sbuf_append_cstr(&enc, "\r\n0\r\n\r\n");
    for (int out_chunked = 0; out_chunked < 2; out_chunked++) {
        struct rig r;
        CHECK_EQ_INT(rig_open(&r), 0);
        struct feed f = { enc.p, enc.len, 0, false, false };
        struct pump p;
        pump_init(&p, H1_BODY_CHUNKED, 0, out_chunked, NULL);
        struct buf *b = NULL;
        struct sbuf got = { 0 };
        CHECK_EQ_INT(drive(&p, &b, &r, &f, &got, 5000), PUMP_DONE);
        if (out_chunked)
            CHECK(dechunks_to(&got, data, n));
        else
            CHECK(got.len == n && memcmp(got.p, data, n) == 0);
        buf_put(b);
        sbuf_free(&got);
        rig_close(&r);
    }
    free(data);
    sbuf_free(&enc);
    buf_drain_free_list();
}

UNIT_TEST(test_chunked_out_tiny_socket_buffer)
{
    /* a small send buffer forces partial writes inside size lines, data and CRLFs */
    struct rig r;
    CHECK_EQ_INT(rig_open(&r), 0);
    int small = 1024;
    setsockopt(r.d[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    size_t n = 200 * 1000;
    char *data = random_bytes(n);
    struct feed f = { data, n, 0, true, false };
    struct pump p;
    pump_init(&p, H1_BODY_CLOSE, 0, true, NULL);
    struct buf *b = NULL;
    struct sbuf got = { 0 };
    CHECK_EQ_INT(drive(&p, &b, &r, &f, &got, 333), PUMP_DONE);
    CHECK(dechunks_to(&got, data, n));
    buf_put(b);
    free(data);
    sbuf_free(&got);
    rig_close(&r);
    buf_drain_free_list();
}

UNIT_TEST(test_close_delimited_until_eof)
{
    struct rig r;
    CHECK_EQ_INT(rig_open(&r), 0);
    size_t n = 300 * 1000;
    char *data = random_bytes(n);
    struct feed f = { data, n, 0, true, false };
    struct pump p;
    pump_init(&p, H1_BODY_CLOSE, 0, false, NULL);
    struct buf *b = NULL;
    struct sbuf got = { 0 };
    CHECK_EQ_INT(drive(&p, &b, &r, &f, &got, 0), PUMP_DONE);
    CHECK(p.src_eof);
    CHECK(got.len == n && memcmp(got.p, data, n) == 0);
    CHECK_EQ_INT(p.bytes_in, n);
    CHECK_EQ_INT(p.bytes_out, n);
    buf_put(b);
    free(data);
    sbuf_free(&got);
    rig_close(&r);
    buf_drain_free_list();
}

UNIT_TEST(test_close_delimited_empty)
{
    struct rig r;
    CHECK_EQ_INT(rig_open(&r), 0);
    shutdown(r.s[1], SHUT_WR);
    struct pump p;
    pump_init(&p, H1_BODY_CLOSE, 0, false, NULL);
    struct buf *b = NULL;
    struct sbuf got = { 0 };
    CHECK_EQ_INT(drive(&p, &b, &r, NULL, &got, 0), PUMP_DONE);
    CHECK_EQ_INT(got.len, 0);
    buf_put(b);
    sbuf_free(&got);
    rig_close(&r);
    buf_drain_free_list();
}

UNIT_TEST(test_prefix_written_before_body)
{
    struct rig r;
    CHECK_EQ_INT(rig_open(&r), 0);
    struct sbuf prefix = { 0 };
    sbuf_append_cstr(&prefix, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
    write_all(r.s[1], "howdy", 5);
    struct pump p;
    pump_init(&p, H1_BODY_LENGTH, 5, false, &prefix);
    struct buf *b = NULL;
    struct sbuf got = { 0 };
    CHECK_EQ_INT(drive(&p, &b, &r, NULL, &got, 0), PUMP_DONE);
    CHECK(sbuf_is(&got, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhowdy"));
    CHECK_EQ_INT(p.bytes_out, prefix.len + 5);
    CHECK_EQ_INT(p.prefix_off, prefix.len);
    buf_put(b);
    sbuf_free(&got);
    sbuf_free(&prefix);
    rig_close(&r);
    buf_drain_free_list();
}

UNIT_TEST(test_prefix_with_chunked_out)
{
    struct rig r;
    CHECK_EQ_INT(rig_open(&r), 0);
    struct sbuf prefix = { 0 };
    sbuf_append_cstr(&prefix, "HEAD\r\n\r\n");
    write_all(r.s[1], "2\r\nhi\r\n0\r\n\r\n", 12);
    struct pump p;
    pump_init(&p, H1_BODY_CHUNKED, 0, true, &prefix);
    struct buf *b = NULL;
    struct sbuf got = { 0 };
    CHECK_EQ_INT(drive(&p, &b, &r, NULL, &got, 0), PUMP_DONE);
    CHECK(got.len > 8 && memcmp(got.p, "HEAD\r\n\r\n", 8) == 0);
    struct sbuf body = { 0 };
    if (got.len > 8)
        sbuf_append(&body, got.p + 8, got.len - 8);
    CHECK(dechunks_to(&body, "hi", 2));
    buf_put(b);
    sbuf_free(&body);
    sbuf_free(&got);
    sbuf_free(&prefix);
    rig_close(&r);
    buf_drain_free_list();
}

UNIT_TEST(test_prefix_only_no_body)
{
    struct rig r;
    CHECK_EQ_INT(rig_open(&r), 0);
    struct sbuf prefix = { 0 };
    sbuf_append_cstr(&prefix, "GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    struct pump p;
    pump_init(&p, H1_BODY_NONE, 0, true, &prefix); /* no body: no chunked terminator either */
    struct buf *b = NULL;
    struct sbuf got = { 0 };
    CHECK_EQ_INT(drive(&p, &b, &r, NULL, &got, 0), PUMP_DONE);
    CHECK(sbuf_is(&got, "GET / HTTP/1.1\r\nHost: h\r\n\r\n"));
    CHECK_EQ_INT(p.bytes_in, 0);
    buf_put(b);
    sbuf_free(&got);
    sbuf_free(&prefix);
    rig_close(&r);
    buf_drain_free_list();
}

UNIT_TEST(test_empty_length_body_chunked_out)
{
    struct rig r;
    CHECK_EQ_INT(rig_open(&r), 0);
    struct pump p;
    pump_init(&p, H1_BODY_LENGTH, 0, true, NULL);
    struct buf *b = NULL;
    struct sbuf got = { 0 };
    CHECK_EQ_INT(drive(&p, &b, &r, NULL, &got, 0), PUMP_DONE);
    CHECK(sbuf_is(&got, "0\r\n\r\n"));
    buf_put(b);
    sbuf_free(&got);
    rig_close(&r);
    buf_drain_free_list();
}

UNIT_TEST(test_backpressure_bounded_and_resumes)
{
    struct rig r;
    CHECK_EQ_INT(rig_open(&r), 0);
    int small = 4096;
    setsockopt(r.d[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    size_t n = 2 * 1000 * 1000;
    char *data = random_bytes(n);
    struct feed f = { data, n, 0, false, false };
    struct pump p;
    pump_init(&p, H1_BODY_LENGTH, n, false, NULL);
    struct buf *b = NULL;
    struct sbuf got = { 0 };

    /* the destination never reads: the pump must stall with a bounded buffer */
    enum pump_status st = PUMP_DONE;
    bool readable = true, writable = true;
    uint64_t in_at_stall = 0;
    for (int i = 0; i < 50; i++) {
        feed_more(&f, r.s[1]);
        readable = true;
        writable = true; /* even a spurious writable edge must not unbound the buffer */
        st = pump_run(&p, &b, XP(r.s[0]), &readable, XP(r.d[0]), &writable);
        CHECK_EQ_INT(st, PUMP_BLOCKED);
        CHECK(b != NULL && buf_len(b) <= BUF_SIZE);
        CHECK(b != NULL && b->cap == BUF_SIZE);
        CHECK(p.bytes_in - p.bytes_out <= BUF_SIZE);
        if (i == 10)
            in_at_stall = p.bytes_in;
    }
    CHECK_EQ_INT(st, PUMP_BLOCKED);
    CHECK(!writable);
    CHECK(p.bytes_in < n);
    CHECK(p.bytes_in > 0);
    CHECK_EQ_INT(p.bytes_in, in_at_stall); /* stalled: no more reads while the buffer is full */
    CHECK(b != NULL && buf_len(b) > 0);

    /* drain the destination: the pump resumes and completes */
    CHECK_EQ_INT(drive(&p, &b, &r, &f, &got, 0), PUMP_DONE);
    CHECK(got.len == n && memcmp(got.p, data, n) == 0);
    buf_put(b);
    free(data);
    sbuf_free(&got);
    rig_close(&r);
    buf_drain_free_list();
}

UNIT_TEST(test_blocked_flags_cleared_on_eagain)
{
    struct rig r;
    CHECK_EQ_INT(rig_open(&r), 0);
    write_all(r.s[1], "ab", 2);
    struct pump p;
    pump_init(&p, H1_BODY_LENGTH, 10, false, NULL);
    struct buf *b = NULL;
    bool readable = true, writable = true;
    CHECK_EQ_INT(pump_run(&p, &b, XP(r.s[0]), &readable, XP(r.d[0]), &writable), PUMP_BLOCKED);
    CHECK(!readable); /* the source ran dry: wait for its next edge */
    CHECK(writable);  /* the destination took everything */
    struct sbuf got = { 0 };
    drain(r.d[1], &got, 0);
    CHECK(sbuf_is(&got, "ab"));
    /* with no readiness at all, nothing happens */
    write_all(r.s[1], "cd", 2);
    CHECK_EQ_INT(pump_run(&p, &b, XP(r.s[0]), &readable, XP(r.d[0]), &writable), PUMP_BLOCKED);
    drain(r.d[1], &got, 0);
    CHECK(sbuf_is(&got, "ab"));
    readable = true;
    CHECK_EQ_INT(pump_run(&p, &b, XP(r.s[0]), &readable, XP(r.d[0]), &writable), PUMP_BLOCKED);
    drain(r.d[1], &got, 0);
    CHECK(sbuf_is(&got, "abcd"));
    buf_put(b);
    sbuf_free(&got);
    rig_close(&r);
    buf_drain_free_list();
}

UNIT_TEST(test_src_eof_mid_length_body)
{
    struct rig r;
    CHECK_EQ_INT(rig_open(&r), 0);
    struct feed f = { "only ten b", 10, 0, true, false };
    struct pump p;
    pump_init(&p, H1_BODY_LENGTH, 100, false, NULL);
    struct buf *b = NULL;
    struct sbuf got = { 0 };
    CHECK_EQ_INT(drive(&p, &b, &r, &f, &got, 0), PUMP_SRC_EOF);
    CHECK(!pump_finished(&p));
    CHECK(p.src_eof);
    buf_put(b);
    sbuf_free(&got);
    rig_close(&r);
    buf_drain_free_list();
}

UNIT_TEST(test_src_eof_mid_chunked_body)
{
    struct rig r;
    CHECK_EQ_INT(rig_open(&r), 0);
    struct feed f = { "5\r\nhel", 6, 0, true, false };
    struct pump p;
    pump_init(&p, H1_BODY_CHUNKED, 0, true, NULL);
    struct buf *b = NULL;
    struct sbuf got = { 0 };
    CHECK_EQ_INT(drive(&p, &b, &r, &f, &got, 0), PUMP_SRC_EOF);
    /* what went out must not look like a complete chunked body */
    CHECK(got.len < 5 || memcmp(got.p + got.len - 5, "0\r\n\r\n", 5) != 0);
    buf_put(b);
    sbuf_free(&got);
    rig_close(&r);
    buf_drain_free_list();
}

UNIT_TEST(test_src_error_malformed_chunk)
{
    static const char *const bad[] = {
        "zz\r\nhello\r\n0\r\n\r\n",  /* non-hex size */
        "5\r\nhelloXX0\r\n\r\n",     /* no CRLF after data */
        "0x5\r\nhello\r\n0\r\n\r\n", /* 0x prefix */
        "5\nhello\r\n0\r\n\r\n",     /* bare LF */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct rig r;
        CHECK_EQ_INT(rig_open(&r), 0);
        write_all(r.s[1], bad[i], strlen(bad[i]));
        struct pump p;
        pump_init(&p, H1_BODY_CHUNKED, 0, false, NULL);
        struct buf *b = NULL;
        struct sbuf got = { 0 };
        enum pump_status st = drive(&p, &b, &r, NULL, &got, 0);
        if (st != PUMP_SRC_ERROR)
            fprintf(stderr, "  bad chunked input #%zu: status %d\n", i, (int)st);
        CHECK_EQ_INT(st, PUMP_SRC_ERROR);
        buf_put(b);
        sbuf_free(&got);
        rig_close(&r);
    }
    buf_drain_free_list();
}

UNIT_TEST(test_dst_error_when_destination_closed)
{
    signal(SIGPIPE, SIG_IGN);
    struct rig r;
    CHECK_EQ_INT(rig_open(&r), 0);
    close(r.d[1]);
    r.d[1] = -1;
    write_all(r.s[1], "some body bytes", 15);
    struct pump p;
    pump_init(&p, H1_BODY_LENGTH, 15, false, NULL);
    struct buf *b = NULL;
    bool readable = true, writable = true;
    enum pump_status st = PUMP_BLOCKED;
    for (int i = 0; i < 10 && st == PUMP_BLOCKED; i++)
        st = pump_run(&p, &b, XP(r.s[0]), &readable, XP(r.d[0]), &writable);
    CHECK_EQ_INT(st, PUMP_DST_ERROR);
    buf_put(b);
    rig_close(&r);
    buf_drain_free_list();
}

UNIT_TEST(test_dst_error_on_prefix)
{
    signal(SIGPIPE, SIG_IGN);
    struct rig r;
    CHECK_EQ_INT(rig_open(&r), 0);
    close(r.d[1]);
    r.d[1] = -1;
    struct sbuf prefix = { 0 };
    sbuf_append_cstr(&prefix, "GET / HTTP/1.1\r\n\r\n");
    struct pump p;
    pump_init(&p, H1_BODY_NONE, 0, false, &prefix);
    struct buf *b = NULL;
    bool readable = true, writable = true;
    CHECK_EQ_INT(pump_run(&p, &b, XP(r.s[0]), &readable, XP(r.d[0]), &writable), PUMP_DST_ERROR);
    buf_put(b);
    sbuf_free(&prefix);
    rig_close(&r);
    buf_drain_free_list();
}

UNIT_TEST(test_limit_stops_chunked_body_before_excess_leaves)
{
    struct rig r;
    CHECK_EQ_INT(rig_open(&r), 0);
    size_t n = 100 * 1000;
    char *data = random_bytes(n);
    struct sbuf enc = { 0 };
    chunk_encode(&enc, data, n);
    struct feed f = { enc.p, enc.len, 0, false, false };
    struct pump p;
    pump_init(&p, H1_BODY_CHUNKED, 0, false, NULL);
    p.limit = 50 * 1000;
    struct buf *b = NULL;
    struct sbuf got = { 0 };
    CHECK_EQ_INT(drive(&p, &b, &r, &f, &got, 0), PUMP_TOO_LARGE);
    CHECK(got.len <= 50 * 1000);
    CHECK(memcmp(got.p ? got.p : "", data, got.len) == 0);
    buf_put(b);
    free(data);
    sbuf_free(&got);
    sbuf_free(&enc);
    rig_close(&r);
    buf_drain_free_list();
}

UNIT_TEST(test_limit_exactly_reached_is_fine)
{
    struct rig r;
    CHECK_EQ_INT(rig_open(&r), 0);
    write_all(r.s[1], "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", 20);
    struct pump p;
    pump_init(&p, H1_BODY_CHUNKED, 0, false, NULL);
    p.limit = 5;
    struct buf *b = NULL;
    struct sbuf got = { 0 };
    CHECK_EQ_INT(drive(&p, &b, &r, NULL, &got, 0), PUMP_DONE);
    CHECK(sbuf_is(&got, "abcde"));
    CHECK_EQ_INT(p.body, 5);
    buf_put(b);
    sbuf_free(&got);
    rig_close(&r);
    buf_drain_free_list();
}

UNIT_TEST(test_tap_copies_length_body)
{
    struct rig r;
    CHECK_EQ_INT(rig_open(&r), 0);
    struct buf *b = buf_get();
    memcpy(buf_wptr(b), "par", 3);
    b->wpos += 3;
    write_all(r.s[1], "tial bodyEXTRA", 14);
    struct sbuf tap = { 0 };
    struct pump p;
    pump_init(&p, H1_BODY_LENGTH, 12, false, NULL);
    p.tap = &tap;
    struct sbuf got = { 0 };
    CHECK_EQ_INT(drive(&p, &b, &r, NULL, &got, 0), PUMP_DONE);
    CHECK(sbuf_is(&got, "partial body"));
    CHECK(sbuf_is(&tap, "partial body"));
    CHECK(buf_is(b, "EXTRA"));
    buf_put(b);
    sbuf_free(&tap);
    sbuf_free(&got);
    rig_close(&r);
    buf_drain_free_list();
}

UNIT_MAIN()
