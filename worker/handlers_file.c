/*
 * handlers_file.c - the handlers file loader (see handlers_file.h) and the helpers the exec,
 * http and lib handlers share: the job record they hand over and the result they make of
 * their output.
 *
 * The file is checked whole at start-up, strictly (unknown fields, duplicate keys, a relative
 * program path and a library without its symbol are all errors), because a typo found there
 * costs a restart while one found at run time costs failed jobs.
 */
#include "handlers_file.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "job.h"
#include "json.h"
#include "sp.h"

/* A handlers file is a few dozen lines; anything this big is a mistake. */
#define FILE_MAX (1024 * 1024)
#define ARGV_MAX 1024
#define KILL_GRACE_MAX 600000

/* ---- shared helpers ---------------------------------------------------------------------- */

void sp_handler_job_json(sp_buf_t *b, const sp_hjob_t *job)
{
    sp_buf_reserve(b, 160 + job->queue_len + job->type_len + job->payload_len);
    sp_buf_puts(b, "{\"id\":\"");
    sp_buf_u64(b, job->id);
    sp_buf_puts(b, "\",\"queue\":");
    sp_buf_json_str(b, job->queue, job->queue_len);
    sp_buf_puts(b, ",\"type\":");
    sp_buf_json_str(b, job->type, job->type_len);
    sp_buf_puts(b, ",\"payload\":");
    if (job->payload_len)
        sp_buf_append(b, job->payload, job->payload_len);
    else
        sp_buf_puts(b, "null");
    sp_buf_puts(b, ",\"attempts\":");
    sp_buf_u64(b, job->attempts);
    sp_buf_puts(b, ",\"max_attempts\":");
    sp_buf_u64(b, job->max_attempts);
    sp_buf_puts(b, ",\"timeout_ms\":");
    sp_buf_u64(b, job->timeout_ms);
    sp_buf_putc(b, '}');
}

uint32_t sp_handler_timeout(uint32_t handler_timeout_ms, const sp_hjob_t *job)
{
    if (handler_timeout_ms) return handler_timeout_ms;
    return job->timeout_ms ? job->timeout_ms : SP_DEFAULT_TIMEOUT_MS;
}

/* Appends s[0..len) with every byte that is not part of well-formed UTF-8 replaced by U+FFFD:
 * results and errors are stored as JSON text, which must be valid UTF-8. */
static void put_utf8(sp_buf_t *b, const char *s, size_t len)
{
    while (len > 0) {
        size_t ok = sp_json_utf8_span(s, len);
        sp_buf_append(b, s, ok);
        if (ok == len) break;
        sp_buf_append(b, "\xEF\xBF\xBD", 3);
        s += ok + 1;
        len -= ok + 1;
    }
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

void sp_handler_result(sp_buf_t *b, const char *text, size_t len)
{
    sp_buf_reset(b);
    size_t n = len;
    while (n > 0 && is_space(text[n - 1])) n--;
    size_t lead = 0;
    while (lead < n && is_space(text[lead])) lead++;
    if (lead == n) {
        sp_buf_puts(b, "null");
        return;
    }
    sp_json_val_t v;
    char perr[128];
    if (sp_json_parse(text, len, SP_JSON_MAX_DEPTH, &v, perr, sizeof perr) == 0) {
        sp_buf_append(b, v.start, v.len);
        return;
    }
    /* Plain text: `echo done` should give "done", not "done\n". */
    n = len;
    if (n > 0 && text[n - 1] == '\n') n--;
    if (n > 0 && text[n - 1] == '\r') n--;
    if (sp_json_utf8_span(text, n) == n) {
        sp_buf_json_str(b, text, n);
        return;
    }
    sp_buf_t fixed = SP_BUF_INIT;
    put_utf8(&fixed, text, n);
    if (fixed.oom) {
        b->oom = true;
    } else {
        sp_buf_json_str(b, fixed.data ? fixed.data : "", fixed.len);
    }
    sp_buf_free(&fixed);
}

void sp_handler_text(sp_buf_t *b, const char *text, size_t len)
{
    while (len > 0 && is_space(text[len - 1])) len--;
    put_utf8(b, text, len);
}

/* ---- loader ------------------------------------------------------------------------------ */

typedef struct {
    char *err;
    size_t errlen;
    char where[SP_NAME_MAX * 2 + 32]; /* "handlers.thumb" */
} ctx_t;

static int fail(ctx_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Writes "WHERE: message" into the caller's error buffer; returns SP_EINVAL. */
static int fail(ctx_t *c, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (c->where[0])
        snprintf(c->err, c->errlen, "%s: %s", c->where, msg);
    else
        snprintf(c->err, c->errlen, "%s", msg);
    return SP_EINVAL;
}

/* Decodes a STRING value into a malloc'd NUL-terminated copy; NULL (with *nul set) when it
 * holds a NUL byte, which no path, URL or argument can carry. */
static char *dup_str(sp_json_val_t v, bool *nul)
{
    size_t len = sp_json_str_len(v);
    char *s = malloc(len + 1);
    *nul = false;
    if (!s) return NULL;
    size_t got = 0;
    sp_json_str_decode(v, s, len, &got);
    s[got] = '\0';
    if (memchr(s, '\0', got)) {
        free(s);
        *nul = true;
        return NULL;
    }
    return s;
}

/* Reads an optional integer in [lo, hi]; null or absent leave *out as it is. */
static int get_uint(ctx_t *c, sp_json_val_t obj, const char *key, int64_t lo, int64_t hi,
                    uint32_t *out)
{
    sp_json_val_t v;
    if (!sp_json_obj_get(obj, key, &v) || v.type == SP_JSON_NULL) return 0;
    int64_t n;
    if (v.type != SP_JSON_NUMBER || sp_json_int(v, &n) != 0 || n < lo || n > hi)
        return fail(c, "%s must be an integer from %lld to %lld", key, (long long)lo,
                    (long long)hi);
    *out = (uint32_t)n;
    return 0;
}

static void free_argv(char **argv, size_t argc)
{
    for (size_t i = 0; i < argc; i++) free(argv[i]);
    free(argv);
}

static int build_exec(ctx_t *c, sp_json_val_t arr, uint32_t timeout_ms, uint32_t grace,
                      sp_handler_t *h)
{
    if (arr.type != SP_JSON_ARRAY || sp_json_arr_len(arr) == 0)
        return fail(c, "must be a non-empty array of strings: [\"/path/to/program\", \"arg\", "
                       "...]");
    size_t argc = sp_json_arr_len(arr);
    if (argc > ARGV_MAX) return fail(c, "more than %d arguments", ARGV_MAX);

    int rc = 0;
    char **argv = calloc(argc, sizeof *argv);
    if (!argv) return SP_ENOMEM;
    sp_json_iter_t it;
    sp_json_val_t v;
    size_t i = 0;
    sp_json_iter_init(&it, arr);
    while (sp_json_arr_next(&it, &v)) {
        if (v.type != SP_JSON_STRING) {
            rc = fail(c, "argument %zu must be a string", i);
            goto out;
        }
        bool nul;
        argv[i] = dup_str(v, &nul);
        if (!argv[i]) {
            rc = nul ? fail(c, "argument %zu holds a NUL byte", i) : SP_ENOMEM;
            goto out;
        }
        i++;
    }
    if (argv[0][0] != '/') {
        rc = fail(c, "program path must be absolute: '%s'", argv[0]);
        goto out;
    }
    if (access(argv[0], X_OK) != 0) {
        rc = fail(c, "cannot run '%s': %s", argv[0], strerror(errno));
        goto out;
    }
    char cerr[256];
    rc = sp_handler_exec_new((const char *const *)argv, argc, timeout_ms, grace, h, cerr,
                             sizeof cerr);
    if (rc == SP_EINVAL) rc = fail(c, "%s", cerr);
out:
    free_argv(argv, i);
    return rc;
}

static int build_http(ctx_t *c, uv_loop_t *loop, sp_json_val_t v, uint32_t timeout_ms,
                      sp_handler_t *h)
{
    if (v.type != SP_JSON_STRING) return fail(c, "must be a URL string: \"http://host:port/path\"");
    bool nul;
    char *url = dup_str(v, &nul);
    if (!url) return nul ? fail(c, "the URL holds a NUL byte") : SP_ENOMEM;
    char cerr[512];
    int rc = sp_handler_http_new(loop, url, timeout_ms, h, cerr, sizeof cerr);
    if (rc == SP_EINVAL) rc = fail(c, "%s", cerr);
    free(url);
    return rc;
}

static int build_lib(ctx_t *c, sp_json_val_t obj, sp_json_val_t v, uint32_t timeout_ms,
                     sp_handler_t *h)
{
    sp_json_val_t sv;
    if (v.type != SP_JSON_STRING)
        return fail(c, "must be the path of a shared library: \"/usr/local/lib/libx.so\"");
    if (!sp_json_obj_get(obj, "symbol", &sv) || sv.type != SP_JSON_STRING ||
        sp_json_str_len(sv) == 0)
        return fail(c, "needs \"symbol\": the name of the function to call");
    bool nul;
    char *path = dup_str(v, &nul);
    if (!path) return nul ? fail(c, "the path holds a NUL byte") : SP_ENOMEM;
    char *sym = dup_str(sv, &nul);
    int rc;
    if (!sym) {
        rc = nul ? fail(c, "symbol holds a NUL byte") : SP_ENOMEM;
        goto out;
    }
    if (path[0] != '/') {
        rc = fail(c, "library path must be absolute: '%s'", path);
        goto out;
    }
    char cerr[640];
    rc = sp_handler_lib_new(path, sym, timeout_ms, h, cerr, sizeof cerr);
    if (rc == SP_EINVAL) rc = fail(c, "%s", cerr);
out:
    free(path);
    free(sym);
    return rc;
}

typedef enum { KIND_NONE, KIND_EXEC, KIND_HTTP, KIND_LIB } kind_t;

static const char *const kind_names[] = {"", "exec", "http", "lib"};

static kind_t kind_of(sp_json_val_t key)
{
    for (int k = KIND_EXEC; k <= KIND_LIB; k++) {
        if (sp_json_str_eq(key, kind_names[k])) return (kind_t)k;
    }
    return KIND_NONE;
}

static bool field_known(sp_json_val_t key)
{
    static const char *const known[] = {"exec",   "http",       "lib",
                                        "symbol", "timeout_ms", "kill_grace_ms"};
    for (size_t i = 0; i < SP_ARRAY_LEN(known); i++) {
        if (sp_json_str_eq(key, known[i])) return true;
    }
    return false;
}

/* Checks one entry and adds its handler to the table. */
static int load_entry(ctx_t *c, uv_loop_t *loop, sp_handlers_t *hs, sp_json_val_t key,
                      sp_json_val_t obj)
{
    char name[SP_NAME_MAX * 2 + 8];
    sp_json_str_preview(key, name, sizeof name);
    snprintf(c->where, sizeof c->where, "handlers.%s", name);

    size_t tlen = sp_json_str_len(key);
    char type[SP_NAME_MAX + 1];
    size_t got = 0;
    if (tlen > SP_NAME_MAX || sp_json_str_decode(key, type, sizeof type - 1, &got) != 0 ||
        !sp_name_valid(type, got))
        return fail(c, "bad type name: a type is 1-128 characters of A-Z a-z 0-9 . _ : -");
    if (sp_handler_builtin(type, got))
        return fail(c, "'%s' is a built-in type and cannot be mapped", name);
    if (obj.type != SP_JSON_OBJECT)
        return fail(c, "must be an object like {\"exec\": [\"/path/to/program\"]}");
    char perr[256];
    if (sp_json_check_unique_keys(obj, perr, sizeof perr) != 0) return fail(c, "%s", perr);

    sp_json_iter_t it;
    sp_json_val_t k, v, kindv = {0};
    int nkinds = 0;
    kind_t kind = KIND_NONE;
    sp_json_iter_init(&it, obj);
    while (sp_json_obj_next(&it, &k, &v)) {
        if (!field_known(k)) {
            char f[96];
            sp_json_str_preview(k, f, sizeof f);
            return fail(c,
                        "unknown handler kind or field '%s': a handler is one of exec, http, "
                        "lib",
                        f);
        }
        kind_t kk = kind_of(k);
        if (kk != KIND_NONE) {
            kind = kk;
            nkinds++;
            kindv = v;
        }
    }
    if (nkinds == 0) return fail(c, "no handler kind: give one of exec, http, lib");
    if (nkinds > 1) return fail(c, "give exactly one of exec, http, lib");
    if (kind != KIND_LIB && sp_json_obj_get(obj, "symbol", &v))
        return fail(c, "symbol belongs to lib handlers only");
    if (kind != KIND_EXEC && sp_json_obj_get(obj, "kill_grace_ms", &v))
        return fail(c, "kill_grace_ms belongs to exec handlers only");

    uint32_t timeout_ms = 0, grace = 0;
    int rc =
        get_uint(c, obj, "timeout_ms", SP_HANDLER_TIMEOUT_MIN, SP_HANDLER_TIMEOUT_MAX, &timeout_ms);
    if (rc == 0) rc = get_uint(c, obj, "kill_grace_ms", 1, KILL_GRACE_MAX, &grace);
    if (rc) return rc;

    /* Errors about the kind's own value name it: "handlers.thumb.exec: ...". */
    snprintf(c->where, sizeof c->where, "handlers.%s.%s", name, kind_names[kind]);

    sp_handler_t h;
    memset(&h, 0, sizeof h);
    switch (kind) {
    case KIND_EXEC:
        rc = build_exec(c, kindv, timeout_ms, grace, &h);
        break;
    case KIND_HTTP:
        rc = build_http(c, loop, kindv, timeout_ms, &h);
        break;
    case KIND_LIB:
        rc = build_lib(c, obj, kindv, timeout_ms, &h);
        break;
    case KIND_NONE:
        return fail(c, "no handler kind: give one of exec, http, lib");
    }
    if (rc) return rc;
    rc = sp_handlers_add(hs, type, got, &h);
    if (rc) {
        if (h.destroy) h.destroy(&h);
        return rc == SP_ENOMEM ? SP_ENOMEM : fail(c, "cannot map this type");
    }
    return 0;
}

/* Reads the whole file into a malloc'd buffer. */
static int read_file(ctx_t *c, const char *path, char **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return fail(c, "cannot open %s: %s", path, strerror(errno));
    char *buf = malloc(FILE_MAX + 1);
    if (!buf) {
        fclose(f);
        return SP_ENOMEM;
    }
    size_t n = fread(buf, 1, FILE_MAX + 1, f);
    int rerr = ferror(f) ? errno : 0;
    fclose(f);
    if (rerr) {
        free(buf);
        return fail(c, "cannot read %s: %s", path, strerror(rerr));
    }
    if (n > FILE_MAX) {
        free(buf);
        return fail(c, "%s: over %d bytes", path, FILE_MAX);
    }
    *out = buf;
    *len = n;
    return 0;
}

static int load_root(ctx_t *c, uv_loop_t *loop, sp_handlers_t *hs, const char *path,
                     const char *text, size_t len)
{
    sp_json_val_t root, handlers, k, v;
    char perr[256];
    if (sp_json_parse(text, len, SP_JSON_MAX_DEPTH, &root, perr, sizeof perr) != 0)
        return fail(c, "%s: %s", path, perr);
    if (root.type != SP_JSON_OBJECT)
        return fail(c, "%s: must be an object like {\"handlers\": {...}}", path);
    if (sp_json_check_unique_keys(root, perr, sizeof perr) != 0)
        return fail(c, "%s: %s", path, perr);
    sp_json_iter_t it;
    sp_json_iter_init(&it, root);
    while (sp_json_obj_next(&it, &k, &v)) {
        if (!sp_json_str_eq(k, "handlers")) {
            char f[96];
            sp_json_str_preview(k, f, sizeof f);
            return fail(c, "%s: unknown field '%s' (the file holds {\"handlers\": {...}})", path,
                        f);
        }
    }
    if (!sp_json_obj_get(root, "handlers", &handlers))
        return fail(c, "%s: no \"handlers\" object", path);
    snprintf(c->where, sizeof c->where, "handlers");
    if (handlers.type != SP_JSON_OBJECT)
        return fail(c, "must be an object mapping job types to handlers");
    if (sp_json_check_unique_keys(handlers, perr, sizeof perr) != 0) return fail(c, "%s", perr);
    sp_json_iter_init(&it, handlers);
    while (sp_json_obj_next(&it, &k, &v)) {
        int rc = load_entry(c, loop, hs, k, v);
        if (rc) return rc;
    }
    return 0;
}

int sp_handlers_load(const char *path, uv_loop_t *loop, sp_handlers_t **out, char *err,
                     size_t errlen)
{
    ctx_t c = {.err = err, .errlen = errlen};
    char *text = NULL;
    size_t len = 0;
    *out = NULL;
    if (errlen) err[0] = '\0';
    int rc = read_file(&c, path, &text, &len);
    if (rc) goto oom_check;
    sp_handlers_t *hs = sp_handlers_new();
    if (!hs) {
        rc = SP_ENOMEM;
        goto oom_check;
    }
    rc = load_root(&c, loop, hs, path, text, len);
    if (rc) {
        sp_handlers_free(hs);
    } else {
        *out = hs;
    }
oom_check:
    free(text);
    if (rc == SP_ENOMEM && errlen) {
        if (c.where[0])
            snprintf(err, errlen, "%s: out of memory", c.where);
        else
            snprintf(err, errlen, "out of memory");
    }
    return rc;
}
