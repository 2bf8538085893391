#include "core/sock.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int sock_listen(const struct sockaddr *addr, socklen_t len, int backlog)
{
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (addr->sa_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, addr, len) < 0 || listen(fd, backlog) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

int sock_connect(const struct sockaddr *addr, socklen_t len)
{
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, addr, len) < 0 && errno != EINPROGRESS) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

int sock_error(int fd)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        return errno;
    return err;
}

size_t sock_format_ip(const struct sockaddr *addr, char *out, size_t cap)
{
    const void *src = addr->sa_family == AF_INET6
        ? (const void *)&((const struct sockaddr_in6 *)addr)->sin6_addr
        : (const void *)&((const struct sockaddr_in *)addr)->sin_addr;
    if (!inet_ntop(addr->sa_family, src, out, (socklen_t)cap))
        snprintf(out, cap, "-");
    return strlen(out);
}

char *sock_format_addr(const struct sockaddr *addr, char *out, size_t cap)
{
    char ip[INET6_ADDRSTRLEN];
    sock_format_ip(addr, ip, sizeof ip);
    unsigned port = addr->sa_family == AF_INET6
        ? ntohs(((const struct sockaddr_in6 *)addr)->sin6_port)
        : ntohs(((const struct sockaddr_in *)addr)->sin_port);
    snprintf(out, cap, addr->sa_family == AF_INET6 ? "[%s]:%u" : "%s:%u", ip, port);
    return out;
}
