/*
 * memvisor-dm-block - a block device backed by a host file.  The guest
 * names a run of sectors and a buffer of consecutive guest frames; the
 * device moves the data between the file and guest memory by DMA through
 * the mapcache (dm_copy_from / dm_copy_to, which reports every page it
 * writes to memvisor's dirty log).
 *
 * Registers (32-bit port I/O at --port BASE, default 0x5100; see
 * docs/dm-protocol.md, "The block device"):
 *   0x00 SECTOR   first sector (512 bytes)
 *   0x04 GFN      first guest frame of the buffer
 *   0x08 COUNT    sectors, 1..64 (the buffer is COUNT*512 bytes from GFN)
 *   0x0c CMD      (write) 1 read file -> guest, 2 write guest -> file,
 *                 3 flush (fdatasync)
 *   0x10 STATUS   0 or the errno of the last command
 *   0x14 CAPACITY sectors in the file
 *   0x18 SUM      FNV-1a 32 of the data the last read or write moved
 *   0x1c DONE     commands completed
 *
 * Usage: memvisor-dm-block (--socket PATH | --fd N) --file PATH [--port BASE]
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dmlib.h"

#define SECTOR 512u
#define MAX_SECTORS 64u

struct blockdev {
    pthread_mutex_t lock;
    int fd;
    uint64_t capacity; /* sectors */
    uint32_t regs[8];
    uint8_t buf[MAX_SECTORS * SECTOR];
};

static uint32_t fnv(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 16777619u;
    return h;
}

static int transfer(struct dm_conn *c, struct blockdev *b, uint32_t cmd)
{
    uint64_t sector = b->regs[0], gfn = b->regs[1], count = b->regs[2];
    size_t len = (size_t)count * SECTOR;
    ssize_t n;
    int r;

    if (cmd == 3)
        return fdatasync(b->fd) < 0 ? -errno : 0;
    if (cmd != 1 && cmd != 2)
        return -EINVAL;
    if (count == 0 || count > MAX_SECTORS || sector > b->capacity ||
        count > b->capacity - sector)
        return -ERANGE;
    if (cmd == 1) {
        n = pread(b->fd, b->buf, len, (off_t)(sector * SECTOR));
        if (n != (ssize_t)len)
            return n < 0 ? -errno : -EIO;
        if ((r = dm_copy_to(c, gfn * 4096, b->buf, len)) < 0)
            return r;
    } else {
        if ((r = dm_copy_from(c, b->buf, gfn * 4096, len)) < 0)
            return r;
        n = pwrite(b->fd, b->buf, len, (off_t)(sector * SECTOR));
        if (n != (ssize_t)len)
            return n < 0 ? -errno : -EIO;
    }
    b->regs[0x18 / 4] = fnv(b->buf, len);
    return 0;
}

static int dev_io(struct dm_conn *c, const struct dm_ioreq *rq, uint64_t *data)
{
    struct blockdev *b = c->opaque;
    uint64_t off = rq->addr & 0x1f;
    int r = 0;

    if (rq->size != 4 || (off & 3))
        return -EINVAL;
    pthread_mutex_lock(&b->lock);
    if (rq->dir == DM_DIR_WRITE) {
        if (off == 0x0c) {
            r = transfer(c, b, (uint32_t)rq->data);
            b->regs[0x10 / 4] = (uint32_t)-r;
            b->regs[0x1c / 4]++;
            r = 0;
        } else if (off < 0x0c) {
            b->regs[off / 4] = (uint32_t)rq->data;
        } else {
            r = -EINVAL;
        }
    } else {
        if (off == 0x14)
            b->regs[off / 4] = (uint32_t)b->capacity;
        *data = b->regs[off / 4];
    }
    pthread_mutex_unlock(&b->lock);
    return r;
}

static int dev_save(struct dm_conn *c, void *buf, uint32_t *len)
{
    struct blockdev *b = c->opaque;
    pthread_mutex_lock(&b->lock);
    memcpy(buf, b->regs, sizeof(b->regs));
    pthread_mutex_unlock(&b->lock);
    *len = sizeof(b->regs);
    return 0;
}

static int dev_restore(struct dm_conn *c, const void *buf, uint32_t len)
{
    struct blockdev *b = c->opaque;
    if (len != sizeof(b->regs))
        return -EINVAL;
    pthread_mutex_lock(&b->lock);
    memcpy(b->regs, buf, sizeof(b->regs));
    pthread_mutex_unlock(&b->lock);
    return 0;
}

static const struct dm_dev_ops ops = {
    .io = dev_io,
    .save = dev_save,
    .restore = dev_restore,
};

int main(int argc, char **argv)
{
    static struct blockdev b;
    struct dm_conn c;
    struct dm_range range = {.kind = DM_RANGE_PIO, .base = 0x5100, .len = 32};
    const char *path = NULL, *file = NULL;
    char why[DM_REASON_MAX];
    struct stat st;
    int fd = -1, r;

    pthread_mutex_init(&b.lock, NULL);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool v = i + 1 < argc;
        if (!strcmp(a, "--socket") && v)
            path = argv[++i];
        else if (!strcmp(a, "--fd") && v)
            fd = atoi(argv[++i]);
        else if (!strcmp(a, "--file") && v)
            file = argv[++i];
        else if (!strcmp(a, "--port") && v)
            range.base = strtoull(argv[++i], NULL, 0);
        else {
            fprintf(stderr, "memvisor-dm-block: unknown argument %s\n", a);
            return 2;
        }
    }
    if (!file || (!path && fd < 0)) {
        fprintf(stderr, "usage: memvisor-dm-block (--socket PATH | --fd N) "
                        "--file PATH [--port BASE]\n");
        return 2;
    }
    b.fd = open(file, O_RDWR | O_CLOEXEC);
    if (b.fd < 0 || fstat(b.fd, &st) < 0) {
        fprintf(stderr, "memvisor-dm-block: %s: %s\n", file, strerror(errno));
        return 1;
    }
    b.capacity = (uint64_t)st.st_size / SECTOR;
    if (path && (fd = dm_connect(path)) < 0) {
        fprintf(stderr, "memvisor-dm-block: %s: %s\n", path, strerror(-fd));
        return 1;
    }
    r = dm_attach(&c, fd, "block", &range, 1, 64, &ops, &b, why, sizeof(why));
    if (r < 0) {
        fprintf(stderr, "memvisor-dm-block: attach: %s%s%s\n", strerror(-r),
                why[0] ? ": " : "", why);
        return 1;
    }
    r = dm_serve(&c);
    dm_detach(&c);
    close(b.fd);
    if (r < 0) {
        fprintf(stderr, "memvisor-dm-block: %s\n", strerror(-r));
        return 1;
    }
    return 0;
}
