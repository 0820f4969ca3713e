/*
 * dmlib.h - a small library for writing memvisor device models: attach to
 * a domain's device-model socket, map the pool through a mapcache, serve
 * I/O requests, invalidations, page-tracking notices and state save and
 * restore (include/memvisor/dm.h, docs/dm-protocol.md).
 *
 * Owns: one connection (its socket, the pool memfd, the mapcache).
 *
 * Invariants:
 *  D1. INVALIDATE gen is acknowledged only when the mapcache holds no
 *      mapping made before it (mapcache.h C2): at once, or when the last
 *      held stale mapping is released (a DMA in flight finishes first).
 *  D2. Guest memory is reached only through dm_copy_from()/dm_copy_to()
 *      (or mapcache holds): every page a device writes is reported to
 *      memvisor in a DIRTY message before dm_copy_to() returns.
 *  D3. Every message from memvisor passes dm_msg_check() before use; a
 *      malformed one ends dm_serve() with -EBADMSG.
 *
 * Locking: send_lock serialises writers to the socket (the serving thread
 * and device worker threads); the mapcache has its own lock.  Device
 * callbacks run on the serving thread.
 *
 * Errors: -errno; -ECONNREFUSED with the reason text when memvisor
 * refused the HELLO.
 */
#ifndef MEMVISOR_DM_DMLIB_H
#define MEMVISOR_DM_DMLIB_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "mapcache.h"
#include "memvisor/dm.h"

struct dm_conn;

struct dm_dev_ops {
    /* A guest access; a read fills *data.  0 or -errno (the access fails). */
    int (*io)(struct dm_conn *c, const struct dm_ioreq *rq, uint64_t *data);
    /* Before the mapcache is invalidated (e.g. finish queued requests). */
    void (*invalidate)(struct dm_conn *c);
    void (*track_reply)(struct dm_conn *c, uint64_t gfn, bool on, int status);
    void (*track_write)(struct dm_conn *c, uint64_t gpa, const uint8_t *bytes,
                        uint32_t len);
    void (*track_gone)(struct dm_conn *c, uint64_t gfn, uint64_t nr);
    int (*save)(struct dm_conn *c, void *buf, uint32_t *len);
    int (*restore)(struct dm_conn *c, const void *buf, uint32_t len);
    /* QUIESCE (on): finish or fail every request in flight (reporting
     * what it wrote with dm_report_dirty() before returning) and start no
     * DMA into guest memory until called with on = false.  0 or -errno.
     * NULL: the device has nothing in flight between requests (answered
     * 0). */
    int (*quiesce)(struct dm_conn *c, bool on);
};

struct dm_conn {
    int sock;
    int memfd;
    uint32_t domid, server, nr_vcpus;
    uint64_t pool_bytes, nr_gfns;
    struct mapcache mc;
    const struct dm_dev_ops *ops;
    void *opaque;
    pthread_mutex_t send_lock;
    uint64_t nr_ioreqs, nr_invals, nr_dirty_msgs;
    /* Test only (hostile device models and rule-off tests). */
    bool test_never_ack;   /* never send INVAL_ACK */
    int test_inval_delay_ms; /* sleep before handling INVALIDATE */
};

/* Connect to a unix socket path (SOCK_SEQPACKET); the fd or -errno. */
int dm_connect(const char *path);
/* HELLO with name and ranges, then WELCOME (+ memfd) and the initial map.
 * why (may be NULL) receives memvisor's reason on refusal. */
int dm_attach(struct dm_conn *c, int sock, const char *name,
              const struct dm_range *ranges, uint32_t nr_ranges,
              uint32_t mapcache_entries, const struct dm_dev_ops *ops,
              void *opaque, char *why, size_t why_len);
/* Serve messages until memvisor says BYE or closes (0) or an error. */
int dm_serve(struct dm_conn *c);
void dm_detach(struct dm_conn *c);

/* Copy guest memory at gpa through the mapcache (page by page). */
int dm_copy_from(struct dm_conn *c, void *dst, uint64_t gpa, uint64_t len);
/* ... and to it, reporting the pages written (D2). */
int dm_copy_to(struct dm_conn *c, uint64_t gpa, const void *src, uint64_t len);
/* Report [gfn, gfn + nr) as written by the device. */
int dm_report_dirty(struct dm_conn *c, uint64_t gfn, uint64_t nr);
/* Ask to track (on) or stop tracking a gfn; the answer comes to
 * ops->track_reply. */
int dm_track(struct dm_conn *c, uint64_t gfn, bool on);
/* Send a raw message (for tests of hostile device models). */
int dm_send_raw(struct dm_conn *c, const void *msg, size_t len);

#endif
