/* libFuzzer target: the receiving side of the socket hand-over protocol (core/fdpass), fed
 * arbitrary frames through a socketpair. It must refuse malformed frames without leaking
 * memory or descriptors, and never crash. */
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "core/fdpass.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 60000) /* stay below the socket buffer: the writer must not block */
        return 0;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return 0;
    int big = 1 << 20;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    struct timeval tv = { .tv_sec = 1 };
    setsockopt(sv[1], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (size && write(sv[0], data, size) != (ssize_t)size) {
        close(sv[0]);
        close(sv[1]);
        return 0;
    }
    close(sv[0]); /* the peer ends: an incomplete list must fail, not wait */
    int *fds = NULL;
    char **labels = NULL;
    size_t n = 0;
    if (fdpass_recv(sv[1], &fds, &labels, &n) == 0) {
        for (size_t i = 0; i < n; i++)
            if (fds[i] >= 0)
                close(fds[i]);
        fdpass_free(fds, labels, n);
    }
    close(sv[1]);
    return 0;
}
