/*
 * sample.h - a small, valid PV stream built in memory (unit tests, and the
 * seed of the stream reader's fuzz corpus).
 */
#ifndef MEMVISOR_TESTS_MIGRATE_SAMPLE_H
#define MEMVISOR_TESTS_MIGRATE_SAMPLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A stream of 2 vCPUs and 16 pages (a pinned L4, an L1, data pages, a
 * zero page, a device record, an optional ROUND record), zstd-compressed
 * page data if zstd; *len bytes, malloc'd.  NULL on failure. */
uint8_t *sample_stream(bool zstd, size_t *len);

#endif
