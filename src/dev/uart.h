/*
 * uart.h - an 8250 serial port (the PC's COM1 at 0x3F8, IRQ 4) as a guest
 * sees it: eight registers, no FIFO (a 16450: IIR bits 7-6 read 0), the
 * divisor latch behind LCR.DLAB, loopback, and one interrupt line.
 *
 * Owns: the register state, a receive queue of UART_RXQ bytes (the
 * keyboard side: uart_input()), and the level of its interrupt line.
 * Transmitted bytes go to a console (dev/console.h) as they are written:
 * the transmitter is always empty again at once (LSR THRE and TEMT stay
 * set), so a guest polling LSR never waits.
 *
 * Registers (offset from the base; DLAB = LCR bit 7):
 *   0  read RBR (next received byte; DR clears when the queue is empty),
 *      write THR (to the console; in loopback back into the receiver);
 *      DLAB: DLL
 *   1  IER (bits 0-3: received data, THR empty, line status, modem
 *      status); DLAB: DLM
 *   2  read IIR (0x01 none, 0x06 line status, 0x04 received data, 0x02
 *      THR empty, 0x00 modem status; reading 0x02 acknowledges it),
 *      write FCR (ignored: no FIFO)
 *   3  LCR   4  MCR (bit 4 loopback)   5  LSR (DR 0x01, OE 0x02, THRE
 *      0x20, TEMT 0x40; reading clears OE)   6  MSR (CTS, DSR, DCD set; in
 *      loopback the MCR's RTS, DTR, OUT1, OUT2 as CTS, DSR, RI, DCD)
 *   7  SCR (scratch)
 *
 * Invariants:
 *  U1. The interrupt line is high iff IIR would not read "none": an enabled
 *      source is pending (received data with IER bit 0, a THR-empty event
 *      with IER bit 1, an overrun with IER bit 2); irq() is called exactly
 *      when the level changes, outside no lock of the caller's.
 *  U2. The receive queue holds at most UART_RXQ bytes; input beyond that
 *      is not taken (uart_input() says how much was).
 *  U3. Any access, at any offset and size, is defined: offsets outside
 *      0..7 are the caller's to refuse (uart_io() returns -EINVAL).
 *
 * Locking: uart->lock serialises guest accesses (any vCPU) and input (the
 * keyboard thread); irq() and console_write() are called with it held, so
 * neither may call back into the uart.
 */
#ifndef MEMVISOR_DEV_UART_H
#define MEMVISOR_DEV_UART_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dev/console.h"
#include "lib/compiler.h"

#define UART_COM1_BASE 0x3f8
#define UART_COM1_IRQ 4
#define UART_RXQ 1024

struct uart {
    pthread_mutex_t lock;
    struct console *console;
    void (*irq)(void *opaque, bool level);
    void *opaque;
    uint8_t ier, lcr, mcr, lsr_oe, scr, dll, dlm;
    bool thr_ipending; /* a THR-empty event not yet acknowledged */
    bool level;        /* U1: what irq() was last told */
    uint8_t rxq[UART_RXQ];
    unsigned rx_head, rx_len;
    uint64_t tx_bytes, rx_bytes, accesses;
};

/* irq may be NULL (no interrupt line). */
void uart_init(struct uart *u, struct console *console,
               void (*irq)(void *opaque, bool level), void *opaque);
void uart_fini(struct uart *u);
/* A guest access of one byte at offset off (0..7): write *val, or read
 * into *val.  0, or -EINVAL for an offset outside the port. */
int __must_check uart_io(struct uart *u, unsigned off, bool write,
                         uint8_t *val);
/* Bytes for the receiver: how many it took (U2). */
size_t uart_input(struct uart *u, const char *buf, size_t len);
/* The guest-visible state (save and restore): registers, the pending
 * THR-empty event, the receive queue in order.  uart_set_state() takes
 * the line's level from the state and does not call irq() (the restored
 * irqchip has it already); rx_len > UART_RXQ is -EINVAL. */
struct uart_state {
    uint8_t ier, lcr, mcr, lsr_oe, scr, dll, dlm;
    bool thr_ipending;
    unsigned rx_len;
    uint8_t rx[UART_RXQ];
};
void uart_get_state(struct uart *u, struct uart_state *out);
int __must_check uart_set_state(struct uart *u, const struct uart_state *in);
/* U1, U2: 0 or -EUCLEAN. */
int __must_check uart_check(struct uart *u);

#endif
