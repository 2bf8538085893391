/* select: the server an exchange tries next — the balancer over servers that are usable
 * (active health, outlier ejection, not draining) and not yet tried, with slow-start weights
 * and panic mode — and the passive health bookkeeping of each attempt's outcome. */
#ifndef PORTERO_PROXY_SELECT_H
#define PORTERO_PROXY_SELECT_H

#include <stdbool.h>
#include <stdint.h>

#include "conf/config.h"
#include "proxy/server_state.h"
#include "proxy/worker.h"

#define SELECT_NONE_LEFT -1  /* every usable server was tried */
#define SELECT_ALL_DOWN -2   /* no server is up and the upstream has no `panic: true` */

/* Picks a server of UP for the balancer key KEY, never one flagged in TRIED. */
int select_server(struct worker_upstream *wu, const struct conf_upstream *up, struct server_state *const *states,
                  const bool *tried, uint64_t key, uint64_t now);
/* True when some server not in TRIED could still be picked (for deciding to retry). */
bool select_has_candidate(const struct conf_upstream *up, struct server_state *const *states, const bool *tried,
                          uint64_t now);
/* Records one attempt's outcome on server S (passive health); logs and counts an ejection. */
void select_record(struct worker *w, const struct conf_upstream *up, struct server_state *const *states, size_t s,
                   bool success, uint64_t now);

#endif
