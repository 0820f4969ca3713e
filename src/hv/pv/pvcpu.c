/*
 * pvcpu.c - what a PV vCPU's shim events mean: hypercalls, exceptions
 * bounced to the guest kernel in Xen's frame format, SYSCALL, software
 * interrupts, writable-page-table faults, and the kernel/user switch.
 *
 * Every event arrives as one port exit from a shim stub (shim.h).  The
 * handler reads the registers, decides, and leaves in pc->ret the ring-3
 * frame to return through; pvcpu_exit() then writes it to the shim stack
 * and resumes.  CR3 is switched here, through KVM_SET_SREGS, whenever the
 * guest changes between kernel and user mode (separate base pointers, as
 * Xen x86-64 keeps them).
 *
 * Guest-visible selectors are Xen's flat ones (FLAT_RING3_CS64 and
 * FLAT_RING3_SS64); frames of events taken in guest kernel mode carry CS
 * with RPL 0, so a kernel tells kernel from user interruptions by CS & 3,
 * as on Xen.
 */
#include <errno.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "hv/hv_internal.h"
#include "hv/pv/pvhv.h"
#include "lib/x86.h"
#include "xen/xen.h"

void pvcpu_crash(struct pvcpu *pc, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    int n;

    n = snprintf(buf, sizeof(buf), "domain %u vcpu %u crashed: ", pc->d->id,
                 pc->id);
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof(buf))
        vsnprintf(buf + n, sizeof(buf) - (size_t)n, fmt, ap);
    va_end(ap);
    vcpu_group_crash(&pc->d->group, &pc->vcpu, "%s\n", buf);
}

uint64_t pvcpu_vcpu_info_maddr(const struct pvcpu *pc)
{
    if (pc->vi_maddr)
        return pc->vi_maddr; /* VCPUOP_register_vcpu_info */
    if (pc->id >= XEN_LEGACY_MAX_VCPUS)
        return 0;
    return (mfn_x(pc->d->shared_info_mfn) << PAGE_SHIFT) +
           offsetof(struct shared_info, vcpu_info) +
           pc->id * sizeof(struct vcpu_info);
}

static struct vcpu_info *vcpu_info(struct pvcpu *pc)
{
    uint64_t m = pvcpu_vcpu_info_maddr(pc);

    return m ? (struct vcpu_info *)(void *)((uint8_t *)pc->d->hv->frames.base +
                                           m)
             : NULL;
}

/* Machine address of a field of this vCPU's vcpu_info. */
static uint64_t vcpu_info_maddr(const struct pvcpu *pc, size_t field)
{
    return pvcpu_vcpu_info_maddr(pc) + field;
}

/* vcpu_info writes go through the dirty-logging accessor. */
void pvcpu_set_cr2(struct pvcpu *pc, uint64_t cr2)
{
    if (vcpu_info(pc) &&
        gm_write_phys(pc->d,
                      vcpu_info_maddr(pc, offsetof(struct vcpu_info, arch.cr2)),
                      &cr2, sizeof(cr2)) < 0)
        pvcpu_crash(pc, "cannot write vcpu_info");
}

static uint8_t upcall_mask(struct pvcpu *pc)
{
    struct vcpu_info *vi = vcpu_info(pc);
    return vi ? __atomic_load_n(&vi->evtchn_upcall_mask, __ATOMIC_RELAXED) : 1;
}

void pvcpu_set_upcall_mask(struct pvcpu *pc, uint8_t m)
{
    if (vcpu_info(pc) &&
        gm_write_phys(
            pc->d,
            vcpu_info_maddr(pc, offsetof(struct vcpu_info, evtchn_upcall_mask)),
            &m, 1) < 0)
        pvcpu_crash(pc, "cannot write vcpu_info");
}

uint64_t pvcpu_guest_cs(const struct pvcpu *pc)
{
    return pc->kernel_mode ? (FLAT_KERNEL_CS & ~3ULL) : FLAT_USER_CS;
}

struct kvm_vcpu_sregs *pvcpu_sregs(struct pvcpu *pc)
{
    if (!pc->sregs_valid) {
        if (kvm_vcpu_get_sregs(&pc->vcpu.kvm, &pc->sregs) < 0)
            pvcpu_crash(pc, "cannot read segment registers");
        pc->sregs_valid = true;
    }
    return &pc->sregs;
}

void pvcpu_load_cr3(struct pvcpu *pc)
{
    mfn_t base = hc_pv_base(pc, !pc->kernel_mode);

    if (!mfn_eq(base, INVALID_MFN) && pc->cr3 != mfn_x(base) << PAGE_SHIFT) {
        pvcpu_sregs(pc)->cr3 = mfn_x(base) << PAGE_SHIFT;
        pc->cr3 = mfn_x(base) << PAGE_SHIFT;
        pc->sregs_dirty = true;
    }
}

/* Enter guest kernel mode (from user mode): its page tables, its GS. */
static void to_kernel_mode(struct pvcpu *pc)
{
    struct kvm_vcpu_sregs *sr;

    if (pc->kernel_mode)
        return;
    sr = pvcpu_sregs(pc);
    pc->gs_base_user = sr->gs.base;
    sr->gs.base = pc->gs_base_kernel;
    pc->sregs_dirty = true;
    pc->kernel_mode = true;
    pvcpu_load_cr3(pc);
}

/*
 * Push Xen's bounce frame on the guest kernel stack and continue at
 * handler.  The interrupted context is pc->ret (ring 3) and the current
 * rcx/r11 in pc->regs.
 */
static int bounce_to(struct pvcpu *pc, uint64_t handler, bool has_err,
                     uint64_t err, bool mask_events)
{
    uint64_t frame[8], sp;
    unsigned n = 0;
    uint64_t cs = pvcpu_guest_cs(pc) | ((uint64_t)upcall_mask(pc) << 32);
    struct shim_frame old = pc->ret;

    if (!handler || !x86_canonical(handler))
        return -ENOENT;
    if (!pc->kernel_mode) {
        to_kernel_mode(pc);
        sp = pc->kernel_sp;
    } else {
        sp = old.rsp;
    }
    sp &= ~15ULL;
    frame[n++] = pc->regs.rcx;
    frame[n++] = pc->regs.r11;
    if (has_err)
        frame[n++] = err;
    frame[n++] = old.rip;
    frame[n++] = cs;
    /* IF in the frame is the virtual one, !event mask (as Xen builds it),
     * so that the handler's iret restores the mask it interrupted. */
    frame[n++] = (old.rflags & ~X86_EFLAGS_IF) |
                 (upcall_mask(pc) ? 0 : X86_EFLAGS_IF);
    frame[n++] = old.rsp;
    frame[n++] = FLAT_KERNEL_SS;
    sp -= n * 8;
    if (gm_copy_to(pc, sp, frame, n * 8) < 0)
        return -EFAULT;
    if (mask_events)
        pvcpu_set_upcall_mask(pc, 1);
    pc->ret.rip = handler;
    pc->ret.cs = SHIM_SEL_CS3;
    pc->ret.rflags =
        (old.rflags & ~(X86_EFLAGS_TF | X86_EFLAGS_NT | X86_EFLAGS_RF |
                        X86_EFLAGS_VM | X86_EFLAGS_AC)) |
        X86_EFLAGS_FIXED;
    pc->ret.rsp = sp;
    pc->ret.ss = SHIM_SEL_DS3;
    return 0;
}

int pvcpu_bounce(struct pvcpu *pc, unsigned vector, bool has_err, uint64_t err)
{
    const struct hv_trap *t = &pc->traps[vector & 255];
    int r;

    if (vector < 32)
        atomic_fetch_add_explicit(&pc->d->bounces[vector], 1,
                                  memory_order_relaxed);

    r = bounce_to(pc, t->address, has_err, err, t->flags & 4);
    if (r == -ENOENT) {
        uint64_t st[4] = {0};

        /* the top of the guest's stack, for the report (0s if unmapped) */
        (void)!gm_copy_from(pc, st, pc->ret.rsp, sizeof(st));
        pvcpu_crash(pc,
                    "vector %u (error %#llx) at rip %#llx in %s mode and no "
                    "handler registered; rsp %#llx: %#llx %#llx %#llx %#llx",
                    vector, (unsigned long long)err,
                    (unsigned long long)pc->ret.rip,
                    pc->kernel_mode ? "kernel" : "user",
                    (unsigned long long)pc->ret.rsp, (unsigned long long)st[0],
                    (unsigned long long)st[1], (unsigned long long)st[2],
                    (unsigned long long)st[3]);
        return -EIO;
    }
    if (r < 0) {
        /* Xen would use the failsafe callback; the kernel stack is
         * unusable, so nothing of the guest can run. */
        pvcpu_crash(pc,
                    "cannot write the bounce frame of vector %u (error %#llx) "
                    "at rip %#llx: %s; kernel stack %#llx",
                    vector, (unsigned long long)err,
                    (unsigned long long)pc->ret.rip, strerror(-r),
                    (unsigned long long)(pc->kernel_mode ? pc->ret.rsp
                                                         : pc->kernel_sp));
        return -EIO;
    }
    return 0;
}

static int on_syscall(struct pvcpu *pc)
{
    /* The instruction is done: continue after it, with SYSCALL's flags. */
    pc->ret.rip = pc->regs.rcx;
    pc->ret.rflags = pc->regs.r11 | X86_EFLAGS_FIXED;
    pc->ret.cs = SHIM_SEL_CS3;
    pc->ret.ss = SHIM_SEL_DS3;
    if (pc->kernel_mode) {
        /* Xen's x86-64 hypercall instruction: SYSCALL from guest kernel
         * mode, number in rax; a continuation re-executes it (2 bytes). */
        hypercall_dispatch(pc);
        return 0;
    }
    atomic_fetch_add_explicit(&pc->d->syscalls, 1, memory_order_relaxed);
    if (!pc->syscall_cb) {
        /* Not a hypercall entry here (docs/abi.md): #UD at the SYSCALL. */
        pc->ret.rip = pc->regs.rcx - 2;
        return pvcpu_bounce(pc, X86_TRAP_UD, false, 0);
    }
    if (bounce_to(pc, pc->syscall_cb, false, 0, false) < 0) {
        pvcpu_crash(pc, "cannot write the SYSCALL frame");
        return -EIO;
    }
    return 0;
}

static unsigned ev_error_vector(const struct pvcpu *pc)
{
    return (unsigned)(pc->last_error >> 3);
}

/* `int $n` from ring 3: #UD here (the emulating KVM), #GP(n*8+2) on
 * hardware.  Deliver to the guest's gate if its DPL allows the caller. */
static int soft_int(struct pvcpu *pc, unsigned vector, bool *handled)
{
    uint8_t insn[2];
    unsigned n;

    *handled = false;
    if (gm_copy_from(pc, insn, pc->ret.rip, 2) < 0 || insn[0] != 0xcd)
        return 0;
    n = insn[1];
    if (vector == X86_TRAP_GP && pc->regs.rip != 0 &&
        (ev_error_vector(pc) != n))
        return 0;
    *handled = true;
    if (!pc->traps[n].address ||
        (pc->traps[n].flags & 3) < (pc->kernel_mode ? 1 : 3))
        /* Architecturally: #GP(n*8+2) at the instruction. */
        return pvcpu_bounce(pc, X86_TRAP_GP, true, n * 8 + 2);
    pc->ret.rip += 2;
    return pvcpu_bounce(pc, n, false, 0);
}

static int on_exception(struct pvcpu *pc, const struct shim_event *ev)
{
    unsigned v = ev->entry;
    uint64_t err = ev->error;

    pc->last_error = err;
    bool handled;
    int r;

    switch (v) {
    case X86_TRAP_PF: {
        uint64_t cr2 = pvcpu_sregs(pc)->cr2;
        uint64_t lstar = SHIM_VA_PERCPU(pc->id) + SHIM_PERCPU_SYSCALL;

        if (cr2 == lstar && ev->frame.rip == lstar)
            return on_syscall(pc); /* SYSCALL that stayed in ring 3 */
        if (pc->kernel_mode &&
            (err & (X86_PF_PROT | X86_PF_WRITE | X86_PF_INSTR)) ==
                (X86_PF_PROT | X86_PF_WRITE)) {
            r = wpt_emulate(pc, cr2);
            if (r == 1) {
                atomic_fetch_add_explicit(&pc->d->wpt_emulated, 1,
                                          memory_order_relaxed);
                return 0;
            }
            if (r < 0)
                atomic_fetch_add_explicit(&pc->d->wpt_refused, 1,
                                          memory_order_relaxed);
        }
        if (!(err & X86_PF_INSTR)) {
            /* Spurious: the tables already allow the access, the fault
             * came from a translation another vCPU's update has not yet
             * reached here (Xen's spurious_page_fault).  Make this vCPU
             * re-read the entry and retry, a few times at most. */
            uint64_t l1e_maddr;
            if (gm_access_ok(pc, cr2, err & X86_PF_WRITE, &l1e_maddr) == 0 &&
                (pc->spurious_va != cr2 || pc->spurious_streak < 4)) {
                pc->spurious_streak =
                    pc->spurious_va == cr2 ? pc->spurious_streak + 1 : 1;
                pc->spurious_va = cr2;
                atomic_fetch_add_explicit(&pc->d->spurious_faults, 1,
                                          memory_order_relaxed);
                pvcpu_touch_add(pc, l1e_maddr);
                pc->want_flush = true;
                return 0;
            }
        }
        pc->spurious_streak = 0;
        if (pc->kernel_mode)
            err &= ~X86_PF_USER;
        pvcpu_set_cr2(pc, cr2);
        return pvcpu_bounce(pc, X86_TRAP_PF, true, err);
    }
    case X86_TRAP_UD:
        if (privop_emulate(pc, v))
            return 0;
        r = soft_int(pc, v, &handled);
        if (handled)
            return r;
        return pvcpu_bounce(pc, v, false, 0);
    case X86_TRAP_GP:
        if ((err & 7) == 2) {
            r = soft_int(pc, v, &handled);
            if (handled)
                return r;
        }
        if (err == 0) { /* in/out: a device model's port? */
            r = hv_pio_emulate(pc, &handled);
            if (handled || r < 0)
                return r;
            /* else one Xen emulates for a PV kernel (privop.c) */
            if (privop_emulate(pc, v))
                return 0;
        }
        return pvcpu_bounce(pc, v, true, err);
    case X86_TRAP_NM:
        if (pc->fpu_ts) {
            /* The guest asked for TS (fpu_taskswitch): clear it and let
             * the guest's handler restore its FPU state. */
            pc->fpu_ts = false;
            pvcpu_sregs(pc)->cr0 &= ~X86_CR0_TS;
            pc->sregs_dirty = true;
        }
        return pvcpu_bounce(pc, v, false, 0);
    default:
        return pvcpu_bounce(pc, v, ev->has_error, err);
    }
}

void pvcpu_touch_add(struct pvcpu *pc, uint64_t maddr)
{
    struct frames *f = &pc->d->hv->frames;
    mfn_t mfn = _mfn(maddr >> PAGE_SHIFT);

    if (pc->nr_touch == SHIM_TOUCH_MAX) {
        /* callers take a continuation before the list fills; a pin of a
         * very large tree can still overflow it: counted, and the TLB is
         * flushed (docs/pv-on-kvm.md, known limits) */
        atomic_fetch_add_explicit(&pc->d->touch_overflow, 1,
                                  memory_order_relaxed);
        pc->want_flush = true;
        return;
    }
    if (!frames_mfn_valid(f, mfn) || frame_get(f, mfn, pc->d->id) < 0)
        return; /* not the domain's frame (any more): nothing to show */
    pc->touch[pc->nr_touch++] = maddr;
}

/*
 * A TLB flush another vCPU asked for, before this vCPU's next entry,
 * whatever it was doing (guest ring 3, the shim, the touch loop).  CR3 is
 * reloaded through KVM_SET_SREGS with its page-level write-through bit
 * toggled: a changed CR3 makes the KVM rebuild this vCPU's MMU context and
 * flush its whole TLB (the hardware's for the guest, or the shadow MMU's
 * roots, resynchronised) before the next guest instruction.  The bit only
 * sets the memory type of the root table's own accesses.  CR4.PGE is off
 * (shim.c), so no global entry survives.
 */
int pvcpu_flush(struct vcpu *v, void *opaque)
{
    struct pvcpu *pc = container_of(v, struct pvcpu, vcpu);
    struct kvm_vcpu_sregs sr;
    struct kvm_vcpu_regs regs;
    int r;

    (void)opaque;
    /* A slot update may be holding the domain's vCPUs out of the guest
     * (mem_pause() in domain.c): this one waits here until it committed. */
    hv_mem_pause_wait(pc->d);
    /* About to start the touch loop from its first instruction (its CR3
     * reload is ahead, before any guest instruction): nothing to add.
     * Anywhere else — the guest, a stub, a loop past its reload — reload
     * through the KVM. */
    if ((r = kvm_vcpu_get_regs(&v->kvm, &regs)) < 0)
        return r;
    if (regs.rip == SHIM_VA_CODE + SHIM_OFF_TOUCH)
        return 0;
    if ((r = kvm_vcpu_get_sregs(&v->kvm, &sr)) < 0)
        return r;
    sr.cr3 ^= X86_CR3_PWT;
    if ((r = kvm_vcpu_set_sregs(&v->kvm, &sr)) < 0)
        return r;
    pc->cr3 = sr.cr3;
    return 0;
}

int pvcpu_touch_now(struct pvcpu *pc, uint64_t maddr)
{
    struct kvm_vcpu *kv = &pc->vcpu.kvm;
    struct kvm_vcpu_regs saved, regs;
    struct kvm_exit ex;
    int r;

    if ((r = kvm_vcpu_get_regs(kv, &saved)) < 0)
        return r;
    regs = saved;
    shim_touch(&pc->d->shim, pc->id, &maddr, 1, &regs);
    if ((r = kvm_vcpu_set_regs(kv, &regs)) < 0)
        return r;
    /* not while a slot update holds the vCPUs (its slots may be absent) */
    hv_mem_run_begin(pc->d);
    for (;;) {
        r = kvm_vcpu_run(kv);
        if (r == -EINTR)
            continue; /* a kick: the loop is still to finish */
        if (r < 0)
            break;
        kvm_vcpu_exit(kv, &ex);
        if (ex.kind == KVM_XK_INTR)
            continue;
        if (ex.kind != KVM_XK_IO ||
            shim_port_entry(ex.io.port, ex.io.size, ex.io.out) !=
                SHIM_ENTRY_TOUCH_DONE)
            r = -EIO;
        break;
    }
    hv_mem_run_end(pc->d);
    if (r < 0)
        return r;
    atomic_fetch_add_explicit(&pc->d->touched_now, 1, memory_order_relaxed);
    return kvm_vcpu_set_regs(kv, &saved);
}

void hv_domain_test_no_touch(struct domain *d)
{
    d->test_no_touch = true;
}

void hv_domain_test_no_tlb_flush(struct domain *d)
{
    d->test_no_tlb_flush = true;
}

void pvcpu_touch_release(struct pvcpu *pc)
{
    for (unsigned i = 0; i < pc->nr_touch; i++)
        frame_put(&pc->d->hv->frames, _mfn(pc->touch[i] >> PAGE_SHIFT));
    pc->nr_touch = 0;
    pc->want_flush = false;
}

/* The event upcall on top of pc->ret: a bounce to the event callback with
 * events masked (Xen's rule for an upcall). */
static int deliver_upcall(struct pvcpu *pc)
{
    atomic_fetch_add_explicit(&pc->d->evt.upcalls, 1, memory_order_relaxed);
    if (bounce_to(pc, pc->event_cb, false, 0, true) < 0) {
        pvcpu_crash(pc, "cannot write the event upcall's frame (stack %#llx)",
                    (unsigned long long)(pc->kernel_mode ? pc->ret.rsp
                                                         : pc->kernel_sp));
        return -EIO;
    }
    return 0;
}

int pvcpu_event(struct vcpu *v, void *opaque)
{
    struct pvcpu *pc = container_of(v, struct pvcpu, vcpu);
    struct kvm_vcpu_regs regs;
    (void)opaque;

    if (!evtchn_upcall_due(pc))
        return 0;
    if (kvm_vcpu_get_regs(&v->kvm, &regs) < 0)
        return -EIO;
    /* In the shim (a stub, the start, the touch loop): its exit to
     * memvisor comes before any guest instruction and delivers then. */
    if (regs.rip >= HYPERVISOR_VIRT_START && regs.rip < HYPERVISOR_VIRT_END)
        return 0;
    /* An exception KVM has not delivered yet (kicked between the fault
     * and its delivery): it would be delivered at the callback instead.
     * Its stub's exit comes first and delivers the upcall then. */
    {
        bool busy = true;

        if (kvm_vcpu_event_in_flight(&v->kvm, &busy) < 0 || busy)
            return 0;
    }
    /* Interrupted in the guest (ring 3): the frame is its registers. */
    pc->regs = regs;
    pc->sregs_valid = false;
    pc->sregs_dirty = false;
    pc->ret = (struct shim_frame){.rip = regs.rip,
                                  .cs = SHIM_SEL_CS3,
                                  .rflags = regs.rflags,
                                  .rsp = regs.rsp,
                                  .ss = SHIM_SEL_DS3};
    if (deliver_upcall(pc) < 0)
        return -EIO;
    regs.rip = pc->ret.rip;
    regs.rsp = pc->ret.rsp;
    regs.rflags = pc->ret.rflags;
    if (pc->sregs_dirty && pc->sregs_valid &&
        kvm_vcpu_set_sregs(&v->kvm, &pc->sregs) < 0)
        return -EIO;
    return kvm_vcpu_set_regs(&v->kvm, &regs) < 0 ? -EIO : 0;
}

int pvcpu_exit(struct vcpu *v, void *opaque)
{
    struct pvcpu *pc = container_of(v, struct pvcpu, vcpu);
    struct domain *d = opaque;
    struct kvm_exit ex;
    struct shim_event ev;
    int entry, r;

    kvm_vcpu_exit(&v->kvm, &ex);
    if (ex.kind == KVM_XK_MMIO) {
        /* An access where the VM has no slot.  A store to the domain's RAM
         * whose slot is momentarily absent is performed (memslot); any
         * other gpa is not the domain's memory: only this domain crashes
         * (defence in depth behind the page-table rules). */
        r = memslot_handle_mmio(&d->ms, _gpa(ex.mmio.addr), ex.mmio.data,
                                ex.mmio.len, ex.mmio.is_write);
        if (r == -ENOENT) /* granted I/O memory: its device model */
            r = hv_mmio_forward(pc, ex.mmio.addr, ex.mmio.data, ex.mmio.len,
                                ex.mmio.is_write);
        if (r == 0)
            return VCPU_CONTINUE;
        pvcpu_crash(pc, "%s of gpa %#llx: not this domain's memory",
                    ex.mmio.is_write ? "store" : "load",
                    (unsigned long long)ex.mmio.addr);
        return -EIO;
    }
    if (ex.kind != KVM_XK_IO) {
        pvcpu_crash(pc, "unexpected exit %s", kvm_exit_reason_name(ex.raw));
        return -EIO;
    }
    entry = shim_port_entry(ex.io.port, ex.io.size, ex.io.out);
    if (entry < 0) {
        pvcpu_crash(pc, "port %#x access", ex.io.port);
        return -EIO;
    }
    if (kvm_vcpu_get_regs(&v->kvm, &pc->regs) < 0) {
        pvcpu_crash(pc, "cannot read registers");
        return -EIO;
    }
    pc->sregs_valid = false;
    pc->sregs_dirty = false;
    if (entry == SHIM_ENTRY_TOUCH_DONE) {
        /* The shim stored the entries back: drop the holds and return to
         * the guest with its own registers through the frame in place. */
        pvcpu_touch_release(pc);
        if (kvm_vcpu_set_regs(&v->kvm, &pc->touch_saved) < 0) {
            pvcpu_crash(pc, "cannot write registers");
            return -EIO;
        }
        return VCPU_CONTINUE;
    }
    r = shim_event_read(&d->shim, pc->id, (unsigned)entry, pc->regs.rsp, &ev);
    if (r < 0 || (entry != SHIM_ENTRY_SYSCALL && ev.frame.cs != SHIM_SEL_CS3)) {
        pvcpu_crash(pc,
                    "event %d from ring 0 (rsp %#llx, frame cs %#llx rip "
                    "%#llx): a fault inside the shim",
                    entry, (unsigned long long)pc->regs.rsp,
                    (unsigned long long)ev.frame.cs,
                    (unsigned long long)ev.frame.rip);
        return -EIO;
    }
    pc->ret = ev.frame;
    pc->retry = false;
    /* Any other event means the guest got past a spurious fault: the
     * retry limit counts faults in a row only (the touch loop's own
     * hand-over comes between two retries and returned above). */
    if (entry != X86_TRAP_PF)
        pc->spurious_streak = 0;

    if (entry == SHIM_ENTRY_HYPERCALL) {
        hypercall_dispatch(pc);
    } else if (entry == SHIM_ENTRY_SYSCALL) {
        pc->ret.rsp = shim_saved_rsp(&d->shim, pc->id);
        r = on_syscall(pc);
    } else if (entry == SHIM_ENTRY_IRQ) {
        r = 0; /* no interrupt sources yet: resume */
    } else if (entry < 32) {
        r = on_exception(pc, &ev);
    } else {
        pvcpu_crash(pc, "unknown shim entry %d", entry);
        r = -EIO;
    }
    if (vcpu_group_stopped(&d->group))
        return VCPU_SHUTDOWN;
    if (pc->gone)
        return VCPU_PARK; /* VCPUOP_down on itself */
    if (r < 0 && entry != SHIM_ENTRY_HYPERCALL)
        return r;
    if (pc->sregs_dirty && pc->sregs_valid &&
        kvm_vcpu_set_sregs(&v->kvm, &pc->sregs) < 0) {
        pvcpu_crash(pc, "cannot write segment registers");
        return -EIO;
    }
    if (evtchn_upcall_due(pc) && deliver_upcall(pc) < 0)
        return -EIO;
    if (pc->sregs_dirty && pc->sregs_valid &&
        kvm_vcpu_set_sregs(&v->kvm, &pc->sregs) < 0) {
        pvcpu_crash(pc, "cannot write segment registers");
        return -EIO;
    }
    shim_resume(&d->shim, pc->id, &pc->ret, &pc->regs);
    if (d->test_no_touch)
        pvcpu_touch_release(pc);
    if (pc->nr_touch || pc->want_flush) {
        pc->touch_saved = pc->regs;
        shim_touch(&d->shim, pc->id, pc->touch, pc->nr_touch, &pc->regs);
    }
    if (kvm_vcpu_set_regs(&v->kvm, &pc->regs) < 0) {
        pvcpu_crash(pc, "cannot write registers");
        return -EIO;
    }
    return VCPU_CONTINUE;
}

void pvcpu_diag(struct vcpu *v, char *buf, size_t len, void *opaque)
{
    struct pvcpu *pc = container_of(v, struct pvcpu, vcpu);
    (void)opaque;
    snprintf(buf, len, " guest %s mode; last ring-3 rip %#llx rsp %#llx\n",
             pc->kernel_mode ? "kernel" : "user",
             (unsigned long long)pc->ret.rip, (unsigned long long)pc->ret.rsp);
}
