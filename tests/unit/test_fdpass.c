/* fdpass: listening sockets handed over a UNIX socket keep their identity and labels. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/fdpass.h"
#include "unit.h"

#define MAX_LISTENERS 150

/* A blocking TCP listener on 127.0.0.1 with a kernel-chosen port; its "IP:port" in LABEL. */
static int tcp_listener(char *label, size_t cap)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 16) < 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    snprintf(label, cap, "127.0.0.1:%u", ntohs(sa.sin_port));
    return fd;
}

static int local_port(int fd)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    if (getsockname(fd, (struct sockaddr *)&sa, &len) < 0 || sa.sin_family != AF_INET)
        return -1;
    return ntohs(sa.sin_port);
}

/* Connects to 127.0.0.1:PORT; the handshake completes in the listener's queue. */
static int tcp_connect(int port)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int open_fd_count(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    if (!d)
        return -1;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

static void set_rcv_timeout(int fd, long ms)
{
    struct timeval tv = { .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

/* N listeners, their labels (LABEL_BUF) and a const label array for fdpass_send. */
struct listeners {
    int fds[MAX_LISTENERS];
    char text[MAX_LISTENERS][32];
    const char *labels[MAX_LISTENERS];
    size_t n;
};

static int listeners_open(struct listeners *ls, size_t n)
{
    ls->n = 0;
    for (size_t i = 0; i < n; i++) {
        if ((ls->fds[i] = tcp_listener(ls->text[i], sizeof ls->text[i])) < 0)
            return -1;
        ls->labels[i] = ls->text[i];
        ls->n++;
    }
    return 0;
}

static void listeners_close(struct listeners *ls)
{
    for (size_t i = 0; i < ls->n; i++)
        close(ls->fds[i]);
    ls->n = 0;
}

static void close_received(int *fds, char **labels, size_t n)
{
    for (size_t i = 0; i < n; i++)
        close(fds[i]);
    fdpass_free(fds, labels, n);
}

/* Checks that the received fds are the sent sockets (same port, accept works, labels kept,
 * close-on-exec), accepting from the received fd after the original is closed. */
static void check_same_sockets(int *unit_failed, struct listeners *ls, int *fds, char **labels, size_t n)
{
    CHECK_EQ_INT(n, ls->n);
    for (size_t i = 0; i < n && i < ls->n; i++) {
        int port = local_port(ls->fds[i]);
        CHECK(port > 0);
        CHECK_EQ_INT(local_port(fds[i]), port);
        CHECK(strcmp(labels[i], ls->labels[i]) == 0);
        CHECK(fcntl(fds[i], F_GETFD) & FD_CLOEXEC);
        close(ls->fds[i]); /* the received descriptor alone now holds the socket */
        ls->fds[i] = -1;
        int c = tcp_connect(port);
        CHECK(c >= 0);
        int a = accept(fds[i], NULL, NULL);
        CHECK(a >= 0);
        if (a >= 0)
            close(a);
        if (c >= 0)
            close(c);
    }
    for (size_t i = 0; i < ls->n; i++)
        if (ls->fds[i] >= 0)
            close(ls->fds[i]);
    ls->n = 0;
}

UNIT_TEST(passes_three_listeners_over_a_socketpair)
{
    struct listeners ls;
    int sv[2];
    CHECK(listeners_open(&ls, 3) == 0);
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    set_rcv_timeout(sv[1], 2000);
    CHECK(fdpass_send(sv[0], ls.fds, ls.labels, ls.n) == 0);
    int *fds = NULL;
    char **labels = NULL;
    size_t n = 0;
    CHECK(fdpass_recv(sv[1], &fds, &labels, &n) == 0);
    check_same_sockets(unit_failed, &ls, fds, labels, n);
    close_received(fds, labels, n);
    close(sv[0]);
    close(sv[1]);
}

UNIT_TEST(passes_three_listeners_over_a_path)
{
    char path[64];
    snprintf(path, sizeof path, "/tmp/portero-fdpass-%d.sock", (int)getpid());
    struct listeners ls;
    CHECK(listeners_open(&ls, 3) == 0);
    int lfd = fdpass_listen(path);
    CHECK(lfd >= 0);
    struct stat st;
    CHECK(stat(path, &st) == 0 && S_ISSOCK(st.st_mode) && (st.st_mode & 0777) == 0600);
    CHECK(fcntl(lfd, F_GETFD) & FD_CLOEXEC);
    int c = fdpass_connect(path); /* queued in the backlog: no thread needed */
    CHECK(c >= 0);
    int s = accept(lfd, NULL, NULL);
    CHECK(s >= 0);
    set_rcv_timeout(c, 2000);
    CHECK(fdpass_send(s, ls.fds, ls.labels, ls.n) == 0);
    int *fds = NULL;
    char **labels = NULL;
    size_t n = 0;
    CHECK(fdpass_recv(c, &fds, &labels, &n) == 0);
    check_same_sockets(unit_failed, &ls, fds, labels, n);
    close_received(fds, labels, n);
    close(s);
    close(c);
    close(lfd);
    /* A second listen replaces the (now stale) socket file. */
    lfd = fdpass_listen(path);
    CHECK(lfd >= 0);
    close(lfd);
    unlink(path);
}

UNIT_TEST(passes_150_listeners_in_batches)
{
    static struct listeners ls;
    int sv[2];
    int before = open_fd_count();
    CHECK(listeners_open(&ls, MAX_LISTENERS) == 0);
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    set_rcv_timeout(sv[1], 2000);
    CHECK(fdpass_send(sv[0], ls.fds, ls.labels, ls.n) == 0);
    int *fds = NULL;
    char **labels = NULL;
    size_t n = 0;
    CHECK(fdpass_recv(sv[1], &fds, &labels, &n) == 0);
    check_same_sockets(unit_failed, &ls, fds, labels, n);
    close_received(fds, labels, n);
    close(sv[0]);
    close(sv[1]);
    CHECK_EQ_INT(open_fd_count(), before);
}

/* The wire: frames of at most 64 descriptors, each with its SCM_RIGHTS, then an end frame. */
UNIT_TEST(splits_into_frames_of_at_most_64)
{
    static struct listeners ls;
    int sv[2];
    CHECK(listeners_open(&ls, 150) == 0);
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    CHECK(fdpass_send(sv[0], ls.fds, ls.labels, ls.n) == 0);
    uint32_t h[3];
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(253 * sizeof(int))];
    } ctl;
    struct iovec iov = { .iov_base = h, .iov_len = sizeof h };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                          .msg_controllen = sizeof ctl.buf };
    CHECK(recvmsg(sv[1], &msg, MSG_CMSG_CLOEXEC) == (ssize_t)sizeof h);
    CHECK_EQ_INT(h[1], 64); /* count */
    CHECK_EQ_INT(h[2], 0);  /* seq */
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    CHECK(c && c->cmsg_type == SCM_RIGHTS);
    if (c) {
        size_t nfd = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        CHECK_EQ_INT(nfd, 64);
        for (size_t i = 0; i < nfd; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + i * sizeof fd, sizeof fd);
            close(fd);
        }
    }
    close(sv[0]);
    close(sv[1]); /* the unread frames' descriptors are released with the socket */
    listeners_close(&ls);
}

UNIT_TEST(empty_list)
{
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    CHECK(fdpass_send(sv[0], NULL, NULL, 0) == 0);
    int *fds = (int *)1;
    char **labels = (char **)1;
    size_t n = 99;
    CHECK(fdpass_recv(sv[1], &fds, &labels, &n) == 0);
    CHECK(fds == NULL && labels == NULL && n == 0);
    fdpass_free(NULL, NULL, 0);
    close(sv[0]);
    close(sv[1]);
}

UNIT_TEST(null_labels_are_empty)
{
    struct listeners ls;
    int sv[2];
    CHECK(listeners_open(&ls, 2) == 0);
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    CHECK(fdpass_send(sv[0], ls.fds, NULL, ls.n) == 0);
    int *fds = NULL;
    char **labels = NULL;
    size_t n = 0;
    CHECK(fdpass_recv(sv[1], &fds, &labels, &n) == 0);
    CHECK_EQ_INT(n, 2);
    for (size_t i = 0; i < n; i++)
        CHECK(labels[i][0] == '\0');
    close_received(fds, labels, n);
    close(sv[0]);
    close(sv[1]);
    listeners_close(&ls);
}

UNIT_TEST(rejects_bad_arguments)
{
    int sv[2];
    char big[FDPASS_LABEL_MAX + 2];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    const char *labels[1] = { big };
    int fd = 0;
    int bad = -1;
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    errno = 0;
    CHECK(fdpass_send(sv[0], &fd, labels, 1) == -1 && errno == EINVAL);
    errno = 0;
    CHECK(fdpass_send(sv[0], &bad, NULL, 1) == -1 && errno == EINVAL);
    errno = 0;
    CHECK(fdpass_send(sv[0], NULL, NULL, 1) == -1 && errno == EINVAL);
    close(sv[0]);
    close(sv[1]);
}

/* A batch frame with its descriptors, then the peer goes away: -1, nothing leaked. */
UNIT_TEST(peer_closing_mid_transfer_fails_and_closes_fds)
{
    struct listeners ls;
    int sv[2];
    CHECK(listeners_open(&ls, 3) == 0);
    int before = open_fd_count();
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    uint32_t h[3] = { 0x31444650u, 3, 0 };
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(3 * sizeof(int))];
    } ctl = { .buf = { 0 } };
    struct iovec iov = { .iov_base = h, .iov_len = sizeof h };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                          .msg_controllen = sizeof ctl.buf };
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(3 * sizeof(int));
    memcpy(CMSG_DATA(c), ls.fds, 3 * sizeof(int));
    CHECK(sendmsg(sv[0], &msg, 0) == (ssize_t)sizeof h); /* header only: lengths never come */
    close(sv[0]);
    int *fds = NULL;
    char **labels = NULL;
    size_t n = 7;
    errno = 0;
    CHECK(fdpass_recv(sv[1], &fds, &labels, &n) == -1);
    CHECK_EQ_INT(errno, ECONNRESET);
    CHECK(fds == NULL && labels == NULL && n == 0);
    close(sv[1]);
    CHECK_EQ_INT(open_fd_count(), before);
    listeners_close(&ls);
}

/* Whole batches arrived but no end frame: the received descriptors are closed. */
UNIT_TEST(missing_end_frame_fails_and_closes_fds)
{
    struct listeners ls;
    int sv[2];
    CHECK(listeners_open(&ls, 1) == 0);
    int before = open_fd_count();
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    int *fds = NULL;
    char **labels = NULL;
    size_t n = 0;
    /* A complete first frame by hand, then close without the end frame. */
    uint32_t h[3] = { 0x31444650u, 1, 0 }, len = (uint32_t)strlen(ls.labels[0]);
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int))];
    } ctl = { .buf = { 0 } };
    char frame[sizeof h + sizeof len + 32];
    memcpy(frame, h, sizeof h);
    memcpy(frame + sizeof h, &len, sizeof len);
    memcpy(frame + sizeof h + sizeof len, ls.labels[0], len);
    struct iovec iov = { .iov_base = frame, .iov_len = sizeof h + sizeof len + len };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                          .msg_controllen = sizeof ctl.buf };
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &ls.fds[0], sizeof(int));
    CHECK(sendmsg(sv[0], &msg, 0) == (ssize_t)iov.iov_len);
    close(sv[0]);
    errno = 0;
    CHECK(fdpass_recv(sv[1], &fds, &labels, &n) == -1);
    CHECK_EQ_INT(errno, ECONNRESET);
    close(sv[1]);
    CHECK_EQ_INT(open_fd_count(), before);
    listeners_close(&ls);
}

/* More descriptors in one message than a frame may carry: MSG_CTRUNC, an error, no leak. */
UNIT_TEST(truncated_control_data_fails)
{
    static struct listeners ls;
    int sv[2];
    CHECK(listeners_open(&ls, 70) == 0);
    int before = open_fd_count();
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    uint32_t h[3] = { 0x31444650u, 70, 0 };
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(70 * sizeof(int))];
    } ctl = { .buf = { 0 } };
    struct iovec iov = { .iov_base = h, .iov_len = sizeof h };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                          .msg_controllen = sizeof ctl.buf };
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(70 * sizeof(int));
    memcpy(CMSG_DATA(c), ls.fds, 70 * sizeof(int));
    CHECK(sendmsg(sv[0], &msg, 0) == (ssize_t)sizeof h);
    int *fds = NULL;
    char **labels = NULL;
    size_t n = 0;
    errno = 0;
    CHECK(fdpass_recv(sv[1], &fds, &labels, &n) == -1);
    CHECK_EQ_INT(errno, EMSGSIZE);
    close(sv[0]);
    close(sv[1]);
    CHECK_EQ_INT(open_fd_count(), before);
    listeners_close(&ls);
}

UNIT_TEST(bad_magic_is_a_protocol_error)
{
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    uint32_t h[3] = { 0xdeadbeefu, 0, 0 };
    CHECK(write(sv[0], h, sizeof h) == (ssize_t)sizeof h);
    int *fds = NULL;
    char **labels = NULL;
    size_t n = 0;
    errno = 0;
    CHECK(fdpass_recv(sv[1], &fds, &labels, &n) == -1);
    CHECK_EQ_INT(errno, EPROTO);
    close(sv[0]);
    close(sv[1]);
}

/* A frame whose descriptor count does not match its labels is refused. */
UNIT_TEST(fd_count_mismatch_is_a_protocol_error)
{
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    uint32_t frame[4] = { 0x31444650u, 1, 0, 0 }; /* one empty label, no descriptor */
    CHECK(write(sv[0], frame, sizeof frame) == (ssize_t)sizeof frame);
    int *fds = NULL;
    char **labels = NULL;
    size_t n = 0;
    errno = 0;
    CHECK(fdpass_recv(sv[1], &fds, &labels, &n) == -1);
    CHECK_EQ_INT(errno, EPROTO);
    close(sv[0]);
    close(sv[1]);
}

UNIT_TEST(receive_times_out_with_eagain)
{
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    set_rcv_timeout(sv[1], 50);
    int *fds = NULL;
    char **labels = NULL;
    size_t n = 0;
    errno = 0;
    CHECK(fdpass_recv(sv[1], &fds, &labels, &n) == -1);
    CHECK(errno == EAGAIN || errno == EWOULDBLOCK);
    close(sv[0]);
    close(sv[1]);
}

UNIT_TEST(send_to_a_closed_peer_fails_with_epipe)
{
    struct listeners ls;
    int sv[2];
    CHECK(listeners_open(&ls, 3) == 0);
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    close(sv[1]);
    errno = 0;
    CHECK(fdpass_send(sv[0], ls.fds, ls.labels, ls.n) == -1); /* no SIGPIPE */
    CHECK_EQ_INT(errno, EPIPE);
    close(sv[0]);
    listeners_close(&ls);
}

UNIT_TEST(listen_and_connect_errors)
{
    char path[64];
    snprintf(path, sizeof path, "/tmp/portero-fdpass-%d.file", (int)getpid());
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    CHECK(fd >= 0);
    close(fd);
    errno = 0;
    CHECK(fdpass_listen(path) == -1 && errno == EEXIST); /* a regular file is never removed */
    CHECK(access(path, F_OK) == 0);
    unlink(path);
    errno = 0;
    CHECK(fdpass_connect(path) == -1 && errno == ENOENT);
    char longpath[200];
    memset(longpath, 'x', sizeof longpath - 1);
    longpath[0] = '/';
    longpath[sizeof longpath - 1] = '\0';
    errno = 0;
    CHECK(fdpass_listen(longpath) == -1 && errno == ENAMETOOLONG);
    errno = 0;
    CHECK(fdpass_connect(longpath) == -1 && errno == ENAMETOOLONG);
    /* A socket file nobody listens on: refused. */
    snprintf(path, sizeof path, "/tmp/portero-fdpass-%d.dead", (int)getpid());
    int lfd = fdpass_listen(path);
    CHECK(lfd >= 0);
    close(lfd);
    errno = 0;
    CHECK(fdpass_connect(path) == -1 && errno == ECONNREFUSED);
    unlink(path);
}

UNIT_MAIN()
