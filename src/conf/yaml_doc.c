#include "conf/yaml_doc.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

/* Builder state: the containers still open, innermost last. */
struct yaml_doc_builder {
    struct yaml_doc_node *root;
    struct yaml_doc_node *stack[YAML_DOC_MAX_DEPTH];
    size_t depth;
    int documents;
    struct yaml_doc_error *err;
};

/* Allocation failure while reading a config is not something a caller can recover from in a
 * useful way; stop loudly instead of threading NULL through every builder step. */
static void *yaml_doc_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) {
        fputs("portero: out of memory while reading YAML\n", stderr);
        abort();
    }
    return p;
}

static void yaml_doc_fail(struct yaml_doc_builder *b, const yaml_mark_t *mark, const char *fmt,
                          ...) __attribute__((format(printf, 3, 4)));

static void yaml_doc_fail(struct yaml_doc_builder *b, const yaml_mark_t *mark, const char *fmt, ...)
{
    va_list ap;
    b->err->line = (unsigned)mark->line + 1;
    b->err->col = (unsigned)mark->column + 1;
    va_start(ap, fmt);
    vsnprintf(b->err->msg, sizeof b->err->msg, fmt, ap);
    va_end(ap);
}

void yaml_doc_free(struct yaml_doc_node *node)
{
    if (!node)
        return;
    for (size_t i = 0; i < node->n; i++)
        yaml_doc_free(node->kids[i]);
    free(node->kids);
    free(node->text);
    free(node);
}

static struct yaml_doc_node *yaml_doc_new(enum yaml_doc_kind kind, const yaml_mark_t *mark)
{
    struct yaml_doc_node *node = yaml_doc_xcalloc(1, sizeof *node);
    node->kind = kind;
    node->line = (unsigned)mark->line + 1;
    node->col = (unsigned)mark->column + 1;
    return node;
}

/* Hangs NODE under the innermost open container (or makes it the root). Grows the child array
 * by doubling; the capacity is implied by n (4, then powers of two), so nodes stay small. */
static void yaml_doc_attach(struct yaml_doc_builder *b, struct yaml_doc_node *node)
{
    if (b->depth == 0) {
        b->root = node;
        return;
    }
    struct yaml_doc_node *parent = b->stack[b->depth - 1];
    size_t n = parent->n;
    if (n == 0 || (n >= 4 && (n & (n - 1)) == 0)) {
        size_t cap = n ? n * 2 : 4;
        struct yaml_doc_node **kids = realloc(parent->kids, cap * sizeof *kids);
        if (!kids) {
            fputs("portero: out of memory while reading YAML\n", stderr);
            abort();
        }
        parent->kids = kids;
    }
    parent->kids[parent->n++] = node;
}

static int yaml_doc_scalar(struct yaml_doc_builder *b, const yaml_event_t *ev)
{
    struct yaml_doc_node *node = yaml_doc_new(YAML_DOC_SCALAR, &ev->start_mark);
    size_t len = ev->data.scalar.length;
    node->text = yaml_doc_xcalloc(len + 1, 1);
    if (len)
        memcpy(node->text, ev->data.scalar.value, len);
    node->len = len;
    node->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
    yaml_doc_attach(b, node);
    return 0;
}

static int yaml_doc_open(struct yaml_doc_builder *b, const yaml_event_t *ev, enum yaml_doc_kind kind)
{
    if (b->depth == YAML_DOC_MAX_DEPTH) {
        yaml_doc_fail(b, &ev->start_mark, "nesting deeper than %d levels", YAML_DOC_MAX_DEPTH);
        return -1;
    }
    struct yaml_doc_node *node = yaml_doc_new(kind, &ev->start_mark);
    yaml_doc_attach(b, node);
    b->stack[b->depth++] = node;
    return 0;
}

/* Applies one parser event to the tree. Returns 0, or -1 with b->err filled. */
static int yaml_doc_event(struct yaml_doc_builder *b, const yaml_event_t *ev)
{
    switch (ev->type) {
    case YAML_DOCUMENT_START_EVENT:
        if (++b->documents > 1) {
            yaml_doc_fail(b, &ev->start_mark, "only one YAML document is allowed");
            return -1;
        }
        return 0;
    case YAML_ALIAS_EVENT:
        yaml_doc_fail(b, &ev->start_mark, "YAML aliases are not supported");
        return -1;
    case YAML_SCALAR_EVENT:
        return yaml_doc_scalar(b, ev);
    case YAML_SEQUENCE_START_EVENT:
        return yaml_doc_open(b, ev, YAML_DOC_SEQUENCE);
    case YAML_MAPPING_START_EVENT:
        return yaml_doc_open(b, ev, YAML_DOC_MAPPING);
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
        if (b->depth)
            b->depth--;
        return 0;
    default:
        return 0;
    }
}

/* Reader errors (bad encoding) carry a byte offset rather than a mark; turn it into a line and
 * column by counting through the input ourselves. */
static void yaml_doc_offset_mark(const char *data, size_t len, size_t offset, yaml_mark_t *mark)
{
    memset(mark, 0, sizeof *mark);
    for (size_t i = 0; i < offset && i < len; i++) {
        if (data[i] == '\n') {
            mark->line++;
            mark->column = 0;
        } else if (((unsigned char)data[i] & 0xC0) != 0x80) {
            mark->column++;
        }
    }
}

static void yaml_doc_parser_error(struct yaml_doc_builder *b, const yaml_parser_t *p,
                                  const char *data, size_t len)
{
    yaml_mark_t mark = p->problem_mark;
    if (p->error == YAML_READER_ERROR)
        yaml_doc_offset_mark(data, len, p->problem_offset, &mark);
    const char *problem = p->problem ? p->problem : "cannot parse input";
    if (p->context)
        yaml_doc_fail(b, &mark, "YAML syntax error: %s %s", problem, p->context);
    else
        yaml_doc_fail(b, &mark, "YAML syntax error: %s", problem);
}

int yaml_doc_parse(const char *data, size_t len, struct yaml_doc_node **root,
                   struct yaml_doc_error *err)
{
    struct yaml_doc_builder b = { .err = err };
    yaml_parser_t parser;
    int rc = 0;

    *root = NULL;
    memset(err, 0, sizeof *err);
    if (!yaml_parser_initialize(&parser)) {
        snprintf(err->msg, sizeof err->msg, "cannot initialise the YAML parser");
        err->line = err->col = 1;
        return -1;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)data, len);
    for (;;) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&parser, &ev)) {
            yaml_doc_parser_error(&b, &parser, data, len);
            rc = -1;
            break;
        }
        int done = ev.type == YAML_STREAM_END_EVENT;
        rc = yaml_doc_event(&b, &ev);
        yaml_event_delete(&ev);
        if (rc || done)
            break;
    }
    yaml_parser_delete(&parser);
    if (rc) {
        yaml_doc_free(b.root);
        return -1;
    }
    *root = b.root;
    return 0;
}

size_t yaml_doc_count(const struct yaml_doc_node *node)
{
    if (!node || node->kind == YAML_DOC_SCALAR)
        return 0;
    return node->kind == YAML_DOC_MAPPING ? node->n / 2 : node->n;
}

const struct yaml_doc_node *yaml_doc_key(const struct yaml_doc_node *map, size_t i)
{
    return map->kids[2 * i];
}

const struct yaml_doc_node *yaml_doc_value(const struct yaml_doc_node *map, size_t i)
{
    return map->kids[2 * i + 1];
}

const struct yaml_doc_node *yaml_doc_get(const struct yaml_doc_node *map, const char *key)
{
    if (!map || map->kind != YAML_DOC_MAPPING)
        return NULL;
    size_t klen = strlen(key);
    for (size_t i = 0; i < yaml_doc_count(map); i++) {
        const struct yaml_doc_node *k = yaml_doc_key(map, i);
        if (k->kind == YAML_DOC_SCALAR && k->len == klen && memcmp(k->text, key, klen) == 0)
            return yaml_doc_value(map, i);
    }
    return NULL;
}

bool yaml_doc_is_null(const struct yaml_doc_node *node)
{
    if (!node || node->kind != YAML_DOC_SCALAR || !node->plain)
        return false;
    return node->len == 0 || strcmp(node->text, "~") == 0 || strcmp(node->text, "null") == 0 ||
           strcmp(node->text, "Null") == 0 || strcmp(node->text, "NULL") == 0;
}

const char *yaml_doc_kind_name(const struct yaml_doc_node *node)
{
    if (yaml_doc_is_null(node))
        return "null";
    switch (node->kind) {
    case YAML_DOC_SEQUENCE:
        return "a sequence";
    case YAML_DOC_MAPPING:
        return "a mapping";
    default:
        return "a scalar";
    }
}
