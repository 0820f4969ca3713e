/*
 * bench-pv: validation throughput of PV page tables.
 *
 * A domain owns 1 GiB of data frames (262144 x 4 KiB) mapped read-write by
 * 512 L1 tables under one L2, one L3 and one L4.  Each round pins the L4
 * (validating all 262658 present entries: every L1 entry takes a general
 * and a writable type reference on its data frame, every upper entry a
 * general and a page-table type reference on its child) and unpins it
 * (devalidating the same entries).  Baseline measured in the same run: a
 * plain sequential read of the same page-table memory (515 frames).
 * Prints entries per second (median and best round), the ratios,
 * sizeof(struct frame) and the frame table's overhead relative to the
 * memory it describes.
 *
 * Run: `make bench` (release build, no sanitizers), or
 *      build-bench/bench/pv/bench-pv [rounds]
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "frame/frame.h"
#include "pv/pv.h"

#define NR_L1 512
#define NR_DATA (NR_L1 * PT_ENTRIES) /* 1 GiB */
#define NR_TABLES (NR_L1 + 3)
#define POOL (NR_DATA + NR_TABLES + 64)

static double now(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void die(const char *what, long rc)
{
    fprintf(stderr, "bench-pv: %s: %ld\n", what, rc);
    exit(1);
}

static void populate(struct pv_vcpu *v, uint64_t *out, uint64_t n,
                     unsigned order)
{
    struct pv_reservation r = {.extent_start = out,
                               .nr_extents = n,
                               .extent_order = order,
                               .domid = DOMID_SELF};
    unsigned long cmd = XENMEM_populate_physmap;
    long done;

    for (uint64_t i = 0; i < n; i++)
        out[i] = i << order;
    do {
        done = pv_memory_op(v, &cmd, &r);
    } while (done == -ERESTART);
    if (done != (long)n)
        die("populate_physmap", done);
}

/*
 * One mmuext op, in one call: the preemption hook is disarmed, so the
 * whole (de)validation runs inside the timed call.
 */
static int ext(struct pv_vcpu *v, unsigned cmd, mfn_t m)
{
    struct mmuext_op op = {.cmd = cmd, .arg1.mfn = mfn_x(m)};
    uint32_t done = 0;

    return pv_mmuext_op(v, &op, 1, &done, DOMID_SELF);
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    static struct frames f;
    static struct pv_domain d;
    static struct pv_vcpu v;
    unsigned rounds = argc > 1 ? (unsigned)atoi(argv[1]) : 7, r, i, j;
    uint64_t *data = malloc(NR_DATA / PT_ENTRIES * sizeof(uint64_t));
    uint64_t tables[NR_TABLES];
    double *tpin = calloc(rounds, sizeof(double));
    double *tunpin = calloc(rounds, sizeof(double));
    double *tread = calloc(rounds, sizeof(double));
    uint64_t entries = NR_DATA + NR_L1 + 2, sink = 0;
    mfn_t l4, l3, l2;
    int rc;

    if (!rounds || !data || !tpin || !tunpin || !tread)
        die("arguments or memory", 0);
    if ((rc = frames_init(&f, POOL)) || (rc = frames_domain_add(&f, 1, POOL)) ||
        (rc = pv_domain_init(&d, &f, 1)) || (rc = pv_vcpu_init(&v, &d)))
        die("set-up", rc);
    /* 512 extents of 512 frames: the 1 GiB of data; then the tables. */
    populate(&v, data, NR_DATA / PT_ENTRIES, 9);
    populate(&v, tables, NR_TABLES, 0);
    l4 = _mfn(tables[NR_L1]);
    l3 = _mfn(tables[NR_L1 + 1]);
    l2 = _mfn(tables[NR_L1 + 2]);
    for (i = 0; i < NR_L1; i++) {
        uint64_t *pt = frames_ptr(&f, _mfn(tables[i]));

        for (j = 0; j < PT_ENTRIES; j++)
            pt[j] = ((data[i] + j) << PAGE_SHIFT) | PTE_P | PTE_RW | PTE_US;
        ((uint64_t *)frames_ptr(&f, l2))[i] =
            (tables[i] << PAGE_SHIFT) | PTE_P | PTE_RW | PTE_US;
    }
    ((uint64_t *)frames_ptr(&f, l3))[0] =
        (mfn_x(l2) << PAGE_SHIFT) | PTE_P | PTE_RW | PTE_US;
    ((uint64_t *)frames_ptr(&f, l4))[0] =
        (mfn_x(l3) << PAGE_SHIFT) | PTE_P | PTE_RW | PTE_US;

    for (r = 0; r < rounds; r++) {
        double t0, t1, t2, t3;

        /* Baseline: read every entry of the same 515 tables in order. */
        t0 = now();
        for (i = 0; i < NR_TABLES; i++) {
            const volatile uint64_t *pt = frames_ptr(&f, _mfn(tables[i]));

            for (j = 0; j < PT_ENTRIES; j++)
                sink += pt[j];
        }
        t1 = now();
        if ((rc = ext(&v, MMUEXT_PIN_L4_TABLE, l4)))
            die("pin", rc);
        t2 = now();
        if ((rc = ext(&v, MMUEXT_UNPIN_TABLE, l4)))
            die("unpin", rc);
        t3 = now();
        tread[r] = t1 - t0;
        tpin[r] = t2 - t1;
        tunpin[r] = t3 - t2;
    }
    {
        struct pv_audit_report rep;

        if (pv_audit(&d, &rep))
            die("audit after the runs", (long)rep.errors);
    }
    qsort(tpin, rounds, sizeof(double), cmp);
    qsort(tunpin, rounds, sizeof(double), cmp);
    qsort(tread, rounds, sizeof(double), cmp);
    {
        double pin = tpin[rounds / 2], unpin = tunpin[rounds / 2];
        double rd = tread[rounds / 2];
        double scanned = (double)NR_TABLES * PT_ENTRIES;

        printf("tree: 1 GiB of 4 KiB pages, %u L1 + L2 + L3 + L4, %" PRIu64
               " present entries; median of %u rounds\n",
               NR_L1, entries, rounds);
        printf("pin L4 (validate):     %8.2f ms  %6.1f M entries/s  (best "
               "%.2f ms, %.1f M/s)\n",
               pin * 1e3, (double)entries / pin / 1e6, tpin[0] * 1e3,
               (double)entries / tpin[0] / 1e6);
        printf("unpin L4 (devalidate): %8.2f ms  %6.1f M entries/s  (best "
               "%.2f ms, %.1f M/s)\n",
               unpin * 1e3, (double)entries / unpin / 1e6, tunpin[0] * 1e3,
               (double)entries / tunpin[0] / 1e6);
        printf("baseline sequential read of the %u tables: %.3f ms, %.0f M "
               "entries/s (best %.3f ms)\n",
               NR_TABLES, rd * 1e3, scanned / rd / 1e6, tread[0] * 1e3);
        printf("ratio pin / read: %.1fx   unpin / read: %.1fx   (best to "
               "best: %.1fx, %.1fx)\n",
               pin / rd, unpin / rd, tpin[0] / tread[0], tunpin[0] / tread[0]);
        printf("sizeof(struct frame) = %zu bytes; frame table = %.3f %% of "
               "the memory it describes (limit 0.8 %%)\n",
               sizeof(struct frame),
               100.0 * (double)sizeof(struct frame) / (double)PAGE_SIZE);
        printf("(checksum %" PRIu64 ")\n", sink & 0xff);
    }
    if (sizeof(struct frame) * 1000 > PAGE_SIZE * 8)
        die("frame table overhead above 0.8%", (long)sizeof(struct frame));
    while ((rc = pv_domain_relinquish(&d)) == -ERESTART)
        ;
    pv_domain_fini(&d);
    frames_fini(&f);
    free(data);
    free(tpin);
    free(tunpin);
    free(tread);
    return 0;
}
