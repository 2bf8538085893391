/* Unit tests of src/tls: contexts built from generated certificates (the openssl command line
 * makes them in a temporary directory), SNI selection (exact, wildcard, default, RSA beside
 * ECDSA), ALPN, OCSP stapling, client certificates, upstream verification, session tickets and
 * their key rotation, and bytes through the xport ops — each handshake over a socketpair. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tls/tls.h"
#include "tls/tls_priv.h"
#include "unit.h"

static char dir[64];
static int setup_state; /* 0 not yet, 1 ready, -1 failed */

/* DIR/NAME in one of a few rotating buffers (enough for one call's arguments). */
static const char *P(const char *name)
{
    static char bufs[8][160];
    static int at;
    char *b = bufs[at++ % 8];
    snprintf(b, sizeof bufs[0], "%s/%s", dir, name);
    return b;
}

static const char setup_script[] =
    "set -e\n"
    "EC='ec -pkeyopt ec_paramgen_curve:P-256'\n"
    "openssl req -x509 -newkey $EC -nodes -keyout ca.key -out ca.pem -days 2 -subj '/CN=Test CA'\n"
    "leaf() {\n"
    "  openssl req -new -newkey $2 -nodes -keyout $1.key -subj \"$3\" -addext \"subjectAltName=$4\" "
    "-out $1.csr\n"
    "  openssl x509 -req -in $1.csr -CA ca.pem -CAkey ca.key -copy_extensions copy -days 2 "
    "-out $1.pem\n"
    "}\n"
    "leaf def \"$EC\" /CN=default.test DNS:default.test\n"
    "leaf arsa rsa:2048 /CN=a.test DNS:a.test\n"
    "leaf aec \"$EC\" /CN=a.test DNS:a.test\n"
    "leaf wild \"$EC\" /CN=wild 'DNS:*.wild.test'\n"
    "leaf client \"$EC\" '/O=Test/CN=client one' DNS:client\n"
    ": > index.txt\n"
    "openssl ocsp -issuer ca.pem -cert aec.pem -reqout req.der -no_nonce\n"
    "openssl ocsp -index index.txt -rsigner ca.pem -rkey ca.key -CA ca.pem -reqin req.der "
    "-respout aec.ocsp\n"
    "openssl req -x509 -newkey $EC -nodes -keyout stranger.key -out stranger.pem -days 2 "
    "-subj /CN=stranger\n"
    "echo 'not a certificate' > junk.pem\n";

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void cleanup(void)
{
    if (dir[0])
        nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static bool setup(void)
{
    if (setup_state)
        return setup_state > 0;
    setup_state = -1;
    snprintf(dir, sizeof dir, "/tmp/portero-tls-XXXXXX");
    if (!mkdtemp(dir))
        return false;
    atexit(cleanup);
    FILE *f = fopen(P("make.sh"), "w");
    if (!f)
        return false;
    fputs(setup_script, f);
    fclose(f);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "cd %s && sh make.sh >make.log 2>&1", dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "  certificate generation failed, see %s/make.log\n", dir);
        return false;
    }
    setup_state = 1;
    return true;
}

/* ---------------------------------------------------------------------------------------
 * Configurations, built by hand */

struct listener_conf {
    struct conf_listener l;
    struct conf_tls_cert certs[4];
    char *alpn[2];
};

static void listener_init(struct listener_conf *lc, const char *const *names, size_t n)
{
    memset(lc, 0, sizeof *lc);
    for (size_t i = 0; i < n; i++) {
        char cert[64], key[64];
        snprintf(cert, sizeof cert, "%s.pem", names[i]);
        snprintf(key, sizeof key, "%s.key", names[i]);
        lc->certs[i].cert = strdup(P(cert));
        lc->certs[i].key = strdup(P(key));
    }
    lc->alpn[0] = (char *)"h2";
    lc->alpn[1] = (char *)"http/1.1";
    lc->l.name = (char *)"web";
    lc->l.tls = (struct conf_listener_tls){
        .enabled = true, .certificates = lc->certs, .n_certificates = n, .alpn = lc->alpn,
        .n_alpn = 2, .min_version = TLS_VERSION_1_2, .session_tickets = true,
        .ticket_rotation_ms = 12ULL * 3600 * 1000,
        .client_subject_header = (char *)"X-Client-Cert-Subject",
    };
    lc->l.http2 = (struct conf_listener_http2){ .enabled = true };
}

static void listener_done(struct listener_conf *lc)
{
    for (size_t i = 0; i < 4; i++) {
        free(lc->certs[i].cert);
        free(lc->certs[i].key);
    }
}

static struct tls_server *server_of(int *unit_failed, struct listener_conf *lc)
{
    char err[512] = "";
    struct tls_server *s = tls_server_build(&lc->l, err, sizeof err);
    if (!s)
        fprintf(stderr, "  tls_server_build: %s\n", err);
    CHECK(s != NULL);
    return s;
}

/* The standard server: default.test first, then a.test as RSA and ECDSA, then *.wild.test. */
static struct tls_server *standard_server(int *unit_failed, struct listener_conf *lc)
{
    static const char *const names[] = { "def", "arsa", "aec", "wild" };
    listener_init(lc, names, 4);
    return server_of(unit_failed, lc);
}

/* ---------------------------------------------------------------------------------------
 * Connections over a socketpair */

struct conn {
    int fds[2];
    SSL *client, *server;
    char cerr[256], serr[256];
};

static void conn_pair(struct conn *c)
{
    memset(c, 0, sizeof *c);
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, c->fds) != 0)
        abort();
    for (int i = 0; i < 2; i++)
        fcntl(c->fds[i], F_SETFL, fcntl(c->fds[i], F_GETFL) | O_NONBLOCK);
}

static void conn_close(struct conn *c)
{
    SSL_free(c->client);
    SSL_free(c->server);
    close(c->fds[0]);
    close(c->fds[1]);
}

/* A client with no verification, for probing the server: SNI, signature algorithms, ALPN and
 * an optional client certificate as asked. */
static SSL *raw_client(int fd, const char *sni, const char *sigalgs, const char *alpn,
                       const char *cert_name)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL *ssl = NULL;
    if (!ctx)
        return NULL;
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    if (sigalgs)
        SSL_CTX_set1_sigalgs_list(ctx, sigalgs);
    if (alpn)
        SSL_CTX_set_alpn_protos(ctx, (const unsigned char *)alpn, (unsigned)strlen(alpn));
    if (cert_name) {
        char cert[64], key[64];
        snprintf(cert, sizeof cert, "%s.pem", cert_name);
        snprintf(key, sizeof key, "%s.key", cert_name);
        SSL_CTX_use_certificate_chain_file(ctx, P(cert));
        SSL_CTX_use_PrivateKey_file(ctx, P(key), SSL_FILETYPE_PEM);
    }
    ssl = SSL_new(ctx);
    SSL_CTX_free(ctx); /* the SSL keeps its own reference */
    if (ssl) {
        SSL_set_fd(ssl, fd);
        SSL_set_connect_state(ssl);
        if (sni)
            SSL_set_tlsext_host_name(ssl, sni);
    }
    return ssl;
}

/* Runs both handshakes to their end: 1 both done, -1 either failed. */
static int conn_handshake(struct conn *c)
{
    int cr = 0, sr = 0;
    bool ww;
    for (int i = 0; i < 100 && (cr == 0 || sr == 0); i++) {
        if (cr == 0)
            cr = tls_handshake(c->client, &ww, c->cerr, sizeof c->cerr);
        if (sr == 0)
            sr = tls_handshake(c->server, &ww, c->serr, sizeof c->serr);
        if (cr < 0 || sr < 0)
            return -1;
    }
    return cr == 1 && sr == 1 ? 1 : -1;
}

/* A handshake of the raw client against S; the connection is left open in C. */
static int probe(struct conn *c, struct tls_server *s, const char *sni, const char *sigalgs,
                 const char *alpn, const char *cert_name)
{
    conn_pair(c);
    c->server = tls_server_ssl(s, c->fds[1]);
    c->client = raw_client(c->fds[0], sni, sigalgs, alpn, cert_name);
    if (!c->server || !c->client)
        return -1;
    return conn_handshake(c);
}

/* Does the server's certificate say CN with a key of TYPE (EVP_PKEY_RSA / EVP_PKEY_EC)? */
static bool peer_is(SSL *client, const char *cn, int type)
{
    X509 *cert = SSL_get0_peer_certificate(client);
    char text[128] = "";
    if (!cert)
        return false;
    X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, text, sizeof text);
    int got = EVP_PKEY_get_base_id(X509_get0_pubkey(cert));
    if (strcmp(text, cn) != 0 || got != type)
        fprintf(stderr, "  peer: CN=%s type %d, expected CN=%s type %d\n", text, got, cn, type);
    return strcmp(text, cn) == 0 && got == type;
}

static bool peer_cn_is(SSL *client, const char *cn)
{
    X509 *cert = SSL_get0_peer_certificate(client);
    char text[128] = "";
    if (cert)
        X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, text, sizeof text);
    if (strcmp(text, cn) != 0)
        fprintf(stderr, "  peer: CN=%s, expected CN=%s\n", text, cn);
    return strcmp(text, cn) == 0;
}

/* ---------------------------------------------------------------------------------------
 * Building */

UNIT_TEST(server_build_names_the_file_at_fault)
{
    if (!setup()) {
        CHECK(!"setup");
        return;
    }
    static const char *const names[] = { "def" };
    struct listener_conf lc;
    char err[512], want[512];
    listener_init(&lc, names, 1);

    free(lc.certs[0].key);
    lc.certs[0].key = strdup(P("nope.key"));
    CHECK(tls_server_build(&lc.l, err, sizeof err) == NULL);
    snprintf(want, sizeof want, "tls: listener web: cannot load key %s: No such file or directory",
             P("nope.key"));
    CHECK(strcmp(err, want) == 0);

    free(lc.certs[0].key);
    lc.certs[0].key = strdup(P("arsa.key")); /* an RSA key for an ECDSA certificate */
    CHECK(tls_server_build(&lc.l, err, sizeof err) == NULL);
    snprintf(want, sizeof want, "tls: listener web: cannot load key %s: it does not match "
             "certificate %s", P("arsa.key"), P("def.pem"));
    CHECK(strcmp(err, want) == 0);

    free(lc.certs[0].cert);
    lc.certs[0].cert = strdup(P("junk.pem"));
    CHECK(tls_server_build(&lc.l, err, sizeof err) == NULL);
    snprintf(want, sizeof want, "tls: listener web: cannot load certificate %s: ", P("junk.pem"));
    CHECK(strncmp(err, want, strlen(want)) == 0);

    free(lc.certs[0].cert);
    free(lc.certs[0].key);
    lc.certs[0].cert = strdup(P("def.pem"));
    lc.certs[0].key = strdup(P("def.key"));
    lc.certs[0].ocsp = (char *)P("junk.pem");
    CHECK(tls_server_build(&lc.l, err, sizeof err) == NULL);
    snprintf(want, sizeof want, "tls: listener web: cannot load ocsp %s: not a DER OCSP response",
             P("junk.pem"));
    CHECK(strcmp(err, want) == 0);
    lc.certs[0].ocsp = NULL;

    lc.l.tls.client_auth = TLS_CLIENT_AUTH_REQUIRED;
    lc.l.tls.client_ca = (char *)P("missing-ca.pem");
    CHECK(tls_server_build(&lc.l, err, sizeof err) == NULL);
    snprintf(want, sizeof want, "tls: listener web: cannot load client_auth ca %s: No such file "
             "or directory", P("missing-ca.pem"));
    CHECK(strcmp(err, want) == 0);
    lc.l.tls.client_auth = TLS_CLIENT_AUTH_OFF;

    lc.l.tls.ciphers = (char *)"NOPE";
    CHECK(tls_server_build(&lc.l, err, sizeof err) == NULL);
    CHECK(strcmp(err, "tls: listener web: invalid ciphers \"NOPE\": no cipher OpenSSL knows") == 0);
    lc.l.tls.ciphers = NULL;

    struct tls_server *s = tls_server_build(&lc.l, err, sizeof err);
    CHECK(s != NULL);
    tls_server_free(s);
    listener_done(&lc);
    CHECK(ERR_peek_error() == 0); /* nothing left in the error queue */
}

UNIT_TEST(client_build_names_the_file_at_fault)
{
    if (!setup()) {
        CHECK(!"setup");
        return;
    }
    char err[512], want[512];
    struct conf_upstream up = { .name = (char *)"app" };
    up.tls = (struct conf_upstream_tls){ .enabled = true, .verify = true,
                                         .ca = (char *)P("nope.pem") };
    CHECK(tls_client_build(&up, err, sizeof err) == NULL);
    snprintf(want, sizeof want, "tls: upstream app: cannot load ca %s: No such file or directory",
             P("nope.pem"));
    CHECK(strcmp(err, want) == 0);
    up.tls.ca = (char *)P("ca.pem");
    up.tls.client_cert = (char *)P("client.pem");
    up.tls.client_key = (char *)P("nope.key");
    CHECK(tls_client_build(&up, err, sizeof err) == NULL);
    snprintf(want, sizeof want, "tls: upstream app: cannot load key %s: No such file or directory",
             P("nope.key"));
    CHECK(strcmp(err, want) == 0);
    up.tls.client_key = (char *)P("client.key");
    struct tls_client *c = tls_client_build(&up, err, sizeof err);
    CHECK(c != NULL);
    tls_client_free(c);
}

/* ---------------------------------------------------------------------------------------
 * SNI, ALPN, OCSP */

UNIT_TEST(sni_picks_exact_then_wildcard_then_default)
{
    if (!setup()) {
        CHECK(!"setup");
        return;
    }
    struct listener_conf lc;
    struct tls_server *s = standard_server(unit_failed, &lc);
    if (!s) {
        listener_done(&lc);
        return;
    }
    static const struct {
        const char *sni, *cn;
    } cases[] = {
        { "a.test", "a.test" },           { "A.Test.", "a.test" },
        { "x.wild.test", "wild" },        { "y.x.wild.test", "default.test" },
        { "wild.test", "default.test" },  { "other.test", "default.test" },
        { NULL, "default.test" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct conn c;
        CHECK_EQ_INT(probe(&c, s, cases[i].sni, NULL, NULL, NULL), 1);
        CHECK(peer_cn_is(c.client, cases[i].cn));
        conn_close(&c);
    }
    tls_server_free(s);
    listener_done(&lc);
}

UNIT_TEST(rsa_and_ecdsa_share_a_name)
{
    if (!setup()) {
        CHECK(!"setup");
        return;
    }
    struct listener_conf lc;
    struct tls_server *s = standard_server(unit_failed, &lc);
    if (!s) {
        listener_done(&lc);
        return;
    }
    struct conn c;
    CHECK_EQ_INT(probe(&c, s, "a.test", "ecdsa_secp256r1_sha256", NULL, NULL), 1);
    CHECK(peer_is(c.client, "a.test", EVP_PKEY_EC));
    conn_close(&c);
    CHECK_EQ_INT(probe(&c, s, "a.test", "rsa_pss_rsae_sha256:rsa_pkcs1_sha256", NULL, NULL), 1);
    CHECK(peer_is(c.client, "a.test", EVP_PKEY_RSA));
    conn_close(&c);
    /* TLS 1.2 too, where the cipher suite names the key type */
    conn_pair(&c);
    c.server = tls_server_ssl(s, c.fds[1]);
    c.client = raw_client(c.fds[0], "a.test", NULL, NULL, NULL);
    SSL_set_max_proto_version(c.client, TLS1_2_VERSION);
    SSL_set_cipher_list(c.client, "ECDHE-RSA-AES128-GCM-SHA256");
    CHECK_EQ_INT(conn_handshake(&c), 1);
    CHECK(peer_is(c.client, "a.test", EVP_PKEY_RSA));
    CHECK(SSL_version(c.client) == TLS1_2_VERSION);
    conn_close(&c);
    tls_server_free(s);
    listener_done(&lc);
}

UNIT_TEST(old_protocols_and_weak_ciphers_are_refused)
{
    if (!setup()) {
        CHECK(!"setup");
        return;
    }
    struct listener_conf lc;
    struct tls_server *s = standard_server(unit_failed, &lc);
    if (!s) {
        listener_done(&lc);
        return;
    }
    struct conn c;
    conn_pair(&c);
    c.server = tls_server_ssl(s, c.fds[1]);
    c.client = raw_client(c.fds[0], "a.test", NULL, NULL, NULL);
    SSL_set_security_level(c.client, 0);
    SSL_set_min_proto_version(c.client, TLS1_VERSION);
    SSL_set_max_proto_version(c.client, TLS1_1_VERSION);
    CHECK_EQ_INT(conn_handshake(&c), -1);
    conn_close(&c);
    conn_pair(&c);
    c.server = tls_server_ssl(s, c.fds[1]);
    c.client = raw_client(c.fds[0], "a.test", NULL, NULL, NULL);
    SSL_set_max_proto_version(c.client, TLS1_2_VERSION);
    SSL_set_cipher_list(c.client, "ECDHE-RSA-AES128-SHA256:AES128-GCM-SHA256:DHE-RSA-AES128-GCM-SHA256");
    CHECK_EQ_INT(conn_handshake(&c), -1);
    conn_close(&c);
    tls_server_free(s);
    lc.l.tls.min_version = TLS_VERSION_1_3;
    s = server_of(unit_failed, &lc);
    if (s) {
        conn_pair(&c);
        c.server = tls_server_ssl(s, c.fds[1]);
        c.client = raw_client(c.fds[0], "a.test", NULL, NULL, NULL);
        SSL_set_max_proto_version(c.client, TLS1_2_VERSION);
        CHECK_EQ_INT(conn_handshake(&c), -1);
        conn_close(&c);
        CHECK_EQ_INT(probe(&c, s, "a.test", NULL, NULL, NULL), 1);
        CHECK(SSL_version(c.server) == TLS1_3_VERSION);
        conn_close(&c);
        tls_server_free(s);
    }
    listener_done(&lc);
    ERR_clear_error();
}

static bool alpn_is(SSL *ssl, const char *want)
{
    const unsigned char *p = NULL;
    unsigned int len = 0;
    SSL_get0_alpn_selected(ssl, &p, &len);
    return want ? len == strlen(want) && memcmp(p, want, len) == 0 : len == 0;
}

UNIT_TEST(alpn_follows_server_preference)
{
    if (!setup()) {
        CHECK(!"setup");
        return;
    }
    struct listener_conf lc;
    struct tls_server *s = standard_server(unit_failed, &lc);
    if (!s) {
        listener_done(&lc);
        return;
    }
    struct conn c;
    CHECK_EQ_INT(probe(&c, s, "a.test", NULL, "\x08http/1.1\x02h2", NULL), 1);
    CHECK(tls_alpn_h2(c.server) && tls_alpn_h2(c.client));
    conn_close(&c);
    CHECK_EQ_INT(probe(&c, s, "a.test", NULL, "\x08http/1.1", NULL), 1);
    CHECK(!tls_alpn_h2(c.server) && alpn_is(c.server, "http/1.1"));
    conn_close(&c);
    CHECK_EQ_INT(probe(&c, s, "a.test", NULL, "\x03""foo", NULL), 1);
    CHECK(alpn_is(c.server, NULL));
    conn_close(&c);
    CHECK_EQ_INT(probe(&c, s, "x.wild.test", NULL, "\x02h2", NULL), 1); /* after an SNI switch */
    CHECK(tls_alpn_h2(c.server));
    conn_close(&c);
    tls_server_free(s);
    lc.l.http2.enabled = false; /* h2 is not offered without HTTP/2 */
    s = server_of(unit_failed, &lc);
    if (s) {
        CHECK_EQ_INT(probe(&c, s, "a.test", NULL, "\x02h2\x08http/1.1", NULL), 1);
        CHECK(alpn_is(c.server, "http/1.1"));
        conn_close(&c);
        tls_server_free(s);
    }
    listener_done(&lc);
}

/* The stapled response of the handshake's certificate, only when asked for. */
static long stapled(struct tls_server *s, const char *sigalgs, bool ask)
{
    struct conn c;
    const unsigned char *p = NULL;
    long len = -2;
    conn_pair(&c);
    c.server = tls_server_ssl(s, c.fds[1]);
    c.client = raw_client(c.fds[0], "a.test", sigalgs, NULL, NULL);
    if (ask)
        SSL_set_tlsext_status_type(c.client, TLSEXT_STATUSTYPE_ocsp);
    if (conn_handshake(&c) == 1)
        len = SSL_get_tlsext_status_ocsp_resp(c.client, &p);
    conn_close(&c);
    return len;
}

UNIT_TEST(ocsp_is_stapled_for_its_certificate_when_asked)
{
    if (!setup()) {
        CHECK(!"setup");
        return;
    }
    struct listener_conf lc;
    static const char *const names[] = { "def", "arsa", "aec" };
    listener_init(&lc, names, 3);
    lc.certs[2].ocsp = (char *)P("aec.ocsp");
    struct tls_server *s = server_of(unit_failed, &lc);
    if (s) {
        FILE *f = fopen(P("aec.ocsp"), "rb");
        long size = -1;
        if (f && fseek(f, 0, SEEK_END) == 0)
            size = ftell(f);
        if (f)
            fclose(f);
        CHECK(size > 0);
        CHECK_EQ_INT(stapled(s, "ecdsa_secp256r1_sha256", true), size);
        CHECK_EQ_INT(stapled(s, "ecdsa_secp256r1_sha256", false), -1);
        CHECK_EQ_INT(stapled(s, "rsa_pss_rsae_sha256", true), -1); /* the RSA one has none */
        tls_server_free(s);
    }
    lc.certs[2].ocsp = NULL;
    listener_done(&lc);
}

/* ---------------------------------------------------------------------------------------
 * Client certificates and upstream verification */

UNIT_TEST(client_certificates_required_and_optional)
{
    if (!setup()) {
        CHECK(!"setup");
        return;
    }
    struct listener_conf lc;
    static const char *const names[] = { "def" };
    listener_init(&lc, names, 1);
    lc.l.tls.client_auth = TLS_CLIENT_AUTH_REQUIRED;
    lc.l.tls.client_ca = (char *)P("ca.pem");
    struct tls_server *s = server_of(unit_failed, &lc);
    struct conn c;
    char subject[256];
    if (s) {
        CHECK_EQ_INT(probe(&c, s, NULL, NULL, NULL, NULL), -1);
        CHECK(strstr(c.serr, "certificate") != NULL);
        conn_close(&c);
        CHECK_EQ_INT(probe(&c, s, NULL, NULL, NULL, "client"), 1);
        CHECK_EQ_INT(tls_peer_subject(c.server, subject, sizeof subject), strlen("CN=client one,O=Test"));
        CHECK(strcmp(subject, "CN=client one,O=Test") == 0);
        CHECK_EQ_INT(tls_peer_subject(c.server, subject, 5), 0); /* does not fit: nothing */
        conn_close(&c);
        CHECK_EQ_INT(probe(&c, s, NULL, NULL, NULL, "stranger"), -1); /* another CA's */
        CHECK(strncmp(c.serr, "certificate verify failed: ", 27) == 0);
        conn_close(&c);
        tls_server_free(s);
    }
    lc.l.tls.client_auth = TLS_CLIENT_AUTH_OPTIONAL;
    s = server_of(unit_failed, &lc);
    if (s) {
        CHECK_EQ_INT(probe(&c, s, NULL, NULL, NULL, NULL), 1);
        CHECK_EQ_INT(tls_peer_subject(c.server, subject, sizeof subject), 0);
        conn_close(&c);
        CHECK_EQ_INT(probe(&c, s, NULL, NULL, NULL, "client"), 1);
        CHECK(tls_peer_subject(c.server, subject, sizeof subject) > 0);
        conn_close(&c);
        tls_server_free(s);
    }
    listener_done(&lc);
    ERR_clear_error();
}

/* A handshake of upstream client UC against S, to ADDRESS. */
static int upstream_probe(struct conn *c, struct tls_server *s, struct tls_client *uc,
                          const char *address, SSL_SESSION *resume)
{
    conn_pair(c);
    c->server = tls_server_ssl(s, c->fds[1]);
    c->client = tls_client_ssl(uc, c->fds[0], address, resume);
    if (!c->server || !c->client)
        return -2;
    return conn_handshake(c);
}

UNIT_TEST(upstream_verifies_name_and_chain)
{
    if (!setup()) {
        CHECK(!"setup");
        return;
    }
    struct listener_conf lc;
    struct tls_server *s = standard_server(unit_failed, &lc);
    char err[512];
    struct conf_upstream up = { .name = (char *)"app", .protocol = UPSTREAM_HTTP2 };
    up.tls = (struct conf_upstream_tls){ .enabled = true, .verify = true, .ca = (char *)P("ca.pem") };
    struct tls_client *uc = tls_client_build(&up, err, sizeof err);
    CHECK(uc != NULL);
    struct conn c;
    if (s && uc) {
        CHECK_EQ_INT(upstream_probe(&c, s, uc, "a.test:443", NULL), 1);
        CHECK(tls_alpn_h2(c.client));
        conn_close(&c);
        CHECK_EQ_INT(upstream_probe(&c, s, uc, "b.test:443", NULL), -1);
        CHECK(strcmp(c.cerr, "certificate verify failed: hostname mismatch") == 0);
        conn_close(&c);
        CHECK_EQ_INT(upstream_probe(&c, s, uc, "127.0.0.1:443", NULL), -1); /* no IP in the cert */
        CHECK(strcmp(c.cerr, "certificate verify failed: IP address mismatch") == 0);
        conn_close(&c);
        CHECK_EQ_INT(upstream_probe(&c, s, uc, "[::1]:443", NULL), -1);
        conn_close(&c);
    }
    tls_client_free(uc);
    up.tls.sni = (char *)"x.wild.test"; /* SNI and the name verified */
    up.protocol = UPSTREAM_HTTP1;
    uc = tls_client_build(&up, err, sizeof err);
    if (s && uc) {
        CHECK_EQ_INT(upstream_probe(&c, s, uc, "127.0.0.1:443", NULL), 1);
        CHECK(peer_is(c.client, "wild", EVP_PKEY_EC));
        CHECK(!tls_alpn_h2(c.client) && alpn_is(c.client, "http/1.1"));
        conn_close(&c);
    }
    tls_client_free(uc);
    up.tls.sni = NULL;
    up.tls.ca = NULL; /* the system store does not know our CA */
    uc = tls_client_build(&up, err, sizeof err);
    if (s && uc) {
        CHECK_EQ_INT(upstream_probe(&c, s, uc, "a.test:443", NULL), -1);
        CHECK(strncmp(c.cerr, "certificate verify failed: ", 27) == 0);
        conn_close(&c);
    }
    tls_client_free(uc);
    up.tls.verify = false;
    uc = tls_client_build(&up, err, sizeof err);
    if (s && uc) {
        CHECK_EQ_INT(upstream_probe(&c, s, uc, "b.test:443", NULL), 1);
        conn_close(&c);
    }
    tls_client_free(uc);
    tls_server_free(s);
    listener_done(&lc);
    ERR_clear_error();
}

UNIT_TEST(upstream_client_certificate)
{
    if (!setup()) {
        CHECK(!"setup");
        return;
    }
    struct listener_conf lc;
    static const char *const names[] = { "aec" };
    listener_init(&lc, names, 1);
    lc.l.tls.client_auth = TLS_CLIENT_AUTH_REQUIRED;
    lc.l.tls.client_ca = (char *)P("ca.pem");
    struct tls_server *s = server_of(unit_failed, &lc);
    char err[512], subject[256];
    struct conf_upstream up = { .name = (char *)"app" };
    up.tls = (struct conf_upstream_tls){ .enabled = true, .verify = true, .ca = (char *)P("ca.pem"),
                                         .client_cert = (char *)P("client.pem"),
                                         .client_key = (char *)P("client.key") };
    struct tls_client *with = tls_client_build(&up, err, sizeof err);
    up.tls.client_cert = up.tls.client_key = NULL;
    struct tls_client *without = tls_client_build(&up, err, sizeof err);
    struct conn c;
    if (s && with && without) {
        CHECK_EQ_INT(upstream_probe(&c, s, with, "a.test:8443", NULL), 1);
        CHECK(tls_peer_subject(c.server, subject, sizeof subject) > 0);
        conn_close(&c);
        CHECK_EQ_INT(upstream_probe(&c, s, without, "a.test:8443", NULL), -1);
        conn_close(&c);
    }
    tls_client_free(with);
    tls_client_free(without);
    tls_server_free(s);
    listener_done(&lc);
    ERR_clear_error();
}

/* ---------------------------------------------------------------------------------------
 * Bytes through the xport */

/* Writes ALL (a head, a body and a tail as three iovecs) from W to R through the xports and
 * reads it back; returns the bytes read. *BLOCKED counts the writes that hit a full socket. */
static size_t xfer(struct xport *w, struct xport *r, const unsigned char *body, size_t n,
                   unsigned char *out, size_t cap, int *blocked)
{
    static const char head[] = "4000\r\n", tail[] = "\r\n";
    size_t total = sizeof head - 1 + n + sizeof tail - 1, sent = 0, got = 0;
    for (int rounds = 0; rounds < 100000 && got < total; rounds++) {
        struct iovec all[3] = { { (void *)head, sizeof head - 1 }, { (void *)body, n },
                                { (void *)tail, sizeof tail - 1 } }, v[3];
        int cnt = 0;
        size_t skip = sent;
        for (int i = 0; i < 3; i++) {
            if (skip >= all[i].iov_len) {
                skip -= all[i].iov_len;
                continue;
            }
            v[cnt].iov_base = (char *)all[i].iov_base + skip;
            v[cnt++].iov_len = all[i].iov_len - skip;
            skip = 0;
        }
        if (cnt) {
            ssize_t k = xport_writev(w, v, cnt);
            if (k > 0)
                sent += (size_t)k;
            else if (k < 0 && errno == EAGAIN)
                (*blocked)++;
            else
                return got;
        }
        ssize_t k = xport_read(r, out + got, cap - got < 7001 ? cap - got : 7001);
        if (k > 0)
            got += (size_t)k;
        else if (k == 0 || errno != EAGAIN)
            return got;
    }
    return got;
}

UNIT_TEST(xport_carries_bytes_both_ways_and_ends_with_close_notify)
{
    if (!setup()) {
        CHECK(!"setup");
        return;
    }
    struct listener_conf lc;
    struct tls_server *s = standard_server(unit_failed, &lc);
    if (!s) {
        listener_done(&lc);
        return;
    }
    struct conn c;
    CHECK_EQ_INT(probe(&c, s, "a.test", NULL, NULL, NULL), 1);
    struct xport cx = { c.fds[0], &tls_xport_ops, c.client };
    struct xport sx = { c.fds[1], &tls_xport_ops, c.server };
    size_t n = 3u << 20;
    unsigned char *body = malloc(n), *out = malloc(n + 16);
    for (size_t i = 0; i < n; i++)
        body[i] = (unsigned char)(i * 7 + (i >> 11));
    char tiny[16];
    CHECK_EQ_INT(xport_read(&cx, tiny, sizeof tiny), -1); /* nothing yet */
    CHECK_EQ_INT(errno, EAGAIN);
    int blocked = 0;
    size_t got = xfer(&sx, &cx, body, n, out, n + 16, &blocked);
    CHECK_EQ_INT(got, n + 8);
    CHECK(memcmp(out, "4000\r\n", 6) == 0 && memcmp(out + 6, body, n) == 0 &&
          memcmp(out + 6 + n, "\r\n", 2) == 0);
    CHECK(blocked > 0); /* the socket filled up at least once: retries were exercised */
    blocked = 0;
    got = xfer(&cx, &sx, body, 100000, out, n + 16, &blocked); /* and the other way */
    CHECK_EQ_INT(got, 100008);
    CHECK(memcmp(out + 6, body, 100000) == 0);
    CHECK_EQ_INT(xport_shutdown_wr(&sx), 0);
    CHECK_EQ_INT(xport_read(&cx, tiny, sizeof tiny), 0);
    CHECK(SSL_get_shutdown(c.client) & SSL_RECEIVED_SHUTDOWN);
    free(body);
    free(out);
    conn_close(&c);
    tls_server_free(s);
    listener_done(&lc);
}

UNIT_TEST(xport_read_reports_eof_without_close_notify)
{
    if (!setup()) {
        CHECK(!"setup");
        return;
    }
    struct listener_conf lc;
    struct tls_server *s = standard_server(unit_failed, &lc);
    if (!s) {
        listener_done(&lc);
        return;
    }
    struct conn c;
    CHECK_EQ_INT(probe(&c, s, "a.test", NULL, NULL, NULL), 1);
    struct xport sx = { c.fds[1], &tls_xport_ops, c.server };
    struct xport cx = { c.fds[0], &tls_xport_ops, c.client };
    CHECK_EQ_INT(xport_write(&cx, "hello", 5), 5);
    shutdown(c.fds[0], SHUT_WR); /* a FIN with no close_notify */
    char buf[64];
    CHECK_EQ_INT(xport_read(&sx, buf, sizeof buf), 5);
    CHECK_EQ_INT(xport_read(&sx, buf, sizeof buf), 0);
    conn_close(&c);
    tls_server_free(s);
    listener_done(&lc);
}

/* ---------------------------------------------------------------------------------------
 * Tickets */

UNIT_TEST(ticket_keys_rotate_and_retire)
{
    struct tls_ticket_key a, b, k;
    bool current;
    tls_tickets_reset();
    CHECK(tls_tickets_current(1000, 100, &a));
    CHECK(tls_tickets_current(1099, 100, &k));
    CHECK(memcmp(k.name, a.name, 16) == 0); /* not due yet */
    CHECK(tls_tickets_current(1100, 100, &b));
    CHECK(memcmp(b.name, a.name, 16) != 0);
    CHECK(tls_tickets_find(a.name, &k, &current) && !current);
    CHECK(tls_tickets_find(b.name, &k, &current) && current);
    CHECK(memcmp(k.aes, b.aes, 32) == 0 && memcmp(k.hmac, b.hmac, 32) == 0);
    CHECK(tls_tickets_current(1200, 100, &k));
    CHECK(tls_tickets_find(a.name, &k, &current)); /* the two previous keys still decrypt */
    CHECK(tls_tickets_current(1300, 100, &k));
    CHECK(!tls_tickets_find(a.name, &k, &current)); /* retired */
    CHECK(tls_tickets_find(b.name, &k, &current) && !current);
    tls_tickets_reset();
    CHECK(!tls_tickets_find(b.name, &k, &current));
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* A handshake of UC against S resuming RESUME; *REUSED tells whether it did. Returns the new
 * session (after one byte went through, so a TLS 1.3 ticket has arrived) or NULL. */
static SSL_SESSION *session_at(struct tls_server *s, struct tls_client *uc, SSL_SESSION *resume,
                               bool *reused, int max_version)
{
    struct conn c;
    SSL_SESSION *sess = NULL;
    char byte = 0;
    *reused = false;
    conn_pair(&c);
    c.server = tls_server_ssl(s, c.fds[1]);
    c.client = tls_client_ssl(uc, c.fds[0], "a.test:443", resume);
    if (c.client)
        SSL_set_max_proto_version(c.client, max_version);
    if (c.server && c.client && conn_handshake(&c) == 1) {
        struct xport sx = { c.fds[1], &tls_xport_ops, c.server };
        struct xport cx = { c.fds[0], &tls_xport_ops, c.client };
        *reused = SSL_session_reused(c.server) && SSL_session_reused(c.client);
        if (xport_write(&sx, "x", 1) == 1 && xport_read(&cx, &byte, 1) == 1)
            sess = tls_client_session(c.client);
    }
    conn_close(&c);
    return sess;
}

static SSL_SESSION *session_of(struct tls_server *s, struct tls_client *uc, SSL_SESSION *resume,
                               bool *reused)
{
    return session_at(s, uc, resume, reused, TLS1_3_VERSION);
}

static bool same_ticket(const SSL_SESSION *a, const SSL_SESSION *b)
{
    const unsigned char *ta, *tb;
    size_t la, lb;
    SSL_SESSION_get0_ticket(a, &ta, &la);
    SSL_SESSION_get0_ticket(b, &tb, &lb);
    return la == lb && memcmp(ta, tb, la) == 0;
}

UNIT_TEST(tls12_tickets_are_renewed_after_a_rotation)
{
    if (!setup()) {
        CHECK(!"setup");
        return;
    }
    struct listener_conf lc;
    struct tls_server *s = standard_server(unit_failed, &lc);
    char err[512];
    struct conf_upstream up = { .name = (char *)"app" };
    up.tls = (struct conf_upstream_tls){ .enabled = true, .verify = true, .ca = (char *)P("ca.pem") };
    struct tls_client *uc = tls_client_build(&up, err, sizeof err);
    bool reused;
    if (s && uc) {
        struct tls_ticket_key k;
        uint64_t r = lc.l.tls.ticket_rotation_ms;
        tls_tickets_reset();
        SSL_SESSION *first = session_at(s, uc, NULL, &reused, TLS1_2_VERSION);
        CHECK(first != NULL && !reused);
        uint64_t t = now_ms();
        SSL_SESSION *same = session_at(s, uc, first, &reused, TLS1_2_VERSION);
        CHECK(same != NULL && reused && same_ticket(first, same)); /* current key: kept */
        CHECK(tls_tickets_current(t + r, r, &k));
        SSL_SESSION *renewed = session_at(s, uc, first, &reused, TLS1_2_VERSION);
        CHECK(renewed != NULL && reused && !same_ticket(first, renewed));
        SSL_SESSION_free(first);
        SSL_SESSION_free(same);
        SSL_SESSION_free(renewed);
    }
    tls_client_free(uc);
    tls_server_free(s);
    listener_done(&lc);
    tls_tickets_reset();
}

UNIT_TEST(tickets_resume_across_servers_and_survive_one_rotation)
{
    if (!setup()) {
        CHECK(!"setup");
        return;
    }
    struct listener_conf lc;
    struct tls_server *s1 = standard_server(unit_failed, &lc);
    struct tls_server *s2 = server_of(unit_failed, &lc); /* a reload: new contexts, same keys */
    char err[512];
    struct conf_upstream up = { .name = (char *)"app" };
    up.tls = (struct conf_upstream_tls){ .enabled = true, .verify = true, .ca = (char *)P("ca.pem") };
    struct tls_client *uc = tls_client_build(&up, err, sizeof err);
    bool reused;
    if (s1 && s2 && uc) {
        uint64_t r = lc.l.tls.ticket_rotation_ms;
        struct tls_ticket_key k;
        tls_tickets_reset();
        SSL_SESSION *first = session_of(s1, uc, NULL, &reused);
        CHECK(first != NULL && !reused);
        uint64_t t = now_ms(); /* the first key is at most this old */
        SSL_SESSION *again = session_of(s2, uc, first, &reused);
        CHECK(again != NULL && reused);
        CHECK(tls_tickets_current(t + r, r, &k)); /* a rotation */
        SSL_SESSION *renewed = session_of(s1, uc, first, &reused);
        CHECK(renewed != NULL && reused); /* the previous key still decrypts ... */
        CHECK(tls_tickets_current(t + 2 * r, r, &k));
        CHECK(tls_tickets_current(t + 3 * r, r, &k));
        SSL_SESSION *late = session_of(s1, uc, first, &reused);
        CHECK(late != NULL && !reused); /* ... until it retires */
        SSL_SESSION *ok = session_of(s1, uc, renewed, &reused);
        CHECK(ok != NULL && reused); /* the renewed ticket used the key of its time */
        SSL_SESSION_free(first);
        SSL_SESSION_free(again);
        SSL_SESSION_free(renewed);
        SSL_SESSION_free(late);
        SSL_SESSION_free(ok);
    }
    lc.l.tls.session_tickets = false;
    struct tls_server *off = server_of(unit_failed, &lc);
    if (off && uc) {
        SSL_SESSION *first = session_of(off, uc, NULL, &reused);
        SSL_SESSION *again = session_of(off, uc, first, &reused);
        CHECK(!reused);
        SSL_SESSION_free(first);
        SSL_SESSION_free(again);
    }
    tls_server_free(off);
    tls_client_free(uc);
    tls_server_free(s1);
    tls_server_free(s2);
    listener_done(&lc);
    tls_tickets_reset();
}

UNIT_MAIN();
