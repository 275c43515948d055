/*
 * top.c - `spool top`: a live full-screen table of queues fed by the server's event stream.
 *
 * It reads GET /v1/events over its own TCP connection (the request/answer client cannot hand
 * over an answer that never ends), asking with HTTP/1.0 so that the stream comes unchunked and
 * ends with the connection. Each `counts` event redraws the table; rates are the growth of the
 * queue's totals between two events. The terminal is put in the alternate screen with a hidden
 * cursor and non-canonical input, and restored on every way out: q, Ctrl-C, SIGTERM, or exit.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "sp.h"

#define TICK_MS 1000
#define RETRY_MS 1000
#define STALE_MS 40000       /* the server pings every 15 s: silence this long is a hang */
#define MAX_EVENT (8u << 20) /* bytes of one event's data */
#define MAX_STATUS 512

typedef enum { ST_CONNECTING, ST_STREAMING, ST_DOWN } conn_state_t;

typedef struct {
    char name[SP_NAME_MAX + 1];
    bool paused;
    int64_t counts[SP_STATE_COUNT];
    int64_t oldest_ms;
    int64_t in_total, out_total; /* enqueued; succeeded + failed */
    double in_rate, out_rate;
    bool has_rate;
} row_t;

typedef struct {
    sp_cli_t *cli;
    uv_loop_t *loop;
    char host[256], port[8], hostport[280];

    uv_getaddrinfo_t gai;
    uv_connect_t connect;
    uv_tcp_t tcp;
    uv_write_t write;
    uv_timer_t tick;
    uv_signal_t sigint, sigterm, sigwinch;
    uv_poll_t input;
    bool gai_busy, tcp_open, input_on;

    conn_state_t state;
    int64_t retry_at, last_rx, last_sample;
    char status[MAX_STATUS];
    sp_buf_t in;     /* bytes not parsed yet */
    bool got_head;   /* the status line and headers have been read */
    int http_status; /* of the current connection */
    char event[32];  /* the event being read */
    sp_buf_t data;   /* its data lines */
    sp_buf_t req;    /* the request being written */

    row_t *rows;
    size_t nrows;
    bool have_counts;
    size_t width, height;
    bool quitting;
} top_t;

/* The terminal as it was, for the restore on any exit path (atexit cannot take an argument). */
static struct termios saved_tio;
static bool tio_saved, screen_on;

static void term_restore(void)
{
    if (screen_on) {
        fputs("\x1b[?25h\x1b[?1049l", stdout);
        fflush(stdout);
        screen_on = false;
    }
    if (tio_saved) {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved_tio);
        tio_saved = false;
    }
}

static void term_setup(void)
{
    if (isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved_tio) == 0) {
        struct termios raw = saved_tio;
        /* ISIG stays on: Ctrl-C arrives as SIGINT, handled like q. */
        raw.c_lflag &= (tcflag_t) ~(ICANON | ECHO);
        raw.c_cc[VMIN] = 1;
        raw.c_cc[VTIME] = 0;
        if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &raw) == 0) tio_saved = true;
    }
    fputs("\x1b[?1049h\x1b[?25l\x1b[2J", stdout);
    fflush(stdout);
    screen_on = true;
    atexit(term_restore);
}

static void term_size(top_t *t)
{
    struct winsize ws;
    t->width = 80;
    t->height = 24;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0 && ws.ws_row > 0) {
        t->width = ws.ws_col;
        t->height = ws.ws_row;
    }
}

/* ---- drawing ------------------------------------------------------------------------------- */

typedef enum {
    COL_PAUSED,
    COL_SCHED,
    COL_QUEUED,
    COL_RUNNING,
    COL_SUCC,
    COL_FAILED,
    COL_CANCELED,
    COL_IN,
    COL_OUT,
    COL_OLDEST,
    NCOLS
} col_t;

static const struct {
    const char *title;
    size_t width;
    int keep; /* higher is dropped later when the terminal is narrow */
} cols[NCOLS] = {
    [COL_PAUSED] = {"PAUSED", 6, 2},     [COL_SCHED] = {"SCHED", 9, 3},
    [COL_QUEUED] = {"QUEUED", 9, 10},    [COL_RUNNING] = {"RUNNING", 9, 9},
    [COL_SUCC] = {"SUCCEEDED", 10, 5},   [COL_FAILED] = {"FAILED", 8, 6},
    [COL_CANCELED] = {"CANCELED", 9, 1}, [COL_IN] = {"IN/s", 9, 8},
    [COL_OUT] = {"OUT/s", 9, 7},         [COL_OLDEST] = {"OLDEST", 9, 4},
};

#define NAME_MIN 12

/* Picks the columns that fit in the width, dropping the least useful first. */
static void pick_columns(size_t width, bool show[NCOLS])
{
    size_t total = NAME_MIN;
    for (int c = 0; c < NCOLS; c++) {
        show[c] = true;
        total += cols[c].width + 1;
    }
    for (int keep = 1; keep <= 10 && total > width; keep++)
        for (int c = 0; c < NCOLS; c++)
            if (cols[c].keep == keep && show[c]) {
                show[c] = false;
                total -= cols[c].width + 1;
            }
}

static void cell(const row_t *r, col_t c, char *out, size_t cap)
{
    switch (c) {
    case COL_PAUSED:
        snprintf(out, cap, "%s", r->paused ? "yes" : "no");
        return;
    case COL_SCHED:
    case COL_QUEUED:
    case COL_RUNNING:
    case COL_SUCC:
    case COL_FAILED:
    case COL_CANCELED:
        snprintf(out, cap, "%lld", (long long)r->counts[c - COL_SCHED]);
        return;
    case COL_IN:
    case COL_OUT:
        if (!r->has_rate)
            snprintf(out, cap, "-");
        else
            snprintf(out, cap, "%.1f", c == COL_IN ? r->in_rate : r->out_rate);
        return;
    case COL_OLDEST:
        sp_cli_fmt_age(r->oldest_ms, out, cap);
        return;
    case NCOLS:
        break;
    }
    out[0] = '\0';
}

/* Appends one screen line, cut to the width, then clear-to-end-of-line. */
static void put_line(sp_buf_t *b, const char *s, size_t width)
{
    size_t len = strlen(s);
    if (len > width) {
        /* Cut at a character boundary: never half of a UTF-8 sequence. */
        len = width;
        while (len > 0 && ((unsigned char)s[len] & 0xc0) == 0x80) len--;
    }
    sp_buf_append(b, s, len);
    sp_buf_puts(b, "\x1b[K\r\n");
}

static void draw(top_t *t)
{
    if (t->quitting) return;
    sp_buf_t b = SP_BUF_INIT;
    char line[1024], clock[16];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(clock, sizeof clock, "%H:%M:%S", &tm);
    sp_buf_puts(&b, "\x1b[H");
    snprintf(line, sizeof line, "spool top  %s  %s  (q quits)", t->cli->server, clock);
    put_line(&b, line, t->width);
    put_line(&b, t->status, t->width);
    put_line(&b, "", t->width);

    bool show[NCOLS];
    pick_columns(t->width, show);
    size_t fixed = 0;
    for (int c = 0; c < NCOLS; c++)
        if (show[c]) fixed += cols[c].width + 1;
    size_t name_w = t->width > fixed + NAME_MIN ? t->width - fixed : NAME_MIN;
    if (name_w > 40) name_w = 40;

    size_t used_lines = 4;
    int n = snprintf(line, sizeof line, "%-*s", (int)name_w, "QUEUE");
    for (int c = 0; c < NCOLS && n > 0 && (size_t)n < sizeof line; c++)
        if (show[c])
            n += snprintf(line + n, sizeof line - (size_t)n, " %*s", (int)cols[c].width,
                          cols[c].title);
    put_line(&b, line, t->width);
    for (size_t i = 0; i < t->nrows; i++) {
        if (used_lines + 2 > t->height && i + 1 < t->nrows) {
            snprintf(line, sizeof line, "... %zu more queues", t->nrows - i);
            put_line(&b, line, t->width);
            break;
        }
        const row_t *r = &t->rows[i];
        n = snprintf(line, sizeof line, "%-*.*s", (int)name_w, (int)name_w, r->name);
        for (int c = 0; c < NCOLS && n > 0 && (size_t)n < sizeof line; c++) {
            if (!show[c]) continue;
            char v[32];
            cell(r, (col_t)c, v, sizeof v);
            n += snprintf(line + n, sizeof line - (size_t)n, " %*s", (int)cols[c].width, v);
        }
        put_line(&b, line, t->width);
        used_lines++;
    }
    if (t->have_counts && t->nrows == 0) put_line(&b, "(no queues yet)", t->width);
    sp_buf_puts(&b, "\x1b[J");
    if (!b.oom) {
        fwrite(b.data, 1, b.len, stdout);
        fflush(stdout);
    }
    sp_buf_free(&b);
}

/* ---- counts -------------------------------------------------------------------------------- */

static const row_t *find_row(const row_t *rows, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(rows[i].name, name) == 0) return &rows[i];
    return NULL;
}

/* Replaces the rows with those of a counts event; rates from the previous rows' totals. */
static void on_counts(top_t *t, const char *data, size_t len)
{
    sp_json_val_t v, queues, q;
    if (sp_json_parse(data, len, SP_JSON_MAX_DEPTH, &v, NULL, 0) != 0 ||
        !sp_json_obj_get(v, "queues", &queues) || queues.type != SP_JSON_ARRAY)
        return;
    size_t n = sp_json_arr_len(queues);
    row_t *rows = calloc(n ? n : 1, sizeof *rows);
    if (!rows) return;
    int64_t now = sp_cli_mono_ms();
    double dt = t->last_sample ? (double)(now - t->last_sample) / 1000.0 : 0;
    static const char *const states[SP_STATE_COUNT] = {"scheduled", "queued", "running",
                                                       "succeeded", "failed", "canceled"};
    size_t k = 0;
    sp_json_iter_t it;
    sp_json_iter_init(&it, queues);
    while (k < n && sp_json_arr_next(&it, &q)) {
        row_t *r = &rows[k++];
        sp_cli_jstr(q, "name", r->name, sizeof r->name);
        r->paused = sp_cli_jbool(q, "paused");
        for (int s = 0; s < SP_STATE_COUNT; s++)
            r->counts[s] = sp_cli_jint2(q, "counts", states[s], 0);
        r->oldest_ms = sp_cli_jint(q, "oldest_queued_age_ms", 0);
        r->in_total = sp_cli_jint2(q, "totals", "enqueued", 0);
        r->out_total =
            sp_cli_jint2(q, "totals", "succeeded", 0) + sp_cli_jint2(q, "totals", "failed", 0);
        const row_t *old = find_row(t->rows, t->nrows, r->name);
        if (old && dt > 0.05) {
            r->in_rate = (double)SP_MAX(r->in_total - old->in_total, 0) / dt;
            r->out_rate = (double)SP_MAX(r->out_total - old->out_total, 0) / dt;
            r->has_rate = true;
        }
    }
    free(t->rows);
    t->rows = rows;
    t->nrows = k;
    t->last_sample = now;
    t->have_counts = true;
    draw(t);
}

/* ---- the stream ---------------------------------------------------------------------------- */

static void start_connect(top_t *t);

/* The status line may quote the server's answer: control bytes must not reach the terminal. */
static void set_status(top_t *t, const char *fmt, const char *arg)
{
    snprintf(t->status, sizeof t->status, fmt, arg);
    for (char *p = t->status; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = ' ';
}

static void tcp_closed(uv_handle_t *h)
{
    top_t *t = h->data;
    t->tcp_open = false;
}

/* The connection is gone or useless: show why (in fmt, default "server unreachable") and try
 * again after a pause. */
static void conn_down(top_t *t, const char *why, const char *fmt)
{
    if (t->tcp_open && !uv_is_closing((uv_handle_t *)&t->tcp))
        uv_close((uv_handle_t *)&t->tcp, tcp_closed);
    if (t->quitting) return;
    t->state = ST_DOWN;
    t->retry_at = sp_cli_mono_ms() + RETRY_MS;
    set_status(t, fmt ? fmt : "server unreachable, retrying: %s", why);
    draw(t);
}

static void dispatch_event(top_t *t)
{
    if (strcmp(t->event, "counts") == 0 && !t->data.oom) {
        if (t->state != ST_STREAMING) t->state = ST_STREAMING;
        set_status(t, "connected to %s", t->hostport);
        on_counts(t, t->data.data ? t->data.data : "", t->data.len);
    } else if (strcmp(t->event, "dropped") == 0) {
        set_status(t, "%s", "the server dropped this reader (too slow); reconnecting");
    }
    t->event[0] = '\0';
    sp_buf_reset(&t->data);
}

/* One line of the stream, without its end of line. */
static void stream_line(top_t *t, const char *s, size_t len)
{
    if (len == 0) {
        dispatch_event(t);
        return;
    }
    if (s[0] == ':') return; /* a heartbeat comment */
    const char *colon = memchr(s, ':', len);
    size_t nlen = colon ? (size_t)(colon - s) : len;
    const char *val = colon ? colon + 1 : s + len;
    size_t vlen = (size_t)(s + len - val);
    if (vlen && val[0] == ' ') {
        val++;
        vlen--;
    }
    if (nlen == 5 && memcmp(s, "event", 5) == 0) {
        snprintf(t->event, sizeof t->event, "%.*s", (int)SP_MIN(vlen, 31), val);
    } else if (nlen == 4 && memcmp(s, "data", 4) == 0) {
        if (t->data.len + vlen > MAX_EVENT) {
            t->data.oom = true; /* an absurd event is skipped, not kept */
            return;
        }
        if (t->data.len) sp_buf_putc(&t->data, '\n');
        sp_buf_append(&t->data, val, vlen);
    }
}

/* Reads the status line once the headers are complete; *consumed is their length, or 0. */
static void parse_head(top_t *t, size_t *consumed)
{
    const char *p = t->in.data;
    const char *end = memmem(p, t->in.len, "\r\n\r\n", 4);
    if (!end) {
        *consumed = 0;
        return;
    }
    *consumed = (size_t)(end - p) + 4;
    t->got_head = true;
    t->http_status = 0;
    if (t->in.len > 12 && memcmp(p, "HTTP/1.", 7) == 0) {
        char code[4] = {p[9], p[10], p[11], 0};
        int64_t v;
        if (sp_parse_int(code, &v) == 0) t->http_status = (int)v;
    }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    top_t *t = s->data;
    if (nread > 0) {
        t->last_rx = sp_cli_mono_ms();
        sp_buf_append(&t->in, buf->base, (size_t)nread);
    }
    free(buf->base);
    if (nread < 0) {
        char why[160];
        if (t->got_head && t->http_status != 200) {
            snprintf(why, sizeof why, "the server refused the event stream (HTTP %d: %.100s)",
                     t->http_status, t->in.data ? t->in.data : "");
            conn_down(t, why, "%s; retrying");
            return;
        }
        snprintf(why, sizeof why, "%s",
                 nread == UV_EOF ? "the server closed the stream" : uv_strerror((int)nread));
        conn_down(t, why, NULL);
        return;
    }
    if (t->in.oom) {
        conn_down(t, "out of memory", NULL);
        return;
    }
    if (!t->got_head) {
        size_t used;
        parse_head(t, &used);
        if (!t->got_head) {
            if (t->in.len > 65536) conn_down(t, "an answer's headers over 64 KiB", NULL);
            return;
        }
        memmove(t->in.data, t->in.data + used, t->in.len - used);
        t->in.len -= used;
    }
    if (t->http_status != 200) {
        /* Keep the body: its error message is shown when the server closes. */
        if (t->in.len > 4096) conn_down(t, "unexpected answer", NULL);
        return;
    }
    size_t off = 0;
    for (;;) {
        const char *start = t->in.data + off;
        const char *nl = memchr(start, '\n', t->in.len - off);
        if (!nl) break;
        size_t len = (size_t)(nl - start);
        if (len && start[len - 1] == '\r') len--;
        off = (size_t)(nl - t->in.data) + 1;
        stream_line(t, start, len);
        if (t->quitting || uv_is_closing((uv_handle_t *)&t->tcp)) return;
    }
    memmove(t->in.data, t->in.data + off, t->in.len - off);
    t->in.len -= off;
    if (t->in.len > MAX_EVENT) conn_down(t, "an event line over 8 MiB", NULL);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    buf->base = malloc(suggested);
    buf->len = buf->base ? suggested : 0;
}

static void on_written(uv_write_t *w, int status)
{
    top_t *t = w->data;
    sp_buf_reset(&t->req);
    if (status < 0 && status != UV_ECANCELED) conn_down(t, uv_strerror(status), NULL);
}

static void on_connect(uv_connect_t *c, int status)
{
    top_t *t = c->data;
    if (t->quitting) return;
    if (status < 0) {
        char why[300];
        snprintf(why, sizeof why, "connect to %s: %s", t->hostport, uv_strerror(status));
        conn_down(t, why, NULL);
        return;
    }
    sp_buf_reset(&t->req);
    sp_buf_printf(&t->req,
                  "GET /v1/events HTTP/1.0\r\nHost: %s\r\nAccept: text/event-stream\r\n%s\r\n",
                  t->hostport, t->cli->headers);
    uv_buf_t b = uv_buf_init(t->req.data, (unsigned)t->req.len);
    t->write.data = t;
    t->tcp.data = t;
    if (t->req.oom || uv_write(&t->write, (uv_stream_t *)&t->tcp, &b, 1, on_written) != 0 ||
        uv_read_start((uv_stream_t *)&t->tcp, alloc_cb, on_read) != 0) {
        conn_down(t, "cannot send the request", NULL);
        return;
    }
    t->last_rx = sp_cli_mono_ms();
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    top_t *t = req->data;
    t->gai_busy = false;
    if (t->quitting || status < 0) {
        if (res) uv_freeaddrinfo(res);
        if (!t->quitting) {
            char why[300];
            snprintf(why, sizeof why, "resolve %s: %s", t->host, uv_strerror(status));
            conn_down(t, why, NULL);
        }
        return;
    }
    int rc = uv_tcp_init(t->loop, &t->tcp);
    if (rc == 0) {
        t->tcp_open = true;
        t->tcp.data = t;
        t->connect.data = t;
        rc = uv_tcp_connect(&t->connect, &t->tcp, res->ai_addr, on_connect);
    }
    uv_freeaddrinfo(res);
    if (rc != 0) conn_down(t, uv_strerror(rc), NULL);
}

static void start_connect(top_t *t)
{
    if (t->quitting || t->gai_busy || t->tcp_open) return;
    t->state = ST_CONNECTING;
    t->got_head = false;
    t->http_status = 0;
    t->event[0] = '\0';
    sp_buf_reset(&t->in);
    sp_buf_reset(&t->data);
    if (t->status[0] == '\0' || strncmp(t->status, "connected", 9) == 0)
        set_status(t, "connecting to %s…", t->hostport);
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    t->gai.data = t;
    if (uv_getaddrinfo(t->loop, &t->gai, on_resolved, t->host, t->port, &hints) == 0)
        t->gai_busy = true;
    else
        conn_down(t, "cannot resolve the server's name", NULL);
}

/* ---- lifetime ------------------------------------------------------------------------------ */

static void handle_closed(uv_handle_t *h)
{
    (void)h;
}

static void quit(top_t *t)
{
    if (t->quitting) return;
    t->quitting = true;
    uv_close((uv_handle_t *)&t->tick, handle_closed);
    uv_close((uv_handle_t *)&t->sigint, handle_closed);
    uv_close((uv_handle_t *)&t->sigterm, handle_closed);
    uv_close((uv_handle_t *)&t->sigwinch, handle_closed);
    if (t->input_on) uv_close((uv_handle_t *)&t->input, handle_closed);
    if (t->gai_busy) uv_cancel((uv_req_t *)&t->gai);
    if (t->tcp_open && !uv_is_closing((uv_handle_t *)&t->tcp))
        uv_close((uv_handle_t *)&t->tcp, tcp_closed);
    term_restore();
}

static void on_tick(uv_timer_t *h)
{
    top_t *t = h->data;
    int64_t now = sp_cli_mono_ms();
    if (t->state == ST_DOWN && !t->tcp_open && !t->gai_busy && now >= t->retry_at) {
        start_connect(t);
    } else if (t->state != ST_DOWN && t->tcp_open && now - t->last_rx > STALE_MS) {
        conn_down(t, "no data from the server for 40 s", NULL);
        return;
    }
    draw(t);
}

static void on_signal(uv_signal_t *h, int signum)
{
    top_t *t = h->data;
    if (signum == SIGWINCH) {
        term_size(t);
        fputs("\x1b[2J", stdout);
        draw(t);
        return;
    }
    quit(t);
}

static void on_input(uv_poll_t *h, int status, int events)
{
    top_t *t = h->data;
    char buf[64];
    if (status < 0 || !(events & UV_READABLE)) return;
    ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
    if (n == 0) {
        /* The terminal is gone: nothing more can be read, keep running without input. */
        uv_poll_stop(h);
        return;
    }
    for (ssize_t i = 0; i < n; i++)
        if (buf[i] == 'q' || buf[i] == 'Q' || buf[i] == 3 || buf[i] == 4) {
            quit(t);
            return;
        }
}

/* Splits "http://HOST[:PORT][/]" into host and port. */
static int split_url(top_t *t, const char *url)
{
    if (strncmp(url, "http://", 7) != 0)
        return sp_cli_usage_error("top", "--server must be an http:// URL: '%s'", url);
    const char *h = url + 7, *end = h + strcspn(h, "/");
    if (end[0] == '/' && end[1] != '\0')
        return sp_cli_usage_error("top", "--server takes no path: '%s'", url);
    const char *port = NULL, *hend = end;
    if (h[0] == '[') {
        const char *rb = memchr(h, ']', (size_t)(end - h));
        if (!rb) return sp_cli_usage_error("top", "bad --server URL: '%s'", url);
        if (rb + 1 < end && rb[1] == ':') port = rb + 2;
        h++;
        hend = rb;
    } else {
        const char *colon = memchr(h, ':', (size_t)(end - h));
        if (colon) {
            port = colon + 1;
            hend = colon;
        }
    }
    size_t hlen = (size_t)(hend - h), plen = port ? (size_t)(end - port) : 2;
    if (hlen == 0 || hlen >= sizeof t->host || plen == 0 || plen >= sizeof t->port)
        return sp_cli_usage_error("top", "bad --server URL: '%s'", url);
    memcpy(t->host, h, hlen);
    t->host[hlen] = '\0';
    if (port) {
        memcpy(t->port, port, plen);
        t->port[plen] = '\0';
    } else {
        memcpy(t->port, "80", 3);
    }
    int64_t pn;
    if (sp_parse_int(t->port, &pn) != 0 || pn < 1 || pn > 65535)
        return sp_cli_usage_error("top", "bad port in --server URL: '%s'", url);
    snprintf(t->hostport, sizeof t->hostport, "%.*s", (int)(end - (url + 7)), url + 7);
    return 0;
}

int sp_cli_cmd_top(sp_cli_globals_t *g, int argc, char **argv)
{
    const char *pos[1];
    size_t npos = 0;
    int rc = sp_cli_parse("top", NULL, 0, argc, argv, g, pos, 0, &npos);
    if (rc == 1) {
        sp_cli_help("spool top",
                    "A live full-screen table of queues from the server's event stream: jobs by "
                    "state,\nin/out rates per second and the oldest queued job's age, refreshed "
                    "each second.\nq, Ctrl-C or SIGTERM quits.",
                    NULL, 0);
        return 0;
    }
    if (rc < 0) return SP_CLI_EXIT_USAGE;
    static top_t top; /* static: atexit-time restore must never see a dead stack frame */
    top_t *t = &top;
    memset(t, 0, sizeof *t);
    if ((rc = split_url(t, g->server)) != 0) return rc;
    sp_cli_t cli;
    if ((rc = sp_cli_open(&cli, g->server, g->token_file, g->json)) != 0) return rc;
    t->cli = &cli;
    t->loop = &cli.loop;
    sp_buf_init(&t->in);
    sp_buf_init(&t->data);
    sp_buf_init(&t->req);
    term_size(t);

    uv_timer_init(t->loop, &t->tick);
    uv_signal_init(t->loop, &t->sigint);
    uv_signal_init(t->loop, &t->sigterm);
    uv_signal_init(t->loop, &t->sigwinch);
    t->tick.data = t->sigint.data = t->sigterm.data = t->sigwinch.data = t;
    uv_signal_start(&t->sigint, on_signal, SIGINT);
    uv_signal_start(&t->sigterm, on_signal, SIGTERM);
    uv_signal_start(&t->sigwinch, on_signal, SIGWINCH);
    if (isatty(STDIN_FILENO) && uv_poll_init(t->loop, &t->input, STDIN_FILENO) == 0) {
        t->input.data = t;
        t->input_on = true;
        uv_poll_start(&t->input, UV_READABLE, on_input);
    }
    term_setup();
    start_connect(t);
    draw(t);
    uv_timer_start(&t->tick, on_tick, TICK_MS, TICK_MS);
    uv_run(t->loop, UV_RUN_DEFAULT);
    term_restore();
    free(t->rows);
    sp_buf_free(&t->in);
    sp_buf_free(&t->data);
    sp_buf_free(&t->req);
    sp_cli_close(&cli);
    return 0;
}
