/*
 * test_guest.c - unit tests of the guest kernel's pure code, built for the
 * host: the formatter and command-line parser, the page-table entry helpers
 * and rules, and the self-checking page contents that the dirty, ptchurn and
 * balloon workloads rely on to see a lost or misplaced write.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "check.h"
#include "klib.h"
#include "pt.h"

/* ---- formatter ---- */

static void t_format(void **state)
{
    (void)state;
    static const struct {
        const char *want;
    } cases[] = {
        {"-42 42 ff"},
        {"18446744073709551615 ffffffffffffffff"},
        {"[   7] [7   ] [007]"},
        {"0x1000 100% x"},
    };
    char buf[128];
    int n;

    n = ksnprintf(buf, sizeof(buf), "%d %u %x", -42, 42u, 255u);
    assert_string_equal(buf, cases[0].want);
    assert_int_equal(n, (int)strlen(cases[0].want));
    ksnprintf(buf, sizeof(buf), "%lu %lx", UINT64_MAX, UINT64_MAX);
    assert_string_equal(buf, cases[1].want);
    ksnprintf(buf, sizeof(buf), "[%4d] [%-4d] [%03d]", 7, 7, 7);
    assert_string_equal(buf, cases[2].want);
    ksnprintf(buf, sizeof(buf), "%p 100%% %c", (void *)0x1000, 'x');
    assert_string_equal(buf, cases[3].want);
    ksnprintf(buf, sizeof(buf), "%ld %s", (int64_t)INT64_MIN, "end");
    assert_string_equal(buf, "-9223372036854775808 end");
    const char *volatile null_str = NULL;
    ksnprintf(buf, sizeof(buf), "%s", null_str);
    assert_string_equal(buf, "(null)");
}

static void t_format_truncates(void **state)
{
    (void)state;
    char buf[8];
    memset(buf, 'X', sizeof(buf));
    int n = ksnprintf(buf, 5, "%s", "abcdefgh");
    assert_int_equal(n, 8);
    assert_string_equal(buf, "abcd");
    assert_int_equal(buf[5], 'X'); /* nothing written past size */
    n = ksnprintf(buf, 0, "%d", 12345);
    assert_int_equal(n, 5);
    assert_int_equal(buf[0], 'a');
}

/* ---- command line ---- */

static void t_cmdline(void **state)
{
    (void)state;
    const char *c = "dirty  passes=12 pages=0x40 vcpus=2 bad=12x big="
                    "99999999999999999999 seed=";
    size_t max = strlen(c) + 1;
    assert_true(cmdline_has(c, max, "dirty"));
    assert_false(cmdline_has(c, max, "dirt"));
    assert_false(cmdline_has(c, max, "passes"));
    assert_int_equal(cmdline_get(c, max, "passes", 1), 12);
    assert_int_equal(cmdline_get(c, max, "pages", 1), 0x40);
    assert_int_equal(cmdline_get(c, max, "vcpus", 1), 2);
    assert_int_equal(cmdline_get(c, max, "pass", 7), 7);
    assert_int_equal(cmdline_get(c, max, "bad", 7), 7);
    assert_int_equal(cmdline_get(c, max, "big", 7), 7);
    assert_int_equal(cmdline_get(c, max, "seed", 7), 7);
    assert_int_equal(cmdline_get(c, max, "absent", 9), 9);
}

static void t_cmdline_bounded(void **state)
{
    (void)state;
    /* No terminating NUL within max: the parser stops at max. */
    char c[16];
    memcpy(c, "hostile calls=12", 16);
    assert_true(cmdline_has(c, 7, "hostile"));
    assert_false(cmdline_has(c, 6, "hostile"));
    assert_int_equal(cmdline_get(c, 16, "calls", 5), 12);
    assert_int_equal(cmdline_get(c, 15, "calls", 5), 1);
    assert_int_equal(cmdline_get(c, 14, "calls", 5), 5);
}

static void t_krand(void **state)
{
    (void)state;
    struct krand a, b;
    krand_seed(&a, 42);
    krand_seed(&b, 42);
    for (int i = 0; i < 1000; i++) {
        uint64_t x = krand(&a);
        assert_int_equal(x, krand(&b));
        uint64_t y = krand_below(&a, 10);
        assert_true(y < 10);
        assert_int_equal(y, krand_below(&b, 10));
    }
    krand_seed(&a, 0); /* a zero seed must not stick at zero */
    assert_int_not_equal(krand(&a), 0);
}

/* ---- page tables ---- */

static void t_pt_index_roundtrip(void **state)
{
    (void)state;
    struct krand r;
    krand_seed(&r, 7);
    for (int i = 0; i < 100000; i++) {
        uint64_t va = krand(&r) & 0x0000FFFFFFFFF000ULL;
        if (va & (1ULL << 47))
            va |= 0xFFFF000000000000ULL;
        assert_true(va_is_canonical(va));
        assert_int_equal(pt_va(pt_index(va, 4), pt_index(va, 3),
                               pt_index(va, 2), pt_index(va, 1)),
                         va);
    }
    assert_int_equal(pt_index(VIRT_BASE, 4), PHYSMAP_L4_SLOT);
    assert_int_equal(pt_index(VIRT_BASE, 3), PHYSMAP_L3_SLOT);
    assert_int_equal(pt_index(VIRT_BASE, 2), 0);
    assert_false(va_is_canonical(0x0000800000000000ULL));
    assert_int_equal(physmap_pfn(physmap_va(12345)), 12345);
    assert_int_equal(pt_index(physmap_va(PHYSMAP_MAX_PFNS - 1), 2), 511);
    assert_int_equal(pt_entry_maddr(5, 3), 5 * 4096 + 24);
}

static void t_pte(void **state)
{
    (void)state;
    uint64_t e = pte_make(0xABCDE, PTE_DATA);
    assert_int_equal(pte_mfn(e), 0xABCDE);
    assert_true(pte_present(e));
    assert_int_equal(e & 0xfff, PTE_DATA);
    /* Bits above the address field never leak into it. */
    assert_int_equal(pte_mfn(pte_make(~0ULL, 0)), 0xFFFFFFFFFFULL);
    assert_int_equal(pte_make(1, _PAGE_NX) >> 63, 1);
    assert_false(l4_slot_is_hypervisor(255));
    assert_true(l4_slot_is_hypervisor(256));
    assert_true(l4_slot_is_hypervisor(271));
    assert_false(l4_slot_is_hypervisor(272));
}

/* The rules the hostile workload breaks on purpose, as a table. */
static void t_pte_rules(void **state)
{
    (void)state;
    const struct {
        uint64_t pte;
        unsigned level, slot;
        bool owned, is_table, legal;
    } cases[] = {
        {pte_make(5, PTE_DATA), 1, 0, true, false, true},
        {pte_make(5, PTE_DATA), 1, 0, false, false, false}, /* unowned */
        {pte_make(5, PTE_DATA), 1, 0, true, true, false},   /* RW table */
        {pte_make(5, PTE_DATA & ~_PAGE_RW), 1, 0, true, true, true},
        {pte_make(5, PTE_DATA | _PAGE_PSE), 1, 0, true, false, true}, /* PAT */
        {pte_make(5, PTE_TABLE | _PAGE_PSE), 2, 0, true, true, false},
        {pte_make(5, PTE_TABLE | _PAGE_PSE), 3, 0, true, true, false},
        {pte_make(5, PTE_TABLE | _PAGE_PSE), 4, 0, true, true, false},
        {pte_make(5, PTE_TABLE), 4, 255, true, true, true},
        {pte_make(5, PTE_TABLE), 4, 256, true, true, false},
        {pte_make(5, PTE_TABLE), 4, 271, true, true, false},
        {pte_make(5, PTE_TABLE), 4, 272, true, true, true},
        {0, 4, 260, true, false, true},
        {2, 4, 260, true, false, false}, /* not present but not empty */
        {0, 1, 0, false, false, true},
        {pte_make(5, PTE_DATA) | (1ULL << 51), 1, 0, true, false, false},
        {pte_make(1ULL << 33, PTE_DATA), 1, 0, true, false, true},
        {pte_make(1ULL << 34, PTE_DATA), 1, 0, true, false, false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        bool got =
            pte_is_legal_guest(cases[i].pte, cases[i].level, cases[i].slot,
                               cases[i].owned, cases[i].is_table, 46);
        if (got != cases[i].legal)
            fail_msg("case %zu: pte %llx level %u slot %u: %d, want %d", i,
                     (unsigned long long)cases[i].pte, cases[i].level,
                     cases[i].slot, got, cases[i].legal);
    }
}

/* ---- checked pages ---- */

static uint64_t page[CHECK_WORDS];

static void t_check_roundtrip(void **state)
{
    (void)state;
    memset(page, 0, sizeof(page));
    assert_true(check_is_zero(page));
    check_fill(page, 77, 5, 1);
    assert_false(check_is_zero(page));
    assert_int_equal(check_verify(page, 77, 5, 1, NULL), CHECK_OK);
    assert_int_equal(check_verify(page, 78, 5, 1, NULL), CHECK_BAD_PFN);
    assert_int_equal(check_verify(page, 77, 4, 1, NULL), CHECK_BAD_COUNTER);
    assert_int_equal(check_verify(page, 77, 6, 1, NULL), CHECK_BAD_COUNTER);
    assert_int_equal(check_verify(page, 77, 5, 2, NULL), CHECK_BAD_TAG);
    memset(page, 0, sizeof(page)); /* a fresh page is no checked page */
    assert_int_equal(check_verify(page, 77, 5, 1, NULL), CHECK_BAD_MAGIC);
    check_fill(page, 78, 5, 1); /* a checked page of another pfn */
    assert_int_equal(check_verify(page, 77, 5, 1, NULL), CHECK_BAD_PFN);
    memset(page, 0, sizeof(page));
    page[1] = 77;
    assert_int_equal(check_verify(page, 77, 5, 1, NULL), CHECK_BAD_MAGIC);
    for (int r = CHECK_OK; r <= CHECK_BAD_BODY; r++)
        assert_string_not_equal(check_result_name((enum check_result)r), "?");
}

/* Every single-word change anywhere in the page is seen, at that word. */
static void t_check_every_word(void **state)
{
    (void)state;
    struct krand r;
    krand_seed(&r, 3);
    unsigned checked = 0;
    for (unsigned w = 0; w < CHECK_WORDS; w++) {
        for (unsigned bit = 0; bit < 64; bit += 9) {
            check_fill(page, 1000 + w, 17, 3);
            page[w] ^= 1ULL << bit;
            unsigned bad = 99999;
            enum check_result res = check_verify(page, 1000 + w, 17, 3, &bad);
            assert_int_not_equal(res, CHECK_OK);
            if (w >= 2)
                assert_int_equal(bad, w);
            checked++;
        }
    }
    /* A page written for the previous pass (a lost write) is stale. */
    check_fill(page, 9, 16, 3);
    assert_int_equal(check_verify(page, 9, 17, 3, NULL), CHECK_BAD_COUNTER);
    /* The body differs between neighbouring pfns and counters. */
    assert_int_not_equal(check_word(1, 1, 0, 4), check_word(2, 1, 0, 4));
    assert_int_not_equal(check_word(1, 1, 0, 4), check_word(1, 2, 0, 4));
    print_message("# %u single-bit corruptions checked\n", checked);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_format),
        cmocka_unit_test(t_format_truncates),
        cmocka_unit_test(t_cmdline),
        cmocka_unit_test(t_cmdline_bounded),
        cmocka_unit_test(t_krand),
        cmocka_unit_test(t_pt_index_roundtrip),
        cmocka_unit_test(t_pte),
        cmocka_unit_test(t_pte_rules),
        cmocka_unit_test(t_check_roundtrip),
        cmocka_unit_test(t_check_every_word),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
