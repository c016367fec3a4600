/* LD_PRELOAD: SIGKILL this process at an exact I/O moment (a copy of the shim in the
 * issue's reproducers, used by tests/test_resume.c; built by CMake as libkillshim.so).
 * KILL_CALL = rename | link | fsync | write | close   (the call to stop at)
 * KILL_PATH = substring of the path (rename/link: either path; write/fsync/close: the
 *             path the fd was opened with)
 * KILL_NTH  = the Nth matching call (default 1)
 * KILL_WHEN = before (default) | after   (kill before or after doing the call)
 * KILL_HALF = 1: for write, write half the buffer and then die (a torn write)
 * KILL_SIG  = INT | TERM: raise that signal instead of SIGKILL and carry on (e.g. a second
 *             Ctrl-C during a stop checkpoint)
 * STALL_PATH, STALL_SEC: fsync of a matching file sleeps STALL_SEC seconds (a slow disk) */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>

static char fdpath[4096][256];
static int count;

static int want(const char *call, const char *p1, const char *p2) {
    const char *c = getenv("KILL_CALL"), *p = getenv("KILL_PATH");
    if (!c || strcmp(c, call)) return 0;
    if (p && !((p1 && strstr(p1, p)) || (p2 && strstr(p2, p)))) return 0;
    int nth = getenv("KILL_NTH") ? atoi(getenv("KILL_NTH")) : 1;
    return ++count == nth;
}
static int after(void) { const char *w = getenv("KILL_WHEN"); return w && !strcmp(w, "after"); }
static void die(const char *what, const char *p) {
    char b[600];
    static int fired;
    const char *sig = getenv("KILL_SIG");
    if (fired++) return; /* KILL_SIG: once */
    int signo = sig && !strcmp(sig, "INT") ? SIGINT : sig && !strcmp(sig, "TERM") ? SIGTERM : SIGKILL;
    int n = snprintf(b, sizeof b, "killshim: SIG%s at %s(%s) %s\n", signo == SIGKILL ? "KILL" : sig, what, p ? p : "",
                     after() ? "after" : "before");
    ssize_t r = write(2, b, (size_t)n); (void)r;
    raise(signo);
}

int open(const char *path, int flags, ...) {
    static int (*real)(const char *, int, ...);
    if (!real) real = dlsym(RTLD_NEXT, "open");
    va_list ap; va_start(ap, flags); int mode = va_arg(ap, int); va_end(ap);
    int fd = real(path, flags, mode);
    if (fd >= 0 && fd < 4096) snprintf(fdpath[fd], sizeof fdpath[fd], "%s", path);
    return fd;
}
int open64(const char *path, int flags, ...) {
    static int (*real)(const char *, int, ...);
    if (!real) real = dlsym(RTLD_NEXT, "open64");
    va_list ap; va_start(ap, flags); int mode = va_arg(ap, int); va_end(ap);
    int fd = real(path, flags, mode);
    if (fd >= 0 && fd < 4096) snprintf(fdpath[fd], sizeof fdpath[fd], "%s", path);
    return fd;
}
int rename(const char *a, const char *b) {
    static int (*real)(const char *, const char *);
    if (!real) real = dlsym(RTLD_NEXT, "rename");
    int hit = want("rename", a, b);
    if (hit && !after()) die("rename", b);
    int r = real(a, b);
    if (hit) die("rename", b);
    return r;
}
int link(const char *a, const char *b) {
    static int (*real)(const char *, const char *);
    if (!real) real = dlsym(RTLD_NEXT, "link");
    int hit = want("link", a, b);
    if (hit && !after()) die("link", b);
    int r = real(a, b);
    if (hit) die("link", b);
    return r;
}
int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = dlsym(RTLD_NEXT, "fsync");
    const char *p = fd >= 0 && fd < 4096 ? fdpath[fd] : NULL;
    /* STALL_PATH: sleep STALL_SEC seconds in fsync of a matching file (a slow disk) */
    if (getenv("STALL_PATH") && p && strstr(p, getenv("STALL_PATH"))) {
        struct timespec ts = {atoi(getenv("STALL_SEC") ? getenv("STALL_SEC") : "1"), 0};
        while (nanosleep(&ts, &ts) != 0) {}
    }
    int hit = want("fsync", p, NULL);
    if (hit && !after()) die("fsync", p);
    int r = real(fd);
    if (hit) die("fsync", p);
    return r;
}
int close(int fd) {
    static int (*real)(int);
    if (!real) real = dlsym(RTLD_NEXT, "close");
    if (fd >= 0 && fd < 4096) fdpath[fd][0] = 0; /* a reused descriptor is another file */
    return real(fd);
}
ssize_t write(int fd, const void *buf, size_t n) {
    static ssize_t (*real)(int, const void *, size_t);
    if (!real) real = dlsym(RTLD_NEXT, "write");
    const char *p = fd > 2 && fd < 4096 ? fdpath[fd] : NULL;
    if (p && *p && want("write", p, NULL)) {
        if (getenv("KILL_HALF")) { real(fd, buf, n / 2); die("write-half", p); }
        if (!after()) die("write", p);
        ssize_t r = real(fd, buf, n);
        die("write", p);
        return r;
    }
    return real(fd, buf, n);
}
