/* Unit tests of address ranges (conf/cidr.c): parsing "addr[/bits]" strictly, zeroing host
 * bits, and membership of IPv4, IPv6 and IPv4-mapped IPv6 addresses. */
#include "unit.h"

#include <arpa/inet.h>
#include <stdbool.h>
#include <stdint.h>

#include "conf/config.h"

/* Membership of the address written as TEXT (IPv4 or IPv6) in the range written as RANGE.
 * Returns -1 when either fails to parse, so a typo in a test cannot pass silently. */
static int in_range(const char *range, const char *text)
{
    struct conf_cidr c;
    if (conf_cidr_parse(range, &c) != 0)
        return -1;
    uint8_t a[16];
    int family = strchr(text, ':') ? AF_INET6 : AF_INET;
    if (inet_pton(family, text, a) != 1)
        return -1;
    return conf_cidr_contains(&c, family, a) ? 1 : 0;
}

/* The parsed range printed back as "addr/bits", for comparing the stored network. */
static const char *show(const char *range, char *buf, size_t cap)
{
    struct conf_cidr c;
    if (conf_cidr_parse(range, &c) != 0)
        return "(parse error)";
    char a[INET6_ADDRSTRLEN];
    if (!inet_ntop(c.family, c.addr, a, sizeof a))
        return "(ntop error)";
    snprintf(buf, cap, "%s/%u", a, c.bits);
    return buf;
}

#define CHECK_SHOW(range, expected)                                                    \
    do {                                                                               \
        char unit_b[80];                                                               \
        const char *unit_s = show(range, unit_b, sizeof unit_b);                       \
        if (strcmp(unit_s, expected) != 0) {                                           \
            fprintf(stderr, "  %s:%d: %s parsed as %s, expected %s\n", __FILE__,       \
                    __LINE__, range, unit_s, expected);                                \
            *unit_failed = 1;                                                          \
        }                                                                              \
    } while (0)

UNIT_TEST(parse_ipv4_forms)
{
    struct conf_cidr c;
    CHECK_EQ_INT(conf_cidr_parse("10.1.2.3", &c), 0);
    CHECK_EQ_INT(c.family, AF_INET);
    CHECK_EQ_INT(c.bits, 32);
    CHECK(memcmp(c.addr, "\x0a\x01\x02\x03", 4) == 0);
    CHECK_SHOW("10.1.2.3", "10.1.2.3/32");
    CHECK_SHOW("10.1.2.3/32", "10.1.2.3/32");
    CHECK_SHOW("10.1.2.3/8", "10.0.0.0/8");
    CHECK_SHOW("192.168.255.255/13", "192.168.0.0/13");
    CHECK_SHOW("192.175.255.255/13", "192.168.0.0/13");
    CHECK_SHOW("255.255.255.255/0", "0.0.0.0/0");
    CHECK_SHOW("0.0.0.0/0", "0.0.0.0/0");
    CHECK_SHOW("172.31.200.9/31", "172.31.200.8/31");
    CHECK_SHOW("10.0.0.1/1", "0.0.0.0/1");
    CHECK_SHOW("200.0.0.1/1", "128.0.0.0/1");
}

UNIT_TEST(parse_ipv6_forms)
{
    struct conf_cidr c;
    CHECK_EQ_INT(conf_cidr_parse("2001:db8::1", &c), 0);
    CHECK_EQ_INT(c.family, AF_INET6);
    CHECK_EQ_INT(c.bits, 128);
    CHECK(c.addr[0] == 0x20 && c.addr[1] == 0x01 && c.addr[15] == 1);
    CHECK_SHOW("2001:db8::/32", "2001:db8::/32");
    CHECK_SHOW("2001:db8:ffff::1/32", "2001:db8::/32");
    CHECK_SHOW("2001:DB8::1/128", "2001:db8::1/128");
    CHECK_SHOW("2001:db8::ff/127", "2001:db8::fe/127");
    CHECK_SHOW("2001:db8::ff/121", "2001:db8::80/121");
    CHECK_SHOW("ffff::/0", "::/0");
    CHECK_SHOW("::/0", "::/0");
    CHECK_SHOW("::ffff:10.9.8.7/104", "::ffff:10.0.0.0/104");
    CHECK_SHOW("fe80::1:2:3:4/13", "fe80::/13");
    CHECK_SHOW("fe8f::/13", "fe88::/13");
}

UNIT_TEST(parse_rejects_bad_text)
{
    static const char *const bad[] = {
        "", "/", "/8", "10.0.0.0/", "10.0.0.0/33", "10.0.0.0/-1", "10.0.0.0/+8",
        "10.0.0.0/08", "10.0.0.0/ 8", "10.0.0.0 /8", " 10.0.0.0/8", "10.0.0.0/8 ",
        "10.0.0.0/8x", "10.0.0.0/8/8", "10.0.0.0/1000", "10.0.0/8", "10.0.0.0.0",
        "256.0.0.0", "010.0.0.1", "10.0.0.01/32", "0x0a.0.0.0", "10.0.0.0\n",
        "2001:db8::/129", "2001:db8::/0128", "2001:db8:::1", "2001:db8::1::2",
        "2001:db8::g", "[2001:db8::1]", "[2001:db8::1]/64", "fe80::1%eth0", "all",
        "localhost", "10.0.0.0/8\n", "::/",
        "1111:2222:3333:4444:5555:6666:7777:8888:9999",
        "1111:2222:3333:4444:5555:6666:255.255.255.255:1",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct conf_cidr c = { .family = 77, .bits = 99 };
        if (conf_cidr_parse(bad[i], &c) != -1) {
            fprintf(stderr, "  accepted bad cidr \"%s\"\n", bad[i]);
            *unit_failed = 1;
        }
        CHECK(c.family == 77 && c.bits == 99); /* OUT untouched on failure */
    }
    struct conf_cidr c;
    CHECK_EQ_INT(conf_cidr_parse(NULL, &c), -1);
}

UNIT_TEST(parse_accepts_boundaries)
{
    struct conf_cidr c;
    CHECK_EQ_INT(conf_cidr_parse("10.0.0.0/0", &c), 0);
    CHECK_EQ_INT(c.bits, 0);
    CHECK_EQ_INT(conf_cidr_parse("10.0.0.0/32", &c), 0);
    CHECK_EQ_INT(c.bits, 32);
    CHECK_EQ_INT(conf_cidr_parse("::/128", &c), 0);
    CHECK_EQ_INT(c.bits, 128);
    CHECK_EQ_INT(conf_cidr_parse("1111:2222:3333:4444:5555:6666:255.255.255.255/100", &c), 0);
    CHECK_EQ_INT(c.bits, 100);
}

UNIT_TEST(contains_ipv4)
{
    CHECK_EQ_INT(in_range("10.0.0.0/8", "10.0.0.0"), 1);
    CHECK_EQ_INT(in_range("10.0.0.0/8", "10.255.255.255"), 1);
    CHECK_EQ_INT(in_range("10.0.0.0/8", "11.0.0.0"), 0);
    CHECK_EQ_INT(in_range("10.0.0.0/8", "9.255.255.255"), 0);
    CHECK_EQ_INT(in_range("192.168.0.0/13", "192.175.1.1"), 1);
    CHECK_EQ_INT(in_range("192.168.0.0/13", "192.176.0.0"), 0);
    CHECK_EQ_INT(in_range("192.168.0.0/13", "192.167.255.255"), 0);
    CHECK_EQ_INT(in_range("10.1.2.3", "10.1.2.3"), 1);
    CHECK_EQ_INT(in_range("10.1.2.3/32", "10.1.2.4"), 0);
    CHECK_EQ_INT(in_range("10.1.2.2/31", "10.1.2.3"), 1);
    CHECK_EQ_INT(in_range("10.1.2.2/31", "10.1.2.4"), 0);
    CHECK_EQ_INT(in_range("0.0.0.0/0", "0.0.0.0"), 1);
    CHECK_EQ_INT(in_range("0.0.0.0/0", "255.255.255.255"), 1);
    CHECK_EQ_INT(in_range("128.0.0.0/1", "127.255.255.255"), 0);
    CHECK_EQ_INT(in_range("128.0.0.0/1", "128.0.0.0"), 1);
}

UNIT_TEST(contains_ipv6)
{
    CHECK_EQ_INT(in_range("2001:db8::/32", "2001:db8::1"), 1);
    CHECK_EQ_INT(in_range("2001:db8::/32", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"), 1);
    CHECK_EQ_INT(in_range("2001:db8::/32", "2001:db9::"), 0);
    CHECK_EQ_INT(in_range("2001:db8::1", "2001:db8::1"), 1);
    CHECK_EQ_INT(in_range("2001:db8::1/128", "2001:db8::2"), 0);
    CHECK_EQ_INT(in_range("2001:db8::fe/127", "2001:db8::ff"), 1);
    CHECK_EQ_INT(in_range("2001:db8::fe/127", "2001:db8::fd"), 0);
    CHECK_EQ_INT(in_range("2001:db8::fe/127", "2001:db8::100"), 0);
    CHECK_EQ_INT(in_range("fe80::/13", "fe87:1::"), 1);
    CHECK_EQ_INT(in_range("fe80::/13", "fe88::"), 0);
    CHECK_EQ_INT(in_range("::/0", "::"), 1);
    CHECK_EQ_INT(in_range("::/0", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), 1);
    CHECK_EQ_INT(in_range("::/0", "::ffff:10.0.0.1"), 1);
}

UNIT_TEST(contains_mapped_ipv4)
{
    CHECK_EQ_INT(in_range("10.0.0.0/8", "::ffff:10.1.2.3"), 1);
    CHECK_EQ_INT(in_range("10.0.0.0/8", "::ffff:11.1.2.3"), 0);
    CHECK_EQ_INT(in_range("10.1.2.3", "::ffff:10.1.2.3"), 1);
    CHECK_EQ_INT(in_range("10.1.2.3", "::ffff:10.1.2.4"), 0);
    CHECK_EQ_INT(in_range("0.0.0.0/0", "::ffff:1.2.3.4"), 1);
    /* Only the ::ffff:0:0/96 form is an IPv4 address: not ::a.b.c.d, nor anything else. */
    CHECK_EQ_INT(in_range("0.0.0.0/0", "::1.2.3.4"), 0);
    CHECK_EQ_INT(in_range("0.0.0.0/0", "2001:db8::"), 0);
    CHECK_EQ_INT(in_range("0.0.0.0/0", "::fffe:1.2.3.4"), 0);
    CHECK_EQ_INT(in_range("0.0.0.0/0", "1::ffff:1.2.3.4"), 0);
    /* Written in IPv6, the mapped range is an ordinary IPv6 range. */
    CHECK_EQ_INT(in_range("::ffff:0:0/96", "::ffff:10.1.2.3"), 1);
    CHECK_EQ_INT(in_range("::ffff:10.0.0.0/104", "::ffff:10.200.0.1"), 1);
    CHECK_EQ_INT(in_range("::ffff:10.0.0.0/104", "::ffff:11.0.0.1"), 0);
}

UNIT_TEST(contains_never_crosses_families)
{
    CHECK_EQ_INT(in_range("::/0", "10.0.0.1"), 0);
    CHECK_EQ_INT(in_range("::ffff:0:0/96", "10.0.0.1"), 0);
    CHECK_EQ_INT(in_range("2001:db8::/32", "32.1.13.184"), 0);
    CHECK_EQ_INT(in_range("32.1.13.184/32", "2001:db8::"), 0);
}

UNIT_TEST(contains_refuses_odd_arguments)
{
    struct conf_cidr c;
    CHECK_EQ_INT(conf_cidr_parse("0.0.0.0/0", &c), 0);
    const uint8_t a[16] = { 10, 0, 0, 1 };
    CHECK(conf_cidr_contains(&c, AF_INET, a));
    CHECK(!conf_cidr_contains(&c, AF_UNIX, a));
    CHECK(!conf_cidr_contains(&c, AF_INET, NULL));
    CHECK(!conf_cidr_contains(NULL, AF_INET, a));
    struct conf_cidr zero = { 0 }; /* family 0: not a range at all */
    CHECK(!conf_cidr_contains(&zero, 0, a));
    struct conf_cidr wide = c;
    wide.bits = 33;
    CHECK(!conf_cidr_contains(&wide, AF_INET, a));
}

UNIT_MAIN();
