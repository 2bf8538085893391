/* sbuf: a growable byte string for composing message heads. The owner frees it with sbuf_free. */
#ifndef PORTERO_CORE_SBUF_H
#define PORTERO_CORE_SBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/str.h"

struct sbuf {
    char *p;
    size_t len;
    size_t cap;
    bool failed; /* an allocation failed: contents are incomplete */
};

void sbuf_append(struct sbuf *b, const void *data, size_t n);
static inline void sbuf_append_str(struct sbuf *b, struct str s) { sbuf_append(b, s.p, s.n); }
void sbuf_append_cstr(struct sbuf *b, const char *s);
void sbuf_append_u64(struct sbuf *b, uint64_t v);
/* Appends "NAME: VALUE\r\n". */
void sbuf_append_header(struct sbuf *b, struct str name, struct str value);
void sbuf_reset(struct sbuf *b);
void sbuf_free(struct sbuf *b);

#endif
