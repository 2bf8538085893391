/* base64: strict decoders for the two alphabets of RFC 4648 — the standard one with padding
 * (§4), which HTTP Basic credentials use (RFC 7617 §2), and the URL-safe one without padding
 * (§5), which JWS uses (RFC 7515 §2). Strict means each byte string has exactly one accepted
 * encoding: no whitespace, no stray or missing padding, no non-zero unused bits. */
#ifndef PORTERO_POLICY_BASE64_H
#define PORTERO_POLICY_BASE64_H

#include <stddef.h>
#include <sys/types.h>

/* Bytes OUT must hold to decode N characters. */
#define BASE64_DECODED_MAX(n) ((n) / 4 * 3 + 3)

/* Decode IN[0..N) into OUT (BASE64_DECODED_MAX(N) bytes). Return the decoded length, or -1
 * when IN is not a strict encoding in that alphabet. */
ssize_t base64_decode(const char *in, size_t n, unsigned char *out);
ssize_t base64url_decode(const char *in, size_t n, unsigned char *out);

#endif
