/*
 * shim.c - building the shim's frames and tables, and reading and writing
 * the frames its stubs leave on the per-vCPU stacks (see shim.h).
 */
#include "shim/shim.h"

#include <errno.h>
#include <string.h>

extern const uint8_t shim_image_bytes[];
extern const uint64_t shim_image_bytes_size;

#define PTE_P 0x001ULL
#define PTE_RW 0x002ULL
#define PTE_A 0x020ULL
#define PTE_D 0x040ULL
#define PTE_PSE 0x080ULL
#define PTE_NX (1ULL << 63)

#define MSR_STAR 0xc0000081
#define MSR_LSTAR 0xc0000082
#define MSR_CSTAR 0xc0000083
#define MSR_SFMASK 0xc0000084

const uint8_t *shim_image(uint64_t *size)
{
    *size = shim_image_bytes_size;
    return shim_image_bytes;
}

bool shim_vector_has_error(unsigned vector)
{
    switch (vector) {
    case 8: case 10: case 11: case 12: case 13: case 14: case 17: case 21:
    case 29: case 30:
        return true;
    default:
        return false;
    }
}

static uint64_t *page(const struct shim *s, mfn_t m)
{
    return frames_ptr(s->frames, m);
}

static uint64_t va_index(uint64_t va, unsigned level)
{
    return (va >> (12 + 9 * (level - 1))) & 511;
}

static void map(struct shim *s, uint64_t va, mfn_t m, uint64_t flags)
{
    page(s, s->l1)[va_index(va, 1)] = (mfn_x(m) << PAGE_SHIFT) | flags;
}

static uint64_t gate(uint64_t target, unsigned dpl)
{
    /* low qword of a 64-bit interrupt gate: offset 15:0, selector,
     * IST 0, type 0xE, DPL, present, offset 31:16 */
    return (target & 0xffff) | ((uint64_t)SHIM_SEL_CS0 << 16) |
           (0xeULL << 40) | ((uint64_t)dpl << 45) | (1ULL << 47) |
           ((target & 0xffff0000ULL) << 32);
}

static void build_idt(struct shim *s)
{
    uint64_t *idt = page(s, s->idt);

    for (unsigned v = 0; v < 256; v++) {
        unsigned entry = v < 32 ? v : SHIM_ENTRY_IRQ;
        uint64_t stub = SHIM_VA_CODE + SHIM_OFF_VECTORS + 8 * entry;
        /* #BP and the hypercall vector are reachable by `int3`/`int $4`
         * from ring 3; every other gate only by the CPU. */
        unsigned dpl = (v == 3 || v == SHIM_ENTRY_HYPERCALL) ? 3 : 0;

        idt[2 * v] = gate(stub, dpl);
        idt[2 * v + 1] = stub >> 32;
    }
}

static void build_gdt(struct shim *s)
{
    uint64_t *gdt = page(s, s->gdt);

    gdt[0] = 0;
    gdt[SHIM_SEL_CS0 >> 3] = 0x00af9b000000ffffULL;   /* ring-0 code64 */
    gdt[SHIM_SEL_DS0 >> 3] = 0x00cf93000000ffffULL;   /* ring-0 data */
    gdt[SHIM_SEL_CS32_3 >> 3] = 0x00cffb000000ffffULL; /* ring-3 code32 */
    gdt[SHIM_SEL_DS3 >> 3] = 0x00cff3000000ffffULL;   /* ring-3 data */
    gdt[SHIM_SEL_CS3 >> 3] = 0x00affb000000ffffULL;   /* ring-3 code64 */
    for (unsigned i = 0; i < s->nr_vcpus; i++) {
        uint64_t base = SHIM_VA_PERCPU(i);
        uint64_t limit = 0x67;
        unsigned idx = SHIM_SEL_TSS(i) >> 3;

        /* available 64-bit TSS (type 9), present, DPL 0 */
        gdt[idx] = (limit & 0xffff) | ((base & 0xffffff) << 16) |
                   (0x89ULL << 40) | (((base >> 24) & 0xff) << 56);
        gdt[idx + 1] = base >> 32;
    }
}

static void build_percpu(struct shim *s, unsigned i)
{
    uint8_t *p = frames_ptr(s->frames, s->percpu[i]);
    uint64_t rsp0 = SHIM_VA_PERCPU(i) + SHIM_PERCPU_STACK_TOP;

    memcpy(p, shim_image_bytes + SHIM_OFF_PERCPU, SHIM_PERCPU_TEMPLATE_SIZE);
    /* 64-bit TSS: reserved u32, rsp0 at +4; I/O map base at +102 beyond
     * the limit, so every port is denied to ring 3. */
    memset(p, 0, 0x68);
    memcpy(p + 4, &rsp0, 8);
    uint16_t iomap = 0x68;
    memcpy(p + 102, &iomap, 2);
}

int shim_init(struct shim *s, struct frames *f, domid_t owner,
              unsigned nr_vcpus)
{
    mfn_t *all[7 + SHIM_MAX_VCPUS + SHIM_DIRECTMAP_MAX_L2];
    unsigned n = 0, done = 0;
    int r;

    BUILD_BUG_ON(SHIM_OFF_PERCPU + SHIM_PERCPU_TEMPLATE_SIZE > PAGE_SIZE);
    BUILD_BUG_ON(SHIM_PERCPU_TOUCH + 8 * SHIM_TOUCH_MAX + 64 >
                 SHIM_PERCPU_STACK_TOP);
    if (nr_vcpus == 0 || nr_vcpus > SHIM_MAX_VCPUS)
        return -EINVAL;
    if (shim_image_bytes_size != SHIM_OFF_PERCPU + SHIM_PERCPU_TEMPLATE_SIZE)
        return -EINVAL;
    memset(s, 0, sizeof(*s));
    s->frames = f;
    s->owner = owner;
    s->nr_vcpus = nr_vcpus;
    all[n++] = &s->image;
    all[n++] = &s->idt;
    all[n++] = &s->gdt;
    all[n++] = &s->l3;
    all[n++] = &s->l2;
    all[n++] = &s->l1;
    for (unsigned i = 0; i < nr_vcpus; i++)
        all[n++] = &s->percpu[i];
    s->nr_dm_l2 = (unsigned)DIV_ROUND_UP(f->nr_frames, 512ULL * 512);
    if (s->nr_dm_l2 > SHIM_DIRECTMAP_MAX_L2)
        return -EINVAL;
    all[n++] = &s->dm_l3;
    for (unsigned i = 0; i < s->nr_dm_l2; i++)
        all[n++] = &s->dm_l2[i];
    for (done = 0; done < n; done++) {
        r = frames_alloc(f, owner, 0, all[done]);
        if (r < 0)
            goto fail;
    }

    memcpy(page(s, s->image), shim_image_bytes, shim_image_bytes_size);
    build_idt(s);
    build_gdt(s);
    for (unsigned i = 0; i < nr_vcpus; i++)
        build_percpu(s, i);

    page(s, s->l3)[va_index(SHIM_VA_BASE, 3)] =
        (mfn_x(s->l2) << PAGE_SHIFT) | PTE_P | PTE_RW | PTE_A;
    page(s, s->l2)[va_index(SHIM_VA_BASE, 2)] =
        (mfn_x(s->l1) << PAGE_SHIFT) | PTE_P | PTE_RW | PTE_A;
    map(s, SHIM_VA_CODE, s->image, PTE_P | PTE_A);
    map(s, SHIM_VA_IDT, s->idt, PTE_P | PTE_A | PTE_NX);
    map(s, SHIM_VA_GDT, s->gdt, PTE_P | PTE_RW | PTE_A | PTE_D | PTE_NX);
    for (unsigned i = 0; i < nr_vcpus; i++)
        map(s, SHIM_VA_PERCPU(i), s->percpu[i], PTE_P | PTE_RW | PTE_A | PTE_D);
    /* The direct map of the pool: 2 MiB pages, supervisor, no execute. */
    for (unsigned i = 0; i < s->nr_dm_l2; i++) {
        uint64_t *l2 = page(s, s->dm_l2[i]);
        page(s, s->dm_l3)[i] =
            (mfn_x(s->dm_l2[i]) << PAGE_SHIFT) | PTE_P | PTE_RW | PTE_A;
        for (unsigned j = 0; j < 512; j++) {
            uint64_t first = ((uint64_t)i * 512 + j) * 512;
            if (first >= f->nr_frames)
                break;
            l2[j] = (first << PAGE_SHIFT) | PTE_P | PTE_RW | PTE_A | PTE_D |
                    PTE_PSE | PTE_NX;
        }
    }
    return 0;

fail:
    while (done-- > 0) {
        int e = frame_put_alloc_ref(f, *all[done]);
        BUG_ON(e < 0);
    }
    memset(s, 0, sizeof(*s));
    return r;
}

void shim_fini(struct shim *s)
{
    mfn_t all[6] = {s->image, s->idt, s->gdt, s->l3, s->l2, s->l1};

    if (!s->frames)
        return;
    for (unsigned i = 0; i < 6; i++)
        BUG_ON(frame_put_alloc_ref(s->frames, all[i]) < 0);
    BUG_ON(frame_put_alloc_ref(s->frames, s->dm_l3) < 0);
    for (unsigned i = 0; i < s->nr_dm_l2; i++)
        BUG_ON(frame_put_alloc_ref(s->frames, s->dm_l2[i]) < 0);
    for (unsigned i = 0; i < s->nr_vcpus; i++)
        BUG_ON(frame_put_alloc_ref(s->frames, s->percpu[i]) < 0);
    memset(s, 0, sizeof(*s));
}

uint64_t shim_l4e(const struct shim *s)
{
    return (mfn_x(s->l3) << PAGE_SHIFT) | PTE_P | PTE_RW | PTE_A;
}

static uint64_t *stack_slot(struct shim *s, unsigned i, uint64_t va)
{
    uint8_t *p = frames_ptr(s->frames, s->percpu[i]);
    return (uint64_t *)(void *)(p + (va - SHIM_VA_PERCPU(i)));
}

uint64_t shim_l4e_directmap(const struct shim *s)
{
    return (mfn_x(s->dm_l3) << PAGE_SHIFT) | PTE_P | PTE_RW | PTE_A;
}

void shim_touch(struct shim *s, unsigned i, const uint64_t *maddrs, unsigned n,
                struct kvm_vcpu_regs *regs)
{
    uint64_t *list = stack_slot(s, i, SHIM_VA_PERCPU(i) + SHIM_PERCPU_TOUCH);

    BUG_ON(n > SHIM_TOUCH_MAX || i >= s->nr_vcpus);
    for (unsigned k = 0; k < n; k++)
        list[k] = (maddrs[k] & SHIM_TOUCH_PAGE)
                      ? (SHIM_VA_DIRECTMAP + (maddrs[k] & PAGE_MASK)) |
                            SHIM_TOUCH_PAGE
                      : SHIM_VA_DIRECTMAP + (maddrs[k] & ~7ULL);
    regs->rsi = SHIM_VA_PERCPU(i) + SHIM_PERCPU_TOUCH;
    regs->rcx = n;
    regs->rip = SHIM_VA_CODE + SHIM_OFF_TOUCH;
}

static void seg(struct kvm_vcpu_segment *sg, uint16_t sel, uint8_t type,
                bool code)
{
    memset(sg, 0, sizeof(*sg));
    sg->selector = sel;
    sg->base = 0;
    sg->limit = 0xffffffff;
    sg->type = type;
    sg->present = 1;
    sg->dpl = sel & 3;
    sg->s = 1;
    sg->g = 1;
    if (code)
        sg->l = 1;
    else
        sg->db = 1;
}

void shim_vcpu_sregs(const struct shim *s, unsigned i, uint64_t cr3,
                     struct kvm_vcpu_sregs *sr)
{
    memset(sr, 0, sizeof(*sr));
    seg(&sr->cs, SHIM_SEL_CS0, 0xb, true);
    seg(&sr->ds, SHIM_SEL_DS0, 0x3, false);
    sr->es = sr->ds;
    sr->fs = sr->ds;
    sr->gs = sr->ds;
    sr->ss = sr->ds;
    memset(&sr->tr, 0, sizeof(sr->tr));
    sr->tr.selector = SHIM_SEL_TSS(i);
    sr->tr.base = SHIM_VA_PERCPU(i);
    sr->tr.limit = 0x67;
    sr->tr.type = 0xb; /* busy 64-bit TSS */
    sr->tr.present = 1;
    sr->ldt.unusable = 1;
    sr->gdt.base = SHIM_VA_GDT;
    sr->gdt.limit = SHIM_SEL_TSS(s->nr_vcpus) - 1;
    sr->idt.base = SHIM_VA_IDT;
    sr->idt.limit = 256 * 16 - 1;
    sr->cr0 = 0x80010033; /* PG WP NE ET MP PE */
    sr->cr4 = 0x620;      /* PAE OSFXSR OSXMMEXCPT */
    sr->cr3 = cr3;
    sr->efer = 0xd01;     /* NXE LMA LME SCE */
}

unsigned shim_vcpu_msrs(const struct shim *s, unsigned i, uint32_t idx[8],
                        uint64_t val[8])
{
    (void)s;
    idx[0] = MSR_LSTAR;
    val[0] = SHIM_VA_PERCPU(i) + SHIM_PERCPU_SYSCALL;
    idx[1] = MSR_CSTAR;
    val[1] = val[0];
    /* SYSRET is never used; kernel CS 0x08, user base 0x18 (0x2b/0x23) */
    idx[2] = MSR_STAR;
    val[2] = ((uint64_t)(SHIM_SEL_CS32_3 & ~3) << 48) |
             ((uint64_t)SHIM_SEL_CS0 << 32);
    /* TF DF IF NT, as Xen masks on SYSCALL entry */
    idx[3] = MSR_SFMASK;
    val[3] = 0x4700;
    return 4;
}

void shim_resume(struct shim *s, unsigned i, const struct shim_frame *to,
                 struct kvm_vcpu_regs *regs)
{
    uint64_t top = SHIM_VA_PERCPU(i) + SHIM_PERCPU_STACK_TOP;
    uint64_t *f = stack_slot(s, i, top - sizeof(*to));

    BUG_ON(i >= s->nr_vcpus);
    f[0] = to->rip;
    f[1] = to->cs;
    f[2] = to->rflags;
    f[3] = to->rsp;
    f[4] = to->ss;
    regs->rsp = top - sizeof(*to);
    regs->rip = SHIM_VA_CODE + SHIM_OFF_RESUME;
}

void shim_vcpu_start(struct shim *s, unsigned i, const struct shim_frame *to,
                     struct kvm_vcpu_regs *regs)
{
    memset(regs, 0, sizeof(*regs));
    regs->rflags = SHIM_RFLAGS_FIXED;
    shim_resume(s, i, to, regs);
    regs->rip = SHIM_VA_CODE + SHIM_OFF_START;
}

static bool table_supervisor(const struct shim *s, mfn_t t, unsigned levels)
{
    const uint64_t *e = page(s, t);

    for (unsigned i = 0; i < 512; i++) {
        if (!(e[i] & PTE_P))
            continue;
        if (e[i] & 0x4ULL) /* U */
            return false;
        if (levels > 1 && !(e[i] & PTE_PSE) &&
            !table_supervisor(s, _mfn((e[i] & 0x000ffffffffff000ULL) >>
                                      PAGE_SHIFT),
                              levels - 1))
            return false;
    }
    return true;
}

int shim_check(const struct shim *s)
{
    const uint64_t *idt = page(s, s->idt);

    if (memcmp(page(s, s->image), shim_image_bytes, shim_image_bytes_size))
        return -EUCLEAN;
    for (unsigned v = 0; v < 256; v++) {
        unsigned entry = v < 32 ? v : SHIM_ENTRY_IRQ;
        uint64_t stub = SHIM_VA_CODE + SHIM_OFF_VECTORS + 8 * entry;
        unsigned dpl = (v == 3 || v == SHIM_ENTRY_HYPERCALL) ? 3 : 0;
        if (idt[2 * v] != gate(stub, dpl) || idt[2 * v + 1] != stub >> 32)
            return -EUCLEAN;
    }
    if (!table_supervisor(s, s->l3, 3) || !table_supervisor(s, s->dm_l3, 2))
        return -EUCLEAN;
    for (unsigned i = 0; i < s->nr_vcpus; i++) {
        const uint8_t *p = frames_ptr(s->frames, s->percpu[i]);
        uint64_t rsp0;
        memcpy(&rsp0, p + 4, 8);
        if (rsp0 != SHIM_VA_PERCPU(i) + SHIM_PERCPU_STACK_TOP)
            return -EUCLEAN;
    }
    return 0;
}

int shim_port_entry(uint16_t port, uint8_t size, bool out)
{
    if (!out || size != 1 || port < SHIM_PORT_BASE ||
        port >= SHIM_PORT_BASE + SHIM_NR_ENTRIES)
        return -1;
    return port - SHIM_PORT_BASE;
}

int shim_event_read(struct shim *s, unsigned i, unsigned entry, uint64_t rsp,
                    struct shim_event *ev)
{
    uint64_t top = SHIM_VA_PERCPU(i) + SHIM_PERCPU_STACK_TOP;
    uint64_t want;
    uint64_t *f;

    if (i >= s->nr_vcpus || entry >= SHIM_NR_ENTRIES)
        return -EINVAL;
    memset(ev, 0, sizeof(*ev));
    ev->entry = entry;
    ev->has_error = entry < 32 && shim_vector_has_error(entry);
    /* The CPU aligns the stack to 16 before pushing a ring-3 frame; a frame
     * anywhere else means the event came from ring 0 (a nested event in the
     * shim), which only a shim bug can cause. */
    want = top - sizeof(struct shim_frame) - (ev->has_error ? 8 : 0);
    if (rsp != want)
        return -EINVAL;
    f = stack_slot(s, i, rsp);
    if (ev->has_error)
        ev->error = *f++;
    ev->frame.rip = f[0];
    ev->frame.cs = f[1];
    ev->frame.rflags = f[2];
    ev->frame.rsp = f[3];
    ev->frame.ss = f[4];
    if (entry == SHIM_ENTRY_SYSCALL) {
        /* The hardware path: a SYSCALL that entered ring 0 at LSTAR; no
         * frame was pushed, the entry saved the user RSP. */
        ev->frame.rsp = shim_saved_rsp(s, i);
    }
    return 0;
}

uint64_t shim_saved_rsp(struct shim *s, unsigned i)
{
    return *stack_slot(s, i, SHIM_VA_PERCPU(i) + SHIM_PERCPU_SAVED_RSP);
}
