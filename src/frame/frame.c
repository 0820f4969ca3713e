/*
 * The pool, the frame table, the allocator and general references.
 * See frame.h for the contract.
 */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "frame/frame.h"
#include "lib/bitmap.h"

static inline uint64_t tcount(uint64_t x)
{
    return x & FRAME_TYPE_COUNT_MASK;
}

int frames_init(struct frames *f, uint64_t nr_frames)
{
    uint64_t bytes, i;
    int rc;

    memset(f, 0, sizeof(*f));
    f->memfd = -1;
    if (nr_frames < 2 || nr_frames > (1ULL << 40) / PAGE_SIZE)
        return -EINVAL;
    bytes = nr_frames << PAGE_SHIFT;

    f->memfd = memfd_create("memvisor-pool", MFD_CLOEXEC);
    if (f->memfd < 0)
        return -errno;
    if (ftruncate(f->memfd, (off_t)bytes) < 0) {
        rc = -errno;
        goto err_fd;
    }
    f->base =
        mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, f->memfd, 0);
    if (f->base == MAP_FAILED) {
        rc = -errno;
        f->base = NULL;
        goto err_fd;
    }
    f->table = calloc(nr_frames, sizeof(*f->table));
    f->free_map = bitmap_alloc(nr_frames);
    if (!f->table || !f->free_map) {
        rc = -ENOMEM;
        goto err_table;
    }
    for (i = 0; i < nr_frames; i++)
        atomic_init(&f->table[i].owner, DOMID_NONE);
    /* F11: frame 0 is never handed out. */
    bitmap_set_range(f->free_map, 1, nr_frames - 1);
    f->nr_frames = nr_frames;
    f->nr_free = nr_frames - 1;
    rc = pthread_mutex_init(&f->alloc_lock, NULL);
    if (rc) {
        rc = -rc;
        goto err_table;
    }
    return 0;

err_table:
    free(f->table);
    bitmap_free(f->free_map);
    munmap(f->base, bytes);
err_fd:
    close(f->memfd);
    memset(f, 0, sizeof(*f));
    f->memfd = -1;
    return rc;
}

void frames_fini(struct frames *f)
{
    if (!f->table)
        return;
    pthread_mutex_destroy(&f->alloc_lock);
    free(f->table);
    bitmap_free(f->free_map);
    munmap(f->base, f->nr_frames << PAGE_SHIFT);
    close(f->memfd);
    memset(f, 0, sizeof(*f));
    f->memfd = -1;
}

int frames_domain_add(struct frames *f, domid_t d, uint64_t max_frames)
{
    int rc = 0;

    if (d >= FRAME_MAX_DOMAINS)
        return -EINVAL;
    pthread_mutex_lock(&f->alloc_lock);
    if (f->domains[d].present)
        rc = -EEXIST;
    else
        f->domains[d] = (struct frame_domain){true, max_frames, 0};
    pthread_mutex_unlock(&f->alloc_lock);
    return rc;
}

int frames_domain_remove(struct frames *f, domid_t d)
{
    int rc = 0;

    if (d >= FRAME_MAX_DOMAINS)
        return -EINVAL;
    pthread_mutex_lock(&f->alloc_lock);
    if (!f->domains[d].present)
        rc = -ESRCH;
    else if (f->domains[d].tot_frames)
        rc = -EBUSY;
    else
        f->domains[d].present = false;
    pthread_mutex_unlock(&f->alloc_lock);
    return rc;
}

uint64_t frames_domain_tot(struct frames *f, domid_t d)
{
    uint64_t n = 0;

    if (d >= FRAME_MAX_DOMAINS)
        return 0;
    pthread_mutex_lock(&f->alloc_lock);
    n = f->domains[d].tot_frames;
    pthread_mutex_unlock(&f->alloc_lock);
    return n;
}

/* Find 2^order free, aligned frames; the lock is held. */
static uint64_t find_free_run_locked(struct frames *f, unsigned order)
{
    uint64_t n = 1ULL << order, start, i;

    if (order == 0) {
        start = bitmap_find_next(f->free_map, f->nr_frames, f->cursor);
        if (start == f->nr_frames)
            start = bitmap_find_next(f->free_map, f->nr_frames, 0);
        return start;
    }
    for (start = 0; start + n <= f->nr_frames; start += n) {
        start = ALIGN_UP(bitmap_find_next(f->free_map, f->nr_frames, start), n);
        if (start + n > f->nr_frames)
            break;
        i = bitmap_find_next_zero(f->free_map, start + n, start);
        if (i == start + n)
            return start;
        start = ALIGN_DOWN(i, n);
    }
    return f->nr_frames;
}

int frames_alloc(struct frames *f, domid_t d, unsigned order, mfn_t *out)
{
    uint64_t n, start, i;
    struct frame_domain *dom;
    int rc = 0;

    if (d >= FRAME_MAX_DOMAINS || order > FRAME_MAX_ORDER)
        return -EINVAL;
    n = 1ULL << order;
    pthread_mutex_lock(&f->alloc_lock);
    dom = &f->domains[d];
    if (!dom->present) {
        rc = -ESRCH;
        goto out;
    }
    if (dom->tot_frames + n > dom->max_frames || n > f->nr_free) {
        rc = -ENOMEM;
        goto out;
    }
    start = find_free_run_locked(f, order);
    if (start >= f->nr_frames) {
        rc = -ENOMEM;
        goto out;
    }
    for (i = start; i < start + n; i++) {
        struct frame *pg = &f->table[i];

        atomic_store_explicit(&pg->owner, d, memory_order_relaxed);
        atomic_store_explicit(&pg->type_info, 0, memory_order_relaxed);
        pg->nr_validated = 0;
        pg->partial_flags = 0;
        pg->linear_count = 0;
        atomic_init(&pg->tlbflush_stamp, 0);
        /* Publishes the owner: a frame_get() that sees count 1 sees d. */
        atomic_store_explicit(&pg->count_info, FRAME_ALLOCATED | 1,
                              memory_order_release);
    }
    bitmap_clear_range(f->free_map, start, n);
    f->nr_free -= n;
    dom->tot_frames += n;
    if (order == 0)
        f->cursor = start + 1 < f->nr_frames ? start + 1 : 0;
    *out = _mfn(start);
out:
    pthread_mutex_unlock(&f->alloc_lock);
    return rc;
}

domid_t frame_owner(struct frames *f, mfn_t mfn)
{
    if (!frames_mfn_valid(f, mfn))
        return DOMID_NONE;
    return atomic_load_explicit(&frames_get_frame(f, mfn)->owner,
                                memory_order_acquire);
}

int frame_get(struct frames *f, mfn_t mfn, domid_t d)
{
    struct frame *pg;
    uint64_t x, nx;

    if (!frames_mfn_valid(f, mfn))
        return -ENOENT;
    pg = frames_get_frame(f, mfn);
    x = atomic_load_explicit(&pg->count_info, memory_order_relaxed);
    do {
        if (!(x & FRAME_COUNT_MASK))
            return -ENOENT;
        if ((x & FRAME_COUNT_MASK) >= FRAME_COUNT_MAX)
            return -EOVERFLOW;
        nx = x + 1;
    } while (!atomic_compare_exchange_weak_explicit(
        &pg->count_info, &x, nx, memory_order_acquire, memory_order_relaxed));
    /* F2: the owner cannot change while we hold a reference. */
    if (atomic_load_explicit(&pg->owner, memory_order_relaxed) != d) {
        frame_put(f, mfn);
        return -EPERM;
    }
    return 0;
}

void frame_get_light(struct frames *f, mfn_t mfn)
{
    struct frame *pg = frames_get_frame(f, mfn);
    uint64_t x =
        atomic_fetch_add_explicit(&pg->count_info, 1, memory_order_relaxed);

    BUG_ON(!(x & FRAME_COUNT_MASK) ||
           (x & FRAME_COUNT_MASK) >= FRAME_COUNT_MAX);
}

static void frame_free(struct frames *f, mfn_t mfn)
{
    struct frame *pg = frames_get_frame(f, mfn);
    domid_t d = atomic_load_explicit(&pg->owner, memory_order_relaxed);

    /* F12: stamped before the hook flushes. */
    atomic_store(&pg->tlbflush_stamp, atomic_load(&f->tlb_clock));
    if (f->free_hook)
        f->free_hook(f->free_hook_arg, mfn, d);
    memset(frames_ptr(f, mfn), 0, PAGE_SIZE); /* F3 */
    pthread_mutex_lock(&f->alloc_lock);
    BUG_ON(d >= FRAME_MAX_DOMAINS || !f->domains[d].tot_frames);
    f->domains[d].tot_frames--;
    atomic_store_explicit(&pg->type_info, 0, memory_order_relaxed);
    atomic_store_explicit(&pg->owner, DOMID_NONE, memory_order_release);
    bitmap_set(f->free_map, mfn_x(mfn));
    f->nr_free++;
    pthread_mutex_unlock(&f->alloc_lock);
}

void frame_put(struct frames *f, mfn_t mfn)
{
    struct frame *pg = frames_get_frame(f, mfn);
    uint64_t x =
        atomic_fetch_sub_explicit(&pg->count_info, 1, memory_order_acq_rel);

    BUG_ON(!(x & FRAME_COUNT_MASK));
    if ((x & FRAME_COUNT_MASK) == 1) {
        /* The allocation reference is itself a count: it cannot be set. */
        BUG_ON(x & FRAME_ALLOCATED);
        frame_free(f, mfn);
    }
}

int frame_put_alloc_ref(struct frames *f, mfn_t mfn)
{
    struct frame *pg;
    uint64_t x;

    if (!frames_mfn_valid(f, mfn))
        return -ENOENT;
    pg = frames_get_frame(f, mfn);
    x = atomic_fetch_and_explicit(&pg->count_info, ~FRAME_ALLOCATED,
                                  memory_order_acq_rel);
    if (!(x & FRAME_ALLOCATED))
        return -EINVAL;
    frame_put(f, mfn);
    return 0;
}

uint64_t frame_count(struct frames *f, mfn_t mfn)
{
    return atomic_load_explicit(&frames_get_frame(f, mfn)->count_info,
                                memory_order_relaxed) &
           FRAME_COUNT_MASK;
}

int frames_check(struct frames *f)
{
    uint64_t owned[FRAME_MAX_DOMAINS] = {0}, i, nfree = 0;
    int rc = 0;

    pthread_mutex_lock(&f->alloc_lock);
    if (bitmap_test(f->free_map, 0) || atomic_load(&f->table[0].count_info))
        rc = -EUCLEAN; /* F11 */
    for (i = 1; i < f->nr_frames; i++) {
        struct frame *pg = &f->table[i];
        uint64_t c = atomic_load(&pg->count_info);
        domid_t o = atomic_load(&pg->owner);
        bool is_free = bitmap_test(f->free_map, i);

        if (is_free != ((c & FRAME_COUNT_MASK) == 0 && o == DOMID_NONE))
            rc = -EUCLEAN; /* F1 */
        if (is_free) {
            if (atomic_load(&pg->type_info))
                rc = -EUCLEAN; /* a free frame has no type */
            nfree++;
            continue;
        }
        {
            uint64_t t = atomic_load(&pg->type_info);

            if (tcount(t) > (c & FRAME_COUNT_MASK))
                rc = -EUCLEAN; /* F6 */
            if ((t & FRAME_TYPE_PARTIAL) && tcount(t) != 1)
                rc = -EUCLEAN; /* F10 */
            if ((t & FRAME_TYPE_PINNED) && !(t & FRAME_TYPE_VALIDATED))
                rc = -EUCLEAN; /* F10 */
        }
        if (o >= FRAME_MAX_DOMAINS || !f->domains[o].present) {
            rc = -EUCLEAN; /* F2 */
            continue;
        }
        owned[o]++;
    }
    if (nfree != f->nr_free)
        rc = -EUCLEAN;
    for (i = 0; i < FRAME_MAX_DOMAINS; i++) {
        const struct frame_domain *d = &f->domains[i];
        if (d->present &&
            (owned[i] != d->tot_frames || d->tot_frames > d->max_frames))
            rc = -EUCLEAN; /* F4 */
    }
    pthread_mutex_unlock(&f->alloc_lock);
    return rc;
}

/* ------------------------------------------------------------------ types */

static inline void relax(void)
{
    sched_yield();
}

uint64_t frame_type_word(struct frames *f, mfn_t mfn)
{
    return atomic_load(&frames_get_frame(f, mfn)->type_info);
}

/*
 * The outcome of a validation that was entered with the type count at 1
 * (validating state).  partial: the frame was PARTIAL when we took it over.
 */
static int validate_done(struct frames *f, mfn_t mfn, int rc, bool partial,
                         const struct frame_type_ops *ops, void *ctx)
{
    struct frame *pg = frames_get_frame(f, mfn);

    if (rc == 0) {
        atomic_fetch_or(&pg->type_info, FRAME_TYPE_VALIDATED);
        return 0;
    }
    if (rc == -EINTR && !partial) {
        /* Nothing was done: back to count 0, nobody else could move it. */
        atomic_fetch_sub(&pg->type_info, 1);
        return rc;
    }
    if (rc == -EINTR || rc == -ERESTART ||
        (ops->teardown_owns && ops->teardown_owns(ctx, mfn))) {
        /* Progress recorded: the PARTIAL flag owns count 1 + a general ref. */
        frame_get_light(f, mfn);
        atomic_fetch_or(&pg->type_info, FRAME_TYPE_PARTIAL);
        return rc == -EINTR ? -ERESTART : rc;
    }
    /* Invalid and nothing held: forget the type entirely. */
    atomic_store(&pg->type_info, 0);
    return rc;
}

int frame_get_type(struct frames *f, mfn_t mfn, uint64_t type, unsigned flags,
                   const struct frame_type_ops *ops, void *ctx)
{
    struct frame *pg;
    uint64_t x, nx, old_type = 0;
    bool changed;
    int rc = 0;

    if (!frames_mfn_valid(f, mfn) || (type & ~FRAME_TYPE_MASK))
        return -EINVAL;
    if (frame_type_level(type) && (!ops || !ops->validate || !ops->devalidate))
        return -EINVAL;
    pg = frames_get_frame(f, mfn);
    x = atomic_load(&pg->type_info);
    for (;;) {
        changed = false;
        if (tcount(x) >= FRAME_TYPE_COUNT_MAX)
            return -EOVERFLOW;
        nx = x + 1;
        if (tcount(x) == 0) {
            if ((x & FRAME_TYPE_MASK) != type) {
                /* F7: the type changes only here, at count 0. */
                old_type = x & FRAME_TYPE_MASK;
                nx = (nx & ~(FRAME_TYPE_MASK | FRAME_TYPE_VALIDATED)) | type;
                changed = true;
                /* Test-only: the pre-XSA-401 order (flush, then commit). */
                if ((flags & FRAME_TF_TEST_SAFETY_FIRST) && ops &&
                    ops->type_changed)
                    ops->type_changed(ctx, mfn, old_type, type);
            }
        } else if ((x & FRAME_TYPE_MASK) != type) {
            return -EINVAL;
        } else if (!(x & FRAME_TYPE_VALIDATED)) {
            if (!(x & FRAME_TYPE_PARTIAL)) {
                /* F8: another thread (de)validates; wait or give up. */
                if (flags & FRAME_TF_PREEMPTIBLE)
                    return -EINTR;
                relax();
                x = atomic_load(&pg->type_info);
                continue;
            }
            /* Take over the partial frame: the count stays 1. */
            nx = x & ~FRAME_TYPE_PARTIAL;
        }
        if (atomic_compare_exchange_weak(&pg->type_info, &x, nx))
            break;
    }

    /* F9: safety actions strictly after the type reference is committed. */
    if (changed && !(flags & FRAME_TF_TEST_SAFETY_FIRST) && ops &&
        ops->type_changed)
        ops->type_changed(ctx, mfn, old_type, type);

    if (!(nx & FRAME_TYPE_VALIDATED)) {
        if (frame_type_level(type)) {
            unsigned vf = (flags & FRAME_TF_PREEMPTIBLE) |
                          ((x & FRAME_TYPE_PARTIAL) ? FRAME_TF_RESUME : 0);

            rc = ops->validate(ctx, mfn, type, vf);
            rc = validate_done(f, mfn, rc, x & FRAME_TYPE_PARTIAL, ops, ctx);
        } else {
            atomic_fetch_or(&pg->type_info, FRAME_TYPE_VALIDATED);
        }
    }
    /* The consumed PARTIAL flag's general reference (a new one was taken
     * if the frame became PARTIAL again). */
    if (x & FRAME_TYPE_PARTIAL)
        frame_put(f, mfn);
    return rc;
}

/* The 1 -> 0 edge of a page table: we own the devalidating state. */
static int devalidate(struct frames *f, mfn_t mfn, uint64_t x, unsigned flags,
                      const struct frame_type_ops *ops, void *ctx)
{
    struct frame *pg = frames_get_frame(f, mfn);
    bool partial = x & FRAME_TYPE_PARTIAL;
    unsigned vf =
        (flags & FRAME_TF_PREEMPTIBLE) | (partial ? FRAME_TF_RESUME : 0);
    int rc = ops->devalidate(ctx, mfn, x & FRAME_TYPE_MASK, vf);

    if (rc == 0) {
        atomic_fetch_sub(&pg->type_info, 1);
    } else if (rc == -EINTR && !partial) {
        /* Nothing done: validated again, the caller keeps its reference. */
        atomic_fetch_or(&pg->type_info, FRAME_TYPE_VALIDATED);
    } else {
        frame_get_light(f, mfn);
        atomic_fetch_or(&pg->type_info, FRAME_TYPE_PARTIAL);
        if (rc == -EINTR)
            rc = -ERESTART;
    }
    if (partial)
        frame_put(f, mfn);
    return rc;
}

int frame_put_type(struct frames *f, mfn_t mfn, uint64_t type, unsigned flags,
                   const struct frame_type_ops *ops, void *ctx)
{
    struct frame *pg;
    uint64_t x, nx;
    bool legacy = flags & FRAME_TF_TEST_LEGACY_PUT;

    if (!frames_mfn_valid(f, mfn) || (type & ~FRAME_TYPE_MASK))
        return -EINVAL;
    pg = frames_get_frame(f, mfn);
    x = atomic_load(&pg->type_info);
    for (;;) {
        bool pt = frame_type_level(x) != 0;

        /* F13: a reference of another type is not ours to drop (a clean-up
         * put of a frame no longer partial may find any type: it is a
         * no-op then, below). */
        if ((x & FRAME_TYPE_MASK) != type &&
            !((flags & FRAME_TF_PARTIAL_SET) && !(x & FRAME_TYPE_PARTIAL) &&
              !legacy))
            return -EUCLEAN;
        if ((flags & FRAME_TF_PARTIAL_SET) && !legacy) {
            /* Clean-up mode: act only on a frame that is still partial. */
            if (!(x & FRAME_TYPE_PARTIAL))
                return 0;
            if (tcount(x) != 1)
                return -EUCLEAN;
        } else if (tcount(x) == 0) {
            return -EUCLEAN;
        } else if (!legacy && pt &&
                   ((x & FRAME_TYPE_PARTIAL) || !(x & FRAME_TYPE_VALIDATED))) {
            /* A full put claims a full reference of a validated table. */
            return -EUCLEAN;
        }
        if (tcount(x) == 1 && pt &&
            (x & (FRAME_TYPE_VALIDATED | FRAME_TYPE_PARTIAL))) {
            if (!ops || !ops->devalidate)
                return -EINVAL;
            /* Enter devalidating: count stays 1, nobody else may use it. */
            nx = x & ~(FRAME_TYPE_VALIDATED | FRAME_TYPE_PARTIAL);
            if (atomic_compare_exchange_weak(&pg->type_info, &x, nx))
                return devalidate(f, mfn, x, flags, ops, ctx);
            continue;
        }
        if ((x & FRAME_TYPE_LOCKED) && tcount(x) <= 2) {
            /* frame_unlock() must not be left holding the last reference. */
            relax();
            x = atomic_load(&pg->type_info);
            continue;
        }
        nx = x - 1;
        if (tcount(x) == 1 && (x & FRAME_TYPE_MASK) == FRAME_TYPE_WRITABLE) {
            /* The last writable reference: translations made for it may
             * outlive it in TLBs; stamp before the type can change (F12).
             * Stamped before the CAS (which publishes it: a type change
             * reads it after taking the count from 0), so a stamp is never
             * older than the moment the count reached 0. */
            atomic_store_explicit(&pg->tlbflush_stamp,
                                  atomic_load(&f->tlb_clock),
                                  memory_order_relaxed);
        }
        if (atomic_compare_exchange_weak(&pg->type_info, &x, nx))
            return 0;
    }
}

int frame_get_and_type(struct frames *f, mfn_t mfn, domid_t d, uint64_t type,
                       unsigned flags, const struct frame_type_ops *ops,
                       void *ctx)
{
    int rc = frame_get(f, mfn, d);

    if (rc)
        return rc;
    rc = frame_get_type(f, mfn, type, flags, ops, ctx);
    if (rc)
        frame_put(f, mfn);
    return rc;
}

int frame_put_and_type(struct frames *f, mfn_t mfn, uint64_t type,
                       unsigned flags, const struct frame_type_ops *ops,
                       void *ctx)
{
    int rc = frame_put_type(f, mfn, type, flags, ops, ctx);

    if (rc == 0)
        frame_put(f, mfn);
    return rc;
}

int frame_lock(struct frames *f, mfn_t mfn)
{
    struct frame *pg;
    uint64_t x;

    if (!frames_mfn_valid(f, mfn))
        return -EINVAL;
    pg = frames_get_frame(f, mfn);
    x = atomic_load(&pg->type_info);
    for (;;) {
        if (!tcount(x) || !frame_type_level(x) || !(x & FRAME_TYPE_VALIDATED))
            return -EINVAL;
        if (x & FRAME_TYPE_LOCKED) {
            relax();
            x = atomic_load(&pg->type_info);
            continue;
        }
        if (tcount(x) >= FRAME_TYPE_COUNT_MAX)
            return -EOVERFLOW;
        if (atomic_compare_exchange_weak(&pg->type_info, &x,
                                         (x + 1) | FRAME_TYPE_LOCKED))
            return 0;
    }
}

void frame_unlock(struct frames *f, mfn_t mfn)
{
    struct frame *pg = frames_get_frame(f, mfn);
    uint64_t x = atomic_load(&pg->type_info);

    do {
        BUG_ON(!(x & FRAME_TYPE_LOCKED) || tcount(x) < 2);
    } while (!atomic_compare_exchange_weak(&pg->type_info, &x,
                                           (x - 1) & ~FRAME_TYPE_LOCKED));
}

uint64_t frame_tlbflush_stamp(struct frames *f, mfn_t mfn)
{
    return atomic_load(&frames_get_frame(f, mfn)->tlbflush_stamp);
}

uint64_t frames_tlb_now(struct frames *f)
{
    return atomic_load(&f->tlb_clock);
}

bool frame_test_and_set_pinned(struct frames *f, mfn_t mfn)
{
    return atomic_fetch_or(&frames_get_frame(f, mfn)->type_info,
                           FRAME_TYPE_PINNED) &
           FRAME_TYPE_PINNED;
}

bool frame_test_and_clear_pinned(struct frames *f, mfn_t mfn)
{
    return atomic_fetch_and(&frames_get_frame(f, mfn)->type_info,
                            ~FRAME_TYPE_PINNED) &
           FRAME_TYPE_PINNED;
}
