/*
 * dev.h - the PVH workload guest's device mode (dev.c), for memvisor's
 * device models; off unless the command line says dev=N.
 *
 * Options: dev=N rounds of fill, copy, checksum, deferred DMA and page
 * tracking with the test device (ports 0x5000-0x503f); dev_mmio=GPA the
 * same registers by MMIO at GPA too; dev_block=1 the block device (ports
 * 0x5100-0x511f); dev_delay=MS the deferred DMA's delay (50);
 * dev_hb=1 a device check at every heartbeat (the device's last fill
 * still in its page, its registers intact, a new fill); dev_watch=1 the
 * watched page stays watched after the rounds and each heartbeat reports
 * new removal notices the device heard.
 *
 * Contract: runs in ring 3 only; never waits forever (every poll of the
 * device is bounded by the TSC); a device that answers all ones (cut off
 * by the hypervisor, or absent) is reported once and then left alone, and
 * the guest goes on.  Every failed check prints one "dev: FAIL" line.
 */
#ifndef MEMVISOR_GUEST_PVH_DEV_H
#define MEMVISOR_GUEST_PVH_DEV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The device mode's area: two 2 MiB pages of the identity map, the first
 * for pages the guest writes, the second for pages only devices write. */
#define DEV_AREA_BYTES (4ul << 20)

/* Reads the options; true if dev=N asks for the mode (area:
 * DEV_AREA_BYTES of RAM, 2 MiB-aligned, identity-mapped). */
bool dev_setup(const char *cmdline, size_t max, uint8_t *area,
               uint64_t tsc_khz);
/* The rounds; true if every check passed. */
bool dev_run(void);
/* At heartbeat n (1, 2, ...): dev_hb=1's checks, dev_watch=1's report. */
void dev_heartbeat(unsigned long n);
/* The final line; true if no check of the mode failed. */
bool dev_done(void);

#endif
