/* fwdauth: the forward-auth client — an asynchronous HTTP/1.1 sub-request from a worker's loop to
 * an auth service (`auth: { forward: ... }`), whose answer decides whether the client's request
 * may pass: 2xx lets it through (with some of the answer's headers copied onto it), anything else
 * is passed back to the client, and no answer at all (refused, timed out, malformed) is an error.
 *
 * One connection per sub-request, closed when it ends; nothing is shared between operations, so
 * an operation belongs to the loop (the worker thread) that started it. */
#ifndef PORTERO_POLICY_FWDAUTH_H
#define PORTERO_POLICY_FWDAUTH_H

#include <stddef.h>

#include "conf/config.h"
#include "core/loop.h"
#include "http/msg.h"

#define FWDAUTH_MAX_COPY 16

struct fwdauth_result {
    int status;                    /* the auth service's status; 0 when it could not be asked
                                      (connect error, timeout, malformed answer) */
    /* 2xx: headers named in auth->forward_response_headers found in the answer (owned copies;
     * a name's repeated fields are joined with ", ", RFC 9110 §5.3; the name is spelled as the
     * answer spelled it). Configured names absent from the answer are not listed. */
    size_t n_copy;
    char *copy_name[FWDAUTH_MAX_COPY], *copy_value[FWDAUTH_MAX_COPY];
    /* non-2xx: its Location and WWW-Authenticate, to pass to the client (owned, NULL if absent) */
    char *location, *www_authenticate;
};

/* Frees the strings RES still owns and zeroes it (RES itself is not freed). */
void fwdauth_result_free(struct fwdauth_result *r);

/* RES is the callee's: the callback may take its strings (set them NULL) and must not free RES
 * itself. The operation is over when the callback runs: do not cancel it afterwards. */
typedef void (*fwdauth_cb)(void *arg, struct fwdauth_result *res);

struct fwdauth_op;

/* Sends GET auth->forward_path to auth->forward_addr with the client's request headers (all of
 * REQ's headers except hop-by-hop, framing, Host, Expect and X-Forwarded-*, or only those named
 * in auth->forward_request_headers when n_forward_request_headers > 0), plus X-Forwarded-Method,
 * X-Forwarded-Uri (REQ's path and query: origin-form, and normalized once the exchange has
 * normalized REQ->path, see http/path.h — what the route matched and the backend receives),
 * X-Forwarded-Host (REQ's host) and X-Forwarded-For (CLIENT_IP, may be NULL). Reads the answer's head, then reads and discards a
 * framed body of up to 64 KiB (a larger or close-delimited body just ends the connection); the
 * deadline auth->forward_timeout_ms (2 s if 0) covers connect and the whole answer.
 *
 * Calls CB exactly once from LOOP's thread — never from inside fwdauth_start — unless cancelled.
 * AUTH is borrowed until then (it lives in the config snapshot the request holds); REQ and
 * CLIENT_IP only during this call. Returns NULL only on allocation failure (CB is not called).
 *
 * The operation frees itself in a deferred task of LOOP: after loop_run returns, the owner runs
 * loop_flush_tasks before loop_free (as for every deferred free). */
struct fwdauth_op *fwdauth_start(struct loop *loop, const struct conf_auth *auth,
                                 const struct http_msg *req, const char *client_ip,
                                 fwdauth_cb cb, void *arg);

/* The requester went away: CB will not be called; the socket is closed now. OP must not have
 * called back yet (it is gone after its callback). */
void fwdauth_cancel(struct fwdauth_op *op);

#endif
