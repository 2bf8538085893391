/* config: the typed, immutable configuration snapshot and its loader.
 *
 * The loader reads YAML (or JSON, which libyaml also reads) into one `struct config`.
 * Every error is reported as "FILE:LINE:COL: message"; all errors are collected before
 * the loader gives up, so an operator sees them all at once. A snapshot is immutable once
 * published and refcounted: exchanges hold a reference for their whole life. */
#ifndef PORTERO_CONF_CONFIG_H
#define PORTERO_CONF_CONFIG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

enum log_format { LOG_FORMAT_TEXT, LOG_FORMAT_JSON };
enum log_level { LOG_LEVEL_ERROR, LOG_LEVEL_WARN, LOG_LEVEL_INFO, LOG_LEVEL_DEBUG };

struct conf_log {
    char *access;               /* "stdout", "stderr", "off" or a file path; default "stdout" */
    enum log_format format;     /* default text */
    char *error;                /* "stderr", "stdout" or a file path; default "stderr" */
    enum log_level level;       /* default info */
    uint64_t flush_interval_ms; /* access log buffer flush period; default 1000 */
};

/* Durations are milliseconds, sizes bytes. Defaults in comments. */
struct conf_limits {
    uint32_t max_connections;      /* 10000, per process */
    uint64_t header_timeout_ms;    /* 10s: whole request head must arrive (slowloris) */
    uint64_t body_timeout_ms;      /* 60s: client body idle */
    uint64_t keepalive_timeout_ms; /* 75s: idle client connection between requests */
    uint64_t send_timeout_ms;      /* 60s: client not reading what we write */
    uint64_t tunnel_timeout_ms;    /* 3600s: idle upgraded (WebSocket) tunnel */
    uint64_t drain_timeout_ms;     /* 30s: SIGTERM grace for in-flight exchanges */
    uint32_t max_request_line;     /* 8KiB -> 414 */
    uint32_t max_header_bytes;     /* 64KiB -> 431 (whole head incl. request line) */
    uint32_t max_headers;          /* 100 -> 431 */
    uint64_t max_body_bytes;       /* 0 = unlimited -> 413 */
    uint64_t min_body_rate;        /* 256 bytes/s: a request body that keeps trickling (slow POST)
                                      must average this once it has taken body_timeout; 0 = off
                                      -> 408 */
    uint32_t shed_connections;     /* 1024: past max_connections, up to this many more are accepted
                                      only to be answered 503 and closed (0: stop accepting) */
};

/* Forwarding-header policy (top-level `forwarding:`). */
struct conf_forwarding {
    bool x_forwarded; /* true: append X-Forwarded-For, set X-Forwarded-Proto/-Host */
    bool forwarded;   /* false: append RFC 7239 Forwarded */
    bool via;         /* false: append Via: 1.1 portero */
};

/* An address range: "10.0.0.0/8", "2001:db8::/32", or one address (full prefix). */
struct conf_cidr {
    int family;                   /* AF_INET or AF_INET6 */
    uint8_t addr[16];             /* network byte order; IPv4 in the first 4 bytes, host bits 0 */
    uint8_t bits;                 /* prefix length: 0-32 (IPv4) or 0-128 (IPv6) */
};

/* `allow:` / `deny:` lists of CIDRs ("all" = every address). Rules keep file order and the first
 * match wins; an address no rule matches is denied when any allow rule exists, else allowed. */
struct conf_acl_rule {
    bool allow;
    struct conf_cidr cidr;
};
struct conf_acl {
    struct conf_acl_rule *rules;  /* owned */
    size_t n;
};

/* One certificate of a TLS listener: its names (SAN DNS entries, else the subject CN) select it
 * by SNI; an RSA and an ECDSA certificate may share names (the client's signature algorithms pick). */
struct conf_tls_cert {
    char *cert;                   /* PEM path: certificate, then its chain */
    char *key;                    /* PEM path: private key */
    char *ocsp;                   /* DER OCSP response to staple, NULL = none */
};

enum tls_client_auth { TLS_CLIENT_AUTH_OFF, TLS_CLIENT_AUTH_OPTIONAL, TLS_CLIENT_AUTH_REQUIRED };
enum tls_version { TLS_VERSION_1_2, TLS_VERSION_1_3 };

/* Listener `tls:`. Present = the listener speaks TLS. */
struct conf_listener_tls {
    bool enabled;                 /* the key is present */
    struct conf_tls_cert *certificates; /* owned; the first is the default (no or unknown SNI) */
    size_t n_certificates;        /* >= 1 */
    char **alpn;                  /* protocols offered, in server preference; default h2, http/1.1 */
    size_t n_alpn;
    char *ciphers;                /* TLS 1.2 cipher list; NULL = the modern default */
    char *ciphersuites;           /* TLS 1.3 suites; NULL = OpenSSL's default */
    enum tls_version min_version; /* default 1.2 */
    bool session_tickets;         /* true: resumption by tickets (keys shared by workers) */
    uint64_t ticket_rotation_ms;  /* 12h: a new ticket key; the last two still decrypt */
    enum tls_client_auth client_auth; /* `client_auth: { mode: optional|required }` default off */
    char *client_ca;              /* `client_auth.ca`: PEM CA bundle that verifies client certs */
    char *client_subject_header;  /* `client_auth.header`: default X-Client-Cert-Subject */
    uint64_t hsts_max_age_s;      /* `hsts: { max_age: 365d }`; 0 = no Strict-Transport-Security */
    bool hsts_include_subdomains;
    bool hsts_preload;
};

/* Listener `http2:` (HTTP/2 over TLS via ALPN, or cleartext with prior knowledge). */
struct conf_listener_http2 {
    bool enabled;                 /* default true */
    uint32_t max_concurrent_streams; /* 128 */
    uint32_t initial_window;      /* 256KiB: per-stream receive window (request bodies) */
    uint32_t max_resets;          /* 200 client resets (rapid reset) ... */
    uint32_t max_control_frames;  /* 1000 SETTINGS/PING/PRIORITY/empty DATA/ WINDOW_UPDATE ... */
    uint64_t flood_window_ms;     /* ... within 10s -> GOAWAY ENHANCE_YOUR_CALM and close */
};

struct conf_listener {
    char *name;
    char *address;                /* as written, e.g. "0.0.0.0:8080" or "[::]:8080" */
    struct sockaddr_storage addr; /* resolved at load */
    socklen_t addr_len;
    bool proxy_protocol;          /* false: connections start with a PROXY v1/v2 header, accepted
                                     only from trusted_proxies */
    struct conf_acl acl;          /* checked at accept, on the real client address */
    uint32_t max_connections_per_ip; /* 0 = unlimited; more -> 429 and close */
    struct conf_listener_tls tls;
    struct conf_listener_http2 http2;
    uint32_t redirect_https;      /* 0 = off; else every request gets a redirect to https on this
                                     port (`redirect_https: true` = 443, or a port number) */
};

struct conf_server {
    char *address;                /* as written: "IP:port" or "host:port" */
    struct sockaddr_storage addr; /* resolved at load (getaddrinfo for hostnames) */
    socklen_t addr_len;
    uint32_t weight;              /* default 1, >= 1 */
    bool drain;                   /* default false: no new requests, pooled connections close */
    size_t index;                 /* position in its upstream */
};

enum health_check_type { HEALTH_CHECK_HTTP, HEALTH_CHECK_TCP };

/* Active checks (`health_check:`), run by the control thread. */
struct conf_health_check {
    bool enabled;                 /* the key is present */
    enum health_check_type type;  /* `type: http|tcp`, default http */
    char *path;                   /* default "/" (http) */
    char *host;                   /* Host header; default: the server's address */
    uint64_t interval_ms;         /* 2s */
    uint64_t timeout_ms;          /* 1s */
    int status_min, status_max;   /* `status: 200-399` (or one code), default 200-399 */
    uint32_t rise;                /* 2 successes in a row mark a server up */
    uint32_t fall;                /* 3 failures in a row mark it down */
};

/* Passive checks (`outlier:`): consecutive failures eject a server for a while. */
struct conf_outlier {
    uint32_t consecutive_failures; /* 5; 0 = off */
    uint64_t base_ejection_ms;     /* 30s, doubles with each ejection of the same server */
    uint64_t max_ejection_ms;      /* 300s */
    uint32_t max_ejected_percent;  /* 50 */
};

/* `retries:` — on a different server, before any response byte reached the client. */
struct conf_retries {
    uint32_t attempts;             /* tries in all, first included: 2 */
    uint64_t per_try_timeout_ms;   /* 0 = timeouts.response */
    int *statuses;                 /* also retry idempotent requests on these statuses; default none */
    size_t n_statuses;
    uint32_t budget_percent;       /* retries <= this share of requests (per worker, 10s window): 20 */
    uint32_t budget_min;           /* retries always allowed per window: 3 */
    uint64_t backoff_ms;           /* base of the jittered exponential backoff: 25ms */
    uint64_t backoff_max_ms;       /* 250ms */
};

enum balance_kind { BALANCE_ROUND_ROBIN, BALANCE_LEAST_CONN, BALANCE_RANDOM_TWO, BALANCE_HASH };
enum hash_key_kind { HASH_KEY_CLIENT_IP, HASH_KEY_URI, HASH_KEY_HEADER, HASH_KEY_COOKIE };

/* Upstream `tls:` (`tls: true` = verify with the system CAs). */
struct conf_upstream_tls {
    bool enabled;
    bool verify;                  /* true: the server certificate must verify (and match sni) */
    char *ca;                     /* PEM bundle; NULL = the system store */
    char *sni;                    /* name sent and verified; NULL = the server address's host */
    char *client_cert;            /* mTLS: PEM certificate (chain) ... */
    char *client_key;             /* ... and its key; both or neither */
};

enum upstream_protocol { UPSTREAM_HTTP1, UPSTREAM_HTTP2 };

struct conf_upstream {
    char *name;
    size_t index;                 /* position in config->upstreams */
    enum balance_kind balance;    /* default round_robin */
    enum hash_key_kind hash_key;  /* default client_ip */
    char *hash_key_name;          /* header or cookie name for header:/cookie: keys */
    struct conf_server *servers;
    size_t n_servers;
    uint32_t keepalive_max_idle;  /* 64 idle connections per worker and server */
    uint64_t keepalive_idle_timeout_ms; /* 60s */
    uint64_t connect_timeout_ms;  /* 2s */
    uint64_t response_timeout_ms; /* 30s: until the response head */
    uint64_t idle_timeout_ms;     /* 60s: upstream body idle */
    struct conf_health_check health_check;
    struct conf_outlier outlier;
    struct conf_retries retries;
    uint64_t slow_start_ms;       /* 0 = off: a server back in service ramps its weight up */
    bool panic;                   /* false: with every server down, send to all instead of 503 */
    struct conf_upstream_tls tls;
    enum upstream_protocol protocol; /* `protocol: h1|h2`, default h1 (h2 = prior knowledge, or
                                        ALPN h2 over tls) */
};

struct conf_header_kv {
    char *name;
    char *value;
};

struct conf_header_ops {
    struct conf_header_kv *set;   /* replace every instance */
    size_t n_set;
    struct conf_header_kv *add;   /* append one more */
    size_t n_add;
    char **remove;                /* drop every instance (case-insensitive) */
    size_t n_remove;
};

/* Top-level `cache_zones:` entry: one shared store (memory tier, optional disk tier). */
struct conf_cache_zone {
    char *name;
    size_t index;                 /* position in config->cache_zones */
    uint64_t memory;              /* byte budget of the memory tier (required) */
    uint64_t max_object_size;     /* 8MiB: bigger responses pass through uncached */
    char *path;                   /* disk tier directory, NULL = memory only */
    uint64_t max_size;            /* disk tier budget (required with path) */
};

/* One part of a cache key. */
enum cache_key_kind { CACHE_KEY_SCHEME, CACHE_KEY_HOST, CACHE_KEY_PATH, CACHE_KEY_QUERY, CACHE_KEY_METHOD,
                      CACHE_KEY_HEADER, CACHE_KEY_COOKIE };
struct conf_cache_key {
    enum cache_key_kind kind;
    char *name;                   /* HEADER / COOKIE: its name */
};

/* Route `cache:`. */
struct conf_route_cache {
    bool enabled;                 /* the key is present */
    struct conf_cache_zone *zone; /* borrowed from config->cache_zones */
    struct conf_cache_key *key;   /* default scheme, host, path, query */
    size_t n_key;
    char **methods;               /* default GET, HEAD */
    size_t n_methods;
    uint64_t default_ttl_ms;      /* 0: no freshness given -> not stored (unless heuristic) */
    uint64_t heuristic_max_ms;    /* 1d: cap of 10% of (Date - Last-Modified); 0 = no heuristic */
    uint64_t stale_while_revalidate_ms; /* default when the response says nothing; 0 */
    uint64_t stale_if_error_ms;   /* default when the response says nothing; 0 */
    bool allow_set_cookie;        /* false */
    char *tag_header;             /* "Surrogate-Key" */
    uint64_t lock_timeout_ms;     /* 5s: collapsed requests wait this long for the first head */
};

enum compress_algo { COMPRESS_BR, COMPRESS_ZSTD, COMPRESS_GZIP, COMPRESS_N };

/* Route `compress:`. */
struct conf_route_compress {
    bool enabled;                 /* the key is present */
    enum compress_algo algorithms[COMPRESS_N]; /* server preference; default br, zstd, gzip */
    size_t n_algorithms;
    char **types;                 /* media types (no parameters), lower-cased */
    size_t n_types;
    uint64_t min_size;            /* 1KiB */
    int level[COMPRESS_N];        /* br 4, zstd 3, gzip 6 */
};

/* Route `buffering:`. 0 = off for each. */
struct conf_route_buffering {
    uint64_t response;            /* memory part of a buffered response */
    uint64_t response_file;       /* then an unlinked temp file up to this (0 = memory only) */
    uint64_t request;             /* whole request body read before connecting upstream */
};

enum route_action { ROUTE_UPSTREAM, ROUTE_RESPOND, ROUTE_REDIRECT };

/* One part of a rate-limit key. */
enum rate_key_kind { RATE_KEY_CLIENT_IP, RATE_KEY_ROUTE, RATE_KEY_HEADER };
struct conf_rate_key {
    enum rate_key_kind kind;
    char *header;                 /* RATE_KEY_HEADER: the header name ("header:NAME") */
};

/* A named token bucket (`rate_limits: { NAME: { rate: 10/s, burst: 20, key: [client_ip] } }`):
 * RATE tokens per PER_MS refill, BURST at most; one request takes one token. */
struct conf_rate_limit {
    char *name;
    size_t index;                 /* position in config->rate_limits */
    uint32_t rate;                /* tokens per period (`rate: 10/s` -> 10 per 1000 ms) */
    uint64_t per_ms;
    uint32_t burst;               /* bucket size; default = rate */
    struct conf_rate_key *key;    /* parts, joined; default [client_ip] */
    size_t n_key;
    bool cluster;                 /* false: per process; true: shared by every instance via Redis */
};

/* `redis:` — the engine behind cluster-wide rate limits. */
struct conf_redis {
    char *address;                /* "127.0.0.1:6379"; NULL = no Redis */
    struct sockaddr_storage addr;
    socklen_t addr_len;
    uint64_t timeout_ms;          /* 50ms: a reply later than this counts as a failure */
    bool fail_open;               /* `on_error: open` (default) lets requests through when Redis
                                     fails; `closed` answers 503 */
    char *prefix;                 /* key prefix, default "portero:" */
};

enum auth_kind { AUTH_NONE, AUTH_BASIC, AUTH_JWT, AUTH_FORWARD };

/* `auth:` — exactly one of basic, jwt, forward. */
struct conf_auth {
    enum auth_kind kind;
    /* basic */
    char *realm;                  /* default "portero" */
    char *users_file;             /* htpasswd lines "user:HASH" (bcrypt $2y$/$2b$, SHA-crypt $5$/$6$) */
    /* jwt: keys from key_file (PEM public key, or the HS256 secret's bytes) or jwks_file */
    char *key_file;
    char *jwks_file;
    char **algorithms;            /* allowed: HS256, RS256, ES256; default all three */
    size_t n_algorithms;
    char *issuer;                 /* required `iss` when set */
    char *audience;               /* required in `aud` when set */
    uint64_t leeway_ms;           /* clock skew allowed on exp/nbf: 30s */
    struct conf_header_kv *claims; /* claim name -> request header set upstream (stripped from
                                      the client's request in any case) */
    size_t n_claims;
    /* forward: a GET to address+path with the client's headers decides; 2xx lets through */
    char *forward_address;
    struct sockaddr_storage forward_addr;
    socklen_t forward_addr_len;
    char *forward_path;           /* default "/" */
    uint64_t forward_timeout_ms;  /* 2s; a timeout or error -> 503 */
    char **forward_request_headers;  /* sent to the auth service; default all but framing */
    size_t n_forward_request_headers;
    char **forward_response_headers; /* copied from its 2xx answer into the upstream request */
    size_t n_forward_response_headers;
};

enum waf_mode { WAF_OFF, WAF_DETECT, WAF_BLOCK };

/* `waf:` — libmodsecurity with the OWASP Core Rule Set. */
struct conf_waf {
    enum waf_mode mode;           /* off unless the key is present: then block */
    uint32_t paranoia;            /* CRS paranoia level 1-4, default 1 */
    uint64_t body_limit;          /* request body inspected up to 128KiB; larger bodies -> 413
                                     in block mode, headers-only inspection in detect mode */
    char *audit_log;              /* NULL = none; a file path (JSON lines of matched rules) */
};
struct conf_route {
    size_t index;
    char *name;                   /* `name:` or "route<N>" (1-based file order) */
    /* match; NULL / 0 = no constraint */
    char *host;                   /* lower-cased; "*.example.com" kept as written */
    char *path;
    char *path_prefix;
    char *path_regex;
    pcre2_code *regex;            /* compiled path_regex, owned */
    char **methods;               /* upper-case tokens */
    size_t n_methods;
    struct conf_header_kv *match_headers; /* name case-insensitive, value exact */
    size_t n_match_headers;
    /* action: exactly one */
    enum route_action action;
    struct conf_upstream *upstream; /* borrowed from config->upstreams */
    char *strip_prefix;
    int respond_status;           /* default 200 */
    char *respond_body;           /* default "" */
    struct conf_header_kv *respond_headers;
    size_t n_respond_headers;
    int redirect_status;          /* default 302; 301, 302, 303, 307, 308 */
    char *redirect_location;      /* may hold $host, $request_uri, $scheme */
    struct conf_header_ops request_headers;
    struct conf_header_ops response_headers;
    /* request steps, in this order (DESIGN: the life of one request, step 3) */
    struct conf_acl acl;
    struct conf_rate_limit **rate_limits; /* borrowed from config->rate_limits */
    size_t n_rate_limits;
    struct conf_auth auth;
    struct conf_waf waf;
    /* `security_headers:` compiled into headers set on every response of the route */
    struct conf_header_kv *security_headers;
    size_t n_security_headers;
    /* content delivery (DESIGN: the life of one request, steps 4 and 6) */
    struct conf_route_cache cache;
    struct conf_route_compress compress;
    struct conf_route_buffering buffering;
};

enum server_header_mode { SERVER_HEADER_NAME, SERVER_HEADER_OFF, SERVER_HEADER_CUSTOM };

struct config {
    atomic_int refs;
    char *path;                   /* file it came from */
    unsigned workers;             /* resolved: `auto` = online CPUs */
    struct conf_log log;
    struct conf_limits limits;
    struct conf_forwarding forwarding;
    char *admin_address;          /* "127.0.0.1:9901" by default; "off" disables the admin API */
    char *admin_token;            /* optional bearer token for the admin API; NULL = none */
    struct conf_listener *listeners;
    size_t n_listeners;
    struct conf_upstream *upstreams;
    size_t n_upstreams;
    struct conf_route *routes;
    size_t n_routes;
    /* protection */
    struct conf_cidr *trusted_proxies; /* whose X-Forwarded-For / PROXY header is believed */
    size_t n_trusted_proxies;
    char *real_ip_header;         /* default "X-Forwarded-For" */
    struct conf_rate_limit *rate_limits;
    size_t n_rate_limits;
    struct conf_cache_zone *cache_zones; /* top-level `cache_zones:`, owned */
    size_t n_cache_zones;
    struct conf_redis redis;
    enum server_header_mode server_header; /* `server_header: off | name | "text"`: default name
                                              ("Server: portero", no version) */
    char *server_header_text;     /* SERVER_HEADER_CUSTOM */
};

/* Error messages, each "FILE:LINE:COL: message" (LINE and COL 1-based). */
struct conf_errors {
    char **msgs;
    size_t n;
};

/* Loads and validates PATH. Returns a snapshot with refs == 1, or NULL with every
 * problem appended to ERRS (the caller frees ERRS with conf_errors_free). */
struct config *config_load_file(const char *path, struct conf_errors *errs);
/* Same, from memory; NAME is used as FILE in messages. */
struct config *config_load_buffer(const char *name, const char *data, size_t len,
                                  struct conf_errors *errs);
void conf_errors_free(struct conf_errors *errs);

/* Parses "500ms", "2s", "5m", "1h", "1d" (a bare number is seconds). 0 on success. */
int config_parse_duration(const char *text, uint64_t *out_ms);
/* Parses "512", "64KiB", "1MiB", "2GiB" (also KB/MB/GB as powers of 1000, k/m/g as 1024). */
int config_parse_size(const char *text, uint64_t *out_bytes);
/* Parses "IP:port", "[v6]:port" or "*:port" (any address) without name lookup. 0 on success. */
int config_parse_address(const char *text, struct sockaddr_storage *out, socklen_t *out_len);

struct config *config_ref(struct config *cfg);
/* Drops one reference; frees the snapshot (regexes included) with the last one. */
void config_unref(struct config *cfg);

/* True when the IPv4 or IPv6 address ADDR (AF_INET: 4 bytes, AF_INET6: 16) lies in C; an
 * IPv4-mapped IPv6 address (::ffff:a.b.c.d) also matches IPv4 ranges. */
bool conf_cidr_contains(const struct conf_cidr *c, int family, const uint8_t *addr);
/* Parses "a.b.c.d[/n]" or "v6[/n]" into OUT. 0 on success. */
int conf_cidr_parse(const char *text, struct conf_cidr *out);

const struct conf_upstream *config_find_upstream(const struct config *cfg, const char *name);
/* The zone of `cache_zones` named NAME, or NULL. */
const struct conf_cache_zone *config_find_cache_zone(const struct config *cfg, const char *name);

/* The snapshot as JSON in the same schema as the file (loading it gives an equal snapshot).
 * Returns a malloc'd NUL-terminated string, or NULL. */
char *config_to_json(const struct config *cfg);

/* Edits of a running configuration, each producing the JSON of a new snapshot from CFG (to be
 * loaded through config_load_buffer like any other). NULL with *ERR set (static text) if the
 * edit is impossible (unknown upstream or server, duplicate address). */
char *config_edit_add_server(const struct config *cfg, const char *upstream, const char *address,
                             uint32_t weight, const char **err);
char *config_edit_remove_server(const struct config *cfg, const char *upstream, const char *address,
                                const char **err);
/* WEIGHT 0 keeps the weight; DRAIN < 0 keeps the drain flag, 0 clears it, 1 sets it. */
char *config_edit_server(const struct config *cfg, const char *upstream, const char *address,
                         uint32_t weight, int drain, const char **err);

#endif
