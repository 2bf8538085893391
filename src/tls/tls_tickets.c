/* tls_tickets: the process-wide session ticket key ring (RFC 5077 section 4's recommended
 * ticket format: key name, IV, AES-256-CBC encrypted state, HMAC-SHA256; OpenSSL frames it and
 * we supply the keys). Workers share the ring, so a ticket made by one worker resumes on any
 * other; it lives outside every configuration, so reloads keep resumption working. */
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

#include "tls/tls_priv.h"

static pthread_mutex_t tls_tickets_lock = PTHREAD_MUTEX_INITIALIZER;
static struct tls_ticket_key tls_tickets_ring[TLS_TICKET_KEYS]; /* [0] is current */
static size_t tls_tickets_n;

static uint64_t tls_tickets_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Pushes a fresh key in front, dropping the oldest when the ring is full. Lock held. */
static bool tls_tickets_rotate(uint64_t now_ms)
{
    struct tls_ticket_key k = { .created_ms = now_ms };
    if (RAND_bytes(k.name, sizeof k.name) != 1 || RAND_bytes(k.aes, sizeof k.aes) != 1 ||
        RAND_bytes(k.hmac, sizeof k.hmac) != 1) {
        OPENSSL_cleanse(&k, sizeof k);
        return false;
    }
    if (tls_tickets_n == TLS_TICKET_KEYS)
        OPENSSL_cleanse(&tls_tickets_ring[--tls_tickets_n], sizeof tls_tickets_ring[0]);
    memmove(&tls_tickets_ring[1], &tls_tickets_ring[0], tls_tickets_n * sizeof tls_tickets_ring[0]);
    tls_tickets_ring[0] = k;
    tls_tickets_n++;
    OPENSSL_cleanse(&k, sizeof k);
    return true;
}

bool tls_tickets_current(uint64_t now_ms, uint64_t rotation_ms, struct tls_ticket_key *out)
{
    bool ok = true;
    pthread_mutex_lock(&tls_tickets_lock);
    if (tls_tickets_n == 0 || now_ms >= tls_tickets_ring[0].created_ms + rotation_ms)
        ok = tls_tickets_rotate(now_ms) || tls_tickets_n > 0; /* keep the old key on failure */
    if (ok)
        *out = tls_tickets_ring[0];
    pthread_mutex_unlock(&tls_tickets_lock);
    return ok;
}

bool tls_tickets_find(const unsigned char name[16], struct tls_ticket_key *out, bool *current)
{
    bool found = false;
    pthread_mutex_lock(&tls_tickets_lock);
    for (size_t i = 0; i < tls_tickets_n && !found; i++) {
        if (CRYPTO_memcmp(tls_tickets_ring[i].name, name, sizeof tls_tickets_ring[i].name) != 0)
            continue;
        *out = tls_tickets_ring[i];
        *current = i == 0;
        found = true;
    }
    pthread_mutex_unlock(&tls_tickets_lock);
    return found;
}

void tls_tickets_reset(void)
{
    pthread_mutex_lock(&tls_tickets_lock);
    OPENSSL_cleanse(tls_tickets_ring, sizeof tls_tickets_ring);
    tls_tickets_n = 0;
    pthread_mutex_unlock(&tls_tickets_lock);
}

static int tls_tickets_set_hmac(EVP_MAC_CTX *hctx, unsigned char *key, size_t len)
{
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, key, len),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    return EVP_MAC_CTX_set_params(hctx, params) == 1 ? 0 : -1;
}

int tls_tickets_crypt(unsigned char name[16], unsigned char *iv, EVP_CIPHER_CTX *cctx,
                      EVP_MAC_CTX *hctx, int enc, uint64_t rotation_ms)
{
    struct tls_ticket_key k;
    const EVP_CIPHER *cipher = EVP_aes_256_cbc();
    int rc = -1;
    if (enc) {
        if (!tls_tickets_current(tls_tickets_now_ms(), rotation_ms, &k))
            return 0; /* no key: no ticket, the handshake goes on */
        memcpy(name, k.name, sizeof k.name);
        if (RAND_bytes(iv, EVP_CIPHER_get_iv_length(cipher)) == 1 &&
            EVP_EncryptInit_ex(cctx, cipher, NULL, k.aes, iv) == 1 &&
            tls_tickets_set_hmac(hctx, k.hmac, sizeof k.hmac) == 0)
            rc = 1;
    } else {
        bool current = false;
        if (!tls_tickets_find(name, &k, &current))
            return 0; /* retired or foreign key: a full handshake */
        if (tls_tickets_set_hmac(hctx, k.hmac, sizeof k.hmac) == 0 &&
            EVP_DecryptInit_ex(cctx, cipher, NULL, k.aes, iv) == 1)
            rc = current ? 1 : 2; /* 2: accepted, and a new ticket replaces the old-key one */
    }
    OPENSSL_cleanse(&k, sizeof k);
    return rc;
}
