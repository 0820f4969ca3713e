/*
 * pvhstub.S - the smallest PVH guest for the HVM tests: entered by
 * memvisor (or QEMU's -kernel) at its XEN_ELFNOTE_PHYS32_ENTRY point in
 * 32-bit protected mode, paging off, EBX = struct hvm_start_info.  Ring 0
 * only, general registers only (no int3, no SSE: KVM-PVM emulates ring 0).
 *
 * On the serial port (polling LSR.THRE), one line each:
 *   pvh: hello
 *   pvh: magic ok version 00000001          (or "pvh: bad magic" and exit 3)
 *   pvh: cmdline <the command line>
 *   pvh: memmap 00000003 ram-top <end of the last RAM entry>
 *   pvh: modules 00000001 size <bytes> sum <32-bit byte sum>
 *   pvh: wrote 00000040 pages at 00200000   (one store per page)
 *   pvh: unclaimed mmio <value read at 0xd0000000> port <byte from 0x2f0>
 *   pvh: echo <a line read from the serial port>   (cmdline starting 'e')
 *   pvh: done
 * then it writes its status to the exit port 0xf4: 42 if the command line
 * starts with 's', else 0.
 */
#define START_MAGIC 0x336ec578
#define COM1 0x3f8
#define EXIT_PORT 0xf4

    .section .note.Xen, "a"
    .p2align 2
    .long 4, 4, 18          /* namesz, descsz, XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .long pvh_start

    .text
    .code32
    .globl pvh_start
pvh_start:
    mov $0x80000, %esp
    mov %ebx, %esi
    mov $m_hello, %eax
    call puts
    cmpl $START_MAGIC, (%esi)
    je 1f
    mov $m_bad, %eax
    call puts
    mov $3, %al
    out %al, $EXIT_PORT
1:  mov $m_magic, %eax
    call puts
    mov 4(%esi), %eax
    call puthex
    call nl
    mov $m_cmd, %eax
    call puts
    mov 24(%esi), %eax
    call puts
    call nl
    /* the memory map: count, and the end of the last entry */
    mov $m_mm, %eax
    call puts
    mov 48(%esi), %eax
    call puthex
    mov $m_top, %eax
    call puts
    mov 48(%esi), %ecx
    mov 40(%esi), %ebx
    dec %ecx
    imul $24, %ecx, %ecx
    add %ecx, %ebx
    mov (%ebx), %eax
    add 8(%ebx), %eax
    call puthex
    call nl
    /* modules: count, then the first one's size and byte sum */
    mov $m_mod, %eax
    call puts
    mov 12(%esi), %eax
    call puthex
    cmpl $0, 12(%esi)
    je 3f
    mov 16(%esi), %ebx
    mov $m_size, %eax
    call puts
    mov 8(%ebx), %eax
    call puthex
    mov $m_sum, %eax
    call puts
    mov (%ebx), %edi
    mov 8(%ebx), %ecx
    xor %eax, %eax
    xor %edx, %edx
    test %ecx, %ecx
    jz 2f
4:  movzbl (%edi), %edx
    add %edx, %eax
    inc %edi
    dec %ecx
    jnz 4b
2:  call puthex
3:  call nl
    /* one store per page into 64 pages at 2 MiB */
    mov $0x200000, %edi
    mov $64, %ecx
5:  mov %ecx, (%edi)
    add $4096, %edi
    dec %ecx
    jnz 5b
    mov $m_wrote, %eax
    call puts
    /* accesses nobody claims: answered, and the guest goes on */
    mov $m_unc, %eax
    call puts
    mov 0xd0000000, %eax
    movl $0x12345678, 0xd0000000
    call puthex
    mov $m_port, %eax
    call puts
    mov $0x2f0, %dx
    xor %eax, %eax
    inb %dx, %al
    call puthex
    call nl
    /* echo mode: a line from the serial port */
    mov 24(%esi), %ebx
    cmpb $'e', (%ebx)
    jne 7f
    mov $m_echo, %eax
    call puts
6:  mov $COM1 + 5, %dx
    inb %dx, %al
    test $1, %al
    jz 6b
    mov $COM1, %dx
    inb %dx, %al
    cmp $'\n', %al
    je 8f
    cmp $'\r', %al
    je 8f
    call putc
    jmp 6b
8:  call nl
7:  mov $m_done, %eax
    call puts
    mov 24(%esi), %ebx
    xor %eax, %eax
    cmpb $'s', (%ebx)
    jne 9f
    mov $42, %al
9:  out %al, $EXIT_PORT
10: hlt
    jmp 10b

/* putc(al): wait for THRE, send */
putc:
    push %edx
    push %eax
1:  mov $COM1 + 5, %dx
    inb %dx, %al
    test $0x20, %al
    jz 1b
    pop %eax
    mov $COM1, %dx
    outb %al, %dx
    pop %edx
    ret

/* puts(eax): a NUL-terminated string */
puts:
    push %ebx
    mov %eax, %ebx
1:  movb (%ebx), %al
    test %al, %al
    jz 2f
    call putc
    inc %ebx
    jmp 1b
2:  pop %ebx
    ret

nl:
    mov $'\n', %al
    jmp putc

/* puthex(eax): eight hex digits */
puthex:
    push %ecx
    push %ebx
    mov %eax, %ebx
    mov $8, %ecx
1:  rol $4, %ebx
    mov %ebx, %eax
    and $0xf, %eax
    movb hexdigits(%eax), %al
    call putc
    dec %ecx
    jnz 1b
    pop %ebx
    pop %ecx
    ret

    .section .rodata
hexdigits: .ascii "0123456789abcdef"
m_hello: .asciz "pvh: hello\n"
m_bad:   .asciz "pvh: bad magic\n"
m_magic: .asciz "pvh: magic ok version "
m_cmd:   .asciz "pvh: cmdline "
m_mm:    .asciz "pvh: memmap "
m_top:   .asciz " ram-top "
m_mod:   .asciz "pvh: modules "
m_size:  .asciz " size "
m_sum:   .asciz " sum "
m_wrote: .asciz "pvh: wrote 00000040 pages at 00200000\n"
m_unc:   .asciz "pvh: unclaimed mmio "
m_port:  .asciz " port "
m_echo:  .asciz "pvh: echo "
m_done:  .asciz "pvh: done\n"
