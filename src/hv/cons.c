/*
 * cons.c - the PV console ring (Xen's xencons_interface): the guest's hvc0.
 *
 * The ring page is a guest frame the builder gave (start_info.console.
 * domU.mfn), held writable by memvisor for the domain's life so it can
 * never become a page table while memvisor writes into it.  The guest
 * writes out[] and notifies its console port: memvisor copies what lies
 * between out_cons and out_prod to the domain console (stdout for
 * `memvisor run`) and advances out_cons.  Input (hv_domain_console_input())
 * goes into in[] and advances in_prod.  Every index the guest wrote is
 * checked: a producer more than a ring ahead of the consumer is a broken
 * ring, and the bytes are not read (counted in cons_broken).  memvisor's
 * writes go through the dirty-logging accessor.
 *
 * Locking: d->cons_lock serialises memvisor's two sides of the ring.
 */
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "hv/hv_internal.h"
#include "hv/hvm/hvm.h"
#include "xen/xen.h"

struct xencons_interface {
    char in[1024];
    char out[2048];
    uint32_t in_cons, in_prod;
    uint32_t out_cons, out_prod;
};

static struct xencons_interface *ring(struct domain *d)
{
    return frames_ptr(&d->hv->frames, d->cons_mfn);
}

static uint64_t field(struct domain *d, size_t off)
{
    return (mfn_x(d->cons_mfn) << PAGE_SHIFT) + off;
}

void hv_cons_kick(struct domain *d)
{
    struct xencons_interface *r;
    uint32_t cons, prod;
    char buf[sizeof(r->out)];
    uint32_t n = 0;

    if (mfn_eq(d->cons_mfn, INVALID_MFN))
        return;
    r = ring(d);
    pthread_mutex_lock(&d->cons_lock);
    cons = __atomic_load_n(&r->out_cons, __ATOMIC_ACQUIRE);
    prod = __atomic_load_n(&r->out_prod, __ATOMIC_ACQUIRE);
    if (prod - cons > sizeof(r->out)) {
        atomic_fetch_add_explicit(&d->cons_broken, 1, memory_order_relaxed);
        pthread_mutex_unlock(&d->cons_lock);
        return;
    }
    while (cons != prod)
        buf[n++] = r->out[cons++ % sizeof(r->out)];
    if (n) {
        console_write(&d->console, buf, n);
        __atomic_store_n(&r->out_cons, cons, __ATOMIC_RELEASE);
        gm_logged(d, d->cons_mfn);
    }
    pthread_mutex_unlock(&d->cons_lock);
    if (n)
        evtchn_set_pending(d, d->cons_port);
}

size_t hv_domain_console_input(struct domain *d, const char *buf, size_t len)
{
    if (d->hvm)
        return uart_input(&d->hvm->uart, buf, len);
    struct xencons_interface *r;
    uint32_t cons, prod;
    size_t n = 0;

    if (mfn_eq(d->cons_mfn, INVALID_MFN))
        return 0;
    r = ring(d);
    pthread_mutex_lock(&d->cons_lock);
    cons = __atomic_load_n(&r->in_cons, __ATOMIC_ACQUIRE);
    prod = __atomic_load_n(&r->in_prod, __ATOMIC_ACQUIRE);
    if (prod - cons > sizeof(r->in)) {
        atomic_fetch_add_explicit(&d->cons_broken, 1, memory_order_relaxed);
        pthread_mutex_unlock(&d->cons_lock);
        return 0;
    }
    while (n < len && prod - cons < sizeof(r->in)) {
        if (gm_write_phys(d,
                          field(d, offsetof(struct xencons_interface, in) +
                                       prod % sizeof(r->in)),
                          &buf[n], 1) < 0)
            break;
        prod++;
        n++;
    }
    if (n) {
        /* the index after the bytes (release), logged in place */
        __atomic_store_n(&r->in_prod, prod, __ATOMIC_RELEASE);
        gm_logged(d, d->cons_mfn);
    }
    pthread_mutex_unlock(&d->cons_lock);
    if (n)
        evtchn_set_pending(d, d->cons_port);
    return n;
}

int hv_domain_console_state(struct domain *d, uint32_t idx[4])
{
    struct xencons_interface *r;

    if (d->hvm || mfn_eq(d->cons_mfn, INVALID_MFN))
        return -ENOENT;
    r = ring(d);
    idx[0] = __atomic_load_n(&r->in_cons, __ATOMIC_ACQUIRE);
    idx[1] = __atomic_load_n(&r->in_prod, __ATOMIC_ACQUIRE);
    idx[2] = __atomic_load_n(&r->out_cons, __ATOMIC_ACQUIRE);
    idx[3] = __atomic_load_n(&r->out_prod, __ATOMIC_ACQUIRE);
    return 0;
}
