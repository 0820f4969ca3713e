/*
 * dmproc.h - start a device-model program as a child process connected to
 * an ioreq domain by a socket pair (the tests' way of attaching real device
 * models without a listening socket).
 */
#ifndef MEMVISOR_TESTS_DMPROC_H
#define MEMVISOR_TESTS_DMPROC_H

#include <sys/types.h>

#include "ioreq/ioreq.h"

/* Start `exe --fd N extra...` (extra NULL-terminated, may be NULL) and
 * attach it: returns the server index or -errno; *pid the child. */
int dmproc_start(struct ioreq_domain *io, const char *exe,
                 const char *const *extra, pid_t *pid);
/* Wait for the child (killing it after timeout_ms); its wait status. */
int dmproc_wait(pid_t pid, int timeout_ms);

#endif
