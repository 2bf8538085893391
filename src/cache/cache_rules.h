/* cache_rules: the HTTP caching rules of RFC 9111 (with RFC 9110's conditionals and ranges,
 * RFC 5861's stale extensions and RFC 9211's Cache-Status), as pure functions over parsed
 * message heads. No I/O, no locks, no clock: times are Unix seconds passed in by the caller.
 * Nothing allocates except the sbuf outputs (owned by the caller, freed with sbuf_free).
 *
 * The cache is a shared cache (RFC 9111 §1): s-maxage and proxy-revalidate apply, `private`
 * responses are never stored. */
#ifndef PORTERO_CACHE_RULES_H
#define PORTERO_CACHE_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/sbuf.h"
#include "core/str.h"
#include "http/msg.h"

struct conf_route_cache;

/* ---- Cache-Control (RFC 9111 §5.2, RFC 5861) ---------------------------------------------- */

#define CACHE_CC_ABSENT (-1)          /* a numeric directive that is not present (or malformed) */
#define CACHE_CC_DELTA_MAX 2147483648 /* delta-seconds saturate here (RFC 9111 §1.2.2) */

/* All Cache-Control field lines of one message combined. Numeric directives are seconds,
 * CACHE_CC_ABSENT when missing; when a directive repeats, the first occurrence counts
 * (§4.2.1 allows it). Quoted arguments ("max-age=\"5\"") are accepted. */
struct cache_cc {
    int64_t max_age;          /* request and response */
    int64_t s_maxage;         /* response */
    int64_t max_stale;        /* request; CACHE_CC_DELTA_MAX when given without a value */
    int64_t min_fresh;        /* request */
    int64_t stale_while_revalidate; /* response (RFC 5861 §3) */
    int64_t stale_if_error;   /* response and request (RFC 5861 §4) */
    bool no_cache;            /* either; the qualified form counts as unqualified; a request's
                                 "Pragma: no-cache" without Cache-Control sets it (§5.4) */
    bool no_store;            /* either */
    bool only_if_cached;      /* request: the caller answers 504 rather than forwarding */
    bool is_private;          /* response; the qualified form counts as unqualified */
    bool is_public;           /* response */
    bool must_revalidate;     /* response */
    bool proxy_revalidate;    /* response */
    bool immutable;           /* response (RFC 8246); informational */
    bool present;             /* at least one Cache-Control field line */
};

/* Parses every Cache-Control field of M. Unknown directives are ignored; a malformed number makes
 * its directive absent, except a response's (M->status > 0) max-age, which then counts as 0:
 * invalid freshness information means stale (§4.2.1). */
void cache_cc_parse(const struct http_msg *m, struct cache_cc *cc);

/* ---- storability and freshness (RFC 9111 §3, §4.2) ---------------------------------------- */

/* The route's knobs, in seconds (cache_policy_from_conf converts the configuration). */
struct cache_policy {
    int64_t default_ttl_s;    /* freshness when nothing else gives one; 0 = none */
    int64_t heuristic_max_s;  /* cap of the Last-Modified heuristic; 0 = no heuristic */
    int64_t swr_default_s;    /* stale-while-revalidate when the response gives none */
    int64_t sie_default_s;    /* stale-if-error when the response gives none */
    bool allow_set_cookie;    /* store responses carrying Set-Cookie */
    uint64_t max_object_size; /* bigger Content-Length: not stored; 0 = no limit */
};

void cache_policy_from_conf(const struct conf_route_cache *c, struct cache_policy *p);

/* What is stored beside an object to decide its later uses. Recompute it (cache_rules_storable)
 * from the merged head after a 304 (cache_rules_merge_304), with the new request/response times. */
struct cache_fresh {
    int64_t lifetime_s;       /* freshness lifetime, §4.2.1 (0 = stale at once) */
    int64_t date_s;           /* Date of the response, or the time it was received */
    int64_t age_s;            /* Age field of the response, 0 if absent or invalid */
    int64_t request_time;     /* the caller's: when the request was sent upstream */
    int64_t response_time;    /* the caller's: when the response head arrived */
    int64_t swr_s;            /* stale-while-revalidate window (0 when stale serving is forbidden) */
    int64_t sie_s;            /* stale-if-error window (same) */
    bool must_revalidate;     /* must-revalidate, proxy-revalidate or s-maxage: never served
                                 stale (§4.2.4, §5.2.2.2, §5.2.2.8, §5.2.2.10) */
    bool no_cache;            /* stored, but every use needs revalidation (§5.2.2.4) */
    bool heuristic;           /* the lifetime is heuristic (§4.2.2) or the route's default */
    bool has_etag;
    bool has_last_modified;
};

/* Why a response is not stored; 0 = storable. */
enum cache_reason {
    CACHE_STORABLE = 0,
    CACHE_NS_METHOD,          /* request method not GET or HEAD */
    CACHE_NS_STATUS,          /* status not final, not understood, 304, or not cacheable by
                                 default and no explicit freshness or public (§3, §4.2.2) */
    CACHE_NS_PARTIAL,         /* 206: only full objects are stored */
    CACHE_NS_REQ_NO_STORE,    /* request Cache-Control: no-store (§5.2.1.5) */
    CACHE_NS_NO_STORE,        /* response no-store (§5.2.2.5) */
    CACHE_NS_PRIVATE,         /* response private (§5.2.2.7) */
    CACHE_NS_AUTHORIZATION,   /* request Authorization, response without must-revalidate,
                                 public or s-maxage (§3.5) */
    CACHE_NS_SET_COOKIE,      /* Set-Cookie and the route does not allow it */
    CACHE_NS_VARY_STAR,       /* Vary: * (or a Vary we cannot key on) (§4.1) */
    CACHE_NS_NO_FRESHNESS,    /* no freshness lifetime and nothing to revalidate or serve stale
                                 with (no validator, no stale-if-error) */
    CACHE_NS_TOO_BIG,         /* Content-Length above max_object_size */
};
/* A short sf-token naming REASON ("private", "set-cookie", "no-freshness", ...), fit for
 * Cache-Status' detail and logs. */
const char *cache_rules_reason(int reason);

/* Decides whether RESP to REQ may be stored, and if so fills OUT (request_time and
 * response_time both set to NOW, the time the response head arrived; the caller may set
 * request_time to when the request went upstream). Checks only what the heads say: the
 * route's method list and a body that grows past max_object_size are the caller's. */
int cache_rules_storable(const struct http_msg *req, const struct http_msg *resp,
                         const struct cache_policy *p, int64_t now, struct cache_fresh *out);

/* ---- age and use at lookup (RFC 9111 §4.2.3, §4.2.4, §4) ---------------------------------- */

/* current_age of §4.2.3, never negative. */
int64_t cache_rules_age(const struct cache_fresh *f, int64_t request_time, int64_t response_time,
                        int64_t now);

enum cache_use {
    CACHE_USE_FRESH,                        /* serve it */
    CACHE_USE_STALE,                        /* stale, but the request's max-stale accepts it: serve */
    CACHE_USE_STALE_REVALIDATE_BACKGROUND,  /* stale within stale-while-revalidate: serve and
                                               refresh in the background (RFC 5861 §3) */
    CACHE_USE_REVALIDATE,                   /* ask upstream first (conditional request); when
                                               that fails, see cache_rules_stale_if_error_ok */
};
/* AGE from cache_rules_age. REQ_CC may be NULL. REVALIDATE when either side says no-cache, when
 * the request's max-age / min-fresh are not met, or when stale and neither max-stale nor
 * stale-while-revalidate allow it (must-revalidate forbids both). A client's request constraints
 * (e.g. a reload's max-age=0) are never answered by stale-while-revalidate. The caller answers
 * REVALIDATE with 504 when the request says only-if-cached (§5.2.1.7). */
enum cache_use cache_rules_use(const struct cache_fresh *f, int64_t age, const struct cache_cc *req_cc);

/* After a failed revalidation (origin down, timeout, 5xx): may the stored response be served?
 * Yes within the response's (or route default) stale-if-error window, the request's
 * stale-if-error or max-stale, never with must-revalidate (RFC 5861 §4). REQ_CC may be NULL. */
bool cache_rules_stale_if_error_ok(const struct cache_fresh *f, int64_t age, const struct cache_cc *req_cc);

/* Remaining freshness (negative when stale), for Cache-Status' ttl. */
int64_t cache_rules_ttl(const struct cache_fresh *f, int64_t age);

/* ---- Vary (RFC 9111 §4.1) ------------------------------------------------------------------ */

#define CACHE_VARY_MAX_NAMES 32

/* Appends to OUT the field names of every Vary line of RESP, lowercased, sorted, deduplicated,
 * separated by "\n" (no trailing one): "accept-encoding\nuser-agent". Returns the number of
 * names (0: no Vary), or -1 for "*", a name that is not a token, or more than
 * CACHE_VARY_MAX_NAMES names (not cacheable). */
int cache_rules_vary_names(const struct http_msg *resp, struct sbuf *out);

/* Appends to OUT REQ's secondary key for the names list NAMES[0..LEN) made by
 * cache_rules_vary_names: one line per name, "name=VALUE\n" when the request has the field
 * (all its lines combined, list members trimmed and joined by ","; empty value: "name=\n"),
 * "name\n" when it has none. Equal keys mean the stored response may be used (§4.1). */
void cache_rules_vary_key(const struct http_msg *req, const char *names, size_t len, struct sbuf *out);

/* ---- conditional requests (RFC 9110 §13) --------------------------------------------------- */

/* For a GET or HEAD answered from the cache whose stored response has ETag ETAG and
 * Last-Modified LAST_MODIFIED (empty slices when absent): 304 when If-None-Match matches (weak
 * comparison, "*" matches), else, when there is no If-None-Match, when If-Modified-Since is a
 * valid date not after NOW and LAST_MODIFIED is a valid date not after it; 0 otherwise (full
 * response). If-Match / If-Unmodified-Since are not evaluated here. */
int cache_rules_conditional(const struct http_msg *req, struct str etag, struct str last_modified,
                            int64_t now);

/* Parses an HTTP-date (RFC 9110 §5.6.7): IMF-fixdate, and the obsolete RFC 850 (two-digit
 * year: 70..99 -> 19xx, 00..69 -> 20xx) and asctime forms. Returns 0 and sets *OUT, or -1. */
int cache_rules_http_date(struct str s, int64_t *out);
/* Writes T as an IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT") plus a NUL; returns 29.
 * T is clamped to [0, 253402300799] (years 1970..9999). */
size_t cache_rules_format_date(int64_t t, char out[30]);

/* ---- 304 merge (RFC 9111 §4.3.4, §3.2) ----------------------------------------------------- */

/* Appends to OUT a new stored head: "HTTP/1.1 STATUS REASON\r\n" (STORED_HEAD's status line),
 * STORED_HEAD's fields minus those RESP304 carries, RESP304's fields, "\r\n". Kept from the stored
 * head whatever the 304 says: Content-Length and the framing / hop-by-hop fields (Transfer-Encoding,
 * Connection and the fields it names, Keep-Alive, Proxy-Connection, TE, Trailer, Upgrade,
 * Proxy-Authenticate, Proxy-Authentication-Info, Proxy-Authorization), never taken from the 304.
 * Which stored response a 304 refreshes (matching validators, §4.3.4) is the caller's choice. */
void cache_rules_merge_304(const struct http_msg *stored_head, const struct http_msg *resp304,
                           struct sbuf *out);

/* ---- ranges (RFC 9110 §14) ------------------------------------------------------------------ */

struct cache_range {
    uint64_t first;           /* inclusive */
    uint64_t last;            /* inclusive, < length */
};

#define CACHE_RANGE_MAX_SPECS 64 /* more range-specs than this: answered whole */

/* For a GET of a stored full object of LENGTH bytes (validators ETAG / LAST_MODIFIED, empty when
 * absent). Returns
 *   0    serve the whole object (200): no Range, not GET, not "bytes", malformed Range, If-Range
 *        not matching (strong comparison for an entity-tag, exact equality for a date), more
 *        than CACHE_RANGE_MAX_SPECS specs, or more ranges than MAX after coalescing;
 *   206  OUT[0..*N) holds the ranges, ascending, overlapping or adjacent ones coalesced;
 *   416  none is satisfiable (the caller sends Content-Range: bytes [*]/LENGTH).
 * Multi-range: returned when MAX > 1 (the caller sends multipart/byteranges); pass MAX = 1 to
 * answer multi-range requests with the whole object. */
int cache_rules_ranges(const struct http_msg *req, uint64_t length, struct str etag,
                       struct str last_modified, struct cache_range *out, size_t max, size_t *n);

/* ---- Cache-Status (RFC 9211) ----------------------------------------------------------------- */

/* A base kind, optionally OR'ed with the flags. */
enum cache_status_kind {
    CACHE_STATUS_HIT = 0,       /* "hit" */
    CACHE_STATUS_MISS = 1,      /* "fwd=miss" */
    CACHE_STATUS_URI_MISS = 2,  /* "fwd=uri-miss": nothing stored for the key */
    CACHE_STATUS_VARY_MISS = 3, /* "fwd=vary-miss": stored, but not for these request headers */
    CACHE_STATUS_STALE = 4,     /* "fwd=stale": revalidated */
    CACHE_STATUS_REQUEST = 5,   /* "fwd=request": the request asked for it (no-cache, max-age) */
    CACHE_STATUS_BYPASS = 6,    /* "fwd=bypass": not cacheable by configuration (method, ...) */
    CACHE_STATUS_KIND_MASK = 0x0f,
    CACHE_STATUS_FWD_304 = 0x10,   /* flag: "; fwd-status=304" */
    CACHE_STATUS_STORED = 0x20,    /* flag: "; stored" */
    CACHE_STATUS_COLLAPSED = 0x40, /* flag: "; collapsed" */
};
#define CACHE_STATUS_NO_TTL INT64_MIN

/* Appends a Cache-Status member: CACHE_NAME (a token, else a quoted string), the kind, "; ttl=N"
 * unless TTL is CACHE_STATUS_NO_TTL, "; detail=DETAIL" when DETAIL is not NULL. E.g.
 * "portero; hit; ttl=120", "portero; fwd=miss; stored", "portero; fwd=stale; fwd-status=304",
 * "portero; hit; ttl=-20; detail=stale-if-error". KIND is an int so that flags can be OR'ed. */
void cache_rules_status(struct sbuf *out, const char *cache_name, int kind, int64_t ttl,
                        const char *detail);

#endif
