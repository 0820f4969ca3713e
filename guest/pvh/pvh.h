/*
 * pvh.h - the PVH workload guest: what its ring-0 setup (head.S, trap.c) and
 * its ring-3 workload (workload.c) share: port I/O, the TSC, the serial
 * port, and the start-of-day structure of Xen's PVH boot ABI.
 *
 * Contract:
 *  1. Everything here works in ring 3 as well as ring 0: the TSS I/O bitmap
 *     (head.S) opens exactly the ports used here (PIT 0x40-0x43 and 0x61,
 *     COM1 0x3f8-0x3ff, ACPI PM1a control 0x604, memvisor's exit port 0xf4,
 *     and dev.h's device models at 0x5000-0x503f and 0x5100-0x511f, and
 *     0x5040-0x5043, which nobody claims: dev.c times its exit).
 *  2. serial_write() never blocks forever: it gives up waiting for the
 *     transmitter after SERIAL_POLLS reads of the line status register and
 *     writes the byte anyway.
 *  3. The start-of-day structures are include/xen's (version 1: with the
 *     memory map); an address field of 0 means absent.
 */
#ifndef MEMVISOR_GUEST_PVH_H
#define MEMVISOR_GUEST_PVH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "xen/arch-x86/hvm/start_info.h"

#define COM1 0x3f8
#define SERIAL_POLLS 100000

static inline void outb(uint16_t port, uint8_t v)
{
    __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline void outw(uint16_t port, uint16_t v)
{
    __asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port));
}

static inline uint8_t inb(uint16_t port)
{
    uint8_t v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

static inline uint64_t rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}

static inline void cpu_relax(void)
{
    __asm__ volatile("pause" ::: "memory");
}

void serial_init(void);
void serial_write(const char *s, size_t n);
/* Formats one line (a newline is added) and writes it. */
void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Set by ring 3 once it has said its last word: an exception after that is
 * the deliberate way out (trap.c halts quietly). */
extern volatile bool workload_finished;

struct trap_frame {
    uint64_t r11, r10, r9, r8, rdi, rsi, rdx, rcx, rax;
    uint64_t vector, error;
    uint64_t rip, cs, rflags, rsp, ss;
};
void trap_ring0(struct trap_frame *f);
void workload_main(const struct hvm_start_info *si);

#endif
