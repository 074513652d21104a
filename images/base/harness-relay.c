/*
 * harness-relay: loopback TCP ports for the host's Unix sockets, then exec the agent.
 *
 *     harness-relay --listen 127.0.0.1:8787=/harness-net/gateway.sock [--listen ...] -- CMD [ARGS...]
 *     harness-relay --mux 127.0.0.1:8787=gateway [--mux ...]
 *
 * The container runs with `--network none`: the host's model gateway and egress proxy listen on
 * Unix sockets in a read-only mount, and agents want plain `http://127.0.0.1:PORT` URLs. Every
 * listener is bound first (exit 125 when one cannot be), then a child in its own session serves
 * them while this process execs CMD, so the container's exit code and signals are CMD's.
 *
 * A static binary (gcc -static, no library loaded at run time): the harness can add it to any image,
 * even one without Python or a C library (issue 17). No name resolution either (glibc's resolver
 * would load NSS modules): listen addresses are numeric, or `localhost`.
 *
 * `--mux` is the same service where the host's sockets are not on this machine (a Kubernetes pod):
 * it listens on the ports and carries every connection, multiplexed, over its own stdin and stdout
 * (the harness holds them through the Kubernetes API's exec) as frames of a 9-byte header (type,
 * connection id, length; big-endian) and a payload: READY once all ports are bound, OPEN (payload:
 * the service's name) per accepted connection, DATA both ways, EOF (half-close) both ways, CLOSE.
 * When both halves of a connection have ended, the relay sends CLOSE too, so the harness can let go
 * of its end (runner/backends/kubernetes.py closes its socket on CLOSE, and ignores unknown ids).
 *
 * One thread, one poll() loop, non-blocking sockets. Bounds: at most MAX_CONNECTIONS connections
 * (beyond: reset, never queued), a 30 s connect timeout to a host socket, reads of CHUNK bytes, and
 * per connection at most one unsent chunk per direction (--listen) or MUX_PENDING bytes (--mux).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define BIND_FAILED 125 /* as `docker run` does for its own failures, so it is never taken for CMD's code */
#define EXEC_FAILED 127
#define MAX_CONNECTIONS 256 /* beyond this a new connection is reset, never queued */
#define CHUNK 65536
#define CONNECT_TIMEOUT_MS 30000 /* a host server that never accepts must not hold the client forever */
/* The server leaves once CMD (its parent) is gone, checked this often: not at once (no parent-death
 * signal), so what CMD wrote just before it ended still goes through. */
#define PARENT_POLL_MS 1000
#define ACCEPT_BATCH 64          /* accepts per wakeup and listener: the connections already open get their turn */
#define ACCEPT_PAUSE_MS 100      /* out of descriptors: leave new connections in the backlog a moment */
#define RETRY_FIRST_MS 5         /* a host socket whose backlog is full: try again, backing off to */
#define RETRY_MAX_MS 200
#define MUX_PENDING (4 * CHUNK)  /* --mux: unsent bytes held for one connection before stdin waits */
#define MUX_OUT_HIGH (4 * CHUNK) /* --mux: frames held for stdout before the connections wait */

enum { READY = 1, OPEN = 2, DATA = 3, EOF_ = 4, CLOSE = 5 };
#define HEADER 9

struct listener {
    char *host;
    int port;
    const char *target; /* --listen: the Unix socket's path; --mux: the service's name */
    int fd;
    bool warned; /* once per socket: the agent's output is not our log */
    struct sockaddr_un addr;
    socklen_t addr_len;
    bool addr_ok;
};

static char scratch[CHUNK];

/* -- small helpers ------------------------------------------------------------------------------ */

static void say(const char *fmt, ...) {
    char line[1024];
    int n = snprintf(line, sizeof line, "harness-relay: ");
    va_list ap;
    va_start(ap, fmt);
    n += vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof line - 2)
        n = (int)sizeof line - 2;
    line[n++] = '\n';
    ssize_t ignored = write(2, line, (size_t)n); /* one write: one whole line */
    (void)ignored;
}

__attribute__((noreturn)) static void fail(int code, const char *fmt, ...) {
    char message[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    say("%s", message);
    _exit(code);
}

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool would_block(void) { return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR; }

/* SO_LINGER 0 turns the close into a reset: the client fails at once instead of reading an empty
 * answer it might retry forever, or taking a cut answer for a whole one. */
static void reset_close(int fd) {
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
}

/* Without TCP_NODELAY each small write of a kept-alive connection waits ~40 ms for the client's
 * delayed ACK (Nagle). */
static void no_delay(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static int poll_timeout(int64_t until, int64_t now, int current) {
    int64_t left = until - now;
    if (left < 0)
        left = 0;
    return (current < 0 || left < current) ? (int)left : current;
}

/* -- the command line ------------------------------------------------------------------------------ */

/* HOST:PORT=TARGET, as the Python relay read it: the first '=' ends the address, its last ':' the
 * host; brackets around an IPv6 host are dropped. */
static void parse_spec(const char *flag, const char *want, const char *spec, struct listener *l) {
    const char *eq = strchr(spec, '=');
    char *colon;
    size_t digits;
    if (!eq || !eq[1])
        goto bad;
    l->host = strndup(spec, (size_t)(eq - spec));
    if (!l->host)
        fail(BIND_FAILED, "out of memory");
    colon = strrchr(l->host, ':');
    if (!colon || colon == l->host)
        goto bad;
    *colon = '\0';
    digits = strlen(colon + 1);
    if (digits == 0 || digits > 5 || strspn(colon + 1, "0123456789") != digits)
        goto bad;
    l->port = atoi(colon + 1);
    if (l->port <= 0 || l->port >= 65536)
        goto bad;
    while (*l->host == '[' || *l->host == ']')
        l->host++;
    for (size_t n = strlen(l->host); n && (l->host[n - 1] == '[' || l->host[n - 1] == ']'); n--)
        l->host[n - 1] = '\0';
    if (!*l->host)
        goto bad;
    l->target = eq + 1;
    l->fd = -1;
    return;
bad:
    fail(BIND_FAILED, "bad %s '%s': want %s", flag, spec, want);
}

static void bind_listener(struct listener *l) {
    struct sockaddr_storage ss;
    socklen_t len;
    int family, one = 1;
    memset(&ss, 0, sizeof ss);
    if (strchr(l->host, ':')) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        family = a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)l->port);
        len = sizeof *a;
        if (inet_pton(AF_INET6, l->host, &a->sin6_addr) != 1)
            fail(BIND_FAILED, "cannot listen on %s:%d: not a numeric IPv6 address", l->host, l->port);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        family = a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)l->port);
        len = sizeof *a;
        if (strcmp(l->host, "localhost") == 0)
            a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        else if (inet_pton(AF_INET, l->host, &a->sin_addr) != 1)
            fail(BIND_FAILED, "cannot listen on %s:%d: not a numeric address (nor localhost)", l->host, l->port);
    }
    /* CLOEXEC: CMD, exec'd by this process, must not inherit the listeners. */
    l->fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
    if (l->fd < 0)
        fail(BIND_FAILED, "cannot listen on %s:%d: %s", l->host, l->port, strerror(errno));
    setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(l->fd, (struct sockaddr *)&ss, len) < 0 || listen(l->fd, 128) < 0)
        fail(BIND_FAILED, "cannot listen on %s:%d: %s", l->host, l->port, strerror(errno));
}

/* Accepts what one wakeup of a listener offers; `take` gets each new socket (and resets it when
 * the cap is reached). Returns false when out of descriptors (the caller pauses accepting: the
 * listener would stay readable and the loop would spin). */
static bool accept_some(struct listener *l, void (*take)(struct listener *, int)) {
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            take(l, fd);
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return true;
        if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
            continue;
        return false; /* EMFILE, ENFILE, ENOBUFS, ENOMEM, or worse */
    }
    return true;
}

/* ===================================================================================================
 * --listen: each accepted connection is spliced to a new connection to its Unix socket.
 * =================================================================================================== */

enum { CONNECTING, WAITING, OPENED };

struct half {      /* one direction of a connection */
    char *pending; /* the part of the last chunk the destination did not take yet (CHUNK bytes, lazily) */
    size_t off, len;
    bool eof;  /* the source ended */
    bool shut; /* ... and the destination was half-closed, once everything was written */
};

struct conn {
    int client, up;
    struct listener *l;
    int state;
    int64_t deadline, retry_at;
    int retry_ms;
    struct half c2u, u2c;
    int pi_client, pi_up; /* its entries in this round's pollfd array, or -1 */
    bool dead;
};

static struct conn *conns[MAX_CONNECTIONS];
static int nconns;

static void conn_free(struct conn *c, bool reset) {
    if (c->up >= 0)
        close(c->up);
    if (reset)
        reset_close(c->client);
    else
        close(c->client);
    free(c->c2u.pending);
    free(c->u2c.pending);
    c->dead = true;
}

static void connect_failed(struct conn *c, const char *why) {
    if (!c->l->warned) {
        c->l->warned = true;
        say("%s: %s", c->l->target, why);
    }
    conn_free(c, true);
}

/* A non-blocking connect to a Unix socket succeeds at once, fails at once, or (backlog full) says
 * EAGAIN and leaves the socket unconnected: then it is tried again on a timer, until the deadline. */
static void try_connect(struct conn *c, int64_t now) {
    if (!c->l->addr_ok) {
        connect_failed(c, strerror(ENAMETOOLONG));
        return;
    }
    if (connect(c->up, (struct sockaddr *)&c->l->addr, c->l->addr_len) == 0 || errno == EISCONN) {
        c->state = OPENED;
    } else if (errno == EINPROGRESS) {
        c->state = CONNECTING;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
        c->state = WAITING;
        c->retry_at = now + c->retry_ms;
        c->retry_ms = c->retry_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : c->retry_ms * 2;
    } else {
        connect_failed(c, strerror(errno));
    }
}

/* Drops the ended connections, so that the array stays dense and the cap counts only live ones. */
static void listen_sweep(void) {
    for (int i = 0; i < nconns;) {
        if (conns[i]->dead) {
            free(conns[i]);
            conns[i] = conns[--nconns];
        } else {
            i++;
        }
    }
}

static void listen_take(struct listener *l, int fd) {
    struct conn *c;
    if (nconns >= MAX_CONNECTIONS || !(c = calloc(1, sizeof *c))) {
        reset_close(fd);
        return;
    }
    no_delay(fd);
    c->client = fd;
    c->l = l;
    c->pi_client = c->pi_up = -1;
    c->retry_ms = RETRY_FIRST_MS;
    c->deadline = now_ms() + CONNECT_TIMEOUT_MS;
    conns[nconns++] = c;
    c->up = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->up < 0)
        connect_failed(c, strerror(errno));
    else
        try_connect(c, now_ms());
    if (c->dead) { /* failed at once (an absent socket): its slot is free for the next in this batch */
        free(c);
        nconns--;
    }
}

/* Moves one direction on: what is pending first, then one read (each read is written on at once: SSE
 * must flow), then the half-close once the source ended and everything was written. Returns false
 * on an error, which ends the whole connection with a reset. */
static bool pump(struct half *h, int src, int dst, bool readable, bool writable) {
    if (h->len && writable) {
        ssize_t w = send(dst, h->pending + h->off, h->len, MSG_NOSIGNAL);
        if (w < 0 && !would_block())
            return false;
        if (w > 0) {
            h->off += (size_t)w;
            h->len -= (size_t)w;
        }
    }
    if (!h->len && !h->eof && readable) {
        ssize_t n = recv(src, scratch, CHUNK, 0);
        if (n < 0 && !would_block())
            return false;
        if (n == 0)
            h->eof = true;
        if (n > 0) {
            ssize_t w = send(dst, scratch, (size_t)n, MSG_NOSIGNAL);
            if (w < 0 && !would_block())
                return false;
            if (w < 0)
                w = 0;
            if (w < n) {
                if (!h->pending && !(h->pending = malloc(CHUNK)))
                    return false;
                memcpy(h->pending, scratch + w, (size_t)(n - w));
                h->off = 0;
                h->len = (size_t)(n - w);
            }
        }
    }
    if (h->eof && !h->len && !h->shut) {
        shutdown(dst, SHUT_WR);
        h->shut = true;
    }
    return true;
}

static void conn_events(struct conn *c, short rc, short ru, int64_t now) {
    const short in = POLLIN | POLLHUP | POLLERR, out = POLLOUT | POLLHUP | POLLERR;
    if (c->state == CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        if (!ru)
            return;
        getsockopt(c->up, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            connect_failed(c, strerror(err));
            return;
        }
        try_connect(c, now); /* EISCONN: connected */
        return;
    }
    if (c->state != OPENED)
        return;
    /* Both directions run until EOF; an error in one (a reset) ends the other too, and reaches the
     * client as a reset rather than an end it could take for a whole answer. */
    if (!pump(&c->c2u, c->client, c->up, rc & in, ru & out) ||
        !pump(&c->u2c, c->up, c->client, ru & in, rc & out)) {
        conn_free(c, true);
        return;
    }
    if (c->c2u.shut && c->u2c.shut)
        conn_free(c, false);
}

static void serve_listen(struct listener *ls, int nl, pid_t parent) {
    struct pollfd *pfd = calloc((size_t)nl + 2 * MAX_CONNECTIONS, sizeof *pfd);
    int64_t next_parent_check = 0, accept_paused_until = 0;
    if (!pfd)
        _exit(1);
    for (;;) {
        int64_t now = now_ms();
        int n = 0, timeout;
        if (now >= next_parent_check) {
            if (getppid() != parent)
                _exit(0);
            next_parent_check = now + PARENT_POLL_MS;
        }
        timeout = poll_timeout(next_parent_check, now, -1);
        for (int i = 0; i < nconns; i++) {
            struct conn *c = conns[i];
            if (c->state == WAITING && now >= c->retry_at)
                try_connect(c, now);
            if (!c->dead && c->state != OPENED && now >= c->deadline)
                connect_failed(c, "no answer");
        }
        listen_sweep();
        bool accepting = now >= accept_paused_until;
        if (!accepting)
            timeout = poll_timeout(accept_paused_until, now, timeout);
        for (int i = 0; i < nl; i++)
            pfd[n++] = (struct pollfd){.fd = accepting ? ls[i].fd : -1, .events = POLLIN};
        for (int i = 0; i < nconns; i++) {
            struct conn *c = conns[i];
            short ec = 0, eu = 0;
            if (c->state == OPENED) {
                ec = (short)((!c->c2u.eof && !c->c2u.len ? POLLIN : 0) | (c->u2c.len ? POLLOUT : 0));
                eu = (short)((!c->u2c.eof && !c->u2c.len ? POLLIN : 0) | (c->c2u.len ? POLLOUT : 0));
            } else {
                eu = c->state == CONNECTING ? POLLOUT : 0;
                timeout = poll_timeout(c->state == WAITING && c->retry_at < c->deadline ? c->retry_at : c->deadline,
                                       now, timeout);
            }
            /* Nothing asked of a socket: leave it out, or a hang-up it reports would wake us forever. */
            c->pi_client = ec ? n : -1;
            if (ec)
                pfd[n++] = (struct pollfd){.fd = c->client, .events = ec};
            c->pi_up = eu ? n : -1;
            if (eu)
                pfd[n++] = (struct pollfd){.fd = c->up, .events = eu};
        }
        if (poll(pfd, (nfds_t)n, timeout) < 0) {
            if (errno == EINTR)
                continue;
            _exit(1);
        }
        now = now_ms();
        int before = nconns; /* connections accepted below have no entry in this round */
        for (int i = 0; i < before; i++) {
            struct conn *c = conns[i];
            short rc = c->pi_client >= 0 ? pfd[c->pi_client].revents : 0;
            short ru = c->pi_up >= 0 ? pfd[c->pi_up].revents : 0;
            if ((rc || ru) && !c->dead)
                conn_events(c, rc, ru, now);
        }
        listen_sweep(); /* a slot freed in this round is free for a connection accepted in it */
        for (int i = 0; i < nl; i++)
            if (pfd[i].revents && !accept_some(&ls[i], listen_take))
                accept_paused_until = now + ACCEPT_PAUSE_MS;
    }
}

static void run_listen(struct listener *ls, int nl, char **cmd) {
    for (int i = 0; i < nl; i++) {
        struct listener *l = &ls[i];
        size_t len = strlen(l->target);
        l->addr.sun_family = AF_UNIX;
        l->addr_ok = len < sizeof l->addr.sun_path; /* too long: each connection fails, as it did in Python */
        if (l->addr_ok) {
            memcpy(l->addr.sun_path, l->target, len + 1);
            l->addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
        }
        bind_listener(l);
    }
    if (nl) {
        pid_t parent = getpid();
        pid_t pid = fork();
        if (pid < 0)
            fail(BIND_FAILED, "cannot start the relay: %s", strerror(errno));
        if (pid == 0) {
            /* Its own session: a signal to CMD's process group (Ctrl-C, a job stop) is not ours. No
             * stdin or stdout: they are CMD's. Stderr stays, for the once-per-socket warnings. */
            int null = open("/dev/null", O_RDWR);
            setsid();
            signal(SIGPIPE, SIG_IGN); /* here only: CMD gets this process's dispositions, left alone */
            if (null >= 0) {
                dup2(null, 0);
                dup2(null, 1);
                if (null > 2)
                    close(null);
            }
            serve_listen(ls, nl, parent);
            _exit(0);
        }
        for (int i = 0; i < nl; i++)
            close(ls[i].fd);
    }
    execvp(cmd[0], cmd);
    fail(EXEC_FAILED, "cannot run '%s': %s", cmd[0], strerror(errno));
}

/* ===================================================================================================
 * --mux: each accepted connection is a stream of frames on stdout; the harness answers on stdin.
 * =================================================================================================== */

struct mconn {
    int fd;
    uint32_t id;
    bool rd_done;  /* the client's side ended: EOF sent */
    bool host_eof; /* the harness's side ended: EOF received ... */
    bool wr_shut;  /* ... and the client half-closed, once everything was written */
    bool dead;
    char *q; /* DATA from the harness the client has not taken yet (MUX_PENDING bytes, lazily) */
    size_t qoff, qlen;
    int pi;
};

static struct mconn *mconns[MAX_CONNECTIONS];
static int nmconns;
static uint32_t last_id;

static char *out;             /* frames for stdout */
static size_t out_off, out_len, out_cap;

static unsigned char in[CHUNK]; /* bytes from stdin, and where the frame being read stands */
static size_t in_off, in_len;
static unsigned char head[HEADER];
static size_t head_got;
static uint32_t body_left;
static struct mconn *body_to; /* the connection a DATA frame's body goes to; NULL: dropped */

static void out_reserve(size_t need) {
    if (out_len + need <= out_cap)
        return;
    if (out_off) {
        memmove(out, out + out_off, out_len - out_off);
        out_len -= out_off;
        out_off = 0;
    }
    if (out_len + need > out_cap) {
        size_t cap = out_cap ? out_cap : 2 * CHUNK;
        while (cap < out_len + need)
            cap *= 2;
        if (!(out = realloc(out, cap)))
            _exit(1);
        out_cap = cap;
    }
}

static void put_header(unsigned char *p, int kind, uint32_t id, uint32_t len) {
    p[0] = (unsigned char)kind;
    p[1] = (unsigned char)(id >> 24), p[2] = (unsigned char)(id >> 16), p[3] = (unsigned char)(id >> 8);
    p[4] = (unsigned char)id;
    p[5] = (unsigned char)(len >> 24), p[6] = (unsigned char)(len >> 16), p[7] = (unsigned char)(len >> 8);
    p[8] = (unsigned char)len;
}

static void frame(int kind, uint32_t id, const void *payload, size_t len) {
    out_reserve(HEADER + len);
    put_header((unsigned char *)out + out_len, kind, id, (uint32_t)len);
    if (len)
        memcpy(out + out_len + HEADER, payload, len);
    out_len += HEADER + len;
}

static void flush_out(void) {
    while (out_off < out_len) {
        ssize_t w = write(1, out + out_off, out_len - out_off);
        if (w < 0 && would_block())
            return;
        if (w <= 0)
            _exit(0); /* the harness is gone: so is every connection */
        out_off += (size_t)w;
    }
    out_off = out_len = 0;
}

static void mconn_free(struct mconn *c, bool reset) {
    if (reset)
        reset_close(c->fd);
    else
        close(c->fd);
    free(c->q);
    c->dead = true;
    if (body_to == c)
        body_to = NULL; /* the rest of its frame is dropped */
}

static void mconn_failed(struct mconn *c) {
    frame(CLOSE, c->id, NULL, 0);
    mconn_free(c, false);
}

static void mconn_maybe_done(struct mconn *c) {
    if (c->dead)
        return;
    if (c->host_eof && !c->qlen && !c->wr_shut) {
        shutdown(c->fd, SHUT_WR);
        c->wr_shut = true;
    }
    if (c->rd_done && c->wr_shut) {
        frame(CLOSE, c->id, NULL, 0); /* both halves ended: the harness may close its end */
        mconn_free(c, false);
    }
}

static struct mconn *mconn_find(uint32_t id) {
    for (int i = 0; i < nmconns; i++)
        if (mconns[i]->id == id && !mconns[i]->dead)
            return mconns[i];
    return NULL;
}

static void mux_sweep(void) {
    for (int i = 0; i < nmconns;) {
        if (mconns[i]->dead) {
            free(mconns[i]);
            mconns[i] = mconns[--nmconns];
        } else {
            i++;
        }
    }
}

static void mux_take(struct listener *l, int fd) {
    struct mconn *c;
    if (nmconns >= MAX_CONNECTIONS || !(c = calloc(1, sizeof *c))) {
        reset_close(fd);
        return;
    }
    no_delay(fd);
    c->fd = fd;
    c->pi = -1;
    do
        c->id = ++last_id; /* never 0 (READY's), never one still open after a wrap */
    while (c->id == 0 || mconn_find(c->id));
    mconns[nmconns++] = c;
    frame(OPEN, c->id, l->target, strlen(l->target));
}

/* Writes what it can of a DATA body to its client at once, keeps what fits of the rest; returns the
 * bytes taken. 0 with the connection alive: its queue is full, stdin waits (the protocol has no
 * per-connection window, so holding stdin is how a slow client bounds the memory it costs). */
static size_t mconn_deliver(struct mconn *c, const unsigned char *p, size_t n) {
    size_t taken = 0;
    if (!c->qlen) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && !would_block()) {
            mconn_failed(c);
            return n;
        }
        if (w > 0)
            taken = (size_t)w;
        if (taken == n)
            return n;
    }
    size_t room = MUX_PENDING - c->qlen, more = n - taken < room ? n - taken : room;
    if (!more)
        return taken;
    if (!c->q && !(c->q = malloc(MUX_PENDING))) {
        mconn_failed(c);
        return n;
    }
    if (c->qoff + c->qlen + more > MUX_PENDING) {
        memmove(c->q, c->q + c->qoff, c->qlen);
        c->qoff = 0;
    }
    memcpy(c->q + c->qoff + c->qlen, p + taken, more);
    c->qlen += more;
    return taken + more;
}

static void mux_control(int kind, uint32_t id) {
    struct mconn *c = mconn_find(id);
    if (!c)
        return; /* ended on our side already: its late frames mean nothing */
    if (kind == EOF_) {
        c->host_eof = true;
        mconn_maybe_done(c);
    } else if (kind == CLOSE) {
        mconn_free(c, true); /* the host's end failed: a reset, not an end the client could trust */
    }
}

/* Frames from stdin, as far as the connections take them. */
static void mux_input(void) {
    while (in_off < in_len) {
        if (head_got < HEADER) {
            size_t n = HEADER - head_got < in_len - in_off ? HEADER - head_got : in_len - in_off;
            memcpy(head + head_got, in + in_off, n);
            head_got += n;
            in_off += n;
            if (head_got < HEADER)
                return;
            uint32_t id = (uint32_t)head[1] << 24 | (uint32_t)head[2] << 16 | (uint32_t)head[3] << 8 | head[4];
            body_left = (uint32_t)head[5] << 24 | (uint32_t)head[6] << 16 | (uint32_t)head[7] << 8 | head[8];
            body_to = head[0] == DATA ? mconn_find(id) : NULL;
            if (body_to && body_to->host_eof)
                body_to = NULL;
        } else {
            size_t n = body_left < in_len - in_off ? body_left : in_len - in_off;
            if (body_to) {
                n = mconn_deliver(body_to, in + in_off, n);
                if (!n)
                    return; /* resumes when that client has taken some */
            }
            in_off += n;
            body_left -= (uint32_t)n;
        }
        if (head_got == HEADER && !body_left) { /* a whole frame */
            if (head[0] != DATA)
                mux_control(head[0], (uint32_t)head[1] << 24 | (uint32_t)head[2] << 16 | (uint32_t)head[3] << 8 |
                                         head[4]);
            head_got = 0;
            body_to = NULL;
        }
    }
}

static void mconn_events(struct mconn *c, short re) {
    if ((re & (POLLOUT | POLLHUP | POLLERR)) && c->qlen) {
        ssize_t w = send(c->fd, c->q + c->qoff, c->qlen, MSG_NOSIGNAL);
        if (w < 0 && !would_block()) {
            mconn_failed(c);
            return;
        }
        if (w > 0) {
            c->qoff += (size_t)w;
            c->qlen -= (size_t)w;
            if (!c->qlen)
                c->qoff = 0;
        }
    }
    if ((re & (POLLIN | POLLHUP | POLLERR)) && !c->rd_done && out_len - out_off < MUX_OUT_HIGH) {
        out_reserve(HEADER + CHUNK);
        ssize_t n = recv(c->fd, out + out_len + HEADER, CHUNK, 0); /* read straight into its frame */
        if (n < 0 && !would_block()) {
            mconn_failed(c);
            return;
        }
        if (n > 0) {
            put_header((unsigned char *)out + out_len, DATA, c->id, (uint32_t)n);
            out_len += HEADER + (size_t)n;
        } else if (n == 0) {
            frame(EOF_, c->id, NULL, 0);
            c->rd_done = true;
        }
    }
    mconn_maybe_done(c);
}

static void run_mux(struct listener *ls, int nl) {
    struct pollfd *pfd = calloc((size_t)nl + 2 + MAX_CONNECTIONS, sizeof *pfd);
    int64_t accept_paused_until = 0;
    if (!pfd)
        _exit(1);
    for (int i = 0; i < nl; i++)
        bind_listener(&ls[i]);
    signal(SIGPIPE, SIG_IGN);
    fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
    fcntl(1, F_SETFL, fcntl(1, F_GETFL) | O_NONBLOCK);
    frame(READY, 0, NULL, 0);
    flush_out();
    for (;;) {
        int64_t now = now_ms();
        int n = 0, timeout = -1;
        mux_sweep();
        bool accepting = now >= accept_paused_until;
        if (!accepting)
            timeout = poll_timeout(accept_paused_until, now, timeout);
        for (int i = 0; i < nl; i++)
            pfd[n++] = (struct pollfd){.fd = accepting ? ls[i].fd : -1, .events = POLLIN};
        /* stdin only once what was read went somewhere; stdout only while frames wait */
        pfd[n++] = (struct pollfd){.fd = in_off == in_len ? 0 : -1, .events = POLLIN};
        pfd[n++] = (struct pollfd){.fd = out_off < out_len ? 1 : -1, .events = POLLOUT};
        bool room = out_len - out_off < MUX_OUT_HIGH;
        for (int i = 0; i < nmconns; i++) {
            struct mconn *c = mconns[i];
            short e = (short)((!c->rd_done && room ? POLLIN : 0) | (c->qlen ? POLLOUT : 0));
            c->pi = e ? n : -1;
            if (e)
                pfd[n++] = (struct pollfd){.fd = c->fd, .events = e};
        }
        if (poll(pfd, (nfds_t)n, timeout) < 0) {
            if (errno == EINTR)
                continue;
            _exit(1);
        }
        now = now_ms();
        int before = nmconns;
        for (int i = 0; i < before; i++) {
            struct mconn *c = mconns[i];
            if (c->pi >= 0 && pfd[c->pi].revents && !c->dead)
                mconn_events(c, pfd[c->pi].revents);
        }
        if (pfd[nl].revents) {
            ssize_t r = read(0, in, sizeof in);
            if (r == 0 || (r < 0 && !would_block()))
                _exit(r == 0 ? 0 : 1); /* the harness is gone: so is every connection */
            if (r > 0) {
                in_off = 0;
                in_len = (size_t)r;
            }
        }
        mux_input();
        mux_sweep();
        for (int i = 0; i < nl; i++)
            if (pfd[i].revents && !accept_some(&ls[i], mux_take))
                accept_paused_until = now + ACCEPT_PAUSE_MS;
        flush_out();
    }
}

/* -------------------------------------------------------------------------------------------------- */

int main(int argc, char **argv) {
    struct listener *ls = calloc((size_t)argc + 1, sizeof *ls);
    int nl = 0, i = 1;
    if (!ls)
        fail(BIND_FAILED, "out of memory");
    if (argc > 1 && strcmp(argv[1], "--mux") == 0) {
        for (; i < argc; i += 2) {
            if (strcmp(argv[i], "--mux") != 0 || i + 1 >= argc)
                fail(BIND_FAILED, "unexpected argument '%s'; usage: --mux HOST:PORT=NAME ...", argv[i]);
            parse_spec("--mux", "HOST:PORT=NAME", argv[i + 1], &ls[nl++]);
        }
        run_mux(ls, nl);
        return 0;
    }
    while (i < argc && strcmp(argv[i], "--") != 0) {
        if (strcmp(argv[i], "--listen") != 0 || i + 1 >= argc)
            fail(BIND_FAILED, "unexpected argument '%s'; usage: --listen HOST:PORT=SOCKET ... -- CMD", argv[i]);
        parse_spec("--listen", "HOST:PORT=SOCKET", argv[i + 1], &ls[nl++]);
        i += 2;
    }
    if (i + 1 >= argc)
        fail(BIND_FAILED, "no command after '--'");
    run_listen(ls, nl, argv + i + 1);
    return EXEC_FAILED;
}
