/* yaml_doc: a small in-memory YAML document tree, built from libyaml parser events.
 *
 * The config loader walks this tree instead of the event stream so it can look keys up in
 * any order (routes name upstreams defined later in the file) and still report every error
 * at the exact place it was written: each node keeps the 1-based line and column where it
 * starts. Only what a config needs is supported: one document of scalars, sequences and
 * mappings. Aliases are refused (they would let a small file expand without bound) and
 * nesting is capped at YAML_DOC_MAX_DEPTH. */
#ifndef PORTERO_CONF_YAML_DOC_H
#define PORTERO_CONF_YAML_DOC_H

#include <stdbool.h>
#include <stddef.h>

#define YAML_DOC_MAX_DEPTH 64

enum yaml_doc_kind { YAML_DOC_SCALAR, YAML_DOC_SEQUENCE, YAML_DOC_MAPPING };

struct yaml_doc_node {
    enum yaml_doc_kind kind;
    unsigned line, col;   /* 1-based start of the node in the input */
    /* scalar: a NUL-terminated copy of the value; it may also hold NULs (len is exact) */
    char *text;
    size_t len;
    bool plain;           /* scalar written without quotes or block style (null is plain) */
    /* sequence: kids[0..n) are the items; mapping: kids[2i] is key i, kids[2i+1] its value */
    struct yaml_doc_node **kids;
    size_t n;
};

/* A parse failure: where and what. */
struct yaml_doc_error {
    unsigned line, col;
    char msg[256];
};

/* Parses DATA (LEN bytes, UTF-8/16 YAML or JSON). On success returns 0 and sets *ROOT to the
 * tree (NULL for an input holding no document), which the caller frees with yaml_doc_free.
 * On failure returns -1, sets *ROOT to NULL and fills *ERR. */
int yaml_doc_parse(const char *data, size_t len, struct yaml_doc_node **root,
                   struct yaml_doc_error *err);
void yaml_doc_free(struct yaml_doc_node *node);

/* Number of items of a sequence or pairs of a mapping; 0 for scalars. */
size_t yaml_doc_count(const struct yaml_doc_node *node);
/* Key / value of pair I of mapping MAP (I < yaml_doc_count(MAP)). */
const struct yaml_doc_node *yaml_doc_key(const struct yaml_doc_node *map, size_t i);
const struct yaml_doc_node *yaml_doc_value(const struct yaml_doc_node *map, size_t i);
/* Value of the first pair whose key is the scalar KEY, or NULL (also when MAP is no mapping). */
const struct yaml_doc_node *yaml_doc_get(const struct yaml_doc_node *map, const char *key);
/* True for a plain scalar that YAML reads as null: empty, "~", "null", "Null", "NULL". */
bool yaml_doc_is_null(const struct yaml_doc_node *node);
/* "a scalar", "a sequence", "a mapping" or "null": for "expected X, got Y" messages. */
const char *yaml_doc_kind_name(const struct yaml_doc_node *node);

#endif
