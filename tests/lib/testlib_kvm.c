/*
 * testlib_kvm.c - whether KVM is usable for tests, and which flavour it is
 * (testlib.h).  Its own object, so that programs without KVM tests do not
 * link the kvm module.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvm/kvm.h"
#include "testlib.h"

static struct {
    bool probed, usable, flavour_known, noted;
    char reason[160];
    struct kvm_flavour flavour;
} kvm_state;

static void kvm_probe(void)
{
    const char *off = getenv("MEMVISOR_TEST_NO_KVM");
    struct kvm_sys sys;
    int rc;

    if (kvm_state.probed)
        return;
    kvm_state.probed = true;
    if (off && *off && strcmp(off, "0")) {
        snprintf(kvm_state.reason, sizeof(kvm_state.reason),
                 "KVM tests did not run: MEMVISOR_TEST_NO_KVM=%s", off);
        return;
    }
    /* usable: it opens, answers KVM's API version and has user memory */
    rc = kvm_sys_open(&sys, NULL);
    if (rc) {
        snprintf(kvm_state.reason, sizeof(kvm_state.reason),
                 "KVM tests did not run: /dev/kvm is not usable (%s)",
                 strerror(-rc));
        return;
    }
    kvm_sys_close(&sys);
    kvm_state.usable = true;
    kvm_state.flavour_known = kvm_flavour_read(NULL, &kvm_state.flavour) == 0;
}

static void kvm_note_flavour(void)
{
    if (kvm_state.noted)
        return;
    kvm_state.noted = true;
    test_note("kvm: %s", test_kvm_flavour_name());
}

static void kvm_shout(void)
{
    fprintf(stderr, "\n*** SKIPPING KVM TESTS: %s ***\n\n", kvm_state.reason);
}

void test_require_kvm(void)
{
    kvm_probe();
    if (!kvm_state.usable) {
        kvm_shout();
        printf("1..0 # SKIP %s\n", kvm_state.reason);
        fflush(stdout);
        exit(0);
    }
    kvm_note_flavour();
}

int test_have_kvm(void)
{
    kvm_probe();
    if (!kvm_state.usable) {
        test_note("SKIP: %s", kvm_state.reason);
        kvm_shout();
        return 0;
    }
    kvm_note_flavour();
    return 1;
}

const struct kvm_flavour *test_kvm_flavour(void)
{
    kvm_probe();
    return kvm_state.usable && kvm_state.flavour_known ? &kvm_state.flavour
                                                       : NULL;
}

const char *test_kvm_flavour_name(void)
{
    const struct kvm_flavour *f = test_kvm_flavour();

    return f ? kvm_flavour_name(f) : "unknown flavour (sysfs names no KVM module)";
}
