/* Address ranges (struct conf_cidr, declared in conf/config.h): parsing "addr[/bits]" and
 * testing whether an address lies in a range. Pure: no allocation, no I/O. */
#include "conf/config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

/* Longest address text we try: INET6_ADDRSTRLEN counts the NUL. */
#define CIDR_ADDR_MAX (INET6_ADDRSTRLEN - 1)

/* RFC 4291 §2.5.5.2: ::ffff:a.b.c.d carries an IPv4 address in an IPv6 one. */
static const uint8_t cidr_v4_mapped_prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

static unsigned cidr_family_bits(int family)
{
    return family == AF_INET ? 32 : family == AF_INET6 ? 128 : 0;
}

/* Parses the prefix length after the '/': 1 to 3 decimal digits, no sign, no leading zero
 * (so "08" is refused while "0" is fine), at most MAX. Returns the value or -1. */
static int cidr_parse_bits(const char *s, unsigned max)
{
    size_t n = strlen(s);
    if (n == 0 || n > 3 || (n > 1 && s[0] == '0'))
        return -1;
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    return v <= max ? (int)v : -1;
}

/* Clears every bit of ADDR past the first BITS. */
static void cidr_zero_host_bits(uint8_t *addr, unsigned bits, unsigned total)
{
    for (unsigned i = bits; i < total; i++)
        addr[i / 8] &= (uint8_t)~(0x80u >> (i % 8));
}

int conf_cidr_parse(const char *text, struct conf_cidr *out)
{
    if (!text || !*text)
        return -1;
    const char *slash = strchr(text, '/');
    size_t alen = slash ? (size_t)(slash - text) : strlen(text);
    if (alen == 0 || alen > CIDR_ADDR_MAX)
        return -1;
    char abuf[CIDR_ADDR_MAX + 1];
    memcpy(abuf, text, alen);
    abuf[alen] = '\0';

    struct conf_cidr c = { .family = memchr(abuf, ':', alen) ? AF_INET6 : AF_INET };
    /* inet_pton refuses spaces, signs and (glibc) leading zeros in IPv4 octets. */
    if (inet_pton(c.family, abuf, c.addr) != 1)
        return -1;
    unsigned total = cidr_family_bits(c.family);
    int bits = slash ? cidr_parse_bits(slash + 1, total) : (int)total;
    if (bits < 0)
        return -1;
    c.bits = (uint8_t)bits;
    cidr_zero_host_bits(c.addr, c.bits, total);
    *out = c;
    return 0;
}

/* True when the first BITS bits of A and B are equal. */
static bool cidr_prefix_equal(const uint8_t *a, const uint8_t *b, unsigned bits)
{
    unsigned whole = bits / 8, rest = bits % 8;
    if (memcmp(a, b, whole) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xffu << (8 - rest));
    return ((a[whole] ^ b[whole]) & mask) == 0;
}

bool conf_cidr_contains(const struct conf_cidr *c, int family, const uint8_t *addr)
{
    if (!c || !addr)
        return false;
    unsigned total = cidr_family_bits(c->family);
    if (total == 0 || c->bits > total)
        return false;
    /* An IPv4 client seen on a dual-stack socket arrives mapped; it must still meet the
     * IPv4 rules. (Written as IPv6, e.g. ::ffff:0:0/96, the range matches below too.) */
    if (family == AF_INET6 && c->family == AF_INET &&
        memcmp(addr, cidr_v4_mapped_prefix, sizeof cidr_v4_mapped_prefix) == 0)
        return cidr_prefix_equal(c->addr, addr + sizeof cidr_v4_mapped_prefix, c->bits);
    if (family != c->family)
        return false;
    return cidr_prefix_equal(c->addr, addr, c->bits);
}
