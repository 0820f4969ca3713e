#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testlib.h"

uint64_t test_seed(uint64_t fallback)
{
    const char *s = getenv("MEMVISOR_SEED");
    uint64_t seed = s ? strtoull(s, NULL, 0) : fallback;

    if (!seed)
        seed = 1;
    test_note("seed %" PRIu64 " (set MEMVISOR_SEED to repeat)", seed);
    return seed;
}

uint64_t test_scale(uint64_t n)
{
    const char *s = getenv("MEMVISOR_TEST_SCALE");
    double k = s ? strtod(s, NULL) : 1.0;

    if (k <= 0)
        k = 1.0;
    return (uint64_t)((double)n * k) ?: 1;
}

/* Every line of the note becomes its own TAP comment line. */
void test_note(const char *fmt, ...)
{
    va_list ap;
    char *text = NULL, *p, *nl;
    int n;

    va_start(ap, fmt);
    n = vasprintf(&text, fmt, ap);
    va_end(ap);
    if (n < 0) {
        printf("# (note lost: out of memory)\n");
        fflush(stdout);
        return;
    }
    p = text;
    do {
        nl = strchr(p, '\n');
        printf("# %.*s\n", (int)(nl ? nl - p : (long)strlen(p)), p);
        p = nl ? nl + 1 : NULL;
    } while (p && *p);
    free(text);
    fflush(stdout);
}

/* ---- "not ok N # SKIP" -> "ok N # SKIP" (see testlib.h) ------------------ */

static struct {
    pthread_mutex_t lock;
    char line[4096];
    size_t len;
} tap = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void tap_out(const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(STDOUT_FILENO, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

/* "not ok <digits> # SKIP": cmocka's skipped subtest. */
static bool tap_is_skip(const char *l, size_t n)
{
    size_t i = 7;

    if (n < 7 || memcmp(l, "not ok ", 7))
        return false;
    while (i < n && l[i] >= '0' && l[i] <= '9')
        i++;
    return i > 7 && n - i >= 7 && !memcmp(l + i, " # SKIP", 7);
}

static void tap_emit_locked(void)
{
    if (tap_is_skip(tap.line, tap.len))
        tap_out(tap.line + 4, tap.len - 4); /* drop "not " */
    else
        tap_out(tap.line, tap.len);
    tap.len = 0;
}

static ssize_t tap_write(void *cookie, const char *buf, size_t size)
{
    (void)cookie;
    pthread_mutex_lock(&tap.lock);
    for (size_t i = 0; i < size; i++) {
        tap.line[tap.len++] = buf[i];
        if (buf[i] == '\n' || tap.len == sizeof(tap.line))
            tap_emit_locked();
    }
    pthread_mutex_unlock(&tap.lock);
    return (ssize_t)size;
}

/* A last line without its newline still goes out. */
static void tap_exit(void)
{
    fflush(stdout);
    pthread_mutex_lock(&tap.lock);
    if (tap.len)
        tap_emit_locked();
    pthread_mutex_unlock(&tap.lock);
}

__attribute__((constructor)) static void tap_init(void)
{
    static cookie_io_functions_t io = {.write = tap_write};
    FILE *f = fopencookie(NULL, "w", io);

    if (!f)
        return; /* plain stdout: skips would read as failures, not passes */
    setvbuf(f, NULL, _IONBF, 0);
    fflush(stdout);
    stdout = f; /* glibc: stdout is a plain variable */
    atexit(tap_exit);
}

void test_note_lines(const char *what, const char *text)
{
    const char *p = text, *nl;

    test_note("%s:", what);
    while (p && *p) {
        nl = strchr(p, '\n');
        test_note("  %.*s", (int)(nl ? nl - p : (long)strlen(p)), p);
        p = nl ? nl + 1 : NULL;
    }
}

uint8_t *test_load_file(const char *path, size_t *size)
{
    struct stat st;
    uint8_t *buf = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return NULL;
    if (fstat(fd, &st) == 0 && (buf = malloc((size_t)st.st_size + 1)) &&
        read(fd, buf, (size_t)st.st_size) == st.st_size) {
        *size = (size_t)st.st_size;
    } else {
        free(buf);
        buf = NULL;
    }
    close(fd);
    return buf;
}

int test_make_file(char *tmpl, size_t bytes)
{
    int fd = mkstemp(tmpl), r = 0;

    if (fd < 0)
        return -errno;
    if (ftruncate(fd, (off_t)bytes) < 0)
        r = -errno;
    close(fd);
    return r;
}

int test_run_cmd(const char *cmd, char *out, size_t len)
{
    FILE *p = popen(cmd, "r");
    size_t n = 0, k;
    int status;

    if (len)
        out[0] = 0;
    if (!p)
        return -1;
    while (len && n < len - 1 && (k = fread(out + n, 1, len - 1 - n, p)) > 0)
        n += k;
    if (len)
        out[n] = 0;
    while (fgetc(p) != EOF) /* the rest: let the command finish */
        ;
    status = pclose(p);
    return status != -1 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

double test_now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void test_sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}
