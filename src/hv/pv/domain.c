/*
 * domain.c - a PV domain (pvhv.h): its build (ELF, frames, start-of-day
 * page tables pinned through pv, the shim), its memory path (the p2m is
 * the identity over the frames it owns), its vCPUs' KVM state, the
 * frame-table audit and page-frame info, and its teardown: the PV kind's
 * operations (hv_internal.h struct domain_kind).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "boot/builder.h"
#include "hv/pv/pvhv.h"
#include "lib/x86.h"
#include "pv/pv.h"

/* pv_audit(): the general references other layers hold: the touch lists
 * (H2: the domain is quiescent, the lists are stable) and the p2m's entry
 * for the frame (p2m.h P1: gfn == mfn). */
static uint64_t held_rings(const struct domain *d, mfn_t mfn)
{
    return (uint64_t)mfn_eq(d->cons_mfn, mfn) + mfn_eq(d->store_mfn, mfn);
}

static uint64_t touch_refs(void *arg, mfn_t mfn)
{
    struct domain *d = arg;
    struct p2m_entry e;
    uint64_t n = 0;

    if (d->created_p2m && p2m_lookup(&d->p2m, _gfn(mfn_x(mfn)), &e) == 0 &&
        p2m_is_ram(e.type))
        n++;

    for (unsigned i = 0; i < d->nr_vcpus; i++) {
        for (unsigned k = 0; k < d->vcpus[i].nr_touch; k++)
            n += (d->vcpus[i].touch[k] >> PAGE_SHIFT) == mfn_x(mfn);
        n += d->vcpus[i].vi_maddr && mfn_eq(d->vcpus[i].vi_mfn, mfn);
    }
    return n + held_rings(d, mfn);
}

/* Writable holds: registered vcpu_info frames, the ring pages. */
static uint64_t held_writable(void *arg, mfn_t mfn)
{
    struct domain *d = arg;
    uint64_t n = held_rings(d, mfn);

    for (unsigned i = 0; i < d->nr_vcpus; i++)
        n += d->vcpus[i].vi_maddr && mfn_eq(d->vcpus[i].vi_mfn, mfn);
    return n;
}

/* pv's page-table entry writes (mmu_update, update_va_mapping, emulated
 * stores), pins and m2p updates are writes to the guest. */
static void pv_mark_dirty(void *arg, mfn_t mfn)
{
    gm_logged(arg, mfn);
}

/*
 * A frame becomes a page table: the KVM may still shadow it from an
 * earlier life as a page table (its contents since rewritten or scrubbed
 * from the host), so the vCPU doing this runs a whole-page touch before it
 * returns to the guest.  Outside a vCPU thread (build, teardown) no vCPU
 * runs, and the domain's VM has no shadow of a frame it never used.
 */
static void pv_type_changed(void *arg, mfn_t mfn, uint64_t old_type,
                            uint64_t new_type)
{
    struct domain *d = arg;
    uint64_t t = new_type & FRAME_TYPE_MASK;
    pthread_t self = pthread_self();

    (void)old_type;
    if (t < FRAME_TYPE_L1 || t > FRAME_TYPE_L4)
        return;
    for (unsigned i = 0; i < d->nr_vcpus; i++) {
        struct pvcpu *pc = &d->vcpus[i];
        if (pc->vcpu.thread_started && pthread_equal(pc->vcpu.thread, self)) {
            pvcpu_touch_add(pc, (mfn_x(mfn) << PAGE_SHIFT) | SHIM_TOUCH_PAGE);
            return;
        }
    }
}

/*
 * The XSA-401 safety action and the guest's flush requests (pv.h
 * hooks.flush): the named vCPUs flush for real before they run guest code
 * again (vcpu.h V4).  Called from the acting vCPU's thread, or from the
 * builder and teardown, when no vCPU runs guest code.
 */
static void pv_flush_vcpus(void *arg, struct pv_vcpu *self, uint64_t mask,
                           uint64_t stamp)
{
    struct domain *d = arg;
    struct vcpu *me = NULL;

    if (d->test_no_tlb_flush)
        return;
    for (unsigned i = 0; i < d->nr_vcpus; i++)
        if (d->vcpus[i].pv == self)
            me = &d->vcpus[i].vcpu;
    vcpu_group_flush(&d->group, mask, stamp, me);
}

/*
 * pv.h hooks.entry_replaced: an entry that held references was rewritten
 * from the host.  Under a shadow MMU the KVM has not seen the write and
 * would keep serving the old translation to every vCPU, whatever their
 * TLBs; the acting vCPU stores the entry back from ring 0 now (the touch
 * loop, run at once), before the references can go and the frame be
 * retyped or freed.  With nested paging the hardware reads the entry from
 * memory: the TLB flush at the type change or free is enough.
 */
static void pv_entry_replaced(void *arg, struct pv_vcpu *self, mfn_t table,
                              unsigned idx)
{
    struct domain *d = arg;

    if (!d->hv->shadow_mmu || d->test_no_tlb_flush || d->test_no_touch)
        return;
    for (unsigned i = 0; i < d->nr_vcpus; i++) {
        struct pvcpu *pc = &d->vcpus[i];

        if (pc->pv == self && pc->vcpu.thread_started &&
            pthread_equal(pc->vcpu.thread, pthread_self()) &&
            pvcpu_touch_now(pc, (mfn_x(table) << PAGE_SHIFT) + idx * 8) < 0)
            pvcpu_crash(pc, "cannot run the touch loop");
    }
}

static int setup_vcpu(struct domain *d, unsigned i, struct kvm_cpuid2 *cpuid)
{
    struct pvcpu *pc = &d->vcpus[i];
    struct kvm_vcpu_sregs sr;
    uint32_t idx[8];
    uint64_t val[8];
    unsigned n;
    int r;

    pc->d = d;
    pc->id = i;
    if ((r = vcpu_create(&d->group, &pc->vcpu, &d->vm, i)) < 0)
        return r;
    /* Flagged for a flush, even a vCPU that never ran passes through
     * pvcpu_flush() before its first entry: mem_pause() holds it there. */
    pc->vcpu.entered = true;
    if ((r = kvm_vcpu_set_cpuid(&pc->vcpu.kvm, cpuid)) < 0)
        return r;
    if ((r = hv_time_vcpu_init(pc)) < 0)
        return r;
    shim_vcpu_sregs(&d->shim, i, mfn_x(d->l4_mfn) << PAGE_SHIFT, &sr);
    if ((r = kvm_vcpu_set_sregs(&pc->vcpu.kvm, &sr)) < 0)
        return r;
    pc->cr3 = sr.cr3;
    n = shim_vcpu_msrs(&d->shim, i, idx, val);
    for (unsigned k = 0; k < n; k++)
        if ((r = kvm_vcpu_set_msr(&pc->vcpu.kvm, idx[k], val[k])) < 0)
            return r;
    return 0;
}

static int mfn_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/*
 * The shim's frames as fixed slots 0 .. nr_shim_slots-1 (contiguous runs,
 * gpa = machine address, not logged: they are the hypervisor's, never the
 * guest's).  The ring-0 paths need them all: the image, IDT, GDT, per-vCPU
 * pages and the shim's page tables (slot 256's, and slot 257's direct map
 * tables).  The direct map's 2 MiB leaves still span the whole pool, but
 * only gpas of slots are backed: the touch loop stores only to the
 * guest's own page tables, which are its frames, and any other access
 * through it exits as an access without a slot and crashes the domain.
 */
static int shim_slots_init(struct domain *d)
{
    struct shim *sh = &d->shim;
    uint64_t m[7 + SHIM_MAX_VCPUS + SHIM_DIRECTMAP_MAX_L2];
    unsigned n = 0;
    struct frames *f = &d->hv->frames;

    m[n++] = mfn_x(sh->image);
    m[n++] = mfn_x(sh->idt);
    m[n++] = mfn_x(sh->gdt);
    m[n++] = mfn_x(sh->l3);
    m[n++] = mfn_x(sh->l2);
    m[n++] = mfn_x(sh->l1);
    for (unsigned i = 0; i < sh->nr_vcpus; i++)
        m[n++] = mfn_x(sh->percpu[i]);
    m[n++] = mfn_x(sh->dm_l3);
    for (unsigned i = 0; i < sh->nr_dm_l2; i++)
        m[n++] = mfn_x(sh->dm_l2[i]);
    qsort(m, n, sizeof(m[0]), mfn_cmp);
    for (unsigned i = 0; i < n;) {
        unsigned k = 1;
        int r;

        while (i + k < n && m[i + k] == m[i] + k)
            k++;
        r = kvm_vm_set_memory_region(
            &d->vm, d->nr_shim_slots, 0, m[i] << PAGE_SHIFT,
            (uint64_t)k << PAGE_SHIFT, frames_ptr(f, _mfn(m[i])));
        if (r < 0)
            return r;
        d->nr_shim_slots++;
        i += k;
    }
    return 0;
}

/*
 * The domain's memory path: p2m (identity over owned frames), dirty log,
 * memslot (log-dirty on: every guest write is logged), then every frame
 * the domain owns now (the builder's) presented in one transaction.
 */
static int domain_memory_init(struct domain *d)
{
    struct frames *f = &d->hv->frames;
    uint32_t total = MIN(d->hv->kvm.caps.nr_memslots, (uint32_t)HV_MAX_SLOTS);
    struct memslot_range *rg = NULL;
    uint32_t nrg = 0, cap = 0;
    int r;

    if ((r = p2m_init(&d->p2m, f, d->id, P2M_PV, f->nr_frames)) < 0)
        return r;
    d->created_p2m = true;
    if ((r = dirty_init(&d->dirty, &d->vm, &d->p2m, f->nr_frames, total)) < 0)
        return r;
    d->created_dirty = true;
    if ((r = shim_slots_init(d)) < 0)
        return r;
    if ((r = m2p_slots(d)) < 0)
        return r;
    if (d->nr_shim_slots >= total)
        return -ENOSPC;
    if ((r = memslot_init(&d->ms, &d->vm, f, &d->p2m, &d->dirty,
                          d->nr_shim_slots, total - d->nr_shim_slots)) < 0)
        return r;
    d->created_ms = true;
    memslot_set_pause(&d->ms,
                      &(struct memslot_pause){hv_mem_pause, hv_mem_unpause, d});
    if ((r = memslot_set_log_dirty(&d->ms, true)) < 0)
        return r;
    for (uint64_t m = 0; m < f->nr_frames; m++) {
        if (frame_owner(f, _mfn(m)) != d->id)
            continue;
        if (nrg && mfn_x(rg[nrg - 1].mfn) + rg[nrg - 1].nr == m) {
            rg[nrg - 1].nr++;
            continue;
        }
        if (nrg == cap) {
            struct memslot_range *n2;

            cap = cap ? 2 * cap : 64;
            n2 = realloc(rg, cap * sizeof(*rg));
            if (!n2) {
                free(rg);
                return -ENOMEM;
            }
            rg = n2;
        }
        rg[nrg++] = (struct memslot_range){_gfn(m), _mfn(m), 1};
    }
    r = nrg ? memslot_populate_ranges(&d->ms, rg, nrg, P2M_RAM) : 0;
    free(rg);
    return r;
}

/* PV state: the domain, one pv_vcpu per vCPU, the shim in slot 256. */
int domain_pv_init(struct domain *d, char *err, size_t errlen)
{
    struct frames *f = &d->hv->frames;
    int r;

    d->pv = calloc(1, sizeof(*d->pv));
    if (!d->pv)
        return -ENOMEM;
    if ((r = pv_domain_init(d->pv, f, d->id)) < 0) {
        errf(err, errlen, "pv domain: %s", strerror(-r));
        return r;
    }
    d->created_pv = true;
    d->pv->hooks.extra_refs = touch_refs;
    d->pv->hooks.extra_writable = held_writable;
    d->pv->hooks.mark_dirty = pv_mark_dirty;
    d->pv->hooks.type_changed = pv_type_changed;
    d->pv->hooks.flush = pv_flush_vcpus;
    d->pv->hooks.entry_replaced = pv_entry_replaced;
    d->pv->hooks.arg = d;
    for (unsigned i = 0; i < d->nr_vcpus; i++) {
        d->vcpus[i].pv = calloc(1, sizeof(struct pv_vcpu));
        if (!d->vcpus[i].pv)
            return -ENOMEM;
        if ((r = pv_vcpu_init(d->vcpus[i].pv, d->pv)) < 0)
            return r;
    }
    if ((r = shim_init(&d->shim, f, HV_FRAME_DOMID, d->nr_vcpus)) < 0) {
        errf(err, errlen, "shim: %s", strerror(-r));
        return r;
    }
    d->created_shim = true;
    d->pv->hv_l4[0] = shim_l4e(&d->shim);
    d->pv->hv_l4[1] = shim_l4e_directmap(&d->shim);
    if ((r = m2p_init(d)) < 0) {
        errf(err, errlen, "m2p: %s", strerror(-r));
        return r;
    }
    /* event channels, and the ports of the console and xenstore rings */
    if ((r = evtchn_init(d)) < 0 || (r = hv_xs_init(d)) < 0)
        return r;
    if ((r = evtchn_alloc_backend(d, HV_BACKEND_CONSOLE)) < 0)
        return r;
    d->cons_port = (unsigned)r;
    if ((r = evtchn_alloc_backend(d, HV_BACKEND_STORE)) < 0)
        return r;
    d->store_port = (unsigned)r;
    return 0;
}

/* Build: ELF, frames, start-of-day page tables pinned through pv; boot
 * says where the builder put things. */
static int domain_build(struct domain *d, const struct hv_domain_config *cfg,
                        struct boot_result *boot, char *err, size_t errlen)
{
    struct boot_params bp = {
        .image = cfg->image,
        .size = cfg->image_size,
        .nr_pages = d->nr_pages,
        .cmdline = cfg->cmdline,
        .module = cfg->module,
        .module_size = cfg->module ? cfg->module_size : 0,
        .store_evtchn = d->store_port,
        .console_evtchn = d->cons_port,
    };
    int r;

    r = boot_build(d->pv, d->vcpus[0].pv, &bp, boot);
    if (r < 0) {
        errf(err, errlen, "loading the kernel: %s", boot->error);
        return r;
    }
    /* The ring pages stay writable frames while memvisor writes them. */
    if ((r = pv_get_writable(d->vcpus[0].pv, boot->console)) < 0) {
        errf(err, errlen, "console ring: %s", strerror(-r));
        return r;
    }
    d->cons_mfn = boot->console;
    if ((r = pv_get_writable(d->vcpus[0].pv, boot->store)) < 0) {
        errf(err, errlen, "xenstore ring: %s", strerror(-r));
        return r;
    }
    d->store_mfn = boot->store;
    d->l4_mfn = boot->l4;
    d->shared_info_mfn = boot->shared_info;
    d->start_info_va = boot->start_info_va;
    d->p2m_va = boot->p2m_va;
    return 0;
}

/* KVM: one VM presenting the shim's frames and the domain's own (gpa =
 * machine address: a PV guest sees machine frames), through the memory
 * path. */
int domain_vm_init(struct domain *d, char *err, size_t errlen)
{
    struct hv *hv = d->hv;
    struct kvm_vm_config vmcfg;
    int r;

    vmcfg = kvm_vm_config_default(&hv->kvm, false, 0);
    if ((r = kvm_vm_create(&d->vm, &hv->kvm, &vmcfg)) < 0) {
        errf(err, errlen, "KVM VM: %s", strerror(-r));
        return r;
    }
    d->created_vm = true;
    if ((r = domain_memory_init(d)) < 0) {
        errf(err, errlen, "guest memory: %s", strerror(-r));
        return r;
    }
    if ((r = hv_dm_init(d, NULL, 0)) < 0) {
        errf(err, errlen, "device models: %s", strerror(-r));
        return r;
    }
    return 0;
}

/* vCPUs: the group that runs them, and each vCPU's KVM state. */
int domain_vcpus_init(struct domain *d, char *err, size_t errlen)
{
    struct kvm_cpuid2 *cpuid = NULL;
    int r;

    if ((r = vcpu_group_init(&d->group, d->kind->exit, d->kind->diag, d)) < 0)
        return r;
    d->created_group = true;
    vcpu_group_set_flush(&d->group, &d->hv->frames.tlb_clock, pvcpu_flush);
    vcpu_group_set_event(&d->group, d->kind->event);
    if ((r = kvm_sys_supported_cpuid(&d->hv->kvm, &cpuid)) < 0)
        goto out;
    for (unsigned i = 0; i < d->nr_vcpus; i++) {
        if ((r = setup_vcpu(d, i, cpuid)) < 0) {
            errf(err, errlen, "vCPU %u: %s", i, strerror(-r));
            goto out;
        }
    }
out:
    free(cpuid);
    return r;
}

/* vCPU 0 starts in the guest kernel (ring 3), rsi = start_info. */
static int domain_vcpu0_start(struct domain *d, const struct boot_result *boot)
{
    struct pvcpu *pc = &d->vcpus[0];
    struct kvm_vcpu_regs regs;
    struct shim_frame to = {
        .rip = boot->entry,
        .cs = SHIM_SEL_CS3,
        .rflags = X86_EFLAGS_FIXED | X86_EFLAGS_IF,
        .rsp = boot->stack_top,
        .ss = SHIM_SEL_DS3,
    };
    uint8_t mask = 1;
    int r;

    shim_vcpu_start(&d->shim, 0, &to, &regs);
    regs.rsi = boot->start_info_va;
    hv_time_init(d);
    hv_wallclock_update(d);
    for (unsigned i = 0; i < d->nr_vcpus; i++)
        hv_time_update(&d->vcpus[i]);
    if ((r = kvm_vcpu_set_regs(&pc->vcpu.kvm, &regs)) < 0)
        return r;
    pc->kernel_mode = true;
    pc->initialised = true;
    pc->up = true;
    vcpu_set_online(&pc->vcpu);
    /* Events start masked (docs/abi.md). */
    return gm_write_phys(d, (mfn_x(boot->shared_info) << PAGE_SHIFT) + 1, &mask,
                         1);
}

static int pv_kind_audit(struct domain *d, char *msg, size_t len,
                         uint64_t *frames, uint64_t *tables)
{
    struct pv_audit_report rep;
    int r = pv_audit(d->pv, &rep);

    if (r == 0 && shim_check(&d->shim) < 0) {
        r = -EUCLEAN;
        snprintf(rep.first, sizeof(rep.first), "the shim's tables changed");
    }
    if (frames)
        *frames = rep.frames;
    if (tables)
        *tables = rep.tables;
    if (msg && len)
        snprintf(msg, len, "%s", r == 0 ? "" : rep.first);
    return r;
}

void hv_domain_test_layout(struct domain *d, struct hv_domain_layout *out)
{
    out->start_info_va = d->start_info_va;
    out->p2m_va = d->p2m_va;
    out->shared_info_mfn = mfn_x(d->shared_info_mfn);
    out->l4_mfn = mfn_x(d->l4_mfn);
}

int hv_domain_test_translate(struct domain *d, uint64_t va, uint64_t *maddr,
                             uint64_t *l1e_maddr, uint64_t *l1e)
{
    if (!d->pv)
        return -EOPNOTSUPP;
    return gm_translate(&d->vcpus[0], va, maddr, l1e_maddr, l1e);
}

int hv_domain_pfinfo(struct domain *d, uint64_t *cursor, unsigned max,
                     uint64_t *mfns, uint32_t *info)
{
    struct frames *f = &d->hv->frames;
    uint64_t arr[PV_PFINFO_MAX];
    unsigned n = 0;
    bool paused;
    int r;

    if (max > PV_PFINFO_MAX)
        return -EINVAL;
    if (!d->pv)
        return -EOPNOTSUPP;
    paused = hv_hold_quiescent(d);
    for (uint64_t m = *cursor; m < f->nr_frames && n < max; m++) {
        *cursor = m + 1;
        if (frame_owner(f, _mfn(m)) == d->id)
            arr[n++] = m;
    }
    memcpy(mfns, arr, n * sizeof(arr[0]));
    r = pv_pageframe_info(d->pv, arr, n);
    if (paused)
        vcpu_group_resume(&d->group);
    if (r < 0)
        return r;
    for (unsigned i = 0; i < n; i++)
        info[i] = (uint32_t)arr[i];
    return (int)n;
}
/* The whole PV build, from a kernel image. */
static int pv_kind_create(struct domain *d, const struct hv_domain_config *cfg,
                          char *err, size_t errlen)
{
    struct boot_result *boot;
    int r;

    if ((r = domain_pv_init(d, err, errlen)) < 0)
        return r;
    boot = calloc(1, sizeof(*boot));
    if (!boot)
        return -ENOMEM;
    if ((r = domain_build(d, cfg, boot, err, errlen)) < 0)
        goto out;
    if ((r = domain_vm_init(d, err, errlen)) < 0)
        goto out;
    if ((r = domain_vcpus_init(d, err, errlen)) < 0)
        goto out;
    r = domain_vcpu0_start(d, boot);
out:
    free(boot);
    return r;
}

static void pv_kind_vcpus_fini(struct domain *d)
{
    evtchn_fini(d); /* the timer thread first: it notifies vCPUs */
    for (unsigned i = 0; i < d->nr_vcpus; i++) {
        if (d->vcpus[i].d)
            pvcpu_touch_release(&d->vcpus[i]);
        if (d->vcpus[i].vcpu.group)
            vcpu_destroy(&d->vcpus[i].vcpu);
    }
}

static void pv_kind_fini(struct domain *d)
{
    int r;

    if (d->created_pv) {
        for (unsigned i = 0; i < d->nr_vcpus; i++)
            if (d->vcpus[i].pv)
                hv_vcpu_info_release(&d->vcpus[i]);
        if (!mfn_eq(d->cons_mfn, INVALID_MFN))
            pv_put_writable(d->vcpus[0].pv, d->cons_mfn);
        if (!mfn_eq(d->store_mfn, INVALID_MFN))
            pv_put_writable(d->vcpus[0].pv, d->store_mfn);
        d->cons_mfn = d->store_mfn = INVALID_MFN;
        for (unsigned i = 0; i < d->nr_vcpus; i++) {
            if (!d->vcpus[i].pv)
                continue;
            do
                r = pv_vcpu_destroy_pagetables(d->vcpus[i].pv);
            while (r == -ERESTART);
        }
        do
            r = pv_domain_relinquish(d->pv);
        while (r == -ERESTART);
        pv_domain_fini(d->pv);
    }
    d->created_pv = false;
    for (unsigned i = 0; i < d->nr_vcpus; i++) {
        free(d->vcpus[i].pv);
        d->vcpus[i].pv = NULL;
    }
    free(d->pv);
    d->pv = NULL;
    m2p_fini(d);
    if (d->created_shim)
        shim_fini(&d->shim);
    d->created_shim = false;
}

const struct domain_kind hv_pv_kind = {
    .name = "pv",
    .create = pv_kind_create,
    .start = evtchn_start,
    .exit = pvcpu_exit,
    .diag = pvcpu_diag,
    .event = pvcpu_event,
    .vcpus_fini = pv_kind_vcpus_fini,
    .fini = pv_kind_fini,
    .audit = pv_kind_audit,
};
