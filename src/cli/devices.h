/*
 * devices.h - device models of `memvisor run`: started as child processes
 * (--device test, --device test:mmio=GPA, --device block:PATH), each on
 * its own socket pair, or
 * attaching by themselves to a listening socket (--dm-socket PATH).
 *
 * Owns: the children (their pids), the listening socket and its accept
 * thread.  The sockets themselves belong to the domain's ioreq side once
 * attached (hv_domain_attach_dm()).
 *
 * Invariants:
 *  V1. Every child started is waited for by devices_reap(): it ends when
 *      the domain's side closes its socket, or is killed after 2 s.
 *  V2. A device model that fails to start or attach is reported with its
 *      reason and the run is refused before the guest starts.
 *
 * Locking: the accept thread only calls hv_domain_attach_dm() (ioreq's
 * own lock); start/listen/stop run on the main thread.
 *
 * Errors: -EINVAL (unknown device), -ENOENT (device-model program not
 * found), -errno of socket calls and of the attach.
 */
#ifndef MEMVISOR_CLI_DEVICES_H
#define MEMVISOR_CLI_DEVICES_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "hv/hv.h"
#include "lib/compiler.h"

#define CLI_MAX_DEVICES 8

struct cli_devices {
    struct domain *d;
    pid_t pids[CLI_MAX_DEVICES];
    char names[CLI_MAX_DEVICES][16];
    unsigned n;
    int listen_fd;
    int stop_pipe[2];
    pthread_t thread;
    bool thread_started;
    char path[108];
};

void devices_init(struct cli_devices *ds, struct domain *d);
/* spec: "test", "test:mmio=GPA" (its registers also as an MMIO page at
 * GPA) or "block:PATH". */
int __must_check devices_start(struct cli_devices *ds, const char *spec,
                               char *err, size_t errlen);
int __must_check devices_listen(struct cli_devices *ds, const char *path);
/* Stop accepting (before the domain goes). */
void devices_stop(struct cli_devices *ds);
/* Wait for the children (after the domain went: their sockets closed). */
void devices_reap(struct cli_devices *ds);

#endif
