/*
 * main.c - `spool`, the command line for people: global flags, the command table, the overall
 * help with the exit codes, and dispatch to one command.
 */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "log.h"
#include "sp.h"

typedef struct {
    const char *name;
    int (*run)(sp_cli_globals_t *g, int argc, char **argv);
    const char *summary;
} command_t;

static const command_t commands[] = {
    {"submit", sp_cli_cmd_submit, "submit a job (--wait: until it finishes)"},
    {"job", sp_cli_cmd_job, "show one job"},
    {"jobs", sp_cli_cmd_jobs, "list a queue's jobs"},
    {"queues", sp_cli_cmd_queues, "every queue's depth"},
    {"retry", sp_cli_cmd_retry, "run a failed or canceled job again"},
    {"cancel", sp_cli_cmd_cancel, "cancel a job"},
    {"purge", sp_cli_cmd_purge, "drop every job of a queue in one state"},
    {"pause", sp_cli_cmd_pause, "stop leasing from a queue"},
    {"resume", sp_cli_cmd_resume, "restart leasing from a queue"},
    {"top", sp_cli_cmd_top, "live table of queues (q quits)"},
    {"bench", sp_cli_cmd_bench, "load generator: submit rate, end-to-end rate, latency"},
};

static void print_help(void)
{
    printf("usage: spool [--server URL] [--token-file FILE] [--json] COMMAND [ARGS]\n\n"
           "The command line of Spool, a job queue service.\n\ncommands:\n");
    for (size_t i = 0; i < SP_ARRAY_LEN(commands); i++)
        printf("  %-8s %s\n", commands[i].name, commands[i].summary);
    printf("\nglobal flags (before or after the command):\n"
           "  --server URL        the server (env SPOOL_SERVER; default %s)\n"
           "  --token-file FILE   bearer token for a server with auth (env SPOOL_TOKEN_FILE)\n"
           "  --json              print the server's JSON as is, for scripts\n"
           "  --help              this text; `spool COMMAND --help` for one command\n"
           "  --version           the version\n\n"
           "exit status:\n"
           "  0  success\n"
           "  1  the server refused the request (4xx; its message on stderr)\n"
           "  2  usage error (bad command, flag or value)\n"
           "  3  cannot reach the server, or it failed (5xx)\n"
           "  4  submit --wait: the job failed\n"
           "  5  submit --wait: the job was canceled\n",
           SP_CLI_DEFAULT_SERVER);
}

int main(int argc, char **argv)
{
    sp_log_set_level(SP_LOG_ERROR);
    sp_cli_globals_t g = {NULL, NULL, false};
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            print_help();
            return 0;
        }
        if (strcmp(a, "--version") == 0) {
            printf("spool %s\n", SP_VERSION);
            return 0;
        }
        if (strcmp(a, "--json") == 0) {
            g.json = true;
        } else if (strcmp(a, "--server") == 0 || strcmp(a, "--token-file") == 0) {
            if (i + 1 >= argc) return sp_cli_usage_error(NULL, "%s needs a value", a);
            if (a[2] == 's')
                g.server = argv[++i];
            else
                g.token_file = argv[++i];
        } else if (strncmp(a, "--server=", 9) == 0) {
            g.server = a + 9;
        } else if (strncmp(a, "--token-file=", 13) == 0) {
            g.token_file = a + 13;
        } else if (a[0] == '-') {
            return sp_cli_usage_error(NULL, "unknown flag '%s'", a);
        } else {
            break;
        }
    }
    if (i >= argc) {
        print_help();
        return SP_CLI_EXIT_USAGE;
    }
    const char *env = getenv("SPOOL_SERVER");
    if (!g.server) g.server = env && env[0] ? env : SP_CLI_DEFAULT_SERVER;
    env = getenv("SPOOL_TOKEN_FILE");
    if (!g.token_file && env && env[0]) g.token_file = env;
    for (size_t k = 0; k < SP_ARRAY_LEN(commands); k++)
        if (strcmp(argv[i], commands[k].name) == 0) return commands[k].run(&g, argc - i, argv + i);
    if (strcmp(argv[i], "help") == 0) {
        print_help();
        return 0;
    }
    return sp_cli_usage_error(NULL, "unknown command '%s'", argv[i]);
}
