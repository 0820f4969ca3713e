/*
 * work_abi.c - the calls the other workloads do not make, each checked for
 * the result the ABI promises (docs/abi.md): multicall, set_segment_base
 * (read back through %fs and %gs), fpu_taskswitch (the next x87 instruction
 * traps with #NM, once; where the machine's KVM cannot deliver that, a note
 * is printed instead), set_callbacks, every xen_version command,
 * console_io read, the reservation queries, VCPUOP_is_up, vm_assist, the
 * TLB flush commands, MMU_PT_UPDATE_PRESERVE_AD, and an mmu_update batch
 * longer than one chunk of the hypervisor's copy loop.
 */
#include "guest.h"

enum { A_CHECKS, A_PASSED, A_MULTICALL, A_NM, A_BATCH };
static const char *const abi_counters[] = {
    "checks",     "passed",          "multicall-entries",
    "nm-bounced", "batched-updates", NULL};

extern char trap_32[], trap_33[], syscall_entry[];

static void check(struct vcpu *v, bool ok, const char *what, int64_t got)
{
    v->c[A_CHECKS]++;
    if (ok)
        v->c[A_PASSED]++;
    else
        vfail(v, "abi", "%s: got %ld (%lx)", what, got, (uint64_t)got);
}

static uint64_t read_fs0(void)
{
    uint64_t x;
    __asm__ volatile("mov %%fs:0, %0" : "=r"(x));
    return x;
}

static uint64_t read_gs0(void)
{
    uint64_t x;
    __asm__ volatile("mov %%gs:0, %0" : "=r"(x));
    return x;
}

static void abi_multicall(struct kernel *k, struct vcpu *v, uint64_t pfn)
{
    struct multicall_entry mc[3] = {
        {.op = __HYPERVISOR_xen_version, .args = {XENVER_version}},
        {.op = __HYPERVISOR_xen_version, .args = {XENVER_pagesize}},
        {.op = __HYPERVISOR_update_va_mapping,
         .args = {physmap_va(pfn), pte_make(k->p2m[pfn], PTE_DATA & ~_PAGE_RW),
                  UVMF_INVLPG | UVMF_ALL}},
    };
    long rc =
        hypercall(__HYPERVISOR_multicall, (uint64_t)(uintptr_t)mc, 3, 0, 0, 0);
    check(v, rc == 0, "multicall", rc);
    check(v, (int64_t)mc[0].result == hc_xen_version(XENVER_version, NULL),
          "multicall xen_version", (int64_t)mc[0].result);
    check(v, mc[1].result == 4096, "multicall pagesize", (int64_t)mc[1].result);
    check(v, mc[2].result == 0, "multicall update_va_mapping",
          (int64_t)mc[2].result);
    v->c[A_MULTICALL] += 3;
    /* The page is read-only now: a store faults. */
    uint64_t r = probe_write64(physmap_va(pfn), 1);
    check(v, (r & PROBE_FAULTED) && PROBE_VECTOR(r) == 14,
          "store to a page made read-only by multicall", (int64_t)r);
    rc =
        mm_set_physmap_pte(k, pfn, pte_make(k->p2m[pfn], PTE_DATA), PTE_BY_UVA);
    check(v, rc == 0, "making it writable again", rc);
}

static void abi_segments(struct kernel *k, struct vcpu *v, uint64_t *page)
{
    page[0] = 0x66730000 + v->id;
    page[1] = 0x67730000 + v->id;
    long rc = hypercall(__HYPERVISOR_set_segment_base, SEGBASE_FS,
                        (uint64_t)(uintptr_t)&page[0], 0, 0, 0);
    check(v, rc == 0, "set_segment_base FS", rc);
    if (rc == 0)
        check(v, read_fs0() == page[0], "read through %fs",
              (int64_t)read_fs0());
    rc = hypercall(__HYPERVISOR_set_segment_base, SEGBASE_GS_KERNEL,
                   (uint64_t)(uintptr_t)&page[1], 0, 0, 0);
    check(v, rc == 0, "set_segment_base GS_KERNEL", rc);
    if (rc == 0)
        check(v, read_gs0() == page[1], "read through %gs",
              (int64_t)read_gs0());
    rc = hypercall(__HYPERVISOR_set_segment_base, SEGBASE_FS,
                   0x0000800000000000ULL, 0, 0, 0);
    check(v, rc < 0, "set_segment_base to a non-canonical base", rc);
    (void)hypercall(__HYPERVISOR_set_segment_base, SEGBASE_FS, 0, 0, 0, 0);
    (void)hypercall(__HYPERVISOR_set_segment_base, SEGBASE_GS_KERNEL, 0, 0, 0,
                    0);
    (void)k;
}

static void abi_fpu(struct vcpu *v)
{
    long rc = hypercall(__HYPERVISOR_fpu_taskswitch, 1, 0, 0, 0, 0);
    check(v, rc == 0, "fpu_taskswitch(1)", rc);
    uint64_t r = probe_fnop();
    if (r & PROBE_FAULTED) {
        check(v, PROBE_VECTOR(r) == 7,
              "x87 instruction after fpu_taskswitch(1): #NM", (int64_t)r);
        v->c[A_NM]++;
        r = probe_fnop();
        check(v, r == 0, "x87 instruction after the #NM", (int64_t)r);
    } else {
        /* Xen's ABI says #NM; a KVM that runs guest ring 3 on the host's
         * CR0 cannot deliver it.  Reported, not failed: the guest cannot
         * tell that machine from a broken hypervisor. */
        kprintf(v->k, "abi: vcpu %u note: no #NM after fpu_taskswitch(1)\n",
                v->id);
    }
    rc = hypercall(__HYPERVISOR_fpu_taskswitch, 0, 0, 0, 0, 0);
    check(v, rc == 0, "fpu_taskswitch(0)", rc);
}

static void abi_version(struct vcpu *v, char *buf)
{
    long rc = hc_xen_version(XENVER_extraversion, buf);
    check(v,
          rc == 0 && kstrnlen(buf, XEN_EXTRAVERSION_LEN) < XEN_EXTRAVERSION_LEN,
          "xen_version extraversion", rc);
    rc = hc_xen_version(XENVER_capabilities, buf);
    check(v, rc == 0 && kstrncmp(buf, "xen-3.0-x86_64", 14) == 0,
          "xen_version capabilities", rc);
    struct xen_platform_parameters pp = {0};
    rc = hc_xen_version(XENVER_platform_parameters, &pp);
    check(v, rc == 0 && pp.virt_start == HYPERVISOR_VIRT_START,
          "xen_version platform_parameters", (int64_t)pp.virt_start);
    struct xen_feature_info fi = {.submap_idx = 0};
    rc = hc_xen_version(XENVER_get_features, &fi);
    check(v, rc == 0 && (fi.submap & (1U << XENFEAT_writable_page_tables)),
          "xen_version get_features", (int64_t)fi.submap);
    rc = hc_xen_version(XENVER_pagesize, NULL);
    check(v, rc == 4096, "xen_version pagesize", rc);
    rc = hc_xen_version(1000, buf);
    check(v, rc < 0, "xen_version command 1000", rc);
}

static void abi_misc(struct kernel *k, struct vcpu *v, char *buf)
{
    long rc = hypercall(__HYPERVISOR_console_io, CONSOLEIO_read, 16,
                        (uint64_t)(uintptr_t)buf, 0, 0);
    check(v, rc >= 0, "console_io read", rc);
    uint16_t dom = DOMID_SELF;
    long cur = hc_memory_op(XENMEM_current_reservation, &dom);
    long max = hc_memory_op(XENMEM_maximum_reservation, &dom);
    check(v, cur >= (long)k->nr_pages && cur <= max,
          "current_reservation within maximum_reservation", cur);
    rc = hc_vcpu_op(VCPUOP_is_up, v->id, NULL);
    check(v, rc == 1, "VCPUOP_is_up on itself", rc);
    rc = hc_vm_assist(VMASST_CMD_enable, VMASST_TYPE_writable_pagetables);
    check(v, rc == 0, "vm_assist writable_pagetables", rc);
    rc = hypercall(__HYPERVISOR_set_callbacks, (uint64_t)(uintptr_t)trap_32,
                   (uint64_t)(uintptr_t)trap_33,
                   (uint64_t)(uintptr_t)syscall_entry, 0, 0);
    check(v, rc == 0, "set_callbacks", rc);
    static const unsigned flushes[] = {
        MMUEXT_TLB_FLUSH_LOCAL, MMUEXT_TLB_FLUSH_ALL, MMUEXT_INVLPG_LOCAL};
    for (unsigned i = 0; i < 3; i++) {
        struct mmuext_op op = {.cmd = flushes[i],
                               .arg1.linear_addr = VIRT_BASE};
        rc = hc_mmuext_op(&op, 1, NULL);
        check(v, rc == 0, "TLB flush command", rc);
    }
}

/* Rewrites n physmap entries with their own values in one mmu_update (more
 * than one chunk of the hypervisor's copy loop), alternating
 * MMU_NORMAL_PT_UPDATE and MMU_PT_UPDATE_PRESERVE_AD. */
static void abi_batch(struct kernel *k, struct vcpu *v, uint64_t list_pfn,
                      const uint64_t *pfns, unsigned n)
{
    struct mmu_update *req = (struct mmu_update *)mm_va(list_pfn);
    for (unsigned i = 0; i < n; i++) {
        req[i].ptr = mm_physmap_pte_maddr(k, pfns[i]) |
                     (i % 2 ? MMU_PT_UPDATE_PRESERVE_AD : MMU_NORMAL_PT_UPDATE);
        req[i].val = pte_make(k->p2m[pfns[i]], PTE_DATA);
    }
    unsigned done = 0;
    long rc = hc_mmu_update(req, n, &done);
    check(v, rc == 0 && done == n, "mmu_update batch", rc ? rc : done);
    v->c[A_BATCH] += done;
    for (unsigned i = 0; i < n; i++) {
        uint64_t *page = mm_va(pfns[i]);
        check_fill(page, pfns[i], 1, 0xa0 + v->id);
        if (check_verify(page, pfns[i], 1, 0xa0 + v->id, NULL) != CHECK_OK) {
            check(v, false, "page after the batch", (int64_t)pfns[i]);
            break;
        }
    }
}

static int abi_run(struct kernel *k, struct vcpu *v)
{
    /* 256 requests of 16 bytes fill one page. */
    enum { BATCH = 256 };
    uint64_t n = work_alloc_pages(k, v, BATCH + 2);
    if (n < BATCH + 2) {
        vfail(v, "abi", "out of memory");
        work_free_pages(k, v, n);
        return -1;
    }
    uint64_t *pfns = work_pfns[v->id];
    abi_multicall(k, v, pfns[0]);
    abi_segments(k, v, mm_va(pfns[0]));
    abi_fpu(v);
    abi_version(v, (char *)mm_va(pfns[1]));
    abi_misc(k, v, (char *)mm_va(pfns[1]));
    abi_batch(k, v, pfns[1], pfns + 2, BATCH);
    work_free_pages(k, v, n);
    return 0;
}

const struct workload work_abi = {
    .name = "abi",
    .run = abi_run,
    .counters = abi_counters,
};
