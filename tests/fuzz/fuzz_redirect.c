/* fuzz_redirect: the redirect Location template (route_redirect_location: $host, $request_uri,
 * $scheme). The Location value goes into a response head as it is, so whatever a client sends,
 * the expansion must stay inside its buffer and must not carry CR, LF or NUL (response
 * splitting, RFC 9110 §5.5 forbids them in field values).
 *
 * The first input byte picks what the rest is:
 *   even: template NUL host NUL request_uri, all arbitrary, expanded into a buffer of a size the
 *         same byte picks; checked against a plain reference expansion, so the length, the -1 on
 *         overflow and the NUL termination are all pinned down;
 *   odd:  template LF raw request: the template is skipped unless the config loader would accept
 *         it, the request goes through the HTTP/1 parser, and the parsed host and path are
 *         expanded as the exchange does it; the Location line built from the result must parse
 *         back, strictly, as one field with that value and nothing else. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/sbuf.h"
#include "http/h1.h"
#include "proxy/route.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_ASSERT(cond) \
    do {                  \
        if (!(cond))      \
            abort();      \
    } while (0)

/* The size of the exchange's Location buffer (src/proxy/exchange.c ex_redirect_route). */
#define FUZZ_LOCATION_CAP 8192

static const size_t fuzz_caps[8] = { 0, 1, 2, 5, 16, 64, 1024, FUZZ_LOCATION_CAP };

/* ---- the reference: the documented expansion, written the simplest way ---- */

static bool fuzz_ident_byte(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

/* Unbounded expansion: each '$' followed by the longest identifier; known names are replaced,
 * anything else (also a lone '$') stays as written. */
static void fuzz_ref_expand(struct sbuf *b, const char *tpl, struct str host, struct str uri,
                            const char *scheme)
{
    for (size_t i = 0; tpl[i];) {
        if (tpl[i] != '$') {
            sbuf_append(b, tpl + i, 1);
            i++;
            continue;
        }
        size_t k = i + 1;
        while (fuzz_ident_byte(tpl[k]))
            k++;
        struct str name = str_make(tpl + i + 1, k - i - 1);
        if (str_eq(name, STR_LIT("host")))
            sbuf_append(b, host.p, host.n);
        else if (str_eq(name, STR_LIT("request_uri")))
            sbuf_append(b, uri.p, uri.n);
        else if (str_eq(name, STR_LIT("scheme")))
            sbuf_append(b, scheme, strlen(scheme));
        else
            sbuf_append(b, tpl + i, k - i);
        i = k;
    }
}

/* Splits IN at the first SEP: *HEAD gets what is before (allocated, NUL-terminated), the rest
 * stays in IN. False when there is no SEP. */
static bool fuzz_cut(struct str *in, char sep, char **head)
{
    const char *at = in->n ? memchr(in->p, sep, in->n) : NULL;
    if (!at)
        return false;
    size_t n = (size_t)(at - in->p);
    *head = malloc(n + 1);
    memcpy(*head, in->p, n);
    (*head)[n] = '\0';
    in->p += n + 1;
    in->n -= n + 1;
    return true;
}

/* An exact-size heap copy, so a read past the slice is caught by ASan. */
static char *fuzz_dup(struct str s)
{
    char *p = malloc(s.n ? s.n : 1);
    if (s.n)
        memcpy(p, s.p, s.n);
    return p;
}

/* ---- even: arbitrary inputs, compared with the reference ---- */

static void fuzz_raw(uint8_t sel, struct str in)
{
    char *tpl = NULL, *host_text = NULL;
    if (!fuzz_cut(&in, '\0', &tpl))
        return;
    if (!fuzz_cut(&in, '\0', &host_text)) {
        free(tpl);
        return;
    }
    struct str host = str_make(host_text, strlen(host_text));
    char *uri_copy = fuzz_dup(in);
    struct str uri = str_make(uri_copy, in.n);
    const char *scheme = (sel & 0x10) ? "https" : "http";
    struct conf_route route = { .redirect_location = tpl };

    size_t cap = fuzz_caps[(sel >> 1) & 7];
    char *out = malloc(cap ? cap : 1); /* exact size: a write past CAP is caught */
    int rc = route_redirect_location(&route, host, uri, scheme, cap ? out : NULL, cap);

    struct sbuf ref = { 0 };
    fuzz_ref_expand(&ref, tpl, host, uri, scheme);
    FUZZ_ASSERT(!ref.failed);
    if (ref.len < cap) {
        FUZZ_ASSERT(rc >= 0 && (size_t)rc == ref.len);
        FUZZ_ASSERT(out[rc] == '\0' && memcmp(out, ref.p ? ref.p : "", ref.len) == 0);
    } else {
        FUZZ_ASSERT(rc == -1);
        if (cap) /* never an unterminated buffer, even on overflow */
            FUZZ_ASSERT(memchr(out, '\0', cap) != NULL);
    }
    sbuf_free(&ref);
    free(out);
    free(uri_copy);
    free(host_text);
    free(tpl);
}

/* ---- odd: a parsed request, as the exchange expands it ---- */

/* What the config loader accepts as a redirect location (src/conf/config.c
 * conf_check_location): not empty, no space, no control byte, no DEL. */
static bool fuzz_location_allowed(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s == 0x7f)
            return false;
    return true;
}

/* The Location line must come back from a strict response parser as exactly one field whose
 * value is the whole expansion: a CR, LF or NUL smuggled in would end the field early, add a
 * field or fail the parse. */
static void fuzz_check_head(const char *loc, size_t n)
{
    struct sbuf head = { 0 };
    sbuf_append(&head, "HTTP/1.1 302 Found\r\n", 20);
    sbuf_append_header(&head, STR_LIT("Location"), str_make(loc, n));
    sbuf_append(&head, "Content-Length: 0\r\n\r\n", 21);
    FUZZ_ASSERT(!head.failed);
    struct http_header h[4];
    struct http_msg m = { .headers = h, .max_headers = 4 };
    struct h1_limits lim = { 16384, 65536, 4 };
    int rc = h1_parse_response(head.p, head.len, &lim, &m);
    FUZZ_ASSERT(rc > 0 && (size_t)rc == head.len && m.n_headers == 2);
    FUZZ_ASSERT(str_ieq_cstr(h[0].name, "location") && str_eq(h[0].value, str_make(loc, n)));
    sbuf_free(&head);
}

static void fuzz_parsed(struct str in)
{
    char *tpl = NULL;
    if (!fuzz_cut(&in, '\n', &tpl))
        return;
    if (!fuzz_location_allowed(tpl)) {
        free(tpl);
        return;
    }
    char *raw = fuzz_dup(in);
    struct http_header h[32];
    struct http_msg m = { .headers = h, .max_headers = 32 };
    struct h1_limits lim = { 8192, 65536, 32 };
    if (h1_parse_request(raw, in.n, &lim, &m) > 0) {
        struct conf_route route = { .redirect_location = tpl };
        char *out = malloc(FUZZ_LOCATION_CAP);
        int rc = route_redirect_location(&route, m.host, m.path, "http", out, FUZZ_LOCATION_CAP);
        FUZZ_ASSERT(rc >= -1 && rc < FUZZ_LOCATION_CAP);
        for (int i = 0; i < rc; i++) /* the template's rule holds for the whole expansion */
            FUZZ_ASSERT((unsigned char)out[i] > 0x20 && (unsigned char)out[i] != 0x7f);
        if (rc >= 0) {
            FUZZ_ASSERT(out[rc] == '\0');
            fuzz_check_head(out, (size_t)rc);
        }
        free(out);
    }
    free(raw);
    free(tpl);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    struct str in = str_make((const char *)data + 1, size - 1);
    if (data[0] & 1)
        fuzz_parsed(in);
    else
        fuzz_raw(data[0], in);
    return 0;
}
