/* xport: one byte-stream endpoint as the proxy's pumps see it — a plain socket, TLS over a
 * socket, or an HTTP/2 stream bridged to HTTP/1.1 bytes.
 *
 * A plain socket has no ops and costs a direct system call, so the common path stays as it was.
 * Every other kind keeps the contract of read(2) and writev(2) that the edge-triggered loop relies
 * on: -1 with errno EAGAIN when not ready, 0 from read at the end, and a read that returns fewer
 * bytes than asked means the source is drained (the next readiness event will bring more). */
#ifndef PORTERO_CORE_XPORT_H
#define PORTERO_CORE_XPORT_H

#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

struct xport;

struct xport_ops {
    ssize_t (*read)(struct xport *x, void *buf, size_t n);
    ssize_t (*writev)(struct xport *x, const struct iovec *iov, int n);
    /* Ends our direction (TLS close_notify, END_STREAM, FIN); 0 or -1. */
    int (*shutdown_wr)(struct xport *x);
};

struct xport {
    int fd;                       /* the socket; -1 for an HTTP/2 stream */
    const struct xport_ops *ops;  /* NULL: a plain socket */
    void *ctx;                    /* the ops' state (an SSL *, an HTTP/2 stream); not owned here */
};

static inline ssize_t xport_read(struct xport *x, void *buf, size_t n)
{
    return x->ops ? x->ops->read(x, buf, n) : read(x->fd, buf, n);
}

static inline ssize_t xport_writev(struct xport *x, const struct iovec *iov, int n)
{
    return x->ops ? x->ops->writev(x, iov, n) : writev(x->fd, iov, n);
}

static inline ssize_t xport_write(struct xport *x, const void *buf, size_t n)
{
    struct iovec v = { (void *)buf, n };
    return xport_writev(x, &v, 1);
}

static inline int xport_shutdown_wr(struct xport *x)
{
    return x->ops ? x->ops->shutdown_wr(x) : shutdown(x->fd, SHUT_WR);
}

#endif
