/* libFuzzer target: src/http/compress*.c. For any bytes:
 * - compress_negotiate() on them as an Accept-Encoding value returns -1 or one of the enabled algorithms, and
 *   never one the value gives q=0 by its exact lower-case name;
 * - compress_type_matches() on them as a Content-Type agrees with a plain reading of the media type;
 * - compress_weak_etag() yields W/"..." or nothing;
 * - the bytes survive a round trip through each encoder and the library's own decoder, with flush points and
 *   output room chosen from the input, and every SYNC point decodes to exactly the bytes fed so far. */
#include <brotli/decode.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#include "http/compress.h"

static void fuzz_negotiate(const uint8_t *data, size_t size)
{
    static const enum compress_algo orders[][3] = {
        { COMPRESS_BR, COMPRESS_ZSTD, COMPRESS_GZIP },
        { COMPRESS_GZIP, COMPRESS_BR, COMPRESS_ZSTD },
        { COMPRESS_ZSTD, COMPRESS_GZIP, COMPRESS_BR },
    };
    struct str v = str_make((const char *)data, size);
    for (size_t o = 0; o < 3; o++)
        for (size_t n = 0; n <= 3; n++) {
            int r = compress_negotiate(v, orders[o], n);
            int found = r == -1;
            for (size_t i = 0; i < n; i++)
                found |= r == (int)orders[o][i];
            if (!found)
                abort();
        }
    /* A value that is exactly "<token>;q=0" must never pick that coding. */
    static const char *zero[] = { "br;q=0", "zstd;q=0", "gzip;q=0" };
    for (int a = 0; a < COMPRESS_N; a++) {
        if (size == strlen(zero[a]) && memcmp(data, zero[a], size) == 0 &&
            compress_negotiate(v, orders[0], 3) == a)
            abort();
    }
}

static void fuzz_types(const uint8_t *data, size_t size)
{
    char *types[] = { "text/html", "text/*", "application/json" };
    struct str v = str_make((const char *)data, size);
    bool m = compress_type_matches(v, types, 3);
    bool any = compress_type_matches(v, (char *[]){ "*/*" }, 1);
    if (m && !any)
        abort(); /* whatever matches a list matches the any-type entry */
    char out[300];
    size_t n = compress_weak_etag(v, out, sizeof out);
    if (n != 0 && (n < 4 || out[0] != 'W' || out[1] != '/' || out[2] != '"' || out[n - 1] != '"'))
        abort();
}

static long fuzz_decode(enum compress_algo a, const uint8_t *c, size_t cn, uint8_t *out, size_t cap)
{
    if (a == COMPRESS_GZIP) {
        z_stream z = { 0 };
        if (inflateInit2(&z, 31) != Z_OK)
            abort();
        z.next_in = (Bytef *)c;
        z.avail_in = (uInt)cn;
        z.next_out = out;
        z.avail_out = (uInt)cap;
        int rc = inflate(&z, Z_SYNC_FLUSH);
        inflateEnd(&z);
        return rc == Z_OK || rc == Z_STREAM_END || rc == Z_BUF_ERROR ? (long)(cap - z.avail_out) : -1;
    }
    if (a == COMPRESS_BR) {
        BrotliDecoderState *d = BrotliDecoderCreateInstance(NULL, NULL, NULL);
        size_t ain = cn, aout = cap;
        const uint8_t *nin = c;
        uint8_t *nout = out;
        BrotliDecoderResult r = BrotliDecoderDecompressStream(d, &ain, &nin, &aout, &nout, NULL);
        BrotliDecoderDestroyInstance(d);
        return r == BROTLI_DECODER_RESULT_ERROR ? -1 : (long)(cap - aout);
    }
    ZSTD_DCtx *d = ZSTD_createDCtx();
    ZSTD_inBuffer ib = { c, cn, 0 };
    ZSTD_outBuffer ob = { out, cap, 0 };
    size_t rc = 0;
    while (ib.pos < ib.size) {
        size_t in0 = ib.pos, out0 = ob.pos;
        rc = ZSTD_decompressStream(d, &ob, &ib);
        if (ZSTD_isError(rc) || ob.pos == ob.size || (ib.pos == in0 && ob.pos == out0))
            break;
    }
    if (!ZSTD_isError(rc) && rc != 0 && ob.pos < ob.size)
        rc = ZSTD_decompressStream(d, &ob, &ib); /* what a flushed prefix left inside */
    ZSTD_freeDCtx(d);
    return ZSTD_isError(rc) || ib.pos != ib.size ? -1 : (long)ob.pos;
}

static uint64_t fuzz_next(uint64_t *st)
{
    *st ^= *st << 13;
    *st ^= *st >> 7;
    *st ^= *st << 17;
    return *st;
}

static void fuzz_round_trip(enum compress_algo a, const uint8_t *data, size_t size, uint64_t seed)
{
    static const int levels[COMPRESS_N] = { [COMPRESS_BR] = 4, [COMPRESS_ZSTD] = 3, [COMPRESS_GZIP] = 6 };
    size_t ccap = size * 2 + 4096, total = 0, fed = 0;
    uint8_t *c = malloc(ccap), *d = malloc(size + 16);
    struct compress_stream *s = compress_new(a, levels[a] + (int)(seed % 3) - 1);
    if (s == NULL)
        abort();
    for (int last = 0; !last;) {
        size_t take = 1 + fuzz_next(&seed) % 512;
        if (take > size - fed)
            take = size - fed;
        last = fed + take == size;
        uint64_t r = fuzz_next(&seed);
        enum compress_flush f = last ? COMPRESS_FINISH : (r & 3) == 0 ? COMPRESS_SYNC : COMPRESS_NONE;
        size_t room = (r >> 8) % 4 == 0 ? 1 + (r >> 16) % 7 : 1 + (r >> 16) % 4096;
        for (size_t pos = 0, iter = 0;; iter++) {
            size_t used, made, cap = ccap - total < room ? ccap - total : room;
            int rc = compress_run(s, data + fed + pos, take - pos, &used, c + total, cap, &made, f);
            pos += used;
            total += made;
            if (rc == 1 && pos == take)
                break;
            if (rc != 0 || cap == 0 || iter > 10000000)
                abort();
        }
        fed += take;
        if (f == COMPRESS_SYNC && (fuzz_decode(a, c, total, d, size + 16) != (long)fed || memcmp(d, data, fed)))
            abort();
    }
    if (fuzz_decode(a, c, total, d, size + 16) != (long)size || (size && memcmp(d, data, size)))
        abort();
    compress_free(s);
    free(c);
    free(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 65536)
        return 0;
    fuzz_negotiate(data, size);
    fuzz_types(data, size);
    uint64_t seed = str_hash64(data, size) | 1;
    for (int a = 0; a < COMPRESS_N; a++)
        fuzz_round_trip((enum compress_algo)a, data, size, seed + (uint64_t)a);
    return 0;
}
