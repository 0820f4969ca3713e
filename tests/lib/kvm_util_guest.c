/*
 * kvm_util_guest.c - freestanding ring-3 guest routines for the KVM tests.
 *
 * Built with the project compiler but without the project's flags (no
 * sanitizers, no libc), linked at KVMTEST_CODE_GPA and embedded in the test
 * programs as bytes.  Every routine runs in ring 3 (ring 0 is emulated and
 * slow on some hosts), takes its parameters from the shared argument page
 * and reports to the host with a port write (kvmtest_ucall).
 */
#define KVMTEST_GUEST 1
#include "kvm_util.h"

static inline void ucall(uint64_t code, uint64_t arg)
{
    __asm__ volatile("outl %%eax, %%dx"
                     :
                     : "a"((uint32_t)code), "d"((uint16_t)KVMTEST_UCALL_PORT),
                       "D"(arg)
                     : "memory");
}

static inline uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x;
}

#define ARGS ((volatile struct kvmtest_args *)KVMTEST_ARGS_GPA)

/*
 * The dirty_log_test writer: read the iteration, write it into the first
 * 8 bytes of writes_per_sync random pages, report SYNC, repeat.  The host
 * parks the vCPU at a SYNC to change the iteration, so every write between
 * two SYNCs the host waited for carries the same value.
 */
void guest_dirty_writer(void);
void guest_dirty_writer(void)
{
    uint64_t seed = ARGS->seed | 1;
    uint64_t base = ARGS->base, npages = ARGS->npages;

    for (;;) {
        uint64_t it = ARGS->iteration;
        uint64_t n = ARGS->writes_per_sync;
        for (uint64_t i = 0; i < n; i++) {
            uint64_t page = rng_next(&seed) % npages;
            *(volatile uint64_t *)(base + page * 4096) = it;
        }
        ARGS->writes += n;
        ucall(KVMTEST_UCALL_SYNC, it);
    }
}

/*
 * Stores of 1, 2, 4 or 8 bytes at the addresses the host listed, in order,
 * then DONE.
 */
void guest_store_list(void);
void guest_store_list(void)
{
    uint64_t n = ARGS->nr_ops;

    for (uint64_t i = 0; i < n; i++) {
        uint64_t a = ARGS->ops[i].addr, v = ARGS->ops[i].value;
        switch (ARGS->ops[i].len) {
        case 1:
            *(volatile uint8_t *)a = (uint8_t)v;
            break;
        case 2:
            *(volatile uint16_t *)a = (uint16_t)v;
            break;
        case 4:
            *(volatile uint32_t *)a = (uint32_t)v;
            break;
        default:
            *(volatile uint64_t *)a = v;
            break;
        }
    }
    ARGS->writes += n;
    ucall(KVMTEST_UCALL_DONE, n);
}

/*
 * One store into every writes_per_sync-th page of the region, in order,
 * then SYNC; repeat.  (A fixed fraction of the pages per pass.)
 */
void guest_stride_writer(void);
void guest_stride_writer(void)
{
    for (uint64_t pass = 1;; pass++) {
        uint64_t base = ARGS->base, npages = ARGS->npages;
        uint64_t stride = ARGS->writes_per_sync ? ARGS->writes_per_sync : 1;
        for (uint64_t p = 0; p < npages; p += stride)
            *(volatile uint64_t *)(base + p * 4096) = pass;
        ARGS->writes += (npages + stride - 1) / stride;
        ucall(KVMTEST_UCALL_SYNC, pass);
    }
}

/* Report SYNC forever (kick and pause tests). */
void guest_sync_loop(void);
void guest_sync_loop(void)
{
    for (uint64_t i = 0;; i++)
        ucall(KVMTEST_UCALL_SYNC, i);
}
