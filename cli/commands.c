/*
 * commands.c - the request/answer commands of `spool`: submit (and --wait), job, jobs, queues,
 * retry, cancel, purge, pause and resume. Each reads its arguments, makes one or a few requests
 * and prints the answer readably, or as the server's JSON with --json.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "sp.h"

#define WAIT_POLL_MS 60000
#define MAX_PAYLOAD (64u << 20)

/* Parses the arguments and opens the connection; on return != 0 the command ends with it
 * (including 0 after --help, signalled by *done). */
static int start(const char *cmd, const char *usage, const char *about, sp_flag_t *flags, size_t n,
                 sp_cli_globals_t *g, int argc, char **argv, const char **pos, size_t max_pos,
                 size_t min_pos, sp_cli_t *cli, bool *done)
{
    size_t npos = 0;
    *done = false;
    int rc = sp_cli_parse(cmd, flags, n, argc, argv, g, pos, max_pos, &npos);
    if (rc == 1) {
        sp_cli_help(usage, about, flags, n);
        *done = true;
        return 0;
    }
    if (rc < 0) return SP_CLI_EXIT_USAGE;
    if (npos < min_pos) return sp_cli_usage_error(cmd, "missing argument (usage: %s)", usage);
    rc = sp_cli_open(cli, g->server, g->token_file, g->json);
    if (rc != 0) *done = true;
    return rc;
}

static int need_queue(const char *cmd, const char *q)
{
    if (!q) return sp_cli_usage_error(cmd, "--queue is required");
    if (!sp_name_valid(q, strlen(q)))
        return sp_cli_usage_error(cmd, "'%s' is not a valid queue name (1-128 of A-Za-z0-9._:-)",
                                  q);
    return 0;
}

/* "/v1/queues/Q" + rest */
static void queue_path(sp_buf_t *b, const char *q, const char *rest)
{
    sp_buf_puts(b, "/v1/queues/");
    sp_cli_path_segment(b, q);
    sp_buf_puts(b, rest);
}

static void job_path(sp_buf_t *b, const char *id, const char *rest)
{
    sp_buf_puts(b, "/v1/jobs/");
    sp_cli_path_segment(b, id);
    sp_buf_puts(b, rest);
}

static void print_value(sp_json_val_t v)
{
    printf("%.*s\n", (int)v.len, v.start);
}

/* ---- submit -------------------------------------------------------------------------------- */

/* The whole content of a file ("-": standard input), malloc'd. */
static char *read_all(const char *path, size_t *len)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f) return NULL;
    sp_buf_t b = SP_BUF_INIT;
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0 && b.len <= MAX_PAYLOAD)
        sp_buf_append(&b, chunk, n);
    bool bad = ferror(f) || b.oom || b.len > MAX_PAYLOAD;
    if (f != stdin) fclose(f);
    if (bad) {
        sp_buf_free(&b);
        return NULL;
    }
    char *s = sp_buf_steal(&b, len);
    if (!s) s = calloc(1, 1);
    return s;
}

/* The payload text of --payload JSON|@file|-: malloc'd and validated as JSON. */
static int load_payload(const char *arg, char **out, size_t *len)
{
    char *text;
    if (arg[0] == '@' || strcmp(arg, "-") == 0) {
        const char *path = arg[0] == '@' ? arg + 1 : "-";
        text = read_all(path, len);
        if (!text)
            return sp_cli_usage_error("submit", "--payload: cannot read %s",
                                      strcmp(path, "-") == 0 ? "standard input" : path);
    } else {
        *len = strlen(arg);
        text = strdup(arg);
        if (!text) return sp_cli_usage_error("submit", "out of memory");
    }
    sp_json_val_t v;
    char err[160];
    if (sp_json_parse(text, *len, SP_JSON_MAX_DEPTH, &v, err, sizeof err) != 0) {
        free(text);
        return sp_cli_usage_error("submit", "--payload is not JSON: %s", err);
    }
    *out = text;
    return 0;
}

/* Long-polls the job until it is finished; prints its result or error; returns the exit code. */
static int wait_job(sp_cli_t *cli, const char *id)
{
    sp_buf_t path = SP_BUF_INIT;
    job_path(&path, id, "?wait_ms=60000");
    if (path.oom) return SP_CLI_EXIT_UNREACHABLE;
    for (;;) {
        sp_cli_resp_t r;
        sp_json_val_t job;
        int rc = sp_cli_fetch(cli, "GET", path.data, NULL, 0, WAIT_POLL_MS + 15000, "submit --wait",
                              &r, &job);
        if (rc != 0) {
            sp_cli_resp_free(&r);
            sp_buf_free(&path);
            return rc;
        }
        char state[32], err[4096];
        sp_cli_jstr(job, "state", state, sizeof state);
        sp_cli_jstr(job, "last_error", err, sizeof err);
        sp_json_val_t result;
        bool has_result = sp_json_obj_get(job, "result", &result);
        rc = -1;
        if (strcmp(state, "succeeded") == 0) {
            rc = SP_CLI_EXIT_OK;
            if (cli->json)
                sp_cli_print_raw(&r);
            else if (has_result)
                print_value(result);
        } else if (strcmp(state, "failed") == 0 || strcmp(state, "canceled") == 0) {
            bool failed = state[0] == 'f';
            rc = failed ? SP_CLI_EXIT_FAILED : SP_CLI_EXIT_CANCELED;
            if (cli->json) sp_cli_print_raw(&r);
            fprintf(stderr, "spool: job %s %s%s%s\n", id, state, err[0] ? ": " : "", err);
        }
        sp_cli_resp_free(&r);
        if (rc >= 0) {
            sp_buf_free(&path);
            return rc;
        }
    }
}

int sp_cli_cmd_submit(sp_cli_globals_t *g, int argc, char **argv)
{
    const char *queue = NULL, *type = NULL, *payload = NULL, *key = NULL;
    int64_t priority = -1, delay = -1, max_attempts = -1, timeout = -1;
    bool wait = false;
    sp_flag_t flags[] = {
        {"queue", SP_FLAG_STRING, &queue, 0, 0, "Q", "the queue (required)"},
        {"type", SP_FLAG_STRING, &type, 0, 0, "T", "the job's type: its handler (required)"},
        {"payload", SP_FLAG_STRING, &payload, 0, 0, "JSON|@FILE|-",
         "the payload: JSON text, a file, or - for standard input"},
        {"priority", SP_FLAG_INT, &priority, 0, 9, "N", "0-9, higher first (default 5)"},
        {"delay", SP_FLAG_DURATION, &delay, 0, 31536000000LL, "DURATION",
         "not run before this from now (10s, 5m)"},
        {"max-attempts", SP_FLAG_INT, &max_attempts, 1, 1000, "N", "attempts (default 3)"},
        {"timeout", SP_FLAG_DURATION, &timeout, 100, 86400000, "DURATION",
         "lease length of one attempt (default 30s)"},
        {"key", SP_FLAG_STRING, &key, 0, 0, "IDEMPOTENCY_KEY",
         "a repeated key within 24 h returns the first job"},
        {"wait", SP_FLAG_BOOL, &wait, 0, 0, NULL,
         "wait until the job finishes; print its result; exit 0/4/5 for succeeded/failed/canceled"},
    };
    const char *pos[1];
    sp_cli_t cli;
    size_t npos = 0;
    int rc = sp_cli_parse("submit", flags, SP_ARRAY_LEN(flags), argc, argv, g, pos, 0, &npos);
    if (rc == 1) {
        sp_cli_help("spool submit --queue Q --type T [--payload JSON|@file|-] [--priority N] "
                    "[--delay DURATION] [--max-attempts N] [--timeout DURATION] [--key KEY] "
                    "[--wait]",
                    "Submits one job and prints its id (the answer's JSON with --json).", flags,
                    SP_ARRAY_LEN(flags));
        return 0;
    }
    if (rc < 0) return SP_CLI_EXIT_USAGE;
    if ((rc = need_queue("submit", queue)) != 0) return rc;
    if (!type) return sp_cli_usage_error("submit", "--type is required");
    if (!sp_name_valid(type, strlen(type)))
        return sp_cli_usage_error("submit", "'%s' is not a valid type (1-128 of A-Za-z0-9._:-)",
                                  type);
    if (key && (key[0] == '\0' || strlen(key) > 256))
        return sp_cli_usage_error("submit", "--key must be 1-256 bytes");
    char *ptext = NULL;
    size_t plen = 0;
    if (payload && (rc = load_payload(payload, &ptext, &plen)) != 0) return rc;

    sp_buf_t body = SP_BUF_INIT, path = SP_BUF_INIT;
    sp_buf_puts(&body, "{\"type\":");
    sp_buf_json_str(&body, type, strlen(type));
    if (ptext) {
        sp_buf_puts(&body, ",\"payload\":");
        sp_buf_append(&body, ptext, plen);
    }
    if (priority >= 0) sp_buf_printf(&body, ",\"priority\":%lld", (long long)priority);
    if (delay >= 0) sp_buf_printf(&body, ",\"delay_ms\":%lld", (long long)delay);
    if (max_attempts >= 0) sp_buf_printf(&body, ",\"max_attempts\":%lld", (long long)max_attempts);
    if (timeout >= 0) sp_buf_printf(&body, ",\"timeout_ms\":%lld", (long long)timeout);
    if (key) {
        sp_buf_puts(&body, ",\"idempotency_key\":");
        sp_buf_json_str(&body, key, strlen(key));
    }
    sp_buf_putc(&body, '}');
    free(ptext);
    queue_path(&path, queue, "/jobs");
    if (body.oom || path.oom) {
        sp_buf_free(&body);
        sp_buf_free(&path);
        fprintf(stderr, "spool submit: out of memory\n");
        return SP_CLI_EXIT_UNREACHABLE;
    }
    rc = sp_cli_open(&cli, g->server, g->token_file, g->json);
    if (rc != 0) {
        sp_buf_free(&body);
        sp_buf_free(&path);
        return rc;
    }
    sp_cli_resp_t r;
    sp_json_val_t ans;
    rc = sp_cli_fetch(&cli, "POST", path.data, body.data, body.len, 0, "submit", &r, &ans);
    sp_buf_free(&body);
    sp_buf_free(&path);
    if (rc == 0) {
        char id[64];
        sp_cli_jstr(ans, "id", id, sizeof id);
        if (!id[0]) {
            fprintf(stderr, "spool submit: the answer has no job id\n");
            rc = SP_CLI_EXIT_UNREACHABLE;
        } else if (wait) {
            rc = wait_job(&cli, id);
        } else if (cli.json) {
            sp_cli_print_raw(&r);
        } else {
            printf("%s\n", id);
        }
    }
    sp_cli_resp_free(&r);
    sp_cli_close(&cli);
    return rc;
}

/* ---- job ------------------------------------------------------------------------------------ */

static void print_time_field(sp_json_val_t job, const char *label, const char *key, int64_t now)
{
    int64_t at = sp_cli_jint(job, key, -1);
    if (at < 0) return;
    char age[32];
    sp_cli_fmt_age(now - at, age, sizeof age);
    if (at > now) {
        sp_cli_fmt_age(at - now, age, sizeof age);
        printf("%-13s in %s\n", label, age);
    } else {
        printf("%-13s %s ago\n", label, age);
    }
}

static void print_job(sp_json_val_t job)
{
    static const char *const strs[][2] = {
        {"id", "id"},
        {"queue", "queue"},
        {"type", "type"},
        {"state", "state"},
        {"worker", "worker"},
        {"idempotency_key", "key"},
        {"last_error", "last error"},
    };
    char s[4096];
    int64_t now = sp_cli_now_ms();
    for (size_t i = 0; i < SP_ARRAY_LEN(strs); i++)
        if (sp_cli_jstr(job, strs[i][0], s, sizeof s)) printf("%-13s %s\n", strs[i][1], s);
    if (sp_cli_jbool(job, "cancel_requested")) printf("%-13s yes\n", "cancel asked");
    printf("%-13s %lld of %lld\n", "attempts", (long long)sp_cli_jint(job, "attempts", 0),
           (long long)sp_cli_jint(job, "max_attempts", 0));
    printf("%-13s %lld\n", "priority", (long long)sp_cli_jint(job, "priority", 0));
    print_time_field(job, "created", "created_at", now);
    print_time_field(job, "run at", "run_at", now);
    print_time_field(job, "started", "started_at", now);
    print_time_field(job, "finished", "finished_at", now);
    sp_json_val_t v;
    if (sp_json_obj_get(job, "payload", &v)) printf("%-13s %.*s\n", "payload", (int)v.len, v.start);
    if (sp_json_obj_get(job, "result", &v) && v.type != SP_JSON_NULL)
        printf("%-13s %.*s\n", "result", (int)v.len, v.start);
}

/* A command that sends one request about one job or queue and prints the answer. */
typedef enum { SHOW_JOB, SHOW_STATE, SHOW_DELETED, SHOW_QUEUE } show_t;

static int one_request(sp_cli_t *cli, const char *cmd, const char *method, const char *path,
                       show_t show, const char *name)
{
    sp_cli_resp_t r;
    sp_json_val_t v;
    int rc = sp_cli_fetch(cli, method, path, NULL, 0, 0, cmd, &r, &v);
    if (rc == 0) {
        char state[32];
        if (cli->json) {
            sp_cli_print_raw(&r);
        } else {
            switch (show) {
            case SHOW_JOB:
                print_job(v);
                break;
            case SHOW_STATE:
                sp_cli_jstr(v, "state", state, sizeof state);
                printf("job %s: %s%s\n", name, state,
                       sp_cli_jbool(v, "cancel_requested") ? " (cancel requested)" : "");
                break;
            case SHOW_DELETED:
                printf("deleted %lld\n", (long long)sp_cli_jint(v, "deleted", 0));
                break;
            case SHOW_QUEUE:
                printf("queue %s: %s\n", name, sp_cli_jbool(v, "paused") ? "paused" : "running");
                break;
            }
        }
    }
    sp_cli_resp_free(&r);
    return rc;
}

/* job, retry, cancel: one job id, one request. */
static int job_command(sp_cli_globals_t *g, int argc, char **argv, const char *cmd,
                       const char *about, const char *method, const char *rest, show_t show)
{
    char usage[64];
    snprintf(usage, sizeof usage, "spool %s ID", cmd);
    const char *pos[1] = {NULL};
    sp_cli_t cli;
    bool done;
    int rc = start(cmd, usage, about, NULL, 0, g, argc, argv, pos, 1, 1, &cli, &done);
    if (rc != 0 || done) return rc;
    sp_buf_t path = SP_BUF_INIT;
    job_path(&path, pos[0], rest);
    rc = path.oom ? SP_CLI_EXIT_UNREACHABLE
                  : one_request(&cli, cmd, method, path.data, show, pos[0]);
    sp_buf_free(&path);
    sp_cli_close(&cli);
    return rc;
}

int sp_cli_cmd_job(sp_cli_globals_t *g, int argc, char **argv)
{
    return job_command(g, argc, argv, "job", "Shows one job.", "GET", "", SHOW_JOB);
}

int sp_cli_cmd_retry(sp_cli_globals_t *g, int argc, char **argv)
{
    return job_command(g, argc, argv, "retry",
                       "Runs a failed or canceled job again (queued, attempts reset).", "POST",
                       "/retry", SHOW_STATE);
}

int sp_cli_cmd_cancel(sp_cli_globals_t *g, int argc, char **argv)
{
    return job_command(g, argc, argv, "cancel",
                       "Cancels a job; a running one stops at its worker's next heartbeat.",
                       "DELETE", "", SHOW_STATE);
}

/* pause, resume: one queue, one request. */
static int queue_command(sp_cli_globals_t *g, int argc, char **argv, const char *cmd,
                         const char *about, const char *rest)
{
    char usage[64];
    snprintf(usage, sizeof usage, "spool %s QUEUE", cmd);
    const char *pos[1] = {NULL};
    sp_cli_t cli;
    bool done;
    int rc = start(cmd, usage, about, NULL, 0, g, argc, argv, pos, 1, 1, &cli, &done);
    if (rc != 0 || done) return rc;
    if (!sp_name_valid(pos[0], strlen(pos[0]))) {
        sp_cli_close(&cli);
        return sp_cli_usage_error(cmd, "'%s' is not a valid queue name", pos[0]);
    }
    sp_buf_t path = SP_BUF_INIT;
    queue_path(&path, pos[0], rest);
    rc = path.oom ? SP_CLI_EXIT_UNREACHABLE
                  : one_request(&cli, cmd, "POST", path.data, SHOW_QUEUE, pos[0]);
    sp_buf_free(&path);
    sp_cli_close(&cli);
    return rc;
}

int sp_cli_cmd_pause(sp_cli_globals_t *g, int argc, char **argv)
{
    return queue_command(g, argc, argv, "pause",
                         "Stops leasing from a queue; submissions are still accepted.", "/pause");
}

int sp_cli_cmd_resume(sp_cli_globals_t *g, int argc, char **argv)
{
    return queue_command(g, argc, argv, "resume", "Restarts leasing from a paused queue.",
                         "/resume");
}

int sp_cli_cmd_purge(sp_cli_globals_t *g, int argc, char **argv)
{
    const char *state = NULL;
    sp_flag_t flags[] = {
        {"state", SP_FLAG_STRING, &state, 0, 0, "S",
         "failed, succeeded, canceled, queued or scheduled (required)"},
    };
    const char *pos[1] = {NULL};
    sp_cli_t cli;
    bool done;
    int rc = start("purge", "spool purge QUEUE --state S",
                   "Drops every job of the queue in one state and prints how many.", flags,
                   SP_ARRAY_LEN(flags), g, argc, argv, pos, 1, 1, &cli, &done);
    if (rc != 0 || done) return rc;
    if (!state || !sp_name_valid(pos[0], strlen(pos[0]))) {
        sp_cli_close(&cli);
        return state ? sp_cli_usage_error("purge", "'%s' is not a valid queue name", pos[0])
                     : sp_cli_usage_error("purge", "--state is required");
    }
    sp_buf_t path = SP_BUF_INIT;
    queue_path(&path, pos[0], "/jobs?state=");
    sp_cli_path_segment(&path, state);
    rc = path.oom ? SP_CLI_EXIT_UNREACHABLE
                  : one_request(&cli, "purge", "DELETE", path.data, SHOW_DELETED, pos[0]);
    sp_buf_free(&path);
    sp_cli_close(&cli);
    return rc;
}

/* ---- jobs ----------------------------------------------------------------------------------- */

static void add_job_row(sp_cli_table_t *t, sp_json_val_t job, int64_t now)
{
    char id[64], state[32], type[160], attempts[48], age[32], err[1024];
    sp_cli_jstr(job, "id", id, sizeof id);
    sp_cli_jstr(job, "state", state, sizeof state);
    sp_cli_jstr(job, "type", type, sizeof type);
    snprintf(attempts, sizeof attempts, "%lld/%lld", (long long)sp_cli_jint(job, "attempts", 0),
             (long long)sp_cli_jint(job, "max_attempts", 0));
    sp_cli_fmt_age(now - sp_cli_jint(job, "created_at", now), age, sizeof age);
    sp_cli_jstr(job, "last_error", err, sizeof err);
    const char *row[] = {id, state, type, attempts, age, err};
    sp_cli_table_add(t, row);
}

int sp_cli_cmd_jobs(sp_cli_globals_t *g, int argc, char **argv)
{
    const char *state = NULL;
    int64_t limit = 100;
    bool all = false;
    sp_flag_t flags[] = {
        {"state", SP_FLAG_STRING, &state, 0, 0, "S", "only jobs in this state"},
        {"limit", SP_FLAG_INT, &limit, 1, 1000, "N", "jobs per page (default 100)"},
        {"all", SP_FLAG_BOOL, &all, 0, 0, NULL, "follow every page, not only the first"},
    };
    const char *pos[1] = {NULL};
    sp_cli_t cli;
    bool done;
    int rc =
        start("jobs", "spool jobs QUEUE [--state S] [--limit N] [--all]",
              "Lists a queue's jobs, oldest first: id, state, type, attempts, age, last error.",
              flags, SP_ARRAY_LEN(flags), g, argc, argv, pos, 1, 1, &cli, &done);
    if (rc != 0 || done) return rc;
    if (!sp_name_valid(pos[0], strlen(pos[0]))) {
        sp_cli_close(&cli);
        return sp_cli_usage_error("jobs", "'%s' is not a valid queue name", pos[0]);
    }
    sp_cli_table_t t;
    sp_cli_table_init(&t, 6, 0);
    const char *head[] = {"ID", "STATE", "TYPE", "ATTEMPTS", "AGE", "LAST ERROR"};
    sp_cli_table_add(&t, head);
    sp_buf_t path = SP_BUF_INIT, merged = SP_BUF_INIT;
    sp_buf_puts(&merged, "{\"jobs\":[");
    char after[64] = "";
    bool more = false, first = true;
    int64_t now = sp_cli_now_ms();
    do {
        sp_buf_reset(&path);
        queue_path(&path, pos[0], "/jobs?limit=");
        sp_buf_i64(&path, limit);
        if (state) {
            sp_buf_puts(&path, "&state=");
            sp_cli_path_segment(&path, state);
        }
        if (after[0]) {
            sp_buf_puts(&path, "&after=");
            sp_cli_path_segment(&path, after);
        }
        if (path.oom) {
            rc = SP_CLI_EXIT_UNREACHABLE;
            break;
        }
        sp_cli_resp_t r;
        sp_json_val_t page, jobs, job;
        rc = sp_cli_fetch(&cli, "GET", path.data, NULL, 0, 0, "jobs", &r, &page);
        if (rc == 0 && sp_json_obj_get(page, "jobs", &jobs) && jobs.type == SP_JSON_ARRAY) {
            sp_json_iter_t it;
            sp_json_iter_init(&it, jobs);
            while (sp_json_arr_next(&it, &job)) {
                add_job_row(&t, job, now);
                if (!first) sp_buf_putc(&merged, ',');
                sp_buf_append(&merged, job.start, job.len);
                first = false;
            }
            more = sp_cli_jstr(page, "next", after, sizeof after) && after[0];
        }
        sp_cli_resp_free(&r);
    } while (rc == 0 && all && more);
    if (rc == 0) {
        if (cli.json) {
            /* With --all the pages are merged into one answer of the same shape. */
            if (more) {
                sp_buf_puts(&merged, "],\"next\":");
                sp_buf_json_str(&merged, after, strlen(after));
                sp_buf_puts(&merged, "}\n");
            } else {
                sp_buf_puts(&merged, "],\"next\":null}\n");
            }
            fwrite(merged.data, 1, merged.len, stdout);
        } else {
            sp_cli_table_print(&t, stdout, sp_cli_term_width());
            if (more) fprintf(stderr, "(more jobs after %s: use --all)\n", after);
        }
    }
    sp_cli_table_free(&t);
    sp_buf_free(&path);
    sp_buf_free(&merged);
    sp_cli_close(&cli);
    return rc;
}

/* ---- queues --------------------------------------------------------------------------------- */

int sp_cli_cmd_queues(sp_cli_globals_t *g, int argc, char **argv)
{
    const char *pos[1];
    sp_cli_t cli;
    bool done;
    int rc = start("queues", "spool queues",
                   "Shows every queue: paused, jobs by state, and the age of the oldest queued "
                   "job.",
                   NULL, 0, g, argc, argv, pos, 0, 0, &cli, &done);
    if (rc != 0 || done) return rc;
    sp_cli_resp_t r;
    sp_json_val_t ans, queues, q;
    rc = sp_cli_fetch(&cli, "GET", "/v1/queues", NULL, 0, 0, "queues", &r, &ans);
    if (rc == 0 && cli.json) {
        sp_cli_print_raw(&r);
    } else if (rc == 0 && sp_json_obj_get(ans, "queues", &queues) && queues.type == SP_JSON_ARRAY) {
        static const char *const states[] = {"scheduled", "queued", "running",
                                             "succeeded", "failed", "canceled"};
        sp_cli_table_t t;
        sp_cli_table_init(&t, 9, 0x1fcu);
        const char *head[] = {"QUEUE",     "PAUSED", "SCHEDULED", "QUEUED",    "RUNNING",
                              "SUCCEEDED", "FAILED", "CANCELED",  "OLDEST AGE"};
        sp_cli_table_add(&t, head);
        sp_json_iter_t it;
        sp_json_iter_init(&it, queues);
        while (sp_json_arr_next(&it, &q)) {
            char name[160], nums[6][24], age[32];
            sp_cli_jstr(q, "name", name, sizeof name);
            for (size_t i = 0; i < 6; i++)
                snprintf(nums[i], sizeof nums[i], "%lld",
                         (long long)sp_cli_jint2(q, "counts", states[i], 0));
            sp_cli_fmt_age(sp_cli_jint(q, "oldest_queued_age_ms", 0), age, sizeof age);
            const char *row[] = {name,    sp_cli_jbool(q, "paused") ? "yes" : "no",
                                 nums[0], nums[1],
                                 nums[2], nums[3],
                                 nums[4], nums[5],
                                 age};
            sp_cli_table_add(&t, row);
        }
        sp_cli_table_print(&t, stdout, 0);
        sp_cli_table_free(&t);
    }
    sp_cli_resp_free(&r);
    sp_cli_close(&cli);
    return rc;
}
