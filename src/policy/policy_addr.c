/* policy_addr: who the client is — allow/deny lists, trusted proxies and the real client behind
 * them, per-address connection counts — and the allow/deny step. */
#include "policy/policy_priv.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

/* --- addresses -------------------------------------------------------------------------------- */

static const uint8_t *policy_addr_bytes(const struct sockaddr *sa, int *family, size_t *len)
{
    *family = sa->sa_family;
    if (sa->sa_family == AF_INET) {
        *len = 4;
        return (const uint8_t *)&((const struct sockaddr_in *)(const void *)sa)->sin_addr;
    }
    if (sa->sa_family == AF_INET6) {
        *len = 16;
        return (const uint8_t *)&((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
    }
    *len = 0;
    return NULL;
}

bool policy_acl_allows(const struct conf_acl *acl, const struct sockaddr *sa)
{
    int family;
    size_t len;
    const uint8_t *addr = policy_addr_bytes(sa, &family, &len);
    bool any_allow = false;
    for (size_t i = 0; i < acl->n; i++) {
        const struct conf_acl_rule *rule = &acl->rules[i];
        any_allow = any_allow || rule->allow;
        if (addr && conf_cidr_contains(&rule->cidr, family, addr))
            return rule->allow;
    }
    return !any_allow;
}

static bool policy_in_cidrs(const struct conf_cidr *v, size_t n, const struct sockaddr *sa)
{
    int family;
    size_t len;
    const uint8_t *addr = policy_addr_bytes(sa, &family, &len);
    for (size_t i = 0; addr && i < n; i++)
        if (conf_cidr_contains(&v[i], family, addr))
            return true;
    return false;
}

bool policy_is_trusted(const struct config *cfg, const struct sockaddr *sa)
{
    return policy_in_cidrs(cfg->trusted_proxies, cfg->n_trusted_proxies, sa);
}

/* Parses one list element of X-Forwarded-For ("192.0.2.1", "2001:db8::1", "[2001:db8::1]:80",
 * "192.0.2.1:80") into OUT; false if it is none of those. */
/* 1 to 5 digits: what a port may look like after "v4:" or "[v6]:". */
static bool policy_is_port(const char *p)
{
    size_t n = strspn(p, "0123456789");
    return n >= 1 && n <= 5 && p[n] == '\0';
}

static bool policy_parse_hop(struct str s, struct sockaddr_storage *out)
{
    char text[INET6_ADDRSTRLEN + 8];
    s = str_trim_ows(s);
    if (s.n == 0 || s.n >= sizeof text)
        return false;
    memcpy(text, s.p, s.n);
    text[s.n] = '\0';
    char *ip = text, *port = NULL;
    if (ip[0] == '[') {
        char *end = strchr(ip, ']');
        if (!end || (end[1] && end[1] != ':'))
            return false;
        port = end[1] ? end + 2 : NULL;
        *end = '\0';
        ip++;
    } else if (strchr(ip, '.') && strchr(ip, ':') && strchr(ip, ':') == strrchr(ip, ':')) {
        port = strchr(ip, ':'); /* IPv4 with a port; IPv6 text has two colons or more */
        *port++ = '\0';
    }
    if (port && !policy_is_port(port))
        return false;
    memset(out, 0, sizeof *out);
    struct sockaddr_in *v4 = (struct sockaddr_in *)out;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)out;
    if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        return true;
    }
    if (inet_pton(AF_INET6, ip, &v6->sin6_addr) != 1)
        return false;
    if (IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr)) {
        /* ::ffff:a.b.c.d, a dual-stack proxy's view of an IPv4 client, is that IPv4 client */
        struct in_addr a4;
        memcpy(&a4, &v6->sin6_addr.s6_addr[12], 4);
        memset(out, 0, sizeof *out);
        v4->sin_family = AF_INET;
        v4->sin_addr = a4;
        return true;
    }
    v6->sin6_family = AF_INET6;
    return true;
}

/* Walks every instance of the header right to left: the client is the first hop that is not a
 * trusted proxy (anything left of it could have been written by the client itself). */
void policy_real_client(const struct config *cfg, const struct sockaddr *peer,
                        const struct http_msg *req, struct sockaddr_storage *out)
{
    socklen_t len = peer->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    memcpy(out, peer, len);
    if (!cfg->n_trusted_proxies || !policy_is_trusted(cfg, peer))
        return;
    for (uint32_t i = req->n_headers; i-- > 0;) {
        const struct http_header *h = &req->headers[i];
        if (!str_ieq_cstr(h->name, cfg->real_ip_header))
            continue;
        struct str v = h->value;
        while (v.n) {
            size_t cut = v.n;
            while (cut > 0 && v.p[cut - 1] != ',')
                cut--;
            struct sockaddr_storage hop;
            if (!policy_parse_hop(str_make(v.p + cut, v.n - cut), &hop))
                return; /* garbage: stop at the last address we could trust */
            memcpy(out, &hop, sizeof hop);
            if (!policy_is_trusted(cfg, (struct sockaddr *)&hop))
                return;
            v.n = cut ? cut - 1 : 0;
        }
    }
}

bool policy_conn_acquire(const struct sockaddr *sa, uint32_t max)
{
    int family;
    size_t len;
    const uint8_t *addr = policy_addr_bytes(sa, &family, &len);
    if (!max || !addr || !policy_buckets())
        return true;
    return ratelimit_conn_acquire(policy_buckets(), addr, len, max);
}

void policy_conn_release(const struct sockaddr *sa)
{
    int family;
    size_t len;
    const uint8_t *addr = policy_addr_bytes(sa, &family, &len);
    if (addr && policy_buckets())
        ratelimit_conn_release(policy_buckets(), addr, len);
}

/* --- step: allow / deny ----------------------------------------------------------------------- */

enum policy_result policy_step_acl(struct policy_run *run, const struct policy_req *rq,
                                          const struct conf_acl *acl)
{
    if (!acl || !acl->n || policy_acl_allows(acl, rq->client))
        return POLICY_PASS;
    POLICY_COUNT(rq, acl_denied);
    return policy_answer(run, 403, "acl");
}

