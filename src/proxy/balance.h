/* balance: choosing a server of an upstream for one request.
 *
 * The hash ring is built once per config snapshot and shared read-only by all workers; the
 * `struct balance_state` is per worker (no locks, no atomics): smooth weighted round-robin
 * state and the worker's count of active requests per server. */
#ifndef PORTERO_PROXY_BALANCE_H
#define PORTERO_PROXY_BALANCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "conf/config.h"
#include "http/msg.h"

/* Consistent-hash ring: BALANCE_RING_VNODES points per unit of weight. */
#define BALANCE_RING_VNODES 160
struct balance_ring {
    uint64_t *points;  /* sorted hashes */
    uint32_t *servers; /* server index of each point */
    size_t n;
};

/* Builds the ring of UP's servers (a server's points depend only on its address and weight, so
 * adding one server moves only about 1/N of the keys). Returns NULL on allocation failure. */
struct balance_ring *balance_ring_build(const struct conf_upstream *up);
void balance_ring_free(struct balance_ring *ring);
/* First server clockwise from HASH that SKIP (n_servers flags, may be NULL) does not exclude;
 * -1 if every server is excluded. */
int balance_ring_lookup(const struct balance_ring *ring, uint64_t hash, const bool *skip,
                        size_t n_servers);

struct balance_state {
    const struct conf_upstream *up;  /* borrowed */
    const struct balance_ring *ring; /* borrowed; NULL unless balance == hash */
    int64_t *current;                /* smooth WRR current weight per server, owned */
    uint32_t *active;                /* active requests per server on this worker, owned */
    uint64_t rng;                    /* xorshift state for random_two */
    uint32_t *weights;               /* effective weights (slow start), owned; NULL = configured */
};

int balance_state_init(struct balance_state *st, const struct conf_upstream *up,
                       const struct balance_ring *ring, uint64_t seed);
void balance_state_free(struct balance_state *st);

/* Key hash for balance: hash from the request (client_ip, uri, header:NAME, cookie:NAME).
 * A missing header or cookie hashes as the empty string. */
uint64_t balance_request_hash(const struct conf_upstream *up, const struct http_msg *req,
                              const struct sockaddr *client);

/* Picks a server index for one request, never one flagged in SKIP (may be NULL), e.g. servers a
 * retry already tried. Returns -1 when no server is left. Does not count the request as active:
 * the caller brackets it with balance_begin / balance_end. */
int balance_pick(struct balance_state *st, uint64_t key_hash, const bool *skip);
void balance_begin(struct balance_state *st, int server);
/* Overrides server I's weight (slow start ramps it up); 0 restores the configured weight. */
void balance_set_weight(struct balance_state *st, size_t i, uint32_t weight);
void balance_end(struct balance_state *st, int server);

#endif
