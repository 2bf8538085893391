#include "policy/basic_auth.h"

#include <crypt.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "core/str.h"
#include "policy/base64.h"

/* Decoded "user:password" longer than this is refused: bcrypt reads 72 bytes anyway. */
#define BASIC_AUTH_MAX_CREDENTIALS 1024
/* The verified-credentials cache: 16 shards x 64 entries, each good for 5 minutes. */
#define BASIC_AUTH_SHARDS 16
#define BASIC_AUTH_SLOTS 64
#define BASIC_AUTH_TTL_NS (300ull * 1000000000ull)
#define BASIC_AUTH_DIGEST 32

struct basic_auth_user {
    char *name;     /* owned */
    char *hash;     /* owned */
    unsigned line;  /* where the file lists it, for duplicate messages */
};

/* SHA-256(key, user, NUL, password) of credentials that verified; expires_ns 0 = empty. */
struct basic_auth_slot {
    unsigned char digest[BASIC_AUTH_DIGEST];
    uint64_t expires_ns;
};

struct basic_auth_shard {
    pthread_mutex_t lock;
    struct basic_auth_slot slots[BASIC_AUTH_SLOTS];
};

struct basic_auth {
    struct basic_auth_user *users;  /* owned, sorted by name */
    size_t n_users;
    const char *dummy_hash;         /* borrowed from users[0]: the work done for unknown users */
    unsigned char cache_key[32];    /* random per load, so digests mean nothing elsewhere */
    struct basic_auth_shard shards[BASIC_AUTH_SHARDS];
};

__attribute__((format(printf, 3, 4)))
static void basic_auth_err(char *err, size_t cap, const char *fmt, ...)
{
    if (!cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
}

/* ---------------------------------------------------------------------------------------
 * Hash schemes */

/* The crypt(3) base-64 alphabet: "./0-9A-Za-z". */
static bool basic_auth_crypt64(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!(c == '.' || c == '/' || (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') ||
              (c >= 'a' && c <= 'z')))
            return false;
    }
    return true;
}

/* "$2b$CC$" + 22 salt and 31 hash characters. The cost CC is capped where htpasswd caps it
 * (04..17): each step doubles the time a request waits. */
static bool basic_auth_bcrypt_ok(const char *h)
{
    if (strlen(h) != 60 || h[4] < '0' || h[4] > '1' || h[5] < '0' || h[5] > '9' || h[6] != '$')
        return false;
    int cost = (h[4] - '0') * 10 + (h[5] - '0');
    return cost >= 4 && cost <= 17 && basic_auth_crypt64(h + 7, 53);
}

/* After "$5$" / "$6$": optional "rounds=N$", a salt of up to 16 characters, '$', and the hash
 * (43 characters for SHA-256, 86 for SHA-512). */
static bool basic_auth_shacrypt_ok(const char *p, size_t hash_len)
{
    if (strncmp(p, "rounds=", 7) == 0) {
        size_t digits = strspn(p + 7, "0123456789");
        if (digits == 0 || digits > 9 || p[7 + digits] != '$')
            return false;
        p += 7 + digits + 1;
    }
    const char *dollar = strchr(p, '$');
    if (!dollar || dollar - p > 16 || !basic_auth_crypt64(p, (size_t)(dollar - p)))
        return false;
    return strlen(dollar + 1) == hash_len && basic_auth_crypt64(dollar + 1, hash_len);
}

/* NULL when HASH is of a scheme we accept and well formed, else why not. */
static const char *basic_auth_hash_problem(const char *h)
{
    if (strlen(h) >= BASIC_AUTH_MAX_HASH)
        return "hash too long";
    if (!strncmp(h, "$2a$", 4) || !strncmp(h, "$2b$", 4) || !strncmp(h, "$2y$", 4))
        return basic_auth_bcrypt_ok(h) ? NULL : "malformed bcrypt hash (or cost above 17)";
    if (!strncmp(h, "$5$", 3))
        return basic_auth_shacrypt_ok(h + 3, 43) ? NULL : "malformed SHA-256-crypt hash";
    if (!strncmp(h, "$6$", 3))
        return basic_auth_shacrypt_ok(h + 3, 86) ? NULL : "malformed SHA-512-crypt hash";
    if (!strncmp(h, "$apr1$", 6) || !strncmp(h, "$1$", 3))
        return "MD5 hashes are not accepted (use bcrypt: htpasswd -B)";
    if (!strncmp(h, "{SHA}", 5))
        return "SHA-1 hashes are not accepted (use bcrypt: htpasswd -B)";
    return "unsupported hash scheme (plain text or DES?): use bcrypt ($2y$), $5$ or $6$";
}

/* ---------------------------------------------------------------------------------------
 * Loading */

static bool basic_auth_has_ctl(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return true;
    return false;
}

static int basic_auth_add(struct basic_auth *ba, const char *name, size_t name_len,
                          const char *hash, unsigned line)
{
    struct basic_auth_user *users = realloc(ba->users, (ba->n_users + 1) * sizeof *users);
    if (!users)
        return -1;
    ba->users = users;
    struct basic_auth_user *u = &users[ba->n_users];
    u->name = strndup(name, name_len);
    u->hash = strdup(hash);
    u->line = line;
    if (!u->name || !u->hash) {
        free(u->name);
        free(u->hash);
        return -1;
    }
    ba->n_users++;
    return 0;
}

/* One line of the file, its end of line already cut. Returns 0 or -1 with ERR filled. */
static int basic_auth_line(struct basic_auth *ba, const char *path, unsigned lineno, char *line,
                           char *err, size_t cap)
{
    size_t len = strlen(line);
    while (len && (line[len - 1] == ' ' || line[len - 1] == '\t' || line[len - 1] == '\r'))
        line[--len] = '\0';
    const char *start = line + strspn(line, " \t");
    if (*start == '\0' || *start == '#')
        return 0;
    const char *colon = strchr(line, ':');
    const char *problem = NULL;
    if (!colon)
        problem = "expected user:hash";
    else if (colon == line)
        problem = "empty user name";
    else if (colon - line > BASIC_AUTH_MAX_USER)
        problem = "user name longer than 127 bytes";
    else if (basic_auth_has_ctl(line, (size_t)(colon - line)))
        problem = "user name holds a control character";
    else
        problem = basic_auth_hash_problem(colon + 1);
    if (problem) {
        basic_auth_err(err, cap, "%s:%u: %s", path, lineno, problem);
        return -1;
    }
    if (basic_auth_add(ba, line, (size_t)(colon - line), colon + 1, lineno) < 0) {
        basic_auth_err(err, cap, "%s:%u: out of memory", path, lineno);
        return -1;
    }
    return 0;
}

static int basic_auth_read(struct basic_auth *ba, const char *path, char *err, size_t cap)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        basic_auth_err(err, cap, "%s: %s", path, strerror(errno));
        return -1;
    }
    char *line = NULL;
    size_t line_cap = 0;
    unsigned lineno = 0;
    int rc = 0;
    while (rc == 0 && getline(&line, &line_cap, f) >= 0) {
        line[strcspn(line, "\n")] = '\0';
        rc = basic_auth_line(ba, path, ++lineno, line, err, cap);
    }
    if (rc == 0 && ferror(f)) {
        basic_auth_err(err, cap, "%s: %s", path, strerror(errno));
        rc = -1;
    }
    free(line);
    fclose(f);
    return rc;
}

static int basic_auth_user_cmp(const void *a, const void *b)
{
    return strcmp(((const struct basic_auth_user *)a)->name,
                  ((const struct basic_auth_user *)b)->name);
}

/* Sorts the users for lookup and refuses a name listed twice (which line would win?). */
static int basic_auth_index(struct basic_auth *ba, const char *path, char *err, size_t cap)
{
    if (ba->n_users == 0) {
        basic_auth_err(err, cap, "%s: no users", path);
        return -1;
    }
    ba->dummy_hash = ba->users[0].hash;
    qsort(ba->users, ba->n_users, sizeof *ba->users, basic_auth_user_cmp);
    for (size_t i = 1; i < ba->n_users; i++) {
        const struct basic_auth_user *a = &ba->users[i - 1], *b = &ba->users[i];
        if (strcmp(a->name, b->name) == 0) {
            unsigned first = a->line < b->line ? a->line : b->line;
            unsigned second = a->line < b->line ? b->line : a->line;
            basic_auth_err(err, cap, "%s:%u: user \"%s\" is already listed on line %u", path,
                           second, a->name, first);
            return -1;
        }
    }
    return 0;
}

struct basic_auth *basic_auth_load(const char *path, char *err, size_t cap)
{
    struct basic_auth *ba = calloc(1, sizeof *ba);
    if (!ba) {
        basic_auth_err(err, cap, "%s: out of memory", path);
        return NULL;
    }
    for (size_t i = 0; i < BASIC_AUTH_SHARDS; i++)
        pthread_mutex_init(&ba->shards[i].lock, NULL);
    if (basic_auth_read(ba, path, err, cap) < 0 || basic_auth_index(ba, path, err, cap) < 0) {
        basic_auth_free(ba);
        return NULL;
    }
    if (RAND_bytes(ba->cache_key, sizeof ba->cache_key) != 1) {
        basic_auth_err(err, cap, "%s: no randomness for the credentials cache", path);
        basic_auth_free(ba);
        return NULL;
    }
    return ba;
}

void basic_auth_free(struct basic_auth *ba)
{
    if (!ba)
        return;
    for (size_t i = 0; i < ba->n_users; i++) {
        free(ba->users[i].name);
        free(ba->users[i].hash);
    }
    free(ba->users);
    for (size_t i = 0; i < BASIC_AUTH_SHARDS; i++)
        pthread_mutex_destroy(&ba->shards[i].lock);
    OPENSSL_cleanse(ba, sizeof *ba);
    free(ba);
}

/* ---------------------------------------------------------------------------------------
 * Cache of verified credentials */

static uint64_t basic_auth_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* CRED holds "user\0password" (N bytes). */
static bool basic_auth_digest(const struct basic_auth *ba, const char *cred, size_t n,
                              unsigned char out[BASIC_AUTH_DIGEST])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    bool ok = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 &&
              EVP_DigestUpdate(md, ba->cache_key, sizeof ba->cache_key) == 1 &&
              EVP_DigestUpdate(md, cred, n) == 1 && EVP_DigestFinal_ex(md, out, NULL) == 1;
    EVP_MD_CTX_free(md);
    return ok;
}

static bool basic_auth_cache_hit(struct basic_auth *ba, const unsigned char *digest)
{
    struct basic_auth_shard *sh = &ba->shards[digest[0] % BASIC_AUTH_SHARDS];
    uint64_t now = basic_auth_now_ns();
    bool hit = false;
    pthread_mutex_lock(&sh->lock);
    for (size_t i = 0; i < BASIC_AUTH_SLOTS && !hit; i++)
        hit = sh->slots[i].expires_ns > now &&
              CRYPTO_memcmp(sh->slots[i].digest, digest, BASIC_AUTH_DIGEST) == 0;
    pthread_mutex_unlock(&sh->lock);
    return hit;
}

/* Takes an empty or expired slot, else evicts the one closest to expiry. */
static void basic_auth_cache_put(struct basic_auth *ba, const unsigned char *digest)
{
    struct basic_auth_shard *sh = &ba->shards[digest[0] % BASIC_AUTH_SHARDS];
    uint64_t now = basic_auth_now_ns();
    pthread_mutex_lock(&sh->lock);
    struct basic_auth_slot *victim = &sh->slots[0];
    for (size_t i = 0; i < BASIC_AUTH_SLOTS; i++) {
        struct basic_auth_slot *s = &sh->slots[i];
        if (s->expires_ns <= now || memcmp(s->digest, digest, BASIC_AUTH_DIGEST) == 0) {
            victim = s;
            break;
        }
        if (s->expires_ns < victim->expires_ns)
            victim = s;
    }
    memcpy(victim->digest, digest, BASIC_AUTH_DIGEST);
    victim->expires_ns = now + BASIC_AUTH_TTL_NS;
    pthread_mutex_unlock(&sh->lock);
}

/* ---------------------------------------------------------------------------------------
 * Checking */

static const struct basic_auth_user *basic_auth_find(const struct basic_auth *ba,
                                                     const char *name)
{
    struct basic_auth_user key = { .name = (char *)name };
    return bsearch(&key, ba->users, ba->n_users, sizeof *ba->users, basic_auth_user_cmp);
}

/* RFC 7617 §2: credentials = "Basic" 1*SP token68, the scheme case-insensitive (RFC 9110
 * §11.1). Decodes into CRED (BASIC_AUTH_MAX_CREDENTIALS + 1 bytes); returns the length or -1. */
static ssize_t basic_auth_decode(const char *value, size_t len, char *cred)
{
    struct str v = str_trim_ows(str_make(value, len));
    if (v.n < 6 || !str_ieq_cstr(str_make(v.p, 5), "Basic") || v.p[5] != ' ')
        return -1;
    struct str token = str_make(v.p + 6, v.n - 6);
    while (token.n && token.p[0] == ' ') {
        token.p++;
        token.n--;
    }
    if (BASE64_DECODED_MAX(token.n) > BASIC_AUTH_MAX_CREDENTIALS)
        return -1;
    ssize_t n = base64_decode(token.p, token.n, (unsigned char *)cred);
    /* The user-id and password MUST NOT contain control characters (RFC 7617 §2). */
    if (n < 0 || basic_auth_has_ctl(cred, (size_t)n))
        return -1;
    return n;
}

/* Copies S into OUT (CAP bytes), cut to fit: a cut user name is an unknown one anyway (names
 * are at most BASIC_AUTH_MAX_USER), and hashes are shorter than BASIC_AUTH_MAX_HASH. */
static void basic_auth_copy(char *out, size_t cap, const char *s)
{
    size_t n = strnlen(s, cap - 1);
    memcpy(out, s, n);
    out[n] = '\0';
}

enum basic_auth_answer basic_auth_check_fast(struct basic_auth *ba, const char *value, size_t len,
                                             char *user, size_t user_cap,
                                             struct basic_auth_pending *p)
{
    char cred[BASIC_AUTH_MAX_CREDENTIALS + 1];
    if (!ba || !value)
        return BASIC_AUTH_REFUSED;
    ssize_t n = basic_auth_decode(value, len, cred);
    char *colon = n > 0 ? memchr(cred, ':', (size_t)n) : NULL;
    enum basic_auth_answer answer = BASIC_AUTH_REFUSED;
    if (colon) {
        /* The user-id ends at the first colon (RFC 7617 §2); "user\0password" feeds the digest. */
        *colon = '\0';
        cred[n] = '\0';
        answer = basic_auth_digest(ba, cred, (size_t)n, p->digest) ? BASIC_AUTH_SLOW : BASIC_AUTH_REFUSED;
    }
    if (answer == BASIC_AUTH_SLOW && basic_auth_cache_hit(ba, p->digest)) {
        answer = BASIC_AUTH_OK;
        if (user && user_cap)
            snprintf(user, user_cap, "%s", cred);
    } else if (answer == BASIC_AUTH_SLOW) {
        /* An unknown user is hashed against the dummy, so the answer takes as long. */
        const struct basic_auth_user *u = basic_auth_find(ba, cred);
        p->known = u != NULL;
        basic_auth_copy(p->user, sizeof p->user, cred);
        basic_auth_copy(p->password, sizeof p->password, colon + 1);
        basic_auth_copy(p->hash, sizeof p->hash, u ? u->hash : ba->dummy_hash);
        p->ok = false;
    }
    OPENSSL_cleanse(cred, sizeof cred);
    return answer;
}

void basic_auth_check_slow(struct basic_auth_pending *p)
{
    const char *out = crypt_rn(p->password, p->hash, &p->work, sizeof p->work);
    size_t n = strlen(p->hash);
    bool match = out && strlen(out) == n && CRYPTO_memcmp(out, p->hash, n) == 0;
    p->ok = match && p->known;
    OPENSSL_cleanse(&p->work, sizeof p->work);
}

void basic_auth_pending_clear(struct basic_auth_pending *p)
{
    OPENSSL_cleanse(p->password, sizeof p->password);
    OPENSSL_cleanse(p->digest, sizeof p->digest);
}

void basic_auth_remember(struct basic_auth *ba, struct basic_auth_pending *p, char *user,
                         size_t user_cap)
{
    if (p->ok) {
        basic_auth_cache_put(ba, p->digest);
        if (user && user_cap)
            snprintf(user, user_cap, "%s", p->user);
    }
    basic_auth_pending_clear(p);
}

bool basic_auth_check(struct basic_auth *ba, const char *value, size_t len, char *user,
                      size_t user_cap)
{
    struct basic_auth_pending *p = calloc(1, sizeof *p); /* crypt's scratch is 32 KiB */
    if (!p)
        return false;
    enum basic_auth_answer a = basic_auth_check_fast(ba, value, len, user, user_cap, p);
    bool ok = a == BASIC_AUTH_OK;
    if (a == BASIC_AUTH_SLOW) {
        basic_auth_check_slow(p);
        ok = p->ok;
        basic_auth_remember(ba, p, user, user_cap);
    }
    basic_auth_pending_clear(p);
    free(p);
    return ok;
}
