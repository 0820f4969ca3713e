/*
 * kvm.c - system calls to /dev/kvm, behind struct kvm_ops (see kvm.h).
 */
#include "kvm/kvm.h"

#include "lib/types.h"

#include <linux/kvm.h>
#include <stddef.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- kvm.h's mirrors of KVM's structures --------------------------------- */

#define SAME_FIELD(a, b, f)                                                    \
    _Static_assert(offsetof(struct a, f) == offsetof(struct b, f) &&           \
                       sizeof(((struct a *)0)->f) ==                           \
                           sizeof(((struct b *)0)->f),                         \
                   #a "." #f)

_Static_assert(sizeof(struct kvm_vcpu_regs) == sizeof(struct kvm_regs),
               "kvm_vcpu_regs");
SAME_FIELD(kvm_vcpu_regs, kvm_regs, rax);
SAME_FIELD(kvm_vcpu_regs, kvm_regs, rsp);
SAME_FIELD(kvm_vcpu_regs, kvm_regs, rbp);
SAME_FIELD(kvm_vcpu_regs, kvm_regs, r8);
SAME_FIELD(kvm_vcpu_regs, kvm_regs, r15);
SAME_FIELD(kvm_vcpu_regs, kvm_regs, rip);
SAME_FIELD(kvm_vcpu_regs, kvm_regs, rflags);
_Static_assert(sizeof(struct kvm_vcpu_segment) == sizeof(struct kvm_segment),
               "kvm_vcpu_segment");
SAME_FIELD(kvm_vcpu_segment, kvm_segment, base);
SAME_FIELD(kvm_vcpu_segment, kvm_segment, limit);
SAME_FIELD(kvm_vcpu_segment, kvm_segment, selector);
SAME_FIELD(kvm_vcpu_segment, kvm_segment, type);
SAME_FIELD(kvm_vcpu_segment, kvm_segment, present);
SAME_FIELD(kvm_vcpu_segment, kvm_segment, dpl);
SAME_FIELD(kvm_vcpu_segment, kvm_segment, db);
SAME_FIELD(kvm_vcpu_segment, kvm_segment, s);
SAME_FIELD(kvm_vcpu_segment, kvm_segment, l);
SAME_FIELD(kvm_vcpu_segment, kvm_segment, g);
SAME_FIELD(kvm_vcpu_segment, kvm_segment, avl);
SAME_FIELD(kvm_vcpu_segment, kvm_segment, unusable);
_Static_assert(sizeof(struct kvm_vcpu_dtable) == sizeof(struct kvm_dtable),
               "kvm_vcpu_dtable");
SAME_FIELD(kvm_vcpu_dtable, kvm_dtable, base);
SAME_FIELD(kvm_vcpu_dtable, kvm_dtable, limit);
_Static_assert(sizeof(struct kvm_vcpu_sregs) == sizeof(struct kvm_sregs),
               "kvm_vcpu_sregs");
SAME_FIELD(kvm_vcpu_sregs, kvm_sregs, cs);
SAME_FIELD(kvm_vcpu_sregs, kvm_sregs, ds);
SAME_FIELD(kvm_vcpu_sregs, kvm_sregs, es);
SAME_FIELD(kvm_vcpu_sregs, kvm_sregs, fs);
SAME_FIELD(kvm_vcpu_sregs, kvm_sregs, gs);
SAME_FIELD(kvm_vcpu_sregs, kvm_sregs, ss);
SAME_FIELD(kvm_vcpu_sregs, kvm_sregs, tr);
SAME_FIELD(kvm_vcpu_sregs, kvm_sregs, ldt);
SAME_FIELD(kvm_vcpu_sregs, kvm_sregs, gdt);
SAME_FIELD(kvm_vcpu_sregs, kvm_sregs, idt);
SAME_FIELD(kvm_vcpu_sregs, kvm_sregs, cr0);
SAME_FIELD(kvm_vcpu_sregs, kvm_sregs, cr2);
SAME_FIELD(kvm_vcpu_sregs, kvm_sregs, cr3);
SAME_FIELD(kvm_vcpu_sregs, kvm_sregs, cr4);
SAME_FIELD(kvm_vcpu_sregs, kvm_sregs, cr8);
SAME_FIELD(kvm_vcpu_sregs, kvm_sregs, efer);
SAME_FIELD(kvm_vcpu_sregs, kvm_sregs, apic_base);
SAME_FIELD(kvm_vcpu_sregs, kvm_sregs, interrupt_bitmap);
_Static_assert(KVM_SLOT_LOG_DIRTY == KVM_MEM_LOG_DIRTY_PAGES, "slot flag");
_Static_assert(KVM_SLOT_READONLY == KVM_MEM_READONLY, "slot flag");
_Static_assert(KVM_SUBERROR_EMULATION == KVM_INTERNAL_ERROR_EMULATION,
               "suberror");

/* ---- the real operations ------------------------------------------------ */

static int neg_errno(int r)
{
    return r < 0 ? -errno : r;
}

static int real_open_dev(void)
{
    return neg_errno(open("/dev/kvm", O_RDWR | O_CLOEXEC));
}

static int real_sys_ioctl(int fd, unsigned long req, unsigned long arg)
{
    return neg_errno(ioctl(fd, req, arg));
}

static int real_get_supported_cpuid(int fd, struct kvm_cpuid2 *cpuid)
{
    return neg_errno(ioctl(fd, KVM_GET_SUPPORTED_CPUID, cpuid));
}

static int real_enable_cap(int vmfd, const struct kvm_enable_cap *cap)
{
    return neg_errno(ioctl(vmfd, KVM_ENABLE_CAP, cap));
}

static int real_set_user_memory_region(
    int vmfd, const struct kvm_userspace_memory_region *r)
{
    return neg_errno(ioctl(vmfd, KVM_SET_USER_MEMORY_REGION, r));
}

static int real_get_dirty_log(int vmfd, struct kvm_dirty_log *log)
{
    return neg_errno(ioctl(vmfd, KVM_GET_DIRTY_LOG, log));
}

static int real_clear_dirty_log(int vmfd, struct kvm_clear_dirty_log *log)
{
    return neg_errno(ioctl(vmfd, KVM_CLEAR_DIRTY_LOG, log));
}

static int real_reset_dirty_rings(int vmfd)
{
    return neg_errno(ioctl(vmfd, KVM_RESET_DIRTY_RINGS, 0));
}

static int real_create_vcpu(int vmfd, unsigned long id)
{
    return neg_errno(ioctl(vmfd, KVM_CREATE_VCPU, id));
}

static int real_vm_ioctl(int vmfd, unsigned long req, void *arg)
{
    return neg_errno(ioctl(vmfd, req, arg));
}

static int real_run(int vcpufd)
{
    return neg_errno(ioctl(vcpufd, KVM_RUN, 0));
}

static int real_regs(int vcpufd, struct kvm_regs *regs, bool write)
{
    return neg_errno(ioctl(vcpufd, write ? KVM_SET_REGS : KVM_GET_REGS, regs));
}

static int real_sregs(int vcpufd, struct kvm_sregs *sregs, bool write)
{
    return neg_errno(
        ioctl(vcpufd, write ? KVM_SET_SREGS : KVM_GET_SREGS, sregs));
}

static int real_set_cpuid(int vcpufd, const struct kvm_cpuid2 *cpuid)
{
    return neg_errno(ioctl(vcpufd, KVM_SET_CPUID2, cpuid));
}

static int real_vcpu_ioctl(int vcpufd, unsigned long req, void *arg)
{
    return neg_errno(ioctl(vcpufd, req, arg));
}

static int real_mmap(int fd, size_t len, uint64_t offset, void **out)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)offset);
    if (p == MAP_FAILED)
        return -errno;
    *out = p;
    return 0;
}

static void real_munmap(void *addr, size_t len)
{
    munmap(addr, len);
}

static const struct kvm_ops real_ops = {
    .open_dev = real_open_dev,
    .sys_ioctl = real_sys_ioctl,
    .get_supported_cpuid = real_get_supported_cpuid,
    .enable_cap = real_enable_cap,
    .set_user_memory_region = real_set_user_memory_region,
    .get_dirty_log = real_get_dirty_log,
    .clear_dirty_log = real_clear_dirty_log,
    .reset_dirty_rings = real_reset_dirty_rings,
    .create_vcpu = real_create_vcpu,
    .vm_ioctl = real_vm_ioctl,
    .run = real_run,
    .regs = real_regs,
    .sregs = real_sregs,
    .set_cpuid = real_set_cpuid,
    .vcpu_ioctl = real_vcpu_ioctl,
    .map = real_mmap,
    .unmap = real_munmap,
};

const struct kvm_ops *kvm_ops_real(void)
{
    return &real_ops;
}

/* ---- system --------------------------------------------------------------- */

static int check_ext(struct kvm_sys *sys, long cap)
{
    int r = sys->ops->sys_ioctl(sys->fd, KVM_CHECK_EXTENSION, (unsigned long)cap);
    return r < 0 ? 0 : r;
}

int kvm_sys_open(struct kvm_sys *sys, const struct kvm_ops *ops)
{
    int r;

    memset(sys, 0, sizeof(*sys));
    sys->ops = ops ? ops : kvm_ops_real();
    sys->fd = sys->ops->open_dev();
    if (sys->fd < 0) {
        r = sys->fd;
        goto fail;
    }
    r = sys->ops->sys_ioctl(sys->fd, KVM_GET_API_VERSION, 0);
    if (r < 0)
        goto fail_close;
    if (r != KVM_API_VERSION || !check_ext(sys, KVM_CAP_USER_MEMORY)) {
        r = -EOPNOTSUPP;
        goto fail_close;
    }
    r = sys->ops->sys_ioctl(sys->fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (r < 0)
        goto fail_close;
    if ((size_t)r < sizeof(struct kvm_run)) {
        r = -EOPNOTSUPP;
        goto fail_close;
    }
    sys->run_size = (size_t)r;

    sys->caps.nr_memslots = (uint32_t)check_ext(sys, KVM_CAP_NR_MEMSLOTS);
    if (sys->caps.nr_memslots == 0)
        sys->caps.nr_memslots = 32; /* KVM's documented minimum */
    sys->caps.readonly_mem = check_ext(sys, KVM_CAP_READONLY_MEM) > 0;
    sys->caps.manual_protect =
        (uint32_t)check_ext(sys, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2);
    r = check_ext(sys, KVM_CAP_DIRTY_LOG_RING_ACQ_REL);
    if (r > 0) {
        sys->caps.dirty_ring_max = (uint32_t)r;
        sys->caps.dirty_ring_acq_rel = true;
    } else {
        sys->caps.dirty_ring_max = (uint32_t)check_ext(sys, KVM_CAP_DIRTY_LOG_RING);
    }
    sys->caps.irqchip = check_ext(sys, KVM_CAP_IRQCHIP) > 0;
    sys->caps.immediate_exit = check_ext(sys, KVM_CAP_IMMEDIATE_EXIT) > 0;
    return 0;

fail_close:
    close(sys->fd);
fail:
    sys->fd = -1;
    return r;
}

void kvm_sys_close(struct kvm_sys *sys)
{
    if (sys->fd >= 0)
        close(sys->fd);
    sys->fd = -1;
}

int kvm_sys_supported_cpuid(struct kvm_sys *sys, struct kvm_cpuid2 **out)
{
    uint32_t n = 256;

    for (;;) {
        struct kvm_cpuid2 *c =
            calloc(1, sizeof(*c) + n * sizeof(struct kvm_cpuid_entry2));
        if (!c)
            return -ENOMEM;
        c->nent = n;
        int r = sys->ops->get_supported_cpuid(sys->fd, c);
        if (r == 0) {
            *out = c;
            return 0;
        }
        free(c);
        if (r != -E2BIG || n >= 4096)
            return r;
        n *= 2;
    }
}

int kvm_sys_msrs_listed(struct kvm_sys *sys, const uint32_t *idx, unsigned n,
                        bool *listed)
{
    uint32_t cap = 512;

    for (;;) {
        struct kvm_msr_list *l =
            calloc(1, sizeof(*l) + cap * sizeof(l->indices[0]));
        int r;

        if (!l)
            return -ENOMEM;
        l->nmsrs = cap;
        r = sys->ops->sys_ioctl(sys->fd, KVM_GET_MSR_INDEX_LIST,
                                (unsigned long)l);
        if (r >= 0) {
            uint32_t got = l->nmsrs < cap ? l->nmsrs : cap;

            for (unsigned i = 0; i < n; i++) {
                listed[i] = false;
                for (uint32_t j = 0; j < got && !listed[i]; j++)
                    listed[i] = l->indices[j] == idx[i];
            }
            free(l);
            return 0;
        }
        free(l);
        if (r != -E2BIG || cap >= 16384)
            return r;
        cap *= 4;
    }
}

int kvm_cpuid_edit(struct kvm_cpuid2 *c, uint32_t function, uint32_t index,
                   unsigned reg, uint32_t set, uint32_t clear)
{
    for (uint32_t i = 0; i < c->nent; i++) {
        struct kvm_cpuid_entry2 *e = &c->entries[i];
        uint32_t *r[4] = {&e->eax, &e->ebx, &e->ecx, &e->edx};

        if (e->function != function ||
            ((e->flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) && e->index != index))
            continue;
        if (reg > 3)
            return -EINVAL;
        *r[reg] = (*r[reg] & ~clear) | set;
        return 0;
    }
    return -ENOENT;
}

/* ---- VM ------------------------------------------------------------------- */

struct kvm_vm_config kvm_vm_config_default(const struct kvm_sys *sys,
                                           bool want_ring, uint32_t ring_bytes)
{
    struct kvm_vm_config c = {.dirty_mode = KVM_DIRTY_BITMAP};

    if (want_ring && sys->caps.dirty_ring_max >= ring_bytes && ring_bytes) {
        c.dirty_mode = KVM_DIRTY_RING;
        c.ring_bytes = ring_bytes;
    } else if (sys->caps.manual_protect & KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE) {
        c.dirty_mode = KVM_DIRTY_BITMAP_MANUAL;
    }
    return c;
}

int kvm_vm_create(struct kvm_vm *vm, struct kvm_sys *sys,
                  const struct kvm_vm_config *cfg)
{
    int r;

    memset(vm, 0, sizeof(*vm));
    vm->sys = sys;
    vm->ops = sys->ops;
    vm->fd = sys->ops->sys_ioctl(sys->fd, KVM_CREATE_VM, 0);
    if (vm->fd < 0) {
        r = vm->fd;
        vm->fd = -1;
        return r;
    }
    vm->dirty_mode = cfg->dirty_mode;
    switch (cfg->dirty_mode) {
    case KVM_DIRTY_BITMAP:
        break;
    case KVM_DIRTY_BITMAP_MANUAL: {
        struct kvm_enable_cap cap = {
            .cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
            .args = {KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE},
        };
        if (!(sys->caps.manual_protect & KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE)) {
            r = -EOPNOTSUPP;
            goto fail;
        }
        r = vm->ops->enable_cap(vm->fd, &cap);
        if (r < 0)
            goto fail;
        vm->manual_protect = true;
        break;
    }
    case KVM_DIRTY_RING: {
        struct kvm_enable_cap cap = {
            .cap = sys->caps.dirty_ring_acq_rel ? KVM_CAP_DIRTY_LOG_RING_ACQ_REL
                                                : KVM_CAP_DIRTY_LOG_RING,
            .args = {cfg->ring_bytes},
        };
        if (!sys->caps.dirty_ring_max) {
            r = -EOPNOTSUPP;
            goto fail;
        }
        if (cfg->ring_bytes > sys->caps.dirty_ring_max) {
            r = -E2BIG;
            goto fail;
        }
        if (cfg->ring_bytes < PAGE_SIZE ||
            (cfg->ring_bytes & (cfg->ring_bytes - 1))) {
            r = -EINVAL;
            goto fail;
        }
        r = vm->ops->enable_cap(vm->fd, &cap);
        if (r < 0)
            goto fail;
        vm->ring_bytes = cfg->ring_bytes;
        break;
    }
    default:
        r = -EINVAL;
        goto fail;
    }
    return 0;

fail:
    close(vm->fd);
    memset(vm, 0, sizeof(*vm));
    vm->fd = -1;
    return r;
}

void kvm_vm_destroy(struct kvm_vm *vm)
{
    if (vm->fd >= 0)
        close(vm->fd);
    vm->fd = -1;
}

int kvm_vm_set_memory_region(struct kvm_vm *vm, uint32_t slot, uint32_t flags,
                             uint64_t gpa, uint64_t size, void *hva)
{
    struct kvm_userspace_memory_region r = {
        .slot = slot,
        .flags = flags,
        .guest_phys_addr = gpa,
        .memory_size = size,
        .userspace_addr = (uint64_t)(uintptr_t)hva,
    };
    return vm->ops->set_user_memory_region(vm->fd, &r);
}

int kvm_vm_get_dirty_log(struct kvm_vm *vm, uint32_t slot, uint64_t *bitmap)
{
    struct kvm_dirty_log log = {.slot = slot, .dirty_bitmap = bitmap};
    return vm->ops->get_dirty_log(vm->fd, &log);
}

int kvm_vm_clear_dirty_log(struct kvm_vm *vm, uint32_t slot,
                           uint64_t first_page, uint32_t num_pages,
                           uint64_t *bitmap)
{
    struct kvm_clear_dirty_log log = {
        .slot = slot,
        .num_pages = num_pages,
        .first_page = first_page,
        .dirty_bitmap = bitmap,
    };
    if (first_page % 64)
        return -EINVAL;
    return vm->ops->clear_dirty_log(vm->fd, &log);
}

int kvm_vm_reset_dirty_rings(struct kvm_vm *vm)
{
    return vm->ops->reset_dirty_rings(vm->fd);
}

int kvm_vm_create_irqchip(struct kvm_vm *vm)
{
    return vm->ops->vm_ioctl(vm->fd, KVM_CREATE_IRQCHIP, NULL);
}

int kvm_vm_create_pit2(struct kvm_vm *vm)
{
    struct kvm_pit_config pc = {.flags = KVM_PIT_SPEAKER_DUMMY};

    return vm->ops->vm_ioctl(vm->fd, KVM_CREATE_PIT2, &pc);
}

int kvm_vm_irq_line(struct kvm_vm *vm, uint32_t irq, bool level)
{
    struct kvm_irq_level l = {.irq = irq, .level = level ? 1 : 0};

    return vm->ops->vm_ioctl(vm->fd, KVM_IRQ_LINE, &l);
}

int kvm_vm_set_tss_addr(struct kvm_vm *vm, uint32_t gpa)
{
    if (vm->ops->sys_ioctl(vm->sys->fd, KVM_CHECK_EXTENSION,
                           KVM_CAP_SET_TSS_ADDR) <= 0)
        return 0;
    return vm->ops->vm_ioctl(vm->fd, KVM_SET_TSS_ADDR,
                             (void *)(uintptr_t)gpa);
}

/* ---- saved state ---------------------------------------------------- */

static const struct {
    size_t bytes;
    unsigned long get, set;
    int cap; /* 0: always there */
} state_ops[KVM_ST_NR] = {
    [KVM_ST_REGS] = {sizeof(struct kvm_regs), KVM_GET_REGS, KVM_SET_REGS, 0},
    [KVM_ST_SREGS] = {sizeof(struct kvm_sregs), KVM_GET_SREGS, KVM_SET_SREGS,
                      0},
    [KVM_ST_DEBUGREGS] = {sizeof(struct kvm_debugregs), KVM_GET_DEBUGREGS,
                          KVM_SET_DEBUGREGS, KVM_CAP_DEBUGREGS},
    [KVM_ST_FPU] = {sizeof(struct kvm_fpu), KVM_GET_FPU, KVM_SET_FPU, 0},
    [KVM_ST_XSAVE] = {sizeof(struct kvm_xsave), KVM_GET_XSAVE, KVM_SET_XSAVE,
                      KVM_CAP_XSAVE},
    [KVM_ST_XCRS] = {sizeof(struct kvm_xcrs), KVM_GET_XCRS, KVM_SET_XCRS,
                     KVM_CAP_XCRS},
    [KVM_ST_LAPIC] = {sizeof(struct kvm_lapic_state), KVM_GET_LAPIC,
                      KVM_SET_LAPIC, 0},
    [KVM_ST_EVENTS] = {sizeof(struct kvm_vcpu_events), KVM_GET_VCPU_EVENTS,
                       KVM_SET_VCPU_EVENTS, KVM_CAP_VCPU_EVENTS},
    [KVM_ST_MP_STATE] = {sizeof(struct kvm_mp_state), KVM_GET_MP_STATE,
                         KVM_SET_MP_STATE, KVM_CAP_MP_STATE},
    [KVM_ST_PIC0] = {KVM_ST_CHIP_BYTES, KVM_GET_IRQCHIP, KVM_SET_IRQCHIP, 0},
    [KVM_ST_PIC1] = {KVM_ST_CHIP_BYTES, KVM_GET_IRQCHIP, KVM_SET_IRQCHIP, 0},
    [KVM_ST_IOAPIC] = {KVM_ST_CHIP_BYTES, KVM_GET_IRQCHIP, KVM_SET_IRQCHIP, 0},
    [KVM_ST_PIT2] = {sizeof(struct kvm_pit_state2), KVM_GET_PIT2, KVM_SET_PIT2,
                     KVM_CAP_PIT_STATE2},
    [KVM_ST_CLOCK] = {sizeof(struct kvm_clock_data), KVM_GET_CLOCK,
                      KVM_SET_CLOCK, KVM_CAP_ADJUST_CLOCK},
};
_Static_assert(sizeof(((struct kvm_irqchip *)0)->chip) == KVM_ST_CHIP_BYTES,
               "irqchip union size");

size_t kvm_state_bytes(enum kvm_state_kind kind)
{
    return (unsigned)kind < KVM_ST_NR ? state_ops[kind].bytes : 0;
}

static int state_check(struct kvm_sys *sys, enum kvm_state_kind kind,
                       size_t len)
{
    if ((unsigned)kind >= KVM_ST_NR || len != state_ops[kind].bytes)
        return -EINVAL;
    if (state_ops[kind].cap && check_ext(sys, state_ops[kind].cap) <= 0)
        return -EOPNOTSUPP;
    return 0;
}

int kvm_vcpu_state(struct kvm_vcpu *vcpu, enum kvm_state_kind kind, void *buf,
                   size_t len, bool write)
{
    int r;

    if (kind >= KVM_ST_PIC0)
        return -EINVAL;
    if ((r = state_check(vcpu->vm->sys, kind, len)) < 0)
        return r;
    if (kind == KVM_ST_EVENTS && write) {
        /* KVM_GET_VCPU_EVENTS does not flag the pending NMI and the SIPI
         * vector valid, though it fills them in: set them too (as QEMU
         * does), or a pending NMI would be lost */
        struct kvm_vcpu_events ev;

        memcpy(&ev, buf, sizeof(ev));
        ev.flags |= KVM_VCPUEVENT_VALID_NMI_PENDING |
                    KVM_VCPUEVENT_VALID_SIPI_VECTOR;
        r = vcpu->vm->ops->vcpu_ioctl(vcpu->fd, KVM_SET_VCPU_EVENTS, &ev);
        return r < 0 ? r : 0;
    }
    r = vcpu->vm->ops->vcpu_ioctl(vcpu->fd,
                                  write ? state_ops[kind].set
                                        : state_ops[kind].get,
                                  buf);
    return r < 0 ? r : 0;
}

int kvm_vm_state(struct kvm_vm *vm, enum kvm_state_kind kind, void *buf,
                 size_t len, bool write)
{
    int r;

    if (kind < KVM_ST_PIC0 || kind >= KVM_ST_NR)
        return -EINVAL;
    if ((r = state_check(vm->sys, kind, len)) < 0)
        return r;
    if (kind <= KVM_ST_IOAPIC) {
        struct kvm_irqchip c;

        memset(&c, 0, sizeof(c));
        c.chip_id = (uint32_t)(kind - KVM_ST_PIC0);
        if (write)
            memcpy(&c.chip, buf, len);
        r = vm->ops->vm_ioctl(vm->fd, write ? KVM_SET_IRQCHIP : KVM_GET_IRQCHIP,
                              &c);
        if (r >= 0 && !write)
            memcpy(buf, &c.chip, len);
        return r < 0 ? r : 0;
    }
    if (kind == KVM_ST_CLOCK && write) {
        struct kvm_clock_data cd;

        memcpy(&cd, buf, sizeof(cd));
        cd = (struct kvm_clock_data){.clock = cd.clock};
        r = vm->ops->vm_ioctl(vm->fd, KVM_SET_CLOCK, &cd);
        return r < 0 ? r : 0;
    }
    r = vm->ops->vm_ioctl(vm->fd, write ? state_ops[kind].set
                                        : state_ops[kind].get,
                          buf);
    return r < 0 ? r : 0;
}

int kvm_vm_ioctl(struct kvm_vm *vm, unsigned long req, void *arg)
{
    return vm->ops->vm_ioctl(vm->fd, req, arg);
}

/* ---- vCPU ----------------------------------------------------------------- */

int kvm_vcpu_create(struct kvm_vcpu *vcpu, struct kvm_vm *vm, uint32_t id)
{
    void *p;
    int r;

    memset(vcpu, 0, sizeof(*vcpu));
    vcpu->vm = vm;
    vcpu->id = id;
    vcpu->fd = vm->ops->create_vcpu(vm->fd, id);
    if (vcpu->fd < 0) {
        r = vcpu->fd;
        goto fail;
    }
    r = vm->ops->map(vcpu->fd, vm->sys->run_size, 0, &p);
    if (r < 0)
        goto fail_close;
    vcpu->run = p;
    if (vm->ring_bytes) {
        r = vm->ops->map(vcpu->fd, vm->ring_bytes,
                          (uint64_t)KVM_DIRTY_LOG_PAGE_OFFSET * PAGE_SIZE, &p);
        if (r < 0)
            goto fail_unmap;
        vcpu->ring = p;
        vcpu->ring_entries = vm->ring_bytes / sizeof(struct kvm_dirty_gfn);
    }
    vm->nr_vcpus++;
    return 0;

fail_unmap:
    vm->ops->unmap(vcpu->run, vm->sys->run_size);
fail_close:
    close(vcpu->fd);
fail:
    memset(vcpu, 0, sizeof(*vcpu));
    vcpu->fd = -1;
    return r;
}

void kvm_vcpu_destroy(struct kvm_vcpu *vcpu)
{
    if (vcpu->fd < 0)
        return;
    if (vcpu->ring)
        vcpu->vm->ops->unmap(vcpu->ring, vcpu->vm->ring_bytes);
    if (vcpu->run)
        vcpu->vm->ops->unmap(vcpu->run, vcpu->vm->sys->run_size);
    close(vcpu->fd);
    vcpu->vm->nr_vcpus--;
    vcpu->fd = -1;
    vcpu->run = NULL;
    vcpu->ring = NULL;
}

static void kick_handler(int sig)
{
    (void)sig;
}

int kvm_kick_signal_install(int signo)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = kick_handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: KVM_RUN must return -EINTR */
    if (sigaction(signo, &sa, NULL) < 0)
        return -errno;
    return 0;
}

void kvm_vcpu_bind_thread(struct kvm_vcpu *vcpu, int signo)
{
    vcpu->thread = pthread_self();
    vcpu->kick_signal = signo;
    __atomic_store_n(&vcpu->thread_bound, true, __ATOMIC_RELEASE);
}

void kvm_vcpu_kick(struct kvm_vcpu *vcpu)
{
    __atomic_store_n(&vcpu->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&vcpu->thread_bound, __ATOMIC_ACQUIRE))
        pthread_kill(vcpu->thread, vcpu->kick_signal);
}

int kvm_vcpu_run(struct kvm_vcpu *vcpu)
{
    int r = vcpu->vm->ops->run(vcpu->fd);

    if (r == -EINTR)
        __atomic_store_n(&vcpu->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
    return r < 0 ? r : 0;
}

void kvm_vcpu_exit(const struct kvm_vcpu *vcpu, struct kvm_exit *ex)
{
    struct kvm_run *run = vcpu->run;

    memset(ex, 0, sizeof(*ex));
    ex->raw = run->exit_reason;
    switch (run->exit_reason) {
    case KVM_EXIT_IO:
        ex->kind = KVM_XK_IO;
        ex->io.port = run->io.port;
        ex->io.size = run->io.size;
        ex->io.out = run->io.direction == KVM_EXIT_IO_OUT;
        ex->io.count = run->io.count;
        ex->io.data = (uint8_t *)run + run->io.data_offset;
        break;
    case KVM_EXIT_MMIO:
        ex->kind = KVM_XK_MMIO;
        ex->mmio.addr = run->mmio.phys_addr;
        ex->mmio.len = run->mmio.len;
        ex->mmio.is_write = run->mmio.is_write;
        ex->mmio.data = run->mmio.data;
        break;
    case KVM_EXIT_HLT:
        ex->kind = KVM_XK_HLT;
        break;
    case KVM_EXIT_SHUTDOWN:
        ex->kind = KVM_XK_SHUTDOWN;
        break;
    case KVM_EXIT_INTERNAL_ERROR:
        ex->kind = KVM_XK_INTERNAL_ERROR;
        ex->internal.suberror = run->internal.suberror;
        ex->internal.ndata = run->internal.ndata;
        memcpy(ex->internal.data, run->internal.data,
               MIN((size_t)run->internal.ndata, ARRAY_SIZE(ex->internal.data)) *
                   sizeof(uint64_t));
        break;
    case KVM_EXIT_FAIL_ENTRY:
        ex->kind = KVM_XK_FAIL_ENTRY;
        ex->fail_entry.hardware_reason =
            run->fail_entry.hardware_entry_failure_reason;
        break;
    case KVM_EXIT_DIRTY_RING_FULL:
        ex->kind = KVM_XK_RING_FULL;
        break;
    case KVM_EXIT_INTR:
        ex->kind = KVM_XK_INTR;
        break;
    case KVM_EXIT_UNKNOWN:
        ex->kind = KVM_XK_UNKNOWN;
        break;
    default:
        ex->kind = KVM_XK_OTHER;
        break;
    }
}

int kvm_vcpu_get_regs(struct kvm_vcpu *vcpu, struct kvm_vcpu_regs *r)
{
    struct kvm_regs k;
    int rc = vcpu->vm->ops->regs(vcpu->fd, &k, false);

    if (rc == 0)
        memcpy(r, &k, sizeof(k));
    return rc;
}

int kvm_vcpu_set_regs(struct kvm_vcpu *vcpu, const struct kvm_vcpu_regs *r)
{
    struct kvm_regs copy;

    memcpy(&copy, r, sizeof(copy));
    return vcpu->vm->ops->regs(vcpu->fd, &copy, true);
}

int kvm_vcpu_get_sregs(struct kvm_vcpu *vcpu, struct kvm_vcpu_sregs *s)
{
    struct kvm_sregs k;
    int rc = vcpu->vm->ops->sregs(vcpu->fd, &k, false);

    if (rc == 0)
        memcpy(s, &k, sizeof(k));
    return rc;
}

int kvm_vcpu_set_sregs(struct kvm_vcpu *vcpu, const struct kvm_vcpu_sregs *s)
{
    struct kvm_sregs copy;

    memcpy(&copy, s, sizeof(copy));
    return vcpu->vm->ops->sregs(vcpu->fd, &copy, true);
}

int kvm_vcpu_set_cpuid(struct kvm_vcpu *vcpu, const struct kvm_cpuid2 *cpuid)
{
    return vcpu->vm->ops->set_cpuid(vcpu->fd, cpuid);
}

/* KVM_GET/SET_MSRS with one entry (kvm_msrs ends in a flexible array). */
union one_msr {
    struct kvm_msrs hdr;
    uint8_t bytes[sizeof(struct kvm_msrs) + sizeof(struct kvm_msr_entry)];
};

static int one_msr_ioctl(struct kvm_vcpu *vcpu, unsigned long req,
                         uint32_t index, uint64_t *value)
{
    union one_msr m;

    memset(&m, 0, sizeof(m));
    m.hdr.nmsrs = 1;
    m.hdr.entries[0].index = index;
    m.hdr.entries[0].data = *value;
    int r = vcpu->vm->ops->vcpu_ioctl(vcpu->fd, req, &m);
    if (r < 0)
        return r;
    if (r != 1)
        return -EINVAL;
    *value = m.hdr.entries[0].data;
    return 0;
}

int kvm_vcpu_set_msr(struct kvm_vcpu *vcpu, uint32_t index, uint64_t value)
{
    return one_msr_ioctl(vcpu, KVM_SET_MSRS, index, &value);
}

int kvm_vcpu_get_msr(struct kvm_vcpu *vcpu, uint32_t index, uint64_t *value)
{
    *value = 0;
    return one_msr_ioctl(vcpu, KVM_GET_MSRS, index, value);
}

int kvm_vcpu_nmi(struct kvm_vcpu *vcpu)
{
    return vcpu->vm->ops->vcpu_ioctl(vcpu->fd, KVM_NMI, NULL);
}

int kvm_vcpu_ioctl(struct kvm_vcpu *vcpu, unsigned long req, void *arg)
{
    return vcpu->vm->ops->vcpu_ioctl(vcpu->fd, req, arg);
}

int kvm_vcpu_event_in_flight(struct kvm_vcpu *vcpu, bool *busy)
{
    struct kvm_vcpu_events ev;
    int r;

    memset(&ev, 0, sizeof(ev));
    r = vcpu->vm->ops->vcpu_ioctl(vcpu->fd, KVM_GET_VCPU_EVENTS, &ev);
    if (r < 0)
        return r;
    *busy = ev.exception.injected || ev.exception.pending ||
            ev.interrupt.injected || ev.nmi.injected;
    return 0;
}

uint32_t kvm_vcpu_ring_harvest(struct kvm_vcpu *vcpu, kvm_ring_fn fn,
                               void *opaque)
{
    uint32_t n = 0;

    if (!vcpu->ring)
        return 0;
    for (;;) {
        struct kvm_dirty_gfn *e =
            &vcpu->ring[vcpu->ring_fetch & (vcpu->ring_entries - 1)];
        uint32_t flags = __atomic_load_n(&e->flags, __ATOMIC_ACQUIRE);
        if (!(flags & KVM_DIRTY_GFN_F_DIRTY) || (flags & KVM_DIRTY_GFN_F_RESET))
            break;
        fn(e->slot, e->offset, opaque);
        __atomic_store_n(&e->flags, KVM_DIRTY_GFN_F_RESET, __ATOMIC_RELEASE);
        vcpu->ring_fetch++;
        n++;
    }
    return n;
}

/* ---- flavour ------------------------------------------------------------- */

static bool sys_module_present(const char *sysroot, const char *module)
{
    char path[512];
    struct stat st;

    if (snprintf(path, sizeof(path), "%s/sys/module/%s", sysroot, module) >=
        (int)sizeof(path))
        return false;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* A bool module parameter: 1 for "Y"/"1", 0 for "N"/"0", -errno else. */
static int sys_module_bool(const char *sysroot, const char *module,
                           const char *param)
{
    char path[512], buf[8] = {0};
    ssize_t n;
    int fd;

    if (snprintf(path, sizeof(path), "%s/sys/module/%s/parameters/%s",
                 sysroot, module, param) >= (int)sizeof(path))
        return -ENAMETOOLONG;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -ENOENT;
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n < 0)
        return -ENOENT;
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
        buf[--n] = 0;
    if (!strcmp(buf, "Y") || !strcmp(buf, "y") || !strcmp(buf, "1"))
        return 1;
    if (!strcmp(buf, "N") || !strcmp(buf, "n") || !strcmp(buf, "0"))
        return 0;
    return -EINVAL;
}

int kvm_flavour_read(const char *sysroot, struct kvm_flavour *out)
{
    static const struct {
        const char *module, *paging;
        enum kvm_flavour_kind kind;
    } hw[] = {
        {"kvm_amd", "npt", KVM_FLAVOUR_SVM},
        {"kvm_intel", "ept", KVM_FLAVOUR_VMX},
    };

    if (!sysroot || !strcmp(sysroot, "/"))
        sysroot = "";
    if (sys_module_present(sysroot, "kvm_pvm")) {
        *out = (struct kvm_flavour){KVM_FLAVOUR_PVM, false};
        return 0;
    }
    for (size_t i = 0; i < ARRAY_SIZE(hw); i++) {
        if (!sys_module_present(sysroot, hw[i].module))
            continue;
        int on = sys_module_bool(sysroot, hw[i].module, hw[i].paging);
        if (on < 0)
            return on;
        *out = (struct kvm_flavour){hw[i].kind, on == 1};
        return 0;
    }
    return -ENOENT;
}

int kvm_sys_flavour(const struct kvm_sys *sys, struct kvm_flavour *out)
{
    if (sys->fd < 0)
        return -EBADF;
    return kvm_flavour_read(NULL, out);
}

const char *kvm_flavour_name(const struct kvm_flavour *f)
{
    switch (f->kind) {
    case KVM_FLAVOUR_PVM:
        return f->nested_paging ? "KVM-PVM, nested paging" : "KVM-PVM, shadow MMU";
    case KVM_FLAVOUR_SVM:
        return f->nested_paging ? "SVM, nested paging (NPT)" : "SVM, shadow MMU";
    case KVM_FLAVOUR_VMX:
        return f->nested_paging ? "VMX, nested paging (EPT)" : "VMX, shadow MMU";
    }
    return "?";
}

const char *kvm_exit_reason_name(uint32_t reason)
{
    static const char *const names[] = {
        [KVM_EXIT_UNKNOWN] = "UNKNOWN",
        [KVM_EXIT_EXCEPTION] = "EXCEPTION",
        [KVM_EXIT_IO] = "IO",
        [KVM_EXIT_HYPERCALL] = "HYPERCALL",
        [KVM_EXIT_DEBUG] = "DEBUG",
        [KVM_EXIT_HLT] = "HLT",
        [KVM_EXIT_MMIO] = "MMIO",
        [KVM_EXIT_IRQ_WINDOW_OPEN] = "IRQ_WINDOW_OPEN",
        [KVM_EXIT_SHUTDOWN] = "SHUTDOWN",
        [KVM_EXIT_FAIL_ENTRY] = "FAIL_ENTRY",
        [KVM_EXIT_INTR] = "INTR",
        [KVM_EXIT_SET_TPR] = "SET_TPR",
        [KVM_EXIT_TPR_ACCESS] = "TPR_ACCESS",
        [KVM_EXIT_INTERNAL_ERROR] = "INTERNAL_ERROR",
        [KVM_EXIT_SYSTEM_EVENT] = "SYSTEM_EVENT",
        [KVM_EXIT_DIRTY_RING_FULL] = "DIRTY_RING_FULL",
    };
    if (reason < ARRAY_SIZE(names) && names[reason])
        return names[reason];
    return "?";
}

int kvm_vm_check(const struct kvm_vm *vm)
{
    if (vm->fd < 0)
        return 0; /* K1: closed */
    if ((vm->ring_bytes != 0) != (vm->dirty_mode == KVM_DIRTY_RING))
        return -EUCLEAN;
    if (vm->manual_protect != (vm->dirty_mode == KVM_DIRTY_BITMAP_MANUAL))
        return -EUCLEAN;
    if (vm->ring_bytes && (vm->ring_bytes & (vm->ring_bytes - 1)))
        return -EUCLEAN;
    return 0;
}

int kvm_vcpu_check(const struct kvm_vcpu *vcpu)
{
    if (vcpu->fd < 0)
        return (vcpu->run || vcpu->ring) ? -EUCLEAN : 0;
    if (!vcpu->run)
        return -EUCLEAN;
    if ((vcpu->ring != NULL) != (vcpu->vm->ring_bytes != 0))
        return -EUCLEAN;
    if (vcpu->ring &&
        vcpu->ring_entries * sizeof(struct kvm_dirty_gfn) != vcpu->vm->ring_bytes)
        return -EUCLEAN;
    return 0;
}
