/*
 * podlab-cni's native front: forward one CNI call to the node agent's CNI server.
 *
 * The same job as the fast path of harness/cni/plugin.py, without starting a
 * Python interpreter (about 10 ms of CPU per pod on this machine; this takes
 * about 1): read the CNI_* variables and the configuration on stdin, find
 * "agentSocket" in it (default /run/podlab/cni.sock; "" means never forward),
 * send the framed request, print what the server answers and exit with its
 * status. When no server listens (or VERSION is asked, or the socket is not
 * given), it hands the call, stdin included, to the Python plugin
 * (PY_PLUGIN, set at build time), which does the work in-process.
 *
 * Wire format (plugin.py documents it): "podlab-cni 1 <env bytes>\n", the
 * CNI_* variables as KEY=VALUE joined by NUL, then stdin; the client shuts its
 * side down. Answer: the exit status on the first line, then stdout's bytes.
 * Built by harness/cni/install.py (cc -O2); if no compiler is there, the
 * Python launcher is installed instead.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#ifndef PY_PLUGIN
#error "build with -DPY_PLUGIN='\"/path/to/podlab-cni-py\"'"
#endif

extern char **environ;

struct buf { char *p; size_t n, cap; };

static int put(struct buf *b, const void *data, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (b->n + n + 1 > cap) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) return -1;
        b->p = p, b->cap = cap;
    }
    memcpy(b->p + b->n, data, n);
    b->n += n;
    b->p[b->n] = 0;
    return 0;
}

static int slurp(int fd, struct buf *b) {
    char chunk[65536];
    for (;;) {
        ssize_t r = read(fd, chunk, sizeof chunk);
        if (r == 0) return 0;
        if (r < 0) { if (errno == EINTR) continue; return -1; }
        if (put(b, chunk, (size_t)r)) return -1;
    }
}

static int write_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) { if (errno == EINTR) continue; return -1; }
        p += w, n -= (size_t)w;
    }
    return 0;
}

/* The socket path from the configuration, as plugin.py's socket_path() reads it.
 * Returns 1 with *out set, 0 for "do not forward" (empty or escaped value). */
static int socket_path(const char *conf, char *out, size_t size) {
    const char *k = strstr(conf, "\"agentSocket\"");
    if (!k) { snprintf(out, size, "/run/podlab/cni.sock"); return 1; }
    const char *c = strchr(k + 13, ':');
    if (!c) return 0;
    c++;
    while (*c == ' ' || *c == '\t' || *c == '\n' || *c == '\r') c++;
    if (*c != '"') return 0;
    const char *end = strchr(c + 1, '"');
    if (!end || end == c + 1) return 0;
    size_t n = (size_t)(end - c - 1);
    if (memchr(c + 1, '\\', n) || n >= size) return 0;
    memcpy(out, c + 1, n);
    out[n] = 0;
    return 1;
}

/* Hand the call to the Python plugin; ``in`` is the stdin already read (NULL: none). */
static int fallback(struct buf *in, char **argv) {
    int fd = in ? memfd_create("podlab-cni-stdin", 0) : -1;
    if (fd >= 0 && write_all(fd, in->p ? in->p : "", in->n) == 0 && lseek(fd, 0, SEEK_SET) == 0)
        dup2(fd, 0);
    argv[0] = (char *)PY_PLUGIN;
    execv(PY_PLUGIN, argv);
    printf("{\"code\": 999, \"msg\": \"podlab-cni: cannot run %s: %s\"}\n", PY_PLUGIN,
           strerror(errno));
    return 1;
}

int main(int argc, char **argv) {
    (void)argc;
    struct buf in = {0}, env = {0}, out = {0};
    const char *cmd = getenv("CNI_COMMAND");
    if (!cmd || !*cmd || !strcmp(cmd, "VERSION")) return fallback(NULL, argv);
    if (slurp(0, &in)) return fallback(&in, argv);
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    if (!socket_path(in.p ? in.p : "", path, sizeof path)) return fallback(&in, argv);

    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    memcpy(sa.sun_path, path, strlen(path) + 1);
    if (s < 0 || connect(s, (struct sockaddr *)&sa, sizeof sa) < 0) {
        if (s >= 0) close(s);
        return fallback(&in, argv);
    }
    for (char **e = environ; *e; e++) {
        if (strncmp(*e, "CNI_", 4)) continue;
        if (env.n && put(&env, "", 1)) return fallback(&in, argv); /* NUL separator */
        if (put(&env, *e, strlen(*e))) return fallback(&in, argv);
    }
    char head[64];
    int hn = snprintf(head, sizeof head, "podlab-cni 1 %zu\n", env.n);
    if (write_all(s, head, (size_t)hn) || write_all(s, env.p ? env.p : "", env.n) ||
        write_all(s, in.p ? in.p : "", in.n) || shutdown(s, SHUT_WR) || slurp(s, &out)) {
        printf("{\"code\": 11, \"msg\": \"podlab-agent's CNI server at %s broke off\", "
               "\"details\": \"retry; the agent may be restarting\"}\n", path);
        return 1;
    }
    close(s);
    char *nl = out.p ? memchr(out.p, '\n', out.n) : NULL;
    if (!nl) {
        printf("{\"code\": 11, \"msg\": \"podlab-agent's CNI server at %s gave no answer\"}\n",
               path);
        return 1;
    }
    int code = atoi(out.p);
    size_t rest = out.n - (size_t)(nl + 1 - out.p);
    while (rest && nl[rest] == '\n') rest--; /* one trailing newline, as plugin.py */
    if (rest) {
        write_all(1, nl + 1, rest);
        write_all(1, "\n", 1);
    }
    return code;
}
