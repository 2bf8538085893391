/* admin_json: the admin API's JSON — a small streaming writer for answers, and a reader of flat
 * request bodies ({"key": "string" | integer | true | false, ...}) built on libyaml's event API
 * (JSON is YAML). Private to src/admin/. */
#ifndef PORTERO_ADMIN_ADMIN_JSON_H
#define PORTERO_ADMIN_ADMIN_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/sbuf.h"

/* Appends S[0..N) as a quoted JSON string: '"', '\\' and control characters escaped (\n, \t,
 * ... or \u00XX); valid UTF-8 is kept, each byte of an invalid sequence becomes \ufffd, so the
 * output is always valid JSON whatever the input. */
void admin_json_escape(struct sbuf *out, const char *s, size_t n);

/* A writer that places commas itself. Containers nest at most 63 deep. KEY is NULL inside
 * arrays (and for the top-level value). */
struct admin_json {
    struct sbuf *out;
    unsigned depth;
    uint64_t items; /* bit D: the container at depth D already holds an item */
};

void admin_json_begin(struct admin_json *j, const char *key, char open); /* '{' or '[' */
void admin_json_end(struct admin_json *j, char close);                   /* '}' or ']' */
void admin_json_str(struct admin_json *j, const char *key, const char *v); /* NULL -> null */
void admin_json_u64(struct admin_json *j, const char *key, uint64_t v);
void admin_json_bool(struct admin_json *j, const char *key, bool v);
/* A number with two decimals (non-finite values are written as 0). */
void admin_json_num(struct admin_json *j, const char *key, double v);
/* Already-serialised JSON (RAW[0..N)) as a value. */
void admin_json_raw(struct admin_json *j, const char *key, const char *raw, size_t n);

/* A flat request body. */
enum admin_value_type { ADMIN_VALUE_STRING, ADMIN_VALUE_INT, ADMIN_VALUE_BOOL };

struct admin_field {
    char *key;                 /* owned */
    enum admin_value_type type;
    char *str;                 /* STRING: owned, NUL-terminated (no NUL inside) */
    int64_t num;               /* INT */
    bool flag;                 /* BOOL */
};

#define ADMIN_BODY_MAX_FIELDS 16
struct admin_body {
    struct admin_field fields[ADMIN_BODY_MAX_FIELDS];
    size_t n;
};

/* Parses DATA[0..LEN) as one flat JSON object; an empty (or all-blank) body is an empty object.
 * Returns 0, or -1 with a message in ERR (CAP bytes) for anything else: syntax errors, nested
 * values, null, floats, duplicate keys, more than ADMIN_BODY_MAX_FIELDS keys. On -1 nothing is
 * left to free; on 0 the caller frees with admin_body_free. */
int admin_body_parse(const char *data, size_t len, struct admin_body *out, char *err, size_t cap);
void admin_body_free(struct admin_body *b);
/* The field named KEY, or NULL. */
const struct admin_field *admin_body_get(const struct admin_body *b, const char *key);

#endif
