#include "proxy/spool.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* An unlinked file: nothing to clean up if we crash, the space goes back on close. */
static int spool_open_file(void)
{
    const char *dir = getenv("TMPDIR");
    int fd = open(dir && *dir ? dir : "/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    return fd;
}

static ssize_t spool_take(struct spool *s, const char *p, size_t n)
{
    size_t done = 0;
    if (s->written < s->mem_cap) {
        uint64_t room = s->mem_cap - s->written;
        size_t k = n < room ? n : (size_t)room;
        sbuf_append(&s->mem, p, k);
        if (s->mem.failed)
            return -1;
        s->written += k;
        done = k;
    }
    if (done == n)
        return (ssize_t)n;
    uint64_t in_file = s->written - s->mem_cap;
    if (s->failed || in_file >= s->file_cap)
        return (ssize_t)done;
    if (s->fd < 0 && (s->fd = spool_open_file()) < 0) {
        s->failed = true;
        return (ssize_t)done;
    }
    size_t k = n - done;
    if (k > s->file_cap - in_file)
        k = (size_t)(s->file_cap - in_file);
    ssize_t w = pwrite(s->fd, p + done, k, (off_t)in_file);
    if (w < 0) {
        s->failed = true; /* a full disk: keep what we have, let the upstream wait */
        return (ssize_t)done;
    }
    s->written += (uint64_t)w;
    return (ssize_t)(done + (size_t)w);
}

static ssize_t spool_writev(struct xport *x, const struct iovec *iov, int n)
{
    struct spool *s = x->ctx;
    ssize_t total = 0;
    if (s->read == s->written) { /* the reader caught up: start over, the space is free again */
        s->read = s->written = 0;
        sbuf_reset(&s->mem);
    }
    for (int i = 0; i < n; i++) {
        ssize_t k = spool_take(s, iov[i].iov_base, iov[i].iov_len);
        if (k < 0)
            return total ? total : -1;
        total += k;
        if ((size_t)k < iov[i].iov_len)
            break;
    }
    if (total == 0 && n > 0) {
        errno = EAGAIN; /* full: the writer waits for the reader */
        return -1;
    }
    return total;
}

static ssize_t spool_read(struct xport *x, void *buf, size_t cap)
{
    struct spool *s = x->ctx;
    uint64_t avail = s->written - s->read;
    if (!avail) {
        if (s->ended)
            return 0;
        errno = EAGAIN;
        return -1;
    }
    size_t n = avail < cap ? (size_t)avail : cap;
    if (s->read < s->mem_cap) {
        uint64_t in_mem = s->mem_cap - s->read;
        n = n < in_mem ? n : (size_t)in_mem;
        memcpy(buf, s->mem.p + s->read, n);
    } else {
        ssize_t r = pread(s->fd, buf, n, (off_t)(s->read - s->mem_cap));
        if (r <= 0) {
            errno = EIO;
            return -1;
        }
        n = (size_t)r;
    }
    s->read += n;
    return (ssize_t)n;
}

static int spool_shutdown(struct xport *x)
{
    struct spool *s = x->ctx;
    s->ended = true;
    return 0;
}

static const struct xport_ops spool_ops = { spool_read, spool_writev, spool_shutdown };

void spool_init(struct spool *s, uint64_t mem, uint64_t file)
{
    struct sbuf keep = s->mem;
    memset(s, 0, sizeof *s);
    s->mem = keep;
    sbuf_reset(&s->mem);
    s->mem_cap = mem;
    s->file_cap = file;
    s->fd = -1;
    s->xp = (struct xport){ .fd = -1, .ops = &spool_ops, .ctx = s };
}

void spool_free(struct spool *s)
{
    sbuf_free(&s->mem);
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
}
