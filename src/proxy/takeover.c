#include "proxy/takeover.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "core/fdpass.h"
#include "core/log.h"

#define TAKEOVER_CONFIRM_TIMEOUT_S 30

struct takeover {
    struct loop_io io;
    struct loop *loop;
    struct worker_group *group;
    char *path;
    struct stat st;              /* of the socket file we made: a successor replaces it */
};

static void takeover_set_timeout(int fd, int seconds)
{
    struct timeval tv = { .tv_sec = seconds };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

/* Every worker's listening sockets. Workers change their lists only while installing a
 * configuration, which the control thread (our caller) is not publishing right now. */
static size_t takeover_collect(struct worker_group *g, int **fds, const char ***labels)
{
    size_t n = 0, cap = 16;
    *fds = malloc(cap * sizeof **fds);
    *labels = malloc(cap * sizeof **labels);
    for (unsigned i = 0; i < g->n_workers && *fds && *labels; i++) {
        for (struct worker_listener *l = g->workers[i].listeners; l; l = l->next) {
            if (n == cap) {
                cap *= 2;
                int *f = realloc(*fds, cap * sizeof *f);
                const char **lb = f ? realloc(*labels, cap * sizeof *lb) : NULL;
                if (f)
                    *fds = f;
                if (!lb)
                    return n;
                *labels = lb;
            }
            (*fds)[n] = l->io.fd;
            (*labels)[n++] = l->address;
        }
    }
    return n;
}

static void takeover_handle(struct takeover *t, int conn)
{
    int *fds = NULL;
    const char **labels = NULL;
    size_t n = takeover_collect(t->group, &fds, &labels);
    char ack = 0;
    takeover_set_timeout(conn, TAKEOVER_CONFIRM_TIMEOUT_S);
    if (fdpass_send(conn, fds, labels, n) < 0) {
        log_error("upgrade: sending %zu listening sockets failed: %s", n, strerror(errno));
    } else if (read(conn, &ack, 1) != 1) {
        log_warn("upgrade: the new process did not confirm; this process keeps serving");
    } else {
        log_info("upgrade: %zu listening sockets handed over; draining", n);
        kill(getpid(), SIGTERM); /* the same graceful path as an operator's SIGTERM */
    }
    free(fds);
    free(labels);
}

static void takeover_on_accept(struct loop_io *io, uint32_t events)
{
    (void)events;
    struct takeover *t = container_of(io, struct takeover, io);
    int conn = accept4(io->fd, NULL, NULL, SOCK_CLOEXEC);
    if (conn < 0)
        return;
    takeover_handle(t, conn); /* blocking, bounded by the timeouts: an upgrade is rare */
    close(conn);
}

struct takeover *takeover_serve(struct loop *loop, const char *path, struct worker_group *group)
{
    struct takeover *t = calloc(1, sizeof *t);
    if (!t || !(t->path = strdup(path)) || (t->io.fd = fdpass_listen(path)) < 0) {
        if (t)
            free(t->path);
        free(t);
        return NULL;
    }
    stat(path, &t->st);
    t->io.on_event = takeover_on_accept;
    t->loop = loop;
    t->group = group;
    loop_add_reader(loop, &t->io);
    return t;
}

void takeover_free(struct takeover *t)
{
    if (!t)
        return;
    loop_del(t->loop, &t->io);
    close(t->io.fd);
    struct stat now;
    if (stat(t->path, &now) == 0 && now.st_ino == t->st.st_ino && now.st_dev == t->st.st_dev)
        unlink(t->path); /* only our own file: after an upgrade it belongs to the new process */
    free(t->path);
    free(t);
}

int takeover_receive(const char *path, int **fds, char ***labels, size_t *n)
{
    int sock = fdpass_connect(path);
    if (sock < 0)
        return -1;
    takeover_set_timeout(sock, TAKEOVER_CONFIRM_TIMEOUT_S);
    if (fdpass_recv(sock, fds, labels, n) < 0) {
        int saved = errno;
        close(sock);
        errno = saved;
        return -1;
    }
    return sock;
}

void takeover_confirm(int sock)
{
    char ack = 1;
    if (write(sock, &ack, 1) != 1)
        log_warn("upgrade: could not confirm to the old process: %s", strerror(errno));
    close(sock);
}
