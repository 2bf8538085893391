#include "core/str.h"

#include <string.h>

static inline char str_lower(char c) { return (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c; }

bool str_eq(struct str a, struct str b)
{
    return a.n == b.n && (a.n == 0 || memcmp(a.p, b.p, a.n) == 0);
}

bool str_ieq(struct str a, struct str b)
{
    if (a.n != b.n)
        return false;
    for (size_t i = 0; i < a.n; i++)
        if (str_lower(a.p[i]) != str_lower(b.p[i]))
            return false;
    return true;
}

/* Walks B once and stops at the first difference: header names mostly differ in their first
 * byte, so this costs a compare or two where strlen(B) first cost a pass over B (it ran about 165
 * times per proxied request with browser-like headers). */
bool str_ieq_cstr(struct str a, const char *b)
{
    size_t i = 0;
    for (; i < a.n; i++)
        if (!b[i] || str_lower(a.p[i]) != str_lower(b[i]))
            return false;
    return b[i] == '\0';
}

bool str_has_prefix(struct str s, struct str prefix)
{
    return s.n >= prefix.n && memcmp(s.p, prefix.p, prefix.n) == 0;
}

struct str str_trim_ows(struct str s)
{
    while (s.n && (s.p[0] == ' ' || s.p[0] == '\t')) {
        s.p++;
        s.n--;
    }
    while (s.n && (s.p[s.n - 1] == ' ' || s.p[s.n - 1] == '\t'))
        s.n--;
    return s;
}

bool str_next_list_item(struct str *rest, struct str *item)
{
    while (rest->n) {
        const char *comma = memchr(rest->p, ',', rest->n);
        size_t len = comma ? (size_t)(comma - rest->p) : rest->n;
        *item = str_trim_ows(str_make(rest->p, len));
        rest->p += comma ? len + 1 : len;
        rest->n -= comma ? len + 1 : len;
        if (item->n)
            return true;
    }
    return false;
}

uint64_t str_hash64(const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 1099511628211ULL;
    }
    /* FNV's low bits mix poorly; finish with a murmur-style avalanche. */
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return h;
}
