/*
 * hvm.h - the HVM kind of src/hv (src/hv/hvm/): a domain whose guest runs
 * its own page tables on KVM's virtual CPU, entered by PVH direct boot.
 * Never leaves src/hv.
 *
 * The memory path (docs/hvm.md): guest RAM is a p2m with gfn != mfn in
 * general, populated from the frame pool in runs of up to 2^HVM_RUN_ORDER
 * contiguous frames (whatever the allocator has, largest first), and
 * presented to KVM only through memslot transactions, with log-dirty on
 * from the start, so that every guest write is in KVM's log and every
 * write memvisor makes goes through gm_write_phys() (a gpa for an HVM
 * domain) into the same dirty log.  Guest-physical layout: boot/pvh.h.
 *
 * Platform: the in-kernel irqchip (LAPIC, IOAPIC, PIC) and PIT, CPUID as
 * KVM_GET_SUPPORTED_CPUID offers it, an 8250 UART at 0x3F8 on IRQ 4
 * (dev/uart.h), the exit port HVM_EXIT_PORT, reset by port 0x64 (0xFE) or
 * 0xCF9.  Other ports and MMIO: claimed by a device model (ioreq), else
 * unclaimed: reads see all ones, writes are dropped, both counted.  No
 * ACPI: the MultiProcessor tables the loader writes (boot/mptable.h) tell
 * the guest its processors, the I/O APIC and the ISA IRQ routing.
 *
 * Invariants (hvm_check(), called by the tests after every transaction):
 *  HV1. p2m_check(), memslot_check(), dirty_check() hold.
 *  HV2. Every KVM slot maps gfn -> mfn exactly as the p2m does (slot mfn
 *       + offset), every p2m RAM gfn lies in a slot, and every slot is
 *       LOG_DIRTY unless read-only: no guest write escapes the log.
 *  HV3. The p2m's RAM is exactly frames of the domain's runs, each
 *       owned by the domain and mapped at the gfn its run gave it (a
 *       removed gfn comes back only to its own frame).
 *
 * Locking: the UART has its own lock; the memory path's locks are
 * memslot's; the vCPU threads share nothing else.
 */
#ifndef MEMVISOR_HV_HVM_HVM_H
#define MEMVISOR_HV_HVM_HVM_H

#include "boot/pvh.h"
#include "dev/uart.h"
#include "hv/hv_internal.h"

#define HVM_EXIT_PORT 0xf4
#define HVM_RUN_ORDER 18 /* 1 GiB */
#define HVM_MAX_MIB 3072 /* RAM stays below the 32-bit PCI hole */
#define HVM_TSS_GPA 0xfffbd000u
/* MSRs the HVM code names (migrate.c carries them; vcpu.c reports them) */
#define HVM_MSR_TSC 0x10u
#define HVM_MSR_TSC_DEADLINE 0x6e0u
#define HVM_MSR_KVM_SYSTEM_TIME_NEW 0x4b564d01u

/* The HVM kind's operations (hv_internal.h struct domain_kind). */
extern const struct domain_kind hv_hvm_kind;

struct hvm_run {
    gfn_t gfn;
    mfn_t mfn;
    unsigned order;
};

struct hvm_vcpu {
    struct domain *d;
    unsigned id;
    struct vcpu vcpu;
    bool created;
};

struct hvm_domain {
    struct hvm_vcpu vcpus[HV_MAX_VCPUS];
    struct uart uart;
    bool created_uart;
    struct hvm_run *runs; /* HV3 */
    unsigned nr_runs;
    uint64_t ram_end;      /* RAM is [0, 0xa0000) and [1 MiB, ram_end) */
    struct pvh_layout boot; /* where the loader put things */
    _Atomic uint64_t pio_unclaimed, mmio_unclaimed, pio_forwarded,
        mmio_forwarded, uart_accesses;
    char last_unclaimed[96];
};

/* vcpu.c: the run loop's functions for an HVM vCPU. */
int hvm_vcpu_exit(struct vcpu *v, void *opaque);
void hvm_vcpu_diag(struct vcpu *v, char *buf, size_t len, void *opaque);
int hvm_vcpu_flush(struct vcpu *v, void *opaque);
/* The port and MMIO ranges the platform serves itself (no device model
 * may claim them). */
unsigned hvm_platform_ranges(const struct dm_range **out);
/* The UART's interrupt line (KVM_IRQ_LINE 4). */
void hvm_uart_irq(void *opaque, bool level);

int hvm_test_txn(struct domain *d, int op, uint64_t gfn, uint64_t nr);

/* Save and restore (migrate.c, docs/stream.md's HVM records). */
struct migrate_source;
struct migrate_restored;
struct stream_hvm_vcpu;
/* vCPU i's whole state as KVM holds it (the domain paused or stopped). */
int __must_check hvm_vcpu_get(struct domain *d, unsigned i,
                              struct stream_hvm_vcpu *v);
/* The source operations of a running HVM domain (no allocation). */
int hvm_source_init(struct domain *d, struct migrate_source *src);
/* An HVM domain of ram_end bytes for a restore: the platform, the memory
 * path and the vCPUs, not booted (after domain_init_basics()). */
int __must_check hvm_restore_create(struct domain *d, uint64_t ram_end,
                                    char *err, size_t errlen);
/* Everything arrived: the platform's and the vCPUs' state into KVM. */
int __must_check hvm_restore_finish(struct domain *d,
                                    const struct migrate_restored *st,
                                    char *err, size_t errlen);
/* HV1-HV3: 0 or -EUCLEAN with the first violation in msg. */
int __must_check hvm_check(struct domain *d, char *msg, size_t len);

#endif
