/* tls: OpenSSL contexts for TLS listeners (SNI, ALPN, tickets, OCSP, client certificates) and
 * for TLS upstreams (verification, SNI, client certificates, session reuse), and the xport that
 * carries a connection's bytes through an SSL.
 *
 * Contexts are built off the hot path (runtime_build, at start and on every reload) and are
 * read-only afterwards, so all workers share them without a lock. */
#ifndef PORTERO_TLS_TLS_H
#define PORTERO_TLS_TLS_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>

#include "conf/config.h"
#include "core/xport.h"

struct tls_server;  /* one listener's contexts: certificates by name, ALPN, tickets, OCSP, client auth; shared by all workers (read-only after build) */
struct tls_client;  /* one upstream's client context: verify, CA, SNI, client certificate */

/* Builds the contexts of listener L (L->tls.enabled). NULL with a one-line message naming the
 * file at fault in ERR ("tls: listener web: cannot load key /x/y.key: no such file"). */
struct tls_server *tls_server_build(const struct conf_listener *l, char *err, size_t cap);
void tls_server_free(struct tls_server *s);
/* A server-side SSL on accepted non-blocking socket FD (NULL on allocation failure). Caller owns it (SSL_free).
 * S must outlive the SSL's handshake (its SNI, ALPN, ticket and OCSP callbacks point into S); once the
 * handshake is done the SSL needs nothing of S. */
SSL *tls_server_ssl(struct tls_server *s, int fd);

/* Builds the client context of upstream UP (UP->tls.enabled). NULL with a message in ERR. */
struct tls_client *tls_client_build(const struct conf_upstream *up, char *err, size_t cap);
void tls_client_free(struct tls_client *c);
/* A client-side SSL on connecting socket FD for server ADDRESS ("host:port" as written in the config; the host
 * part is the SNI and verified name unless tls.sni is set; no SNI for an IP literal unless sni is set). RESUME:
 * a session from an earlier connection to the same server, or NULL (the SSL takes its own reference). */
SSL *tls_client_ssl(struct tls_client *c, int fd, const char *address, SSL_SESSION *resume);
/* The session of client SSL to resume later (pass it to tls_client_ssl; SSL_SESSION_free it), or NULL if it has
 * none worth keeping. Take it after the first response bytes were read: a TLS 1.3 ticket arrives after the
 * handshake. It is a copy, because SSL_free of a connection that did not send close_notify marks its own session
 * as not resumable (OpenSSL's "bad session" rule), which would spoil a session kept by reference. */
SSL_SESSION *tls_client_session(SSL *ssl);

/* Advances a handshake (either side). Returns 1 done, 0 in progress (*WANT_WRITE: wait for writability, else
 * readability), -1 failed with a one-line reason in ERR (e.g. "certificate verify failed: self-signed
 * certificate" — use SSL_get_verify_result / ERR_error_string_n). */
int tls_handshake(SSL *ssl, bool *want_write, char *err, size_t cap);
/* ALPN chose "h2". */
bool tls_alpn_h2(const SSL *ssl);
/* The verified client certificate's subject as an RFC 2253 string into OUT; returns its length, 0 if none. */
size_t tls_peer_subject(SSL *ssl, char *out, size_t cap);

/* xport ops over an SSL (x->ctx = SSL *, x->fd = its socket). read: loops SSL_read_ex until the buffer is full or
 * the socket would block, so "short read = drained" holds for the edge-triggered loop; returns -1/EAGAIN only when
 * nothing was read; 0 at close_notify or EOF (set SSL_OP_IGNORE_UNEXPECTED_EOF). writev: coalesces small iovecs
 * into records of up to 16 KiB (a chunk-size line must not become its own record); partial writes allowed
 * (SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER); -1/EAGAIN when nothing could be written.
 * Keep in mind OpenSSL requires a retried SSL_write to pass at least as many bytes as the one that blocked: the
 * pump always retries with the same or more pending bytes, so cap records consistently (never shrink). shutdown_wr:
 * SSL_shutdown once (close_notify) then shutdown(fd, SHUT_WR). Errors other than WANT_* -> -1 with errno EPIPE/EIO. */
extern const struct xport_ops tls_xport_ops;

#endif
