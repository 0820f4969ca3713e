/*
 * migrate.h - save and restore of a PV domain through a stream: live
 * pre-copy rounds driven by the dirty log, the final paused round, page
 * tables normalised (mfn -> pfn) on save and localised (pfn -> new mfn) on
 * restore.  The same code writes a snapshot to a file and a live
 * migration to a socket.
 *
 * The engine knows domains only through two operation tables that the
 * hypervisor fills (src/hv/migrate.c): struct migrate_source (a running
 * domain: pause, dirty harvest, the guest's p2m, honest page types, frame
 * contents, vCPU state) and struct migrate_target (a domain being built
 * from a stream: frames populated on demand, then finished: m2p, the
 * guest's p2m list, pins, base pointers, vCPUs).  Tests drive the engine
 * with test doubles of these tables as well as with real domains.
 *
 * The save state machine (migrate_save()):
 *
 *      SETUP --live--> LIVE(1) -> LIVE(2) -> ... -> LIVE(n) --+
 *        |                                                     |
 *        +--not live-----------------------------------------> FINAL --> DONE
 *                                              (any error) --> FAILED
 *
 *   SETUP  headers, DOMAIN, PV_P2M_FRAMES; every pfn marked to send.
 *   LIVE   the guest runs.  Send what is marked, then harvest the dirty
 *          log (each harvest hands out what was written since the last
 *          one, DESIGN invariant 6) to mark the next round.  A page that
 *          cannot be normalised now (an entry naming a frame outside the
 *          domain's pseudo-physical map: a racing update, a type change
 *          mid-copy) or has no frame is DEFERRED: not sent, marked again.
 *          Leaves for FINAL when the estimated downtime (pages marked x
 *          page size / bandwidth measured in the last round) is at most
 *          the target, or after max_rounds.
 *   FINAL  the vCPUs are paused (quiesced: no deferred put, no partially
 *          validated frame, every vCPU at a clean point; else resumed and
 *          paused again, up to MIGRATE_QUIESCE_TRIES), then the device
 *          models are quiesced (devices_quiesce: in-flight requests ended,
 *          their writes in the dirty log, no more DMA).  Sent: what the last
 *          harvest marks, every deferred page, and every page whose type
 *          differs from the one last sent.  The same normalisation error
 *          is now FATAL: the migration fails and the source resumes.
 *          Then SHARED_INFO, PV_VCPU, DEVICE, END.
 *
 * A parallel stream (opts.extra) runs each round's sending on a lane per
 * connection (the caller's thread is lane 0, the main connection): lanes
 * take chunks of the round's pfns, write their own PAGE_DATA records and
 * end the round with a BARRIER; everything else stays on the main
 * connection.  The restore reads each connection on its own thread and
 * applies nothing of round r+1 before every connection has passed its
 * BARRIER r (docs/stream.md, "Parallel streams").
 *
 * The state machine itself decides the round (save->final), never a pause
 * flag of the domain.  migrate_save() leaves the source running in every
 * case (resumed after FINAL); the caller decides what happens to it.
 *
 * Invariants:
 *  M1. (DESIGN 9) After a successful restore every pfn holds the source's
 *      contents at its final pause, page tables with localised entries;
 *      every table validated or pinned there is validated or pinned here;
 *      no page whose last type was not a page table was rewritten.
 *  M2. Every page is normalised from the type the page-frame info query
 *      reports (honest: a table only while validated or pinned).
 *  M3. The source keeps at most a few bits per guest page (dirty, deferred,
 *      the type last sent) and bounded buffers: no copy of guest memory.
 *  M4. A restore that fails leaves nothing behind: the target's abort
 *      destroys the domain it created (frames, slots, vCPUs).
 *
 * Locking: one thread runs a save or a restore; the source's operations
 * are called from it (the domain's vCPUs run meanwhile in LIVE).  A
 * parallel stream adds a thread per extra connection: a save's sender
 * threads call pfn_to_mfn, mfn_to_pfn, types, page and hole concurrently
 * (read-only lookups, safe against each other and the vCPUs); a restore's
 * reader threads call populate (serialised by the engine) and page.
 *
 * Errors: the stream's (stream.h), -ERANGE (an unnormalisable page in the
 * final round, or a pfn that cannot be localised), -EAGAIN (the domain
 * never quiesced), -ETIMEDOUT, -ECANCELED (the source stopped), -ENOMEM,
 * the operations' own -errno; err says which page or record and why.
 */
#ifndef MEMVISOR_MIGRATE_MIGRATE_H
#define MEMVISOR_MIGRATE_MIGRATE_H

#include <stdbool.h>
#include <stdint.h>

#include "lib/compiler.h"
#include "migrate/stream.h"

#define MIGRATE_MAX_ROUNDS 30
#define MIGRATE_QUIESCE_TRIES 2000

/* A running domain, as the save engine sees it (all in pfn terms except
 * where an mfn is named). */
struct migrate_source {
    void *arg;
    struct stream_domain dom; /* kind, nr_vcpus, nr_pages, va's */
    /* Pause every vCPU at a clean point: 0 (paused), -EAGAIN (not
     * quiescent now: the source resumed itself; try again), -ECANCELED
     * (the domain stopped). */
    int (*pause)(void *arg);
    void (*resume)(void *arg);
    /* Set the bit of every pfn written since the last harvest. */
    int (*harvest)(void *arg, uint64_t *pfn_bitmap);
    /* The guest's p2m: pfn -> mfn of a frame the domain owns whose m2p
     * entry is that pfn; -ENOENT if none (ballooned out, or a lie). */
    int (*pfn_to_mfn)(void *arg, uint64_t pfn, uint64_t *mfn);
    /* Normalisation: mfn -> pfn, STREAM_PFN_SHARED_INFO for the shared
     * info frame; -ERANGE if the frame is not in the domain's
     * pseudo-physical map. */
    int (*mfn_to_pfn)(void *arg, uint64_t mfn, uint64_t *pfn);
    /* Honest page types (PFINFO words) of n frames. */
    int (*types)(void *arg, const uint64_t *mfns, unsigned n, uint32_t *info);
    /* The frame's contents (read in place). */
    const void *(*page)(void *arg, uint64_t mfn);
    /* Optional: true if the frame was never written (reads as zeros);
     * lets the save skip reading it, which would make the host allocate
     * memory for it. */
    bool (*hole)(void *arg, uint64_t mfn);
    /* The pfns of the frames of the guest's p2m list. */
    int (*p2m_frames)(void *arg, uint64_t *pfns, uint64_t n);
    /* Paused: vCPU i's state, base pointers as mfns (STREAM_PFN_NONE:
     * none); the engine turns them into pfns. */
    int (*vcpu)(void *arg, unsigned i, struct stream_pv_vcpu *out);
    int (*shared_info)(void *arg, void *page);
    /* HVM (dom.kind STREAM_DOMAIN_HVM) instead of p2m_frames, vcpu and
     * shared_info, paused: the platform's and vCPU i's state. */
    int (*hvm_platform)(void *arg, struct stream_hvm_platform *out);
    int (*hvm_vcpu)(void *arg, unsigned i, struct stream_hvm_vcpu *out);
    /* Optional, paused: quiesce (on) or resume every device model of the
     * domain.  Quiesced, a device model has finished or failed every
     * request in flight, its writes to guest memory are in the dirty log,
     * and it starts no DMA into guest memory until resumed.  The number
     * quiesced, or -errno with err set (those already quiesced are
     * resumed). */
    int (*devices_quiesce)(void *arg, bool on, char *err, size_t errlen);
    /* Optional, paused: the state of every device model of the domain,
     * each given to emit (a DEVICE record); an error fails the save. */
    int (*devices)(void *arg,
                   int (*emit)(void *ctx, const struct stream_device *dv,
                               const void *state, uint32_t len),
                   void *ctx, char *err, size_t errlen);
};

struct migrate_restored;

/* A domain being built from a stream. */
struct migrate_target {
    void *arg;
    /* Make the (empty) domain the stream describes. */
    int (*create)(void *arg, const struct stream_domain *dom, char *err,
                  size_t errlen);
    /* The frame of pfn, allocated on first use (on the destination its
     * mfn differs from the source's). */
    int (*populate)(void *arg, uint64_t pfn, uint64_t *mfn);
    void *(*page)(void *arg, uint64_t mfn);
    uint64_t (*shared_info_mfn)(void *arg);
    /* Everything has arrived: set the m2p and the guest's p2m list, pin,
     * set the vCPUs (base pointers as mfns), make the domain runnable. */
    int (*finish)(void *arg, const struct migrate_restored *st, char *err,
                  size_t errlen);
    /* Undo create and everything since (M4). */
    void (*abort)(void *arg);
    /* Optional: a device model's state (a DEVICE record), kept for the
     * device model that takes it once attached; NULL: such a stream is
     * refused. */
    int (*device)(void *arg, const struct stream_device *dv,
                  const uint8_t *state, uint32_t len, char *err,
                  size_t errlen);
};

/* What the restore hands to finish(). */
struct migrate_restored {
    struct stream_domain dom;
    const uint64_t *p2m;   /* pfn -> mfn (MIGRATE_NO_MFN: never arrived) */
    const uint8_t *types;  /* pfn -> the last type sent (STREAM_TYPE_*) */
    const uint64_t *p2m_frames; /* pfns of the guest's p2m list */
    uint64_t nr_p2m_frames;
    const uint8_t *shared_info; /* 4096 bytes */
    struct stream_pv_vcpu *vcpus; /* dom.nr_vcpus, bases already mfns */
    /* HVM: the platform and dom.nr_vcpus vCPUs (the PV fields unset) */
    const struct stream_hvm_platform *hvm_platform;
    const struct stream_hvm_vcpu *hvm_vcpus;
};
#define MIGRATE_NO_MFN (~0ULL)

struct migrate_round {
    unsigned round;
    bool final;
    uint64_t pages;    /* pages sent (data, zero or XTAB words) */
    uint64_t zero;     /* of which zero pages (data elided) */
    uint64_t deferred; /* pages deferred to a later round */
    uint64_t dirtied;  /* pages the harvest after it marked */
    uint64_t bytes;    /* stream bytes written */
    uint64_t start_ns, ns; /* since the save began; how long */
};

struct migrate_stats {
    uint64_t total_ns, downtime_ns; /* downtime: paused until END sent */
    /* CLOCK_MONOTONIC when the final pause began (0: never), for callers
     * that wait for the destination: the guest runs nowhere from then
     * until the destination resumes it. */
    uint64_t paused_at_ns;
    uint64_t bytes, raw_bytes;      /* on the wire; before compression */
    uint64_t pages, zero_pages, deferred;
    unsigned rounds;
    uint64_t bandwidth; /* bytes/s measured in the last live round */
    uint64_t quiesce_tries;
    unsigned devices; /* device models whose state was sent */
    unsigned connections; /* the stream's connections (1: not parallel) */
    unsigned devices_quiesced; /* device models quiesced at the final pause */
    /* what the save allocated: 2 bits and a byte per page (to send,
     * deferred, type last sent), one record's page buffer and zstd's per
     * connection */
    uint64_t mem_bytes;
    struct migrate_round round[MIGRATE_MAX_ROUNDS + 1];
};

struct migrate_progress {
    unsigned round;
    bool final;
    uint64_t pages_left;
    uint64_t bytes_per_s;
    uint64_t est_downtime_ms;
};

struct migrate_save_opts {
    bool live;
    bool zstd;
    unsigned max_rounds;     /* live rounds before FINAL (1..30; 0: 8) */
    uint64_t downtime_ms;    /* target (0: 300) */
    void (*progress)(void *arg, const struct migrate_progress *p);
    void *progress_arg;
    /* On success, leave the source paused at its final pause, its device
     * models quiesced (the caller resumes both, devices first, or destroys
     * it: a migration waits for the destination's word first).  On
     * failure the source is always resumed, its device models first. */
    bool leave_paused;
    /* A parallel stream (docs/stream.md, "Parallel streams"): nr_extra
     * more connections, open, whose page data the save spreads with the
     * main one's (chan), one sender thread each; the control records stay
     * on chan.  0: one connection, the stream exactly as ever.  At most
     * STREAM_CHANNELS_MAX - 1.  The engine writes to them and shuts them
     * down if one fails; the caller closes them. */
    struct stream_chan *const *extra;
    unsigned nr_extra;
    /* Test only: the final round defers an unnormalisable page as a live
     * round does (the rule switched off; such a page is then lost). */
    bool test_no_final_rule;
    /* Test only: the final round does not quiesce the device models (a
     * DMA still running after the final harvest is then lost). */
    bool test_no_device_quiesce;
    /* Test only: the final round does not resend pages whose type changed
     * since they were last sent (a table devalidated and not written since
     * then arrives as a table, localised). */
    bool test_no_type_resend;
    /* Test only: called after each live round's harvest, before the next
     * round or the final pause (final_next), so that a test can let a
     * slow guest move on, or pick the moment of the final pause. */
    void (*test_between_rounds)(void *arg, unsigned round, bool final_next);
    void *test_arg;
};

int __must_check migrate_save(const struct migrate_source *src,
                              struct stream_chan *chan,
                              const struct migrate_save_opts *opts,
                              struct migrate_stats *stats, char *err,
                              size_t errlen);

struct migrate_restore_stats {
    uint64_t pages, records, bytes, localised_tables, populated_early;
    uint64_t devices; /* device-model states kept for their models */
    unsigned connections; /* connections read (1: not a parallel stream) */
    uint64_t ns;
    /* what the restore allocated beyond the domain: 9 bytes and a bit per
     * page (its p2m, the types, what holds data), the vCPU records, the
     * reader's two record buffers (the second for zstd) */
    uint64_t mem_bytes;
};

int __must_check migrate_restore(const struct migrate_target *dst,
                                 struct stream_chan *chan,
                                 struct migrate_restore_stats *stats,
                                 char *err, size_t errlen);

struct migrate_restore_opts {
    /* A parallel stream: the next extra connection (an fd the engine reads
     * on a thread of its own and closes), or -errno with err filled.  The
     * caller bounds the wait (and every read of the fd: SO_RCVTIMEO).
     * NULL: a parallel stream is refused. */
    int (*accept)(void *arg, char *err, size_t errlen);
    void *accept_arg;
    /* Test only: no per-round barrier (and no check that a pfn comes once
     * a round): a page's copies from two rounds may land in either order. */
    bool test_no_barrier;
};

/* migrate_restore() with options.  A parallel stream is read on a thread
 * per connection; the target's populate() is then called under a lock of
 * the engine's, page() from any of the threads.  On a failure every
 * connection's read side is shut down (the caller's chan too: its write
 * side stays, for the destination's word). */
int __must_check migrate_restore_opts(const struct migrate_target *dst,
                                      struct stream_chan *chan,
                                      const struct migrate_restore_opts *opts,
                                      struct migrate_restore_stats *stats,
                                      char *err, size_t errlen);

/* The summary as one JSON object (no newline) in buf. */
int migrate_stats_json(const struct migrate_stats *s, char *buf, size_t len);

#endif
