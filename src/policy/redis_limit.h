/* redis_limit: cluster-wide rate limits (`cluster: true`), kept in Redis so that every portero
 * instance draws from the same buckets.
 *
 * One per worker thread, on that worker's loop, with one connection made lazily and used by
 * every request of the worker (hiredis's async API driven by the loop: nothing here blocks). A
 * bucket is a Redis hash at PREFIX NAME ":" KEY, updated atomically by a Lua script that reads
 * Redis's own clock (TIME), so instances whose clocks disagree still agree on the bucket, and
 * that sets a PEXPIRE so an idle bucket vanishes once it would be full again. The script runs
 * by EVALSHA, and by EVAL when Redis does not know it (NOSCRIPT: after a restart or SCRIPT FLUSH).
 *
 * Failures are answered fast and never wait on a dead Redis: a reply later than the configured
 * timeout fails its request; a connection that fails (refused, reset, no reply for a second)
 * is dropped and, for REDIS_LIMIT_BACKOFF_MS, requests fail at once instead of reconnecting. */
#ifndef PORTERO_POLICY_REDIS_LIMIT_H
#define PORTERO_POLICY_REDIS_LIMIT_H

#include <stddef.h>
#include <stdint.h>

#include "conf/config.h"
#include "core/loop.h"

/* After a failed connection, how long requests fail at once before the next attempt. */
#define REDIS_LIMIT_BACKOFF_MS 1000
/* A connection with requests outstanding and no reply for this long is taken for dead. */
#define REDIS_LIMIT_STALL_MS 1000

struct redis_limit;

/* The engine of the worker running LOOP (used only from that thread). NULL on allocation failure. */
struct redis_limit *redis_limit_new(struct loop *loop);
/* Closes the connection and cancels every pending request: their callbacks are NOT called.
 * Call it outside of the loop's callbacks (at worker teardown); it frees everything at once, so
 * no loop_flush_tasks is needed afterwards. */
void redis_limit_free(struct redis_limit *r);

/* RESULT: 0 allowed; > 0 denied, ms until a token (for Retry-After); < 0 Redis failed
 * (unreachable, timed out, error reply). */
typedef void (*redis_limit_cb)(void *arg, int64_t result);

struct redis_limit_op;

/* Asks Redis for one token of LIMIT's bucket for KEY[0..KEY_LEN) (any bytes), at CFG->addr,
 * waiting at most CFG->timeout_ms. CFG and LIMIT are read during this call only (a reload may
 * free them later); a changed CFG->addr drops the old connection and connects to the new one.
 * Calls CB exactly once, from the loop, never from inside this call, unless cancelled. Returns
 * NULL only on allocation failure (then CB is never called). */
struct redis_limit_op *redis_limit_take(struct redis_limit *r, const struct conf_redis *cfg,
                                        const struct conf_rate_limit *limit, const char *key,
                                        size_t key_len, redis_limit_cb cb, void *arg);

/* The requester went away: CB will not be called. OP must not have called back yet (it is
 * gone after its callback); NULL is ignored. */
void redis_limit_cancel(struct redis_limit_op *op);

#endif
