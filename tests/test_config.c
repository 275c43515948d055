/* test_config.c - flags, environment fallbacks, value parsers and --help of common/config.c. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

/* The flags of a typical server; each test gets fresh defaults from setup. */
typedef struct {
    const char *listen;
    const char *data_dir;
    int64_t workers;
    int64_t max_depth;
    int64_t retention;
    int64_t max_body;
    bool verbose;
    bool debug;
    sp_flag_t flags[8];
} fixture_t;

static const char *const test_vars[] = {
    "SPOOL_LISTEN",    "SPOOL_DATA_DIR", "SPOOL_WORKERS", "SPOOL_MAX_DEPTH",
    "SPOOL_RETENTION", "SPOOL_MAX_BODY", "SPOOL_VERBOSE", "SPOOL_DEBUG",
};

static int setup(void **state)
{
    /* The surrounding environment (CI, a developer's shell) may hold SPOOL_* variables. */
    for (size_t i = 0; i < sizeof test_vars / sizeof test_vars[0]; i++) unsetenv(test_vars[i]);
    fixture_t *fx = calloc(1, sizeof *fx);
    if (!fx) return -1;
    fx->listen = "127.0.0.1:7700";
    fx->data_dir = NULL;
    fx->workers = 0;
    fx->max_depth = 0;
    fx->retention = 24 * 3600 * 1000LL;
    fx->max_body = 1024 * 1024;
    fx->verbose = false;
    fx->debug = true;
    sp_flag_t flags[] = {
        {"listen", SP_FLAG_STRING, &fx->listen, 0, 0, "ADDR", "address to listen on"},
        {"data-dir", SP_FLAG_STRING, &fx->data_dir, 0, 0, "DIR", "keep jobs in DIR"},
        {"workers", SP_FLAG_INT, &fx->workers, 0, 100000, "N", "embedded workers"},
        {"max-depth", SP_FLAG_INT, &fx->max_depth, 0, INT64_MAX, "N", "per-queue limit"},
        {"retention", SP_FLAG_DURATION, &fx->retention, 1000, 365 * 86400000LL, "DURATION",
         "keep finished jobs this long"},
        {"max-body", SP_FLAG_SIZE, &fx->max_body, 1024, 1LL << 30, "SIZE", "largest body"},
        {"verbose", SP_FLAG_BOOL, &fx->verbose, 0, 0, NULL, "log more"},
        {"debug", SP_FLAG_BOOL, &fx->debug, 0, 0, NULL, "debug mode"},
    };
    memcpy(fx->flags, flags, sizeof flags);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    for (size_t i = 0; i < sizeof test_vars / sizeof test_vars[0]; i++) unsetenv(test_vars[i]);
    free(*state);
    return 0;
}

#define NFLAGS(fx) (sizeof(fx)->flags / sizeof(fx)->flags[0])

/* Runs sp_config_parse on a NULL-terminated argument list (program name added). */
static int parse(fixture_t *fx, char *err, size_t errlen, bool *help, bool *version, ...)
{
    char *argv[32];
    int argc = 0;
    argv[argc++] = "spool-test";
    va_list ap;
    va_start(ap, version);
    char *a;
    while ((a = va_arg(ap, char *)) != NULL && argc < 31) argv[argc++] = a;
    va_end(ap);
    argv[argc] = NULL;
    return sp_config_parse(fx->flags, NFLAGS(fx), argc, argv, help, version, err, errlen);
}

/* Parses and expects failure with exactly this message. */
#define EXPECT_ERROR(fx, msg, ...)                                                                 \
    do {                                                                                           \
        char err_[256] = "";                                                                       \
        bool h_ = false, v_ = false;                                                               \
        assert_int_equal(parse((fx), err_, sizeof err_, &h_, &v_, __VA_ARGS__, NULL), -1);         \
        assert_string_equal(err_, (msg));                                                          \
    } while (0)

#define EXPECT_OK(fx, ...)                                                                         \
    do {                                                                                           \
        char err_[256] = "";                                                                       \
        bool h_ = false, v_ = false;                                                               \
        int rc_ = parse((fx), err_, sizeof err_, &h_, &v_, __VA_ARGS__, NULL);                     \
        if (rc_ != 0) fail_msg("unexpected error: %s", err_);                                      \
        assert_false(h_);                                                                          \
        assert_false(v_);                                                                          \
    } while (0)

static void test_parse_int(void **state)
{
    (void)state;
    int64_t v = -7;
    assert_int_equal(sp_parse_int("0", &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(sp_parse_int("42", &v), 0);
    assert_int_equal(v, 42);
    assert_int_equal(sp_parse_int("-17", &v), 0);
    assert_int_equal(v, -17);
    assert_int_equal(sp_parse_int("+5", &v), 0);
    assert_int_equal(v, 5);
    assert_int_equal(sp_parse_int("9223372036854775807", &v), 0);
    assert_true(v == INT64_MAX);
    assert_int_equal(sp_parse_int("-9223372036854775808", &v), 0);
    assert_true(v == INT64_MIN);

    v = 99;
    const char *bad[] = {"",     "abc", "12abc", " 12", "12 ",  "1.5",
                         "1e3",  "--1", "+",     "-",   "0x10", "9223372036854775808",
                         "1_000"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (sp_parse_int(bad[i], &v) != -1) fail_msg("accepted '%s'", bad[i]);
    }
    assert_int_equal(v, 99); /* untouched on failure */
}

static void test_parse_duration(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        int64_t ms;
    } good[] = {
        {"0", 0},
        {"250", 250},
        {"500ms", 500},
        {"10s", 10000},
        {"5m", 300000},
        {"24h", 86400000},
        {"7d", 604800000},
        {"0s", 0},
        {"106751991167d", 106751991167LL * 86400000LL},
        {"9223372036854775807", INT64_MAX},
        {"9223372036854775807ms", INT64_MAX},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        int64_t v = -1;
        if (sp_parse_duration_ms(good[i].text, &v) != 0) fail_msg("rejected '%s'", good[i].text);
        assert_true(v == good[i].ms);
    }
    const char *bad[] = {
        "",
        "s",
        "5x",
        "10 s",
        " 10s",
        "1.5s",
        "-1s",
        "+1s",
        "10S",
        "10sec",
        "10mm",
        "1h30m",
        "ms",
        "10M",
        "1e3ms",
        "9223372036854775808",
        "106751991168d", /* overflows int64 milliseconds */
        "9223372036854775807s",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t v = 123;
        if (sp_parse_duration_ms(bad[i], &v) != -1) fail_msg("accepted '%s'", bad[i]);
        assert_int_equal(v, 123);
    }
}

static void test_parse_size(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        int64_t bytes;
    } good[] = {
        {"0", 0},           {"100", 100},          {"100B", 100},
        {"64k", 65536},     {"64K", 65536},        {"64kb", 65536},
        {"1M", 1048576},    {"1m", 1048576},       {"1MB", 1048576},
        {"1G", 1073741824}, {"2gb", 2147483648LL}, {"8589934591G", 8589934591LL * 1073741824LL},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        int64_t v = -1;
        if (sp_parse_size(good[i].text, &v) != 0) fail_msg("rejected '%s'", good[i].text);
        assert_true(v == good[i].bytes);
    }
    const char *bad[] = {"",    "k",    "1Q", "1KK", "1 M", " 1M",         "1.5M",
                         "-1k", "1MBB", "1T", "1Mi", "1e3", "8589934592G", "99999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t v = 123;
        if (sp_parse_size(bad[i], &v) != -1) fail_msg("accepted '%s'", bad[i]);
        assert_int_equal(v, 123);
    }
}

static void test_defaults_kept(void **state)
{
    fixture_t *fx = *state;
    char *argv[] = {"spool-test", NULL};
    char err[128] = "x";
    bool help = true, version = true;
    assert_int_equal(
        sp_config_parse(fx->flags, NFLAGS(fx), 1, argv, &help, &version, err, sizeof err), 0);
    assert_false(help);
    assert_false(version);
    assert_string_equal(fx->listen, "127.0.0.1:7700");
    assert_null(fx->data_dir);
    assert_int_equal(fx->workers, 0);
    assert_int_equal(fx->retention, 86400000);
    assert_int_equal(fx->max_body, 1048576);
    assert_false(fx->verbose);
    assert_true(fx->debug);
}

static void test_every_kind_space_form(void **state)
{
    fixture_t *fx = *state;
    EXPECT_OK(fx, "--listen", "127.0.0.1:0", "--data-dir", "/var/lib/spool", "--workers", "64",
              "--max-depth", "1000", "--retention", "10s", "--max-body", "64k", "--verbose");
    assert_string_equal(fx->listen, "127.0.0.1:0");
    assert_string_equal(fx->data_dir, "/var/lib/spool");
    assert_int_equal(fx->workers, 64);
    assert_int_equal(fx->max_depth, 1000);
    assert_int_equal(fx->retention, 10000);
    assert_int_equal(fx->max_body, 65536);
    assert_true(fx->verbose);
}

static void test_every_kind_equals_form(void **state)
{
    fixture_t *fx = *state;
    EXPECT_OK(fx, "--listen=[::1]:8080", "--data-dir=/tmp/a=b", "--workers=8", "--max-depth=5",
              "--retention=7d", "--max-body=1MB", "--verbose=true", "--debug=false");
    assert_string_equal(fx->listen, "[::1]:8080");
    assert_string_equal(fx->data_dir, "/tmp/a=b"); /* only the first '=' splits */
    assert_int_equal(fx->workers, 8);
    assert_int_equal(fx->max_depth, 5);
    assert_int_equal(fx->retention, 604800000);
    assert_int_equal(fx->max_body, 1048576);
    assert_true(fx->verbose);
    assert_false(fx->debug);
}

static void test_bool_values(void **state)
{
    fixture_t *fx = *state;
    EXPECT_OK(fx, "--verbose=1", "--debug=0");
    assert_true(fx->verbose);
    assert_false(fx->debug);
    EXPECT_OK(fx, "--verbose=FALSE", "--debug=yes");
    assert_false(fx->verbose);
    assert_true(fx->debug);
    EXPECT_OK(fx, "--verbose=off", "--debug");
    assert_false(fx->verbose);
    assert_true(fx->debug);
    EXPECT_ERROR(fx, "--verbose: not a boolean: 'maybe' (use true or false)", "--verbose=maybe");
    /* A bool never takes the next argument: "--verbose false" leaves "false" over. */
    EXPECT_ERROR(fx, "unexpected argument 'false' (see --help)", "--verbose", "false");
}

static void test_last_one_wins_and_empty_string(void **state)
{
    fixture_t *fx = *state;
    EXPECT_OK(fx, "--workers", "1", "--workers=2", "--data-dir=");
    assert_int_equal(fx->workers, 2);
    assert_string_equal(fx->data_dir, "");
}

static void test_value_error_texts(void **state)
{
    fixture_t *fx = *state;
    EXPECT_ERROR(fx, "--max-depth: not an integer: 'abc'", "--max-depth", "abc");
    EXPECT_ERROR(fx, "--max-depth: not an integer: ''", "--max-depth=");
    EXPECT_ERROR(fx,
                 "--retention: not a duration: '5x' (use ms, s, m, h or d, e.g. 500ms, 10s, 24h)",
                 "--retention", "5x");
    EXPECT_ERROR(fx, "--max-body: not a size: '1Q' (use bytes or k, M, G)", "--max-body=1Q");
}

static void test_range_error_texts(void **state)
{
    fixture_t *fx = *state;
    EXPECT_ERROR(fx, "--workers: must be between 0 and 100000", "--workers", "100001");
    EXPECT_ERROR(fx, "--workers: must be between 0 and 100000", "--workers=-1");
    /* Too big for 64 bits is out of range too, not "not an integer". */
    EXPECT_ERROR(fx, "--workers: must be between 0 and 100000", "--workers=99999999999999999999");
    EXPECT_ERROR(fx, "--max-depth: must be at least 0", "--max-depth", "-5");
    /* Durations and sizes show their bounds in units a person writes. */
    EXPECT_ERROR(fx, "--retention: must be between 1s and 365d", "--retention=500ms");
    EXPECT_ERROR(fx, "--retention: must be between 1s and 365d", "--retention=366d");
    EXPECT_ERROR(fx, "--retention: must be between 1s and 365d", "--retention=999999999999999d");
    EXPECT_ERROR(fx, "--max-body: must be between 1k and 1G", "--max-body=2G");
    EXPECT_ERROR(fx, "--max-body: must be between 1k and 1G", "--max-body", "1000");
    /* The bounds themselves are allowed. */
    EXPECT_OK(fx, "--workers=100000", "--retention=1s", "--max-body=1G");
    assert_int_equal(fx->workers, 100000);
    assert_int_equal(fx->retention, 1000);
    assert_int_equal(fx->max_body, 1073741824);
}

static void test_unbounded_when_min_max_zero(void **state)
{
    (void)state;
    int64_t n = 0;
    sp_flag_t flags[] = {{"count", SP_FLAG_INT, &n, 0, 0, NULL, "anything"}};
    char *argv[] = {"prog", "--count", "-12345", NULL};
    char err[128] = "";
    assert_int_equal(sp_config_parse(flags, 1, 3, argv, NULL, NULL, err, sizeof err), 0);
    assert_int_equal(n, -12345);
}

static void test_flag_error_texts(void **state)
{
    fixture_t *fx = *state;
    EXPECT_ERROR(fx, "unknown flag '--x' (see --help)", "--x");
    EXPECT_ERROR(fx, "unknown flag '--x' (see --help)", "--x=5");
    EXPECT_ERROR(fx, "unknown flag '-w' (see --help)", "-w", "5");
    EXPECT_ERROR(fx, "unknown flag '--work' (see --help)", "--work", "5"); /* no prefixes */
    EXPECT_ERROR(fx, "unexpected argument 'serve' (see --help)", "serve");
    EXPECT_ERROR(fx, "--listen: needs a value", "--listen");
    /* A flag where the value should be means the value was forgotten. */
    EXPECT_ERROR(fx, "--listen: needs a value", "--listen", "--workers", "8");
    EXPECT_ERROR(fx, "--workers: needs a value", "--verbose", "--workers");
}

static void test_error_truncated_safely(void **state)
{
    fixture_t *fx = *state;
    char err[12];
    memset(err, 'Z', sizeof err);
    assert_int_equal(parse(fx, err, sizeof err, NULL, NULL, "--max-depth", "abc", NULL), -1);
    assert_int_equal(strlen(err), sizeof err - 1);
    assert_memory_equal(err, "--max-depth", 11);
    /* No buffer at all still fails cleanly. */
    assert_int_equal(parse(fx, NULL, 0, NULL, NULL, "--bogus", NULL), -1);
}

static void test_env_fallback(void **state)
{
    fixture_t *fx = *state;
    setenv("SPOOL_MAX_DEPTH", "250", 1);
    setenv("SPOOL_DATA_DIR", "/srv/spool", 1);
    setenv("SPOOL_RETENTION", "2h", 1);
    setenv("SPOOL_MAX_BODY", "2M", 1);
    setenv("SPOOL_VERBOSE", "true", 1);
    setenv("SPOOL_DEBUG", "0", 1);
    EXPECT_OK(fx, NULL);
    assert_int_equal(fx->max_depth, 250);
    assert_string_equal(fx->data_dir, "/srv/spool");
    assert_int_equal(fx->retention, 7200000);
    assert_int_equal(fx->max_body, 2097152);
    assert_true(fx->verbose);
    assert_false(fx->debug);
    assert_string_equal(fx->listen, "127.0.0.1:7700"); /* no variable: default kept */
}

static void test_env_empty_is_unset(void **state)
{
    fixture_t *fx = *state;
    setenv("SPOOL_WORKERS", "", 1);
    setenv("SPOOL_LISTEN", "", 1);
    EXPECT_OK(fx, NULL);
    assert_int_equal(fx->workers, 0);
    assert_string_equal(fx->listen, "127.0.0.1:7700");
}

static void test_argv_wins_over_env(void **state)
{
    fixture_t *fx = *state;
    setenv("SPOOL_MAX_DEPTH", "250", 1);
    setenv("SPOOL_LISTEN", "0.0.0.0:1", 1);
    setenv("SPOOL_VERBOSE", "true", 1);
    EXPECT_OK(fx, "--max-depth=7", "--listen", "127.0.0.1:9", "--verbose=false");
    assert_int_equal(fx->max_depth, 7);
    assert_string_equal(fx->listen, "127.0.0.1:9");
    assert_false(fx->verbose);
}

static void test_bad_env_overridden_by_flag_is_fine(void **state)
{
    fixture_t *fx = *state;
    setenv("SPOOL_MAX_DEPTH", "abc", 1);
    EXPECT_OK(fx, "--max-depth", "3");
    assert_int_equal(fx->max_depth, 3);
}

static void test_env_error_texts(void **state)
{
    fixture_t *fx = *state;
    setenv("SPOOL_MAX_DEPTH", "abc", 1);
    EXPECT_ERROR(fx, "SPOOL_MAX_DEPTH: not an integer: 'abc'", "--workers", "1");
    unsetenv("SPOOL_MAX_DEPTH");
    setenv("SPOOL_RETENTION", "5x", 1);
    EXPECT_ERROR(fx,
                 "SPOOL_RETENTION: not a duration: '5x' (use ms, s, m, h or d, e.g. 500ms, 10s, "
                 "24h)",
                 NULL);
    unsetenv("SPOOL_RETENTION");
    setenv("SPOOL_MAX_BODY", "1Q", 1);
    EXPECT_ERROR(fx, "SPOOL_MAX_BODY: not a size: '1Q' (use bytes or k, M, G)", NULL);
    unsetenv("SPOOL_MAX_BODY");
    setenv("SPOOL_WORKERS", "100001", 1);
    EXPECT_ERROR(fx, "SPOOL_WORKERS: must be between 0 and 100000", NULL);
    unsetenv("SPOOL_WORKERS");
    setenv("SPOOL_VERBOSE", "perhaps", 1);
    EXPECT_ERROR(fx, "SPOOL_VERBOSE: not a boolean: 'perhaps' (use true or false)", NULL);
}

static void test_help_and_version(void **state)
{
    fixture_t *fx = *state;
    char err[128] = "";
    bool help = false, version = false;
    assert_int_equal(parse(fx, err, sizeof err, &help, &version, "--help", NULL), 0);
    assert_true(help);
    assert_false(version);

    assert_int_equal(parse(fx, err, sizeof err, &help, &version, "--version", NULL), 0);
    assert_false(help);
    assert_true(version);

    assert_int_equal(parse(fx, err, sizeof err, &help, &version, "-h", NULL), 0);
    assert_true(help);

    /* They stop parsing: what follows, and a bad variable, are not looked at. */
    setenv("SPOOL_WORKERS", "lots", 1);
    assert_int_equal(
        parse(fx, err, sizeof err, &help, &version, "--workers", "3", "--help", "--bogus", NULL),
        0);
    assert_true(help);
    assert_int_equal(fx->workers, 3);
    assert_int_equal(parse(fx, err, sizeof err, &help, &version, "--version", "--workers=x", NULL),
                     0);
    assert_true(version);
    /* NULL out-pointers are allowed. */
    assert_int_equal(parse(fx, err, sizeof err, NULL, NULL, "--help", NULL), 0);
}

/* Captures what sp_config_print_help writes to stdout into a malloc'd string. */
static char *capture_help(const char *usage, const sp_flag_t *flags, size_t n)
{
    char path[] = "/tmp/spool-test-config-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    fflush(stdout);
    int saved = dup(STDOUT_FILENO);
    assert_true(saved >= 0);
    assert_true(dup2(fd, STDOUT_FILENO) >= 0);
    sp_config_print_help(usage, flags, n);
    fflush(stdout);
    assert_true(dup2(saved, STDOUT_FILENO) >= 0);
    close(saved);
    off_t size = lseek(fd, 0, SEEK_END);
    assert_true(size > 0);
    char *text = malloc((size_t)size + 1);
    assert_non_null(text);
    assert_int_equal(pread(fd, text, (size_t)size, 0), size);
    text[size] = '\0';
    close(fd);
    return text;
}

static void assert_contains_line(const char *text, const char *line)
{
    size_t len = strlen(line);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, line, len) == 0 && (p[len] == '\n' || p[len] == '\0')) return;
    }
    fail_msg("line not found: \"%s\" in:\n%s", line, text);
}

static void test_print_help(void **state)
{
    fixture_t *fx = *state;
    fx->data_dir = NULL;
    char *text = capture_help("spool-server [flags]", fx->flags, NFLAGS(fx));
    assert_true(strncmp(text, "usage: spool-server [flags]\n", 28) == 0);
    assert_contains_line(text, "  --listen ADDR        address to listen on (env SPOOL_LISTEN, "
                               "default 127.0.0.1:7700)");
    assert_contains_line(text, "  --data-dir DIR       keep jobs in DIR (env SPOOL_DATA_DIR)");
    assert_contains_line(text, "  --workers N          embedded workers (env SPOOL_WORKERS, "
                               "default 0)");
    assert_contains_line(text, "  --max-depth N        per-queue limit (env SPOOL_MAX_DEPTH, "
                               "default 0)");
    assert_contains_line(text, "  --retention DURATION keep finished jobs this long (env "
                               "SPOOL_RETENTION, default 24h)");
    assert_contains_line(text, "  --max-body SIZE      largest body (env SPOOL_MAX_BODY, "
                               "default 1M)");
    assert_contains_line(text, "  --verbose            log more (env SPOOL_VERBOSE)");
    assert_contains_line(text, "  --debug              debug mode (env SPOOL_DEBUG, default "
                               "true)");
    assert_contains_line(text, "  --help               show this help and exit");
    assert_contains_line(text, "  --version            print the version and exit");
    /* usage, 8 flags, --help, --version */
    size_t lines = 0;
    for (const char *p = text; *p; p++) lines += *p == '\n';
    assert_int_equal(lines, 11);
    free(text);
}

static void test_print_help_defaults_follow_values(void **state)
{
    (void)state;
    int64_t grace = 10000, body = 1536, odd = 1500;
    const char *name = NULL;
    sp_flag_t flags[] = {
        {"shutdown-grace", SP_FLAG_DURATION, &grace, 0, 0, NULL, "grace"},
        {"limit", SP_FLAG_SIZE, &body, 0, 0, NULL, "limit"},
        {"tick", SP_FLAG_DURATION, &odd, 0, 0, NULL, "tick"},
        {"name", SP_FLAG_STRING, &name, 0, 0, NULL, "name"},
    };
    char *text = capture_help("usage: spool-worker [flags]", flags, 4);
    /* An explicit "usage:" is not doubled; the column widens for a long synopsis. */
    assert_true(strncmp(text, "usage: spool-worker [flags]\n", 28) == 0);
    assert_contains_line(text, "  --shutdown-grace DURATION grace (env SPOOL_SHUTDOWN_GRACE, "
                               "default 10s)");
    assert_contains_line(text, "  --limit SIZE              limit (env SPOOL_LIMIT, default 1536)");
    assert_contains_line(text, "  --tick DURATION           tick (env SPOOL_TICK, default 1500ms)");
    assert_contains_line(text, "  --name VALUE              name (env SPOOL_NAME)");
    free(text);
}

static void test_print_help_multiline_usage(void **state)
{
    (void)state;
    int64_t n = 3;
    sp_flag_t flags[] = {{"count", SP_FLAG_INT, &n, 0, 10, "N", "how many"}};
    char *text = capture_help("Usage: spool-x [flags]\n\nDoes x.\n", flags, 1);
    assert_string_equal(text, "Usage: spool-x [flags]\n"
                              "\n"
                              "Does x.\n"
                              "\n"
                              "  --count N            how many (env SPOOL_COUNT, default 3)\n"
                              "  --help               show this help and exit\n"
                              "  --version            print the version and exit\n");
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_int),
        cmocka_unit_test(test_parse_duration),
        cmocka_unit_test(test_parse_size),
        cmocka_unit_test_setup_teardown(test_defaults_kept, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_kind_space_form, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_kind_equals_form, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bool_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_last_one_wins_and_empty_string, setup, teardown),
        cmocka_unit_test_setup_teardown(test_value_error_texts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_range_error_texts, setup, teardown),
        cmocka_unit_test(test_unbounded_when_min_max_zero),
        cmocka_unit_test_setup_teardown(test_flag_error_texts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_truncated_safely, setup, teardown),
        cmocka_unit_test_setup_teardown(test_env_fallback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_env_empty_is_unset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_argv_wins_over_env, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_env_overridden_by_flag_is_fine, setup, teardown),
        cmocka_unit_test_setup_teardown(test_env_error_texts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_help_and_version, setup, teardown),
        cmocka_unit_test_setup_teardown(test_print_help, setup, teardown),
        cmocka_unit_test(test_print_help_defaults_follow_values),
        cmocka_unit_test(test_print_help_multiline_usage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
