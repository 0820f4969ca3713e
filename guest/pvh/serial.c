/* serial.c - COM1 (an 8250/16550 at 0x3f8) by polling, see pvh.h. */
#include <stdarg.h>

#include "klib.h"
#include "pvh.h"

#define REG_THR 0
#define REG_IER 1
#define REG_FCR 2
#define REG_LCR 3
#define REG_MCR 4
#define REG_LSR 5
#define LSR_THRE 0x20

void serial_init(void)
{
    outb(COM1 + REG_IER, 0x00); /* no interrupts */
    outb(COM1 + REG_LCR, 0x80); /* DLAB: 115200 baud */
    outb(COM1 + REG_THR, 0x01);
    outb(COM1 + REG_IER, 0x00);
    outb(COM1 + REG_LCR, 0x03); /* 8N1 */
    outb(COM1 + REG_FCR, 0x07); /* FIFOs on, cleared */
    outb(COM1 + REG_MCR, 0x03); /* DTR, RTS */
}

static void put(char c)
{
    for (unsigned i = 0; i < SERIAL_POLLS; i++)
        if (inb(COM1 + REG_LSR) & LSR_THRE)
            break;
    outb(COM1 + REG_THR, (uint8_t)c);
}

void serial_write(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\n')
            put('\r');
        put(s[i]);
    }
}

void say(const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    int n = kvsnprintf(buf, sizeof(buf) - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n > sizeof(buf) - 2)
        n = (int)sizeof(buf) - 2;
    buf[n++] = '\n';
    serial_write(buf, (size_t)n);
}
