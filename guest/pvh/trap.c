/* trap.c - ring 0's only C: what an exception or interrupt does (pvh.h).
 * Interrupts (vectors 32-255; both 8259s are masked, so only spurious ones)
 * return at once.  An exception after ring 3 said its last word is the way
 * out: halt quietly.  Any other exception is reported on the serial port
 * and halts the guest, so a fault is never mistaken for a heartbeat. */
#include "pvh.h"

static void halt_forever(void)
{
    for (;;)
        __asm__ volatile("cli; hlt");
}

void trap_ring0(struct trap_frame *f)
{
    if (f->vector >= 32)
        return;
    if (!workload_finished) {
        uint64_t cr2;
        __asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
        say("pvh-workload: FAIL: exception %lu error 0x%lx at rip 0x%lx "
            "(cs 0x%lx) rsp 0x%lx cr2 0x%lx",
            (unsigned long)f->vector, (unsigned long)f->error,
            (unsigned long)f->rip, (unsigned long)f->cs, (unsigned long)f->rsp,
            (unsigned long)cr2);
    }
    halt_forever();
}
