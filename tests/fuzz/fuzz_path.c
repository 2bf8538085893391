/* libFuzzer target: path normalization (src/http/path.c). Checks, for any bytes:
 * - the result is never longer than the input, starts with "/", holds no "//" and no "." or ".."
 *   segment (also spelled with %2e);
 * - it is a fixed point: normalizing it again changes nothing;
 * - path_needs_normalize() false means the path is already normal (the fast path is safe);
 * - refusal happens only for paths that climb above the root. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http/path.h"

static int fuzz_is_dot_segment(const char *s, size_t n)
{
    size_t dots = 0;
    for (size_t i = 0; i < n; dots++) {
        if (s[i] == '.')
            i++;
        else if (n - i >= 3 && strncasecmp(s + i, "%2e", 3) == 0)
            i += 3;
        else
            return 0;
    }
    return dots == 1 || dots == 2;
}

static void fuzz_check_normal(const char *p, size_t n)
{
    if (n == 0 || p[0] != '/')
        abort();
    for (size_t i = 0; i + 1 < n; i++)
        if (p[i] == '/' && p[i + 1] == '/')
            abort();
    for (size_t i = 0; i < n;) {
        size_t j = i + 1;
        while (j < n && p[j] != '/')
            j++;
        if (fuzz_is_dot_segment(p + i + 1, j - i - 1))
            abort();
        i = j;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    char *in = malloc(size + 1), *out = malloc(size + 1), *again = malloc(size + 1);
    in[0] = '/'; /* origin-form paths start with "/" (the parser guarantees it) */
    memcpy(in + 1, data, size);
    size_t len = size + 1;
    int n = path_normalize(in, len, out);
    if (n >= 0) {
        if ((size_t)n > len)
            abort();
        fuzz_check_normal(out, (size_t)n);
        int m = path_normalize(out, (size_t)n, again);
        if (m != n || memcmp(out, again, (size_t)n) != 0)
            abort();
        if (!path_needs_normalize(in, len) && ((size_t)n != len || memcmp(in, out, len) != 0))
            abort();
    } else if (!path_needs_normalize(in, len)) {
        abort(); /* only a ".." segment can climb, and it needs normalizing */
    }
    free(in);
    free(out);
    free(again);
    return 0;
}
