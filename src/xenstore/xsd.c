/*
 * xsd.c - see xsd.h.
 */
#include "xenstore/xsd.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

enum {
    XS_CONTROL = 0, XS_DIRECTORY = 1, XS_READ = 2, XS_GET_PERMS = 3,
    XS_WATCH = 4, XS_UNWATCH = 5, XS_TRANSACTION_START = 6,
    XS_TRANSACTION_END = 7, XS_INTRODUCE = 8, XS_RELEASE = 9,
    XS_GET_DOMAIN_PATH = 10, XS_WRITE = 11, XS_MKDIR = 12, XS_RM = 13,
    XS_SET_PERMS = 14, XS_WATCH_EVENT = 15, XS_ERROR = 16,
    XS_RESET_WATCHES = 21,
};

struct xs_hdr {
    uint32_t type, req_id, tx_id, len;
};
_Static_assert(sizeof(struct xs_hdr) == XSD_HDR, "xsd_sockmsg header");

/* ---- the tree ---- */

static void abs_path(struct xsd *x, const char *p, char *out, size_t len)
{
    if (p[0] == '/')
        snprintf(out, len, "%s", p);
    else
        snprintf(out, len, "/local/domain/%u/%s", x->domid, p);
    /* no trailing slash (except the root) */
    size_t n = strlen(out);
    while (n > 1 && out[n - 1] == '/')
        out[--n] = 0;
}

static struct xsd_node *find(struct xsd *x, const char *path)
{
    for (unsigned i = 0; i < XSD_MAX_NODES; i++)
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

static void queue_out(struct xsd *x, const struct xs_hdr *h,
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

static void fire(struct xsd *x, const char *abs)
{
    
    for (unsigned i = 0; i < XSD_MAX_WATCHES; i++) {
        struct xsd_watch *w = &x->watch[i];
        char ev[XSD_PATH_MAX + XSD_TOKEN_MAX + 2], rel[XSD_PATH_MAX];
        const char *report = abs;
        struct xs_hdr h = {XS_WATCH_EVENT, 0, 0, 0};
        size_t pl, tl;

        if (!w->used || !below(abs, w->abs))
            continue;
        if (w->path[0] != '/') {
            /* reported relative to the domain's path, as registered */
            size_t n = (size_t)snprintf(rel, sizeof(rel), "/local/domain/%u/",
                                        x->domid);
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

static int node_set(struct xsd *x, const char *abs, const char *val,
                    size_t len, bool only_create)
{
        struct xsd_node *n = find(x, abs);

    if (len > XSD_VALUE_MAX || strlen(abs) >= XSD_PATH_MAX)
        return -E2BIG;
    if (!n) {
        /* the parents exist implicitly: create them too */
        char parent[XSD_PATH_MAX];
        char *slash;

        snprintf(parent, sizeof(parent), "%s", abs);
        slash = strrchr(parent, '/');
        if (slash && slash != parent) {
            *slash = 0;
            if (!find(x, parent)) {
                int r = node_set(x, parent, "", 0, true);
                if (r < 0)
                    return r;
            }
        }
        for (unsigned i = 0; i < XSD_MAX_NODES && !n; i++)
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
    fire(x, abs);
    return 0;
}

static int node_rm(struct xsd *x, const char *abs)
{
        bool any = false;

    for (unsigned i = 0; i < XSD_MAX_NODES; i++)
        if (x->node[i].used && below(x->node[i].path, abs)) {
            x->node[i].used = false;
            any = true;
        }
    if (!any)
        return -ENOENT;
    fire(x, abs);
    return 0;
}

int xsd_write(struct xsd *x, const char *path, const char *val)
{
    char abs[XSD_PATH_MAX];

    abs_path(x, path, abs, sizeof(abs));
    return node_set(x, abs, val, strlen(val), false);
}

int xsd_read(struct xsd *x, const char *path, char *out, size_t len)
{
    char abs[XSD_PATH_MAX];
    struct xsd_node *n;
    size_t m;

    abs_path(x, path, abs, sizeof(abs));
    n = find(x, abs);
    if (!n || !len)
        return -ENOENT;
    m = n->len < len - 1 ? n->len : len - 1;
    memcpy(out, n->value, m);
    out[m] = 0;
    return 0;
}

/* ---- requests ---- */

static void reply(struct xsd *x, const struct xs_hdr *req, uint32_t type,
                  const void *p, uint32_t len)
{
    struct xs_hdr h = {type, req->req_id, req->tx_id, len};
    queue_out(x, &h, p);
}

static void reply_err(struct xsd *x, const struct xs_hdr *req, int err)
{
    const char *s = err == -ENOENT   ? "ENOENT"
                    : err == -E2BIG  ? "E2BIG"
                    : err == -ENOSPC ? "ENOSPC"
                    : err == -ENOSYS ? "ENOSYS"
                    : err == -EEXIST ? "EEXIST"
                                     : "EINVAL";
    reply(x, req, XS_ERROR, s, (uint32_t)strlen(s) + 1);
}

static void handle(struct xsd *x, const struct xs_hdr *h, char *p)
{
        char abs[XSD_PATH_MAX];
    size_t plen = strnlen(p, h->len);
    int r;

    /* every request but a few names a NUL-terminated path first */
    if (plen == h->len && h->type != XS_TRANSACTION_START &&
        h->type != XS_RESET_WATCHES && h->type != XS_WRITE) {
        reply_err(x, h, -EINVAL);
        return;
    }
    if (plen >= XSD_PATH_MAX) {
        reply_err(x, h, -E2BIG);
        return;
    }
    abs_path(x, p, abs, sizeof(abs));
    switch (h->type) {
    case XS_READ: {
        struct xsd_node *n = find(x, abs);
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
        r = node_set(x, abs, p + plen + 1, h->len - plen - 1, false);
        if (r < 0)
            reply_err(x, h, r);
        else
            reply(x, h, XS_WRITE, "OK", 3);
        return;
    case XS_MKDIR:
        r = node_set(x, abs, "", 0, true);
        if (r < 0)
            reply_err(x, h, r);
        else
            reply(x, h, XS_MKDIR, "OK", 3);
        return;
    case XS_RM:
        r = node_rm(x, abs);
        if (r < 0)
            reply_err(x, h, r);
        else
            reply(x, h, XS_RM, "OK", 3);
        return;
    case XS_DIRECTORY: {
        char out[XSD_PAYLOAD_MAX];
        uint32_t n = 0;
        size_t al = strlen(abs);

        if (!find(x, abs) && strcmp(abs, "/")) {
            reply_err(x, h, -ENOENT);
            return;
        }
        for (unsigned i = 0; i < XSD_MAX_NODES; i++) {
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
            int m = snprintf(perm, sizeof(perm), "b%u", x->domid);
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

        if (plen + 1 >= h->len || tl >= XSD_TOKEN_MAX ||
            tl == h->len - plen - 1) {
            reply_err(x, h, -EINVAL);
            return;
        }
        for (unsigned i = 0; i < XSD_MAX_WATCHES; i++) {
            struct xsd_watch *w = &x->watch[i];
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
        for (unsigned i = 0; i < XSD_MAX_WATCHES; i++) {
            struct xsd_watch *w = &x->watch[i];
            if (w->used)
                continue;
            w->used = true;
            snprintf(w->path, sizeof(w->path), "%s", p);
            snprintf(w->abs, sizeof(w->abs), "%s", abs);
            snprintf(w->token, sizeof(w->token), "%s", token);
            reply(x, h, XS_WATCH, "OK", 3);
            {
                /* a watch fires once when it is set */
                char ev[XSD_PATH_MAX + XSD_TOKEN_MAX + 2];
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
        for (unsigned i = 0; i < XSD_MAX_WATCHES; i++)
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
        int m = snprintf(dp, sizeof(dp), "/local/domain/%u", x->domid);
        reply(x, h, XS_GET_DOMAIN_PATH, dp, (uint32_t)m + 1);
        return;
    }
    default:
        reply_err(x, h, -ENOSYS);
        return;
    }
}


size_t xsd_feed(struct xsd *x, const char *buf, size_t len)
{
    size_t i = 0;

    while (!x->broken && i < len) {
        struct xs_hdr h;

        x->in[x->in_len++] = buf[i++];
        if (x->in_len < sizeof(h))
            continue;
        memcpy(&h, x->in, sizeof(h));
        if (h.len > XSD_PAYLOAD_MAX) {
            x->broken = true; /* X3 */
            break;
        }
        if (x->in_len < sizeof(h) + h.len)
            continue;
        x->in[x->in_len] = 0; /* in[] has one byte to spare */
        x->requests++;
        handle(x, &h, x->in + sizeof(h));
        x->in_len = 0;
    }
    return i;
}

void xsd_out_take(struct xsd *x, uint32_t n)
{
    if (n > x->out_len)
        n = x->out_len;
    memmove(x->out, x->out + n, x->out_len - n);
    x->out_len -= n;
}

void xsd_init(struct xsd *x, unsigned domid, uint64_t mem_kib)
{
    char p[64], v[32];

    memset(x, 0, sizeof(*x));
    x->domid = domid;
    (void)node_set(x, "/local/domain", "", 0, true);
    snprintf(v, sizeof(v), "memvisor-%u", domid);
    (void)xsd_write(x, "name", v);
    snprintf(v, sizeof(v), "%u", domid);
    (void)xsd_write(x, "domid", v);
    snprintf(v, sizeof(v), "%llu", (unsigned long long)mem_kib);
    (void)xsd_write(x, "memory/target", v);
    (void)xsd_write(x, "memory/static-max", v);
    snprintf(p, sizeof(p), "/local/domain/%u/device", domid);
    (void)node_set(x, p, "", 0, true);
    snprintf(p, sizeof(p), "/local/domain/%u/control", domid);
    (void)node_set(x, p, "", 0, true);
    x->out_len = 0; /* no watch exists yet: nothing was queued */
}

int xsd_check(const struct xsd *x)
{
    if (x->out_len > sizeof(x->out) ||
        x->in_len > XSD_HDR + XSD_PAYLOAD_MAX)
        return -EUCLEAN; /* X2 */
    for (unsigned i = 0; i < XSD_MAX_NODES; i++) {
        const struct xsd_node *n = &x->node[i];
        char parent[XSD_PATH_MAX];
        char *slash;
        bool found = false;

        if (!n->used)
            continue;
        if (n->path[0] != '/' || !memchr(n->path, 0, sizeof(n->path)) ||
            n->len > XSD_VALUE_MAX)
            return -EUCLEAN; /* X1 */
        memcpy(parent, n->path, sizeof(parent));
        slash = strrchr(parent, '/');
        if (slash == parent)
            continue; /* a child of the root */
        *slash = 0;
        for (unsigned j = 0; j < XSD_MAX_NODES && !found; j++)
            found = x->node[j].used && !strcmp(x->node[j].path, parent);
        if (!found)
            return -EUCLEAN;
    }
    return 0;
}
