/*
 * Corpus replayer: runs LLVMFuzzerTestOneInput() over every file of the
 * directories and files named on the command line, in the normal
 * (gcc, ASan+UBSan) build.  Prints TAP: one test per input.
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int run_file(const char *path, unsigned *n)
{
    FILE *fp = fopen(path, "rb");
    uint8_t *buf;
    long len;

    if (!fp) {
        printf("not ok %u - %s: %s\n", ++*n, path, strerror(errno));
        return 1;
    }
    fseek(fp, 0, SEEK_END);
    len = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    buf = malloc(len > 0 ? (size_t)len : 1);
    if (!buf || fread(buf, 1, (size_t)len, fp) != (size_t)len) {
        printf("not ok %u - %s: read failed\n", ++*n, path);
        fclose(fp);
        free(buf);
        return 1;
    }
    fclose(fp);
    LLVMFuzzerTestOneInput(buf, (size_t)len);
    free(buf);
    printf("ok %u - %s\n", ++*n, path);
    return 0;
}

int main(int argc, char **argv)
{
    unsigned n = 0, fails = 0;
    int i;

    for (i = 1; i < argc; i++) {
        struct stat st;
        DIR *dir;
        struct dirent *de;
        char **names = NULL;
        size_t count = 0, k;

        if (stat(argv[i], &st) < 0 || !S_ISDIR(st.st_mode)) {
            fails += run_file(argv[i], &n);
            continue;
        }
        dir = opendir(argv[i]);
        if (!dir) {
            printf("not ok %u - %s: %s\n", ++n, argv[i], strerror(errno));
            fails++;
            continue;
        }
        while ((de = readdir(dir))) {
            char **nn;
            if (de->d_name[0] == '.')
                continue;
            nn = realloc(names, (count + 1) * sizeof(*names));
            if (!nn)
                break;
            names = nn;
            if (asprintf(&names[count], "%s/%s", argv[i], de->d_name) < 0)
                break;
            count++;
        }
        closedir(dir);
        qsort(names, count, sizeof(*names), cmp);
        for (k = 0; k < count; k++) {
            fails += run_file(names[k], &n);
            free(names[k]);
        }
        free(names);
    }
    if (!n) {
        printf("not ok 1 - empty corpus\n");
        fails++;
        n = 1;
    }
    printf("1..%u\n", n);
    printf("# replayed %u inputs\n", n);
    return fails ? 1 : 0;
}
