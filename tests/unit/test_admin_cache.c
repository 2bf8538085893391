/* The store key the admin API's cache purge builds from a URL: the bytes the default cache key
 * (scheme, host, path, query) gives the same request. */
#include <stdbool.h>
#include <stdlib.h>

#include "admin/admin_priv.h"
#include "unit.h"

/* URL (PREFIX: as a prefix) must give KEY, or fail when KEY is NULL. */
static bool key_is(const char *url, bool prefix, const char *key)
{
    size_t len = 0;
    const char *err = NULL;
    char *got = admin_cache_url_key(url, prefix, &len, &err);
    bool ok = key ? got && len == strlen(key) && strcmp(got, key) == 0 : !got && err;
    if (!ok)
        fprintf(stderr, "  %s%s: got %s (%s), expected %s\n", prefix ? "prefix " : "", url,
                got ? got : "NULL", err ? err : "", key ? key : "an error");
    free(got);
    return ok;
}

UNIT_TEST(exact_urls)
{
    CHECK(key_is("http://example.com/a/b?x=1&y=2", false, "http://example.com/a/b?x=1&y=2"));
    CHECK(key_is("HTTPS://Example.COM:8443/A?Q=B", false, "https://example.com:8443/A?Q=B"));
    CHECK(key_is("http://example.com", false, "http://example.com/"));
    CHECK(key_is("http://example.com?q", false, "http://example.com/?q"));
    CHECK(key_is("http://example.com/a?", false, "http://example.com/a?"));
    CHECK(key_is("http://example.com/a#frag", false, "http://example.com/a"));
    CHECK(key_is("http://example.com/a?b#frag", false, "http://example.com/a?b"));
    /* the path as routing normalizes it */
    CHECK(key_is("http://h//a/./b/../c?q=/../", false, "http://h/a/c?q=/../"));
    CHECK(key_is("http://h/a/%2e%2e/b", false, "http://h/b"));
}

UNIT_TEST(prefixes)
{
    CHECK(key_is("http://Example.com/Static/", true, "http://example.com/Static/"));
    CHECK(key_is("HTTP://EXAMPLE", true, "http://example"));
    CHECK(key_is("http://", true, "http://"));
    CHECK(key_is("http://h/a/../", true, "http://h/a/../"));
}

UNIT_TEST(refused)
{
    CHECK(key_is("ftp://example.com/", false, NULL));
    CHECK(key_is("example.com/a", false, NULL));
    CHECK(key_is("/a", true, NULL));
    CHECK(key_is("http://", false, NULL));
    CHECK(key_is("http:///a", false, NULL));
    CHECK(key_is("http://user@example.com/", false, NULL));
    CHECK(key_is("http://example.com/a b", false, NULL));
    CHECK(key_is("http://example.com/\xc3\xa9", false, NULL));
    CHECK(key_is("http://example.com/../a", false, NULL));
}

UNIT_MAIN()
