/* tls_priv: what the files of src/tls share — file loading with messages that name the file,
 * the process-wide ticket key ring, and the settings common to every context. Private to
 * src/tls/ (and its unit test). */
#ifndef PORTERO_TLS_TLS_PRIV_H
#define PORTERO_TLS_TLS_PRIV_H

#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Writes "WHO: cannot load WHAT PATH: REASON" into ERR, REASON being the system's when PATH
 * cannot be opened, else OpenSSL's last error (the queue is cleared). Returns -1. */
int tls_load_error(char *err, size_t cap, const char *who, const char *what, const char *path);
/* Settings shared by server and client contexts: TLS 1.2+ (MIN_VERSION: TLS1_2_VERSION or
 * TLS1_3_VERSION), no compression or renegotiation, partial writes, released idle buffers. */
void tls_ctx_common(SSL_CTX *ctx, int min_version);
/* Loads a certificate chain and its key into CTX (the key must match). 0 or -1 with ERR. */
int tls_ctx_use_pair(SSL_CTX *ctx, const char *who, const char *cert, const char *key, char *err,
                     size_t cap);

/* --- certificate names (tls_names.c) ----------------------------------------------------------
 * The DNS names a certificate answers for: its subjectAltName DNS entries, else its subject CN,
 * lower-cased, sorted, without repeats ("*.example.com" kept as written). */
struct tls_names {
    char **v;
    size_t n;
};

/* Reads the first certificate of PEM file PATH and its names into OUT. 0 or -1 with ERR. */
int tls_names_from_file(const char *path, const char *who, struct tls_names *out, char *err,
                        size_t cap);
bool tls_names_equal(const struct tls_names *a, const struct tls_names *b);
void tls_names_free(struct tls_names *names);
/* Does a certificate with NAMES answer for host NAME (lower-case)? EXACT: only names written out;
 * else only wildcards, "*.example.com" standing for one label (RFC 6125 section 6.4.3). */
bool tls_names_match(const struct tls_names *names, const char *name, bool exact);

/* --- session ticket keys (tls_tickets.c) -------------------------------------------------------
 * One ring per process, shared by every worker and listener and kept across reloads: the current
 * key encrypts new tickets; it and the previous ones decrypt. A key older than the rotation
 * period is replaced (lazily, when the next ticket is made). */
#define TLS_TICKET_KEYS 3 /* the current key and two previous ones */

struct tls_ticket_key {
    unsigned char name[16];   /* sent in the clear at the head of the ticket, to find the key */
    unsigned char aes[32];    /* AES-256-CBC key */
    unsigned char hmac[32];   /* HMAC-SHA256 key */
    uint64_t created_ms;      /* CLOCK_MONOTONIC */
};

/* Copies the current key into OUT, making a new one first when there is none or when the
 * current one is ROTATION_MS old at NOW_MS. false if no key could be made (RAND failure). */
bool tls_tickets_current(uint64_t now_ms, uint64_t rotation_ms, struct tls_ticket_key *out);
/* Copies the key named NAME into OUT; *CURRENT tells whether it is the current one. */
bool tls_tickets_find(const unsigned char name[16], struct tls_ticket_key *out, bool *current);
/* The body of an SSL_CTX_set_tlsext_ticket_key_evp_cb callback: 1 done, 2 decrypted with an
 * older key (renew the ticket), 0 unknown key (full handshake), -1 failure. */
int tls_tickets_crypt(unsigned char name[16], unsigned char *iv, EVP_CIPHER_CTX *cctx,
                      EVP_MAC_CTX *hctx, int enc, uint64_t rotation_ms);
/* Forgets every key (tests). */
void tls_tickets_reset(void);

#endif
