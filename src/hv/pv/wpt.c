/*
 * wpt.c - writable page tables: a guest kernel store to a page-table page
 * it maps read-only faults (#PF, present+write) into memvisor, which
 * decodes the store, and if the target is a validated L1 table of the
 * domain, applies it as an mmu_update of that entry (validated by pv like
 * any other).  Decoding covers the plain 8-byte MOV stores a kernel uses
 * for PTEs: `mov %reg, m64` (REX.W 89 /r) and `mov $imm32, m64` (REX.W C7
 * /0), and the read-modify-writes Linux uses on them (with or without a
 * lock or DS prefix): `xchg %reg, m64` (REX.W 87 /r: the old entry to the
 * register), `cmpxchg %reg, m64` (REX.W 0F B1 /r: against rax, ZF),
 * `and`/`or` of a byte (80 /4, /1 ib: Linux's clear_bit/set_bit of a PTE
 * flag), of a qword (REX.W 81 /4, /1 id; 83 ib; 21, 09 /r), and `btr`/`bts`
 * of a qword (REX.W 0F BA /6, /5 ib: CF = the old bit).  The new entry is
 * computed from the current one and applied as an mmu_update.  The stack
 * pointer as a register operand is refused.  Anything else, or a refused
 * entry, is bounced to the guest as #PF.
 */
#include <errno.h>
#include <string.h>

#include "hv/hv_internal.h"
#include "hv/pv/pvhv.h"
#include "lib/x86.h"
#include "pv/pv.h"

/* Length of the ModRM/SIB/displacement bytes at p (64-bit addressing). */
static int modrm_len(const uint8_t *p, unsigned avail)
{
    unsigned mod, rm, len = 1;

    if (avail < 1)
        return -1;
    mod = p[0] >> 6;
    rm = p[0] & 7;
    if (mod == 3)
        return -1; /* register operand: not a store */
    if (rm == 4) {
        if (avail < 2)
            return -1;
        len++;
        if (mod == 0 && (p[1] & 7) == 5)
            len += 4;
    } else if (mod == 0 && rm == 5) {
        len += 4; /* rip-relative */
    }
    if (mod == 1)
        len += 1;
    else if (mod == 2)
        len += 4;
    return (int)len;
}

static uint64_t reg(const struct kvm_vcpu_regs *r, unsigned n)
{
    const uint64_t v[16] = {r->rax, r->rcx, r->rdx, r->rbx, r->rsp, r->rbp,
                            r->rsi, r->rdi, r->r8,  r->r9,  r->r10, r->r11,
                            r->r12, r->r13, r->r14, r->r15};
    return v[n & 15];
}

static void set_reg(struct kvm_vcpu_regs *r, unsigned n, uint64_t v)
{
    uint64_t *p[16] = {&r->rax, &r->rcx, &r->rdx, &r->rbx, &r->rsp, &r->rbp,
                       &r->rsi, &r->rdi, &r->r8,  &r->r9,  &r->r10, &r->r11,
                       &r->r12, &r->r13, &r->r14, &r->r15};
    *p[n & 15] = v;
}

enum wop { W_MOV, W_XCHG, W_CMPXCHG, W_AND, W_OR, W_BTR, W_BTS };

int wpt_emulate(struct pvcpu *pc, uint64_t cr2)
{
    struct frames *f = &pc->d->hv->frames;
    uint8_t insn[15];
    uint64_t maddr, l1e_maddr, l1e, type, old, val = 0, nval;
    unsigned i = 0, rex = 0, size = 8, xreg = 0, modrm;
    enum wop op;
    int ml, rc;
    struct mmu_update req;
    uint32_t done = 0;

    if (gm_copy_from(pc, insn, pc->ret.rip, sizeof(insn)) < 0 &&
        gm_copy_from(pc, insn, pc->ret.rip, 8) < 0)
        return 0;
    while (i < 3 && (insn[i] == 0xf0 || insn[i] == 0x3e))
        i++; /* lock, ds (Linux's LOCK_PREFIX on one CPU) */
    if ((insn[i] & 0xf0) == 0x40)
        rex = insn[i++];
    if (insn[i] == 0x0f) {
        i++;
        if (insn[i] == 0xb1)
            op = W_CMPXCHG;
        else if (insn[i] == 0xba)
            op = W_BTR; /* or W_BTS, by the reg field below */
        else
            return 0;
    } else {
        switch (insn[i]) {
        case 0x89: op = W_MOV; break;
        case 0xc7: op = W_MOV; break;
        case 0x87: op = W_XCHG; break;
        case 0x80: case 0x81: case 0x83: op = W_AND; break;
        case 0x21: op = W_AND; break;
        case 0x09: op = W_OR; break;
        default: return 0;
        }
    }
    if (i + 1 >= sizeof(insn))
        return 0;
    modrm = insn[i + 1];
    ml = modrm_len(&insn[i + 1], sizeof(insn) - i - 1);
    if (ml < 0)
        return 0;
    xreg = ((modrm >> 3) & 7) | ((rex & 4) << 1);
    switch (insn[i]) {
    case 0x89: case 0x87: case 0xb1: case 0x21: case 0x09: /* reg operand */
        if (!(rex & 8) || xreg == 4)
            return 0;
        val = reg(&pc->regs, xreg);
        i += 1 + (unsigned)ml;
        break;
    case 0xc7: /* mov $imm32 */
    case 0x81: /* and/or $imm32 */
    case 0x83: /* and/or $imm8 */
    case 0x80: /* and/or byte $imm8 */
    case 0xba: /* btr/bts $imm8 */ {
        unsigned immsz = (insn[i] == 0xc7 || insn[i] == 0x81) ? 4 : 1;
        unsigned sub = (modrm >> 3) & 7;
        unsigned at = i + 1 + (unsigned)ml;

        if (at + immsz > sizeof(insn))
            return 0;
        if (insn[i] == 0xc7) {
            int32_t imm;
            if (sub != 0 || !(rex & 8))
                return 0;
            memcpy(&imm, &insn[at], 4);
            val = (uint64_t)(int64_t)imm;
        } else if (insn[i] == 0xba) {
            if (!(rex & 8) || (sub != 5 && sub != 6))
                return 0;
            op = sub == 5 ? W_BTS : W_BTR;
            val = insn[at] & 63;
        } else {
            if (sub != 1 && sub != 4)
                return 0;
            op = sub == 4 ? W_AND : W_OR;
            if (insn[i] == 0x80) {
                size = 1;
                val = insn[at];
            } else if (!(rex & 8)) {
                return 0;
            } else if (insn[i] == 0x81) {
                int32_t imm;
                memcpy(&imm, &insn[at], 4);
                val = (uint64_t)(int64_t)imm;
            } else {
                val = (uint64_t)(int64_t)(int8_t)insn[at];
            }
        }
        i = at + immsz;
        break;
    }
    default:
        return 0;
    }
    if (size == 8 && (cr2 & 7))
        return 0;
    if (gm_translate(pc, cr2 & ~7ULL, &maddr, &l1e_maddr, &l1e) < 0)
        return 0;
    if (l1e & PTE_RW)
        return 0; /* not a read-only mapping: some other fault */
    if ((maddr >> PAGE_SHIFT) >= f->nr_frames ||
        frame_owner(f, _mfn(maddr >> PAGE_SHIFT)) != pc->d->id)
        return 0;
    type = atomic_load(&frames_get_frame(f, _mfn(maddr >> PAGE_SHIFT))
                            ->type_info);
    if ((type & FRAME_TYPE_MASK) != FRAME_TYPE_L1 ||
        !(type & FRAME_TYPE_VALIDATED))
        return 0; /* only validated L1 tables are emulated (as Xen) */
    old = __atomic_load_n((uint64_t *)frames_ptr(f, _mfn(maddr >> PAGE_SHIFT)) +
                              ((maddr & (PAGE_SIZE - 1)) >> 3),
                          __ATOMIC_SEQ_CST);
    if (size == 1) {
        unsigned sh = (unsigned)(cr2 & 7) * 8;
        uint64_t m = 0xffULL << sh;
        val = (val << sh) | (op == W_AND ? ~m : 0);
    }
    switch (op) {
    case W_MOV: case W_XCHG: nval = val; break;
    case W_CMPXCHG:
        if (old != pc->regs.rax) {
            /* fails: rax gets the entry, ZF clear, no store */
            pc->regs.rax = old;
            pc->ret.rflags &= ~X86_EFLAGS_ZF;
            pc->ret.rip += i;
            return 1;
        }
        nval = val;
        break;
    case W_AND: nval = old & val; break;
    case W_OR: nval = old | val; break;
    case W_BTR: nval = old & ~(1ULL << val); break;
    default: nval = old | (1ULL << val); break; /* W_BTS */
    }
    if (nval != old) {
        req.ptr = maddr | MMU_NORMAL_PT_UPDATE;
        req.val = nval;
        do
            rc = pv_mmu_update(pc->pv, &req, 1, &done, DOMID_SELF);
        while (rc == -ERESTART);
        if (rc < 0)
            return rc;
        pvcpu_touch_add(pc, maddr);
    }
    if (op == W_XCHG)
        set_reg(&pc->regs, xreg, old);
    else if (op == W_CMPXCHG)
        pc->ret.rflags |= X86_EFLAGS_ZF;
    else if (op == W_BTR || op == W_BTS)
        pc->ret.rflags = (pc->ret.rflags & ~X86_EFLAGS_CF) |
                         (((old >> val) & 1) ? X86_EFLAGS_CF : 0);
    pc->ret.rip += i;
    return 1;
}
