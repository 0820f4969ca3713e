/*
 * ioreq.h - device-model servers of a domain: the hypervisor's side of the
 * device-model protocol (include/memvisor/dm.h, docs/dm-protocol.md).
 *
 * Owns: per domain, up to IOREQ_MAX_SERVERS servers (a connected device
 * model each: its socket, its claimed port and MMIO ranges, a reader
 * thread, its page-tracking subscriptions), the invalidation generation,
 * and the copy of the gfn -> mfn map as last announced to the servers.
 *
 * A server's life:
 *
 *   (socket) --ioreq_attach()--> LIVE --cut()--> CUT
 *                 |  HELLO read, checked, ranges claimed, WELCOME + the
 *                 |  pool memfd, MAP of the whole domain sent
 *                 \--> refused (REFUSED sent, socket closed, no server)
 *
 *   LIVE: requests are forwarded; INVALIDATE is broadcast to it.
 *   CUT:  it stalled past the timeout, closed its socket, or sent a message
 *         that fails dm_msg_check() or makes no sense (an answer to nothing,
 *         an ack from the future).  Its socket is shut; its ranges stay
 *         claimed so that the guest sees that device fail: reads return all
 *         ones, writes are dropped, both counted.  Its subscriptions end.
 *         cut_reason says why.  Nothing else changes: other servers, the
 *         domain, other domains go on.
 *
 * Invariants:
 *  I1. (DESIGN 8, mapcache coherence) ioreq_end_hypercall() returns only
 *      when every server LIVE at that moment has acknowledged an
 *      INVALIDATE sent after the p2m's mapcache-invalidate flag was last
 *      cleared, or has been cut off.  The flag is cleared and the
 *      generation advanced under io.lock, so a vCPU that finds the flag
 *      already cleared by another still waits for that other's generation.
 *  I2. Before an INVALIDATE, each server has been sent a MAP announcing
 *      every gfn whose entry left the p2m since the last MAP (the same
 *      socket, so in order): a device model never learns of an
 *      invalidation before the removal it is about.
 *  I3. A vCPU waits for a server for at most timeout_ms per request; past
 *      it, the server is cut (the vCPU never waits forever on a process).
 *  I4. Claimed ranges of all servers of a domain never overlap; PIO ranges
 *      stay below 0x10000, MMIO ranges lie outside the domain's RAM and
 *      outside the ranges its platform serves itself (cfg.reserved: an
 *      HVM domain's serial port, PIT, PICs, LAPIC, IOAPIC, ...), whose
 *      accesses would never reach a device model.
 *  I5. Messages from a server are processed at most rate_per_sec per
 *      second (its reader sleeps beyond); no message a server sends can
 *      make memvisor exit, abort or leak.
 *  I6. A server that is memvisor's own child process (ioreq_set_child())
 *      is killed when it is cut off for misbehaving, and has exited before
 *      the cut returns: its mappings are gone before any frame it may have
 *      mapped is released (a device model attached by socket cannot be
 *      forced; its mappings outlive the cut).
 *
 * Locking: io.lock (a mutex) protects the server table, each server's
 * state, pending request slots, acked generation and subscriptions, and the
 * announced map.  It nests inside the memslot lock (a tracker callback
 * takes it) and outside nothing: no memslot, p2m or dirty function is
 * called with it held, except p2m_lookup_range() (p2m.lock is a leaf) and
 * dirty_mark() (lock-free).  Each server's send_lock serialises writers to
 * its socket; it is taken after io.lock when both are held.
 *
 * Errors: -ENOENT (no server claims the access), -EIO (the claiming server
 * is cut off: the device failed), -ETIMEDOUT, -EBADMSG/-EPROTO/-EMSGSIZE
 * (a server's malformed message), -EBUSY (server table full, range already
 * claimed), -EINVAL, -ENOMEM, -errno of the socket calls.
 */
#ifndef MEMVISOR_IOREQ_IOREQ_H
#define MEMVISOR_IOREQ_IOREQ_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "dirty/dirty.h"
#include "frame/frame.h"
#include "ioreq/wire.h"
#include "lib/compiler.h"
#include "lib/types.h"
#include "memslot/memslot.h"
#include "p2m/p2m.h"

#define IOREQ_MAX_SERVERS 16
#define IOREQ_MAX_VCPUS 16
#define IOREQ_MAX_TRACKS 64 /* gfns one server may track */
#define IOREQ_REASON_MAX 160

enum ioreq_state { IOREQ_LIVE, IOREQ_CUT };

struct ioreq_domain;

struct ioreq_pending {
    uint64_t id; /* 0: none outstanding */
    bool done;
    uint64_t data;
    int32_t status;
};

struct ioreq_server {
    struct ioreq_domain *io;
    unsigned id;
    int fd;
    pid_t child; /* > 0: memvisor's child process, killed when cut (I6) */
    char name[DM_NAME_MAX];
    struct dm_range ranges[DM_MAX_RANGES];
    unsigned nr_ranges;
    enum ioreq_state state;
    char cut_reason[IOREQ_REASON_MAX];
    pthread_t reader;
    pthread_mutex_t send_lock;
    uint64_t acked_gen;
    struct ioreq_pending pend[IOREQ_MAX_VCPUS];
    struct ioreq_pending save; /* SAVE/RESTORE/QUIESCE in flight (one at a
                                  time) */
    uint16_t save_type;        /* which of them */
    uint8_t *save_buf;         /* DM_STATE_MAX bytes while saving */
    uint32_t save_len;
    /* page tracking: memslot calls tracker on vCPU threads */
    struct memslot_tracker tracker;
    uint64_t tracks[IOREQ_MAX_TRACKS];
    unsigned nr_tracks;
    /* rate limit (I5): tokens and when they were last refilled */
    uint64_t tokens, refill_ns;
    /* statistics */
    uint64_t nr_ioreqs, nr_invals, nr_track_writes, nr_dirty_pages,
        nr_msgs, nr_throttled;
};

/* How long ioreq_attach() waits for a new device model's HELLO. */
#define IOREQ_HELLO_MS 20000

#define IOREQ_MAX_RESERVED 24

struct ioreq_config {
    int timeout_ms;       /* I3; 0: 2000 */
    uint32_t rate_per_sec; /* I5; 0: 100000 */
    /* I4: ranges no server may claim (the platform's own devices). */
    struct dm_range reserved[IOREQ_MAX_RESERVED];
    unsigned nr_reserved;
    /* Test only: the vCPU does not wait for INVALIDATE acks (breaks I1),
     * to show the stale-mapping test catches it. */
    bool test_no_wait_acks;
    /* Test only: removed frames are put at once, not held until every
     * server acknowledged (breaks p2m.h P6), to show the test where
     * another domain allocates during the wait catches it. */
    bool test_no_hold_removed;
    /* Test only: DIRTY reports are accepted but not put in the dirty log
     * (a device's writes to guest memory escape the log: DESIGN
     * invariant 6 off), to show the tests catch it. */
    bool test_drop_dirty;
};

struct ioreq_stats {
    uint64_t servers, live, cut;
    uint64_t ioreqs, failed_ioreqs, unclaimed;
    uint64_t invalidations, inval_wait_ns;
    uint64_t track_writes, dirty_pages;
    uint64_t messages, throttled; /* from servers; waits of the rate limit */
};

struct ioreq_domain {
    struct frames *frames;
    struct p2m *p2m;
    struct memslots *ms;
    struct dirty_log *dirty;
    domid_t domid;
    unsigned nr_vcpus;
    struct ioreq_config cfg;

    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct ioreq_server *servers[IOREQ_MAX_SERVERS];
    unsigned nr_servers;
    _Atomic bool attached; /* a server ever attached: the fast path's test */
    uint64_t inval_gen; /* last INVALIDATE generation broadcast */
    uint64_t *announced; /* per gfn: mfn in the last MAP, or DM_MFN_NONE */
    uint64_t next_id;
    bool stopping;
    struct ioreq_stats stats;
};

int __must_check ioreq_domain_init(struct ioreq_domain *io,
                                   struct frames *frames, struct p2m *p2m,
                                   struct memslots *ms, struct dirty_log *dirty,
                                   unsigned nr_vcpus,
                                   const struct ioreq_config *cfg);
/* Cuts every server, joins the readers, closes the sockets. */
void ioreq_domain_fini(struct ioreq_domain *io);

/* A device model connected on sock (SOCK_SEQPACKET; ioreq owns it from
 * here, also on error): read its HELLO (within timeout_ms), claim its
 * ranges, answer WELCOME with the pool's memfd, announce the map, start
 * its reader.  Returns the server index, or -errno (the socket closed; a
 * REFUSED says why when the HELLO was readable). */
int __must_check ioreq_attach(struct ioreq_domain *io, int sock);

/* A guest access from vCPU `vcpu` (kind DM_RANGE_PIO or _MMIO; size 1, 2,
 * 4 or 8).  Writes pass *data; reads fill it.  0: the device answered;
 * -EIO: it failed (cut off, or answered an error) and *data is all ones
 * for a read; -ENOENT: no server claims addr. */
int __must_check ioreq_access(struct ioreq_domain *io, unsigned vcpu,
                              unsigned kind, uint64_t addr, unsigned size,
                              bool write, uint64_t *data);

/* I1, I2: at the end of a hypercall.  If the p2m's flag is set, clear it,
 * announce the map's changes and broadcast INVALIDATE; then wait for every
 * live server to acknowledge the newest generation (or be cut).  Cheap
 * when there is no server.  Returns 0, or -ETIMEDOUT if a server had to be
 * cut (the wait still ended). */
int ioreq_end_hypercall(struct ioreq_domain *io);
/* Announce gfns added to the p2m since the last MAP (after populate). */
int ioreq_sync_map(struct ioreq_domain *io);

/* Save / restore a server's device state (for migration): *len bytes
 * (<= DM_STATE_MAX) into buf. */
int __must_check ioreq_save(struct ioreq_domain *io, unsigned server,
                            void *buf, uint32_t *len);
int __must_check ioreq_restore(struct ioreq_domain *io, unsigned server,
                               const void *buf, uint32_t len);

/* QUIESCE (on) or resume (off) a server: on return with 0 it has finished
 * or failed every request in flight, its writes to guest memory are in the
 * dirty log (its DIRTY messages come before its QUIESCED), and it starts
 * no DMA into guest memory until resumed.  -EIO if it is cut off, did not
 * answer within the timeout (it is then cut off) or failed. */
int __must_check ioreq_quiesce(struct ioreq_domain *io, unsigned server,
                               bool on);

/* The server is memvisor's child process pid (I6). */
int __must_check ioreq_set_child(struct ioreq_domain *io, unsigned server,
                                 pid_t pid);
/* Cut a server off (as if it had misbehaved) with reason. */
void ioreq_cut(struct ioreq_domain *io, unsigned server, const char *reason);
/* Server facts (for the control socket and tests). */
int __must_check ioreq_server_info(struct ioreq_domain *io, unsigned server,
                                   enum ioreq_state *state, char *name,
                                   char *reason, size_t reason_len);
void ioreq_get_stats(struct ioreq_domain *io, struct ioreq_stats *out);
/* The ranges server claims (out: DM_MAX_RANGES entries); how many, or
 * -ENOENT. */
int ioreq_server_ranges(struct ioreq_domain *io, unsigned server,
                        struct dm_range *out);

#endif
