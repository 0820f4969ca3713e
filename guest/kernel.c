/*
 * kernel.c - boot, console, traps, vCPUs and the workload runner of the PV
 * guest kernel (see guest.h for its invariants).
 *
 * Output lines that tests parse:
 *   "<workload>: <counter>=<n> ..."   a workload's summary
 *   "<workload>: pass" | "<workload>: FAIL (<n> failures)"
 *   "FAIL: <workload> vcpu <i>: <what>"   each failure
 *   "guest: pass" | "guest: FAIL"      then the domain shuts down with
 *                                       SHUTDOWN_poweroff or SHUTDOWN_crash
 */
#include "guest.h"

/* The one global: the trap entry and the secondary vCPUs' entry have no
 * other way to reach the kernel object. */
static struct kernel the_kernel;

uint8_t guest_stacks[MAX_VCPUS][STACK_SIZE]
    __attribute__((aligned(STACK_SIZE)));

extern const uint64_t __extable_start[], __extable_end[];
extern char ap_entry[];
extern char trap_0[], trap_1[], trap_2[], trap_3[], trap_4[], trap_5[],
    trap_6[], trap_7[], trap_8[], trap_9[], trap_10[], trap_11[], trap_12[],
    trap_13[], trap_14[], trap_15[], trap_16[], trap_17[], trap_18[], trap_19[],
    trap_32[], trap_33[], syscall_entry[];

void kernel_main(struct start_info *si, uint64_t boot_rsp);
void ap_main(struct vcpu *v);

/* Saved by trap_common (head.S), lowest address first. */
struct trap_regs {
    uint64_t r15, r14, r13, r12, r11, r10, r9, r8, rbp, rdi, rsi, rdx, rcx, rbx,
        rax;
    uint64_t vector, error_code;
    uint64_t rip, cs, rflags, rsp, ss;
};
void trap_dispatch(struct trap_regs *r);

/* head.S reaches these two fields by offset. */
_Static_assert(__builtin_offsetof(struct vcpu, recover_rip) == 0,
               "VCPU_RECOVER_RIP in head.S");
_Static_assert(__builtin_offsetof(struct vcpu, recover_rsp) == 8,
               "VCPU_RECOVER_RSP in head.S");
_Static_assert(__builtin_offsetof(struct vcpu, user_return_rsp) == 16,
               "VCPU_USER_RETURN_RSP in head.S");

void spin_lock(struct spinlock *l)
{
    while (__atomic_exchange_n(&l->v, 1, __ATOMIC_ACQUIRE))
        while (__atomic_load_n(&l->v, __ATOMIC_RELAXED))
            __builtin_ia32_pause();
}

void spin_unlock(struct spinlock *l)
{
    __atomic_store_n(&l->v, 0, __ATOMIC_RELEASE);
}

void vcpu_yield(void)
{
    (void)hc_sched_op(SCHEDOP_yield, NULL);
}

static void console_write(const char *s, size_t n)
{
    while (n) {
        unsigned chunk = n > 1024 ? 1024 : (unsigned)n;
        if (hc_console_write(s, chunk) < 0)
            return;
        s += chunk;
        n -= chunk;
    }
}

static void vkprintf(struct kernel *k, const char *fmt, va_list ap)
{
    char buf[512];
    int n = kvsnprintf(buf, sizeof(buf), fmt, ap);
    if (n > (int)sizeof(buf) - 1)
        n = sizeof(buf) - 1;
    spin_lock(&k->console_lock);
    console_write(buf, (size_t)n);
    spin_unlock(&k->console_lock);
}

void kprintf(struct kernel *k, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vkprintf(k, fmt, ap);
    va_end(ap);
}

void vfail(struct vcpu *v, const char *what, const char *fmt, ...)
{
    char buf[400];
    va_list ap;
    va_start(ap, fmt);
    kvsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    v->fails++;
    kprintf(v->k, "FAIL: %s vcpu %u: %s\n", what, v->id, buf);
}

_Noreturn void guest_shutdown(unsigned reason)
{
    struct sched_shutdown s = {.reason = reason};
    for (;;) {
        (void)hc_sched_op(SCHEDOP_shutdown, &s);
        /* Shutdown returned: nothing else to do but ask again. */
        vcpu_yield();
    }
}

/* ---- traps ---- */

static uint64_t extable_find(uint64_t rip)
{
    for (const uint64_t *e = __extable_start; e < __extable_end; e += 2)
        if (e[0] == rip)
            return e[1];
    return 0;
}

void trap_dispatch(struct trap_regs *r)
{
    struct kernel *k = &the_kernel;
    struct vcpu *v =
        *(struct vcpu **)((uint64_t)r & ~(uint64_t)(STACK_SIZE - 1));

    if (r->vector == VECTOR_EVENT) {
        v->events++;
        return;
    }
    if (r->vector < NR_TRAP_VECTORS)
        v->traps[r->vector]++;
    uint64_t fixup = extable_find(r->rip);
    if (fixup && r->vector != VECTOR_FAILSAFE) {
        r->rip = fixup;
        r->rax = PROBE_FAULTED | (r->vector & 0xff) |
                 ((r->error_code & 0xffffffff) << 8);
        return;
    }
    if (v->recover_rip && r->vector != VECTOR_FAILSAFE) {
        r->rip = v->recover_rip;
        r->rsp = v->recover_rsp;
        r->cs = FLAT_KERNEL_CS & ~3ULL; /* RPL 0: resume in kernel mode */
        r->rax = PROBE_FAULTED | (r->vector & 0xff) |
                 ((r->error_code & 0xffffffff) << 8);
        v->recover_rip = 0;
        return;
    }
    v->unexpected++;
    uint64_t cr2 = k->shared && v->id < XEN_LEGACY_MAX_VCPUS
                       ? k->shared->vcpu_info[v->id].arch.cr2
                       : 0;
    kprintf(k,
            "FAIL: unexpected exception vcpu %u vector %lu error %lx rip %lx "
            "rsp %lx cr2 %lx\n",
            v->id, r->vector, r->error_code, r->rip, r->rsp, cr2);
    kprintf(k, "guest: FAIL\n");
    guest_shutdown(SHUTDOWN_crash);
}

static void traps_init(struct kernel *k)
{
    static char *const entry[NR_TRAP_VECTORS] = {
        trap_0,  trap_1,  trap_2,  trap_3,  trap_4,  trap_5,  trap_6,
        trap_7,  trap_8,  trap_9,  trap_10, trap_11, trap_12, trap_13,
        trap_14, trap_15, trap_16, trap_17, trap_18, trap_19,
    };
    unsigned n = 0;
    for (unsigned vec = 0; vec < NR_TRAP_VECTORS; vec++) {
        if (!entry[vec])
            continue;
        struct trap_info *t = &k->traps[n++];
        t->vector = (uint8_t)vec;
        t->flags = (vec == 3 || vec == 4) ? 3 : 0;
        t->cs = FLAT_KERNEL_CS;
        t->address = (uint64_t)(uintptr_t)entry[vec];
    }
    k->traps[n].address = 0;
}

static void vcpu_install_handlers(struct kernel *k, struct vcpu *v)
{
    long rc = hc_set_trap_table(k->traps);
    if (rc)
        kprintf(k, "guest: vcpu %u set_trap_table: %ld\n", v->id, rc);
    const struct {
        uint16_t type;
        const char *name;
        const char *entry;
    } callbacks[] = {
        {CALLBACKTYPE_event, "event", trap_32},
        {CALLBACKTYPE_syscall, "syscall", syscall_entry},
        {CALLBACKTYPE_failsafe, "failsafe", trap_33},
    };
    for (unsigned i = 0; i < sizeof(callbacks) / sizeof(callbacks[0]); i++) {
        struct callback_register cb = {
            .type = callbacks[i].type,
            .address = (uint64_t)(uintptr_t)callbacks[i].entry,
        };
        rc = hc_callback_op(CALLBACKOP_register, &cb);
        if (rc)
            kprintf(k, "guest: vcpu %u register %s callback: %ld\n", v->id,
                    callbacks[i].name, rc);
    }
    rc = hc_stack_switch(FLAT_KERNEL_SS, v->stack_top);
    if (rc)
        kprintf(k, "guest: vcpu %u stack_switch: %ld\n", v->id, rc);
}

static void vcpu_setup(struct kernel *k, unsigned id)
{
    struct vcpu *v = &k->vcpus[id];
    v->id = id;
    v->k = k;
    v->stack_top = (uint64_t)(uintptr_t)(guest_stacks[id] + STACK_SIZE);
    *(struct vcpu **)guest_stacks[id] = v;
    krand_seed(&v->rng, k->seed * 0x100000001B3ULL + id + 1);
}

/* ---- vCPUs and the workload runner ---- */

void barrier_wait(struct kernel *k)
{
    uint32_t gen = __atomic_load_n(&k->barrier_gen, __ATOMIC_ACQUIRE);
    if (__atomic_add_fetch(&k->barrier_count, 1, __ATOMIC_ACQ_REL) ==
        k->nr_vcpus) {
        __atomic_store_n(&k->barrier_count, 0, __ATOMIC_RELAXED);
        __atomic_add_fetch(&k->barrier_gen, 1, __ATOMIC_RELEASE);
        return;
    }
    while (__atomic_load_n(&k->barrier_gen, __ATOMIC_ACQUIRE) == gen)
        vcpu_yield();
}

void ap_main(struct vcpu *v)
{
    struct kernel *k = v->k;
    vcpu_install_handlers(k, v);
    __atomic_store_n(&v->online, 1, __ATOMIC_RELEASE);
    uint32_t seen = 0;
    for (;;) {
        uint32_t gen;
        while ((gen = __atomic_load_n(&k->work_gen, __ATOMIC_ACQUIRE)) == seen)
            vcpu_yield();
        seen = gen;
        k->work(k, v);
        barrier_wait(k);
    }
}

static unsigned vcpus_start(struct kernel *k, unsigned want)
{
    unsigned n = 1;
    for (unsigned id = 1; id < want && id < MAX_VCPUS; id++) {
        long rc = hc_vcpu_op(VCPUOP_is_up, id, NULL);
        if (rc < 0) {
            if (rc != -XEN_ENOENT)
                kprintf(k, "guest: VCPUOP_is_up(%u): %ld\n", id, rc);
            break;
        }
        vcpu_setup(k, id);
        struct vcpu *v = &k->vcpus[id];
        struct vcpu_guest_context *ctx = &k->ap_ctx;
        kmemset(ctx, 0, sizeof(*ctx));
        ctx->flags = VGCF_IN_KERNEL | VGCF_online;
        ctx->user_regs.rip = (uint64_t)(uintptr_t)ap_entry;
        ctx->user_regs.rsp = v->stack_top;
        ctx->user_regs.rdi = (uint64_t)(uintptr_t)v;
        ctx->user_regs.cs = FLAT_KERNEL_CS;
        ctx->user_regs.ss = FLAT_KERNEL_SS;
        ctx->user_regs.rflags = 0x2;
        for (const struct trap_info *t = k->traps; t->address; t++)
            ctx->trap_ctxt[t->vector] = *t;
        ctx->kernel_ss = FLAT_KERNEL_SS;
        ctx->kernel_sp = v->stack_top;
        ctx->ctrlreg[3] = xen_pfn_to_cr3(k->l4_mfn);
        ctx->event_callback_eip = (uint64_t)(uintptr_t)trap_32;
        ctx->failsafe_callback_eip = (uint64_t)(uintptr_t)trap_33;
        ctx->syscall_callback_eip = (uint64_t)(uintptr_t)syscall_entry;
        rc = hc_vcpu_op(VCPUOP_initialise, id, ctx);
        if (rc == 0)
            rc = hc_vcpu_op(VCPUOP_up, id, NULL);
        if (rc) {
            kprintf(k, "guest: starting vcpu %u: %ld\n", id, rc);
            break;
        }
        /* The context is reused for the next vCPU only once this one runs. */
        for (unsigned spin = 0; !__atomic_load_n(&v->online, __ATOMIC_ACQUIRE);
             spin++) {
            vcpu_yield();
            /* >= 100 s of yields: a slow host, never a lost vCPU */
            if (spin > 2000000) {
                kprintf(k, "FAIL: guest: vcpu %u never came online\n", id);
                return n;
            }
        }
        n = id + 1;
    }
    return n;
}

static int run_workload(struct kernel *k, const struct workload *w)
{
    for (unsigned i = 0; i < k->nr_vcpus; i++) {
        kmemset(k->vcpus[i].c, 0, sizeof(k->vcpus[i].c));
        k->vcpus[i].fails = 0;
    }
    kprintf(k, "%s: start vcpus=%u\n", w->name, k->nr_vcpus);
    k->work = w->run;
    __atomic_add_fetch(&k->work_gen, 1, __ATOMIC_RELEASE);
    w->run(k, &k->vcpus[0]);
    barrier_wait(k);

    char line[400];
    size_t len = (size_t)ksnprintf(line, sizeof(line), "%s:", w->name);
    uint64_t fails = 0, unexpected = 0;
    for (unsigned c = 0; w->counters[c] && c < NR_COUNTERS; c++) {
        uint64_t sum = 0;
        for (unsigned i = 0; i < k->nr_vcpus; i++)
            sum += k->vcpus[i].c[c];
        if (len < sizeof(line))
            len += (size_t)ksnprintf(line + len, sizeof(line) - len, " %s=%lu",
                                     w->counters[c], sum);
    }
    for (unsigned i = 0; i < k->nr_vcpus; i++) {
        fails += k->vcpus[i].fails;
        unexpected += k->vcpus[i].unexpected;
    }
    kprintf(k, "%s\n", line);
    if (fails || unexpected) {
        kprintf(k, "%s: FAIL (%lu failures)\n", w->name, fails + unexpected);
        return -1;
    }
    kprintf(k, "%s: pass\n", w->name);
    return 0;
}

static void print_traps(struct kernel *k)
{
    char line[400];
    size_t len = (size_t)ksnprintf(line, sizeof(line), "guest: traps");
    for (unsigned vec = 0; vec < NR_TRAP_VECTORS; vec++) {
        uint64_t sum = 0;
        for (unsigned i = 0; i < k->nr_vcpus; i++)
            sum += k->vcpus[i].traps[vec];
        if (sum && len < sizeof(line))
            len += (size_t)ksnprintf(line + len, sizeof(line) - len, " #%u=%lu",
                                     vec, sum);
    }
    kprintf(k, "%s\n", line);
}

static void map_shared_info(struct kernel *k)
{
    uint64_t maddr = k->si->shared_info;
    if (!maddr || (maddr & (XEN_PAGE_SIZE - 1)))
        return;
    uint64_t pfn = mm_alloc(k);
    if (pfn == INVALID_P2M)
        return;
    long rc = mm_set_physmap_pte(
        k, pfn, pte_make(maddr >> XEN_PAGE_SHIFT, PTE_DATA), PTE_BY_UVA);
    if (rc) {
        kprintf(k, "guest: mapping shared info %lx: %ld\n", maddr, rc);
        mm_free(k, pfn);
        return;
    }
    /* The pfn's own frame stays ours but unmapped; it is not freed. */
    k->shared = (struct shared_info *)mm_va(pfn);
}

void kernel_main(struct start_info *si, uint64_t boot_rsp)
{
    struct kernel *k = &the_kernel;
    k->si = si;
    kmemcpy(k->cmdline, si->cmd_line, sizeof(k->cmdline));
    k->cmdline[sizeof(k->cmdline) - 1] = '\0';
    k->seed = cmdline_get(k->cmdline, sizeof(k->cmdline), "seed", 1);
    k->maxphys_bits = 46;
    vcpu_setup(k, 0);
    k->nr_vcpus = 1;

    char magic[33];
    kmemcpy(magic, si->magic, 32);
    magic[32] = '\0';
    kprintf(k,
            "guest: memvisor pvkernel, start_info magic '%s' nr_pages=%lu "
            "cmdline '%s'\n",
            magic, si->nr_pages, k->cmdline);
    long ver = hc_xen_version(XENVER_version, NULL);
    kprintf(k, "guest: hypervisor version %ld.%ld seed=%lu\n", ver >> 16,
            ver & 0xffff, k->seed);

    traps_init(k);
    vcpu_install_handlers(k, &k->vcpus[0]);
    long rc = hc_vm_assist(VMASST_CMD_enable, VMASST_TYPE_writable_pagetables);
    if (rc)
        kprintf(k, "guest: vm_assist writable_pagetables: %ld\n", rc);

    if (mm_init(k, boot_rsp)) {
        kprintf(k, "guest: FAIL\n");
        guest_shutdown(SHUTDOWN_crash);
    }
    map_shared_info(k);

    unsigned want = (unsigned)cmdline_get(k->cmdline, sizeof(k->cmdline),
                                          "vcpus", MAX_VCPUS);
    k->nr_vcpus = vcpus_start(k, want ? want : 1);
    kprintf(k, "guest: %u vcpu(s) online, %lu free pages\n", k->nr_vcpus,
            k->free_count);

    static const struct workload *const all[] = {
        &work_abi,     &work_dirty,   &work_moved,      &work_ptchurn,
        &work_balloon, &work_hostile, &work_stale, &work_flushbench,
        &work_dev};
    int failed = 0, ran = 0;
    for (unsigned i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        /* `all` is every check; the benchmark, the device workload (it
         * needs device models) and the wait for a move (the workloads
         * after it then run at the destination) run only when named. */
        if (!cmdline_has(k->cmdline, sizeof(k->cmdline), all[i]->name) &&
            (!cmdline_has(k->cmdline, sizeof(k->cmdline), "all") ||
             all[i] == &work_flushbench || all[i] == &work_dev ||
             all[i] == &work_moved))
            continue;
        ran++;
        if (run_workload(k, all[i]))
            failed++;
    }
    if (!ran)
        kprintf(k, "guest: no workload on the command line (abi dirty ptchurn "
                   "balloon hostile stale all)\n");
    print_traps(k);
    if (failed) {
        kprintf(k, "guest: FAIL\n");
        guest_shutdown(SHUTDOWN_crash);
    }
    kprintf(k, "guest: pass\n");
    guest_shutdown(SHUTDOWN_poweroff);
}

/* ---- helpers shared by the workloads ---- */

uint64_t work_pfns[MAX_VCPUS][WORK_MAX_PAGES];

uint64_t cmdline_num(struct kernel *k, const char *key, uint64_t def)
{
    return cmdline_get(k->cmdline, sizeof(k->cmdline), key, def);
}

uint64_t work_alloc_pages(struct kernel *k, struct vcpu *v, uint64_t n)
{
    if (n > WORK_MAX_PAGES)
        n = WORK_MAX_PAGES;
    uint64_t got = 0;
    while (got < n) {
        uint64_t pfn = mm_alloc(k);
        if (pfn == INVALID_P2M)
            break;
        work_pfns[v->id][got++] = pfn;
    }
    return got;
}

void work_free_pages(struct kernel *k, struct vcpu *v, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++)
        mm_free(k, work_pfns[v->id][i]);
}
