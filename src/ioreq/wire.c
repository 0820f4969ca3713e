/*
 * wire.c - checks and socket I/O of the device-model protocol (wire.h).
 */
#include "ioreq/wire.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const char *const names[DM_NR_TYPES] = {
    [DM_HELLO] = "HELLO",
    [DM_WELCOME] = "WELCOME",
    [DM_REFUSED] = "REFUSED",
    [DM_MAP] = "MAP",
    [DM_IOREQ] = "IOREQ",
    [DM_IORESP] = "IORESP",
    [DM_INVALIDATE] = "INVALIDATE",
    [DM_INVAL_ACK] = "INVAL_ACK",
    [DM_TRACK] = "TRACK",
    [DM_TRACK_REPLY] = "TRACK_REPLY",
    [DM_TRACK_WRITE] = "TRACK_WRITE",
    [DM_TRACK_GONE] = "TRACK_GONE",
    [DM_DIRTY] = "DIRTY",
    [DM_SAVE] = "SAVE",
    [DM_STATE] = "STATE",
    [DM_RESTORE] = "RESTORE",
    [DM_RESTORED] = "RESTORED",
    [DM_BYE] = "BYE",
    [DM_QUIESCE] = "QUIESCE",
    [DM_QUIESCED] = "QUIESCED",
};

const char *dm_type_name(unsigned type)
{
    return type < DM_NR_TYPES && names[type] ? names[type] : "unknown";
}

/* Who may send each type: bit DM_FROM_HV, bit DM_FROM_DM. */
#define HV (1u << DM_FROM_HV)
#define DMS (1u << DM_FROM_DM)
static const uint8_t senders[DM_NR_TYPES] = {
    [DM_HELLO] = DMS,        [DM_WELCOME] = HV,      [DM_REFUSED] = HV,
    [DM_MAP] = HV,           [DM_IOREQ] = HV,        [DM_IORESP] = DMS,
    [DM_INVALIDATE] = HV,    [DM_INVAL_ACK] = DMS,   [DM_TRACK] = DMS,
    [DM_TRACK_REPLY] = HV,   [DM_TRACK_WRITE] = HV,  [DM_TRACK_GONE] = HV,
    [DM_DIRTY] = DMS,        [DM_SAVE] = HV,         [DM_STATE] = DMS,
    [DM_RESTORE] = HV,       [DM_RESTORED] = DMS,    [DM_BYE] = HV | DMS,
    [DM_QUIESCE] = HV,       [DM_QUIESCED] = DMS,
};
#undef HV
#undef DMS

static bool str_ok(const char *s, size_t max, bool need_nonempty)
{
    size_t n = strnlen(s, max);

    if (n == max || (need_nonempty && n == 0))
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
            return false;
    /* the bytes after the NUL are zero too: nothing hidden */
    for (size_t i = n; i < max; i++)
        if (s[i])
            return false;
    return true;
}

static int check_range(const struct dm_range *r)
{
    if (r->reserved || r->len == 0)
        return -EBADMSG;
    if (r->kind == DM_RANGE_PIO)
        return r->base < 0x10000 && r->len <= 0x10000 - r->base ? 0 : -EBADMSG;
    if (r->kind == DM_RANGE_MMIO) {
        if ((r->base | r->len) & 0xfff)
            return -EBADMSG;
        /* 52-bit guest-physical space, no wrap */
        return r->base < (1ULL << 52) && r->len <= (1ULL << 52) - r->base
                   ? 0
                   : -EBADMSG;
    }
    return -EBADMSG;
}

static int check_body(const void *buf, size_t len, uint16_t type)
{
    switch (type) {
    case DM_HELLO: {
        const struct dm_hello *m = buf;
        if (len < sizeof(*m) || m->nr_ranges > DM_MAX_RANGES ||
            len != sizeof(*m) + m->nr_ranges * sizeof(struct dm_range))
            return -EBADMSG;
        if (!str_ok(m->name, sizeof(m->name), true))
            return -EBADMSG;
        for (uint32_t i = 0; i < m->nr_ranges; i++)
            if (check_range(&m->ranges[i]) < 0)
                return -EBADMSG;
        return 0;
    }
    case DM_WELCOME: {
        const struct dm_welcome *m = buf;
        if (len != sizeof(*m) || m->pool_bytes % 4096)
            return -EBADMSG;
        return 0;
    }
    case DM_REFUSED: {
        const struct dm_refused *m = buf;
        if (len != sizeof(*m) || m->reserved || m->error >= 0 ||
            m->error < -4095 || !str_ok(m->reason, sizeof(m->reason), false))
            return -EBADMSG;
        return 0;
    }
    case DM_MAP: {
        const struct dm_map *m = buf;
        if (len < sizeof(*m) || m->reserved || m->nr_runs == 0 ||
            m->nr_runs > DM_MAP_MAX_RUNS ||
            len != sizeof(*m) + m->nr_runs * sizeof(struct dm_map_run))
            return -EBADMSG;
        for (uint32_t i = 0; i < m->nr_runs; i++) {
            const struct dm_map_run *r = &m->runs[i];
            if (r->nr == 0 || r->gfn + r->nr < r->gfn ||
                (r->mfn != DM_MFN_NONE && r->mfn + r->nr < r->mfn))
                return -EBADMSG;
        }
        return 0;
    }
    case DM_IOREQ: {
        const struct dm_ioreq *m = buf;
        if (len != sizeof(*m) || m->reserved || m->kind > DM_RANGE_MMIO ||
            m->dir > DM_DIR_WRITE ||
            (m->size != 1 && m->size != 2 && m->size != 4 && m->size != 8))
            return -EBADMSG;
        return 0;
    }
    case DM_IORESP: {
        const struct dm_ioresp *m = buf;
        if (len != sizeof(*m) || m->reserved || m->status > 0 ||
            m->status < -4095)
            return -EBADMSG;
        return 0;
    }
    case DM_INVALIDATE:
    case DM_INVAL_ACK:
        return len == sizeof(struct dm_inval) ? 0 : -EBADMSG;
    case DM_TRACK: {
        const struct dm_track *m = buf;
        if (len != sizeof(*m) || m->reserved || m->on > 1)
            return -EBADMSG;
        return 0;
    }
    case DM_TRACK_REPLY: {
        const struct dm_track_reply *m = buf;
        if (len != sizeof(*m) || m->on > 1 || m->status > 0 ||
            m->status < -4095)
            return -EBADMSG;
        return 0;
    }
    case DM_TRACK_WRITE: {
        const struct dm_track_write *m = buf;
        if (len != sizeof(*m) || m->reserved || m->len == 0 ||
            m->len > DM_TRACK_MAX_BYTES ||
            (m->gpa & 0xfff) + m->len > 4096)
            return -EBADMSG;
        return 0;
    }
    case DM_TRACK_GONE: {
        const struct dm_track_gone *m = buf;
        if (len != sizeof(*m) || m->nr == 0 || m->gfn + m->nr < m->gfn)
            return -EBADMSG;
        return 0;
    }
    case DM_DIRTY: {
        const struct dm_dirty *m = buf;
        if (len < sizeof(*m) || m->reserved || m->nr_runs == 0 ||
            m->nr_runs > DM_DIRTY_MAX_RUNS ||
            len != sizeof(*m) + m->nr_runs * sizeof(struct dm_dirty_run))
            return -EBADMSG;
        for (uint32_t i = 0; i < m->nr_runs; i++)
            if (m->runs[i].nr == 0 ||
                m->runs[i].gfn + m->runs[i].nr < m->runs[i].gfn)
                return -EBADMSG;
        return 0;
    }
    case DM_SAVE:
    case DM_STATE:
    case DM_RESTORE: {
        const struct dm_state *m = buf;
        if (len < sizeof(*m) || m->reserved || m->len > DM_STATE_MAX ||
            len != sizeof(*m) + m->len || (type == DM_SAVE && m->len))
            return -EBADMSG;
        return 0;
    }
    case DM_QUIESCE: {
        const struct dm_quiesce *m = buf;
        if (len != sizeof(*m) || m->reserved || m->on > 1)
            return -EBADMSG;
        return 0;
    }
    case DM_RESTORED:
    case DM_QUIESCED: {
        const struct dm_restored *m = buf;
        if (len != sizeof(*m) || m->reserved || m->status > 0 ||
            m->status < -4095)
            return -EBADMSG;
        return 0;
    }
    case DM_BYE:
        return len == sizeof(struct dm_hdr) ? 0 : -EBADMSG;
    }
    return -EBADMSG;
}

int dm_msg_check(const void *buf, size_t len, enum dm_from from)
{
    struct dm_hdr h;

    if (len < sizeof(h) || len > DM_MSG_MAX)
        return -EBADMSG;
    memcpy(&h, buf, sizeof(h));
    if (h.magic != DM_MAGIC || h.reserved || h.reserved2 || h.len != len)
        return -EBADMSG;
    if (h.type == 0 || h.type >= DM_NR_TYPES)
        return -EBADMSG;
    if (!(senders[h.type] & (1u << from)))
        return -EPROTO;
    return check_body(buf, len, h.type);
}

void dm_hdr_init(struct dm_hdr *h, enum dm_type type, uint32_t len)
{
    memset(h, 0, sizeof(*h));
    h->magic = DM_MAGIC;
    h->type = (uint16_t)type;
    h->len = len;
}

static int wait_fd(int sock, short ev, int timeout_ms)
{
    struct pollfd p = {.fd = sock, .events = ev};
    int r;

    do
        r = poll(&p, 1, timeout_ms);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return -errno;
    if (r == 0)
        return -ETIMEDOUT;
    return 0;
}

int dm_msg_send(int sock, const void *msg, size_t len, int fd, int timeout_ms)
{
    union {
        struct cmsghdr c;
        char buf[CMSG_SPACE(sizeof(int))];
    } ctl;
    struct iovec iov = {.iov_base = (void *)(uintptr_t)msg, .iov_len = len};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    ssize_t n;
    int r;

    if (len > DM_MSG_MAX)
        return -EMSGSIZE;
    if (fd >= 0) {
        memset(&ctl, 0, sizeof(ctl));
        mh.msg_control = ctl.buf;
        mh.msg_controllen = sizeof(ctl.buf);
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof(int));
    }
    for (;;) {
        n = sendmsg(sock, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n == (ssize_t)len)
            return 0;
        if (n >= 0)
            return -EIO; /* a datagram is all or nothing */
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return errno == EPIPE ? -ECONNRESET : -errno;
        if ((r = wait_fd(sock, POLLOUT, timeout_ms)) < 0)
            return r;
    }
}

long dm_msg_recv(int sock, void *buf, int *fd_out, int timeout_ms)
{
    union {
        struct cmsghdr c;
        char buf[CMSG_SPACE(4 * sizeof(int))];
    } ctl;
    struct iovec iov = {.iov_base = buf, .iov_len = DM_MSG_MAX};
    struct msghdr mh;
    ssize_t n;
    int r, got = -1;

    if (fd_out)
        *fd_out = -1;
    for (;;) {
        memset(&mh, 0, sizeof(mh));
        mh.msg_iov = &iov;
        mh.msg_iovlen = 1;
        mh.msg_control = ctl.buf;
        mh.msg_controllen = sizeof(ctl.buf);
        n = recvmsg(sock, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n >= 0)
            break;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return -errno;
        if ((r = wait_fd(sock, POLLIN, timeout_ms)) < 0)
            return r;
    }
    /* W2: every descriptor that came along is ours to close, except one
     * the caller asked for. */
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t nfd = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < nfd; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            if (fd_out && got < 0)
                got = fd;
            else
                close(fd);
        }
    }
    if (n == 0) {
        if (got >= 0)
            close(got);
        return -ECONNRESET;
    }
    if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
        if (got >= 0)
            close(got);
        return (mh.msg_flags & MSG_TRUNC) ? -EMSGSIZE : -EBADMSG;
    }
    if (fd_out)
        *fd_out = got;
    return (long)n;
}
