/*
 * test_wire.c - dm_msg_check() on a table of well-formed and malformed
 * messages of every type, and dm_msg_recv() on oversized datagrams and
 * stray descriptors, over a real socket pair.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ioreq/wire.h"
#include "testlib.h"

static union {
    struct dm_hdr h;
    struct dm_hello hello;
    struct dm_map map;
    struct dm_ioreq ioreq;
    struct dm_ioresp ioresp;
    struct dm_track_write tw;
    struct dm_dirty dirty;
    struct dm_state state;
    struct dm_refused refused;
    struct dm_quiesce quiesce;
    struct dm_restored restored;
    uint8_t raw[DM_MSG_MAX + 64];
} m;

static size_t hello(uint32_t nr, uint64_t base, uint64_t len, uint32_t kind)
{
    size_t sz = sizeof(struct dm_hello) + nr * sizeof(struct dm_range);
    memset(&m, 0, sizeof(m));
    dm_hdr_init(&m.h, DM_HELLO, (uint32_t)sz);
    m.hello.major = DM_PROTO_MAJOR;
    m.hello.nr_ranges = nr;
    strcpy(m.hello.name, "dev");
    for (uint32_t i = 0; i < nr; i++)
        m.hello.ranges[i] = (struct dm_range){kind, 0, base + i * len, len};
    return sz;
}

static void test_hello(void **state)
{
    size_t sz;
    (void)state;

    sz = hello(1, 0x5000, 0x40, DM_RANGE_PIO);
    assert_int_equal(dm_msg_check(&m, sz, DM_FROM_DM), 0);
    /* direction: memvisor never sends HELLO */
    assert_int_equal(dm_msg_check(&m, sz, DM_FROM_HV), -EPROTO);
    /* length must match the count exactly */
    assert_int_equal(dm_msg_check(&m, sz - 1, DM_FROM_DM), -EBADMSG);
    m.h.len = (uint32_t)(sz + 8);
    assert_int_equal(dm_msg_check(&m, sz + 8, DM_FROM_DM), -EBADMSG);
    sz = hello(DM_MAX_RANGES, 0, 0x10, DM_RANGE_PIO);
    assert_int_equal(dm_msg_check(&m, sz, DM_FROM_DM), 0);
    /* too many ranges (the length claims them) */
    sz = hello(DM_MAX_RANGES, 0, 0x10, DM_RANGE_PIO);
    m.hello.nr_ranges = DM_MAX_RANGES + 1;
    assert_int_equal(dm_msg_check(&m, sz + sizeof(struct dm_range), DM_FROM_DM),
                     -EBADMSG);
    /* port range past 0xffff; wrapping MMIO; unaligned MMIO; kind 7 */
    sz = hello(1, 0xfff0, 0x20, DM_RANGE_PIO);
    assert_int_equal(dm_msg_check(&m, sz, DM_FROM_DM), -EBADMSG);
    sz = hello(1, ~0ULL & ~0xfffULL, 0x2000, DM_RANGE_MMIO);
    assert_int_equal(dm_msg_check(&m, sz, DM_FROM_DM), -EBADMSG);
    sz = hello(1, 0x100000010ULL, 0x1000, DM_RANGE_MMIO);
    assert_int_equal(dm_msg_check(&m, sz, DM_FROM_DM), -EBADMSG);
    sz = hello(1, 0x1000, 0x10, 7);
    assert_int_equal(dm_msg_check(&m, sz, DM_FROM_DM), -EBADMSG);
    /* name: empty, unterminated, non-printable, bytes after the NUL */
    sz = hello(0, 0, 0, 0);
    m.hello.name[0] = 0;
    assert_int_equal(dm_msg_check(&m, sz, DM_FROM_DM), -EBADMSG);
    sz = hello(0, 0, 0, 0);
    memset(m.hello.name, 'a', DM_NAME_MAX);
    assert_int_equal(dm_msg_check(&m, sz, DM_FROM_DM), -EBADMSG);
    sz = hello(0, 0, 0, 0);
    m.hello.name[1] = '\n';
    assert_int_equal(dm_msg_check(&m, sz, DM_FROM_DM), -EBADMSG);
    sz = hello(0, 0, 0, 0);
    m.hello.name[20] = 'x';
    assert_int_equal(dm_msg_check(&m, sz, DM_FROM_DM), -EBADMSG);
    /* header: magic, reserved, unknown type */
    sz = hello(0, 0, 0, 0);
    m.h.magic ^= 1;
    assert_int_equal(dm_msg_check(&m, sz, DM_FROM_DM), -EBADMSG);
    sz = hello(0, 0, 0, 0);
    m.h.reserved2 = 1;
    assert_int_equal(dm_msg_check(&m, sz, DM_FROM_DM), -EBADMSG);
    sz = hello(0, 0, 0, 0);
    m.h.type = DM_NR_TYPES;
    assert_int_equal(dm_msg_check(&m, sz, DM_FROM_DM), -EBADMSG);
    assert_int_equal(dm_msg_check(&m, 3, DM_FROM_DM), -EBADMSG);
}

static void test_others(void **state)
{
    (void)state;
    /* IOREQ: sizes 1, 2, 4, 8 only; dir and kind bounded */
    memset(&m, 0, sizeof(m));
    dm_hdr_init(&m.h, DM_IOREQ, sizeof(m.ioreq));
    m.ioreq.size = 4;
    assert_int_equal(dm_msg_check(&m, sizeof(m.ioreq), DM_FROM_HV), 0);
    assert_int_equal(dm_msg_check(&m, sizeof(m.ioreq), DM_FROM_DM), -EPROTO);
    m.ioreq.size = 3;
    assert_int_equal(dm_msg_check(&m, sizeof(m.ioreq), DM_FROM_HV), -EBADMSG);
    m.ioreq.size = 8;
    m.ioreq.dir = 2;
    assert_int_equal(dm_msg_check(&m, sizeof(m.ioreq), DM_FROM_HV), -EBADMSG);
    /* IORESP: status 0 or -errno */
    memset(&m, 0, sizeof(m));
    dm_hdr_init(&m.h, DM_IORESP, sizeof(m.ioresp));
    assert_int_equal(dm_msg_check(&m, sizeof(m.ioresp), DM_FROM_DM), 0);
    m.ioresp.status = 5;
    assert_int_equal(dm_msg_check(&m, sizeof(m.ioresp), DM_FROM_DM), -EBADMSG);
    m.ioresp.status = -100000;
    assert_int_equal(dm_msg_check(&m, sizeof(m.ioresp), DM_FROM_DM), -EBADMSG);
    /* TRACK_WRITE: 1..16 bytes within the page */
    memset(&m, 0, sizeof(m));
    dm_hdr_init(&m.h, DM_TRACK_WRITE, sizeof(m.tw));
    m.tw.gpa = 0x1ff8;
    m.tw.len = 8;
    assert_int_equal(dm_msg_check(&m, sizeof(m.tw), DM_FROM_HV), 0);
    m.tw.len = 9;
    assert_int_equal(dm_msg_check(&m, sizeof(m.tw), DM_FROM_HV), -EBADMSG);
    m.tw.len = 0;
    assert_int_equal(dm_msg_check(&m, sizeof(m.tw), DM_FROM_HV), -EBADMSG);
    /* DIRTY: runs bounded, non-empty, non-wrapping */
    memset(&m, 0, sizeof(m));
    size_t sz = sizeof(struct dm_dirty) + 2 * sizeof(struct dm_dirty_run);
    dm_hdr_init(&m.h, DM_DIRTY, (uint32_t)sz);
    m.dirty.nr_runs = 2;
    m.dirty.runs[0] = (struct dm_dirty_run){1, 1};
    m.dirty.runs[1] = (struct dm_dirty_run){5, 3};
    assert_int_equal(dm_msg_check(&m, sz, DM_FROM_DM), 0);
    m.dirty.runs[1] = (struct dm_dirty_run){~0ULL, 2};
    assert_int_equal(dm_msg_check(&m, sz, DM_FROM_DM), -EBADMSG);
    m.dirty.runs[1] = (struct dm_dirty_run){5, 0};
    assert_int_equal(dm_msg_check(&m, sz, DM_FROM_DM), -EBADMSG);
    /* STATE: len bounded and exact */
    memset(&m, 0, sizeof(m));
    sz = sizeof(struct dm_state) + DM_STATE_MAX;
    dm_hdr_init(&m.h, DM_STATE, (uint32_t)sz);
    m.state.len = DM_STATE_MAX;
    assert_int_equal(dm_msg_check(&m, sz, DM_FROM_DM), 0);
    m.state.len = DM_STATE_MAX + 1;
    m.h.len = (uint32_t)(sz + 1);
    assert_int_equal(dm_msg_check(&m, sz + 1, DM_FROM_DM), -EBADMSG);
    /* SAVE carries no bytes */
    memset(&m, 0, sizeof(m));
    dm_hdr_init(&m.h, DM_SAVE, sizeof(struct dm_state) + 1);
    m.state.len = 1;
    assert_int_equal(dm_msg_check(&m, sizeof(struct dm_state) + 1, DM_FROM_HV),
                     -EBADMSG);
    /* QUIESCE from memvisor only, on 0 or 1; QUIESCED a status */
    memset(&m, 0, sizeof(m));
    dm_hdr_init(&m.h, DM_QUIESCE, sizeof(m.quiesce));
    m.quiesce.on = 1;
    assert_int_equal(dm_msg_check(&m, sizeof(m.quiesce), DM_FROM_HV), 0);
    assert_int_equal(dm_msg_check(&m, sizeof(m.quiesce), DM_FROM_DM),
                     -EPROTO);
    m.quiesce.on = 2;
    assert_int_equal(dm_msg_check(&m, sizeof(m.quiesce), DM_FROM_HV),
                     -EBADMSG);
    m.quiesce.on = 0;
    m.quiesce.reserved = 1;
    assert_int_equal(dm_msg_check(&m, sizeof(m.quiesce), DM_FROM_HV),
                     -EBADMSG);
    memset(&m, 0, sizeof(m));
    dm_hdr_init(&m.h, DM_QUIESCED, sizeof(m.restored));
    m.restored.status = -EBUSY;
    assert_int_equal(dm_msg_check(&m, sizeof(m.restored), DM_FROM_DM), 0);
    assert_int_equal(dm_msg_check(&m, sizeof(m.restored), DM_FROM_HV),
                     -EPROTO);
    m.restored.status = 1;
    assert_int_equal(dm_msg_check(&m, sizeof(m.restored), DM_FROM_DM),
                     -EBADMSG);
    /* BYE both ways, header only */
    memset(&m, 0, sizeof(m));
    dm_hdr_init(&m.h, DM_BYE, sizeof(m.h));
    assert_int_equal(dm_msg_check(&m, sizeof(m.h), DM_FROM_DM), 0);
    assert_int_equal(dm_msg_check(&m, sizeof(m.h), DM_FROM_HV), 0);
}

static void test_recv(void **state)
{
    int sv[2], fd;
    long n;
    static uint8_t big[DM_MSG_MAX + 100], buf[DM_MSG_MAX];
    (void)state;

    assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
    /* oversize: reported, discarded whole; the next one reads fine */
    assert_int_equal(write(sv[1], big, sizeof(big)), (long)sizeof(big));
    hello(0, 0, 0, 0);
    assert_int_equal(dm_msg_send(sv[1], &m, m.h.len, -1, 100), 0);
    assert_int_equal(dm_msg_recv(sv[0], buf, NULL, 100), -EMSGSIZE);
    n = dm_msg_recv(sv[0], buf, NULL, 100);
    assert_int_equal(n, (long)m.h.len);
    assert_int_equal(dm_msg_check(buf, (size_t)n, DM_FROM_DM), 0);
    /* a descriptor nobody asked for is closed, not leaked */
    fd = open("/dev/null", O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(dm_msg_send(sv[1], &m, m.h.len, fd, 100), 0);
    close(fd);
    n = dm_msg_recv(sv[0], buf, NULL, 100);
    assert_int_equal(n, (long)m.h.len);
    /* the lowest free descriptor is fd again: the received copy was closed */
    int again = open("/dev/null", O_RDONLY);
    assert_int_equal(again, fd);
    close(again);
    /* asked for: handed over */
    assert_int_equal(dm_msg_send(sv[1], &m, m.h.len, sv[1], 100), 0);
    n = dm_msg_recv(sv[0], buf, &fd, 100);
    assert_true(n > 0 && fd >= 0);
    close(fd);
    /* nothing there: timeout; peer closed: reset */
    assert_int_equal(dm_msg_recv(sv[0], buf, NULL, 10), -ETIMEDOUT);
    close(sv[1]);
    assert_int_equal(dm_msg_recv(sv[0], buf, NULL, 100), -ECONNRESET);
    close(sv[0]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hello),
        cmocka_unit_test(test_others),
        cmocka_unit_test(test_recv),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
