/*
 * kvm_util.c - see kvm_util.h.
 */
#include "kvm_util.h"

#include <errno.h>
#include <linux/kvm.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "kvm_util_guest_blob.h"

#define SEL_CODE0 0x08
#define SEL_DATA0 0x10
#define SEL_DATA3 0x23
#define SEL_CODE3 0x2b
#define SEL_TSS 0x30
#define TSS_LIMIT (0x68 + 8192)

static const uint64_t guest_fn_addr[] = {
    [GUEST_DIRTY_WRITER] = KVMTEST_SYM_guest_dirty_writer,
    [GUEST_STORE_LIST] = KVMTEST_SYM_guest_store_list,
    [GUEST_SYNC_LOOP] = KVMTEST_SYM_guest_sync_loop,
    [GUEST_STRIDE_WRITER] = KVMTEST_SYM_guest_stride_writer,
};

static void build_sysmem(uint8_t *m)
{
    uint64_t *gdt = (uint64_t *)(m + KVMTEST_GDT_GPA);
    uint8_t *tss = m + KVMTEST_TSS_GPA;
    uint64_t tss_base = KVMTEST_TSS_GPA;

    gdt[1] = 0x00af9b000000ffffULL; /* ring-0 code64 */
    gdt[2] = 0x00cf93000000ffffULL; /* ring-0 data */
    gdt[3] = 0x00cffb000000ffffULL; /* ring-3 code32 */
    gdt[4] = 0x00cff3000000ffffULL; /* ring-3 data */
    gdt[5] = 0x00affb000000ffffULL; /* ring-3 code64 */
    /* 64-bit available TSS (type 9), present */
    gdt[6] = (TSS_LIMIT & 0xffff) | ((tss_base & 0xffffff) << 16) |
             (0x89ULL << 40) | (((uint64_t)TSS_LIMIT >> 16 & 0xf) << 48) |
             ((tss_base >> 24 & 0xff) << 56);
    gdt[7] = tss_base >> 32;

    uint64_t rsp0 = KVMTEST_STACK0_GPA;
    uint16_t iomap = 0x68;
    memcpy(tss + 4, &rsp0, sizeof(rsp0));   /* rsp0 (unaligned in the TSS) */
    memcpy(tss + 0x66, &iomap, sizeof(iomap)); /* I/O bitmap base */
    memset(tss + 0x68, 0, 8192);                 /* every port allowed */
    tss[0x68 + 8192] = 0xff;

    uint64_t *pml4 = (uint64_t *)(m + KVMTEST_PT_GPA);
    uint64_t *pdpt = (uint64_t *)(m + KVMTEST_PT_GPA + 0x1000);
    pml4[0] = (KVMTEST_PT_GPA + 0x1000) | 7;
    for (uint64_t i = 0; i < KVMTEST_MAP_GIB; i++) {
        uint64_t *pd = (uint64_t *)(m + KVMTEST_PT_GPA + 0x2000 + i * 0x1000);
        pdpt[i] = (KVMTEST_PT_GPA + 0x2000 + i * 0x1000) | 7;
        for (uint64_t j = 0; j < 512; j++)
            pd[j] = ((i * 512 + j) << 21) | 0x87; /* P W U PS */
    }
    memcpy(m + KVMTEST_CODE_GPA, kvmtest_guest_blob, sizeof(kvmtest_guest_blob));
}

static void seg(struct kvm_vcpu_segment *s, uint16_t sel, uint8_t type,
                bool code)
{
    memset(s, 0, sizeof(*s));
    s->selector = sel;
    s->limit = 0xffffffff;
    s->type = type;
    s->present = 1;
    s->s = 1;
    s->dpl = 0;
    s->g = 1;
    s->l = code;
    s->db = !code;
}

/*
 * The type of TR's cached descriptor.  The guest's ring-3 port I/O goes
 * through the TSS I/O bitmap, which the CPU reads only through a TR whose
 * type is a 64-bit TSS.  VMX requires a busy TSS (11) in the guest state
 * (VM entry fails otherwise), and KVM-PVM takes it; SVM checks nothing at
 * VMRUN, but QEMU's emulated SVM (the test VM) reads the bitmap only
 * through an available TSS (9): with 11 there the `out` raises #GP and
 * the guest triple-faults.  So 9 on SVM, 11 elsewhere.
 */
static uint8_t tss_type(struct kvmtest_vm *vm)
{
    struct kvm_flavour f;

    if (kvm_sys_flavour(&vm->sys, &f) == 0 && f.kind == KVM_FLAVOUR_SVM)
        return 9;  /* available 64-bit TSS */
    return 11;     /* busy 64-bit TSS */
}

int kvmtest_vcpu_reset(struct kvmtest_vm *vm, enum kvmtest_guest_fn fn)
{
    struct kvm_vcpu *v = &vm->vcpu.k;
    struct kvm_vcpu_sregs s;
    struct kvm_vcpu_regs r;
    int rc;

    rc = kvm_vcpu_get_sregs(v, &s);
    if (rc)
        return rc;
    seg(&s.cs, SEL_CODE0, 11, true);
    seg(&s.ds, SEL_DATA0, 3, false);
    s.es = s.fs = s.gs = s.ss = s.ds;
    memset(&s.tr, 0, sizeof(s.tr));
    s.tr.selector = SEL_TSS;
    s.tr.base = KVMTEST_TSS_GPA;
    s.tr.limit = TSS_LIMIT;
    s.tr.type = tss_type(vm);
    s.tr.present = 1;
    s.gdt.base = KVMTEST_GDT_GPA;
    s.gdt.limit = 8 * 8 - 1;
    s.idt.base = 0;
    s.idt.limit = 0;
    s.cr0 = 0x80010033ULL; /* PG WP NE ET MP PE */
    s.cr3 = KVMTEST_PT_GPA;
    s.cr4 = 0x620;         /* OSXMMEXCPT OSFXSR PAE */
    s.efer = 0xd00;        /* NXE LMA LME */
    rc = kvm_vcpu_set_sregs(v, &s);
    if (rc)
        return rc;

    /* The iretq frame that drops to ring 3 at fn. */
    uint64_t *frame = (uint64_t *)(vm->sysmem + KVMTEST_STACK0_GPA - 64);
    frame[0] = guest_fn_addr[fn];
    frame[1] = SEL_CODE3;
    frame[2] = 0x2;
    frame[3] = KVMTEST_STACK3_GPA - 8; /* ABI: rsp+8 aligned at entry */
    frame[4] = SEL_DATA3;
    memset(&r, 0, sizeof(r));
    r.rip = KVMTEST_SYM_kvmtest_r0_entry;
    r.rsp = KVMTEST_STACK0_GPA - 64;
    r.rflags = 0x2;
    return kvm_vcpu_set_regs(v, &r);
}

int kvmtest_vm_config(struct kvm_vm_config *cfg, bool ring, uint32_t ring_bytes)
{
    struct kvm_sys sys;
    int rc = kvm_sys_open(&sys, NULL);

    if (rc)
        return rc;
    *cfg = kvm_vm_config_default(&sys, ring, ring_bytes);
    kvm_sys_close(&sys);
    return 0;
}

int vm_create_with_one_vcpu(struct kvmtest_vm **out, enum kvmtest_guest_fn fn,
                            const struct kvm_vm_config *cfg,
                            const struct kvm_ops *ops)
{
    struct kvmtest_vm *vm = calloc(1, sizeof(*vm));
    struct kvm_cpuid2 *cpuid = NULL;
    struct kvm_vm_config def;
    int rc;

    if (!vm)
        return -ENOMEM;
    vm->vm.fd = -1;
    vm->vcpu.k.fd = -1;
    rc = kvm_sys_open(&vm->sys, ops);
    if (rc)
        goto fail;
    if (!cfg) {
        def = kvm_vm_config_default(&vm->sys, false, 0);
        cfg = &def;
    }
    rc = kvm_vm_create(&vm->vm, &vm->sys, cfg);
    if (rc)
        goto fail;
    vm->sysmem = mmap(NULL, KVMTEST_SYS_SIZE, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (vm->sysmem == MAP_FAILED) {
        vm->sysmem = NULL;
        rc = -ENOMEM;
        goto fail;
    }
    build_sysmem(vm->sysmem);
    rc = kvm_vm_set_memory_region(&vm->vm, 0, 0, 0, KVMTEST_SYS_SIZE,
                                  vm->sysmem);
    if (rc)
        goto fail;
    rc = kvm_vcpu_create(&vm->vcpu.k, &vm->vm, 0);
    if (rc)
        goto fail;
    vm->vcpu.vm = vm;
    rc = kvm_sys_supported_cpuid(&vm->sys, &cpuid);
    if (rc)
        goto fail;
    rc = kvm_vcpu_set_cpuid(&vm->vcpu.k, cpuid);
    free(cpuid);
    if (rc)
        goto fail;
    rc = kvmtest_vcpu_reset(vm, fn);
    if (rc)
        goto fail;
    *out = vm;
    return 0;

fail:
    kvmtest_vm_free(vm);
    return rc;
}

void kvmtest_vm_free(struct kvmtest_vm *vm)
{
    if (!vm)
        return;
    if (vm->vcpu.k.fd >= 0)
        kvm_vcpu_destroy(&vm->vcpu.k);
    kvm_vm_destroy(&vm->vm);
    kvm_sys_close(&vm->sys);
    if (vm->sysmem)
        munmap(vm->sysmem, KVMTEST_SYS_SIZE);
    free(vm);
}

int kvmtest_run_ucall(struct kvmtest_vm *vm, uint64_t *code, uint64_t *arg)
{
    struct kvmtest_vcpu *vc = &vm->vcpu;
    struct kvm_exit ex;
    int rc;

    for (;;) {
        rc = kvm_vcpu_run(&vc->k);
        if (rc == -EINTR) {
            vc->nr_kicks++;
            return rc;
        }
        if (rc)
            return rc;
        vc->nr_exits++;
        kvm_vcpu_exit(&vc->k, &ex);
        switch (ex.kind) {
        case KVM_XK_IO:
            if (ex.io.port == KVMTEST_UCALL_PORT && ex.io.out &&
                ex.io.size == 4) {
                struct kvm_vcpu_regs r;
                rc = kvm_vcpu_get_regs(&vc->k, &r);
                if (rc)
                    return rc;
                *code = r.rax & 0xffffffff;
                *arg = r.rdi;
                return 0;
            }
            fprintf(stderr, "kvmtest: unexpected port 0x%x\n", ex.io.port);
            return -EPROTO;
        case KVM_XK_MMIO:
            vc->nr_mmio++;
            if (!vm->hooks.mmio) {
                fprintf(stderr, "kvmtest: MMIO %s gpa 0x%llx len %u\n",
                        ex.mmio.is_write ? "write" : "read",
                        (unsigned long long)ex.mmio.addr, ex.mmio.len);
                return -EFAULT;
            }
            rc = vm->hooks.mmio(vm->hooks.opaque, ex.mmio.addr, ex.mmio.data,
                                ex.mmio.len, ex.mmio.is_write);
            if (rc)
                return rc;
            break;
        case KVM_XK_RING_FULL:
            vc->nr_ring_full++;
            if (!vm->hooks.ring_full)
                return -ENOSPC;
            rc = vm->hooks.ring_full(vm->hooks.opaque);
            if (rc)
                return rc;
            break;
        case KVM_XK_INTR:
            return -EINTR;
        default: {
            struct kvm_vcpu_regs r;
            if (kvm_vcpu_get_regs(&vc->k, &r) == 0)
                fprintf(stderr, "kvmtest: exit %s rip 0x%llx\n",
                        kvm_exit_reason_name(ex.raw),
                        (unsigned long long)r.rip);
            return -EPROTO;
        }
        }
    }
}

/* ---- the vCPU thread ------------------------------------------------------ */

static bool must_park(struct kvmtest_runner *r, bool at_sync)
{
    return r->quit ? false : (r->pause_req || (at_sync && r->stop_req));
}

/* Park while asked to; return false when the thread must leave. */
static bool park_locked(struct kvmtest_runner *r, bool at_sync)
{
    while (must_park(r, at_sync)) {
        r->parked = true;
        r->parked_at_sync = at_sync;
        pthread_cond_broadcast(&r->cond);
        pthread_cond_wait(&r->cond, &r->lock);
    }
    if (r->parked) {
        r->parked = false;
        pthread_cond_broadcast(&r->cond);
    }
    return !r->quit;
}

static void *runner_main(void *opaque)
{
    struct kvmtest_runner *r = opaque;
    uint64_t code, arg;

    kvm_vcpu_bind_thread(&r->vm->vcpu.k, KVMTEST_KICK_SIGNAL);
    pthread_mutex_lock(&r->lock);
    for (;;) {
        if (!park_locked(r, false))
            break;
        pthread_mutex_unlock(&r->lock);
        int rc = kvmtest_run_ucall(r->vm, &code, &arg);
        pthread_mutex_lock(&r->lock);
        if (rc == -EINTR)
            continue;
        if (rc) {
            r->error = rc;
            break;
        }
        if (code == KVMTEST_UCALL_DONE) {
            r->done = true;
            r->stop_req = true;
        }
        r->syncs++;
        if (!park_locked(r, true))
            break;
    }
    r->parked = true;
    r->exited = true;
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->lock);
    return NULL;
}

int kvmtest_runner_start(struct kvmtest_runner *r, struct kvmtest_vm *vm)
{
    int rc;

    memset(r, 0, sizeof(*r));
    r->vm = vm;
    rc = kvm_kick_signal_install(KVMTEST_KICK_SIGNAL);
    if (rc)
        return rc;
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->cond, NULL);
    rc = -pthread_create(&r->thread, NULL, runner_main, r);
    if (rc) {
        pthread_cond_destroy(&r->cond);
        pthread_mutex_destroy(&r->lock);
    }
    return rc;
}

static int wait_parked_locked(struct kvmtest_runner *r, bool at_sync)
{
    while (!(r->parked && (r->parked_at_sync || !at_sync)) && !r->exited)
        pthread_cond_wait(&r->cond, &r->lock);
    return r->error;
}

int kvmtest_runner_stop(struct kvmtest_runner *r)
{
    int rc;

    pthread_mutex_lock(&r->lock);
    r->stop_req = true;
    rc = wait_parked_locked(r, true);
    pthread_mutex_unlock(&r->lock);
    return rc;
}

int kvmtest_runner_pause(struct kvmtest_runner *r)
{
    int rc;

    pthread_mutex_lock(&r->lock);
    r->pause_req = true;
    if (!r->parked)
        kvm_vcpu_kick(&r->vm->vcpu.k);
    rc = wait_parked_locked(r, false);
    pthread_mutex_unlock(&r->lock);
    return rc;
}

void kvmtest_runner_resume(struct kvmtest_runner *r)
{
    pthread_mutex_lock(&r->lock);
    r->stop_req = r->done;
    r->pause_req = false;
    pthread_cond_broadcast(&r->cond);
    /* wait until it actually left the parked state, so that a stop right
     * after a resume waits for the next SYNC, not the previous one */
    while (r->parked && !r->exited && !r->done)
        pthread_cond_wait(&r->cond, &r->lock);
    pthread_mutex_unlock(&r->lock);
}

void kvmtest_runner_unpause(struct kvmtest_runner *r)
{
    pthread_mutex_lock(&r->lock);
    r->pause_req = false;
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->lock);
}

int kvmtest_runner_join(struct kvmtest_runner *r)
{
    pthread_mutex_lock(&r->lock);
    r->quit = true;
    pthread_cond_broadcast(&r->cond);
    if (!r->exited)
        kvm_vcpu_kick(&r->vm->vcpu.k);
    pthread_mutex_unlock(&r->lock);
    pthread_join(r->thread, NULL);
    pthread_cond_destroy(&r->cond);
    pthread_mutex_destroy(&r->lock);
    return r->error;
}

/* ---- failure injection ---------------------------------------------------- */

/* The test fixture: one armed fault at a time. */
static struct {
    _Atomic uint64_t calls[KVMTEST_OP_NR];
    _Atomic int armed_op;      /* -1: none */
    _Atomic uint64_t fire_at;  /* calls[armed_op] value that fails */
    _Atomic int err;
    _Atomic bool fired;
} fault = {.armed_op = -1};

static bool fault_hit(enum kvmtest_op op, int *err)
{
    uint64_t n = atomic_fetch_add(&fault.calls[op], 1) + 1;

    if (atomic_load(&fault.armed_op) == (int)op &&
        n == atomic_load(&fault.fire_at)) {
        atomic_store(&fault.armed_op, -1);
        atomic_store(&fault.fired, true);
        *err = atomic_load(&fault.err);
        return true;
    }
    return false;
}

void kvmtest_fault_arm(enum kvmtest_op op, uint64_t nth, int err)
{
    atomic_store(&fault.armed_op, -1);
    atomic_store(&fault.fired, false);
    atomic_store(&fault.err, err);
    atomic_store(&fault.fire_at, atomic_load(&fault.calls[op]) + nth);
    atomic_store(&fault.armed_op, (int)op);
}

void kvmtest_fault_disarm(void)
{
    atomic_store(&fault.armed_op, -1);
}

uint64_t kvmtest_fault_calls(enum kvmtest_op op)
{
    return atomic_load(&fault.calls[op]);
}

bool kvmtest_fault_fired(void)
{
    return atomic_load(&fault.fired);
}

#define REAL (kvm_ops_real())
#define FAULT(op)                                                              \
    do {                                                                       \
        int e_;                                                                \
        if (fault_hit(op, &e_))                                                \
            return e_;                                                         \
    } while (0)

static int f_open_dev(void)
{
    FAULT(KVMTEST_OP_OPEN);
    return REAL->open_dev();
}
static void shadow_reset(int vmfd);

static int f_sys_ioctl(int fd, unsigned long req, unsigned long arg)
{
    FAULT(KVMTEST_OP_SYS);
    int rc = REAL->sys_ioctl(fd, req, arg);
    if (req == KVM_CREATE_VM && rc >= 0)
        shadow_reset(rc);
    return rc;
}
static int f_get_supported_cpuid(int fd, struct kvm_cpuid2 *c)
{
    FAULT(KVMTEST_OP_CPUID);
    return REAL->get_supported_cpuid(fd, c);
}
static int f_enable_cap(int fd, const struct kvm_enable_cap *c)
{
    FAULT(KVMTEST_OP_ENABLE_CAP);
    return REAL->enable_cap(fd, c);
}
/* The shadow of KVM's slots (test fixture). */
static struct {
    pthread_mutex_t lock;
    int vmfd;
    struct kvmtest_shadow_slot slots[KVMTEST_SHADOW_SLOTS];
} shadow = {.lock = PTHREAD_MUTEX_INITIALIZER, .vmfd = -1};

static int f_set_user_memory_region(int fd,
                                    const struct kvm_userspace_memory_region *r)
{
    FAULT(KVMTEST_OP_SET_REGION);
    int rc = REAL->set_user_memory_region(fd, r);
    if (rc == 0 && (r->slot & 0xffff) < KVMTEST_SHADOW_SLOTS) {
        pthread_mutex_lock(&shadow.lock);
        if (shadow.vmfd != fd) {
            memset(shadow.slots, 0, sizeof(shadow.slots));
            shadow.vmfd = fd;
        }
        shadow.slots[r->slot & 0xffff] = (struct kvmtest_shadow_slot){
            r->memory_size ? r->flags : 0, r->memory_size ? r->guest_phys_addr : 0,
            r->memory_size, r->memory_size ? r->userspace_addr : 0};
        pthread_mutex_unlock(&shadow.lock);
    }
    return rc;
}

static void shadow_reset(int vmfd)
{
    pthread_mutex_lock(&shadow.lock);
    memset(shadow.slots, 0, sizeof(shadow.slots));
    shadow.vmfd = vmfd;
    pthread_mutex_unlock(&shadow.lock);
}

void kvmtest_shadow_get(struct kvmtest_shadow_slot out[KVMTEST_SHADOW_SLOTS])
{
    pthread_mutex_lock(&shadow.lock);
    memcpy(out, shadow.slots, sizeof(shadow.slots));
    pthread_mutex_unlock(&shadow.lock);
}
static int f_get_dirty_log(int fd, struct kvm_dirty_log *l)
{
    FAULT(KVMTEST_OP_GET_LOG);
    return REAL->get_dirty_log(fd, l);
}
static int f_clear_dirty_log(int fd, struct kvm_clear_dirty_log *l)
{
    FAULT(KVMTEST_OP_CLEAR_LOG);
    return REAL->clear_dirty_log(fd, l);
}
static int f_reset_dirty_rings(int fd)
{
    FAULT(KVMTEST_OP_RESET_RINGS);
    return REAL->reset_dirty_rings(fd);
}
static int f_create_vcpu(int fd, unsigned long id)
{
    FAULT(KVMTEST_OP_CREATE_VCPU);
    return REAL->create_vcpu(fd, id);
}
static int f_vm_ioctl(int fd, unsigned long req, void *arg)
{
    FAULT(KVMTEST_OP_VM_IOCTL);
    return REAL->vm_ioctl(fd, req, arg);
}
static int f_run(int fd)
{
    FAULT(KVMTEST_OP_RUN);
    return REAL->run(fd);
}
static int f_regs(int fd, struct kvm_regs *r, bool w)
{
    FAULT(KVMTEST_OP_REGS);
    return REAL->regs(fd, r, w);
}
static int f_sregs(int fd, struct kvm_sregs *s, bool w)
{
    FAULT(KVMTEST_OP_SREGS);
    return REAL->sregs(fd, s, w);
}
static int f_set_cpuid(int fd, const struct kvm_cpuid2 *c)
{
    FAULT(KVMTEST_OP_SET_CPUID);
    return REAL->set_cpuid(fd, c);
}
static int f_vcpu_ioctl(int fd, unsigned long req, void *arg)
{
    FAULT(KVMTEST_OP_VCPU_IOCTL);
    return REAL->vcpu_ioctl(fd, req, arg);
}
static int f_map(int fd, size_t len, uint64_t off, void **out)
{
    FAULT(KVMTEST_OP_MAP);
    return REAL->map(fd, len, off, out);
}
static void f_unmap(void *p, size_t len)
{
    REAL->unmap(p, len);
}

static const struct kvm_ops fault_ops = {
    .open_dev = f_open_dev,
    .sys_ioctl = f_sys_ioctl,
    .get_supported_cpuid = f_get_supported_cpuid,
    .enable_cap = f_enable_cap,
    .set_user_memory_region = f_set_user_memory_region,
    .get_dirty_log = f_get_dirty_log,
    .clear_dirty_log = f_clear_dirty_log,
    .reset_dirty_rings = f_reset_dirty_rings,
    .create_vcpu = f_create_vcpu,
    .vm_ioctl = f_vm_ioctl,
    .run = f_run,
    .regs = f_regs,
    .sregs = f_sregs,
    .set_cpuid = f_set_cpuid,
    .vcpu_ioctl = f_vcpu_ioctl,
    .map = f_map,
    .unmap = f_unmap,
};

const struct kvm_ops *kvmtest_fault_ops(void)
{
    return &fault_ops;
}
