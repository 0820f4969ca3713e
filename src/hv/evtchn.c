/*
 * evtchn.c - event channels (Xen's 2-level ABI), virtual interrupts, the
 * upcall that delivers them through the shim, SCHEDOP_block, and the vCPU
 * timers (set_timer_op, VCPUOP_*_timer) that raise VIRQ_TIMER.
 *
 * Ports: 1 .. HV_EVTCHN_MAX-1 (0 is never allocated), each free, unbound,
 * bound to a virq of one vCPU, an IPI, or to one of memvisor's own
 * backends (the console ring, the xenstore ring: "interdomain" to the
 * hypervisor).  Pending and mask bits are the guest's, in shared_info;
 * the selector and the upcall flag in each vCPU's vcpu_info.  All of those
 * are updated with atomic operations on the guest's memory, logged dirty
 * (gm_logged()).
 *
 * Delivery: set_pending() marks a port pending; if it is not masked and
 * its selector bit was clear, the target vCPU's upcall flag is set and the
 * vCPU is told: a vCPU blocked in SCHEDOP_block wakes, one in the guest is
 * kicked out (vcpu.h's event request) and delivers at its next entry.
 * An upcall is a bounce to the event callback with events masked, as Xen
 * makes it, whenever the vCPU returns to the guest with the upcall flag
 * set and the mask clear (end of every exit; at an entry after a kick).
 *
 * Timers: one thread per domain sleeps until the earliest vCPU deadline
 * (system time, time.c) and raises VIRQ_TIMER on each expired vCPU.
 *
 * Locking: d->evt.lock (a leaf) protects the port table and the timers;
 * set_pending takes no lock (atomics on guest memory) except the target's
 * block lock to wake it.  Every argument is checked: ports in range and in
 * the state the operation needs, vCPUs below nr_vcpus, virqs below
 * NR_VIRQS; errors are Xen's (-EINVAL, -ENOENT, -EEXIST, -ENOSPC, -EFAULT).
 */
#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <time.h>

#include "hv/hv_internal.h"
#include "hv/pv/pvhv.h"
#include "lib/x86.h"
#include "xen/xen.h"

static struct shared_info *si(struct domain *d)
{
    return frames_ptr(&d->hv->frames, d->shared_info_mfn);
}

static struct vcpu_info *vi(struct pvcpu *pc)
{
    uint64_t m = pvcpu_vcpu_info_maddr(pc);

    return m ? (struct vcpu_info *)(void *)((uint8_t *)pc->d->hv->frames.base +
                                           m)
             : NULL;
}

static void vi_logged(struct pvcpu *pc)
{
    gm_logged(pc->d, _mfn(pvcpu_vcpu_info_maddr(pc) >> PAGE_SHIFT));
}

/* Tell vCPU pc an upcall may be due: wake it if blocked, kick it out of
 * the guest otherwise (it checks at its next entry). */
static void notify(struct pvcpu *pc)
{
    pthread_mutex_lock(&pc->blk_lock);
    pthread_cond_broadcast(&pc->blk_cond);
    pthread_mutex_unlock(&pc->blk_lock);
    vcpu_request_event(&pc->vcpu);
}

/* Mark the vCPU's upcall pending if the port's selector bit is new. */
static void raise_sel(struct pvcpu *pc, unsigned port)
{
    struct vcpu_info *v = vi(pc);
    uint64_t sel = 1ULL << (port / 64);

    if (!v)
        return;
    __atomic_fetch_or(&v->evtchn_pending_sel, sel, __ATOMIC_SEQ_CST);
    __atomic_store_n(&v->evtchn_upcall_pending, 1, __ATOMIC_SEQ_CST);
    vi_logged(pc);
    notify(pc);
}

void evtchn_set_pending(struct domain *d, unsigned port)
{
    struct shared_info *s = si(d);
    uint64_t bit = 1ULL << (port % 64);
    unsigned vcpu;

    if (port == 0 || port >= HV_EVTCHN_MAX)
        return;
    atomic_fetch_add_explicit(&d->evt.sent, 1, memory_order_relaxed);
    if (__atomic_fetch_or(&s->evtchn_pending[port / 64], bit,
                          __ATOMIC_SEQ_CST) &
        bit)
        return;
    gm_logged(d, d->shared_info_mfn);
    if (__atomic_load_n(&s->evtchn_mask[port / 64], __ATOMIC_SEQ_CST) & bit)
        return;
    vcpu = __atomic_load_n(&d->evt.port[port].vcpu, __ATOMIC_RELAXED);
    if (vcpu < d->nr_vcpus)
        raise_sel(&d->vcpus[vcpu], port);
}

void evtchn_send_virq(struct pvcpu *pc, unsigned virq)
{
    struct domain *d = pc->d;
    unsigned port;

    pthread_mutex_lock(&d->evt.lock);
    port = virq < NR_VIRQS ? d->evt.virq_port[pc->id][virq] : 0;
    pthread_mutex_unlock(&d->evt.lock);
    if (port)
        evtchn_set_pending(d, port);
}

/* A free port, 0 if none (lock held). */
static unsigned alloc_port(struct domain *d)
{
    for (unsigned p = 1; p < HV_EVTCHN_MAX; p++)
        if (d->evt.port[p].state == EVTCHNSTAT_closed)
            return p;
    return 0;
}

int evtchn_alloc_backend(struct domain *d, unsigned backend)
{
    unsigned p;

    pthread_mutex_lock(&d->evt.lock);
    p = alloc_port(d);
    if (p) {
        d->evt.port[p].state = EVTCHNSTAT_interdomain;
        d->evt.port[p].backend = (uint8_t)backend;
        d->evt.port[p].vcpu = 0;
    }
    pthread_mutex_unlock(&d->evt.lock);
    return p ? (int)p : -ENOSPC;
}

static long bind_virq(struct pvcpu *pc, uint64_t arg)
{
    struct domain *d = pc->d;
    uint32_t b[3]; /* virq, vcpu, port (out) */
    unsigned p;

    if (gm_copy_from(pc, b, arg, sizeof(b)) < 0)
        return -EFAULT;
    if (b[0] >= NR_VIRQS)
        return -EINVAL;
    if (b[1] >= d->nr_vcpus)
        return -ENOENT;
    pthread_mutex_lock(&d->evt.lock);
    if (d->evt.virq_port[b[1]][b[0]]) {
        pthread_mutex_unlock(&d->evt.lock);
        return -EEXIST;
    }
    p = alloc_port(d);
    if (p) {
        d->evt.port[p].state = EVTCHNSTAT_virq;
        d->evt.port[p].virq = (uint8_t)b[0];
        d->evt.port[p].vcpu = (uint16_t)b[1];
        d->evt.virq_port[b[1]][b[0]] = (uint16_t)p;
        atomic_store(&d->evt.guest_bound, true);
    }
    pthread_mutex_unlock(&d->evt.lock);
    if (!p)
        return -ENOSPC;
    b[2] = p;
    if (gm_copy_to(pc, arg + 8, &b[2], 4) < 0)
        return -EFAULT; /* the port stays bound, as on Xen */
    return 0;
}

static long bind_ipi(struct pvcpu *pc, uint64_t arg)
{
    struct domain *d = pc->d;
    uint32_t b[2]; /* vcpu, port (out) */
    unsigned p;

    if (gm_copy_from(pc, b, arg, sizeof(b)) < 0)
        return -EFAULT;
    if (b[0] >= d->nr_vcpus)
        return -ENOENT;
    pthread_mutex_lock(&d->evt.lock);
    p = alloc_port(d);
    if (p) {
        d->evt.port[p].state = EVTCHNSTAT_ipi;
        d->evt.port[p].vcpu = (uint16_t)b[0];
        atomic_store(&d->evt.guest_bound, true);
    }
    pthread_mutex_unlock(&d->evt.lock);
    if (!p)
        return -ENOSPC;
    b[1] = p;
    return gm_copy_to(pc, arg + 4, &b[1], 4) < 0 ? -EFAULT : 0;
}

static long evt_close(struct pvcpu *pc, unsigned p)
{
    struct domain *d = pc->d;
    struct hv_port *e;
    long r = 0;

    if (p == 0 || p >= HV_EVTCHN_MAX)
        return -EINVAL;
    pthread_mutex_lock(&d->evt.lock);
    e = &d->evt.port[p];
    switch (e->state) {
    case EVTCHNSTAT_closed:
        r = -EINVAL;
        break;
    case EVTCHNSTAT_interdomain:
        r = -EINVAL; /* memvisor's backends stay: the guest may rebind */
        break;
    case EVTCHNSTAT_virq:
        d->evt.virq_port[e->vcpu][e->virq] = 0;
        fallthrough;
    default:
        memset(e, 0, sizeof(*e));
        break;
    }
    pthread_mutex_unlock(&d->evt.lock);
    return r;
}

static long evt_send(struct pvcpu *pc, unsigned p)
{
    struct domain *d = pc->d;
    struct hv_port e;

    if (p == 0 || p >= HV_EVTCHN_MAX)
        return -EINVAL;
    pthread_mutex_lock(&d->evt.lock);
    e = d->evt.port[p];
    pthread_mutex_unlock(&d->evt.lock);
    switch (e.state) {
    case EVTCHNSTAT_ipi:
        evtchn_set_pending(d, p);
        return 0;
    case EVTCHNSTAT_interdomain:
        hv_backend_kick(d, e.backend);
        return 0;
    case EVTCHNSTAT_unbound:
    case EVTCHNSTAT_virq:
        return 0; /* nobody listens: dropped, as Xen drops it */
    default:
        return -EINVAL;
    }
}

static long evt_status(struct pvcpu *pc, uint64_t arg)
{
    struct domain *d = pc->d;
    struct {
        uint16_t dom;
        uint16_t pad;
        uint32_t port;
        uint32_t status;
        uint32_t vcpu;
        uint32_t u[2];
    } st;
    struct hv_port e;

    if (gm_copy_from(pc, &st, arg, sizeof(st)) < 0)
        return -EFAULT;
    if (st.dom != DOMID_SELF && st.dom != d->id)
        return -ESRCH;
    if (st.port == 0 || st.port >= HV_EVTCHN_MAX)
        return -EINVAL;
    pthread_mutex_lock(&d->evt.lock);
    e = d->evt.port[st.port];
    pthread_mutex_unlock(&d->evt.lock);
    st.status = e.state;
    st.vcpu = e.vcpu;
    st.u[0] = e.state == EVTCHNSTAT_virq ? e.virq : 0;
    st.u[1] = 0;
    return gm_copy_to(pc, arg, &st, sizeof(st)) < 0 ? -EFAULT : 0;
}

static long evt_bind_vcpu(struct pvcpu *pc, uint64_t arg)
{
    struct domain *d = pc->d;
    uint32_t b[2]; /* port, vcpu */
    long r = 0;

    if (gm_copy_from(pc, b, arg, sizeof(b)) < 0)
        return -EFAULT;
    if (b[0] == 0 || b[0] >= HV_EVTCHN_MAX)
        return -EINVAL;
    if (b[1] >= d->nr_vcpus)
        return -ENOENT;
    pthread_mutex_lock(&d->evt.lock);
    switch (d->evt.port[b[0]].state) {
    case EVTCHNSTAT_interdomain:
    case EVTCHNSTAT_unbound:
    case EVTCHNSTAT_pirq:
        __atomic_store_n(&d->evt.port[b[0]].vcpu, (uint16_t)b[1],
                         __ATOMIC_RELAXED);
        break;
    case EVTCHNSTAT_virq:
        /* a per-vCPU virq stays with its vCPU (Xen: global virqs only) */
        r = d->evt.port[b[0]].virq == VIRQ_TIMER ? -EINVAL : 0;
        if (!r)
            __atomic_store_n(&d->evt.port[b[0]].vcpu, (uint16_t)b[1],
                             __ATOMIC_RELAXED);
        break;
    default:
        r = -EINVAL;
        break;
    }
    pthread_mutex_unlock(&d->evt.lock);
    return r;
}

static long evt_unmask(struct pvcpu *pc, unsigned p)
{
    struct domain *d = pc->d;
    struct shared_info *s = si(d);
    uint64_t bit = 1ULL << (p % 64);
    unsigned vcpu;

    if (p == 0 || p >= HV_EVTCHN_MAX)
        return -EINVAL;
    if (!(__atomic_fetch_and(&s->evtchn_mask[p / 64], ~bit,
                             __ATOMIC_SEQ_CST) &
          bit))
        return 0;
    gm_logged(d, d->shared_info_mfn);
    if (!(__atomic_load_n(&s->evtchn_pending[p / 64], __ATOMIC_SEQ_CST) &
          bit))
        return 0;
    vcpu = __atomic_load_n(&d->evt.port[p].vcpu, __ATOMIC_RELAXED);
    if (vcpu < d->nr_vcpus)
        raise_sel(&d->vcpus[vcpu], p);
    return 0;
}

long hc_event_channel_op(struct pvcpu *pc, uint64_t a[6])
{
    uint32_t port;

    switch (a[0]) {
    case EVTCHNOP_bind_virq:
        return bind_virq(pc, a[1]);
    case EVTCHNOP_bind_ipi:
        return bind_ipi(pc, a[1]);
    case EVTCHNOP_close:
    case EVTCHNOP_send:
    case EVTCHNOP_unmask:
        if (gm_copy_from(pc, &port, a[1], sizeof(port)) < 0)
            return -EFAULT;
        return a[0] == EVTCHNOP_close  ? evt_close(pc, port)
               : a[0] == EVTCHNOP_send ? evt_send(pc, port)
                                       : evt_unmask(pc, port);
    case EVTCHNOP_status:
        return evt_status(pc, a[1]);
    case EVTCHNOP_bind_vcpu:
        return evt_bind_vcpu(pc, a[1]);
    default:
        /* init_control (FIFO ABI), alloc_unbound, bind_interdomain,
         * bind_pirq, reset, ...: the guest stays on the 2-level ABI. */
        return -ENOSYS;
    }
}

/* ---- upcalls ---- */

bool evtchn_upcall_due(struct pvcpu *pc)
{
    struct vcpu_info *v = vi(pc);

    return v && pc->event_cb &&
           __atomic_load_n(&v->evtchn_upcall_pending, __ATOMIC_SEQ_CST) &&
           !__atomic_load_n(&v->evtchn_upcall_mask, __ATOMIC_SEQ_CST);
}

/* ---- SCHEDOP_block ---- */

void evtchn_block(struct pvcpu *pc)
{
    struct vcpu_info *v = vi(pc);
    struct timespec ts;

    /* Xen: enable event delivery, then sleep until an event is pending. */
    pvcpu_set_upcall_mask(pc, 0);
    if (!v)
        return;
    hv_runstate_change(pc, RUNSTATE_blocked);
    pthread_mutex_lock(&pc->blk_lock);
    while (!__atomic_load_n(&v->evtchn_upcall_pending, __ATOMIC_SEQ_CST) &&
           !vcpu_pause_pending(&pc->vcpu) &&
           !vcpu_group_stopped(&pc->d->group)) {
        /* Woken by notify(); a pause request is seen within 2 ms. */
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 2000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&pc->blk_cond, &pc->blk_lock, &ts);
    }
    pthread_mutex_unlock(&pc->blk_lock);
    hv_runstate_change(pc, RUNSTATE_running);
}

/* ---- timers ---- */

static void timer_changed(struct domain *d)
{
    pthread_cond_broadcast(&d->evt.tcond);
}

long hv_timer_set(struct pvcpu *pc, uint64_t deadline, uint64_t period)
{
    struct domain *d = pc->d;

    pthread_mutex_lock(&d->evt.lock);
    pc->timer_deadline = deadline;
    pc->timer_period = period;
    timer_changed(d);
    pthread_mutex_unlock(&d->evt.lock);
    return 0;
}

static void *timer_thread(void *arg)
{
    struct domain *d = arg;

    pthread_mutex_lock(&d->evt.lock);
    while (!d->evt.timer_stop) {
        uint64_t now = hv_system_time(d), next = UINT64_MAX;
        bool fire[HV_MAX_VCPUS] = {false};
        bool any = false;

        for (unsigned i = 0; i < d->nr_vcpus; i++) {
            struct pvcpu *pc = &d->vcpus[i];

            if (!pc->timer_deadline)
                continue;
            if (pc->timer_deadline <= now) {
                fire[i] = any = true;
                if (pc->timer_period) {
                    pc->timer_deadline += pc->timer_period;
                    if (pc->timer_deadline <= now)
                        pc->timer_deadline = now + pc->timer_period;
                } else {
                    pc->timer_deadline = 0;
                }
            }
            if (pc->timer_deadline && pc->timer_deadline < next)
                next = pc->timer_deadline;
        }
        if (any) {
            pthread_mutex_unlock(&d->evt.lock);
            for (unsigned i = 0; i < d->nr_vcpus; i++) {
                if (!fire[i])
                    continue;
                atomic_fetch_add_explicit(&d->evt.timer_fired, 1,
                                          memory_order_relaxed);
                hv_time_update(&d->vcpus[i]);
                evtchn_send_virq(&d->vcpus[i], VIRQ_TIMER);
            }
            pthread_mutex_lock(&d->evt.lock);
            continue;
        }
        if (next == UINT64_MAX) {
            pthread_cond_wait(&d->evt.tcond, &d->evt.lock);
        } else {
            uint64_t abs = d->boot_ns + next;
            struct timespec ts = {(time_t)(abs / 1000000000ULL),
                                  (long)(abs % 1000000000ULL)};

            pthread_cond_timedwait(&d->evt.tcond, &d->evt.lock, &ts);
        }
    }
    pthread_mutex_unlock(&d->evt.lock);
    return NULL;
}

int evtchn_init(struct domain *d)
{
    pthread_condattr_t ca;

    pthread_mutex_init(&d->evt.lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&d->evt.tcond, &ca);
    for (unsigned i = 0; i < d->nr_vcpus; i++) {
        pthread_mutex_init(&d->vcpus[i].blk_lock, NULL);
        pthread_cond_init(&d->vcpus[i].blk_cond, &ca);
    }
    pthread_condattr_destroy(&ca);
    d->evt.created = true;
    return 0;
}

int evtchn_start(struct domain *d)
{
    if (pthread_create(&d->evt.timer, NULL, timer_thread, d))
        return -EAGAIN;
    d->evt.timer_started = true;
    return 0;
}

void evtchn_fini(struct domain *d)
{
    if (!d->evt.created)
        return;
    if (d->evt.timer_started) {
        pthread_mutex_lock(&d->evt.lock);
        d->evt.timer_stop = true;
        timer_changed(d);
        pthread_mutex_unlock(&d->evt.lock);
        pthread_join(d->evt.timer, NULL);
        d->evt.timer_started = false;
    }
    for (unsigned i = 0; i < d->nr_vcpus; i++) {
        pthread_mutex_destroy(&d->vcpus[i].blk_lock);
        pthread_cond_destroy(&d->vcpus[i].blk_cond);
    }
    pthread_cond_destroy(&d->evt.tcond);
    pthread_mutex_destroy(&d->evt.lock);
    d->evt.created = false;
}

long hc_set_timer_op(struct pvcpu *pc, uint64_t a[6])
{
    /* a[0]: absolute system time; 0 cancels */
    return hv_timer_set(pc, a[0], 0);
}

long hc_vcpu_timer_op(struct pvcpu *pc, struct pvcpu *t, unsigned cmd,
                      uint64_t arg)
{
    struct vcpu_set_singleshot_timer st;
    uint64_t period;

    switch (cmd) {
    case VCPUOP_set_singleshot_timer:
        if (t != pc)
            return -EINVAL;
        if (gm_copy_from(pc, &st, arg, sizeof(st)) < 0)
            return -EFAULT;
        if ((st.flags & VCPU_SSHOTTMR_future) &&
            st.timeout_abs_ns < hv_system_time(pc->d))
            return -ETIME;
        return hv_timer_set(pc, st.timeout_abs_ns ? st.timeout_abs_ns : 1,
                            t->timer_period);
    case VCPUOP_stop_singleshot_timer:
        if (t != pc)
            return -EINVAL;
        return hv_timer_set(pc, t->timer_period ? t->timer_deadline : 0,
                            t->timer_period);
    case VCPUOP_set_periodic_timer:
        if (gm_copy_from(pc, &period, arg, sizeof(period)) < 0)
            return -EFAULT;
        if (period < 1000000) /* Xen's minimum: 1 ms */
            return -EINVAL;
        return hv_timer_set(t, hv_system_time(pc->d) + period, period);
    case VCPUOP_stop_periodic_timer:
        return hv_timer_set(t, 0, 0);
    default:
        return -ENOSYS;
    }
}

void hv_backend_kick(struct domain *d, unsigned b)
{
    if (b == HV_BACKEND_CONSOLE)
        hv_cons_kick(d);
    else if (b == HV_BACKEND_STORE)
        hv_xs_kick(d);
}

/* ---- diagnosis ---- */

int hv_domain_events(struct domain *d, struct hv_events *out)
{
    struct shared_info *s;
    uint64_t now;
    uint32_t idx[4];

    memset(out, 0, sizeof(*out));
    if (d->hvm)
        return -EOPNOTSUPP;
    s = si(d);
    now = hv_system_time(d);
    out->nr_vcpus = d->nr_vcpus;
    pthread_mutex_lock(&d->evt.lock);
    for (unsigned i = 0; i < d->nr_vcpus; i++) {
        struct pvcpu *pc = &d->vcpus[i];
        struct vcpu_info *v = vi(pc);

        out->vcpu[i].up = pc->up;
        out->vcpu[i].blocked =
            __atomic_load_n(&pc->runstate.state, __ATOMIC_RELAXED) ==
            RUNSTATE_blocked;
        out->vcpu[i].has_vcpu_info = v != NULL;
        if (v) {
            out->vcpu[i].upcall_pending =
                __atomic_load_n(&v->evtchn_upcall_pending, __ATOMIC_SEQ_CST);
            out->vcpu[i].upcall_mask =
                __atomic_load_n(&v->evtchn_upcall_mask, __ATOMIC_SEQ_CST);
            out->vcpu[i].pending_sel =
                __atomic_load_n(&v->evtchn_pending_sel, __ATOMIC_SEQ_CST);
        }
        out->vcpu[i].timer_ns = pc->timer_deadline
                                    ? (int64_t)(pc->timer_deadline - now)
                                    : INT64_MAX;
    }
    for (unsigned p = 1; p < HV_EVTCHN_MAX; p++) {
        uint64_t bit = 1ULL << (p % 64);
        unsigned n = out->nr_ports;

        if (d->evt.port[p].state == EVTCHNSTAT_closed)
            continue;
        if (n == HV_EVENTS_MAX_PORTS)
            break;
        out->port[n].port = (uint16_t)p;
        out->port[n].vcpu = d->evt.port[p].vcpu;
        out->port[n].state = d->evt.port[p].state;
        out->port[n].pending =
            __atomic_load_n(&s->evtchn_pending[p / 64], __ATOMIC_SEQ_CST) & bit;
        out->port[n].masked =
            __atomic_load_n(&s->evtchn_mask[p / 64], __ATOMIC_SEQ_CST) & bit;
        out->nr_ports = n + 1;
    }
    pthread_mutex_unlock(&d->evt.lock);
    if (hv_domain_console_state(d, idx) == 0) {
        out->console = true;
        out->cons_in_cons = idx[0];
        out->cons_in_prod = idx[1];
        out->cons_out_cons = idx[2];
        out->cons_out_prod = idx[3];
    }
    out->sent = atomic_load_explicit(&d->evt.sent, memory_order_relaxed);
    out->upcalls = atomic_load_explicit(&d->evt.upcalls, memory_order_relaxed);
    out->timer_fired =
        atomic_load_explicit(&d->evt.timer_fired, memory_order_relaxed);
    return 0;
}
