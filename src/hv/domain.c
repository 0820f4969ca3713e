/*
 * domain.c - the hypervisor object and the life of a domain (hv.h).
 */
#include <errno.h>
#include <time.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/range.h"
#include "hv/hv_internal.h"
#include "hv/hvm/hvm.h"
#include "hv/pv/pvhv.h"
#include "lib/x86.h"

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

/* ---- the one accessor for memvisor's writes to guest memory ---------- */

int gm_write_phys(struct domain *d, uint64_t maddr, const void *src,
                  uint64_t len)
{
    struct frames *f = &d->hv->frames;

    if (d->test_no_dirty_accessor && d->hvm) {
        /* the write alone, unlogged, page by page through the p2m */
        const uint8_t *p = src;

        while (len) {
            struct p2m_entry e;
            uint64_t n = MIN(len, PAGE_SIZE - (maddr & (PAGE_SIZE - 1)));

            if (p2m_lookup(&d->p2m, _gfn(maddr >> PAGE_SHIFT), &e) < 0 ||
                !p2m_is_ram(e.type))
                return -EFAULT;
            memcpy((uint8_t *)frames_ptr(f, e.mfn) + (maddr & (PAGE_SIZE - 1)),
                   p, n);
            p += n;
            maddr += n;
            len -= n;
        }
        return 0;
    }
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

    if (!d->created_group)
        return NULL;
    for (unsigned i = 0; i < d->group.nr; i++)
        if (d->group.vcpus[i] && d->group.vcpus[i]->thread_started &&
            pthread_equal(d->group.vcpus[i]->thread, self))
            return d->group.vcpus[i];
    return NULL;
}

void hv_mem_pause(void *opaque)
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

void hv_mem_unpause(void *opaque)
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
 * frames.free_hook: a frame is about to be scrubbed and handed out again;
 * no vCPU of its last owner may keep a translation of it (invariant 2).
 * Its owner is the domain whose operation dropped the last reference (only
 * that domain's page tables and holds refer to it), so it exists now.
 */
static void frame_freed(void *arg, mfn_t mfn, domid_t owner)
{
    struct hv *hv = arg;
    struct domain *d;

    if (owner == 0 || owner > HV_MAX_DOMAINS)
        return; /* the hypervisor's own frames: never mapped by a guest */
    d = __atomic_load_n(&hv->domains[owner - 1], __ATOMIC_ACQUIRE);
    if (!d || d->id != owner || !d->created_group || d->test_no_tlb_flush)
        return;
    vcpu_group_flush(&d->group, ~0ULL, frame_tlbflush_stamp(&hv->frames, mfn),
                     current_vcpu(d));
}

static void domain_teardown(struct domain *d)
{
    struct frames *f = &d->hv->frames;

    if (d->kind)
        d->kind->vcpus_fini(d);
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
    d->created_vm = false;
    if (d->kind)
        d->kind->fini(d);
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
    d->kind = cfg->kind == HV_DOMAIN_HVM ? &hv_hvm_kind : &hv_pv_kind;
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

int hv_domain_create(struct hv *hv, const struct hv_domain_config *cfg,
                     struct domain **out, char *err, size_t errlen)
{
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
    if ((r = d->kind->create(d, cfg, err, errlen)) < 0)
        goto fail;
    *out = d;
    return 0;

fail:
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

    return r < 0 || !d->kind->start ? r : d->kind->start(d);
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
    for (unsigned i = 0; i < d->group.nr; i++)
        if (d->group.vcpus[i]) {
            s->flushes += atomic_load(&d->group.vcpus[i]->stats.flushes);
            s->exits += atomic_load(&d->group.vcpus[i]->stats.exits);
        }
    s->touched_now = atomic_load(&d->touched_now);
    if (d->hvm) {
        s->pio_unclaimed = atomic_load(&d->hvm->pio_unclaimed);
        s->mmio_unclaimed = atomic_load(&d->hvm->mmio_unclaimed);
        s->pio_forwarded = atomic_load(&d->hvm->pio_forwarded);
        s->mmio_forwarded = atomic_load(&d->hvm->mmio_forwarded);
        s->uart_accesses = atomic_load(&d->hvm->uart_accesses);
        pthread_mutex_lock(&d->hvm->uart.lock);
        s->uart_tx = d->hvm->uart.tx_bytes;
        pthread_mutex_unlock(&d->hvm->uart.lock);
    }
    if (d->created_dirty)
        s->dirty_marked =
            __atomic_load_n(&d->dirty.stats.marks, __ATOMIC_RELAXED);
}

/* H2: quiescent while running the query. */
bool hv_hold_quiescent(struct domain *d)
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
    bool paused = hv_hold_quiescent(d);
    int r = d->kind->audit(d, msg, len, frames, tables);

    if (paused)
        vcpu_group_resume(&d->group);
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
    return dirty_harvest(&d->dirty, _gfn(0), d->dirty.nr_gfns,
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
    r = dirty_harvest(&d->dirty, _gfn(0), d->dirty.nr_gfns, record_bits,
                      &rec);
    *pages = rec.n;
    return r;
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


/* ---- HVM domains (hv.h) --------------------------------------------- */

bool hv_domain_is_hvm(const struct domain *d)
{
    return d->hvm != NULL;
}

int hv_domain_hvm_check(struct domain *d, char *msg, size_t len)
{
    bool paused;
    int r;

    if (!d->hvm)
        return -EINVAL;
    paused = hv_hold_quiescent(d);
    r = hvm_check(d, msg, len);
    if (paused)
        vcpu_group_resume(&d->group);
    return r;
}

int hv_domain_hvm_write(struct domain *d, uint64_t gpa, const void *buf,
                        uint64_t len)
{
    return d->hvm ? gm_write_phys(d, gpa, buf, len) : -EINVAL;
}

int hv_domain_hvm_read(struct domain *d, uint64_t gpa, void *buf, uint64_t len)
{
    return d->hvm ? dirty_copy_from_guest(&d->dirty, buf, _gpa(gpa), len)
                  : -EINVAL;
}

int hv_domain_hvm_gfn(struct domain *d, uint64_t gfn, uint64_t *mfn)
{
    struct p2m_entry e;
    int r;

    if (!d->hvm)
        return -EINVAL;
    if ((r = p2m_lookup(&d->p2m, _gfn(gfn), &e)) < 0)
        return r;
    if (!p2m_is_ram(e.type))
        return -ENOENT;
    *mfn = mfn_x(e.mfn);
    return 0;
}

int hv_domain_hvm_boot(struct domain *d, struct hv_hvm_boot *out)
{
    if (!d->hvm)
        return -EINVAL;
    out->start_info = d->hvm->boot.start_info;
    out->cmdline = d->hvm->boot.cmdline;
    out->module = d->hvm->boot.module;
    out->module_size = d->hvm->boot.module_size;
    out->entry = d->hvm->boot.entry;
    out->ram_end = d->hvm->ram_end;
    return 0;
}

void hv_domain_hvm_unclaimed(struct domain *d, char *buf, size_t len)
{
    if (!len)
        return;
    buf[0] = 0;
    if (d->hvm)
        snprintf(buf, len, "%s", d->hvm->last_unclaimed);
}

int hv_domain_hvm_test_txn(struct domain *d, int op, uint64_t gfn,
                           uint64_t nr)
{
    bool paused;
    int r;

    if (!d->hvm)
        return -EINVAL;
    /* the guest runs on only after the device models dropped what the
     * transaction took away (DESIGN invariant 8) */
    paused = hv_hold_quiescent(d);
    r = hvm_test_txn(d, op, gfn, nr);
    hv_dm_p2m_changed(d);
    if (paused)
        vcpu_group_resume(&d->group);
    return r;
}
