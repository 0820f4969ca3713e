/*
 * test_kvm_flavour.c - kvm_flavour_read() on fake sysfs trees: which module
 * is loaded and its nested-paging parameter give the flavour; the host's
 * own flavour is printed where /dev/kvm is usable.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kvm/kvm.h"
#include "testlib.h"

/* One fake tree: the modules present, each with an optional parameter. */
struct fake_module {
    const char *name;  /* NULL ends the list */
    const char *param; /* NULL: no parameters directory */
    const char *value; /* the parameter file's contents */
};

static const struct {
    const char *what;
    struct fake_module mods[3];
    int rc;
    enum kvm_flavour_kind kind;
    bool nested;
} cases[] = {
    {"no module", {{NULL, NULL, NULL}}, -ENOENT, 0, false},
    {"kvm alone", {{"kvm", "tdp_mmu", "Y\n"}, {NULL, NULL, NULL}}, -ENOENT, 0, false},
    {"kvm_pvm", {{"kvm", NULL, NULL}, {"kvm_pvm", "force", "N\n"}, {NULL, NULL, NULL}},
     0, KVM_FLAVOUR_PVM, false},
    {"kvm_pvm beside kvm_amd", {{"kvm_amd", "npt", "Y\n"}, {"kvm_pvm", NULL, NULL}, {NULL, NULL, NULL}},
     0, KVM_FLAVOUR_PVM, false},
    {"kvm_amd npt=Y", {{"kvm_amd", "npt", "Y\n"}, {NULL, NULL, NULL}}, 0, KVM_FLAVOUR_SVM, true},
    {"kvm_amd npt=1", {{"kvm_amd", "npt", "1\n"}, {NULL, NULL, NULL}}, 0, KVM_FLAVOUR_SVM, true},
    {"kvm_amd npt=N", {{"kvm_amd", "npt", "N\n"}, {NULL, NULL, NULL}}, 0, KVM_FLAVOUR_SVM, false},
    {"kvm_amd npt=0", {{"kvm_amd", "npt", "0"}, {NULL, NULL, NULL}}, 0, KVM_FLAVOUR_SVM, false},
    {"kvm_intel ept=Y", {{"kvm_intel", "ept", "Y\n"}, {NULL, NULL, NULL}}, 0, KVM_FLAVOUR_VMX, true},
    {"kvm_intel ept=N", {{"kvm_intel", "ept", "N\n"}, {NULL, NULL, NULL}}, 0, KVM_FLAVOUR_VMX, false},
    {"kvm_amd without npt", {{"kvm_amd", "avic", "N\n"}, {NULL, NULL, NULL}}, -ENOENT, 0, false},
    {"kvm_amd npt=garbage", {{"kvm_amd", "npt", "maybe\n"}, {NULL, NULL, NULL}}, -EINVAL, 0, false},
};

static void write_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

static void test_fake_trees(void **state)
{
    (void)state;
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        char root[] = "/tmp/memvisor-flavour-XXXXXX", path[512], cmd[600];
        struct kvm_flavour f = {KVM_FLAVOUR_VMX, true};

        assert_non_null(mkdtemp(root));
        snprintf(path, sizeof(path), "%s/sys", root);
        assert_int_equal(mkdir(path, 0755), 0);
        snprintf(path, sizeof(path), "%s/sys/module", root);
        assert_int_equal(mkdir(path, 0755), 0);
        for (const struct fake_module *m = cases[i].mods; m->name; m++) {
            snprintf(path, sizeof(path), "%s/sys/module/%s", root, m->name);
            assert_int_equal(mkdir(path, 0755), 0);
            if (!m->param)
                continue;
            snprintf(path, sizeof(path), "%s/sys/module/%s/parameters", root,
                     m->name);
            assert_int_equal(mkdir(path, 0755), 0);
            snprintf(path, sizeof(path), "%s/sys/module/%s/parameters/%s",
                     root, m->name, m->param);
            write_file(path, m->value);
        }
        int rc = kvm_flavour_read(root, &f);
        test_note("%-24s -> %d%s%s", cases[i].what, rc, rc ? "" : ", ",
                  rc ? "" : kvm_flavour_name(&f));
        assert_int_equal(rc, cases[i].rc);
        if (!rc) {
            assert_int_equal(f.kind, cases[i].kind);
            assert_int_equal(f.nested_paging, cases[i].nested);
            assert_int_equal(kvm_flavour_shadow_mmu(&f), !cases[i].nested);
        }
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
        assert_int_equal(system(cmd), 0);
    }
}

/* The names say the kind and the MMU. */
static void test_names(void **state)
{
    struct kvm_flavour pvm = {KVM_FLAVOUR_PVM, false};
    struct kvm_flavour svm = {KVM_FLAVOUR_SVM, true};
    struct kvm_flavour svm_shadow = {KVM_FLAVOUR_SVM, false};
    struct kvm_flavour vmx = {KVM_FLAVOUR_VMX, true};

    (void)state;
    assert_string_equal(kvm_flavour_name(&pvm), "KVM-PVM, shadow MMU");
    assert_non_null(strstr(kvm_flavour_name(&svm), "SVM, nested paging"));
    assert_string_equal(kvm_flavour_name(&svm_shadow), "SVM, shadow MMU");
    assert_non_null(strstr(kvm_flavour_name(&vmx), "VMX, nested paging"));
}

/* An unopened kvm_sys has no flavour; an open one has the host's. */
static void test_host(void **state)
{
    struct kvm_sys sys = {.fd = -1};
    struct kvm_flavour f;

    (void)state;
    assert_int_equal(kvm_sys_flavour(&sys, &f), -EBADF);
    if (!test_have_kvm())
        skip();
    assert_int_equal(kvm_sys_open(&sys, NULL), 0);
    assert_int_equal(kvm_sys_flavour(&sys, &f), 0);
    kvm_sys_close(&sys);
    test_note("this host: %s", kvm_flavour_name(&f));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fake_trees),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_host),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
