/*
 * work_hostile.c - a guest that attacks its hypervisor.  Every attempt must
 * be refused (an error, a fault bounced back to the guest, or an entry that
 * stays as it was) while the hypervisor stays up; each attempt and its
 * outcome is printed and counted.
 *
 *  priv    privileged instructions: mov to/from cr3 and cr0, cli, sti, hlt,
 *          lgdt, lidt, ltr, wrmsr, rdmsr, invlpg, wbinvd, clts, swapgs,
 *          rdpmc, mov to dr7, xsetbv, int $0x80, in and out on many ports;
 *          the iret hypercall asked for ring 0 or IOPL 3
 *  pte     illegal entries by mmu_update, update_va_mapping and direct
 *          stores: writable mappings of page tables, frames the guest does
 *          not own, reserved address bits, PSE at L2/L3, reserved bits at
 *          L4, the hypervisor's L4 slots 256-271, writable and read-only
 *          self-maps (linear tables are refused), a writable page used as
 *          a table; stores other than an 8-byte mov (or, 4-byte mov, xchg)
 *          into an L1 entry
 *  hvrange the hypervisor's range: mapping it, writing and reading it,
 *          handing it to hypercalls as an input or output buffer
 *  mmuext  pins of foreign, writable and garbage frames, base pointers to
 *          data pages, unpins of what is not pinned, unknown commands
 *  mem     reservation operations on frames that are not the guest's
 *  output  results written to read-only guest memory
 *  random  random hypercalls with random, invalid and hostile arguments
 *  raw     the hypercall trap entered with out-of-range hypercall numbers
 * After each group the guest checks its own integrity: its page tables as it
 * left them, its guard pages intact, its exception handlers still working.
 *
 * Options: calls=<random hypercalls per vCPU> (default 64), quiet=1 (print
 * refusals only as counts).
 */
#include "guest.h"

enum {
    H_TRIED,
    H_REFUSED,
    H_PRIV,
    H_PTE,
    H_HVRANGE,
    H_MMUEXT,
    H_MEM,
    H_OUTPUT,
    H_RANDOM,
    H_RANDOM_REFUSED,
    H_RANDOM_ACCEPTED,
    H_RAW,
    H_PF,
    H_GP,
    H_UD,
    H_INTEGRITY,
};
static const char *const hostile_counters[] = {
    "attempts",         "refused", "priv",       "pte",        "hvrange",
    "mmuext",           "mem",     "output",     "random",     "random-refused",
    "random-accepted",  "raw",     "pf-bounced", "gp-bounced", "ud-bounced",
    "integrity-checks", NULL};

#define NR_GUARD 8

struct hostile {
    struct kernel *k;
    struct vcpu *v;
    bool quiet;
    uint64_t scratch; /* pfn whose physmap entry the attacks aim at */
    uint64_t garbage; /* pfn full of random bytes */
    uint64_t guard[NR_GUARD];
    uint64_t l4_snap[PT_ENTRIES], l3_snap[PT_ENTRIES], l2_snap[PT_ENTRIES];
    uint64_t max_mfn;
    uint64_t shared_mfn; /* start_info.shared_info, a frame of ours */
    uint16_t stub_ports[8];
    unsigned nr_stub_ports;
};

static void count_fault(struct vcpu *v, uint64_t probe)
{
    if (!(probe & PROBE_FAULTED))
        return;
    switch (PROBE_VECTOR(probe)) {
    case 14:
        v->c[H_PF]++;
        break;
    case 13:
        v->c[H_GP]++;
        break;
    case 6:
        v->c[H_UD]++;
        break;
    }
}

/* Records one attempt; refused says whether the hypervisor refused it. */
static void outcome(struct hostile *h, unsigned group, bool refused,
                    const char *what, int64_t detail)
{
    struct vcpu *v = h->v;
    v->c[H_TRIED]++;
    v->c[group]++;
    if (refused) {
        v->c[H_REFUSED]++;
        if (!h->quiet)
            kprintf(h->k, "hostile: vcpu %u %s: refused (%ld)\n", v->id, what,
                    detail);
    } else {
        vfail(v, "hostile", "%s: ACCEPTED (%ld)", what, detail);
    }
}

static void probe_outcome(struct hostile *h, unsigned group, uint64_t r,
                          const char *what)
{
    count_fault(h->v, r);
    outcome(h, group, r & PROBE_FAULTED, what,
            r & PROBE_FAULTED ? (int64_t)PROBE_VECTOR(r) : 0);
}

/* ---- integrity ---- */

static void snapshot(struct hostile *h)
{
    struct kernel *k = h->k;
    kmemcpy(h->l4_snap, k->l4, sizeof(h->l4_snap));
    kmemcpy(h->l3_snap, k->l3, sizeof(h->l3_snap));
    kmemcpy(h->l2_snap, k->l2, sizeof(h->l2_snap));
}

static void integrity(struct hostile *h, const char *after)
{
    struct kernel *k = h->k;
    struct vcpu *v = h->v;
    v->c[H_INTEGRITY]++;
    for (unsigned i = 0; i < PT_ENTRIES; i++) {
        if (!l4_slot_is_hypervisor(i) && k->l4[i] != h->l4_snap[i])
            vfail(v, "hostile", "after %s: L4[%u] %lx, was %lx", after, i,
                  k->l4[i], h->l4_snap[i]);
        if (k->l3[i] != h->l3_snap[i])
            vfail(v, "hostile", "after %s: L3[%u] %lx, was %lx", after, i,
                  k->l3[i], h->l3_snap[i]);
        /* Other vCPUs may add physmap L1s only at boot: stable here. */
        if ((k->l2[i] & ~(_PAGE_ACCESSED | _PAGE_DIRTY)) !=
            (h->l2_snap[i] & ~(_PAGE_ACCESSED | _PAGE_DIRTY)))
            vfail(v, "hostile", "after %s: L2[%u] %lx, was %lx", after, i,
                  k->l2[i], h->l2_snap[i]);
    }
    for (unsigned i = 0; i < NR_GUARD; i++) {
        enum check_result r = check_verify(mm_va(h->guard[i]), h->guard[i], 7,
                                           0xc0 + v->id, NULL);
        if (r != CHECK_OK)
            vfail(v, "hostile", "after %s: guard pfn %lu %s", after,
                  h->guard[i], check_result_name(r));
    }
    uint64_t scratch_pte = *mm_physmap_ptep(k, h->scratch);
    if (scratch_pte != pte_make(k->p2m[h->scratch], PTE_DATA) &&
        (scratch_pte & ~(_PAGE_ACCESSED | _PAGE_DIRTY)) !=
            (pte_make(k->p2m[h->scratch], PTE_DATA) &
             ~(_PAGE_ACCESSED | _PAGE_DIRTY)))
        vfail(v, "hostile", "after %s: scratch entry %lx", after, scratch_pte);
    uint64_t r = probe_ud2();
    if (!(r & PROBE_FAULTED) || PROBE_VECTOR(r) != 6)
        vfail(v, "hostile", "after %s: ud2 probe %lx", after, r);
}

/* ---- privileged instructions ---- */

static void attack_priv(struct hostile *h)
{
    struct kernel *k = h->k;
    static const uint8_t desc[10];
    static const struct {
        const char *name;
        unsigned id;
    } insns[] = {
        {"mov to cr3", 0},  {"mov from cr3", 1}, {"mov to cr0", 2},
        {"cli", 3},         {"sti", 4},          {"hlt", 5},
        {"lgdt", 6},        {"lidt", 7},         {"ltr", 8},
        {"wrmsr LSTAR", 9}, {"wrmsr EFER", 10},  {"rdmsr APIC_BASE", 11},
        {"invlpg", 12},     {"wbinvd", 13},      {"clts", 14},
        {"swapgs", 15},     {"rdpmc", 16},       {"mov to dr7", 17},
        {"xsetbv", 18},     {"int $0x80", 19},
    };
    for (unsigned i = 0; i < sizeof(insns) / sizeof(insns[0]); i++) {
        uint64_t r = 0;
        switch (insns[i].id) {
        case 0:
            r = probe_mov_to_cr3(xen_pfn_to_cr3(k->l4_mfn));
            break;
        case 1:
            r = probe_mov_from_cr3();
            break;
        case 2:
            r = probe_mov_to_cr0(0x80050033);
            break;
        case 3:
            r = probe_cli();
            if (!(r & PROBE_FAULTED))
                (void)probe_sti();
            break;
        case 4:
            r = probe_sti();
            break;
        case 5:
            r = probe_hlt();
            break;
        case 6:
            r = probe_lgdt(desc);
            break;
        case 7:
            r = probe_lidt(desc);
            break;
        case 8:
            r = probe_ltr(0x28);
            break;
        case 9:
            r = probe_wrmsr(0xc0000082, 0);
            break;
        case 10:
            r = probe_wrmsr(0xc0000080, 0);
            break;
        case 11:
            r = probe_rdmsr(0x1b);
            break;
        case 12:
            r = probe_invlpg(VIRT_BASE);
            break;
        case 13:
            r = probe_wbinvd();
            break;
        case 14:
            r = probe_clts();
            break;
        case 15:
            r = probe_swapgs();
            break;
        case 16:
            r = probe_rdpmc();
            break;
        case 17:
            r = probe_mov_to_dr7(0x400);
            break;
        case 18:
            r = probe_xsetbv();
            break;
        case 19:
            r = probe_int80();
            break;
        }
        probe_outcome(h, H_PRIV, r, insns[i].name);
    }
    /* SYSCALL in kernel mode is a hypercall (Xen's x86-64 transport): an
     * unknown number is refused with -ENOSYS, like any stub's. */
    {
        int64_t r = probe_syscall();
        outcome(h, H_PRIV, r == -XEN_ENOSYS, "syscall hypercall 63", r);
    }

    static const uint16_t ports[] = {
        0x20, 0x21,  0x40,  0x43,  0x60,  0x64,  0x70,  0x71,  0x80,  0x92,
        0xe9, 0x3f8, 0x3f9, 0x3fd, 0x402, 0x510, 0x511, 0xcf8, 0xcfc, 0xffff};
    for (unsigned i = 0; i < sizeof(ports) / sizeof(ports[0]) + 4; i++) {
        uint16_t port = i < sizeof(ports) / sizeof(ports[0])
                            ? ports[i]
                            : (uint16_t)krand(&h->v->rng);
        bool transport = false;
        for (unsigned j = 0; j < h->nr_stub_ports; j++)
            transport |= h->stub_ports[j] == port;
        if (transport)
            continue; /* the hypercall transport itself */
        char what[32];
        ksnprintf(what, sizeof(what), "in from port %x", port);
        probe_outcome(h, H_PRIV, probe_inb(port), what);
        ksnprintf(what, sizeof(what), "out to port %x", port);
        probe_outcome(h, H_PRIV, probe_outb(port, 0), what);
    }

    /* iret asked for ring 0, and for IOPL 3: resuming in ring 3 with IOPL 0
     * (the hypervisor sanitised the frame) or a fault are refusals. */
    static const struct {
        const char *name;
        uint64_t cs, ss, rflags;
    } irets[] = {
        {"iret to ring 0 (cs 0x08)", 0x08, 0x10, 0x202},
        {"iret to ring 0 (cs 0x10)", 0x10, 0x18, 0x202},
        {"iret to ring 1 (cs 0xe019)", 0xe019, 0xe021, 0x202},
        /* RPL 0 asks for guest kernel mode (RPL 3 would mean user mode). */
        {"iret with IOPL 3", FLAT_KERNEL_CS & ~3, FLAT_KERNEL_SS & ~3, 0x3202},
    };
    /* The same from guest user mode (user base = the boot L4): cli there
     * must come back to the kernel as #GP. */
    long rc = mm_new_baseptr(k->l4_mfn, true);
    uint64_t sp =
        ((uint64_t)(uintptr_t)__builtin_frame_address(0) - 2048) & ~15ULL;
    if (rc == 0 && hc_stack_switch(FLAT_KERNEL_SS, sp) == 0) {
        uint64_t r = usermode_probe(h->v, (uint64_t)(uintptr_t)user_cli, sp, 0);
        (void)hc_stack_switch(FLAT_KERNEL_SS, h->v->stack_top);
        probe_outcome(h, H_PRIV, r, "cli in user mode");
        (void)hc_stack_switch(FLAT_KERNEL_SS, sp);
        r = usermode_probe(h->v, (uint64_t)(uintptr_t)user_hypercall, sp, 0);
        (void)hc_stack_switch(FLAT_KERNEL_SS, h->v->stack_top);
        count_fault(h->v, r);
        outcome(h, H_PRIV, (r & PROBE_FAULTED) || (int64_t)r < 0,
                "hypercall from user mode", (int64_t)r);
        rc = mm_new_baseptr(0, true);
        if (rc)
            vfail(h->v, "hostile", "clearing the user base pointer: %ld", rc);
    } else {
        vfail(h->v, "hostile", "cannot enter user mode: %ld", rc);
    }
    for (unsigned i = 0; i < sizeof(irets) / sizeof(irets[0]); i++) {
        uint64_t r =
            iret_probe(h->v, irets[i].cs, irets[i].ss, irets[i].rflags);
        bool refused =
            (r & PROBE_FAULTED) || ((r & 3) == 3 && (r & 0x3000) != 0x3000);
        count_fault(h->v, r);
        outcome(h, H_PRIV, refused, irets[i].name, (int64_t)r);
    }
}

/* ---- illegal entries ---- */

static bool scratch_intact(struct hostile *h)
{
    uint64_t e = *mm_physmap_ptep(h->k, h->scratch);
    uint64_t want = pte_make(h->k->p2m[h->scratch], PTE_DATA);
    return (e & ~(_PAGE_ACCESSED | _PAGE_DIRTY)) ==
           (want & ~(_PAGE_ACCESSED | _PAGE_DIRTY));
}

static void restore_scratch(struct hostile *h)
{
    (void)mm_set_physmap_pte(h->k, h->scratch,
                             pte_make(h->k->p2m[h->scratch], PTE_DATA),
                             PTE_BY_UVA);
}

/* Tries pte at the scratch pfn's L1 entry by every method. */
static void try_l1(struct hostile *h, uint64_t pte, const char *what)
{
    struct kernel *k = h->k;
    for (unsigned m = 0; m < PTE_METHODS; m++) {
        char desc[96];
        ksnprintf(desc, sizeof(desc), "L1 %s by %s", what, pte_method_name[m]);
        long rc;
        if (m == PTE_BY_DIRECT) {
            uint64_t r = probe_write64(
                (uint64_t)(uintptr_t)mm_physmap_ptep(k, h->scratch), pte);
            count_fault(h->v, r);
            rc = r ? -(long)PROBE_VECTOR(r) - 1000 : 0;
            if (!r)
                (void)mm_flush_va(physmap_va(h->scratch));
        } else {
            rc = mm_set_physmap_pte(k, h->scratch, pte, (enum pte_method)m);
        }
        bool intact = scratch_intact(h);
        outcome(h, H_PTE, rc != 0 && intact, desc, rc);
        if (!intact || rc == 0)
            restore_scratch(h);
    }
}

/* Tries val at entry idx of a table (read-only in the physmap) by
 * mmu_update and by a direct store; the entry must stay as it was. */
static void try_entry(struct hostile *h, uint64_t mfn, uint64_t *table,
                      unsigned idx, uint64_t val, const char *what)
{
    for (unsigned m = 0; m < PTE_METHODS; m++) {
        if (m == PTE_BY_UVA)
            continue;
        char desc[96];
        ksnprintf(desc, sizeof(desc), "%s by %s", what, pte_method_name[m]);
        uint64_t before = table[idx];
        long rc;
        if (m == PTE_BY_DIRECT) {
            uint64_t r = probe_write64((uint64_t)(uintptr_t)&table[idx], val);
            count_fault(h->v, r);
            rc = r ? -(long)PROBE_VECTOR(r) - 1000 : 0;
        } else {
            rc = mm_set_entry(h->k, mfn, table, idx, val, PTE_BY_MMU_UPDATE);
        }
        bool intact = table[idx] == before;
        outcome(h, H_PTE, rc != 0 && intact, desc, rc);
        if (!intact)
            (void)mm_set_entry(h->k, mfn, table, idx, before,
                               PTE_BY_MMU_UPDATE);
    }
}

/* A frame that is not in the guest's p2m list and is not its shared info
 * page: the hypervisor's, the shim's, another domain's or free. */
static bool unowned(struct hostile *h, uint64_t m)
{
    return m != h->shared_mfn && !mm_owns_mfn(h->k, m);
}

static uint64_t unowned_mfn(struct hostile *h, unsigned i)
{
    static const uint64_t above[] = {1, 2, 1000, 1ULL << 20};
    uint64_t m = h->max_mfn + above[i % 4];
    if (i == 2 && unowned(h, 0))
        return 0;
    if (i >= 3) {
        /* A random frame below our highest (each try scans the p2m). */
        for (unsigned tries = 0; tries < 16; tries++) {
            uint64_t r = krand_below(&h->v->rng, h->max_mfn + 1);
            if (unowned(h, r))
                return r;
        }
    }
    /* Above the p2m's highest frame only the shared info page can be
     * ours: at most one step. */
    while (!unowned(h, m))
        m++;
    return m;
}

static void attack_pte(struct hostile *h)
{
    struct kernel *k = h->k;
    char what[80];

    try_l1(h, pte_make(k->l4_mfn, PTE_DATA), "writable map of the L4");
    try_l1(h, pte_make(k->l2_mfn, PTE_DATA), "writable map of an L2");
    try_l1(h, pte_make(k->l1_mfn[0], PTE_DATA), "writable map of an L1");
    for (unsigned i = 0; i < 4; i++) {
        uint64_t m = unowned_mfn(h, i);
        ksnprintf(what, sizeof(what), "map of unowned mfn %lx", m);
        try_l1(h, pte_make(m, PTE_DATA & ~_PAGE_RW), what);
    }
    try_l1(h, pte_make(k->p2m[h->scratch], PTE_DATA) | (1ULL << 51),
           "address bit 51 (reserved)");
    try_l1(h, pte_make(1ULL << 38, PTE_DATA & ~_PAGE_RW),
           "frame beyond physical memory");

    /* Stores other than a plain 8-byte mov into an L1 entry that maps a
     * page table read-only: each would make it writable.  Refused, or if
     * the hypervisor emulates them, validated (the entry stays read-only). */
    {
        uint64_t ro = pte_make(k->l1_mfn[0], PTE_DATA & ~_PAGE_RW);
        long rc = mm_set_physmap_pte(k, h->scratch, ro, PTE_BY_UVA);
        if (rc) {
            vfail(h->v, "hostile", "read-only map of an L1: %ld", rc);
        } else {
            uint64_t *ptep = mm_physmap_ptep(k, h->scratch);
            uint64_t addr = (uint64_t)(uintptr_t)ptep;
            static const char *const kinds[] = {"or of RW", "4-byte mov",
                                                "xchg"};
            for (unsigned i = 0; i < 3; i++) {
                uint64_t r =
                    i == 0   ? probe_or64(addr, _PAGE_RW)
                    : i == 1 ? probe_write32(addr, (uint32_t)(ro | _PAGE_RW))
                             : probe_xchg64(addr, ro | _PAGE_RW);
                count_fault(h->v, r);
                (void)mm_flush_va(physmap_va(h->scratch));
                bool still_ro = !(*ptep & _PAGE_RW);
                ksnprintf(what, sizeof(what),
                          "%s into the L1 entry of a read-only L1 mapping",
                          kinds[i]);
                outcome(h, H_PTE, still_ro, what,
                        r ? (int64_t)PROBE_VECTOR(r) : 0);
                if (!still_ro)
                    (void)mm_set_physmap_pte(k, h->scratch, ro, PTE_BY_UVA);
            }
        }
        restore_scratch(h);
    }

    /* L2: PSE, an unowned table, a writable page used as a table. */
    unsigned free2 = PT_ENTRIES - 1;
    while (free2 > 0 && k->l2[free2])
        free2--;
    if (k->l2[free2] == 0) {
        try_entry(h, k->l2_mfn, k->l2, free2,
                  pte_make(k->p2m[h->scratch] & ~511ULL, PTE_TABLE | _PAGE_PSE),
                  "L2 PSE (2 MiB page)");
        try_entry(h, k->l2_mfn, k->l2, free2,
                  pte_make(unowned_mfn(h, 0), PTE_TABLE),
                  "L2 entry to an unowned frame");
        try_entry(h, k->l2_mfn, k->l2, free2,
                  pte_make(k->p2m[h->garbage], PTE_TABLE),
                  "L2 entry to a writable garbage page");
    }
    /* L3: PSE (1 GiB page). */
    try_entry(h, k->l3_mfn, k->l3, 0, pte_make(0, PTE_TABLE | _PAGE_PSE),
              "L3 PSE (1 GiB page)");
    /* L4: reserved bit 7, a writable self-map, the hypervisor's slots. */
    try_entry(h, k->l4_mfn, k->l4, 100,
              pte_make(k->l3_mfn, PTE_TABLE | _PAGE_PSE),
              "L4 entry with bit 7 (reserved)");
    try_entry(h, k->l4_mfn, k->l4, 101, pte_make(k->l4_mfn, PTE_TABLE),
              "L4 writable self-map");
    /* Linear (same-level) tables, even read-only: memvisor refuses them
     * (src/pv/pv.h), which closes Xen's linear-PT XSAs. */
    try_entry(h, k->l4_mfn, k->l4, 102,
              pte_make(k->l4_mfn, PTE_TABLE & ~_PAGE_RW),
              "L4 read-only self-map");
    if (k->l2[free2] == 0)
        try_entry(h, k->l2_mfn, k->l2, free2,
                  pte_make(k->l2_mfn, PTE_TABLE & ~_PAGE_RW),
                  "L2 read-only self-map");
    for (unsigned slot = XEN_L4_FIRST_HV_SLOT; slot <= XEN_L4_LAST_HV_SLOT;
         slot++) {
        ksnprintf(what, sizeof(what), "L4 hypervisor slot %u", slot);
        try_entry(h, k->l4_mfn, k->l4, slot, pte_make(k->l3_mfn, PTE_TABLE),
                  what);
    }
}

static void attack_hvrange(struct hostile *h)
{
    struct kernel *k = h->k;
    char what[80];
    for (unsigned slot = XEN_L4_FIRST_HV_SLOT; slot <= XEN_L4_LAST_HV_SLOT;
         slot++) {
        uint64_t va = pt_va(slot, 0, 0, 1);
        ksnprintf(what, sizeof(what), "map va %lx (slot %u)", va, slot);
        long rc = hc_update_va_mapping(
            va, pte_make(k->p2m[h->scratch], PTE_DATA), UVMF_INVLPG);
        outcome(h, H_HVRANGE, rc != 0, what, rc);
        ksnprintf(what, sizeof(what), "write va %lx (slot %u)", va, slot);
        probe_outcome(h, H_HVRANGE, probe_write64(va, 0x6d656d), what);
        uint64_t val;
        uint64_t r = probe_read64(pt_va(slot, 0, 0, 0), &val);
        count_fault(h->v, r);
        if (!r && !h->quiet)
            kprintf(k,
                    "hostile: vcpu %u note: slot %u readable from the "
                    "guest kernel\n",
                    h->v->id, slot);
    }
    /* Hypercall arguments in the hypervisor range: the hypervisor must not
     * read or write its own mappings on the guest's behalf. */
    for (unsigned slot = XEN_L4_FIRST_HV_SLOT; slot <= XEN_L4_LAST_HV_SLOT;
         slot++) {
        uint64_t va = pt_va(slot, 0, 0, 0) + 0x1000;
        long rc = hc_console_write((const char *)(uintptr_t)va, 8);
        ksnprintf(what, sizeof(what), "console_io input from va %lx", va);
        outcome(h, H_HVRANGE, rc < 0, what, rc);
        rc = hc_xen_version(XENVER_extraversion, (void *)(uintptr_t)va);
        ksnprintf(what, sizeof(what), "xen_version output to va %lx", va);
        outcome(h, H_HVRANGE, rc < 0, what, rc);
    }
    long rc = hc_update_va_mapping(0x0000800000000000ULL,
                                   pte_make(k->p2m[h->scratch], PTE_DATA),
                                   UVMF_INVLPG);
    outcome(h, H_HVRANGE, rc != 0, "map a non-canonical va", rc);
}

/* ---- mmuext, memory_op, outputs ---- */

static long mmuext1(unsigned cmd, uint64_t arg1)
{
    struct mmuext_op op = {.cmd = cmd, .arg1.mfn = arg1};
    return hc_mmuext_op(&op, 1, NULL);
}

static void attack_mmuext(struct hostile *h)
{
    struct kernel *k = h->k;
    uint64_t scratch_mfn = k->p2m[h->scratch];
    long rc;

    rc = mmuext1(MMUEXT_PIN_L1_TABLE, unowned_mfn(h, 0));
    outcome(h, H_MMUEXT, rc < 0, "pin an unowned frame as L1", rc);
    rc = mmuext1(MMUEXT_PIN_L4_TABLE, unowned_mfn(h, 3));
    outcome(h, H_MMUEXT, rc < 0, "pin an unowned frame as L4", rc);
    rc = mmuext1(MMUEXT_PIN_L1_TABLE, scratch_mfn);
    outcome(h, H_MMUEXT, rc < 0, "pin a writable-mapped page as L1", rc);
    if (rc == 0)
        (void)mm_unpin(scratch_mfn);
    rc = mmuext1(MMUEXT_PIN_L4_TABLE, k->l4_mfn);
    outcome(h, H_MMUEXT, rc < 0, "pin the pinned boot L4 again", rc);
    rc = mmuext1(MMUEXT_UNPIN_TABLE, scratch_mfn);
    outcome(h, H_MMUEXT, rc < 0, "unpin a page never pinned", rc);
    rc = mmuext1(MMUEXT_NEW_BASEPTR, scratch_mfn);
    outcome(h, H_MMUEXT, rc < 0, "base pointer to a writable data page", rc);
    if (rc == 0)
        (void)mm_new_baseptr(k->l4_mfn, false);
    rc = mmuext1(MMUEXT_NEW_BASEPTR, unowned_mfn(h, 1));
    outcome(h, H_MMUEXT, rc < 0, "base pointer to an unowned frame", rc);
    rc = mmuext1(99, 0);
    outcome(h, H_MMUEXT, rc < 0, "unknown mmuext command 99", rc);

    /* A garbage page mapped read-only and pinned as L4: its entries do not
     * validate.  Afterwards it must be mappable writable again. */
    rc = mm_set_physmap_pte(k, h->garbage,
                            pte_make(k->p2m[h->garbage], PTE_DATA & ~_PAGE_RW),
                            PTE_BY_UVA);
    if (rc == 0) {
        long prc = mmuext1(MMUEXT_PIN_L4_TABLE, k->p2m[h->garbage]);
        outcome(h, H_MMUEXT, prc < 0, "pin a garbage page as L4", prc);
        if (prc == 0)
            (void)mm_unpin(k->p2m[h->garbage]);
        prc = mmuext1(MMUEXT_PIN_L1_TABLE, k->p2m[h->garbage]);
        outcome(h, H_MMUEXT, prc < 0, "pin a garbage page as L1", prc);
        if (prc == 0)
            (void)mm_unpin(k->p2m[h->garbage]);
        rc = mm_set_physmap_pte(
            k, h->garbage, pte_make(k->p2m[h->garbage], PTE_DATA), PTE_BY_UVA);
        if (rc)
            vfail(h->v, "hostile",
                  "garbage page not writable after refused pins: %ld", rc);
    } else {
        vfail(h->v, "hostile", "mapping the garbage page read-only: %ld", rc);
    }

    rc = hc_mmuext_op((const struct mmuext_op *)(uintptr_t)PRIVATE_BASE(250), 1,
                      NULL);
    outcome(h, H_MMUEXT, rc < 0, "mmuext_op from an unmapped address", rc);
    struct mmu_update u = {.ptr = pt_entry_maddr(unowned_mfn(h, 0), 0),
                           .val = 0};
    rc = hc_mmu_update(&u, 1, NULL);
    outcome(h, H_MMUEXT, rc < 0, "mmu_update of an unowned frame", rc);
    u.ptr = (unowned_mfn(h, 1) << GUEST_PAGE_SHIFT) | MMU_MACHPHYS_UPDATE;
    rc = hc_mmu_update(&u, 1, NULL);
    outcome(h, H_MMUEXT, rc < 0, "m2p update of an unowned frame", rc);
    u.ptr = mm_physmap_pte_maddr(k, h->scratch);
    u.val = *mm_physmap_ptep(k, h->scratch);
    rc =
        hypercall(__HYPERVISOR_mmu_update, (uint64_t)(uintptr_t)&u, 1, 0, 5, 0);
    outcome(h, H_MMUEXT, rc < 0, "mmu_update for foreign domain 5", rc);
}

static long resv(unsigned cmd, uint64_t *ext, uint64_t n, unsigned order,
                 uint16_t dom)
{
    struct xen_memory_reservation r = {
        .extent_start = (uint64_t)(uintptr_t)ext,
        .nr_extents = n,
        .extent_order = order,
        .domid = dom,
    };
    return hc_memory_op(cmd, &r);
}

static void attack_mem(struct hostile *h)
{
    uint64_t ext[4] = {unowned_mfn(h, 0), unowned_mfn(h, 1), unowned_mfn(h, 2),
                       unowned_mfn(h, 3)};
    long rc = resv(XENMEM_decrease_reservation, ext, 4, 0, DOMID_SELF);
    outcome(h, H_MEM, rc <= 0, "give back 4 unowned frames", rc);
    /* The shared info page is the hypervisor's to keep while the domain
     * lives (it writes vCPU state there). */
    if (h->shared_mfn && h->v->id == 0) {
        uint64_t sh = h->shared_mfn;
        rc = resv(XENMEM_decrease_reservation, &sh, 1, 0, DOMID_SELF);
        outcome(h, H_MEM, rc <= 0, "give back the shared info frame", rc);
    }
    uint64_t own = h->k->p2m[h->garbage];
    rc = resv(XENMEM_decrease_reservation, &own, 1, 0, 5);
    outcome(h, H_MEM, rc <= 0, "give back a frame for domain 5", rc);
    rc = resv(XENMEM_populate_physmap, (uint64_t *)(uintptr_t)PRIVATE_BASE(250),
              1ULL << 40, 0, DOMID_SELF);
    outcome(h, H_MEM, rc <= 0, "populate 2^40 extents from unmapped memory",
            rc);
    uint64_t pfn = h->k->nr_pages + 5;
    rc = resv(XENMEM_increase_reservation, &pfn, 1, 30, DOMID_SELF);
    outcome(h, H_MEM, rc <= 0, "increase by an order-30 extent", rc);
    rc = hc_memory_op(XENMEM_decrease_reservation,
                      (void *)(uintptr_t)pt_va(260, 0, 0, 0));
    outcome(h, H_MEM, rc < 0, "memory_op argument in the hypervisor range", rc);
    rc = hc_memory_op(63, NULL);
    outcome(h, H_MEM, rc < 0, "memory_op command 63", rc);
}

/* Results aimed at read-only guest memory (the boot L4): refused, and the
 * L4 unchanged (integrity() checks it). */
static void attack_output(struct hostile *h)
{
    struct kernel *k = h->k;
    uint64_t *ro = &k->l4[0];
    struct mmu_update u = {
        .ptr = mm_physmap_pte_maddr(k, h->scratch),
        .val = *mm_physmap_ptep(k, h->scratch),
    };
    long rc = hc_mmu_update(&u, 1, (unsigned *)(uintptr_t)ro);
    outcome(h, H_OUTPUT, rc < 0, "mmu_update done-count into the L4", rc);
    rc = hc_xen_version(XENVER_extraversion, ro);
    outcome(h, H_OUTPUT, rc < 0, "xen_version string into the L4", rc);
    /* 1 KiB straddling the end of start_info (writable) and the start of
     * the L4 (read-only): refused, the L4 untouched. */
    rc = hc_xen_version(XENVER_capabilities, (void *)((uintptr_t)k->l4 - 512));
    outcome(h, H_OUTPUT, rc < 0,
            "xen_version 1 KiB across a writable and a read-only page", rc);
}

/* ---- random hypercalls ---- */

enum arg_kind {
    A_ZERO,
    A_ONES,
    A_RANDOM,
    A_SMALL,
    A_GARBAGE_PTR,
    A_UNMAPPED,
    A_HVRANGE,
    A_NONCANON,
    A_RO_PTR,
    A_KINDS,
};

static uint64_t arg_of(struct hostile *h, unsigned kind)
{
    struct krand *r = &h->v->rng;
    switch (kind) {
    case A_ZERO:
        return 0;
    case A_ONES:
        return ~0ULL;
    case A_RANDOM:
        return krand(r);
    case A_SMALL:
        return krand_below(r, 65);
    case A_GARBAGE_PTR:
        return physmap_va(h->garbage) + krand_below(r, 4096 - 256);
    case A_UNMAPPED:
        return PRIVATE_BASE(250) + (krand(r) & 0x7fffffff);
    case A_HVRANGE:
        return pt_va(256 + (unsigned)krand_below(r, 16), 0, 0, 0) +
               (krand(r) & 0xffffff);
    case A_NONCANON:
        return 0x0000800000000000ULL + (krand(r) & 0xffffffff);
    default:
        return (uint64_t)(uintptr_t)h->k->l4;
    }
}

/* Which argument kinds each hypercall may get; 0 = never called at random
 * (it would legitimately stop or redirect this vCPU: iret, stack_switch,
 * callbacks, FPU and debug registers, a blocking sched_op). */
#define K(x) (1U << (x))
#define INVALID_PTRS (K(A_UNMAPPED) | K(A_HVRANGE) | K(A_NONCANON))
#define ANY_INPUT                                                              \
    (K(A_ZERO) | K(A_ONES) | K(A_RANDOM) | K(A_SMALL) | K(A_GARBAGE_PTR) |     \
     INVALID_PTRS)

struct hc_policy {
    uint32_t arg[3];
};

static const struct hc_policy policy[64] = {
    [__HYPERVISOR_set_trap_table] = {{INVALID_PTRS, 0, 0}},
    [__HYPERVISOR_mmu_update] = {{ANY_INPUT, K(A_SMALL) | K(A_RANDOM),
                                  INVALID_PTRS | K(A_RO_PTR) | K(A_ZERO)}},
    [__HYPERVISOR_set_gdt] = {{ANY_INPUT, ANY_INPUT, 0}},
    [__HYPERVISOR_platform_op] = {{ANY_INPUT, 0, 0}},
    [__HYPERVISOR_get_debugreg] = {{ANY_INPUT, 0, 0}},
    [__HYPERVISOR_update_descriptor] = {{ANY_INPUT, ANY_INPUT, 0}},
    [11] = {{ANY_INPUT, ANY_INPUT, ANY_INPUT}},
    [__HYPERVISOR_memory_op] = {{K(A_RANDOM) | K(A_SMALL) | K(A_ONES),
                                 ANY_INPUT, 0}},
    [__HYPERVISOR_multicall] = {{ANY_INPUT, K(A_SMALL) | K(A_RANDOM), 0}},
    [__HYPERVISOR_update_va_mapping] = {{K(A_ZERO) | K(A_RANDOM) | INVALID_PTRS,
                                         ANY_INPUT, ANY_INPUT}},
    [__HYPERVISOR_set_timer_op] = {{ANY_INPUT, 0, 0}},
    [__HYPERVISOR_event_channel_op_compat] = {{ANY_INPUT, 0, 0}},
    [__HYPERVISOR_xen_version] = {{K(A_SMALL) | K(A_RANDOM),
                                   ANY_INPUT | K(A_RO_PTR), 0}},
    [__HYPERVISOR_console_io] = {{K(A_RANDOM) | K(A_ONES), ANY_INPUT,
                                  INVALID_PTRS}},
    [__HYPERVISOR_physdev_op_compat] = {{ANY_INPUT, 0, 0}},
    [__HYPERVISOR_grant_table_op] = {{ANY_INPUT, ANY_INPUT, ANY_INPUT}},
    [__HYPERVISOR_vm_assist] = {{K(A_RANDOM) | K(A_ONES), ANY_INPUT, 0}},
    [__HYPERVISOR_update_va_mapping_otherdomain] = {{ANY_INPUT, ANY_INPUT,
                                                     ANY_INPUT}},
    [__HYPERVISOR_mmuext_op] = {{ANY_INPUT, K(A_SMALL) | K(A_RANDOM),
                                 INVALID_PTRS | K(A_RO_PTR) | K(A_ZERO)}},
    [__HYPERVISOR_xsm_op] = {{ANY_INPUT, ANY_INPUT, 0}},
    [__HYPERVISOR_nmi_op] = {{K(A_RANDOM) | K(A_ONES), ANY_INPUT, 0}},
    [__HYPERVISOR_xenoprof_op] = {{ANY_INPUT, ANY_INPUT, 0}},
    [__HYPERVISOR_event_channel_op] = {{ANY_INPUT, ANY_INPUT, 0}},
    [__HYPERVISOR_physdev_op] = {{ANY_INPUT, ANY_INPUT, 0}},
    [__HYPERVISOR_hvm_op] = {{ANY_INPUT, ANY_INPUT, 0}},
    [__HYPERVISOR_sysctl] = {{ANY_INPUT, 0, 0}},
    [__HYPERVISOR_domctl] = {{ANY_INPUT, 0, 0}},
};

static unsigned pick_kind(struct hostile *h, uint32_t mask)
{
    for (;;) {
        unsigned kind = (unsigned)krand_below(&h->v->rng, A_KINDS);
        if (mask & K(kind))
            return kind;
    }
}

static void attack_random(struct hostile *h, uint64_t calls)
{
    struct vcpu *v = h->v;
    uint64_t *garbage = mm_va(h->garbage); /* and the page after it */
    for (uint64_t n = 0; n < calls; n++) {
        unsigned nr;
        uint64_t a[3] = {0, 0, 0};
        bool numbered_beyond = krand_below(&v->rng, 8) == 0;
        if (numbered_beyond) {
            /* A stub whose number no hypercall has. */
            nr = 37 +
                 (unsigned)krand_below(&v->rng, XEN_HYPERCALL_NR_STUBS - 37);
            for (unsigned i = 0; i < 3; i++)
                a[i] = arg_of(h, pick_kind(h, ANY_INPUT));
        } else {
            do
                nr = (unsigned)krand_below(&v->rng, 37);
            while (!policy[nr].arg[0]);
            for (unsigned i = 0; i < 3; i++)
                if (policy[nr].arg[i])
                    a[i] = arg_of(h, pick_kind(h, policy[nr].arg[i]));
        }
        if (nr == __HYPERVISOR_vcpu_op || nr == __HYPERVISOR_sched_op ||
            nr == __HYPERVISOR_set_segment_base ||
            nr == __HYPERVISOR_callback_op ||
            nr == __HYPERVISOR_sched_op_compat)
            continue; /* never drawn: no policy entry */
        /* Both pages: an array that runs into the second one must not
         * find zeros there (a zero multicall entry is set_trap_table(NULL),
         * which legitimately clears the handlers). */
        for (unsigned i = 0; i < 1024; i++)
            garbage[i] = krand(&v->rng);
        long rc = hypercall(nr, a[0], a[1], a[2], krand(&v->rng), 0);
        v->c[H_TRIED]++;
        v->c[H_RANDOM]++;
        if (rc < 0) {
            v->c[H_REFUSED]++;
            v->c[H_RANDOM_REFUSED]++;
        } else {
            v->c[H_RANDOM_ACCEPTED]++;
        }
        if (!h->quiet)
            kprintf(h->k,
                    "hostile: vcpu %u random hypercall %u(%lx, %lx, "
                    "%lx): %ld\n",
                    v->id, nr, a[0], a[1], a[2], rc);
        if (n % 16 == 15)
            integrity(h, "random hypercalls");
    }
    /* Calls with no random arguments for the dangerous numbers: invalid
     * commands and vCPU numbers only. */
    static const struct {
        unsigned nr;
        uint64_t a0, a1;
        const char *what;
    } fixed[] = {
        {__HYPERVISOR_sched_op, 1000, 0, "sched_op command 1000"},
        {__HYPERVISOR_sched_op, SCHEDOP_shutdown, PRIVATE_BASE(250),
         "shutdown with an unmapped argument"},
        {__HYPERVISOR_sched_op, SCHEDOP_remote_shutdown, 0,
         "remote shutdown with a NULL argument"},
        {__HYPERVISOR_sched_op_compat, 1000, 0, "sched_op_compat 1000"},
        {__HYPERVISOR_vcpu_op, VCPUOP_down, 1000, "take down vCPU 1000"},
        {__HYPERVISOR_vcpu_op, VCPUOP_initialise, 1000, "initialise vCPU 1000"},
        {__HYPERVISOR_vcpu_op, 1000, 0, "vcpu_op command 1000"},
        {__HYPERVISOR_set_segment_base, 1000, 0, "set_segment_base 1000"},
        {__HYPERVISOR_callback_op, 1000, 0, "callback_op command 1000"},
        {__HYPERVISOR_console_io, 1000, 0, "console_io command 1000"},
    };
    for (unsigned i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
        long rc = hypercall(fixed[i].nr, fixed[i].a0, fixed[i].a1, 0, 0, 0);
        outcome(h, H_RANDOM, rc < 0, fixed[i].what, rc);
    }
}

/* The stub's trap instruction entered directly with numbers no stub has. */
static void attack_raw(struct hostile *h)
{
    const uint8_t *stub = (const uint8_t *)hypercall_page;
    unsigned off = 0;
    for (; off + 1 < XEN_HYPERCALL_STUB_SIZE; off++)
        if (stub[off] == 0xcd || stub[off] == 0xcc ||
            (stub[off] == 0x0f &&
             (stub[off + 1] == 0x0b || stub[off + 1] == 0x05 ||
              stub[off + 1] == 0x01)))
            break;
    if (off + 1 >= XEN_HYPERCALL_STUB_SIZE) {
        kprintf(h->k, "hostile: vcpu %u no trap instruction in stub 0\n",
                h->v->id);
        return;
    }
    static const uint64_t numbers[] = {128,           1000,
                                       0x7fffffff,    0xffffffff,
                                       ~0ULL,         0x8000000000000080ULL,
                                       0x100000080ULL};
    for (unsigned i = 0; i < sizeof(numbers) / sizeof(numbers[0]); i++) {
        uint64_t r = hypercall_raw(h->v, (uint64_t)(uintptr_t)(stub + off),
                                   numbers[i], 0, 0, 0);
        char what[64];
        ksnprintf(what, sizeof(what), "raw hypercall number %lx", numbers[i]);
        count_fault(h->v, r);
        outcome(h, H_RAW, (int64_t)r < 0, what, (int64_t)r);
    }
}

static void find_stub_ports(struct hostile *h)
{
    const uint8_t *s = (const uint8_t *)hypercall_page;
    for (unsigned i = 0;
         i + 3 < 2 * XEN_HYPERCALL_STUB_SIZE && h->nr_stub_ports < 8; i++) {
        if (s[i] == 0x66 && s[i + 1] == 0xba)
            h->stub_ports[h->nr_stub_ports++] =
                (uint16_t)(s[i + 2] | s[i + 3] << 8);
        else if (s[i] == 0xe6 || s[i] == 0xe7 || s[i] == 0xe4 || s[i] == 0xe5)
            h->stub_ports[h->nr_stub_ports++] = s[i + 1];
    }
}

/* Two pages adjacent in the physmap: the garbage page and the page after
 * it, into which hypercalls handed a pointer near the garbage page's end may
 * legitimately write (multicall results, xen_version strings). */
static uint64_t alloc_pair(struct kernel *k)
{
    uint64_t spare[16];
    unsigned nspare = 0;
    uint64_t found = INVALID_P2M;
    uint64_t prev = mm_alloc(k);
    while (prev != INVALID_P2M && nspare < 16) {
        uint64_t next = mm_alloc(k);
        if (next == INVALID_P2M) {
            spare[nspare++] = prev;
            break;
        }
        if (next == prev + 1) {
            found = prev;
            break;
        }
        spare[nspare++] = prev;
        prev = next;
    }
    for (unsigned i = 0; i < nspare; i++)
        mm_free(k, spare[i]);
    return found;
}

static int hostile_run(struct kernel *k, struct vcpu *v)
{
    static struct hostile hs[MAX_VCPUS];
    /* The vCPUs set up at once: without this, their allocations interleave
     * and alloc_pair() never sees two consecutive pfns. */
    static struct spinlock setup_lock;
    struct hostile *h = &hs[v->id];
    kmemset(h, 0, sizeof(*h));
    h->k = k;
    h->v = v;
    h->quiet = cmdline_num(k, "quiet", 0) != 0;
    uint64_t calls = cmdline_num(k, "calls", 64);

    spin_lock(&setup_lock);
    h->scratch = mm_alloc(k);
    h->garbage = alloc_pair(k);
    for (unsigned i = 0; i < NR_GUARD; i++)
        h->guard[i] = mm_alloc(k);
    spin_unlock(&setup_lock);
    for (unsigned i = 0; i < NR_GUARD; i++) {
        if (h->guard[i] == INVALID_P2M) {
            vfail(v, "hostile", "out of memory");
            return -1;
        }
        check_fill(mm_va(h->guard[i]), h->guard[i], 7, 0xc0 + v->id);
    }
    if (h->scratch == INVALID_P2M || h->garbage == INVALID_P2M) {
        vfail(v, "hostile", "out of memory");
        return -1;
    }
    for (uint64_t pfn = 0; pfn < k->nr_pages; pfn++)
        if (k->p2m[pfn] != INVALID_P2M && k->p2m[pfn] > h->max_mfn)
            h->max_mfn = k->p2m[pfn];
    h->shared_mfn = k->si->shared_info >> GUEST_PAGE_SHIFT;
    if (v->id == 0)
        kprintf(k, "hostile: highest mfn of the p2m %lx, shared info mfn %lx\n",
                h->max_mfn, h->shared_mfn);
    uint64_t *g = mm_va(h->garbage);
    for (unsigned i = 0; i < 512; i++)
        g[i] = krand(&v->rng) | _PAGE_PRESENT;
    find_stub_ports(h);

    /* vCPU 0 alone attacks the shared tables, so that the others' snapshots
     * stay valid; every vCPU does the rest. */
    if (v->id == 0) {
        snapshot(h);
        attack_pte(h);
        integrity(h, "illegal entries");
    }
    barrier_wait(k);
    snapshot(h);
    attack_priv(h);
    integrity(h, "privileged instructions");
    attack_hvrange(h);
    integrity(h, "hypervisor range");
    attack_mmuext(h);
    integrity(h, "mmuext");
    attack_mem(h);
    integrity(h, "memory_op");
    attack_output(h);
    integrity(h, "outputs into read-only memory");
    attack_random(h, calls);
    integrity(h, "random hypercalls");
    attack_raw(h);
    integrity(h, "raw hypercalls");
    barrier_wait(k);

    mm_free(k, h->scratch);
    mm_free(k, h->garbage);
    mm_free(k, h->garbage + 1);
    for (unsigned i = 0; i < NR_GUARD; i++)
        mm_free(k, h->guard[i]);
    return 0;
}

const struct workload work_hostile = {
    .name = "hostile",
    .run = hostile_run,
    .counters = hostile_counters,
};
