/*
 * shimvm.c - see shimvm.h.
 */
#include "shimvm.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int shimvm_init_vm(struct shimvm *s, const void *code, size_t len,
                   unsigned nr_vcpus)
{
    struct kvm_vm_config cfg;
    int r;

    memset(s, 0, sizeof(*s));
    if ((r = frames_init(&s->frames, SHIMVM_FRAMES)) < 0)
        return r;
    if ((r = frames_domain_add(&s->frames, SHIMVM_GUEST, 512)) < 0 ||
        (r = frames_domain_add(&s->frames, SHIMVM_HV, 512)) < 0)
        return r;
    /* The guest's identity region: frames 1..511 belong to it (the frame
     * allocator never hands out frame 0). */
    for (unsigned i = 1; i < 512; i++) {
        mfn_t m;
        if ((r = frames_alloc(&s->frames, SHIMVM_GUEST, 0, &m)) < 0)
            return r;
        if (mfn_x(m) != i)
            return -EINVAL;
    }
    if ((r = shim_init(&s->shim, &s->frames, SHIMVM_HV, nr_vcpus)) < 0)
        return r;
    s->l4 = _mfn(1);
    s->l3 = _mfn(2);
    s->l2 = _mfn(3);
    s->l1 = _mfn(4);
    s->code = _mfn(16);
    s->data = _mfn(17);
    uint64_t *l4 = frames_ptr(&s->frames, s->l4);
    uint64_t *l3 = frames_ptr(&s->frames, s->l3);
    uint64_t *l2 = frames_ptr(&s->frames, s->l2);
    uint64_t *l1 = frames_ptr(&s->frames, s->l1);
    l4[0] = (mfn_x(s->l3) << 12) | 0x27;
    l4[SHIM_L4_SLOT] = shim_l4e(&s->shim);
    l4[SHIM_L4_SLOT + 1] = shim_l4e_directmap(&s->shim);
    l3[0] = (mfn_x(s->l2) << 12) | 0x27;
    l2[0] = (mfn_x(s->l1) << 12) | 0x27;
    for (unsigned i = 1; i < 512; i++) /* page 0 stays unmapped */
        l1[i] = ((uint64_t)i << 12) | 0x67;
    memcpy(frames_ptr(&s->frames, s->code), code, len);

    if ((r = kvm_sys_open(&s->sys, NULL)) < 0)
        return r;
    cfg = kvm_vm_config_default(&s->sys, false, 0);
    if ((r = kvm_vm_create(&s->vm, &s->sys, &cfg)) < 0)
        return r;
    return kvm_vm_set_memory_region(&s->vm, 0, 0, 0,
                                    SHIMVM_FRAMES * PAGE_SIZE,
                                    s->frames.base);
}

int shimvm_setup_vcpu(struct shimvm *s, struct kvm_vcpu *v, unsigned id,
                      bool ring3)
{
    struct kvm_cpuid2 *cpuid;
    struct kvm_vcpu_sregs sr;
    struct kvm_vcpu_regs regs;
    uint32_t idx[8];
    uint64_t val[8];
    unsigned n;
    int r;

    if ((r = kvm_sys_supported_cpuid(&s->sys, &cpuid)) < 0)
        return r;
    r = kvm_vcpu_set_cpuid(v, cpuid);
    free(cpuid);
    if (r < 0)
        return r;
    shim_vcpu_sregs(&s->shim, id, mfn_x(s->l4) << 12, &sr);
    if ((r = kvm_vcpu_set_sregs(v, &sr)) < 0)
        return r;
    n = shim_vcpu_msrs(&s->shim, id, idx, val);
    for (unsigned i = 0; i < n; i++)
        if ((r = kvm_vcpu_set_msr(v, idx[i], val[i])) < 0)
            return r;
    if (ring3) {
        struct shim_frame to = {
            .rip = mfn_x(s->code) << 12,
            .cs = SHIM_SEL_CS3,
            .rflags = SHIM_RFLAGS_FIXED,
            .rsp = (mfn_x(s->data) + 1 + id) << 12,
            .ss = SHIM_SEL_DS3,
        };
        shim_vcpu_start(&s->shim, id, &to, &regs);
    } else {
        memset(&regs, 0, sizeof(regs));
        regs.rflags = SHIM_RFLAGS_FIXED;
        regs.rip = mfn_x(s->code) << 12;
        regs.rsp = SHIM_VA_PERCPU(id) + SHIM_PERCPU_STACK_TOP - 64;
    }
    return kvm_vcpu_set_regs(v, &regs);
}

int shimvm_init(struct shimvm *s, const void *code, size_t len, bool ring3)
{
    int r = shimvm_init_vm(s, code, len, 1);

    if (r < 0)
        return r;
    if ((r = kvm_vcpu_create(&s->vcpu, &s->vm, 0)) < 0)
        return r;
    return shimvm_setup_vcpu(s, &s->vcpu, 0, ring3);
}

void shimvm_fini(struct shimvm *s)
{
    if (s->vcpu.run)
        kvm_vcpu_destroy(&s->vcpu);
    if (s->vm.sys)
        kvm_vm_destroy(&s->vm);
    if (s->sys.ops)
        kvm_sys_close(&s->sys);
    if (s->shim.frames)
        shim_fini(&s->shim);
    if (s->frames.base)
        frames_fini(&s->frames);
}
