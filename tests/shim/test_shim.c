/*
 * test_shim.c - the shim on real KVM: a ring-3 payload enters it through
 * the hypercall vector (`int $4`), an exception (ud2), a page fault and
 * SYSCALL; each arrives at memvisor as one port exit on the right entry
 * with the CPU's frame, and memvisor's return frame takes the payload back
 * to ring 3.  Also: the guest cannot read the shim's slot, and the costs of
 * a forwarded hypercall round trip.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "shimvm.h"
#include "testlib.h"

/* The ring-3 payload (position independent, copied to the code frame). */
extern const uint8_t payload_begin[], payload_end[];
__asm__(".pushsection .rodata\n"
        ".globl payload_begin, payload_end\n"
        "payload_begin:\n"
        /* 1. console write through the hypercall vector */
        "  lea msg(%rip), %rdx\n"
        "  xor %edi, %edi\n"
        "  mov $5, %esi\n"
        "  mov $18, %eax\n"
        "  int $4\n"
        "  mov %rax, %r12\n"
        /* 2. SYSCALL: lands in the shim (ring 0 or via #PF at LSTAR) */
        "  mov $0x77, %eax\n"
        "  syscall\n"
        "  mov %rax, %r13\n"
        /* 3. ud2: #UD, memvisor skips it */
        "  ud2\n"
        /* 4. a read of the shim's slot must fault (#PF), memvisor skips
         *    the 7-byte load */
        "  movabs $0xffff800000000000, %rax\n"
        "  mov (%rax), %rbx\n"
        /* 5. 1000 null hypercalls for the cost figure */
        "  mov $1000, %r14d\n"
        "1: mov $17, %eax\n"
        "  int $4\n"
        "  dec %r14d\n"
        "  jnz 1b\n"
        /* 6. shutdown */
        "  mov $29, %eax\n"
        "  mov $2, %edi\n"
        "  int $4\n"
        "  ud2\n"
        "msg: .ascii \"hello\"\n"
        "payload_end:\n"
        ".popsection\n");

struct seen {
    unsigned hypercalls, syscalls, ud, pf_slot256, null_calls;
    char console[64];
    uint64_t t_first, t_last;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

/* The host side of the conversation.  1 = shut down, 0 = go on, <0 bad. */
static int on_event(struct shimvm *s, struct seen *seen)
{
    struct kvm_exit ex;
    struct kvm_vcpu_regs regs;
    struct kvm_vcpu_sregs sregs;
    struct shim_event ev;
    struct shim_frame to;
    int entry;

    kvm_vcpu_exit(&s->vcpu, &ex);
    if (ex.kind != KVM_XK_IO)
        return -EINVAL;
    entry = shim_port_entry(ex.io.port, ex.io.size, ex.io.out);
    if (entry < 0)
        return -EINVAL;
    assert_int_equal(kvm_vcpu_get_regs(&s->vcpu, &regs), 0);
    assert_int_equal(kvm_vcpu_get_sregs(&s->vcpu, &sregs), 0);
    assert_int_equal(shim_event_read(&s->shim, 0, entry, regs.rsp, &ev), 0);
    to = ev.frame;
    switch (entry) {
    case SHIM_ENTRY_HYPERCALL:
        assert_int_equal(ev.frame.cs, SHIM_SEL_CS3);
        if (regs.rax == 18) {
            uint64_t n = MIN(regs.rsi, sizeof(seen->console) - 1);
            memcpy(seen->console, shimvm_ptr(s, regs.rdx), n);
            regs.rax = n;
            seen->hypercalls++;
        } else if (regs.rax == 17) {
            if (seen->null_calls++ == 0)
                seen->t_first = now_ns();
            seen->t_last = now_ns();
            regs.rax = 0x40011; /* a version number */
        } else if (regs.rax == 29) {
            return 1;
        }
        break;
    case 14:
        if (sregs.cr2 == SHIM_VA_PERCPU(0) + SHIM_PERCPU_SYSCALL &&
            ev.frame.rip == sregs.cr2) {
            /* SYSCALL arrived at LSTAR in ring 3 and faulted on fetch */
            seen->syscalls++;
            to.rip = regs.rcx;
            to.rflags = regs.r11;
            regs.rax = 0x5c;
        } else if (sregs.cr2 == SHIM_VA_BASE) {
            /* a user-mode read, refused: not present (0x4) where the
             * host keeps the slot, protection (0x5) elsewhere */
            assert_int_equal(ev.error & 6, 4);
            seen->pf_slot256++;
            to.rip += 3; /* mov (%rax),%rbx */
        } else {
            return -EFAULT;
        }
        break;
    case SHIM_ENTRY_SYSCALL: /* hardware: entered ring 0 */
        seen->syscalls++;
        to.rip = regs.rcx;
        to.rflags = regs.r11;
        to.cs = SHIM_SEL_CS3;
        to.ss = SHIM_SEL_DS3;
        regs.rax = 0x5c;
        break;
    case 6:
        seen->ud++;
        to.rip += 2;
        break;
    default:
        return -EINVAL;
    }
    shim_resume(&s->shim, 0, &to, &regs);
    assert_int_equal(kvm_vcpu_set_regs(&s->vcpu, &regs), 0);
    return 0;
}

static void test_ring3_roundtrips(void **state)
{
    struct shimvm *s = test_malloc(sizeof(*s));
    struct seen seen = {0};
    struct kvm_vcpu_regs regs;
    int r = 0;
    (void)state;

    if (!test_have_kvm()) {
        test_free(s);
        skip();
    }
    assert_int_equal(shimvm_init(s, payload_begin,
                                 (size_t)(payload_end - payload_begin), true),
                     0);
    assert_int_equal(shim_check(&s->shim), 0);
    for (unsigned i = 0; i < 5000 && r == 0; i++) {
        struct kvm_exit ex;

        assert_int_equal(kvm_vcpu_run(&s->vcpu), 0);
        kvm_vcpu_exit(&s->vcpu, &ex);
        if (ex.kind != KVM_XK_IO) {
            print_error("exit %s\n", kvm_exit_reason_name(ex.raw));
            fail();
        }
        r = on_event(s, &seen);
    }
    assert_int_equal(r, 1);
    assert_int_equal(shim_check(&s->shim), 0);
    assert_string_equal(seen.console, "hello");
    assert_int_equal(seen.hypercalls, 1);
    assert_int_equal(seen.syscalls, 1);
    assert_int_equal(seen.ud, 1);
    assert_int_equal(seen.pf_slot256, 1);
    assert_int_equal(seen.null_calls, 1000);
    assert_int_equal(kvm_vcpu_get_regs(&s->vcpu, &regs), 0);
    assert_int_equal(regs.r12, 5);    /* console_io's result */
    assert_int_equal(regs.r13, 0x5c); /* SYSCALL's result */
    test_note("forwarded hypercall round trip (int $4, out, iretq, host "
              "get/set regs): %.1f us",
              (double)(seen.t_last - seen.t_first) / 999 / 1000);
    shimvm_fini(s);
    test_free(s);
}

/*
 * The SYSCALL entry as hardware KVM runs it: in ring 0 with the caller's
 * RSP.  This KVM also enters it in ring 0 when SYSCALL is executed from
 * ring 0, which lets the path be tested here: the entry must save the
 * caller's RSP, switch to the shim stack and hand over as entry 33, and
 * memvisor's frame must take the vCPU on from there.
 */
static void test_syscall_ring0_entry(void **state)
{
    /* mov $0x11000, %rsp; syscall; out %al, $0xf0 */
    static const uint8_t code[] = {0x48, 0xc7, 0xc4, 0x00, 0x10, 0x01, 0x00,
                                   0x0f, 0x05, 0xe6, 0xf0};
    struct shimvm *s = test_malloc(sizeof(*s));
    struct kvm_vcpu_regs regs;
    struct kvm_exit ex;
    struct shim_event ev;
    int entry;
    (void)state;

    if (!test_have_kvm()) {
        test_free(s);
        skip();
    }
    assert_int_equal(shimvm_init(s, code, sizeof(code), false), 0);
    assert_int_equal(kvm_vcpu_run(&s->vcpu), 0);
    kvm_vcpu_exit(&s->vcpu, &ex);
    assert_int_equal(ex.kind, KVM_XK_IO);
    entry = shim_port_entry(ex.io.port, ex.io.size, true);
    assert_int_equal(entry, SHIM_ENTRY_SYSCALL);
    assert_int_equal(kvm_vcpu_get_regs(&s->vcpu, &regs), 0);
    assert_int_equal(shim_event_read(&s->shim, 0, entry, regs.rsp, &ev), 0);
    assert_int_equal(ev.frame.rsp, 0x11000);          /* saved caller RSP */
    assert_int_equal(regs.rcx, (mfn_x(s->code) << 12) + 9); /* return RIP */
    /* memvisor returns to the instruction after SYSCALL (ring 0 here, as
     * the caller was) */
    struct shim_frame to = {.rip = regs.rcx, .cs = SHIM_SEL_CS0,
                            .rflags = regs.r11, .rsp = ev.frame.rsp,
                            .ss = SHIM_SEL_DS0};
    shim_resume(&s->shim, 0, &to, &regs);
    assert_int_equal(kvm_vcpu_set_regs(&s->vcpu, &regs), 0);
    assert_int_equal(kvm_vcpu_run(&s->vcpu), 0);
    kvm_vcpu_exit(&s->vcpu, &ex);
    assert_int_equal(ex.kind, KVM_XK_IO);
    assert_int_equal(ex.io.port, 0xf0);
    assert_int_equal(kvm_vcpu_get_regs(&s->vcpu, &regs), 0);
    assert_int_equal(regs.rsp, 0x11000);
    shimvm_fini(s);
    test_free(s);
}

/* shim_check() catches each kind of damage. */
static void test_check_catches(void **state)
{
    struct frames f;
    struct shim s;
    (void)state;

    assert_int_equal(frames_init(&f, 256), 0);
    assert_int_equal(frames_domain_add(&f, SHIMVM_HV, 256), 0);
    assert_int_equal(shim_init(&s, &f, SHIMVM_HV, 2), 0);
    assert_int_equal(shim_check(&s), 0);
    for (unsigned k = 0; k < 4; k++) {
        uint64_t *p, saved, *where;
        switch (k) {
        case 0: where = frames_ptr(&f, s.image); break;          /* code */
        case 1: where = (uint64_t *)frames_ptr(&f, s.idt) + 6;   /* #BP gate */
            break;
        case 2: where = (uint64_t *)frames_ptr(&f, s.l1) + 0;    /* image PTE */
            break;
        default: where = (uint64_t *)frames_ptr(&f, s.percpu[1]); /* TSS */
            break;
        }
        p = where;
        saved = *p;
        /* the U bit of the PTE; rsp0's low bits (TSS bytes 4..) */
        *p ^= k == 2 ? 0x4 : k == 3 ? 0x1000000000ULL : 0x10;
        assert_int_equal(shim_check(&s), -EUCLEAN);
        *p = saved;
        assert_int_equal(shim_check(&s), 0);
    }
    shim_fini(&s);
    frames_fini(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ring3_roundtrips),
        cmocka_unit_test(test_check_catches),
        cmocka_unit_test(test_syscall_ring0_entry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
