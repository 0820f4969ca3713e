/*
 * xfer.c - see xfer.h.
 */
#include "lib/errmsg.h"
#include "cli/xfer.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "cli/control.h"
#include "migrate/migrate.h"

/* tcp:HOST:PORT (HOST may be [v6]) or unix:PATH */
static int resolve(const char *addr, bool passive, struct addrinfo **ai,
                   struct sockaddr_un *un, char *err, size_t errlen)
{
    if (!strncmp(addr, "unix:", 5)) {
        memset(un, 0, sizeof(*un));
        un->sun_family = AF_UNIX;
        if (strlen(addr + 5) == 0 || strlen(addr + 5) >= sizeof(un->sun_path)) {
            errf(err, errlen, "%s: bad unix socket path", addr);
            return -EINVAL;
        }
        snprintf(un->sun_path, sizeof(un->sun_path), "%s", addr + 5);
        *ai = NULL;
        return 0;
    }
    if (!strncmp(addr, "tcp:", 4)) {
        char host[256];
        const char *port = strrchr(addr + 4, ':');
        size_t hl;
        struct addrinfo hints = {.ai_family = AF_UNSPEC,
                                 .ai_socktype = SOCK_STREAM,
                                 .ai_flags = passive ? AI_PASSIVE : 0};
        int g;

        if (!port || port == addr + 4 || !port[1]) {
            errf(err, errlen, "%s: want tcp:HOST:PORT", addr);
            return -EINVAL;
        }
        hl = (size_t)(port - (addr + 4));
        if (hl >= sizeof(host)) {
            errf(err, errlen, "%s: host name too long", addr);
            return -EINVAL;
        }
        memcpy(host, addr + 4, hl);
        host[hl] = 0;
        if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
            memmove(host, host + 1, hl - 2);
            host[hl - 2] = 0;
        }
        g = getaddrinfo(host, port + 1, &hints, ai);
        if (g != 0) {
            errf(err, errlen, "%s: %s", addr, gai_strerror(g));
            return -EINVAL;
        }
        return 0;
    }
    errf(err, errlen, "%s: want tcp:HOST:PORT or unix:PATH", addr);
    return -EINVAL;
}

int xfer_connect(const char *addr, char *err, size_t errlen)
{
    struct addrinfo *ai, *p;
    struct sockaddr_un un;
    int fd = -1, r;

    if ((r = resolve(addr, false, &ai, &un, err, errlen)) < 0)
        return r;
    if (!ai) {
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&un, sizeof(un)) < 0) {
            r = -errno;
            errf(err, errlen, "%s: %s", addr, strerror(errno));
            if (fd >= 0)
                close(fd);
            return r;
        }
        return fd;
    }
    r = -ECONNREFUSED;
    for (p = ai; p; p = p->ai_next) {
        fd = socket(p->ai_family, p->ai_socktype | SOCK_CLOEXEC,
                    p->ai_protocol);
        if (fd < 0)
            continue;
        if (connect(fd, p->ai_addr, p->ai_addrlen) == 0)
            break;
        r = -errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    if (fd < 0) {
        errf(err, errlen, "%s: %s", addr, strerror(-r));
        return r;
    }
    return fd;
}

int xfer_listen(const char *addr, char *err, size_t errlen)
{
    struct addrinfo *ai;
    struct sockaddr_un un;
    int fd, r, one = 1;

    if ((r = resolve(addr, true, &ai, &un, err, errlen)) < 0)
        return r;
    if (!ai) {
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        unlink(un.sun_path);
        if (fd < 0 || bind(fd, (struct sockaddr *)&un, sizeof(un)) < 0 ||
            listen(fd, STREAM_CHANNELS_MAX) < 0) {
            r = -errno;
            errf(err, errlen, "%s: %s", addr, strerror(errno));
            if (fd >= 0)
                close(fd);
            return r;
        }
        return fd;
    }
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
                ai->ai_protocol);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, 4) < 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, STREAM_CHANNELS_MAX) < 0) {
        r = -errno;
        errf(err, errlen, "%s: %s", addr, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
        return r;
    }
    freeaddrinfo(ai);
    return fd;
}

static void io_timeout(int fd, int opt)
{
    struct timeval tv = {XFER_IO_TIMEOUT_MS / 1000,
                         (XFER_IO_TIMEOUT_MS % 1000) * 1000};

    (void)setsockopt(fd, SOL_SOCKET, opt, &tv, sizeof(tv));
}

int xfer_accept(int lfd, int timeout_ms, char *err, size_t errlen)
{
    struct pollfd p = {lfd, POLLIN, 0};
    int r, fd;

    do
        r = poll(&p, 1, timeout_ms);
    while (r < 0 && errno == EINTR);
    if (r <= 0) {
        errf(err, errlen, "no connection came in %d s", timeout_ms / 1000);
        return r < 0 ? -errno : -ETIMEDOUT;
    }
    fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) {
        r = -errno;
        errf(err, errlen, "accept: %s", strerror(errno));
        return r;
    }
    io_timeout(fd, SO_RCVTIMEO);
    return fd;
}

bool xfer_request(const char *line)
{
    char cmd[32];

    return control_str(line, "cmd", cmd, sizeof(cmd)) &&
           (!strcmp(cmd, "migrate") || !strcmp(cmd, "save"));
}

struct progress {
    int fd;
    struct timespec last;
    unsigned last_round;
};

static void on_progress(void *arg, const struct migrate_progress *p)
{
    struct progress *pr = arg;
    struct timespec now;
    char line[256];
    int n;

    clock_gettime(CLOCK_MONOTONIC, &now);
    /* every round's start, and at most ten lines a second */
    if (p->round == pr->last_round &&
        (now.tv_sec - pr->last.tv_sec) * 1000000000L +
                (now.tv_nsec - pr->last.tv_nsec) <
            100000000L)
        return;
    pr->last = now;
    pr->last_round = p->round;
    n = snprintf(line, sizeof(line),
                 "{\"progress\":{\"round\":%u,\"final\":%s,\"pages_left\":%llu,"
                 "\"bytes_per_s\":%llu,\"est_downtime_ms\":%llu}}\n",
                 p->round, p->final ? "true" : "false",
                 (unsigned long long)p->pages_left,
                 (unsigned long long)p->bytes_per_s,
                 (unsigned long long)p->est_downtime_ms);
    if (pr->fd >= 0 && n > 0 && write(pr->fd, line, (size_t)n) < 0)
        pr->fd = -1; /* the client left: the save goes on */
}

/* The destination's word: "OK" within the timeout. */
static int wait_ack(int fd, char *err, size_t errlen)
{
    char buf[256];
    size_t have = 0;

    while (have < sizeof(buf) - 1) {
        struct pollfd p = {fd, POLLIN, 0};
        ssize_t n;
        int r = poll(&p, 1, XFER_ACK_TIMEOUT_MS);

        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            errf(err, errlen, "the destination did not confirm in %d s",
                 XFER_ACK_TIMEOUT_MS / 1000);
            return -ETIMEDOUT;
        }
        n = read(fd, buf + have, sizeof(buf) - 1 - have);
        if (n <= 0) {
            errf(err, errlen, "the destination closed the connection before "
                              "confirming");
            return -EPIPE;
        }
        have += (size_t)n;
        buf[have] = 0;
        if (strchr(buf, '\n'))
            break;
    }
    buf[strcspn(buf, "\n")] = 0;
    if (!strcmp(buf, "OK"))
        return 0;
    errf(err, errlen, "the destination refused: %s",
         strncmp(buf, "ERR ", 4) ? buf : buf + 4);
    return -EREMOTEIO;
}

void xfer_ack(int fd, int rc, const char *err)
{
    char line[512];
    int n = rc == 0 ? snprintf(line, sizeof(line), "OK\n")
                    : snprintf(line, sizeof(line), "ERR %s\n",
                               err && *err ? err : strerror(-rc));

    if (n > 0 && write(fd, line, (size_t)n) < 0) {
        /* the source is gone: it resumes its domain by itself */
    }
}

void xfer_handle(struct domain *d, const char *line, int client_fd,
                 char *resp, size_t len, bool *stopped)
{
    struct migrate_source src;
    struct migrate_stats *st = NULL;
    struct migrate_save_opts o = {0};
    struct progress pr = {.fd = client_fd};
    struct stream_chan c, ex[STREAM_CHANNELS_MAX - 1];
    struct stream_chan *exp[STREAM_CHANNELS_MAX - 1];
    int exfd[STREAM_CHANNELS_MAX - 1];
    unsigned nconn = 1;
    char cmd[32], to[256], err[512], esc[1100], *json = NULL;
    uint64_t v, confirmed_ns = 0;
    bool migrate;
    int fd = -1, rc;

    for (unsigned i = 0; i < STREAM_CHANNELS_MAX - 1; i++)
        exfd[i] = -1;

    *stopped = false;
    (void)!control_str(line, "cmd", cmd, sizeof(cmd));
    migrate = !strcmp(cmd, "migrate");
    if (!control_str(line, migrate ? "to" : "file", to, sizeof(to)) || !*to) {
        snprintf(resp, len, "{\"ok\":false,\"error\":\"%s needs \\\"%s\\\"\"}",
                 cmd, migrate ? "to" : "file");
        return;
    }
    o.live = migrate;
    if (control_u64(line, "live", &v))
        o.live = v != 0;
    if (control_u64(line, "zstd", &v))
        o.zstd = v != 0;
    if (control_u64(line, "downtime_ms", &v))
        o.downtime_ms = v;
    if (control_u64(line, "max_rounds", &v) && v <= MIGRATE_MAX_ROUNDS)
        o.max_rounds = (unsigned)v;
    if (control_u64(line, "connections", &v) && v > 1) {
        if (!migrate || v > STREAM_CHANNELS_MAX) {
            snprintf(resp, len,
                     "{\"ok\":false,\"error\":\"connections: 1..%u, and "
                     "only for migrate\"}",
                     STREAM_CHANNELS_MAX);
            return;
        }
        nconn = (unsigned)v;
    }
    o.leave_paused = true;
    o.progress = on_progress;
    o.progress_arg = &pr;
    err[0] = 0;
    st = calloc(1, sizeof(*st));
    json = malloc(16384);
    if (!st || !json) {
        snprintf(resp, len, "{\"ok\":false,\"error\":\"out of memory\"}");
        goto out;
    }
    if (hv_domain_stopped(d)) {
        snprintf(resp, len, "{\"ok\":false,\"error\":\"the domain stopped\"}");
        goto out;
    }
    if (migrate) {
        fd = xfer_connect(to, err, sizeof(err));
        /* the extra connections right after the main one: the
         * destination takes them in turn once the main one names them */
        for (unsigned i = 0; fd >= 0 && i + 1 < nconn; i++) {
            if ((exfd[i] = xfer_connect(to, err, sizeof(err))) < 0)
                goto fail;
            io_timeout(exfd[i], SO_SNDTIMEO);
            stream_chan_fd(&ex[i], exfd[i]);
            exp[i] = &ex[i];
        }
        if (fd >= 0)
            io_timeout(fd, SO_SNDTIMEO);
        o.extra = exp;
        o.nr_extra = nconn - 1;
    } else {
        fd = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
            errf(err, sizeof(err), "%s: %s", to, strerror(errno));
    }
    if (fd < 0)
        goto fail;
    if ((rc = hv_domain_source_init(d, &src)) < 0) {
        errf(err, sizeof(err), "the domain: %s", strerror(-rc));
        goto fail;
    }
    stream_chan_fd(&c, fd);
    if (control_u64(line, "test_cut_after", &v)) { /* fault injection */
        uint64_t k = 0;

        (void)!control_u64(line, "test_cut_conn", &k);
        if (k == 0)
            c.fail_after = v;
        else if (k < nconn)
            ex[k - 1].fail_after = v;
    }
    rc = migrate_save(&src, &c, &o, st, err, sizeof(err));
    if (rc < 0) {
        hv_domain_source_fini(&src);
        goto fail; /* the engine resumed the source and its devices */
    }
    /* paused at the final pause: the destination's word, or the file on
     * disk, decides */
    if (migrate) {
        struct timespec ts;

        rc = wait_ack(fd, err, sizeof(err));
        clock_gettime(CLOCK_MONOTONIC, &ts);
        confirmed_ns = (uint64_t)ts.tv_sec * 1000000000ULL +
                       (uint64_t)ts.tv_nsec - st->paused_at_ns;
    }
    else if (fsync(fd) < 0) {
        rc = -errno;
        errf(err, sizeof(err), "%s: %s", to, strerror(errno));
    }
    if (rc == 0 && (migrate || (control_u64(line, "stop", &v) && v))) {
        hv_domain_shutdown(d, 0);
        *stopped = true;
    } else if (st->devices_quiesced) {
        /* the guest runs on here: its device models first */
        (void)!src.devices_quiesce(src.arg, false, NULL, 0);
    }
    hv_domain_source_fini(&src);
    hv_domain_resume(d);
    if (rc < 0)
        goto fail;
    if (migrate_stats_json(st, json, 16384) < 0)
        snprintf(json, 16384, "{}");
    control_json_string(esc, sizeof(esc), to);
    snprintf(resp, len,
             "{\"ok\":true,\"%s\":%s,\"stopped\":%s,\"downtime_to_running_ms\":"
             "%.3f,\"summary\":%s}",
             migrate ? "to" : "file", esc, *stopped ? "true" : "false",
             migrate ? (double)confirmed_ns / 1e6 : st->downtime_ns / 1e6,
             json);
    goto out;
fail:
    control_json_string(esc, sizeof(esc), err[0] ? err : "failed");
    snprintf(resp, len, "{\"ok\":false,\"error\":%s,\"source\":\"running\"}",
             esc);
out:
    if (fd >= 0)
        close(fd);
    for (unsigned i = 0; i + 1 < nconn; i++)
        if (exfd[i] >= 0)
            close(exfd[i]);
    free(st);
    free(json);
}
