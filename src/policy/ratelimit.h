/* ratelimit: the per-process engine behind `rate_limits` (token buckets) and behind listeners'
 * `max_connections_per_ip` (connection counts per client address), shared by every worker
 * thread.
 *
 * One table per process, made once and kept across config reloads: a bucket is found by its
 * limit's name and the request's key, so a reload that keeps a limit keeps its state (a changed
 * rate or burst applies from the next request on; a changed period keeps the tokens left). The
 * table is split into 64 shards, each with its own mutex and hash table, so threads only meet
 * when their keys land in the same shard; nothing global is taken on the request path. Keys
 * are hashed with SipHash-2-4 under a random per-table key, so clients cannot aim their keys at
 * one hash chain. */
#ifndef PORTERO_POLICY_RATELIMIT_H
#define PORTERO_POLICY_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf/config.h"

/* Total buckets a table holds by default; past it a shard evicts its least recently used. */
#define RATELIMIT_MAX_BUCKETS (1u << 20)
/* A bucket that has been full this long is dropped by ratelimit_expire (dropping a full bucket
 * changes nothing: a new one starts full). */
#define RATELIMIT_IDLE_MS 10000

struct ratelimit_table;

/* NULL on allocation failure. Free with ratelimit_table_free (no other thread may still use it). */
struct ratelimit_table *ratelimit_table_new(void);
/* Same, holding at most MAX_BUCKETS buckets (at least one per shard). */
struct ratelimit_table *ratelimit_table_new_bounded(size_t max_buckets);
void ratelimit_table_free(struct ratelimit_table *t);

/* Takes one token for KEY[0..KEY_LEN) (any bytes) from LIMIT's bucket at NOW_MS (monotonic ms;
 * callers may pass slightly different clocks: time never runs backwards for a bucket). The bucket
 * holds at most LIMIT->burst tokens, gains LIMIT->rate per LIMIT->per_ms (fractions included)
 * and starts full. Returns 0 when a token was taken, else the ms until one will be available
 * (>= 1; for Retry-After). Allows when memory for a new bucket cannot be had. Thread-safe. */
uint64_t ratelimit_take(struct ratelimit_table *t, const struct conf_rate_limit *limit,
                        const char *key, size_t key_len, uint64_t now_ms);

/* Drops buckets that have been full for RATELIMIT_IDLE_MS at NOW_MS, so memory follows the keys
 * in use. Call periodically (every few seconds); locks one shard at a time. */
void ratelimit_expire(struct ratelimit_table *t, uint64_t now_ms);

/* Buckets held now (for metrics and tests). */
size_t ratelimit_bucket_count(struct ratelimit_table *t);

/* Counts one more connection from client address ADDR (ADDR_LEN bytes: 4 for IPv4, 16 for
 * IPv6). Returns false, and counts nothing, when that would make more than MAX (so MAX 0 refuses
 * every connection: callers skip the call when no limit is set). Allows when memory for a new
 * count cannot be had. Every true must be matched by one ratelimit_conn_release. Thread-safe. */
bool ratelimit_conn_acquire(struct ratelimit_table *t, const uint8_t *addr, size_t addr_len,
                            uint32_t max);
/* Counts one connection from ADDR less (an address no longer counted is forgotten). */
void ratelimit_conn_release(struct ratelimit_table *t, const uint8_t *addr, size_t addr_len);

#endif
