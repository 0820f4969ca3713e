/*
 * domain.c - an HVM domain (hvm.h): its memory path, platform, PVH boot,
 * the invariant checker, and the HVM kind's operations.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hv/hvm/hvm.h"
#include "lib/errmsg.h"
#include "lib/x86.h"

#define X86_CR0_PE 0x1ULL
#define X86_CR0_ET 0x10ULL

/* The loader's writes: memvisor's, through the one accessor (H6). */
static int hvm_write(void *opaque, uint64_t gpa, const void *src, uint64_t len)
{
    return gm_write_phys(opaque, gpa, src, len);
}

/* Append a run of 2^order frames at gfn to the domain's list. */
static int add_run(struct hvm_domain *h, gfn_t gfn, mfn_t mfn, unsigned order)
{
    if ((h->nr_runs & (h->nr_runs - 1)) == 0) {
        unsigned cap = h->nr_runs ? 2 * h->nr_runs : 16;
        struct hvm_run *n = realloc(h->runs, cap * sizeof(*n));

        if (!n)
            return -ENOMEM;
        h->runs = n;
    }
    h->runs[h->nr_runs++] = (struct hvm_run){gfn, mfn, order};
    return 0;
}

/* Allocate [gfn, gfn + nr) from the pool, largest runs first. */
static int alloc_region(struct domain *d, uint64_t gfn, uint64_t nr)
{
    struct frames *f = &d->hv->frames;
    struct hvm_domain *h = d->hvm;

    while (nr) {
        unsigned order = MIN((unsigned)(63 - __builtin_clzll(nr)),
                             (unsigned)HVM_RUN_ORDER);
        mfn_t m;
        int r;

        for (;;) {
            r = frames_alloc(f, d->id, order, &m);
            if (r == 0 || order == 0 || r != -ENOMEM)
                break;
            order--;
        }
        if (r < 0)
            return r;
        if ((r = add_run(h, _gfn(gfn), m, order)) < 0) {
            for (uint64_t i = 0; i < (1ULL << order); i++)
                (void)!frame_put_alloc_ref(f, _mfn(mfn_x(m) + i));
            return r;
        }
        gfn += 1ULL << order;
        nr -= 1ULL << order;
    }
    return 0;
}

/*
 * p2m (HVM: any gfn to any frame the domain owns), dirty log, memslot with
 * log-dirty on, then the RAM in one transaction.
 */
static int hvm_memory_init(struct domain *d)
{
    struct frames *f = &d->hv->frames;
    struct hvm_domain *h = d->hvm;
    uint32_t total = MIN(d->hv->kvm.caps.nr_memslots, (uint32_t)HV_MAX_SLOTS);
    uint64_t nr_gfns = h->ram_end >> PAGE_SHIFT;
    struct memslot_range *rg;
    int r;

    if ((r = p2m_init(&d->p2m, f, d->id, P2M_HVM, nr_gfns)) < 0)
        return r;
    d->created_p2m = true;
    if ((r = dirty_init(&d->dirty, &d->vm, &d->p2m, nr_gfns, total)) < 0)
        return r;
    d->created_dirty = true;
    if ((r = memslot_init(&d->ms, &d->vm, f, &d->p2m, &d->dirty, 0, total)) < 0)
        return r;
    d->created_ms = true;
    memslot_set_pause(&d->ms,
                      &(struct memslot_pause){hv_mem_pause, hv_mem_unpause, d});
    if ((r = memslot_set_log_dirty(&d->ms, true)) < 0)
        return r;
    if ((r = alloc_region(d, 0, PVH_LOW_END >> PAGE_SHIFT)) < 0 ||
        (r = alloc_region(d, PVH_HIGH_START >> PAGE_SHIFT,
                          nr_gfns - (PVH_HIGH_START >> PAGE_SHIFT))) < 0)
        return r;
    rg = calloc(h->nr_runs, sizeof(*rg));
    if (!rg)
        return -ENOMEM;
    for (unsigned i = 0; i < h->nr_runs; i++)
        rg[i] = (struct memslot_range){h->runs[i].gfn, h->runs[i].mfn,
                                       1ULL << h->runs[i].order};
    r = memslot_populate_ranges(&d->ms, rg, h->nr_runs, P2M_RAM);
    free(rg);
    return r;
}

/* PVH entry state (docs/misc/pvh.pandoc): 32-bit protected mode, paging
 * off, flat 4 GiB code and data segments, a 32-bit TSS, EBX = start_info,
 * IF, TF and VM clear. */
static int hvm_vcpu0_start(struct domain *d)
{
    struct hvm_vcpu *hc = &d->hvm->vcpus[0];
    struct kvm_vcpu_sregs s;
    struct kvm_vcpu_regs regs = {0};
    struct kvm_vcpu_segment code = {
        .base = 0, .limit = 0xffffffff, .selector = 0x10, .type = 0xb,
        .present = 1, .dpl = 0, .db = 1, .s = 1, .l = 0, .g = 1,
    };
    struct kvm_vcpu_segment data = code;
    int r;

    if ((r = kvm_vcpu_get_sregs(&hc->vcpu.kvm, &s)) < 0)
        return r;
    data.selector = 0x18;
    data.type = 0x3;
    s.cs = code;
    s.ds = s.es = s.fs = s.gs = s.ss = data;
    s.tr = (struct kvm_vcpu_segment){.base = 0, .limit = 0x67,
                                     .selector = 0x20, .type = 0xb,
                                     .present = 1};
    s.ldt = (struct kvm_vcpu_segment){.selector = 0, .type = 0x2,
                                      .present = 1, .limit = 0xffff};
    s.cr0 = X86_CR0_PE | X86_CR0_ET;
    s.cr3 = 0;
    s.cr4 = 0;
    s.efer = 0;
    if ((r = kvm_vcpu_set_sregs(&hc->vcpu.kvm, &s)) < 0)
        return r;
    regs.rip = d->hvm->boot.entry;
    regs.rbx = d->hvm->boot.start_info;
    regs.rflags = X86_EFLAGS_FIXED;
    return kvm_vcpu_set_regs(&hc->vcpu.kvm, &regs);
}

static int hvm_vcpus_init(struct domain *d, bool pvh_entry, char *err,
                          size_t errlen)
{
    struct kvm_cpuid2 *cpuid = NULL;
    int r;

    if ((r = vcpu_group_init(&d->group, d->kind->exit, d->kind->diag, d)) < 0)
        return r;
    d->created_group = true;
    /* No TLB of memvisor's making to flush (KVM runs the guest's own
     * tables); the handshake holds vCPUs while a slot update runs. */
    vcpu_group_set_flush(&d->group, &d->hv->frames.tlb_clock, hvm_vcpu_flush);
    if ((r = kvm_sys_supported_cpuid(&d->hv->kvm, &cpuid)) < 0)
        return r;
    /* as QEMU's -cpu host: the hypervisor bit, which makes a guest look
     * at KVM's leaves (0x40000000: kvm-clock and the TSC's rate) */
    (void)!kvm_cpuid_edit(cpuid, 1, 0, KVM_CPUID_ECX, 1u << 31, 0);
    for (unsigned i = 0; i < d->nr_vcpus && r == 0; i++) {
        struct hvm_vcpu *hc = &d->hvm->vcpus[i];

        hc->d = d;
        hc->id = i;
        if ((r = vcpu_create(&d->group, &hc->vcpu, &d->vm, i)) < 0)
            break;
        hc->created = true;
        if (d->vm.dirty_mode == KVM_DIRTY_RING &&
            (r = dirty_add_vcpu(&d->dirty, &hc->vcpu.kvm)) < 0)
            break;
        r = kvm_vcpu_set_cpuid(&hc->vcpu.kvm, cpuid);
    }
    free(cpuid);
    if (r < 0) {
        errf(err, errlen, "vCPUs: %s", strerror(-r));
        return r;
    }
    if (pvh_entry && (r = hvm_vcpu0_start(d)) < 0) {
        errf(err, errlen, "vCPU 0's PVH entry state: %s", strerror(-r));
        return r;
    }
    /* The others wait for INIT/SIPI inside KVM (in-kernel LAPIC). */
    for (unsigned i = 0; i < d->nr_vcpus; i++)
        vcpu_set_online(&d->hvm->vcpus[i].vcpu);
    return 0;
}

/* The VM, its irqchip, PIT and TSS, the memory path, device models and the
 * serial port of a domain of ram_end bytes (d->hvm allocated). */
static int hvm_platform_create(struct domain *d, uint64_t ram_end, char *err,
                               size_t errlen)
{
    struct hv *hv = d->hv;
    struct hvm_domain *h = d->hvm;
    struct kvm_vm_config vmcfg;
    int r;

    h->ram_end = ram_end;
    d->nr_pages = (ram_end - (PVH_HIGH_START - PVH_LOW_END)) >> PAGE_SHIFT;
    vmcfg = kvm_vm_config_default(&hv->kvm, false, 0);
    if ((r = kvm_vm_create(&d->vm, &hv->kvm, &vmcfg)) < 0) {
        errf(err, errlen, "KVM VM: %s", strerror(-r));
        return r;
    }
    d->created_vm = true;
    if ((r = kvm_vm_create_irqchip(&d->vm)) < 0 ||
        (r = kvm_vm_create_pit2(&d->vm)) < 0 ||
        (r = kvm_vm_set_tss_addr(&d->vm, HVM_TSS_GPA)) < 0) {
        errf(err, errlen, "KVM irqchip, PIT or TSS: %s", strerror(-r));
        return r;
    }
    if ((r = hvm_memory_init(d)) < 0) {
        errf(err, errlen, "guest memory: %s", strerror(-r));
        return r;
    }
    {
        const struct dm_range *rg;
        unsigned n = hvm_platform_ranges(&rg);

        r = hv_dm_init(d, rg, n);
    }
    if (r < 0) {
        errf(err, errlen, "device models: %s", strerror(-r));
        return r;
    }
    uart_init(&h->uart, &d->console, hvm_uart_irq, d);
    h->created_uart = true;
    return 0;
}

static int hvm_kind_create(struct domain *d, const struct hv_domain_config *cfg,
                           char *err, size_t errlen)
{
    struct hvm_domain *h;
    struct pvh_kernel *k;
    int r;

    if (cfg->mem_mib < 2 || cfg->mem_mib > HVM_MAX_MIB) {
        errf(err, errlen, "an HVM domain has 2..%u MiB of RAM", HVM_MAX_MIB);
        return -EINVAL;
    }
    h = d->hvm = calloc(1, sizeof(*h));
    k = malloc(sizeof(*k));
    if (!h || !k) {
        free(k);
        return -ENOMEM;
    }
    if ((r = pvh_parse(cfg->image, cfg->image_size, k)) < 0) {
        errf(err, errlen, "loading the kernel: %s", k->error);
        goto out;
    }
    if ((r = hvm_platform_create(d, cfg->mem_mib << 20, err, errlen)) < 0)
        goto out;
    {
        struct pvh_params p = {
            .image = cfg->image,
            .size = cfg->image_size,
            .ram_end = h->ram_end,
            .cmdline = cfg->cmdline,
            .module = cfg->module,
            .module_size = cfg->module ? cfg->module_size : 0,
            .nr_cpus = d->nr_vcpus,
        };

        if ((r = pvh_build(k, &p, hvm_write, d, &h->boot, err, errlen)) < 0)
            goto out;
    }
    r = hvm_vcpus_init(d, true, err, errlen);
out:
    free(k);
    return r;
}

int hvm_restore_create(struct domain *d, uint64_t ram_end, char *err,
                       size_t errlen)
{
    int r;

    if (ram_end <= PVH_HIGH_START || ram_end > ((uint64_t)HVM_MAX_MIB << 20) ||
        (ram_end & ((1ULL << 20) - 1))) {
        errf(err, errlen, "an HVM domain of %#llx bytes: memvisor makes whole "
                          "MiB, 2..%u", (unsigned long long)ram_end,
             HVM_MAX_MIB);
        return -EINVAL;
    }
    if (!(d->hvm = calloc(1, sizeof(*d->hvm))))
        return -ENOMEM;
    if ((r = hvm_platform_create(d, ram_end, err, errlen)) < 0)
        return r;
    return hvm_vcpus_init(d, false, err, errlen);
}

static void hvm_kind_vcpus_fini(struct domain *d)
{
    if (!d->hvm)
        return;
    for (unsigned i = 0; i < d->nr_vcpus; i++)
        if (d->hvm->vcpus[i].created)
            vcpu_destroy(&d->hvm->vcpus[i].vcpu);
}

/* After the slots and the p2m went: the runs' allocation references. */
static void hvm_kind_fini(struct domain *d)
{
    struct hvm_domain *h = d->hvm;
    struct frames *f = &d->hv->frames;

    if (!h)
        return;
    for (unsigned i = 0; i < h->nr_runs; i++)
        for (uint64_t k = 0; k < (1ULL << h->runs[i].order); k++)
            (void)!frame_put_alloc_ref(f, _mfn(mfn_x(h->runs[i].mfn) + k));
    free(h->runs);
    if (h->created_uart)
        uart_fini(&h->uart);
    free(h);
    d->hvm = NULL;
}

static void errmsg(char *msg, size_t len, const char *fmt, ...) __printf(3, 4);
static void errmsg(char *msg, size_t len, const char *fmt, ...)
{
    va_list ap;

    if (!msg || !len || msg[0])
        return; /* keep the first */
    va_start(ap, fmt);
    vsnprintf(msg, len, fmt, ap);
    va_end(ap);
}

int hvm_check(struct domain *d, char *msg, size_t len)
{
    struct hvm_domain *h = d->hvm;
    struct frames *f = &d->hv->frames;
    struct memslot *sl = NULL;
    uint32_t nsl = 0;
    uint64_t covered = 0, owned = 0;
    int r = 0;

    if (msg && len)
        msg[0] = 0;
    if (!h || !d->created_ms) {
        errmsg(msg, len, "not an HVM domain with memory");
        return -EUCLEAN;
    }
    /* HV1 */
    if (p2m_check(&d->p2m) < 0)
        errmsg(msg, len, "p2m_check failed"), r = -EUCLEAN;
    if (memslot_check(&d->ms) < 0)
        errmsg(msg, len, "memslot_check failed"), r = -EUCLEAN;
    if (dirty_check(&d->dirty) < 0)
        errmsg(msg, len, "dirty_check failed"), r = -EUCLEAN;
    /* HV2 */
    if (memslot_snapshot(&d->ms, &sl, &nsl) < 0) {
        errmsg(msg, len, "no slot snapshot");
        return -EUCLEAN;
    }
    for (uint32_t i = 0; i < nsl; i++) {
        if (!(sl[i].flags & MEMSLOT_RO) && !(sl[i].flags & MEMSLOT_LOG))
            errmsg(msg, len, "slot %u (gfn %#llx) does not log writes",
                   sl[i].id, (unsigned long long)gfn_x(sl[i].base)),
                r = -EUCLEAN;
        for (uint64_t k = 0; k < sl[i].npages; k++) {
            struct p2m_entry e;
            uint64_t g = gfn_x(sl[i].base) + k;

            if (p2m_lookup(&d->p2m, _gfn(g), &e) < 0 || !p2m_is_ram(e.type) ||
                mfn_x(e.mfn) != mfn_x(sl[i].mfn) + k) {
                errmsg(msg, len, "slot %u maps gfn %#llx to mfn %#llx, the "
                       "p2m says %#llx", sl[i].id, (unsigned long long)g,
                       (unsigned long long)(mfn_x(sl[i].mfn) + k),
                       (unsigned long long)mfn_x(e.mfn));
                r = -EUCLEAN;
                break;
            }
        }
        covered += sl[i].npages;
    }
    free(sl);
    if (covered != d->p2m.nr_ram)
        errmsg(msg, len, "slots present %llu pages, the p2m has %llu RAM",
               (unsigned long long)covered,
               (unsigned long long)d->p2m.nr_ram),
            r = -EUCLEAN;
    /* HV3: each RAM entry maps its gfn to the frame its run gave it */
    for (unsigned i = 0; i < h->nr_runs; i++) {
        for (uint64_t k = 0; k < (1ULL << h->runs[i].order); k++) {
            struct p2m_entry e;
            mfn_t m = _mfn(mfn_x(h->runs[i].mfn) + k);

            if (frame_owner(f, m) != d->id ||
                p2m_lookup(&d->p2m, _gfn(gfn_x(h->runs[i].gfn) + k), &e) < 0) {
                errmsg(msg, len, "run %u frame %#llx not the domain's", i,
                       (unsigned long long)mfn_x(m));
                r = -EUCLEAN;
                break;
            }
            if (e.type == P2M_INVALID)
                continue;
            if (!p2m_is_ram(e.type) || !mfn_eq(e.mfn, m)) {
                errmsg(msg, len, "gfn %#llx maps mfn %#llx, its run %#llx",
                       (unsigned long long)(gfn_x(h->runs[i].gfn) + k),
                       (unsigned long long)mfn_x(e.mfn),
                       (unsigned long long)mfn_x(m));
                r = -EUCLEAN;
                break;
            }
            owned++;
        }
    }
    if (owned != d->p2m.nr_ram)
        errmsg(msg, len, "the runs map %llu frames, the p2m has %llu RAM",
               (unsigned long long)owned, (unsigned long long)d->p2m.nr_ram),
            r = -EUCLEAN;
    if (h->created_uart && uart_check(&h->uart) < 0)
        errmsg(msg, len, "uart_check failed"), r = -EUCLEAN;
    return r;
}

static int hvm_kind_audit(struct domain *d, char *msg, size_t len,
                          uint64_t *frames, uint64_t *tables)
{
    if (frames)
        *frames = d->created_p2m ? d->p2m.nr_ram : 0;
    if (tables)
        *tables = 0; /* the guest's own page tables: not memvisor's */
    return hvm_check(d, msg, len);
}

/* Test only (hv.h hv_domain_hvm_test_txn()). */
int hvm_test_txn(struct domain *d, int op, uint64_t gfn, uint64_t nr)
{
    struct hvm_domain *h = d->hvm;
    struct memslot_range *rg;
    uint32_t n = 0;
    int r;

    if (!h || nr == 0 || gfn + nr < gfn || gfn + nr > d->p2m.nr_gfns)
        return -EINVAL;
    switch (op) {
    case HV_HVM_TXN_RO:
        return memslot_set_type(&d->ms, _gfn(gfn), nr, P2M_RAM_RO);
    case HV_HVM_TXN_RW:
        return memslot_set_type(&d->ms, _gfn(gfn), nr, P2M_RAM);
    case HV_HVM_TXN_REMOVE:
        return memslot_remove(&d->ms, _gfn(gfn), nr);
    case HV_HVM_TXN_RESTORE:
    case HV_HVM_TXN_RAW_P2M:
        break;
    default:
        return -EINVAL;
    }
    /* the removed gfns of the range back to their runs' frames */
    rg = calloc(nr, sizeof(*rg));
    if (!rg)
        return -ENOMEM;
    for (uint64_t g = gfn; g < gfn + nr; g++) {
        struct p2m_entry e;

        if (p2m_lookup(&d->p2m, _gfn(g), &e) < 0 || e.type != P2M_INVALID)
            continue;
        for (unsigned i = 0; i < h->nr_runs; i++) {
            uint64_t b = gfn_x(h->runs[i].gfn);

            if (g >= b && g - b < (1ULL << h->runs[i].order)) {
                rg[n++] = (struct memslot_range){
                    _gfn(g), _mfn(mfn_x(h->runs[i].mfn) + (g - b)), 1};
                break;
            }
        }
    }
    if (n == 0)
        r = 0;
    else if (op == HV_HVM_TXN_RESTORE)
        r = memslot_populate_ranges(&d->ms, rg, n, P2M_RAM);
    else /* behind memslot's back: what the checker must catch */
        r = p2m_populate(&d->p2m, rg[0].gfn, rg[0].mfn, P2M_RAM);
    free(rg);
    return r;
}

const struct domain_kind hv_hvm_kind = {
    .name = "hvm",
    .create = hvm_kind_create,
    .start = NULL,
    .exit = hvm_vcpu_exit,
    .diag = hvm_vcpu_diag,
    .event = NULL,
    .vcpus_fini = hvm_kind_vcpus_fini,
    .fini = hvm_kind_fini,
    .audit = hvm_kind_audit,
};
