/*
 * vcpu.h - vCPU threads: one thread per vCPU running the KVM run loop, and
 * pausing, resuming and stopping all vCPUs of a domain together.
 *
 * Owns: struct vcpu (a KVM vCPU, its thread, its exit statistics) and
 * struct vcpu_group (the vCPUs of one domain and their pause/stop state).
 * What an exit means is not decided here: every exit except the fatal ones
 * goes to the group's exit handler (the hypervisor's PV or HVM logic).
 *
 * Fatal exits crash the domain alone: KVM_EXIT_INTERNAL_ERROR (an
 * instruction the KVM could not emulate), FAIL_ENTRY, SHUTDOWN (triple
 * fault), an unknown exit, or a handler returning -errno.  The group then
 * stops every vCPU and keeps a diagnostic text: exit reason, registers,
 * segment state and the bytes KVM reported (for an emulation failure, the
 * faulting instruction's bytes).  Nothing a guest does can end the process.
 * KVM_RUN's -EINTR (a kick) and -EAGAIN (an HVM application processor that
 * waited in KVM took its INIT/SIPI) are not exits: the thread runs again.
 *
 * Invariants:
 *  V1. A vCPU thread runs KVM_RUN only while it is online and the group is
 *      neither paused nor stopped (checked under the group lock just before
 * each run; a pause or stop that comes later kicks it out: kvm.h K4). V2.
 * vcpu_group_pause() returns only when every live vCPU thread is parked between
 * exits (its last exit fully handled), so guest memory, registers and every
 * hypervisor structure it touches are quiescent. V3. Once stopped, a group
 * never runs again; group->exit_code and group->diag say why (crash or guest
 * shutdown). V4. TLB flushes (vcpu_group_flush()).  A vCPU runs guest code only
 *      between setting in_guest and clearing it after KVM_RUN returns, and
 *      sets in_guest before it reads flush_req (both seq_cst), so a
 *      requester that sets flush_req and then reads in_guest false knows
 *      the vCPU will see the request before it runs guest code again.  A
 *      vCPU that sees flush_req clears it, has the group's flush_fn make
 *      its next entry flush its whole TLB, and only then publishes
 *      flush_time = ++clock: its flush began after every stamp below that
 *      value (frame.h F12).  vcpu_group_flush() returns only when every
 *      vCPU it names has flushed since the stamp, or is out of guest mode
 *      with the request pending.
 *
 * V5. Events (vcpu_request_event()).  As V4's handshake: a requester sets
 *      event_req, then kicks the vCPU if it is in guest mode; the vCPU
 *      reads event_req after setting in_guest, so before it runs guest code
 *      again it has cleared the request and called the group's event_fn
 *      (which may change its registers to deliver the event).
 *
 * Locking: group->lock protects the pause count, the parked count, the
 * stop state and the diagnostics; vCPU threads take it only between exits.
 * Statistics are relaxed atomics.
 *
 * Errors: -errno from KVM (vcpu_group_start), -EINVAL.
 */
#ifndef MEMVISOR_VCPU_VCPU_H
#define MEMVISOR_VCPU_VCPU_H

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "kvm/kvm.h"
#include "lib/compiler.h"

#define VCPU_MAX 64
#define VCPU_DIAG_SIZE 2048
#define VCPU_KICK_SIGNAL (SIGRTMIN + 3)

struct vcpu;

/* What an exit handler says. */
enum {
    VCPU_CONTINUE = 0, /* run the vCPU again */
    VCPU_SHUTDOWN = 1, /* the guest asked to stop: stop the whole group */
    VCPU_PARK = 2,     /* this vCPU is done (e.g. it went down) */
};

/* Make v's next KVM_RUN flush all of its TLB before any guest instruction
 * (called by v's own thread just before that run): 0 or -errno (crash). */
typedef int (*vcpu_flush_fn)(struct vcpu *v, void *opaque);

/* Handle one exit of v (kvm_vcpu_exit() says which); VCPU_* or -errno (crash,
 * after writing a reason with vcpu_group_crash() or not). */
typedef int (*vcpu_exit_fn)(struct vcpu *v, void *opaque);
/* Append a guest-specific description to a crash report (bytes at RIP). */
typedef void (*vcpu_diag_fn)(struct vcpu *v, char *buf, size_t len,
                             void *opaque);

struct vcpu_stats {
    _Atomic uint64_t exits, io, mmio, hlt, intr, other;
    _Atomic uint64_t flushes; /* TLB flushes made at a request (V4) */
};

struct vcpu {
    struct vcpu_group *group;
    unsigned id;
    struct kvm_vcpu kvm;
    pthread_t thread;
    bool thread_started;
    bool parked_for_good; /* VCPU_PARK: this thread has left */
    bool online;          /* runs only once online (group lock) */
    bool entered;         /* has run guest code (its TLB may hold some) */
    struct vcpu_stats stats;
    /* V4: the TLB-flush handshake. */
    _Atomic bool in_guest;
    _Atomic bool flush_req;
    _Atomic uint64_t flush_time;
    /* V5: an event (an interrupt for the guest) may be due. */
    _Atomic bool event_req;
};

/* What flush requests cost (vcpu_group_flush()). */
struct vcpu_flush_stats {
    _Atomic uint64_t requests; /* calls */
    _Atomic uint64_t filtered; /* vCPUs left alone: flushed since the stamp */
    _Atomic uint64_t flagged;  /* vCPUs out of guest mode: flag only */
    _Atomic uint64_t kicked;   /* vCPUs kicked out of guest mode */
    _Atomic uint64_t wait_ns;  /* time spent waiting for kicked vCPUs */
};

struct vcpu_group {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    unsigned nr;
    struct vcpu *vcpus[VCPU_MAX];
    vcpu_exit_fn exit_fn;
    vcpu_diag_fn diag_fn;
    void *opaque;

    unsigned pause_count; /* nested pause requests */
    unsigned nr_parked;   /* threads waiting (paused or offline) */
    unsigned nr_live;     /* threads not yet returned */
    _Atomic bool pausing; /* fast check for long operations */
    bool stopped;
    bool crashed;
    int exit_code; /* guest's shutdown code or -errno of a crash */
    char diag[VCPU_DIAG_SIZE];

    /* V4: set by vcpu_group_set_flush(); without it requests are no-ops. */
    _Atomic uint64_t *tlb_clock;
    vcpu_flush_fn flush_fn;
    struct vcpu_flush_stats flush_stats;
    /* V5: set by vcpu_group_set_event(); without it requests are no-ops. */
    vcpu_flush_fn event_fn;
};

int __must_check vcpu_group_init(struct vcpu_group *g, vcpu_exit_fn exit_fn,
                                 vcpu_diag_fn diag_fn, void *opaque);
void vcpu_group_fini(struct vcpu_group *g);

/* Create KVM vCPU `id` of vm in v (not yet running) and add it to g. */
int __must_check vcpu_create(struct vcpu_group *g, struct vcpu *v,
                             struct kvm_vm *vm, unsigned id);
void vcpu_destroy(struct vcpu *v);

/* Let v run (a vCPU is created offline; a guest brings others up). */
void vcpu_set_online(struct vcpu *v);

/* Start a thread per vCPU. */
int __must_check vcpu_group_start(struct vcpu_group *g);
/* Wait until every thread returned (the group stopped). */
void vcpu_group_join(struct vcpu_group *g);

/* Pause (nests) and resume all vCPUs (V2). */
void vcpu_group_pause(struct vcpu_group *g);
void vcpu_group_resume(struct vcpu_group *g);
/* A long operation in an exit handler polls this to yield (continuation). */
bool vcpu_pause_pending(const struct vcpu *v);

/* Stop every vCPU: the guest's shutdown (code) or a crash (diag text). */
void vcpu_group_stop(struct vcpu_group *g, int code);
void vcpu_group_crash(struct vcpu_group *g, struct vcpu *v, const char *fmt,
                      ...) __printf(3, 4);
bool vcpu_group_stopped(struct vcpu_group *g);

/* Events (V5): fn runs on v's thread before its next entry after a
 * request (0 or -errno: crash).  Set before vcpu_group_start(). */
void vcpu_group_set_event(struct vcpu_group *g, vcpu_flush_fn fn);
/* From any thread: v's event_fn runs before v runs guest code again. */
void vcpu_request_event(struct vcpu *v);
/*
 * TLB flushes (V4).  clock is the frames' TLB clock (frame.h F12); fn
 * makes a vCPU's next entry flush.  Set before vcpu_group_start().
 */
void vcpu_group_set_flush(struct vcpu_group *g, _Atomic uint64_t *clock,
                          vcpu_flush_fn fn);
/*
 * Every vCPU of g in mask (bit i: g->vcpus[i]) whose last flush began at
 * or before stamp flushes before it runs guest code again; returns when
 * that is certain (kicking the ones in guest mode and waiting until they
 * are out).  self (may be NULL) is the calling vCPU: it is out of guest
 * mode, so it is only flagged.  Never waits for a vCPU to do anything but
 * leave KVM_RUN, so it may be called with any lock held.
 */
void vcpu_group_flush(struct vcpu_group *g, uint64_t mask, uint64_t stamp,
                      struct vcpu *self);

/* Check V1-V3 bookkeeping: 0 or -EUCLEAN. */
int __must_check vcpu_group_check(struct vcpu_group *g);

#endif
