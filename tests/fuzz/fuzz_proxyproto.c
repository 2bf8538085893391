/* libFuzzer target: the PROXY protocol parser (http/proxyproto) on arbitrary bytes. Besides
 * not crashing, its answers must agree with each other as bytes arrive: a header found in
 * DATA is found, alike, in every longer buffer; every shorter prefix of it says NEED_MORE;
 * once the bytes are refused, more bytes never make them acceptable. */
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/proxyproto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_ASSERT(cond) \
    do {                  \
        if (!(cond))      \
            abort();      \
    } while (0)

static void check_sockaddr(const struct sockaddr_storage *ss, socklen_t len)
{
    FUZZ_ASSERT((ss->ss_family == AF_INET && len == sizeof(struct sockaddr_in)) ||
                (ss->ss_family == AF_INET6 && len == sizeof(struct sockaddr_in6)));
}

static void check_ok(const struct proxyproto_info *info, size_t size)
{
    FUZZ_ASSERT(info->header_len > 0 && info->header_len <= size);
    FUZZ_ASSERT(info->header_len <= PROXYPROTO_MAX_HEADER);
    if (info->has_addr) {
        check_sockaddr(&info->src, info->src_len);
        check_sockaddr(&info->dst, info->dst_len);
        FUZZ_ASSERT(info->src.ss_family == info->dst.ss_family);
    } else {
        FUZZ_ASSERT(info->src_len == 0 && info->dst_len == 0);
    }
}

static bool same_info(const struct proxyproto_info *a, const struct proxyproto_info *b)
{
    return a->has_addr == b->has_addr && a->header_len == b->header_len &&
           a->src_len == b->src_len && a->dst_len == b->dst_len &&
           memcmp(&a->src, &b->src, a->src_len) == 0 && memcmp(&a->dst, &b->dst, a->dst_len) == 0;
}

/* The prefix lengths worth checking below LIMIT: all of the short ones, a few of the rest
 * (a v2 header may be 64 KiB long and checking each prefix would be quadratic). */
static bool worth_checking(size_t k, size_t limit)
{
    return k < 128 || k + 4 >= limit || k % 4099 == 0;
}

/* Header found in DATA[0..SIZE): shorter prefixes need more, longer ones find the same. */
static void check_prefixes_of_ok(const uint8_t *data, size_t size, const struct proxyproto_info *whole)
{
    struct proxyproto_info info;
    for (size_t k = 0; k < whole->header_len; k++)
        if (worth_checking(k, whole->header_len))
            FUZZ_ASSERT(proxyproto_parse(data, k, &info) == PROXYPROTO_NEED_MORE);
    for (size_t k = whole->header_len; k < size; k++) {
        if (!worth_checking(k - whole->header_len, size - whole->header_len))
            continue;
        FUZZ_ASSERT(proxyproto_parse(data, k, &info) == PROXYPROTO_OK);
        FUZZ_ASSERT(same_info(&info, whole));
    }
}

/* DATA[0..SIZE) needs more or was refused: no prefix was OK, and once a prefix was refused
 * every longer one is too. */
static void check_prefixes_of_rest(const uint8_t *data, size_t size, enum proxyproto_result r)
{
    struct proxyproto_info info;
    for (size_t k = 0; k < size; k++) {
        if (!worth_checking(k, size))
            continue;
        enum proxyproto_result rk = proxyproto_parse(data, k, &info);
        FUZZ_ASSERT(rk != PROXYPROTO_OK);
        FUZZ_ASSERT(rk == PROXYPROTO_NEED_MORE || r == PROXYPROTO_ERROR);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct proxyproto_info info;
    memset(&info, 0, sizeof info);
    enum proxyproto_result r = proxyproto_parse(data, size, &info);
    if (r == PROXYPROTO_OK) {
        check_ok(&info, size);
        check_prefixes_of_ok(data, size, &info);
        return 0;
    }
    FUZZ_ASSERT(r == PROXYPROTO_NEED_MORE || r == PROXYPROTO_ERROR);
    if (r == PROXYPROTO_NEED_MORE)
        FUZZ_ASSERT(size < PROXYPROTO_MAX_HEADER);
    check_prefixes_of_rest(data, size, r);
    return 0;
}
