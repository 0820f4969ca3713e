/*
 * mm.c - the guest's memory: the physmap (every pfn mapped at
 * VIRT_BASE + pfn * 4 KiB, extended at boot beyond the bootstrap region with
 * L1 tables the guest builds itself), the frame allocator, and the three ways
 * of changing an entry: mmu_update, update_va_mapping, and a plain store
 * into a read-only L1 that the hypervisor emulates.
 */
#include "guest.h"

extern char __image_end[];

const char *const pte_method_name[PTE_METHODS] = {
    "mmu_update",
    "update_va_mapping",
    "direct-store",
};

uint64_t *mm_va(uint64_t pfn)
{
    return (uint64_t *)(uintptr_t)physmap_va(pfn);
}

uint64_t *mm_physmap_ptep(struct kernel *k, uint64_t pfn)
{
    return k->l1_va[pfn >> 9] + (pfn & 511);
}

uint64_t mm_physmap_pte_maddr(struct kernel *k, uint64_t pfn)
{
    return pt_entry_maddr(k->l1_mfn[pfn >> 9], (unsigned)(pfn & 511));
}

bool mm_owns_mfn(struct kernel *k, uint64_t mfn)
{
    for (uint64_t pfn = 0; pfn < k->nr_pages; pfn++)
        if (k->p2m[pfn] == mfn)
            return true;
    return false;
}

static uint64_t mfn_to_pfn_slow(struct kernel *k, uint64_t mfn)
{
    for (uint64_t pfn = 0; pfn < k->nr_pages; pfn++)
        if (k->p2m[pfn] == mfn)
            return pfn;
    return INVALID_P2M;
}

/* The physmap address of a bootstrap page table, or NULL. */
static uint64_t *boot_table_va(struct kernel *k, uint64_t mfn, uint64_t *pfn)
{
    *pfn = mfn_to_pfn_slow(k, mfn);
    if (*pfn == INVALID_P2M || *pfn >= k->physmap_pfns)
        return NULL;
    return mm_va(*pfn);
}

long mm_flush_va(uint64_t va)
{
    struct mmuext_op op = {.cmd = MMUEXT_INVLPG_ALL, .arg1.linear_addr = va};
    return hc_mmuext_op(&op, 1, NULL);
}

long mm_set_entry(struct kernel *k, uint64_t mfn, uint64_t *table_va,
                  unsigned idx, uint64_t val, enum pte_method how)
{
    (void)k;
    switch (how) {
    case PTE_BY_MMU_UPDATE: {
        struct mmu_update u = {
            .ptr = pt_entry_maddr(mfn, idx) | MMU_NORMAL_PT_UPDATE,
            .val = val,
        };
        unsigned done = 0;
        long rc = hc_mmu_update(&u, 1, &done);
        if (rc == 0 && done != 1)
            rc = -XEN_EIO;
        return rc;
    }
    case PTE_BY_DIRECT: {
        uint64_t r = probe_write64((uint64_t)(uintptr_t)&table_va[idx], val);
        return r ? -XEN_EFAULT : 0;
    }
    default:
        return -XEN_EINVAL;
    }
}

long mm_set_physmap_pte(struct kernel *k, uint64_t pfn, uint64_t pte,
                        enum pte_method how)
{
    uint64_t va = physmap_va(pfn);
    if (how == PTE_BY_UVA)
        return hc_update_va_mapping(va, pte, UVMF_INVLPG | UVMF_ALL);
    long rc = mm_set_entry(k, k->l1_mfn[pfn >> 9], k->l1_va[pfn >> 9],
                           (unsigned)(pfn & 511), pte, how);
    if (rc == 0)
        rc = mm_flush_va(va);
    return rc;
}

long mm_pin(uint64_t mfn, unsigned level)
{
    struct mmuext_op op = {.cmd = MMUEXT_PIN_L1_TABLE + level - 1,
                           .arg1.mfn = mfn};
    return hc_mmuext_op(&op, 1, NULL);
}

long mm_unpin(uint64_t mfn)
{
    struct mmuext_op op = {.cmd = MMUEXT_UNPIN_TABLE, .arg1.mfn = mfn};
    return hc_mmuext_op(&op, 1, NULL);
}

long mm_new_baseptr(uint64_t mfn, bool user)
{
    struct mmuext_op op = {.cmd = user ? MMUEXT_NEW_USER_BASEPTR
                                       : MMUEXT_NEW_BASEPTR,
                           .arg1.mfn = mfn};
    return hc_mmuext_op(&op, 1, NULL);
}

/* ---- allocator ---- */

static void free_mark_locked(struct kernel *k, uint64_t pfn)
{
    k->free_bitmap[pfn / 64] |= 1ULL << (pfn % 64);
    k->free_count++;
}

uint64_t mm_alloc(struct kernel *k)
{
    uint64_t words = (k->physmap_pfns + 63) / 64;
    uint64_t pfn = INVALID_P2M;
    spin_lock(&k->lock);
    for (uint64_t n = 0; n < words; n++) {
        uint64_t w = (k->free_hint + n) % words;
        if (k->free_bitmap[w]) {
            unsigned bit = (unsigned)__builtin_ctzll(k->free_bitmap[w]);
            k->free_bitmap[w] &= ~(1ULL << bit);
            k->free_count--;
            k->free_hint = w;
            pfn = w * 64 + bit;
            break;
        }
    }
    spin_unlock(&k->lock);
    if (pfn != INVALID_P2M)
        kmemset(mm_va(pfn), 0, GUEST_PAGE_SIZE);
    return pfn;
}

void mm_free(struct kernel *k, uint64_t pfn)
{
    spin_lock(&k->lock);
    free_mark_locked(k, pfn);
    spin_unlock(&k->lock);
}

/* ---- boot ---- */

static uint64_t max_u64(uint64_t a, uint64_t b)
{
    return a > b ? a : b;
}

static uint64_t pfn_end_of(uint64_t va, uint64_t len)
{
    return physmap_pfn(va + len + GUEST_PAGE_SIZE - 1);
}

static long flush_batch(struct kernel *k, struct mmu_update *req,
                        const uint64_t *pfns, unsigned n)
{
    unsigned done = 0;
    long rc = hc_mmu_update(req, n, &done);
    for (unsigned i = 0; i < done && i < n; i++)
        free_mark_locked(k, pfns[i]);
    return rc;
}

/* Maps the pfns of chunk c (>= first) that its existing L1 lacks, and
 * frees every pfn of the chunk (>= first) that is then mapped. */
static long extend_chunk(struct kernel *k, unsigned c, uint64_t first)
{
    struct mmu_update req[64];
    uint64_t pfns[64];
    unsigned n = 0;
    uint64_t lo = max_u64((uint64_t)c * 512, first);
    uint64_t hi = (uint64_t)c * 512 + 512;
    if (hi > k->physmap_pfns)
        hi = k->physmap_pfns;
    for (uint64_t pfn = lo; pfn < hi; pfn++) {
        uint64_t *ptep = mm_physmap_ptep(k, pfn);
        if (k->p2m[pfn] == INVALID_P2M)
            continue;
        if (pte_present(*ptep)) {
            if (pte_mfn(*ptep) == k->p2m[pfn] && (*ptep & _PAGE_RW))
                free_mark_locked(k, pfn);
            continue;
        }
        req[n].ptr = mm_physmap_pte_maddr(k, pfn) | MMU_NORMAL_PT_UPDATE;
        req[n].val = pte_make(k->p2m[pfn], PTE_DATA);
        pfns[n] = pfn;
        if (++n == 64) {
            long rc = flush_batch(k, req, pfns, n);
            if (rc)
                return rc;
            n = 0;
        }
    }
    return n ? flush_batch(k, req, pfns, n) : 0;
}

/* Builds a new L1 for chunk c out of a free page and hooks it into the
 * physmap L2. */
static long build_chunk(struct kernel *k, unsigned c)
{
    uint64_t l1pfn = mm_alloc(k);
    if (l1pfn == INVALID_P2M)
        return -XEN_ENOMEM;
    uint64_t *t = mm_va(l1pfn);
    uint64_t l1mfn = k->p2m[l1pfn];
    for (unsigned j = 0; j < 512; j++) {
        uint64_t pfn = (uint64_t)c * 512 + j;
        if (pfn < k->physmap_pfns && k->p2m[pfn] != INVALID_P2M)
            t[j] = pte_make(k->p2m[pfn], PTE_DATA);
    }
    long rc = mm_set_physmap_pte(
        k, l1pfn, pte_make(l1mfn, PTE_DATA & ~_PAGE_RW), PTE_BY_UVA);
    if (rc) {
        kprintf(k, "guest: making new L1 pfn %lu read-only: %ld\n", l1pfn, rc);
        mm_free(k, l1pfn);
        return rc;
    }
    struct mmu_update u = {
        .ptr = pt_entry_maddr(k->l2_mfn, c) | MMU_NORMAL_PT_UPDATE,
        .val = pte_make(l1mfn, PTE_TABLE),
    };
    rc = hc_mmu_update(&u, 1, NULL);
    if (rc) {
        kprintf(k, "guest: hooking new L1 mfn %lx at L2[%u]: %ld\n", l1mfn, c,
                rc);
        (void)mm_set_physmap_pte(k, l1pfn, pte_make(l1mfn, PTE_DATA),
                                 PTE_BY_UVA);
        mm_free(k, l1pfn);
        return rc;
    }
    k->l1_mfn[c] = l1mfn;
    k->l1_va[c] = t;
    k->l1_built++;
    spin_lock(&k->lock);
    for (unsigned j = 0; j < 512; j++)
        if (t[j])
            free_mark_locked(k, (uint64_t)c * 512 + j);
    spin_unlock(&k->lock);
    return 0;
}

void mm_refresh_frames(struct kernel *k)
{
    k->l4_mfn = __atomic_load_n(
        &k->p2m[physmap_pfn((uint64_t)(uintptr_t)k->l4)], __ATOMIC_ACQUIRE);
    k->l3_mfn = pte_mfn(k->l4[PHYSMAP_L4_SLOT]);
    k->l2_mfn = pte_mfn(k->l3[PHYSMAP_L3_SLOT]);
    for (unsigned i = 0; i < PT_ENTRIES; i++)
        if (k->l1_mfn[i])
            k->l1_mfn[i] = pte_mfn(k->l2[i]);
}

int mm_init(struct kernel *k, uint64_t boot_rsp)
{
    struct start_info *si = k->si;
    k->nr_pages = si->nr_pages;
    k->p2m = (uint64_t *)(uintptr_t)si->mfn_list;
    k->physmap_pfns =
        k->nr_pages < PHYSMAP_MAX_PFNS ? k->nr_pages : PHYSMAP_MAX_PFNS;
    if (si->pt_base < VIRT_BASE || si->mfn_list < VIRT_BASE) {
        kprintf(k,
                "FAIL: boot: pt_base %lx / mfn_list %lx outside the "
                "bootstrap region\n",
                si->pt_base, si->mfn_list);
        return -1;
    }
    uint64_t l4_pfn = physmap_pfn(si->pt_base);
    k->l4 = (uint64_t *)(uintptr_t)si->pt_base;
    k->l4_mfn = k->p2m[l4_pfn];
    uint64_t used_end = physmap_pfn((uint64_t)(uintptr_t)__image_end);
    used_end = max_u64(used_end, pfn_end_of((uint64_t)(uintptr_t)si, 1));
    used_end = max_u64(used_end, pfn_end_of(si->mfn_list, k->nr_pages * 8));
    used_end = max_u64(used_end, l4_pfn + si->nr_pt_frames);
    used_end = max_u64(used_end, physmap_pfn(boot_rsp + GUEST_PAGE_SIZE - 1));

    uint64_t e = k->l4[PHYSMAP_L4_SLOT], pfn;
    if (!pte_present(e) ||
        !(k->l3 = boot_table_va(k, k->l3_mfn = pte_mfn(e), &pfn))) {
        kprintf(k, "FAIL: boot: no L3 at L4[%u] (%lx)\n", PHYSMAP_L4_SLOT, e);
        return -1;
    }
    used_end = max_u64(used_end, pfn + 1);
    e = k->l3[PHYSMAP_L3_SLOT];
    if (!pte_present(e) || (e & _PAGE_PSE) ||
        !(k->l2 = boot_table_va(k, k->l2_mfn = pte_mfn(e), &pfn))) {
        kprintf(k, "FAIL: boot: no L2 at L3[%u] (%lx)\n", PHYSMAP_L3_SLOT, e);
        return -1;
    }
    used_end = max_u64(used_end, pfn + 1);
    for (unsigned i = 0; i < PT_ENTRIES; i++) {
        e = k->l2[i];
        if (!pte_present(e))
            continue;
        if ((e & _PAGE_PSE) ||
            !(k->l1_va[i] = boot_table_va(k, pte_mfn(e), &pfn))) {
            kprintf(k, "FAIL: boot: L2[%u] = %lx is not a bootstrap L1\n", i,
                    e);
            return -1;
        }
        k->l1_mfn[i] = pte_mfn(e);
        used_end = max_u64(used_end, pfn + 1);
    }
    k->boot_free_start = used_end;

    /* First the free pages the bootstrap tables already map (at least
     * 512 KiB), then the rest chunk by chunk: each new L1 comes from pages
     * mapped by the chunks before it. */
    unsigned chunks = (unsigned)((k->physmap_pfns + 511) / 512);
    long rc = 0;
    for (unsigned c = 0; c < chunks && !rc; c++)
        if (k->l1_mfn[c]) {
            spin_lock(&k->lock);
            rc = extend_chunk(k, c, used_end);
            spin_unlock(&k->lock);
        }
    for (unsigned c = 0; c < chunks && !rc; c++)
        if (!k->l1_mfn[c])
            rc = build_chunk(k, c);
    if (rc)
        kprintf(k, "guest: physmap stops early: %ld\n", rc);
    kprintf(k,
            "guest: physmap pfns=%lu bootstrap-end=%lu l1-built=%lu "
            "free=%lu l4 mfn=%lx\n",
            k->physmap_pfns, used_end, k->l1_built, k->free_count, k->l4_mfn);
    return k->free_count ? 0 : -1;
}
