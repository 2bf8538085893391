/* control: the control thread — everything off the request path. It owns the current config
 * snapshot and publishes new ones (file reload on SIGHUP, admin API edits, whole configs put
 * through the API: DESIGN "one snapshot mechanism"), reconciles listeners, runs active health
 * checks and the admin API on its own event loop.
 *
 * Every function below runs on the control thread (the admin API and health checker call them
 * from the control loop), except control_request_reload(), which any thread or a signal
 * handler's thread may call. */
#ifndef PORTERO_PROXY_CONTROL_H
#define PORTERO_PROXY_CONTROL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf/config.h"
#include "core/loop.h"
#include "proxy/server_state.h"
#include "proxy/stats.h"

struct control;

/* The outcome of publishing a snapshot. */
struct control_result {
    bool ok;
    struct conf_errors errors;   /* every "FILE:LINE:COL: message" when !ok */
    char *summary;               /* what changed, e.g. "routes +1 -0, upstreams +0 -0, servers +1 -1"
                                    (malloc'd) */
};
void control_result_free(struct control_result *res);

/* The current snapshot (borrowed: valid until the control thread publishes another). */
struct config *control_config(struct control *ctl);
/* The shared state of server S of upstream U of the current snapshot (borrowed, never NULL). */
struct server_state *control_server_state(struct control *ctl, size_t u, size_t s);
struct loop *control_loop(struct control *ctl);

/* Re-reads the config file and publishes it if valid; the running snapshot is untouched if not. */
void control_reload_file(struct control *ctl, struct control_result *res);
/* Loads DATA (YAML or JSON, same schema; NAME names it in error messages) and publishes it. */
void control_apply_buffer(struct control *ctl, const char *name, const char *data, size_t len,
                          struct control_result *res);
/* Writes the running snapshot back to the config file (as JSON, which is YAML); 0 or -1 with
 * a message in *ERR (malloc'd). */
int control_persist(struct control *ctl, char **err);
/* True when the running snapshot came from the API and differs from the file (lost on reload). */
bool control_unsaved(struct control *ctl);

/* Per-worker counters, for metrics (borrowed). */
size_t control_worker_count(struct control *ctl);
struct worker_stats *control_worker_stats(struct control *ctl, size_t i);
uint64_t control_reloads(struct control *ctl, bool ok);  /* successful / failed publications */
bool control_ready(struct control *ctl);                  /* workers running, not draining */
uint64_t control_started_at(struct control *ctl);         /* wall clock seconds */

/* Thread-safe: asks the control thread to re-read the file (SIGHUP). */
void control_request_reload(struct control *ctl);

/* Life (main thread). control_new starts the health checks of RT (NULL with *ERR, malloc'd, when
 * out of memory); control_start runs the control thread. */
struct worker_group;
struct runtime;
struct control *control_new(const char *path, struct worker_group *group, struct runtime *rt, char **err);
int control_start(struct control *ctl);
/* Before control_start: FN(ARG) runs on the control thread after every publication (the admin
 * API rebinds there; the control module itself knows nothing of the admin API). */
void control_on_publish(struct control *ctl, void (*fn)(void *arg), void *arg);
void control_stop(struct control *ctl);
void control_free(struct control *ctl);

#endif
