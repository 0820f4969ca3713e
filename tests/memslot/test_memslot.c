/*
 * test_memslot.c - memory slots on real KVM: the slot view after each kind
 * of update (and KVM's own slots equal to it), running out of slots,
 * failure injection at every fallible step of every kind of update, and
 * page tracking with a ring-3 guest's stores.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "lib/bitmap.h"
#include "memfix.h"
#include "testlib.h"

#define G(x) (MEMFIX_GFN0 + (x))

/* ---- whole-state checks ----------------------------------------------------- */

/* M3: KVM's slots (as the fault table saw them accepted) equal the view. */
static void assert_kvm_matches(struct memfix *f)
{
    struct kvmtest_shadow_slot sh[KVMTEST_SHADOW_SLOTS];
    struct memslot *s;
    uint32_t n, seen = 0;

    kvmtest_shadow_get(sh);
    assert_int_equal(memslot_snapshot(&f->ms, &s, &n), 0);
    for (uint32_t i = 0; i < n; i++) {
        assert_true(s[i].id < KVMTEST_SHADOW_SLOTS);
        struct kvmtest_shadow_slot *k = &sh[s[i].id];
        assert_int_equal(k->gpa, gfn_x(s[i].base) << PAGE_SHIFT);
        assert_int_equal(k->size, s[i].npages << PAGE_SHIFT);
        assert_int_equal(k->flags, s[i].flags);
        assert_int_equal(k->hva, (uint64_t)(uintptr_t)frames_ptr(&f->frames, s[i].mfn));
    }
    for (uint32_t id = 1; id < KVMTEST_SHADOW_SLOTS; id++)
        seen += sh[id].size != 0;
    assert_int_equal(seen, n);
    free(s);
}

static void check_all(struct memfix *f)
{
    assert_int_equal(memslot_check(&f->ms), 0);
    assert_int_equal(dirty_check(&f->dirty), 0);
    assert_int_equal(p2m_check(&f->p2m), 0);
    assert_int_equal(frames_check(&f->frames), 0);
    assert_kvm_matches(f);
}

static uint32_t nr_slots(struct memfix *f)
{
    return f->ms.nr;
}

/* ---- a recording subscriber ------------------------------------------------- */

#define MAX_EV 512

struct rec {
    struct memslot_tracker t;
    struct memfix *f;
    struct rec_ev {
        uint64_t gpa, value;
        uint32_t len;
    } ev[MAX_EV];
    uint32_t nev;
    uint32_t nremoved;
    uint64_t removed_gfn, removed_nr;
    bool removed_while_mapped; /* p2m still had RAM when told */
    bool refuse_odd;           /* refuse stores whose first byte is odd */
};

static int rec_write(struct memslot_tracker *t, gpa_t gpa, const void *bytes,
                     uint32_t len)
{
    struct rec *r = container_of(t, struct rec, t);
    uint64_t v = 0;

    memcpy(&v, bytes, len);
    if (r->nev < MAX_EV)
        r->ev[r->nev++] = (struct rec_ev){gpa_x(gpa), v, len};
    return r->refuse_odd && (v & 1) ? -EPERM : 0;
}

static void rec_removed(struct memslot_tracker *t, gfn_t gfn, uint64_t nr)
{
    struct rec *r = container_of(t, struct rec, t);
    struct p2m_entry e;

    r->nremoved++;
    r->removed_gfn = gfn_x(gfn);
    r->removed_nr = nr;
    for (uint64_t i = 0; i < nr; i++)
        if (p2m_lookup(&r->f->p2m, _gfn(gfn_x(gfn) + i), &e) == 0 &&
            e.type != P2M_INVALID)
            r->removed_while_mapped = true;
}

static void rec_init(struct rec *r, struct memfix *f)
{
    memset(r, 0, sizeof(*r));
    r->t.write = rec_write;
    r->t.removed = rec_removed;
    r->f = f;
}

/* ---- a guest store list ------------------------------------------------------ */

static void guest_stores(struct memfix *f, const uint64_t *gfns, uint32_t n,
                         uint64_t value)
{
    struct kvmtest_args *a = kvmtest_args(f->vm);
    uint64_t code, arg;

    a->nr_ops = n;
    for (uint32_t i = 0; i < n; i++) {
        a->ops[i].addr = memfix_gva(gfns[i]) + 8 * (i % 8);
        a->ops[i].value = value + i;
        a->ops[i].len = 8;
    }
    assert_int_equal(kvmtest_vcpu_reset(f->vm, GUEST_STORE_LIST), 0);
    assert_int_equal(kvmtest_run_ucall(f->vm, &code, &arg), 0);
    assert_int_equal(code, KVMTEST_UCALL_DONE);
}

/* Harvest every pending gfn into a bitmap over [0, nr_gfns). */
static int collect(gfn_t chunk, uint64_t bits, void *opaque)
{
    uint64_t *map = opaque;
    bitmap_atomic_or_word(map, gfn_x(chunk) / 64, bits);
    return 0;
}

static uint64_t *pending_set(struct memfix *f)
{
    uint64_t *map = bitmap_alloc(f->nr_gfns);
    assert_non_null(map);
    assert_int_equal(dirty_sync(&f->dirty), 0);
    assert_int_equal(dirty_harvest(&f->dirty, _gfn(0), f->nr_gfns, collect, map), 0);
    return map;
}

/* ---- 1. the view after each kind of update ---------------------------------- */

static void test_updates(void **state)
{
    struct memfix f;
    struct rec r;
    uint64_t m0;

    (void)state;
    assert_int_equal(memfix_init(&f, GUEST_STORE_LIST, NULL, kvmtest_fault_ops(),
                                 256, 1024), 0);
    rec_init(&r, &f);
    m0 = mfn_x(f.first_mfn);
    check_all(&f);
    /* create: two runs of frames -> two slots */
    assert_int_equal(memslot_populate(&f.ms, _gfn(G(0)), _mfn(m0), 64, P2M_RAM), 0);
    assert_int_equal(nr_slots(&f), 1);
    assert_int_equal(memslot_populate(&f.ms, _gfn(G(64)), _mfn(m0 + 128), 64, P2M_RAM), 0);
    assert_int_equal(nr_slots(&f), 2);
    check_all(&f);
    /* contiguous frames after the first run: merged into it */
    assert_int_equal(memslot_populate(&f.ms, _gfn(G(128)), _mfn(m0 + 192), 16, P2M_RAM), 0);
    assert_int_equal(nr_slots(&f), 2);
    check_all(&f);
    /* populate over RAM fails and changes nothing */
    assert_int_equal(memslot_populate(&f.ms, _gfn(G(10)), _mfn(m0 + 100), 4, P2M_RAM), -EEXIST);
    check_all(&f);
    /* log-dirty: flags only */
    assert_int_equal(memslot_set_log_dirty(&f.ms, true), 0);
    assert_int_equal(f.dirty.nr_slots, 2);
    check_all(&f);
    /* split by a read-only range, then merge back */
    assert_int_equal(memslot_set_type(&f.ms, _gfn(G(20)), 4, P2M_RAM_RO), 0);
    assert_int_equal(nr_slots(&f), 4);
    check_all(&f);
    assert_int_equal(memslot_set_type(&f.ms, _gfn(G(20)), 4, P2M_RAM), 0);
    assert_int_equal(nr_slots(&f), 2);
    check_all(&f);
    /* tracking splits, untracking merges */
    assert_int_equal(memslot_track(&f.ms, _gfn(G(5)), &r.t), 0);
    assert_int_equal(nr_slots(&f), 4);
    assert_int_equal(memslot_track(&f.ms, _gfn(G(5)), &r.t), -EEXIST);
    assert_int_equal(memslot_track(&f.ms, _gfn(G(500)), &r.t), -ENOENT);
    check_all(&f);
    /* moving tracked memory is refused */
    assert_int_equal(memslot_move(&f.ms, _gfn(G(0)), _gfn(G(300)), 8), -EBUSY);
    check_all(&f);
    assert_int_equal(memslot_untrack(&f.ms, _gfn(G(5)), &r.t), 0);
    assert_int_equal(memslot_untrack(&f.ms, _gfn(G(5)), &r.t), -ENOENT);
    assert_int_equal(nr_slots(&f), 2);
    check_all(&f);
    /* move part of a slot away and back */
    assert_int_equal(memslot_move(&f.ms, _gfn(G(8)), _gfn(G(300)), 8), 0);
    assert_int_equal(nr_slots(&f), 4);
    assert_true(dirty_test(&f.dirty, _gfn(G(300))));
    check_all(&f);
    assert_int_equal(memslot_move(&f.ms, _gfn(G(300)), _gfn(G(8)), 8), 0);
    assert_int_equal(nr_slots(&f), 2);
    check_all(&f);
    /* an MMIO entry moves with its range, and makes no slot */
    struct p2m_entry pe;
    assert_int_equal(p2m_populate(&f.p2m, _gfn(G(150)), _mfn(0xfee00), P2M_MMIO), 0);
    assert_int_equal(memslot_move(&f.ms, _gfn(G(149)), _gfn(G(400)), 3), 0);
    assert_int_equal(p2m_lookup(&f.p2m, _gfn(G(401)), &pe), 0);
    assert_int_equal(pe.type, P2M_MMIO);
    assert_int_equal(p2m_lookup(&f.p2m, _gfn(G(150)), &pe), 0);
    assert_int_equal(pe.type, P2M_INVALID);
    assert_int_equal(memslot_remove(&f.ms, _gfn(G(400)), 3), 0);
    assert_int_equal(nr_slots(&f), 2);
    check_all(&f);
    /* delete a whole slot, and part of one */
    assert_int_equal(memslot_remove(&f.ms, _gfn(G(64)), 64), 0);
    assert_int_equal(nr_slots(&f), 2); /* [0, 64) and [128, 144) */
    check_all(&f);
    assert_int_equal(memslot_remove(&f.ms, _gfn(G(30)), 2), 0);
    assert_int_equal(nr_slots(&f), 3);
    assert_true(p2m_mapcache_test_and_clear(&f.p2m));
    check_all(&f);
    /* log-dirty off */
    assert_int_equal(memslot_set_log_dirty(&f.ms, false), 0);
    assert_int_equal(f.dirty.nr_slots, 0);
    check_all(&f);
    assert_int_equal(r.nremoved, 0);
    test_note("%" PRIu64 " updates, %" PRIu64 " ioctls", f.ms.stats.updates,
              f.ms.stats.ioctls);
    memfix_fini(&f);
}

/* ---- 2. running out of slots ------------------------------------------------- */

static void test_out_of_slots(void **state)
{
    struct memfix f;
    struct rec r;
    uint64_t m0;
    int rc = 0;
    uint32_t k;

    (void)state;
    assert_int_equal(memfix_init(&f, GUEST_STORE_LIST, NULL, kvmtest_fault_ops(),
                                 256, 1024), 0);
    rec_init(&r, &f);
    m0 = mfn_x(f.first_mfn);
    f.ms.max_slots = 9; /* a small domain (ids already unused above) */
    assert_int_equal(memslot_populate(&f.ms, _gfn(G(0)), _mfn(m0), 128, P2M_RAM), 0);
    for (k = 0; k < 64; k++) {
        rc = memslot_track(&f.ms, _gfn(G(2 * k + 1)), &r.t);
        if (rc)
            break;
        check_all(&f);
    }
    assert_int_equal(rc, -ENOSPC);
    assert_int_equal(k, 4); /* 4 tracked pages = 9 slots */
    assert_false(memslot_is_tracked(&f.ms, _gfn(G(2 * k + 1))));
    check_all(&f);
    memfix_fini(&f);
}

/* ---- 3. failure injection at every fallible step ----------------------------- */

enum fam { FAM_SET_REGION, FAM_GET_LOG, FAM_ALLOC, FAM_NR };
static const char *const fam_name[] = {"KVM_SET_USER_MEMORY_REGION",
                                       "KVM_GET_DIRTY_LOG", "allocation"};

struct base {
    struct memfix f;
    struct rec r;
    uint64_t m0;
};

static const uint64_t written[] = {G(1), G(5), G(10), G(20), G(63), G(64),
                                   G(70), G(101), G(127)};

/* The state every attempt starts from; the guest then dirties `written`. */
static void base_init(struct base *b)
{
    assert_int_equal(memfix_init(&b->f, GUEST_STORE_LIST, NULL,
                                 kvmtest_fault_ops(), 256, 1024), 0);
    rec_init(&b->r, &b->f);
    b->m0 = mfn_x(b->f.first_mfn);
    assert_int_equal(memslot_populate(&b->f.ms, _gfn(G(0)), _mfn(b->m0), 64, P2M_RAM), 0);
    assert_int_equal(memslot_populate(&b->f.ms, _gfn(G(64)), _mfn(b->m0 + 128), 64, P2M_RAM), 0);
    assert_int_equal(memslot_set_log_dirty(&b->f.ms, true), 0);
    assert_int_equal(memslot_track(&b->f.ms, _gfn(G(10)), &b->r.t), 0);
    assert_int_equal(memslot_set_type(&b->f.ms, _gfn(G(100)), 4, P2M_RAM_RO), 0);
    guest_stores(&b->f, written, ARRAY_SIZE(written), 0x1000);
    check_all(&b->f);
}

static int op_create(struct base *b)
{
    return memslot_populate(&b->f.ms, _gfn(G(200)), _mfn(b->m0 + 64), 16, P2M_RAM);
}
static int op_remove_tracked(struct base *b)
{
    return memslot_remove(&b->f.ms, _gfn(G(8)), 4);
}
static int op_delete_slot(struct base *b)
{
    return memslot_remove(&b->f.ms, _gfn(G(64)), 64);
}
static int op_move(struct base *b)
{
    return memslot_move(&b->f.ms, _gfn(G(30)), _gfn(G(300)), 10);
}
static int op_log_off(struct base *b)
{
    return memslot_set_log_dirty(&b->f.ms, false);
}
static int op_split_ro(struct base *b)
{
    return memslot_set_type(&b->f.ms, _gfn(G(50)), 2, P2M_RAM_RO);
}
static int op_merge_rw(struct base *b)
{
    return memslot_set_type(&b->f.ms, _gfn(G(100)), 4, P2M_RAM);
}
static int op_track(struct base *b)
{
    return memslot_track(&b->f.ms, _gfn(G(70)), &b->r.t);
}
static int op_untrack(struct base *b)
{
    return memslot_untrack(&b->f.ms, _gfn(G(10)), &b->r.t);
}
static int op_logdirty_range(struct base *b)
{
    return memslot_set_type(&b->f.ms, _gfn(G(100)), 4, P2M_LOGDIRTY);
}

static const struct {
    const char *name;
    int (*op)(struct base *b);
} fi_ops[] = {
    {"create", op_create},         {"remove tracked", op_remove_tracked},
    {"delete slot", op_delete_slot}, {"move", op_move},
    {"log-dirty off", op_log_off}, {"split (read-only)", op_split_ro},
    {"merge (read-write)", op_merge_rw}, {"track (split)", op_track},
    {"untrack (merge)", op_untrack}, {"log-dirty range", op_logdirty_range},
};

struct snap {
    struct memslot *slots;
    uint32_t nr;
    struct kvmtest_shadow_slot kvm[KVMTEST_SHADOW_SLOTS];
    struct memslot_track tracks[64];
    uint32_t nr_tracks;
    struct p2m_entry p2m[1024];
    uint32_t nev, nremoved;
    bool log_dirty;
};

static void snap_take(struct base *b, struct snap *s)
{
    assert_int_equal(memslot_snapshot(&b->f.ms, &s->slots, &s->nr), 0);
    kvmtest_shadow_get(s->kvm);
    assert_true(b->f.ms.nr_tracks <= 64);
    s->nr_tracks = b->f.ms.nr_tracks;
    memcpy(s->tracks, b->f.ms.tracks, s->nr_tracks * sizeof(s->tracks[0]));
    assert_int_equal(p2m_lookup_range(&b->f.p2m, _gfn(G(0)), 1024, s->p2m), 0);
    s->nev = b->r.nev;
    s->nremoved = b->r.nremoved;
    s->log_dirty = b->f.ms.log_dirty;
}

/* The check that a failed update left everything as before: NULL, or the
 * first thing that changed. */
static const char *snap_diff(const struct snap *a, const struct snap *b)
{
    if (a->nr != b->nr || memcmp(a->slots, b->slots, a->nr * sizeof(*a->slots)))
        return "memvisor's slots";
    if (memcmp(a->kvm, b->kvm, sizeof(a->kvm)))
        return "KVM's slots";
    if (a->nr_tracks != b->nr_tracks ||
        memcmp(a->tracks, b->tracks, a->nr_tracks * sizeof(a->tracks[0])))
        return "the tracked gfns";
    if (memcmp(a->p2m, b->p2m, sizeof(a->p2m)))
        return "the p2m";
    if (a->nev != b->nev)
        return "writes reported to the subscriber";
    if (a->nremoved != b->nremoved)
        return "a removal announced to the subscriber";
    if (a->log_dirty != b->log_dirty)
        return "log-dirty";
    return NULL;
}

static void snap_equal(struct snap *a, struct snap *b)
{
    const char *d = snap_diff(a, b);

    if (d)
        fail_msg("a failed update changed %s", d);
}

/* The pending dirty set after the base: the stores that landed (the
 * read-only page's store was dropped, the tracked page's went through the
 * accessor). */
static void assert_pending_is_written(struct base *b)
{
    uint64_t *map = pending_set(&b->f);
    uint64_t n = 0;

    for (uint32_t i = 0; i < ARRAY_SIZE(written); i++) {
        bool ro = written[i] >= G(100) && written[i] < G(104);
        if (bitmap_test(map, written[i]) == ro)
            fail_msg("gfn +%" PRIu64 " pending %d",
                     (uint64_t)(written[i] - MEMFIX_GFN0),
                     bitmap_test(map, written[i]));
        n += !ro;
    }
    assert_int_equal(bitmap_weight(map, b->f.nr_gfns), n);
    bitmap_free(map);
}

static void test_failure_injection(void **state)
{
    uint64_t injected = 0, per_fam[FAM_NR] = {0};

    (void)state;
    for (unsigned o = 0; o < ARRAY_SIZE(fi_ops); o++) {
        for (enum fam fam = 0; fam < FAM_NR; fam++) {
            for (uint64_t nth = 1;; nth++) {
                struct base b;
                struct snap before, after;
                bool fired;
                int rc;

                base_init(&b);
                snap_take(&b, &before);
                if (fam == FAM_ALLOC)
                    b.f.ms.test_fail_alloc = nth;
                else
                    kvmtest_fault_arm(fam == FAM_SET_REGION ? KVMTEST_OP_SET_REGION
                                                            : KVMTEST_OP_GET_LOG,
                                      nth, -ENOMEM);
                rc = fi_ops[o].op(&b);
                if (fam == FAM_ALLOC) {
                    fired = b.f.ms.test_fail_alloc == 0;
                    b.f.ms.test_fail_alloc = 0;
                } else {
                    fired = kvmtest_fault_fired();
                    kvmtest_fault_disarm();
                }
                if (!fired) {
                    if (rc)
                        fail_msg("%s: rc %d without a fault", fi_ops[o].name, rc);
                    check_all(&b.f);
                    free(before.slots);
                    memfix_fini(&b.f);
                    break;
                }
                injected++;
                per_fam[fam]++;
                if (rc == 0)
                    fail_msg("%s: %s #%" PRIu64 " failed but the update succeeded",
                             fi_ops[o].name, fam_name[fam], nth);
                snap_take(&b, &after);
                snap_equal(&before, &after);
                check_all(&b.f);
                assert_pending_is_written(&b);
                free(before.slots);
                free(after.slots);
                memfix_fini(&b.f);
            }
        }
    }
    test_note("%" PRIu64 " injected failures (%" PRIu64 " ioctl, %" PRIu64
              " dirty-log get, %" PRIu64 " allocation) over %zu kinds of update:"
              " every one left the state as before",
              injected, per_fam[FAM_SET_REGION], per_fam[FAM_GET_LOG],
              per_fam[FAM_ALLOC], ARRAY_SIZE(fi_ops));
    assert_true(per_fam[FAM_SET_REGION] >= ARRAY_SIZE(fi_ops));
    assert_true(per_fam[FAM_GET_LOG] >= 4);
}

/* The rule switched off: removals announced before the commit reach the
 * subscriber although the update failed.  The check of
 * test_failure_injection (a failed update leaves everything as before,
 * snap_diff) must fail, and for that reason. */
static void test_early_announce_is_caught(void **state)
{
    struct base b;
    struct snap before, after;
    const char *d;

    (void)state;
    base_init(&b);
    snap_take(&b, &before);
    b.f.ms.test_announce_early = true;
    kvmtest_fault_arm(KVMTEST_OP_SET_REGION, 1, -ENOMEM);
    assert_int_not_equal(op_remove_tracked(&b), 0);
    assert_true(kvmtest_fault_fired());
    kvmtest_fault_disarm();
    snap_take(&b, &after);
    d = snap_diff(&before, &after);
    test_note("removal announced early, then the update failed: the check "
              "says %s", d ? d : "nothing changed");
    assert_non_null(d);
    assert_string_equal(d, "a removal announced to the subscriber");
    free(before.slots);
    free(after.slots);
    memfix_fini(&b.f);
}

/* ---- 4. page tracking --------------------------------------------------------- */

static void test_tracking(void **state)
{
    struct memfix f;
    struct rec t, u;
    uint64_t seed = test_seed(77), code, arg;
    static uint8_t expect[16][4096];

    (void)state;
    assert_int_equal(memfix_init(&f, GUEST_STORE_LIST, NULL, kvmtest_fault_ops(),
                                 64, 64), 0);
    rec_init(&t, &f);
    rec_init(&u, &f);
    u.refuse_odd = true;
    assert_int_equal(memslot_populate(&f.ms, _gfn(G(0)), f.first_mfn, 16, P2M_RAM), 0);
    assert_int_equal(memslot_set_log_dirty(&f.ms, true), 0);
    assert_int_equal(memslot_track(&f.ms, _gfn(G(3)), &t.t), 0);
    assert_int_equal(memslot_track(&f.ms, _gfn(G(7)), &t.t), 0);
    assert_int_equal(memslot_track(&f.ms, _gfn(G(7)), &u.t), 0);
    check_all(&f);

    struct kvmtest_args *a = kvmtest_args(f.vm);
    static const uint32_t lens[] = {1, 2, 4, 8};
    uint32_t n = KVMTEST_MAX_OPS, n3 = 0, n7 = 0;
    memset(expect, 0, sizeof(expect));
    a->nr_ops = n;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t page = i % 4 == 0 ? 3 : i % 4 == 1 ? 7 : test_rand_below(&seed, 16);
        uint32_t len = lens[test_rand_below(&seed, 4)];
        uint64_t off = test_rand_below(&seed, 4096 / len) * len;
        a->ops[i].addr = memfix_gva(G(page)) + off;
        a->ops[i].value = test_rand(&seed);
        a->ops[i].len = len;
        bool refused = page == 7 && (a->ops[i].value & 1);
        if (!refused)
            memcpy(&expect[page][off], &a->ops[i].value, len);
        n3 += page == 3;
        n7 += page == 7;
    }
    assert_int_equal(kvmtest_run_ucall(f.vm, &code, &arg), 0);
    assert_int_equal(code, KVMTEST_UCALL_DONE);
    /* every store to a tracked frame reached its subscribers, in order,
     * with the right bytes; no other store exited */
    assert_int_equal(t.nev, n3 + n7);
    assert_int_equal(u.nev, n7);
    assert_int_equal(f.vm->vcpu.nr_mmio, n3 + n7);
    for (uint32_t i = 0, kt = 0, ku = 0; i < n; i++) {
        uint64_t page = (a->ops[i].addr >> PAGE_SHIFT) - MEMFIX_GFN0;
        uint64_t mask = a->ops[i].len == 8 ? ~0ULL : (1ULL << (8 * a->ops[i].len)) - 1;
        if (page == 3 || page == 7) {
            assert_int_equal(t.ev[kt].gpa, a->ops[i].addr);
            assert_int_equal(t.ev[kt].len, a->ops[i].len);
            assert_int_equal(t.ev[kt].value, a->ops[i].value & mask);
            kt++;
        }
        if (page == 7) {
            assert_int_equal(u.ev[ku].gpa, a->ops[i].addr);
            assert_int_equal(u.ev[ku].value, a->ops[i].value & mask);
            ku++;
        }
    }
    for (uint64_t p = 0; p < 16; p++)
        assert_memory_equal(memfix_host(&f, G(p)), expect[p], 4096);
    /* performed writes are in the dirty log */
    uint64_t *map = pending_set(&f);
    assert_true(bitmap_test(map, G(3)));
    bitmap_free(map);
    test_note("%u stores: %u to tracked frames reported in order, %u refused,"
              " %" PRIu64 " MMIO exits", n, n3 + n7, (unsigned)f.ms.stats.refused_writes,
              f.vm->vcpu.nr_mmio);

    /* flushes (split, merge, flag changes) are never reported as removals */
    assert_int_equal(memslot_track(&f.ms, _gfn(G(9)), &t.t), 0);
    assert_int_equal(memslot_set_log_dirty(&f.ms, false), 0);
    assert_int_equal(memslot_set_type(&f.ms, _gfn(G(2)), 3, P2M_RAM_RO), 0);
    assert_int_equal(memslot_set_type(&f.ms, _gfn(G(2)), 3, P2M_RAM), 0);
    assert_int_equal(memslot_untrack(&f.ms, _gfn(G(9)), &t.t), 0);
    assert_int_equal(t.nremoved, 0);
    /* a committed removal is heard once, after the p2m entry is gone */
    assert_int_equal(memslot_remove(&f.ms, _gfn(G(2)), 3), 0);
    assert_int_equal(t.nremoved, 1);
    assert_int_equal(t.removed_gfn, G(3));
    assert_int_equal(t.removed_nr, 1);
    assert_false(t.removed_while_mapped);
    assert_int_equal(u.nremoved, 0);
    assert_false(memslot_is_tracked(&f.ms, _gfn(G(3))));
    /* tracked memory does not move */
    assert_int_equal(memslot_move(&f.ms, _gfn(G(6)), _gfn(G(40)), 4), -EBUSY);
    check_all(&f);
    memfix_fini(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_updates),
        cmocka_unit_test(test_out_of_slots),
        cmocka_unit_test(test_failure_injection),
        cmocka_unit_test(test_early_announce_is_caught),
        cmocka_unit_test(test_tracking),
    };
    test_require_kvm();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
