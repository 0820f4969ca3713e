/*
 * memfix.c - see memfix.h.
 */
#include "memfix.h"

#include <errno.h>
#include <string.h>

static int fix_mmio(void *opaque, uint64_t gpa, uint8_t *data, uint32_t len,
                    bool is_write)
{
    struct memfix *f = opaque;
    int rc = memslot_handle_mmio(&f->ms, _gpa(gpa), data, len, is_write);

    if (rc == -ENOENT) {
        /* no RAM there (a removed or moved range): drop / read ones */
        __atomic_fetch_add(&f->mmio_unbacked, 1, __ATOMIC_RELAXED);
        if (!is_write)
            memset(data, 0xff, len);
        return 0;
    }
    return rc;
}

static int fix_ring_full(void *opaque)
{
    struct memfix *f = opaque;
    return dirty_sync(&f->dirty);
}

static void fix_pause(void *opaque)
{
    struct memfix *f = opaque;
    if (f->running)
        (void)!kvmtest_runner_pause(&f->runner);
}

static void fix_unpause(void *opaque)
{
    struct memfix *f = opaque;
    if (f->running)
        kvmtest_runner_unpause(&f->runner);
}

int memfix_init(struct memfix *f, enum kvmtest_guest_fn fn,
                const struct kvm_vm_config *cfg, const struct kvm_ops *ops,
                uint64_t nr_frames, uint64_t extra_gfns)
{
    mfn_t m;
    int rc;

    memset(f, 0, sizeof(*f));
    f->nr_gfns = MEMFIX_GFN0 + extra_gfns;
    f->nr_frames = nr_frames;
    rc = vm_create_with_one_vcpu(&f->vm, fn, cfg, ops);
    if (rc)
        return rc;
    rc = frames_init(&f->frames, nr_frames + 1); /* frame 0 is reserved */
    if (rc)
        goto fail_vm;
    rc = frames_domain_add(&f->frames, MEMFIX_DOM, nr_frames);
    if (rc)
        goto fail_frames;
    for (uint64_t i = 0; i < nr_frames; i++) {
        rc = frames_alloc(&f->frames, MEMFIX_DOM, 0, &m);
        if (rc)
            goto fail_frames;
        if (i == 0)
            f->first_mfn = m;
    }
    rc = p2m_init(&f->p2m, &f->frames, MEMFIX_DOM, P2M_HVM, f->nr_gfns);
    if (rc)
        goto fail_frames;
    rc = dirty_init(&f->dirty, &f->vm->vm, &f->p2m, f->nr_gfns,
                    f->vm->sys.caps.nr_memslots);
    if (rc)
        goto fail_p2m;
    rc = dirty_add_vcpu(&f->dirty, &f->vm->vcpu.k);
    if (rc)
        goto fail_dirty;
    rc = memslot_init(&f->ms, &f->vm->vm, &f->frames, &f->p2m, &f->dirty, 1,
                      200);
    if (rc)
        goto fail_dirty;
    struct memslot_pause p = {fix_pause, fix_unpause, f};
    memslot_set_pause(&f->ms, &p);
    f->vm->hooks = (struct kvmtest_hooks){fix_mmio, fix_ring_full, f};
    return 0;

fail_dirty:
    dirty_fini(&f->dirty);
fail_p2m:
    p2m_fini(&f->p2m);
fail_frames:
    frames_fini(&f->frames);
fail_vm:
    kvmtest_vm_free(f->vm);
    return rc;
}

int memfix_start(struct memfix *f)
{
    int rc = kvmtest_runner_start(&f->runner, f->vm);
    if (!rc)
        f->running = true;
    return rc;
}

int memfix_stop(struct memfix *f)
{
    int rc = 0;
    if (f->running) {
        rc = kvmtest_runner_join(&f->runner);
        f->running = false;
    }
    return rc;
}

void memfix_fini(struct memfix *f)
{
    (void)!memfix_stop(f);
    memslot_fini(&f->ms);
    dirty_fini(&f->dirty);
    p2m_fini(&f->p2m);
    for (uint64_t i = 0; i < f->nr_frames; i++)
        (void)!frame_put_alloc_ref(&f->frames, _mfn(mfn_x(f->first_mfn) + i));
    frames_fini(&f->frames);
    kvmtest_vm_free(f->vm);
}

void *memfix_host(struct memfix *f, uint64_t gfn)
{
    struct p2m_entry e;
    if (p2m_lookup(&f->p2m, _gfn(gfn), &e) || !p2m_is_ram(e.type))
        return NULL;
    return frames_ptr(&f->frames, e.mfn);
}
