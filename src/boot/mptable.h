/*
 * mptable.h - the Intel MultiProcessor Specification (1.4) tables of an
 * HVM guest: how a kernel booted without ACPI (Linux with acpi=off) learns
 * its processors and its I/O APIC, as SeaBIOS tells a guest of QEMU's pc
 * machine and Firecracker tells its guests.
 *
 * What the tables say (KVM's in-kernel irqchip, its default GSI routing):
 *  - one processor per vCPU, local APIC id = the vCPU's index, vCPU 0 the
 *    bootstrap processor, all enabled;
 *  - one ISA bus (id 0) and one I/O APIC (id nr_cpus, version 0x11, at
 *    MPTABLE_IOAPIC_BASE);
 *  - ISA IRQ i (0..15) on I/O APIC input i, polarity and trigger as the
 *    bus defines (edge, active high): KVM routes GSI i to that input and
 *    to PIC pin i, the PIT on GSI 0, the UART on GSI 4;
 *  - the PIC's ExtINT on every local APIC's LINT0, NMI on LINT1.
 * No IMCR (feature byte 2 bit 7 clear: virtual-wire mode until the kernel
 * switches to the I/O APIC).
 *
 * mptable_build() writes the floating pointer structure at gpa and the
 * configuration table right after it, both checksummed, into buf (the
 * bytes to be placed at gpa): -EINVAL for 0 or more than MPTABLE_MAX_CPUS
 * processors, -ENOSPC when len is short; *used says how many bytes.
 * Linux looks for the floating pointer in the last KiB of base memory
 * (639 KiB), which is where HVM domains have it (boot/pvh.h).
 */
#ifndef MEMVISOR_BOOT_MPTABLE_H
#define MEMVISOR_BOOT_MPTABLE_H

#include <stddef.h>
#include <stdint.h>

#include "lib/compiler.h"

#define MPTABLE_MAX_CPUS 32
#define MPTABLE_LAPIC_BASE 0xfee00000u
#define MPTABLE_IOAPIC_BASE 0xfec00000u
#define MPTABLE_ISA_IRQS 16
/* floating pointer 16, header 44, per CPU 20, bus 8, I/O APIC 8, 16 ISA
 * IRQs and 2 local interrupts at 8 each */
#define MPTABLE_SIZE(cpus) (16u + 44u + 20u * (cpus) + 8u + 8u + 8u * 18u)

int __must_check mptable_build(unsigned nr_cpus, uint32_t gpa, uint8_t *buf,
                               size_t len, size_t *used);

#endif
