/* Unit tests of the pooled I/O buffers (core/buf) and the growable head builder (core/sbuf). */
#include "unit.h"

#include <pthread.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/sbuf.h"

static void fill(struct buf *b, const char *s)
{
    size_t n = strlen(s);
    memcpy(buf_wptr(b), s, n);
    b->wpos += (uint32_t)n;
}

static bool buf_is(struct buf *b, const char *s)
{
    return buf_len(b) == strlen(s) && memcmp(buf_rptr(b), s, buf_len(b)) == 0;
}

static bool sbuf_is(const struct sbuf *b, const char *s)
{
    return b->len == strlen(s) && (b->len == 0 || memcmp(b->p, s, b->len) == 0);
}

/* --- buf -------------------------------------------------------------------------------- */

UNIT_TEST(test_buf_get_is_empty)
{
    struct buf *b = buf_get();
    CHECK(b != NULL);
    CHECK_EQ_INT(b->cap, BUF_SIZE);
    CHECK_EQ_INT(b->rpos, 0);
    CHECK_EQ_INT(b->wpos, 0);
    CHECK_EQ_INT(buf_len(b), 0);
    CHECK_EQ_INT(buf_space(b), BUF_SIZE);
    CHECK(buf_rptr(b) == b->data);
    CHECK(buf_wptr(b) == b->data);
    b->data[BUF_SIZE - 1] = 'x'; /* the whole capacity is usable (ASan checks) */
    buf_put(b);
    buf_drain_free_list();
}

UNIT_TEST(test_buf_put_recycles_and_resets)
{
    struct buf *a = buf_get();
    fill(a, "dirty bytes");
    buf_consume(a, 2);
    buf_put(a);
    struct buf *b = buf_get();
    CHECK(b == a); /* came back from the free list */
    CHECK_EQ_INT(b->rpos, 0);
    CHECK_EQ_INT(b->wpos, 0);
    CHECK_EQ_INT(b->cap, BUF_SIZE);
    CHECK(b->next_free == NULL);
    buf_put(b);
    buf_drain_free_list();
}

UNIT_TEST(test_buf_free_list_is_lifo)
{
    struct buf *a = buf_get(), *b = buf_get();
    CHECK(a != b);
    buf_put(a);
    buf_put(b);
    struct buf *x = buf_get(), *y = buf_get();
    CHECK(x == b);
    CHECK(y == a);
    buf_put(x);
    buf_put(y);
    buf_drain_free_list();
}

UNIT_TEST(test_buf_put_null)
{
    buf_put(NULL);
    buf_drain_free_list();
    buf_drain_free_list(); /* draining an empty list is harmless */
    CHECK(1);
}

UNIT_TEST(test_buf_free_list_bounded)
{
    /* more than the free list keeps: the surplus goes back to the heap (ASan: no leak) */
    enum { N = 600 };
    static struct buf *bs[N];
    for (int i = 0; i < N; i++) {
        bs[i] = buf_get();
        CHECK(bs[i] != NULL);
    }
    for (int i = 0; i < N; i++)
        buf_put(bs[i]);
    for (int i = 0; i < N; i++) {
        bs[i] = buf_get();
        CHECK(bs[i] != NULL);
        CHECK_EQ_INT(buf_len(bs[i]), 0);
    }
    for (int i = 0; i < N; i++)
        buf_put(bs[i]);
    buf_drain_free_list();
}

UNIT_TEST(test_buf_consume_partial_and_rewind)
{
    struct buf *b = buf_get();
    fill(b, "hello world");
    buf_consume(b, 6);
    CHECK(buf_is(b, "world"));
    CHECK_EQ_INT(b->rpos, 6);
    CHECK_EQ_INT(buf_space(b), BUF_SIZE - 11);
    buf_consume(b, 0);
    CHECK(buf_is(b, "world"));
    buf_consume(b, 5);
    CHECK_EQ_INT(buf_len(b), 0);
    CHECK_EQ_INT(b->rpos, 0); /* emptied: rewound */
    CHECK_EQ_INT(b->wpos, 0);
    CHECK_EQ_INT(buf_space(b), BUF_SIZE);
    buf_put(b);
    buf_drain_free_list();
}

UNIT_TEST(test_buf_consume_full_buffer_rewinds)
{
    struct buf *b = buf_get();
    memset(buf_wptr(b), 'a', BUF_SIZE);
    b->wpos = BUF_SIZE;
    CHECK_EQ_INT(buf_space(b), 0);
    buf_consume(b, BUF_SIZE);
    CHECK_EQ_INT(buf_space(b), BUF_SIZE);
    CHECK_EQ_INT(b->rpos, 0);
    buf_put(b);
    buf_drain_free_list();
}

UNIT_TEST(test_buf_compact)
{
    struct buf *b = buf_get();
    fill(b, "0123456789abcdef");
    buf_consume(b, 10);
    uint32_t space_before = buf_space(b);
    buf_compact(b);
    CHECK_EQ_INT(b->rpos, 0);
    CHECK_EQ_INT(b->wpos, 6);
    CHECK(buf_is(b, "abcdef"));
    CHECK_EQ_INT(buf_space(b), space_before + 10);
    buf_compact(b); /* already at the front: no change */
    CHECK(buf_is(b, "abcdef"));
    CHECK_EQ_INT(b->wpos, 6);
    buf_put(b);
    buf_drain_free_list();
}

UNIT_TEST(test_buf_compact_overlapping)
{
    /* unread bytes overlap their destination: must be a memmove */
    struct buf *b = buf_get();
    for (int i = 0; i < 1000; i++)
        b->data[i] = (char)(i % 251);
    b->wpos = 1000;
    buf_consume(b, 3);
    buf_compact(b);
    CHECK_EQ_INT(buf_len(b), 997);
    int bad = 0;
    for (int i = 0; i < 997; i++)
        bad += b->data[i] != (char)((i + 3) % 251);
    CHECK_EQ_INT(bad, 0);
    buf_put(b);
    buf_drain_free_list();
}

UNIT_TEST(test_buf_grow_keeps_unread_bytes)
{
    struct buf *b = buf_get();
    fill(b, "GET / HTTP/1.1\r\nX-Big: ");
    buf_consume(b, 4); /* only unread bytes move */
    struct buf *g = buf_grow(b, 4 * BUF_SIZE);
    CHECK(g != NULL);
    CHECK_EQ_INT(g->cap, 4 * BUF_SIZE);
    CHECK_EQ_INT(g->rpos, 0);
    CHECK(buf_is(g, "/ HTTP/1.1\r\nX-Big: "));
    CHECK_EQ_INT(buf_space(g), 4 * BUF_SIZE - buf_len(g));
    g->data[4 * BUF_SIZE - 1] = 'z'; /* whole new capacity usable */
    /* the old buffer went back to the free list */
    struct buf *again = buf_get();
    CHECK(again == b);
    buf_put(again);
    /* a grown buffer is freed, not pooled: the next get is a normal one */
    buf_put(g);
    struct buf *n = buf_get();
    CHECK_EQ_INT(n->cap, BUF_SIZE);
    buf_put(n);
    buf_drain_free_list();
}

UNIT_TEST(test_buf_grow_full_buffer)
{
    struct buf *b = buf_get();
    for (uint32_t i = 0; i < BUF_SIZE; i++)
        b->data[i] = (char)(i * 7);
    b->wpos = BUF_SIZE;
    struct buf *g = buf_grow(b, 2 * BUF_SIZE);
    CHECK(g != NULL);
    CHECK_EQ_INT(buf_len(g), BUF_SIZE);
    int bad = 0;
    for (uint32_t i = 0; i < BUF_SIZE; i++)
        bad += g->data[i] != (char)(i * 7);
    CHECK_EQ_INT(bad, 0);
    /* grown buffers consume and compact like normal ones */
    buf_consume(g, 100);
    buf_compact(g);
    CHECK_EQ_INT(buf_len(g), BUF_SIZE - 100);
    CHECK(g->data[0] == (char)(100 * 7));
    buf_put(g);
    buf_drain_free_list();
}

static void *buf_thread(void *arg)
{
    struct buf **out = arg;
    struct buf *b = buf_get();
    buf_put(b);
    out[0] = buf_get(); /* its own free list */
    buf_put(out[0]);
    buf_drain_free_list();
    return NULL;
}

UNIT_TEST(test_buf_free_list_per_thread)
{
    struct buf *mine = buf_get();
    buf_put(mine);
    struct buf *theirs[1] = { NULL };
    pthread_t th;
    CHECK_EQ_INT(pthread_create(&th, NULL, buf_thread, theirs), 0);
    pthread_join(th, NULL);
    CHECK(theirs[0] != NULL);
    CHECK(theirs[0] != mine); /* the other thread did not take this thread's buffer */
    struct buf *again = buf_get();
    CHECK(again == mine);
    buf_put(again);
    buf_drain_free_list();
}

/* --- sbuf ------------------------------------------------------------------------------- */

UNIT_TEST(test_sbuf_append)
{
    struct sbuf s = { 0 };
    sbuf_append(&s, "abc", 3);
    sbuf_append(&s, NULL, 0); /* nothing appended */
    sbuf_append_cstr(&s, "def");
    sbuf_append_cstr(&s, "");
    sbuf_append_str(&s, STR_LIT("/ghi"));
    CHECK(sbuf_is(&s, "abcdef/ghi"));
    CHECK(!s.failed);
    CHECK(s.cap >= s.len);
    sbuf_free(&s);
    CHECK(s.p == NULL);
    CHECK_EQ_INT(s.len, 0);
    CHECK_EQ_INT(s.cap, 0);
}

UNIT_TEST(test_sbuf_u64)
{
    struct sbuf s = { 0 };
    sbuf_append_u64(&s, 0);
    sbuf_append(&s, ",", 1);
    sbuf_append_u64(&s, 7);
    sbuf_append(&s, ",", 1);
    sbuf_append_u64(&s, 10);
    sbuf_append(&s, ",", 1);
    sbuf_append_u64(&s, 1234567890);
    sbuf_append(&s, ",", 1);
    sbuf_append_u64(&s, UINT64_MAX);
    CHECK(sbuf_is(&s, "0,7,10,1234567890,18446744073709551615"));
    sbuf_free(&s);
}

UNIT_TEST(test_sbuf_header)
{
    struct sbuf s = { 0 };
    sbuf_append_header(&s, STR_LIT("Content-Type"), STR_LIT("text/plain"));
    sbuf_append_header(&s, STR_LIT("X-Empty"), STR_LIT(""));
    CHECK(sbuf_is(&s, "Content-Type: text/plain\r\nX-Empty: \r\n"));
    sbuf_free(&s);
}

UNIT_TEST(test_sbuf_header_as_first_append)
{
    /* the header path reserves on its own (no prior append to allocate) */
    struct sbuf s = { 0 };
    sbuf_append_header(&s, STR_LIT("A"), STR_LIT("b"));
    CHECK(sbuf_is(&s, "A: b\r\n"));
    sbuf_free(&s);
}

UNIT_TEST(test_sbuf_reset_keeps_memory)
{
    struct sbuf s = { 0 };
    sbuf_append_cstr(&s, "first line");
    char *p = s.p;
    size_t cap = s.cap;
    sbuf_reset(&s);
    CHECK_EQ_INT(s.len, 0);
    CHECK(s.p == p);
    CHECK_EQ_INT(s.cap, cap);
    CHECK(!s.failed);
    sbuf_append_cstr(&s, "second");
    CHECK(sbuf_is(&s, "second"));
    sbuf_free(&s);
}

UNIT_TEST(test_sbuf_growth)
{
    struct sbuf s = { 0 };
    char piece[37];
    for (int i = 0; i < 37; i++)
        piece[i] = (char)('A' + i % 26);
    for (int i = 0; i < 5000; i++)
        sbuf_append(&s, piece, sizeof piece);
    CHECK(!s.failed);
    CHECK_EQ_INT(s.len, 5000 * 37);
    CHECK(s.cap >= s.len);
    int bad = 0;
    for (size_t i = 0; i < s.len; i++)
        bad += s.p[i] != piece[i % 37];
    CHECK_EQ_INT(bad, 0);
    sbuf_free(&s);
}

UNIT_TEST(test_sbuf_growth_one_big_append)
{
    struct sbuf s = { 0 };
    sbuf_append_cstr(&s, "x");
    static char big[300000];
    memset(big, 'q', sizeof big);
    sbuf_append(&s, big, sizeof big);
    CHECK_EQ_INT(s.len, sizeof big + 1);
    CHECK(s.cap >= s.len);
    CHECK(s.p[0] == 'x' && s.p[1] == 'q' && s.p[s.len - 1] == 'q');
    /* a big header value grows the buffer too */
    struct sbuf h = { 0 };
    sbuf_append_header(&h, STR_LIT("X-Big"), str_make(big, 5000));
    CHECK_EQ_INT(h.len, 5000 + 9);
    CHECK(memcmp(h.p, "X-Big: qqq", 10) == 0);
    CHECK(memcmp(h.p + h.len - 3, "q\r\n", 3) == 0);
    sbuf_free(&h);
    sbuf_free(&s);
}

UNIT_MAIN()
