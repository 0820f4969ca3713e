/*
 * bench_balloon.c - what ballooning costs now that it is a slot
 * transaction, as a ratio to the same hypercalls without the slot
 * transactions (the p2m alone), measured in the same run.
 *
 * Two 1 GiB PV domains are built from the guest kernel and never run;
 * memory_op is issued as their vCPU 0 would issue it
 * (hv_domain_test_hypercall()): decrease_reservation of k frames, then
 * increase_reservation of k frames (balloon out, balloon in), k = 1, 64 and
 * 4096 extents per call, rounds alternating between the domain whose
 * reservations are slot transactions (the production path: the window
 * re-derived from the p2m, the slot logs harvested with the vCPUs held,
 * KVM_SET_USER_MEMORY_REGION) and the baseline domain
 * (hv_domain_test_no_slot_txn(): the p2m updated alone, KVM's slots left as
 * they were).  The frames are taken from the middle of the domain's memory,
 * so each balloon-out splits the big slot and each balloon-in merges it
 * back.  Medians per call; the slots the domain has at the end are printed.
 *
 * Run: `make bench`, or build-bench/bench/hv/bench-balloon [pvkernel]
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
#include "xen/xen.h"

#define MEM_MIB 1024
#define KMAX 4096

struct dom {
    struct domain *d;
    struct hv_domain_layout lay;
    uint64_t ext[KMAX]; /* the frames ballooned this round */
};

static struct hv hv;

static int load(const char *path, uint8_t **img, size_t *len)
{
    struct stat st;
    int fd = open(path, O_RDONLY);

    if (fd < 0 || fstat(fd, &st) < 0)
        return -errno;
    *img = malloc((size_t)st.st_size);
    if (!*img || read(fd, *img, (size_t)st.st_size) != st.st_size) {
        close(fd);
        return -EIO;
    }
    close(fd);
    *len = (size_t)st.st_size;
    return 0;
}

/* Read guest memory at va (vCPU 0's tables) through the pool. */
static int peek(struct dom *x, uint64_t va, void *buf, uint64_t len)
{
    uint8_t *out = buf;

    while (len) {
        uint64_t maddr, l1a, l1e, off = va & 4095;
        uint64_t n = len < 4096 - off ? len : 4096 - off;
        int r = hv_domain_test_translate(x->d, va, &maddr, &l1a, &l1e);

        if (r < 0)
            return r;
        memcpy(out, (uint8_t *)hv.frames.base + maddr, n);
        out += n;
        va += n;
        len -= n;
    }
    return 0;
}

/* One memory_op of k order-0 extents from x->ext; returns its result. */
static long memop(struct dom *x, unsigned cmd, unsigned k)
{
    uint64_t st_va = x->lay.p2m_va, ext_va = x->lay.p2m_va + 4096;
    struct xen_memory_reservation r = {
        .extent_start = ext_va,
        .nr_extents = k,
        .extent_order = 0,
        .domid = DOMID_SELF,
    };
    uint64_t a[6] = {cmd, st_va, 0, 0, 0, 0};
    long rc;

    if (hv_domain_test_poke(x->d, st_va, &r, sizeof(r)) < 0 ||
        hv_domain_test_poke(x->d, ext_va, x->ext, k * 8ULL) < 0)
        return -EFAULT;
    rc = hv_domain_test_hypercall(x->d, 0, __HYPERVISOR_memory_op, a, 0, 0);
    if (rc == (long)k && cmd == XENMEM_increase_reservation &&
        peek(x, ext_va, x->ext, k * 8ULL) < 0)
        return -EFAULT;
    return rc;
}

static int create(const uint8_t *img, size_t len, struct dom *x)
{
    struct hv_domain_config cfg = {
        .image = img,
        .image_size = len,
        .mem_mib = MEM_MIB,
        .nr_vcpus = 1,
        .cmdline = "",
        .console_fd = -1,
    };
    char err[256] = "";
    uint64_t n = 0, first = 0, nr = hv.frames.nr_frames;
    int r = hv_domain_create(&hv, &cfg, &x->d, err, sizeof(err));

    if (r < 0) {
        fprintf(stderr, "bench-balloon: create: %s\n", err);
        return r;
    }
    hv_domain_test_layout(x->d, &x->lay);
    /* KMAX frames from the middle of the domain's memory */
    for (uint64_t m = 0; m < nr; m++)
        if (frame_owner(&hv.frames, _mfn(m)) == hv_domain_id(x->d) &&
            n++ == (MEM_MIB << 8) / 2)
            first = m;
    for (unsigned i = 0; i < KMAX; i++)
        x->ext[i] = first + i;
    return 0;
}

int main(int argc, char **argv)
{
    static const unsigned ks[] = {1, 64, 4096};
    static const unsigned rounds[] = {200, 60, 12};
    static double out_s[200], in_s[200], out_b[200], in_b[200];
    char def[4096];
    const char *path = argc > 1 ? argv[1] : def;
    struct dom *txn = calloc(1, sizeof(*txn)), *base = calloc(1, sizeof(*base));
    uint8_t *img = NULL;
    size_t len = 0;
    int r;

    snprintf(def, sizeof(def), "%s", argv[0]);
    if (strrchr(def, '/'))
        *strrchr(def, '/') = 0;
    strncat(def, "/../../guest/pvkernel", sizeof(def) - strlen(def) - 1);
    if (!txn || !base || (r = load(path, &img, &len)) < 0) {
        fprintf(stderr, "bench-balloon: cannot read %s\n", path);
        return 1;
    }
    if ((r = hv_init(&hv, 2 * ((uint64_t)MEM_MIB << 8) + 8192)) < 0) {
        fprintf(stderr, "bench-balloon: %s\n", strerror(-r));
        return 69;
    }
    if (create(img, len, txn) < 0 || create(img, len, base) < 0)
        return 1;
    hv_domain_test_no_slot_txn(base->d);

    printf("balloon out (decrease_reservation) and in (increase_reservation)"
           " of k frames per call, 1 GiB domain; medians per call\n");
    printf("%6s | %12s %12s %7s | %12s %12s %7s\n", "k", "out: slots",
           "p2m only", "ratio", "in: slots", "p2m only", "ratio");
    for (size_t i = 0; i < sizeof(ks) / sizeof(ks[0]); i++) {
        unsigned k = ks[i], n = rounds[i];

        for (unsigned j = 0; j < n; j++) {
            struct dom *xs[2] = {txn, base};

            for (unsigned w = 0; w < 2; w++) {
                struct dom *x = xs[(j + w) & 1];
                uint64_t t0 = now_ns(), t1, t2;
                long a = memop(x, XENMEM_decrease_reservation, k);

                t1 = now_ns();
                long b = memop(x, XENMEM_increase_reservation, k);
                t2 = now_ns();
                if (a != (long)k || b != (long)k) {
                    fprintf(stderr, "bench-balloon: k=%u: out %ld, in %ld\n", k,
                            a, b);
                    return 1;
                }
                (x == txn ? out_s : out_b)[j] = (double)(t1 - t0) / 1e3;
                (x == txn ? in_s : in_b)[j] = (double)(t2 - t1) / 1e3;
            }
        }
        double os = median(out_s, (int)n), ob = median(out_b, (int)n);
        double is = median(in_s, (int)n), ib = median(in_b, (int)n);
        printf("%6u | %9.1f us %9.1f us %7.2f | %9.1f us %9.1f us %7.2f\n", k,
               os, ob, os / ob, is, ib, is / ib);
    }
    {
        uint32_t slots, shim;
        uint64_t frames;

        hv_domain_slots(txn->d, &slots, &shim, &frames);
        printf("slots of the domain at the end: %u (+%u of the shim), "
               "presenting %" PRIu64 " frames\n",
               slots, shim, frames);
    }
    hv_domain_destroy(txn->d);
    hv_domain_destroy(base->d);
    hv_fini(&hv);
    free(img);
    free(txn);
    free(base);
    return 0;
}
