/* Unit tests of HTTP Basic authentication (policy/basic_auth): users files with bcrypt and
 * SHA-crypt hashes made here with crypt(3), header parsing (RFC 7617 §2), the verified-
 * credentials cache, and load errors that name the file and line. */
#include "unit.h"

#include <crypt.h>
#include <pthread.h>
#include <stdbool.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "policy/basic_auth.h"

static char dir[64];
static char written[64][128]; /* paths write_file made, removed at exit */
static size_t n_written;

static void remove_tmp_dir(void)
{
    for (size_t i = 0; i < n_written; i++)
        unlink(written[i]);
    if (rmdir(dir) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

/* A temporary directory for this binary's files, made once. */
static const char *tmp_dir(void)
{
    if (!dir[0]) {
        strcpy(dir, "/tmp/portero-basic-XXXXXX");
        if (!mkdtemp(dir))
            abort();
        atexit(remove_tmp_dir);
    }
    return dir;
}

/* Writes TEXT to a file NAME in the temporary directory; returns its path (static buffer). */
static const char *write_file(const char *name, const char *text)
{
    static char path[128];
    snprintf(path, sizeof path, "%s/%s", tmp_dir(), name);
    FILE *f = fopen(path, "w");
    if (!f)
        abort();
    fputs(text, f);
    fclose(f);
    bool known = false;
    for (size_t i = 0; i < n_written; i++)
        known = known || strcmp(written[i], path) == 0;
    if (!known && n_written < sizeof written / sizeof *written)
        snprintf(written[n_written++], sizeof *written, "%s", path);
    return path;
}

/* Hashes PASSWORD with a fresh salt of scheme PREFIX ("$2b$", "$5$", ...) at COST. */
static void make_hash(const char *prefix, unsigned long cost, const char *password, char *out,
                      size_t cap)
{
    char salt[CRYPT_GENSALT_OUTPUT_SIZE];
    struct crypt_data cd;
    memset(&cd, 0, sizeof cd);
    if (!crypt_gensalt_rn(prefix, cost, NULL, 0, salt, sizeof salt))
        abort();
    const char *h = crypt_r(password, salt, &cd);
    if (!h || h[0] == '*')
        abort();
    snprintf(out, cap, "%s", h);
}

/* "Basic " + base64(CRED) with SCHEME in place of "Basic" when given. */
static const char *header(const char *scheme, const char *cred)
{
    static char out[4096];
    int n = snprintf(out, sizeof out, "%s ", scheme);
    EVP_EncodeBlock((unsigned char *)out + n, (const unsigned char *)cred, (int)strlen(cred));
    return out;
}

/* OUT = A + B; the tests size OUT for what they join. */
static void join(char *out, size_t cap, const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    if (na + nb >= cap)
        abort();
    memcpy(out, a, na);
    memcpy(out + na, b, nb + 1);
}

static bool check(struct basic_auth *ba, const char *value)
{
    return basic_auth_check(ba, value, strlen(value), NULL, 0);
}

/* The users file most tests share: alice (bcrypt $2b$), bob ($5$), carol ($6$), dave ($2y$),
 * erin (a password holding colons), with comments, blank lines and a CRLF line. */
static struct basic_auth *load_users(void)
{
    static char text[4096];
    char a[128], b[128], c[160], d[128], e[128];
    make_hash("$2b$", 5, "alice-pw", a, sizeof a);
    make_hash("$5$", 0, "bob-pw", b, sizeof b);
    make_hash("$6$", 0, "carol-pw", c, sizeof c);
    make_hash("$2y$", 5, "dave-pw", d, sizeof d);
    make_hash("$5$", 0, "e:r:i:n", e, sizeof e);
    snprintf(text, sizeof text, "# users\nalice:%s\n\n   \nbob:%s\r\n  # indented comment\n"
             "carol:%s\ndave:%s\nerin:%s", a, b, c, d, e);
    char err[256] = "";
    struct basic_auth *ba = basic_auth_load(write_file("users", text), err, sizeof err);
    if (!ba)
        fprintf(stderr, "  load failed: %s\n", err);
    return ba;
}

UNIT_TEST(test_good_passwords_each_scheme)
{
    struct basic_auth *ba = load_users();
    CHECK(ba != NULL);
    if (!ba)
        return;
    char user[64] = "";
    const char *h = header("Basic", "alice:alice-pw");
    CHECK(basic_auth_check(ba, h, strlen(h), user, sizeof user));
    CHECK(strcmp(user, "alice") == 0);
    h = header("Basic", "bob:bob-pw");
    CHECK(basic_auth_check(ba, h, strlen(h), user, sizeof user));
    CHECK(strcmp(user, "bob") == 0);
    CHECK(check(ba, header("Basic", "carol:carol-pw")));
    CHECK(check(ba, header("Basic", "dave:dave-pw")));
    /* The user-id ends at the first colon; the password may hold more. */
    CHECK(check(ba, header("Basic", "erin:e:r:i:n")));
    basic_auth_free(ba);
}

UNIT_TEST(test_wrong_passwords_and_unknown_users)
{
    struct basic_auth *ba = load_users();
    CHECK(ba != NULL);
    if (!ba)
        return;
    char user[64] = "untouched";
    const char *h = header("Basic", "alice:wrong");
    CHECK(!basic_auth_check(ba, h, strlen(h), user, sizeof user));
    CHECK(strcmp(user, "untouched") == 0);
    CHECK(!check(ba, header("Basic", "alice:alice-pw ")));
    CHECK(!check(ba, header("Basic", "alice:")));
    CHECK(!check(ba, header("Basic", "bob:alice-pw")));
    CHECK(!check(ba, header("Basic", "carol:CAROL-PW")));
    CHECK(!check(ba, header("Basic", "mallory:alice-pw")));
    CHECK(!check(ba, header("Basic", "Alice:alice-pw")));
    CHECK(!check(ba, header("Basic", ":alice-pw")));
    CHECK(!check(ba, header("Basic", "erin:e")));
    /* A wrong password checked twice is refused twice: failures are never remembered as good. */
    CHECK(!check(ba, header("Basic", "dave:nope")));
    CHECK(!check(ba, header("Basic", "dave:nope")));
    CHECK(check(ba, header("Basic", "dave:dave-pw")));
    basic_auth_free(ba);
}

UNIT_TEST(test_header_forms)
{
    struct basic_auth *ba = load_users();
    CHECK(ba != NULL);
    if (!ba)
        return;
    /* The scheme is case-insensitive; optional whitespace around the value is ignored. */
    CHECK(check(ba, header("basic", "bob:bob-pw")));
    CHECK(check(ba, header("BASIC", "bob:bob-pw")));
    char v[256];
    snprintf(v, sizeof v, " %s\t", header("Basic", "bob:bob-pw"));
    CHECK(check(ba, v));
    join(v, sizeof v, "Basic   ", header("Basic", "bob:bob-pw") + 6);
    CHECK(check(ba, v));
    /* Not Basic, no credentials, or credentials that are not strict base64 of user:pass. */
    CHECK(!check(ba, header("Bearer", "bob:bob-pw")));
    CHECK(!check(ba, header("Basicx", "bob:bob-pw")));
    CHECK(!check(ba, header("Basic", "bob")));
    CHECK(!check(ba, "Basic"));
    CHECK(!check(ba, "Basic "));
    CHECK(!check(ba, ""));
    CHECK(!check(ba, "Basic Ym9iOmJvYi1wdw"));     /* "bob:bob-pw" without its padding */
    CHECK(check(ba, "Basic Ym9iOmJvYi1wdw=="));    /* ... and with it */
    CHECK(!check(ba, "Basic Ym9iOmJvYi1wdw==="));
    CHECK(!check(ba, "Basic Ym9iOmJv Yi1wdw=="));
    CHECK(!check(ba, "Basic Ym9iOmJvYi1wdx=="));   /* non-zero unused bits */
    CHECK(!check(ba, "Basic Ym9iOmJvYi1wdw=\x80"));
    join(v, sizeof v, "Basic\t", header("Basic", "bob:bob-pw") + 6);
    CHECK(!check(ba, v));
    /* Control characters are not allowed in user-id or password (RFC 7617 §2). */
    CHECK(!check(ba, header("Basic", "bob:bob-pw\n")));
    CHECK(!check(ba, header("Basic", "bob\t:bob-pw")));
    /* Far too long. */
    char big[1600];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    big[3] = ':';
    CHECK(!check(ba, header("Basic", big)));
    /* LEN bounds the value: the same bytes with a shorter length are refused. */
    const char *h = header("Basic", "bob:bob-pw");
    CHECK(!basic_auth_check(ba, h, strlen(h) - 2, NULL, 0));
    basic_auth_free(ba);
}

UNIT_TEST(test_user_copy_truncates)
{
    struct basic_auth *ba = load_users();
    CHECK(ba != NULL);
    if (!ba)
        return;
    char user[4];
    memset(user, 'x', sizeof user);
    const char *h = header("Basic", "carol:carol-pw");
    CHECK(basic_auth_check(ba, h, strlen(h), user, sizeof user));
    CHECK(strcmp(user, "car") == 0);
    basic_auth_free(ba);
}

static double elapsed_ms(const struct timespec *a, const struct timespec *b)
{
    return (double)(b->tv_sec - a->tv_sec) * 1e3 + (double)(b->tv_nsec - a->tv_nsec) / 1e6;
}

static double timed_check(struct basic_auth *ba, const char *value, bool *ok)
{
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    *ok = check(ba, value);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return elapsed_ms(&t0, &t1);
}

/* With a bcrypt cost of 10 a verification takes tens of milliseconds; verified credentials are
 * then answered from the cache, while wrong passwords and unknown users pay the full price. */
UNIT_TEST(test_cache_and_timing)
{
    char h[128], text[256], err[256] = "";
    make_hash("$2b$", 10, "slow-pw", h, sizeof h);
    snprintf(text, sizeof text, "slow:%s\n", h);
    struct basic_auth *ba = basic_auth_load(write_file("slow", text), err, sizeof err);
    CHECK(ba != NULL);
    if (!ba)
        return;
    bool ok;
    double first = timed_check(ba, header("Basic", "slow:slow-pw"), &ok);
    CHECK(ok);
    double second = timed_check(ba, header("Basic", "slow:slow-pw"), &ok);
    CHECK(ok);
    CHECK(second * 20 < first);
    double wrong = timed_check(ba, header("Basic", "slow:slow-pw2"), &ok);
    CHECK(!ok);
    CHECK(wrong * 3 > first);
    double unknown = timed_check(ba, header("Basic", "nobody:slow-pw"), &ok);
    CHECK(!ok);
    CHECK(unknown * 3 > first);
    /* Still refused the second time: nothing about it was cached. */
    unknown = timed_check(ba, header("Basic", "nobody:slow-pw"), &ok);
    CHECK(!ok);
    CHECK(unknown * 3 > first);
    basic_auth_free(ba);
}

struct worker_arg {
    struct basic_auth *ba;
    const char *values[2]; /* encoded before the threads start: header() is not reentrant */
    int good;
};

static void *worker(void *p)
{
    struct worker_arg *a = p;
    for (int i = 0; i < 50; i++)
        if (check(a->ba, a->values[i % 2]))
            a->good++;
    return NULL;
}

UNIT_TEST(test_threads_share_one_set)
{
    struct basic_auth *ba = load_users();
    CHECK(ba != NULL);
    if (!ba)
        return;
    char alice[128], bob[128];
    join(alice, sizeof alice, "", header("Basic", "alice:alice-pw"));
    join(bob, sizeof bob, "", header("Basic", "bob:bob-pw"));
    pthread_t t[4];
    struct worker_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (struct worker_arg){ ba, { alice, bob }, 0 };
        pthread_create(&t[i], NULL, worker, &args[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        CHECK_EQ_INT(args[i].good, 50);
    }
    basic_auth_free(ba);
}

/* Loading FILE_TEXT fails with an error holding EXPECT. */
static bool load_fails(const char *name, const char *file_text, const char *expect)
{
    char err[256] = "";
    const char *path = write_file(name, file_text);
    struct basic_auth *ba = basic_auth_load(path, err, sizeof err);
    if (ba) {
        basic_auth_free(ba);
        fprintf(stderr, "  %s: loaded\n", name);
        return false;
    }
    if (!strstr(err, expect) || !strstr(err, path)) {
        fprintf(stderr, "  %s: error \"%s\", expected \"%s\"\n", name, err, expect);
        return false;
    }
    return true;
}

UNIT_TEST(test_load_errors)
{
    char err[256] = "";
    CHECK(basic_auth_load("/nonexistent/portero-users", err, sizeof err) == NULL);
    CHECK(strstr(err, "/nonexistent/portero-users") != NULL);
    char good[128], text[512];
    make_hash("$2b$", 4, "pw", good, sizeof good);
    snprintf(text, sizeof text, "a:%s\n# c\nno colon here\n", good);
    CHECK(load_fails("nocolon", text, ":3: expected user:hash"));
    CHECK(load_fails("plain", "a:secret\n", ":1: unsupported hash"));
    CHECK(load_fails("des", "a:abJnggxhB/yWI\n", ":1: unsupported hash"));
    CHECK(load_fails("apr1", "a:$apr1$Ab3lYd5e$Yo3h7JG8cV8XtTW3LIdF0.\n", ":1: MD5"));
    CHECK(load_fails("md5", "\na:$1$DlchHInZ$stXwLFUkht3rDcDQPFFPD/\n", ":2: MD5"));
    CHECK(load_fails("sha1", "a:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n", ":1: SHA-1"));
    CHECK(load_fails("empty", "# nobody\n\n", "no users"));
    snprintf(text, sizeof text, ":%s\n", good);
    CHECK(load_fails("noname", text, ":1: empty user name"));
    snprintf(text, sizeof text, "a:%s\nb:%s\na:%s\n", good, good, good);
    CHECK(load_fails("dup", text, ":3: user \"a\" is already listed on line 1"));
    snprintf(text, sizeof text, "%0200d:%s\n", 0, good);
    CHECK(load_fails("long", text, ":1: user name longer"));
    /* Truncated, cost out of range, bad characters. */
    snprintf(text, sizeof text, "a:%.50s\n", good);
    CHECK(load_fails("short", text, ":1: malformed bcrypt"));
    snprintf(text, sizeof text, "a:$2b$18$%s\n", good + 7);
    CHECK(load_fails("cost", text, ":1: malformed bcrypt"));
    snprintf(text, sizeof text, "a:%.59s!\n", good);
    CHECK(load_fails("chars", text, ":1: malformed bcrypt"));
    CHECK(load_fails("sha", "a:$5$salt$tooshort\n", ":1: malformed SHA-256"));
    CHECK(load_fails("sha6", "a:$6$rounds=x$salt$abc\n", ":1: malformed SHA-512"));
    /* A zero-capacity error buffer is left alone. */
    CHECK(basic_auth_load("/nonexistent/portero-users", NULL, 0) == NULL);
}

UNIT_TEST(test_sha_crypt_rounds_accepted)
{
    char h[160], text[256], err[256] = "";
    make_hash("$6$", 6000, "r-pw", h, sizeof h);
    CHECK(strstr(h, "rounds=6000$") != NULL);
    snprintf(text, sizeof text, "r:%s\n", h);
    struct basic_auth *ba = basic_auth_load(write_file("rounds", text), err, sizeof err);
    CHECK(ba != NULL);
    if (!ba)
        return;
    CHECK(check(ba, header("Basic", "r:r-pw")));
    CHECK(!check(ba, header("Basic", "r:r-pw!")));
    basic_auth_free(ba);
}

UNIT_MAIN()
