/* Unit tests of the PROXY protocol parser (http/proxyproto): v1 lines and v2 binary headers,
 * byte-by-byte arrival, and the malformed headers a strict receiver must refuse. */
#include "unit.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>

#include "http/proxyproto.h"

static enum proxyproto_result parse_str(const char *s, struct proxyproto_info *info)
{
    return proxyproto_parse((const uint8_t *)s, strlen(s), info);
}

/* "addr port" of one side, for comparing with the expected text. */
static const char *show(const struct sockaddr_storage *ss, socklen_t len, char *buf, size_t cap)
{
    char a[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (ss->ss_family == AF_INET && len == sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &sin->sin_addr, a, sizeof a);
        port = ntohs(sin->sin_port);
    } else if (ss->ss_family == AF_INET6 && len == sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &sin6->sin6_addr, a, sizeof a);
        port = ntohs(sin6->sin6_port);
    } else {
        return "(bad sockaddr)";
    }
    snprintf(buf, cap, "%s %u", a, port);
    return buf;
}

#define CHECK_ADDR(ss, len, expected)                                                   \
    do {                                                                                \
        char unit_b[80];                                                                \
        const char *unit_s = show(ss, len, unit_b, sizeof unit_b);                      \
        if (strcmp(unit_s, expected) != 0) {                                            \
            fprintf(stderr, "  %s:%d: address %s, expected %s\n", __FILE__, __LINE__,  \
                    unit_s, expected);                                                  \
            *unit_failed = 1;                                                           \
        }                                                                               \
    } while (0)

static bool same_info(const struct proxyproto_info *a, const struct proxyproto_info *b)
{
    return a->has_addr == b->has_addr && a->header_len == b->header_len &&
           a->src_len == b->src_len && a->dst_len == b->dst_len &&
           memcmp(&a->src, &b->src, a->src_len) == 0 && memcmp(&a->dst, &b->dst, a->dst_len) == 0;
}

/* Every strict prefix of DATA must be NEED_MORE and DATA itself OK with the same result as
 * DATA followed by the client's first bytes. Returns false (after printing) on a mismatch. */
static bool splits_ok(const uint8_t *data, size_t len)
{
    struct proxyproto_info info;
    for (size_t k = 0; k < len; k++) {
        enum proxyproto_result r = proxyproto_parse(data, k, &info);
        if (r != PROXYPROTO_NEED_MORE) {
            fprintf(stderr, "  prefix of %zu/%zu bytes gave %d\n", k, len, (int)r);
            return false;
        }
    }
    uint8_t more[2048];
    if (len + 16 > sizeof more)
        return false;
    memcpy(more, data, len);
    memcpy(more + len, "GET / HTTP/1.1\r\n", 16);
    struct proxyproto_info whole;
    if (proxyproto_parse(data, len, &whole) != PROXYPROTO_OK ||
        proxyproto_parse(more, len + 16, &info) != PROXYPROTO_OK) {
        fprintf(stderr, "  whole header of %zu bytes not OK\n", len);
        return false;
    }
    return whole.header_len == len && same_info(&whole, &info);
}

static bool str_splits_ok(const char *s)
{
    return splits_ok((const uint8_t *)s, strlen(s));
}

/* ---- version 1 ---- */

UNIT_TEST(v1_tcp4)
{
    const char *line = "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
    char buf[256];
    snprintf(buf, sizeof buf, "%sGET / HTTP/1.1\r\nHost: x\r\n\r\n", line);
    struct proxyproto_info info;
    CHECK_EQ_INT(parse_str(buf, &info), PROXYPROTO_OK);
    CHECK(info.has_addr);
    CHECK_EQ_INT(info.header_len, strlen(line));
    CHECK_ADDR(&info.src, info.src_len, "192.168.0.1 56324");
    CHECK_ADDR(&info.dst, info.dst_len, "192.168.0.11 443");
    CHECK(str_splits_ok(line));

    CHECK_EQ_INT(parse_str("PROXY TCP4 255.255.255.255 0.0.0.0 65535 0\r\n", &info), PROXYPROTO_OK);
    CHECK_ADDR(&info.src, info.src_len, "255.255.255.255 65535");
    CHECK_ADDR(&info.dst, info.dst_len, "0.0.0.0 0");
    CHECK(str_splits_ok("PROXY TCP4 255.255.255.255 0.0.0.0 65535 0\r\n"));
}

UNIT_TEST(v1_tcp6)
{
    struct proxyproto_info info;
    const char *line = "PROXY TCP6 2001:db8::1 2001:DB8::2 1 65535\r\n";
    CHECK_EQ_INT(parse_str(line, &info), PROXYPROTO_OK);
    CHECK(info.has_addr);
    CHECK_EQ_INT(info.header_len, strlen(line));
    CHECK_ADDR(&info.src, info.src_len, "2001:db8::1 1");
    CHECK_ADDR(&info.dst, info.dst_len, "2001:db8::2 65535");
    CHECK(str_splits_ok(line));

    /* The longest canonical form: 104 bytes (§2.1). */
    const char *longest = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                          "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe 65535 65535\r\n";
    CHECK_EQ_INT(strlen(longest), 104);
    CHECK_EQ_INT(parse_str(longest, &info), PROXYPROTO_OK);
    CHECK_ADDR(&info.dst, info.dst_len, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe 65535");
    CHECK(str_splits_ok(longest));

    /* inet_ntop writes IPv4-mapped addresses with a dotted tail; senders do send that. */
    const char *mapped = "PROXY TCP6 ::ffff:10.1.2.3 :: 80 8080\r\n";
    CHECK_EQ_INT(parse_str(mapped, &info), PROXYPROTO_OK);
    CHECK_ADDR(&info.src, info.src_len, "::ffff:10.1.2.3 80");
    CHECK_ADDR(&info.dst, info.dst_len, ":: 8080");
    CHECK(str_splits_ok(mapped));
    CHECK(str_splits_ok("PROXY TCP6 1:2:3:4:5:6:1.2.3.4 1:2:3:4:5::255.0.0.1 1 2\r\n"));
    CHECK(str_splits_ok("PROXY TCP6 1:2:3:4:5:6:7:: ::2:3:4:5:6:7:8 1 2\r\n"));
    CHECK(str_splits_ok("PROXY TCP6 ::1.2.3.4 0:0:0:0:0:0:0:0 1 2\r\n"));
}

UNIT_TEST(v1_unknown)
{
    struct proxyproto_info info = { .has_addr = true };
    CHECK_EQ_INT(parse_str("PROXY UNKNOWN\r\nGET", &info), PROXYPROTO_OK);
    CHECK(!info.has_addr);
    CHECK_EQ_INT(info.header_len, 15);
    CHECK_EQ_INT(info.src_len, 0);
    CHECK(str_splits_ok("PROXY UNKNOWN\r\n"));
    /* §2.1: the receiver ignores whatever follows UNKNOWN up to the CRLF. */
    const char *full = "PROXY UNKNOWN ffff:f::1 ffff::2 65535 65535\r\n";
    CHECK_EQ_INT(parse_str(full, &info), PROXYPROTO_OK);
    CHECK(!info.has_addr);
    CHECK_EQ_INT(info.header_len, strlen(full));
    CHECK(str_splits_ok(full));
    CHECK(str_splits_ok("PROXY UNKNOWN \r\n"));
}

/* IPv6 text of random groups: compressed at a random run, in random case, with or without
 * leading zeroes, with or without a dotted IPv4 tail. */
static void random_ipv6_text(char *out, size_t cap, unsigned *seed)
{
    unsigned g[8], tail = rand_r(seed) % 2 ? 6 : 8; /* groups before a dotted tail */
    for (int i = 0; i < 8; i++)
        g[i] = rand_r(seed) % 3 == 0 ? 0 : (unsigned)rand_r(seed) & 0xffff;
    unsigned from = rand_r(seed) % (tail + 1), to = from + rand_r(seed) % (tail + 1 - from);
    const char *fmt = rand_r(seed) % 2 ? "%x" : rand_r(seed) % 2 ? "%04X" : "%X";
    size_t n = 0;
    for (unsigned i = 0; i < tail; i++) {
        if (i >= from && i < to) { /* the "::" run */
            if (i == from)
                n += (size_t)snprintf(out + n, cap - n, i == 0 ? "::" : ":");
            continue;
        }
        n += (size_t)snprintf(out + n, cap - n, fmt, g[i]);
        if (i + 1 < tail || tail == 6)
            n += (size_t)snprintf(out + n, cap - n, ":");
    }
    if (tail == 6)
        snprintf(out + n, cap - n, "%u.%u.%u.%u", g[6] >> 8, g[6] & 0xff, g[7] >> 8, g[7] & 0xff);
}

/* Whatever form inet_pton accepts, no prefix of the line is refused. */
UNIT_TEST(v1_tcp6_every_form)
{
    unsigned seed = 12345;
    int tried = 0;
    for (int i = 0; i < 3000; i++) {
        char a[64], b[64], line[256];
        uint8_t ip[16];
        random_ipv6_text(a, sizeof a, &seed);
        random_ipv6_text(b, sizeof b, &seed);
        if (inet_pton(AF_INET6, a, ip) != 1 || inet_pton(AF_INET6, b, ip) != 1)
            continue;
        int n = snprintf(line, sizeof line, "PROXY TCP6 %s %s %u %u\r\n", a, b,
                         (unsigned)rand_r(&seed) % 65536, (unsigned)rand_r(&seed) % 65536);
        if (n > 107)
            continue;
        tried++;
        if (!str_splits_ok(line)) {
            fprintf(stderr, "  refused: %s", line);
            *unit_failed = 1;
        }
        char back[INET6_ADDRSTRLEN];
        struct proxyproto_info info;
        if (parse_str(line, &info) == PROXYPROTO_OK) {
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&info.dst)->sin6_addr, back, sizeof back);
            inet_pton(AF_INET6, b, ip);
            CHECK(memcmp(ip, &((struct sockaddr_in6 *)&info.dst)->sin6_addr, 16) == 0);
        }
    }
    CHECK(tried > 1000); /* the generator mostly makes valid addresses */
}

/* The CRLF must end within 107 bytes (§2.1). */
UNIT_TEST(v1_line_limit)
{
    char line[200] = "PROXY UNKNOWN ";
    size_t n = strlen(line);
    memset(line + n, 'a', 105 - n);
    memcpy(line + 105, "\r\n", 3);
    struct proxyproto_info info;
    CHECK_EQ_INT(strlen(line), 107);
    CHECK_EQ_INT(parse_str(line, &info), PROXYPROTO_OK);
    CHECK_EQ_INT(info.header_len, 107);
    CHECK(str_splits_ok(line));

    memset(line + n, 'a', 106 - n);
    memcpy(line + 106, "\r\n", 3); /* 108 bytes */
    CHECK_EQ_INT(parse_str(line, &info), PROXYPROTO_ERROR);
    CHECK_EQ_INT(proxyproto_parse((const uint8_t *)line, 106, &info), PROXYPROTO_NEED_MORE);
    CHECK_EQ_INT(proxyproto_parse((const uint8_t *)line, 107, &info), PROXYPROTO_ERROR);

    /* Valid for inet_pton, but 116 bytes long. */
    const char *too_long = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 "
                           "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.254 65535 65535\r\n";
    CHECK_EQ_INT(parse_str(too_long, &info), PROXYPROTO_ERROR);
    CHECK_EQ_INT(proxyproto_parse((const uint8_t *)too_long, 106, &info), PROXYPROTO_NEED_MORE);
}

/* Refused as a whole, and no prefix of it is taken for a complete header. */
static bool refused(const char *s)
{
    struct proxyproto_info info;
    size_t n = strlen(s);
    for (size_t k = 0; k <= n; k++) {
        enum proxyproto_result r = proxyproto_parse((const uint8_t *)s, k, &info);
        if (r == PROXYPROTO_OK || (k == n && r != PROXYPROTO_ERROR)) {
            fprintf(stderr, "  \"%s\" at %zu bytes gave %d\n", s, k, (int)r);
            return false;
        }
    }
    return true;
}

UNIT_TEST(v1_malformed)
{
    static const char *const bad[] = {
        "PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n",   "PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
        "PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",   "PROXY TCP4 1.2.3.4 5.6.7.8  1 2\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 1  2\r\n",   "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
        " PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n",   "PROXY\tTCP4 1.2.3.4 5.6.7.8 1 2\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",      "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX",     "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",  "PROXY TCP4 1.2.3.4 5.6.7.8\r\n",
        "PROXY TCP4\r\n",                        "PROXY\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",   "PROXY TCP4 1.2.3.4 5.6.7.8 1 00\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",   "PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 1a 2\r\n",   "PROXY TCP4 1.2.3.4 5.6.7.8 0x10 2\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 123456 2\r\n", "PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.08 1 2\r\n",  "PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",
        "PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n",  "PROXY TCP4 256.2.3.4 5.6.7.8 1 2\r\n",
        "PROXY TCP4 1..3.4 5.6.7.8 1 2\r\n",     "PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
        "PROXY TCP4 1.2.3.4 ::ffff:5.6.7.8 1 2\r\n", "PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
        "PROXY TCP6 ::1 5.6.7.8 1 2\r\n",        "PROXY TCP6 :1:: ::1 1 2\r\n",
        "PROXY TCP6 1::2::3 ::1 1 2\r\n",        "PROXY TCP6 12345:: ::1 1 2\r\n",
        "PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n", "PROXY TCP6 1:2:3:4:5:6:7::8 ::1 1 2\r\n",
        "PROXY TCP6 ::ffff:01.2.3.4 ::1 1 2\r\n", "PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",
        "PROXY TCP6 [::1] ::1 1 2\r\n",          "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
        "PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n",    "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
        "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",    "PROXY UNKNOWNX\r\n",
        "PROXY UNKNOWN\n",                       "PROXY UNKNOWN \x01\r\n",
        "PROXY UNKNOWN \xff\r\n",                "PROXY UNKNOWN a\rb\r\n",
        "PROXY UNKNOWN\r\r\n",                   "PROXY TCP6 ::1 ::2 1 2 3\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK(refused(bad[i]));
    static const char nul[] = "PROXY TCP4 1.2.3.4\0 5.6.7.8 1 2\r\n";
    struct proxyproto_info info;
    CHECK_EQ_INT(proxyproto_parse((const uint8_t *)nul, sizeof nul - 1, &info), PROXYPROTO_ERROR);
    CHECK_EQ_INT(proxyproto_parse((const uint8_t *)nul, 19, &info), PROXYPROTO_ERROR);
}

/* A connection that does not speak the PROXY protocol is refused on its first bytes. */
UNIT_TEST(v1_refused_early)
{
    struct proxyproto_info info;
    CHECK_EQ_INT(parse_str("G", &info), PROXYPROTO_ERROR);
    CHECK_EQ_INT(parse_str("GET / HTTP/1.1\r\n", &info), PROXYPROTO_ERROR);
    CHECK_EQ_INT(proxyproto_parse((const uint8_t *)"\x16\x03\x01\x02\x00", 5, &info),
                 PROXYPROTO_ERROR);
    CHECK_EQ_INT(parse_str("PRO", &info), PROXYPROTO_NEED_MORE);
    CHECK_EQ_INT(parse_str("PUT / HTTP/1.1\r\n", &info), PROXYPROTO_ERROR);
    CHECK_EQ_INT(parse_str("PROXY TC", &info), PROXYPROTO_NEED_MORE);
    CHECK_EQ_INT(parse_str("PROXY TCP", &info), PROXYPROTO_NEED_MORE);
    CHECK_EQ_INT(parse_str("PROXY TCPX", &info), PROXYPROTO_ERROR);
    CHECK_EQ_INT(parse_str("PROXY UNK", &info), PROXYPROTO_NEED_MORE);
    CHECK_EQ_INT(parse_str("PROXY TCP4 256", &info), PROXYPROTO_ERROR);
    CHECK_EQ_INT(parse_str("PROXY TCP4 25", &info), PROXYPROTO_NEED_MORE);
    CHECK_EQ_INT(parse_str("PROXY TCP4 0", &info), PROXYPROTO_NEED_MORE);
    CHECK_EQ_INT(parse_str("PROXY TCP4 01", &info), PROXYPROTO_ERROR);
    CHECK_EQ_INT(parse_str("PROXY TCP4 1.2.3.", &info), PROXYPROTO_NEED_MORE);
    CHECK_EQ_INT(parse_str("PROXY TCP4 1.2.3 ", &info), PROXYPROTO_ERROR);
    CHECK_EQ_INT(parse_str("PROXY TCP4 1.2.3.4 5.6.7.8 6553", &info), PROXYPROTO_NEED_MORE);
    CHECK_EQ_INT(parse_str("PROXY TCP4 1.2.3.4 5.6.7.8 65536", &info), PROXYPROTO_ERROR);
    CHECK_EQ_INT(parse_str("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r", &info), PROXYPROTO_NEED_MORE);
    CHECK_EQ_INT(parse_str("PROXY TCP6 :", &info), PROXYPROTO_NEED_MORE);
    CHECK_EQ_INT(parse_str("PROXY TCP6 :1", &info), PROXYPROTO_ERROR);
    CHECK_EQ_INT(parse_str("PROXY TCP6 1:::", &info), PROXYPROTO_ERROR);
    CHECK_EQ_INT(parse_str("PROXY TCP6 1::2::", &info), PROXYPROTO_ERROR);
    CHECK_EQ_INT(parse_str("PROXY TCP6 12345", &info), PROXYPROTO_ERROR);
    CHECK_EQ_INT(parse_str("PROXY TCP6 1:2:3:4:5:6:7:8:", &info), PROXYPROTO_NEED_MORE);
    CHECK_EQ_INT(parse_str("PROXY TCP6 1:2:3:4:5:6:7:8:9", &info), PROXYPROTO_ERROR);
    CHECK_EQ_INT(parse_str("PROXY TCP6 1:2:3:4:5:6:7:1.", &info), PROXYPROTO_ERROR);
    CHECK_EQ_INT(parse_str("PROXY TCP6 ::ffff:1.2", &info), PROXYPROTO_NEED_MORE);
    CHECK_EQ_INT(parse_str("PROXY TCP6 ::ffff:1.2:", &info), PROXYPROTO_ERROR);
    CHECK_EQ_INT(parse_str("PROXY TCP6 ::g", &info), PROXYPROTO_ERROR);
    CHECK_EQ_INT(parse_str("PROXY UNKNOWN junk", &info), PROXYPROTO_NEED_MORE);
}

/* *OUT is left alone unless the result is OK. */
UNIT_TEST(v1_out_untouched_on_error)
{
    struct proxyproto_info info;
    memset(&info, 0xA5, sizeof info);
    struct proxyproto_info copy = info;
    CHECK_EQ_INT(parse_str("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", &info), PROXYPROTO_ERROR);
    CHECK_EQ_INT(parse_str("PROXY TCP4 1.2.3.4 5.6.7.8 1 2", &info), PROXYPROTO_NEED_MORE);
    CHECK(memcmp(&info, &copy, sizeof info) == 0);
    CHECK_EQ_INT(proxyproto_parse(NULL, 0, &info), PROXYPROTO_NEED_MORE);
}

/* ---- version 2 ---- */

static const uint8_t sig[12] = { 0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A };

/* A v2 header: signature, VER_CMD, FAM, length BODY_LEN, then BODY_LEN bytes of BODY. */
static size_t v2(uint8_t *out, uint8_t ver_cmd, uint8_t fam, const uint8_t *body, size_t body_len)
{
    memcpy(out, sig, 12);
    out[12] = ver_cmd;
    out[13] = fam;
    out[14] = (uint8_t)(body_len >> 8);
    out[15] = (uint8_t)body_len;
    if (body_len)
        memcpy(out + 16, body, body_len);
    return 16 + body_len;
}

static const uint8_t body4[12] = { 192, 0, 2, 1, 198, 51, 100, 7, 0xDC, 0x04, 0x01, 0xBB };

UNIT_TEST(v2_proxy_tcp4)
{
    uint8_t h[64];
    size_t n = v2(h, 0x21, 0x11, body4, sizeof body4);
    struct proxyproto_info info;
    CHECK_EQ_INT(proxyproto_parse(h, n, &info), PROXYPROTO_OK);
    CHECK(info.has_addr);
    CHECK_EQ_INT(info.header_len, 28);
    CHECK_ADDR(&info.src, info.src_len, "192.0.2.1 56324");
    CHECK_ADDR(&info.dst, info.dst_len, "198.51.100.7 443");
    CHECK(splits_ok(h, n));
}

UNIT_TEST(v2_proxy_tcp6)
{
    uint8_t body[36] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 1, 0x20, 0x01, 0x0d, 0xb8, [31] = 2,
                         0x00, 0x50, 0xff, 0xff };
    uint8_t h[64];
    size_t n = v2(h, 0x21, 0x21, body, sizeof body);
    struct proxyproto_info info;
    CHECK_EQ_INT(proxyproto_parse(h, n, &info), PROXYPROTO_OK);
    CHECK(info.has_addr);
    CHECK_EQ_INT(info.header_len, 52);
    CHECK_ADDR(&info.src, info.src_len, "2001:db8::1 80");
    CHECK_ADDR(&info.dst, info.dst_len, "2001:db8::2 65535");
    CHECK(splits_ok(h, n));
}

UNIT_TEST(v2_tlvs)
{
    /* Addresses, then ALPN "h2", an empty NOOP, and a 300-byte custom TLV. */
    uint8_t body[12 + 5 + 3 + 303];
    memcpy(body, body4, 12);
    memcpy(body + 12, "\x01\x00\x02h2", 5);
    memcpy(body + 17, "\x04\x00\x00", 3);
    memcpy(body + 20, "\xE0\x01\x2C", 3);
    memset(body + 23, 'x', 300);
    uint8_t h[16 + sizeof body];
    size_t n = v2(h, 0x21, 0x11, body, sizeof body);
    struct proxyproto_info info;
    CHECK_EQ_INT(proxyproto_parse(h, n, &info), PROXYPROTO_OK);
    CHECK_EQ_INT(info.header_len, n);
    CHECK_ADDR(&info.src, info.src_len, "192.0.2.1 56324");
    CHECK(splits_ok(h, n));

    /* TLVs that overrun the header, or a TLV head cut short, are refused. */
    body[22] = 0x2D; /* the last TLV now claims 301 bytes */
    n = v2(h, 0x21, 0x11, body, sizeof body);
    CHECK_EQ_INT(proxyproto_parse(h, n, &info), PROXYPROTO_ERROR);
    n = v2(h, 0x21, 0x11, body, 12 + 5 + 2); /* two bytes of a TLV head */
    CHECK_EQ_INT(proxyproto_parse(h, n, &info), PROXYPROTO_ERROR);
    n = v2(h, 0x21, 0x11, body, 12 + 4); /* ALPN value cut to one byte */
    CHECK_EQ_INT(proxyproto_parse(h, n, &info), PROXYPROTO_ERROR);
    n = v2(h, 0x21, 0x11, body, 12 + 5); /* exactly addresses and ALPN */
    CHECK_EQ_INT(proxyproto_parse(h, n, &info), PROXYPROTO_OK);
    CHECK_EQ_INT(info.header_len, 33);
}

UNIT_TEST(v2_local_and_fallbacks)
{
    uint8_t h[512];
    struct proxyproto_info info = { .has_addr = true };
    size_t n = v2(h, 0x20, 0x00, NULL, 0);
    CHECK_EQ_INT(proxyproto_parse(h, n, &info), PROXYPROTO_OK);
    CHECK(!info.has_addr);
    CHECK_EQ_INT(info.header_len, 16);
    CHECK(splits_ok(h, n));

    /* LOCAL ignores the block and its family, but still skips all of it (§2.2). */
    n = v2(h, 0x20, 0x11, body4, sizeof body4);
    info.has_addr = true;
    CHECK_EQ_INT(proxyproto_parse(h, n, &info), PROXYPROTO_OK);
    CHECK(!info.has_addr);
    CHECK_EQ_INT(info.header_len, 28);
    n = v2(h, 0x20, 0x21, body4, 4); /* shorter than an IPv6 block: nothing to read */
    CHECK_EQ_INT(proxyproto_parse(h, n, &info), PROXYPROTO_OK);
    CHECK_EQ_INT(info.header_len, 20);
    n = v2(h, 0x20, 0x00, (const uint8_t *)"\x05\x00\x01U", 4); /* a UNIQUE_ID TLV */
    CHECK_EQ_INT(proxyproto_parse(h, n, &info), PROXYPROTO_OK);
    CHECK_EQ_INT(info.header_len, 20);
    n = v2(h, 0x20, 0x00, (const uint8_t *)"\x05\x00\x02U", 4); /* the TLV overruns */
    CHECK_EQ_INT(proxyproto_parse(h, n, &info), PROXYPROTO_ERROR);

    /* PROXY with UNSPEC, UDP or UNIX: valid, but we keep the TCP peer. */
    static const uint8_t fams[] = { 0x00, 0x12, 0x22, 0x31, 0x32 };
    static const size_t sizes[] = { 0, 12, 36, 216, 216 };
    uint8_t body[216] = { 1, 2, 3, 4 };
    for (size_t i = 0; i < sizeof fams; i++) {
        n = v2(h, 0x21, fams[i], body, sizes[i]);
        info.has_addr = true;
        CHECK_EQ_INT(proxyproto_parse(h, n, &info), PROXYPROTO_OK);
        CHECK(!info.has_addr);
        CHECK_EQ_INT(info.header_len, 16 + sizes[i]);
        CHECK(splits_ok(h, n));
    }
}

UNIT_TEST(v2_bad_fixed_part)
{
    uint8_t h[64];
    struct proxyproto_info info;
    /* Each byte of the signature, changed, is refused as soon as it arrives. */
    for (size_t i = 0; i < 12; i++) {
        v2(h, 0x21, 0x11, body4, sizeof body4);
        h[i] ^= 0x20;
        CHECK_EQ_INT(proxyproto_parse(h, i + 1, &info), PROXYPROTO_ERROR);
    }
    static const uint8_t bad_ver_cmd[] = { 0x11, 0x31, 0x01, 0xF1, 0x22, 0x2F };
    for (size_t i = 0; i < sizeof bad_ver_cmd; i++) {
        v2(h, bad_ver_cmd[i], 0x11, body4, sizeof body4);
        CHECK_EQ_INT(proxyproto_parse(h, 13, &info), PROXYPROTO_ERROR);
        CHECK_EQ_INT(proxyproto_parse(h, 28, &info), PROXYPROTO_ERROR);
    }
    static const uint8_t bad_fam[] = { 0x01, 0x02, 0x10, 0x13, 0x20, 0x30, 0x41, 0xFF };
    for (size_t i = 0; i < sizeof bad_fam; i++) {
        v2(h, 0x21, bad_fam[i], body4, sizeof body4);
        CHECK_EQ_INT(proxyproto_parse(h, 14, &info), PROXYPROTO_ERROR);
        v2(h, 0x20, bad_fam[i], body4, sizeof body4); /* even with LOCAL */
        CHECK_EQ_INT(proxyproto_parse(h, 28, &info), PROXYPROTO_ERROR);
    }
}

/* A PROXY header whose length cannot hold its addresses is refused from its 16th byte on. */
UNIT_TEST(v2_length_too_short)
{
    uint8_t h[512];
    uint8_t body[300] = { 0 };
    struct proxyproto_info info;
    static const uint8_t fams[] = { 0x11, 0x12, 0x21, 0x22, 0x31, 0x32 };
    static const size_t sizes[] = { 12, 12, 36, 36, 216, 216 };
    for (size_t i = 0; i < sizeof fams; i++) {
        size_t n = v2(h, 0x21, fams[i], body, sizes[i] - 1);
        CHECK_EQ_INT(proxyproto_parse(h, 16, &info), PROXYPROTO_ERROR);
        CHECK_EQ_INT(proxyproto_parse(h, n, &info), PROXYPROTO_ERROR);
        n = v2(h, 0x21, fams[i], body, 0);
        CHECK_EQ_INT(proxyproto_parse(h, n, &info), PROXYPROTO_ERROR);
        n = v2(h, 0x21, fams[i], body, sizes[i]);
        CHECK_EQ_INT(proxyproto_parse(h, n, &info), PROXYPROTO_OK);
    }
}

UNIT_TEST(v2_truncated_and_largest)
{
    uint8_t h[64];
    struct proxyproto_info info;
    size_t n = v2(h, 0x21, 0x11, body4, sizeof body4);
    CHECK_EQ_INT(proxyproto_parse(h, n - 1, &info), PROXYPROTO_NEED_MORE);
    CHECK_EQ_INT(proxyproto_parse(h, 16, &info), PROXYPROTO_NEED_MORE);
    CHECK_EQ_INT(proxyproto_parse(h, 5, &info), PROXYPROTO_NEED_MORE); /* past the NUL */

    /* The largest header: 65535 bytes of TLVs after the fixed part. */
    uint8_t *big = calloc(1, PROXYPROTO_MAX_HEADER + 1);
    CHECK(big != NULL);
    if (!big)
        return;
    size_t body = 65535, off = 16;
    v2(big, 0x20, 0x00, NULL, 0);
    big[14] = 0xFF;
    big[15] = 0xFF;
    while (body - (off - 16) > 0) { /* fill with TLVs of at most 1000 value bytes */
        size_t left = body - (off - 16), v = left - 3 > 1000 ? 1000 : left - 3;
        big[off] = 0x04;
        big[off + 1] = (uint8_t)(v >> 8);
        big[off + 2] = (uint8_t)v;
        off += 3 + v;
    }
    CHECK_EQ_INT(off, PROXYPROTO_MAX_HEADER);
    CHECK_EQ_INT(proxyproto_parse(big, PROXYPROTO_MAX_HEADER - 1, &info), PROXYPROTO_NEED_MORE);
    CHECK_EQ_INT(proxyproto_parse(big, PROXYPROTO_MAX_HEADER + 1, &info), PROXYPROTO_OK);
    CHECK_EQ_INT(info.header_len, PROXYPROTO_MAX_HEADER);
    free(big);
}

UNIT_MAIN();
