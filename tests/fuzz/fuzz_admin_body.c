/* libFuzzer target: the admin API's JSON body reader (flat objects of strings, numbers and
 * booleans, read with libyaml). Anything it accepts must be freed cleanly; anything else must be
 * refused with a message, never crash. */
#include <stdint.h>
#include <string.h>

#include "admin/admin_json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct admin_body body;
    char err[256];
    err[0] = '\0';
    memset(&body, 0, sizeof body);
    int r = admin_body_parse((const char *)data, size, &body, err, sizeof err);
    if (r == 0)
        admin_body_free(&body);
    else if (err[0] == '\0')
        __builtin_trap(); /* a refusal always says why */
    /* The escaper must turn any bytes into something without raw control characters. */
    struct sbuf out = { 0 };
    admin_json_escape(&out, (const char *)data, size);
    for (size_t i = 0; i < out.len; i++)
        if ((unsigned char)out.p[i] < 0x20)
            __builtin_trap();
    sbuf_free(&out);
    return 0;
}
