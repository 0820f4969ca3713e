/*
 * test_hcfuzz.c - random hypercalls at the ABI boundary.  A domain (the
 * tiny kernel of miniguest.S, 2 vCPUs, booted but never run) takes a long
 * series of hypercalls with random numbers and random arguments drawn from
 * values that matter: zero, all ones, small counts, the continuation bit,
 * guest virtual addresses in its mapped region (some pointing at random
 * bytes written there, some at its read-only page tables), the shim's and
 * the direct map's addresses, non-canonical ones, machine addresses and
 * frame numbers of its own frames and of frames it does not own.  The
 * hypervisor must stay up, the audit must stay clean throughout, and once
 * the domain is destroyed every frame must be free again.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "elfgen.h"
#include "hv/hv.h"
#include "testlib.h"

#define VA 0xffffffff80000000ULL
#define POOL 8192

extern const uint8_t miniguest_begin[], miniguest_end[];

static uint64_t pick(uint64_t *seed, uint64_t region, uint64_t nr_frames)
{
    switch (test_rand_below(seed, 16)) {
    case 0: return 0;
    case 1: return ~0ULL;
    case 2: return test_rand_below(seed, 64);
    case 3: return test_rand(seed);
    case 4: return 0x80000000ULL | test_rand_below(seed, 8);
    case 5: /* somewhere in the mapped region */
    case 6: return VA + test_rand_below(seed, region);
    case 7: return VA + 0x200000 + test_rand_below(seed, 0x1000) * 8;
    case 8: return 0xffff800000000000ULL + test_rand_below(seed, 0x20000);
    case 9: return 0xffff808000000000ULL + test_rand_below(seed, 1 << 24);
    case 10: return 0x0000800000000000ULL + test_rand_below(seed, 4096);
    case 11: /* a machine address with a command in the low bits */
        return (test_rand_below(seed, nr_frames) << 12) |
               test_rand_below(seed, 512) << 3 | test_rand_below(seed, 4);
    case 12: return test_rand_below(seed, nr_frames);
    case 13: return 0x7ff0; /* DOMID_SELF */
    case 14: return test_rand_below(seed, 40); /* a command number */
    default: return (test_rand_below(seed, nr_frames) << 12) | 0x67;
    }
}

/* A booted, never-run domain of the tiny kernel (8 MiB) in a new hv. */
static struct domain *mini_domain(struct hv *hv, unsigned vcpus,
                                  const char *cmdline)
{
    static uint8_t img[ELFGEN_MAX];
    struct domain *d = NULL;
    char err[256];
    struct elfgen g = {
        .vaddr = VA, .code = miniguest_begin,
        .code_len = (size_t)(miniguest_end - miniguest_begin),
        .memsz = (size_t)(miniguest_end - miniguest_begin),
        .entry = VA, .virt_base = VA, .hypercall_page = VA + 0x1000,
    };
    size_t n = elfgen_build(&g, img);
    struct hv_domain_config cfg = {
        .image = img, .image_size = n, .mem_mib = 8, .nr_vcpus = vcpus,
        .cmdline = cmdline, .console_fd = -1,
    };

    assert_int_equal(hv_init(hv, POOL), 0);
    if (hv_domain_create(hv, &cfg, &d, err, sizeof(err)) < 0)
        fail_msg("create: %s", err);
    return d;
}

/* The domain's frames and which of them are page tables (pfinfo). */
struct frames_seen {
    uint64_t mfn[2048], l1[64];
    unsigned n, nl1;
};

static void scan(struct domain *d, struct frames_seen *fs)
{
    uint64_t cursor = 0, mfns[256];
    uint32_t info[256];
    int n;

    fs->n = fs->nl1 = 0;
    while ((n = hv_domain_pfinfo(d, &cursor, 256, mfns, info)) > 0)
        for (int i = 0; i < n; i++) {
            if (fs->n < ARRAY_SIZE(fs->mfn))
                fs->mfn[fs->n++] = mfns[i];
            if ((info[i] >> 28 & 7) == 1 && fs->nl1 < ARRAY_SIZE(fs->l1))
                fs->l1[fs->nl1++] = mfns[i];
        }
}

/* A plausible request: an entry of a real L1, a frame of the domain, flags
 * from a short list (writable or not, present or not, reserved bits). */
static void mmu_req(uint64_t *seed, const struct frames_seen *fs,
                    uint64_t out[2])
{
    static const uint64_t flags[] = {0x67, 0x65, 0x25, 0x0, 0x27,
                                     0x8000000000000065ULL, 0x1e7, 0x10067};
    uint64_t l1 = fs->nl1 ? fs->l1[test_rand_below(seed, fs->nl1)] : 1;
    uint64_t m = fs->mfn[test_rand_below(seed, fs->n)];

    out[0] = (l1 << 12) | test_rand_below(seed, 512) << 3 |
             (test_rand_below(seed, 8) == 0 ? test_rand_below(seed, 4) : 0);
    out[1] = (m << 12) | flags[test_rand_below(seed, ARRAY_SIZE(flags))];
}

/* A plausible mmuext op: pin/unpin/new base of a frame of the domain. */
static void ext_op(uint64_t *seed, const struct frames_seen *fs,
                   uint64_t out[3])
{
    static const unsigned cmds[] = {0, 1, 2, 3, 4, 5, 6, 7, 15, 16, 17, 99};
    out[0] = cmds[test_rand_below(seed, ARRAY_SIZE(cmds))];
    out[1] = fs->mfn[test_rand_below(seed, fs->n)];
    out[2] = test_rand_below(seed, 4) ? fs->mfn[test_rand_below(seed, fs->n)]
                                      : test_rand(seed);
}

#define ARRAYS_VA (VA + 0x300000)

static void test_random_hypercalls(void **state)
{
    static const unsigned implemented[] = {0, 1, 3, 4, 5, 12, 13, 14, 17,
                                           18, 21, 23, 24, 25, 26, 29, 30};
    uint64_t seed = test_seed(0x4c5), calls = test_scale(6000);
    uint64_t errors = 0, zero = 0, positive = 0, audits = 0;
    uint64_t accepted[70] = {0};
    struct hv hv;
    struct domain *d;
    char msg[200];
    (void)state;

    d = mini_domain(&hv, 2, "fuzz");
    /* random bytes in the free part of the mapped region (past 2 MiB) */
    for (unsigned p = 0; p < 64; p++) {
        uint64_t buf[512];
        for (unsigned k = 0; k < 512; k++)
            buf[k] = pick(&seed, 4 << 20, POOL);
        assert_int_equal(
            hv_domain_test_poke(d, VA + 0x200000 + p * 4096ULL, buf,
                                sizeof(buf)),
            0);
    }
    struct frames_seen *fs = test_malloc(sizeof(*fs));
    for (uint64_t i = 0; i < calls; i++) {
        if (i % 200 == 0) {
            /* fresh structured arrays: mmu_update requests and mmuext ops */
            uint64_t buf[512];
            scan(d, fs);
            for (unsigned k = 0; k + 1 < 512; k += 2)
                mmu_req(&seed, fs, &buf[k]);
            /* the calls may have unmapped or write-protected it: then the
             * arrays stay as they were */
            (void)!hv_domain_test_poke(d, ARRAYS_VA, buf, sizeof(buf));
            for (unsigned k = 0; k + 2 < 512; k += 3)
                ext_op(&seed, fs, &buf[k]);
            (void)!hv_domain_test_poke(d, ARRAYS_VA + 4096, buf,
                                       sizeof(buf));
        }
        unsigned nr = test_rand_below(&seed, 4) == 0
                          ? (unsigned)test_rand_below(&seed, 70)
                          : implemented[test_rand_below(
                                &seed, ARRAY_SIZE(implemented))];
        uint64_t a[6];
        long r;

        for (unsigned k = 0; k < 6; k++)
            a[k] = pick(&seed, 4 << 20, POOL);
        if (test_rand_below(&seed, 2)) {
            /* a structured call: a real array, a small count, self */
            if (nr == 1 || nr == 26) {
                a[0] = ARRAYS_VA + (nr == 26 ? 4096 : 0) +
                       test_rand_below(&seed, 16) * (nr == 26 ? 24 : 16);
                a[1] = 1 + test_rand_below(&seed, 8);
                a[2] = VA + 0x3ff000;
                a[3] = 0x7ff0;
            } else if (nr == 14) {
                a[0] = VA + test_rand_below(&seed, 1024) * 4096;
                mmu_req(&seed, fs, a + 4);
                a[1] = a[5];
                a[2] = test_rand_below(&seed, 8);
            }
        }
        r = hv_domain_test_hypercall(d, (unsigned)test_rand_below(&seed, 2),
                                     nr, a, VA + 0x10,
                                     pick(&seed, 4 << 20, POOL));
        errors += r < 0;
        accepted[nr] += r >= 0;
        zero += r == 0;
        positive += r > 0;
        if (i % 500 == 499) {
            if (hv_domain_audit(d, msg, sizeof(msg), NULL, NULL) < 0)
                fail_msg("audit after %llu calls: %s",
                         (unsigned long long)i + 1, msg);
            audits++;
        }
    }
    test_note("%llu random hypercalls: %llu errors, %llu zero, %llu positive "
              "results; %llu audits clean; domain %s",
              (unsigned long long)calls, (unsigned long long)errors,
              (unsigned long long)zero, (unsigned long long)positive,
              (unsigned long long)audits,
              hv_domain_stopped(d) ? "stopped by a call (shutdown/crash)"
                                   : "still runnable");
    test_note("accepted: mmu_update %llu, mmuext_op %llu, update_va_mapping "
              "%llu, memory_op %llu, multicall %llu, vcpu_op %llu",
              (unsigned long long)accepted[1], (unsigned long long)accepted[26],
              (unsigned long long)accepted[14], (unsigned long long)accepted[12],
              (unsigned long long)accepted[13], (unsigned long long)accepted[24]);
    assert_int_equal(hv_domain_audit(d, msg, sizeof(msg), NULL, NULL), 0);
    test_free(fs);
    hv_domain_destroy(d);
    /* every frame came back: nothing leaked a reference */
    assert_int_equal(hv.frames.nr_free, POOL - 1);
    hv_fini(&hv);
}

/* A multicall of 8 mmu_updates of 128 entries each changes more entries
 * than one touch list holds: it must finish through continuations, every
 * entry touched (no overflow), every result 0. */
static void test_big_multicall(void **state)
{
    struct hv hv;
    struct domain *d;
    struct hv_domain_stats st;
    struct frames_seen *fs = test_malloc(sizeof(*fs));
    uint64_t reqs[256], calls[8][8], l1b, args[6] = {0};
    char msg[200];
    long r;
    (void)state;

    d = mini_domain(&hv, 1, "multicall");
    scan(d, fs);
    assert_true(fs->nl1 >= 2);
    l1b = fs->l1[fs->nl1 - 1]; /* maps VA + 2..4 MiB */
    for (unsigned k = 0; k < 128; k++) {
        reqs[2 * k] = (l1b << 12) | (448 + k % 64) * 8; /* unused pages */
        reqs[2 * k + 1] = 0;                           /* unmap */
    }
    assert_int_equal(hv_domain_test_poke(d, VA + 0x300000, reqs,
                                         sizeof(reqs)), 0);
    for (unsigned c = 0; c < 8; c++) {
        uint64_t e[8] = {1, ~0ULL, VA + 0x300000, 128, 0, 0x7ff0, 0, 0};
        memcpy(calls[c], e, sizeof(e));
    }
    assert_int_equal(hv_domain_test_poke(d, VA + 0x301000, calls,
                                         sizeof(calls)), 0);
    args[0] = VA + 0x301000;
    args[1] = 8;
    r = hv_domain_test_hypercall(d, 0, 13, args, VA, VA + 0x3f0000);
    assert_int_equal(r, 0);
    hv_domain_stats(d, &st);
    test_note("multicall of 8 x 128 mmu_update: %llu continuations, touch "
              "overflow %llu", (unsigned long long)st.continuations,
              (unsigned long long)st.touch_overflow);
    assert_true(st.continuations > 0);
    assert_int_equal(st.touch_overflow, 0);
    /* each interrupted entry is dispatched again where it stopped */
    assert_true(st.hypercalls[1] >= 8 && st.hypercalls[1] <= 8 + st.continuations);
    assert_int_equal(hv_domain_audit(d, msg, sizeof(msg), NULL, NULL), 0);
    test_free(fs);
    hv_domain_destroy(d);
    hv_fini(&hv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_hypercalls),
        cmocka_unit_test(test_big_multicall),
    };
    test_require_kvm();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
