/*
 * shim.S - the ring-0 code memvisor places in every PV address space.
 *
 * Assembled on its own (no sanitizer, no libc), linked at address 0 and
 * turned into a flat image; every reference inside is RIP-relative, so the
 * image runs wherever memvisor maps it (L4 slot 256, SHIM_VA_BASE).
 *
 * Ring 0 on an emulating KVM costs about a microsecond per instruction, so
 * every path here is two instructions: one `out` that hands the event to
 * memvisor (the port says which event: SHIM_PORT_BASE + vector), then
 * `iretq` through the frame that memvisor has prepared on this vCPU's shim
 * stack meanwhile (it sets RSP and RIP before resuming).  Decoding,
 * validation, bounce frames and CR3 switches all happen in memvisor at
 * native speed.  Only baseline general-register instructions appear here:
 * tests/shim checks the disassembly against the list of instructions that
 * fail in emulated ring 0.
 *
 * Layout of the image (offsets are part of the contract with shim.h):
 *   0x000  start:   iretq              first entry into ring 3
 *   0x008  return:  iretq              every resume after an event
 *   0x040  vector stubs, 8 bytes each, for entries 0..63:
 *                   out %al, $(SHIM_PORT_BASE + n); iretq
 *   0x300  touch: for each of %ecx machine addresses (as direct-map
 *          virtual addresses) in the list at %rsi, load the quadword and
 *          store it back (bit 0 set: load and store back the first two
 *          bytes of the page instead, a write narrower than an entry, which
 *          makes the KVM drop every shadow of that page), then reload CR3
 *          and hand over (entry 34).  The store is a locked compare-and-
 *          exchange with the value just loaded, repeated with the fresh
 *          value until it succeeds: another vCPU's hypercall, or the KVM
 *          setting accessed/dirty bits, may change the entry in between;
 *          the loop only ever writes an entry's current value, and always
 *          writes once.  The
 *          stores make the KVM see page-table entries memvisor wrote from
 *          the host (a shadow MMU only notices guest writes); the CR3
 *          reload flushes this vCPU's TLB.  memvisor restores the guest's
 *          registers at the hand-over.
 *   0x400  per-vCPU page template (copied to each vCPU's page, which
 *          memvisor maps at SHIM_VA_PERCPU(i)):
 *          +0x80  SYSCALL entry (LSTAR) for CPUs where SYSCALL does
 *                 enter ring 0: save the user RSP in the page, switch to
 *                 the page's stack, and hand over like a vector stub.
 */
#define SHIM_PORT_BASE 0xc0
#define SHIM_ENTRY_SYSCALL 33
#define SHIM_ENTRY_TOUCH_DONE 34
#define PERCPU_SAVED_RSP 0xf8
#define PERCPU_STACK_TOP 0x1000

    .code64
    .text
    .globl shim_image_begin
shim_image_begin:
start:
    iretq
    .balign 8, 0x90
resume:
    iretq

    .org 0x40, 0x90
vectors:
    .set n, 0
    .rept 64
    .balign 8, 0x90
    outb %al, $(SHIM_PORT_BASE + n)
    iretq
    .set n, n + 1
    .endr

    .org 0x300, 0x90
touch:
    testl %ecx, %ecx
    jz 2f
1:  movq (%rsi), %rdi
    btrq $0, %rdi
    jc 3f
    movq (%rdi), %rax               /* an entry: store it back */
5:  lock cmpxchgq %rax, (%rdi)
    jnz 5b
    jmp 4f
3:  movw (%rdi), %ax                /* a whole table: a 2-byte store */
6:  lock cmpxchgw %ax, (%rdi)
    jnz 6b
4:  addq $8, %rsi
    decl %ecx
    jnz 1b
2:  movq %cr3, %rax
    movq %rax, %cr3
    outb %al, $(SHIM_PORT_BASE + SHIM_ENTRY_TOUCH_DONE)
    iretq

    .org 0x400, 0x90
percpu_template:
    .org 0x400 + 0x80, 0x00
syscall_entry:
    movq %rsp, (percpu_template + PERCPU_SAVED_RSP)(%rip)
    leaq (percpu_template + PERCPU_STACK_TOP - 40)(%rip), %rsp
    outb %al, $(SHIM_PORT_BASE + SHIM_ENTRY_SYSCALL)
    iretq
syscall_entry_end:
    .org 0x400 + 0x100, 0x00
    .globl shim_image_end
shim_image_end:
