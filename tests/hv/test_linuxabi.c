/*
 * test_linuxabi.c - the hypercalls memvisor answers for Linux, at the ABI
 * boundary: each refusal with Xen's error, on a booted, never-run domain of
 * the tiny kernel (miniguest.S), the audit clean after every step.
 *  - update_descriptor into a validated page table (the domain's L4) is
 *    refused; with the rule switched off (hv_domain_test_no_desc_rule())
 *    the store lands in the L4 and the audit catches the entry nobody
 *    validated: the test of the rule fails without it;
 *  - VCPUOP_register_vcpu_info on a page table, twice, off the page;
 *  - set_gdt beyond Xen's first reserved entry, on a frame not the caller's;
 *  - event channels: a virq out of range, a vCPU out of range, a virq bound
 *    twice, ports 0 and 1024, the console's port closed, another domain's
 *    status, the timer virq moved to another vCPU, every port used up;
 *  - a single-shot timer in the past with VCPU_SSHOTTMR_future;
 *  - physdev set_iopl above 3; GS_USER_SEL above 0xffff.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "elfgen.h"
#include "hv/hv.h"
#include "miniguest.h"
#include "testlib.h"
#include "xen/xen.h"

static struct domain *mini(struct hv *hv, struct hv_domain_layout *lay)
{
    static uint8_t img[ELFGEN_MAX];
    size_t n = miniguest_image(img);
    struct domain *d;

    assert_int_equal(hv_init(hv, 8192), 0);
    d = hvtest_create(hv, img, n, "", 2, 8);
    hv_domain_test_layout(d, lay);
    return d;
}

static long hc(struct domain *d, unsigned nr, uint64_t a0, uint64_t a1,
               uint64_t a2, uint64_t scratch)
{
    const uint64_t a[6] = {a0, a1, a2, 0, 0, 0};
    return hv_domain_test_hypercall(d, 0, nr, a, MINIGUEST_VA, scratch);
}

static void audit_clean(struct domain *d, const char *after)
{
    char msg[200];

    if (hv_domain_audit(d, msg, sizeof(msg), NULL, NULL) < 0)
        fail_msg("audit after %s: %s", after, msg);
}

static void test_update_descriptor(void **state)
{
    struct hv hv;
    struct hv_domain_layout lay;
    struct domain *d = mini(&hv, &lay);
    uint64_t l4 = lay.l4_mfn << 12, s = lay.start_info_va + 3072;
    uint64_t maddr, l1e_maddr, l1e;
    char msg[200];
    (void)state;

    /* into the L4 (a pinned page table): refused, nothing written */
    assert_int_equal(hc(d, __HYPERVISOR_update_descriptor, l4 + 8 * 5,
                        0x00cf9a000000ffffULL, 0, s),
                     -XEN_EINVAL);
    assert_int_equal(hc(d, __HYPERVISOR_update_descriptor, l4 + 3, 0, 0, s),
                     -XEN_EINVAL); /* misaligned */
    assert_int_equal(hc(d, __HYPERVISOR_update_descriptor, 0, 0, 0, s),
                     -XEN_EINVAL); /* mfn 0: never the domain's */
    audit_clean(d, "refused update_descriptor");
    /* into a plain frame of the domain: accepted */
    assert_int_equal(hv_domain_test_translate(d, s, &maddr, &l1e_maddr, &l1e),
                     0);
    assert_int_equal(hc(d, __HYPERVISOR_update_descriptor, maddr & ~7ULL,
                        0x00cf9a000000ffffULL, 0, s),
                     0);
    audit_clean(d, "update_descriptor of a plain frame");
    /* the rule off: the store lands in the L4, the audit finds it */
    hv_domain_test_no_desc_rule(d);
    assert_int_equal(hc(d, __HYPERVISOR_update_descriptor, l4 + 8 * 5,
                        maddr | 0x67, 0, s),
                     0);
    assert_int_not_equal(hv_domain_audit(d, msg, sizeof(msg), NULL, NULL), 0);
    test_note("without the rule the audit reports: %s", msg);
    assert_int_equal(hc(d, __HYPERVISOR_update_descriptor, l4 + 8 * 5, 0, 0,
                        s),
                     0); /* put back what the hole wrote */
    audit_clean(d, "restoring the L4 entry");
    hv_domain_destroy(d);
    hv_fini(&hv);
}

static void test_vcpu_info_and_gdt(void **state)
{
    struct hv hv;
    struct hv_domain_layout lay;
    struct domain *d = mini(&hv, &lay);
    uint64_t s = lay.start_info_va + 3072, maddr, l1e_maddr, l1e;
    uint64_t arg[2];
    (void)state;

    /* register_vcpu_info on the L4: refused */
    arg[0] = lay.l4_mfn;
    arg[1] = 0;
    assert_int_equal(hv_domain_test_poke(d, s, arg, sizeof(arg)), 0);
    assert_int_equal(hc(d, __HYPERVISOR_vcpu_op, VCPUOP_register_vcpu_info, 0,
                        s, s + 512),
                     -XEN_EINVAL);
    /* off the end of the page */
    assert_int_equal(hv_domain_test_translate(d, s + 1024, &maddr, &l1e_maddr,
                                              &l1e),
                     0);
    arg[0] = maddr >> 12;
    arg[1] = 4096 - 32;
    assert_int_equal(hv_domain_test_poke(d, s, arg, sizeof(arg)), 0);
    assert_int_equal(hc(d, __HYPERVISOR_vcpu_op, VCPUOP_register_vcpu_info, 0,
                        s, s + 512),
                     -XEN_EINVAL);
    /* a plain frame: once, not twice */
    arg[1] = 1024;
    assert_int_equal(hv_domain_test_poke(d, s, arg, sizeof(arg)), 0);
    assert_int_equal(hc(d, __HYPERVISOR_vcpu_op, VCPUOP_register_vcpu_info, 0,
                        s, s + 512),
                     0);
    assert_int_equal(hc(d, __HYPERVISOR_vcpu_op, VCPUOP_register_vcpu_info, 0,
                        s, s + 512),
                     -XEN_EINVAL);
    audit_clean(d, "register_vcpu_info (held writable)");
    /* set_gdt: too many entries; a frame not the domain's */
    assert_int_equal(hc(d, __HYPERVISOR_set_gdt, s, 14 * 512 + 1, 0, s + 512),
                     -XEN_EINVAL);
    arg[0] = 1; /* mfn 1: the hypervisor's */
    assert_int_equal(hv_domain_test_poke(d, s, arg, 8), 0);
    assert_int_equal(hc(d, __HYPERVISOR_set_gdt, s, 16, 0, s + 512),
                     -XEN_EINVAL);
    arg[0] = maddr >> 12;
    assert_int_equal(hv_domain_test_poke(d, s, arg, 8), 0);
    assert_int_equal(hc(d, __HYPERVISOR_set_gdt, s, 16, 0, s + 512), 0);
    /* set_iopl above 3; GS_USER_SEL above 0xffff */
    arg[0] = 4;
    assert_int_equal(hv_domain_test_poke(d, s, arg, 8), 0);
    assert_int_equal(hc(d, __HYPERVISOR_physdev_op, 6, s, 0, s + 512),
                     -XEN_EINVAL);
    assert_int_equal(hc(d, __HYPERVISOR_set_segment_base, SEGBASE_GS_USER_SEL,
                        0x10000, 0, s + 512),
                     -XEN_EINVAL);
    audit_clean(d, "set_gdt");
    hv_domain_destroy(d);
    hv_fini(&hv);
}

static void test_event_channels(void **state)
{
    struct hv hv;
    struct hv_domain_layout lay;
    struct domain *d = mini(&hv, &lay);
    uint64_t s = lay.start_info_va + 3072;
    uint32_t b[6];
    uint64_t st[2];
    unsigned bound = 0;
    long r;
    (void)state;

#define BIND(virq, vcpu)                                                       \
    (b[0] = (virq), b[1] = (vcpu), b[2] = 0,                                   \
     assert_int_equal(hv_domain_test_poke(d, s, b, 12), 0),                    \
     hc(d, __HYPERVISOR_event_channel_op, EVTCHNOP_bind_virq, s, 0, s + 512))
    assert_int_equal(BIND(NR_VIRQS, 0), -XEN_EINVAL);
    assert_int_equal(BIND(VIRQ_TIMER, 2), -XEN_ENOENT);
    assert_int_equal(BIND(VIRQ_TIMER, 0), 0);
    assert_int_equal(BIND(VIRQ_TIMER, 0), -XEN_EEXIST);
    /* ports 0 and 1024; the console's port (1) cannot be closed */
    for (unsigned op = EVTCHNOP_close; op <= EVTCHNOP_unmask; op++) {
        if (op != EVTCHNOP_close && op != EVTCHNOP_send &&
            op != EVTCHNOP_unmask)
            continue;
        b[0] = 0;
        assert_int_equal(hv_domain_test_poke(d, s, b, 4), 0);
        assert_int_equal(hc(d, __HYPERVISOR_event_channel_op, op, s, 0,
                            s + 512),
                         -XEN_EINVAL);
        b[0] = 1024;
        assert_int_equal(hv_domain_test_poke(d, s, b, 4), 0);
        assert_int_equal(hc(d, __HYPERVISOR_event_channel_op, op, s, 0,
                            s + 512),
                         -XEN_EINVAL);
    }
    b[0] = 1;
    assert_int_equal(hv_domain_test_poke(d, s, b, 4), 0);
    assert_int_equal(hc(d, __HYPERVISOR_event_channel_op, EVTCHNOP_close, s, 0,
                        s + 512),
                     -XEN_EINVAL);
    /* another domain's status */
    memset(b, 0, sizeof(b));
    b[0] = 7; /* dom 7 */
    b[1] = 1;
    assert_int_equal(hv_domain_test_poke(d, s, b, 24), 0);
    assert_int_equal(hc(d, __HYPERVISOR_event_channel_op, EVTCHNOP_status, s, 0,
                        s + 512),
                     -XEN_ESRCH);
    /* the timer virq's port (3: console 1, xenstore 2) stays on its vCPU */
    b[0] = 3;
    b[1] = 1;
    assert_int_equal(hv_domain_test_poke(d, s, b, 8), 0);
    assert_int_equal(hc(d, __HYPERVISOR_event_channel_op, EVTCHNOP_bind_vcpu, s,
                        0, s + 512),
                     -XEN_EINVAL);
    /* every port used up by IPIs: -ENOSPC, the domain intact */
    for (;;) {
        b[0] = 1;
        assert_int_equal(hv_domain_test_poke(d, s, b, 8), 0);
        r = hc(d, __HYPERVISOR_event_channel_op, EVTCHNOP_bind_ipi, s, 0,
               s + 512);
        if (r < 0)
            break;
        bound++;
    }
    assert_int_equal(r, -XEN_ENOSPC);
    test_note("%u IPI ports bound before -ENOSPC", bound);
    assert_int_equal(bound, 1024 - 4);
    /* a single-shot timer in the past, "future only" */
    st[0] = 1;
    st[1] = VCPU_SSHOTTMR_future;
    assert_int_equal(hv_domain_test_poke(d, s, st, sizeof(st)), 0);
    assert_int_equal(hc(d, __HYPERVISOR_vcpu_op, VCPUOP_set_singleshot_timer,
                        0, s, s + 512),
                     -XEN_ETIME);
    audit_clean(d, "event channels");
    hv_domain_destroy(d);
    hv_fini(&hv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_update_descriptor),
        cmocka_unit_test(test_vcpu_info_and_gdt),
        cmocka_unit_test(test_event_channels),
    };

    test_require_kvm();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
