/*
 * libFuzzer target pv_ops: bytes become a sequence of PV operations on the
 * real frame table and pv module (two domains, two vCPUs each, a small
 * pool), with pv_audit(), frames_check() and, at quiescent points, the
 * reference model (pvworld.h) after every operation.  Any failure aborts,
 * which is what the fuzzer (or the corpus replay in `make check`) reports.
 *
 * Encoding, one operation at a time:
 *   byte 0: bit 0 domain, bit 1 vCPU, bits 7..2 the operation (mod 15;
 *           14 tears the domain down with its calls in flight);
 *           if that vCPU has a preempted call, it is re-issued instead
 *   then the operation's argument bytes (see decode()), then one byte
 *   for the preemption hook (0: none, else preempt every n-th check).
 * Frame bytes: bit 7 clear picks among the domain's own frames, set picks
 * any mfn of the pool.  Entry bytes: a frame byte and a flag byte (P RW US
 * A|D PSE PCD NX G from bit 0).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pvworld.h"

#define POOL 24
#define BUDGET 12
#define MAX_OPS 512

struct input {
    const uint8_t *p;
    size_t n, pos;
};

static uint8_t next(struct input *in)
{
    return in->pos < in->n ? in->p[in->pos++] : 0;
}

static mfn_t frame(struct world *w, unsigned d, uint8_t b)
{
    mfn_t own[POOL];
    unsigned n;

    if (b & 0x80)
        return _mfn((b & 0x7f) % (POOL + 1)); /* may be out of range */
    n = world_owned(w, d, own, POOL);
    return n ? own[b % n] : _mfn(b % POOL);
}

static uint64_t entry(struct world *w, unsigned d, struct input *in)
{
    mfn_t t = frame(w, d, next(in));
    uint8_t f = next(in);
    uint64_t e = mfn_x(t) << PAGE_SHIFT;

    e |= (f & 1) ? PTE_P : 0;
    e |= (f & 2) ? PTE_RW : 0;
    e |= (f & 4) ? PTE_US : 0;
    e |= (f & 8) ? PTE_A | PTE_D : 0;
    e |= (f & 16) ? PTE_PSE : 0;
    e |= (f & 32) ? PTE_PCD : 0;
    e |= (f & 64) ? PTE_NX : 0;
    e |= (f & 128) ? PTE_G : 0;
    return e;
}

static unsigned index_of(uint8_t b)
{
    if (b >= 0xf0)
        return PV_HV_L4_FIRST + (b & 0xf);
    if (b >= 0xe0)
        return PT_ENTRIES - 1;
    return b % 4;
}

static void decode(struct world *w, unsigned d, unsigned v, unsigned op,
                   struct input *in)
{
    struct call *c = world_call(w, d, v);
    mfn_t m;

    switch (op) {
    case 0: /* pin L1..L4 */
        m = frame(w, d, next(in));
        call_ext(c, MMUEXT_PIN_L1_TABLE + next(in) % 4, m);
        break;
    case 1:
        call_ext(c, MMUEXT_UNPIN_TABLE, frame(w, d, next(in)));
        break;
    case 2:
        call_ext(c, MMUEXT_NEW_BASEPTR, frame(w, d, next(in)));
        break;
    case 3:
    case 4:
        m = frame(w, d, next(in));
        call_mmu(c, m, index_of(next(in)),
                 op == 3 ? MMU_NORMAL_PT_UPDATE : MMU_PT_UPDATE_PRESERVE_AD,
                 entry(w, d, in));
        break;
    case 5:
        m = frame(w, d, next(in));
        call_mmu(c, m, 0, MMU_MACHPHYS_UPDATE, next(in));
        break;
    case 6:
        call_mem(c, XENMEM_populate_physmap, next(in) & 1, next(in));
        break;
    case 7:
        call_mem(c, XENMEM_increase_reservation, 0, 0);
        break;
    case 8:
        call_mem(c, XENMEM_decrease_reservation, 0,
                 mfn_x(frame(w, d, next(in))));
        break;
    case 9:
        c->kind = CALL_PFINFO;
        c->count = 1 + next(in) % W_MAX_BATCH;
        for (unsigned i = 0; i < c->count; i++)
            c->in[i] = mfn_x(frame(w, d, next(in)));
        break;
    case 11:
        call_ext(c, MMUEXT_NEW_USER_BASEPTR, frame(w, d, next(in)));
        break;
    case 12:
        call_ext(c, MMUEXT_CLEAR_PAGE, frame(w, d, next(in)));
        break;
    case 13:
        call_ext(c, MMUEXT_COPY_PAGE, frame(w, d, next(in)));
        c->ext[0].arg2.src_mfn = mfn_x(frame(w, d, next(in)));
        break;
    default:
        c->kind = CALL_UVA;
        c->va = (uint64_t)next(in) << 12 | (uint64_t)(next(in) & 3) << 21;
        c->val = entry(w, d, in);
        c->flags = UVMF_INVLPG;
        break;
    }
}

static void die(struct world *w, const char *when)
{
    fprintf(stderr, "pv_ops: %s: %s\n", when, w->first_failure);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct world w;
    struct input in = {data, size, 0};
    unsigned d, v, ops = 0;

    if (world_init(&w, POOL, 2, 2, BUDGET) != 0)
        abort();
    /* Each domain starts with six frames. */
    for (d = 0; d < 2; d++) {
        struct call *c = world_call(&w, d, 0);

        for (unsigned i = 0; i < W_MAX_BATCH; i++)
            call_mem(c, XENMEM_populate_physmap, 0, i);
        (void)world_run(&w, d, 0);
        c = world_call(&w, d, 0);
        call_mem(c, XENMEM_populate_physmap, 0, 4);
        call_mem(c, XENMEM_populate_physmap, 0, 5);
        (void)world_run(&w, d, 0);
    }
    if (world_check(&w))
        die(&w, "setup");
    while (in.pos < in.n && ops++ < MAX_OPS) {
        uint8_t b = next(&in);

        d = b & 1;
        v = (b >> 1) & 1;
        if ((b >> 2) % 15 == 14) {
            /* The domain dies with its calls in flight, and restarts. */
            if (world_teardown(&w, d, next(&in) % 8))
                die(&w, "teardown with calls in flight");
            continue;
        }
        if (!world_pending(&w, d, v))
            decode(&w, d, v, (b >> 2) % 15, &in);
        (void)world_step(&w, d, v, next(&in) % 8);
        if (frames_check(&w.f))
            world_fail(&w, "frames_check failed");
        if (world_check_dom(&w, d) || w.failures)
            die(&w, "after an operation");
    }
    for (d = 0; d < 2; d++)
        for (v = 0; v < 2; v++)
            (void)world_run(&w, d, v);
    if (world_check(&w))
        die(&w, "after completing every call");
    if (world_fini(&w))
        die(&w, "teardown");
    return 0;
}
