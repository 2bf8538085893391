/* compress: Accept-Encoding negotiation, compressible types, ETag weakening. The encoders live in
 * compress_stream.c. */
#include "http/compress.h"

#include <string.h>

/* q-values are kept in thousandths (RFC 9110 §12.4.2 allows three decimals); -1 means "not listed". */
#define COMPRESS_Q_UNSET (-1)

struct compress_prefs {
    int coding[COMPRESS_N];
    int star;
    int identity;
};

const char *compress_token(enum compress_algo a)
{
    switch (a) {
    case COMPRESS_BR:
        return "br";
    case COMPRESS_ZSTD:
        return "zstd";
    case COMPRESS_GZIP:
        return "gzip";
    default:
        return "identity";
    }
}

/* RFC 9110 §5.6.2 tchar. */
static bool compress_is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return true;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool compress_is_token(struct str s)
{
    if (s.n == 0)
        return false;
    for (size_t i = 0; i < s.n; i++)
        if (!compress_is_tchar((unsigned char)s.p[i]))
            return false;
    return true;
}

/* qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] ), RFC 9110 §12.4.2. Returns thousandths or -1. */
static int compress_parse_q(struct str v)
{
    if (v.n == 0 || (v.p[0] != '0' && v.p[0] != '1') || v.n > 5)
        return -1;
    int q = (v.p[0] - '0') * 1000;
    if (v.n == 1)
        return q;
    if (v.p[1] != '.')
        return -1;
    int scale = 100;
    for (size_t i = 2; i < v.n; i++, scale /= 10) {
        if (v.p[i] < '0' || v.p[i] > '9')
            return -1;
        q += (v.p[i] - '0') * scale;
    }
    return q > 1000 ? -1 : q;
}

/* Splits "coding *( OWS ; OWS param )" and returns the element's q (1000 when absent), or -1 when malformed.
 * Parameters other than q carry no meaning for Accept-Encoding and are ignored. */
static int compress_parse_element(struct str item, struct str *coding)
{
    const char *semi = memchr(item.p, ';', item.n);
    *coding = str_trim_ows(str_make(item.p, semi ? (size_t)(semi - item.p) : item.n));
    if (!compress_is_token(*coding))
        return -1;
    int q = 1000;
    while (semi) {
        struct str rest = str_make(semi + 1, item.n - (size_t)(semi + 1 - item.p));
        semi = memchr(rest.p, ';', rest.n);
        struct str param = str_trim_ows(str_make(rest.p, semi ? (size_t)(semi - rest.p) : rest.n));
        const char *eq = memchr(param.p, '=', param.n);
        struct str name = str_trim_ows(str_make(param.p, eq ? (size_t)(eq - param.p) : param.n));
        if (!str_ieq_cstr(name, "q"))
            continue;
        /* weight = OWS ";" OWS "q=" qvalue: no blanks around "=" */
        if (eq != param.p + 1 || (q = compress_parse_q(str_make(eq + 1, param.n - 2))) < 0)
            return -1;
    }
    return q;
}

/* The first mention of a coding counts; later repeats are ignored. */
static void compress_note(int *slot, int q)
{
    if (*slot == COMPRESS_Q_UNSET)
        *slot = q;
}

static void compress_read_prefs(struct str accept, struct compress_prefs *p)
{
    for (int i = 0; i < COMPRESS_N; i++)
        p->coding[i] = COMPRESS_Q_UNSET;
    p->star = p->identity = COMPRESS_Q_UNSET;
    struct str rest = accept, item, coding;
    while (str_next_list_item(&rest, &item)) {
        int q = compress_parse_element(item, &coding);
        if (q < 0)
            continue;
        if (str_ieq_cstr(coding, "gzip") || str_ieq_cstr(coding, "x-gzip")) /* §12.5.3: x-gzip is gzip */
            compress_note(&p->coding[COMPRESS_GZIP], q);
        else if (str_ieq_cstr(coding, "br"))
            compress_note(&p->coding[COMPRESS_BR], q);
        else if (str_ieq_cstr(coding, "zstd"))
            compress_note(&p->coding[COMPRESS_ZSTD], q);
        else if (str_ieq_cstr(coding, "identity"))
            compress_note(&p->identity, q);
        else if (str_ieq_cstr(coding, "*"))
            compress_note(&p->star, q);
    }
}

int compress_negotiate(struct str accept, const enum compress_algo *enabled, size_t n)
{
    if (accept.p == NULL || accept.n == 0)
        return -1; /* absent: any coding is acceptable (§12.5.3), but identity is the safe choice */
    struct compress_prefs p;
    compress_read_prefs(accept, &p);
    int best = -1, best_q = 0;
    for (size_t i = 0; i < n; i++) {
        enum compress_algo a = enabled[i];
        if ((int)a < 0 || a >= COMPRESS_N)
            continue;
        /* "*" stands for every coding not listed by name (§12.5.3). */
        int q = p.coding[a] != COMPRESS_Q_UNSET ? p.coding[a] : p.star;
        if (q > best_q) { /* strictly greater: ties keep the server's earlier choice */
            best = (int)a;
            best_q = q;
        }
    }
    if (best >= 0 && p.identity > best_q)
        return -1; /* the client explicitly prefers the unencoded body */
    return best;
}

bool compress_type_matches(struct str content_type, char *const *types, size_t n)
{
    if (content_type.p == NULL)
        return false;
    const char *semi = memchr(content_type.p, ';', content_type.n);
    struct str mt = str_trim_ows(str_make(content_type.p, semi ? (size_t)(semi - content_type.p) : content_type.n));
    const char *slash = mt.n ? memchr(mt.p, '/', mt.n) : NULL;
    if (slash == NULL || slash == mt.p || slash == mt.p + mt.n - 1)
        return false; /* not type "/" subtype (§8.3.1) */
    size_t top_len = (size_t)(slash - mt.p) + 1; /* through the slash */
    for (size_t i = 0; i < n; i++) {
        const char *t = types[i];
        size_t tl = strlen(t);
        if (tl >= 2 && t[tl - 1] == '*' && t[tl - 2] == '/') {
            if (tl == 3 && t[0] == '*')
                return true;
            if (tl - 1 == top_len && str_ieq(str_make(mt.p, top_len), str_make(t, top_len)))
                return true;
        } else if (str_ieq_cstr(mt, t)) {
            return true;
        }
    }
    return false;
}

/* entity-tag = [ "W/" ] opaque-tag; opaque-tag = DQUOTE *etagc DQUOTE; etagc = %x21 / %x23-7E / obs-text
 * (RFC 9110 §8.8.3). */
static bool compress_is_opaque_tag(struct str t)
{
    if (t.n < 2 || t.p[0] != '"' || t.p[t.n - 1] != '"')
        return false;
    for (size_t i = 1; i + 1 < t.n; i++) {
        unsigned char c = (unsigned char)t.p[i];
        if (c < 0x21 || c == '"' || c == 0x7f)
            return false;
    }
    return true;
}

size_t compress_weak_etag(struct str etag, char *out, size_t cap)
{
    struct str t = str_trim_ows(etag);
    bool weak = t.n >= 2 && t.p[0] == 'W' && t.p[1] == '/'; /* "W/" is case-sensitive */
    if (!compress_is_opaque_tag(weak ? str_make(t.p + 2, t.n - 2) : t))
        return 0;
    size_t need = t.n + (weak ? 0 : 2);
    if (need > cap)
        return 0;
    size_t off = 0;
    if (!weak) {
        memcpy(out, "W/", 2);
        off = 2;
    }
    memcpy(out + off, t.p, t.n);
    return need;
}
