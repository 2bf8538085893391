/* Weak stand-ins while the HTTP/2 modules are written: the real definitions replace them. */
#include <errno.h>

#include "proxy/h2_server.h"
#include "proxy/h2_upstream.h"

__attribute__((weak)) int h2s_start(struct client *c) { (void)c; return -1; }
__attribute__((weak)) void h2s_on_event(struct h2_server *s, uint32_t events) { (void)s; (void)events; }
__attribute__((weak)) void h2s_on_timer(struct h2_server *s) { (void)s; }
__attribute__((weak)) void h2s_drain(struct h2_server *s) { (void)s; }
__attribute__((weak)) void h2s_free(struct h2_server *s) { (void)s; }
__attribute__((weak)) void h2s_stream_done(struct client *s) { (void)s; }
__attribute__((weak)) void h2s_stream_close(struct client *s) { (void)s; }
__attribute__((weak)) int h2u_attach(struct upstream_conn *uc) { (void)uc; errno = ENOSYS; return -1; }
__attribute__((weak)) void h2u_detach(struct upstream_conn *uc) { (void)uc; }
__attribute__((weak)) bool h2u_reusable(const struct upstream_conn *uc) { (void)uc; return false; }
