/* tls_client: the client context of one TLS upstream — verification against a CA file or the
 * system store, the name checked (RFC 9110 section 4.3.4: the reference identity is the host
 * we connect to, or tls.sni), an optional client certificate (mTLS), and session resumption
 * driven by the caller (it keeps SSL_get1_session of a finished connection and hands it to the
 * next one). */
#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tls/tls.h"
#include "tls/tls_priv.h"

struct tls_client {
    SSL_CTX *ctx;
    char *sni;                /* tls.sni, or NULL: the host of the address */
    bool verify;
};

static int tls_client_verify(SSL_CTX *ctx, const struct conf_upstream_tls *t, const char *who,
                             char *err, size_t cap)
{
    if (!t->verify) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
        return 0;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    ERR_clear_error();
    if (t->ca && SSL_CTX_load_verify_file(ctx, t->ca) != 1)
        return tls_load_error(err, cap, who, "ca", t->ca);
    if (!t->ca && SSL_CTX_set_default_verify_paths(ctx) != 1) {
        snprintf(err, cap, "%s: cannot load the system CA store", who);
        ERR_clear_error();
        return -1;
    }
    return 0;
}

static int tls_client_setup(struct tls_client *c, const struct conf_upstream *up, const char *who,
                            char *err, size_t cap)
{
    const struct conf_upstream_tls *t = &up->tls;
    /* RFC 7301 section 3.1: offer exactly the protocol we will speak */
    static const unsigned char h2[] = "\x02h2", h1[] = "\x08http/1.1";
    tls_ctx_common(c->ctx, TLS1_2_VERSION);
    /* The caller keeps sessions (SSL_get1_session) for the server it talks to. */
    SSL_CTX_set_session_cache_mode(c->ctx,
                                   SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    if (up->protocol == UPSTREAM_HTTP2 ? SSL_CTX_set_alpn_protos(c->ctx, h2, sizeof h2 - 1)
                                       : SSL_CTX_set_alpn_protos(c->ctx, h1, sizeof h1 - 1)) {
        snprintf(err, cap, "%s: cannot set ALPN", who);
        return -1;
    }
    if (tls_client_verify(c->ctx, t, who, err, cap) < 0)
        return -1;
    if (t->client_cert &&
        tls_ctx_use_pair(c->ctx, who, t->client_cert, t->client_key, err, cap) < 0)
        return -1;
    if (t->sni && !(c->sni = strdup(t->sni))) {
        snprintf(err, cap, "%s: out of memory", who);
        return -1;
    }
    return 0;
}

struct tls_client *tls_client_build(const struct conf_upstream *up, char *err, size_t cap)
{
    char who[96];
    struct tls_client *c = calloc(1, sizeof *c);
    snprintf(who, sizeof who, "tls: upstream %s", up->name);
    if (c)
        c->ctx = SSL_CTX_new(TLS_client_method());
    if (!c || !c->ctx) {
        free(c);
        ERR_clear_error();
        snprintf(err, cap, "%s: cannot create a TLS context", who);
        return NULL;
    }
    c->verify = up->tls.verify;
    if (tls_client_setup(c, up, who, err, cap) < 0) {
        tls_client_free(c);
        return NULL;
    }
    return c;
}

void tls_client_free(struct tls_client *c)
{
    if (!c)
        return;
    SSL_CTX_free(c->ctx);
    free(c->sni);
    free(c);
}

/* The host part of "host:port", "[v6]:port" or "v4:port" into OUT (brackets dropped). */
static bool tls_client_host(const char *address, char *out, size_t cap)
{
    const char *start = address, *end;
    if (*address == '[') {
        start = address + 1;
        end = strchr(start, ']');
    } else {
        end = strrchr(address, ':');
    }
    if (!end)
        end = address + strlen(address);
    size_t n = (size_t)(end - start);
    if (n == 0 || n >= cap)
        return false;
    memcpy(out, start, n);
    out[n] = '\0';
    return true;
}

static bool tls_client_is_ip(const char *host)
{
    unsigned char buf[16];
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

/* SNI and the identity to verify: tls.sni, else the address's host name; an IP literal gets no
 * SNI (RFC 6066 section 3 forbids it) and is checked against the certificate's IP entries. */
static int tls_client_name(struct tls_client *c, SSL *ssl, const char *address)
{
    char host[256];
    const char *name = c->sni;
    if (!name && address && tls_client_host(address, host, sizeof host))
        name = host;
    if (!name)
        return 0;
    if (!c->sni && tls_client_is_ip(name))
        return !c->verify || X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name) == 1 ? 0 : -1;
    if (SSL_set_tlsext_host_name(ssl, name) != 1)
        return -1;
    return !c->verify || SSL_set1_host(ssl, name) == 1 ? 0 : -1;
}

/* The connection resumes a copy of RESUME: SSL_free without close_notify would mark the session
 * it used not resumable, and RESUME belongs to the caller. */
static int tls_client_resume(SSL *ssl, SSL_SESSION *resume)
{
    SSL_SESSION *copy = SSL_SESSION_dup(resume);
    int ok = copy && SSL_set_session(ssl, copy) == 1;
    SSL_SESSION_free(copy); /* the SSL holds its own reference */
    return ok ? 0 : -1;
}

SSL *tls_client_ssl(struct tls_client *c, int fd, const char *address, SSL_SESSION *resume)
{
    SSL *ssl = SSL_new(c->ctx);
    if (!ssl || SSL_set_fd(ssl, fd) != 1 || tls_client_name(c, ssl, address) < 0 ||
        (resume && tls_client_resume(ssl, resume) < 0)) {
        SSL_free(ssl);
        ERR_clear_error();
        return NULL;
    }
    SSL_set_connect_state(ssl);
    return ssl;
}

SSL_SESSION *tls_client_session(SSL *ssl)
{
    const SSL_SESSION *sess = SSL_get0_session(ssl);
    if (!sess || !SSL_SESSION_is_resumable(sess))
        return NULL;
    return SSL_SESSION_dup(sess);
}
