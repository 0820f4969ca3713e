/*
 * console.h - a domain's guest console: the bytes a guest writes with
 * console_io go to an output file descriptor (memvisor's stdout for
 * `memvisor run`) and into a bounded in-memory tail that tests and the
 * control socket read.
 *
 * Owns: the tail buffer and the output fd (not closed here).
 *
 * Invariants:
 *  C1. tail holds the last min(total, CONSOLE_TAIL) bytes written, in order.
 *  C2. A write never blocks on the guest's behalf for longer than the output
 *      fd takes; output errors are counted, never fatal.
 *
 * Locking: console->lock serialises writers (several vCPUs).
 * Errors: none (console_write cannot fail from the guest's point of view).
 */
#ifndef MEMVISOR_DEV_CONSOLE_H
#define MEMVISOR_DEV_CONSOLE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define CONSOLE_TAIL 65536
#define CONSOLE_MAX_WRITE 4096

struct console {
    pthread_mutex_t lock;
    int out_fd; /* -1: none */
    uint64_t total;
    uint64_t out_errors;
    char tail[CONSOLE_TAIL];
};

void console_init(struct console *c, int out_fd);
void console_fini(struct console *c);
void console_write(struct console *c, const char *buf, size_t len);
/* Copy the tail (NUL-terminated, at most len - 1 bytes, the newest). */
size_t console_tail(struct console *c, char *buf, size_t len);

#endif
