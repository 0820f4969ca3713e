/*
 * kvm_util.h - small helpers for tests that run guest code on real KVM, in
 * the manner of the KVM selftests: vm_create_with_one_vcpu() builds a VM
 * whose vCPU runs one routine of the embedded guest payload in ring 3 of
 * 64-bit long mode.
 *
 * Guest layout (the "system slot", KVM slot 0, guest-physical 0 to
 * KVMTEST_SYS_SIZE, anonymous host memory owned by the helper):
 *
 *   0x1000  GDT: 0x08 ring-0 code64, 0x10 ring-0 data, 0x18 ring-3 code32,
 *           0x20 ring-3 data, 0x28 ring-3 code64, 0x30 TSS
 *   0x2000  TSS with an I/O bitmap that allows every port (ring-3 port I/O
 *           to KVMTEST_UCALL_PORT is how the guest talks to the host)
 *   0x6000  page tables: guest-virtual == guest-physical for the first
 *           KVMTEST_MAP_GIB GiB, 2 MiB pages, user and writable
 *   0xc000  struct kvmtest_args, shared with the host
 *   0x90000 ring-0 stack (the initial iretq frame), 0x80000 ring-3 stack
 *   0x100000 the guest payload
 *
 * There is no IDT: a guest exception ends in a triple fault (a SHUTDOWN
 * exit), which the run helpers report as an error.  Test memory lives in
 * other slots, which the test (usually through src/memslot) creates at
 * guest-physical addresses from 1 GiB up.
 *
 * No globals: everything hangs off struct kvmtest_vm.  Functions return
 * 0 or -errno; tests assert on them.
 */
#ifndef MEMVISOR_TESTS_KVM_UTIL_H
#define MEMVISOR_TESTS_KVM_UTIL_H

#include <stdint.h>

#define KVMTEST_SYS_SIZE (4ULL << 20)
#define KVMTEST_GDT_GPA 0x1000ULL
#define KVMTEST_TSS_GPA 0x2000ULL
#define KVMTEST_PT_GPA 0x6000ULL
#define KVMTEST_ARGS_GPA 0xc000ULL
#define KVMTEST_STACK3_GPA 0x80000ULL
#define KVMTEST_STACK0_GPA 0x90000ULL
#define KVMTEST_CODE_GPA 0x100000ULL
#define KVMTEST_MAP_GIB 4
#define KVMTEST_TEST_GPA (1ULL << 30)

#define KVMTEST_UCALL_PORT 0x1000
#define KVMTEST_UCALL_SYNC 1
#define KVMTEST_UCALL_DONE 2

#define KVMTEST_MAX_OPS 256

/* The argument page the guest reads (and counts writes into). */
struct kvmtest_args {
    uint64_t iteration;       /* dirty writer: value to write */
    uint64_t base;            /* guest-virtual base of the test region */
    uint64_t npages;          /* pages in the test region */
    uint64_t seed;            /* guest RNG seed */
    uint64_t writes_per_sync; /* dirty writer: stores between SYNCs */
    uint64_t writes;          /* stores made so far (guest counts) */
    uint64_t nr_ops;          /* store list: entries in ops[] */
    struct {
        uint64_t addr;
        uint64_t value;
        uint32_t len; /* 1, 2, 4 or 8 */
        uint32_t pad;
    } ops[KVMTEST_MAX_OPS];
};

#ifndef KVMTEST_GUEST

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>

#include "kvm/kvm.h"

/* Guest routines (kvm_util_guest.c), by name. */
enum kvmtest_guest_fn {
    GUEST_DIRTY_WRITER,
    GUEST_STORE_LIST,
    GUEST_SYNC_LOOP,
    GUEST_STRIDE_WRITER,
};

struct kvmtest_vm;

/* Probe KVM for the dirty-log mode it offers: the ring of ring_bytes when
 * ring is asked for and offered, else the best bitmap mode. */
int kvmtest_vm_config(struct kvm_vm_config *cfg, bool ring, uint32_t ring_bytes);

/* Exit hooks: return 0 when handled (the vCPU re-enters), -errno to stop. */
struct kvmtest_hooks {
    /* KVM_EXIT_MMIO: a store or load to a gpa without a writable slot. */
    int (*mmio)(void *opaque, uint64_t gpa, uint8_t *data, uint32_t len,
                bool is_write);
    /* KVM_EXIT_DIRTY_RING_FULL: harvest and reset the rings. */
    int (*ring_full)(void *opaque);
    void *opaque;
};

struct kvmtest_vcpu {
    struct kvm_vcpu k;
    struct kvmtest_vm *vm;
    /* statistics */
    uint64_t nr_exits, nr_mmio, nr_ring_full, nr_kicks;
};

struct kvmtest_vm {
    struct kvm_sys sys;
    struct kvm_vm vm;
    uint8_t *sysmem; /* the system slot, KVMTEST_SYS_SIZE bytes */
    struct kvmtest_vcpu vcpu;
    struct kvmtest_hooks hooks;
};

/* The guest's argument page as the host sees it. */
static inline struct kvmtest_args *kvmtest_args(struct kvmtest_vm *vm)
{
    return (struct kvmtest_args *)(vm->sysmem + KVMTEST_ARGS_GPA);
}

/*
 * Open KVM (through ops, NULL for the real one), create a VM with cfg (NULL:
 * the best bitmap mode), its system slot, and one vCPU set up to run fn in
 * ring 3.  *out is malloc'ed; free with kvmtest_vm_free().
 */
int vm_create_with_one_vcpu(struct kvmtest_vm **out,
                            enum kvmtest_guest_fn fn,
                            const struct kvm_vm_config *cfg,
                            const struct kvm_ops *ops);
void kvmtest_vm_free(struct kvmtest_vm *vm);
/* Point the vCPU at fn again, with a fresh ring-3 stack. */
int kvmtest_vcpu_reset(struct kvmtest_vm *vm, enum kvmtest_guest_fn fn);

/*
 * Run until the guest makes a ucall: 0 with code and arg set, -EINTR when
 * kicked, -errno on an unexpected exit (printed to stderr).  MMIO and
 * ring-full exits go to the hooks and the vCPU re-enters.
 */
int kvmtest_run_ucall(struct kvmtest_vm *vm, uint64_t *code, uint64_t *arg);

/*
 * A vCPU thread for concurrent tests: runs the guest, and parks at a SYNC
 * whenever the controller asked it to stop; pause/resume from another thread.
 */
struct kvmtest_runner {
    struct kvmtest_vm *vm;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool stop_req;  /* park at the next SYNC */
    bool pause_req; /* park as soon as possible (kicked) */
    bool parked;    /* the vCPU thread is parked */
    bool parked_at_sync; /* ... at a SYNC (not in the middle of its loop) */
    bool done;      /* the guest reported DONE */
    bool exited;    /* the thread left its loop */
    bool quit;      /* leave the thread */
    int error;      /* first error the thread met */
    uint64_t syncs;
};

/* Start the vCPU thread (installs the kick signal). */
int kvmtest_runner_start(struct kvmtest_runner *r, struct kvmtest_vm *vm);
/* Ask the vCPU to park at its next SYNC and wait until it has. */
int kvmtest_runner_stop(struct kvmtest_runner *r);
/* Let a parked vCPU go on. */
void kvmtest_runner_resume(struct kvmtest_runner *r);
/* Kick out of KVM_RUN and park at once (not at a SYNC): a pause. */
int kvmtest_runner_pause(struct kvmtest_runner *r);
/* End a pause (a vCPU also stopped at a SYNC stays parked). */
void kvmtest_runner_unpause(struct kvmtest_runner *r);
/* Stop and join the thread; returns the thread's error. */
int kvmtest_runner_join(struct kvmtest_runner *r);

#define KVMTEST_KICK_SIGNAL SIGUSR1

/*
 * Failure injection at the KVM boundary: kvmtest_fault_ops() forwards every
 * call to the real table, except that after kvmtest_fault_arm(op, n, err)
 * the n-th call of family op from then on (n >= 1) returns err instead of
 * reaching the kernel.  One process-wide fixture (test programs only).
 */
enum kvmtest_op {
    KVMTEST_OP_OPEN, KVMTEST_OP_SYS, KVMTEST_OP_CPUID, KVMTEST_OP_ENABLE_CAP,
    KVMTEST_OP_SET_REGION, KVMTEST_OP_GET_LOG, KVMTEST_OP_CLEAR_LOG,
    KVMTEST_OP_RESET_RINGS, KVMTEST_OP_CREATE_VCPU, KVMTEST_OP_VM_IOCTL,
    KVMTEST_OP_RUN, KVMTEST_OP_REGS, KVMTEST_OP_SREGS, KVMTEST_OP_SET_CPUID,
    KVMTEST_OP_VCPU_IOCTL, KVMTEST_OP_MAP, KVMTEST_OP_NR
};
const struct kvm_ops *kvmtest_fault_ops(void);
void kvmtest_fault_arm(enum kvmtest_op op, uint64_t nth, int err);
void kvmtest_fault_disarm(void);
/* Calls of family op since the program started. */
uint64_t kvmtest_fault_calls(enum kvmtest_op op);
/* Whether the armed fault has fired. */
bool kvmtest_fault_fired(void);

/*
 * KVM's memory slots as the fault table saw them accepted (slot id <
 * KVMTEST_SHADOW_SLOTS, of the VM created last through it): what KVM holds,
 * to compare with memvisor's view (memslot invariant M3).
 */
#define KVMTEST_SHADOW_SLOTS 512
struct kvmtest_shadow_slot {
    uint32_t flags;
    uint64_t gpa, size, hva; /* size 0: no slot */
};
void kvmtest_shadow_get(struct kvmtest_shadow_slot out[KVMTEST_SHADOW_SLOTS]);

#endif /* !KVMTEST_GUEST */
#endif
