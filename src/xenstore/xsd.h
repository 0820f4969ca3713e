/*
 * xsd.h - a small xenstore: Xen's xenstore wire protocol (xsd_sockmsg
 * requests and replies) over a tree of nodes with watches, for one guest.
 * No I/O: bytes from the guest's request ring go in (xsd_feed()), replies
 * and watch events come out of the out queue (xsd_out_take()); src/hv/xs.c
 * moves them to and from the ring page.
 *
 * Owns: struct xsd (tree, watches, the request being read, the out queue).
 *
 * Protocol: READ, WRITE, MKDIR, RM, DIRECTORY, GET_PERMS, SET_PERMS, WATCH,
 * UNWATCH, RESET_WATCHES, TRANSACTION_START/END (one transaction id, always
 * committed: nothing else writes in a transaction), GET_DOMAIN_PATH; any
 * other type gets XS_ERROR "ENOSYS".  A relative path is under
 * /local/domain/<domid>.  A watch fires once when set and on every change
 * at or below its path, reported as the guest wrote the path.
 *
 * Invariants (xsd_check()):
 *  X1. Every node path is absolute, NUL-terminated, shorter than
 *      XSD_PATH_MAX; every value shorter than XSD_VALUE_MAX; a node's
 *      parent exists (the root aside).
 *  X2. out_len <= sizeof(out); in_len <= XSD_HDR + XSD_PAYLOAD_MAX.
 *  X3. Once broken (a header whose length exceeds XSD_PAYLOAD_MAX), no
 *      byte is read any more.
 * Errors: a request that does not fit gets an XS_ERROR reply (E2BIG,
 * ENOSPC, EINVAL, ENOENT, EEXIST); replies that do not fit the out queue
 * are dropped and counted.  Nothing the guest sends can make it fail
 * otherwise.
 *
 * Locking: none; the caller serialises.
 */
#ifndef MEMVISOR_XENSTORE_XSD_H
#define MEMVISOR_XENSTORE_XSD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define XSD_MAX_NODES 128
#define XSD_MAX_WATCHES 64
#define XSD_PATH_MAX 256
#define XSD_VALUE_MAX 1024
#define XSD_TOKEN_MAX 128
#define XSD_HDR 16
#define XSD_PAYLOAD_MAX 4096

struct xsd_node {
    bool used;
    char path[XSD_PATH_MAX]; /* absolute */
    char value[XSD_VALUE_MAX];
    uint32_t len;
};

struct xsd_watch {
    bool used;
    char path[XSD_PATH_MAX]; /* as the guest gave it */
    char abs[XSD_PATH_MAX];
    char token[XSD_TOKEN_MAX];
};

struct xsd {
    unsigned domid;
    bool broken;
    struct xsd_node node[XSD_MAX_NODES];
    struct xsd_watch watch[XSD_MAX_WATCHES];
    char in[XSD_HDR + XSD_PAYLOAD_MAX + 1]; /* the request being read */
    uint32_t in_len;
    char out[16384]; /* replies and watch events not yet in the ring */
    uint32_t out_len;
    uint64_t requests, dropped;
};

/* An empty store for domain domid with its usual nodes (name, domid,
 * memory/target and memory/static-max = mem_kib, device/, control/). */
void xsd_init(struct xsd *x, unsigned domid, uint64_t mem_kib);
/* Request bytes from the guest; complete requests are served.  Returns
 * the bytes taken (all of them unless broken). */
size_t xsd_feed(struct xsd *x, const char *buf, size_t len);
/* The first n bytes of the out queue were sent. */
void xsd_out_take(struct xsd *x, uint32_t n);
/* memvisor's own side: write (firing watches) or read a node. */
int xsd_write(struct xsd *x, const char *path, const char *val);
int xsd_read(struct xsd *x, const char *path, char *out, size_t len);
/* X1-X3: 0 or -EUCLEAN. */
int xsd_check(const struct xsd *x);

#endif
