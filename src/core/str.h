/* str: borrowed byte slices and small pure helpers on them. */
#ifndef PORTERO_CORE_STR_H
#define PORTERO_CORE_STR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A slice into memory owned by someone else; never NUL-terminated by contract. */
struct str {
    const char *p;
    size_t n;
};

#define STR_LIT(s) ((struct str){ (s), sizeof(s) - 1 })

static inline struct str str_make(const char *p, size_t n) { return (struct str){ p, n }; }
bool str_eq(struct str a, struct str b);
/* ASCII case-insensitive equality (header names, tokens). */
bool str_ieq(struct str a, struct str b);
bool str_ieq_cstr(struct str a, const char *b);
bool str_has_prefix(struct str s, struct str prefix);
/* Trims optional whitespace (SP / HTAB) on both ends, RFC 9110 §5.6.3. */
struct str str_trim_ows(struct str s);
/* Splits a comma-separated list: returns the next element (OWS trimmed) and advances *rest;
 * returns false when *rest holds no more elements. Empty elements are skipped (RFC 9110 §5.6.1). */
bool str_next_list_item(struct str *rest, struct str *item);
/* 64-bit FNV-1a; stable across runs, used for consistent hashing. */
uint64_t str_hash64(const void *p, size_t n);

#endif
