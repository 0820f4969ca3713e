/*
 * fuzz_memslot.c - random sequences of p2m/slot operations (populate,
 * remove, retype, move, log-dirty, track, untrack, sync), with failures
 * injected at chosen KVM calls and allocations, against a trivially correct
 * reference model: a per-gfn table of (mfn, type, trackers) and a model of
 * KVM's slot table that enforces KVM's rules (no overlap, no resize, move
 * or READONLY change in place).  After every operation: the p2m equals the
 * model, KVM's slots equal memvisor's (M3), every RAM gfn is in a slot,
 * memslot_check() and dirty_check() pass; a failed operation changed
 * nothing.
 *
 * Input: 4 bytes per operation: kind, a, b, c.
 */
#include <errno.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "memslot/memslot.h"

#define NG 64           /* gfns of the region */
#define NF 64           /* frames */
#define GFN0 16         /* region start */
#define NR_GFNS (GFN0 + 2 * NG)
#define MAXID 64
#define DOM 1

#define CHECK(c)                                                               \
    do {                                                                       \
        if (!(c))                                                              \
            abort();                                                           \
    } while (0)

/* ---- a model of KVM's slot table (the test double at the kvm_ops boundary) */

struct kslot {
    uint32_t flags;
    uint64_t gpa, size, hva;
};

static struct {
    struct kslot s[MAXID];
    int fail_in; /* fail the n-th set_region from now; 0 never */
    bool fired;
} kvm;

static int k_set_region(int fd, const struct kvm_userspace_memory_region *r)
{
    (void)fd;
    if (kvm.fail_in && --kvm.fail_in == 0) {
        kvm.fired = true;
        return -ENOMEM;
    }
    uint32_t id = r->slot;
    if (id >= MAXID)
        return -EINVAL;
    struct kslot *k = &kvm.s[id];
    if (!r->memory_size) {
        if (!k->size)
            return -EINVAL;
        memset(k, 0, sizeof(*k));
        return 0;
    }
    if (k->size) {
        if (k->size != r->memory_size || k->hva != r->userspace_addr ||
            ((k->flags ^ r->flags) & KVM_SLOT_READONLY))
            return -EINVAL;
        if (k->gpa != r->guest_phys_addr)
            return -EINVAL; /* memvisor never issues MOVE */
        k->flags = r->flags;
        return 0;
    }
    for (uint32_t i = 0; i < MAXID; i++)
        if (kvm.s[i].size && r->guest_phys_addr < kvm.s[i].gpa + kvm.s[i].size &&
            kvm.s[i].gpa < r->guest_phys_addr + r->memory_size)
            return -EEXIST;
    *k = (struct kslot){r->flags, r->guest_phys_addr, r->memory_size,
                        r->userspace_addr};
    return 0;
}

static int k_get_log(int fd, struct kvm_dirty_log *l)
{
    (void)fd;
    uint32_t id = l->slot;
    if (id >= MAXID || !kvm.s[id].size)
        return -ENOENT;
    memset(l->dirty_bitmap, 0, ALIGN_UP(kvm.s[id].size >> 12, 64) / 8);
    return 0;
}

static int k_clear_log(int fd, struct kvm_clear_dirty_log *l)
{
    (void)fd;
    uint32_t id = l->slot;
    if (id >= MAXID || !kvm.s[id].size || l->first_page % 64 ||
        l->first_page + l->num_pages > kvm.s[id].size >> 12)
        return -EINVAL;
    return 0;
}

static const struct kvm_ops model_ops = {
    .set_user_memory_region = k_set_region,
    .get_dirty_log = k_get_log,
    .clear_dirty_log = k_clear_log,
};

/* ---- the reference model ---------------------------------------------------- */

struct ref {
    uint64_t mfn[NR_GFNS];
    enum p2m_type type[NR_GFNS];
    uint8_t tracked[NR_GFNS]; /* bit t: tracker t */
    bool log;
};

/*
 * What the trackers heard of removals during one operation.  A removal is
 * announced only after the update committed: when a tracker hears of
 * [g, g + n), every one of those gfns is already gone from the p2m and from
 * KVM's slots, and it was tracked by that tracker.  After the operation the
 * model compares the announcements with the (tracker, gfn) pairs whose
 * tracking the operation ended by removing the memory: each exactly once,
 * none for a failed operation.
 */
static struct {
    struct memslot_tracker *trk; /* the two trackers */
    struct p2m *p2m;
    const struct ref *before;    /* the model before the operation */
    uint8_t count[2][NR_GFNS];   /* announcements per (tracker, gfn) */
} heard;

static void check_removed(struct memslot_tracker *t, gfn_t g, uint64_t n)
{
    unsigned tk = t == &heard.trk[0] ? 0 : 1;
    struct p2m_entry e;

    CHECK(t == &heard.trk[tk]);
    CHECK(n >= 1 && gfn_x(g) + n <= NR_GFNS);
    for (uint64_t k = 0; k < n; k++) {
        uint64_t gfn = gfn_x(g) + k, gpa = gfn << 12;

        /* content: it was tracked by this tracker */
        CHECK(heard.before->tracked[gfn] & (1u << tk));
        /* order: the p2m entry and KVM's slot are already gone */
        CHECK(p2m_lookup(heard.p2m, _gfn(gfn), &e) == 0);
        CHECK(e.type == P2M_INVALID);
        for (uint32_t i = 0; i < MAXID; i++)
            CHECK(!kvm.s[i].size || gpa < kvm.s[i].gpa ||
                  gpa >= kvm.s[i].gpa + kvm.s[i].size);
        CHECK(heard.count[tk][gfn] < 255);
        heard.count[tk][gfn]++;
    }
}

/* Each pair whose tracking the operation ended, other than by untracking
 * (kind 7, tracker tk, gfn g), was announced once; nothing else was. */
static void compare_heard(const struct ref *before, const struct ref *after,
                          uint8_t kind, unsigned untrack_tk, uint64_t untrack_g)
{
    for (unsigned tk = 0; tk < 2; tk++)
        for (uint64_t g = 0; g < NR_GFNS; g++) {
            bool ended = (before->tracked[g] & (1u << tk)) &&
                         !(after->tracked[g] & (1u << tk)) &&
                         !(kind == 7 && tk == untrack_tk && g == untrack_g);
            CHECK(heard.count[tk][g] == (ended ? 1 : 0));
        }
}

static int nop_write(struct memslot_tracker *t, gpa_t a, const void *b,
                     uint32_t n)
{
    (void)t;
    (void)a;
    (void)b;
    (void)n;
    return 0;
}

static void compare(struct memslots *ms, struct p2m *p2m, const struct ref *r)
{
    struct p2m_entry e[NR_GFNS];
    uint64_t covered = 0, ram = 0;

    CHECK(p2m_lookup_range(p2m, _gfn(0), NR_GFNS, e) == 0);
    for (uint64_t g = 0; g < NR_GFNS; g++) {
        CHECK(e[g].type == r->type[g]);
        if (r->type[g] != P2M_INVALID)
            CHECK(mfn_x(e[g].mfn) == r->mfn[g]);
        ram += p2m_is_ram(r->type[g]);
        CHECK(memslot_is_tracked(ms, _gfn(g)) == (r->tracked[g] != 0));
    }
    CHECK(memslot_check(ms) == 0);
    CHECK(dirty_check(ms->dirty) == 0);
    CHECK(p2m_check(p2m) == 0);
    CHECK(ms->log_dirty == r->log);
    /* M3 and coverage */
    uint32_t nk = 0;
    for (uint32_t i = 0; i < MAXID; i++)
        nk += kvm.s[i].size != 0;
    CHECK(nk == ms->nr);
    for (uint32_t i = 0; i < ms->nr; i++) {
        struct memslot *s = &ms->slots[i];
        struct kslot *k = &kvm.s[s->id];
        CHECK(k->gpa == gfn_x(s->base) << 12 && k->size == s->npages << 12 &&
              k->flags == s->flags &&
              k->hva == (uint64_t)(uintptr_t)frames_ptr(ms->frames, s->mfn));
        covered += s->npages;
    }
    CHECK(covered == ram);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct ref ref, saved;
    struct kvm_sys sys = {.ops = &model_ops, .fd = -1};
    struct kvm_vm vm = {.sys = &sys, .ops = &model_ops, .fd = -1,
                        .dirty_mode = KVM_DIRTY_BITMAP_MANUAL,
                        .manual_protect = true};
    static struct memslot_tracker trk[2] = {{nop_write, check_removed},
                                            {nop_write, check_removed}};
    struct frames frames;
    struct p2m p2m;
    struct dirty_log dirty;
    struct memslots ms;
    mfn_t m;
    uint64_t m0 = 0;

    sys.caps.nr_memslots = MAXID;
    memset(&kvm, 0, sizeof(kvm));
    memset(&ref, 0, sizeof(ref));
    if (frames_init(&frames, NF + 1) || frames_domain_add(&frames, DOM, NF))
        abort();
    for (int i = 0; i < NF; i++) {
        CHECK(frames_alloc(&frames, DOM, 0, &m) == 0);
        if (i == 0)
            m0 = mfn_x(m);
        CHECK(mfn_x(m) == m0 + (uint64_t)i);
    }
    CHECK(p2m_init(&p2m, &frames, DOM, P2M_HVM, NR_GFNS) == 0);
    CHECK(dirty_init(&dirty, &vm, &p2m, NR_GFNS, MAXID) == 0);
    CHECK(memslot_init(&ms, &vm, &frames, &p2m, &dirty, 1, MAXID - 1) == 0);
    heard.trk = trk;
    heard.p2m = &p2m;
    heard.before = &saved;

    for (size_t i = 0; i + 4 <= size; i += 4) {
        uint8_t kind = data[i] % 10, a = data[i + 1], b = data[i + 2], c = data[i + 3];
        uint64_t g = GFN0 + a % NG, n = 1 + b % 8;
        enum p2m_type t = (enum p2m_type)(1 + c % 3);
        int rc = 0, want = 0;
        bool fault = false;

        saved = ref;
        memset(heard.count, 0, sizeof(heard.count));
        if (c >= 0xf0) { /* inject a failure into this operation */
            fault = true;
            if (c & 1)
                kvm.fail_in = 1 + (b >> 4) % 4;
            else
                ms.test_fail_alloc = 1 + (b >> 4) % 4;
        }
        kvm.fired = false;
        if (g + n > NR_GFNS)
            n = NR_GFNS - g;
        switch (kind) {
        case 0: { /* populate */
            uint64_t mf = a % NF;
            if (mf + n > NF)
                n = NF - mf;
            for (uint64_t k = 0; k < n; k++)
                if (ref.type[g + k] != P2M_INVALID)
                    want = -EEXIST;
            rc = memslot_populate(&ms, _gfn(g), _mfn(m0 + mf), n, t);
            if (!want)
                for (uint64_t k = 0; k < n; k++) {
                    ref.mfn[g + k] = m0 + mf + k;
                    ref.type[g + k] = t;
                }
            break;
        }
        case 1: /* remove */
            rc = memslot_remove(&ms, _gfn(g), n);
            for (uint64_t k = 0; k < n; k++) {
                ref.type[g + k] = P2M_INVALID;
                ref.tracked[g + k] = 0;
            }
            break;
        case 2: /* retype */
            rc = memslot_set_type(&ms, _gfn(g), n, t);
            for (uint64_t k = 0; k < n; k++)
                if (p2m_is_ram(ref.type[g + k]))
                    ref.type[g + k] = t;
            break;
        case 3: { /* move */
            uint64_t to = GFN0 + c % (2 * NG);
            if (to + n > NR_GFNS)
                to = NR_GFNS - n;
            if (g < to + n && to < g + n) {
                want = -EINVAL;
            } else {
                for (uint64_t k = 0; k < n && !want; k++)
                    if (ref.tracked[g + k])
                        want = -EBUSY;
                for (uint64_t k = 0; k < n && !want; k++)
                    if (ref.type[to + k] != P2M_INVALID)
                        want = -EEXIST;
            }
            rc = memslot_move(&ms, _gfn(g), _gfn(to), n);
            if (!want) {
                struct ref r2 = ref;
                for (uint64_t k = 0; k < n; k++) {
                    r2.type[to + k] = ref.type[g + k];
                    r2.mfn[to + k] = ref.mfn[g + k];
                    r2.type[g + k] = P2M_INVALID;
                }
                ref = r2;
            }
            break;
        }
        case 4:
            rc = memslot_set_log_dirty(&ms, true);
            ref.log = true;
            break;
        case 5:
            rc = memslot_set_log_dirty(&ms, false);
            ref.log = false;
            break;
        case 6:
        case 7: { /* track / untrack by tracker b & 1 */
            unsigned tk = b & 1;
            if (kind == 6) {
                if (!p2m_is_ram(ref.type[g]))
                    want = -ENOENT;
                else if (ref.tracked[g] & (1u << tk))
                    want = -EEXIST;
                rc = memslot_track(&ms, _gfn(g), &trk[tk]);
                ref.tracked[g] |= (uint8_t)(1u << tk);
            } else {
                if (!(ref.tracked[g] & (1u << tk)))
                    want = -ENOENT;
                rc = memslot_untrack(&ms, _gfn(g), &trk[tk]);
                ref.tracked[g] &= (uint8_t)~(1u << tk);
            }
            break;
        }
        default:
            rc = memslot_sync(&ms, _gfn(g), n);
            break;
        }
        bool fired = kvm.fired || (fault && ms.test_fail_alloc == 0 && !(c & 1));
        kvm.fail_in = 0;
        ms.test_fail_alloc = 0;
        if (want) {
            CHECK(rc == want || (fired && rc));
            ref = saved;
        } else if (fired) {
            CHECK(rc != 0);
            ref = saved;
        } else {
            CHECK(rc == 0);
        }
        compare(&ms, &p2m, &ref);
        compare_heard(&saved, &ref, kind, b & 1, g);
    }
    memslot_fini(&ms);
    dirty_fini(&dirty);
    p2m_fini(&p2m);
    for (uint64_t k = 0; k < NF; k++)
        CHECK(frame_put_alloc_ref(&frames, _mfn(m0 + k)) == 0);
    frames_fini(&frames);
    return 0;
}
