/* proxyproto: a strict parser for the HAProxy PROXY protocol header, versions 1 (text) and 2
 * (binary), which a trusted load balancer puts in front of a connection to tell us the real
 * client's address (spec: haproxy doc/proxy-protocol.txt).
 *
 * Pure: it reads bytes and fills a struct; no sockets, no allocation. It can be called again
 * on a longer buffer as bytes arrive, and refuses a header as soon as the bytes so far cannot
 * begin a valid one, so a client speaking plain HTTP or TLS is turned away at once. */
#ifndef PORTERO_HTTP_PROXYPROTO_H
#define PORTERO_HTTP_PROXYPROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* The longest header: a v2 header with the largest length field (v1 lines stop at 107). */
#define PROXYPROTO_MAX_HEADER (16 + 65535)

enum proxyproto_result { PROXYPROTO_NEED_MORE, PROXYPROTO_OK, PROXYPROTO_ERROR };

struct proxyproto_info {
    bool has_addr;                 /* false: LOCAL command, UNKNOWN or an unsupported family
                                      (AF_UNIX, UNSPEC, DGRAM): keep the TCP peer */
    struct sockaddr_storage src;   /* the real client (with port): sockaddr_in or sockaddr_in6 */
    socklen_t src_len;             /* 0 unless has_addr */
    struct sockaddr_storage dst;   /* the address the client connected to */
    socklen_t dst_len;
    size_t header_len;             /* bytes to consume from the connection */
};

/* Parses the PROXY header at the start of DATA[0..LEN). Returns
 *   PROXYPROTO_NEED_MORE  DATA is a valid prefix of a header: read more (the caller gives up
 *                         past PROXYPROTO_MAX_HEADER bytes or at its header timeout);
 *   PROXYPROTO_ERROR      DATA does not start with a valid header: close the connection;
 *   PROXYPROTO_OK         *OUT is filled; the header is OUT->header_len <= LEN bytes and the
 *                         client's own bytes start right after it.
 * *OUT is written only on PROXYPROTO_OK. */
enum proxyproto_result proxyproto_parse(const uint8_t *data, size_t len, struct proxyproto_info *out);

#endif
