/* admin: the admin API and metrics listener (admin.address, default 127.0.0.1:9901), served on
 * the control thread's loop. JSON in and out; documented in docs/admin-api.md. */
#ifndef PORTERO_ADMIN_ADMIN_H
#define PORTERO_ADMIN_ADMIN_H

#include "core/sbuf.h"
#include "proxy/control.h"

struct admin;

/* Starts listening on control_config(ctl)->admin_address (unless "off"). NULL with a message in
 * *ERR (malloc'd) if the address cannot be bound. */
struct admin *admin_start(struct control *ctl, char **err);
/* A new snapshot was published: rebind if admin.address changed, take the new token. */
void admin_apply(struct admin *a);
void admin_free(struct admin *a);

/* Prometheus text exposition of every counter (GET /metrics). */
void metrics_render(struct control *ctl, struct sbuf *out);

#endif
