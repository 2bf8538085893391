/* fuzz_config: the config loader on arbitrary bytes. Whatever the input, loading must not
 * crash or leak: a snapshot or the error list is built and freed every time. Host names are
 * resolved by a stub so the fuzzer never waits on DNS. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <netinet/in.h>

#include "conf/config.h"
#include "conf/config_resolve.h"

static int fuzz_resolve(const char *host, const char *port, struct sockaddr_storage *out,
                        socklen_t *out_len, char *err, size_t err_cap)
{
    (void)port;
    if (strcmp(host, "localhost") != 0) {
        strncpy(err, "not resolved while fuzzing", err_cap - 1);
        err[err_cap - 1] = '\0';
        return -1;
    }
    struct sockaddr_in *sin = (struct sockaddr_in *)out;
    memset(out, 0, sizeof *out);
    sin->sin_family = AF_INET;
    sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin->sin_port = htons(80);
    *out_len = sizeof *sin;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct conf_errors errs = { 0 };
    config_set_resolver(fuzz_resolve);
    struct config *cfg = config_load_buffer("fuzz.yaml", (const char *)data, size, &errs);
    if (cfg) {
        /* Exercise the reference count the way exchanges do. */
        config_unref(config_ref(cfg));
        (void)config_find_upstream(cfg, "app");
        config_unref(cfg);
    }
    conf_errors_free(&errs);
    return 0;
}
