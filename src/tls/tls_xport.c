/* tls_xport: the xport ops over an SSL, keeping the read(2)/writev(2) contract the
 * edge-triggered pumps rely on (core/xport.h). */
#include <errno.h>
#include <openssl/err.h>
#include <string.h>

#include "tls/tls.h"

/* A TLS record carries at most 2^14 bytes of plaintext (RFC 8446 section 5.1). */
#define TLS_XPORT_RECORD 16384

/* errno for an SSL error that is not WANT_*: EPIPE when the peer went away, else EIO. */
static int tls_xport_errno(int e)
{
    int saved = errno;
    ERR_clear_error();
    if (e == SSL_ERROR_SYSCALL && (saved == EPIPE || saved == ECONNRESET))
        return EPIPE;
    return e == SSL_ERROR_SYSCALL && saved == 0 ? EPIPE : EIO;
}

/* Fills BUF until it is full or nothing more is available now, so a short read means the
 * socket and the SSL's own buffer are both drained. */
static ssize_t tls_xport_read(struct xport *x, void *buf, size_t n)
{
    SSL *ssl = x->ctx;
    size_t got = 0;
    while (got < n) {
        size_t r = 0;
        ERR_clear_error();
        errno = 0;
        if (SSL_read_ex(ssl, (char *)buf + got, n - got, &r) == 1) {
            got += r;
            continue;
        }
        int e = SSL_get_error(ssl, 0);
        if (got)
            return (ssize_t)got; /* the end or the error shows on the next call */
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            errno = EAGAIN;
            return -1;
        }
        if (e == SSL_ERROR_ZERO_RETURN) /* close_notify, or EOF (SSL_OP_IGNORE_UNEXPECTED_EOF) */
            return 0;
        errno = tls_xport_errno(e);
        return -1;
    }
    return (ssize_t)got;
}

/* The first min(total, 16 KiB) bytes of IOV as one contiguous run: IOV's own memory when its
 * first element holds them, else copied into BUF. The length depends only on how many bytes
 * are pending, so a retry after WANT_WRITE (same or more bytes pending) never passes fewer
 * bytes than the attempt that blocked, as SSL_write requires. */
static const void *tls_xport_gather(const struct iovec *iov, int cnt, size_t skip,
                                    unsigned char *buf, size_t *len)
{
    size_t want = 0;
    for (int i = 0; i < cnt && want < skip + TLS_XPORT_RECORD; i++)
        want += iov[i].iov_len;
    want = want > skip ? want - skip : 0;
    want = want < TLS_XPORT_RECORD ? want : TLS_XPORT_RECORD;
    *len = want;
    size_t have = 0;
    int i = 0;
    for (; i < cnt && skip >= iov[i].iov_len; i++)
        skip -= iov[i].iov_len;
    if (i < cnt && iov[i].iov_len - skip >= want)
        return (const char *)iov[i].iov_base + skip;
    for (; i < cnt && have < want; i++, skip = 0) {
        size_t take = iov[i].iov_len - skip;
        take = take < want - have ? take : want - have;
        memcpy(buf + have, (const char *)iov[i].iov_base + skip, take);
        have += take;
    }
    return buf;
}

static ssize_t tls_xport_writev(struct xport *x, const struct iovec *iov, int cnt)
{
    static _Thread_local unsigned char buf[TLS_XPORT_RECORD];
    SSL *ssl = x->ctx;
    size_t total = 0;
    for (;;) {
        size_t len = 0, w = 0;
        const void *p = tls_xport_gather(iov, cnt, total, buf, &len);
        if (len == 0)
            return (ssize_t)total;
        ERR_clear_error();
        errno = 0;
        if (SSL_write_ex(ssl, p, len, &w) == 1) {
            total += w; /* partial-write mode: one record per call */
            continue;
        }
        int e = SSL_get_error(ssl, 0);
        if (total)
            return (ssize_t)total;
        errno = e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ ? EAGAIN
                                                                      : tls_xport_errno(e);
        return -1;
    }
}

/* close_notify (RFC 8446 section 6.1), then FIN. A close_notify that cannot go out now is not
 * worth waiting for: HTTP framing tells the peer where the data ends. */
static int tls_xport_shutdown_wr(struct xport *x)
{
    SSL *ssl = x->ctx;
    ERR_clear_error();
    if (!(SSL_get_shutdown(ssl) & SSL_SENT_SHUTDOWN))
        SSL_shutdown(ssl);
    ERR_clear_error();
    return shutdown(x->fd, SHUT_WR);
}

const struct xport_ops tls_xport_ops = { tls_xport_read, tls_xport_writev, tls_xport_shutdown_wr };
