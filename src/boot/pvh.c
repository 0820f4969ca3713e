/*
 * pvh.c - see pvh.h.  Fields are read with memcpy at checked offsets.
 */
#include "boot/pvh.h"
#include "boot/mptable.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "lib/range.h"
#include "xen/arch-x86/hvm/start_info.h"
#include "xen/xen.h"

_Static_assert(MPTABLE_SIZE(MPTABLE_MAX_CPUS) <= PVH_LOW_END - PVH_MPTABLE_GPA,
               "the MP tables fit below the PC's hole");

#define ELFCLASS32 1
#define ELFCLASS64 2
#define ELFDATA2LSB 1
#define ET_EXEC 2
#define EM_386 3
#define EM_X86_64 62
#define PT_LOAD 1
#define PT_NOTE 4
#define FOUR_GIB (1ULL << 32)

static int fail(char *buf, size_t len, int err, const char *fmt, ...)
    __printf(4, 5);
static int fail(char *buf, size_t len, int err, const char *fmt, ...)
{
    va_list ap;

    if (buf && len) {
        va_start(ap, fmt);
        vsnprintf(buf, len, fmt, ap);
        va_end(ap);
    }
    return err;
}

static uint64_t rd(const uint8_t *p, unsigned size)
{
    uint64_t v = 0;

    memcpy(&v, p, size); /* little-endian host */
    return v;
}

/* One program header, whichever class. */
struct phdr {
    uint32_t type;
    uint64_t offset, paddr, filesz, memsz;
};

static void read_phdr(const uint8_t *p, unsigned cls, struct phdr *h)
{
    h->type = (uint32_t)rd(p, 4);
    if (cls == ELFCLASS64) {
        h->offset = rd(p + 8, 8);
        h->paddr = rd(p + 24, 8);
        h->filesz = rd(p + 32, 8);
        h->memsz = rd(p + 40, 8);
    } else {
        h->offset = rd(p + 4, 4);
        h->paddr = rd(p + 12, 4);
        h->filesz = rd(p + 16, 4);
        h->memsz = rd(p + 20, 4);
    }
}

static int parse_notes(const uint8_t *image, const struct phdr *h,
                       struct pvh_kernel *k, bool *have_entry)
{
    uint64_t at = h->offset, end = h->offset + h->filesz;

    while (end - at >= 12) {
        uint64_t namesz = rd(image + at, 4), descsz = rd(image + at + 4, 4);
        uint32_t type = (uint32_t)rd(image + at + 8, 4);
        uint64_t name = at + 12;
        uint64_t desc = name + ALIGN_UP(namesz, 4);
        uint64_t next = desc + ALIGN_UP(descsz, 4);

        if (namesz > end - name || ALIGN_UP(namesz, 4) > end - name ||
            descsz > end - desc || next > end)
            return fail(k->error, sizeof(k->error), -EINVAL,
                        "note at %#llx runs past its segment",
                        (unsigned long long)at);
        if (namesz == 4 && memcmp(image + name, "Xen", 4) == 0) {
            if (type == XEN_ELFNOTE_PHYS32_ENTRY) {
                uint64_t v;

                if (descsz != 4 && descsz != 8)
                    return fail(k->error, sizeof(k->error), -EINVAL,
                                "PHYS32_ENTRY note of %llu bytes",
                                (unsigned long long)descsz);
                v = rd(image + desc, (unsigned)descsz);
                if (v >= FOUR_GIB)
                    return fail(k->error, sizeof(k->error), -EINVAL,
                                "PHYS32_ENTRY %#llx above 4 GiB",
                                (unsigned long long)v);
                k->entry = (uint32_t)v;
                *have_entry = true;
            } else if (type == XEN_ELFNOTE_ENTRY) {
                k->has_pv_entry = true;
            }
        }
        at = next;
    }
    return 0;
}

int pvh_parse(const uint8_t *image, size_t size, struct pvh_kernel *k)
{
    unsigned cls, ehsize, phentsize, phnum;
    uint64_t phoff;
    bool have_entry = false;
    int r;

    memset(k, 0, sizeof(*k));
    if (size < 52 || memcmp(image, "\x7f" "ELF", 4) != 0)
        return fail(k->error, sizeof(k->error), -ENOEXEC, "not an ELF file");
    cls = image[4];
    if ((cls != ELFCLASS32 && cls != ELFCLASS64) || image[5] != ELFDATA2LSB ||
        image[6] != 1)
        return fail(k->error, sizeof(k->error), -ENOEXEC,
                    "not a little-endian ELF32/ELF64 version 1 file");
    if (cls == ELFCLASS64 && size < 64)
        return fail(k->error, sizeof(k->error), -ENOEXEC, "truncated header");
    if (rd(image + 16, 2) != ET_EXEC ||
        rd(image + 18, 2) != (cls == ELFCLASS64 ? EM_X86_64 : EM_386) ||
        rd(image + 20, 4) != 1)
        return fail(k->error, sizeof(k->error), -ENOEXEC,
                    "not an x86 executable");
    if (cls == ELFCLASS64) {
        phoff = rd(image + 32, 8);
        ehsize = (unsigned)rd(image + 52, 2);
        phentsize = (unsigned)rd(image + 54, 2);
        phnum = (unsigned)rd(image + 56, 2);
    } else {
        phoff = rd(image + 28, 4);
        ehsize = (unsigned)rd(image + 40, 2);
        phentsize = (unsigned)rd(image + 42, 2);
        phnum = (unsigned)rd(image + 44, 2);
    }
    k->elf_class = cls == ELFCLASS64 ? 64 : 32;
    if (ehsize != (cls == ELFCLASS64 ? 64u : 52u) ||
        phentsize != (cls == ELFCLASS64 ? 56u : 32u))
        return fail(k->error, sizeof(k->error), -EINVAL,
                    "bad header sizes (%u, %u)", ehsize, phentsize);
    if (phnum == 0 || phnum > ELF_MAX_PHDRS)
        return fail(k->error, sizeof(k->error), -EINVAL,
                    "%u program headers", phnum);
    if (range_check(phoff, (uint64_t)phnum * phentsize, size))
        return fail(k->error, sizeof(k->error), -EINVAL,
                    "program headers outside the file");
    k->pstart = UINT64_MAX;
    for (unsigned i = 0; i < phnum; i++) {
        struct phdr h;

        read_phdr(image + phoff + (uint64_t)i * phentsize, cls, &h);
        if (h.type == PT_NOTE) {
            if (range_check(h.offset, h.filesz, size))
                return fail(k->error, sizeof(k->error), -EINVAL,
                            "note segment %u outside the file", i);
            if ((r = parse_notes(image, &h, k, &have_entry)) < 0)
                return r;
            continue;
        }
        if (h.type != PT_LOAD || h.memsz == 0)
            continue;
        if (h.filesz > h.memsz || range_check(h.offset, h.filesz, size))
            return fail(k->error, sizeof(k->error), -EINVAL,
                        "segment %u: bad file range", i);
        if (range_check(h.paddr, h.memsz, FOUR_GIB))
            return fail(k->error, sizeof(k->error), -EINVAL,
                        "segment %u: physical range above 4 GiB", i);
        if (k->nr_seg == ELF_MAX_SEGMENTS)
            return fail(k->error, sizeof(k->error), -EINVAL,
                        "more than %u loadable segments", ELF_MAX_SEGMENTS);
        k->seg[k->nr_seg++] = (struct pvh_segment){h.paddr, h.memsz,
                                                   h.offset, h.filesz};
        k->pstart = MIN(k->pstart, h.paddr);
        k->pend = MAX(k->pend, h.paddr + h.memsz);
    }
    if (k->nr_seg == 0)
        return fail(k->error, sizeof(k->error), -EINVAL, "nothing to load");
    if (k->pend - k->pstart > ELF_MAX_SPAN)
        return fail(k->error, sizeof(k->error), -E2BIG,
                    "loaded span of %llu bytes",
                    (unsigned long long)(k->pend - k->pstart));
    if (!have_entry)
        return fail(k->error, sizeof(k->error), -ENOEXEC,
                    "no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)");
    for (unsigned i = 0; i < k->nr_seg; i++)
        if (k->entry >= k->seg[i].paddr &&
            k->entry - k->seg[i].paddr < k->seg[i].memsz)
            return 0;
    return fail(k->error, sizeof(k->error), -EINVAL,
                "entry %#x outside the loaded segments", k->entry);
}

/* [a, a + len) inside RAM and outside the info pages? */
static bool in_ram(uint64_t a, uint64_t len, uint64_t ram_end)
{
    uint64_t e = a + len;

    if (e < a)
        return false;
    if (a < PVH_INFO_END && e > PVH_INFO_GPA)
        return false;
    if (e <= PVH_MPTABLE_GPA)
        return true;
    return a >= PVH_HIGH_START && e <= ram_end;
}

static int write_zeros(pvh_write_fn write, void *opaque, uint64_t gpa,
                       uint64_t len)
{
    static const uint8_t zero[4096];

    while (len) {
        uint64_t n = MIN(len, (uint64_t)sizeof(zero));
        int r = write(opaque, gpa, zero, n);

        if (r < 0)
            return r;
        gpa += n;
        len -= n;
    }
    return 0;
}

int pvh_build(const struct pvh_kernel *k, const struct pvh_params *p,
              pvh_write_fn write, void *opaque, struct pvh_layout *out,
              char *err, size_t errlen)
{
    const char *cmdline = p->cmdline ? p->cmdline : "";
    size_t clen = strlen(cmdline) + 1;
    struct hvm_start_info si = {0};
    struct hvm_modlist_entry mod = {0};
    struct hvm_memmap_table_entry mm[PVH_MEMMAP_MAX] = {{0}};
    unsigned nmm = 0;
    int r;

    memset(out, 0, sizeof(*out));
    if (p->ram_end <= PVH_HIGH_START || p->ram_end > FOUR_GIB)
        return fail(err, errlen, -EINVAL, "RAM end %#llx not in (1 MiB, 4 GiB]",
                    (unsigned long long)p->ram_end);
    if (clen > PVH_CMDLINE_MAX)
        return fail(err, errlen, -E2BIG, "command line longer than %u bytes",
                    PVH_CMDLINE_MAX - 1);
    for (unsigned i = 0; i < k->nr_seg; i++) {
        const struct pvh_segment *s = &k->seg[i];

        if (!in_ram(s->paddr, s->memsz, p->ram_end))
            return fail(err, errlen, -EINVAL,
                        "segment at %#llx (%llu bytes) outside guest RAM "
                        "(or over the start info pages)",
                        (unsigned long long)s->paddr,
                        (unsigned long long)s->memsz);
        if (range_check(s->offset, s->filesz, p->size))
            return fail(err, errlen, -EINVAL, "segment outside the image");
        if ((r = write(opaque, s->paddr, p->image + s->offset, s->filesz)) < 0 ||
            (r = write_zeros(write, opaque, s->paddr + s->filesz,
                             s->memsz - s->filesz)) < 0)
            return fail(err, errlen, r, "writing segment at %#llx: %s",
                        (unsigned long long)s->paddr, strerror(-r));
    }
    out->start_info = PVH_INFO_GPA;
    out->modlist = PVH_INFO_GPA + 0x40;
    out->memmap = PVH_INFO_GPA + 0x80;
    out->cmdline = PVH_INFO_GPA + 0x100;
    out->entry = k->entry;
    if (p->module && p->module_size) {
        uint64_t top = p->ram_end & ~0xfffULL;
        uint64_t sz = ALIGN_UP((uint64_t)p->module_size, 4096);
        uint64_t floor = MAX(ALIGN_UP(k->pend, 4096), PVH_HIGH_START);

        if (sz > top || top - sz < floor)
            return fail(err, errlen, -ENOSPC,
                        "the module (%zu bytes) does not fit above the kernel",
                        p->module_size);
        out->module = top - sz;
        out->module_size = p->module_size;
        if ((r = write(opaque, out->module, p->module, p->module_size)) < 0)
            return fail(err, errlen, r, "writing the module: %s",
                        strerror(-r));
        mod.paddr = out->module;
        mod.size = p->module_size;
        if ((r = write(opaque, out->modlist, &mod, sizeof(mod))) < 0)
            return fail(err, errlen, r, "writing the module list");
    }
    {
        uint8_t mp[MPTABLE_SIZE(MPTABLE_MAX_CPUS)];
        size_t n;

        if ((r = mptable_build(p->nr_cpus, (uint32_t)PVH_MPTABLE_GPA, mp,
                               sizeof(mp), &n)) < 0)
            return fail(err, errlen, r, "MP tables for %u processors: %s",
                        p->nr_cpus, strerror(-r));
        if ((r = write(opaque, PVH_MPTABLE_GPA, mp, n)) < 0)
            return fail(err, errlen, r, "writing the MP tables: %s",
                        strerror(-r));
        out->mptable = PVH_MPTABLE_GPA;
        out->mptable_size = n;
    }
    mm[nmm++] = (struct hvm_memmap_table_entry){0, PVH_MPTABLE_GPA,
                                                XEN_HVM_MEMMAP_TYPE_RAM, 0};
    mm[nmm++] = (struct hvm_memmap_table_entry){
        PVH_MPTABLE_GPA, PVH_HIGH_START - PVH_MPTABLE_GPA,
        XEN_HVM_MEMMAP_TYPE_RESERVED, 0};
    mm[nmm++] = (struct hvm_memmap_table_entry){
        PVH_HIGH_START, p->ram_end - PVH_HIGH_START, XEN_HVM_MEMMAP_TYPE_RAM,
        0};
    out->memmap_entries = nmm;
    si.magic = XEN_HVM_START_MAGIC_VALUE;
    si.version = 1;
    si.nr_modules = out->module ? 1 : 0;
    si.modlist_paddr = out->module ? out->modlist : 0;
    si.cmdline_paddr = out->cmdline;
    si.memmap_paddr = out->memmap;
    si.memmap_entries = nmm;
    if ((r = write(opaque, out->memmap, mm, sizeof(mm[0]) * nmm)) < 0 ||
        (r = write(opaque, out->cmdline, cmdline, clen)) < 0 ||
        (r = write(opaque, out->start_info, &si, sizeof(si))) < 0)
        return fail(err, errlen, r, "writing the start info: %s",
                    strerror(-r));
    return 0;
}
