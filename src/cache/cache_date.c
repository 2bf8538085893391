/* cache_date: HTTP-date parsing and formatting (RFC 9110 §5.6.7). */
#include <string.h>

#include "cache/cache_rules_priv.h"

static const char cache_months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                          "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
static const char cache_days[7][4] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
static const char *const cache_days_long[7] = { "Sunday", "Monday", "Tuesday", "Wednesday",
                                                "Thursday", "Friday", "Saturday" };
/* days before each month in a common year */
static const int cache_month_start[12] = { 0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334 };

#define CACHE_DATE_MAX 253402300799LL /* 9999-12-31T23:59:59Z */

static int64_t floor_div(int64_t a, int64_t b) { return a / b - (a % b != 0 && (a < 0) != (b < 0)); }

static bool is_leap(int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

/* Leap years in [1, Y] (proleptic Gregorian; floor division keeps it right for Y <= 0). */
static int64_t leaps_through(int64_t y) { return floor_div(y, 4) - floor_div(y, 100) + floor_div(y, 400); }

/* Days from 1970-01-01 to January 1st of year Y. */
static int64_t days_to_year(int64_t y)
{
    return 365 * (y - 1970) + leaps_through(y - 1) - leaps_through(1969);
}

static int month_days(int64_t y, int m)
{
    static const int len[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    return len[m] + (m == 1 && is_leap(y));
}

/* A cursor over the date text; every take_* fails once the text does not match. */
struct date_cur {
    const char *p;
    size_t n;
    bool ok;
};

static bool take_lit(struct date_cur *c, const char *lit)
{
    size_t k = strlen(lit);
    if (!c->ok || c->n < k || strncmp(c->p, lit, k) != 0)
        return c->ok = false;
    c->p += k;
    c->n -= k;
    return true;
}

static int take_digits(struct date_cur *c, size_t k)
{
    int v = 0;
    if (!c->ok || c->n < k)
        return c->ok = false;
    for (size_t i = 0; i < k; i++) {
        if (c->p[i] < '0' || c->p[i] > '9')
            return c->ok = false;
        v = v * 10 + (c->p[i] - '0');
    }
    c->p += k;
    c->n -= k;
    return v;
}

/* One of NAMES (case-insensitive, since senders vary in case): its index, -1 when none. */
static int take_name(struct date_cur *c, const char *const *names, size_t count)
{
    for (size_t i = 0; c->ok && i < count; i++) {
        size_t k = strlen(names[i]);
        if (c->n >= k && str_ieq_cstr(str_make(c->p, k), names[i])) {
            c->p += k;
            c->n -= k;
            return (int)i;
        }
    }
    c->ok = false;
    return -1;
}

static int take_month(struct date_cur *c)
{
    const char *names[12];
    for (int i = 0; i < 12; i++)
        names[i] = cache_months[i];
    return take_name(c, names, 12);
}

static int take_day(struct date_cur *c, bool long_form)
{
    const char *names[7];
    for (int i = 0; i < 7; i++)
        names[i] = long_form ? cache_days_long[i] : cache_days[i];
    return take_name(c, names, 7);
}

struct date_parts {
    int64_t year;
    int month, day, hour, min, sec;
};

/* time-of-day = hour ":" minute ":" second (second 60: a leap second, §5.6.7) */
static void take_time(struct date_cur *c, struct date_parts *d)
{
    d->hour = take_digits(c, 2);
    take_lit(c, ":");
    d->min = take_digits(c, 2);
    take_lit(c, ":");
    d->sec = take_digits(c, 2);
}

/* IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT" */
static bool parse_imf(struct date_cur c, struct date_parts *d)
{
    take_day(&c, false);
    take_lit(&c, ", ");
    d->day = take_digits(&c, 2);
    take_lit(&c, " ");
    d->month = take_month(&c);
    take_lit(&c, " ");
    d->year = take_digits(&c, 4);
    take_lit(&c, " ");
    take_time(&c, d);
    take_lit(&c, " GMT");
    return c.ok && c.n == 0;
}

/* rfc850-date: "Sunday, 06-Nov-94 08:49:37 GMT"; two-digit years pivot at 70 (no clock here
 * for §5.6.7's "50 years in the future" rule; the obsolete form is a 20th-century relic). */
static bool parse_rfc850(struct date_cur c, struct date_parts *d)
{
    take_day(&c, true);
    take_lit(&c, ", ");
    d->day = take_digits(&c, 2);
    take_lit(&c, "-");
    d->month = take_month(&c);
    take_lit(&c, "-");
    int yy = take_digits(&c, 2);
    d->year = yy >= 70 ? 1900 + yy : 2000 + yy;
    take_lit(&c, " ");
    take_time(&c, d);
    take_lit(&c, " GMT");
    return c.ok && c.n == 0;
}

/* asctime-date: "Sun Nov  6 08:49:37 1994" */
static bool parse_asctime(struct date_cur c, struct date_parts *d)
{
    take_day(&c, false);
    take_lit(&c, " ");
    d->month = take_month(&c);
    take_lit(&c, " ");
    if (c.ok && c.n && c.p[0] == ' ') {
        take_lit(&c, " ");
        d->day = take_digits(&c, 1);
    } else {
        d->day = take_digits(&c, 2);
    }
    take_lit(&c, " ");
    take_time(&c, d);
    take_lit(&c, " ");
    d->year = take_digits(&c, 4);
    return c.ok && c.n == 0;
}

int cache_rules_http_date(struct str s, int64_t *out)
{
    struct date_cur c = { s.p, s.n, true };
    struct date_parts d = { 0 };
    if (!parse_imf(c, &d) && !parse_rfc850(c, &d) && !parse_asctime(c, &d))
        return -1;
    if (d.day < 1 || d.day > month_days(d.year, d.month) || d.hour > 23 || d.min > 59 || d.sec > 60)
        return -1;
    int64_t days = days_to_year(d.year) + cache_month_start[d.month] + (d.month > 1 && is_leap(d.year)) +
                   d.day - 1;
    *out = days * 86400 + d.hour * 3600 + d.min * 60 + d.sec;
    return 0;
}

static void put2(char *p, int v)
{
    p[0] = (char)('0' + v / 10);
    p[1] = (char)('0' + v % 10);
}

size_t cache_rules_format_date(int64_t t, char out[30])
{
    t = t < 0 ? 0 : t > CACHE_DATE_MAX ? CACHE_DATE_MAX : t;
    int64_t days = t / 86400, secs = t % 86400;
    int64_t y = 1970 + days * 400 / 146097; /* 146097 days per 400 years: at most one off */
    while (days_to_year(y) > days)
        y--;
    while (days_to_year(y + 1) <= days)
        y++;
    int yday = (int)(days - days_to_year(y)), m = 0;
    while (m < 11 && yday >= cache_month_start[m + 1] + (is_leap(y) && m + 1 > 1))
        m++;
    int mday = yday - cache_month_start[m] - (is_leap(y) && m > 1) + 1;
    memcpy(out, cache_days[(days + 4) % 7], 3); /* 1970-01-01 was a Thursday */
    memcpy(out + 3, ", ", 2);
    put2(out + 5, mday);
    out[7] = ' ';
    memcpy(out + 8, cache_months[m], 3);
    out[11] = ' ';
    put2(out + 12, (int)(y / 100));
    put2(out + 14, (int)(y % 100));
    out[16] = ' ';
    put2(out + 17, (int)(secs / 3600));
    out[19] = ':';
    put2(out + 20, (int)(secs / 60 % 60));
    out[22] = ':';
    put2(out + 23, (int)(secs % 60));
    memcpy(out + 25, " GMT", 5); /* with the NUL */
    return 29;
}
