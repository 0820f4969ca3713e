/*
 * dirty.c - the domain dirty log and KVM harvest (see dirty.h).
 */
#include "dirty/dirty.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "frame/frame.h"
#include "lib/bitmap.h"
#include "lib/range.h"

int dirty_init(struct dirty_log *d, struct kvm_vm *vm, struct p2m *p2m,
               uint64_t nr_gfns, uint32_t max_slots)
{
    memset(d, 0, sizeof(*d));
    if (!nr_gfns || !max_slots)
        return -EINVAL;
    d->vm = vm;
    d->p2m = p2m;
    d->mode = vm->dirty_mode;
    d->nr_gfns = nr_gfns;
    d->max_slots = max_slots;
    d->log = bitmap_alloc(nr_gfns);
    d->by_id = calloc(max_slots, sizeof(*d->by_id));
    d->sorted = calloc(max_slots, sizeof(*d->sorted));
    if (!d->log || !d->by_id || !d->sorted) {
        dirty_fini(d);
        return -ENOMEM;
    }
    pthread_mutex_init(&d->lock, NULL);
    return 0;
}

void dirty_fini(struct dirty_log *d)
{
    if (d->by_id) {
        for (uint32_t i = 0; i < d->max_slots; i++)
            dirty_slot_discard(d->by_id[i]);
        pthread_mutex_destroy(&d->lock);
    }
    bitmap_free(d->log);
    free(d->by_id);
    free(d->sorted);
    memset(d, 0, sizeof(*d));
}

int dirty_add_vcpu(struct dirty_log *d, struct kvm_vcpu *vcpu)
{
    int rc = 0;

    dirty_lock(d);
    if (d->nr_vcpus == DIRTY_MAX_VCPUS)
        rc = -ENOSPC;
    else
        d->vcpus[d->nr_vcpus++] = vcpu;
    dirty_unlock(d);
    return rc;
}

void dirty_lock(struct dirty_log *d)
{
    pthread_mutex_lock(&d->lock);
    d->owner = pthread_self();
    d->locked = true;
}

void dirty_unlock(struct dirty_log *d)
{
    d->locked = false;
    pthread_mutex_unlock(&d->lock);
}

void dirty_assert_locked(struct dirty_log *d)
{
    BUG_ON(!d->locked || !pthread_equal(d->owner, pthread_self()));
}

static bool bitmap_mode(const struct dirty_log *d)
{
    return d->mode != KVM_DIRTY_RING;
}

/* ---- slot table ----------------------------------------------------------- */

int dirty_slot_prepare(struct dirty_log *d, uint32_t id, gfn_t base,
                       uint64_t npages, struct dirty_slot **out)
{
    struct dirty_slot *s;

    if (id >= d->max_slots)
        return -ENOSPC;
    if (!npages || range_check(gfn_x(base), npages, d->nr_gfns))
        return -EFAULT;
    s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->id = id;
    s->base = base;
    s->npages = npages;
    if (bitmap_mode(d)) {
        s->getbuf = bitmap_alloc(ALIGN_UP(npages, 64));
        if (!s->getbuf) {
            free(s);
            return -ENOMEM;
        }
    }
    *out = s;
    return 0;
}

void dirty_slot_discard(struct dirty_slot *s)
{
    if (!s)
        return;
    bitmap_free(s->getbuf);
    free(s);
}

/* Index of the first sorted slot whose base is >= gfn. */
static uint32_t lower_bound(struct dirty_log *d, uint64_t gfn)
{
    uint32_t lo = 0, hi = d->nr_slots;

    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (gfn_x(d->sorted[mid]->base) < gfn)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

void dirty_slot_publish_locked(struct dirty_log *d, struct dirty_slot *s)
{
    dirty_assert_locked(d);
    BUG_ON(s->id >= d->max_slots || d->by_id[s->id]);
    uint32_t i = lower_bound(d, gfn_x(s->base));
    memmove(&d->sorted[i + 1], &d->sorted[i],
            (d->nr_slots - i) * sizeof(*d->sorted));
    d->sorted[i] = s;
    d->nr_slots++;
    d->by_id[s->id] = s;
}

struct dirty_slot *dirty_slot_unpublish_locked(struct dirty_log *d,
                                               uint32_t id)
{
    struct dirty_slot *s;

    dirty_assert_locked(d);
    if (id >= d->max_slots || !(s = d->by_id[id]))
        return NULL;
    uint32_t i = lower_bound(d, gfn_x(s->base));
    BUG_ON(i >= d->nr_slots || d->sorted[i] != s);
    memmove(&d->sorted[i], &d->sorted[i + 1],
            (d->nr_slots - i - 1) * sizeof(*d->sorted));
    d->nr_slots--;
    d->by_id[id] = NULL;
    return s;
}

/* ---- pulling KVM's logs in ------------------------------------------------ */

/* OR the 64 bits of w into the log at bit position start (any alignment). */
static void log_or_word(struct dirty_log *d, uint64_t start, uint64_t w)
{
    uint64_t word = start / 64, shift = start % 64;

    if (!w)
        return;
    bitmap_atomic_or_word(d->log, word, w << shift);
    if (shift && (w >> (64 - shift)))
        bitmap_atomic_or_word(d->log, word + 1, w >> (64 - shift));
}

static int flush_slot_bitmap(struct dirty_log *d, struct dirty_slot *s)
{
    uint64_t words = BITMAP_WORDS(s->npages);
    int rc;

    rc = kvm_vm_get_dirty_log(d->vm, s->id, s->getbuf);
    d->stats.get_calls++;
    if (rc)
        return rc;
    for (uint64_t w = 0; w < words; w++)
        log_or_word(d, gfn_x(s->base) + w * 64, s->getbuf[w]);
    return 0;
}

static void ring_entry(uint32_t slot, uint64_t offset, void *opaque)
{
    struct dirty_log *d = opaque;
    struct dirty_slot *s;

    d->stats.ring_entries++;
    slot &= 0xffff; /* address space 0 only */
    if (slot >= d->max_slots || !(s = d->by_id[slot]) || offset >= s->npages) {
        d->stats.ring_stale++;
        return;
    }
    bitmap_atomic_set(d->log, gfn_x(s->base) + offset);
}

static int flush_rings(struct dirty_log *d)
{
    uint64_t n = 0;
    int rc;

    for (uint32_t i = 0; i < d->nr_vcpus; i++)
        n += kvm_vcpu_ring_harvest(d->vcpus[i], ring_entry, d);
    /* Reset before anyone reads the pages (KVM's rule): the consumer runs
     * after dirty_sync() returns. */
    rc = kvm_vm_reset_dirty_rings(d->vm);
    if (rc < 0)
        return rc;
    return (uint64_t)rc == n ? 0 : -EIO;
}

int dirty_slot_flush_locked(struct dirty_log *d, uint32_t id)
{
    dirty_assert_locked(d);
    if (id >= d->max_slots || !d->by_id[id])
        return -ENOENT;
    if (!bitmap_mode(d))
        return flush_rings(d);
    return flush_slot_bitmap(d, d->by_id[id]);
}

int dirty_sync_locked(struct dirty_log *d)
{
    dirty_assert_locked(d);
    d->stats.syncs++;
    if (!bitmap_mode(d))
        return flush_rings(d);
    for (uint32_t i = 0; i < d->nr_slots; i++) {
        int rc = flush_slot_bitmap(d, d->sorted[i]);
        if (rc)
            return rc;
    }
    return 0;
}

int dirty_sync(struct dirty_log *d)
{
    dirty_lock(d);
    int rc = dirty_sync_locked(d);
    dirty_unlock(d);
    return rc;
}

/* ---- harvest -------------------------------------------------------------- */

/*
 * Re-protect in KVM the gfns of words[0..n) (the log words at gfn base, a
 * multiple of 64) for every published slot they fall in.
 * KVM_CLEAR_DIRTY_LOG wants a slot-relative first page that is a multiple
 * of 64 and a length that is one too (or ends at the slot's end), so the
 * bits are re-based onto the slot: one call per slot per batch, covering
 * only the bits that are handed out.
 */
#define BATCH_WORDS 512

static int clear_batch(struct dirty_log *d, uint64_t base, const uint64_t *words,
                       uint32_t n)
{
    uint64_t end = base + 64ULL * n;
    uint32_t i = lower_bound(d, base + 1);

    /* the slot that starts at or below base, then those starting inside */
    if (i > 0)
        i--;
    for (; i < d->nr_slots; i++) {
        struct dirty_slot *s = d->sorted[i];
        uint64_t sb = gfn_x(s->base), se = sb + s->npages;
        if (sb >= end)
            break;
        if (se <= base)
            continue;
        uint64_t lo = MAX(sb, base), hi = MIN(se, end);
        uint64_t first = ALIGN_DOWN(lo - sb, 64);
        uint64_t mask[BATCH_WORDS + 2];
        uint64_t used = 0;
        memset(mask, 0, sizeof(mask));
        for (uint64_t k = (lo - base) / 64; k <= (hi - 1 - base) / 64; k++) {
            for (uint64_t w = words[k]; w; w &= w - 1) {
                uint64_t g = base + 64 * k + (uint64_t)__builtin_ctzll(w);
                if (g < lo || g >= hi)
                    continue;
                uint64_t rel = g - sb - first;
                mask[rel / 64] |= 1ULL << (rel % 64);
                used = rel / 64 + 1;
            }
        }
        if (!used)
            continue;
        uint64_t num = used * 64;
        if (first + num > s->npages)
            num = s->npages - first; /* ends at the slot's end: allowed */
        d->stats.clear_calls++;
        int rc = kvm_vm_clear_dirty_log(d->vm, s->id, first, (uint32_t)num, mask);
        if (rc)
            return rc;
    }
    return 0;
}

/* Put back words[from..n) of a batch at gfn base (D2). */
static void put_back(struct dirty_log *d, uint64_t base, const uint64_t *words,
                     uint32_t from, uint32_t n)
{
    for (uint32_t k = from; k < n; k++) {
        if (!words[k])
            continue;
        bitmap_atomic_or_word(d->log, base / 64 + k, words[k]);
        d->stats.put_back += (uint64_t)__builtin_popcountll(words[k]);
    }
}

int dirty_harvest(struct dirty_log *d, gfn_t gfn, uint64_t nr,
                  dirty_consumer_fn fn, void *opaque)
{
    uint64_t start = gfn_x(gfn), end, words[BATCH_WORDS];
    int rc = 0;

    if (range_check(start, nr, d->nr_gfns))
        return -EFAULT;
    end = start + nr;
    dirty_lock(d);
    for (uint64_t base = ALIGN_DOWN(start, 64); base < end && !rc;
         base += 64 * BATCH_WORDS) {
        uint32_t n = 0;
        bool any = false;
        /* take a batch of words */
        for (uint64_t cb = base; cb < end && n < BATCH_WORDS; cb += 64, n++) {
            uint64_t mask = ~0ULL;
            if (cb < start)
                mask &= ~0ULL << (start - cb);
            if (end - cb < 64)
                mask &= (1ULL << (end - cb)) - 1;
            _Atomic uint64_t *w = (_Atomic uint64_t *)&d->log[cb / 64];
            words[n] = 0;
            if (atomic_load_explicit(w, memory_order_relaxed) & mask)
                words[n] = atomic_fetch_and_explicit(w, ~mask,
                                                     memory_order_acq_rel) & mask;
            any |= words[n] != 0;
        }
        if (!any)
            continue;
        /* re-protect them in KVM before anyone reads the pages */
        if (d->mode == KVM_DIRTY_BITMAP_MANUAL && !d->test_skip_clear)
            rc = clear_batch(d, base, words, n);
        if (rc) {
            put_back(d, base, words, 0, n);
            break;
        }
        /* hand them out chunk by chunk */
        for (uint32_t k = 0; k < n; k++) {
            if (!words[k])
                continue;
            rc = fn(_gfn(base + 64ULL * k), words[k], opaque);
            if (rc) {
                put_back(d, base, words, k, n);
                break;
            }
            d->stats.handed_out += (uint64_t)__builtin_popcountll(words[k]);
        }
    }
    dirty_unlock(d);
    return rc;
}

/* ---- hypervisor writes ---------------------------------------------------- */

int dirty_mark(struct dirty_log *d, gfn_t gfn, uint64_t nr)
{
    if (range_check(gfn_x(gfn), nr, d->nr_gfns))
        return -EFAULT;
    for (uint64_t i = 0; i < nr; i++)
        bitmap_atomic_set(d->log, gfn_x(gfn) + i);
    __atomic_fetch_add(&d->stats.marks, nr, __ATOMIC_RELAXED);
    return 0;
}

/*
 * Guest memory is shared with running vCPUs (and device models): copy it
 * with relaxed atomic accesses, 8 bytes at a time where aligned, so that a
 * concurrent reader or writer is a race on values, never undefined
 * behaviour in memvisor.
 */
static void guest_copy(uint8_t *dst, const uint8_t *src, uint64_t n,
                       bool dst_is_guest)
{
    while (n && ((uintptr_t)(dst_is_guest ? dst : src) & 7)) {
        if (dst_is_guest)
            __atomic_store_n(dst, *src, __ATOMIC_RELAXED);
        else
            *dst = __atomic_load_n(src, __ATOMIC_RELAXED);
        dst++, src++, n--;
    }
    for (; n >= 8; dst += 8, src += 8, n -= 8) {
        uint64_t w;
        if (dst_is_guest) {
            memcpy(&w, src, 8);
            __atomic_store_n((uint64_t *)(void *)dst, w, __ATOMIC_RELAXED);
        } else {
            w = __atomic_load_n((const uint64_t *)(const void *)src,
                                __ATOMIC_RELAXED);
            memcpy(dst, &w, 8);
        }
    }
    for (; n; dst++, src++, n--) {
        if (dst_is_guest)
            __atomic_store_n(dst, *src, __ATOMIC_RELAXED);
        else
            *dst = __atomic_load_n(src, __ATOMIC_RELAXED);
    }
}

static int copy_guest(struct dirty_log *d, gpa_t gpa, void *buf, uint64_t len,
                      bool to_guest)
{
    uint64_t a = gpa_x(gpa);
    uint8_t *p = buf;

    if (range_check(a, len, d->nr_gfns << PAGE_SHIFT))
        return -EFAULT;
    while (len) {
        struct p2m_entry e;
        uint64_t off = a & (PAGE_SIZE - 1);
        uint64_t n = MIN(len, PAGE_SIZE - off);
        int rc = p2m_lookup(d->p2m, gpa_to_gfn(_gpa(a)), &e);
        if (rc)
            return rc;
        if (!p2m_is_ram(e.type))
            return -EFAULT;
        uint8_t *host = (uint8_t *)frames_ptr(d->p2m->frames, e.mfn) + off;
        if (to_guest) {
            guest_copy(host, p, n, true);
            /* mark after the write: a harvest that takes the bit sees the
             * new bytes (D1) */
            bitmap_atomic_set(d->log, a >> PAGE_SHIFT);
            __atomic_fetch_add(&d->stats.marks, 1, __ATOMIC_RELAXED);
        } else {
            guest_copy(p, host, n, false);
        }
        a += n;
        p += n;
        len -= n;
    }
    return 0;
}

int dirty_copy_to_guest(struct dirty_log *d, gpa_t gpa, const void *src,
                        uint64_t len)
{
    return copy_guest(d, gpa, (void *)(uintptr_t)src, len, true);
}

int dirty_copy_from_guest(struct dirty_log *d, void *dst, gpa_t gpa,
                          uint64_t len)
{
    return copy_guest(d, gpa, dst, len, false);
}

bool dirty_test(struct dirty_log *d, gfn_t gfn)
{
    return gfn_x(gfn) < d->nr_gfns && bitmap_atomic_test(d->log, gfn_x(gfn));
}

uint64_t dirty_memory_bytes(struct dirty_log *d)
{
    uint64_t bytes = BITMAP_WORDS(d->nr_gfns) * 8;

    dirty_lock(d);
    for (uint32_t i = 0; i < d->nr_slots; i++)
        if (d->sorted[i]->getbuf)
            bytes += BITMAP_WORDS(d->sorted[i]->npages) * 8;
    dirty_unlock(d);
    return bytes;
}

int dirty_check(struct dirty_log *d)
{
    uint64_t prev_end = 0, nr = 0;
    int rc = 0;

    dirty_lock(d);
    for (uint32_t i = 0; i < d->nr_slots && !rc; i++) {
        struct dirty_slot *s = d->sorted[i];
        if (s->id >= d->max_slots || d->by_id[s->id] != s ||
            gfn_x(s->base) < prev_end ||
            range_check(gfn_x(s->base), s->npages, d->nr_gfns) ||
            (bitmap_mode(d) != (s->getbuf != NULL)))
            rc = -EUCLEAN; /* D3 */
        prev_end = gfn_x(s->base) + s->npages;
    }
    for (uint32_t i = 0; i < d->max_slots && !rc; i++)
        nr += d->by_id[i] != NULL;
    if (!rc && nr != d->nr_slots)
        rc = -EUCLEAN;
    if (!rc && d->nr_gfns % 64 &&
        (d->log[d->nr_gfns / 64] >> (d->nr_gfns % 64)))
        rc = -EUCLEAN; /* D4 */
    dirty_unlock(d);
    return rc;
}
