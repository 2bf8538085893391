#include "core/siphash.h"

#include <endian.h>
#include <string.h>

#define SIPHASH_ROTL(x, b) (((x) << (b)) | ((x) >> (64 - (b))))

static void siphash_round(struct siphash *s)
{
    s->v0 += s->v1;
    s->v1 = SIPHASH_ROTL(s->v1, 13) ^ s->v0;
    s->v0 = SIPHASH_ROTL(s->v0, 32);
    s->v2 += s->v3;
    s->v3 = SIPHASH_ROTL(s->v3, 16) ^ s->v2;
    s->v0 += s->v3;
    s->v3 = SIPHASH_ROTL(s->v3, 21) ^ s->v0;
    s->v2 += s->v1;
    s->v1 = SIPHASH_ROTL(s->v1, 17) ^ s->v2;
    s->v2 = SIPHASH_ROTL(s->v2, 32);
}

static void siphash_word(struct siphash *s, uint64_t m)
{
    s->v3 ^= m;
    siphash_round(s); /* 2 compression rounds */
    siphash_round(s);
    s->v0 ^= m;
}

void siphash_init(struct siphash *s, uint64_t k0, uint64_t k1)
{
    s->v0 = k0 ^ 0x736f6d6570736575ull;
    s->v1 = k1 ^ 0x646f72616e646f6dull;
    s->v2 = k0 ^ 0x6c7967656e657261ull;
    s->v3 = k1 ^ 0x7465646279746573ull;
    s->tail = 0;
    s->len = 0;
}

void siphash_update(struct siphash *s, const void *data, size_t n)
{
    const uint8_t *p = data;
    size_t i = 0;
    for (; i < n && (s->len & 7); i++, s->len++) {
        s->tail |= (uint64_t)p[i] << (8 * (s->len & 7));
        if ((s->len & 7) == 7) {
            siphash_word(s, s->tail);
            s->tail = 0;
        }
    }
    for (; n - i >= 8; i += 8, s->len += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        siphash_word(s, le64toh(w));
    }
    for (; i < n; i++, s->len++)
        s->tail |= (uint64_t)p[i] << (8 * (s->len & 7));
}

uint64_t siphash_final(struct siphash *s)
{
    siphash_word(s, ((uint64_t)s->len << 56) | s->tail);
    s->v2 ^= 0xff;
    for (int i = 0; i < 4; i++) /* 4 finalization rounds */
        siphash_round(s);
    return s->v0 ^ s->v1 ^ s->v2 ^ s->v3;
}
