/*
 * head.S - entry points of the PV guest kernel: the boot entry (rsi =
 * start_info, rsp = bootstrap stack, as Xen starts a PV guest), the entry of
 * secondary vCPUs, the hypercall page the builder fills, the exception and
 * callback entries (bounce frames, returned from with the iret hypercall),
 * the probes (instructions that may fault, each with an exception-table
 * entry) and Xen's ELF notes.
 */
#define HYPERCALL_IRET 23
#define STACK_SIZE (16 * 1024)

    .section .text.head, "ax"
    .globl _start
_start:
    cld
    mov %rsi, %r12              /* start_info */
    mov %rsp, %r13              /* top of the bootstrap stack */
    lea __bss_start(%rip), %rdi
    lea __bss_end(%rip), %rcx
    sub %rdi, %rcx
    xor %eax, %eax
    rep stosb
    lea guest_stacks + STACK_SIZE(%rip), %rsp
    mov %r12, %rdi
    mov %r13, %rsi
    call kernel_main
1:  ud2
    jmp 1b

/* Secondary vCPUs start here with rsp = their stack top, rdi = their vcpu. */
    .globl ap_entry
ap_entry:
    cld
    call ap_main
1:  ud2
    jmp 1b

/* ---------------------------------------------------------------------- */
    .section .text.hypercall, "ax"
    .balign 4096
    .globl hypercall_page
hypercall_page:
    .fill 4096, 1, 0

/* ---------------------------------------------------------------------- */
/* Exception entries.  On entry rsp points at the bounce frame
 * { rcx, r11, [error code,] rip, cs, rflags, rsp, ss }.  Each entry restores
 * rcx and r11, pushes (error code or 0) and the vector, so that trap_common
 * sees one layout, struct trap_regs in kernel.c. */
    .text
.macro TRAP_NOERR vec
    .globl trap_\vec
trap_\vec:
    pop %rcx
    pop %r11
    pushq $0
    pushq $\vec
    jmp trap_common
.endm
.macro TRAP_ERR vec
    .globl trap_\vec
trap_\vec:
    pop %rcx
    pop %r11
    pushq $\vec
    jmp trap_common
.endm

TRAP_NOERR 0
TRAP_NOERR 1
TRAP_NOERR 2
TRAP_NOERR 3
TRAP_NOERR 4
TRAP_NOERR 5
TRAP_NOERR 6
TRAP_NOERR 7
TRAP_ERR 8
TRAP_NOERR 9
TRAP_ERR 10
TRAP_ERR 11
TRAP_ERR 12
TRAP_ERR 13
TRAP_ERR 14
TRAP_NOERR 15
TRAP_NOERR 16
TRAP_ERR 17
TRAP_NOERR 18
TRAP_NOERR 19
TRAP_NOERR 32    /* the event callback */

/* The failsafe callback: the hypervisor could not restore guest state. */
    .globl trap_33
trap_33:
    pop %rcx
    pop %r11
    pushq $0
    pushq $33
    jmp trap_common

trap_common:
    push %rax
    push %rbx
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %rbp
    push %r8
    push %r9
    push %r10
    push %r11
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rsp, %rdi
    mov %rsp, %rbx
    and $-16, %rsp
    call trap_dispatch
    mov %rbx, %rsp
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rbp
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rbx
    pop %rax
    add $16, %rsp               /* vector, error code */
    /* iret: rsp at { flags, rip, cs, rflags, rsp, ss }; the stub pushes
     * rcx, r11, rax itself. */
    pushq $0
    jmp hypercall_page + HYPERCALL_IRET * 32

/* ---------------------------------------------------------------------- */
/* Probes.  A faulting instruction at a label listed in __extable resumes at
 * probe_fixup with rax set by trap_dispatch. */
.macro EXTABLE fault
    .pushsection __extable, "a"
    .quad \fault, probe_fixup
    .popsection
.endm

probe_fixup:
    ret

.macro PROBE name, setup, insn
    .globl \name
\name:
    \setup
1:  \insn
    xor %eax, %eax
    ret
    EXTABLE 1b
.endm

    .globl probe_read64
probe_read64:
1:  mov (%rdi), %rax
    mov %rax, (%rsi)
    xor %eax, %eax
    ret
    EXTABLE 1b

PROBE probe_write64, nop, "mov %rsi, (%rdi)"
PROBE probe_write32, nop, "movl %esi, (%rdi)"
PROBE probe_or64, nop, "orq %rsi, (%rdi)"
PROBE probe_xchg64, nop, "xchg %rsi, (%rdi)"
PROBE probe_mov_to_cr3, nop, "mov %rdi, %cr3"
PROBE probe_mov_from_cr3, nop, "mov %cr3, %rax"
PROBE probe_mov_to_cr0, nop, "mov %rdi, %cr0"
PROBE probe_cli, nop, cli
PROBE probe_sti, nop, sti
PROBE probe_hlt, nop, hlt
PROBE probe_inb, "mov %edi, %edx", "inb %dx, %al"
PROBE probe_outb, "mov %edi, %edx; mov %esi, %eax", "outb %al, %dx"
PROBE probe_lgdt, nop, "lgdt (%rdi)"
PROBE probe_lidt, nop, "lidt (%rdi)"
PROBE probe_ltr, nop, "ltr %di"
PROBE probe_wrmsr, "mov %edi, %ecx; mov %rsi, %rax; mov %rsi, %rdx; shr $32, %rdx", wrmsr
PROBE probe_rdmsr, "mov %edi, %ecx", rdmsr
PROBE probe_invlpg, nop, "invlpg (%rdi)"
PROBE probe_wbinvd, nop, wbinvd
PROBE probe_clts, nop, clts
PROBE probe_swapgs, nop, swapgs
PROBE probe_rdpmc, "xor %ecx, %ecx", rdpmc
PROBE probe_mov_to_dr7, nop, "mov %rdi, %dr7"
PROBE probe_xsetbv, "xor %ecx, %ecx; xor %eax, %eax; xor %edx, %edx", xsetbv
PROBE probe_int80, nop, "int $0x80"
PROBE probe_ud2, nop, ud2
/* SYSCALL in kernel mode is Xen's hypercall instruction: hypercall 63
 * (no such call) must come back with -ENOSYS. */
    .globl probe_syscall
probe_syscall:
    mov $63, %eax
    syscall
    ret
PROBE probe_fnop, nop, fnop
PROBE probe_div0, "xor %ecx, %ecx; mov $1, %eax; xor %edx, %edx", "div %ecx"

/* int3 is a trap: the bounce frame's rip is the next instruction. */
    .globl probe_int3
probe_int3:
    mov %rdi, %rax
    int3
1:  ret
    EXTABLE 1b

/* Offsets into struct vcpu of recover_rip / recover_rsp: checked by a
 * _Static_assert in kernel.c. */
#define VCPU_RECOVER_RIP 0
#define VCPU_RECOVER_RSP 8

#define VCPU_USER_RETURN_RSP 16
#define FLAT_USER_CS 0xe033
#define FLAT_USER_SS 0xe02b

/* usermode_probe(v, user_rip, user_rsp, arg) */
    .globl usermode_probe
usermode_probe:
    push %rbx
    push %rbp
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rdi, %rbx
    mov %rsp, VCPU_USER_RETURN_RSP(%rbx)
    lea usermode_return(%rip), %rax
    mov %rax, VCPU_RECOVER_RIP(%rbx)
    mov %rsp, VCPU_RECOVER_RSP(%rbx)
    mov %rcx, %rdi
    pushq $FLAT_USER_SS
    push %rdx                           /* rsp */
    pushq $0x202                        /* rflags */
    pushq $FLAT_USER_CS
    push %rsi                           /* rip */
    pushq $0                            /* flags */
    xor %eax, %eax
    jmp hypercall_page + HYPERCALL_IRET * 32
usermode_return:
    movq $0, VCPU_RECOVER_RIP(%rbx)
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbp
    pop %rbx
    ret

/* The syscall callback: kernel mode, on the stack_switch() stack, with
 * the bounce frame { rcx, r11, rip, cs, rflags, rsp, ss } that it drops. */
    .globl syscall_entry
syscall_entry:
    mov %rsp, %rbx
    and $-STACK_SIZE, %rbx
    mov (%rbx), %rbx                    /* struct vcpu *, at the stack base */
    mov VCPU_USER_RETURN_RSP(%rbx), %rsp
    jmp usermode_return

    .globl user_cli
user_cli:
    cli
    syscall

/* A hypercall (xen_version) attempted from guest user mode. */
    .globl user_hypercall
user_hypercall:
    xor %edi, %edi
    xor %esi, %esi
    call hypercall_page + 17 * 32
    syscall

    .globl user_read_and_syscall
user_read_and_syscall:
    mov (%rdi), %rax
    syscall
    ud2

/* hypercall_raw(v, addr, rax, a1, a2, a3) */
    .globl hypercall_raw
hypercall_raw:
    push %rbx
    push %rbp
    mov %rdi, %rbx                      /* v */
    lea 2f(%rip), %rax
    mov %rax, VCPU_RECOVER_RIP(%rbx)
    mov %rsp, VCPU_RECOVER_RSP(%rbx)
    mov %rsi, %rbp                      /* addr */
    mov %rdx, %rax
    mov %rcx, %rdi
    mov %r8, %rsi
    mov %r9, %rdx
    xor %r10d, %r10d
    xor %r8d, %r8d
    call *%rbp
2:  movq $0, VCPU_RECOVER_RIP(%rbx)
    pop %rbp
    pop %rbx
    ret

/* iret_probe(v, cs, ss, rflags) */
    .globl iret_probe
iret_probe:
    push %rbx
    mov %rdi, %rbx
    lea 2f(%rip), %rax
    mov %rax, VCPU_RECOVER_RIP(%rbx)
    mov %rsp, VCPU_RECOVER_RSP(%rbx)
    mov %rsp, %rax                      /* resume on this stack */
    push %rdx                           /* ss */
    push %rax                           /* rsp */
    push %rcx                           /* rflags */
    push %rsi                           /* cs */
    lea 1f(%rip), %rax
    push %rax                           /* rip */
    pushq $0                            /* flags */
    xor %eax, %eax
    jmp hypercall_page + HYPERCALL_IRET * 32
1:  mov %cs, %ecx
    and $3, %ecx
    pushf
    pop %rax
    and $0x3000, %eax
    or %rcx, %rax
2:  movq $0, VCPU_RECOVER_RIP(%rbx)
    pop %rbx
    ret

/* ---------------------------------------------------------------------- */
/* Xen's ELF notes: name "Xen", numeric values as 8-byte words. */
.macro XEN_NOTE_BEGIN type
    .pushsection .note.Xen, "a", @note
    .balign 4
    .long 4
    .long 3f - 2f
    .long \type
    .asciz "Xen"
    .balign 4
2:
.endm
.macro XEN_NOTE_END
3:  .balign 4
    .popsection
.endm
.macro XEN_NOTE_STR type, str
    XEN_NOTE_BEGIN \type
    .asciz "\str"
    XEN_NOTE_END
.endm
.macro XEN_NOTE_QUAD type, value
    XEN_NOTE_BEGIN \type
    .quad \value
    XEN_NOTE_END
.endm

XEN_NOTE_STR 6, "memvisor-pvkernel"         /* GUEST_OS */
XEN_NOTE_STR 7, "0.1"                       /* GUEST_VERSION */
XEN_NOTE_STR 5, "xen-3.0"                   /* XEN_VERSION */
XEN_NOTE_STR 8, "generic"                   /* LOADER */
XEN_NOTE_QUAD 3, 0xffffffff80000000         /* VIRT_BASE */
XEN_NOTE_QUAD 4, 0                          /* PADDR_OFFSET */
XEN_NOTE_QUAD 1, _start                     /* ENTRY */
XEN_NOTE_QUAD 2, hypercall_page             /* HYPERCALL_PAGE */
XEN_NOTE_STR 10, "writable_page_tables"     /* FEATURES */

    .section .note.GNU-stack, "", @progbits
