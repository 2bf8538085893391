#include "admin/admin_json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

/* --- writing ------------------------------------------------------------------------------------ */

/* Length of the valid UTF-8 sequence at S (N bytes available), or 0 if it is not one
 * (RFC 3629: no overlongs, no surrogates, nothing above U+10FFFF). */
static size_t admin_utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xBF;
    size_t len;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        lo = c == 0xE0 ? 0xA0 : 0x80;
        hi = c == 0xED ? 0x9F : 0xBF;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        lo = c == 0xF0 ? 0x90 : 0x80;
        hi = c == 0xF4 ? 0x8F : 0xBF;
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    return len;
}

/* The escape for byte C (< 0x20, '"' or '\\') into OUT (>= 7 bytes); returns its length. */
static size_t admin_json_escape_byte(unsigned char c, char *out)
{
    static const char hex[] = "0123456789abcdef";
    const char *named = NULL;
    switch (c) {
    case '"': named = "\\\""; break;
    case '\\': named = "\\\\"; break;
    case '\n': named = "\\n"; break;
    case '\r': named = "\\r"; break;
    case '\t': named = "\\t"; break;
    case '\b': named = "\\b"; break;
    case '\f': named = "\\f"; break;
    default: break;
    }
    if (named) {
        memcpy(out, named, 2);
        return 2;
    }
    memcpy(out, "\\u00", 4);
    out[4] = hex[c >> 4];
    out[5] = hex[c & 15];
    return 6;
}

void admin_json_escape(struct sbuf *out, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t run = 0; /* start of the pending run of bytes copied as they are */
    sbuf_append(out, "\"", 1);
    for (size_t i = 0; i < n;) {
        unsigned char c = p[i];
        size_t len = admin_utf8_len(p + i, n - i);
        if (len && c >= 0x20 && c != '"' && c != '\\') {
            i += len;
            continue;
        }
        sbuf_append(out, s + run, i - run);
        char esc[8];
        if (len) {
            sbuf_append(out, esc, admin_json_escape_byte(c, esc));
        } else {
            sbuf_append_cstr(out, "\\ufffd");
        }
        run = ++i;
    }
    sbuf_append(out, s + run, n - run);
    sbuf_append(out, "\"", 1);
}

static void admin_json_sep(struct admin_json *j, const char *key)
{
    uint64_t bit = 1ULL << j->depth;
    if (j->depth && (j->items & bit))
        sbuf_append(j->out, ",", 1);
    j->items |= bit;
    if (key) {
        admin_json_escape(j->out, key, strlen(key));
        sbuf_append(j->out, ":", 1);
    }
}

void admin_json_begin(struct admin_json *j, const char *key, char open)
{
    admin_json_sep(j, key);
    sbuf_append(j->out, &open, 1);
    if (j->depth < 63)
        j->depth++;
    j->items &= ~(1ULL << j->depth);
}

void admin_json_end(struct admin_json *j, char close)
{
    sbuf_append(j->out, &close, 1);
    if (j->depth)
        j->depth--;
}

void admin_json_str(struct admin_json *j, const char *key, const char *v)
{
    admin_json_sep(j, key);
    if (v)
        admin_json_escape(j->out, v, strlen(v));
    else
        sbuf_append_cstr(j->out, "null");
}

void admin_json_u64(struct admin_json *j, const char *key, uint64_t v)
{
    admin_json_sep(j, key);
    sbuf_append_u64(j->out, v);
}

void admin_json_bool(struct admin_json *j, const char *key, bool v)
{
    admin_json_sep(j, key);
    sbuf_append_cstr(j->out, v ? "true" : "false");
}

void admin_json_num(struct admin_json *j, const char *key, double v)
{
    char tmp[64];
    if (!isfinite(v))
        v = 0;
    int n = snprintf(tmp, sizeof tmp, "%.2f", v);
    admin_json_sep(j, key);
    sbuf_append(j->out, tmp, n > 0 && (size_t)n < sizeof tmp ? (size_t)n : 0);
}

void admin_json_raw(struct admin_json *j, const char *key, const char *raw, size_t n)
{
    admin_json_sep(j, key);
    sbuf_append(j->out, raw, n);
}

/* --- reading ------------------------------------------------------------------------------------ */

/* One parser event, with a scalar's text copied out (owned, NUL-terminated). */
struct admin_ev {
    yaml_event_type_t type;
    char *text;
    size_t len;
    bool plain; /* unquoted scalar: true, false, a number, ... */
};

static int admin_body_next(yaml_parser_t *p, struct admin_ev *ev, char *err, size_t cap)
{
    yaml_event_t e;
    *ev = (struct admin_ev){ 0 };
    if (!yaml_parser_parse(p, &e)) {
        snprintf(err, cap, "invalid JSON at line %zu, column %zu: %s", (size_t)p->problem_mark.line + 1,
                 (size_t)p->problem_mark.column + 1, p->problem ? p->problem : "syntax error");
        return -1;
    }
    ev->type = e.type;
    int rc = 0;
    if (e.type == YAML_SCALAR_EVENT) {
        ev->len = e.data.scalar.length;
        ev->plain = e.data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
        ev->text = malloc(ev->len + 1);
        if (ev->text) {
            memcpy(ev->text, e.data.scalar.value, ev->len);
            ev->text[ev->len] = '\0';
        } else {
            snprintf(err, cap, "out of memory");
            rc = -1;
        }
    }
    yaml_event_delete(&e);
    return rc;
}

/* "-123" as an integer (JSON's grammar, leading zeros tolerated); 0 or -1. */
static int admin_parse_i64(const char *s, int64_t *out)
{
    bool neg = *s == '-';
    uint64_t v = 0, limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    s += neg;
    if (!*s)
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > (limit - (uint64_t)(*s - '0')) / 10)
            return -1;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return 0;
}

/* Fills F's value from scalar V (takes V's text for strings). */
static int admin_body_value(struct admin_field *f, struct admin_ev *v, char *err, size_t cap)
{
    if (!v->plain) {
        if (memchr(v->text, '\0', v->len)) {
            snprintf(err, cap, "value of \"%.64s\" contains a NUL character", f->key);
            return -1;
        }
        f->type = ADMIN_VALUE_STRING;
        f->str = v->text;
        v->text = NULL;
        return 0;
    }
    if (strcmp(v->text, "true") == 0 || strcmp(v->text, "false") == 0) {
        f->type = ADMIN_VALUE_BOOL;
        f->flag = v->text[0] == 't';
        return 0;
    }
    if (admin_parse_i64(v->text, &f->num) == 0) {
        f->type = ADMIN_VALUE_INT;
        return 0;
    }
    snprintf(err, cap, "value of \"%.64s\" must be a string, an integer or a boolean", f->key);
    return -1;
}

/* Reads one "key": value pair whose key event K was just read. */
static int admin_body_pair(yaml_parser_t *p, struct admin_body *out, struct admin_ev *k, char *err,
                           size_t cap)
{
    if (k->type != YAML_SCALAR_EVENT || memchr(k->text, '\0', k->len) || k->len > 64) {
        snprintf(err, cap, "the body must be a flat JSON object with short string keys");
        return -1;
    }
    if (admin_body_get(out, k->text)) {
        snprintf(err, cap, "duplicate key \"%.64s\"", k->text);
        return -1;
    }
    if (out->n == ADMIN_BODY_MAX_FIELDS) {
        snprintf(err, cap, "too many keys (at most %d)", ADMIN_BODY_MAX_FIELDS);
        return -1;
    }
    struct admin_field *f = &out->fields[out->n++];
    f->key = k->text;
    k->text = NULL;
    struct admin_ev v;
    if (admin_body_next(p, &v, err, cap) < 0)
        return -1;
    int rc = -1;
    if (v.type == YAML_SCALAR_EVENT)
        rc = admin_body_value(f, &v, err, cap);
    else
        snprintf(err, cap, "value of \"%.64s\" must be a string, an integer or a boolean", f->key);
    free(v.text);
    return rc;
}

/* Expects the next event to be WANT (else WHAT is the error); when STREAM_END is non-NULL, the end
 * of the stream is accepted too and noted there. */
static int admin_body_expect(yaml_parser_t *p, yaml_event_type_t want, const char *what, char *err,
                             size_t cap, bool *stream_end)
{
    struct admin_ev ev;
    if (admin_body_next(p, &ev, err, cap) < 0)
        return -1;
    free(ev.text);
    if (stream_end && ev.type == YAML_STREAM_END_EVENT) {
        *stream_end = true;
        return 0;
    }
    if (ev.type != want) {
        snprintf(err, cap, "%s", what);
        return -1;
    }
    return 0;
}

static int admin_body_events(yaml_parser_t *p, struct admin_body *out, char *err, size_t cap)
{
    static const char not_object[] = "the body must be one JSON object";
    bool empty = false;
    if (admin_body_expect(p, YAML_STREAM_START_EVENT, not_object, err, cap, NULL) < 0 ||
        admin_body_expect(p, YAML_DOCUMENT_START_EVENT, not_object, err, cap, &empty) < 0)
        return -1;
    if (empty)
        return 0;
    if (admin_body_expect(p, YAML_MAPPING_START_EVENT, not_object, err, cap, NULL) < 0)
        return -1;
    for (;;) {
        struct admin_ev k;
        if (admin_body_next(p, &k, err, cap) < 0)
            return -1;
        if (k.type == YAML_MAPPING_END_EVENT)
            break;
        int rc = admin_body_pair(p, out, &k, err, cap);
        free(k.text);
        if (rc < 0)
            return -1;
    }
    if (admin_body_expect(p, YAML_DOCUMENT_END_EVENT, not_object, err, cap, NULL) < 0 ||
        admin_body_expect(p, YAML_STREAM_END_EVENT, not_object, err, cap, NULL) < 0)
        return -1;
    return 0;
}

int admin_body_parse(const char *data, size_t len, struct admin_body *out, char *err, size_t cap)
{
    yaml_parser_t p;
    memset(out, 0, sizeof *out);
    if (!yaml_parser_initialize(&p)) {
        snprintf(err, cap, "out of memory");
        return -1;
    }
    yaml_parser_set_input_string(&p, (const unsigned char *)data, len);
    int rc = admin_body_events(&p, out, err, cap);
    yaml_parser_delete(&p);
    if (rc < 0)
        admin_body_free(out);
    return rc;
}

void admin_body_free(struct admin_body *b)
{
    for (size_t i = 0; i < b->n; i++) {
        free(b->fields[i].key);
        free(b->fields[i].str);
    }
    memset(b, 0, sizeof *b);
}

const struct admin_field *admin_body_get(const struct admin_body *b, const char *key)
{
    for (size_t i = 0; i < b->n; i++)
        if (b->fields[i].key && strcmp(b->fields[i].key, key) == 0)
            return &b->fields[i];
    return NULL;
}
