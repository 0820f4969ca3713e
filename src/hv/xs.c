/*
 * xs.c - a PV guest's xenstore ring (xenstore_domain_interface) on the
 * page the builder gave (start_info.store_mfn, held writable like the
 * console ring), served by the store of src/xenstore (xsd.h: the protocol
 * and the tree, no I/O): request bytes between req_cons and req_prod go to
 * xsd_feed(), replies and watch events from its out queue into the
 * response ring.  Enough for Linux's xenbus, its balloon driver's
 * memory/target and the control node.
 *
 * Requests: READ, WRITE, MKDIR, RM, DIRECTORY, GET_PERMS, SET_PERMS, WATCH,
 * UNWATCH, RESET_WATCHES, TRANSACTION_START/END (one transaction that always
 * commits: memvisor is the only other writer and does not use them),
 * GET_DOMAIN_PATH; anything else gets an XS_ERROR "ENOSYS".  Relative paths
 * are under /local/domain/<id>.  A watch fires once when set and on every
 * change at or below its path, reported with the path as the guest wrote
 * it (relative stays relative).  Every length the guest gives is checked:
 * a header's len above XENSTORE_PAYLOAD_MAX, or a ring index more than a
 * ring ahead, stops the ring (xs_broken); a request that does not fit the
 * tree gets an error reply (E2BIG, ENOSPC, EINVAL).
 *
 * Locking: d->xs.lock.  Replies that do not fit the response ring wait in
 * an outgoing buffer, sent as the guest consumes (at its next kick).
 */
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "hv/hv_internal.h"
#include "xen/xen.h"
#include "xenstore/xsd.h"

#define XS_RING 1024

struct xs_iface {
    char req[XS_RING];
    char rsp[XS_RING];
    uint32_t req_cons, req_prod;
    uint32_t rsp_cons, rsp_prod;
    uint32_t server_features, connection, error;
};

static struct xs_iface *ring(struct domain *d)
{
    return frames_ptr(&d->hv->frames, d->store_mfn);
}

static uint64_t maddr(struct domain *d, size_t off)
{
    return (mfn_x(d->store_mfn) << PAGE_SHIFT) + off;
}

int hv_xs_write(struct domain *d, const char *path, const char *val)
{
    int r;

    pthread_mutex_lock(&d->xs.lock);
    r = xsd_write(&d->xs.xsd, path, val);
    pthread_mutex_unlock(&d->xs.lock);
    if (r == 0)
        hv_xs_kick(d); /* send the watch events */
    return r;
}

int hv_xs_read(struct domain *d, const char *path, char *out, size_t len)
{
    int r;

    pthread_mutex_lock(&d->xs.lock);
    r = xsd_read(&d->xs.xsd, path, out, len);
    pthread_mutex_unlock(&d->xs.lock);
    return r;
}

/* Move queued replies into the response ring, as far as there is room. */
static bool flush_out(struct domain *d, struct xs_iface *r)
{
    struct xsd *x = &d->xs.xsd;
    uint32_t cons = __atomic_load_n(&r->rsp_cons, __ATOMIC_ACQUIRE);
    uint32_t prod = __atomic_load_n(&r->rsp_prod, __ATOMIC_ACQUIRE);
    uint32_t done = 0;

    if (prod - cons > XS_RING)
        return false; /* broken ring */
    while (done < x->out_len && prod - cons < XS_RING) {
        if (gm_write_phys(d, maddr(d, offsetof(struct xs_iface, rsp) +
                                          prod % XS_RING),
                          &x->out[done], 1) < 0)
            break;
        prod++;
        done++;
    }
    if (!done)
        return false;
    __atomic_store_n(&r->rsp_prod, prod, __ATOMIC_RELEASE);
    gm_logged(d, d->store_mfn);
    xsd_out_take(x, done);
    return true;
}

void hv_xs_kick(struct domain *d)
{
    struct hv_xs *x = &d->xs;
    struct xs_iface *r;

    if (mfn_eq(d->store_mfn, INVALID_MFN))
        return;
    r = ring(d);
    pthread_mutex_lock(&x->lock);
    if (!x->xsd.broken) {
        uint32_t cons = __atomic_load_n(&r->req_cons, __ATOMIC_ACQUIRE);
        uint32_t prod = __atomic_load_n(&r->req_prod, __ATOMIC_ACQUIRE);
        char buf[XS_RING];
        uint32_t n = 0;

        if (prod - cons > XS_RING) {
            x->xsd.broken = true;
        } else {
            while (cons + n != prod) {
                buf[n] = r->req[(cons + n) % XS_RING];
                n++;
            }
            cons += (uint32_t)xsd_feed(&x->xsd, buf, n);
            __atomic_store_n(&r->req_cons, cons, __ATOMIC_RELEASE);
            gm_logged(d, d->store_mfn);
        }
        if (x->xsd.broken)
            atomic_fetch_add_explicit(&d->xs_broken, 1, memory_order_relaxed);
    }
    (void)flush_out(d, r);
    pthread_mutex_unlock(&x->lock);
    evtchn_set_pending(d, d->store_port);
}

int hv_xs_init(struct domain *d)
{
    pthread_mutex_init(&d->xs.lock, NULL);
    d->xs.created = true;
    xsd_init(&d->xs.xsd, d->id, d->nr_pages * 4);
    return 0;
}

void hv_xs_fini(struct domain *d)
{
    if (d->xs.created)
        pthread_mutex_destroy(&d->xs.lock);
    d->xs.created = false;
}

int hv_domain_reservation(struct domain *d, uint64_t *frames)
{
    *frames = frames_domain_tot(&d->hv->frames, d->id);
    return 0;
}
