/*
 * json.c - the strict JSON scanner: one validating pass over the client's bytes, then iteration,
 * decoding and key comparison by spans into them (see json.h).
 */
#include "json.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sp.h"

/* The container stack is a bit set on the C stack, so max_depth is clamped to what it holds. */
#define DEPTH_CAP 1024

/* Classes of bytes inside a string; everything but C_PLAIN leaves the fast path. */
enum { C_PLAIN = 0, C_QUOTE, C_BSLASH, C_CTRL, C_HIGH };

/* clang-format off */
#define R16(x) x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x
static const unsigned char str_class[256] = {
    R16(C_CTRL), R16(C_CTRL),                               /* 0x00-0x1f */
    0, 0, C_QUOTE, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,   /* 0x20-0x2f */
    R16(0), R16(0),                                         /* 0x30-0x4f */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, C_BSLASH, 0, 0, 0,  /* 0x50-0x5f */
    R16(0), R16(0),                                         /* 0x60-0x7f */
    R16(C_HIGH), R16(C_HIGH), R16(C_HIGH), R16(C_HIGH),
    R16(C_HIGH), R16(C_HIGH), R16(C_HIGH), R16(C_HIGH),     /* 0x80-0xff */
};
#undef R16
/* clang-format on */

typedef const unsigned char *uptr;

typedef struct {
    uptr base;
    char *err;
    size_t errlen;
} scan_t;

__attribute__((format(printf, 2, 3))) static int fail(scan_t *s, const char *fmt, ...)
{
    if (s->err && s->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(s->err, s->errlen, fmt, ap);
        va_end(ap);
    }
    return SP_EINVAL;
}

static int fail_at(scan_t *s, uptr at, const char *what)
{
    return fail(s, "invalid JSON at byte %zu: %s", (size_t)(at - s->base), what);
}

static inline bool is_ws(unsigned char c)
{
    return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

static inline bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* Word-at-a-time tests on 8 bytes (exact as a whole, not per byte): used to run over long plain
 * stretches of strings. */
#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

static inline uint64_t load8(const void *p)
{
    uint64_t w;
    memcpy(&w, p, 8);
    return w;
}

static inline uint64_t has_zero(uint64_t w)
{
    return (w - ONES) & ~w & HIGHS;
}

/* True when any of the 8 bytes is '"' or '\\'. */
static inline bool has_quote_or_bslash(uint64_t w)
{
    return (has_zero(w ^ (ONES * '"')) | has_zero(w ^ (ONES * '\\'))) != 0;
}

/* True when any of the 8 bytes leaves the validator's fast path: '"', '\\', below 0x20 or
 * above 0x7f. */
static inline bool has_special(uint64_t w)
{
    return ((w | ((w - ONES * 0x20) & ~w)) & HIGHS) != 0 || has_quote_or_bslash(w);
}

static inline uptr skip_ws(uptr p, uptr end)
{
    while (p < end && is_ws(*p)) p++;
    return p;
}

/* The length (1-4) of the well-formed UTF-8 sequence at p, or 0. Follows Unicode's table of
 * well-formed sequences, which rules out overlongs, UTF-16 surrogates and code points past
 * U+10FFFF. */
static size_t utf8_seq(uptr p, uptr end)
{
    unsigned c = p[0];
    size_t avail = (size_t)(end - p);
    if (c < 0x80) return 1;
    if (c < 0xC2) return 0;
    if (c < 0xE0) return avail >= 2 && (p[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c < 0xF0) {
        unsigned lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
        if (avail < 3 || p[1] < lo || p[1] > hi || (p[2] & 0xC0) != 0x80) return 0;
        return 3;
    }
    if (c < 0xF5) {
        unsigned lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
        if (avail < 4 || p[1] < lo || p[1] > hi || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80)
            return 0;
        return 4;
    }
    return 0;
}

size_t sp_json_utf8_span(const char *s, size_t len)
{
    if (!len) return 0;
    uptr p = (uptr)s, end = p + len;
    while (p < end) {
        if (*p < 0x80) {
            p++;
            continue;
        }
        size_t n = utf8_seq(p, end);
        if (!n) break;
        p += n;
    }
    return (size_t)(p - (uptr)s);
}

/* The value of four hex digits at p, or -1. */
static long hex4(uptr p, uptr end)
{
    if (end - p < 4) return -1;
    long v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = p[i];
        unsigned d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
            d = (c | 0x20) - 'a' + 10;
        else
            return -1;
        v = v * 16 + (long)d;
    }
    return v;
}

static inline bool is_high_surrogate(long cp)
{
    return cp >= 0xD800 && cp <= 0xDBFF;
}

static inline bool is_low_surrogate(long cp)
{
    return cp >= 0xDC00 && cp <= 0xDFFF;
}

/* Validates the escape at p (a backslash); returns the position after it, or NULL. */
static uptr scan_escape(scan_t *s, uptr p, uptr end)
{
    if (end - p < 2) {
        fail_at(s, p, "unterminated string");
        return NULL;
    }
    switch (p[1]) {
    case '"':
    case '\\':
    case '/':
    case 'b':
    case 'f':
    case 'n':
    case 'r':
    case 't':
        return p + 2;
    case 'u':
        break;
    default:
        fail_at(s, p, "invalid escape (use \\\" \\\\ \\/ \\b \\f \\n \\r \\t or \\uXXXX)");
        return NULL;
    }
    long cp = hex4(p + 2, end);
    if (cp < 0) {
        fail_at(s, p, "invalid \\u escape (needs four hex digits)");
        return NULL;
    }
    if (is_high_surrogate(cp)) {
        if (end - p >= 12 && p[6] == '\\' && p[7] == 'u' && is_low_surrogate(hex4(p + 8, end)))
            return p + 12;
    } else if (!is_low_surrogate(cp)) {
        return p + 6;
    }
    fail(s, "lone surrogate escape at byte %zu", (size_t)(p - s->base));
    return NULL;
}

/* Validates the string whose opening quote is at p; returns the position after its closing
 * quote, or NULL. */
static uptr scan_string(scan_t *s, uptr p, uptr end)
{
    uptr open = p++;
    for (;;) {
        while (end - p >= 8 && !has_special(load8(p))) p += 8;
        while (p < end && str_class[*p] == C_PLAIN) p++;
        if (p >= end) {
            fail_at(s, open, "unterminated string");
            return NULL;
        }
        switch (str_class[*p]) {
        case C_QUOTE:
            return p + 1;
        case C_CTRL:
            fail_at(s, p, "control character in string (escape it, e.g. \\n or \\u0001)");
            return NULL;
        case C_HIGH: {
            size_t n = utf8_seq(p, end);
            if (!n) {
                fail(s, "invalid UTF-8 at byte %zu", (size_t)(p - s->base));
                return NULL;
            }
            p += n;
            break;
        }
        default:
            p = scan_escape(s, p, end);
            if (!p) return NULL;
        }
    }
}

static uptr scan_number(scan_t *s, uptr p, uptr end)
{
    if (*p == '-') p++;
    if (p >= end || !is_digit(*p)) {
        fail_at(s, p, "expected a digit in number");
        return NULL;
    }
    if (*p == '0') {
        p++;
        if (p < end && is_digit(*p)) {
            fail_at(s, p - 1, "leading zero in number");
            return NULL;
        }
    } else {
        while (p < end && is_digit(*p)) p++;
    }
    if (p < end && *p == '.') {
        p++;
        if (p >= end || !is_digit(*p)) {
            fail_at(s, p, "expected a digit after the decimal point");
            return NULL;
        }
        while (p < end && is_digit(*p)) p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-')) p++;
        if (p >= end || !is_digit(*p)) {
            fail_at(s, p, "expected a digit in the exponent");
            return NULL;
        }
        while (p < end && is_digit(*p)) p++;
    }
    return p;
}

static uptr scan_literal(scan_t *s, uptr p, uptr end, const char *lit, size_t n)
{
    if ((size_t)(end - p) < n || memcmp(p, lit, n) != 0) {
        fail_at(s, p, "expected a value (true, false, null, a number, a string, [ or {)");
        return NULL;
    }
    return p + n;
}

static sp_json_type_t type_of(unsigned char c)
{
    switch (c) {
    case '{':
        return SP_JSON_OBJECT;
    case '[':
        return SP_JSON_ARRAY;
    case '"':
        return SP_JSON_STRING;
    case 't':
        return SP_JSON_TRUE;
    case 'f':
        return SP_JSON_FALSE;
    case 'n':
        return SP_JSON_NULL;
    default:
        return SP_JSON_NUMBER;
    }
}

/* One pass, iterative: containers open and close on an explicit bit stack (1 = object), so
 * that neither the depth limit nor hostile input can grow the C stack. */
int sp_json_parse(const char *text, size_t len, int max_depth, sp_json_val_t *out, char *err,
                  size_t errlen)
{
    if (!text) text = "";
    uptr p = (uptr)text, end = p + len;
    scan_t s = {p, err, errlen};
    uint64_t stack[DEPTH_CAP / 64];
    int depth = 0;
    bool in_obj = false;

    if (max_depth > DEPTH_CAP) max_depth = DEPTH_CAP;
    if (max_depth < 0) max_depth = 0;
    if (len >= 3 && p[0] == 0xEF && p[1] == 0xBB && p[2] == 0xBF)
        return fail(&s, "byte-order mark not allowed at byte 0 (send UTF-8 without one)");
    p = skip_ws(p, end);
    if (p >= end) return fail_at(&s, p, "no value (empty document)");
    uptr vstart = p;

value:
    if (p >= end) return fail_at(&s, p, "unexpected end of input, expected a value");
    switch (*p) {
    case '{':
    case '[':
        if (depth >= max_depth)
            return fail(&s, "nesting deeper than %d at byte %zu", max_depth, (size_t)(p - s.base));
        in_obj = *p == '{';
        if (in_obj)
            stack[depth / 64] |= (uint64_t)1 << (depth % 64);
        else
            stack[depth / 64] &= ~((uint64_t)1 << (depth % 64));
        depth++;
        p = skip_ws(p + 1, end);
        if (p < end && *p == (in_obj ? '}' : ']')) {
            p++;
            goto close;
        }
        if (in_obj) goto key;
        goto value;
    case '"':
        p = scan_string(&s, p, end);
        break;
    case 't':
        p = scan_literal(&s, p, end, "true", 4);
        break;
    case 'f':
        p = scan_literal(&s, p, end, "false", 5);
        break;
    case 'n':
        p = scan_literal(&s, p, end, "null", 4);
        break;
    case '-':
    case '0':
    case '1':
    case '2':
    case '3':
    case '4':
    case '5':
    case '6':
    case '7':
    case '8':
    case '9':
        p = scan_number(&s, p, end);
        break;
    default:
        return fail_at(&s, p, "expected a value (true, false, null, a number, a string, [ or {)");
    }
    if (!p) return SP_EINVAL;
    goto after;

key:
    if (p >= end) return fail_at(&s, p, "unexpected end of input, expected a key");
    if (*p != '"') return fail_at(&s, p, "expected a key in double quotes");
    p = scan_string(&s, p, end);
    if (!p) return SP_EINVAL;
    p = skip_ws(p, end);
    if (p >= end || *p != ':') return fail_at(&s, p, "expected ':' after the key");
    p = skip_ws(p + 1, end);
    goto value;

close:
    depth--;
    if (depth > 0) in_obj = (stack[(depth - 1) / 64] >> ((depth - 1) % 64)) & 1;

after:
    if (depth == 0) {
        uptr vend = p;
        p = skip_ws(p, end);
        if (p != end) return fail_at(&s, p, "unexpected data after the value");
        out->type = type_of(*vstart);
        out->start = (const char *)vstart;
        out->len = (size_t)(vend - vstart);
        return 0;
    }
    p = skip_ws(p, end);
    if (p >= end)
        return fail_at(&s, p,
                       in_obj ? "unexpected end of input, expected '}'"
                              : "unexpected end of input, expected ']'");
    if (*p == ',') {
        p = skip_ws(p + 1, end);
        if (in_obj) goto key;
        goto value;
    }
    if (*p == (in_obj ? '}' : ']')) {
        p++;
        goto close;
    }
    return fail_at(&s, p, in_obj ? "expected ',' or '}'" : "expected ',' or ']'");
}

/* ---- walking validated text ---------------------------------------------------------------- */

/* Past the closing quote of the string opening at p. */
static const char *skip_string(const char *p, const char *end)
{
    for (p++;;) {
        while (end - p >= 8 && !has_quote_or_bslash(load8(p))) p += 8;
        while (p < end && *p != '"' && *p != '\\') p++;
        if (p >= end) return end;
        if (*p == '"') return p + 1;
        if (end - p < 2) return end;
        p += 2;
    }
}

/* Bytes that matter while skipping a container. */
enum { K_PLAIN = 0, K_QUOTE, K_OPEN, K_CLOSE };
static const unsigned char skip_class[256] = {
    ['"'] = K_QUOTE, ['['] = K_OPEN, ['{'] = K_OPEN, [']'] = K_CLOSE, ['}'] = K_CLOSE,
};

static const char *skip_value(const char *p, const char *end)
{
    switch (*p) {
    case '"':
        return skip_string(p, end);
    case '{':
    case '[': {
        size_t depth = 0;
        while (p < end) {
            unsigned char k = skip_class[(unsigned char)*p];
            if (k == K_PLAIN) {
                p++;
            } else if (k == K_QUOTE) {
                p = skip_string(p, end);
            } else if (k == K_OPEN) {
                depth++;
                p++;
            } else {
                p++;
                if (--depth == 0) return p;
            }
        }
        return end;
    }
    case 't':
    case 'n':
        return end - p >= 4 ? p + 4 : end;
    case 'f':
        return end - p >= 5 ? p + 5 : end;
    default:
        while (p < end && (is_digit((unsigned char)*p) || *p == '-' || *p == '+' || *p == '.' ||
                           *p == 'e' || *p == 'E'))
            p++;
        return p;
    }
}

static const char *skip_ws_c(const char *p, const char *end)
{
    while (p < end && is_ws((unsigned char)*p)) p++;
    return p;
}

/* The value starting at p; returns the position after it. */
static const char *value_at(const char *p, const char *end, sp_json_val_t *v)
{
    const char *q = skip_value(p, end);
    if (q == p) q = p + 1; /* text that was not validated: still make progress */
    v->type = type_of((unsigned char)*p);
    v->start = p;
    v->len = (size_t)(q - p);
    return q;
}

void sp_json_iter_init(sp_json_iter_t *it, sp_json_val_t container)
{
    if ((container.type == SP_JSON_ARRAY || container.type == SP_JSON_OBJECT) && container.start &&
        container.len >= 2) {
        it->p = container.start + 1;
        it->end = container.start + container.len - 1;
    } else {
        it->p = it->end = container.start;
    }
}

/* Moves to the next element's first byte; false at the end. */
static bool iter_advance(sp_json_iter_t *it)
{
    const char *p = skip_ws_c(it->p, it->end);
    if (p < it->end && *p == ',') p = skip_ws_c(p + 1, it->end);
    it->p = p;
    return p < it->end;
}

bool sp_json_arr_next(sp_json_iter_t *it, sp_json_val_t *val)
{
    if (!iter_advance(it)) return false;
    it->p = value_at(it->p, it->end, val);
    return true;
}

bool sp_json_obj_next(sp_json_iter_t *it, sp_json_val_t *key, sp_json_val_t *val)
{
    if (!iter_advance(it)) return false;
    const char *p = value_at(it->p, it->end, key);
    p = skip_ws_c(p, it->end);
    if (p < it->end && *p == ':') p++;
    p = skip_ws_c(p, it->end);
    if (p >= it->end) {
        /* Only reachable on text that was not validated: end cleanly rather than overrun. */
        it->p = it->end;
        return false;
    }
    it->p = value_at(p, it->end, val);
    return true;
}

size_t sp_json_arr_len(sp_json_val_t arr)
{
    sp_json_iter_t it;
    sp_json_val_t v;
    size_t n = 0;
    sp_json_iter_init(&it, arr);
    while (sp_json_arr_next(&it, &v)) n++;
    return n;
}

bool sp_json_obj_get(sp_json_val_t obj, const char *key, sp_json_val_t *val)
{
    sp_json_iter_t it;
    sp_json_val_t k, v;
    sp_json_iter_init(&it, obj);
    while (sp_json_obj_next(&it, &k, &v)) {
        if (sp_json_str_eq(k, key)) {
            *val = v;
            return true;
        }
    }
    return false;
}

/* ---- strings --------------------------------------------------------------------------------- */

static size_t utf8_put(unsigned char *out, unsigned long cp)
{
    if (cp < 0x80) {
        out[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (unsigned char)(0xC0 | (cp >> 6));
        out[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xE0 | (cp >> 12));
        out[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (unsigned char)(0xF0 | (cp >> 18));
    out[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Decodes the escape at *pp (a backslash) into out (1-4 bytes) and moves *pp past it. Text that
 * was not validated decodes to U+FFFD where it is malformed, never reading past end. */
static size_t decode_escape(const char **pp, const char *end, unsigned char out[4])
{
    uptr p = (uptr)*pp, e = (uptr)end;
    if (e - p < 2) {
        *pp = end;
        return utf8_put(out, 0xFFFD);
    }
    unsigned char c = p[1];
    *pp += 2;
    switch (c) {
    case 'b':
        out[0] = '\b';
        return 1;
    case 'f':
        out[0] = '\f';
        return 1;
    case 'n':
        out[0] = '\n';
        return 1;
    case 'r':
        out[0] = '\r';
        return 1;
    case 't':
        out[0] = '\t';
        return 1;
    case 'u':
        break;
    default:
        out[0] = c;
        return 1;
    }
    long cp = hex4(p + 2, e);
    if (cp < 0) return utf8_put(out, 0xFFFD);
    *pp += 4;
    if (is_high_surrogate(cp)) {
        long lo = e - p >= 12 && p[6] == '\\' && p[7] == 'u' ? hex4(p + 8, e) : -1;
        if (!is_low_surrogate(lo)) return utf8_put(out, 0xFFFD);
        *pp += 6;
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
    } else if (is_low_surrogate(cp)) {
        cp = 0xFFFD;
    }
    return utf8_put(out, (unsigned long)cp);
}

/* The inside of a STRING value (between the quotes); false for anything else. */
static bool str_inner(sp_json_val_t str, const char **p, const char **end)
{
    if (str.type != SP_JSON_STRING || !str.start || str.len < 2) return false;
    *p = str.start + 1;
    *end = str.start + str.len - 1;
    return true;
}

/* A byte-at-a-time reader of a decoded string, for the rare keys that hold escapes. */
typedef struct {
    const char *p, *end;
    unsigned char pend[4];
    size_t npend, ipend;
} str_cur_t;

static int cur_next(str_cur_t *c)
{
    if (c->ipend < c->npend) return c->pend[c->ipend++];
    if (c->p >= c->end) return -1;
    unsigned char ch = (unsigned char)*c->p;
    if (ch != '\\') {
        c->p++;
        return ch;
    }
    c->npend = decode_escape(&c->p, c->end, c->pend);
    c->ipend = 1;
    return c->pend[0];
}

static void put_clipped(char *out, size_t cap, size_t at, const void *src, size_t n)
{
    if (at < cap) memcpy(out + at, src, SP_MIN(n, cap - at));
}

int sp_json_str_decode(sp_json_val_t str, char *out, size_t cap, size_t *outlen)
{
    const char *p, *end;
    size_t n = 0;
    if (!str_inner(str, &p, &end)) {
        *outlen = 0;
        return SP_EINVAL;
    }
    while (p < end) {
        const char *bs = memchr(p, '\\', (size_t)(end - p));
        const char *run_end = bs ? bs : end;
        put_clipped(out, cap, n, p, (size_t)(run_end - p));
        n += (size_t)(run_end - p);
        p = run_end;
        if (p < end) {
            unsigned char tmp[4];
            size_t k = decode_escape(&p, end, tmp);
            put_clipped(out, cap, n, tmp, k);
            n += k;
        }
    }
    *outlen = n;
    return n > cap ? SP_ETOOBIG : 0;
}

size_t sp_json_str_len(sp_json_val_t str)
{
    size_t n;
    sp_json_str_decode(str, NULL, 0, &n);
    return n;
}

bool sp_json_str_eq(sp_json_val_t str, const char *lit)
{
    const char *p, *end;
    if (!str_inner(str, &p, &end)) return false;
    const unsigned char *l = (const unsigned char *)lit;
    /* Raw bytes of a validated string are never NUL, so the end of lit shows as a mismatch. */
    for (; p < end && *p != '\\'; p++, l++)
        if (*l != (unsigned char)*p) return false;
    if (p < end) {
        str_cur_t c = {p, end, {0}, 0, 0};
        int ch;
        while ((ch = cur_next(&c)) >= 0) {
            if (*l == '\0' || *l != ch) return false;
            l++;
        }
    }
    return *l == '\0';
}

size_t sp_json_str_preview(sp_json_val_t str, char *out, size_t cap)
{
    if (!cap) return 0;
    size_t full, room = cap - 1;
    sp_json_str_decode(str, out, room, &full);
    bool cut = full > room;
    size_t n = cut ? (room >= 3 ? room - 3 : 0) : full;
    n = sp_json_utf8_span(out, n); /* drops a sequence cut in half */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)out[i];
        if (c < 0x20 || c == 0x7F) out[i] = '?';
    }
    if (cut && n + 3 <= room) {
        memcpy(out + n, "...", 3);
        n += 3;
    }
    out[n] = '\0';
    return n;
}

/* ---- duplicate keys -------------------------------------------------------------------------- */

typedef struct {
    const char *s; /* inside of the key's quotes; NULL marks an empty hash slot */
    size_t n;
    uint32_t hash;
    bool esc;
} jkey_t;

#define PAIRWISE_MAX 32
#define STACK_SLOTS 512

static jkey_t make_key(sp_json_val_t k)
{
    jkey_t key = {k.start + 1, k.len - 2, 0, false};
    key.esc = memchr(key.s, '\\', key.n) != NULL;
    return key;
}

/* FNV-1a over the decoded bytes, so that "a" and "\u0061" hash alike. */
static uint32_t key_hash(const jkey_t *k)
{
    uint32_t h = 2166136261u;
    if (!k->esc) {
        for (size_t i = 0; i < k->n; i++) h = (h ^ (unsigned char)k->s[i]) * 16777619u;
        return h;
    }
    str_cur_t c = {k->s, k->s + k->n, {0}, 0, 0};
    int ch;
    while ((ch = cur_next(&c)) >= 0) h = (h ^ (unsigned)ch) * 16777619u;
    return h;
}

static bool key_eq(const jkey_t *a, const jkey_t *b)
{
    if (!a->esc && !b->esc) return a->n == b->n && memcmp(a->s, b->s, a->n) == 0;
    str_cur_t ca = {a->s, a->s + a->n, {0}, 0, 0}, cb = {b->s, b->s + b->n, {0}, 0, 0};
    for (;;) {
        int x = cur_next(&ca), y = cur_next(&cb);
        if (x != y) return false;
        if (x < 0) return true;
    }
}

static int dup_error(sp_json_val_t key, char *err, size_t errlen)
{
    if (err && errlen) {
        char name[80];
        sp_json_str_preview(key, name, sizeof name);
        snprintf(err, errlen, "duplicate key '%s'", name);
    }
    return SP_EINVAL;
}

/* Members are hashed into an open-addressing table in windows of `window` members: each pass
 * inserts one window and probes every later member against it. With a table big enough for the
 * whole object there is a single pass. */
static int unique_hashed(sp_json_val_t obj, size_t n, jkey_t *tab, size_t slots, size_t window,
                         char *err, size_t errlen)
{
    for (size_t w0 = 0; w0 < n; w0 += window) {
        sp_json_iter_t it;
        sp_json_val_t k, v;
        size_t idx = 0;
        memset(tab, 0, slots * sizeof *tab);
        sp_json_iter_init(&it, obj);
        for (; sp_json_obj_next(&it, &k, &v); idx++) {
            if (idx < w0) continue;
            jkey_t cur = make_key(k);
            cur.hash = key_hash(&cur);
            size_t i = cur.hash & (slots - 1);
            for (; tab[i].s; i = (i + 1) & (slots - 1))
                if (tab[i].hash == cur.hash && key_eq(&tab[i], &cur))
                    return dup_error(k, err, errlen);
            if (idx < w0 + window) tab[i] = cur;
        }
    }
    return 0;
}

int sp_json_check_unique_keys(sp_json_val_t obj, char *err, size_t errlen)
{
    jkey_t seen[PAIRWISE_MAX];
    sp_json_iter_t it;
    sp_json_val_t k, v;
    size_t n = 0;

    if (obj.type != SP_JSON_OBJECT) return 0;
    sp_json_iter_init(&it, obj);
    while (sp_json_obj_next(&it, &k, &v)) {
        if (n == PAIRWISE_MAX) {
            n++;
            while (sp_json_obj_next(&it, &k, &v)) n++;
            break;
        }
        jkey_t cur = make_key(k);
        for (size_t i = 0; i < n; i++)
            if (key_eq(&seen[i], &cur)) return dup_error(k, err, errlen);
        seen[n++] = cur;
    }
    if (n <= PAIRWISE_MAX) return 0;

    /* A large object: one pass with a heap table when it can be had, else windows over a
     * table on the stack (slower, but never fails). */
    size_t slots = 1;
    while (slots < 2 * n) slots *= 2;
    jkey_t *tab = slots > STACK_SLOTS ? calloc(slots, sizeof *tab) : NULL;
    if (tab) {
        int rc = unique_hashed(obj, n, tab, slots, n, err, errlen);
        free(tab);
        return rc;
    }
    jkey_t stack_tab[STACK_SLOTS];
    return unique_hashed(obj, n, stack_tab, STACK_SLOTS, STACK_SLOTS / 2, err, errlen);
}

/* ---- numbers --------------------------------------------------------------------------------- */

int sp_json_int(sp_json_val_t num, int64_t *out)
{
    if (num.type != SP_JSON_NUMBER || !num.start || num.len == 0) return SP_EINVAL;
    const char *p = num.start, *end = num.start + num.len;
    bool neg = *p == '-';
    if (neg) p++;
    if (p >= end) return SP_EINVAL;
    uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    uint64_t v = 0;
    for (; p < end; p++) {
        if (!is_digit((unsigned char)*p)) return SP_EINVAL;
        unsigned d = (unsigned)(*p - '0');
        if (v > (limit - d) / 10) return SP_EINVAL;
        v = v * 10 + d;
    }
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return 0;
}
