/*
 * builder.h - the PV domain builder: lays out a PV guest's start-of-day
 * memory as Xen's builder does and validates its page tables through the
 * pv code.
 *
 * Start of day (x86-64, what the guest finds; docs/abi.md "Booting"):
 * one virtually contiguous region from VIRT_BASE maps pfns 0.. in order:
 *   kernel image | module | p2m list (nr_pages mfns) | start_info |
 *   xenstore ring page | console ring page | bootstrap page
 *   tables (L4, L3s, L2s, L1s; mapped read-only) | bootstrap stack
 * followed by at least 512 KiB of mapped free pages, the region ending on a
 * 4 MiB boundary.  The module (an initrd), if any, starts on a page
 * boundary: start_info.mod_start is its VA, mod_len its length.  rsi = VA of start_info, rsp = top of the stack, rip =
 * the ENTRY note.  The hypercall page named by the HYPERCALL_PAGE note is
 * filled with stubs (`mov $nr, %eax; int $4; ret`; iret: push rcx, r11,
 * rax first).  The shared info page is a frame of the domain outside its
 * pfn space (start_info.shared_info is its machine address).
 *
 * The L4 is pinned and installed as vCPU 0's base pointer through
 * pv_mmuext_op(): every entry is validated, none is written behind the pv
 * code's back afterwards.  The hypervisor slots come from pv_domain.hv_l4,
 * which the caller fills (the shim) before calling boot_build().
 *
 * Errors: elf_parse()'s (reason in result->error), -ENOMEM (the image and
 * its start-of-day region do not fit in nr_pages, or the frame budget),
 * and the pv code's errors from pinning.  On error the frames already
 * allocated stay with the domain (its teardown frees them).
 */
#ifndef MEMVISOR_BOOT_BUILDER_H
#define MEMVISOR_BOOT_BUILDER_H

#include <stddef.h>
#include <stdint.h>

#include "boot/elf.h"
#include "pv/pv.h"

#define BOOT_HYPERCALL_VECTOR 4

struct boot_params {
    const uint8_t *image;
    size_t size;
    uint64_t nr_pages;   /* guest memory, in 4 KiB pages */
    const char *cmdline; /* may be NULL */
    const uint8_t *module; /* the PV module (an initrd), may be NULL */
    size_t module_size;
    uint32_t store_evtchn, console_evtchn; /* start_info's event channels */
};

struct boot_result {
    struct elf_kernel kernel;
    uint64_t entry;          /* rip */
    uint64_t stack_top;      /* rsp */
    uint64_t start_info_va;  /* rsi */
    uint64_t p2m_va;
    uint64_t pt_base_va;
    uint64_t nr_pt_frames;
    uint64_t mapped_end;     /* end of the start-of-day mapping (VA) */
    mfn_t l4;
    mfn_t shared_info;
    uint64_t nr_pages;
    uint64_t first_free_pfn; /* first pfn after the bootstrap stack */
    mfn_t store, console;    /* the xenstore and console ring pages */
    char error[128];
};

int __must_check boot_build(struct pv_domain *d, struct pv_vcpu *v0,
                            const struct boot_params *p, struct boot_result *r);

/* The 32 bytes of hypercall stub nr (exported for tests). */
void boot_hypercall_stub(unsigned nr, uint8_t out[32]);

#endif
