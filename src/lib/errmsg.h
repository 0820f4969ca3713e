/*
 * errmsg.h - the one way a function hands a caller a readable reason with
 * its -errno: a caller-provided buffer (err, len), which may be NULL/0.
 *
 * errf() formats into it, always NUL-terminated and truncated to fit; it
 * never allocates and is safe on any thread.
 */
#ifndef MEMVISOR_LIB_ERRMSG_H
#define MEMVISOR_LIB_ERRMSG_H

#include <stddef.h>

#include "lib/compiler.h"

void errf(char *err, size_t len, const char *fmt, ...) __printf(3, 4);

#endif
