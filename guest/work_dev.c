/*
 * work_dev.c - the guest drives a device model: the test device
 * (memvisor-dm-test, docs/dm-protocol.md) at ports 0x5000..0x503f, reached
 * with in/out from the guest kernel (ring 3, IOPL 0: each access faults
 * and memvisor forwards it to the device model that claims the port).
 *
 *  1. fill, copy and checksum guest pages by the device, checked here;
 *  2. watch a page: every store to it reaches the device in order (its
 *     hash over (gpa, len, bytes) of each store and its shadow of the page
 *     equal what the guest computes); giving the page back (balloon out)
 *     is announced to the device once, by the time the hypercall returns;
 *  3. a deferred DMA (the device took the page's mapping and writes 200 ms
 *     later) to a page the guest then gives back: when decrease_reservation
 *     returns, the DMA has finished (memvisor waited for the device's
 *     invalidation acknowledgement, which waited for the DMA), and the page
 *     taken back is scrubbed.
 *
 *  4. with block=1, the block device (memvisor-dm-block, ports
 *     0x5100..0x511f): write a page to a run of sectors, read it back into
 *     another page, compare (and the device's checksum); read sectors into
 *     a buffer that is then given back and taken back scrubbed.
 *
 *  5. with mmio=1, the test device's MMIO page at 0xf0000000 (granted I/O
 *     memory, docs/abi.md): mapped through the guest's own page tables in
 *     place of one of its pages, a checksum driven by loads and stores to
 *     it; mapping the frame after it (not granted) is refused.
 *
 * Runs on vCPU 0; the other vCPUs idle.  Options: rounds=<n> (default 4),
 * block=1, mmio=1.
 */
#include "guest.h"

#define DEV 0x5000
enum {
    R_SRC = 0x00, R_DST = 0x04, R_LEN = 0x08, R_VAL = 0x0c, R_CMD = 0x10,
    R_STATUS = 0x14, R_RESULT = 0x18, R_DELAY = 0x1c, R_DMA_STATE = 0x20,
    R_DMA_READ = 0x24, R_WCOUNT = 0x28, R_WHASH = 0x2c, R_WGONE = 0x30,
    R_WSUM = 0x34, R_WSTATUS = 0x38,
};
enum { C_COPY = 1, C_FILL = 2, C_SUM = 3, C_DMA = 4, C_WATCH = 5 };

#define BLK 0x5100
enum { B_SECTOR = 0x00, B_GFN = 0x04, B_COUNT = 0x08, B_CMD = 0x0c,
       B_STATUS = 0x10, B_CAPACITY = 0x14, B_SUM = 0x18 };

#define DEV_MMIO_MFN 0xf0000ULL

enum { D_OPS, D_WATCHED, D_GONE, D_DMA_DONE, D_SCRUBBED, D_BLOCK, D_MMIO,
       D_MMIO_REFUSED };
static const char *const dev_counters[] = {
    "device-ops", "watched-stores", "gone-notices", "dma-done-first",
    "scrubbed",   "block-ops",      "mmio-ops",     "mmio-refused",
    NULL};

static inline void outl(uint32_t v, uint16_t port)
{
    __asm__ volatile("outl %0, %w1" : : "a"(v), "Nd"(port) : "memory");
}

static inline uint32_t inl(uint16_t port)
{
    uint32_t v;
    __asm__ volatile("inl %w1, %0" : "=a"(v) : "Nd"(port) : "memory");
    return v;
}

static uint32_t fnv(uint32_t h, const void *p, uint64_t n)
{
    const uint8_t *b = p;
    for (uint64_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 16777619u;
    return h;
}
#define FNV0 2166136261u

static uint32_t dev_cmd(unsigned cmd)
{
    outl(cmd, DEV + R_CMD);
    return inl(DEV + R_STATUS);
}

static long reservation(unsigned cmd, uint64_t *ext, uint64_t n)
{
    struct xen_memory_reservation r = {
        .extent_start = (uint64_t)(uintptr_t)ext,
        .nr_extents = n,
        .extent_order = 0,
        .domid = DOMID_SELF,
    };
    return hc_memory_op(cmd, &r);
}

/* Give pfn's frame back; 0 or -1 (failed, reported). */
static int give_back(struct kernel *k, struct vcpu *v, uint64_t pfn)
{
    uint64_t ext = k->p2m[pfn];
    long rc = mm_set_physmap_pte(k, pfn, 0, PTE_BY_UVA);
    if (rc) {
        vfail(v, "dev", "unmapping pfn %lu: %ld", pfn, rc);
        return -1;
    }
    spin_lock(&k->balloon_lock);
    rc = reservation(XENMEM_decrease_reservation, &ext, 1);
    spin_unlock(&k->balloon_lock);
    if (rc != 1) {
        vfail(v, "dev", "decrease_reservation: %ld", rc);
        return -1;
    }
    k->p2m[pfn] = INVALID_P2M;
    return 0;
}

/* Take a frame back for pfn and map it; checks it is scrubbed. */
static int take_back(struct kernel *k, struct vcpu *v, uint64_t pfn)
{
    uint64_t ext = pfn;
    spin_lock(&k->balloon_lock);
    long rc = reservation(XENMEM_populate_physmap, &ext, 1);
    spin_unlock(&k->balloon_lock);
    if (rc != 1) {
        vfail(v, "dev", "populate_physmap: %ld", rc);
        return -1;
    }
    k->p2m[pfn] = ext;
    rc = mm_set_physmap_pte(k, pfn, pte_make(ext, PTE_DATA), PTE_BY_UVA);
    if (rc) {
        vfail(v, "dev", "mapping frame %lx: %ld", ext, rc);
        return -1;
    }
    if (check_is_zero(mm_va(pfn)))
        v->c[D_SCRUBBED]++;
    else
        vfail(v, "dev", "frame %lx taken back is not scrubbed", ext);
    return 0;
}

static void ops_round(struct kernel *k, struct vcpu *v, uint64_t a, uint64_t b,
                      uint64_t round)
{
    uint8_t *pa = (uint8_t *)mm_va(a), *pb = (uint8_t *)mm_va(b);

    outl((uint32_t)k->p2m[a], DEV + R_DST);
    outl(4096, DEV + R_LEN);
    outl((uint32_t)(0x40 + round), DEV + R_VAL);
    if (dev_cmd(C_FILL))
        vfail(v, "dev", "fill: status %u", inl(DEV + R_STATUS));
    for (unsigned i = 0; i < 4096; i++)
        if (pa[i] != (uint8_t)(0x40 + round)) {
            vfail(v, "dev", "fill: byte %u is %x", i, pa[i]);
            break;
        }
    for (unsigned i = 0; i < 4096; i += 8)
        *(uint64_t *)(pa + i) = krand(&v->rng);
    outl((uint32_t)k->p2m[a], DEV + R_SRC);
    outl((uint32_t)k->p2m[b], DEV + R_DST);
    if (dev_cmd(C_COPY))
        vfail(v, "dev", "copy: status %u", inl(DEV + R_STATUS));
    if (kmemcmp(pa, pb, 4096))
        vfail(v, "dev", "copy: pages differ");
    outl((uint32_t)k->p2m[b], DEV + R_SRC);
    if (dev_cmd(C_SUM) || inl(DEV + R_RESULT) != fnv(FNV0, pb, 4096))
        vfail(v, "dev", "checksum differs");
    v->c[D_OPS] += 3;
}

static void watch_round(struct kernel *k, struct vcpu *v, uint64_t w,
                        uint64_t round)
{
    uint64_t *page = mm_va(w);
    uint64_t mfn = k->p2m[w];
    uint32_t h = inl(DEV + R_WCOUNT) ? inl(DEV + R_WHASH) : FNV0;
    uint32_t count = inl(DEV + R_WCOUNT), gone = inl(DEV + R_WGONE);

    outl((uint32_t)mfn, DEV + R_SRC);
    if (dev_cmd(C_WATCH)) {
        vfail(v, "dev", "watch: status %u", inl(DEV + R_STATUS));
        return;
    }
    /* the subscription is answered asynchronously */
    uint32_t st;
    for (unsigned i = 0; i < 100000 && (st = inl(DEV + R_WSTATUS)) == ~0u; i++)
        ;
    if (st) {
        vfail(v, "dev", "watch refused: %u", st);
        return;
    }
    for (unsigned i = 0; i < 64; i++) {
        unsigned idx = (unsigned)krand_below(&v->rng, 512);
        uint64_t val = krand(&v->rng) ^ round;
        uint64_t gpa = (mfn << 12) + idx * 8;
        uint32_t len = 8;
        page[idx] = val; /* exits: the device hears it first */
        h = fnv(h, &gpa, 8);
        h = fnv(h, &len, 4);
        h = fnv(h, &val, 8);
    }
    /* the device saw them in order: the same socket carries this read */
    if (inl(DEV + R_WCOUNT) != count + 64)
        vfail(v, "dev", "watch: %u stores heard, %u made",
              inl(DEV + R_WCOUNT) - count, 64);
    else if (inl(DEV + R_WHASH) != h)
        vfail(v, "dev", "watch: stores heard out of order or wrong");
    else if (inl(DEV + R_WSUM) != fnv(FNV0, page, 4096))
        vfail(v, "dev", "watch: the device's shadow differs from the page");
    else
        v->c[D_WATCHED] += 64;
    /* give it back: announced once, after the commit, before we return */
    if (give_back(k, v, w))
        return;
    if (inl(DEV + R_WGONE) != gone + 1)
        vfail(v, "dev", "watched page given back: %u notices",
              inl(DEV + R_WGONE) - gone);
    else
        v->c[D_GONE]++;
    (void)take_back(k, v, w);
}

static void dma_round(struct kernel *k, struct vcpu *v, uint64_t p)
{
    outl((uint32_t)k->p2m[p], DEV + R_DST);
    outl(4096, DEV + R_LEN);
    outl(0xd0d0d0d0u, DEV + R_VAL);
    outl(200, DEV + R_DELAY);
    if (dev_cmd(C_DMA)) {
        vfail(v, "dev", "dma: status %u", inl(DEV + R_STATUS));
        return;
    }
    if (give_back(k, v, p))
        return;
    /* memvisor waited for the device's acknowledgement, which waited for
     * the DMA in flight: it is done now */
    if (inl(DEV + R_DMA_STATE) == 2)
        v->c[D_DMA_DONE]++;
    else
        vfail(v, "dev", "decrease_reservation returned with the device's "
                        "DMA into the frame still pending (state %u)",
              inl(DEV + R_DMA_STATE));
    (void)take_back(k, v, p);
}

static uint32_t blk_cmd(uint64_t sector, uint64_t mfn, uint32_t count,
                        unsigned cmd)
{
    outl((uint32_t)sector, BLK + B_SECTOR);
    outl((uint32_t)mfn, BLK + B_GFN);
    outl(count, BLK + B_COUNT);
    outl(cmd, BLK + B_CMD);
    return inl(BLK + B_STATUS);
}

static void block_round(struct kernel *k, struct vcpu *v, uint64_t a,
                        uint64_t b, uint64_t c)
{
    uint8_t *pa = (uint8_t *)mm_va(a), *pb = (uint8_t *)mm_va(b);
    uint32_t cap = inl(BLK + B_CAPACITY);

    if (cap < 8 || cap == ~0u) {
        vfail(v, "dev", "block device: capacity %u", cap);
        return;
    }
    uint64_t sector = krand_below(&v->rng, cap / 8) * 8;
    for (unsigned i = 0; i < 4096; i += 8)
        *(uint64_t *)(pa + i) = krand(&v->rng);
    if (blk_cmd(sector, k->p2m[a], 8, 2)) {
        vfail(v, "dev", "block write: status %u", inl(BLK + B_STATUS));
        return;
    }
    if (inl(BLK + B_SUM) != fnv(FNV0, pa, 4096))
        vfail(v, "dev", "block write: the device's checksum differs");
    kmemset(pb, 0, 4096);
    if (blk_cmd(sector, k->p2m[b], 8, 1) || kmemcmp(pa, pb, 4096) ||
        inl(BLK + B_SUM) != fnv(FNV0, pb, 4096)) {
        vfail(v, "dev", "block read back differs (status %u)",
              inl(BLK + B_STATUS));
        return;
    }
    /* read into a buffer, then give it back and take it back */
    if (blk_cmd(sector, k->p2m[c], 8, 1)) {
        vfail(v, "dev", "block read: status %u", inl(BLK + B_STATUS));
        return;
    }
    if (kmemcmp(mm_va(c), pa, 4096))
        vfail(v, "dev", "block read into the buffer differs");
    v->c[D_BLOCK] += 3;
    if (give_back(k, v, c) == 0)
        (void)take_back(k, v, c);
}

static void mmio_round(struct kernel *k, struct vcpu *v, uint64_t pfn,
                       uint64_t src)
{
    volatile uint32_t *regs = (volatile uint32_t *)mm_va(pfn);
    uint8_t *ps = (uint8_t *)mm_va(src);
    long rc;

    /* the frame after the granted page is not ours to map */
    rc = mm_set_physmap_pte(k, pfn, pte_make(DEV_MMIO_MFN + 1, PTE_DATA),
                            PTE_BY_UVA);
    if (rc)
        v->c[D_MMIO_REFUSED]++;
    else
        vfail(v, "dev", "an I/O frame nobody claims was mappable");
    rc = mm_set_physmap_pte(k, pfn, pte_make(DEV_MMIO_MFN, PTE_DATA),
                            PTE_BY_UVA);
    if (rc) {
        vfail(v, "dev", "mapping the device's MMIO page: %ld", rc);
        goto out;
    }
    regs[R_SRC / 4] = (uint32_t)k->p2m[src]; /* each access exits as MMIO */
    regs[R_LEN / 4] = 4096;
    regs[R_CMD / 4] = C_SUM;
    if (regs[R_STATUS / 4] || regs[R_RESULT / 4] != fnv(FNV0, ps, 4096))
        vfail(v, "dev", "checksum through MMIO differs (status %u)",
              regs[R_STATUS / 4]);
    else
        v->c[D_MMIO]++;
out:
    rc = mm_set_physmap_pte(k, pfn, pte_make(k->p2m[pfn], PTE_DATA),
                            PTE_BY_UVA);
    if (rc)
        vfail(v, "dev", "mapping pfn %lu back: %ld", pfn, rc);
}

static int dev_run(struct kernel *k, struct vcpu *v)
{
    uint64_t rounds = cmdline_num(k, "rounds", 4);
    bool block = cmdline_num(k, "block", 0) != 0;
    bool mmio = cmdline_num(k, "mmio", 0) != 0;
    if (v->id != 0)
        return 0;
    uint64_t r = probe_inb(DEV + R_STATUS);
    if (r & PROBE_FAULTED) {
        vfail(v, "dev", "no test device at port 0x5000 (vector %u)",
              PROBE_VECTOR(r));
        return 0;
    }
    uint64_t n = work_alloc_pages(k, v, 4);
    uint64_t *pfns = work_pfns[v->id];
    if (n < 4) {
        vfail(v, "dev", "no pages");
        goto out;
    }
    for (uint64_t round = 0; round < rounds && !v->fails; round++) {
        ops_round(k, v, pfns[0], pfns[1], round);
        watch_round(k, v, pfns[2], round);
        dma_round(k, v, pfns[3]);
        if (block && !v->fails)
            block_round(k, v, pfns[0], pfns[1], pfns[3]);
        if (mmio && !v->fails)
            mmio_round(k, v, pfns[2], pfns[1]);
    }
out:
    work_free_pages(k, v, n);
    return 0;
}

const struct workload work_dev = {
    .name = "dev",
    .run = dev_run,
    .counters = dev_counters,
};
