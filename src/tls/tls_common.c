/* tls_common: what servers and clients share — context settings, loading a certificate and
 * its key with messages that name the file, the handshake step, ALPN and peer subject. */
#include <errno.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <string.h>

#include "tls/tls.h"
#include "tls/tls_priv.h"

int tls_load_error(char *err, size_t cap, const char *who, const char *what, const char *path)
{
    char why[256] = "";
    FILE *f = fopen(path, "r");
    unsigned long e = ERR_peek_last_error();
    if (!f)
        snprintf(why, sizeof why, "%s", strerror(errno));
    else if (e && ERR_reason_error_string(e))
        snprintf(why, sizeof why, "%s", ERR_reason_error_string(e));
    else
        snprintf(why, sizeof why, "not usable");
    if (f)
        fclose(f);
    ERR_clear_error();
    snprintf(err, cap, "%s: cannot load %s %s: %s", who, what, path, why);
    return -1;
}

void tls_ctx_common(SSL_CTX *ctx, int min_version)
{
    SSL_CTX_set_min_proto_version(ctx, min_version);
    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
    /* No compression (CRIME), no renegotiation (RFC 5746 aside, a DoS lever); an EOF without
     * close_notify is an ordinary end for HTTP, whose messages carry their own framing. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_IGNORE_UNEXPECTED_EOF);
    /* Idle connections give their record buffers back (DESIGN principle 5). */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    /* One recv for as many records as fit, rather than two per record (header, then body). The
     * bytes read ahead are the SSL's to hand out: after a handshake the caller reads at once, and
     * tls_xport_read only stops short once SSL_read itself wants more from the socket. */
    SSL_CTX_set_read_ahead(ctx, 1);
}

int tls_ctx_use_pair(SSL_CTX *ctx, const char *who, const char *cert, const char *key, char *err,
                     size_t cap)
{
    ERR_clear_error();
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1)
        return tls_load_error(err, cap, who, "certificate", cert);
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
        return tls_load_error(err, cap, who, "key", key);
    if (SSL_CTX_check_private_key(ctx) != 1) {
        ERR_clear_error();
        snprintf(err, cap, "%s: cannot load key %s: it does not match certificate %s", who, key,
                 cert);
        return -1;
    }
    return 0;
}

/* The one-line reason of a failed handshake. */
static void tls_handshake_reason(SSL *ssl, int e, char *err, size_t cap)
{
    unsigned long code = ERR_peek_last_error();
    long vr = SSL_get_verify_result(ssl);
    if (vr != X509_V_OK && (SSL_get_verify_mode(ssl) & SSL_VERIFY_PEER))
        snprintf(err, cap, "certificate verify failed: %s", X509_verify_cert_error_string(vr));
    else if (code && ERR_reason_error_string(code))
        snprintf(err, cap, "%s", ERR_reason_error_string(code));
    else if (e == SSL_ERROR_SYSCALL && errno)
        snprintf(err, cap, "%s", strerror(errno));
    else if (e == SSL_ERROR_SYSCALL || e == SSL_ERROR_ZERO_RETURN)
        snprintf(err, cap, "connection closed during the handshake");
    else
        snprintf(err, cap, "handshake failed (SSL error %d)", e);
    ERR_clear_error();
}

int tls_handshake(SSL *ssl, bool *want_write, char *err, size_t cap)
{
    *want_write = false;
    ERR_clear_error();
    errno = 0;
    int r = SSL_do_handshake(ssl);
    if (r == 1)
        return 1;
    int e = SSL_get_error(ssl, r);
    if (e == SSL_ERROR_WANT_READ)
        return 0;
    if (e == SSL_ERROR_WANT_WRITE) {
        *want_write = true;
        return 0;
    }
    tls_handshake_reason(ssl, e, err, cap);
    return -1;
}

bool tls_alpn_h2(const SSL *ssl)
{
    const unsigned char *p = NULL;
    unsigned int len = 0;
    SSL_get0_alpn_selected(ssl, &p, &len);
    return len == 2 && memcmp(p, "h2", 2) == 0;
}

size_t tls_peer_subject(SSL *ssl, char *out, size_t cap)
{
    X509 *cert = SSL_get0_peer_certificate(ssl);
    if (!cert || SSL_get_verify_result(ssl) != X509_V_OK || cap == 0)
        return 0;
    BIO *mem = BIO_new(BIO_s_mem());
    char *data = NULL;
    size_t n = 0;
    /* RFC 2253 form, with control and non-ASCII bytes escaped: it goes into a header. */
    if (mem && X509_NAME_print_ex(mem, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253) >= 0) {
        long len = BIO_get_mem_data(mem, &data);
        if (len > 0 && (size_t)len < cap) {
            n = (size_t)len;
            for (size_t i = 0; i < n; i++)
                out[i] = (unsigned char)data[i] < 0x20 || data[i] == 0x7f ? '?' : data[i];
            out[n] = '\0';
        }
    }
    BIO_free(mem);
    ERR_clear_error();
    return n;
}
