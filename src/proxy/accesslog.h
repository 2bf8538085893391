/* accesslog: one line per exchange, formatted into a per-worker buffer and written when the
 * buffer fills or the flush timer fires (no write(2) per request). */
#ifndef PORTERO_PROXY_ACCESSLOG_H
#define PORTERO_PROXY_ACCESSLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "conf/config.h"
#include "core/sbuf.h"
#include "core/str.h"

#define ACCESSLOG_BUF_SIZE (64 * 1024)

struct accesslog {
    int fd;                 /* shared by all workers, not owned; -1 = off */
    enum log_format format;
    char *buf;              /* owned */
    size_t len;
    struct sbuf line;       /* scratch for formatting one line, owned */
    time_t cached_sec;      /* the second the cached time strings are for */
    char clf_time[32];      /* "23/Nov/2026:09:00:00 +0000" */
    char iso_time[32];      /* "2026-11-23T09:00:00Z" */
};

struct accesslog_entry {
    struct str client_ip;
    struct str method;
    struct str target;
    uint8_t version_minor;
    bool http2;                /* the request came on an HTTP/2 stream */
    int status;
    uint64_t bytes_in;
    uint64_t bytes_out;
    uint64_t total_ms;
    struct str upstream;    /* server address, empty if none */
    int64_t upstream_ms;    /* -1 if no upstream */
    struct str route;       /* empty if none */
    struct str user_agent;
    struct str referer;
    struct str user;        /* authenticated user (Basic) or subject (JWT), empty if none */
};

int accesslog_init(struct accesslog *log, int fd, enum log_format format);
void accesslog_write(struct accesslog *log, const struct accesslog_entry *e);
void accesslog_flush(struct accesslog *log);
void accesslog_destroy(struct accesslog *log);

#endif
