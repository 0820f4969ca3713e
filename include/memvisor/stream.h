/*
 * memvisor/stream.h - the wire format of a migration or snapshot stream
 * (docs/stream.md is the specification; this header is its C form).
 *
 * A stream is an image header followed by records.  Everything is little
 * endian, every field naturally aligned, every reserved field zero when
 * written and checked zero when read.
 *
 *   image header (32 bytes)
 *   record*                  each: record header (16 bytes), body, zero
 *                            padding to a multiple of 8 bytes
 *
 * Record order of a PV stream (the reader enforces it):
 *   DOMAIN  [PV_P2M_FRAMES]  {PAGE_DATA | ROUND}*  SHARED_INFO
 *   PV_VCPU (one per vCPU, ids ascending)  DEVICE*  END
 * and of an HVM stream (minor 1):
 *   DOMAIN  {PAGE_DATA | ROUND}*  HVM_PLATFORM
 *   HVM_VCPU (one per vCPU, ids ascending)  DEVICE*  END
 * A page may be sent many times (live rounds): the last PAGE_DATA entry
 * for a pfn wins, its type included.
 *
 * Only <stdint.h>: guests and other programs may include it.
 */
#ifndef MEMVISOR_STREAM_WIRE_H
#define MEMVISOR_STREAM_WIRE_H

#include <stdint.h>

/* ----------------------------------------------------------- image header */

#define STREAM_MAGIC "MVSTREAM" /* 8 bytes, no NUL on the wire */
#define STREAM_VERSION_MAJOR 1  /* a reader refuses any other major */
#define STREAM_VERSION_MINOR 1  /* ... and accepts any minor (1: HVM) */
/* The minor version of a parallel stream's connections (PARALLEL or
 * CHANNEL in the image header); a stream on one connection stays 1.1. */
#define STREAM_VERSION_MINOR_PARALLEL 2
#define STREAM_ARCH_X86_64 1
#define STREAM_PAGE_SHIFT 12

/* Image header flags. */
#define STREAM_IMG_ZSTD 0x1u /* records may carry STREAM_REC_F_ZSTD */
#define STREAM_IMG_LIVE 0x2u /* written by a live pre-copy (informational) */
/* A parallel stream (docs/stream.md, "Parallel streams"): the main
 * connection's header has PARALLEL, every extra connection's CHANNEL; a
 * header never has both. */
#define STREAM_IMG_PARALLEL 0x4u
#define STREAM_IMG_CHANNEL 0x8u
#define STREAM_IMG_FLAGS_KNOWN                                                 \
    (STREAM_IMG_ZSTD | STREAM_IMG_LIVE | STREAM_IMG_PARALLEL |                 \
     STREAM_IMG_CHANNEL)

struct stream_image_header {
    char magic[8];      /* STREAM_MAGIC */
    uint16_t major;     /* STREAM_VERSION_MAJOR */
    uint16_t minor;     /* STREAM_VERSION_MINOR */
    uint32_t arch;      /* STREAM_ARCH_X86_64 */
    uint32_t page_shift; /* STREAM_PAGE_SHIFT */
    uint32_t flags;     /* STREAM_IMG_* */
    uint32_t reserved;  /* 0 */
    uint32_t crc;       /* CRC-32C of the 28 bytes before it */
};

/* ---------------------------------------------------------------- records */

/*
 * Record header.  crc is the CRC-32C of the first 12 bytes of the header
 * followed by the stored body (length bytes, before padding).  length is
 * at most STREAM_REC_MAX; padding is 0..7 zero bytes.
 */
struct stream_record_header {
    uint32_t type;   /* STREAM_REC_*; bit 31: optional */
    uint32_t flags;  /* STREAM_REC_F_* */
    uint32_t length; /* stored body length in bytes */
    uint32_t crc;
};

#define STREAM_REC_OPTIONAL 0x80000000u /* unknown optional: skipped */
#define STREAM_REC_F_ZSTD 0x1u /* body is one zstd frame of the real body */
#define STREAM_REC_F_KNOWN STREAM_REC_F_ZSTD
/* Body bounds: a PAGE_DATA record of STREAM_PAGES_MAX pages and its pfn
 * words is the largest record. */
#define STREAM_PAGES_MAX 1024u
#define STREAM_REC_MAX (8u + 8u * STREAM_PAGES_MAX + 4096u * STREAM_PAGES_MAX)

enum stream_record_type {
    STREAM_REC_END = 0,           /* empty; the last record */
    STREAM_REC_DOMAIN = 1,        /* struct stream_domain; the first */
    STREAM_REC_PAGE_DATA = 2,     /* struct stream_page_data + pages */
    STREAM_REC_PV_P2M_FRAMES = 3, /* struct stream_p2m_frames + pfns */
    STREAM_REC_SHARED_INFO = 4,   /* one page */
    STREAM_REC_PV_VCPU = 5,       /* struct stream_pv_vcpu */
    STREAM_REC_DEVICE = 6,        /* struct stream_device + opaque state */
    /* Parallel streams only (refused elsewhere): */
    STREAM_REC_CHANNELS = 8,      /* main: struct stream_channels */
    STREAM_REC_CHANNEL = 9,       /* extra connection: struct stream_channel */
    STREAM_REC_BARRIER = 10,      /* every connection: struct stream_barrier */
    /* 0x100..0x1ff: HVM records. */
    STREAM_REC_HVM_FIRST = 0x100,
    STREAM_REC_HVM_PLATFORM = 0x100, /* struct stream_hvm_platform */
    STREAM_REC_HVM_VCPU = 0x101,     /* struct stream_hvm_vcpu */
    STREAM_REC_HVM_LAST = 0x1ff,
    /* Optional: where a round began (progress, plots); never needed. */
    STREAM_REC_ROUND = STREAM_REC_OPTIONAL | 7, /* struct stream_round */
};

/* ----------------------------------------------------------------- DOMAIN */

#define STREAM_DOMAIN_PV64 1 /* x86-64 PV guest, 4-level page tables */
#define STREAM_DOMAIN_HVM 2  /* HVM: p2m_va, start_info_va and
                                start_info_pfn are 0; nr_pages is the gfn
                                space (RAM and the hole, the hole's pfns
                                sent as XTAB) */

struct stream_domain {
    uint32_t kind;          /* STREAM_DOMAIN_* */
    uint32_t nr_vcpus;      /* 1..STREAM_VCPUS_MAX */
    uint64_t nr_pages;      /* pfns 0..nr_pages-1; 1..STREAM_PAGES_LIMIT */
    uint64_t p2m_va;        /* PV: where the guest's p2m list is mapped */
    uint64_t start_info_va; /* PV: the start_info page's address */
    uint64_t start_info_pfn; /* PV: its pfn (its shared_info field is
                                rewritten on restore) */
    uint64_t reserved;
};
#define STREAM_VCPUS_MAX 64u
#define STREAM_PAGES_LIMIT (1ULL << 28) /* 1 TiB of guest memory */

/* -------------------------------------------------------------- PAGE_DATA */

/*
 * Body: struct stream_page_data, count pfn words, then one 4096-byte page
 * per word that carries data (type NOTAB or L1..L4, pinned or not, and
 * not STREAM_PFN_ZERO), in word order.  The body length must be exactly
 * 8 + 8 * count + 4096 * pages-with-data.
 *
 * pfn word: bits 63..60 the page's type, as the page-frame info query
 * reports it (Xen's XEN_DOMCTL_PFINFO_* >> 28: 0 NOTAB, 1..4 L1..L4 page
 * table, | 8 pinned, 0xf XTAB: no page at this pfn, no data);
 * bit 59 ZERO: the page is all zeros and its data is elided;
 * bits 58..52 reserved (0); bits 51..0 the pfn.
 * Page tables are normalised: every present entry holds a pfn, not an mfn
 * (STREAM_PFN_SHARED_INFO for the shared info page).
 */
struct stream_page_data {
    uint32_t count; /* 1..STREAM_PAGES_MAX */
    uint32_t reserved;
};
#define STREAM_PFN_TYPE_SHIFT 60
#define STREAM_PFN_TYPE_MASK (0xfULL << 60)
#define STREAM_PFN_ZERO (1ULL << 59)
#define STREAM_PFN_RSVD_MASK (0x7fULL << 52)
#define STREAM_PFN_MASK ((1ULL << 52) - 1)
#define STREAM_TYPE_NOTAB 0x0u
#define STREAM_TYPE_L1 0x1u
#define STREAM_TYPE_L4 0x4u
#define STREAM_TYPE_LEVEL_MASK 0x7u
#define STREAM_TYPE_PINNED 0x8u
#define STREAM_TYPE_XTAB 0xfu
/* The pfn a normalised entry names for the shared info page (not in the
 * guest's pfn space; localised to the destination's shared info frame). */
#define STREAM_PFN_SHARED_INFO 0xFFFFFFFFFFULL
#define STREAM_PFN_NONE (~0ULL) /* no base pointer */

/* ---------------------------------------------------------- PV_P2M_FRAMES */

/* Body: this, then nr_frames u64 pfns: the frames holding the guest's own
 * p2m list (pfn -> mfn array), frame i holding entries 512*i .. 512*i+511.
 * nr_frames == ceil(nr_pages / 512). */
struct stream_p2m_frames {
    uint64_t nr_frames;
};

/* ---------------------------------------------------------------- PV_VCPU */

#define STREAM_VCPU_INITIALISED 0x01u
#define STREAM_VCPU_UP 0x02u
#define STREAM_VCPU_KERNEL_MODE 0x04u
#define STREAM_VCPU_FPU_TS 0x08u
#define STREAM_VCPU_CONT_PENDING 0x10u /* a held-back result (cont_rc) */
#define STREAM_VCPU_FLAGS_KNOWN 0x1fu

/* General registers, in this order. */
enum {
    STREAM_GPR_RAX, STREAM_GPR_RBX, STREAM_GPR_RCX, STREAM_GPR_RDX,
    STREAM_GPR_RSI, STREAM_GPR_RDI, STREAM_GPR_RBP, STREAM_GPR_R8,
    STREAM_GPR_R9, STREAM_GPR_R10, STREAM_GPR_R11, STREAM_GPR_R12,
    STREAM_GPR_R13, STREAM_GPR_R14, STREAM_GPR_R15, STREAM_NR_GPRS
};

struct stream_trap {
    uint64_t address;
    uint8_t flags; /* DPL bits 0-1, IF bit 2 */
    uint8_t reserved[7];
};

struct stream_pv_vcpu {
    uint32_t id;
    uint32_t flags; /* STREAM_VCPU_* */
    uint64_t gpr[16]; /* STREAM_GPR_*; gpr[15] reserved */
    /* Where the guest is, in ring 3 (its own view: rip, rsp, rflags). */
    uint64_t rip, rsp, rflags;
    uint64_t fs_base, gs_base; /* the live segment bases */
    uint64_t gs_base_kernel, gs_base_user;
    uint64_t kernel_ss, kernel_sp;
    uint64_t event_cb, failsafe_cb, syscall_cb;
    uint64_t vm_assist;
    uint64_t base_pfn, user_base_pfn; /* STREAM_PFN_NONE: none */
    uint64_t ldt_base;
    uint32_t ldt_ents;
    int32_t cont_rc; /* with STREAM_VCPU_CONT_PENDING */
    struct stream_trap traps[256];
};

/* ------------------------------------------------------------ HVM records */

/*
 * HVM_PLATFORM: the VM-wide state of an HVM domain.  The irqchip, PIT and
 * clock are KVM's own structures as its ioctls give them (the checks on
 * their contents are KVM's, when they are set); the UART is memvisor's.
 */
#define STREAM_HVM_LOW_END 0xa0000ULL   /* RAM [0, this) */
#define STREAM_HVM_HIGH_START 0x100000ULL /* and [this, ram_end) */
#define STREAM_HVM_RAM_MAX (3072ULL << 20)
#define STREAM_HVM_UART_RXQ 1024u
struct stream_hvm_uart {
    uint8_t ier, lcr, mcr, lsr_oe, scr, dll, dlm;
    uint8_t thr_ipending; /* 0 or 1 */
    uint32_t rx_len;      /* 0..STREAM_HVM_UART_RXQ, the queue's first */
    uint32_t reserved;    /* 0 */
    uint8_t rx[STREAM_HVM_UART_RXQ];
};
struct stream_hvm_platform {
    uint64_t ram_end; /* nr_pages << 12; (1 MiB, STREAM_HVM_RAM_MAX] */
    uint8_t pic[2][512]; /* KVM_GET_IRQCHIP chips 0 and 1 (the union) */
    uint8_t ioapic[512]; /* chip 2 */
    uint8_t pit[112];    /* struct kvm_pit_state2 */
    uint8_t clock[48];   /* struct kvm_clock_data (only .clock is set) */
    struct stream_hvm_uart uart;
    uint64_t reserved[2]; /* 0 */
};

/*
 * HVM_VCPU: one vCPU as KVM exposes it, each part KVM's own structure.
 * flags: which optional parts are present (KVM may lack debug registers,
 * XSAVE or XCRs: the FPU part is always there).  msrs: nr_msrs (index,
 * value) pairs of the MSRs KVM let memvisor read (reserved 0).
 */
#define STREAM_HVM_VCPU_DEBUGREGS 0x1u
#define STREAM_HVM_VCPU_XSAVE 0x2u
#define STREAM_HVM_VCPU_XCRS 0x4u
#define STREAM_HVM_VCPU_EVENTS 0x8u
#define STREAM_HVM_VCPU_FLAGS_KNOWN 0xfu
#define STREAM_HVM_MSRS_MAX 32u
#define STREAM_HVM_MP_STATE_MAX 8u /* KVM_MP_STATE_* */
struct stream_hvm_msr {
    uint32_t index;
    uint32_t reserved;
    uint64_t value;
};
struct stream_hvm_vcpu {
    uint32_t id;
    uint32_t flags;          /* STREAM_HVM_VCPU_* */
    uint8_t regs[144];       /* struct kvm_regs */
    uint8_t sregs[312];      /* struct kvm_sregs */
    uint8_t debugregs[128];  /* struct kvm_debugregs */
    uint8_t fpu[416];        /* struct kvm_fpu */
    uint8_t xsave[4096];     /* struct kvm_xsave */
    uint8_t xcrs[392];       /* struct kvm_xcrs */
    uint8_t lapic[1024];     /* struct kvm_lapic_state */
    uint8_t events[64];      /* struct kvm_vcpu_events */
    uint32_t mp_state;       /* 0..STREAM_HVM_MP_STATE_MAX */
    uint32_t nr_msrs;        /* 0..STREAM_HVM_MSRS_MAX */
    struct stream_hvm_msr msrs[STREAM_HVM_MSRS_MAX];
};

/* ----------------------------------------------------------------- DEVICE */

/* A device model's state, opaque to the stream (its protocol defines it):
 * this, then the state bytes (length - 16). */
#define STREAM_DEVICE_DM 1 /* a device model of memvisor's device-model
                              protocol (include/memvisor/dm.h): instance is
                              its server index, the state its STATE bytes */
struct stream_device {
    uint32_t kind;     /* the device model's kind */
    uint32_t instance; /* which one of that kind */
    uint32_t version;  /* the state layout's version, the device's own */
    uint32_t reserved;
};

/* ------------------------------------------------------------------ ROUND */

#define STREAM_ROUND_FINAL 0x1u
struct stream_round {
    uint32_t round; /* 1.. */
    uint32_t flags; /* STREAM_ROUND_FINAL: the guest is paused */
    uint64_t pages; /* pages this round sends */
};

/* ---------------------------------------------------- parallel streams */

/*
 * Page data over several connections.  The main connection carries the
 * stream as above with STREAM_IMG_PARALLEL, a CHANNELS record right after
 * DOMAIN, and a BARRIER record at the end of every round's page data;
 * each extra connection carries an image header with STREAM_IMG_CHANNEL,
 * then CHANNEL, then {PAGE_DATA | BARRIER}*, then END.  Round r of a
 * connection is its page data between BARRIER r-1 and BARRIER r; a reader
 * applies round r+1 of any connection only once every connection has
 * passed BARRIER r, and a pfn appears at most once per round over all
 * connections.  The last BARRIER of every connection has
 * STREAM_BARRIER_FINAL; after it, the main connection continues with
 * SHARED_INFO, an extra one ends with END.
 */
#define STREAM_CHANNELS_MAX 16u /* connections in all, the main one included */
#define STREAM_TOKEN_LEN 16

struct stream_channels {
    uint32_t nr;       /* connections in all: 2..STREAM_CHANNELS_MAX */
    uint32_t reserved; /* 0 */
    uint8_t token[STREAM_TOKEN_LEN]; /* names this stream (not all zero) */
};

struct stream_channel {
    uint32_t index; /* 1..nr-1 (the main connection is 0) */
    uint32_t nr;    /* as in CHANNELS */
    uint8_t token[STREAM_TOKEN_LEN]; /* as in CHANNELS */
};

#define STREAM_BARRIER_FINAL 0x1u
struct stream_barrier {
    uint32_t round; /* 1, 2, ... on every connection, none skipped */
    uint32_t flags; /* STREAM_BARRIER_FINAL: the last round */
    uint64_t pages; /* pfn words this connection sent in this round */
};

#endif
