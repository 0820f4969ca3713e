/*
 * migrate.c - a domain as the migration engine sees it (migrate.h): the
 * source operations of a running domain and the target operations that
 * build one from a stream (hv.h, "Save and restore").
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/errmsg.h"
#include "hv/hv_internal.h"
#include "hv/hvm/hvm.h"
#include "hv/pv/pvhv.h"
#include "lib/x86.h"
#include "migrate/migrate.h"
#include "pv/pv.h"
#include "xen/xen.h"

/* ================================================================ source */

struct hv_msrc {
    struct domain *d;
    uint64_t nframes;
    uint64_t *list_mfns; /* frames of the guest's p2m list */
    uint64_t *bitmap;    /* harvest's target, by pfn */
    bool test_lie;       /* test only: see hv_domain_test_save_lie() */
    uint64_t lie_pfn, lie_mfn;
};

static uint64_t m2p_of(struct domain *d, uint64_t mfn)
{
    return atomic_load_explicit(&d->pv->m2p[mfn], memory_order_relaxed);
}

static uint64_t list_entry(struct hv_msrc *s, uint64_t pfn)
{
    const uint64_t *list = frames_ptr(&s->d->hv->frames,
                                      _mfn(s->list_mfns[pfn / 512]));
    return __atomic_load_n(&list[pfn % 512], __ATOMIC_RELAXED);
}

static int src_pfn_to_mfn(void *arg, uint64_t pfn, uint64_t *mfn)
{
    struct hv_msrc *s = arg;
    struct frames *f = &s->d->hv->frames;
    uint64_t m;

    if (pfn >= s->d->nr_pages)
        return -ENOENT;
    m = list_entry(s, pfn);
    if (m >= f->nr_frames || frame_owner(f, _mfn(m)) != s->d->id ||
        m2p_of(s->d, m) != pfn)
        return -ENOENT;
    *mfn = m;
    return 0;
}

static int src_mfn_to_pfn(void *arg, uint64_t mfn, uint64_t *pfn)
{
    struct hv_msrc *s = arg;
    struct frames *f = &s->d->hv->frames;
    uint64_t p;

    if (mfn == mfn_x(s->d->shared_info_mfn)) {
        *pfn = STREAM_PFN_SHARED_INFO;
        return 0;
    }
    if (s->test_lie && mfn == s->lie_mfn)
        return -ERANGE;
    if (mfn >= f->nr_frames || frame_owner(f, _mfn(mfn)) != s->d->id)
        return -ERANGE;
    p = m2p_of(s->d, mfn);
    if (p >= s->d->nr_pages || list_entry(s, p) != mfn)
        return -ERANGE;
    *pfn = p;
    return 0;
}

static int src_types(void *arg, const uint64_t *mfns, unsigned n,
                     uint32_t *info)
{
    struct hv_msrc *s = arg;
    uint64_t arr[PV_PFINFO_MAX];
    int rc;

    if (n > PV_PFINFO_MAX)
        return -E2BIG;
    memcpy(arr, mfns, 8ULL * n);
    if ((rc = pv_pageframe_info(s->d->pv, arr, n)) < 0)
        return rc;
    for (unsigned i = 0; i < n; i++)
        info[i] = (uint32_t)arr[i];
    return 0;
}

static const void *src_page(void *arg, uint64_t mfn)
{
    struct hv_msrc *s = arg;
    return frames_ptr(&s->d->hv->frames, _mfn(mfn));
}

/* A frame of the pool that was never written is a hole of its memfd. */
static bool src_hole(void *arg, uint64_t mfn)
{
    struct hv_msrc *s = arg;
    off_t off = (off_t)(mfn << PAGE_SHIFT);

    return lseek(s->d->hv->frames.memfd, off, SEEK_DATA) != off;
}

static int src_p2m_frames(void *arg, uint64_t *pfns, uint64_t n)
{
    struct hv_msrc *s = arg;

    if (n != s->nframes)
        return -EINVAL;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t p = m2p_of(s->d, s->list_mfns[i]);
        if (p >= s->d->nr_pages)
            return -ERANGE;
        pfns[i] = p;
    }
    return 0;
}

static int harvest_bits(gfn_t base, uint64_t bits, void *opaque)
{
    struct hv_msrc *s = opaque;

    while (bits) {
        uint64_t mfn = gfn_x(base) + (uint64_t)__builtin_ctzll(bits), p;

        bits &= bits - 1;
        if (mfn >= s->d->hv->frames.nr_frames)
            continue;
        p = m2p_of(s->d, mfn);
        if (p < s->d->nr_pages)
            s->bitmap[p / 64] |= 1ULL << (p % 64);
    }
    return 0;
}

static int src_harvest(void *arg, uint64_t *bitmap)
{
    struct hv_msrc *s = arg;
    struct domain *d = s->d;
    int rc;

    if ((rc = dirty_sync(&d->dirty)) < 0)
        return rc;
    s->bitmap = bitmap;
    return dirty_harvest(&d->dirty, _gfn(0), d->hv->frames.nr_frames,
                         harvest_bits, s);
}

/*
 * Where vCPU pc is, as the guest sees it: its general registers and the
 * ring-3 frame it resumes through.  The clean points: in ring 3; in ring 0
 * at the shim's start or resume stub with the frame at the top of the
 * stack (an exit fully handled); in the touch loop that precedes such a
 * resume (its entries are the source's business: the destination's new
 * VM shadows nothing).  Anywhere else (an event on its way into the shim)
 * -EAGAIN.
 */
static int vcpu_where(struct pvcpu *pc, struct kvm_vcpu_regs *gprs,
                      struct shim_frame *frame, struct kvm_vcpu_sregs *sr)
{
    struct domain *d = pc->d;
    struct kvm_vcpu_regs regs;
    const struct kvm_vcpu_regs *saved;
    struct shim_event ev;
    uint64_t top = SHIM_VA_PERCPU(pc->id) + SHIM_PERCPU_STACK_TOP;

    if (kvm_vcpu_get_regs(&pc->vcpu.kvm, &regs) < 0 ||
        kvm_vcpu_get_sregs(&pc->vcpu.kvm, sr) < 0)
        return -EIO;
    if ((sr->cs.selector & 3) == 3) {
        *gprs = regs;
        frame->rip = regs.rip;
        frame->rsp = regs.rsp;
        frame->rflags = regs.rflags;
        frame->cs = SHIM_SEL_CS3;
        frame->ss = SHIM_SEL_DS3;
        return 0;
    }
    saved = (pc->nr_touch || pc->want_flush) ? &pc->touch_saved : &regs;
    if ((saved->rip != SHIM_VA_CODE + SHIM_OFF_RESUME &&
         saved->rip != SHIM_VA_CODE + SHIM_OFF_START) ||
        saved->rsp != top - sizeof(struct shim_frame))
        return -EAGAIN;
    if (shim_event_read(&d->shim, pc->id, SHIM_ENTRY_IRQ, saved->rsp, &ev) <
            0 ||
        ev.frame.cs != SHIM_SEL_CS3)
        return -EAGAIN;
    *gprs = *saved;
    *frame = ev.frame;
    return 0;
}

static bool partial_frames(struct domain *d)
{
    struct frames *f = &d->hv->frames;

    for (uint64_t m = 1; m < f->nr_frames; m++)
        if (frame_owner(f, _mfn(m)) == d->id &&
            (frame_type_word(f, _mfn(m)) & FRAME_TYPE_PARTIAL))
            return true;
    return false;
}

static int src_pause(void *arg)
{
    struct hv_msrc *s = arg;
    struct domain *d = s->d;
    int rc;

    if ((rc = hv_migrate_pause(d)) < 0)
        return rc;
    for (unsigned i = 0; i < d->nr_vcpus; i++) {
        struct pvcpu *pc = &d->vcpus[i];
        struct kvm_vcpu_regs g;
        struct shim_frame fr;
        struct kvm_vcpu_sregs sr;

        if (!mfn_eq(pc->pv->old_table, INVALID_MFN))
            goto again;
        if (pc->initialised && vcpu_where(pc, &g, &fr, &sr) < 0)
            goto again;
    }
    if (partial_frames(d))
        goto again;
    return 0;
again:
    vcpu_group_resume(&d->group);
    return -EAGAIN;
}

static void src_resume(void *arg)
{
    struct hv_msrc *s = arg;
    vcpu_group_resume(&s->d->group);
}

static int src_vcpu(void *arg, unsigned i, struct stream_pv_vcpu *v)
{
    struct hv_msrc *s = arg;
    struct pvcpu *pc = &s->d->vcpus[i];
    struct kvm_vcpu_regs g;
    struct shim_frame fr;
    struct kvm_vcpu_sregs sr;
    mfn_t b;
    int rc;

    memset(v, 0, sizeof(*v));
    v->id = i;
    v->base_pfn = v->user_base_pfn = STREAM_PFN_NONE;
    if (!pc->initialised)
        return 0;
    if ((rc = vcpu_where(pc, &g, &fr, &sr)) < 0)
        return rc;
    v->flags = STREAM_VCPU_INITIALISED | (pc->up ? STREAM_VCPU_UP : 0) |
               (pc->kernel_mode ? STREAM_VCPU_KERNEL_MODE : 0) |
               (pc->fpu_ts ? STREAM_VCPU_FPU_TS : 0) |
               (pc->pv->cont_pending ? STREAM_VCPU_CONT_PENDING : 0);
    v->cont_rc = pc->pv->cont_rc;
    v->gpr[STREAM_GPR_RAX] = g.rax;
    v->gpr[STREAM_GPR_RBX] = g.rbx;
    v->gpr[STREAM_GPR_RCX] = g.rcx;
    v->gpr[STREAM_GPR_RDX] = g.rdx;
    v->gpr[STREAM_GPR_RSI] = g.rsi;
    v->gpr[STREAM_GPR_RDI] = g.rdi;
    v->gpr[STREAM_GPR_RBP] = g.rbp;
    v->gpr[STREAM_GPR_R8] = g.r8;
    v->gpr[STREAM_GPR_R9] = g.r9;
    v->gpr[STREAM_GPR_R10] = g.r10;
    v->gpr[STREAM_GPR_R11] = g.r11;
    v->gpr[STREAM_GPR_R12] = g.r12;
    v->gpr[STREAM_GPR_R13] = g.r13;
    v->gpr[STREAM_GPR_R14] = g.r14;
    v->gpr[STREAM_GPR_R15] = g.r15;
    v->rip = fr.rip;
    v->rsp = fr.rsp;
    v->rflags = fr.rflags;
    v->fs_base = sr.fs.base;
    v->gs_base = sr.gs.base;
    v->gs_base_kernel = pc->gs_base_kernel;
    v->gs_base_user = pc->gs_base_user;
    v->kernel_ss = pc->kernel_ss;
    v->kernel_sp = pc->kernel_sp;
    v->event_cb = pc->event_cb;
    v->failsafe_cb = pc->failsafe_cb;
    v->syscall_cb = pc->syscall_cb;
    v->vm_assist = pc->vm_assist;
    b = pc->pv->base;
    v->base_pfn = mfn_eq(b, INVALID_MFN) ? STREAM_PFN_NONE : mfn_x(b);
    b = pc->pv->user_base;
    v->user_base_pfn = mfn_eq(b, INVALID_MFN) ? STREAM_PFN_NONE : mfn_x(b);
    v->ldt_base = pc->pv->ldt_base;
    v->ldt_ents = pc->pv->ldt_ents;
    for (unsigned k = 0; k < 256; k++) {
        v->traps[k].address = pc->traps[k].address;
        v->traps[k].flags = pc->traps[k].flags;
    }
    return 0;
}

static int src_shared_info(void *arg, void *page)
{
    struct hv_msrc *s = arg;

    memcpy(page, frames_ptr(&s->d->hv->frames, s->d->shared_info_mfn), 4096);
    return 0;
}

/* The state of every live device model, in server order (final round). */
static int src_devices(void *arg,
                       int (*emit)(void *ctx, const struct stream_device *dv,
                                   const void *state, uint32_t len),
                       void *ctx, char *err, size_t errlen)
{
    struct hv_msrc *s = arg;
    struct domain *d = s->d;
    uint8_t *buf;
    int rc = 0;

    if (!d->created_io)
        return 0;
    buf = malloc(DM_STATE_MAX);
    if (!buf)
        return -ENOMEM;
    for (unsigned i = 0; i < IOREQ_MAX_SERVERS && rc == 0; i++) {
        enum ioreq_state st;
        char name[DM_NAME_MAX];
        uint32_t len = 0;
        struct stream_device dv = {.kind = STREAM_DEVICE_DM,
                                   .instance = i,
                                   .version = 1};

        if (ioreq_server_info(&d->io, i, &st, name, NULL, 0) < 0)
            break; /* no more servers */
        if (st != IOREQ_LIVE)
            continue; /* cut off: its device has failed, nothing to move */
        if ((rc = ioreq_save(&d->io, i, buf, &len)) < 0) {
            errf(err, errlen, "device model %u (%.*s): saving its state: %s",
                 i, (int)DM_NAME_MAX, name, strerror(-rc));
            break;
        }
        rc = emit(ctx, &dv, buf, len);
    }
    free(buf);
    return rc;
}

int hv_migrate_pause(struct domain *d)
{
    if (vcpu_group_stopped(&d->group))
        return -ECANCELED;
    vcpu_group_pause(&d->group);
    if (vcpu_group_stopped(&d->group)) {
        vcpu_group_resume(&d->group);
        return -ECANCELED;
    }
    return 0;
}

int hv_migrate_dm_states(void *arg,
                         int (*emit)(void *ctx, const struct stream_device *dv,
                                     const void *state, uint32_t len),
                         void *ctx, char *err, size_t errlen)
{
    struct hv_msrc s = {.d = arg};

    return src_devices(&s, emit, ctx, err, errlen);
}

/* QUIESCE (on) or resume every live device model, in server order; a
 * failure to quiesce one resumes those quiesced before it. */
static int src_devices_quiesce(void *arg, bool on, char *err, size_t errlen)
{
    struct hv_msrc *s = arg;
    struct domain *d = s->d;
    int n = 0, rc;

    if (!d->created_io)
        return 0;
    for (unsigned i = 0; i < IOREQ_MAX_SERVERS; i++) {
        enum ioreq_state st;
        char name[DM_NAME_MAX];

        if (ioreq_server_info(&d->io, i, &st, name, NULL, 0) < 0)
            break; /* no more servers */
        if (st != IOREQ_LIVE)
            continue; /* cut off: its device has failed */
        if ((rc = ioreq_quiesce(&d->io, i, on)) < 0) {
            if (!on)
                continue; /* resuming: the others still are */
            errf(err, errlen, "device model %u (%.*s): quiescing: %s", i,
                 (int)DM_NAME_MAX, name, strerror(-rc));
            for (unsigned k = 0; k < i; k++)
                (void)!ioreq_quiesce(&d->io, k, false);
            return rc;
        }
        n++;
    }
    return n;
}

int hv_migrate_dm_quiesce(void *arg, bool on, char *err, size_t errlen)
{
    struct hv_msrc s = {.d = arg};

    return src_devices_quiesce(&s, on, err, errlen);
}

int hv_domain_source_init(struct domain *d, struct migrate_source *src)
{
    struct hv_msrc *s;
    int rc = 0;

    memset(src, 0, sizeof(*src));
    if (d->hvm)
        return hvm_source_init(d, src);
    s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->d = d;
    s->nframes = (d->nr_pages + 511) / 512;
    s->list_mfns = calloc(s->nframes, 8);
    if (!s->list_mfns) {
        free(s);
        return -ENOMEM;
    }
    /* where the guest's p2m list lives: through vCPU 0's tables, paused */
    if (vcpu_group_stopped(&d->group)) {
        rc = -ECANCELED;
        goto fail;
    }
    vcpu_group_pause(&d->group);
    for (uint64_t i = 0; i < s->nframes && rc == 0; i++) {
        uint64_t maddr, l1m, l1e;

        rc = gm_translate(&d->vcpus[0], d->p2m_va + i * PAGE_SIZE, &maddr,
                          &l1m, &l1e);
        s->list_mfns[i] = maddr >> PAGE_SHIFT;
        if (rc == 0 && (maddr >> PAGE_SHIFT >= d->hv->frames.nr_frames ||
                        frame_owner(&d->hv->frames,
                                    _mfn(maddr >> PAGE_SHIFT)) != d->id))
            rc = -ERANGE;
    }
    vcpu_group_resume(&d->group);
    if (rc < 0)
        goto fail;
    src->arg = s;
    src->dom = (struct stream_domain){
        .kind = STREAM_DOMAIN_PV64,
        .nr_vcpus = d->nr_vcpus,
        .nr_pages = d->nr_pages,
        .p2m_va = d->p2m_va,
        .start_info_va = d->start_info_va,
    };
    {
        uint64_t maddr, l1m, l1e, p;

        vcpu_group_pause(&d->group);
        rc = gm_translate(&d->vcpus[0], d->start_info_va, &maddr, &l1m, &l1e);
        vcpu_group_resume(&d->group);
        if (rc < 0)
            goto fail;
        p = maddr >> PAGE_SHIFT < d->hv->frames.nr_frames
                ? m2p_of(d, maddr >> PAGE_SHIFT)
                : ~0ULL;
        if (p >= d->nr_pages) {
            rc = -ERANGE;
            goto fail;
        }
        src->dom.start_info_pfn = p;
    }
    src->pause = src_pause;
    src->resume = src_resume;
    src->harvest = src_harvest;
    src->pfn_to_mfn = src_pfn_to_mfn;
    src->mfn_to_pfn = src_mfn_to_pfn;
    src->types = src_types;
    src->page = src_page;
    src->hole = src_hole;
    src->p2m_frames = src_p2m_frames;
    src->vcpu = src_vcpu;
    src->shared_info = src_shared_info;
    src->devices = src_devices;
    src->devices_quiesce = src_devices_quiesce;
    return 0;
fail:
    free(s->list_mfns);
    free(s);
    src->arg = NULL;
    return rc;
}

void hv_domain_source_fini(struct migrate_source *src)
{
    struct hv_msrc *s = src->arg;

    if (src->dom.kind == STREAM_DOMAIN_HVM) {
        src->arg = NULL; /* the domain itself: nothing allocated */
        return;
    }
    if (s) {
        free(s->list_mfns);
        free(s);
    }
    src->arg = NULL;
}

void hv_domain_test_save_unnormalisable(struct migrate_source *src,
                                        uint64_t mfn)
{
    struct hv_msrc *s = src->arg;

    s->test_lie = true;
    s->lie_mfn = mfn;
}

/* ================================================================ target */

struct hv_mtgt {
    struct hv *hv;
    struct domain *d;
    unsigned slot;
    int console_fd;
    bool finished;
};

static int tgt_create(void *arg, const struct stream_domain *dom, char *err,
                      size_t errlen)
{
    struct hv_mtgt *t = arg;
    struct hv_domain_config cfg = {
        .mem_mib = dom->nr_pages >> 8,
        .nr_vcpus = dom->nr_vcpus,
        .console_fd = t->console_fd,
    };
    int r;

    if (dom->nr_pages % 256 || dom->nr_vcpus > HV_MAX_VCPUS) {
        errf(err, errlen, "a domain of %llu pages and %u vCPUs: memvisor "
                          "makes whole MiB and at most %u vCPUs",
             (unsigned long long)dom->nr_pages, dom->nr_vcpus, HV_MAX_VCPUS);
        return -EINVAL;
    }
    if (dom->kind == STREAM_DOMAIN_HVM)
        cfg.kind = HV_DOMAIN_HVM;
    if ((r = domain_claim(t->hv, &cfg, &t->d, &t->slot, err, errlen)) < 0)
        return r;
    if ((r = domain_init_basics(t->d, t->hv, t->slot, &cfg, err, errlen)) < 0)
        return r;
    if (dom->kind == STREAM_DOMAIN_HVM)
        return hvm_restore_create(t->d, dom->nr_pages << PAGE_SHIFT, err,
                                  errlen);
    if ((r = domain_pv_init(t->d, err, errlen)) < 0)
        return r;
    /* the shared info frame first: every pfn's frame then differs from
     * the one a fresh build of the same domain would have used */
    if ((r = frames_alloc(&t->hv->frames, t->d->id, 0,
                          &t->d->shared_info_mfn)) < 0) {
        errf(err, errlen, "shared info frame: %s", strerror(-r));
        return r;
    }
    t->d->p2m_va = dom->p2m_va;
    t->d->start_info_va = dom->start_info_va;
    return 0;
}

static int tgt_populate(void *arg, uint64_t pfn, uint64_t *mfn)
{
    struct hv_mtgt *t = arg;
    mfn_t m;
    int r;

    if (t->d->hvm) /* its RAM is there from the start: the gfn's frame */
        return hv_domain_hvm_gfn(t->d, pfn, mfn);
    if ((r = frames_alloc(&t->hv->frames, t->d->id, 0, &m)) < 0)
        return r;
    *mfn = mfn_x(m);
    return 0;
}

static void *tgt_page(void *arg, uint64_t mfn)
{
    struct hv_mtgt *t = arg;
    return frames_ptr(&t->hv->frames, _mfn(mfn));
}

static uint64_t tgt_shared_info_mfn(void *arg)
{
    struct hv_mtgt *t = arg;
    return mfn_x(t->d->shared_info_mfn);
}

static int set_m2p(struct domain *d, const uint64_t *p2m, uint64_t nr)
{
    struct mmu_update req[256];
    uint32_t n = 0;

    for (uint64_t pfn = 0; pfn <= nr; pfn++) {
        if (pfn < nr && p2m[pfn] != MIGRATE_NO_MFN) {
            req[n].ptr = (p2m[pfn] << PAGE_SHIFT) | MMU_MACHPHYS_UPDATE;
            req[n++].val = pfn;
        }
        if (n == 256 || (pfn == nr && n)) {
            uint32_t done = 0;
            int rc;

            do
                rc = pv_mmu_update(d->vcpus[0].pv, req, n, &done, DOMID_SELF);
            while (rc == -ERESTART);
            if (rc < 0)
                return rc;
            n = 0;
        }
    }
    return 0;
}

static int pv_op(struct pv_vcpu *v, unsigned cmd, uint64_t mfn)
{
    struct mmuext_op op = {.cmd = cmd, .arg1.mfn = mfn};
    uint32_t done = 0;
    int rc;

    do
        rc = pv_mmuext_op(v, &op, 1, &done, DOMID_SELF);
    while (rc == -ERESTART);
    return rc;
}

/* A guest address the guest itself could have set: canonical, outside
 * the hypervisor's range (as set_trap_table, iret and VCPUOP_initialise
 * demand). */
static bool guest_va_ok(uint64_t va)
{
    return x86_canonical(va) &&
           !(va >= HYPERVISOR_VIRT_START && va < HYPERVISOR_VIRT_END);
}

/* What a stream says of a vCPU, checked as the hypercalls that set the
 * same state check it: -EINVAL with the field in err. */
static int vcpu_check(const struct stream_pv_vcpu *v, char *err,
                      size_t errlen)
{
    const char *bad = NULL;

    if (!guest_va_ok(v->rip))
        bad = "rip";
    else if (!x86_canonical(v->rsp))
        bad = "rsp";
    else if (!x86_canonical(v->fs_base) || !x86_canonical(v->gs_base) ||
             !x86_canonical(v->gs_base_kernel) ||
             !x86_canonical(v->gs_base_user))
        bad = "a segment base";
    else if ((v->event_cb && !guest_va_ok(v->event_cb)) ||
             (v->failsafe_cb && !guest_va_ok(v->failsafe_cb)) ||
             (v->syscall_cb && !guest_va_ok(v->syscall_cb)))
        bad = "a callback";
    else if (v->ldt_ents > PV_LDT_MAX_ENTS || (v->ldt_base & (PAGE_SIZE - 1)) ||
             !x86_canonical(v->ldt_base))
        bad = "the LDT";
    for (unsigned k = 0; k < 256 && !bad; k++)
        if ((v->traps[k].address && !guest_va_ok(v->traps[k].address)) ||
            (v->traps[k].flags & ~7u))
            bad = "a trap entry";
    if (!bad)
        return 0;
    errf(err, errlen, "vCPU %u: %s the guest could not have set", v->id, bad);
    return -EINVAL;
}

static int vcpu_restore(struct domain *d, const struct stream_pv_vcpu *v)
{
    struct pvcpu *pc = &d->vcpus[v->id];
    struct kvm_vcpu_regs regs;
    struct kvm_vcpu_sregs sregs;
    struct shim_frame to = {
        .rip = v->rip,
        .cs = SHIM_SEL_CS3,
        .rflags = (v->rflags & SHIM_RFLAGS_GUEST_MASK) | X86_EFLAGS_FIXED |
                  X86_EFLAGS_IF,
        .rsp = v->rsp,
        .ss = SHIM_SEL_DS3,
    };
    mfn_t cr3;

    for (unsigned k = 0; k < 256; k++) {
        pc->traps[k].address = v->traps[k].address;
        pc->traps[k].flags = v->traps[k].flags;
    }
    pc->kernel_ss = v->kernel_ss;
    pc->kernel_sp = v->kernel_sp;
    pc->event_cb = v->event_cb;
    pc->failsafe_cb = v->failsafe_cb;
    pc->syscall_cb = v->syscall_cb;
    pc->fs_base = v->fs_base;
    pc->gs_base_kernel = v->gs_base_kernel;
    pc->gs_base_user = v->gs_base_user;
    pc->vm_assist = v->vm_assist;
    pc->kernel_mode = v->flags & STREAM_VCPU_KERNEL_MODE;
    pc->fpu_ts = v->flags & STREAM_VCPU_FPU_TS;
    pc->pv->ldt_base = v->ldt_base;
    pc->pv->ldt_ents = v->ldt_ents;
    pc->pv->cont_pending = v->flags & STREAM_VCPU_CONT_PENDING;
    pc->pv->cont_rc = v->cont_rc;
    cr3 = hc_pv_base(pc, !pc->kernel_mode);
    if (mfn_eq(cr3, INVALID_MFN))
        cr3 = hc_pv_base(pc, false);
    if (kvm_vcpu_get_sregs(&pc->vcpu.kvm, &sregs) < 0)
        return -EIO;
    sregs.cr3 = mfn_x(cr3) << PAGE_SHIFT;
    sregs.fs.base = v->fs_base;
    sregs.gs.base = v->gs_base;
    shim_vcpu_start(&d->shim, v->id, &to, &regs);
    regs.rax = v->gpr[STREAM_GPR_RAX];
    regs.rbx = v->gpr[STREAM_GPR_RBX];
    regs.rcx = v->gpr[STREAM_GPR_RCX];
    regs.rdx = v->gpr[STREAM_GPR_RDX];
    regs.rsi = v->gpr[STREAM_GPR_RSI];
    regs.rdi = v->gpr[STREAM_GPR_RDI];
    regs.rbp = v->gpr[STREAM_GPR_RBP];
    regs.r8 = v->gpr[STREAM_GPR_R8];
    regs.r9 = v->gpr[STREAM_GPR_R9];
    regs.r10 = v->gpr[STREAM_GPR_R10];
    regs.r11 = v->gpr[STREAM_GPR_R11];
    regs.r12 = v->gpr[STREAM_GPR_R12];
    regs.r13 = v->gpr[STREAM_GPR_R13];
    regs.r14 = v->gpr[STREAM_GPR_R14];
    regs.r15 = v->gpr[STREAM_GPR_R15];
    if (kvm_vcpu_set_sregs(&pc->vcpu.kvm, &sregs) < 0 ||
        kvm_vcpu_set_regs(&pc->vcpu.kvm, &regs) < 0)
        return -EIO;
    pc->cr3 = sregs.cr3;
    pc->initialised = true;
    if (v->flags & STREAM_VCPU_UP) {
        pc->up = true;
        vcpu_set_online(&pc->vcpu);
    }
    return 0;
}

static int tgt_finish(void *arg, const struct migrate_restored *st, char *err,
                      size_t errlen)
{
    struct hv_mtgt *t = arg;
    struct domain *d = t->d;
    struct frames *f = &t->hv->frames;
    uint64_t nr = st->dom.nr_pages;
    struct start_info *si;
    int rc;

    if (d->hvm) {
        if ((rc = hvm_restore_finish(d, st, err, errlen)) < 0)
            return rc;
        t->finished = true;
        return 0;
    }
    if ((rc = set_m2p(d, st->p2m, nr)) < 0) {
        errf(err, errlen, "m2p: %s", strerror(-rc));
        return rc;
    }
    /* the guest's p2m list, in its own frames */
    for (uint64_t pfn = 0; pfn < nr; pfn++) {
        uint64_t *list = frames_ptr(f, _mfn(st->p2m[st->p2m_frames[pfn / 512]]));
        list[pfn % 512] = st->p2m[pfn]; /* ~0 for a pfn without a frame */
    }
    if (st->p2m[st->dom.start_info_pfn] == MIGRATE_NO_MFN) {
        errf(err, errlen, "the start_info page did not arrive");
        return -EPROTO;
    }
    si = frames_ptr(f, _mfn(st->p2m[st->dom.start_info_pfn]));
    si->shared_info = mfn_x(d->shared_info_mfn) << PAGE_SHIFT;
    /* the ring pages travelled as pfns (docs/stream.md) */
    {
        uint64_t *ring[2] = {&si->store_mfn, &si->console.domU.mfn};
        mfn_t *held[2] = {&d->store_mfn, &d->cons_mfn};

        for (unsigned k = 0; k < 2; k++) {
            if (!*ring[k])
                continue;
            if (*ring[k] >= nr || st->p2m[*ring[k]] == MIGRATE_NO_MFN ||
                st->types[*ring[k]] != STREAM_TYPE_NOTAB) {
                errf(err, errlen, "start_info's ring at pfn %#llx did not "
                                  "arrive as a plain page",
                     (unsigned long long)*ring[k]);
                return -EPROTO;
            }
            *ring[k] = st->p2m[*ring[k]];
            /* held writable while memvisor writes it, as the builder does */
            if ((rc = pv_get_writable(d->vcpus[0].pv, _mfn(*ring[k]))) < 0) {
                errf(err, errlen, "ring page: %s", strerror(-rc));
                return rc;
            }
            *held[k] = _mfn(*ring[k]);
        }
        si->store_evtchn = d->store_port;
        si->console.domU.evtchn = d->cons_port;
    }
    memcpy(frames_ptr(f, d->shared_info_mfn), st->shared_info, 4096);
    /* validate and pin again what was pinned, every page localised */
    for (unsigned level = 1; level <= 4; level++)
        for (uint64_t pfn = 0; pfn < nr; pfn++) {
            if (st->types[pfn] != (STREAM_TYPE_PINNED | level))
                continue;
            rc = pv_op(d->vcpus[0].pv, MMUEXT_PIN_L1_TABLE + level - 1,
                       st->p2m[pfn]);
            if (rc < 0) {
                errf(err, errlen, "pinning pfn %#llx as an L%u table: %s",
                     (unsigned long long)pfn, level, strerror(-rc));
                return rc;
            }
        }
    for (unsigned i = 0; i < st->dom.nr_vcpus; i++) {
        const struct stream_pv_vcpu *v = &st->vcpus[i];

        if (!(v->flags & STREAM_VCPU_INITIALISED))
            continue;
        if ((rc = vcpu_check(v, err, errlen)) < 0)
            return rc;
        rc = pv_op(d->vcpus[i].pv, MMUEXT_NEW_BASEPTR, v->base_pfn);
        if (rc == 0 && v->user_base_pfn != STREAM_PFN_NONE)
            rc = pv_op(d->vcpus[i].pv, MMUEXT_NEW_USER_BASEPTR,
                       v->user_base_pfn);
        if (rc < 0) {
            errf(err, errlen, "vCPU %u: base pointers: %s", i, strerror(-rc));
            return rc;
        }
    }
    d->l4_mfn = d->vcpus[0].pv->base;
    if (mfn_eq(d->l4_mfn, INVALID_MFN)) {
        errf(err, errlen, "vCPU 0 has no base pointer");
        return -EPROTO;
    }
    if ((rc = domain_vm_init(d, err, errlen)) < 0)
        return rc;
    if ((rc = domain_vcpus_init(d, err, errlen)) < 0)
        return rc;
    /* time starts again here (system time is not carried yet) */
    hv_time_init(d);
    hv_wallclock_update(d);
    for (unsigned i = 0; i < d->nr_vcpus; i++)
        hv_time_update(&d->vcpus[i]);
    for (unsigned i = 0; i < st->dom.nr_vcpus; i++) {
        if (!(st->vcpus[i].flags & STREAM_VCPU_INITIALISED))
            continue;
        if ((rc = vcpu_restore(d, &st->vcpus[i])) < 0) {
            errf(err, errlen, "vCPU %u: %s", i, strerror(-rc));
            return rc;
        }
    }
    t->finished = true;
    return 0;
}

static void tgt_abort(void *arg)
{
    struct hv_mtgt *t = arg;

    if (!t->d)
        return;
    domain_discard(t->d, t->slot);
    t->d = NULL;
}

/* A DEVICE record: kept in the domain for the device model that will
 * take it (hv_domain_dm_restore_states()). */
static int tgt_device(void *arg, const struct stream_device *dv,
                      const uint8_t *state, uint32_t len, char *err,
                      size_t errlen)
{
    struct hv_mtgt *t = arg;
    struct domain *d = t->d;

    if (dv->kind != STREAM_DEVICE_DM || dv->version != 1 ||
        dv->instance >= IOREQ_MAX_SERVERS || len > DM_STATE_MAX) {
        errf(err, errlen, "device-model state of kind %u version %u for "
                          "device model %u (%u bytes): not one memvisor "
                          "can restore",
             dv->kind, dv->version, dv->instance, len);
        return -EPROTO;
    }
    if (d->mig_dm_state[dv->instance]) {
        errf(err, errlen, "two states for device model %u", dv->instance);
        return -EPROTO;
    }
    d->mig_dm_state[dv->instance] = malloc(len ? len : 1);
    if (!d->mig_dm_state[dv->instance])
        return -ENOMEM;
    memcpy(d->mig_dm_state[dv->instance], state, len);
    d->mig_dm_len[dv->instance] = len;
    return 0;
}

unsigned hv_domain_dm_pending(struct domain *d)
{
    unsigned n = 0;

    for (unsigned i = 0; i < IOREQ_MAX_SERVERS; i++)
        n += d->mig_dm_state[i] != NULL;
    return n;
}

int hv_domain_dm_restore_states(struct domain *d, char *err, size_t errlen)
{
    for (unsigned i = 0; i < IOREQ_MAX_SERVERS; i++) {
        enum ioreq_state st;
        int rc;

        if (!d->mig_dm_state[i])
            continue;
        if (!d->created_io || ioreq_server_info(&d->io, i, &st, NULL, NULL,
                                                0) < 0 ||
            st != IOREQ_LIVE) {
            errf(err, errlen, "no live device model %u to take its state", i);
            return -ENODEV;
        }
        rc = ioreq_restore(&d->io, i, d->mig_dm_state[i], d->mig_dm_len[i]);
        if (rc < 0) {
            errf(err, errlen, "device model %u refused its state: %s", i,
                 strerror(-rc));
            return rc;
        }
        free(d->mig_dm_state[i]);
        d->mig_dm_state[i] = NULL;
    }
    return 0;
}

void hv_migrate_teardown(struct domain *d)
{
    for (unsigned i = 0; i < IOREQ_MAX_SERVERS; i++) {
        free(d->mig_dm_state[i]);
        d->mig_dm_state[i] = NULL;
    }
}

int hv_domain_target_init(struct hv *hv, int console_fd,
                          struct migrate_target *tgt)
{
    struct hv_mtgt *t = calloc(1, sizeof(*t));

    memset(tgt, 0, sizeof(*tgt));
    if (!t)
        return -ENOMEM;
    t->hv = hv;
    t->console_fd = console_fd;
    tgt->arg = t;
    tgt->create = tgt_create;
    tgt->populate = tgt_populate;
    tgt->page = tgt_page;
    tgt->shared_info_mfn = tgt_shared_info_mfn;
    tgt->finish = tgt_finish;
    tgt->abort = tgt_abort;
    tgt->device = tgt_device;
    return 0;
}

struct domain *hv_domain_target_fini(struct migrate_target *tgt)
{
    struct hv_mtgt *t = tgt->arg;
    struct domain *d = NULL;

    if (!t)
        return NULL;
    if (t->d && t->finished)
        d = t->d;
    else if (t->d)
        domain_discard(t->d, t->slot);
    free(t);
    tgt->arg = NULL;
    return d;
}

int hv_domain_p2m_lookup(struct domain *d, uint64_t pfn, uint64_t *mfn)
{
    struct hv_msrc s = {.d = d, .nframes = (d->nr_pages + 511) / 512};
    uint64_t maddr, l1m, l1e;
    int rc = 0;

    if (pfn >= d->nr_pages)
        return -ENOENT;
    s.list_mfns = calloc(s.nframes, 8);
    if (!s.list_mfns)
        return -ENOMEM;
    /* only the list frame holding pfn is needed */
    bool paused = !vcpu_group_stopped(&d->group);
    if (paused)
        vcpu_group_pause(&d->group);
    rc = gm_translate(&d->vcpus[0], d->p2m_va + (pfn / 512) * PAGE_SIZE,
                      &maddr, &l1m, &l1e);
    if (paused)
        vcpu_group_resume(&d->group);
    if (rc == 0) {
        s.list_mfns[pfn / 512] = maddr >> PAGE_SHIFT;
        rc = src_pfn_to_mfn(&s, pfn, mfn);
    }
    free(s.list_mfns);
    return rc;
}
