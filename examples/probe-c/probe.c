/*
 * probe: the measuring instrument of the tests, the demo and the benchmarks.
 *
 * One source, built three ways (static glibc, static musl, dynamic glibc) so that every
 * interception path is exercised with the same observable behaviour. Each subcommand makes the
 * plain libc calls a real program would make, prints plain line-oriented output, and exits with
 * the errno of the failing call (after a "probe: <op> <path>: <strerror>" line on stderr).
 * Exit codes that are not errno values: 1 = a negative answer (env NAME unset, HTTP status
 * >= 400), 64 = usage error, 68 = name resolution failed, 76 = malformed HTTP response,
 * 127 = exec failed, 128+N = the child of fork-exec was killed by signal N.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

enum {
    EXIT_NEGATIVE = 1,
    EXIT_USAGE = 64,
    EXIT_NOHOST = 68,
    EXIT_PROTOCOL = 76,
    EXIT_EXEC_FAILED = 127,
};

extern char **environ;

static int fail(const char *op, const char *what)
{
    int saved = errno;
    fprintf(stderr, "probe: %s %s: %s\n", op, what, strerror(saved));
    return saved ? saved : EXIT_NEGATIVE;
}

static int usage(const char *message)
{
    fprintf(stderr, "probe: %s (run `probe help` for the list of subcommands)\n", message);
    return EXIT_USAGE;
}

static int parse_count(const char *text, long *out)
{
    char *end = NULL;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || value < 0)
        return -1;
    *out = value;
    return 0;
}

static int write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Copies fd to stdout; returns 0 or -1 with errno set. */
static int copy_to_stdout(int fd)
{
    char buf[65536];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n == 0)
            return 0;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (write_all(STDOUT_FILENO, buf, (size_t)n) < 0)
            return -1;
    }
}

struct name_value {
    int value;
    const char *name;
};

#define ENTRY(x) {x, #x}
static const struct name_value errno_names[] = {
    ENTRY(EPERM), ENTRY(ENOENT), ENTRY(EINTR), ENTRY(EIO), ENTRY(EBADF), ENTRY(EAGAIN),
    ENTRY(ENOMEM), ENTRY(EACCES), ENTRY(EFAULT), ENTRY(EEXIST), ENTRY(ENOTDIR), ENTRY(EISDIR),
    ENTRY(EINVAL), ENTRY(EMFILE), ENTRY(ENOSPC), ENTRY(EPIPE), ENTRY(ENOSYS), ENTRY(ENOTSOCK),
    ENTRY(EPROTOTYPE), ENTRY(EPROTONOSUPPORT), ENTRY(EOPNOTSUPP), ENTRY(EAFNOSUPPORT),
    ENTRY(EADDRINUSE), ENTRY(EADDRNOTAVAIL), ENTRY(ENETDOWN), ENTRY(ENETUNREACH),
    ENTRY(ECONNABORTED), ENTRY(ECONNRESET), ENTRY(EISCONN), ENTRY(ENOTCONN), ENTRY(ETIMEDOUT),
    ENTRY(ECONNREFUSED), ENTRY(EHOSTDOWN), ENTRY(EHOSTUNREACH), ENTRY(EALREADY),
    ENTRY(EINPROGRESS),
};

static const struct name_value signal_names[] = {
    ENTRY(SIGHUP), ENTRY(SIGINT), ENTRY(SIGQUIT), ENTRY(SIGILL), ENTRY(SIGTRAP), ENTRY(SIGABRT),
    ENTRY(SIGBUS), ENTRY(SIGFPE), ENTRY(SIGKILL), ENTRY(SIGUSR1), ENTRY(SIGSEGV), ENTRY(SIGUSR2),
    ENTRY(SIGPIPE), ENTRY(SIGALRM), ENTRY(SIGTERM), ENTRY(SIGCHLD), ENTRY(SIGCONT), ENTRY(SIGSTOP),
    ENTRY(SIGTSTP), ENTRY(SIGTTIN), ENTRY(SIGTTOU), ENTRY(SIGURG), ENTRY(SIGXCPU), ENTRY(SIGXFSZ),
    ENTRY(SIGVTALRM), ENTRY(SIGPROF), ENTRY(SIGWINCH), ENTRY(SIGIO), ENTRY(SIGSYS),
};
#undef ENTRY

#define COUNT_OF(array) (sizeof(array) / sizeof((array)[0]))

static const char *errno_name(int err)
{
    static char unknown[32];
    for (size_t i = 0; i < COUNT_OF(errno_names); i++)
        if (errno_names[i].value == err)
            return errno_names[i].name;
    snprintf(unknown, sizeof unknown, "E%d", err);
    return unknown;
}

/* Accepts "15", "TERM" or "SIGTERM"; returns -1 when it is none of these. */
static int parse_signal(const char *text)
{
    long number;
    if (parse_count(text, &number) == 0)
        return number > 0 && number < NSIG ? (int)number : -1;
    for (size_t i = 0; i < COUNT_OF(signal_names); i++) {
        const char *name = signal_names[i].name;
        if (strcmp(text, name) == 0 || strcmp(text, name + 3) == 0)
            return signal_names[i].value;
    }
    return -1;
}

static const char *file_type(mode_t mode)
{
    if (S_ISREG(mode))
        return "regular";
    if (S_ISDIR(mode))
        return "directory";
    if (S_ISLNK(mode))
        return "symlink";
    if (S_ISFIFO(mode))
        return "fifo";
    if (S_ISSOCK(mode))
        return "socket";
    if (S_ISCHR(mode))
        return "char";
    if (S_ISBLK(mode))
        return "block";
    return "unknown";
}

/* ---- files ---- */

static int cmd_cat(int argc, char **argv)
{
    if (argc < 1)
        return usage("cat needs PATH...");
    int status = 0;
    for (int i = 0; i < argc; i++) {
        int fd = open(argv[i], O_RDONLY | O_CLOEXEC);
        if (fd < 0 || copy_to_stdout(fd) < 0) {
            int err = fail("cat", argv[i]);
            if (status == 0)
                status = err;
        }
        if (fd >= 0)
            close(fd);
    }
    return status;
}

static int print_stat(const char *op, const char *path, int follow)
{
    struct stat st;
    if ((follow ? stat(path, &st) : lstat(path, &st)) < 0)
        return fail(op, path);
    printf("size=%lld mode=0%o type=%s nlink=%lu ino=%lu\n", (long long)st.st_size,
           (unsigned)(st.st_mode & 07777), file_type(st.st_mode), (unsigned long)st.st_nlink,
           (unsigned long)st.st_ino);
    return 0;
}

static int cmd_stat(int argc, char **argv)
{
    return argc == 1 ? print_stat("stat", argv[0], 1) : usage("stat needs PATH");
}

static int cmd_lstat(int argc, char **argv)
{
    return argc == 1 ? print_stat("lstat", argv[0], 0) : usage("lstat needs PATH");
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmd_ls(int argc, char **argv)
{
    if (argc != 1)
        return usage("ls needs DIR");
    DIR *dir = opendir(argv[0]);
    if (!dir)
        return fail("ls", argv[0]);
    size_t count = 0, capacity = 64;
    char **names = malloc(capacity * sizeof *names);
    struct dirent *entry;
    errno = 0;
    while ((entry = readdir(dir)) != NULL) {
        if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0)
            continue;
        if (count == capacity) {
            capacity *= 2;
            names = realloc(names, capacity * sizeof *names);
        }
        names[count++] = strdup(entry->d_name);
    }
    if (errno != 0)
        return fail("ls", argv[0]);
    closedir(dir);
    qsort(names, count, sizeof *names, compare_names);
    for (size_t i = 0; i < count; i++)
        printf("%s\n", names[i]);
    return 0;
}

static int cmd_readlink(int argc, char **argv)
{
    if (argc != 1)
        return usage("readlink needs PATH");
    char target[PATH_MAX + 1];
    ssize_t len = readlink(argv[0], target, PATH_MAX);
    if (len < 0)
        return fail("readlink", argv[0]);
    target[len] = '\0';
    printf("%s\n", target);
    return 0;
}

static int write_file(const char *op, const char *path, const char *text, int flags)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | flags, 0644);
    if (fd < 0 || write_all(fd, text, strlen(text)) < 0)
        return fail(op, path);
    if (close(fd) < 0)
        return fail(op, path);
    return 0;
}

static int cmd_write(int argc, char **argv)
{
    return argc == 2 ? write_file("write", argv[0], argv[1], O_TRUNC)
                     : usage("write needs PATH TEXT");
}

static int cmd_append(int argc, char **argv)
{
    return argc == 2 ? write_file("append", argv[0], argv[1], O_APPEND)
                     : usage("append needs PATH TEXT");
}

static int cmd_rename(int argc, char **argv)
{
    if (argc != 2)
        return usage("rename needs OLD NEW");
    return rename(argv[0], argv[1]) < 0 ? fail("rename", argv[0]) : 0;
}

static int cmd_unlink(int argc, char **argv)
{
    if (argc != 1)
        return usage("unlink needs PATH");
    return unlink(argv[0]) < 0 ? fail("unlink", argv[0]) : 0;
}

static int cmd_mkdir(int argc, char **argv)
{
    if (argc != 1)
        return usage("mkdir needs PATH");
    return mkdir(argv[0], 0755) < 0 ? fail("mkdir", argv[0]) : 0;
}

static int cmd_rmdir(int argc, char **argv)
{
    if (argc != 1)
        return usage("rmdir needs PATH");
    return rmdir(argv[0]) < 0 ? fail("rmdir", argv[0]) : 0;
}

static int cmd_cwd(int argc, char **argv)
{
    (void)argv;
    if (argc != 0)
        return usage("cwd takes no arguments");
    char path[PATH_MAX];
    if (!getcwd(path, sizeof path))
        return fail("cwd", ".");
    printf("%s\n", path);
    return 0;
}

static int cmd_chdir_cat(int argc, char **argv)
{
    if (argc != 2)
        return usage("chdir-cat needs DIR FILE");
    if (chdir(argv[0]) < 0)
        return fail("chdir-cat", argv[0]);
    return cmd_cat(1, &argv[1]);
}

/* ---- environment and process ---- */

static int cmd_env(int argc, char **argv)
{
    if (argc != 1)
        return usage("env needs NAME");
    const char *value = getenv(argv[0]);
    if (!value)
        return EXIT_NEGATIVE;
    printf("%s\n", value);
    return 0;
}

static int cmd_envall(int argc, char **argv)
{
    (void)argv;
    if (argc != 0)
        return usage("envall takes no arguments");
    for (char **entry = environ; *entry; entry++)
        printf("%s\n", *entry);
    return 0;
}

static int cmd_exit(int argc, char **argv)
{
    long status;
    if (argc != 1 || parse_count(argv[0], &status) < 0 || status > 255)
        return usage("exit needs a STATUS from 0 to 255");
    return (int)status;
}

static int cmd_raise(int argc, char **argv)
{
    int sig = argc == 1 ? parse_signal(argv[0]) : -1;
    if (sig < 0)
        return usage("raise needs a SIGNAL (number, TERM or SIGTERM)");
    /* A signal ignored or blocked by whoever started us must still take its default action. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    signal(sig, SIG_DFL);
    fflush(stdout);
    if (kill(getpid(), sig) < 0)
        return fail("raise", argv[0]);
    printf("survived %s\n", argv[0]); /* default action is to ignore (CHLD, URG, WINCH) */
    return 0;
}

static int cmd_echo_stdin(int argc, char **argv)
{
    (void)argv;
    if (argc != 0)
        return usage("echo-stdin takes no arguments");
    return copy_to_stdout(STDIN_FILENO) < 0 ? fail("echo-stdin", "stdin") : 0;
}

static int cmd_fork_exec(int argc, char **argv)
{
    if (argc < 1)
        return usage("fork-exec needs PROG [ARGS...]");
    fflush(stdout);
    pid_t child = fork();
    if (child < 0)
        return fail("fork-exec", argv[0]);
    if (child == 0) {
        execvp(argv[0], argv);
        fail("fork-exec", argv[0]);
        _exit(EXIT_EXEC_FAILED);
    }
    int status;
    while (waitpid(child, &status, 0) < 0)
        if (errno != EINTR)
            return fail("fork-exec", argv[0]);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return WEXITSTATUS(status);
}

/* ---- loops for benchmarks and concurrency tests ---- */

static int cmd_openloop(int argc, char **argv)
{
    long count;
    if (argc != 2 || parse_count(argv[0], &count) < 0)
        return usage("openloop needs N PATH");
    for (long i = 0; i < count; i++) {
        int fd = open(argv[1], O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            return fail("openloop", argv[1]);
        close(fd);
    }
    printf("total=%ld\n", count);
    return 0;
}

static volatile sig_atomic_t alarms;

static void count_alarm(int sig)
{
    (void)sig;
    alarms++;
}

/* A SIGALRM handler installed WITHOUT SA_RESTART: a slow syscall it interrupts returns EINTR. */
static void on_alarm_without_restart(void)
{
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = count_alarm;
    sigaction(SIGALRM, &action, NULL);
}

static int cmd_stat_signals(int argc, char **argv)
{
    long count;
    if (argc != 2 || parse_count(argv[0], &count) < 0)
        return usage("stat-signals needs N PATH");
    on_alarm_without_restart();
    /* A timer firing every 200 us lands in the middle of many of the stats. */
    struct itimerval every = {{0, 200}, {0, 200}};
    setitimer(ITIMER_REAL, &every, NULL);
    long interrupted = 0;
    struct stat info;
    for (long i = 0; i < count; i++) {
        if (stat(argv[1], &info) < 0) {
            if (errno != EINTR)
                return fail("stat", argv[1]);
            interrupted++;
        }
        int fd = open(argv[1], O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            if (errno != EINTR)
                return fail("open", argv[1]);
            interrupted++;
        } else {
            close(fd);
        }
    }
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    printf("calls=%ld eintr=%ld signals=%ld\n", 2 * count, interrupted, (long)alarms);
    return 0;
}

static int cmd_alarm_open(int argc, char **argv)
{
    if (argc != 1)
        return usage("alarm-open needs PATH");
    on_alarm_without_restart();
    alarm(1);
    int fd = open(argv[0], O_RDONLY);
    if (fd < 0)
        return fail("open", argv[0]); /* EINTR when nobody opened the FIFO's other end */
    printf("opened %s\n", argv[0]);
    close(fd);
    return 0;
}

static int cmd_getppid(int argc, char **argv)
{
    long count;
    if (argc != 1 || parse_count(argv[0], &count) < 0)
        return usage("getppid needs N");
    long parent = 0;
    /* The raw syscall: a libc may cache or inline the answer, and the point is to enter the kernel. */
    for (long i = 0; i < count; i++)
        parent = syscall(SYS_getppid);
    printf("total=%ld ppid=%ld\n", count, parent);
    return 0;
}

struct thread_work {
    pthread_t thread;
    const char *path;
    long calls;
    long done;
    int error;
};

static void *open_close_worker(void *arg)
{
    struct thread_work *work = arg;
    for (long i = 0; i < work->calls; i++) {
        int fd = open(work->path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            work->error = errno;
            break;
        }
        close(fd);
        work->done++;
    }
    return NULL;
}

static int cmd_threads(int argc, char **argv)
{
    long threads, calls = 100;
    const char *path = argc >= 3 ? argv[2] : "/etc/hostname";
    if (argc < 1 || argc > 3 || parse_count(argv[0], &threads) < 0 || threads == 0 ||
        (argc >= 2 && parse_count(argv[1], &calls) < 0))
        return usage("threads needs N [CALLS [PATH]]");
    struct thread_work *work = calloc((size_t)threads, sizeof *work);
    for (long i = 0; i < threads; i++) {
        work[i].path = path;
        work[i].calls = calls;
        int err = pthread_create(&work[i].thread, NULL, open_close_worker, &work[i]);
        if (err != 0) {
            errno = err;
            return fail("threads", "pthread_create");
        }
    }
    long total = 0;
    int error = 0;
    for (long i = 0; i < threads; i++) {
        pthread_join(work[i].thread, NULL);
        total += work[i].done;
        if (work[i].error && !error)
            error = work[i].error;
    }
    printf("total=%ld\n", total);
    if (error) {
        errno = error;
        return fail("threads", path);
    }
    return 0;
}

/* ---- network ---- */

static int lookup(const char *op, const char *host, const char *port, struct addrinfo **out)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    int err = getaddrinfo(host, port, &hints, out);
    if (err != 0) {
        fprintf(stderr, "probe: %s %s: %s\n", op, host,
                err == EAI_SYSTEM ? strerror(errno) : gai_strerror(err));
        return EXIT_NOHOST;
    }
    return 0;
}

static const char *address_text(const struct sockaddr *sa, char *buf, socklen_t len)
{
    const void *raw = sa->sa_family == AF_INET6
                          ? (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr
                          : (const void *)&((const struct sockaddr_in *)sa)->sin_addr;
    return inet_ntop(sa->sa_family, raw, buf, len);
}

static int cmd_resolve(int argc, char **argv)
{
    if (argc != 1)
        return usage("resolve needs NAME");
    struct addrinfo *result;
    int status = lookup("resolve", argv[0], NULL, &result);
    if (status != 0)
        return status;
    char text[INET6_ADDRSTRLEN];
    for (struct addrinfo *ai = result; ai; ai = ai->ai_next)
        printf("%s\n", address_text(ai->ai_addr, text, sizeof text));
    freeaddrinfo(result);
    return 0;
}

/* Connects to the first address that accepts; returns the fd or -1 with errno of the last try. */
static int connect_any(struct addrinfo *candidates)
{
    int last_error = EADDRNOTAVAIL;
    for (struct addrinfo *ai = candidates; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            last_error = errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
            return fd;
        last_error = errno;
        close(fd);
    }
    errno = last_error;
    return -1;
}

static int cmd_connect(int argc, char **argv)
{
    if (argc != 2)
        return usage("connect needs HOST PORT");
    struct addrinfo *result;
    int status = lookup("connect", argv[0], argv[1], &result);
    if (status != 0)
        return status;
    int fd = connect_any(result);
    freeaddrinfo(result);
    if (fd < 0) {
        int err = errno;
        printf("%s\n", errno_name(err));
        return err;
    }
    printf("connected\n");
    close(fd);
    return 0;
}

struct url {
    char host[256];
    char port[8];
    const char *path;
};

/* http://host[:port][/path] with host possibly a bracketed IPv6 literal. */
static int parse_url(const char *text, struct url *url)
{
    const char *prefix = "http://";
    if (strncmp(text, prefix, strlen(prefix)) != 0)
        return -1;
    const char *authority = text + strlen(prefix);
    const char *slash = strchr(authority, '/');
    url->path = slash ? slash : "/";
    size_t authority_len = slash ? (size_t)(slash - authority) : strlen(authority);
    const char *host_start = authority, *host_end, *port_start = NULL;
    if (*authority == '[') {
        host_start = authority + 1;
        host_end = memchr(authority, ']', authority_len);
        if (!host_end)
            return -1;
        if (host_end + 1 < authority + authority_len) {
            if (host_end[1] != ':')
                return -1;
            port_start = host_end + 2;
        }
    } else {
        host_end = memchr(authority, ':', authority_len);
        if (host_end)
            port_start = host_end + 1;
        else
            host_end = authority + authority_len;
    }
    size_t host_len = (size_t)(host_end - host_start);
    size_t port_len = port_start ? (size_t)(authority + authority_len - port_start) : 0;
    if (host_len == 0 || host_len >= sizeof url->host || port_len >= sizeof url->port)
        return -1;
    memcpy(url->host, host_start, host_len);
    url->host[host_len] = '\0';
    if (port_len > 0) {
        memcpy(url->port, port_start, port_len);
        url->port[port_len] = '\0';
    } else {
        strcpy(url->port, "80");
    }
    return 0;
}

static int cmd_http_get(int argc, char **argv)
{
    struct url url;
    if (argc != 1 || parse_url(argv[0], &url) < 0)
        return usage("http-get needs a URL like http://host[:port]/path");
    struct addrinfo *result;
    int status = lookup("http-get", url.host, url.port, &result);
    if (status != 0)
        return status;
    int fd = connect_any(result);
    freeaddrinfo(result);
    if (fd < 0)
        return fail("http-get", argv[0]);
    char request[2048];
    int len = snprintf(request, sizeof request,
                       "GET %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: probe\r\n"
                       "Connection: close\r\n\r\n",
                       url.path, url.host);
    if (len < 0 || (size_t)len >= sizeof request)
        return usage("http-get: URL too long");
    if (write_all(fd, request, (size_t)len) < 0)
        return fail("http-get", argv[0]);

    size_t size = 0, capacity = 65536;
    char *response = malloc(capacity + 1);
    for (;;) {
        if (size == capacity) {
            capacity *= 2;
            response = realloc(response, capacity + 1);
        }
        ssize_t n = read(fd, response + size, capacity - size);
        if (n == 0)
            break;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return fail("http-get", argv[0]);
        }
        size += (size_t)n;
    }
    close(fd);
    response[size] = '\0';

    int code;
    char *body = strstr(response, "\r\n\r\n");
    if (!body || sscanf(response, "HTTP/%*d.%*d %d", &code) != 1) {
        fprintf(stderr, "probe: http-get %s: malformed HTTP response\n", argv[0]);
        return EXIT_PROTOCOL;
    }
    body += 4;
    if (write_all(STDOUT_FILENO, body, size - (size_t)(body - response)) < 0)
        return fail("http-get", "stdout");
    if (code >= 400) {
        fprintf(stderr, "probe: http-get %s: HTTP status %d\n", argv[0], code);
        return EXIT_NEGATIVE;
    }
    return 0;
}

/* Answers one request; the request line is echoed so a test can tell which request arrived. */
static void serve_one(int client)
{
    char request[65536];
    size_t size = 0;
    while (size < sizeof request - 1) {
        ssize_t n = read(client, request + size, sizeof request - 1 - size);
        if (n <= 0)
            break;
        size += (size_t)n;
        request[size] = '\0';
        if (strstr(request, "\r\n\r\n"))
            break;
    }
    request[size] = '\0';
    size_t line_len = strcspn(request, "\r\n");
    request[line_len] = '\0';
    printf("request %s\n", request);
    fflush(stdout);

    char body[sizeof request + 64];
    int body_len = snprintf(body, sizeof body, "hello from probe\n%s\n", request);
    char header[256];
    int header_len = snprintf(header, sizeof header,
                              "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n"
                              "Content-Length: %d\r\nConnection: close\r\n\r\n",
                              body_len);
    if (write_all(client, header, (size_t)header_len) == 0)
        write_all(client, body, (size_t)body_len);
}

static int cmd_serve(int argc, char **argv)
{
    long port, limit = -1;
    if (argc < 1 || argc > 2 || parse_count(argv[0], &port) < 0 || port > 65535 ||
        (argc == 2 && parse_count(argv[1], &limit) < 0))
        return usage("serve needs PORT [COUNT] (PORT 0 picks a free one)");
    signal(SIGPIPE, SIG_IGN);
    int server = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (server < 0)
        return fail("serve", argv[0]);
    int one = 1;
    setsockopt(server, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                                  .sin_addr.s_addr = htonl(INADDR_ANY)};
    socklen_t address_len = sizeof address;
    if (bind(server, (struct sockaddr *)&address, sizeof address) < 0 || listen(server, 64) < 0 ||
        getsockname(server, (struct sockaddr *)&address, &address_len) < 0)
        return fail("serve", argv[0]);
    /* The announced port is what a caller passing PORT 0 waits for. */
    printf("listening %d\n", ntohs(address.sin_port));
    fflush(stdout);
    for (long served = 0; limit < 0 || served < limit; served++) {
        int client = accept4(server, NULL, NULL, SOCK_CLOEXEC);
        if (client < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            return fail("serve", "accept");
        }
        /* Who the connection is with, as the kernel says: the client a server would log. */
        struct sockaddr_in peer;
        socklen_t peer_len = sizeof peer;
        if (getpeername(client, (struct sockaddr *)&peer, &peer_len) == 0) {
            char text[INET_ADDRSTRLEN];
            printf("peer %s:%d\n", inet_ntop(AF_INET, &peer.sin_addr, text, sizeof text),
                   ntohs(peer.sin_port));
            fflush(stdout);
        }
        serve_one(client);
        close(client);
    }
    close(server);
    return 0;
}

/* ---- dispatch ---- */

struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *arguments;
};

static int cmd_help(int argc, char **argv);

static const struct command commands[] = {
    {"cat", cmd_cat, "PATH..."},
    {"stat", cmd_stat, "PATH"},
    {"lstat", cmd_lstat, "PATH"},
    {"ls", cmd_ls, "DIR"},
    {"readlink", cmd_readlink, "PATH"},
    {"write", cmd_write, "PATH TEXT"},
    {"append", cmd_append, "PATH TEXT"},
    {"rename", cmd_rename, "OLD NEW"},
    {"unlink", cmd_unlink, "PATH"},
    {"mkdir", cmd_mkdir, "PATH"},
    {"rmdir", cmd_rmdir, "PATH"},
    {"cwd", cmd_cwd, ""},
    {"chdir-cat", cmd_chdir_cat, "DIR FILE"},
    {"env", cmd_env, "NAME"},
    {"envall", cmd_envall, ""},
    {"exit", cmd_exit, "STATUS"},
    {"raise", cmd_raise, "SIGNAL"},
    {"echo-stdin", cmd_echo_stdin, ""},
    {"fork-exec", cmd_fork_exec, "PROG [ARGS...]"},
    {"openloop", cmd_openloop, "N PATH"},
    {"getppid", cmd_getppid, "N"},
    {"stat-signals", cmd_stat_signals, "N PATH"},
    {"alarm-open", cmd_alarm_open, "PATH"},
    {"threads", cmd_threads, "N [CALLS [PATH]]"},
    {"resolve", cmd_resolve, "NAME"},
    {"connect", cmd_connect, "HOST PORT"},
    {"http-get", cmd_http_get, "http://HOST[:PORT]/PATH"},
    {"serve", cmd_serve, "PORT [COUNT]"},
    {"help", cmd_help, ""},
};

static int cmd_help(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    printf("usage: probe SUBCOMMAND [ARGS...]\n");
    for (size_t i = 0; i < COUNT_OF(commands); i++)
        printf("  %s %s\n", commands[i].name, commands[i].arguments);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage("missing SUBCOMMAND");
    for (size_t i = 0; i < COUNT_OF(commands); i++)
        if (strcmp(argv[1], commands[i].name) == 0) {
            int status = commands[i].run(argc - 2, argv + 2);
            if (fflush(stdout) != 0 && status == 0)
                return fail(argv[1], "stdout");
            return status;
        }
    fprintf(stderr, "probe: unknown subcommand %s (run `probe help` for the list)\n", argv[1]);
    return EXIT_USAGE;
}
