/*
 * test_xsd.c - the xenstore protocol (xenstore/xsd.h) request by request:
 * the replies Linux's xenbus relies on, relative paths, watches firing on
 * set and on change (reported relative when registered relative), every
 * refusal with its error string, a header longer than the protocol allows
 * breaking the stream for good, and xsd_check() after every step.
 */
#include <stdio.h>
#include <string.h>

#include "testlib.h"
#include "xenstore/xsd.h"

enum { T_DIR = 1, T_READ = 2, T_WATCH = 4, T_UNWATCH = 5, T_TXS = 6,
       T_PATH = 10, T_WRITE = 11, T_RM = 13, T_EVENT = 15, T_ERROR = 16 };

static struct xsd x;

static void send(uint32_t type, uint32_t id, const char *p, size_t n)
{
    uint32_t h[4] = {type, id, 0, (uint32_t)n};

    assert_int_equal(xsd_feed(&x, (const char *)h, sizeof(h)), sizeof(h));
    assert_int_equal(xsd_feed(&x, p, n), n);
    assert_int_equal(xsd_check(&x), 0);
}

/* The next message out: its type and payload (NUL-terminated copy). */
static uint32_t take(char *payload, size_t len)
{
    uint32_t h[4];

    assert_true(x.out_len >= sizeof(h));
    memcpy(h, x.out, sizeof(h));
    assert_true(x.out_len >= sizeof(h) + h[3] && h[3] < len);
    memcpy(payload, x.out + sizeof(h), h[3]);
    payload[h[3]] = 0;
    xsd_out_take(&x, (uint32_t)sizeof(h) + h[3]);
    return h[0];
}

static void test_requests(void **state)
{
    char p[4200];
    (void)state;

    xsd_init(&x, 5, 262144);
    send(T_READ, 1, "memory/target", 14);
    assert_int_equal(take(p, sizeof(p)), T_READ);
    assert_string_equal(p, "262144");
    send(T_READ, 2, "/local/domain/5/memory/target", 30);
    assert_int_equal(take(p, sizeof(p)), T_READ);
    send(T_READ, 3, "control/shutdown", 17);
    assert_int_equal(take(p, sizeof(p)), T_ERROR);
    assert_string_equal(p, "ENOENT");
    send(T_WRITE, 4, "device/vif/0/state\0" "4", 20);
    assert_int_equal(take(p, sizeof(p)), T_WRITE);
    send(T_DIR, 5, "device", 7);
    assert_int_equal(take(p, sizeof(p)), T_DIR);
    assert_string_equal(p, "vif");
    send(T_PATH, 6, "5", 2);
    assert_int_equal(take(p, sizeof(p)), T_PATH);
    assert_string_equal(p, "/local/domain/5");
    send(T_TXS, 7, "", 1);
    assert_int_equal(take(p, sizeof(p)), T_TXS);
    send(T_RM, 8, "device", 7);
    assert_int_equal(take(p, sizeof(p)), T_RM);
    send(T_READ, 9, "device/vif/0/state", 19);
    assert_int_equal(take(p, sizeof(p)), T_ERROR);
    send(99, 10, "x", 2);
    assert_int_equal(take(p, sizeof(p)), T_ERROR);
    assert_string_equal(p, "ENOSYS");
    send(T_READ, 11, "no-nul", 6); /* a path without its NUL */
    assert_int_equal(take(p, sizeof(p)), T_ERROR);
    assert_string_equal(p, "EINVAL");
    assert_int_equal(x.out_len, 0);
}

static void test_watches(void **state)
{
    char p[4200];
    (void)state;

    xsd_init(&x, 5, 262144);
    send(T_WATCH, 1, "memory/target\0tok", 18);
    assert_int_equal(take(p, sizeof(p)), T_WATCH);
    assert_int_equal(take(p, sizeof(p)), T_EVENT); /* fires when set */
    assert_string_equal(p, "memory/target");
    assert_string_equal(p + strlen(p) + 1, "tok");
    assert_int_equal(xsd_write(&x, "memory/target", "131072"), 0);
    assert_int_equal(take(p, sizeof(p)), T_EVENT);
    assert_string_equal(p, "memory/target"); /* relative, as registered */
    send(T_WATCH, 2, "memory/target\0tok", 18);
    assert_int_equal(take(p, sizeof(p)), T_ERROR);
    assert_string_equal(p, "EEXIST");
    send(T_UNWATCH, 3, "memory/target\0tok", 18);
    assert_int_equal(take(p, sizeof(p)), T_UNWATCH);
    assert_int_equal(xsd_write(&x, "memory/target", "262144"), 0);
    assert_int_equal(x.out_len, 0);
}

static void test_broken(void **state)
{
    uint32_t h[4] = {T_READ, 1, 0, XSD_PAYLOAD_MAX + 1};
    char p[8];
    (void)state;

    xsd_init(&x, 5, 4096);
    assert_true(xsd_feed(&x, (const char *)h, sizeof(h)) <= sizeof(h));
    assert_true(x.broken);
    assert_int_equal(xsd_feed(&x, "more", 4), 0); /* X3 */
    assert_int_equal(xsd_check(&x), 0);
    (void)p;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_requests),
        cmocka_unit_test(test_watches),
        cmocka_unit_test(test_broken),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
