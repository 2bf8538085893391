/* admin_priv: what admin.c (listener, connections, HTTP framing), admin_api.c (the endpoint
 * table and handlers), admin_cache.c (the cache endpoints) and admin_rate.c (request-rate
 * sampling) share. Private to src/admin/. */
#ifndef PORTERO_ADMIN_ADMIN_PRIV_H
#define PORTERO_ADMIN_ADMIN_PRIV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "admin/admin_json.h"
#include "core/sbuf.h"
#include "core/str.h"
#include "proxy/control.h"

/* --- request rates (admin_rate.c) --------------------------------------------------------------- */

#define ADMIN_RATE_SAMPLES 11   /* one a second: a window of about 10 s */
#define ADMIN_KEY_MAX 160       /* "UPSTREAM/ADDRESS" */

/* The recent request totals of one server, a ring of samples taken once a second. */
struct admin_rate {
    char key[ADMIN_KEY_MAX];
    uint64_t at[ADMIN_RATE_SAMPLES];    /* loop clock ms */
    uint64_t total[ADMIN_RATE_SAMPLES]; /* requests_total then */
    unsigned n;                         /* samples held */
    unsigned next;                      /* slot of the next sample (the oldest once full) */
};

struct admin_rates {
    struct admin_rate *v; /* one per server of the running config, malloc'd */
    size_t n;
};

/* Samples every server of the running config (called each second); servers gone are dropped. */
void admin_rates_sample(struct admin_rates *r, struct control *ctl);
/* Requests per second of server KEY over the window, given its TOTAL now; 0 until a second of
 * history exists. */
double admin_rates_get(const struct admin_rates *r, const char *key, uint64_t total, uint64_t now_ms);
void admin_rates_free(struct admin_rates *r);

/* "UPSTREAM/ADDRESS", the key of a server in the stats tables and in the rates, into OUT. */
void admin_server_key(char out[ADMIN_KEY_MAX], const char *upstream, const char *address);
/* The workers' counters: a malloc'd array of control_worker_count(ctl) pointers (NULL and
 * *N = 0 when out of memory). */
struct worker_stats **admin_worker_stats(struct control *ctl, size_t *n);

/* --- requests (admin_api.c) --------------------------------------------------------------------- */

/* One parsed request handed to the endpoint table, and the answer it gets. */
struct admin_req {
    struct control *ctl;
    const struct admin_rates *rates;
    struct str method;
    struct str path;          /* without the query */
    struct str authorization; /* the header's value; empty when absent */
    const char *body;         /* Content-Length bytes */
    size_t body_len;
    /* the answer, set by admin_dispatch */
    int status;
    const char *content_type; /* static text */
    struct sbuf out;          /* the body; the caller frees it */
    char allow[64];           /* 405: the Allow header's value */
    bool challenge;           /* 401: send WWW-Authenticate: Bearer */
};

/* Authenticates, routes and runs R; always sets an answer. */
void admin_dispatch(struct admin_req *r);
/* The reason phrase of STATUS ("OK", "Not Found", ...). */
const char *admin_reason(int status);
/* Sets R's answer to {"error": MSG} with STATUS. */
void admin_reply_error(struct admin_req *r, int status, const char *msg);
/* Starts R's answer as JSON with STATUS; the returned writer appends to R->out. */
struct admin_json admin_reply_json(struct admin_req *r, int status);

/* One key a request body may hold. */
struct admin_field_spec {
    const char *key;
    enum admin_value_type type;
    bool required;
};
/* Parses R's body into B and checks it against SPEC[0..N); on false the answer (400) is set and
 * B is empty. */
bool admin_read_body(struct admin_req *r, const struct admin_field_spec *spec, size_t n,
                     struct admin_body *b);

/* --- cache endpoints (admin_cache.c) ------------------------------------------------------------ */

/* GET /cache: every zone of the running config with its counters. */
void admin_cache_list(struct admin_req *r);
/* GET /cache/NAME: one zone. */
void admin_cache_zone(struct admin_req *r, const char *name);
/* POST /cache/NAME/purge with {"url": ...}, {"prefix": ...} or {"tag": ...}. */
void admin_cache_purge(struct admin_req *r, const char *name);

/* The store key that the default cache key (scheme, host, path, query) gives the request for
 * URL ("http://Host/p?q"): "SCHEME://HOST" lower-cased, the normalized path ("/" when empty),
 * then "?QUERY" when URL has a '?'; a fragment is dropped. With PREFIX, the start of such a key:
 * lower-cased up to the path, the rest as given. Returns a malloc'd NUL-terminated key with its
 * length in *LEN, or NULL with *ERR (static text) when URL is not an absolute http(s) URL of
 * visible ASCII. */
char *admin_cache_url_key(const char *url, bool prefix, size_t *len, const char **err);

#endif
