/*
 * miniguest.S - a tiny PV kernel for the hypervisor tests, position
 * independent, loaded by the tests at VIRT_BASE 0xffffffff80000000 with
 * its hypercall page at +0x1000.  It prints its command line, then tries
 * what a PV guest must never achieve and prints one line per attempt that
 * was refused:
 *   "mini: efault"          a hypercall buffer in the shim's slot
 *   "mini: rw-refused"      update_va_mapping making its L4 writable
 *   "mini: slot-refused"    mmu_update of L4 slot 256 (the shim's)
 *   "mini: cr3-refused"     mov to CR3 (#GP, bounced to its handler)
 *   "mini: shim-read-refused"  a load from the shim's slot (#PF)
 *   "mini: ptstore-refused" a store to its L4 through the read-only
 *                           mapping (#PF: only L1 stores are emulated)
 *   "mini: l1store-emulated"  a store to an L1 entry through the
 *                           read-only mapping, applied by memvisor
 * and powers off.  With "crash" first on its command line it executes ud2
 * before registering any handler (the domain must crash alone); with
 * "bench" it makes 2000 xen_version hypercalls, then takes 1000 #GP bounces
 * (mov to CR3, each returned from with the iret hypercall), then powers off.
 */
#define HC(n) (hcpage + (n) * 32)
#define VIRT_BASE 0xffffffff80000000

.macro PRINT msg, len
    lea \msg(%rip), %rdx
    mov $\len, %esi
    xor %edi, %edi
    call HC(18)
.endm

    .section .rodata
    .globl miniguest_begin, miniguest_end
    .balign 4096
miniguest_begin:
start:
    mov %rsi, %r12                  /* start_info */
    cmpb $'c', 128(%r12)
    jne 1f
    ud2                             /* "crash": no trap table yet */
1:  lea handler_gp(%rip), %rax
    mov %rax, traps + 8(%rip)
    lea handler_pf(%rip), %rax
    mov %rax, traps + 24(%rip)
    lea traps(%rip), %rdi
    call HC(0)                      /* set_trap_table */
    cmpb $'b', 128(%r12)
    je bench

    /* the command line */
    lea 128(%r12), %rdx
    xor %esi, %esi
2:  cmpb $0, (%rdx, %rsi)
    je 3f
    inc %esi
    jmp 2b
3:  xor %edi, %edi
    call HC(18)
    PRINT nl, 1

    /* 1. console_io from the shim's slot */
    xor %edi, %edi
    mov $4, %esi
    movabs $0xffff800000000000, %rdx
    call HC(18)
    cmp $-14, %rax
    jne 1f
    PRINT m_efault, 13
1:
    /* rbx = mfn of the L4: mfn_list[(pt_base - VIRT_BASE) >> 12] */
    mov 88(%r12), %rax
    movabs $VIRT_BASE, %rcx
    sub %rcx, %rax
    shr $12, %rax
    mov 104(%r12), %rcx
    mov (%rcx, %rax, 8), %rbx

    /* 2. update_va_mapping(pt_base, L4 | P RW US A D) */
    mov 88(%r12), %rdi
    mov %rbx, %rsi
    shl $12, %rsi
    or $0x67, %rsi
    xor %edx, %edx
    call HC(14)
    test %rax, %rax
    jns 1f
    PRINT m_rw, 17
1:
    /* 3. mmu_update(L4[256] = L4 | P RW US) */
    sub $32, %rsp
    mov %rbx, %rax
    shl $12, %rax
    add $(256 * 8), %rax
    mov %rax, (%rsp)
    mov %rbx, %rax
    shl $12, %rax
    or $7, %rax
    mov %rax, 8(%rsp)
    movl $0, 16(%rsp)
    mov %rsp, %rdi
    mov $1, %esi
    lea 16(%rsp), %rdx
    mov $0x7ff0, %r10d
    call HC(1)
    add $32, %rsp
    test %rax, %rax
    jns 1f
    PRINT m_slot, 19
1:
    /* 4. mov to CR3 */
    xor %r14d, %r14d
    mov %rbx, %rax
    shl $12, %rax
    mov %rax, %cr3                  /* 0f 22 d8: 3 bytes */
    cmp $13, %r14
    jne 1f
    PRINT m_cr3, 18
1:
    /* 5. load from the shim's slot */
    xor %r14d, %r14d
    movabs $0xffff800000000000, %rax
    mov (%rax), %r15                /* 4c 8b 38: 3 bytes */
    cmp $14, %r14
    jne 1f
    PRINT m_shimread, 24
1:
    /* 6. store into the L4 through its read-only mapping */
    xor %r14d, %r14d
    mov 88(%r12), %rax
    mov %rcx, (%rax)                /* 48 89 08: 3 bytes */
    cmp $14, %r14
    jne 1f
    PRINT m_ptstore, 22
1:
    /* 7. rewrite an L1 entry through the read-only mapping: the last
     * bootstrap page-table frame is an L1 (the builder allocates tables
     * top-down); write back its entry 1 with the A bit set. */
    xor %r14d, %r14d
    mov 96(%r12), %rax
    dec %rax
    shl $12, %rax
    add 88(%r12), %rax              /* VA of the last table (an L1) */
    mov 8(%rax), %rcx
    or $0x20, %rcx
    mov %rcx, 8(%rax)               /* 48 89 48 08: plain MOV store */
    test %r14, %r14
    jnz 1f
    PRINT m_l1store, 24
1:
    /* poweroff */
    sub $16, %rsp
    movl $0, (%rsp)
    mov $2, %edi
    mov %rsp, %rsi
    call HC(29)
    ud2

bench:
    mov $2000, %r13d
1:  xor %edi, %edi
    call HC(17)
    dec %r13d
    jnz 1b
    mov $1000, %r13d
1:  mov %cr3, %rax                  /* 0f 20 d8: 3 bytes, #GP */
    dec %r13d
    jnz 1b
    sub $16, %rsp
    movl $0, (%rsp)
    mov $2, %edi
    mov %rsp, %rsi
    call HC(29)
    ud2

/* Bounce frame: rcx, r11, error code, rip, cs, rflags, rsp, ss. */
handler_gp:
    mov $13, %r14
    jmp 1f
handler_pf:
    mov $14, %r14
1:  addq $3, 24(%rsp)
    pop %rcx
    pop %r11
    add $8, %rsp
    pushq $0
    jmp HC(23)

    .balign 16
traps:
    .byte 13, 0
    .word 0xe033
    .long 0
    .quad 0
    .byte 14, 0
    .word 0xe033
    .long 0
    .quad 0
    .quad 0, 0

nl: .ascii "\n"
m_efault: .ascii "mini: efault\n"
m_rw: .ascii "mini: rw-refused\n"
m_slot: .ascii "mini: slot-refused\n"
m_cr3: .ascii "mini: cr3-refused\n"
m_shimread: .ascii "mini: shim-read-refused\n"
m_ptstore: .ascii "mini: ptstore-refused\n"
m_l1store: .ascii "mini: l1store-emulated\n"

    .org 0x1000
hcpage:
    .fill 4096, 1, 0
miniguest_end:
    .section .note.GNU-stack, "", @progbits
