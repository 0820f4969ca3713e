/*
 * memvisor-frame-demo: a scripted walk through the frame table and the PV
 * page-table rules on the real code, printed as tables.  `make demo` runs
 * it until guests run.
 *
 * Two domains.  Domain 1 builds a 4-level tree and pins it; then it tries
 * what the rules forbid (a writable mapping of a page table, pinning a
 * frame that is mapped writable, PSE at L2, the hypervisor's L4 slots, a
 * frame of domain 2) and each is refused; an unpin is preempted half-way
 * and the partial entry is seen holding its reference; a frame that is
 * still mapped is ballooned out and stays until its last mapping goes.
 * pv_audit() and frames_check() run after every step.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frame/frame.h"
#include "pv/pv.h"

enum { P, A, B, C, X, Y, NR_D1 };
static const char *const role[NR_D1] = {"P (L4)", "A (L3)", "B (L2)",
                                        "C (L1)", "X data", "Y data"};

struct demo {
    struct frames f;
    struct pv_domain d1, d2;
    struct pv_vcpu v1, v1b, v2;
    mfn_t fr[NR_D1];
    mfn_t z; /* domain 2's frame */
    unsigned step;
    unsigned audit_failures;
};

static const char *err(int rc)
{
    static char buf[32];

    switch (rc) {
    case 0:
        return "ok";
    case -EINVAL:
        return "refused: -EINVAL";
    case -EPERM:
        return "refused: -EPERM";
    case -EBUSY:
        return "refused: -EBUSY";
    case -ENOENT:
        return "refused: -ENOENT";
    case -ERESTART:
        return "preempted: -ERESTART";
    default:
        snprintf(buf, sizeof(buf), "rc %d", rc);
        return buf;
    }
}

static void audit(struct demo *s)
{
    struct pv_audit_report r1, r2;
    int a = pv_audit(&s->d1, &r1), b = pv_audit(&s->d2, &r2);
    int c = frames_check(&s->f);

    if (a || b || c) {
        s->audit_failures++;
        printf("        audit: FAILED (%s)\n", a   ? r1.first
                                               : b ? r2.first
                                                   : "frames_check");
    } else {
        printf("        audit: ok (%" PRIu64 " frames, %" PRIu64
               " page tables recounted)\n",
               r1.frames + r2.frames, r1.tables + r2.tables);
    }
}

static void row(struct demo *s, const char *result, const char *fmt, ...)
    __printf(3, 4);

static void row(struct demo *s, const char *result, const char *fmt, ...)
{
    char what[160];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    printf("%3u  %-58s %s\n", ++s->step, what, result);
}

static const char *type_name(uint64_t t)
{
    static const char *const n[8] = {"none", "L1", "L2", "L3",
                                     "L4",   "?5", "?6", "writable"};

    return n[(t & FRAME_TYPE_MASK) >> FRAME_TYPE_SHIFT];
}

static void frames_table(struct demo *s)
{
    uint64_t info[NR_D1];
    unsigned i;

    for (i = 0; i < NR_D1; i++)
        info[i] = mfn_x(s->fr[i]);
    if (pv_pageframe_info(&s->d1, info, NR_D1))
        memset(info, 0, sizeof(info));
    printf("        %-8s %-5s %-5s %-9s %-5s %-6s %-24s %s\n", "frame", "mfn",
           "owner", "type", "types", "refs", "flags", "reported as");
    for (i = 0; i < NR_D1; i++) {
        mfn_t m = s->fr[i];
        uint64_t t = frame_type_word(&s->f, m);
        const struct frame *pg = frames_get_frame(&s->f, m);
        char flags[64] = "", owner[8], rep[24];
        domid_t o = frame_owner(&s->f, m);
        unsigned lt = (unsigned)((info[i] & PV_PFINFO_LTABTYPE_MASK) >>
                                 PV_PFINFO_LTAB_SHIFT);

        if (t & FRAME_TYPE_VALIDATED)
            strcat(flags, "validated ");
        if (t & FRAME_TYPE_PINNED)
            strcat(flags, "pinned ");
        if (t & FRAME_TYPE_PARTIAL)
            snprintf(flags + strlen(flags), sizeof(flags) - strlen(flags),
                     "PARTIAL@%u%s ", pg->nr_validated,
                     (pg->partial_flags & FRAME_PARTIAL_SET) ? "+ref" : "");
        if (atomic_load(&pg->count_info) & FRAME_ALLOCATED)
            strcat(flags, "alloc");
        if (o == DOMID_NONE)
            strcpy(owner, "free");
        else
            snprintf(owner, sizeof(owner), "d%u", o);
        if ((info[i] & PV_PFINFO_LTAB_MASK) == PV_PFINFO_XTAB)
            strcpy(rep, "not ours");
        else if (lt)
            snprintf(rep, sizeof(rep), "L%u table%s", lt,
                     (info[i] & PV_PFINFO_LPINTAB) ? ", pinned" : "");
        else
            strcpy(rep, "plain page");
        printf("        %-8s %#-5" PRIx64 " %-5s %-9s %-5" PRIu64 " %-6" PRIu64
               " %-24s %s\n",
               role[i], mfn_x(m), owner,
               (t & FRAME_TYPE_COUNT_MASK) || (t & FRAME_TYPE_MASK)
                   ? type_name(t)
                   : "-",
               (uint64_t)(t & FRAME_TYPE_COUNT_MASK), frame_count(&s->f, m),
               flags, rep);
    }
}

static int ext(struct pv_vcpu *v, unsigned cmd, mfn_t m)
{
    struct mmuext_op op = {.cmd = cmd, .arg1.mfn = mfn_x(m)};
    uint32_t done = 0;
    int rc;

    do {
        rc = pv_mmuext_op(v, &op, 1, &done, DOMID_SELF);
    } while (rc == -ERESTART);
    return rc;
}

static int mmu(struct pv_vcpu *v, mfn_t table, unsigned idx, uint64_t val)
{
    struct mmu_update u = {.ptr = frames_offset(table) + idx * 8ULL,
                           .val = val};
    uint32_t done = 0;
    int rc;

    do {
        rc = pv_mmu_update(v, &u, 1, &done, DOMID_SELF);
    } while (rc == -ERESTART);
    return rc;
}

static uint64_t pte(mfn_t m, uint64_t flags)
{
    return (mfn_x(m) << PAGE_SHIFT) | flags;
}

static long populate(struct pv_vcpu *v, mfn_t *out, unsigned n)
{
    uint64_t ext_[NR_D1];
    struct pv_reservation r = {
        .extent_start = ext_, .nr_extents = n, .domid = DOMID_SELF};
    unsigned long cmd = XENMEM_populate_physmap;
    long done;

    for (unsigned i = 0; i < n; i++)
        ext_[i] = 0x100 + i;
    do {
        done = pv_memory_op(v, &cmd, &r);
    } while (done == -ERESTART);
    for (unsigned i = 0; i < n && done == (long)n; i++)
        out[i] = _mfn(ext_[i]);
    return done;
}

#define RW (PTE_P | PTE_RW | PTE_US)
#define RO (PTE_P | PTE_US)

int main(void)
{
    static struct demo s;
    uint64_t *pt;
    long n;
    int rc;

    if (frames_init(&s.f, 64) || frames_domain_add(&s.f, 1, 16) ||
        frames_domain_add(&s.f, 2, 16) || pv_domain_init(&s.d1, &s.f, 1) ||
        pv_domain_init(&s.d2, &s.f, 2) || pv_vcpu_init(&s.v1, &s.d1) ||
        pv_vcpu_init(&s.v1b, &s.d1) || pv_vcpu_init(&s.v2, &s.d2)) {
        fprintf(stderr, "memvisor-frame-demo: set-up failed\n");
        return 1;
    }
    printf("memvisor frame table demo: a 64-frame pool, domains d1 and d2, "
           "struct frame = %zu bytes\n\n",
           sizeof(struct frame));
    printf("%3s  %-58s %s\n", "#", "operation", "result");

    n = populate(&s.v1, s.fr, NR_D1);
    row(&s, n == NR_D1 ? "ok" : "FAILED",
        "d1 populate_physmap: %u frames (P A B C X Y)", NR_D1);
    n = populate(&s.v2, &s.z, 1);
    row(&s, n == 1 ? "ok" : "FAILED",
        "d2 populate_physmap: 1 frame Z (mfn %#" PRIx64 ")", mfn_x(s.z));
    audit(&s);

    /* The guest fills its tables through its own (writable) mappings. */
    pt = frames_ptr(&s.f, s.fr[P]);
    pt[0] = pte(s.fr[A], RW);
    pt = frames_ptr(&s.f, s.fr[A]);
    pt[0] = pte(s.fr[B], RW);
    pt = frames_ptr(&s.f, s.fr[B]);
    pt[0] = pte(s.fr[C], RW);
    pt = frames_ptr(&s.f, s.fr[C]);
    pt[0] = pte(s.fr[X], RW);
    pt[1] = pte(s.fr[Y], RO);
    row(&s, "ok",
        "d1 writes P[0]->A, A[0]->B, B[0]->C, C[0]->X rw, "
        "C[1]->Y ro");
    rc = ext(&s.v1, MMUEXT_PIN_L4_TABLE, s.fr[P]);
    row(&s, err(rc), "d1 mmuext PIN_L4_TABLE P (validates the tree)");
    frames_table(&s);
    audit(&s);

    printf("\nwhat the rules refuse:\n");
    rc = mmu(&s.v1, s.fr[C], 2, pte(s.fr[B], RW));
    row(&s, err(rc), "map page table B writable (C[2] = B rw)");
    audit(&s);
    rc = mmu(&s.v1, s.fr[C], 3, pte(s.fr[C], RW));
    row(&s, err(rc), "map C itself writable (C[3] = C rw)");
    audit(&s);
    rc = ext(&s.v1, MMUEXT_PIN_L1_TABLE, s.fr[X]);
    row(&s, err(rc), "pin X as an L1 while C[0] maps it writable");
    audit(&s);
    rc = mmu(&s.v1, s.fr[B], 1, pte(s.fr[C], RW | PTE_PSE));
    row(&s, err(rc), "PSE (superpage) entry at L2 (B[1] = C | PSE)");
    audit(&s);
    rc = mmu(&s.v1, s.fr[P], PV_HV_L4_FIRST, pte(s.fr[A], RW));
    row(&s, err(rc), "write the hypervisor's L4 slot 256 (P[256] = A)");
    audit(&s);
    rc = mmu(&s.v1, s.fr[C], 4, pte(s.z, RO));
    row(&s, err(rc), "map d2's frame Z from d1 (C[4] = Z ro)");
    audit(&s);
    rc = ext(&s.v1, MMUEXT_PIN_L4_TABLE, s.fr[P]);
    row(&s, err(rc), "pin P again (already pinned)");
    audit(&s);

    printf("\na preempted unpin (the hook stops it every 600 entries):\n");
    {
        struct mmuext_op op = {.cmd = MMUEXT_UNPIN_TABLE,
                               .arg1.mfn = mfn_x(s.fr[P])};
        uint32_t done = 0;
        unsigned issues = 0;

        pv_vcpu_set_preempt(&s.v1, 600, true);
        rc = pv_mmuext_op(&s.v1, &op, 1, &done, DOMID_SELF);
        issues++;
        row(&s, err(rc), "d1 vCPU0 mmuext UNPIN_TABLE P");
        printf("        the partial entry keeps its reference on the frame "
               "below it (XSA-299 rule):\n");
        frames_table(&s);
        audit(&s);
        rc = ext(&s.v1b, MMUEXT_PIN_L3_TABLE, s.fr[A]);
        row(&s, err(rc),
            "d1 vCPU1 pins A meanwhile (A is partial: "
            "resumes it)");
        audit(&s);
        while (rc = pv_mmuext_op(&s.v1, &op, 1, &done, DOMID_SELF),
               rc == -ERESTART)
            issues++;
        issues++;
        pv_vcpu_set_preempt(&s.v1, 0, false);
        row(&s, err(rc),
            "d1 vCPU0 re-issues the unpin until done (%u "
            "issues)",
            issues);
        frames_table(&s);
        audit(&s);
        rc = ext(&s.v1b, MMUEXT_UNPIN_TABLE, s.fr[A]);
        row(&s, err(rc), "d1 vCPU1 unpins A");
        audit(&s);
    }

    printf("\nballoon out a frame that is still mapped:\n");
    rc = ext(&s.v1, MMUEXT_PIN_L4_TABLE, s.fr[P]);
    row(&s, err(rc), "d1 pins P again");
    audit(&s);
    {
        uint64_t e = mfn_x(s.fr[X]);
        struct pv_reservation r = {
            .extent_start = &e, .nr_extents = 1, .domid = DOMID_SELF};
        unsigned long cmd = XENMEM_decrease_reservation;

        do {
            n = pv_memory_op(&s.v1, &cmd, &r);
        } while (n == -ERESTART);
        row(&s, n == 1 ? "ok" : "FAILED",
            "d1 decrease_reservation X "
            "(C[0] still maps it)");
        frames_table(&s);
        audit(&s);
    }
    rc = mmu(&s.v1, s.fr[C], 0, 0);
    row(&s, err(rc), "d1 clears C[0]: X's last reference goes, X is freed");
    frames_table(&s);
    audit(&s);
    rc = ext(&s.v1, MMUEXT_UNPIN_TABLE, s.fr[P]);
    row(&s, err(rc), "d1 unpins P");
    audit(&s);
    while ((rc = pv_domain_relinquish(&s.d1)) == -ERESTART)
        ;
    row(&s, err(rc), "d1 torn down (relinquish)");
    while ((rc = pv_domain_relinquish(&s.d2)) == -ERESTART)
        ;
    row(&s, err(rc), "d2 torn down (relinquish)");
    printf("        frames in use afterwards: d1 %" PRIu64 ", d2 %" PRIu64 "\n",
           frames_domain_tot(&s.f, 1), frames_domain_tot(&s.f, 2));
    printf("\n%u steps, %u audit failures\n", s.step, s.audit_failures);
    pv_domain_fini(&s.d1);
    pv_domain_fini(&s.d2);
    frames_fini(&s.f);
    return s.audit_failures ? 1 : 0;
}
