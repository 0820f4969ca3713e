/*
 * bench_dirty.c - the cost of a dirty-log harvest for a 1 GiB guest with
 * 1 %, 10 % and 100 % of its pages dirty, bitmap with manual clear versus
 * dirty ring, each as a ratio to the bare KVM ioctls for the same pages
 * measured in the same run; and the dirty log's memory per guest page.
 *
 * Run: `make bench` (release build), or build-bench/bench/dirty/bench-dirty.
 * A ring-3 guest stores into every k-th page of a 1 GiB region per pass.
 *   ours, bitmap: dirty_sync() (KVM_GET_DIRTY_LOG per slot, OR into the
 *     domain log) + dirty_harvest() (take each word, KVM_CLEAR_DIRTY_LOG
 *     per non-empty 64-page chunk, consumer);
 *   bare, bitmap: one KVM_GET_DIRTY_LOG + one KVM_CLEAR_DIRTY_LOG of the
 *     whole slot;
 *   ours, ring: every dirty_sync() (ring-full exits included) + harvest;
 *   bare, ring: collecting the ring entries + KVM_RESET_DIRTY_RINGS.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../bench.h"
#include "lib/bitmap.h"
#include "memfix.h"

#define NPAGES (1ULL << 18) /* 1 GiB */
#define ROUNDS 5

struct ctx {
    struct memfix f;
    bool bare;       /* ring-full exits: bare collection instead of ours */
    uint64_t ring_ns; /* time spent in ring-full harvests */
    uint64_t entries;
};

static void count_entry(uint32_t slot, uint64_t off, void *opaque)
{
    (void)slot;
    (void)off;
    (*(uint64_t *)opaque)++;
}

static int bare_ring(struct ctx *c)
{
    kvm_vcpu_ring_harvest(&c->f.vm->vcpu.k, count_entry, &c->entries);
    int rc = kvm_vm_reset_dirty_rings(&c->f.vm->vm);
    return rc < 0 ? rc : 0;
}

static int ring_full(void *opaque)
{
    struct ctx *c = opaque;
    uint64_t t = now_ns();
    int rc = c->bare ? bare_ring(c) : dirty_sync(&c->f.dirty);
    c->ring_ns += now_ns() - t;
    return rc;
}

static int consume(gfn_t chunk, uint64_t bits, void *opaque)
{
    (void)chunk;
    *(uint64_t *)opaque += (uint64_t)__builtin_popcountll(bits);
    return 0;
}

static int guest_pass(struct ctx *c)
{
    uint64_t code, arg;
    return kvmtest_run_ucall(c->f.vm, &code, &arg);
}

static int run_mode(bool ring)
{
    static struct ctx c;
    static const uint64_t strides[] = {100, 10, 1};
    uint64_t *buf = bitmap_alloc(NPAGES);
    struct kvm_vm_config cfg;
    int rc;

    if (kvmtest_vm_config(&cfg, ring, 65536 * 16))
        return 1;
    if (ring && cfg.dirty_mode != KVM_DIRTY_RING) {
        printf("ring: not offered by this KVM\n");
        return 0;
    }
    memset(&c, 0, sizeof(c));
    rc = memfix_init(&c.f, GUEST_STRIDE_WRITER, &cfg, NULL, NPAGES, NPAGES);
    if (rc)
        return 1;
    c.f.vm->hooks.ring_full = ring_full;
    c.f.vm->hooks.opaque = &c;
    if (memslot_populate(&c.f.ms, _gfn(MEMFIX_GFN0), c.f.first_mfn, NPAGES, P2M_RAM) ||
        memslot_set_log_dirty(&c.f.ms, true))
        return 1;
    struct kvmtest_args *a = kvmtest_args(c.f.vm);
    a->base = memfix_gva(MEMFIX_GFN0);
    a->npages = NPAGES;
    a->writes_per_sync = 1;
    /* first touch, then start from a clean log */
    if (guest_pass(&c) || dirty_sync(&c.f.dirty))
        return 1;
    uint64_t n = 0;
    if (dirty_harvest(&c.f.dirty, _gfn(0), c.f.nr_gfns, consume, &n))
        return 1;
    if (ring && bare_ring(&c))
        return 1;

    for (unsigned s = 0; s < ARRAY_SIZE(strides); s++) {
        double ours_r[ROUNDS], bare_r[ROUNDS];
        uint64_t pages = 0;
        a->writes_per_sync = strides[s];
        for (int r = 0; r < ROUNDS; r++) {
            /* ours */
            c.bare = false;
            c.ring_ns = 0;
            if (guest_pass(&c))
                return 1;
            uint64_t t = now_ns();
            n = 0;
            if (dirty_sync(&c.f.dirty) ||
                dirty_harvest(&c.f.dirty, _gfn(0), c.f.nr_gfns, consume, &n))
                return 1;
            ours_r[r] = (double)(now_ns() - t + c.ring_ns);
            pages = n;
            /* bare ioctls for the same pass */
            c.bare = true;
            c.ring_ns = 0;
            if (guest_pass(&c))
                return 1;
            t = now_ns();
            if (ring) {
                if (bare_ring(&c))
                    return 1;
            } else {
                uint32_t id = c.f.ms.slots[0].id;
                if (kvm_vm_get_dirty_log(&c.f.vm->vm, id, buf) ||
                    kvm_vm_clear_dirty_log(&c.f.vm->vm, id, 0, (uint32_t)NPAGES, buf))
                    return 1;
            }
            bare_r[r] = (double)(now_ns() - t + c.ring_ns);
            /* the bare round's bits are in KVM's log (bitmap: cleared by
             * the bare CLEAR; the domain log holds none of them) */
        }
        double ours = median(ours_r, ROUNDS), bare = median(bare_r, ROUNDS);
        printf("%-13s %3" PRIu64 "%% dirty: %7" PRIu64 " pages, harvest %9.3f ms, "
               "bare ioctls %9.3f ms, ratio %6.2f\n",
               ring ? "ring" : "bitmap+clear", 100 / strides[s], pages,
               ours / 1e6, bare / 1e6, ours / bare);
    }
    uint64_t bytes = dirty_memory_bytes(&c.f.dirty);
    printf("%-13s dirty-log memory: %" PRIu64 " bytes = %.2f bits per guest-physical "
           "page (%" PRIu64 " gfns; the RAM starts at 1 GiB), %.2f per RAM page, "
           "beyond KVM's own bitmaps\n",
           ring ? "ring" : "bitmap+clear", bytes,
           8.0 * (double)bytes / (double)c.f.nr_gfns, c.f.nr_gfns,
           8.0 * (double)bytes / (double)NPAGES);
    memfix_fini(&c.f);
    free(buf);
    return 0;
}

int main(void)
{
    printf("dirty-log harvest, 1 GiB guest (medians of %d rounds)\n", ROUNDS);
    if (run_mode(false) || run_mode(true)) {
        fprintf(stderr, "bench-dirty: failed\n");
        return 1;
    }
    return 0;
}
