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
};

/* Forwarding-header policy (top-level `forwarding:`). */
struct conf_forwarding {
    bool x_forwarded; /* true: append X-Forwarded-For, set X-Forwarded-Proto/-Host */
    bool forwarded;   /* false: append RFC 7239 Forwarded */
    bool via;         /* false: append Via: 1.1 portero */
};

struct conf_listener {
    char *name;
    char *address;                /* as written, e.g. "0.0.0.0:8080" or "[::]:8080" */
    struct sockaddr_storage addr; /* resolved at load */
    socklen_t addr_len;
};

struct conf_server {
    char *address;                /* as written: "IP:port" or "host:port" */
    struct sockaddr_storage addr; /* resolved at load (getaddrinfo for hostnames) */
    socklen_t addr_len;
    uint32_t weight;              /* default 1, >= 1 */
    size_t index;                 /* position in its upstream */
};

enum balance_kind { BALANCE_ROUND_ROBIN, BALANCE_LEAST_CONN, BALANCE_RANDOM_TWO, BALANCE_HASH };
enum hash_key_kind { HASH_KEY_CLIENT_IP, HASH_KEY_URI, HASH_KEY_HEADER, HASH_KEY_COOKIE };

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

enum route_action { ROUTE_UPSTREAM, ROUTE_RESPOND, ROUTE_REDIRECT };

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
};

struct config {
    atomic_int refs;
    char *path;                   /* file it came from */
    unsigned workers;             /* resolved: `auto` = online CPUs */
    struct conf_log log;
    struct conf_limits limits;
    struct conf_forwarding forwarding;
    char *admin_address;          /* "127.0.0.1:9901" by default; used by later issues */
    struct conf_listener *listeners;
    size_t n_listeners;
    struct conf_upstream *upstreams;
    size_t n_upstreams;
    struct conf_route *routes;
    size_t n_routes;
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

const struct conf_upstream *config_find_upstream(const struct config *cfg, const char *name);

#endif
