/*
 * control.h - the control socket of `memvisor run`: a unix stream socket
 * speaking JSON lines (docs/control.md).  One request object per line, one
 * response object per line:
 *
 *   {"cmd":"pause"}        -> {"ok":true}
 *   {"cmd":"resume"}       -> {"ok":true}
 *   {"cmd":"stats"}        -> {"ok":true,"exits":N,"hypercalls":{...},...}
 *   {"cmd":"audit"}        -> {"ok":true,"clean":true,"frames":N,"tables":N}
 *   {"cmd":"pfinfo"}       -> {"ok":true,"frames":N,"types":{...},"pinned":N}
 *   {"cmd":"pfinfo","mfn":M,"count":C} -> ... plus "list":[[mfn,info],...]
 *   {"cmd":"dirty"}        -> {"ok":true,"pages":N}  (harvest the dirty log)
 *   {"cmd":"console"}      -> {"ok":true,"tail":"..."}
 *   {"cmd":"shutdown"}     -> {"ok":true}  (the guest stops: poweroff)
 *   anything else          -> {"ok":false,"error":"..."}
 *
 * Owns: the listening socket, its thread, one client at a time.  Requests
 * are untrusted: lines are bounded (CONTROL_LINE_MAX), unknown fields are
 * ignored, a malformed line gets an error response, never a crash.
 *
 * Locking: the control thread only calls hv_domain_* functions, which are
 * thread-safe; control_stop() joins the thread.
 *
 * Errors: -errno of socket(), bind(), listen(), pthread_create().
 */
#ifndef MEMVISOR_CLI_CONTROL_H
#define MEMVISOR_CLI_CONTROL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hv/hv.h"

#define CONTROL_LINE_MAX 4096

struct control;

/* pause_depth: pauses already taken on the socket's behalf (--paused). */
int __must_check control_start(struct control **out, const char *path,
                               struct domain *d, int pause_depth);
void control_stop(struct control *c);

/* Handle one request line; the response (one line, no newline) goes to out.
 * Exposed for tests. */
void control_handle(struct domain *d, const char *line, char *out,
                    size_t outlen, int *pause_depth);

/* The request parser's helpers, for the requests other files serve
 * (xfer.h): a string or unsigned member of a request line; a string as a
 * JSON string literal. */
bool control_str(const char *line, const char *key, char *out, size_t len);
bool control_u64(const char *line, const char *key, uint64_t *out);
void control_json_string(char *buf, size_t len, const char *s);

#endif
