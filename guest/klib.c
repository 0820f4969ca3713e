/* klib.c - strings, formatter, command line, PRNG (see klib.h). */
#include "klib.h"

void *kmemset(void *dst, int c, size_t n)
{
    unsigned char *d = dst;
    while (n--)
        *d++ = (unsigned char)c;
    return dst;
}

void *kmemcpy(void *dst, const void *src, size_t n)
{
    unsigned char *d = dst;
    const unsigned char *s = src;
    while (n--)
        *d++ = *s++;
    return dst;
}

int kmemcmp(const void *a, const void *b, size_t n)
{
    const unsigned char *x = a, *y = b;
    for (; n; n--, x++, y++)
        if (*x != *y)
            return *x < *y ? -1 : 1;
    return 0;
}

size_t kstrnlen(const char *s, size_t max)
{
    size_t n = 0;
    while (n < max && s[n])
        n++;
    return n;
}

int kstrncmp(const char *a, const char *b, size_t n)
{
    for (; n; n--, a++, b++) {
        if (*a != *b)
            return (unsigned char)*a < (unsigned char)*b ? -1 : 1;
        if (!*a)
            return 0;
    }
    return 0;
}

struct out {
    char *buf;
    size_t size;
    size_t len;
};

static void put(struct out *o, char c)
{
    if (o->len + 1 < o->size)
        o->buf[o->len] = c;
    o->len++;
}

static void put_padded(struct out *o, const char *s, size_t n, int width,
                       bool left, char pad)
{
    int fill = width > (int)n ? width - (int)n : 0;
    if (!left)
        while (fill-- > 0)
            put(o, pad);
    for (size_t i = 0; i < n; i++)
        put(o, s[i]);
    if (left)
        while (fill-- > 0)
            put(o, ' ');
}

static size_t utoa(char *tmp, uint64_t v, unsigned base)
{
    static const char digits[] = "0123456789abcdef";
    char rev[24];
    size_t n = 0;
    do {
        rev[n++] = digits[v % base];
        v /= base;
    } while (v);
    for (size_t i = 0; i < n; i++)
        tmp[i] = rev[n - 1 - i];
    return n;
}

int kvsnprintf(char *buf, size_t size, const char *fmt, va_list ap)
{
    struct out o = {buf, size, 0};
    char tmp[32];

    for (const char *p = fmt; *p; p++) {
        if (*p != '%') {
            put(&o, *p);
            continue;
        }
        p++;
        bool left = false;
        char pad = ' ';
        for (;; p++) {
            if (*p == '-')
                left = true;
            else if (*p == '0')
                pad = '0';
            else
                break;
        }
        int width = 0;
        while (*p >= '0' && *p <= '9')
            width = width * 10 + (*p++ - '0');
        int lng = 0;
        while (*p == 'l' || *p == 'z') {
            lng++;
            p++;
        }
        switch (*p) {
        case 's': {
            const char *s = va_arg(ap, const char *);
            if (!s)
                s = "(null)";
            put_padded(&o, s, kstrnlen(s, 4096), width, left, ' ');
            break;
        }
        case 'c':
            tmp[0] = (char)va_arg(ap, int);
            put_padded(&o, tmp, 1, width, left, ' ');
            break;
        case 'd':
        case 'i': {
            int64_t v = lng ? va_arg(ap, int64_t) : va_arg(ap, int);
            size_t n = 0;
            uint64_t mag = (uint64_t)v;
            if (v < 0) {
                tmp[n++] = '-';
                mag = -mag;
            }
            n += utoa(tmp + n, mag, 10);
            put_padded(&o, tmp, n, width, left, pad);
            break;
        }
        case 'u':
        case 'x': {
            uint64_t v = lng ? va_arg(ap, uint64_t) : va_arg(ap, unsigned);
            size_t n = utoa(tmp, v, *p == 'u' ? 10 : 16);
            put_padded(&o, tmp, n, width, left, pad);
            break;
        }
        case 'p': {
            uint64_t v = (uint64_t)(uintptr_t)va_arg(ap, void *);
            tmp[0] = '0';
            tmp[1] = 'x';
            size_t n = 2 + utoa(tmp + 2, v, 16);
            put_padded(&o, tmp, n, width, left, ' ');
            break;
        }
        case '%':
            put(&o, '%');
            break;
        case '\0':
            p--;
            break;
        default:
            put(&o, '%');
            put(&o, *p);
            break;
        }
    }
    if (size)
        buf[o.len < size ? o.len : size - 1] = '\0';
    return (int)o.len;
}

int ksnprintf(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = kvsnprintf(buf, size, fmt, ap);
    va_end(ap);
    return n;
}

/* Finds a bare word (is_key false) or the value of key=value (is_key true)
 * among the space-separated words of s. */
static bool find_word(const char *s, size_t max, const char *key, bool is_key,
                      const char **value)
{
    size_t klen = kstrnlen(key, 64);
    size_t i = 0;
    while (i < max && s[i]) {
        while (i < max && s[i] == ' ')
            i++;
        size_t start = i;
        while (i < max && s[i] && s[i] != ' ')
            i++;
        size_t len = i - start;
        if (len == 0)
            break;
        if (is_key) {
            if (len > klen && s[start + klen] == '=' &&
                kstrncmp(s + start, key, klen) == 0) {
                *value = s + start + klen + 1;
                return true;
            }
        } else if (len == klen && kstrncmp(s + start, key, klen) == 0) {
            return true;
        }
    }
    return false;
}

bool cmdline_has(const char *cmdline, size_t max, const char *word)
{
    return find_word(cmdline, max, word, false, NULL);
}

uint64_t cmdline_get(const char *cmdline, size_t max, const char *key,
                     uint64_t def)
{
    const char *v = NULL;
    if (!find_word(cmdline, max, key, true, &v))
        return def;
    const char *end = cmdline + max;
    unsigned base = 10;
    if (v + 1 < end && v[0] == '0' && (v[1] == 'x' || v[1] == 'X')) {
        base = 16;
        v += 2;
    }
    uint64_t n = 0;
    bool any = false;
    for (; v < end && *v && *v != ' '; v++) {
        unsigned d;
        if (*v >= '0' && *v <= '9')
            d = (unsigned)(*v - '0');
        else if (base == 16 && *v >= 'a' && *v <= 'f')
            d = (unsigned)(*v - 'a' + 10);
        else if (base == 16 && *v >= 'A' && *v <= 'F')
            d = (unsigned)(*v - 'A' + 10);
        else
            return def;
        if (n > (UINT64_MAX - d) / base)
            return def;
        n = n * base + d;
        any = true;
    }
    return any ? n : def;
}

void krand_seed(struct krand *r, uint64_t seed)
{
    r->state = seed ? seed : 0x9E3779B97F4A7C15ULL;
}

uint64_t krand(struct krand *r)
{
    uint64_t x = r->state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

uint64_t krand_below(struct krand *r, uint64_t bound)
{
    return krand(r) % bound;
}
