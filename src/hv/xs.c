/*
 * xs.c - a small xenstore for a PV guest: Xen's xenstore ring protocol
 * (xenstore_domain_interface, xsd_sockmsg) over the page the builder gave
 * (start_info.store_mfn, held writable like the console ring), and a tree
 * of at most XS_MAX_NODES nodes with watches: enough for Linux's xenbus,
 * its balloon driver's memory/target and the control/shutdown node.
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hv/hv_internal.h"
#include "xen/xen.h"

#define XS_RING 1024
#define XS_PAYLOAD_MAX 4096

enum {
    XS_CONTROL = 0, XS_DIRECTORY = 1, XS_READ = 2, XS_GET_PERMS = 3,
    XS_WATCH = 4, XS_UNWATCH = 5, XS_TRANSACTION_START = 6,
    XS_TRANSACTION_END = 7, XS_INTRODUCE = 8, XS_RELEASE = 9,
    XS_GET_DOMAIN_PATH = 10, XS_WRITE = 11, XS_MKDIR = 12, XS_RM = 13,
    XS_SET_PERMS = 14, XS_WATCH_EVENT = 15, XS_ERROR = 16,
    XS_RESET_WATCHES = 21,
};

struct xs_iface {
    char req[XS_RING];
    char rsp[XS_RING];
    uint32_t req_cons, req_prod;
    uint32_t rsp_cons, rsp_prod;
    uint32_t server_features, connection, error;
};

struct xs_hdr {
    uint32_t type, req_id, tx_id, len;
};

static struct xs_iface *ring(struct domain *d)
{
    return frames_ptr(&d->hv->frames, d->store_mfn);
}

static uint64_t maddr(struct domain *d, size_t off)
{
    return (mfn_x(d->store_mfn) << PAGE_SHIFT) + off;
}

/* ---- the tree ---- */

static void abs_path(struct domain *d, const char *p, char *out, size_t len)
{
    if (p[0] == '/')
        snprintf(out, len, "%s", p);
    else
        snprintf(out, len, "/local/domain/%u/%s", d->id, p);
    /* no trailing slash (except the root) */
    size_t n = strlen(out);
    while (n > 1 && out[n - 1] == '/')
        out[--n] = 0;
}

static struct xs_node *find(struct hv_xs *x, const char *path)
{
    for (unsigned i = 0; i < XS_MAX_NODES; i++)
        if (x->node[i].used && !strcmp(x->node[i].path, path))
            return &x->node[i];
    return NULL;
}

/* Is `path` at or below `top`? */
static bool below(const char *path, const char *top)
{
    size_t n = strlen(top);

    if (!strcmp(top, "/"))
        return true;
    return !strncmp(path, top, n) && (path[n] == 0 || path[n] == '/');
}

static void queue_out(struct hv_xs *x, const struct xs_hdr *h,
                      const void *payload)
{
    if (x->out_len + sizeof(*h) + h->len > sizeof(x->out)) {
        x->dropped++;
        return;
    }
    memcpy(x->out + x->out_len, h, sizeof(*h));
    memcpy(x->out + x->out_len + sizeof(*h), payload, h->len);
    x->out_len += sizeof(*h) + h->len;
}

static void fire(struct domain *d, const char *abs)
{
    struct hv_xs *x = &d->xs;

    for (unsigned i = 0; i < XS_MAX_WATCHES; i++) {
        struct xs_watch *w = &x->watch[i];
        char ev[XS_PATH_MAX + XS_TOKEN_MAX + 2], rel[XS_PATH_MAX];
        const char *report = abs;
        struct xs_hdr h = {XS_WATCH_EVENT, 0, 0, 0};
        size_t pl, tl;

        if (!w->used || !below(abs, w->abs))
            continue;
        if (w->path[0] != '/') {
            /* reported relative to the domain's path, as registered */
            size_t n = (size_t)snprintf(rel, sizeof(rel), "/local/domain/%u/",
                                        d->id);
            report = strlen(abs) > n ? abs + n : w->path;
        }
        pl = strlen(report) + 1;
        tl = strlen(w->token) + 1;
        memcpy(ev, report, pl);
        memcpy(ev + pl, w->token, tl);
        h.len = (uint32_t)(pl + tl);
        queue_out(x, &h, ev);
    }
}

static int node_set(struct domain *d, const char *abs, const char *val,
                    size_t len, bool only_create)
{
    struct hv_xs *x = &d->xs;
    struct xs_node *n = find(x, abs);

    if (len > XS_VALUE_MAX || strlen(abs) >= XS_PATH_MAX)
        return -E2BIG;
    if (!n) {
        /* the parents exist implicitly: create them too */
        char parent[XS_PATH_MAX];
        char *slash;

        snprintf(parent, sizeof(parent), "%s", abs);
        slash = strrchr(parent, '/');
        if (slash && slash != parent) {
            *slash = 0;
            if (!find(x, parent)) {
                int r = node_set(d, parent, "", 0, true);
                if (r < 0)
                    return r;
            }
        }
        for (unsigned i = 0; i < XS_MAX_NODES && !n; i++)
            if (!x->node[i].used)
                n = &x->node[i];
        if (!n)
            return -ENOSPC;
        memset(n, 0, sizeof(*n));
        n->used = true;
        snprintf(n->path, sizeof(n->path), "%s", abs);
    } else if (only_create) {
        return 0;
    }
    memcpy(n->value, val, len);
    n->len = (uint32_t)len;
    fire(d, abs);
    return 0;
}

static int node_rm(struct domain *d, const char *abs)
{
    struct hv_xs *x = &d->xs;
    bool any = false;

    for (unsigned i = 0; i < XS_MAX_NODES; i++)
        if (x->node[i].used && below(x->node[i].path, abs)) {
            x->node[i].used = false;
            any = true;
        }
    if (!any)
        return -ENOENT;
    fire(d, abs);
    return 0;
}

int hv_xs_write(struct domain *d, const char *path, const char *val)
{
    char abs[XS_PATH_MAX];
    int r;

    abs_path(d, path, abs, sizeof(abs));
    pthread_mutex_lock(&d->xs.lock);
    r = node_set(d, abs, val, strlen(val), false);
    pthread_mutex_unlock(&d->xs.lock);
    if (r == 0)
        hv_xs_kick(d); /* send the watch events */
    return r;
}

int hv_xs_read(struct domain *d, const char *path, char *out, size_t len)
{
    char abs[XS_PATH_MAX];
    struct xs_node *n;
    int r = -ENOENT;

    abs_path(d, path, abs, sizeof(abs));
    pthread_mutex_lock(&d->xs.lock);
    n = find(&d->xs, abs);
    if (n && len) {
        size_t m = n->len < len - 1 ? n->len : len - 1;
        memcpy(out, n->value, m);
        out[m] = 0;
        r = 0;
    }
    pthread_mutex_unlock(&d->xs.lock);
    return r;
}

/* ---- requests ---- */

static void reply(struct hv_xs *x, const struct xs_hdr *req, uint32_t type,
                  const void *p, uint32_t len)
{
    struct xs_hdr h = {type, req->req_id, req->tx_id, len};
    queue_out(x, &h, p);
}

static void reply_err(struct hv_xs *x, const struct xs_hdr *req, int err)
{
    const char *s = err == -ENOENT   ? "ENOENT"
                    : err == -E2BIG  ? "E2BIG"
                    : err == -ENOSPC ? "ENOSPC"
                    : err == -ENOSYS ? "ENOSYS"
                    : err == -EEXIST ? "EEXIST"
                                     : "EINVAL";
    reply(x, req, XS_ERROR, s, (uint32_t)strlen(s) + 1);
}

static void handle(struct domain *d, const struct xs_hdr *h, char *p)
{
    struct hv_xs *x = &d->xs;
    char abs[XS_PATH_MAX];
    size_t plen = strnlen(p, h->len);
    int r;

    /* every request but a few names a NUL-terminated path first */
    if (plen == h->len && h->type != XS_TRANSACTION_START &&
        h->type != XS_RESET_WATCHES && h->type != XS_WRITE) {
        reply_err(x, h, -EINVAL);
        return;
    }
    if (plen >= XS_PATH_MAX) {
        reply_err(x, h, -E2BIG);
        return;
    }
    abs_path(d, p, abs, sizeof(abs));
    switch (h->type) {
    case XS_READ: {
        struct xs_node *n = find(x, abs);
        if (!n)
            reply_err(x, h, -ENOENT);
        else
            reply(x, h, XS_READ, n->value, n->len);
        return;
    }
    case XS_WRITE:
        if (plen == h->len) {
            reply_err(x, h, -EINVAL);
            return;
        }
        r = node_set(d, abs, p + plen + 1, h->len - plen - 1, false);
        if (r < 0)
            reply_err(x, h, r);
        else
            reply(x, h, XS_WRITE, "OK", 3);
        return;
    case XS_MKDIR:
        r = node_set(d, abs, "", 0, true);
        if (r < 0)
            reply_err(x, h, r);
        else
            reply(x, h, XS_MKDIR, "OK", 3);
        return;
    case XS_RM:
        r = node_rm(d, abs);
        if (r < 0)
            reply_err(x, h, r);
        else
            reply(x, h, XS_RM, "OK", 3);
        return;
    case XS_DIRECTORY: {
        char out[XS_PAYLOAD_MAX];
        uint32_t n = 0;
        size_t al = strlen(abs);

        if (!find(x, abs) && strcmp(abs, "/")) {
            reply_err(x, h, -ENOENT);
            return;
        }
        for (unsigned i = 0; i < XS_MAX_NODES; i++) {
            const char *c = x->node[i].path;
            size_t cl;

            if (!x->node[i].used || !below(c, abs) || !strcmp(c, abs))
                continue;
            c += !strcmp(abs, "/") ? 1 : al + 1;
            if (strchr(c, '/'))
                continue; /* a grandchild */
            cl = strlen(c) + 1;
            if (n + cl > sizeof(out))
                break;
            memcpy(out + n, c, cl);
            n += (uint32_t)cl;
        }
        reply(x, h, XS_DIRECTORY, out, n);
        return;
    }
    case XS_GET_PERMS:
        if (!find(x, abs)) {
            reply_err(x, h, -ENOENT);
            return;
        }
        {
            char perm[16];
            int m = snprintf(perm, sizeof(perm), "b%u", d->id);
            reply(x, h, XS_GET_PERMS, perm, (uint32_t)m + 1);
        }
        return;
    case XS_SET_PERMS:
        reply(x, h, XS_SET_PERMS, "OK", 3);
        return;
    case XS_WATCH:
    case XS_UNWATCH: {
        const char *token = p + plen + 1;
        size_t tl = plen + 1 < h->len ? strnlen(token, h->len - plen - 1) : 0;

        if (plen + 1 >= h->len || tl >= XS_TOKEN_MAX ||
            tl == h->len - plen - 1) {
            reply_err(x, h, -EINVAL);
            return;
        }
        for (unsigned i = 0; i < XS_MAX_WATCHES; i++) {
            struct xs_watch *w = &x->watch[i];
            if (w->used && !strcmp(w->path, p) && !strcmp(w->token, token)) {
                if (h->type == XS_UNWATCH) {
                    w->used = false;
                    reply(x, h, XS_UNWATCH, "OK", 3);
                } else {
                    reply_err(x, h, -EEXIST);
                }
                return;
            }
        }
        if (h->type == XS_UNWATCH) {
            reply_err(x, h, -ENOENT);
            return;
        }
        for (unsigned i = 0; i < XS_MAX_WATCHES; i++) {
            struct xs_watch *w = &x->watch[i];
            if (w->used)
                continue;
            w->used = true;
            snprintf(w->path, sizeof(w->path), "%s", p);
            snprintf(w->abs, sizeof(w->abs), "%s", abs);
            snprintf(w->token, sizeof(w->token), "%s", token);
            reply(x, h, XS_WATCH, "OK", 3);
            {
                /* a watch fires once when it is set */
                char ev[XS_PATH_MAX + XS_TOKEN_MAX + 2];
                struct xs_hdr e = {XS_WATCH_EVENT, 0, 0, 0};
                memcpy(ev, p, plen + 1);
                memcpy(ev + plen + 1, token, tl + 1);
                e.len = (uint32_t)(plen + tl + 2);
                queue_out(x, &e, ev);
            }
            return;
        }
        reply_err(x, h, -ENOSPC);
        return;
    }
    case XS_RESET_WATCHES:
        for (unsigned i = 0; i < XS_MAX_WATCHES; i++)
            x->watch[i].used = false;
        reply(x, h, XS_RESET_WATCHES, "OK", 3);
        return;
    case XS_TRANSACTION_START:
        reply(x, h, XS_TRANSACTION_START, "1", 2);
        return;
    case XS_TRANSACTION_END:
        reply(x, h, XS_TRANSACTION_END, "OK", 3);
        return;
    case XS_GET_DOMAIN_PATH: {
        char dp[32];
        int m = snprintf(dp, sizeof(dp), "/local/domain/%u", d->id);
        reply(x, h, XS_GET_DOMAIN_PATH, dp, (uint32_t)m + 1);
        return;
    }
    default:
        reply_err(x, h, -ENOSYS);
        return;
    }
}

/* Move queued replies into the response ring, as far as there is room. */
static bool flush_out(struct domain *d, struct xs_iface *r)
{
    struct hv_xs *x = &d->xs;
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
    memmove(x->out, x->out + done, x->out_len - done);
    x->out_len -= done;
    return true;
}

void hv_xs_kick(struct domain *d)
{
    struct hv_xs *x = &d->xs;
    struct xs_iface *r;
    bool sent;

    if (mfn_eq(d->store_mfn, INVALID_MFN))
        return;
    r = ring(d);
    pthread_mutex_lock(&x->lock);
    if (!x->broken) {
        uint32_t cons = __atomic_load_n(&r->req_cons, __ATOMIC_ACQUIRE);
        uint32_t prod = __atomic_load_n(&r->req_prod, __ATOMIC_ACQUIRE);

        if (prod - cons > XS_RING)
            x->broken = true;
        while (!x->broken && cons != prod) {
            struct xs_hdr h;

            x->in[x->in_len++] = r->req[cons++ % XS_RING];
            if (x->in_len < sizeof(h))
                continue;
            memcpy(&h, x->in, sizeof(h));
            if (h.len > XS_PAYLOAD_MAX) {
                x->broken = true;
                break;
            }
            if (x->in_len < sizeof(h) + h.len)
                continue;
            x->in[x->in_len] = 0; /* in[] has one byte to spare */
            x->requests++;
            handle(d, &h, x->in + sizeof(h));
            x->in_len = 0;
        }
        if (x->broken)
            atomic_fetch_add_explicit(&d->xs_broken, 1, memory_order_relaxed);
        __atomic_store_n(&r->req_cons, cons, __ATOMIC_RELEASE);
        gm_logged(d, d->store_mfn);
    }
    sent = flush_out(d, r);
    pthread_mutex_unlock(&x->lock);
    evtchn_set_pending(d, d->store_port);
    (void)sent;
}

int hv_xs_init(struct domain *d)
{
    char v[32];

    pthread_mutex_init(&d->xs.lock, NULL);
    d->xs.created = true;
    snprintf(v, sizeof(v), "%llu", (unsigned long long)d->nr_pages * 4);
    pthread_mutex_lock(&d->xs.lock);
    (void)node_set(d, "/local/domain", "", 0, true);
    snprintf(v, sizeof(v), "memvisor-%u", d->id);
    {
        char p[64];
        snprintf(p, sizeof(p), "/local/domain/%u/name", d->id);
        (void)node_set(d, p, v, strlen(v), false);
        snprintf(p, sizeof(p), "/local/domain/%u/domid", d->id);
        snprintf(v, sizeof(v), "%u", d->id);
        (void)node_set(d, p, v, strlen(v), false);
        snprintf(p, sizeof(p), "/local/domain/%u/memory/target", d->id);
        snprintf(v, sizeof(v), "%llu", (unsigned long long)d->nr_pages * 4);
        (void)node_set(d, p, v, strlen(v), false);
        snprintf(p, sizeof(p), "/local/domain/%u/memory/static-max", d->id);
        (void)node_set(d, p, v, strlen(v), false);
        snprintf(p, sizeof(p), "/local/domain/%u/device", d->id);
        (void)node_set(d, p, "", 0, true);
        snprintf(p, sizeof(p), "/local/domain/%u/control", d->id);
        (void)node_set(d, p, "", 0, true);
    }
    pthread_mutex_unlock(&d->xs.lock);
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
