/* Unit tests of the access log: text and JSON line formats, escaping, and batching (nothing is
 * written until the batch fills or is flushed). */
#include "unit.h"

#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include "proxy/accesslog.h"

/* An unlinked temporary file; its contents are read back with pread. */
static int temp_fd(void)
{
    char path[] = "/tmp/portero-accesslog-XXXXXX";
    int fd = mkstemp(path);
    if (fd >= 0)
        unlink(path);
    return fd;
}

/* Everything written to FD so far (NUL-terminated, caller frees); *LEN gets the size. */
static char *file_contents(int fd, size_t *len)
{
    off_t size = lseek(fd, 0, SEEK_END);
    char *p = malloc((size_t)size + 1);
    ssize_t r = pread(fd, p, (size_t)size, 0);
    *len = r > 0 ? (size_t)r : 0;
    p[*len] = '\0';
    return p;
}

static struct accesslog_entry full_entry(void)
{
    return (struct accesslog_entry){
        .client_ip = STR_LIT("127.0.0.1"),
        .method = STR_LIT("GET"),
        .target = STR_LIT("/a?b=1"),
        .version_minor = 1,
        .status = 200,
        .bytes_in = 56,
        .bytes_out = 1234,
        .total_ms = 12,
        .upstream = STR_LIT("10.0.0.1:9001"),
        .upstream_ms = 5,
        .route = STR_LIT("api"),
        .user_agent = STR_LIT("curl/8.0"),
        .referer = STR_LIT("https://ref.example/"),
    };
}

/* Builds the text line expected for a time string T (CLF form). */
static void clf_now(char *out, size_t n, time_t t)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, n, "%d/%b/%Y:%H:%M:%S +0000", &tm);
}

static void iso_now(char *out, size_t n, time_t t)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Writes E as one line with a fresh log in FORMAT; returns the line (caller frees) and the
 * wall-clock second the write happened in (through *T0 / *T1, before and after). */
static char *one_line(enum log_format format, const struct accesslog_entry *e, time_t *t0, time_t *t1)
{
    int fd = temp_fd();
    struct accesslog log;
    if (fd < 0 || accesslog_init(&log, fd, format) != 0)
        return NULL;
    *t0 = time(NULL);
    accesslog_write(&log, e);
    *t1 = time(NULL);
    accesslog_flush(&log);
    size_t len;
    char *s = file_contents(fd, &len);
    accesslog_destroy(&log);
    close(fd);
    return s;
}

/* True when LINE equals PREFIX + time(T) + SUFFIX for T in [T0, T1]. */
static bool line_matches(const char *line, const char *prefix, const char *suffix, bool iso,
                         time_t t0, time_t t1)
{
    for (time_t t = t0; t <= t1; t++) {
        char ts[64], want[4096];
        if (iso)
            iso_now(ts, sizeof ts, t);
        else
            clf_now(ts, sizeof ts, t);
        snprintf(want, sizeof want, "%s%s%s", prefix, ts, suffix);
        if (strcmp(line, want) == 0)
            return true;
    }
    fprintf(stderr, "  got line: %s", line ? line : "(null)\n");
    return false;
}

/* A JSON-ish check: one object on one line, strings closed, escapes well-formed, no raw
 * control bytes inside strings. */
static bool json_line_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 3 || s[0] != '{' || s[n - 1] != '\n' || s[n - 2] != '}')
        return false;
    bool in_str = false;
    for (size_t i = 0; i < n - 1; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!in_str) {
            if (c == '"')
                in_str = true;
            else if (c == '\n' || c < 0x20)
                return false;
            continue;
        }
        if (c < 0x20)
            return false;
        if (c == '"') {
            in_str = false;
        } else if (c == '\\') {
            char e = s[++i];
            if (e == 'u') {
                for (int k = 1; k <= 4; k++)
                    if (!strchr("0123456789abcdefABCDEF", s[i + k]) || s[i + k] == '\0')
                        return false;
                i += 4;
            } else if (!strchr("\"\\/bfnrt", e) || e == '\0') {
                return false;
            }
        }
    }
    return !in_str;
}

/* ---------------------------------------------------------------------------------------- */

UNIT_TEST(test_user_in_both_formats)
{
    struct accesslog_entry e = full_entry();
    e.user = STR_LIT("ann smith");
    time_t t0, t1;
    char *line = one_line(LOG_FORMAT_TEXT, &e, &t0, &t1);
    CHECK(line != NULL && strncmp(line, "127.0.0.1 - ann\\x20smith [", strlen("127.0.0.1 - ann\\x20smith [")) == 0);
    free(line);
    line = one_line(LOG_FORMAT_JSON, &e, &t0, &t1);
    CHECK(line != NULL && strstr(line, ",\"user\":\"ann smith\"}") != NULL);
    free(line);
}

UNIT_TEST(test_text_line_full)
{
    struct accesslog_entry e = full_entry();
    time_t t0, t1;
    char *line = one_line(LOG_FORMAT_TEXT, &e, &t0, &t1);
    CHECK(line != NULL);
    CHECK(line_matches(line, "127.0.0.1 - - [",
                       "] \"GET /a?b=1 HTTP/1.1\" 200 1234 \"https://ref.example/\" \"curl/8.0\" "
                       "in=56 rt=0.012 ua=10.0.0.1:9001 ut=0.005 route=api\n",
                       false, t0, t1));
    free(line);
}

UNIT_TEST(test_text_line_missing_values)
{
    struct accesslog_entry e = {
        .client_ip = STR_LIT("::1"), .method = STR_LIT("POST"), .target = STR_LIT("/x"),
        .version_minor = 0, .status = 404, .upstream_ms = -1,
    };
    time_t t0, t1;
    char *line = one_line(LOG_FORMAT_TEXT, &e, &t0, &t1);
    CHECK(line_matches(line, "::1 - - [",
                       "] \"POST /x HTTP/1.0\" 404 0 \"-\" \"-\" in=0 rt=0.000 ua=- ut=- route=-\n",
                       false, t0, t1));
    free(line);
}

UNIT_TEST(test_text_durations)
{
    struct accesslog_entry e = full_entry();
    e.total_ms = 61234;
    e.upstream_ms = 1500;
    time_t t0, t1;
    char *line = one_line(LOG_FORMAT_TEXT, &e, &t0, &t1);
    CHECK(line && strstr(line, " rt=61.234 ") != NULL);
    CHECK(line && strstr(line, " ut=1.500 ") != NULL);
    free(line);

    e.total_ms = 7;
    e.upstream_ms = 0; /* an upstream answering within the millisecond is not "missing" */
    line = one_line(LOG_FORMAT_TEXT, &e, &t0, &t1);
    CHECK(line && strstr(line, " rt=0.007 ") != NULL);
    CHECK(line && strstr(line, " ut=0.000 ") != NULL);
    free(line);
}

UNIT_TEST(test_text_escaping)
{
    struct accesslog_entry e = full_entry();
    e.user_agent = STR_LIT("a\"b\x01" "c\\d\x7f");
    e.target = STR_LIT("/q?\"x\"");
    e.referer = STR_LIT("r\nx");
    time_t t0, t1;
    char *line = one_line(LOG_FORMAT_TEXT, &e, &t0, &t1);
    CHECK(line && strstr(line, "\"GET /q?\\\"x\\\" HTTP/1.1\"") != NULL);
    CHECK(line && strstr(line, "\"a\\\"b\\x01c\\\\d\\x7f\"") != NULL);
    CHECK(line && strstr(line, "\"r\\x0ax\"") != NULL);
    /* still exactly one line */
    CHECK(line && strchr(line, '\n') == line + strlen(line) - 1);
    free(line);
}

UNIT_TEST(test_json_line_full)
{
    struct accesslog_entry e = full_entry();
    time_t t0, t1;
    char *line = one_line(LOG_FORMAT_JSON, &e, &t0, &t1);
    CHECK(line != NULL);
    CHECK(json_line_ok(line));
    CHECK(line_matches(line, "{\"time\":\"",
                       "\",\"client\":\"127.0.0.1\",\"method\":\"GET\",\"target\":\"/a?b=1\","
                       "\"protocol\":\"HTTP/1.1\",\"status\":200,\"bytes_in\":56,\"bytes_out\":1234,"
                       "\"duration_ms\":12,\"upstream\":\"10.0.0.1:9001\",\"upstream_ms\":5,"
                       "\"route\":\"api\",\"user_agent\":\"curl/8.0\",\"referer\":\"https://ref.example/\","
                       "\"user\":null}\n",
                       true, t0, t1));
    free(line);
}

UNIT_TEST(test_json_missing_values)
{
    struct accesslog_entry e = {
        .client_ip = STR_LIT("10.1.1.1"), .method = STR_LIT("GET"), .target = STR_LIT("/"),
        .version_minor = 0, .status = 502, .upstream_ms = -1,
    };
    time_t t0, t1;
    char *line = one_line(LOG_FORMAT_JSON, &e, &t0, &t1);
    CHECK(line && json_line_ok(line));
    CHECK(line && strstr(line, "\"protocol\":\"HTTP/1.0\"") != NULL);
    CHECK(line && strstr(line, "\"status\":502") != NULL);
    CHECK(line && strstr(line, "\"upstream_ms\":null") != NULL);
    CHECK(line && strstr(line, "\"route\":null") != NULL);
    CHECK(line && strstr(line, "\"user_agent\":\"\"") != NULL);
    free(line);
}

UNIT_TEST(test_json_escaping)
{
    struct accesslog_entry e = full_entry();
    e.user_agent = STR_LIT("a\"b\x01" "c\\d\te");
    e.target = STR_LIT("/p?q=\"1\"");
    e.referer = STR_LIT("x\ny\x1f");
    time_t t0, t1;
    char *line = one_line(LOG_FORMAT_JSON, &e, &t0, &t1);
    CHECK(line && json_line_ok(line));
    CHECK(line && strstr(line, "\"user_agent\":\"a\\\"b\\u0001c\\\\d\\u0009e\"") != NULL);
    CHECK(line && strstr(line, "\"target\":\"/p?q=\\\"1\\\"\"") != NULL);
    CHECK(line && strstr(line, "\"referer\":\"x\\u000ay\\u001f\"") != NULL);
    free(line);
}

/* A UTF-8 User-Agent must not be turned into Latin-1 code points: "\u00c3\u00a9" decodes to
 * "Ã©", not "é". Raw UTF-8 or "\u00e9" would both be right. */
UNIT_TEST(test_json_utf8_not_mojibake)
{
    struct accesslog_entry e = full_entry();
    e.user_agent = STR_LIT("caf\xc3\xa9");
    time_t t0, t1;
    char *line = one_line(LOG_FORMAT_JSON, &e, &t0, &t1);
    CHECK(line && json_line_ok(line));
    CHECK(line && strstr(line, "\\u00c3") == NULL);
    if (line && strstr(line, "\\u00c3"))
        fprintf(stderr, "  got: %s", line);
    free(line);
}

UNIT_TEST(test_small_lines_buffered_until_flush)
{
    int p[2];
    CHECK_EQ_INT(pipe2(p, O_NONBLOCK), 0);
    struct accesslog log;
    CHECK_EQ_INT(accesslog_init(&log, p[1], LOG_FORMAT_TEXT), 0);
    struct accesslog_entry e = full_entry();
    accesslog_write(&log, &e);
    e.status = 201;
    accesslog_write(&log, &e);
    char tmp[4096];
    CHECK_EQ_INT(read(p[0], tmp, sizeof tmp), -1); /* nothing written yet */
    CHECK(log.len > 0);
    accesslog_flush(&log);
    CHECK_EQ_INT(log.len, 0);
    ssize_t n = read(p[0], tmp, sizeof tmp - 1);
    CHECK(n > 0);
    tmp[n > 0 ? n : 0] = '\0';
    char *nl = strchr(tmp, '\n');
    CHECK(nl != NULL && strstr(tmp, "\" 200 1234 ") != NULL && strstr(nl, "\" 201 1234 ") != NULL);
    CHECK(nl != NULL && strchr(nl + 1, '\n') == tmp + n - 1); /* exactly two lines */
    accesslog_flush(&log); /* an empty flush writes nothing */
    CHECK_EQ_INT(read(p[0], tmp, sizeof tmp), -1);
    accesslog_destroy(&log);
    close(p[0]);
    close(p[1]);
}

UNIT_TEST(test_full_batch_written_without_flush)
{
    int fd = temp_fd();
    struct accesslog log;
    CHECK_EQ_INT(accesslog_init(&log, fd, LOG_FORMAT_TEXT), 0);
    struct accesslog_entry e = full_entry();
    char ua[300];
    memset(ua, 'u', sizeof ua);
    e.user_agent = str_make(ua, sizeof ua);
    int lines = 0;
    size_t len = 0;
    char *s = NULL;
    while (lines < 2000) {
        e.bytes_in = (uint64_t)lines;
        accesslog_write(&log, &e);
        lines++;
        free(s);
        s = file_contents(fd, &len);
        if (len)
            break;
    }
    CHECK(len > 0); /* the batch filled and went out by itself */
    CHECK(len <= ACCESSLOG_BUF_SIZE);
    CHECK(len > ACCESSLOG_BUF_SIZE - 1000);
    CHECK(s && s[len - 1] == '\n'); /* whole lines only */
    /* keep going, then flush: every line is there, once, in order */
    for (int i = 0; i < 500; i++) {
        e.bytes_in = (uint64_t)lines++;
        accesslog_write(&log, &e);
    }
    accesslog_flush(&log);
    free(s);
    s = file_contents(fd, &len);
    int count = 0, bad_order = 0;
    for (char *q = s; q && *q;) {
        char *nl = strchr(q, '\n');
        if (!nl)
            break;
        char want[32];
        snprintf(want, sizeof want, " in=%d ", count);
        if (!memmem(q, (size_t)(nl - q), want, strlen(want)))
            bad_order++;
        count++;
        q = nl + 1;
    }
    CHECK_EQ_INT(count, lines);
    CHECK_EQ_INT(bad_order, 0);
    free(s);
    accesslog_destroy(&log);
    close(fd);
}

UNIT_TEST(test_line_larger_than_batch)
{
    int fd = temp_fd();
    struct accesslog log;
    CHECK_EQ_INT(accesslog_init(&log, fd, LOG_FORMAT_TEXT), 0);
    struct accesslog_entry e = full_entry();
    accesslog_write(&log, &e); /* small, buffered */
    size_t big_n = ACCESSLOG_BUF_SIZE + 5000;
    char *big = malloc(big_n);
    memset(big, 'B', big_n);
    struct accesslog_entry b = full_entry();
    b.user_agent = str_make(big, big_n);
    accesslog_write(&log, &b); /* goes out at once, after the buffered line */
    size_t len;
    char *s = file_contents(fd, &len);
    CHECK(len > big_n);
    char *nl = strchr(s, '\n');
    CHECK(nl != NULL && strstr(s, "\"curl/8.0\"") != NULL && strstr(s, "\"curl/8.0\"") < nl);
    CHECK(nl != NULL && nl[1] != '\0' && strchr(nl + 1, '\n') == s + len - 1);
    free(s);
    accesslog_write(&log, &e);
    accesslog_destroy(&log); /* destroy flushes what is pending */
    s = file_contents(fd, &len);
    CHECK(len > 0 && strcmp(s + len - 6, "e=api\n") == 0);
    int lines = 0;
    for (size_t i = 0; i < len; i++)
        lines += s[i] == '\n';
    CHECK_EQ_INT(lines, 3);
    free(s);
    free(big);
    close(fd);
}

UNIT_TEST(test_off_log)
{
    struct accesslog log;
    CHECK_EQ_INT(accesslog_init(&log, -1, LOG_FORMAT_TEXT), 0);
    struct accesslog_entry e = full_entry();
    accesslog_write(&log, &e);
    CHECK_EQ_INT(log.len, 0);
    accesslog_flush(&log);
    accesslog_destroy(&log);
}

UNIT_TEST(test_flush_to_closed_pipe_drops_batch)
{
    int p[2];
    CHECK_EQ_INT(pipe2(p, O_NONBLOCK), 0);
    close(p[0]);
    signal(SIGPIPE, SIG_IGN);
    struct accesslog log;
    CHECK_EQ_INT(accesslog_init(&log, p[1], LOG_FORMAT_JSON), 0);
    struct accesslog_entry e = full_entry();
    accesslog_write(&log, &e);
    accesslog_flush(&log); /* must not loop or crash */
    CHECK_EQ_INT(log.len, 0);
    accesslog_destroy(&log);
    close(p[1]);
}

UNIT_MAIN()
