/* Temporary stubs so that the tree links while the TLS module is written. */
#include <errno.h>
#include <stdio.h>

#include "tls/tls.h"

struct tls_server *tls_server_build(const struct conf_listener *l, char *err, size_t cap)
{
    snprintf(err, cap, "tls: listener %s: TLS not built yet", l->name);
    return NULL;
}
void tls_server_free(struct tls_server *s) { (void)s; }
SSL *tls_server_ssl(struct tls_server *s, int fd) { (void)s; (void)fd; return NULL; }
struct tls_client *tls_client_build(const struct conf_upstream *up, char *err, size_t cap)
{
    snprintf(err, cap, "tls: upstream %s: TLS not built yet", up->name);
    return NULL;
}
void tls_client_free(struct tls_client *c) { (void)c; }
SSL *tls_client_ssl(struct tls_client *c, int fd, const char *address, SSL_SESSION *resume)
{
    (void)c; (void)fd; (void)address; (void)resume;
    return NULL;
}
int tls_handshake(SSL *ssl, bool *want_write, char *err, size_t cap)
{
    (void)ssl; *want_write = false;
    snprintf(err, cap, "not built");
    return -1;
}
bool tls_alpn_h2(const SSL *ssl) { (void)ssl; return false; }
size_t tls_peer_subject(SSL *ssl, char *out, size_t cap) { (void)ssl; (void)out; (void)cap; return 0; }
static ssize_t stub_read(struct xport *x, void *b, size_t n) { (void)x; (void)b; (void)n; errno = EIO; return -1; }
static ssize_t stub_writev(struct xport *x, const struct iovec *v, int n) { (void)x; (void)v; (void)n; errno = EIO; return -1; }
static int stub_shut(struct xport *x) { (void)x; return -1; }
const struct xport_ops tls_xport_ops = { stub_read, stub_writev, stub_shut };
