// loadgen: one neutral closed-loop load generator for both sides of `make bench`: Redis GET (RESP)
// and apikeyd Check (length-prefixed Envelope frames, built and read with protobuf-c and the
// generated code of Sources/CAPIKeysProto). One thread, one epoll loop, C connections with P
// requests in flight each: every reply sends its slot's request again. Requests are encoded once
// per slot, so the generator costs the same per request on both sides: a read, a reply located in
// the buffer, a write.
//
//   loadgen --port N --proto resp|apikeyd [--key SECRET] [--permission P] [--client-address A]
//           [--redis-key K] [-c 50] [-P 1] [-d 5] [--warmup 1]
//
// Prints one line of key=value pairs (the fields of `apikeyd-bench load --machine`):
//   rps p50_us p90_us p99_us p999_us max_us errors client_cpu replies
// client_cpu is the generator's own CPU (user + system) per second of the run: near 1.0 means the
// generator, not the server, was the bottleneck.
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "apikeys/v1/authorize.pb-c.h"
#include "apikeys/v1/envelope.pb-c.h"

#define MAX_US 1000000  // latencies are kept per microsecond up to 1 s, above that in one bucket
#define INBUF (256 * 1024)

typedef struct {
    int fd;
    uint8_t *in;
    size_t in_len;
    uint8_t *out;
    size_t out_len, out_cap;
    uint64_t *sent_at;  // per slot
    int next_fifo;      // RESP: the slot the next reply answers
    int checked;        // apikeyd: whether a reply's decision has been looked at
} conn_t;

static int resp_mode;
static int pipeline = 1;
static uint8_t **requests;  // per slot
static size_t *request_len;
static uint64_t hist[MAX_US + 1];
static uint64_t replies, errors, max_ns;
static int recording, running = 1;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double cpu_seconds(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_utime.tv_sec + u.ru_stime.tv_sec + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void build_requests(const char *key, const char *permission, const char *client_address, const char *redis_key) {
    requests = calloc(pipeline, sizeof *requests);
    request_len = calloc(pipeline, sizeof *request_len);
    for (int slot = 0; slot < pipeline; slot++) {
        if (resp_mode) {
            char buf[512];
            int n = snprintf(buf, sizeof buf, "*2\r\n$3\r\nGET\r\n$%zu\r\n%s\r\n", strlen(redis_key), redis_key);
            requests[slot] = (uint8_t *)strdup(buf);
            request_len[slot] = (size_t)n;
            continue;
        }
        Apikeys__V1__CheckRequest check = APIKEYS__V1__CHECK_REQUEST__INIT;
        char *permissions[1] = {(char *)permission};
        check.key = (char *)key;
        check.n_permissions = 1;
        check.permissions = permissions;
        check.resource = "GET /bench";
        check.client_address = (char *)client_address;
        size_t check_len = apikeys__v1__check_request__get_packed_size(&check);
        uint8_t *payload = malloc(check_len);
        apikeys__v1__check_request__pack(&check, payload);
        Apikeys__V1__Envelope envelope = APIKEYS__V1__ENVELOPE__INIT;
        envelope.call_id = (uint64_t)slot + 1;
        envelope.method = "/apikeys.v1.Authorize/Check";
        envelope.payload.data = payload;
        envelope.payload.len = check_len;
        size_t len = apikeys__v1__envelope__get_packed_size(&envelope);
        uint8_t *frame = malloc(len + 4);
        frame[0] = (uint8_t)(len >> 24), frame[1] = (uint8_t)(len >> 16), frame[2] = (uint8_t)(len >> 8), frame[3] = (uint8_t)len;
        apikeys__v1__envelope__pack(&envelope, frame + 4);
        requests[slot] = frame;
        request_len[slot] = len + 4;
        free(payload);
    }
}

static void queue_request(conn_t *c, int slot, uint64_t now) {
    if (c->out_len + request_len[slot] > c->out_cap) {
        c->out_cap = 2 * (c->out_len + request_len[slot]);
        c->out = realloc(c->out, c->out_cap);
    }
    memcpy(c->out + c->out_len, requests[slot], request_len[slot]);
    c->out_len += request_len[slot];
    c->sent_at[slot] = now;
}

static void flush(conn_t *c) {
    size_t done = 0;
    while (done < c->out_len) {
        ssize_t n = write(c->fd, c->out + done, c->out_len - done);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) break;  // the rest goes with the next flush
            die("write");
        }
        done += (size_t)n;
    }
    memmove(c->out, c->out + done, c->out_len - done);
    c->out_len -= done;
}

static void record(uint64_t latency_ns, int failed) {
    if (!recording) return;
    uint64_t us = latency_ns / 1000;
    hist[us > MAX_US ? MAX_US : us]++;
    if (latency_ns > max_ns) max_ns = latency_ns;
    replies++;
    if (failed) errors++;
}

// Length of the first complete RESP reply in buf, 0 while incomplete, -1 when malformed.
static long resp_reply_length(const uint8_t *buf, size_t len) {
    const uint8_t *nl = memchr(buf, '\n', len);
    if (!nl) return 0;
    long header = nl - buf + 1;
    if (buf[0] == '+' || buf[0] == '-' || buf[0] == ':') return header;
    if (buf[0] != '$') return -1;
    long n = strtol((const char *)buf + 1, NULL, 10);
    if (n < 0) return header;
    return (size_t)(header + n + 2) <= len ? header + n + 2 : 0;
}

// Handles every complete reply in the connection's buffer; returns -1 on a malformed one.
static int handle_replies(conn_t *c, uint64_t now) {
    size_t at = 0;
    while (at < c->in_len) {
        int slot, failed = 0;
        size_t length;
        if (resp_mode) {
            long n = resp_reply_length(c->in + at, c->in_len - at);
            if (n < 0) return -1;
            if (n == 0) break;
            length = (size_t)n;
            failed = c->in[at] == '-';
            slot = c->next_fifo;
            c->next_fifo = (c->next_fifo + 1) % pipeline;
        } else {
            if (c->in_len - at < 4) break;
            const uint8_t *p = c->in + at;
            size_t body = (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
            if (c->in_len - at < 4 + body) break;
            length = 4 + body;
            Apikeys__V1__Envelope *reply = apikeys__v1__envelope__unpack(NULL, body, p + 4);
            if (!reply || reply->call_id < 1 || reply->call_id > (uint64_t)pipeline) return -1;
            slot = (int)reply->call_id - 1;
            failed = reply->status != 0;
            if (!failed && !c->checked) {  // once per connection: the key really is allowed
                Apikeys__V1__CheckResponse *check =
                    apikeys__v1__check_response__unpack(NULL, reply->payload.len, reply->payload.data);
                if (!check || check->decision != APIKEYS__V1__DECISION__ALLOW) {
                    fprintf(stderr, "loadgen: the check was not allowed (wrong --key or --permission?)\n");
                    exit(1);
                }
                apikeys__v1__check_response__free_unpacked(check, NULL);
                c->checked = 1;
            }
            apikeys__v1__envelope__free_unpacked(reply, NULL);
        }
        record(now - c->sent_at[slot], failed);
        if (running) queue_request(c, slot, now);
        at += length;
    }
    memmove(c->in, c->in + at, c->in_len - at);
    c->in_len -= at;
    return 0;
}

static int connect_to(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) die("socket");
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("connect");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

static double percentile(double p) {
    uint64_t want = (uint64_t)(p / 100.0 * (double)replies + 0.5), seen = 0;
    if (want == 0) want = 1;
    for (int us = 0; us <= MAX_US; us++) {
        seen += hist[us];
        if (seen >= want) return us + 0.5;
    }
    return MAX_US;
}

int main(int argc, char **argv) {
    int port = 0, connections = 50;
    double seconds = 5, warmup = 1;
    const char *key = "", *permission = "jobs:read", *client_address = "", *redis_key = "apikeyd-bench", *proto = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *o = argv[i], *v = argv[i + 1];
        if (!strcmp(o, "--port")) port = atoi(v);
        else if (!strcmp(o, "--proto")) proto = v;
        else if (!strcmp(o, "--key")) key = v;
        else if (!strcmp(o, "--permission")) permission = v;
        else if (!strcmp(o, "--client-address")) client_address = v;
        else if (!strcmp(o, "--redis-key")) redis_key = v;
        else if (!strcmp(o, "-c")) connections = atoi(v);
        else if (!strcmp(o, "-P")) pipeline = atoi(v);
        else if (!strcmp(o, "-d")) seconds = atof(v);
        else if (!strcmp(o, "--warmup")) warmup = atof(v);
        else { fprintf(stderr, "loadgen: unknown option %s\n", o); return 2; }
    }
    if (!port || !proto || connections < 1 || pipeline < 1 || (strcmp(proto, "resp") && strcmp(proto, "apikeyd"))) {
        fprintf(stderr, "usage: loadgen --port N --proto resp|apikeyd [--key K] [-c C] [-P P] [-d S]\n");
        return 2;
    }
    resp_mode = !strcmp(proto, "resp");
    build_requests(key, permission, client_address, redis_key);

    int ep = epoll_create1(0);
    conn_t *conns = calloc(connections, sizeof *conns);
    uint64_t start = now_ns();
    for (int i = 0; i < connections; i++) {
        conn_t *c = &conns[i];
        c->fd = connect_to(port);
        c->in = malloc(INBUF);
        c->sent_at = calloc(pipeline, sizeof *c->sent_at);
        for (int slot = 0; slot < pipeline; slot++) queue_request(c, slot, start);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
        flush(c);
    }
    uint64_t measure_from = start + (uint64_t)(warmup * 1e9), measure_to = measure_from + (uint64_t)(seconds * 1e9);
    double cpu_from = 0, cpu_to = 0;
    struct epoll_event events[256];
    while (running) {
        int n = epoll_wait(ep, events, 256, 100);
        uint64_t now = now_ns();
        if (!recording && now >= measure_from && now < measure_to) {
            recording = 1;
            cpu_from = cpu_seconds();
            measure_from = now;
        }
        if (recording && now >= measure_to) {
            recording = 0;
            running = 0;
            cpu_to = cpu_seconds();
            measure_to = now;
        }
        for (int i = 0; i < n; i++) {
            conn_t *c = events[i].data.ptr;
            ssize_t got = read(c->fd, c->in + c->in_len, INBUF - c->in_len);
            if (got <= 0) {
                if (got < 0 && (errno == EAGAIN || errno == EINTR)) continue;
                fprintf(stderr, "loadgen: the server closed a connection\n");
                return 1;
            }
            c->in_len += (size_t)got;
            if (handle_replies(c, now) < 0) {
                fprintf(stderr, "loadgen: a malformed reply\n");
                return 1;
            }
            flush(c);
        }
    }
    double elapsed = (double)(measure_to - measure_from) / 1e9;
    printf("rps=%.0f p50_us=%.1f p90_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f errors=%llu client_cpu=%.2f replies=%llu\n",
           (double)replies / elapsed, percentile(50), percentile(90), percentile(99), percentile(99.9), max_ns / 1000.0,
           (unsigned long long)errors, (cpu_to - cpu_from) / elapsed, (unsigned long long)replies);
    return 0;
}
