/*
 * elf.c - see elf.h.  Reads fields with memcpy at checked offsets, never
 * through pointers into the image, so alignment and bounds are explicit.
 */
#include "boot/elf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "lib/range.h"
#include "lib/x86.h"
#include "xen/xen.h"

#define EI_NIDENT 16
#define ELFCLASS64 2
#define ELFDATA2LSB 1
#define ET_EXEC 2
#define EM_X86_64 62
#define PT_LOAD 1
#define PT_NOTE 4
#define PF_X 1
#define PF_W 2
#define EHDR_SIZE 64
#define PHDR_SIZE 56

static int fail(struct elf_kernel *k, int err, const char *fmt, ...)
    __printf(3, 4);
static int fail(struct elf_kernel *k, int err, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(k->error, sizeof(k->error), fmt, ap);
    va_end(ap);
    return err;
}

static uint64_t rd(const uint8_t *p, unsigned size)
{
    uint64_t v = 0;
    memcpy(&v, p, size); /* little-endian host */
    return v;
}

static bool range_ok(uint64_t va, uint64_t len)
{
    uint64_t end;

    if (__builtin_add_overflow(va, len, &end))
        return false;
    if (len == 0)
        return x86_canonical(va);
    if (!x86_canonical(va) || !x86_canonical(end - 1))
        return false;
    /* no wrap over the non-canonical hole, no overlap with hv slots */
    if (x86_canonical_lower(va) != x86_canonical_lower(end - 1))
        return false;
    if (va < HYPERVISOR_VIRT_END && end > HYPERVISOR_VIRT_START)
        return false;
    return true;
}

static void copy_str(char *dst, size_t dlen, const uint8_t *src, uint64_t n)
{
    size_t m = 0;

    while (m < n && m + 1 < dlen && src[m]) {
        char c = (char)src[m];
        dst[m++] = (c >= 0x20 && c < 0x7f) ? c : '?';
    }
    dst[m] = 0;
}

static bool inside_segment(const struct elf_kernel *k, uint64_t va)
{
    for (unsigned i = 0; i < k->nr_seg; i++)
        if (va >= k->seg[i].vaddr && va - k->seg[i].vaddr < k->seg[i].memsz)
            return true;
    return false;
}

static int parse_notes(struct elf_kernel *k, const uint8_t *image, uint64_t off,
                       uint64_t len, uint64_t *entry_note, bool *has_entry,
                       uint64_t *vbase, bool *has_vbase, uint64_t *poff,
                       bool *has_poff)
{
    uint64_t pos = 0;

    while (pos + 12 <= len) {
        const uint8_t *n = image + off + pos;
        uint64_t namesz = rd(n, 4), descsz = rd(n + 4, 4), type = rd(n + 8, 4);
        uint64_t name_al = ALIGN_UP(namesz, 4), desc_al = ALIGN_UP(descsz, 4);
        uint64_t total;

        if (namesz > 64 || descsz > 4096)
            return fail(k, -EINVAL, "note too large");
        total = 12 + name_al + desc_al;
        if (range_check(pos, total, len) < 0)
            return fail(k, -EINVAL, "note runs past its segment");
        const uint8_t *name = n + 12, *desc = n + 12 + name_al;
        if (namesz == 4 && memcmp(name, "Xen", 4) == 0) {
            bool numeric = descsz == 4 || descsz == 8;
            k->has_xen_notes = true;
            switch (type) {
            case XEN_ELFNOTE_ENTRY:
            case XEN_ELFNOTE_HYPERCALL_PAGE:
            case XEN_ELFNOTE_VIRT_BASE:
            case XEN_ELFNOTE_PADDR_OFFSET:
                if (!numeric)
                    return fail(k, -EINVAL, "numeric note %u of size %u",
                                (unsigned)type, (unsigned)descsz);
                break;
            default:
                break;
            }
            switch (type) {
            case XEN_ELFNOTE_ENTRY:
                *entry_note = rd(desc, (unsigned)descsz);
                *has_entry = true;
                break;
            case XEN_ELFNOTE_HYPERCALL_PAGE:
                k->hypercall_page = rd(desc, (unsigned)descsz);
                k->has_hypercall_page = true;
                break;
            case XEN_ELFNOTE_VIRT_BASE:
                *vbase = rd(desc, (unsigned)descsz);
                *has_vbase = true;
                break;
            case XEN_ELFNOTE_PADDR_OFFSET:
                *poff = rd(desc, (unsigned)descsz);
                *has_poff = true;
                break;
            case XEN_ELFNOTE_GUEST_OS:
                copy_str(k->guest_os, sizeof(k->guest_os), desc, descsz);
                break;
            case XEN_ELFNOTE_XEN_VERSION:
                copy_str(k->xen_version, sizeof(k->xen_version), desc, descsz);
                break;
            case XEN_ELFNOTE_LOADER:
                copy_str(k->loader, sizeof(k->loader), desc, descsz);
                break;
            case XEN_ELFNOTE_FEATURES:
                copy_str(k->features, sizeof(k->features), desc, descsz);
                break;
            default:
                break;
            }
        }
        pos += total;
    }
    return 0;
}

int elf_parse(const uint8_t *image, size_t size, struct elf_kernel *k)
{
    uint64_t phoff, phnum, phentsize, e_entry, entry_note = 0, vbase = 0;
    uint64_t poff = 0;
    bool has_entry = false, has_vbase = false, has_poff = false;
    int r;

    memset(k, 0, sizeof(*k));
    if (size < EHDR_SIZE || memcmp(image, "\177ELF", 4) != 0)
        return fail(k, -ENOEXEC, "not an ELF file");
    if (image[4] != ELFCLASS64 || image[5] != ELFDATA2LSB || image[6] != 1)
        return fail(k, -ENOEXEC, "not a little-endian ELF64 version 1 file");
    if (rd(image + 16, 2) != ET_EXEC || rd(image + 18, 2) != EM_X86_64)
        return fail(k, -ENOEXEC, "not an x86-64 executable");
    e_entry = rd(image + 24, 8);
    phoff = rd(image + 32, 8);
    phentsize = rd(image + 54, 2);
    phnum = rd(image + 56, 2);
    if (rd(image + 52, 2) != EHDR_SIZE)
        return fail(k, -EINVAL, "bad ELF header size");
    if (phnum == 0 || phnum > ELF_MAX_PHDRS || phentsize != PHDR_SIZE)
        return fail(k, -EINVAL, "bad program header table (%u entries)",
                    (unsigned)phnum);
    if (range_check(phoff, phnum * PHDR_SIZE, size) < 0)
        return fail(k, -EINVAL, "program headers outside the file");

    k->vstart = UINT64_MAX;
    /* The notes first: PADDR_OFFSET decides where segments load (E5). */
    for (uint64_t i = 0; i < phnum; i++) {
        const uint8_t *ph = image + phoff + i * PHDR_SIZE;
        uint64_t off = rd(ph + 8, 8), filesz = rd(ph + 32, 8);

        if (rd(ph, 4) != PT_NOTE)
            continue;
        if (range_check(off, filesz, size) < 0)
            return fail(k, -EINVAL, "segment %u outside the file", (unsigned)i);
        r = parse_notes(k, image, off, filesz, &entry_note, &has_entry, &vbase,
                        &has_vbase, &poff, &has_poff);
        if (r < 0)
            return r;
    }
    if (has_poff && !has_vbase)
        return fail(k, -EINVAL, "PADDR_OFFSET without VIRT_BASE");
    for (uint64_t i = 0; i < phnum; i++) {
        const uint8_t *ph = image + phoff + i * PHDR_SIZE;
        uint64_t type = rd(ph, 4), flags = rd(ph + 4, 4);
        uint64_t off = rd(ph + 8, 8), va = rd(ph + 16, 8);
        uint64_t filesz = rd(ph + 32, 8), memsz = rd(ph + 40, 8);

        if (type != PT_LOAD)
            continue;
        if (range_check(off, filesz, size) < 0)
            return fail(k, -EINVAL, "segment %u outside the file", (unsigned)i);
        if (memsz == 0)
            continue;
        if (has_poff) {
            /* Xen's rule: load at paddr - PADDR_OFFSET + VIRT_BASE. */
            uint64_t pa = rd(ph + 24, 8);
            if (pa < poff || vbase + (pa - poff) < vbase)
                return fail(k, -EINVAL, "segment %u: paddr below PADDR_OFFSET",
                            (unsigned)i);
            va = vbase + (pa - poff);
        }
        if (filesz > memsz)
            return fail(k, -EINVAL, "segment %u: filesz > memsz", (unsigned)i);
        if (!range_ok(va, memsz))
            return fail(k, -EINVAL, "segment %u: bad address range",
                        (unsigned)i);
        if (k->nr_seg == ELF_MAX_SEGMENTS)
            return fail(k, -EINVAL, "too many segments");
        for (unsigned j = 0; j < k->nr_seg; j++) {
            const struct elf_segment *o = &k->seg[j];
            if (va < o->vaddr + o->memsz && o->vaddr < va + memsz)
                return fail(k, -EINVAL, "segments %u and %u overlap", j,
                            (unsigned)i);
        }
        k->seg[k->nr_seg++] = (struct elf_segment){
            .vaddr = va,
            .memsz = memsz,
            .offset = off,
            .filesz = filesz,
            .writable = flags & PF_W,
            .exec = flags & PF_X,
        };
        k->vstart = MIN(k->vstart, va);
        k->vend = MAX(k->vend, va + memsz);
    }
    if (k->nr_seg == 0)
        return fail(k, -EINVAL, "no loadable segment");
    if (!k->has_xen_notes)
        return fail(k, -ENOEXEC, "no Xen ELF notes");
    if (k->vend - k->vstart > ELF_MAX_SPAN)
        return fail(k, -E2BIG, "image spans %llu MiB",
                    (unsigned long long)((k->vend - k->vstart) >> 20));
    k->virt_base = has_vbase ? vbase : (k->vstart & ~0xfffULL);
    if (k->virt_base > k->vstart || (k->virt_base & 0xfff) ||
        k->vstart - k->virt_base > ELF_MAX_SPAN)
        return fail(k, -EINVAL, "VIRT_BASE %#llx does not fit the segments",
                    (unsigned long long)k->virt_base);
    k->entry = has_entry ? entry_note : e_entry;
    if (!inside_segment(k, k->entry))
        return fail(k, -EINVAL, "entry %#llx outside the image",
                    (unsigned long long)k->entry);
    if (k->has_hypercall_page &&
        ((k->hypercall_page & 0xfff) || !inside_segment(k, k->hypercall_page) ||
         !inside_segment(k, k->hypercall_page + 0xfff)))
        return fail(k, -EINVAL, "hypercall page %#llx not a page of the image",
                    (unsigned long long)k->hypercall_page);
    return 0;
}
