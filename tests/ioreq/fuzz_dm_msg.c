/*
 * fuzz_dm_msg.c - libFuzzer target: memvisor's reader of device-model
 * messages.  The input is a sequence of datagrams ([u16 length][bytes]);
 * the first is offered as the HELLO, the rest arrive on the attached
 * server's socket while memvisor forwards one I/O request and runs one
 * invalidation.  Whatever the bytes, memvisor must neither crash nor leak
 * (ASan), the frame references must balance, and a server that was cut
 * off must say why.
 */
#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ioreq/ioreq.h"

#define NR 16

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ioreq_config cfg = {.timeout_ms = 5, .rate_per_sec = 1000000};
    struct frames f;
    struct p2m p;
    struct ioreq_domain io;
    int sv[2], r;
    size_t off = 0;
    unsigned sent = 0;
    mfn_t m;

    if (frames_init(&f, 4 * NR) || frames_domain_add(&f, 1, NR))
        abort();
    if (p2m_init(&p, &f, 1, P2M_HVM, NR))
        abort();
    for (uint64_t g = 0; g < NR / 2; g++)
        if (frames_alloc(&f, 1, 0, &m) || p2m_populate(&p, _gfn(g), m, P2M_RAM))
            abort();
    if (ioreq_domain_init(&io, &f, &p, NULL, NULL, 1, &cfg))
        abort();
    if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv))
        abort();
    while (off + 2 <= size && sent < 64) {
        size_t len = (size_t)data[off] | (size_t)data[off + 1] << 8;
        off += 2;
        if (len > size - off)
            len = size - off;
        if (send(sv[1], data + off, len, MSG_DONTWAIT) < 0)
            break;
        off += len;
        sent++;
    }
    r = ioreq_attach(&io, sv[0]);
    if (r >= 0) {
        uint64_t d = 0;
        (void)!ioreq_access(&io, 0, DM_RANGE_PIO, 0x5000, 4, false, &d);
        if (p2m_remove(&p, _gfn(1), NULL) == 0)
            (void)ioreq_end_hypercall(&io);
        shutdown(sv[1], SHUT_WR);
        enum ioreq_state st;
        char reason[IOREQ_REASON_MAX];
        ioreq_cut(&io, (unsigned)r, "fuzz input done");
        if (ioreq_server_info(&io, (unsigned)r, &st, NULL, reason,
                              sizeof(reason)) ||
            st != IOREQ_CUT || !reason[0])
            abort();
    }
    close(sv[1]);
    ioreq_domain_fini(&io);
    /* the p2m's references and the held list balance */
    if (p.nr_held)
        abort();
    p2m_fini(&p);
    if (frames_check(&f))
        abort();
    frames_fini(&f);
    return 0;
}
