/*
 * test_elf.c - elf_parse() on a valid crafted kernel and on a table of
 * malformed ones: each must be refused with the documented error and a
 * reason, never read outside the image (ASan watches every read: each
 * image is copied into an allocation of exactly its size).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "boot/elf.h"
#include "elfgen.h"
#include "testlib.h"

#define VA 0xffffffff80000000ULL

static size_t base_image(struct elfgen *g, uint8_t *buf)
{
    static const uint8_t code[8192];
    memset(g, 0, sizeof(*g));
    g->vaddr = VA;
    g->code = code;
    g->code_len = sizeof(code);
    g->memsz = 3 * 4096;
    g->entry = VA + 0x10;
    g->virt_base = VA;
    g->hypercall_page = VA + 0x1000;
    return elfgen_build(g, buf);
}

static int parse_exact(const uint8_t *buf, size_t size, struct elf_kernel *k)
{
    uint8_t *copy = malloc(size ? size : 1);
    int r;

    assert_non_null(copy);
    memcpy(copy, buf, size);
    r = elf_parse(copy, size, k);
    free(copy);
    return r;
}

static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }

static void test_valid(void **state)
{
    static uint8_t buf[ELFGEN_MAX];
    struct elfgen g;
    struct elf_kernel k;
    size_t n = base_image(&g, buf);
    (void)state;

    assert_int_equal(parse_exact(buf, n, &k), 0);
    assert_int_equal(k.nr_seg, 1);
    assert_int_equal(k.entry, VA + 0x10);
    assert_int_equal(k.virt_base, VA);
    assert_true(k.has_hypercall_page);
    assert_int_equal(k.hypercall_page, VA + 0x1000);
    assert_int_equal(k.vend, VA + 3 * 4096);
    assert_string_equal(k.guest_os, "memvisor-test");
    assert_string_equal(k.xen_version, "xen-3.0");
}

enum mut {
    M_TRUNC_HDR, M_MAGIC, M_CLASS32, M_BIGENDIAN, M_ET_DYN, M_MACHINE,
    M_EHSIZE, M_PHNUM0, M_PHNUM_HUGE, M_PHENTSIZE, M_PHOFF_WRAP, M_PHOFF_PAST,
    M_SEG_OFF_PAST, M_SEG_OFF_WRAP, M_FILESZ_GT_MEMSZ, M_VADDR_NONCANON,
    M_VADDR_HV, M_VADDR_WRAP, M_SPAN_HUGE, M_NOTE_PAST, M_NOTE_NAMESZ_HUGE,
    M_NOTE_DESCSZ_HUGE, M_NOTE_NUMERIC_3, M_ENTRY_OUTSIDE, M_HCALL_UNALIGNED,
    M_HCALL_OUTSIDE, M_VBASE_ABOVE, M_NO_NOTES, M_TRUNC_SEGMENT, M_NR
};

static const struct {
    const char *name;
    int err;
} muts[M_NR] = {
    [M_TRUNC_HDR] = {"truncated header", -ENOEXEC},
    [M_MAGIC] = {"bad magic", -ENOEXEC},
    [M_CLASS32] = {"ELFCLASS32", -ENOEXEC},
    [M_BIGENDIAN] = {"big-endian", -ENOEXEC},
    [M_ET_DYN] = {"ET_DYN", -ENOEXEC},
    [M_MACHINE] = {"not x86-64", -ENOEXEC},
    [M_EHSIZE] = {"bad e_ehsize", -EINVAL},
    [M_PHNUM0] = {"no program headers", -EINVAL},
    [M_PHNUM_HUGE] = {"65535 program headers", -EINVAL},
    [M_PHENTSIZE] = {"bad e_phentsize", -EINVAL},
    [M_PHOFF_WRAP] = {"phoff wraps", -EINVAL},
    [M_PHOFF_PAST] = {"phoff past the end", -EINVAL},
    [M_SEG_OFF_PAST] = {"segment offset past the end", -EINVAL},
    [M_SEG_OFF_WRAP] = {"segment offset + filesz wraps", -EINVAL},
    [M_FILESZ_GT_MEMSZ] = {"filesz > memsz", -EINVAL},
    [M_VADDR_NONCANON] = {"non-canonical vaddr", -EINVAL},
    [M_VADDR_HV] = {"vaddr in the hypervisor slots", -EINVAL},
    [M_VADDR_WRAP] = {"vaddr + memsz wraps", -EINVAL},
    [M_SPAN_HUGE] = {"segment of 512 MiB", -E2BIG},
    [M_NOTE_PAST] = {"note past its segment", -EINVAL},
    [M_NOTE_NAMESZ_HUGE] = {"note namesz 2^32-1", -EINVAL},
    [M_NOTE_DESCSZ_HUGE] = {"note descsz 2^32-4", -EINVAL},
    [M_NOTE_NUMERIC_3] = {"3-byte ENTRY note", -EINVAL},
    [M_ENTRY_OUTSIDE] = {"entry outside the image", -EINVAL},
    [M_HCALL_UNALIGNED] = {"hypercall page not aligned", -EINVAL},
    [M_HCALL_OUTSIDE] = {"hypercall page outside", -EINVAL},
    [M_VBASE_ABOVE] = {"VIRT_BASE above the image", -EINVAL},
    [M_NO_NOTES] = {"no Xen notes", -ENOEXEC},
    [M_TRUNC_SEGMENT] = {"file shorter than its segment", -EINVAL},
};

static size_t mutate(enum mut m, uint8_t *b, size_t n, struct elfgen *g)
{
    uint8_t *load = b + g->off_phdr_load, *notep = b + g->off_phdr_note;
    uint8_t *nt = b + g->off_notes;

    switch (m) {
    case M_TRUNC_HDR: return 40;
    case M_MAGIC: b[1] = 'X'; break;
    case M_CLASS32: b[4] = 1; break;
    case M_BIGENDIAN: b[5] = 2; break;
    case M_ET_DYN: put16(b + 16, 3); break;
    case M_MACHINE: put16(b + 18, 3); break;
    case M_EHSIZE: put16(b + 52, 52); break;
    case M_PHNUM0: put16(b + 56, 0); break;
    case M_PHNUM_HUGE: put16(b + 56, 0xffff); break;
    case M_PHENTSIZE: put16(b + 54, 32); break;
    case M_PHOFF_WRAP: put64(b + 32, ~0ULL - 8); break;
    case M_PHOFF_PAST: put64(b + 32, n - 8); break;
    case M_SEG_OFF_PAST: put64(load + 8, n + 4096); break;
    case M_SEG_OFF_WRAP: put64(load + 8, ~0ULL - 100); break;
    case M_FILESZ_GT_MEMSZ: put64(load + 40, 16); break;
    case M_VADDR_NONCANON: put64(load + 16, 0x0000900000000000ULL); break;
    case M_VADDR_HV: put64(load + 16, 0xffff800000001000ULL); break;
    case M_VADDR_WRAP: put64(load + 16, 0xfffffffffffff000ULL); break;
    case M_SPAN_HUGE: put64(load + 40, 512ULL << 20); break;
    case M_NOTE_PAST: put64(notep + 32, 20); break;
    case M_NOTE_NAMESZ_HUGE: put32(nt, 0xffffffff); break;
    case M_NOTE_DESCSZ_HUGE: put32(nt + 4, 0xfffffffc); break;
    case M_NOTE_NUMERIC_3: put32(nt + 4, 3); break;
    case M_ENTRY_OUTSIDE: put64(b + g->off_entry_note, VA + 0x100000); break;
    case M_HCALL_UNALIGNED:
    case M_HCALL_OUTSIDE:
    case M_VBASE_ABOVE: {
        /* rebuild with the bad note value */
        if (m == M_HCALL_UNALIGNED) g->hypercall_page = VA + 0x1008;
        if (m == M_HCALL_OUTSIDE) g->hypercall_page = VA + 0x10000;
        if (m == M_VBASE_ABOVE) g->virt_base = VA + 0x1000;
        return elfgen_build(g, b);
    }
    case M_NO_NOTES: put32(notep, 6); break; /* PT_PHDR: no longer notes */
    case M_TRUNC_SEGMENT: return n - 100;
    case M_NR: break;
    }
    return n;
}

/* MEMVISOR_ELF_CORPUS=dir writes each image as a fuzz corpus seed. */
static void save_seed(int m, const uint8_t *buf, size_t n)
{
    const char *dir = getenv("MEMVISOR_ELF_CORPUS");
    char path[512];
    FILE *f;

    if (!dir)
        return;
    snprintf(path, sizeof(path), "%s/mut-%02d", dir, m);
    f = fopen(path, "wb");
    if (f) {
        fwrite(buf, 1, n, f);
        fclose(f);
    }
}

static void test_malformed(void **state)
{
    static uint8_t buf[ELFGEN_MAX];
    (void)state;

    for (int m = 0; m < M_NR; m++) {
        struct elfgen g;
        struct elf_kernel k;
        size_t n = base_image(&g, buf);
        int r;

        n = mutate((enum mut)m, buf, n, &g);
        save_seed(m, buf, n);
        r = parse_exact(buf, n, &k);
        test_note("%-32s -> %d (%s)", muts[m].name, r, k.error);
        assert_int_equal(r, muts[m].err);
        assert_true(k.error[0] != 0);
    }
}

/* Random byte flips of a valid image: never a crash or an out-of-bounds
 * read; a success must still satisfy the accepted-image rules. */
static void test_random_flips(void **state)
{
    static uint8_t buf[ELFGEN_MAX], img[ELFGEN_MAX];
    uint64_t seed = test_seed(0x5eed), ok = 0, runs = test_scale(3000);
    struct elfgen g;
    size_t n = base_image(&g, img);
    (void)state;

    for (uint64_t i = 0; i < runs; i++) {
        struct elf_kernel k;
        memcpy(buf, img, n);
        for (unsigned f = 0; f < 1 + test_rand_below(&seed, 4); f++)
            buf[test_rand_below(&seed, 512)] = (uint8_t)test_rand(&seed);
        if (parse_exact(buf, n, &k) == 0) {
            ok++;
            assert_true(k.nr_seg > 0);
            assert_true(k.vend - k.vstart <= ELF_MAX_SPAN);
            assert_true(k.virt_base <= k.vstart);
        }
    }
    test_note("%llu mutated images, %llu accepted",
              (unsigned long long)runs, (unsigned long long)ok);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_random_flips),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
