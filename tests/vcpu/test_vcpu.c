/*
 * test_vcpu.c - vCPU threads on real KVM: pausing a group kicks every vCPU
 * out of KVM_RUN and holds it (registers frozen) until resumed; an offline
 * vCPU never runs until brought online; an emulation failure crashes its
 * group alone with a diagnostic (exit reason, suberror, bytes, registers)
 * while another group runs on.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "shimvm.h"
#include "testlib.h"
#include "vcpu/vcpu.h"

/* ring 3: count in rbx forever */
static const uint8_t spin[] = {0x48, 0xff, 0xc3, 0xeb, 0xfb}; /* inc %rbx; jmp */
/* ring 0: int3 (fails in emulated ring 0), then the same spin */
static const uint8_t r0_int3[] = {0xcc, 0x48, 0xff, 0xc3, 0xeb, 0xfb};

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int no_exits(struct vcpu *v, void *opaque)
{
    struct kvm_exit ex;

    (void)opaque;
    kvm_vcpu_exit(&v->kvm, &ex);
    vcpu_group_crash(v->group, v, "unexpected exit %u\n", ex.raw);
    return -EIO;
}

struct rig {
    struct shimvm vm;
    struct vcpu_group g;
    struct vcpu v[2];
    unsigned n;
};

static void rig_init(struct rig *r, const uint8_t *code, size_t len,
                     unsigned n, bool ring3, bool online)
{
    memset(r, 0, sizeof(*r));
    r->n = n;
    assert_int_equal(shimvm_init_vm(&r->vm, code, len, n), 0);
    assert_int_equal(vcpu_group_init(&r->g, no_exits, NULL, r), 0);
    for (unsigned i = 0; i < n; i++) {
        assert_int_equal(vcpu_create(&r->g, &r->v[i], &r->vm.vm, i), 0);
        assert_int_equal(
            shimvm_setup_vcpu(&r->vm, &r->v[i].kvm, i, ring3), 0);
        if (online)
            vcpu_set_online(&r->v[i]);
    }
    assert_int_equal(vcpu_group_start(&r->g), 0);
}

static void rig_fini(struct rig *r)
{
    vcpu_group_stop(&r->g, 0);
    vcpu_group_join(&r->g);
    assert_int_equal(vcpu_group_check(&r->g), 0);
    for (unsigned i = 0; i < r->n; i++)
        vcpu_destroy(&r->v[i]);
    vcpu_group_fini(&r->g);
    shimvm_fini(&r->vm);
}

static uint64_t rbx(struct vcpu *v)
{
    struct kvm_vcpu_regs regs;
    assert_int_equal(kvm_vcpu_get_regs(&v->kvm, &regs), 0);
    return regs.rbx;
}

static void test_pause_resume(void **state)
{
    struct rig *r = test_malloc(sizeof(*r));
    uint64_t last[2] = {0, 0};
    bool ran[2] = {false, false};
    double worst = 0, total = 0;
    unsigned rounds = (unsigned)test_scale(20), advanced = 0;
    (void)state;

    if (!test_have_kvm()) {
        test_free(r);
        skip();
    }
    rig_init(r, spin, sizeof(spin), 2, true, true);
    sleep_ms(10);
    for (unsigned i = 0; i < rounds; i++) {
        double t0 = now_us(), dt;
        uint64_t a[2];

        vcpu_group_pause(&r->g);
        dt = now_us() - t0;
        total += dt;
        worst = dt > worst ? dt : worst;
        assert_int_equal(vcpu_group_check(&r->g), 0);
        for (unsigned k = 0; k < 2; k++)
            a[k] = rbx(&r->v[k]);
        sleep_ms(3);
        for (unsigned k = 0; k < 2; k++) {
            assert_int_equal(rbx(&r->v[k]), a[k]); /* frozen */
            advanced += a[k] > last[k];              /* ran since */
            ran[k] |= a[k] > last[k];
            last[k] = a[k];
        }
        vcpu_group_resume(&r->g);
        sleep_ms(2);
    }
    test_note("%u pauses of 2 spinning vCPUs: mean %.0f us, worst %.0f us; "
              "%u of %u vCPU-rounds ran between pauses",
              rounds, total / rounds, worst, advanced, 2 * rounds);
    /* On a loaded host a thread may miss any number of 2 ms windows; a
     * resumed vCPU must still run: wait for each (5 s at most). */
    for (unsigned t = 0; t < 500 && !(ran[0] && ran[1]); t++) {
        sleep_ms(10);
        vcpu_group_pause(&r->g);
        for (unsigned k = 0; k < 2; k++)
            ran[k] |= rbx(&r->v[k]) > last[k];
        vcpu_group_resume(&r->g);
    }
    assert_true(ran[0] && ran[1]);
    assert_false(r->g.crashed);
    rig_fini(r);
    test_free(r);
}

static void test_offline_vcpu(void **state)
{
    struct rig *r = test_malloc(sizeof(*r));
    (void)state;

    if (!test_have_kvm()) {
        test_free(r);
        skip();
    }
    rig_init(r, spin, sizeof(spin), 2, true, false);
    vcpu_set_online(&r->v[0]);
    sleep_ms(10);
    vcpu_group_pause(&r->g);
    assert_true(rbx(&r->v[0]) > 0);
    assert_int_equal(rbx(&r->v[1]), 0); /* never ran */
    vcpu_group_resume(&r->g);
    vcpu_set_online(&r->v[1]);
    sleep_ms(10);
    vcpu_group_pause(&r->g);
    assert_true(rbx(&r->v[1]) > 0);
    vcpu_group_resume(&r->g);
    rig_fini(r);
    test_free(r);
}

static void test_crash_isolated(void **state)
{
    struct rig *bad = test_malloc(sizeof(*bad));
    struct rig *good = test_malloc(sizeof(*good));
    uint64_t before;
    (void)state;

    if (!test_have_kvm()) {
        test_free(bad);
        test_free(good);
        skip();
    }
    rig_init(good, spin, sizeof(spin), 1, true, true);
    rig_init(bad, r0_int3, sizeof(r0_int3), 1, false, true);
    vcpu_group_join(&bad->g);
    assert_true(bad->g.crashed);
    test_note("crash report:");
    /* one TAP comment per line: a bare line is not TAP */
    for (const char *p = bad->g.diag, *nl; *p; p = nl ? nl + 1 : "") {
        nl = strchr(p, '\n');
        test_note("  %.*s", (int)(nl ? nl - p : (long)strlen(p)), p);
    }
    assert_non_null(strstr(bad->g.diag, "fatal exit"));
    assert_non_null(strstr(bad->g.diag, "suberror"));
    assert_non_null(strstr(bad->g.diag, "rip="));
    assert_non_null(strstr(bad->g.diag, "instruction bytes: cc 48 ff c3"));
    /* the other group still runs */
    vcpu_group_pause(&good->g);
    before = rbx(&good->v[0]);
    vcpu_group_resume(&good->g);
    sleep_ms(5);
    vcpu_group_pause(&good->g);
    assert_true(rbx(&good->v[0]) > before);
    vcpu_group_resume(&good->g);
    assert_false(good->g.crashed);
    rig_fini(bad);
    rig_fini(good);
    test_free(bad);
    test_free(good);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pause_resume),
        cmocka_unit_test(test_offline_vcpu),
        cmocka_unit_test(test_crash_isolated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
