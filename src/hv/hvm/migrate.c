/*
 * migrate.c - an HVM domain on the stream (hvm.h, migrate.h): the source
 * operations of a running HVM domain (its gfns are the stream's pfns, every
 * page a plain one; the platform's and the vCPUs' state as KVM exposes
 * it) and the target's side of building one from a stream.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hv/hvm/hvm.h"
#include "lib/errmsg.h"
#include "migrate/migrate.h"

/* The MSRs a vCPU's state carries: those KVM lists as saved
 * (KVM_GET_MSR_INDEX_LIST) and lets memvisor read, of what
 * a guest of the CPUID memvisor exposes (KVM_GET_SUPPORTED_CPUID: kvm-clock
 * 2, async page faults by interrupt, steal time, PV EOI, poll control)
 * uses.  EFER and APIC_BASE travel in the special registers.  Restored in
 * this order (async page faults' vector before their enable, as QEMU
 * does), except TSC_DEADLINE: after the LAPIC (set_vcpu()).  KVM's
 * original kvm-clock MSRs (0x11, 0x12) are left out on purpose: writing a
 * zero there after the new ones would switch kvm-clock off. */
static const uint32_t hvm_msrs[] = {
    HVM_MSR_TSC,
    0x3b,       /* TSC_ADJUST */
    0x48,       /* SPEC_CTRL */
    0x174,      /* SYSENTER_CS */
    0x175,      /* SYSENTER_ESP */
    0x176,      /* SYSENTER_EIP */
    0x1a0,      /* MISC_ENABLE */
    0x277,      /* PAT */
    HVM_MSR_TSC_DEADLINE,
    0xda0,      /* XSS */
    0xc0000081, /* STAR */
    0xc0000082, /* LSTAR */
    0xc0000083, /* CSTAR */
    0xc0000084, /* SYSCALL_MASK */
    0xc0000102, /* KERNEL_GS_BASE */
    0xc0000103, /* TSC_AUX */
    0xc001011f, /* AMD VIRT_SPEC_CTRL */
    0x4b564d00, /* kvm-clock: wall clock */
    HVM_MSR_KVM_SYSTEM_TIME_NEW, /* kvm-clock: system time */
    0x4b564d06, /* async page faults: the interrupt's vector */
    0x4b564d02, /* async page faults: enable */
    0x4b564d03, /* steal time */
    0x4b564d04, /* PV EOI */
    0x4b564d05, /* poll control */
};
#define HVM_NR_MSRS (sizeof(hvm_msrs) / sizeof(hvm_msrs[0]))
_Static_assert(HVM_NR_MSRS <= STREAM_HVM_MSRS_MAX,
               "MSR list");

/* The stream's parts are KVM's structures: the same sizes. */
_Static_assert(sizeof(struct stream_hvm_vcpu) == 7104, "HVM_VCPU size");
_Static_assert(sizeof(struct stream_hvm_platform) == 2760, "HVM_PLATFORM");
_Static_assert(sizeof(((struct stream_hvm_platform *)0)->uart.rx) == UART_RXQ,
               "uart queue");

/* The stream's parts have KVM's sizes (checked once per save or restore:
 * kvm.h keeps KVM's structures to itself). */
static bool sizes_ok(void)
{
    static const struct stream_hvm_vcpu v;
    static const struct stream_hvm_platform p;

    return kvm_state_bytes(KVM_ST_REGS) == sizeof(v.regs) &&
           kvm_state_bytes(KVM_ST_SREGS) == sizeof(v.sregs) &&
           kvm_state_bytes(KVM_ST_DEBUGREGS) == sizeof(v.debugregs) &&
           kvm_state_bytes(KVM_ST_FPU) == sizeof(v.fpu) &&
           kvm_state_bytes(KVM_ST_XSAVE) == sizeof(v.xsave) &&
           kvm_state_bytes(KVM_ST_XCRS) == sizeof(v.xcrs) &&
           kvm_state_bytes(KVM_ST_LAPIC) == sizeof(v.lapic) &&
           kvm_state_bytes(KVM_ST_EVENTS) == sizeof(v.events) &&
           kvm_state_bytes(KVM_ST_MP_STATE) == sizeof(v.mp_state) &&
           kvm_state_bytes(KVM_ST_PIC0) == sizeof(p.pic[0]) &&
           kvm_state_bytes(KVM_ST_IOAPIC) == sizeof(p.ioapic) &&
           kvm_state_bytes(KVM_ST_PIT2) == sizeof(p.pit) &&
           kvm_state_bytes(KVM_ST_CLOCK) == sizeof(p.clock);
}

/* A vCPU parked between exits is a clean point: nothing more to wait for. */
static int src_pause(void *arg)
{
    return hv_migrate_pause(arg);
}

static void src_resume(void *arg)
{
    struct domain *d = arg;

    vcpu_group_resume(&d->group);
}

struct harvest_ctx {
    uint64_t *bitmap, nr;
};

static int harvest_bits(gfn_t base, uint64_t bits, void *opaque)
{
    struct harvest_ctx *h = opaque;

    while (bits) {
        uint64_t g = gfn_x(base) + (uint64_t)__builtin_ctzll(bits);

        bits &= bits - 1;
        if (g < h->nr)
            h->bitmap[g / 64] |= 1ULL << (g % 64);
    }
    return 0;
}

static int src_harvest(void *arg, uint64_t *bitmap)
{
    struct domain *d = arg;
    struct harvest_ctx h = {bitmap, d->dirty.nr_gfns};
    int rc;

    if ((rc = dirty_sync(&d->dirty)) < 0)
        return rc;
    return dirty_harvest(&d->dirty, _gfn(0), d->dirty.nr_gfns, harvest_bits,
                         &h);
}

static int src_pfn_to_mfn(void *arg, uint64_t pfn, uint64_t *mfn)
{
    struct domain *d = arg;
    struct p2m_entry e;

    if (p2m_lookup(&d->p2m, _gfn(pfn), &e) < 0 || !p2m_is_ram(e.type))
        return -ENOENT;
    *mfn = mfn_x(e.mfn);
    return 0;
}

static int src_mfn_to_pfn(void *arg, uint64_t mfn, uint64_t *pfn)
{
    (void)arg, (void)mfn, (void)pfn;
    return -ERANGE; /* nothing to normalise in an HVM guest's pages */
}

/* Every page of an HVM guest is a plain one (its page tables are its own
 * business). */
static int src_types(void *arg, const uint64_t *mfns, unsigned n,
                     uint32_t *info)
{
    (void)arg, (void)mfns;
    memset(info, 0, n * sizeof(*info));
    return 0;
}

static const void *src_page(void *arg, uint64_t mfn)
{
    struct domain *d = arg;

    return frames_ptr(&d->hv->frames, _mfn(mfn));
}

static int src_platform(void *arg, struct stream_hvm_platform *p)
{
    struct domain *d = arg;
    struct hvm_domain *h = d->hvm;
    struct uart *u = &h->uart;
    int rc;

    memset(p, 0, sizeof(*p));
    p->ram_end = h->ram_end;
    if ((rc = kvm_vm_state(&d->vm, KVM_ST_PIC0, p->pic[0], sizeof(p->pic[0]),
                           false)) < 0 ||
        (rc = kvm_vm_state(&d->vm, KVM_ST_PIC1, p->pic[1], sizeof(p->pic[1]),
                           false)) < 0 ||
        (rc = kvm_vm_state(&d->vm, KVM_ST_IOAPIC, p->ioapic,
                           sizeof(p->ioapic), false)) < 0 ||
        (rc = kvm_vm_state(&d->vm, KVM_ST_PIT2, p->pit, sizeof(p->pit),
                           false)) < 0 ||
        (rc = kvm_vm_state(&d->vm, KVM_ST_CLOCK, p->clock, sizeof(p->clock),
                           false)) < 0)
        return rc;
    {
        struct uart_state us;

        uart_get_state(u, &us);
        p->uart.ier = us.ier;
        p->uart.lcr = us.lcr;
        p->uart.mcr = us.mcr;
        p->uart.lsr_oe = us.lsr_oe;
        p->uart.scr = us.scr;
        p->uart.dll = us.dll;
        p->uart.dlm = us.dlm;
        p->uart.thr_ipending = us.thr_ipending;
        p->uart.rx_len = us.rx_len;
        memcpy(p->uart.rx, us.rx, us.rx_len);
    }
    return 0;
}

int hvm_vcpu_get(struct domain *d, unsigned i, struct stream_hvm_vcpu *v)
{
    bool listed[HVM_NR_MSRS];
    struct kvm_vcpu *k;
    int rc;

    if (i >= d->nr_vcpus)
        return -EINVAL;
    k = &d->hvm->vcpus[i].vcpu.kvm;
    memset(v, 0, sizeof(*v));
    v->id = i;
    if ((rc = kvm_vcpu_state(k, KVM_ST_REGS, v->regs, sizeof(v->regs),
                             false)) < 0 ||
        (rc = kvm_vcpu_state(k, KVM_ST_SREGS, v->sregs, sizeof(v->sregs),
                             false)) < 0 ||
        (rc = kvm_vcpu_state(k, KVM_ST_FPU, v->fpu, sizeof(v->fpu), false)) <
            0 ||
        (rc = kvm_vcpu_state(k, KVM_ST_LAPIC, v->lapic, sizeof(v->lapic),
                             false)) < 0 ||
        (rc = kvm_vcpu_state(k, KVM_ST_MP_STATE, &v->mp_state,
                             sizeof(v->mp_state), false)) < 0)
        return rc;
    if (kvm_vcpu_state(k, KVM_ST_DEBUGREGS, v->debugregs,
                       sizeof(v->debugregs), false) == 0)
        v->flags |= STREAM_HVM_VCPU_DEBUGREGS;
    if (kvm_vcpu_state(k, KVM_ST_XSAVE, v->xsave, sizeof(v->xsave), false) == 0)
        v->flags |= STREAM_HVM_VCPU_XSAVE;
    if (kvm_vcpu_state(k, KVM_ST_XCRS, v->xcrs, sizeof(v->xcrs), false) == 0)
        v->flags |= STREAM_HVM_VCPU_XCRS;
    if (kvm_vcpu_state(k, KVM_ST_EVENTS, v->events, sizeof(v->events),
                       false) == 0)
        v->flags |= STREAM_HVM_VCPU_EVENTS;
    if ((rc = kvm_sys_msrs_listed(k->vm->sys, hvm_msrs, HVM_NR_MSRS,
                                  listed)) < 0)
        return rc;
    for (unsigned m = 0; m < HVM_NR_MSRS; m++) {
        uint64_t val;

        /* not one this KVM saves (it may read it, yet refuse to set it) */
        if (!listed[m] || kvm_vcpu_get_msr(k, hvm_msrs[m], &val) < 0)
            continue;
        v->msrs[v->nr_msrs].index = hvm_msrs[m];
        v->msrs[v->nr_msrs++].value = val;
    }
    return 0;
}

static int src_vcpu(void *arg, unsigned i, struct stream_hvm_vcpu *v)
{
    return hvm_vcpu_get(arg, i, v);
}

int hvm_source_init(struct domain *d, struct migrate_source *src)
{
    memset(src, 0, sizeof(*src));
    if (!sizes_ok())
        return -EPROTO;
    src->arg = d;
    src->dom = (struct stream_domain){
        .kind = STREAM_DOMAIN_HVM,
        .nr_vcpus = d->nr_vcpus,
        .nr_pages = d->hvm->ram_end >> PAGE_SHIFT,
    };
    src->pause = src_pause;
    src->resume = src_resume;
    src->harvest = src_harvest;
    src->pfn_to_mfn = src_pfn_to_mfn;
    src->mfn_to_pfn = src_mfn_to_pfn;
    src->types = src_types;
    src->page = src_page;
    src->hvm_platform = src_platform;
    src->hvm_vcpu = src_vcpu;
    src->devices = hv_migrate_dm_states;
    src->devices_quiesce = hv_migrate_dm_quiesce;
    return 0;
}

/* ---- the target -------------------------------------------------------- */

/* v: a copy the ioctls may take as their argument */
static int set_vcpu(struct hvm_vcpu *hc, struct stream_hvm_vcpu *v, char *err,
                    size_t errlen)
{
    struct kvm_vcpu *k = &hc->vcpu.kvm;
    const char *what;
    char msr[24];
    int rc;

    /* QEMU's order: registers, extended state, special registers, MSRs,
     * MP state, LAPIC, pending events, debug registers, TSC deadline */
    what = "registers";
    if ((rc = kvm_vcpu_state(k, KVM_ST_REGS, v->regs, sizeof(v->regs),
                             true)) < 0)
        goto fail;
    what = "FPU";
    if (v->flags & STREAM_HVM_VCPU_XSAVE)
        rc = kvm_vcpu_state(k, KVM_ST_XSAVE, v->xsave,
                            sizeof(v->xsave), true);
    else
        rc = kvm_vcpu_state(k, KVM_ST_FPU, v->fpu, sizeof(v->fpu),
                            true);
    if (rc < 0)
        goto fail;
    what = "XCRs";
    if ((v->flags & STREAM_HVM_VCPU_XCRS) &&
        (rc = kvm_vcpu_state(k, KVM_ST_XCRS, v->xcrs, sizeof(v->xcrs),
                             true)) < 0)
        goto fail;
    what = "special registers";
    if ((rc = kvm_vcpu_state(k, KVM_ST_SREGS, v->sregs,
                             sizeof(v->sregs), true)) < 0)
        goto fail;
    for (uint32_t i = 0; i < v->nr_msrs; i++) {
        snprintf(msr, sizeof(msr), "MSR %#x", v->msrs[i].index);
        what = msr;
        if (v->msrs[i].index == HVM_MSR_TSC_DEADLINE)
            continue; /* after the LAPIC */
        if ((rc = kvm_vcpu_set_msr(k, v->msrs[i].index, v->msrs[i].value)) < 0)
            goto fail;
    }
    what = "MP state";
    if ((rc = kvm_vcpu_state(k, KVM_ST_MP_STATE, &v->mp_state,
                             sizeof(v->mp_state), true)) < 0)
        goto fail;
    what = "LAPIC";
    if ((rc = kvm_vcpu_state(k, KVM_ST_LAPIC, v->lapic,
                             sizeof(v->lapic), true)) < 0)
        goto fail;
    what = "pending events";
    if ((v->flags & STREAM_HVM_VCPU_EVENTS) &&
        (rc = kvm_vcpu_state(k, KVM_ST_EVENTS, v->events,
                             sizeof(v->events), true)) < 0)
        goto fail;
    what = "debug registers";
    if ((v->flags & STREAM_HVM_VCPU_DEBUGREGS) &&
        (rc = kvm_vcpu_state(k, KVM_ST_DEBUGREGS, v->debugregs,
                             sizeof(v->debugregs), true)) < 0)
        goto fail;
    /* KVM ignores a TSC deadline unless the LAPIC's timer is in
     * TSC-deadline mode, and setting the LAPIC clears it: last (a guest
     * whose timer is armed would otherwise wait forever) */
    what = "TSC deadline MSR";
    for (uint32_t i = 0; i < v->nr_msrs; i++)
        if (v->msrs[i].index == HVM_MSR_TSC_DEADLINE &&
            (rc = kvm_vcpu_set_msr(k, v->msrs[i].index, v->msrs[i].value)) <
                0)
            goto fail;
    return 0;
fail:
    errf(err, errlen, "vCPU %u: KVM refused its %s: %s", hc->id, what,
         strerror(-rc));
    return rc;
}

int hvm_restore_finish(struct domain *d, const struct migrate_restored *st,
                       char *err, size_t errlen)
{
    struct stream_hvm_platform *p = malloc(sizeof(*p));
    struct stream_hvm_vcpu *v = malloc(sizeof(*v));
    struct uart *u = &d->hvm->uart;
    int rc;

    if (!p || !v) {
        rc = -ENOMEM;
        goto out;
    }
    if (!sizes_ok()) {
        errf(err, errlen, "the HVM records do not match this KVM's structures");
        rc = -EPROTO;
        goto out;
    }
    *p = *st->hvm_platform;

    if (p->ram_end != d->hvm->ram_end) {
        errf(err, errlen, "the platform's RAM end differs from the domain's");
        rc = -EPROTO;
        goto out;
    }
    if ((rc = kvm_vm_state(&d->vm, KVM_ST_PIC0, p->pic[0],
                           sizeof(p->pic[0]), true)) < 0 ||
        (rc = kvm_vm_state(&d->vm, KVM_ST_PIC1, p->pic[1],
                           sizeof(p->pic[1]), true)) < 0 ||
        (rc = kvm_vm_state(&d->vm, KVM_ST_IOAPIC, p->ioapic,
                           sizeof(p->ioapic), true)) < 0 ||
        (rc = kvm_vm_state(&d->vm, KVM_ST_PIT2, p->pit, sizeof(p->pit),
                           true)) < 0 ||
        (rc = kvm_vm_state(&d->vm, KVM_ST_CLOCK, p->clock,
                           sizeof(p->clock), true)) < 0) {
        errf(err, errlen, "KVM refused the irqchip, PIT or clock: %s",
             strerror(-rc));
        goto out;
    }
    {
        struct uart_state us = {
            p->uart.ier, p->uart.lcr, p->uart.mcr, p->uart.lsr_oe,
            p->uart.scr, p->uart.dll, p->uart.dlm, p->uart.thr_ipending != 0,
            p->uart.rx_len, {0}};

        memcpy(us.rx, p->uart.rx, sizeof(us.rx));
        if ((rc = uart_set_state(u, &us)) < 0) {
            errf(err, errlen, "the serial port's state");
            goto out;
        }
    }
    for (unsigned i = 0; i < d->nr_vcpus; i++) {
        *v = st->hvm_vcpus[i];
        if ((rc = set_vcpu(&d->hvm->vcpus[i], v, err, errlen)) < 0)
            goto out;
    }
    rc = 0;
out:
    free(p);
    free(v);
    return rc;
}

/* Test only (hv.h). */
int hv_domain_hvm_test_tsc_deadline(struct domain *d, unsigned vcpu,
                                    uint64_t set, uint64_t *got)
{
    struct kvm_vcpu *k;
    int rc;

    if (!d->hvm || vcpu >= d->nr_vcpus)
        return -EINVAL;
    k = &d->hvm->vcpus[vcpu].vcpu.kvm;
    if (set) {
        struct stream_hvm_vcpu *v = malloc(sizeof(*v));
        uint32_t lvtt;

        if (!v)
            return -ENOMEM;
        if ((rc = kvm_vcpu_state(k, KVM_ST_LAPIC, v->lapic, sizeof(v->lapic),
                                 false)) == 0) {
            /* LVTT (0x320): timer mode 2 (TSC deadline), masked */
            memcpy(&lvtt, v->lapic + 0x320, sizeof(lvtt));
            lvtt = (lvtt & ~0x60000u) | 0x40000u | 0x10000u | 0xefu;
            memcpy(v->lapic + 0x320, &lvtt, sizeof(lvtt));
            rc = kvm_vcpu_state(k, KVM_ST_LAPIC, v->lapic, sizeof(v->lapic),
                                true);
        }
        free(v);
        if (rc < 0 ||
            (rc = kvm_vcpu_set_msr(k, HVM_MSR_TSC_DEADLINE, set)) < 0)
            return rc;
    }
    return kvm_vcpu_get_msr(k, HVM_MSR_TSC_DEADLINE, got);
}

/* Test only (hv.h). */
int hv_domain_hvm_test_set_msr(struct domain *d, unsigned vcpu, uint32_t index,
                               uint64_t value)
{
    if (!d->hvm || vcpu >= d->nr_vcpus)
        return -EINVAL;
    return kvm_vcpu_set_msr(&d->hvm->vcpus[vcpu].vcpu.kvm, index, value);
}
