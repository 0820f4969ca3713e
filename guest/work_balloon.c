#include "guest.h"
static const char *const balloon_counters[] = {NULL};
static int balloon_run(struct kernel *k, struct vcpu *v) { (void)k; (void)v; return 0; }
const struct workload work_balloon = {.name = "balloon", .run = balloon_run, .counters = balloon_counters};
