/* runtime: one published configuration with what the control thread derives from it once for
 * every worker — hash rings and the shared state of each server. Workers and exchanges hold
 * references; the last one to let go frees it (DESIGN: a snapshot is freed when its last user
 * lets go). */
#ifndef PORTERO_PROXY_RUNTIME_H
#define PORTERO_PROXY_RUNTIME_H

#include <stdatomic.h>
#include <stdint.h>

#include "conf/config.h"
#include "policy/policy.h"
#include "proxy/balance.h"
#include "proxy/server_state.h"

struct tls_server;
struct tls_client;
struct cache_zone;

struct runtime {
    atomic_int refs;
    uint64_t generation;             /* 1, 2, ... in publication order */
    struct config *cfg;              /* a reference */
    struct balance_ring **rings;     /* per upstream, NULL unless balance: hash; owned */
    struct server_state ***states;   /* [upstream][server], one reference each */
    struct policy_set *policy;       /* users files, JWT keys, WAF engines; owned */
    struct tls_server **listener_tls; /* per listener, NULL without tls; owned */
    struct tls_client **upstream_tls; /* per upstream, NULL without tls; owned */
    struct cache_zone **zones;       /* per cache zone, one reference each (zones outlive reloads) */
};

/* Builds the runtime of CFG (takes a reference to CFG); PREV, the runtime in use or NULL, lends
 * what did not change (WAF engines). NULL with a message in ERR (CAP bytes): allocation failure,
 * or a file the configuration names that cannot be loaded. */
struct runtime *runtime_build(struct config *cfg, uint64_t generation, const struct runtime *prev,
                              char *err, size_t cap);
struct runtime *runtime_ref(struct runtime *rt);
void runtime_unref(struct runtime *rt);

#endif
