/*
 * time.c - Xen's time interface for a PV guest: each vCPU's
 * vcpu_time_info (pvclock: system time at a TSC stamp, and the TSC's rate
 * as a 32.32 multiplier and a shift) and the shared info wallclock.
 *
 * System time is hv_system_time() (ns since the domain was created).  The
 * TSC's rate is measured once per domain against CLOCK_MONOTONIC; the
 * guest's TSC is the host's plus the offset KVM applies, read from the
 * vCPU's IA32_TSC when the vCPU is set up.  Every write goes through the
 * dirty-logging accessor, version odd while it is inconsistent, as Xen
 * writes it.
 */
#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <time.h>
#include <x86intrin.h>

#include "hv/hv_internal.h"
#include "hv/pv/pvhv.h"
#include "xen/xen.h"

#define MSR_IA32_TSC 0x10

static uint64_t mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* Xen's scale: ns = ((tsc << shift) * mul) >> 32 (a right shift if
 * negative), mul in [2^31, 2^32). */
static void time_scale(uint64_t hz, uint32_t *mul, int8_t *shift)
{
    uint64_t tps = hz;
    int s = 0;

    while (tps > 2000000000ULL) {
        tps >>= 1;
        s--;
    }
    while (tps <= 1000000000ULL) {
        tps <<= 1;
        s++;
    }
    *mul = (uint32_t)((1000000000ULL << 32) / tps);
    *shift = (int8_t)s;
}

void hv_time_init(struct domain *d)
{
    uint64_t t0 = mono_ns(), c0 = __rdtsc(), t1, c1;
    struct timespec sl = {0, 20000000}, rt;

    nanosleep(&sl, NULL);
    t1 = mono_ns();
    c1 = __rdtsc();
    d->tsc_hz = t1 > t0 ? (c1 - c0) * 1000000000ULL / (t1 - t0) : 1000000000ULL;
    if (!d->tsc_hz)
        d->tsc_hz = 1000000000ULL;
    time_scale(d->tsc_hz, &d->tsc_mul, &d->tsc_shift);
    clock_gettime(CLOCK_REALTIME, &rt);
    /* the wallclock at system time 0 */
    d->wc_ns = (uint64_t)rt.tv_sec * 1000000000ULL + (uint64_t)rt.tv_nsec -
               hv_system_time(d);
}

int hv_time_vcpu_init(struct pvcpu *pc)
{
    uint64_t g;
    int r;

    if ((r = kvm_vcpu_get_msr(&pc->vcpu.kvm, MSR_IA32_TSC, &g)) < 0)
        return r;
    pc->tsc_offset = g - __rdtsc();
    return 0;
}

void hv_time_update(struct pvcpu *pc)
{
    struct domain *d = pc->d;
    uint64_t base = pvcpu_vcpu_info_maddr(pc);
    struct vcpu_time_info t;

    if (!base)
        return;
    base += offsetof(struct vcpu_info, time);
    memset(&t, 0, sizeof(t));
    t.version = ++pc->time_version * 2 - 1; /* odd: being written */
    if (gm_write_phys(d, base, &t.version, sizeof(t.version)) < 0)
        return;
    t.tsc_timestamp = __rdtsc() + pc->tsc_offset;
    t.system_time = hv_system_time(d);
    t.tsc_to_system_mul = d->tsc_mul;
    t.tsc_shift = d->tsc_shift;
    if (gm_write_phys(d, base + 8, (uint8_t *)&t + 8, sizeof(t) - 8) < 0)
        return;
    t.version++;
    (void)!gm_write_phys(d, base, &t.version, sizeof(t.version));
}

void hv_wallclock_update(struct domain *d)
{
    uint64_t base = (mfn_x(d->shared_info_mfn) << PAGE_SHIFT) +
                    offsetof(struct shared_info, wc_version);
    uint32_t w[4];

    w[0] = ++d->wc_version * 2 - 1;
    if (gm_write_phys(d, base, &w[0], 4) < 0)
        return;
    w[1] = (uint32_t)(d->wc_ns / 1000000000ULL);
    w[2] = (uint32_t)(d->wc_ns % 1000000000ULL);
    w[3] = (uint32_t)((d->wc_ns / 1000000000ULL) >> 32);
    if (gm_write_phys(d, base + 4, &w[1], 12) < 0)
        return;
    w[0]++;
    (void)!gm_write_phys(d, base, &w[0], 4);
}
