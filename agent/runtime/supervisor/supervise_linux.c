// The task supervisor: what a shim becomes once its container runs.
//
// The Go shim (shim_linux.go) creates and starts the container, then
// execve()s its own binary with argv[1] == "__shoal-supervise". This
// constructor runs before the Go runtime starts and never returns, so the
// process that stays alive for the task's whole life is this C loop: no
// Go heap, no Go threads, a few pages of its own (the binary's text and
// libc are shared with every other shim). The pid does not change, so the
// container stays its child and shim.json stays true.
//
// It does what the Go shim used to do after the start: copy the
// container's stdout and stderr into the task's log file as JSON lines
// (byte for byte the records log.go's logFile writes, same size-based
// rotation), wait for the container's init, tell an OOM kill from its
// memory cgroup, remove the container's cgroups and libcontainer's state
// dir, and write exit.json atomically (temp file, fsync, rename, fsync of
// the directory).
//
// argv (see superviseArgs in agent/runtime/shim_linux.go):
//   [2] task dir (exit.json goes there)    [3] libcontainer's state dir
//   [4] log path    [5] log max bytes    [6] log max files
//   [7] stdout read fd    [8] stderr read fd    [9] container pid
//   [10] the agent's socket fd, told {} once we run, or -1
//   [11] memory cgroup dir or ""    [12...] cgroup dirs to remove
// fd 2 is the task's shim.log: messages go there.

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

#define SUPERVISE_VERB "__shoal-supervise"
#define MAX_LINE (16 << 10) // log.go's maxLogLine: longer lines are split
// A record: the line escaped (at most 6 bytes per input byte) plus the
// time, stream and JSON punctuation.
#define MAX_RECORD (6 * MAX_LINE + 128)

static const char *task_id = "?";

static void msg(const char *what, int err) {
	dprintf(2, "supervisor %s: %s: %s\n", task_id, what, err ? strerror(err) : "failed");
}

// ---- the log file (log.go's logFile) ----

static struct {
	const char *path;
	long long max_bytes;
	int max_files;
	int fd;
	long long size;
	int failed; // a write or rotation failed: reported once
} lf = {.fd = -1};

static int log_open(void) {
	lf.fd = open(lf.path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
	if (lf.fd < 0)
		return -1;
	struct stat st;
	if (fstat(lf.fd, &st) < 0)
		return -1;
	lf.size = st.st_size;
	return 0;
}

static int log_rotate(void) {
	close(lf.fd);
	lf.fd = -1;
	if (lf.max_files <= 1) {
		if (truncate(lf.path, 0) < 0)
			return -1;
		return log_open();
	}
	char src[4096 + 16], dst[4096 + 16];
	for (int i = lf.max_files - 1; i >= 1; i--) {
		if (i > 1)
			snprintf(src, sizeof src, "%s.%d", lf.path, i - 1);
		else
			snprintf(src, sizeof src, "%s", lf.path);
		snprintf(dst, sizeof dst, "%s.%d", lf.path, i);
		if (rename(src, dst) < 0 && errno != ENOENT)
			return -1;
	}
	return log_open();
}

// json_time writes t as Go's time.Time MarshalJSON does for a UTC time
// (RFC 3339 with nanoseconds, trailing zeros dropped).
static size_t json_time(char *out, const struct timespec *t) {
	struct tm tm;
	gmtime_r(&t->tv_sec, &tm);
	size_t n = strftime(out, 32, "\"%Y-%m-%dT%H:%M:%S", &tm);
	long ns = t->tv_nsec;
	if (ns) {
		char frac[10];
		snprintf(frac, sizeof frac, "%09ld", ns);
		int k = 9;
		while (k > 0 && frac[k - 1] == '0')
			k--;
		out[n++] = '.';
		memcpy(out + n, frac, k);
		n += k;
	}
	memcpy(out + n, "Z\"", 2);
	return n + 2;
}

// utf8_len returns the length of the valid UTF-8 sequence at s (1 to 4),
// or 0 if it is invalid, with Go's utf8.DecodeRune rules (no overlongs,
// no surrogates, nothing above U+10FFFF).
static int utf8_len(const unsigned char *s, size_t n) {
	unsigned char c = s[0];
	unsigned char lo = 0x80, hi = 0xBF;
	int len;
	if (c >= 0xC2 && c <= 0xDF)
		len = 2;
	else if (c >= 0xE0 && c <= 0xEF) {
		len = 3;
		if (c == 0xE0)
			lo = 0xA0;
		else if (c == 0xED)
			hi = 0x9F;
	} else if (c >= 0xF0 && c <= 0xF4) {
		len = 4;
		if (c == 0xF0)
			lo = 0x90;
		else if (c == 0xF4)
			hi = 0x8F;
	} else
		return 0;
	if (n < (size_t)len || s[1] < lo || s[1] > hi)
		return 0;
	for (int i = 2; i < len; i++)
		if (s[i] < 0x80 || s[i] > 0xBF)
			return 0;
	return len;
}

// json_string writes s as encoding/json does (HTML-escaped, \ufffd for
// invalid UTF-8, U+2028 and U+2029 escaped).
static size_t json_string(char *out, const unsigned char *s, size_t n) {
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;
	out[o++] = '"';
	for (size_t i = 0; i < n;) {
		unsigned char b = s[i];
		if (b < 0x80) {
			if (b >= 0x20 && b != '"' && b != '\\' && b != '<' && b != '>' && b != '&') {
				out[o++] = b;
				i++;
				continue;
			}
			out[o++] = '\\';
			switch (b) {
			case '\\':
			case '"': out[o++] = b; break;
			case '\b': out[o++] = 'b'; break;
			case '\f': out[o++] = 'f'; break;
			case '\n': out[o++] = 'n'; break;
			case '\r': out[o++] = 'r'; break;
			case '\t': out[o++] = 't'; break;
			default:
				out[o++] = 'u';
				out[o++] = '0';
				out[o++] = '0';
				out[o++] = hex[b >> 4];
				out[o++] = hex[b & 0xF];
			}
			i++;
			continue;
		}
		int len = utf8_len(s + i, n - i);
		if (len == 0) {
			memcpy(out + o, "\\ufffd", 6);
			o += 6;
			i++;
			continue;
		}
		if (len == 3 && b == 0xE2 && s[i + 1] == 0x80 && (s[i + 2] == 0xA8 || s[i + 2] == 0xA9)) {
			memcpy(out + o, "\\u202", 5);
			o += 5;
			out[o++] = hex[s[i + 2] & 0xF]; // U+2028 or U+2029
			i += 3;
			continue;
		}
		memcpy(out + o, s + i, len);
		o += len;
		i += len;
	}
	out[o++] = '"';
	return o;
}

static char record[MAX_RECORD];

// log_write appends one record, rotating first if it would pass the
// limit (as logFile.write does). Errors are reported once; the output
// keeps being read so that the container never blocks on a full pipe.
static void log_write(const char *stream, const unsigned char *line, size_t n) {
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	size_t o = 0;
	memcpy(record + o, "{\"time\":", 8);
	o += 8;
	o += json_time(record + o, &now);
	o += sprintf(record + o, ",\"stream\":\"%s\",\"log\":", stream);
	o += json_string(record + o, line, n);
	memcpy(record + o, "}\n", 2);
	o += 2;
	if (lf.fd < 0 || (lf.size > 0 && lf.size + (long long)o > lf.max_bytes)) {
		if ((lf.fd < 0 ? log_open() : log_rotate()) < 0) {
			if (!lf.failed)
				msg("log rotation", errno);
			lf.failed = 1;
			return;
		}
	}
	size_t done = 0;
	int werr = 0;
	while (done < o) {
		ssize_t w = write(lf.fd, record + done, o - done);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			werr = w < 0 ? errno : EIO;
			break;
		}
		done += w;
	}
	if (done == o) {
		lf.size += o;
		return;
	}
	// A full disk takes part of a record: cut it off, or the next record
	// would join it into a line that no reader decodes (ReadLog stops
	// there, so everything after it would be lost even once there is
	// space again).
	if (done > 0) {
		off_t end = lseek(lf.fd, 0, SEEK_END);
		if (end < 0 || ftruncate(lf.fd, end - (off_t)done) < 0)
			lf.size += done;
	}
	if (!lf.failed)
		msg("log write", werr ? werr : ENOSPC);
	lf.failed = 1;
}

// ---- the container's output (log.go's copyLines) ----

struct stream {
	const char *name;
	int fd; // -1 once at EOF
	unsigned char buf[MAX_LINE];
	size_t len;
};

// stream_read reads what is there and writes every complete line, and a
// full buffer as one record (bufio.Reader.ReadSlice's cut); at EOF the
// rest. Returns 0 at EOF or error.
static int stream_read(struct stream *s) {
	ssize_t n = read(s->fd, s->buf + s->len, sizeof s->buf - s->len);
	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return 1;
	if (n <= 0) {
		if (s->len)
			log_write(s->name, s->buf, s->len);
		s->len = 0;
		close(s->fd);
		s->fd = -1;
		return 0;
	}
	size_t scan = s->len;
	s->len += n;
	size_t start = 0;
	for (size_t i = scan; i < s->len; i++) {
		if (s->buf[i] == '\n') {
			log_write(s->name, s->buf + start, i + 1 - start);
			start = i + 1;
		}
	}
	if (start == 0 && s->len == sizeof s->buf) {
		log_write(s->name, s->buf, s->len);
		start = s->len;
	}
	memmove(s->buf, s->buf + start, s->len - start);
	s->len -= start;
	return 1;
}

static struct stream out = {.name = "stdout"}, err = {.name = "stderr"};

// ---- the end of the container ----

static int read_counter(const char *dir, const char *file, const char *key, long long *v) {
	char path[4096 + 64], line[256];
	snprintf(path, sizeof path, "%s/%s", dir, file);
	FILE *f = fopen(path, "re");
	if (!f)
		return 0;
	int found = 0;
	size_t kl = strlen(key);
	while (fgets(line, sizeof line, f)) {
		if (key[0] == 0) {
			*v = atoll(line);
			found = 1;
			break;
		}
		if (!strncmp(line, key, kl) && line[kl] == ' ') {
			*v = atoll(line + kl + 1);
			found = 1;
			break;
		}
	}
	fclose(f);
	return found;
}

// oom_killed reads the memory cgroup: v1 memory.oom_control's oom_kill
// counter (kernel >= 4.13), or v2 memory.events'; failing both, a SIGKILL
// with a non-zero memory.failcnt is taken as an OOM kill.
static int oom_killed(const char *mem, int sigkill) {
	long long v = 0;
	if (!mem[0])
		return 0;
	if (read_counter(mem, "memory.oom_control", "oom_kill", &v))
		return v > 0;
	if (read_counter(mem, "memory.events", "oom_kill", &v))
		return v > 0;
	if (!sigkill)
		return 0;
	return read_counter(mem, "memory.failcnt", "", &v) && v > 0;
}

// rmdir_cgroup removes a cgroup dir; the kernel may call it busy for a
// moment after its last process died (libcontainer retries too).
static void rmdir_cgroup(const char *dir) {
	struct timespec d = {0, 10 * 1000 * 1000};
	for (int i = 0; i < 6; i++) {
		if (rmdir(dir) == 0 || errno == ENOENT)
			return;
		if (errno != EBUSY)
			break;
		nanosleep(&d, NULL);
		d.tv_nsec *= 2;
	}
	msg(dir, errno); // Remove tries again
}

static int rm_entry(const char *p, const struct stat *sb, int type, struct FTW *ftw) {
	(void)sb; (void)type; (void)ftw;
	if (remove(p) < 0 && errno != ENOENT)
		msg(p, errno);
	return 0;
}

// write_exit writes exit.json atomically and durably: the temp file is
// synced before the rename (or a crash could leave an exit.json of no
// bytes under its final name) and the directory after it (or the rename
// itself could be lost, and a task that ended look as if it still ran).
static int write_exit(const char *dir, int code, int sig, int oom, const char *error) {
	char tmp[4096 + 32], path[4096 + 16], body[512 + 128];
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	size_t o = 0;
	o += sprintf(body + o, "{\"code\":%d", code);
	if (sig)
		o += sprintf(body + o, ",\"signal\":%d", sig);
	if (oom)
		o += sprintf(body + o, ",\"oom_killed\":true");
	o += sprintf(body + o, ",\"finished_at\":");
	o += json_time(body + o, &now);
	if (error) {
		o += sprintf(body + o, ",\"error\":");
		o += json_string(body + o, (const unsigned char *)error, strnlen(error, 80));
	}
	body[o++] = '}';
	snprintf(tmp, sizeof tmp, "%s/.exit.json.XXXXXX", dir);
	snprintf(path, sizeof path, "%s/exit.json", dir);
	int fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0)
		return -1;
	if (fchmod(fd, 0600) < 0 || write(fd, body, o) != (ssize_t)o || fsync(fd) < 0) {
		int e = errno;
		close(fd);
		unlink(tmp);
		errno = e;
		return -1;
	}
	if (close(fd) < 0 || rename(tmp, path) < 0) {
		int e = errno;
		unlink(tmp);
		errno = e;
		return -1;
	}
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -1;
	int r = fsync(dfd);
	close(dfd);
	return r;
}

static long long now_ms(void) {
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000LL + t.tv_nsec / 1000000;
}

static int supervise(int argc, char **argv) {
	if (argc < 12) {
		dprintf(2, "supervisor: started with %d arguments, want at least 12\n", argc);
		return 2;
	}
	const char *dir = argv[2], *ctr_state = argv[3], *mem = argv[11];
	int ready = atoi(argv[10]);
	lf.path = argv[4];
	lf.max_bytes = atoll(argv[5]);
	lf.max_files = atoi(argv[6]);
	out.fd = atoi(argv[7]);
	err.fd = atoi(argv[8]);
	pid_t pid = atoi(argv[9]);
	task_id = strrchr(dir, '/') ? strrchr(dir, '/') + 1 : dir;
	prctl(PR_SET_NAME, "shoal-shim");

	// Whatever the Go runtime had blocked or ignored, start clean.
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signal(SIGPIPE, SIG_IGN);
	// A file size limit (ulimit -f, systemd's LimitFSIZE=) inherited from
	// the agent would kill us at the log's limit (SIGXFSZ), leaving the
	// container unsupervised and no exit.json: take EFBIG instead, as a
	// full disk (log_write).
	signal(SIGXFSZ, SIG_IGN);
	fcntl(out.fd, F_SETFD, FD_CLOEXEC);
	fcntl(err.fd, F_SETFD, FD_CLOEXEC);
	if (log_open() < 0) {
		msg(lf.path, errno);
		lf.failed = 1;
	}
	// The container runs and we supervise it: Start may return.
	if (ready >= 0) {
		if (write(ready, "{}", 2) < 0)
			msg("tell the agent", errno); // it went away: nothing to tell
		close(ready);
	}

	int pidfd = syscall(SYS_pidfd_open, pid, 0);
	if (pidfd < 0)
		msg("pidfd_open", errno); // then the pipes' EOF ends the loop
	int status = 0, reaped = 0, wait_err = 0; // reaped: 1 waited, -1 could not wait
	long long deadline = -1; // after the exit: wait 2 s at most for the last output
	// Not our child (cannot happen with libcontainer's CLONE_PARENT):
	// say so now rather than wait on its pidfd until it ends.
	pid_t w0 = waitpid(pid, &status, WNOHANG);
	if (w0 == pid || (w0 < 0 && errno != EINTR)) {
		wait_err = errno;
		reaped = w0 == pid ? 1 : -1;
		deadline = now_ms() + 2000;
	}
	for (;;) {
		struct pollfd p[3];
		struct stream *ps[3];
		int n = 0;
		if (out.fd >= 0)
			ps[n] = &out, p[n++] = (struct pollfd){.fd = out.fd, .events = POLLIN};
		if (err.fd >= 0)
			ps[n] = &err, p[n++] = (struct pollfd){.fd = err.fd, .events = POLLIN};
		int nstreams = n;
		if (!reaped && pidfd >= 0)
			p[n++] = (struct pollfd){.fd = pidfd, .events = POLLIN};
		if (n == 0)
			break;
		if (nstreams == 0 && !reaped && pidfd < 0)
			break;
		int timeout = -1;
		if (reaped) {
			long long left = deadline - now_ms();
			if (left <= 0)
				break;
			timeout = (int)left;
		}
		int r = poll(p, n, timeout);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			msg("poll", errno);
			break;
		}
		for (int i = 0; i < nstreams; i++)
			if (p[i].revents)
				stream_read(ps[i]);
		if (!reaped && pidfd >= 0 && p[nstreams].revents) {
			pid_t w = waitpid(pid, &status, WNOHANG);
			if (w == pid) {
				reaped = 1;
			} else if (w < 0 && errno != EINTR) {
				// Not our child (cannot happen with libcontainer's
				// CLONE_PARENT): the pidfd would stay readable for
				// ever, so stop polling it.
				wait_err = errno;
				reaped = -1;
			}
			if (reaped)
				deadline = now_ms() + 2000;
		}
	}
	if (!reaped) {
		if (waitpid(pid, &status, 0) == pid)
			reaped = 1;
		else
			wait_err = errno;
	}

	int code = 255, sig = 0;
	const char *error = NULL;
	char errbuf[128];
	if (reaped != 1) {
		snprintf(errbuf, sizeof errbuf, "wait: %s", strerror(wait_err));
		error = errbuf;
	} else if (WIFSIGNALED(status)) {
		sig = WTERMSIG(status);
		code = 128 + sig;
	} else {
		code = WEXITSTATUS(status);
	}
	int oom = oom_killed(mem, sig == SIGKILL);
	// The container is over: free its cgroups and libcontainer's state
	// now rather than at Remove (which still cleans up if this fails).
	for (int i = 12; i < argc; i++)
		rmdir_cgroup(argv[i]);
	if (nftw(ctr_state, rm_entry, 16, FTW_DEPTH | FTW_PHYS) < 0 && errno != ENOENT)
		msg(ctr_state, errno);
	if (write_exit(dir, code, sig, oom, error) < 0) {
		msg("write exit", errno);
		return 1;
	}
	return 0;
}

__attribute__((constructor)) static void shoal_supervise(int argc, char **argv, char **envp) {
	(void)envp;
	if (argc < 2 || strcmp(argv[1], SUPERVISE_VERB) != 0)
		return;
	_exit(supervise(argc, argv));
}
