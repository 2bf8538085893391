/* libFuzzer target: the chunked decoder and encoder.
 *  1. decodes the input whole, and again fed in pieces of input-derived sizes (and one byte at a
 *     time for short inputs): results, consumed counts and output must agree, and
 *     produced <= consumed <= length always;
 *  2. encodes the input with h1_chunk_header into a chunked body and decodes it back. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/h1.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(void) { abort(); }

struct result {
    int rc;
    size_t consumed, produced;
};

/* Feeds BUF[0..N) in pieces chosen by NEXT_PIECE; output gathers in OUT. */
static struct result feed(const uint8_t *src, size_t n, char *out, uint32_t seed, size_t fixed)
{
    struct h1_chunked st = { 0 };
    struct result r = { 0, 0, 0 };
    char *piece = malloc(n ? n : 1);
    size_t pos = 0;
    while (pos < n) {
        size_t k = fixed;
        if (!k) {
            seed = seed * 1103515245u + 12345u;
            k = 1 + (seed >> 16) % 97;
        }
        if (k > n - pos)
            k = n - pos;
        memcpy(piece, src + pos, k);
        size_t c, p;
        r.rc = h1_chunked_decode(&st, piece, k, &c, &p);
        if (c > k || p > c)
            fail();
        if (r.rc == 0 && c != k)
            fail();
        memcpy(out + r.produced, piece, p);
        r.produced += p;
        r.consumed += c;
        pos += c;
        if (r.rc != 0)
            break;
    }
    free(piece);
    return r;
}

static void compare(const struct result *a, const char *oa, const struct result *b, const char *ob)
{
    if (a->rc != b->rc)
        fail();
    if (a->rc >= 0 && (a->consumed != b->consumed || a->produced != b->produced ||
                       memcmp(oa, ob, a->produced) != 0))
        fail();
}

static void roundtrip(const uint8_t *data, size_t size)
{
    size_t cap = size + (size + 1) * 20 + 8;
    char *enc = malloc(cap), *dec = malloc(cap);
    size_t n = 0, pos = 0;
    uint32_t seed = (uint32_t)size;
    while (pos < size) {
        seed = seed * 1103515245u + 12345u;
        size_t k = 1 + (seed >> 16) % 300;
        if (k > size - pos)
            k = size - pos;
        n += h1_chunk_header(enc + n, k);
        memcpy(enc + n, data + pos, k);
        n += k;
        memcpy(enc + n, "\r\n", 2);
        n += 2;
        pos += k;
    }
    n += h1_chunk_header(enc + n, 0);
    memcpy(enc + n, "\r\n", 2);
    n += 2;
    struct result r = feed((const uint8_t *)enc, n, dec, seed, 0);
    if (r.rc != 1 || r.consumed != n || r.produced != size || memcmp(dec, data, size) != 0)
        fail();
    free(enc);
    free(dec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *whole = malloc(size + 1), *split = malloc(size + 1), *bytes = malloc(size + 1);
    struct result a = feed(data, size, whole, 0, size ? size : 1);
    uint32_t seed = size ? data[0] : 0;
    struct result b = feed(data, size, split, seed, 0);
    compare(&a, whole, &b, split);
    if (size <= 4096) {
        struct result c = feed(data, size, bytes, 0, 1);
        compare(&a, whole, &c, bytes);
    }
    free(whole);
    free(split);
    free(bytes);
    roundtrip(data, size);
    return 0;
}
