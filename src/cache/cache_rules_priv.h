/* cache_rules_priv: helpers shared by the cache_rules sources (cache_cc.c, cache_date.c,
 * cache_rules.c, cache_vary.c, cache_range.c). Not for other modules. */
#ifndef PORTERO_CACHE_RULES_PRIV_H
#define PORTERO_CACHE_RULES_PRIV_H

#include <stdbool.h>
#include <stdint.h>

#include "cache/cache_rules.h"

/* Walks every field line of M named NAME: start with *I = 0; returns false when there are no more. */
bool cache_field_next(const struct http_msg *m, const char *name, uint32_t *i, struct str *value);
/* tchar of RFC 9110 §5.6.2. */
bool cache_is_tchar(unsigned char c);
/* delta-seconds (RFC 9111 §1.2.2): 1*DIGIT, saturating at CACHE_CC_DELTA_MAX; -1 if malformed. */
int64_t cache_delta_seconds(struct str s);
/* The Vary field names of RESP (as sent, not lowercased), sorted case-insensitively and
 * deduplicated into NAMES[0..CACHE_VARY_MAX_NAMES); returns their count, or -1 (see
 * cache_rules_vary_names). */
int cache_vary_collect(const struct http_msg *resp, struct str *names);

#endif
