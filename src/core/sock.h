/* sock: socket set-up helpers (non-blocking listeners with SO_REUSEPORT, outgoing connects). */
#ifndef PORTERO_CORE_SOCK_H
#define PORTERO_CORE_SOCK_H

#include <stddef.h>
#include <sys/socket.h>

/* A non-blocking listening socket with SO_REUSEADDR and SO_REUSEPORT. Returns fd or -1 (errno). */
int sock_listen(const struct sockaddr *addr, socklen_t len, int backlog);
/* Starts a non-blocking connect; returns fd (connection may still be in progress) or -1. */
int sock_connect(const struct sockaddr *addr, socklen_t len);
/* Pending error of a socket (SO_ERROR), 0 if none. */
int sock_error(int fd);
/* "1.2.3.4:80" or "[::1]:80" into OUT; returns OUT. */
char *sock_format_addr(const struct sockaddr *addr, char *out, size_t cap);
/* The IP alone ("1.2.3.4", "::1") into OUT; returns length. */
size_t sock_format_ip(const struct sockaddr *addr, char *out, size_t cap);

#endif
