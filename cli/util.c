/*
 * util.c - the shared machinery of the `spool` command line (see cli.h): the server connection,
 * blocking requests, flag parsing, reading JSON answers and printing tables.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "sp.h"

/* ---- connection ---------------------------------------------------------------------------- */

/* The token: the file's whole content, one trailing newline ignored. */
static int read_token(const char *path, char *out, size_t cap)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "spool: --token-file: cannot open %s: %s\n", path, strerror(errno));
        return -1;
    }
    size_t n = fread(out, 1, cap, f);
    fclose(f);
    if (n == cap) {
        fprintf(stderr, "spool: --token-file: %s is over %zu bytes\n", path, cap - 1);
        return -1;
    }
    if (n && out[n - 1] == '\n') n--;
    if (n && out[n - 1] == '\r') n--;
    out[n] = '\0';
    if (n == 0 || memchr(out, '\0', n) || strpbrk(out, "\r\n")) {
        fprintf(stderr, "spool: --token-file: %s must hold one token on one line\n", path);
        return -1;
    }
    return 0;
}

int sp_cli_open(sp_cli_t *cli, const char *server, const char *token_file, bool json)
{
    memset(cli, 0, sizeof *cli);
    cli->server = server;
    cli->json = json;
    if (token_file) {
        char token[4097];
        if (read_token(token_file, token, sizeof token) != 0) return SP_CLI_EXIT_USAGE;
        snprintf(cli->headers, sizeof cli->headers, "Authorization: Bearer %s\r\n", token);
    }
    snprintf(cli->headers_json, sizeof cli->headers_json, "%sContent-Type: application/json\r\n",
             cli->headers);
    if (uv_loop_init(&cli->loop) != 0) {
        fprintf(stderr, "spool: cannot start the event loop\n");
        return SP_CLI_EXIT_UNREACHABLE;
    }
    sp_http_client_opts_t o;
    sp_http_client_opts_default(&o);
    o.max_response = 256u << 20; /* a page of big payloads is still a page */
    char err[256] = "";
    if (sp_http_client_new(&cli->loop, server, &o, &cli->client, err, sizeof err) != 0) {
        fprintf(stderr, "spool: --server %s: %s\n", server, err[0] ? err : "invalid URL");
        uv_loop_close(&cli->loop);
        return SP_CLI_EXIT_USAGE;
    }
    return 0;
}

void sp_cli_close(sp_cli_t *cli)
{
    if (cli->client) sp_http_client_close(cli->client, NULL, NULL);
    cli->client = NULL;
    uv_run(&cli->loop, UV_RUN_DEFAULT);
    uv_loop_close(&cli->loop);
}

typedef struct {
    sp_cli_resp_t *out;
    bool done;
} call_wait_t;

static void call_done(void *ud, int status, const char *why, const sp_http_resp_t *resp)
{
    call_wait_t *w = ud;
    sp_cli_resp_t *r = w->out;
    w->done = true;
    r->status = status;
    if (why) snprintf(r->why, sizeof r->why, "%s", why);
    r->body = malloc(resp->body_len + 1);
    if (!r->body) {
        r->status = UV_ENOMEM;
        snprintf(r->why, sizeof r->why, "out of memory");
        return;
    }
    memcpy(r->body, resp->body, resp->body_len);
    r->body[resp->body_len] = '\0';
    r->len = resp->body_len;
}

int sp_cli_call(sp_cli_t *cli, const char *method, const char *target, const char *body,
                size_t body_len, uint64_t timeout_ms, sp_cli_resp_t *out)
{
    memset(out, 0, sizeof *out);
    call_wait_t w = {out, false};
    const char *headers = body ? cli->headers_json : cli->headers;
    sp_http_call_t *call = sp_http_client_request(cli->client, method, target, headers, body,
                                                  body ? body_len : 0, timeout_ms, call_done, &w);
    if (!call) return SP_ENOMEM;
    while (!w.done) uv_run(&cli->loop, UV_RUN_ONCE);
    if (!out->body) return SP_ENOMEM;
    return 0;
}

void sp_cli_resp_free(sp_cli_resp_t *r)
{
    free(r->body);
    r->body = NULL;
}

int sp_cli_check(const sp_cli_resp_t *r, const char *what)
{
    if (r->status >= 200 && r->status < 300) return SP_CLI_EXIT_OK;
    if (r->status < 100) {
        fprintf(stderr, "spool: %s: cannot reach the server: %s\n", what,
                r->why[0] ? r->why : uv_strerror(r->status));
        return SP_CLI_EXIT_UNREACHABLE;
    }
    char msg[1024] = "";
    sp_json_val_t v, e;
    if (r->body && sp_json_parse(r->body, r->len, SP_JSON_MAX_DEPTH, &v, NULL, 0) == 0 &&
        v.type == SP_JSON_OBJECT && sp_json_obj_get(v, "error", &e) && e.type == SP_JSON_OBJECT)
        sp_cli_jstr(e, "message", msg, sizeof msg);
    if (!msg[0] && r->body) {
        /* Not an error object (a proxy's page, say): show its start. */
        size_t n = SP_MIN(r->len, sizeof msg - 1);
        for (size_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)r->body[i];
            msg[i] = (c < 0x20 || c == 0x7f) ? ' ' : (char)c;
        }
        msg[n] = '\0';
    }
    fprintf(stderr, "spool: %s: %s (HTTP %d)\n", what, msg[0] ? msg : "no message", r->status);
    return r->status >= 500 ? SP_CLI_EXIT_UNREACHABLE : SP_CLI_EXIT_REFUSED;
}

int sp_cli_fetch(sp_cli_t *cli, const char *method, const char *target, const char *body,
                 size_t body_len, uint64_t timeout_ms, const char *what, sp_cli_resp_t *out,
                 sp_json_val_t *val)
{
    if (sp_cli_call(cli, method, target, body, body_len, timeout_ms, out) != 0) {
        fprintf(stderr, "spool: %s: out of memory\n", what);
        return SP_CLI_EXIT_UNREACHABLE;
    }
    int rc = sp_cli_check(out, what);
    if (rc != 0) return rc;
    char err[160];
    if (sp_json_parse(out->body, out->len, SP_JSON_MAX_DEPTH, val, err, sizeof err) != 0) {
        fprintf(stderr, "spool: %s: the server's answer is not JSON: %s\n", what, err);
        return SP_CLI_EXIT_UNREACHABLE;
    }
    return 0;
}

void sp_cli_print_raw(const sp_cli_resp_t *r)
{
    fwrite(r->body, 1, r->len, stdout);
    if (r->len == 0 || r->body[r->len - 1] != '\n') putchar('\n');
}

void sp_cli_path_segment(sp_buf_t *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        bool plain = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                     c == '-' || c == '.' || c == '_' || c == '~' || c == ':';
        if (plain) {
            sp_buf_putc(b, (char)c);
        } else {
            sp_buf_putc(b, '%');
            sp_buf_putc(b, hex[c >> 4]);
            sp_buf_putc(b, hex[c & 15]);
        }
    }
}

/* ---- flags --------------------------------------------------------------------------------- */

int sp_cli_usage_error(const char *cmd, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (cmd)
        fprintf(stderr, "spool %s: %s (see spool %s --help)\n", cmd, msg, cmd);
    else
        fprintf(stderr, "spool: %s (see spool --help)\n", msg);
    return SP_CLI_EXIT_USAGE;
}

static int set_flag(const char *cmd, const sp_flag_t *f, const char *text)
{
    int64_t v = 0;
    int rc = 0;
    switch (f->kind) {
    case SP_FLAG_STRING:
        *(const char **)f->value = text;
        return 0;
    case SP_FLAG_BOOL:
        if (strcmp(text, "true") == 0 || strcmp(text, "1") == 0) {
            *(bool *)f->value = true;
        } else if (strcmp(text, "false") == 0 || strcmp(text, "0") == 0) {
            *(bool *)f->value = false;
        } else {
            sp_cli_usage_error(cmd, "--%s: not a boolean: '%s'", f->name, text);
            return -1;
        }
        return 0;
    case SP_FLAG_INT:
        rc = sp_parse_int(text, &v);
        break;
    case SP_FLAG_DURATION:
        rc = sp_parse_duration_ms(text, &v);
        break;
    case SP_FLAG_SIZE:
        rc = sp_parse_size(text, &v);
        break;
    }
    if (rc != 0) {
        const char *what = f->kind == SP_FLAG_DURATION ? "a duration (500ms, 10s, 5m, 24h, 7d)"
                           : f->kind == SP_FLAG_SIZE   ? "a size (64k, 1M)"
                                                       : "a number";
        sp_cli_usage_error(cmd, "--%s: not %s: '%s'", f->name, what, text);
        return -1;
    }
    if (v < f->min || v > f->max) {
        sp_cli_usage_error(cmd, "--%s: %lld is out of range (%lld to %lld)", f->name, (long long)v,
                           (long long)f->min, (long long)f->max);
        return -1;
    }
    *(int64_t *)f->value = v;
    return 0;
}

int sp_cli_parse(const char *cmd, sp_flag_t *flags, size_t n, int argc, char **argv,
                 sp_cli_globals_t *g, const char **pos, size_t max_pos, size_t *npos)
{
    *npos = 0;
    bool only_pos = false;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (only_pos || arg[0] != '-' || strcmp(arg, "-") == 0) {
            if (*npos >= max_pos) {
                sp_cli_usage_error(cmd, "unexpected argument '%s'", arg);
                return -1;
            }
            pos[(*npos)++] = arg;
            continue;
        }
        if (strcmp(arg, "--") == 0) {
            only_pos = true;
            continue;
        }
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) return 1;
        if (arg[1] != '-') {
            sp_cli_usage_error(cmd, "unknown flag '%s'", arg);
            return -1;
        }
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        static const char *const global_names[] = {"server", "token-file", "json"};
        sp_flag_t globals[] = {
            {"server", SP_FLAG_STRING, &g->server, 0, 0, NULL, NULL},
            {"token-file", SP_FLAG_STRING, &g->token_file, 0, 0, NULL, NULL},
            {"json", SP_FLAG_BOOL, &g->json, 0, 0, NULL, NULL},
        };
        const sp_flag_t *f = NULL;
        for (size_t k = 0; k < n && !f; k++)
            if (strlen(flags[k].name) == len && memcmp(flags[k].name, name, len) == 0)
                f = &flags[k];
        for (size_t k = 0; k < SP_ARRAY_LEN(global_names) && !f; k++)
            if (strlen(global_names[k]) == len && memcmp(global_names[k], name, len) == 0)
                f = &globals[k];
        if (!f) {
            sp_cli_usage_error(cmd, "unknown flag '--%.*s'", (int)len, name);
            return -1;
        }
        const char *value;
        if (eq) {
            value = eq + 1;
        } else if (f->kind == SP_FLAG_BOOL) {
            *(bool *)f->value = true;
            continue;
        } else if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) {
            value = argv[++i];
        } else {
            sp_cli_usage_error(cmd, "--%s needs a value", f->name);
            return -1;
        }
        if (set_flag(cmd, f, value) != 0) return -1;
    }
    return 0;
}

void sp_cli_help(const char *usage, const char *about, const sp_flag_t *flags, size_t n)
{
    printf("usage: %s\n\n%s\n", usage, about);
    if (n) printf("\nflags:\n");
    for (size_t i = 0; i < n; i++) {
        char syn[128];
        if (flags[i].kind == SP_FLAG_BOOL)
            snprintf(syn, sizeof syn, "--%s", flags[i].name);
        else
            snprintf(syn, sizeof syn, "--%s %s", flags[i].name,
                     flags[i].metavar ? flags[i].metavar : "VALUE");
        printf("  %-26s %s\n", syn, flags[i].help ? flags[i].help : "");
    }
    printf("\nglobal flags: --server URL, --token-file FILE, --json (see spool --help)\n");
}

/* ---- reading answers ----------------------------------------------------------------------- */

bool sp_cli_jstr(sp_json_val_t obj, const char *key, char *out, size_t cap)
{
    sp_json_val_t v;
    out[0] = '\0';
    if (obj.type != SP_JSON_OBJECT || !sp_json_obj_get(obj, key, &v) || v.type != SP_JSON_STRING)
        return false;
    sp_json_str_preview(v, out, cap);
    return true;
}

int64_t sp_cli_jint(sp_json_val_t obj, const char *key, int64_t dflt)
{
    sp_json_val_t v;
    int64_t x;
    if (obj.type != SP_JSON_OBJECT || !sp_json_obj_get(obj, key, &v) || v.type != SP_JSON_NUMBER ||
        sp_json_int(v, &x) != 0)
        return dflt;
    return x;
}

int64_t sp_cli_jint2(sp_json_val_t obj, const char *group, const char *key, int64_t dflt)
{
    sp_json_val_t g;
    if (obj.type != SP_JSON_OBJECT || !sp_json_obj_get(obj, group, &g)) return dflt;
    return sp_cli_jint(g, key, dflt);
}

bool sp_cli_jbool(sp_json_val_t obj, const char *key)
{
    sp_json_val_t v;
    return obj.type == SP_JSON_OBJECT && sp_json_obj_get(obj, key, &v) && v.type == SP_JSON_TRUE;
}

void sp_cli_fmt_age(int64_t ms, char *out, size_t cap)
{
    if (ms < 0) {
        snprintf(out, cap, "-");
        return;
    }
    long long s = (long long)(ms / 1000);
    if (s < 60)
        snprintf(out, cap, "%llds", s);
    else if (s < 3600)
        snprintf(out, cap, "%lldm%02llds", s / 60, s % 60);
    else if (s < 86400)
        snprintf(out, cap, "%lldh%02lldm", s / 3600, s / 60 % 60);
    else
        snprintf(out, cap, "%lldd%02lldh", s / 86400, s / 3600 % 24);
}

int64_t sp_cli_now_ms(void)
{
    return sp_now_ms();
}

int64_t sp_cli_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- tables -------------------------------------------------------------------------------- */

void sp_cli_table_init(sp_cli_table_t *t, size_t ncols, unsigned right)
{
    memset(t, 0, sizeof *t);
    t->ncols = ncols;
    t->right = right;
}

void sp_cli_table_add(sp_cli_table_t *t, const char *const *cells)
{
    if (t->oom) return;
    if (t->nrows == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        char **c = realloc(t->cells, cap * t->ncols * sizeof *c);
        if (!c) {
            t->oom = true;
            return;
        }
        t->cells = c;
        t->cap = cap;
    }
    char **row = t->cells + t->nrows * t->ncols;
    for (size_t i = 0; i < t->ncols; i++) {
        row[i] = strdup(cells[i] ? cells[i] : "");
        if (!row[i]) {
            for (size_t k = 0; k < i; k++) free(row[k]);
            t->oom = true;
            return;
        }
    }
    t->nrows++;
}

void sp_cli_table_print(const sp_cli_table_t *t, FILE *f, size_t width)
{
    size_t w[16] = {0};
    size_t ncols = SP_MIN(t->ncols, SP_ARRAY_LEN(w));
    for (size_t r = 0; r < t->nrows; r++)
        for (size_t c = 0; c < ncols; c++) w[c] = SP_MAX(w[c], strlen(t->cells[r * t->ncols + c]));
    sp_buf_t line = SP_BUF_INIT;
    for (size_t r = 0; r < t->nrows; r++) {
        sp_buf_reset(&line);
        for (size_t c = 0; c < ncols; c++) {
            const char *s = t->cells[r * t->ncols + c];
            size_t len = strlen(s), pad = w[c] - len;
            if (c) sp_buf_puts(&line, "  ");
            if (t->right & (1u << c))
                for (size_t k = 0; k < pad; k++) sp_buf_putc(&line, ' ');
            sp_buf_append(&line, s, len);
            if (!(t->right & (1u << c)) && c + 1 < ncols)
                for (size_t k = 0; k < pad; k++) sp_buf_putc(&line, ' ');
        }
        size_t n = line.len;
        while (n > 0 && line.data[n - 1] == ' ') n--;
        if (width && n > width) {
            /* Cut at a character boundary: never half of a UTF-8 sequence. */
            n = width;
            while (n > 0 && ((unsigned char)line.data[n] & 0xc0) == 0x80) n--;
        }
        if (n) fwrite(line.data, 1, n, f);
        fputc('\n', f);
    }
    if (t->oom || line.oom) fprintf(stderr, "spool: out of memory: the table is incomplete\n");
    sp_buf_free(&line);
}

void sp_cli_table_free(sp_cli_table_t *t)
{
    for (size_t i = 0; i < t->nrows * t->ncols; i++) free(t->cells[i]);
    free(t->cells);
    memset(t, 0, sizeof *t);
}

size_t sp_cli_term_width(void)
{
    struct winsize ws;
    if (!isatty(STDOUT_FILENO) || ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) != 0) return 0;
    return ws.ws_col;
}
