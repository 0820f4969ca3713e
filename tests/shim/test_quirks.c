/*
 * test_quirks.c - instructions that fail in emulated ring 0 on this host's
 * KVM (docs/quirks.md), each executed once in ring 0 of a bare VM.  On the
 * emulating KVM (module kvm_pvm loaded) the documented outcome is asserted;
 * elsewhere the outcome is only printed.  The shim never executes any of
 * these (tests/shim/check_disasm.py).
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "shimvm.h"
#include "testlib.h"

#define DONE_PORT 0xf0

enum outcome { WORKS, INTERNAL_ERROR, EXCEPTION };

struct quirk {
    const char *name;
    uint8_t bytes[8];
    unsigned len;
    enum outcome on_pvm;
    uint64_t rax_in, rax_out; /* checked when WORKS and rax_out != 0 */
};

static const struct quirk quirks[] = {
    {"nop", {0x90}, 1, WORKS, 0, 0},
    {"int3", {0xcc}, 1, INTERNAL_ERROR, 0, 0},
    {"int $0x41", {0xcd, 0x41}, 2, INTERNAL_ERROR, 0, 0},
    {"icebp", {0xf1}, 1, INTERNAL_ERROR, 0, 0},
    {"xgetbv", {0x31, 0xc9, 0x0f, 0x01, 0xd0}, 5, INTERNAL_ERROR, 0, 0},
    /* the emulator knows movdqa (the probes' table says SSE fails) */
    {"movdqa (%rsp),%xmm0", {0x66, 0x0f, 0x6f, 0x04, 0x24}, 5, WORKS, 0, 0},
    {"pxor %xmm0,%xmm0", {0x66, 0x0f, 0xef, 0xc0}, 4, INTERNAL_ERROR, 0, 0},
    {"cmpxchg16b (%rsp)", {0x48, 0x0f, 0xc7, 0x0c, 0x24}, 5, INTERNAL_ERROR,
     0, 0},
    {"popcnt %rax,%rax", {0xf3, 0x48, 0x0f, 0xb8, 0xc0}, 5, INTERNAL_ERROR,
     0, 0},
    {"crc32 %al,%eax", {0xf2, 0x0f, 0x38, 0xf0, 0xc0}, 5, INTERNAL_ERROR, 0,
     0},
    {"lsl %eax,%eax", {0x0f, 0x03, 0xc0}, 3, INTERNAL_ERROR, 0, 0},
    {"rdtscp", {0x0f, 0x01, 0xf9}, 3, INTERNAL_ERROR, 0, 0},
    /* runs as bsr: lzcnt(0x100) gives 8 instead of 55 */
    {"lzcnt %rax,%rax", {0xf3, 0x48, 0x0f, 0xbd, 0xc0}, 5, WORKS, 0x100, 8},
    {"movbe (%rsp),%eax", {0x0f, 0x38, 0xf0, 0x04, 0x24}, 5, EXCEPTION, 0,
     0},
};

static bool on_pvm(void)
{
    const struct kvm_flavour *f = test_kvm_flavour();

    return f && f->kind == KVM_FLAVOUR_PVM;
}

static enum outcome run_one(const struct quirk *q, uint64_t *rax)
{
    struct shimvm *s = test_malloc(sizeof(*s));
    uint8_t code[16];
    struct kvm_vcpu_regs regs;
    struct kvm_exit ex;
    enum outcome o;

    memcpy(code, q->bytes, q->len);
    code[q->len] = 0xe6; /* out %al, $DONE_PORT */
    code[q->len + 1] = DONE_PORT;
    assert_int_equal(shimvm_init(s, code, q->len + 2, false), 0);
    assert_int_equal(kvm_vcpu_get_regs(&s->vcpu, &regs), 0);
    regs.rax = q->rax_in;
    assert_int_equal(kvm_vcpu_set_regs(&s->vcpu, &regs), 0);
    assert_int_equal(kvm_vcpu_run(&s->vcpu), 0);
    kvm_vcpu_exit(&s->vcpu, &ex);
    switch (ex.kind) {
    case KVM_XK_INTERNAL_ERROR:
        o = INTERNAL_ERROR;
        break;
    case KVM_XK_IO:
        o = ex.io.port == DONE_PORT ? WORKS : EXCEPTION;
        break;
    default:
        o = EXCEPTION;
        break;
    }
    assert_int_equal(kvm_vcpu_get_regs(&s->vcpu, &regs), 0);
    *rax = regs.rax;
    shimvm_fini(s);
    test_free(s);
    return o;
}

static void test_ring0_quirks(void **state)
{
    static const char *names[] = {"works", "internal error", "exception"};
    bool pvm = on_pvm();
    unsigned mismatches = 0;
    (void)state;

    test_note("KVM is %s", pvm ? "kvm_pvm (emulated ring 0)"
                               : "not kvm_pvm: outcomes printed only");
    for (size_t i = 0; i < ARRAY_SIZE(quirks); i++) {
        const struct quirk *q = &quirks[i];
        uint64_t rax = 0;
        enum outcome o = run_one(q, &rax);

        test_note("ring 0 %-20s -> %s (rax %#llx)", q->name, names[o],
                  (unsigned long long)rax);
        if (pvm && (o != q->on_pvm ||
                    (o == WORKS && q->rax_out && rax != q->rax_out))) {
            test_note("  ^ documented: %s", names[q->on_pvm]);
            mismatches++;
        }
    }
    assert_int_equal(mismatches, 0);
}

/* CR0.TS set through KVM_SET_SREGS: does a ring-3 FPU instruction take
 * #NM (hardware) or run (this KVM keeps ring-3 FPU state native)? */
static void test_cr0_ts_ring3(void **state)
{
    /* fldz; movaps %xmm0,%xmm1; int $4 */
    static const uint8_t code[] = {0xd9, 0xee, 0x0f, 0x28, 0xc8, 0xcd, 0x04};
    struct shimvm *s = test_malloc(sizeof(*s));
    struct kvm_vcpu_sregs sr;
    struct kvm_exit ex;
    int entry;
    (void)state;

    assert_int_equal(shimvm_init(s, code, sizeof(code), true), 0);
    assert_int_equal(kvm_vcpu_get_sregs(&s->vcpu, &sr), 0);
    sr.cr0 |= 0x8; /* TS */
    assert_int_equal(kvm_vcpu_set_sregs(&s->vcpu, &sr), 0);
    assert_int_equal(kvm_vcpu_run(&s->vcpu), 0);
    kvm_vcpu_exit(&s->vcpu, &ex);
    assert_int_equal(ex.kind, KVM_XK_IO);
    entry = shim_port_entry(ex.io.port, ex.io.size, true);
    test_note("ring-3 FPU use with CR0.TS set -> %s",
              entry == 7 ? "#NM" : entry == 4 ? "runs (no #NM)" : "other");
    if (on_pvm())
        assert_int_equal(entry, 4);
    else
        assert_int_equal(entry, 7);
    shimvm_fini(s);
    test_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ring0_quirks),
        cmocka_unit_test(test_cr0_ts_ring3),
    };
    test_require_kvm();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
