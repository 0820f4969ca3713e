/*
 * hypercall.c - the hypercall table, keyed by Xen's hypercall number, and
 * the calls that touch only vCPU and domain state.  The MMU calls are in
 * hc_mm.c (they speak pv.h).
 *
 * Adding a call: write `static long hc_<name>(struct pvcpu *, uint64_t
 * a[6])` (arguments as Xen's x86-64 convention passes them: rdi, rsi, rdx,
 * r10, r8, r9), add it to hc_table[] under its __HYPERVISOR_ number, and
 * document it in docs/abi.md.  A handler returns its result, or -errno
 * (errno.h's values, as everything in memvisor, pv's errors passed on as
 * they are); hc_dispatch_one() alone turns that into Xen's value for the
 * guest (hc_err()).  One that wants to be re-entered (a continuation)
 * updates a[] to describe the remaining work and sets pc->retry.  Every
 * guest pointer goes through gm_copy_from()/gm_copy_to().
 */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hv/hv_internal.h"
#include "hv/pv/pvhv.h"
#include "lib/x86.h"
#include "xen/xen.h"

#define HC_MAX_RETRIES_INLINE 1024
#define TRAP_TABLE_MAX 256
#define MULTICALL_MAX 512

static long hc_set_trap_table(struct pvcpu *pc, uint64_t a[6])
{
    struct trap_info ti;

    if (a[0] == 0) {
        memset(pc->traps, 0, sizeof(pc->traps));
        return 0;
    }
    for (unsigned i = 0; i < TRAP_TABLE_MAX; i++) {
        if (gm_copy_from(pc, &ti, a[0] + i * sizeof(ti), sizeof(ti)) < 0)
            return -EFAULT;
        if (ti.address == 0)
            return 0;
        pc->traps[ti.vector].address = ti.address;
        pc->traps[ti.vector].flags = ti.flags;
    }
    return -EINVAL;
}

static long hc_stack_switch(struct pvcpu *pc, uint64_t a[6])
{
    pc->kernel_ss = a[0];
    pc->kernel_sp = a[1];
    return 0;
}

static long set_callback(struct pvcpu *pc, unsigned type, uint64_t address)
{
    switch (type) {
    case CALLBACKTYPE_event:
        pc->event_cb = address;
        return 0;
    case CALLBACKTYPE_failsafe:
        pc->failsafe_cb = address;
        return 0;
    case CALLBACKTYPE_syscall:
        pc->syscall_cb = address;
        return 0;
    case CALLBACKTYPE_nmi:
        return 0; /* accepted: no NMIs are delivered */
    default:
        return -EINVAL;
    }
}

static long hc_set_callbacks(struct pvcpu *pc, uint64_t a[6])
{
    pc->event_cb = a[0];
    pc->failsafe_cb = a[1];
    pc->syscall_cb = a[2];
    return 0;
}

static long hc_callback_op(struct pvcpu *pc, uint64_t a[6])
{
    struct callback_register cb;
    struct callback_unregister un;

    switch (a[0]) {
    case CALLBACKOP_register:
        if (gm_copy_from(pc, &cb, a[1], sizeof(cb)) < 0)
            return -EFAULT;
        return set_callback(pc, cb.type, cb.address);
    case CALLBACKOP_unregister:
        if (gm_copy_from(pc, &un, a[1], sizeof(un)) < 0)
            return -EFAULT;
        return set_callback(pc, un.type, 0);
    default:
        return -ENOSYS;
    }
}

static long hc_fpu_taskswitch(struct pvcpu *pc, uint64_t a[6])
{
    struct kvm_vcpu_sregs *sr = pvcpu_sregs(pc);

    pc->fpu_ts = a[0] != 0;
    if (pc->fpu_ts)
        sr->cr0 |= X86_CR0_TS;
    else
        sr->cr0 &= ~X86_CR0_TS;
    pc->sregs_dirty = true;
    return 0;
}

static long hc_console_io(struct pvcpu *pc, uint64_t a[6])
{
    char buf[CONSOLE_MAX_WRITE];
    uint64_t n;

    switch (a[0]) {
    case CONSOLEIO_write:
        n = (uint32_t)a[1];
        if ((int32_t)a[1] < 0)
            return -EINVAL;
        n = MIN(n, (uint64_t)sizeof(buf));
        if (gm_copy_from(pc, buf, a[2], n) < 0)
            return -EFAULT;
        console_write(&pc->d->console, buf, n);
        return 0;
    case CONSOLEIO_read:
        return 0;
    default:
        return -ENOSYS;
    }
}

static long hc_xen_version(struct pvcpu *pc, uint64_t a[6])
{
    switch (a[0]) {
    case XENVER_version:
        return (4 << 16) | 19;
    case XENVER_extraversion: {
        char s[XEN_EXTRAVERSION_LEN] = "-memvisor";
        return gm_copy_to(pc, a[1], s, sizeof(s)) < 0 ? -EFAULT : 0;
    }
    case XENVER_capabilities: {
        static const char s[XEN_CAPABILITIES_INFO_LEN] = "xen-3.0-x86_64";
        return gm_copy_to(pc, a[1], s, sizeof(s)) < 0 ? -EFAULT : 0;
    }
    case XENVER_platform_parameters: {
        struct xen_platform_parameters p = {.virt_start =
                                                HYPERVISOR_VIRT_START};
        return gm_copy_to(pc, a[1], &p, sizeof(p)) < 0 ? -EFAULT : 0;
    }
    case XENVER_get_features: {
        struct xen_feature_info fi;
        if (gm_copy_from(pc, &fi, a[1], sizeof(fi)) < 0)
            return -EFAULT;
        fi.submap = fi.submap_idx == 0
                        ? (1U << XENFEAT_writable_page_tables) |
                              (1U << XENFEAT_pae_pgdir_above_4gb) |
                              (1U << XENFEAT_mmu_pt_update_preserve_ad) |
                              (1U << XENFEAT_gnttab_map_avail_bits)
                        : 0;
        return gm_copy_to(pc, a[1], &fi, sizeof(fi)) < 0 ? -EFAULT : 0;
    }
    case XENVER_pagesize:
        return 4096;
    default:
        return -ENOSYS;
    }
}

static long hc_vm_assist(struct pvcpu *pc, uint64_t a[6])
{
    uint64_t allowed = (1ULL << VMASST_TYPE_writable_pagetables) |
                       (1ULL << VMASST_TYPE_pae_extended_cr3) |
                       (1ULL << VMASST_TYPE_runstate_update_flag) |
                       (1ULL << VMASST_TYPE_m2p_strict);

    if (a[1] >= 64 || !(allowed & (1ULL << a[1])))
        return -EINVAL;
    switch (a[0]) {
    case VMASST_CMD_enable:
        pc->vm_assist |= 1ULL << a[1];
        return 0;
    case VMASST_CMD_disable:
        pc->vm_assist &= ~(1ULL << a[1]);
        return 0;
    default:
        return -ENOSYS;
    }
}

static long hc_set_segment_base(struct pvcpu *pc, uint64_t a[6])
{
    struct kvm_vcpu_sregs *sr = pvcpu_sregs(pc);

    if (a[0] != SEGBASE_GS_USER_SEL && !x86_canonical(a[1]))
        return -EINVAL;
    switch (a[0]) {
    case SEGBASE_FS:
        pc->fs_base = a[1];
        sr->fs.base = a[1];
        break;
    case SEGBASE_GS_USER:
        pc->gs_base_user = a[1];
        if (!pc->kernel_mode)
            sr->gs.base = a[1];
        break;
    case SEGBASE_GS_KERNEL:
        pc->gs_base_kernel = a[1];
        if (pc->kernel_mode)
            sr->gs.base = a[1];
        break;
    case SEGBASE_GS_USER_SEL:
        /* Load the user GS selector: its base becomes the descriptor's,
         * 0 for every selector a 64-bit guest loads (the shim's GDT is
         * flat; the guest's own is never loaded). */
        if (a[1] > 0xffff)
            return -EINVAL;
        pc->gs_base_user = 0;
        if (!pc->kernel_mode)
            sr->gs.base = 0;
        break;
    default:
        return -EINVAL;
    }
    pc->sregs_dirty = true;
    return 0;
}

static long hc_sched_op(struct pvcpu *pc, uint64_t a[6])
{
    struct sched_shutdown ss;

    switch (a[0]) {
    case SCHEDOP_yield:
        sched_yield();
        return 0;
    case SCHEDOP_block: {
        /* Until an event (evtchn.c); a guest that never bound an event
         * channel has no event source: a short sleep (docs/abi.md). */
        struct timespec ts = {0, 100000};

        if (atomic_load(&pc->d->evt.guest_bound)) {
            evtchn_block(pc);
            return 0;
        }
        nanosleep(&ts, NULL);
        return 0;
    }
    case SCHEDOP_poll:
        /* Wait for one of a set of ports: answered at once (the guest
         * re-checks its ports; Linux's PV spinlocks spin instead). */
        sched_yield();
        return 0;
    case SCHEDOP_shutdown:
        if (gm_copy_from(pc, &ss, a[1], sizeof(ss)) < 0)
            return -EFAULT;
        pc->d->shutdown_reason = (int)ss.reason;
        vcpu_group_stop(&pc->d->group, (int)ss.reason);
        return 0;
    case SCHEDOP_shutdown_code:
        if (gm_copy_from(pc, &ss, a[1], sizeof(ss)) < 0)
            return -EFAULT;
        return 0;
    default:
        return -ENOSYS;
    }
}

/*
 * A guest instruction pointer to resume at (iret, VCPUOP_initialise): it
 * must be canonical, and, memvisor's own rule, outside the hypervisor's
 * range too, where the shim's code lives (a guest fetch at the shim's
 * SYSCALL entry would read as a SYSCALL, pvcpu.c).  The stack pointer is
 * held to the canonical rule alone.
 */
static bool guest_rip_ok(uint64_t rip)
{
    return x86_canonical(rip) &&
           !(rip >= HYPERVISOR_VIRT_START && rip < HYPERVISOR_VIRT_END);
}

/* iret: pop Xen's iret_context from the guest kernel stack. */
static long hc_iret(struct pvcpu *pc, uint64_t a[6])
{
    struct iret_context c;
    bool to_user;
    (void)a;

    if (gm_copy_from(pc, &c, pc->ret.rsp, sizeof(c)) < 0 ||
        !guest_rip_ok(c.rip) || !x86_canonical(c.rsp)) {
        /* As in Xen's do_iret: a frame that cannot be read, or that
         * would resume at a bad address, crashes the domain.  (The
         * failsafe callback is for segment loads that fail on the way
         * back to the guest, not for a bad iret frame.) */
        pvcpu_crash(pc,
                    "iret with an unreadable or non-canonical frame at "
                    "%#llx",
                    (unsigned long long)pc->ret.rsp);
        return -EFAULT;
    }
    pc->no_result = true;
    pc->regs.rax = c.rax;
    if (!(c.flags & VGCF_in_syscall)) {
        pc->regs.r11 = c.r11;
        pc->regs.rcx = c.rcx;
    }
    /* To user mode when the frame says ring 3 and there is a user base;
     * a kernel frame (RPL 0) or no user page tables stays in kernel mode. */
    to_user = (c.cs & 3) == 3 && !mfn_eq(hc_pv_base(pc, true), INVALID_MFN);
    if (to_user && pc->kernel_mode) {
        struct kvm_vcpu_sregs *sr = pvcpu_sregs(pc);

        pc->gs_base_kernel = sr->gs.base;
        sr->gs.base = pc->gs_base_user;
        pc->sregs_dirty = true;
        pc->kernel_mode = false;
        pvcpu_load_cr3(pc);
    }
    /* Events are unmasked as the frame's IF says (Xen's rule). */
    pvcpu_set_upcall_mask(pc, !(c.rflags & X86_EFLAGS_IF));
    pc->ret.rip = c.rip;
    pc->ret.cs = SHIM_SEL_CS3;
    pc->ret.rflags =
        (c.rflags & SHIM_RFLAGS_GUEST_MASK) | X86_EFLAGS_FIXED | X86_EFLAGS_IF;
    pc->ret.rsp = c.rsp;
    pc->ret.ss = SHIM_SEL_DS3;
    return 0;
}

/* VCPUOP_initialise: a down vCPU gets registers, traps, callbacks and its
 * L4 (validated as an L4 by pv). */
static long vcpu_initialise(struct pvcpu *pc, struct pvcpu *t, uint64_t va)
{
    struct domain *d = pc->d;
    struct vcpu_guest_context *ctx;
    struct kvm_vcpu_regs regs;
    struct kvm_vcpu_sregs sregs;
    long rc;

    if (t->up)
        return -EEXIST;
    if (t->gone)
        return -EBUSY; /* went down: its thread has left */
    ctx = malloc(sizeof(*ctx));
    if (!ctx)
        return -ENOMEM;
    rc = -EFAULT;
    if (gm_copy_from(pc, ctx, va, sizeof(*ctx)) < 0)
        goto out;
    rc = -EINVAL;
    if (!guest_rip_ok(ctx->user_regs.rip) || !x86_canonical(ctx->user_regs.rsp))
        goto out;
    if ((rc = hc_pv_set_base(t, _mfn(xen_cr3_to_pfn(ctx->ctrlreg[3])))) < 0)
        goto out;
    for (unsigned v = 0; v < 256; v++) {
        t->traps[v].address = ctx->trap_ctxt[v].address;
        t->traps[v].flags = ctx->trap_ctxt[v].flags;
    }
    t->kernel_ss = ctx->kernel_ss;
    t->kernel_sp = ctx->kernel_sp;
    t->event_cb = ctx->event_callback_eip;
    t->failsafe_cb = ctx->failsafe_callback_eip;
    t->syscall_cb = ctx->syscall_callback_eip;
    t->fs_base = ctx->fs_base;
    t->gs_base_kernel = ctx->gs_base_kernel;
    t->gs_base_user = ctx->gs_base_user;
    t->vm_assist = ctx->vm_assist;
    /* The virtual IOPL is the context's (Linux starts its CPUs at 1). */
    t->iopl = (unsigned)((ctx->user_regs.rflags >> 12) & 3);
    t->kernel_mode = true;
    rc = -EIO;
    if (kvm_vcpu_get_sregs(&t->vcpu.kvm, &sregs) < 0)
        goto out;
    sregs.cr3 = xen_cr3_to_pfn(ctx->ctrlreg[3]) << 12;
    sregs.fs.base = ctx->fs_base;
    sregs.gs.base = ctx->gs_base_kernel;
    {
        struct shim_frame to = {
            .rip = ctx->user_regs.rip,
            .cs = SHIM_SEL_CS3,
            .rflags = (ctx->user_regs.rflags & SHIM_RFLAGS_GUEST_MASK) |
                      X86_EFLAGS_FIXED | X86_EFLAGS_IF,
            .rsp = ctx->user_regs.rsp,
            .ss = SHIM_SEL_DS3,
        };
        shim_vcpu_start(&d->shim, t->id, &to, &regs);
    }
    regs.rax = ctx->user_regs.rax;
    regs.rbx = ctx->user_regs.rbx;
    regs.rcx = ctx->user_regs.rcx;
    regs.rdx = ctx->user_regs.rdx;
    regs.rsi = ctx->user_regs.rsi;
    regs.rdi = ctx->user_regs.rdi;
    regs.rbp = ctx->user_regs.rbp;
    regs.r8 = ctx->user_regs.r8;
    regs.r9 = ctx->user_regs.r9;
    regs.r10 = ctx->user_regs.r10;
    regs.r11 = ctx->user_regs.r11;
    regs.r12 = ctx->user_regs.r12;
    regs.r13 = ctx->user_regs.r13;
    regs.r14 = ctx->user_regs.r14;
    regs.r15 = ctx->user_regs.r15;
    if (kvm_vcpu_set_sregs(&t->vcpu.kvm, &sregs) < 0 ||
        kvm_vcpu_set_regs(&t->vcpu.kvm, &regs) < 0)
        goto out;
    t->cr3 = sregs.cr3;
    t->initialised = true;
    rc = 0;
out:
    free(ctx);
    return rc;
}

static long hc_vcpu_op(struct pvcpu *pc, uint64_t a[6])
{
    struct domain *d = pc->d;
    struct pvcpu *t;
    long rc;

    if (a[1] >= d->nr_vcpus)
        return -ENOENT;
    t = &d->vcpus[a[1]];
    pthread_mutex_lock(&d->vcpu_op_lock);
    switch (a[0]) {
    case VCPUOP_is_up:
        rc = t->up;
        break;
    case VCPUOP_initialise:
        rc = vcpu_initialise(pc, t, a[2]);
        break;
    case VCPUOP_down:
        /* A vCPU takes itself down (Linux's stop_self, CPU offlining):
         * its thread leaves for good, so it cannot come up again. */
        rc = -EINVAL;
        if (t != pc)
            break;
        t->up = false;
        t->gone = true;
        rc = 0;
        break;
    case VCPUOP_up:
        rc = -EINVAL;
        if (!t->initialised || t->gone)
            break;
        if (!t->up) {
            t->up = true;
            vcpu_set_online(&t->vcpu);
        }
        rc = 0;
        break;
    default:
        rc = hc_vcpu_op_other(pc, t, (unsigned)MIN(a[0], 0xffffULL), a[2]);
        break;
    }
    pthread_mutex_unlock(&d->vcpu_op_lock);
    return rc;
}

static long hc_multicall(struct pvcpu *pc, uint64_t a[6])
{
    struct multicall_entry e;

    if (a[1] > MULTICALL_MAX)
        return -EINVAL;
    for (; a[1] > 0; a[0] += sizeof(e), a[1]--) {
        uint64_t va = a[0];
        uint64_t args[6];

        if (gm_copy_from(pc, &e, va, sizeof(e)) < 0)
            return -EFAULT;
        memcpy(args, e.args, sizeof(args));
        e.result = (uint64_t)hc_dispatch_one(pc, (unsigned)MIN(e.op, 0xffffULL),
                                             args, HC_IN_MULTICALL);
        if (pc->retry) {
            /* The entry must finish after the shim stored back what it
             * changed: its remaining work goes back into the guest's entry
             * and the multicall continues there (Xen does the same). */
            memcpy(e.args, args, sizeof(args));
            if (gm_copy_to(pc, va, &e, sizeof(e)) < 0)
                return -EFAULT;
            return 0;
        }
        if (gm_copy_to(pc, va + offsetof(struct multicall_entry, result),
                       &e.result, sizeof(e.result)) < 0)
            return -EFAULT;
        if (vcpu_group_stopped(&pc->d->group))
            return 0;
    }
    return 0;
}

static const struct hc_entry hc_table[HV_NR_HYPERCALLS] = {
    [__HYPERVISOR_set_trap_table] = {"set_trap_table", hc_set_trap_table},
    [__HYPERVISOR_mmu_update] = {"mmu_update", hc_mmu_update},
    [__HYPERVISOR_set_gdt] = {"set_gdt", hc_set_gdt},
    [__HYPERVISOR_stack_switch] = {"stack_switch", hc_stack_switch},
    [__HYPERVISOR_set_callbacks] = {"set_callbacks", hc_set_callbacks},
    [__HYPERVISOR_fpu_taskswitch] = {"fpu_taskswitch", hc_fpu_taskswitch},
    [__HYPERVISOR_update_descriptor] = {"update_descriptor",
                                        hc_update_descriptor},
    [__HYPERVISOR_memory_op] = {"memory_op", hc_memory_op},
    [__HYPERVISOR_multicall] = {"multicall", hc_multicall},
    [__HYPERVISOR_update_va_mapping] = {"update_va_mapping",
                                        hc_update_va_mapping},
    [__HYPERVISOR_xen_version] = {"xen_version", hc_xen_version},
    [__HYPERVISOR_console_io] = {"console_io", hc_console_io},
    [__HYPERVISOR_vm_assist] = {"vm_assist", hc_vm_assist},
    [__HYPERVISOR_iret] = {"iret", hc_iret},
    [__HYPERVISOR_vcpu_op] = {"vcpu_op", hc_vcpu_op},
    [__HYPERVISOR_set_segment_base] = {"set_segment_base", hc_set_segment_base},
    [__HYPERVISOR_mmuext_op] = {"mmuext_op", hc_mmuext_op},
    [__HYPERVISOR_sched_op] = {"sched_op", hc_sched_op},
    [__HYPERVISOR_callback_op] = {"callback_op", hc_callback_op},
    [__HYPERVISOR_physdev_op] = {"physdev_op", hc_physdev_op},
    [__HYPERVISOR_event_channel_op] = {"event_channel_op",
                                       hc_event_channel_op},
    [__HYPERVISOR_set_timer_op] = {"set_timer_op", hc_set_timer_op},
};

const char *hv_hypercall_name(unsigned nr)
{
    return nr < HV_NR_HYPERCALLS && hc_table[nr].name ? hc_table[nr].name
                                                      : NULL;
}

/*
 * The guest boundary's one error conversion: memvisor's -errno to Xen's
 * negative error value.  Xen's values (include/xen/xen.h) are Linux's, and
 * so errno.h's here, for every one Xen defines: the conversion is the
 * identity, checked below at build time so that it stays one.
 */
static long hc_err(long r)
{
    BUILD_BUG_ON(XEN_EPERM != EPERM);
    BUILD_BUG_ON(XEN_ENOENT != ENOENT);
    BUILD_BUG_ON(XEN_ESRCH != ESRCH);
    BUILD_BUG_ON(XEN_EINTR != EINTR);
    BUILD_BUG_ON(XEN_EIO != EIO);
    BUILD_BUG_ON(XEN_ENXIO != ENXIO);
    BUILD_BUG_ON(XEN_E2BIG != E2BIG);
    BUILD_BUG_ON(XEN_ENOEXEC != ENOEXEC);
    BUILD_BUG_ON(XEN_EBADF != EBADF);
    BUILD_BUG_ON(XEN_ECHILD != ECHILD);
    BUILD_BUG_ON(XEN_EAGAIN != EAGAIN);
    BUILD_BUG_ON(XEN_ENOMEM != ENOMEM);
    BUILD_BUG_ON(XEN_EACCES != EACCES);
    BUILD_BUG_ON(XEN_EFAULT != EFAULT);
    BUILD_BUG_ON(XEN_EBUSY != EBUSY);
    BUILD_BUG_ON(XEN_EEXIST != EEXIST);
    BUILD_BUG_ON(XEN_EXDEV != EXDEV);
    BUILD_BUG_ON(XEN_ENODEV != ENODEV);
    BUILD_BUG_ON(XEN_EINVAL != EINVAL);
    BUILD_BUG_ON(XEN_ENFILE != ENFILE);
    BUILD_BUG_ON(XEN_EMFILE != EMFILE);
    BUILD_BUG_ON(XEN_ENOSPC != ENOSPC);
    BUILD_BUG_ON(XEN_EMLINK != EMLINK);
    BUILD_BUG_ON(XEN_EDOM != EDOM);
    BUILD_BUG_ON(XEN_ERANGE != ERANGE);
    BUILD_BUG_ON(XEN_EDEADLK != EDEADLK);
    BUILD_BUG_ON(XEN_ENAMETOOLONG != ENAMETOOLONG);
    BUILD_BUG_ON(XEN_ENOLCK != ENOLCK);
    BUILD_BUG_ON(XEN_ENOSYS != ENOSYS);
    BUILD_BUG_ON(XEN_ENODATA != ENODATA);
    BUILD_BUG_ON(XEN_ETIME != ETIME);
    BUILD_BUG_ON(XEN_EBADMSG != EBADMSG);
    BUILD_BUG_ON(XEN_EOVERFLOW != EOVERFLOW);
    BUILD_BUG_ON(XEN_EILSEQ != EILSEQ);
    BUILD_BUG_ON(XEN_ENOTSOCK != ENOTSOCK);
    BUILD_BUG_ON(XEN_EOPNOTSUPP != EOPNOTSUPP);
    BUILD_BUG_ON(XEN_EADDRINUSE != EADDRINUSE);
    BUILD_BUG_ON(XEN_EADDRNOTAVAIL != EADDRNOTAVAIL);
    BUILD_BUG_ON(XEN_ENOBUFS != ENOBUFS);
    return r;
}

/* Time spent in the handler, per hypercall type (stats; a blocking
 * SCHEDOP_block counts its wait). */
static void hc_time(struct pvcpu *pc, unsigned nr, const struct timespec *t0)
{
    struct timespec t1;

    clock_gettime(CLOCK_MONOTONIC, &t1);
    atomic_fetch_add_explicit(
        &pc->d->hc_ns[nr],
        (uint64_t)((t1.tv_sec - t0->tv_sec) * 1000000000LL +
                   (t1.tv_nsec - t0->tv_nsec)),
        memory_order_relaxed);
}

/* One hypercall, its result or -errno. */
static long hc_call(struct pvcpu *pc, unsigned nr, uint64_t a[6],
                    unsigned flags)
{
    struct timespec t0;
    long r;

    if (flags & HC_FROM_USER)
        return -EPERM; /* hypercalls are for the guest kernel alone */
    if (nr >= HV_NR_HYPERCALLS || !hc_table[nr].fn) {
        atomic_fetch_add_explicit(&pc->d->hc_unknown, 1, memory_order_relaxed);
        return -ENOSYS;
    }
    if ((flags & HC_IN_MULTICALL) &&
        (nr == __HYPERVISOR_iret || nr == __HYPERVISOR_multicall))
        return -EINVAL;
    atomic_fetch_add_explicit(&pc->d->hc_count[nr], 1, memory_order_relaxed);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (unsigned i = 0;; i++) {
        pc->retry = false;
        r = hc_table[nr].fn(pc, a);
        if (!pc->retry) {
            hc_time(pc, nr, &t0);
            return r;
        }
        atomic_fetch_add_explicit(&pc->d->continuations, 1,
                                  memory_order_relaxed);
        /* Back to the guest (through the touch loop) when the touch list
         * fills up, and, outside a multicall, when someone waits or after
         * many rounds; otherwise go on at once. */
        if (pvcpu_touch_room(pc) < SHIM_TOUCH_MAX / 2 ||
            (!(flags & HC_IN_MULTICALL) &&
             (vcpu_pause_pending(&pc->vcpu) || pc->d->test_preempt ||
              i >= HC_MAX_RETRIES_INLINE))) {
            hc_time(pc, nr, &t0);
            return r; /* pc->retry: the caller re-enters through the guest */
        }
    }
}

long hc_dispatch_one(struct pvcpu *pc, unsigned nr, uint64_t a[6],
                     unsigned flags)
{
    long r = hc_call(pc, nr, a, flags);

    if (!(flags & HC_IN_MULTICALL))
        hv_dm_end_hypercall(pc, nr);
    return r < 0 ? hc_err(r) : r;
}

long hv_domain_test_hypercall(struct domain *d, unsigned vcpu, unsigned nr,
                              const uint64_t args[6], uint64_t rip,
                              uint64_t rsp)
{
    struct pvcpu *pc = &d->vcpus[vcpu % d->nr_vcpus];
    uint64_t a[6];
    long r = 0;

    memcpy(a, args, sizeof(a));
    memset(&pc->regs, 0, sizeof(pc->regs));
    pc->sregs_valid = false;
    pc->sregs_dirty = false;
    pc->ret = (struct shim_frame){.rip = rip,
                                  .cs = SHIM_SEL_CS3,
                                  .rflags = X86_EFLAGS_FIXED,
                                  .rsp = rsp,
                                  .ss = SHIM_SEL_DS3};
    for (unsigned i = 0; i < 100000; i++) {
        r = hc_dispatch_one(pc, nr, a, 0);
        if (!pc->retry)
            break;
        pvcpu_touch_release(pc); /* what the touch loop would have done */
    }
    if (pc->sregs_dirty && pc->sregs_valid)
        (void)!kvm_vcpu_set_sregs(&pc->vcpu.kvm, &pc->sregs);
    /* no shim runs here: drop what a touch loop would have stored back */
    pvcpu_touch_release(pc);
    return r;
}

int hv_domain_test_poke(struct domain *d, uint64_t va, const void *buf,
                        uint64_t len)
{
    return gm_copy_to(&d->vcpus[0], va, buf, len);
}

void hypercall_dispatch(struct pvcpu *pc)
{
    struct kvm_vcpu_regs *r = &pc->regs;
    unsigned nr = (unsigned)MIN(r->rax, 0xffffULL);
    uint64_t a[6] = {r->rdi, r->rsi, r->rdx, r->r10, r->r8, r->r9};
    long res;

    pc->no_result = false;
    res = hc_dispatch_one(pc, nr, a, pc->kernel_mode ? 0 : HC_FROM_USER);
    if (pc->retry) {
        /* Continuation through the guest: re-execute `int $4` with the
         * remaining work in the argument registers. */
        r->rdi = a[0];
        r->rsi = a[1];
        r->rdx = a[2];
        r->r10 = a[3];
        r->r8 = a[4];
        r->r9 = a[5];
        r->rax = nr;
        pc->ret.rip -= 2;
        return;
    }
    if (!pc->no_result)
        r->rax = (uint64_t)res;
}
