/* h2_bridge: the body an exchange writes as HTTP/1.1 bytes, decoded into the data that goes out
 * in DATA frames (and the trailer lines that go out in a trailing HEADERS); and the reverse
 * direction's chunk framing. */
#include "http/h2_bridge.h"

#include <string.h>

void h2b_body_init(struct h2b_body *b, enum h1_body_kind kind, uint64_t length,
                   struct sbuf *trailers)
{
    memset(b, 0, sizeof *b);
    b->kind = kind;
    b->left = length;
    b->ck.trailers = trailers;
    b->ended = kind == H1_BODY_NONE || (kind == H1_BODY_LENGTH && length == 0);
}

int h2b_body_decode(struct h2b_body *b, const char *in, size_t len, char *out, size_t cap,
                    size_t *consumed, size_t *produced)
{
    *consumed = *produced = 0;
    if (b->ended)
        return 1;
    size_t k = len < cap ? len : cap;
    if (b->kind == H1_BODY_LENGTH && k > b->left)
        k = (size_t)b->left;
    if (k == 0)
        return 0;
    memcpy(out, in, k);
    if (b->kind != H1_BODY_CHUNKED) {
        *consumed = *produced = k;
        if (b->kind == H1_BODY_LENGTH) {
            b->left -= k;
            b->ended = b->left == 0;
        }
        return b->ended;
    }
    /* chunked: decoding in place only shrinks, so OUT (room K) holds the result */
    int r = h1_chunked_decode(&b->ck, out, k, consumed, produced);
    if (r < 0)
        return -1;
    b->ended = r == 1;
    return r;
}

int h2b_body_eof(struct h2b_body *b)
{
    if (b->ended)
        return 1;
    if (b->kind != H1_BODY_CLOSE)
        return -1;
    b->ended = true;
    return 1;
}

void h2b_chunk_append(struct sbuf *out, const void *data, size_t n)
{
    if (!n)
        return;
    char line[20];
    sbuf_append(out, line, h1_chunk_header(line, n));
    sbuf_append(out, data, n);
    sbuf_append(out, "\r\n", 2);
}

void h2b_chunk_last(struct sbuf *out, const char *lines, size_t len)
{
    sbuf_append(out, "0\r\n", 3);
    if (len)
        sbuf_append(out, lines, len);
    sbuf_append(out, "\r\n", 2);
}
