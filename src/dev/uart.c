/*
 * uart.c - see uart.h.
 */
#include "dev/uart.h"

#include <errno.h>
#include <string.h>

#define LCR_DLAB 0x80
#define MCR_LOOP 0x10
#define LSR_DR 0x01
#define LSR_OE 0x02
#define LSR_THRE 0x20
#define LSR_TEMT 0x40
#define IER_RDA 0x01
#define IER_THRE 0x02
#define IER_RLS 0x04
#define IIR_NONE 0x01
#define IIR_RLS 0x06
#define IIR_RDA 0x04
#define IIR_THRE 0x02

void uart_init(struct uart *u, struct console *console,
               void (*irq)(void *opaque, bool level), void *opaque)
{
    memset(u, 0, sizeof(*u));
    pthread_mutex_init(&u->lock, NULL);
    u->console = console;
    u->irq = irq;
    u->opaque = opaque;
    u->dll = 12; /* 9600 baud, as a PC's firmware leaves it */
}

void uart_fini(struct uart *u)
{
    pthread_mutex_destroy(&u->lock);
}

/* The highest-priority pending enabled source, as IIR reads. */
static uint8_t iir_of(const struct uart *u)
{
    if ((u->ier & IER_RLS) && u->lsr_oe)
        return IIR_RLS;
    if ((u->ier & IER_RDA) && u->rx_len)
        return IIR_RDA;
    if ((u->ier & IER_THRE) && u->thr_ipending)
        return IIR_THRE;
    return IIR_NONE;
}

/* U1: tell irq() when the level changes. */
static void update_irq(struct uart *u)
{
    bool level = iir_of(u) != IIR_NONE;

    if (level != u->level) {
        u->level = level;
        if (u->irq)
            u->irq(u->opaque, level);
    }
}

static void rx_push(struct uart *u, uint8_t c)
{
    if (u->rx_len == UART_RXQ) {
        u->lsr_oe = 1;
        return;
    }
    u->rxq[(u->rx_head + u->rx_len) % UART_RXQ] = c;
    u->rx_len++;
    u->rx_bytes++;
}

static uint8_t msr_of(const struct uart *u)
{
    uint8_t m = u->mcr;

    if (!(m & MCR_LOOP))
        return 0xb0; /* DCD, DSR, CTS */
    /* loopback: RTS->CTS, DTR->DSR, OUT1->RI, OUT2->DCD */
    return (uint8_t)(((m & 0x02) << 3) | ((m & 0x01) << 5) |
                     ((m & 0x04) << 4) | ((m & 0x08) << 4));
}

int uart_io(struct uart *u, unsigned off, bool write, uint8_t *val)
{
    if (off > 7)
        return -EINVAL;
    pthread_mutex_lock(&u->lock);
    u->accesses++;
    bool dlab = u->lcr & LCR_DLAB;
    if (write) {
        uint8_t v = *val;

        switch (off) {
        case 0:
            if (dlab) {
                u->dll = v;
                break;
            }
            if (u->mcr & MCR_LOOP) {
                rx_push(u, v);
            } else {
                char c = (char)v;

                if (u->console)
                    console_write(u->console, &c, 1);
                u->tx_bytes++;
            }
            u->thr_ipending = true; /* sent at once: empty again */
            break;
        case 1:
            if (dlab) {
                u->dlm = v;
                break;
            }
            /* enabling the THR-empty interrupt while empty raises it */
            if ((v & IER_THRE) && !(u->ier & IER_THRE))
                u->thr_ipending = true;
            u->ier = v & 0x0f;
            break;
        case 2:
            break; /* FCR: no FIFO */
        case 3:
            u->lcr = v;
            break;
        case 4:
            u->mcr = v & 0x1f;
            break;
        case 5:
        case 6:
            break; /* read-only (factory test writes ignored) */
        case 7:
            u->scr = v;
            break;
        }
    } else {
        uint8_t v = 0;

        switch (off) {
        case 0:
            if (dlab) {
                v = u->dll;
            } else if (u->rx_len) {
                v = u->rxq[u->rx_head];
                u->rx_head = (u->rx_head + 1) % UART_RXQ;
                u->rx_len--;
            }
            break;
        case 1:
            v = dlab ? u->dlm : u->ier;
            break;
        case 2:
            v = iir_of(u);
            if (v == IIR_THRE)
                u->thr_ipending = false; /* acknowledged by the read */
            break;
        case 3:
            v = u->lcr;
            break;
        case 4:
            v = u->mcr;
            break;
        case 5:
            v = LSR_THRE | LSR_TEMT | (u->rx_len ? LSR_DR : 0) |
                (u->lsr_oe ? LSR_OE : 0);
            u->lsr_oe = 0;
            break;
        case 6:
            v = msr_of(u);
            break;
        case 7:
            v = u->scr;
            break;
        }
        *val = v;
    }
    update_irq(u);
    pthread_mutex_unlock(&u->lock);
    return 0;
}

size_t uart_input(struct uart *u, const char *buf, size_t len)
{
    size_t n = 0;

    pthread_mutex_lock(&u->lock);
    while (n < len && u->rx_len < UART_RXQ)
        rx_push(u, (uint8_t)buf[n++]);
    update_irq(u);
    pthread_mutex_unlock(&u->lock);
    return n;
}

void uart_get_state(struct uart *u, struct uart_state *out)
{
    pthread_mutex_lock(&u->lock);
    *out = (struct uart_state){u->ier, u->lcr, u->mcr, u->lsr_oe, u->scr,
                               u->dll, u->dlm, u->thr_ipending, u->rx_len,
                               {0}};
    for (unsigned i = 0; i < u->rx_len; i++)
        out->rx[i] = u->rxq[(u->rx_head + i) % UART_RXQ];
    pthread_mutex_unlock(&u->lock);
}

int uart_set_state(struct uart *u, const struct uart_state *in)
{
    if (in->rx_len > UART_RXQ)
        return -EINVAL;
    pthread_mutex_lock(&u->lock);
    u->ier = in->ier & 0x0f;
    u->lcr = in->lcr;
    u->mcr = in->mcr & 0x1f;
    u->lsr_oe = in->lsr_oe ? 1 : 0;
    u->scr = in->scr;
    u->dll = in->dll;
    u->dlm = in->dlm;
    u->thr_ipending = in->thr_ipending;
    u->rx_head = 0;
    u->rx_len = in->rx_len;
    memcpy(u->rxq, in->rx, in->rx_len);
    u->level = iir_of(u) != IIR_NONE;
    pthread_mutex_unlock(&u->lock);
    return 0;
}

int uart_check(struct uart *u)
{
    int r = 0;

    pthread_mutex_lock(&u->lock);
    if (u->rx_len > UART_RXQ || u->rx_head >= UART_RXQ)
        r = -EUCLEAN;
    if (u->level != (iir_of(u) != IIR_NONE))
        r = -EUCLEAN;
    pthread_mutex_unlock(&u->lock);
    return r;
}
