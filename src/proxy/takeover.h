/* takeover: handing every listening socket to a new binary, so an upgrade refuses no
 * connection (the kernel's accept queues are the same sockets on both sides).
 *
 * Old process: takeover_serve() listens on a UNIX socket (--upgrade-socket). A new process
 * connects, receives each worker's listening sockets labelled by address (SCM_RIGHTS, see
 * core/fdpass.h), starts serving on them and sends one byte back; the old process then drains
 * and exits as on SIGTERM. If the new process dies before confirming, the old one simply keeps
 * serving. */
#ifndef PORTERO_PROXY_TAKEOVER_H
#define PORTERO_PROXY_TAKEOVER_H

#include <stddef.h>

#include "core/loop.h"
#include "proxy/worker.h"

struct takeover;

/* Old side, on the control loop. NULL (with errno) if PATH cannot be listened on. */
struct takeover *takeover_serve(struct loop *loop, const char *path, struct worker_group *group);
void takeover_free(struct takeover *t);

/* New side: connects to PATH and receives the sockets (caller owns FDS and LABELS: free with
 * fdpass_free, close the fds it does not use). Returns the connection to confirm on, or -1. */
int takeover_receive(const char *path, int **fds, char ***labels, size_t *n);
/* New side, once serving: tells the old process to drain, and closes SOCK. */
void takeover_confirm(int sock);

#endif
