/*
 * work_ptchurn.c - page-table churn.  Each round, each vCPU builds several
 * address spaces (an L4 sharing the kernel's mappings plus a private
 * L3/L2/L1 tree over data pages in an L4 slot of its own), maps every table
 * read-only (by mmu_update, update_va_mapping and direct stores in turn),
 * pins each L4, switches to each (NEW_BASEPTR and NEW_USER_BASEPTR), checks
 * the private mappings reach the right frames, rewrites private entries in
 * place (mmu_update, update_va_mapping, emulated direct stores), switches
 * back, unpins, maps the tables writable again and frees them.
 *
 * Checks that the hypervisor refuses: pinning a tree one of whose tables is
 * still mapped writable; mapping a pinned table writable.  Checks that it
 * accepts: mapping the tables writable again once unpinned and unused
 * (a leaked type reference would refuse it).
 *
 * Options: rounds=<n> (default 8), spaces=<n> per round (default 3).
 */
#include "guest.h"

enum {
    P_ROUNDS,
    P_SPACES,
    P_PINS,
    P_UNPINS,
    P_SWITCHES,
    P_RO_MMU,
    P_RO_UVA,
    P_RO_DIRECT,
    P_PTE_MMU,
    P_PTE_UVA,
    P_PTE_DIRECT,
    P_PF_BOUNCED,
    P_PIN_REFUSED,
    P_RW_REFUSED,
    P_FREED,
    P_USER,
};
static const char *const ptchurn_counters[] = {
    "rounds",      "spaces",     "pins",          "unpins",
    "switches",    "ro-by-mmu",  "ro-by-uva",     "ro-by-direct",
    "pte-by-mmu",  "pte-by-uva", "pte-by-direct", "pf-bounced",
    "pin-refused", "rw-refused", "tables-freed",  "user-mode-trips",
    NULL};

#define NR_L1 2
#define DATA_PER_L1 8
#define NR_DATA (NR_L1 * DATA_PER_L1)
#define NR_TABLES (3 + NR_L1)
#define MAX_SPACES 4

struct space {
    unsigned slot;
    uint64_t table_pfn[NR_TABLES]; /* L4, L3, L2, L1s */
    uint64_t data_pfn[NR_DATA];
};

static uint64_t mfn_of(struct kernel *k, uint64_t pfn)
{
    return k->p2m[pfn];
}

static uint64_t private_va(const struct space *s, unsigned i)
{
    return PRIVATE_BASE(s->slot) + ((uint64_t)(i / DATA_PER_L1) << 21) +
           ((uint64_t)(i % DATA_PER_L1) << 12);
}

static long set_rw(struct kernel *k, struct vcpu *v, uint64_t pfn, bool rw,
                   unsigned method)
{
    uint64_t pte = pte_make(mfn_of(k, pfn), PTE_DATA);
    if (!rw)
        pte &= ~_PAGE_RW;
    long rc = mm_set_physmap_pte(k, pfn, pte, (enum pte_method)method);
    /* Success means the entry changed: a lost update would leave a table
     * read-only in the allocator (or a pinned one writable). */
    uint64_t now = *mm_physmap_ptep(k, pfn);
    if (rc == 0 && (pte_mfn(now) != mfn_of(k, pfn) ||
                    (now & _PAGE_RW) != (pte & _PAGE_RW))) {
        vfail(v, "ptchurn", "pfn %lu made %s by %s: entry is %lx, want %lx",
              pfn, rw ? "writable" : "read-only", pte_method_name[method], now,
              pte);
        return -XEN_EIO;
    }
    if (rc == 0 && !rw)
        v->c[P_RO_MMU + method]++;
    return rc;
}

static void free_all(struct kernel *k, struct space *s)
{
    for (unsigned i = 0; i < NR_TABLES; i++)
        if (s->table_pfn[i] != INVALID_P2M)
            mm_free(k, s->table_pfn[i]);
    for (unsigned i = 0; i < NR_DATA; i++)
        if (s->data_pfn[i] != INVALID_P2M)
            mm_free(k, s->data_pfn[i]);
}

static int build(struct kernel *k, struct vcpu *v, struct space *s,
                 uint64_t round)
{
    for (unsigned i = 0; i < NR_TABLES; i++)
        s->table_pfn[i] = INVALID_P2M;
    for (unsigned i = 0; i < NR_DATA; i++)
        s->data_pfn[i] = INVALID_P2M;
    for (unsigned i = 0; i < NR_TABLES; i++)
        if ((s->table_pfn[i] = mm_alloc(k)) == INVALID_P2M)
            goto nomem;
    for (unsigned i = 0; i < NR_DATA; i++) {
        if ((s->data_pfn[i] = mm_alloc(k)) == INVALID_P2M)
            goto nomem;
        check_fill(mm_va(s->data_pfn[i]), s->data_pfn[i], round, 0x40 + v->id);
    }
    uint64_t *l4 = mm_va(s->table_pfn[0]);
    uint64_t *l3 = mm_va(s->table_pfn[1]);
    uint64_t *l2 = mm_va(s->table_pfn[2]);
    for (unsigned i = 0; i < NR_L1; i++) {
        uint64_t *l1 = mm_va(s->table_pfn[3 + i]);
        for (unsigned j = 0; j < DATA_PER_L1; j++)
            l1[j] =
                pte_make(mfn_of(k, s->data_pfn[i * DATA_PER_L1 + j]), PTE_DATA);
        l2[i] = pte_make(mfn_of(k, s->table_pfn[3 + i]), PTE_TABLE);
    }
    l3[0] = pte_make(mfn_of(k, s->table_pfn[2]), PTE_TABLE);
    for (unsigned i = 0; i < PT_ENTRIES; i++)
        if (!l4_slot_is_hypervisor(i))
            l4[i] = k->l4[i];
    l4[s->slot] = pte_make(mfn_of(k, s->table_pfn[1]), PTE_TABLE);
    return 0;
nomem:
    free_all(k, s);
    vfail(v, "ptchurn", "out of memory building a space");
    return -1;
}

/* Reads data page i through the private mapping of the current space and
 * checks it is the page of pfn expect with counter. */
static bool check_private(struct vcpu *v, const struct space *s, unsigned i,
                          uint64_t expect_pfn, uint64_t counter)
{
    uint64_t va = private_va(s, i);
    uint64_t hdr;
    if (probe_read64(va + 8, &hdr)) {
        vfail(v, "ptchurn", "private va %lx (slot %u page %u) faults", va,
              s->slot, i);
        return false;
    }
    enum check_result r = check_verify((const uint64_t *)(uintptr_t)va,
                                       expect_pfn, counter, 0x40 + v->id, NULL);
    if (r != CHECK_OK) {
        vfail(v, "ptchurn", "private va %lx: %s (pfn word %lu, want %lu)", va,
              check_result_name(r), hdr, expect_pfn);
        return false;
    }
    return true;
}

/* Rewrites private L1 entries 0 and 1 of L1 #0 crosswise and back, by
 * method, checking the mappings each time. */
static void churn_entries(struct kernel *k, struct vcpu *v, struct space *s,
                          uint64_t counter, unsigned method)
{
    uint64_t l1pfn = s->table_pfn[3];
    uint64_t *l1 = mm_va(l1pfn);
    uint64_t a = s->data_pfn[0], b = s->data_pfn[1];
    uint64_t pa = pte_make(mfn_of(k, a), PTE_DATA);
    uint64_t pb = pte_make(mfn_of(k, b), PTE_DATA);

    for (unsigned step = 0; step < 2; step++) {
        uint64_t e0 = step ? pa : pb, e1 = step ? pb : pa;
        long rc0, rc1;
        if (method == PTE_BY_UVA) {
            rc0 = hc_update_va_mapping(private_va(s, 0), e0, UVMF_INVLPG);
            rc1 = hc_update_va_mapping(private_va(s, 1), e1, UVMF_INVLPG);
        } else {
            rc0 = mm_set_entry(k, mfn_of(k, l1pfn), l1, 0, e0,
                               (enum pte_method)method);
            rc1 = mm_set_entry(k, mfn_of(k, l1pfn), l1, 1, e1,
                               (enum pte_method)method);
            if (!rc0)
                rc0 = mm_flush_va(private_va(s, 0));
            if (!rc1)
                rc1 = mm_flush_va(private_va(s, 1));
        }
        if (rc0 || rc1) {
            vfail(v, "ptchurn", "private entry update by %s: %ld %ld",
                  pte_method_name[method], rc0, rc1);
            return;
        }
        v->c[P_PTE_MMU + method] += 2;
        check_private(v, s, 0, step ? a : b, counter);
        check_private(v, s, 1, step ? b : a, counter);
    }

    /* A not-present entry: the read must come back as a #PF bounce. */
    long rc = mm_set_entry(k, mfn_of(k, l1pfn), l1, 2, 0, PTE_BY_DIRECT);
    if (!rc)
        rc = mm_flush_va(private_va(s, 2));
    if (rc) {
        vfail(v, "ptchurn", "clearing a private entry: %ld", rc);
        return;
    }
    uint64_t val;
    uint64_t r = probe_read64(private_va(s, 2), &val);
    if (r && PROBE_VECTOR(r) == 14)
        v->c[P_PF_BOUNCED]++;
    else
        vfail(v, "ptchurn", "read of an unmapped private va: probe %lx", r);
    rc = mm_set_entry(k, mfn_of(k, l1pfn), l1, 2,
                      pte_make(mfn_of(k, s->data_pfn[2]), PTE_DATA),
                      PTE_BY_DIRECT);
    if (rc)
        vfail(v, "ptchurn", "restoring a private entry: %ld", rc);
    else
        v->c[P_PTE_DIRECT]++;
}

/* Into guest user mode on this space's user base pointer and back by
 * SYSCALL: the user code reads the private mapping. */
static void user_trip(struct vcpu *v, const struct space *s)
{
    uint64_t sp =
        ((uint64_t)(uintptr_t)__builtin_frame_address(0) - 2048) & ~15ULL;
    long rc = hc_stack_switch(FLAT_KERNEL_SS, sp);
    if (rc) {
        vfail(v, "ptchurn", "stack_switch: %ld", rc);
        return;
    }
    uint64_t r = usermode_probe(v, (uint64_t)(uintptr_t)user_read_and_syscall,
                                private_va(s, NR_DATA - 1) + GUEST_PAGE_SIZE,
                                private_va(s, 0) + 8);
    (void)hc_stack_switch(FLAT_KERNEL_SS, v->stack_top);
    if (r & PROBE_FAULTED)
        vfail(v, "ptchurn", "user-mode trip on slot %u: vector %u error %x",
              s->slot, PROBE_VECTOR(r), PROBE_ERRCODE(r));
    else if (r != s->data_pfn[0])
        vfail(v, "ptchurn", "user mode read %lx, want pfn %lu", r,
              s->data_pfn[0]);
    else
        v->c[P_USER]++;
}

static int ptchurn_run(struct kernel *k, struct vcpu *v)
{
    uint64_t rounds = cmdline_num(k, "rounds", 8);
    uint64_t nspaces = cmdline_num(k, "spaces", 3);
    if (nspaces > MAX_SPACES)
        nspaces = MAX_SPACES;
    if (nspaces == 0)
        nspaces = 1;
    struct space spaces[MAX_SPACES];
    unsigned method = v->id % PTE_METHODS;

    for (uint64_t round = 0; round < rounds && !v->fails; round++) {
        unsigned built = 0, pinned = 0;
        for (unsigned si = 0; si < nspaces; si++) {
            spaces[si].slot = 1 + v->id * MAX_SPACES + si;
            if (build(k, v, &spaces[si], round))
                break;
            built++;
        }
        if (built < nspaces)
            goto teardown_unpinned;

        /* Tables read-only, then pin.  Every fourth round first tries to
         * pin with the last table still writable: refused. */
        for (unsigned si = 0; si < built; si++) {
            struct space *s = &spaces[si];
            for (unsigned t = 0; t < NR_TABLES; t++) {
                if (round % 4 == 1 && t == NR_TABLES - 1) {
                    long prc = mm_pin(mfn_of(k, s->table_pfn[0]), 4);
                    if (prc < 0) {
                        v->c[P_PIN_REFUSED]++;
                    } else {
                        vfail(v, "ptchurn",
                              "pin accepted with L1 pfn %lu mapped writable",
                              s->table_pfn[t]);
                        (void)mm_unpin(mfn_of(k, s->table_pfn[0]));
                    }
                }
                long rc = set_rw(k, v, s->table_pfn[t], false, method);
                method = (method + 1) % PTE_METHODS;
                if (rc) {
                    vfail(v, "ptchurn", "mapping table pfn %lu read-only: %ld",
                          s->table_pfn[t], rc);
                    goto teardown_unpinned;
                }
            }
        }
        for (; pinned < built; pinned++) {
            long rc = mm_pin(mfn_of(k, spaces[pinned].table_pfn[0]), 4);
            if (rc) {
                vfail(v, "ptchurn", "pin L4 of slot %u: %ld",
                      spaces[pinned].slot, rc);
                break;
            }
            v->c[P_PINS]++;
        }
        if (pinned < built)
            goto teardown;

        /* A pinned table mapped writable: refused. */
        {
            struct space *s = &spaces[round % built];
            uint64_t pfn = s->table_pfn[round % NR_TABLES];
            long rc = set_rw(k, v, pfn, true, method);
            if (rc) {
                v->c[P_RW_REFUSED]++;
            } else {
                vfail(v, "ptchurn",
                      "pinned table pfn %lu mapped writable by %s", pfn,
                      pte_method_name[method]);
                (void)set_rw(k, v, pfn, false, PTE_BY_UVA);
            }
            method = (method + 1) % PTE_METHODS;
        }

        for (unsigned si = 0; si < built; si++) {
            struct space *s = &spaces[si];
            uint64_t l4mfn = mfn_of(k, s->table_pfn[0]);
            long rc = mm_new_baseptr(l4mfn, false);
            if (rc) {
                vfail(v, "ptchurn", "NEW_BASEPTR slot %u: %ld", s->slot, rc);
                continue;
            }
            rc = mm_new_baseptr(l4mfn, true);
            if (rc)
                vfail(v, "ptchurn", "NEW_USER_BASEPTR slot %u: %ld", s->slot,
                      rc);
            v->c[P_SWITCHES]++;
            for (unsigned i = 0; i < NR_DATA; i++) {
                if (!check_private(v, s, i, s->data_pfn[i], round))
                    break;
                check_fill((uint64_t *)(uintptr_t)private_va(s, i),
                           s->data_pfn[i], round + 1, 0x40 + v->id);
            }
            churn_entries(k, v, s, round + 1, method);
            method = (method + 1) % PTE_METHODS;
            user_trip(v, s);
        }
        {
            long rc = mm_new_baseptr(k->l4_mfn, false);
            if (rc) {
                vfail(v, "ptchurn", "NEW_BASEPTR back to the boot L4: %ld", rc);
                return -1; /* cannot unpin what is in use */
            }
            rc = mm_new_baseptr(0, true);
            if (rc)
                vfail(v, "ptchurn", "clearing the user base pointer: %ld", rc);
        }
        for (unsigned si = 0; si < built; si++)
            for (unsigned i = 0; i < NR_DATA; i++) {
                uint64_t pfn = spaces[si].data_pfn[i];
                enum check_result r = check_verify(mm_va(pfn), pfn, round + 1,
                                                   0x40 + v->id, NULL);
                if (r != CHECK_OK)
                    vfail(v, "ptchurn", "data pfn %lu via physmap: %s", pfn,
                          check_result_name(r));
            }

    teardown:
        for (unsigned si = 0; si < pinned; si++) {
            long rc = mm_unpin(mfn_of(k, spaces[si].table_pfn[0]));
            if (rc)
                vfail(v, "ptchurn", "unpin slot %u: %ld", spaces[si].slot, rc);
            else
                v->c[P_UNPINS]++;
        }
    teardown_unpinned:
        for (unsigned si = 0; si < built; si++) {
            struct space *s = &spaces[si];
            for (unsigned t = 0; t < NR_TABLES; t++) {
                long rc = set_rw(k, v, s->table_pfn[t], true, method);
                method = (method + 1) % PTE_METHODS;
                if (rc) {
                    /* Still typed as a page table: keep it out of the
                     * allocator rather than reuse it. */
                    vfail(v, "ptchurn",
                          "unpinned table pfn %lu not mappable writable: %ld",
                          s->table_pfn[t], rc);
                    s->table_pfn[t] = INVALID_P2M;
                } else {
                    v->c[P_FREED]++;
                }
            }
            free_all(k, s);
            v->c[P_SPACES]++;
        }
        v->c[P_ROUNDS]++;
    }
    return v->fails ? -1 : 0;
}

const struct workload work_ptchurn = {
    .name = "ptchurn",
    .run = ptchurn_run,
    .counters = ptchurn_counters,
};
