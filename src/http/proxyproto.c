/* The PROXY protocol header parser. Section numbers refer to haproxy's
 * doc/proxy-protocol.txt ("The PROXY protocol, Versions 1 & 2"). */
#include "http/proxyproto.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

/* §2.2: the receiver tells the versions apart by the first bytes; "PROXY" is version 1. */
#define PP1_FIRST 'P'
#define PP2_FIRST '\r'

/* ---- common ---- */

/* Fills one side of the connection; IP is 4 or 16 bytes in network order. */
static void pp_set_addr(struct sockaddr_storage *ss, socklen_t *ss_len, int family,
                        const uint8_t *ip, uint16_t port)
{
    memset(ss, 0, sizeof *ss);
    if (family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)ss;
        sin->sin_family = AF_INET;
        sin->sin_port = htons(port);
        memcpy(&sin->sin_addr, ip, 4);
        *ss_len = sizeof *sin;
        return;
    }
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(port);
    memcpy(&sin6->sin6_addr, ip, 16);
    *ss_len = sizeof *sin6;
}

/* The addresses of a proxied TCP connection, as both versions carry them. */
struct pp_addrs {
    int family; /* AF_INET or AF_INET6 */
    uint8_t src[16], dst[16];
    uint16_t sport, dport;
};

/* OUT is zeroed whole first, so results compare equal with memcmp. */
static void pp_info_with(struct proxyproto_info *out, const struct pp_addrs *a, size_t header_len)
{
    memset(out, 0, sizeof *out);
    out->has_addr = true;
    out->header_len = header_len;
    pp_set_addr(&out->src, &out->src_len, a->family, a->src, a->sport);
    pp_set_addr(&out->dst, &out->dst_len, a->family, a->dst, a->dport);
}

static void pp_info_without(struct proxyproto_info *out, size_t header_len)
{
    memset(out, 0, sizeof *out);
    out->has_addr = false;
    out->header_len = header_len;
}

/* ---- version 1 (§2.1): one line of US-ASCII text ---- */

/* §2.1: "If the CRLF sequence is not found in the first 107 characters, the receiver should
 * declare the line invalid." */
#define PP1_MAX_LINE 107
/* Longest address text accepted: INET6_ADDRSTRLEN less its NUL (an IPv6 address ending in
 * dotted IPv4, as inet_ntop writes IPv4-mapped ones). */
#define PP1_ADDR_MAX (INET6_ADDRSTRLEN - 1)
#define PP1_PORT_MAX 5

struct pp1_cursor {
    const char *p;
    size_t len; /* capped at PP1_MAX_LINE */
    size_t pos;
};

/* Matches LIT at the cursor without moving it: OK, NEED_MORE when the bytes end while still
 * matching, or ERROR. */
static enum proxyproto_result pp1_peek_literal(const struct pp1_cursor *c, const char *lit)
{
    size_t n = strlen(lit), avail = c->len - c->pos;
    size_t cmp = avail < n ? avail : n;
    if (memcmp(c->p + c->pos, lit, cmp) != 0)
        return PROXYPROTO_ERROR;
    return cmp == n ? PROXYPROTO_OK : PROXYPROTO_NEED_MORE;
}

static enum proxyproto_result pp1_literal(struct pp1_cursor *c, const char *lit)
{
    enum proxyproto_result r = pp1_peek_literal(c, lit);
    if (r == PROXYPROTO_OK)
        c->pos += strlen(lit);
    return r;
}

/* A prefix of a port: decimal, no leading zero or sign, at most 65535 (§2.1). */
static bool pp1_port_prefix_ok(const char *s, size_t n)
{
    if (n > PP1_PORT_MAX || (n > 1 && s[0] == '0'))
        return false;
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    return v <= 65535;
}

/* A prefix of a dotted-quad IPv4 address: at most 4 decimal numbers of 0-255, no heading
 * zeroes (§2.1, "to avoid any possible confusion with octal numbers"), one dot between. */
static bool pp1_ipv4_prefix_ok(const char *s, size_t n)
{
    unsigned dots = 0, digits = 0, value = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '.') {
            if (digits == 0 || ++dots > 3)
                return false;
            digits = value = 0;
        } else if (s[i] >= '0' && s[i] <= '9') {
            if (digits == 1 && value == 0)
                return false;
            digits++;
            value = value * 10 + (unsigned)(s[i] - '0');
            if (value > 255)
                return false;
        } else {
            return false;
        }
    }
    return true;
}

static bool pp1_is_hex(char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

/* A prefix of an IPv6 address as inet_pton reads it: groups of 1-4 hex digits, one "::" at
 * most (standing for one group or more), 8 groups in all, or 6 and a dotted IPv4 tail. It may
 * let through a few prefixes no completion can save; the full check (inet_pton) rejects
 * them, so it must never refuse the prefix of a valid address. */
static bool pp1_ipv6_prefix_ok(const char *s, size_t n)
{
    unsigned groups = 0, digits = 0; /* groups closed by ':'; digits of the open group */
    bool dcolon = false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch == '.') {
            if (groups > (dcolon ? 5u : 6u))
                return false;
            return pp1_ipv4_prefix_ok(s + i - digits, n - i + digits);
        }
        if (ch == ':') {
            if (i > 0 && s[i - 1] == ':') {
                if (dcolon)
                    return false;
                dcolon = true;
            } else if (i > 0) {
                groups++;
                digits = 0;
            } else if (n > 1 && s[1] != ':') {
                return false; /* a leading ':' only begins "::" */
            }
            continue;
        }
        if (!pp1_is_hex(ch) || ++digits > 4 || groups + 1 > (dcolon ? 7u : 8u))
            return false;
    }
    return true;
}

/* Reads a token up to TERM (consumed) into OUT, a NUL-terminated copy of at most MAX bytes.
 * NEED_MORE while the bytes so far may begin a valid token, ERROR once they cannot; OK only
 * says the token passed PREFIX_OK, the caller checks it is whole. */
static enum proxyproto_result pp1_token(struct pp1_cursor *c, char term, size_t max,
                                        bool (*prefix_ok)(const char *, size_t), char *out)
{
    size_t n = 0;
    while (c->pos < c->len && c->p[c->pos] != term) {
        if (n == max)
            return PROXYPROTO_ERROR;
        out[n++] = c->p[c->pos++];
    }
    out[n] = '\0';
    if (!prefix_ok(out, n))
        return PROXYPROTO_ERROR;
    if (c->pos == c->len)
        return PROXYPROTO_NEED_MORE;
    c->pos++;
    return PROXYPROTO_OK;
}

/* An address of FAMILY in its text form (§2.1) and the space after it; stored in IP. */
static enum proxyproto_result pp1_addr(struct pp1_cursor *c, int family, uint8_t *ip)
{
    char text[PP1_ADDR_MAX + 1];
    bool (*ok)(const char *, size_t) = family == AF_INET ? pp1_ipv4_prefix_ok : pp1_ipv6_prefix_ok;
    enum proxyproto_result r = pp1_token(c, ' ', PP1_ADDR_MAX, ok, text);
    if (r != PROXYPROTO_OK)
        return r;
    return inet_pton(family, text, ip) == 1 ? PROXYPROTO_OK : PROXYPROTO_ERROR;
}

static enum proxyproto_result pp1_port(struct pp1_cursor *c, char term, uint16_t *port)
{
    char text[PP1_PORT_MAX + 1];
    enum proxyproto_result r = pp1_token(c, term, PP1_PORT_MAX, pp1_port_prefix_ok, text);
    if (r != PROXYPROTO_OK)
        return r;
    if (text[0] == '\0')
        return PROXYPROTO_ERROR;
    *port = (uint16_t)strtoul(text, NULL, 10);
    return PROXYPROTO_OK;
}

/* "src dst sport dport\r\n" after "PROXY TCP4 " or "PROXY TCP6 ": single spaces, addresses
 * of the announced family, then the CRLF (§2.1). */
static enum proxyproto_result pp1_tcp(struct pp1_cursor *c, struct pp_addrs *a)
{
    enum proxyproto_result r = pp1_addr(c, a->family, a->src);
    if (r == PROXYPROTO_OK)
        r = pp1_addr(c, a->family, a->dst);
    if (r == PROXYPROTO_OK)
        r = pp1_port(c, ' ', &a->sport);
    if (r == PROXYPROTO_OK)
        r = pp1_port(c, '\r', &a->dport);
    if (r == PROXYPROTO_OK)
        r = pp1_literal(c, "\n");
    return r;
}

/* After "PROXY UNKNOWN": CRLF at once, or a space and text the receiver must ignore up to the
 * CRLF (§2.1). The text may only be printable US-ASCII; a lone CR or LF is refused. */
static enum proxyproto_result pp1_unknown_tail(struct pp1_cursor *c)
{
    if (c->pos < c->len && c->p[c->pos] == ' ')
        c->pos++;
    else if (c->pos < c->len && c->p[c->pos] != '\r')
        return PROXYPROTO_ERROR;
    while (c->pos < c->len && c->p[c->pos] >= 0x20 && c->p[c->pos] <= 0x7e)
        c->pos++;
    if (c->pos == c->len)
        return PROXYPROTO_NEED_MORE;
    if (c->p[c->pos] != '\r')
        return PROXYPROTO_ERROR;
    c->pos++;
    return pp1_literal(c, "\n");
}

/* "TCP4 ", "TCP6 " or "UNKNOWN" (§2.1). On OK, *FAMILY is AF_INET, AF_INET6 or AF_UNSPEC. */
static enum proxyproto_result pp1_protocol(struct pp1_cursor *c, int *family)
{
    static const struct { const char *word; int family; } protos[] = {
        { "TCP4 ", AF_INET }, { "TCP6 ", AF_INET6 }, { "UNKNOWN", AF_UNSPEC },
    };
    bool more = false;
    for (size_t i = 0; i < sizeof protos / sizeof protos[0]; i++) {
        enum proxyproto_result r = pp1_literal(c, protos[i].word);
        if (r == PROXYPROTO_OK) {
            *family = protos[i].family;
            return r;
        }
        more |= r == PROXYPROTO_NEED_MORE;
    }
    return more ? PROXYPROTO_NEED_MORE : PROXYPROTO_ERROR;
}

static enum proxyproto_result pp1_parse(const uint8_t *data, size_t len, struct proxyproto_info *out)
{
    struct pp1_cursor c = { (const char *)data, len < PP1_MAX_LINE ? len : PP1_MAX_LINE, 0 };
    struct pp_addrs a = { 0 };
    enum proxyproto_result r = pp1_literal(&c, "PROXY ");
    if (r == PROXYPROTO_OK)
        r = pp1_protocol(&c, &a.family);
    if (r == PROXYPROTO_OK)
        r = a.family == AF_UNSPEC ? pp1_unknown_tail(&c) : pp1_tcp(&c, &a);
    if (r == PROXYPROTO_NEED_MORE && len >= PP1_MAX_LINE)
        return PROXYPROTO_ERROR; /* no CRLF in the first 107 bytes */
    if (r != PROXYPROTO_OK)
        return r;
    /* §2.1: with UNKNOWN the receiver uses the real connection's addresses. */
    if (a.family == AF_UNSPEC)
        pp_info_without(out, c.pos);
    else
        pp_info_with(out, &a, c.pos);
    return PROXYPROTO_OK;
}

/* ---- version 2 (§2.2): binary ---- */

static const uint8_t pp2_signature[12] = {
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
};
#define PP2_FIXED 16 /* signature, version/command, family/protocol, length */
#define PP2_CMD_LOCAL 0x0
#define PP2_CMD_PROXY 0x1
#define PP2_TCP4 0x11
#define PP2_TCP6 0x21
#define PP2_TLV_HEAD 3 /* §2.2: type, length_hi, length_lo */

/* 13th byte: high nibble the version, which "must only" be 2; low nibble the command,
 * LOCAL or PROXY, "Receivers must drop connections presenting unexpected values". */
static bool pp2_ver_cmd_ok(uint8_t b)
{
    return (b >> 4) == 0x2 && (b & 0xF) <= PP2_CMD_PROXY;
}

/* 14th byte: the size of the address block it announces, or -1 for a value §2.2 does not
 * list among the expected ones (UNSPEC, TCP/UDP over IPv4/IPv6, UNIX stream/datagram). */
static int pp2_addr_size(uint8_t fam)
{
    switch (fam) {
    case 0x00: return 0;
    case 0x11: case 0x12: return 12;  /* 2*4 + 2*2 */
    case 0x21: case 0x22: return 36;  /* 2*16 + 2*2 */
    case 0x31: case 0x32: return 216; /* 2*108 */
    default: return -1;
    }
}

/* §2.2: the bytes past the addresses are TLVs (type, 16-bit length, value). We use none of
 * them, but each must fit in the header exactly. */
static bool pp2_tlvs_ok(const uint8_t *p, size_t n)
{
    while (n > 0) {
        if (n < PP2_TLV_HEAD)
            return false;
        size_t vlen = (size_t)p[1] << 8 | p[2];
        if (vlen > n - PP2_TLV_HEAD)
            return false;
        p += PP2_TLV_HEAD + vlen;
        n -= PP2_TLV_HEAD + vlen;
    }
    return true;
}

/* Checks the fixed 16 bytes as far as they have arrived; NEED_MORE while they are short. */
static enum proxyproto_result pp2_fixed(const uint8_t *d, size_t len)
{
    size_t sig = len < sizeof pp2_signature ? len : sizeof pp2_signature;
    if (memcmp(d, pp2_signature, sig) != 0)
        return PROXYPROTO_ERROR;
    if (len > 12 && !pp2_ver_cmd_ok(d[12]))
        return PROXYPROTO_ERROR;
    if (len > 13 && pp2_addr_size(d[13]) < 0)
        return PROXYPROTO_ERROR;
    return len < PP2_FIXED ? PROXYPROTO_NEED_MORE : PROXYPROTO_OK;
}

static void pp2_read_addrs(const uint8_t *b, uint8_t fam, struct pp_addrs *a)
{
    size_t ip = fam == PP2_TCP4 ? 4 : 16;
    a->family = fam == PP2_TCP4 ? AF_INET : AF_INET6;
    memcpy(a->src, b, ip);
    memcpy(a->dst, b + ip, ip);
    a->sport = (uint16_t)(b[2 * ip] << 8 | b[2 * ip + 1]);
    a->dport = (uint16_t)(b[2 * ip + 2] << 8 | b[2 * ip + 3]);
}

static enum proxyproto_result pp2_parse(const uint8_t *d, size_t len, struct proxyproto_info *out)
{
    enum proxyproto_result r = pp2_fixed(d, len);
    if (r != PROXYPROTO_OK)
        return r;
    uint8_t cmd = d[12] & 0xF, fam = d[13];
    size_t body = (size_t)d[14] << 8 | d[15];
    size_t addr = (size_t)pp2_addr_size(fam);
    /* A PROXY header too short for its own addresses is refused before waiting for it. */
    if (cmd == PP2_CMD_PROXY && body < addr)
        return PROXYPROTO_ERROR;
    if (len < PP2_FIXED + body)
        return PROXYPROTO_NEED_MORE;
    /* LOCAL: "discard the protocol block including the family", so a LOCAL block shorter
     * than its family's addresses holds nothing we read; otherwise its TLVs must fit. */
    if (body >= addr && !pp2_tlvs_ok(d + PP2_FIXED + addr, body - addr))
        return PROXYPROTO_ERROR;
    /* UNSPEC, UDP and UNIX fall back to the real endpoints, as §2.2 lets a receiver that
     * does not implement them do; so does LOCAL (health checks from the proxy itself). */
    if (cmd == PP2_CMD_LOCAL || (fam != PP2_TCP4 && fam != PP2_TCP6)) {
        pp_info_without(out, PP2_FIXED + body);
        return PROXYPROTO_OK;
    }
    struct pp_addrs a;
    pp2_read_addrs(d + PP2_FIXED, fam, &a);
    pp_info_with(out, &a, PP2_FIXED + body);
    return PROXYPROTO_OK;
}

enum proxyproto_result proxyproto_parse(const uint8_t *data, size_t len, struct proxyproto_info *out)
{
    if (len == 0)
        return PROXYPROTO_NEED_MORE;
    /* §2.2 end: anything that starts like neither version is dropped at once. */
    if (data[0] == PP1_FIRST)
        return pp1_parse(data, len, out);
    if (data[0] == PP2_FIRST)
        return pp2_parse(data, len, out);
    return PROXYPROTO_ERROR;
}
