/*
 * bench-flush: the cost of a type change that needs a cross-vCPU TLB flush
 * (the XSA-401 safety action), on real KVM, as the guest sees it.
 *
 * The guest kernel (guest/pvkernel, workload `flushbench`) pins a frame that
 * has just stopped being writable, as an L1, over and over on vCPU 0, and
 * times each pin with rdtsc; meanwhile 0, 1, 2 or 4 other vCPUs spin in the
 * guest, so every pin finds them in guest mode and not flushed since the
 * frame's stamp: they are kicked, flush, and the pin waits for them to be
 * out.  Baseline, measured in the same run: the same pin with no other vCPU
 * (the domain has one vCPU; nothing to kick).  Prints the median pin in µs
 * and as a ratio to the baseline, the 10th/90th percentiles, the unpin for
 * comparison (no flush), and the domain's flush counters (vCPUs kicked per
 * pin, time waited).  On a 2-core machine 4 spinning vCPUs oversubscribe
 * the host: a kicked vCPU thread must first be scheduled to leave KVM_RUN.
 *
 * Run: `make bench`, or build-bench/bench/pv/bench-flush [pvkernel] [rounds]
 * (the kernel defaults to guest/pvkernel of the same build tree).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../bench.h"
#include "hv/hv.h"

#define MEM_MIB 64

struct result {
    unsigned others;
    uint64_t median, p10, p90, unpin;
    struct hv_domain_stats st;
};

static int load(const char *path, uint8_t **buf, size_t *len)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n;

    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) < 0 || !(*buf = malloc((size_t)st.st_size))) {
        close(fd);
        return -ENOMEM;
    }
    n = read(fd, *buf, (size_t)st.st_size);
    close(fd);
    if (n != st.st_size)
        return -EIO;
    *len = (size_t)n;
    return 0;
}

/* TSC cycles per microsecond, against the monotonic clock. */
static double tsc_per_us(void)
{
    uint32_t lo, hi;
    uint64_t t0 = now_ns(), c0, c1;

    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    c0 = ((uint64_t)hi << 32) | lo;
    while (now_ns() - t0 < 200000000ULL)
        ;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    c1 = ((uint64_t)hi << 32) | lo;
    return (double)(c1 - c0) / ((double)(now_ns() - t0) / 1000.0);
}

static int run_one(const uint8_t *img, size_t len, unsigned others,
                   unsigned rounds, struct result *out)
{
    struct hv hv;
    struct domain *d;
    char cmdline[64], err[256], *con, *p;
    int status, r;

    snprintf(cmdline, sizeof(cmdline), "flushbench rounds=%u", rounds);
    struct hv_domain_config cfg = {
        .image = img,
        .image_size = len,
        .mem_mib = MEM_MIB,
        .nr_vcpus = others + 1,
        .cmdline = cmdline,
        .console_fd = -1,
    };
    if ((r = hv_init(&hv, (MEM_MIB << 8) + 4096)) < 0)
        return r;
    if ((r = hv_domain_create(&hv, &cfg, &d, err, sizeof(err))) < 0) {
        fprintf(stderr, "bench-flush: %s\n", err);
        hv_fini(&hv);
        return r;
    }
    if ((r = hv_domain_start(d)) < 0)
        goto out;
    status = hv_domain_wait(d);
    con = calloc(1, 65536);
    if (!con) {
        r = -ENOMEM;
        goto out;
    }
    hv_domain_console(d, con, 65536);
    hv_domain_stats(d, &out->st);
    p = strstr(con, "flushbench: others=");
    r = -EPROTO;
    if (status == 0 && p &&
        sscanf(p,
               "flushbench: others=%u rounds=%*u pin-cycles median=%" SCNu64
               " p10=%" SCNu64 " p90=%" SCNu64 " unpin-cycles median=%" SCNu64,
               &out->others, &out->median, &out->p10, &out->p90,
               &out->unpin) == 5)
        r = 0;
    else
        fprintf(stderr, "bench-flush: guest status %d, console:\n%s\n", status,
                con);
    free(con);
out:
    hv_domain_destroy(d);
    hv_fini(&hv);
    return r;
}

int main(int argc, char **argv)
{
    static const unsigned others[] = {0, 1, 2, 4};
    char def[4096];
    const char *path = argc > 1 ? argv[1] : def;
    unsigned rounds = argc > 2 ? (unsigned)atoi(argv[2]) : 1000;
    struct result res[4];
    uint8_t *img = NULL;
    size_t len = 0;
    double cyc;
    int r;

    /* <build>/bench/pv/bench-flush -> <build>/guest/pvkernel */
    snprintf(def, sizeof(def), "%s", argv[0]);
    if (strrchr(def, '/'))
        *strrchr(def, '/') = 0;
    else
        snprintf(def, sizeof(def), ".");
    strncat(def, "/../../guest/pvkernel", sizeof(def) - strlen(def) - 1);
    if ((r = load(path, &img, &len)) < 0) {
        fprintf(stderr, "bench-flush: cannot read %s: %s\n", path,
                strerror(-r));
        return 1;
    }
    cyc = tsc_per_us();
    printf("pin of a frame that just stopped being writable, %u rounds; "
           "TSC %.0f MHz\n",
           rounds, cyc);
    printf("%-16s %10s %10s %10s %8s %12s %10s %12s\n", "others running",
           "median us", "p10 us", "p90 us", "ratio", "unpin us", "kicked/pin",
           "wait us/pin");
    for (unsigned i = 0; i < 4; i++) {
        const struct result *b = &res[0], *x = &res[i];

        if ((r = run_one(img, len, others[i], rounds, &res[i])) < 0) {
            fprintf(stderr, "bench-flush: %u other vCPUs: %s\n", others[i],
                    strerror(-r));
            free(img);
            return 1;
        }
        printf("%-16u %10.2f %10.2f %10.2f %7.2fx %12.2f %10.2f %12.2f\n",
               others[i], (double)x->median / cyc, (double)x->p10 / cyc,
               (double)x->p90 / cyc, (double)x->median / (double)b->median,
               (double)x->unpin / cyc, (double)x->st.flush_kicked / rounds,
               (double)x->st.flush_wait_ns / 1000.0 / rounds);
    }
    printf("baseline: the same pin with no other vCPU (row 0); ratio = median "
           "/ baseline median\n");
    free(img);
    return 0;
}
