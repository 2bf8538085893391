/* compress_stream: one streaming encoder (gzip via zlib, brotli, zstd) behind compress_run().
 *
 * Each engine knows two moves: "feed" (take input, emit what it likes) and "flush" (no input; emit everything
 * fed so far, or end the stream). compress_run() feeds all the input first and only then flushes, which is the
 * order every library documents as safe (brotli refuses an input change in the middle of a flush).
 *
 * When the caller's buffer is tiny the engine writes into a small staging buffer instead: zlib re-emits a sync
 * marker each time a flush ends with the output exactly full, so with a few bytes of room it could loop forever
 * (zlib.h: "make sure that avail_out is greater than six"). */
#include "http/compress.h"

#include <brotli/encode.h>
#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#define COMPRESS_STAGE 64
#define COMPRESS_BR_BLOCK (128 * 1024)

struct compress_stream {
    enum compress_algo algo;
    enum compress_flush inflight; /* a flush started (all input in) whose output is not all written yet */
    bool dirty;                   /* input fed since the last flush: a SYNC has something to do */
    bool finished;                /* the engine ended the stream */
    int64_t expect;               /* the body's announced size, or -1 */
    uint64_t fed;                 /* input bytes taken so far */
    size_t block;                 /* input bytes taken since the last flush */
    size_t mem;                   /* bytes the zlib / brotli engine holds, through compress_alloc() */
    union {
        z_stream z;
        BrotliEncoderState *br;
        ZSTD_CCtx *zs;
    } u;
    size_t stage_off, stage_len;
    unsigned char stage[COMPRESS_STAGE];
};

/* Counting allocator: a header in front of each block remembers its size, since neither zlib nor brotli passes
 * it back on free. */
#define COMPRESS_HDR (alignof(max_align_t) > sizeof(size_t) ? alignof(max_align_t) : sizeof(size_t))

static void *compress_alloc(void *opaque, size_t n)
{
    struct compress_stream *s = opaque;
    if (n > SIZE_MAX - COMPRESS_HDR)
        return NULL;
    unsigned char *p = malloc(n + COMPRESS_HDR);
    if (p == NULL)
        return NULL;
    memcpy(p, &n, sizeof n);
    s->mem += n;
    return p + COMPRESS_HDR;
}

static void compress_dealloc(void *opaque, void *addr)
{
    if (addr == NULL)
        return;
    struct compress_stream *s = opaque;
    unsigned char *p = (unsigned char *)addr - COMPRESS_HDR;
    size_t n;
    memcpy(&n, p, sizeof n);
    s->mem -= n;
    free(p);
}

static void *compress_zalloc(void *opaque, unsigned items, unsigned size)
{
    if (size != 0 && items > SIZE_MAX / size)
        return NULL;
    return compress_alloc(opaque, (size_t)items * size);
}

/* ---- engines: feed returns 0 / -1; flush returns 1 (done), 0 (needs room), -1 ---- */

struct compress_io {
    const unsigned char *in;
    size_t in_left;
    unsigned char *out;
    size_t out_left;
};

static int compress_gzip_call(struct compress_stream *s, struct compress_io *io, int mode)
{
    z_stream *z = &s->u.z;
    /* Slices are bounded by uInt; the caller loops. */
    uInt in_n = io->in_left > UINT32_MAX ? UINT32_MAX : (uInt)io->in_left;
    uInt out_n = io->out_left > UINT32_MAX ? UINT32_MAX : (uInt)io->out_left;
    z->next_in = (Bytef *)io->in;
    z->avail_in = in_n;
    z->next_out = io->out;
    z->avail_out = out_n;
    int rc = deflate(z, mode);
    io->in += in_n - z->avail_in;
    io->in_left -= in_n - z->avail_in;
    io->out += out_n - z->avail_out;
    io->out_left -= out_n - z->avail_out;
    return rc;
}

static int compress_gzip_feed(struct compress_stream *s, struct compress_io *io)
{
    int rc = compress_gzip_call(s, io, Z_NO_FLUSH);
    return rc == Z_OK || rc == Z_BUF_ERROR ? 0 : -1;
}

static int compress_gzip_flush(struct compress_stream *s, struct compress_io *io, enum compress_flush f)
{
    int rc = compress_gzip_call(s, io, f == COMPRESS_FINISH ? Z_FINISH : Z_SYNC_FLUSH);
    if (rc == Z_STREAM_END)
        return 1;
    if (rc != Z_OK && rc != Z_BUF_ERROR)
        return -1;
    if (f == COMPRESS_FINISH)
        return 0;
    /* zlib.h: a sync flush is complete when deflate() leaves output room; Z_BUF_ERROR means nothing was left. */
    return io->out_left != 0 || rc == Z_BUF_ERROR ? 1 : 0;
}

static int compress_br_feed(struct compress_stream *s, struct compress_io *io)
{
    return BrotliEncoderCompressStream(s->u.br, BROTLI_OPERATION_PROCESS, &io->in_left, &io->in, &io->out_left,
                                       &io->out, NULL) ? 0 : -1;
}

static int compress_br_flush(struct compress_stream *s, struct compress_io *io, enum compress_flush f)
{
    BrotliEncoderOperation op = f == COMPRESS_FINISH ? BROTLI_OPERATION_FINISH : BROTLI_OPERATION_FLUSH;
    size_t none = 0;
    const uint8_t *in = NULL;
    if (!BrotliEncoderCompressStream(s->u.br, op, &none, &in, &io->out_left, &io->out, NULL))
        return -1;
    if (f == COMPRESS_FINISH)
        return BrotliEncoderIsFinished(s->u.br) ? 1 : 0;
    return BrotliEncoderHasMoreOutput(s->u.br) ? 0 : 1;
}

static int compress_zstd_call(struct compress_stream *s, struct compress_io *io, ZSTD_EndDirective d, size_t *left)
{
    ZSTD_inBuffer ib = { io->in, io->in_left, 0 };
    ZSTD_outBuffer ob = { io->out, io->out_left, 0 };
    size_t rc = ZSTD_compressStream2(s->u.zs, &ob, &ib, d);
    io->in += ib.pos;
    io->in_left -= ib.pos;
    io->out += ob.pos;
    io->out_left -= ob.pos;
    if (ZSTD_isError(rc))
        return -1;
    *left = rc;
    return 0;
}

static int compress_zstd_feed(struct compress_stream *s, struct compress_io *io)
{
    size_t left;
    return compress_zstd_call(s, io, ZSTD_e_continue, &left);
}

static int compress_zstd_flush(struct compress_stream *s, struct compress_io *io, enum compress_flush f)
{
    size_t left;
    if (compress_zstd_call(s, io, f == COMPRESS_FINISH ? ZSTD_e_end : ZSTD_e_flush, &left) < 0)
        return -1;
    return left == 0 ? 1 : 0; /* zstd.h: call again with the same directive until it returns 0 */
}

/* One engine move; F NONE means feed. */
static int compress_engine(struct compress_stream *s, struct compress_io *io, enum compress_flush f)
{
    switch (s->algo) {
    case COMPRESS_GZIP:
        return f == COMPRESS_NONE ? compress_gzip_feed(s, io) : compress_gzip_flush(s, io, f);
    case COMPRESS_BR:
        return f == COMPRESS_NONE ? compress_br_feed(s, io) : compress_br_flush(s, io, f);
    case COMPRESS_ZSTD:
        return f == COMPRESS_NONE ? compress_zstd_feed(s, io) : compress_zstd_flush(s, io, f);
    default:
        return -1;
    }
}

/* Runs one engine move into the caller's buffer, or into the staging buffer when that one is small. */
static int compress_step(struct compress_stream *s, struct compress_io *io, enum compress_flush f)
{
    if (io->out_left >= COMPRESS_STAGE)
        return compress_engine(s, io, f);
    struct compress_io st = { io->in, io->in_left, s->stage, COMPRESS_STAGE };
    int r = compress_engine(s, &st, f);
    io->in = st.in;
    io->in_left = st.in_left;
    s->stage_off = 0;
    s->stage_len = COMPRESS_STAGE - st.out_left;
    return r;
}

static void compress_drain(struct compress_stream *s, struct compress_io *io)
{
    size_t n = s->stage_len < io->out_left ? s->stage_len : io->out_left;
    if (n == 0)
        return; /* OUT may be NULL with no room */
    memcpy(io->out, s->stage + s->stage_off, n);
    io->out += n;
    io->out_left -= n;
    s->stage_off += n;
    s->stage_len -= n;
}

/* One feeding move. Brotli keeps a whole meta-block of input (up to twice its window) and sizes its command and
 * output buffers to it: ending a meta-block every COMPRESS_BR_BLOCK bytes bounds them (at level 4, 3.9 MiB of peak
 * memory become 2.2 MiB, for 0.2% more output). */
static int compress_feed(struct compress_stream *s, struct compress_io *io)
{
    size_t all = io->in_left, out0 = io->out_left, st0 = s->stage_len;
    if (s->algo == COMPRESS_BR && io->in_left > COMPRESS_BR_BLOCK - s->block)
        io->in_left = COMPRESS_BR_BLOCK - s->block;
    size_t offered = io->in_left;
    int r = compress_step(s, io, COMPRESS_NONE);
    size_t took = offered - io->in_left;
    io->in_left = all - took;
    if (r < 0 || (took == 0 && io->out_left == out0 && s->stage_len == st0))
        return -1; /* an engine that neither takes nor gives would spin */
    s->fed += took;
    s->block += took;
    s->dirty = true;
    if (s->algo == COMPRESS_BR && s->block >= COMPRESS_BR_BLOCK) {
        s->inflight = COMPRESS_SYNC;
        s->dirty = false;
        s->block = 0;
    }
    return 0;
}

/* The loop behind compress_run(): staged bytes first, then an unfinished flush, then input, then this call's
 * flush. Returns as compress_run(). */
static int compress_loop(struct compress_stream *s, struct compress_io *io, enum compress_flush flush)
{
    for (;;) {
        compress_drain(s, io);
        if (s->stage_len != 0)
            return 0;
        if (s->inflight != COMPRESS_NONE) {
            if (io->out_left == 0)
                return 0;
            int r = compress_step(s, io, s->inflight);
            if (r < 0)
                return -1;
            if (r == 1) {
                s->finished = s->inflight == COMPRESS_FINISH;
                s->inflight = COMPRESS_NONE;
            }
            continue;
        }
        if (io->in_left != 0) {
            if (s->finished)
                return -1;
            if (io->out_left == 0)
                return 0;
            if (compress_feed(s, io) < 0)
                return -1;
            continue;
        }
        if (flush == COMPRESS_NONE || s->finished || (flush == COMPRESS_SYNC && !s->dirty))
            return 1;
        if (flush == COMPRESS_FINISH && s->expect >= 0 && s->fed != (uint64_t)s->expect)
            return -1; /* the body ended short of its announced size */
        s->inflight = flush;
        s->dirty = false;
        s->block = 0;
    }
}

int compress_run(struct compress_stream *s, const void *in, size_t in_len, size_t *consumed, void *out, size_t cap,
                 size_t *produced, enum compress_flush flush)
{
    struct compress_io io = { in, in_len, out, cap };
    int r = -1;
    if (s->expect < 0 || in_len <= (uint64_t)s->expect - s->fed)
        r = compress_loop(s, &io, flush);
    *consumed = in_len - io.in_left;
    *produced = cap - io.out_left;
    return r;
}

/* ---- construction ---- */

static int compress_clamp(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* Bits of a window that holds SIZE bytes: a body smaller than the window cannot use the rest of it. */
static int compress_bits_for(int64_t size, int lo, int hi)
{
    if (size < 0)
        return hi;
    int b = lo;
    while (b < hi && ((int64_t)1 << b) < size)
        b++;
    return b;
}

static bool compress_gzip_init(struct compress_stream *s, int level, int64_t size)
{
    s->u.z.zalloc = compress_zalloc;
    s->u.z.zfree = compress_dealloc;
    s->u.z.opaque = s;
    /* windowBits 15 (32 KiB) and memLevel 8 are zlib's defaults, ~256 KiB of state; a small body gets both scaled
     * down together (zlib pairs memLevel 8 with 15). +16 selects the gzip wrapper. */
    int wbits = compress_bits_for(size, 9, 15);
    int mem_level = compress_clamp(wbits - 7, 2, 8);
    return deflateInit2(&s->u.z, compress_clamp(level, 1, 9), Z_DEFLATED, wbits + 16, mem_level,
                        Z_DEFAULT_STRATEGY) == Z_OK;
}

static bool compress_br_init(struct compress_stream *s, int level, int64_t size)
{
    s->u.br = BrotliEncoderCreateInstance(compress_alloc, compress_dealloc, s);
    if (s->u.br == NULL)
        return false;
    int q = compress_clamp(level, BROTLI_MIN_QUALITY, BROTLI_MAX_QUALITY);
    /* The window grows with the quality: cheap levels gain little from a long one, and a stream per response in
     * flight must stay small (brotli's default 22 would cost 4 MiB of ring buffer each). */
    int lgwin = compress_bits_for(size, BROTLI_MIN_WINDOW_BITS, q <= 5 ? 18 : q <= 9 ? 19 : 22);
    /* Brotli picks its hash table from the size hint, and from 1 MiB on switches to ones of 2..4 MiB (and when
     * the hint is unset it guesses from the first slice fed). An explicit hint below 1 MiB keeps the table the
     * same size whatever the body. */
    uint32_t hint = size >= 0 && size < (1 << 20) ? (uint32_t)size : (1u << 20) - 1;
    return BrotliEncoderSetParameter(s->u.br, BROTLI_PARAM_QUALITY, (uint32_t)q) &&
           BrotliEncoderSetParameter(s->u.br, BROTLI_PARAM_LGWIN, (uint32_t)lgwin) &&
           BrotliEncoderSetParameter(s->u.br, BROTLI_PARAM_MODE, BROTLI_MODE_TEXT) &&
           BrotliEncoderSetParameter(s->u.br, BROTLI_PARAM_SIZE_HINT, hint == 0 ? 1 : hint);
}

static bool compress_zstd_init(struct compress_stream *s, int level, int64_t size)
{
    s->u.zs = ZSTD_createCCtx();
    if (s->u.zs == NULL)
        return false;
    int l = compress_clamp(level, 1, 19);
    /* Streaming with an unknown size, zstd would pick its large-input window (2..8 MiB). 512 KiB loses 0.1% on
     * a 1 MiB mix of HTML and JavaScript against 1 MiB, and saves 512 KiB of the stream's 2.5 MiB (the input
     * buffer holds a window). A known size shrinks window and tables further. */
    int wlog = l < 10 ? 19 : 20;
    return !ZSTD_isError(ZSTD_CCtx_setParameter(s->u.zs, ZSTD_c_compressionLevel, l)) &&
           !ZSTD_isError(ZSTD_CCtx_setParameter(s->u.zs, ZSTD_c_windowLog, wlog)) &&
           (size < 0 || !ZSTD_isError(ZSTD_CCtx_setPledgedSrcSize(s->u.zs, (unsigned long long)size)));
}

struct compress_stream *compress_new_sized(enum compress_algo a, int level, int64_t size)
{
    if ((int)a < 0 || a >= COMPRESS_N)
        return NULL;
    struct compress_stream *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->algo = a;
    s->expect = size < 0 ? -1 : size;
    bool ok;
    if (a == COMPRESS_GZIP) {
        if (!compress_gzip_init(s, level, s->expect)) {
            free(s); /* a failed deflateInit2 holds nothing */
            return NULL;
        }
        return s;
    }
    ok = a == COMPRESS_BR ? compress_br_init(s, level, s->expect) : compress_zstd_init(s, level, s->expect);
    if (!ok) {
        compress_free(s);
        return NULL;
    }
    return s;
}

struct compress_stream *compress_new(enum compress_algo a, int level)
{
    return compress_new_sized(a, level, -1);
}

size_t compress_mem(const struct compress_stream *s)
{
    size_t engine = s->algo == COMPRESS_ZSTD ? ZSTD_sizeof_CCtx(s->u.zs) : s->mem;
    return sizeof *s + engine;
}

void compress_free(struct compress_stream *s)
{
    if (s == NULL)
        return;
    switch (s->algo) {
    case COMPRESS_GZIP:
        deflateEnd(&s->u.z);
        break;
    case COMPRESS_BR:
        if (s->u.br)
            BrotliEncoderDestroyInstance(s->u.br);
        break;
    case COMPRESS_ZSTD:
        ZSTD_freeCCtx(s->u.zs);
        break;
    default:
        break;
    }
    free(s);
}
