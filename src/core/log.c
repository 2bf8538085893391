#include "core/log.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static int log_fd = 2;
static int log_owned;
static enum log_sev log_level = LOG_SEV_INFO;
static const char *const log_names[] = { "error", "warn", "info", "debug" };

int log_open(const char *dest)
{
    int fd;
    if (!dest || strcmp(dest, "stderr") == 0)
        fd = 2;
    else if (strcmp(dest, "stdout") == 0)
        fd = 1;
    else if ((fd = open(dest, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644)) < 0)
        return -1;
    log_close();
    log_fd = fd;
    log_owned = fd > 2;
    return 0;
}

void log_close(void)
{
    if (log_owned)
        close(log_fd);
    log_fd = 2;
    log_owned = 0;
}

void log_set_level(enum log_sev level) { log_level = level; }
int log_enabled(enum log_sev sev) { return sev <= log_level; }

void log_iso_time(char *out, unsigned long cap)
{
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    snprintf(out, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (long)(tv.tv_usec / 1000));
}

void log_msg(enum log_sev sev, const char *fmt, ...)
{
    if (sev > log_level)
        return;
    char line[2048];
    char ts[32];
    log_iso_time(ts, sizeof ts);
    int n = snprintf(line, sizeof line, "%s [%s] ", ts, log_names[sev]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    line[len++] = '\n';
    ssize_t w = write(log_fd, line, len);
    (void)w;
}
