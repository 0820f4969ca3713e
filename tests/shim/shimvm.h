/*
 * shimvm.h - a bare VM around the shim for the shim and quirk tests: a pool,
 * a shim, one identity-mapped user region (slot 0 of the address space,
 * mfns 0..511 at virtual address = machine address), one vCPU.  No PV
 * validation: these tests look at the shim and the CPU alone.
 */
#ifndef MEMVISOR_TESTS_SHIMVM_H
#define MEMVISOR_TESTS_SHIMVM_H

#include "kvm/kvm.h"
#include "shim/shim.h"

#define SHIMVM_FRAMES 1024
#define SHIMVM_GUEST 1
#define SHIMVM_HV 63

struct shimvm {
    struct frames frames;
    struct shim shim;
    struct kvm_sys sys;
    struct kvm_vm vm;
    struct kvm_vcpu vcpu;
    mfn_t l4, l3, l2, l1;
    mfn_t code, data;
};

/* Sets up everything; code is copied to s->code's page; the vCPU starts in
 * ring 3 at the code (ring3) or in ring 0 at it (!ring3). */
int shimvm_init(struct shimvm *s, const void *code, size_t len, bool ring3);
/* Only memory, shim (nr_vcpus) and the VM; no vCPU. */
int shimvm_init_vm(struct shimvm *s, const void *code, size_t len,
                   unsigned nr_vcpus);
/* Make KVM vCPU v (created by the caller as vCPU id) start at the code:
 * in ring 3 with its own stack page, or in ring 0. */
int shimvm_setup_vcpu(struct shimvm *s, struct kvm_vcpu *v, unsigned id,
                      bool ring3);
void shimvm_fini(struct shimvm *s);
static inline void *shimvm_ptr(struct shimvm *s, uint64_t va)
{
    return (uint8_t *)s->frames.base + va;
}

#endif
