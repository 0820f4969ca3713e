/*
 * bench_memslot.c - slot update latency as a ratio to the bare
 * KVM_SET_USER_MEMORY_REGION ioctl measured in the same run.
 *
 * Run: `make bench` (release build), or build-bench/bench/memslot/bench-memslot.
 * A 64 MiB region (16384 pages, one slot) of a VM with no running vCPU:
 *   split+merge   memslot_track() + memslot_untrack() of a page in the middle
 *                 (delete 1 + create 3, then delete 3 + create 1);
 *   log on/off    memslot_set_log_dirty() (flags only; "off" first pulls the
 *                 slot's log: one KVM_GET_DIRTY_LOG);
 *   create/delete memslot_populate() + memslot_remove() of 64 pages;
 *   move          memslot_move() of 64 pages away and back.
 * The bare figure is one KVM_SET_USER_MEMORY_REGION (create, flags change,
 * delete of a spare 16384-page slot), averaged; each operation is also compared with
 * the bare cost of the ioctls it issued.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "../bench.h"
#include "memfix.h"

#define NPAGES 16384
#define N 200
#define G(x) (MEMFIX_GFN0 + (x))

static struct memfix f;

static struct memslot_tracker trk;

static int nop_write(struct memslot_tracker *t, gpa_t a, const void *b, uint32_t n)
{
    (void)t, (void)a, (void)b, (void)n;
    return 0;
}

static void nop_removed(struct memslot_tracker *t, gfn_t g, uint64_t n)
{
    (void)t, (void)g, (void)n;
}

static int op_split_merge(void)
{
    return memslot_track(&f.ms, _gfn(G(NPAGES / 2)), &trk) ||
           memslot_untrack(&f.ms, _gfn(G(NPAGES / 2)), &trk);
}

static int op_log(void)
{
    return memslot_set_log_dirty(&f.ms, true) || memslot_set_log_dirty(&f.ms, false);
}

static int op_create_delete(void)
{
    return memslot_populate(&f.ms, _gfn(G(NPAGES + 100)),
                            _mfn(mfn_x(f.first_mfn) + NPAGES), 64, P2M_RAM) ||
           memslot_remove(&f.ms, _gfn(G(NPAGES + 100)), 64);
}

static int op_move(void)
{
    return memslot_move(&f.ms, _gfn(G(0)), _gfn(G(NPAGES + 500)), 64) ||
           memslot_move(&f.ms, _gfn(G(NPAGES + 500)), _gfn(G(0)), 64);
}

int main(void)
{
    static const struct {
        const char *name;
        int (*op)(void);
    } ops[] = {
        {"split+merge", op_split_merge},
        {"log on+off", op_log},
        {"create+delete", op_create_delete},
        {"move away+back", op_move},
    };

    trk.write = nop_write;
    trk.removed = nop_removed;
    if (memfix_init(&f, GUEST_SYNC_LOOP, NULL, NULL, NPAGES + 64, 3 * NPAGES) ||
        memslot_populate(&f.ms, _gfn(G(0)), f.first_mfn, NPAGES, P2M_RAM))
        return 1;

    /* bare ioctl: create, flags change, delete of a spare slot of the same
     * size as the region's, aliasing its memory; timed interleaved with
     * each operation (this host is shared), medians reported */
    void *hva = frames_ptr(&f.frames, f.first_mfn);
    uint64_t gpa = (G(0) + 2 * NPAGES) << PAGE_SHIFT;
    static double bare_ns[N], op_ns[N];
    printf("slot update latency, %d pages in one slot, medians of %d runs "
           "interleaved with the bare ioctls\n", NPAGES, N);

    for (unsigned k = 0; k < ARRAY_SIZE(ops); k++) {
        uint64_t ioctls = f.ms.stats.ioctls, gets = f.dirty.stats.get_calls;
        for (int i = 0; i < N; i++) {
            uint64_t t = now_ns();
            if (kvm_vm_set_memory_region(&f.vm->vm, 400, 0, gpa,
                                         (uint64_t)NPAGES << 12, hva) ||
                kvm_vm_set_memory_region(&f.vm->vm, 400, KVM_SLOT_LOG_DIRTY,
                                         gpa, (uint64_t)NPAGES << 12, hva) ||
                kvm_vm_set_memory_region(&f.vm->vm, 400, 0, gpa, 0, hva))
                return 1;
            bare_ns[i] = (double)(now_ns() - t) / 3.0;
            t = now_ns();
            if (ops[k].op()) {
                fprintf(stderr, "bench-memslot: %s failed\n", ops[k].name);
                return 1;
            }
            op_ns[i] = (double)(now_ns() - t);
        }
        double bare = median(bare_ns, N), ns = median(op_ns, N);
        double per = (double)(f.ms.stats.ioctls - ioctls) / N;
        double g = (double)(f.dirty.stats.get_calls - gets) / N;
        printf("%-15s %8.1f us = %5.2f x one bare ioctl (%.1f us); issues %.1f ioctls"
               " (+%.1f dirty-log gets): %.2f x their bare cost\n",
               ops[k].name, ns / 1e3, ns / bare, bare / 1e3, per, g,
               ns / (bare * (per + g)));
    }
    if (memslot_check(&f.ms))
        return 1;
    memfix_fini(&f);
    return 0;
}
