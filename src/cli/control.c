/*
 * control.c - see control.h.  The parser understands exactly the request
 * shapes above: a flat JSON object of string and integer members.
 */
#include "cli/control.h"
#include "cli/xfer.h"

#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

struct control {
    int fd;
    int wake[2];
    char path[108];
    struct domain *d;
    pthread_t thread;
    int pause_depth; /* pauses this socket took and has not resumed */
};

/* Find "key": and return a pointer to its value, or NULL. */
static const char *member(const char *line, const char *key)
{
    size_t klen = strlen(key);

    for (const char *p = line; (p = strchr(p, '"')) != NULL; p++) {
        if (!strncmp(p + 1, key, klen) && p[1 + klen] == '"') {
            const char *v = p + 2 + klen;
            while (isspace((unsigned char)*v))
                v++;
            if (*v != ':')
                continue;
            v++;
            while (isspace((unsigned char)*v))
                v++;
            return v;
        }
    }
    return NULL;
}

static bool str_member(const char *line, const char *key, char *out, size_t len)
{
    const char *v = member(line, key);
    size_t n = 0;

    if (!v || *v != '"')
        return false;
    for (v++; *v && *v != '"' && n + 1 < len; v++)
        out[n++] = *v;
    out[n] = 0;
    return *v == '"';
}

static bool u64_member(const char *line, const char *key, uint64_t *out)
{
    const char *v = member(line, key);
    char *end;

    if (!v || !isdigit((unsigned char)*v))
        return false;
    errno = 0;
    *out = strtoull(v, &end, 10);
    return errno == 0;
}

bool control_str(const char *line, const char *key, char *out, size_t len)
{
    return str_member(line, key, out, len);
}

bool control_u64(const char *line, const char *key, uint64_t *out)
{
    return u64_member(line, key, out);
}

struct out {
    char *buf;
    size_t len, at;
};

static void put(struct out *o, const char *fmt, ...) __printf(2, 3);
static void put(struct out *o, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (o->at >= o->len)
        return;
    va_start(ap, fmt);
    n = vsnprintf(o->buf + o->at, o->len - o->at, fmt, ap);
    va_end(ap);
    if (n > 0)
        o->at = MIN(o->len - 1, o->at + (size_t)n);
}

static void put_json_string(struct out *o, const char *s)
{
    put(o, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            put(o, "\\%c", c);
        else if (c == '\n')
            put(o, "\\n");
        else if (c < 0x20 || c >= 0x7f)
            put(o, "\\u%04x", c);
        else
            put(o, "%c", c);
    }
    put(o, "\"");
}

/* {"ok":false,"error":"what: strerror(-r)"} */
static void put_refusal(struct out *o, const char *what, int r)
{
    put(o, "{\"ok\":false,\"error\":\"%s: %s\"}", what, strerror(-r));
}

void control_json_string(char *buf, size_t len, const char *s)
{
    struct out o = {buf, len, 0};

    if (len)
        buf[0] = 0;
    put_json_string(&o, s);
}

/* {"cmd":"events"}: hv_domain_events() as JSON. */
static void events(struct domain *d, struct out *o)
{
    struct hv_events *e = malloc(sizeof(*e));
    int r;

    if (!e) {
        put(o, "{\"ok\":false,\"error\":\"events: out of memory\"}");
        return;
    }
    r = hv_domain_events(d, e);
    if (r < 0) {
        put_refusal(o, "events", r);
        free(e);
        return;
    }
    put(o, "{\"ok\":true,\"sent\":%llu,\"upcalls\":%llu,\"timer_fired\":%llu,"
           "\"vcpus\":[",
        (unsigned long long)e->sent, (unsigned long long)e->upcalls,
        (unsigned long long)e->timer_fired);
    for (unsigned i = 0; i < e->nr_vcpus; i++) {
        put(o, "%s{\"up\":%s,\"blocked\":%s", i ? "," : "",
            e->vcpu[i].up ? "true" : "false",
            e->vcpu[i].blocked ? "true" : "false");
        if (e->vcpu[i].has_vcpu_info)
            put(o, ",\"upcall_pending\":%u,\"upcall_mask\":%u,"
                   "\"pending_sel\":%llu",
                e->vcpu[i].upcall_pending, e->vcpu[i].upcall_mask,
                (unsigned long long)e->vcpu[i].pending_sel);
        if (e->vcpu[i].timer_ns != INT64_MAX)
            put(o, ",\"timer_ns\":%lld", (long long)e->vcpu[i].timer_ns);
        put(o, "}");
    }
    put(o, "],\"ports\":[");
    for (unsigned i = 0; i < e->nr_ports; i++)
        put(o, "%s[%u,%u,%u,%d,%d]", i ? "," : "", e->port[i].port,
            e->port[i].state, e->port[i].vcpu, e->port[i].pending,
            e->port[i].masked);
    put(o, "]");
    if (e->console)
        put(o, ",\"console\":{\"in_cons\":%u,\"in_prod\":%u,"
               "\"out_cons\":%u,\"out_prod\":%u}",
            e->cons_in_cons, e->cons_in_prod, e->cons_out_cons,
            e->cons_out_prod);
    put(o, "}");
    free(e);
}

/* {"cmd":"vcpus"}: hv_domain_hvm_vcpus() as JSON. */
static void vcpus(struct domain *d, struct out *o)
{
    struct hv_hvm_vcpus *h = malloc(sizeof(*h));
    int r;

    if (!h) {
        put(o, "{\"ok\":false,\"error\":\"vcpus: out of memory\"}");
        return;
    }
    r = hv_domain_hvm_vcpus(d, h);
    if (r < 0) {
        put_refusal(o, "vcpus", r);
        free(h);
        return;
    }
    put(o, "{\"ok\":true,\"clock_ns\":%llu,\"vcpus\":[",
        (unsigned long long)h->clock_ns);
    for (unsigned i = 0; i < h->nr_vcpus; i++) {
        __typeof__(h->vcpu[0]) *v = &h->vcpu[i];

        put(o,
            "%s{\"mp_state\":%u,\"rip\":%llu,\"rflags\":%llu,"
            "\"tsc\":%llu,\"tsc_deadline\":%llu,\"tpr\":%u,\"ppr\":%u,"
            "\"svr\":%u,\"lvtt\":%u,\"tmict\":%u,\"tmcct\":%u,"
            "\"tdcr\":%u,\"lint0\":%u,\"lint1\":%u,\"irr\":%d,"
            "\"isr\":%d,\"irq_injected\":%s,\"irq_nr\":%u,"
            "\"shadow\":%u,\"nmi_pending\":%s,\"nmi_masked\":%s,"
            "\"exc_pending\":%s",
            i ? "," : "", v->mp_state, (unsigned long long)v->rip,
            (unsigned long long)v->rflags, (unsigned long long)v->tsc,
            (unsigned long long)v->tsc_deadline, v->tpr, v->ppr, v->svr,
            v->lvtt, v->tmict, v->tmcct, v->tdcr, v->lint0, v->lint1, v->irr,
            v->isr, v->irq_injected ? "true" : "false", v->irq_nr, v->shadow,
            v->nmi_pending ? "true" : "false",
            v->nmi_masked ? "true" : "false",
            v->exc_pending ? "true" : "false");
        if (v->kvmclock)
            put(o, ",\"pvclock_version\":%u,\"guest_ns\":%lld",
                v->pvclock_version, (long long)v->guest_ns);
        put(o, "}");
    }
    put(o, "]}");
    free(h);
}

/* {"cmd":"nmi"[,"vcpu":N]}: hv_domain_hvm_nmi(), vCPU 0 by default. */
static void nmi(struct domain *d, const char *line, struct out *o)
{
    uint64_t v = 0;
    int r;

    if (member(line, "vcpu") && !u64_member(line, "vcpu", &v)) {
        put(o, "{\"ok\":false,\"error\":\"nmi: vcpu must be a number\"}");
        return;
    }
    r = v > UINT32_MAX ? -EINVAL : hv_domain_hvm_nmi(d, (unsigned)v);
    if (r < 0)
        put_refusal(o, "nmi", r);
    else
        put(o, "{\"ok\":true,\"vcpu\":%llu}", (unsigned long long)v);
}

static void stats(struct domain *d, struct out *o)
{
    struct hv_domain_stats s;
    bool first = true;

    hv_domain_stats(d, &s);
    put(o,
        "{\"ok\":true,\"domain\":%u,\"vcpus\":%u,\"pages\":%llu,"
        "\"exits\":%llu,\"hypercalls\":{",
        hv_domain_id(d), hv_domain_nr_vcpus(d),
        (unsigned long long)hv_domain_nr_pages(d), (unsigned long long)s.exits);
    for (unsigned i = 0; i < HV_NR_HYPERCALLS; i++) {
        if (!s.hypercalls[i])
            continue;
        put(o, "%s\"%s\":%llu", first ? "" : ",",
            hv_hypercall_name(i) ? hv_hypercall_name(i) : "?",
            (unsigned long long)s.hypercalls[i]);
        first = false;
    }
    put(o, "},\"hypercall_ns\":{");
    first = true;
    for (unsigned i = 0; i < HV_NR_HYPERCALLS; i++) {
        if (!s.hypercalls[i])
            continue;
        put(o, "%s\"%s\":%llu", first ? "" : ",",
            hv_hypercall_name(i) ? hv_hypercall_name(i) : "?",
            (unsigned long long)s.hypercall_ns[i]);
        first = false;
    }
    put(o, "},\"unknown_hypercalls\":%llu,\"privops\":%llu,"
           "\"events_sent\":%llu,\"upcalls\":%llu,\"timer_fired\":%llu,"
           "\"bounces\":{",
        (unsigned long long)s.hypercalls_unknown,
        (unsigned long long)s.privops, (unsigned long long)s.events_sent,
        (unsigned long long)s.upcalls, (unsigned long long)s.timer_fired);
    first = true;
    for (unsigned i = 0; i < 32; i++) {
        if (!s.bounces[i])
            continue;
        put(o, "%s\"%u\":%llu", first ? "" : ",", i,
            (unsigned long long)s.bounces[i]);
        first = false;
    }
    put(o,
        "},\"syscalls\":%llu,\"wpt_emulated\":%llu,\"wpt_refused\":%llu,"
        "\"continuations\":%llu,\"dirty_marked\":%llu,"
        "\"touch_overflow\":%llu,\"spurious_faults\":%llu,"
        "\"flush_requests\":%llu,\"flush_filtered\":%llu,"
        "\"flush_kicked\":%llu,\"flush_wait_ns\":%llu,\"flushes\":%llu,"
        "\"touched_now\":%llu,\"stopped\":%s}",
        (unsigned long long)s.syscalls, (unsigned long long)s.wpt_emulated,
        (unsigned long long)s.wpt_refused, (unsigned long long)s.continuations,
        (unsigned long long)s.dirty_marked,
        (unsigned long long)s.touch_overflow,
        (unsigned long long)s.spurious_faults,
        (unsigned long long)s.flush_requests,
        (unsigned long long)s.flush_filtered,
        (unsigned long long)s.flush_kicked, (unsigned long long)s.flush_wait_ns,
        (unsigned long long)s.flushes, (unsigned long long)s.touched_now,
        hv_domain_stopped(d) ? "true" : "false");
}

static void pfinfo(struct domain *d, const char *line, struct out *o)
{
    static const char *const names[16] = {
        "page", "l1", "l2", "l3", "l4", NULL,     NULL,     NULL,
        NULL,   NULL, NULL, NULL, NULL, "broken", "xalloc", "xtab"};
    uint64_t cursor = 0, first = 0, count = UINT64_MAX, listed = 0;
    uint64_t mfns[256], by_type[16] = {0}, pinned = 0, total = 0;
    uint32_t info[256];
    bool list = u64_member(line, "mfn", &first);
    int n;

    if (list) {
        cursor = first;
        if (!u64_member(line, "count", &count) || count > 256)
            count = 256;
    }
    put(o, "{\"ok\":true");
    if (list)
        put(o, ",\"list\":[");
    while ((n = hv_domain_pfinfo(d, &cursor, 256, mfns, info)) > 0) {
        for (int i = 0; i < n; i++) {
            unsigned t = info[i] >> 28;
            total++;
            if (t & 8 && t < 13) {
                pinned++;
                t &= 7;
            }
            by_type[t]++;
            if (list && listed < count) {
                put(o, "%s[%llu,%u]", listed ? "," : "",
                    (unsigned long long)mfns[i], info[i]);
                listed++;
            }
        }
        if (list && listed >= count)
            break;
    }
    if (list)
        put(o, "]");
    if (n < 0) {
        o->at = 0;
        put_refusal(o, "pfinfo", n);
        return;
    }
    put(o, ",\"frames\":%llu,\"pinned\":%llu,\"types\":{",
        (unsigned long long)total, (unsigned long long)pinned);
    bool firstt = true;
    for (unsigned t = 0; t < 16; t++) {
        if (!by_type[t] || !names[t])
            continue;
        put(o, "%s\"%s\":%llu", firstt ? "" : ",", names[t],
            (unsigned long long)by_type[t]);
        firstt = false;
    }
    put(o, "}}");
}

void control_handle(struct domain *d, const char *line, char *buf, size_t len,
                    int *pause_depth)
{
    struct out o = {buf, len, 0};
    char cmd[32];

    buf[0] = 0;
    if (!str_member(line, "cmd", cmd, sizeof(cmd))) {
        put(&o, "{\"ok\":false,\"error\":\"expected {\\\"cmd\\\":...}\"}");
        return;
    }
    if (!strcmp(cmd, "pause")) {
        hv_domain_pause(d);
        (*pause_depth)++;
        put(&o, "{\"ok\":true,\"paused\":%d}", *pause_depth);
    } else if (!strcmp(cmd, "resume")) {
        if (*pause_depth == 0) {
            put(&o, "{\"ok\":false,\"error\":\"not paused\"}");
            return;
        }
        hv_domain_resume(d);
        (*pause_depth)--;
        put(&o, "{\"ok\":true,\"paused\":%d}", *pause_depth);
    } else if (!strcmp(cmd, "stats")) {
        stats(d, &o);
    } else if (!strcmp(cmd, "events")) {
        events(d, &o);
    } else if (!strcmp(cmd, "vcpus")) {
        vcpus(d, &o);
    } else if (!strcmp(cmd, "nmi")) {
        nmi(d, line, &o);
    } else if (!strcmp(cmd, "audit")) {
        char msg[200];
        uint64_t frames = 0, tables = 0;
        int r = hv_domain_audit(d, msg, sizeof(msg), &frames, &tables);
        put(&o, "{\"ok\":true,\"clean\":%s,\"frames\":%llu,\"tables\":%llu",
            r == 0 ? "true" : "false", (unsigned long long)frames,
            (unsigned long long)tables);
        if (r < 0) {
            put(&o, ",\"error\":");
            put_json_string(&o, msg);
        }
        put(&o, "}");
    } else if (!strcmp(cmd, "pfinfo")) {
        pfinfo(d, line, &o);
    } else if (!strcmp(cmd, "dirty")) {
        uint64_t pages = 0;
        int r = hv_domain_dirty_harvest(d, &pages);
        if (r < 0)
            put_refusal(&o, "dirty", r);
        else
            put(&o, "{\"ok\":true,\"pages\":%llu}", (unsigned long long)pages);
    } else if (!strcmp(cmd, "console")) {
        char tail[2048];
        hv_domain_console(d, tail, sizeof(tail));
        put(&o, "{\"ok\":true,\"tail\":");
        put_json_string(&o, tail);
        put(&o, "}");
    } else if (!strcmp(cmd, "mem-target")) {
        /* the balloon target a PV Linux reads from xenstore, as xl mem-set
         * writes it: memory/target in KiB, at most the domain's memory */
        uint64_t kib;
        char v[32];

        if (!u64_member(line, "kib", &kib) || kib == 0 ||
            kib > hv_domain_nr_pages(d) * 4) {
            put(&o, "{\"ok\":false,\"error\":\"kib: 1 .. the domain's "
                    "memory in KiB\"}");
        } else {
            snprintf(v, sizeof(v), "%llu", (unsigned long long)kib);
            if (hv_xs_write(d, "memory/target", v) < 0)
                put(&o, "{\"ok\":false,\"error\":\"xenstore write "
                        "failed\"}");
            else
                put(&o, "{\"ok\":true,\"target_kib\":%llu}",
                    (unsigned long long)kib);
        }
    } else if (!strcmp(cmd, "mem-current")) {
        char v[32] = "";
        uint64_t pages = 0;

        (void)!hv_xs_read(d, "memory/target", v, sizeof(v));
        (void)!hv_domain_reservation(d, &pages);
        put(&o, "{\"ok\":true,\"target_kib\":\"%s\",\"frames\":%llu}", v,
            (unsigned long long)pages);
    } else if (!strcmp(cmd, "shutdown")) {
        while (*pause_depth > 0) {
            hv_domain_resume(d);
            (*pause_depth)--;
        }
        hv_domain_shutdown(d, 0);
        put(&o, "{\"ok\":true}");
    } else {
        put(&o, "{\"ok\":false,\"error\":\"unknown command\"}");
    }
}

static void serve_client(struct control *c, int fd)
{
    char line[CONTROL_LINE_MAX], resp[16384];
    size_t have = 0;
    bool overlong = false;

    for (;;) {
        struct pollfd p[2] = {{fd, POLLIN, 0}, {c->wake[0], POLLIN, 0}};
        ssize_t n;

        if (poll(p, 2, -1) < 0)
            continue;
        if (p[1].revents)
            return;
        n = read(fd, line + have, sizeof(line) - 1 - have);
        if (n <= 0)
            return;
        have += (size_t)n;
        for (;;) {
            char *nl = memchr(line, '\n', have);
            size_t used;

            if (!nl) {
                if (have == sizeof(line) - 1) {
                    overlong = true; /* drop until the next newline */
                    have = 0;
                }
                break;
            }
            *nl = 0;
            used = (size_t)(nl - line) + 1;
            if (overlong) {
                snprintf(resp, sizeof(resp),
                         "{\"ok\":false,\"error\":\"line too long\"}");
                overlong = false;
            } else if (xfer_request(line)) {
                bool stopped = false;
                xfer_handle(c->d, line, fd, resp, sizeof(resp), &stopped);
                if (stopped) /* the domain left: no pause to hold */
                    c->pause_depth = 0;
            } else {
                control_handle(c->d, line, resp, sizeof(resp), &c->pause_depth);
            }
            size_t rl = strlen(resp);
            resp[rl] = '\n';
            if (write(fd, resp, rl + 1) < 0)
                return;
            memmove(line, line + used, have - used);
            have -= used;
        }
    }
}

static void *control_thread(void *arg)
{
    struct control *c = arg;

    for (;;) {
        struct pollfd p[2] = {{c->fd, POLLIN, 0}, {c->wake[0], POLLIN, 0}};
        int fd;

        if (poll(p, 2, -1) < 0)
            continue;
        if (p[1].revents)
            break;
        fd = accept(c->fd, NULL, NULL);
        if (fd < 0)
            continue;
        serve_client(c, fd);
        close(fd);
        /* a client that left paused must not keep the guest paused */
        while (c->pause_depth > 0) {
            hv_domain_resume(c->d);
            c->pause_depth--;
        }
    }
    return NULL;
}

int control_start(struct control **out, const char *path, struct domain *d,
                  int pause_depth)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct control *c;
    int r;

    if (strlen(path) >= sizeof(sa.sun_path))
        return -ENAMETOOLONG;
    c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->d = d;
    c->pause_depth = pause_depth;
    snprintf(c->path, sizeof(c->path), "%s", path);
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0 || pipe(c->wake) < 0) {
        r = -errno;
        goto fail;
    }
    unlink(path);
    if (bind(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        listen(c->fd, 4) < 0) {
        r = -errno;
        goto fail;
    }
    if ((r = -pthread_create(&c->thread, NULL, control_thread, c)) < 0)
        goto fail;
    *out = c;
    return 0;
fail:
    if (c->fd >= 0)
        close(c->fd);
    free(c);
    return r;
}

void control_stop(struct control *c)
{
    if (write(c->wake[1], "x", 1) < 0) {
        /* the thread only exits on the wake-up; nothing else to do */
    }
    pthread_join(c->thread, NULL);
    close(c->fd);
    close(c->wake[0]);
    close(c->wake[1]);
    unlink(c->path);
    free(c);
}
