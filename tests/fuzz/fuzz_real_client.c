/* fuzz_real_client: the walk over X-Forwarded-For for the real client (policy_real_client).
 * Each proxy appends the address it saw, so only the hops the trusted proxies wrote can be
 * believed; everything left of the first untrusted hop (from the right) is the client's own
 * text. Whatever the headers, the answer must therefore:
 *   - be the peer itself when no proxy is trusted or the peer is not one of them;
 *   - otherwise be the peer or an address from the header (port 0);
 *   - when it is an untrusted address, not move if the client writes more hops to its left,
 *     in the same field or in an earlier one (else a client could choose its own address);
 *   - not depend on fields of other names, nor on the case of the field name;
 *   - be the right-most listed address when that one is written plainly ("192.0.2.1",
 *     "2001:db8::1", "[2001:db8::1]", "[2001:db8::1]:80", "192.0.2.1:80") and not trusted.
 *
 * The first input byte picks the peer, whether any proxy is trusted and which field is read;
 * the rest is the header section, one "name:value" per line (values are arbitrary bytes, more
 * than the HTTP/1 parser would let through). */
#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "policy/policy.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_ASSERT(cond) \
    do {                  \
        if (!(cond))      \
            abort();      \
    } while (0)

#define FUZZ_MAX_HEADERS 16

static const char *const fuzz_trusted_text[] = {
    "10.0.0.0/8", "192.168.1.0/24", "::1", "2001:db8::/32", "fd00::/8", "198.51.100.7",
};
#define FUZZ_N_TRUSTED (sizeof fuzz_trusted_text / sizeof fuzz_trusted_text[0])
static struct conf_cidr fuzz_trusted[FUZZ_N_TRUSTED];

/* Trusted and untrusted peers of both families. */
static const char *const fuzz_peer_text[8] = {
    "10.1.2.3", "192.168.1.9", "::1", "2001:db8::5",
    "203.0.113.9", "192.168.2.1", "2001:db9::5", "fe80::1",
};
static struct sockaddr_storage fuzz_peers[8];

static void fuzz_sockaddr(const char *text, uint16_t port, struct sockaddr_storage *out)
{
    memset(out, 0, sizeof *out);
    struct sockaddr_in *v4 = (struct sockaddr_in *)out;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)out;
    if (inet_pton(AF_INET, text, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(port);
    } else if (inet_pton(AF_INET6, text, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(port);
    } else {
        abort();
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    for (size_t i = 0; i < FUZZ_N_TRUSTED; i++)
        if (conf_cidr_parse(fuzz_trusted_text[i], &fuzz_trusted[i]) != 0)
            abort();
    for (size_t i = 0; i < 8; i++)
        fuzz_sockaddr(fuzz_peer_text[i], (uint16_t)(40000 + i), &fuzz_peers[i]);
    return 0;
}

/* ---- comparing answers ---- */

static socklen_t fuzz_sa_len(const struct sockaddr_storage *ss)
{
    return ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

static bool fuzz_same(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    return a->ss_family == b->ss_family && memcmp(a, b, fuzz_sa_len(a)) == 0;
}

static uint16_t fuzz_port(const struct sockaddr_storage *ss)
{
    return ss->ss_family == AF_INET6 ? ((const struct sockaddr_in6 *)ss)->sin6_port
                                     : ((const struct sockaddr_in *)ss)->sin_port;
}

/* ---- the request ---- */

struct fuzz_req {
    struct http_header h[FUZZ_MAX_HEADERS + 1];
    struct http_msg m;
};

/* One header per line of TEXT: the name up to the first ':', the value after it. */
static void fuzz_headers(struct fuzz_req *r, struct str text)
{
    memset(r, 0, sizeof *r);
    r->m.headers = r->h;
    r->m.max_headers = FUZZ_MAX_HEADERS + 1;
    while (text.n && r->m.n_headers < FUZZ_MAX_HEADERS) {
        const char *nl = memchr(text.p, '\n', text.n);
        struct str line = str_make(text.p, nl ? (size_t)(nl - text.p) : text.n);
        const char *colon = line.n ? memchr(line.p, ':', line.n) : NULL;
        size_t nn = colon ? (size_t)(colon - line.p) : line.n;
        struct http_header *h = &r->h[r->m.n_headers++];
        h->name = str_make(line.p, nn);
        h->value = colon ? str_make(colon + 1, line.n - nn - 1) : str_make(line.p + nn, 0);
        text.p += line.n + (nl != NULL);
        text.n -= line.n + (nl != NULL);
    }
}

static void fuzz_walk(const struct config *cfg, const struct sockaddr_storage *peer,
                      const struct fuzz_req *r, struct sockaddr_storage *out)
{
    memset(out, 0x5a, sizeof *out);
    policy_real_client(cfg, (const struct sockaddr *)peer, &r->m, out);
    FUZZ_ASSERT(out->ss_family == AF_INET || out->ss_family == AF_INET6);
}

/* ---- the properties ---- */

/* The client writes hops of its own to the left of the answer A: in front of the first field
 * of that name, and as a field of its own before it. An untrusted A must stay. */
static void fuzz_check_prepend(const struct config *cfg, const struct sockaddr_storage *peer,
                               const struct fuzz_req *r, const struct sockaddr_storage *a)
{
    static const char *const lies[] = { "198.51.100.7, ", "10.9.9.9,", "garbage ,", "," };
    struct fuzz_req r2 = *r;
    r2.m.headers = r2.h;
    uint32_t first = 0;
    while (first < r2.m.n_headers && !str_ieq_cstr(r2.h[first].name, cfg->real_ip_header))
        first++;
    if (first == r2.m.n_headers)
        return;
    struct sockaddr_storage b;
    for (size_t i = 0; i < sizeof lies / sizeof lies[0]; i++) {
        size_t ln = strlen(lies[i]), vn = r->h[first].value.n;
        char *v = malloc(ln + vn + 1);
        memcpy(v, lies[i], ln);
        if (vn)
            memcpy(v + ln, r->h[first].value.p, vn);
        r2.h[first].value = str_make(v, ln + vn);
        fuzz_walk(cfg, peer, &r2, &b);
        FUZZ_ASSERT(fuzz_same(a, &b));
        free(v);
    }
    /* a field of its own, before the others */
    r2.h[first] = r->h[first];
    memmove(&r2.h[1], &r2.h[0], r2.m.n_headers * sizeof r2.h[0]);
    r2.h[0] = (struct http_header){ str_make(cfg->real_ip_header, strlen(cfg->real_ip_header)),
                                    STR_LIT("203.0.113.66") };
    r2.m.n_headers++;
    fuzz_walk(cfg, peer, &r2, &b);
    FUZZ_ASSERT(fuzz_same(a, &b));
}

/* Fields of other names are not read, and the name compares without case. */
static void fuzz_check_names(const struct config *cfg, const struct sockaddr_storage *peer,
                             const struct fuzz_req *r, const struct sockaddr_storage *a)
{
    struct fuzz_req r2;
    memcpy(&r2, r, sizeof r2);
    r2.m.headers = r2.h;
    char upper[FUZZ_MAX_HEADERS][32];
    uint32_t k = 0;
    for (uint32_t i = 0; i < r->m.n_headers; i++) {
        if (!str_ieq_cstr(r->h[i].name, cfg->real_ip_header)) {
            r2.h[k] = (struct http_header){ STR_LIT("X-Other"), STR_LIT("192.0.2.200") };
        } else {
            size_t n = strlen(cfg->real_ip_header);
            for (size_t j = 0; j < n; j++)
                upper[k][j] = (char)((j % 2) ? toupper((unsigned char)cfg->real_ip_header[j])
                                             : tolower((unsigned char)cfg->real_ip_header[j]));
            r2.h[k] = (struct http_header){ str_make(upper[k], n), r->h[i].value };
        }
        k++;
    }
    struct sockaddr_storage b;
    fuzz_walk(cfg, peer, &r2, &b);
    FUZZ_ASSERT(fuzz_same(a, &b));
}

static bool fuzz_is_ows(char c) { return c == ' ' || c == '\t'; }

static bool fuzz_all_digits(struct str s)
{
    for (size_t i = 0; i < s.n; i++)
        if (s.p[i] < '0' || s.p[i] > '9')
            return false;
    return s.n > 0 && s.n <= 5;
}

/* E, one list element, when written plainly: "v4", "v6", "[v6]", "[v6]:port", "v4:port". */
static bool fuzz_plain_hop(struct str e, struct sockaddr_storage *out)
{
    while (e.n && fuzz_is_ows(e.p[0])) {
        e.p++;
        e.n--;
    }
    while (e.n && fuzz_is_ows(e.p[e.n - 1]))
        e.n--;
    char text[64];
    if (e.n == 0 || e.n >= sizeof text || memchr(e.p, '\0', e.n)) /* no NUL in HTTP fields */
        return false;
    memcpy(text, e.p, e.n);
    text[e.n] = '\0';
    char *ip = text, *port = NULL;
    if (ip[0] == '[') {
        char *close = strchr(ip, ']');
        if (!close || (close[1] && close[1] != ':'))
            return false;
        port = close[1] ? close + 2 : NULL;
        *close = '\0';
        ip++;
    } else if (strchr(ip, '.') && strchr(ip, ':') == strrchr(ip, ':') && strchr(ip, ':')) {
        port = strchr(ip, ':');
        *port++ = '\0';
    }
    if (port && !fuzz_all_digits(str_make(port, strlen(port))))
        return false;
    memset(out, 0, sizeof *out);
    if (text[0] != '[' && inet_pton(AF_INET, ip, &((struct sockaddr_in *)out)->sin_addr) == 1) {
        out->ss_family = AF_INET;
        return true;
    }
    if (inet_pton(AF_INET6, ip, &((struct sockaddr_in6 *)out)->sin6_addr) == 1) {
        out->ss_family = AF_INET6;
        return true;
    }
    return false;
}

/* The IPv4 address an IPv4-mapped IPv6 one stands for, into OUT; false if it is none. */
static bool fuzz_unmapped(const struct sockaddr_storage *ss, struct sockaddr_storage *out)
{
    const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;
    if (ss->ss_family != AF_INET6 || !IN6_IS_ADDR_V4MAPPED(a))
        return false;
    memset(out, 0, sizeof *out);
    out->ss_family = AF_INET;
    memcpy(&((struct sockaddr_in *)out)->sin_addr, a->s6_addr + 12, 4);
    return true;
}

/* The right-most element of the last non-empty field of the name, when plainly written and not
 * trusted, is the answer (either form of an IPv4-mapped address will do). */
static void fuzz_check_rightmost(const struct config *cfg, const struct fuzz_req *r,
                                 const struct sockaddr_storage *a)
{
    struct str v = { 0 };
    for (uint32_t i = r->m.n_headers; i-- > 0 && v.n == 0;)
        if (str_ieq_cstr(r->h[i].name, cfg->real_ip_header))
            v = r->h[i].value;
    if (v.n == 0)
        return;
    size_t cut = v.n;
    while (cut > 0 && v.p[cut - 1] != ',')
        cut--;
    struct sockaddr_storage e, e4;
    if (!fuzz_plain_hop(str_make(v.p + cut, v.n - cut), &e) ||
        policy_is_trusted(cfg, (const struct sockaddr *)&e))
        return;
    FUZZ_ASSERT(fuzz_same(a, &e) || (fuzz_unmapped(&e, &e4) && fuzz_same(a, &e4)));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    uint8_t sel = data[0];
    const struct sockaddr_storage *peer = &fuzz_peers[sel & 7];
    struct config cfg = { 0 };
    cfg.trusted_proxies = fuzz_trusted;
    cfg.n_trusted_proxies = (sel & 0x08) ? 0 : FUZZ_N_TRUSTED;
    cfg.real_ip_header = (sel & 0x10) ? "X-Real-IP" : "X-Forwarded-For";

    static struct fuzz_req r; /* big: off the stack */
    fuzz_headers(&r, str_make((const char *)data + 1, size - 1));
    struct sockaddr_storage a;
    fuzz_walk(&cfg, peer, &r, &a);

    bool believed = cfg.n_trusted_proxies && policy_is_trusted(&cfg, (const struct sockaddr *)peer);
    if (!believed || fuzz_same(&a, peer)) {
        FUZZ_ASSERT(fuzz_same(&a, peer));
        if (!believed)
            return 0;
    } else {
        FUZZ_ASSERT(fuzz_port(&a) == 0);
    }
    if (!policy_is_trusted(&cfg, (const struct sockaddr *)&a))
        fuzz_check_prepend(&cfg, peer, &r, &a);
    fuzz_check_names(&cfg, peer, &r, &a);
    fuzz_check_rightmost(&cfg, &r, &a);
    return 0;
}
