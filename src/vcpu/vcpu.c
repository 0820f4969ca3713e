/*
 * vcpu.c - the vCPU run loop, pause/resume and crash diagnostics.
 */
#include "vcpu/vcpu.h"

#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

int vcpu_group_init(struct vcpu_group *g, vcpu_exit_fn exit_fn,
                    vcpu_diag_fn diag_fn, void *opaque)
{
    int r;

    memset(g, 0, sizeof(*g));
    r = kvm_kick_signal_install(VCPU_KICK_SIGNAL);
    if (r < 0)
        return r;
    if (pthread_mutex_init(&g->lock, NULL))
        return -ENOMEM;
    if (pthread_cond_init(&g->cond, NULL)) {
        pthread_mutex_destroy(&g->lock);
        return -ENOMEM;
    }
    g->exit_fn = exit_fn;
    g->diag_fn = diag_fn;
    g->opaque = opaque;
    return 0;
}

void vcpu_group_fini(struct vcpu_group *g)
{
    pthread_cond_destroy(&g->cond);
    pthread_mutex_destroy(&g->lock);
}

int vcpu_create(struct vcpu_group *g, struct vcpu *v, struct kvm_vm *vm,
                unsigned id)
{
    int r;

    if (g->nr >= VCPU_MAX)
        return -EINVAL;
    memset(v, 0, sizeof(*v));
    r = kvm_vcpu_create(&v->kvm, vm, id);
    if (r < 0)
        return r;
    v->group = g;
    v->id = id;
    g->vcpus[g->nr++] = v;
    return 0;
}

void vcpu_destroy(struct vcpu *v)
{
    kvm_vcpu_destroy(&v->kvm);
}

static void kick_all_locked(struct vcpu_group *g)
{
    for (unsigned i = 0; i < g->nr; i++)
        if (g->vcpus[i]->thread_started)
            kvm_vcpu_kick(&g->vcpus[i]->kvm);
}

static size_t append(char *buf, size_t len, size_t at, const char *fmt, ...)
    __printf(4, 5);
static size_t append(char *buf, size_t len, size_t at, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (at >= len)
        return at;
    va_start(ap, fmt);
    n = vsnprintf(buf + at, len - at, fmt, ap);
    va_end(ap);
    return n < 0 ? at : MIN(len, at + (size_t)n);
}

/* Registers and segments of v, appended to buf. */
static size_t describe_cpu(struct vcpu *v, char *buf, size_t len, size_t at)
{
    struct kvm_vcpu_regs r;
    struct kvm_vcpu_sregs s;

#define X "%#" PRIx64
    if (kvm_vcpu_get_regs(&v->kvm, &r) == 0)
        at = append(
            buf, len, at,
            " rip=" X " rsp=" X " rflags=" X "\n"
            " rax=" X " rbx=" X " rcx=" X " rdx=" X "\n"
            " rsi=" X " rdi=" X " rbp=" X " r8=" X " r9=" X "\n"
            " r10=" X " r11=" X " r12=" X " r13=" X " r14=" X " r15=" X "\n",
            r.rip, r.rsp, r.rflags, r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi,
            r.rbp, r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15);
    if (kvm_vcpu_get_sregs(&v->kvm, &s) == 0)
        at = append(buf, len, at,
                    " cs=%#x(dpl %u) ss=%#x cr0=" X " cr2=" X " cr3=" X
                    " cr4=" X " efer=" X "\n",
                    s.cs.selector, s.cs.dpl, s.ss.selector, s.cr0, s.cr2, s.cr3,
                    s.cr4, s.efer);
#undef X
    return at;
}

static int fatal_exit(struct vcpu *v, const struct kvm_exit *ex)
{
    struct vcpu_group *g = v->group;
    char buf[VCPU_DIAG_SIZE];
    size_t at = 0;

    at = append(buf, sizeof(buf), at, "vcpu %u: fatal exit %s (%u)\n", v->id,
                kvm_exit_reason_name(ex->raw), ex->raw);
    if (ex->kind == KVM_XK_INTERNAL_ERROR) {
        at = append(buf, sizeof(buf), at,
                    " suberror %u, data:", ex->internal.suberror);
        for (unsigned i = 0; i < MIN(ex->internal.ndata, 16u); i++)
            at = append(buf, sizeof(buf), at, " %#llx",
                        (unsigned long long)ex->internal.data[i]);
        at = append(buf, sizeof(buf), at, "\n");
        /* KVM's emulation-failure layout: flags, then insn_size and up to
         * 15 instruction bytes */
        if (ex->internal.suberror == KVM_SUBERROR_EMULATION &&
            ex->internal.ndata >= 2 && (ex->internal.data[0] & 1)) {
            const uint8_t *b = (const uint8_t *)&ex->internal.data[1];
            unsigned n = MIN((unsigned)b[0], 15u);
            at = append(buf, sizeof(buf), at, " instruction bytes:");
            for (unsigned i = 0; i < n; i++)
                at = append(buf, sizeof(buf), at, " %02x", b[1 + i]);
            at = append(buf, sizeof(buf), at, "\n");
        }
    } else if (ex->kind == KVM_XK_FAIL_ENTRY) {
        at = append(buf, sizeof(buf), at, " hardware reason %#llx\n",
                    (unsigned long long)ex->fail_entry.hardware_reason);
    }
    at = describe_cpu(v, buf, sizeof(buf), at);
    if (g->diag_fn && at < sizeof(buf))
        g->diag_fn(v, buf + at, sizeof(buf) - at, g->opaque);
    vcpu_group_crash(g, v, "%s", buf);
    return -EIO;
}

static int handle_exit(struct vcpu *v)
{
    struct vcpu_group *g = v->group;
    struct kvm_exit ex;

    kvm_vcpu_exit(&v->kvm, &ex);
    atomic_fetch_add_explicit(&v->stats.exits, 1, memory_order_relaxed);
    switch (ex.kind) {
    case KVM_XK_IO:
        atomic_fetch_add_explicit(&v->stats.io, 1, memory_order_relaxed);
        break;
    case KVM_XK_MMIO:
        atomic_fetch_add_explicit(&v->stats.mmio, 1, memory_order_relaxed);
        break;
    case KVM_XK_HLT:
        atomic_fetch_add_explicit(&v->stats.hlt, 1, memory_order_relaxed);
        break;
    case KVM_XK_INTR:
        atomic_fetch_add_explicit(&v->stats.intr, 1, memory_order_relaxed);
        return VCPU_CONTINUE;
    case KVM_XK_INTERNAL_ERROR:
    case KVM_XK_FAIL_ENTRY:
    case KVM_XK_SHUTDOWN:
    case KVM_XK_UNKNOWN:
        return fatal_exit(v, &ex);
    default:
        atomic_fetch_add_explicit(&v->stats.other, 1, memory_order_relaxed);
        break;
    }
    return g->exit_fn(v, g->opaque);
}

/* V1: park while paused; false once the group stopped. */
static bool may_run(struct vcpu *v)
{
    struct vcpu_group *g = v->group;
    bool run;

    pthread_mutex_lock(&g->lock);
    while ((g->pause_count > 0 || !v->online) && !g->stopped) {
        g->nr_parked++;
        pthread_cond_broadcast(&g->cond);
        pthread_cond_wait(&g->cond, &g->lock);
        g->nr_parked--;
    }
    run = !g->stopped;
    pthread_mutex_unlock(&g->lock);
    return run;
}

void vcpu_group_set_event(struct vcpu_group *g, vcpu_flush_fn fn)
{
    g->event_fn = fn;
}

void vcpu_request_event(struct vcpu *v)
{
    atomic_store(&v->event_req, true);
    if (atomic_load(&v->in_guest))
        kvm_vcpu_kick(&v->kvm);
}

void vcpu_group_set_flush(struct vcpu_group *g, _Atomic uint64_t *clock,
                          vcpu_flush_fn fn)
{
    g->tlb_clock = clock;
    g->flush_fn = fn;
}

/* V4: mark v in guest mode, unless a flush request must be served first. */
static int enter_guest(struct vcpu *v)
{
    struct vcpu_group *g = v->group;
    int r;

    for (;;) {
        atomic_store(&v->in_guest, true);
        if (atomic_load(&v->event_req)) {
            /* V5: the request is cleared before the event is looked at */
            atomic_store(&v->in_guest, false);
            atomic_store(&v->event_req, false);
            if (g->event_fn && (r = g->event_fn(v, g->opaque)) < 0)
                return r;
            continue;
        }
        if (!atomic_load(&v->flush_req))
            return 0;
        atomic_store(&v->in_guest, false);
        atomic_store(&v->flush_req, false);
        if (v->entered && g->flush_fn && (r = g->flush_fn(v, g->opaque)) < 0)
            return r;
        atomic_fetch_add_explicit(&v->stats.flushes, 1, memory_order_relaxed);
        /* Published after the flush is arranged: it runs after this. */
        atomic_store(&v->flush_time, atomic_fetch_add(g->tlb_clock, 1) + 1);
    }
}

static uint64_t mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

void vcpu_group_flush(struct vcpu_group *g, uint64_t mask, uint64_t stamp,
                      struct vcpu *self)
{
    struct vcpu_flush_stats *st = &g->flush_stats;
    uint64_t kicked = 0, t0 = 0;

    if (!g->tlb_clock)
        return;
    atomic_fetch_add_explicit(&st->requests, 1, memory_order_relaxed);
    for (unsigned i = 0; i < g->nr && i < 64; i++) {
        struct vcpu *v = g->vcpus[i];

        if (!(mask & (1ULL << i)))
            continue;
        if (atomic_load(&v->flush_time) > stamp) {
            atomic_fetch_add_explicit(&st->filtered, 1, memory_order_relaxed);
            continue;
        }
        atomic_store(&v->flush_req, true);
        if (v == self || !atomic_load(&v->in_guest)) {
            atomic_fetch_add_explicit(&st->flagged, 1, memory_order_relaxed);
            continue;
        }
        kvm_vcpu_kick(&v->kvm);
        kicked |= 1ULL << i;
    }
    if (!kicked)
        return;
    t0 = mono_ns();
    atomic_fetch_add_explicit(&st->kicked,
                              (uint64_t)__builtin_popcountll(kicked),
                              memory_order_relaxed);
    while (kicked) {
        for (unsigned i = 0; i < g->nr && i < 64; i++) {
            struct vcpu *v = g->vcpus[i];

            if (!(kicked & (1ULL << i)))
                continue;
            /* A kick is never lost (kvm.h K4), and a vCPU that re-enters
             * meanwhile sees flush_req first (V4): no second kick. */
            if (!atomic_load(&v->in_guest) ||
                atomic_load(&v->flush_time) > stamp)
                kicked &= ~(1ULL << i);
        }
        if (kicked)
            sched_yield();
    }
    atomic_fetch_add_explicit(&st->wait_ns, mono_ns() - t0,
                              memory_order_relaxed);
}

static void *vcpu_thread(void *arg)
{
    struct vcpu *v = arg;
    struct vcpu_group *g = v->group;

    kvm_vcpu_bind_thread(&v->kvm, VCPU_KICK_SIGNAL);
    while (may_run(v)) {
        int r = enter_guest(v);

        if (r < 0) {
            vcpu_group_crash(g, v, "vcpu %u: TLB flush failed: %s\n", v->id,
                             strerror(-r));
            break;
        }
        r = kvm_vcpu_run(&v->kvm);
        v->entered = true;
        atomic_store(&v->in_guest, false);
        if (r == -EINTR || r == -EAGAIN) /* kicked; or took INIT/SIPI */
            continue;
        if (r < 0) {
            vcpu_group_crash(g, v, "vcpu %u: KVM_RUN failed: %s\n", v->id,
                             strerror(-r));
            break;
        }
        r = handle_exit(v);
        if (r == VCPU_CONTINUE)
            continue;
        if (r == VCPU_SHUTDOWN)
            break;
        if (r == VCPU_PARK) {
            v->parked_for_good = true;
            break;
        }
        if (!vcpu_group_stopped(g))
            vcpu_group_crash(g, v, "vcpu %u: exit handler failed: %s\n", v->id,
                             strerror(-r));
        break;
    }
    pthread_mutex_lock(&g->lock);
    g->nr_live--;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
    return NULL;
}

void vcpu_set_online(struct vcpu *v)
{
    struct vcpu_group *g = v->group;

    pthread_mutex_lock(&g->lock);
    v->online = true;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
}

int vcpu_group_start(struct vcpu_group *g)
{
    pthread_mutex_lock(&g->lock);
    for (unsigned i = 0; i < g->nr; i++) {
        struct vcpu *v = g->vcpus[i];

        if (pthread_create(&v->thread, NULL, vcpu_thread, v)) {
            g->stopped = true;
            g->crashed = true;
            g->exit_code = -EAGAIN;
            kick_all_locked(g);
            pthread_mutex_unlock(&g->lock);
            return -EAGAIN;
        }
        v->thread_started = true;
        g->nr_live++;
    }
    pthread_mutex_unlock(&g->lock);
    return 0;
}

void vcpu_group_join(struct vcpu_group *g)
{
    for (unsigned i = 0; i < g->nr; i++) {
        struct vcpu *v = g->vcpus[i];

        if (v->thread_started) {
            pthread_join(v->thread, NULL);
            v->thread_started = false;
        }
    }
}

void vcpu_group_pause(struct vcpu_group *g)
{
    pthread_mutex_lock(&g->lock);
    g->pause_count++;
    atomic_store(&g->pausing, true);
    kick_all_locked(g);
    /* Every thread is parked, or has left (stopped, parked for good). */
    while (g->nr_parked < g->nr_live && !g->stopped)
        pthread_cond_wait(&g->cond, &g->lock);
    pthread_mutex_unlock(&g->lock);
}

void vcpu_group_resume(struct vcpu_group *g)
{
    pthread_mutex_lock(&g->lock);
    BUG_ON(g->pause_count == 0);
    if (--g->pause_count == 0)
        atomic_store(&g->pausing, false);
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
}

bool vcpu_pause_pending(const struct vcpu *v)
{
    return atomic_load(&v->group->pausing);
}

static void stop_locked(struct vcpu_group *g)
{
    g->stopped = true;
    atomic_store(&g->pausing, true);
    kick_all_locked(g);
    pthread_cond_broadcast(&g->cond);
}

void vcpu_group_stop(struct vcpu_group *g, int code)
{
    pthread_mutex_lock(&g->lock);
    if (!g->stopped) {
        g->exit_code = code;
        stop_locked(g);
    }
    pthread_mutex_unlock(&g->lock);
}

void vcpu_group_crash(struct vcpu_group *g, struct vcpu *v, const char *fmt,
                      ...)
{
    va_list ap;

    (void)v;
    pthread_mutex_lock(&g->lock);
    if (!g->stopped) {
        g->crashed = true;
        g->exit_code = -EIO;
        va_start(ap, fmt);
        vsnprintf(g->diag, sizeof(g->diag), fmt, ap);
        va_end(ap);
        stop_locked(g);
    }
    pthread_mutex_unlock(&g->lock);
}

bool vcpu_group_stopped(struct vcpu_group *g)
{
    bool s;

    pthread_mutex_lock(&g->lock);
    s = g->stopped;
    pthread_mutex_unlock(&g->lock);
    return s;
}

int vcpu_group_check(struct vcpu_group *g)
{
    int r = 0;

    pthread_mutex_lock(&g->lock);
    if (g->nr_parked > g->nr_live || g->nr_live > g->nr)
        r = -EUCLEAN;
    if (g->crashed && !g->stopped)
        r = -EUCLEAN;
    if ((g->pause_count > 0) != atomic_load(&g->pausing) && !g->stopped)
        r = -EUCLEAN;
    pthread_mutex_unlock(&g->lock);
    return r;
}
