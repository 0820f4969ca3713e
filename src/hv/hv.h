/*
 * hv.h - the hypervisor object and its domains: what `memvisor run`, the
 * control socket and the end-to-end tests drive.
 *
 * Owns: struct hv (the frame pool, /dev/kvm, the domain table, the frame
 * domain that holds the hypervisor's own frames: the shims) and every
 * struct domain (its PV state, shim, KVM VM, vCPU threads, console,
 * statistics).  No globals: everything hangs off struct hv.
 *
 * A domain's life: hv_domain_create() (build: ELF, frames, page tables
 * pinned through pv, shim, vCPUs) -> hv_domain_start() (vCPU threads) ->
 * running <-> paused (hv_domain_pause/resume, nestable) -> stopped (guest
 * shutdown, crash, or hv_domain_shutdown()) -> hv_domain_wait() ->
 * hv_domain_destroy() (page tables relinquished through pv, frames freed).
 *
 * Invariants:
 *  H1. A domain's frames are owned by its frame domain (id = domid); the
 *      shim's frames by HV_FRAME_DOMID, which no guest entry may name.
 *  H2. hv_domain_audit() and hv_domain_pfinfo() run only while the domain
 *      is paused or stopped (they pause it themselves).
 *  H3. A crash stops only that domain: the process and other domains run on.
 *  H4. A continuation of mmu_update or mmuext_op always reaches pv, even
 *      with no request left: pv may hold a call's result back until a
 *      deferred put is drained, and only the call's own re-issue collects
 *      it.  So no operation is answered with another's held-back result
 *      (which would report success for an update never made).
 *
 * Locking: hv->lock protects the domain table.  Per domain, the vCPU group
 * lock (vcpu.h) orders pause/resume/stop; hypercalls of different vCPUs run
 * concurrently, relying on pv's own rules (pv.h: no domain lock).
 *
 * Errors: -ENOMEM, -EINVAL (bad config), -EBUSY (domain table full),
 * -ENOENT (no such domain), errors of boot_build() (reason in the domain's
 * error text), KVM's -errno.
 */
#ifndef MEMVISOR_HV_HV_H
#define MEMVISOR_HV_HV_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "frame/frame.h"
#include "kvm/kvm.h"
#include "lib/compiler.h"

#define HV_MAX_DOMAINS 8
#define HV_FRAME_DOMID (FRAME_MAX_DOMAINS - 1)
#define HV_MAX_VCPUS 16
#define HV_NR_HYPERCALLS 64

struct domain;

struct hv {
    struct frames frames;
    struct kvm_sys kvm;
    pthread_mutex_t lock;
    struct domain *domains[HV_MAX_DOMAINS];
    /* The KVM below shadows guest page tables (KVM-PVM, or no nested
     * paging): host-side page-table writes need the touch loop. */
    bool shadow_mmu;
};

struct hv_domain_config {
    const uint8_t *image; /* the kernel ELF (copied by create) */
    size_t image_size;
    uint64_t mem_mib;
    unsigned nr_vcpus;
    const char *cmdline;
    int console_fd; /* -1: keep only the tail */
};

/* Statistics, also served by the control socket. */
struct hv_domain_stats {
    uint64_t hypercalls[HV_NR_HYPERCALLS];
    uint64_t hypercalls_unknown;
    uint64_t bounces[32];
    uint64_t syscalls;
    uint64_t wpt_emulated;  /* guest stores to page tables applied */
    uint64_t wpt_refused;   /* ... refused and bounced as #PF */
    uint64_t continuations; /* hypercalls re-entered */
    uint64_t exits;
    uint64_t dirty_marked;    /* guest pages memvisor wrote (dirty log) */
    uint64_t touch_overflow;  /* touch-list overflows (docs/pv-on-kvm.md) */
    uint64_t spurious_faults; /* #PF retried: the tables allowed the access */
    /* The XSA-401 safety action and guest flush requests (vcpu.h V4). */
    uint64_t flush_requests; /* calls naming other vCPUs or the caller */
    uint64_t flush_filtered; /* vCPUs spared: flushed since the stamp */
    uint64_t flush_kicked;   /* vCPUs kicked out of the guest to flush */
    uint64_t flush_wait_ns;  /* time requesters waited for kicked vCPUs */
    uint64_t flushes;        /* flushes vCPUs made at a request */
    uint64_t touched_now;    /* entries touched at once (shadow MMU) */
};

/* pool_frames: the machine memory memvisor manages, in 4 KiB frames. */
int __must_check hv_init(struct hv *hv, uint64_t pool_frames);
void hv_fini(struct hv *hv);

int __must_check hv_domain_create(struct hv *hv,
                                  const struct hv_domain_config *cfg,
                                  struct domain **out, char *err,
                                  size_t errlen);
int __must_check hv_domain_start(struct domain *d);
void hv_domain_pause(struct domain *d);
void hv_domain_resume(struct domain *d);
/* Ask the domain to stop as if the guest had powered off with `reason`. */
void hv_domain_shutdown(struct domain *d, int reason);
/* Wait for the domain to stop; returns the process exit status it maps
 * to: 0 poweroff, the shutdown reason otherwise, 70 after a crash. */
int hv_domain_wait(struct domain *d);
bool hv_domain_stopped(struct domain *d);
void hv_domain_destroy(struct domain *d);

domid_t hv_domain_id(const struct domain *d);
unsigned hv_domain_nr_vcpus(const struct domain *d);
/* Crash text (empty unless crashed). */
const char *hv_domain_crash_text(struct domain *d);
/* Console tail (NUL-terminated). */
size_t hv_domain_console(struct domain *d, char *buf, size_t len);
void hv_domain_stats(struct domain *d, struct hv_domain_stats *out);
/* Frame-table audit (pauses the domain unless stopped), and shim_check():
 * 0 or -EUCLEAN with the first error in msg; *tables and *frames count
 * what it saw. */
int __must_check hv_domain_audit(struct domain *d, char *msg, size_t len,
                                 uint64_t *frames, uint64_t *tables);
/* Page-frame info (Xen's PFINFO words) of up to max frames the domain
 * owns, from mfn *cursor on; advances *cursor; returns how many (0: done)
 * or -errno.  max <= 1024.  Pauses the domain unless stopped. */
int __must_check hv_domain_pfinfo(struct domain *d, uint64_t *cursor,
                                  unsigned max, uint64_t *mfns, uint32_t *info);
uint64_t hv_domain_nr_pages(const struct domain *d);
/* Pull KVM's log of the guest's writes into the domain's dirty log and
 * hand out every page logged since the last harvest (the guest's own
 * writes and memvisor's): *pages says how many.  Safe while running; exact
 * while paused (DESIGN invariant 6). */
int __must_check hv_domain_dirty_harvest(struct domain *d, uint64_t *pages);
const char *hv_hypercall_name(unsigned nr);
/* Test only: make pv preempt at every `every`-th check and turn every
 * preemption into a continuation through the guest (0: off). */
void hv_domain_test_preempt(struct domain *d, uint64_t every);
/* Test only: issue hypercall nr with args as vCPU `vcpu` would, from the
 * calling thread, on a domain whose vCPUs are paused or not started; the
 * guest's ring-3 return frame is {rip, rsp}.  Continuations are re-entered
 * at once.  Returns the result the guest would see. */
long hv_domain_test_hypercall(struct domain *d, unsigned vcpu, unsigned nr,
                              const uint64_t args[6], uint64_t rip,
                              uint64_t rsp);
/* Test only: write guest memory at a guest virtual address of vCPU 0's
 * current address space (as a hypercall result would be written). */
int __must_check hv_domain_test_poke(struct domain *d, uint64_t va,
                                     const void *buf, uint64_t len);
/* Test only: never run the shim's touch loop (host-written page-table
 * entries stay invisible to the KVM's shadow MMU). */
void hv_domain_test_no_touch(struct domain *d);
/* Test only: break H4 (a continuation with no request left does not reach
 * pv), to show the workloads catch it. */
void hv_domain_test_skip_empty_reissue(struct domain *d);
/* Test only: switch off the XSA-401 safety action (no vCPU is made to
 * flush its TLB when a frame stops being writable or is freed, and a
 * writable reference dropped by a host-side page-table write is released
 * at once), to show the stale-TLB workload catches it. */
void hv_domain_test_no_tlb_flush(struct domain *d);

#endif
