/*
 * builder.c - see builder.h.
 */
#include "boot/builder.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/range.h"
#include "xen/xen.h"

#define MAPPING_SLACK (512ULL << 10)
#define MAPPING_ALIGN (4ULL << 20)

static int fail(struct boot_result *r, int err, const char *fmt, ...)
    __printf(3, 4);
static int fail(struct boot_result *r, int err, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(r->error, sizeof(r->error), fmt, ap);
    va_end(ap);
    return err;
}

void boot_hypercall_stub(unsigned nr, uint8_t out[32])
{
    unsigned i = 0;

    memset(out, 0xcc, 32); /* never executed: callers enter at +0 only */
    if (nr == __HYPERVISOR_iret) {
        out[i++] = 0x51;                   /* push %rcx */
        out[i++] = 0x41, out[i++] = 0x53;  /* push %r11 */
        out[i++] = 0x50;                   /* push %rax */
    }
    out[i++] = 0xb8;                       /* mov $nr, %eax */
    out[i++] = nr & 0xff;
    out[i++] = (nr >> 8) & 0xff;
    out[i++] = 0;
    out[i++] = 0;
    out[i++] = 0xcd, out[i++] = BOOT_HYPERCALL_VECTOR; /* int $4 */
    if (nr == __HYPERVISOR_iret)
        out[i++] = 0x0f, out[i++] = 0x0b;  /* ud2: iret never returns */
    else
        out[i++] = 0xc3;                   /* ret */
}

/* How many tables of each level map [va, va + len). */
static uint64_t tables_for(uint64_t va, uint64_t len, unsigned shift)
{
    uint64_t first = va >> shift, last = (va + len - 1) >> shift;
    return last - first + 1;
}

static uint64_t idx(uint64_t va, unsigned level)
{
    return (va >> (12 + 9 * (level - 1))) & 511;
}

struct layout {
    uint64_t mod_pfn, mod_pages;
    uint64_t kern_pages, p2m_pfn, p2m_pages, si_pfn, pt_pfn, nr_pt, stack_pfn,
        mapped_pages;
};

static int plan(const struct boot_params *p, struct boot_result *r,
                struct layout *l)
{
    const struct elf_kernel *k = &r->kernel;
    uint64_t vb = k->virt_base;

    l->kern_pages = DIV_ROUND_UP(k->vend - vb, PAGE_SIZE);
    l->mod_pfn = l->kern_pages;
    l->mod_pages = DIV_ROUND_UP((uint64_t)p->module_size, PAGE_SIZE);
    if (l->mod_pages > p->nr_pages)
        return fail(r, -ENOMEM, "the module does not fit in memory");
    l->p2m_pfn = l->mod_pfn + l->mod_pages;
    l->p2m_pages = DIV_ROUND_UP(p->nr_pages * 8, PAGE_SIZE);
    l->si_pfn = l->p2m_pfn + l->p2m_pages;
    l->pt_pfn = l->si_pfn + 3; /* then the xenstore and console pages */
    l->nr_pt = 1;
    for (unsigned iter = 0; iter < 8; iter++) {
        uint64_t end = (l->pt_pfn + l->nr_pt + 1) * PAGE_SIZE + MAPPING_SLACK;
        uint64_t len = ALIGN_UP(vb + end, MAPPING_ALIGN) - vb;
        uint64_t nr = 1 + tables_for(vb, len, 39) + tables_for(vb, len, 30) +
                      tables_for(vb, len, 21);

        l->mapped_pages = len / PAGE_SIZE;
        if (nr == l->nr_pt)
            break;
        l->nr_pt = nr;
    }
    l->stack_pfn = l->pt_pfn + l->nr_pt;
    if (l->mapped_pages > p->nr_pages)
        return fail(r, -ENOMEM,
                    "%llu pages of memory, the start-of-day region needs %llu",
                    (unsigned long long)p->nr_pages,
                    (unsigned long long)l->mapped_pages);
    return 0;
}

static void *pfn_ptr(struct pv_domain *d, const mfn_t *p2m, uint64_t pfn)
{
    return frames_ptr(d->f, p2m[pfn]);
}

static void load_segments(struct pv_domain *d, const mfn_t *p2m,
                          const struct boot_params *p,
                          const struct elf_kernel *k)
{
    for (unsigned s = 0; s < k->nr_seg; s++) {
        const struct elf_segment *sg = &k->seg[s];
        for (uint64_t done = 0; done < sg->filesz;) {
            uint64_t va = sg->vaddr + done;
            uint64_t pfn = (va - k->virt_base) >> PAGE_SHIFT;
            uint64_t off = va & (PAGE_SIZE - 1);
            uint64_t n = MIN(PAGE_SIZE - off, sg->filesz - done);

            memcpy((uint8_t *)pfn_ptr(d, p2m, pfn) + off,
                   p->image + sg->offset + done, n);
            done += n;
        }
    }
}

static int set_m2p(struct pv_vcpu *v, const mfn_t *p2m, uint64_t nr)
{
    struct mmu_update req[256];

    for (uint64_t base = 0; base < nr; base += ARRAY_SIZE(req)) {
        uint32_t n = (uint32_t)MIN((uint64_t)ARRAY_SIZE(req), nr - base);
        uint32_t done = 0;
        int rc;

        for (uint32_t i = 0; i < n; i++) {
            req[i].ptr = (mfn_x(p2m[base + i]) << PAGE_SHIFT) |
                         MMU_MACHPHYS_UPDATE;
            req[i].val = base + i;
        }
        do
            rc = pv_mmu_update(v, req, n, &done, DOMID_SELF);
        while (rc == -ERESTART);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static void build_tables(struct pv_domain *d, const mfn_t *p2m,
                         const struct layout *l, uint64_t vb)
{
    uint64_t next = l->pt_pfn + 1; /* pt_pfn is the L4 */
    uint64_t *l4 = pfn_ptr(d, p2m, l->pt_pfn);
    const uint64_t table = PTE_P | PTE_RW | PTE_US | PTE_A | PTE_D;

    for (uint64_t pfn = 0; pfn < l->mapped_pages; pfn++) {
        uint64_t va = vb + pfn * PAGE_SIZE;
        uint64_t *t = l4;
        for (unsigned level = 4; level > 1; level--) {
            uint64_t *e = &t[idx(va, level)];
            if (!(*e & PTE_P)) {
                BUG_ON(next >= l->pt_pfn + l->nr_pt);
                *e = (mfn_x(p2m[next]) << PAGE_SHIFT) | table;
                next++;
            }
            t = frames_ptr(d->f, pte_mfn(*e));
        }
        uint64_t flags = PTE_P | PTE_US | PTE_A;
        if (pfn < l->pt_pfn || pfn >= l->pt_pfn + l->nr_pt)
            flags |= PTE_RW | PTE_D; /* page tables stay read-only */
        t[idx(va, 1)] = (mfn_x(p2m[pfn]) << PAGE_SHIFT) | flags;
    }
    BUG_ON(next != l->pt_pfn + l->nr_pt);
}

static uint64_t k_va(const struct boot_result *r, uint64_t pfn)
{
    return r->kernel.virt_base + pfn * PAGE_SIZE;
}

static void fill_start_info(struct pv_domain *d, const mfn_t *p2m,
                            const struct boot_params *p,
                            const struct layout *l, struct boot_result *r)
{
    struct start_info *si = pfn_ptr(d, p2m, l->si_pfn);

    snprintf(si->magic, sizeof(si->magic), "xen-3.0-x86_64");
    si->nr_pages = p->nr_pages;
    si->shared_info = mfn_x(r->shared_info) << PAGE_SHIFT;
    si->pt_base = r->pt_base_va;
    si->nr_pt_frames = l->nr_pt;
    si->mfn_list = r->p2m_va;
    si->store_mfn = mfn_x(p2m[l->si_pfn + 1]);
    si->store_evtchn = p->store_evtchn;
    si->console.domU.mfn = mfn_x(p2m[l->si_pfn + 2]);
    si->console.domU.evtchn = p->console_evtchn;
    r->store = p2m[l->si_pfn + 1];
    r->console = p2m[l->si_pfn + 2];
    if (p->module_size) {
        si->mod_start = k_va(r, l->mod_pfn);
        si->mod_len = p->module_size;
    }
    if (p->cmdline)
        snprintf(si->cmd_line, sizeof(si->cmd_line), "%s", p->cmdline);
}

int boot_build(struct pv_domain *d, struct pv_vcpu *v0,
               const struct boot_params *p, struct boot_result *r)
{
    struct layout l = {0};
    mfn_t *p2m = NULL;
    uint64_t vb;
    int rc;

    memset(r, 0, sizeof(*r));
    rc = elf_parse(p->image, p->size, &r->kernel);
    if (rc < 0) {
        memcpy(r->error, r->kernel.error, sizeof(r->error));
        return rc;
    }
    if (p->nr_pages == 0 || p->nr_pages > d->f->nr_frames)
        return fail(r, -ENOMEM, "bad memory size");
    vb = r->kernel.virt_base;
    if ((rc = plan(p, r, &l)) < 0)
        return rc;
    p2m = calloc(p->nr_pages, sizeof(*p2m));
    if (!p2m)
        return fail(r, -ENOMEM, "no memory for the p2m");
    for (uint64_t pfn = 0; pfn < p->nr_pages; pfn++) {
        rc = frames_alloc(d->f, d->id, 0, &p2m[pfn]);
        if (rc < 0) {
            fail(r, rc, "allocating pfn %llu: %s", (unsigned long long)pfn,
                 strerror(-rc));
            goto out;
        }
    }
    if ((rc = frames_alloc(d->f, d->id, 0, &r->shared_info)) < 0) {
        fail(r, rc, "allocating the shared info page");
        goto out;
    }
    if ((rc = set_m2p(v0, p2m, p->nr_pages)) < 0) {
        fail(r, rc, "m2p update: %s", strerror(-rc));
        goto out;
    }

    load_segments(d, p2m, p, &r->kernel);
    for (uint64_t done = 0; done < p->module_size; done += PAGE_SIZE)
        memcpy(pfn_ptr(d, p2m, l.mod_pfn + done / PAGE_SIZE),
               p->module + done, MIN(PAGE_SIZE, p->module_size - done));
    for (uint64_t pfn = 0; pfn < p->nr_pages; pfn++) {
        uint64_t *list = pfn_ptr(d, p2m, l.p2m_pfn + pfn / 512);
        list[pfn % 512] = mfn_x(p2m[pfn]);
    }
    if (r->kernel.has_hypercall_page) {
        uint64_t pfn = (r->kernel.hypercall_page - vb) >> PAGE_SHIFT;
        uint8_t *page = pfn_ptr(d, p2m, pfn);
        for (unsigned nr = 0; nr < PAGE_SIZE / 32; nr++)
            boot_hypercall_stub(nr, page + 32 * nr);
    }
    r->entry = r->kernel.entry;
    r->p2m_va = vb + l.p2m_pfn * PAGE_SIZE;
    r->start_info_va = vb + l.si_pfn * PAGE_SIZE;
    r->pt_base_va = vb + l.pt_pfn * PAGE_SIZE;
    r->nr_pt_frames = l.nr_pt;
    r->stack_top = vb + (l.stack_pfn + 1) * PAGE_SIZE;
    r->mapped_end = vb + l.mapped_pages * PAGE_SIZE;
    r->nr_pages = p->nr_pages;
    r->first_free_pfn = l.stack_pfn + 1;
    r->l4 = p2m[l.pt_pfn];
    fill_start_info(d, p2m, p, &l, r);
    build_tables(d, p2m, &l, vb);

    /* Validate and pin through the pv code, then make it vCPU 0's base. */
    {
        struct mmuext_op ops[2] = {
            {.cmd = MMUEXT_PIN_L4_TABLE, .arg1.mfn = mfn_x(r->l4)},
            {.cmd = MMUEXT_NEW_BASEPTR, .arg1.mfn = mfn_x(r->l4)},
        };
        uint32_t done = 0;

        do
            rc = pv_mmuext_op(v0, ops, 2, &done, DOMID_SELF);
        while (rc == -ERESTART);
        if (rc < 0) {
            fail(r, rc, "pinning the bootstrap L4 (op %u): %s", done,
                 strerror(-rc));
            goto out;
        }
    }
    rc = 0;
out:
    free(p2m);
    return rc;
}
