/*
 * dmproc.c - device models as child processes for the tests (dmproc.h).
 */
#include "dmproc.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int dmproc_start(struct ioreq_domain *io, const char *exe,
                 const char *const *extra, pid_t *pid)
{
    int sv[2];
    char fdtxt[16];
    const char *argv[16];
    unsigned n = 0;

    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        return -errno;
    snprintf(fdtxt, sizeof(fdtxt), "%d", sv[1]);
    argv[n++] = exe;
    argv[n++] = "--fd";
    argv[n++] = fdtxt;
    for (unsigned i = 0; extra && extra[i] && n < 15; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    *pid = fork();
    if (*pid < 0) {
        close(sv[0]);
        close(sv[1]);
        return -errno;
    }
    if (*pid == 0) {
        fcntl(sv[1], F_SETFD, 0); /* the child's end survives exec */
        execv(exe, (char *const *)(uintptr_t)argv);
        _exit(127);
    }
    close(sv[1]);
    return ioreq_attach(io, sv[0]);
}

int dmproc_wait(pid_t pid, int timeout_ms)
{
    int st = 0;

    for (int waited = 0;; waited += 10) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return st;
        if (r < 0)
            return -errno;
        if (waited >= timeout_ms) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            return st;
        }
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
}
