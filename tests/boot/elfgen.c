/*
 * elfgen.c - see elfgen.h.
 */
#include "elfgen.h"

#include <string.h>

static void w(uint8_t *p, uint64_t v, unsigned size)
{
    memcpy(p, &v, size);
}

static size_t note(uint8_t *p, uint32_t type, const void *desc, uint32_t len)
{
    w(p, 4, 4);
    w(p + 4, len, 4);
    w(p + 8, type, 4);
    memcpy(p + 12, "Xen", 4);
    memcpy(p + 16, desc, len);
    return 16 + ((len + 3) & ~3u);
}

size_t elfgen_build(struct elfgen *g, uint8_t *b)
{
    size_t code_off = 0x1000, notes = 0x200, n = 0;
    size_t filesz = g->code_len > 0 ? g->code_len : 1;

    memset(b, 0, ELFGEN_MAX);
    memcpy(b, "\177ELF", 4);
    b[4] = 2;
    b[5] = 1;
    b[6] = 1;
    w(b + 16, 2, 2);   /* ET_EXEC */
    w(b + 18, 62, 2);  /* EM_X86_64 */
    w(b + 20, 1, 4);
    w(b + 24, g->entry, 8);
    w(b + 32, 64, 8);  /* phoff */
    w(b + 52, 64, 2);  /* ehsize */
    w(b + 54, 56, 2);  /* phentsize */
    w(b + 56, 2, 2);   /* phnum */

    g->off_notes = notes;
    g->off_entry_note = notes + 16;
    n += note(b + notes + n, 1, &g->entry, 8);
    n += note(b + notes + n, 3, &g->virt_base, 8);
    if (g->hypercall_page)
        n += note(b + notes + n, 2, &g->hypercall_page, 8);
    n += note(b + notes + n, 6, "memvisor-test", 14);
    n += note(b + notes + n, 5, "xen-3.0", 8);

    g->off_phdr_load = 64;
    uint8_t *ph = b + 64;
    w(ph, 1, 4);                /* PT_LOAD */
    w(ph + 4, 7, 4);            /* RWX */
    w(ph + 8, code_off, 8);
    w(ph + 16, g->vaddr, 8);
    w(ph + 24, g->vaddr, 8);
    w(ph + 32, filesz, 8);
    w(ph + 40, g->memsz > filesz ? g->memsz : filesz, 8);
    w(ph + 48, 0x1000, 8);
    g->off_phdr_note = 64 + 56;
    ph = b + 64 + 56;
    w(ph, 4, 4);                /* PT_NOTE */
    w(ph + 8, notes, 8);
    w(ph + 32, n, 8);
    w(ph + 40, n, 8);
    if (g->code)
        memcpy(b + code_off, g->code, g->code_len);
    return code_off + filesz;
}
