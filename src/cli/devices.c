/*
 * devices.c - device models of `memvisor run` (devices.h).
 */
#include "cli/devices.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

void devices_init(struct cli_devices *ds, struct domain *d)
{
    memset(ds, 0, sizeof(*ds));
    ds->d = d;
    ds->listen_fd = -1;
    ds->stop_pipe[0] = ds->stop_pipe[1] = -1;
}

/* The program memvisor-dm-<kind>: MEMVISOR_DM_DIR, next to this
 * executable, or the build tree's dm/ (build/src/cli -> build/dm). */
/* out = dir + "/" + rel + kind, if it fits and is executable. */
static int try_program(char *out, size_t len, const char *dir,
                       const char *rel, const char *kind)
{
    int n = snprintf(out, len, "%s/%smemvisor-dm-%s", dir, rel, kind);

    if (n < 0 || (size_t)n >= len)
        return -ENAMETOOLONG;
    return access(out, X_OK) == 0 ? 0 : -ENOENT;
}

static int find_program(const char *kind, char *out, size_t len)
{
    char self[PATH_MAX];
    const char *env = getenv("MEMVISOR_DM_DIR");
    ssize_t n;
    char *slash;

    if (env)
        return try_program(out, len, env, "", kind);
    n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n < 0)
        return -errno;
    self[n] = 0;
    slash = strrchr(self, '/');
    if (!slash)
        return -ENOENT;
    *slash = 0;
    if (try_program(out, len, self, "", kind) == 0)
        return 0;
    return try_program(out, len, self, "../../dm/", kind);
}

int devices_start(struct cli_devices *ds, const char *spec, char *err,
                  size_t errlen)
{
    char prog[PATH_MAX], fdtxt[16], gpa[24];
    const char *kind, *opt = NULL, *val = NULL;
    int sv[2], r;
    pid_t pid;

    if (ds->n == CLI_MAX_DEVICES) {
        snprintf(err, errlen, "at most %d devices", CLI_MAX_DEVICES);
        return -EINVAL;
    }
    if (!strcmp(spec, "test")) {
        kind = "test";
    } else if (!strncmp(spec, "test:mmio=", 10)) {
        /* its registers also as an MMIO page at GPA (page-aligned; memvisor
         * refuses it inside RAM or on the platform's own ranges) */
        char *end;
        unsigned long long a;

        errno = 0;
        a = strtoull(spec + 10, &end, 0);
        if (errno || end == spec + 10 || *end || (a & 0xfff) || !a) {
            snprintf(err, errlen, "device %s: the MMIO address must be a "
                                  "page-aligned number", spec);
            return -EINVAL;
        }
        snprintf(gpa, sizeof(gpa), "%#llx", a);
        kind = "test";
        opt = "--mmio";
        val = gpa;
    } else if (!strncmp(spec, "block:", 6) && spec[6]) {
        kind = "block";
        opt = "--file";
        val = spec + 6;
    } else {
        snprintf(err, errlen, "unknown device \"%s\" (test, test:mmio=GPA, "
                              "block:PATH)", spec);
        return -EINVAL;
    }
    if ((r = find_program(kind, prog, sizeof(prog))) < 0) {
        snprintf(err, errlen, "device %s: program memvisor-dm-%s not found "
                              "(set MEMVISOR_DM_DIR)", spec, kind);
        return r;
    }
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
        r = -errno;
        snprintf(err, errlen, "device %s: socketpair: %s", spec, strerror(-r));
        return r;
    }
    snprintf(fdtxt, sizeof(fdtxt), "%d", sv[1]);
    pid = fork();
    if (pid < 0) {
        r = -errno;
        close(sv[0]);
        close(sv[1]);
        snprintf(err, errlen, "device %s: fork: %s", spec, strerror(-r));
        return r;
    }
    if (pid == 0) {
        const char *argv[] = {prog, "--fd", fdtxt, opt, val, NULL};
        fcntl(sv[1], F_SETFD, 0);
        execv(prog, (char *const *)(uintptr_t)argv);
        _exit(127);
    }
    close(sv[1]);
    ds->pids[ds->n] = pid;
    snprintf(ds->names[ds->n], sizeof(ds->names[0]), "%s", kind);
    ds->n++;
    r = hv_domain_attach_dm(ds->d, sv[0], pid);
    if (r < 0) {
        snprintf(err, errlen, "device %s: the device model did not attach "
                              "(%s; its own message above)", spec,
                 strerror(-r));
        return r;
    }
    return 0;
}

static void *accept_main(void *arg)
{
    struct cli_devices *ds = arg;

    for (;;) {
        struct pollfd p[2] = {{.fd = ds->listen_fd, .events = POLLIN},
                              {.fd = ds->stop_pipe[0], .events = POLLIN}};
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (p[1].revents)
            break;
        if (!(p[0].revents & POLLIN))
            continue;
        int fd = accept4(ds->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        /* refused or failed: the device model hears why (REFUSED) */
        (void)!hv_domain_attach_dm(ds->d, fd, 0);
    }
    return NULL;
}

int devices_listen(struct cli_devices *ds, const char *path)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    int r;

    if (strlen(path) >= sizeof(a.sun_path))
        return -ENAMETOOLONG;
    strcpy(a.sun_path, path);
    ds->listen_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (ds->listen_fd < 0)
        return -errno;
    unlink(path);
    if (bind(ds->listen_fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
        listen(ds->listen_fd, 8) < 0 || pipe2(ds->stop_pipe, O_CLOEXEC) < 0) {
        r = -errno;
        close(ds->listen_fd);
        ds->listen_fd = -1;
        return r;
    }
    snprintf(ds->path, sizeof(ds->path), "%s", path);
    if ((r = -pthread_create(&ds->thread, NULL, accept_main, ds)) < 0)
        return r;
    ds->thread_started = true;
    return 0;
}

void devices_stop(struct cli_devices *ds)
{
    if (ds->thread_started) {
        (void)!write(ds->stop_pipe[1], "x", 1);
        pthread_join(ds->thread, NULL);
        ds->thread_started = false;
    }
    if (ds->listen_fd >= 0) {
        close(ds->listen_fd);
        unlink(ds->path);
    }
    for (int i = 0; i < 2; i++)
        if (ds->stop_pipe[i] >= 0)
            close(ds->stop_pipe[i]);
    ds->listen_fd = ds->stop_pipe[0] = ds->stop_pipe[1] = -1;
}

void devices_reap(struct cli_devices *ds)
{
    /* V1: the domain's side closed their sockets; they end by themselves */
    for (unsigned i = 0; i < ds->n; i++) {
        int st;
        for (int waited = 0; waitpid(ds->pids[i], &st, WNOHANG) == 0;
             waited += 10) {
            if (waited >= 2000) {
                kill(ds->pids[i], SIGKILL);
                waitpid(ds->pids[i], &st, 0);
                break;
            }
            struct timespec ts = {0, 10000000L};
            nanosleep(&ts, NULL);
        }
    }
    ds->n = 0;
}
