/* buf.c - growable byte buffer (see buf.h). */
#include "buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sp_buf_init(sp_buf_t *b)
{
    b->data = NULL;
    b->len = b->cap = 0;
    b->oom = false;
}

void sp_buf_free(sp_buf_t *b)
{
    free(b->data);
    sp_buf_init(b);
}

void sp_buf_reset(sp_buf_t *b)
{
    b->len = 0;
    b->oom = false;
    if (b->data) b->data[0] = '\0';
}

bool sp_buf_reserve(sp_buf_t *b, size_t extra)
{
    if (b->oom) return false;
    if (extra > SIZE_MAX / 2 - b->len) {
        b->oom = true;
        return false;
    }
    size_t need = b->len + extra + 1;
    if (need <= b->cap) return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p) {
        b->oom = true;
        return false;
    }
    b->data = p;
    b->cap = cap;
    return true;
}

void sp_buf_append(sp_buf_t *b, const void *p, size_t n)
{
    if (!sp_buf_reserve(b, n)) return;
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void sp_buf_puts(sp_buf_t *b, const char *s)
{
    sp_buf_append(b, s, strlen(s));
}

void sp_buf_putc(sp_buf_t *b, char c)
{
    if (!sp_buf_reserve(b, 1)) return;
    b->data[b->len++] = c;
    b->data[b->len] = '\0';
}

void sp_buf_printf(sp_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char small[256];
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof small) {
        sp_buf_append(b, small, (size_t)n);
        return;
    }
    if (!sp_buf_reserve(b, (size_t)n)) return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void sp_buf_u64(sp_buf_t *b, uint64_t v)
{
    char tmp[24];
    size_t i = sizeof tmp;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    sp_buf_append(b, tmp + i, sizeof tmp - i);
}

void sp_buf_i64(sp_buf_t *b, int64_t v)
{
    if (v < 0) {
        sp_buf_putc(b, '-');
        sp_buf_u64(b, (uint64_t)0 - (uint64_t)v);
    } else {
        sp_buf_u64(b, (uint64_t)v);
    }
}

void sp_buf_json_str(sp_buf_t *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    if (!sp_buf_reserve(b, n + 2)) return;
    b->data[b->len++] = '"';
    size_t run = 0; /* start of the pending run of bytes that need no escape */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        sp_buf_append(b, s + run, i - run);
        run = i + 1;
        switch (c) {
        case '"':
            sp_buf_append(b, "\\\"", 2);
            break;
        case '\\':
            sp_buf_append(b, "\\\\", 2);
            break;
        case '\n':
            sp_buf_append(b, "\\n", 2);
            break;
        case '\r':
            sp_buf_append(b, "\\r", 2);
            break;
        case '\t':
            sp_buf_append(b, "\\t", 2);
            break;
        case '\b':
            sp_buf_append(b, "\\b", 2);
            break;
        case '\f':
            sp_buf_append(b, "\\f", 2);
            break;
        default: {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            sp_buf_append(b, e, 6);
        }
        }
    }
    sp_buf_append(b, s + run, n - run);
    sp_buf_putc(b, '"');
}

char *sp_buf_steal(sp_buf_t *b, size_t *len)
{
    char *p = b->data;
    if (len) *len = b->len;
    if (!p) {
        p = malloc(1);
        if (p) p[0] = '\0';
    }
    sp_buf_init(b);
    return p;
}
