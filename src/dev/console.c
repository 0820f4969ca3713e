/*
 * console.c - see console.h.
 */
#include "dev/console.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "lib/compiler.h"

void console_init(struct console *c, int out_fd)
{
    memset(c, 0, sizeof(*c));
    pthread_mutex_init(&c->lock, NULL);
    c->out_fd = out_fd;
}

void console_fini(struct console *c)
{
    pthread_mutex_destroy(&c->lock);
}

void console_write(struct console *c, const char *buf, size_t len)
{
    size_t done = 0;

    pthread_mutex_lock(&c->lock);
    for (size_t i = 0; i < len; i++)
        c->tail[(c->total + i) % CONSOLE_TAIL] = buf[i];
    c->total += len;
    while (c->out_fd >= 0 && done < len) {
        ssize_t n = write(c->out_fd, buf + done, len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            c->out_errors++;
            break;
        }
        done += (size_t)n;
    }
    pthread_mutex_unlock(&c->lock);
}

size_t console_tail(struct console *c, char *buf, size_t len)
{
    size_t n;

    if (len == 0)
        return 0;
    pthread_mutex_lock(&c->lock);
    n = MIN((uint64_t)(len - 1), MIN(c->total, (uint64_t)CONSOLE_TAIL));
    for (size_t i = 0; i < n; i++)
        buf[i] = c->tail[(c->total - n + i) % CONSOLE_TAIL];
    buf[n] = 0;
    pthread_mutex_unlock(&c->lock);
    return n;
}
