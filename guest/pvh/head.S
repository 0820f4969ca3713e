/*
 * head.S - ring 0 of the PVH workload guest: the PVH entry (32-bit protected
 * mode, paging off, ebx = the hvm_start_info's physical address, as Xen's
 * PVH boot ABI defines it), the switch to long mode on static page tables,
 * the GDT, TSS (with the I/O bitmap that lets ring 3 reach the serial port,
 * the PIT, the ACPI PM control port, memvisor's exit port and the device
 * models' ports) and IDT, and the exception entries.
 *
 * Ring 0 is kept to this file and trap.c's report: on KVM-PVM every ring-0
 * instruction is emulated (~0.5 us each), so ring 0 only sets up and then
 * drops to ring 3 for good.  No int3, xgetbv, xsave family, SSE or
 * cmpxchg16b here (docs/quirks.md).
 */
#define XEN_ELFNOTE_PHYS32_ENTRY 18

#define SEL_CODE64  0x08
#define SEL_DATA    0x10
#define SEL_CODE32  0x18
#define SEL_UCODE   0x2b        /* 0x28 | 3 */
#define SEL_UDATA   0x33        /* 0x30 | 3 */
#define SEL_TSS     0x38

#define CR0_PE 0x00000001
#define CR0_WP 0x00010000
#define CR0_PG 0x80000000
#define CR4_PAE 0x20
#define MSR_EFER 0xc0000080
#define EFER_LME 0x100

#define TSS_SIZE 104
#define IOMAP_BYTES 8192
#define STACK0_SIZE 8192
#define STACK3_SIZE (64 * 1024)

/* ---------------------------------------------------------------------- */
    .section .text.head, "ax"
    .code32
    .globl _start
_start:
    cli
    cld
    mov %ebx, %esi                      /* hvm_start_info, kept for ring 3 */
    lgdt gdt_desc
    ljmp $SEL_CODE32, $1f
1:  mov $SEL_DATA, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov %eax, %fs
    mov %eax, %gs
    mov $stack0_top, %esp
    mov %cr4, %eax
    or $CR4_PAE, %eax
    mov %eax, %cr4
    mov $pml4, %eax
    mov %eax, %cr3
    mov $MSR_EFER, %ecx
    rdmsr
    or $EFER_LME, %eax
    wrmsr
    mov %cr0, %eax
    or $(CR0_PG | CR0_WP | CR0_PE), %eax
    mov %eax, %cr0
    ljmp $SEL_CODE64, $long_mode

    .code64
long_mode:
    mov $SEL_DATA, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    xor %eax, %eax
    mov %eax, %fs
    mov %eax, %gs
    mov $stack0_top, %rsp
    mov %esi, %r12d                     /* zero-extends: hvm_start_info */

    /* TSS descriptor base (the TSS lies below 4 GiB: high dword stays 0). */
    mov $tss, %eax
    mov $gdt_tss, %edi
    mov %ax, 2(%rdi)
    shr $16, %eax
    mov %al, 4(%rdi)
    mov %ah, 7(%rdi)
    mov $SEL_TSS, %ax
    ltr %ax

    /* IDT: 256 interrupt gates, DPL 0, each to its stub (16 bytes apart). */
    mov $idt, %rdi
    mov $trap_stubs, %rax
    mov $256, %ecx
2:  mov %ax, (%rdi)                     /* offset 15:0 */
    movw $SEL_CODE64, 2(%rdi)
    movw $0x8e00, 4(%rdi)               /* present, DPL 0, 64-bit int gate */
    mov %rax, %rdx
    shr $16, %rdx
    mov %dx, 6(%rdi)                    /* offset 31:16 (63:32 stay 0) */
    add $16, %rax
    add $16, %rdi
    dec %ecx
    jnz 2b
    lidt idt_desc

    /* Mask both 8259s: nothing interrupts ring 3. */
    mov $0xff, %al
    out %al, $0x21
    out %al, $0xa1

    /* To ring 3 for good: rdi = hvm_start_info. */
    mov %r12, %rdi
    pushq $SEL_UDATA
    pushq $stack3_top
    pushq $0x3002                       /* IOPL 3, IF 0 */
    pushq $SEL_UCODE
    pushq $workload_main
    iretq

/* ---------------------------------------------------------------------- */
/* Exception and interrupt entries, 16 bytes each: those without a CPU
 * error code push 0, then each pushes its vector. */
    .text
    .balign 16
trap_stubs:
    vec = 0
    .rept 256
    .balign 16
    .if (vec == 8) || (vec >= 10 && vec <= 14) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
    pushq $vec
    .else
    pushq $0
    pushq $vec
    .endif
    jmp trap_common
    vec = vec + 1
    .endr

trap_common:
    push %rax
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %r8
    push %r9
    push %r10
    push %r11
    mov %rsp, %rdi
    call trap_ring0                     /* returns only for interrupts */
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rax
    add $16, %rsp
    iretq

/* ---------------------------------------------------------------------- */
    .data
    .balign 16
gdt:
    .quad 0
    .quad 0x00af9a000000ffff            /* 0x08 ring-0 code, 64-bit */
    .quad 0x00cf92000000ffff            /* 0x10 ring-0 data, flat */
    .quad 0x00cf9a000000ffff            /* 0x18 ring-0 code, 32-bit flat */
    .quad 0                             /* 0x20 unused */
    .quad 0x00affa000000ffff            /* 0x28 ring-3 code, 64-bit */
    .quad 0x00cff2000000ffff            /* 0x30 ring-3 data, flat */
gdt_tss:                                /* 0x38 64-bit TSS, base set at boot */
    .word TSS_SIZE + IOMAP_BYTES        /* limit: TSS, bitmap, 0xff byte */
    .word 0
    .byte 0, 0x89, 0, 0
    .quad 0
gdt_end:

gdt_desc:
    .word gdt_end - gdt - 1
    .quad gdt                           /* lgdt in 32-bit mode reads 6 bytes */

    .balign 16
idt_desc:
    .word 256 * 16 - 1
    .quad idt

/* The TSS: rsp0 the ring-0 stack, the I/O bitmap right after it.  A set
 * bit denies; open are the ports ring 3 uses: the PIT (0x40-0x43) and its
 * gate (0x61) to calibrate the TSC, the serial port (0x3f8-0x3ff), and to
 * end the run the ACPI PM1a control port of QEMU's pc machine (0x604) and
 * memvisor's exit port (0xf4), and the device mode's (dev.h) test and block
 * devices (0x5000-0x503f, 0x5100-0x511f) and the unclaimed port it times
 * (0x5040-0x5043). */
    .balign 16
tss:
    .long 0
    .quad stack0_top                    /* rsp0 */
    .fill 102 - 12, 1, 0
    .word tss_iomap - tss               /* I/O map base */
tss_iomap:
    .fill 8, 1, 0xff                    /* ports 0x000-0x03f */
    .byte 0xf0                          /* 0x040-0x043 open */
    .fill 3, 1, 0xff
    .byte 0xfd                          /* 0x061 open */
    .fill 30 - 13, 1, 0xff
    .byte 0xef                          /* 0x0f4 open */
    .fill 127 - 31, 1, 0xff
    .byte 0x00                          /* 0x3f8-0x3ff open */
    .fill 192 - 128, 1, 0xff
    .byte 0xcf                          /* 0x604-0x605 open */
    .fill 2560 - 193, 1, 0xff
    .fill 8, 1, 0x00                    /* 0x5000-0x503f open: test device */
    .byte 0xf0                          /* 0x5040-0x5043 open: unclaimed */
    .fill 2592 - 2569, 1, 0xff
    .fill 4, 1, 0x00                    /* 0x5100-0x511f open: block device */
    .fill IOMAP_BYTES - 2596, 1, 0xff
    .byte 0xff                          /* the byte after the map */

/* Page tables: 0..4 GiB identity-mapped with 2 MiB pages, user-accessible
 * (ring 3 owns everything in this guest). */
    .balign 4096
pml4:
    .quad pdpt + 0x007
    .fill 511, 8, 0
pdpt:
    .quad pd + 0x0000 + 0x007
    .quad pd + 0x1000 + 0x007
    .quad pd + 0x2000 + 0x007
    .quad pd + 0x3000 + 0x007
    .fill 508, 8, 0
pd:
    addr = 0
    .rept 2048
    .quad addr + 0x087                  /* P RW US PS */
    addr = addr + 0x200000
    .endr

    .balign 4096
idt:
    .fill 256 * 16, 1, 0

    .balign 16
stack0:
    .fill STACK0_SIZE, 1, 0
stack0_top:

    .balign 16
    .globl stack3
stack3:
    .fill STACK3_SIZE, 1, 0
    .globl stack3_top
stack3_top:

/* ---------------------------------------------------------------------- */
/* The PVH entry point: Xen's ELF note, name "Xen", type PHYS32_ENTRY, a
 * 32-bit physical address. */
    .section .note.Xen, "a", @note
    .balign 4
    .long 4                             /* namesz */
    .long 4                             /* descsz */
    .long XEN_ELFNOTE_PHYS32_ENTRY
    .asciz "Xen"
    .long _start

    .section .note.GNU-stack, "", @progbits
