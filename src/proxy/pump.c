#include "proxy/pump.h"

#include <errno.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

/* The last chunk, then the trailer section (RFC 9112 §7.1.2), then the final CRLF. */
static const char pump_last_chunk[] = "0\r\n";
#define PUMP_LAST_LEN 3

static uint32_t pump_trailer_len(const struct pump *p)
{
    return p->dec.trailers ? (uint32_t)p->dec.trailers->len : 0;
}

static uint32_t pump_term_len(const struct pump *p)
{
    return PUMP_LAST_LEN + pump_trailer_len(p) + 2;
}

void pump_init(struct pump *p, enum h1_body_kind kind, uint64_t length, bool out_chunked,
               struct sbuf *prefix)
{
    memset(p, 0, sizeof *p);
    p->in_kind = kind;
    p->in_left = length;
    p->out_chunked = out_chunked && kind != H1_BODY_NONE;
    p->in_done = kind == H1_BODY_NONE || (kind == H1_BODY_LENGTH && length == 0);
    p->prefix = prefix;
}

/* Written bytes come from the source buffer, or from the filter's output when there is one. */
static struct buf *pump_dbuf(struct pump *p, struct buf *b)
{
    return p->filter.run ? p->filter.out : b;
}

static uint32_t *pump_dready(struct pump *p)
{
    return p->filter.run ? &p->filter.ready : &p->ready;
}

/* Every body byte has been taken and, with a filter, the filter has ended its output. */
static bool pump_input_over(const struct pump *p)
{
    return p->in_done && (!p->filter.run || (p->ready == 0 && p->filter.finished));
}

bool pump_finished(const struct pump *p)
{
    bool prefix_done = !p->prefix || p->prefix_off == p->prefix->len;
    bool term_done = !p->out_chunked || p->term_sent == pump_term_len(p);
    uint32_t ready = p->filter.run ? p->filter.ready : p->ready;
    return prefix_done && pump_input_over(p) && ready == 0 && p->seg_len == 0 && term_done;
}

void pump_release(struct pump *p)
{
    buf_put(p->filter.out);
    p->filter.out = NULL;
}

static void pump_observe(struct pump *p, const char *data, size_t len)
{
    if (p->observer.fn && len)
        p->observer.fn(p->observer.arg, data, len);
}

/* Turns bytes read but not yet examined into ready body bytes, per the source framing. */
static int pump_take(struct pump *p, struct buf *b)
{
    uint32_t fresh = buf_len(b) - p->ready;
    if (p->in_done || fresh == 0)
        return 0;
    if (p->in_kind == H1_BODY_LENGTH) {
        uint32_t take = fresh < p->in_left ? fresh : (uint32_t)p->in_left;
        p->ready += take;
        p->in_left -= take;
        p->in_done = p->in_left == 0;
        p->body += take;
        if (p->tap)
            sbuf_append(p->tap, buf_rptr(b) + p->ready - take, take);
        pump_observe(p, buf_rptr(b) + p->ready - take, take);
        return 0;
    }
    if (p->in_kind == H1_BODY_CLOSE) {
        pump_observe(p, buf_rptr(b) + p->ready, fresh);
        p->ready += fresh;
        p->body += fresh;
        return 0;
    }
    /* chunked: decode in place, then close the gap left by the framing bytes */
    char *start = buf_rptr(b) + p->ready;
    size_t consumed, produced;
    int r = h1_chunked_decode(&p->dec, start, fresh, &consumed, &produced);
    if (r < 0)
        return -1;
    memmove(start + produced, start + consumed, fresh - consumed);
    b->wpos -= (uint32_t)(consumed - produced);
    pump_observe(p, start, produced);
    p->ready += (uint32_t)produced;
    p->in_done = r == 1;
    p->body += produced;
    return 0;
}

/* Runs the filter over the ready body bytes into its output buffer. SYNC asks for a flush (the
 * source paused). Returns 0, or -1 on a filter error or no memory. */
static int pump_filter_step(struct pump *p, struct buf *b, bool sync)
{
    struct pump_filter *f = &p->filter;
    if (f->finished || (!p->ready && !p->in_done && !(sync && f->dirty)))
        return 0;
    if (!f->out && !(f->out = buf_get()))
        return -1;
    for (;;) {
        if (buf_space(f->out) < BUF_SIZE / 4 && f->out->rpos > 0)
            buf_compact(f->out);
        if (buf_space(f->out) == 0)
            return 0; /* the writer must make room first */
        enum pump_flush flush = p->in_done ? PUMP_FLUSH_FINISH : sync && f->dirty ? PUMP_FLUSH_SYNC : PUMP_FLUSH_NONE;
        size_t used = 0, made = 0;
        int r = f->run(f->ctx, buf_rptr(b), p->ready, &used, buf_wptr(f->out), buf_space(f->out), &made, flush);
        if (r < 0)
            return -1;
        buf_consume(b, (uint32_t)used);
        p->ready -= (uint32_t)used;
        f->out->wpos += (uint32_t)made;
        f->ready += (uint32_t)made;
        f->dirty = flush == PUMP_FLUSH_NONE ? f->dirty || used : !(r == 1);
        f->finished = r == 1 && flush == PUMP_FLUSH_FINISH;
        if (r == 1 || (!used && !made))
            return 0;
    }
}

/* Appends what is left of the terminator (last chunk, trailers, CRLF) to IOV[N..]. */
static int pump_term_iov(const struct pump *p, struct iovec *iov, int n)
{
    uint32_t off = p->term_sent, tlen = pump_trailer_len(p);
    if (off < PUMP_LAST_LEN)
        iov[n++] = (struct iovec){ (char *)pump_last_chunk + off, PUMP_LAST_LEN - off };
    off = off > PUMP_LAST_LEN ? off - PUMP_LAST_LEN : 0;
    if (off < tlen)
        iov[n++] = (struct iovec){ p->dec.trailers->p + off, tlen - off };
    off = off > tlen ? off - tlen : 0;
    iov[n++] = (struct iovec){ (char *)"\r\n" + off, 2 - off };
    return n;
}

/* Builds the iovec of what is due next; returns the count. */
static int pump_iov(struct pump *p, struct buf *src, struct iovec *iov)
{
    int n = 0;
    struct buf *b = pump_dbuf(p, src);
    uint32_t ready = *pump_dready(p);
    if (p->prefix && p->prefix_off < p->prefix->len)
        iov[n++] = (struct iovec){ p->prefix->p + p->prefix_off, p->prefix->len - p->prefix_off };
    if (!p->out_chunked) {
        if (ready)
            iov[n++] = (struct iovec){ buf_rptr(b), ready };
        return n;
    }
    if (p->seg_len == 0 && ready) {
        p->seg_len = ready;
        p->seg_sent = 0;
        p->seg_hdr_len = (uint8_t)h1_chunk_header(p->seg_hdr, p->seg_len);
    }
    if (p->seg_len) {
        uint32_t off = p->seg_sent;
        if (off < p->seg_hdr_len)
            iov[n++] = (struct iovec){ p->seg_hdr + off, p->seg_hdr_len - off };
        uint32_t data_off = off > p->seg_hdr_len ? off - p->seg_hdr_len : 0;
        if (data_off < p->seg_len)
            iov[n++] = (struct iovec){ buf_rptr(b) + data_off, p->seg_len - data_off };
        uint32_t crlf_off = off > p->seg_hdr_len + p->seg_len ? off - p->seg_hdr_len - p->seg_len : 0;
        iov[n++] = (struct iovec){ (char *)"\r\n" + crlf_off, 2 - crlf_off };
    }
    if (pump_input_over(p) && ready == p->seg_len && p->term_sent < pump_term_len(p))
        n = pump_term_iov(p, iov, n);
    return n;
}

/* Accounts N written bytes against prefix, segment and terminator, in that order. */
static void pump_advance(struct pump *p, struct buf *src, size_t n)
{
    struct buf *b = pump_dbuf(p, src);
    uint32_t *ready = pump_dready(p);
    p->bytes_out += n;
    if (p->prefix && p->prefix_off < p->prefix->len) {
        size_t k = p->prefix->len - p->prefix_off;
        k = n < k ? n : k;
        p->prefix_off += (uint32_t)k;
        n -= k;
    }
    if (!p->out_chunked) {
        *ready -= (uint32_t)n;
        buf_consume(b, (uint32_t)n);
        return;
    }
    if (p->seg_len) {
        uint32_t total = p->seg_hdr_len + p->seg_len + 2;
        size_t k = total - p->seg_sent;
        k = n < k ? n : k;
        p->seg_sent += (uint32_t)k;
        n -= k;
        if (p->seg_sent == total) {
            buf_consume(b, p->seg_len);
            *ready -= p->seg_len;
            p->seg_len = 0;
        }
    }
    p->term_sent += (uint32_t)n;
}

static enum pump_status pump_write(struct pump *p, struct buf *b, struct xport *dst, bool *writable,
                                   bool *progress)
{
    struct iovec iov[8];
    if (p->sink) {
        if (p->ready) {
            sbuf_append(p->sink, buf_rptr(b), p->ready);
            buf_consume(b, p->ready);
            p->ready = 0;
            *progress = true;
        }
        return p->sink->failed ? PUMP_NO_MEMORY : PUMP_BLOCKED;
    }
    while (*writable) {
        int n = pump_iov(p, b, iov);
        if (n == 0)
            return PUMP_BLOCKED;
        ssize_t w = xport_writev(dst, iov, n);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                *writable = false;
                return PUMP_BLOCKED;
            }
            if (errno == EINTR)
                continue;
            return PUMP_DST_ERROR;
        }
        pump_advance(p, b, (size_t)w);
        *progress = true;
    }
    return PUMP_BLOCKED;
}

static enum pump_status pump_read(struct pump *p, struct buf *b, struct xport *src, bool *readable,
                                  bool *progress)
{
    if (p->in_done || !*readable)
        return PUMP_BLOCKED;
    if (buf_space(b) < BUF_SIZE / 4 && b->rpos > 0)
        buf_compact(b);
    if (buf_space(b) == 0)
        return PUMP_BLOCKED;
    ssize_t r = xport_read(src, buf_wptr(b), buf_space(b));
    if (r < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            *readable = false;
            return PUMP_BLOCKED;
        }
        return errno == EINTR ? PUMP_BLOCKED : PUMP_SRC_ERROR;
    }
    if (r == 0) {
        *readable = false;
        p->src_eof = true;
        if (p->in_kind != H1_BODY_CLOSE)
            return PUMP_SRC_EOF;
        p->in_done = true;
        *progress = true; /* the end itself is news: the terminator can go out now */
        return PUMP_BLOCKED;
    }
    b->wpos += (uint32_t)r;
    p->bytes_in += (uint64_t)r;
    *progress = true;
    return PUMP_BLOCKED;
}

enum pump_status pump_run(struct pump *p, struct buf **bufp, struct xport *src, bool *src_readable,
                          struct xport *dst, bool *dst_writable)
{
    if (!*bufp && !(*bufp = buf_get()))
        return PUMP_NO_MEMORY;
    struct buf *b = *bufp;
    for (;;) {
        bool progress = false;
        if (pump_take(p, b) < 0)
            return PUMP_SRC_ERROR;
        if (p->limit && p->body > p->limit)
            return PUMP_TOO_LARGE; /* checked before writing, so the excess never leaves */
        if (p->filter.run && pump_filter_step(p, b, false) < 0)
            return PUMP_NO_MEMORY;
        enum pump_status s = pump_write(p, b, dst, dst_writable, &progress);
        if (s != PUMP_BLOCKED)
            return s;
        if (pump_finished(p))
            return PUMP_DONE;
        s = pump_read(p, b, src, src_readable, &progress);
        if (s != PUMP_BLOCKED)
            return s;
        if (!progress && p->filter.run && p->filter.dirty && !p->in_done) {
            /* The source paused with input inside the filter: flush it so the client sees it. */
            uint32_t before = p->filter.ready;
            if (pump_filter_step(p, b, true) < 0)
                return PUMP_NO_MEMORY;
            progress = p->filter.ready != before;
        }
        if (!progress)
            return PUMP_BLOCKED;
    }
}
