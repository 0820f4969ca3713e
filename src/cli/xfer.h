/*
 * xfer.h - moving a domain out of or into this process: the control
 * socket's "migrate" and "save" requests (a running domain streamed to
 * tcp:HOST:PORT, unix:PATH or a file), and the receiving end of
 * `memvisor receive` and `memvisor restore` (docs/control.md, "Migration
 * and snapshots").
 *
 * The migration handshake: the source streams the domain (migrate.h),
 * leaves it paused at its final pause and waits for the destination's
 * word, one line: "OK" once the domain is restored and its vCPUs started,
 * or "ERR <reason>".  On "OK" the source stops its domain; on anything else
 * (an error line, the connection gone, no word within XFER_ACK_TIMEOUT_MS)
 * the source resumes it, nothing lost, and the request fails.
 *
 * With "connections": N (2..16) the page data goes over N connections to
 * the same address, a parallel stream (docs/stream.md); the destination
 * takes them all on its one listening socket.
 *
 * Owns: nothing beyond one request; the sockets and files it opens are
 * closed before it returns.
 *
 * Errors: -EINVAL (a bad address), -errno of socket calls, the engine's.
 */
#ifndef MEMVISOR_CLI_XFER_H
#define MEMVISOR_CLI_XFER_H

#include <stdbool.h>
#include <stddef.h>

#include "hv/hv.h"

#define XFER_ACK_TIMEOUT_MS 60000
/* A migration socket that moves no byte for this long fails the
 * migration (SO_SNDTIMEO at the source, SO_RCVTIMEO at the destination):
 * a peer that stalls cannot hold either side forever. */
#define XFER_IO_TIMEOUT_MS 120000
/* How long a destination waits for a parallel stream's extra
 * connections once its main one named them. */
#define XFER_ACCEPT_TIMEOUT_MS 30000

/* tcp:HOST:PORT or unix:PATH: a connected stream socket, or -errno. */
int xfer_connect(const char *addr, char *err, size_t errlen);
/* The same addresses: a listening socket, or -errno. */
int xfer_listen(const char *addr, char *err, size_t errlen);
/* The next connection on a listening socket, within timeout_ms, with
 * XFER_IO_TIMEOUT_MS on its reads; or -errno (-ETIMEDOUT). */
int xfer_accept(int lfd, int timeout_ms, char *err, size_t errlen);

/* Is this control request one of ours ("migrate", "save")? */
bool xfer_request(const char *line);
/* Serve it: progress lines ({"progress":{...}}) go to client_fd as the
 * save runs; the final response (one line, no newline) goes to resp.
 * *stopped is set when the domain left (migrated, or saved with stop). */
void xfer_handle(struct domain *d, const char *line, int client_fd,
                 char *resp, size_t len, bool *stopped);

/* The destination's word after a restore over fd. */
void xfer_ack(int fd, int rc, const char *err);

#endif
