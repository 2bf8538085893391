#include "core/sbuf.h"

#include <stdlib.h>
#include <string.h>

static bool sbuf_reserve(struct sbuf *b, size_t extra)
{
    if (b->failed)
        return false;
    if (b->len + extra <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + extra)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->failed = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

void sbuf_append(struct sbuf *b, const void *data, size_t n)
{
    if (!n || !sbuf_reserve(b, n))
        return;
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

void sbuf_append_cstr(struct sbuf *b, const char *s) { sbuf_append(b, s, strlen(s)); }

void sbuf_append_u64(struct sbuf *b, uint64_t v)
{
    char tmp[24];
    size_t i = sizeof tmp;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    sbuf_append(b, tmp + i, sizeof tmp - i);
}

void sbuf_append_header(struct sbuf *b, struct str name, struct str value)
{
    if (!sbuf_reserve(b, name.n + value.n + 4))
        return;
    char *p = b->p + b->len;
    memcpy(p, name.p, name.n);
    p += name.n;
    *p++ = ':';
    *p++ = ' ';
    if (value.n)
        memcpy(p, value.p, value.n);
    p += value.n;
    *p++ = '\r';
    *p++ = '\n';
    b->len = (size_t)(p - b->p);
}

void sbuf_reset(struct sbuf *b)
{
    b->len = 0;
    b->failed = false;
}

void sbuf_free(struct sbuf *b)
{
    free(b->p);
    *b = (struct sbuf){ 0 };
}
