/*
 * config.h - command-line flags with environment fallbacks, for every Spool binary.
 *
 * A program declares its flags in a table; sp_config_parse fills them from argv, falling back
 * to SPOOL_<NAME> variables (`--max-depth` -> SPOOL_MAX_DEPTH); a flag wins over its variable.
 * Durations are milliseconds or carry a unit (500ms, 10s, 5m, 24h, 7d); sizes are bytes or
 * carry a unit (64k, 1M, 1G, powers of 1024). A bad value is an error that names the flag (or
 * the variable it came from).
 */
#ifndef SP_CONFIG_H
#define SP_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    SP_FLAG_STRING,   /* const char * (points into argv or environ) */
    SP_FLAG_INT,      /* int64_t, within [min, max] */
    SP_FLAG_DURATION, /* int64_t milliseconds, within [min, max] */
    SP_FLAG_SIZE,     /* int64_t bytes, within [min, max] */
    SP_FLAG_BOOL,     /* bool; "--flag" alone sets it; the variable takes 1/0/true/false */
} sp_flag_kind_t;

typedef struct {
    const char *name; /* without dashes: "max-depth" */
    sp_flag_kind_t kind;
    void *value;         /* where the value goes; holds the default on entry */
    int64_t min, max;    /* for numbers */
    const char *metavar; /* for --help: "N", "DIR", "DURATION" */
    const char *help;
} sp_flag_t;

/* Parses argv against flags[0..n). Accepts "--name value" and "--name=value". "--help" and
 * "--version" set *want_help / *want_version and stop. Returns 0, or -1 after writing a message
 * to err ("--max-depth: not a number: 'abc'", "SPOOL_MAX_DEPTH: ...", "unknown flag '--x'"). */
int sp_config_parse(sp_flag_t *flags, size_t n, int argc, char **argv, bool *want_help,
                    bool *want_version, char *err, size_t errlen);

/* Writes a usage text listing every flag with its variable, metavar and help to stdout. */
void sp_config_print_help(const char *usage, const sp_flag_t *flags, size_t n);

/* Parsers shared with other code. Return 0 or -1. */
int sp_parse_duration_ms(const char *s, int64_t *out);
int sp_parse_size(const char *s, int64_t *out);
int sp_parse_int(const char *s, int64_t *out);

#endif
