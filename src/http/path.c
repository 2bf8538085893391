#include "http/path.h"

#include <string.h>
#include <strings.h>

bool path_needs_normalize(const char *path, size_t len)
{
    for (size_t i = 0; i + 1 < len; i++) {
        if (path[i] == '/' && (path[i + 1] == '/' || path[i + 1] == '.'))
            return true;
        if (path[i] == '%' && i + 2 < len && path[i + 1] == '2' && (path[i + 2] | 0x20) == 'e')
            return true;
    }
    return false;
}

/* Length of "." or ".." that SEG[0..LEN) spells, each dot written "." or "%2e" (any case);
 * 0 when it is an ordinary segment. */
static int path_dots(const char *seg, size_t len)
{
    int dots = 0;
    for (size_t i = 0; i < len; dots++) {
        if (seg[i] == '.')
            i++;
        else if (len - i >= 3 && strncasecmp(seg + i, "%2e", 3) == 0)
            i += 3;
        else
            return 0;
    }
    return dots <= 2 ? dots : 0;
}

/* RFC 3986 §5.2.4 over whole segments: OUT holds "/seg/seg" so far; ".." drops the last one. */
int path_normalize(const char *path, size_t len, char *out)
{
    size_t n = 0;
    bool ends_in_dir = true;
    const char *end = path + len;
    for (const char *p = path; p < end;) {
        while (p < end && *p == '/')
            p++; /* empty segments: "//" is "/" */
        const char *seg = p;
        while (p < end && *p != '/')
            p++;
        size_t seg_len = (size_t)(p - seg);
        if (seg_len == 0)
            break;
        int dots = path_dots(seg, seg_len);
        ends_in_dir = dots > 0 || p < end;
        if (dots == 1)
            continue;
        if (dots == 2) {
            if (n == 0)
                return -1; /* above the root */
            while (n > 0 && out[n - 1] != '/')
                n--;
            n--; /* the "/" before the dropped segment */
            continue;
        }
        out[n++] = '/';
        memcpy(out + n, seg, seg_len);
        n += seg_len;
    }
    if (n == 0 || ends_in_dir)
        out[n++] = '/';
    return (int)n;
}
