/*
 * test_kvm.c - src/kvm on real KVM: capabilities, a ring-3 guest reaching
 * the host by port I/O, read-only slots, kicks, and failure injection at
 * every fallible step of VM and vCPU creation.
 */
#include <errno.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "kvm_util.h"
#include "testlib.h"

static void test_caps(void **state)
{
    struct kvm_sys sys;

    (void)state;
    assert_int_equal(kvm_sys_open(&sys, NULL), 0);
    test_note("nr_memslots %u readonly %d manual_protect 0x%x ring_max %u "
              "acq_rel %d", sys.caps.nr_memslots, sys.caps.readonly_mem,
              sys.caps.manual_protect, sys.caps.dirty_ring_max,
              sys.caps.dirty_ring_acq_rel);
    assert_true(sys.caps.nr_memslots >= 32);
    assert_true(sys.run_size >= sizeof(struct kvm_run));
    kvm_sys_close(&sys);
}

/* The guest stores a list of values into a writable slot and says DONE. */
static void test_store_list(void **state)
{
    struct kvmtest_vm *vm;
    uint64_t code, arg;
    uint8_t *mem;

    (void)state;
    assert_int_equal(vm_create_with_one_vcpu(&vm, GUEST_STORE_LIST, NULL, NULL), 0);
    assert_int_equal(kvm_vm_check(&vm->vm), 0);
    assert_int_equal(kvm_vcpu_check(&vm->vcpu.k), 0);
    mem = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE,
               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(mem != MAP_FAILED);
    assert_int_equal(kvm_vm_set_memory_region(&vm->vm, 1, 0, KVMTEST_TEST_GPA,
                                              1 << 20, mem), 0);
    struct kvmtest_args *a = kvmtest_args(vm);
    a->nr_ops = 4;
    for (int i = 0; i < 4; i++) {
        a->ops[i].addr = KVMTEST_TEST_GPA + (uint64_t)i * 4096 + 8;
        a->ops[i].value = 0x1122334455667788ULL + (uint64_t)i;
        a->ops[i].len = 8;
    }
    assert_int_equal(kvmtest_run_ucall(vm, &code, &arg), 0);
    assert_int_equal(code, KVMTEST_UCALL_DONE);
    assert_int_equal(arg, 4);
    for (int i = 0; i < 4; i++)
        assert_int_equal(*(uint64_t *)(mem + i * 4096 + 8),
                         0x1122334455667788ULL + (uint64_t)i);
    kvmtest_vm_free(vm);
    munmap(mem, 1 << 20);
}

struct mmio_log {
    uint64_t gpa[8];
    uint64_t val[8];
    uint32_t len[8];
    int n;
};

static int log_mmio(void *opaque, uint64_t gpa, uint8_t *data, uint32_t len,
                    bool is_write)
{
    struct mmio_log *l = opaque;
    if (!is_write || l->n == 8)
        return -EINVAL;
    l->gpa[l->n] = gpa;
    l->len[l->n] = len;
    l->val[l->n] = 0;
    memcpy(&l->val[l->n], data, len);
    l->n++;
    return 0;
}

/* A store to a read-only slot exits as MMIO with the bytes; memory stays. */
static void test_readonly_slot(void **state)
{
    struct kvmtest_vm *vm;
    struct mmio_log log = {0};
    uint64_t code, arg;
    uint8_t *mem;

    (void)state;
    assert_int_equal(vm_create_with_one_vcpu(&vm, GUEST_STORE_LIST, NULL, NULL), 0);
    if (!vm->sys.caps.readonly_mem) {
        test_note("this KVM has no read-only memory (KVM_CAP_READONLY_MEM)");
        kvmtest_vm_free(vm);
        skip(); /* TAP "ok N # SKIP": a skip, never a pass */
    }
    mem = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE,
               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(mem != MAP_FAILED);
    assert_int_equal(kvm_vm_set_memory_region(&vm->vm, 1, KVM_SLOT_READONLY,
                                              KVMTEST_TEST_GPA, 1 << 20, mem),
                     0);
    vm->hooks.mmio = log_mmio;
    vm->hooks.opaque = &log;
    struct kvmtest_args *a = kvmtest_args(vm);
    static const uint32_t lens[] = {1, 2, 4, 8};
    a->nr_ops = 4;
    for (int i = 0; i < 4; i++) {
        a->ops[i].addr = KVMTEST_TEST_GPA + 0x3000 + (uint64_t)i * 16;
        a->ops[i].value = 0xa1a2a3a4a5a6a7a8ULL;
        a->ops[i].len = lens[i];
    }
    assert_int_equal(kvmtest_run_ucall(vm, &code, &arg), 0);
    assert_int_equal(code, KVMTEST_UCALL_DONE);
    assert_int_equal(log.n, 4);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(log.gpa[i], a->ops[i].addr);
        assert_int_equal(log.len[i], lens[i]);
        uint64_t mask = lens[i] == 8 ? ~0ULL : (1ULL << (8 * lens[i])) - 1;
        assert_int_equal(log.val[i], a->ops[i].value & mask);
        assert_int_equal(mem[0x3000 + i * 16], 0);
    }
    kvmtest_vm_free(vm);
    munmap(mem, 1 << 20);
}

/* One-entry MSR access round-trips (IA32_SYSENTER_CS). */
static void test_msr(void **state)
{
    struct kvmtest_vm *vm;
    uint64_t v = 0;

    (void)state;
    assert_int_equal(vm_create_with_one_vcpu(&vm, GUEST_SYNC_LOOP, NULL, NULL), 0);
    assert_int_equal(kvm_vcpu_set_msr(&vm->vcpu.k, 0x174, 0x10), 0);
    assert_int_equal(kvm_vcpu_get_msr(&vm->vcpu.k, 0x174, &v), 0);
    assert_int_equal(v, 0x10);
    kvmtest_vm_free(vm);
}

/* A kick ends a running KVM_RUN with -EINTR; a kick before KVM_RUN too. */
static void test_kick(void **state)
{
    struct kvmtest_vm *vm;
    struct kvmtest_runner r;

    (void)state;
    assert_int_equal(vm_create_with_one_vcpu(&vm, GUEST_SYNC_LOOP, NULL, NULL), 0);
    assert_int_equal(kvmtest_runner_start(&r, vm), 0);
    for (int i = 0; i < 20; i++) {
        assert_int_equal(kvmtest_runner_pause(&r), 0);
        uint64_t syncs = r.syncs;
        usleep(1000);
        assert_int_equal(r.syncs, syncs); /* parked: no progress */
        kvmtest_runner_resume(&r);
    }
    assert_int_equal(kvmtest_runner_join(&r), 0);
    test_note("%lu syncs, %lu kicks", (unsigned long)r.syncs,
              (unsigned long)vm->vcpu.nr_kicks);
    assert_true(vm->vcpu.nr_kicks > 0);
    kvmtest_vm_free(vm);
}

/* Each fallible step of VM creation fails cleanly: no fd leaks, K1. */
static void test_create_faults(void **state)
{
    static const enum kvmtest_op ops[] = {
        KVMTEST_OP_OPEN, KVMTEST_OP_SYS, KVMTEST_OP_CPUID,
        KVMTEST_OP_ENABLE_CAP, KVMTEST_OP_SET_REGION, KVMTEST_OP_CREATE_VCPU,
        KVMTEST_OP_MAP, KVMTEST_OP_REGS, KVMTEST_OP_SREGS,
        KVMTEST_OP_SET_CPUID,
    };
    unsigned injected = 0, tolerated = 0;

    (void)state;
    for (unsigned i = 0; i < ARRAY_SIZE(ops); i++) {
        for (uint64_t nth = 1;; nth++) {
            struct kvmtest_vm *vm = NULL;
            struct kvm_sys probe;
            assert_int_equal(kvm_sys_open(&probe, NULL), 0);
            struct kvm_vm_config cfg = kvm_vm_config_default(&probe, false, 0);
            kvm_sys_close(&probe);
            int fd_before = dup(0);
            close(fd_before);
            kvmtest_fault_arm(ops[i], nth, -ENOMEM);
            int rc = vm_create_with_one_vcpu(&vm, GUEST_SYNC_LOOP, &cfg,
                                             kvmtest_fault_ops());
            bool fired = kvmtest_fault_fired();
            kvmtest_fault_disarm();
            if (!fired) {
                assert_int_equal(rc, 0);
                kvmtest_vm_free(vm);
                break;
            }
            injected++;
            if (rc == 0) {
                /* an optional probe (a capability check) failed: the
                 * capability counts as absent */
                kvmtest_vm_free(vm);
                tolerated++;
            }
            int fd_after = dup(0);
            close(fd_after);
            assert_int_equal(fd_after, fd_before); /* nothing leaked */
        }
    }
    test_note("%u injected failures in VM creation, %u in optional probes",
              injected, tolerated);
    assert_true(injected >= ARRAY_SIZE(ops));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_caps),
        cmocka_unit_test(test_store_list),
        cmocka_unit_test(test_readonly_slot),
        cmocka_unit_test(test_msr),
        cmocka_unit_test(test_kick),
        cmocka_unit_test(test_create_faults),
    };
    test_require_kvm();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
