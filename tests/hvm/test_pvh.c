/*
 * test_pvh.c - the PVH loader (boot/pvh.h) without KVM: the test stub and
 * a hand-made ELF32 parse; refusals (no note, entry outside the segments,
 * a note past its segment, a segment above 4 GiB, truncation); the layout
 * pvh_build() writes (start info, module list, memory map, command line)
 * read back as a guest would; every segment, module and command-line
 * placement rule; and thousands of mutated images parsed without a crash.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "boot/mptable.h"
#include "boot/pvh.h"
#include "testlib.h"
#include "xen/arch-x86/hvm/start_info.h"

#define RAM (16u << 20)

static const char *stub_path;
static uint8_t *guest; /* RAM bytes of a fake guest */
static uint64_t writes;

static int write_ram(void *opaque, uint64_t gpa, const void *src, uint64_t len)
{
    (void)opaque;
    if (gpa > RAM || len > RAM - gpa)
        return -EFAULT;
    memcpy(guest + gpa, src, len);
    writes++;
    return 0;
}

static uint8_t *load_stub(size_t *size)
{
    uint8_t *img = test_load_file(stub_path, size);

    assert_non_null(img);
    return img;
}

/* The offset of the PHYS32_ENTRY note's type field in the image. */
static size_t find_note(const uint8_t *img, size_t size)
{
    for (size_t i = 0; i + 16 <= size; i += 4) {
        uint32_t w[3];

        memcpy(w, img + i, 12);
        if (w[0] == 4 && w[1] == 4 && w[2] == 18 &&
            memcmp(img + i + 12, "Xen", 4) == 0)
            return i + 8;
    }
    fail_msg("no note in the stub");
    return 0;
}

static void test_parse_stub(void **state)
{
    struct pvh_kernel k;
    size_t size;
    uint8_t *img = load_stub(&size);

    (void)state;
    assert_int_equal(pvh_parse(img, size, &k), 0);
    assert_int_equal(k.elf_class, 64);
    assert_int_equal(k.entry, 0x100000);
    assert_false(k.has_pv_entry);
    assert_int_equal(k.pstart, 0x100000);
    /* no note: refused as not a PVH kernel */
    size_t t = find_note(img, size);
    img[t] = 19;
    assert_int_equal(pvh_parse(img, size, &k), -ENOEXEC);
    test_note("no note: %s", k.error);
    img[t] = 18;
    /* the entry outside every segment */
    uint32_t e = 0x700000;
    memcpy(img + t + 8, &e, 4);
    assert_int_equal(pvh_parse(img, size, &k), -EINVAL);
    test_note("entry outside: %s", k.error);
    e = 0x100000;
    memcpy(img + t + 8, &e, 4);
    /* a note size running past its segment */
    uint32_t big = 0x1000;
    memcpy(img + t - 4, &big, 4);
    assert_int_equal(pvh_parse(img, size, &k), -EINVAL);
    test_note("long note: %s", k.error);
    big = 4;
    memcpy(img + t - 4, &big, 4);
    assert_int_equal(pvh_parse(img, size, &k), 0);
    /* truncated */
    assert_int_equal(pvh_parse(img, 40, &k), -ENOEXEC);
    assert_int_not_equal(pvh_parse(img, 200, &k), 0);
    free(img);
}

/* A hand-made ELF32: header, PT_LOAD at 2 MiB, PT_NOTE with an 8-byte
 * PHYS32_ENTRY. */
static size_t make_elf32(uint8_t *b, uint32_t paddr, uint32_t entry)
{
    memset(b, 0, 512);
    memcpy(b, "\x7f" "ELF", 4);
    b[4] = 1; b[5] = 1; b[6] = 1;
    uint16_t h16[] = {2, 3};
    memcpy(b + 16, h16, 4);
    uint32_t ver = 1, phoff = 52;
    memcpy(b + 20, &ver, 4);
    memcpy(b + 24, &entry, 4);
    memcpy(b + 28, &phoff, 4);
    uint16_t sz[] = {52, 32, 2};
    memcpy(b + 40, sz, 6);
    uint32_t load[8] = {1, 256, paddr, paddr, 64, 4096, 7, 4096};
    uint32_t note[8] = {4, 128, 0, 0, 24, 24, 4, 4};
    memcpy(b + 52, load, 32);
    memcpy(b + 84, note, 32);
    uint32_t n[3] = {4, 8, 18};
    memcpy(b + 128, n, 12);
    memcpy(b + 140, "Xen", 4);
    uint64_t e64 = entry;
    memcpy(b + 144, &e64, 8);
    memset(b + 256, 0x90, 64);
    return 512;
}

static void test_parse_elf32(void **state)
{
    uint8_t b[512];
    struct pvh_kernel k;
    size_t n = make_elf32(b, 0x200000, 0x200010);

    (void)state;
    assert_int_equal(pvh_parse(b, n, &k), 0);
    assert_int_equal(k.elf_class, 32);
    assert_int_equal(k.entry, 0x200010);
    assert_int_equal(k.seg[0].memsz, 4096);
    /* a segment reaching past 4 GiB */
    n = make_elf32(b, 0xfffff800u, 0xfffff810u);
    assert_int_equal(pvh_parse(b, n, &k), -EINVAL);
    test_note("above 4 GiB: %s", k.error);
}

static void test_build_layout(void **state)
{
    struct pvh_kernel k;
    struct pvh_layout l;
    struct hvm_start_info si;
    struct hvm_modlist_entry me;
    struct hvm_memmap_table_entry mm[3];
    uint8_t module[10000];
    char err[128];
    size_t size;
    uint8_t *img = load_stub(&size);
    struct pvh_params p = {img, size, RAM, "console=ttyS0 quiet", module,
                           sizeof(module), 2};

    (void)state;
    guest = calloc(1, RAM);
    assert_non_null(guest);
    memset(module, 0xab, sizeof(module));
    assert_int_equal(pvh_parse(img, size, &k), 0);
    assert_int_equal(pvh_build(&k, &p, write_ram, NULL, &l, err, sizeof(err)),
                     0);
    memcpy(&si, guest + 0x1000, sizeof(si));
    assert_int_equal(si.magic, XEN_HVM_START_MAGIC_VALUE);
    assert_int_equal(si.version, 1);
    assert_int_equal(si.nr_modules, 1);
    assert_string_equal((char *)guest + si.cmdline_paddr, "console=ttyS0 quiet");
    memcpy(&me, guest + si.modlist_paddr, sizeof(me));
    assert_int_equal(me.size, sizeof(module));
    assert_int_equal(me.paddr % 4096, 0);
    assert_true(me.paddr + me.size <= RAM);
    assert_memory_equal(guest + me.paddr, module, sizeof(module));
    assert_int_equal(si.memmap_entries, 3);
    memcpy(mm, guest + si.memmap_paddr, sizeof(mm));
    assert_int_equal(mm[0].type, XEN_HVM_MEMMAP_TYPE_RAM);
    assert_int_equal(mm[0].addr + mm[0].size, 0x9fc00);
    assert_int_equal(mm[1].type, XEN_HVM_MEMMAP_TYPE_RESERVED);
    assert_int_equal(mm[1].addr, 0x9fc00);
    assert_int_equal(l.mptable, 0x9fc00);
    assert_true(l.mptable_size > 0 && l.mptable + l.mptable_size <= 0xa0000);
    assert_int_equal(mm[2].addr, 0x100000);
    assert_int_equal(mm[2].addr + mm[2].size, RAM);
    assert_memory_equal(guest + 0x100000, img + 0x1000, 16);
    /* a module that does not fit */
    p.ram_end = 0x101000 + 4096;
    assert_int_equal(pvh_build(&k, &p, write_ram, NULL, &l, err, sizeof(err)),
                     -ENOSPC);
    test_note("no room: %s", err);
    /* RAM ending below the segment */
    p.ram_end = 0x100100;
    assert_int_equal(pvh_build(&k, &p, write_ram, NULL, &l, err, sizeof(err)),
                     -EINVAL);
    test_note("outside RAM: %s", err);
    /* a command line too long */
    {
        static char longline[PVH_CMDLINE_MAX + 1];

        memset(longline, 'x', PVH_CMDLINE_MAX);
        p.ram_end = RAM;
        p.cmdline = longline;
        assert_int_equal(
            pvh_build(&k, &p, write_ram, NULL, &l, err, sizeof(err)), -E2BIG);
    }
    free(guest);
    free(img);
}

static unsigned sum8(const uint8_t *p, size_t n)
{
    uint8_t s = 0;

    while (n--)
        s = (uint8_t)(s + *p++);
    return s;
}

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

/* The MP tables read as a kernel reads them (Linux's mpparse: the
 * floating pointer in the last KiB of base memory, both checksums, the
 * revision, the entries in order): for 1, 2 and 32 processors, one
 * processor entry each (vCPU 0 the BSP), the ISA bus, the I/O APIC above
 * the last local APIC id, ISA IRQs 0..15 on its inputs 0..15, ExtINT on
 * LINT0 and NMI on LINT1; then each refusal. */
static void test_mptable(void **state)
{
    static const unsigned counts[] = {1, 2, MPTABLE_MAX_CPUS};
    uint8_t buf[1024];
    size_t used;

    (void)state;
    for (unsigned t = 0; t < sizeof(counts) / sizeof(counts[0]); t++) {
        unsigned n = counts[t], cpus = 0, irqs = 0, lints = 0, ioapics = 0;
        const uint8_t *cfg, *e, *end;

        memset(buf, 0xee, sizeof(buf));
        assert_int_equal(mptable_build(n, 0x9fc00, buf, sizeof(buf), &used), 0);
        assert_int_equal(used, MPTABLE_SIZE(n));
        assert_true(used <= 0xa0000 - 0x9fc00);
        assert_memory_equal(buf, "_MP_", 4);
        assert_int_equal(buf[8], 1);
        assert_int_equal(buf[9], 4);
        assert_int_equal(sum8(buf, 16), 0);
        assert_int_equal(rd32(buf + 4), 0x9fc00 + 16);
        cfg = buf + 16;
        assert_memory_equal(cfg, "PCMP", 4);
        assert_int_equal(cfg[4] | cfg[5] << 8, used - 16);
        assert_int_equal(sum8(cfg, used - 16), 0);
        assert_int_equal(rd32(cfg + 36), MPTABLE_LAPIC_BASE);
        assert_int_equal(cfg[34] | cfg[35] << 8, n + 2 + 16 + 2);
        end = cfg + (cfg[4] | cfg[5] << 8);
        for (e = cfg + 44; e < end;) {
            switch (e[0]) {
            case 0: /* processor */
                assert_int_equal(e[1], cpus);
                assert_int_equal(e[3], cpus == 0 ? 3 : 1);
                cpus++;
                e += 20;
                break;
            case 1:
                assert_memory_equal(e + 2, "ISA   ", 6);
                e += 8;
                break;
            case 2:
                assert_int_equal(e[1], n);
                assert_int_equal(e[3], 1);
                assert_int_equal(rd32(e + 4), MPTABLE_IOAPIC_BASE);
                ioapics++;
                e += 8;
                break;
            case 3:
                assert_int_equal(e[1], 0);
                assert_int_equal(e[5], irqs);
                assert_int_equal(e[6], n);
                assert_int_equal(e[7], irqs);
                irqs++;
                e += 8;
                break;
            case 4:
                assert_int_equal(e[1], lints == 0 ? 3 : 1);
                assert_int_equal(e[6], 0xff);
                assert_int_equal(e[7], lints);
                lints++;
                e += 8;
                break;
            default:
                fail_msg("entry type %u", e[0]);
            }
        }
        assert_ptr_equal(e, end);
        assert_int_equal(cpus, n);
        assert_int_equal(ioapics, 1);
        assert_int_equal(irqs, 16);
        assert_int_equal(lints, 2);
        assert_int_equal(buf[used], 0xee); /* nothing written past it */
    }
    assert_int_equal(mptable_build(0, 0x9fc00, buf, sizeof(buf), &used),
                     -EINVAL);
    assert_int_equal(mptable_build(MPTABLE_MAX_CPUS + 1, 0x9fc00, buf,
                                   sizeof(buf), &used),
                     -EINVAL);
    assert_int_equal(mptable_build(2, 0x9fc00, buf, MPTABLE_SIZE(2) - 1, &used),
                     -ENOSPC);
    assert_int_equal(used, 0);
}

/* Mutated stubs: parse, and build into a fake guest when they parse; no
 * crash, no write outside the RAM given (ASan). */
static void test_mutations(void **state)
{
    uint64_t seed = test_seed(0x9b0b), n = test_scale(5000), ok = 0;
    size_t size;
    uint8_t *img = load_stub(&size);
    uint8_t *m = malloc(size);

    (void)state;
    guest = calloc(1, RAM);
    assert_non_null(m);
    assert_non_null(guest);
    for (uint64_t i = 0; i < n; i++) {
        struct pvh_kernel k;
        struct pvh_layout l;
        char err[128];
        size_t len = size;

        memcpy(m, img, size);
        for (unsigned f = 1 + (unsigned)test_rand_below(&seed, 4); f; f--)
            m[test_rand_below(&seed, MIN(size, (size_t)0x1400))] =
                (uint8_t)test_rand(&seed);
        if (test_rand_below(&seed, 8) == 0)
            len = (size_t)test_rand_below(&seed, size + 1);
        if (pvh_parse(m, len, &k) == 0) {
            struct pvh_params p = {m, len, RAM, "x", NULL, 0,
                                   1 + (unsigned)(i % MPTABLE_MAX_CPUS)};

            ok++;
            (void)!pvh_build(&k, &p, write_ram, NULL, &l, err, sizeof(err));
        }
    }
    test_note("%llu mutated images, %llu parsed and built",
              (unsigned long long)n, (unsigned long long)ok);
    free(guest);
    free(m);
    free(img);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_stub),
        cmocka_unit_test(test_parse_elf32),
        cmocka_unit_test(test_build_layout),
        cmocka_unit_test(test_mptable),
        cmocka_unit_test(test_mutations),
    };
    if (argc < 2) {
        fprintf(stderr, "usage: %s <pvhstub>\n", argv[0]);
        return 2;
    }
    stub_path = argv[1];
    return cmocka_run_group_tests(tests, NULL, NULL);
}
