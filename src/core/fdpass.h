/* fdpass: handing open descriptors (listening sockets) to another process over a UNIX
 * stream socket with SCM_RIGHTS, each with a text label (the listener's address).
 *
 * Protocol (one machine, so integers are in host byte order):
 *   frame  = header, count label lengths, the labels' bytes (no terminators)
 *   header = uint32 magic "PFD1", uint32 count, uint32 seq
 * A batch frame has 1..FDPASS_BATCH_MAX descriptors, attached as one SCM_RIGHTS message to
 * its first byte; seq is the number of descriptors sent before it. The list ends with an
 * explicit end frame: count 0, seq the total. The receiver checks magic, counts and seq, and
 * that each frame brought exactly count descriptors; anything else is a protocol error.
 *
 * All I/O is blocking. To bound it, the caller sets SO_RCVTIMEO (and SO_SNDTIMEO) on SOCK;
 * a timeout fails with errno EAGAIN. EINTR is retried. Writes use MSG_NOSIGNAL: a closed
 * peer gives EPIPE, never SIGPIPE. */
#ifndef PORTERO_CORE_FDPASS_H
#define PORTERO_CORE_FDPASS_H

#include <stddef.h>

#define FDPASS_BATCH_MAX 64     /* descriptors per sendmsg (the kernel allows 253) */
#define FDPASS_LABEL_MAX 1024   /* bytes in one label */
#define FDPASS_TOTAL_MAX 65536  /* descriptors in one list */

/* Sends N descriptors FDS with labels LABELS[i] (NUL-terminated, at most FDPASS_LABEL_MAX
 * bytes; LABELS itself may be NULL for empty labels), in batches, then the end frame.
 * The descriptors stay open and owned by the caller (the receiver gets duplicates).
 * Returns 0, or -1 with errno: EINVAL (bad argument, label too long, N above
 * FDPASS_TOTAL_MAX), EPIPE/ECONNRESET (peer gone), EAGAIN (SO_SNDTIMEO expired), ENOMEM. */
int fdpass_send(int sock, const int *fds, const char *const *labels, size_t n);

/* Receives a list sent by fdpass_send, up to and including its end frame. On success returns
 * 0 with *N descriptors in *FDS (close-on-exec set) and their labels in *LABELS
 * (NUL-terminated); the caller owns both: it closes the descriptors it keeps or not, and
 * frees the arrays with fdpass_free. With *N == 0 both arrays are NULL.
 * Returns -1 with errno on failure, having closed every descriptor received and set *FDS,
 * *LABELS to NULL and *N to 0: ECONNRESET (peer closed before the end frame), EAGAIN
 * (SO_RCVTIMEO expired), EPROTO (malformed frame), EMSGSIZE (control data truncated,
 * MSG_CTRUNC), ENOMEM, or the error of recvmsg. */
int fdpass_recv(int sock, int **fds, char ***labels, size_t *n);

/* Frees the arrays of fdpass_recv. Does NOT close the descriptors. NULL arrays are fine. */
void fdpass_free(int *fds, char **labels, size_t n);

/* A listening UNIX stream socket at PATH (close-on-exec, blocking), the file mode 0600.
 * A socket file already at PATH is unlinked first (a stale one, or the one of the process
 * being replaced: it keeps its open listener). Any other kind of file there is left alone
 * and the call fails with EEXIST. Returns the fd or -1 (errno; ENAMETOOLONG if PATH does not
 * fit in sun_path). The caller unlinks PATH when done. */
int fdpass_listen(const char *path);

/* A blocking, close-on-exec connection to the UNIX stream socket at PATH. Returns the fd or
 * -1 (errno: ENOENT no such socket, ECONNREFUSED nobody listening, ENAMETOOLONG). */
int fdpass_connect(const char *path);

#endif
