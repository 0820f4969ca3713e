/*
 * hc_vcpu.c - the vcpu_op commands beyond bring-up (runstate area and
 * information) and physdev_op as Xen answers an unprivileged PV guest.
 *
 * System time (hv_system_time()) is nanoseconds since the domain was
 * created, CLOCK_MONOTONIC: the clock of vcpu_time_info, the runstate
 * area and the timers.
 */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "hv/hv_internal.h"
#include "hv/pv/pvhv.h"
#include "pv/pv.h"
#include "xen/xen.h"

#define PHYSDEVOP_set_iopl 6

uint64_t hv_system_time(const struct domain *d)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec -
           d->boot_ns;
}

/* Write the runstate area, if one is registered; a failing write (the
 * guest unmapped it) is ignored, as Xen ignores it. */
static void runstate_write(struct pvcpu *pc)
{
    struct vcpu_runstate_info ri;

    if (!pc->runstate_va)
        return;
    ri = pc->runstate;
    (void)!gm_copy_to(pc, pc->runstate_va, &ri, sizeof(ri));
}

void hv_runstate_change(struct pvcpu *pc, int state)
{
    uint64_t now = hv_system_time(pc->d);
    struct vcpu_runstate_info *r = &pc->runstate;

    if (r->state >= 0 && r->state < 4 && now > r->state_entry_time)
        r->time[r->state] += now - r->state_entry_time;
    r->state = state;
    r->state_entry_time = now;
    runstate_write(pc);
}

long hc_vcpu_op_other(struct pvcpu *pc, struct pvcpu *t, unsigned cmd,
                      uint64_t arg)
{
    switch (cmd) {
    case VCPUOP_register_runstate_memory_area: {
        uint64_t va;

        if (gm_copy_from(pc, &va, arg, sizeof(va)) < 0)
            return -EFAULT;
        if (t != pc && t->up)
            return -EINVAL; /* only one's own, or a vCPU still down */
        t->runstate_va = va;
        if (va && pc == t)
            runstate_write(t);
        return 0;
    }
    case VCPUOP_get_runstate_info: {
        struct vcpu_runstate_info ri = t->runstate;
        return gm_copy_to(pc, arg, &ri, sizeof(ri)) < 0 ? -EFAULT : 0;
    }
    case VCPUOP_register_vcpu_info: {
        struct {
            uint64_t mfn;
            uint32_t offset, rsvd;
        } r;
        uint64_t old = pvcpu_vcpu_info_maddr(t), to;
        struct vcpu_info vi;
        int e;

        if (gm_copy_from(pc, &r, arg, sizeof(r)) < 0)
            return -EFAULT;
        if (r.offset > PAGE_SIZE - sizeof(struct vcpu_info) || (r.offset & 7))
            return -EINVAL;
        if (t->vi_maddr)
            return -EINVAL; /* once, as on Xen */
        if ((e = pv_get_writable(t->pv, _mfn(r.mfn))) < 0)
            return -EINVAL;
        to = (r.mfn << PAGE_SHIFT) + r.offset;
        memset(&vi, 0, sizeof(vi));
        vi.evtchn_upcall_mask = 1;
        if (old)
            memcpy(&vi, (uint8_t *)pc->d->hv->frames.base + old, sizeof(vi));
        if (gm_write_phys(pc->d, to, &vi, sizeof(vi)) < 0) {
            pv_put_writable(t->pv, _mfn(r.mfn));
            return -EFAULT;
        }
        t->vi_mfn = _mfn(r.mfn);
        t->vi_maddr = to;
        return 0;
    }
    default:
        return hc_vcpu_timer_op(pc, t, cmd, arg);
    }
}

void hv_vcpu_info_release(struct pvcpu *pc)
{
    if (!pc->vi_maddr)
        return;
    pv_put_writable(pc->pv, pc->vi_mfn);
    pc->vi_maddr = 0;
}

long hc_physdev_op(struct pvcpu *pc, uint64_t a[6])
{
    uint32_t iopl;

    switch (a[0]) {
    case PHYSDEVOP_set_iopl:
        /* Recorded: the guest has no I/O port whatever its IOPL. */
        if (gm_copy_from(pc, &iopl, a[1], sizeof(iopl)) < 0)
            return -EFAULT;
        if (iopl > 3)
            return -EINVAL;
        pc->iopl = iopl;
        return 0;
    default:
        return -ENOSYS;
    }
}

