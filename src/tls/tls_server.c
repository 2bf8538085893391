/* tls_server: the contexts of one TLS listener.
 *
 * Certificates answering for the same set of names share one SSL_CTX, so an RSA and an ECDSA
 * certificate for a name sit side by side and OpenSSL picks by the client's signature
 * algorithms. The SNI callback moves a handshake to the context of the name asked for (exact
 * name first, then a one-label wildcard), else it stays on the first certificate's context,
 * the default. Every context carries the same settings and callbacks, so nothing depends on
 * which one a handshake ends on. */
#include <openssl/err.h>
#include <openssl/ocsp.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tls/tls.h"
#include "tls/tls_priv.h"

/* TLS 1.2: forward secrecy and AEAD only (no RC4, 3DES, CBC, SHA-1 MACs, export or DHE-RSA). */
#define TLS_SERVER_CIPHERS                                                                   \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                              \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                              \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define TLS_SERVER_GROUPS "X25519:P-256:P-384"
#define TLS_SERVER_MAX_LIFETIME_S 604800 /* RFC 8446 section 4.6.1: tickets live 7 days at most */
#define TLS_OCSP_MAX_BYTES (1u << 20)

struct tls_staple {
    X509 *leaf;              /* the certificate the response vouches for (a reference) */
    unsigned char *der;      /* the DER OCSP response, owned */
    size_t len;
};

/* One context: the certificates of one name set, with their OCSP responses. */
struct tls_sctx {
    SSL_CTX *ctx;
    struct tls_names names;
    struct tls_staple *staples;
    size_t n_staples;
};

struct tls_server {
    char who[96];             /* "tls: listener NAME", for messages */
    struct tls_sctx *ctxs;    /* [0]: the default; room for one per certificate (never moves,
                                 the OCSP callback argument points into it) */
    size_t n_ctxs;
    unsigned char alpn[16];   /* offered protocols in wire format, server preference */
    unsigned int alpn_len;    /* 0: no ALPN */
    uint64_t rotation_ms;     /* ticket key rotation */
};

static int tls_server_ex_index = -1;
static pthread_once_t tls_server_ex_once = PTHREAD_ONCE_INIT;

static void tls_server_ex_init(void)
{
    tls_server_ex_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

/* ---------------------------------------------------------------------------------------
 * Callbacks (run inside handshakes, on workers; they only read the server) */

/* Lower-case copy of the SNI name without a trailing dot; false if it cannot be a host name. */
static bool tls_server_sni_name(const char *in, char out[256])
{
    size_t n = strlen(in);
    if (n && in[n - 1] == '.')
        n--;
    if (n == 0 || n > 253)
        return false;
    for (size_t i = 0; i < n; i++)
        out[i] = (char)(in[i] >= 'A' && in[i] <= 'Z' ? in[i] + 32 : in[i]);
    out[n] = '\0';
    return true;
}

static struct tls_sctx *tls_server_pick(struct tls_server *s, const char *servername)
{
    char name[256];
    if (!servername || !tls_server_sni_name(servername, name))
        return &s->ctxs[0];
    for (size_t i = 0; i < s->n_ctxs; i++)
        if (tls_names_match(&s->ctxs[i].names, name, true))
            return &s->ctxs[i];
    for (size_t i = 0; i < s->n_ctxs; i++)
        if (tls_names_match(&s->ctxs[i].names, name, false))
            return &s->ctxs[i];
    return &s->ctxs[0];
}

/* RFC 6066 section 3: an unknown name gets the default certificate, not an alert. */
static int tls_server_sni_cb(SSL *ssl, int *alert, void *arg)
{
    (void)alert;
    struct tls_sctx *g = tls_server_pick(arg, SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name));
    if (g->ctx != SSL_get_SSL_CTX(ssl))
        SSL_set_SSL_CTX(ssl, g->ctx);
    return SSL_TLSEXT_ERR_OK;
}

/* RFC 7301 section 3.2: our preference order; no common protocol -> no ALPN (HTTP/1.1). */
static int tls_server_alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                              const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    struct tls_server *s = arg;
    unsigned char *picked = NULL;
    if (SSL_select_next_proto(&picked, outlen, s->alpn, s->alpn_len, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = picked;
    return SSL_TLSEXT_ERR_OK;
}

/* A TLS 1.3 resumption always gets a fresh ticket: clients use each ticket once (RFC 8446
 * appendix C.4), and OpenSSL sends none on resumption unless asked to renew. */
static int tls_server_ticket_cb(SSL *ssl, unsigned char *name, unsigned char *iv,
                                EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
    const struct tls_server *s = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), tls_server_ex_index);
    int rc = s ? tls_tickets_crypt(name, iv, cctx, hctx, enc, s->rotation_ms) : -1;
    if (rc == 1 && !enc && SSL_version(ssl) == TLS1_3_VERSION)
        rc = 2;
    return rc;
}

/* Called only when the client asked for a status (RFC 6066 section 8); staples the response
 * of the certificate chosen for this handshake, if there is one. */
static int tls_server_status_cb(SSL *ssl, void *arg)
{
    const struct tls_sctx *g = arg;
    X509 *leaf = SSL_get_certificate(ssl);
    for (size_t i = 0; leaf && i < g->n_staples; i++) {
        if (X509_cmp(leaf, g->staples[i].leaf) != 0)
            continue;
        unsigned char *copy = OPENSSL_malloc(g->staples[i].len);
        if (!copy)
            return SSL_TLSEXT_ERR_NOACK;
        memcpy(copy, g->staples[i].der, g->staples[i].len);
        SSL_set_tlsext_status_ocsp_resp(ssl, copy, (long)g->staples[i].len); /* takes COPY */
        return SSL_TLSEXT_ERR_OK;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

/* ---------------------------------------------------------------------------------------
 * Building */

/* Tickets of one listener resume only there (other listeners may verify clients differently);
 * a reload of the same listener keeps them. */
static int tls_server_sid_ctx(SSL_CTX *ctx, const struct conf_listener *l)
{
    unsigned char md[32];
    unsigned int len = 0;
    char *text = NULL;
    const struct conf_listener_tls *t = &l->tls;
    if (asprintf(&text, "portero|%s|%d|%s", l->name, (int)t->client_auth,
                 t->client_ca ? t->client_ca : "") < 0)
        return -1;
    int ok = EVP_Digest(text, strlen(text), md, &len, EVP_sha256(), NULL) == 1 &&
             SSL_CTX_set_session_id_context(ctx, md, len) == 1;
    free(text);
    return ok ? 0 : -1;
}

static int tls_server_client_auth(struct tls_server *s, SSL_CTX *ctx,
                                  const struct conf_listener_tls *t, char *err, size_t cap)
{
    if (t->client_auth == TLS_CLIENT_AUTH_OFF)
        return 0;
    int mode = SSL_VERIFY_PEER;
    if (t->client_auth == TLS_CLIENT_AUTH_REQUIRED)
        mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    ERR_clear_error();
    if (SSL_CTX_load_verify_file(ctx, t->client_ca) != 1)
        return tls_load_error(err, cap, s->who, "client_auth ca", t->client_ca);
    STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(t->client_ca);
    if (!names)
        return tls_load_error(err, cap, s->who, "client_auth ca", t->client_ca);
    SSL_CTX_set_client_CA_list(ctx, names); /* takes NAMES */
    SSL_CTX_set_verify(ctx, mode, NULL);
    return 0;
}

static int tls_server_ciphers(struct tls_server *s, SSL_CTX *ctx, const struct conf_listener_tls *t,
                              char *err, size_t cap)
{
    const char *list = t->ciphers ? t->ciphers : TLS_SERVER_CIPHERS;
    int ok = SSL_CTX_set_cipher_list(ctx, list) == 1;
    if (!ok)
        snprintf(err, cap, "%s: invalid ciphers \"%s\": no cipher OpenSSL knows", s->who, list);
    else if (t->ciphersuites && SSL_CTX_set_ciphersuites(ctx, t->ciphersuites) != 1) {
        snprintf(err, cap, "%s: invalid ciphersuites \"%s\"", s->who, t->ciphersuites);
        ok = 0;
    } else if (SSL_CTX_set1_groups_list(ctx, TLS_SERVER_GROUPS) != 1) {
        snprintf(err, cap, "%s: cannot set key exchange groups", s->who);
        ok = 0;
    }
    ERR_clear_error();
    return ok ? 0 : -1;
}

/* Tickets only: the server keeps no session cache (RFC 5077; RFC 8446 section 4.6.1). A key
 * decrypts for at least two rotation periods, the ticket lifetime we announce. */
static void tls_server_tickets(struct tls_server *s, SSL_CTX *ctx,
                               const struct conf_listener_tls *t)
{
    uint64_t life_s = 2 * (t->ticket_rotation_ms / 1000);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_timeout(ctx, (long)(life_s < 1 ? 1 : life_s > TLS_SERVER_MAX_LIFETIME_S
                                                     ? TLS_SERVER_MAX_LIFETIME_S : life_s));
    SSL_CTX_set_ex_data(ctx, tls_server_ex_index, s);
    if (!t->session_tickets) {
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
        SSL_CTX_set_num_tickets(ctx, 0);
        return;
    }
    SSL_CTX_set_num_tickets(ctx, 1);
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, tls_server_ticket_cb);
}

/* A context with the listener's settings and no certificate yet, into G->ctx. */
static int tls_server_ctx_new(struct tls_server *s, struct tls_sctx *g,
                              const struct conf_listener *l, char *err, size_t cap)
{
    const struct conf_listener_tls *t = &l->tls;
    SSL_CTX *ctx = g->ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        snprintf(err, cap, "%s: cannot create a TLS context", s->who);
        ERR_clear_error();
        return -1;
    }
    tls_ctx_common(ctx, t->min_version == TLS_VERSION_1_3 ? TLS1_3_VERSION : TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
    if (tls_server_ciphers(s, ctx, t, err, cap) < 0 ||
        tls_server_client_auth(s, ctx, t, err, cap) < 0)
        return -1;
    if (tls_server_sid_ctx(ctx, l) < 0) {
        snprintf(err, cap, "%s: cannot set the session id context", s->who);
        return -1;
    }
    tls_server_tickets(s, ctx, t);
    SSL_CTX_set_tlsext_servername_callback(ctx, tls_server_sni_cb);
    SSL_CTX_set_tlsext_servername_arg(ctx, s);
    if (s->alpn_len)
        SSL_CTX_set_alpn_select_cb(ctx, tls_server_alpn_cb, s);
    SSL_CTX_set_tlsext_status_cb(ctx, tls_server_status_cb);
    SSL_CTX_set_tlsext_status_arg(ctx, g);
    return 0;
}

/* Reads the DER OCSP response at PATH; it must parse and say "successful". */
static int tls_server_read_ocsp(struct tls_server *s, const char *path, struct tls_staple *st,
                                char *err, size_t cap)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return tls_load_error(err, cap, s->who, "ocsp", path);
    unsigned char *der = malloc(TLS_OCSP_MAX_BYTES);
    size_t len = der ? fread(der, 1, TLS_OCSP_MAX_BYTES, f) : 0;
    fclose(f);
    const unsigned char *p = der;
    OCSP_RESPONSE *resp = len ? d2i_OCSP_RESPONSE(NULL, &p, (long)len) : NULL;
    int status = resp ? OCSP_response_status(resp) : -1;
    OCSP_RESPONSE_free(resp);
    ERR_clear_error();
    if (status != OCSP_RESPONSE_STATUS_SUCCESSFUL) {
        free(der);
        snprintf(err, cap, "%s: cannot load ocsp %s: %s", s->who, path,
                 status < 0 ? "not a DER OCSP response" : "not a successful OCSP response");
        return -1;
    }
    unsigned char *fit = realloc(der, len);
    st->der = fit ? fit : der;
    st->len = len;
    return 0;
}

static int tls_server_add_staple(struct tls_server *s, struct tls_sctx *g, const char *path,
                                 char *err, size_t cap)
{
    struct tls_staple st = { 0 };
    X509 *leaf = SSL_CTX_get0_certificate(g->ctx); /* the certificate just loaded */
    struct tls_staple *v = realloc(g->staples, (g->n_staples + 1) * sizeof *v);
    if (!v || !leaf) {
        snprintf(err, cap, "%s: out of memory", s->who);
        if (v)
            g->staples = v;
        return -1;
    }
    g->staples = v;
    if (tls_server_read_ocsp(s, path, &st, err, cap) < 0)
        return -1;
    X509_up_ref(leaf);
    st.leaf = leaf;
    g->staples[g->n_staples++] = st;
    return 0;
}

/* Loads certificate C into the context of its name set, making that context if it is new. */
static int tls_server_add_cert(struct tls_server *s, const struct conf_listener *l,
                               const struct conf_tls_cert *c, char *err, size_t cap)
{
    struct tls_names names;
    struct tls_sctx *g = NULL;
    if (tls_names_from_file(c->cert, s->who, &names, err, cap) < 0)
        return -1;
    for (size_t i = 0; i < s->n_ctxs && !g; i++)
        if (tls_names_equal(&s->ctxs[i].names, &names))
            g = &s->ctxs[i];
    if (g) {
        tls_names_free(&names);
    } else {
        g = &s->ctxs[s->n_ctxs++];
        g->names = names;
        if (tls_server_ctx_new(s, g, l, err, cap) < 0)
            return -1;
    }
    if (tls_ctx_use_pair(g->ctx, s->who, c->cert, c->key, err, cap) < 0)
        return -1;
    return c->ocsp ? tls_server_add_staple(s, g, c->ocsp, err, cap) : 0;
}

/* The configured protocols in wire format (RFC 7301 section 3.1); h2 only with HTTP/2 on. */
static void tls_server_alpn_wire(struct tls_server *s, const struct conf_listener *l)
{
    for (size_t i = 0; i < l->tls.n_alpn; i++) {
        const char *p = l->tls.alpn[i];
        size_t n = strlen(p);
        if ((strcmp(p, "h2") == 0 && !l->http2.enabled) || s->alpn_len + 1 + n > sizeof s->alpn)
            continue;
        s->alpn[s->alpn_len++] = (unsigned char)n;
        memcpy(s->alpn + s->alpn_len, p, n);
        s->alpn_len += (unsigned)n;
    }
}

struct tls_server *tls_server_build(const struct conf_listener *l, char *err, size_t cap)
{
    const struct conf_listener_tls *t = &l->tls;
    struct tls_server *s = calloc(1, sizeof *s);
    if (s)
        s->ctxs = calloc(t->n_certificates ? t->n_certificates : 1, sizeof *s->ctxs);
    if (!s || !s->ctxs) {
        free(s);
        snprintf(err, cap, "tls: listener %s: out of memory", l->name);
        return NULL;
    }
    pthread_once(&tls_server_ex_once, tls_server_ex_init);
    snprintf(s->who, sizeof s->who, "tls: listener %s", l->name);
    s->rotation_ms = t->ticket_rotation_ms ? t->ticket_rotation_ms : 1;
    tls_server_alpn_wire(s, l);
    if (t->n_certificates == 0)
        snprintf(err, cap, "%s: no certificate", s->who);
    for (size_t i = 0; i < t->n_certificates; i++) {
        if (tls_server_add_cert(s, l, &t->certificates[i], err, cap) < 0) {
            tls_server_free(s);
            return NULL;
        }
    }
    if (s->n_ctxs == 0) {
        tls_server_free(s);
        return NULL;
    }
    return s;
}

void tls_server_free(struct tls_server *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n_ctxs; i++) {
        struct tls_sctx *g = &s->ctxs[i];
        SSL_CTX_free(g->ctx);
        tls_names_free(&g->names);
        for (size_t j = 0; j < g->n_staples; j++) {
            X509_free(g->staples[j].leaf);
            free(g->staples[j].der);
        }
        free(g->staples);
    }
    free(s->ctxs);
    free(s);
}

SSL *tls_server_ssl(struct tls_server *s, int fd)
{
    SSL *ssl = SSL_new(s->ctxs[0].ctx);
    if (!ssl || SSL_set_fd(ssl, fd) != 1) {
        SSL_free(ssl);
        ERR_clear_error();
        return NULL;
    }
    SSL_set_accept_state(ssl);
    return ssl;
}
