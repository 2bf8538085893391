/* siphash: SipHash-2-4 (Aumasson & Bernstein, "SipHash: a fast short-input PRF", 2012), streamed.
 * A keyed hash for tables whose keys an attacker picks (rate-limit buckets, cache keys): with a
 * secret key, collisions cannot be aimed at one shard or bucket. */
#ifndef PORTERO_CORE_SIPHASH_H
#define PORTERO_CORE_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

struct siphash {
    uint64_t v0, v1, v2, v3;  /* private */
    uint64_t tail;            /* private: bytes not yet making a whole word, little-endian */
    size_t len;               /* private: bytes seen */
};

void siphash_init(struct siphash *s, uint64_t k0, uint64_t k1);
void siphash_update(struct siphash *s, const void *data, size_t n);
uint64_t siphash_final(struct siphash *s);

#endif
