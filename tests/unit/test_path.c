/* Unit tests of path normalization (RFC 3986 §5.2.4 dot-segments, merged slashes, %2e). */
#include "http/path.h"
#include "unit.h"

/* Normalizes IN; WANT NULL means it must be refused. */
static int check_norm(const char *in, const char *want)
{
    char out[256];
    int n = path_normalize(in, strlen(in), out);
    if (!want)
        return n == -1;
    if (n < 0 || (size_t)n != strlen(want) || memcmp(out, want, (size_t)n) != 0) {
        fprintf(stderr, "  %s -> %.*s (want %s)\n", in, n < 0 ? 4 : n, n < 0 ? "FAIL" : out, want);
        return 0;
    }
    return (size_t)n <= strlen(in);
}

UNIT_TEST(ordinary_paths_need_nothing)
{
    CHECK(!path_needs_normalize("/", 1));
    CHECK(!path_needs_normalize("/a/b.c/d-e_f", 12));
    CHECK(!path_needs_normalize("/file.tar.gz", 12));
    CHECK(!path_needs_normalize("/a%20b", 6));
    CHECK(path_needs_normalize("//a", 3));
    CHECK(path_needs_normalize("/a/./b", 6));
    CHECK(path_needs_normalize("/a/.hidden", 10)); /* may be ordinary: normalizing is harmless */
    CHECK(path_needs_normalize("/a/%2E%2e/b", 11));
}

UNIT_TEST(dot_segments_are_removed)
{
    CHECK(check_norm("/", "/"));
    CHECK(check_norm("/a/b/../c", "/a/c"));
    CHECK(check_norm("/public/../admin", "/admin"));
    CHECK(check_norm("/a/./b/.", "/a/b/"));
    CHECK(check_norm("/a/b/..", "/a/"));
    CHECK(check_norm("/a/..", "/"));
    CHECK(check_norm("/./", "/"));
    CHECK(check_norm("/a/.hidden/x", "/a/.hidden/x"));
    CHECK(check_norm("/a/...", "/a/..."));
    CHECK(check_norm("/a/..b/c", "/a/..b/c"));
}

UNIT_TEST(encoded_dots_count_as_dots)
{
    CHECK(check_norm("/public/%2e%2e/admin", "/admin"));
    CHECK(check_norm("/public/%2E./admin", "/admin"));
    CHECK(check_norm("/public/.%2e/admin", "/admin"));
    CHECK(check_norm("/a/%2e/b", "/a/b"));
    CHECK(check_norm("/a/file%2etxt", "/a/file%2etxt")); /* inside a name: left alone */
    CHECK(check_norm("/a/%2e%2e%2e", "/a/%2e%2e%2e"));
}

UNIT_TEST(slashes_are_merged_and_trailing_kept)
{
    CHECK(check_norm("//admin", "/admin"));
    CHECK(check_norm("/a//b///c", "/a/b/c"));
    CHECK(check_norm("/a/b/", "/a/b/"));
    CHECK(check_norm("/a/b//", "/a/b/"));
    CHECK(check_norm("///", "/"));
}

UNIT_TEST(climbing_above_the_root_is_refused)
{
    CHECK(check_norm("/..", NULL));
    CHECK(check_norm("/../etc/passwd", NULL));
    CHECK(check_norm("/a/../../b", NULL));
    CHECK(check_norm("/%2e%2e/x", NULL));
    CHECK(check_norm("/a/b/../../..", NULL));
}

UNIT_MAIN()
