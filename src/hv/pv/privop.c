/*
 * privop.c - the privileged instructions a PV kernel executes in ring 3
 * that Xen emulates for it, and nothing more: the rest stay the #GP or #UD
 * they are (the hostile workload relies on that).
 *
 *  - CPUID behind Xen's forced-emulation prefix (`ud2; .ascii "xen";
 *    cpuid`, 0f 0b 78 65 6e 0f a2; Linux's xen_cpuid): the host's leaves
 *    with what a PV guest cannot use masked (XSAVE and the AVX family,
 *    VMX/SVM, MONITOR, x2APIC, PCID, SMEP/SMAP, PKU, 1 GiB pages, ...),
 *    and Xen's hypervisor leaves at 0x40000000 ("XenVMMXenVMM").
 *  - RDMSR/WRMSR of FS_BASE, GS_BASE and SHADOW_GS_BASE (the guest's user
 *    GS base), as Xen's PV MSR emulation does; PAT reads Xen's fixed value
 *    and accepts a write of that value.  Any other MSR is #GP.
 *  - `mov %cr0, %reg` and `mov %cr4, %reg` read the values a PV guest sees;
 *    `mov %reg, %cr4` is accepted and changes nothing (Xen keeps a PV
 *    guest's CR4 to fixed bits).  CR3, CR2, CR0 writes stay #GP: a PV
 *    kernel has hypercalls for those.
 *  - with a virtual IOPL raised by PHYSDEVOP_set_iopl, in/out from the
 *    kernel: reads give all ones, writes are dropped (no port is the
 *    domain's), as Xen emulates them; cli/sti set/clear the event mask.
 *
 * Every byte of the instruction is read through the guest's own page
 * tables (gm_copy_from); an unreadable one leaves the fault as it was.
 */
#include <cpuid.h>
#include <errno.h>
#include <string.h>

#include "hv/hv_internal.h"
#include "hv/pv/pvhv.h"
#include "lib/x86.h"
#include "xen/xen.h"

#define MSR_FS_BASE 0xc0000100u
#define MSR_GS_BASE 0xc0000101u
#define MSR_SHADOW_GS_BASE 0xc0000102u
#define MSR_PAT 0x277u
/* Xen's fixed PAT for PV guests: WB, WT, UC-, UC, WC, WP, UC, UC. */
#define XEN_PV_PAT 0x0000050100070406ULL

#define CR0_PV (0x80000000ULL | 0x00040000ULL | 0x00010000ULL | 0x20ULL | \
                0x10ULL | 0x2ULL | 0x1ULL) /* PG AM WP NE ET MP PE */
#define CR4_PV (0x20ULL | 0x200ULL | 0x400ULL) /* PAE OSFXSR OSXMMEXCPT */

#define BIT(n) (1u << (n))

/* The register operand `n` (ModRM numbering, REX-extended) of the
 * interrupted guest context: rsp is the ring-3 frame's. */
static uint64_t *reg_ptr(struct pvcpu *pc, unsigned n)
{
    struct kvm_vcpu_regs *r = &pc->regs;

    switch (n & 15) {
    case 0: return &r->rax;
    case 1: return &r->rcx;
    case 2: return &r->rdx;
    case 3: return &r->rbx;
    case 4: return &pc->ret.rsp;
    case 5: return &r->rbp;
    case 6: return &r->rsi;
    case 7: return &r->rdi;
    case 8: return &r->r8;
    case 9: return &r->r9;
    case 10: return &r->r10;
    case 11: return &r->r11;
    case 12: return &r->r12;
    case 13: return &r->r13;
    case 14: return &r->r14;
    default: return &r->r15;
    }
}

void privop_cpuid(unsigned vcpu, uint32_t leaf, uint32_t sub, uint32_t out[4])
{
    uint32_t a = 0, b = 0, c = 0, d = 0;

    if (leaf >= 0x40000000u && leaf < 0x40010000u) {
        switch (leaf) {
        case 0x40000000u: /* "XenVMMXenVMM", leaves up to base + 5 */
            a = 0x40000005u;
            memcpy(&b, "XenV", 4);
            memcpy(&c, "MMXe", 4);
            memcpy(&d, "nVMM", 4);
            break;
        case 0x40000001u:
            a = (4u << 16) | 19u; /* the version xen_version reports */
            break;
        case 0x40000002u:
            a = 1;           /* hypercall pages */
            b = 0x40000000u; /* Xen's hypercall-page MSR (not used by PV) */
            break;
        default:
            break;
        }
        out[0] = a, out[1] = b, out[2] = c, out[3] = d;
        return;
    }
    __cpuid_count(leaf, sub, a, b, c, d);
    switch (leaf) {
    case 1:
        c &= ~(BIT(3) | BIT(4) | BIT(5) | BIT(6) | BIT(7) | BIT(8) | BIT(12) |
               BIT(15) | BIT(17) | BIT(18) | BIT(21) | BIT(24) | BIT(26) |
               BIT(27) | BIT(28) | BIT(29));
        c |= BIT(31); /* running on a hypervisor */
        d &= ~(BIT(1) | BIT(2) | BIT(3) | BIT(7) | BIT(9) | BIT(12) |
               BIT(14) | BIT(17) | BIT(18) | BIT(21) | BIT(22) | BIT(29) |
               BIT(31));
        /* initial APIC id: the vCPU; one logical processor per package */
        b = (b & 0x0000ffffu) | (vcpu << 24) | (1u << 16);
        d &= ~BIT(28); /* HTT */
        break;
    case 7:
        if (sub == 0) {
            a = 0;
            b &= BIT(3) | BIT(8) | BIT(9) | BIT(18) | BIT(19) | BIT(23) |
                 BIT(24) | BIT(29); /* BMI1 BMI2 ERMS RDSEED ADX CLFLUSHOPT
                                       CLWB SHA */
            c &= BIT(8) | BIT(22);  /* GFNI RDPID */
            d = 0;
        } else {
            a = b = c = d = 0;
        }
        break;
    case 0x80000001u:
        c &= ~(BIT(2) | BIT(3) | BIT(12) | BIT(13) | BIT(15) | BIT(16) |
               BIT(22) | BIT(23) | BIT(24) | BIT(26) | BIT(28));
        d &= ~(BIT(26)); /* 1 GiB pages */
        break;
    case 4: case 5: case 6: case 0xa: case 0xb: case 0xd: case 0xf:
    case 0x10: case 0x12: case 0x14: case 0x18: case 0x1a: case 0x1b:
    case 0x1f:
        a = b = c = d = 0;
        break;
    default:
        break;
    }
    out[0] = a, out[1] = b, out[2] = c, out[3] = d;
}

static int rdmsr(struct pvcpu *pc, uint32_t msr, uint64_t *v)
{
    switch (msr) {
    case MSR_FS_BASE:
        *v = pvcpu_sregs(pc)->fs.base;
        return 0;
    case MSR_GS_BASE:
        *v = pvcpu_sregs(pc)->gs.base;
        return 0;
    case MSR_SHADOW_GS_BASE:
        *v = pc->kernel_mode ? pc->gs_base_user : pc->gs_base_kernel;
        return 0;
    case MSR_PAT:
        *v = XEN_PV_PAT;
        return 0;
    default:
        return -EPERM;
    }
}

static int wrmsr(struct pvcpu *pc, uint32_t msr, uint64_t v)
{
    struct kvm_vcpu_sregs *sr;

    switch (msr) {
    case MSR_FS_BASE:
    case MSR_GS_BASE:
    case MSR_SHADOW_GS_BASE:
        if (!x86_canonical(v))
            return -EINVAL;
        sr = pvcpu_sregs(pc);
        if (msr == MSR_FS_BASE) {
            pc->fs_base = v;
            sr->fs.base = v;
        } else if (msr == MSR_GS_BASE) {
            /* the current mode's GS base */
            sr->gs.base = v;
            if (pc->kernel_mode)
                pc->gs_base_kernel = v;
            else
                pc->gs_base_user = v;
        } else if (pc->kernel_mode) {
            pc->gs_base_user = v;
        } else {
            pc->gs_base_kernel = v;
        }
        pc->sregs_dirty = true;
        return 0;
    case MSR_PAT:
        return v == XEN_PV_PAT ? 0 : -EINVAL;
    default:
        return -EPERM;
    }
}

/*
 * Port I/O from a kernel that raised its virtual IOPL (PHYSDEVOP_set_iopl)
 * is emulated as Xen does for ports the domain was not given (all of them
 * here): an input reads all ones, an output is dropped.  in/out with an
 * immediate port or %dx, 8/16/32 bits; string forms stay #GP.
 */
static bool port_io(struct pvcpu *pc, const uint8_t *in)
{
    unsigned n, size;
    bool out, imm;

    n = hv_decode_pio(in, &out, &size, &imm);
    if (!n)
        return false;
    if (!out) {
        uint64_t ones = size == 1 ? 0xff : size == 2 ? 0xffff : 0xffffffffULL;
        if (size == 4)
            pc->regs.rax = ones; /* a 32-bit result zero-extends */
        else
            pc->regs.rax |= ones;
    }
    pc->ret.rip += n;
    atomic_fetch_add_explicit(&pc->d->privops, 1, memory_order_relaxed);
    return true;
}

int privop_emulate(struct pvcpu *pc, unsigned vector)
{
    uint8_t in[16];
    unsigned n = 0, rex = 0;
    uint64_t v;

    memset(in, 0, sizeof(in));
    /* Up to 16 bytes, fewer at the end of a mapping. */
    if (gm_copy_from(pc, in, pc->ret.rip, sizeof(in)) < 0 &&
        gm_copy_from(pc, in, pc->ret.rip, 8) < 0)
        return 0;
    if (vector == X86_TRAP_UD) {
        static const uint8_t fep[] = {0x0f, 0x0b, 'x', 'e', 'n', 0x0f, 0xa2};
        uint32_t out[4];

        if (memcmp(in, fep, sizeof(fep)) != 0)
            return 0;
        privop_cpuid(pc->id, (uint32_t)pc->regs.rax, (uint32_t)pc->regs.rcx,
                     out);
        pc->regs.rax = out[0];
        pc->regs.rbx = out[1];
        pc->regs.rcx = out[2];
        pc->regs.rdx = out[3];
        pc->ret.rip += sizeof(fep);
        atomic_fetch_add_explicit(&pc->d->privops, 1, memory_order_relaxed);
        return 1;
    }
    if (vector != X86_TRAP_GP || !pc->kernel_mode)
        return 0;
    if (pc->iopl >= 1 && port_io(pc, in))
        return 1;
    if (pc->iopl >= 1 && (in[0] == 0xfa || in[0] == 0xfb)) {
        /* cli/sti under a raised virtual IOPL: the event mask (Xen's
         * "fast and loose" rule; a later popf does not restore it) */
        pvcpu_set_upcall_mask(pc, in[0] == 0xfa);
        pc->ret.rip += 1;
        atomic_fetch_add_explicit(&pc->d->privops, 1, memory_order_relaxed);
        return 1;
    }
    if ((in[0] & 0xf0) == 0x40)
        rex = in[n++];
    if (in[n] != 0x0f)
        return 0;
    switch (in[n + 1]) {
    case 0x30: /* wrmsr */
        if (rex || wrmsr(pc, (uint32_t)pc->regs.rcx,
                         (pc->regs.rdx << 32) | (uint32_t)pc->regs.rax) < 0)
            return 0;
        n += 2;
        break;
    case 0x32: /* rdmsr */
        if (rex || rdmsr(pc, (uint32_t)pc->regs.rcx, &v) < 0)
            return 0;
        pc->regs.rax = (uint32_t)v;
        pc->regs.rdx = v >> 32;
        n += 2;
        break;
    case 0x20: { /* mov %crN, %reg */
        uint8_t modrm = in[n + 2];
        unsigned cr = ((modrm >> 3) & 7) | ((rex & 4) ? 8 : 0);
        unsigned reg = (modrm & 7) | ((rex & 1) ? 8 : 0);

        if (cr == 0)
            v = CR0_PV | (pc->fpu_ts ? X86_CR0_TS : 0);
        else if (cr == 4)
            v = CR4_PV;
        else
            return 0;
        *reg_ptr(pc, reg) = v;
        n += 3;
        break;
    }
    case 0x22: { /* mov %reg, %crN: CR4 only, and its value is ignored
                  * (Xen keeps a PV guest's CR4 to its fixed bits) */
        uint8_t modrm = in[n + 2];
        unsigned cr = ((modrm >> 3) & 7) | ((rex & 4) ? 8 : 0);

        if (cr != 4)
            return 0;
        n += 3;
        break;
    }
    default:
        return 0;
    }
    pc->ret.rip += n;
    atomic_fetch_add_explicit(&pc->d->privops, 1, memory_order_relaxed);
    return 1;
}
