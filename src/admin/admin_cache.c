/* admin_cache: the cache endpoints of the admin API — the zones with their counters, and purge
 * by exact URL, by URL prefix or by tag. Runs on the control thread like every admin handler;
 * the store does the locking (a purge takes one shard lock at a time). */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "admin/admin_priv.h"
#include "cache/cache_store.h"
#include "http/path.h"

#define ADMIN_CACHE_MAX_URL 8192

/* --- URL to key --------------------------------------------------------------------------------- */

/* Request targets are ASCII without spaces: anything else would have to be percent-encoded. */
static bool admin_cache_visible(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
            return false;
    return true;
}

static void admin_cache_lower(char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] >= 'A' && p[i] <= 'Z')
            p[i] = (char)(p[i] + 32);
}

/* Appends the normalized form of PATH[0..N) ("/" when empty) at OUT; its length, or -1 when the
 * path climbs above the root. OUT holds N + 1 bytes. */
static int admin_cache_path(const char *path, size_t n, char *out)
{
    if (n == 0) {
        out[0] = '/';
        return 1;
    }
    if (!path_needs_normalize(path, n)) {
        memcpy(out, path, n);
        return (int)n;
    }
    return path_normalize(path, n, out);
}

char *admin_cache_url_key(const char *url, bool prefix, size_t *len, const char **err)
{
    const char *sep = strstr(url, "://");
    size_t n = strlen(url);
    *err = NULL;
    if (n > ADMIN_CACHE_MAX_URL || !admin_cache_visible(url))
        *err = "the URL must be visible ASCII without spaces (percent-encode the rest)";
    else if (!sep || !((sep - url == 4 && strncasecmp(url, "http", 4) == 0) ||
                       (sep - url == 5 && strncasecmp(url, "https", 5) == 0)))
        *err = "the URL must start with http:// or https://";
    if (*err)
        return NULL;
    const char *host = sep + 3, *end = url + n;
    const char *host_end = host + strcspn(host, "/?#");
    if (memchr(host, '@', (size_t)(host_end - host))) {
        *err = "the URL must not hold user information";
        return NULL;
    }
    if (host_end == host && !prefix) {
        *err = "the URL must name a host";
        return NULL;
    }
    char *key = malloc(n + 2);
    if (!key) {
        *err = "out of memory";
        return NULL;
    }
    size_t k = (size_t)(host_end - url);
    memcpy(key, url, k);
    admin_cache_lower(key, k);
    if (prefix) { /* the rest as given: normalising a part of a path could change its meaning */
        memcpy(key + k, host_end, (size_t)(end - host_end));
        k += (size_t)(end - host_end);
    } else {
        const char *q = host_end + strcspn(host_end, "?#");
        int plen = admin_cache_path(host_end, (size_t)(q - host_end), key + k);
        if (plen < 0) {
            free(key);
            *err = "the URL's path climbs above the root";
            return NULL;
        }
        k += (size_t)plen;
        size_t qlen = *q == '?' ? strcspn(q, "#") : 0; /* RFC 3986 section 3.5: no fragment */
        memcpy(key + k, q, qlen);
        k += qlen;
    }
    key[k] = '\0';
    *len = k;
    return key;
}

/* --- zones -------------------------------------------------------------------------------------- */

static void admin_cache_json_stats(struct admin_json *j, const struct cache_zone_stats *s)
{
    admin_json_begin(j, "stats", '{');
    admin_json_u64(j, "hits", s->hits);
    admin_json_u64(j, "misses", s->misses);
    admin_json_u64(j, "stale", s->stale);
    admin_json_u64(j, "collapsed", s->collapsed);
    admin_json_u64(j, "bytes", s->bytes);
    admin_json_u64(j, "objects", s->objects);
    admin_json_u64(j, "evictions", s->evictions);
    admin_json_u64(j, "disk_bytes", s->disk_bytes);
    admin_json_u64(j, "disk_objects", s->disk_objects);
    admin_json_u64(j, "disk_evictions", s->disk_evictions);
    admin_json_u64(j, "disk_reads", s->disk_reads);
    admin_json_u64(j, "disk_writes", s->disk_writes);
    admin_json_u64(j, "purged", s->purged);
    admin_json_end(j, '}');
}

/* One zone of the running config: its settings and, when the store has it open, its counters. */
static void admin_cache_json_zone(struct admin_json *j, const struct conf_cache_zone *conf)
{
    struct cache_zone *z = cache_zone_find(conf->name);
    admin_json_begin(j, NULL, '{');
    admin_json_str(j, "name", conf->name);
    admin_json_u64(j, "memory", conf->memory);
    admin_json_u64(j, "max_object_size", conf->max_object_size);
    admin_json_str(j, "path", conf->path);
    admin_json_u64(j, "max_size", conf->max_size);
    if (z) {
        struct cache_zone_stats s;
        cache_zone_stats(z, &s);
        admin_cache_json_stats(j, &s);
    }
    admin_json_end(j, '}');
    cache_zone_put(z);
}

void admin_cache_list(struct admin_req *r)
{
    const struct config *cfg = control_config(r->ctl);
    struct admin_json j = admin_reply_json(r, 200);
    admin_json_begin(&j, NULL, '{');
    admin_json_begin(&j, "zones", '[');
    for (size_t i = 0; i < cfg->n_cache_zones; i++)
        admin_cache_json_zone(&j, &cfg->cache_zones[i]);
    admin_json_end(&j, ']');
    admin_json_end(&j, '}');
}

void admin_cache_zone(struct admin_req *r, const char *name)
{
    const struct conf_cache_zone *conf = config_find_cache_zone(control_config(r->ctl), name);
    if (!conf) {
        admin_reply_error(r, 404, "unknown cache zone");
        return;
    }
    struct admin_json j = admin_reply_json(r, 200);
    admin_cache_json_zone(&j, conf);
}

/* --- purge -------------------------------------------------------------------------------------- */

/* Runs the purge B asks for in Z; false (answered 400) when B is not exactly one valid ask. */
static bool admin_cache_run_purge(struct admin_req *r, struct cache_zone *z,
                                  const struct admin_body *b, size_t *purged)
{
    const struct admin_field *url = admin_body_get(b, "url"), *prefix = admin_body_get(b, "prefix"),
                             *tag = admin_body_get(b, "tag");
    const char *err = NULL;
    if (!!url + !!prefix + !!tag != 1) {
        admin_reply_error(r, 400, "give exactly one of \"url\", \"prefix\" or \"tag\"");
        return false;
    }
    if (tag) {
        if (!*tag->str || !admin_cache_visible(tag->str)) {
            admin_reply_error(r, 400, "\"tag\" must be one word of visible ASCII");
            return false;
        }
        *purged = cache_purge_tag(z, tag->str, strlen(tag->str));
        return true;
    }
    size_t len;
    char *key = admin_cache_url_key(url ? url->str : prefix->str, prefix != NULL, &len, &err);
    if (!key) {
        admin_reply_error(r, 400, err);
        return false;
    }
    *purged = url ? cache_purge_key(z, key, len) : cache_purge_prefix(z, key, len);
    free(key);
    return true;
}

void admin_cache_purge(struct admin_req *r, const char *name)
{
    static const struct admin_field_spec spec[] = {
        { "url", ADMIN_VALUE_STRING, false },
        { "prefix", ADMIN_VALUE_STRING, false },
        { "tag", ADMIN_VALUE_STRING, false },
    };
    if (!config_find_cache_zone(control_config(r->ctl), name)) {
        admin_reply_error(r, 404, "unknown cache zone");
        return;
    }
    struct cache_zone *z = cache_zone_find(name);
    if (!z) {
        admin_reply_error(r, 503, "cache zone not open");
        return;
    }
    struct admin_body b;
    size_t purged = 0;
    if (admin_read_body(r, spec, sizeof spec / sizeof spec[0], &b)) {
        if (admin_cache_run_purge(r, z, &b, &purged)) {
            struct admin_json j = admin_reply_json(r, 200);
            admin_json_begin(&j, NULL, '{');
            admin_json_u64(&j, "purged", purged);
            admin_json_end(&j, '}');
        }
        admin_body_free(&b);
    }
    cache_zone_put(z);
}
