/*
 * beanstalk_put.c - the beanstalkd load client of bench/run.sh: N connections, each sending one
 * `put` and waiting for its `INSERTED` before the next (as wrk does with HTTP requests against
 * Spool), for S seconds; prints "puts=N seconds=S puts_per_s=R errors=E". A Python client is
 * slower than beanstalkd itself on a small machine, hence C.
 *
 * usage: beanstalk_put PORT SECONDS CONNS PAYLOAD_BYTES
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    int fd;
    char in[256];
    size_t inlen;
} conn_t;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: beanstalk_put PORT SECONDS CONNS PAYLOAD_BYTES\n");
        return 2;
    }
    int port = (int)strtol(argv[1], NULL, 10);
    double secs = strtod(argv[2], NULL);
    int nconn = (int)strtol(argv[3], NULL, 10);
    int plen = (int)strtol(argv[4], NULL, 10);
    if (port <= 0 || secs <= 0 || nconn <= 0 || nconn > 4096 || plen < 0 || plen > 65536) {
        fprintf(stderr, "beanstalk_put: bad arguments\n");
        return 2;
    }
    char *cmd = malloc((size_t)plen + 64);
    if (!cmd) return 1;
    int clen = snprintf(cmd, 64, "put 0 0 60 %d\r\n", plen);
    memset(cmd + clen, 'x', (size_t)plen);
    memcpy(cmd + clen + plen, "\r\n", 2);
    size_t cmdlen = (size_t)clen + (size_t)plen + 2;

    int ep = epoll_create1(0);
    conn_t *cs = calloc((size_t)nconn, sizeof *cs);
    if (ep < 0 || !cs) return 1;
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (int i = 0; i < nconn; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
            fprintf(stderr, "beanstalk_put: connect: %s\n", strerror(errno));
            return 1;
        }
        cs[i].fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &cs[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    long long puts = 0, errors = 0;
    double t0 = now_s(), end = t0 + secs;
    for (int i = 0; i < nconn; i++)
        if (send_all(cs[i].fd, cmd, cmdlen)) return 1;
    struct epoll_event evs[256];
    int active = nconn;
    while (active > 0) {
        int n = epoll_wait(ep, evs, 256, 1000);
        if (n < 0 && errno != EINTR) break;
        double t = now_s();
        for (int k = 0; k < n; k++) {
            conn_t *c = evs[k].data.ptr;
            ssize_t r = recv(c->fd, c->in + c->inlen, sizeof c->in - c->inlen, 0);
            if (r <= 0) {
                errors++;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                active--;
                continue;
            }
            c->inlen += (size_t)r;
            char *nl;
            while ((nl = memchr(c->in, '\n', c->inlen))) {
                size_t line = (size_t)(nl - c->in) + 1;
                if (strncmp(c->in, "INSERTED", 8) == 0) puts++;
                else errors++;
                memmove(c->in, c->in + line, c->inlen - line);
                c->inlen -= line;
                if (t < end) {
                    if (send_all(c->fd, cmd, cmdlen)) errors++;
                } else {
                    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                    active--;
                }
            }
            if (c->inlen == sizeof c->in) c->inlen = 0; /* a line this long is not ours */
        }
        if (t > end + 10) break;
    }
    double took = now_s() - t0;
    printf("puts=%lld seconds=%.3f puts_per_s=%.0f errors=%lld\n", puts, took,
           (double)puts / took, errors);
    return puts > 0 ? 0 : 1;
}
