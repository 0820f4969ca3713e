/*
 * wire.h - the one reader and writer of the device-model protocol
 * (include/memvisor/dm.h), used by memvisor (src/ioreq) and by the
 * device-model library (dm/lib).
 *
 * Owns nothing: pure checks and socket I/O on a caller's fd.
 *
 * Invariants:
 *  W1. dm_msg_check() accepts a buffer only if its length is exactly what
 *      its type and counts say, the type may travel in the stated
 *      direction, every count is within its DM_*_MAX, every reserved field
 *      is zero and every enumerated field has a defined value.  No field of
 *      a message is used before this check.
 *  W2. dm_msg_recv() never returns more than DM_MSG_MAX bytes, reports a
 *      longer datagram as -EMSGSIZE (it is discarded whole), and closes
 *      every file descriptor that came with a message unless the caller
 *      asked for one (only WELCOME carries one).
 *
 * Errors: -EBADMSG (malformed: W1), -EMSGSIZE (too long), -EPROTO (a type
 * that may not travel this way), -ECONNRESET (peer closed), -ETIMEDOUT,
 * -errno of the socket calls.
 */
#ifndef MEMVISOR_IOREQ_WIRE_H
#define MEMVISOR_IOREQ_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/compiler.h"
#include "memvisor/dm.h"

/* Which end sent the message being checked. */
enum dm_from { DM_FROM_HV, DM_FROM_DM };

/* W1: 0 or -EBADMSG / -EPROTO. */
int __must_check dm_msg_check(const void *buf, size_t len, enum dm_from from);

/* Fill a header for a message of `type` and whole length `len`. */
void dm_hdr_init(struct dm_hdr *h, enum dm_type type, uint32_t len);

/* Send one message (with fd >= 0 attached by SCM_RIGHTS).  timeout_ms < 0:
 * block; otherwise wait at most that long for room.  0 or -errno. */
int __must_check dm_msg_send(int sock, const void *msg, size_t len, int fd,
                             int timeout_ms);
/* Receive one datagram into buf (DM_MSG_MAX bytes).  timeout_ms < 0:
 * block.  Returns its length, or -errno (W2).  *fd_out (if non-NULL)
 * receives an attached descriptor, else -1. */
long __must_check dm_msg_recv(int sock, void *buf, int *fd_out,
                              int timeout_ms);

const char *dm_type_name(unsigned type);

#endif
