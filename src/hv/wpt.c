/*
 * wpt.c - writable page tables: a guest kernel store to a page-table page
 * it maps read-only faults (#PF, present+write) into memvisor, which
 * decodes the store, and if the target is a validated L1 table of the
 * domain, applies it as an mmu_update of that entry (validated by pv like
 * any other).  Decoding covers the plain 8-byte MOV stores a kernel uses
 * for PTEs: `mov %reg, m64` (REX.W 89 /r) and `mov $imm32, m64` (REX.W C7
 * /0).  Anything else, or a refused entry, is bounced to the guest as #PF.
 */
#include <errno.h>
#include <string.h>

#include "hv/hv_internal.h"
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

int wpt_emulate(struct pvcpu *pc, uint64_t cr2)
{
    struct frames *f = &pc->d->hv->frames;
    uint8_t insn[15];
    uint64_t maddr, l1e_maddr, l1e, val, type;
    unsigned i = 0, rex = 0;
    int ml, rc;
    struct mmu_update req;
    uint32_t done = 0;

    if (cr2 & 7)
        return 0;
    if (gm_copy_from(pc, insn, pc->ret.rip, sizeof(insn)) < 0 &&
        gm_copy_from(pc, insn, pc->ret.rip, 8) < 0)
        return 0;
    if ((insn[0] & 0xf0) == 0x40)
        rex = insn[i++];
    if (!(rex & 8))
        return 0; /* only 8-byte stores */
    if (insn[i] == 0x89) {
        ml = modrm_len(&insn[i + 1], sizeof(insn) - i - 1);
        if (ml < 0)
            return 0;
        val = reg(&pc->regs, ((insn[i + 1] >> 3) & 7) | ((rex & 4) << 1));
        i += 1 + (unsigned)ml;
    } else if (insn[i] == 0xc7 && ((insn[i + 1] >> 3) & 7) == 0) {
        int32_t imm;
        ml = modrm_len(&insn[i + 1], sizeof(insn) - i - 1);
        if (ml < 0 || i + 1 + (unsigned)ml + 4 > sizeof(insn))
            return 0;
        memcpy(&imm, &insn[i + 1 + ml], 4);
        val = (uint64_t)(int64_t)imm;
        i += 1 + (unsigned)ml + 4;
    } else {
        return 0;
    }
    if (gm_translate(pc, cr2, &maddr, &l1e_maddr, &l1e) < 0)
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
    req.ptr = maddr | MMU_NORMAL_PT_UPDATE;
    req.val = val;
    do
        rc = pv_mmu_update(pc->pv, &req, 1, &done, DOMID_SELF);
    while (rc == -ERESTART);
    if (rc < 0)
        return rc;
    pvcpu_touch_add(pc, maddr);
    pc->ret.rip += i;
    return 1;
}
