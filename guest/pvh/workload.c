/*
 * workload.c - the PVH workload guest's ring 3: reads its command line from
 * hvm_start_info, calibrates the TSC against the PIT, fills memory with
 * self-checking pages and dirties them at a given rate while verifying
 * them, and reports a heartbeat on COM1.  guest/README.md ("The PVH workload
 * guest") describes the command line and every line it prints.
 *
 * Every page of the work area is a checked page (../check.h) of its index
 * and its counter; the counters live in an array of the work area's first
 * pages.  The dirtier verifies a page fully before it rewrites it with the
 * next counter, and a verifier sweeps every page in turn at its own rate,
 * so a lost, torn or misplaced page is found within one sweep (or when the
 * dirtier comes by), counted in errors= and repaired, so that it is counted
 * once.
 */
#include <stdarg.h>

#include "check.h"
#include "dev.h"
#include "klib.h"
#include "pvh.h"

#define PAGE 4096ul
#define MIB (1024ul * 1024)
#define TWO_MIB (2 * MIB)
#define FOUR_GIB (4096ul * MIB)
#define PAGE_TAG 0x5057 /* "WP": the workload's pages */
#define MAX_CMDLINE 1024
#define MAX_ERROR_LINES 16
#define CHUNK 16 /* pages written or verified between two TSC reads */
#define PIT_HZ 1193182ul

volatile bool workload_finished;

extern char __image_end[], __bss_start[], __bss_end[];

struct work {
    char cmdline[MAX_CMDLINE];
    uint64_t tsc_khz;
    uint64_t ram_bytes; /* all RAM the memory map gives */
    uint32_t *counter;  /* per page: its current counter */
    uint8_t *pages;     /* the work area */
    uint64_t npages;
    uint64_t dirty_cursor, verify_cursor;
    uint64_t dirtied, verified, errors;
    unsigned error_lines;
};

static struct work W;

static uint64_t tsc_to_us(uint64_t cycles)
{
    return cycles * 1000 / W.tsc_khz;
}

static uint64_t us_to_tsc(uint64_t us)
{
    return us * W.tsc_khz / 1000;
}

static uint64_t *page_at(uint64_t i)
{
    return (uint64_t *)(W.pages + i * PAGE);
}

/* ---- start of day ---------------------------------------------------- */

static bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
    return a < b + blen && b < a + alen;
}

/* The work area: the largest RAM range below 4 GiB (the identity map's
 * reach) above the image, the start-of-day data and the first MiB. */
static bool find_memory(const struct hvm_start_info *si, uint64_t *start,
                        uint64_t *end)
{
    const struct hvm_memmap_table_entry *map = NULL;
    uint32_t n = 0;
    if (si->version >= 1 && si->memmap_paddr && si->memmap_entries) {
        map =
            (const struct hvm_memmap_table_entry *)(uintptr_t)si->memmap_paddr;
        n = si->memmap_entries;
    }
    uint64_t avoid_hi = (uint64_t)(uintptr_t)__image_end;
    uint64_t infos[3][2] = {
        {(uint64_t)(uintptr_t)si, sizeof(*si)},
        {si->cmdline_paddr, MAX_CMDLINE},
        {si->memmap_paddr, (uint64_t)n * sizeof(*map)},
    };
    *start = *end = 0;
    W.ram_bytes = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (map[i].type != XEN_HVM_MEMMAP_TYPE_RAM)
            continue;
        W.ram_bytes += map[i].size;
        uint64_t lo = map[i].addr, hi = map[i].addr + map[i].size;
        if (hi > FOUR_GIB)
            hi = FOUR_GIB;
        if (lo < avoid_hi)
            lo = avoid_hi;
        for (unsigned k = 0; k < 3; k++)
            if (infos[k][0] && hi > lo &&
                overlaps(lo, hi - lo, infos[k][0], infos[k][1]))
                lo = infos[k][0] + infos[k][1];
        lo = (lo + TWO_MIB - 1) & ~(TWO_MIB - 1);
        if (hi > lo && hi - lo > *end - *start) {
            *start = lo;
            *end = hi;
        }
    }
    return *end > *start;
}

/* One reading of PIT channel 2's counter (latched), with the TSC just
 * before and after it: the reading happened somewhere in [*t0, *t1]. */
static uint16_t pit_read(uint64_t *t0, uint64_t *t1)
{
    *t0 = rdtsc();
    outb(0x43, 0x80); /* latch channel 2 */
    uint8_t lo = inb(0x42);
    uint8_t hi = inb(0x42);
    *t1 = rdtsc();
    return (uint16_t)(lo | hi << 8);
}

/* Of a few readings, the one bracketed most tightly by the TSC (on a busy
 * host a vCPU can be descheduled in the middle of a port access);
 * *mid gets the middle of its bracket. */
static uint16_t pit_sample(uint64_t *mid, uint64_t *width)
{
    uint16_t best = 0;
    *width = ~0ull;
    *mid = 0;
    for (unsigned i = 0; i < 8; i++) {
        uint64_t t0, t1;
        uint16_t c = pit_read(&t0, &t1);
        if (t1 - t0 < *width) {
            *width = t1 - t0;
            *mid = t0 + (t1 - t0) / 2;
            best = c;
        }
    }
    return best;
}

/* The TSC against PIT channel 2 counting down from 0xffff (mode 0, gate
 * on, speaker off): the counter read at the start and again ~45 ms later,
 * each reading bracketed by the TSC.  0 if the PIT does not count. */
static uint64_t calibrate_once(void)
{
    outb(0x61, (uint8_t)((inb(0x61) & ~0x02) | 0x01));
    outb(0x43, 0xb0); /* channel 2, lobyte/hibyte, mode 0, binary */
    outb(0x42, 0xff);
    outb(0x42, 0xff);
    uint64_t mid0, w0, mid1, w1, t0, t1;
    uint64_t limit = rdtsc() + 20ull * 1000 * 1000 * 1000; /* ~5 s at 4 GHz */
    while (pit_read(&t0, &t1) > 0xff00) /* until it surely counts */
        if (t1 > limit)
            return 0;
    uint16_t c0 = pit_sample(&mid0, &w0);
    const uint16_t ticks = (uint16_t)(PIT_HZ * 40 / 1000);
    while ((uint16_t)(c0 - pit_read(&t0, &t1)) < ticks)
        if (t1 > limit)
            return 0;
    uint16_t c1 = pit_sample(&mid1, &w1);
    uint16_t elapsed = (uint16_t)(c0 - c1);
    if (elapsed < ticks || elapsed > 0xf000 || c1 > c0)
        return 0;
    return (mid1 - mid0) * PIT_HZ / elapsed / 1000;
}

/* A busy host can deschedule the vCPU long enough to spoil one
 * measurement: measure until two in a row agree within 0.1 % (at most 30
 * tries, ~1.5 s). */
static uint64_t calibrate_tsc_khz(void)
{
    uint64_t prev = 0;
    for (unsigned i = 0; i < 30; i++) {
        uint64_t k = calibrate_once();
        if (k && prev) {
            uint64_t d = k > prev ? k - prev : prev - k;
            if (d * 1000 <= prev)
                return (k + prev) / 2;
        }
        prev = k;
    }
    return 0;
}

/* ---- the pages -------------------------------------------------------- */

static void report(uint64_t i, enum check_result r, unsigned word,
                   const char *who)
{
    W.errors++;
    if (W.error_lines++ < MAX_ERROR_LINES)
        say("error: %s: page %lu (gpa 0x%lx) %s at word %u: counter want %u "
            "have %lu",
            who, (unsigned long)i, (unsigned long)(uintptr_t)page_at(i),
            check_result_name(r), word, W.counter[i],
            (unsigned long)page_at(i)[2]);
}

/* Verifies page i against its counter; reports and repairs a bad one. */
static void verify_page(uint64_t i, const char *who)
{
    unsigned word;
    enum check_result r =
        check_verify(page_at(i), i, W.counter[i], PAGE_TAG, &word);
    if (r != CHECK_OK) {
        report(i, r, word, who);
        check_fill(page_at(i), i, W.counter[i], PAGE_TAG);
    }
}

static void dirty_page(uint64_t i)
{
    verify_page(i, "dirtier");
    uint32_t c = W.counter[i] + 1;
    check_fill(page_at(i), i, c, PAGE_TAG);
    W.counter[i] = c;
    W.dirtied++;
}

/* ---- the loop --------------------------------------------------------- */

struct params {
    uint64_t mem_mib, rate_mib, hb_ms, secs, corrupt_ms, verify_mib;
};

static void heartbeat(unsigned long n, uint64_t now, uint64_t t0,
                      uint64_t dirtied_then, uint64_t since, uint64_t gap)
{
    uint64_t us = tsc_to_us(now - since);
    /* MiB/s in tenths */
    uint64_t rate =
        us ? (W.dirtied - dirtied_then) * PAGE * 10000000 / us / MIB : 0;
    say("hb %lu t=%lu pages=%lu dirtied=%lu rate=%lu.%lu verified=%lu gap=%lu "
        "errors=%lu",
        n, (unsigned long)tsc_to_us(now - t0), (unsigned long)W.npages,
        (unsigned long)W.dirtied, (unsigned long)(rate / 10),
        (unsigned long)(rate % 10), (unsigned long)W.verified,
        (unsigned long)tsc_to_us(gap), (unsigned long)W.errors);
}

static void run(const struct params *p)
{
    const uint64_t hb_tsc = us_to_tsc(p->hb_ms * 1000);
    /* pages per TSC tick, as a fraction over tsc_khz * 1000 */
    const uint64_t dirty_pps = p->rate_mib * MIB / PAGE;
    const uint64_t verify_pps = p->verify_mib * MIB / PAGE;
    const uint64_t hz = W.tsc_khz * 1000;
    const uint64_t backlog = dirty_pps / 100 + CHUNK; /* 10 ms at most */
    const uint64_t t0 = rdtsc();
    const uint64_t end = p->secs ? t0 + us_to_tsc(p->secs * 1000000) : 0;
    uint64_t corrupt_at =
        p->corrupt_ms ? t0 + us_to_tsc(p->corrupt_ms * 1000) : 0;
    uint64_t last = t0, gap = 0, next_hb = t0 + hb_tsc, hb_since = t0;
    uint64_t dirty_due = 0, verify_due = 0, dirtied_then = 0;
    uint64_t dirty_base = t0, verify_base = t0;
    unsigned long hb = 0;

    for (;;) {
        uint64_t now = rdtsc();
        if (now - last > gap)
            gap = now - last;
        last = now;
        if (now >= next_hb) {
            heartbeat(++hb, now, t0, dirtied_then, hb_since, gap);
            dev_heartbeat(hb);
            dirtied_then = W.dirtied;
            gap = 0;
            hb_since = now;
            next_hb += hb_tsc;
            if (next_hb <= now)
                next_hb = now + hb_tsc;
            last = rdtsc(); /* the line's own time is no gap */
            continue;
        }
        if (end && now >= end)
            break;
        if (corrupt_at && now >= corrupt_at) {
            uint64_t i = W.npages / 2;
            ((volatile uint8_t *)page_at(i))[8 * 100 + 3] ^= 0x5a;
            say("corrupt: flipped a byte of page %lu behind its counter",
                (unsigned long)i);
            corrupt_at = 0;
            last = rdtsc();
            continue;
        }
        /* How many pages are due by now, each rate on its own clock; a
         * backlog (after a pause) is capped rather than caught up in a
         * burst. */
        uint64_t want = (now - dirty_base) * dirty_pps / hz;
        if (want > dirty_due + backlog) {
            dirty_due = want - backlog;
        }
        uint64_t vwant = (now - verify_base) * verify_pps / hz;
        if (vwant > verify_due + CHUNK * 4)
            verify_due = vwant - CHUNK * 4;
        if (want > dirty_due) {
            uint64_t n = want - dirty_due;
            if (n > CHUNK)
                n = CHUNK;
            for (uint64_t k = 0; k < n; k++) {
                dirty_page(W.dirty_cursor);
                if (++W.dirty_cursor == W.npages)
                    W.dirty_cursor = 0;
            }
            dirty_due += n;
        } else if (vwant > verify_due) {
            uint64_t n = vwant - verify_due;
            if (n > CHUNK)
                n = CHUNK;
            for (uint64_t k = 0; k < n; k++) {
                verify_page(W.verify_cursor, "verifier");
                W.verified++;
                if (++W.verify_cursor == W.npages)
                    W.verify_cursor = 0;
            }
            verify_due += n;
        } else {
            cpu_relax();
        }
        /* keep the products above far from overflow (up to 64 GiB/s of
         * pages at 4 GHz): start both clocks again every 10 s */
        if (now - dirty_base > 10 * hz) {
            dirty_base = now;
            dirty_due = 0;
            verify_base = now;
            verify_due = 0;
        }
    }
    for (uint64_t i = 0; i < W.npages; i++) {
        verify_page(i, "final");
        W.verified++;
    }
    heartbeat(++hb, rdtsc(), t0, dirtied_then, hb_since, gap);
    say("pvh-workload: done secs=%lu dirtied=%lu verified=%lu errors=%lu",
        (unsigned long)p->secs, (unsigned long)W.dirtied,
        (unsigned long)W.verified, (unsigned long)W.errors);
}

/* ---- entry from head.S ------------------------------------------------ */

void workload_main(const struct hvm_start_info *si)
{
    bool ok = false;
    for (char *b = __bss_start; b < __bss_end; b++)
        *b = 0;
    serial_init();
    if (si->magic != XEN_HVM_START_MAGIC_VALUE) {
        say("pvh-workload: FAIL: hvm_start_info magic 0x%x at 0x%lx", si->magic,
            (unsigned long)(uintptr_t)si);
        goto out;
    }
    if (si->cmdline_paddr) {
        const char *c = (const char *)(uintptr_t)si->cmdline_paddr;
        size_t n = kstrnlen(c, MAX_CMDLINE - 1);
        kmemcpy(W.cmdline, c, n);
        W.cmdline[n] = 0;
    }
    say("pvh-workload: start_info v%u at 0x%lx, cmdline \"%s\"", si->version,
        (unsigned long)(uintptr_t)si, W.cmdline);

    struct params p = {
        .mem_mib = cmdline_get(W.cmdline, MAX_CMDLINE, "mem", 0),
        .rate_mib = cmdline_get(W.cmdline, MAX_CMDLINE, "rate", 0),
        .hb_ms = cmdline_get(W.cmdline, MAX_CMDLINE, "hb", 100),
        .secs = cmdline_get(W.cmdline, MAX_CMDLINE, "secs", 0),
        .corrupt_ms = cmdline_get(W.cmdline, MAX_CMDLINE, "corrupt", 0),
        .verify_mib = cmdline_get(W.cmdline, MAX_CMDLINE, "verify", 128),
    };
    if (p.hb_ms == 0)
        p.hb_ms = 100;

    W.tsc_khz = cmdline_get(W.cmdline, MAX_CMDLINE, "tsc_khz", 0);
    const char *how = "command line";
    if (!W.tsc_khz) {
        W.tsc_khz = calibrate_tsc_khz();
        how = "PIT";
    }
    if (W.tsc_khz < 100000 || W.tsc_khz > 10000000) {
        say("pvh-workload: FAIL: TSC calibration gave %lu kHz (give "
            "tsc_khz=)",
            (unsigned long)W.tsc_khz);
        goto out;
    }
    say("pvh-workload: tsc %lu kHz (%s)", (unsigned long)W.tsc_khz, how);

    uint64_t lo, hi;
    if (!find_memory(si, &lo, &hi)) {
        say("pvh-workload: FAIL: no memory map, or no RAM above the image");
        goto out;
    }
    /* device mode (dev.h): its pages first, in 2 MiB pages of their own */
    uint8_t *dev_area = NULL;
    if (cmdline_get(W.cmdline, MAX_CMDLINE, "dev", 0)) {
        if (hi - lo < DEV_AREA_BYTES + TWO_MIB) {
            say("pvh-workload: FAIL: no room for the device mode's pages");
            goto out;
        }
        dev_area = (uint8_t *)(uintptr_t)lo;
        lo += DEV_AREA_BYTES;
    }
    uint64_t want = p.mem_mib ? p.mem_mib * MIB : W.ram_bytes / 4 * 3;
    uint64_t npages = want / PAGE;
    /* counters first (4 bytes a page, in whole pages), then the pages */
    uint64_t avail = hi - lo;
    uint64_t most = avail / (PAGE + 4) - 1;
    if (npages > most) {
        say("pvh-workload: mem=%lu MiB does not fit: %lu MiB used",
            (unsigned long)(want / MIB), (unsigned long)(most * PAGE / MIB));
        npages = most;
    }
    if (npages < 2) {
        say("pvh-workload: FAIL: no room for the work area");
        goto out;
    }
    W.npages = npages;
    W.counter = (uint32_t *)(uintptr_t)lo;
    W.pages =
        (uint8_t *)(uintptr_t)((lo + npages * 4 + PAGE - 1) & ~(PAGE - 1));

    uint64_t t = rdtsc();
    for (uint64_t i = 0; i < npages; i++) {
        W.counter[i] = 1;
        check_fill(page_at(i), i, 1, PAGE_TAG);
    }
    say("pvh-workload: ram %lu MiB, filled %lu MiB (%lu pages at 0x%lx) in "
        "%lu ms; rate %lu MiB/s, verify %lu MiB/s, heartbeat %lu ms",
        (unsigned long)(W.ram_bytes / MIB),
        (unsigned long)(npages * PAGE / MIB), (unsigned long)npages,
        (unsigned long)(uintptr_t)W.pages,
        (unsigned long)(tsc_to_us(rdtsc() - t) / 1000),
        (unsigned long)p.rate_mib, (unsigned long)p.verify_mib,
        (unsigned long)p.hb_ms);
    bool dev_ok = true;
    if (dev_area && dev_setup(W.cmdline, MAX_CMDLINE, dev_area, W.tsc_khz))
        dev_ok = dev_run();
    run(&p);
    dev_ok = dev_done() && dev_ok;

    ok = dev_ok;
out:
    workload_finished = true;
    outw(0x604, 0x2000); /* ACPI S5 on QEMU's pc machine (PIIX4 PM) */
    /* memvisor's exit port: the status (nothing there on QEMU's pc) */
    outb(0xf4, (uint8_t)(ok && W.errors == 0 ? 0 : 1));
    __asm__ volatile("ud2"); /* elsewhere: trap.c halts */
    for (;;)
        cpu_relax();
}
