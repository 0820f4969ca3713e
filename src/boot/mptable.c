/*
 * mptable.c - MultiProcessor Specification tables (mptable.h).  The
 * structures are packed little-endian byte layouts, written field by field.
 */
#include <errno.h>
#include <string.h>

#include "boot/mptable.h"

enum {
    MP_PROCESSOR = 0,
    MP_BUS = 1,
    MP_IOAPIC = 2,
    MP_IOINTR = 3,
    MP_LINTR = 4,
};
enum { MP_INT = 0, MP_NMI = 1, MP_EXTINT = 3 };

#define MP_SPEC_REV 4
#define LAPIC_VERSION 0x14
#define IOAPIC_VERSION 0x11
#define CPU_ENABLED 1
#define CPU_BSP 2
#define CPU_SIGNATURE 0x600u  /* family 6 */
#define CPU_FEATURES 0x201u   /* FPU, APIC */
#define ALL_LAPICS 0xff

struct cursor {
    uint8_t *p;
};

static void put8(struct cursor *c, uint8_t v)
{
    *c->p++ = v;
}

static void put16(struct cursor *c, uint16_t v)
{
    put8(c, (uint8_t)v);
    put8(c, (uint8_t)(v >> 8));
}

static void put32(struct cursor *c, uint32_t v)
{
    put16(c, (uint16_t)v);
    put16(c, (uint16_t)(v >> 16));
}

static void put_bytes(struct cursor *c, const char *s, size_t n)
{
    memcpy(c->p, s, n);
    c->p += n;
}

/* The byte that makes [p, p + n) sum to 0 when stored at p[at]. */
static void checksum(uint8_t *p, size_t n, size_t at)
{
    uint8_t sum = 0;

    p[at] = 0;
    for (size_t i = 0; i < n; i++)
        sum = (uint8_t)(sum + p[i]);
    p[at] = (uint8_t)-sum;
}

static void intr(struct cursor *c, uint8_t type, uint8_t kind, uint8_t bus_irq,
                 uint8_t dest, uint8_t pin)
{
    put8(c, type);
    put8(c, kind);
    put16(c, 0); /* polarity and trigger: as the bus defines */
    put8(c, 0);  /* source bus: ISA */
    put8(c, bus_irq);
    put8(c, dest);
    put8(c, pin);
}

int mptable_build(unsigned nr_cpus, uint32_t gpa, uint8_t *buf, size_t len,
                  size_t *used)
{
    size_t size;
    uint8_t *table;
    struct cursor c;

    *used = 0;
    if (nr_cpus == 0 || nr_cpus > MPTABLE_MAX_CPUS)
        return -EINVAL;
    size = MPTABLE_SIZE(nr_cpus);
    if (len < size)
        return -ENOSPC;
    memset(buf, 0, size);

    /* the floating pointer structure */
    c.p = buf;
    put_bytes(&c, "_MP_", 4);
    put32(&c, gpa + 16); /* the configuration table follows */
    put8(&c, 1);         /* length in 16-byte units */
    put8(&c, MP_SPEC_REV);
    put8(&c, 0);         /* checksum */
    put8(&c, 0);         /* feature 1: a configuration table is present */
    put8(&c, 0);         /* feature 2: no IMCR */
    c.p += 3;
    checksum(buf, 16, 10);

    /* the configuration table's header */
    table = c.p;
    put_bytes(&c, "PCMP", 4);
    put16(&c, (uint16_t)(size - 16));
    put8(&c, MP_SPEC_REV);
    put8(&c, 0); /* checksum */
    put_bytes(&c, "MEMVISOR", 8);
    put_bytes(&c, "HVM         ", 12);
    put32(&c, 0); /* no OEM table */
    put16(&c, 0);
    put16(&c, (uint16_t)(nr_cpus + 2 + MPTABLE_ISA_IRQS + 2));
    put32(&c, MPTABLE_LAPIC_BASE);
    put16(&c, 0); /* no extended table */
    put8(&c, 0);
    put8(&c, 0);

    for (unsigned i = 0; i < nr_cpus; i++) {
        put8(&c, MP_PROCESSOR);
        put8(&c, (uint8_t)i);
        put8(&c, LAPIC_VERSION);
        put8(&c, (uint8_t)(CPU_ENABLED | (i == 0 ? CPU_BSP : 0)));
        put32(&c, CPU_SIGNATURE);
        put32(&c, CPU_FEATURES);
        c.p += 8;
    }
    put8(&c, MP_BUS);
    put8(&c, 0);
    put_bytes(&c, "ISA   ", 6);
    put8(&c, MP_IOAPIC);
    put8(&c, (uint8_t)nr_cpus);
    put8(&c, IOAPIC_VERSION);
    put8(&c, 1); /* enabled */
    put32(&c, MPTABLE_IOAPIC_BASE);
    for (unsigned irq = 0; irq < MPTABLE_ISA_IRQS; irq++)
        intr(&c, MP_IOINTR, MP_INT, (uint8_t)irq, (uint8_t)nr_cpus,
             (uint8_t)irq);
    intr(&c, MP_LINTR, MP_EXTINT, 0, ALL_LAPICS, 0);
    intr(&c, MP_LINTR, MP_NMI, 0, ALL_LAPICS, 1);
    checksum(table, size - 16, 7);
    *used = size;
    return 0;
}
