/*
 * config.c - command-line flags with SPOOL_* environment fallbacks, and the integer, duration
 * and size parsers behind them (see config.h).
 *
 * argv is applied first and remembered per flag, so that a variable is read only for flags the
 * command line left alone: a flag wins over its variable, and a bad variable that a flag
 * overrides is never an error.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Internal results of the number parsers: a malformed text and a well-formed one too large
 * for int64_t get different messages. */
enum { NUM_OK = 0, NUM_SYNTAX = -1, NUM_RANGE = -2 };

#define MS_SECOND INT64_C(1000)
#define MS_MINUTE (60 * MS_SECOND)
#define MS_HOUR (60 * MS_MINUTE)
#define MS_DAY (24 * MS_HOUR)

#define SIZE_K INT64_C(1024)
#define SIZE_M (1024 * SIZE_K)
#define SIZE_G (1024 * SIZE_M)

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Reads the leading decimal digits of s. strtoll alone would accept leading spaces, a sign
 * and an empty string, which are not numbers on a command line. On NUM_OK and NUM_RANGE, *end
 * points past the digits so that the caller can still judge the suffix. */
static int scan_digits(const char *s, bool allow_sign, int64_t *out, const char **end)
{
    const char *p = s;
    if (allow_sign && (*p == '-' || *p == '+')) p++;
    if (!is_digit(*p)) return NUM_SYNTAX;
    errno = 0;
    char *e = NULL;
    long long v = strtoll(s, &e, 10);
    *end = e;
    if (errno == ERANGE) return NUM_RANGE;
    *out = (int64_t)v;
    return NUM_OK;
}

static int scan_int(const char *s, int64_t *out)
{
    const char *end = s;
    int64_t v = 0;
    int rc = scan_digits(s, true, &v, &end);
    if (rc == NUM_SYNTAX || *end != '\0') return NUM_SYNTAX;
    if (rc == NUM_RANGE) return NUM_RANGE;
    *out = v;
    return NUM_OK;
}

/* Units are lower case only: an upper-case "M" reads as months to some people. */
static int scan_duration(const char *s, int64_t *out)
{
    static const struct {
        const char *suffix;
        int64_t ms;
    } units[] = {
        {"", 1}, {"ms", 1}, {"s", MS_SECOND}, {"m", MS_MINUTE}, {"h", MS_HOUR}, {"d", MS_DAY},
    };
    const char *end = s;
    int64_t v = 0;
    int rc = scan_digits(s, false, &v, &end);
    if (rc == NUM_SYNTAX) return NUM_SYNTAX;
    int64_t mult = 0;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(end, units[i].suffix) == 0) {
            mult = units[i].ms;
            break;
        }
    }
    if (mult == 0) return NUM_SYNTAX;
    if (rc == NUM_RANGE) return NUM_RANGE;
    int64_t r;
    if (__builtin_mul_overflow(v, mult, &r)) return NUM_RANGE;
    *out = r;
    return NUM_OK;
}

static int scan_size(const char *s, int64_t *out)
{
    const char *end = s;
    int64_t v = 0;
    int rc = scan_digits(s, false, &v, &end);
    if (rc == NUM_SYNTAX) return NUM_SYNTAX;
    int64_t mult = 1;
    switch (*end) {
    case 'k':
    case 'K':
        mult = SIZE_K;
        break;
    case 'm':
    case 'M':
        mult = SIZE_M;
        break;
    case 'g':
    case 'G':
        mult = SIZE_G;
        break;
    default:
        break;
    }
    if (mult != 1) end++;
    if (*end == 'B' || *end == 'b') end++;
    if (*end != '\0') return NUM_SYNTAX;
    if (rc == NUM_RANGE) return NUM_RANGE;
    int64_t r;
    if (__builtin_mul_overflow(v, mult, &r)) return NUM_RANGE;
    *out = r;
    return NUM_OK;
}

int sp_parse_int(const char *s, int64_t *out)
{
    return scan_int(s, out) == NUM_OK ? 0 : -1;
}

int sp_parse_duration_ms(const char *s, int64_t *out)
{
    return scan_duration(s, out) == NUM_OK ? 0 : -1;
}

int sp_parse_size(const char *s, int64_t *out)
{
    return scan_size(s, out) == NUM_OK ? 0 : -1;
}

static int parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

/* Values are shown in the unit a person would write, and in a form the parser accepts back. */
static void format_duration(char *buf, size_t cap, int64_t ms)
{
    static const struct {
        int64_t ms;
        const char *unit;
    } units[] = {{MS_DAY, "d"}, {MS_HOUR, "h"}, {MS_MINUTE, "m"}, {MS_SECOND, "s"}};
    if (ms == 0) {
        snprintf(buf, cap, "0");
        return;
    }
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        /* One day reads better as 24h, the way retention periods are usually written. */
        if (units[i].ms == MS_DAY && ms == MS_DAY) continue;
        if (ms % units[i].ms == 0) {
            snprintf(buf, cap, "%" PRId64 "%s", ms / units[i].ms, units[i].unit);
            return;
        }
    }
    snprintf(buf, cap, "%" PRId64 "ms", ms);
}

static void format_size(char *buf, size_t cap, int64_t bytes)
{
    static const struct {
        int64_t bytes;
        const char *unit;
    } units[] = {{SIZE_G, "G"}, {SIZE_M, "M"}, {SIZE_K, "k"}};
    if (bytes != 0) {
        for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
            if (bytes % units[i].bytes == 0) {
                snprintf(buf, cap, "%" PRId64 "%s", bytes / units[i].bytes, units[i].unit);
                return;
            }
        }
    }
    snprintf(buf, cap, "%" PRId64, bytes);
}

static void format_number(char *buf, size_t cap, sp_flag_kind_t kind, int64_t v)
{
    switch (kind) {
    case SP_FLAG_DURATION:
        format_duration(buf, cap, v);
        return;
    case SP_FLAG_SIZE:
        format_size(buf, cap, v);
        return;
    case SP_FLAG_STRING:
    case SP_FLAG_INT:
    case SP_FLAG_BOOL:
        break;
    }
    snprintf(buf, cap, "%" PRId64, v);
}

/* A table written as {name, kind, &value} with no bounds leaves min = max = 0; a flag whose
 * only legal value is 0 would be pointless, so that pair means "no bounds". */
static bool has_min(const sp_flag_t *f)
{
    return !(f->min == 0 && f->max == 0) && f->min != INT64_MIN;
}

static bool has_max(const sp_flag_t *f)
{
    return !(f->min == 0 && f->max == 0) && f->max != INT64_MAX;
}

static void range_error(const sp_flag_t *f, const char *who, char *err, size_t errlen)
{
    char lo[32], hi[32];
    format_number(lo, sizeof lo, f->kind, f->min);
    format_number(hi, sizeof hi, f->kind, f->max);
    if (has_min(f) && has_max(f))
        snprintf(err, errlen, "%s: must be between %s and %s", who, lo, hi);
    else if (has_min(f))
        snprintf(err, errlen, "%s: must be at least %s", who, lo);
    else if (has_max(f))
        snprintf(err, errlen, "%s: must be at most %s", who, hi);
    else
        snprintf(err, errlen, "%s: out of range", who);
}

static void syntax_error(sp_flag_kind_t kind, const char *who, const char *text, char *err,
                         size_t errlen)
{
    switch (kind) {
    case SP_FLAG_INT:
        snprintf(err, errlen, "%s: not an integer: '%s'", who, text);
        return;
    case SP_FLAG_DURATION:
        snprintf(err, errlen,
                 "%s: not a duration: '%s' (use ms, s, m, h or d, e.g. 500ms, 10s, 24h)", who,
                 text);
        return;
    case SP_FLAG_SIZE:
        snprintf(err, errlen, "%s: not a size: '%s' (use bytes or k, M, G)", who, text);
        return;
    case SP_FLAG_BOOL:
        snprintf(err, errlen, "%s: not a boolean: '%s' (use true or false)", who, text);
        return;
    case SP_FLAG_STRING:
        break;
    }
    snprintf(err, errlen, "%s: invalid value: '%s'", who, text);
}

/* Parses text for flag f and stores it; `who` is what an error names: "--max-depth" or
 * "SPOOL_MAX_DEPTH". A string keeps pointing into argv or environ, which outlive main. */
static int set_value(const sp_flag_t *f, const char *text, const char *who, char *err,
                     size_t errlen)
{
    int64_t v = 0;
    int rc;
    switch (f->kind) {
    case SP_FLAG_STRING:
        *(const char **)f->value = text;
        return 0;
    case SP_FLAG_BOOL:
        if (parse_bool(text, (bool *)f->value) != 0) {
            syntax_error(f->kind, who, text, err, errlen);
            return -1;
        }
        return 0;
    case SP_FLAG_INT:
        rc = scan_int(text, &v);
        break;
    case SP_FLAG_DURATION:
        rc = scan_duration(text, &v);
        break;
    case SP_FLAG_SIZE:
        rc = scan_size(text, &v);
        break;
    default:
        snprintf(err, errlen, "%s: unknown flag kind", who);
        return -1;
    }
    if (rc == NUM_SYNTAX) {
        syntax_error(f->kind, who, text, err, errlen);
        return -1;
    }
    if (rc == NUM_RANGE || (has_min(f) && v < f->min) || (has_max(f) && v > f->max)) {
        range_error(f, who, err, errlen);
        return -1;
    }
    *(int64_t *)f->value = v;
    return 0;
}

/* "max-depth" -> "SPOOL_MAX_DEPTH"; false when the name does not fit, which only a table with
 * an absurd name can cause. */
static bool env_name(const char *name, char *buf, size_t cap)
{
    static const char prefix[] = "SPOOL_";
    size_t plen = sizeof prefix - 1, nlen = strlen(name);
    if (plen + nlen + 1 > cap) return false;
    memcpy(buf, prefix, plen);
    for (size_t i = 0; i < nlen; i++) {
        char c = name[i];
        if (c >= 'a' && c <= 'z') c = (char)(c - 'a' + 'A');
        if (c == '-') c = '_';
        buf[plen + i] = c;
    }
    buf[plen + nlen] = '\0';
    return true;
}

static const sp_flag_t *find_flag(const sp_flag_t *flags, size_t n, const char *name, size_t len,
                                  size_t *index)
{
    for (size_t i = 0; i < n; i++) {
        if (strlen(flags[i].name) == len && memcmp(flags[i].name, name, len) == 0) {
            *index = i;
            return &flags[i];
        }
    }
    return NULL;
}

/* Applies argv[1..argc). Returns 0, 1 when --help or --version stopped it, or -1. */
static int parse_argv(sp_flag_t *flags, size_t n, int argc, char **argv, bool *given,
                      bool *want_help, bool *want_version, char *err, size_t errlen)
{
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            if (want_help) *want_help = true;
            return 1;
        }
        if (strcmp(arg, "--version") == 0) {
            if (want_version) *want_version = true;
            return 1;
        }
        if (arg[0] != '-' || strcmp(arg, "--") == 0) {
            snprintf(err, errlen, "unexpected argument '%s' (see --help)", arg);
            return -1;
        }
        if (arg[1] != '-') {
            snprintf(err, errlen, "unknown flag '%s' (see --help)", arg);
            return -1;
        }
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        size_t idx = 0;
        const sp_flag_t *f = find_flag(flags, n, name, len, &idx);
        if (!f) {
            snprintf(err, errlen, "unknown flag '--%.*s' (see --help)", (int)len, name);
            return -1;
        }
        char who[160];
        snprintf(who, sizeof who, "--%s", f->name);
        const char *value;
        if (eq) {
            value = eq + 1;
        } else if (f->kind == SP_FLAG_BOOL) {
            *(bool *)f->value = true;
            given[idx] = true;
            continue;
        } else if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) {
            /* A "--flag" where the value should be means the value was forgotten:
             * "--listen --workers 8" must not listen on "--workers". */
            value = argv[++i];
        } else {
            snprintf(err, errlen, "%s: needs a value", who);
            return -1;
        }
        if (set_value(f, value, who, err, errlen) != 0) return -1;
        given[idx] = true;
    }
    return 0;
}

/* An empty variable counts as unset: orchestration templates often export NAME= for
 * "not configured". */
static int parse_env(sp_flag_t *flags, size_t n, const bool *given, char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        if (given[i]) continue;
        char var[160];
        if (!env_name(flags[i].name, var, sizeof var)) continue;
        const char *text = getenv(var);
        if (!text || text[0] == '\0') continue;
        if (set_value(&flags[i], text, var, err, errlen) != 0) return -1;
    }
    return 0;
}

int sp_config_parse(sp_flag_t *flags, size_t n, int argc, char **argv, bool *want_help,
                    bool *want_version, char *err, size_t errlen)
{
    char scratch[1];
    if (!err || errlen == 0) {
        err = scratch;
        errlen = sizeof scratch;
    }
    err[0] = '\0';
    if (want_help) *want_help = false;
    if (want_version) *want_version = false;
    bool *given = calloc(n ? n : 1, sizeof *given);
    if (!given) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rc = parse_argv(flags, n, argc, argv, given, want_help, want_version, err, errlen);
    if (rc == 0) rc = parse_env(flags, n, given, err, errlen);
    free(given);
    return rc < 0 ? -1 : 0;
}

static const char *default_metavar(sp_flag_kind_t kind)
{
    switch (kind) {
    case SP_FLAG_STRING:
        return "VALUE";
    case SP_FLAG_INT:
        return "N";
    case SP_FLAG_DURATION:
        return "DURATION";
    case SP_FLAG_SIZE:
        return "SIZE";
    case SP_FLAG_BOOL:
        return "";
    }
    return "VALUE";
}

/* "--name METAVAR" as shown in the left column. */
static void flag_synopsis(const sp_flag_t *f, char *buf, size_t cap)
{
    const char *mv = f->metavar ? f->metavar : default_metavar(f->kind);
    if (f->kind == SP_FLAG_BOOL || mv[0] == '\0')
        snprintf(buf, cap, "--%s", f->name);
    else
        snprintf(buf, cap, "--%s %s", f->name, mv);
}

/* The default, shown from the value the table holds; false when there is none to show. */
static bool flag_default(const sp_flag_t *f, char *buf, size_t cap)
{
    switch (f->kind) {
    case SP_FLAG_STRING: {
        const char *s = *(const char *const *)f->value;
        if (!s || s[0] == '\0') return false;
        snprintf(buf, cap, "%s", s);
        return true;
    }
    case SP_FLAG_BOOL:
        if (!*(const bool *)f->value) return false;
        snprintf(buf, cap, "true");
        return true;
    case SP_FLAG_INT:
    case SP_FLAG_DURATION:
    case SP_FLAG_SIZE:
        format_number(buf, cap, f->kind, *(const int64_t *)f->value);
        return true;
    }
    return false;
}

void sp_config_print_help(const char *usage, const sp_flag_t *flags, size_t n)
{
    enum { MIN_COLUMN = 20 };
    int width = MIN_COLUMN;
    char syn[200];
    for (size_t i = 0; i < n; i++) {
        flag_synopsis(&flags[i], syn, sizeof syn);
        int len = (int)strlen(syn);
        if (len > width) width = len;
    }
    if (usage) {
        bool prefixed = strncasecmp(usage, "usage:", 6) == 0;
        size_t len = strlen(usage);
        while (len > 0 && usage[len - 1] == '\n') len--;
        printf("%s%.*s\n", prefixed ? "" : "usage: ", (int)len, usage);
        /* A usage text with a description under it needs a gap before the flag list. */
        if (memchr(usage, '\n', len)) printf("\n");
    }
    for (size_t i = 0; i < n; i++) {
        const sp_flag_t *f = &flags[i];
        char var[160], def[200];
        flag_synopsis(f, syn, sizeof syn);
        bool has_var = env_name(f->name, var, sizeof var);
        bool has_def = flag_default(f, def, sizeof def);
        printf("  %-*s %s", width, syn, f->help ? f->help : "");
        if (has_var && has_def)
            printf(" (env %s, default %s)\n", var, def);
        else if (has_var)
            printf(" (env %s)\n", var);
        else if (has_def)
            printf(" (default %s)\n", def);
        else
            printf("\n");
    }
    printf("  %-*s %s\n", width, "--help", "show this help and exit");
    printf("  %-*s %s\n", width, "--version", "print the version and exit");
}
