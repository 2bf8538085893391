#include "core/fdpass.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#define FDPASS_MAGIC 0x31444650u /* "PFD1" in a little-endian dump */
#define FDPASS_BACKLOG 8

struct fdpass_header {
    uint32_t magic;
    uint32_t count; /* descriptors (and labels) in this frame; 0 ends the list */
    uint32_t seq;   /* descriptors sent before this frame (the total, in the end frame) */
};

/* Room for the largest SCM_RIGHTS message of one frame, aligned for struct cmsghdr. */
union fdpass_cmsg {
    struct cmsghdr align;
    char buf[CMSG_SPACE(FDPASS_BATCH_MAX * sizeof(int))];
};

/* The descriptors that came with the bytes of one frame; owned until appended to a list. */
struct fdpass_batch {
    int fds[FDPASS_BATCH_MAX];
    size_t n;
    bool overflow; /* more arrived than a frame may carry (the extras were closed) */
};

/* One received frame. */
struct fdpass_frame {
    struct fdpass_header h;
    uint32_t lens[FDPASS_BATCH_MAX];
    char *text; /* the labels' bytes, back to back */
    struct fdpass_batch b;
};

/* What fdpass_recv has accumulated; fds and labels have room for cap entries. */
struct fdpass_list {
    int *fds;
    char **labels;
    size_t n, cap;
};

static void fdpass_close_all(const int *fds, size_t n)
{
    for (size_t i = 0; i < n; i++)
        close(fds[i]);
}

static int fdpass_fail(int err)
{
    errno = err;
    return -1;
}

/* ---- sending ---- */

static const char *fdpass_label(const char *const *labels, size_t i)
{
    return labels && labels[i] ? labels[i] : "";
}

/* Header, lengths and labels of the frame for FDS [FIRST, FIRST + COUNT); NULL on ENOMEM. */
static char *fdpass_build_frame(const char *const *labels, size_t first, size_t count, size_t *len)
{
    struct fdpass_header h = { .magic = FDPASS_MAGIC, .count = (uint32_t)count, .seq = (uint32_t)first };
    uint32_t lens[FDPASS_BATCH_MAX];
    size_t text = 0;
    for (size_t i = 0; i < count; i++) {
        lens[i] = (uint32_t)strlen(fdpass_label(labels, first + i));
        text += lens[i];
    }
    *len = sizeof h + count * sizeof *lens + text;
    char *frame = malloc(*len), *p = frame;
    if (!frame)
        return NULL;
    memcpy(p, &h, sizeof h);
    p += sizeof h;
    memcpy(p, lens, count * sizeof *lens);
    p += count * sizeof *lens;
    for (size_t i = 0; i < count; i++) {
        memcpy(p, fdpass_label(labels, first + i), lens[i]);
        p += lens[i];
    }
    return frame;
}

/* Attaches FDS (N <= FDPASS_BATCH_MAX) to MSG as one SCM_RIGHTS message in CTL. */
static void fdpass_attach(struct msghdr *msg, union fdpass_cmsg *ctl, const int *fds, size_t n)
{
    memset(ctl, 0, sizeof *ctl);
    msg->msg_control = ctl->buf;
    msg->msg_controllen = CMSG_SPACE(n * sizeof(int));
    struct cmsghdr *c = CMSG_FIRSTHDR(msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(n * sizeof(int));
    memcpy(CMSG_DATA(c), fds, n * sizeof(int));
}

/* Writes all LEN bytes of BUF, the N descriptors FDS riding on the first byte. */
static int fdpass_send_all(int sock, const char *buf, size_t len, const int *fds, size_t n)
{
    union fdpass_cmsg ctl;
    size_t off = 0;
    while (off < len) {
        struct iovec iov = { .iov_base = (char *)buf + off, .iov_len = len - off };
        struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
        if (off == 0 && n > 0)
            fdpass_attach(&msg, &ctl, fds, n); /* again after EINTR: nothing was sent */
        ssize_t r = sendmsg(sock, &msg, MSG_NOSIGNAL);
        if (r < 0 && errno != EINTR)
            return -1;
        if (r > 0)
            off += (size_t)r;
    }
    return 0;
}

static int fdpass_send_frame(int sock, const int *fds, const char *const *labels, size_t first, size_t count)
{
    size_t len;
    char *frame = fdpass_build_frame(labels, first, count, &len);
    if (!frame)
        return -1;
    int rc = fdpass_send_all(sock, frame, len, fds ? fds + first : NULL, count);
    int saved = errno;
    free(frame);
    errno = saved;
    return rc;
}

static int fdpass_check_send_args(const int *fds, const char *const *labels, size_t n)
{
    if ((n > 0 && !fds) || n > FDPASS_TOTAL_MAX)
        return fdpass_fail(EINVAL);
    for (size_t i = 0; i < n; i++)
        if (fds[i] < 0 || strlen(fdpass_label(labels, i)) > FDPASS_LABEL_MAX)
            return fdpass_fail(EINVAL);
    return 0;
}

int fdpass_send(int sock, const int *fds, const char *const *labels, size_t n)
{
    if (fdpass_check_send_args(fds, labels, n) < 0)
        return -1;
    for (size_t first = 0; first < n; first += FDPASS_BATCH_MAX) {
        size_t count = n - first < FDPASS_BATCH_MAX ? n - first : FDPASS_BATCH_MAX;
        if (fdpass_send_frame(sock, fds, labels, first, count) < 0)
            return -1;
    }
    return fdpass_send_frame(sock, NULL, NULL, n, 0); /* the end frame */
}

/* ---- receiving ---- */

/* Moves the descriptors of MSG's SCM_RIGHTS messages into B; closes what does not fit. */
static void fdpass_take_fds(struct msghdr *msg, struct fdpass_batch *b)
{
    for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < n; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
            if (b->n < FDPASS_BATCH_MAX) {
                b->fds[b->n++] = fd;
            } else {
                close(fd);
                b->overflow = true;
            }
        }
    }
}

/* Reads exactly LEN bytes into BUF, collecting into B the descriptors that come with them
 * (B's owner closes them, on failure too). */
static int fdpass_recv_exact(int sock, void *buf, size_t len, struct fdpass_batch *b)
{
    union fdpass_cmsg ctl;
    size_t off = 0;
    while (off < len) {
        struct iovec iov = { .iov_base = (char *)buf + off, .iov_len = len - off };
        struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                              .msg_controllen = sizeof ctl.buf };
        ssize_t r = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        fdpass_take_fds(&msg, b); /* those that fit, even when truncated: to be closed */
        if (msg.msg_flags & MSG_CTRUNC)
            return fdpass_fail(EMSGSIZE);
        if (r == 0)
            return fdpass_fail(ECONNRESET); /* the peer closed before the end frame */
        off += (size_t)r;
    }
    return 0;
}

/* Reads the label lengths and the labels of F, whose header is read and checked. */
static int fdpass_recv_labels(int sock, struct fdpass_frame *f, size_t *text_len)
{
    if (fdpass_recv_exact(sock, f->lens, f->h.count * sizeof *f->lens, &f->b) < 0)
        return -1;
    *text_len = 0;
    for (size_t i = 0; i < f->h.count; i++) {
        if (f->lens[i] > FDPASS_LABEL_MAX)
            return fdpass_fail(EPROTO);
        *text_len += f->lens[i];
    }
    if (!(f->text = malloc(*text_len + 1)))
        return -1;
    if (fdpass_recv_exact(sock, f->text, *text_len, &f->b) < 0)
        return -1;
    return memchr(f->text, '\0', *text_len) ? fdpass_fail(EPROTO) : 0;
}

/* Reads one whole frame into F; RECEIVED descriptors came before it. */
static int fdpass_read_frame(int sock, size_t received, struct fdpass_frame *f)
{
    size_t text_len;
    if (fdpass_recv_exact(sock, &f->h, sizeof f->h, &f->b) < 0)
        return -1;
    if (f->h.magic != FDPASS_MAGIC || f->h.count > FDPASS_BATCH_MAX || f->h.seq != received ||
        received + f->h.count > FDPASS_TOTAL_MAX)
        return fdpass_fail(EPROTO);
    if (fdpass_recv_labels(sock, f, &text_len) < 0)
        return -1;
    if (f->b.overflow || f->b.n != f->h.count)
        return fdpass_fail(EPROTO); /* the descriptors do not match the labels */
    return 0;
}

/* Room in L for MORE entries. */
static int fdpass_list_reserve(struct fdpass_list *l, size_t more)
{
    if (l->n + more <= l->cap)
        return 0;
    size_t cap = l->cap ? l->cap : FDPASS_BATCH_MAX;
    while (cap < l->n + more)
        cap *= 2;
    int *fds = realloc(l->fds, cap * sizeof *fds);
    if (!fds)
        return -1;
    l->fds = fds;
    char **labels = realloc(l->labels, cap * sizeof *labels);
    if (!labels)
        return -1;
    l->labels = labels;
    l->cap = cap;
    return 0;
}

/* Appends F's descriptors and labels to L, all or none. */
static int fdpass_list_append(struct fdpass_list *l, const struct fdpass_frame *f)
{
    size_t count = f->h.count, off = 0;
    if (fdpass_list_reserve(l, count) < 0)
        return -1;
    for (size_t i = 0; i < count; i++) {
        char *label = malloc((size_t)f->lens[i] + 1);
        if (!label) {
            while (i-- > 0)
                free(l->labels[l->n + i]);
            return -1;
        }
        memcpy(label, f->text + off, f->lens[i]);
        label[f->lens[i]] = '\0';
        off += f->lens[i];
        l->labels[l->n + i] = label;
        l->fds[l->n + i] = f->b.fds[i];
    }
    l->n += count;
    return 0;
}

/* Receives one frame into L: 1 after a batch, 0 after the end frame, -1 on failure. */
static int fdpass_recv_one(int sock, struct fdpass_list *l)
{
    struct fdpass_frame f = { .text = NULL };
    int rc = fdpass_read_frame(sock, l->n, &f);
    if (rc == 0 && f.h.count > 0)
        rc = fdpass_list_append(l, &f) < 0 ? -1 : 1;
    if (rc < 0) {
        int saved = errno;
        fdpass_close_all(f.b.fds, f.b.n);
        errno = saved;
    }
    free(f.text);
    return rc;
}

int fdpass_recv(int sock, int **fds, char ***labels, size_t *n)
{
    struct fdpass_list l = { .n = 0 };
    int rc;
    while ((rc = fdpass_recv_one(sock, &l)) > 0)
        ;
    if (rc < 0) {
        int saved = errno;
        fdpass_close_all(l.fds, l.n);
        fdpass_free(l.fds, l.labels, l.n);
        l = (struct fdpass_list){ .n = 0 };
        errno = saved;
    }
    *fds = l.n ? l.fds : NULL;
    *labels = l.n ? l.labels : NULL;
    *n = l.n;
    if (!l.n) {
        free(l.fds);
        free(l.labels);
    }
    return rc;
}

void fdpass_free(int *fds, char **labels, size_t n)
{
    for (size_t i = 0; labels && i < n; i++)
        free(labels[i]);
    free(labels);
    free(fds);
}

/* ---- the UNIX socket ---- */

static int fdpass_addr(const char *path, struct sockaddr_un *sa)
{
    size_t len = path ? strlen(path) : 0;
    if (len == 0)
        return fdpass_fail(EINVAL);
    if (len >= sizeof sa->sun_path)
        return fdpass_fail(ENAMETOOLONG);
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    memcpy(sa->sun_path, path, len + 1);
    return 0;
}

/* Removes a socket file at PATH; fails with EEXIST if something else is there. */
static int fdpass_unlink_stale(const char *path)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : -1;
    if (!S_ISSOCK(st.st_mode))
        return fdpass_fail(EEXIST);
    return unlink(path) < 0 && errno != ENOENT ? -1 : 0;
}

int fdpass_listen(const char *path)
{
    struct sockaddr_un sa;
    if (fdpass_addr(path, &sa) < 0 || fdpass_unlink_stale(path) < 0)
        return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    /* Linux creates the file with the socket inode's mode less the umask: never above 0600,
     * so there is no moment where another user could connect. chmod then fixes it exactly. */
    bool bound = false;
    if (fchmod(fd, 0600) == 0 && (bound = bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0) &&
        chmod(path, 0600) == 0 && listen(fd, FDPASS_BACKLOG) == 0)
        return fd;
    int saved = errno;
    if (bound)
        unlink(path);
    close(fd);
    errno = saved;
    return -1;
}

int fdpass_connect(const char *path)
{
    struct sockaddr_un sa;
    if (fdpass_addr(path, &sa) < 0)
        return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    /* An interrupted AF_UNIX connect leaves the socket unconnected: it can simply be retried. */
    while (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        if (errno != EINTR) {
            int saved = errno;
            close(fd);
            errno = saved;
            return -1;
        }
    }
    return fd;
}
