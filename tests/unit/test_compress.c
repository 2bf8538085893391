/* Unit tests of src/http/compress*.c: Accept-Encoding negotiation (RFC 9110 §12.5.3), type matching, ETag
 * weakening, and round trips of the streaming encoders through the real zlib / brotli / zstd decoders, with
 * SYNC flush points decoded as they come and tiny output buffers. */
#include <brotli/decode.h>
#include <malloc.h>
#include <stdint.h>
#include <zlib.h>
#include <zstd.h>

#include "http/compress.h"
#include "unit.h"

static const enum compress_algo all3[] = { COMPRESS_BR, COMPRESS_ZSTD, COMPRESS_GZIP };

static int nego(const char *accept)
{
    return compress_negotiate(str_make(accept, strlen(accept)), all3, 3);
}

UNIT_TEST(negotiate_basics)
{
    CHECK_EQ_INT(compress_negotiate(str_make(NULL, 0), all3, 3), -1); /* absent */
    CHECK_EQ_INT(nego(""), -1);
    CHECK_EQ_INT(nego("gzip"), COMPRESS_GZIP);
    CHECK_EQ_INT(nego("gzip, deflate, br"), COMPRESS_BR);           /* tie: server order */
    CHECK_EQ_INT(nego("gzip, deflate, br, zstd"), COMPRESS_BR);
    CHECK_EQ_INT(nego("gzip, zstd"), COMPRESS_ZSTD);
    CHECK_EQ_INT(nego("deflate, compress"), -1);
    CHECK_EQ_INT(nego("gzip;q=0.5, br;q=0.4"), COMPRESS_GZIP);      /* highest q wins */
    CHECK_EQ_INT(nego("br;q=0.9, gzip;q=0.9, zstd;q=1"), COMPRESS_ZSTD);
    CHECK_EQ_INT(nego("br;q=0.001"), COMPRESS_BR);
    CHECK_EQ_INT(nego("br ; q=0.5 , gzip"), COMPRESS_GZIP);         /* OWS around ";" */
    CHECK_EQ_INT(nego("br;q=1.0, gzip"), COMPRESS_BR);
    CHECK_EQ_INT(nego("br;q=1.000"), COMPRESS_BR);
}

UNIT_TEST(negotiate_exclusions_and_star)
{
    CHECK_EQ_INT(nego("br;q=0, gzip;q=0, zstd;q=0"), -1);
    CHECK_EQ_INT(nego("br;q=0.000"), -1);
    CHECK_EQ_INT(nego("br;q=0, *"), COMPRESS_ZSTD);                 /* "*" = every coding not named */
    CHECK_EQ_INT(nego("*"), COMPRESS_BR);
    CHECK_EQ_INT(nego("*;q=0"), -1);
    CHECK_EQ_INT(nego("*;q=0, gzip"), COMPRESS_GZIP);
    enum compress_algo gb[] = { COMPRESS_GZIP, COMPRESS_BR };
    struct str a = STR_LIT("*;q=0.3, gzip;q=0.2");
    CHECK_EQ_INT(compress_negotiate(a, gb, 2), COMPRESS_BR);
    CHECK_EQ_INT(nego("identity;q=0"), -1);                         /* nothing else acceptable */
    CHECK_EQ_INT(nego("identity;q=0, gzip;q=0.1"), COMPRESS_GZIP);
    CHECK_EQ_INT(nego("gzip;q=0.5, identity"), -1);                 /* the client prefers identity */
    CHECK_EQ_INT(nego("gzip, identity;q=0.5"), COMPRESS_GZIP);
    CHECK_EQ_INT(nego("gzip;q=0.5, identity;q=0.5"), COMPRESS_GZIP); /* a tie goes to the coding */
    CHECK_EQ_INT(nego("gzip;q=0, x-gzip"), -1);                     /* first mention counts */
}

UNIT_TEST(negotiate_case_and_aliases)
{
    CHECK_EQ_INT(nego("GZIP"), COMPRESS_GZIP);
    CHECK_EQ_INT(nego("Br;Q=1"), COMPRESS_BR);
    CHECK_EQ_INT(nego("ZsTd"), COMPRESS_ZSTD);
    CHECK_EQ_INT(nego("x-gzip"), COMPRESS_GZIP);
    CHECK_EQ_INT(nego("X-GZIP;q=0.8, zstd;q=0.7"), COMPRESS_GZIP);
    CHECK_EQ_INT(nego("IDENTITY;Q=0, *"), COMPRESS_BR);
}

UNIT_TEST(negotiate_junk_skipped)
{
    CHECK_EQ_INT(nego("gzip;q=2"), -1);
    CHECK_EQ_INT(nego("gzip;q=1.5"), -1);
    CHECK_EQ_INT(nego("gzip;q=1.001"), -1);
    CHECK_EQ_INT(nego("gzip;q=0.5000"), -1);
    CHECK_EQ_INT(nego("gzip;q="), -1);
    CHECK_EQ_INT(nego("gzip;q=.5"), -1);
    CHECK_EQ_INT(nego("gzip;q=0.a"), -1);
    CHECK_EQ_INT(nego("gzip;q = 0.5"), -1);
    CHECK_EQ_INT(nego("g zip"), -1);
    CHECK_EQ_INT(nego("\"gzip\""), -1);
    CHECK_EQ_INT(nego(";q=1"), -1);
    CHECK_EQ_INT(nego(",,, ;q=1, br"), COMPRESS_BR);
    CHECK_EQ_INT(nego("gzip;q=2, br"), COMPRESS_BR);                 /* one bad element, the rest stand */
    CHECK_EQ_INT(nego("gzip;level=9"), COMPRESS_GZIP);             /* unknown parameters ignored */
    CHECK_EQ_INT(nego("gzip;;q=0.5, br;q=0.4"), COMPRESS_GZIP);
    CHECK_EQ_INT(nego("gzipp, brr, zstd2"), -1);
    CHECK_EQ_INT(nego("\t gzip \t"), COMPRESS_GZIP);
}

UNIT_TEST(negotiate_enabled_subset)
{
    enum compress_algo g[] = { COMPRESS_GZIP };
    CHECK_EQ_INT(compress_negotiate(STR_LIT("br"), g, 1), -1);
    CHECK_EQ_INT(compress_negotiate(STR_LIT("br, gzip"), g, 1), COMPRESS_GZIP);
    enum compress_algo gb[] = { COMPRESS_GZIP, COMPRESS_BR };
    CHECK_EQ_INT(compress_negotiate(STR_LIT("br, gzip"), gb, 2), COMPRESS_GZIP); /* server order */
    CHECK_EQ_INT(compress_negotiate(STR_LIT("br, gzip"), gb, 0), -1);
}

UNIT_TEST(type_matching)
{
    char *types[] = { "text/html", "application/json", "image/svg+xml" };
    CHECK(compress_type_matches(STR_LIT("text/html"), types, 3));
    CHECK(compress_type_matches(STR_LIT("text/html; charset=utf-8"), types, 3));
    CHECK(compress_type_matches(STR_LIT("TEXT/HTML;charset=UTF-8"), types, 3));
    CHECK(compress_type_matches(STR_LIT(" application/json ; x=y"), types, 3));
    CHECK(compress_type_matches(STR_LIT("image/SVG+xml"), types, 3));
    CHECK(!compress_type_matches(STR_LIT("text/htmlx"), types, 3));
    CHECK(!compress_type_matches(STR_LIT("text/htm"), types, 3));
    CHECK(!compress_type_matches(STR_LIT("image/png"), types, 3));
    CHECK(!compress_type_matches(STR_LIT(""), types, 3));
    CHECK(!compress_type_matches(str_make(NULL, 0), types, 3));
    CHECK(!compress_type_matches(STR_LIT("text/html"), types, 0));
    char *wild[] = { "text/*" };
    CHECK(compress_type_matches(STR_LIT("text/csv"), wild, 1));
    CHECK(compress_type_matches(STR_LIT("Text/Plain; charset=x"), wild, 1));
    CHECK(!compress_type_matches(STR_LIT("textx/csv"), wild, 1));
    CHECK(!compress_type_matches(STR_LIT("tex/csv"), wild, 1));
    CHECK(!compress_type_matches(STR_LIT("text/"), wild, 1));
    CHECK(!compress_type_matches(STR_LIT("text"), wild, 1));
    char *any[] = { "*/*" };
    CHECK(compress_type_matches(STR_LIT("video/mp4"), any, 1));
    CHECK(!compress_type_matches(STR_LIT("/html"), any, 1));
}

UNIT_TEST(etag_weakening)
{
    char out[64];
    size_t n = compress_weak_etag(STR_LIT("\"abc\""), out, sizeof out);
    CHECK(n == 7 && memcmp(out, "W/\"abc\"", 7) == 0);
    n = compress_weak_etag(STR_LIT("W/\"abc\""), out, sizeof out);
    CHECK(n == 7 && memcmp(out, "W/\"abc\"", 7) == 0);
    n = compress_weak_etag(STR_LIT(" \"x\" "), out, sizeof out);
    CHECK(n == 5 && memcmp(out, "W/\"x\"", 5) == 0);
    n = compress_weak_etag(STR_LIT("\"\""), out, sizeof out);
    CHECK(n == 4 && memcmp(out, "W/\"\"", 4) == 0);
    CHECK_EQ_INT(compress_weak_etag(STR_LIT("w/\"abc\""), out, sizeof out), 0); /* "W/" is case-sensitive */
    CHECK_EQ_INT(compress_weak_etag(STR_LIT("abc"), out, sizeof out), 0);
    CHECK_EQ_INT(compress_weak_etag(STR_LIT("\"a\"b\""), out, sizeof out), 0);
    CHECK_EQ_INT(compress_weak_etag(STR_LIT("\"a b\""), out, sizeof out), 0);
    CHECK_EQ_INT(compress_weak_etag(STR_LIT("\""), out, sizeof out), 0);
    CHECK_EQ_INT(compress_weak_etag(STR_LIT("\"abc\""), out, 6), 0);
    CHECK_EQ_INT(compress_weak_etag(STR_LIT("\"abc\""), out, 7), 7);
    CHECK_EQ_INT(compress_weak_etag(STR_LIT("W/\"abc\""), out, 6), 0);
}

UNIT_TEST(tokens)
{
    CHECK(strcmp(compress_token(COMPRESS_BR), "br") == 0);
    CHECK(strcmp(compress_token(COMPRESS_ZSTD), "zstd") == 0);
    CHECK(strcmp(compress_token(COMPRESS_GZIP), "gzip") == 0);
}

/* ---- round trips ---- */

/* Decodes C[0..cn) (a whole stream or a flushed prefix) into OUT[0..cap). Returns the decoded length, or -1 on
 * a decoding error or overflow; *ENDED tells whether the stream was complete. */
static long decode_gzip(const uint8_t *c, size_t cn, uint8_t *out, size_t cap, int *ended)
{
    z_stream z = { 0 };
    if (inflateInit2(&z, 15 + 16) != Z_OK)
        return -1;
    z.next_in = (Bytef *)c;
    z.avail_in = (uInt)cn;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    int rc = inflate(&z, Z_SYNC_FLUSH);
    long n = (long)(cap - z.avail_out);
    *ended = rc == Z_STREAM_END && z.avail_in == 0;
    if (rc != Z_STREAM_END && rc != Z_OK && !(rc == Z_BUF_ERROR && cn == 0))
        n = -1;
    if (z.avail_out == 0 && rc != Z_STREAM_END)
        n = -1; /* more output than expected */
    inflateEnd(&z);
    return n;
}

static long decode_br(const uint8_t *c, size_t cn, uint8_t *out, size_t cap, int *ended)
{
    BrotliDecoderState *d = BrotliDecoderCreateInstance(NULL, NULL, NULL);
    size_t ain = cn, aout = cap;
    const uint8_t *nin = c;
    uint8_t *nout = out;
    BrotliDecoderResult r = BrotliDecoderDecompressStream(d, &ain, &nin, &aout, &nout, NULL);
    BrotliDecoderDestroyInstance(d);
    *ended = r == BROTLI_DECODER_RESULT_SUCCESS && ain == 0;
    if (r != BROTLI_DECODER_RESULT_SUCCESS && r != BROTLI_DECODER_RESULT_NEEDS_MORE_INPUT)
        return -1;
    return (long)(cap - aout);
}

static long decode_zstd(const uint8_t *c, size_t cn, uint8_t *out, size_t cap, int *ended)
{
    ZSTD_DCtx *d = ZSTD_createDCtx();
    ZSTD_inBuffer ib = { c, cn, 0 };
    ZSTD_outBuffer ob = { out, cap, 0 };
    size_t rc = 1;
    while (ib.pos < ib.size) {
        size_t pos0 = ib.pos, out0 = ob.pos;
        rc = ZSTD_decompressStream(d, &ob, &ib);
        if (ZSTD_isError(rc) || ob.pos == ob.size || (ib.pos == pos0 && ob.pos == out0))
            break;
    }
    /* Drain what the decoder may still hold for a flushed prefix (0: the frame is complete, and another call
     * would start reading a new one). */
    if (!ZSTD_isError(rc) && rc != 0 && ob.pos < ob.size)
        rc = ZSTD_decompressStream(d, &ob, &ib);
    ZSTD_freeDCtx(d);
    *ended = !ZSTD_isError(rc) && rc == 0 && ib.pos == ib.size;
    if (ZSTD_isError(rc) || ib.pos != ib.size || ob.pos == ob.size)
        return -1;
    return (long)ob.pos;
}

static long decode(enum compress_algo a, const uint8_t *c, size_t cn, uint8_t *out, size_t cap, int *ended)
{
    switch (a) {
    case COMPRESS_GZIP:
        return decode_gzip(c, cn, out, cap, ended);
    case COMPRESS_BR:
        return decode_br(c, cn, out, cap, ended);
    default:
        return decode_zstd(c, cn, out, cap, ended);
    }
}

static uint64_t rng_state = 88172645463325252ull;

static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static uint8_t *make_data(size_t n, int text)
{
    static const char *words[] = { "the ", "proxy ", "cache ", "<div class=\"x\">", "compress ", "\n",
                                   "{\"key\": ", "42, ", "stream ", "zebra " };
    uint8_t *p = malloc(n + 1);
    for (size_t i = 0; i < n;) {
        if (!text) {
            p[i++] = (uint8_t)rng();
            continue;
        }
        const char *w = words[rng() % 10];
        for (; *w && i < n; w++)
            p[i++] = (uint8_t)*w;
    }
    return p;
}

struct rt {
    enum compress_algo algo;
    size_t slice; /* input fed in slices of this size */
    size_t cap;   /* output room offered per call */
    enum compress_flush between; /* flush after each slice */
    int check_prefix;            /* decode the output after each SYNC and compare */
    int zeros;                   /* calls that asked for more room */
    int sized;                   /* the stream is told the body's size */
};

/* Feeds IN[0..n) per R, then FINISH; checks each SYNC prefix and the whole stream. Returns 1 when all held. */
static int round_trip(struct rt *r, const uint8_t *in, size_t n)
{
    size_t ccap = n + n / 2 + 65536, total = 0, fed = 0;
    uint8_t *c = malloc(ccap), *d = malloc(n + 64);
    int level = r->algo == COMPRESS_BR ? 4 : r->algo == COMPRESS_ZSTD ? 3 : 6;
    struct compress_stream *s = compress_new_sized(r->algo, level, r->sized ? (int64_t)n : -1);
    int ok = s != NULL;
    for (int last = 0; ok && !last;) {
        size_t take = n - fed < r->slice ? n - fed : r->slice;
        last = fed + take == n;
        enum compress_flush f = last ? COMPRESS_FINISH : r->between;
        size_t pos = 0;
        for (long iter = 0;; iter++) {
            size_t used, made, room = ccap - total < r->cap ? ccap - total : r->cap;
            int rc = compress_run(s, in + fed + pos, take - pos, &used, c + total, room, &made, f);
            pos += used;
            total += made;
            if (rc == 1 && pos == take)
                break;
            if (rc != 0 || iter > 50000000 || room == 0) {
                fprintf(stderr, "  algo %d: rc %d at %zu/%zu\n", r->algo, rc, fed + pos, n);
                ok = 0;
                break;
            }
            r->zeros++;
        }
        fed += take;
        if (ok && f == COMPRESS_SYNC && r->check_prefix) {
            int ended;
            long m = decode(r->algo, c, total, d, n + 64, &ended);
            if (m != (long)fed || memcmp(d, in, fed) != 0 || ended) {
                fprintf(stderr, "  algo %d: prefix at %zu decodes to %ld\n", r->algo, fed, m);
                ok = 0;
            }
        }
    }
    if (ok) {
        int ended;
        long m = decode(r->algo, c, total, d, n + 64, &ended);
        if (m != (long)n || (n && memcmp(d, in, n) != 0) || !ended) {
            fprintf(stderr, "  algo %d: %zu bytes decode to %ld (ended %d)\n", r->algo, n, m, ended);
            ok = 0;
        }
    }
    compress_free(s);
    free(c);
    free(d);
    return ok;
}

UNIT_TEST(round_trip_sizes)
{
    static const size_t sizes[] = { 0, 1, 65536, 1048576 };
    for (int text = 0; text < 2; text++)
        for (size_t i = 0; i < 4; i++) {
            uint8_t *in = make_data(sizes[i], text);
            for (int a = 0; a < COMPRESS_N; a++) {
                /* one bulk pass, then odd slices with a decodable SYNC point after each */
                struct rt bulk = { (enum compress_algo)a, sizes[i] + 1, 16384, COMPRESS_NONE, 0, 0, 0 };
                struct rt sized = { (enum compress_algo)a, 65521, 16384, COMPRESS_NONE, 0, 0, 1 };
                size_t slice = sizes[i] > 65536 ? 131071 : 4099;
                struct rt sync = { (enum compress_algo)a, slice, 16384, COMPRESS_SYNC, 1, 0, 0 };
                if (!round_trip(&bulk, in, sizes[i]) || !round_trip(&sync, in, sizes[i]) ||
                    !round_trip(&sized, in, sizes[i])) {
                    fprintf(stderr, "  size %zu text %d algo %s\n", sizes[i], text, compress_token(a));
                    *unit_failed = 1;
                }
            }
            free(in);
        }
}

UNIT_TEST(round_trip_tiny_output)
{
    uint8_t *in = make_data(12000, 1);
    uint8_t *noise = make_data(3000, 0); /* some incompressible bytes in the middle */
    memcpy(in + 6000, noise, 3000);
    free(noise);
    for (int a = 0; a < COMPRESS_N; a++)
        for (size_t cap = 1; cap <= 7; cap++) {
            struct rt r = { (enum compress_algo)a, 997, cap, COMPRESS_SYNC, 1, 0, (int)(cap & 1) };
            if (!round_trip(&r, in, 12000)) {
                fprintf(stderr, "  cap %zu algo %s\n", cap, compress_token(a));
                *unit_failed = 1;
            }
            CHECK(r.zeros > 0); /* the "call again" path ran */
        }
    free(in);
}

UNIT_TEST(round_trip_random_slices)
{
    uint8_t *in = make_data(200000, 1);
    for (int a = 0; a < COMPRESS_N; a++)
        for (int k = 0; k < 4; k++) {
            struct rt r = { (enum compress_algo)a, 1 + rng() % 30000, 1 + rng() % 9000,
                            (rng() & 1) ? COMPRESS_SYNC : COMPRESS_NONE, 1, 0, k & 1 };
            if (!round_trip(&r, in, 200000)) {
                fprintf(stderr, "  slice %zu cap %zu algo %s\n", r.slice, r.cap, compress_token(a));
                *unit_failed = 1;
            }
        }
    free(in);
}

/* Past brotli's meta-block bound (an internal flush every 128 KiB) with a tiny buffer and no flush asked. */
UNIT_TEST(round_trip_long_tiny_output)
{
    uint8_t *in = make_data(300000, 1);
    for (int a = 0; a < COMPRESS_N; a++) {
        struct rt r = { (enum compress_algo)a, 65536, 5, COMPRESS_NONE, 0, 0, 0 };
        if (!round_trip(&r, in, 300000)) {
            fprintf(stderr, "  algo %s\n", compress_token(a));
            *unit_failed = 1;
        }
    }
    free(in);
}

/* A SYNC that ran out of room, continued by a call with NONE and new input: nothing is lost. */
UNIT_TEST(flush_changed_midway)
{
    uint8_t *in = make_data(30000, 1);
    for (int a = 0; a < COMPRESS_N; a++) {
        struct compress_stream *s = compress_new((enum compress_algo)a, 5);
        uint8_t c[65536], d[30064];
        size_t used, made, total = 0;
        int rc = compress_run(s, in, 20000, &used, c, 3, &made, COMPRESS_SYNC);
        total += made;
        CHECK_EQ_INT(rc, 0);
        size_t fed = used;
        rc = compress_run(s, in + fed, 30000 - fed, &used, c + total, sizeof c - total, &made, COMPRESS_NONE);
        CHECK_EQ_INT(rc, 1);
        fed += used;
        total += made;
        rc = compress_run(s, NULL, 0, &used, c + total, sizeof c - total, &made, COMPRESS_FINISH);
        CHECK_EQ_INT(rc, 1);
        total += made;
        int ended;
        long m = decode((enum compress_algo)a, c, total, d, sizeof d, &ended);
        CHECK(fed == 30000 && m == 30000 && ended && memcmp(d, in, 30000) == 0);
        /* after the end: more FINISH is a no-op, more input an error */
        CHECK_EQ_INT(compress_run(s, NULL, 0, &used, c, sizeof c, &made, COMPRESS_FINISH), 1);
        CHECK_EQ_INT(made, 0);
        CHECK_EQ_INT(compress_run(s, in, 1, &used, c, sizeof c, &made, COMPRESS_NONE), -1);
        compress_free(s);
    }
    free(in);
}

/* SYNC with nothing new emits nothing; a SYNC on an empty stream is already decodable. */
UNIT_TEST(sync_idempotent)
{
    for (int a = 0; a < COMPRESS_N; a++) {
        struct compress_stream *s = compress_new((enum compress_algo)a, 1);
        uint8_t c[4096];
        size_t used, made;
        CHECK_EQ_INT(compress_run(s, "hello", 5, &used, c, sizeof c, &made, COMPRESS_SYNC), 1);
        CHECK(made > 0);
        CHECK_EQ_INT(compress_run(s, NULL, 0, &used, c, sizeof c, &made, COMPRESS_SYNC), 1);
        CHECK_EQ_INT(made, 0);
        compress_free(s);
    }
}

UNIT_TEST(levels_clamped)
{
    int levels[] = { -100, 0, 1, 9, 11, 19, 22, 1000 };
    uint8_t *in = make_data(5000, 1);
    for (int a = 0; a < COMPRESS_N; a++)
        for (size_t i = 0; i < sizeof levels / sizeof levels[0]; i++) {
            struct compress_stream *s = compress_new((enum compress_algo)a, levels[i]);
            CHECK(s != NULL);
            uint8_t c[8192], d[5064];
            size_t used, made;
            CHECK_EQ_INT(compress_run(s, in, 5000, &used, c, sizeof c, &made, COMPRESS_FINISH), 1);
            int ended;
            CHECK_EQ_INT(decode((enum compress_algo)a, c, made, d, sizeof d, &ended), 5000);
            compress_free(s);
        }
    CHECK(compress_new((enum compress_algo)COMPRESS_N, 1) == NULL);
    free(in);
}

/* A sized stream holds its caller to the size. */
UNIT_TEST(sized_stream_enforced)
{
    uint8_t c[4096];
    size_t used, made;
    for (int a = 0; a < COMPRESS_N; a++) {
        struct compress_stream *s = compress_new_sized((enum compress_algo)a, 3, 10);
        CHECK_EQ_INT(compress_run(s, "0123456789x", 11, &used, c, sizeof c, &made, COMPRESS_NONE), -1);
        CHECK_EQ_INT(compress_run(s, "01234", 5, &used, c, sizeof c, &made, COMPRESS_SYNC), 1);
        CHECK_EQ_INT(compress_run(s, NULL, 0, &used, c, sizeof c, &made, COMPRESS_FINISH), -1); /* short */
        compress_free(s);
        s = compress_new_sized((enum compress_algo)a, 3, 0);
        CHECK_EQ_INT(compress_run(s, NULL, 0, &used, c, sizeof c, &made, COMPRESS_FINISH), 1);
        int ended;
        uint8_t d[16];
        CHECK_EQ_INT(decode((enum compress_algo)a, c, made, d, sizeof d, &ended), 0);
        CHECK(ended);
        compress_free(s);
    }
}

/* Memory a stream holds between calls at the default levels, the most seen while a body went through (the
 * engines allocate lazily): an unknown size with 1 MiB of text fed in 16 KiB slices, and known 20 KB and 4 KB
 * bodies. Buffers an engine takes and gives back within one call are not counted: a worker runs one call at a
 * time, so they cost per worker, not per stream. Printed for the record; bounded
 * so that a change of window shows up here. */
static size_t peak_mem(enum compress_algo a, int level, int64_t size, const uint8_t *in, size_t n, double *malloc_kib)
{
    static uint8_t c[32768];
    struct mallinfo2 m0 = mallinfo2();
    struct compress_stream *s = compress_new_sized(a, level, size);
    size_t peak = 0, used, made;
    for (size_t off = 0; off < n; off += 16384) {
        size_t take = n - off < 16384 ? n - off : 16384;
        int rc = compress_run(s, in + off, take, &used, c, sizeof c, &made, COMPRESS_NONE);
        if (rc != 1 || used != take)
            peak = SIZE_MAX;
        if (compress_mem(s) > peak)
            peak = compress_mem(s);
    }
    if (compress_run(s, NULL, 0, &used, c, sizeof c, &made, COMPRESS_FINISH) != 1)
        peak = SIZE_MAX;
    if (compress_mem(s) > peak)
        peak = compress_mem(s);
    *malloc_kib = ((double)mallinfo2().uordblks - (double)m0.uordblks) / 1024;
    compress_free(s);
    return peak;
}

UNIT_TEST(memory_per_stream)
{
    static const int deflt[COMPRESS_N] = { [COMPRESS_BR] = 4, [COMPRESS_ZSTD] = 3, [COMPRESS_GZIP] = 6 };
    static const size_t limit[COMPRESS_N] = { [COMPRESS_BR] = 2400, [COMPRESS_ZSTD] = 2100, [COMPRESS_GZIP] = 270 };
    uint8_t *in = make_data(1 << 20, 1);
    for (int a = 0; a < COMPRESS_N; a++) {
        double m1, m2, m3;
        size_t unknown = peak_mem((enum compress_algo)a, deflt[a], -1, in, 1 << 20, &m1);
        size_t page = peak_mem((enum compress_algo)a, deflt[a], 20000, in, 20000, &m2);
        size_t small = peak_mem((enum compress_algo)a, deflt[a], 4000, in, 4000, &m3);
        fprintf(stderr, "  %-4s level %d: unknown size %zu KiB (malloc %.0f), 20 KB body %zu KiB (%.0f), "
                "4 KB body %zu KiB (%.0f)\n", compress_token(a), deflt[a], unknown / 1024, m1, page / 1024, m2,
                small / 1024, m3);
        CHECK(unknown < limit[a] * 1024);
        CHECK(page <= unknown && small < page);
    }
    free(in);
}

UNIT_MAIN();
