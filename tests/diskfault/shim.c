/* diskfault shim: an LD_PRELOAD library that makes the disk misbehave under
 * a live raftkv node, for the campaigns in tests/diskfault/README.md.
 *
 * Build: cc -shared -fPIC -O2 -o target/diskfault.so tests/diskfault/shim.c -ldl -lpthread
 *
 * DISKFAULT_CTL names a control file, re-read when its mtime or size changes
 * (checked at most every 10 ms, so a rule written by the harness takes hold
 * within that). One rule per line, '#' for comments:
 *
 *     OP ACTION ARG COUNT [MATCH]
 *
 *   OP      fdatasync, fsync, sync (both), pwrite (pwrite, pwrite64), write,
 *           fallocate (posix_fallocate, fallocate and their 64 forms),
 *           rename, msync
 *   ACTION  stall (sleep ARG ms, or a uniform draw from A:B, then do the
 *           call), eio or enospc (fail without doing the call)
 *   COUNT   how many matching calls the rule takes: 0 for all of them;
 *           N+K skips K matching calls first
 *   MATCH   a substring of the file's path (`-` or absent: any file); for
 *           rename, of either name. Every regular file counts, the node's
 *           log too when its stderr is one: match narrowly ("/stable").
 *
 * A rule's counts are kept while the file is unchanged, so "fdatasync eio 0 1"
 * fails exactly one call; rewriting the file starts every rule afresh.
 * Every fault injected is appended to DISKFAULT_LOG (if set) as
 * `<unix ms> <pid> <op> <action> <path>`, so a checker can tell when and
 * where the disk misbehaved. With DISKFAULT_COUNT set, the calls seen per
 * OP are printed on stderr at exit (to check that the daemon's calls go
 * through these symbols at all).
 *
 * Only files are matched: write() on a socket or pipe is passed through
 * without looking at it, since the event loop writes to sockets constantly.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

enum op { OP_FDATASYNC, OP_FSYNC, OP_PWRITE, OP_WRITE, OP_FALLOCATE, OP_RENAME, OP_MSYNC, OP_N };
static const char *op_names[OP_N] = {"fdatasync", "fsync", "pwrite", "write",
                                     "fallocate", "rename", "msync"};
enum action { ACT_STALL, ACT_EIO, ACT_ENOSPC };

#define MAX_RULES 32
struct rule {
    unsigned ops; /* bit per enum op */
    enum action action;
    long ms_lo, ms_hi;
    long count, skip, seen;
    char match[256];
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct rule rules[MAX_RULES];
static int nrules;
static unsigned active_ops; /* ops some rule names: others skip the path lookup */
static struct timespec ctl_mtime;
static off_t ctl_size = -1;
static long long last_check_ns;
static unsigned long long calls[OP_N];
static unsigned rng_state = 12345;

static long long now_ns(int clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int parse_op(const char *s, unsigned *ops) {
    if (!strcmp(s, "sync")) {
        *ops = (1u << OP_FDATASYNC) | (1u << OP_FSYNC);
        return 0;
    }
    for (int i = 0; i < OP_N; i++)
        if (!strcmp(s, op_names[i])) {
            *ops = 1u << i;
            return 0;
        }
    return -1;
}

/* Called with the lock held. */
static void reload(void) {
    const char *path = getenv("DISKFAULT_CTL");
    struct stat st;
    if (!path || stat(path, &st) != 0) {
        nrules = 0;
        active_ops = 0;
        ctl_size = -1;
        return;
    }
    if (st.st_size == ctl_size && st.st_mtim.tv_sec == ctl_mtime.tv_sec &&
        st.st_mtim.tv_nsec == ctl_mtime.tv_nsec)
        return;
    ctl_size = st.st_size;
    ctl_mtime = st.st_mtim;
    nrules = 0;
    active_ops = 0;
    FILE *f = fopen(path, "re");
    if (!f)
        return;
    char line[512];
    while (nrules < MAX_RULES && fgets(line, sizeof line, f)) {
        char *hash = strchr(line, '#');
        if (hash)
            *hash = 0;
        char op[32], act[32], arg[64], count[64], match[256] = "-";
        if (sscanf(line, "%31s %31s %63s %63s %255s", op, act, arg, count, match) < 4)
            continue;
        struct rule r;
        memset(&r, 0, sizeof r);
        if (parse_op(op, &r.ops) != 0)
            continue;
        if (!strcmp(act, "stall"))
            r.action = ACT_STALL;
        else if (!strcmp(act, "eio"))
            r.action = ACT_EIO;
        else if (!strcmp(act, "enospc"))
            r.action = ACT_ENOSPC;
        else
            continue;
        if (sscanf(arg, "%ld:%ld", &r.ms_lo, &r.ms_hi) < 2)
            r.ms_hi = r.ms_lo;
        if (sscanf(count, "%ld+%ld", &r.count, &r.skip) < 2)
            r.skip = 0;
        if (strcmp(match, "-"))
            snprintf(r.match, sizeof r.match, "%s", match);
        rules[nrules++] = r;
        active_ops |= r.ops;
    }
    fclose(f);
}

static void fd_path(int fd, char *out, size_t len) {
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, out, len - 1);
    out[n < 0 ? 0 : n] = 0;
}

static ssize_t (*real_write)(int, const void *, size_t);

static void note(enum op op, enum action act, const char *path) {
    const char *log = getenv("DISKFAULT_LOG");
    if (!log)
        return;
    int fd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    char buf[600];
    static const char *acts[] = {"stall", "eio", "enospc"};
    int n = snprintf(buf, sizeof buf, "%lld %d %s %s %s\n", now_ns(CLOCK_REALTIME) / 1000000,
                     (int)getpid(), op_names[op], acts[act], path);
    if (!real_write)
        real_write = dlsym(RTLD_NEXT, "write");
    real_write(fd, buf, n > (int)sizeof buf ? (int)sizeof buf : n);
    close(fd);
}

/* What to do with a call: 0 to go on (after any stall), or an errno to fail
 * it with. `path2` is rename's second name. */
static int decide(enum op op, const char *path, const char *path2) {
    long stall_ms = -1;
    int err = 0;
    enum action act = ACT_STALL;
    pthread_mutex_lock(&lock);
    for (int i = 0; i < nrules; i++) {
        struct rule *r = &rules[i];
        if (!(r->ops & (1u << op)))
            continue;
        if (r->match[0] && !strstr(path, r->match) && !(path2 && strstr(path2, r->match)))
            continue;
        r->seen++;
        if (r->seen <= r->skip)
            continue;
        if (r->count && r->seen > r->skip + r->count)
            continue;
        act = r->action;
        if (act == ACT_STALL) {
            rng_state = rng_state * 1103515245u + 12345u;
            long span = r->ms_hi - r->ms_lo;
            stall_ms = r->ms_lo + (span > 0 ? (long)((rng_state >> 8) % (unsigned)(span + 1)) : 0);
        } else {
            err = act == ACT_EIO ? EIO : ENOSPC;
        }
        break;
    }
    pthread_mutex_unlock(&lock);
    /* The sleep is outside the lock: a stalled sync thread must not hold up
     * the event loop's own calls. */
    if (stall_ms >= 0) {
        note(op, ACT_STALL, path);
        struct timespec ts = {stall_ms / 1000, (stall_ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
        }
    }
    if (err)
        note(op, act, path);
    return err;
}

/* Counts the call, re-reads the control file if due, and says whether any
 * rule names `op` (the others skip the path lookup). */
static int interesting(enum op op) {
    pthread_mutex_lock(&lock);
    calls[op]++;
    long long now = now_ns(CLOCK_MONOTONIC);
    if (now - last_check_ns > 10000000LL) {
        last_check_ns = now;
        reload();
    }
    int yes = (active_ops >> op) & 1;
    pthread_mutex_unlock(&lock);
    return yes;
}

/* For calls on a descriptor: the errno to fail with, after any stall. */
static int decide_fd(enum op op, int fd) {
    char path[512] = "";
    if (!interesting(op))
        return 0;
    fd_path(fd, path, sizeof path);
    if (path[0] != '/')
        return 0; /* a socket, pipe or anon inode */
    return decide(op, path, NULL);
}

#define REAL(name) \
    static __typeof__(name) *real; \
    if (!real) \
        real = dlsym(RTLD_NEXT, #name)

#define FAIL_IF(e) \
    do { \
        int err_ = (e); \
        if (err_) { \
            errno = err_; \
            return -1; \
        } \
    } while (0)

int fdatasync(int fd) {
    REAL(fdatasync);
    FAIL_IF(decide_fd(OP_FDATASYNC, fd));
    return real(fd);
}

int fsync(int fd) {
    REAL(fsync);
    FAIL_IF(decide_fd(OP_FSYNC, fd));
    return real(fd);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
    REAL(pwrite);
    FAIL_IF(decide_fd(OP_PWRITE, fd));
    return real(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off) {
    REAL(pwrite64);
    FAIL_IF(decide_fd(OP_PWRITE, fd));
    return real(fd, buf, n, off);
}

ssize_t write(int fd, const void *buf, size_t n) {
    REAL(write);
    /* Without a rule for write, not even a lock: sockets are written all the time. */
    if ((active_ops >> OP_WRITE) & 1) {
        struct stat st;
        if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode))
            FAIL_IF(decide_fd(OP_WRITE, fd));
    }
    return real(fd, buf, n);
}

/* posix_fallocate returns the error instead of setting errno. */
int posix_fallocate(int fd, off_t off, off_t len) {
    REAL(posix_fallocate);
    int err = decide_fd(OP_FALLOCATE, fd);
    return err ? err : real(fd, off, len);
}

int posix_fallocate64(int fd, off_t off, off_t len) {
    REAL(posix_fallocate64);
    int err = decide_fd(OP_FALLOCATE, fd);
    return err ? err : real(fd, off, len);
}

int fallocate(int fd, int mode, off_t off, off_t len) {
    REAL(fallocate);
    FAIL_IF(decide_fd(OP_FALLOCATE, fd));
    return real(fd, mode, off, len);
}

int fallocate64(int fd, int mode, off_t off, off_t len) {
    REAL(fallocate64);
    FAIL_IF(decide_fd(OP_FALLOCATE, fd));
    return real(fd, mode, off, len);
}

int rename(const char *from, const char *to) {
    REAL(rename);
    if (interesting(OP_RENAME))
        FAIL_IF(decide(OP_RENAME, from, to));
    return real(from, to);
}

int msync(void *addr, size_t len, int flags) {
    REAL(msync);
    if (interesting(OP_MSYNC))
        FAIL_IF(decide(OP_MSYNC, "(mapping)", NULL));
    return real(addr, len, flags);
}

__attribute__((destructor)) static void report(void) {
    if (!getenv("DISKFAULT_COUNT"))
        return;
    fprintf(stderr, "diskfault: calls:");
    for (int i = 0; i < OP_N; i++)
        fprintf(stderr, " %s=%llu", op_names[i], calls[i]);
    fprintf(stderr, "\n");
}
