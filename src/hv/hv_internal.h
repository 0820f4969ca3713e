/*
 * hv_internal.h - what the files of src/hv share: the domain and PV vCPU
 * structures, guest-memory access, the hypercall table.  Never leaves the
 * folder.
 *
 * Headers: this header includes include/xen/xen.h (a vCPU keeps Xen
 * structures: its runstate) but not pv/pv.h (pv objects are reached
 * through pointers); pv.h takes the hypercall ABI from xen.h too.
 */
#ifndef MEMVISOR_HV_HV_INTERNAL_H
#define MEMVISOR_HV_HV_INTERNAL_H

#include <stdatomic.h>

#include "dev/console.h"
#include "lib/errmsg.h"
#include "xen/xen.h"
#include "xenstore/xsd.h"
#include "dirty/dirty.h"
#include "hv/hv.h"
#include "ioreq/ioreq.h"
#include "memslot/memslot.h"
#include "p2m/p2m.h"
#include "shim/shim.h"
#include "vcpu/vcpu.h"

struct pv_domain;
struct pv_vcpu;
struct domain;
struct hvm_domain;

/*
 * A guest kind's operations: what differs between a PV domain (src/hv/pv/)
 * and an HVM one (src/hv/hvm/).  domain.c does the rest: the domain table,
 * the frame budget, the console, the vCPU group's life, the device models,
 * the memory path's teardown, the dirty log, pause and stop.
 *  create: after domain_init_basics(): the kind's state, the VM and its
 *      memory path, the vCPUs (vcpu_group_init() with the exit, diag and
 *      event functions below), the guest's initial state; what it made is
 *      recorded in the domain so that a failure is undone by the teardown.
 *  start: after the vCPU threads started (may be NULL).
 *  vcpus_fini: the vCPUs and what serves them, before the memory path goes.
 *  fini: the kind's own state, after the VM is gone.
 *  audit: the kind's invariants, on a quiescent domain (hv.h H2): 0 or
 *      -EUCLEAN with the first error in msg.
 */
struct hv_domain_config;
struct domain_kind {
    const char *name;
    int (*create)(struct domain *d, const struct hv_domain_config *cfg,
                  char *err, size_t errlen);
    int (*start)(struct domain *d);
    vcpu_exit_fn exit;
    vcpu_diag_fn diag;
    vcpu_flush_fn event;
    void (*vcpus_fini)(struct domain *d);
    void (*fini)(struct domain *d);
    int (*audit)(struct domain *d, char *msg, size_t len, uint64_t *frames,
                 uint64_t *tables);
};

/* A guest trap_info entry as we keep it. */
struct hv_trap {
    uint64_t address; /* 0: none */
    uint8_t flags;    /* DPL bits 0-1, IF bit 2 */
};

/* Event channels (evtchn.c). */
#define HV_EVTCHN_MAX 1024
enum { HV_BACKEND_CONSOLE = 1, HV_BACKEND_STORE = 2 };
struct hv_port {
    uint8_t state;   /* EVTCHNSTAT_* */
    uint8_t virq;    /* EVTCHNSTAT_virq */
    uint8_t backend; /* EVTCHNSTAT_interdomain: HV_BACKEND_* */
    uint8_t pad;
    uint16_t vcpu; /* notified vCPU */
};
struct hv_evtchn {
    pthread_mutex_t lock; /* the ports and the vCPU timers; a leaf */
    pthread_cond_t tcond; /* the timer thread's (CLOCK_MONOTONIC) */
    struct hv_port port[HV_EVTCHN_MAX];
    uint16_t virq_port[HV_MAX_VCPUS][NR_VIRQS];
    pthread_t timer;
    bool created, timer_started, timer_stop;
    _Atomic bool guest_bound; /* the guest bound a virq or an IPI */
    _Atomic uint64_t sent, timer_fired, upcalls;
};

/* The xenstore ring's server (xs.c) around the store (xenstore/xsd.h). */
struct hv_xs {
    pthread_mutex_t lock;
    bool created;
    struct xsd xsd;
};

/* Kernel- and user-mode state of one PV vCPU (Xen's arch.pv). */
struct pvcpu {
    struct domain *d;
    unsigned id;
    struct vcpu vcpu;
    struct pv_vcpu *pv;
    bool initialised; /* has a context (vCPU 0 from the builder) */
    bool up;
    bool gone; /* VCPUOP_down: its thread left for good */
    bool kernel_mode;
    struct hv_trap traps[256];
    uint64_t event_cb, failsafe_cb, syscall_cb;
    uint64_t kernel_ss, kernel_sp;
    uint64_t fs_base, gs_base_kernel, gs_base_user;
    uint64_t vm_assist;
    bool fpu_ts;
#define HV_GDT_FRAMES 14
    uint64_t gdt_frames[HV_GDT_FRAMES]; /* set_gdt (hc_desc.c), recorded */
    unsigned gdt_entries;
    unsigned iopl;                   /* PHYSDEVOP_set_iopl, recorded */
    uint64_t runstate_va;            /* the guest's runstate area, 0: none */
    uint64_t vi_maddr;               /* registered vcpu_info, 0: shared info */
    pthread_mutex_t blk_lock;        /* SCHEDOP_block's wait (evtchn.c) */
    pthread_cond_t blk_cond;
    uint64_t timer_deadline, timer_period; /* system time; evt.lock */
    mfn_t vi_mfn;                    /* its frame, held writable */
    uint64_t tsc_offset;             /* guest TSC - host TSC (time.c) */
    uint32_t time_version;           /* vcpu_time_info updates made */
    struct vcpu_runstate_info runstate;

    /* Per exit: the registers as read, and what to resume with. */
    struct kvm_vcpu_regs regs;
    struct kvm_vcpu_sregs sregs; /* valid when sregs_valid (pvcpu_sregs()) */
    bool sregs_valid;
    bool sregs_dirty;
    uint64_t cr3; /* what CR3 holds: memvisor alone loads it */
    struct shim_frame ret;
    bool retry;               /* re-execute the hypercall (continuation) */
    bool no_result;           /* the handler set rax itself (iret) */
    uint64_t last_error;      /* error code of the exception being handled */
    uint64_t spurious_va;     /* last page fault taken as spurious, and how */
    unsigned spurious_streak; /* many times in a row */

    /* Page-table entries written from the host during this exit, to be
     * stored back by the shim's touch loop (shim.h); each holds a general
     * reference on its frame until the loop is done. */
    uint64_t touch[SHIM_TOUCH_MAX];
    unsigned nr_touch;
    bool want_flush;                  /* run the loop even with no entries */
    struct kvm_vcpu_regs touch_saved; /* the guest's registers meanwhile */
};

/* The guest-readable m2p (m2p.c): data frames and their page tables. */
#define HV_M2P_SLOT 258
#define HV_M2P_VA 0xffff810000000000ULL /* L4 slot 258 */
struct hv_m2p {
    mfn_t data, tables; /* contiguous runs of 2^order frames */
    unsigned data_order, tab_order;
    uint64_t nr_data, nr_l1;
};

struct domain {
    struct hv *hv;
    const struct domain_kind *kind;
    struct hvm_domain *hvm; /* the HVM kind's state (src/hv/hvm/) */
    domid_t id;
    unsigned nr_vcpus;
    uint64_t nr_pages;
    struct pv_domain *pv;
    struct shim shim;
    struct kvm_vm vm;
    struct vcpu_group group;
    struct console console;
    /*
     * The memory path (docs/memory.md): the p2m is the identity over the
     * frames the domain owns (gfn == mfn), memslot presents exactly those
     * to the VM (ids from nr_shim_slots on), and every write memvisor makes
     * to the guest's memory goes through the one accessor (gm_write_phys(),
     * gm_logged()) into the dirty log.  The shim's frames (the hypervisor's)
     * are fixed slots 0 .. nr_shim_slots-1, never logged.
     */
    struct p2m p2m;
    struct memslots ms;
    struct dirty_log dirty;
    bool created_p2m, created_dirty, created_ms;
    /* Device models (dm.c, src/ioreq): set up after the memory path. */
    struct ioreq_domain io;
    bool created_io;
    pthread_mutex_t iomem_lock; /* serialises pv_iomem_grant() */
    /* Device-model states a restore brought (migrate.c), by server index,
     * until the device models attached take them; freed at teardown. */
    uint8_t *mig_dm_state[IOREQ_MAX_SERVERS];
    uint32_t mig_dm_len[IOREQ_MAX_SERVERS];
    uint32_t nr_shim_slots;
    /* memslot's pause hook (mem_pause() in domain.c): while mem_paused, a
     * vCPU about to enter the guest waits in pvcpu_flush(), and one about
     * to run the touch loop at once (pvcpu_touch_now(), a KVM_RUN outside
     * the run loop) waits before it; mem_touching counts those running,
     * which the pause waits out. */
    pthread_mutex_t mem_lock;
    pthread_cond_t mem_cond;
    bool mem_paused;
    unsigned mem_touching;
    bool test_no_dirty_accessor; /* test only: writes are not logged */
    bool test_no_slot_txn;       /* bench only: reservations skip memslot */
    struct hv_m2p m2p;
    struct hv_evtchn evt;
    /* The console and xenstore rings (cons.c, xs.c): guest frames held
     * writable for the domain's life; their event channel ports. */
    mfn_t cons_mfn, store_mfn;
    unsigned cons_port, store_port;
    pthread_mutex_t cons_lock;
    _Atomic uint64_t cons_broken, xs_broken;
    struct hv_xs xs;
    struct pvcpu vcpus[HV_MAX_VCPUS];
    pthread_mutex_t vcpu_op_lock; /* VCPUOP_initialise/up against each other */
    uint64_t p2m_va, start_info_va;
    uint64_t boot_ns; /* CLOCK_MONOTONIC at creation: system time 0 */
    uint64_t tsc_hz, wc_ns; /* time.c: TSC rate; wallclock at time 0 */
    uint32_t tsc_mul, wc_version;
    int8_t tsc_shift;
    mfn_t shared_info_mfn;
    mfn_t l4_mfn;
    uint64_t *boot_p2m; /* copy of the start-of-day p2m (pfinfo) */
    int shutdown_reason;
    bool created_vm, created_group, created_shim, created_pv;
    bool leaked;        /* teardown left frames behind (reported by tests) */
    bool test_preempt;  /* test only: every preemption point is taken */
    bool test_no_touch; /* test only: skip the touch loop (shows it matters) */
    bool test_no_tlb_flush;       /* test only: no XSA-401 safety action */
    bool test_skip_empty_reissue; /* test only: break H4 (hv.h) */
    bool test_no_desc_rule;       /* test only: update_descriptor unchecked */

    _Atomic uint64_t hc_count[HV_NR_HYPERCALLS];
    _Atomic uint64_t hc_ns[HV_NR_HYPERCALLS];
    _Atomic uint64_t hc_unknown;
    _Atomic uint64_t bounces[32];
    _Atomic uint64_t syscalls, wpt_emulated, wpt_refused, continuations;
    _Atomic uint64_t privops;
    _Atomic uint64_t touch_overflow, spurious_faults, touched_now;
};

/* ---- hv_domain_create()'s phases (domain.c), also used to build a
 * domain from a stream (migrate.c).  domain_discard() undoes any prefix of
 * them and frees the domain (d->hv must be set: after
 * domain_init_basics()). */
int __must_check domain_claim(struct hv *hv, const struct hv_domain_config *cfg,
                              struct domain **out, unsigned *out_slot,
                              char *err, size_t errlen);
int __must_check domain_init_basics(struct domain *d, struct hv *hv,
                                    unsigned slot,
                                    const struct hv_domain_config *cfg,
                                    char *err, size_t errlen);
void domain_discard(struct domain *d, unsigned slot);
/* hv.h H2: pause the domain for a query unless it has stopped; true if it
 * was paused (resume it after). */
bool hv_hold_quiescent(struct domain *d);
/* memslot's pause hook for the domain (memslot_set_pause()). */
void hv_mem_pause(void *opaque);
void hv_mem_unpause(void *opaque);
/* migrate.c: pause a running domain for the final round: 0, or
 * -ECANCELED if it stopped (then it is not paused). */
int __must_check hv_migrate_pause(struct domain *d);
/* migrate.c: the DEVICE records' states of the domain arg (a struct
 * domain *), for a source's devices operation of any kind. */
struct stream_device;
int hv_migrate_dm_states(void *arg,
                         int (*emit)(void *ctx, const struct stream_device *dv,
                                     const void *state, uint32_t len),
                         void *ctx, char *err, size_t errlen);
/* migrate.c: QUIESCE (on) or resume the device models of the domain arg
 * (a struct domain *), for a source's devices_quiesce operation of any
 * kind: how many were quiesced, or -errno (none left quiesced). */
int hv_migrate_dm_quiesce(void *arg, bool on, char *err, size_t errlen);
/* migrate.c: what a restore left in the domain, at its teardown. */
void hv_migrate_teardown(struct domain *d);

/* ---- THE accessor for memvisor's writes to the guest's memory (domain.c).
 * gm_write_phys: copy len bytes to machine address maddr (gfn == mfn; RAM
 * of the domain in its p2m), then log the pages (dirty_copy_to_guest()).
 * gm_logged: log a write already made in place by an atomic operation (a
 * page-table entry, a vcpu_info field).  -EFAULT outside the domain. */
int __must_check gm_write_phys(struct domain *d, uint64_t maddr,
                               const void *src, uint64_t len);
void gm_logged(struct domain *d, mfn_t mfn);
/* Wait while a slot update holds the domain's vCPUs out of the guest. */
void hv_mem_pause_wait(struct domain *d);
/* Around a KVM_RUN outside the run loop (pvcpu_touch_now()): wait while a
 * slot update holds the vCPUs, and keep the next one from starting until
 * it is done. */
void hv_mem_run_begin(struct domain *d);
void hv_mem_run_end(struct domain *d);

/* ---- device models (dm.c) */
/* The domain's ioreq side; reserved: the n ranges its platform serves
 * itself, which no device model may claim (ioreq.h I4). */
int __must_check hv_dm_init(struct domain *d, const struct dm_range *reserved,
                            unsigned n);
void hv_dm_fini(struct domain *d);
/* At the end of every hypercall (not of each multicall entry): map
 * updates after a reservation, then invalidate-and-wait (ioreq.h I1). */
void hv_dm_end_hypercall(struct pvcpu *pc, unsigned nr);
/* After a p2m change made outside a hypercall (an HVM domain's slot
 * transactions), with the vCPUs held out of the guest: the device models
 * hear the map's changes, then invalidate-and-wait (ioreq.h I1, I2), so
 * the guest runs on only once no device model maps a frame it lost. */
void hv_dm_p2m_changed(struct domain *d);
/* #GP of the guest kernel: an in/out to a claimed port is forwarded and
 * the instruction completed (*handled); 0 or -errno. */
int __must_check hv_pio_emulate(struct pvcpu *pc, bool *handled);
/* Decode in/out at b[0..2] (0x66 prefix, E4-E7 with an imm8 port, EC-EF
 * with the port in dx): its length, or 0 if it is not one. */
unsigned hv_decode_pio(const uint8_t *b, bool *out, unsigned *size,
                       bool *imm);
/* A KVM MMIO exit outside the domain's RAM: forwarded to the device model
 * claiming gpa (0; a load fills data, all ones if the device failed), or
 * -ENOENT when none does. */
int __must_check hv_mmio_forward(struct pvcpu *pc, uint64_t gpa, uint8_t *data,
                                 uint32_t len, bool write);

/* ---- event channels, upcalls, block, timers (evtchn.c) */
int __must_check evtchn_init(struct domain *d);
int __must_check evtchn_start(struct domain *d); /* the timer thread */
void evtchn_fini(struct domain *d);
void evtchn_set_pending(struct domain *d, unsigned port);
void evtchn_send_virq(struct pvcpu *pc, unsigned virq);
/* A port bound to one of memvisor's backends (HV_BACKEND_*), or -ENOSPC. */
int __must_check evtchn_alloc_backend(struct domain *d, unsigned backend);
bool evtchn_upcall_due(struct pvcpu *pc);
void evtchn_block(struct pvcpu *pc);
long hv_timer_set(struct pvcpu *pc, uint64_t deadline, uint64_t period);
long hc_event_channel_op(struct pvcpu *pc, uint64_t a[6]);
long hc_set_timer_op(struct pvcpu *pc, uint64_t a[6]);
/* The guest notified backend b (HV_BACKEND_*) through its port. */
void hv_backend_kick(struct domain *d, unsigned b);
/* cons.c: the guest wrote to its console ring. */
void hv_cons_kick(struct domain *d);
/* xs.c: the guest wrote to its xenstore ring (or memvisor changed the
 * tree): serve the requests, send replies and watch events. */
void hv_xs_kick(struct domain *d);
int __must_check hv_xs_init(struct domain *d);
void hv_xs_fini(struct domain *d);

/* ---- hypercalls (hypercall.c, hc_mm.c)
 * A handler returns its result or -errno; hc_dispatch_one() converts an
 * error to Xen's value, the one place that does (hc_err() in hypercall.c). */
#define HC_RESTART 1 /* a handler's "re-enter me" (args already updated) */
typedef long (*hc_fn)(struct pvcpu *pc, uint64_t a[6]);
struct hc_entry {
    const char *name;
    hc_fn fn;
};
/* The hypercall in the vCPU's registers (refused with Xen's EPERM from
 * guest user mode); the result, in Xen's values, goes to rax. */
void hypercall_dispatch(struct pvcpu *pc);
/* hc_dispatch_one()'s flags */
#define HC_IN_MULTICALL 0x1u /* an entry of a multicall */
#define HC_FROM_USER 0x2u    /* issued from guest user mode: refused */
/* One hypercall: its result, or Xen's negative error value. */
long hc_dispatch_one(struct pvcpu *pc, unsigned nr, uint64_t a[6],
                     unsigned flags);
long hc_physdev_op(struct pvcpu *pc, uint64_t a[6]);
/* vcpu_op commands other than bring-up (hc_vcpu.c), on target t. */
long hc_vcpu_op_other(struct pvcpu *pc, struct pvcpu *t, unsigned cmd,
                      uint64_t arg);
long hc_vcpu_timer_op(struct pvcpu *pc, struct pvcpu *t, unsigned cmd,
                      uint64_t arg);
uint64_t hv_system_time(const struct domain *d);
/* The console ring's in_cons, in_prod, out_cons, out_prod (cons.c);
 * -ENOENT without a ring. */
int hv_domain_console_state(struct domain *d, uint32_t idx[4]);
/* time.c: measure the TSC; a vCPU's TSC offset; write its vcpu_time_info;
 * write the shared info wallclock. */
void hv_time_init(struct domain *d);
int __must_check hv_time_vcpu_init(struct pvcpu *pc);
void hv_time_update(struct pvcpu *pc);
void hv_wallclock_update(struct domain *d);
void hv_runstate_change(struct pvcpu *pc, int state);

#endif
