#include "policy/base64.h"

#include <stdbool.h>

/* The 6-bit value of C in the chosen alphabet (RFC 4648 Table 1 or Table 2), or -1. */
static int base64_value(unsigned char c, bool url)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == (url ? '-' : '+'))
        return 62;
    if (c == (url ? '_' : '/'))
        return 63;
    return -1;
}

/* Decodes N characters without padding. A trailing group of 2 or 3 characters carries 1 or 2
 * bytes; its unused low bits must be zero (RFC 4648 §3.5) so no two inputs decode alike. */
static ssize_t base64_decode_bare(const char *in, size_t n, unsigned char *out, bool url)
{
    if (n % 4 == 1)
        return -1;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        size_t k = n - i < 4 ? n - i : 4;
        unsigned long acc = 0;
        for (size_t j = 0; j < 4; j++) {
            int v = j < k ? base64_value((unsigned char)in[i + j], url) : 0;
            if (v < 0)
                return -1;
            acc = acc << 6 | (unsigned long)v;
        }
        if ((k == 2 && (acc & 0xFFFF)) || (k == 3 && (acc & 0xFF)))
            return -1;
        out[o++] = (unsigned char)(acc >> 16);
        if (k > 2)
            out[o++] = (unsigned char)(acc >> 8);
        if (k > 3)
            out[o++] = (unsigned char)acc;
    }
    return (ssize_t)o;
}

/* RFC 4648 §4: the length is a multiple of 4, with one or two '=' closing a short group. */
ssize_t base64_decode(const char *in, size_t n, unsigned char *out)
{
    if (n % 4 != 0)
        return -1;
    size_t pad = 0;
    while (pad < 2 && pad < n && in[n - 1 - pad] == '=')
        pad++;
    return base64_decode_bare(in, n - pad, out, false);
}

/* RFC 7515 §2: base64url with all trailing '=' omitted. */
ssize_t base64url_decode(const char *in, size_t n, unsigned char *out)
{
    return base64_decode_bare(in, n, out, true);
}
