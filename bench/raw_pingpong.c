/* raw_pingpong: the loopback TCP ceiling that bench/run.py compares every RPC library against.
 *
 *   raw_pingpong server PORT              echo every byte back (round-trip server)
 *   raw_pingpong client PORT N [SIZE]     N round trips of SIZE bytes (default 1); prints round_trips_per_s
 *   raw_pingpong stream-server PORT       read each connection to EOF, then reply with the 8-byte count
 *   raw_pingpong stream-client PORT BYTES send BYTES in 1 MiB writes, wait for the count; prints mb_per_s
 *
 * Servers bind 127.0.0.1 only; PORT 0 picks a free port. A server prints "PORT <n>" once it listens,
 * serves connections one after another, and exits by itself after RAW_PINGPONG_LIFETIME seconds
 * (default 900) so that it never outlives a crashed harness. MB is 10^6 bytes.
 */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { CHUNK = 1 << 20, MAX_MSG = 1 << 16, WARMUP_ROUND_TRIPS = 1000 };

static void die(const char *what) {
    perror(what);
    exit(1);
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void set_nodelay(int fd) {
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) die("setsockopt TCP_NODELAY");
}

static struct sockaddr_in loopback(int port) {
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return addr;
}

/* Returns 0 on success, -1 if the peer closed or failed before all bytes were read. */
static int read_full(int fd, void *buf, size_t len) {
    char *p = buf;
    while (len > 0) {
        ssize_t n = read(fd, p, len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return -1;
        if (n == 0) return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Returns 0 on success, -1 if the peer went away (servers then drop the connection, clients die). */
static int write_full(int fd, const void *buf, size_t len) {
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int listen_on(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) die("socket");
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = loopback(port);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0) die("bind");
    if (listen(fd, 8) != 0) die("listen");
    socklen_t len = sizeof addr;
    if (getsockname(fd, (struct sockaddr *)&addr, &len) != 0) die("getsockname");
    printf("PORT %d\n", ntohs(addr.sin_port));
    fflush(stdout);
    return fd;
}

static int connect_to(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) die("socket");
    struct sockaddr_in addr = loopback(port);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) die("connect");
    set_nodelay(fd);
    return fd;
}

static void arm_lifetime(void) {
    const char *env = getenv("RAW_PINGPONG_LIFETIME");
    unsigned seconds = env ? (unsigned)strtoul(env, NULL, 10) : 900u;
    signal(SIGALRM, SIG_DFL);
    alarm(seconds > 0 ? seconds : 900u);
}

static _Noreturn void run_server(int port) {
    arm_lifetime();
    int listener = listen_on(port);
    static char buf[MAX_MSG];
    for (;;) {
        int fd = accept(listener, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR) continue;
            die("accept");
        }
        set_nodelay(fd);
        for (;;) {
            ssize_t n = read(fd, buf, sizeof buf);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0 || write_full(fd, buf, (size_t)n) != 0) break;
        }
        close(fd);
    }
}

static int run_client(int port, long round_trips, long size) {
    if (round_trips <= 0 || size <= 0 || size > MAX_MSG) {
        fprintf(stderr, "client: need N > 0 and 0 < SIZE <= %d\n", MAX_MSG);
        return 2;
    }
    int fd = connect_to(port);
    static char buf[MAX_MSG];
    memset(buf, 'x', (size_t)size);
    for (long i = 0; i < WARMUP_ROUND_TRIPS; ++i) {
        if (write_full(fd, buf, (size_t)size) != 0) die("write");
        if (read_full(fd, buf, (size_t)size) != 0) die("server closed");
    }
    double start = now_seconds();
    for (long i = 0; i < round_trips; ++i) {
        if (write_full(fd, buf, (size_t)size) != 0) die("write");
        if (read_full(fd, buf, (size_t)size) != 0) die("server closed");
    }
    double elapsed = now_seconds() - start;
    close(fd);
    printf("round_trips_per_s %.1f\n", (double)round_trips / elapsed);
    return 0;
}

static _Noreturn void run_stream_server(int port) {
    arm_lifetime();
    int listener = listen_on(port);
    char *buf = malloc(CHUNK);
    if (!buf) die("malloc");
    for (;;) {
        int fd = accept(listener, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR) continue;
            die("accept");
        }
        uint64_t received = 0;
        for (;;) {
            ssize_t n = read(fd, buf, CHUNK);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            received += (uint64_t)n;
        }
        (void)write_full(fd, &received, sizeof received);
        close(fd);
    }
}

static int run_stream_client(int port, long long total) {
    if (total <= 0) {
        fprintf(stderr, "stream-client: need BYTES > 0\n");
        return 2;
    }
    char *buf = malloc(CHUNK);
    if (!buf) die("malloc");
    for (int i = 0; i < CHUNK; ++i) buf[i] = (char)(i * 131 + 7);
    int fd = connect_to(port);
    double start = now_seconds();
    long long left = total;
    while (left > 0) {
        size_t n = left < CHUNK ? (size_t)left : (size_t)CHUNK;
        if (write_full(fd, buf, n) != 0) die("write");
        left -= (long long)n;
    }
    if (shutdown(fd, SHUT_WR) != 0) die("shutdown");
    uint64_t received = 0;
    if (read_full(fd, &received, sizeof received) != 0) die("no byte count from server");
    double elapsed = now_seconds() - start;
    close(fd);
    if ((long long)received != total) {
        fprintf(stderr, "stream-client: server counted %llu of %lld bytes\n",
                (unsigned long long)received, total);
        return 1;
    }
    printf("mb_per_s %.1f\n", (double)total / 1e6 / elapsed);
    return 0;
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    if (argc >= 3 && strcmp(argv[1], "server") == 0) run_server(atoi(argv[2]));
    if (argc >= 4 && strcmp(argv[1], "client") == 0)
        return run_client(atoi(argv[2]), atol(argv[3]), argc >= 5 ? atol(argv[4]) : 1);
    if (argc >= 3 && strcmp(argv[1], "stream-server") == 0) run_stream_server(atoi(argv[2]));
    if (argc >= 4 && strcmp(argv[1], "stream-client") == 0)
        return run_stream_client(atoi(argv[2]), atoll(argv[3]));
    fprintf(stderr,
            "usage: %s server PORT | client PORT N [SIZE] | stream-server PORT | stream-client PORT BYTES\n",
            argv[0]);
    return 2;
}
