#include "proxy/accesslog.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/sbuf.h"

int accesslog_init(struct accesslog *log, int fd, enum log_format format)
{
    memset(log, 0, sizeof *log);
    log->fd = fd;
    log->format = format;
    if (fd < 0)
        return 0;
    log->buf = malloc(ACCESSLOG_BUF_SIZE);
    return log->buf ? 0 : -1;
}

void accesslog_flush(struct accesslog *log)
{
    size_t off = 0;
    while (off < log->len) {
        ssize_t w = write(log->fd, log->buf + off, log->len - off);
        if (w <= 0)
            break; /* a full disk must not stall the proxy: drop the batch */
        off += (size_t)w;
    }
    log->len = 0;
}

void accesslog_destroy(struct accesslog *log)
{
    if (log->buf)
        accesslog_flush(log);
    free(log->buf);
    log->buf = NULL;
    sbuf_free(&log->line);
}

static void accesslog_refresh_time(struct accesslog *log)
{
    time_t now = time(NULL);
    if (now == log->cached_sec)
        return;
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(log->clf_time, sizeof log->clf_time, "%d/%b/%Y:%H:%M:%S +0000", &tm);
    strftime(log->iso_time, sizeof log->iso_time, "%Y-%m-%dT%H:%M:%SZ", &tm);
    log->cached_sec = now;
}

/* Length of the valid UTF-8 sequence at S (1-4), or 0 if S does not start one. */
static size_t accesslog_utf8_len(const unsigned char *s, size_t n)
{
    size_t len = s[0] >= 0xf0 && s[0] <= 0xf4 ? 4 : s[0] >= 0xe0 ? 3 : s[0] >= 0xc2 && s[0] < 0xe0 ? 2 : 0;
    if (!len || len > n)
        return 0;
    for (size_t i = 1; i < len; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    return len;
}

/* Escapes quotes, backslashes and control bytes so a line stays one parseable line; JSON keeps
 * valid UTF-8 as it is and escapes stray bytes so the line stays valid JSON. */
static void accesslog_escaped(struct sbuf *out, struct str s, bool json)
{
    for (size_t i = 0; i < s.n; i++) {
        unsigned char c = (unsigned char)s.p[i];
        size_t u = json && c >= 0x80 ? accesslog_utf8_len((const unsigned char *)s.p + i, s.n - i) : 0;
        if (u) {
            sbuf_append(out, s.p + i, u);
            i += u - 1;
        } else if (c == '"' || c == '\\') {
            char esc[2] = { '\\', (char)c };
            sbuf_append(out, esc, 2);
        } else if (c < 0x20 || c == 0x7f || (json && c >= 0x80)) {
            char hex[8];
            int n = snprintf(hex, sizeof hex, json ? "\\u%04x" : "\\x%02x", c);
            sbuf_append(out, hex, (size_t)n);
        } else {
            sbuf_append(out, &s.p[i], 1);
        }
    }
}

/* The CLF user field is space-delimited: a space in a user name is written \x20. */
static void accesslog_clf_user(struct sbuf *out, struct str user)
{
    size_t start = 0;
    for (size_t i = 0; i <= user.n; i++) {
        if (i < user.n && user.p[i] != ' ')
            continue;
        accesslog_escaped(out, str_make(user.p + start, i - start), false);
        if (i < user.n)
            sbuf_append_cstr(out, "\\x20");
        start = i + 1;
    }
}

static void accesslog_ms(struct sbuf *out, uint64_t ms)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%llu.%03llu", (unsigned long long)(ms / 1000),
                     (unsigned long long)(ms % 1000));
    sbuf_append(out, tmp, (size_t)n);
}

static void accesslog_text(struct accesslog *log, struct sbuf *o, const struct accesslog_entry *e)
{
    sbuf_append_str(o, e->client_ip);
    sbuf_append_cstr(o, " - ");
    accesslog_clf_user(o, e->user.n ? e->user : STR_LIT("-"));
    sbuf_append_cstr(o, " [");
    sbuf_append_cstr(o, log->clf_time);
    sbuf_append_cstr(o, "] \"");
    accesslog_escaped(o, e->method, false);
    sbuf_append(o, " ", 1);
    accesslog_escaped(o, e->target, false);
    sbuf_append_cstr(o, e->http2 ? " HTTP/2.0\" " : e->version_minor ? " HTTP/1.1\" " : " HTTP/1.0\" ");
    sbuf_append_u64(o, (uint64_t)e->status);
    sbuf_append(o, " ", 1);
    sbuf_append_u64(o, e->bytes_out);
    sbuf_append_cstr(o, " \"");
    accesslog_escaped(o, e->referer.n ? e->referer : STR_LIT("-"), false);
    sbuf_append_cstr(o, "\" \"");
    accesslog_escaped(o, e->user_agent.n ? e->user_agent : STR_LIT("-"), false);
    sbuf_append_cstr(o, "\" in=");
    sbuf_append_u64(o, e->bytes_in);
    sbuf_append_cstr(o, " rt=");
    accesslog_ms(o, e->total_ms);
    sbuf_append_cstr(o, " ua=");
    sbuf_append_str(o, e->upstream.n ? e->upstream : STR_LIT("-"));
    sbuf_append_cstr(o, " ut=");
    if (e->upstream_ms >= 0)
        accesslog_ms(o, (uint64_t)e->upstream_ms);
    else
        sbuf_append(o, "-", 1);
    sbuf_append_cstr(o, " route=");
    sbuf_append_str(o, e->route.n ? e->route : STR_LIT("-"));
    sbuf_append(o, "\n", 1);
}

static void accesslog_json_str(struct sbuf *o, const char *key, struct str v, bool null_if_empty)
{
    sbuf_append_cstr(o, key);
    if (null_if_empty && !v.n) {
        sbuf_append_cstr(o, "null");
        return;
    }
    sbuf_append(o, "\"", 1);
    accesslog_escaped(o, v, true);
    sbuf_append(o, "\"", 1);
}

static void accesslog_json(struct accesslog *log, struct sbuf *o, const struct accesslog_entry *e)
{
    sbuf_append_cstr(o, "{\"time\":\"");
    sbuf_append_cstr(o, log->iso_time);
    sbuf_append(o, "\"", 1);
    accesslog_json_str(o, ",\"client\":", e->client_ip, false);
    accesslog_json_str(o, ",\"method\":", e->method, false);
    accesslog_json_str(o, ",\"target\":", e->target, false);
    sbuf_append_cstr(o, e->http2 ? ",\"protocol\":\"HTTP/2.0\""
                        : e->version_minor ? ",\"protocol\":\"HTTP/1.1\"" : ",\"protocol\":\"HTTP/1.0\"");
    sbuf_append_cstr(o, ",\"status\":");
    sbuf_append_u64(o, (uint64_t)e->status);
    sbuf_append_cstr(o, ",\"bytes_in\":");
    sbuf_append_u64(o, e->bytes_in);
    sbuf_append_cstr(o, ",\"bytes_out\":");
    sbuf_append_u64(o, e->bytes_out);
    sbuf_append_cstr(o, ",\"duration_ms\":");
    sbuf_append_u64(o, e->total_ms);
    accesslog_json_str(o, ",\"upstream\":", e->upstream.n ? e->upstream : STR_LIT("-"), false);
    sbuf_append_cstr(o, ",\"upstream_ms\":");
    if (e->upstream_ms >= 0)
        sbuf_append_u64(o, (uint64_t)e->upstream_ms);
    else
        sbuf_append_cstr(o, "null");
    accesslog_json_str(o, ",\"route\":", e->route, true);
    accesslog_json_str(o, ",\"user_agent\":", e->user_agent, false);
    accesslog_json_str(o, ",\"referer\":", e->referer, false);
    accesslog_json_str(o, ",\"user\":", e->user, true);
    sbuf_append_cstr(o, "}\n");
}

void accesslog_write(struct accesslog *log, const struct accesslog_entry *e)
{
    if (log->fd < 0)
        return;
    accesslog_refresh_time(log);
    struct sbuf *o = &log->line; /* reused for every line: no allocation once warm */
    sbuf_reset(o);
    if (log->format == LOG_FORMAT_JSON)
        accesslog_json(log, o, e);
    else
        accesslog_text(log, o, e);
    if (log->len + o->len > ACCESSLOG_BUF_SIZE)
        accesslog_flush(log);
    if (o->len > ACCESSLOG_BUF_SIZE) { /* a line larger than the batch goes out alone */
        ssize_t w = write(log->fd, o->p, o->len);
        (void)w;
        return;
    }
    memcpy(log->buf + log->len, o->p, o->len);
    log->len += o->len;
}
