/*
 * domain.c - the hypervisor object and the life of a domain (hv.h).
 */
#include <errno.h>
#include <time.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "boot/builder.h"
#include "lib/range.h"
#include "hv/hv_internal.h"
#include "lib/x86.h"
#include "pv/pv.h"

#define EXIT_CRASHED 70
#define DOMAIN_EXTRA_FRAMES 64 /* shared info and slack for page tables */

static void frame_freed(void *arg, mfn_t mfn, domid_t owner);

int hv_init(struct hv *hv, uint64_t pool_frames)
{
    int r;

    memset(hv, 0, sizeof(*hv));
    if ((r = frames_init(&hv->frames, pool_frames)) < 0)
        return r;
    if ((r = frames_domain_add(&hv->frames, HV_FRAME_DOMID, pool_frames)) < 0)
        goto fail_frames;
    if ((r = kvm_sys_open(&hv->kvm, NULL)) < 0)
        goto fail_frames;
    pthread_mutex_init(&hv->lock, NULL);
    {
        struct kvm_flavour fl;

        /* Unknown: assume the worst (a shadow MMU needs more, not less). */
        hv->shadow_mmu =
            kvm_sys_flavour(&hv->kvm, &fl) < 0 || kvm_flavour_shadow_mmu(&fl);
    }
    hv->frames.free_hook = frame_freed;
    hv->frames.free_hook_arg = hv;
    return 0;

fail_frames:
    frames_fini(&hv->frames);
    return r;
}

void hv_fini(struct hv *hv)
{
    for (unsigned i = 0; i < HV_MAX_DOMAINS; i++)
        BUG_ON(hv->domains[i] != NULL);
    kvm_sys_close(&hv->kvm);
    if (frames_domain_remove(&hv->frames, HV_FRAME_DOMID) < 0)
        BUG_ON(true); /* a shim outlived its domain */
    frames_fini(&hv->frames);
    pthread_mutex_destroy(&hv->lock);
}

static void errf(char *err, size_t len, const char *fmt, ...) __printf(3, 4);
static void errf(char *err, size_t len, const char *fmt, ...)
{
    va_list ap;

    if (!err || !len)
        return;
    va_start(ap, fmt);
    vsnprintf(err, len, fmt, ap);
    va_end(ap);
}

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

/* ---- the one accessor for memvisor's writes to guest memory ---------- */

int gm_write_phys(struct domain *d, uint64_t maddr, const void *src,
                  uint64_t len)
{
    struct frames *f = &d->hv->frames;

    if (d->test_no_dirty_accessor) {
        /* the write alone, unlogged: what the tests must catch */
        if (range_check(maddr, len, f->nr_frames << PAGE_SHIFT))
            return -EFAULT;
        memcpy((uint8_t *)f->base + maddr, src, len);
        return 0;
    }
    if (!d->created_dirty)
        return -EFAULT;
    return dirty_copy_to_guest(&d->dirty, _gpa(maddr), src, len);
}

void gm_logged(struct domain *d, mfn_t mfn)
{
    if (d->created_dirty && !d->test_no_dirty_accessor)
        (void)!dirty_mark(&d->dirty, _gfn(mfn_x(mfn)), 1);
}

void hv_domain_test_no_dirty_accessor(struct domain *d)
{
    d->test_no_dirty_accessor = true;
}

void hv_domain_test_no_slot_txn(struct domain *d)
{
    d->test_no_slot_txn = true;
}

void hv_domain_test_slot_limit(struct domain *d, uint32_t limit)
{
    pthread_mutex_lock(&d->ms.lock);
    d->ms.test_slot_limit = limit;
    pthread_mutex_unlock(&d->ms.lock);
}

void hv_domain_slots(struct domain *d, uint32_t *slots, uint32_t *shim_slots,
                     uint64_t *frames)
{
    struct memslot *sl = NULL;
    uint32_t n = 0;

    *slots = 0;
    *frames = 0;
    *shim_slots = d->nr_shim_slots;
    if (!d->created_ms || memslot_snapshot(&d->ms, &sl, &n) < 0)
        return;
    *slots = n;
    for (uint32_t i = 0; i < n; i++)
        *frames += sl[i].npages;
    free(sl);
}

/* pv's page-table entry writes (mmu_update, update_va_mapping, emulated
 * stores), pins and m2p updates are writes to the guest. */
static void pv_mark_dirty(void *arg, mfn_t mfn)
{
    gm_logged(arg, mfn);
}

/* ---- memslot's pause hook ----------------------------------------------
 *
 * A slot update that deletes a slot or stops its logging needs no vCPU of
 * the domain in KVM_RUN from the harvest of its log until the commit
 * (dirty.h).  The update usually runs on a vCPU thread (a reservation
 * hypercall), which a group pause would wait for forever; so the others
 * are held at their next entry instead: mem_paused is set, then every
 * other vCPU is made to leave the guest and flag a flush (vcpu.h V4, with
 * no stamp filter), and a flagged vCPU's flush (pvcpu_flush()) waits here
 * until the update has committed.  A touch loop run at once in the middle
 * of an exit (pvcpu_touch_now()) is a KVM_RUN outside the run loop, which
 * the handshake does not see: it starts only while no update holds the
 * vCPUs, and the pause waits for those running to end (they only store
 * entries back and need nothing the update holds).  Never waits for a
 * vCPU to do more than leave KVM_RUN, so it cannot deadlock against a
 * vCPU that is itself waiting for the memslot lock.
 */
static struct vcpu *current_vcpu(struct domain *d)
{
    pthread_t self = pthread_self();

    for (unsigned i = 0; i < d->nr_vcpus; i++)
        if (d->vcpus[i].vcpu.thread_started &&
            pthread_equal(d->vcpus[i].vcpu.thread, self))
            return &d->vcpus[i].vcpu;
    return NULL;
}

static void mem_pause(void *opaque)
{
    struct domain *d = opaque;
    struct vcpu *me = current_vcpu(d);
    uint64_t mask = d->nr_vcpus >= 64 ? ~0ULL : (1ULL << d->nr_vcpus) - 1;

    if (me)
        mask &= ~(1ULL << me->id);
    pthread_mutex_lock(&d->mem_lock);
    d->mem_paused = true;
    /* a touch loop run at once is a KVM_RUN the flush handshake does not
     * see (it is outside the run loop): wait it out */
    while (d->mem_touching > 0)
        pthread_cond_wait(&d->mem_cond, &d->mem_lock);
    pthread_mutex_unlock(&d->mem_lock);
    if (d->created_group)
        vcpu_group_flush(&d->group, mask, UINT64_MAX, me);
}

static void mem_unpause(void *opaque)
{
    struct domain *d = opaque;

    pthread_mutex_lock(&d->mem_lock);
    d->mem_paused = false;
    pthread_cond_broadcast(&d->mem_cond);
    pthread_mutex_unlock(&d->mem_lock);
}

void hv_mem_pause_wait(struct domain *d)
{
    pthread_mutex_lock(&d->mem_lock);
    while (d->mem_paused)
        pthread_cond_wait(&d->mem_cond, &d->mem_lock);
    pthread_mutex_unlock(&d->mem_lock);
}

void hv_mem_run_begin(struct domain *d)
{
    pthread_mutex_lock(&d->mem_lock);
    while (d->mem_paused)
        pthread_cond_wait(&d->mem_cond, &d->mem_lock);
    d->mem_touching++;
    pthread_mutex_unlock(&d->mem_lock);
}

void hv_mem_run_end(struct domain *d)
{
    pthread_mutex_lock(&d->mem_lock);
    if (--d->mem_touching == 0)
        pthread_cond_broadcast(&d->mem_cond);
    pthread_mutex_unlock(&d->mem_lock);
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

/*
 * frames.free_hook: a frame is about to be scrubbed and handed out again;
 * no vCPU of its last owner may keep a translation of it (invariant 2).
 * Its owner is the domain whose operation dropped the last reference (only
 * that domain's page tables and holds refer to it), so it exists now.
 */
static void frame_freed(void *arg, mfn_t mfn, domid_t owner)
{
    struct hv *hv = arg;
    struct domain *d;
    struct vcpu *me = NULL;
    pthread_t self = pthread_self();

    if (owner == 0 || owner > HV_MAX_DOMAINS)
        return; /* the hypervisor's own frames: never mapped by a guest */
    d = __atomic_load_n(&hv->domains[owner - 1], __ATOMIC_ACQUIRE);
    if (!d || d->id != owner || !d->created_group || d->test_no_tlb_flush)
        return;
    for (unsigned i = 0; i < d->nr_vcpus; i++)
        if (d->vcpus[i].vcpu.thread_started &&
            pthread_equal(d->vcpus[i].vcpu.thread, self))
            me = &d->vcpus[i].vcpu;
    vcpu_group_flush(&d->group, ~0ULL, frame_tlbflush_stamp(&hv->frames, mfn),
                     me);
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

static void domain_teardown(struct domain *d)
{
    struct frames *f = &d->hv->frames;
    int r;

    evtchn_fini(d); /* the timer thread first: it notifies vCPUs */
    for (unsigned i = 0; i < d->nr_vcpus; i++) {
        if (d->vcpus[i].d)
            pvcpu_touch_release(&d->vcpus[i]);
        if (d->vcpus[i].vcpu.group)
            vcpu_destroy(&d->vcpus[i].vcpu);
    }
    hv_dm_fini(d); /* device models first: they map and track its memory */
    hv_migrate_teardown(d);
    /* The domain's memory leaves the VM as one transaction (the p2m's
     * references dropped after the slots went), then the shim's slots. */
    if (d->created_ms) {
        (void)!memslot_remove(&d->ms, _gfn(0), d->p2m.nr_gfns);
        memslot_fini(&d->ms);
    }
    d->created_ms = false;
    if (d->created_dirty)
        dirty_fini(&d->dirty);
    d->created_dirty = false;
    if (d->created_p2m)
        p2m_fini(&d->p2m);
    d->created_p2m = false;
    if (d->created_vm)
        kvm_vm_destroy(&d->vm);
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
    for (unsigned i = 0; i < d->nr_vcpus; i++)
        free(d->vcpus[i].pv);
    free(d->pv);
    m2p_fini(d);
    if (d->created_shim)
        shim_fini(&d->shim);
    /* -EBUSY if another layer still holds a frame: the budget entry stays
     * (and the frames are freed when their holder lets go). */
    if (frames_domain_remove(f, d->id) < 0)
        d->leaked = true;
    if (d->created_group)
        vcpu_group_fini(&d->group);
    console_fini(&d->console);
    hv_xs_fini(d);
    pthread_mutex_destroy(&d->cons_lock);
    pthread_mutex_destroy(&d->vcpu_op_lock);
    pthread_mutex_destroy(&d->mem_lock);
    pthread_cond_destroy(&d->mem_cond);
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
                      &(struct memslot_pause){mem_pause, mem_unpause, d});
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

/*
 * hv_domain_create()'s phases, in the order it runs them.  Every phase
 * after domain_claim() leaves what it made recorded in the domain (the
 * created_* flags, non-NULL pointers), so that one domain_teardown()
 * undoes any prefix of them; a phase that fails says why in err where
 * the reason is not plain from its errno.
 */

/* Check the configuration, allocate the domain and take a slot of the
 * domain table (its id is the slot + 1).  Nothing to undo on failure. */
int domain_claim(struct hv *hv, const struct hv_domain_config *cfg,
                        struct domain **out, unsigned *out_slot, char *err,
                        size_t errlen)
{
    struct frames *f = &hv->frames;
    struct domain *d;
    unsigned slot;

    if (cfg->nr_vcpus == 0 || cfg->nr_vcpus > HV_MAX_VCPUS ||
        cfg->mem_mib == 0 || cfg->mem_mib > (f->nr_frames >> 8)) {
        errf(err, errlen, "bad configuration (vcpus 1..%u, memory 1..%llu MiB)",
             HV_MAX_VCPUS, (unsigned long long)(f->nr_frames >> 8));
        return -EINVAL;
    }
    d = calloc(1, sizeof(*d));
    if (!d)
        return -ENOMEM;
    pthread_mutex_lock(&hv->lock);
    for (slot = 0; slot < HV_MAX_DOMAINS && hv->domains[slot]; slot++)
        ;
    if (slot == HV_MAX_DOMAINS) {
        pthread_mutex_unlock(&hv->lock);
        free(d);
        errf(err, errlen, "too many domains");
        return -EBUSY;
    }
    hv->domains[slot] = d;
    pthread_mutex_unlock(&hv->lock);
    *out = d;
    *out_slot = slot;
    return 0;
}

/* The domain's own fields, locks and console, and its frame budget. */
int domain_init_basics(struct domain *d, struct hv *hv, unsigned slot,
                              const struct hv_domain_config *cfg, char *err,
                              size_t errlen)
{
    int r;

    d->hv = hv;
    d->id = (domid_t)(slot + 1);
    d->cons_mfn = INVALID_MFN;
    d->store_mfn = INVALID_MFN;
    pthread_mutex_init(&d->cons_lock, NULL);
    {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        d->boot_ns = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
    }
    d->nr_vcpus = cfg->nr_vcpus;
    d->nr_pages = cfg->mem_mib << 8;
    pthread_mutex_init(&d->vcpu_op_lock, NULL);
    pthread_mutex_init(&d->mem_lock, NULL);
    pthread_cond_init(&d->mem_cond, NULL);
    console_init(&d->console, cfg->console_fd);
    r = frames_domain_add(&hv->frames, d->id,
                          d->nr_pages + DOMAIN_EXTRA_FRAMES);
    if (r < 0)
        errf(err, errlen, "frame domain: %s", strerror(-r));
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
    if ((r = hv_dm_init(d)) < 0) {
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

    if ((r = vcpu_group_init(&d->group, pvcpu_exit, pvcpu_diag, d)) < 0)
        return r;
    d->created_group = true;
    vcpu_group_set_flush(&d->group, &d->hv->frames.tlb_clock, pvcpu_flush);
    vcpu_group_set_event(&d->group, pvcpu_event);
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

int hv_domain_create(struct hv *hv, const struct hv_domain_config *cfg,
                     struct domain **out, char *err, size_t errlen)
{
    struct boot_result *boot = NULL;
    struct domain *d;
    unsigned slot;
    int r;

    if (!cfg->image) {
        errf(err, errlen, "no kernel image");
        return -EINVAL;
    }
    if ((r = domain_claim(hv, cfg, &d, &slot, err, errlen)) < 0)
        return r;
    if ((r = domain_init_basics(d, hv, slot, cfg, err, errlen)) < 0)
        goto fail;
    if ((r = domain_pv_init(d, err, errlen)) < 0)
        goto fail;
    boot = calloc(1, sizeof(*boot));
    r = -ENOMEM;
    if (!boot)
        goto fail;
    if ((r = domain_build(d, cfg, boot, err, errlen)) < 0)
        goto fail;
    if ((r = domain_vm_init(d, err, errlen)) < 0)
        goto fail;
    if ((r = domain_vcpus_init(d, err, errlen)) < 0)
        goto fail;
    if ((r = domain_vcpu0_start(d, boot)) < 0)
        goto fail;
    free(boot);
    *out = d;
    return 0;

fail:
    free(boot);
    domain_discard(d, slot);
    return r < 0 ? r : -EINVAL;
}

void domain_discard(struct domain *d, unsigned slot)
{
    struct hv *hv = d->hv;

    domain_teardown(d);
    pthread_mutex_lock(&hv->lock);
    hv->domains[slot] = NULL;
    pthread_mutex_unlock(&hv->lock);
    free(d);
}

int hv_domain_start(struct domain *d)
{
    int r = vcpu_group_start(&d->group);

    return r < 0 ? r : evtchn_start(d);
}

void hv_domain_pause(struct domain *d)
{
    vcpu_group_pause(&d->group);
}

void hv_domain_resume(struct domain *d)
{
    vcpu_group_resume(&d->group);
}

void hv_domain_shutdown(struct domain *d, int reason)
{
    d->shutdown_reason = reason;
    vcpu_group_stop(&d->group, reason);
}

bool hv_domain_stopped(struct domain *d)
{
    return vcpu_group_stopped(&d->group);
}

int hv_domain_wait(struct domain *d)
{
    vcpu_group_join(&d->group);
    if (d->group.crashed)
        return EXIT_CRASHED;
    if (d->group.exit_code == 0)
        return 0;
    /* the shutdown reason (reboot 1, suspend 2, crash 3, ...) */
    return (d->group.exit_code & 0x7f) ? (d->group.exit_code & 0x7f) : 1;
}

void hv_domain_destroy(struct domain *d)
{
    struct hv *hv = d->hv;

    vcpu_group_stop(&d->group, d->shutdown_reason);
    vcpu_group_join(&d->group);
    domain_teardown(d);
    pthread_mutex_lock(&hv->lock);
    for (unsigned i = 0; i < HV_MAX_DOMAINS; i++)
        if (hv->domains[i] == d)
            hv->domains[i] = NULL;
    pthread_mutex_unlock(&hv->lock);
    free(d);
}

domid_t hv_domain_id(const struct domain *d)
{
    return d->id;
}

unsigned hv_domain_nr_vcpus(const struct domain *d)
{
    return d->nr_vcpus;
}

uint64_t hv_domain_nr_pages(const struct domain *d)
{
    return d->nr_pages;
}

const char *hv_domain_crash_text(struct domain *d)
{
    return d->group.diag;
}

size_t hv_domain_console(struct domain *d, char *buf, size_t len)
{
    return console_tail(&d->console, buf, len);
}

void hv_domain_stats(struct domain *d, struct hv_domain_stats *s)
{
    memset(s, 0, sizeof(*s));
    for (unsigned i = 0; i < HV_NR_HYPERCALLS; i++) {
        s->hypercalls[i] = atomic_load(&d->hc_count[i]);
        s->hypercall_ns[i] = atomic_load(&d->hc_ns[i]);
    }
    s->privops = atomic_load(&d->privops);
    s->events_sent = atomic_load(&d->evt.sent);
    s->upcalls = atomic_load(&d->evt.upcalls);
    s->timer_fired = atomic_load(&d->evt.timer_fired);
    for (unsigned i = 0; i < 32; i++)
        s->bounces[i] = atomic_load(&d->bounces[i]);
    s->hypercalls_unknown = atomic_load(&d->hc_unknown);
    s->syscalls = atomic_load(&d->syscalls);
    s->wpt_emulated = atomic_load(&d->wpt_emulated);
    s->wpt_refused = atomic_load(&d->wpt_refused);
    s->continuations = atomic_load(&d->continuations);
    s->touch_overflow = atomic_load(&d->touch_overflow);
    s->spurious_faults = atomic_load(&d->spurious_faults);
    s->flush_requests = atomic_load(&d->group.flush_stats.requests);
    s->flush_filtered = atomic_load(&d->group.flush_stats.filtered);
    s->flush_kicked = atomic_load(&d->group.flush_stats.kicked);
    s->flush_wait_ns = atomic_load(&d->group.flush_stats.wait_ns);
    s->flushes = 0;
    for (unsigned i = 0; i < d->nr_vcpus; i++)
        s->flushes += atomic_load(&d->vcpus[i].vcpu.stats.flushes);
    s->touched_now = atomic_load(&d->touched_now);
    for (unsigned i = 0; i < d->nr_vcpus; i++)
        s->exits += atomic_load(&d->vcpus[i].vcpu.stats.exits);
    if (d->created_dirty)
        s->dirty_marked =
            __atomic_load_n(&d->dirty.stats.marks, __ATOMIC_RELAXED);
}

/* H2: quiescent while running the query. */
static bool hold_quiescent(struct domain *d)
{
    if (vcpu_group_stopped(&d->group)) {
        vcpu_group_join(&d->group);
        return false;
    }
    vcpu_group_pause(&d->group);
    if (vcpu_group_stopped(&d->group)) {
        /* It stopped meanwhile, and a pause of a stopped group does not
         * wait for the threads still finishing an exit: wait until every
         * thread has returned (vcpu.h: nr_live under the group lock; not
         * a join, which the thread waiting in hv_domain_wait() may be
         * doing). */
        struct vcpu_group *g = &d->group;

        vcpu_group_resume(g);
        pthread_mutex_lock(&g->lock);
        while (g->nr_live > 0)
            pthread_cond_wait(&g->cond, &g->lock);
        pthread_mutex_unlock(&g->lock);
        return false;
    }
    return true;
}

int hv_domain_audit(struct domain *d, char *msg, size_t len, uint64_t *frames,
                    uint64_t *tables)
{
    struct pv_audit_report rep;
    bool paused = hold_quiescent(d);
    int r = pv_audit(d->pv, &rep);

    if (r == 0 && shim_check(&d->shim) < 0) {
        r = -EUCLEAN;
        snprintf(rep.first, sizeof(rep.first), "the shim's tables changed");
    }
    if (paused)
        vcpu_group_resume(&d->group);
    if (frames)
        *frames = rep.frames;
    if (tables)
        *tables = rep.tables;
    if (msg && len)
        snprintf(msg, len, "%s", r == 0 ? "" : rep.first);
    return r;
}

static int count_bits(gfn_t base, uint64_t bits, void *opaque)
{
    (void)base;
    *(uint64_t *)opaque += (uint64_t)__builtin_popcountll(bits);
    return 0;
}

int hv_domain_dirty_harvest(struct domain *d, uint64_t *pages)
{
    int r;

    *pages = 0;
    if ((r = dirty_sync(&d->dirty)) < 0)
        return r;
    return dirty_harvest(&d->dirty, _gfn(0), d->hv->frames.nr_frames,
                         count_bits, pages);
}

struct gfn_rec {
    uint64_t *gfns, max, n;
};

static int record_bits(gfn_t base, uint64_t bits, void *opaque)
{
    struct gfn_rec *r = opaque;

    while (bits) {
        unsigned i = (unsigned)__builtin_ctzll(bits);

        bits &= bits - 1;
        if (r->n < r->max)
            r->gfns[r->n] = gfn_x(base) + i;
        r->n++;
    }
    return 0;
}

int hv_domain_dirty_harvest_gfns(struct domain *d, uint64_t *gfns, uint64_t max,
                                 uint64_t *pages)
{
    struct gfn_rec rec = {gfns, max, 0};
    int r;

    *pages = 0;
    if ((r = dirty_sync(&d->dirty)) < 0)
        return r;
    r = dirty_harvest(&d->dirty, _gfn(0), d->hv->frames.nr_frames, record_bits,
                      &rec);
    *pages = rec.n;
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
    return gm_translate(&d->vcpus[0], va, maddr, l1e_maddr, l1e);
}

int hv_domain_test_raw_store(struct hv *hv, uint64_t maddr, uint64_t val)
{
    if ((maddr & 7) ||
        range_check(maddr, 8, hv->frames.nr_frames << PAGE_SHIFT))
        return -EFAULT;
    __atomic_store_n((uint64_t *)(void *)((uint8_t *)hv->frames.base + maddr),
                     val, __ATOMIC_SEQ_CST);
    return 0;
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
    paused = hold_quiescent(d);
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
