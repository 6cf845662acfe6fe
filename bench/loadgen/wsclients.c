/*
 * The WebSocket clients of wordstream's load generator, on one epoll loop.
 *
 * loadgen.mjs starts this program and reads its events, one JSON object per
 * line of stdout. It opens --clients connections to ws://HOST:PORT/PATH, at
 * most --max-pending handshakes at a time, then times every text frame it
 * receives: receive time (CLOCK_REALTIME, read once per read(2)) minus the
 * frame's "ts" in milliseconds.
 *
 * node spent about 9 microseconds of CPU per received frame, 3 of them in
 * the kernel, and at 10,000 clients it competed with the server for the
 * machine's two cores while a tick arrived. This loop spends about 3.
 *
 * Events written:
 *   progress      during the connect phase, about once a second
 *   connected     after the connect phase
 *   closed        when an open client closes; "open" is the clients open now
 *   first_frame   the first frame after "arm"; the window is the next ticks
 *   last_tick     a client received the window's last tick
 *   all_complete  every open client received the window's last tick
 *   result        the window's figures, in reply to "result"
 * Commands read from stdin, one per line: "arm", "result" and "quit". The
 * program also exits when stdin closes.
 *
 * The frames are wordstream's (and the reference server's) JSON objects,
 * whose "seq" and "ts" are plain numbers, so they are read by key rather
 * than parsed in full. The server's Sec-WebSocket-Accept is not checked: the
 * server under test is trusted to speak WebSocket, and a 101 is required.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

/* Milliseconds before a failed attempt is repeated, and the longest one
 * handshake may take. The node clients in common.mjs use the same values. */
#define RETRY_DELAY_MS 200.0
#define HANDSHAKE_TIMEOUT_MS 30000.0
/* A message larger than this after inflating counts as an error. */
#define MAX_MESSAGE 65536
#define MAX_ERROR_KINDS 64
#define STDIN_TAG UINT32_MAX

enum state { IDLE, CONNECTING, HANDSHAKE, OPEN, CLOSED, FAILED };

struct client {
    int fd;
    unsigned char state;
    int attempt;
    /* permessage-deflate was accepted, and with server_no_context_takeover. */
    unsigned char deflate;
    unsigned char reset_per_message;
    /* CLOCK_MONOTONIC ms when the attempt started, or when it may retry. */
    double since_ms;
    /* Bytes read and not yet parsed. */
    unsigned char *buf;
    uint32_t len, cap;
    int64_t last_seq;
    int32_t window_frames;
    unsigned char opened_once;
    /* Received the window's last tick. */
    unsigned char has_last_tick;
    z_stream *inflater;
};

static struct {
    const char *host, *path, *origin;
    int port, clients, ticks, max_pending, attempts;
    double connect_timeout_ms;
    int deflate;
} config = {"127.0.0.1", "/ws", NULL, 0, 100, 15, 1000, 3, 120000.0, 0};

static struct client *clients;
static struct sockaddr_in server;
static int epoll_fd;

/* The connect phase. */
static int next_client, pending, opened, failed, retries, connect_done;
static double connect_started_ms, last_open_wall_ms, cpu_started;
/* Clients waiting for a retry, in the order they failed. Every client waits
 * RETRY_DELAY_MS, so the queue is in the order of their retry times. */
static int *retry_queue, retry_head, retry_tail;

/* Counters over the whole run. */
static int open_count, disconnects, deflate_clients;
static long long frames_total, seq_gaps, out_of_order;
/* The highest seq any client has received. */
static int64_t newest_seq;
static struct {
    char key[48];
    long count;
} errors[MAX_ERROR_KINDS];
static int error_kinds;

/* The measured window: ticks first_seq..last_seq, once a frame arms it. */
static struct {
    int armed;
    int64_t first_seq, last_seq;
    double *latencies;
    size_t samples, capacity;
    double *tick_min, *tick_max;
    int complete, last_tick_sent, complete_sent;
} window;

static double clock_ms(clockid_t clock) {
    struct timespec now;
    clock_gettime(clock, &now);
    return now.tv_sec * 1e3 + now.tv_nsec / 1e6;
}

static double cpu_seconds(void) {
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    return usage.ru_utime.tv_sec + usage.ru_utime.tv_usec / 1e6 +
           usage.ru_stime.tv_sec + usage.ru_stime.tv_usec / 1e6;
}

static void emit(const char *format, ...) {
    va_list args;
    va_start(args, format);
    vprintf(format, args);
    va_end(args);
    putchar('\n');
    fflush(stdout);
}

static void count_error(const char *key) {
    for (int i = 0; i < error_kinds; i++) {
        if (strcmp(errors[i].key, key) == 0) {
            errors[i].count++;
            return;
        }
    }
    if (error_kinds == MAX_ERROR_KINDS) return;
    snprintf(errors[error_kinds].key, sizeof errors[0].key, "%s", key);
    errors[error_kinds++].count = 1;
}

static void count_errno(int error) {
    const char *name = strerrorname_np(error);
    count_error(name ? name : "unknown errno");
}

static void fail(const char *message) {
    fprintf(stderr, "wsclients: %s\n", message);
    exit(2);
}

/* Parse --name=value options; loadgen.mjs has already checked them. */
static void parse_args(int argc, char **argv) {
    static const struct option options[] = {
        {"host", required_argument, 0, 'h'},
        {"port", required_argument, 0, 'p'},
        {"path", required_argument, 0, 'P'},
        {"origin", required_argument, 0, 'o'},
        {"clients", required_argument, 0, 'c'},
        {"ticks", required_argument, 0, 't'},
        {"max-pending", required_argument, 0, 'm'},
        {"attempts", required_argument, 0, 'a'},
        {"connect-timeout", required_argument, 0, 'T'},
        {"deflate", no_argument, 0, 'd'},
        {0, 0, 0, 0},
    };
    int option;
    while ((option = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (option) {
        case 'h': config.host = optarg; break;
        case 'p': config.port = atoi(optarg); break;
        case 'P': config.path = optarg; break;
        case 'o': config.origin = optarg; break;
        case 'c': config.clients = atoi(optarg); break;
        case 't': config.ticks = atoi(optarg); break;
        case 'm': config.max_pending = atoi(optarg); break;
        case 'a': config.attempts = atoi(optarg); break;
        case 'T': config.connect_timeout_ms = atof(optarg) * 1000; break;
        case 'd': config.deflate = 1; break;
        default: fail("unknown option");
        }
    }
    if (config.port <= 0 || config.clients < 1 || config.ticks < 1 ||
        config.max_pending < 1 || config.attempts < 1 || !config.origin)
        fail("--port, --origin, and positive --clients, --ticks, --max-pending "
             "and --attempts are required");
    server.sin_family = AF_INET;
    server.sin_port = htons(config.port);
    if (inet_pton(AF_INET, config.host, &server.sin_addr) != 1)
        fail("--host must be an IPv4 address");
}

/* Writing and closing. */

static void watch(struct client *client, uint32_t events, int op) {
    struct epoll_event event = {.events = events, .data.u32 = client - clients};
    epoll_ctl(epoll_fd, op, client->fd, &event);
}

static void release(struct client *client) {
    if (client->fd >= 0) close(client->fd);
    client->fd = -1;
    client->len = 0;
    if (client->inflater) {
        inflateEnd(client->inflater);
        free(client->inflater);
        client->inflater = NULL;
    }
}

/* Write a masked client frame (RFC 6455 5.3) with a payload under 126 bytes. */
static void write_control(struct client *client, int opcode,
                          const unsigned char *payload, size_t length) {
    unsigned char frame[2 + 4 + 125];
    uint32_t mask = random();
    frame[0] = 0x80 | opcode;
    frame[1] = 0x80 | length;
    memcpy(frame + 2, &mask, 4);
    for (size_t i = 0; i < length; i++) frame[6 + i] = payload[i] ^ frame[2 + i % 4];
    /* A frame this short fits unless the socket's buffer is full. Then the
     * server's ping times out and the server closes, which is counted. */
    if (write(client->fd, frame, 6 + length) < 0) count_errno(errno);
}

static void on_closed(struct client *client) {
    if (client->has_last_tick) window.complete--;
    release(client);
    client->state = CLOSED;
    open_count--;
    disconnects++;
    emit("{\"event\":\"closed\",\"open\":%d}", open_count);
}

/* The connect phase. */

static void start_attempt(struct client *client);

static void finish_connect_phase(int timed_out) {
    if (connect_done) return;
    connect_done = 1;
    double seconds = (clock_ms(CLOCK_MONOTONIC) - connect_started_ms) / 1e3;
    emit("{\"event\":\"connected\",\"connect_s\":%.3f,\"connect_rate\":%.1f,"
         "\"connected\":%d,\"connect_failed\":%d,\"connect_retries\":%d,"
         "\"connect_timed_out\":%s,\"loadgen_cpu_connect\":%.4f,"
         "\"open\":%d,\"last_open_ms\":%.3f}",
         seconds, opened / seconds, opened, config.clients - opened, retries,
         timed_out ? "true" : "false", (cpu_seconds() - cpu_started) / seconds,
         open_count, last_open_wall_ms);
}

static void check_connect_phase(void) {
    if (opened + failed == config.clients) finish_connect_phase(0);
}

/* End the client's attempt; retry it after RETRY_DELAY_MS or count it failed. */
static void fail_attempt(struct client *client) {
    release(client);
    if (client->attempt < config.attempts && !connect_done) {
        client->state = IDLE;
        client->since_ms = clock_ms(CLOCK_MONOTONIC) + RETRY_DELAY_MS;
        retry_queue[retry_tail++ % config.clients] = client - clients;
        retries++;
        return;
    }
    client->state = FAILED;
    pending--;
    failed++;
    check_connect_phase();
}

static void start_attempt(struct client *client) {
    client->attempt++;
    client->since_ms = clock_ms(CLOCK_MONOTONIC);
    client->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (client->fd < 0) {
        count_errno(errno);
        fail_attempt(client);
        return;
    }
    int on = 1;
    setsockopt(client->fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    if (connect(client->fd, (struct sockaddr *)&server, sizeof server) < 0 &&
        errno != EINPROGRESS) {
        count_errno(errno);
        fail_attempt(client);
        return;
    }
    client->state = CONNECTING;
    watch(client, EPOLLOUT | EPOLLIN, EPOLL_CTL_ADD);
}

static void launch(void) {
    double now = clock_ms(CLOCK_MONOTONIC);
    while (retry_head != retry_tail) {
        struct client *client = &clients[retry_queue[retry_head % config.clients]];
        if (connect_done) {
            /* The connect phase timed out: no more attempts. */
            retry_head++;
            client->state = FAILED;
            pending--;
            failed++;
            continue;
        }
        if (client->since_ms > now) break;
        retry_head++;
        start_attempt(client);
    }
    while (!connect_done && pending < config.max_pending &&
           next_client < config.clients) {
        pending++;
        start_attempt(&clients[next_client++]);
    }
}

/* Write a random Sec-WebSocket-Key: 16 bytes in base64, 24 characters. */
static void make_key(char key[25]) {
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    unsigned char nonce[16];
    if (getrandom(nonce, sizeof nonce, 0) != sizeof nonce) fail("getrandom failed");

    for (int in = 0, out = 0; in < 16; in += 3, out += 4) {
        uint32_t bits = nonce[in] << 16;
        if (in + 1 < 16) bits |= nonce[in + 1] << 8;
        if (in + 2 < 16) bits |= nonce[in + 2];
        key[out] = alphabet[bits >> 18 & 63];
        key[out + 1] = alphabet[bits >> 12 & 63];
        key[out + 2] = in + 1 < 16 ? alphabet[bits >> 6 & 63] : '=';
        key[out + 3] = in + 2 < 16 ? alphabet[bits & 63] : '=';
    }
    key[24] = '\0';
}

static void send_handshake(struct client *client) {
    int error = 0;
    socklen_t size = sizeof error;
    getsockopt(client->fd, SOL_SOCKET, SO_ERROR, &error, &size);
    if (error) {
        count_errno(error);
        fail_attempt(client);
        return;
    }

    char key[25];
    make_key(key);

    char request[1024];
    int length = snprintf(
        request, sizeof request,
        "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
        "Sec-WebSocket-Version: 13\r\nOrigin: %s\r\n%s\r\n",
        config.path, config.host, config.port, key, config.origin,
        config.deflate
            ? "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
            : "");
    if (length >= (int)sizeof request) fail("--path or --origin is too long");
    errno = 0;
    if (write(client->fd, request, length) != length) {
        count_errno(errno ? errno : EIO);
        fail_attempt(client);
        return;
    }
    client->state = HANDSHAKE;
    watch(client, EPOLLIN, EPOLL_CTL_MOD);
}

/* Find name's value in the response headers, case-insensitively, or NULL. */
static const char *header_value(const char *head, const char *name) {
    size_t length = strlen(name);
    for (const char *line = strstr(head, "\r\n"); line; line = strstr(line, "\r\n")) {
        line += 2;
        if (strncasecmp(line, name, length) == 0 && line[length] == ':')
            return line + length + 1;
    }
    return NULL;
}

/* Read the handshake's response from the client's buffer; return the bytes
 * it took, 0 while incomplete, or -1 after failing the attempt. */
static long take_response(struct client *client) {
    unsigned char *end = memmem(client->buf, client->len, "\r\n\r\n", 4);
    if (!end) return 0;
    *end = '\0';
    const char *head = (const char *)client->buf;
    if (strncmp(head, "HTTP/1.1 101", 12) != 0) {
        /* The status code, if the line has one, as ws reports it. */
        const char *code = head + 9;
        int valid = strlen(head) >= 12 && isdigit(code[0]) && isdigit(code[1]) &&
                    isdigit(code[2]);
        char key[48];
        snprintf(key, sizeof key, "Unexpected server response: %.3s",
                 valid ? code : "???");
        count_error(key);
        fail_attempt(client);
        return -1;
    }

    const char *extensions = header_value(head, "Sec-WebSocket-Extensions");
    if (extensions && strcasestr(extensions, "permessage-deflate")) {
        const char *line_end = strstr(extensions, "\r\n");
        client->deflate = 1;
        deflate_clients++;
        const char *reset = strcasestr(extensions, "server_no_context_takeover");
        client->reset_per_message = reset && (!line_end || reset < line_end);
        client->inflater = calloc(1, sizeof(z_stream));
        if (!client->inflater || inflateInit2(client->inflater, -15) != Z_OK)
            fail("cannot allocate an inflater");
    }

    client->state = OPEN;
    client->opened_once = 1;
    open_count++;
    opened++;
    pending--;
    last_open_wall_ms = clock_ms(CLOCK_REALTIME);
    check_connect_phase();
    return end + 4 - client->buf;
}

/* The window. */

static void on_text(struct client *client, const char *text, size_t length,
                    double received_ms) {
    const char *seq_key = memmem(text, length, "\"seq\":", 6);
    const char *ts_key = memmem(text, length, "\"ts\":", 5);
    /* Each key is followed by a number, and the closing brace stops strtoll
     * and strtod within the message at the latest. */
    if (!seq_key || !ts_key || length == 0 || text[length - 1] != '}') {
        count_error("frame without seq or ts");
        return;
    }
    int64_t seq = strtoll(seq_key + 6, NULL, 10);
    double ts = strtod(ts_key + 5, NULL);
    frames_total++;
    int newer = seq > client->last_seq;
    if (client->last_seq != 0) {
        if (seq > client->last_seq + 1) seq_gaps += seq - client->last_seq - 1;
        else if (!newer) out_of_order++;
    }
    if (newer) client->last_seq = seq;
    if (seq > newest_seq) newest_seq = seq;
    if (window.armed && window.first_seq == 0) {
        /* After the newest tick any client has, so that no client has
         * received part of the window before it starts. */
        window.first_seq = newest_seq + 1;
        window.last_seq = newest_seq + config.ticks;
        emit("{\"event\":\"first_frame\",\"first_seq\":%lld}",
             (long long)window.first_seq);
    }
    if (window.first_seq == 0 || seq < window.first_seq || seq > window.last_seq ||
        !newer)
        return;
    double latency = received_ms - ts;
    if (window.samples < window.capacity) window.latencies[window.samples++] = latency;
    int64_t tick = seq - window.first_seq;
    if (latency < window.tick_min[tick]) window.tick_min[tick] = latency;
    if (latency > window.tick_max[tick]) window.tick_max[tick] = latency;
    client->window_frames++;
    if (seq == window.last_seq) {
        if (!window.last_tick_sent) {
            window.last_tick_sent = 1;
            emit("{\"event\":\"last_tick\"}");
        }
        client->has_last_tick = 1;
        window.complete++;
    }
}

static void check_complete(void) {
    if (window.last_tick_sent && !window.complete_sent &&
        window.complete >= open_count) {
        window.complete_sent = 1;
        emit("{\"event\":\"all_complete\"}");
    }
}

/* Inflate a compressed message (RFC 7692 7.2.2) and pass it on. */
static void on_compressed(struct client *client, unsigned char *payload,
                          size_t length, double received_ms) {
    static unsigned char message[MAX_MESSAGE];
    static unsigned char tail[] = {0x00, 0x00, 0xff, 0xff};
    z_stream *stream = client->inflater;
    stream->next_out = message;
    stream->avail_out = sizeof message;
    stream->next_in = payload;
    stream->avail_in = length;
    int status = inflate(stream, Z_SYNC_FLUSH);
    if (status == Z_OK || status == Z_BUF_ERROR) {
        stream->next_in = tail;
        stream->avail_in = sizeof tail;
        status = inflate(stream, Z_SYNC_FLUSH);
    }
    size_t inflated = sizeof message - stream->avail_out;
    /* A message may end with a final deflate block (RFC 7692 7.2.3.4),
     * after which the stream starts over. */
    if (status == Z_STREAM_END || client->reset_per_message) inflateReset(stream);
    if ((status != Z_OK && status != Z_BUF_ERROR && status != Z_STREAM_END) ||
        stream->avail_out == 0) {
        count_error("inflate failed");
        return;
    }
    on_text(client, (char *)message, inflated, received_ms);
}

/* Handle the complete frames in the client's buffer; return the bytes taken,
 * or -1 when the client closed. */
static long take_frames(struct client *client, size_t from, double received_ms) {
    size_t at = from;
    while (client->len - at >= 2) {
        unsigned char *frame = client->buf + at;
        size_t available = client->len - at, header = 2;
        uint64_t length = frame[1] & 0x7f;
        if (length == 126) {
            if (available < 4) break;
            length = frame[2] << 8 | frame[3];
            header = 4;
        } else if (length == 127) {
            if (available < 10) break;
            length = 0;
            for (int i = 2; i < 10; i++) length = length << 8 | frame[i];
            header = 10;
        }
        if (frame[1] & 0x80) {
            count_error("masked frame from the server");
            on_closed(client);
            return -1;
        }
        if (length > MAX_MESSAGE) {
            count_error("frame over 64 KB");
            on_closed(client);
            return -1;
        }
        if (available < header + length) break;
        unsigned char *payload = frame + header;
        int opcode = frame[0] & 0x0f, final = frame[0] & 0x80;
        at += header + length;
        if (!final || opcode == 0 || (opcode >= 8 && length > 125)) {
            /* The servers measured never fragment a message, and a control
             * frame longer than 125 bytes breaks RFC 6455 5.5. */
            count_error(final ? "control frame over 125 bytes" : "fragmented message");
            on_closed(client);
            return -1;
        } else if (opcode == 1 && (frame[0] & 0x40) && client->deflate) {
            on_compressed(client, payload, length, received_ms);
        } else if (opcode == 1) {
            on_text(client, (char *)payload, length, received_ms);
        } else if (opcode == 9) {
            write_control(client, 10, payload, length);
        } else if (opcode == 8) {
            /* The status code, or nothing: a 1-byte payload is invalid. */
            write_control(client, 8, payload, length < 2 ? 0 : 2);
            on_closed(client);
            return -1;
        } else if (opcode != 10) {
            count_error("unexpected opcode");
        }
    }
    return at - from;
}

/* Read what the socket has received and act on it. */
static void on_readable(struct client *client) {
    if (client->cap - client->len < 512) {
        uint32_t cap = client->cap ? client->cap * 2 : 1024;
        unsigned char *grown = realloc(client->buf, cap);
        if (!grown) fail("out of memory");
        client->buf = grown;
        client->cap = cap;
    }
    ssize_t got = read(client->fd, client->buf + client->len, client->cap - client->len);
    if (got < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (got <= 0) {
        if (got < 0) count_errno(errno);
        if (client->state == OPEN) on_closed(client);
        else {
            if (got == 0) count_error("closed during the handshake");
            fail_attempt(client);
        }
        return;
    }
    double received_ms = clock_ms(CLOCK_REALTIME);
    client->len += got;
    long parsed = 0;
    if (client->state == HANDSHAKE) {
        parsed = take_response(client);
        if (parsed <= 0) return;
    }
    long frames = take_frames(client, parsed, received_ms);
    if (frames < 0) return;
    parsed += frames;
    client->len -= parsed;
    memmove(client->buf, client->buf + parsed, client->len);
    check_complete();
}

static void on_event(struct client *client, uint32_t events) {
    if (client->state == CONNECTING) {
        if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) send_handshake(client);
        return;
    }
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable(client);
}

/* Once a second: fail handshakes that take too long, report progress. */
static void on_second(void) {
    double now = clock_ms(CLOCK_MONOTONIC);
    for (int i = 0; i < next_client; i++) {
        struct client *client = &clients[i];
        if ((client->state == CONNECTING || client->state == HANDSHAKE) &&
            now - client->since_ms > HANDSHAKE_TIMEOUT_MS) {
            count_error("Opening handshake has timed out");
            fail_attempt(client);
        }
    }
    if (connect_done) return;
    emit("{\"event\":\"progress\",\"opened\":%d,\"pending\":%d,\"failed\":%d}",
         opened, pending, failed);
    if (now - connect_started_ms > config.connect_timeout_ms) finish_connect_phase(1);
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Print sorted[index] as key, or null when there are no latencies. */
static void print_latency(const char *key, const double *sorted, size_t n,
                          size_t index) {
    if (n == 0) printf(",\"%s\":null", key);
    else printf(",\"%s\":%.3f", key, sorted[index]);
}

static void print_result(void) {
    long lost = 0, clients_with_loss = 0;
    for (int i = 0; i < config.clients; i++) {
        if (!clients[i].opened_once) continue;
        int missing = config.ticks - clients[i].window_frames;
        if (missing > 0) {
            lost += missing;
            clients_with_loss++;
        }
    }
    size_t n = window.samples;
    double *sorted = window.latencies;
    qsort(sorted, n, sizeof *sorted, compare_doubles);
    printf("{\"event\":\"result\",\"frames\":%zu", n);
    print_latency("p50_ms", sorted, n, n / 2);
    print_latency("p99_ms", sorted, n, (size_t)(0.99 * n));
    print_latency("max_ms", sorted, n, n - 1);
    print_latency("min_ms", sorted, n, 0);
    printf(",\"lost\":%ld,\"clients_with_loss\":%ld,\"tick_latency_ms\":[", lost,
           clients_with_loss);
    for (int tick = 0; tick < config.ticks; tick++) {
        double low = window.tick_min[tick] == INFINITY ? 0 : window.tick_min[tick];
        printf("%s[%.0f,%.0f]", tick ? "," : "", low, window.tick_max[tick]);
    }
    printf("],\"seq_gaps\":%lld,\"out_of_order\":%lld,\"disconnects\":%d,"
           "\"frames_total\":%lld,\"deflate_clients\":%d,\"errors\":{",
           seq_gaps, out_of_order, disconnects, frames_total, deflate_clients);
    for (int i = 0; i < error_kinds; i++)
        printf("%s\"%s\":%ld", i ? "," : "", errors[i].key, errors[i].count);
    emit("}}");
}

/* Act on the commands on stdin; return 0 once the program should exit. */
static int on_commands(void) {
    static char line[256];
    static size_t length;
    ssize_t got = read(STDIN_FILENO, line + length, sizeof line - 1 - length);
    if (got <= 0) return 0;
    length += got;
    char *end;
    while ((end = memchr(line, '\n', length))) {
        *end = '\0';
        if (strcmp(line, "arm") == 0) window.armed = 1;
        else if (strcmp(line, "result") == 0) print_result();
        else if (strcmp(line, "quit") == 0) return 0;
        else fprintf(stderr, "wsclients: unknown command %s\n", line);
        length -= end + 1 - line;
        memmove(line, end + 1, length);
    }
    if (length == sizeof line - 1) length = 0;
    return 1;
}

static void allocate(void) {
    clients = calloc(config.clients, sizeof *clients);
    retry_queue = calloc(config.clients, sizeof *retry_queue);
    window.capacity = (size_t)config.clients * config.ticks;
    window.latencies = malloc(window.capacity * sizeof(double));
    window.tick_min = malloc(config.ticks * sizeof(double));
    window.tick_max = calloc(config.ticks, sizeof(double));
    if (!clients || !retry_queue || !window.latencies || !window.tick_min ||
        !window.tick_max)
        fail("out of memory");
    for (int i = 0; i < config.clients; i++) clients[i].fd = -1;
    for (int tick = 0; tick < config.ticks; tick++) window.tick_min[tick] = INFINITY;
}

/* Raise the limit of open files to its maximum: a client is one file. */
static void raise_open_files(void) {
    struct rlimit limit;
    if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
        limit.rlim_cur = limit.rlim_max;
        setrlimit(RLIMIT_NOFILE, &limit);
    }
}

int main(int argc, char **argv) {
    parse_args(argc, argv);
    raise_open_files();
    /* A write to a socket the server closed fails with EPIPE, which is
     * counted, instead of ending the program. */
    signal(SIGPIPE, SIG_IGN);
    allocate();
    srandom(getpid());
    epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event input = {.events = EPOLLIN, .data.u32 = STDIN_TAG};
    if (epoll_fd < 0 || epoll_ctl(epoll_fd, EPOLL_CTL_ADD, STDIN_FILENO, &input) < 0)
        fail("cannot watch stdin with epoll");
    connect_started_ms = clock_ms(CLOCK_MONOTONIC);
    cpu_started = cpu_seconds();
    double next_second = connect_started_ms + 1000;
    struct epoll_event events[1024];
    for (;;) {
        launch();
        int ready = epoll_wait(epoll_fd, events, 1024, connect_done ? 100 : 10);
        for (int i = 0; i < ready; i++) {
            if (events[i].data.u32 == STDIN_TAG) {
                if (!on_commands()) return 0;
                continue;
            }
            on_event(&clients[events[i].data.u32], events[i].events);
        }
        if (clock_ms(CLOCK_MONOTONIC) >= next_second) {
            next_second += 1000;
            on_second();
        }
    }
}
