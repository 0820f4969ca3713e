#include <inttypes.h>
#include <stdio.h>

#include "pvenv.h"

void pvenv_init(struct pvenv *e, uint64_t nr_frames)
{
    assert_int_equal(frames_init(&e->f, nr_frames), 0);
    assert_int_equal(frames_domain_add(&e->f, DOM, nr_frames), 0);
    assert_int_equal(frames_domain_add(&e->f, OTHER, nr_frames), 0);
    assert_int_equal(pv_domain_init(&e->d, &e->f, DOM), 0);
    for (unsigned i = 0; i < PV_HV_L4_NR; i++)
        e->d.hv_l4[i] = ((0x100ULL + i) << PAGE_SHIFT) | PTE_P | PTE_RW;
    for (unsigned i = 0; i < PVENV_VCPUS; i++)
        assert_int_equal(pv_vcpu_init(&e->v[i], &e->d), 0);
    e->restarts = 0;
    e->no_check = false;
}

void pvenv_fini(struct pvenv *e)
{
    int rc;

    while ((rc = pv_domain_relinquish(&e->d)) == -ERESTART)
        ;
    assert_int_equal(rc, 0);
    pvenv_check(e);
    assert_int_equal(frames_domain_tot(&e->f, DOM), 0);
    pv_domain_fini(&e->d);
    frames_fini(&e->f);
}

mfn_t pvenv_page_of(struct pvenv *e, domid_t d)
{
    mfn_t m;

    assert_int_equal(frames_alloc(&e->f, d, 0, &m), 0);
    return m;
}

mfn_t pvenv_page(struct pvenv *e)
{
    return pvenv_page_of(e, DOM);
}

int pvenv_audit(struct pvenv *e)
{
    struct pv_audit_report r;
    int rc = pv_audit(&e->d, &r);

    if (rc)
        test_note("audit: %" PRIu64 " error(s), first at mfn %#" PRIx64 ": %s",
                  r.errors, mfn_x(r.first_mfn), r.first);
    return rc;
}

void pvenv_check(struct pvenv *e)
{
    assert_int_equal(pvenv_audit(e), 0);
    assert_int_equal(frames_check(&e->f), 0);
}

int pvenv_ext1(struct pv_vcpu *v, unsigned cmd, uint64_t arg, uint32_t *done)
{
    struct mmuext_op op = {.cmd = cmd, .arg1.mfn = arg};

    return pv_mmuext_op(v, &op, 1, done, DOMID_SELF);
}

int pvenv_upd1(struct pv_vcpu *v, mfn_t table, unsigned idx, uint64_t val,
               uint32_t *done)
{
    struct mmu_update u = {
        .ptr = (mfn_x(table) << PAGE_SHIFT) + idx * 8 + MMU_NORMAL_PT_UPDATE,
        .val = val,
    };

    return pv_mmu_update(v, &u, 1, done, DOMID_SELF);
}

int pvenv_ext(struct pvenv *e, struct pv_vcpu *v, unsigned cmd, uint64_t arg)
{
    uint32_t done = 0;
    int rc;

    while ((rc = pvenv_ext1(v, cmd, arg, &done)) == -ERESTART) {
        e->restarts++;
        if (!e->no_check)
            pvenv_check(e);
    }
    assert_true(done == (rc == 0));
    return rc;
}

int pvenv_upd(struct pvenv *e, struct pv_vcpu *v, mfn_t table, unsigned idx,
              uint64_t val)
{
    uint32_t done = 0;
    int rc;

    while ((rc = pvenv_upd1(v, table, idx, val, &done)) == -ERESTART) {
        e->restarts++;
        if (!e->no_check)
            pvenv_check(e);
    }
    assert_true(done == (rc == 0));
    return rc;
}
