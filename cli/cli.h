/*
 * cli.h - what the parts of the `spool` command line share: the connection to one server, a
 * blocking request on top of the non-blocking client, flag parsing per command, reading
 * answers, tables, and the exit codes that scripts rely on.
 *
 * One process makes one sp_cli_t, runs one command and exits; commands that need more than
 * request/answer (top, bench) drive cli->loop themselves.
 */
#ifndef SP_CLI_H
#define SP_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <uv.h>

#include "buf.h"
#include "config.h"
#include "http_client.h"
#include "json.h"

/* Exit codes, documented in `spool --help`. */
enum {
    SP_CLI_EXIT_OK = 0,
    SP_CLI_EXIT_REFUSED = 1,     /* the server answered 4xx */
    SP_CLI_EXIT_USAGE = 2,       /* bad command line */
    SP_CLI_EXIT_UNREACHABLE = 3, /* no answer, or 5xx */
    SP_CLI_EXIT_FAILED = 4,      /* submit --wait: the job failed */
    SP_CLI_EXIT_CANCELED = 5,    /* submit --wait: the job was canceled */
};

#define SP_CLI_DEFAULT_SERVER "http://127.0.0.1:7700"

typedef struct {
    uv_loop_t loop;
    sp_http_client_t *client;
    const char *server;      /* base URL, as given */
    char headers[4200];      /* Authorization line when a token is set, else "" */
    char headers_json[4300]; /* the same plus Content-Type, for requests with a body */
    bool json;               /* --json: print the server's JSON as is */
} sp_cli_t;

/* A copied answer. status is the HTTP status, or a negative libuv code when none came (why
 * then says what failed). body is malloc'd, NUL-terminated, never NULL after success. */
typedef struct {
    int status;
    char *body;
    size_t len;
    char why[256];
} sp_cli_resp_t;

/* Connects the CLI to its server (no request is sent yet). token may be NULL. Returns 0, or an
 * exit code after printing why. */
int sp_cli_open(sp_cli_t *cli, const char *server, const char *token_file, bool json);
/* Closes the client and the loop. */
void sp_cli_close(sp_cli_t *cli);

/* One request, waited for. target is a path; body may be NULL. timeout_ms 0 means 30 s.
 * Returns 0 (out filled; free with sp_cli_resp_free), or SP_ENOMEM. */
int sp_cli_call(sp_cli_t *cli, const char *method, const char *target, const char *body,
                size_t body_len, uint64_t timeout_ms, sp_cli_resp_t *out);
void sp_cli_resp_free(sp_cli_resp_t *r);

/* The exit code for an answer: 0 for 2xx; else prints "spool: WHAT: message" to stderr and
 * returns 1 (4xx) or 3 (no answer, 5xx). */
int sp_cli_check(const sp_cli_resp_t *r, const char *what);

/* sp_cli_call, then sp_cli_check; on success parses the body as JSON into *val (the body stays
 * in out). Returns the exit code; out must be freed either way. */
int sp_cli_fetch(sp_cli_t *cli, const char *method, const char *target, const char *body,
                 size_t body_len, uint64_t timeout_ms, const char *what, sp_cli_resp_t *out,
                 sp_json_val_t *val);

/* Prints a body as is, with a newline, for --json. */
void sp_cli_print_raw(const sp_cli_resp_t *r);

/* Appends s percent-encoded as one path segment. */
void sp_cli_path_segment(sp_buf_t *b, const char *s);

/* ---- flags --------------------------------------------------------------------------------- */

/* Parses a command's arguments against flags[0..n) (sp_flag_t from config.h; defaults are the
 * values on entry), taking --server, --token-file and --json anywhere as well, and collecting at
 * most max_pos positional arguments. No environment fallback for command flags: only
 * SPOOL_SERVER and SPOOL_TOKEN_FILE are read, by main. Returns 0, 1 when --help was asked, or
 * -1 after printing the error (exit 2). */
typedef struct {
    const char *server;
    const char *token_file;
    bool json;
} sp_cli_globals_t;

int sp_cli_parse(const char *cmd, sp_flag_t *flags, size_t n, int argc, char **argv,
                 sp_cli_globals_t *g, const char **pos, size_t max_pos, size_t *npos);
/* Prints a command's help: its usage line, a description, and its flags. */
void sp_cli_help(const char *usage, const char *about, const sp_flag_t *flags, size_t n);
/* Prints "spool CMD: msg (see spool CMD --help)" and returns 2. */
int sp_cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- reading answers ------------------------------------------------------------------------ */

/* A string member decoded into out (cut to cap - 1 bytes, control characters as '?'); false and
 * "" when absent or not a string. */
bool sp_cli_jstr(sp_json_val_t obj, const char *key, char *out, size_t cap);
/* An integer member, or dflt when absent or not an integer. */
int64_t sp_cli_jint(sp_json_val_t obj, const char *key, int64_t dflt);
/* obj.group.key as an integer ("counts", "queued"), or dflt. */
int64_t sp_cli_jint2(sp_json_val_t obj, const char *group, const char *key, int64_t dflt);
/* A boolean member (false when absent). */
bool sp_cli_jbool(sp_json_val_t obj, const char *key);

/* "42s", "3m05s", "2h10m", "4d03h" for a duration in ms; "-" for a negative one. */
void sp_cli_fmt_age(int64_t ms, char *out, size_t cap);
/* Milliseconds since the epoch now. */
int64_t sp_cli_now_ms(void);
/* Milliseconds of a monotonic clock. */
int64_t sp_cli_mono_ms(void);

/* ---- tables ---------------------------------------------------------------------------------- */

/* Rows of cells, printed with aligned columns; each line is cut to the width. */
typedef struct {
    size_t ncols;
    unsigned right; /* bit i: column i is right-aligned (numbers) */
    char **cells;   /* nrows * ncols, each malloc'd */
    size_t nrows, cap;
    bool oom;
} sp_cli_table_t;

void sp_cli_table_init(sp_cli_table_t *t, size_t ncols, unsigned right);
/* Copies cells[0..ncols). */
void sp_cli_table_add(sp_cli_table_t *t, const char *const *cells);
/* width 0: no limit. */
void sp_cli_table_print(const sp_cli_table_t *t, FILE *f, size_t width);
void sp_cli_table_free(sp_cli_table_t *t);
/* The terminal's width when stdout is one, else 0. */
size_t sp_cli_term_width(void);

/* ---- commands ------------------------------------------------------------------------------- */

/* Each takes the arguments after the command's name (argv[0] is the command) and returns the
 * exit code. g holds the global flags seen before the command. */
int sp_cli_cmd_submit(sp_cli_globals_t *g, int argc, char **argv);
int sp_cli_cmd_job(sp_cli_globals_t *g, int argc, char **argv);
int sp_cli_cmd_jobs(sp_cli_globals_t *g, int argc, char **argv);
int sp_cli_cmd_queues(sp_cli_globals_t *g, int argc, char **argv);
int sp_cli_cmd_retry(sp_cli_globals_t *g, int argc, char **argv);
int sp_cli_cmd_cancel(sp_cli_globals_t *g, int argc, char **argv);
int sp_cli_cmd_purge(sp_cli_globals_t *g, int argc, char **argv);
int sp_cli_cmd_pause(sp_cli_globals_t *g, int argc, char **argv);
int sp_cli_cmd_resume(sp_cli_globals_t *g, int argc, char **argv);
int sp_cli_cmd_top(sp_cli_globals_t *g, int argc, char **argv);
int sp_cli_cmd_bench(sp_cli_globals_t *g, int argc, char **argv);

#endif
