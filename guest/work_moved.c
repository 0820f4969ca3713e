/*
 * work_moved.c - `moved` (run only when named): vCPU 0 waits until the
 * domain has been moved to another memvisor, then reads again the frame
 * numbers the kernel keeps, so that the workloads after it on the command
 * line run at the destination.
 *
 * A PV kernel sees machine frames.  A move rewrites those memvisor knows
 * of (every page table, the p2m list, the base pointers: docs/stream.md),
 * not the ones the kernel copied into its own variables: the frames of
 * its L4, the physmap's L3 and L2, and every physmap L1.  Xen's PV guests
 * refresh theirs when their suspend call returns in the new domain; this
 * kernel has no suspend call, so it watches its p2m list instead: the
 * destination allocates frames of its own, so the entry of the L4's pfn
 * changes exactly when the domain has moved.  The new numbers are read
 * from the (localised) page tables and the (rewritten) p2m list
 * (mm_refresh_frames()).  The other vCPUs go straight on to the next
 * workload's barrier.  `refresh=0` skips the refresh (the check's own
 * test: ptchurn after it then fails at the destination).
 */
#include "guest.h"

static const char *const moved_counters[] = {"moved", "yields", NULL};

static int moved_run(struct kernel *k, struct vcpu *v)
{
    uint64_t pfn, old = k->l4_mfn;

    if (v->id != 0)
        return 0;
    pfn = physmap_pfn((uint64_t)(uintptr_t)k->l4);
    kprintf(k, "moved: waiting (l4 pfn %lx mfn %lx)\n", pfn, old);
    while (__atomic_load_n(&k->p2m[pfn], __ATOMIC_ACQUIRE) == old) {
        vcpu_yield();
        v->c[1]++;
    }
    /* refresh=0: the check's own test (the next workloads then use the
     * source's frame numbers) */
    if (cmdline_get(k->cmdline, sizeof(k->cmdline), "refresh", 1))
        mm_refresh_frames(k);
    kprintf(k, "moved: l4 mfn %lx -> %lx, physmap l3 %lx l2 %lx\n", old,
            k->l4_mfn, k->l3_mfn, k->l2_mfn);
    v->c[0]++;
    return 0;
}

const struct workload work_moved = {
    .name = "moved",
    .run = moved_run,
    .counters = moved_counters,
};
