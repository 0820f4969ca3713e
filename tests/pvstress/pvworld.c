/*
 * pvworld.c - see pvworld.h.  The reference model deliberately reads only
 * the pool (table contents) and what the operations returned; it never
 * looks at nr_validated, partial_flags or the pv module's own state.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pvworld.h"

#define M2P_UNKNOWN (~0ULL - 1)
#define LEVEL_WRITABLE 7

void world_fail(struct world *w, const char *fmt, ...)
{
    va_list ap;

    if (!w->failures++) {
        va_start(ap, fmt);
        vsnprintf(w->first_failure, sizeof(w->first_failure), fmt, ap);
        va_end(ap);
    }
}

/*
 * What the hypervisor layer must do when a frame is freed (frame.h's free
 * hook): no vCPU of any domain may keep a writable translation of it,
 * since its next owner may make it a page table and that owner's type
 * change flushes only its own vCPUs.  pv.h has no call for this, so the
 * hook clears the translations directly (they are atomics).
 */
static void world_free_hook(void *arg, mfn_t mfn, domid_t owner)
{
    struct world *w = arg;

    (void)owner;
    for (unsigned d = 0; d < w->nr_doms; d++)
        for (unsigned v = 0; v < w->nr_vcpus; v++)
            for (unsigned i = 0; i < PV_WTLB_SIZE; i++) {
                uint64_t m = mfn_x(mfn);

                atomic_compare_exchange_strong(&w->dom[d].vcpu[v].wtlb[i], &m,
                                               PV_WTLB_EMPTY);
            }
}

int world_init(struct world *w, uint64_t pool_frames, unsigned nr_doms,
               unsigned nr_vcpus, uint64_t budget)
{
    unsigned d, v;
    uint64_t n = pool_frames;
    int rc;

    memset(w, 0, sizeof(*w));
    if (nr_doms > W_MAX_DOMS || nr_vcpus > W_MAX_VCPUS)
        return -EINVAL;
    rc = frames_init(&w->f, pool_frames);
    if (rc)
        return rc;
    w->nr_doms = nr_doms;
    w->nr_vcpus = nr_vcpus;
    if (!getenv("MEMVISOR_NO_FREE_FLUSH")) {
        w->f.free_hook = world_free_hook;
        w->f.free_hook_arg = w;
    }
    w->pinned = calloc(n, 1);
    w->allocated = calloc(n, 1);
    w->given_to = calloc(n, sizeof(*w->given_to));
    w->m2p = calloc(n, sizeof(*w->m2p));
    w->gen = calloc(n, sizeof(*w->gen));
    w->typ = calloc(n, sizeof(*w->typ));
    w->level = calloc(n, 1);
    w->seen = calloc(n, 1);
    if (!w->pinned || !w->allocated || !w->given_to || !w->m2p || !w->gen ||
        !w->typ || !w->level || !w->seen)
        return -ENOMEM;
    for (uint64_t m = 0; m < n; m++) {
        w->given_to[m] = DOMID_NONE;
        w->m2p[m] = M2P_UNKNOWN;
    }
    for (d = 0; d < nr_doms; d++) {
        struct world_dom *wd = &w->dom[d];

        rc = frames_domain_add(&w->f, (domid_t)(d + 1), budget);
        if (rc)
            return rc;
        rc = pv_domain_init(&wd->pv, &w->f, (domid_t)(d + 1));
        if (rc)
            return rc;
        for (v = 0; v < nr_vcpus; v++) {
            rc = pv_vcpu_init(&wd->vcpu[v], &wd->pv);
            if (rc)
                return rc;
            wd->base[v] = INVALID_MFN;
            wd->user_base[v] = INVALID_MFN;
        }
    }
    return 0;
}

uint64_t world_fini(struct world *w)
{
    unsigned d;

    for (d = 0; d < w->nr_doms; d++) {
        struct pv_domain *pd = &w->dom[d].pv;
        int rc;
        unsigned guard = 0;

        /* Give back whatever a test left pending, then tear down. */
        do {
            rc = pv_domain_relinquish(pd);
        } while (rc == -ERESTART && ++guard < 1000000);
        if (rc)
            world_fail(w, "d%u: relinquish failed: %d", d + 1, rc);
        if (frames_domain_tot(&w->f, (domid_t)(d + 1)))
            world_fail(w,
                       "d%u: still owns %" PRIu64 " frames after "
                       "relinquish",
                       d + 1, frames_domain_tot(&w->f, (domid_t)(d + 1)));
        pv_domain_fini(pd);
    }
    if (frames_check(&w->f))
        world_fail(w, "frames_check failed after relinquish");
    for (d = 0; d < w->nr_doms; d++)
        if (frames_domain_remove(&w->f, (domid_t)(d + 1)) != 0)
            world_fail(w, "d%u: cannot be removed", d + 1);
    frames_fini(&w->f);
    free(w->pinned);
    free(w->allocated);
    free(w->given_to);
    free(w->m2p);
    free(w->gen);
    free(w->typ);
    free(w->level);
    free(w->seen);
    return w->failures;
}

struct call *world_call(struct world *w, unsigned d, unsigned v)
{
    struct call *c = &w->dom[d].call[v];

    if (c->kind == CALL_NONE)
        memset(c, 0, sizeof(*c));
    return c;
}

void call_mmu(struct call *c, mfn_t table, unsigned idx, unsigned cmd,
              uint64_t val)
{
    c->kind = CALL_MMU;
    c->mmu[c->count].ptr = (frames_offset(table) + idx * 8ULL) | cmd;
    c->mmu[c->count].val = val;
    c->count++;
}

void call_ext(struct call *c, unsigned cmd, mfn_t mfn)
{
    c->kind = CALL_MMUEXT;
    c->ext[c->count] = (struct mmuext_op){.cmd = cmd, .arg1.mfn = mfn_x(mfn)};
    c->count++;
}

void call_mem(struct call *c, unsigned cmd, uint32_t order, uint64_t extent)
{
    c->kind = CALL_MEMORY;
    c->cmd = cmd;
    c->res.extent_start = c->extents;
    c->res.extent_order = order;
    c->res.domid = DOMID_SELF;
    c->extents[c->count] = extent;
    c->in[c->count] = extent;
    c->count++;
    c->res.nr_extents = c->count;
}

bool world_pending(struct world *w, unsigned d, unsigned v)
{
    return w->dom[d].call[v].kind != CALL_NONE;
}

/* The model learns what request i of a call did, once it is done. */
static void model_ext(struct world *w, unsigned d, unsigned v,
                      const struct mmuext_op *op)
{
    uint64_t m = op->arg1.mfn;

    if (m >= w->f.nr_frames)
        return;
    switch (op->cmd) {
    case MMUEXT_PIN_L1_TABLE:
    case MMUEXT_PIN_L2_TABLE:
    case MMUEXT_PIN_L3_TABLE:
    case MMUEXT_PIN_L4_TABLE:
        w->pinned[m] = (uint8_t)(op->cmd - MMUEXT_PIN_L1_TABLE + 1);
        break;
    case MMUEXT_UNPIN_TABLE:
        w->pinned[m] = 0;
        break;
    case MMUEXT_NEW_BASEPTR:
        w->dom[d].base[v] = _mfn(m);
        break;
    case MMUEXT_NEW_USER_BASEPTR: /* Xen's ABI: mfn 0 means none */
        w->dom[d].user_base[v] = m ? _mfn(m) : INVALID_MFN;
        break;
    default:
        break;
    }
}

static void model_mmu(struct world *w, const struct mmu_update *u)
{
    uint64_t m = u->ptr >> PAGE_SHIFT;

    if ((u->ptr & 7) == MMU_MACHPHYS_UPDATE && m < w->f.nr_frames)
        w->m2p[m] = u->val;
}

static void model_extent(struct world *w, unsigned d, const struct call *c,
                         unsigned i)
{
    uint64_t n = 1ULL << c->res.extent_order, k, m;
    unsigned cmd = (unsigned)(c->cmd & MEMOP_CMD_MASK);

    for (k = 0; k < n; k++) {
        if (cmd == XENMEM_decrease_reservation) {
            m = c->in[i] + k;
            if (m < w->f.nr_frames)
                w->allocated[m] = 0;
            continue;
        }
        m = c->extents[i] + k;
        if (m >= w->f.nr_frames) {
            world_fail(
                w, "d%u: extent %u returned mfn %#" PRIx64 " outside the pool",
                d + 1, i, m);
            continue;
        }
        w->allocated[m] = 1;
        w->given_to[m] = (domid_t)(d + 1);
        w->m2p[m] = cmd == XENMEM_populate_physmap ? c->in[i] + k : M2P_UNKNOWN;
    }
}

/* Honest-type rule against the frame table at this instant (P6). */
static void check_pfinfo(struct world *w, unsigned d, const uint64_t *in,
                         const uint64_t *out, unsigned n)
{
    domid_t id = (domid_t)(d + 1);

    for (unsigned i = 0; i < n; i++) {
        uint64_t m = in[i], tw, want;

        if (m >= w->f.nr_frames || frame_owner(&w->f, _mfn(m)) != id) {
            want = PV_PFINFO_XTAB;
        } else {
            tw = frame_type_word(&w->f, _mfn(m));
            want = PV_PFINFO_NOTAB;
            if (frame_type_level(tw) &&
                (tw & (FRAME_TYPE_PINNED | FRAME_TYPE_VALIDATED)))
                want = (uint64_t)frame_type_level(tw) << PV_PFINFO_LTAB_SHIFT;
            if (frame_type_level(tw) && (tw & FRAME_TYPE_PINNED))
                want |= PV_PFINFO_LPINTAB;
        }
        if ((out[i] & PV_PFINFO_LTAB_MASK) != want)
            world_fail(w,
                       "d%u: pageframe info of mfn %#" PRIx64 " is %#" PRIx64
                       ", want %#" PRIx64 " (type word %#" PRIx64 ")",
                       id, m, out[i] & PV_PFINFO_LTAB_MASK, want,
                       m < w->f.nr_frames ? frame_type_word(&w->f, _mfn(m))
                                          : 0);
    }
}

int world_step(struct world *w, unsigned d, unsigned v, uint64_t preempt_n)
{
    struct world_dom *wd = &w->dom[d];
    struct call *c = &wd->call[v];
    struct pv_vcpu *vc = &wd->vcpu[v];
    uint32_t prev = c->done, i;
    uint64_t arr[W_MAX_BATCH];
    int rc = 0;
    long r;

    if (c->kind == CALL_NONE)
        return 0;
    w->steps++;
    c->issues++;
    /*
     * Repeat: once a call was preempted, the drain it runs before returning
     * is preempted again k checks later, as a pending preemption would be.
     */
    pv_vcpu_set_preempt(vc, preempt_n, preempt_n != UINT64_MAX);
    switch (c->kind) {
    case CALL_MMU:
        rc = pv_mmu_update(vc, c->mmu, c->count, &c->done, DOMID_SELF);
        for (i = prev; i < c->done && i < c->count; i++)
            model_mmu(w, &c->mmu[i]);
        break;
    case CALL_MMUEXT:
        rc = pv_mmuext_op(vc, c->ext, c->count, &c->done, DOMID_SELF);
        for (i = prev; i < c->done && i < c->count; i++)
            model_ext(w, d, v, &c->ext[i]);
        break;
    case CALL_MEMORY:
        r = pv_memory_op(vc, &c->cmd, &c->res);
        if (r == -ERESTART) {
            rc = -ERESTART;
            c->done = (uint32_t)(c->cmd >> MEMOP_EXTENT_SHIFT);
        } else if (r >= 0) {
            c->done = (uint32_t)r;
            rc = c->done == c->count ? 0 : -EINVAL;
        } else {
            rc = (int)r;
        }
        if (c->done > c->count) {
            world_fail(w, "d%u v%u: memory_op reports %u of %u extents done",
                       d + 1, v, c->done, c->count);
            c->done = c->count;
        }
        for (i = prev; i < c->done; i++)
            model_extent(w, d, c, i);
        break;
    case CALL_UVA:
        rc = pv_update_va_mapping(vc, c->va, c->val, c->flags);
        break;
    case CALL_TLB:
        rc = pv_vcpu_tlb_fill(vc, _mfn(c->in[0]));
        break;
    case CALL_PFINFO:
        memcpy(arr, c->in, sizeof(arr));
        rc = pv_pageframe_info(&wd->pv, arr, c->count);
        if (rc == 0)
            check_pfinfo(w, d, c->in, arr, c->count);
        break;
    default:
        break;
    }
    w->last_checks = vc->preempt_count;
    pv_vcpu_set_preempt(vc, 0, false);
    if (rc == -ERESTART) {
        w->restarts++;
        return rc;
    }
    if (c->done < prev && c->kind != CALL_UVA && c->kind != CALL_PFINFO &&
        c->kind != CALL_TLB)
        world_fail(w, "d%u v%u: done went back from %u to %u", d + 1, v, prev,
                   c->done);
    if (rc)
        w->err_by_kind[c->kind]++;
    else
        w->ok_by_kind[c->kind]++;
    c->rc = rc;
    c->kind = CALL_NONE;
    return rc;
}

int world_run(struct world *w, unsigned d, unsigned v)
{
    int rc;
    unsigned guard = 0;

    do {
        rc = world_step(w, d, v, 0);
    } while (rc == -ERESTART && ++guard < 100000);
    return rc;
}

bool world_quiescent(struct world *w, unsigned d)
{
    struct world_dom *wd = &w->dom[d];

    for (unsigned v = 0; v < w->nr_vcpus; v++) {
        if (wd->call[v].kind != CALL_NONE)
            return false;
        if (!mfn_eq(wd->vcpu[v].old_table, INVALID_MFN) ||
            wd->vcpu[v].cont_pending)
            return false;
    }
    return true;
}

unsigned world_owned(struct world *w, unsigned d, mfn_t *out, unsigned max)
{
    unsigned n = 0;
    domid_t id = (domid_t)(d + 1);

    for (uint64_t m = 0; m < w->f.nr_frames && n < max; m++)
        if (frame_owner(&w->f, _mfn(m)) == id)
            out[n++] = _mfn(m);
    return n;
}

unsigned world_teardown(struct world *w, unsigned d, uint64_t preempt_n)
{
    struct world_dom *wd = &w->dom[d];
    domid_t id = (domid_t)(d + 1);
    uint64_t before = w->failures, m;
    unsigned v, guard = 0;
    int rc;

    bool model_off = w->model_off;

    /* The vCPUs are stopped: their preempted calls are never re-issued. */
    for (v = 0; v < w->nr_vcpus; v++)
        wd->call[v].kind = CALL_NONE;
    /* The model knows nothing of a half-done teardown: audits only. */
    w->model_off = true;
    do {
        pv_vcpu_set_preempt(&wd->vcpu[0], preempt_n, true);
        rc = pv_domain_relinquish(&wd->pv);
        w->steps++;
        if (rc == -ERESTART && world_check_dom(w, d))
            break;
    } while (rc == -ERESTART && ++guard < 100000);
    pv_vcpu_set_preempt(&wd->vcpu[0], 0, false);
    if (rc)
        world_fail(w, "d%u: relinquish: %d", id, rc);
    if (frames_domain_tot(&w->f, id))
        world_fail(w, "d%u: %" PRIu64 " frames left after relinquish", id,
                   frames_domain_tot(&w->f, id));
    if (frames_check(&w->f))
        world_fail(w, "frames_check failed after relinquish of d%u", id);
    /* A new domain with the same id. */
    pv_domain_fini(&wd->pv);
    if (pv_domain_init(&wd->pv, &w->f, id) != 0)
        world_fail(w, "d%u: init after relinquish failed", id);
    for (v = 0; v < w->nr_vcpus; v++) {
        if (pv_vcpu_init(&wd->vcpu[v], &wd->pv) != 0)
            world_fail(w, "d%u: vCPU init failed", id);
        wd->base[v] = wd->user_base[v] = INVALID_MFN;
    }
    for (m = 0; m < w->f.nr_frames; m++)
        if (w->given_to[m] == id) {
            w->allocated[m] = 0;
            w->pinned[m] = 0;
            w->m2p[m] = M2P_UNKNOWN;
        }
    w->model_off = model_off;
    world_check_dom(w, d);
    w->teardowns++;
    return (unsigned)(w->failures - before);
}

/* ------------------------------------------------------------- model */

static void visit(struct world *w, unsigned d, uint64_t m, unsigned level)
{
    const uint64_t *e;
    unsigned i;

    if (w->level[m] == LEVEL_WRITABLE) {
        world_fail(w,
                   "d%u model: mfn %#" PRIx64 " is mapped RW and used "
                   "as an L%u table",
                   d + 1, m, level);
        return;
    }
    if (w->seen[m] == 2) {
        world_fail(w,
                   "d%u model: partial mfn %#" PRIx64 " is referenced "
                   "as a validated L%u",
                   d + 1, m, level);
        return;
    }
    if (w->seen[m]) {
        if (w->level[m] != level)
            world_fail(w, "d%u model: mfn %#" PRIx64 " used as L%u and L%u",
                       d + 1, m, w->level[m], level);
        return;
    }
    w->seen[m] = 1;
    w->level[m] = (uint8_t)level;
    e = frames_ptr(&w->f, _mfn(m));
    for (i = 0; i < PT_ENTRIES; i++) {
        uint64_t t;

        if (level == 4 && i >= PV_HV_L4_FIRST &&
            i < PV_HV_L4_FIRST + PV_HV_L4_NR)
            continue;
        if (!(e[i] & PTE_P))
            continue;
        t = mfn_x(pte_mfn(e[i]));
        if (t >= w->f.nr_frames) {
            world_fail(w,
                       "d%u model: L%u %#" PRIx64 "[%u] points outside "
                       "the pool",
                       d + 1, level, m, i);
            continue;
        }
        w->gen[t]++;
        if (level == 1) {
            if (!(e[i] & PTE_RW))
                continue;
            w->typ[t]++;
            if (w->seen[t])
                world_fail(w,
                           "d%u model: L1 %#" PRIx64 "[%u] maps table %#" PRIx64
                           " RW",
                           d + 1, m, i, t);
            w->level[t] = LEVEL_WRITABLE;
            continue;
        }
        w->typ[t]++;
        visit(w, d, t, level - 1);
    }
}

static void root(struct world *w, unsigned d, uint64_t m, unsigned level)
{
    if (m >= w->f.nr_frames) {
        world_fail(w, "d%u model: root %#" PRIx64 " outside the pool", d + 1,
                   m);
        return;
    }
    w->gen[m]++;
    w->typ[m]++;
    visit(w, d, m, level);
}

unsigned world_model_check(struct world *w, unsigned d)
{
    uint64_t n = w->f.nr_frames, m, owned = 0, before = w->failures;
    domid_t id = (domid_t)(d + 1);
    struct world_dom *wd = &w->dom[d];
    uint64_t q[PV_PFINFO_MAX], qm[PV_PFINFO_MAX];
    unsigned nq = 0;

    w->model_checks++;
    memset(w->gen, 0, n * sizeof(*w->gen));
    memset(w->typ, 0, n * sizeof(*w->typ));
    memset(w->level, 0, n);
    memset(w->seen, 0, n);
    for (m = 0; m < n; m++) {
        if (w->given_to[m] != id)
            continue;
        if (w->allocated[m])
            w->gen[m]++;
    }
    /*
     * A partial frame nobody is working on is a legal resting state (a
     * continuation may find its parent gone and finish without it): its
     * flag holds one general and one type reference, its entries below the
     * progress point hold theirs, and the entry at the progress point a
     * general reference if marked.  The model trusts only that progress
     * record and recomputes everything else.
     */
    for (m = 0; m < n; m++) {
        uint64_t tw = frame_type_word(&w->f, _mfn(m));
        const struct frame *fr = frames_get_frame(&w->f, _mfn(m));
        const uint64_t *e = frames_ptr(&w->f, _mfn(m));
        unsigned lvl = frame_type_level(tw), i;

        if (w->given_to[m] != id || !(tw & FRAME_TYPE_PARTIAL) || !lvl)
            continue;
        w->partial_seen++;
        w->gen[m]++;
        w->typ[m]++;
        w->seen[m] = 2;
        w->level[m] = (uint8_t)lvl;
        for (i = 0; i <= fr->nr_validated && i < PT_ENTRIES; i++) {
            uint64_t t;

            if ((lvl == 4 && i >= PV_HV_L4_FIRST &&
                 i < PV_HV_L4_FIRST + PV_HV_L4_NR) ||
                !(e[i] & PTE_P))
                continue;
            t = mfn_x(pte_mfn(e[i]));
            if (t >= n)
                continue;
            if (i == fr->nr_validated) {
                if (fr->partial_flags & FRAME_PARTIAL_SET)
                    w->gen[t]++;
                continue;
            }
            w->gen[t]++;
            if (lvl > 1) {
                w->typ[t]++;
                visit(w, d, t, lvl - 1);
            } else if (e[i] & PTE_RW) {
                w->typ[t]++;
                w->level[t] = LEVEL_WRITABLE;
            }
        }
    }
    for (m = 0; m < n; m++)
        if (w->given_to[m] == id && w->pinned[m])
            root(w, d, m, w->pinned[m]);
    for (unsigned v = 0; v < w->nr_vcpus; v++) {
        if (!mfn_eq(wd->base[v], INVALID_MFN))
            root(w, d, mfn_x(wd->base[v]), 4);
        if (!mfn_eq(wd->user_base[v], INVALID_MFN))
            root(w, d, mfn_x(wd->user_base[v]), 4);
    }

    for (m = 0; m < n; m++) {
        uint64_t tw, want_tc;
        domid_t owner = frame_owner(&w->f, _mfn(m));

        if (owner == id)
            owned++;
        if (w->given_to[m] != id && !w->gen[m])
            continue;
        if (w->gen[m] && owner != id) {
            world_fail(w,
                       "d%u model: mfn %#" PRIx64 " is referenced %" PRIu64
                       " times but owned by %u",
                       id, m, w->gen[m], owner);
            continue;
        }
        if (!w->gen[m]) {
            if (owner == id)
                world_fail(w,
                           "d%u model: mfn %#" PRIx64 " has no reference "
                           "left but is still owned (count %" PRIu64 ")",
                           id, m, frame_count(&w->f, _mfn(m)));
            continue;
        }
        if (frame_count(&w->f, _mfn(m)) != w->gen[m])
            world_fail(w,
                       "d%u model: mfn %#" PRIx64 " general count %" PRIu64
                       ", model %" PRIu64,
                       id, m, frame_count(&w->f, _mfn(m)), w->gen[m]);
        tw = frame_type_word(&w->f, _mfn(m));
        want_tc = w->typ[m];
        if ((tw & FRAME_TYPE_COUNT_MASK) != want_tc)
            world_fail(w,
                       "d%u model: mfn %#" PRIx64 " type count %" PRIu64
                       ", model %" PRIu64 " (type word %#" PRIx64 ")",
                       id, m, (uint64_t)(tw & FRAME_TYPE_COUNT_MASK), want_tc,
                       tw);
        if (!!(tw & FRAME_TYPE_PINNED) != !!w->pinned[m])
            world_fail(w, "d%u model: mfn %#" PRIx64 " pin bit %d, model %u",
                       id, m, !!(tw & FRAME_TYPE_PINNED), w->pinned[m]);
        if (w->seen[m] == 2) {
            /* partial: counted above; reported as a plain page */
        } else if (w->seen[m]) {
            if (frame_type_level(tw) != w->level[m] ||
                !(tw & FRAME_TYPE_VALIDATED))
                world_fail(w,
                           "d%u model: mfn %#" PRIx64 " should be a "
                           "validated L%u (type word %#" PRIx64 ")",
                           id, m, w->level[m], tw);
        } else if (frame_type_level(tw) && (tw & FRAME_TYPE_VALIDATED)) {
            world_fail(w,
                       "d%u model: mfn %#" PRIx64 " validated as L%u but "
                       "nothing uses it",
                       id, m, frame_type_level(tw));
        } else if (w->level[m] == LEVEL_WRITABLE &&
                   (tw & FRAME_TYPE_MASK) != FRAME_TYPE_WRITABLE) {
            world_fail(w,
                       "d%u model: mfn %#" PRIx64 " mapped RW but type "
                       "word %#" PRIx64,
                       id, m, tw);
        }
        if (w->m2p[m] != M2P_UNKNOWN && w->allocated[m] &&
            wd->pv.m2p[m] != w->m2p[m])
            world_fail(w,
                       "d%u model: m2p[%#" PRIx64 "] = %#" PRIx64
                       ", model %#" PRIx64,
                       id, m, (uint64_t)wd->pv.m2p[m], w->m2p[m]);
        if (nq < PV_PFINFO_MAX) {
            uint64_t want = PV_PFINFO_NOTAB;

            if (w->seen[m] == 1)
                want = (uint64_t)w->level[m] << PV_PFINFO_LTAB_SHIFT;
            if (w->pinned[m])
                want |= PV_PFINFO_LPINTAB;
            q[nq] = m;
            qm[nq++] = want;
        }
    }
    if (owned != frames_domain_tot(&w->f, id))
        world_fail(w, "d%u model: owns %" PRIu64 " frames, tot_frames %" PRIu64,
                   id, owned, frames_domain_tot(&w->f, id));
    if (nq) {
        uint64_t arr[PV_PFINFO_MAX];

        memcpy(arr, q, nq * sizeof(arr[0]));
        if (pv_pageframe_info(&wd->pv, arr, nq) != 0)
            world_fail(w, "d%u model: pageframe info failed", id);
        else
            for (unsigned i = 0; i < nq; i++)
                if ((arr[i] & PV_PFINFO_LTAB_MASK) != qm[i])
                    world_fail(w,
                               "d%u model: pageframe info of %#" PRIx64
                               " is %#" PRIx64 ", model %#" PRIx64,
                               id, q[i], arr[i] & PV_PFINFO_LTAB_MASK, qm[i]);
    }
    return (unsigned)(w->failures - before);
}

unsigned world_check_dom(struct world *w, unsigned d)
{
    uint64_t before = w->failures;
    struct pv_audit_report rep;
    int rc;

    w->audits++;
    rc = pv_audit(&w->dom[d].pv, &rep);
    w->audit_tables += rep.tables;
    if (rc)
        world_fail(w,
                   "d%u: pv_audit %d: %" PRIu64
                   " errors, first at mfn %#" PRIx64 ": %s",
                   d + 1, rc, rep.errors, mfn_x(rep.first_mfn), rep.first);
    if (!w->model_off && world_quiescent(w, d))
        world_model_check(w, d);
    return (unsigned)(w->failures - before);
}

unsigned world_check(struct world *w)
{
    uint64_t before = w->failures;

    if (frames_check(&w->f))
        world_fail(w, "frames_check failed");
    for (unsigned d = 0; d < w->nr_doms; d++)
        world_check_dom(w, d);
    return (unsigned)(w->failures - before);
}
