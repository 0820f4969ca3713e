#include "guest.h"
static const char *const hostile_counters[] = {NULL};
static int hostile_run(struct kernel *k, struct vcpu *v) { (void)k; (void)v; return 0; }
const struct workload work_hostile = {.name = "hostile", .run = hostile_run, .counters = hostile_counters};
