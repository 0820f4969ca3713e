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
 *   pvh: irq <a line received by interrupts> interrupts <n> bad-iir <iir>
 *                                            (cmdline starting 'i')
 *   pvh: tick <n> ok, n = 1..20, ~2^28 TSC cycles apart, per-page counters
 *   checked in 256 pages (cmdline starting 'c'; "pvh: bad page", status 5)
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
    /* our own GDT (interrupt gates name its code selector) */
    lgdt gdt_desc
    ljmp $0x10, $1f
1:  mov $0x18, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
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
7:  mov 24(%esi), %ebx
    cmpb $'i', (%ebx)
    jne 11f
    call irq_mode
11: mov 24(%esi), %ebx
    cmpb $'c', (%ebx)
    jne 12f
    call count_mode
12: mov $m_done, %eax
    call puts
    mov 24(%esi), %ebx
    xor %eax, %eax
    cmpb $'s', (%ebx)
    jne 9f
    mov $42, %al
9:  out %al, $EXIT_PORT
10: hlt
    jmp 10b

/*
 * irq mode: the receiver's interrupt through the IOAPIC.  The PIC masked,
 * the LAPIC software-enabled, IOAPIC pin 4 -> vector 0x24 (edge, fixed,
 * APIC 0), IER = received data; the handler takes each byte (IIR must say
 * 04) until a newline, then the line is printed with the interrupt count.
 */
irq_mode:
    mov $0xff, %al
    out %al, $0x21
    out %al, $0xa1
    movl $0x1ff, 0xfee000f0          /* SVR: enabled, spurious 0xff */
    movl $0x18, 0xfec00000           /* IOREGSEL: redirection 4, low */
    movl $0x24, 0xfec00010
    movl $0x19, 0xfec00000           /* high: destination APIC 0 */
    movl $0, 0xfec00010
    /* IDT gate 0x24: 32-bit interrupt gate to irq_handler */
    mov $irq_handler, %eax
    mov $idt + 0x24 * 8, %edi
    mov %ax, (%edi)
    movw $0x10, 2(%edi)
    movw $0x8e00, 4(%edi)
    shr $16, %eax
    mov %ax, 6(%edi)
    lidt idt_desc
    movl $0, irq_count
    movl $0, rx_len
    movb $0, rx_done
    mov $COM1 + 1, %dx
    mov $1, %al
    out %al, %dx                     /* IER: received data */
    mov $m_irq, %eax
    call puts
1:  cli
    cmpb $0, rx_done
    jne 2f
    sti
    hlt                              /* sti's shadow: no wakeup lost */
    jmp 1b
2:  cli
    mov $COM1 + 1, %dx
    xor %al, %al
    out %al, %dx
    mov $rx_buf, %eax
    call puts
    mov $m_count, %eax
    call puts
    mov irq_count, %eax
    call puthex
    mov $m_iir, %eax
    call puts
    movzbl bad_iir, %eax
    call puthex
    call nl
    ret

irq_handler:
    push %eax
    push %edx
    push %ebx
    incl irq_count
    mov $COM1 + 2, %dx
    inb %dx, %al
    cmp $0x04, %al
    je 1f
    mov %al, bad_iir
1:  mov $COM1 + 5, %dx
    inb %dx, %al
    test $1, %al
    jz 3f
    mov $COM1, %dx
    inb %dx, %al
    cmp $'\n', %al
    jne 2f
    movb $1, rx_done
    jmp 1b
2:  mov rx_len, %ebx
    cmp $63, %ebx
    jae 1b
    mov %al, rx_buf(%ebx)
    incl rx_len
    jmp 1b
3:  movl $0, 0xfee000b0              /* EOI */
    pop %ebx
    pop %edx
    /* return without iret (KVM-PVM cannot emulate a 32-bit iret in ring
     * 0): the frame EIP, CS, EFLAGS becomes EFLAGS, EIP for popf; ret */
    mov 4(%esp), %eax
    xchg %eax, 12(%esp)
    mov %eax, 8(%esp)
    pop %eax
    add $4, %esp
    popfl
    ret

/*
 * count mode: 20 ticks about 2^28 TSC cycles apart; at tick n every one
 * of 256 pages at 4 MiB must hold n - 1 in its first word, and then gets
 * n; "pvh: tick n ok" each time, "pvh: bad page" and status 5 if not (a
 * save and restore in between must keep memory, registers and the
 * serial port as they were).
 */
count_mode:
    mov $1, %ecx                     /* n */
1:  mov $0x400000, %edi
    mov $256, %edx
2:  mov %ecx, %eax
    dec %eax
    cmp %eax, (%edi)
    jne 9f
    mov %ecx, (%edi)
    add $4096, %edi
    dec %edx
    jnz 2b
    mov $m_tick, %eax
    call puts
    mov %ecx, %eax
    call puthex
    mov $m_ok, %eax
    call puts
    /* wait: until the TSC's bits 28 and up change twice */
    push %ecx
    rdtsc
    shrd $28, %edx, %eax
    mov %eax, %ebx
    add $2, %ebx
3:  rdtsc
    shrd $28, %edx, %eax
    cmp %ebx, %eax
    js 3b
    pop %ecx
    inc %ecx
    cmp $21, %ecx
    jne 1b
    ret
9:  mov $m_badpg, %eax
    call puts
    mov $5, %al
    out %al, $EXIT_PORT
    ret

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

    .data
    .p2align 3
gdt:
    .quad 0
    .quad 0
    .quad 0x00cf9b000000ffff             /* 0x10: flat 32-bit code */
    .quad 0x00cf93000000ffff             /* 0x18: flat data */
gdt_desc:
    .word gdt_desc - gdt - 1
    .long gdt
    .p2align 3
idt:
    .fill 256, 8, 0
idt_desc:
    .word 256 * 8 - 1
    .long idt
irq_count: .long 0
rx_len:    .long 0
rx_done:   .byte 0
bad_iir:   .byte 0
rx_buf:    .fill 64, 1, 0

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
m_irq:   .asciz "pvh: irq "
m_tick:  .asciz "pvh: tick "
m_ok:    .asciz " ok\n"
m_badpg: .asciz "pvh: bad page\n"
m_count: .asciz " interrupts "
m_iir:   .asciz " bad-iir "
