/* log: the error log, with levels. Thread-safe: one write(2) per line (O_APPEND keeps lines whole). */
#ifndef PORTERO_CORE_LOG_H
#define PORTERO_CORE_LOG_H

enum log_sev { LOG_SEV_ERROR, LOG_SEV_WARN, LOG_SEV_INFO, LOG_SEV_DEBUG };

/* Opens the destination: "stderr", "stdout" or a path (append). Returns 0, or -1 with errno. */
int log_open(const char *dest);
void log_set_level(enum log_sev level);
void log_close(void);
__attribute__((format(printf, 2, 3))) void log_msg(enum log_sev sev, const char *fmt, ...);
int log_enabled(enum log_sev sev);

#define log_error(...) log_msg(LOG_SEV_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_SEV_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_SEV_INFO, __VA_ARGS__)
#define log_debug(...) do { if (log_enabled(LOG_SEV_DEBUG)) log_msg(LOG_SEV_DEBUG, __VA_ARGS__); } while (0)

/* Formats wall-clock time as "2026-11-23T09:00:00.123Z" into OUT (>= 25 bytes). */
void log_iso_time(char *out, unsigned long cap);

#endif
