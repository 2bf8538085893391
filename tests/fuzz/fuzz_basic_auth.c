/* fuzz_basic_auth: HTTP Basic credentials (RFC 7617) through basic_auth_check, and the users
 * file reader basic_auth_load.
 *
 * A users file is written once at start-up (SHA-crypt hashes at the minimum 1000 rounds, made
 * here with crypt(3), so a check costs little) and loaded the way a route loads it. Whatever the
 * Authorization value, the answer must be exactly this: yes when the value is, after optional
 * whitespace, "Basic" in any case, one or more spaces and the one standard base64 encoding of a
 * listed "user:password" pair (RFC 4648 §4: padded, no stray bits); no otherwise. When yes, the
 * user name given back is the listed one, cut to the caller's buffer.
 *
 * The first input byte picks what the rest is:
 *   0: an Authorization value, as it is;
 *   1: a byte that varies the scheme's case, the spaces around it and the user buffer size,
 *      then "user:password" bytes the harness encodes, so the fuzzer gets past the base64;
 *   2: the text of a users file, loaded (hashes are parsed, never computed: a fuzzed file could
 *      ask for a billion rounds). */
#include <crypt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "core/str.h"
#include "policy/basic_auth.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_ASSERT(cond) \
    do {                  \
        if (!(cond))      \
            abort();      \
    } while (0)

struct fuzz_user {
    const char *name;
    const char *password; /* may hold ':' (only the first colon ends the user-id) */
    const char *setting;  /* crypt(3) scheme and salt */
    char token[64];       /* base64("name:password"), made at start-up */
};

static struct fuzz_user fuzz_users[] = {
    { "alice", "wonderland", "$5$rounds=1000$fuzzsaltA$", "" },
    { "bob", "b:uilder", "$6$rounds=1000$fuzzsaltB$", "" },
    { "jos\xc3\xa9", "caf\xc3\xa9", "$5$rounds=1000$fuzzsaltJ$", "" },
    { "eve", "", "$5$rounds=1000$fuzzsaltE$", "" },
};
#define FUZZ_N_USERS (sizeof fuzz_users / sizeof fuzz_users[0])

static struct basic_auth *fuzz_ba;

static void fuzz_users_file(FILE *f)
{
    fputs("# users of the fuzz target\n\n", f);
    for (size_t i = 0; i < FUZZ_N_USERS; i++) {
        struct fuzz_user *u = &fuzz_users[i];
        struct crypt_data cd = { 0 };
        const char *hash = crypt_r(u->password, u->setting, &cd);
        if (!hash || hash[0] != '$')
            abort();
        fprintf(f, "%s:%s\n", u->name, hash);
        char cred[64];
        int n = snprintf(cred, sizeof cred, "%s:%s", u->name, u->password);
        EVP_EncodeBlock((unsigned char *)u->token, (const unsigned char *)cred, n);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char path[] = "/tmp/portero-fuzz-basic-XXXXXX", err[256];
    int fd = mkstemp(path);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f)
        abort();
    fuzz_users_file(f);
    if (fclose(f) != 0)
        abort();
    fuzz_ba = basic_auth_load(path, err, sizeof err);
    unlink(path);
    if (!fuzz_ba) {
        fprintf(stderr, "fuzz_basic_auth: %s\n", err);
        abort();
    }
    return 0;
}

/* ---- the expected answer, from RFC 7617 §2 and the header grammar ---- */

static bool fuzz_is_ows(char c) { return c == ' ' || c == '\t'; }

/* The listed user whose credentials V holds, or NULL. */
static const struct fuzz_user *fuzz_expected(struct str v)
{
    while (v.n && fuzz_is_ows(v.p[0])) {
        v.p++;
        v.n--;
    }
    while (v.n && fuzz_is_ows(v.p[v.n - 1]))
        v.n--;
    if (v.n < 6 || !str_ieq(str_make(v.p, 5), STR_LIT("basic")) || v.p[5] != ' ')
        return NULL;
    size_t i = 5;
    while (i < v.n && v.p[i] == ' ')
        i++;
    struct str token = str_make(v.p + i, v.n - i);
    for (size_t k = 0; k < FUZZ_N_USERS; k++)
        if (str_eq(token, str_make(fuzz_users[k].token, strlen(fuzz_users[k].token))))
            return &fuzz_users[k];
    return NULL;
}

/* Checks VALUE (copied to an exact-size buffer, so a read past it is caught). */
static void fuzz_check(const char *value, size_t len, size_t user_cap)
{
    char *copy = malloc(len ? len : 1);
    if (len)
        memcpy(copy, value, len);
    char *user = malloc(user_cap ? user_cap : 1);
    memset(user, 'Z', user_cap ? user_cap : 1);
    bool ok = basic_auth_check(fuzz_ba, copy, len, user_cap ? user : NULL, user_cap);
    const struct fuzz_user *want = fuzz_expected(str_make(value, len));
    FUZZ_ASSERT(ok == (want != NULL));
    if (ok && user_cap) {
        size_t n = strlen(want->name) < user_cap - 1 ? strlen(want->name) : user_cap - 1;
        FUZZ_ASSERT(memcmp(user, want->name, n) == 0 && user[n] == '\0');
    }
    free(user);
    free(copy);
}

/* ---- 1: encode what the fuzzer gives ---- */

/* IN[0] picks the variations, the rest is encoded. */
static void fuzz_encoded(const uint8_t *in, size_t n)
{
    if (n == 0 || n > 1200) /* past the 1024 bytes a check decodes; longer only costs time */
        return;
    uint8_t sel = in[0];
    const uint8_t *cred = in + 1;
    n--;
    static const char *const schemes[4] = { "Basic", "basic", "BASIC", "bAsIc" };
    static const size_t user_caps[4] = { 128, 0, 1, 4 };
    char *value = malloc(8 + 4 * ((n + 2) / 3) + 8);
    size_t len = 0;
    if (sel & 0x04)
        value[len++] = (sel & 0x08) ? '\t' : ' ';
    memcpy(value + len, schemes[(sel >> 4) & 3], 5);
    len += 5;
    value[len++] = ' ';
    if (sel & 0x40)
        value[len++] = ' ';
    len += (size_t)EVP_EncodeBlock((unsigned char *)value + len, cred, (int)n);
    if (sel & 0x80)
        value[len++] = ' ';
    fuzz_check(value, len, user_caps[sel & 3]);
    free(value);
}

/* ---- 2: users files ---- */

static void fuzz_load(const uint8_t *text, size_t n)
{
    int fd = memfd_create("fuzz-users", MFD_CLOEXEC);
    if (fd < 0 || (n && write(fd, text, n) != (ssize_t)n))
        abort();
    char path[64], err[512];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    memset(err, 0, sizeof err);
    struct basic_auth *ba = basic_auth_load(path, err, sizeof err);
    /* a refusal always says why, naming the file first */
    FUZZ_ASSERT(ba || (strncmp(err, path, strlen(path)) == 0 && err[strlen(path)] == ':'));
    FUZZ_ASSERT(!ba || err[0] == '\0');
    basic_auth_free(ba);
    close(fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const uint8_t *rest = data + 1;
    size_t n = size - 1;
    switch (data[0] % 3) {
    case 0:
        fuzz_check((const char *)rest, n, BASIC_AUTH_MAX_USER + 1);
        break;
    case 1:
        fuzz_encoded(rest, n);
        break;
    default:
        fuzz_load(rest, n);
        break;
    }
    return 0;
}
