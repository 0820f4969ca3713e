/*
 * dev.c - the PVH workload guest's device mode (dev.h): ring 3 drives the
 * test device model (memvisor-dm-test, docs/dm-protocol.md "The test
 * device") by port I/O at DEV_PORT and, with dev_mmio=GPA, by loads and
 * stores to its MMIO page; with dev_block=1 also the block device
 * (memvisor-dm-block) at BLK_PORT.  Each access exits to the hypervisor,
 * which forwards it to the device model claiming it.
 *
 * Pages (identity-mapped: a page's address is its gpa, gfn = address >>
 * 12), in the dev area the caller gives:
 *   SRC   written by the guest, the copy's source and checksum's input
 *   FILL  written only by the device (fill), read by the guest
 *   COPY  written only by the device (copy)
 *   DMA   written only by the device (deferred DMA)
 *   BLKR  written only by the device (block read)
 *   BLKW  written by the guest, the block write's source
 *   WATCH watched: every store to it exits and reaches the device first
 *   HB    written only by the device, once a heartbeat (dev_hb=1)
 * "written only by the device": the guest never stores there, so such a
 * page is in the hypervisor's dirty log only if the device's DMA report
 * put it there (the tests check that, and that a migration carries it).
 * Those pages lie in a 2 MiB page of the guest's identity map of their
 * own, which the guest never writes: under a shadow MMU (KVM-PVM, or KVM
 * without nested paging) KVM maps a page writable on a mere read when the
 * guest's entry for it is already dirty, and logs it dirty then; a clean
 * 2 MiB entry keeps reads out of the log.
 */
#include "dev.h"

#include <stdarg.h>

#include "klib.h"
#include "pvh.h"

#define PAGE 4096ul
#define DEV_PORT 0x5000
#define BLK_PORT 0x5100
#define UNCLAIMED_PORT 0x5040   /* just past the test device's ports */
#define DEV_WITNESS 0x5eed0000u /* SRC's value between heartbeats */

enum {
    R_SRC = 0x00,
    R_DST = 0x04,
    R_LEN = 0x08,
    R_VAL = 0x0c,
    R_CMD = 0x10,
    R_STATUS = 0x14,
    R_RESULT = 0x18,
    R_DELAY = 0x1c,
    R_DMA_STATE = 0x20,
    R_DMA_READ = 0x24,
    R_WCOUNT = 0x28,
    R_WHASH = 0x2c,
    R_WGONE = 0x30,
    R_WSUM = 0x34,
    R_WSTATUS = 0x38,
};
enum {
    C_COPY = 1,
    C_FILL = 2,
    C_SUM = 3,
    C_DMA = 4,
    C_WATCH = 5,
    C_UNWATCH = 6
};
enum {
    B_SECTOR = 0x00,
    B_GFN = 0x04,
    B_COUNT = 0x08,
    B_CMD = 0x0c,
    B_STATUS = 0x10,
    B_CAPACITY = 0x14,
    B_SUM = 0x18
};
enum { P_SRC, P_FILL, P_COPY, P_DMA, P_BLKR, P_BLKW, P_WATCH, P_HB, P_NR };

static struct {
    uint64_t rounds, mmio, block, delay_ms, hb, watch, tsc_khz;
    uint32_t gone_seen; /* W_GONE when last looked at (dev_watch=1) */
    uint8_t *page[P_NR];
    struct krand rng;
    uint64_t failures, checks;
    uint64_t ops, mmio_ops, watched, dma, block_ops, hb_ops;
    bool failed_dev; /* the device stopped answering: stop driving it */
} D;

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

static uint32_t gfn_of(unsigned p)
{
    return (uint32_t)((uint64_t)(uintptr_t)D.page[p] / PAGE);
}

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail(const char *fmt, ...)
{
    char buf[200];
    va_list ap;
    va_start(ap, fmt);
    kvsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    D.failures++;
    say("dev: FAIL %s", buf);
}

/* A check; false (and reported) if cond does not hold. */
#define CHECK(cond, ...)                                                       \
    (D.checks++, (cond) ? true : (fail(__VA_ARGS__), false))

/* A device that answers all ones has been cut off (or was never there):
 * say so once and stop driving it. */
static bool dev_gone(uint32_t status, const char *what)
{
    if (status != ~0u)
        return false;
    fail("%s: the device answers all ones (cut off or absent)", what);
    D.failed_dev = true;
    return true;
}

static uint32_t cmd(unsigned c)
{
    outl(c, DEV_PORT + R_CMD);
    return inl(DEV_PORT + R_STATUS);
}

static bool page_is(const uint8_t *p, uint8_t v)
{
    for (unsigned i = 0; i < PAGE; i++)
        if (p[i] != v)
            return false;
    return true;
}

static bool words_are(const uint8_t *p, uint32_t v)
{
    for (unsigned i = 0; i < PAGE; i += 4)
        if (*(const volatile uint32_t *)(p + i) != v)
            return false;
    return true;
}

/* ---- one round --------------------------------------------------------- */

/* fill, copy, checksum by port I/O */
static void ops_round(uint64_t round)
{
    uint8_t *src = D.page[P_SRC], *fillp = D.page[P_FILL],
            *copyp = D.page[P_COPY];
    uint8_t v = (uint8_t)(0x40 + round);
    uint32_t st;

    outl(gfn_of(P_FILL), DEV_PORT + R_DST);
    outl(PAGE, DEV_PORT + R_LEN);
    outl(v, DEV_PORT + R_VAL);
    st = cmd(C_FILL);
    if (dev_gone(st, "fill"))
        return;
    if (CHECK(st == 0, "fill: status %u", st))
        CHECK(page_is(fillp, v), "fill: page 0x%x is not all 0x%x",
              gfn_of(P_FILL), v);
    for (unsigned i = 0; i < PAGE; i += 8)
        *(uint64_t *)(src + i) = krand(&D.rng);
    outl(gfn_of(P_SRC), DEV_PORT + R_SRC);
    outl(gfn_of(P_COPY), DEV_PORT + R_DST);
    st = cmd(C_COPY);
    if (CHECK(st == 0, "copy: status %u", st))
        CHECK(kmemcmp(src, copyp, PAGE) == 0,
              "copy: page 0x%x differs from 0x%x", gfn_of(P_COPY),
              gfn_of(P_SRC));
    outl(gfn_of(P_COPY), DEV_PORT + R_SRC);
    st = cmd(C_SUM);
    if (CHECK(st == 0, "checksum: status %u", st))
        CHECK(inl(DEV_PORT + R_RESULT) == fnv(FNV0, copyp, PAGE),
              "checksum: the device's %x, the guest's %x",
              inl(DEV_PORT + R_RESULT), fnv(FNV0, copyp, PAGE));
    D.ops += 3;
}

/* The device resolves the page when it takes the command and writes it
 * delay_ms later; the guest waits for it and looks. */
static void dma_round(uint64_t round)
{
    const uint8_t *p = D.page[P_DMA];
    uint32_t old = *(const volatile uint32_t *)p,
             val = 0xd0d00000u | (uint32_t)round;
    uint32_t st, state = 0;

    outl(gfn_of(P_DMA), DEV_PORT + R_DST);
    outl(PAGE, DEV_PORT + R_LEN);
    outl(val, DEV_PORT + R_VAL);
    outl((uint32_t)D.delay_ms, DEV_PORT + R_DELAY);
    st = cmd(C_DMA);
    if (!CHECK(st == 0, "deferred DMA: status %u", st))
        return;
    say("dev: dma pending gfn 0x%x delay %lu ms", gfn_of(P_DMA),
        (unsigned long)D.delay_ms);
    uint64_t t0 = rdtsc(), limit = (2 * D.delay_ms + 2000) * D.tsc_khz;
    while (rdtsc() - t0 < limit && (state = inl(DEV_PORT + R_DMA_STATE)) == 1)
        cpu_relax();
    if (!CHECK(state == 2, "deferred DMA: state %u after %lu ms", state,
               (unsigned long)((rdtsc() - t0) / D.tsc_khz)))
        return;
    CHECK(inl(DEV_PORT + R_DMA_READ) == old,
          "deferred DMA read %x before writing, the page held %x",
          inl(DEV_PORT + R_DMA_READ), old);
    if (CHECK(words_are(p, val), "deferred DMA: page 0x%x is not all %x",
              gfn_of(P_DMA), val))
        D.dma++;
}

/* Page tracking: every store to the watched page exits and reaches the
 * device before it lands, in order; its hash of (gpa, len, bytes) and its
 * shadow of the page must equal the guest's. */
static void watch_round(uint64_t round)
{
    volatile uint64_t *page = (volatile uint64_t *)D.page[P_WATCH];
    uint64_t base = (uint64_t)(uintptr_t)D.page[P_WATCH];
    uint32_t count = inl(DEV_PORT + R_WCOUNT);
    uint32_t h = count ? inl(DEV_PORT + R_WHASH) : FNV0;
    uint32_t st = ~0u;

    outl(gfn_of(P_WATCH), DEV_PORT + R_SRC);
    if (!CHECK((st = cmd(C_WATCH)) == 0, "watch: status %u", st))
        return;
    /* the subscription is answered on its own (TRACK_REPLY) */
    uint64_t t0 = rdtsc(), limit = 5000 * D.tsc_khz;
    while (rdtsc() - t0 < limit && (st = inl(DEV_PORT + R_WSTATUS)) == ~0u)
        cpu_relax();
    if (!CHECK(st == 0, "watch refused: errno %u", st))
        return;
    for (unsigned i = 0; i < 64; i++) {
        unsigned idx = (unsigned)krand_below(&D.rng, PAGE / 8);
        uint64_t val = krand(&D.rng) ^ round, gpa = base + idx * 8;
        uint32_t len = 8;
        page[idx] = val; /* exits: the device hears it first */
        h = fnv(h, &gpa, 8);
        h = fnv(h, &len, 4);
        h = fnv(h, &val, 8);
    }
    /* the same socket carries these reads after the stores */
    uint32_t heard = inl(DEV_PORT + R_WCOUNT) - count;
    if (CHECK(heard == 64, "watch: %u stores heard, 64 made", heard) &&
        CHECK(inl(DEV_PORT + R_WHASH) == h,
              "watch: stores heard out of order or wrong") &&
        CHECK(inl(DEV_PORT + R_WSUM) ==
                  fnv(FNV0, (const void *)(uintptr_t)base, PAGE),
              "watch: the device's shadow differs from the page"))
        D.watched += 64;
    outl(gfn_of(P_WATCH), DEV_PORT + R_SRC);
    st = cmd(C_UNWATCH);
    CHECK(st == 0, "unwatch: status %u", st);
}

/* The same registers by loads and stores to the MMIO page. */
static void mmio_round(uint64_t round)
{
    volatile uint32_t *r = (volatile uint32_t *)(uintptr_t)D.mmio;
    const uint8_t *fillp = D.page[P_FILL];
    uint8_t v = (uint8_t)(0x80 + round);
    uint32_t st;

    r[R_DST / 4] = gfn_of(P_FILL);
    r[R_LEN / 4] = PAGE;
    r[R_VAL / 4] = v;
    r[R_CMD / 4] = C_FILL;
    st = r[R_STATUS / 4];
    if (dev_gone(st, "MMIO fill"))
        return;
    if (CHECK(st == 0, "MMIO fill: status %u", st))
        CHECK(page_is(fillp, v), "MMIO fill: page 0x%x is not all 0x%x",
              gfn_of(P_FILL), v);
    r[R_SRC / 4] = gfn_of(P_FILL);
    r[R_CMD / 4] = C_SUM;
    st = r[R_STATUS / 4];
    if (CHECK(st == 0, "MMIO checksum: status %u", st) &&
        CHECK(r[R_RESULT / 4] == fnv(FNV0, fillp, PAGE),
              "MMIO checksum differs"))
        D.mmio_ops += 2;
}

static uint32_t blk_cmd(uint32_t sector, uint32_t gfn, unsigned c)
{
    outl(sector, BLK_PORT + B_SECTOR);
    outl(gfn, BLK_PORT + B_GFN);
    outl(8, BLK_PORT + B_COUNT); /* 8 sectors: one page */
    outl(c, BLK_PORT + B_CMD);
    return inl(BLK_PORT + B_STATUS);
}

/* A page to the disk and back into another page. */
static void block_round(void)
{
    uint8_t *w = D.page[P_BLKW], *rd = D.page[P_BLKR];
    uint32_t cap = inl(BLK_PORT + B_CAPACITY), st;

    if (dev_gone(cap, "block capacity") ||
        !CHECK(cap >= 8, "block device: capacity %u", cap))
        return;
    uint32_t sector = (uint32_t)krand_below(&D.rng, cap / 8) * 8;
    for (unsigned i = 0; i < PAGE; i += 8)
        *(uint64_t *)(w + i) = krand(&D.rng);
    if (!CHECK((st = blk_cmd(sector, gfn_of(P_BLKW), 2)) == 0,
               "block write: status %u", st) ||
        !CHECK(inl(BLK_PORT + B_SUM) == fnv(FNV0, w, PAGE),
               "block write: the device's checksum differs"))
        return;
    if (CHECK((st = blk_cmd(sector, gfn_of(P_BLKR), 1)) == 0,
              "block read: status %u", st) &&
        CHECK(kmemcmp(w, rd, PAGE) == 0, "block read back differs") &&
        CHECK(inl(BLK_PORT + B_SUM) == fnv(FNV0, rd, PAGE),
              "block read: the device's checksum differs"))
        D.block_ops += 2;
}

/* dev_watch=1: the watched page stays watched after the rounds; each
 * heartbeat reports a change of the device's count of removal notices
 * (TRACK_GONE), so a test can take the page, or a neighbour, out of the
 * guest's memory and see what the device was told. */
static void watch_keep(void)
{
    uint32_t st = ~0u;

    outl(gfn_of(P_WATCH), DEV_PORT + R_SRC);
    if (!CHECK((st = cmd(C_WATCH)) == 0, "watch: status %u", st))
        return;
    uint64_t t0 = rdtsc(), limit = 5000 * D.tsc_khz;
    while (rdtsc() - t0 < limit && (st = inl(DEV_PORT + R_WSTATUS)) == ~0u)
        cpu_relax();
    if (!CHECK(st == 0, "watch refused: errno %u", st))
        return;
    D.gone_seen = inl(DEV_PORT + R_WGONE);
    say("dev: watching gfn 0x%x (removal notices so far %u)", gfn_of(P_WATCH),
        D.gone_seen);
}

static void watch_heartbeat(unsigned long n)
{
    uint32_t gone = inl(DEV_PORT + R_WGONE);

    if (gone != D.gone_seen && !dev_gone(gone, "watch"))
        say("dev: watched page: %u removal notices at heartbeat %lu",
            gone - D.gone_seen, n);
    D.gone_seen = gone;
}

/* The round trip as the guest sees it (its exit, memvisor, the device
 * model's answer, the entry back): the median of 15 batches of 64 reads of
 * a register, by port I/O and (dev_mmio) by MMIO, in ns; and the same for
 * a port nobody claims (the exit alone: memvisor answers all ones), the
 * baseline measured in the same run. */
static uint64_t median_ns(uint64_t *v, unsigned n)
{
    for (unsigned i = 1; i < n; i++)
        for (unsigned k = i; k > 0 && v[k - 1] > v[k]; k--) {
            uint64_t t = v[k];
            v[k] = v[k - 1];
            v[k - 1] = t;
        }
    return v[n / 2];
}

static void round_trips(void)
{
    volatile uint32_t *r = (volatile uint32_t *)(uintptr_t)D.mmio;
    uint64_t port[15], mmio[15], none[15];

    for (unsigned b = 0; b < 15; b++) {
        uint64_t tn = rdtsc();
        for (unsigned i = 0; i < 64; i++)
            (void)inl(UNCLAIMED_PORT);
        uint64_t t0 = rdtsc();
        for (unsigned i = 0; i < 64; i++)
            (void)inl(DEV_PORT + R_STATUS);
        uint64_t t1 = rdtsc();
        for (unsigned i = 0; D.mmio && i < 64; i++)
            (void)r[R_STATUS / 4];
        uint64_t t2 = rdtsc();
        none[b] = (t0 - tn) * 1000000 / D.tsc_khz / 64;
        port[b] = (t1 - t0) * 1000000 / D.tsc_khz / 64;
        mmio[b] = (t2 - t1) * 1000000 / D.tsc_khz / 64;
    }
    say("dev: round trip of a register read: port %lu ns, MMIO %lu ns; an "
        "unclaimed port %lu ns (median of 15 x 64)",
        (unsigned long)median_ns(port, 15),
        (unsigned long)(D.mmio ? median_ns(mmio, 15) : 0),
        (unsigned long)median_ns(none, 15));
}

/* ---- the mode ------------------------------------------------------------ */

bool dev_setup(const char *cmdline, size_t max, uint8_t *area, uint64_t tsc_khz)
{
    D.rounds = cmdline_get(cmdline, max, "dev", 0);
    if (!D.rounds)
        return false;
    D.mmio = cmdline_get(cmdline, max, "dev_mmio", 0);
    D.block = cmdline_get(cmdline, max, "dev_block", 0);
    D.delay_ms = cmdline_get(cmdline, max, "dev_delay", 50);
    D.hb = cmdline_get(cmdline, max, "dev_hb", 0);
    D.watch = cmdline_get(cmdline, max, "dev_watch", 0);
    D.tsc_khz = tsc_khz;
    krand_seed(&D.rng, cmdline_get(cmdline, max, "seed", 1));
    /* the guest's pages in the first 2 MiB, the device's in the second */
    for (unsigned i = 0; i < P_NR; i++)
        D.page[i] = area + (i == P_SRC || i == P_BLKW || i == P_WATCH
                                ? i * PAGE
                                : DEV_AREA_BYTES / 2 + i * PAGE);
    /* the pages the guest writes itself start with known contents */
    kmemset(D.page[P_SRC], 0, PAGE);
    kmemset(D.page[P_BLKW], 0, PAGE);
    for (unsigned i = 0; i < PAGE; i += 8)
        *(uint64_t *)(D.page[P_WATCH] + i) = krand(&D.rng);
    say("dev: start rounds=%lu mmio=0x%lx block=%lu delay=%lu hb=%lu "
        "watch=%lu",
        (unsigned long)D.rounds, (unsigned long)D.mmio, (unsigned long)D.block,
        (unsigned long)D.delay_ms, (unsigned long)D.hb, (unsigned long)D.watch);
    say("dev: device-written gfns 0x%x 0x%x 0x%x 0x%x 0x%x", gfn_of(P_FILL),
        gfn_of(P_COPY), gfn_of(P_DMA), gfn_of(P_BLKR), gfn_of(P_HB));
    return true;
}

bool dev_run(void)
{
    for (uint64_t r = 0; r < D.rounds && !D.failed_dev; r++) {
        ops_round(r);
        if (D.failed_dev)
            break;
        dma_round(r);
        watch_round(r);
        if (D.mmio && !D.failed_dev)
            mmio_round(r);
        if (D.block && !D.failed_dev)
            block_round();
    }
    if (!D.failed_dev)
        round_trips();
    if (D.watch && !D.failed_dev)
        watch_keep();
    /* SRC holds the witness between heartbeats: the device's state */
    if (!D.failed_dev)
        outl(DEV_WITNESS, DEV_PORT + R_SRC);
    say("dev: rounds=%lu ops=%lu dma=%lu watched=%lu mmio-ops=%lu "
        "block-ops=%lu checks=%lu failures=%lu",
        (unsigned long)D.rounds, (unsigned long)D.ops, (unsigned long)D.dma,
        (unsigned long)D.watched, (unsigned long)D.mmio_ops,
        (unsigned long)D.block_ops, (unsigned long)D.checks,
        (unsigned long)D.failures);
    say(D.failures ? "dev: FAIL (%lu failures)" : "dev: pass (%lu failures)",
        (unsigned long)D.failures);
    return D.failures == 0;
}

void dev_heartbeat(unsigned long n)
{
    const uint8_t *p = D.page[P_HB];
    uint8_t v = (uint8_t)(0x80 + n % 64);
    uint32_t st;

    if (D.rounds && D.watch && !D.failed_dev)
        watch_heartbeat(n);
    if (!D.rounds || !D.hb || D.failed_dev)
        return;
    /* what the device wrote at the last heartbeat is still there (a
     * migration since carried the page: its DMA was in the dirty log) */
    if (n > 1)
        CHECK(page_is(p, (uint8_t)(0x80 + (n - 1) % 64)),
              "heartbeat %lu: the device's fill of heartbeat %lu is gone "
              "(page 0x%x holds 0x%x)",
              n, n - 1, gfn_of(P_HB), p[0]);
    /* the device's registers survived (a migration restored its state) */
    st = inl(DEV_PORT + R_SRC);
    if (dev_gone(st, "heartbeat") ||
        !CHECK(st == DEV_WITNESS,
               "heartbeat %lu: the device's SRC is %x, "
               "not %x (its state was lost)",
               n, st, DEV_WITNESS))
        return;
    outl(gfn_of(P_HB), DEV_PORT + R_DST);
    outl(PAGE, DEV_PORT + R_LEN);
    outl(v, DEV_PORT + R_VAL);
    st = cmd(C_FILL);
    if (CHECK(st == 0, "heartbeat %lu: fill status %u", n, st) &&
        CHECK(page_is(p, v), "heartbeat %lu: page 0x%x is not all 0x%x", n,
              gfn_of(P_HB), v))
        D.hb_ops++;
}

bool dev_done(void)
{
    if (!D.rounds)
        return true;
    say("dev: done heartbeat-ops=%lu checks=%lu failures=%lu",
        (unsigned long)D.hb_ops, (unsigned long)D.checks,
        (unsigned long)D.failures);
    return D.failures == 0;
}
