/*
 * spt.c - support for Spool's integration tests: owns the child processes the tests start (and
 * kills any left behind), the plain-socket HTTP client, and the JSON comparison helpers.
 */
#include "spt.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

extern char **environ;

#define SPT_IO_MS 15000
#define SPT_LISTEN_MS 10000
#define SPT_STOP_MS 20000
/* An answer larger than this is a runaway server, not something a test expects. */
#define SPT_RESP_MAX ((size_t)256 << 20)

/* ---- clocks ---------------------------------------------------------------------------------- */

long long spt_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

long long spt_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ---- a growing byte buffer --------------------------------------------------------------- */

typedef struct {
    char *data;
    size_t len;
    size_t cap;
    bool failed; /* an allocation failed; the content is incomplete */
} sbuf_t;

static bool sb_reserve(sbuf_t *b, size_t more)
{
    if (b->failed) return false;
    if (more > SPT_RESP_MAX || b->len + more + 1 > SPT_RESP_MAX) {
        b->failed = true;
        return false;
    }
    if (b->len + more + 1 <= b->cap) return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + more + 1) cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d) {
        b->failed = true;
        return false;
    }
    b->data = d;
    b->cap = cap;
    return true;
}

static void sb_add(sbuf_t *b, const void *p, size_t n)
{
    if (!sb_reserve(b, n)) return;
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void sb_addc(sbuf_t *b, char c)
{
    sb_add(b, &c, 1);
}

static void sb_adds(sbuf_t *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

static void sb_free(sbuf_t *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}

/* Reads more bytes into b before deadline: >0 bytes read, 0 at EOF, -1 on error or timeout. */
static ssize_t read_more(int fd, sbuf_t *b, long long deadline)
{
    for (;;) {
        long long left = deadline - spt_now_ms();
        if (left <= 0) return -1;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int r = poll(&pfd, 1, (int)left);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        if (!sb_reserve(b, 65536)) return -1;
        ssize_t n = read(fd, b->data + b->len, 65536);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (n < 0) return errno == ECONNRESET ? 0 : -1;
        b->len += (size_t)n;
        b->data[b->len] = '\0';
        return n;
    }
}

/* ---- processes ------------------------------------------------------------------------------ */

const char *spt_bin(const char *name)
{
    static char path[PATH_MAX];
    const char *dir = getenv("SPOOL_BIN_DIR");
    if (!dir || !*dir) dir = "build/bin";
    int n = snprintf(path, sizeof(path), "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= sizeof(path)) path[0] = '\0';
    return path;
}

/* Every process started and not yet reaped, so that none outlives the test binary. */
typedef struct {
    pid_t pid;
    bool reaped;
    int status;
    char log_path[256]; /* removed with its directory when the binary exits */
} spt_child_t;

#define SPT_CHILDREN_MAX 64
static spt_child_t g_children[SPT_CHILDREN_MAX];
static bool g_atexit_set;

static spt_child_t *child_find(pid_t pid)
{
    if (pid <= 0) return NULL;
    for (size_t i = 0; i < SPT_CHILDREN_MAX; i++)
        if (g_children[i].pid == pid) return &g_children[i];
    return NULL;
}

/* Processes a failed test left behind: killed, and their logs removed (the test's own failure
 * message is what tells what went wrong). */
static void children_kill_all(void)
{
    for (size_t i = 0; i < SPT_CHILDREN_MAX; i++) {
        spt_child_t *c = &g_children[i];
        if (c->pid <= 0) continue;
        if (!c->reaped) {
            kill(c->pid, SIGKILL);
            waitpid(c->pid, NULL, 0);
        }
        if (c->log_path[0]) {
            unlink(c->log_path);
            char *slash = strrchr(c->log_path, '/');
            if (slash) *slash = '\0';
            rmdir(c->log_path);
        }
        c->pid = 0;
    }
}

static int child_add(pid_t pid, const char *log_path)
{
    if (!g_atexit_set) {
        atexit(children_kill_all);
        g_atexit_set = true;
    }
    for (size_t i = 0; i < SPT_CHILDREN_MAX; i++) {
        if (g_children[i].pid == 0) {
            g_children[i] = (spt_child_t){.pid = pid};
            snprintf(g_children[i].log_path, sizeof(g_children[i].log_path), "%s", log_path);
            return 0;
        }
    }
    return -1;
}

static void child_forget(pid_t pid)
{
    spt_child_t *c = child_find(pid);
    if (c) c->pid = 0;
}

static bool name_is(const char *entry, const char *name_eq)
{
    size_t n = strcspn(name_eq, "=");
    return strncmp(entry, name_eq, n) == 0 && entry[n] == '=';
}

/* The inherited environment with the extra entries added, an extra one replacing an inherited
 * one of the same name. The strings are borrowed; only the array is malloc'd. */
static char **env_build(const char *const *extra)
{
    size_t n_env = 0, n_extra = 0;
    while (environ && environ[n_env]) n_env++;
    while (extra && extra[n_extra]) n_extra++;
    char **envp = calloc(n_env + n_extra + 1, sizeof(*envp));
    if (!envp) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n_env; i++) {
        bool replaced = false;
        for (size_t j = 0; j < n_extra && !replaced; j++) replaced = name_is(environ[i], extra[j]);
        if (!replaced) envp[k++] = environ[i];
    }
    for (size_t j = 0; j < n_extra; j++) envp[k++] = (char *)extra[j];
    envp[k] = NULL;
    return envp;
}

static bool is_server(const char *bin)
{
    const char *slash = strrchr(bin, '/');
    return strcmp(slash ? slash + 1 : bin, "spool-server") == 0;
}

static char **argv_build(const char *path, const char *bin, const char *const *args,
                         bool wait_listen)
{
    size_t n = 0;
    bool has_listen = false;
    while (args && args[n]) {
        if (strcmp(args[n], "--listen") == 0 || strncmp(args[n], "--listen=", 9) == 0)
            has_listen = true;
        n++;
    }
    bool add_listen = wait_listen && is_server(bin) && !has_listen;
    bool has_backend = false;
    for (size_t i = 0; i < n; i++)
        if (strcmp(args[i], "--backend") == 0 || strncmp(args[i], "--backend=", 10) == 0)
            has_backend = true;
    const char *backend = is_server(bin) && !has_backend ? spt_test_backend_url() : NULL;
    char **argv = calloc(n + 6, sizeof(*argv));
    if (!argv) return NULL;
    size_t k = 0;
    argv[k++] = (char *)path;
    for (size_t i = 0; i < n; i++) argv[k++] = (char *)args[i];
    if (add_listen) {
        argv[k++] = "--listen";
        argv[k++] = "127.0.0.1:0";
    }
    if (backend) {
        argv[k++] = "--backend";
        argv[k++] = (char *)backend;
    }
    argv[k] = NULL;
    return argv;
}

static void log_dir(const spt_proc_t *p, char *dir, size_t cap)
{
    snprintf(dir, cap, "%s", p->log_path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = '\0';
}

static void print_log(const spt_proc_t *p, const char *why)
{
    char *log = spt_log(p);
    fprintf(stderr, "spt: pid %d %s; its stderr (%s):\n%s\n", (int)p->pid, why, p->log_path,
            log ? log : "(unreadable)");
    free(log);
}

/* Reads the first stdout line byte by byte, so that the rest stays in the pipe for the test. */
static int read_listen_line(int fd, char *line, size_t cap)
{
    long long deadline = spt_now_ms() + SPT_LISTEN_MS;
    size_t n = 0;
    for (;;) {
        long long left = deadline - spt_now_ms();
        if (left <= 0) return -1;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int r = poll(&pfd, 1, (int)left);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        char c;
        ssize_t got = read(fd, &c, 1);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) return -1;
        if (c == '\n') break;
        if (n + 1 < cap) line[n++] = c;
    }
    line[n] = '\0';
    return 0;
}

static int parse_listen_line(const char *line, spt_proc_t *p)
{
    const char *prefix = "listening on ";
    const char *s = strstr(line, prefix);
    if (!s) return -1;
    s += strlen(prefix);
    const char *colon = strrchr(s, ':');
    if (!colon) return -1;
    char *end;
    errno = 0;
    long long port = strtoll(colon + 1, &end, 10);
    if (errno || end == colon + 1 || port <= 0 || port > 65535) return -1;
    p->port = (int)port;
    snprintf(p->addr, sizeof(p->addr), "127.0.0.1:%d", p->port);
    return 0;
}

static void child_exec(const char *path, char **argv, char **envp, int out_fd, int log_fd,
                       pid_t parent)
{
    /* Dies with the test binary even when that is killed outright. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    int null_fd = open("/dev/null", O_RDONLY);
    if (null_fd >= 0) dup2(null_fd, 0);
    dup2(out_fd, 1);
    dup2(log_fd, 2);
    execve(path, argv, envp);
    static const char msg[] = "spt: exec failed\n";
    if (write(2, msg, sizeof(msg) - 1) < 0) _exit(127);
    _exit(127);
}

int spt_start(spt_proc_t *p, const char *bin, const char *const *args, const char *const *env,
              bool wait_listen)
{
    memset(p, 0, sizeof(*p));
    p->stdout_fd = -1;
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s", strchr(bin, '/') ? bin : spt_bin(bin));
    if (access(path, X_OK) != 0) {
        fprintf(stderr, "spt: %s is not an executable (set SPOOL_BIN_DIR)\n", path);
        return -1;
    }

    char dir[] = "/tmp/spt.XXXXXX";
    if (!mkdtemp(dir)) return -1;
    snprintf(p->log_path, sizeof(p->log_path), "%s/stderr.log", dir);

    int pipefd[2] = {-1, -1};
    int log_fd = -1;
    char **argv = argv_build(path, bin, args, wait_listen);
    char **envp = env_build(env);
    if (!argv || !envp) goto fail;
    log_fd = open(p->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (log_fd < 0 || pipe2(pipefd, O_CLOEXEC) != 0) goto fail;

    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) goto fail;
    if (pid == 0) child_exec(path, argv, envp, pipefd[1], log_fd, parent);

    free(argv);
    free(envp);
    argv = NULL;
    envp = NULL;
    close(pipefd[1]);
    close(log_fd);
    p->pid = pid;
    p->stdout_fd = pipefd[0];
    if (child_add(pid, p->log_path) != 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        close(p->stdout_fd);
        unlink(p->log_path);
        rmdir(dir);
        memset(p, 0, sizeof(*p));
        p->stdout_fd = -1;
        return -1;
    }
    if (!wait_listen) return 0;

    char line[256];
    if (read_listen_line(p->stdout_fd, line, sizeof(line)) == 0 && parse_listen_line(line, p) == 0)
        return 0;
    fprintf(stderr, "spt: %s printed no listening line\n", path);
    kill(pid, SIGKILL);
    int st;
    waitpid(pid, &st, 0);
    child_forget(pid);
    print_log(p, "did not start");
    close(p->stdout_fd);
    p->stdout_fd = -1;
    p->pid = 0;
    return -1;

fail:
    free(argv);
    free(envp);
    if (log_fd >= 0) close(log_fd);
    if (pipefd[0] >= 0) close(pipefd[0]);
    if (pipefd[1] >= 0) close(pipefd[1]);
    unlink(p->log_path);
    rmdir(dir);
    return -1;
}

int spt_server_start(spt_proc_t *p, const char *const *args)
{
    return spt_start(p, "spool-server", args, NULL, true);
}

int spt_signal(spt_proc_t *p, int sig)
{
    spt_child_t *c = child_find(p->pid);
    if (!c || c->reaped) return -1;
    return kill(p->pid, sig) == 0 ? 0 : -1;
}

int spt_wait(spt_proc_t *p, int timeout_ms, int *status)
{
    spt_child_t *c = child_find(p->pid);
    if (!c) return -1;
    long long deadline = spt_now_ms() + timeout_ms;
    while (!c->reaped) {
        int st;
        pid_t r = waitpid(p->pid, &st, WNOHANG);
        if (r == p->pid) {
            c->reaped = true;
            c->status = st;
            break;
        }
        if (r < 0 && errno != EINTR) return -1;
        if (spt_now_ms() >= deadline) return -1;
        sleep_ms(5);
    }
    if (status) *status = c->status;
    return 0;
}

int spt_stop(spt_proc_t *p)
{
    if (p->pid <= 0 || !child_find(p->pid)) return -1;
    int st = 0;
    spt_signal(p, SIGTERM);
    if (spt_wait(p, SPT_STOP_MS, &st) != 0) {
        fprintf(stderr, "spt: pid %d did not exit within %d ms of SIGTERM; killing it\n",
                (int)p->pid, SPT_STOP_MS);
        kill(p->pid, SIGKILL);
        waitpid(p->pid, &st, 0);
    }
    int code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    if (code != 0) {
        char why[64];
        snprintf(why, sizeof(why), "exited with %d", code);
        print_log(p, why);
    }
    child_forget(p->pid);
    if (p->stdout_fd >= 0) close(p->stdout_fd);
    p->stdout_fd = -1;
    /* A failing process's log is kept for a closer look; a clean one leaves nothing behind. */
    if (code == 0) {
        char dir[sizeof(p->log_path)];
        log_dir(p, dir, sizeof(dir));
        unlink(p->log_path);
        rmdir(dir);
    }
    p->pid = 0;
    return code;
}

int spt_finish(spt_proc_t *p, int timeout_ms, char **out, char **err)
{
    if (out) *out = NULL;
    if (err) *err = NULL;
    if (p->pid <= 0 || !child_find(p->pid)) return -1;
    long long deadline = spt_now_ms() + timeout_ms;
    sbuf_t o = {0};
    if (p->stdout_fd >= 0) {
        /* Its stdout ends when it exits (or closes it). */
        while (read_more(p->stdout_fd, &o, deadline) > 0) {
        }
    }
    int st = 0;
    long long left = deadline - spt_now_ms();
    if (spt_wait(p, left > 0 ? (int)left : 0, &st) != 0) {
        kill(p->pid, SIGKILL);
        waitpid(p->pid, &st, 0);
    }
    int code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    if (!o.data) sb_adds(&o, "");
    if (out && !o.failed) {
        *out = o.data;
        o.data = NULL;
    }
    sb_free(&o);
    if (err) *err = spt_log(p);
    child_forget(p->pid);
    if (p->stdout_fd >= 0) close(p->stdout_fd);
    p->stdout_fd = -1;
    char dir[sizeof(p->log_path)];
    log_dir(p, dir, sizeof(dir));
    unlink(p->log_path);
    rmdir(dir);
    p->pid = 0;
    return code;
}

char *spt_log(const spt_proc_t *p)
{
    FILE *f = fopen(p->log_path, "rb");
    if (!f) return NULL;
    sbuf_t b = {0};
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) sb_add(&b, chunk, n);
    fclose(f);
    if (!b.data) sb_adds(&b, "");
    if (b.failed) {
        sb_free(&b);
        return NULL;
    }
    return b.data;
}

/* ---- sockets ------------------------------------------------------------------------------- */

/* Bytes read past the end of one response, kept for the next spt_read_response on that fd. */
typedef struct {
    int fd;
    char *data;
    size_t len;
} spt_leftover_t;

#define SPT_LEFTOVER_MAX 64
static spt_leftover_t g_left[SPT_LEFTOVER_MAX];

static spt_leftover_t *left_find(int fd)
{
    for (size_t i = 0; i < SPT_LEFTOVER_MAX; i++)
        if (g_left[i].data && g_left[i].fd == fd) return &g_left[i];
    return NULL;
}

static void left_drop(int fd)
{
    spt_leftover_t *l = left_find(fd);
    if (!l) return;
    free(l->data);
    memset(l, 0, sizeof(*l));
}

/* Moves fd's leftover bytes into b. */
static void left_take(int fd, sbuf_t *b)
{
    spt_leftover_t *l = left_find(fd);
    if (!l) return;
    sb_add(b, l->data, l->len);
    left_drop(fd);
}

static int left_put(int fd, const char *data, size_t len)
{
    left_drop(fd);
    if (len == 0) return 0;
    for (size_t i = 0; i < SPT_LEFTOVER_MAX; i++) {
        if (!g_left[i].data) {
            g_left[i].data = malloc(len);
            if (!g_left[i].data) return -1;
            memcpy(g_left[i].data, data, len);
            g_left[i].len = len;
            g_left[i].fd = fd;
            return 0;
        }
    }
    return -1;
}

int spt_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {SPT_IO_MS / 1000, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    left_drop(fd);
    return fd;
}

int spt_send(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

void spt_close(int fd)
{
    if (fd < 0) return;
    left_drop(fd);
    close(fd);
}

bool spt_closed(int fd, int timeout_ms)
{
    sbuf_t b = {0};
    left_take(fd, &b);
    long long deadline = spt_now_ms() + timeout_ms;
    ssize_t n;
    while ((n = read_more(fd, &b, deadline)) > 0) {
    }
    bool closed = n == 0;
    /* Bytes that came before the close stay readable. */
    if (b.len > 0) left_put(fd, b.data, b.len);
    sb_free(&b);
    return closed;
}

static const char *find_bytes(const char *hay, size_t hay_len, const char *needle)
{
    size_t n = strlen(needle);
    if (n > hay_len) return NULL;
    for (size_t i = 0; i + n <= hay_len; i++)
        if (memcmp(hay + i, needle, n) == 0) return hay + i;
    return NULL;
}

/* The value of header name in a head block, copied into out; false when absent. */
static bool head_value(const char *head, const char *name, char *out, size_t cap)
{
    size_t nlen = strlen(name);
    const char *line = strstr(head, "\r\n");
    while (line) {
        line += 2;
        const char *end = strstr(line, "\r\n");
        size_t llen = end ? (size_t)(end - line) : strlen(line);
        if (llen > nlen && strncasecmp(line, name, nlen) == 0 && line[nlen] == ':') {
            const char *v = line + nlen + 1;
            const char *vend = line + llen;
            while (v < vend && (*v == ' ' || *v == '\t')) v++;
            while (vend > v && (vend[-1] == ' ' || vend[-1] == '\t')) vend--;
            size_t vlen = (size_t)(vend - v);
            if (vlen >= cap) vlen = cap - 1;
            memcpy(out, v, vlen);
            out[vlen] = '\0';
            return true;
        }
        line = end;
    }
    return false;
}

/* Decodes a chunked body that starts at b->data[pos]; reads more as needed. Sets *end to the
 * offset just past the last chunk's trailers. */
static int read_chunked(int fd, sbuf_t *b, size_t pos, sbuf_t *body, size_t *end,
                        long long deadline)
{
    for (;;) {
        const char *crlf;
        while (!(crlf = find_bytes(b->data + pos, b->len - pos, "\r\n")))
            if (read_more(fd, b, deadline) <= 0) return -1;
        char *hex_end;
        errno = 0;
        unsigned long long size = strtoull(b->data + pos, &hex_end, 16);
        if (errno || hex_end == b->data + pos || size > SPT_RESP_MAX) return -1;
        pos = (size_t)(crlf - b->data) + 2;
        if (size == 0) {
            /* Trailers end at an empty line. */
            for (;;) {
                while (!(crlf = find_bytes(b->data + pos, b->len - pos, "\r\n")))
                    if (read_more(fd, b, deadline) <= 0) return -1;
                size_t line_len = (size_t)(crlf - (b->data + pos));
                pos += line_len + 2;
                if (line_len == 0) {
                    *end = pos;
                    return 0;
                }
            }
        }
        while (b->len - pos < size + 2)
            if (read_more(fd, b, deadline) <= 0) return -1;
        sb_add(body, b->data + pos, (size_t)size);
        if (memcmp(b->data + pos + size, "\r\n", 2) != 0) return -1;
        pos += (size_t)size + 2;
    }
}

static void resp_parse_json(spt_resp_t *r)
{
    if (r->body_len == 0) return;
    r->json = cJSON_ParseWithLength(r->body, r->body_len);
}

static int read_response_until(int fd, spt_resp_t *out, bool head_only, long long deadline)
{
    memset(out, 0, sizeof(*out));
    sbuf_t b = {0};
    sbuf_t body = {0};
    left_take(fd, &b);
    const char *sep;
    while (!b.data || !(sep = find_bytes(b.data, b.len, "\r\n\r\n")))
        if (read_more(fd, &b, deadline) <= 0) goto fail;

    size_t head_len = (size_t)(sep - b.data);
    size_t pos = head_len + 4;
    if (head_len < 12 || strncmp(b.data, "HTTP/1.", 7) != 0) goto fail;
    out->head = strndup(b.data, head_len);
    if (!out->head) goto fail;
    char *st_end;
    long status = strtol(out->head + 9, &st_end, 10);
    if (st_end == out->head + 9 || status < 100 || status > 999) goto fail;
    out->status = (int)status;

    char val[256];
    size_t end = pos;
    bool no_body = head_only || status < 200 || status == 204 || status == 304;
    if (no_body) {
        end = pos;
    } else if (head_value(out->head, "Transfer-Encoding", val, sizeof(val)) &&
               strcasestr(val, "chunked")) {
        if (read_chunked(fd, &b, pos, &body, &end, deadline) != 0) goto fail;
    } else if (head_value(out->head, "Content-Length", val, sizeof(val))) {
        char *ce;
        errno = 0;
        unsigned long long n = strtoull(val, &ce, 10);
        if (errno || ce == val || *ce || n > SPT_RESP_MAX) goto fail;
        while (b.len - pos < n)
            if (read_more(fd, &b, deadline) <= 0) goto fail;
        sb_add(&body, b.data + pos, (size_t)n);
        end = pos + (size_t)n;
    } else {
        ssize_t n;
        while ((n = read_more(fd, &b, deadline)) > 0) {
        }
        if (n < 0) goto fail;
        sb_add(&body, b.data + pos, b.len - pos);
        end = b.len;
    }
    if (!body.data) sb_adds(&body, "");
    if (b.failed || body.failed) goto fail;
    if (left_put(fd, b.data + end, b.len - end) != 0) goto fail;
    out->body = body.data;
    out->body_len = body.len;
    resp_parse_json(out);
    sb_free(&b);
    return 0;

fail:
    sb_free(&b);
    sb_free(&body);
    free(out->head);
    memset(out, 0, sizeof(*out));
    return -1;
}

int spt_read_response(int fd, spt_resp_t *out, bool head_only)
{
    return read_response_until(fd, out, head_only, spt_now_ms() + SPT_IO_MS);
}

void spt_resp_free(spt_resp_t *r)
{
    if (!r) return;
    free(r->head);
    free(r->body);
    cJSON_Delete(r->json);
    memset(r, 0, sizeof(*r));
}

const char *spt_header(const spt_resp_t *r, const char *name)
{
    static char buf[1024];
    if (!r->head || !head_value(r->head, name, buf, sizeof(buf))) return NULL;
    return buf;
}

const char *spt_error_code(const spt_resp_t *r)
{
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(r->json, "error");
    const char *code = spt_jstr(err, "code");
    return code ? code : "";
}

static int exchange(int port, const void *raw, size_t len, bool head_only, spt_resp_t *out)
{
    memset(out, 0, sizeof(*out));
    long long deadline = spt_now_ms() + SPT_IO_MS;
    int fd = spt_connect(port);
    if (fd < 0) return -1;
    /* A server that refuses a request early may close before reading all of it; its answer
     * can still be read, so a failed send is not the end. */
    (void)spt_send(fd, raw, len);
    int rc = read_response_until(fd, out, head_only, deadline);
    spt_close(fd);
    return rc;
}

int spt_exchange(int port, const void *raw, size_t len, bool head_only, spt_resp_t *out)
{
    return exchange(port, raw, len, head_only, out);
}

int spt_request(int port, const char *method, const char *target, const char *body,
                const char *headers, spt_resp_t *out)
{
    sbuf_t req = {0};
    sb_adds(&req, method);
    sb_addc(&req, ' ');
    sb_adds(&req, target);
    sb_adds(&req, " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if (body) {
        char cl[64];
        snprintf(cl, sizeof(cl), "Content-Length: %zu\r\n", strlen(body));
        sb_adds(&req, cl);
        if (!headers || !strcasestr(headers, "content-type:"))
            sb_adds(&req, "Content-Type: application/json\r\n");
    }
    if (headers) sb_adds(&req, headers);
    sb_adds(&req, "\r\n");
    if (body) sb_adds(&req, body);
    if (req.failed) {
        sb_free(&req);
        memset(out, 0, sizeof(*out));
        return -1;
    }
    int rc = exchange(port, req.data, req.len, strcmp(method, "HEAD") == 0, out);
    sb_free(&req);
    return rc;
}

spt_resp_t spt_do(int port, const char *method, const char *target, const char *body,
                  const char *headers)
{
    spt_resp_t r;
    if (spt_request(port, method, target, body, headers, &r) != 0) {
        fprintf(stderr, "spt: no complete answer to %s %s\n", method, target);
        memset(&r, 0, sizeof(r));
    }
    return r;
}

static bool snake_case(const char *s)
{
    if (!s || !*s) return false;
    for (; *s; s++)
        if (!(islower((unsigned char)*s) || isdigit((unsigned char)*s) || *s == '_')) return false;
    return true;
}

static void print_mismatch(const char *method, const char *target, const char *body,
                           const char *what, const spt_resp_t *r)
{
    size_t blen = body ? strlen(body) : 0;
    fprintf(stderr, "spt: %s %s", method, target);
    if (body)
        fprintf(stderr, " body %.*s%s", (int)(blen > 300 ? 300 : blen), body,
                blen > 300 ? "..." : "");
    fprintf(stderr, "\n  expected %s\n  got %d %.*s%s\n", what, r->status,
            (int)(r->body_len > 500 ? 500 : r->body_len), r->body ? r->body : "",
            r->body_len > 500 ? "..." : "");
}

int spt_expect(int port, const char *method, const char *target, const char *body,
               const char *headers, int status, const char *msg_part)
{
    spt_resp_t r = spt_do(port, method, target, body, headers);
    char what[256];
    int rc = 0;
    if (r.status != status) {
        snprintf(what, sizeof(what), "status %d", status);
        rc = -1;
    } else if (status >= 400 && strcmp(method, "HEAD") != 0) {
        const cJSON *err = cJSON_GetObjectItemCaseSensitive(r.json, "error");
        const char *code = spt_jstr(err, "code");
        const char *msg = spt_jstr(err, "message");
        if (!snake_case(code) || !msg || !*msg) {
            snprintf(what, sizeof(what), "{\"error\":{\"code\":snake_case,\"message\":text}}");
            rc = -1;
        } else if (msg_part && !strstr(msg, msg_part)) {
            snprintf(what, sizeof(what), "a message naming \"%s\"", msg_part);
            rc = -1;
        }
    }
    if (rc != 0) print_mismatch(method, target, body, what, &r);
    spt_resp_free(&r);
    return rc;
}

/* ---- JSON ----------------------------------------------------------------------------------- */

const char *spt_jstr(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

long long spt_jint(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsNumber(v) ? (long long)v->valuedouble : -1;
}

typedef struct {
    const char *s;
    size_t len;
    size_t pos;
    int depth;
} jp_t;

static void jp_ws(jp_t *p)
{
    while (p->pos < p->len && strchr(" \t\r\n", p->s[p->pos]) && p->s[p->pos]) p->pos++;
}

static int hex4(const char *s, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

static void put_utf8(sbuf_t *o, unsigned cp)
{
    char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xC0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        u[0] = (char)(0xF0 | (cp >> 18));
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    sb_add(o, u, n);
}

/* A code point below U+0020 (or a lone surrogate) is written as an escape, the rest as
 * UTF-8, so that every spelling of one string gives the same text. */
static void put_cp(sbuf_t *o, unsigned cp)
{
    char esc[8];
    if (cp == '"')
        sb_adds(o, "\\\"");
    else if (cp == '\\')
        sb_adds(o, "\\\\");
    else if (cp < 0x20 || (cp >= 0xD800 && cp <= 0xDFFF)) {
        snprintf(esc, sizeof(esc), "\\u%04x", cp);
        sb_adds(o, esc);
    } else
        put_utf8(o, cp);
}

static int jp_string(jp_t *p, sbuf_t *o)
{
    if (p->pos >= p->len || p->s[p->pos] != '"') return -1;
    p->pos++;
    sb_addc(o, '"');
    while (p->pos < p->len) {
        unsigned char c = (unsigned char)p->s[p->pos++];
        if (c == '"') {
            sb_addc(o, '"');
            return 0;
        }
        if (c < 0x20) return -1;
        if (c != '\\') {
            /* Raw bytes, UTF-8 or not, are kept as they are. */
            sb_addc(o, (char)c);
            continue;
        }
        if (p->pos >= p->len) return -1;
        char e = p->s[p->pos++];
        unsigned cp;
        switch (e) {
        case '"':
            cp = '"';
            break;
        case '\\':
            cp = '\\';
            break;
        case '/':
            cp = '/';
            break;
        case 'b':
            cp = '\b';
            break;
        case 'f':
            cp = '\f';
            break;
        case 'n':
            cp = '\n';
            break;
        case 'r':
            cp = '\r';
            break;
        case 't':
            cp = '\t';
            break;
        case 'u':
            if (p->pos + 4 > p->len || hex4(p->s + p->pos, &cp) != 0) return -1;
            p->pos += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF && p->pos + 6 <= p->len && p->s[p->pos] == '\\' &&
                p->s[p->pos + 1] == 'u') {
                unsigned lo;
                if (hex4(p->s + p->pos + 2, &lo) == 0 && lo >= 0xDC00 && lo <= 0xDFFF) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    p->pos += 6;
                }
            }
            break;
        default:
            return -1;
        }
        put_cp(o, cp);
    }
    return -1;
}

/* Number text digit for digit; only the exponent is respelt (e, no '+', no leading zeros). */
static int jp_number(jp_t *p, sbuf_t *o)
{
    size_t start = p->pos;
    if (p->pos < p->len && p->s[p->pos] == '-') p->pos++;
    size_t digits = p->pos;
    while (p->pos < p->len && (isdigit((unsigned char)p->s[p->pos]) || p->s[p->pos] == '.'))
        p->pos++;
    if (p->pos == digits) return -1;
    sb_add(o, p->s + start, p->pos - start);
    if (p->pos < p->len && (p->s[p->pos] == 'e' || p->s[p->pos] == 'E')) {
        p->pos++;
        sb_addc(o, 'e');
        if (p->pos < p->len && (p->s[p->pos] == '+' || p->s[p->pos] == '-')) {
            if (p->s[p->pos] == '-') sb_addc(o, '-');
            p->pos++;
        }
        size_t exp = p->pos;
        while (p->pos < p->len && p->s[p->pos] == '0') p->pos++;
        size_t nz = p->pos;
        while (p->pos < p->len && isdigit((unsigned char)p->s[p->pos])) p->pos++;
        if (p->pos == exp) return -1;
        if (p->pos == nz)
            sb_addc(o, '0');
        else
            sb_add(o, p->s + nz, p->pos - nz);
    }
    return 0;
}

typedef struct {
    char *key;
    char *val;
} jmember_t;

static int member_cmp(const void *a, const void *b)
{
    return strcmp(((const jmember_t *)a)->key, ((const jmember_t *)b)->key);
}

static int jp_value(jp_t *p, sbuf_t *o);

static int jp_object(jp_t *p, sbuf_t *o)
{
    jmember_t *m = NULL;
    size_t n = 0, cap = 0;
    int rc = -1;
    p->pos++;
    jp_ws(p);
    if (p->pos < p->len && p->s[p->pos] == '}') {
        p->pos++;
        sb_adds(o, "{}");
        return 0;
    }
    for (;;) {
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 8;
            jmember_t *nm = realloc(m, ncap * sizeof(*m));
            if (!nm) goto out;
            m = nm;
            cap = ncap;
        }
        sbuf_t k = {0}, v = {0};
        jp_ws(p);
        int ok = jp_string(p, &k);
        jp_ws(p);
        if (ok == 0 && p->pos < p->len && p->s[p->pos] == ':') {
            p->pos++;
            ok = jp_value(p, &v);
        } else
            ok = -1;
        if (ok != 0 || k.failed || v.failed) {
            sb_free(&k);
            sb_free(&v);
            goto out;
        }
        m[n].key = k.data;
        m[n].val = v.data;
        n++;
        jp_ws(p);
        if (p->pos < p->len && p->s[p->pos] == ',') {
            p->pos++;
            continue;
        }
        if (p->pos < p->len && p->s[p->pos] == '}') {
            p->pos++;
            break;
        }
        goto out;
    }
    qsort(m, n, sizeof(*m), member_cmp);
    sb_addc(o, '{');
    for (size_t i = 0; i < n; i++) {
        if (i) sb_addc(o, ',');
        sb_adds(o, m[i].key);
        sb_addc(o, ':');
        sb_adds(o, m[i].val);
    }
    sb_addc(o, '}');
    rc = 0;
out:
    for (size_t i = 0; i < n; i++) {
        free(m[i].key);
        free(m[i].val);
    }
    free(m);
    return rc;
}

static int jp_array(jp_t *p, sbuf_t *o)
{
    p->pos++;
    sb_addc(o, '[');
    jp_ws(p);
    if (p->pos < p->len && p->s[p->pos] == ']') {
        p->pos++;
        sb_addc(o, ']');
        return 0;
    }
    for (bool first = true;; first = false) {
        if (!first) sb_addc(o, ',');
        if (jp_value(p, o) != 0) return -1;
        jp_ws(p);
        if (p->pos < p->len && p->s[p->pos] == ',') {
            p->pos++;
            continue;
        }
        if (p->pos < p->len && p->s[p->pos] == ']') {
            p->pos++;
            sb_addc(o, ']');
            return 0;
        }
        return -1;
    }
}

static int jp_value(jp_t *p, sbuf_t *o)
{
    static const char *const words[] = {"true", "false", "null"};
    int rc = -1;
    if (++p->depth > 200) return -1;
    jp_ws(p);
    if (p->pos >= p->len) goto out;
    char c = p->s[p->pos];
    if (c == '{')
        rc = jp_object(p, o);
    else if (c == '[')
        rc = jp_array(p, o);
    else if (c == '"')
        rc = jp_string(p, o);
    else if (c == '-' || isdigit((unsigned char)c))
        rc = jp_number(p, o);
    else {
        for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
            size_t n = strlen(words[i]);
            if (p->len - p->pos >= n && memcmp(p->s + p->pos, words[i], n) == 0) {
                sb_add(o, words[i], n);
                p->pos += n;
                rc = 0;
                break;
            }
        }
    }
out:
    p->depth--;
    return rc;
}

static char *json_canon(const char *text, size_t len)
{
    jp_t p = {.s = text, .len = len};
    sbuf_t o = {0};
    if (jp_value(&p, &o) != 0 || o.failed) goto fail;
    jp_ws(&p);
    if (p.pos != p.len) goto fail;
    return o.data;
fail:
    sb_free(&o);
    return NULL;
}

/* Skips one value of canonical text (no whitespace, well formed) starting at s. */
static const char *canon_skip(const char *s)
{
    if (*s == '"') {
        for (s++; *s && *s != '"'; s++)
            if (*s == '\\' && s[1]) s++;
        return *s ? s + 1 : s;
    }
    if (*s == '{' || *s == '[') {
        int depth = 0;
        for (; *s; s++) {
            if (*s == '"') {
                s = canon_skip(s) - 1;
            } else if (*s == '{' || *s == '[') {
                depth++;
            } else if (*s == '}' || *s == ']') {
                if (--depth == 0) return s + 1;
            }
        }
        return s;
    }
    while (*s && *s != ',' && *s != '}' && *s != ']') s++;
    return s;
}

/* The value named by one path component inside the canonical value at s, or NULL. */
static const char *canon_child(const char *s, const char *comp, size_t comp_len)
{
    if (*s == '{') {
        s++;
        while (*s == '"') {
            const char *key_end = canon_skip(s);
            bool match =
                (size_t)(key_end - s) == comp_len + 2 && memcmp(s + 1, comp, comp_len) == 0;
            s = key_end + 1; /* past ':' */
            if (match) return s;
            s = canon_skip(s);
            if (*s == ',') s++;
        }
        return NULL;
    }
    if (*s == '[') {
        char *end;
        char idx_text[32];
        if (comp_len == 0 || comp_len >= sizeof(idx_text)) return NULL;
        memcpy(idx_text, comp, comp_len);
        idx_text[comp_len] = '\0';
        long long idx = strtoll(idx_text, &end, 10);
        if (*end || idx < 0) return NULL;
        s++;
        for (long long i = 0; *s && *s != ']'; i++) {
            if (i == idx) return s;
            s = canon_skip(s);
            if (*s == ',') s++;
        }
    }
    return NULL;
}

char *spt_json_at(const char *text, size_t len, const char *path)
{
    if (!text) return NULL;
    char *canon = json_canon(text, len);
    if (!canon) return NULL;
    const char *s = canon;
    while (path && *path) {
        size_t n = strcspn(path, ".");
        s = canon_child(s, path, n);
        if (!s) {
            free(canon);
            return NULL;
        }
        path += n;
        if (*path == '.') path++;
    }
    char *out = strndup(s, (size_t)(canon_skip(s) - s));
    free(canon);
    return out;
}

bool spt_json_same(const char *text, size_t len, const char *path, const char *expected)
{
    char *got = spt_json_at(text, len, path);
    char *want = json_canon(expected, strlen(expected));
    bool same = got && want && strcmp(got, want) == 0;
    if (!same)
        fprintf(stderr, "spt: JSON at \"%s\" differs\n  expected %s\n  got      %s\n  in %.*s\n",
                path ? path : "", want ? want : "(invalid expectation)",
                got ? got : "(absent or not JSON)", (int)(len > 2000 ? 2000 : len),
                text ? text : "");
    free(got);
    free(want);
    return same;
}

/* ---- API shortcuts ------------------------------------------------------------------------- */

int spt_submit(int port, const char *queue, const char *type, const char *extra, char *id,
               size_t cap)
{
    char target[512];
    snprintf(target, sizeof(target), "/v1/queues/%s/jobs", queue);
    sbuf_t body = {0};
    sb_adds(&body, "{\"type\":\"");
    sb_adds(&body, type);
    sb_adds(&body, "\"");
    if (extra) sb_adds(&body, extra);
    sb_adds(&body, "}");
    if (body.failed) {
        sb_free(&body);
        return -1;
    }
    spt_resp_t r = spt_do(port, "POST", target, body.data, NULL);
    const char *got = spt_jstr(r.json, "id");
    if (id && cap) {
        id[0] = '\0';
        if (got) snprintf(id, cap, "%s", got);
    }
    if (r.status >= 300 || (r.status >= 200 && !got))
        fprintf(stderr, "spt: submit %s to %s answered %d %s\n", body.data, queue, r.status,
                r.body ? r.body : "");
    int status = r.status ? r.status : -1;
    spt_resp_free(&r);
    sb_free(&body);
    return status;
}

int spt_wait_state(int port, const char *id, const char *state, int timeout_ms)
{
    char target[256];
    snprintf(target, sizeof(target), "/v1/jobs/%s", id);
    long long deadline = spt_now_ms() + timeout_ms;
    char last[64] = "(no answer)";
    for (;;) {
        spt_resp_t r = spt_do(port, "GET", target, NULL, NULL);
        const char *s = spt_jstr(r.json, "state");
        if (s)
            snprintf(last, sizeof(last), "%s", s);
        else
            snprintf(last, sizeof(last), "(status %d)", r.status);
        spt_resp_free(&r);
        if (strcmp(last, state) == 0) return 0;
        if (spt_now_ms() >= deadline) break;
        sleep_ms(20);
    }
    fprintf(stderr, "spt: job %s did not become %s within %d ms; last seen %s\n", id, state,
            timeout_ms, last);
    return -1;
}

long long spt_queue_num(int port, const char *queue, const char *group, const char *name)
{
    char target[256];
    snprintf(target, sizeof(target), "/v1/queues/%s", queue);
    spt_resp_t r = spt_do(port, "GET", target, NULL, NULL);
    long long v = -1;
    if (r.status == 200) {
        const cJSON *obj = group ? cJSON_GetObjectItemCaseSensitive(r.json, group) : r.json;
        v = spt_jint(obj, name);
    }
    spt_resp_free(&r);
    return v;
}

int spt_lease_one(int port, const char *queue, char *id, size_t id_cap, char *lease,
                  size_t lease_cap)
{
    char body[512];
    snprintf(body, sizeof(body), "{\"queues\":[\"%s\"],\"max\":1}", queue);
    spt_resp_t r = spt_do(port, "POST", "/v1/lease", body, NULL);
    int rc = -1;
    if (r.status == 200) {
        const cJSON *jobs = cJSON_GetObjectItemCaseSensitive(r.json, "jobs");
        const cJSON *job = cJSON_GetArrayItem(jobs, 0);
        rc = 0;
        if (job) {
            const char *jid = spt_jstr(job, "id");
            const char *jlease = spt_jstr(job, "lease");
            if (jid && jlease) {
                if (id) snprintf(id, id_cap, "%s", jid);
                if (lease) snprintf(lease, lease_cap, "%s", jlease);
                rc = 1;
            } else {
                rc = -1;
            }
        } else if (!cJSON_IsArray(jobs)) {
            rc = -1;
        }
    }
    if (rc < 0)
        fprintf(stderr, "spt: lease from %s answered %d %s\n", queue, r.status,
                r.body ? r.body : "");
    spt_resp_free(&r);
    return rc;
}

void spt_sleep_ms(int ms)
{
    sleep_ms(ms);
}

bool spt_recv_until(int fd, const char *needle, int timeout_ms)
{
    sbuf_t b = {0};
    left_take(fd, &b);
    long long deadline = spt_now_ms() + timeout_ms;
    const char *at = NULL;
    while (!(b.data && (at = find_bytes(b.data, b.len, needle))))
        if (read_more(fd, &b, deadline) <= 0) break;
    if (at) {
        size_t after = (size_t)(at - b.data) + strlen(needle);
        left_put(fd, b.data + after, b.len - after);
    } else if (b.len > 0) {
        left_put(fd, b.data, b.len);
    }
    sb_free(&b);
    return at != NULL;
}

bool spt_list_has(const char *list, const char *token)
{
    size_t n = strlen(token);
    while (list && *list) {
        while (*list == ' ' || *list == ',') list++;
        size_t len = strcspn(list, ", ");
        if (len == n && strncasecmp(list, token, n) == 0) return true;
        list += len;
    }
    return false;
}

/* ---- Redis ------------------------------------------------------------------------------- */

/* A free loopback port: bound to port 0, read back, closed. Another process could take it in
 * between; redis-server then fails to start and the caller tries once more. */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static bool redis_pings(int port)
{
    struct timeval tv = {0, 200000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    bool ok = false;
    if (c && !c->err) {
        redisReply *rep = redisCommand(c, "PING");
        ok = rep && rep->type == REDIS_REPLY_STATUS && strcmp(rep->str, "PONG") == 0;
        if (rep) freeReplyObject(rep);
    }
    if (c) redisFree(c);
    return ok;
}

static int redis_spawn(spt_redis_t *r, const char *const *extra)
{
    char port[16], logf[256];
    snprintf(port, sizeof port, "%d", r->port);
    snprintf(logf, sizeof logf, "%s/redis.log", r->dir);
    const char *base[] = {"redis-server", "--port",      port,     "--bind",    "127.0.0.1",
                          "--dir",        r->dir,        "--save", "",          "--appendonly",
                          "yes",          "--databases", "4096",   "--logfile", logf,
                          "--daemonize",  "no"};
    size_t nb = sizeof base / sizeof base[0], ne = 0;
    while (extra && extra[ne]) ne++;
    char **argv = calloc(nb + ne + 1, sizeof *argv);
    if (!argv) return -1;
    for (size_t i = 0; i < nb; i++) argv[i] = (char *)base[i];
    for (size_t i = 0; i < ne; i++) argv[nb + i] = (char *)extra[i];
    pid_t pid = fork();
    if (pid < 0) {
        free(argv);
        return -1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int devnull = open("/dev/null", O_RDWR);
        if (devnull >= 0) {
            dup2(devnull, 0);
            dup2(devnull, 1);
        }
        execvp("redis-server", argv);
        _exit(127);
    }
    free(argv);
    r->pid = pid;
    long long deadline = spt_now_ms() + SPT_LISTEN_MS;
    while (spt_now_ms() < deadline) {
        if (redis_pings(r->port)) return 0;
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            r->pid = 0;
            return -1;
        }
        sleep_ms(10);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    r->pid = 0;
    return -1;
}

int spt_redis_start(spt_redis_t *r, const char *const *extra_args)
{
    memset(r, 0, sizeof *r);
    snprintf(r->dir, sizeof r->dir, "/tmp/spt-redis-XXXXXX");
    if (!mkdtemp(r->dir)) return -1;
    for (int tries = 0; tries < 3; tries++) {
        r->port = free_port();
        if (r->port > 0 && redis_spawn(r, extra_args) == 0) return 0;
    }
    fprintf(stderr, "spt: redis-server did not start (see %s/redis.log)\n", r->dir);
    return -1;
}

static void rm_dir(const char *dir)
{
    const char *names[] = {"redis.log", "dump.rdb"};
    char path[512];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        unlink(path);
    }
    /* Redis 7 keeps its AOF as several files in a directory of its own. */
    snprintf(path, sizeof path, "rm -rf '%s'", dir);
    if (strchr(dir, '\'') == NULL && system(path) != 0) rmdir(dir);
}

int spt_redis_stop(spt_redis_t *r, bool keep_dir)
{
    int rc = 0;
    if (r->pid > 0) {
        kill(r->pid, SIGTERM);
        long long deadline = spt_now_ms() + 10000;
        int st;
        while (waitpid(r->pid, &st, WNOHANG) != r->pid) {
            if (spt_now_ms() >= deadline) {
                kill(r->pid, SIGKILL);
                waitpid(r->pid, &st, 0);
                rc = -1;
                break;
            }
            sleep_ms(5);
        }
        r->pid = 0;
    }
    if (!keep_dir && r->dir[0]) {
        rm_dir(r->dir);
        r->dir[0] = '\0';
    }
    return rc;
}

int spt_redis_restart(spt_redis_t *r)
{
    if (r->pid > 0 || !r->dir[0]) return -1;
    /* The old process's port may linger briefly in TIME_WAIT-free states: retry a few times. */
    for (int tries = 0; tries < 50; tries++) {
        if (redis_spawn(r, NULL) == 0) return 0;
        sleep_ms(100);
    }
    return -1;
}

static spt_redis_t shared_redis;
static pid_t shared_owner;
static int shared_db;
static bool shared_failed;

static void shared_redis_stop(void)
{
    if (shared_owner == getpid() && shared_redis.pid > 0) spt_redis_stop(&shared_redis, false);
}

const char *spt_test_backend_url(void)
{
    static char url[64];
    const char *want = getenv("SPOOL_TEST_BACKEND");
    if (!want || strcmp(want, "redis") != 0) return NULL;
    /* A Redis that did not start gives a URL nobody answers: the servers fail, and so do the
     * tests, rather than running quietly on the memory backend. */
    if (shared_failed) return "redis://127.0.0.1:1";
    if (shared_redis.pid <= 0) {
        if (spt_redis_start(&shared_redis, NULL) != 0) {
            shared_failed = true;
            return "redis://127.0.0.1:1";
        }
        shared_owner = getpid();
        atexit(shared_redis_stop);
    }
    shared_db = shared_db % 4095 + 1;
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/%d", shared_redis.port, shared_db);
    return url;
}
