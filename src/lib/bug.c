#include <stdio.h>
#include <stdlib.h>

#include "lib/compiler.h"

void lib_bug(const char *file, int line, const char *cond)
{
    fprintf(stderr, "memvisor: BUG at %s:%d: %s\n", file, line, cond);
    abort();
}
