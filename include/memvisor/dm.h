/*
 * memvisor/dm.h - the device-model protocol: what memvisor and a device
 * model (a separate process serving a domain's I/O) say to each other over
 * a unix socket of type SOCK_SEQPACKET (one datagram per message, so a
 * message is never split or merged).  docs/dm-protocol.md is the prose
 * version, with the state machine of a connection and worked exchanges.
 *
 * Every message starts with struct dm_hdr; hdr.len is the datagram's whole
 * length, at most DM_MSG_MAX; every type has one exact length (or, for the
 * types ending in an array, a fixed part plus count * element, the count
 * bounded).  dm_msg_check() (src/ioreq/wire.c) is the one reader of this
 * format, used by both sides: a message that fails it ends the connection.
 *
 * Direction: "hv" = memvisor, "dm" = the device model.
 *
 *   dm -> hv  HELLO       version, name, the port and MMIO ranges claimed
 *   hv -> dm  WELCOME     + the pool's memfd (SCM_RIGHTS); domain facts
 *   hv -> dm  REFUSED     why the HELLO was refused (then the socket closes)
 *   hv -> dm  MAP         runs of the domain's gfn -> mfn map (DM_MFN_NONE:
 *                         the gfns left the guest)
 *   hv -> dm  IOREQ       a guest access to a claimed range; a vCPU waits
 *   dm -> hv  IORESP      its answer (same id)
 *   hv -> dm  INVALIDATE  drop every mapping of guest memory (gen)
 *   dm -> hv  INVAL_ACK   no mapping made before INVALIDATE gen remains
 *   dm -> hv  TRACK       subscribe to (or leave) guest stores to a gfn
 *   hv -> dm  TRACK_REPLY the result of a TRACK
 *   hv -> dm  TRACK_WRITE a guest store to a tracked gfn, before it lands
 *   hv -> dm  TRACK_GONE  tracked gfns left the guest (after the commit)
 *   dm -> hv  DIRTY       guest ranges the device wrote (for the dirty log)
 *   hv -> dm  SAVE        send your state (id)
 *   dm -> hv  STATE       the state, opaque to memvisor (id)
 *   hv -> dm  RESTORE     take this state (id)
 *   dm -> hv  RESTORED    result (id)
 *   either    BYE         orderly end
 *   hv -> dm  QUIESCE     on = 1: finish or fail every request in flight,
 *                         report what was written (DIRTY), start no DMA
 *                         into guest memory until on = 0 (id)
 *   dm -> hv  QUIESCED    done (id, status), after any DIRTY it needed
 *
 * All integers are little-endian host order (the two ends share a host).
 * Reserved fields are zero; a non-zero reserved field is malformed.
 */
#ifndef MEMVISOR_DM_H
#define MEMVISOR_DM_H

#include <stdint.h>

#define DM_MAGIC 0x4d44564du /* "MVDM" */
#define DM_PROTO_MAJOR 1u
#define DM_PROTO_MINOR 1u /* 1: QUIESCE, QUIESCED */

#define DM_MSG_MAX 4096u      /* bytes, header included */
#define DM_MAX_RANGES 16u     /* ranges one server claims */
#define DM_NAME_MAX 32u       /* name, NUL included */
#define DM_MAP_MAX_RUNS 160u  /* runs per MAP */
#define DM_DIRTY_MAX_RUNS 200u
#define DM_STATE_MAX 3968u    /* device state bytes per STATE/RESTORE */
#define DM_TRACK_MAX_BYTES 16u
#define DM_REASON_MAX 96u
#define DM_MFN_NONE (~0ULL)

enum dm_type {
    DM_HELLO = 1,
    DM_WELCOME = 2,
    DM_REFUSED = 3,
    DM_MAP = 4,
    DM_IOREQ = 5,
    DM_IORESP = 6,
    DM_INVALIDATE = 7,
    DM_INVAL_ACK = 8,
    DM_TRACK = 9,
    DM_TRACK_REPLY = 10,
    DM_TRACK_WRITE = 11,
    DM_TRACK_GONE = 12,
    DM_DIRTY = 13,
    DM_SAVE = 14,
    DM_STATE = 15,
    DM_RESTORE = 16,
    DM_RESTORED = 17,
    DM_BYE = 18,
    DM_QUIESCE = 19,
    DM_QUIESCED = 20,
    DM_NR_TYPES
};

struct dm_hdr {
    uint32_t magic;    /* DM_MAGIC */
    uint16_t type;     /* enum dm_type */
    uint16_t reserved;
    uint32_t len;      /* whole message, header included */
    uint32_t reserved2;
};

enum dm_range_kind { DM_RANGE_PIO = 0, DM_RANGE_MMIO = 1 };

/* [base, base + len): ports (PIO, base + len <= 0x10000) or guest-physical
 * bytes (MMIO, page-aligned, outside the domain's RAM). */
struct dm_range {
    uint32_t kind;
    uint32_t reserved;
    uint64_t base;
    uint64_t len;
};

struct dm_hello {
    struct dm_hdr h;
    uint16_t major, minor;
    uint32_t nr_ranges; /* 0 .. DM_MAX_RANGES */
    char name[DM_NAME_MAX]; /* NUL-terminated, printable */
    struct dm_range ranges[];
};

struct dm_welcome {
    struct dm_hdr h;
    uint16_t major, minor;
    uint32_t domid;
    uint32_t server;     /* this server's index in the domain */
    uint32_t nr_vcpus;
    uint64_t pool_bytes; /* size of the memfd that came with it */
    uint64_t nr_gfns;    /* the domain's guest-physical space */
};

struct dm_refused {
    struct dm_hdr h;
    int32_t error; /* -errno */
    uint32_t reserved;
    char reason[DM_REASON_MAX]; /* NUL-terminated */
};

/* gfns [gfn, gfn + nr) map to mfns [mfn, mfn + nr), or are gone. */
struct dm_map_run {
    uint64_t gfn, mfn, nr;
};
struct dm_map {
    struct dm_hdr h;
    uint32_t nr_runs; /* 1 .. DM_MAP_MAX_RUNS */
    uint32_t reserved;
    struct dm_map_run runs[];
};

enum dm_dir { DM_DIR_READ = 0, DM_DIR_WRITE = 1 };

struct dm_ioreq {
    struct dm_hdr h;
    uint64_t id;    /* answered by the IORESP with this id */
    uint64_t addr;  /* port or gpa */
    uint64_t data;  /* the value written (DM_DIR_WRITE) */
    uint32_t vcpu;
    uint8_t kind;   /* enum dm_range_kind */
    uint8_t dir;    /* enum dm_dir */
    uint8_t size;   /* 1, 2, 4 or 8 bytes */
    uint8_t reserved;
};

struct dm_ioresp {
    struct dm_hdr h;
    uint64_t id;
    uint64_t data;  /* the value read (DM_DIR_READ) */
    int32_t status; /* 0, or -errno: the device failed the access */
    uint32_t reserved;
};

/* INVALIDATE and INVAL_ACK. */
struct dm_inval {
    struct dm_hdr h;
    uint64_t gen;
};

struct dm_track {
    struct dm_hdr h;
    uint64_t gfn;
    uint32_t on; /* 1 subscribe, 0 leave */
    uint32_t reserved;
};

struct dm_track_reply {
    struct dm_hdr h;
    uint64_t gfn;
    uint32_t on;
    int32_t status; /* 0 or -errno */
};

struct dm_track_write {
    struct dm_hdr h;
    uint64_t gpa;
    uint32_t len; /* 1 .. DM_TRACK_MAX_BYTES, within one page */
    uint32_t reserved;
    uint8_t bytes[DM_TRACK_MAX_BYTES];
};

struct dm_track_gone {
    struct dm_hdr h;
    uint64_t gfn, nr;
};

struct dm_dirty_run {
    uint64_t gfn, nr;
};
struct dm_dirty {
    struct dm_hdr h;
    uint32_t nr_runs; /* 1 .. DM_DIRTY_MAX_RUNS */
    uint32_t reserved;
    struct dm_dirty_run runs[];
};

/* SAVE (len 0, no bytes), STATE and RESTORE. */
struct dm_state {
    struct dm_hdr h;
    uint64_t id;
    uint32_t len; /* 0 .. DM_STATE_MAX */
    uint32_t reserved;
    uint8_t bytes[];
};

/* RESTORED and QUIESCED. */
struct dm_restored {
    struct dm_hdr h;
    uint64_t id;
    int32_t status; /* 0 or -errno */
    uint32_t reserved;
};

struct dm_quiesce {
    struct dm_hdr h;
    uint64_t id;
    uint32_t on; /* 1 quiesce, 0 resume */
    uint32_t reserved;
};

/* Every message fits the largest one. */
_Static_assert(sizeof(struct dm_hello) + DM_MAX_RANGES * sizeof(struct dm_range) <= DM_MSG_MAX, "hello");
_Static_assert(sizeof(struct dm_map) + DM_MAP_MAX_RUNS * sizeof(struct dm_map_run) <= DM_MSG_MAX, "map");
_Static_assert(sizeof(struct dm_dirty) + DM_DIRTY_MAX_RUNS * sizeof(struct dm_dirty_run) <= DM_MSG_MAX, "dirty");
_Static_assert(sizeof(struct dm_state) + DM_STATE_MAX <= DM_MSG_MAX, "state");

#endif
